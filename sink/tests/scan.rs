//! The one-pass protobuf scan (`trace_sink::ingest::scan`, what the sink
//! ingests gRPC and OTLP/HTTP protobuf with) against the path it replaced:
//! count the elements, decode the lean types with prost, attribute (the
//! tests' reference, `reference/count.rs`). Both accept and refuse the same
//! requests and attribute them the same, but for the listed differences (the
//! scan reads as the Collector does: `ingest::scan`'s module documentation).

mod reference;

use prost::Message;
use reference::PROST_ONLY;
use reference::count::{CountError, count_elements};
use reference::lean;
use trace_proto::keys;
use trace_proto::otlp::{
    AnyValue, ExportTraceServiceRequest, KeyValue, Resource, ResourceSpans, ScopeSpans, Span,
    Value, kv_int, kv_str,
};
use trace_sink::ingest::attribution::{
    AttributionKeys, MAX_KEY_VALUE_LEN, RequestSummary, attribute,
};
use trace_sink::ingest::scan::{Refused, scan};
use trace_sink::ingest::wire::TraceRequest;

/// The reference: count, decode with prost, attribute (the path this pass replaces).
fn reference<'a>(
    bytes: &[u8],
    decoded: &'a Option<TraceRequest>,
    keys: &AttributionKeys,
    limit: u64,
) -> Result<RequestSummary<'a>, &'static str> {
    match count_elements(bytes, limit) {
        Err(CountError::TooMany) => return Err("too many"),
        Err(CountError::Malformed) => return Err("malformed"),
        Ok(_) => {}
    }
    match decoded {
        Some(req) => Ok(attribute(req, keys)),
        None => Err("malformed"),
    }
}

/// Both paths agree on `bytes`: the same summary, or both refuse.
fn agree(bytes: &[u8], keys: &AttributionKeys, limit: u64) -> bool {
    let decoded = lean::TraceRequest::decode(bytes)
        .ok()
        .map(TraceRequest::from);
    let want = reference(bytes, &decoded, keys, limit);
    let got = scan(bytes, keys, limit);
    match (&want, &got) {
        (Ok(w), Ok(g)) => assert_eq!(g, w, "summaries differ for {bytes:02x?}"),
        (Err("too many"), Err(Refused::TooMany)) => {}
        // A request both malformed and over the limit: either answer (module doc).
        (Err("too many"), Err(Refused::Malformed(_))) => {
            assert!(
                decoded.is_none(),
                "valid request over the limit not TooMany: {bytes:02x?}"
            )
        }
        (Err("malformed"), Err(Refused::TooMany)) => {
            assert!(count_elements(bytes, u64::MAX).unwrap_or(0) > limit || decoded.is_none())
        }
        (Err(_), Err(Refused::Malformed(_))) => {}
        // The listed differences from prost (module doc): the collector,
        // and so the scan, reads varints, keys, groups and strings more
        // leniently, and checks fields the lean `TraceRequest` skips.
        (Err(_), Ok(_)) => assert!(
            prost_only_refusal(bytes),
            "scan accepts what prost refuses for another reason: {bytes:02x?}"
        ),
        (Ok(_), Err(Refused::Malformed(why))) => assert!(
            collector_only_refusal(bytes, why),
            "scan refuses ({why}) what the full schema accepts: {bytes:02x?}"
        ),
        _ => panic!("reference {want:?}, scan {got:?} for {bytes:02x?}"),
    }
    want.is_ok()
}

/// Whether prost refuses `bytes` for a reason the collector (and the scan)
/// accepts ([`PROST_ONLY`]).
fn prost_only_refusal(bytes: &[u8]) -> bool {
    match ExportTraceServiceRequest::decode(bytes) {
        Err(e) => {
            let e = e.to_string();
            PROST_ONLY.iter().any(|p| e.contains(p))
        }
        Ok(_) => false,
    }
}

