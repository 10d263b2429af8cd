//! Differential test (issue 9): the sink's lean reading of a request against
//! the full `opentelemetry-proto` types, on generated requests and on mutations
//! of them, protobuf and OTLP/JSON.
//!
//! What is held, for every input (the module documentation of `ingest::wire`
//! for OTLP/JSON and of the reference's `lean` types for protobuf say why):
//! - whatever the full types accept, the sink accepts, and it reads the same
//!   thing: the same resource spans, scope spans and spans, and every resource
//!   and span attribute with the same key and the same value (string, int, or
//!   another kind), so every attribute the sink reads agrees;
//! - what the sink accepts and the full types refuse is refused for a field or
//!   value the sink does not read (protobuf: the decode error's path names one),
//!   or is one of the documented OTLP/JSON differences (`documented_json_differences`);
//! - the element count bounds what the lean decode holds;
//! - protobuf: the one-pass scan the sink really ingests with (`Ingest::scan`)
//!   accepts and refuses the same inputs as the reference's count-then-decode
//!   path (`reference::count::decode`) and attributes them the same
//!   (`reference::assert_scan_agrees`).
//!
//! A seeded generator, so a failure is reproducible: it prints the seed and the input.

mod reference;

use prost::Message;
use reference::*;
use trace_proto::otlp::ExportTraceServiceRequest;
use trace_sink::ingest::Traces;
use trace_sink::ingest::wire;

use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList, any_value,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status, span};

/// splitmix64: small, seeded, good enough to drive a generator.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
    fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
        from[self.below(from.len())]
    }
}

fn any_value(rng: &mut Rng, depth: u32) -> AnyValue {
    use any_value::Value as V;
    let value = match rng.below(if depth > 2 { 6 } else { 9 }) {
        0 => None,
        1 | 2 => Some(V::StringValue(
            rng.pick(&["n1", "n2", "g-1", "", "12", "-3", "é"]).into(),
        )),
        3 => Some(V::IntValue([0, 1, 7, -1, i64::MAX, 1 << 40][rng.below(6)])),
        4 => Some(V::BoolValue(rng.chance(50))),
        5 => Some(V::DoubleValue(1.5)),
        6 => {
            let n = rng.below(4);
            Some(V::BytesValue(rng.bytes(n)))
        }
        7 => Some(V::ArrayValue(ArrayValue {
            values: (0..rng.below(3))
                .map(|_| any_value(rng, depth + 1))
                .collect(),
        })),
        _ => Some(V::KvlistValue(KeyValueList {
            values: attributes(rng, depth + 1),
        })),
    };
    AnyValue { value }
}

fn attributes(rng: &mut Rng, depth: u32) -> Vec<KeyValue> {
    (0..rng.below(5))
        .map(|_| KeyValue {
            key: rng.pick(KEYS).into(),
            value: (!rng.chance(10)).then(|| any_value(rng, depth)),
            ..Default::default()
        })
        .collect()
}

fn random_span(rng: &mut Rng) -> Span {
    Span {
        trace_id: rng.bytes(16),
        span_id: rng.bytes(8),
        name: rng.pick(&["span", "", "GET /"]).into(),
        kind: rng.below(6) as i32,
        start_time_unix_nano: rng.next() >> 8,
        attributes: attributes(rng, 0),
        events: (0..rng.below(2))
            .map(|_| span::Event {
                name: "e".into(),
                attributes: attributes(rng, 1),
                ..Default::default()
            })
            .collect(),
        status: rng.chance(30).then(|| Status {
            message: "m".into(),
            code: 2,
        }),
        ..Default::default()
    }
}

fn random_request(rng: &mut Rng) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: (0..rng.below(4))
            .map(|_| ResourceSpans {
                resource: rng.chance(85).then(|| Resource {
                    attributes: attributes(rng, 0),
                    ..Default::default()
                }),
                scope_spans: (0..rng.below(3))
                    .map(|_| ScopeSpans {
                        scope: rng.chance(50).then(|| InstrumentationScope {
                            name: "lib".into(),
                            ..Default::default()
                        }),
                        spans: (0..rng.below(4)).map(|_| random_span(rng)).collect(),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            })
            .collect(),
    }
}

