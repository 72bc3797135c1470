//! What `deploy` waits for and what `undeploy`/`uninstall` delete first: the Deployment's
//! rollout (as `kubectl rollout status` judges it), and the project's custom resources, whose
//! finalizers only the running operator removes. Deleting the CRDs or the operator first would
//! leave the resources, and so their CRDs, Terminating for ever.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, ListParams};
use kube::{Client, ResourceExt};
use serde_json::Value;

/// How often the cluster is asked again.
const POLL: Duration = Duration::from_millis(500);

/// The CustomResourceDefinitions among `objects`.
pub fn crds(objects: &[Value]) -> Vec<Value> {
    objects
        .iter()
        .filter(|o| o["kind"] == "CustomResourceDefinition")
        .cloned()
        .collect()
}

/// The resource of a CRD's storage version (any served one if none is marked), and whether it
/// is namespaced.
fn resource_of(crd: &CustomResourceDefinition) -> Option<(ApiResource, bool)> {
    let spec = &crd.spec;
    let version = spec
        .versions
        .iter()
        .find(|v| v.storage)
        .or_else(|| spec.versions.iter().find(|v| v.served))?;
    let resource = ApiResource {
        group: spec.group.clone(),
        version: version.name.clone(),
        api_version: format!("{}/{}", spec.group, version.name),
        kind: spec.names.kind.clone(),
        plural: spec.names.plural.clone(),
    };
    Some((resource, spec.scope == "Namespaced"))
}

/// `<plural>.<group> [<namespace>/]<name>`.
fn describe(resource: &ApiResource, object: &DynamicObject) -> String {
    let name = object.name_any();
    let at = match object.namespace() {
        Some(ns) => format!("{ns}/{name}"),
        None => name,
    };
    format!("{}.{} {at}", resource.plural, resource.group)
}

/// The custom resources of `crds` (as found in the cluster) that exist now, in all namespaces.
async fn remaining(
    client: &Client,
    resources: &[(ApiResource, bool)],
) -> Result<Vec<(ApiResource, bool, DynamicObject)>> {
    let mut found = Vec::new();
    for (resource, namespaced) in resources {
        let api: Api<DynamicObject> = Api::all_with(client.clone(), resource);
        match api.list(&ListParams::default()).await {
            Ok(list) => found.extend(
                list.items
                    .into_iter()
                    .map(|o| (resource.clone(), *namespaced, o)),
            ),
            // The CRD is gone (or not served yet): nothing of it is left.
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("listing {}.{}", resource.plural, resource.group));
            }
        }
    }
    Ok(found)
}

