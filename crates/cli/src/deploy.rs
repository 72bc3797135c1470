//! `operon deploy` and `operon undeploy`: the objects of `config/default` server-side applied to
//! a cluster in dependency order, or deleted in the reverse order.
//!
//! Each object's resource (plural, scope) comes from API discovery, so any kind the cluster
//! serves works, custom resources included. Namespaces are applied first, then the
//! CustomResourceDefinitions, which must become Established (and served) before the rest: the
//! operator's RBAC, workloads, Services, policies, and finally webhooks and objects of unknown
//! kinds (custom resources), in that order.

use std::collections::HashMap;
use std::future::Future;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::discovery::{self, ApiCapabilities, ApiResource, Scope};
use kube::error::DiscoveryError;
use kube::{Client, Config};
use operon_envtest::wait;
use serde_json::Value;

use crate::kustomize::{self, describe};

/// The field manager of everything `deploy` applies.
pub const FIELD_MANAGER: &str = "operon";

/// How long a CustomResourceDefinition may take to become Established and served.
pub const CRD_TIMEOUT: Duration = Duration::from_secs(60);

/// The objects `deploy` applies: `project_root/config/default` rendered, with the operator's
/// image replaced by `image` when given.
pub fn objects(project_root: &Path, image: Option<&str>) -> Result<Vec<Value>> {
    let dir = project_root.join("config").join("default");
    let mut objects =
        kustomize::render(&dir).with_context(|| format!("rendering {}", dir.display()))?;
    if let Some(image) = image {
        kustomize::override_manager_image(&mut objects, image)?;
    }
    Ok(objects)
}

/// Applies the project's `config/default` to the cluster of `kubeconfig` (default: inferred
/// from the environment), with the operator's image replaced by `image` when given. With
/// `push`, the OCI archive `push` is first pushed as that image to the registry the cluster
/// announces (`kube-public/local-registry-hosting`, as `cargo xtask cluster up`'s does), so
/// that its nodes run it.
pub fn deploy(
    project_root: &Path,
    kubeconfig: Option<&Path>,
    image: Option<&str>,
    push: Option<&Path>,
) -> Result<()> {
    // Rendering first: a broken tree fails before any connection is tried.
    let objects = objects(project_root, image)?;
    block_on(async {
        let client = client(kubeconfig).await?;
        if let Some(archive) = push {
            let image = kustomize::manager_image(&objects)
                .context("config/default has no manager container whose image to push")?;
            push_image(&client, archive, &image).await?;
        }
        apply(&client, &objects).await
    })
}

/// Pushes `archive` as `image` to the cluster's announced registry.
async fn push_image(client: &Client, archive: &Path, image: &str) -> Result<()> {
    if !archive.is_file() {
        bail!(
            "{} does not exist: build the image first (`operon build`)",
            archive.display()
        );
    }
    let registry = operon_envtest::node::announced_registry(client)
        .await
        .context("finding where to push the image")?;
    let (to, from, reference) = (registry.clone(), archive.to_path_buf(), image.to_string());
    tokio::task::spawn_blocking(move || operon_envtest::node::push_to(&to, &from, &reference))
        .await??;
    println!("deploy: pushed {image} to the cluster's registry {registry}");
    Ok(())
}

/// Deletes what [`deploy`] applies, in the reverse order.
pub fn undeploy(project_root: &Path, kubeconfig: Option<&Path>) -> Result<()> {
    let objects = objects(project_root, None)?;
    block_on(async {
        let client = client(kubeconfig).await?;
        delete(&client, &objects).await
    })
}

fn block_on(future: impl Future<Output = Result<()>>) -> Result<()> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(future)
}

/// A client for the cluster of `kubeconfig` (a file, or a list of files as in `$KUBECONFIG`,
/// merged in order), else of the inferred configuration; fails unless the cluster answers.
pub async fn client(kubeconfig: Option<&Path>) -> Result<Client> {
    let config = match kubeconfig {
        Some(path) => {
            let kubeconfig = read_kubeconfig(path)?;
            Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                .await
                .with_context(|| format!("loading kubeconfig {}", path.display()))?
        }
        None => Config::infer().await.context(
            "no cluster configuration found ($KUBECONFIG, ~/.kube/config, in-cluster service \
             account); pass --kubeconfig",
        )?,
    };
    let url = config.cluster_url.clone();
    let client = Client::try_from(config).context("creating the Kubernetes client")?;
    client
        .apiserver_version()
        .await
        .map_err(explain)
        .with_context(|| format!("connecting to the cluster at {url}"))?;
    Ok(client)
}

