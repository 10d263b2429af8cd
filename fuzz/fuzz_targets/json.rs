//! OTLP/JSON: the sink's decode against the full `opentelemetry-proto` serde
//! types on any bytes. Whatever the full types read, the sink reads the same,
//! except the documented differences (a message that is not a JSON object is
//! refused; proto field names are read); the `{` count bounds what is held.
#![no_main]

#[path = "../../sink/tests/reference/mod.rs"]
mod reference;

use libfuzzer_sys::fuzz_target;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use trace_sink::ingest::{Traces, wire};

fuzz_target!(|data: &[u8]| {
    let ingest = reference::unbounded_ingest();
    let full = serde_json::from_slice::<ExportTraceServiceRequest>(data);
    let lean = ingest.decode_json::<Traces>(data);
    if let Ok(l) = &lean {
        assert!(wire::count_json_objects(data) >= reference::held(l));
    }
    match (&full, &lean) {
        (Ok(f), Ok(l)) if !reference::json_uses_proto_names(data) => {
            reference::assert_agree(f, l);
        }
        (Ok(_), Err(e)) => assert!(
            reference::json_refusal_explained(data, &e.message),
            "the sink refuses what the full types read: {e}"
        ),
        _ => {}
    }
});
