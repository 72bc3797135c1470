//! Child processes that never outlive their owner.
//!
//! Three layers, because each covers a case the others miss:
//! - every child runs in its own process group and is stopped (SIGTERM, then SIGKILL) on drop;
//! - every child gets `PR_SET_PDEATHSIG=SIGKILL`, so it dies with our process even on SIGKILL or
//!   Ctrl-C, when no destructor runs. The signal fires when the *thread* that forked exits, so all
//!   children are spawned from one thread that lives as long as the process;
//! - each run records its pids in a run directory; [`reap_stale_runs`] kills what a crashed run
//!   left behind (checked against the recorded binary, so a recycled pid is never hit).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc;
use std::time::Duration;

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use parking_lot::Mutex;

use crate::Error;

/// Prefix of every run directory under the system temp dir.
pub const RUN_DIR_PREFIX: &str = "operon-envtest-";
const OWNER_FILE: &str = "owner.pid";
const PIDS_FILE: &str = "children.pids";

type SpawnRequest = (Command, mpsc::Sender<std::io::Result<Child>>);

/// The long-lived spawner thread (see module docs for why it exists).
fn spawner() -> &'static Mutex<mpsc::Sender<SpawnRequest>> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnRequest>>> = OnceLock::new();
    SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        let spawn_loop = move || {
            for (mut cmd, reply) in rx {
                let _ = reply.send(cmd.spawn());
            }
            // All senders are gone only at process exit; park so the thread (and with it the
            // children's parent-death signal) stays until then.
            loop {
                std::thread::park();
            }
        };
        if let Err(e) = std::thread::Builder::new()
            .name("operon-envtest-spawner".into())
            .spawn(spawn_loop)
        {
            tracing::error!("cannot start the envtest spawner thread: {e}");
        }
        Mutex::new(tx)
    })
}

#[allow(unsafe_code)]
fn die_with_parent(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    let parent = std::process::id();
    // SAFETY: the closure runs between fork and exec and only makes async-signal-safe syscalls
    // (prctl, getppid); it allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)
                .map_err(|e| std::io::Error::from_raw_os_error(e as i32))?;
            // The parent may have died between fork and prctl; then nobody will signal us.
            if nix::unistd::getppid().as_raw() as u32 != parent {
                return Err(std::io::Error::other("parent exited before exec"));
            }
            Ok(())
        });
    }
}

/// A user and group for a child to run as, instead of this process's (root's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunAs {
    pub uid: u32,
    pub gid: u32,
}

impl RunAs {
    /// `nobody:nogroup`, the conventional identity that owns nothing.
    pub const NOBODY: RunAs = RunAs {
        uid: 65534,
        gid: 65534,
    };
}

/// A running control plane component.
pub struct Process {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Process {
    /// Starts `binary args…` with stdout and stderr appended to `log`.
    pub fn spawn(
        name: &str,
        binary: &Path,
        args: &[String],
        log: PathBuf,
        run: &RunDir,
    ) -> Result<Process, Error> {
        Self::spawn_configured(name, binary, args, log, run, |_| {})
    }

    /// [`spawn`](Self::spawn) as `user` (no supplementary groups, working directory `/`).
    ///
    /// The parent-death signal still applies: the standard library switches user and group
    /// before it runs the `pre_exec` hooks, and the kernel clears the signal on a change of
    /// credentials, so it is set after the switch. The log is opened here, before the switch,
    /// and so need not be writable by `user`; whatever else the process reads or writes must be.
    pub fn spawn_as(
        name: &str,
        binary: &Path,
        args: &[String],
        log: PathBuf,
        run: &RunDir,
        user: RunAs,
    ) -> Result<Process, Error> {
        Self::spawn_configured(name, binary, args, log, run, |cmd| {
            use std::os::unix::process::CommandExt;
            cmd.uid(user.uid).gid(user.gid).current_dir("/");
        })
    }

