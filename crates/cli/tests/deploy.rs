//! `operon deploy` and `operon undeploy` against a real control plane: a small made-up operator's
//! config tree, laid out as the runtime generates it, is applied in dependency order (its
//! custom resource after its CRD is Established), re-applied with the manager's image
//! overridden, and deleted again, twice.
//!
//! Names carry a random suffix, so the test can share a cluster with others.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::api::rbac::v1::ClusterRole;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::{Client, Resource};
use operon::deploy;
use operon::kustomize;
use operon_cluster::{Assets, Component, wait};
use operon_envtest::random_suffix;
use operon_manifests::{ADMIN_PORT, OperatorManifests, Rule};
use serde_json::{Value, json};

const TIMEOUT: Duration = Duration::from_secs(90);

/// The made-up operator: `gadget-<suffix>`, with one namespaced kind in its own API group.
struct Gadgets {
    name: String,
    namespace: String,
    group: String,
    manifests: OperatorManifests,
}

impl Gadgets {
    fn new() -> Self {
        let suffix = random_suffix();
        let name = format!("gadget-{suffix}");
        let namespace = format!("{name}-system");
        let group = format!("g{suffix}.deploy.operon.dev");
        let crd = json!({
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": { "name": format!("gadgets.{group}") },
            "spec": {
                "group": group,
                "scope": "Namespaced",
                "names": { "plural": "gadgets", "singular": "gadget", "kind": "Gadget", "listKind": "GadgetList" },
                "versions": [{
                    "name": "v1alpha1", "served": true, "storage": true,
                    "schema": { "openAPIV3Schema": {
                        "type": "object",
                        "properties": { "spec": { "type": "object", "properties": { "size": { "type": "integer" } } } },
                    } },
                    "subresources": { "status": {} },
                }],
            },
        });
        let manifests = OperatorManifests {
            name: name.clone(),
            namespace: namespace.clone(),
            image: format!("localhost/{name}:v1"),
            crds: vec![crd],
            rules: vec![Rule::new("", &["configmaps"], &["get", "list", "watch"])],
            namespace_rules: Vec::new(),
            admission: Vec::new(),
            user_resources: Vec::new(),
            replicas: 1,
            admin_port: ADMIN_PORT,
            alerts: Vec::new(),
            pod_security: "restricted",
        };
        Gadgets {
            name,
            namespace,
            group,
            manifests,
        }
    }

    fn crd_name(&self) -> String {
        format!("gadgets.{}", self.group)
    }

    fn deployment_name(&self) -> String {
        format!("{}-controller-manager", self.name)
    }

    fn gadgets(&self, client: &Client) -> Api<DynamicObject> {
        let gvk = GroupVersionKind::gvk(&self.group, "v1alpha1", "Gadget");
        let mut resource = ApiResource::from_gvk(&gvk);
        resource.plural = "gadgets".into();
        Api::namespaced_with(client.clone(), &self.namespace, &resource)
    }

    /// Writes `<root>/config/…` as `operon manifests` does, plus a Gadget in config/default and an
    /// `images:` rule there that retags the manager's image.
    fn write_project(&self, root: &Path) -> Result<()> {
        for (path, mut value) in self.manifests.files(json!([])) {
            if path == "default/kustomization.yaml" {
                value["resources"]
                    .as_array_mut()
                    .context("default resources")?
                    .push(json!("gadget.yaml"));
                value["images"] =
                    json!([{ "name": format!("localhost/{}", self.name), "newTag": "v2" }]);
            }
            write_yaml(&root.join("config").join(path), &[value])?;
        }
        let gadget = json!({
            "apiVersion": format!("{}/v1alpha1", self.group),
            "kind": "Gadget",
            "metadata": { "name": "first", "namespace": self.namespace },
            "spec": { "size": 3 },
        });
        write_yaml(&root.join("config/default/gadget.yaml"), &[gadget])
    }
}

fn write_yaml(path: &Path, documents: &[Value]) -> Result<()> {
    let dir = path.parent().context("no parent directory")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut text = String::new();
    for document in documents {
        text.push_str("---\n");
        text.push_str(&serde_saphyr::to_string(document)?);
    }
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// Runs one of operon's blocking commands, which start their own async runtime, on a thread
/// outside this test's runtime.
async fn blocking<T: Send + 'static>(command: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(move || std::thread::spawn(command).join())
        .await
        .expect("blocking task")
        .expect("the command panicked")
}

