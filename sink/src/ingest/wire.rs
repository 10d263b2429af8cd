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
//!
//! What the sink reads decodes exactly as the reference decoders read it.
//! Protobuf as prost reads `opentelemetry-proto`'s types: a repeated field
//! appends, a message field sent twice is merged, a scalar sent twice keeps the
//! last, an `AnyValue` keeps its last member (see [`AnyValue`]). OTLP/JSON as the
//! proto3 JSON mapping reads it (and `opentelemetry-proto`'s serde types, where
//! they follow it): camelCase or proto field names, int64 as a number or a
//! string, unknown fields ignored, `null` read as the field's default (an empty
//! list, an absent message, an empty key; `opentelemetry-proto` rejects a `null`
//! list). Intentional differences, held by `sink/tests/differential.rs`:
//! - fields and values the sink does not read are skipped without being
//!   checked, so a request the full types reject for, say, a malformed trace id
//!   or a span name that is not UTF-8, is accepted;
//! - an OTLP/JSON message must be a JSON object: serde's derived structs (and so
//!   `opentelemetry-proto`'s) also take an array of field values, a form proto3
//!   JSON does not have and that the element count would not see.

use serde::{Deserialize, Deserializer};
use trace_proto::json::Int64;

/// An export request: resource spans only.
#[derive(Clone, PartialEq, prost::Message, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct TraceRequest {
    /// Resource spans (field 1 of `ExportTraceServiceRequest`).
    #[prost(message, repeated, tag = "1")]
    #[serde(alias = "resource_spans", deserialize_with = "objects")]
    pub resource_spans: Vec<ResourceSpans>,
}

/// `ResourceSpans`: the resource and its scope spans.
#[derive(Clone, PartialEq, prost::Message, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ResourceSpans {
    /// The resource (field 1).
    #[prost(message, optional, tag = "1")]
    #[serde(deserialize_with = "object")]
    pub resource: Option<Resource>,
    /// Scope spans (field 2).
    #[prost(message, repeated, tag = "2")]
    #[serde(alias = "scope_spans", deserialize_with = "objects")]
    pub scope_spans: Vec<ScopeSpans>,
}

/// `Resource`: its attributes.
#[derive(Clone, PartialEq, prost::Message, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Resource {
    /// Attributes (field 1).
    #[prost(message, repeated, tag = "1")]
    #[serde(deserialize_with = "objects")]
    pub attributes: Vec<KeyValue>,
}

/// `ScopeSpans`: its spans (the scope is skipped).
#[derive(Clone, PartialEq, prost::Message, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ScopeSpans {
    /// Spans (field 2).
    #[prost(message, repeated, tag = "2")]
    #[serde(deserialize_with = "objects")]
    pub spans: Vec<Span>,
}

/// `Span`: its attributes only.
#[derive(Clone, PartialEq, prost::Message, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Span {
    /// Attributes (field 9).
    #[prost(message, repeated, tag = "9")]
    #[serde(deserialize_with = "objects")]
    pub attributes: Vec<KeyValue>,
}

/// `KeyValue`.
#[derive(Clone, PartialEq, prost::Message, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct KeyValue {
    /// Key (field 1).
    #[prost(string, tag = "1")]
    #[serde(deserialize_with = "or_default")]
    pub key: String,
    /// Value (field 2).
    #[prost(message, optional, tag = "2")]
    #[serde(deserialize_with = "object")]
    pub value: Option<AnyValue>,
}

/// `AnyValue`. The sink reads string and int values; the other kinds are
/// recognized but not materialized ([`Value::Other`]), so the value is the
/// *last* member on the wire, as in every protobuf decoder (a oneof keeps the
/// last member it reads) and in the OTLP/JSON decoders.
#[derive(Clone, PartialEq, Debug, Default)]
pub struct AnyValue {
    /// The value; `None` when no member is present.
    pub value: Option<Value>,
}

/// The kinds of value the sink tells apart.
#[derive(Clone, PartialEq, Debug)]
pub enum Value {
    /// `stringValue` (field 1).
    StringValue(String),
    /// `intValue` (field 3).
    IntValue(i64),
    /// Any other member (bool, double, array, kvlist, bytes, string index):
    /// present, skipped without being checked or allocated.
    Other,
}

