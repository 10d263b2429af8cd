//! One pass over a protobuf `ExportTraceServiceRequest`: counts its elements
//! against `--max-request-elements` and attributes its spans at the same time,
//! borrowing every string from the request bytes.
//!
//! Why not count, then decode with prost, then attribute (the JSON path still
//! does): that walks the bytes twice and allocates a `Vec` per resource, scope
//! and span plus a `String` per attribute key and value, only to read three
//! resource attributes and one span attribute and throw the rest away. Here
//! nothing is allocated per span: a resource with all three identifying keys
//! costs one hash-map lookup, its spans one pushed sequence number each.
//!
//! The pass accepts and rejects what the Collector's OTLP receiver does (pdata
//! v1.71.0's generated decoder, the one users run): the wire type of every
//! known field of every trace message, nested messages, trace and span id
//! lengths (16 / 8 bytes or empty), and at most 100 nested `KeyValue` /
//! `AnyValue` / `ArrayValue` / `KeyValueList`; varints, keys and groups read as
//! pdata's `internal/proto/unmarshal.go` reads them, strings not checked for
//! UTF-8. `tests/collector_parity.rs` holds that to the real Collector.
//! It reads the values that counting and then decoding the lean request with
//! prost would read (the tests' reference, `sink/tests/reference/`, which
//! decodes into [`TraceRequest`](super::wire::TraceRequest)): the first
//! attribute with a key, the last member of its value, of any kind (a later
//! bool, double, array, kvlist or bytes member clears an earlier string or
//! int, as in `wire::AnyValue`); and, as the Collector, the spans of the
//! deprecated field 1000 of a `ResourceSpans` without `scope_spans`.
//! `sink/tests/scan.rs`, the differential test and the `protobuf` fuzz target
//! check that against the reference on
//! generated and mutated requests, with these listed differences in what is
//! accepted: prost refuses a 10th varint byte above 1, keys over 32 bits,
//! strings that are not UTF-8 and groups the Collector skips; the lean decode
//! skips fields the Collector checks. A request that is malformed *and* over
//! the element limit is answered as whichever the pass meets first.

use std::collections::HashMap;

use trace_proto::keys;

use super::attribution::{AttributionKeys, Batch, MAX_KEY_VALUE_LEN, Origin, RequestSummary};

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// More elements than the limit.
    TooMany,
    /// Not a valid `ExportTraceServiceRequest` (what was wrong, for the client).
    Malformed(&'static str),
}

type Res<T> = Result<T, Refused>;

const WT_VARINT: u8 = 0;
const WT_I64: u8 = 1;
const WT_LEN: u8 = 2;
const WT_START_GROUP: u8 = 3;
const WT_END_GROUP: u8 = 4;
const WT_I32: u8 = 5;

/// The collector's limit on nested `KeyValue` / `AnyValue` / `ArrayValue` /
/// `KeyValueList` messages (pdata's `proto.RecursionLimit`).
const RECURSION_LIMIT: u32 = 100;

// The varint, key and skip below are hand-written, not `prost::encoding`'s,
// because the sink answers as the collector's OTLP receiver does (pdata
// v1.71.0, `internal/proto/unmarshal.go`), and prost's differ from it in what
// they accept: prost refuses a 10th varint byte above 1 and keys over 32 bits,
// and matches group end tags with a recursion limit; the collector takes any
// 10th byte below 0x80, cuts the key's field number to a signed 32-bit number,
// and skips groups its own way (see `skip`).

#[inline(always)]
fn varint(buf: &mut &[u8]) -> Res<u64> {
    // Keys, lengths and small ints are one byte: the common case, inline.
    if let Some((&b, rest)) = buf.split_first()
        && b < 0x80
    {
        *buf = rest;
        return Ok(u64::from(b));
    }
    varint_slow(buf)
}

#[inline(never)]
fn varint_slow(buf: &mut &[u8]) -> Res<u64> {
    // As pdata's `ConsumeVarint`: at most 10 bytes; the bits of the 10th past
    // 64 are dropped, not refused.
    let mut v: u64 = 0;
    for i in 0..10 {
        let Some((&b, rest)) = buf.split_first() else {
            return Err(Refused::Malformed("truncated varint"));
        };
        *buf = rest;
        v |= u64::from(b & 0x7f).wrapping_shl(7 * i);
        if b < 0x80 {
            return Ok(v);
        }
    }
    Err(Refused::Malformed("invalid varint"))
}

