//! Decoder parity with the OpenTelemetry Collector (issue 22): the sink must
//! accept exactly the OTLP/HTTP protobuf requests the collector's OTLP
//! receiver accepts (the decoder users otherwise run), and count the spans
//! the collector passes on.
//!
//! The collector is the one deploy/collector/build.sh builds from the official
//! modules (v0.165.0, pdata v1.71.0), with an OTLP/HTTP receiver and the debug
//! exporter. What it passed on is read from its own telemetry: the receiver's
//! `otelcol_receiver_accepted_spans` counts the spans of every request the
//! pipeline took, updated before the HTTP answer, so it needs no waiting and
//! no second decoder (an OTLP exporter into another trace-sink would count
//! with the very code under test, and asynchronously).
//!
//! The corpus: seed requests (the fuzz seeds' shapes plus one using every
//! field of the trace schema), mutated with a seeded RNG, and directed cases:
//! every known field of every trace message with every wire type, ids of every
//! length, bad UTF-8 and corrupt bytes in fields the sink does not read,
//! overlong and 10-byte varints, keys over 32 bits, groups, deep nesting.
//!
//! `#[ignore]`d like the other tests that build Go: `./run-tests.sh` runs it.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::common::v1::{ArrayValue, InstrumentationScope, KeyValueList};
use opentelemetry_proto::tonic::trace::v1::{Status, span};
use prost::Message;
use trace_proto::keys;
use trace_proto::otlp::{AnyValue, ExportTraceServiceRequest, KeyValue, Value, kv_int, kv_str};
use trace_proto::span::build_request_with_seqs;

/// Cases where the sink deliberately answers otherwise than the collector:
/// (name prefix, why). Each is documented in docs/trace-sink.md. None today.
const DELIBERATE_DIFFERENCES: &[(&str, &str)] = &[];

/// How many mutated requests are made from the seeds.
const MUTATED: usize = 10_000;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn collector_binary() -> PathBuf {
    let out = Command::new("bash")
        .arg(repo().join("deploy/collector/build.sh"))
        .stderr(Stdio::inherit())
        .output()
        .expect("run deploy/collector/build.sh");
    assert!(
        out.status.success(),
        "deploy/collector/build.sh failed: the collector is needed for this test (install Go, see README.md: What you need)"
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

struct Collector(Child);

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
    }
}

// ---- protobuf by hand: what prost's types cannot write ----

fn varint(n: u64) -> Vec<u8> {
    let mut v = Vec::new();
    prost::encoding::encode_varint(n, &mut v);
    v
}

fn key(field: u64, wt: u8) -> Vec<u8> {
    varint((field << 3) | u64::from(wt))
}

fn len_field(field: u64, payload: &[u8]) -> Vec<u8> {
    [
        key(field, 2),
        varint(payload.len() as u64),
        payload.to_vec(),
    ]
    .concat()
}

/// `inner` (the fields of a message) nested along `path` (field numbers from
/// the request down), each level a length-delimited field.
fn nest(path: &[u64], inner: Vec<u8>) -> Vec<u8> {
    path.iter().rev().fold(inner, |acc, &f| len_field(f, &acc))
}

/// A field with wire type `wt` and a well-formed value of that type
/// (`payload` for LEN).
fn field_of_type(field: u64, wt: u8, payload: &[u8]) -> Vec<u8> {
    match wt {
        0 => [key(field, 0), vec![0x01]].concat(),
        1 => [key(field, 1), vec![0; 8]].concat(),
        2 => len_field(field, payload),
        3 => [key(field, 3), key(1, 0), vec![0x01], key(field, 4)].concat(),
        4 => key(field, 4),
        5 => [key(field, 5), vec![0; 4]].concat(),
        _ => [key(field, wt), vec![0x01]].concat(),
    }
}

/// The trace schema as pdata v1.71.0 reads it: per message, its path from
/// the request, and its known fields with their wire types. `M` marks a
/// message field, `ID(n)` an id of n bytes, `S` a string or bytes field.
#[derive(Clone, Copy)]
enum Kind {
    Varint,
    I64,
    I32,
    S,
    M,
    Id(usize),
}

