//! Bad input gets the documented status, the sink keeps serving, and nothing
//! already counted is lost.

mod common;

use bytes::{Buf, BufMut};
use common::*;
use prost::Message;
use tonic::codec::{CompressionEncoding, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::{Code, Status};

const MAX: usize = 1024 * 1024;

async fn sink_with_traffic() -> trace_sink::SinkHandle {
    let sink = start(trace_sink::SinkConfig {
        max_request_bytes: MAX,
        ..Default::default()
    })
    .await;
    grpc_client(&sink)
        .await
        .export(request(Some("n"), Some("n"), "g", 1..=5))
        .await
        .unwrap();
    sink
}

/// After the bad requests: the good client's 5 spans are still there, and the
/// sink still accepts.
async fn assert_unharmed(sink: &trace_sink::SinkHandle) {
    let s = sink.stats();
    assert_eq!((s.spans_total, s.local_spans), (5, 5));
    assert_eq!(s.generators[0].missing, 0);
    grpc_client(sink)
        .await
        .export(request(Some("n"), Some("n"), "g", 6..=6))
        .await
        .unwrap();
    assert_eq!(
        post_protobuf(sink, &request(Some("n"), Some("n"), "g", 7..=7), false)
            .await
            .status(),
        200
    );
    assert_eq!(sink.stats().spans_total, 7);
}

async fn post(
    sink: &trace_sink::SinkHandle,
    ct: &str,
    enc: Option<&str>,
    body: Vec<u8>,
) -> reqwest::Response {
    let mut b = reqwest::Client::new()
        .post(traces_url(sink))
        .header("content-type", ct);
    if let Some(e) = enc {
        b = b.header("content-encoding", e);
    }
    b.body(body).send().await.unwrap()
}

use trace_sink::receiver::http::RpcStatus;

/// Truncated protobuf: 400 with a google.rpc.Status in protobuf.
#[tokio::test]
async fn http_truncated_protobuf() {
    let sink = sink_with_traffic().await;
    let mut body = request(Some("x"), Some("x"), "bad", 1..=3).encode_to_vec();
    body.truncate(body.len() - 7);
    let resp = post(&sink, "application/x-protobuf", None, body).await;
    assert_eq!(resp.status(), 400);
    assert_eq!(resp.headers()["content-type"], "application/x-protobuf");
    let st = RpcStatus::decode(resp.bytes().await.unwrap()).unwrap();
    assert_eq!(st.code, Code::InvalidArgument as i32);
    assert!(
        st.message.contains("invalid OTLP protobuf"),
        "{}",
        st.message
    );
    assert_eq!(sink.stats().requests["http_protobuf"]["bad_request"], 1);
    assert_unharmed(&sink).await;
}

/// Invalid JSON: 400 with a JSON status.
#[tokio::test]
async fn http_invalid_json() {
    let sink = sink_with_traffic().await;
    let resp = post(
        &sink,
        "application/json",
        None,
        b"{\"resourceSpans\": [".to_vec(),
    )
    .await;
    assert_eq!(resp.status(), 400);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let v: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(v["code"], Code::InvalidArgument as i32);
    assert!(v["message"].as_str().unwrap().contains("invalid OTLP/JSON"));
    assert_unharmed(&sink).await;
}

/// Wrong content type and unknown content encoding: 415.
#[tokio::test]
async fn http_unsupported_media() {
    let sink = sink_with_traffic().await;
    let resp = post(&sink, "text/plain", None, b"hello".to_vec()).await;
    assert_eq!(resp.status(), 415);
    assert!(
        resp.text()
            .await
            .unwrap()
            .contains("unsupported Content-Type")
    );
    let resp = post(&sink, "application/json", Some("br"), b"{}".to_vec()).await;
    assert_eq!(resp.status(), 415);
    assert_eq!(sink.stats().requests["http"]["unsupported_media_type"], 1);
    assert_unharmed(&sink).await;
}

/// A body over --max-request-bytes: 413.
#[tokio::test]
async fn http_oversize() {
    let sink = sink_with_traffic().await;
    let resp = post(&sink, "application/x-protobuf", None, vec![0u8; MAX + 1]).await;
    assert_eq!(resp.status(), 413);
    let st = RpcStatus::decode(resp.bytes().await.unwrap()).unwrap();
    assert_eq!(st.code, Code::ResourceExhausted as i32);
    assert_eq!(sink.stats().requests["http_protobuf"]["too_large"], 1);
    assert_unharmed(&sink).await;
}

/// A gzip bomb (64 MiB of zeros in ~64 KiB) is cut off at the limit: 413, not inflated.
#[tokio::test]
async fn http_gzip_bomb() {
    let sink = sink_with_traffic().await;
    let bomb = gzip(&vec![0u8; 64 * 1024 * 1024]);
    assert!(bomb.len() < MAX);
    let resp = post(&sink, "application/x-protobuf", Some("gzip"), bomb).await;
    assert_eq!(resp.status(), 413);
    let st = RpcStatus::decode(resp.bytes().await.unwrap()).unwrap();
    assert!(st.message.contains("decompressed"), "{}", st.message);
    let resp = post(
        &sink,
        "application/json",
        Some("gzip"),
        b"not gzip".to_vec(),
    )
    .await;
    assert_eq!(resp.status(), 400);
    assert_unharmed(&sink).await;
}

/// Wrong method: 405 with Allow: POST; unknown path: 404.
#[tokio::test]
async fn http_wrong_method_and_path() {
    let sink = sink_with_traffic().await;
    let resp = reqwest::get(traces_url(&sink)).await.unwrap();
    assert_eq!(resp.status(), 405);
    assert_eq!(resp.headers()["allow"], "POST");
    let resp = reqwest::Client::new()
        .put(traces_url(&sink))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 405);
    let url = traces_url(&sink).replace("/v1/traces", "/v1/metrics");
    let resp = reqwest::Client::new()
        .post(url)
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    assert_eq!(sink.stats().requests["http"]["method_not_allowed"], 2);
    assert_eq!(sink.stats().requests["http"]["not_found"], 1);
    assert_unharmed(&sink).await;
}

