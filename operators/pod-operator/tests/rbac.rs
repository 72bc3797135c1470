//! The generated RBAC against the real authorizer: the operator's ServiceAccount can do exactly
//! what its code needs (the controller tests run as it, proving "enough"; this proves "no
//! more"), and users get PodRequests through the built-in `view` / `edit` roles.

mod common;

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use common::{Fixture, OPERATOR_NAMESPACE, OPERATOR_SERVICE_ACCOUNT, TIMEOUT};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use operon_cluster::wait;
use pod_operator::api::{PodRequest, PodRequestSpec};
use serde_json::json;

async fn can(
    client: &Client,
    ns: &str,
    group: &str,
    resource: &str,
    sub: Option<&str>,
    verb: &str,
) -> Result<bool> {
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                namespace: Some(ns.to_string()),
                group: Some(group.to_string()),
                resource: Some(resource.to_string()),
                subresource: sub.map(str::to_string),
                verb: Some(verb.to_string()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let answer = Api::<SelfSubjectAccessReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await?;
    Ok(answer.status.is_some_and(|s| s.allowed))
}

#[tokio::test]
async fn operator_service_account_can_do_exactly_what_the_code_needs() -> Result<()> {
    let f = Fixture::new("rbac-matrix").await?;
    common::install_rbac(&f.client).await?;
    let sa = f
        .env
        .service_account_client(OPERATOR_NAMESPACE, OPERATOR_SERVICE_ACCOUNT)
        .await?;
    let ns = f.ns.as_str();
    let g = "pod.jewzaam.org";
    // (group, resource, subresource, verb, allowed)
    let matrix: &[(&str, &str, Option<&str>, &str, bool)] = &[
        (g, "podrequests", None, "list", true),
        (g, "podrequests", None, "watch", true),
        (g, "podrequests", Some("status"), "patch", true),
        ("", "pods", None, "get", true),
        ("", "pods", None, "list", true),
        ("", "pods", None, "watch", true),
        ("", "pods", None, "create", true),
        ("", "pods", None, "delete", true),
        ("events.k8s.io", "events", None, "create", true),
        ("events.k8s.io", "events", None, "patch", true),
        // Nothing more:
        (g, "podrequests", None, "create", false),
        (g, "podrequests", None, "update", false),
        (g, "podrequests", None, "patch", false),
        (g, "podrequests", None, "delete", false),
        (g, "podrequests", Some("status"), "update", false),
        ("", "pods", None, "update", false),
        ("", "pods", None, "patch", false),
        ("", "pods", None, "deletecollection", false),
        ("", "pods", Some("exec"), "create", false),
        ("", "pods", Some("status"), "patch", false),
        ("", "secrets", None, "get", false),
        ("", "secrets", None, "list", false),
        ("", "configmaps", None, "get", false),
        ("", "serviceaccounts", Some("token"), "create", false),
        ("", "events", None, "create", false),
        ("apps", "deployments", None, "create", false),
        ("coordination.k8s.io", "leases", None, "create", false),
        (
            "rbac.authorization.k8s.io",
            "rolebindings",
            None,
            "create",
            false,
        ),
        ("", "namespaces", None, "delete", false),
        ("", "nodes", None, "list", false),
    ];
    let mut wrong = Vec::new();
    for (group, resource, sub, verb, expected) in matrix {
        let got = can(&sa, ns, group, resource, *sub, verb).await?;
        if got != *expected {
            wrong.push(format!(
                "{verb} {group}/{resource}{}: {got}",
                sub.map(|s| format!("/{s}")).unwrap_or_default()
            ));
        }
    }
    ensure!(wrong.is_empty(), "can-i matrix differs: {wrong:?}");
    // And for real: reading a Secret is refused.
    let err = Api::<k8s_openapi::api::core::v1::Secret>::namespaced(sa, ns)
        .list(&ListParams::default())
        .await
        .err()
        .context("the operator could list Secrets")?;
    ensure!(
        matches!(err, kube::Error::Api(ref s) if s.code == 403),
        "{err}"
    );
    Ok(())
}

fn bind(ns: &str, name: &str, cluster_role: &str, user: &str) -> Result<RoleBinding> {
    Ok(serde_json::from_value(json!({
        "metadata": { "name": name, "namespace": ns },
        "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": cluster_role },
        "subjects": [{ "kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": user }],
    }))?)
}

fn is_forbidden<T>(r: &Result<T, kube::Error>) -> bool {
    matches!(r, Err(kube::Error::Api(s)) if s.code == 403)
}