fn manager_image(deployment: &Deployment) -> Option<String> {
    deployment
        .spec
        .as_ref()?
        .template
        .spec
        .as_ref()?
        .containers
        .iter()
        .find(|c| c.name == kustomize::MANAGER_CONTAINER)?
        .image
        .clone()
}

/// `Ok` once the object is gone or being deleted (a Namespace or CRD still emptying itself).
fn gone<K: Resource>(what: &str, found: kube::Result<Option<K>>) -> Result<(), String> {
    match found {
        Ok(None) => Ok(()),
        Ok(Some(o)) if o.meta().deletion_timestamp.is_some() => Ok(()),
        Ok(Some(_)) => Err(format!("{what} still exists")),
        Err(e) => Err(format!("{what}: {e}")),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn deploys_in_dependency_order_and_undeploys() -> Result<()> {
    let env = operon_envtest::shared().await?;
    let client = env.client().await?;
    let kubeconfig: Option<PathBuf> = env
        .control_plane()
        .map(|cp| cp.kubeconfig_path().to_path_buf());
    let project = tempfile::tempdir()?;
    let gadgets = Gadgets::new();
    gadgets.write_project(project.path())?;

    // Applied through the library, without an override: the kustomization's `images:` applies.
    let objects = deploy::objects(project.path(), None)?;
    deploy::apply(&client, &objects).await?;

    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &gadgets.namespace);
    let deployment = deployments.get(&gadgets.deployment_name()).await?;
    let retagged = format!("localhost/{}:v2", gadgets.name);
    ensure!(
        manager_image(&deployment).as_deref() == Some(retagged.as_str()),
        "image: {:?}",
        manager_image(&deployment)
    );
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd = crds.get(&gadgets.crd_name()).await?;
    let established = crd
        .status
        .and_then(|s| s.conditions)
        .unwrap_or_default()
        .iter()
        .any(|c| c.type_ == "Established" && c.status == "True");
    ensure!(established, "CRD {} is not Established", gadgets.crd_name());
    let gadget = gadgets.gadgets(&client).get("first").await?;
    ensure!(gadget.data["spec"]["size"] == 3, "{:?}", gadget.data);

    // The command, with the kubeconfig and an image override, over what is already there.
    let image = format!("registry.example/acme/{}:v3", gadgets.name);
    let (root, kc, img) = (
        project.path().to_path_buf(),
        kubeconfig.clone(),
        image.clone(),
    );
    // No wait for the rollout: nothing serves that image here.
    blocking(move || deploy::deploy(&root, kc.as_deref(), None, Some(&img), None, None)).await?;

    let namespace = Api::<Namespace>::all(client.clone())
        .get(&gadgets.namespace)
        .await?;
    let labels = namespace.metadata.labels.unwrap_or_default();
    ensure!(
        labels
            .get("pod-security.kubernetes.io/enforce")
            .map(String::as_str)
            == Some("restricted"),
        "{labels:?}"
    );
    let role = Api::<ClusterRole>::all(client.clone())
        .get(&format!("{}-manager-role", gadgets.name))
        .await?;
    let rules = role.rules.unwrap_or_default();
    ensure!(
        rules
            .iter()
            .any(|r| r.resources.as_deref() == Some(&["configmaps".to_string()][..])),
        "{rules:?}"
    );
    Api::<ServiceAccount>::namespaced(client.clone(), &gadgets.namespace)
        .get(&format!("{}-controller-manager", gadgets.name))
        .await?;
    let deployment = deployments.get(&gadgets.deployment_name()).await?;
    ensure!(
        manager_image(&deployment).as_deref() == Some(image.as_str()),
        "image: {:?}",
        manager_image(&deployment)
    );
    let managers: Vec<String> = deployment
        .metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .filter_map(|f| f.manager)
        .collect();
    ensure!(
        managers.iter().any(|m| m == deploy::FIELD_MANAGER),
        "{managers:?}"
    );

    let (root, kc) = (project.path().to_path_buf(), kubeconfig.clone());
    blocking(move || deploy::undeploy(&root, kc.as_deref(), None, TIMEOUT)).await?;
    let roles: Api<ClusterRole> = Api::all(client.clone());
    let namespaces: Api<Namespace> = Api::all(client.clone());
    wait::until("the operator's objects to be deleted", TIMEOUT, || async {
        gone(
            "Deployment",
            deployments.get_opt(&gadgets.deployment_name()).await,
        )?;
        gone(
            "ClusterRole",
            roles
                .get_opt(&format!("{}-manager-role", gadgets.name))
                .await,
        )?;
        gone("CRD", crds.get_opt(&gadgets.crd_name()).await)?;
        gone("Namespace", namespaces.get_opt(&gadgets.namespace).await)
    })
    .await?;

    // Again: everything is gone or going, which is no error.
    let (root, kc) = (project.path().to_path_buf(), kubeconfig);
    blocking(move || deploy::undeploy(&root, kc.as_deref(), None, TIMEOUT)).await?;
    Ok(())
}

/// A custom resource whose finalizer nobody removes (no operator runs): undeploy deletes it,
/// waits, and fails naming it, with the CRD and the rest left in place (not Terminating);
/// once the finalizer is gone, undeploy removes everything.
#[tokio::test(flavor = "multi_thread")]
async fn undeploy_fails_naming_custom_resources_nobody_finalizes() -> Result<()> {
    let env = operon_envtest::shared().await?;
    let client = env.client().await?;
    let kubeconfig: Option<PathBuf> = env
        .control_plane()
        .map(|cp| cp.kubeconfig_path().to_path_buf());
    let project = tempfile::tempdir()?;
    let gadgets = Gadgets::new();
    gadgets.write_project(project.path())?;
    deploy::apply(&client, &deploy::objects(project.path(), None)?).await?;
    let finalizer = "gadgets.example.com/cleanup";
    let patch = json!({ "metadata": { "finalizers": [finalizer] } });
    gadgets
        .gadgets(&client)
        .patch("first", &PatchParams::default(), &Patch::Merge(&patch))
        .await?;

    let (root, kc) = (project.path().to_path_buf(), kubeconfig.clone());
    let started = std::time::Instant::now();
    let failed =
        blocking(move || deploy::undeploy(&root, kc.as_deref(), None, Duration::from_secs(3)))
            .await
            .err()
            .context("undeploy succeeded with a custom resource left")?;
    let message = format!("{failed:#}");
    for expected in [
        format!("gadgets.{} {}/first", gadgets.group, gadgets.namespace),
        format!("finalizers: {finalizer}"),
        "kubectl patch".to_string(),
        "--timeout".to_string(),
    ] {
        ensure!(message.contains(&expected), "no {expected:?} in: {message}");
    }
    ensure!(
        started.elapsed() >= Duration::from_secs(3),
        "gave up before its timeout"
    );
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd = crds.get(&gadgets.crd_name()).await?;
    ensure!(
        crd.metadata.deletion_timestamp.is_none(),
        "the CRD was deleted and stays Terminating"
    );
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &gadgets.namespace);
    deployments.get(&gadgets.deployment_name()).await?;

    let release = json!({ "metadata": { "finalizers": null } });
    gadgets
        .gadgets(&client)
        .patch("first", &PatchParams::default(), &Patch::Merge(&release))
        .await?;
    let (root, kc) = (project.path().to_path_buf(), kubeconfig);
    blocking(move || deploy::undeploy(&root, kc.as_deref(), None, TIMEOUT)).await?;
    // undeploy returns once the CRD is gone.
    ensure!(
        crds.get_opt(&gadgets.crd_name()).await?.is_none(),
        "the CRD is still there after undeploy"
    );
    Ok(())
}

