//! Element counting (`--max-request-elements`): the reference's protobuf count
//! (what the sink's one-pass scan is held to) never refuses what the lean
//! decode reads, bounds what it holds, and stops exactly at its limit; the
//! sink's OTLP/JSON `{` count bounds what the JSON decoder holds.
#![no_main]

#[path = "../../sink/tests/reference/mod.rs"]
mod reference;

use libfuzzer_sys::fuzz_target;
use prost::Message;
use reference::count::{CountError, count_elements};
use reference::lean;
use trace_sink::ingest::wire::{self, TraceRequest};

fuzz_target!(|data: &[u8]| {
    let count = count_elements(data, u64::MAX);
    match (lean::TraceRequest::decode(data), count) {
        (Ok(l), Ok(n)) => assert!(n >= reference::held(&TraceRequest::from(l))),
        (Ok(_), Err(e)) => panic!("the count refuses what the decoder reads: {e:?}"),
        _ => {}
    }
    if let Ok(n) = count {
        for limit in [0, n / 2, n.saturating_sub(1), n] {
            let expect = if n > limit {
                Err(CountError::TooMany)
            } else {
                Ok(n)
            };
            assert_eq!(count_elements(data, limit), expect, "limit {limit}");
        }
    }
    if let Ok(l) = serde_json::from_slice::<TraceRequest>(data) {
        assert!(wire::count_json_objects(data) >= reference::held(&l));
    }
});