#[allow(clippy::type_complexity)]
fn schema() -> Vec<(&'static str, Vec<u64>, Vec<(u64, Kind)>)> {
    use Kind::*;
    let span = vec![1, 2, 2];
    let kv = [span.clone(), vec![9]].concat();
    let any = [kv.clone(), vec![2]].concat();
    vec![
        ("request", vec![], vec![(1, M)]),
        (
            "resource_spans",
            vec![1],
            vec![(1, M), (2, M), (3, S), (1000, M)],
        ),
        ("resource", vec![1, 1], vec![(1, M), (2, Varint), (3, M)]),
        (
            "entity_ref",
            vec![1, 1, 3],
            vec![(1, S), (2, S), (3, S), (4, S)],
        ),
        ("scope_spans", vec![1, 2], vec![(1, M), (2, M), (3, S)]),
        (
            "scope",
            vec![1, 2, 1],
            vec![(1, S), (2, S), (3, M), (4, Varint)],
        ),
        (
            "span",
            span.clone(),
            vec![
                (1, Id(16)),
                (2, Id(8)),
                (3, S),
                (4, Id(8)),
                (5, S),
                (6, Varint),
                (7, I64),
                (8, I64),
                (9, M),
                (10, Varint),
                (11, M),
                (12, Varint),
                (13, M),
                (14, Varint),
                (15, M),
                (16, I32),
            ],
        ),
        (
            "event",
            [span.clone(), vec![11]].concat(),
            vec![(1, I64), (2, S), (3, M), (4, Varint)],
        ),
        (
            "link",
            [span.clone(), vec![13]].concat(),
            vec![
                (1, Id(16)),
                (2, Id(8)),
                (3, S),
                (4, M),
                (5, Varint),
                (6, I32),
            ],
        ),
        (
            "status",
            [span.clone(), vec![15]].concat(),
            vec![(2, S), (3, Varint)],
        ),
        ("key_value", kv.clone(), vec![(1, S), (2, M), (3, Varint)]),
        (
            "any_value",
            any.clone(),
            vec![
                (1, S),
                (2, Varint),
                (3, Varint),
                (4, I64),
                (5, M),
                (6, M),
                (7, S),
                (8, Varint),
            ],
        ),
        ("array_value", [any.clone(), vec![5]].concat(), vec![(1, M)]),
        (
            "kvlist_value",
            [any.clone(), vec![6]].concat(),
            vec![(1, M)],
        ),
        (
            "kvlist_key_value",
            [any.clone(), vec![6, 1]].concat(),
            vec![(1, S), (2, M), (3, Varint)],
        ),
        (
            "resource_attribute",
            vec![1, 1, 1],
            vec![(1, S), (2, M), (3, Varint)],
        ),
    ]
}

/// Payloads for length-delimited fields: well-formed, not UTF-8, corrupt
/// (a key with field number 0, a truncated varint, a length past the end).
const PAYLOADS: [(&str, &[u8]); 6] = [
    ("empty", &[]),
    ("text", b"ok"),
    ("not-utf8", &[0xff, 0xfe, 0xc3, 0x28]),
    ("field-0", &[0x00, 0x01]),
    ("truncated-varint", &[0x08, 0x80]),
    ("past-the-end", &[0x0a, 0x05, 0x01]),
];

