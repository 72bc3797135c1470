//! config/ is what `operon manifests` writes from the current code: this fails when the API
//! types, the controllers' RBAC or the samples changed without regenerating it.

use std::path::Path;

use {{crate}}::deploy;

#[tokio::test]
async fn config_is_up_to_date() -> anyhow::Result<()> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let check = operon_manifests::Command::Manifests { dir, check: true };
    check
        .run(&deploy::declaration()?)
        .await
        .map_err(|e| anyhow::anyhow!("config/ is out of date, run `operon manifests`: {e}"))
}
