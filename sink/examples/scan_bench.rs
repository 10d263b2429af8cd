//! CPU per span of the protobuf decoder, the sink's hot path: times
//! `ingest::scan::scan` over trace-gen's requests of 100 and 1000 spans, each
//! span carrying a few typical attributes and a status, and prints the
//! thread's CPU time per span (Linux `/proc/thread-self/schedstat`, so that
//! other load on the machine does not count), the median of 9 rounds. Build
//! it optimized:
//!
//! `cargo run --release -p trace-sink --example scan_bench`

use std::hint::black_box;

use prost::Message;
use trace_proto::keys;
use trace_proto::otlp::{kv_int, kv_str};
use trace_proto::span::build_request_with_seqs;
use trace_sink::ingest::attribution::AttributionKeys;
use trace_sink::ingest::scan::scan;

fn request(spans: u64) -> Vec<u8> {
    let resource = [
        kv_str(keys::GENERATOR_NODE, "node-1"),
        kv_str(keys::AGENT_NODE, "node-1"),
        kv_str(keys::GENERATOR_ID, "gen-1"),
        kv_str("service.name", "trace-gen"),
    ];
    let mut req = build_request_with_seqs(&resource, 1..=spans);
    for s in &mut req.resource_spans[0].scope_spans[0].spans {
        s.attributes.extend([
            kv_str("http.request.method", "GET"),
            kv_str("url.path", "/api/v1/items"),
            kv_int("http.response.status_code", 200),
        ]);
        s.status = Some(opentelemetry_proto::tonic::trace::v1::Status {
            message: String::new(),
            code: 1,
        });
    }
    req.encode_to_vec()
}

/// Nanoseconds this thread has run on a CPU.
fn cpu_ns() -> u64 {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat")
        .expect("read /proc/thread-self/schedstat (Linux only)");
    stat.split_whitespace().next().unwrap().parse().unwrap()
}

fn main() {
    let keys = AttributionKeys::default();
    for spans in [100u64, 1000] {
        let bytes = request(spans);
        let iters = 200_000 / spans as usize;
        let mut rounds = Vec::new();
        for _ in 0..9 {
            let t = cpu_ns();
            for _ in 0..iters {
                let s = scan(black_box(&bytes), &keys, u64::MAX).expect("valid request");
                assert_eq!(s.spans, spans);
                black_box(s);
            }
            rounds.push((cpu_ns() - t) as f64 / (iters as f64 * spans as f64));
        }
        rounds.sort_by(|a, b| a.total_cmp(b));
        println!(
            "batch {spans}: {} bytes/request, {:.1} CPU ns/span (median of 9)",
            bytes.len(),
            rounds[4]
        );
    }
}
