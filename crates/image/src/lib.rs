//! Container images without a container engine or daemon.
//!
//! - [`Image`]: an image `FROM scratch` made of files, directories and symlinks of this machine
//!   (a static binary, a busybox with its applet links), committed with buildah and written as
//!   an OCI archive.
//! - [`build`]: an operator's image — its statically linked release binary alone, run as the
//!   distroless `nonroot` user (see [`operator`]).
//! - [`push`]: an OCI archive into a registry (skopeo), which is how images reach a cluster's
//!   nodes; it returns the manifest's digest, for references that name exactly what was pushed.

mod buildah;
pub mod operator;
mod push;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Instant;

pub use buildah::buildah_available;
pub use operator::{build, static_binary};
pub use push::{manifest_digest, push, skopeo_available};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{tool} is not installed; {hint}")]
    MissingTool {
        tool: &'static str,
        hint: &'static str,
    },
    #[error("{what} failed ({status}):\n{output}")]
    Failed {
        what: String,
        status: String,
        output: String,
    },
    #[error("{0}")]
    Invalid(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let context = context.into();
    move |source| Error::Io { context, source }
}

/// What goes into an image's single layer.
#[derive(Debug, Clone)]
enum Entry {
    File {
        source: PathBuf,
        path: String,
        mode: u32,
    },
    Dir {
        path: String,
        mode: u32,
        /// `uid:gid`; `None` is root, as every other entry.
        owner: Option<String>,
    },
    Symlink {
        path: String,
        target: String,
    },
}

/// An image `FROM scratch` of files from this machine, with its configuration.
///
/// ```no_run
/// # fn demo() -> operon_image::Result<()> {
/// operon_image::Image::new("pause:1")
///     .file("/bin/busybox", "/busybox", 0o755)
///     .entrypoint(&["/busybox", "sleep", "infinity"])
///     .build(std::path::Path::new("/tmp/work"), std::path::Path::new("/tmp/pause.oci.tar"))?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Image {
    reference: String,
    entries: Vec<Entry>,
    entrypoint: Option<Vec<String>>,
    cmd: Option<Vec<String>>,
    user: Option<String>,
    workdir: Option<String>,
    env: Vec<String>,
    labels: Vec<(String, String)>,
    created_by: Option<String>,
}

impl Image {
    /// `reference` names the image inside the OCI archive, e.g. `busybox:1.35.0`.
    pub fn new(reference: impl Into<String>) -> Self {
        Image {
            reference: reference.into(),
            entries: Vec::new(),
            entrypoint: None,
            cmd: None,
            user: None,
            workdir: None,
            env: Vec::new(),
            labels: Vec::new(),
            created_by: None,
        }
    }

    /// The file `source` of this machine at `path` in the image, with `mode`.
    pub fn file(mut self, source: impl Into<PathBuf>, path: &str, mode: u32) -> Self {
        self.entries.push(Entry::File {
            source: source.into(),
            path: path.to_string(),
            mode,
        });
        self
    }

    pub fn dir(mut self, path: &str, mode: u32) -> Self {
        self.entries.push(Entry::Dir {
            path: path.to_string(),
            mode,
            owner: None,
        });
        self
    }

    /// An empty directory owned by `owner` (`uid:gid`), e.g. one the image's user writes its
    /// data to. Nothing else may be placed inside it; its parents belong to root.
    pub fn owned_dir(mut self, path: &str, mode: u32, owner: &str) -> Self {
        self.entries.push(Entry::Dir {
            path: path.to_string(),
            mode,
            owner: Some(owner.to_string()),
        });
        self
    }

    /// A symbolic link at `path` pointing to `target`.
    pub fn symlink(mut self, path: &str, target: &str) -> Self {
        self.entries.push(Entry::Symlink {
            path: path.to_string(),
            target: target.to_string(),
        });
        self
    }

    pub fn entrypoint(mut self, args: &[&str]) -> Self {
        self.entrypoint = Some(args.iter().map(|s| s.to_string()).collect());
        self
    }

    pub fn cmd(mut self, args: &[&str]) -> Self {
        self.cmd = Some(args.iter().map(|s| s.to_string()).collect());
        self
    }

    /// `uid:gid` the image runs as.
    pub fn user(mut self, user: &str) -> Self {
        self.user = Some(user.to_string());
        self
    }

    /// The working directory the image's process starts in.
    pub fn workdir(mut self, path: &str) -> Self {
        self.workdir = Some(path.to_string());
        self
    }

