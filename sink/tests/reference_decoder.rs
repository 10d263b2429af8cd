//! The tests' protobuf reference itself (`reference/lean.rs`, `reference/count.rs`):
//! its lean prost types read what `opentelemetry-proto`'s types read, and its
//! element count bounds them and refuses what prost refuses. The differential
//! test and `tests/scan.rs` hold the sink to this reference; these tests hold
//! the reference to the full types on the cases that shaped it.

mod reference;

use prost::Message;
use reference::count::{CountError, count_elements};
use reference::{assert_agree, held, lean, lean_of};
use trace_proto::otlp::{ExportTraceServiceRequest, kv_int, kv_str};
use trace_proto::span::build_request_with_seqs;
use trace_sink::ingest::wire::{self, Value, get_str, get_u64};

/// Decodes protobuf as the reference does, into the sink's lean types.
fn decode(bytes: &[u8]) -> Result<wire::TraceRequest, prost::DecodeError> {
    lean::TraceRequest::decode(bytes).map(wire::TraceRequest::from)
}

/// The lean types read what the full types wrote, every attribute alike
/// (`assert_agree`), from protobuf as from its OTLP/JSON; the count is every
/// element they hold.
#[test]
fn reads_full_requests() {
    let full = build_request_with_seqs(&[kv_str("k8s.node.name", "n1")], 1..=3);
    let lean = decode(&full.encode_to_vec()).unwrap();
    assert_agree(&full, &lean);
    assert_eq!(
        get_str(
            &lean.resource_spans[0].resource.as_ref().unwrap().attributes,
            "k8s.node.name"
        ),
        Some("n1")
    );
    let json = serde_json::to_vec(&full).unwrap();
    let from_json: wire::TraceRequest = serde_json::from_slice(&json).unwrap();
    assert_eq!(from_json, lean);
    assert_eq!(
        count_elements(&full.encode_to_vec(), 1000),
        Ok(1 + 1 + 1 + 1 + 3 + 3)
    );
    assert_eq!(held(&lean), 1 + 1 + 1 + 1 + 3 + 3);
}

/// Values of other kinds (bool, arrays, maps) are skipped, not materialized.
#[test]
fn other_values_are_skipped() {
    let mut full = build_request_with_seqs(&[], 1..=1);
    let span = &mut full.resource_spans[0].scope_spans[0].spans[0];
    span.attributes.push(kv_int("n", 5));
    span.attributes.push(trace_proto::otlp::KeyValue {
        key: "b".into(),
        value: Some(trace_proto::otlp::AnyValue {
            value: Some(trace_proto::otlp::Value::BoolValue(true)),
        }),
        ..Default::default()
    });
    let lean = decode(&full.encode_to_vec()).unwrap();
    let attrs = &lean.resource_spans[0].scope_spans[0].spans[0].attributes;
    assert_eq!(get_u64(attrs, "n"), Some(5));
    assert_eq!(attrs[2].value.as_ref().unwrap().value, Some(Value::Other));
    assert_eq!(get_str(attrs, "b"), None);
}

/// The count stops at the limit; malformed input is reported, not panicked on.
#[test]
fn count_limits_and_malformed() {
    let full = build_request_with_seqs(&[], 1..=100);
    let bytes = full.encode_to_vec();
    assert_eq!(count_elements(&bytes, 50), Err(CountError::TooMany));
    assert_eq!(
        count_elements(&bytes[..bytes.len() - 3], 10_000),
        Err(CountError::Malformed)
    );
    assert_eq!(count_elements(&[0xff; 11], 10), Err(CountError::Malformed));
    assert_eq!(count_elements(&[], 10), Ok(0));
    let empty = ExportTraceServiceRequest::default().encode_to_vec();
    assert_eq!(count_elements(&empty, 0), Ok(0));
}

/// Unknown group fields are skipped as prost skips them.
#[test]
fn groups_are_skipped() {
    let full = build_request_with_seqs(&[], 1..=1);
    let mut bytes = full.encode_to_vec();
    // field 100 as a group holding a varint field, appended at the top level
    bytes.extend_from_slice(&[0xa3, 0x06, 0x08, 0x01, 0xa4, 0x06]);
    assert!(decode(&bytes).is_ok());
    assert_eq!(count_elements(&bytes, 100), Ok(5));
    bytes.truncate(bytes.len() - 2);
    assert_eq!(count_elements(&bytes, 100), Err(CountError::Malformed));
}

