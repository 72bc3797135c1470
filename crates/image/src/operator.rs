//! Operators' images, for any Cargo project (a workspace or a single package) whose package has
//! a binary of the same name.
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
//! 2. **Image.** [`Image`] with buildah, its storage under `<target>/buildah`, written as an OCI
//!    archive (`<target>/images/<package>.oci.tar` unless another path is given).
//!
//! `<target>` is the project's target directory as `cargo metadata` reports it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use crate::{Error, Image, Result, elapsed, io_err, on_path, output_of};

/// The user of distroless images' `nonroot`.
pub const USER: &str = "65532:65532";

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

/// What `cargo metadata` tells about a package.
#[derive(Debug)]
struct Package {
    version: String,
    license: Option<String>,
    repository: Option<String>,
    target_dir: PathBuf,
}

/// Builds the image of `package` (a package of the Cargo project in `manifest_dir` with a binary
/// of the same name) as an OCI archive at `out` (default `<target>/images/<package>.oci.tar`)
/// and returns the archive's path.
pub fn build(manifest_dir: &Path, package: &str, out: Option<&Path>) -> Result<PathBuf> {
    build_many(manifest_dir, &[package], out.map(|o| vec![o.to_path_buf()]))
        .map(|mut archives| archives.remove(0))
}

/// [`build`] for several packages of one project with a single `cargo build` (their
/// dependencies compile once). `outs`, when given, has one path per package.
pub fn build_many(
    manifest_dir: &Path,
    packages: &[&str],
    outs: Option<Vec<PathBuf>>,
) -> Result<Vec<PathBuf>> {
    build_many_with_profile(manifest_dir, packages, outs, RELEASE)
}

/// The Cargo profile of published images.
pub const RELEASE: &str = "release";

/// [`build_many`] with the binaries built in Cargo profile `profile` (`release`, or one the
/// project defines, such as a quicker one for a local cluster's images).
pub fn build_many_with_profile(
    manifest_dir: &Path,
    packages: &[&str],
    outs: Option<Vec<PathBuf>>,
    profile: &str,
) -> Result<Vec<PathBuf>> {
    build_many_with(manifest_dir, packages, outs, profile, &|_, image| Ok(image))
}

/// [`build_many_with_profile`], with `customize` adding to each package's image (files its
/// binary reads at run time, say) before it is built.
pub fn build_many_with(
    manifest_dir: &Path,
    packages: &[&str],
    outs: Option<Vec<PathBuf>>,
    profile: &str,
    customize: &dyn Fn(&str, Image) -> Result<Image>,
) -> Result<Vec<PathBuf>> {
    let t0 = Instant::now();
    if packages.is_empty() {
        return Ok(Vec::new());
    }
    let infos = packages
        .iter()
        .map(|p| package_info(manifest_dir, p))
        .collect::<Result<Vec<_>>>()?;
    let target_dir = infos[0].target_dir.clone();
    let outs = match outs {
        Some(outs) if outs.len() == packages.len() => outs
            .iter()
            .map(|o| std::path::absolute(o).map_err(io_err(format!("resolving {}", o.display()))))
            .collect::<Result<Vec<_>>>()?,
        Some(_) => {
            return Err(Error::Invalid(
                "one output path per package is needed".into(),
            ));
        }
        None => packages
            .iter()
            .map(|p| target_dir.join("images").join(format!("{p}.oci.tar")))
            .collect(),
    };
    // Before the (long) release build: without buildah it would be for nothing.
    crate::buildah::Buildah::new(&target_dir.join("buildah"))?;
    let (triple, binaries) = build_static(manifest_dir, packages, &target_dir, profile)?;
    for (((package, info), binary), out) in packages.iter().zip(&infos).zip(&binaries).zip(&outs) {
        // An archive already built from the same binary and configuration is kept as it is.
        customize(package, image_of(package, info, binary))?
            .build_cached(&target_dir.join("buildah"), out)?;
        let binary_size = file_size(binary)?;
        let archive_size = file_size(out)?;
        println!(
            "image:   OCI archive (gzip layer): {}\n\
             image:   binary /{package} ({triple}, static): {}",
            size(archive_size),
            size(binary_size),
        );
    }
    println!(
        "image: {} image(s) built in {}",
        packages.len(),
        elapsed(t0)
    );
    Ok(outs)
}

/// The image of an operator's binary.
fn image_of(package: &str, info: &Package, binary: &Path) -> Image {
    let path = format!("/{package}");
    let mut image = Image::new(format!("{package}:{}", info.version))
        .file(binary, &path, 0o755)
        .user(USER)
        .entrypoint(&[&path])
        .cmd(&["run"])
        .created_by(&format!("operon image {package}"));
    for (key, value) in [
        ("title", Some(package.to_string())),
        ("version", Some(info.version.clone())),
        ("licenses", info.license.clone()),
        ("source", info.repository.clone()),
    ] {
        if let Some(value) = value {
            image = image.label(&format!("org.opencontainers.image.{key}"), &value);
        }
    }
    image
}

fn file_size(path: &Path) -> Result<u64> {
    Ok(std::fs::metadata(path)
        .map_err(io_err(format!("reading {}", path.display())))?
        .len())
}

/// Builds `package` of the Cargo project in `manifest_dir` statically linked, for release;
/// returns the target triple and the binary.
pub fn static_binary(manifest_dir: &Path, package: &str) -> Result<(String, PathBuf)> {
    let info = package_info(manifest_dir, package)?;
    let (triple, mut binaries) = build_static(manifest_dir, &[package], &info.target_dir, RELEASE)?;
    Ok((triple, binaries.remove(0)))
}

