//! Container images of the operators, built without a container engine or daemon.
//!
//! An operator's image holds one file: its statically linked binary, `FROM scratch`, run as the
//! distroless `nonroot` user 65532:65532 with `ENTRYPOINT ["/<operator>"]` and `CMD ["run"]` —
//! what `operators/pod-operator/Containerfile` builds on machines with a container engine.
//!
//! 1. **Static binary.** `cargo build --release --target <arch>-unknown-linux-musl` when that
//!    Rust target and a musl C compiler (`musl-gcc`, Debian's `musl-tools`, for ring's C parts)
//!    are installed; else the glibc target with `-C target-feature=+crt-static`. Either goes to
//!    `<target>/static` so that normal builds are not invalidated. The ELF file must have no
//!    program interpreter (`PT_INTERP`), i.e. need no dynamic loader or libc in the image.
//!    `OPERON_IMAGE_TARGET=<triple>` forces a target.
//! 2. **Image.** buildah, daemonless, with the vfs storage driver and its storage under
//!    `<target>/buildah`: `from scratch`, `copy`, `config`, `commit`, then `push` to an OCI
//!    archive (`<target>/images/<operator>.oci.tar` unless `--out`). The working container and
//!    image are removed afterwards, so reruns start from the same state.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};

use crate::{cargo, elapsed, run};

/// The user of distroless images' `nonroot`.
const USER: &str = "65532:65532";

/// Variables Cargo sets for the crate it runs (besides `CARGO_PKG_*` and `CARGO_BIN_EXE_*`).
const CARGO_SET_FOR_CRATES: &[&str] = &[
    "CARGO_MANIFEST_DIR",
    "CARGO_MANIFEST_PATH",
    "CARGO_CRATE_NAME",
    "CARGO_BIN_NAME",
    "CARGO_PRIMARY_PACKAGE",
    "CARGO_TARGET_TMPDIR",
    "CARGO_RUSTC_CURRENT_DIR",
    "OUT_DIR",
];

/// What `cargo metadata` tells about the operator's package.
struct Package {
    version: String,
    license: Option<String>,
    repository: Option<String>,
    target_dir: PathBuf,
}

/// Builds `operator`'s image as an OCI archive at `out` (default
/// `<target>/images/<operator>.oci.tar`) and returns its path.
pub fn build(operator: &str, out: Option<&Path>) -> Result<PathBuf> {
    let t0 = Instant::now();
    let package = package(operator)?;
    let out = match out {
        Some(p) => std::path::absolute(p)?,
        None => package
            .target_dir
            .join("images")
            .join(format!("{operator}.oci.tar")),
    };
    ensure!(
        !out.to_string_lossy().contains(':'),
        "{}: buildah's oci-archive destination can't contain ':'",
        out.display()
    );
    let buildah = Buildah::new(&package.target_dir.join("buildah"))?;

    let (triple, binary) = static_binary(operator, &package.target_dir)?;
    let binary_size = std::fs::metadata(&binary)?.len();

    let reference = format!("{operator}:{}", package.version);
    buildah.image(operator, &package, &binary, &reference, &out)?;

    let archive_size = std::fs::metadata(&out)?.len();
    println!(
        "xtask: image {reference} written to {} in {}\n\
         xtask:   OCI archive (gzip layer): {}\n\
         xtask:   binary /{operator} ({triple}, static): {}",
        out.display(),
        elapsed(t0),
        size(archive_size),
        size(binary_size),
    );
    Ok(out)
}

fn size(bytes: u64) -> String {
    format!(
        "{:.1} MiB ({bytes} bytes)",
        bytes as f64 / (1024.0 * 1024.0)
    )
}