/// Protobuf `AnyValue` by hand, because the derive can only skip a oneof member
/// it does not hold, which would keep an earlier string where the reference
/// decoders keep a later bool. Each member's wire type is checked as prost checks
/// it for `opentelemetry-proto`'s `AnyValue`; the scalars are decoded (no
/// allocation) to check them the same way; bytes, array and kvlist values are
/// skipped by their length, unchecked inside.
impl prost::Message for AnyValue {
    fn encode_raw(&self, buf: &mut impl bytes::BufMut) {
        use prost::encoding::{int64, string};
        match &self.value {
            Some(Value::StringValue(s)) => string::encode(1, s, buf),
            Some(Value::IntValue(i)) => int64::encode(3, i, buf),
            Some(Value::Other) | None => {}
        }
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: prost::encoding::WireType,
        buf: &mut impl bytes::Buf,
        ctx: prost::encoding::DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        use prost::encoding::{WireType, bool, check_wire_type, double, int32, int64, skip_field};
        let in_value = |mut e: prost::DecodeError| {
            e.push("AnyValue", "value");
            e
        };
        match tag {
            1 => {
                // As prost merges a string member: into the string already there, else anew.
                let mut s = match self.value.take() {
                    Some(Value::StringValue(s)) => s,
                    _ => String::new(),
                };
                prost::encoding::string::merge(wire_type, &mut s, buf, ctx).map_err(in_value)?;
                self.value = Some(Value::StringValue(s));
            }
            3 => {
                let mut i = 0;
                int64::merge(wire_type, &mut i, buf, ctx).map_err(in_value)?;
                self.value = Some(Value::IntValue(i));
            }
            2 => {
                bool::merge(wire_type, &mut false, buf, ctx).map_err(in_value)?;
                self.value = Some(Value::Other);
            }
            4 => {
                double::merge(wire_type, &mut 0.0, buf, ctx).map_err(in_value)?;
                self.value = Some(Value::Other);
            }
            8 => {
                int32::merge(wire_type, &mut 0, buf, ctx).map_err(in_value)?;
                self.value = Some(Value::Other);
            }
            5..=7 => {
                check_wire_type(WireType::LengthDelimited, wire_type).map_err(in_value)?;
                skip_field(wire_type, tag, buf, ctx).map_err(in_value)?;
                self.value = Some(Value::Other);
            }
            _ => skip_field(wire_type, tag, buf, ctx)?,
        }
        Ok(())
    }

    fn encoded_len(&self) -> usize {
        use prost::encoding::{int64, string};
        match &self.value {
            Some(Value::StringValue(s)) => string::encoded_len(1, s),
            Some(Value::IntValue(i)) => int64::encoded_len(3, i),
            Some(Value::Other) | None => 0,
        }
    }

    fn clear(&mut self) {
        self.value = None;
    }
}

/// The members of an OTLP/JSON `AnyValue`, by their JSON name or their proto
/// field name (proto3 JSON accepts both).
enum AnyValueKey {
    String,
    Int,
    Other,
    Unknown,
}

impl<'de> Deserialize<'de> for AnyValueKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = AnyValueKey;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an AnyValue member name")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<AnyValueKey, E> {
                Ok(match v {
                    "stringValue" | "string_value" => AnyValueKey::String,
                    "intValue" | "int_value" => AnyValueKey::Int,
                    "boolValue"
                    | "bool_value"
                    | "doubleValue"
                    | "double_value"
                    | "arrayValue"
                    | "array_value"
                    | "kvlistValue"
                    | "kvlist_value"
                    | "bytesValue"
                    | "bytes_value"
                    | "stringValueStrindex"
                    | "string_value_strindex" => AnyValueKey::Other,
                    _ => AnyValueKey::Unknown,
                })
            }
        }
        d.deserialize_identifier(V)
    }
}

/// OTLP/JSON `AnyValue`, as `opentelemetry-proto` and the Collector read it:
/// an object whose last non-null member wins; a `null` member is absent;
/// unknown members are ignored. Members of kinds the sink does not read are
/// skipped without being checked or allocated.
impl<'de> Deserialize<'de> for AnyValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = AnyValue;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an AnyValue object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<AnyValue, A::Error> {
                use serde::de::IgnoredAny;
                let mut value = None;
                while let Some(key) = map.next_key::<AnyValueKey>()? {
                    let member = match key {
                        AnyValueKey::String => {
                            map.next_value::<Option<String>>()?.map(Value::StringValue)
                        }
                        AnyValueKey::Int => map
                            .next_value::<Option<Int64>>()?
                            .map(|Int64(i)| Value::IntValue(i)),
                        AnyValueKey::Other => map
                            .next_value::<Option<IgnoredAny>>()?
                            .map(|_| Value::Other),
                        AnyValueKey::Unknown => {
                            map.next_value::<IgnoredAny>()?;
                            None
                        }
                    };
                    if member.is_some() {
                        value = member;
                    }
                }
                Ok(AnyValue { value })
            }
        }
        d.deserialize_map(V)
    }
}

/// Reads a message as an OTLP/JSON object only: serde's derived structs would
/// also take a JSON array of field values, a form OTLP/JSON (proto3 JSON) does
/// not have, and which `--max-request-elements` (counting `{`) would not see.
struct ObjectOnly<D>(D);

