//! Protobuf: the sink's one-pass scan (what it really ingests with) against
//! the reference's count-then-decode path (element count, then lean prost
//! types: `sink/tests/reference/count.rs`), and that path against the full
//! `opentelemetry-proto` types, on any bytes. Whatever the full types read,
//! the reference reads the same; what only it reads, the full types refuse
//! for a field the sink does not read; the scan accepts, refuses and
//! attributes as the reference, but for the listed differences.
#![no_main]

#[path = "../../sink/tests/reference/mod.rs"]
mod reference;

use libfuzzer_sys::fuzz_target;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let ingest = reference::unbounded_ingest();
    let full = ExportTraceServiceRequest::decode(data);
    let lean = reference::count::decode(data, u64::MAX);
    // What the sink really ingests protobuf with: the one-pass scan.
    reference::assert_scan_agrees(ingest, data, &lean);
    match (&full, &lean) {
        (Ok(f), Ok(l)) => {
            reference::assert_agree(f, l);
            assert!(
                reference::count::count_elements(data, u64::MAX).unwrap() >= reference::held(l)
            );
        }
        (Ok(_), Err(e)) => panic!("the sink refuses what the full types read: {e}"),
        (Err(e), Ok(_)) => assert!(
            reference::unread(e),
            "the full types refuse it for a field the sink reads: {e}"
        ),
        (Err(_), Err(_)) => {}
    }
});
