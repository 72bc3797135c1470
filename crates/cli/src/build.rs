//! `operon manifests`, `operon bundle`, `operon build`: the project's own binary writes what is
//! derived from its Rust types, so the output always matches the code.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::project::Project;

/// `cargo` as Cargo itself names it when it runs us, else from PATH.
pub fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// Runs `cmd`, failing with `what` and its exit status.
pub fn run(what: &str, cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("starting {what}"))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}

/// `cargo run` of the project's binary with `args`, in the project directory. Cargo's progress
/// shows: the first build compiles kube-rs and the runtime, which takes minutes.
fn run_binary(project: &Project, args: &[&str]) -> Result<()> {
    println!(
        "operon: building {} to run `{} {}` (the first build compiles its dependencies: a few \
         minutes on 2 cores)",
        project.name,
        project.name,
        args.first().copied().unwrap_or_default()
    );
    let mut cmd = cargo();
    cmd.current_dir(&project.root)
        .args(["run", "--bin", &project.name, "--"])
        .args(args);
    run(&format!("{} {}", project.name, args.join(" ")), &mut cmd)
}

/// `operon manifests`: config/ from the Rust types.
pub fn manifests(project: &Project) -> Result<()> {
    run_binary(project, &["manifests", "--dir", "config"])
}

/// `operon bundle`: bundle/ (OLM registry+v1).
pub fn bundle(project: &Project, image: Option<&str>) -> Result<()> {
    let mut args = vec!["bundle", "--dir", "bundle"];
    if let Some(image) = image {
        args.extend(["--image", image]);
    }
    run_binary(project, &args)
}

/// `cargo build` of the project's binary (debug); returns its path.
pub fn debug_binary(project: &Project) -> Result<PathBuf> {
    let mut cmd = cargo();
    cmd.current_dir(&project.root)
        .args(["build", "--bin", &project.name]);
    run(&format!("cargo build --bin {}", project.name), &mut cmd)?;
    Ok(target_dir(&project.root)?.join("debug").join(&project.name))
}

/// The project's Cargo target directory.
pub fn target_dir(root: &Path) -> Result<PathBuf> {
    let metadata = cargo_metadata::MetadataCommand::new()
        .current_dir(root)
        .no_deps()
        .exec()
        .with_context(|| format!("running cargo metadata in {}", root.display()))?;
    Ok(metadata.target_directory.into_std_path_buf())
}

/// `operon build`: the static release binary and, where buildah is installed and `image` is
/// asked for, the container image as an OCI archive.
pub fn build(project: &Project, out: Option<&Path>, image: bool) -> Result<()> {
    if image && crate::image::buildah_available() {
        let archive = crate::image::build(&project.root, &project.name, out)?;
        println!("image: {}", archive.display());
    } else {
        let (triple, binary) = crate::image::static_binary(&project.root, &project.name)?;
        println!("binary: {} ({triple}, static)", binary.display());
        if image {
            println!(
                "no image: buildah is not installed. With a container engine: `podman build -t \
                 localhost/{}:v0.1.0 {}` (the Containerfile)",
                project.name,
                project.root.display()
            );
        }
    }
    Ok(())
}
