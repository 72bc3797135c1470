//! moto's server (an AWS emulator, IAM included) from PyPI, for tests and the local demo.
//!
//! `moto[server]==MOTO_VERSION` goes into a virtualenv of its own at
//! `~/.cache/operon/moto/<version>/venv`, made with the machine's `python3`; a stamp file makes a
//! second install instant. `OPERON_MOTO_SERVER` (a `moto_server` executable) takes precedence.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};
use operon_assets::{
    MOTO_SERVER_ENV as SERVER_ENV, MOTO_VERSION, is_executable, moto_server as default_server,
    moto_venv as default_venv,
};

use crate::elapsed;

/// moto 5.2.5 declares `Requires-Python: >=3.10`.
const PYTHON_MIN: (u32, u32) = (3, 10);
const STAMP_FILE: &str = ".install-stamp";
const LOCK_FILE: &str = ".install-lock";

fn requirement() -> String {
    format!("moto[server]=={MOTO_VERSION}")
}

/// The interpreter the virtualenv is made from: `$OPERON_PYTHON`, else `python3` on PATH.
fn python() -> Result<PathBuf> {
    let python = match std::env::var_os("OPERON_PYTHON").filter(|p| !p.is_empty()) {
        Some(p) => PathBuf::from(p),
        None => operon_assets::on_path("python3").with_context(|| {
            format!(
                "Python is not installed (no `python3` on PATH). moto, the AWS emulator, is a \
                     Python package and needs Python {}.{} or newer with venv (Debian: \
                     `apt-get install python3 python3-venv`). Alternatively set {SERVER_ENV} to a \
                     moto_server executable.",
                PYTHON_MIN.0, PYTHON_MIN.1
            )
        })?,
    };
    let out = Command::new(&python)
        .args(["-c", "import sys; print('%d.%d.%d' % sys.version_info[:3])"])
        .output()
        .with_context(|| format!("running {}", python.display()))?;
    let version = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let found = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    ensure!(
        out.status.success() && found >= PYTHON_MIN,
        "moto {MOTO_VERSION} needs Python {}.{} or newer; {} is {version:?}",
        PYTHON_MIN.0,
        PYTHON_MIN.1,
        python.display()
    );
    Ok(python)
}

/// Identifies an install: the requirement, the interpreter's version and where the virtualenv
/// is (its scripts name their own path: a cache moved elsewhere has to be made again).
fn stamp(python: &Path, venv: &Path) -> Result<String> {
    let out = Command::new(python).arg("--version").output()?;
    let version = String::from_utf8_lossy(&out.stdout).trim().to_string();
    Ok(format!("{} {version} {}\n", requirement(), venv.display()))
}

/// The `moto_server` to use, installing the pinned moto first when needed. Honours
/// `OPERON_MOTO_SERVER`.
pub fn ensure_installed() -> Result<PathBuf> {
    if let Some(server) = std::env::var_os(SERVER_ENV).filter(|p| !p.is_empty()) {
        let server = PathBuf::from(server);
        ensure!(
            is_executable(&server),
            "{SERVER_ENV}={} is not an executable file; unset it to install moto {MOTO_VERSION} \
             into {}",
            server.display(),
            default_venv().display()
        );
        println!("moto: using {SERVER_ENV}={}", server.display());
        return Ok(server);
    }
    let venv = default_venv();
    let dir = venv.parent().map(Path::to_path_buf).unwrap_or_default();
    let server = default_server();
    let python = python()?;
    let stamp = stamp(&python, &venv)?;
    let up_to_date = || {
        is_executable(&server)
            && std::fs::read_to_string(dir.join(STAMP_FILE))
                .ok()
                .as_deref()
                == Some(stamp.as_str())
    };
    if up_to_date() {
        println!("moto: {MOTO_VERSION} up to date in {}", venv.display());
        return Ok(server);
    }

    // Two installs at once (two `cargo xtask test`) would write the same virtualenv.
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let lock = File::create(dir.join(LOCK_FILE))?;
    lock.lock().context("locking the moto install")?;
    if up_to_date() {
        println!("moto: {MOTO_VERSION} up to date in {}", venv.display());
        return Ok(server);
    }

    // A virtualenv has its own path written into its scripts, so it can't be built elsewhere
    // and moved; a half-made one (no stamp) is removed and made again.
    let _ = std::fs::remove_file(dir.join(STAMP_FILE));
    if venv.exists() {
        println!(
            "moto: removing an outdated or incomplete virtualenv in {}",
            venv.display()
        );
        std::fs::remove_dir_all(&venv).with_context(|| format!("removing {}", venv.display()))?;
    }
    let t0 = Instant::now();
    println!(
        "moto: [{}] creating a virtualenv in {}",
        elapsed(t0),
        venv.display()
    );
    let status = Command::new(&python)
        .args(["-m", "venv"])
        .arg(&venv)
        .status()
        .context("python3 -m venv")?;
    if !status.success() {
        bail!(
            "`{} -m venv` failed ({status}); on Debian the venv module is the python3-venv package",
            python.display()
        );
    }
    println!(
        "moto: [{}] pip install {} (PyPI)",
        elapsed(t0),
        requirement()
    );
    let venv_python = venv.join("bin").join("python");
    let status = Command::new(&venv_python)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-input",
        ])
        .arg(requirement())
        .status()
        .context("pip install")?;
    ensure!(status.success(), "pip install {} failed", requirement());

    let out = Command::new(&venv_python)
        .args(["-c", "import moto; print(moto.__version__)"])
        .output()?;
    let installed = String::from_utf8_lossy(&out.stdout).trim().to_string();
    ensure!(
        installed == MOTO_VERSION,
        "the virtualenv has moto {installed:?}, expected {MOTO_VERSION}"
    );
    ensure!(
        is_executable(&server),
        "pip installed moto but no {}",
        server.display()
    );
    std::fs::write(dir.join(STAMP_FILE), stamp)?;
    println!(
        "moto: installed {} in {} ({})",
        requirement(),
        elapsed(t0),
        server.display()
    );
    Ok(server)
}

/// `cargo xtask moto path`: where `moto_server` is (or will be after `cargo xtask moto install`).
pub fn path() -> PathBuf {
    std::env::var_os(SERVER_ENV)
        .filter(|p| !p.is_empty())
        .map_or_else(default_server, PathBuf::from)
}
