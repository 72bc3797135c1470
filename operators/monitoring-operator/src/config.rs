//! The stack's configuration: the ConfigMap `cluster-monitoring-config`, key `config.yaml`, in
//! OpenShift cluster-monitoring-operator's schema (the parts monitoring-operator supports).
//!
//! Nothing is silently ignored: an unknown key or an invalid value is an [`Invalid`] naming the
//! key (`prometheusK8s.retention`), which the operator reports in its `Degraded` condition and a
//! Warning Event while the stack keeps its last good configuration.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The ConfigMap's name, as OpenShift names it.
pub const CONFIG_MAP: &str = "cluster-monitoring-config";
/// The key holding the configuration.
pub const CONFIG_KEY: &str = "config.yaml";

/// `config.yaml`.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Config {
    /// Monitoring for user projects: not provided here (refused with a clear message).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_user_workload: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus_k8s: Option<PrometheusK8s>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alertmanager_main: Option<AlertmanagerMain>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_exporter: Option<NodeExporter>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kube_state_metrics: Option<KubeStateMetrics>,
}

/// The platform Prometheus (`prometheus-k8s`).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PrometheusK8s {
    /// How long samples are kept, a Prometheus duration (`15d`, `24h`, `1w2d`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<String>,
    /// At most this much data is kept (`10GB`, `512MB`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_size: Option<String>,
    /// Replicas of the Prometheus StatefulSet (1–5; CMO fixes 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerations: Option<Vec<Toleration>>,
    /// `debug`, `info`, `warn` or `error`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_level: Option<String>,
}

/// The platform Alertmanager (`alertmanager-main`).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AlertmanagerMain {
    /// `false` removes Alertmanager (Prometheus then sends alerts nowhere).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Replicas of the Alertmanager StatefulSet (1–5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerations: Option<Vec<Toleration>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_level: Option<String>,
}

/// node_exporter's DaemonSet.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NodeExporter {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collectors: Option<Collectors>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
}

/// The optional collectors CMO lets users switch (the node_exporter 1.5 ones).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Collectors {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpufreq: Option<Switch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcpstat: Option<Switch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub buddyinfo: Option<Switch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mountstats: Option<Switch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub processes: Option<Switch>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Switch {
    pub enabled: bool,
}

/// kube-state-metrics' Deployment.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KubeStateMetrics {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerations: Option<Vec<Toleration>>,
}

/// A container's requests and limits (`cpu`, `memory`).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Resources {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<Amounts>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<Amounts>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Amounts {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
}

/// A Pod toleration, as in a Pod spec.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Toleration {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// `Exists` or `Equal`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operator: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// `NoSchedule`, `PreferNoSchedule` or `NoExecute`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effect: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub toleration_seconds: Option<i64>,
}

/// What is wrong with a configuration, at which key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct Invalid {
    /// Where: `config.yaml`, `prometheusK8s.retention`, `prometheusK8s.tolerations[0].effect`.
    pub key: String,
    pub message: String,
}

impl Invalid {
    fn at(key: impl Into<String>, message: impl Into<String>) -> Self {
        Invalid {
            key: key.into(),
            message: message.into(),
        }
    }
}

impl Config {
    /// Parses and validates `config.yaml`. An empty document is the default configuration.
    pub fn parse(text: &str) -> Result<Config, Invalid> {
        if text.trim().is_empty() {
            return Ok(Config::default());
        }
        let value: serde_json::Value = serde_saphyr::from_str(text)
            .map_err(|e| Invalid::at(CONFIG_KEY, format!("not valid YAML: {e}")))?;
        if value.is_null() {
            return Ok(Config::default());
        }
        let config: Config = serde_path_to_error::deserialize(&value).map_err(|e| {
            let path = e.path().to_string();
            let key = if path == "." { CONFIG_KEY.into() } else { path };
            Invalid::at(key, e.into_inner().to_string())
        })?;
        config.validate()?;
        Ok(config)
    }

    /// A configuration as recorded in JSON (the ClusterOperator's last-good annotation):
    /// `None` unless it parses and validates. Whoever may edit the ClusterOperator may write
    /// that annotation, so it is checked like the ConfigMap.
    pub fn from_recorded(text: &str) -> Option<Config> {
        let config: Config = serde_json::from_str(text).ok()?;
        config.validate().ok()?;
        Some(config)
    }

