//! What a real node changes on the machine, each change recorded so it can be undone:
//!
//! - a **slot**: an index no other node on this machine holds, from which its addresses and
//!   names derive (`/run/operon-envtest/node-<k>.json` records the owner; a slot whose owner
//!   died is cleaned and reused);
//! - its **namespaces**: a holder process owns a network namespace (the node's interfaces,
//!   bridge, iptables rules and per-namespace sysctls live and die there) and a mount namespace
//!   where `/var/lib`, `/var/log` and `/run` are the node's own directories (kubelet's and
//!   containerd's fixed paths land there; their mounts never reach the host);
//! - a **veth pair** joining the two, and a host route to the node's Pods;
//! - a **registry directory** `/var/lib/operon/registry-<k>`: the registry's configuration and,
//!   owned by the unprivileged user it runs as, its storage (see [`REGISTRY_ROOT`]);
//! - **cgroups** `operon-node-<k>` in every cgroup v1 hierarchy: kubelet's `cgroupRoot`, and
//!   `…/system` for the node's daemons, so that stopping the node can kill everything it
//!   started, container shims included, and remove the cgroups;
//! - the **kernel settings** kubelet writes (`vm.overcommit_memory`, `vm.panic_on_oom`,
//!   `kernel.panic`, `kernel.panic_on_oops`, `kernel.keys.root_maxkeys`,
//!   `kernel.keys.root_maxbytes`), saved before the first node on the machine starts and
//!   restored when the last one stops.

use std::ffi::CString;
use std::fs;
use std::net::Ipv4Addr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::Error;
use crate::process::{Process, RunAs, RunDir};

/// Machine-wide registry of node slots (tmpfs: gone with a reboot, like what it records).
pub const STATE_DIR: &str = "/run/operon-envtest";
/// How many real nodes one machine runs at once.
const SLOTS: u8 = 64;
/// The kernel settings kubelet changes at start (`setupKernelTunables`), which are global.
const KERNEL_SETTINGS: &[&str] = &[
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
];
const SAVED_SETTINGS: &str = "kernel-settings.saved";
/// Where each node's registry keeps its configuration and images: `registry-<k>` for slot `k`,
/// made when the slot is taken and removed when it is released (or cleaned after a crash).
///
/// The registry runs as [`REGISTRY_USER`], not root, so its storage can't be in the run
/// directory, which stays private to root (mode 0700: the stale-run reaper trusts no other
/// kind). Instead: this directory and `registry-<k>` belong to root with mode 0711 (others may
/// pass through, not list or write), `registry-<k>/config.yml` is root's and only readable by
/// others, and `registry-<k>/storage` alone belongs to the registry's user, mode 0700. On
/// disk rather than in `/run` (tmpfs on most machines): the monitoring stack's images are
/// hundreds of megabytes.
pub const REGISTRY_ROOT: &str = "/var/lib/operon";
/// The unprivileged user the registry runs as. `nobody` owns no files of its own; its only
/// writable place is the registry's storage directory.
pub const REGISTRY_USER: RunAs = RunAs::NOBODY;

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let context = context.into();
    move |source| Error::Io { context, source }
}

/// A process and its start time (clock ticks since boot), which tell it from a later process
/// that reused the pid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Owner {
    pid: i32,
    start: u64,
}

impl Owner {
    fn current() -> Owner {
        let pid = std::process::id() as i32;
        Owner {
            pid,
            start: start_time(pid).unwrap_or_default(),
        }
    }

    fn alive(&self) -> bool {
        kill(Pid::from_raw(self.pid), None).is_ok() && start_time(self.pid) == Some(self.start)
    }
}

