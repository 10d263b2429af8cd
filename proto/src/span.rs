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

/// Appends `v` as a protobuf varint.
#[inline]
fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Appends a length-delimited field's key and length.
#[inline]
fn put_len(out: &mut Vec<u8>, tag: u8, len: usize) {
    out.push((tag << 3) | 2);
    put_varint(out, len as u64);
}

/// The request [`build_request`] would make of [`build_span`]s for `seqs`
/// (the same random ids, drawn in the same order from `rng`), written straight
/// as protobuf bytes: byte for byte what prost encodes, without building a
/// `Span` per span (five allocations each) or walking them twice for lengths.
/// trace-gen sends these bytes as they are over gRPC and OTLP/HTTP protobuf.
pub fn encode_request(
    resource_attributes: &[KeyValue],
    seqs: std::ops::RangeInclusive<u64>,
    now: SystemTime,
    rng: &mut impl Rng,
) -> Vec<u8> {
    use prost::Message;
    let end = nanos(now).to_le_bytes();
    let start = nanos(now - Duration::from_millis(1)).to_le_bytes();
    let key = keys::SEQUENCE.as_bytes();
    // The attribute's value is an int64: a sequence number beyond it is clamped.
    let clamp = |seq: u64| i64::try_from(seq).unwrap_or(i64::MAX) as u64;
    // AnyValue { int_value } and KeyValue { key, value }.
    let any_len = |seq: u64| 1 + varint_len_u64(seq);
    let kv_len = |seq: u64| {
        1 + varint_len(key.len()) + key.len() + 1 + varint_len(any_len(seq)) + any_len(seq)
    };
    let span_len = |seq: u64| {
        let kv = kv_len(seq);
        2 + 16 + 2 + 8 + 2 + SPAN_NAME.len() + 2 + 9 + 9 + 1 + varint_len(kv) + kv
    };
    // ScopeSpans.spans, measured first (arithmetic only) so that the spans are
    // written once, straight into the request, with no buffer per span.
    let spans_len: usize = seqs
        .clone()
        .map(|seq| {
            let len = span_len(clamp(seq));
            1 + varint_len(len) + len
        })
        .sum();
    // The envelope: the same as build_request's with no spans, plus the spans.
    let scope = InstrumentationScope {
        name: SCOPE_NAME.to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        ..Default::default()
    }
    .encode_to_vec();
    let resource = Resource {
        attributes: resource_attributes.to_vec(),
        ..Default::default()
    }
    .encode_to_vec();
    let scope_spans_len = 1 + varint_len(scope.len()) + scope.len() + spans_len;
    let rs_len = 1
        + varint_len(resource.len())
        + resource.len()
        + 1
        + varint_len(scope_spans_len)
        + scope_spans_len;
    let total = 1 + varint_len(rs_len) + rs_len;
    let mut out = Vec::with_capacity(total);
    put_len(&mut out, 1, rs_len);
    put_len(&mut out, 1, resource.len());
    out.extend_from_slice(&resource);
    put_len(&mut out, 2, scope_spans_len);
    put_len(&mut out, 1, scope.len());
    out.extend_from_slice(&scope);
    // Every span is the same bytes but for its ids and sequence number: copy a
    // template of the fixed part, then fill the ids in place.
    let mut fixed = Vec::with_capacity(64 + SPAN_NAME.len());
    put_len(&mut fixed, 1, 16);
    fixed.extend_from_slice(&[0; 16]);
    put_len(&mut fixed, 2, 8);
    fixed.extend_from_slice(&[0; 8]);
    put_len(&mut fixed, 5, SPAN_NAME.len());
    fixed.extend_from_slice(SPAN_NAME.as_bytes());
    fixed.extend_from_slice(&[6 << 3, SpanKind::Client as u8]);
    fixed.push((7 << 3) | 1);
    fixed.extend_from_slice(&start);
    fixed.push((8 << 3) | 1);
    fixed.extend_from_slice(&end);
    let mut attr_key = Vec::with_capacity(2 + key.len());
    put_len(&mut attr_key, 1, key.len());
    attr_key.extend_from_slice(key);
    for seq in seqs {
        let seq = clamp(seq);
        put_len(&mut out, 2, span_len(seq));
        let at = out.len();
        out.extend_from_slice(&fixed);
        // The same draws, in the same order, as build_span's.
        let trace_id = rng.random::<[u8; 16]>();
        let span_id = rng.random::<[u8; 8]>();
        out[at + 2..at + 18].copy_from_slice(&trace_id);
        out[at + 20..at + 28].copy_from_slice(&span_id);
        put_len(&mut out, 9, kv_len(seq));
        out.extend_from_slice(&attr_key);
        put_len(&mut out, 2, any_len(seq));
        out.push(3 << 3);
        put_varint(&mut out, seq);
    }
    debug_assert_eq!(out.len(), total);
    out
}

fn varint_len(v: usize) -> usize {
    varint_len_u64(v as u64)
}

fn varint_len_u64(v: u64) -> usize {
    let mut n = 1;
    let mut v = v >> 7;
    while v > 0 {
        n += 1;
        v >>= 7;
    }
    n
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
