//! `cargo xtask`'s front: checks the machine first, then builds and runs.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::thread::JoinHandle;
use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};
use clap::Parser;
use xtask::cli::{Cli, ClusterCmd, Cmd, K8sCmd, LOCAL_IMAGE_PROFILE, MotoCmd};
use xtask::{
    OPERATORS, bundle_validate, cargo, elapsed, fuzz, helm, k8s, moto, prereq, repo_root, report,
    run,
};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let verbose = cli.verbose;
    report::exit(dispatch(cli.command), verbose)
}

fn dispatch(command: Cmd) -> Result<()> {
    // Everything the command will need, in its first seconds: never after a long build.
    prereq::ensure(&command_line(), &command.uses())?;
    if command.is_kube() {
        return kube(&command);
    }
    match command {
        Cmd::Setup { check } => prereq::setup(check),
        Cmd::K8s { command } => match command {
            K8sCmd::Build { force } => k8s::ensure_built(force).map(|_| ()),
            K8sCmd::GenMod => k8s::gen_mod(),
            K8sCmd::Path => {
                println!("{}", operon_assets::default_bin_dir().display());
                Ok(())
            }
        },
        Cmd::Moto { command } => match command {
            MotoCmd::Install => moto::ensure_installed().map(|_| ()),
            MotoCmd::Path => {
                println!("{}", moto::path().display());
                Ok(())
            }
        },
        Cmd::Test { args } => test(&args),
        Cmd::Lint => lint(),
        Cmd::BundleValidate => bundle_validate::run(),
        Cmd::Fuzz { targets, seconds } => fuzz::run(&targets, seconds),
        Cmd::Cluster { .. }
        | Cmd::Up(_)
        | Cmd::Deploy { .. }
        | Cmd::Manifests
        | Cmd::Image { .. }
        | Cmd::BundleImage { .. }
        | Cmd::Bench { .. }
        | Cmd::Soak(_) => bail!("{command:?} runs in xtask-kube"),
    }
}

/// `cargo xtask <subcommand words>`, for messages.
fn command_line() -> String {
    let words: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .take(2)
        .collect();
    format!("`cargo xtask {}`", words.join(" "))
}

/// A step that runs in the background while the foreground builds Rust.
struct Background<T>(&'static str, JoinHandle<Result<T>>);

impl<T: Send + 'static> Background<T> {
    fn start(what: &'static str, f: impl FnOnce() -> Result<T> + Send + 'static) -> Self {
        Background(what, std::thread::spawn(f))
    }

    fn join(self) -> Result<T> {
        match self.1.join() {
            Ok(result) => result.with_context(|| self.0),
            Err(_) => bail!("{} panicked", self.0),
        }
    }
}

/// Runs a command of `xtask-kube`: the Go build and moto's install it needs run in the
/// background while `xtask-kube` (and, for `up` and `deploy`, the operators' images)
/// compile, so that both cores stay busy; then this process becomes `xtask-kube`.
fn kube(command: &Cmd) -> Result<()> {
    let needs_k8s = match command {
        Cmd::Cluster { command } => matches!(
            command,
            ClusterCmd::Up { .. } | ClusterCmd::Snapshot { .. } | ClusterCmd::Restore { .. }
        ),
        Cmd::Up(_) | Cmd::Deploy { .. } | Cmd::Bench { .. } | Cmd::Soak(_) => true,
        _ => false,
    };
    let k8s = needs_k8s.then(|| {
        Background::start("building the Kubernetes binaries", || {
            k8s::ensure_built(false)
        })
    });
    let moto = matches!(command, Cmd::Up(_) | Cmd::Soak(_))
        .then(|| Background::start("installing moto", moto::ensure_installed));
    let images = match command {
        Cmd::Up(args) => !args.local(),
        Cmd::Deploy { .. } | Cmd::Soak(_) => true,
        _ => false,
    };
    let built = build_kube();
    let built = built.and_then(|kube| {
        if images {
            println!(
                "xtask: building the operators' images ({LOCAL_IMAGE_PROFILE} profile, musl: \
                 a first build takes about 6 minutes on 2 cores beside Go's, seconds after)"
            );
            let status = Command::new(&kube)
                .args(["image", "--profile", LOCAL_IMAGE_PROFILE])
                .args(OPERATORS)
                .status()
                .context("running xtask-kube image")?;
            ensure!(
                status.success(),
                "building the operators' images failed ({status})"
            );
        }
        Ok(kube)
    });
    // Wait for the background steps even when the foreground failed: their output would
    // otherwise run on after this process ends.
    if built.is_err() && k8s.is_some() {
        println!(
            "xtask: the Rust build failed (below); waiting for the Go build to finish, as its \
             work is kept for the next run (Ctrl-C stops it)"
        );
    }
    let k8s = k8s.map(Background::join).transpose();
    let moto = moto.map(Background::join).transpose();
    let kube = built?;
    k8s?;
    moto?;
    exec(&kube)
}