fn read_kubeconfig(path: &Path) -> Result<Kubeconfig> {
    // A path that exists is one file even if it contains the list separator.
    let files: Vec<_> = if path.exists() {
        vec![path.to_path_buf()]
    } else {
        std::env::split_paths(path)
            .filter(|p| !p.as_os_str().is_empty())
            .collect()
    };
    let mut merged: Option<Kubeconfig> = None;
    for file in files {
        let next = Kubeconfig::read_from(&file)
            .with_context(|| format!("reading kubeconfig {}", file.display()))?;
        merged = Some(match merged {
            Some(m) => m
                .merge(next)
                .with_context(|| format!("merging kubeconfig {}", file.display()))?,
            None => next,
        });
    }
    merged.with_context(|| format!("no kubeconfig file in {:?}", path.display().to_string()))
}

/// Server-side applies `objects` (field manager [`FIELD_MANAGER`], forcing conflicts) in
/// dependency order, waiting for CustomResourceDefinitions to be Established; prints one line
/// per object. Stops at the first failure.
pub async fn apply(client: &Client, objects: &[Value]) -> Result<()> {
    let ordered = ordered(objects)?;
    let mut resolver = Resolver::new(client);
    let mut crds = Vec::new();
    for object in ordered {
        // Everything after the CRDs may be of their kinds, or be checked against them.
        if rank(kind(object)) > CRD_RANK {
            for crd in crds.drain(..) {
                wait_until_served(client, crd).await?;
            }
        }
        let applied = apply_one(client, &mut resolver, object)
            .await
            .with_context(|| format!("applying {}", describe(object)))?;
        println!("deploy: applied {applied}");
        if kind(object) == "CustomResourceDefinition" {
            crds.push(object);
        }
    }
    for crd in crds {
        wait_until_served(client, crd).await?;
    }
    println!("deploy: {} objects applied", objects.len());
    Ok(())
}

/// Deletes `objects` in the reverse of [`apply`]'s order (background propagation), printing
/// each; objects already gone are fine. Goes on after a failure and reports all failures at the
/// end. Does not wait for Namespaces and CRDs to finish terminating.
pub async fn delete(client: &Client, objects: &[Value]) -> Result<()> {
    let mut ordered = ordered(objects)?;
    ordered.reverse();
    let mut resolver = Resolver::new(client);
    let mut failed = Vec::new();
    for object in ordered {
        match delete_one(client, &mut resolver, object).await {
            Ok(line) => println!("undeploy: {line}"),
            Err(e) => {
                println!("undeploy: failed to delete {}: {e:#}", describe(object));
                failed.push(format!("{}: {e:#}", describe(object)));
            }
        }
    }
    if !failed.is_empty() {
        bail!(
            "{} of {} objects could not be deleted:\n  {}",
            failed.len(),
            objects.len(),
            failed.join("\n  ")
        );
    }
    Ok(())
}

fn kind(object: &Value) -> &str {
    object["kind"].as_str().unwrap_or_default()
}

/// `(apiVersion, kind, name)`, all required.
fn identity(object: &Value) -> Result<(&str, &str, &str)> {
    Ok((
        required(object, &object["apiVersion"], "apiVersion")?,
        required(object, &object["kind"], "kind")?,
        required(object, &object["metadata"]["name"], "metadata.name")?,
    ))
}

fn required<'a>(object: &Value, value: &'a Value, what: &str) -> Result<&'a str> {
    value
        .as_str()
        .filter(|s| !s.is_empty())
        .with_context(|| format!("{} has no {what}", describe(object)))
}

const CRD_RANK: u8 = 1;
/// Kinds [`rank`] does not know: custom resources, mostly.
const OTHER_RANK: u8 = 16;

/// Where a kind goes in the apply order (deletion goes the other way): what others refer to
/// first; webhooks, which route API requests to the new Pods, and custom resources last.
fn rank(kind: &str) -> u8 {
    match kind {
        "Namespace" => 0,
        "CustomResourceDefinition" => CRD_RANK,
        "PriorityClass" | "ResourceQuota" | "LimitRange" => 2,
        "ServiceAccount" => 3,
        "Secret" | "ConfigMap" => 4,
        "StorageClass" | "PersistentVolume" | "PersistentVolumeClaim" => 5,
        "ClusterRole" => 6,
        "ClusterRoleBinding" => 7,
        "Role" => 8,
        "RoleBinding" => 9,
        "Service" => 10,
        "Pod"
        | "ReplicaSet"
        | "Deployment"
        | "StatefulSet"
        | "DaemonSet"
        | "Job"
        | "CronJob"
        | "HorizontalPodAutoscaler"
        | "PodDisruptionBudget" => 11,
        "NetworkPolicy" | "IngressClass" | "Ingress" => 12,
        "ValidatingAdmissionPolicy" | "MutatingAdmissionPolicy" => 13,
        "ValidatingAdmissionPolicyBinding" | "MutatingAdmissionPolicyBinding" => 14,
        "APIService" | "ValidatingWebhookConfiguration" | "MutatingWebhookConfiguration" => 15,
        _ => OTHER_RANK,
    }
}

