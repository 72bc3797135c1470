//! The signing CA: the `signing-key` Secret in the operator's namespace (created on first start,
//! never copied elsewhere), rotated before it expires or when a rotation is forced, and its
//! bundle published to the `signing-cabundle` ConfigMap next to it. The loaded CA is broadcast
//! to the other controllers through a watch channel.
//!
//! A controller of one object on the runtime's engine: only it writes the signing Secret, which
//! it watches by name, so a deleted Secret is replaced by a brand-new CA (no overlap, as in
//! OpenShift) and an annotation asking for rotation is acted on at once; it also runs at the
//! rotation deadline, and is retried with backoff (100 ms doubling to a minute) on errors. A CA
//! it can't use is kept and reported (Event, reconcile error), never silently replaced: a new CA
//! would break every client at once. The current CA's NotAfter is `service_ca_expiry_time_seconds`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::ResourceExt;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use operon_runtime::backoff::Backoff;
use operon_runtime::client::is_status;
use operon_runtime::controller::{self, Action, Controller};
use operon_runtime::events::Events;
use operon_runtime::manager::Manager;
use operon_runtime::metrics::Gauge;
use parking_lot::Mutex;
use time::OffsetDateTime;
use tokio::sync::watch;

use super::{Error, MANAGER, MAX_REQUEUE, Settings};
use crate::pki::{self, KeyAlgorithm, SigningCa};
use crate::{
    CA_BUNDLE_KEY, DESCRIPTION, FORCE_ROTATION_REASON, FORCED_ROTATION_REASON, INTERMEDIATE_CA_KEY,
    MANAGED_BY, MANAGED_BY_LABEL, OWNING_COMPONENT, OWNING_COMPONENT_NAME,
    SIGNING_BUNDLE_CONFIGMAP, SIGNING_SECRET_NAME, TLS_CERT_KEY, TLS_KEY_KEY,
};

/// The signer as the other controllers use it.
#[derive(Debug)]
pub struct CaState {
    pub ca: SigningCa,
    /// What clients trust: the CA, or after a rotation the new CA and the old one re-signed.
    pub bundle_pem: String,
    /// After a rotation, the new CA signed by the old key, appended to new leaves; else empty.
    pub intermediate_pem: String,
}

/// The gauge of the current CA's NotAfter (Unix seconds), under OpenShift's name; set by the
/// leader only (a standby reports 0).
pub const EXPIRY_METRIC: &str = "service_ca_expiry_time_seconds";
const EXPIRY_METRIC_HELP: &str = "Reports the expiry time of service CA used in the cluster.";

/// `None` until the CA is loaded.
pub type CaWatch = watch::Receiver<Option<Arc<CaState>>>;

pub struct Signer {
    secrets: Api<Secret>,
    configmaps: Api<ConfigMap>,
    events: Events,
    key: KeyAlgorithm,
    ca_lifetime: Duration,
    rotation_margin: Duration,
    forced_reason: Option<String>,
    /// `service_ca_expiry_time_seconds`: the current CA's NotAfter, as OpenShift reports it.
    expiry: Gauge,
    tx: watch::Sender<Option<Arc<CaState>>>,
    /// The signing Secret as this signer last wrote it, and the resourceVersion it replaced
    /// (`None` when it created it): a cached copy still at that version is older than ours.
    written: Mutex<Option<(Option<String>, Secret)>>,
}

fn data_str<'a>(secret: &'a Secret, key: &str) -> Option<&'a str> {
    secret
        .data
        .as_ref()?
        .get(key)
        .and_then(|b| std::str::from_utf8(&b.0).ok())
        .filter(|s| !s.trim().is_empty())
}

fn annotation<'a>(secret: &'a Secret, key: &str) -> Option<&'a str> {
    secret
        .annotations()
        .get(key)
        .map(String::as_str)
        .filter(|v| !v.is_empty())
}

/// The CA a signing Secret holds. A bundle that doesn't contain the CA (someone replaced
/// `tls.crt` alone) is ignored in favour of the CA itself.
pub fn load(secret: &Secret) -> Result<CaState, pki::Error> {
    let missing = |what| pki::Error::Parse {
        what,
        detail: "missing from the signing Secret".into(),
    };
    let cert = data_str(secret, TLS_CERT_KEY).ok_or_else(|| missing("tls.crt"))?;
    let key = data_str(secret, TLS_KEY_KEY).ok_or_else(|| missing("tls.key"))?;
    let ca = SigningCa::from_pem(cert, key)?;
    let bundle_pem = data_str(secret, CA_BUNDLE_KEY)
        .filter(|b| b.contains(ca.cert_pem.trim()))
        .map_or_else(|| ca.cert_pem.clone(), str::to_owned);
    let intermediate_pem = if bundle_pem == ca.cert_pem {
        String::new()
    } else {
        data_str(secret, INTERMEDIATE_CA_KEY)
            .unwrap_or_default()
            .to_owned()
    };
    Ok(CaState {
        ca,
        bundle_pem,
        intermediate_pem,
    })
}

