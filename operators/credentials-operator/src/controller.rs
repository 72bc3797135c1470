//! The CredentialsRequest controller (OpenShift's cloud-credential-operator loop, AWS).
//!
//! Triggers: request changes (generation, deletion, finalizers — not the operator's own status
//! writes), events of the Secrets it wrote (label-selected, mapped by their annotation), the
//! appearance of a missing target namespace, any change of the root credentials Secret (every
//! request), and a periodic re-sync.
//!
//! Crash safety: the IAM user and policy names are written to `status.providerStatus` before
//! either is created, and creation is idempotent by name, so a restart at any point adopts
//! what an earlier attempt created instead of minting a second identity.

use operon_manifests::Rule;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::{StreamExt, future};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use operon_runtime::admin::Readiness;
use operon_runtime::controller::{self, Action, Controller, Gates, ReadyWhenSynced};
use operon_runtime::events::Events;
use operon_runtime::finalizers;
use operon_runtime::metrics::ControllerMetrics;
use operon_runtime::operator::Leading;
use parking_lot::Mutex;
use serde_json::json;

use crate::api::{
    AWS_PROVIDER_STATUS, AwsProviderStatus, CredentialsRequest, CredentialsRequestCondition,
    CredentialsRequestStatus, PROVIDER_API_VERSION, condition,
};
use crate::iam::{self, CloudError, Endpoint, Iam};
use crate::mint::{self, FINALIZER};

/// Exactly the API calls this controller makes, for its ClusterRole: requests watched, their
/// finalizer patched and status server-side applied; Secrets watched (its own, by label; the root Secret by
/// name), read, created, replaced and deleted (only those annotated as written for a request —
/// they live in the requests' target namespaces, so no ownerReference can clean them up);
/// Namespaces watched (metadata only) for missing target namespaces.
pub fn rules() -> Vec<Rule> {
    vec![
        Rule::new(
            "cloudcredential.openshift.io",
            &["credentialsrequests"],
            &["list", "watch", "patch"],
        ),
        Rule::new(
            "cloudcredential.openshift.io",
            &["credentialsrequests/status"],
            &["patch"],
        ),
        Rule::new(
            "",
            &["secrets"],
            &["get", "list", "watch", "create", "update", "delete"],
        ),
        Rule::new("", &["namespaces"], &["list", "watch"]),
    ]
}

/// Field manager and Event reporter.
pub const MANAGER: &str = "credentials-operator";
/// Longest requeue (the re-sync period is usually shorter).
const MAX_REQUEUE: Duration = Duration::from_secs(12 * 3600);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API error: {0}")]
    Kube(#[from] kube::Error),
    #[error("{0}")]
    Cloud(#[from] CloudError),
    #[error("root credentials: {0}")]
    RootCredentials(String),
    #[error("{0}")]
    ForeignSecret(String),
    #[error("passthrough: the root credentials lack {0:?}")]
    InsufficientRoot(Vec<String>),
    #[error("{0} has no namespace")]
    NoNamespace(String),
}

impl operon_runtime::reconciler::Cause for Error {
    /// Label for metrics (`controller_runtime_reconcile_errors_total` by cause).
    fn cause(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::Cloud(_) => "cloud",
            Error::RootCredentials(_) => "root_credentials",
            Error::ForeignSecret(_) => "foreign_secret",
            Error::InsufficientRoot(_) => "insufficient_root",
            Error::NoNamespace(_) => "no_namespace",
        }
    }
}

/// How requests are satisfied (OpenShift's credentials modes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// A new IAM user per request, with exactly the requested permissions.
    #[default]
    Mint,
    /// The root credentials are copied, after checking they allow the requested actions.
    Passthrough,
    /// Nothing: an administrator provides the Secrets.
    Manual,
}

