//! The talk's "highly available API, backed by a replicated data store", shown: the HA control
//! plane (3 etcd members, 2 kube-apiservers behind HAProxy, 2 leader-electing controllers)
//! with a real node and the three operators deployed in it, 2 replicas each. Under steady,
//! open-loop CRUD of PodRequests through the balancer, one etcd member is killed, then one
//! kube-apiserver, then each operator's leader. Every response is recorded: the longest time
//! without a successful answer and the errors are reported and bounded, no acknowledged write
//! is lost, and every request converges to exactly one Pod.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret, Service};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use operon_cluster::{ControlPlane, wait};
use parking_lot::Mutex;
use pod_operator::api::PodRequest;
use serde_json::json;

const NS: &str = "ha-load";
/// One operation every this long, whatever the answers (open loop).
const TICK: Duration = Duration::from_millis(200);
/// Requests alive at once: the oldest is deleted when a create would exceed it.
const LIVE: usize = 12;
/// How long a request may take before it counts as an error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Load before the first failure, and after each.
const PHASE: Duration = Duration::from_secs(20);
/// The longest stretch without a successful answer the test accepts. A killed kube-apiserver
/// costs its open connections; HAProxy takes it out after two failed checks a second apart
/// and redispatches refused connections at once, so clients reconnect within seconds.
const MAX_GAP: Duration = Duration::from_secs(10);

/// The operators as deployed: namespace, Deployment, and the label of their Pods.
const OPERATORS: [(&str, &str); 3] = [
    ("pod-operator-system", "pod-operator"),
    ("service-ca-operator-system", "service-ca-operator"),
    ("credentials-operator-system", "credentials-operator"),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Create,
    Label,
    Delete,
}

/// One request as the client saw it.
#[derive(Debug, Clone)]
struct Record {
    op: Op,
    name: String,
    /// The label value an acknowledged label write set.
    value: u64,
    sent: Duration,
    done: Duration,
    error: Option<String>,
}

#[derive(Default)]
struct Log {
    records: Vec<Record>,
}

fn request(name: &str) -> Result<PodRequest> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "pod.jewzaam.org/v1alpha1", "kind": "PodRequest",
        "metadata": { "name": name, "labels": { "ha.operon.dev/seq": "0" } },
        // Exits on SIGTERM: a deleted request's Pod goes at once, not after 30 s.
        "spec": { "name": "load", "image": "busybox",
                  "command": ["sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"] },
    }))?)
}

/// Sends one operation per [`TICK`] for `duration`, each in its own task (a slow answer
/// delays no later request), and records each answer.
async fn load(
    api: Api<PodRequest>,
    log: Arc<Mutex<Log>>,
    t0: Instant,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Result<()> {
    let mut ticker = tokio::time::interval(TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut live: std::collections::VecDeque<String> = Default::default();
    let mut next = 0u64;
    let mut label = 0u64;
    let mut tasks = tokio::task::JoinSet::new();
    for tick in 0u64.. {
        if *stop.borrow() {
            break;
        }
        ticker.tick().await;
        // Two creates, two label writes and (once full) deletes keep LIVE requests.
        let op = match tick % 3 {
            0 | 1 if live.len() < LIVE => Op::Create,
            0 => Op::Delete,
            _ => Op::Label,
        };
        let (name, value) = match op {
            Op::Create => {
                next += 1;
                let name = format!("r{next}");
                live.push_back(name.clone());
                (name, 0)
            }
            Op::Delete => match live.pop_front() {
                Some(name) => (name, 0),
                None => continue,
            },
            Op::Label => {
                let Some(name) = live.get((tick as usize / 3) % live.len().max(1)).cloned() else {
                    continue;
                };
                label += 1;
                (name, label)
            }
        };
        let api = api.clone();
        let log = log.clone();
        let body = request(&name)?;
        tasks.spawn(async move {
            let sent = t0.elapsed();
            let call = async {
                match op {
                    Op::Create => api.create(&PostParams::default(), &body).await.map(|_| ()),
                    Op::Label => api
                        .patch(
                            &name,
                            &PatchParams::default(),
                            &Patch::Merge(json!({
                                "metadata": { "labels": { "ha.operon.dev/seq": value.to_string() } }
                            })),
                        )
                        .await
                        .map(|_| ()),
                    Op::Delete => api
                        .delete(&name, &DeleteParams::default())
                        .await
                        .map(|_| ()),
                }
            };
            let error = match tokio::time::timeout(REQUEST_TIMEOUT, call).await {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(e.to_string()),
                Err(_) => Some(format!("no answer in {REQUEST_TIMEOUT:?}")),
            };
            log.lock().records.push(Record {
                op,
                name,
                value,
                sent,
                done: t0.elapsed(),
                error,
            });
        });
    }
    while tasks.join_next().await.is_some() {}
    Ok(())
}

/// The longest time between consecutive successful answers during the load (from its first
/// request to its last), and when it began.
fn longest_gap(records: &[Record], start: Duration, end: Duration) -> (Duration, Duration) {
    let mut done: Vec<Duration> = records
        .iter()
        .filter(|r| r.error.is_none())
        .map(|r| r.done)
        .collect();
    done.push(start);
    done.push(end);
    done.sort();
    done.windows(2)
        .map(|w| (w[1] - w[0], w[0]))
        .max()
        .unwrap_or_default()
}

async fn leader(client: &Client, ns: &str) -> Result<String, String> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), ns);
    let list = leases
        .list(&ListParams::default())
        .await
        .map_err(|e| e.to_string())?;
    list.items
        .iter()
        .find_map(|l| l.spec.as_ref()?.holder_identity.clone())
        .filter(|h| !h.is_empty())
        .ok_or_else(|| format!("no holder in {} Leases", list.items.len()))
}