/// install applies config/crd alone; uninstall deletes the custom resources, then the CRDs,
/// and returns once they are gone.
#[tokio::test(flavor = "multi_thread")]
async fn install_and_uninstall_the_crds() -> Result<()> {
    let env = operon_envtest::shared().await?;
    let client = env.client().await?;
    let kubeconfig: Option<PathBuf> = env
        .control_plane()
        .map(|cp| cp.kubeconfig_path().to_path_buf());
    let project = tempfile::tempdir()?;
    let gadgets = Gadgets::new();
    gadgets.write_project(project.path())?;
    let (root, kc) = (project.path().to_path_buf(), kubeconfig.clone());
    blocking(move || deploy::install(&root, kc.as_deref(), None)).await?;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.get(&gadgets.crd_name()).await?;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &gadgets.namespace);
    ensure!(
        deployments
            .get_opt(&gadgets.deployment_name())
            .await?
            .is_none(),
        "install deployed the operator"
    );
    // A Gadget in another namespace: uninstall looks in all of them.
    let ns = env.namespace("uninstall").await?;
    let gvk = GroupVersionKind::gvk(&gadgets.group, "v1alpha1", "Gadget");
    let api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), &ns, &ApiResource::from_gvk(&gvk));
    let gadget: DynamicObject = serde_json::from_value(json!({
        "apiVersion": format!("{}/v1alpha1", gadgets.group),
        "kind": "Gadget",
        "metadata": { "name": "second" },
        "spec": { "size": 1 },
    }))?;
    wait::until("the Gadget created", TIMEOUT, || async {
        api.create(&Default::default(), &gadget)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    })
    .await?;
    let (root, kc) = (project.path().to_path_buf(), kubeconfig);
    blocking(move || deploy::uninstall(&root, kc.as_deref(), None, TIMEOUT)).await?;
    ensure!(
        crds.get_opt(&gadgets.crd_name()).await?.is_none(),
        "the CRD is still there after uninstall"
    );
    Ok(())
}