/// `objects` in apply order (stable: the rendered order within a rank), each checked to have an
/// apiVersion, kind and name.
fn ordered(objects: &[Value]) -> Result<Vec<&Value>> {
    for object in objects {
        identity(object)?;
    }
    let mut ordered: Vec<&Value> = objects.iter().collect();
    ordered.sort_by_key(|o| rank(kind(o)));
    Ok(ordered)
}

/// Discovery results by `(apiVersion, kind)`.
struct Resolver {
    client: Client,
    found: HashMap<(String, String), (ApiResource, ApiCapabilities)>,
}

impl Resolver {
    fn new(client: &Client) -> Self {
        Resolver {
            client: client.clone(),
            found: HashMap::new(),
        }
    }

    /// The resource of `kind` in `api_version`, or `None` when the cluster does not serve it.
    async fn resolve(
        &mut self,
        api_version: &str,
        kind: &str,
    ) -> Result<Option<(ApiResource, ApiCapabilities)>> {
        let key = (api_version.to_string(), kind.to_string());
        if let Some(found) = self.found.get(&key) {
            return Ok(Some(found.clone()));
        }
        match discovery::pinned_kind(&self.client, &gvk(api_version, kind)).await {
            Ok(found) => {
                self.found.insert(key, found.clone());
                Ok(Some(found))
            }
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(None),
            Err(kube::Error::Discovery(DiscoveryError::MissingKind(_))) => Ok(None),
            Err(e) => Err(explain(e))
                .with_context(|| format!("discovering the resource of {kind} ({api_version})")),
        }
    }
}

fn gvk(api_version: &str, kind: &str) -> GroupVersionKind {
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    GroupVersionKind::gvk(group, version, kind)
}

/// The API of `object`'s resource and the object as sent: in its namespace (the client's
/// default when it names none) if the resource is namespaced, without one otherwise.
async fn target(
    client: &Client,
    resolver: &mut Resolver,
    object: &Value,
) -> Result<Option<(Api<DynamicObject>, Value)>> {
    let (api_version, kind, _) = identity(object)?;
    let Some((resource, capabilities)) = resolver.resolve(api_version, kind).await? else {
        return Ok(None);
    };
    let mut body = object.clone();
    let api = if capabilities.scope == Scope::Namespaced {
        let namespace = object["metadata"]["namespace"]
            .as_str()
            .filter(|ns| !ns.is_empty())
            .unwrap_or(client.default_namespace())
            .to_string();
        body["metadata"]["namespace"] = Value::String(namespace.clone());
        Api::namespaced_with(client.clone(), &namespace, &resource)
    } else {
        if let Some(meta) = body["metadata"].as_object_mut() {
            meta.remove("namespace");
        }
        Api::all_with(client.clone(), &resource)
    };
    Ok(Some((api, body)))
}

/// Applies one object; returns its description.
async fn apply_one(client: &Client, resolver: &mut Resolver, object: &Value) -> Result<String> {
    let (api_version, kind, name) = identity(object)?;
    let Some((api, body)) = target(client, resolver, object).await? else {
        let hint = if rank(kind) == OTHER_RANK {
            " (is its CustomResourceDefinition installed?)"
        } else {
            ""
        };
        bail!("the cluster does not serve {kind} in {api_version}{hint}");
    };
    api.patch(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await
    .map_err(explain)?;
    Ok(describe(&body))
}

/// Deletes one object; returns what happened.
async fn delete_one(client: &Client, resolver: &mut Resolver, object: &Value) -> Result<String> {
    let (api_version, kind, name) = identity(object)?;
    let Some((api, body)) = target(client, resolver, object).await? else {
        // No resource, no objects of it (e.g. custom resources once their CRD is gone).
        return Ok(format!(
            "{} not found ({kind} is not served in {api_version})",
            describe(object)
        ));
    };
    let what = describe(&body);
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(format!("deleted {what}")),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(format!("{what} not found")),
        // A Namespace that is terminating already refuses a second deletion.
        Err(kube::Error::Api(s)) if s.code == 409 => {
            let terminating = api
                .get_opt(name)
                .await
                .map_err(explain)?
                .is_none_or(|o| o.metadata.deletion_timestamp.is_some());
            if terminating {
                Ok(format!("{what} is already being deleted"))
            } else {
                Err(explain(kube::Error::Api(s)))
            }
        }
        Err(e) => Err(explain(e)),
    }
}

