//! What the operator needs in a cluster, declared once: `operon manifests` derives config/
//! from it (CRDs, RBAC, Deployment, Service, NetworkPolicy, alerts) and `operon bundle` the
//! OLM bundle, both by running this binary's generation commands (operon-manifests).

use operon_manifests::olm::BundleInfo;
use operon_manifests::{ADMIN_PORT, Declaration, OperatorManifests};

use crate::{api, controller};

/// The image of the Deployment (override with `--image`, or with kustomize's `images:`).
pub const IMAGE: &str = concat!("localhost/{{name}}:v", env!("CARGO_PKG_VERSION"));

/// Namespace the operator runs in.
pub const NAMESPACE: &str = "{{name}}-system";

/// Sample resources: `(file in config/samples/, YAML)`.
pub const SAMPLES: &[(&str, &str)] = &[
    // operon:scaffold:samples
];

/// Everything the generation commands need.
pub fn declaration() -> anyhow::Result<Declaration> {
    Ok(Declaration {
        manifests: manifests(IMAGE)?,
        bundle: bundle_info()?,
        samples: SAMPLES
            .iter()
            .map(|(file, yaml)| (file.to_string(), yaml.to_string()))
            .collect(),
    })
}

/// The operator's deployment, running `image`.
pub fn manifests(image: &str) -> anyhow::Result<OperatorManifests> {
    Ok(OperatorManifests {
        name: "{{name}}".into(),
        namespace: NAMESPACE.into(),
        image: image.into(),
        crds: api::crds()
            .iter()
            .map(serde_json::to_value)
            .collect::<Result<_, _>>()?,
        rules: controller::rules(),
        namespace_rules: Vec::new(),
        admission: Vec::new(),
        user_resources: api::user_resources(),
        // A standby takes over at once when the leader goes (Lease leader election).
        replicas: 2,
        admin_port: ADMIN_PORT,
        alerts: Vec::new(),
        pod_security: "restricted",
    })
}

/// What the OLM bundle says about the operator.
pub fn bundle_info() -> anyhow::Result<BundleInfo> {
    Ok(BundleInfo {
        version: env!("CARGO_PKG_VERSION").into(),
        display_name: operon_manifests::olm::words("{{name}}"),
        description: env!("CARGO_PKG_DESCRIPTION").into(),
        samples: SAMPLES
            .iter()
            .map(|(_, yaml)| serde_saphyr::from_str(yaml))
            .collect::<Result<_, _>>()?,
        channel: "candidate".into(),
        min_kube_version: "1.29.0".into(),
        owned_resource_kinds: controller::owned_kinds()
            .into_iter()
            .map(|(kind, version)| (kind.into(), version.into()))
            .collect(),
        maturity: "alpha".into(),
        provider: "{{name}}".into(),
        keywords: vec!["operon".into()],
        links: Vec::new(),
    })
}