impl<'de, D: Deserializer<'de>> Deserializer<'de> for ObjectOnly<D> {
    type Error = D::Error;
    fn deserialize_any<V: serde::de::Visitor<'de>>(self, v: V) -> Result<V::Value, D::Error> {
        self.0.deserialize_map(v)
    }
    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map struct enum identifier ignored_any
    }
}

/// A message read through [`ObjectOnly`].
struct Object<T>(T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Object<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        T::deserialize(ObjectOnly(d)).map(Object)
    }
}

/// A message field: an object, or `null` (absent, as proto3 JSON reads it).
fn object<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    Ok(Option::<Object<T>>::deserialize(d)?.map(|Object(t)| t))
}

/// A repeated message field: an array of objects, or `null` (empty, as proto3
/// JSON reads it).
fn objects<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Vec<T>, D::Error> {
    struct V<T>(std::marker::PhantomData<T>);
    impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for V<T> {
        type Value = Vec<T>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an array of objects, or null")
        }
        fn visit_unit<E: serde::de::Error>(self) -> Result<Vec<T>, E> {
            Ok(Vec::new())
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
            let mut out = Vec::new();
            while let Some(Object(t)) = seq.next_element::<Object<T>>()? {
                out.push(t);
            }
            Ok(out)
        }
    }
    d.deserialize_any(V(std::marker::PhantomData))
}

