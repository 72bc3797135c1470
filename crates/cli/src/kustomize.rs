//! The part of kustomize that Operon's generated `config/` trees use: `resources` (files with
//! one or more YAML documents, and directories with their own kustomization) and `images`.
//!
//! Every other field a kustomization can have (patches, namePrefix, namespace, generators, …)
//! is an error naming the file and the field: rendering a tree without what it asks for would
//! deploy something else than `kubectl apply -k` does. Such trees are applied with `kubectl`.
//!
//! Like kustomize, file resources must lie in or below their kustomization's directory (other
//! directories may be anywhere), `List` documents are expanded, two objects with the same
//! group, kind, namespace and name are an error, and `images` rewrites the `image` of every
//! `containers` and `initContainers` entry of the objects rendered below it, CRDs excepted.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};
use operon_cluster::apply::describe;
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::Value;

/// File names kustomize accepts for a kustomization, in its order of preference.
pub const KUSTOMIZATION_FILES: [&str; 3] =
    ["kustomization.yaml", "kustomization.yml", "Kustomization"];

/// The container of the operator in its Deployment (`operon_manifests::OperatorManifests::deployment`).
pub const MANAGER_CONTAINER: &str = "manager";

/// Kustomization fields [`render`] implements (`metadata` only names the kustomization).
const SUPPORTED_FIELDS: [&str; 5] = ["apiVersion", "kind", "metadata", "resources", "images"];

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Kustomization {
    api_version: Option<String>,
    kind: Option<String>,
    resources: Option<Vec<String>>,
    images: Option<Vec<ImageRule>>,
}

/// One entry of `images`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ImageRule {
    name: String,
    new_name: Option<String>,
    new_tag: Option<String>,
    digest: Option<String>,
}

/// The value of an optional field; kustomize treats empty values as unset.
fn set(value: &Option<String>) -> Option<&str> {
    value.as_deref().filter(|s| !s.is_empty())
}

impl ImageRule {
    /// `image` rewritten by this rule, or `None` when the rule does not name it. As in kustomize,
    /// a new tag or digest replaces both the old tag and digest.
    fn rewrite(&self, image: &str) -> Option<String> {
        let (name, tag, digest) = split_image(image);
        if name != self.name {
            return None;
        }
        let name = set(&self.new_name).unwrap_or(name);
        let (tag, digest) = match (set(&self.new_tag), set(&self.digest)) {
            (None, None) => (tag, digest),
            new => new,
        };
        let mut out = name.to_string();
        if let Some(tag) = tag {
            out.push(':');
            out.push_str(tag);
        }
        if let Some(digest) = digest {
            out.push('@');
            out.push_str(digest);
        }
        Some(out)
    }
}

/// `(name, tag, digest)` of an image reference, split as kustomize does: a `:` before the first
/// `/` belongs to the registry's port.
fn split_image(image: &str) -> (&str, Option<&str>, Option<&str>) {
    let offset = image.find('/').unwrap_or(0);
    let search = &image[offset..];
    let at = search.find('@').map(|i| i + offset);
    let colon = search.find(':').map(|i| i + offset);
    match (colon, at) {
        (None, None) => (image, None, None),
        (Some(c), Some(a)) if c < a => (&image[..c], Some(&image[c + 1..a]), Some(&image[a + 1..])),
        (_, Some(a)) => (&image[..a], None, Some(&image[a + 1..])),
        (Some(c), None) => (&image[..c], Some(&image[c + 1..]), None),
    }
}

/// An object and the file it came from (for error messages).
struct Rendered {
    object: Value,
    file: PathBuf,
}

/// Renders the kustomization in `dir`: its objects, in the order kustomize lists them.
pub fn render(dir: &Path) -> Result<Vec<Value>> {
    let rendered = render_dir(dir, &mut Vec::new())?;
    let mut seen: HashMap<(String, String, String, String), &Path> = HashMap::new();
    for r in &rendered {
        if let Some(first) = seen.insert(identity(&r.object), &r.file) {
            bail!(
                "{} appears twice: in {} and in {}",
                describe(&r.object),
                first.display(),
                r.file.display()
            );
        }
    }
    Ok(rendered.into_iter().map(|r| r.object).collect())
}

