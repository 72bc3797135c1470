//! Pod Security admission as every control plane starts it: a namespace without labels
//! enforces `baseline`, so the Pods that would be root on a real node's host (a `hostPath: /`
//! volume, a privileged container, the host's namespaces) are refused by kube-apiserver with
//! PodSecurity's own message, while the talk's plain busybox Pod is admitted with a warning
//! about `restricted`. Admission happens in the API server: etcd and kube-apiserver are enough.
//!
//! `OPERON_ENVTEST_SKIP=pod-security` starts kube-apiserver without the defaults (the door
//! open, as on kind or kubeadm): `host_access_is_refused_where_no_label_allows_it` then fails.

use anyhow::{Context, Result, bail, ensure};
use http::StatusCode;
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::{Api, PostParams};
use kube::client::Body;
use kube::{Client, core::Status};
use operon_cluster::ControlPlane;
use operon_cluster::pod_security::ENFORCE_LABEL;
use serde_json::{Value, json};

/// What kube-apiserver answered to a Pod create.
#[derive(Debug)]
enum Outcome {
    Admitted { warnings: Vec<String> },
    Refused { code: u16, message: String },
}

/// Creates `pod` in `ns` with a raw request, to read the response's `Warning` headers (kube's
/// typed API drops them).
async fn create_pod(client: &Client, ns: &str, pod: &Value) -> Result<Outcome> {
    let request = kube::core::Request::new(format!("/api/v1/namespaces/{ns}/pods"))
        .create(&PostParams::default(), serde_json::to_vec(pod)?)?
        .map(Body::from);
    let response = client.send(request).await?;
    let status = response.status();
    let warnings = response
        .headers()
        .get_all(http::header::WARNING)
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .collect();
    let body = response.into_body().collect_bytes().await?;
    if status == StatusCode::CREATED {
        return Ok(Outcome::Admitted { warnings });
    }
    let refusal: Status = serde_json::from_slice(&body).with_context(|| {
        format!(
            "{status} with a body that isn't a Status: {}",
            String::from_utf8_lossy(&body)
        )
    })?;
    Ok(Outcome::Refused {
        code: status.as_u16(),
        message: refusal.message,
    })
}

/// A namespace with `labels` and its `default` ServiceAccount (no kube-controller-manager here
/// to make it, and the ServiceAccount admission plugin, which runs first, wants it).
async fn namespace(client: &Client, name: &str, labels: Value) -> Result<()> {
    let ns: Namespace = serde_json::from_value(json!({
        "metadata": { "name": name, "labels": labels },
    }))?;
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await?;
    let sa: ServiceAccount = serde_json::from_value(json!({ "metadata": { "name": "default" } }))?;
    Api::<ServiceAccount>::namespaced(client.clone(), name)
        .create(&PostParams::default(), &sa)
        .await?;
    Ok(())
}

fn pod(name: &str, spec: Value) -> Value {
    json!({ "apiVersion": "v1", "kind": "Pod", "metadata": { "name": name }, "spec": spec })
}

/// The host's root filesystem in a container: root on the host once a real node runs it.
fn host_root_pod() -> Value {
    pod(
        "host-root",
        json!({
            "containers": [{ "name": "shell", "image": "busybox", "command": ["sleep", "3600"],
                             "volumeMounts": [{ "name": "host-root", "mountPath": "/host" }] }],
            "volumes": [{ "name": "host-root", "hostPath": { "path": "/" } }],
        }),
    )
}

fn privileged_pod() -> Value {
    pod(
        "privileged",
        json!({
            "containers": [{ "name": "root", "image": "busybox", "command": ["sleep", "3600"],
                             "securityContext": { "privileged": true } }],
        }),
    )
}

fn host_namespaces_pod() -> Value {
    pod(
        "host-namespaces",
        json!({
            "hostNetwork": true,
            "hostPID": true,
            "containers": [{ "name": "shell", "image": "busybox", "command": ["sleep", "3600"] }],
        }),
    )
}

/// The Pod pod-operator makes of the talk's PodRequest: root, capabilities and seccomp left
/// to the runtime — what `baseline` allows and `restricted` doesn't.
fn talk_pod() -> Value {
    pod(
        "busybox",
        json!({
            "containers": [{
                "name": "busybox", "image": "busybox",
                "command": ["/bin/sh", "-ec",
                            "while :; do echo 'Hello DevConf.CZ 2020!'; sleep 5; done"],
            }],
        }),
    )
}

