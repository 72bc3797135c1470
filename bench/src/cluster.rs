//! A fresh control plane per peer, with the apiserver's audit log recording every request of the
//! peers' ServiceAccount: the apiserver's own count of what an operator asked for, by user agent,
//! verb and resource (`apiserver_request_total` has no user label, so it can't tell peers apart).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, RoleRef, Subject};
use kube::api::{Api, ObjectMeta, PostParams};
use kube::{Client, CustomResourceExt};
use operon_cluster::{ControlPlane, wait};
use serde::Deserialize;

/// Namespace of the peers' ServiceAccount and Lease.
pub const SYSTEM_NAMESPACE: &str = "operon-bench";
/// The ServiceAccount every peer runs as; the audit policy records only its requests.
pub const PEER_ACCOUNT: &str = "peer";

pub struct Cluster {
    pub plane: ControlPlane,
    pub admin: Client,
    /// A kubeconfig for the peers: the ServiceAccount's token.
    pub peer_kubeconfig: PathBuf,
    audit_log: PathBuf,
    _dir: tempfile::TempDir,
}

fn peer_user() -> String {
    format!("system:serviceaccount:{SYSTEM_NAMESPACE}:{PEER_ACCOUNT}")
}

/// kube-scheduler's client rate limit in the benchmark's clusters (its default: 50, burst 100).
pub const SCHEDULER_QPS: u32 = 500;
pub const SCHEDULER_BURST: u32 = 1000;

impl Cluster {
    /// CPU seconds kube-apiserver and etcd have used so far.
    pub fn control_plane_cpu(&self) -> Option<f64> {
        let used: Vec<f64> = self
            .plane
            .pids()
            .into_iter()
            .filter(|(name, _)| name == "kube-apiserver" || name == "etcd")
            .filter_map(|(_, pid)| operon_runtime::metrics::process_usage(pid).map(|u| u.1))
            .collect();
        (used.len() == 2).then(|| used.iter().sum())
    }

    /// Bytes etcd has written to its write-ahead log so far (`etcd_disk_wal_write_bytes_total`):
    /// what the cluster's storage pays for every write, whoever made it.
    pub async fn etcd_wal_bytes(&self) -> Option<f64> {
        let address = self.plane.etcd_metrics_addresses().into_iter().next()?;
        let response = operon_cluster::plain_http::request(
            &address,
            "GET",
            "/metrics",
            &[],
            "",
            Duration::from_secs(5),
        )
        .await
        .ok()?;
        response
            .text()
            .lines()
            .find_map(|l| l.strip_prefix("etcd_disk_wal_write_bytes_total "))?
            .trim()
            .parse()
            .ok()
    }

    /// Starts etcd, kube-apiserver (audited), kube-controller-manager, kube-scheduler and kwok
    /// with enough fake Node capacity for `pods`, applies the PodRequest CRD and prepares the
    /// peers' identity.
    pub async fn start(pods: usize) -> Result<(Cluster, Duration)> {
        let dir = tempfile::Builder::new().prefix("operon-bench-").tempdir()?;
        let policy = dir.path().join("audit-policy.yaml");
        std::fs::write(
            &policy,
            format!(
                "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived]\nrules:\n\
                 - level: Metadata\n  users: [\"{}\"]\n- level: None\n",
                peer_user()
            ),
        )?;
        let audit_log = dir.path().join("audit.log");
        // A Node takes at most 1000 Pods here; spread them like a real cluster would.
        let nodes = (pods / 1000 + 1).min(16);
        let per_node = (pods / nodes + 200) as u32;
        let t0 = Instant::now();
        let plane = ControlPlane::builder()
            .name("bench")
            .nodes(nodes)
            .pods_per_node(per_node.max(110))
            .apiserver_arg(format!("--audit-policy-file={}", policy.display()))
            .apiserver_arg(format!("--audit-log-path={}", audit_log.display()))
            .apiserver_arg("--audit-log-format=json")
            .apiserver_arg("--audit-log-maxsize=0")
            // kube-scheduler's client is limited to 50 requests/s by default: every peer would
            // be bound by how fast Pods are bound, not by its own work.
            .scheduler_arg(format!("--kube-api-qps={SCHEDULER_QPS}"))
            .scheduler_arg(format!("--kube-api-burst={SCHEDULER_BURST}"))
            .start()
            .await
            .context("starting the control plane")?;
        let startup = t0.elapsed();
        let admin = plane.client().await?;
        let crd = pod_operator::api::PodRequest::crd();
        operon_cluster::apply::apply_crd(&admin, &crd, "operon-bench").await?;
        let peer_kubeconfig = dir.path().join("peer.kubeconfig");
        let cluster = Cluster {
            plane,
            admin,
            peer_kubeconfig,
            audit_log,
            _dir: dir,
        };
        cluster.namespace(SYSTEM_NAMESPACE).await?;
        cluster.write_peer_kubeconfig().await?;
        Ok((cluster, startup))
    }

