//! Go: found on `PATH` or in Operon's cache, and installed there from the Go module proxy (Go's
//! toolchain is a module, `golang.org/toolchain`) when the machine has none recent enough.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};
use operon_assets::{GO_MIN, GO_VERSION, KUBERNETES_VERSION};

use crate::elapsed;

/// `go`'s version as `(major, minor)`, or `None` when it doesn't run.
fn version_of(go: &Path) -> Option<(u32, u32)> {
    let out = Command::new(go)
        .args(["env", "GOVERSION"])
        .env("GOTOOLCHAIN", "local")
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let version = String::from_utf8_lossy(&out.stdout);
    let mut parts = version.trim().trim_start_matches("go").split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

fn cached() -> PathBuf {
    operon_assets::go_root().join("bin").join("go")
}

/// The first Go recent enough for the Kubernetes modules: on `path` (the process's `PATH` when
/// `None`), else Operon's cached install.
pub fn find(path: Option<&OsStr>) -> Option<PathBuf> {
    let path = path
        .map(OsStr::to_os_string)
        .or_else(|| std::env::var_os("PATH"));
    path.map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .map(|d| d.join("go"))
        .chain([cached()])
        .filter(|p| operon_assets::is_executable(p))
        .find(|go| version_of(go).is_some_and(|v| v >= GO_MIN))
}

/// The Go to build with; [`crate::prereq`] installs one when missing, so this only fails when
/// the command skipped that check.
pub fn go() -> Result<PathBuf> {
    find(None).with_context(|| {
        format!(
            "Kubernetes {KUBERNETES_VERSION} is built with Go {}.{} or newer, and there is none: \
             `cargo xtask setup` installs Go {GO_VERSION} into {}",
            GO_MIN.0,
            GO_MIN.1,
            operon_assets::go_root().display()
        )
    })
}

/// Installs Go [`GO_VERSION`] into Operon's cache from the Go module proxy.
pub fn install() -> Result<PathBuf> {
    let t0 = Instant::now();
    let proxy = std::env::var("GOPROXY").ok();
    let proxy = proxy
        .as_deref()
        .and_then(|p| p.split([',', '|']).find(|p| p.starts_with("http")))
        .unwrap_or("https://proxy.golang.org")
        .trim_end_matches('/')
        .to_string();
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => bail!("no Go toolchain module for {other}; install Go {GO_VERSION} by hand"),
    };
    let module = format!("v0.0.1-go{GO_VERSION}.linux-{arch}");
    let url = format!("{proxy}/golang.org/toolchain/@v/{module}.zip");
    println!("setup: installing Go {GO_VERSION} from the Go module proxy ({url})");
    let root = operon_assets::go_root();
    let parent = root
        .parent()
        .context("Go's cache directory has no parent")?;
    std::fs::create_dir_all(parent)?;
    let tmp = parent.join(format!(".go-install-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp)?;
    let zip = tmp.join("go.zip");
    let status = Command::new("curl")
        .args(["-fsSL", "--retry", "3", "-o"])
        .arg(&zip)
        .arg(&url)
        .status()
        .context("running curl")?;
    ensure!(status.success(), "downloading {url} failed ({status})");
    // Python's zipfile keeps it to programs every machine here has (no unzip package).
    let status = Command::new("python3")
        .args(["-m", "zipfile", "-e"])
        .arg(&zip)
        .arg(&tmp)
        .status()
        .context("running python3 -m zipfile")?;
    ensure!(
        status.success(),
        "unpacking {} failed ({status})",
        zip.display()
    );
    let unpacked = tmp.join(format!("golang.org/toolchain@{module}"));
    // zipfile doesn't keep modes: every file under bin/ and pkg/tool/ is a program.
    for dir in [unpacked.join("bin"), unpacked.join("pkg").join("tool")] {
        make_executable(&dir)?;
    }
    let _ = std::fs::remove_dir_all(&root);
    std::fs::rename(&unpacked, &root)
        .with_context(|| format!("moving Go into {}", root.display()))?;
    let _ = std::fs::remove_dir_all(&tmp);
    let go = cached();
    ensure!(
        version_of(&go).is_some_and(|v| v >= GO_MIN),
        "the installed {} does not run",
        go.display()
    );
    println!(
        "setup: Go {GO_VERSION} in {} ({})",
        root.display(),
        elapsed(t0)
    );
    Ok(go)
}

fn make_executable(dir: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    for entry in entries {
        let path = entry?.path();
        if path.is_dir() {
            make_executable(&path)?;
        } else {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
        }
    }
    Ok(())
}
