//! The operator's custom resources, one module per kind (`operon create api` adds them).

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use operon_manifests::UserResource;

// operon:scaffold:api-modules (`operon create api` adds a line above)

/// Every CustomResourceDefinition of the operator.
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![
        // operon:scaffold:crds
    ]
}

/// The custom resources users create (they get aggregated view, edit and admin roles).
pub fn user_resources() -> Vec<UserResource> {
    vec![
        // operon:scaffold:user-resources
    ]
}
