//! `kube-rs-peer`: the PodRequest controller written with kube-rs alone, for the benchmark.

mod controller;
mod metrics;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use clap::Parser;
use futures::StreamExt;
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::Pod;
use kube::client::ClientBuilder;
use kube::config::{Config, KubeConfigOptions, Kubeconfig};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::{Controller, WatchStreamExt, controller as runtime, reflector, watcher};
use kube::{Api, ResourceExt};
use pod_operator::api::PodRequest;
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

use crate::controller::{Context, MANAGER};
use crate::metrics::{CountRequestsLayer, Metrics};

/// Name of the process in `leader_election_master_status`.
const NAME: &str = "kube-rs-peer";

#[derive(Parser)]
#[command(
    name = "kube-rs-peer",
    version,
    about = "PodRequest controller on plain kube-rs (benchmark peer)"
)]
struct Cli {
    /// Kubeconfig file; without it the configuration is inferred ($KUBECONFIG,
    /// ~/.kube/config, in-cluster).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Where to serve Prometheus metrics (`GET /metrics`).
    #[arg(long, default_value = "127.0.0.1:8080")]
    metrics_bind_address: SocketAddr,
    /// Reconciles running at once (kube-runtime's `Config::concurrency`; 0 is unbounded).
    #[arg(long, default_value_t = 10)]
    concurrency: u16,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    let cli = Cli::parse();

    let config = match &cli.kubeconfig {
        Some(path) => {
            let kubeconfig = Kubeconfig::read_from(path)?;
            Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?
        }
        None => Config::infer().await?,
    };
    let metrics = Arc::new(Metrics::new("podrequest", NAME));
    let client = ClientBuilder::try_from(config)?
        .with_layer(&CountRequestsLayer(metrics.clone()))
        .build();

    let listener = TcpListener::bind(cli.metrics_bind_address).await?;
    tracing::info!(addr = %cli.metrics_bind_address, "serving metrics");
    tokio::spawn(serve_metrics(listener, metrics.clone()));

    // Pods are cached without managedFields; the same watch triggers the owning requests.
    let (pods, writer) = reflector::store();
    let pod_changes = watcher(Api::<Pod>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .modify(|pod| pod.managed_fields_mut().clear())
        .reflect(writer)
        .touched_objects();
    let (synced_tx, pods_synced) = tokio::sync::watch::channel(false);
    tokio::spawn({
        let pods = pods.clone();
        async move {
            // On error (the writer is gone) the sender drops and reconciles fail.
            if pods.wait_until_ready().await.is_ok() {
                synced_tx.send_replace(true);
                synced_tx.closed().await;
            }
        }
    });
    let ctx = Arc::new(Context {
        client: client.clone(),
        pods,
        pods_synced,
        recorder: Recorder::new(client.clone(), Reporter::from(MANAGER)),
        metrics,
    });

    Controller::new(Api::<PodRequest>::all(client), watcher::Config::default())
        .owns_stream(pod_changes)
        .with_config(runtime::Config::default().concurrency(cli.concurrency))
        .shutdown_on_signal()
        .run(controller::reconcile, controller::error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((object, _)) => tracing::debug!(podrequest = %object, "reconciled"),
                // Logged by the error policy.
                Err(runtime::Error::ReconcilerFailed(..)) => {}
                Err(error) => tracing::warn!(%error, "controller"),
            }
        })
        .await;
    tracing::info!("stopped");
    Ok(())
}

async fn serve_metrics(listener: TcpListener, metrics: Arc<Metrics>) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(error) => {
                tracing::warn!(%error, "accepting a metrics connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request: Request<Incoming>| {
                let response = respond(&request, &metrics);
                async move { Ok::<_, Infallible>(response) }
            });
            if let Err(error) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(%error, "metrics connection");
            }
        });
    }
}

fn respond(request: &Request<Incoming>, metrics: &Metrics) -> Response<Full<Bytes>> {
    if request.method() == Method::GET && request.uri().path() == "/metrics" {
        let mut response = Response::new(Full::from(metrics.render()));
        response.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static(metrics::CONTENT_TYPE),
        );
        response
    } else {
        let mut response = Response::new(Full::from("not found\n"));
        *response.status_mut() = StatusCode::NOT_FOUND;
        response
    }
}