    /// Creates namespace `name` and returns once Pods can be created in it (its `default`
    /// ServiceAccount exists).
    pub async fn namespace(&self, name: &str) -> Result<()> {
        let namespaces: Api<Namespace> = Api::all(self.admin.clone());
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                ..Default::default()
            },
            ..Default::default()
        };
        match namespaces.create(&PostParams::default(), &ns).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
        let sas: Api<ServiceAccount> = Api::namespaced(self.admin.clone(), name);
        let what = format!("namespace {name}'s default ServiceAccount");
        let every = wait::Backoff::every(Duration::from_millis(100));
        wait::poll(&what, Duration::from_secs(60), every, || async {
            match sas.get_opt("default").await {
                Ok(Some(_)) => wait::Check::Ready(()),
                Ok(None) => wait::Check::Pending("not created yet".into()),
                Err(e) => wait::Check::Failed(e),
            }
        })
        .await?;
        Ok(())
    }

    /// The peers run as a ServiceAccount bound to cluster-admin: RBAC is the same for all of
    /// them, and the audit policy can pick out their requests.
    async fn write_peer_kubeconfig(&self) -> Result<()> {
        let binding = ClusterRoleBinding {
            metadata: ObjectMeta {
                name: Some("operon-bench-peer".into()),
                ..Default::default()
            },
            role_ref: RoleRef {
                api_group: Some("rbac.authorization.k8s.io".into()),
                kind: "ClusterRole".into(),
                name: "cluster-admin".into(),
            },
            subjects: Some(vec![Subject {
                kind: "ServiceAccount".into(),
                name: PEER_ACCOUNT.into(),
                namespace: Some(SYSTEM_NAMESPACE.into()),
                ..Default::default()
            }]),
        };
        let bindings: Api<ClusterRoleBinding> = Api::all(self.admin.clone());
        match bindings.create(&PostParams::default(), &binding).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
        let token = operon_cluster::service_account_token(
            &self.admin,
            SYSTEM_NAMESPACE,
            PEER_ACCOUNT,
            24 * 3600,
        )
        .await?;
        let ca = self.peer_kubeconfig.with_file_name("ca.crt");
        std::fs::write(&ca, self.plane.ca_pem())?;
        let kubeconfig = operon_cluster::kubeconfig::single(
            "bench",
            self.plane.server(),
            operon_cluster::kubeconfig::Ca::File(&ca),
            operon_cluster::kubeconfig::Credentials::Token(&token),
            Some(SYSTEM_NAMESPACE),
        );
        std::fs::write(
            &self.peer_kubeconfig,
            operon_cluster::kubeconfig::to_text(&kubeconfig)?,
        )?;
        Ok(())
    }

    /// A cursor at the audit log's current end: [`Audit::since`] counts what follows.
    pub fn audit_mark(&self) -> Result<u64> {
        Ok(std::fs::metadata(&self.audit_log)
            .map(|m| m.len())
            .unwrap_or(0))
    }

    /// The peers' requests recorded after `mark`.
    pub fn audit_since(&self, mark: u64) -> Result<Audit> {
        Audit::read(&self.audit_log, mark)
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AuditEvent {
    stage: String,
    verb: String,
    #[serde(default)]
    user_agent: String,
    #[serde(default)]
    object_ref: Option<ObjectRef>,
    #[serde(default)]
    response_status: Option<ResponseStatus>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ObjectRef {
    #[serde(default)]
    resource: String,
    #[serde(default)]
    subresource: String,
}

#[derive(Deserialize)]
struct ResponseStatus {
    #[serde(default)]
    code: u16,
}

/// Requests by `"<verb> <resource>[/<subresource>]"`, as the apiserver saw them.
#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
pub struct Audit {
    pub requests: BTreeMap<String, u64>,
    /// User agents seen (the product part, before the first `/`).
    pub user_agents: BTreeMap<String, u64>,
    /// Requests answered with a 4xx/5xx code (conflicts, throttling…).
    pub failed: u64,
}

const WRITE_VERBS: [&str; 5] = ["create", "update", "patch", "delete", "deletecollection"];

impl Audit {
    fn read(path: &Path, mark: u64) -> Result<Audit> {
        let mut audit = Audit::default();
        let Ok(mut file) = std::fs::File::open(path) else {
            return Ok(audit);
        };
        file.seek(SeekFrom::Start(mark))?;
        for line in BufReader::new(file).lines() {
            let line = line?;
            let Ok(event) = serde_json::from_str::<AuditEvent>(&line) else {
                // The last line may be half written.
                continue;
            };
            // One event per request: watches when they start, the others when they complete.
            let counted = if event.verb == "watch" {
                event.stage == "ResponseStarted"
            } else {
                event.stage == "ResponseComplete"
            };
            if !counted {
                continue;
            }
            let resource = event
                .object_ref
                .map(|o| {
                    if o.subresource.is_empty() {
                        o.resource
                    } else {
                        format!("{}/{}", o.resource, o.subresource)
                    }
                })
                .unwrap_or_default();
            *audit
                .requests
                .entry(format!("{} {resource}", event.verb))
                .or_default() += 1;
            let agent = event
                .user_agent
                .split('/')
                .next()
                .unwrap_or_default()
                .to_string();
            *audit.user_agents.entry(agent).or_default() += 1;
            if event.response_status.is_some_and(|s| s.code >= 400) {
                audit.failed += 1;
            }
        }
        Ok(audit)
    }

    pub fn count(&self, verb: &str, resource: &str) -> u64 {
        self.requests
            .get(&format!("{verb} {resource}"))
            .copied()
            .unwrap_or(0)
    }

    pub fn verb(&self, verb: &str) -> u64 {
        self.requests
            .iter()
            .filter(|(k, _)| k.split(' ').next() == Some(verb))
            .map(|(_, n)| n)
            .sum()
    }

    pub fn writes(&self) -> u64 {
        WRITE_VERBS.iter().map(|v| self.verb(v)).sum()
    }

    /// Writes other than Lease renewals (leader election writes every `retry-period`).
    pub fn writes_except_leases(&self) -> u64 {
        self.writes() - self.count("update", "leases") - self.count("patch", "leases")
    }

    /// GETs of single objects other than Leases: a cached operator makes none while idle.
    pub fn gets_except_leases(&self) -> u64 {
        self.verb("get") - self.count("get", "leases")
    }

    pub fn total(&self) -> u64 {
        self.requests.values().sum()
    }
}
