//! moto's server: a local AWS emulator (IAM and the rest) for tests and the demo.
//!
//! `cargo xtask moto install` installs the pinned [`MOTO_VERSION`] from PyPI into a virtualenv at
//! `~/.cache/operon/moto/<version>/venv`; [`Moto::start`] runs its `moto_server` on a free
//! loopback port with the same process machinery as the control plane (own process group,
//! parent-death signal, killed on drop, reaped after a crash; [`operon_cluster::process`]) and
//! returns once it answers HTTP.
//!
//! moto keeps everything in memory: [`Moto::restart`] and [`Moto::resume`] bring back an empty
//! emulator on the same endpoint (what a real outage followed by a fresh emulator looks like to a
//! client); [`Moto::reset`] empties it without a restart.
//!
//! Used by credentials-operator's tests and by `cargo xtask up`'s demo (xtask-kube), which points
//! the in-cluster operator at it ([`Moto::start_for_pods`], [`Moto::expose`]). Its
//! `/moto-api/` shows every key it minted, so on a real node's link it is reachable only from the
//! Pods that need it (a [`PortGuard`]).
//!
//! ```no_run
//! # async fn demo() -> Result<(), operon_moto::Error> {
//! let moto = operon_moto::Moto::start().await?;
//! let endpoint = moto.endpoint(); // http://127.0.0.1:<port>, for the AWS SDK's endpoint_url
//! moto.pause();                   // connections are refused now
//! moto.resume().await?;           // same endpoint, empty state
//! # let _ = endpoint; Ok(()) }
//! ```

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use operon_cluster::node::guard::{AllowedPods, NodeNetwork, PortGuard};
use operon_cluster::process::{Process, RunDir, reap_stale_runs};
use operon_cluster::{tail, wait};
use parking_lot::Mutex;

pub use operon_assets::MOTO_VERSION;

/// Path of a `moto_server` executable to use instead of the installed one. `cargo xtask test`
/// sets it for the tests it runs.
pub const SERVER_ENV: &str = operon_assets::MOTO_SERVER_ENV;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "moto_server (the AWS emulator) not found (looked at: {}). Install it with `cargo xtask moto install`, or point {} at a moto_server executable",
        .searched.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "),
        SERVER_ENV
    )]
    NotInstalled { searched: Vec<PathBuf> },
    /// Starting, watching or stopping the process (the control plane's process machinery).
    #[error(transparent)]
    Cluster(#[from] operon_cluster::Error),
    /// Making moto reachable from Pods ([`Moto::expose`]).
    #[error(transparent)]
    Apply(#[from] operon_cluster::apply::ApplyError),
    /// moto answered, but not as expected.
    #[error("moto: {0}")]
    Moto(String),
}

/// How long moto may take to answer HTTP after being started.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);
/// Grace period between SIGTERM and SIGKILL when stopping.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// Timeout of one HTTP exchange with moto.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// `~/.cache/operon/moto`: one directory per installed version.
pub fn cache_dir() -> PathBuf {
    operon_assets::moto_cache_dir()
}

/// The virtualenv `cargo xtask moto install` creates for [`MOTO_VERSION`].
pub fn default_venv() -> PathBuf {
    operon_assets::moto_venv()
}

/// `moto_server` in [`default_venv`].
pub fn default_server() -> PathBuf {
    operon_assets::moto_server()
}

/// The `moto_server` to run: [`SERVER_ENV`] when set, else the pinned version's install, else
/// the newest version installed under [`cache_dir`].
pub fn find_server() -> Result<PathBuf, Error> {
    if let Some(path) = std::env::var_os(SERVER_ENV).filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        return if is_executable(&path) {
            Ok(path)
        } else {
            Err(Error::NotInstalled {
                searched: vec![path],
            })
        };
    }
    let pinned = default_server();
    if is_executable(&pinned) {
        return Ok(pinned);
    }
    let mut installed: Vec<(Vec<u64>, PathBuf)> = std::fs::read_dir(cache_dir())
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_string_lossy().into_owned();
            let server = entry.path().join("venv").join("bin").join("moto_server");
            is_executable(&server).then(|| (version_key(&version), server))
        })
        .collect();
    installed.sort();
    installed
        .pop()
        .map(|(_, server)| server)
        .ok_or_else(|| Error::NotInstalled {
            searched: vec![pinned, cache_dir().join("*/venv/bin/moto_server")],
        })
}