fn mutate(rng: &mut Rng, bytes: &mut Vec<u8>, donor: &[u8]) {
    for _ in 0..1 + rng.below(3) {
        let len = bytes.len();
        match rng.below(7) {
            0 if len > 0 => {
                let i = rng.below(len);
                bytes[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                bytes[i] = rng.next() as u8;
            }
            2 => {
                let i = rng.below(len + 1);
                bytes.insert(i, rng.next() as u8);
            }
            3 if len > 0 => {
                let i = rng.below(len);
                let n = 1 + rng.below((len - i).min(8));
                bytes.drain(i..i + n);
            }
            4 if len > 0 => bytes.truncate(rng.below(len)),
            5 if len > 0 => {
                let i = rng.below(len);
                let n = 1 + rng.below((len - i).min(32));
                let slice = bytes[i..i + n].to_vec();
                let at = rng.below(len + 1);
                bytes.splice(at..at, slice);
            }
            _ if !donor.is_empty() => {
                let i = rng.below(donor.len());
                let n = 1 + rng.below((donor.len() - i).min(64));
                let at = rng.below(len + 1);
                bytes.splice(at..at, donor[i..i + n].iter().copied());
            }
            _ => {}
        }
    }
}

/// Protobuf: generated requests agree exactly; mutated ones are accepted by
/// the sink whenever the full types accept them, and read the same.
#[test]
fn protobuf_agrees_with_opentelemetry_proto() {
    let ingest = unbounded_ingest();
    let mut rng = Rng(0x5eed_0001);
    let (mut both_ok, mut lean_only, mut both_err) = (0, 0, 0);
    let mut donor = Vec::new();
    for case in 0..400 {
        let full = random_request(&mut rng);
        let bytes = full.encode_to_vec();
        let lean = reference::count::decode(&bytes, u64::MAX)
            .unwrap_or_else(|e| panic!("case {case}: {e}"));
        assert_agree(&full, &lean);
        assert!(reference::count::count_elements(&bytes, u64::MAX).unwrap() >= held(&lean));
        assert_scan_agrees(ingest, &bytes, &Ok(lean));
        for m in 0..20 {
            let mut input = bytes.clone();
            mutate(&mut rng, &mut input, &donor);
            let full = ExportTraceServiceRequest::decode(input.as_slice());
            let lean = reference::count::decode(&input, u64::MAX);
            assert_scan_agrees(ingest, &input, &lean);
            let ctx = || format!("case {case}.{m}: input {input:02x?}");
            match (&full, &lean) {
                (Ok(f), Ok(l)) => {
                    both_ok += 1;
                    assert_agree(f, l);
                    assert!(
                        reference::count::count_elements(&input, u64::MAX).unwrap() >= held(l),
                        "{}",
                        ctx()
                    );
                }
                (Ok(_), Err(e)) => {
                    panic!("{}: the sink refuses what the full types read: {e}", ctx())
                }
                (Err(e), Ok(_)) => {
                    lean_only += 1;
                    assert!(
                        unread(e),
                        "{}: the full types refuse it for a field the sink reads: {e}",
                        ctx()
                    );
                }
                (Err(_), Err(_)) => both_err += 1,
            }
        }
        donor = bytes;
    }
    eprintln!(
        "protobuf mutations: {both_ok} read by both, {lean_only} by the sink only, {both_err} by neither"
    );
    // The mutations reach every outcome, so the assertions above were exercised.
    assert!(
        both_ok > 500 && lean_only > 100 && both_err > 500,
        "{both_ok} {lean_only} {both_err}"
    );
}

/// OTLP/JSON written by the full types (camelCase, int64 as strings, hex ids)
/// and variations of it that proto3 JSON allows: both read the same.
#[test]
fn json_agrees_with_opentelemetry_proto() {
    let ingest = unbounded_ingest();
    let mut rng = Rng(0x5eed_0002);
    let (mut both_ok, mut lean_only, mut both_err) = (0, 0, 0);
    for case in 0..300 {
        let full = random_request(&mut rng);
        let mut text = serde_json::to_string(&full).unwrap();
        // Variations: ints as numbers, an earlier member that the later one
        // overrides, a null member, which both ignore.
        if rng.chance(50) {
            text = text.replace(r#""intValue":"7""#, r#""intValue":7"#);
        }
        if rng.chance(50) {
            text = text.replace(r#"{"stringValue""#, r#"{"boolValue":false,"stringValue""#);
        }
        if rng.chance(50) {
            text = text.replace(
                r#"{"intValue""#,
                r#"{"kvlistValue":null,"stringValue":"s","intValue""#,
            );
        }
        let reference: ExportTraceServiceRequest = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("case {case}: the full types refuse {text}: {e}"));
        let lean = ingest
            .decode_json::<Traces>(text.as_bytes())
            .unwrap_or_else(|e| panic!("case {case}: {e}: {text}"));
        assert_agree(&reference, &lean);
        assert!(wire::count_json_objects(text.as_bytes()) >= held(&lean));
        for m in 0..10 {
            let mut input = text.clone().into_bytes();
            mutate(&mut rng, &mut input, b"{}[]:,\"null 0");
            let full = serde_json::from_slice::<ExportTraceServiceRequest>(&input);
            let lean = ingest.decode_json::<Traces>(&input);
            let ctx = || format!("case {case}.{m}: {}", String::from_utf8_lossy(&input));
            match (&full, &lean) {
                (Ok(f), Ok(l)) => {
                    both_ok += 1;
                    if !json_uses_proto_names(&input) {
                        assert_agree(f, l);
                    }
                    assert!(wire::count_json_objects(&input) >= held(l), "{}", ctx());
                }
                (Ok(_), Err(e)) => assert!(
                    json_refusal_explained(&input, &e.message),
                    "{}: the sink refuses what the full types read: {e}",
                    ctx()
                ),
                (Err(_), Ok(_)) => lean_only += 1,
                (Err(_), Err(_)) => both_err += 1,
            }
        }
    }
    eprintln!(
        "JSON mutations: {both_ok} read by both, {lean_only} by the sink only, {both_err} by neither"
    );
    assert!(
        both_ok > 100 && both_err > 500,
        "{both_ok} {lean_only} {both_err}"
    );
}

/// The documented OTLP/JSON differences, as they are: where the sink follows
/// proto3 JSON and `opentelemetry-proto`'s serde types do not.
#[test]
fn documented_json_differences() {
    let ingest = unbounded_ingest();
    let decode = |j: &str| ingest.decode_json::<Traces>(j.as_bytes());
    let full = |j: &str| serde_json::from_str::<ExportTraceServiceRequest>(j);
    // `null` for a repeated field: empty for the sink (proto3 JSON), an error for the full types.
    let j = r#"{"resourceSpans":[{"scopeSpans":null}]}"#;
    assert!(decode(j).unwrap().resource_spans[0].scope_spans.is_empty());
    assert!(full(j).is_err());
    // A message written as an array: refused by the sink (proto3 JSON has no
    // such form), read field by field by serde's derive.
    let j = r#"{"resourceSpans":[[null,[]]]}"#;
    assert!(decode(j).is_err());
    assert_eq!(full(j).unwrap().resource_spans.len(), 1);
    // Proto field names: read by the sink (proto3 JSON), ignored by the full types.
    let j = r#"{"resource_spans":[{"scope_spans":[{"spans":[{}]}]}]}"#;
    assert_eq!(
        decode(j).unwrap().resource_spans[0].scope_spans[0]
            .spans
            .len(),
        1
    );
    assert!(full(j).unwrap().resource_spans.is_empty());
    // ... and so checked by the sink only (fuzz finding: a key that is not UTF-8 inside).
    let j = b"{\"resource_spans\":[{\"re\xa2ource\":null}]}";
    assert!(ingest.decode_json::<Traces>(j).is_err());
    assert!(serde_json::from_slice::<ExportTraceServiceRequest>(j).is_ok());
    assert!(json_explains_refusal(j));
    // A field the sink does not read, malformed: accepted by the sink only.
    let j = r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"not hex"}]}]}]}"#;
    assert_eq!(
        decode(j).unwrap().resource_spans[0].scope_spans[0]
            .spans
            .len(),
        1
    );
    assert!(full(j).is_err());
}

