//! Services annotated with `serving-cert-secret-name` → their TLS Secrets.
//!
//! Triggers: Service changes that matter (the requested name, headless or not, the error
//! annotations cleared), every event of a Secret this operator wrote (label-selected, mapped to
//! its Service by the originating-service-name annotation: deleted or edited Secrets are repaired
//! at once), a change of the signing CA (every Service), and a timer per Secret for its refresh.
//!
//! Writes happen only when something is wrong, so a restart over valid Secrets writes nothing.
//! The cache can lag behind this controller's own writes; the Secrets and Service annotations
//! it last wrote are remembered and preferred over older cached copies.

use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Secret, Service};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use operon_runtime::cache::Writes;
use operon_runtime::client::is_status;
use operon_runtime::controller::{self, Action, Controller};
use operon_runtime::events::Events;
use operon_runtime::manager::{Manager, Scope};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::{CaState, CaWatch, Error, MANAGER, MAX_REQUEUE, Settings, ca_changes, current_ca};
use crate::pki::{KeyAlgorithm, ServingCertRequest};
use crate::serving::{self as rules, SecretCheck};
use crate::{
    ALPHA_SERVING_CERT_GENERATION_ERROR, ALPHA_SERVING_CERT_GENERATION_ERROR_NUM,
    ALPHA_SERVING_CERT_SIGNED_BY, EXPIRY, MANAGED_BY, MANAGED_BY_LABEL, MAX_GENERATION_ERRORS,
    ORIGINATING_SERVICE_NAME, ORIGINATING_SERVICE_UID, SERVING_CERT_GENERATION_ERROR,
    SERVING_CERT_GENERATION_ERROR_NUM, SERVING_CERT_SIGNED_BY, TLS_CERT_KEY, TLS_KEY_KEY,
};

struct Context {
    client: Client,
    ca: CaWatch,
    secrets: Store<Secret>,
    services: Store<Service>,
    events: Events,
    cluster_domain: String,
    lifetime: Duration,
    margin: Duration,
    key: KeyAlgorithm,
    /// Secrets as this controller last wrote them.
    written: Writes<ObjectRef<Secret>, Secret>,
    /// Per Service, the signer CN this controller last annotated it with.
    signed: Writes<ObjectRef<Service>, String>,
}

fn service_annotation<'a>(svc: &'a Service, key: &str) -> Option<&'a str> {
    svc.annotations()
        .get(key)
        .map(String::as_str)
        .filter(|v| !v.is_empty())
}

fn error_num(svc: &Service) -> Option<&str> {
    service_annotation(svc, SERVING_CERT_GENERATION_ERROR_NUM)
        .or_else(|| service_annotation(svc, ALPHA_SERVING_CERT_GENERATION_ERROR_NUM))
}

fn has_given_up(svc: &Service) -> bool {
    error_num(svc)
        .and_then(|n| n.trim().parse::<u32>().ok())
        .is_some_and(|n| n >= MAX_GENERATION_ERRORS)
}

/// What in a Service makes a reconcile worthwhile; our own annotation writes and the error
/// count going up are left out, so they don't retrigger (the backoff paces retries).
fn service_fingerprint(svc: &Service) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    svc.metadata.uid.hash(&mut h);
    rules::requested_secret_name(svc).hash(&mut h);
    rules::is_headless(svc).hash(&mut h);
    error_num(svc).is_none().hash(&mut h);
    svc.metadata.deletion_timestamp.is_some().hash(&mut h);
    h.finish()
}

/// The serving controller for one namespace scope.
pub fn register(manager: &mut Manager, scope: &Scope, settings: &Settings, ca: CaWatch) {
    let services = manager.reflect(
        scope.api::<Service>(manager.client()),
        watcher::Config::default(),
        controller::trim_managed_fields,
    );
    // Only the Secrets this operator wrote: the operator never needs the others' contents.
    let secrets = manager.reflect(
        scope.api::<Secret>(manager.client()),
        watcher::Config::default().labels(&format!("{MANAGED_BY_LABEL}={MANAGED_BY}")),
        controller::trim_managed_fields,
    );
    let by_annotation = |secret: Secret| {
        let service = secret.annotations().get(ORIGINATING_SERVICE_NAME)?.clone();
        Some(ObjectRef::<Service>::new(&service).within(&secret.namespace()?))
    };
    let ctx = Arc::new(Context {
        client: manager.client(),
        ca: ca.clone(),
        secrets: secrets.store.clone(),
        services: services.store.clone(),
        events: manager.events(),
        cluster_domain: settings.cluster_domain.clone(),
        lifetime: settings.serving_cert_lifetime,
        margin: settings.refresh_margin,
        key: settings.key_algorithm,
        written: Writes::default(),
        signed: Writes::default(),
    });
    let controller = Controller::new("service", services)
        .filter(service_fingerprint)
        .watches(secrets, by_annotation)
        .reconcile_all_on(ca_changes(ca))
        .workers(settings.concurrency.into());
    manager.add(controller, ctx, reconcile);
}

