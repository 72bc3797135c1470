//! The CredentialsRequest controller (OpenShift's cloud-credential-operator loop, AWS): the
//! watches and the API calls. What to do is decided in [`plan`](crate::plan), the conditions in
//! [`conditions`](crate::conditions), the Secrets in [`secret`](crate::secret) and
//! [`mint`](crate::mint); the IAM calls are [`iam`](crate::iam)'s.
//!
//! Triggers: request changes (generation, deletion, finalizers — not the operator's own status
//! writes), events of the Secrets it wrote (label-selected, mapped by their annotation), the
//! appearance of a missing target namespace, any change of the root credentials Secret,
//! re-lists included (every request), and a periodic re-sync.
//!
//! Crash safety: the IAM user and policy names are written to `status.providerStatus` before
//! either is created, and creation is idempotent by name, so a restart at any point adopts
//! what an earlier attempt created instead of minting a second identity.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use operon_manifests::Rule;
use operon_runtime::client::{apply_body, is_status};
use operon_runtime::controller::{self, Action, Controller};
use operon_runtime::events::Events;
use operon_runtime::finalizers;
use operon_runtime::manager::Manager;
use parking_lot::Mutex;
use serde_json::json;

use crate::api::{CredentialsRequest, CredentialsRequestStatus, StatementEntry};
use crate::conditions::{self, same_status};
use crate::iam::{CloudError, Endpoint, Iam};
use crate::mint::{self, FINALIZER};
pub use crate::plan::Mode;
use crate::plan::{self, Keys, Path, Plan, Provision, Resync};
use crate::secret::{self, RootCredentials};

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
/// The controller's name (its metrics' `controller` label).
pub const CONTROLLER: &str = "credentialsrequest";

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
    #[error("{0}")]
    ForeignIdentity(String),
    #[error("root creds are not sufficient: they may not {0:?}")]
    InsufficientRoot(Vec<String>),
    #[error("error validating whether root creds are good enough: {0}")]
    Simulation(CloudError),
    #[error("{0}")]
    NeedsRoot(String),
    #[error("{0} has no namespace")]
    NoNamespace(String),
    #[error("writing the status: {0}")]
    Serialize(serde_json::Error),
}

impl controller::Cause for Error {
    /// Label for metrics (`operon_reconcile_errors_by_cause_total`).
    fn cause(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::Cloud(_) => "cloud",
            Error::RootCredentials(_) => "root_credentials",
            Error::ForeignSecret(_) => "foreign_secret",
            Error::ForeignIdentity(_) => "foreign_identity",
            Error::InsufficientRoot(_) => "insufficient_root",
            Error::Simulation(_) => "simulation",
            Error::NeedsRoot(_) => "needs_root",
            Error::NoNamespace(_) => "no_namespace",
            Error::Serialize(_) => "serialize",
        }
    }
}

/// What the operator does (the Manager owns the namespaces served, metrics, readiness and
/// leadership).
#[derive(Clone)]
pub struct Settings {
    /// `--mode`: overrides the root Secret's [`mint::MODE_ANNOTATION`]. `None`: the annotation
    /// decides, mint when it is absent. An explicit passthrough trusts the root credentials
    /// (no simulation), as OpenShift's explicit passthrough mode does.
    pub mode: Option<Mode>,
    /// Tags of every minted user besides `kubernetes.io/cluster/<cluster_id>=owned` (OpenShift's
    /// user-defined resource tags); repaired on every sync.
    pub resource_tags: Vec<(String, String)>,
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
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            mode: None,
            resource_tags: Vec::new(),
            root_secret_namespace: "kube-system".into(),
            root_secret_name: "aws-creds".into(),
            cluster_id: "operon".into(),
            endpoint: Endpoint::default(),
            resync_period: Duration::from_secs(3600),
            key_rotation: None,
            concurrency: 10,
        }
    }
}

