//! Alerting rules checked by Prometheus's own `promtool`: `check rules` on the rules, then
//! `test rules` on unit tests written against them (each alert fires on the series that should
//! fire it, and not on the others).
//!
//! Needs `promtool` on PATH (Debian: `apt-get install prometheus`; `cargo xtask setup`
//! installs it). Without it the check fails: it never skips.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};

/// `promtool` on PATH, or a panic that says how to install it.
pub fn promtool() -> PathBuf {
    let found = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .map(|d| d.join("promtool"))
        .find(|p| p.is_file());
    match found {
        Some(p) => p,
        None => panic!(
            "promtool is not installed (no `promtool` on PATH); alert tests need it. Install it \
             with `cargo xtask setup` or `apt-get install prometheus` (Debian), or \
             put Prometheus's promtool on PATH."
        ),
    }
}

/// An `alert_rule_test` case: `alert` evaluated at `at`, expected to fire once per
/// `(labels, annotations)` of `fired` (none: expected silent).
pub fn case(at: &str, alert: &str, fired: Vec<(Value, Value)>) -> Value {
    let exp: Vec<Value> = fired
        .into_iter()
        .map(
            |(labels, annotations)| json!({ "exp_labels": labels, "exp_annotations": annotations }),
        )
        .collect();
    json!({ "eval_time": at, "alertname": alert, "exp_alerts": exp })
}

/// A unit test group: `input_series` (each `{series, values}`) at a 1m interval, and `cases`.
pub fn group(name: &str, input_series: Vec<Value>, cases: Vec<Value>) -> Value {
    json!({
        "name": name,
        "interval": "1m",
        "input_series": input_series,
        "alert_rule_test": cases,
    })
}

/// Runs `promtool check rules` on `{groups}` and `promtool test rules` on `tests` (the test
/// groups of [`group`]) in a fresh directory under `dir`; panics with promtool's output when
/// either fails.
pub fn check_and_test(dir: &Path, groups: &Value, tests: Vec<Value>) {
    let promtool = promtool();
    let dir = dir.join(format!(
        "alerts-{}-{}",
        std::process::id(),
        crate::random_suffix()
    ));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    // JSON is YAML, so promtool reads both files as they are.
    write_json(&dir.join("rules.yaml"), &json!({ "groups": groups }));
    write_json(
        &dir.join("tests.yaml"),
        &json!({ "rule_files": ["rules.yaml"], "evaluation_interval": "1m", "tests": tests }),
    );
    for (what, file) in [("check", "rules.yaml"), ("test", "tests.yaml")] {
        let out = Command::new(&promtool)
            .args([what, "rules", file])
            .current_dir(&dir)
            .output()
            .unwrap_or_else(|e| panic!("running promtool {what} rules: {e}"));
        assert!(
            out.status.success(),
            "promtool {what} rules failed ({}); files in {}:\n{}{}",
            out.status,
            dir.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

fn write_json(path: &Path, value: &Value) {
    let text = serde_json::to_string_pretty(value)
        .unwrap_or_else(|e| panic!("serialising {}: {e}", path.display()));
    std::fs::write(path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}