fn directed() -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    // Every known field of every message, with every wire type; LEN fields
    // with every payload; ids of every length.
    for (msg, path, fields) in schema() {
        for (f, kind) in fields {
            for wt in 0..=7u8 {
                if wt == 2 {
                    let mut payloads: Vec<(String, Vec<u8>)> = PAYLOADS
                        .iter()
                        .map(|(n, p)| (n.to_string(), p.to_vec()))
                        .collect();
                    if let Kind::Id(n) = kind {
                        for l in [n - 1, n, n + 1, 16 + 8 - n] {
                            payloads.push((format!("id-{l}"), vec![0xab; l]));
                        }
                    }
                    for (pname, p) in payloads {
                        out.push((
                            format!("field/{msg}.{f}/len/{pname}"),
                            nest(&path, field_of_type(f, 2, &p)),
                        ));
                    }
                } else {
                    out.push((
                        format!("field/{msg}.{f}/wt{wt}"),
                        nest(&path, field_of_type(f, wt, &[])),
                    ));
                }
            }
        }
        // Unknown fields of every wire type, and groups.
        for wt in 0..=7u8 {
            out.push((
                format!("unknown/{msg}/wt{wt}"),
                nest(&path, field_of_type(99, wt, b"x")),
            ));
        }
        let groups: [(&str, Vec<u8>); 8] = [
            ("empty-at-end", [key(50, 3), key(50, 4)].concat()),
            (
                "empty-then-field",
                [key(50, 3), key(50, 4), key(99, 0), vec![1]].concat(),
            ),
            (
                "matched",
                [key(50, 3), key(51, 0), vec![1], key(50, 4)].concat(),
            ),
            (
                "mismatched-end",
                [key(50, 3), key(51, 0), vec![1], key(52, 4)].concat(),
            ),
            ("unterminated", [key(50, 3), key(51, 0), vec![1]].concat()),
            ("stray-end", key(50, 4)),
            (
                "nested-300",
                [
                    key(50, 3).repeat(300),
                    key(51, 2),
                    vec![0],
                    key(50, 4).repeat(300),
                ]
                .concat(),
            ),
            (
                "nested-bad-wt",
                [key(50, 3), key(51, 7), vec![1], key(50, 4)].concat(),
            ),
        ];
        for (g, bytes) in groups {
            out.push((format!("group/{msg}/{g}"), nest(&path, bytes)));
        }
        // Keys over 32 bits (cut to 32 by the collector), field number 0,
        // a negative field number.
        for (kname, k) in [
            ("over-32-bits-unknown", (((1u64 << 32) | 99) << 3)),
            ("over-32-bits-to-field-1-varint", (((1u64 << 32) | 1) << 3)),
            ("over-32-bits-to-field-1-len", (((1u64 << 40) | 1) << 3) | 2),
            ("field-0", 0),
            ("negative", ((1u64 << 31) << 3)),
            ("max", !7),
        ] {
            let value = if k & 7 == 2 { vec![0x00] } else { vec![0x01] };
            out.push((
                format!("key/{msg}/{kname}"),
                nest(&path, [varint(k), value].concat()),
            ));
        }
    }
    // Varints: overlong (padded), 10 bytes with high bits in the last, 11 bytes.
    let kinds: [(&str, Vec<u8>); 8] = [
        ("overlong-2", vec![0x82, 0x00]),
        (
            "overlong-10",
            vec![0x82, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00],
        ),
        ("ten-bytes-last-01", [vec![0xff; 9], vec![0x01]].concat()),
        ("ten-bytes-last-02", [vec![0xff; 9], vec![0x02]].concat()),
        ("ten-bytes-last-7f", [vec![0xff; 9], vec![0x7f]].concat()),
        ("ten-bytes-last-80", [vec![0xff; 9], vec![0x80]].concat()),
        ("eleven-bytes", [vec![0x80; 10], vec![0x00]].concat()),
        ("truncated", vec![0xff; 5]),
    ];
    for (vname, v) in &kinds {
        // As a value (Span.kind, an int attribute, an unknown varint).
        out.push((
            format!("varint/span.kind/{vname}"),
            nest(&[1, 2, 2], [key(6, 0), v.clone()].concat()),
        ));
        out.push((
            format!("varint/int-value/{vname}"),
            nest(&[1, 2, 2, 9, 2], [key(3, 0), v.clone()].concat()),
        ));
        out.push((
            format!("varint/unknown/{vname}"),
            nest(&[1, 2, 2], [key(77, 0), v.clone()].concat()),
        ));
        // As a length (of an empty span: only padded zero lengths are whole).
        out.push((
            format!("varint/length/{vname}"),
            nest(&[1, 2], [key(2, 2), v.clone()].concat()),
        ));
    }
    // Deep nesting of AnyValue: arrays, kvlists and both alternating, around
    // the collector's limit.
    for depth in (1..=60).chain([100, 200]) {
        for shape in ["array", "kvlist", "mixed"] {
            let mut any = len_field(1, b"leaf"); // AnyValue { string_value }
            for level in 0..depth {
                let array = shape == "array" || (shape == "mixed" && level % 2 == 0);
                any = if array {
                    len_field(5, &len_field(1, &any))
                } else {
                    len_field(
                        6,
                        &len_field(1, &[len_field(1, b"k"), len_field(2, &any)].concat()),
                    )
                };
            }
            let kv = [len_field(1, b"deep"), len_field(2, &any)].concat();
            out.push((
                format!("nesting/{shape}/{depth}"),
                nest(
                    &[1, 2, 2],
                    [len_field(1, &[0x11; 16]), len_field(9, &kv)].concat(),
                ),
            ));
            out.push((
                format!("nesting/resource-{shape}/{depth}"),
                nest(&[1, 1], len_field(1, &kv)),
            ));
        }
    }
    // Deprecated ScopeSpans (field 1000), alone and beside scope_spans.
    let sp = len_field(2, &len_field(5, b"s"));
    out.push(("deprecated/alone".into(), nest(&[1], len_field(1000, &sp))));
    out.push((
        "deprecated/beside".into(),
        nest(&[1], [len_field(2, &sp), len_field(1000, &sp)].concat()),
    ));
    out.push((
        "deprecated/beside-corrupt".into(),
        nest(
            &[1],
            [len_field(2, &sp), len_field(1000, &[0x12, 0x05])].concat(),
        ),
    ));
    out
}

