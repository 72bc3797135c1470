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
//! - **cgroups** `operon-node-<k>` in every cgroup v1 hierarchy (or in the unified one on a
//!   cgroup v2 only host, see [`CgroupMode`]): kubelet's `cgroupRoot`, and
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
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::Error;
pub use crate::node::config::CgroupVersion;
use crate::process::{Process, RunAs, RunDir};
use crate::wait;

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

/// The process's start time (field 22 of `/proc/<pid>/stat`).
fn start_time(pid: i32) -> Option<u64> {
    procfs::process::Process::new(pid)
        .and_then(|p| p.stat())
        .ok()
        .map(|s| s.starttime)
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

    /// The host's second address on the link, for a second API server (the HA mode).
    pub fn second_host_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 200, self.index, 3)
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

/// The controllers kubelet checks for in its `cgroupRoot` on a cgroup v2 host.
const V2_CONTROLLERS: &[&str] = &["cpu", "cpuset", "memory", "pids"];
/// Enabled too when the kernel has them: kubelet sets their limits when they are there.
const V2_OPTIONAL_CONTROLLERS: &[&str] = &["io", "hugetlb"];

/// The machine's cgroup layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CgroupMode {
    /// One v1 hierarchy per controller, with or without the cgroup2 mount of a hybrid host
    /// beside them (`/sys/fs/cgroup/unified`).
    V1 {
        hierarchies: Vec<PathBuf>,
        unified: Option<PathBuf>,
    },
    /// The unified hierarchy alone (cgroup v2 only).
    V2 { root: PathBuf },
}

impl CgroupMode {
    /// From this process's mounts.
    pub fn detect() -> Result<CgroupMode, Error> {
        let mounts = procfs::process::Process::myself()
            .and_then(|p| p.mountinfo())
            .map_err(|e| Error::Node(format!("reading /proc/self/mountinfo: {e}")))?;
        CgroupMode::from_mounts(mounts.into_iter().map(|m| {
            // procfs leaves mountinfo's octal escapes in place.
            let mount_point = unescape(&m.mount_point.to_string_lossy());
            (m.fs_type, PathBuf::from(mount_point))
        }))
    }

    /// From `(filesystem type, mount point)` pairs. Any v1 hierarchy makes the host a v1 one
    /// (hybrid hosts included); otherwise a cgroup2 mount with `cgroup.controllers` is the
    /// unified hierarchy.
    fn from_mounts(
        mounts: impl IntoIterator<Item = (String, PathBuf)>,
    ) -> Result<CgroupMode, Error> {
        let mut hierarchies = Vec::new();
        let mut unified = None;
        for (fs_type, mount_point) in mounts {
            match fs_type.as_str() {
                "cgroup" => hierarchies.push(mount_point),
                "cgroup2" => unified = Some(mount_point),
                _ => {}
            }
        }
        match unified {
            _ if !hierarchies.is_empty() => Ok(CgroupMode::V1 {
                hierarchies,
                unified,
            }),
            Some(root) if root.join("cgroup.controllers").is_file() => Ok(CgroupMode::V2 { root }),
            Some(root) => Err(Error::Node(format!(
                "the cgroup2 mount at {} has no cgroup.controllers, so it is not a usable \
                 unified hierarchy; mount cgroup2 on /sys/fs/cgroup, or boot with cgroup v1",
                root.display()
            ))),
            None => Err(Error::Node(
                "no cgroup hierarchy is mounted; mount cgroup2 on /sys/fs/cgroup (or the v1 \
                 hierarchies)"
                    .into(),
            )),
        }
    }

    pub fn version(&self) -> CgroupVersion {
        match self {
            CgroupMode::V1 { .. } => CgroupVersion::V1,
            CgroupMode::V2 { .. } => CgroupVersion::V2,
        }
    }
}

/// One cgroup, by name, in every cgroup v1 hierarchy of this machine, or in its unified
/// hierarchy on a cgroup v2 host.
pub struct Cgroups {
    name: String,
    mode: CgroupMode,
}

impl Cgroups {
    pub fn new(name: String) -> Result<Cgroups, Error> {
        Ok(Cgroups::in_mode(name, CgroupMode::detect()?))
    }

