//! The reference comparison shared by the differential test
//! (`sink/tests/differential.rs`), `sink/tests/scan.rs`,
//! `sink/tests/reference_decoder.rs` and the fuzz targets (`fuzz/`, which
//! include this file by path): what the sink reads from a request, set against
//! what the full `opentelemetry-proto` types read from it.
//!
//! - [`lean`]: prost types that read only what attribution reads, converted
//!   into the sink's `wire::TraceRequest`: the protobuf reference;
//! - [`count`]: their element count (a walk over the bytes with
//!   `prost::encoding`) and the count-then-decode path ([`count::decode`]) that
//!   the sink's one-pass scan is held to ([`assert_scan_agrees`]);
//! - below: the comparison with the full types and its listed differences.
#![allow(dead_code)]

pub mod count;
pub mod lean;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value};
use trace_proto::{keys, otlp};
use trace_sink::ingest::attribution::AttributionKeys;
use trace_sink::ingest::wire::{self, TraceRequest, Value};

/// Attribute keys the generators use: the ones the sink reads, and others.
pub const KEYS: &[&str] = &[
    keys::GENERATOR_NODE,
    keys::AGENT_NODE,
    keys::GENERATOR_ID,
    keys::SEQUENCE,
    "service.name",
    "x",
    "",
];

/// One attribute as the sink holds it: key and value (`None`: no value message).
pub type Attr = (String, Option<Option<Value>>);
/// Per resource spans: the resource's attributes (if present), then per scope
/// spans, per span, its attributes.
pub type Model = Vec<(Option<Vec<Attr>>, Vec<Vec<Vec<Attr>>>)>;

pub fn lean_of(v: Option<&any_value::Value>) -> Option<Value> {
    v.map(|v| match v {
        any_value::Value::StringValue(s) => Value::StringValue(s.clone()),
        any_value::Value::IntValue(i) => Value::IntValue(*i),
        _ => Value::Other,
    })
}

pub fn full_attrs(attrs: &[KeyValue]) -> Vec<Attr> {
    attrs
        .iter()
        .map(|kv| {
            let value = kv.value.as_ref().map(|v| lean_of(v.value.as_ref()));
            (kv.key.clone(), value)
        })
        .collect()
}

pub fn lean_attrs(attrs: &[wire::KeyValue]) -> Vec<Attr> {
    attrs
        .iter()
        .map(|kv| (kv.key.clone(), kv.value.as_ref().map(|v| v.value.clone())))
        .collect()
}

pub fn full_model(r: &ExportTraceServiceRequest) -> Model {
    r.resource_spans
        .iter()
        .map(|rs| {
            (
                rs.resource.as_ref().map(|res| full_attrs(&res.attributes)),
                rs.scope_spans
                    .iter()
                    .map(|ss| ss.spans.iter().map(|s| full_attrs(&s.attributes)).collect())
                    .collect(),
            )
        })
        .collect()
}

pub fn lean_model(r: &TraceRequest) -> Model {
    r.resource_spans
        .iter()
        .map(|rs| {
            (
                rs.resource.as_ref().map(|res| lean_attrs(&res.attributes)),
                rs.scope_spans
                    .iter()
                    .map(|ss| ss.spans.iter().map(|s| lean_attrs(&s.attributes)).collect())
                    .collect(),
            )
        })
        .collect()
}

/// The sink's readers agree with trace-proto's on the keys the sink reads.
pub fn assert_reads_agree(full: &[KeyValue], lean: &[wire::KeyValue]) {
    for key in KEYS {
        assert_eq!(wire::get_str(lean, key), otlp::get_str(full, key), "{key}");
        assert_eq!(wire::get_u64(lean, key), otlp::get_u64(full, key), "{key}");
    }
}

pub fn assert_agree(full: &ExportTraceServiceRequest, lean: &TraceRequest) {
    assert_eq!(lean_model(lean), full_model(full));
    for (f, l) in full.resource_spans.iter().zip(&lean.resource_spans) {
        if let (Some(f), Some(l)) = (&f.resource, &l.resource) {
            assert_reads_agree(&f.attributes, &l.attributes);
        }
        let fs = f.scope_spans.iter().flat_map(|s| &s.spans);
        let ls = l.scope_spans.iter().flat_map(|s| &s.spans);
        for (f, l) in fs.zip(ls) {
            assert_reads_agree(&f.attributes, &l.attributes);
        }
    }
    // Attribution sees every span.
    let summary = trace_sink::ingest::attribution::attribute(lean, &AttributionKeys::default());
    let spans: usize = full
        .resource_spans
        .iter()
        .flat_map(|rs| &rs.scope_spans)
        .map(|ss| ss.spans.len())
        .sum();
    assert_eq!(summary.spans, spans as u64);
}