    /// [`spawn`](Self::spawn), with `configure` adjusting the command first (environment,
    /// namespaces to enter through `pre_exec`).
    pub fn spawn_configured(
        name: &str,
        binary: &Path,
        args: &[String],
        log: PathBuf,
        run: &RunDir,
        configure: impl FnOnce(&mut Command),
    ) -> Result<Process, Error> {
        let io_err = |source| Error::Io {
            context: format!("starting {name} ({})", binary.display()),
            source,
        };
        let out = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(io_err)?;
        let err = out.try_clone().map_err(io_err)?;
        let mut cmd = Command::new(binary);
        cmd.args(args).stdin(Stdio::null()).stdout(out).stderr(err);
        {
            use std::os::unix::process::CommandExt;
            cmd.process_group(0);
        }
        die_with_parent(&mut cmd);
        configure(&mut cmd);
        let (tx, rx) = mpsc::channel();
        spawner()
            .lock()
            .send((cmd, tx))
            .map_err(|_| io_err(std::io::Error::other("spawner thread is gone")))?;
        let child = rx
            .recv()
            .map_err(|_| io_err(std::io::Error::other("spawner thread is gone")))?
            .map_err(io_err)?;
        run.record(child.id(), binary)?;
        tracing::debug!(name, pid = child.id(), log = %log.display(), "started");
        Ok(Process {
            name: name.to_string(),
            child,
            log,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log(&self) -> &Path {
        &self.log
    }

    /// `Some(exit description)` when the process is gone.
    pub fn exited(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(Some(status)) => Some(status.to_string()),
            Ok(None) => None,
            Err(e) => Some(format!("unknown ({e})")),
        }
    }

    /// SIGTERM to the process group, SIGKILL after `grace`; waits for the exit.
    pub fn stop(&mut self, grace: Duration) {
        if self.exited().is_some() {
            return;
        }
        let pgid = Pid::from_raw(self.child.id() as i32);
        let _ = killpg(pgid, Signal::SIGTERM);
        let exited = crate::wait::blocking(
            &format!("{} to exit after SIGTERM", self.name),
            grace,
            crate::wait::Backoff::every(Duration::from_millis(20)),
            || self.exited().ok_or_else(|| "running".to_string()),
        );
        if exited.is_ok() {
            return;
        }
        let _ = killpg(pgid, Signal::SIGKILL);
        let _ = self.child.wait();
    }

    /// SIGKILL, no grace: for tests that simulate a crash.
    pub fn kill(&mut self) {
        let _ = killpg(Pid::from_raw(self.child.id() as i32), Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(5));
    }
}

/// The directory of one control plane run: certificates, data, logs and the pid registry.
pub struct RunDir {
    path: PathBuf,
    keep: bool,
}

impl RunDir {
    /// A fresh directory under the system temp dir, owned by this process.
    pub fn create() -> Result<RunDir, Error> {
        use std::os::unix::fs::PermissionsExt;
        // Private from the start: the reaper trusts no other kind (see `trusted`).
        let dir = tempfile::Builder::new()
            .prefix(RUN_DIR_PREFIX)
            .permissions(fs::Permissions::from_mode(0o700))
            .tempdir()
            .map_err(|source| Error::Io {
                context: "creating the run directory".into(),
                source,
            })?;
        Self::adopt(dir.keep(), false)
    }

    /// Uses `path` (created if needed) and keeps it on drop.
    pub fn at(path: &Path) -> Result<RunDir, Error> {
        fs::create_dir_all(path).map_err(|source| Error::Io {
            context: format!("creating {}", path.display()),
            source,
        })?;
        Self::adopt(path.to_path_buf(), true)
    }

    fn adopt(path: PathBuf, keep: bool) -> Result<RunDir, Error> {
        let run = RunDir { path, keep };
        run.write(OWNER_FILE, &std::process::id().to_string())?;
        let _ = fs::remove_file(run.path.join(PIDS_FILE));
        Ok(run)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `name` inside the run directory (mode 0600: it may hold keys).
    pub fn write(&self, name: &str, contents: &str) -> Result<PathBuf, Error> {
        use std::os::unix::fs::OpenOptionsExt;
        let path = self.path.join(name);
        let mut file = fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .and_then(|mut f| f.write_all(contents.as_bytes()).map(|_| f))
            .map_err(|source| Error::Io {
                context: format!("writing {}", path.display()),
                source,
            })?;
        let _ = file.flush();
        Ok(path)
    }

    fn record(&self, pid: u32, binary: &Path) -> Result<(), Error> {
        // Recorded as /proc/<pid>/exe will show it, so the reaper can recognise the process.
        let binary = binary
            .canonicalize()
            .unwrap_or_else(|_| binary.to_path_buf());
        let path = self.path.join(PIDS_FILE);
        fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut f| writeln!(f, "{pid} {}", binary.display()))
            .map_err(|source| Error::Io {
                context: format!("writing {}", path.display()),
                source,
            })
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        if !self.keep {
            let _ = fs::remove_dir_all(&self.path);
        } else {
            let _ = fs::remove_file(self.path.join(OWNER_FILE));
        }
    }
}

fn alive(pid: i32) -> bool {
    pid > 0 && kill(Pid::from_raw(pid), None).is_ok()
}

/// Kills children recorded by runs whose owner process is gone, and removes their directories.
/// Returns how many processes were killed.
pub fn reap_stale_runs() -> usize {
    reap_in(&std::env::temp_dir())
}

fn reap_in(root: &Path) -> usize {
    let Ok(entries) = fs::read_dir(root) else {
        return 0;
    };
    let mut killed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        if !name.to_string_lossy().starts_with(RUN_DIR_PREFIX) {
            continue;
        }
        let dir = entry.path();
        // The temp dir is shared: another user could plant a directory listing our pids.
        if !trusted(&dir) {
            continue;
        }
        let owner = fs::read_to_string(dir.join(OWNER_FILE))
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok());
        match owner {
            Some(pid) if alive(pid) => continue,
            // A directory being set up right now has no owner file yet; leave young ones alone.
            None if is_younger_than(&dir, Duration::from_secs(60)) => continue,
            _ => {}
        }
        killed += kill_recorded(&dir);
        let _ = fs::remove_dir_all(&dir);
    }
    killed
}

/// Whether `dir` is a run directory this user made: a real directory (not a symlink), owned by
/// the effective user, with no access for anyone else (as `RunDir::create` makes it), so that
/// nobody else can have written its pid list.
fn trusted(dir: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    fs::symlink_metadata(dir).is_ok_and(|m| {
        m.is_dir() && m.uid() == nix::unistd::geteuid().as_raw() && m.mode() & 0o077 == 0
    })
}

/// Kills the processes listed in `dir`'s pid registry that still run the recorded binary.
pub fn kill_recorded(dir: &Path) -> usize {
    let Ok(pids) = fs::read_to_string(dir.join(PIDS_FILE)) else {
        return 0;
    };
    let mut killed = 0;
    for line in pids.lines() {
        let Some((pid, binary)) = line.split_once(' ') else {
            continue;
        };
        let Ok(pid) = pid.parse::<i32>() else {
            continue;
        };
        let exe = fs::read_link(format!("/proc/{pid}/exe")).ok();
        if alive(pid) && exe.as_deref() == Some(Path::new(binary)) {
            let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            killed += 1;
        }
    }
    killed
}

fn is_younger_than(path: &Path, age: Duration) -> bool {
    path.metadata()
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|elapsed| elapsed < age)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_ends_the_whole_process_group() -> Result<(), Error> {
        let run = RunDir::create()?;
        let log = run.path().join("sh.log");
        let grandchild_file = run.path().join("grandchild");
        // The shell forks a grandchild: stopping must reach it too.
        let script = format!("sleep 300 & echo $! > {}; wait", grandchild_file.display());
        let mut p = Process::spawn(
            "sh",
            Path::new("/bin/sh"),
            &["-c".into(), script],
            log,
            &run,
        )?;
        let every = crate::wait::Backoff::every(Duration::from_millis(10));
        let grandchild = crate::wait::blocking(
            "the grandchild's pid",
            Duration::from_secs(10),
            every,
            || {
                fs::read_to_string(&grandchild_file)
                    .ok()
                    .and_then(|s| s.trim().parse::<i32>().ok())
                    .ok_or_else(|| format!("nothing in {}", grandchild_file.display()))
            },
        );
        let grandchild = match grandchild {
            Ok(pid) => pid,
            Err(e) => panic!("grandchild never started: {e}"),
        };
        assert!(alive(grandchild));
        p.stop(Duration::from_secs(5));
        assert!(p.exited().is_some());
        // The grandchild is reparented to init and reaped there; poll until it is gone.
        let gone = crate::wait::blocking(
            "the grandchild to go",
            Duration::from_secs(5),
            every,
            || {
                if alive(grandchild) {
                    Err("alive".to_string())
                } else {
                    Ok(())
                }
            },
        );
        assert!(
            gone.is_ok(),
            "grandchild {grandchild} survived stop: {gone:?}"
        );
        Ok(())
    }