async fn reconcile(svc: Arc<Service>, ctx: Arc<Context>) -> Result<Action, Error> {
    ctx.reconcile(&svc).await
}

impl Context {
    async fn reconcile(&self, svc: &Service) -> Result<Action, Error> {
        if svc.metadata.deletion_timestamp.is_some() {
            // The Secret goes with the Service through its ownerReference.
            return Ok(Action::await_change());
        }
        let Some(secret_name) = rules::requested_secret_name(svc) else {
            return Ok(Action::await_change());
        };
        if has_given_up(svc) {
            tracing::debug!(service = %svc.name_any(), "{MAX_GENERATION_ERRORS} generation errors: waiting for the error annotations to be cleared");
            return Ok(Action::await_change());
        }
        let ns = svc
            .namespace()
            .ok_or_else(|| Error::NoNamespace(format!("Service {}", svc.name_any())))?;
        let Some(ca) = current_ca(&self.ca).await else {
            // The signer stopped: shutting down.
            return Ok(Action::await_change());
        };

        let name = svc.name_any();
        let uid = svc.metadata.uid.clone().unwrap_or_default();
        let req = ServingCertRequest {
            service_name: &name,
            namespace: &ns,
            service_uid: &uid,
            headless: rules::is_headless(svc),
            cluster_domain: &self.cluster_domain,
            lifetime: self.lifetime,
            key: self.key,
        };
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), &ns);
        let secret_key = ObjectRef::<Secret>::new(&secret_name).within(&ns);
        let outcome = match self.newest(&secret_key) {
            None => self.create(svc, &secrets, &secret_name, &req, &ca).await,
            Some(existing) => self.repair(svc, &secrets, existing, &req, &ca).await,
        };
        match outcome {
            Ok(expiry) => {
                self.mark_signed(svc, &ca.ca.common_name).await?;
                let refresh_at =
                    expiry - time::Duration::try_from(self.margin).unwrap_or(time::Duration::ZERO);
                let wait = (refresh_at - OffsetDateTime::now_utc())
                    .try_into()
                    .unwrap_or(Duration::ZERO);
                // A second late so the certificate is due when the timer fires.
                Ok(Action::requeue(
                    (wait + Duration::from_secs(1)).min(MAX_REQUEUE),
                ))
            }
            Err(e @ (Error::Pki(_) | Error::ForeignSecret(_) | Error::Rejected { .. })) => {
                self.record_error(svc, &e).await?;
                Err(e)
            }
            Err(e) => Err(e),
        }
    }

    /// The cached Secret, or what this controller last wrote if the cache hasn't caught up.
    fn newest(&self, key: &ObjectRef<Secret>) -> Option<Secret> {
        let cached = self.secrets.get(key)?;
        self.written
            .newer_than_cache(key, cached.metadata.resource_version.as_deref())
            .or_else(|| Some((*cached).clone()))
    }

    /// Remembers `secret` as written over the version `replaced`.
    fn remember(&self, replaced: Option<String>, secret: &Secret) {
        self.written
            .record(ObjectRef::from_obj(secret), replaced, secret.clone());
        self.written.forget_deleted(self.secrets.len(), || {
            |k: &ObjectRef<Secret>| self.secrets.get(k).is_some()
        });
    }

    /// Issues on the blocking pool: an RSA key takes ~0.3 s of CPU, which would stall the
    /// watches, probes and lease renewals sharing the async workers.
    async fn issue(
        &self,
        svc: &Service,
        req: &ServingCertRequest<'_>,
        ca: &Arc<CaState>,
    ) -> Result<Secret, Error> {
        let ca = ca.clone();
        let (name, namespace, uid, domain) = (
            req.service_name.to_owned(),
            req.namespace.to_owned(),
            req.service_uid.to_owned(),
            req.cluster_domain.to_owned(),
        );
        let (headless, lifetime, key) = (req.headless, req.lifetime, req.key);
        let cert = tokio::task::spawn_blocking(move || {
            let req = ServingCertRequest {
                service_name: &name,
                namespace: &namespace,
                service_uid: &uid,
                headless,
                cluster_domain: &domain,
                lifetime,
                key,
            };
            ca.ca
                .issue_with_chain(&req, OffsetDateTime::now_utc(), &ca.intermediate_pem)
        })
        .await??;
        Ok(rules::desired_secret(svc, &cert))
    }

    /// Creates the Secret; returns the certificate's expiry.
    async fn create(
        &self,
        svc: &Service,
        secrets: &Api<Secret>,
        secret_name: &str,
        req: &ServingCertRequest<'_>,
        ca: &Arc<CaState>,
    ) -> Result<OffsetDateTime, Error> {
        let desired = self.issue(svc, req, ca).await?;
        let pp = PostParams {
            field_manager: Some(MANAGER.to_owned()),
            ..PostParams::default()
        };
        match secrets.create(&pp, &desired).await {
            Ok(created) => {
                self.remember(None, &created);
                tracing::info!(service = %svc.name_any(), secret = %secret_name, "issued a serving certificate");
                Ok(expiry_of(&created).unwrap_or_else(OffsetDateTime::now_utc))
            }
            // Not in the (label-selected) cache, yet it exists: someone else's, or ours with
            // the label removed, or ours not yet seen.
            Err(e) if is_status(&e, 409) => match secrets.get_opt(secret_name).await? {
                Some(existing) => self.repair(svc, secrets, existing, req, ca).await,
                None => Err(e.into()),
            },
            Err(kube::Error::Api(status)) if matches!(status.code, 400 | 403 | 422) => {
                Err(Error::Rejected {
                    secret: secret_name.to_owned(),
                    message: status.message,
                })
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Checks an existing Secret and fixes what is wrong; returns the certificate's expiry.
    async fn repair(
        &self,
        svc: &Service,
        secrets: &Api<Secret>,
        existing: Secret,
        req: &ServingCertRequest<'_>,
        ca: &Arc<CaState>,
    ) -> Result<OffsetDateTime, Error> {
        let now = OffsetDateTime::now_utc();
        let secret_name = existing.name_any();
        let check = rules::check_secret(&existing, svc, &ca.ca, req, now, self.margin);
        let (updated, note) = match check {
            SecretCheck::Foreign => {
                let message = format!(
                    "secret/{secret_name} already exists and was not issued for service/{} (no \
                     {ORIGINATING_SERVICE_UID} annotation with this Service's UID); it is left \
                     untouched: delete it, or name another Secret in the Service's annotation",
                    svc.name_any()
                );
                return Err(Error::ForeignSecret(message));
            }
            SecretCheck::Regenerate(why) => {
                let desired = self.issue(svc, req, ca).await?;
                (
                    rules::merged_secret(&existing, &desired),
                    Some(format!(
                        "Re-issued the serving certificate in Secret {secret_name}: {}",
                        describe(why)
                    )),
                )
            }
            SecretCheck::Clean { extra_keys } => {
                let mut cleaned = existing.clone();
                if let Some(data) = cleaned.data.as_mut() {
                    data.retain(|k, _| k == TLS_CERT_KEY || k == TLS_KEY_KEY);
                }
                cleaned.string_data = None;
                cleaned
                    .labels_mut()
                    .insert(MANAGED_BY_LABEL.to_owned(), MANAGED_BY.to_owned());
                (
                    cleaned,
                    Some(format!(
                        "Removed unexpected keys {extra_keys:?} from Secret {secret_name}"
                    )),
                )
            }
            SecretCheck::Ok => {
                if existing.labels().get(MANAGED_BY_LABEL).map(String::as_str) == Some(MANAGED_BY) {
                    return Ok(expiry_of(&existing).unwrap_or(now));
                }
                // Valid but unlabelled: relabel so the watch sees it again.
                let mut relabelled = existing.clone();
                relabelled
                    .labels_mut()
                    .insert(MANAGED_BY_LABEL.to_owned(), MANAGED_BY.to_owned());
                (relabelled, None)
            }
        };
        let pp = PostParams {
            field_manager: Some(MANAGER.to_owned()),
            ..PostParams::default()
        };
        let mut updated = updated;
        updated.metadata.managed_fields = None;
        // Guarded by resourceVersion: a concurrent change fails this with 409 and is retried.
        let replaced = updated.metadata.resource_version.clone();
        let written = match secrets.replace(&secret_name, &pp, &updated).await {
            Ok(w) => w,
            Err(kube::Error::Api(status)) if matches!(status.code, 400 | 403 | 422) => {
                return Err(Error::Rejected {
                    secret: secret_name,
                    message: status.message,
                });
            }
            Err(e) => return Err(e.into()),
        };
        self.remember(replaced, &written);
        if let Some(note) = note {
            tracing::info!(service = %svc.name_any(), "{note}");
            self.events
                .normal(svc, "ServingCertUpdated", "Update", note)
                .await;
        }
        Ok(expiry_of(&written).unwrap_or(now))
    }

    /// Records the signer on the Service and clears earlier errors, unless already so.
    async fn mark_signed(&self, svc: &Service, signer: &str) -> Result<(), Error> {
        let current = service_annotation(svc, SERVING_CERT_SIGNED_BY) == Some(signer)
            && service_annotation(svc, ALPHA_SERVING_CERT_SIGNED_BY) == Some(signer)
            && service_annotation(svc, SERVING_CERT_GENERATION_ERROR).is_none()
            && error_num(svc).is_none();
        if current {
            return Ok(());
        }
        let key = ObjectRef::from_obj(svc);
        let seen = svc.metadata.resource_version.clone();
        let already = self
            .signed
            .newer_than_cache(&key, seen.as_deref())
            .as_deref()
            == Some(signer);
        if already {
            return Ok(());
        }
        let patch = json!({ "metadata": { "annotations": {
            SERVING_CERT_SIGNED_BY: signer,
            ALPHA_SERVING_CERT_SIGNED_BY: signer,
            SERVING_CERT_GENERATION_ERROR: Value::Null,
            ALPHA_SERVING_CERT_GENERATION_ERROR: Value::Null,
            SERVING_CERT_GENERATION_ERROR_NUM: Value::Null,
            ALPHA_SERVING_CERT_GENERATION_ERROR_NUM: Value::Null,
        }}});
        self.patch_service(svc, &patch).await?;
        self.signed.record(key, seen, signer.to_owned());
        self.signed.forget_deleted(self.services.len(), || {
            |k: &ObjectRef<Service>| self.services.get(k).is_some()
        });
        Ok(())
    }

    /// The error annotations (count + 1) and a Warning Event; nothing once the count is at the
    /// maximum.
    async fn record_error(&self, svc: &Service, error: &Error) -> Result<(), Error> {
        let message = bounded(&error.to_string());
        let Some(annotations) = rules::error_annotations(error_num(svc), &message) else {
            return Ok(());
        };
        let patch = json!({ "metadata": { "annotations": annotations } });
        self.patch_service(svc, &patch).await?;
        // The signer recorded earlier no longer describes the Secret.
        self.signed.forget(&ObjectRef::from_obj(svc));
        self.events
            .warning(svc, "ServingCertGenerationFailed", "Issue", message)
            .await;
        Ok(())
    }

    async fn patch_service(&self, svc: &Service, patch: &Value) -> Result<Service, Error> {
        let ns = svc
            .namespace()
            .ok_or_else(|| Error::NoNamespace(format!("Service {}", svc.name_any())))?;
        let services: Api<Service> = Api::namespaced(self.client.clone(), &ns);
        let pp = PatchParams {
            field_manager: Some(MANAGER.to_owned()),
            ..PatchParams::default()
        };
        Ok(services
            .patch(&svc.name_any(), &pp, &Patch::Merge(patch))
            .await?)
    }
}

/// Messages go into annotations (256 KiB in total per object) and Event notes (1 KiB): a huge
/// requested name must not make recording the error fail.
fn bounded(message: &str) -> String {
    const MAX: usize = 1024;
    if message.len() <= MAX {
        return message.to_owned();
    }
    let mut end = MAX - 3;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &message[..end])
}

fn expiry_of(secret: &Secret) -> Option<OffsetDateTime> {
    let value = secret.annotations().get(EXPIRY)?;
    OffsetDateTime::parse(value, &Rfc3339).ok()
}

fn describe(why: rules::Why) -> &'static str {
    use crate::pki::Reason;
    match why {
        rules::Why::MissingOwnerRef => "the ownerReference to the Service was missing",
        rules::Why::MissingExpiry => "the expiry annotation was missing",
        rules::Why::UnparseableExpiry => "the expiry annotation was not RFC 3339",
        rules::Why::Cert(Reason::Unparseable) => "tls.crt or tls.key was missing or unparseable",
        rules::Why::Cert(Reason::WrongIssuer) => "it was issued by another CA",
        rules::Why::Cert(Reason::SanMismatch) => "its DNS names no longer match the Service",
        rules::Why::Cert(Reason::Expiring) => "it was about to expire",
    }
}
