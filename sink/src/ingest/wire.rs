//! The part of an OTLP/JSON trace export request the sink reads, as lean
//! serde types that decode from the same OTLP/JSON as
//! `ExportTraceServiceRequest`.
//!
//! Why not decode the full message: the sink needs a few attributes per
//! resource and one per span. Everything else (ids, names, events, links,
//! nested array and map values) is skipped by the decoder without being
//! allocated, which makes decoding faster and, above all, bounds memory: a
//! hostile request of millions of empty spans or nested values costs at most
//! one small struct per JSON object, and [`count_json_objects`] is checked
//! against the limit before decoding.
//!
//! Protobuf does not come here: the sink reads it in one pass with
//! [`super::scan`]. The tests' reference (`sink/tests/reference/`) decodes
//! protobuf into these same types with prost-derived twins, so that the scan
//! and this path are held to one attribution.
//!
//! What the sink reads decodes exactly as the reference decoders read it:
//! OTLP/JSON as the proto3 JSON mapping reads it (and `opentelemetry-proto`'s
//! serde types, where they follow it): camelCase or proto field names, int64 as
//! a number or a string, unknown fields ignored, `null` read as the field's
//! default (an empty list, an absent message, an empty key;
//! `opentelemetry-proto` rejects a `null` list), an `AnyValue` keeps its last
//! member (see [`AnyValue`]). Intentional differences, held by
//! `sink/tests/differential.rs`:
//! - fields and values the sink does not read are skipped without being
//!   checked, so a request the full types reject for, say, a malformed trace
//!   id, is accepted;
//! - an OTLP/JSON message must be a JSON object: serde's derived structs (and so
//!   `opentelemetry-proto`'s) also take an array of field values, a form proto3
//!   JSON does not have and that the element count would not see.

use serde::{Deserialize, Deserializer};
use trace_proto::json::Int64;

/// An export request: resource spans only.
#[derive(Clone, PartialEq, Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct TraceRequest {
    /// Resource spans (field 1 of `ExportTraceServiceRequest`).
    #[serde(alias = "resource_spans", deserialize_with = "objects")]
    pub resource_spans: Vec<ResourceSpans>,
}

/// `ResourceSpans`: the resource and its scope spans.
#[derive(Clone, PartialEq, Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ResourceSpans {
    /// The resource (field 1).
    #[serde(deserialize_with = "object")]
    pub resource: Option<Resource>,
    /// Scope spans (field 2).
    #[serde(alias = "scope_spans", deserialize_with = "objects")]
    pub scope_spans: Vec<ScopeSpans>,
}

/// `Resource`: its attributes.
#[derive(Clone, PartialEq, Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Resource {
    /// Attributes (field 1).
    #[serde(deserialize_with = "objects")]
    pub attributes: Vec<KeyValue>,
}

/// `ScopeSpans`: its spans (the scope is skipped).
#[derive(Clone, PartialEq, Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ScopeSpans {
    /// Spans (field 2).
    #[serde(deserialize_with = "objects")]
    pub spans: Vec<Span>,
}

/// `Span`: its attributes only.
#[derive(Clone, PartialEq, Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Span {
    /// Attributes (field 9).
    #[serde(deserialize_with = "objects")]
    pub attributes: Vec<KeyValue>,
}

/// `KeyValue`.
#[derive(Clone, PartialEq, Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct KeyValue {
    /// Key (field 1).
    #[serde(deserialize_with = "or_default")]
    pub key: String,
    /// Value (field 2).
    #[serde(deserialize_with = "object")]
    pub value: Option<AnyValue>,
}

/// `AnyValue`. The sink reads string and int values; the other kinds are
/// recognized but not materialized ([`Value::Other`]), so the value is the
/// *last* member of the object, as in the OTLP/JSON decoders (and as a
/// protobuf oneof keeps the last member it reads: the scan does the same).
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

#[cfg(test)]
mod tests {
    use super::*;
    use trace_proto::span::build_request_with_seqs;

    /// The lean types read the OTLP/JSON the full types write. (The protobuf
    /// reading of the same types is the tests' reference, `sink/tests/reference/`.)
    #[test]
    fn reads_full_requests() {
        use trace_proto::otlp::kv_str;
        let full = build_request_with_seqs(&[kv_str("k8s.node.name", "n1")], 1..=3);
        let json = serde_json::to_vec(&full).unwrap();
        let lean: TraceRequest = serde_json::from_slice(&json).unwrap();
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
    }

    /// The `{` count bounds the objects, braces in strings included.
    #[test]
    fn json_objects_are_counted() {
        assert_eq!(count_json_objects(br#"{"a":{"b":"{"}}"#), 3);
        assert_eq!(count_json_objects(b"[]"), 0);
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