fn expect_refused(outcome: Outcome, what: &str, reason: &str) -> Result<()> {
    match outcome {
        Outcome::Refused { code, message } => {
            eprintln!("{what}: {code} {message}");
            ensure!(
                code == 403,
                "{what}: refused with {code}, not 403: {message}"
            );
            let expected = format!("violates PodSecurity \"baseline:latest\": {reason}");
            ensure!(
                message.contains(&expected),
                "{what}: the refusal doesn't name the violation ({expected}): {message}"
            );
            Ok(())
        }
        Outcome::Admitted { .. } => bail!("{what} was admitted: the door to the host is open"),
    }
}

#[tokio::test]
async fn host_access_is_refused_where_no_label_allows_it() -> Result<()> {
    let cp = ControlPlane::builder()
        .minimal()
        .skip_from_env()
        .start()
        .await?;
    let client = cp.client().await?;

    let open = "unlabelled";
    namespace(&client, open, json!({})).await?;
    expect_refused(
        create_pod(&client, open, &host_root_pod()).await?,
        "a hostPath: / Pod in an unlabelled namespace",
        "hostPath volumes (volume \"host-root\")",
    )?;
    expect_refused(
        create_pod(&client, open, &privileged_pod()).await?,
        "a privileged Pod in an unlabelled namespace",
        "privileged (container \"root\" must not set securityContext.privileged=true)",
    )?;
    expect_refused(
        create_pod(&client, open, &host_namespaces_pod()).await?,
        "a Pod in the host's network and PID namespaces",
        "host namespaces (hostNetwork=true, hostPID=true)",
    )?;
    // No namespace is exempt: kube-system (kube-apiserver makes it; its `default` account is
    // kube-controller-manager's work, so made here) enforces baseline like any other.
    let kube_system = "kube-system";
    let sa: ServiceAccount = serde_json::from_value(json!({ "metadata": { "name": "default" } }))?;
    let accounts = Api::<ServiceAccount>::namespaced(client.clone(), kube_system);
    if accounts.get_opt("default").await?.is_none() {
        accounts.create(&PostParams::default(), &sa).await?;
    }
    expect_refused(
        create_pod(&client, kube_system, &host_root_pod()).await?,
        "a hostPath: / Pod in kube-system",
        "hostPath volumes (volume \"host-root\")",
    )?;

    // The talk's Pod meets baseline: admitted, with PodSecurity's warning about restricted.
    match create_pod(&client, open, &talk_pod()).await? {
        Outcome::Admitted { warnings } => ensure!(
            warnings
                .iter()
                .inspect(|w| eprintln!("the talk's Pod: Warning: {w}"))
                .any(|w| w.contains("would violate PodSecurity")
                    && w.contains("restricted:latest")
                    && w.contains("runAsNonRoot != true")),
            "the talk's Pod was admitted without the restricted warning: {warnings:?}"
        ),
        Outcome::Refused { code, message } => {
            bail!("the talk's Pod was refused ({code}): {message}")
        }
    }

    // Positive control: a namespace labelled privileged admits the same hostPath Pod.
    let privileged = "host-agents";
    namespace(&client, privileged, json!({ ENFORCE_LABEL: "privileged" })).await?;
    match create_pod(&client, privileged, &host_root_pod()).await? {
        Outcome::Admitted { .. } => {}
        Outcome::Refused { code, message } => bail!(
            "a namespace labelled {ENFORCE_LABEL}=privileged refused the hostPath Pod \
             ({code}): {message}"
        ),
    }
    Ok(())
}

#[tokio::test]
async fn without_the_defaults_the_api_server_admits_host_access() -> Result<()> {
    // What kind and kubeadm clusters do, and what the test above would see if the control
    // plane stopped passing the admission configuration.
    let cp = ControlPlane::builder()
        .minimal()
        .pod_security(false)
        .start()
        .await?;
    let client = cp.client().await?;
    namespace(&client, "unlabelled", json!({})).await?;
    match create_pod(&client, "unlabelled", &host_root_pod()).await? {
        Outcome::Admitted { warnings } => {
            ensure!(warnings.is_empty(), "warnings: {warnings:?}");
            Ok(())
        }
        Outcome::Refused { code, message } => bail!(
            "refused ({code}) though the control plane was started without the defaults: \
             {message}"
        ),
    }
}
