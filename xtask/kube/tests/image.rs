//! `cargo xtask image pod-operator` writes an OCI archive whose image runs pod-operator, static,
//! FROM scratch, as 65532:65532.
//!
//! Needs buildah (the image build) and tar, sha256sum and readelf (the checks); without them the
//! test fails, it never skips. The first run builds pod-operator for release (minutes).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs `program args…` and returns its output; panics (with that output) unless it succeeds.
fn run(program: &str, args: &[&str]) -> Output {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {program} (is it installed?): {e}"));
    assert!(
        out.status.success(),
        "{program} {} failed ({}):\n{}",
        args.join(" "),
        out.status,
        text(&out)
    );
    out
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

/// `blobs/sha256/<hex>` of an OCI descriptor, after checking its size and digest.
fn blob(layout: &Path, descriptor: &Value) -> PathBuf {
    let digest = descriptor["digest"].as_str().expect("descriptor digest");
    let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
    let path = layout.join("blobs/sha256").join(hex);
    let len = std::fs::metadata(&path)
        .unwrap_or_else(|e| panic!("blob {digest}: {e}"))
        .len();
    assert_eq!(
        Some(len),
        descriptor["size"].as_u64(),
        "size of blob {digest}"
    );
    let sum = run("sha256sum", &[path_str(&path)]);
    let sum = String::from_utf8_lossy(&sum.stdout);
    assert_eq!(
        sum.split_whitespace().next(),
        Some(hex),
        "digest of blob {digest}"
    );
    path
}

fn json(path: &Path) -> Value {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

#[test]
fn pod_operator_image_is_static_from_scratch() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let archive = tmp.path().join("pod-operator.oci.tar");
    let out = Command::new(env!("CARGO_BIN_EXE_xtask-kube"))
        // The local cluster's profile (what `up` and the in-cluster tests run; quicker to build
        // than `release`): the steps after the compiler are the published image's.
        .args([
            "image",
            "pod-operator",
            "--profile",
            "local-image",
            "--out",
            path_str(&archive),
        ])
        .output()
        .expect("running xtask");
    assert!(
        out.status.success(),
        "cargo xtask image failed ({}):\n{}",
        out.status,
        text(&out)
    );
    println!("{}", String::from_utf8_lossy(&out.stdout));
    assert!(archive.is_file(), "no archive at {}", archive.display());

    // The OCI image layout: index → manifest → config and layers.
    let layout = tmp.path().join("layout");
    std::fs::create_dir(&layout).expect("mkdir");
    run("tar", &["-xf", path_str(&archive), "-C", path_str(&layout)]);
    assert_eq!(
        json(&layout.join("oci-layout"))["imageLayoutVersion"],
        "1.0.0"
    );
    let index = json(&layout.join("index.json"));
    let manifests = index["manifests"].as_array().expect("index manifests");
    assert_eq!(manifests.len(), 1, "{index}");
    let name = manifests[0]["annotations"]["org.opencontainers.image.ref.name"].as_str();
    assert!(
        name.is_some_and(|n| n.starts_with("pod-operator:")),
        "image name: {index}"
    );
    let manifest = json(&blob(&layout, &manifests[0]));
    assert_eq!(
        manifest["mediaType"], "application/vnd.oci.image.manifest.v1+json",
        "{manifest}"
    );

    let config = json(&blob(&layout, &manifest["config"]));
    let c = &config["config"];
    assert_eq!(c["User"], "65532:65532", "{config}");
    assert_eq!(
        c["Entrypoint"],
        serde_json::json!(["/pod-operator"]),
        "{config}"
    );
    assert_eq!(c["Cmd"], serde_json::json!(["run"]), "{config}");
    assert_eq!(config["os"], "linux", "{config}");
    if cfg!(target_arch = "x86_64") {
        assert_eq!(config["architecture"], "amd64", "{config}");
    }

    let layers = manifest["layers"].as_array().expect("manifest layers");
    assert_eq!(layers.len(), 1, "one layer, FROM scratch: {manifest}");
    assert_eq!(
        layers[0]["mediaType"], "application/vnd.oci.image.layer.v1.tar+gzip",
        "{manifest}"
    );
    let layer = blob(&layout, &layers[0]);
    let listing = run("tar", &["-tzf", path_str(&layer)]);
    let files: Vec<String> = String::from_utf8_lossy(&listing.stdout)
        .lines()
        .map(|l| l.trim_start_matches("./").to_string())
        .filter(|l| !l.is_empty())
        .collect();
    assert_eq!(files, ["pod-operator"], "the layer holds the binary alone");

    let rootfs = tmp.path().join("rootfs");
    std::fs::create_dir(&rootfs).expect("mkdir");
    run("tar", &["-xzf", path_str(&layer), "-C", path_str(&rootfs)]);
    let binary = rootfs.join("pod-operator");
    let version = run(path_str(&binary), &["--version"]);
    let version = String::from_utf8_lossy(&version.stdout);
    assert!(version.starts_with("pod-operator "), "--version: {version}");

    // Static: no program interpreter (dynamic loader) to find in an empty image.
    let headers = run(
        "readelf",
        &["--program-headers", "--wide", path_str(&binary)],
    );
    let headers = String::from_utf8_lossy(&headers.stdout);
    assert!(
        headers.contains("LOAD") && !headers.contains("INTERP"),
        "pod-operator is not statically linked:\n{headers}"
    );

    let binary_size = std::fs::metadata(&binary).expect("binary").len();
    let archive_size = std::fs::metadata(&archive).expect("archive").len();
    let layer_size = layers[0]["size"].as_u64().unwrap_or_default();
    println!(
        "image size: OCI archive {} (gzip layer {}), binary {} uncompressed",
        mib(archive_size),
        mib(layer_size),
        mib(binary_size)
    );
}

/// Every file under `dir`, relative to it, sorted.
fn files_under(dir: &Path, prefix: &str, out: &mut Vec<String>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .collect();
    entries.sort();
    for entry in entries {
        let name = entry
            .file_name()
            .expect("name")
            .to_string_lossy()
            .to_string();
        let relative = format!("{prefix}{name}");
        if entry.is_dir() {
            files_under(&entry, &format!("{relative}/"), out);
        } else {
            out.push(relative);
        }
    }
}

/// `cargo xtask bundle-image pod-operator`: the OLM bundle image of bundle/pod-operator, FROM
/// scratch, one layer holding manifests/, metadata/ and tests/scorecard/ byte for byte, and
/// labelled with metadata/annotations.yaml's annotations.
#[test]
fn pod_operator_bundle_image_is_the_bundle_with_its_labels() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let archive = tmp.path().join("pod-operator-bundle.oci.tar");
    let out = Command::new(env!("CARGO_BIN_EXE_xtask-kube"))
        .args(["bundle-image", "pod-operator", "--out", path_str(&archive)])
        .output()
        .expect("running xtask");
    assert!(
        out.status.success(),
        "cargo xtask bundle-image failed ({}):\n{}",
        out.status,
        text(&out)
    );
    let layout = tmp.path().join("layout");
    std::fs::create_dir(&layout).expect("mkdir");
    run("tar", &["-xf", path_str(&archive), "-C", path_str(&layout)]);
    let index = json(&layout.join("index.json"));
    let manifests = index["manifests"].as_array().expect("index manifests");
    assert_eq!(manifests.len(), 1, "{index}");
    assert_eq!(
        manifests[0]["annotations"]["org.opencontainers.image.ref.name"],
        format!(
            "localhost/operon/pod-operator-bundle:v{}",
            env!("CARGO_PKG_VERSION")
        ),
        "{index}"
    );
    let manifest = json(&blob(&layout, &manifests[0]));
    let config = json(&blob(&layout, &manifest["config"]));

    let bundle = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../bundle/pod-operator");
    let annotations: Value = serde_saphyr::from_str(
        &std::fs::read_to_string(bundle.join("metadata/annotations.yaml")).expect("annotations"),
    )
    .expect("annotations.yaml");
    let annotations = annotations["annotations"].as_object().expect("annotations");
    let labels = config["config"]["Labels"].as_object().expect("labels");
    for (key, value) in annotations {
        assert_eq!(labels.get(key), Some(value), "label {key}: {config}");
    }
    assert_eq!(
        labels["operators.operatorframework.io.bundle.mediatype.v1"],
        "registry+v1"
    );

    let layers = manifest["layers"].as_array().expect("manifest layers");
    assert_eq!(layers.len(), 1, "one layer, FROM scratch: {manifest}");
    let rootfs = tmp.path().join("rootfs");
    std::fs::create_dir(&rootfs).expect("mkdir");
    run(
        "tar",
        &[
            "-xzf",
            path_str(&blob(&layout, &layers[0])),
            "-C",
            path_str(&rootfs),
        ],
    );
    let mut in_image = Vec::new();
    files_under(&rootfs, "", &mut in_image);
    let mut expected = Vec::new();
    for dir in ["manifests", "metadata", "tests/scorecard"] {
        files_under(&bundle.join(dir), &format!("{dir}/"), &mut expected);
    }
    expected.sort();
    in_image.sort();
    assert_eq!(
        in_image, expected,
        "the layer holds the bundle's directories alone"
    );
    assert!(
        expected
            .iter()
            .any(|f| f.ends_with(".clusterserviceversion.yaml"))
    );
    for file in &expected {
        assert_eq!(
            std::fs::read(rootfs.join(file)).expect("file in image"),
            std::fs::read(bundle.join(file)).expect("file in bundle"),
            "{file}"
        );
    }
}