/// Sends raw bytes as the gRPC message, so tests can send what no generated client would.
#[derive(Clone, Copy, Default)]
struct RawCodec;

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;
    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }
    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        let v = src.chunk().to_vec();
        src.advance(v.len());
        Ok(Some(v))
    }
}

async fn grpc_raw(
    sink: &trace_sink::SinkHandle,
    body: Vec<u8>,
    gz: bool,
) -> Result<Vec<u8>, Status> {
    let channel =
        tonic::transport::Endpoint::from_shared(format!("http://{}", sink.grpc_addr().unwrap()))
            .unwrap()
            .connect()
            .await
            .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    if gz {
        grpc = grpc.send_compressed(CompressionEncoding::Gzip);
    }
    grpc.ready().await.unwrap();
    grpc.unary(
        tonic::Request::new(body),
        http::uri::PathAndQuery::from_static(
            "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
        ),
        RawCodec,
    )
    .await
    .map(|r| r.into_inner())
}

/// gRPC: truncated message -> INVALID_ARGUMENT; oversize -> RESOURCE_EXHAUSTED;
/// gzip bomb -> RESOURCE_EXHAUSTED. The sink keeps serving.
#[tokio::test]
async fn grpc_bad_input() {
    let sink = sink_with_traffic().await;
    let mut body = request(Some("x"), Some("x"), "bad", 1..=3).encode_to_vec();
    body.truncate(body.len() - 7);
    let err = grpc_raw(&sink, body, false).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");

    let err = grpc_raw(&sink, vec![0u8; MAX + 1], false)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");

    let err = grpc_raw(&sink, vec![0u8; 64 * 1024 * 1024], true)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");

    // A valid raw message goes through the same path.
    let ok = request(Some("n"), Some("n"), "other", 1..=2).encode_to_vec();
    grpc_raw(&sink, ok, true).await.unwrap();
    let s = sink.stats();
    assert_eq!(s.requests["grpc"]["bad_request"], 1);
    assert_eq!(s.requests["grpc"]["too_large"], 2);
    assert_eq!(s.spans_total, 7);
    sink.reset();
    grpc_client(&sink)
        .await
        .export(request(Some("n"), Some("n"), "g", 1..=5))
        .await
        .unwrap();
    assert_unharmed(&sink).await;
}

