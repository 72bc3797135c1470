//! The service's API as a microservice API: full CRUD of PodRequests over plain HTTPS with a
//! bearer token (raw HTTP/1.0 over rustls, no Kubernetes client), as a user with the built-in
//! `edit` role; refused for a `view` user's writes and for an unauthenticated caller.

mod common;

use std::sync::Arc;

use anyhow::{Context, Result, ensure};
use common::Fixture;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Rest {
    host: String,
    port: u16,
    tls: tokio_rustls::TlsConnector,
}

struct Response {
    status: u16,
    body: Value,
}

impl Rest {
    async fn new(f: &Fixture) -> Result<Rest> {
        let config = f.env.config().await?;
        let uri = config.cluster_url.clone();
        let host = uri.host().context("no host")?.to_string();
        let port = uri.port_u16().unwrap_or(443);
        let mut roots = rustls::RootCertStore::empty();
        for der in config.root_cert.clone().unwrap_or_default() {
            roots.add(CertificateDer::from(der))?;
        }
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
        Ok(Rest {
            host,
            port,
            tls: tokio_rustls::TlsConnector::from(Arc::new(tls)),
        })
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<(&str, Value)>,
    ) -> Result<Response> {
        let tcp = tokio::net::TcpStream::connect((self.host.as_str(), self.port)).await?;
        let name = ServerName::try_from(self.host.clone())?;
        let mut stream = self.tls.connect(name, tcp).await?;
        let mut request = format!(
            "{method} {path} HTTP/1.0\r\nHost: {}\r\nAccept: application/json\r\n",
            self.host
        );
        if let Some(token) = token {
            request.push_str(&format!("Authorization: Bearer {token}\r\n"));
        }
        let payload = body
            .as_ref()
            .map(|(_, v)| v.to_string())
            .unwrap_or_default();
        if let Some((content_type, _)) = &body {
            request.push_str(&format!(
                "Content-Type: {content_type}\r\nContent-Length: {}\r\n",
                payload.len()
            ));
        }
        request.push_str("\r\n");
        request.push_str(&payload);
        stream.write_all(request.as_bytes()).await?;
        let mut raw = Vec::new();
        // HTTP/1.0: the server closes the connection after the response.
        let _ = stream.read_to_end(&mut raw).await;
        let text = String::from_utf8_lossy(&raw);
        let (head, body) = text.split_once("\r\n\r\n").context("no HTTP header end")?;
        let status: u16 = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .context("no status")?;
        let body = serde_json::from_str(body).unwrap_or(Value::String(body.to_string()));
        Ok(Response { status, body })
    }
}

async fn token_with_role(f: &Fixture, sa: &str, cluster_role: &str) -> Result<String> {
    let binding = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": { "name": format!("{sa}-{cluster_role}"), "namespace": f.ns },
        "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": cluster_role },
        "subjects": [{ "kind": "ServiceAccount", "name": sa, "namespace": f.ns }],
    });
    let config = f.env.service_account_config(&f.ns, sa).await?;
    operon_cluster::apply::apply(&f.client, &binding, "pod-operator-tests").await?;
    use secrecy::ExposeSecret;
    Ok(config
        .auth_info
        .token
        .context("no token")?
        .expose_secret()
        .to_string())
}

