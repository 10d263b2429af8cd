//! Building the spans and requests trace-gen sends. The resource carries who
//! sent it (node, pod, generator id), each span carries its sequence number.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::Rng;

use crate::keys;
use crate::otlp::{
    ExportTraceServiceRequest, KeyValue, Resource, ResourceSpans, ScopeSpans, Span, kv_int,
};
use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use prost::encoding::{
    WireType, bytes, encode_key, encode_varint, encoded_len_varint, fixed64, int32, int64, key_len,
    message, string,
};

/// Name of every span trace-gen builds.
pub const SPAN_NAME: &str = "trace-gen";

/// Instrumentation scope name of trace-gen's spans.
pub const SCOPE_NAME: &str = "trace-gen";

fn nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// One span with random trace and span ids, ending `now`, lasting one millisecond,
/// carrying the sequence number `seq` under [`keys::SEQUENCE`].
pub fn build_span(seq: u64, now: SystemTime, rng: &mut impl Rng) -> Span {
    let end = nanos(now);
    let start = nanos(now - Duration::from_millis(1));
    Span {
        trace_id: rng.random::<[u8; 16]>().to_vec(),
        span_id: rng.random::<[u8; 8]>().to_vec(),
        name: SPAN_NAME.to_owned(),
        kind: SpanKind::Client as i32,
        start_time_unix_nano: start,
        end_time_unix_nano: end,
        attributes: vec![kv_int(
            keys::SEQUENCE,
            i64::try_from(seq).unwrap_or(i64::MAX),
        )],
        ..Default::default()
    }
}

/// One export request: one resource, one scope, the given spans.
pub fn build_request(
    resource_attributes: &[KeyValue],
    spans: Vec<Span>,
) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: resource_attributes.to_vec(),
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: SCOPE_NAME.to_owned(),
                    version: env!("CARGO_PKG_VERSION").to_owned(),
                    ..Default::default()
                }),
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// A request of `seqs.len()` spans with the given sequence numbers, all ending now.
pub fn build_request_with_seqs(
    resource_attributes: &[KeyValue],
    seqs: impl IntoIterator<Item = u64>,
) -> ExportTraceServiceRequest {
    let now = SystemTime::now();
    let mut rng = rand::rng();
    let spans = seqs
        .into_iter()
        .map(|s| build_span(s, now, &mut rng))
        .collect();
    build_request(resource_attributes, spans)
}

/// A length-delimited field's key and length, written by prost's encoders.
#[inline]
fn put_len(out: &mut Vec<u8>, tag: u32, len: usize) {
    encode_key(tag, WireType::LengthDelimited, out);
    encode_varint(len as u64, out);
}

/// Bytes of a length-delimited field of `len` bytes: key, length, value.
#[inline]
const fn field_len(tag: u32, len: usize) -> usize {
    key_len(tag) + encoded_len_varint(len as u64) + len
}

