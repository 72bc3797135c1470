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
    OPERATORS, bundle_validate, cargo, disk, elapsed, fuzz, helm, k8s, moto, prereq, repo_root,
    report, run,
};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let verbose = cli.verbose;
    report::exit(dispatch(cli.command), verbose)
}

fn dispatch(command: Cmd) -> Result<()> {
    // Everything the command will need, in its first seconds: never after a long build.
    prereq::ensure(&command_line(), &command.uses())?;
    if command.builds() {
        disk::ensure(&command_line(), disk::BUILD)?;
    }
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
    let cargo_args: Vec<&String> = args.iter().take_while(|a| *a != "--").collect();
    let compiled = compile_tests(&cargo_args);
    if compiled.is_err() {
        println!(
            "xtask: compiling the tests failed (below); waiting for the Go builds to finish, as \
             their work is kept for the next run (Ctrl-C stops them)"
        );
    }
    let go = go.join();
    let moto = moto.join();
    let beside = compiled?;
    let (helm, validator) = go?;
    let moto_server = moto?;
    let env = [
        (OsString::from(operon_assets::MOTO_SERVER_ENV), moto_server),
        (OsString::from("HELM"), helm),
        (OsString::from(bundle_validate::ENV), validator),
    ];
    let test = |what: &str, extra: &[&str]| {
        run(
            what,
            cargo()
                .args(["test", "--workspace", "--all-targets"])
                .args(extra)
                .args(args)
                .envs(env.iter().map(|(k, v)| (k, v))),
        )
    };
    // Only the whole suite is split (with arguments, it runs as cargo runs it).
    let Some(beside) = beside.filter(|_| args.is_empty()) else {
        test("cargo test --workspace", &[])?;
        println!("xtask: all tests passed in {}", elapsed(t0));
        return Ok(());
    };
    let name = beside.name();
    // The same `cargo test` as the whole suite's (another selection of packages could unify
    // features differently and rebuild), its tests skipped by name.
    let mut skip = vec!["--".to_string(), "--exact".to_string()];
    for t in beside.tests()? {
        skip.extend(["--skip".to_string(), t]);
    }
    let running = beside.start(&env)?;
    let skip: Vec<&str> = skip.iter().map(String::as_str).collect();
    let rest = test(&format!("cargo test --workspace (all but {name})"), &skip);
    let beside_result = running.finish();
    rest?;
    beside_result?;
    println!("xtask: all tests passed in {}", elapsed(t0));
    Ok(())
}

/// The test that runs beside the rest of the suite: the CLI's end-to-end test compiles a
/// generated project of its own (its dependencies twice, debug and musl release: about 9
/// minutes of both cores on a fresh machine), while most of the other integration tests wait on
/// their clusters. It runs at a lower priority, so that the tests with deadlines get the CPU
/// first and it takes what they leave.
const BESIDE: (&str, &str) = ("operon", "e2e");

/// [`BESIDE`]'s compiled test.
struct Beside {
    executable: PathBuf,
    package_dir: PathBuf,
}

impl Beside {
    fn name(&self) -> String {
        format!("{}'s {} test", BESIDE.0, BESIDE.1)
    }

    /// The names of its tests, from the binary itself.
    fn tests(&self) -> Result<Vec<String>> {
        let out = Command::new(&self.executable)
            .args(["--list", "--format", "terse"])
            .current_dir(&self.package_dir)
            .stderr(Stdio::inherit())
            .output()
            .with_context(|| format!("listing the tests of {}", self.executable.display()))?;
        ensure!(
            out.status.success(),
            "listing {}'s tests failed",
            self.name()
        );
        let names: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.strip_suffix(": test"))
            .map(String::from)
            .collect();
        ensure!(!names.is_empty(), "{} lists no tests", self.name());
        Ok(names)
    }

    /// Starts the test binary as `cargo test` would (in its package's directory, with `CARGO`
    /// set), its output into a log printed when it ends.
    fn start(self, env: &[(OsString, PathBuf)]) -> Result<Running> {
        let log_path = xtask::disk::target_dir().join("e2e-test.log");
        let log = std::fs::File::create(&log_path)
            .with_context(|| format!("creating {}", log_path.display()))?;
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let child = Command::new("nice")
            .args(["-n", "5"])
            .arg(&self.executable)
            .current_dir(&self.package_dir)
            .env("CARGO", cargo)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", self.executable.display()))?;
        println!(
            "xtask: {} runs beside the rest of the suite (output: {})",
            self.name(),
            log_path.display()
        );
        Ok(Running {
            name: self.name(),
            child,
            log_path,
            started: Instant::now(),
        })
    }
}

