//! RBAC for the users tests act as: a Role in a namespace, or a ClusterRole for cluster-scoped
//! resources.

use kube::Client;
use operon_cluster::apply::apply;

use crate::Error;

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
    apply(client, &binding, "envtest-grant").await?;
    Ok(())
}

/// Like [`grant`], cluster-wide: a ClusterRole and ClusterRoleBinding both named `name` (for
/// cluster-scoped resources).
pub async fn grant_cluster(
    client: &Client,
    user: &str,
    name: &str,
    rules: serde_json::Value,
) -> Result<(), Error> {
    let role = serde_json::json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": { "name": name },
        "rules": rules,
    });
    let binding = serde_json::json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": { "name": name },
        "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name },
        "subjects": [{ "apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user }],
    });
    apply(client, &role, "envtest-grant").await?;
    apply(client, &binding, "envtest-grant").await?;
    Ok(())
}
