//! Pushing an OCI archive into a registry with skopeo.

use std::path::Path;
use std::process::Command;

use crate::{Error, Result, on_path, output_of};

/// Whether skopeo, which [`push`] uses, is installed.
pub fn skopeo_available() -> bool {
    on_path("skopeo").is_some()
}

/// Copies the image of the OCI archive `archive` to `destination` (`host:port/repository:tag`)
/// of a registry served over plain HTTP, as local registries are.
pub fn push(archive: &Path, destination: &str) -> Result<()> {
    let skopeo = on_path("skopeo").ok_or(Error::MissingTool {
        tool: "skopeo",
        hint: "it copies images into registries (Debian and Ubuntu: `apt-get install skopeo`)",
    })?;
    if destination.contains("://") || !destination.contains('/') {
        return Err(Error::Invalid(format!(
            "{destination:?} is not host:port/repository:tag"
        )));
    }
    let source = format!("oci-archive:{}", archive.display());
    let target = format!("docker://{destination}");
    // The archive is ours and the registry is local: no signature policy to apply.
    output_of(
        Command::new(skopeo)
            .args([
                "copy",
                "--quiet",
                "--insecure-policy",
                "--dest-tls-verify=false",
            ])
            .args([&source, &target]),
        &format!("skopeo copy {source} {target}"),
    )?;
    Ok(())
}
