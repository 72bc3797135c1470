//! What tests read from the Secrets an operator writes.

use k8s_openapi::api::core::v1::Secret;

use crate::Error;

/// The text under `key` of a Secret.
pub fn secret_text(secret: &Secret, key: &str) -> Result<String, Error> {
    let name = secret.metadata.name.as_deref().unwrap_or_default();
    let bytes = secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .ok_or_else(|| Error::Secret(format!("Secret {name} has no {key}")))?;
    String::from_utf8(bytes.0.clone())
        .map_err(|e| Error::Secret(format!("Secret {name} {key} is not text: {e}")))
}