/// `(group, kind, namespace, name)`.
fn identity(object: &Value) -> (String, String, String, String) {
    let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
    let api_version = object["apiVersion"].as_str().unwrap_or_default();
    let group = api_version.split_once('/').map_or("", |(g, _)| g);
    (
        group.to_string(),
        text(&object["kind"]),
        text(&object["metadata"]["namespace"]),
        text(&object["metadata"]["name"]),
    )
}

fn kustomization_file(dir: &Path) -> Option<PathBuf> {
    KUSTOMIZATION_FILES
        .iter()
        .map(|f| dir.join(f))
        .find(|p| p.is_file())
}

/// Renders `dir`; `stack` holds the directories being rendered, to report cycles.
fn render_dir(dir: &Path, stack: &mut Vec<PathBuf>) -> Result<Vec<Rendered>> {
    let canonical = dir
        .canonicalize()
        .with_context(|| format!("{}: no such directory", dir.display()))?;
    let file = kustomization_file(dir).with_context(|| {
        format!(
            "{}: no kustomization ({})",
            dir.display(),
            KUSTOMIZATION_FILES.join(", ")
        )
    })?;
    if let Some(start) = stack.iter().position(|d| *d == canonical) {
        let cycle: Vec<String> = stack[start..]
            .iter()
            .chain([&canonical])
            .map(|d| d.display().to_string())
            .collect();
        bail!("kustomizations include each other: {}", cycle.join(" -> "));
    }
    let kustomization = read_kustomization(&file)?;

    stack.push(canonical.clone());
    let mut out = Vec::new();
    for entry in kustomization.resources.unwrap_or_default() {
        let objects = resource(dir, &canonical, &entry, stack)
            .with_context(|| format!("{}: resources: {entry}", file.display()))?;
        out.extend(objects);
    }
    stack.pop();

    for rule in kustomization.images.unwrap_or_default() {
        ensure!(
            !rule.name.is_empty(),
            "{}: images: an entry without a name",
            file.display()
        );
        for r in &mut out {
            if r.object["kind"] != "CustomResourceDefinition" {
                rewrite_images(&mut r.object, &rule);
            }
        }
    }
    Ok(out)
}

