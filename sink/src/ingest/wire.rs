//! The part of an OTLP trace export request the sink reads, as lean types that
//! decode from the same protobuf bytes and OTLP/JSON as
//! `ExportTraceServiceRequest`.
//!
//! Why not decode the full message: the sink needs a few attributes per
//! resource and one per span. Everything else (ids, names, events, links,
//! nested array and map values) is skipped by the decoder without being
//! allocated, which makes decoding faster and, above all, bounds memory: a
//! hostile request of millions of empty spans or nested values costs at most
//! one small struct per [`count_elements`] element, and that count is checked
//! before decoding.

use serde::{Deserialize, Deserializer};

/// An export request: resource spans only.
#[derive(Clone, PartialEq, prost::Message, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct TraceRequest {
    /// Resource spans (field 1 of `ExportTraceServiceRequest`).
    #[prost(message, repeated, tag = "1")]
    pub resource_spans: Vec<ResourceSpans>,
}

/// `ResourceSpans`: the resource and its scope spans.
#[derive(Clone, PartialEq, prost::Message, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ResourceSpans {
    /// The resource (field 1).
    #[prost(message, optional, tag = "1")]
    pub resource: Option<Resource>,
    /// Scope spans (field 2).
    #[prost(message, repeated, tag = "2")]
    pub scope_spans: Vec<ScopeSpans>,
}

/// `Resource`: its attributes.
#[derive(Clone, PartialEq, prost::Message, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Resource {
    /// Attributes (field 1).
    #[prost(message, repeated, tag = "1")]
    pub attributes: Vec<KeyValue>,
}

/// `ScopeSpans`: its spans (the scope is skipped).
#[derive(Clone, PartialEq, prost::Message, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ScopeSpans {
    /// Spans (field 2).
    #[prost(message, repeated, tag = "2")]
    pub spans: Vec<Span>,
}

/// `Span`: its attributes only.
#[derive(Clone, PartialEq, prost::Message, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Span {
    /// Attributes (field 9).
    #[prost(message, repeated, tag = "9")]
    pub attributes: Vec<KeyValue>,
}

/// `KeyValue`.
#[derive(Clone, PartialEq, prost::Message, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct KeyValue {
    /// Key (field 1).
    #[prost(string, tag = "1")]
    pub key: String,
    /// Value (field 2).
    #[prost(message, optional, tag = "2")]
    pub value: Option<AnyValue>,
}

/// `AnyValue`, string and int only: other kinds decode as an empty value.
#[derive(Clone, PartialEq, prost::Message)]
pub struct AnyValue {
    /// The value.
    #[prost(oneof = "Value", tags = "1, 3")]
    pub value: Option<Value>,
}

/// The kinds of value the sink reads.
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum Value {
    /// `stringValue` (field 1).
    #[prost(string, tag = "1")]
    StringValue(String),
    /// `intValue` (field 3).
    #[prost(int64, tag = "3")]
    IntValue(i64),
}

/// An OTLP/JSON `intValue`: a JSON integer or a string of digits. Anything
/// else is an error, read without buffering it first.
struct JsonInt(i64);