fn kubectl(kubeconfig: &Path, args: &[&str]) -> Result<String> {
    let out = operon_cluster::apply::kubectl(kubeconfig)
        .args(args)
        .output()?;
    ensure!(
        out.status.success(),
        "kubectl {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The operators' images built, pushed to the node's registry and applied with
/// `config/default`, as `cargo xtask deploy` does for a user.
fn deploy(kubeconfig: &Path) -> Result<()> {
    let status = Command::new(env!("CARGO_BIN_EXE_xtask-kube"))
        .args(["deploy", "--kubeconfig"])
        .arg(kubeconfig)
        .status()?;
    ensure!(status.success(), "cargo xtask deploy failed ({status})");
    Ok(())
}

#[tokio::test]
async fn the_api_survives_losing_a_store_member_an_apiserver_and_each_operators_leader()
-> Result<()> {
    let t_start = Instant::now();
    let cp = ControlPlane::builder()
        .ha(true)
        .real_node(true)
        .skip_from_env()
        .start()
        .await?;
    eprintln!(
        "ha: control plane ready in {} ({})",
        cp.startup_times(),
        cp.dir().display()
    );
    let result = scenario(&cp).await;
    if result.is_err() {
        for (name, log) in cp.log_files() {
            eprintln!(
                "--- {name} ({}):\n{}",
                log.display(),
                operon_cluster::tail(&log, 15)
            );
        }
    }
    eprintln!("ha: whole test {:.0?}", t_start.elapsed());
    result
}

async fn scenario(cp: &ControlPlane) -> Result<()> {
    let client = cp.client().await?;
    let kubeconfig = cp.kubeconfig_path();

    // The kubernetes Service leads Pods to both API servers.
    let endpoints = kubectl(
        kubeconfig,
        &[
            "get",
            "endpointslices",
            "-n",
            "default",
            "-l",
            "kubernetes.io/service-name=kubernetes",
            "-o",
            "jsonpath={.items[*].endpoints[*].addresses[*]}",
        ],
    )?;
    let mut addresses: Vec<&str> = endpoints.split_whitespace().collect();
    addresses.sort_unstable();
    let mut expected: Vec<String> = cp
        .apiservers()
        .iter()
        .filter_map(|u| {
            let host = u.trim_start_matches("https://");
            host.rsplit_once(':').map(|(ip, _)| ip.to_owned())
        })
        .collect();
    expected.sort_unstable();
    ensure!(
        addresses == expected,
        "the kubernetes Service's endpoints are {addresses:?}, not both API servers {expected:?}"
    );

    let t_deploy = Instant::now();
    let kc = kubeconfig.to_path_buf();
    tokio::task::spawn_blocking(move || deploy(&kc)).await??;
    eprintln!("ha: operators deployed in {:.0?}", t_deploy.elapsed());
    for (ns, _) in OPERATORS {
        wait::until("a leader", Duration::from_secs(90), || leader(&client, ns)).await?;
    }

    Api::<Namespace>::all(client.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({ "metadata": { "name": NS } }))?,
        )
        .await?;
    let api: Api<PodRequest> = Api::namespaced(client.clone(), NS);
    let log = Arc::new(Mutex::new(Log::default()));
    let t0 = Instant::now();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let load = tokio::spawn(load(api.clone(), log.clone(), t0, stop_rx));
    let mut events: Vec<(Duration, String)> = Vec::new();

    tokio::time::sleep(PHASE).await;
    events.push((t0.elapsed(), "killed etcd-1".into()));
    cp.kill_component("etcd-1")?;
    tokio::time::sleep(PHASE).await;
    events.push((t0.elapsed(), "killed kube-apiserver-0".into()));
    cp.kill_component("kube-apiserver-0")?;
    tokio::time::sleep(PHASE).await;
    // The leader now, which may not be the first one: losing its API server can cost a
    // leader its Lease.
    let mut leaders = BTreeMap::new();
    for (ns, _) in OPERATORS {
        let holder = leader(&client, ns).await.map_err(anyhow::Error::msg)?;
        events.push((t0.elapsed(), format!("killed {ns}'s leader {holder}")));
        leaders.insert(ns, holder.clone());
        Api::<Pod>::namespaced(client.clone(), ns)
            .delete(&holder, &DeleteParams::default().grace_period(0))
            .await
            .with_context(|| format!("deleting {ns}'s leader {holder}"))?;
    }
    tokio::time::sleep(PHASE).await;
    stop_tx.send(true)?;
    load.await??;
    let end = t0.elapsed();
    let records = std::mem::take(&mut log.lock().records);

    // What the clients saw. A label write or delete of a request whose create failed finds
    // nothing: the consequence of an error already counted, not one of its own.
    let (gap, gap_at) = longest_gap(&records, Duration::ZERO, end);
    let acknowledged: BTreeSet<&str> = records
        .iter()
        .filter(|r| r.op == Op::Create && r.error.is_none())
        .map(|r| r.name.as_str())
        .collect();
    let errors: Vec<&Record> = records
        .iter()
        .filter(|r| match &r.error {
            None => false,
            Some(e) => {
                r.op == Op::Create
                    || acknowledged.contains(r.name.as_str())
                    || !e.contains("NotFound")
            }
        })
        .collect();
    let mut latencies: Vec<Duration> = records
        .iter()
        .filter(|r| r.error.is_none())
        .map(|r| r.done - r.sent)
        .collect();
    latencies.sort();
    let p99 = latencies
        .get(latencies.len().saturating_sub(1) * 99 / 100)
        .copied()
        .unwrap_or_default();
    let max = latencies.last().copied().unwrap_or_default();
    eprintln!(
        "ha: {} requests in {end:.0?}, {} errors, longest gap without a success {gap:.1?} \
         (from {gap_at:.1?}), latency p99 {p99:.0?}, max {max:.0?}",
        records.len(),
        errors.len()
    );
    for (at, what) in &events {
        eprintln!("ha: {at:>6.1?} {what}");
    }
    for e in &errors {
        eprintln!(
            "ha: error {:?} {} sent at {:.1?}: {}",
            e.op,
            e.name,
            e.sent,
            e.error.as_deref().unwrap_or_default()
        );
    }
    ensure!(
        records.len() as f64 >= 0.9 * end.as_secs_f64() / TICK.as_secs_f64(),
        "the load sent only {} requests in {end:.0?}",
        records.len()
    );
    ensure!(
        gap <= MAX_GAP,
        "clients went {gap:.1?} without a successful answer (from {gap_at:.1?}; at most {MAX_GAP:?})"
    );
    ensure!(
        errors.len() * 10 <= records.len(),
        "{} of {} requests failed",
        errors.len(),
        records.len()
    );

    // No acknowledged write is lost.
    let mut created = BTreeSet::new();
    let mut delete_sent = BTreeSet::new();
    let mut deleted = BTreeSet::new();
    let mut labelled: BTreeMap<String, u64> = BTreeMap::new();
    for r in &records {
        match (r.op, &r.error) {
            (Op::Create, None) => {
                created.insert(r.name.clone());
            }
            (Op::Delete, error) => {
                delete_sent.insert(r.name.clone());
                if error.is_none() {
                    deleted.insert(r.name.clone());
                }
            }
            (Op::Label, None) => {
                let last = labelled.entry(r.name.clone()).or_default();
                *last = (*last).max(r.value);
            }
            _ => {}
        }
    }
    let kept: Vec<&String> = created.difference(&delete_sent).collect();
    let present: BTreeMap<String, PodRequest> = api
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .map(|r| (r.name_any(), r))
        .collect();
    for name in &kept {
        let Some(request) = present.get(*name) else {
            bail!("PodRequest {name} was acknowledged as created and is gone");
        };
        if let Some(&value) = labelled.get(*name) {
            let seen: u64 = request
                .labels()
                .get("ha.operon.dev/seq")
                .and_then(|v| v.parse().ok())
                .unwrap_or_default();
            ensure!(
                seen >= value,
                "PodRequest {name}: the label write of {value} was acknowledged, it carries {seen}"
            );
        }
    }
    eprintln!(
        "ha: {} creates, {} deletes and {} labelled requests acknowledged; {} requests kept, all present",
        created.len(),
        deleted.len(),
        labelled.len(),
        kept.len()
    );

    // Everything converges: acknowledged deletes are gone, every request left has exactly one
    // Pod of its own.
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let converged = wait::until(
        "every PodRequest with exactly one Pod, deleted ones gone",
        Duration::from_secs(120),
        || async {
            let requests = api
                .list(&ListParams::default())
                .await
                .map_err(|e| e.to_string())?
                .items;
            let pods = pods
                .list(&ListParams::default())
                .await
                .map_err(|e| e.to_string())?
                .items;
            for name in &deleted {
                if requests.iter().any(|r| &r.name_any() == name) {
                    return Err(format!("deleted PodRequest {name} still there"));
                }
            }
            for request in &requests {
                let uid = request.uid().unwrap_or_default();
                let owned = pods
                    .iter()
                    .filter(|p| p.metadata.deletion_timestamp.is_none())
                    .filter(|p| p.owner_references().iter().any(|o| o.uid == uid))
                    .count();
                if owned != 1 {
                    return Err(format!("{} has {owned} Pods", request.name_any()));
                }
            }
            let orphans = pods
                .iter()
                .filter(|p| p.metadata.deletion_timestamp.is_none())
                .filter(|p| {
                    !p.owner_references()
                        .iter()
                        .any(|o| requests.iter().any(|r| r.uid().as_deref() == Some(&o.uid)))
                })
                .count();
            if orphans > 0 {
                return Err(format!("{orphans} Pods without their request"));
            }
            Ok(requests.len())
        },
    )
    .await?;
    eprintln!("ha: {converged} PodRequests converged, one Pod each");

    // Each operator changed leader to its other replica and is whole again.
    for (ns, name) in OPERATORS {
        let old = &leaders[ns];
        let new = wait::until("a new leader", Duration::from_secs(90), || async {
            let holder = leader(&client, ns).await?;
            let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
            match pods.get_opt(&holder).await.map_err(|e| e.to_string())? {
                Some(_) if &holder != old => Ok(holder),
                _ => Err(format!("held by {holder}")),
            }
        })
        .await?;
        let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
        wait::until(
            "the Deployment available with 2 replicas",
            Duration::from_secs(120),
            || async {
                let deployment = deployments
                    .get(&format!("{name}-controller-manager"))
                    .await
                    .map_err(|e| e.to_string())?;
                let available = deployment
                    .status
                    .and_then(|s| s.available_replicas)
                    .unwrap_or_default();
                (available == 2)
                    .then_some(())
                    .ok_or_else(|| format!("{available} available"))
            },
        )
        .await?;
        eprintln!("ha: {name}: leader {old} -> {new}");
    }

    // The new service-ca leader serves: an annotated Service gets its certificate.
    let services: Api<Service> = Api::namespaced(client.clone(), NS);
    services
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": { "name": "after-failover", "annotations": {
                    "service.beta.openshift.io/serving-cert-secret-name": "after-failover-tls" } },
                "spec": { "ports": [{ "port": 443 }] },
            }))?,
        )
        .await?;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), NS);
    wait::until(
        "the serving certificate Secret",
        Duration::from_secs(60),
        || async {
            match secrets.get_opt("after-failover-tls").await {
                Ok(Some(s)) if s.data.as_ref().is_some_and(|d| d.contains_key("tls.crt")) => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await?;

    // The lost members come back and catch up.
    let t_back = Instant::now();
    cp.start_component("etcd-1").await?;
    cp.start_component("kube-apiserver-0").await?;
    eprintln!(
        "ha: etcd-1 and kube-apiserver-0 back in {:.1?}",
        t_back.elapsed()
    );
    let members = cp
        .etcd_request("/v3/cluster/member/list", &json!({}))
        .await?;
    let count = members["members"].as_array().map_or(0, Vec::len);
    ensure!(count == 3, "etcd lists {count} members: {members}");
    Ok(())
}
