//! pod-operator's Helm chart installed as a user installs it: `helm install --create-namespace`
//! with a release name of one's own, twice, in two namespaces, on the real node, from the image
//! `cargo xtask deploy` pushed.
//!
//! config/'s pod-operator is scaled to zero meanwhile (and back afterwards), so that a Pod
//! that appears for a PodRequest is a release's doing. The CRD is config/'s: the releases find
//! it installed by someone else and leave it alone (installing it would fail with "exists and
//! cannot be imported"), and it stays after both are uninstalled.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::ListParams;
use kube::{Api, Client};
use operon_cluster::wait;
use serde_json::json;

use super::{Deployed, POD_OPERATOR_NS, deployed, kubectl, node_alone, repo_root};

/// `(release, namespace)`: names of one's own, not the chart's.
const RELEASES: [(&str, &str); 2] = [("podreq-a", "helm-podreq-a"), ("podreq-b", "helm-podreq-b")];
const CONFIG_DEPLOYMENT: &str = "pod-operator-controller-manager";
const CRD: &str = "podrequests.pod.jewzaam.org";
const POD_SECURITY: [&str; 3] = [
    "pod-security.kubernetes.io/enforce",
    "pod-security.kubernetes.io/audit",
    "pod-security.kubernetes.io/warn",
];

/// `helm`: `$HELM` (`cargo xtask test` sets it), else the pinned build in the cache.
fn helm_binary() -> Result<PathBuf> {
    if let Some(helm) = std::env::var_os("HELM") {
        return Ok(PathBuf::from(helm));
    }
    let built = operon_assets::helm_binary();
    ensure!(
        built.is_file(),
        "helm is not built: `cargo xtask test` builds it into {}",
        built.display()
    );
    Ok(built)
}