/// Builds `xtask-kube` with cargo's progress showing; returns the executable.
fn build_kube() -> Result<PathBuf> {
    let t0 = Instant::now();
    println!(
        "xtask: building xtask-kube (kube-rs and the cluster crates: a first build takes about \
         6 minutes on 2 cores beside Go's, seconds after)"
    );
    let mut child = cargo()
        .args([
            "build",
            "--package",
            "xtask-kube",
            "--bin",
            "xtask-kube",
            "--message-format",
            "json-render-diagnostics",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .context("running cargo build")?;
    let stdout = child.stdout.take().context("cargo's stdout")?;
    let mut executable = None;
    for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)) {
        let line = line?;
        let Ok(message) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        if message["reason"] == "compiler-artifact"
            && message["target"]["name"] == "xtask-kube"
            && let Some(path) = message["executable"].as_str()
        {
            executable = Some(PathBuf::from(path));
        }
    }
    let status = child.wait()?;
    ensure!(status.success(), "building xtask-kube failed ({status})");
    let executable = executable.context("cargo build named no xtask-kube executable")?;
    if t0.elapsed().as_secs() >= 5 {
        println!("xtask: xtask-kube built in {}", elapsed(t0));
    }
    Ok(executable)
}

/// Becomes `program` with this process's arguments (signals such as Ctrl-C then reach it
/// directly).
fn exec(program: &std::path::Path) -> Result<()> {
    use std::os::unix::process::CommandExt;
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let error = Command::new(program).args(args).exec();
    Err(error).with_context(|| format!("running {}", program.display()))
}

fn test(args: &[String]) -> Result<()> {
    let t0 = Instant::now();
    // Go's builds and moto's install run while cargo compiles the tests.
    let go = Background::start(
        "building the Kubernetes binaries, Helm and the bundle validators",
        || {
            k8s::ensure_built(false)?;
            Ok((helm::ensure_built()?, bundle_validate::ensure_built()?))
        },
    );
    let moto = Background::start("installing moto", moto::ensure_installed);
    let compiled = run(
        "cargo test --no-run (compiling the tests)",
        cargo()
            .args(["test", "--workspace", "--all-targets", "--no-run"])
            .args(args.iter().take_while(|a| *a != "--")),
    );
    if compiled.is_err() {
        println!(
            "xtask: compiling the tests failed (below); waiting for the Go builds to finish, as \
             their work is kept for the next run (Ctrl-C stops them)"
        );
    }
    let go = go.join();
    let moto = moto.join();
    compiled?;
    let (helm, validator) = go?;
    let moto_server = moto?;
    run(
        "cargo test --workspace",
        cargo()
            .args(["test", "--workspace", "--all-targets"])
            .args(args)
            .env(operon_assets::MOTO_SERVER_ENV, &moto_server)
            .env("HELM", &helm)
            .env(bundle_validate::ENV, &validator),
    )?;
    println!("xtask: all tests passed in {}", elapsed(t0));
    Ok(())
}

fn lint() -> Result<()> {
    run(
        "cargo fmt --check",
        cargo().args(["fmt", "--all", "--check"]),
    )?;
    run(
        "cargo clippy",
        cargo().args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]),
    )?;
    k8s::gen_mod()?;
    k8s::check_coredns_mod()?;
    k8s::check_monitoring_mod()?;
    k8s::check_tidy(&bundle_validate::module_dir(), "tools/bundle-validate")?;
    let kube = build_kube()?;
    run(
        "cargo xtask manifests",
        Command::new(kube).arg("manifests").current_dir(repo_root()),
    )?;
    run(
        "generated files in sync",
        Command::new("git").current_dir(repo_root()).args([
            "diff",
            "--exit-code",
            "--stat",
            "--",
            "tools/k8s",
            "tools/etcd",
            "config",
            "bundle",
            "charts",
        ]),
    )
    .context(
        "generated files differ from a fresh generation (`cargo xtask k8s gen-mod`, \
         `cargo xtask manifests`); commit the regenerated files",
    )?;
    let untracked = Command::new("git")
        .current_dir(repo_root())
        .args([
            "ls-files",
            "--others",
            "--exclude-standard",
            "--",
            "config",
            "tools/k8s",
            "tools/etcd",
            "bundle",
            "charts",
        ])
        .output()?;
    ensure!(
        untracked.stdout.is_empty(),
        "generated files not committed:\n{}",
        String::from_utf8_lossy(&untracked.stdout)
    );
    Ok(())
}
