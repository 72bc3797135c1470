//! The Prometheus Operator's CRDs, as its pinned release ships them (read from a directory:
//! `/crds` in the operator's image, the build cache's copy when run locally).
//!
//! They are created when missing and updated when their content changes, but never owned by
//! the `monitoring` ClusterOperator and never deleted: deleting a CRD deletes every object of
//! its kind, users' PrometheusRules included. A CRD of the same name that monitoring-operator
//! did not create (another Prometheus Operator's) is used as it is and reported.

use std::path::{Path, PathBuf};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};

use crate::stack::MANAGED_BY;

/// Annotation with a hash of the CRD as last written.
pub const HASH: &str = "monitoring.operon.dev/crd-hash";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading the Prometheus Operator's CRDs from {dir}: {source}")]
    Read {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}: not a CustomResourceDefinition: {message}")]
    Parse { file: PathBuf, message: String },
    #[error("no CRDs in {0}: the directory must hold monitoring.coreos.com_*.yaml")]
    Empty(PathBuf),
    #[error("CRD {name}: {source}")]
    Api {
        name: String,
        #[source]
        source: kube::Error,
    },
}

/// Reads every `*.yaml` of `dir` (sorted), each one CRD, labelled and hashed for [`ensure`].
pub fn load(dir: &Path) -> Result<Vec<CustomResourceDefinition>, Error> {
    let read = |source| Error::Read {
        dir: dir.to_path_buf(),
        source,
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(read)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    let mut crds = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).map_err(read)?;
        let mut crd: CustomResourceDefinition =
            serde_saphyr::from_str(&text).map_err(|e| Error::Parse {
                file: file.clone(),
                message: e.to_string(),
            })?;
        crd.metadata
            .labels
            .get_or_insert_with(Default::default)
            .insert(MANAGED_BY.0.into(), MANAGED_BY.1.into());
        let body = serde_json::to_vec(&crd).map_err(|e| Error::Parse {
            file: file.clone(),
            message: e.to_string(),
        })?;
        crd.metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert(
                HASH.into(),
                format!("{:016x}", operon_runtime::owned::fnv1a(&body)),
            );
        crds.push(crd);
    }
    if crds.is_empty() {
        return Err(Error::Empty(dir.to_path_buf()));
    }
    Ok(crds)
}

/// What [`ensure`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub written: Vec<String>,
    /// CRDs of these names exist and are not ours: used as they are.
    pub foreign: Vec<String>,
}

/// Makes each of `crds` exist as given (see the module docs). `current` looks one up in the
/// cache of CRDs carrying [`MANAGED_BY`].
pub async fn ensure(
    client: &Client,
    field_manager: &str,
    crds: &[CustomResourceDefinition],
    current: impl Fn(&str) -> Option<std::sync::Arc<CustomResourceDefinition>>,
) -> Result<Outcome, Error> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let mut outcome = Outcome::default();
    for crd in crds {
        let name = crd.name_any();
        let api_error = |source| Error::Api {
            name: name.clone(),
            source,
        };
        let hash = crd.annotations().get(HASH);
        match current(&name) {
            Some(live) if live.annotations().get(HASH) == hash => continue,
            Some(_) => {}
            None => match api.create(&PostParams::default(), crd).await {
                Ok(_) => {
                    outcome.written.push(name);
                    continue;
                }
                Err(kube::Error::Api(s)) if s.code == 409 => {
                    let live = api.get(&name).await.map_err(api_error)?;
                    if live.labels().get(MANAGED_BY.0).map(String::as_str) != Some(MANAGED_BY.1) {
                        outcome.foreign.push(name);
                        continue;
                    }
                    if live.annotations().get(HASH) == hash {
                        continue;
                    }
                }
                Err(e) => return Err(api_error(e)),
            },
        }
        api.patch(
            &name,
            &PatchParams::apply(field_manager).force(),
            &Patch::Apply(crd),
        )
        .await
        .map_err(api_error)?;
        outcome.written.push(name);
    }
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_without_crds_is_an_error() {
        let dir = std::env::temp_dir().join(format!("no-crds-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        assert!(matches!(load(&dir), Err(Error::Empty(_))));
        assert!(matches!(
            load(&dir.join("missing")),
            Err(Error::Read { .. })
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