fn read_kustomization(file: &Path) -> Result<Kustomization> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let parse_error = || format!("{}: not a valid kustomization", file.display());
    // An empty file (or one of comments only) is an empty kustomization.
    let fields: Option<BTreeMap<String, IgnoredAny>> =
        serde_saphyr::from_str(&text).with_context(parse_error)?;
    let fields = fields.unwrap_or_default();
    let unsupported: Vec<&str> = fields
        .keys()
        .map(String::as_str)
        .filter(|k| !SUPPORTED_FIELDS.contains(k))
        .collect();
    ensure!(
        unsupported.is_empty(),
        "{}: unsupported kustomization field{} {}: operon renders only `resources` and `images` \
         (apply this tree with `kubectl apply -k` instead)",
        file.display(),
        if unsupported.len() > 1 { "s" } else { "" },
        unsupported
            .iter()
            .map(|k| format!("`{k}`"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if fields.is_empty() {
        return Ok(Kustomization {
            api_version: None,
            kind: None,
            resources: None,
            images: None,
        });
    }
    let k: Kustomization = serde_saphyr::from_str(&text).with_context(parse_error)?;
    if let Some(kind) = &k.kind {
        ensure!(
            kind == "Kustomization",
            "{}: kind {kind}: only Kustomization is supported",
            file.display()
        );
    }
    if let Some(v) = &k.api_version {
        ensure!(
            v.starts_with("kustomize.config.k8s.io/"),
            "{}: apiVersion {v} is not a kustomize.config.k8s.io version",
            file.display()
        );
    }
    Ok(k)
}

/// The objects of one `resources` entry of the kustomization in `dir` (`root`: canonical).
fn resource(
    dir: &Path,
    root: &Path,
    entry: &str,
    stack: &mut Vec<PathBuf>,
) -> Result<Vec<Rendered>> {
    let path = dir.join(entry);
    if path.is_dir() {
        return render_dir(&path, stack);
    }
    if !path.is_file() {
        if entry.contains("://") || entry.starts_with("git@") || entry.starts_with("github.com/") {
            bail!("remote resources are not supported");
        }
        bail!("{}: no such file or directory", path.display());
    }
    let canonical = path
        .canonicalize()
        .with_context(|| format!("resolving {}", path.display()))?;
    ensure!(
        canonical.starts_with(root),
        "{} is not in or below {} (kustomize loads files only from there)",
        canonical.display(),
        root.display()
    );
    read_objects(&path)
}

/// The objects of a YAML file (one or more documents; `List`s expanded).
fn read_objects(path: &Path) -> Result<Vec<Rendered>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let docs: Vec<Value> = serde_saphyr::from_multiple(&text)
        .with_context(|| format!("parsing {}", path.display()))?;
    let mut out = Vec::new();
    for doc in docs {
        let is_list = doc["apiVersion"] == "v1" && doc["kind"] == "List";
        let objects = if is_list {
            match doc.get("items") {
                Some(Value::Array(items)) => items.clone(),
                None | Some(Value::Null) => Vec::new(),
                Some(_) => bail!("{}: a List whose items are not a list", path.display()),
            }
        } else {
            vec![doc]
        };
        for object in objects {
            check_object(&object).with_context(|| format!("{}", path.display()))?;
            out.push(Rendered {
                object,
                file: path.to_path_buf(),
            });
        }
    }
    Ok(out)
}

fn check_object(object: &Value) -> Result<()> {
    ensure!(object.is_object(), "a document that is not a mapping");
    let text = |v: &Value| v.as_str().filter(|s| !s.is_empty()).is_some();
    ensure!(
        text(&object["apiVersion"]),
        "{}: no apiVersion",
        describe(object)
    );
    ensure!(text(&object["kind"]), "{}: no kind", describe(object));
    ensure!(
        text(&object["metadata"]["name"]),
        "{}: no metadata.name",
        describe(object)
    );
    Ok(())
}

/// Applies `rule` to the `image` of every entry of every `containers` and `initContainers` list
/// in `value`, as kustomize's image transformer does.
fn rewrite_images(value: &mut Value, rule: &ImageRule) {
    match value {
        Value::Object(map) => {
            for (key, child) in map.iter_mut() {
                rewrite_images(child, rule);
                if key != "containers" && key != "initContainers" {
                    continue;
                }
                let Value::Array(containers) = child else {
                    continue;
                };
                for container in containers {
                    if let Some(Value::String(image)) = container.get_mut("image")
                        && let Some(new) = rule.rewrite(image)
                    {
                        *image = new;
                    }
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| rewrite_images(v, rule)),
        _ => {}
    }
}

/// Sets the image of the operator's container ([`MANAGER_CONTAINER`]) in the one Deployment that
/// has it; fails when no Deployment or several do, since the override would be lost or
/// ambiguous.
/// The image of the `manager` container, as rendered.
pub fn manager_image(objects: &[Value]) -> Option<String> {
    objects
        .iter()
        .filter(|o| o["kind"] == "Deployment")
        .flat_map(|o| {
            o["spec"]["template"]["spec"]["containers"]
                .as_array()
                .into_iter()
                .flatten()
        })
        .find(|c| c["name"] == MANAGER_CONTAINER)
        .and_then(|c| c["image"].as_str().map(str::to_string))
}

pub fn override_manager_image(objects: &mut [Value], image: &str) -> Result<()> {
    ensure!(!image.trim().is_empty(), "the image to deploy is empty");
    let manager = |object: &Value| {
        object["kind"] == "Deployment"
            && object["spec"]["template"]["spec"]["containers"]
                .as_array()
                .is_some_and(|cs| cs.iter().any(|c| c["name"] == MANAGER_CONTAINER))
    };
    let found: Vec<usize> = (0..objects.len())
        .filter(|&i| manager(&objects[i]))
        .collect();
    let [index] = found[..] else {
        if found.is_empty() {
            bail!("no Deployment has a container named {MANAGER_CONTAINER} to run {image}");
        }
        let names: Vec<String> = found.iter().map(|&i| describe(&objects[i])).collect();
        bail!(
            "several Deployments have a container named {MANAGER_CONTAINER} ({}): which one \
             should run {image} is ambiguous",
            names.join(", ")
        );
    };
    let containers = objects[index]["spec"]["template"]["spec"]["containers"].as_array_mut();
    for container in containers.into_iter().flatten() {
        if container["name"] == MANAGER_CONTAINER {
            container["image"] = Value::String(image.to_string());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Writes `files` (`(relative path, text)`) under a fresh directory.
    fn tree(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        for (path, text) in files {
            let path = dir.path().join(path);
            std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            std::fs::write(&path, text).expect("write");
        }
        dir
    }

    const DEPLOYMENT: &str = "\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: demo-controller-manager
  namespace: demo-system
spec:
  template:
    spec:
      initContainers:
      - name: init
        image: busybox
      containers:
      - name: manager
        image: localhost/operon/demo:v0.1.0
      - name: sidecar
        image: registry.example:5000/tools/sidecar@sha256:abc
";

    fn images(objects: &[Value]) -> Vec<String> {
        let mut out = Vec::new();
        for o in objects {
            let spec = &o["spec"]["template"]["spec"];
            for list in ["initContainers", "containers"] {
                for c in spec[list].as_array().into_iter().flatten() {
                    out.push(c["image"].as_str().unwrap_or_default().to_string());
                }
            }
        }
        out
    }

    fn error(dir: &Path) -> String {
        format!("{:#}", render(dir).expect_err("render should fail"))
    }

    #[test]
    fn follows_directories_and_documents_in_order() {
        let dir = tree(&[
            (
                "default/kustomization.yaml",
                "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n\
                 resources:\n- ../rbac\n- ../manager\n",
            ),
            (
                "rbac/kustomization.yaml",
                "resources:\n- roles.yaml\n- sa.yaml\n",
            ),
            (
                "rbac/roles.yaml",
                "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata:\n  name: a\n\
                 ---\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\n\
                 metadata:\n  name: b\n",
            ),
            (
                "rbac/sa.yaml",
                "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: ServiceAccount\n  \
                 metadata:\n    name: sa\n    namespace: demo-system\n",
            ),
            ("manager/kustomization.yml", "resources: [manager.yaml]\n"),
            ("manager/manager.yaml", DEPLOYMENT),
        ]);
        let objects = render(&dir.path().join("default")).expect("render");
        let names: Vec<String> = objects.iter().map(describe).collect();
        assert_eq!(
            names,
            [
                "ClusterRole a",
                "ClusterRole b",
                "ServiceAccount demo-system/sa",
                "Deployment demo-system/demo-controller-manager"
            ]
        );
        assert_eq!(
            objects[3]["spec"]["template"]["spec"]["containers"][0]["name"],
            "manager"
        );
    }

    #[test]
    fn images_rewrite_containers_below_the_kustomization() {
        let dir = tree(&[
            (
                "default/kustomization.yaml",
                "resources:\n- ../manager\nimages:\n\
                 - name: localhost/operon/demo\n  newName: quay.io/acme/demo\n  newTag: 1.20\n\
                 - name: registry.example:5000/tools/sidecar\n  newTag: v2\n",
            ),
            (
                "manager/kustomization.yaml",
                "resources:\n- manager.yaml\nimages:\n- name: busybox\n  digest: sha256:0123\n",
            ),
            ("manager/manager.yaml", DEPLOYMENT),
        ]);
        let objects = render(&dir.path().join("default")).expect("render");
        assert_eq!(
            images(&objects),
            [
                "busybox@sha256:0123",
                // An unquoted tag stays the text it was, not the number 1.2.
                "quay.io/acme/demo:1.20",
                // A new tag replaces the digest; the registry's port is not a tag.
                "registry.example:5000/tools/sidecar:v2",
            ]
        );
        // The inner kustomization's rules do not reach objects beside it.
        let manager = render(&dir.path().join("manager")).expect("render");
        assert_eq!(images(&manager)[1], "localhost/operon/demo:v0.1.0");
    }

    #[test]
    fn images_leave_crds_and_other_names_alone() {
        let crd = "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\n\
                   metadata:\n  name: xs.example.com\nspec:\n  containers:\n  - image: busybox\n";
        let dir = tree(&[
            (
                "kustomization.yaml",
                "resources: [crd.yaml, manager.yaml]\nimages:\n- name: busybox\n  newTag: \"2\"\n\
                 - name: localhost/operon\n  newTag: x\n",
            ),
            ("crd.yaml", crd),
            ("manager.yaml", DEPLOYMENT),
        ]);
        let objects = render(dir.path()).expect("render");
        assert_eq!(objects[0]["spec"]["containers"][0]["image"], "busybox");
        assert_eq!(
            images(&objects[1..]),
            [
                "busybox:2",
                "localhost/operon/demo:v0.1.0",
                "registry.example:5000/tools/sidecar@sha256:abc"
            ]
        );
    }

    #[test]
    fn splits_images_like_kustomize() {
        assert_eq!(split_image("busybox"), ("busybox", None, None));
        assert_eq!(split_image("a/b:1"), ("a/b", Some("1"), None));
        assert_eq!(split_image("h:5000/b"), ("h:5000/b", None, None));
        assert_eq!(
            split_image("h:5000/b:1@sha256:f"),
            ("h:5000/b", Some("1"), Some("sha256:f"))
        );
        assert_eq!(split_image("b@sha256:f"), ("b", None, Some("sha256:f")));
    }

    #[test]
    fn unsupported_fields_are_errors_naming_file_and_field() {
        let dir = tree(&[
            ("default/kustomization.yaml", "resources: [../manager]\n"),
            (
                "manager/kustomization.yaml",
                "namePrefix: x-\nresources: [manager.yaml]\npatches:\n- path: p.yaml\n",
            ),
            ("manager/manager.yaml", DEPLOYMENT),
        ]);
        let e = error(&dir.path().join("default"));
        assert!(
            e.contains("manager/kustomization.yaml: unsupported kustomization fields `namePrefix`, `patches`"),
            "{e}"
        );
        assert!(
            e.contains("default/kustomization.yaml: resources: ../manager"),
            "{e}"
        );

        let dir = tree(&[(
            "kustomization.yaml",
            "images:\n- name: a\n  tagSuffix: -x\n",
        )]);
        let e = error(dir.path());
        assert!(
            e.contains("kustomization.yaml") && e.contains("tagSuffix"),
            "{e}"
        );

        let dir = tree(&[(
            "kustomization.yaml",
            "apiVersion: kustomize.config.k8s.io/v1alpha1\nkind: Component\n",
        )]);
        assert!(error(dir.path()).contains("kind Component"));
    }

    #[test]
    fn broken_trees_are_clear_errors() {
        let dir = tree(&[("kustomization.yaml", "resources: [missing.yaml]\n")]);
        assert!(error(dir.path()).contains("missing.yaml: no such file or directory"));

        let dir = tree(&[("x.yaml", DEPLOYMENT)]);
        assert!(error(dir.path()).contains("no kustomization"));

        let dir = tree(&[
            ("a/kustomization.yaml", "resources: [../b]\n"),
            ("b/kustomization.yaml", "resources: [../a]\n"),
        ]);
        assert!(error(&dir.path().join("a")).contains("include each other"));

        let dir = tree(&[
            ("a/kustomization.yaml", "resources: [../x.yaml]\n"),
            ("x.yaml", DEPLOYMENT),
        ]);
        assert!(error(&dir.path().join("a")).contains("not in or below"));

        let dir = tree(&[
            ("kustomization.yaml", "resources: [x.yaml, y.yaml]\n"),
            ("x.yaml", DEPLOYMENT),
            ("y.yaml", DEPLOYMENT),
        ]);
        let e = error(dir.path());
        assert!(e.contains("appears twice") && e.contains("y.yaml"), "{e}");

        let dir = tree(&[
            ("kustomization.yaml", "resources: [x.yaml]\n"),
            ("x.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {}\n"),
        ]);
        let e = error(dir.path());
        assert!(
            e.contains("x.yaml") && e.contains("no metadata.name"),
            "{e}"
        );

        let dir = tree(&[(
            "kustomization.yaml",
            "resources: [https://github.com/x/y//config]\n",
        )]);
        assert!(error(dir.path()).contains("remote resources"));
    }

    #[test]
    fn an_empty_kustomization_renders_nothing() {
        let dir = tree(&[("kustomization.yaml", "# nothing yet\n")]);
        assert!(render(dir.path()).expect("render").is_empty());
    }

    #[test]
    fn overrides_the_manager_image_of_the_one_operator_deployment() {
        let deployment: Value = serde_saphyr::from_str(DEPLOYMENT).expect("yaml");
        let mut objects = vec![json!({ "kind": "Namespace" }), deployment.clone()];
        override_manager_image(&mut objects, "quay.io/acme/demo:2").expect("override");
        assert_eq!(
            images(&objects),
            [
                "busybox",
                "quay.io/acme/demo:2",
                "registry.example:5000/tools/sidecar@sha256:abc"
            ]
        );

        let mut none = vec![json!({ "kind": "Namespace" })];
        let e = override_manager_image(&mut none, "x").expect_err("no manager");
        assert!(e.to_string().contains("no Deployment"), "{e}");

        let mut two = vec![deployment.clone(), deployment];
        let e = override_manager_image(&mut two, "x").expect_err("ambiguous");
        assert!(e.to_string().contains("ambiguous"), "{e}");
    }
}
