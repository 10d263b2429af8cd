//! Helpers for trace-gen's integration tests: in-process sinks and endpoints
//! that misbehave on purpose.
#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use trace_gen::GenConfig;
use trace_gen::config::{Endpoint, Protocol};
use trace_proto::otlp::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use trace_sink::{SinkBuilder, SinkConfig, SinkHandle};

pub async fn start_sink() -> SinkHandle {
    let l = || TcpListener::bind("127.0.0.1:0");
    SinkBuilder::new(SinkConfig::default())
        .grpc(l().await.unwrap())
        .http(l().await.unwrap())
        .api(l().await.unwrap())
        .start()
        .unwrap()
}

/// A config sending to `endpoint` quickly, without progress lines.
pub fn config(node: &str, endpoint: &str, protocol: Protocol) -> GenConfig {
    let mut c = GenConfig::new(node);
    c.exporter.protocol = protocol;
    c.exporter.endpoint = Endpoint::parse(endpoint).unwrap();
    if protocol.is_http() {
        c.exporter.endpoint = c.exporter.endpoint.with_default_traces_path();
    }
    c.rate = 0.0;
    c.report_interval = Duration::ZERO;
    c.exporter.timeout = Duration::from_secs(2);
    c.connect_timeout = Duration::from_secs(1);
    c
}

pub fn grpc_url(sink: &SinkHandle) -> String {
    format!("http://{}", sink.grpc_addr().unwrap())
}

pub fn http_url(sink: &SinkHandle) -> String {
    format!("http://{}", sink.http_addr().unwrap())
}

/// A gRPC endpoint that records requests and metadata and answers with `status` (None = OK).
#[derive(Clone)]
pub struct Recorder {
    pub requests: Arc<Mutex<Vec<(ExportTraceServiceRequest, tonic::metadata::MetadataMap)>>>,
    pub status: Option<tonic::Code>,
}

#[tonic::async_trait]
impl TraceService for Recorder {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let md = request.metadata().clone();
        self.requests
            .lock()
            .unwrap()
            .push((request.into_inner(), md));
        match self.status {
            None => Ok(tonic::Response::new(ExportTraceServiceResponse::default())),
            Some(code) => Err(tonic::Status::new(code, "told to fail")),
        }
    }
}

/// Starts a [`Recorder`]; returns its URL.
pub async fn start_recorder(status: Option<tonic::Code>) -> (String, Recorder) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    let rec = Recorder {
        requests: Arc::default(),
        status,
    };
    let svc = TraceServiceServer::new(rec.clone());
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming(TcpListenerStream::new(l)),
    );
    (url, rec)
}

/// An HTTP endpoint answering every request with `status`.
pub async fn start_http_status(status: u16) -> String {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    let app = axum::Router::new().fallback(move || async move {
        (
            axum::http::StatusCode::from_u16(status).unwrap(),
            "overloaded",
        )
    });
    tokio::spawn(async move { axum::serve(l, app).await });
    url
}

/// A listener that accepts connections and never answers.
pub async fn start_black_hole() -> String {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = l.accept().await {
            held.push(s);
        }
    });
    url
}

/// A port that refuses connections for as long as this value lives: a TCP
/// socket bound to it but never listening (Linux answers a connect to it with
/// RST, `ECONNREFUSED`). Held, the port cannot be taken by a parallel test,
/// as a port that was bound and dropped could be.
pub struct ClosedPort {
    socket: socket2::Socket,
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    /// The address.
    pub addr: std::net::SocketAddr,
}

impl ClosedPort {
    /// Starts listening on the same port (the endpoint comes back): the
    /// port was never free in between.
    pub fn listen(self) -> TcpListener {
        self.socket.listen(1024).unwrap();
        self.socket.set_nonblocking(true).unwrap();
        TcpListener::from_std(std::net::TcpListener::from(self.socket)).unwrap()
    }
}

/// Waits until `f` returns `Some` (checked every 10 ms), at most `within`;
/// panics naming `what` if it never does. For waiting on an event that has no
/// notification of its own, instead of sleeping a guessed time.
pub async fn eventually<T>(what: &str, within: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let end = tokio::time::Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < end,
            "{what}: not within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A [`ClosedPort`] on loopback.
pub fn closed_port() -> ClosedPort {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    s.bind(&std::net::SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .unwrap();
    let addr = s.local_addr().unwrap().as_socket().unwrap();
    ClosedPort {
        socket: s,
        url: format!("http://{addr}"),
        addr,
    }
}

/// One request a [`MemoryEndpoint`] received: when (on tokio's clock) and how
/// many spans.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arrival {
    pub at: tokio::time::Instant,
    pub spans: u64,
}

/// An in-memory OTLP endpoint for [`trace_gen::Generator::with_transport`]:
/// records every request and accepts it, the `n`th (from 0) after `delay(n)`
/// on tokio's clock. No socket, so tests can run on tokio's paused clock,
/// where time moves only when every task waits for a timer.
#[derive(Clone)]
pub struct MemoryEndpoint {
    pub arrivals: Arc<Mutex<Vec<Arrival>>>,
    delay: Arc<dyn Fn(usize) -> Duration + Send + Sync>,
}

impl MemoryEndpoint {
    pub fn new(delay: impl Fn(usize) -> Duration + Send + Sync + 'static) -> Self {
        MemoryEndpoint {
            arrivals: Arc::default(),
            delay: Arc::new(delay),
        }
    }

    /// Answers at once.
    pub fn immediate() -> Self {
        Self::new(|_| Duration::ZERO)
    }

    pub fn spans(&self) -> u64 {
        self.arrivals.lock().unwrap().iter().map(|a| a.spans).sum()
    }

    pub fn arrivals(&self) -> Vec<Arrival> {
        self.arrivals.lock().unwrap().clone()
    }
}

impl trace_gen::run::Transport for MemoryEndpoint {
    fn export(&self, req: bytes::Bytes, _timeout: Duration) -> trace_gen::run::ExportFuture {
        use prost::Message;
        let req = ExportTraceServiceRequest::decode(req).unwrap();
        let spans = req
            .resource_spans
            .iter()
            .flat_map(|rs| &rs.scope_spans)
            .map(|ss| ss.spans.len() as u64)
            .sum();
        let n = {
            let mut a = self.arrivals.lock().unwrap();
            a.push(Arrival {
                at: tokio::time::Instant::now(),
                spans,
            });
            a.len() - 1
        };
        let delay = (self.delay)(n);
        Box::pin(async move {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            Ok(trace_gen::transport::Accepted::default())
        })
    }
}