/// What the signing Secret and the bundle ConfigMap are, for OpenShift's description annotation.
const SIGNING_SECRET_DESCRIPTION: &str = "The service-ca-operator's signing CA: it signs the \
     serving certificates of annotated Services and is rotated, with a trust overlap, before it \
     expires.";
const BUNDLE_DESCRIPTION: &str = "The CA bundle that verifies serving certificates signed by \
     service-ca-operator, across a rotation.";

/// OpenShift's owning-component and description annotations, where nobody set them yet.
fn claim(annotations: &mut BTreeMap<String, String>, description: &str) {
    for (key, value) in [
        (OWNING_COMPONENT, OWNING_COMPONENT_NAME),
        (DESCRIPTION, description),
    ] {
        let current = annotations.entry(key.to_owned()).or_default();
        if current.is_empty() {
            value.clone_into(current);
        }
    }
}

fn secret_data(entries: &[(&str, &str)]) -> BTreeMap<String, ByteString> {
    entries
        .iter()
        .map(|(k, v)| ((*k).to_owned(), ByteString(v.as_bytes().to_vec())))
        .collect()
}

/// How long until a wall-clock time, at most [`MAX_REQUEUE`].
fn wait_until(at: OffsetDateTime) -> Duration {
    let wait: Duration = (at - OffsetDateTime::now_utc())
        .try_into()
        .unwrap_or(Duration::ZERO);
    wait.min(MAX_REQUEUE)
}

impl Signer {
    pub fn new(manager: &mut Manager, settings: &Settings) -> Signer {
        let (tx, _) = watch::channel(None);
        let client = manager.client();
        Signer {
            secrets: Api::namespaced(client.clone(), &settings.namespace),
            configmaps: Api::namespaced(client, &settings.namespace),
            events: manager.events(),
            key: settings.key_algorithm,
            ca_lifetime: settings.ca_lifetime,
            rotation_margin: settings.ca_rotation_margin,
            forced_reason: settings.force_rotation_reason.clone(),
            expiry: manager
                .metrics_registry()
                .gauge(EXPIRY_METRIC, EXPIRY_METRIC_HELP),
            tx,
            written: Mutex::new(None),
        }
    }

    pub fn subscribe(&self) -> CaWatch {
        self.tx.subscribe()
    }

    /// The signer as a controller of the signing Secret in the signing namespace.
    pub fn register(self, manager: &mut Manager, settings: &Settings) {
        let secret = manager.reflect(
            Api::<Secret>::namespaced(manager.client(), &settings.namespace),
            watcher::Config::default().fields(&format!("metadata.name={SIGNING_SECRET_NAME}")),
            controller::trim_managed_fields,
        );
        let controller = Controller::new("signer", secret)
            // Also when it doesn't exist: the signer creates it.
            .always(ObjectRef::new(SIGNING_SECRET_NAME).within(&settings.namespace))
            .backoff(Backoff::new(
                Duration::from_millis(100),
                Duration::from_secs(60),
            ));
        manager.add_keyed(controller, Arc::new(self), reconcile);
    }

    /// The cached signing Secret, unless it is older than the one this signer last wrote.
    fn freshest(&self, cached: Option<Arc<Secret>>) -> Option<Secret> {
        let written = self.written.lock();
        match (cached, written.as_ref()) {
            (None, Some((None, created))) => Some(created.clone()),
            (Some(c), Some((replaced, ours))) if c.resource_version() == *replaced => {
                Some(ours.clone())
            }
            (cached, _) => cached.map(|c| (*c).clone()),
        }
    }

    /// A rotation asked for (by flag, else by the Secret's annotation) and not yet done: the
    /// reason differs from the one the last forced rotation recorded.
    fn forced_rotation(&self, secret: &Secret) -> Option<String> {
        self.forced_reason
            .as_deref()
            .filter(|r| !r.is_empty())
            .or_else(|| annotation(secret, FORCE_ROTATION_REASON))
            .filter(|r| Some(*r) != annotation(secret, FORCED_ROTATION_REASON))
            .map(str::to_owned)
    }

    /// A brand-new CA in place of the one `secret` holds (no overlap: nothing of the old one can
    /// be used), recording `forced` as the forced rotation's reason.
    async fn replace_with_new_ca(
        &self,
        secret: &Secret,
        forced: Option<&str>,
        now: OffsetDateTime,
    ) -> Result<(Secret, CaState), Error> {
        let ca = SigningCa::generate_with(self.key, self.ca_lifetime, now)?;
        let data = secret_data(&[(TLS_CERT_KEY, &ca.cert_pem), (TLS_KEY_KEY, &ca.key_pem)]);
        let replaced = self.replace(secret, data, forced).await?;
        let state = CaState {
            bundle_pem: ca.cert_pem.clone(),
            intermediate_pem: String::new(),
            ca,
        };
        Ok((replaced, state))
    }

