//! Images made on this machine, never downloaded: what the node itself needs (the Pod sandbox,
//! the DNS add-on), busybox for the talk's Pod, openssl for TLS checks, and the monitoring
//! stack ([`monitoring`]). Each is built once with buildah into the cache (`<cache>/images`)
//! and rebuilt when its files change.

use std::path::{Path, PathBuf};
use std::process::Command;

use operon_assets::{
    ALERTMANAGER_IMAGE, ALERTMANAGER_VERSION, KUBE_STATE_METRICS_IMAGE, KUBE_STATE_METRICS_VERSION,
    NODE_EXPORTER_IMAGE, NODE_EXPORTER_VERSION, PROMETHEUS_CONFIG_RELOADER_IMAGE, PROMETHEUS_IMAGE,
    PROMETHEUS_OPERATOR_IMAGE, PROMETHEUS_OPERATOR_VERSION, PROMETHEUS_VERSION,
};
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

/// The uid:gid upstream's monitoring images run as (`nobody`).
const NOBODY: &str = "65534:65534";

/// The monitoring stack's six images, tagged as `operon_assets::MONITORING_IMAGES` name them:
/// the Prometheus Operator, its config reloader and kube-state-metrics from the static Go
/// binaries `cargo xtask k8s build` puts in `bin_dir`; Prometheus, Alertmanager and
/// node_exporter from Debian's packages with their shared libraries. Their layouts are
/// upstream's, which the Prometheus Operator's Pods expect (`/bin/prometheus`,
/// `/etc/prometheus`, data in `/prometheus`, …).
pub fn monitoring(bin_dir: &Path) -> Result<Vec<SystemImage>, Error> {
    Ok(vec![
        prometheus_operator(bin_dir)?,
        prometheus_config_reloader(bin_dir)?,
        kube_state_metrics(bin_dir)?,
        prometheus(bin_dir)?,
        alertmanager()?,
        node_exporter()?,
    ])
}

/// The Prometheus Operator (`<bin_dir>/prometheus-operator`) as `/bin/operator`.
pub fn prometheus_operator(bin_dir: &Path) -> Result<SystemImage, Error> {
    go_image(
        bin_dir,
        "prometheus-operator",
        "--version",
        PROMETHEUS_OPERATOR_VERSION,
        "/bin/operator",
        PROMETHEUS_OPERATOR_IMAGE,
    )
}

/// The config reloader sidecar the Prometheus Operator adds to Prometheus and Alertmanager Pods,
/// as `/bin/prometheus-config-reloader`.
pub fn prometheus_config_reloader(bin_dir: &Path) -> Result<SystemImage, Error> {
    go_image(
        bin_dir,
        "prometheus-config-reloader",
        "--version",
        PROMETHEUS_OPERATOR_VERSION,
        "/bin/prometheus-config-reloader",
        PROMETHEUS_CONFIG_RELOADER_IMAGE,
    )
}

/// kube-state-metrics as `/kube-state-metrics`.
pub fn kube_state_metrics(bin_dir: &Path) -> Result<SystemImage, Error> {
    go_image(
        bin_dir,
        "kube-state-metrics",
        // A command, not a flag.
        "version",
        KUBE_STATE_METRICS_VERSION,
        "/kube-state-metrics",
        KUBE_STATE_METRICS_IMAGE,
    )
}

/// A static Go binary of `bin_dir` alone at `path`, run as `nobody`.
/// `<bin_dir>/<name>`, static and of `version` (as `<name> <version_arg>` prints it).
fn go_binary(
    bin_dir: &Path,
    name: &str,
    version_arg: &str,
    version: &str,
) -> Result<PathBuf, Error> {
    let binary = bin_dir.join(name);
    operon_image::operator::ensure_static(&binary).map_err(|e| {
        Error::Node(format!(
            "{e}. The monitoring images need {name} built from its Go module: run \
             `cargo xtask k8s build`"
        ))
    })?;
    check_version(
        &binary,
        version_arg,
        &format!("{name} (Go module)"),
        version,
    )?;
    Ok(binary)
}

fn go_image(
    bin_dir: &Path,
    name: &str,
    version_arg: &str,
    version: &str,
    path: &str,
    reference: &str,
) -> Result<SystemImage, Error> {
    let binary = go_binary(bin_dir, name, version_arg, version)?;
    let image = with_nobody(Image::new(format!("{name}:{version}")))?
        .file(&binary, path, 0o755)
        .user(NOBODY)
        .entrypoint(&[path])
        .created_by(&format!("operon-envtest {name} (tools/monitoring)"));
    Ok(SystemImage {
        image,
        references: vec![reference.into()],
    })
}

