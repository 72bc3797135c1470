//! Test fixtures: a namespace per test, service-ca-operator running in-process as its own
//! ServiceAccount with the generated RBAC and its own signing namespace (so every test has its
//! own CA), certificate parsing and real TLS handshakes.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result, bail, ensure};
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams, PostParams};
use kube::{Client, ResourceExt};
use operon_envtest::{TestEnv, wait};
use operon_runtime::admin::Readiness;
use operon_runtime::client::{RequestCounter, RequestCounts, counted_client};
use operon_runtime::metrics::Metrics;
use serde_json::json;
use service_ca_operator::controller::{self, Settings};
use service_ca_operator::pki::SigningCa;
use service_ca_operator::{
    CA_BUNDLE_KEY, INJECTED_CA_BUNDLE_KEY, SERVING_CERT_SIGNED_BY, SIGNING_BUNDLE_CONFIGMAP,
    SIGNING_SECRET_NAME, TLS_CERT_KEY, TLS_KEY_KEY,
};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const TIMEOUT: Duration = Duration::from_secs(60);
pub const MANAGER: &str = "service-ca-operator-tests";

/// A test's environment: a namespace for its Services and one for its signer.
pub struct Fixture {
    pub env: &'static TestEnv,
    pub ns: String,
    pub signer_ns: String,
    pub client: Client,
}

impl Fixture {
    pub async fn new(prefix: &str) -> Result<Fixture> {
        let env = operon_envtest::shared().await?;
        let ns = env.namespace(prefix).await?;
        let signer_ns = env.namespace(&format!("{prefix}-ca")).await?;
        let client = env.client().await?;
        Ok(Fixture {
            env,
            ns: ns.name().to_string(),
            signer_ns: signer_ns.name().to_string(),
            client,
        })
    }

    /// Settings serving this test's namespace, with the CA in its own namespace.
    pub fn settings(&self) -> Settings {
        Settings {
            namespace: self.signer_ns.clone(),
            namespaces: vec![self.ns.clone()],
            inject_cluster_scoped: false,
            instance: Some("test".into()),
            ..Settings::default()
        }
    }

    pub async fn operator(&self) -> Result<Operator> {
        Operator::start(self.env, self.settings()).await
    }

    pub fn services(&self) -> Api<Service> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    pub fn secrets(&self) -> Api<Secret> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    pub fn configmaps(&self) -> Api<ConfigMap> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    /// Creates a ClusterIP Service asking for serving Secret `secret`.
    pub async fn service(&self, name: &str, secret: &str) -> Result<Service> {
        self.create_service(json!({
            "metadata": {
                "name": name,
                "annotations": { service_ca_operator::SERVING_CERT_SECRET_NAME: secret },
            },
            "spec": { "ports": [{ "port": 443, "targetPort": 8443 }] },
        }))
        .await
    }

    pub async fn create_service(&self, mut body: serde_json::Value) -> Result<Service> {
        body["apiVersion"] = json!("v1");
        body["kind"] = json!("Service");
        let svc: Service = serde_json::from_value(body)?;
        Ok(self.services().create(&PostParams::default(), &svc).await?)
    }

    /// Waits until Secret `name` exists and satisfies `ok` (a description of what's wrong
    /// otherwise).
    pub async fn wait_secret(
        &self,
        name: &str,
        what: &str,
        ok: impl Fn(&Secret) -> Result<(), String>,
    ) -> Result<Secret> {
        let api = self.secrets();
        Ok(wait::until(what, TIMEOUT, || async {
            match api.get_opt(name).await.map_err(|e| e.to_string())? {
                Some(s) => ok(&s).map(|()| s),
                None => Err(format!("Secret {name} does not exist")),
            }
        })
        .await?)
    }

