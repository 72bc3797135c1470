//! Images made on this machine, never downloaded: what the node itself needs (the Pod sandbox,
//! the DNS add-on), busybox for the talk's Pod, and openssl for TLS checks. Each is built once
//! with buildah into the cache (`<cache>/images`) and rebuilt when its files change.

use std::path::{Path, PathBuf};
use std::process::Command;

use operon_image::Image;

use crate::{Error, cache_root};

/// The sandbox ("pause") image containerd starts for every Pod.
pub const PAUSE: &str = "localhost/operon/pause:1.0";
/// The DNS add-on's image.
pub const COREDNS: &str = "localhost/operon/coredns:v1.15.0";
pub const COREDNS_VERSION: &str = "v1.15.0";

/// An image and the references (as Pods name them) it is pushed under.
pub struct SystemImage {
    pub image: Image,
    pub references: Vec<String>,
}

impl SystemImage {
    /// The OCI archive, built when missing or out of date.
    pub fn archive(&self) -> Result<PathBuf, Error> {
        let dir = cache_root().join("images");
        let file = self
            .image
            .reference()
            .replace(|c: char| !c.is_ascii_alphanumeric() && c != '.', "-");
        let out = dir.join(format!("{file}.oci.tar"));
        self.image
            .build_cached(&dir.join("buildah"), &out)
            .map_err(|e| Error::Node(format!("building image {}: {e}", self.image.reference())))?;
        Ok(out)
    }
}

fn busybox_binary() -> Result<PathBuf, Error> {
    let path = PathBuf::from("/bin/busybox");
    operon_image::operator::ensure_static(&path).map_err(|e| {
        Error::Node(format!(
            "{e}. The images need a static busybox: install Debian's busybox-static \
             (`cargo xtask setup` does)"
        ))
    })?;
    Ok(path)
}

/// `v1.35.0` from `BusyBox v1.35.0 (Debian …) multi-call binary.`
fn busybox_version(busybox: &Path) -> Result<String, Error> {
    let out = Command::new(busybox).output().map_err(|source| Error::Io {
        context: format!("running {}", busybox.display()),
        source,
    })?;
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    text.split_whitespace()
        .find_map(|w| {
            w.strip_prefix('v')
                .filter(|v| v.starts_with(|c: char| c.is_ascii_digit()))
        })
        .map(|v| v.trim_end_matches(',').to_string())
        .ok_or_else(|| Error::Node(format!("no version in busybox's banner: {text:?}")))
}

/// busybox, `FROM scratch`, with a link for every applet (`sh`, `sleep`, `nslookup`, …) where
/// busybox's own list puts it. Tagged `latest` and with its version, as Docker Hub's is.
pub fn busybox() -> Result<SystemImage, Error> {
    let binary = busybox_binary()?;
    let version = busybox_version(&binary)?;
    let out = Command::new(&binary)
        .arg("--list-full")
        .output()
        .map_err(|source| Error::Io {
            context: "listing busybox's applets".into(),
            source,
        })?;
    let mut image = Image::new(format!("busybox:{version}"))
        .file(&binary, "/bin/busybox", 0o755)
        .dir("/tmp", 0o1777)
        .dir("/root", 0o700);
    for applet in String::from_utf8_lossy(&out.stdout).lines() {
        let applet = applet.trim();
        // `linuxrc` is for an initrd, and `bin/busybox` is the binary itself.
        if applet.is_empty() || applet == "linuxrc" || applet == "bin/busybox" {
            continue;
        }
        image = image.symlink(&format!("/{applet}"), "/bin/busybox");
    }
    let image = image
        .file(write_etc("busybox-passwd", PASSWD)?, "/etc/passwd", 0o644)
        .file(write_etc("busybox-group", GROUP)?, "/etc/group", 0o644)
        .cmd(&["sh"])
        .created_by("operon-envtest busybox (Debian busybox-static)");
    let minor = version
        .rsplit_once('.')
        .map(|(m, _)| m.to_string())
        .unwrap_or_else(|| version.clone());
    Ok(SystemImage {
        image,
        references: vec![
            "docker.io/library/busybox:latest".into(),
            format!("docker.io/library/busybox:{minor}"),
            format!("docker.io/library/busybox:{version}"),
        ],
    })
}

const PASSWD: &str =
    "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n";
const GROUP: &str = "root:x:0:\nnogroup:x:65534:\n";

/// A small file for an image, kept in the cache so its modification time (and so the image's
/// fingerprint) only changes with its content.
fn write_etc(name: &str, text: &str) -> Result<PathBuf, Error> {
    let dir = cache_root().join("images").join("files");
    let path = dir.join(name);
    if std::fs::read_to_string(&path).ok().as_deref() != Some(text) {
        std::fs::create_dir_all(&dir)
            .and_then(|()| std::fs::write(&path, text))
            .map_err(|source| Error::Io {
                context: format!("writing {}", path.display()),
                source,
            })?;
    }
    Ok(path)
}

