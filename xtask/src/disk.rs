//! Free space, checked before a build: a disk that fills up mid-build fails far from the
//! cause (a linker killed by SIGBUS, etcd refusing writes), after minutes of work.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Result, bail};

const GIB: u64 = 1 << 30;

/// What a command writes, by how much of it is already there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Need {
    /// With the Rust build output already in place: the tests' clusters, images and the
    /// rebuilt crates.
    pub warm: u64,
    /// On a fresh machine: every crate's debug build (about 14 GiB), Go's build cache and
    /// module cache (about 10 GiB) and the Kubernetes binaries.
    pub cold: u64,
}

/// The builds and test runs: a warm run's clusters and rebuilt crates take a few GiB.
pub const BUILD: Need = Need {
    warm: 4 * GIB,
    cold: 24 * GIB,
};

/// The directory Cargo builds into for this repository.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::repo_root().join("target"))
}

/// Whether `target` holds a previous build (its dependencies' libraries).
fn is_warm(target: &Path) -> bool {
    std::fs::read_dir(target.join("debug").join("deps"))
        .map(|mut entries| entries.next().is_some())
        .unwrap_or(false)
}

/// The bytes available to this user on the file system holding `path` (or its nearest
/// existing ancestor), from `df`: POSIX output, 1024-byte blocks.
fn available(path: &Path) -> Option<u64> {
    let existing = path.ancestors().find(|p| p.exists())?;
    let out = Command::new("df")
        .args(["-P", "-k"])
        .arg(existing)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    parse_df(&String::from_utf8_lossy(&out.stdout))
}

/// The "Available" column of `df -P -k`'s one data line, in bytes.
fn parse_df(text: &str) -> Option<u64> {
    let line = text.lines().nth(1)?;
    let kib: u64 = line.split_whitespace().nth(3)?.parse().ok()?;
    Some(kib * 1024)
}

/// The message when `available` bytes are below what a `warm` or cold build `need`s, if they
/// are.
fn shortfall(
    command: &str,
    target: &Path,
    warm: bool,
    available: u64,
    need: Need,
) -> Option<String> {
    let needed = if warm { need.warm } else { need.cold };
    if available >= needed {
        return None;
    }
    let gib = |b: u64| b as f64 / GIB as f64;
    let state = if warm {
        "with the build output already there"
    } else {
        "on a fresh machine (no build output yet)"
    };
    Some(format!(
        "{command} needs about {:.0} GiB of free disk {state}; the file system holding {} has \
         {:.1} GiB.\nwhat to do: free space (`cargo clean`, or remove {}/debug/incremental, which \
         only grows), or build elsewhere with CARGO_TARGET_DIR=<a larger disk>",
        gib(needed),
        target.display(),
        gib(available),
        target.display(),
    ))
}

/// Stops `command` at once if the disk it builds on lacks room for it.
pub fn ensure(command: &str, need: Need) -> Result<()> {
    let target = target_dir();
    // No `df` or an unreadable answer: nothing to say, the build will tell.
    let Some(free) = available(&target) else {
        return Ok(());
    };
    if let Some(message) = shortfall(command, &target, is_warm(&target), free, need) {
        bail!(message);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn df_output_is_read_in_bytes() {
        let text = "Filesystem     1024-blocks     Used Available Capacity Mounted on\n\
                    /dev/vda         263174148 95000000  134144     100% /\n";
        assert_eq!(parse_df(text), Some(134_144 * 1024));
        assert_eq!(parse_df("Filesystem\n"), None);
        assert_eq!(parse_df(""), None);
    }

    #[test]
    fn a_full_disk_is_named_with_what_to_do() {
        let target = Path::new("/work/target");
        let message = shortfall("`cargo xtask test`", target, true, 131 << 20, BUILD)
            .expect("131 MiB is not enough");
        assert!(message.contains("4 GiB"), "{message}");
        assert!(message.contains("0.1 GiB"), "{message}");
        assert!(
            message.contains("/work/target/debug/incremental"),
            "{message}"
        );
    }

    #[test]
    fn a_fresh_machine_needs_room_for_every_build() {
        let target = Path::new("/t");
        assert!(shortfall("x", target, true, 10 * GIB, BUILD).is_none());
        let cold = shortfall("x", target, false, 10 * GIB, BUILD).expect("cold needs more");
        assert!(cold.contains("fresh machine"), "{cold}");
        assert!(shortfall("x", target, false, 40 * GIB, BUILD).is_none());
    }

    #[test]
    fn this_machine_answers() {
        // `df` is part of coreutils on every machine this runs on.
        assert!(available(Path::new("/")).is_some());
        assert!(available(Path::new("/no/such/dir/below/root")).is_some());
    }
}