    #[test]
    fn the_reaper_trusts_only_private_directories_of_this_user() -> Result<(), Error> {
        use std::os::unix::fs::PermissionsExt;
        let io = |context: &str| {
            let context = context.to_string();
            move |source| Error::Io { context, source }
        };
        assert!(
            trusted(RunDir::create()?.path()),
            "RunDir::create makes one"
        );
        // A root of its own: reaping there can't touch the other tests' runs.
        let root = tempfile::tempdir().map_err(io("tempdir"))?;
        let dir = tempfile::Builder::new()
            .prefix(RUN_DIR_PREFIX)
            .permissions(fs::Permissions::from_mode(0o700))
            .tempdir_in(root.path())
            .map_err(io("run dir"))?;
        let run = RunDir::adopt(dir.keep(), false)?;
        let mut p = Process::spawn(
            "sleep",
            Path::new("/bin/sleep"),
            &["300".into()],
            run.path().join("sleep.log"),
            &run,
        )?;
        // A dead owner, so only trust decides.
        run.write(OWNER_FILE, "2147483646")?;
        let chmod = |mode| {
            fs::set_permissions(run.path(), fs::Permissions::from_mode(mode)).map_err(io("chmod"))
        };
        // Open to others: someone else may have written its pid list.
        for mode in [0o755, 0o770, 0o707] {
            chmod(mode)?;
            assert!(!trusted(run.path()), "mode {mode:o} trusted");
            reap_in(root.path());
            assert!(p.exited().is_none(), "killed from a {mode:o} directory");
        }
        chmod(0o700)?;
        // Another user's directory, however private.
        if nix::unistd::geteuid().is_root() {
            let chown = |uid: u32| {
                nix::unistd::chown(run.path(), Some(nix::unistd::Uid::from_raw(uid)), None)
                    .map_err(|e| io("chown")(e.into()))
            };
            chown(65534)?;
            assert!(!trusted(run.path()), "another user's directory trusted");
            reap_in(root.path());
            assert!(p.exited().is_none(), "killed from another user's directory");
            chown(0)?;
        }
        // A symlink to a trusted directory is not one.
        let link = root.path().join(format!("{RUN_DIR_PREFIX}link"));
        std::os::unix::fs::symlink(run.path(), &link).map_err(io("symlink"))?;
        assert!(!trusted(&link));
        fs::remove_file(&link).map_err(io("unlink"))?;
        // Its own and private: reaped.
        assert!(trusted(run.path()));
        assert_eq!(reap_in(root.path()), 1);
        let _ = p.child.wait();
        assert!(p.exited().is_some());
        Ok(())
    }

