//! Prometheus metrics under the names controller-runtime and client-go use, and a tower layer
//! that counts the Kubernetes client's requests.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use prometheus_client::encoding::{EncodeLabelSet, prometheus_text};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tower::{Layer, Service};

pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReconcileLabels {
    controller: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ControllerLabel {
    controller: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NameLabel {
    name: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    code: String,
}

#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    controller: &'static str,
    reconciles: Family<ReconcileLabels, Counter>,
    reconcile_errors: Family<ControllerLabel, Counter>,
    requests: Family<RequestLabels, Counter>,
}

impl Metrics {
    /// Metrics of `controller`, run by the process `name` (the leader election label).
    pub fn new(controller: &'static str, name: &'static str) -> Self {
        let mut registry = Registry::default();
        // Counter names are given without `_total`: prometheus-client appends it.
        let reconciles = Family::<ReconcileLabels, Counter>::default();
        registry.register(
            "controller_runtime_reconcile",
            "Total number of reconciliations per controller",
            reconciles.clone(),
        );
        let reconcile_errors = Family::<ControllerLabel, Counter>::default();
        registry.register(
            "controller_runtime_reconcile_errors",
            "Total number of reconciliation errors per controller",
            reconcile_errors.clone(),
        );
        let leader = Family::<NameLabel, Gauge>::default();
        registry.register(
            "leader_election_master_status",
            "1 when this process leads (always: there is no leader election)",
            leader.clone(),
        );
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "rest_client_requests",
            "Number of HTTP requests, partitioned by method and status code",
            requests.clone(),
        );
        leader.get_or_create(&NameLabel { name }).set(1);
        // The reconcile series exist from the start, at 0.
        for result in ["success", "error"] {
            let _ = reconciles.get_or_create(&ReconcileLabels { controller, result });
        }
        let _ = reconcile_errors.get_or_create(&ControllerLabel { controller });
        Metrics {
            registry,
            controller,
            reconciles,
            reconcile_errors,
            requests,
        }
    }

    pub fn reconciled(&self, ok: bool) {
        let result = if ok { "success" } else { "error" };
        self.reconciles
            .get_or_create(&ReconcileLabels {
                controller: self.controller,
                result,
            })
            .inc();
        if !ok {
            self.reconcile_errors
                .get_or_create(&ControllerLabel {
                    controller: self.controller,
                })
                .inc();
        }
    }

    fn request(&self, method: &str, code: String) {
        self.requests
            .get_or_create(&RequestLabels {
                method: method.to_string(),
                code,
            })
            .inc();
    }

    /// The Prometheus text exposition (format 0.0.4).
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_text::encode(&mut out, &self.registry) {
            tracing::warn!(error = %e, "encoding metrics");
        }
        out
    }
}

/// Counts every request of the service it wraps in `rest_client_requests_total`, by method and
/// status code (`<error>` when no response came back).
#[derive(Clone)]
pub struct CountRequestsLayer(pub Arc<Metrics>);

impl<S> Layer<S> for CountRequestsLayer {
    type Service = CountRequests<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CountRequests {
            inner,
            metrics: self.0.clone(),
        }
    }
}

pub struct CountRequests<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S, B, R> Service<Request<B>> for CountRequests<S>
where
    S: Service<Request<B>, Response = Response<R>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let method = request.method().clone();
        let metrics = self.metrics.clone();
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await;
            let code = match &response {
                Ok(r) => r.status().as_u16().to_string(),
                Err(_) => "<error>".to_string(),
            };
            metrics.request(method.as_str(), code);
            response
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt;

    #[tokio::test]
    async fn exposes_the_series_the_benchmark_reads() {
        let metrics = Arc::new(Metrics::new("podrequest", "kube-rs-peer"));
        metrics.reconciled(true);
        metrics.reconciled(false);
        metrics.reconciled(false);

        let apiserver = tower::service_fn(|r: Request<()>| async move {
            match r.method().as_str() {
                "POST" => Ok(Response::builder().status(201).body(())?),
                "DELETE" => Err(anyhow::anyhow!("connection reset")),
                _ => Ok(Response::new(())),
            }
        });
        let mut client = CountRequestsLayer(metrics.clone()).layer(apiserver);
        for method in ["GET", "GET", "POST", "DELETE"] {
            let request = Request::builder().method(method).body(()).expect("request");
            let _ = client.ready().await.expect("ready").call(request).await;
        }

        let text = metrics.render();
        for series in [
            r#"controller_runtime_reconcile_total{controller="podrequest",result="success"} 1"#,
            r#"controller_runtime_reconcile_total{controller="podrequest",result="error"} 2"#,
            r#"controller_runtime_reconcile_errors_total{controller="podrequest"} 2"#,
            r#"leader_election_master_status{name="kube-rs-peer"} 1"#,
            r#"rest_client_requests_total{method="GET",code="200"} 2"#,
            r#"rest_client_requests_total{method="POST",code="201"} 1"#,
            r#"rest_client_requests_total{method="DELETE",code="<error>"} 1"#,
        ] {
            assert!(
                text.lines().any(|l| l == series),
                "{series} missing in:\n{text}"
            );
        }
        assert!(text.contains("# TYPE controller_runtime_reconcile_total counter"));
        assert!(!text.contains("_total_total"));
    }
}