    /// Waits for a valid serving Secret `name` (both keys present).
    pub async fn wait_issued(&self, name: &str) -> Result<Secret> {
        self.wait_secret(name, &format!("Secret {name} issued"), |s| {
            let d = s.data.clone().unwrap_or_default();
            if d.contains_key(TLS_CERT_KEY) && d.contains_key(TLS_KEY_KEY) {
                Ok(())
            } else {
                Err(format!("keys {:?}", d.keys().collect::<Vec<_>>()))
            }
        })
        .await
    }

    /// Waits until Service `name` has annotation `key` = `value`.
    pub async fn wait_service_annotation(
        &self,
        name: &str,
        key: &str,
        value: &str,
    ) -> Result<Service> {
        let api = self.services();
        Ok(wait::until(
            &format!("Service {name} {key}={value}"),
            TIMEOUT,
            || async {
                let svc = api.get(name).await.map_err(|e| e.to_string())?;
                match svc.annotations().get(key) {
                    Some(v) if v == value => Ok(svc),
                    other => Err(format!("{other:?}")),
                }
            },
        )
        .await?)
    }

    /// The signing Secret (admin read).
    pub async fn signing_secret(&self) -> Result<Secret> {
        Ok(
            Api::<Secret>::namespaced(self.client.clone(), &self.signer_ns)
                .get(SIGNING_SECRET_NAME)
                .await?,
        )
    }

    /// Waits for the signer and returns its CA.
    pub async fn ca(&self) -> Result<SigningCa> {
        let api = Api::<Secret>::namespaced(self.client.clone(), &self.signer_ns);
        let secret = wait::until("the signing Secret", TIMEOUT, || async {
            api.get_opt(SIGNING_SECRET_NAME)
                .await
                .map_err(|e| e.to_string())?
                .ok_or_else(|| "absent".to_string())
        })
        .await?;
        Ok(SigningCa::from_pem(
            &data(&secret, TLS_CERT_KEY)?,
            &data(&secret, TLS_KEY_KEY)?,
        )?)
    }

    /// The published bundle (`signing-cabundle`), once it exists.
    pub async fn published_bundle(&self) -> Result<String> {
        let api = Api::<ConfigMap>::namespaced(self.client.clone(), &self.signer_ns);
        Ok(wait::until("the published CA bundle", TIMEOUT, || async {
            let cm = api
                .get_opt(SIGNING_BUNDLE_CONFIGMAP)
                .await
                .map_err(|e| e.to_string())?
                .ok_or_else(|| "absent".to_string())?;
            cm.data
                .unwrap_or_default()
                .get(CA_BUNDLE_KEY)
                .cloned()
                .ok_or_else(|| "no bundle key".to_string())
        })
        .await?)
    }

    /// Creates a ConfigMap asking for the bundle and returns the injected bundle.
    pub async fn injected_bundle(&self, name: &str) -> Result<String> {
        let cm: ConfigMap = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {
                "name": name,
                "annotations": { service_ca_operator::INJECT_CABUNDLE: "true" },
            },
        }))?;
        self.configmaps()
            .create(&PostParams::default(), &cm)
            .await?;
        self.wait_injected(name, None).await
    }

    /// Waits until ConfigMap `name` holds a bundle (different from `not`, when given).
    pub async fn wait_injected(&self, name: &str, not: Option<&str>) -> Result<String> {
        let api = self.configmaps();
        Ok(
            wait::until(&format!("ConfigMap {name} injected"), TIMEOUT, || async {
                let cm = api.get(name).await.map_err(|e| e.to_string())?;
                let data = cm.data.unwrap_or_default();
                match data.get(INJECTED_CA_BUNDLE_KEY) {
                    Some(b) if Some(b.as_str()) != not => Ok(b.clone()),
                    other => Err(format!("data {:?}", other.map(|b| b.len()))),
                }
            })
            .await?,
        )
    }

    /// Reasons and notes of the Events about `kind` `name` in namespace `ns`.
    pub async fn events(&self, ns: &str, kind: &str, name: &str) -> Result<Vec<(String, String)>> {
        let events: Api<Event> = Api::namespaced(self.client.clone(), ns);
        Ok(events
            .list(&ListParams::default())
            .await?
            .into_iter()
            .filter(|e| {
                e.regarding.as_ref().is_some_and(|r| {
                    r.kind.as_deref() == Some(kind) && r.name.as_deref() == Some(name)
                })
            })
            .map(|e| (e.reason.unwrap_or_default(), e.note.unwrap_or_default()))
            .collect())
    }

    /// Waits until an Event with `reason` about `kind` `name` exists; returns its note.
    pub async fn wait_event(
        &self,
        ns: &str,
        kind: &str,
        name: &str,
        reason: &str,
    ) -> Result<String> {
        Ok(wait::until(
            &format!("Event {reason} about {kind} {name}"),
            TIMEOUT,
            || async {
                let events = self
                    .events(ns, kind, name)
                    .await
                    .map_err(|e| e.to_string())?;
                events
                    .iter()
                    .find(|(r, _)| r == reason)
                    .map(|(_, note)| note.clone())
                    .ok_or_else(|| format!("{events:?}"))
            },
        )
        .await?)
    }

    /// Waits until the Service's signer annotation names the current CA.
    pub async fn wait_signed(&self, name: &str) -> Result<Service> {
        let cn = self.ca().await?.common_name;
        self.wait_service_annotation(name, SERVING_CERT_SIGNED_BY, &cn)
            .await
    }
}

