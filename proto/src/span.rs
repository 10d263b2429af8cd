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
}