/// `5.2.10` sorts after `5.2.9`.
fn version_key(version: &str) -> Vec<u64> {
    version
        .split(['.', '-'])
        .map(|part| part.parse().unwrap_or(0))
        .collect()
}

fn is_executable(path: &Path) -> bool {
    operon_assets::is_executable(path)
}

/// How to exec `server`: `moto_server` is a Python script, run through the interpreter of its
/// `#!` line, so the process's `/proc/<pid>/exe` is the recorded binary and the crash reaper
/// recognises it. Anything else (a wrapper binary, a `#!` with arguments) is run as it is.
fn command_for(server: &Path) -> (PathBuf, Vec<String>) {
    let interpreter = std::fs::read(server).ok().and_then(|bytes| {
        let line = bytes.split(|b| *b == b'\n').next()?;
        let line = std::str::from_utf8(line.strip_prefix(b"#!")?).ok()?.trim();
        let path = PathBuf::from(line);
        (!line.contains(char::is_whitespace) && path.is_absolute() && is_executable(&path))
            .then_some(path)
    });
    match interpreter {
        Some(python) => (python, vec![server.display().to_string()]),
        None => (server.to_path_buf(), Vec::new()),
    }
}

/// A running moto server. Dropping it stops the process, removes its guard and its run directory.
pub struct Moto {
    // Field order matters: the process stops before the guard and the run directory go.
    process: Mutex<Option<Process>>,
    /// For moto on a real node's link: who among the Pods may reach it.
    guard: Option<PortGuard>,
    run: RunDir,
    server: PathBuf,
    host: std::net::Ipv4Addr,
    port: u16,
    log: PathBuf,
    startup: Duration,
}

impl Moto {
    /// Starts the `moto_server` that [`find_server`] finds on a free loopback port.
    pub async fn start() -> Result<Moto, Error> {
        Self::start_with(find_server()?).await
    }

    /// Starts the given `moto_server` on loopback.
    pub async fn start_with(server: impl Into<PathBuf>) -> Result<Moto, Error> {
        let host = std::net::Ipv4Addr::LOCALHOST;
        let port = free_port(host)?;
        Self::start_at(server.into(), host, port, None).await
    }

    /// Starts the given `moto_server` on a real node's host address, for Pods to reach it
    /// ([`Moto::expose`]) — but only the `allowed` ones: the port is guarded in the node
    /// ([`PortGuard`]) before moto listens, for as long as this `Moto` lives. `config` is an
    /// admin's client configuration (the guard watches the allowed Pods).
    pub async fn start_for_pods(
        server: impl Into<PathBuf>,
        network: &NodeNetwork,
        config: kube::Config,
        allowed: AllowedPods,
    ) -> Result<Moto, Error> {
        let port = free_port(network.host_ip)?;
        let guard = PortGuard::start(config, network.clone(), port, allowed).await?;
        Self::start_at(server.into(), network.host_ip, port, Some(guard)).await
    }

    async fn start_at(
        server: PathBuf,
        host: std::net::Ipv4Addr,
        port: u16,
        guard: Option<PortGuard>,
    ) -> Result<Moto, Error> {
        if !is_executable(&server) {
            return Err(Error::NotInstalled {
                searched: vec![server],
            });
        }
        reap_stale_runs();
        let run = RunDir::create()?;
        let log = run.path().join("moto.log");
        let mut moto = Moto {
            process: Mutex::new(None),
            guard,
            run,
            server,
            host,
            port,
            log,
            startup: Duration::ZERO,
        };
        eprintln!("envtest: moto log: {}", moto.log.display());
        let t0 = Instant::now();
        moto.launch().await?;
        moto.startup = t0.elapsed();
        tracing::info!(
            endpoint = %moto.endpoint(),
            startup = ?moto.startup,
            server = %moto.server.display(),
            "moto ready"
        );
        Ok(moto)
    }