/// A field key as pdata's `ConsumeTag` reads it: the field number is the key
/// shifted right by 3, cut to a signed 32-bit number, and must be positive.
/// The wire type is not checked here (a known field checks its own; an unknown
/// one is refused by [`skip`] if it is 6 or 7).
#[inline(always)]
fn key(buf: &mut &[u8]) -> Res<(u32, u8)> {
    let k = varint(buf)?;
    let field = (k >> 3) as u32 as i32;
    if field <= 0 {
        return Err(Refused::Malformed("invalid field number"));
    }
    Ok((field as u32, (k & 7) as u8))
}

#[inline(always)]
fn take<'a>(buf: &mut &'a [u8], n: u64) -> Res<&'a [u8]> {
    let n = usize::try_from(n).map_err(|_| Refused::Malformed("length out of range"))?;
    if n > buf.len() {
        return Err(Refused::Malformed("length beyond the end of the message"));
    }
    let (head, tail) = buf.split_at(n);
    *buf = tail;
    Ok(head)
}

#[inline(always)]
fn len_delimited<'a>(buf: &mut &'a [u8], wt: u8) -> Res<&'a [u8]> {
    if wt != WT_LEN {
        return Err(Refused::Malformed(
            "wrong wire type for a message or string field",
        ));
    }
    let n = varint(buf)?;
    take(buf, n)
}

#[inline(always)]
fn expect(wt: u8, want: u8) -> Res<()> {
    if wt != want {
        return Err(Refused::Malformed("wrong wire type for a known field"));
    }
    Ok(())
}

#[inline(always)]
fn varint_field(buf: &mut &[u8], wt: u8) -> Res<u64> {
    expect(wt, WT_VARINT)?;
    varint(buf)
}

#[inline(always)]
fn fixed_field(buf: &mut &[u8], wt: u8, want: u8) -> Res<()> {
    expect(wt, want)?;
    take(buf, if want == WT_I64 { 8 } else { 4 }).map(drop)
}

/// A trace id (16 bytes) or span id (8 bytes), or empty, as pdata reads them.
#[inline(always)]
fn id_field(buf: &mut &[u8], wt: u8, size: usize) -> Res<()> {
    let id = len_delimited(buf, wt)?;
    if !id.is_empty() && id.len() != size {
        return Err(Refused::Malformed(if size == 16 {
            "trace id is not 16 bytes"
        } else {
            "span id is not 8 bytes"
        }));
    }
    Ok(())
}

/// Skips an unknown field as pdata's `ConsumeUnknown` does. Its groups are
/// not protobuf's: it counts start and end tags, but returns after the first
/// field of any other wire type, at whatever depth (so `start, field, end`
/// leaves the end tag to be read as the next field, which is refused, and
/// `start, field` at the end of a message is taken). No depth limit.
#[inline(always)]
fn skip(buf: &mut &[u8], wt: u8) -> Res<()> {
    match wt {
        WT_VARINT => varint(buf).map(drop),
        WT_I64 => take(buf, 8).map(drop),
        WT_I32 => take(buf, 4).map(drop),
        WT_LEN => {
            let n = varint(buf)?;
            take(buf, n).map(drop)
        }
        _ => skip_slow(buf, wt),
    }
}

#[inline(never)]
fn skip_slow(buf: &mut &[u8], mut wt: u8) -> Res<()> {
    let mut depth: u64 = 0;
    loop {
        if buf.is_empty() {
            return Err(Refused::Malformed("truncated group"));
        }
        match wt {
            WT_VARINT | WT_I64 | WT_I32 | WT_LEN => return skip(buf, wt),
            WT_START_GROUP => depth += 1,
            WT_END_GROUP => {
                if depth == 0 {
                    return Err(Refused::Malformed("unexpected end group tag"));
                }
                depth -= 1;
            }
            _ => return Err(Refused::Malformed("invalid wire type")),
        }
        if depth == 0 {
            return Ok(());
        }
        wt = key(buf)?.1;
    }
}

/// The value of an attribute, as far as the sink reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Val<'a> {
    Str(&'a str),
    Int(i64),
}