    fn validate(&self) -> Result<(), Invalid> {
        if self.enable_user_workload == Some(true) {
            return Err(Invalid::at(
                "enableUserWorkload",
                "monitoring for user projects is not provided by monitoring-operator; set it \
                 to false or remove it",
            ));
        }
        if let Some(p) = &self.prometheus_k8s {
            let at = |k: &str| format!("prometheusK8s.{k}");
            if let Some(r) = &p.retention {
                check_duration(&at("retention"), r)?;
            }
            if let Some(size) = &p.retention_size {
                check_size(&at("retentionSize"), size)?;
            }
            check_replicas(&at("replicas"), p.replicas)?;
            check_resources(&at("resources"), p.resources.as_ref())?;
            check_labels(&at("nodeSelector"), p.node_selector.as_ref())?;
            check_tolerations(&at("tolerations"), p.tolerations.as_deref())?;
            check_log_level(&at("logLevel"), p.log_level.as_deref())?;
        }
        if let Some(a) = &self.alertmanager_main {
            let at = |k: &str| format!("alertmanagerMain.{k}");
            check_replicas(&at("replicas"), a.replicas)?;
            check_resources(&at("resources"), a.resources.as_ref())?;
            check_labels(&at("nodeSelector"), a.node_selector.as_ref())?;
            check_tolerations(&at("tolerations"), a.tolerations.as_deref())?;
            check_log_level(&at("logLevel"), a.log_level.as_deref())?;
        }
        if let Some(n) = &self.node_exporter {
            check_resources("nodeExporter.resources", n.resources.as_ref())?;
        }
        if let Some(k) = &self.kube_state_metrics {
            check_resources("kubeStateMetrics.resources", k.resources.as_ref())?;
            check_labels("kubeStateMetrics.nodeSelector", k.node_selector.as_ref())?;
            check_tolerations("kubeStateMetrics.tolerations", k.tolerations.as_deref())?;
        }
        Ok(())
    }

    /// Prometheus's settings, defaults where not set.
    pub fn prometheus(&self) -> PrometheusK8s {
        self.prometheus_k8s.clone().unwrap_or_default()
    }

    /// Alertmanager's settings, or `None` when disabled.
    pub fn alertmanager(&self) -> Option<AlertmanagerMain> {
        let a = self.alertmanager_main.clone().unwrap_or_default();
        (a.enabled != Some(false)).then_some(a)
    }
}

/// Prometheus's duration syntax: one or more `<number><unit>`, units `ms s m h d w y`.
fn check_duration(key: &str, value: &str) -> Result<(), Invalid> {
    let mut rest = value;
    let mut parts = 0;
    while !rest.is_empty() {
        let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        if digits == 0 {
            break;
        }
        rest = &rest[digits..];
        let unit = ["ms", "s", "m", "h", "d", "w", "y"]
            .into_iter()
            .find(|u| rest.starts_with(u));
        let Some(unit) = unit else { break };
        rest = &rest[unit.len()..];
        parts += 1;
    }
    if parts == 0 || !rest.is_empty() {
        return Err(Invalid::at(
            key,
            format!(
                "{value:?} is not a Prometheus duration: use a number and a unit (ms, s, m, h, \
                 d, w, y), e.g. 15d or 12h"
            ),
        ));
    }
    Ok(())
}

/// Prometheus's byte sizes: a number and `B`, `KB`, `MB`, `GB`, `TB`, `PB` or `EB`.
fn check_size(key: &str, value: &str) -> Result<(), Invalid> {
    let number_end = value
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(value.len());
    let (number, unit) = value.split_at(number_end);
    let ok = !number.is_empty()
        && number.parse::<f64>().is_ok()
        && ["B", "KB", "MB", "GB", "TB", "PB", "EB"].contains(&unit);
    if ok {
        Ok(())
    } else {
        Err(Invalid::at(
            key,
            format!(
                "{value:?} is not a size: use a number and B, KB, MB, GB, TB, PB or EB, e.g. 10GB"
            ),
        ))
    }
}

fn check_replicas(key: &str, replicas: Option<i32>) -> Result<(), Invalid> {
    match replicas {
        Some(n) if !(1..=5).contains(&n) => Err(Invalid::at(
            key,
            format!("{n} replicas: must be from 1 to 5"),
        )),
        _ => Ok(()),
    }
}

fn check_log_level(key: &str, level: Option<&str>) -> Result<(), Invalid> {
    match level {
        Some(l) if !["debug", "info", "warn", "error"].contains(&l) => Err(Invalid::at(
            key,
            format!("{l:?}: must be debug, info, warn or error"),
        )),
        _ => Ok(()),
    }
}

