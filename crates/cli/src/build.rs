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
    println!(
        "operon: building {} (cargo build; cargo's progress follows)",
        project.name
    );
    let mut cmd = cargo();
    cmd.current_dir(&project.root)
        .args(["build", "--bin", &project.name]);
    run(&format!("cargo build --bin {}", project.name), &mut cmd)?;
    Ok(target_dir(&project.root)?.join("debug").join(&project.name))
}

/// The OCI archive `operon build` writes: `<target>/images/<name>.oci.tar`.
pub fn image_archive(project: &Project) -> Result<PathBuf> {
    Ok(target_dir(&project.root)?
        .join("images")
        .join(format!("{}.oci.tar", project.name)))
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

/// The project's image name: the manager's image in `config/default` (the project's
/// `deploy::IMAGE`, `localhost/<name>:v<version>`), the one `deploy --push` and `push` push.
pub fn image_name(project: &Project) -> Result<String> {
    if let Ok(objects) = crate::deploy::objects(&project.root, None)
        && let Some(image) = crate::kustomize::manager_image(&objects)
    {
        return Ok(image);
    }
    // No config/ yet: what `operon manifests` will write there.
    let manifest = project.root.join("Cargo.toml");
    let text = std::fs::read_to_string(&manifest)
        .with_context(|| format!("reading {}", manifest.display()))?;
    let doc: toml_edit::DocumentMut = text
        .parse()
        .with_context(|| format!("parsing {}", manifest.display()))?;
    let version = doc["package"]["version"].as_str().unwrap_or("0.1.0");
    Ok(format!("localhost/{}:v{version}", project.name))
}

/// `operon build`: the static release binary and, where buildah is installed and `image` is
/// asked for, the container image as an OCI archive.
pub fn build(project: &Project, out: Option<&Path>, image: bool) -> Result<()> {
    let name = image_name(project)?;
    if image && crate::image::buildah_available() {
        println!("build: image {name} of {}", project.name);
        // The archive names the image as the Deployment runs it and `push` pushes it.
        let archive = operon_image::operator::build_many_with(
            &project.root,
            &[&project.name],
            out.map(|o| vec![o.to_path_buf()]),
            operon_image::operator::RELEASE,
            &|_, image| Ok(image.named(name.clone())),
        )?
        .into_iter()
        .next()
        .context("the image build wrote no archive")?;
        println!(
            "image: {name} in {} (`operon push` or `operon deploy --push` pushes it as {name})",
            archive.display()
        );
    } else {
        println!("build: static binary of {}", project.name);
        let (triple, binary) = crate::image::static_binary(&project.root, &project.name)?;
        println!("binary: {} ({triple}, static)", binary.display());
        if image {
            println!(
                "no image: buildah is not installed. With a container engine: `podman build -t \
                 {name} {}` (the Containerfile)",
                project.root.display()
            );
        }
    }
    Ok(())
}

/// The bundle image's name: the project's image's repository with `-bundle`, same tag.
pub fn bundle_image_name(project: &Project) -> Result<String> {
    let image = image_name(project)?;
    let (repository, tag) = match image.rsplit_once(':') {
        Some((r, t)) if !t.contains('/') => (r, t),
        _ => (image.as_str(), "latest"),
    };
    let repository = repository.split('@').next().unwrap_or(repository);
    Ok(format!("{repository}-bundle:{tag}"))
}

/// `operon bundle-build`: the OLM bundle under bundle/ as an image (`FROM scratch`, the
/// bundle's files under /manifests and /metadata, its annotations as labels, as `opm` and
/// operator-sdk's bundle.Dockerfile make it), written as an OCI archive.
pub fn bundle_build(project: &Project, out: Option<&Path>) -> Result<PathBuf> {
    let bundle = project.root.join("bundle");
    let annotations_file = bundle.join("metadata").join("annotations.yaml");
    if !bundle.join("manifests").is_dir() || !annotations_file.is_file() {
        bail!(
            "{} has no bundle (manifests/ and metadata/annotations.yaml): run `operon bundle` \
             first",
            bundle.display()
        );
    }
    if !crate::image::buildah_available() {
        bail!("building the bundle's image needs buildah (`apt-get install buildah`)");
    }
    let text = std::fs::read_to_string(&annotations_file)
        .with_context(|| format!("reading {}", annotations_file.display()))?;
    let annotations: serde_json::Value = serde_saphyr::from_str(&text)
        .with_context(|| format!("parsing {}", annotations_file.display()))?;
    let name = bundle_image_name(project)?;
    let mut image = operon_image::Image::new(name.clone()).created_by("operon bundle-build");
    if let Some(labels) = annotations["annotations"].as_object() {
        for (key, value) in labels {
            if let Some(value) = value.as_str() {
                image = image.label(key, value);
            }
        }
    }
    for dir in ["manifests", "metadata"] {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(bundle.join(dir))
            .with_context(|| format!("reading bundle/{dir}"))?
            .map(|e| e.map(|e| e.path()))
            .collect::<std::io::Result<_>>()?;
        entries.sort();
        for file in entries.into_iter().filter(|p| p.is_file()) {
            let file_name = file
                .file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_default();
            image = image.file(&file, &format!("/{dir}/{file_name}"), 0o644);
        }
    }
    let target = target_dir(&project.root)?;
    let archive = match out {
        Some(out) => out.to_path_buf(),
        None => target
            .join("images")
            .join(format!("{}-bundle.oci.tar", project.name)),
    };
    println!("bundle-build: image {name} from bundle/");
    image
        .build(&target.join("buildah"), &archive)
        .with_context(|| format!("building the bundle image {name}"))?;
    println!("image: {name} in {}", archive.display());
    Ok(archive)
}
