//! The reference's protobuf reading of a request: lean prost types that decode
//! from the same bytes as `ExportTraceServiceRequest` but keep only what the
//! sink's attribution reads, converted into the sink's own lean types
//! ([`wire::TraceRequest`]) so that attribution runs on them unchanged.
//!
//! They read what they keep exactly as prost reads `opentelemetry-proto`'s
//! types: a repeated field appends, a message field sent twice is merged, a
//! scalar sent twice keeps the last, an `AnyValue` keeps its last member (see
//! [`AnyValue`]). Fields they do not keep are skipped by prost without being
//! checked, so a request the full types refuse for, say, a span name that is
//! not UTF-8 is read (the differential test lists that as `unread`).
//!
//! Test-only: the sink ingests protobuf with its one-pass scan
//! (`trace_sink::ingest::scan`), which the differential test, `tests/scan.rs`
//! and the `protobuf` fuzz target hold to these types.

use trace_sink::ingest::wire::{self, Value};

/// An export request: resource spans only.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TraceRequest {
    /// Resource spans (field 1 of `ExportTraceServiceRequest`).
    #[prost(message, repeated, tag = "1")]
    pub resource_spans: Vec<ResourceSpans>,
}

/// `ResourceSpans`: the resource and its scope spans.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ResourceSpans {
    /// The resource (field 1).
    #[prost(message, optional, tag = "1")]
    pub resource: Option<Resource>,
    /// Scope spans (field 2).
    #[prost(message, repeated, tag = "2")]
    pub scope_spans: Vec<ScopeSpans>,
}

/// `Resource`: its attributes.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Resource {
    /// Attributes (field 1).
    #[prost(message, repeated, tag = "1")]
    pub attributes: Vec<KeyValue>,
}

/// `ScopeSpans`: its spans (the scope is skipped).
#[derive(Clone, PartialEq, prost::Message)]
pub struct ScopeSpans {
    /// Spans (field 2).
    #[prost(message, repeated, tag = "2")]
    pub spans: Vec<Span>,
}

/// `Span`: its attributes only.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Span {
    /// Attributes (field 9).
    #[prost(message, repeated, tag = "9")]
    pub attributes: Vec<KeyValue>,
}

/// `KeyValue`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct KeyValue {
    /// Key (field 1).
    #[prost(string, tag = "1")]
    pub key: String,
    /// Value (field 2).
    #[prost(message, optional, tag = "2")]
    pub value: Option<AnyValue>,
}

/// `AnyValue`: string and int values are read; the other kinds are
/// recognized but not materialized ([`Value::Other`]), so the value is the
/// *last* member on the wire, as prost reads `opentelemetry-proto`'s oneof.
#[derive(Clone, PartialEq, Debug, Default)]
pub struct AnyValue {
    /// The value; `None` when no member is present.
    pub value: Option<Value>,
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

fn key_values(attrs: Vec<KeyValue>) -> Vec<wire::KeyValue> {
    attrs
        .into_iter()
        .map(|kv| wire::KeyValue {
            key: kv.key,
            value: kv.value.map(|v| wire::AnyValue { value: v.value }),
        })
        .collect()
}

/// What the reference read, as the sink's own lean types (attribution reads those).
impl From<TraceRequest> for wire::TraceRequest {
    fn from(req: TraceRequest) -> Self {
        wire::TraceRequest {
            resource_spans: req
                .resource_spans
                .into_iter()
                .map(|rs| wire::ResourceSpans {
                    resource: rs.resource.map(|r| wire::Resource {
                        attributes: key_values(r.attributes),
                    }),
                    scope_spans: rs
                        .scope_spans
                        .into_iter()
                        .map(|ss| wire::ScopeSpans {
                            spans: ss
                                .spans
                                .into_iter()
                                .map(|s| wire::Span {
                                    attributes: key_values(s.attributes),
                                })
                                .collect(),
                        })
                        .collect(),
                })
                .collect(),
        }
    }
}