/// Checks and reads an attribute (a `KeyValue` at the collector's depth 0):
/// its key (`None` if not UTF-8: the collector does not check strings, and
/// such a key matches none the sink looks up) and value (every occurrence
/// merged as protobuf merges: the last member of any kind wins; a string that
/// is not UTF-8 reads as unusable). Inline, as the hot path.
#[inline(always)]
fn key_value(mut buf: &[u8]) -> Res<(Option<&str>, Option<Val<'_>>)> {
    let mut k = Some("");
    let mut v = None;
    while !buf.is_empty() {
        let (tag, wt) = key(&mut buf)?;
        match tag {
            1 => k = std::str::from_utf8(len_delimited(&mut buf, wt)?).ok(),
            2 => {
                // The AnyValue (depth 1).
                let mut any = len_delimited(&mut buf, wt)?;
                while !any.is_empty() {
                    let (tag, wt) = key(&mut any)?;
                    match tag {
                        1 => {
                            v = std::str::from_utf8(len_delimited(&mut any, wt)?)
                                .ok()
                                .map(Val::Str)
                        }
                        3 => v = Some(Val::Int(varint_field(&mut any, wt)? as i64)),
                        2 | 8 => {
                            varint_field(&mut any, wt)?;
                            v = None;
                        }
                        4 => {
                            fixed_field(&mut any, wt, WT_I64)?;
                            v = None;
                        }
                        5 | 6 => {
                            list(len_delimited(&mut any, wt)?, tag, 2)?;
                            v = None;
                        }
                        7 => {
                            len_delimited(&mut any, wt)?;
                            v = None;
                        }
                        _ => skip(&mut any, wt)?,
                    }
                }
            }
            3 => varint_field(&mut buf, wt).map(drop)?,
            _ => skip(&mut buf, wt)?,
        }
    }
    Ok((k, v))
}

/// Checks an `ArrayValue` (`tag` 5) or `KeyValueList` (6) at `depth`.
#[inline(never)]
fn list(mut buf: &[u8], tag: u32, depth: u32) -> Res<()> {
    if depth >= RECURSION_LIMIT {
        return Err(Refused::Malformed("attributes nested too deep"));
    }
    while !buf.is_empty() {
        let (t, wt) = key(&mut buf)?;
        if t == 1 {
            let member = len_delimited(&mut buf, wt)?;
            if tag == 5 {
                any_value_check(member, depth + 1)?;
            } else {
                key_value_check(member, depth + 1)?;
            }
        } else {
            skip(&mut buf, wt)?;
        }
    }
    Ok(())
}

/// Checks an `AnyValue` at `depth`.
fn any_value_check(mut buf: &[u8], depth: u32) -> Res<()> {
    if depth >= RECURSION_LIMIT {
        return Err(Refused::Malformed("attributes nested too deep"));
    }
    while !buf.is_empty() {
        let (tag, wt) = key(&mut buf)?;
        match tag {
            1 | 7 => len_delimited(&mut buf, wt).map(drop)?,
            2 | 3 | 8 => varint_field(&mut buf, wt).map(drop)?,
            4 => fixed_field(&mut buf, wt, WT_I64)?,
            5 | 6 => list(len_delimited(&mut buf, wt)?, tag, depth + 1)?,
            _ => skip(&mut buf, wt)?,
        }
    }
    Ok(())
}

/// Checks a `KeyValue` at `depth` (an attribute is at 0).
fn key_value_check(mut buf: &[u8], depth: u32) -> Res<()> {
    if depth >= RECURSION_LIMIT {
        return Err(Refused::Malformed("attributes nested too deep"));
    }
    while !buf.is_empty() {
        let (tag, wt) = key(&mut buf)?;
        match tag {
            1 => len_delimited(&mut buf, wt).map(drop)?,
            2 => any_value_check(len_delimited(&mut buf, wt)?, depth + 1)?,
            3 => varint_field(&mut buf, wt).map(drop)?,
            _ => skip(&mut buf, wt)?,
        }
    }
    Ok(())
}

/// Checks attributes the sink does not read (of scopes, events, links).
#[inline]
fn attribute(buf: &mut &[u8], wt: u8) -> Res<()> {
    key_value_check(len_delimited(buf, wt)?, 0)
}