/// A Secret value as text.
pub fn data(secret: &Secret, key: &str) -> Result<String> {
    let bytes = secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .with_context(|| format!("Secret {} has no {key}", secret.name_any()))?;
    Ok(String::from_utf8(bytes.0.clone())?)
}

/// Applies (server-side) the operator's generated ServiceAccount and RBAC; the rules for the
/// operator's own namespace are bound in `signer_ns` too, where this test's CA lives.
pub async fn install_rbac(client: &Client, signer_ns: &str) -> Result<()> {
    let m = service_ca_operator::deploy::manifests("test")?;
    let mut objects = vec![m.namespace_object()];
    objects.extend(m.operator_rbac());
    for mut obj in m
        .namespace_role()
        .into_iter()
        .chain(m.namespace_role_binding())
    {
        obj["metadata"]["namespace"] = json!(signer_ns);
        objects.push(obj);
    }
    for obj in objects {
        operon_envtest::apply::apply(client, &obj, MANAGER).await?;
    }
    Ok(())
}

pub const OPERATOR_NAMESPACE: &str = service_ca_operator::deploy::NAMESPACE;
pub const OPERATOR_SERVICE_ACCOUNT: &str = "service-ca-operator-controller-manager";

/// service-ca-operator running in this process, authenticated as its own ServiceAccount with
/// the generated RBAC — so every test also proves the RBAC sufficient.
pub struct Operator {
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), controller::Error>>,
    counter: RequestCounter,
    pub metrics: Arc<Metrics>,
    readiness: Readiness,
    /// An admin client and the signer's namespace, to see what the operator did.
    client: Client,
    signer_ns: String,
}

impl Operator {
    pub async fn start(env: &TestEnv, mut settings: Settings) -> Result<Operator> {
        if std::env::var_os("RUST_LOG").is_some() {
            operon_runtime::telemetry::init(operon_runtime::telemetry::LogFormat::Text, "info");
        }
        let admin = env.client().await?;
        install_rbac(&admin, &settings.namespace).await?;
        let signer_ns = settings.namespace.clone();
        let config = env
            .service_account_config(OPERATOR_NAMESPACE, OPERATOR_SERVICE_ACCOUNT)
            .await?;
        let counter = RequestCounter::default();
        let client = counted_client(config, &counter)?;
        let metrics = Metrics::new();
        settings.metrics = metrics.clone();
        let readiness = Readiness::new();
        readiness.set_not_ready("starting");
        settings.readiness = Some(readiness.clone());
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(controller::run(client, settings, async move {
            let _ = rx.await;
        }));
        Ok(Operator {
            stop: Some(tx),
            task,
            counter,
            metrics,
            readiness,
            client: admin,
            signer_ns,
        })
    }

