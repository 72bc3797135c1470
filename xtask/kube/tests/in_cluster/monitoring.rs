//! monitoring-operator on the real node: the stack it installs (the Prometheus Operator,
//! Prometheus, Alertmanager, kube-state-metrics, node_exporter) loads the talk's rule, fires
//! it on `kubectl cordon`, scrapes the three operators through their metrics authorization,
//! rolls out configuration changes and repairs what is deleted or edited.
//!
//! Prometheus and Alertmanager are asked through the API server's service proxy, as
//! `kubectl get --raw` would.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Result, ensure};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use monitoring_operator::api::ClusterOperator;
use monitoring_operator::deploy::NAMESPACE;
use monitoring_operator::resources::{PrometheusRule, ServiceMonitor};
use operon_cluster::wait;
use serde_json::{Value, json};

use super::{deployed, node_alone, node_shared};

const PROMETHEUS: &str = "prometheus-k8s:web";
const ALERTMANAGER: &str = "alertmanager-main:web";
const ALERT: &str = "KubeNodeUnschedulableSRE";
/// Long enough for a scrape of kube-state-metrics, two rule evaluations and a notification
/// (the stack's interval is 30 s).
const ALERT_DEADLINE: Duration = Duration::from_secs(300);

/// GET `path` of Service `service` (`name:port`) in the monitoring namespace, through the API
/// server's proxy; the body as JSON.
async fn proxied(client: &Client, service: &str, path: &str) -> Result<Value, String> {
    get_json(
        client,
        format!("/api/v1/namespaces/{NAMESPACE}/services/{service}/proxy{path}"),
    )
    .await
}

async fn get_json(client: &Client, uri: String) -> Result<Value, String> {
    let request = http::Request::get(uri)
        .body(Vec::new())
        .map_err(|e| e.to_string())?;
    let text = client
        .request_text(request)
        .await
        .map_err(|e| e.to_string())?;
    serde_json::from_str(&text).map_err(|e| format!("{e}: {text}"))
}

/// `query`'s result vector from Prometheus's HTTP API.
async fn query(client: &Client, query: &str) -> Result<Vec<Value>, String> {
    let q: String = query
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    let body = proxied(client, PROMETHEUS, &format!("/api/v1/query?query={q}")).await?;
    body["data"]["result"]
        .as_array()
        .cloned()
        .ok_or_else(|| format!("no result: {body}"))
}

/// The alerting rules Prometheus has loaded, `(group, alert name, for in seconds)`.
async fn loaded_alerts(client: &Client) -> Result<Vec<(String, String, f64)>, String> {
    let body = proxied(client, PROMETHEUS, "/api/v1/rules?type=alert").await?;
    let groups = body["data"]["groups"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    Ok(groups
        .iter()
        .flat_map(|g| {
            let group = g["name"].as_str().unwrap_or_default().to_string();
            let rules = g["rules"].as_array().cloned().unwrap_or_default();
            rules.into_iter().map(move |r| {
                (
                    group.clone(),
                    r["name"].as_str().unwrap_or_default().to_string(),
                    r["duration"].as_f64().unwrap_or_default(),
                )
            })
        })
        .collect())
}

/// Alertmanager's alerts named `ALERT` carrying `label`, as its v2 API lists them (`endsAt`
/// in the future: not resolved).
async fn alertmanager_alerts(client: &Client, label: (&str, &str)) -> Result<Vec<Value>, String> {
    let body = proxied(client, ALERTMANAGER, "/api/v2/alerts").await?;
    let alerts = body.as_array().cloned().ok_or_else(|| body.to_string())?;
    Ok(alerts
        .into_iter()
        .filter(|a| {
            a["labels"]["alertname"] == ALERT && a["labels"][label.0].as_str() == Some(label.1)
        })
        .collect())
}

fn active(alert: &Value) -> bool {
    let ends = alert["endsAt"].as_str().unwrap_or_default();
    let now = k8s_openapi::jiff::Timestamp::now();
    ends.parse::<k8s_openapi::jiff::Timestamp>()
        .map(|t| t > now)
        .unwrap_or(true)
}

async fn set_unschedulable(client: &Client, unschedulable: bool) -> Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    nodes
        .patch(
            operon_cluster::node::NODE_NAME,
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "unschedulable": unschedulable } })),
        )
        .await?;
    Ok(())
}

