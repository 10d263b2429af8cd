//! Starting and stopping a sink on listeners the caller bound, so tests and
//! embedders can use port 0 and read the bound address back.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use trace_proto::stats::SinkStats;

use crate::config::SinkConfig;
use crate::k8s::{K8sConfig, PodResolver};
use crate::net::{Acceptor, serve_http};
use crate::state::Shared;

/// Builds a sink from a config and up to three listeners.
pub struct SinkBuilder {
    config: SinkConfig,
    grpc: Option<TcpListener>,
    http: Option<TcpListener>,
    api: Option<TcpListener>,
    pods: Option<PodResolver>,
    watch: Option<(kube::Client, K8sConfig)>,
}

impl SinkBuilder {
    /// A builder with no listener yet.
    pub fn new(config: SinkConfig) -> Self {
        SinkBuilder {
            config,
            grpc: None,
            http: None,
            api: None,
            pods: None,
            watch: None,
        }
    }

    /// Kubernetes attribution (`--k8s-attribution`): the sink watches Pods
    /// with `client` as `settings` say, for as long as it runs, and attributes
    /// each request to the node of the Pod at its peer address as well.
    pub fn kubernetes(mut self, client: kube::Client, settings: K8sConfig) -> Self {
        self.pods = Some(PodResolver::new(settings.max_pods));
        self.watch = Some((client, settings));
        self
    }

    /// Peer attribution with a resolver the caller keeps current itself (with
    /// [`crate::k8s::watch::spawn`], or by hand in tests).
    pub fn pod_resolver(mut self, pods: PodResolver) -> Self {
        self.pods = Some(pods);
        self.watch = None;
        self
    }

    /// Serve OTLP/gRPC on this listener.
    pub fn grpc(mut self, l: TcpListener) -> Self {
        self.grpc = Some(l);
        self
    }

    /// Serve OTLP/HTTP on this listener.
    pub fn http(mut self, l: TcpListener) -> Self {
        self.http = Some(l);
        self
    }

    /// Serve the HTTP API on this listener.
    pub fn api(mut self, l: TcpListener) -> Self {
        self.api = Some(l);
        self
    }

    /// Starts serving on the current tokio runtime.
    pub fn start(self) -> io::Result<SinkHandle> {
        let shared = Arc::new(Shared::new(self.config, self.pods.clone()));
        let cancel = CancellationToken::new();
        let mut tasks = JoinSet::new();
        if let (Some((client, settings)), Some(pods)) = (self.watch, self.pods) {
            tasks.spawn(crate::k8s::watch::watch(
                client,
                &settings,
                pods,
                cancel.clone(),
            ));
        }
        let addr = |l: &Option<TcpListener>| l.as_ref().map(TcpListener::local_addr).transpose();
        let (grpc_addr, http_addr, api_addr) =
            (addr(&self.grpc)?, addr(&self.http)?, addr(&self.api)?);
        let mut limits = shared.config.transport.clone();
        let listeners = [&self.grpc, &self.http, &self.api]
            .iter()
            .filter(|l| l.is_some())
            .count();
        let nofile = crate::net::descriptor_limit();
        let fitted = crate::net::fit_to_descriptors(limits.max_connections, listeners, nofile);
        if fitted < limits.max_connections {
            tracing::warn!(
                "the file limit (RLIMIT_NOFILE {}) holds {fitted} connections per listener, not --max-connections {}: using {fitted}",
                nofile.unwrap_or_default(),
                limits.max_connections
            );
            limits.max_connections = fitted;
        }
        let acceptor =
            |l: TcpListener, name| Acceptor::new(l, &limits, shared.metrics.clone(), name);
        if let Some(l) = self.grpc {
            let (acceptor, shared, cancel) = (acceptor(l, "grpc"), shared.clone(), cancel.clone());
            tasks.spawn(async move {
                if let Err(e) = crate::receiver::grpc::serve(acceptor, shared.clone(), cancel).await
                {
                    tracing::error!("OTLP/gRPC receiver stopped: {e}");
                    shared.ready.store(false, Ordering::Relaxed);
                }
            });
        }
        if let Some(l) = self.http {
            let app = crate::receiver::http::router(shared.clone());
            tasks.spawn(serve_http(
                acceptor(l, "http"),
                app,
                limits.clone(),
                cancel.clone(),
            ));
        }
        if let Some(l) = self.api {
            let app = crate::api::router(shared.clone());
            tasks.spawn(serve_http(
                acceptor(l, "api"),
                app,
                limits.clone(),
                cancel.clone(),
            ));
        }
        shared.ready.store(true, Ordering::Relaxed);
        Ok(SinkHandle {
            grpc_addr,
            http_addr,
            api_addr,
            shared,
            cancel,
            tasks,
        })
    }
}

/// A running sink.
pub struct SinkHandle {
    grpc_addr: Option<SocketAddr>,
    http_addr: Option<SocketAddr>,
    api_addr: Option<SocketAddr>,
    shared: Arc<Shared>,
    cancel: CancellationToken,
    tasks: JoinSet<()>,
}

impl SinkHandle {
    /// Bound OTLP/gRPC address.
    pub fn grpc_addr(&self) -> Option<SocketAddr> {
        self.grpc_addr
    }

    /// Bound OTLP/HTTP address.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addr
    }

    /// Bound API address.
    pub fn api_addr(&self) -> Option<SocketAddr> {
        self.api_addr
    }

    /// The Pod resolver of Kubernetes attribution, if on (its status is what
    /// `/readyz` and `/stats` report).
    pub fn pod_resolver(&self) -> Option<&PodResolver> {
        self.shared.ingest.pods()
    }

    /// The current numbers, as `GET /stats` shows them.
    pub fn stats(&self) -> SinkStats {
        self.shared.ingest.snapshot()
    }

    /// Zeroes the numbers and returns them as they were, as `POST /reset` does.
    pub fn reset(&self) -> SinkStats {
        self.shared.ingest.reset()
    }

    /// The Prometheus exposition, as `GET /metrics` shows it.
    pub fn metrics_text(&self) -> String {
        self.shared.metrics.encode()
    }

    /// Stops accepting, lets open requests finish (at most `grace`), and
    /// returns the final numbers: every span acknowledged before or during
    /// the drain is in them.
    pub async fn shutdown_within(mut self, grace: Duration) -> SinkStats {
        self.shared.ready.store(false, Ordering::Relaxed);
        self.cancel.cancel();
        let drain = async { while self.tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(grace, drain).await.is_err() {
            tracing::warn!("connections still open after {grace:?}; closing them");
            self.tasks.abort_all();
            while self.tasks.join_next().await.is_some() {}
        }
        self.shared.ingest.snapshot()
    }

    /// [`SinkHandle::shutdown_within`] with a 10 s grace period.
    pub async fn shutdown(self) -> SinkStats {
        self.shutdown_within(Duration::from_secs(10)).await
    }
}