/// How the operator runs.
#[derive(Clone)]
pub struct Settings {
    /// Namespaces whose requests are served; empty means all.
    pub namespaces: Vec<String>,
    pub mode: Mode,
    /// The root credentials Secret (`aws_access_key_id`, `aws_secret_access_key`).
    pub root_secret_namespace: String,
    pub root_secret_name: String,
    /// Cluster identifier: the prefix of user names and the `kubernetes.io/cluster/<id>` tag.
    pub cluster_id: String,
    /// IAM endpoint and region overrides (the SDK's environment variables otherwise).
    pub endpoint: Endpoint,
    /// A request synced less than this ago, unchanged, is not synced again.
    pub resync_period: Duration,
    /// Replace access keys older than this.
    pub key_rotation: Option<Duration>,
    pub concurrency: u16,
    pub instance: Option<String>,
    pub metrics: Arc<ControllerMetrics>,
    pub readiness: Option<Readiness>,
    /// Reconcile only once this resolves (leadership); the caches fill before. `None`: at once.
    pub leading: Option<Leading>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            namespaces: Vec::new(),
            mode: Mode::Mint,
            root_secret_namespace: "kube-system".into(),
            root_secret_name: "aws-creds".into(),
            cluster_id: "operon".into(),
            endpoint: Endpoint::default(),
            resync_period: Duration::from_secs(3600),
            key_rotation: None,
            concurrency: 10,
            instance: None,
            metrics: Arc::default(),
            readiness: None,
            leading: None,
        }
    }
}

struct Context {
    client: Client,
    settings: Settings,
    sdk: aws_config::SdkConfig,
    secrets: Store<Secret>,
    namespaces: Store<PartialObjectMeta<Namespace>>,
    events: Events,
    /// IAM client for the root credentials, by the root Secret's resourceVersion.
    root: Mutex<Option<(String, Iam)>>,
}

fn request_fingerprint(cr: &CredentialsRequest) -> u64 {
    let mut h = DefaultHasher::new();
    cr.metadata.generation.hash(&mut h);
    cr.metadata.deletion_timestamp.is_some().hash(&mut h);
    cr.finalizers().hash(&mut h);
    h.finish()
}

fn now() -> Time {
    Time(Timestamp::now())
}

/// OpenShift's condition rules: a True condition is added or updated; a False one only
/// updates an existing entry. `lastTransitionTime` moves when the status does.
pub fn set_condition(
    conditions: &mut Vec<CredentialsRequestCondition>,
    type_: &str,
    status: bool,
    reason: &str,
    message: &str,
) {
    let status_str = if status { "True" } else { "False" };
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(c) => {
            if c.status != status_str {
                c.last_transition_time = Some(now());
            }
            c.status = status_str.to_owned();
            c.reason = Some(reason.to_owned());
            c.message = Some(message.to_owned());
            c.last_probe_time = Some(now());
        }
        None if status => conditions.push(CredentialsRequestCondition {
            type_: type_.to_owned(),
            status: status_str.to_owned(),
            last_probe_time: Some(now()),
            last_transition_time: Some(now()),
            reason: Some(reason.to_owned()),
            message: Some(message.to_owned()),
        }),
        None => {}
    }
}

fn is_condition_true(status: &CredentialsRequestStatus, type_: &str) -> bool {
    status
        .conditions
        .iter()
        .any(|c| c.type_ == type_ && c.status == "True")
}

/// Equal but for the probe and transition times.
fn same_status(a: &CredentialsRequestStatus, b: &CredentialsRequestStatus) -> bool {
    let strip = |s: &CredentialsRequestStatus| {
        let mut s = s.clone();
        for c in &mut s.conditions {
            c.last_probe_time = None;
            c.last_transition_time = None;
        }
        s
    };
    strip(a) == strip(b)
}

