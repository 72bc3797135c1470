//! Helm, built from its Go module (the chart tests render and lint the generated charts with
//! it): `~/.cache/operon/helm/<version>/bin/helm`, built once.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, ensure};
use operon_assets::{HELM_VERSION, helm_binary, is_executable};

use crate::elapsed;
use crate::go::go;

/// The Helm binary, built first when missing.
pub fn ensure_built() -> Result<PathBuf> {
    let bin = helm_binary();
    if is_executable(&bin) {
        println!("helm: {HELM_VERSION} up to date in {}", bin.display());
        return Ok(bin);
    }
    let go = go()?;
    let dir = bin
        .parent()
        .context("helm's path has no parent")?
        .to_path_buf();
    let parent = dir.parent().context("helm's directory has no parent")?;
    std::fs::create_dir_all(parent)?;
    let lock = std::fs::File::create(parent.join(".build-lock"))?;
    lock.lock().context("locking the helm build")?;
    if is_executable(&bin) {
        return Ok(bin);
    }
    let t0 = Instant::now();
    println!(
        "helm: building helm {HELM_VERSION} from the Go module proxy into {} (about 3 minutes \
         cold on 2 cores)",
        dir.display()
    );
    let tmp = parent.join(format!("bin.tmp.{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp)?;
    let status = Command::new(go)
        .current_dir(&tmp)
        // Resolve Helm's own go.mod, whatever the caller's directory holds.
        .env("GOFLAGS", "-mod=mod")
        .env("GOBIN", &tmp)
        .env("CGO_ENABLED", "0")
        .env("GOTOOLCHAIN", "local")
        .args([
            "install",
            "-trimpath",
            "-ldflags",
            &format!("-s -w -X helm.sh/helm/v3/internal/version.version={HELM_VERSION}"),
            &format!("helm.sh/helm/v3/cmd/helm@{HELM_VERSION}"),
        ])
        .status()
        .context("running go install helm")?;
    ensure!(
        status.success(),
        "go install helm {HELM_VERSION} failed ({status})"
    );
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::rename(&tmp, &dir)?;
    println!("helm: built in {}", elapsed(t0));
    Ok(bin)
}
