//! An operator's OLM bundle image, `<registry>/<operator>-bundle:v<version>`, built as
//! `bundle/<operator>/bundle.Dockerfile` says (`FROM scratch`, its `LABEL`s, its `COPY`s of the
//! bundle's directories), with the project's image builder: no container engine, and the same
//! image `docker build -f bundle.Dockerfile bundle/<operator>` makes.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};
use operon_image::Image;

use crate::demo::target_dir;
use xtask::repo_root;

/// The bundle image's reference beside the operator's (`localhost/operon/<operator>:v…`).
pub fn reference(operator: &str) -> String {
    format!(
        "localhost/operon/{operator}-bundle:v{}",
        env!("CARGO_PKG_VERSION")
    )
}

/// The image `dir/bundle.Dockerfile` describes; only what `operator-sdk generate bundle`
/// writes there is understood (`FROM scratch`, `LABEL k=v`, `COPY <dir> /<dir>/`).
pub fn image(dir: &Path, reference: &str) -> Result<Image> {
    let path = dir.join("bundle.Dockerfile");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let mut image = Image::new(reference).created_by("bundle.Dockerfile");
    let mut from_scratch = false;
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (instruction, rest) = line.split_once(' ').unwrap_or((line, ""));
        match instruction {
            "FROM" if rest == "scratch" => from_scratch = true,
            "LABEL" => {
                let (key, value) = rest
                    .split_once('=')
                    .with_context(|| format!("{}: {line}", path.display()))?;
                image = image.label(key, value);
            }
            "COPY" => {
                let (source, destination) = rest
                    .split_once(' ')
                    .with_context(|| format!("{}: {line}", path.display()))?;
                image = copy(image, &dir.join(source), destination.trim_end_matches('/'))?;
            }
            _ => bail!("{}: not understood: {line}", path.display()),
        }
    }
    ensure!(from_scratch, "{}: not FROM scratch", path.display());
    Ok(image)
}

/// Every file under `source` at `destination` (directories 0755, files 0644, as a build
/// context's files land in an image).
fn copy(mut image: Image, source: &Path, destination: &str) -> Result<Image> {
    image = image.dir(destination, 0o755);
    let mut entries: Vec<PathBuf> = std::fs::read_dir(source)
        .with_context(|| format!("reading {}", source.display()))?
        .map(|e| Ok(e?.path()))
        .collect::<Result<_>>()?;
    entries.sort();
    for entry in entries {
        let name = entry
            .file_name()
            .context("no file name")?
            .to_string_lossy()
            .to_string();
        let target = format!("{destination}/{name}");
        if entry.is_dir() {
            image = copy(image, &entry, &target)?;
        } else {
            image = image.file(&entry, &target, 0o644);
        }
    }
    Ok(image)
}

/// `cargo xtask bundle-image`: each operator's bundle image as an OCI archive, by default
/// `<target>/images/<operator>-bundle.oci.tar`.
pub fn build(operators: &[String], out: Option<PathBuf>) -> Result<Vec<PathBuf>> {
    ensure!(
        out.is_none() || operators.len() == 1,
        "--out names one archive: give one operator"
    );
    let target = target_dir()?;
    let mut archives = Vec::new();
    for operator in operators {
        let dir = repo_root().join("bundle").join(operator);
        let archive = match &out {
            Some(out) => std::path::absolute(out)?,
            None => target
                .join("images")
                .join(format!("{operator}-bundle.oci.tar")),
        };
        if let Some(parent) = archive.parent() {
            std::fs::create_dir_all(parent)?;
        }
        image(&dir, &reference(operator))?.build(&target.join("buildah"), &archive)?;
        archives.push(archive);
    }
    Ok(archives)
}