#[tokio::test]
async fn builtin_view_and_edit_roles_cover_podrequests_in_their_namespace_only() -> Result<()> {
    let f = Fixture::new("rbac-users").await?;
    let other = f.env.namespace("rbac-users-other").await?;
    common::install_rbac(&f.client).await?;
    let bindings: Api<RoleBinding> = Api::namespaced(f.client.clone(), &f.ns);
    bindings
        .create(
            &PostParams::default(),
            &bind(&f.ns, "erin-edit", "edit", "erin")?,
        )
        .await?;
    bindings
        .create(
            &PostParams::default(),
            &bind(&f.ns, "vic-view", "view", "vic")?,
        )
        .await?;
    let erin: Api<PodRequest> = Api::namespaced(f.env.impersonating("erin", &[]).await?, &f.ns);
    let vic: Api<PodRequest> = Api::namespaced(f.env.impersonating("vic", &[]).await?, &f.ns);

    let mut pr = PodRequest::new(
        "by-erin",
        PodRequestSpec {
            name: "main".into(),
            image: "busybox".into(),
            command: vec!["sleep".into(), "60".into()],
        },
    );
    pr.metadata.namespace = Some(f.ns.clone());
    // Aggregation into `edit` is done by kube-controller-manager; poll until it applies.
    wait::until("edit user can create PodRequests", TIMEOUT, || async {
        match erin.create(&PostParams::default(), &pr).await {
            Ok(_) => Ok(()),
            Err(e) => Err(e.to_string()),
        }
    })
    .await?;
    ensure!(erin.get("by-erin").await?.name_any() == "by-erin");
    ensure!(!erin.list(&ListParams::default()).await?.items.is_empty());
    erin.patch(
        "by-erin",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"image": "busybox:1.36"}})),
    )
    .await?;

    wait::until("view user can read PodRequests", TIMEOUT, || async {
        vic.get("by-erin")
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    })
    .await?;
    ensure!(vic.list(&ListParams::default()).await?.items.len() == 1);
    let mut by_vic = pr.clone();
    by_vic.metadata.name = Some("by-vic".into());
    ensure!(
        is_forbidden(&vic.create(&PostParams::default(), &by_vic).await),
        "view could create"
    );
    ensure!(
        is_forbidden(&vic.delete("by-erin", &DeleteParams::default()).await),
        "view could delete"
    );

    // Neither reaches the other namespace.
    let erin_other: Api<PodRequest> =
        Api::namespaced(f.env.impersonating("erin", &[]).await?, &other);
    let vic_other: Api<PodRequest> =
        Api::namespaced(f.env.impersonating("vic", &[]).await?, &other);
    let mut elsewhere = pr.clone();
    elsewhere.metadata.namespace = Some(other.name().to_string());
    ensure!(is_forbidden(
        &erin_other.create(&PostParams::default(), &elsewhere).await
    ));
    ensure!(is_forbidden(&vic_other.list(&ListParams::default()).await));

    erin.delete("by-erin", &DeleteParams::default()).await?;
    wait::until("deleted", Duration::from_secs(30), || async {
        match erin.get_opt("by-erin").await {
            Ok(None) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn the_declared_rbac_matches_the_authorizer_on_sensitive_resources() -> Result<()> {
    let f = Fixture::new("rbac-audit").await?;
    let m = pod_operator::deploy::manifests("test")?;
    let user_roles = m.user_roles().into_iter().map(|(_, role)| role).collect();
    let namespaces = [f.ns.as_str(), OPERATOR_NAMESPACE];
    Ok(operon_harness::audit_rbac(&f, &m, user_roles, &namespaces).await?)
}

/// `pod-operator audit`, as an administrator runs it against a cluster: all as declared after
/// the generated RBAC is installed; one Role too many for the ServiceAccount and it fails,
/// naming the permission.
#[tokio::test]
async fn the_audit_command_reports_a_permission_beyond_the_declaration() -> Result<()> {
    let f = Fixture::new("rbac-audit-cmd").await?;
    common::install_rbac(&f.client).await?;
    let kubeconfig = match f.env.control_plane() {
        Some(cp) => cp.kubeconfig_path().to_path_buf(),
        None => std::env::var_os("KUBECONFIG")
            .map(Into::into)
            .context("KUBECONFIG must name the existing cluster's kubeconfig")?,
    };
    let audit = || {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_pod-operator"))
            .args(["audit", "--namespace", &f.ns, "--kubeconfig"])
            .arg(&kubeconfig)
            .output()
    };
    let clean = audit().await?;
    let stdout = String::from_utf8_lossy(&clean.stdout);
    ensure!(
        clean.status.success() && stdout.contains("all as declared"),
        "{}\n{stdout}{}",
        clean.status,
        String::from_utf8_lossy(&clean.stderr)
    );

    let extra = json!([{ "apiGroups": [""], "resources": ["secrets"], "verbs": ["get"] }]);
    let user = format!("system:serviceaccount:{OPERATOR_NAMESPACE}:{OPERATOR_SERVICE_ACCOUNT}");
    operon_envtest::grant(&f.client, &f.ns, &user, "too-much", extra).await?;
    let expected = format!("get core/secrets in {}: authorizer says allowed", f.ns);
    // RBAC changes reach the authorizer through its informers: wait for the report to change.
    let report = wait::until("the audit to see the extra Role", TIMEOUT, || async {
        let out = audit().await.map_err(|e| e.to_string())?;
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        if !out.status.success() && stderr.contains(&expected) {
            Ok(stderr)
        } else {
            Err(format!("{}: {stderr}", out.status))
        }
    })
    .await?;
    ensure!(report.contains("1 of "), "{report}");
    Ok(())
}