/// Prometheus (`<bin_dir>/prometheus`, built from its module) as `/bin/prometheus`, with a
/// minimal configuration (it scrapes itself) at upstream's `/etc/prometheus/prometheus.yml` and
/// its data in `/prometheus`, `nobody`'s. The Prometheus Operator overrides all three.
pub fn prometheus(bin_dir: &Path) -> Result<SystemImage, Error> {
    let binary = go_binary(bin_dir, "prometheus", "--version", PROMETHEUS_VERSION)?;
    let image = Image::new(format!("prometheus:{PROMETHEUS_VERSION}"))
        .file(&binary, "/bin/prometheus", 0o755)
        .dir("/etc/prometheus", 0o755)
        .file(
            write_etc("prometheus.yml", PROMETHEUS_CONFIG)?,
            "/etc/prometheus/prometheus.yml",
            0o644,
        )
        .owned_dir("/prometheus", 0o755, NOBODY);
    let image = with_nobody(image)?
        .user(NOBODY)
        .workdir("/prometheus")
        .entrypoint(&["/bin/prometheus"])
        .cmd(&[
            "--config.file=/etc/prometheus/prometheus.yml",
            "--storage.tsdb.path=/prometheus",
        ])
        .created_by("operon-envtest prometheus (its Go module, Kubernetes discovery only)");
    Ok(SystemImage {
        image,
        references: vec![PROMETHEUS_IMAGE.into()],
    })
}

/// Debian's Alertmanager as `/bin/alertmanager`, with a configuration that drops every alert at
/// upstream's `/etc/alertmanager/alertmanager.yml` and its data in `/alertmanager`.
pub fn alertmanager() -> Result<SystemImage, Error> {
    let binary = debian_binary(
        "/usr/bin/prometheus-alertmanager",
        "prometheus-alertmanager",
        ALERTMANAGER_VERSION,
    )?;
    let mut image = with_libraries(
        Image::new(format!("alertmanager:{ALERTMANAGER_VERSION}")),
        &binary,
    )?;
    // Debian's build reads what upstream's embeds from here: the notification templates
    // (without default.tmpl it exits on loading any configuration) and the page it serves
    // in place of the web UI.
    for file in ALERTMANAGER_SHARED_FILES {
        let path = Path::new(ALERTMANAGER_SHARED).join(file);
        if !path.is_file() {
            return Err(Error::Node(format!(
                "{} is missing: reinstall Debian's prometheus-alertmanager",
                path.display()
            )));
        }
        let inside = path.display().to_string();
        image = image.file(&path, &inside, 0o644);
    }
    let image = image
        .file(&binary, "/bin/alertmanager", 0o755)
        .dir("/etc/alertmanager", 0o755)
        .file(
            write_etc("alertmanager.yml", ALERTMANAGER_CONFIG)?,
            "/etc/alertmanager/alertmanager.yml",
            0o644,
        )
        .owned_dir("/alertmanager", 0o755, NOBODY);
    let image = with_nobody(image)?
        .user(NOBODY)
        .workdir("/alertmanager")
        .entrypoint(&["/bin/alertmanager"])
        .cmd(&[
            "--config.file=/etc/alertmanager/alertmanager.yml",
            "--storage.path=/alertmanager",
        ])
        .created_by(
            "operon-envtest alertmanager (Debian prometheus-alertmanager and its libraries)",
        );
    Ok(SystemImage {
        image,
        references: vec![ALERTMANAGER_IMAGE.into()],
    })
}

/// Debian's node_exporter as `/bin/node_exporter`.
pub fn node_exporter() -> Result<SystemImage, Error> {
    let binary = debian_binary(
        "/usr/bin/prometheus-node-exporter",
        "prometheus-node-exporter",
        NODE_EXPORTER_VERSION,
    )?;
    let image = with_libraries(
        Image::new(format!("node-exporter:{NODE_EXPORTER_VERSION}")),
        &binary,
    )?
    .file(&binary, "/bin/node_exporter", 0o755);
    let image = with_nobody(image)?
        .user(NOBODY)
        .entrypoint(&["/bin/node_exporter"])
        .created_by(
            "operon-envtest node-exporter (Debian prometheus-node-exporter and its libraries)",
        );
    Ok(SystemImage {
        image,
        references: vec![NODE_EXPORTER_IMAGE.into()],
    })
}