/// The rollout wait: done once the (kwok) node runs the Pods; a Deployment whose Pods can't be
/// scheduled fails at the deadline with the Pods' reason.
#[tokio::test(flavor = "multi_thread")]
async fn deploy_waits_for_the_rollout_and_says_why_it_is_stuck() -> Result<()> {
    let env = operon_envtest::shared().await?;
    let client = env.client().await?;
    let project = tempfile::tempdir()?;
    let gadgets = Gadgets::new();
    gadgets.write_project(project.path())?;
    let mut objects = deploy::objects(project.path(), None)?;
    deploy::apply(&client, &objects).await?;
    operon::lifecycle::wait_rollouts(&client, &objects, TIMEOUT, &|line| eprintln!("{line}"))
        .await?;

    // A new spec whose Pods no node can take.
    let deployment = objects
        .iter_mut()
        .find(|o| o["kind"] == "Deployment")
        .context("no Deployment")?;
    deployment["spec"]["template"]["spec"]["nodeSelector"] = json!({ "operon.dev/none": "x" });
    deploy::apply(&client, &objects).await?;
    let started = std::time::Instant::now();
    let stuck =
        operon::lifecycle::wait_rollouts(&client, &objects, Duration::from_secs(5), &|line| {
            eprintln!("{line}")
        })
        .await
        .err()
        .context("the rollout of unschedulable Pods succeeded")?;
    let message = format!("{stuck:#}");
    eprintln!("{message}");
    for expected in [
        format!(
            "deployment {}/{} did not roll out within 5s",
            gadgets.namespace,
            gadgets.deployment_name()
        ),
        "PodScheduled Unschedulable".to_string(),
    ] {
        ensure!(message.contains(&expected), "no {expected:?} in: {message}");
    }
    ensure!(
        started.elapsed() >= Duration::from_secs(5),
        "gave up before its deadline"
    );
    let root = project.path().to_path_buf();
    let kubeconfig = env
        .control_plane()
        .map(|cp| cp.kubeconfig_path().to_path_buf());
    blocking(move || deploy::undeploy(&root, kubeconfig.as_deref(), None, TIMEOUT)).await?;
    Ok(())
}

#[tokio::test]
async fn failures_name_the_object_and_the_reason() -> Result<()> {
    let client = operon_envtest::shared().await?.client().await?;
    let missing = format!("missing-{}", random_suffix());
    let config_map = json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": { "name": "settings", "namespace": missing },
    });
    let e = deploy::apply(&client, &[config_map])
        .await
        .err()
        .context("applying into a missing namespace should fail")?;
    let e = format!("{e:#}");
    ensure!(
        e.contains(&format!("applying ConfigMap {missing}/settings")) && e.contains("not found"),
        "{e}"
    );

    let widget = json!({
        "apiVersion": format!("{missing}.example.com/v1"), "kind": "Widget",
        "metadata": { "name": "w", "namespace": "default" },
    });
    let e = deploy::apply(&client, std::slice::from_ref(&widget))
        .await
        .err()
        .context("applying a kind the cluster does not serve should fail")?;
    let e = format!("{e:#}");
    ensure!(
        e.contains("applying Widget default/w")
            && e.contains("does not serve Widget")
            && e.contains("CustomResourceDefinition installed?"),
        "{e}"
    );
    // Nothing to delete is no error.
    deploy::delete(&client, &[widget]).await?;
    Ok(())
}

