//! config/ is what `operon manifests` writes from the current code: this fails when the API
//! types, the controllers' RBAC or the samples changed without regenerating it.

use std::path::Path;

use operon_runtime::generate::Writer;
use {{crate}}::deploy;

#[test]
fn config_is_up_to_date() -> anyhow::Result<()> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let mut check = Writer::check(deploy::GENERATED, &dir);
    deploy::config(&mut check, &dir)?;
    let stale = check.differences();
    assert!(
        stale.is_empty(),
        "config/ is out of date, run `operon manifests`: {}",
        stale.join(", ")
    );
    Ok(())
}