#[tokio::test]
async fn podrequests_are_a_rest_api_with_authentication_and_rbac() -> Result<()> {
    let f = Fixture::new("rest").await?;
    // The generated roles aggregated into edit and view.
    common::install_rbac(&f.client).await?;
    let rest = Rest::new(&f).await?;
    let editor = token_with_role(&f, "editor", "edit").await?;
    let viewer = token_with_role(&f, "viewer", "view").await?;
    let collection = format!(
        "/apis/pod.jewzaam.org/v1alpha1/namespaces/{}/podrequests",
        f.ns
    );
    let item = format!("{collection}/rest-demo");
    let body = json!({
        "apiVersion": "pod.jewzaam.org/v1alpha1", "kind": "PodRequest",
        "metadata": { "name": "rest-demo" },
        "spec": { "name": "busybox", "image": "busybox", "command": ["sleep", "3600"] },
    });

    // The aggregated edit role reaches PodRequests (RBAC may take a moment to see the binding).
    let created =
        operon_cluster::wait::until("edit user creates over HTTPS", common::TIMEOUT, || async {
            let r = rest
                .call(
                    "POST",
                    &collection,
                    Some(&editor),
                    Some(("application/json", body.clone())),
                )
                .await
                .map_err(|e| e.to_string())?;
            if r.status == 201 {
                Ok(r)
            } else {
                Err(format!("{} {}", r.status, r.body))
            }
        })
        .await?;
    ensure!(
        created.body["metadata"]["uid"].is_string(),
        "{}",
        created.body
    );

    let got = rest.call("GET", &item, Some(&editor), None).await?;
    ensure!(
        got.status == 200 && got.body["spec"]["image"] == "busybox",
        "{} {}",
        got.status,
        got.body
    );
    let list = rest.call("GET", &collection, Some(&editor), None).await?;
    ensure!(
        list.status == 200 && list.body["items"].as_array().is_some_and(|i| i.len() == 1),
        "{}",
        list.body
    );

    let patched = rest
        .call(
            "PATCH",
            &item,
            Some(&editor),
            Some((
                "application/merge-patch+json",
                json!({ "spec": { "image": "busybox:1.36" } }),
            )),
        )
        .await?;
    ensure!(
        patched.status == 200 && patched.body["spec"]["image"] == "busybox:1.36",
        "{} {}",
        patched.status,
        patched.body
    );
    ensure!(
        patched.body["metadata"]["generation"] == 2,
        "{}",
        patched.body
    );

    let mut replacement = patched.body.clone();
    replacement["spec"]["command"] = json!(["sleep", "60"]);
    let replaced = rest
        .call(
            "PUT",
            &item,
            Some(&editor),
            Some(("application/json", replacement)),
        )
        .await?;
    ensure!(
        replaced.status == 200 && replaced.body["spec"]["command"][1] == "60",
        "{} {}",
        replaced.status,
        replaced.body
    );

    // Schema validation answers over HTTP too.
    let mut invalid = body.clone();
    invalid["metadata"]["name"] = json!("invalid");
    invalid["spec"]["name"] = json!("Not A Label");
    let rejected = rest
        .call(
            "POST",
            &collection,
            Some(&editor),
            Some(("application/json", invalid)),
        )
        .await?;
    ensure!(
        rejected.status == 422
            && rejected.body["message"]
                .as_str()
                .is_some_and(|m| m.contains("spec.name")),
        "{} {}",
        rejected.status,
        rejected.body
    );

    // view: reads yes, writes no.
    let read = rest.call("GET", &item, Some(&viewer), None).await?;
    ensure!(read.status == 200, "view user GET: {}", read.status);
    let write = rest
        .call(
            "PATCH",
            &item,
            Some(&viewer),
            Some((
                "application/merge-patch+json",
                json!({ "spec": { "image": "evil" } }),
            )),
        )
        .await?;
    ensure!(
        write.status == 403,
        "view user PATCH: {} {}",
        write.status,
        write.body
    );
    let delete = rest.call("DELETE", &item, Some(&viewer), None).await?;
    ensure!(delete.status == 403, "view user DELETE: {}", delete.status);

    // No credentials: refused.
    let anonymous = rest.call("GET", &collection, None, None).await?;
    ensure!(
        matches!(anonymous.status, 401 | 403),
        "anonymous GET: {}",
        anonymous.status
    );

    let deleted = rest.call("DELETE", &item, Some(&editor), None).await?;
    ensure!(
        deleted.status == 200,
        "DELETE: {} {}",
        deleted.status,
        deleted.body
    );
    let gone = rest.call("GET", &item, Some(&editor), None).await?;
    ensure!(gone.status == 404, "after DELETE: {}", gone.status);
    Ok(())
}
