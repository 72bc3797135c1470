//! The control plane is real: each test exercises a behaviour that only the real components
//! provide, and fails when the component behind it is missing (try `OPERON_ENVTEST_SKIP=
//! kube-controller-manager` or `=kwok`).

use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch,
    PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::core::Status;
use operon_cluster::wait;
use serde_json::json;

const TIMEOUT: Duration = Duration::from_secs(60);

fn api_error(err: &kube::Error) -> Option<&Status> {
    match err {
        kube::Error::Api(status) => Some(status),
        _ => None,
    }
}

fn config_map(name: &str) -> Result<ConfigMap> {
    Ok(serde_json::from_value(json!({
        "metadata": { "name": name },
        "data": { "k": "v" },
    }))?)
}

#[tokio::test]
async fn crd_with_structural_schema_is_served_and_validates() -> Result<()> {
    let env = operon_envtest::shared().await?;
    let ns = env.namespace("crd").await?;
    let client = env.client().await?;
    // A group per test run, so reruns against an existing cluster don't collide.
    let group = format!("{}.envtest.operon.dev", ns.name());
    let crd: CustomResourceDefinition = serde_json::from_value(json!({
        "metadata": { "name": format!("widgets.{group}") },
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": { "plural": "widgets", "singular": "widget", "kind": "Widget" },
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "schema": { "openAPIV3Schema": {
                    "type": "object",
                    "properties": { "spec": {
                        "type": "object",
                        "required": ["size"],
                        "properties": {
                            "size": { "type": "integer", "minimum": 1, "maximum": 10 },
                            "color": { "type": "string", "enum": ["red", "blue"] },
                        },
                    }},
                }},
            }],
        },
    }))?;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.create(&PostParams::default(), &crd).await?;
    let name = format!("widgets.{group}");
    wait::until("CRD Established", TIMEOUT, || async {
        let crd = crds.get(&name).await.map_err(|e| e.to_string())?;
        let established = crd
            .status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True");
        if established {
            Ok(())
        } else {
            Err("not established".into())
        }
    })
    .await?;

    let gvk = GroupVersionKind::gvk(&group, "v1", "Widget");
    let widgets: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), &ns, &ApiResource::from_gvk(&gvk));
    let widget = |name: &str, spec: serde_json::Value| -> Result<DynamicObject> {
        Ok(serde_json::from_value(json!({
            "apiVersion": format!("{group}/v1"), "kind": "Widget",
            "metadata": { "name": name }, "spec": spec,
        }))?)
    };
    // Discovery and the REST path can lag Established by a moment; the first create retries.
    let valid = widget("ok", json!({ "size": 3, "color": "red" }))?;
    wait::until("Widget create", TIMEOUT, || async {
        match widgets.create(&PostParams::default(), &valid).await {
            Ok(_) => Ok(()),
            Err(e) if api_error(&e).is_some_and(|s| s.code == 409) => Ok(()),
            Err(e) => Err(e.to_string()),
        }
    })
    .await?;
    let stored = widgets.get("ok").await?;
    assert_eq!(stored.data["spec"]["size"], 3);

    let err = widgets
        .create(
            &PostParams::default(),
            &widget("big", json!({ "size": 11 }))?,
        )
        .await
        .err()
        .context("size 11 was accepted")?;
    let status = api_error(&err).context("not an API error")?;
    assert_eq!(status.code, 422, "{status:?}");
    assert!(
        status.message.contains("spec.size") && status.message.contains("10"),
        "message does not name the field and bound: {}",
        status.message
    );

    let err = widgets
        .create(
            &PostParams::default(),
            &widget("green", json!({ "size": 1, "color": "green" }))?,
        )
        .await
        .err()
        .context("color green was accepted")?;
    let message = &api_error(&err).context("not an API error")?.message;
    assert!(
        message.contains("spec.color") && message.contains("\"red\""),
        "{message}"
    );

    crds.delete(&name, &DeleteParams::default()).await?;
    Ok(())
}