/// Runs the controller until `shutdown` resolves; in-flight reconciles finish first. One
/// controller per served namespace (or one for all), so caches and watches stay in scope.
pub async fn run(
    client: Client,
    settings: Settings,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let sdk = iam::load_sdk_config().await;
    let scopes: Vec<Option<String>> = if settings.namespaces.is_empty() {
        vec![None]
    } else {
        settings.namespaces.iter().cloned().map(Some).collect()
    };
    let shutdown = future::FutureExt::shared(Box::pin(shutdown));
    let ready = ReadyWhenSynced::new(settings.readiness.clone(), scopes.len());
    let controllers = scopes.into_iter().map(|scope| {
        let requests_api: Api<CredentialsRequest> = match scope.as_deref() {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        };
        // Requests by generation, deletion and finalizers (not the operator's status writes).
        let requests = controller::reflect(
            requests_api,
            watcher::Config::default(),
            controller::trim_managed_fields,
        );
        // Only the Secrets this operator wrote, mapped back by their annotation.
        let secrets = controller::reflect(
            Api::<Secret>::all(client.clone()),
            watcher::Config::default().labels(&format!("{}=true", mint::SECRET_LABEL)),
            controller::trim_managed_fields,
        );
        // A missing target namespace appearing wakes the requests waiting for it.
        let namespaces = controller::reflect(
            Api::<PartialObjectMeta<Namespace>>::all(client.clone()),
            watcher::Config::default(),
            |_: &mut PartialObjectMeta<Namespace>| {},
        );
        // Any change of the root credentials: every request.
        let root_changes = kube::runtime::watcher(
            Api::<Secret>::namespaced(client.clone(), &settings.root_secret_namespace),
            watcher::Config::default()
                .fields(&format!("metadata.name={}", settings.root_secret_name)),
        )
        .default_backoff()
        .filter_map(|event| {
            future::ready(matches!(event, Ok(watcher::Event::Apply(_) | watcher::Event::Delete(_))).then_some(()))
        });
        let secret_mapper = {
            let requests = requests.store.clone();
            move |secret: Secret| {
                let key = secret.annotations().get(mint::SECRET_ANNOTATION)?.clone();
                let (ns, name) = key.split_once('/')?;
                let r = ObjectRef::<CredentialsRequest>::new(name).within(ns);
                requests.get(&r).map(|_| r)
            }
        };
        let namespace_mapper = {
            let requests = requests.store.clone();
            move |ns: PartialObjectMeta<Namespace>| {
                let name = ns.name_any();
                requests
                    .state()
                    .into_iter()
                    .filter(|cr| cr.spec.secret_ref.namespace == name)
                    .map(|cr| ObjectRef::from_obj(cr.as_ref()))
                    .collect::<Vec<_>>()
            }
        };
        let ctx = Arc::new(Context {
            client: client.clone(),
            events: Events::new(client.clone(), MANAGER, settings.instance.clone()),
            settings: settings.clone(),
            sdk: sdk.clone(),
            secrets: secrets.store.clone(),
            namespaces: namespaces.store.clone(),
            root: Mutex::new(None),
        });
        // Ready once every scope's caches have their initial lists.
        let gates = ready.count(Gates::new(shutdown.clone()).leading_opt(settings.leading.clone()));
        tracing::info!(mode = ?settings.mode, namespace = scope.as_deref().unwrap_or("<all>"), "starting CredentialsRequest controller");
        Controller::new("credentialsrequest", requests, settings.metrics.clone())
            .filter(request_fingerprint)
            .watches(secrets.changes, secret_mapper)
            .waits_for(secrets.synced)
            .watches(namespaces.changes, namespace_mapper)
            .waits_for(namespaces.synced)
            .reconcile_all_on(root_changes)
            .workers(settings.concurrency.into())
            .run(ctx, reconcile, gates)
    });
    future::join_all(controllers).await;
}

async fn reconcile(cr: Arc<CredentialsRequest>, ctx: Arc<Context>) -> Result<Action, Error> {
    ctx.reconcile(&cr).await
}

/// Root credentials: (resourceVersion, access key id, secret access key).
struct RootCredentials {
    resource_version: String,
    access_key_id: String,
    secret_access_key: String,
}

impl Context {
    fn api(&self, cr: &CredentialsRequest) -> Result<Api<CredentialsRequest>, Error> {
        let ns = cr
            .namespace()
            .ok_or_else(|| Error::NoNamespace(cr.name_any()))?;
        Ok(Api::namespaced(self.client.clone(), &ns))
    }