    /// Brings the signing Secret and the bundle ConfigMap to what they should be and publishes
    /// the CA; returns when to look again (the rotation deadline).
    async fn sync(&self, current: &mut Option<Secret>) -> Result<OffsetDateTime, Error> {
        let now = OffsetDateTime::now_utc();
        let secret = match current.clone() {
            Some(s) => s,
            None => {
                let created = self.create().await?;
                *current = Some(created.clone());
                created
            }
        };
        let state = match load(&secret) {
            // No certificate at all: nothing to keep (OpenShift initialises it the same way).
            Err(_) if data_str(&secret, TLS_CERT_KEY).is_none() => {
                let (replaced, state) = self.replace_with_new_ca(&secret, None, now).await?;
                let note = format!(
                    "The signing Secret held no CA certificate; created the signing CA {}",
                    state.ca.common_name
                );
                self.events
                    .normal(&replaced, "SigningCACreated", "Create", note)
                    .await;
                *current = Some(replaced);
                state
            }
            // Unusable, but maybe only to us: keep it (OpenShift does) and replace it only when
            // asked to, since a new CA has no overlap with it and breaks every client at once.
            Err(e) => match self.forced_rotation(&secret) {
                Some(reason) => {
                    let (replaced, state) = self
                        .replace_with_new_ca(&secret, Some(&reason), now)
                        .await?;
                    let note = format!(
                        "Replaced the unusable signing CA ({e}) with a new CA, as asked ({reason}); \
                         there is no trust overlap: every client needs the new bundle"
                    );
                    self.events
                        .warning(&replaced, "SigningCAReplaced", "Rotate", note)
                        .await;
                    *current = Some(replaced);
                    state
                }
                None => {
                    let note = format!(
                        "The signing CA can't be used ({e}). It is kept, and serving certificates \
                         keep coming from the CA loaded before (none if the operator started with \
                         this one). Fix tls.crt/tls.key, or replace it with a new CA (no trust \
                         overlap: every client needs the new bundle) by annotating this Secret \
                         with {FORCE_ROTATION_REASON}=<reason>"
                    );
                    self.events
                        .warning(&secret, "InvalidSigningCA", "Load", note)
                        .await;
                    return Err(Error::InvalidSigningCa(e.to_string()));
                }
            },
            Ok(state) => {
                let forced = self.forced_rotation(&secret);
                let forced = forced.as_deref();
                if forced.is_some() || pki::needs_rotation(&state.ca, now, self.rotation_margin) {
                    let rotation =
                        pki::rotate(&state.ca, self.ca_lifetime, now, self.rotation_margin)?;
                    let data = secret_data(&[
                        (TLS_CERT_KEY, &rotation.new_ca.cert_pem),
                        (TLS_KEY_KEY, &rotation.new_ca.key_pem),
                        (CA_BUNDLE_KEY, &rotation.bundle_pem),
                        (INTERMEDIATE_CA_KEY, &rotation.intermediate_pem),
                    ]);
                    let updated = self.replace(&secret, data, forced).await?;
                    let why = match forced {
                        Some(reason) => format!("forced: {reason}"),
                        None => format!("it expires at {}", state.ca.not_after),
                    };
                    self.events
                        .normal(
                            &updated,
                            "SigningCARotated",
                            "Rotate",
                            format!(
                                "Rotated the signing CA ({why}); serving certificates are re-issued, clients trusting the previous bundle keep working until {}",
                                state.ca.not_after
                            ),
                        )
                        .await;
                    tracing::info!(%why, "rotated the signing CA");
                    *current = Some(updated);
                    CaState {
                        ca: rotation.new_ca,
                        bundle_pem: rotation.bundle_pem,
                        intermediate_pem: rotation.intermediate_pem,
                    }
                } else {
                    state
                }
            }
        };
        let deadline = state.ca.not_after
            - time::Duration::try_from(self.rotation_margin).unwrap_or(time::Duration::ZERO);
        let bundle = state.bundle_pem.clone();
        self.expiry.set(state.ca.not_after.unix_timestamp());
        let changed = self.tx.borrow().as_ref().is_none_or(|old| {
            old.ca.cert_pem != state.ca.cert_pem
                || old.bundle_pem != state.bundle_pem
                || old.intermediate_pem != state.intermediate_pem
        });
        if changed {
            tracing::info!(ca = %state.ca.common_name, not_after = %state.ca.not_after, "signing CA loaded");
            self.tx.send_replace(Some(Arc::new(state)));
        }
        // Serving certificates don't need the published copy: publish the CA first.
        self.publish_bundle(&bundle).await?;
        Ok(deadline)
    }