    /// `NAME=value`.
    pub fn env(mut self, var: &str) -> Self {
        self.env.push(var.to_string());
        self
    }

    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.labels.push((key.to_string(), value.to_string()));
        self
    }

    pub fn created_by(mut self, text: &str) -> Self {
        self.created_by = Some(text.to_string());
        self
    }

    pub fn reference(&self) -> &str {
        &self.reference
    }

    /// Names the image inside the archive `reference` instead (e.g. the name a Deployment runs).
    pub fn named(mut self, reference: impl Into<String>) -> Self {
        self.reference = reference.into();
        self
    }

    /// Changes whenever the image would: its configuration and each file's path, size and
    /// modification time (cheap, unlike hashing a 50 MB binary on every start).
    pub fn fingerprint(&self) -> String {
        use std::hash::Hasher;
        // Stable within a Rust release, which is all a cache key needs.
        let mut h = std::hash::DefaultHasher::new();
        h.write(
            format!(
                "{:?}",
                (
                    &self.reference,
                    &self.entrypoint,
                    &self.cmd,
                    &self.user,
                    &self.workdir,
                    &self.env,
                    &self.labels
                )
            )
            .as_bytes(),
        );
        for entry in &self.entries {
            h.write(format!("{entry:?}").as_bytes());
            if let Entry::File { source, .. } = entry {
                let meta = std::fs::metadata(source).ok();
                let len = meta.as_ref().map(|m| m.len()).unwrap_or_default();
                let mtime = meta
                    .and_then(|m| m.modified().ok())
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map(|d| d.as_nanos())
                    .unwrap_or_default();
                h.write(format!("{len} {mtime}").as_bytes());
            }
        }
        format!("{:016x}", h.finish())
    }

    /// Builds the image and writes it as the OCI archive `out` (atomically). `work` holds
    /// buildah's storage and the staged files; it may be reused between builds.
    pub fn build(&self, work: &Path, out: &Path) -> Result<()> {
        let t0 = Instant::now();
        let buildah = buildah::Buildah::new(work)?;
        let staged = work.join(format!("rootfs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&staged);
        let result = self
            .stage(&staged)
            .and_then(|()| buildah.commit_archive(self, &staged, out));
        let _ = std::fs::remove_dir_all(&staged);
        result?;
        println!(
            "image: {} written to {} in {}",
            self.reference,
            out.display(),
            elapsed(t0)
        );
        Ok(())
    }

    /// Like [`build`](Self::build), but only when `out` is missing or was built from something
    /// else: a stamp next to it records the [`fingerprint`](Self::fingerprint).
    pub fn build_cached(&self, work: &Path, out: &Path) -> Result<()> {
        let stamp = out.with_extension("stamp");
        let fingerprint = self.fingerprint();
        if out.is_file() && std::fs::read_to_string(&stamp).ok().as_deref() == Some(&fingerprint) {
            return Ok(());
        }
        self.build(work, out)?;
        std::fs::write(&stamp, fingerprint).map_err(io_err(format!("writing {}", stamp.display())))
    }

    /// The directories of [`owned_dir`](Self::owned_dir): `(path, mode, owner)`. Not staged
    /// with the rest, whose owner is root; buildah creates each with its owner.
    pub(crate) fn owned_dirs(&self) -> impl Iterator<Item = (&str, u32, &str)> {
        self.entries.iter().filter_map(|e| match e {
            Entry::Dir {
                path,
                mode,
                owner: Some(owner),
            } => Some((path.as_str(), *mode, owner.as_str())),
            _ => None,
        })
    }

    /// Lays the image's files out under `root`; of an owned directory only its parents.
    fn stage(&self, root: &Path) -> Result<()> {
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir_all(root).map_err(io_err(format!("creating {}", root.display())))?;
        let inside = |path: &str| -> Result<PathBuf> {
            let relative = path.trim_start_matches('/');
            if relative.is_empty() || relative.split('/').any(|c| c == ".." || c.is_empty()) {
                return Err(Error::Invalid(format!(
                    "{path:?} is not a path inside an image"
                )));
            }
            let full = root.join(relative);
            if let Some(parent) = full.parent() {
                std::fs::create_dir_all(parent)
                    .map_err(io_err(format!("creating {}", parent.display())))?;
            }
            Ok(full)
        };
        for (owned, _, _) in self.owned_dirs() {
            let prefix = format!("{}/", owned.trim_end_matches('/'));
            if let Some(inner) = self.entries.iter().find_map(|e| match e {
                Entry::File { path, .. }
                | Entry::Dir { path, .. }
                | Entry::Symlink { path, .. }
                    if path.starts_with(&prefix) =>
                {
                    Some(path)
                }
                _ => None,
            }) {
                return Err(Error::Invalid(format!(
                    "{inner:?} is inside the owned directory {owned:?}, which stays empty"
                )));
            }
        }
        for entry in &self.entries {
            match entry {
                Entry::File { source, path, mode } => {
                    let to = inside(path)?;
                    std::fs::copy(source, &to).map_err(io_err(format!(
                        "copying {} into the image",
                        source.display()
                    )))?;
                    std::fs::set_permissions(&to, std::fs::Permissions::from_mode(*mode))
                        .map_err(io_err(format!("setting the mode of {}", to.display())))?;
                }
                Entry::Dir {
                    path,
                    owner: Some(_),
                    ..
                } => {
                    inside(path)?;
                }
                Entry::Dir {
                    path,
                    mode,
                    owner: None,
                } => {
                    let to = inside(path)?;
                    std::fs::create_dir_all(&to)
                        .map_err(io_err(format!("creating {}", to.display())))?;
                    std::fs::set_permissions(&to, std::fs::Permissions::from_mode(*mode))
                        .map_err(io_err(format!("setting the mode of {}", to.display())))?;
                }
                Entry::Symlink { path, target } => {
                    let to = inside(path)?;
                    let _ = std::fs::remove_file(&to);
                    std::os::unix::fs::symlink(target, &to)
                        .map_err(io_err(format!("linking {}", to.display())))?;
                }
            }
        }
        Ok(())
    }
}

pub(crate) fn on_path(name: &str) -> Option<PathBuf> {
    operon_assets::on_path(name)
}

/// Runs `cmd` to completion (`what` names it in errors): its output when it succeeds.
pub(crate) fn output_of(cmd: &mut std::process::Command, what: &str) -> Result<Output> {
    let out = cmd.output().map_err(io_err(format!("running {what}")))?;
    if !out.status.success() {
        return Err(Error::Failed {
            what: what.to_string(),
            status: out.status.to_string(),
            output: output_text(&out),
        });
    }
    Ok(out)
}

pub(crate) fn output_text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

pub(crate) fn elapsed(since: Instant) -> String {
    let secs = since.elapsed().as_secs();
    if secs >= 60 {
        format!("{}m{:02}s", secs / 60, secs % 60)
    } else {
        format!("{:.1}s", since.elapsed().as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_follows_files_and_configuration() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("bin");
        std::fs::write(&file, "one").expect("write");
        let image = Image::new("x:1")
            .file(&file, "/bin", 0o755)
            .entrypoint(&["/bin"]);
        let first = image.fingerprint();
        assert_eq!(first, image.fingerprint());
        assert_ne!(first, image.clone().user("1:1").fingerprint());
        std::fs::write(&file, "three").expect("write");
        assert_ne!(
            first,
            image.fingerprint(),
            "a changed file must change the fingerprint"
        );
    }

    #[test]
    fn staging_refuses_paths_outside_the_image() {
        let dir = tempfile::tempdir().expect("tempdir");
        for bad in ["/", "/../etc/passwd", "a//b"] {
            let image = Image::new("x:1").dir(bad, 0o755);
            let e = image.stage(&dir.path().join("root")).expect_err(bad);
            assert!(e.to_string().contains("not a path inside an image"), "{e}");
        }
    }

    #[test]
    fn owned_dirs_are_left_to_buildah_and_stay_empty() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("root");
        let image = Image::new("x:1")
            .owned_dir("/var/data", 0o750, "65534:65534")
            .workdir("/var/data");
        image.stage(&root).expect("stage");
        assert!(root.join("var").is_dir(), "its parent is staged, root's");
        assert!(
            !root.join("var/data").exists(),
            "buildah creates it with its owner"
        );
        assert_eq!(
            image.owned_dirs().collect::<Vec<_>>(),
            [("/var/data", 0o750, "65534:65534")]
        );
        assert_ne!(
            image.fingerprint(),
            image.clone().workdir("/").fingerprint()
        );

        let file = dir.path().join("f");
        std::fs::write(&file, "x").expect("write");
        let e = image
            .file(&file, "/var/data/f", 0o644)
            .stage(&dir.path().join("other"))
            .expect_err("a file inside an owned directory");
        assert!(e.to_string().contains("stays empty"), "{e}");
    }

    #[test]
    fn stages_files_dirs_and_links() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("source");
        std::fs::write(&file, "#!/bin/true\n").expect("write");
        let root = dir.path().join("root");
        Image::new("x:1")
            .file(&file, "/bin/tool", 0o755)
            .symlink("/usr/bin/alias", "/bin/tool")
            .dir("/tmp", 0o1777)
            .stage(&root)
            .expect("stage");
        let mode = |p: &str| {
            std::fs::symlink_metadata(root.join(p))
                .expect("staged")
                .permissions()
                .mode()
                & 0o7777
        };
        assert_eq!(mode("bin/tool"), 0o755);
        assert_eq!(mode("tmp"), 0o1777);
        assert_eq!(
            std::fs::read_link(root.join("usr/bin/alias")).expect("link"),
            PathBuf::from("/bin/tool")
        );
    }
}
