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

/// A port nothing listens on.
pub fn closed_port_url() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    format!("http://{addr}")
}