impl<'de> Deserialize<'de> for JsonInt {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = JsonInt;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an int64 as a number or a string")
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<JsonInt, E> {
                Ok(JsonInt(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<JsonInt, E> {
                i64::try_from(v)
                    .map(JsonInt)
                    .map_err(|_| E::custom(format!("intValue {v} is out of int64 range")))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<JsonInt, E> {
                v.parse()
                    .map(JsonInt)
                    .map_err(|_| E::custom(format!("intValue {v:?} is not an int64")))
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for AnyValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize, Default)]
        #[serde(default, rename_all = "camelCase")]
        struct Json {
            string_value: Option<String>,
            int_value: Option<JsonInt>,
        }
        let j = Json::deserialize(d)?;
        let value = match (j.string_value, j.int_value) {
            (Some(s), _) => Some(Value::StringValue(s)),
            (None, Some(JsonInt(i))) => Some(Value::IntValue(i)),
            (None, None) => None,
        };
        Ok(AnyValue { value })
    }
}

/// Why [`count_elements`] stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScanError {
    /// More elements than the limit.
    TooMany,
    /// Not valid protobuf (decoding would fail too).
    Malformed,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Request,
    ResourceSpans,
    Resource,
    ScopeSpans,
    Span,
    Leaf,
}

impl Kind {
    fn child(self, field: u64) -> Option<Kind> {
        match (self, field) {
            (Kind::Request, 1) => Some(Kind::ResourceSpans),
            (Kind::ResourceSpans, 1) => Some(Kind::Resource),
            (Kind::ResourceSpans, 2) => Some(Kind::ScopeSpans),
            (Kind::Resource, 1) => Some(Kind::Leaf),
            (Kind::ScopeSpans, 2) => Some(Kind::Span),
            (Kind::Span, 9) => Some(Kind::Leaf),
            _ => None,
        }
    }
}

fn varint(buf: &mut &[u8]) -> Result<u64, ScanError> {
    let mut v: u64 = 0;
    for i in 0..10 {
        let (&b, rest) = buf.split_first().ok_or(ScanError::Malformed)?;
        *buf = rest;
        v |= u64::from(b & 0x7f) << (7 * i);
        if b < 0x80 {
            return Ok(v);
        }
    }
    Err(ScanError::Malformed)
}

fn skip(buf: &mut &[u8], n: u64) -> Result<(), ScanError> {
    let n = usize::try_from(n).map_err(|_| ScanError::Malformed)?;
    if buf.len() < n {
        return Err(ScanError::Malformed);
    }
    *buf = &buf[n..];
    Ok(())
}

/// Nesting allowed for groups (prost's recursion limit).
const MAX_GROUP_DEPTH: u32 = 100;

/// Skips a group (deprecated wire types 3/4, which prost still accepts in
/// unknown fields) up to its matching end.
fn skip_group(buf: &mut &[u8], field: u64, depth: u32) -> Result<(), ScanError> {
    if depth > MAX_GROUP_DEPTH {
        return Err(ScanError::Malformed);
    }
    loop {
        let key = varint(buf)?;
        match key & 7 {
            0 => {
                varint(buf)?;
            }
            1 => skip(buf, 8)?,
            5 => skip(buf, 4)?,
            2 => {
                let len = varint(buf)?;
                skip(buf, len)?;
            }
            3 => skip_group(buf, key >> 3, depth + 1)?,
            4 if key >> 3 == field => return Ok(()),
            _ => return Err(ScanError::Malformed),
        }
    }
}

fn walk(mut buf: &[u8], kind: Kind, count: &mut u64, limit: u64) -> Result<(), ScanError> {
    while !buf.is_empty() {
        let key = varint(&mut buf)?;
        match key & 7 {
            3 => skip_group(&mut buf, key >> 3, 1)?,
            0 => {
                varint(&mut buf)?;
            }
            1 => skip(&mut buf, 8)?,
            5 => skip(&mut buf, 4)?,
            2 => {
                let len = varint(&mut buf)?;
                let n = usize::try_from(len).map_err(|_| ScanError::Malformed)?;
                if buf.len() < n {
                    return Err(ScanError::Malformed);
                }
                let (sub, rest) = buf.split_at(n);
                buf = rest;
                if let Some(child) = kind.child(key >> 3) {
                    *count += 1;
                    if *count > limit {
                        return Err(ScanError::TooMany);
                    }
                    if child != Kind::Leaf {
                        walk(sub, child, count, limit)?;
                    }
                }
            }
            _ => return Err(ScanError::Malformed),
        }
    }
    Ok(())
}

/// Counts, without allocating, the elements decoding a protobuf
/// `ExportTraceServiceRequest` into [`TraceRequest`] would allocate: resource
/// spans, resources, scope spans, spans, and resource and span attributes.
/// Stops at `limit + 1`.
pub fn count_elements(protobuf: &[u8], limit: u64) -> Result<u64, ScanError> {
    let mut count = 0;
    walk(protobuf, Kind::Request, &mut count, limit)?;
    Ok(count)
}

/// An upper bound of the elements decoding OTLP/JSON would allocate: every
/// element is a JSON object, so it has a `{` (braces inside strings only make
/// the bound looser).
pub fn count_json_objects(json: &[u8]) -> u64 {
    json.iter().filter(|&&b| b == b'{').count() as u64
}

/// The string value of `key`, if present and a non-empty string (the lean twin of
/// [`trace_proto::otlp::get_str`], which reads the full OTLP types trace-gen builds).
pub fn get_str<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a str> {
    match attrs
        .iter()
        .find(|kv| kv.key == key)?
        .value
        .as_ref()?
        .value
        .as_ref()?
    {
        Value::StringValue(s) if !s.is_empty() => Some(s.as_str()),
        _ => None,
    }
}

/// Reads a sequence number: a non-negative int, or a string of digits.
pub fn get_u64(attrs: &[KeyValue], key: &str) -> Option<u64> {
    match attrs
        .iter()
        .find(|kv| kv.key == key)?
        .value
        .as_ref()?
        .value
        .as_ref()?
    {
        Value::IntValue(i) => u64::try_from(*i).ok(),
        Value::StringValue(s) => s.parse().ok(),
    }
}

impl From<&trace_proto::otlp::ExportTraceServiceRequest> for TraceRequest {
    /// Re-reads a full request as the lean one (for tests and embedders).
    fn from(full: &trace_proto::otlp::ExportTraceServiceRequest) -> Self {
        use prost::Message;
        TraceRequest::decode(full.encode_to_vec().as_slice()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;
    use trace_proto::otlp::{ExportTraceServiceRequest, kv_int, kv_str};
    use trace_proto::span::build_request_with_seqs;

    /// The lean types read what the full types wrote; JSON too.
    #[test]
    fn reads_full_requests() {
        let full = build_request_with_seqs(&[kv_str("k8s.node.name", "n1")], 1..=3);
        let lean = TraceRequest::decode(full.encode_to_vec().as_slice()).unwrap();
        let rs = &lean.resource_spans[0];
        assert_eq!(
            get_str(&rs.resource.as_ref().unwrap().attributes, "k8s.node.name"),
            Some("n1")
        );
        let seqs: Vec<_> = rs.scope_spans[0]
            .spans
            .iter()
            .map(|s| get_u64(&s.attributes, trace_proto::keys::SEQUENCE).unwrap())
            .collect();
        assert_eq!(seqs, vec![1, 2, 3]);
        let json = serde_json::to_vec(&full).unwrap();
        let from_json: TraceRequest = serde_json::from_slice(&json).unwrap();
        assert_eq!(from_json, lean);
        assert_eq!(
            count_elements(&full.encode_to_vec(), 1000),
            Ok(1 + 1 + 1 + 1 + 3 + 3)
        );
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
        let lean = TraceRequest::decode(full.encode_to_vec().as_slice()).unwrap();
        let attrs = &lean.resource_spans[0].scope_spans[0].spans[0].attributes;
        assert_eq!(get_u64(attrs, "n"), Some(5));
        assert_eq!(attrs[2].value.as_ref().unwrap().value, None);
    }

    /// The count stops at the limit; malformed input is reported, not panicked on.
    #[test]
    fn count_limits_and_malformed() {
        let full = build_request_with_seqs(&[], 1..=100);
        let bytes = full.encode_to_vec();
        assert_eq!(count_elements(&bytes, 50), Err(ScanError::TooMany));
        assert_eq!(
            count_elements(&bytes[..bytes.len() - 3], 10_000),
            Err(ScanError::Malformed)
        );
        assert_eq!(count_elements(&[0xff; 11], 10), Err(ScanError::Malformed));
        assert_eq!(count_elements(&[], 10), Ok(0));
        let empty = ExportTraceServiceRequest::default().encode_to_vec();
        assert_eq!(count_elements(&empty, 0), Ok(0));
        assert_eq!(count_json_objects(br#"{"a":{"b":"{"}}"#), 3);
    }

    /// Unknown group fields are skipped as prost skips them.
    #[test]
    fn groups_are_skipped() {
        let full = build_request_with_seqs(&[], 1..=1);
        let mut bytes = full.encode_to_vec();
        // field 100 as a group holding a varint field, appended at the top level
        bytes.extend_from_slice(&[0xa3, 0x06, 0x08, 0x01, 0xa4, 0x06]);
        assert!(TraceRequest::decode(bytes.as_slice()).is_ok());
        assert_eq!(count_elements(&bytes, 100), Ok(5));
        bytes.truncate(bytes.len() - 2);
        assert_eq!(count_elements(&bytes, 100), Err(ScanError::Malformed));
    }

    /// OTLP/JSON ints may be strings or numbers; a non-int string is an error.
    #[test]
    fn json_int_values() {
        let j = r#"{"key":"k","value":{"intValue":"42"}}"#;
        let kv: KeyValue = serde_json::from_str(j).unwrap();
        assert_eq!(kv.value.unwrap().value, Some(Value::IntValue(42)));
        let j = r#"{"key":"k","value":{"intValue":7,"boolValue":true}}"#;
        let kv: KeyValue = serde_json::from_str(j).unwrap();
        assert_eq!(kv.value.unwrap().value, Some(Value::IntValue(7)));
        assert!(
            serde_json::from_str::<KeyValue>(r#"{"key":"k","value":{"intValue":"x"}}"#).is_err()
        );
    }
}