struct Running {
    name: String,
    child: std::process::Child,
    log_path: PathBuf,
    started: Instant,
}

impl Running {
    fn finish(mut self) -> Result<()> {
        let status = self
            .child
            .wait()
            .with_context(|| format!("waiting for {}", self.name))?;
        println!("xtask: {}'s output:", self.name);
        match std::fs::read_to_string(&self.log_path) {
            Ok(text) => print!("{text}"),
            Err(e) => println!("(unreadable: {e})"),
        }
        ensure!(status.success(), "{} failed ({status})", self.name);
        println!("xtask: {} passed in {}", self.name, elapsed(self.started));
        Ok(())
    }
}

/// `cargo test --no-run` for the workspace; returns [`BESIDE`] if it was among what was built.
fn compile_tests(cargo_args: &[&String]) -> Result<Option<Beside>> {
    let what = "cargo test --no-run (compiling the tests)";
    let t0 = Instant::now();
    let out = cargo()
        .args(["test", "--workspace", "--all-targets", "--no-run"])
        .args(["--message-format", "json-render-diagnostics"])
        .args(cargo_args)
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running {what}"))?;
    ensure!(out.status.success(), "{what} failed ({})", out.status);
    println!("xtask: {what} passed in {}", elapsed(t0));
    Ok(beside_from(&String::from_utf8_lossy(&out.stdout)))
}

/// The package's name in a package ID: `path+file:///dir/cli#operon@0.1.0`, or
/// `path+file:///dir/operon#0.1.0` when the directory has the package's name.
fn package_name(id: &str) -> Option<&str> {
    let (source, version) = id.rsplit_once('#')?;
    match version.split_once('@') {
        Some((name, _)) => Some(name),
        None => source.rsplit('/').next(),
    }
}

/// [`Beside`] from cargo's JSON messages.
fn beside_from(messages: &str) -> Option<Beside> {
    let mut executable = None;
    let mut package_dir = None;
    for line in messages.lines() {
        let Ok(message) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if message["reason"] != "compiler-artifact" || message["profile"]["test"] != true {
            continue;
        }
        if package_name(message["package_id"].as_str().unwrap_or_default()) != Some(BESIDE.0) {
            continue;
        }
        let target = &message["target"];
        let is_test = target["kind"]
            .as_array()
            .is_some_and(|k| k.iter().any(|k| k == "test"));
        if is_test && target["name"] == BESIDE.1 {
            executable = message["executable"].as_str().map(PathBuf::from);
            package_dir = message["manifest_path"]
                .as_str()
                .and_then(|m| std::path::Path::new(m).parent().map(PathBuf::from));
        }
    }
    Some(Beside {
        executable: executable?,
        package_dir: package_dir?,
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn package_ids_name_their_package() {
        assert_eq!(
            package_name("path+file:///work/main/crates/cli#operon@0.1.0"),
            Some("operon")
        );
        assert_eq!(
            package_name("path+file:///work/main/crates/operon#0.1.0"),
            Some("operon")
        );
        assert_eq!(
            package_name("registry+https://github.com/rust-lang/crates.io-index#serde@1.0.0"),
            Some("serde")
        );
        assert_eq!(package_name("no-hash"), None);
    }

    #[test]
    fn the_test_beside_the_rest_is_found_among_cargos_messages() {
        let artifact = |package: &str, kind: &str, name: &str, test: bool| {
            serde_json::json!({
                "reason": "compiler-artifact",
                "package_id": package,
                "manifest_path": "/w/crates/cli/Cargo.toml",
                "target": {"kind": [kind], "name": name},
                "profile": {"test": test},
                "executable": format!("/t/debug/deps/{name}-0123"),
            })
            .to_string()
        };
        let cli = "path+file:///w/crates/cli#operon@0.1.0";
        let messages = [
            artifact(cli, "test", "e2e", true),
            artifact(cli, "test", "deploy", true),
            artifact(cli, "lib", "operon", true),
            artifact(cli, "bin", "operon", false),
            artifact("path+file:///w/xtask#0.1.0", "test", "e2e", true),
            "not json".to_string(),
            r#"{"reason":"build-finished","success":true}"#.to_string(),
        ]
        .join("\n");
        let beside = beside_from(&messages).expect("the e2e test was built");
        assert_eq!(beside.executable, PathBuf::from("/t/debug/deps/e2e-0123"));
        assert_eq!(beside.package_dir, PathBuf::from("/w/crates/cli"));
        // Filtered out (`cargo xtask test -p x`): the suite runs as cargo runs it.
        assert!(beside_from(&artifact(cli, "test", "deploy", true)).is_none());
    }
}
