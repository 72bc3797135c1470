//! Container images of operators, built without a container engine or daemon, for any Cargo
//! project (a workspace or a single package) whose package has a binary of the same name.
//!
//! An operator's image holds one file: its statically linked binary, `FROM scratch`, run as the
//! distroless `nonroot` user 65532:65532 with `ENTRYPOINT ["/<package>"]` and `CMD ["run"]` —
//! what a Containerfile such as `operators/pod-operator/Containerfile` builds on machines with a
//! container engine.
//!
//! 1. **Static binary.** `cargo build --release --target <arch>-unknown-linux-musl` when that
//!    Rust target and a musl C compiler (`musl-gcc`, Debian's `musl-tools`, for ring's C parts)
//!    are installed; else the glibc target with `-C target-feature=+crt-static`. Either goes to
//!    `<target>/static` so that normal builds are not invalidated. The ELF file must have no
//!    program interpreter (`PT_INTERP`), i.e. need no dynamic loader or libc in the image.
//!    `OPERON_IMAGE_TARGET=<triple>` forces a target.
//! 2. **Image.** buildah, daemonless, with the vfs storage driver and its storage under
//!    `<target>/buildah`: `from scratch`, `copy`, `config`, `commit`, then `push` to an OCI
//!    archive (`<target>/images/<package>.oci.tar` unless another path is given). The working
//!    container and image are removed afterwards, so reruns start from the same state.
//!
//! `<target>` is the project's target directory as `cargo metadata` reports it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};

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

/// What `cargo metadata` tells about the package.
#[derive(Debug)]
struct Package {
    version: String,
    license: Option<String>,
    repository: Option<String>,
    target_dir: PathBuf,
}

/// Whether buildah, which [`build`] needs for the image, is installed.
pub fn buildah_available() -> bool {
    on_path("buildah").is_some()
}

/// Builds the image of `package` (a package of the Cargo project in `manifest_dir` with a binary
/// of the same name) as an OCI archive at `out` (default `<target>/images/<package>.oci.tar`)
/// and returns the archive's path.
pub fn build(manifest_dir: &Path, package: &str, out: Option<&Path>) -> Result<PathBuf> {
    let t0 = Instant::now();
    let info = package_info(manifest_dir, package)?;
    let out = match out {
        Some(p) => std::path::absolute(p)?,
        None => info
            .target_dir
            .join("images")
            .join(format!("{package}.oci.tar")),
    };
    ensure!(
        !out.to_string_lossy().contains(':'),
        "{}: buildah's oci-archive destination can't contain ':'",
        out.display()
    );
    // Before the (long) release build: without buildah it would be for nothing.
    let buildah = Buildah::new(&info.target_dir.join("buildah"))?;

    let (triple, binary) = build_static(manifest_dir, package, &info.target_dir)?;
    let binary_size = std::fs::metadata(&binary)
        .with_context(|| format!("reading {}", binary.display()))?
        .len();

    let reference = format!("{package}:{}", info.version);
    buildah.image(package, &info, &binary, &reference, &out)?;

    let archive_size = std::fs::metadata(&out)
        .with_context(|| format!("reading {}", out.display()))?
        .len();
    println!(
        "image: {reference} written to {} in {}\n\
         image:   OCI archive (gzip layer): {}\n\
         image:   binary /{package} ({triple}, static): {}",
        out.display(),
        elapsed(t0),
        size(archive_size),
        size(binary_size),
    );
    Ok(out)
}

/// Builds `package` of the Cargo project in `manifest_dir` statically linked, for release;
/// returns the target triple and the binary.
pub fn static_binary(manifest_dir: &Path, package: &str) -> Result<(String, PathBuf)> {
    let info = package_info(manifest_dir, package)?;
    build_static(manifest_dir, package, &info.target_dir)
}

fn size(bytes: u64) -> String {
    format!(
        "{:.1} MiB ({bytes} bytes)",
        bytes as f64 / (1024.0 * 1024.0)
    )
}

fn elapsed(since: Instant) -> String {
    let secs = since.elapsed().as_secs();
    if secs >= 60 {
        format!("{}m{:02}s", secs / 60, secs % 60)
    } else {
        format!("{:.1}s", since.elapsed().as_secs_f64())
    }
}

/// `cargo` (the one running us, when Cargo does) in `dir`.
fn cargo(dir: &Path) -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(dir);
    cmd
}