/// The request [`build_request`] would make of [`build_span`]s for `seqs`
/// (the same random ids, drawn in the same order from `rng`), written straight
/// as protobuf bytes: byte for byte what prost encodes, without building a
/// `Span` per span (five allocations each) or walking them twice for lengths.
/// trace-gen sends these bytes as they are over gRPC and OTLP/HTTP protobuf.
///
/// Every key, varint and length is written and measured by `prost::encoding`
/// (the field numbers are those of `opentelemetry-proto`'s messages); what is
/// done by hand is only the order: the fixed part of a span is encoded once
/// per request, copied per span, and its ids filled in at the offsets prost's
/// lengths give.
pub fn encode_request(
    resource_attributes: &[KeyValue],
    seqs: std::ops::RangeInclusive<u64>,
    now: SystemTime,
    rng: &mut impl Rng,
) -> Vec<u8> {
    let end = nanos(now);
    let start = nanos(now - Duration::from_millis(1));
    let key = keys::SEQUENCE.to_owned();
    // The attribute's value is an int64: a sequence number beyond it is clamped.
    let clamp = |seq: u64| i64::try_from(seq).unwrap_or(i64::MAX);
    // Span.attributes = [KeyValue { key (1), value (2): AnyValue { int_value (3) } }].
    let any_len = |seq: i64| int64::encoded_len(3, &seq);
    let kv_len = |seq: i64| string::encoded_len(1, &key) + field_len(2, any_len(seq));
    // Every span is the same bytes but for its ids and sequence number: the
    // fixed part is encoded once, ids zeroed, and copied per span.
    let mut fixed = Vec::with_capacity(64 + SPAN_NAME.len());
    bytes::encode(1, &vec![0u8; 16], &mut fixed);
    let trace_id_at = fixed.len() - 16;
    bytes::encode(2, &vec![0u8; 8], &mut fixed);
    let span_id_at = fixed.len() - 8;
    string::encode(5, &SPAN_NAME.to_owned(), &mut fixed);
    int32::encode(6, &(SpanKind::Client as i32), &mut fixed);
    fixed64::encode(7, &start, &mut fixed);
    fixed64::encode(8, &end, &mut fixed);
    let span_len = |seq: i64| fixed.len() + field_len(9, kv_len(seq));
    // ScopeSpans.spans, measured first (arithmetic only) so that the spans are
    // written once, straight into the request, with no buffer per span.
    let spans_len: usize = seqs
        .clone()
        .map(|seq| field_len(2, span_len(clamp(seq))))
        .sum();
    // The envelope: the same as build_request's with no spans, plus the spans.
    let scope = InstrumentationScope {
        name: SCOPE_NAME.to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        ..Default::default()
    };
    let resource = Resource {
        attributes: resource_attributes.to_vec(),
        ..Default::default()
    };
    let scope_spans_len = message::encoded_len(1, &scope) + spans_len;
    let rs_len = message::encoded_len(1, &resource) + field_len(2, scope_spans_len);
    let total = field_len(1, rs_len);
    let mut out = Vec::with_capacity(total);
    put_len(&mut out, 1, rs_len);
    message::encode(1, &resource, &mut out);
    put_len(&mut out, 2, scope_spans_len);
    message::encode(1, &scope, &mut out);
    let mut attr_key = Vec::with_capacity(2 + key.len());
    string::encode(1, &key, &mut attr_key);
    for seq in seqs {
        let seq = clamp(seq);
        put_len(&mut out, 2, span_len(seq));
        let at = out.len();
        out.extend_from_slice(&fixed);
        // The same draws, in the same order, as build_span's.
        let trace_id = rng.random::<[u8; 16]>();
        let span_id = rng.random::<[u8; 8]>();
        out[at + trace_id_at..at + trace_id_at + 16].copy_from_slice(&trace_id);
        out[at + span_id_at..at + span_id_at + 8].copy_from_slice(&span_id);
        put_len(&mut out, 9, kv_len(seq));
        out.extend_from_slice(&attr_key);
        put_len(&mut out, 2, any_len(seq));
        int64::encode(3, &seq, &mut out);
    }
    debug_assert_eq!(out.len(), total);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::otlp::{get_u64, kv_str};

    /// Every span carries its sequence number and ids of the right length.
    #[test]
    fn spans_carry_sequence_and_ids() {
        let req = build_request_with_seqs(&[kv_str(keys::GENERATOR_NODE, "n1")], 5..8);
        let spans = &req.resource_spans[0].scope_spans[0].spans;
        let seqs: Vec<_> = spans
            .iter()
            .map(|s| get_u64(&s.attributes, keys::SEQUENCE).unwrap())
            .collect();
        assert_eq!(seqs, vec![5, 6, 7]);
        assert!(
            spans
                .iter()
                .all(|s| s.trace_id.len() == 16 && s.span_id.len() == 8)
        );
        assert!(
            spans
                .iter()
                .all(|s| s.end_time_unix_nano > s.start_time_unix_nano)
        );
        assert_ne!(spans[0].trace_id, spans[1].trace_id);
    }

    /// encode_request writes exactly what prost writes for build_request.
    #[test]
    fn encoded_request_is_what_prost_writes() {
        use prost::Message;
        use rand::SeedableRng;
        let res = [
            kv_str(keys::GENERATOR_NODE, "n1"),
            kv_str("x", "y".repeat(300)),
        ];
        let now = SystemTime::now();
        for seqs in [
            1..=1,
            1..=100,
            120..=135,
            16_383..=16_390,
            (1 << 40)..=(1 << 40) + 3,
            u64::MAX - 1..=u64::MAX,
            std::ops::RangeInclusive::new(5, 4), // empty
        ] {
            let mut a = rand::rngs::StdRng::seed_from_u64(7);
            let mut b = a.clone();
            let spans = seqs.clone().map(|s| build_span(s, now, &mut a)).collect();
            let want = build_request(&res, spans).encode_to_vec();
            assert_eq!(
                encode_request(&res, seqs.clone(), now, &mut b),
                want,
                "{seqs:?}"
            );
        }
        let mut rng = rand::rng();
        let big = encode_request(&res, 1..=2000, now, &mut rng);
        let decoded = ExportTraceServiceRequest::decode(big.as_slice()).unwrap();
        assert_eq!(decoded.resource_spans[0].scope_spans[0].spans.len(), 2000);
    }
}
