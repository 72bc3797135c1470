//! The Prometheus Operator's kinds (`monitoring.coreos.com/v1`) as monitoring-operator writes
//! them: metadata and a free-form spec. Their schemas are the Prometheus Operator's own CRDs;
//! what the stack sets is built in [`stack`](crate::stack) and checked by the API server.

use std::borrow::Cow;

use k8s_openapi::NamespaceResourceScope;
use kube::api::ObjectMeta;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The Prometheus Operator's API group.
pub const GROUP: &str = "monitoring.coreos.com";
const API_VERSION: &str = "monitoring.coreos.com/v1";

macro_rules! monitoring_kind {
    ($(#[$doc:meta])* $name:ident, $plural:literal) => {
        $(#[$doc])*
        ///
        /// Read, `apiVersion` and `kind` are not needed (lists may leave them out); written,
        /// they are always this type's.
        #[derive(Clone, Debug, Default, PartialEq, Deserialize)]
        pub struct $name {
            pub metadata: ObjectMeta,
            #[serde(default)]
            pub spec: Value,
            #[serde(default)]
            pub status: Option<Value>,
        }

        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                use serde::ser::SerializeMap;
                let mut map = s.serialize_map(None)?;
                map.serialize_entry("apiVersion", API_VERSION)?;
                map.serialize_entry("kind", stringify!($name))?;
                map.serialize_entry("metadata", &self.metadata)?;
                map.serialize_entry("spec", &self.spec)?;
                if let Some(status) = &self.status {
                    map.serialize_entry("status", status)?;
                }
                map.end()
            }
        }

        impl kube::Resource for $name {
            type DynamicType = ();
            type Scope = NamespaceResourceScope;
            fn kind(_: &()) -> Cow<'_, str> {
                stringify!($name).into()
            }
            fn group(_: &()) -> Cow<'_, str> {
                GROUP.into()
            }
            fn version(_: &()) -> Cow<'_, str> {
                "v1".into()
            }
            fn plural(_: &()) -> Cow<'_, str> {
                $plural.into()
            }
            fn meta(&self) -> &ObjectMeta {
                &self.metadata
            }
            fn meta_mut(&mut self) -> &mut ObjectMeta {
                &mut self.metadata
            }
        }

        impl $name {
            /// `name` in `namespace` with `spec`.
            pub fn new(name: &str, namespace: &str, spec: Value) -> Self {
                $name {
                    metadata: ObjectMeta {
                        name: Some(name.into()),
                        namespace: Some(namespace.into()),
                        ..Default::default()
                    },
                    spec,
                    status: None,
                }
            }
        }
    };
}

monitoring_kind!(
    /// A Prometheus server the Prometheus Operator runs as a StatefulSet.
    Prometheus,
    "prometheuses"
);
monitoring_kind!(
    /// An Alertmanager cluster the Prometheus Operator runs as a StatefulSet.
    Alertmanager,
    "alertmanagers"
);
monitoring_kind!(
    /// Which Services' endpoints Prometheus scrapes, and how.
    ServiceMonitor,
    "servicemonitors"
);
monitoring_kind!(
    /// Recording and alerting rules Prometheus loads.
    PrometheusRule,
    "prometheusrules"
);

#[cfg(test)]
mod tests {
    use super::*;
    use kube::Resource;

    #[test]
    fn kinds_read_lists_without_type_fields_and_write_them() -> Result<(), serde_json::Error> {
        let listed: ServiceMonitor = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "a", "namespace": "n"}, "spec": {"endpoints": []}
        }))?;
        let written = serde_json::to_value(&listed)?;
        assert_eq!(written["apiVersion"], "monitoring.coreos.com/v1");
        assert_eq!(written["kind"], "ServiceMonitor");
        assert!(written.get("status").is_none());
        assert_eq!(Prometheus::plural(&()), "prometheuses");
        assert_eq!(PrometheusRule::kind(&()), "PrometheusRule");
        Ok(())
    }
}