fn value(v: Value) -> Option<AnyValue> {
    Some(AnyValue { value: Some(v) })
}

/// The fuzz seeds' shapes (sink/examples/fuzz_seeds.rs) plus one request that
/// uses every field of the trace schema.
fn seeds() -> Vec<Vec<u8>> {
    let resource = [
        kv_str(keys::GENERATOR_NODE, "node-1"),
        kv_str(keys::AGENT_NODE, "node-1"),
        kv_str(keys::GENERATOR_ID, "gen-1"),
    ];
    let typical = build_request_with_seqs(&resource, 1..=3);
    let mut kinds = build_request_with_seqs(&resource[..1], 7..=7);
    let kv = |k: &str, v: Value| KeyValue {
        key: k.into(),
        value: value(v),
        ..Default::default()
    };
    kinds.resource_spans[0].scope_spans[0].spans[0]
        .attributes
        .extend([
            kv_int("n", -5),
            kv("b", Value::BoolValue(true)),
            kv("d", Value::DoubleValue(0.5)),
            kv("bytes", Value::BytesValue(vec![0, 1, 2])),
            kv(
                "array",
                Value::ArrayValue(ArrayValue {
                    values: vec![AnyValue {
                        value: Some(Value::StringValue("x".into())),
                    }],
                }),
            ),
        ]);
    let mut two = build_request_with_seqs(&[], 1..=2);
    two.resource_spans.push(two.resource_spans[0].clone());
    two.resource_spans[1].resource = None;
    let mut full = build_request_with_seqs(&resource, 1..=2);
    {
        let rs = &mut full.resource_spans[0];
        rs.schema_url = "https://example.invalid/schema".into();
        let ss = &mut rs.scope_spans[0];
        ss.scope = Some(InstrumentationScope {
            name: "lib".into(),
            version: "1.0".into(),
            attributes: vec![kv_str("scope.attr", "v")],
            dropped_attributes_count: 1,
        });
        ss.schema_url = "https://example.invalid/scope".into();
        let s = &mut ss.spans[0];
        s.trace_state = "k=v".into();
        s.parent_span_id = vec![3; 8];
        s.flags = 0x301;
        s.dropped_attributes_count = 2;
        s.attributes.push(kv(
            "kvlist",
            Value::KvlistValue(KeyValueList {
                values: vec![kv_int("inner", 1)],
            }),
        ));
        s.events = vec![span::Event {
            time_unix_nano: 5,
            name: "ev".into(),
            attributes: vec![kv_str("e", "v")],
            dropped_attributes_count: 1,
        }];
        s.dropped_events_count = 1;
        s.links = vec![span::Link {
            trace_id: vec![4; 16],
            span_id: vec![5; 8],
            trace_state: "l=v".into(),
            attributes: vec![kv_int("l", 2)],
            dropped_attributes_count: 1,
            flags: 0x100,
        }];
        s.dropped_links_count = 1;
        s.status = Some(Status {
            message: "fine".into(),
            code: 1,
        });
    }
    let mut all = [
        typical,
        kinds,
        two,
        full,
        ExportTraceServiceRequest::default(),
    ];
    // Fixed ids and times (the builder draws them), so every run sends the
    // same bytes.
    let mut n = 0u8;
    for s in all
        .iter_mut()
        .flat_map(|r| &mut r.resource_spans)
        .flat_map(|rs| &mut rs.scope_spans)
        .flat_map(|ss| &mut ss.spans)
    {
        n += 1;
        s.trace_id = vec![n; 16];
        s.span_id = vec![n; 8];
        s.start_time_unix_nano = 1_700_000_000_000_000_000 + u64::from(n);
        s.end_time_unix_nano = s.start_time_unix_nano + 1_000;
    }
    all.iter().map(|r| r.encode_to_vec()).collect()
}

