//! Protobuf: the sink's decode (element count, then the lean types) and its
//! one-pass scan (what it really ingests with) against
//! the full `opentelemetry-proto` types on any bytes. Whatever the full types
//! read, the sink reads the same; what only the sink reads, the full types
//! refuse for a field the sink does not read.
#![no_main]

#[path = "../../sink/tests/reference/mod.rs"]
mod reference;

use libfuzzer_sys::fuzz_target;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use trace_proto::protocol::Protocol;
use trace_sink::ingest::{Traces, wire};

fuzz_target!(|data: &[u8]| {
    let ingest = reference::unbounded_ingest();
    let full = ExportTraceServiceRequest::decode(data);
    let lean = ingest.decode::<Traces>(data, Protocol::HttpProtobuf);
    // What the sink really ingests protobuf with: the one-pass scan.
    reference::assert_scan_agrees(ingest, data, &lean);
    match (&full, &lean) {
        (Ok(f), Ok(l)) => {
            reference::assert_agree(f, l);
            assert!(wire::count_elements(data, u64::MAX).unwrap() >= reference::held(l));
        }
        (Ok(_), Err(e)) => panic!("the sink refuses what the full types read: {e}"),
        (Err(e), Ok(_)) => assert!(
            reference::unread(e),
            "the full types refuse it for a field the sink reads: {e}"
        ),
        (Err(_), Err(_)) => {}
    }
});
