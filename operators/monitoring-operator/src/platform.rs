//! The platform's monitoring content the stack ships: the talk's alert (slide 37) and, for each
//! of Operon's operators, the ServiceMonitor and alerting rules its own generator writes to
//! `config/<operator>/prometheus/`. Those generated files are compiled in, so they can't drift
//! from what the operators' `manifests` commands produce (the lint checks them).
//!
//! Everything is placed in the stack's namespace, where Prometheus selects monitors and rules; a
//! monitor keeps scraping its operator's namespace through `namespaceSelector`.

use serde_json::{Value, json};

use crate::resources::{PrometheusRule, ServiceMonitor};

/// The talk's PrometheusRule (slide 37), verbatim.
pub const SRE_NODE_UNSCHEDULABLE: &str = include_str!("../samples/sre-node-unschedulable.yaml");

/// `(operator, monitor.yaml, rules.yaml)` as generated.
const OPERATORS: [(&str, &str, &str); 3] = [
    (
        "pod-operator",
        include_str!("../../../config/pod-operator/prometheus/monitor.yaml"),
        include_str!("../../../config/pod-operator/prometheus/rules.yaml"),
    ),
    (
        "service-ca-operator",
        include_str!("../../../config/service-ca-operator/prometheus/monitor.yaml"),
        include_str!("../../../config/service-ca-operator/prometheus/rules.yaml"),
    ),
    (
        "credentials-operator",
        include_str!("../../../config/credentials-operator/prometheus/monitor.yaml"),
        include_str!("../../../config/credentials-operator/prometheus/rules.yaml"),
    ),
];

fn parse(what: &str, text: &str) -> Result<Value, serde_json::Error> {
    serde_saphyr::from_str(text).map_err(|e| serde::de::Error::custom(format!("{what}: {e}")))
}

/// Keeps name, labels and spec; moves the object to `ns`.
fn moved(doc: &Value, ns: &str) -> Value {
    json!({
        "metadata": {
            "name": doc["metadata"]["name"],
            "namespace": ns,
            "labels": doc["metadata"].get("labels").cloned().unwrap_or_else(|| json!({})),
        },
        "spec": doc["spec"],
    })
}

/// The operators' ServiceMonitors, scraping each operator's namespace from `ns`.
pub fn operator_monitors(ns: &str) -> Result<Vec<ServiceMonitor>, serde_json::Error> {
    let mut monitors = Vec::new();
    for (operator, monitor, _) in OPERATORS {
        let doc = parse(&format!("{operator}'s monitor.yaml"), monitor)?;
        let target = doc["metadata"]["namespace"].clone();
        let mut value = moved(&doc, ns);
        value["spec"]["namespaceSelector"] = json!({ "matchNames": [target] });
        monitors.push(serde_json::from_value(value)?);
    }
    Ok(monitors)
}

/// The talk's rule and the operators' alerting rules, in `ns`.
pub fn rules(ns: &str) -> Result<Vec<PrometheusRule>, serde_json::Error> {
    let talk = parse("the talk's rule", SRE_NODE_UNSCHEDULABLE)?;
    let mut rules = vec![serde_json::from_value(moved(&talk, ns))?];
    for (operator, _, text) in OPERATORS {
        let doc = parse(&format!("{operator}'s rules.yaml"), text)?;
        rules.push(serde_json::from_value(moved(&doc, ns))?);
    }
    Ok(rules)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_talks_rule_is_verbatim() -> Result<(), serde_json::Error> {
        let rules = rules("openshift-monitoring")?;
        let talk = &rules[0];
        assert_eq!(
            talk.metadata.name.as_deref(),
            Some("sre-node-unschedulable")
        );
        let rule = &talk.spec["groups"][0]["rules"][0];
        assert_eq!(rule["alert"], "KubeNodeUnschedulableSRE");
        assert_eq!(rule["expr"], "kube_node_spec_unschedulable > 0");
        assert_eq!(rule["for"], "1h");
        let labels = talk.metadata.labels.clone().unwrap_or_default();
        assert_eq!(labels.get("role").map(String::as_str), Some("alert-rules"));
        Ok(())
    }

    #[test]
    fn operator_monitors_scrape_their_namespace_with_a_token() -> Result<(), serde_json::Error> {
        let monitors = operator_monitors("openshift-monitoring")?;
        assert_eq!(monitors.len(), 3);
        for m in &monitors {
            assert_eq!(
                m.metadata.namespace.as_deref(),
                Some("openshift-monitoring")
            );
            let target = m.spec["namespaceSelector"]["matchNames"][0]
                .as_str()
                .unwrap_or_default();
            assert!(target.ends_with("-operator-system"), "{target}");
            assert!(
                m.spec["endpoints"][0]["bearerTokenFile"].is_string(),
                "{:?}",
                m.spec
            );
        }
        Ok(())
    }
}
