//! buildah, daemonless, with its storage under one directory.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{Error, Image, Result, io_err, on_path, output_of};

/// Whether buildah, which images are built with, is installed.
pub fn buildah_available() -> bool {
    on_path("buildah").is_some()
}

/// buildah with its storage under one directory: nothing outside it is touched but buildah's
/// blob-info cache.
pub(crate) struct Buildah {
    bin: PathBuf,
    root: PathBuf,
    policy: PathBuf,
}

impl Buildah {
    pub(crate) fn new(root: &Path) -> Result<Self> {
        let bin = on_path("buildah").ok_or(Error::MissingTool {
            tool: "buildah",
            hint: "it builds images without a container engine (Debian and Ubuntu: \
                   `apt-get install buildah`; Fedora: `dnf install buildah`)",
        })?;
        std::fs::create_dir_all(root.join("tmp"))
            .map_err(io_err(format!("creating {}", root.display())))?;
        // Images start from scratch and are written to files: no signature to check. Our own
        // policy keeps the build independent of the machine's /etc/containers/policy.json.
        let policy = root.join("policy.json");
        std::fs::write(
            &policy,
            r#"{"default":[{"type":"insecureAcceptAnything"}]}"#,
        )
        .map_err(io_err(format!("writing {}", policy.display())))?;
        Ok(Buildah {
            bin,
            root: root.to_path_buf(),
            policy,
        })
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.bin);
        cmd.arg("--root")
            .arg(self.root.join("storage"))
            .arg("--runroot")
            .arg(self.root.join("run"))
            .args(["--storage-driver", "vfs"])
            .args(args)
            // Large temporary files (layers being compressed) stay under the root too.
            .env("TMPDIR", self.root.join("tmp"));
        cmd
    }

    /// Runs `buildah <args>` and returns its standard output, trimmed.
    fn run(&self, args: &[&str]) -> Result<String> {
        let out = output_of(
            &mut self.command(args),
            &format!("buildah {}", args.join(" ")),
        )?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    fn policy(&self) -> String {
        format!("--signature-policy={}", self.policy.display())
    }

    /// Commits the files staged under `rootfs` with `image`'s configuration and writes the OCI
    /// archive `out`.
    pub(crate) fn commit_archive(&self, image: &Image, rootfs: &Path, out: &Path) -> Result<()> {
        if out.to_string_lossy().contains(':') {
            return Err(Error::Invalid(format!(
                "{}: buildah's oci-archive destination can't contain ':'",
                out.display()
            )));
        }
        let name = format!(
            "operon-image-{}-{}",
            image
                .reference
                .replace(|c: char| !c.is_ascii_alphanumeric(), "-"),
            std::process::id()
        );
        let mut cleanup = Cleanup {
            buildah: self,
            container: None,
            image: None,
        };
        // A container left by an interrupted build of the same name would make `from` fail.
        let _ = self.command(&["rm", &name]).output();
        self.run(&[
            "from",
            &self.policy(),
            "--quiet",
            "--name",
            &name,
            "scratch",
        ])?;
        cleanup.container = Some(name.clone());
        // `<dir>/` copies the directory's contents: the layer holds exactly the staged files.
        let source = format!("{}/", rootfs.display());
        self.run(&["copy", "--quiet", &name, &source, "/"])?;
        // An empty directory copied with --chown is created with that owner (the copy above
        // makes everything root's); its parents exist already, so they stay root's.
        for (i, (path, mode, owner)) in image.owned_dirs().enumerate() {
            use std::os::unix::fs::PermissionsExt;
            let empty = self
                .root
                .join("tmp")
                .join(format!("owned-{}-{i}", std::process::id()));
            let _ = std::fs::remove_dir_all(&empty);
            std::fs::create_dir_all(&empty)
                .and_then(|()| {
                    std::fs::set_permissions(&empty, std::fs::Permissions::from_mode(mode))
                })
                .map_err(io_err(format!("creating {}", empty.display())))?;
            let source = empty.display().to_string();
            let copied = self.run(&["copy", "--quiet", "--chown", owner, &name, &source, path]);
            let _ = std::fs::remove_dir(&empty);
            copied?;
        }

        let json = |v: &[String]| serde_json::to_string(v).unwrap_or_default();
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            other => other,
        };
        let mut config: Vec<String> = vec!["config".into(), "--os".into(), "linux".into()];
        config.extend(["--arch".into(), arch.into()]);
        if let Some(user) = &image.user {
            config.extend(["--user".into(), user.clone()]);
        }
        if let Some(workdir) = &image.workdir {
            config.extend(["--workingdir".into(), workdir.clone()]);
        }
        if let Some(entrypoint) = &image.entrypoint {
            config.extend(["--entrypoint".into(), json(entrypoint)]);
        }
        if let Some(cmd) = &image.cmd {
            // buildah takes a JSON array for the exec form.
            config.extend(["--cmd".into(), json(cmd)]);
        }
        for var in &image.env {
            config.extend(["--env".into(), var.clone()]);
        }
        for (key, value) in &image.labels {
            config.extend(["--label".into(), format!("{key}={value}")]);
        }
        if let Some(created_by) = &image.created_by {
            config.extend(["--created-by".into(), created_by.clone()]);
        }
        config.push(name.clone());
        let config: Vec<&str> = config.iter().map(String::as_str).collect();
        self.run(&config)?;

        // SOURCE_DATE_EPOCH (reproducible builds) fixes the creation time, hence the digests.
        let timestamp = std::env::var("SOURCE_DATE_EPOCH")
            .ok()
            .filter(|t| t.parse::<u64>().is_ok())
            .map(|t| format!("--timestamp={t}"));
        let policy = self.policy();
        let mut commit = vec!["commit", "--quiet", "--format", "oci", &policy];
        if let Some(t) = &timestamp {
            commit.push(t);
        }
        commit.push(&name);
        let id = self.run(&commit)?;
        if id.is_empty() {
            return Err(Error::Invalid("buildah commit printed no image ID".into()));
        }
        cleanup.image = Some(id.clone());

        if let Some(dir) = out.parent() {
            std::fs::create_dir_all(dir).map_err(io_err(format!("creating {}", dir.display())))?;
        }
        // Written next to `out` and renamed: readers never see half an archive.
        let partial = out.with_extension(format!("partial-{}", std::process::id()));
        let _ = std::fs::remove_file(&partial);
        let destination = format!("oci-archive:{}:{}", partial.display(), image.reference);
        self.run(&["push", "--quiet", &policy, &id, &destination])?;
        std::fs::rename(&partial, out).map_err(io_err(format!(
            "moving {} to {}",
            partial.display(),
            out.display()
        )))
    }
}

/// Removes the working container and the image from buildah's storage, on success or failure.
struct Cleanup<'a> {
    buildah: &'a Buildah,
    container: Option<String>,
    image: Option<String>,
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        if let Some(c) = self.container.take() {
            let _ = self.buildah.command(&["rm", &c]).output();
        }
        if let Some(i) = self.image.take() {
            let _ = self.buildah.command(&["rmi", "--force", &i]).output();
        }
    }
}