/// What the collector refuses and the lean decode accepts: a wrong wire
/// type on a field `TraceRequest` skips (the full schema refuses it), or
/// an id of the wrong length.
fn collector_only_refusal(bytes: &[u8], why: &str) -> bool {
    let Ok(req) = ExportTraceServiceRequest::decode(bytes) else {
        return true;
    };
    // prost keeps only the last occurrence of an id; the collector checks
    // each (checked against the collector itself in tests/collector_parity.rs).
    if why.ends_with(" bytes") {
        return true;
    }
    let bad = |id: &[u8], n| !id.is_empty() && id.len() != n;
    req.resource_spans
        .iter()
        .flat_map(|rs| &rs.scope_spans)
        .flat_map(|ss| &ss.spans)
        .any(|s| {
            bad(&s.trace_id, 16)
                || bad(&s.span_id, 8)
                || bad(&s.parent_span_id, 8)
                || s.links
                    .iter()
                    .any(|l| bad(&l.trace_id, 16) || bad(&l.span_id, 8))
        })
}

fn span(attrs: Vec<KeyValue>) -> Span {
    Span {
        trace_id: vec![1; 16],
        span_id: vec![2; 8],
        name: "s".into(),
        attributes: attrs,
        ..Default::default()
    }
}

fn rs(res: Vec<KeyValue>, scopes: Vec<Vec<Span>>) -> ResourceSpans {
    ResourceSpans {
        resource: Some(Resource {
            attributes: res,
            ..Default::default()
        }),
        scope_spans: scopes
            .into_iter()
            .map(|spans| ScopeSpans {
                spans,
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

fn bool_kv(k: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(Value::BoolValue(true)),
        }),
        ..Default::default()
    }
}

/// Requests of every shape attribution distinguishes.
fn corpus() -> Vec<Vec<u8>> {
    let full = || {
        vec![
            kv_str(keys::GENERATOR_NODE, "n1"),
            kv_str(keys::AGENT_NODE, "a1"),
            kv_str(keys::GENERATOR_ID, "g1"),
        ]
    };
    let seqs = |r: std::ops::Range<i64>| -> Vec<Span> {
        r.map(|i| span(vec![kv_str("x", "y"), kv_int(keys::SEQUENCE, i)]))
            .collect()
    };
    let long = "x".repeat(MAX_KEY_VALUE_LEN + 1);
    let reqs = vec![
        vec![],
        vec![rs(full(), vec![seqs(1..4), seqs(4..6)])],
        vec![rs(full(), vec![])],
        vec![rs(full(), vec![seqs(3..5)]), rs(full(), vec![seqs(1..3)])],
        vec![rs(
            vec![kv_str(keys::AGENT_NODE, "a1")],
            vec![vec![
                span(vec![
                    kv_str(keys::GENERATOR_NODE, "n2"),
                    kv_str(keys::GENERATOR_ID, "g2"),
                    kv_int(keys::SEQUENCE, 1),
                ]),
                span(vec![
                    kv_str(keys::GENERATOR_NODE, "n3"),
                    kv_int(keys::SEQUENCE, 2),
                ]),
                span(vec![
                    kv_str(keys::GENERATOR_NODE, "n2"),
                    kv_str(keys::GENERATOR_ID, "g2"),
                    kv_str(keys::SEQUENCE, "7"),
                ]),
                span(vec![
                    kv_str(keys::GENERATOR_NODE, "n2"),
                    kv_str(keys::GENERATOR_ID, "g2"),
                    kv_int(keys::SEQUENCE, -1),
                ]),
                span(vec![]),
            ]],
        )],
        vec![rs(vec![], vec![seqs(1..3)])],
        vec![rs(
            vec![
                kv_str(keys::GENERATOR_NODE, ""),
                kv_str(keys::GENERATOR_NODE, "later"),
                bool_kv(keys::AGENT_NODE),
                kv_str(keys::GENERATOR_ID, long.clone()),
            ],
            vec![vec![span(vec![
                bool_kv(keys::SEQUENCE),
                kv_int(keys::SEQUENCE, 5),
                kv_str(keys::AGENT_NODE, long.clone()),
            ])]],
        )],
        vec![rs(
            full(),
            vec![vec![span(vec![kv_str(keys::SEQUENCE, "12x")])]],
        )],
        // The first attribute of a key counts, in either path.
        vec![rs(
            full(),
            vec![vec![span(vec![
                kv_int(keys::SEQUENCE, 1),
                kv_int(keys::SEQUENCE, 2),
            ])]],
        )],
        vec![rs(
            vec![kv_str(keys::GENERATOR_ID, "g3")],
            vec![vec![span(vec![
                kv_int(keys::SEQUENCE, 3),
                kv_int(keys::SEQUENCE, 4),
                kv_str(keys::AGENT_NODE, "a3"),
                kv_str(keys::AGENT_NODE, "a4"),
            ])]],
        )],
        vec![ResourceSpans::default()],
    ];
    let mut out: Vec<Vec<u8>> = reqs
        .into_iter()
        .map(|r| ExportTraceServiceRequest { resource_spans: r }.encode_to_vec())
        .collect();
    // Hand-made: the resource after the spans, and in two merged parts;
    // a value given twice (the last kind wins); unknown fields and a group.
    let kv = |k: &str, v: &[u8]| [field(1, k.as_bytes()), field(2, v)].concat();
    let res1 = field(1, &kv(keys::GENERATOR_NODE, &field(1, b"n1")));
    let res2 = [
        field(
            1,
            &kv(
                keys::AGENT_NODE,
                &[field(1, b"a1"), vec![0x18, 0x05]].concat(),
            ),
        ),
        field(
            1,
            &kv(
                keys::GENERATOR_ID,
                &[vec![0x18, 0x05], field(1, b"g1")].concat(),
            ),
        ),
    ]
    .concat();
    let sp = field(2, &field(9, &kv(keys::SEQUENCE, &[0x18, 0x07])));
    let rs_bytes = [
        field(2, &[sp.clone(), vec![0x08, 0x01]].concat()),
        field(1, &res1),
        vec![0x1b, 0x08, 0x01, 0x1c],
        field(1, &res2),
        field(2, &sp),
    ]
    .concat();
    out.push([field(1, &rs_bytes), vec![0x10, 0x01]].concat());
    // A string or int followed by a member of another kind: the later
    // member wins and the attribute reads as unusable (issue 9's rule).
    for tail in LATER_MEMBERS {
        out.push(any_value_case(tail));
    }
    out
}

/// AnyValue members after a string or int: bool, double, array, kvlist,
/// bytes, string index, and an unknown member (skipped, so it clears nothing).
const LATER_MEMBERS: [&[u8]; 7] = [
    &[0x10, 0x01],
    &[0x21, 0, 0, 0, 0, 0, 0, 0xf8, 0x3f],
    &[0x2a, 0x00],
    &[0x32, 0x00],
    &[0x3a, 0x01, 0xff],
    &[0x40, 0x02],
    &[0x48, 0x01],
];

/// Members of another kind with a wrong wire type or cut short.
const BAD_MEMBERS: [&[u8]; 4] = [
    &[0x12, 0x00],
    &[0x21, 0, 0],
    &[0x28, 0x01],
    &[0x45, 0, 0, 0, 0],
];

/// A request whose three resource keys and sequence number each have the
/// value "n9" (a string) followed by `tail`.
fn any_value_case(tail: &[u8]) -> Vec<u8> {
    let kv = |k: &str, v: &[u8]| [field(1, k.as_bytes()), field(2, v)].concat();
    let value = [field(1, b"9"), tail.to_vec()].concat();
    let res = [
        field(1, &kv(keys::GENERATOR_NODE, &value)),
        field(1, &kv(keys::AGENT_NODE, &value)),
        field(1, &kv(keys::GENERATOR_ID, &value)),
    ]
    .concat();
    let sp = field(2, &field(9, &kv(keys::SEQUENCE, &value)));
    field(1, &[field(1, &res), field(2, &sp)].concat())
}

/// A later member of another kind clears the string: no origin, no sequence
/// number (what the reference's `lean::AnyValue` reads); malformed members are refused.
#[test]
fn any_value_last_member_of_any_kind_wins() {
    let keys = AttributionKeys::default();
    for (i, tail) in LATER_MEMBERS.iter().enumerate() {
        let bytes = any_value_case(tail);
        assert!(agree(&bytes, &keys, 10_000));
        let got = scan(&bytes, &keys, 10_000).unwrap();
        let origin = got.origins.keys().next().unwrap();
        if i < 6 {
            assert_eq!(origin.generator_node, None, "{tail:02x?}");
            assert_eq!(got.origins.values().next().unwrap().seqs, Vec::<u64>::new());
        } else {
            assert_eq!(origin.generator_node, Some("9"), "{tail:02x?}");
        }
    }
    for tail in BAD_MEMBERS {
        let bytes = any_value_case(tail);
        assert!(!agree(&bytes, &keys, 10_000), "{tail:02x?}");
        assert!(matches!(
            scan(&bytes, &keys, 10_000),
            Err(Refused::Malformed(_))
        ));
    }
}

/// Field `tag` (a small number) as a length-delimited field holding `payload`.
fn field(tag: u8, payload: &[u8]) -> Vec<u8> {
    let mut v = vec![(tag << 3) | 2];
    prost::encoding::encode_varint(payload.len() as u64, &mut v);
    v.extend_from_slice(payload);
    v
}

#[test]
fn agrees_with_count_decode_attribute() {
    let keys = AttributionKeys::default();
    for bytes in corpus() {
        assert!(agree(&bytes, &keys, 10_000), "{bytes:02x?}");
        let total = count_elements(&bytes, u64::MAX).unwrap();
        assert!(agree(&bytes, &keys, total));
        // (The hand-made case has a varint where `ScopeSpans.scope` is:
        // the collector, and so the scan, refuses it.)
        if total > 0 && scan(&bytes, &keys, total).is_ok() {
            assert_eq!(scan(&bytes, &keys, total - 1), Err(Refused::TooMany));
        }
    }
    // Custom keys, even two that coincide.
    let odd = AttributionKeys {
        generator_node: keys::SEQUENCE.into(),
        agent_node: keys::SEQUENCE.into(),
    };
    for bytes in corpus() {
        agree(&bytes, &odd, 10_000);
    }
}

/// Mutated requests (bytes changed, cut, inserted): both paths accept and
/// refuse the same, and read the same when they accept.
#[test]
fn agrees_on_mutated_requests() {
    let keys = AttributionKeys::default();
    let mut rng: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let (mut ok, mut refused) = (0, 0);
    for base in corpus() {
        for _ in 0..3000 {
            let mut b = base.clone();
            for _ in 0..1 + next() % 3 {
                if b.is_empty() {
                    b.push(next() as u8);
                    continue;
                }
                let i = (next() % b.len() as u64) as usize;
                match next() % 6 {
                    0 => b[i] = next() as u8,
                    1 => b[i] ^= 1 << (next() % 8),
                    2 => b.truncate(i),
                    3 => b.insert(i, next() as u8),
                    4 => {
                        b.remove(i);
                    }
                    _ => b[i] = [0x00, 0x7f, 0x80, 0xff, 0x0a, 0x12][(next() % 6) as usize],
                }
            }
            if agree(&b, &keys, 40) {
                ok += 1;
            } else {
                refused += 1;
            }
        }
    }
    // Both kinds of outcome were exercised.
    assert!(ok > 1000 && refused > 1000, "ok {ok} refused {refused}");
}

/// The Collector's reading (pdata v1.71.0), where it differs from prost;
/// tests/collector_parity.rs checks the same against the real Collector.
#[test]
fn reads_as_the_collector_does() {
    let keys = AttributionKeys::default();
    let spans = |b: &[u8]| scan(b, &keys, 100).map(|s| s.spans);
    let in_span = |f: &[u8]| field(1, &field(2, &field(2, f)));
    // A 10-byte varint whose last byte carries bits past 64: taken; an
    // 11th byte: refused.
    let kind = |v: &[u8]| in_span(&[&[0x30][..], v].concat());
    assert_eq!(
        spans(&kind(&[
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f
        ])),
        Ok(1)
    );
    assert!(
        spans(&kind(&[
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x80, 0x00
        ]))
        .is_err()
    );
    // A key over 32 bits: its field number cut to 32 bits (here to 6,
    // `Span.kind`, so a LEN value is a wrong wire type).
    let key = |k: u64| {
        let mut v = Vec::new();
        prost::encoding::encode_varint(k, &mut v);
        v
    };
    assert_eq!(
        spans(&in_span(&[key(((1 << 32) | 6) << 3), vec![1]].concat())),
        Ok(1)
    );
    assert!(
        spans(&in_span(
            &[key((((1 << 32) | 6) << 3) | 2), vec![0]].concat()
        ))
        .is_err()
    );
    assert!(spans(&in_span(&[key((1 << 31) << 3), vec![1]].concat())).is_err());
    // Groups: the skip ends after the first field inside, so a group with
    // a field and its end tag leaves a stray end tag (refused), and one
    // without an end tag is taken.
    assert!(spans(&in_span(&[0x93, 0x03, 0x98, 0x03, 0x01, 0x94, 0x03])).is_err());
    assert_eq!(spans(&in_span(&[0x93, 0x03, 0x98, 0x03, 0x01])), Ok(1));
    // An empty group is skipped whole, but its end tag may not end the
    // message (pdata's loop stops at the end first: unexpected EOF).
    assert_eq!(
        spans(&in_span(&[0x93, 0x03, 0x94, 0x03, 0x30, 0x01])),
        Ok(1)
    );
    assert!(spans(&in_span(&[0x93, 0x03, 0x94, 0x03])).is_err());
    // Ids: 16 / 8 bytes or empty.
    assert_eq!(spans(&in_span(&field(1, &[1; 16]))), Ok(1));
    assert_eq!(spans(&in_span(&field(1, &[]))), Ok(1));
    assert!(spans(&in_span(&field(1, &[1; 8]))).is_err());
    assert!(spans(&in_span(&field(2, &[1; 16]))).is_err());
    // Not UTF-8: taken, and the key matches nothing.
    assert_eq!(spans(&in_span(&field(5, &[0xff, 0xfe]))), Ok(1));
    // Arrays nested 49 deep are taken, 50 refused (100 messages).
    let nested = |levels: usize| {
        let mut any = field(1, b"x");
        for _ in 0..levels {
            any = field(5, &field(1, &any));
        }
        in_span(&field(9, &[field(1, b"k"), field(2, &any)].concat()))
    };
    assert_eq!(spans(&nested(49)), Ok(1));
    assert!(spans(&nested(50)).is_err());
    // The deprecated field 1000, read when there is no scope_spans.
    let sp = field(2, &[]);
    let mut rs = vec![0xc2, 0x3e, sp.len() as u8];
    rs.extend_from_slice(&sp);
    assert_eq!(spans(&field(1, &rs)), Ok(1));
    let beside = [field(2, &sp), rs].concat();
    assert_eq!(spans(&field(1, &beside)), Ok(1));
}

#[test]
fn malformed_input_is_refused_not_panicked_on() {
    let keys = AttributionKeys::default();
    for bad in [
        &[0x0a][..],
        &[0x0a, 0x05, 0x00],
        &[0xff; 11],
        &[0x00],
        &[0x0c],
        &[0x0b, 0x0a, 0x00],
        &[0x08],
        &[0x0a, 0x02, 0x12, 0x05],
        &[0x0a, 0x03, 0x0a, 0x01, 0x08],
    ] {
        assert!(
            matches!(scan(bad, &keys, 100), Err(Refused::Malformed(_))),
            "{bad:02x?}"
        );
    }
    // Invalid UTF-8 in an attribute key: prost refuses it, the collector
    // does not check strings, so the scan accepts it (a listed difference)
    // and the key matches nothing.
    let bad_key = field(1, &field(1, &field(1, &field(1, &[0xff, 0xfe]))));
    assert!(lean::TraceRequest::decode(bad_key.as_slice()).is_err());
    assert!(prost_only_refusal(&bad_key));
    assert_eq!(scan(&bad_key, &keys, 100).unwrap().spans, 0);
    // What the collector refuses and prost's lean decode skips: a span id
    // of 7 bytes, a wrong wire type on `Span.kind`.
    for bad_span in [field(2, &[0; 7]), vec![0x32, 0x00]] {
        let bad = field(1, &field(2, &field(2, &bad_span)));
        assert!(lean::TraceRequest::decode(bad.as_slice()).is_ok());
        assert!(matches!(scan(&bad, &keys, 100), Err(Refused::Malformed(_))));
    }
}
