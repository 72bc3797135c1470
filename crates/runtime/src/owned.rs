//! The objects an operator creates for a resource it reconciles ("children"), kept equal to
//! what the reconciler says should exist.
//!
//! [`Children::reconcile`] takes the desired children of one owner and:
//! - creates the missing ones with the owner as their controller (so the garbage collector
//!   removes them with it, and their changes wake the owner);
//! - server-side applies the ones whose desired content changed since the last apply (a hash
//!   of it is kept in the [`APPLIED_HASH`] annotation, so an unchanged child costs no request);
//! - deletes the children it controls that are no longer desired (with a UID precondition);
//! - never touches an object of the same name that it does not control: it reports a conflict;
//! - with [`Children::restoring_edits`], also re-applies a child whose live content no longer
//!   holds every field of the desired one (someone edited or removed what the owner set).
//!
//! It reads from a cache of the child kind: [`Children::new`] returns the watch for
//! [`Controller::owns`](crate::controller::Controller::owns), whose workers wait for that
//! cache before they reconcile.

use std::collections::BTreeSet;
use std::fmt::Debug;

use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, PostParams, Preconditions,
};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::controller::{self, Reflected};
use crate::manager::Manager;

/// Annotation holding a hash of the child as last applied.
pub const APPLIED_HASH: &str = "operon.dev/applied-hash";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0} has no UID: it can't own anything yet")]
    NoUid(String),
    #[error("{kind} without a name: set metadata.name of every desired object")]
    NoName { kind: String },
    #[error("{kind} {name}: {source}")]
    Api {
        kind: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("serializing {kind} {name}: {source}")]
    Serialize {
        kind: String,
        name: String,
        #[source]
        source: serde_json::Error,
    },
}

/// What [`Children::reconcile`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Children created or updated (`Kind namespace/name`).
    pub applied: Vec<String>,
    /// Children already as desired.
    pub unchanged: usize,
    /// Children deleted because they are no longer desired.
    pub pruned: Vec<String>,
    /// Desired children whose name is taken by an object this owner does not control.
    pub conflicts: Vec<String>,
}

impl Outcome {
    /// Whether the owner's children are all as desired.
    pub fn is_complete(&self) -> bool {
        self.conflicts.is_empty()
    }

    /// Adds `other` (the outcome for another kind of children) to this one.
    pub fn merge(&mut self, other: Outcome) {
        self.applied.extend(other.applied);
        self.unchanged += other.unchanged;
        self.pruned.extend(other.pruned);
        self.conflicts.extend(other.conflicts);
    }
}

/// The children of kind `K` of every owner of one controller.
pub struct Children<K: Resource<DynamicType = ()> + Clone + 'static> {
    client: Client,
    store: Store<K>,
    manager: String,
    restore_edits: bool,
}

/// FNV-1a: stable across builds and Rust versions (the hash is stored in the cluster). Public
/// for operators that keep hashes of objects they manage outside [`Children`] (e.g. CRDs).
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn key(namespace: Option<&str>, name: &str) -> String {
    match namespace {
        Some(ns) => format!("{ns}/{name}"),
        None => name.to_string(),
    }
}