#[tokio::test]
async fn the_talks_alert_fires_on_cordon_and_resolves_on_uncordon() -> Result<()> {
    let d = deployed().await?;
    // Nothing else may need the node scheduled while it is cordoned.
    let _node = node_alone("the_talks_alert_fires_on_cordon_and_resolves_on_uncordon").await?;
    let client = d.env.client().await?;

    // The talk's rule (slide 37), verbatim: loaded, with its hour.
    wait::until(
        "Prometheus's rules API lists the talk's rule",
        Duration::from_secs(180),
        || async {
            let alerts = loaded_alerts(&client).await?;
            alerts
                .iter()
                .any(|(g, a, f)| g == "sre-node-unschedulable" && a == ALERT && *f == 3600.0)
                .then_some(())
                .ok_or_else(|| format!("{alerts:?}"))
        },
    )
    .await?;

    // A copy that waits 5 s instead of an hour, told apart by a label.
    let talk: Value = serde_saphyr::from_str(&std::fs::read_to_string(
        super::repo_root()
            .join("operators/monitoring-operator/samples/sre-node-unschedulable.yaml"),
    )?)?;
    let mut copy = talk.clone();
    copy["metadata"] = json!({ "name": "sre-node-unschedulable-quick", "namespace": NAMESPACE });
    let rule = &mut copy["spec"]["groups"][0]["rules"][0];
    rule["for"] = json!("5s");
    rule["labels"]["copy"] = json!("quick");
    ensure!(rule["alert"] == ALERT, "{talk}");
    operon_cluster::apply::apply(&client, &copy, "kubectl").await?;

    let result = cordon_and_uncordon(&client).await;
    // Whatever happened, the node takes Pods again and the copy goes.
    let uncordoned = set_unschedulable(&client, false).await;
    let rules: Api<PrometheusRule> = Api::namespaced(client.clone(), NAMESPACE);
    let deleted = rules
        .delete("sre-node-unschedulable-quick", &DeleteParams::default())
        .await;
    result?;
    uncordoned?;
    deleted?;
    Ok(())
}