/// A Kubernetes quantity: a decimal number with an optional SI (`m`, `k`, `M`, `G`, …),
/// binary (`Ki`, `Mi`, `Gi`, …) or exponent suffix; not negative.
fn is_quantity(value: &str) -> bool {
    let suffixes = [
        "Ki", "Mi", "Gi", "Ti", "Pi", "Ei", "n", "u", "m", "k", "M", "G", "T", "P", "E", "",
    ];
    let number_end = value
        .find(|c: char| !c.is_ascii_digit() && c != '.' && c != '+')
        .unwrap_or(value.len());
    let (number, suffix) = value.split_at(number_end);
    let number = number.strip_prefix('+').unwrap_or(number);
    let number_ok = !number.is_empty()
        && number.chars().filter(|c| *c == '.').count() <= 1
        && number != "."
        && number.chars().all(|c| c.is_ascii_digit() || c == '.');
    let suffix_ok = suffixes.contains(&suffix)
        || suffix
            .strip_prefix(['e', 'E'])
            .map(|e| e.strip_prefix(['+', '-']).unwrap_or(e))
            .is_some_and(|e| !e.is_empty() && e.chars().all(|c| c.is_ascii_digit()));
    number_ok && suffix_ok
}

fn check_resources(key: &str, resources: Option<&Resources>) -> Result<(), Invalid> {
    let Some(resources) = resources else {
        return Ok(());
    };
    for (part, amounts) in [
        ("requests", &resources.requests),
        ("limits", &resources.limits),
    ] {
        let Some(amounts) = amounts else { continue };
        for (name, value) in [("cpu", &amounts.cpu), ("memory", &amounts.memory)] {
            if let Some(value) = value.as_deref().filter(|v| !is_quantity(v)) {
                return Err(Invalid::at(
                    format!("{key}.{part}.{name}"),
                    format!(
                        "{value:?} is not a quantity, e.g. 100m or 1 for cpu, 512Mi for memory"
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Label keys (an optional DNS prefix and a name) and values as Kubernetes accepts them.
fn check_labels(key: &str, labels: Option<&BTreeMap<String, String>>) -> Result<(), Invalid> {
    let name_ok = |s: &str| {
        !s.is_empty()
            && s.len() <= 63
            && s.starts_with(|c: char| c.is_ascii_alphanumeric())
            && s.ends_with(|c: char| c.is_ascii_alphanumeric())
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    for (k, v) in labels.into_iter().flatten() {
        let label_name = k.rsplit_once('/').map_or(k.as_str(), |(_, n)| n);
        let prefix_ok = k
            .rsplit_once('/')
            .is_none_or(|(p, _)| !p.is_empty() && p.len() <= 253 && p.split('.').all(&name_ok));
        if !name_ok(label_name) || !prefix_ok {
            return Err(Invalid::at(
                format!("{key}.{k}"),
                "not a label key: an optional DNS prefix and '/', then up to 63 letters, \
                 digits, '-', '_' or '.'",
            ));
        }
        if !v.is_empty() && !name_ok(v) {
            return Err(Invalid::at(
                format!("{key}.{k}"),
                format!("{v:?} is not a label value: up to 63 letters, digits, '-', '_' or '.'"),
            ));
        }
    }
    Ok(())
}

fn check_tolerations(key: &str, tolerations: Option<&[Toleration]>) -> Result<(), Invalid> {
    for (i, t) in tolerations.into_iter().flatten().enumerate() {
        let at = |field: &str| format!("{key}[{i}].{field}");
        match t.operator.as_deref() {
            None | Some("Equal") => {}
            Some("Exists") if t.value.as_deref().is_some_and(|v| !v.is_empty()) => {
                return Err(Invalid::at(
                    at("value"),
                    "must be empty when operator is Exists",
                ));
            }
            Some("Exists") => {}
            Some(other) => {
                return Err(Invalid::at(
                    at("operator"),
                    format!("{other:?}: must be Exists or Equal"),
                ));
            }
        }
        if let Some(effect) = t.effect.as_deref()
            && !["NoSchedule", "PreferNoSchedule", "NoExecute"].contains(&effect)
        {
            return Err(Invalid::at(
                at("effect"),
                format!("{effect:?}: must be NoSchedule, PreferNoSchedule or NoExecute"),
            ));
        }
        if t.toleration_seconds.is_some() && t.effect.as_deref() != Some("NoExecute") {
            return Err(Invalid::at(
                at("tolerationSeconds"),
                "only applies with effect NoExecute",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_and_missing_sections_are_the_defaults() -> Result<(), Invalid> {
        assert_eq!(Config::parse("")?, Config::default());
        assert_eq!(Config::parse("# nothing\n")?, Config::default());
        assert_eq!(Config::default().prometheus().retention, None);
        assert!(Config::default().alertmanager().is_some());
        Ok(())
    }

    #[test]
    fn cmos_keys_are_read() -> Result<(), Invalid> {
        let config = Config::parse(
            "prometheusK8s:\n  retention: 2d\n  retentionSize: 5GB\n  replicas: 1\n  \
             resources:\n    requests:\n      cpu: 100m\n      memory: 256Mi\n  \
             nodeSelector:\n    kubernetes.io/os: linux\n  tolerations:\n  - key: a\n    \
             operator: Exists\n    effect: NoSchedule\nalertmanagerMain:\n  enabled: false\n\
             nodeExporter:\n  collectors:\n    tcpstat:\n      enabled: true\n\
             kubeStateMetrics:\n  resources:\n    limits:\n      memory: 1Gi\n",
        )?;
        let p = config.prometheus();
        assert_eq!(p.retention.as_deref(), Some("2d"));
        assert_eq!(p.replicas, Some(1));
        assert_eq!(p.tolerations.map(|t| t.len()), Some(1));
        assert!(config.alertmanager().is_none());
        Ok(())
    }

    #[test]
    fn unknown_keys_are_named() {
        let e = Config::parse("prometheusK8s:\n  retension: 2d\n").err();
        let e = e.expect("an unknown key is an error");
        assert_eq!(e.key, "prometheusK8s.retension", "{e}");
        assert!(e.message.contains("unknown field `retension`"), "{e}");
        let top = Config::parse("grafana:\n  enabled: true\n").err();
        let top = top.expect("an unknown section is an error");
        assert_eq!(top.key, "grafana", "{top}");
    }

    #[test]
    fn invalid_values_are_named() {
        let cases = [
            (
                "prometheusK8s:\n  retention: 1 day\n",
                "prometheusK8s.retention",
            ),
            (
                "prometheusK8s:\n  retention: 15\n",
                "prometheusK8s.retention",
            ),
            (
                "prometheusK8s:\n  retentionSize: 10 gigs\n",
                "prometheusK8s.retentionSize",
            ),
            ("prometheusK8s:\n  replicas: 0\n", "prometheusK8s.replicas"),
            (
                "prometheusK8s:\n  replicas: two\n",
                "prometheusK8s.replicas",
            ),
            (
                "prometheusK8s:\n  resources:\n    requests:\n      cpu: lots\n",
                "prometheusK8s.resources.requests.cpu",
            ),
            (
                "prometheusK8s:\n  tolerations:\n  - operator: Maybe\n",
                "prometheusK8s.tolerations[0].operator",
            ),
            (
                "alertmanagerMain:\n  enabled: maybe\n",
                "alertmanagerMain.enabled",
            ),
            (
                "alertmanagerMain:\n  logLevel: loud\n",
                "alertmanagerMain.logLevel",
            ),
            (
                "kubeStateMetrics:\n  nodeSelector:\n    'bad key!': x\n",
                "kubeStateMetrics.nodeSelector.bad key!",
            ),
            ("enableUserWorkload: true\n", "enableUserWorkload"),
            ("prometheusK8s: [\n", "config.yaml"),
        ];
        for (text, key) in cases {
            match Config::parse(text) {
                Ok(c) => panic!("{text:?} accepted: {c:?}"),
                Err(e) => assert_eq!(e.key, key, "{text:?}: {e}"),
            }
        }
    }

    #[test]
    fn quantities_and_durations() {
        for q in ["1", "100m", "0.5", "512Mi", "1Gi", "2e3", "1.5G"] {
            assert!(is_quantity(q), "{q}");
        }
        for q in ["", "-1", "lots", "1.2.3", "Mi", "10 Mi"] {
            assert!(!is_quantity(q), "{q}");
        }
        for d in ["15d", "1h30m", "500ms", "1y"] {
            assert!(check_duration("k", d).is_ok(), "{d}");
        }
        for d in ["", "15", "d", "1 h", "1hx"] {
            assert!(check_duration("k", d).is_err(), "{d}");
        }
    }
}