/// The operator's package (which must have a binary of the same name) and the target directory.
fn package(operator: &str) -> Result<Package> {
    let out = cargo()
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .output()
        .context("cargo metadata")?;
    ensure!(
        out.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let packages = meta["packages"].as_array().cloned().unwrap_or_default();
    let Some(pkg) = packages.iter().find(|p| p["name"] == operator) else {
        bail!("no package named {operator} in the workspace");
    };
    let has_bin = pkg["targets"].as_array().is_some_and(|targets| {
        targets.iter().any(|t| {
            t["name"] == operator
                && t["kind"]
                    .as_array()
                    .is_some_and(|k| k.contains(&"bin".into()))
        })
    });
    ensure!(has_bin, "package {operator} has no binary named {operator}");
    let string = |v: &serde_json::Value| v.as_str().map(str::to_string);
    Ok(Package {
        version: string(&pkg["version"]).context("package without a version")?,
        license: string(&pkg["license"]),
        repository: string(&pkg["repository"]),
        target_dir: meta["target_directory"]
            .as_str()
            .map(PathBuf::from)
            .context("cargo metadata has no target_directory")?,
    })
}

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Whether the Rust standard library for `triple` is installed (`rustup target add`).
fn rust_target_installed(triple: &str) -> bool {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    Command::new(rustc)
        .args(["--print", "sysroot"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
        .is_some_and(|sysroot| {
            sysroot
                .join("lib/rustlib")
                .join(triple)
                .join("lib")
                .is_dir()
        })
}

/// Builds `operator` statically linked; returns the target triple and the binary.
fn static_binary(operator: &str, target_dir: &Path) -> Result<(String, PathBuf)> {
    let arch = std::env::consts::ARCH;
    let musl = format!("{arch}-unknown-linux-musl");
    let gnu = format!("{arch}-unknown-linux-gnu");
    // ring compiles C and assembly: the musl target needs a C compiler for it.
    let cc_var = format!("CC_{}", musl.replace('-', "_"));
    let musl_cc = std::env::var_os(&cc_var)
        .map(PathBuf::from)
        .or_else(|| on_path(&format!("{arch}-linux-musl-gcc")))
        .or_else(|| on_path("musl-gcc"));
    let triple = match std::env::var("OPERON_IMAGE_TARGET") {
        Ok(t) if !t.is_empty() => t,
        _ if rust_target_installed(&musl) && musl_cc.is_some() => musl.clone(),
        _ => {
            println!(
                "xtask: no {musl} Rust target or no musl C compiler (`rustup target add {musl}`, \
                 `apt-get install musl-tools`): linking glibc statically instead"
            );
            gnu.clone()
        }
    };

    let mut cmd = cargo();
    // Build scripts (ring's) rerun when variables such as CARGO_MANIFEST_DIR change, and Cargo
    // sets those for xtask itself, differently under `cargo xtask` and `cargo test`: without
    // them, the build stays fresh however xtask is started.
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        if CARGO_SET_FOR_CRATES.contains(&&*key)
            || key.starts_with("CARGO_PKG_")
            || key.starts_with("CARGO_BIN_EXE_")
        {
            cmd.env_remove(&*key);
        }
    }
    cmd.args([
        "build",
        "--release",
        "--package",
        operator,
        "--bin",
        operator,
    ])
    .arg("--target")
    .arg(&triple)
    .arg("--target-dir")
    .arg(target_dir.join("static"))
    // Symbols only matter to debuggers; the Kubernetes binaries are stripped too (-s -w).
    .env("CARGO_PROFILE_RELEASE_STRIP", "symbols");
    if triple == musl {
        if let Some(cc) = &musl_cc {
            cmd.env(&cc_var, cc);
        }
    } else {
        // For the target only (not build scripts); musl targets link statically by default.
        let var = format!(
            "CARGO_TARGET_{}_RUSTFLAGS",
            triple.to_uppercase().replace(['-', '.'], "_")
        );
        let mut flags = std::env::var(&var).unwrap_or_default();
        flags.push_str(" -C target-feature=+crt-static");
        cmd.env(var, flags.trim());
    }
    run(
        &format!("cargo build --release --target {triple} ({operator})"),
        &mut cmd,
    )?;

    let binary = target_dir
        .join("static")
        .join(&triple)
        .join("release")
        .join(operator);
    ensure_static(&binary)?;
    Ok((triple, binary))
}

/// Fails unless `path` is an ELF executable without a program interpreter (`PT_INTERP`): a
/// static (or static-pie) binary that runs in an empty image.
fn ensure_static(path: &Path) -> Result<()> {
    const PT_INTERP: u32 = 3;
    let elf = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let u16_at = |at: usize| -> Option<usize> {
        Some(u16::from_le_bytes(elf.get(at..at + 2)?.try_into().ok()?).into())
    };
    let u32_at = |at: usize| -> Option<u32> {
        Some(u32::from_le_bytes(elf.get(at..at + 4)?.try_into().ok()?))
    };
    let u64_at = |at: usize| -> Option<usize> {
        usize::try_from(u64::from_le_bytes(elf.get(at..at + 8)?.try_into().ok()?)).ok()
    };
    ensure!(
        elf.get(..6) == Some(b"\x7fELF\x02\x01".as_slice()),
        "{} is not a 64-bit little-endian ELF file",
        path.display()
    );
    let headers = (|| {
        let (offset, size, count) = (u64_at(0x20)?, u16_at(0x36)?, u16_at(0x38)?);
        (0..count)
            .map(|i| u32_at(offset + i * size))
            .collect::<Option<Vec<u32>>>()
    })()
    .with_context(|| format!("{}: truncated ELF program headers", path.display()))?;
    ensure!(
        !headers.contains(&PT_INTERP),
        "{} is dynamically linked (it has a program interpreter): it can't run FROM scratch",
        path.display()
    );
    Ok(())
}

/// buildah with its storage under one directory: nothing outside it is touched but buildah's
/// blob-info cache.
struct Buildah {
    bin: PathBuf,
    root: PathBuf,
    policy: PathBuf,
}

impl Buildah {
    fn new(root: &Path) -> Result<Self> {
        let bin = on_path("buildah").context(
            "buildah is not installed; it builds the image without a container engine \
             (Debian: `apt-get install buildah`, or `bash .ci/install-prerequisites`)",
        )?;
        std::fs::create_dir_all(root.join("tmp"))?;
        // The image starts from scratch and is written to a file: no signature to check. Our own
        // policy keeps the build independent of the machine's /etc/containers/policy.json.
        let policy = root.join("policy.json");
        std::fs::write(
            &policy,
            r#"{"default":[{"type":"insecureAcceptAnything"}]}"#,
        )?;
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
        let out = self
            .command(args)
            .output()
            .with_context(|| format!("running buildah {}", args.join(" ")))?;
        ensure!(
            out.status.success(),
            "buildah {} failed ({}):\n{}",
            args.join(" "),
            out.status,
            output_text(&out)
        );
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    fn policy(&self) -> String {
        format!("--signature-policy={}", self.policy.display())
    }

    /// Builds the image of `binary` and pushes it as the OCI archive `out`, named `reference`.
    fn image(
        &self,
        operator: &str,
        package: &Package,
        binary: &Path,
        reference: &str,
        out: &Path,
    ) -> Result<()> {
        let name = format!("operon-image-{operator}-{}", std::process::id());
        let mut cleanup = Cleanup {
            buildah: self,
            container: None,
            image: None,
        };
        self.run(&[
            "from",
            &self.policy(),
            "--quiet",
            "--name",
            &name,
            "scratch",
        ])?;
        cleanup.container = Some(name.clone());
        let binary = binary.to_string_lossy();
        let path = format!("/{operator}");
        self.run(&["copy", "--quiet", "--chmod", "0755", &name, &binary, &path])?;

        let entrypoint = serde_json::to_string(&[&path])?;
        let created_by = format!("cargo xtask image {operator}");
        let mut config = vec![
            "config",
            "--user",
            USER,
            "--entrypoint",
            &entrypoint,
            "--cmd",
            "run",
            "--os",
            "linux",
            "--created-by",
            &created_by,
        ];
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            other => other,
        };
        config.extend(["--arch", arch]);
        let labels: Vec<String> = [
            ("title", Some(operator.to_string())),
            ("version", Some(package.version.clone())),
            ("licenses", package.license.clone()),
            ("source", package.repository.clone()),
        ]
        .into_iter()
        .filter_map(|(k, v)| Some(format!("org.opencontainers.image.{k}={}", v?)))
        .collect();
        for label in &labels {
            config.extend(["--label", label]);
        }
        config.push(&name);
        self.run(&config)?;

        // SOURCE_DATE_EPOCH (reproducible builds) fixes the creation time, hence the digests.
        let timestamp = std::env::var("SOURCE_DATE_EPOCH")
            .ok()
            .filter(|t| t.parse::<u64>().is_ok())
            .map(|t| format!("--timestamp={t}"));
        let mut commit = vec!["commit", "--quiet", "--format", "oci"];
        let policy = self.policy();
        commit.push(&policy);
        if let Some(t) = &timestamp {
            commit.push(t);
        }
        commit.push(&name);
        let image = self.run(&commit)?;
        ensure!(!image.is_empty(), "buildah commit printed no image ID");
        cleanup.image = Some(image.clone());

        if let Some(dir) = out.parent() {
            std::fs::create_dir_all(dir)?;
        }
        // Written next to `out` and renamed: readers never see half an archive.
        let partial = out.with_extension(format!("partial-{}", std::process::id()));
        let _ = std::fs::remove_file(&partial);
        let destination = format!("oci-archive:{}:{reference}", partial.display());
        self.run(&["push", "--quiet", &policy, &image, &destination])?;
        std::fs::rename(&partial, out)
            .with_context(|| format!("moving {} to {}", partial.display(), out.display()))?;
        Ok(())
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

fn output_text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tells_static_from_dynamic() {
        // This test binary is static exactly when built with crt-static (musl's default).
        let exe = std::env::current_exe().expect("current_exe");
        let result = ensure_static(&exe);
        assert_eq!(
            result.is_ok(),
            cfg!(target_feature = "crt-static"),
            "{result:?}"
        );
        if let Err(e) = result {
            assert!(e.to_string().contains("dynamically linked"), "{e}");
        }
    }

    #[test]
    fn rejects_non_elf_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("script");
        std::fs::write(&file, "#!/bin/sh\n").expect("write");
        let e = ensure_static(&file).expect_err("not ELF");
        assert!(e.to_string().contains("not a 64-bit"), "{e}");
    }
}