async fn cordon_and_uncordon(client: &Client) -> Result<()> {
    let label = ("copy", "quick");
    wait::until(
        "the quick copy loaded",
        Duration::from_secs(180),
        || async {
            let alerts = loaded_alerts(client).await?;
            alerts
                .iter()
                .any(|(_, a, f)| a == ALERT && *f == 5.0)
                .then_some(())
                .ok_or_else(|| format!("{alerts:?}"))
        },
    )
    .await?;
    // Not firing before the cordon: the test would prove nothing.
    let before = alertmanager_alerts(client, label).await;
    ensure!(
        before.as_ref().is_ok_and(|a| !a.iter().any(active)),
        "{before:?}"
    );

    set_unschedulable(client, true).await?;
    let fired = wait::until(
        "kubectl cordon: KubeNodeUnschedulableSRE reaches Alertmanager",
        ALERT_DEADLINE,
        || async {
            let alerts = alertmanager_alerts(client, label).await?;
            alerts
                .into_iter()
                .find(active)
                .ok_or_else(|| "not in Alertmanager yet".to_string())
        },
    )
    .await?;
    ensure!(fired["labels"]["severity"] == "warning", "{fired}");
    ensure!(
        fired["labels"]["node"] == operon_cluster::node::NODE_NAME,
        "{fired}"
    );

    set_unschedulable(client, false).await?;
    wait::until(
        "kubectl uncordon: the alert resolves in Alertmanager",
        ALERT_DEADLINE,
        || async {
            let alerts = alertmanager_alerts(client, label).await?;
            match alerts.iter().any(active) {
                false => Ok(()),
                true => Err(format!("{alerts:?}")),
            }
        },
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn prometheus_scrapes_the_operators_through_their_metrics_auth() -> Result<()> {
    let d = deployed().await?;
    // The operators' replicas stay as they are meanwhile (a redeploy replaces them).
    let _node = node_shared("prometheus_scrapes_the_operators_through_their_metrics_auth").await?;
    let client = d.env.client().await?;
    let namespaces = [
        "credentials-operator-system",
        "pod-operator-system",
        "service-ca-operator-system",
    ];
    // Two replicas each, the standby included, all up.
    let ups = wait::until(
        "Prometheus: up == 1 for both replicas of the three operators",
        Duration::from_secs(240),
        || async {
            let result = query(&client, "up{namespace=~\".+-operator-system\"}").await?;
            let mut ups: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for series in &result {
                let ns = series["metric"]["namespace"].as_str().unwrap_or_default();
                let value = series["value"][1].as_str().unwrap_or_default();
                ups.entry(ns.to_string())
                    .or_default()
                    .push(value.to_string());
            }
            let all_up = namespaces.iter().all(|ns| {
                ups.get(*ns)
                    .is_some_and(|v| v.len() == 2 && v.iter().all(|x| x == "1"))
            });
            match all_up {
                true => Ok(ups),
                false => Err(format!("{ups:?}")),
            }
        },
    )
    .await?;
    ensure!(ups.len() == 3, "{ups:?}");
    // And the series behind the operators' alert rules are there.
    let reconciles = query(&client, "controller_runtime_reconcile_total").await;
    ensure!(
        reconciles.as_ref().is_ok_and(|r| !r.is_empty()),
        "{reconciles:?}"
    );

    // Prometheus scraped them over HTTPS (the ServiceMonitors' scheme), with its token. The same
    // endpoint without a token (the API server's proxy sends none): refused. Plain HTTP on the
    // metrics port gets no answer, and the probes' port has no /metrics.
    // Polled: a replica may be replaced meanwhile (the fixture reconfigures credentials-operator).
    for ns in namespaces {
        wait::until(
            &format!("{ns}: metrics on HTTPS only, with a token only"),
            Duration::from_secs(90),
            || metrics_answer_on_https_only(&client, ns),
        )
        .await?;
    }
    Ok(())
}

/// What a plain-HTTP `GET /metrics` to `addr` gets back before the connection closes (at most
/// 10 s and 1 KiB).
async fn plain_http_answer(addr: &str) -> Result<String, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: operator\r\nConnection: close\r\n\r\n")
            .await?;
        let mut answer = Vec::new();
        let _ = (&mut stream).take(1024).read_to_end(&mut answer).await;
        Ok::<_, std::io::Error>(String::from_utf8_lossy(&answer).into_owned())
    };
    match tokio::time::timeout(Duration::from_secs(10), exchange).await {
        Ok(Ok(answer)) => Ok(answer),
        Ok(Err(e)) => Err(format!("connecting to {addr}: {e}")),
        Err(_) => Err(format!("{addr} neither answered nor closed in 10 s")),
    }
}

/// One running, not terminating operator Pod of `ns`: `/metrics` without a token over HTTPS is
/// refused, plain HTTP on the metrics port gets no HTTP answer, the probes' port has no `/metrics`.
async fn metrics_answer_on_https_only(client: &Client, ns: &str) -> Result<(), String> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let list = pods
        .list(&ListParams::default().labels("control-plane=controller-manager"))
        .await
        .map_err(|e| e.to_string())?;
    let pod = list
        .items
        .iter()
        .find(|p| {
            p.metadata.deletion_timestamp.is_none()
                && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
        })
        .ok_or("no running operator Pod")?;
    let name = pod.name_any();
    let proxied = |target: String| async move {
        let uri = format!("/api/v1/namespaces/{ns}/pods/{target}/proxy/metrics");
        let request = http::Request::get(uri)
            .body(Vec::new())
            .map_err(kube::Error::HttpError)?;
        client.request_text(request).await
    };
    let code = |r: &Result<String, kube::Error>| match r {
        Err(kube::Error::Api(s)) => Some(s.code),
        _ => None,
    };
    let anonymous = proxied(format!("https:{name}:8443")).await;
    if !matches!(code(&anonymous), Some(401 | 403)) {
        return Err(format!(
            "an anonymous HTTPS scrape of {name} got {anonymous:?}"
        ));
    }
    // Plain HTTP straight to the Pod (the host routes to Pod IPs through the node): no HTTP
    // answer, only TLS's alert or a closed connection.
    let ip = pod
        .status
        .as_ref()
        .and_then(|s| s.pod_ip.clone())
        .ok_or("no Pod IP")?;
    let plain = plain_http_answer(&format!("{ip}:8443")).await?;
    if plain.starts_with("HTTP/") {
        return Err(format!("plain HTTP on {name}'s metrics port got {plain:?}"));
    }
    let probes = proxied(format!("{name}:8081")).await;
    match &probes {
        // The operator's own 404, not the API server's for a Pod that is gone.
        Err(kube::Error::Api(s)) if s.code == 404 && !s.message.contains("pods \"") => Ok(()),
        other => Err(format!("/metrics on {name}'s probes port got {other:?}")),
    }
}