/// Checks an `InstrumentationScope`.
fn scope(mut buf: &[u8]) -> Res<()> {
    while !buf.is_empty() {
        let (tag, wt) = key(&mut buf)?;
        match tag {
            1 | 2 => len_delimited(&mut buf, wt).map(drop)?,
            3 => attribute(&mut buf, wt)?,
            4 => varint_field(&mut buf, wt).map(drop)?,
            _ => skip(&mut buf, wt)?,
        }
    }
    Ok(())
}

/// Checks a `Span.Event`.
fn event(mut buf: &[u8]) -> Res<()> {
    while !buf.is_empty() {
        let (tag, wt) = key(&mut buf)?;
        match tag {
            1 => fixed_field(&mut buf, wt, WT_I64)?,
            2 => len_delimited(&mut buf, wt).map(drop)?,
            3 => attribute(&mut buf, wt)?,
            4 => varint_field(&mut buf, wt).map(drop)?,
            _ => skip(&mut buf, wt)?,
        }
    }
    Ok(())
}

/// Checks a `Span.Link`.
fn link(mut buf: &[u8]) -> Res<()> {
    while !buf.is_empty() {
        let (tag, wt) = key(&mut buf)?;
        match tag {
            1 => id_field(&mut buf, wt, 16)?,
            2 => id_field(&mut buf, wt, 8)?,
            3 => len_delimited(&mut buf, wt).map(drop)?,
            4 => attribute(&mut buf, wt)?,
            5 => varint_field(&mut buf, wt).map(drop)?,
            6 => fixed_field(&mut buf, wt, WT_I32)?,
            _ => skip(&mut buf, wt)?,
        }
    }
    Ok(())
}

/// Checks a `Status`.
fn status(mut buf: &[u8]) -> Res<()> {
    while !buf.is_empty() {
        let (tag, wt) = key(&mut buf)?;
        match tag {
            2 => len_delimited(&mut buf, wt).map(drop)?,
            3 => varint_field(&mut buf, wt).map(drop)?,
            _ => skip(&mut buf, wt)?,
        }
    }
    Ok(())
}

/// Checks an `EntityRef` (of a resource).
fn entity_ref(mut buf: &[u8]) -> Res<()> {
    while !buf.is_empty() {
        let (tag, wt) = key(&mut buf)?;
        match tag {
            1..=4 => len_delimited(&mut buf, wt).map(drop)?,
            _ => skip(&mut buf, wt)?,
        }
    }
    Ok(())
}

/// The attributes the sink looks up, each the *first* attribute with its key
/// (as `wire::get_str` / `get_u64` find it). `Some(None)` = found, unusable.
#[derive(Default, Clone, Copy)]
struct Found<'a> {
    generator_node: Option<Option<Val<'a>>>,
    agent_node: Option<Option<Val<'a>>>,
    generator_id: Option<Option<Val<'a>>>,
    seq: Option<Option<Val<'a>>>,
}

impl<'a> Found<'a> {
    /// Each slot independently: the configured keys may even coincide.
    #[inline]
    fn note(&mut self, keys: &AttributionKeys, k: &str, v: Option<Val<'a>>, with_seq: bool) {
        if with_seq && k == keys::SEQUENCE {
            self.seq.get_or_insert(v);
        }
        if k == keys.generator_node {
            self.generator_node.get_or_insert(v);
        }
        if k == keys.agent_node {
            self.agent_node.get_or_insert(v);
        }
        if k == keys::GENERATOR_ID {
            self.generator_id.get_or_insert(v);
        }
    }
}

/// A node name or generator id: a non-empty string of at most [`MAX_KEY_VALUE_LEN`] bytes.
#[inline]
fn name(v: Option<Option<Val<'_>>>) -> Option<&str> {
    match v.flatten()? {
        Val::Str(s) if !s.is_empty() && s.len() <= MAX_KEY_VALUE_LEN => Some(s),
        _ => None,
    }
}

/// A sequence number: a non-negative int, or a string of digits.
#[inline]
fn seq(v: Option<Option<Val<'_>>>) -> Option<u64> {
    match v.flatten()? {
        Val::Int(i) => u64::try_from(i).ok(),
        Val::Str(s) => s.parse().ok(),
    }
}