/// Elements the lean decode holds, which the element count must bound.
pub fn held(lean: &TraceRequest) -> u64 {
    let mut n = 0;
    for rs in &lean.resource_spans {
        n += 1;
        if let Some(r) = &rs.resource {
            n += 1 + r.attributes.len() as u64;
        }
        for ss in &rs.scope_spans {
            n += 1;
            for s in &ss.spans {
                n += 1 + s.attributes.len() as u64;
            }
        }
    }
    n
}

/// Fields the sink reads (message.field, as prost names them in errors).
pub const READ: &[&str] = &[
    "ExportTraceServiceRequest.resource_spans",
    "ResourceSpans.resource",
    "ResourceSpans.scope_spans",
    "Resource.attributes",
    "ScopeSpans.spans",
    "Span.attributes",
    "KeyValue.key",
    "KeyValue.value",
    "AnyValue.value",
];

/// Whether a full decode error is for something the sink does not read: its
/// path names a field the sink skips, or it is inside an array or kvlist value
/// (an error at the top of one names `AnyValue.value` only, and is not about
/// a string).
pub fn unread(err: &prost::DecodeError) -> bool {
    let text = err.to_string();
    let rest = text
        .strip_prefix("failed to decode Protobuf message: ")
        .unwrap_or(&text);
    let path: Vec<&str> = rest
        .split(": ")
        .take_while(|p| {
            p.split_once('.').is_some_and(|(m, f)| {
                !m.is_empty() && m.chars().all(char::is_alphanumeric) && !f.contains(' ')
            })
        })
        .collect();
    path.iter().any(|p| !READ.contains(p))
        || (path.first() == Some(&"AnyValue.value") && !text.contains("UTF-8"))
}

/// Whether an OTLP/JSON document has something other than an object (or a
/// `null` where proto3 JSON allows it) where the sink expects a message: the
/// one documented reason the sink refuses what the full types read.
pub fn json_has_non_object_message(doc: &serde_json::Value) -> bool {
    use serde_json::Value as J;
    fn list(v: Option<&J>, each: &dyn Fn(&J) -> bool) -> bool {
        match v {
            None | Some(J::Null) => false,
            Some(J::Array(items)) => items.iter().any(|i| !i.is_object() || each(i)),
            Some(_) => true,
        }
    }
    fn attrs(v: Option<&J>) -> bool {
        list(
            v,
            &|kv| matches!(kv.get("value"), Some(v) if !v.is_object() && !v.is_null()),
        )
    }
    let J::Object(_) = doc else { return true };
    list(doc.get("resourceSpans"), &|rs| {
        let resource = match rs.get("resource") {
            None | Some(J::Null) => false,
            Some(J::Object(_)) => attrs(rs.get("resource").and_then(|r| r.get("attributes"))),
            Some(_) => true,
        };
        resource
            || list(rs.get("scopeSpans"), &|ss| {
                list(ss.get("spans"), &|s| attrs(s.get("attributes")))
            })
    })
}

/// Whether an OTLP/JSON text names a field the sink reads by its proto name,
/// which the sink reads (proto3 JSON) and the full types ignore.
pub fn json_uses_proto_names(text: &[u8]) -> bool {
    let text = String::from_utf8_lossy(text);
    ["resource_spans", "scope_spans", "string_value", "int_value"]
        .iter()
        .any(|n| text.contains(n))
}

/// Whether a documented difference explains why the sink refuses an OTLP/JSON
/// text the full types read: a message that is not an object, or a field the
/// sink reads by its proto name (which the full types skip unread).
pub fn json_explains_refusal(text: &[u8]) -> bool {
    // Read lossily: serde skips an unknown field's string unchecked, so the
    // full types read a text with bytes that are not UTF-8 there, which a
    // `Value` would refuse before its shape could be seen (found by the `json`
    // fuzz target).
    let text = String::from_utf8_lossy(text);
    json_uses_proto_names(text.as_bytes())
        || serde_json::from_str::<serde_json::Value>(&text)
            .is_ok_and(|doc| json_has_non_object_message(&doc))
}