fn size(bytes: u64) -> String {
    format!(
        "{:.1} MiB ({bytes} bytes)",
        bytes as f64 / (1024.0 * 1024.0)
    )
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
    let out = output_of(
        cargo(manifest_dir).args(["metadata", "--format-version", "1", "--no-deps"]),
        &format!("cargo metadata in {}", manifest_dir.display()),
    )?;
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| Error::Invalid(format!("parsing the output of cargo metadata: {e}")))?;
    let packages = meta["packages"].as_array().cloned().unwrap_or_default();
    let Some(pkg) = packages.iter().find(|p| p["name"] == package) else {
        return Err(Error::Invalid(format!(
            "no package named {package} in the Cargo project of {}",
            manifest_dir.display()
        )));
    };
    let has_bin = pkg["targets"].as_array().is_some_and(|targets| {
        targets.iter().any(|t| {
            t["name"] == package
                && t["kind"]
                    .as_array()
                    .is_some_and(|k| k.contains(&"bin".into()))
        })
    });
    if !has_bin {
        return Err(Error::Invalid(format!(
            "package {package} has no binary named {package}"
        )));
    }
    let string = |v: &serde_json::Value| v.as_str().map(str::to_string);
    Ok(Package {
        version: string(&pkg["version"])
            .ok_or_else(|| Error::Invalid(format!("package {package} has no version")))?,
        license: string(&pkg["license"]),
        repository: string(&pkg["repository"]),
        target_dir: meta["target_directory"]
            .as_str()
            .map(PathBuf::from)
            .ok_or_else(|| Error::Invalid("cargo metadata has no target_directory".into()))?,
    })
}

/// Whether the Rust standard library for `triple` is installed (`rustup target add`).
fn rust_target_installed(triple: &str) -> bool {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    operon_assets::rust_target_installed(Path::new(&rustc), None, triple)
}

/// Builds `packages` statically linked into `<target_dir>/static`; returns the target triple
/// and the binaries, in the order of `packages`.
fn build_static(
    manifest_dir: &Path,
    packages: &[&str],
    target_dir: &Path,
    profile: &str,
) -> Result<(String, Vec<PathBuf>)> {
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
    cmd.args(["build", "--profile", profile]);
    for package in packages {
        cmd.args(["--package", package, "--bin", package]);
    }
    cmd.arg("--target")
        .arg(&triple)
        .arg("--target-dir")
        .arg(target_dir.join("static"))
        // Symbols only matter to debuggers; the Kubernetes binaries are stripped too (-s -w).
        .env(
            format!(
                "CARGO_PROFILE_{}_STRIP",
                profile.to_uppercase().replace('-', "_")
            ),
            "symbols",
        );
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
    let what = format!(
        "cargo build --profile {profile} --target {triple} ({})",
        packages.join(", ")
    );
    println!("image: {what}: cargo's progress follows (a first build takes minutes)");
    let t0 = Instant::now();
    let status = cmd.status().map_err(io_err(format!("running {what}")))?;
    if !status.success() {
        return Err(Error::Failed {
            what,
            status: status.to_string(),
            output: "(printed above)".into(),
        });
    }
    println!("image: {what} done in {}", elapsed(t0));

    let binaries = packages
        .iter()
        .map(|package| {
            let binary = target_dir
                .join("static")
                .join(&triple)
                .join(profile)
                .join(package);
            ensure_static(&binary).map(|()| binary)
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((triple, binaries))
}

/// Fails unless `path` is an ELF executable without a program interpreter (`PT_INTERP`): a
/// static (or static-pie) binary that runs in an empty image.
pub fn ensure_static(path: &Path) -> Result<()> {
    const PT_INTERP: u32 = 3;
    let elf = std::fs::read(path).map_err(io_err(format!("reading {}", path.display())))?;
    let u16_at = |at: usize| -> Option<usize> {
        Some(u16::from_le_bytes(elf.get(at..at + 2)?.try_into().ok()?).into())
    };
    let u32_at = |at: usize| -> Option<u32> {
        Some(u32::from_le_bytes(elf.get(at..at + 4)?.try_into().ok()?))
    };
    let u64_at = |at: usize| -> Option<usize> {
        usize::try_from(u64::from_le_bytes(elf.get(at..at + 8)?.try_into().ok()?)).ok()
    };
    if elf.get(..6) != Some(b"\x7fELF\x02\x01".as_slice()) {
        return Err(Error::Invalid(format!(
            "{} is not a 64-bit little-endian ELF file",
            path.display()
        )));
    }
    let headers = (|| {
        let (offset, size, count) = (u64_at(0x20)?, u16_at(0x36)?, u16_at(0x38)?);
        (0..count)
            .map(|i| u32_at(offset + i * size))
            .collect::<Option<Vec<u32>>>()
    })()
    .ok_or_else(|| Error::Invalid(format!("{}: truncated ELF program headers", path.display())))?;
    if headers.contains(&PT_INTERP) {
        return Err(Error::Invalid(format!(
            "{} is dynamically linked (it has a program interpreter): it can't run FROM scratch",
            path.display()
        )));
    }
    Ok(())
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
        let root = here.join("../..");
        let package = package_info(&root, "pod-operator").expect("pod-operator has a binary");
        assert!(package.target_dir.is_absolute(), "{package:?}");

        let e = package_info(&root, "no-such-package").expect_err("no package");
        assert!(
            e.to_string().contains("no package named no-such-package"),
            "{e}"
        );
        // A library-only package has nothing to put in an image.
        let e = package_info(&root, "operon-runtime").expect_err("no binary");
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
