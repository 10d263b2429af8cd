//! Helpers shared by the sink's integration tests: an in-process sink on port 0
//! and request builders.
#![allow(dead_code)]

use std::io::Write;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use prost::Message;
use tokio::net::TcpListener;
use trace_proto::keys;
use trace_proto::otlp::{ExportTraceServiceRequest, KeyValue, kv_str};
use trace_proto::span::build_request_with_seqs;
use trace_sink::{SinkBuilder, SinkConfig, SinkHandle};

pub async fn start(config: SinkConfig) -> SinkHandle {
    let l = || TcpListener::bind("127.0.0.1:0");
    SinkBuilder::new(config)
        .grpc(l().await.unwrap())
        .http(l().await.unwrap())
        .api(l().await.unwrap())
        .start()
        .unwrap()
}

pub async fn start_default() -> SinkHandle {
    start(SinkConfig::default()).await
}

/// Resource attributes of a generator on `gen_node` forwarded by an agent on `agent_node`.
pub fn resource(gen_node: Option<&str>, agent_node: Option<&str>, id: &str) -> Vec<KeyValue> {
    let mut v = vec![kv_str(keys::GENERATOR_ID, id)];
    if let Some(g) = gen_node {
        v.push(kv_str(keys::GENERATOR_NODE, g));
    }
    if let Some(a) = agent_node {
        v.push(kv_str(keys::AGENT_NODE, a));
    }
    v
}

pub fn request(
    gen_node: Option<&str>,
    agent_node: Option<&str>,
    id: &str,
    seqs: impl IntoIterator<Item = u64>,
) -> ExportTraceServiceRequest {
    build_request_with_seqs(&resource(gen_node, agent_node, id), seqs)
}

pub async fn grpc_client(sink: &SinkHandle) -> TraceServiceClient<tonic::transport::Channel> {
    grpc_client_at(sink.grpc_addr().unwrap()).await
}

pub async fn grpc_client_at(
    addr: std::net::SocketAddr,
) -> TraceServiceClient<tonic::transport::Channel> {
    TraceServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap()
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

pub fn traces_url(sink: &SinkHandle) -> String {
    format!("http://{}/v1/traces", sink.http_addr().unwrap())
}

pub fn api_url(sink: &SinkHandle, path: &str) -> String {
    format!("http://{}{}", sink.api_addr().unwrap(), path)
}

pub async fn post_protobuf(
    sink: &SinkHandle,
    req: &ExportTraceServiceRequest,
    gz: bool,
) -> reqwest::Response {
    let mut body = req.encode_to_vec();
    let mut b = reqwest::Client::new()
        .post(traces_url(sink))
        .header("content-type", "application/x-protobuf");
    if gz {
        body = gzip(&body);
        b = b.header("content-encoding", "gzip");
    }
    b.body(body).send().await.unwrap()
}

pub async fn post_json(
    sink: &SinkHandle,
    req: &ExportTraceServiceRequest,
    gz: bool,
) -> reqwest::Response {
    let mut body = serde_json::to_vec(req).unwrap();
    let mut b = reqwest::Client::new()
        .post(traces_url(sink))
        .header("content-type", "application/json");
    if gz {
        body = gzip(&body);
        b = b.header("content-encoding", "gzip");
    }
    b.body(body).send().await.unwrap()
}