    /// Spawns moto on `self.port` (unless it runs) and waits until it answers HTTP.
    async fn launch(&self) -> Result<(), Error> {
        {
            let mut process = self.process.lock();
            if process.is_none() {
                let (binary, mut args) = command_for(&self.server);
                args.extend([
                    "--host".into(),
                    self.host.to_string(),
                    "--port".into(),
                    self.port.to_string(),
                ]);
                *process = Some(Process::spawn(
                    "moto",
                    &binary,
                    &args,
                    self.log.clone(),
                    &self.run,
                )?);
            }
        }
        let backoff = wait::Backoff {
            first: Duration::from_millis(20),
            ..wait::Backoff::DEFAULT
        };
        let what = format!("moto to answer HTTP on {}", self.endpoint());
        let waited = wait::poll(&what, STARTUP_TIMEOUT, backoff, || async {
            // A moto-api answer means the WSGI app is up (the config is a small JSON document,
            // served with 201).
            if let Ok((200..=299, _)) =
                request(self.host, self.port, "GET", "/moto-api/config").await
            {
                return wait::Check::Ready(());
            }
            match self.exited() {
                Ok(None) => wait::Check::Pending(String::new()),
                Ok(Some(status)) => wait::Check::Failed(
                    operon_cluster::Error::ComponentExited {
                        name: "moto".into(),
                        status,
                        log_tail: tail(&self.log, 20),
                        log: self.log.clone(),
                    }
                    .into(),
                ),
                Err(e) => wait::Check::Failed(e),
            }
        })
        .await;
        waited.map_err(|stopped| match stopped {
            wait::Stopped::Failed(e) => e,
            wait::Stopped::Timeout(_) => operon_cluster::Error::Timeout {
                what,
                after: STARTUP_TIMEOUT,
                logs: vec![self.log.clone()],
            }
            .into(),
        })
    }

    /// `Some(exit description)` when the process was started and has exited.
    fn exited(&self) -> Result<Option<String>, Error> {
        let mut process = self.process.lock();
        Ok(process.as_mut().and_then(Process::exited))
    }