/// A well-formed group at the top level of a request, found by the `protobuf`
/// fuzz target: prost skips the whole group, pdata (the collector) ends it
/// after its first field and refuses the end tag left over. The scan answers
/// as the collector, and the reference lists that as a known difference.
#[test]
fn a_group_prost_skips_is_refused_as_the_collector_refuses_it() {
    let input = [
        0x38, 0xd6, 0x15, 0x7d, 0x5c, 0x9c, 0xa0, 0x07, 0x73, 0x65, 0x72, 0x76, 0x69, 0x63, 0x65,
        0x2e, 0x6e, 0x00, 0x09, 0x74,
    ];
    let ingest = unbounded_ingest();
    let lean = reference::count::decode(&input, u64::MAX);
    assert!(
        lean.is_ok(),
        "prost's lean decode skips the group: {lean:?}"
    );
    let scanned = ingest.scan::<Traces>(&input);
    assert!(scanned.is_err(), "the scan refuses it as pdata does");
    assert_scan_agrees(ingest, &input, &lean);
}

/// A message that is not an object (`"resource": []`) in a text whose unknown
/// field holds bytes that are not UTF-8, found by the `json` fuzz target: the
/// full types read it (serde skips the unknown string unchecked and reads a
/// struct from an array), the sink refuses it, and the reference explains the
/// refusal by the message's shape.
#[test]
fn a_non_object_message_beside_bytes_that_are_not_utf8_is_a_listed_refusal() {
    let mut input = br#"{"resourceSpans":[{"resource":[],"dmecUrl":""#.to_vec();
    input.extend([0xff; 16]);
    input.extend(br#""}]}"#);
    let ingest = unbounded_ingest();
    assert!(
        serde_json::from_slice::<
            opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest,
        >(&input)
        .is_ok()
    );
    assert!(ingest.decode_json::<Traces>(&input).is_err());
    assert!(json_explains_refusal(&input));
}

/// A message that is not an object beside a number a `Value` cannot hold in
/// an unknown field, found by the `json` fuzz target: the shape cannot be
/// read, the sink's reason (an array where a message belongs) explains it.
#[test]
fn a_non_object_message_beside_a_huge_number_is_a_listed_refusal() {
    let input = br#"{"resourceSpans":[{"resource":[],"dmecUrl":7e07777767}]}"#;
    let ingest = unbounded_ingest();
    assert!(
        serde_json::from_slice::<
            opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest,
        >(input)
        .is_ok()
    );
    let refused = ingest
        .decode_json::<Traces>(input)
        .expect_err("the sink refuses an array where a message belongs");
    assert!(
        !json_explains_refusal(input),
        "the shape cannot be read here"
    );
    assert!(json_refusal_explained(input, &refused.message));
}