/// A scalar field: `null` reads as its default, as proto3 JSON reads it.
fn or_default<'de, D: Deserializer<'de>, T: Deserialize<'de> + Default>(
    d: D,
) -> Result<T, D::Error> {
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
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
    fn child(self, field: u32) -> Option<Kind> {
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

/// The walk under [`count_elements`]: keys, lengths and skipped fields
/// (groups too, to prost's recursion limit) are read by `prost::encoding`,
/// so it refuses what prost's decoder refuses in the wire format itself.
fn walk(mut buf: &[u8], kind: Kind, count: &mut u64, limit: u64) -> Result<(), ScanError> {
    use prost::encoding::{DecodeContext, WireType, decode_key, decode_varint, skip_field};
    let malformed = |_: prost::DecodeError| ScanError::Malformed;
    while !buf.is_empty() {
        let (tag, wire_type) = decode_key(&mut buf).map_err(malformed)?;
        match (wire_type, kind.child(tag)) {
            (WireType::LengthDelimited, Some(child)) => {
                let len = decode_varint(&mut buf).map_err(malformed)?;
                let n = usize::try_from(len).map_err(|_| ScanError::Malformed)?;
                if buf.len() < n {
                    return Err(ScanError::Malformed);
                }
                let (sub, rest) = buf.split_at(n);
                buf = rest;
                *count += 1;
                if *count > limit {
                    return Err(ScanError::TooMany);
                }
                if child != Kind::Leaf {
                    walk(sub, child, count, limit)?;
                }
            }
            _ => {
                skip_field(wire_type, tag, &mut buf, DecodeContext::default()).map_err(malformed)?
            }
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
/// element is a JSON object (the decoder takes no other form), so it has a `{`
/// (braces inside strings only make the bound looser).
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
        Value::Other => None,
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
        assert_eq!(attrs[2].value.as_ref().unwrap().value, Some(Value::Other));
        assert_eq!(get_str(attrs, "b"), None);
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
        let j = r#"{"key":"k","value":{"boolValue":true,"intValue":7}}"#;
        let kv: KeyValue = serde_json::from_str(j).unwrap();
        assert_eq!(kv.value.unwrap().value, Some(Value::IntValue(7)));
        assert!(
            serde_json::from_str::<KeyValue>(r#"{"key":"k","value":{"intValue":"x"}}"#).is_err()
        );
    }

    /// What the lean `Value` of a full `opentelemetry-proto` value is.
    fn lean_of(full: Option<&trace_proto::otlp::Value>) -> Option<Value> {
        use trace_proto::otlp::Value as V;
        full.map(|v| match v {
            V::StringValue(s) => Value::StringValue(s.clone()),
            V::IntValue(i) => Value::IntValue(*i),
            _ => Value::Other,
        })
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
        let lean = KeyValue::decode(bytes);
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
        let lean = KeyValue::decode(kv_bytes(&[&boolean, &s("n1")]).as_slice()).unwrap();
        assert_eq!(
            KeyValue::decode(lean.encode_to_vec().as_slice()).unwrap(),
            lean
        );
    }

    /// OTLP/JSON `AnyValue`: the last non-null member wins, as in
    /// `opentelemetry-proto` and the Collector; proto field names work too.
    #[test]
    fn json_any_value_last_member_wins() {
        let read = |v: &str| {
            let j = format!(r#"{{"key":"k","value":{v}}}"#);
            let lean = serde_json::from_str::<KeyValue>(&j).unwrap();
            let full = serde_json::from_str::<trace_proto::otlp::KeyValue>(&j).unwrap();
            let lean = lean.value.and_then(|v| v.value);
            assert_eq!(
                lean,
                lean_of(full.value.as_ref().and_then(|v| v.value.as_ref())),
                "{v}"
            );
            lean
        };
        let n1 = Some(Value::StringValue("n1".into()));
        assert_eq!(
            read(r#"{"stringValue":"n1","intValue":"5"}"#),
            Some(Value::IntValue(5))
        );
        assert_eq!(read(r#"{"intValue":5,"stringValue":"n1"}"#), n1);
        assert_eq!(
            read(r#"{"stringValue":"n1","boolValue":true}"#),
            Some(Value::Other)
        );
        assert_eq!(read(r#"{"stringValue":"x","stringValue":"n1"}"#), n1);
        assert_eq!(read(r#"{"stringValue":"n1","intValue":null}"#), n1);
        assert_eq!(read(r#"{"stringValue":"n1","kvlistValue":null}"#), n1);
        assert_eq!(
            read(r#"{"stringValue":"n1","kvlistValue":{"values":[]}}"#),
            Some(Value::Other)
        );
        assert_eq!(read(r#"{"stringValue":"n1","unknown":[1,{"a":2}]}"#), n1);
        assert_eq!(read(r#"{}"#), None);
        assert_eq!(read(r#"null"#), None);
        // proto field names (proto3 JSON accepts both; opentelemetry-proto only camelCase)
        let kv: KeyValue =
            serde_json::from_str(r#"{"key":"k","value":{"string_value":"a","int_value":"9"}}"#)
                .unwrap();
        assert_eq!(kv.value.unwrap().value, Some(Value::IntValue(9)));
    }

    /// issue 9: OTLP/JSON messages are objects. Arrays in their place (which
    /// serde's derive would read field by field, unseen by the `{` count) are
    /// rejected wherever a message is expected.
    #[test]
    fn json_messages_must_be_objects() {
        for bad in [
            r#"{"resourceSpans":[[null,[[[[]]]]]]}"#,
            r#"{"resourceSpans":[{"scopeSpans":[{"spans":[[],[]]}]}]}"#,
            r#"{"resourceSpans":[{"resource":[[]]}]}"#,
            r#"{"resourceSpans":[{"scopeSpans":[[null,[{}]]]}]}"#,
            r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"attributes":[["k",{}]]}]}]}]}"#,
            r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"attributes":[{"key":"k","value":["x"]}]}]}]}]}"#,
            r#"{"resourceSpans":{"scopeSpans":[]}}"#,
            r#"{"resourceSpans":[null]}"#,
        ] {
            assert!(serde_json::from_str::<TraceRequest>(bad).is_err(), "{bad}");
        }
        // The object form of the first is fine.
        let ok = r#"{"resourceSpans":[{"resource":null,"scopeSpans":[{"spans":[{}]}]}]}"#;
        let req: TraceRequest = serde_json::from_str(ok).unwrap();
        assert_eq!(req.resource_spans[0].scope_spans[0].spans.len(), 1);
    }

    /// issue 9: proto3 JSON reads `null` as the field's default: an empty list,
    /// an absent message, an empty key. The request is not rejected.
    #[test]
    fn json_null_is_default() {
        let req: TraceRequest = serde_json::from_str(r#"{"resourceSpans":null}"#).unwrap();
        assert!(req.resource_spans.is_empty());
        let j = r#"{"resourceSpans":[{"resource":{"attributes":null},"scopeSpans":[
            {"spans":null},{"spans":[{"attributes":null},
            {"attributes":[{"key":null,"value":{"intValue":"1"}},{"key":"s","value":null}]}]}]}]}"#;
        let req: TraceRequest = serde_json::from_str(j).unwrap();
        let rs = &req.resource_spans[0];
        assert!(rs.resource.as_ref().unwrap().attributes.is_empty());
        assert!(rs.scope_spans[0].spans.is_empty());
        let spans = &rs.scope_spans[1].spans;
        assert!(spans[0].attributes.is_empty());
        assert_eq!(get_u64(&spans[1].attributes, ""), Some(1));
        assert_eq!(spans[1].attributes[1].value, None);
        // proto field names
        let j = r#"{"resource_spans":[{"scope_spans":[{"spans":[{}]}]}]}"#;
        let req: TraceRequest = serde_json::from_str(j).unwrap();
        assert_eq!(req.resource_spans[0].scope_spans[0].spans.len(), 1);
    }
}