/// Whether the sink's refusal of an OTLP/JSON text the full types read is a
/// documented difference: by the text's shape ([`json_explains_refusal`]),
/// or by the sink's own reason, an array where a message belongs, which
/// serde's derived structs read as a sequence of fields. The reason counts
/// too because the shape cannot always be seen: a `Value` refuses numbers
/// and strings the full types skip unread in unknown fields (the `json` fuzz
/// target found `7e07777767` and bytes that are not UTF-8).
pub fn json_refusal_explained(text: &[u8], reason: &str) -> bool {
    json_explains_refusal(text) || reason.contains("invalid type: sequence, expected struct")
}

/// An `Ingest` without an element limit, for comparing decodes.
pub fn unbounded_ingest() -> &'static trace_sink::ingest::Ingest {
    static INGEST: std::sync::OnceLock<trace_sink::ingest::Ingest> = std::sync::OnceLock::new();
    INGEST.get_or_init(|| {
        trace_sink::ingest::Ingest::new(
            AttributionKeys::default(),
            u64::MAX,
            1000,
            1024,
            1 << 20,
            std::sync::Arc::new(trace_sink::metrics::Metrics::new(1000)),
            None,
        )
    })
}

/// The path protobuf requests really take, the one-pass scan
/// (`Ingest::scan`), against the count-then-decode path ([`count::decode`])
/// that the rest of this module holds to the full types: the scan accepts
/// exactly what that path accepts, refuses it with the same outcome, and
/// attributes the same spans to the same origins with the same sequence
/// numbers.
pub fn assert_scan_agrees(
    ingest: &trace_sink::ingest::Ingest,
    input: &[u8],
    lean: &Result<TraceRequest, trace_sink::ingest::Rejected>,
) {
    use trace_sink::ingest::Traces;
    let scanned = ingest.scan::<Traces>(input);
    match (lean, &scanned) {
        (Ok(l), Ok(s)) => assert_eq!(
            s,
            &ingest.attribute::<Traces>(l),
            "scan and decode + attribute differ on {input:02x?}"
        ),
        (Err(l), Err(s)) => assert_eq!(
            l.outcome, s.outcome,
            "scan refused {input:02x?} as {s:?}, decode as {l:?}"
        ),
        // The scan answers as the collector's receiver (docs/trace-sink.md),
        // which refuses more than prost reads: the wire type and id length
        // of every known field, fields newer than opentelemetry-proto's
        // schema that prost skips as unknown bytes, pdata's groups (whose end
        // tag is left over). Which refusals match the collector is proven
        // against the real one (sink/tests/collector_parity.rs, 11,642
        // cases); here a refusal must only be a refusal of malformed input.
        // (An allow-list of the scan's reasons was tried; the fuzz targets
        // kept finding new spellings of the same difference.)
        (Ok(_), Err(s)) => assert_eq!(
            s.outcome,
            trace_proto::outcome::Outcome::BadRequest,
            "scan refuses what decode reads, not as malformed ({s:?}): {input:02x?}"
        ),
        // The scan reads varints, keys, groups and strings more leniently than
        // prost, as pdata does.
        (Err(l), Ok(_)) => {
            let full =
                <trace_proto::otlp::ExportTraceServiceRequest as prost::Message>::decode(input)
                    .err()
                    .map(|e| e.to_string())
                    .unwrap_or_default();
            assert!(
                PROST_ONLY.iter().any(|m| full.contains(m)),
                "scan reads what decode refuses ({l:?}; prost: {full}): {input:02x?}"
            )
        }
    }
}

/// Why prost refuses what the collector (and the scan) accept: a 10th varint
/// byte above 1, a key over 32 bits, a string that is not UTF-8, a group end
/// tag that does not match its start, groups nested past prost's limit.
pub const PROST_ONLY: [&str; 5] = [
    "invalid varint",
    "invalid key value",
    "UTF-8",
    "end group",
    "recursion limit",
];