/// Field 22 of `/proc/<pid>/stat`.
fn start_time(pid: i32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; the fields after its ')' don't.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

#[derive(serde::Serialize, serde::Deserialize)]
struct SlotRecord {
    owner: Owner,
    run_dir: PathBuf,
}

/// A node's place on this machine. Released (and everything it recorded undone) on drop.
#[derive(Debug)]
pub struct Slot {
    index: u8,
    record: PathBuf,
}

impl Slot {
    /// Takes the first free slot, first cleaning slots whose owner is gone.
    pub fn acquire(run_dir: &Path) -> Result<Slot, Error> {
        fs::create_dir_all(STATE_DIR).map_err(io(format!("creating {STATE_DIR}")))?;
        let _lock = lock()?;
        let mut free = None;
        let mut live = 0;
        for index in 0..SLOTS {
            let record = record_path(index);
            match fs::read(&record) {
                Ok(bytes) => {
                    let owner = serde_json::from_slice::<SlotRecord>(&bytes)
                        .ok()
                        .map(|r| r.owner);
                    if owner.is_some_and(|o| o.alive()) {
                        live += 1;
                        continue;
                    }
                    tracing::warn!(slot = index, "cleaning a node left by a run that is gone");
                    clean(index);
                    let _ = fs::remove_file(&record);
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => clean_if_leftover(index),
                Err(e) => return Err(io(format!("reading {}", record.display()))(e)),
            }
            if free.is_none() && !interface_exists(&veth_name(index)) {
                free = Some(index);
            }
        }
        let index = free.ok_or_else(|| Error::Node(format!("all {SLOTS} node slots are taken")))?;
        if live == 0 {
            save_kernel_settings()?;
        }
        // Under the lock: releasing another slot may remove the shared parent when empty.
        if let Err(e) = create_registry_dir(index) {
            remove_registry_dir(index);
            return Err(e);
        }
        let record = record_path(index);
        let text = serde_json::to_vec(&SlotRecord {
            owner: Owner::current(),
            run_dir: run_dir.to_path_buf(),
        })
        .map_err(|e| Error::Node(format!("recording the slot: {e}")))?;
        fs::write(&record, text).map_err(io(format!("writing {}", record.display())))?;
        Ok(Slot { index, record })
    }

    pub fn index(&self) -> u8 {
        self.index
    }

    /// The host's end of the node's link: the API server and the registry listen here.
    pub fn host_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 200, self.index, 1)
    }

    /// The node's InternalIP.
    pub fn node_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 200, self.index, 2)
    }

    /// The node's Pod range (kwok's fake Pods take 10.244.128.0/17).
    pub fn pod_cidr(&self) -> String {
        format!("10.244.{}.0/24", self.index)
    }

    /// The host's end of the veth pair.
    pub fn veth(&self) -> String {
        veth_name(self.index)
    }

    /// The cgroup (in every hierarchy) holding everything the node runs.
    pub fn cgroup(&self) -> String {
        cgroup_name(self.index)
    }

    /// The registry's directory (see [`REGISTRY_ROOT`]): `config.yml` goes here, the images
    /// into `storage`.
    pub fn registry_dir(&self) -> PathBuf {
        registry_dir(self.index)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let Ok(_lock) = lock() else {
            return;
        };
        clean(self.index);
        let _ = fs::remove_file(&self.record);
        if !any_live_slot() {
            restore_kernel_settings();
        }
    }
}

/// Cleans the slots whose owner is gone (what a killed run left: containers, cgroups, links).
/// Returns how many it cleaned.
pub fn reap_stale_slots() -> usize {
    let Ok(_lock) = lock() else {
        return 0;
    };
    let mut cleaned = 0;
    for index in 0..SLOTS {
        let record = record_path(index);
        let Ok(bytes) = fs::read(&record) else {
            continue;
        };
        let alive = serde_json::from_slice::<SlotRecord>(&bytes).is_ok_and(|r| r.owner.alive());
        if !alive {
            clean(index);
            let _ = fs::remove_file(&record);
            cleaned += 1;
        }
    }
    if cleaned > 0 && !any_live_slot() {
        restore_kernel_settings();
    }
    cleaned
}

fn any_live_slot() -> bool {
    (0..SLOTS).any(|i| {
        fs::read(record_path(i))
            .ok()
            .and_then(|b| serde_json::from_slice::<SlotRecord>(&b).ok())
            .is_some_and(|r| r.owner.alive())
    })
}

fn record_path(index: u8) -> PathBuf {
    Path::new(STATE_DIR).join(format!("node-{index}.json"))
}

fn veth_name(index: u8) -> String {
    format!("operon-node-{index}")
}

fn cgroup_name(index: u8) -> String {
    format!("operon-node-{index}")
}

fn registry_dir(index: u8) -> PathBuf {
    Path::new(REGISTRY_ROOT).join(format!("registry-{index}"))
}

