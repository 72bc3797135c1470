//! The alerting rules of `operon_manifests::alerts`, unit-tested by Prometheus's own `promtool test
//! rules`: each alert fires on the series that should fire it, and not on those that shouldn't.
//!
//! Needs `promtool` (Debian: `apt-get install prometheus`; `.ci/install-prerequisites` installs
//! it). Without it the test fails: it never skips.

use std::path::{Path, PathBuf};
use std::process::Command;

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

/// An `alert_rule_test` case: `alert` evaluated at `at`, expected to fire with `fired`, each
/// `(labels, annotations)`.
fn case(at: &str, alert: &str, fired: Vec<(Value, Value)>) -> Value {
    let exp: Vec<Value> = fired
        .into_iter()
        .map(
            |(labels, annotations)| json!({ "exp_labels": labels, "exp_annotations": annotations }),
        )
        .collect();
    json!({ "eval_time": at, "alertname": alert, "exp_alerts": exp })
}

fn group(name: &str, input_series: Vec<Value>, cases: Vec<Value>) -> Value {
    json!({
        "name": name,
        "interval": "1m",
        "input_series": input_series,
        "alert_rule_test": cases,
    })
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
fn unit_tests(rules_file: &str) -> Value {
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

    let tests = vec![
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
    ];
    json!({
        "rule_files": [rules_file],
        "evaluation_interval": "1m",
        "tests": tests,
    })
}

fn promtool() -> PathBuf {
    let found = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .map(|d| d.join("promtool"))
        .find(|p| p.is_file());
    match found {
        Some(p) => p,
        None => panic!(
            "promtool is not installed (no `promtool` on PATH); these alert tests need it. \
             Install it with `bash .ci/install-prerequisites` or `apt-get install prometheus` \
             (Debian), or put Prometheus's promtool on PATH."
        ),
    }
}

fn write_json(path: &Path, value: &Value) {
    let text = serde_json::to_string_pretty(value).expect("serialising JSON");
    std::fs::write(path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

#[test]
fn promtool_unit_tests_pass() {
    let promtool = promtool();
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("alerts-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("creating the test directory");
    // JSON is YAML, so promtool reads both files as they are.
    write_json(
        &dir.join("rules.yaml"),
        &json!({ "groups": rule_groups(OPERATOR, NAMESPACE) }),
    );
    write_json(&dir.join("tests.yaml"), &unit_tests("rules.yaml"));

    let check = Command::new(&promtool)
        .args(["check", "rules", "rules.yaml"])
        .current_dir(&dir)
        .output()
        .expect("running promtool check rules");
    assert!(
        check.status.success(),
        "promtool check rules failed ({}):\n{}{}",
        check.status,
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );

    let out = Command::new(&promtool)
        .args(["test", "rules", "tests.yaml"])
        .current_dir(&dir)
        .output()
        .expect("running promtool test rules");
    assert!(
        out.status.success(),
        "promtool test rules failed ({}); files in {}:\n{}{}",
        out.status,
        dir.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
}