impl<K> Children<K>
where
    K: Resource<DynamicType = ()>
        + Clone
        + Debug
        + Serialize
        + DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    /// A cache of every `K` in the cluster (the Manager's: one watch for every controller
    /// that owns `K`s), and its changes to give to
    /// [`Controller::owns`](crate::controller::Controller::owns). Applies are made as the
    /// Manager's field manager.
    pub fn new(manager: &mut Manager) -> (Self, Reflected<K>) {
        let api = Api::<K>::all(manager.client());
        Self::watching(manager, api, watcher::Config::default())
    }

    /// Like [`new`](Self::new), with the cache limited to what `api` (e.g. one namespace) and
    /// `config` (e.g. a label the children carry) list. A child outside it is still never
    /// taken over: creating it meets the existing object, which is then read and reported.
    pub fn watching(
        manager: &mut Manager,
        api: Api<K>,
        config: watcher::Config,
    ) -> (Self, Reflected<K>) {
        let client = manager.client();
        let reflected = manager.reflect(api, config, controller::trim_managed_fields);
        let children = Children {
            client,
            store: reflected.store.clone(),
            manager: manager.name().to_owned(),
            restore_edits: false,
        };
        (children, reflected)
    }

    /// Children whose live content lost a desired field or value (an edit by someone else) are
    /// applied again, not only those whose desired content changed. Costs one comparison per
    /// child per reconcile; fields the owner does not set are left as they are.
    pub fn restoring_edits(mut self) -> Self {
        self.restore_edits = true;
        self
    }

    /// The cache.
    pub fn store(&self) -> &Store<K> {
        &self.store
    }

    /// A dynamic API: typed `Api::namespaced` needs the scope known at compile time, and `K`
    /// may be namespaced or cluster-scoped.
    fn api(&self, namespace: Option<&str>) -> Api<DynamicObject> {
        let resource = ApiResource::erase::<K>(&());
        match namespace {
            Some(ns) => Api::namespaced_with(self.client.clone(), ns, &resource),
            None => Api::all_with(self.client.clone(), &resource),
        }
    }

    /// The children in the cache that `uid` controls.
    pub fn of(&self, uid: &str) -> Vec<std::sync::Arc<K>> {
        self.store
            .state()
            .into_iter()
            .filter(|c| controller_uid(c.as_ref()) == Some(uid))
            .collect()
    }

    /// Makes `owner`'s children of kind `K` exactly `desired`: see the module docs. A desired
    /// child without a namespace gets the owner's.
    pub async fn reconcile<P>(&self, owner: &P, desired: Vec<K>) -> Result<Outcome, Error>
    where
        P: Resource<DynamicType = ()>,
    {
        let kind = K::kind(&()).to_string();
        let owner_ref = owner
            .controller_owner_ref(&())
            .ok_or_else(|| Error::NoUid(owner.name_any()))?;
        let uid = owner_ref.uid.clone();
        let mut outcome = Outcome::default();
        let mut wanted = BTreeSet::new();
        for mut child in desired {
            let name = child
                .meta()
                .name
                .clone()
                .ok_or_else(|| Error::NoName { kind: kind.clone() })?;
            if child.meta().namespace.is_none() {
                child.meta_mut().namespace = owner.meta().namespace.clone();
            }
            let namespace = child.meta().namespace.clone();
            let id = key(namespace.as_deref(), &name);
            wanted.insert(id.clone());
            let refs = child
                .meta_mut()
                .owner_references
                .get_or_insert_with(Vec::new);
            refs.retain(|r| r.controller != Some(true));
            refs.push(owner_ref.clone());
            let serialize_error = |source| Error::Serialize {
                kind: kind.clone(),
                name: id.clone(),
                source,
            };
            let body = serde_json::to_vec(&child).map_err(serialize_error)?;
            let hash = format!("{:016x}", fnv1a(&body));
            child
                .meta_mut()
                .annotations
                .get_or_insert_with(Default::default)
                .insert(APPLIED_HASH.to_string(), hash.clone());
            let desired_value = if self.restore_edits {
                Some(serde_json::to_value(&child).map_err(serialize_error)?)
            } else {
                None
            };

            let mut cache_key = ObjectRef::<K>::new(&name);
            if let Some(ns) = &namespace {
                cache_key = cache_key.within(ns);
            }
            let api = self.api(namespace.as_deref());
            let child: DynamicObject = serde_json::to_value(&child)
                .and_then(serde_json::from_value)
                .map_err(|source| Error::Serialize {
                    kind: kind.clone(),
                    name: id.clone(),
                    source,
                })?;
            let api_error = |source| Error::Api {
                kind: kind.clone(),
                name: id.clone(),
                source,
            };
            let existing = self.store.get(&cache_key);
            let create = match existing.as_deref() {
                Some(current) if controller_uid(current) != Some(uid.as_str()) => {
                    outcome.conflicts.push(format!("{kind} {id}"));
                    continue;
                }
                Some(current)
                    if current.annotations().get(APPLIED_HASH) == Some(&hash)
                        && desired_value.as_ref().is_none_or(|desired| {
                            serde_json::to_value(current).is_ok_and(|live| contains(&live, desired))
                        }) =>
                {
                    outcome.unchanged += 1;
                    continue;
                }
                Some(_) => false,
                None => true,
            };
            if create {
                // Create, not apply: apply would take over an object of that name the cache
                // has not seen yet, whoever controls it.
                match api.create(&PostParams::default(), &child).await {
                    Ok(_) => {
                        outcome.applied.push(format!("{kind} {id}"));
                        continue;
                    }
                    Err(kube::Error::Api(s)) if s.code == 409 => {
                        let current = api.get(&name).await.map_err(api_error)?;
                        if controller_uid(&current) != Some(uid.as_str()) {
                            outcome.conflicts.push(format!("{kind} {id}"));
                            continue;
                        }
                    }
                    Err(e) => return Err(api_error(e)),
                }
            }
            api.patch(
                &name,
                &PatchParams::apply(&self.manager).force(),
                &Patch::Apply(&child),
            )
            .await
            .map_err(api_error)?;
            outcome.applied.push(format!("{kind} {id}"));
        }
        for child in self.of(&uid) {
            let namespace = child.namespace();
            let name = child.name_any();
            let id = key(namespace.as_deref(), &name);
            if wanted.contains(&id) {
                continue;
            }
            let params = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: child.uid(),
                    resource_version: None,
                }),
                ..DeleteParams::background()
            };
            match self.api(namespace.as_deref()).delete(&name, &params).await {
                Ok(_) => outcome.pruned.push(format!("{kind} {id}")),
                // Gone already, or replaced by another object of that name: not ours to delete.
                Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
                Err(source) => {
                    return Err(Error::Api {
                        kind: kind.clone(),
                        name: id,
                        source,
                    });
                }
            }
        }
        Ok(outcome)
    }
}

