//! Pod Security admission's cluster-wide defaults, which every control plane starts with unless
//! [`Builder::pod_security`](crate::Builder::pod_security) turns them off.
//!
//! kube-apiserver always runs the `PodSecurity` admission plugin, but its built-in default is
//! `privileged` for every mode: a namespace without labels admits privileged Pods, host
//! namespaces and `hostPath: /` — root on the host once a real node runs them (the node shares
//! the host's filesystem). The control plane therefore hands kube-apiserver an
//! `AdmissionConfiguration` (`--admission-control-config-file`) whose defaults are
//! [`DEFAULT_ENFORCE`] (`baseline`) enforced and [`DEFAULT_WARN`] (`restricted`) warned about and
//! audited, the defaults of Kubernetes' own "Pod Security Standards at the cluster level"
//! tutorial. Nothing is exempt — no user, no RuntimeClass, no namespace, `kube-system`
//! included: the only system Pod there, CoreDNS, meets `baseline` (and all of `restricted` but
//! the seccomp profile). A namespace that needs more says so with its own labels, as
//! monitoring-operator's `openshift-monitoring` does (`privileged`, for node_exporter's host
//! network, PIDs and `/sys`, `/proc`, `/` mounts); the operators' own namespaces ask for
//! `restricted`.

use serde_json::{Value, json};

/// The label that sets the level a namespace enforces (`privileged`, `baseline`,
/// `restricted`); `…/warn` and `…/audit` set the other two modes.
pub const ENFORCE_LABEL: &str = "pod-security.kubernetes.io/enforce";
/// What a namespace without an enforce label enforces.
pub const DEFAULT_ENFORCE: &str = "baseline";
/// What a namespace without warn and audit labels warns about (a `Warning` header on the
/// create) and records in the audit log.
pub const DEFAULT_WARN: &str = "restricted";
/// Name of the file in the run directory that kube-apiserver reads.
pub const ADMISSION_CONFIG_FILE: &str = "admission-control.json";

/// The `AdmissionConfiguration` kube-apiserver gets: the `PodSecurity` plugin with the defaults
/// above, for the latest version of the standards, and no exemptions.
pub fn admission_configuration() -> Value {
    json!({
        "apiVersion": "apiserver.config.k8s.io/v1",
        "kind": "AdmissionConfiguration",
        "plugins": [{
            "name": "PodSecurity",
            "configuration": {
                "apiVersion": "pod-security.admission.config.k8s.io/v1",
                "kind": "PodSecurityConfiguration",
                "defaults": {
                    "enforce": DEFAULT_ENFORCE,
                    "enforce-version": "latest",
                    "warn": DEFAULT_WARN,
                    "warn-version": "latest",
                    "audit": DEFAULT_WARN,
                    "audit-version": "latest",
                },
                "exemptions": { "usernames": [], "runtimeClasses": [], "namespaces": [] },
            },
        }],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_enforce_baseline_and_warn_restricted_without_exemptions() {
        let config = admission_configuration();
        let plugin = &config["plugins"][0];
        assert_eq!(plugin["name"], "PodSecurity");
        let defaults = &plugin["configuration"]["defaults"];
        assert_eq!(defaults["enforce"], "baseline");
        assert_eq!(defaults["warn"], "restricted");
        assert_eq!(defaults["audit"], "restricted");
        for mode in ["enforce", "warn", "audit"] {
            assert_eq!(defaults[format!("{mode}-version")], "latest");
        }
        for exempt in ["usernames", "runtimeClasses", "namespaces"] {
            assert_eq!(plugin["configuration"]["exemptions"][exempt], json!([]));
        }
    }
}
