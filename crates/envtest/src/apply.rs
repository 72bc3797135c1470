//! Putting objects into the cluster the way `kubectl apply --server-side` does, for tests,
//! demos and tooling.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams,
};
use kube::{Client, ResourceExt};

use crate::{Error, wait};

/// Server-side applies any object given as JSON (`apiVersion`, `kind`, `metadata` required),
/// forcing ownership of conflicting fields to `manager`.
pub async fn apply(
    client: &Client,
    object: &serde_json::Value,
    manager: &str,
) -> Result<(), Error> {
    let obj: DynamicObject =
        serde_json::from_value(object.clone()).map_err(|e| Error::Invalid(e.to_string()))?;
    let types = obj
        .types
        .clone()
        .ok_or_else(|| Error::Invalid("an object without apiVersion/kind".into()))?;
    let (group, version) = types
        .api_version
        .split_once('/')
        .unwrap_or(("", types.api_version.as_str()));
    let resource = ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, &types.kind));
    let api: Api<DynamicObject> = match obj.metadata.namespace.as_deref() {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
        None => Api::all_with(client.clone(), &resource),
    };
    api.patch(
        &obj.name_any(),
        &PatchParams::apply(manager).force(),
        &Patch::Apply(&obj),
    )
    .await?;
    Ok(())
}

/// Applies a CRD and waits until it is Established and its resources are served.
pub async fn apply_crd(
    client: &Client,
    crd: &CustomResourceDefinition,
    manager: &str,
) -> Result<(), Error> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let name = crd.name_any();
    crds.patch(
        &name,
        &PatchParams::apply(manager).force(),
        &Patch::Apply(crd),
    )
    .await?;
    let timeout = Duration::from_secs(60);
    wait::until(&format!("CRD {name} established"), timeout, || async {
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
    // Established can precede the REST endpoint by a moment.
    let group = &crd.spec.group;
    for version in crd.spec.versions.iter().filter(|v| v.served) {
        let gvk = GroupVersionKind::gvk(group, &version.name, &crd.spec.names.kind);
        let mut resource = ApiResource::from_gvk(&gvk);
        resource.plural = crd.spec.names.plural.clone();
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
        wait::until(
            &format!("{name} {} served", version.name),
            timeout,
            || async {
                api.list(&ListParams::default().limit(1))
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            },
        )
        .await?;
    }
    Ok(())
}

/// `kubectl` (the one built with the control plane) against `kubeconfig`.
/// Grants `user` the RBAC `rules` (a JSON array of PolicyRules) in `namespace`, through a Role
/// and RoleBinding both named `name` (server-side applied, so calling it again updates them).
pub async fn grant(
    client: &Client,
    namespace: &str,
    user: &str,
    name: &str,
    rules: serde_json::Value,
) -> Result<(), Error> {
    let role = serde_json::json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": { "name": name, "namespace": namespace },
        "rules": rules,
    });
    let binding = serde_json::json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": { "name": name, "namespace": namespace },
        "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name },
        "subjects": [{ "apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user }],
    });
    apply(client, &role, "envtest-grant").await?;
    apply(client, &binding, "envtest-grant").await
}

pub fn kubectl(kubeconfig: &Path) -> Command {
    let mut cmd = Command::new(crate::default_bin_dir().join("kubectl"));
    cmd.env("KUBECONFIG", kubeconfig);
    cmd
}