/// Where Debian's Alertmanager looks for the files upstream's binary embeds.
const ALERTMANAGER_SHARED: &str = "/usr/share/prometheus/alertmanager";
const ALERTMANAGER_SHARED_FILES: &[&str] = &[
    "default.tmpl",
    "email.tmpl",
    "no-ui/index.html",
    "no-ui/favicon.ico",
];

/// Prometheus scraping itself: enough to start; the Prometheus Operator passes its own file.
const PROMETHEUS_CONFIG: &str = "global:\n  scrape_interval: 30s\nscrape_configs:\n  - job_name: prometheus\n    static_configs:\n      - targets: [\"localhost:9090\"]\n";
/// One receiver that sends nowhere: enough to start; the Prometheus Operator passes its own.
const ALERTMANAGER_CONFIG: &str = "route:\n  receiver: \"null\"\nreceivers:\n  - name: \"null\"\n";

/// `binary`, a program of the Debian `package`, checked to be `pinned`'s release.
fn debian_binary(binary: &str, package: &str, pinned: &str) -> Result<PathBuf, Error> {
    let path = PathBuf::from(binary);
    if !path.is_file() {
        return Err(Error::Node(format!(
            "{binary} is missing: install Debian's {package} (`cargo xtask setup` does)"
        )));
    }
    check_version(&path, "--version", &format!("Debian's {package}"), pinned)?;
    Ok(path)
}

/// `/etc/passwd` and `/etc/group` naming `nobody`, the user these images run as.
fn with_nobody(image: Image) -> Result<Image, Error> {
    Ok(image
        .file(write_etc("busybox-passwd", PASSWD)?, "/etc/passwd", 0o644)
        .file(write_etc("busybox-group", GROUP)?, "/etc/group", 0o644))
}

/// `binary`'s shared libraries and loader at their paths (none when it is static).
fn with_libraries(mut image: Image, binary: &Path) -> Result<Image, Error> {
    if operon_image::operator::ensure_static(binary).is_ok() {
        return Ok(image);
    }
    for library in shared_libraries(binary)? {
        let path = library.display().to_string();
        image = image.file(&library, &path, 0o755);
    }
    Ok(image)
}

/// Fails unless `binary <arg>` reports `pinned`'s major.minor release (Debian's packages carry
/// patch releases and `+ds` suffixes of their own); `what` names it in the message.
fn check_version(binary: &Path, arg: &str, what: &str, pinned: &str) -> Result<(), Error> {
    let out = Command::new(binary)
        .arg(arg)
        .output()
        .map_err(|source| Error::Io {
            context: format!("running {} {arg}", binary.display()),
            source,
        })?;
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    let found = reported_version(&text).ok_or_else(|| {
        Error::Node(format!(
            "{} {arg} names no version: {:?}",
            binary.display(),
            text.trim()
        ))
    })?;
    if major_minor(&found) != major_minor(pinned) {
        return Err(Error::Node(format!(
            "{what} is version {found} ({}), but its image is tagged {pinned}: install the \
             release the image is pinned to, or change the pinned version in operon-assets",
            binary.display()
        )));
    }
    Ok(())
}

/// `2.42.0` from `prometheus, version 2.42.0+ds (branch: …` (Prometheus's version banner).
fn reported_version(text: &str) -> Option<String> {
    let mut words = text.split_whitespace();
    words.find(|w| *w == "version")?;
    let version: String = words
        .next()?
        .trim_start_matches('v')
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    version
        .starts_with(|c: char| c.is_ascii_digit())
        .then_some(version)
}