/// The package named `package` in the project of `manifest_dir` (it must have a binary of the
/// same name) and the project's target directory.
fn package_info(manifest_dir: &Path, package: &str) -> Result<Package> {
    let out = cargo(manifest_dir)
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .output()
        .with_context(|| format!("running cargo metadata in {}", manifest_dir.display()))?;
    ensure!(
        out.status.success(),
        "cargo metadata in {} failed: {}",
        manifest_dir.display(),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    let meta: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("parsing the output of cargo metadata")?;
    let packages = meta["packages"].as_array().cloned().unwrap_or_default();
    let Some(pkg) = packages.iter().find(|p| p["name"] == package) else {
        bail!(
            "no package named {package} in the Cargo project of {}",
            manifest_dir.display()
        );
    };
    let has_bin = pkg["targets"].as_array().is_some_and(|targets| {
        targets.iter().any(|t| {
            t["name"] == package
                && t["kind"]
                    .as_array()
                    .is_some_and(|k| k.contains(&"bin".into()))
        })
    });
    ensure!(has_bin, "package {package} has no binary named {package}");
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

/// Builds `package` statically linked into `<target_dir>/static`; returns the target triple and
/// the binary.
fn build_static(
    manifest_dir: &Path,
    package: &str,
    target_dir: &Path,
) -> Result<(String, PathBuf)> {
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
                "image: no {musl} Rust target or no musl C compiler (`rustup target add {musl}`, \
                 `apt-get install musl-tools`): linking glibc statically instead"
            );
            gnu.clone()
        }
    };

    let mut cmd = cargo(manifest_dir);
    // Build scripts (ring's) rerun when variables such as CARGO_MANIFEST_DIR change, and Cargo
    // sets those for the program calling this one (`cargo run`, `cargo xtask`, `cargo test`),
    // differently each time: without them, the build stays fresh however it is started.
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        if CARGO_SET_FOR_CRATES.contains(&&*key)
            || key.starts_with("CARGO_PKG_")
            || key.starts_with("CARGO_BIN_EXE_")
        {
            cmd.env_remove(&*key);
        }
    }
    cmd.args(["build", "--release", "--package", package, "--bin", package])
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
    let what = format!("cargo build --release --target {triple} ({package})");
    let t0 = Instant::now();
    let status = cmd.status().with_context(|| format!("running {what}"))?;
    ensure!(status.success(), "{what} failed ({status})");
    println!("image: {what} done in {}", elapsed(t0));

    let binary = target_dir
        .join("static")
        .join(&triple)
        .join("release")
        .join(package);
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
             (Debian and Ubuntu: `apt-get install buildah`; Fedora: `dnf install buildah`)",
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
        package_name: &str,
        package: &Package,
        binary: &Path,
        reference: &str,
        out: &Path,
    ) -> Result<()> {
        let name = format!("operon-image-{package_name}-{}", std::process::id());
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
        let path = format!("/{package_name}");
        self.run(&["copy", "--quiet", "--chmod", "0755", &name, &binary, &path])?;

        let entrypoint = serde_json::to_string(&[&path])?;
        let created_by = format!("operon image {package_name}");
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
            ("title", Some(package_name.to_string())),
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
    fn finds_the_package_and_the_target_directory() {
        let here = Path::new(env!("CARGO_MANIFEST_DIR"));
        let package = package_info(here, "operon").expect("operon has a binary named operon");
        assert_eq!(package.version, env!("CARGO_PKG_VERSION"));
        assert!(package.target_dir.is_absolute(), "{package:?}");

        let e = package_info(here, "no-such-package").expect_err("no package");
        assert!(
            e.to_string().contains("no package named no-such-package"),
            "{e}"
        );
        // A library-only package has nothing to put in an image.
        let e = package_info(here, "operon-runtime").expect_err("no binary");
        assert!(
            e.to_string().contains("no binary named operon-runtime"),
            "{e}"
        );
    }

    /// A Cargo project of one package, `hello`, with a binary of that name, in no workspace.
    fn hello_project() -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        let write = |path: &str, text: &str| {
            let path = dir.path().join(path);
            std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            std::fs::write(path, text).expect("write");
        };
        write(
            "Cargo.toml",
            "[package]\nname = \"hello\"\nversion = \"1.2.3\"\nedition = \"2021\"\n\
             license = \"MIT\"\n\n[workspace]\n",
        );
        write("src/main.rs", "fn main() {\n    println!(\"hello\");\n}\n");
        dir
    }

    /// Needs buildah, like `cargo xtask image`: without it the test fails, it never skips.
    #[test]
    fn builds_the_image_of_any_cargo_project() {
        let project = hello_project();
        let (triple, binary) = static_binary(project.path(), "hello").expect("static build");
        assert!(
            binary.ends_with(Path::new(&triple).join("release/hello")),
            "{}",
            binary.display()
        );
        let out = project.path().join("images/hello.oci.tar");
        let archive = build(project.path(), "hello", Some(&out)).expect("image build");
        assert_eq!(archive, out);
        let size = std::fs::metadata(&archive).expect("archive").len();
        assert!(size > 0, "empty archive");
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
