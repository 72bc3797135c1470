//! The alerting rules of `operon_manifests::alerts`, unit-tested by Prometheus's own `promtool test
//! rules`: each alert fires on the series that should fire it, and not on those that shouldn't.
//!
//! Needs `promtool` (Debian: `apt-get install prometheus`; `cargo xtask setup` installs
//! it). Without it the test fails: it never skips.

use std::path::Path;

use operon_envtest::promtool::{case, check_and_test, group};
use operon_manifests::alerts::rule_groups;
use serde_json::{Value, json};

const OPERATOR: &str = "pod-operator";
const NAMESPACE: &str = "pod-operator-system";
const JOB: &str = "pod-operator-metrics";

/// A series selector of the operator's job, with extra labels (`a="b",c="d"` form).
fn series(metric: &str, extra: &str) -> String {
    let sep = if extra.is_empty() { "" } else { "," };
    format!(r#"{metric}{{job="{JOB}",namespace="{NAMESPACE}"{sep}{extra}}}"#)
}

fn input(metric: &str, extra: &str, values: &str) -> Value {
    json!({ "series": series(metric, extra), "values": values })
}

fn reconcile_errors() -> (Value, Value) {
    (
        json!({ "severity": "warning", "namespace": NAMESPACE, "controller": "podrequest" }),
        json!({
            "summary": "pod-operator: reconciles of controller podrequest fail",
            "description": "Controller podrequest of Deployment pod-operator-system/pod-operator has \
                been returning reconcile errors for 15 minutes. Its logs and the Events of the \
                objects it reconciles tell why.",
        }),
    )
}

fn no_leader(absent: bool) -> (Value, Value) {
    let mut labels = json!({ "severity": "critical", "namespace": NAMESPACE });
    if absent {
        // absent(selector) keeps the selector's equality matchers as labels.
        labels["job"] = JOB.into();
    }
    (
        labels,
        json!({
            "summary": "pod-operator: no replica is the leader",
            "description": "No replica of Deployment pod-operator-system/pod-operator has held the \
                leader election Lease for 5 minutes, so nothing reconciles. Check the replicas' \
                logs and the Lease in pod-operator-system.",
        }),
    )
}

fn queue_backlog() -> (Value, Value) {
    (
        json!({ "severity": "warning", "namespace": NAMESPACE, "name": "podrequest" }),
        json!({
            "summary": "pod-operator: work queue podrequest is backed up",
            "description": "More than 100 objects have been waiting in work queue podrequest of \
                Deployment pod-operator-system/pod-operator for 15 minutes: reconciles are slower \
                than changes arrive (raise --concurrency, or look for slow API calls).",
        }),
    )
}

fn down() -> (Value, Value) {
    (
        json!({ "severity": "critical", "namespace": NAMESPACE }),
        json!({
            "summary": "pod-operator is down",
            "description": "Prometheus has not scraped any replica of Deployment \
                pod-operator-system/pod-operator (job pod-operator-metrics) for 5 minutes: the \
                operator is not running or its metrics endpoint is unreachable.",
        }),
    )
}

/// promtool's test file: one test group per situation, each with the alerts expected at given
/// times (an empty `exp_alerts` asserts that the alert does not fire then).
fn unit_tests() -> Vec<Value> {
    const ERRORS: &str = "controller_runtime_reconcile_errors_total";
    const LEADER: &str = "leader_election_master_status";
    const DEPTH: &str = "workqueue_depth";
    let up = |values: &str| {
        input(
            "up",
            r#"instance="10.0.0.1:8080",pod="pod-operator-0""#,
            values,
        )
    };
    let errors = |values: &str| {
        input(
            ERRORS,
            r#"controller="podrequest",pod="pod-operator-0""#,
            values,
        )
    };
    let leader = |values: &str| {
        input(
            LEADER,
            r#"name="pod-operator",pod="pod-operator-0""#,
            values,
        )
    };
    let depth = |values: &str| {
        input(
            DEPTH,
            r#"name="podrequest",controller="podrequest",pod="pod-operator-0""#,
            values,
        )
    };
    let healthy = || vec![up("1x30"), leader("1x30"), errors("0x30"), depth("0x30")];
    let all = [
        "PodOperatorReconcileErrors",
        "PodOperatorNoLeader",
        "PodOperatorQueueBacklog",
        "PodOperatorDown",
    ];
    let quiet = |at: &str| -> Vec<Value> { all.iter().map(|a| case(at, a, vec![])).collect() };

    vec![
        group("healthy: nothing fires", healthy(), quiet("25m")),
        group(
            "errors for 20m fire after 15m",
            vec![up("1x30"), leader("1x30"), errors("0+2x30")],
            vec![
                case("10m", "PodOperatorReconcileErrors", vec![]),
                case(
                    "20m",
                    "PodOperatorReconcileErrors",
                    vec![reconcile_errors()],
                ),
            ],
        ),
        group(
            "errors that stop resolve; a constant error count does not fire",
            vec![
                up("1x40"),
                leader("1x40"),
                // Errors for 20 minutes, then none: the rate falls to 0 within 5m.
                errors("0+1x20 20x20"),
            ],
            vec![
                case(
                    "18m",
                    "PodOperatorReconcileErrors",
                    vec![reconcile_errors()],
                ),
                case("30m", "PodOperatorReconcileErrors", vec![]),
            ],
        ),
        group(
            "errors of another operator's job do not fire",
            vec![
                up("1x30"),
                leader("1x30"),
                json!({
                    "series": format!(
                        r#"{ERRORS}{{job="other-operator-metrics",namespace="{NAMESPACE}",controller="podrequest"}}"#
                    ),
                    "values": "0+5x30",
                }),
                json!({
                    "series": format!(
                        r#"{ERRORS}{{job="{JOB}",namespace="elsewhere",controller="podrequest"}}"#
                    ),
                    "values": "0+5x30",
                }),
            ],
            vec![case("25m", "PodOperatorReconcileErrors", vec![])],
        ),
        group(
            "leader status 0 fires after 5m",
            vec![up("1x20"), leader("0x20")],
            vec![
                case("3m", "PodOperatorNoLeader", vec![]),
                case("6m", "PodOperatorNoLeader", vec![no_leader(false)]),
            ],
        ),
        group(
            "one leader among replicas does not fire",
            vec![
                up("1x20"),
                leader("1x20"),
                input(
                    LEADER,
                    r#"name="pod-operator",pod="pod-operator-1""#,
                    "0x20",
                ),
            ],
            vec![case("10m", "PodOperatorNoLeader", vec![])],
        ),
        group(
            "leader status absent fires after 5m",
            vec![up("1x20")],
            vec![
                case("4m", "PodOperatorNoLeader", vec![]),
                case("10m", "PodOperatorNoLeader", vec![no_leader(true)]),
            ],
        ),
        group(
            "backlog above 100 for 15m fires",
            vec![up("1x30"), leader("1x30"), depth("0 150x30")],
            vec![
                case("10m", "PodOperatorQueueBacklog", vec![]),
                case("20m", "PodOperatorQueueBacklog", vec![queue_backlog()]),
            ],
        ),
        group(
            "backlog of 100 or a short burst does not fire",
            vec![up("1x40"), leader("1x40"), depth("100x20 500x10 0x10")],
            vec![
                case("18m", "PodOperatorQueueBacklog", vec![]),
                case("35m", "PodOperatorQueueBacklog", vec![]),
            ],
        ),
        group(
            "up 0 fires after 5m",
            vec![up("1 1 0x20")],
            vec![
                case("4m", "PodOperatorDown", vec![]),
                case("10m", "PodOperatorDown", vec![down()]),
            ],
        ),
        group(
            "no target at all fires",
            vec![input(LEADER, r#"name="unrelated""#, "1x20")],
            vec![case("10m", "PodOperatorDown", vec![down()])],
        ),
        group(
            "one replica of two up does not fire",
            vec![
                up("0x20"),
                input(
                    "up",
                    r#"instance="10.0.0.2:8080",pod="pod-operator-1""#,
                    "1x20",
                ),
            ],
            vec![case("10m", "PodOperatorDown", vec![])],
        ),
    ]
}

#[test]
fn promtool_unit_tests_pass() {
    check_and_test(
        Path::new(env!("CARGO_TARGET_TMPDIR")),
        &rule_groups(OPERATOR, NAMESPACE, &[]),
        unit_tests(),
    );
}
