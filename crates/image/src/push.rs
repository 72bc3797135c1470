//! Pushing an OCI archive into a registry with skopeo.

use std::path::Path;
use std::process::Command;

use crate::{Error, Result, io_err, on_path, output_of};

/// Whether skopeo, which [`push`] uses, is installed.
pub fn skopeo_available() -> bool {
    on_path("skopeo").is_some()
}

/// Copies the image of the OCI archive `archive` to `destination` (`host:port/repository:tag`)
/// of a registry served over plain HTTP, as local registries are. Returns the digest of the
/// manifest written (`sha256:<hex>`): the registry stores it under that digest, so a reference
/// `repository@<digest>` names exactly this image, whatever the tag names later.
pub fn push(archive: &Path, destination: &str) -> Result<String> {
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
    let digest_file = tempfile::NamedTempFile::new()
        .map_err(io_err("creating a file for the pushed manifest's digest"))?;
    // The archive is ours and the registry is local: no signature policy to apply.
    output_of(
        Command::new(skopeo)
            .args([
                "copy",
                "--quiet",
                "--insecure-policy",
                "--dest-tls-verify=false",
            ])
            .arg("--digestfile")
            .arg(digest_file.path())
            .args([&source, &target]),
        &format!("skopeo copy {source} {target}"),
    )?;
    let written = std::fs::read_to_string(digest_file.path())
        .map_err(io_err("reading the pushed manifest's digest"))?;
    manifest_digest(&written).ok_or_else(|| {
        Error::Invalid(format!(
            "skopeo copy {source} {target} reported no sha256 digest but {written:?}"
        ))
    })
}

/// `text` as a manifest digest, `sha256:` and 64 lowercase hexadecimal digits (surrounding
/// white space ignored).
pub fn manifest_digest(text: &str) -> Option<String> {
    let text = text.trim();
    let hex = text.strip_prefix("sha256:")?;
    let valid = hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    valid.then(|| text.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_sha256_digests_are_manifest_digests() {
        let hex = "4c4246684a89e20a6a366eb38fee00bab90224963636228e6ff91ccdbe4d1373";
        assert_eq!(
            manifest_digest(&format!("sha256:{hex}\n")),
            Some(format!("sha256:{hex}"))
        );
        assert_eq!(manifest_digest(hex), None);
        assert_eq!(manifest_digest(&format!("sha512:{hex}")), None);
        assert_eq!(manifest_digest(&format!("sha256:{}", &hex[1..])), None);
        assert_eq!(
            manifest_digest(&format!("sha256:{}", hex.to_uppercase())),
            None
        );
        assert_eq!(manifest_digest(""), None);
    }
}
