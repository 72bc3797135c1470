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

/// The `groups` array of Prometheus rules for `operator`, deployed as the Deployment `operator` in
/// `namespace` and scraped with `job="<operator>-metrics"`.
pub fn rule_groups(operator: &str, namespace: &str) -> Value {
    let name = camel_case(operator);
    let job = format!("{operator}-metrics");
    // Label values in PromQL string literals: JSON escaping (`"` and `\`) is PromQL's too.
    let selector = format!(
        "{{job={},namespace={}}}",
        Value::from(job.as_str()),
        Value::from(namespace)
    );
    let deployment = format!("Deployment {namespace}/{operator}");
    let rule = |alert: Alert| {
        json!({
            "alert": format!("{name}{}", alert.name),
            "expr": alert.expr,
            "for": alert.for_,
            "labels": { "severity": alert.severity, "namespace": namespace },
            "annotations": { "summary": alert.summary, "description": alert.description },
        })
    };
    json!([{
        "name": format!("{operator}.rules"),
        "rules": [
            rule(Alert {
                name: "ReconcileErrors",
                expr: format!(
                    "sum by (controller) \
                     (rate(controller_runtime_reconcile_errors_total{selector}[5m])) > 0"
                ),
                for_: "15m",
                severity: "warning",
                summary: format!(
                    "{operator}: reconciles of controller {{{{ $labels.controller }}}} fail"
                ),
                description: format!(
                    "Controller {{{{ $labels.controller }}}} of {deployment} has been returning \
                     reconcile errors for 15 minutes. Its logs and the Events of the objects it \
                     reconciles tell why."
                ),
            }),
            rule(Alert {
                name: "NoLeader",
                expr: format!(
                    "max(leader_election_master_status{selector}) < 1 \
                     or absent(leader_election_master_status{selector})"
                ),
                for_: "5m",
                severity: "critical",
                summary: format!("{operator}: no replica is the leader"),
                description: format!(
                    "No replica of {deployment} has held the leader election Lease for 5 \
                     minutes, so nothing reconciles. Check the replicas' logs and the Lease in \
                     {namespace}."
                ),
            }),
            rule(Alert {
                name: "QueueBacklog",
                expr: format!(
                    "sum by (name) (workqueue_depth{selector}) > {QUEUE_BACKLOG_THRESHOLD}"
                ),
                for_: "15m",
                severity: "warning",
                summary: format!("{operator}: work queue {{{{ $labels.name }}}} is backed up"),
                description: format!(
                    "More than {QUEUE_BACKLOG_THRESHOLD} objects have been waiting in work queue \
                     {{{{ $labels.name }}}} of {deployment} for 15 minutes: reconciles are slower \
                     than changes arrive (raise --concurrency, or look for slow API calls)."
                ),
            }),
            rule(Alert {
                name: "Down",
                expr: format!("absent(up{selector} == 1)"),
                for_: "5m",
                severity: "critical",
                summary: format!("{operator} is down"),
                description: format!(
                    "Prometheus has not scraped any replica of {deployment} (job {job}) for 5 \
                     minutes: the operator is not running or its metrics endpoint is unreachable."
                ),
            }),
        ],
    }])
}

/// One alerting rule of [`rule_groups`], before the operator's name and labels are added.
struct Alert {
    /// Appended to the operator's CamelCase name.
    name: &'static str,
    expr: String,
    for_: &'static str,
    severity: &'static str,
    summary: String,
    description: String,
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
        let groups = rule_groups("pod-operator", "pod-operator-system");
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