    fn in_mode(name: String, mode: CgroupMode) -> Cgroups {
        Cgroups { name, mode }
    }

    pub fn mode(&self) -> &CgroupMode {
        &self.mode
    }

    /// The hierarchies the node creates its cgroup in.
    fn own(&self) -> &[PathBuf] {
        match &self.mode {
            CgroupMode::V1 { hierarchies, .. } => hierarchies,
            CgroupMode::V2 { root } => std::slice::from_ref(root),
        }
    }

    /// Every hierarchy where the cgroup may exist. On a hybrid host that includes the cgroup2
    /// mount: the node never creates its cgroup there, but libcontainer (kubelet's and runc's)
    /// does, so it is searched, killed and removed like the others.
    fn everywhere(&self) -> impl Iterator<Item = &PathBuf> {
        let hybrid = match &self.mode {
            CgroupMode::V1 { unified, .. } => unified.as_ref(),
            CgroupMode::V2 { .. } => None,
        };
        self.own().iter().chain(hybrid)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    fn exists(&self) -> bool {
        self.everywhere().any(|h| h.join(&self.name).is_dir())
    }

    /// Creates the cgroup and `child` below it in every hierarchy.
    pub fn create(&self, child: &str) -> Result<(), Error> {
        match &self.mode {
            CgroupMode::V1 { hierarchies, .. } => create_v1(hierarchies, &self.name, child),
            CgroupMode::V2 { root } => create_v2(root, &self.name, child),
        }
    }

    /// The `cgroup.procs` files of `child` (writing `0` to each moves the writer there).
    pub fn procs_files(&self, child: &str) -> Vec<PathBuf> {
        self.own()
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
        let mut killed = Vec::new();
        let emptied = wait::blocking(
            &format!("cgroup {} to empty", self.name),
            Duration::from_secs(10),
            wait::Backoff::every(Duration::from_millis(20)),
            || {
                let pids = self.pids();
                if pids.is_empty() {
                    return Ok(());
                }
                for &pid in &pids {
                    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                    killed.push(pid);
                }
                Err(format!("{pids:?}"))
            },
        );
        if let Err(survivors) = emptied {
            tracing::warn!(cgroup = %self.name, pids = survivors.last, "processes survived SIGKILL");
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
                let removed = wait::blocking(
                    &format!("cgroup {} to go", dir.display()),
                    Duration::from_secs(5),
                    wait::Backoff::every(Duration::from_millis(20)),
                    || match fs::remove_dir(dir) {
                        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.to_string()),
                        _ => Ok(()),
                    },
                );
                if let Err(e) = removed {
                    tracing::warn!("removing cgroup {}: {}", dir.display(), e.last);
                }
            }
        }
    }
}

fn mkdir_cgroup(dir: &Path) -> Result<(), Error> {
    if !dir.is_dir() {
        fs::create_dir(dir).map_err(io(format!("creating {}", dir.display())))?;
    }
    Ok(())
}