/// Makes [`REGISTRY_ROOT`] (if needed) and a fresh `registry-<index>` in it, as described there.
fn create_registry_dir(index: u8) -> Result<(), Error> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    let root = Path::new(REGISTRY_ROOT);
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o711)
        .create(root)
        .map_err(io(format!("creating {REGISTRY_ROOT}")))?;
    // Root's and writable by nobody else, or another user could swap what is below it.
    let meta = fs::symlink_metadata(root).map_err(io(format!("reading {REGISTRY_ROOT}")))?;
    if !meta.is_dir() || meta.uid() != 0 || meta.mode() & 0o022 != 0 {
        return Err(Error::Node(format!(
            "{REGISTRY_ROOT} must be a directory of root's that only root may write (it holds \
             the node registries' images); it is {}owned by uid {} with mode {:o}",
            if meta.is_dir() {
                ""
            } else {
                "not a directory, "
            },
            meta.uid(),
            meta.mode() & 0o7777
        )));
    }
    let dir = registry_dir(index);
    // A leftover of a run that is gone (the parent stays: it is needed below).
    if let Err(e) = fs::remove_dir_all(&dir)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        return Err(io(format!("removing the leftover {}", dir.display()))(e));
    }
    let mkdir = |path: &Path, mode: u32| {
        fs::DirBuilder::new()
            .mode(mode)
            .create(path)
            .and_then(|()| fs::set_permissions(path, fs::Permissions::from_mode(mode)))
            .map_err(io(format!("creating {}", path.display())))
    };
    mkdir(&dir, 0o711)?;
    let storage = dir.join("storage");
    mkdir(&storage, 0o700)?;
    nix::unistd::chown(
        &storage,
        Some(nix::unistd::Uid::from_raw(REGISTRY_USER.uid)),
        Some(nix::unistd::Gid::from_raw(REGISTRY_USER.gid)),
    )
    .map_err(|e| {
        io(format!(
            "handing {} to the registry's user",
            storage.display()
        ))(e.into())
    })
}

/// Removes `registry-<index>` and, when it was the last, [`REGISTRY_ROOT`].
fn remove_registry_dir(index: u8) {
    let dir = registry_dir(index);
    // `remove_dir_all` doesn't follow symlinks, so the registry's user can't point it elsewhere.
    if let Err(e) = fs::remove_dir_all(&dir)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!("removing {}: {e}", dir.display());
    }
    // Fails while another node's registry lives there.
    let _ = fs::remove_dir(REGISTRY_ROOT);
}

/// An exclusive lock on the slot registry, released on drop.
fn lock() -> Result<nix::fcntl::Flock<fs::File>, Error> {
    let path = Path::new(STATE_DIR).join("lock");
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io(format!("opening {}", path.display())))?;
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| io(format!("locking {}", path.display()))(e.into()))
}

/// Undoes what a node in `index` left: its processes, cgroups, link and registry directory.
fn clean(index: u8) {
    let cgroups = Cgroups::new(cgroup_name(index));
    if let Ok(cgroups) = cgroups {
        cgroups.kill_all();
        cgroups.remove();
    }
    if interface_exists(&veth_name(index)) {
        let _ = Command::new("ip")
            .args(["link", "delete", &veth_name(index)])
            .output();
    }
    remove_registry_dir(index);
}

/// A slot without a record may still have a cgroup, link or registry directory from a run
/// killed while it started or stopped (or from before a reboot, for the directory).
fn clean_if_leftover(index: u8) {
    let has_cgroup = Cgroups::new(cgroup_name(index)).is_ok_and(|c| c.exists());
    if has_cgroup || interface_exists(&veth_name(index)) || registry_dir(index).exists() {
        clean(index);
    }
}

fn interface_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

fn save_kernel_settings() -> Result<(), Error> {
    let saved = Path::new(STATE_DIR).join(SAVED_SETTINGS);
    // A file left by a crashed run holds the values from before any node: keep it.
    if saved.exists() {
        return Ok(());
    }
    let mut text = String::new();
    for key in KERNEL_SETTINGS {
        let value = fs::read_to_string(Path::new("/proc/sys").join(key))
            .map_err(io(format!("reading /proc/sys/{key}")))?;
        text.push_str(&format!("{key} {}\n", value.trim()));
    }
    fs::write(&saved, text).map_err(io(format!("writing {}", saved.display())))
}

fn restore_kernel_settings() {
    let saved = Path::new(STATE_DIR).join(SAVED_SETTINGS);
    let Ok(text) = fs::read_to_string(&saved) else {
        return;
    };
    for line in text.lines() {
        if let Some((key, value)) = line.split_once(' ')
            && KERNEL_SETTINGS.contains(&key)
            && let Err(e) = fs::write(Path::new("/proc/sys").join(key), value)
        {
            tracing::warn!("restoring /proc/sys/{key} to {value}: {e}");
        }
    }
    let _ = fs::remove_file(saved);
}