/// More elements than --max-request-elements: 413 / RESOURCE_EXHAUSTED before
/// decoding, on every encoding; a request within the limit still passes.
#[tokio::test]
async fn too_many_elements() {
    let sink = start(trace_sink::SinkConfig {
        max_request_elements: 1000,
        ..Default::default()
    })
    .await;
    let big = request(Some("n"), Some("n"), "g", 1..=600); // 600 spans + 600 attributes + ...
    let small = request(Some("n"), Some("n"), "g", 1..=100);
    let resp = post_protobuf(&sink, &big, false).await;
    assert_eq!(resp.status(), 413);
    let st = RpcStatus::decode(resp.bytes().await.unwrap()).unwrap();
    assert!(
        st.message.contains("--max-request-elements"),
        "{}",
        st.message
    );
    assert_eq!(post_json(&sink, &big, true).await.status(), 413);
    let err = grpc_client(&sink)
        .await
        .export(big.clone())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    // Millions of empty spans in a small body: rejected without being materialized.
    let empty_spans: Vec<u8> = {
        let span = [0x12u8, 0x00];
        let mut scope = Vec::new();
        for _ in 0..100_000 {
            scope.extend_from_slice(&span);
        }
        let mut rs = vec![0x12];
        prost::encoding::encode_varint(scope.len() as u64, &mut rs);
        rs.extend(scope);
        let mut req = vec![0x0a];
        prost::encoding::encode_varint(rs.len() as u64, &mut req);
        req.extend(rs);
        req
    };
    assert_eq!(
        post(&sink, "application/x-protobuf", None, empty_spans)
            .await
            .status(),
        413
    );
    assert_eq!(
        post(&sink, "application/json", None, b"[]".to_vec())
            .await
            .status(),
        400
    );
    assert_eq!(post_protobuf(&sink, &small, false).await.status(), 200);
    let s = sink.stats();
    assert_eq!(s.spans_total, 100);
    assert_eq!(s.requests["http_protobuf"]["too_large"], 2);
    assert_eq!(s.requests["grpc"]["too_large"], 1);
    sink.shutdown().await;
}

/// A client that sends headers and never the body gets 408 after
/// --request-timeout and frees its slot: others are served again.
#[tokio::test]
async fn stalled_client_frees_its_slot() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let sink = start(trace_sink::SinkConfig {
        max_concurrent_requests: 1,
        request_timeout: std::time::Duration::from_millis(300),
        ..Default::default()
    })
    .await;
    let mut stalled = tokio::net::TcpStream::connect(sink.http_addr().unwrap())
        .await
        .unwrap();
    stalled
        .write_all(b"POST /v1/traces HTTP/1.1\r\nhost: x\r\ncontent-type: application/x-protobuf\r\ncontent-length: 10\r\n\r\n")
        .await
        .unwrap();
    // The only slot is held by the stalled request; this one waits, then passes.
    let resp = post_protobuf(&sink, &request(Some("n"), Some("n"), "g", 1..=2), false).await;
    assert_eq!(resp.status(), 200);
    let mut answer = vec![0u8; 64];
    let n = stalled.read(&mut answer).await.unwrap();
    assert!(
        String::from_utf8_lossy(&answer[..n]).starts_with("HTTP/1.1 408"),
        "{:?}",
        String::from_utf8_lossy(&answer[..n])
    );
    // gRPC is served too.
    grpc_client(&sink)
        .await
        .export(request(Some("n"), Some("n"), "g", 3..=3))
        .await
        .unwrap();
    let s = sink.stats();
    assert_eq!(s.spans_total, 3);
    assert_eq!(s.requests["http_protobuf"]["timeout"], 1);
    sink.shutdown().await;
}