struct Counter {
    n: u64,
    limit: u64,
}

impl Counter {
    #[inline]
    fn add(&mut self) -> Res<()> {
        self.n += 1;
        if self.n > self.limit {
            return Err(Refused::TooMany);
        }
        Ok(())
    }
}

/// Counts the elements of a protobuf `ExportTraceServiceRequest` (resource
/// spans, resources, scope spans, spans, resource and span attributes) and
/// attributes its spans, in one pass; stops at `max_elements + 1`.
pub fn scan<'a>(
    request: &'a [u8],
    keys: &AttributionKeys,
    max_elements: u64,
) -> Result<RequestSummary<'a>, Refused> {
    let mut out = RequestSummary::default();
    let mut count = Counter {
        n: 0,
        limit: max_elements,
    };
    let mut buf = request;
    while !buf.is_empty() {
        let (tag, wt) = key(&mut buf)?;
        if tag == 1 {
            let rs = len_delimited(&mut buf, wt)?;
            count.add()?;
            resource_spans(rs, keys, &mut count, &mut out)?;
        } else {
            skip(&mut buf, wt)?;
        }
    }
    Ok(out)
}

/// `ResourceSpans.scope_spans`, and the deprecated field 1000 that the
/// collector reads in its place when there is no `scope_spans`.
const SCOPE_SPANS: u32 = 2;
const DEPRECATED_SCOPE_SPANS: u32 = 1000;