fn helm(binary: &Path, kubeconfig: &Path, args: &[&str]) -> Result<String> {
    let out = Command::new(binary)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .output()
        .with_context(|| format!("running helm {args:?}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    ensure!(
        out.status.success(),
        "helm {args:?} failed:\n{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(stdout)
}

/// The release's objects of a cluster-scoped kind.
async fn cluster_scoped(client: &Client, release: &str) -> Result<Vec<String>> {
    let selector = ListParams::default().labels(&format!("app.kubernetes.io/instance={release}"));
    let mut names = Vec::new();
    let roles: Api<ClusterRole> = Api::all(client.clone());
    for role in roles.list(&selector).await?.items {
        names.push(format!(
            "ClusterRole/{}",
            role.metadata.name.unwrap_or_default()
        ));
    }
    let bindings: Api<ClusterRoleBinding> = Api::all(client.clone());
    for binding in bindings.list(&selector).await?.items {
        names.push(format!(
            "ClusterRoleBinding/{}",
            binding.metadata.name.unwrap_or_default()
        ));
    }
    let policies = kubectl_names(client, release).await?;
    names.extend(policies);
    Ok(names)
}

/// The release's ValidatingAdmissionPolicies and bindings, through the dynamic API.
async fn kubectl_names(client: &Client, release: &str) -> Result<Vec<String>> {
    use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
    let selector = ListParams::default().labels(&format!("app.kubernetes.io/instance={release}"));
    let mut names = Vec::new();
    for kind in [
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
    ] {
        let gvk = GroupVersionKind::gvk("admissionregistration.k8s.io", "v1", kind);
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &ApiResource::from_gvk(&gvk));
        for object in api.list(&selector).await?.items {
            names.push(format!(
                "{kind}/{}",
                object.metadata.name.unwrap_or_default()
            ));
        }
    }
    Ok(names)
}

/// config/'s pod-operator replicas.
async fn scale_config_operator(d: &Deployed, client: &Client, replicas: u32) -> Result<()> {
    kubectl(
        &d.kubeconfig,
        &[
            "scale",
            "-n",
            POD_OPERATOR_NS,
            &format!("deployment/{CONFIG_DEPLOYMENT}"),
            &format!("--replicas={replicas}"),
        ],
    )?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), POD_OPERATOR_NS);
    let selector = ListParams::default().labels("app.kubernetes.io/name=pod-operator");
    wait::until(
        &format!("config/'s pod-operator at {replicas} ready replicas"),
        Duration::from_secs(180),
        || async {
            let list = pods.list(&selector).await.map_err(|e| e.to_string())?;
            let ready = list
                .items
                .iter()
                .filter(|p| {
                    p.metadata.deletion_timestamp.is_none()
                        && p.status
                            .as_ref()
                            .and_then(|s| s.conditions.as_ref())
                            .is_some_and(|c| {
                                c.iter().any(|c| c.type_ == "Ready" && c.status == "True")
                            })
                })
                .count();
            if list.items.len() == replicas as usize && ready == replicas as usize {
                Ok(())
            } else {
                Err(format!("{} Pods, {ready} ready", list.items.len()))
            }
        },
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn helm_releases_install_side_by_side_and_uninstall_keeping_the_crd() -> Result<()> {
    let d = deployed().await?;
    let _node = node_alone("helm_releases_install_side_by_side").await?;
    let t0 = Instant::now();
    let binary = helm_binary()?;
    let client = d.env.client().await?;
    scale_config_operator(d, &client, 0).await?;
    let result = releases(d, &binary, &client).await;
    if result.is_err() {
        for (release, namespace) in RELEASES {
            let _ = helm(
                &binary,
                &d.kubeconfig,
                &["uninstall", release, "--namespace", namespace, "--wait"],
            );
        }
    }
    for (_, namespace) in RELEASES {
        let _ = kubectl(
            &d.kubeconfig,
            &["delete", "namespace", namespace, "--wait=false"],
        );
    }
    let restored = scale_config_operator(d, &client, 2).await;
    eprintln!(
        "helm: two releases installed, checked and uninstalled in {:.1?}",
        t0.elapsed()
    );
    result.and(restored)
}

async fn releases(d: &Deployed, binary: &Path, client: &Client) -> Result<()> {
    // The image config/'s Deployment runs, by digest, as `cargo xtask deploy` pushed it.
    let image = kubectl(
        &d.kubeconfig,
        &[
            "get",
            "deployment",
            CONFIG_DEPLOYMENT,
            "-n",
            POD_OPERATOR_NS,
            "-o",
            "jsonpath={.spec.template.spec.containers[0].image}",
        ],
    )?;
    let (repository, tag) = operon_manifests::helm::split_image(image.trim());
    let chart = repo_root().join("charts/pod-operator");
    let chart = chart.to_string_lossy().to_string();
    let requests = d.env.namespace("helm-requests").await?;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());

    let install = |release: &'static str, namespace: &'static str| {
        let (chart, repository, tag) = (chart.clone(), repository.clone(), tag.clone());
        async move {
            let t = Instant::now();
            let notes = helm(
                binary,
                &d.kubeconfig,
                &[
                    "install",
                    release,
                    &chart,
                    "--namespace",
                    namespace,
                    "--create-namespace",
                    "--wait",
                    "--timeout",
                    "5m",
                    "--set",
                    &format!("image.repository={repository},image.tag={tag}"),
                ],
            )?;
            eprintln!("helm: {release} installed in {:.1?}", t.elapsed());
            ensure!(
                notes.contains("labelled for the restricted Pod Security level")
                    && notes.contains(&format!(
                        "deployment/{release}-pod-operator-controller-manager"
                    ))
                    && !notes.contains("Generated by"),
                "{notes}"
            );
            check_release(client, release, namespace).await
        }
    };

    install(RELEASES[0].0, RELEASES[0].1).await?;
    request_pod(client, &requests, "helm-first").await?;
    install(RELEASES[1].0, RELEASES[1].1).await?;

    // The first release's uninstall leaves the second's objects, and the CRD.
    let (first, first_namespace) = RELEASES[0];
    let second_objects = cluster_scoped(client, RELEASES[1].0).await?;
    helm(
        binary,
        &d.kubeconfig,
        &["uninstall", first, "--namespace", first_namespace, "--wait"],
    )?;
    let left = cluster_scoped(client, first).await?;
    ensure!(left.is_empty(), "{first} uninstalled, left {left:?}");
    ensure!(
        cluster_scoped(client, RELEASES[1].0).await? == second_objects,
        "uninstalling {first} changed the other release's objects"
    );
    ensure!(crds.get_opt(CRD).await?.is_some(), "{CRD} removed");
    // Only the second release runs now.
    request_pod(client, &requests, "helm-second").await?;

    let (second, second_namespace) = RELEASES[1];
    helm(
        binary,
        &d.kubeconfig,
        &[
            "uninstall",
            second,
            "--namespace",
            second_namespace,
            "--wait",
        ],
    )?;
    let left = cluster_scoped(client, second).await?;
    ensure!(left.is_empty(), "{second} uninstalled, left {left:?}");
    ensure!(crds.get_opt(CRD).await?.is_some(), "{CRD} removed");
    Ok(())
}

