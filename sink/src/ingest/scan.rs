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
//! It reads the values that counting and then decoding the lean
//! [`TraceRequest`](super::wire::TraceRequest) with prost would read (and,
//! as the Collector, the spans of the deprecated field 1000 of a
//! `ResourceSpans` without `scope_spans`): the first
//! attribute with a key, the last member of its value, of any kind (a later
//! bool, double, array, kvlist or bytes member clears an earlier string or
//! int, as in `wire::AnyValue`). The tests check that against prost on
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

#[cfg(test)]
mod tests {
    use super::super::attribution::attribute;
    use super::super::wire::{self, TraceRequest, count_elements};
    use super::*;
    use prost::Message;
    use trace_proto::otlp::{
        AnyValue, ExportTraceServiceRequest, KeyValue, Resource, ResourceSpans, ScopeSpans, Span,
        Value, kv_int, kv_str,
    };

    /// The reference: count, decode with prost, attribute (the path this pass replaces).
    fn reference<'a>(
        bytes: &[u8],
        decoded: &'a Option<TraceRequest>,
        keys: &AttributionKeys,
        limit: u64,
    ) -> Result<RequestSummary<'a>, &'static str> {
        match count_elements(bytes, limit) {
            Err(wire::ScanError::TooMany) => return Err("too many"),
            Err(wire::ScanError::Malformed) => return Err("malformed"),
            Ok(_) => {}
        }
        match decoded {
            Some(req) => Ok(attribute(req, keys)),
            None => Err("malformed"),
        }
    }

    /// Both paths agree on `bytes`: the same summary, or both refuse.
    fn agree(bytes: &[u8], keys: &AttributionKeys, limit: u64) -> bool {
        let decoded = TraceRequest::decode(bytes).ok();
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

    /// What prost refuses and the collector accepts: a 10th varint byte above
    /// 1, a key over 32 bits, a string that is not UTF-8, a group end tag
    /// that does not match its start, groups nested past prost's limit.
    const PROST_ONLY: [&str; 5] = [
        "invalid varint",
        "invalid key value",
        "UTF-8",
        "end group",
        "recursion limit",
    ];

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
    /// number (what `wire::AnyValue` reads); malformed members are refused.
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

    fn field(tag: u8, payload: &[u8]) -> Vec<u8> {
        let mut v = vec![(tag << 3) | 2];
        let mut n = payload.len();
        loop {
            let b = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                v.push(b);
                break;
            }
            v.push(b | 0x80);
        }
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
            let mut n = k;
            while n >= 0x80 {
                v.push((n as u8) | 0x80);
                n >>= 7;
            }
            v.push(n as u8);
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
        assert!(TraceRequest::decode(bad_key.as_slice()).is_err());
        assert!(prost_only_refusal(&bad_key));
        assert_eq!(scan(&bad_key, &keys, 100).unwrap().spans, 0);
        // What the collector refuses and prost's lean decode skips: a span id
        // of 7 bytes, a wrong wire type on `Span.kind`.
        for bad_span in [field(2, &[0; 7]), vec![0x32, 0x00]] {
            let bad = field(1, &field(2, &field(2, &bad_span)));
            assert!(TraceRequest::decode(bad.as_slice()).is_ok());
            assert!(matches!(scan(&bad, &keys, 100), Err(Refused::Malformed(_))));
        }
    }
}