/// One cgroup, by name, in every cgroup v1 hierarchy of this machine.
pub struct Cgroups {
    name: String,
    hierarchies: Vec<PathBuf>,
    /// The cgroup2 mount of a hybrid host (`/sys/fs/cgroup/unified`). The node never creates
    /// its cgroup there, but libcontainer (kubelet's and runc's) does, so it is searched,
    /// killed and removed like the others.
    unified: Option<PathBuf>,
}

impl Cgroups {
    pub fn new(name: String) -> Result<Cgroups, Error> {
        let mountinfo =
            fs::read_to_string("/proc/self/mountinfo").map_err(io("reading mountinfo"))?;
        let mut hierarchies = Vec::new();
        let mut unified = None;
        for line in mountinfo.lines() {
            // "<id> <parent> <dev> <root> <mount point> <options> … - <fstype> <source> <super>"
            let Some((left, right)) = line.split_once(" - ") else {
                continue;
            };
            let mount_point = left.split_whitespace().nth(4).unwrap_or_default();
            match right.split_whitespace().next() {
                Some("cgroup") => hierarchies.push(PathBuf::from(unescape(mount_point))),
                Some("cgroup2") => unified = Some(PathBuf::from(unescape(mount_point))),
                _ => {}
            }
        }
        if hierarchies.is_empty() {
            return Err(Error::Node(if unified.is_some() {
                "this machine has only cgroup v2; the real node supports cgroup v1 hosts (as \
                 these machines boot) for now"
                    .into()
            } else {
                "no cgroup hierarchy is mounted".into()
            }));
        }
        Ok(Cgroups {
            name,
            hierarchies,
            unified,
        })
    }