/// Adds the CredentialsRequest controller to `manager`, one per served namespace; `sdk` is the
/// AWS SDK's shared configuration ([`crate::iam::load_sdk_config`]). The cluster-wide watches (the
/// operator's Secrets, Namespaces) and the root Secret's are asked for identically in every
/// scope, so the Manager opens each once.
pub fn register(manager: &mut Manager, settings: &Settings, sdk: &aws_config::SdkConfig) {
    let client = manager.client();
    for scope in manager.scopes() {
        let requests = manager.reflect(
            scope.api::<CredentialsRequest>(client.clone()),
            watcher::Config::default(),
            controller::trim_managed_fields,
        );
        // Only the Secrets this operator wrote, mapped back by their annotation.
        let secrets = manager.reflect(
            Api::<Secret>::all(client.clone()),
            watcher::Config::default().labels(&format!("{}=true", mint::SECRET_LABEL)),
            controller::trim_managed_fields,
        );
        // A missing target namespace appearing wakes the requests waiting for it.
        let namespaces = manager.reflect(
            Api::<PartialObjectMeta<Namespace>>::all(client.clone()),
            watcher::Config::default(),
            keep_namespace,
        );
        // Any change of the root credentials, also one seen only in a re-list: every request.
        let root = manager.reflect(
            Api::<Secret>::namespaced(client.clone(), &settings.root_secret_namespace),
            watcher::Config::default()
                .fields(&format!("metadata.name={}", settings.root_secret_name)),
            forget_keys,
        );
        let by_annotation = {
            let requests = requests.store.clone();
            move |secret: Secret| secret::request_of(&secret).filter(|r| requests.get(r).is_some())
        };
        let targeting = {
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
            events: manager.events(),
            settings: settings.clone(),
            sdk: sdk.clone(),
            secrets: secrets.store.clone(),
            namespaces: namespaces.store.clone(),
            root: Mutex::new(None),
        });
        tracing::info!(mode = ?settings.mode, namespace = %scope, "registering the CredentialsRequest controller");
        let controller = Controller::new(CONTROLLER, requests)
            .filter(request_fingerprint)
            .watches(secrets, by_annotation)
            .watches(namespaces, targeting)
            .waits_for(root.synced)
            .reconcile_all_on(root.changes.map(|_| ()))
            .workers(settings.concurrency.into());
        manager.add(controller, ctx, reconcile);
    }
}

/// Requests by generation, deletion and finalizers (not the operator's status writes).
fn request_fingerprint(cr: &CredentialsRequest) -> u64 {
    let meta = cr.meta();
    controller::fingerprint(&(
        meta.generation,
        meta.deletion_timestamp.is_some(),
        cr.finalizers(),
    ))
}

/// Namespaces are cached as metadata, all of which is kept.
fn keep_namespace(_: &mut PartialObjectMeta<Namespace>) {}

