//! What etcd's fsync costs a write: sequential ConfigMap creates against a control plane
//! (etcd and kube-apiserver only) with and without `--unsafe-no-fsync`, interleaved, each run
//! on a fresh control plane.
//!
//! ```sh
//! cargo run -p operon-cluster --example fsync_cost -- [runs] [writes]
//! ```

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::api::PostParams;
use operon_cluster::ControlPlane;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let runs: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(5);
    let writes: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(300);
    let mut times: [Vec<Duration>; 2] = [Vec::new(), Vec::new()];
    for run in 0..runs {
        // Alternate which goes first: drift in the machine's load hits both alike.
        let order = if run % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        for durable in order {
            let cp = ControlPlane::builder()
                .minimal()
                .durable(durable)
                .start()
                .await?;
            let api: Api<ConfigMap> = Api::namespaced(cp.client().await?, "default");
            let t0 = Instant::now();
            for i in 0..writes {
                let cm: ConfigMap = serde_json::from_value(serde_json::json!({
                    "metadata": { "name": format!("w{i}") },
                    "data": { "i": i.to_string() },
                }))?;
                api.create(&PostParams::default(), &cm).await?;
            }
            let took = t0.elapsed();
            println!(
                "run {run}: fsync {durable}: {writes} creates in {took:.2?} ({:.2?} each)",
                took / writes as u32
            );
            times[usize::from(durable)].push(took / writes as u32);
        }
    }
    for (durable, mut t) in [false, true].into_iter().zip(times) {
        t.sort();
        println!(
            "fsync {durable}: per create median {:.2?}, range {:.2?}..{:.2?} ({runs} runs)",
            t[t.len() / 2],
            t[0],
            t[t.len() - 1]
        );
    }
    Ok(())
}