    /// Every hierarchy where the cgroup may exist: the v1 ones and the hybrid cgroup2 mount.
    fn everywhere(&self) -> impl Iterator<Item = &PathBuf> {
        self.hierarchies.iter().chain(self.unified.iter())
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    fn exists(&self) -> bool {
        self.everywhere().any(|h| h.join(&self.name).is_dir())
    }

    /// Creates the cgroup and `child` below it in every hierarchy.
    pub fn create(&self, child: &str) -> Result<(), Error> {
        for h in &self.hierarchies {
            for dir in [h.join(&self.name), h.join(&self.name).join(child)] {
                if !dir.is_dir() {
                    fs::create_dir(&dir).map_err(io(format!("creating {}", dir.display())))?;
                }
                // A v1 cpuset starts with no CPUs and no memory nodes, and takes no process
                // until given some: copy the parent's.
                for file in ["cpuset.cpus", "cpuset.mems"] {
                    let (Some(parent), true) = (dir.parent(), dir.join(file).exists()) else {
                        continue;
                    };
                    let current = fs::read_to_string(dir.join(file)).unwrap_or_default();
                    if current.trim().is_empty() {
                        let value = fs::read_to_string(parent.join(file))
                            .map_err(io(format!("reading {}", parent.join(file).display())))?;
                        fs::write(dir.join(file), value.trim())
                            .map_err(io(format!("writing {}", dir.join(file).display())))?;
                    }
                }
            }
        }
        Ok(())
    }

    /// The `cgroup.procs` files of `child` (writing `0` to each moves the writer there).
    pub fn procs_files(&self, child: &str) -> Vec<PathBuf> {
        self.hierarchies
            .iter()
            .map(|h| h.join(&self.name).join(child).join("cgroup.procs"))
            .collect()
    }

    /// Pids of every process in the cgroup or below, in any hierarchy.
    pub fn pids(&self) -> Vec<i32> {
        let mut pids = Vec::new();
        for h in self.everywhere() {
            walk(&h.join(&self.name), &mut |dir| {
                if let Ok(text) = fs::read_to_string(dir.join("cgroup.procs")) {
                    pids.extend(text.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
                }
            });
        }
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    /// SIGKILLs everything in the cgroup until nothing is left (bounded), and reaps what
    /// became this process's children (see [`adopt_orphans`]).
    pub fn kill_all(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut killed = Vec::new();
        loop {
            let pids = self.pids();
            if pids.is_empty() || Instant::now() > deadline {
                if !pids.is_empty() {
                    tracing::warn!(cgroup = %self.name, ?pids, "processes survived SIGKILL");
                }
                break;
            }
            for pid in pids {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                killed.push(pid);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        reap(&killed);
    }

    /// Removes the cgroup and everything below it (children first). Empty cgroups only: call
    /// [`kill_all`](Self::kill_all) first.
    pub fn remove(&self) {
        for h in self.everywhere() {
            let mut dirs = Vec::new();
            walk(&h.join(&self.name), &mut |dir| dirs.push(dir.to_path_buf()));
            // `walk` visits parents before children.
            for dir in dirs.iter().rev() {
                // A killed process leaves its cgroup a moment later.
                let deadline = Instant::now() + Duration::from_secs(5);
                while let Err(e) = fs::remove_dir(dir) {
                    if e.kind() == std::io::ErrorKind::NotFound || Instant::now() > deadline {
                        if e.kind() != std::io::ErrorKind::NotFound {
                            tracing::warn!("removing cgroup {}: {e}", dir.display());
                        }
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
    }
}

/// Makes this process the reaper of the node's orphans. containerd's shims detach from
/// containerd, and a shim's containers outlive it when it is killed; orphans go to the nearest
/// subreaper, else to PID 1, which on some machines (VMs whose PID 1 is an agent) never reaps
/// them. As the subreaper this process reaps them itself when it kills them ([`reap`]).
pub fn adopt_orphans() {
    if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
        tracing::warn!("cannot become the node's subreaper ({e}); killed shims may stay zombies");
    }
}

/// Waits for the exit of the processes in `pids` that are this process's children (adopted
/// orphans), for a moment: a container is adopted only once its shim is gone.
fn reap(pids: &[i32]) {
    use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
    let mut pending: Vec<i32> = pids.to_vec();
    let deadline = Instant::now() + Duration::from_millis(500);
    while !pending.is_empty() && Instant::now() < deadline {
        pending.retain(|&pid| {
            match waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) => true,
                Ok(_) => false,
                // Not (yet) our child: keep asking while it exists.
                Err(_) => {
                    Path::new(&format!("/proc/{pid}")).exists()
                        && fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
                            s.rsplit_once(") ").is_some_and(|(_, r)| r.starts_with('Z'))
                        })
                }
            }
        });
        if !pending.is_empty() {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Calls `visit` on `dir` and every directory below it, parents first.
fn walk(dir: &Path, visit: &mut dyn FnMut(&Path)) {
    if !dir.is_dir() {
        return;
    }
    visit(dir);
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                walk(&entry.path(), visit);
            }
        }
    }
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape(s: &str) -> String {
    s.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

/// The directories that stand in for the node's `/var/lib`, `/var/log` and `/run`.
pub struct NodeDirs {
    pub var_lib: PathBuf,
    pub var_log: PathBuf,
    pub run: PathBuf,
}

impl NodeDirs {
    pub fn create(root: &Path) -> Result<NodeDirs, Error> {
        let dirs = NodeDirs {
            var_lib: root.join("var-lib"),
            var_log: root.join("var-log"),
            run: root.join("run"),
        };
        for dir in [&dirs.var_lib, &dirs.var_log, &dirs.run] {
            fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
        }
        for shadowed in ["/var/lib", "/var/log", "/run"] {
            if root.starts_with(shadowed) {
                return Err(Error::Node(format!(
                    "the node's state can't live under {shadowed}, which the node replaces with \
                     its own directory: {} (use another run directory)",
                    root.display()
                )));
            }
        }
        Ok(dirs)
    }
}

/// Starts the process holding the node's network and mount namespaces.
pub fn spawn_holder(run: &RunDir, dirs: &NodeDirs) -> Result<Process, Error> {
    let cstring = |p: &Path| {
        CString::new(p.as_os_str().as_bytes())
            .map_err(|_| Error::Node(format!("{} contains a NUL byte", p.display())))
    };
    let binds: Vec<(CString, CString)> = [
        (&dirs.var_lib, "/var/lib"),
        (&dirs.var_log, "/var/log"),
        (&dirs.run, "/run"),
    ]
    .into_iter()
    .map(|(from, to)| Ok((cstring(from)?, cstring(Path::new(to))?)))
    .collect::<Result<_, Error>>()?;
    let sleep = Path::new("/bin/sleep");
    Process::spawn_configured(
        "node-namespaces",
        sleep,
        &["infinity".into()],
        run.path().join("node-namespaces.log"),
        run,
        move |cmd| enter_new_namespaces(cmd, binds),
    )
}

#[allow(unsafe_code)]
fn enter_new_namespaces(cmd: &mut Command, binds: Vec<(CString, CString)>) {
    use nix::mount::{MsFlags, mount};
    use nix::sched::{CloneFlags, unshare};
    use std::ffi::CStr;
    use std::os::unix::process::CommandExt;
    // SAFETY: runs between fork and exec; it only makes syscalls (unshare, mount) with
    // C strings built before the fork, and allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            unshare(CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWNET)?;
            // Mounts made in the node (kubelet's volumes, containerd's snapshots) never
            // propagate to the host; the host's still reach the node.
            mount(
                None::<&CStr>,
                c"/",
                None::<&CStr>,
                MsFlags::MS_REC | MsFlags::MS_SLAVE,
                None::<&CStr>,
            )?;
            for (from, to) in &binds {
                mount(
                    Some(from.as_c_str()),
                    to.as_c_str(),
                    None::<&CStr>,
                    MsFlags::MS_BIND | MsFlags::MS_REC,
                    None::<&CStr>,
                )?;
            }
            Ok(())
        });
    }
}

/// Open handles on a holder's namespaces: a process started into them later (a restart after a
/// crash) finds them even if the holder is gone.
pub struct Namespaces {
    net: fs::File,
    mnt: fs::File,
}

impl Namespaces {
    pub fn of(pid: u32) -> Result<Namespaces, Error> {
        let open = |ns: &str| {
            let path = format!("/proc/{pid}/ns/{ns}");
            fs::File::open(&path).map_err(io(format!("opening {path}")))
        };
        Ok(Namespaces {
            net: open("net")?,
            mnt: open("mnt")?,
        })
    }

    /// Makes `cmd` start inside the namespaces and in the cgroups whose `cgroup.procs` files are
    /// given. The files must stay open until the process is spawned.
    #[allow(unsafe_code)]
    pub fn enter(&self, cmd: &mut Command, cgroup_procs: &[fs::File]) {
        use nix::sched::{CloneFlags, setns};
        use std::os::fd::{AsRawFd, BorrowedFd};
        use std::os::unix::process::CommandExt;
        let net = self.net.as_raw_fd();
        let mnt = self.mnt.as_raw_fd();
        let procs: Vec<i32> = cgroup_procs.iter().map(|f| f.as_raw_fd()).collect();
        // SAFETY: runs between fork and exec; the descriptors are open in the parent until the
        // spawn returns (the caller keeps them), and only syscalls are made (setns, write,
        // chdir), without allocating.
        unsafe {
            cmd.pre_exec(move || {
                for fd in &procs {
                    nix::unistd::write(BorrowedFd::borrow_raw(*fd), b"0")?;
                }
                setns(BorrowedFd::borrow_raw(net), CloneFlags::CLONE_NEWNET)?;
                setns(BorrowedFd::borrow_raw(mnt), CloneFlags::CLONE_NEWNS)?;
                // Entering a mount namespace moves the working directory to its root.
                nix::unistd::chdir(c"/")?;
                Ok(())
            });
        }
    }
}

/// Opens `cgroup.procs` files for [`Namespaces::enter`].
pub fn open_procs(files: &[PathBuf]) -> Result<Vec<fs::File>, Error> {
    files
        .iter()
        .map(|p| {
            fs::OpenOptions::new()
                .write(true)
                .open(p)
                .map_err(io(format!("opening {}", p.display())))
        })
        .collect()
}

/// Runs `ip <args>` on the host.
pub fn ip(args: &[&str]) -> Result<(), Error> {
    run_checked(
        Command::new("ip").args(args),
        &format!("ip {}", args.join(" ")),
    )
}

/// Runs `<args>` in the network namespace of process `pid` (nsenter).
pub fn in_netns(pid: u32, args: &[&str]) -> Result<(), Error> {
    run_checked(
        Command::new("nsenter")
            .arg(format!("--net=/proc/{pid}/ns/net"))
            .arg("--")
            .args(args),
        &args.join(" "),
    )
}

fn run_checked(cmd: &mut Command, what: &str) -> Result<(), Error> {
    let out = cmd.output().map_err(io(format!("running {what}")))?;
    if !out.status.success() {
        return Err(Error::Node(format!(
            "{what} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_identifies_this_process() {
        let me = Owner::current();
        assert!(me.start > 0);
        assert!(me.alive());
        let recycled = Owner {
            pid: me.pid,
            start: me.start + 1,
        };
        assert!(
            !recycled.alive(),
            "a different start time is another process"
        );
    }

    #[test]
    fn mountinfo_escapes_are_undone() {
        assert_eq!(unescape("/sys/fs/cgroup/a\\040b"), "/sys/fs/cgroup/a b");
    }
}