    async fn reconcile(&self, cr: &CredentialsRequest) -> Result<Action, Error> {
        if cr.metadata.deletion_timestamp.is_some() {
            return self.finalize(cr).await;
        }
        let mut status = cr.status.clone().unwrap_or_default();
        let Some(statements) = cr.aws_statements() else {
            set_condition(
                &mut status.conditions,
                condition::IGNORED,
                true,
                "InfrastructureMismatch",
                &format!(
                    "providerSpec kind {:?} is not AWSProviderSpec: this operator provisions AWS credentials only",
                    cr.spec.provider_spec.kind
                ),
            );
            self.write_status(cr, &status).await?;
            return Ok(Action::await_change());
        };
        if self.settings.mode == Mode::Manual {
            // An administrator provides the Secret.
            return Ok(Action::await_change());
        }
        set_condition(
            &mut status.conditions,
            condition::IGNORED,
            false,
            "InfrastructureMatch",
            "",
        );

        // The finalizer first: no cloud call before the identity can be cleaned up.
        let api = self.api(cr)?;
        let cr = match finalizers::add(&api, cr, FINALIZER).await? {
            Some(updated) => updated,
            None => cr.clone(),
        };
        let cr = &cr;

        let target_ns = &cr.spec.secret_ref.namespace;
        if self.namespaces.get(&ObjectRef::new(target_ns)).is_none() {
            set_condition(
                &mut status.conditions,
                condition::MISSING_TARGET_NAMESPACE,
                true,
                "NamespaceMissing",
                &format!(
                    "target namespace {target_ns} does not exist; the credentials are provisioned once it does"
                ),
            );
            self.write_status(cr, &status).await?;
            return Ok(Action::await_change());
        }
        set_condition(
            &mut status.conditions,
            condition::MISSING_TARGET_NAMESPACE,
            false,
            "NamespaceExists",
            &format!("target namespace {target_ns} exists"),
        );

        let root = match self.root_credentials().await {
            Ok(root) => root,
            Err(e) => {
                set_condition(
                    &mut status.conditions,
                    condition::INSUFFICIENT_CLOUD_CREDS,
                    true,
                    "CloudCredsInsufficient",
                    &e.to_string(),
                );
                self.write_status(cr, &status).await?;
                return Err(e);
            }
        };
        if let Some(wait) = self.fresh(cr, &status, &root) {
            return Ok(Action::requeue(wait));
        }

        let result = match self.settings.mode {
            Mode::Passthrough => self.passthrough(cr, statements, &root).await,
            _ => self.mint(cr, &mut status, statements, &root).await,
        };
        match result {
            Ok(()) => {
                set_condition(
                    &mut status.conditions,
                    condition::PROVISION_FAILURE,
                    false,
                    "CredentialsProvisionSuccess",
                    "successfully granted credentials request",
                );
                set_condition(
                    &mut status.conditions,
                    condition::INSUFFICIENT_CLOUD_CREDS,
                    false,
                    "CloudCredsSufficient",
                    "",
                );
                status.provisioned = true;
                status.last_sync_timestamp = Some(now());
                status.last_sync_generation = cr.metadata.generation.unwrap_or_default();
                status.last_sync_cloud_creds_secret_resource_version =
                    Some(root.resource_version.clone());
                self.write_status(cr, &status).await?;
                Ok(Action::requeue(
                    self.settings.resync_period.min(MAX_REQUEUE),
                ))
            }
            Err(e) => {
                let (type_, reason) = match &e {
                    Error::InsufficientRoot(_) => (
                        condition::INSUFFICIENT_CLOUD_CREDS,
                        "CloudCredsInsufficient",
                    ),
                    _ => (condition::PROVISION_FAILURE, "CredentialsProvisionFailure"),
                };
                let message = iam::scrub(&format!("failed to grant creds: {e}"));
                set_condition(&mut status.conditions, type_, true, reason, &message);
                self.write_status(cr, &status).await?;
                self.events.warning(cr, reason, "Provision", message).await;
                Err(e)
            }
        }
    }

