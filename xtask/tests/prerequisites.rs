//! `cargo xtask` checks the machine before anything long: run with a PATH from which one
//! required tool is hidden, it names that tool in its first seconds, before any build, and
//! (as root, with apt-get) calls the installer for it. The installer here is a stub that
//! records its arguments: the one place the installation is not real.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use xtask::prereq::{Install, Machine, Use};

/// A directory of links to every program on this PATH but `hidden` (and `apt-get`).
fn path_without(dir: &Path, hidden: &[&str]) -> Result<()> {
    let path = std::env::var_os("PATH").context("no PATH")?;
    for entry_dir in std::env::split_paths(&path) {
        let Ok(entries) = std::fs::read_dir(&entry_dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(name_str) = name.to_str() else {
                continue;
            };
            if hidden.contains(&name_str) || name_str == "apt-get" {
                continue;
            }
            let link = dir.join(&name);
            if !link.exists() && operon_assets::is_executable(&entry.path()) {
                std::os::unix::fs::symlink(entry.path(), &link)?;
            }
        }
    }
    Ok(())
}

/// An `apt-get` that appends its arguments to `log` and succeeds.
fn stub_apt_get(dir: &Path, log: &Path) -> Result<()> {
    let stub = dir.join("apt-get");
    std::fs::write(
        &stub,
        format!("#!/bin/sh\necho \"$@\" >> '{}'\nexit 0\n", log.display()),
    )?;
    std::fs::set_permissions(&stub, std::fs::Permissions::from_mode(0o755))?;
    Ok(())
}

fn xtask(path: &Path, args: &[&str]) -> Result<(Output, Duration)> {
    let t0 = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(args)
        .env("PATH", path)
        // Prove the message carries no stack trace even when one is asked for.
        .env("RUST_BACKTRACE", "1")
        .output()
        .context("running xtask")?;
    Ok((out, t0.elapsed()))
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().nth(1).map(|e| e == "0"))
            .unwrap_or(false)
    })
}

#[test]
fn a_hidden_tool_is_named_before_any_build_and_the_installer_is_called_for_it() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin)?;
    path_without(&bin, &["buildah"])?;
    let log = dir.path().join("apt-get.log");
    stub_apt_get(&bin, &log)?;

    let (out, took) = xtask(&bin, &["image", "pod-operator"])?;
    let output = text(&out);
    ensure!(
        !out.status.success(),
        "succeeded without buildah:\n{output}"
    );
    ensure!(output.contains("buildah"), "buildah not named:\n{output}");
    ensure!(
        !output.contains("building xtask-kube") && !output.contains("Compiling"),
        "a build started before the check failed:\n{output}"
    );
    ensure!(
        !output.contains("stack backtrace") && !output.contains("Stack backtrace"),
        "a stack trace for an expected failure:\n{output}"
    );
    ensure!(took < Duration::from_secs(30), "the check took {took:?}");
    if is_root() {
        // As root with apt-get: the installer was invoked for exactly what is missing; the stub
        // installs nothing, so the command then says what is still missing.
        let calls = std::fs::read_to_string(&log).context("apt-get was not called")?;
        ensure!(calls.lines().any(|l| l.starts_with("update")), "{calls}");
        let install = calls
            .lines()
            .find(|l| l.starts_with("install"))
            .with_context(|| format!("no apt-get install: {calls}"))?;
        // Exactly the Debian packages of what that PATH lacks: buildah, and whatever else
        // this machine doesn't have yet.
        let machine = Machine {
            path: Some(bin.clone().into_os_string()),
            root: true,
            rustc: "rustc".into(),
        };
        let mut expected: Vec<&str> = machine
            .missing(&[Use::Images])
            .iter()
            .filter_map(|p| match p.install {
                Install::Debian(package) => Some(package),
                _ => None,
            })
            .collect();
        let mut packages: Vec<&str> = install
            .split_whitespace()
            .filter(|w| !w.starts_with('-') && *w != "install")
            .collect();
        expected.sort_unstable();
        packages.sort_unstable();
        ensure!(expected.contains(&"buildah"), "{expected:?}");
        ensure!(
            packages == expected,
            "apt-get {install}; expected {expected:?}"
        );
        ensure!(
            output.contains("still missing after the installation: buildah"),
            "{output}"
        );
    }
    Ok(())
}

#[test]
fn without_an_installer_every_missing_piece_and_the_command_are_named_at_once() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin)?;
    // No apt-get at all (path_without never links it): not a Debian-like machine.
    path_without(&bin, &["buildah", "skopeo"])?;

    let (out, took) = xtask(&bin, &["image", "pod-operator"])?;
    let output = text(&out);
    ensure!(
        !out.status.success(),
        "succeeded without buildah:\n{output}"
    );
    for tool in ["buildah", "skopeo"] {
        ensure!(output.contains(tool), "{tool} not named:\n{output}");
    }
    ensure!(output.contains("not a Debian-like system"), "{output}");
    ensure!(
        output.contains("`cargo xtask image pod-operator`"),
        "{output}"
    );
    ensure!(!output.contains("building xtask-kube"), "{output}");
    ensure!(took < Duration::from_secs(30), "the check took {took:?}");
    Ok(())
}