/// A `KeyValue` with key "k" whose `AnyValue` holds `members` (raw fields).
fn kv_bytes(members: &[&[u8]]) -> Vec<u8> {
    let value: Vec<u8> = members.concat();
    let mut kv = vec![0x0a, 0x01, b'k', 0x12];
    prost::encoding::encode_varint(value.len() as u64, &mut kv);
    kv.extend(value);
    kv
}

/// Decodes `bytes` as a lean and a full `KeyValue`: both must agree on
/// acceptance and on the value; returns the lean value.
fn both(bytes: &[u8]) -> Option<Option<Value>> {
    let lean = lean::KeyValue::decode(bytes);
    let full = trace_proto::otlp::KeyValue::decode(bytes);
    assert_eq!(lean.is_ok(), full.is_ok(), "{lean:?} / {full:?}");
    let (lean, full) = (lean.ok()?, full.unwrap());
    let lean_value = lean.value.and_then(|v| v.value);
    assert_eq!(
        lean_value,
        lean_of(full.value.as_ref().and_then(|v| v.value.as_ref()))
    );
    Some(lean_value)
}

/// issue 9: an `AnyValue` with two members is read as the last one, as
/// prost reads `opentelemetry-proto`'s type: a bool after a string hides
/// the string, a string after a bool is read.
#[test]
fn protobuf_any_value_last_member_wins() {
    let s = |v: &str| [&[0x0a, v.len() as u8][..], v.as_bytes()].concat();
    let int = [0x18, 0x07];
    let boolean = [0x10, 0x01];
    let double = [0x21, 0, 0, 0, 0, 0, 0, 0xf0, 0x3f];
    let kvlist = [0x32, 0x00];
    let bytes_v = [0x3a, 0x02, 0xff, 0xfe];
    let strindex = [0x40, 0x03];
    let str_v = Some(Value::StringValue("n1".into()));
    assert_eq!(
        both(&kv_bytes(&[&s("n1"), &boolean])),
        Some(Some(Value::Other))
    );
    assert_eq!(both(&kv_bytes(&[&boolean, &s("n1")])), Some(str_v.clone()));
    assert_eq!(
        both(&kv_bytes(&[&s("n1"), &int])),
        Some(Some(Value::IntValue(7)))
    );
    assert_eq!(both(&kv_bytes(&[&int, &s("n1")])), Some(str_v.clone()));
    assert_eq!(both(&kv_bytes(&[&s("x"), &s("n1")])), Some(str_v.clone()));
    for other in [&double[..], &kvlist, &bytes_v, &strindex] {
        assert_eq!(
            both(&kv_bytes(&[&s("n1"), other])),
            Some(Some(Value::Other))
        );
        assert_eq!(both(&kv_bytes(&[other, &s("n1")])), Some(str_v.clone()));
    }
    // Unknown fields do not touch the value.
    assert_eq!(
        both(&kv_bytes(&[&s("n1"), &[0x48, 0x01]])),
        Some(str_v.clone())
    );
    // The value message sent twice is merged: the second's member wins.
    let mut twice = kv_bytes(&[&s("n1")]);
    twice.extend_from_slice(&[0x12, 0x02, 0x10, 0x01]);
    assert_eq!(both(&twice), Some(Some(Value::Other)));
    let mut twice = kv_bytes(&[&boolean]);
    twice.extend_from_slice(&[0x12, 0x00]);
    assert_eq!(both(&twice), Some(Some(Value::Other)));
    // A member with the wrong wire type is rejected by both.
    assert_eq!(both(&kv_bytes(&[&s("n1"), &[0x12, 0x00]])), None);
    assert_eq!(both(&kv_bytes(&[&s("n1"), &[0x28, 0x00]])), None);
    assert_eq!(both(&kv_bytes(&[&s("n1"), &[0x1a, 0x00]])), None);
    // A string member that is not UTF-8 is rejected by both.
    assert_eq!(both(&kv_bytes(&[&[0x0a, 0x01, 0xff]])), None);
    // The lean value re-encodes to what it read.
    let lean = lean::KeyValue::decode(kv_bytes(&[&boolean, &s("n1")]).as_slice()).unwrap();
    assert_eq!(
        lean::KeyValue::decode(lean.encode_to_vec().as_slice()).unwrap(),
        lean
    );
}