    /// `http://<host>:<port>`: the endpoint URL for AWS clients (any region, any credentials).
    /// It stays the same across [`Moto::restart`] and [`Moto::pause`]/[`Moto::resume`].
    pub fn endpoint(&self) -> String {
        format!("http://{}:{}", self.host, self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Makes moto reachable from Pods as `http://moto.<namespace>.svc`: a Service without a
    /// selector and an EndpointSlice pointing at moto's address, which must be one Pods reach
    /// (start it with [`Moto::start_for_pods`]; only the Pods allowed there get through).
    /// Returns the URL.
    pub async fn expose(&self, client: &kube::Client, namespace: &str) -> Result<String, Error> {
        if self.guard.is_none() {
            return Err(Error::Moto(format!(
                "moto listens on {}, which Pods can't reach; start it with \
                 Moto::start_for_pods to expose it",
                self.endpoint()
            )));
        }
        let service = serde_json::json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": { "name": "moto", "namespace": namespace },
            "spec": { "ports": [{ "name": "http", "port": 80, "protocol": "TCP" }] },
        });
        let slice = serde_json::json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {
                "name": "moto-host", "namespace": namespace,
                "labels": {
                    "kubernetes.io/service-name": "moto",
                    "endpointslice.kubernetes.io/managed-by": "operon-envtest",
                },
            },
            "addressType": "IPv4",
            "endpoints": [{ "addresses": [self.host.to_string()] }],
            "ports": [{ "name": "http", "port": self.port, "protocol": "TCP" }],
        });
        for object in [service, slice] {
            operon_cluster::apply::apply(client, &object, "operon-envtest").await?;
        }
        Ok(format!("http://moto.{namespace}.svc"))
    }

    /// The guard keeping moto's port open only to the allowed Pods (moto on a node's link).
    pub fn guard(&self) -> Option<&PortGuard> {
        self.guard.as_ref()
    }

    /// The server's log (stdout and stderr, appended to across restarts).
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// The `moto_server` that runs.
    pub fn server(&self) -> &Path {
        &self.server
    }

    /// How long the first start took until moto answered HTTP.
    pub fn startup_time(&self) -> Duration {
        self.startup
    }

    /// The pid of the server process, `None` while stopped.
    pub fn pid(&self) -> Option<u32> {
        self.process.lock().as_ref().map(Process::pid)
    }

    /// Whether the server process runs (it may still be starting after [`Moto::resume`] fails).
    pub fn is_running(&self) -> bool {
        self.exited().is_ok_and(|e| e.is_none()) && self.pid().is_some()
    }

    /// Stops the server (SIGTERM, SIGKILL after a grace period); connections to the endpoint are
    /// refused until [`Moto::start_again`]. Does nothing when it is stopped already.
    pub fn stop(&self) {
        let process = self.process.lock().take();
        if let Some(mut process) = process {
            process.stop(STOP_GRACE);
        }
    }

    /// Starts the server again on the same port (when stopped) and waits until it answers.
    /// moto keeps its state in memory, so it comes back empty.
    pub async fn start_again(&self) -> Result<(), Error> {
        let stale = {
            let mut process = self.process.lock();
            match process.as_mut().map(Process::exited) {
                Some(Some(_)) => process.take(),
                _ => None,
            }
        };
        // A process that crashed on its own is cleared so that a new one can start.
        drop(stale);
        self.launch().await
    }

    /// [`Moto::stop`], then [`Moto::start_again`] on the same port. State is lost.
    pub async fn restart(&self) -> Result<(), Error> {
        self.stop();
        self.start_again().await
    }

    /// Simulates an outage: the same as [`Moto::stop`].
    pub fn pause(&self) {
        self.stop();
    }

    /// Ends an outage: the same as [`Moto::start_again`]; same endpoint, empty state.
    pub async fn resume(&self) -> Result<(), Error> {
        self.start_again().await
    }

    /// Empties every emulated service (`POST /moto-api/reset`) without restarting.
    pub async fn reset(&self) -> Result<(), Error> {
        match request(self.host, self.port, "POST", "/moto-api/reset").await {
            Ok((200, _)) => Ok(()),
            Ok((status, body)) => Err(Error::Moto(format!(
                "POST /moto-api/reset answered {status}: {body}"
            ))),
            Err(e) => Err(operon_cluster::Error::Io {
                context: format!("POST {}/moto-api/reset", self.endpoint()),
                source: e,
            }
            .into()),
        }
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A free port on `host`. It is released before moto binds it, so another process could take it
/// in between; moto then exits and [`Moto::start`] reports its log.
fn free_port(host: std::net::Ipv4Addr) -> Result<u16, Error> {
    std::net::TcpListener::bind((host, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|source| {
            operon_cluster::Error::Io {
                context: "finding a free port for moto".into(),
                source,
            }
            .into()
        })
}

/// One request to moto's own API (`/moto-api/…`).
async fn request(
    host: std::net::Ipv4Addr,
    port: u16,
    method: &str,
    path: &str,
) -> std::io::Result<(u16, String)> {
    operon_cluster::plain_http::request(
        &format!("{host}:{port}"),
        method,
        path,
        &[],
        "",
        REQUEST_TIMEOUT,
    )
    .await
    .map(|r| (r.status, r.text()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_sort_numerically() {
        let mut versions = vec!["5.2.10", "5.2.9", "5.10.0", "4.2.14"];
        versions.sort_by_key(|v| version_key(v));
        assert_eq!(versions, ["4.2.14", "5.2.9", "5.2.10", "5.10.0"]);
    }

    #[test]
    fn scripts_run_through_their_interpreter() -> Result<(), Error> {
        let run = RunDir::create()?;
        let script = run.write("moto_server", "#!/bin/sh\nexit 0\n")?;
        assert_eq!(
            command_for(&script),
            (PathBuf::from("/bin/sh"), vec![script.display().to_string()])
        );
        let with_args = run.write("env_script", "#!/usr/bin/env python3\n")?;
        assert_eq!(command_for(&with_args), (with_args.clone(), vec![]));
        Ok(())
    }

    #[tokio::test]
    async fn a_missing_server_says_how_to_install_it() {
        let err = Moto::start_with("/nonexistent/venv/bin/moto_server")
            .await
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("/nonexistent/venv/bin/moto_server"), "{err}");
        assert!(err.contains("cargo xtask moto install"), "{err}");
        assert!(err.contains(SERVER_ENV), "{err}");
    }
}