/// The release runs its two replicas, Ready, as its own ServiceAccount, in a namespace with
/// the Pod Security labels; its cluster-scoped objects are its own.
async fn check_release(client: &Client, release: &str, namespace: &str) -> Result<()> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let labels = namespaces
        .get(namespace)
        .await?
        .metadata
        .labels
        .unwrap_or_default();
    for label in POD_SECURITY {
        ensure!(
            labels.get(label).map(String::as_str) == Some("restricted"),
            "namespace {namespace}: {labels:?}"
        );
    }
    let fullname = format!("{release}-pod-operator");
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let deployment = deployments
        .get(&format!("{fullname}-controller-manager"))
        .await?;
    let ready = deployment
        .status
        .as_ref()
        .and_then(|s| s.ready_replicas)
        .unwrap_or(0);
    ensure!(ready == 2, "{release}: {ready} ready replicas");
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let selector = format!(
        "app.kubernetes.io/name=pod-operator,app.kubernetes.io/instance={release},control-plane=controller-manager"
    );
    let pods = pods
        .list(&ListParams::default().labels(&selector))
        .await?
        .items;
    ensure!(pods.len() == 2, "{release}: {} Pods", pods.len());
    for pod in &pods {
        let spec = pod.spec.clone().unwrap_or_default();
        ensure!(
            spec.service_account_name.as_deref()
                == Some(format!("{fullname}-controller-manager").as_str()),
            "{:?}",
            spec.service_account_name
        );
        ensure!(spec.node_name.as_deref() == Some(operon_cluster::node::NODE_NAME));
    }
    let objects = cluster_scoped(client, release).await?;
    ensure!(objects.len() >= 9, "{release}: {objects:?}");
    for object in &objects {
        let name = object.split_once('/').map(|(_, n)| n).unwrap_or_default();
        ensure!(name.starts_with(&format!("{fullname}-")), "{object}");
    }
    // The bindings name the release's ServiceAccount in its namespace.
    let bindings: Api<ClusterRoleBinding> = Api::all(client.clone());
    let selector = ListParams::default().labels(&format!("app.kubernetes.io/instance={release}"));
    for binding in bindings.list(&selector).await?.items {
        for subject in binding.subjects.unwrap_or_default() {
            ensure!(
                subject.namespace.as_deref() == Some(namespace)
                    && subject.name == format!("{fullname}-controller-manager"),
                "{subject:?}"
            );
        }
    }
    Ok(())
}

/// A PodRequest in `namespace` gets its Pod, running.
async fn request_pod(client: &Client, namespace: &str, name: &str) -> Result<()> {
    let request = json!({
        "apiVersion": "pod.jewzaam.org/v1alpha1", "kind": "PodRequest",
        "metadata": { "name": name, "namespace": namespace },
        "spec": {
            "name": name, "image": "busybox",
            "command": ["/bin/sh", "-ec", "while :; do sleep 5; done"],
        },
    });
    operon_cluster::apply::apply(client, &request, "kubectl").await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let phase = wait::until(
        &format!("PodRequest {name}'s Pod running"),
        Duration::from_secs(120),
        || async {
            let pod = pods
                .get_opt(name)
                .await
                .map_err(|e| e.to_string())?
                .ok_or_else(|| "no Pod yet".to_string())?;
            let phase = pod.status.and_then(|s| s.phase).unwrap_or_default();
            if phase == "Running" {
                Ok(phase)
            } else {
                Err(phase)
            }
        },
    )
    .await?;
    if phase != "Running" {
        bail!("{name}: {phase}");
    }
    Ok(())
}