    /// Ready (every cache synced), a successful pass of this run's signer, and the bundle of
    /// the current CA published in its namespace.
    pub async fn wait_ready(&self) -> Result<()> {
        wait::until("operator ready", TIMEOUT, || async {
            match self.readiness.is_ready() {
                true => Ok(()),
                false => Err(self.readiness.reason().unwrap_or_default()),
            }
        })
        .await?;
        // The state below may predate this run, so first wait for one pass of this run's signer.
        let signer = self.metrics.controller("signer");
        wait::until("a successful signer pass", TIMEOUT, || async {
            match signer.reconciles() > signer.errors() {
                true => Ok(()),
                false => Err(format!("{} passes, all failed", signer.reconciles())),
            }
        })
        .await?;
        let secrets = Api::<Secret>::namespaced(self.client.clone(), &self.signer_ns);
        let configmaps = Api::<ConfigMap>::namespaced(self.client.clone(), &self.signer_ns);
        wait::until("the signer's first pass", TIMEOUT, || async {
            let secret = secrets
                .get_opt(SIGNING_SECRET_NAME)
                .await
                .map_err(|e| e.to_string())?
                .ok_or("no signing Secret")?;
            let ca = secret
                .data
                .unwrap_or_default()
                .get(TLS_CERT_KEY)
                .map(|b| String::from_utf8_lossy(&b.0).trim().to_string())
                .ok_or("no tls.crt")?;
            let bundle = configmaps
                .get_opt(SIGNING_BUNDLE_CONFIGMAP)
                .await
                .map_err(|e| e.to_string())?
                .and_then(|cm| cm.data.unwrap_or_default().remove(CA_BUNDLE_KEY))
                .ok_or("no published bundle")?;
            if bundle.contains(&ca) {
                Ok(())
            } else {
                Err("the bundle lacks the CA".to_string())
            }
        })
        .await?;
        Ok(())
    }

    /// The controllers are still running (nothing panicked or returned).
    pub fn is_alive(&self) -> bool {
        !self.task.is_finished()
    }

    /// Requests this operator made so far.
    pub fn requests(&self) -> RequestCounts {
        self.counter.snapshot()
    }

    /// Reconciles of controller `name` (`service`, `configmap`, …) so far.
    pub fn reconciles(&self, name: &str) -> u64 {
        self.metrics.controller(name).reconciles()
    }

    /// Graceful stop: in-flight reconciles finish.
    pub async fn stop(mut self) -> Result<()> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        tokio::time::timeout(TIMEOUT, &mut self.task)
            .await
            .context("operator did not stop")???;
        Ok(())
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Parsed facts of a serving certificate (the leaf, first in `tls.crt`).
#[derive(Debug)]
pub struct Leaf {
    pub sans: Vec<String>,
    pub common_name: String,
    pub server_auth: bool,
    pub client_auth: bool,
    pub authority_key_id: Vec<u8>,
    pub service_uid: Option<Vec<u8>>,
    pub not_after: i64,
    pub key_bits: usize,
    pub key_algorithm: String,
    /// How many certificates `tls.crt` holds.
    pub chain_len: usize,
}

pub fn pem_ders(pem: &str) -> Result<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    for item in x509_parser::pem::Pem::iter_from_buffer(pem.as_bytes()) {
        let item = item.map_err(|e| anyhow::anyhow!("PEM: {e}"))?;
        out.push(item.contents);
    }
    Ok(out)
}