/// The StatefulSet the Prometheus Operator made for `name`, once rolled out.
async fn rolled_out(sets: &Api<StatefulSet>, name: &str) -> Result<StatefulSet, String> {
    let set = sets.get(name).await.map_err(|e| e.to_string())?;
    let status = set.status.clone().unwrap_or_default();
    let wanted = set.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let done = status.ready_replicas == Some(wanted)
        && status.updated_replicas == Some(wanted)
        && status.replicas == wanted
        && status.current_revision == status.update_revision;
    match done {
        true => Ok(set),
        false => Err(format!("{status:?}")),
    }
}

/// The retention each Prometheus replica runs with, as it reports it itself.
async fn retentions(client: &Client, replicas: usize) -> Result<Vec<String>, String> {
    let mut found = Vec::new();
    for i in 0..replicas {
        let uri = format!(
            "/api/v1/namespaces/{NAMESPACE}/pods/prometheus-k8s-{i}:9090/proxy/api/v1/status/runtimeinfo"
        );
        let body = get_json(client, uri).await?;
        found.push(
            body["data"]["storageRetention"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        );
    }
    Ok(found)
}

async fn configure(client: &Client, config: &str) -> Result<()> {
    let cm: ConfigMap = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": { "name": "cluster-monitoring-config", "namespace": NAMESPACE },
        "data": { "config.yaml": config },
    }))?;
    Api::<ConfigMap>::namespaced(client.clone(), NAMESPACE)
        .patch(
            "cluster-monitoring-config",
            &PatchParams::apply("kubectl").force(),
            &Patch::Apply(&cm),
        )
        .await?;
    Ok(())
}

async fn degraded(client: &Client) -> Result<(String, String), String> {
    let cos: Api<ClusterOperator> = Api::all(client.clone());
    let co = cos.get("monitoring").await.map_err(|e| e.to_string())?;
    let conditions = co.status.map(|s| s.conditions).unwrap_or_default();
    let c = conditions
        .iter()
        .find(|c| c.type_ == "Degraded")
        .ok_or("no Degraded")?;
    Ok((c.status.clone(), c.message.clone().unwrap_or_default()))
}