/// Whether `live` holds every field of `desired` with the same value: objects key by key,
/// arrays element by element (same length), anything else equal. Fields only `live` has (set by
/// the API server or other controllers) don't matter.
pub fn contains(live: &serde_json::Value, desired: &serde_json::Value) -> bool {
    use serde_json::Value;
    match (live, desired) {
        (Value::Object(live), Value::Object(desired)) => desired
            .iter()
            .all(|(k, d)| live.get(k).is_some_and(|l| contains(l, d))),
        (Value::Array(live), Value::Array(desired)) => {
            live.len() == desired.len() && live.iter().zip(desired).all(|(l, d)| contains(l, d))
        }
        (Value::Number(l), Value::Number(d)) => l.as_f64() == d.as_f64(),
        (live, desired) => live == desired,
    }
}

/// UID of `obj`'s controller (the owner reference with `controller: true`).
pub fn controller_uid<K: Resource>(obj: &K) -> Option<&str> {
    obj.meta()
        .owner_references
        .as_deref()?
        .iter()
        .find(|r| r.controller == Some(true))
        .map(|r| r.uid.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_content_holds_the_desired_fields() {
        use serde_json::json;
        let desired = json!({"spec": {"replicas": 2, "ports": [{"port": 80}], "x": "a"}});
        let defaulted = json!({"spec": {"replicas": 2.0, "ports": [{"port": 80, "protocol": "TCP"}],
                                        "x": "a", "y": true}, "status": {}});
        assert!(contains(&defaulted, &desired));
        let edited = json!({"spec": {"replicas": 3, "ports": [{"port": 80}], "x": "a"}});
        assert!(!contains(&edited, &desired));
        let removed = json!({"spec": {"replicas": 2, "ports": [{"port": 80}]}});
        assert!(!contains(&removed, &desired));
        let added =
            json!({"spec": {"replicas": 2, "ports": [{"port": 80}, {"port": 81}], "x": "a"}});
        assert!(!contains(&added, &desired));
    }

    #[test]
    fn hash_is_fnv1a() {
        // Reference values of 64-bit FNV-1a.
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn keys_name_namespaced_and_cluster_objects() {
        assert_eq!(key(Some("ns"), "a"), "ns/a");
        assert_eq!(key(None, "a"), "a");
    }
}