/// xorshift64: a fixed seed, so every run sends the same corpus.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Bytes changed, flipped, cut, inserted, removed, set to protobuf-significant
/// values, or a slice of another seed spliced in.
fn mutated(seeds: &[Vec<u8>], n: usize) -> Vec<(String, Vec<u8>)> {
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    (0..n)
        .map(|i| {
            let s = rng.below(seeds.len() - 1); // not the empty request
            let mut b = seeds[s].clone();
            for _ in 0..1 + rng.below(3) {
                if b.is_empty() {
                    b.push(rng.next() as u8);
                    continue;
                }
                let at = rng.below(b.len());
                match rng.below(7) {
                    0 => b[at] = rng.next() as u8,
                    1 => b[at] ^= 1 << rng.below(8),
                    2 => b.truncate(at),
                    3 => b.insert(at, rng.next() as u8),
                    4 => {
                        b.remove(at);
                    }
                    5 => {
                        let donor = &seeds[rng.below(seeds.len() - 1)];
                        let from = rng.below(donor.len());
                        let to = from + rng.below(donor.len() - from + 1).min(16);
                        b.splice(at..at, donor[from..to].iter().copied());
                    }
                    _ => b[at] = [0x00, 0x7f, 0x80, 0xff, 0x0a, 0x12, 0x1b, 0x1c][rng.below(8)],
                }
            }
            (format!("mutated/{i}/seed-{s}"), b)
        })
        .collect()
}

/// POSTs every case to `url` over `lanes` keep-alive connections; the
/// answer per case: accepted (2xx) or refused (400).
async fn answers(url: &str, cases: Arc<Vec<(String, Vec<u8>)>>, lanes: usize) -> Vec<bool> {
    let mut tasks = Vec::new();
    for lane in 0..lanes {
        let url = url.to_owned();
        let cases = cases.clone();
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::builder()
                .pool_max_idle_per_host(1)
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap();
            let mut out = Vec::new();
            for i in (lane..cases.len()).step_by(lanes) {
                let (name, body) = &cases[i];
                let r = client
                    .post(&url)
                    .header("content-type", "application/x-protobuf")
                    .body(body.clone())
                    .send()
                    .await
                    .unwrap_or_else(|e| panic!("{url}: {name}: {e}"));
                let status = r.status().as_u16();
                let text = r.bytes().await.unwrap_or_default();
                assert!(
                    status == 200 || status == 400,
                    "{url}: {name}: unexpected status {status}: {}",
                    String::from_utf8_lossy(&text)
                );
                out.push((i, status == 200));
            }
            out
        }));
    }
    let mut all = vec![false; cases.len()];
    for t in tasks {
        for (i, ok) in t.await.unwrap() {
            all[i] = ok;
        }
    }
    all
}