    /// `Some(wait)` when nothing changed since a recent successful sync (OpenShift's rule):
    /// same generation, synced within the re-sync period, same root credentials, the Secret
    /// present, no failure.
    fn fresh(
        &self,
        cr: &CredentialsRequest,
        status: &CredentialsRequestStatus,
        root: &RootCredentials,
    ) -> Option<Duration> {
        if !status.provisioned
            || status.last_sync_generation != cr.metadata.generation.unwrap_or_default()
            || status
                .last_sync_cloud_creds_secret_resource_version
                .as_deref()
                != Some(root.resource_version.as_str())
            || is_condition_true(status, condition::PROVISION_FAILURE)
            || is_condition_true(status, condition::INSUFFICIENT_CLOUD_CREDS)
        {
            return None;
        }
        let secret_ref = &cr.spec.secret_ref;
        let cached = self
            .secrets
            .get(&ObjectRef::new(&secret_ref.name).within(&secret_ref.namespace))?;
        if !mint::is_for(&cached, cr) || mint::secret_key_id(&cached).is_none() {
            return None;
        }
        let last = status.last_sync_timestamp.as_ref()?;
        let age = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .ok()?
            .checked_sub(Duration::from_secs(last.0.as_second().max(0) as u64))?;
        let key_due = self.settings.key_rotation.is_some_and(|p| age >= p);
        (age < self.settings.resync_period && !key_due).then(|| self.settings.resync_period - age)
    }

    async fn root_credentials(&self) -> Result<RootCredentials, Error> {
        let (ns, name) = (
            &self.settings.root_secret_namespace,
            &self.settings.root_secret_name,
        );
        let secret = Api::<Secret>::namespaced(self.client.clone(), ns)
            .get_opt(name)
            .await?
            .ok_or_else(|| Error::RootCredentials(format!("Secret {ns}/{name} not found")))?;
        let value = |key: &str| {
            secret
                .data
                .as_ref()
                .and_then(|d| d.get(key))
                .and_then(|b| std::str::from_utf8(&b.0).ok())
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .ok_or_else(|| Error::RootCredentials(format!("Secret {ns}/{name} has no {key}")))
        };
        Ok(RootCredentials {
            resource_version: secret.resource_version().unwrap_or_default(),
            access_key_id: value(mint::ACCESS_KEY_ID)?,
            secret_access_key: value(mint::SECRET_ACCESS_KEY)?,
        })
    }

    fn iam(&self, root: &RootCredentials) -> Iam {
        let mut cached = self.root.lock();
        match cached.as_ref() {
            Some((rv, iam)) if *rv == root.resource_version => iam.clone(),
            _ => {
                let iam = Iam::new(
                    &self.sdk,
                    &self.settings.endpoint,
                    &root.access_key_id,
                    &root.secret_access_key,
                );
                *cached = Some((root.resource_version.clone(), iam.clone()));
                iam
            }
        }
    }

    async fn write_status(
        &self,
        cr: &CredentialsRequest,
        status: &CredentialsRequestStatus,
    ) -> Result<(), Error> {
        if cr.status.as_ref().is_some_and(|s| same_status(s, status)) {
            return Ok(());
        }
        let patch = json!({
            "apiVersion": CredentialsRequest::api_version(&()),
            "kind": CredentialsRequest::kind(&()),
            "status": status,
        });
        self.api(cr)?
            .patch_status(
                &cr.name_any(),
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(&patch),
            )
            .await?;
        Ok(())
    }

    /// The target Secret, if it exists; an error if it exists and isn't ours.
    async fn target_secret(&self, cr: &CredentialsRequest) -> Result<Option<Secret>, Error> {
        let r = &cr.spec.secret_ref;
        let existing = Api::<Secret>::namespaced(self.client.clone(), &r.namespace)
            .get_opt(&r.name)
            .await?;
        match existing {
            Some(s) if !mint::is_for(&s, cr) => Err(Error::ForeignSecret(format!(
                "Secret {}/{} exists and was not written for this request; it is left untouched",
                r.namespace, r.name
            ))),
            other => Ok(other),
        }
    }

