//! What a command needs from the machine, checked in its first second and installed when missing.
//!
//! [`PREREQUISITES`] is the one list: `cargo xtask setup` installs all of it, every other command
//! the part it [`Use`]s, before any long build. Debian packages are installed with `apt-get` (as
//! root directly, else through `sudo`, saying what and why); Go from the Go module proxy into
//! Operon's cache; Rust components and targets with `rustup`. What can't be installed here (not
//! root where root is needed, no `apt-get`, no `sudo`) stops the command at once with one message
//! that lists every missing piece and the command that installs them.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::{elapsed, go};

/// Something a command does that needs part of the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Use {
    /// Building the Kubernetes binaries, CoreDNS, Helm, the bundle validators or the benchmark's
    /// Go peer.
    Go,
    /// moto's server, the AWS IAM emulator, in a virtualenv of the machine's Python.
    Moto,
    /// A real node: kubelet, containerd and the rest, run as root in namespaces of their own.
    Node,
    /// The operators' container images, built and pushed without a container engine.
    Images,
    /// `promtool`, the alert rule tests' runner.
    Promtool,
    /// The monitoring stack's images, made partly from Debian's Prometheus packages.
    Monitoring,
    /// `cargo fmt` and `cargo clippy`.
    Lint,
    /// The HA control plane's load balancer in front of its API servers.
    Ha,
}

impl Use {
    pub const ALL: [Use; 8] = [
        Use::Go,
        Use::Moto,
        Use::Node,
        Use::Images,
        Use::Promtool,
        Use::Monitoring,
        Use::Lint,
        Use::Ha,
    ];

    fn describe(self) -> &'static str {
        match self {
            Use::Go => "building the Kubernetes binaries from Go modules",
            Use::Moto => "moto's AWS IAM emulator",
            Use::Node => "the real node",
            Use::Images => "the operators' container images",
            Use::Promtool => "the alert rule tests",
            Use::Monitoring => "the monitoring stack's images",
            Use::Lint => "formatting and clippy",
            Use::Ha => "the HA control plane",
        }
    }
}

