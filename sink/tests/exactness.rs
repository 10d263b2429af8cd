//! issue 9, "no OK for a request whose spans were not all counted": every
//! request is either counted whole, as the reference receivers read it, or
//! refused with the reference's status. Over real sockets, in process.

mod common;

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};
use prost::Message;
use tonic::Code;
use trace_proto::otlp::{AnyValue, ExportTraceServiceRequest, KeyValue, Value};

const EXPORT: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// One gRPC frame: the compressed flag, the length, the bytes.
fn frame(compressed: bool, message: &[u8]) -> Vec<u8> {
    let mut f = vec![u8::from(compressed)];
    f.extend_from_slice(&(message.len() as u32).to_be_bytes());
    f.extend_from_slice(message);
    f
}

/// Sends `body` as the raw body of a unary `Export` call over HTTP/2 (so the
/// test can send what no gRPC client library sends) and returns the
/// `grpc-status` code and message.
async fn grpc_call(
    sink: &trace_sink::SinkHandle,
    encoding: Option<&str>,
    body: Vec<u8>,
) -> (Code, String) {
    let tcp = tokio::net::TcpStream::connect(sink.grpc_addr().unwrap())
        .await
        .unwrap();
    let (mut send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let mut req = http::Request::post(format!("http://{}{EXPORT}", sink.grpc_addr().unwrap()))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    if let Some(e) = encoding {
        req = req.header("grpc-encoding", e);
    }
    let resp = send
        .send_request(req.body(Full::new(Bytes::from(body))).unwrap())
        .await
        .unwrap();
    let mut headers = resp.headers().clone();
    let collected = resp.into_body().collect().await.unwrap();
    if let Some(trailers) = collected.trailers() {
        headers.extend(trailers.clone());
    }
    let code = headers["grpc-status"]
        .to_str()
        .unwrap()
        .parse::<i32>()
        .unwrap();
    let message = headers
        .get("grpc-message")
        .map(|m| m.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (Code::from_i32(code), message)
}

/// issue 9: a gzip message of two members is read whole over gRPC (as grpc-go
/// and the HTTP receiver read it): both members' spans are counted. Old main
/// answered OK and counted the first member only.
#[tokio::test]
async fn grpc_gzip_members_are_all_counted() {
    let sink = start_default().await;
    let first = request(Some("n"), Some("n"), "g", 1..=3).encode_to_vec();
    let second = request(Some("n"), Some("n"), "g", 4..=5).encode_to_vec();
    let two_members = [gzip(&first), gzip(&second)].concat();
    let (code, msg) = grpc_call(&sink, Some("gzip"), frame(true, &two_members)).await;
    assert_eq!(code, Code::Ok, "{msg}");
    let s = sink.stats();
    assert_eq!(s.spans_total, 5);
    assert_eq!(s.generators[0].missing, 0);
    assert_eq!(s.generators[0].max_seq, Some(5));
    assert_eq!(s.requests["grpc"]["ok"], 1);
    // The HTTP receiver reads the same body the same way.
    let third = request(Some("n"), Some("n"), "g", 6..=7).encode_to_vec();
    let fourth = request(Some("n"), Some("n"), "g", 8..=9).encode_to_vec();
    let resp = reqwest::Client::new()
        .post(traces_url(&sink))
        .header("content-type", "application/x-protobuf")
        .header("content-encoding", "gzip")
        .body([gzip(&third), gzip(&fourth)].concat())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(sink.stats().spans_total, 9);
    // A second member that is not gzip: the whole request is refused, on both.
    let bad = [gzip(&first), b"not gzip".to_vec()].concat();
    let (code, msg) = grpc_call(&sink, Some("gzip"), frame(true, &bad)).await;
    assert_eq!(code, Code::InvalidArgument, "{msg}");
    let resp = reqwest::Client::new()
        .post(traces_url(&sink))
        .header("content-type", "application/x-protobuf")
        .header("content-encoding", "gzip")
        .body(bad)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let s = sink.stats();
    assert_eq!(s.spans_total, 9);
    assert_eq!(s.requests["grpc"]["bad_request"], 1);
    sink.shutdown().await;
}

/// issue 9: a unary call carrying two messages is a protocol error: `INTERNAL`
/// "cardinality violation", as grpc-go (the Collector's gRPC) answers it, and
/// nothing of it is counted. Old main answered OK and counted the first
/// message only. No message at all is the same violation.
#[tokio::test]
async fn grpc_unary_call_with_two_messages_is_refused() {
    let sink = start_default().await;
    let first = request(Some("n"), Some("n"), "g", 1..=3).encode_to_vec();
    let second = request(Some("n"), Some("n"), "g", 4..=5).encode_to_vec();
    let body = [frame(false, &first), frame(false, &second)].concat();
    let (code, msg) = grpc_call(&sink, None, body).await;
    assert_eq!(code, Code::Internal, "{msg}");
    assert!(msg.contains("cardinality%20violation"), "{msg}"); // percent-encoded
    // The second message compressed: the same.
    let body = [frame(false, &first), frame(true, &gzip(&second))].concat();
    let (code, _) = grpc_call(&sink, Some("gzip"), body).await;
    assert_eq!(code, Code::Internal);
    // An empty second message: still two messages.
    let (code, _) = grpc_call(
        &sink,
        None,
        [frame(false, &first), frame(false, &[])].concat(),
    )
    .await;
    assert_eq!(code, Code::Internal);
    let (code, msg) = grpc_call(&sink, None, Vec::new()).await;
    assert_eq!(code, Code::Internal, "{msg}");
    // Cut off, a bad flag, compressed without an encoding: INVALID_ARGUMENT.
    let mut cut = frame(false, &first);
    cut.pop();
    assert_eq!(grpc_call(&sink, None, cut).await.0, Code::InvalidArgument);
    let mut flag = frame(false, &first);
    flag[0] = 2;
    assert_eq!(grpc_call(&sink, None, flag).await.0, Code::InvalidArgument);
    assert_eq!(
        grpc_call(&sink, None, frame(true, &gzip(&first))).await.0,
        Code::InvalidArgument
    );
    assert_eq!(
        grpc_call(&sink, Some("br"), frame(true, &first)).await.0,
        Code::Unimplemented
    );
    let s = sink.stats();
    assert_eq!(s.spans_total, 0);
    assert_eq!(s.requests["grpc"]["bad_request"], 7);
    assert_eq!(s.requests["grpc"]["unimplemented"], 1);
    // One message, plain or gzip: counted.
    assert_eq!(
        grpc_call(&sink, None, frame(false, &first)).await.0,
        Code::Ok
    );
    let (code, _) = grpc_call(&sink, Some("gzip"), frame(true, &gzip(&second))).await;
    assert_eq!(code, Code::Ok);
    assert_eq!(sink.stats().spans_total, 5);
    assert_eq!(sink.stats().generators[0].missing, 0);
    sink.shutdown().await;
}

async fn post_json_str(sink: &trace_sink::SinkHandle, body: String) -> reqwest::Response {
    reqwest::Client::new()
        .post(traces_url(sink))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap()
}

/// issue 9: OTLP/JSON with arrays in place of objects went around
/// `--max-request-elements` (which counts objects) and was counted. OTLP/JSON
/// messages are objects: such a body is refused (400) and nothing counted.
#[tokio::test]
async fn json_arrays_in_place_of_objects_are_refused() {
    let sink = start(trace_sink::SinkConfig {
        max_request_elements: 1000,
        ..Default::default()
    })
    .await;
    // 5000 spans written as `[]`: 3 objects in all.
    let spans = vec!["[]"; 5000].join(",");
    let body = format!(r#"{{"resourceSpans":[{{"scopeSpans":[{{"spans":[{spans}]}}]}}]}}"#);
    let resp = post_json_str(&sink, body).await;
    assert_eq!(resp.status(), 400);
    let err: serde_json::Value = resp.json().await.unwrap();
    assert!(
        err["message"].as_str().unwrap().contains("expected struct"),
        "{err}"
    );
    // Every message position.
    for body in [
        r#"{"resourceSpans":[[null,[[[[]]]]]]}"#,
        r#"{"resourceSpans":[{"resource":[[]]}]}"#,
        r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"attributes":[["k",{"stringValue":"v"}]]}]}]}]}"#,
        r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"attributes":[{"key":"k","value":["v"]}]}]}]}]}"#,
    ] {
        assert_eq!(
            post_json_str(&sink, body.into()).await.status(),
            400,
            "{body}"
        );
    }
    let s = sink.stats();
    assert_eq!(s.spans_total, 0);
    assert_eq!(s.requests["http_json"]["bad_request"], 5);
    // The object form of the same spans is counted against the limit: 413.
    let spans = vec!["{}"; 5000].join(",");
    let body = format!(r#"{{"resourceSpans":[{{"scopeSpans":[{{"spans":[{spans}]}}]}}]}}"#);
    assert_eq!(post_json_str(&sink, body).await.status(), 413);
    sink.shutdown().await;
}