/// The root Secret's watch only triggers (reconciles read the Secret itself): its keys are not
/// kept in the cache.
fn forget_keys(secret: &mut Secret) {
    secret.data = None;
    secret.string_data = None;
    secret.metadata.managed_fields = None;
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

async fn reconcile(cr: Arc<CredentialsRequest>, ctx: Arc<Context>) -> Result<Action, Error> {
    ctx.reconcile(&cr).await
}

impl Context {
    fn api(&self, cr: &CredentialsRequest) -> Result<Api<CredentialsRequest>, Error> {
        let ns = cr
            .namespace()
            .ok_or_else(|| Error::NoNamespace(cr.name_any()))?;
        Ok(Api::namespaced(self.client.clone(), &ns))
    }

    fn requeue(&self) -> Action {
        Action::requeue(plan::requeue(self.settings.resync_period))
    }

    async fn reconcile(&self, cr: &CredentialsRequest) -> Result<Action, Error> {
        if cr.metadata.deletion_timestamp.is_some() {
            return self.finalize(cr).await;
        }
        let mut status = cr.status.clone().unwrap_or_default();
        let provision = match plan::path(cr, self.settings.mode) {
            Path::Ignored { message } => {
                conditions::ignored(&mut status, &message);
                self.write_status(cr, &status).await?;
                return Ok(Action::await_change());
            }
            // An administrator provides the Secret.
            Path::HandsOff => return Ok(Action::await_change()),
            Path::Provision(provision) => provision,
        };
        conditions::not_ignored(&mut status);

        // The finalizer first: no cloud call before the identity can be cleaned up.
        let api = self.api(cr)?;
        let cr = &match finalizers::add(&api, cr, FINALIZER).await? {
            Some(updated) => updated,
            None => cr.clone(),
        };

        let target_ns = &cr.spec.secret_ref.namespace;
        let exists = self.namespaces.get(&ObjectRef::new(target_ns)).is_some();
        conditions::target_namespace(&mut status, target_ns, exists);
        if !exists {
            self.write_status(cr, &status).await?;
            return Ok(Action::await_change());
        }

        let statements = match provision {
            Provision::Sts { role } => return self.sync_sts(cr, status, &role).await,
            Provision::Cloud { statements } => statements,
        };
        let root = match self.root_credentials().await {
            Ok(root) => root,
            Err(e) => return self.without_root(cr, status, statements, e).await,
        };
        let plan = match plan::plan(self.settings.mode, root.mode.as_deref()) {
            Ok(plan) => plan,
            Err(refusal) => return self.refuse(cr, status, &refusal).await,
        };
        if let Some(wait) = self.fresh(cr, &status, &root) {
            return Ok(Action::requeue(wait));
        }
        let result = match plan {
            Plan::Passthrough { simulate } => {
                self.passthrough(cr, statements, &root, simulate).await
            }
            Plan::Mint => self.mint(cr, &mut status, statements, &root).await,
        };
        self.record(cr, status, result, Some(&root)).await
    }

    /// Manual mode with `stsIAMRoleARN`: the Secret holds a profile that assumes the role with
    /// the workload's service account token (no keys, no root credentials, no cloud call).
    async fn sync_sts(
        &self,
        cr: &CredentialsRequest,
        status: CredentialsRequestStatus,
        role: &str,
    ) -> Result<Action, Error> {
        let desired = mint::desired_sts_secret(cr, role);
        let what = format!("Wrote the profile assuming {role}");
        let result = self
            .put_secret(cr, desired, "CredentialsWritten", &what)
            .await;
        let generation = cr.metadata.generation.unwrap_or_default();
        if matches!(result, Ok(false)) && plan::sts_unchanged(&status, generation) {
            // Nothing written, nothing to record (a restart writes nothing).
            return Ok(self.requeue());
        }
        self.record(cr, status, result.map(|_| ()), None).await
    }

    /// The root Secret's annotation says its credentials serve no request; waits for it to
    /// change.
    async fn refuse(
        &self,
        cr: &CredentialsRequest,
        mut status: CredentialsRequestStatus,
        refusal: &plan::Refusal,
    ) -> Result<Action, Error> {
        let s = &self.settings;
        let message = refusal.message(&s.root_secret_namespace, &s.root_secret_name);
        let reason = match refusal {
            plan::Refusal::Insufficient => {
                conditions::insufficient(&mut status, &message);
                conditions::INSUFFICIENT
            }
            plan::Refusal::UnknownMode(_) => {
                conditions::invalid_mode(&mut status, &message);
                conditions::PROVISION_FAILED
            }
        };
        self.write_status(cr, &status).await?;
        self.events.warning(cr, reason, "Provision", message).await;
        Ok(Action::await_change())
    }

    /// Records the outcome of a sync in the status (and an Event on failure).
    async fn record(
        &self,
        cr: &CredentialsRequest,
        mut status: CredentialsRequestStatus,
        result: Result<(), Error>,
        root: Option<&RootCredentials>,
    ) -> Result<Action, Error> {
        match result {
            Ok(()) => {
                let generation = cr.metadata.generation.unwrap_or_default();
                let root_version = root.map(|r| r.resource_version.as_str());
                conditions::synced(&mut status, generation, root_version);
                self.write_status(cr, &status).await?;
                Ok(self.requeue())
            }
            Err(e) => {
                let message = conditions::provision_failed(&mut status, &e);
                self.write_status(cr, &status).await?;
                self.events
                    .warning(cr, conditions::PROVISION_FAILED, "Provision", message)
                    .await;
                Err(e)
            }
        }
    }

    /// The root credentials are gone or unusable. OpenShift lets an administrator remove them
    /// after install in mint mode: a minted request stays healthy as long as nothing needs to
    /// change, which its own credentials tell ([`Self::check_with_minted`]); changing anything
    /// needs the root credentials back.
    async fn without_root(
        &self,
        cr: &CredentialsRequest,
        mut status: CredentialsRequestStatus,
        statements: &[StatementEntry],
        missing: Error,
    ) -> Result<Action, Error> {
        let error = match self.check_with_minted(cr, &status, statements).await {
            Some(Ok(())) => {
                let note = format!(
                    "The root credentials are unavailable ({missing}); checked with the minted credentials: valid and up to date, so the root credentials are not needed until something changes"
                );
                conditions::checked_without_root(&mut status, &note);
                self.write_status(cr, &status).await?;
                self.events
                    .normal(cr, "CheckedWithoutRootCredentials", "Check", note)
                    .await;
                return Ok(self.requeue());
            }
            Some(Err(change)) => {
                Error::NeedsRoot(format!("{missing}; {change} needs the root credentials"))
            }
            None => missing,
        };
        self.record(cr, status, Err(error), None)
            .await
            .map(|_| Action::await_change())
    }

    /// Whether a minted request is still exactly as it should be, asked with its own
    /// credentials (they may read their own user: the policy grants `iam:GetUser` on it).
    /// `None` when it can't be told (not minted, not provisioned, no Secret); `Some(Err(what))`
    /// names what needs changing.
    async fn check_with_minted(
        &self,
        cr: &CredentialsRequest,
        status: &CredentialsRequestStatus,
        statements: &[StatementEntry],
    ) -> Option<Result<(), String>> {
        let generation = cr.metadata.generation.unwrap_or_default();
        let what = plan::without_root(self.settings.mode, status, generation);
        if what == plan::WithoutRoot::Unknown {
            return None;
        }
        let user = cr.minted_user()?.to_owned();
        let secret = self.cached_secret(cr).filter(|s| mint::is_for(s, cr))?;
        let (key_id, secret_key) = secret::minted_credentials(&secret)?;
        if what == plan::WithoutRoot::SpecChanged {
            return Some(Err("applying the changed spec".into()));
        }
        let minted = Iam::new(&self.sdk, &self.settings.endpoint, &key_id, &secret_key);
        let me = match minted.caller().await {
            Ok(me) => me,
            Err(e) => return Some(Err(format!("replacing the access key IAM refuses ({e})"))),
        };
        let recorded = secret.annotations().get(mint::POLICY_ANNOTATION);
        Some(plan::check_minted(
            &me,
            &user,
            &self.user_tags(cr),
            statements,
            recorded.map(String::as_str),
        ))
    }

    fn user_tags(&self, cr: &CredentialsRequest) -> Vec<(String, String)> {
        let uid = cr.uid().unwrap_or_default();
        plan::user_tags(
            &self.settings.cluster_id,
            &uid,
            &self.settings.resource_tags,
        )
    }

    /// The request's Secret as the cache has it.
    fn cached_secret(&self, cr: &CredentialsRequest) -> Option<Arc<Secret>> {
        let r = &cr.spec.secret_ref;
        self.secrets
            .get(&ObjectRef::new(&r.name).within(&r.namespace))
    }

    /// See [`plan::fresh`].
    fn fresh(
        &self,
        cr: &CredentialsRequest,
        status: &CredentialsRequestStatus,
        root: &RootCredentials,
    ) -> Option<Duration> {
        let holds_key = self
            .cached_secret(cr)
            .is_some_and(|s| mint::is_for(&s, cr) && mint::secret_key_id(&s).is_some());
        let resync = Resync {
            period: self.settings.resync_period,
            key_rotation: self.settings.key_rotation,
        };
        let generation = cr.metadata.generation.unwrap_or_default();
        plan::fresh(
            status,
            generation,
            &root.resource_version,
            holds_key,
            resync,
            SystemTime::now(),
        )
    }

    async fn root_credentials(&self) -> Result<RootCredentials, Error> {
        let (ns, name) = (
            &self.settings.root_secret_namespace,
            &self.settings.root_secret_name,
        );
        let secret = Api::<Secret>::namespaced(self.client.clone(), ns)
            .get_opt(name)
            .await?;
        secret::root_credentials(secret.as_ref(), ns, name).map_err(Error::RootCredentials)
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
        // Messages quote IAM's errors, which quote the request (its resources, say), and the
        // status may hold what a user wrote: characters YAML refuses must be escaped, else the
        // API server refuses the apply, every time.
        let body = apply_body(&patch).map_err(Error::Serialize)?;
        self.api(cr)?
            .patch_status(
                &cr.name_any(),
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(&body),
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
        secret::owned(existing, cr).map_err(Error::ForeignSecret)
    }

    /// Writes `desired` over `existing` (see [`secret::merged`]) or creates it.
    async fn write_secret(&self, existing: Option<Secret>, desired: Secret) -> Result<(), Error> {
        let ns = desired.metadata.namespace.clone().unwrap_or_default();
        let api = Api::<Secret>::namespaced(self.client.clone(), &ns);
        let pp = PostParams {
            field_manager: Some(MANAGER.to_owned()),
            ..PostParams::default()
        };
        match existing {
            None => {
                api.create(&pp, &desired).await?;
            }
            Some(existing) => {
                let name = desired.name_any();
                api.replace(&name, &pp, &secret::merged(existing, &desired))
                    .await?;
            }
        }
        Ok(())
    }

    /// Writes `desired` to the request's Secret unless it holds that data already, and says so
    /// in an Event (`<what> to Secret <ns>/<name>`). Whether it wrote.
    async fn put_secret(
        &self,
        cr: &CredentialsRequest,
        desired: Secret,
        reason: &str,
        what: &str,
    ) -> Result<bool, Error> {
        let existing = self.target_secret(cr).await?;
        if secret::holds(existing.as_ref(), &desired) {
            return Ok(false);
        }
        self.write_secret(existing, desired).await?;
        let r = &cr.spec.secret_ref;
        let note = format!("{what} to Secret {}/{}", r.namespace, r.name);
        self.events.normal(cr, reason, "Provision", note).await;
        Ok(true)
    }

    async fn mint(
        &self,
        cr: &CredentialsRequest,
        status: &mut CredentialsRequestStatus,
        statements: &[StatementEntry],
        root: &RootCredentials,
    ) -> Result<(), Error> {
        let iam = self.iam(root);
        // Names first, persisted before anything exists in the cloud.
        let provider = match plan::recorded_identity(status) {
            Some(p) => p,
            None => {
                let provider = plan::new_identity(
                    &self.settings.cluster_id,
                    &cr.name_any(),
                    mint::random_suffix(),
                );
                status.provider_status = Some(provider.clone());
                self.write_status(cr, status).await?;
                provider
            }
        };
        // The status is only a name: act on a user only if it is one this operator mints for
        // this request, and, if it exists, only if it was minted for this request.
        if let Some(problem) =
            plan::foreign_identity(&provider, &self.settings.cluster_id, &cr.name_any())
        {
            return Err(Error::ForeignIdentity(problem));
        }
        let (user, policy) = (&provider.user, &provider.policy);
        let request = mint::request_key(cr);
        let tags = self.user_tags(cr);
        let arn = match iam.user_arn(user).await? {
            Some(arn) => {
                let current = iam.user_tags(user).await?;
                let uid = cr.uid().unwrap_or_default();
                if !plan::minted_for(&current, &uid) {
                    return Err(Error::ForeignIdentity(plan::not_minted_for(user, &uid)));
                }
                if iam.ensure_tags(user, &tags, &current).await? {
                    tracing::info!(%request, %user, "repaired the IAM user's tags");
                }
                arn
            }
            None => {
                // Minted users get the root user's permissions boundary, so that they can
                // never exceed it (OpenShift does the same).
                let root_user = iam.caller().await?;
                let boundary = root_user.permissions_boundary.as_deref();
                let arn = iam.create_user(user, &tags, boundary).await?;
                tracing::info!(%request, %user, ?boundary, "created IAM user");
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
            tracing::info!(%request, %user, "put the user policy");
        }

        let existing = self.target_secret(cr).await?;
        let keys = iam.list_access_keys(user).await?;
        let in_secret = existing.as_ref().and_then(mint::secret_key_id);
        let rotation = self.settings.key_rotation;
        match plan::keys(&keys, in_secret.as_deref(), rotation, SystemTime::now()) {
            Keys::Keep => {
                // Valid key: only the recorded policy may need an update.
                if let Some(updated) = existing
                    .as_ref()
                    .and_then(|s| secret::recording_policy(s, &document))
                {
                    self.write_secret(existing, updated).await?;
                }
            }
            Keys::Replace { rotated } => {
                for k in &keys {
                    iam.delete_access_key(user, &k.id).await?;
                }
                let key = iam.create_access_key(user).await?;
                let desired = mint::desired_secret(cr, &key.id, &key.secret, Some(&document));
                self.write_secret(existing, desired).await?;
                let r = &cr.spec.secret_ref;
                let (reason, note) = plan::key_event(rotated, user, &r.namespace, &r.name);
                self.events.normal(cr, reason, "Provision", note).await;
            }
        }
        Ok(())
    }

    async fn passthrough(
        &self,
        cr: &CredentialsRequest,
        statements: &[StatementEntry],
        root: &RootCredentials,
        simulate: bool,
    ) -> Result<(), Error> {
        if simulate {
            let iam = self.iam(root);
            let region = self
                .settings
                .endpoint
                .region
                .clone()
                .or_else(|| self.sdk.region().map(|r| r.to_string()));
            let denied = iam
                .denied_actions(&plan::wanted_actions(statements), region.as_deref())
                .await
                .map_err(Error::Simulation)?;
            if !denied.is_empty() {
                return Err(Error::InsufficientRoot(denied));
            }
        }
        let desired = mint::desired_secret(cr, &root.access_key_id, &root.secret_access_key, None);
        self.put_secret(
            cr,
            desired,
            "CredentialsCopied",
            "Copied the root credentials",
        )
        .await?;
        Ok(())
    }

    /// Deletes a minted user: its policy, its access keys, the user.
    async fn delete_identity(
        &self,
        iam: &Iam,
        provider: &crate::api::AwsProviderStatus,
    ) -> Result<(), Error> {
        iam.delete_user_policy(&provider.user, &provider.policy)
            .await?;
        let keys = match iam.list_access_keys(&provider.user).await {
            Err(e) if e.is_no_such_entity() => Vec::new(),
            keys => keys?,
        };
        for key in keys {
            iam.delete_access_key(&provider.user, &key.id).await?;
        }
        iam.delete_user(&provider.user).await?;
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
                let message = conditions::deprovision_failed(&mut status, &e);
                self.write_status(cr, &status).await?;
                self.events
                    .warning(cr, conditions::DEPROVISION_FAILED, "Deprovision", message)
                    .await;
                Err(e)
            }
        }
    }

    async fn deprovision(&self, cr: &CredentialsRequest) -> Result<(), Error> {
        // Whatever the mode now: a user minted before a switch away from mint goes too. Only a
        // user minted for this request: the status is only a name (see `mint`).
        if let Some(provider) = cr.status.as_ref().and_then(plan::recorded_identity) {
            let uid = cr.uid().unwrap_or_default();
            let foreign = match plan::foreign_identity(
                &provider,
                &self.settings.cluster_id,
                &cr.name_any(),
            ) {
                Some(problem) => Some(problem),
                None => {
                    let root = self.root_credentials().await?;
                    let iam = self.iam(&root);
                    match iam.user_tags(&provider.user).await {
                        // Never created (or deleted already): nothing in the cloud.
                        Err(e) if e.is_no_such_entity() => None,
                        Err(e) => return Err(e.into()),
                        Ok(tags) if !plan::minted_for(&tags, &uid) => {
                            Some(plan::not_minted_for(&provider.user, &uid))
                        }
                        Ok(_) => {
                            self.delete_identity(&iam, &provider).await?;
                            None
                        }
                    }
                }
            };
            if let Some(problem) = foreign {
                tracing::warn!(request = %mint::request_key(cr), "deprovisioning: {problem}");
                self.events
                    .warning(cr, "DeprovisionSkipped", "Deprovision", problem)
                    .await;
            }
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
                Err(e) if !is_status(&e, 404) && !is_status(&e, 409) => return Err(e.into()),
                _ => {}
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A manager serving `namespaces`, on a client that never connects (registering opens no
    /// connection).
    fn manager(namespaces: &[&str]) -> Result<Manager, kube::Error> {
        let config = kube::Config::new(http::Uri::from_static("http://127.0.0.1:9"));
        let client = Client::try_from(config)?;
        Ok(Manager::new(MANAGER, client).namespaces(namespaces.iter().copied()))
    }

    #[tokio::test]
    async fn the_cluster_wide_and_root_watches_are_opened_once_for_every_scope()
    -> Result<(), kube::Error> {
        let sdk = aws_config::SdkConfig::builder().build();
        for namespaces in [&[][..], &["a"], &["a", "b", "c"]] {
            let mut manager = manager(namespaces)?;
            register(&mut manager, &Settings::default(), &sdk);
            let scopes = namespaces.len().max(1);
            // A request watch per scope; the operator's Secrets, Namespaces and the root
            // Secret once.
            assert_eq!(manager.watch_count(), scopes + 3, "{namespaces:?}");
        }
        Ok(())
    }

    #[test]
    fn only_generation_deletion_and_finalizers_trigger_a_request() {
        let spec = crate::api::CredentialsRequestSpec {
            secret_ref: crate::api::SecretReference {
                name: "s".into(),
                namespace: "ns".into(),
            },
            provider_spec: crate::api::ProviderSpec::default(),
            service_account_names: Vec::new(),
            cloud_token_path: None,
        };
        let mut cr = CredentialsRequest::new("r", spec);
        cr.metadata.generation = Some(1);
        let first = request_fingerprint(&cr);
        cr.status = Some(CredentialsRequestStatus {
            provisioned: true,
            ..CredentialsRequestStatus::default()
        });
        cr.metadata.resource_version = Some("2".into());
        assert_eq!(request_fingerprint(&cr), first, "a status write");
        cr.metadata.finalizers = Some(vec![FINALIZER.into()]);
        let finalized = request_fingerprint(&cr);
        assert_ne!(finalized, first);
        cr.metadata.generation = Some(2);
        assert_ne!(request_fingerprint(&cr), finalized);
    }

    #[test]
    fn the_root_secrets_cache_keeps_no_keys() {
        let mut root = Secret {
            data: Some([("aws_secret_access_key".into(), Default::default())].into()),
            string_data: Some([("k".into(), "v".into())].into()),
            ..Secret::default()
        };
        root.metadata.name = Some("aws-creds".into());
        root.metadata.managed_fields = Some(Vec::new());
        forget_keys(&mut root);
        assert!(root.data.is_none() && root.string_data.is_none());
        assert!(root.metadata.managed_fields.is_none());
        assert_eq!(root.metadata.name.as_deref(), Some("aws-creds"));
    }
}