/// How a prerequisite is found on the machine.
#[derive(Debug, Clone, Copy)]
pub enum Check {
    /// An executable of this name on `PATH`.
    Command(&'static str),
    /// An executable at this path.
    File(&'static str),
    /// Python's `venv` module works.
    PythonVenv,
    /// Go at least [`operon_assets::GO_MIN`], on `PATH` or in Operon's cache.
    Go,
    /// A rustup component, by the cargo subcommand it provides (`fmt`, `clippy`).
    CargoSubcommand(&'static str),
    /// The musl Rust target (static operator binaries; without it, glibc is linked statically).
    MuslTarget,
    /// Running as root.
    Root,
}

/// How a missing prerequisite is installed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Install {
    /// A Debian package.
    Debian(&'static str),
    /// Go's toolchain module from the Go module proxy, into Operon's cache.
    Go,
    /// `rustup component add`.
    RustupComponent(&'static str),
    /// `rustup target add`; optional: a failure only costs the musl build.
    RustupTarget,
    /// Nothing can: the user must act (e.g. become root).
    User(&'static str),
}

/// One thing the project needs from the machine.
#[derive(Debug, Clone, Copy)]
pub struct Prerequisite {
    pub name: &'static str,
    pub why: &'static str,
    pub check: Check,
    pub install: Install,
    pub used_by: &'static [Use],
}

/// Everything the project needs from a machine beyond Rust itself.
pub const PREREQUISITES: &[Prerequisite] = &[
    Prerequisite {
        name: "root",
        why: "the real node runs kubelet, containerd and kube-proxy in namespaces and cgroups of \
              its own and changes iptables",
        check: Check::Root,
        install: Install::User(
            "run as root, or start a cluster without a real node (`--kwok-only`, where the \
             command has it)",
        ),
        used_by: &[Use::Node],
    },
    Prerequisite {
        name: "curl",
        why: "downloads Go from the Go module proxy when it is missing",
        check: Check::Command("curl"),
        install: Install::Debian("curl"),
        used_by: &[Use::Go],
    },
    Prerequisite {
        name: "python3",
        why: "unpacks Go's toolchain module and runs moto",
        check: Check::Command("python3"),
        install: Install::Debian("python3"),
        used_by: &[Use::Go, Use::Moto],
    },
    Prerequisite {
        name: "go",
        why: "builds the Kubernetes binaries, CoreDNS, Helm and the OLM bundle validators from their Go modules",
        check: Check::Go,
        install: Install::Go,
        used_by: &[Use::Go],
    },
    Prerequisite {
        name: "python3-venv",
        why: "moto is installed into a virtualenv of its own",
        check: Check::PythonVenv,
        install: Install::Debian("python3-venv"),
        used_by: &[Use::Moto],
    },
    Prerequisite {
        name: "buildah",
        why: "builds container images without a container engine",
        check: Check::Command("buildah"),
        install: Install::Debian("buildah"),
        used_by: &[Use::Images, Use::Node],
    },
    Prerequisite {
        name: "skopeo",
        why: "pushes images to the node's registry",
        check: Check::Command("skopeo"),
        install: Install::Debian("skopeo"),
        used_by: &[Use::Images, Use::Node],
    },
    Prerequisite {
        name: "make",
        why: "the Makefile targets of this repository and of generated projects (`make deploy`, \
              …), which the CLI's end-to-end test runs",
        check: Check::Command("make"),
        install: Install::Debian("make"),
        used_by: &[Use::Images],
    },
    Prerequisite {
        name: "musl-gcc",
        why: "compiles ring's C for the static musl binaries in the operators' images",
        check: Check::Command("musl-gcc"),
        install: Install::Debian("musl-tools"),
        used_by: &[Use::Images],
    },
    Prerequisite {
        name: "musl target",
        why: "the operators' static binaries (without it, glibc is linked statically)",
        check: Check::MuslTarget,
        install: Install::RustupTarget,
        used_by: &[Use::Images],
    },
    Prerequisite {
        name: "containerd",
        why: "the node's container runtime",
        check: Check::Command("containerd"),
        install: Install::Debian("containerd"),
        used_by: &[Use::Node],
    },
    Prerequisite {
        name: "runc",
        why: "runs the node's containers",
        check: Check::Command("runc"),
        install: Install::Debian("runc"),
        used_by: &[Use::Node],
    },
    Prerequisite {
        name: "CNI plugins",
        why: "the Pods' network (bridge, host-local, loopback, portmap)",
        check: Check::File("/usr/lib/cni/bridge"),
        install: Install::Debian("containernetworking-plugins"),
        used_by: &[Use::Node],
    },
    Prerequisite {
        name: "docker-registry",
        why: "the node's local image registry",
        check: Check::Command("docker-registry"),
        install: Install::Debian("docker-registry"),
        used_by: &[Use::Node],
    },
    Prerequisite {
        name: "busybox",
        why: "the talk's busybox image",
        check: Check::File("/bin/busybox"),
        install: Install::Debian("busybox-static"),
        used_by: &[Use::Node],
    },
    Prerequisite {
        name: "iptables",
        why: "kube-proxy's Service rules",
        check: Check::Command("iptables-restore"),
        install: Install::Debian("iptables"),
        used_by: &[Use::Node],
    },
    Prerequisite {
        name: "ip",
        why: "the node's network namespace and links",
        check: Check::Command("ip"),
        install: Install::Debian("iproute2"),
        used_by: &[Use::Node],
    },
    Prerequisite {
        name: "nsenter",
        why: "enters the node's namespaces",
        check: Check::Command("nsenter"),
        install: Install::Debian("util-linux"),
        used_by: &[Use::Node],
    },
    Prerequisite {
        name: "openssl",
        why: "the node's openssl image for the HTTPS checks",
        check: Check::Command("openssl"),
        install: Install::Debian("openssl"),
        used_by: &[Use::Node],
    },
    Prerequisite {
        name: "promtool",
        why: "runs the operators' alert rule tests",
        check: Check::Command("promtool"),
        install: Install::Debian("prometheus"),
        used_by: &[Use::Promtool],
    },
    Prerequisite {
        name: "alertmanager",
        why: "the monitoring stack's Alertmanager image",
        check: Check::Command("prometheus-alertmanager"),
        install: Install::Debian("prometheus-alertmanager"),
        used_by: &[Use::Monitoring],
    },
    Prerequisite {
        name: "node_exporter",
        why: "the monitoring stack's node_exporter image",
        check: Check::Command("prometheus-node-exporter"),
        install: Install::Debian("prometheus-node-exporter"),
        used_by: &[Use::Monitoring],
    },
    Prerequisite {
        name: "haproxy",
        why: "the HA control plane's TCP load balancer in front of its two API servers",
        check: Check::File("/usr/sbin/haproxy"),
        install: Install::Debian("haproxy"),
        used_by: &[Use::Ha],
    },
    Prerequisite {
        name: "rustfmt",
        why: "`cargo fmt --check`",
        check: Check::CargoSubcommand("fmt"),
        install: Install::RustupComponent("rustfmt"),
        used_by: &[Use::Lint],
    },
    Prerequisite {
        name: "clippy",
        why: "`cargo clippy`",
        check: Check::CargoSubcommand("clippy"),
        install: Install::RustupComponent("clippy"),
        used_by: &[Use::Lint],
    },
];

/// The prerequisites that `uses` need, in list order.
pub fn needed(uses: &[Use]) -> Vec<&'static Prerequisite> {
    PREREQUISITES
        .iter()
        .filter(|p| p.used_by.iter().any(|u| uses.contains(u)))
        .collect()
}

/// Where the checks look: the process's environment, or another for tests.
#[derive(Debug, Clone)]
pub struct Machine {
    pub path: Option<std::ffi::OsString>,
    pub root: bool,
    pub rustc: PathBuf,
}

impl Machine {
    pub fn current() -> Self {
        Machine {
            path: std::env::var_os("PATH"),
            root: is_root(),
            rustc: std::env::var_os("RUSTC").map_or_else(|| "rustc".into(), PathBuf::from),
        }
    }

    fn on_path(&self, name: &str) -> Option<PathBuf> {
        let paths = self.path.as_ref()?;
        std::env::split_paths(paths)
            .map(|dir| dir.join(name))
            .find(|p| operon_assets::is_executable(p))
    }

    /// [`Machine::on_path`], or in the system directories a user's PATH often lacks (where
    /// Debian puts iptables and the like); the node runs as root, whose PATH has them.
    fn installed(&self, name: &str) -> Option<PathBuf> {
        self.on_path(name).or_else(|| {
            ["/usr/local/sbin", "/usr/sbin", "/sbin"]
                .iter()
                .map(|dir| Path::new(dir).join(name))
                .find(|p| operon_assets::is_executable(p))
        })
    }

    fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new(program);
        if let Some(path) = &self.path {
            cmd.env("PATH", path);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        cmd
    }

    /// Whether `check` holds on this machine.
    pub fn has(&self, check: Check) -> bool {
        match check {
            Check::Command(name) => self.installed(name).is_some(),
            Check::File(path) => operon_assets::is_executable(Path::new(path)),
            Check::PythonVenv => self.on_path("python3").is_some_and(|python| {
                self.command(python)
                    .args(["-c", "import venv, ensurepip"])
                    .status()
                    .is_ok_and(|s| s.success())
            }),
            Check::Go => go::find(self.path.as_deref()).is_some(),
            Check::CargoSubcommand(sub) => self.on_path("cargo").is_some_and(|cargo| {
                self.command(cargo)
                    .args([sub, "--version"])
                    .status()
                    .is_ok_and(|s| s.success())
            }),
            Check::MuslTarget => operon_assets::rust_target_installed(
                &self.rustc,
                self.path.as_deref(),
                &musl_triple(),
            ),
            Check::Root => self.root,
        }
    }

    /// The prerequisites of `uses` this machine lacks.
    pub fn missing(&self, uses: &[Use]) -> Vec<&'static Prerequisite> {
        needed(uses)
            .into_iter()
            .filter(|p| !self.has(p.check))
            .collect()
    }
}

fn is_root() -> bool {
    // The effective uid, without unsafe code: /proc/self/status's `Uid:` line is
    // "real effective saved filesystem".
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|ids| ids.split_whitespace().nth(1).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

/// The musl target triple of this machine.
pub fn musl_triple() -> String {
    format!("{}-unknown-linux-musl", std::env::consts::ARCH)
}

/// How the missing prerequisites would be installed here, or why they can't be.
#[derive(Debug, PartialEq, Eq)]
pub struct Plan {
    /// Debian packages, for one `apt-get install`.
    pub debian: Vec<&'static str>,
    /// Go from the module proxy.
    pub go: bool,
    /// rustup components.
    pub components: Vec<&'static str>,
    /// The musl target (optional).
    pub musl_target: bool,
    /// What only the user can do, and what can't be installed on this machine.
    pub blockers: Vec<String>,
    /// `sudo` is needed for apt-get.
    pub sudo: bool,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.debian.is_empty()
            && !self.go
            && self.components.is_empty()
            && !self.musl_target
            && self.blockers.is_empty()
    }

    /// The single command a person runs to install the Debian packages.
    pub fn apt_command(&self) -> String {
        format!(
            "{}apt-get install -y --no-install-recommends {}",
            if self.sudo { "sudo " } else { "" },
            self.debian.join(" ")
        )
    }
}

/// What the machine can install itself.
#[derive(Debug, Clone, Copy)]
pub struct Installers {
    pub apt_get: bool,
    pub sudo: bool,
    pub rustup: bool,
}

impl Installers {
    pub fn of(machine: &Machine) -> Self {
        Installers {
            apt_get: machine.on_path("apt-get").is_some(),
            sudo: machine.on_path("sudo").is_some(),
            rustup: machine.on_path("rustup").is_some(),
        }
    }
}

/// Plans the installation of `missing` on a machine with `installers`, as root or not.
pub fn plan(missing: &[&'static Prerequisite], installers: Installers, root: bool) -> Plan {
    let mut plan = Plan {
        debian: Vec::new(),
        go: false,
        components: Vec::new(),
        musl_target: false,
        blockers: Vec::new(),
        sudo: !root,
    };
    for p in missing {
        match p.install {
            Install::Debian(package) => plan.debian.push(package),
            Install::Go => plan.go = true,
            Install::RustupComponent(c) if installers.rustup => plan.components.push(c),
            Install::RustupComponent(c) => plan.blockers.push(format!(
                "{}: install Rust's `{c}` component (rustup component add {c})",
                p.name
            )),
            Install::RustupTarget => plan.musl_target = installers.rustup,
            Install::User(what) => plan.blockers.push(format!("{}: {what}", p.name)),
        }
    }
    // Go's download needs curl and python3; when those are missing too they come from Debian
    // first, so nothing more to plan.
    if !plan.debian.is_empty() && (!installers.apt_get || (!root && !installers.sudo)) {
        let how = if installers.apt_get {
            "no `sudo` to run apt-get as root".to_string()
        } else {
            "this is not a Debian-like system (no apt-get)".to_string()
        };
        let names: Vec<String> = missing
            .iter()
            .filter_map(|p| match p.install {
                Install::Debian(pkg) => Some(format!("      {} (Debian: {pkg})", p.name)),
                _ => None,
            })
            .collect();
        plan.blockers.push(format!(
            "{how}; install these with your system's package manager:\n{}",
            names.join("\n")
        ));
    }
    plan
}

/// Makes sure the machine has what `uses` need: installs what it can, in seconds, and fails at
/// once, naming every missing piece, when it can't. Quiet when nothing is missing.
pub fn ensure(command: &str, uses: &[Use]) -> Result<()> {
    let machine = Machine::current();
    let missing = machine.missing(uses);
    if missing.is_empty() {
        return Ok(());
    }
    let plan = plan(&missing, Installers::of(&machine), machine.root);
    if !plan.blockers.is_empty() {
        bail!(Unmet::new(command, &missing, &plan));
    }
    install(&plan, uses)?;
    let still = Machine::current().missing(uses);
    let still: Vec<_> = still
        .into_iter()
        .filter(|p| p.install != Install::RustupTarget)
        .collect();
    if !still.is_empty() {
        let names: Vec<&str> = still.iter().map(|p| p.name).collect();
        bail!(
            "still missing after the installation: {} (see the installer's output above)",
            names.join(", ")
        );
    }
    Ok(())
}

/// Prerequisites that can't be met on this machine by this command: the message lists them
/// all and what to do.
#[derive(Debug)]
pub struct Unmet(String);

impl Unmet {
    fn new(command: &str, missing: &[&Prerequisite], plan: &Plan) -> Self {
        let mut text = format!("{command} needs what this machine lacks:\n");
        // The musl target is optional (glibc is linked statically without it): never a reason
        // to stop.
        for p in missing
            .iter()
            .filter(|p| p.install != Install::RustupTarget)
        {
            text.push_str(&format!("  - {}: {}\n", p.name, p.why));
        }
        if !plan.blockers.is_empty() {
            text.push_str("what to do:\n");
            for b in &plan.blockers {
                text.push_str(&format!("  - {b}\n"));
            }
        }
        let unblocked = plan.blockers.iter().all(|b| !b.contains("package manager"));
        if !plan.debian.is_empty() && unblocked {
            text.push_str(&format!(
                "to install them: `cargo xtask setup` (as root, or with sudo), or {}\n",
                plan.apt_command()
            ));
        } else if plan.go || !plan.components.is_empty() {
            text.push_str("to install them: `cargo xtask setup`\n");
        }
        Unmet(text.trim_end().to_string())
    }
}

impl std::fmt::Display for Unmet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Unmet {}

/// Debian packages whose maintainer scripts enable and start a service of the same name. Only
/// their programs are used (promtool, and the binaries copied into images); a service left
/// running would hold its port (9090, 9093, 9100) and start again at every boot.
const SERVICE_PACKAGES: &[&str] = &[
    "haproxy",
    "prometheus",
    "prometheus-alertmanager",
    "prometheus-node-exporter",
];

/// Stops and disables the services of the [`SERVICE_PACKAGES`] that `plan` just installed
/// (never those of packages that were already there: someone may use them).
fn disable_services(plan: &Plan) -> Result<()> {
    let services: Vec<&str> = plan
        .debian
        .iter()
        .copied()
        .filter(|p| SERVICE_PACKAGES.contains(p))
        .collect();
    if services.is_empty() {
        return Ok(());
    }
    let as_root = |program: &str| {
        let mut cmd = if plan.sudo {
            let mut c = Command::new("sudo");
            c.arg(program);
            c
        } else {
            Command::new(program)
        };
        cmd.stdin(Stdio::null());
        cmd
    };
    println!(
        "setup: stopping and disabling the services of {} (only their programs are used)",
        services.join(", ")
    );
    if Path::new("/run/systemd/system").is_dir() {
        // Only units the packages shipped: a unit that doesn't exist fails systemctl.
        let units: Vec<String> = services
            .iter()
            .map(|s| format!("{s}.service"))
            .filter(|u| {
                ["/lib/systemd/system", "/usr/lib/systemd/system"]
                    .iter()
                    .any(|d| Path::new(d).join(u).exists())
            })
            .collect();
        if units.is_empty() {
            return Ok(());
        }
        let status = as_root("systemctl")
            .args(["disable", "--now", "--quiet"])
            .args(&units)
            .status()
            .context("running systemctl")?;
        if !status.success() {
            bail!(
                "systemctl disable --now {} failed ({status}); stop them by hand",
                units.join(" ")
            );
        }
        return Ok(());
    }
    // systemd not running: the maintainer scripts started them with invoke-rc.d, which asks
    // the machine's policy-rc.d (containers often deny every start); stop them the same way.
    // update-rc.d removes their boot links, and systemd's too when systemctl is installed.
    for service in services {
        if !Path::new("/etc/init.d").join(service).exists() {
            continue;
        }
        let _ = as_root("invoke-rc.d")
            .args(["--quiet", service, "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let disabled = as_root("update-rc.d")
            .args([service, "disable"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !disabled {
            println!("setup: update-rc.d {service} disable failed; it may start at boot");
        }
    }
    Ok(())
}

/// Runs `plan`. The Debian packages come first (Go's download needs curl and python3).
fn install(plan: &Plan, uses: &[Use]) -> Result<()> {
    let t0 = Instant::now();
    if !plan.debian.is_empty() {
        let why: Vec<&str> = uses.iter().map(|u| u.describe()).collect();
        println!(
            "setup: installing Debian packages for {}: {}",
            why.join(", "),
            plan.debian.join(" ")
        );
        if plan.sudo {
            println!("setup: through sudo, as apt-get needs root");
        }
        let apt = |args: &[&str]| -> Result<()> {
            let mut cmd = if plan.sudo {
                let mut c = Command::new("sudo");
                c.arg("apt-get");
                c
            } else {
                Command::new("apt-get")
            };
            let status = cmd
                .args(args)
                .env("DEBIAN_FRONTEND", "noninteractive")
                .status()
                .context("running apt-get")?;
            if !status.success() {
                bail!(
                    "apt-get {} failed ({status}); install them by hand: {}",
                    args.first().copied().unwrap_or_default(),
                    plan.apt_command()
                );
            }
            Ok(())
        };
        apt(&["update", "-qq"])?;
        let mut args = vec!["install", "-y", "-qq", "--no-install-recommends"];
        args.extend(plan.debian.iter().copied());
        apt(&args)?;
        disable_services(plan)?;
    }
    if plan.go {
        go::install()?;
    }
    if !plan.components.is_empty() {
        println!("setup: rustup component add {}", plan.components.join(" "));
        let status = Command::new("rustup")
            .args(["component", "add"])
            .args(&plan.components)
            .status()
            .context("running rustup")?;
        if !status.success() {
            bail!(
                "rustup component add {} failed ({status})",
                plan.components.join(" ")
            );
        }
    }
    if plan.musl_target {
        let triple = musl_triple();
        println!("setup: rustup target add {triple} (static operator binaries)");
        let ok = Command::new("rustup")
            .args(["target", "add", &triple])
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            println!(
                "setup: rustup target add {triple} failed: the images will link glibc \
                 statically instead"
            );
        }
    }
    println!("setup: done in {}", elapsed(t0));
    Ok(())
}

/// `cargo xtask setup`: lists every prerequisite and whether it is here; with `install`,
/// installs the missing ones.
pub fn setup(check_only: bool) -> Result<()> {
    let machine = Machine::current();
    for p in PREREQUISITES {
        let ok = machine.has(p.check);
        println!(
            "{} {:<16} {}",
            if ok { "ok     " } else { "missing" },
            p.name,
            p.why
        );
    }
    if check_only {
        let missing = machine.missing(&Use::ALL);
        if missing.is_empty() {
            return Ok(());
        }
        let plan = plan(&missing, Installers::of(&machine), machine.root);
        bail!(Unmet::new("`cargo xtask setup`", &missing, &plan));
    }
    ensure("`cargo xtask setup`", &Use::ALL)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(ps: &[&Prerequisite]) -> Vec<&'static str> {
        ps.iter().map(|p| p.name).collect()
    }

    #[test]
    fn every_use_needs_something_and_names_are_unique() {
        for u in Use::ALL {
            assert!(!needed(&[u]).is_empty(), "{u:?} needs nothing");
        }
        let mut all = names(&PREREQUISITES.iter().collect::<Vec<_>>());
        all.sort_unstable();
        let n = all.len();
        all.dedup();
        assert_eq!(all.len(), n, "a name is listed twice");
    }

    #[test]
    fn the_packages_with_services_are_the_ones_whose_services_are_disabled() {
        let debian = |ps: Vec<&Prerequisite>| -> Vec<&'static str> {
            ps.iter()
                .filter_map(|p| match p.install {
                    Install::Debian(package) => Some(package),
                    _ => None,
                })
                .collect()
        };
        let mut both = debian(needed(&[Use::Promtool, Use::Monitoring, Use::Ha]));
        both.sort_unstable();
        assert_eq!(
            both, SERVICE_PACKAGES,
            "every package whose service setup disables is one of these"
        );
        // Prometheus itself is built from its module: Debian's is for promtool.
        assert_eq!(debian(needed(&[Use::Promtool])), ["prometheus"]);
        assert!(!debian(needed(&[Use::Monitoring])).contains(&"prometheus"));
    }

    #[test]
    fn a_root_debian_machine_installs_everything_itself() {
        let missing = needed(&[Use::Images, Use::Node]);
        let plan = plan(
            &missing[1..],
            Installers {
                apt_get: true,
                sudo: false,
                rustup: true,
            },
            true,
        );
        assert!(plan.blockers.is_empty(), "{:?}", plan.blockers);
        assert!(plan.debian.contains(&"buildah") && plan.debian.contains(&"containerd"));
        assert!(plan.musl_target);
        assert!(!plan.sudo);
        assert!(plan.apt_command().starts_with("apt-get install"));
    }

    #[test]
    fn without_apt_every_package_is_named_in_one_message() {
        let missing = needed(&[Use::Images]);
        let plan = plan(
            &missing,
            Installers {
                apt_get: false,
                sudo: true,
                rustup: true,
            },
            true,
        );
        assert_eq!(plan.blockers.len(), 1, "{:?}", plan.blockers);
        for p in ["buildah", "skopeo", "musl-tools"] {
            assert!(
                plan.blockers[0].contains(p),
                "{} lacks {p}",
                plan.blockers[0]
            );
        }
        let message = Unmet::new("cargo xtask image", &missing, &plan).to_string();
        assert!(message.contains("not a Debian-like system"), "{message}");
    }

    #[test]
    fn not_root_is_a_blocker_and_sudo_is_planned() {
        let missing = needed(&[Use::Node]);
        let plan = plan(
            &missing,
            Installers {
                apt_get: true,
                sudo: true,
                rustup: true,
            },
            false,
        );
        assert!(plan.sudo);
        assert!(plan.apt_command().starts_with("sudo apt-get"));
        assert_eq!(plan.blockers.len(), 1);
        assert!(plan.blockers[0].starts_with("root"), "{:?}", plan.blockers);
    }
}