/// issue 9: proto3 JSON reads `null` as the field's default; a `null` list is
/// empty and the rest of the request is counted. Old main refused the whole
/// request (400).
#[tokio::test]
async fn json_null_lists_read_as_empty() {
    let sink = start_default().await;
    let body = r#"{"resourceSpans":[
        {"resource":{"attributes":[
            {"key":"k8s.node.name","value":{"stringValue":"n"}},
            {"key":"agent.node.name","value":{"stringValue":"n"}},
            {"key":"tracegen.generator.id","value":{"stringValue":"g"}},
            {"key":"x","value":null}]},
         "scopeSpans":[{"spans":null},{"scope":null,"spans":[
            {"attributes":[{"key":"tracegen.seq","value":{"intValue":"1"}}]},
            {"attributes":[{"key":"tracegen.seq","value":{"intValue":2}}],"events":null},
            {"attributes":null}]}]},
        {"resource":null,"scopeSpans":null}]}"#;
    let resp = post_json_str(&sink, body.into()).await;
    assert_eq!(resp.status(), 200);
    let s = sink.stats();
    assert_eq!((s.spans_total, s.local_spans), (3, 3));
    assert_eq!(s.generators[0].max_seq, Some(2));
    assert_eq!(
        post_json_str(&sink, r#"{"resourceSpans":null}"#.into())
            .await
            .status(),
        200
    );
    sink.shutdown().await;
}