/// Waits until the CustomResourceDefinition `crd` is Established and each of its served
/// versions is in API discovery (Established can precede discovery by a moment).
async fn wait_until_served(client: &Client, crd: &Value) -> Result<()> {
    let name = crd["metadata"]["name"].as_str().unwrap_or_default();
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let spec = wait::until(
        &format!("CustomResourceDefinition {name} to be Established"),
        CRD_TIMEOUT,
        || async {
            let crd = crds.get(name).await.map_err(|e| explain(e).to_string())?;
            let conditions = crd.status.and_then(|s| s.conditions).unwrap_or_default();
            if conditions
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True")
            {
                return Ok(crd.spec);
            }
            // NamesAccepted=False (a name taken by another CRD) is the usual reason.
            let observed: Vec<String> = conditions
                .iter()
                .map(|c| {
                    let detail = c.message.as_deref().unwrap_or_default();
                    format!("{}={} {detail}", c.type_, c.status)
                        .trim()
                        .to_string()
                })
                .collect();
            Err(if observed.is_empty() {
                "no conditions yet".to_string()
            } else {
                observed.join("; ")
            })
        },
    )
    .await?;
    for version in spec.versions.iter().filter(|v| v.served) {
        let gvk = GroupVersionKind::gvk(&spec.group, &version.name, &spec.names.kind);
        wait::until(
            &format!(
                "{}/{} {} to be served",
                spec.group, version.name, spec.names.kind
            ),
            CRD_TIMEOUT,
            || async {
                discovery::pinned_kind(client, &gvk)
                    .await
                    .map(|_| ())
                    .map_err(|e| explain(e).to_string())
            },
        )
        .await?;
    }
    println!("deploy: CustomResourceDefinition {name} established");
    Ok(())
}

/// The API server's message for API errors (the error's own text repeats the whole status).
fn explain(e: kube::Error) -> anyhow::Error {
    match e {
        kube::Error::Api(s) => anyhow!("{} ({}, HTTP {})", s.message, s.reason, s.code),
        e => anyhow::Error::new(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn object(kind: &str, name: &str) -> Value {
        json!({ "apiVersion": "v1", "kind": kind, "metadata": { "name": name } })
    }

    #[test]
    fn applies_in_dependency_order_keeping_the_rendered_order_within_a_kind() {
        let objects = [
            object("Widget", "w"),
            object("Deployment", "d"),
            object("ValidatingAdmissionPolicyBinding", "b"),
            object("ClusterRole", "r2"),
            object("ValidatingAdmissionPolicy", "p"),
            object("ServiceAccount", "sa"),
            object("CustomResourceDefinition", "c"),
            object("ClusterRole", "r1"),
            object("RoleBinding", "rb"),
            object("Namespace", "n"),
            object("Service", "s"),
        ];
        let names: Vec<&str> = ordered(&objects)
            .expect("ordered")
            .iter()
            .map(|o| o["metadata"]["name"].as_str().unwrap_or_default())
            .collect();
        assert_eq!(
            names,
            ["n", "c", "sa", "r2", "r1", "rb", "s", "d", "p", "b", "w"]
        );
    }

    #[test]
    fn objects_without_identity_are_refused_before_anything_is_sent() {
        let e = ordered(&[json!({ "apiVersion": "v1", "kind": "ConfigMap", "metadata": {} })])
            .expect_err("no name");
        assert!(e.to_string().contains("no metadata.name"), "{e}");
    }

    #[test]
    fn a_missing_config_tree_is_an_error_naming_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let e = deploy(dir.path(), None, None, None).expect_err("no config");
        assert!(format!("{e:#}").contains("config/default"), "{e:#}");
    }

    #[tokio::test]
    async fn an_unreachable_cluster_is_an_error_naming_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let kubeconfig = dir.path().join("kubeconfig");
        // Port 1 on the loopback address: nothing listens there.
        std::fs::write(
            &kubeconfig,
            "apiVersion: v1\nkind: Config\ncurrent-context: c\n\
             clusters: [{name: k, cluster: {server: 'https://127.0.0.1:1'}}]\n\
             users: [{name: u, user: {token: t}}]\n\
             contexts: [{name: c, context: {cluster: k, user: u}}]\n",
        )
        .expect("write");
        let e = client(Some(&kubeconfig)).await.err().expect("unreachable");
        assert!(
            format!("{e:#}").contains("connecting to the cluster at https://127.0.0.1:1"),
            "{e:#}"
        );
    }

    #[test]
    fn an_unreadable_kubeconfig_is_an_error_naming_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("kubeconfig");
        let e = read_kubeconfig(&missing).expect_err("missing");
        assert!(
            format!("{e:#}").contains(&missing.display().to_string()),
            "{e:#}"
        );
    }
}
