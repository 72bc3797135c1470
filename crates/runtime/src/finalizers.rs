//! Finalizers: add one before acting outside the cluster, remove it once cleanup is done.
//!
//! Both are JSON patches guarded by a `test` operation, so a concurrent change to the list (or,
//! for removal, to the object) makes the patch fail with 422 instead of losing someone else's
//! finalizer; callers retry on the next reconcile. For the whole apply/cleanup flow around a
//! reconcile, kube-runtime's `finalizer` function builds on the same idea.

use kube::api::{Api, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde_json::json;

/// Whether `obj` carries `finalizer`.
pub fn has<K: ResourceExt>(obj: &K, finalizer: &str) -> bool {
    obj.finalizers().iter().any(|f| f == finalizer)
}

/// Adds `finalizer` unless present. Returns the updated object, or `None` if nothing changed.
pub async fn add<K>(api: &Api<K>, obj: &K, finalizer: &str) -> Result<Option<K>, kube::Error>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    if has(obj, finalizer) {
        return Ok(None);
    }
    let patch = if obj.finalizers().is_empty() {
        // `test` that the list is absent: a finalizer added meanwhile fails the patch.
        json!([
            { "op": "test", "path": "/metadata/resourceVersion", "value": obj.resource_version() },
            { "op": "add", "path": "/metadata/finalizers", "value": [finalizer] },
        ])
    } else {
        json!([
            { "op": "test", "path": "/metadata/finalizers", "value": obj.finalizers() },
            { "op": "add", "path": "/metadata/finalizers/-", "value": finalizer },
        ])
    };
    let patch: json_patch::Patch =
        serde_json::from_value(patch).map_err(kube::Error::SerdeError)?;
    api.patch(
        &obj.name_any(),
        &PatchParams::default(),
        &Patch::Json::<()>(patch),
    )
    .await
    .map(Some)
}

/// Removes `finalizer` if present. Returns the updated object, or `None` if nothing changed or
/// the object is gone (removing the last finalizer of a deleted object deletes it).
pub async fn remove<K>(api: &Api<K>, obj: &K, finalizer: &str) -> Result<Option<K>, kube::Error>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    let Some(index) = obj.finalizers().iter().position(|f| f == finalizer) else {
        return Ok(None);
    };
    let path = format!("/metadata/finalizers/{index}");
    let patch: json_patch::Patch = serde_json::from_value(json!([
        { "op": "test", "path": path, "value": finalizer },
        { "op": "remove", "path": path },
    ]))
    .map_err(kube::Error::SerdeError)?;
    match api
        .patch(
            &obj.name_any(),
            &PatchParams::default(),
            &Patch::Json::<()>(patch),
        )
        .await
    {
        Ok(updated) => Ok(Some(updated)),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(None),
        Err(e) => Err(e),
    }
}
