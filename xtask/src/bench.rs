//! `cargo xtask bench`: the benchmarks, each a `harness = false` bench target that runs its own
//! baseline in the same process and prints ratios against it (docs/benchmarks.md).

use std::time::Instant;

use anyhow::{Result, bail};

use crate::{cargo, elapsed, k8s, run};

/// One benchmark: `cargo bench -p <package> --bench <target>`.
pub struct Bench {
    /// The name on the command line.
    pub name: &'static str,
    pub package: &'static str,
    pub target: &'static str,
}

/// Every benchmark, in the order a plain `cargo xtask bench` runs them.
pub const BENCHES: &[Bench] = &[Bench {
    name: "service-ca",
    package: "service-ca-operator",
    target: "issue",
}];

/// Runs the benchmarks called `names` (all when empty); `n` is their size (`OPERON_BENCH_N`).
pub fn bench(names: &[String], n: Option<usize>) -> Result<()> {
    let mut selected = Vec::new();
    for name in names {
        match BENCHES.iter().find(|b| b.name == name) {
            Some(b) => selected.push(b),
            None => bail!(
                "unknown benchmark {name:?}; known: {}",
                BENCHES
                    .iter()
                    .map(|b| b.name)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
    if selected.is_empty() {
        selected.extend(BENCHES);
    }
    let t0 = Instant::now();
    // The benchmarks run on the local control plane.
    let bin = k8s::ensure_built(false)?;
    for b in selected {
        let mut cmd = cargo();
        cmd.args(["bench", "-p", b.package, "--bench", b.target])
            .env("KUBEBUILDER_ASSETS", &bin);
        if let Some(n) = n {
            cmd.env("OPERON_BENCH_N", n.to_string());
        }
        run(&format!("bench {}", b.name), &mut cmd)?;
    }
    println!("xtask: benchmarks done in {}", elapsed(t0));
    Ok(())
}