    #[test]
    fn a_process_started_as_another_user_runs_as_it_and_stops() -> Result<(), Error> {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: switching users needs root");
            return Ok(());
        }
        let run = RunDir::create()?;
        let mut p = Process::spawn_as(
            "sleep",
            Path::new("/bin/sleep"),
            &["300".into()],
            run.path().join("sleep.log"),
            &run,
            RunAs::NOBODY,
        )?;
        let status = fs::read_to_string(format!("/proc/{}/status", p.pid())).map_err(|source| {
            Error::Io {
                context: "reading the child's status".into(),
                source,
            }
        })?;
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.split_whitespace().collect::<Vec<_>>())
                .unwrap_or_default()
        };
        // Real, effective, saved and filesystem ids; no supplementary group of root's.
        assert_eq!(field("Uid:"), ["65534"; 4], "{status}");
        assert_eq!(field("Gid:"), ["65534"; 4], "{status}");
        assert!(field("Groups:").is_empty(), "{status}");
        assert!(p.exited().is_none());
        p.stop(Duration::from_secs(5));
        assert!(p.exited().is_some());
        Ok(())
    }

    #[test]
    fn reaper_kills_children_of_dead_owners_only() -> Result<(), Error> {
        let run = RunDir::create()?;
        let mut p = Process::spawn(
            "sleep",
            Path::new("/bin/sleep"),
            &["300".into()],
            run.path().join("sleep.log"),
            &run,
        )?;
        // Our own run is alive: the reaper must leave it alone.
        reap_stale_runs();
        assert!(p.exited().is_none(), "reaper killed a live run's child");
        // Pretend the owner died: a pid that cannot exist.
        run.write(OWNER_FILE, "2147483646")?;
        let killed = kill_recorded(run.path());
        assert_eq!(killed, 1);
        let _ = p.child.wait();
        assert!(p.exited().is_some());
        Ok(())
    }
}