fn resource_spans<'a>(
    rs: &'a [u8],
    keys: &AttributionKeys,
    count: &mut Counter,
    out: &mut RequestSummary<'a>,
) -> Res<()> {
    // First the resource (it may come after the spans, or in several parts
    // that protobuf merges), then the spans.
    let mut res = Found::default();
    let mut has_scope_spans = false;
    let mut buf = rs;
    while !buf.is_empty() {
        let (tag, wt) = key(&mut buf)?;
        match tag {
            1 => {
                let mut r = len_delimited(&mut buf, wt)?;
                count.add()?;
                while !r.is_empty() {
                    let (tag, wt) = key(&mut r)?;
                    match tag {
                        1 => {
                            let kv = len_delimited(&mut r, wt)?;
                            count.add()?;
                            let (k, v) = key_value(kv)?;
                            if let Some(k) = k {
                                res.note(keys, k, v, false);
                            }
                        }
                        2 => varint_field(&mut r, wt).map(drop)?,
                        3 => entity_ref(len_delimited(&mut r, wt)?)?,
                        _ => skip(&mut r, wt)?,
                    }
                }
            }
            SCOPE_SPANS => {
                has_scope_spans = true;
                len_delimited(&mut buf, wt)?;
            }
            3 | DEPRECATED_SCOPE_SPANS => {
                len_delimited(&mut buf, wt)?;
            }
            _ => skip(&mut buf, wt)?,
        }
    }
    let resource_origin = Origin {
        generator_node: name(res.generator_node),
        agent_node: name(res.agent_node),
        generator_id: name(res.generator_id),
    };
    let complete = resource_origin.generator_node.is_some()
        && resource_origin.agent_node.is_some()
        && resource_origin.generator_id.is_some();
    let active = if has_scope_spans {
        SCOPE_SPANS
    } else {
        DEPRECATED_SCOPE_SPANS
    };
    // Spans of the same origin follow each other: gather them here and merge
    // into the summary's map when the origin changes, not once per span.
    let mut current: Option<(Origin<'a>, Batch)> = None;
    let mut buf = rs;
    while !buf.is_empty() {
        let (tag, wt) = key(&mut buf)?;
        if tag != SCOPE_SPANS && tag != DEPRECATED_SCOPE_SPANS {
            // The resource and other fields: checked above.
            skip(&mut buf, wt)?;
            continue;
        }
        let mut ss = len_delimited(&mut buf, wt)?;
        if tag != active {
            // Checked, as the collector checks it, then dropped (as it is).
            scope_spans_unread(ss)?;
            continue;
        }
        count.add()?;
        while !ss.is_empty() {
            let (tag, wt) = key(&mut ss)?;
            match tag {
                1 => {
                    scope(len_delimited(&mut ss, wt)?)?;
                    continue;
                }
                2 => {}
                3 => {
                    len_delimited(&mut ss, wt)?;
                    continue;
                }
                _ => {
                    skip(&mut ss, wt)?;
                    continue;
                }
            }
            let sp = len_delimited(&mut ss, wt)?;
            count.add()?;
            let found = span(sp, keys, complete, count)?;
            let origin = if complete {
                resource_origin
            } else {
                Origin {
                    generator_node: resource_origin
                        .generator_node
                        .or_else(|| name(found.generator_node)),
                    agent_node: resource_origin
                        .agent_node
                        .or_else(|| name(found.agent_node)),
                    generator_id: resource_origin
                        .generator_id
                        .or_else(|| name(found.generator_id)),
                }
            };
            let batch = match &mut current {
                Some((o, b)) if *o == origin => b,
                _ => {
                    if let Some((o, b)) = current.take() {
                        merge(&mut out.origins, o, b);
                    }
                    &mut current.insert((origin, Batch::default())).1
                }
            };
            batch.spans += 1;
            out.spans += 1;
            if origin.generator_id.is_some()
                && let Some(s) = seq(found.seq)
            {
                batch.seqs.push(s);
            }
        }
    }
    match current {
        Some((o, b)) => merge(&mut out.origins, o, b),
        // As `attribution::attribute`: a complete resource is an origin even without spans.
        None if complete => merge(&mut out.origins, resource_origin, Batch::default()),
        None => {}
    }
    Ok(())
}

/// Checks a `ScopeSpans` whose spans the collector drops (a deprecated field
/// 1000 beside `scope_spans`).
fn scope_spans_unread(mut ss: &[u8]) -> Res<()> {
    let keys = AttributionKeys::default();
    let mut unlimited = Counter {
        n: 0,
        limit: u64::MAX,
    };
    while !ss.is_empty() {
        let (tag, wt) = key(&mut ss)?;
        match tag {
            1 => scope(len_delimited(&mut ss, wt)?)?,
            2 => span(len_delimited(&mut ss, wt)?, &keys, true, &mut unlimited).map(drop)?,
            3 => len_delimited(&mut ss, wt).map(drop)?,
            _ => skip(&mut ss, wt)?,
        }
    }
    Ok(())
}

/// Checks a `Span` as the collector does, counts its attributes, and reads
/// the attributes attribution needs (only the sequence number if the resource
/// is `complete`).
#[inline(always)]
fn span<'a>(
    mut sp: &'a [u8],
    keys: &AttributionKeys,
    complete: bool,
    count: &mut Counter,
) -> Res<Found<'a>> {
    let mut found = Found::default();
    while !sp.is_empty() {
        let (tag, wt) = key(&mut sp)?;
        match tag {
            9 => {
                let kv = len_delimited(&mut sp, wt)?;
                count.add()?;
                let (k, v) = key_value(kv)?;
                let Some(k) = k else { continue };
                if complete {
                    if found.seq.is_none() && k == keys::SEQUENCE {
                        found.seq = Some(v);
                    }
                } else {
                    found.note(keys, k, v, true);
                }
            }
            1 => id_field(&mut sp, wt, 16)?,
            2 | 4 => id_field(&mut sp, wt, 8)?,
            3 | 5 => len_delimited(&mut sp, wt).map(drop)?,
            6 | 10 | 12 | 14 => varint_field(&mut sp, wt).map(drop)?,
            7 | 8 => fixed_field(&mut sp, wt, WT_I64)?,
            16 => fixed_field(&mut sp, wt, WT_I32)?,
            11 => event(len_delimited(&mut sp, wt)?)?,
            13 => link(len_delimited(&mut sp, wt)?)?,
            15 => status(len_delimited(&mut sp, wt)?)?,
            _ => skip(&mut sp, wt)?,
        }
    }
    Ok(found)
}

fn merge<'a>(origins: &mut HashMap<Origin<'a>, Batch>, origin: Origin<'a>, batch: Batch) {
    use std::collections::hash_map::Entry;
    match origins.entry(origin) {
        Entry::Vacant(e) => {
            e.insert(batch);
        }
        Entry::Occupied(mut e) => {
            let b = e.get_mut();
            b.spans += batch.spans;
            b.seqs.extend_from_slice(&batch.seqs);
        }
    }
}