    /// A new CA in a new signing Secret; an existing one (a lost race) is returned instead.
    async fn create(&self) -> Result<Secret, Error> {
        let ca = SigningCa::generate_with(self.key, self.ca_lifetime, OffsetDateTime::now_utc())?;
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(SIGNING_SECRET_NAME.to_owned()),
                labels: Some(BTreeMap::from([(
                    MANAGED_BY_LABEL.to_owned(),
                    MANAGED_BY.to_owned(),
                )])),
                annotations: Some({
                    let mut annotations = BTreeMap::new();
                    claim(&mut annotations, SIGNING_SECRET_DESCRIPTION);
                    annotations
                }),
                ..ObjectMeta::default()
            },
            type_: Some(crate::serving::TLS_SECRET_TYPE.to_owned()),
            data: Some(secret_data(&[
                (TLS_CERT_KEY, &ca.cert_pem),
                (TLS_KEY_KEY, &ca.key_pem),
            ])),
            ..Secret::default()
        };
        let pp = PostParams {
            field_manager: Some(MANAGER.to_owned()),
            ..PostParams::default()
        };
        match self.secrets.create(&pp, &secret).await {
            Ok(created) => {
                tracing::info!(ca = %ca.common_name, "created the signing CA");
                self.events
                    .normal(
                        &created,
                        "SigningCACreated",
                        "Create",
                        format!("Created the signing CA {}", ca.common_name),
                    )
                    .await;
                Ok(created)
            }
            Err(e) if is_status(&e, 409) => Ok(self.secrets.get(SIGNING_SECRET_NAME).await?),
            Err(e) => Err(e.into()),
        }
    }

    /// `secret` with `data` replaced (and the forced-rotation reason recorded), guarded by its
    /// resourceVersion: a concurrent change makes this fail and the next event retries.
    async fn replace(
        &self,
        secret: &Secret,
        data: BTreeMap<String, ByteString>,
        forced_reason: Option<&str>,
    ) -> Result<Secret, Error> {
        let mut updated = secret.clone();
        updated.data = Some(data);
        updated.string_data = None;
        updated.metadata.managed_fields = None;
        updated
            .labels_mut()
            .insert(MANAGED_BY_LABEL.to_owned(), MANAGED_BY.to_owned());
        claim(updated.annotations_mut(), SIGNING_SECRET_DESCRIPTION);
        if let Some(reason) = forced_reason {
            updated
                .annotations_mut()
                .insert(FORCED_ROTATION_REASON.to_owned(), reason.to_owned());
        }
        let pp = PostParams {
            field_manager: Some(MANAGER.to_owned()),
            ..PostParams::default()
        };
        Ok(self
            .secrets
            .replace(SIGNING_SECRET_NAME, &pp, &updated)
            .await?)
    }

    /// The `signing-cabundle` ConfigMap holds exactly the bundle; written only when it differs.
    async fn publish_bundle(&self, bundle_pem: &str) -> Result<(), Error> {
        let existing = self.configmaps.get_opt(SIGNING_BUNDLE_CONFIGMAP).await?;
        let current = existing
            .as_ref()
            .and_then(|cm| cm.data.as_ref())
            .and_then(|d| d.get(CA_BUNDLE_KEY));
        if current.map(String::as_str) == Some(bundle_pem) {
            return Ok(());
        }
        let cm = serde_json::json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": SIGNING_BUNDLE_CONFIGMAP,
                "labels": { MANAGED_BY_LABEL: MANAGED_BY },
                "annotations": {
                    OWNING_COMPONENT: OWNING_COMPONENT_NAME,
                    DESCRIPTION: BUNDLE_DESCRIPTION,
                },
            },
            "data": { CA_BUNDLE_KEY: bundle_pem },
        });
        self.configmaps
            .patch(
                SIGNING_BUNDLE_CONFIGMAP,
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(&cm),
            )
            .await?;
        Ok(())
    }
}

/// Brings the signing CA to what it should be; looks again at the rotation deadline.
async fn reconcile(
    _key: ObjectRef<Secret>,
    cached: Option<Arc<Secret>>,
    signer: Arc<Signer>,
) -> Result<Action, Error> {
    let mut current = signer.freshest(cached);
    let before = current.as_ref().map(|s| s.resource_version());
    let result = signer.sync(&mut current).await;
    if let Some(after) = current.filter(|s| Some(s.resource_version()) != before) {
        *signer.written.lock() = Some((before.flatten(), after));
    }
    Ok(Action::requeue(wait_until(result?)))
}