fn major_minor(version: &str) -> Vec<&str> {
    version.trim_start_matches('v').split('.').take(2).collect()
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

/// `reference` pinned to the manifest `digest` (`sha256:…`, as [`super::push_to`] returns it):
/// `localhost/operon/pod-operator:v0.1.0@sha256:…`. The tag stays for readers; kubelet and
/// containerd pull by the digest, so a Pod runs exactly the image pushed, whatever the tag
/// names by then, and a Deployment whose image changed content gets a new reference, hence a
/// rollout. A digest the reference already had is replaced.
pub fn by_digest(reference: &str, digest: &str) -> Result<String, Error> {
    let digest = operon_image::manifest_digest(digest)
        .ok_or_else(|| Error::Node(format!("{digest:?} is not a sha256 manifest digest")))?;
    let last = reference.rfind('/').map_or(0, |i| i + 1);
    let name = match reference[last..].find('@') {
        Some(at) => &reference[..last + at],
        None => reference,
    };
    if name[last..].is_empty() || name[last..].starts_with(':') {
        return Err(Error::Node(format!("{reference:?} names no image")));
    }
    Ok(format!("{name}@{digest}"))
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
    fn pushed_references_are_pinned_to_their_digest() -> Result<(), Error> {
        let digest = "sha256:4c4246684a89e20a6a366eb38fee00bab90224963636228e6ff91ccdbe4d1373";
        let other = "sha256:0000000000000000000000000000000000000000000000000000000000000000";
        assert_eq!(
            by_digest("localhost/operon/pod-operator:v0.1.0", digest)?,
            format!("localhost/operon/pod-operator:v0.1.0@{digest}")
        );
        // Pinned again after another push: the new digest, not both.
        assert_eq!(
            by_digest(
                &format!("localhost/operon/pod-operator:v0.1.0@{other}"),
                digest
            )?,
            format!("localhost/operon/pod-operator:v0.1.0@{digest}")
        );
        assert_eq!(
            by_digest(&format!("localhost/operon/pod-operator@{other}"), digest)?,
            format!("localhost/operon/pod-operator@{digest}")
        );
        // A registry's port is not a tag.
        assert_eq!(
            by_digest("10.200.0.1:5000/operon/x", digest)?,
            format!("10.200.0.1:5000/operon/x@{digest}")
        );
        assert_eq!(by_digest("busybox", digest)?, format!("busybox@{digest}"));
        for bad in ["", "4c42", "sha256:xyz", "md5:abc"] {
            assert!(by_digest("busybox:1", bad).is_err(), "{bad:?} accepted");
        }
        assert!(by_digest("quay.io/", digest).is_err());
        assert!(by_digest("localhost/operon/:v1", digest).is_err());
        Ok(())
    }

    #[test]
    fn versions_come_from_prometheus_banners() {
        let debian = "prometheus, version 2.42.0+ds (branch: debian/sid, revision: 2.42.0+ds-5)\n  build user: x";
        assert_eq!(reported_version(debian).as_deref(), Some("2.42.0"));
        let ksm = "kube-state-metrics, version v2.20.0 (branch: , revision: unknown)";
        assert_eq!(reported_version(ksm).as_deref(), Some("2.20.0"));
        assert_eq!(reported_version("no version here"), None);
        assert_eq!(major_minor("v2.42.0"), major_minor("2.42.1"));
        assert_ne!(major_minor("v2.42.0"), major_minor("2.43.0"));
    }

    /// Needs `cargo xtask k8s build`'s binaries, the three Debian packages and buildah (as
    /// `cargo xtask test` provides); the archives are cached, so only a first run builds them.
    #[test]
    fn the_monitoring_images_build_and_their_programs_run() -> Result<(), Error> {
        let bin = operon_assets::default_bin_dir();
        let programs = [
            (bin.join("prometheus-operator"), "--version"),
            (bin.join("prometheus-config-reloader"), "--version"),
            (bin.join("kube-state-metrics"), "version"),
            ("/usr/bin/prometheus".into(), "--version"),
            ("/usr/bin/prometheus-alertmanager".into(), "--version"),
            ("/usr/bin/prometheus-node-exporter".into(), "--version"),
        ];
        for (program, arg) in &programs {
            let out = Command::new(program)
                .arg(arg)
                .output()
                .map_err(|source| Error::Io {
                    context: format!("running {}", program.display()),
                    source,
                })?;
            let text = String::from_utf8_lossy(&out.stdout).to_string()
                + &String::from_utf8_lossy(&out.stderr);
            assert!(
                out.status.success() && reported_version(&text).is_some(),
                "{} {arg}: {}: {text}",
                program.display(),
                out.status
            );
        }
        let images = monitoring(&bin)?;
        let references: Vec<&str> = images
            .iter()
            .flat_map(|i| i.references.iter().map(String::as_str))
            .collect();
        assert_eq!(references, operon_assets::MONITORING_IMAGES);
        for image in &images {
            let archive = image.archive()?;
            let size = std::fs::metadata(&archive).map(|m| m.len()).unwrap_or(0);
            assert!(size > 1 << 20, "{} is {size} bytes", archive.display());
        }
        Ok(())
    }

    #[test]
    fn busybox_version_comes_from_its_banner() -> Result<(), Error> {
        let v = busybox_version(&busybox_binary()?)?;
        assert!(v.split('.').count() == 3, "{v}");
        Ok(())
    }
}
