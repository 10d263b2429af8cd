//! The reference's element count: what decoding a protobuf request into the
//! lean types of [`super::lean`] would allocate, counted without decoding it,
//! and the count-then-decode path that the sink's one-pass scan replaced
//! ([`decode`]).

use prost::Message;
use trace_proto::outcome::Outcome;
use trace_sink::ingest::{Rejected, wire};

use super::lean;

/// Why [`count_elements`] stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CountError {
    /// More elements than the limit.
    TooMany,
    /// Not valid protobuf (decoding would fail too).
    Malformed,
}

/// The messages of the lean types, by where they stand.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Request,
    ResourceSpans,
    Resource,
    ScopeSpans,
    Span,
    /// A `KeyValue`: counted, not entered.
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
fn walk(mut buf: &[u8], kind: Kind, count: &mut u64, limit: u64) -> Result<(), CountError> {
    use prost::encoding::{DecodeContext, WireType, decode_key, decode_varint, skip_field};
    let malformed = |_: prost::DecodeError| CountError::Malformed;
    while !buf.is_empty() {
        let (tag, wire_type) = decode_key(&mut buf).map_err(malformed)?;
        match (wire_type, kind.child(tag)) {
            (WireType::LengthDelimited, Some(child)) => {
                let len = decode_varint(&mut buf).map_err(malformed)?;
                let n = usize::try_from(len).map_err(|_| CountError::Malformed)?;
                if buf.len() < n {
                    return Err(CountError::Malformed);
                }
                let (sub, rest) = buf.split_at(n);
                buf = rest;
                *count += 1;
                if *count > limit {
                    return Err(CountError::TooMany);
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
/// `ExportTraceServiceRequest` into [`lean::TraceRequest`] would allocate:
/// resource spans, resources, scope spans, spans, and resource and span
/// attributes. Stops at `limit + 1`.
pub fn count_elements(protobuf: &[u8], limit: u64) -> Result<u64, CountError> {
    let mut count = 0;
    walk(protobuf, Kind::Request, &mut count, limit)?;
    Ok(count)
}

/// The path the one-pass scan replaced: count the elements against `limit`,
/// then decode the lean types with prost; refused as the sink refuses
/// (`too_large` beyond the limit, else `bad_request`).
pub fn decode(body: &[u8], limit: u64) -> Result<wire::TraceRequest, Rejected> {
    let bad = |message: String| Rejected {
        outcome: Outcome::BadRequest,
        message,
    };
    match count_elements(body, limit) {
        Err(CountError::TooMany) => {
            return Err(Rejected {
                outcome: Outcome::TooLarge,
                message: format!("request carries more than {limit} elements"),
            });
        }
        Err(CountError::Malformed) => {
            return Err(bad(
                "invalid OTLP protobuf message: malformed wire format".into()
            ));
        }
        Ok(_) => {}
    }
    lean::TraceRequest::decode(body)
        .map(wire::TraceRequest::from)
        .map_err(|e| bad(format!("invalid OTLP protobuf message: {e}")))
}