/// The Pod sandbox: a process that sleeps until killed (containerd stops sandboxes with
/// SIGKILL). busybox's `sleep` does that; the image holds nothing else.
pub fn pause() -> Result<SystemImage, Error> {
    let binary = busybox_binary()?;
    let image = Image::new("pause:1.0")
        .file(&binary, "/busybox", 0o755)
        .entrypoint(&["/busybox", "sleep", "infinity"])
        .user("65535:65535")
        .created_by("operon-envtest pause (busybox sleep)");
    Ok(SystemImage {
        image,
        references: vec![PAUSE.into()],
    })
}

/// CoreDNS, built from its Go module by `cargo xtask k8s build` (static, CGO off), as the
/// nonroot user: it binds port 53 without capabilities because containerd lets Pods bind low
/// ports.
pub fn coredns(binary: &Path) -> Result<SystemImage, Error> {
    let image = Image::new(format!("coredns:{COREDNS_VERSION}"))
        .file(binary, "/coredns", 0o755)
        .user("65532:65532")
        .entrypoint(&["/coredns"])
        .created_by("operon-envtest coredns (tools/coredns)");
    Ok(SystemImage {
        image,
        references: vec![COREDNS.into()],
    })
}

/// Debian's `openssl` command with the shared libraries it loads, for TLS checks from Pods
/// (`s_server`, `s_client -verify_return_error`). Named `localhost/operon/openssl:<version>`.
pub fn openssl() -> Result<SystemImage, Error> {
    let openssl = PathBuf::from("/usr/bin/openssl");
    let version = Command::new(&openssl)
        .arg("version")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .nth(1)
                .map(str::to_string)
        })
        .ok_or_else(|| Error::Node("openssl is not installed (Debian: openssl)".into()))?;
    let mut image = Image::new(format!("openssl:{version}"))
        .file(&openssl, "/usr/bin/openssl", 0o755)
        .dir("/tmp", 0o1777)
        .entrypoint(&["/usr/bin/openssl"])
        .user("65532:65532")
        .created_by("operon-envtest openssl (Debian openssl and its libraries)");
    for library in shared_libraries(&openssl)? {
        let path = library.display().to_string();
        image = image.file(&library, &path, 0o755);
    }
    Ok(SystemImage {
        image,
        references: vec![format!("localhost/operon/openssl:{version}")],
    })
}

/// The libraries `binary` loads, and its loader, as `ldd` resolves them.
fn shared_libraries(binary: &Path) -> Result<Vec<PathBuf>, Error> {
    let out = Command::new("ldd")
        .arg(binary)
        .output()
        .map_err(|source| Error::Io {
            context: format!("running ldd {}", binary.display()),
            source,
        })?;
    let mut libraries = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        // "libssl.so.3 => /lib/x86_64-linux-gnu/libssl.so.3 (0x…)" or "/lib64/ld-linux… (0x…)"
        let path = match line.split_once("=>") {
            Some((_, right)) => right.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(path) = path.filter(|p| p.starts_with('/')) {
            libraries.push(PathBuf::from(path));
        }
    }
    if libraries.is_empty() {
        return Err(Error::Node(format!(
            "ldd found no libraries for {}",
            binary.display()
        )));
    }
    Ok(libraries)
}

/// Where `reference` (as a Pod names it) lives in the local registry, which serves every
/// registry host: `localhost/x`, `docker.io/x` and `quay.io/x` are all its `x` (Docker Hub's
/// official images under `library/`, as Docker Hub names them).
pub fn registry_path(reference: &str) -> Result<String, Error> {
    let (first, rest) = reference.split_once('/').unwrap_or(("", reference));
    let host_like = first.contains('.') || first.contains(':') || first == "localhost";
    let (host, path) = if host_like {
        (first, rest.to_string())
    } else if first.is_empty() {
        ("docker.io", rest.to_string())
    } else {
        ("docker.io", reference.to_string())
    };
    if path.is_empty() {
        return Err(Error::Node(format!("{reference:?} names no image")));
    }
    let path = if host == "docker.io" && !path.contains('/') {
        format!("library/{path}")
    } else {
        path
    };
    let tagged = path
        .rsplit('/')
        .next()
        .is_some_and(|last| last.contains(':') || last.contains('@'));
    Ok(if tagged {
        path
    } else {
        format!("{path}:latest")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_map_to_registry_paths() -> Result<(), Error> {
        assert_eq!(registry_path("busybox")?, "library/busybox:latest");
        assert_eq!(registry_path("busybox:1.35")?, "library/busybox:1.35");
        assert_eq!(
            registry_path("docker.io/library/busybox:1.35")?,
            "library/busybox:1.35"
        );
        assert_eq!(
            registry_path("docker.io/prom/prometheus:v3")?,
            "prom/prometheus:v3"
        );
        assert_eq!(
            registry_path("localhost/operon/pod-operator:v0.1.0")?,
            "operon/pod-operator:v0.1.0"
        );
        assert_eq!(registry_path("quay.io/x/y:1")?, "x/y:1");
        assert!(registry_path("quay.io/").is_err());
        Ok(())
    }

    #[test]
    fn busybox_version_comes_from_its_banner() -> Result<(), Error> {
        let v = busybox_version(&busybox_binary()?)?;
        assert!(v.split('.').count() == 3, "{v}");
        Ok(())
    }
}
