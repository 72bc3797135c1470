//! Prometheus alerting rules for an operator, on controller-runtime's metric names (see
//! `operon_runtime::metrics`), so that they apply to Go operators' dashboards and to ours alike.
//!
//! [`rule_groups`] returns the `groups` array of a Prometheus rules file (or of a
//! `monitoring.coreos.com/v1` `PrometheusRule`'s `spec`) for an operator deployed as the
//! Deployment `<operator>` in `<namespace>` and scraped with the job label `<operator>-metrics`
//! (a ServiceMonitor's default job label is the Service's name). Every alert is named after the
//! operator in CamelCase (`pod-operator` → `PodOperator…`):
//!
//! | alert | fires when | for | severity |
//! | --- | --- | --- | --- |
//! | `<Operator>ReconcileErrors` | a controller's reconciles fail (`controller_runtime_reconcile_errors_total` grows) | 15m | warning |
//! | `<Operator>NoLeader` | no replica holds the leader Lease (`leader_election_master_status` below 1, or absent) | 5m | critical |
//! | `<Operator>QueueBacklog` | more than 100 objects wait in a work queue (`workqueue_depth`) | 15m | warning |
//! | `<Operator>Down` | no target of the job is up (`up == 1` absent) | 5m | critical |
//!
//! Every alert carries `severity`, `namespace` and a `summary` and `description` annotation.
//! An operator adds alerts on its own metrics with [`Alert`] (in
//! `OperatorManifests::alerts`); they join the same group, named and labelled the same way.

use serde_json::{Value, json};

/// Work queue depth above which [`rule_groups`]'s `QueueBacklog` alert fires.
pub const QUEUE_BACKLOG_THRESHOLD: u32 = 100;

/// `pod-operator` → `PodOperator`: words split on `-`, `_` and `.`, each capitalised.
pub fn camel_case(name: &str) -> String {
    name.split(['-', '_', '.'])
        .filter(|w| !w.is_empty())
        .map(|w| {
            let mut chars = w.chars();
            chars.next().map_or_else(String::new, |first| {
                first.to_uppercase().chain(chars).collect::<String>()
            })
        })
        .collect()
}

/// The series selector of an operator's own metrics: `{job="<operator>-metrics",namespace="…"}`,
/// for the expressions of [`Alert`]s.
pub fn selector(operator: &str, namespace: &str) -> String {
    let job = format!("{operator}-metrics");
    // Label values in PromQL string literals: JSON escaping (`"` and `\`) is PromQL's too.
    format!(
        "{{job={},namespace={}}}",
        Value::from(job.as_str()),
        Value::from(namespace)
    )
}

/// The `groups` array of Prometheus rules for `operator`, deployed as the Deployment `operator` in
/// `namespace` and scraped with `job="<operator>-metrics"`: the alerts above, then `extra`.
pub fn rule_groups(operator: &str, namespace: &str, extra: &[Alert]) -> Value {
    let name = camel_case(operator);
    let job = format!("{operator}-metrics");
    let selector = selector(operator, namespace);
    let deployment = format!("Deployment {namespace}/{operator}");
    let rule = |alert: &Alert| {
        json!({
            "alert": format!("{name}{}", alert.name),
            "expr": alert.expr,
            "for": alert.for_,
            "labels": { "severity": alert.severity, "namespace": namespace },
            "annotations": { "summary": alert.summary, "description": alert.description },
        })
    };
    let common = [
        Alert {
            name: "ReconcileErrors".into(),
            expr: format!(
                "sum by (controller) \
                     (rate(controller_runtime_reconcile_errors_total{selector}[5m])) > 0"
            ),
            for_: "15m".into(),
            severity: "warning".into(),
            summary: format!(
                "{operator}: reconciles of controller {{{{ $labels.controller }}}} fail"
            ),
            description: format!(
                "Controller {{{{ $labels.controller }}}} of {deployment} has been returning \
                     reconcile errors for 15 minutes. Its logs and the Events of the objects it \
                     reconciles tell why."
            ),
        },
        Alert {
            name: "NoLeader".into(),
            expr: format!(
                "max(leader_election_master_status{selector}) < 1 \
                     or absent(leader_election_master_status{selector})"
            ),
            for_: "5m".into(),
            severity: "critical".into(),
            summary: format!("{operator}: no replica is the leader"),
            description: format!(
                "No replica of {deployment} has held the leader election Lease for 5 \
                     minutes, so nothing reconciles. Check the replicas' logs and the Lease in \
                     {namespace}."
            ),
        },
        Alert {
            name: "QueueBacklog".into(),
            expr: format!("sum by (name) (workqueue_depth{selector}) > {QUEUE_BACKLOG_THRESHOLD}"),
            for_: "15m".into(),
            severity: "warning".into(),
            summary: format!("{operator}: work queue {{{{ $labels.name }}}} is backed up"),
            description: format!(
                "More than {QUEUE_BACKLOG_THRESHOLD} objects have been waiting in work queue \
                     {{{{ $labels.name }}}} of {deployment} for 15 minutes: reconciles are slower \
                     than changes arrive (raise --concurrency, or look for slow API calls)."
            ),
        },
        Alert {
            name: "Down".into(),
            expr: format!("absent(up{selector} == 1)"),
            for_: "5m".into(),
            severity: "critical".into(),
            summary: format!("{operator} is down"),
            description: format!(
                "Prometheus has not scraped any replica of {deployment} (job {job}) for 5 \
                     minutes: the operator is not running or its metrics endpoint is unreachable."
            ),
        },
    ];
    let rules: Vec<Value> = common.iter().chain(extra).map(rule).collect();
    json!([{ "name": format!("{operator}.rules"), "rules": rules }])
}

/// One alerting rule of [`rule_groups`], before the operator's name and labels are added.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alert {
    /// Appended to the operator's CamelCase name (`CAExpiresSoon` → `ServiceCaOperatorCAExpiresSoon`).
    pub name: String,
    /// PromQL; use [`selector`] for the operator's own series.
    pub expr: String,
    /// How long `expr` must hold before the alert fires (`15m`).
    pub for_: String,
    /// `warning` or `critical`.
    pub severity: String,
    pub summary: String,
    pub description: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn camel_case_names() {
        assert_eq!(camel_case("pod-operator"), "PodOperator");
        assert_eq!(camel_case("service_ca.operator"), "ServiceCaOperator");
        assert_eq!(camel_case("x--y"), "XY");
    }

    #[test]
    fn four_alerts_on_the_job() {
        let groups = rule_groups("pod-operator", "pod-operator-system", &[]);
        let rules = groups[0]["rules"].as_array().cloned().unwrap_or_default();
        let names: Vec<&str> = rules.iter().filter_map(|r| r["alert"].as_str()).collect();
        assert_eq!(
            names,
            [
                "PodOperatorReconcileErrors",
                "PodOperatorNoLeader",
                "PodOperatorQueueBacklog",
                "PodOperatorDown"
            ]
        );
        for r in &rules {
            let expr = r["expr"].as_str().unwrap_or_default();
            assert!(
                expr.contains(r#"{job="pod-operator-metrics",namespace="pod-operator-system"}"#),
                "{expr}"
            );
        }
    }
}