pub fn parse_leaf(tls_crt: &str) -> Result<Leaf> {
    use x509_parser::prelude::*;
    let ders = pem_ders(tls_crt)?;
    let first = ders.first().context("no certificate")?;
    let (_, cert) = X509Certificate::from_der(first).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut sans = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let GeneralName::DNSName(d) = name {
                sans.push(d.to_string());
            }
        }
    }
    sans.sort();
    let eku = cert.extended_key_usage().ok().flatten();
    let mut authority_key_id = Vec::new();
    let mut service_uid = None;
    let uid_oid =
        x509_parser::oid_registry::Oid::from(service_ca_operator::pki::SERVICE_UID_EXTENSION_OID)
            .map_err(|_| anyhow::anyhow!("OID"))?;
    for ext in cert.extensions() {
        if let ParsedExtension::AuthorityKeyIdentifier(aki) = ext.parsed_extension()
            && let Some(id) = &aki.key_identifier
        {
            authority_key_id = id.0.to_vec();
        }
        if ext.oid == uid_oid {
            ensure!(!ext.critical, "the UID extension must not be critical");
            service_uid = Some(ext.value.to_vec());
        }
    }
    let spki = cert.public_key();
    let (key_algorithm, key_bits) = match spki.parsed() {
        Ok(x509_parser::public_key::PublicKey::RSA(rsa)) => ("RSA".to_string(), rsa.key_size()),
        Ok(x509_parser::public_key::PublicKey::EC(ec)) => ("EC".to_string(), ec.key_size()),
        Ok(_) => ("other".to_string(), 0),
        Err(e) => bail!("public key: {e}"),
    };
    Ok(Leaf {
        sans,
        common_name: cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .unwrap_or_default()
            .to_string(),
        server_auth: eku.as_ref().is_some_and(|e| e.value.server_auth),
        client_auth: eku.as_ref().is_some_and(|e| e.value.client_auth),
        authority_key_id,
        service_uid,
        not_after: cert.validity().not_after.timestamp(),
        key_bits,
        key_algorithm,
        chain_len: ders.len(),
    })
}

/// The Subject Key Identifier of the first certificate of `pem`.
pub fn subject_key_id(pem: &str) -> Result<Vec<u8>> {
    use x509_parser::prelude::*;
    let ders = pem_ders(pem)?;
    let (_, cert) = X509Certificate::from_der(ders.first().context("no certificate")?)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    for ext in cert.extensions() {
        if let ParsedExtension::SubjectKeyIdentifier(id) = ext.parsed_extension() {
            return Ok(id.0.to_vec());
        }
    }
    bail!("no subject key identifier")
}

/// A real TLS handshake over loopback: a server presenting `tls_crt`/`tls_key`, a client that
/// trusts only `bundle_pem` and verifies `server_name`. Ok when the client accepted the server
/// and both sides exchanged a byte; Err with the client's verdict otherwise.
pub async fn handshake(
    tls_crt: &str,
    tls_key: &str,
    bundle_pem: &str,
    server_name: &str,
) -> Result<()> {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain: Vec<CertificateDer<'static>> = pem_ders(tls_crt)?
        .into_iter()
        .map(CertificateDer::from)
        .collect();
    let key_der = pem_ders(tls_key)?.into_iter().next().context("no key")?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_der));
    let server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    let mut roots = rustls::RootCertStore::empty();
    for der in pem_ders(bundle_pem)? {
        roots.add(CertificateDer::from(der))?;
    }
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
    let server_task = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await?;
        let mut tls = acceptor.accept(tcp).await?;
        let mut byte = [0u8; 1];
        tls.read_exact(&mut byte).await?;
        tls.write_all(&byte).await?;
        tls.shutdown().await?;
        anyhow::Ok(())
    });
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
    let name = ServerName::try_from(server_name.to_string())?;
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let result = async {
        let mut tls = connector.connect(name, tcp).await?;
        tls.write_all(b"x").await?;
        let mut byte = [0u8; 1];
        tls.read_exact(&mut byte).await?;
        ensure!(&byte == b"x", "echo mismatch");
        anyhow::Ok(())
    }
    .await;
    if result.is_ok() {
        tokio::time::timeout(TIMEOUT, server_task).await???;
    } else {
        server_task.abort();
    }
    result
}

/// Labels of a Secret.
pub fn labels(secret: &Secret) -> BTreeMap<String, String> {
    secret.labels().clone()
}