/// A resource `KeyValue` whose value is `value` (raw `AnyValue` bytes).
fn raw_attribute(key: &str, value: &[u8]) -> Vec<u8> {
    let mut kv = Vec::new();
    prost::encoding::string::encode(1, &key.to_owned(), &mut kv);
    prost::encoding::bytes::encode(2, &value.to_vec(), &mut kv);
    kv
}

/// issue 9: an attribute value carrying two oneof members is read as the last
/// one, as the reference decoders read it (prost for protobuf,
/// `opentelemetry-proto` and the Collector for JSON). Old main read the string
/// even when a bool (protobuf) or an int (JSON) came after it.
#[tokio::test]
async fn any_value_with_two_members_reads_the_last() {
    let sink = start_default().await;
    // Protobuf: the agent node is "n" then `true`: not a string, so the agent
    // node is unknown, as opentelemetry-proto reads it.
    let req = request(Some("n"), None, "g", 1..=2);
    let agent = raw_attribute(
        trace_proto::keys::AGENT_NODE,
        &[&[0x0a, 0x01, b'n'][..], &[0x10, 0x01]].concat(),
    );
    // The request with one more resource attribute, the raw one.
    let rs = &req.resource_spans[0];
    let mut res_bytes = rs.resource.as_ref().unwrap().encode_to_vec();
    prost::encoding::bytes::encode(1, &agent, &mut res_bytes);
    let mut rs_bytes = Vec::new();
    prost::encoding::bytes::encode(1, &res_bytes, &mut rs_bytes);
    for ss in &rs.scope_spans {
        prost::encoding::message::encode(2, ss, &mut rs_bytes);
    }
    let mut bytes = Vec::new();
    prost::encoding::bytes::encode(1, &rs_bytes, &mut bytes);
    let full = ExportTraceServiceRequest::decode(bytes.as_slice()).unwrap();
    let attrs = &full.resource_spans[0].resource.as_ref().unwrap().attributes;
    assert!(matches!(
        attrs.last().unwrap().value,
        Some(AnyValue {
            value: Some(Value::BoolValue(true))
        })
    ));
    let resp = reqwest::Client::new()
        .post(traces_url(&sink))
        .header("content-type", "application/x-protobuf")
        .body(bytes)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let s = sink.stats();
    assert_eq!(
        (s.spans_total, s.unattributed_spans, s.local_spans),
        (2, 2, 0)
    );

    // JSON: the sequence number is "x" then 7: read as 7.
    sink.reset();
    // (Written out: serde_json::Value would sort the members.)
    let attrs = serde_json::to_string(&resource(Some("n"), Some("n"), "g")).unwrap();
    let json = format!(
        r#"{{"resourceSpans":[{{"resource":{{"attributes":{attrs}}},"scopeSpans":[{{"spans":[
            {{"attributes":[{{"key":"tracegen.seq","value":{{"stringValue":"x","intValue":"7"}}}}]}}
        ]}}]}}]}}"#
    );
    let resp = post_json_str(&sink, json.clone()).await;
    assert_eq!(resp.status(), 200);
    let s = sink.stats();
    assert_eq!(s.spans_total, 1);
    assert_eq!(s.generators[0].max_seq, Some(7));
    // Sanity: the reference reads the same.
    let full: ExportTraceServiceRequest = serde_json::from_str(&json).unwrap();
    let kv: &KeyValue = &full.resource_spans[0].scope_spans[0].spans[0].attributes[0];
    assert_eq!(
        trace_proto::otlp::get_u64(std::slice::from_ref(kv), "tracegen.seq"),
        Some(7)
    );
    sink.shutdown().await;
}