    /// Writes `desired` over `existing` (keeping the user's labels and annotations) or creates it.
    async fn write_secret(&self, existing: Option<Secret>, desired: Secret) -> Result<(), Error> {
        let r_ns = desired.metadata.namespace.clone().unwrap_or_default();
        let name = desired.metadata.name.clone().unwrap_or_default();
        let api = Api::<Secret>::namespaced(self.client.clone(), &r_ns);
        let pp = PostParams {
            field_manager: Some(MANAGER.to_owned()),
            ..PostParams::default()
        };
        match existing {
            None => {
                api.create(&pp, &desired).await?;
            }
            Some(mut s) => {
                s.metadata.managed_fields = None;
                s.labels_mut()
                    .extend(desired.metadata.labels.clone().unwrap_or_default());
                s.annotations_mut()
                    .extend(desired.metadata.annotations.clone().unwrap_or_default());
                s.type_ = desired.type_.clone();
                s.data = desired.data.clone();
                s.string_data = None;
                api.replace(&name, &pp, &s).await?;
            }
        }
        Ok(())
    }

    async fn mint(
        &self,
        cr: &CredentialsRequest,
        status: &mut CredentialsRequestStatus,
        statements: &[crate::api::StatementEntry],
        root: &RootCredentials,
    ) -> Result<(), Error> {
        let iam = self.iam(root);
        // Names first, persisted before anything exists in the cloud.
        let provider = match status
            .provider_status
            .clone()
            .filter(|p| !p.user.is_empty())
        {
            Some(p) => p,
            None => {
                let user = mint::user_name(
                    &self.settings.cluster_id,
                    &cr.name_any(),
                    mint::random_suffix(),
                );
                let provider = AwsProviderStatus {
                    api_version: Some(PROVIDER_API_VERSION.to_owned()),
                    kind: Some(AWS_PROVIDER_STATUS.to_owned()),
                    policy: mint::policy_name(&user),
                    user,
                };
                status.provider_status = Some(provider.clone());
                self.write_status(cr, status).await?;
                provider
            }
        };
        let (user, policy) = (&provider.user, &provider.policy);
        let arn = match iam.user_arn(user).await? {
            Some(arn) => arn,
            None => {
                let tag = format!("kubernetes.io/cluster/{}", self.settings.cluster_id);
                let arn = iam.create_user(user, (&tag, "owned")).await?;
                tracing::info!(request = %mint::request_key(cr), %user, "created IAM user");
                arn
            }
        };
        let document = mint::policy_document(statements, &arn);
        let current = iam.user_policy(user, policy).await?;
        if !current
            .as_deref()
            .is_some_and(|c| mint::same_policy(c, &document))
        {
            iam.put_user_policy(user, policy, &document).await?;
            tracing::info!(request = %mint::request_key(cr), %user, "put the user policy");
        }

        let existing = self.target_secret(cr).await?;
        let keys = iam.list_access_keys(user).await?;
        let in_secret = existing.as_ref().and_then(mint::secret_key_id);
        let current_key = keys.iter().find(|k| Some(&k.id) == in_secret.as_ref());
        let expired = |k: &iam::AccessKey| {
            self.settings.key_rotation.is_some_and(|period| {
                k.created
                    .and_then(|c| SystemTime::now().duration_since(c).ok())
                    .is_some_and(|age| age >= period)
            })
        };
        match current_key {
            Some(k) if !expired(k) => {
                // Valid key: only the recorded policy may need an update.
                let recorded = existing
                    .as_ref()
                    .and_then(|s| s.annotations().get(mint::POLICY_ANNOTATION).cloned());
                if recorded.as_deref() != Some(document.as_str())
                    && let Some(secret) = existing
                {
                    let mut updated = secret.clone();
                    updated
                        .annotations_mut()
                        .insert(mint::POLICY_ANNOTATION.to_owned(), document);
                    self.write_secret(Some(secret), updated).await?;
                }
                Ok(())
            }
            _ => {
                // The Secret is missing, holds no key, a key IAM no longer has, or one past its
                // rotation period: start over with exactly one key.
                for k in &keys {
                    iam.delete_access_key(user, &k.id).await?;
                }
                let key = iam.create_access_key(user).await?;
                let desired = mint::desired_secret(cr, &key.id, &key.secret, Some(&document));
                let rotated = in_secret.is_some();
                self.write_secret(existing, desired).await?;
                let (reason, note) = if rotated {
                    (
                        "AccessKeyReplaced",
                        format!(
                            "Replaced the access key of IAM user {user} in Secret {}/{}",
                            cr.spec.secret_ref.namespace, cr.spec.secret_ref.name
                        ),
                    )
                } else {
                    (
                        "CredentialsMinted",
                        format!(
                            "Minted IAM user {user} and stored its access key in Secret {}/{}",
                            cr.spec.secret_ref.namespace, cr.spec.secret_ref.name
                        ),
                    )
                };
                self.events.normal(cr, reason, "Provision", note).await;
                Ok(())
            }
        }
    }