#[tokio::test]
async fn watch_delivers_added_modified_deleted() -> Result<()> {
    let env = operon_envtest::shared().await?;
    let ns = env.namespace("watch").await?;
    let cms: Api<ConfigMap> = Api::namespaced(env.client().await?, &ns);
    // Only the object under test: kube-controller-manager adds `kube-root-ca.crt` to every new
    // namespace at a moment of its own choosing.
    let only_watched = "metadata.name=watched";
    let rv = cms
        .list_metadata(&ListParams::default().fields(only_watched))
        .await?
        .metadata
        .resource_version
        .context("list without resourceVersion")?;
    let stream = cms
        .watch(
            &WatchParams::default().fields(only_watched).timeout(30),
            &rv,
        )
        .await?
        .boxed();

    cms.create(&PostParams::default(), &config_map("watched")?)
        .await?;
    cms.patch(
        "watched",
        &PatchParams::default(),
        &Patch::Merge(json!({ "data": { "k": "changed" } })),
    )
    .await?;
    cms.delete("watched", &DeleteParams::default()).await?;

    let mut seen = Vec::new();
    let mut stream = stream;
    let collect = async {
        while let Some(event) = stream.try_next().await? {
            let kind = match event {
                WatchEvent::Added(cm) => ("ADDED", cm),
                WatchEvent::Modified(cm) => ("MODIFIED", cm),
                WatchEvent::Deleted(cm) => ("DELETED", cm),
                WatchEvent::Bookmark(_) => continue,
                WatchEvent::Error(e) => bail!("watch error: {e:?}"),
            };
            let value = kind.1.data.unwrap_or_default().get("k").cloned();
            seen.push((kind.0, value));
            if kind.0 == "DELETED" {
                break;
            }
        }
        Ok(())
    };
    tokio::time::timeout(TIMEOUT, collect)
        .await
        .context("watch did not deliver DELETED")??;
    let expected = vec![
        ("ADDED", Some("v".to_string())),
        ("MODIFIED", Some("changed".to_string())),
        ("DELETED", Some("changed".to_string())),
    ];
    assert_eq!(seen, expected);
    Ok(())
}

#[tokio::test]
async fn deleting_an_owner_garbage_collects_its_dependent() -> Result<()> {
    let env = operon_envtest::shared().await?;
    let ns = env.namespace("gc").await?;
    let cms: Api<ConfigMap> = Api::namespaced(env.client().await?, &ns);
    let owner = cms
        .create(&PostParams::default(), &config_map("owner")?)
        .await?;
    let mut dependent = config_map("dependent")?;
    dependent.metadata.owner_references = Some(vec![serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ConfigMap", "name": "owner",
        "uid": owner.metadata.uid.context("owner without uid")?,
    }))?]);
    cms.create(&PostParams::default(), &dependent).await?;
    // Something without an owner must survive: the collector deletes only dependents.
    cms.create(&PostParams::default(), &config_map("bystander")?)
        .await?;

    cms.delete("owner", &DeleteParams::background()).await?;
    wait::until("dependent collected", TIMEOUT, || async {
        match cms.get_opt("dependent").await {
            Ok(None) => Ok(()),
            Ok(Some(_)) => Err("dependent still exists".into()),
            Err(e) => Err(e.to_string()),
        }
    })
    .await?;
    ensure!(
        cms.get_opt("bystander").await?.is_some(),
        "bystander was deleted"
    );
    Ok(())
}

#[tokio::test]
async fn deleting_a_namespace_completes() -> Result<()> {
    let env = operon_envtest::shared().await?;
    let ns = env.namespace("nsdel").await?;
    let client = env.client().await?;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    cms.create(&PostParams::default(), &config_map("content")?)
        .await?;
    let namespaces: Api<Namespace> = Api::all(client);
    namespaces.delete(&ns, &DeleteParams::default()).await?;
    wait::until("namespace deleted", TIMEOUT, || async {
        match namespaces.get_opt(&ns).await {
            Ok(None) => Ok(()),
            Ok(Some(n)) => Err(format!(
                "phase {:?}",
                n.status.and_then(|s| s.phase).unwrap_or_default()
            )),
            Err(e) => Err(e.to_string()),
        }
    })
    .await?;
    Ok(())
}

fn role(name: &str, resource: &str, verbs: &[&str]) -> Result<Role> {
    Ok(serde_json::from_value(json!({
        "metadata": { "name": name },
        "rules": [{ "apiGroups": [""], "resources": [resource], "verbs": verbs }],
    }))?)
}

fn binding(name: &str, role: &str, subject: serde_json::Value) -> Result<RoleBinding> {
    Ok(serde_json::from_value(json!({
        "metadata": { "name": name },
        "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role },
        "subjects": [subject],
    }))?)
}