fn create_v1(hierarchies: &[PathBuf], name: &str, child: &str) -> Result<(), Error> {
    for h in hierarchies {
        for dir in [h.join(name), h.join(name).join(child)] {
            mkdir_cgroup(&dir)?;
            // A v1 cpuset starts with no CPUs and no memory nodes, and takes no process until
            // given some: copy the parent's.
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

/// `root/name` with the controllers kubelet needs enabled for what goes below it, and
/// `root/name/child` for the daemons. A v2 cgroup that hands controllers down holds no process
/// itself, so the daemons live in `child` and kubelet's Pods in its own `kubepods` beside it.
/// A v2 cpuset without CPUs of its own uses its parent's: nothing to copy.
fn create_v2(root: &Path, name: &str, child: &str) -> Result<(), Error> {
    let controllers_file = root.join("cgroup.controllers");
    let available = fs::read_to_string(&controllers_file)
        .map_err(io(format!("reading {}", controllers_file.display())))?;
    let available: Vec<&str> = available.split_whitespace().collect();
    let missing: Vec<&str> = V2_CONTROLLERS
        .iter()
        .copied()
        .filter(|c| !available.contains(c))
        .collect();
    if !missing.is_empty() {
        return Err(Error::Node(format!(
            "the cgroup v2 hierarchy at {} lacks the {} controller(s) kubelet needs (it offers: \
             {}); run the node where they are delegated (on systemd, a unit or scope with \
             Delegate=yes, or the root cgroup), or boot with cgroup v1",
            root.display(),
            missing.join(", "),
            available.join(" ")
        )));
    }
    let wanted: Vec<&str> = V2_CONTROLLERS
        .iter()
        .chain(V2_OPTIONAL_CONTROLLERS)
        .copied()
        .filter(|c| available.contains(c))
        .collect();
    let node = root.join(name);
    enable_controllers(root, &wanted)?;
    mkdir_cgroup(&node)?;
    enable_controllers(&node, &wanted)?;
    mkdir_cgroup(&node.join(child))
}

/// Adds `controllers` to `dir`'s `cgroup.subtree_control` (those not already there, in one
/// write: the kernel takes a space-separated list).
fn enable_controllers(dir: &Path, controllers: &[&str]) -> Result<(), Error> {
    let file = dir.join("cgroup.subtree_control");
    let enabled = fs::read_to_string(&file).unwrap_or_default();
    let enabled: Vec<&str> = enabled.split_whitespace().collect();
    let add: Vec<String> = controllers
        .iter()
        .filter(|c| !enabled.contains(c))
        .map(|c| format!("+{c}"))
        .collect();
    if add.is_empty() {
        return Ok(());
    }
    fs::write(&file, add.join(" ")).map_err(|e| {
        let why = if e.raw_os_error() == Some(nix::libc::EBUSY) {
            " (a v2 cgroup that holds processes can't hand controllers down: run the node from \
             the root cgroup or from a delegated cgroup whose processes live in a child)"
        } else {
            ""
        };
        Error::Node(format!(
            "enabling {} in {}: {e}{why}",
            add.join(" "),
            file.display()
        ))
    })
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
    // Best effort: what is still pending afterwards is left to whoever reaps it later.
    let _ = wait::blocking(
        "killed processes to be reaped",
        Duration::from_millis(500),
        wait::Backoff::every(Duration::from_millis(20)),
        || {
            pending.retain(|&pid| {
                match waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)) {
                    Ok(WaitStatus::StillAlive) => true,
                    Ok(_) => false,
                    // Not (yet) our child: keep asking while it exists.
                    Err(_) => procfs::process::Process::new(pid)
                        .and_then(|p| p.stat())
                        .is_ok_and(|s| s.state == 'Z'),
                }
            });
            if pending.is_empty() {
                Ok(())
            } else {
                Err(format!("{pending:?}"))
            }
        },
    );
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

    fn mounts(list: &[(&str, &Path)]) -> Vec<(String, PathBuf)> {
        list.iter()
            .map(|(t, p)| (t.to_string(), p.to_path_buf()))
            .collect()
    }

    /// A fake unified hierarchy: `root/cgroup.controllers` offering `controllers`.
    fn unified(controllers: &str) -> Result<tempfile::TempDir, std::io::Error> {
        let root = tempfile::tempdir()?;
        fs::write(root.path().join("cgroup.controllers"), controllers)?;
        fs::write(root.path().join("cgroup.subtree_control"), "")?;
        Ok(root)
    }

    #[test]
    fn v1_and_hybrid_hosts_keep_the_v1_hierarchies() -> Result<(), Box<dyn std::error::Error>> {
        let v2 = unified("cpu memory pids cpuset")?;
        let (cpu, memory) = (
            Path::new("/sys/fs/cgroup/cpu"),
            Path::new("/sys/fs/cgroup/memory"),
        );
        let hybrid = CgroupMode::from_mounts(mounts(&[
            ("tmpfs", Path::new("/sys/fs/cgroup")),
            ("cgroup", cpu),
            ("cgroup", memory),
            ("cgroup2", v2.path()),
        ]))?;
        assert_eq!(
            hybrid,
            CgroupMode::V1 {
                hierarchies: vec![cpu.into(), memory.into()],
                unified: Some(v2.path().into()),
            }
        );
        assert_eq!(hybrid.version(), CgroupVersion::V1);
        let cgroups = Cgroups::in_mode("operon-node-7".into(), hybrid);
        // Created in (and entered through) the v1 hierarchies; searched in the cgroup2 one too.
        assert_eq!(
            cgroups.procs_files("system"),
            [
                cpu.join("operon-node-7/system/cgroup.procs"),
                memory.join("operon-node-7/system/cgroup.procs"),
            ]
        );
        assert_eq!(cgroups.everywhere().count(), 3);
        let v1 = CgroupMode::from_mounts(mounts(&[("cgroup", cpu)]))?;
        assert_eq!(
            v1,
            CgroupMode::V1 {
                hierarchies: vec![cpu.into()],
                unified: None,
            }
        );
        Ok(())
    }

    #[test]
    fn a_unified_host_gets_its_cgroup_with_the_controllers_delegated()
    -> Result<(), Box<dyn std::error::Error>> {
        let root = unified("cpuset cpu io memory hugetlb pids rdma misc\n")?;
        let mode = CgroupMode::from_mounts(mounts(&[
            ("sysfs", Path::new("/sys")),
            ("cgroup2", root.path()),
        ]))?;
        assert_eq!(
            mode,
            CgroupMode::V2 {
                root: root.path().into()
            }
        );
        assert_eq!(mode.version(), CgroupVersion::V2);
        let cgroups = Cgroups::in_mode("operon-node-7".into(), mode);
        cgroups.create("system")?;
        let node = root.path().join("operon-node-7");
        assert!(node.join("system").is_dir());
        let wanted = "+cpu +cpuset +memory +pids +io +hugetlb";
        assert_eq!(
            fs::read_to_string(root.path().join("cgroup.subtree_control"))?,
            wanted
        );
        assert_eq!(
            fs::read_to_string(node.join("cgroup.subtree_control"))?,
            wanted
        );
        assert!(!node.join("cpuset.cpus").exists(), "nothing to copy on v2");
        assert_eq!(
            cgroups.procs_files("system"),
            [node.join("system/cgroup.procs")]
        );
        assert!(cgroups.exists());

        // Controllers already enabled are not asked for again.
        fs::write(
            root.path().join("cgroup.subtree_control"),
            "cpuset cpu io memory hugetlb pids",
        )?;
        fs::remove_file(node.join("cgroup.subtree_control"))?;
        cgroups.create("system")?;
        assert_eq!(
            fs::read_to_string(root.path().join("cgroup.subtree_control"))?,
            "cpuset cpu io memory hugetlb pids"
        );
        Ok(())
    }

    #[test]
    fn a_unified_host_without_what_kubelet_needs_is_refused_with_what_to_do()
    -> Result<(), Box<dyn std::error::Error>> {
        let root = unified("cpu io pids")?;
        let mode = CgroupMode::from_mounts(mounts(&[("cgroup2", root.path())]))?;
        let err = Cgroups::in_mode("operon-node-7".into(), mode)
            .create("system")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.contains("lacks the cpuset, memory controller(s)"),
            "{err}"
        );
        assert!(
            err.contains("Delegate=yes") && err.contains("cgroup v1"),
            "{err}"
        );
        assert!(!root.path().join("operon-node-7").exists());

        // A cgroup2 mount that is no unified hierarchy root, and no cgroups at all.
        let bare = tempfile::tempdir()?;
        let err = CgroupMode::from_mounts(mounts(&[("cgroup2", bare.path())]))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("no cgroup.controllers"), "{err}");
        let err = CgroupMode::from_mounts(mounts(&[("ext4", Path::new("/"))]))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("no cgroup hierarchy is mounted"), "{err}");
        Ok(())
    }

    #[test]
    fn this_machine_is_detected() -> Result<(), Error> {
        // Whatever it boots: the detection reads the real mount table without error.
        let mode = CgroupMode::detect()?;
        let unified_root = Path::new("/sys/fs/cgroup/cgroup.controllers").is_file();
        assert_eq!(
            mode.version() == CgroupVersion::V2,
            unified_root,
            "{mode:?}"
        );
        Ok(())
    }

    #[test]
    fn mountinfo_escapes_are_undone() {
        assert_eq!(unescape("/sys/fs/cgroup/a\\040b"), "/sys/fs/cgroup/a b");
    }
}