#[tokio::test]
async fn configuration_changes_roll_out_and_a_bad_one_is_named() -> Result<()> {
    let d = deployed().await?;
    // Prometheus restarts: not while the alert test needs it.
    let _node = node_alone("configuration_changes_roll_out_and_a_bad_one_is_named").await?;
    let client = d.env.client().await?;
    let sets: Api<StatefulSet> = Api::namespaced(client.clone(), NAMESPACE);

    configure(
        &client,
        "prometheusK8s:\n  retention: 12h\nalertmanagerMain:\n  replicas: 1\n",
    )
    .await?;
    // The glue: both Prometheus replicas run with the new retention, with no restart by hand
    // (the Prometheus Operator rewrites their configuration or rolls their StatefulSet).
    wait::until(
        "both Prometheus replicas report retention 12h",
        Duration::from_secs(300),
        || async {
            rolled_out(&sets, "prometheus-k8s").await?;
            let found = retentions(&client, 2).await?;
            match found.iter().all(|r| r.starts_with("12h")) {
                true => Ok(()),
                false => Err(format!("{found:?}")),
            }
        },
    )
    .await?;
    let prometheus = sets.get("prometheus-k8s").await?;
    wait::until(
        "Alertmanager scaled to 1 replica",
        Duration::from_secs(180),
        || async {
            let set = rolled_out(&sets, "alertmanager-main").await?;
            match set.spec.as_ref().and_then(|s| s.replicas) {
                Some(1) => Ok(()),
                other => Err(format!("replicas {other:?}")),
            }
        },
    )
    .await?;

    // A bad value: Degraded names the key; the stack keeps the last good configuration.
    configure(&client, "prometheusK8s:\n  retention: soon\n").await?;
    let (_, message) = wait::until(
        "Degraded=True naming prometheusK8s.retention",
        Duration::from_secs(120),
        || async {
            let (status, message) = degraded(&client).await?;
            match status == "True" && message.contains("prometheusK8s.retention") {
                true => Ok((status, message)),
                false => Err(format!("{status} {message}")),
            }
        },
    )
    .await?;
    ensure!(message.contains("soon"), "{message}");
    let still = rolled_out(&sets, "prometheus-k8s")
        .await
        .map_err(anyhow::Error::msg)?;
    ensure!(
        still.metadata.generation == prometheus.metadata.generation,
        "the bad configuration changed Prometheus's StatefulSet"
    );
    let found = retentions(&client, 2).await.map_err(anyhow::Error::msg)?;
    ensure!(found.iter().all(|r| r.starts_with("12h")), "{found:?}");

    // Back to the defaults: healthy again, two Alertmanagers.
    Api::<ConfigMap>::namespaced(client.clone(), NAMESPACE)
        .delete("cluster-monitoring-config", &DeleteParams::default())
        .await?;
    wait::until(
        "Degraded=False and two Alertmanagers again",
        Duration::from_secs(300),
        || async {
            let (status, message) = degraded(&client).await?;
            let set = rolled_out(&sets, "alertmanager-main").await?;
            let replicas = set.spec.as_ref().and_then(|s| s.replicas);
            match status == "False" && replicas == Some(2) {
                true => Ok(()),
                false => Err(format!("{status} {message}, replicas {replicas:?}")),
            }
        },
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn a_deleted_or_edited_child_is_restored() -> Result<()> {
    let d = deployed().await?;
    let _node = node_shared("a_deleted_or_edited_child_is_restored").await?;
    let client = d.env.client().await?;

    // The Prometheus Operator's Deployment, deleted: a new one, running again.
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), NAMESPACE);
    let before = deployments.get("prometheus-operator").await?;
    deployments
        .delete("prometheus-operator", &DeleteParams::foreground())
        .await?;
    wait::until(
        "the Prometheus Operator's Deployment recreated and available",
        Duration::from_secs(180),
        || async {
            let now = deployments
                .get_opt("prometheus-operator")
                .await
                .map_err(|e| e.to_string())?
                .ok_or("not recreated yet")?;
            let available = now.status.as_ref().and_then(|s| s.available_replicas);
            match now.metadata.uid != before.metadata.uid && available == Some(1) {
                true => Ok(()),
                false => Err(format!("uid {:?}, available {available:?}", now.uid())),
            }
        },
    )
    .await?;

    // A managed ServiceMonitor, edited by hand: put back.
    let monitors: Api<ServiceMonitor> = Api::namespaced(client.clone(), NAMESPACE);
    let name = "kube-state-metrics";
    let original = monitors.get(name).await?.spec["endpoints"].clone();
    monitors
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "endpoints": [{ "port": "elsewhere" }] } })),
        )
        .await?;
    wait::until(
        "the edited ServiceMonitor restored",
        Duration::from_secs(120),
        || async {
            let now = monitors.get(name).await.map_err(|e| e.to_string())?;
            let endpoints = &now.spec["endpoints"];
            match *endpoints == original {
                true => Ok(()),
                false => Err(endpoints.to_string()),
            }
        },
    )
    .await?;
    Ok(())
}