/// Deletes every custom resource of `crds` in the cluster (all namespaces) and waits, up to
/// `timeout`, until they are gone, i.e. until the operator has run its cleanup and removed its
/// finalizers. Fails naming the ones left, with what to do.
pub async fn delete_custom_resources(
    client: &Client,
    crds: &[Value],
    timeout: Duration,
    progress: &dyn Fn(String),
) -> Result<()> {
    let crd_api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let mut resources = Vec::new();
    for crd in crds {
        let name = crd["metadata"]["name"].as_str().unwrap_or_default();
        // The cluster's CRD, not the file's: that is what its objects are stored as.
        if let Some(live) = crd_api
            .get_opt(name)
            .await
            .with_context(|| format!("reading CRD {name}"))?
            && let Some(resource) = resource_of(&live)
        {
            resources.push(resource);
        }
    }
    let existing = remaining(client, &resources).await?;
    if existing.is_empty() {
        return Ok(());
    }
    for (resource, namespaced, object) in &existing {
        let name = object.name_any();
        let api: Api<DynamicObject> = match (namespaced, object.namespace()) {
            (true, Some(ns)) => Api::namespaced_with(client.clone(), &ns, resource),
            _ => Api::all_with(client.clone(), resource),
        };
        match api.delete(&name, &DeleteParams::default()).await {
            Ok(_) => progress(format!("deleting {}", describe(resource, object))),
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => {
                return Err(e).with_context(|| format!("deleting {}", describe(resource, object)));
            }
        }
    }
    progress(format!(
        "waiting up to {}s for the operator to finalize {} custom resource(s)",
        timeout.as_secs(),
        existing.len()
    ));
    let deadline = Instant::now() + timeout;
    loop {
        let left = remaining(client, &resources).await?;
        if left.is_empty() {
            progress(format!("{} custom resource(s) finalized", existing.len()));
            return Ok(());
        }
        if Instant::now() >= deadline {
            let stuck: Vec<String> = left
                .iter()
                .map(|(r, _, o)| {
                    format!(
                        "{} (finalizers: {})",
                        describe(r, o),
                        o.finalizers().join(", ")
                    )
                })
                .collect();
            let (r, namespaced, o) = &left[0];
            let namespace = match (namespaced, o.namespace()) {
                (true, Some(ns)) => format!(" -n {ns}"),
                _ => String::new(),
            };
            bail!(
                "{} custom resource(s) still exist {}s after they were deleted: {}. Their \
                 finalizers are removed by the running operator once it has cleaned up after \
                 them: check that it runs (its Pods and logs) and run this again, or allow it \
                 longer with --timeout. To drop one without the operator's cleanup: kubectl \
                 patch {}.{} {}{namespace} --type=merge -p '{{\"metadata\":{{\"finalizers\":null}}}}'. \
                 Nothing else was deleted.",
                left.len(),
                timeout.as_secs(),
                stuck.join("; "),
                r.plural,
                r.group,
                o.name_any(),
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Waits, up to `timeout`, until the CRDs named in `crds` are gone from the cluster.
pub async fn wait_crds_gone(client: &Client, crds: &[Value], timeout: Duration) -> Result<()> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let deadline = Instant::now() + timeout;
    loop {
        let mut left = Vec::new();
        for crd in crds {
            let name = crd["metadata"]["name"].as_str().unwrap_or_default();
            if let Some(live) = api
                .get_opt(name)
                .await
                .with_context(|| format!("reading CRD {name}"))?
            {
                let conditions = live
                    .status
                    .and_then(|s| s.conditions)
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|c| c.type_ == "Terminating" || c.type_ == "NamesAccepted")
                    .filter_map(|c| c.message)
                    .collect::<Vec<_>>();
                left.push(format!("{name} ({})", conditions.join("; ")));
            }
        }
        if left.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "CRD(s) still Terminating {}s after they were deleted: {}. A CRD goes once all \
                 its objects are gone: list them with `kubectl get <plural>.<group> -A`",
                timeout.as_secs(),
                left.join(", ")
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Why a Deployment's rollout is not done, or `None` when it is (the test of `kubectl rollout
/// status`: the controller saw the latest spec, every replica is updated, old ones are gone
/// and the updated ones are available).
pub fn rollout_pending(deployment: &Deployment) -> Option<String> {
    let generation = deployment.metadata.generation.unwrap_or(0);
    let wanted = deployment
        .spec
        .as_ref()
        .and_then(|s| s.replicas)
        .unwrap_or(1);
    let Some(status) = &deployment.status else {
        return Some("no status yet".into());
    };
    if status.observed_generation.unwrap_or(0) < generation {
        return Some("waiting for the Deployment's spec to be observed".into());
    }
    let updated = status.updated_replicas.unwrap_or(0);
    let replicas = status.replicas.unwrap_or(0);
    let available = status.available_replicas.unwrap_or(0);
    if updated < wanted {
        return Some(format!(
            "{updated} of {wanted} new replicas have been updated"
        ));
    }
    if replicas > updated {
        return Some(format!(
            "{} old replicas are pending termination",
            replicas - updated
        ));
    }
    if available < updated {
        return Some(format!(
            "{available} of {updated} updated replicas are available"
        ));
    }
    None
}

/// What the Pods of `deployment` wait for: each container's waiting reason and message, or
/// the Pod's phase and unschedulable message.
async fn pod_states(client: &Client, namespace: &str, deployment: &Deployment) -> Vec<String> {
    let labels: BTreeMap<String, String> = deployment
        .spec
        .as_ref()
        .and_then(|s| s.selector.match_labels.clone())
        .unwrap_or_default();
    let selector = labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let list = match pods.list(&ListParams::default().labels(&selector)).await {
        Ok(list) => list,
        Err(e) => return vec![format!("(listing its Pods failed: {e})")],
    };
    if list.items.is_empty() {
        return vec!["no Pods (see `kubectl describe replicaset` in its namespace)".into()];
    }
    list.items
        .iter()
        .map(|pod| {
            let status = pod.status.clone().unwrap_or_default();
            let mut why: Vec<String> = status
                .container_statuses
                .iter()
                .flatten()
                .chain(status.init_container_statuses.iter().flatten())
                .filter_map(|c| {
                    let waiting = c.state.as_ref()?.waiting.as_ref()?;
                    Some(format!(
                        "container {} waiting: {}{}",
                        c.name,
                        waiting.reason.clone().unwrap_or_default(),
                        waiting
                            .message
                            .as_ref()
                            .map(|m| format!(" ({m})"))
                            .unwrap_or_default()
                    ))
                })
                .collect();
            why.extend(
                status
                    .conditions
                    .iter()
                    .flatten()
                    .filter(|c| c.status == "False" && c.reason.is_some())
                    .map(|c| {
                        format!(
                            "{} {}: {}",
                            c.type_,
                            c.reason.clone().unwrap_or_default(),
                            c.message.clone().unwrap_or_default()
                        )
                    }),
            );
            format!(
                "Pod {} {}: {}",
                pod.name_any(),
                status.phase.unwrap_or_default(),
                if why.is_empty() {
                    "no waiting reason".to_string()
                } else {
                    why.join("; ")
                }
            )
        })
        .collect()
}

/// Waits, up to `timeout`, until every Deployment among `objects` has rolled out; fails with
/// what its Pods wait for.
pub async fn wait_rollouts(
    client: &Client,
    objects: &[Value],
    timeout: Duration,
    progress: &dyn Fn(String),
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    for object in objects.iter().filter(|o| o["kind"] == "Deployment") {
        let name = object["metadata"]["name"].as_str().unwrap_or_default();
        let namespace = object["metadata"]["namespace"]
            .as_str()
            .unwrap_or("default");
        let api: Api<Deployment> = Api::namespaced(client.clone(), namespace);
        let mut said = String::new();
        loop {
            let deployment = api
                .get(name)
                .await
                .with_context(|| format!("reading Deployment {namespace}/{name}"))?;
            let Some(pending) = rollout_pending(&deployment) else {
                progress(format!(
                    "deployment {namespace}/{name} successfully rolled out"
                ));
                break;
            };
            if pending != said {
                progress(format!(
                    "waiting for deployment {namespace}/{name}: {pending}"
                ));
                said = pending.clone();
            }
            if Instant::now() >= deadline {
                let pods = pod_states(client, namespace, &deployment).await;
                bail!(
                    "deployment {namespace}/{name} did not roll out within {}s ({pending}):\n  {}\n\
                     (more: kubectl -n {namespace} describe pods; a longer wait: --timeout)",
                    timeout.as_secs(),
                    pods.join("\n  ")
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment(generation: i64, status: Value) -> Deployment {
        serde_json::from_value(serde_json::json!({
            "metadata": { "name": "d", "generation": generation },
            "spec": {
                "replicas": 2,
                "selector": { "matchLabels": { "app": "d" } },
                "template": { "spec": { "containers": [] } },
            },
            "status": status,
        }))
        .expect("a Deployment")
    }

    #[test]
    fn rollout_is_done_as_kubectl_judges_it() {
        let done = serde_json::json!({
            "observedGeneration": 2, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 2,
        });
        assert_eq!(rollout_pending(&deployment(2, done.clone())), None);
        let stale = rollout_pending(&deployment(3, done)).expect("not observed");
        assert!(stale.contains("observed"), "{stale}");
        let old = serde_json::json!({
            "observedGeneration": 2, "replicas": 3, "updatedReplicas": 2, "availableReplicas": 2,
        });
        let old = rollout_pending(&deployment(2, old)).expect("old replicas");
        assert!(old.contains("1 old replicas"), "{old}");
        let unavailable = serde_json::json!({
            "observedGeneration": 2, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 1,
        });
        let unavailable = rollout_pending(&deployment(2, unavailable)).expect("unavailable");
        assert!(unavailable.contains("1 of 2 updated"), "{unavailable}");
        let partial = serde_json::json!({ "observedGeneration": 2, "updatedReplicas": 1 });
        let partial = rollout_pending(&deployment(2, partial)).expect("partial");
        assert!(partial.contains("1 of 2 new"), "{partial}");
    }
}
