//! Writes the seed corpus of the fuzz targets (`fuzz/run.sh` runs it first):
//! a few requests of each shape the sink reads, in each form a target takes,
//! so the fuzzers start from valid input instead of from nothing. Generated,
//! not committed.
//!
//! `cargo run -p trace-sink --example fuzz_seeds -- fuzz/seeds`

use std::io::Write;
use std::path::Path;

use prost::Message;
use trace_proto::keys;
use trace_proto::otlp::{AnyValue, ExportTraceServiceRequest, KeyValue, Value, kv_int, kv_str};
use trace_proto::span::build_request_with_seqs;

fn value(v: Value) -> Option<AnyValue> {
    Some(AnyValue { value: Some(v) })
}

fn requests() -> Vec<ExportTraceServiceRequest> {
    let resource = [
        kv_str(keys::GENERATOR_NODE, "node-1"),
        kv_str(keys::AGENT_NODE, "node-1"),
        kv_str(keys::GENERATOR_ID, "gen-1"),
    ];
    let typical = build_request_with_seqs(&resource, 1..=3);
    let mut kinds = build_request_with_seqs(&resource[..1], 7..=7);
    let span = &mut kinds.resource_spans[0].scope_spans[0].spans[0];
    span.attributes.extend([
        kv_int("n", -5),
        KeyValue {
            key: "b".into(),
            value: value(Value::BoolValue(true)),
            ..Default::default()
        },
        KeyValue {
            key: "d".into(),
            value: value(Value::DoubleValue(0.5)),
            ..Default::default()
        },
        KeyValue {
            key: "bytes".into(),
            value: value(Value::BytesValue(vec![0, 1, 2])),
            ..Default::default()
        },
        KeyValue {
            key: "array".into(),
            value: value(Value::ArrayValue(
                opentelemetry_proto::tonic::common::v1::ArrayValue {
                    values: vec![AnyValue {
                        value: Some(Value::StringValue("x".into())),
                    }],
                },
            )),
            ..Default::default()
        },
        KeyValue {
            key: keys::AGENT_NODE.into(),
            value: None,
            ..Default::default()
        },
    ]);
    let mut two = build_request_with_seqs(&[], 1..=2);
    two.resource_spans.push(two.resource_spans[0].clone());
    two.resource_spans[1].resource = None;
    vec![typical, kinds, two, ExportTraceServiceRequest::default()]
}

/// Hand-written OTLP/JSON the full types do not write: proto3 forms.
const JSON: &[&str] = &[
    r#"{"resourceSpans":[{"resource":{"attributes":[{"key":"k8s.node.name","value":{"stringValue":"n","boolValue":true}}]},"scopeSpans":[{"spans":[{"attributes":[{"key":"tracegen.seq","value":{"intValue":3}}]},{"attributes":null}]}]}]}"#,
    r#"{"resource_spans":[{"scope_spans":[{"spans":[{}]}],"resource":null}]}"#,
    r#"{"resourceSpans":null}"#,
    r#"{"resourceSpans":[[null,[]]]}"#,
];

fn write(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join(name), bytes)
}

fn gzip(data: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data)?;
    e.finish()
}

fn main() -> std::io::Result<()> {
    let out = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "fuzz/seeds".into());
    let out = Path::new(&out);
    let mut json: Vec<Vec<u8>> = JSON.iter().map(|j| j.as_bytes().to_vec()).collect();
    for (i, req) in requests().iter().enumerate() {
        let pb = req.encode_to_vec();
        json.push(serde_json::to_vec(req)?);
        write(&out.join("protobuf"), &format!("req-{i}"), &pb)?;
        write(&out.join("elements"), &format!("req-{i}"), &pb)?;
        write(&out.join("gzip"), &format!("plain-{i}"), &pb)?;
        write(&out.join("gzip"), &format!("gz-{i}"), &gzip(&pb)?)?;
        for (p, name) in [(0u8, "grpc"), (1, "http-protobuf")] {
            write(
                &out.join("ingest"),
                &format!("{name}-{i}"),
                &[&[p][..], &pb].concat(),
            )?;
        }
    }
    for (i, j) in json.iter().enumerate() {
        write(&out.join("json"), &format!("req-{i}"), j)?;
        write(&out.join("elements"), &format!("json-{i}"), j)?;
        write(
            &out.join("ingest"),
            &format!("http-json-{i}"),
            &[&[2][..], j].concat(),
        )?;
    }
    Ok(())
}
