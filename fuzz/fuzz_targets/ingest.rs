//! The whole ingest path (count, decode, attribution, accounting) on any
//! bytes, any protocol (the first byte picks it): never a panic; an accepted
//! request adds exactly its spans, a refused one adds none.
#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use trace_proto::protocol::Protocol;
use trace_sink::ingest::attribution::AttributionKeys;
use trace_sink::ingest::{Ingest, Traces};

fn ingest() -> &'static Ingest {
    static INGEST: OnceLock<Ingest> = OnceLock::new();
    INGEST.get_or_init(|| {
        Ingest::new(
            AttributionKeys::default(),
            10_000,
            100,
            64,
            1024,
            Arc::new(trace_sink::metrics::Metrics::new(100)),
            None,
        )
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let protocol =
        [Protocol::Grpc, Protocol::HttpProtobuf, Protocol::HttpJson][usize::from(pick) % 3];
    let ingest = ingest();
    let before = ingest.snapshot().spans_total;
    let added = match ingest.export::<Traces>(body, protocol, None) {
        Ok(accepted) => accepted.spans,
        Err(_) => 0,
    };
    let after = ingest.snapshot();
    assert_eq!(after.spans_total, before + added);
    assert_eq!(
        after.spans_total,
        after.routes.iter().map(|r| r.spans).sum::<u64>() + after.overflow_spans
    );
});