#[tokio::test]
async fn impersonated_user_needs_a_role_to_create() -> Result<()> {
    let env = operon_envtest::shared().await?;
    let ns = env.namespace("rbac-user").await?;
    let other = env.namespace("rbac-other").await?;
    let admin = env.client().await?;
    let alice = env.impersonating("alice", &["developers"]).await?;
    let as_alice: Api<ConfigMap> = Api::namespaced(alice.clone(), &ns);

    let err = as_alice
        .create(&PostParams::default(), &config_map("denied")?)
        .await
        .err()
        .context("alice could create without any role")?;
    let status = api_error(&err).context("not an API error")?;
    assert_eq!(status.code, 403, "{status:?}");
    assert!(status.message.contains("alice"), "{}", status.message);

    Api::<Role>::namespaced(admin.clone(), &ns)
        .create(
            &PostParams::default(),
            &role("cm-writer", "configmaps", &["create", "get"])?,
        )
        .await?;
    Api::<RoleBinding>::namespaced(admin, &ns)
        .create(
            &PostParams::default(),
            &binding(
                "alice-cm-writer",
                "cm-writer",
                json!({ "kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "alice" }),
            )?,
        )
        .await?;
    // The authorizer's informer picks the binding up within moments; poll, don't sleep.
    let allowed = config_map("allowed")?;
    wait::until("alice allowed", TIMEOUT, || async {
        match as_alice.create(&PostParams::default(), &allowed).await {
            Ok(_) => Ok(()),
            Err(e) if api_error(&e).is_some_and(|s| s.code == 403) => Err(e.to_string()),
            Err(e) => Err(format!("unexpected: {e}")),
        }
    })
    .await?;
    // The Role is namespaced: the other namespace stays closed.
    let err = Api::<ConfigMap>::namespaced(alice, &other)
        .create(&PostParams::default(), &config_map("elsewhere")?)
        .await
        .err()
        .context("alice could create in another namespace")?;
    assert_eq!(api_error(&err).map(|s| s.code), Some(403));
    Ok(())
}

#[tokio::test]
async fn service_account_token_authenticates_and_rbac_applies() -> Result<()> {
    let env = operon_envtest::shared().await?;
    let ns = env.namespace("rbac-sa").await?;
    let robot = env.service_account_client(&ns, "robot").await?;

    let review: SelfSubjectReview = serde_json::from_value(json!({}))?;
    let me = Api::<SelfSubjectReview>::all(robot.clone())
        .create(&PostParams::default(), &review)
        .await?;
    let username = me
        .status
        .and_then(|s| s.user_info)
        .and_then(|u| u.username)
        .unwrap_or_default();
    assert_eq!(
        username,
        format!("system:serviceaccount:{}:robot", ns.name())
    );

    let pods: Api<Pod> = Api::namespaced(robot, &ns);
    let err = pods
        .list(&Default::default())
        .await
        .err()
        .context("a fresh ServiceAccount could list pods")?;
    assert_eq!(api_error(&err).map(|s| s.code), Some(403), "{err}");

    let admin = env.client().await?;
    Api::<Role>::namespaced(admin.clone(), &ns)
        .create(
            &PostParams::default(),
            &role("pod-reader", "pods", &["list"])?,
        )
        .await?;
    Api::<RoleBinding>::namespaced(admin, &ns)
        .create(
            &PostParams::default(),
            &binding(
                "robot-pod-reader",
                "pod-reader",
                json!({ "kind": "ServiceAccount", "name": "robot", "namespace": ns.name() }),
            )?,
        )
        .await?;
    wait::until("robot allowed to list pods", TIMEOUT, || async {
        pods.list(&Default::default())
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn pod_is_scheduled_onto_a_kwok_node_and_runs() -> Result<()> {
    let env = operon_envtest::shared().await?;
    let ns = env.namespace("pod").await?;
    let pods: Api<Pod> = Api::namespaced(env.client().await?, &ns);
    let pod: Pod = serde_json::from_value(json!({
        "metadata": { "name": "busybox", "labels": { "app": "busybox" } },
        "spec": { "containers": [{
            "name": "busybox", "image": "busybox",
            "command": ["/bin/sh", "-ec", "while :; do echo hello; sleep 5; done"],
        }]},
    }))?;
    pods.create(&PostParams::default(), &pod).await?;
    let (node, ip) = wait::until("Pod Running with an IP", TIMEOUT, || async {
        let pod = pods.get("busybox").await.map_err(|e| e.to_string())?;
        let node = pod.spec.and_then(|s| s.node_name).unwrap_or_default();
        let status = pod.status.unwrap_or_default();
        match (status.phase.as_deref(), status.pod_ip) {
            (Some("Running"), Some(ip)) if !node.is_empty() => Ok((node, ip)),
            (phase, ip) => Err(format!("node {node:?} phase {phase:?} ip {ip:?}")),
        }
    })
    .await?;
    if let Some(cp) = env.control_plane() {
        assert!(
            cp.nodes().contains(&node),
            "scheduled to unknown node {node}"
        );
    }
    let ip: std::net::Ipv4Addr = ip.parse()?;
    assert!(
        ip.octets()[0] == 10 && ip.octets()[1] == 244,
        "pod IP {ip} outside the pod CIDR"
    );
    Ok(())
}
