//! operator-framework's bundle validators, as `operator-sdk bundle validate` runs them: the Go
//! program `tools/bundle-validate`, built from its module (Go module proxy) into
//! `~/.cache/operon/bundle-validate/<source hash>/bundle-validate`, once per change of its
//! source. The bundle tests run it on every bundle under `bundle/`.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, ensure};
use operon_assets::{cache_root, is_executable};

use crate::go::go;
use crate::{elapsed, repo_root};

/// The variable `cargo xtask test` passes the built validator in.
pub const ENV: &str = "BUNDLE_VALIDATE";

pub fn module_dir() -> PathBuf {
    repo_root().join("tools").join("bundle-validate")
}

/// FNV-1a of the module's source (go.mod, go.sum, main.go): a rebuilt binary for any change.
fn source_hash() -> Result<String> {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for file in ["go.mod", "go.sum", "main.go"] {
        let path = module_dir().join(file);
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        for byte in bytes.iter().chain(file.as_bytes()) {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    Ok(format!("{hash:016x}"))
}

/// Where the validator built from the current source lives.
pub fn binary() -> Result<PathBuf> {
    Ok(cache_root()
        .join("bundle-validate")
        .join(source_hash()?)
        .join("bundle-validate"))
}

/// The validator, built first when missing.
pub fn ensure_built() -> Result<PathBuf> {
    let bin = binary()?;
    if is_executable(&bin) {
        println!("bundle-validate: up to date in {}", bin.display());
        return Ok(bin);
    }
    let go = go()?;
    let dir = bin.parent().context("no parent")?.to_path_buf();
    let parent = dir.parent().context("no parent")?;
    std::fs::create_dir_all(parent)?;
    let lock = std::fs::File::create(parent.join(".build-lock"))?;
    lock.lock().context("locking the bundle-validate build")?;
    if is_executable(&bin) {
        return Ok(bin);
    }
    let t0 = Instant::now();
    println!(
        "bundle-validate: building operator-framework's validators from {} into {} (about 2 \
         minutes cold on 2 cores)",
        module_dir().display(),
        dir.display()
    );
    let tmp = parent.join(format!("build.tmp.{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp)?;
    let status = Command::new(go)
        .current_dir(module_dir())
        .env("GOFLAGS", "-mod=mod")
        .env("CGO_ENABLED", "0")
        .env("GOTOOLCHAIN", "local")
        .args(["build", "-trimpath", "-ldflags", "-s -w", "-o"])
        .arg(tmp.join("bundle-validate"))
        .arg(".")
        .status()
        .context("running go build (tools/bundle-validate)")?;
    ensure!(
        status.success(),
        "go build tools/bundle-validate failed ({status})"
    );
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::rename(&tmp, &dir)?;
    println!("bundle-validate: built in {}", elapsed(t0));
    Ok(bin)
}

/// `cargo xtask bundle-validate`: every bundle under bundle/, all findings printed; fails on
/// errors, as `operator-sdk bundle validate` does (the bundle test fails on warnings too, but
/// for the few it names).
pub fn run() -> Result<()> {
    let bin = ensure_built()?;
    let root = repo_root().join("bundle");
    let mut bundles: Vec<String> = std::fs::read_dir(&root)
        .with_context(|| format!("reading {}", root.display()))?
        .map(|e| Ok(e?.file_name().to_string_lossy().to_string()))
        .collect::<Result<_>>()?;
    bundles.sort();
    let out = Command::new(&bin)
        .current_dir(&root)
        .args(&bundles)
        .output()
        .with_context(|| format!("running {}", bin.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    print!("{stdout}");
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    let errors = stdout.lines().filter(|l| l.contains(": error: ")).count();
    ensure!(
        matches!(out.status.code(), Some(0 | 1)) && errors == 0,
        "bundle validation failed ({errors} errors, {})",
        out.status
    );
    Ok(())
}