/// The sum of `otelcol_receiver_accepted_spans` in the collector's metrics.
async fn collector_accepted_spans(metrics_url: &str) -> u64 {
    let text = reqwest::get(metrics_url)
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("otelcol_receiver_accepted_spans"))
        .collect();
    assert!(
        !lines.is_empty(),
        "no otelcol_receiver_accepted_spans in the collector's metrics"
    );
    lines
        .iter()
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap() as u64)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "builds the OpenTelemetry Collector with Go; run by ./run-tests.sh (cargo test -- --include-ignored)"]
async fn sink_accepts_what_the_collector_accepts() {
    let bin = collector_binary();
    let mut cases = directed();
    let n_directed = cases.len();
    cases.extend(mutated(&seeds(), MUTATED));
    for (i, s) in seeds().into_iter().enumerate() {
        cases.push((format!("seed/{i}"), s));
    }
    assert!(cases.len() >= 10_000);

    // A loopback address of our own so the fixed ports cannot collide.
    let ip = format!(
        "127.0.{}.{}",
        100 + std::process::id() % 100,
        2 + std::process::id() % 250
    );
    let dir = std::env::temp_dir().join(format!("collector-parity-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("config.yaml");
    std::fs::write(
        &config,
        format!(
            r#"receivers:
  otlp:
    protocols:
      http:
        endpoint: {ip}:4318
exporters:
  debug:
    verbosity: basic
service:
  telemetry:
    logs:
      level: error
    metrics:
      level: normal
      readers:
        - pull:
            exporter:
              prometheus:
                host: {ip}
                port: 8888
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [debug]
"#
        ),
    )
    .unwrap();
    let child = Command::new(&bin)
        .arg("--config")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the collector");
    let _collector = Collector(child);
    let metrics_url = format!("http://{ip}:8888/metrics");
    let mut up = false;
    for _ in 0..300 {
        if tokio::net::TcpStream::connect((ip.as_str(), 4318))
            .await
            .is_ok()
            && reqwest::get(&metrics_url).await.is_ok()
        {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(up, "the collector never listened on {ip}:4318 and :8888");
    let sink = common::start_default().await;

    let started = Instant::now();
    let cases = Arc::new(cases);
    let collector_url = format!("http://{ip}:4318/v1/traces");
    let sink_url = common::traces_url(&sink);
    let (by_collector, by_sink) = tokio::join!(
        answers(&collector_url, cases.clone(), 2),
        answers(&sink_url, cases.clone(), 2)
    );
    let elapsed = started.elapsed();

    let mut differ = Vec::new();
    let mut deliberate = 0;
    for (i, (name, bytes)) in cases.iter().enumerate() {
        if by_collector[i] == by_sink[i] {
            continue;
        }
        if DELIBERATE_DIFFERENCES
            .iter()
            .any(|(prefix, _)| name.starts_with(prefix))
        {
            deliberate += 1;
            continue;
        }
        differ.push(format!(
            "{name}: collector {}, sink {}: {bytes:02x?}",
            if by_collector[i] {
                "accepts"
            } else {
                "refuses"
            },
            if by_sink[i] { "accepts" } else { "refuses" },
        ));
    }
    let accepted = by_collector.iter().filter(|&&a| a).count();
    eprintln!(
        "{} cases ({n_directed} directed), {accepted} accepted by the collector, {deliberate} listed differences, sent to both in {elapsed:?}",
        cases.len()
    );
    assert!(
        differ.is_empty(),
        "{} of {} cases answered differently:\n{}",
        differ.len(),
        cases.len(),
        differ[..differ.len().min(40)].join("\n")
    );
    // Both outcomes were exercised in quantity.
    assert!(
        accepted > 1000 && cases.len() - accepted > 1000,
        "accepted {accepted} of {}",
        cases.len()
    );
    // The spans the collector passed on are the spans the sink counted.
    let passed_on = collector_accepted_spans(&metrics_url).await;
    assert!(passed_on > 0);
    assert_eq!(sink.stats().spans_total, passed_on);
    sink.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