/// Every kustomization directory under `dir`.
fn kustomizations(dir: &Path, found: &mut Vec<std::path::PathBuf>) -> Result<()> {
    if dir.join("kustomization.yaml").is_file() {
        found.push(dir.to_path_buf());
    }
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            kustomizations(&path, found)?;
        }
    }
    Ok(())
}

/// Our rendering of kustomization `dir`, compared object by object with `kubectl kustomize`'s.
fn same_as_kubectl(dir: &Path) -> Result<Vec<Value>> {
    let ours = kustomize::render(dir)?;
    let kubectl = Assets::from_env().binary(Component::Kubectl)?;
    let out = Command::new(&kubectl)
        .arg("kustomize")
        .arg(dir)
        .output()
        .with_context(|| format!("running {}", kubectl.display()))?;
    ensure!(
        out.status.success(),
        "kubectl kustomize {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let theirs: Vec<Value> = serde_saphyr::from_multiple(&String::from_utf8(out.stdout)?)?;
    // kubectl sorts by kind; the objects themselves must be the same.
    let key = |v: &Value| operon_cluster::apply::describe(v);
    let mut ours_sorted = ours.clone();
    let mut theirs_sorted = theirs;
    ours_sorted.sort_by_key(key);
    theirs_sorted.sort_by_key(key);
    ensure!(
        ours_sorted.len() == theirs_sorted.len(),
        "{}: {} objects, kubectl kustomize has {}",
        dir.display(),
        ours_sorted.len(),
        theirs_sorted.len()
    );
    for (a, b) in ours_sorted.iter().zip(&theirs_sorted) {
        ensure!(
            a == b,
            "{} differs from kubectl kustomize:\n{a:#}\n{b:#}",
            dir.display()
        );
    }
    Ok(ours)
}

#[test]
fn renders_every_generated_tree_like_kubectl_kustomize() -> Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config");
    let mut dirs = Vec::new();
    kustomizations(&root, &mut dirs)?;
    // default, and per operator: default, crd, rbac, manager, policy, network-policy,
    // prometheus, samples.
    ensure!(dirs.len() >= 10, "only {} kustomizations found", dirs.len());
    for dir in &dirs {
        same_as_kubectl(dir)?;
    }
    let ours = same_as_kubectl(&root.join("default"))?;

    // It deploys several operators: which one an image override means is not clear.
    let mut ours = ours;
    let e = kustomize::override_manager_image(&mut ours, "registry.example/x:1")
        .err()
        .context("an override of several operators should fail")?;
    ensure!(e.to_string().contains("ambiguous"), "{e}");
    Ok(())
}

#[tokio::test]
async fn push_needs_a_cluster_that_announces_its_registry() -> Result<()> {
    // The shared control plane has kwok's fake Nodes only: no registry to push to.
    let env = operon_envtest::shared().await?;
    let kubeconfig: Option<PathBuf> = env
        .control_plane()
        .map(|cp| cp.kubeconfig_path().to_path_buf());
    let project = tempfile::tempdir()?;
    let gadgets = Gadgets::new();
    gadgets.write_project(project.path())?;
    let archive = project.path().join("gadget.oci.tar");
    let root = project.path().to_path_buf();

    let missing = archive.clone();
    let (r, kc) = (root.clone(), kubeconfig.clone());
    let e = blocking(move || deploy::deploy(&r, kc.as_deref(), None, None, Some(&missing), None))
        .await
        .err()
        .context("pushing an archive that does not exist should fail")?;
    ensure!(format!("{e:#}").contains("operon build"), "{e:#}");

    std::fs::write(&archive, "not pushed")?;
    let e = blocking(move || {
        deploy::deploy(
            &root,
            kubeconfig.as_deref(),
            None,
            None,
            Some(&archive),
            None,
        )
    })
    .await
    .err()
    .context("a cluster without a registry should be refused")?;
    let e = format!("{e:#}");
    ensure!(e.contains("announces no local registry"), "{e}");
    // Nothing was applied.
    let namespaces: Api<Namespace> = Api::all(env.client().await?);
    ensure!(namespaces.get_opt(&gadgets.namespace).await?.is_none());
    Ok(())
}