    async fn passthrough(
        &self,
        cr: &CredentialsRequest,
        statements: &[crate::api::StatementEntry],
        root: &RootCredentials,
    ) -> Result<(), Error> {
        let iam = self.iam(root);
        let wanted: Vec<String> = statements
            .iter()
            .filter(|s| s.effect == crate::api::Effect::Allow)
            .flat_map(|s| s.action.iter().cloned())
            .collect();
        if let Some(denied) = iam.denied_actions(&wanted).await?
            && !denied.is_empty()
        {
            return Err(Error::InsufficientRoot(denied));
        }
        let existing = self.target_secret(cr).await?;
        let desired = mint::desired_secret(cr, &root.access_key_id, &root.secret_access_key, None);
        let same = existing.as_ref().is_some_and(|s| s.data == desired.data);
        if !same {
            self.write_secret(existing, desired).await?;
            self.events
                .normal(
                    cr,
                    "CredentialsCopied",
                    "Provision",
                    format!(
                        "Copied the root credentials to Secret {}/{}",
                        cr.spec.secret_ref.namespace, cr.spec.secret_ref.name
                    ),
                )
                .await;
        }
        Ok(())
    }

    /// Deletion: the cloud identity, then the Secret, then the finalizer.
    async fn finalize(&self, cr: &CredentialsRequest) -> Result<Action, Error> {
        if !finalizers::has(cr, FINALIZER) {
            return Ok(Action::await_change());
        }
        match self.deprovision(cr).await {
            Ok(()) => {
                finalizers::remove(&self.api(cr)?, cr, FINALIZER).await?;
                tracing::info!(request = %mint::request_key(cr), "deprovisioned");
                Ok(Action::await_change())
            }
            Err(e) => {
                let mut status = cr.status.clone().unwrap_or_default();
                let message = iam::scrub(&format!("failed to deprovision: {e}"));
                set_condition(
                    &mut status.conditions,
                    condition::DEPROVISION_FAILURE,
                    true,
                    "CloudCredDeprovisionFailure",
                    &message,
                );
                self.write_status(cr, &status).await?;
                self.events
                    .warning(cr, "CloudCredDeprovisionFailure", "Deprovision", message)
                    .await;
                Err(e)
            }
        }
    }

    async fn deprovision(&self, cr: &CredentialsRequest) -> Result<(), Error> {
        let user = cr
            .status
            .as_ref()
            .and_then(|s| s.provider_status.clone())
            .filter(|p| !p.user.is_empty());
        if self.settings.mode == Mode::Mint
            && let Some(provider) = user
        {
            let root = self.root_credentials().await?;
            let iam = self.iam(&root);
            iam.delete_user_policy(&provider.user, &provider.policy)
                .await?;
            for key in iam.list_access_keys(&provider.user).await.or_else(|e| {
                if e.is_no_such_entity() {
                    Ok(Vec::new())
                } else {
                    Err(e)
                }
            })? {
                iam.delete_access_key(&provider.user, &key.id).await?;
            }
            iam.delete_user(&provider.user).await?;
        }
        let r = &cr.spec.secret_ref;
        let api = Api::<Secret>::namespaced(self.client.clone(), &r.namespace);
        if let Some(secret) = api.get_opt(&r.name).await?
            && mint::is_for(&secret, cr)
        {
            let dp = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: secret.uid(),
                    resource_version: None,
                }),
                ..DeleteParams::default()
            };
            match api.delete(&r.name, &dp).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }
}
