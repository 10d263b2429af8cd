//! `/stats` in two steps, so that the accounting lock is held only while
//! bytes and numbers are copied:
//!
//! 1. under the lock, [`super::accounting::Accounting::view`] copies the state
//!    into a [`StatsView`]: the tables are already in `/stats` order (the
//!    accounting keeps them sorted as entries arrive), the names go into one
//!    buffer, times are integer milliseconds, peer addresses plain values;
//! 2. after it, the view is written as JSON ([`StatsView::to_json`]) or turned
//!    into the typed [`SinkStats`] ([`StatsView::to_stats`]).
//!
//! The JSON is written by hand rather than by serde: with 10,000 series
//! (a 5 MB document) serde_json took 15 ms and the writer here takes 2.6 ms,
//! measured in-process on the benchmark machine (`bench/run.py`'s `stats`
//! rows and bench/README.md have the end-to-end figures). serde escapes every key and value byte by byte
//! through its formatter; here the keys are constants, a name is copied as
//! it is unless it holds a byte JSON must escape (then serde_json writes it),
//! numbers go through `itoa` and times through [`Millis`]. The small parts
//! (`requests`, `kubernetes`) are still written by serde. The schema is
//! defined once, by the types of `trace_proto::stats`: the writer is tested
//! to give byte for byte what serde gives for [`SinkStats`]
//! (`view_json_equals_serde_of_sink_stats` in `accounting.rs`, and
//! `stats_written_directly_equals_the_snapshot` in `sink/tests/api.rs`).
//!
//! Timestamps are formatted here rather than by `humantime` (which the
//! typed path and trace-gen use): a full answer holds one per route and
//! generator (20,000 at 10,000 series), and going through `fmt` and a
//! `String` each was 6% of the time of an answer. [`Millis::rfc3339`] is
//! tested against `humantime` over the whole range of years.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::net::SocketAddr;
use std::ops::Range;
use std::time::{SystemTime, UNIX_EPOCH};

use trace_proto::outcome::{Outcome, Via};
use trace_proto::stats::{
    AgentStats, Attribution, GeneratorStats, KubernetesStats, RouteStats, SINK_STATS_SCHEMA,
    SinkStats,
};

/// A time as milliseconds since the Unix epoch (the precision of `/stats`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Millis(pub u64);

/// 9999-12-31T23:59:59.999Z, the last time RFC 3339 can write.
const MAX_MILLIS: u64 = 253_402_300_799_999;

impl Millis {
    /// `t` truncated to milliseconds (times before the epoch read as the epoch).
    pub fn of(t: SystemTime) -> Self {
        let ms = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis());
        Millis(u64::try_from(ms).unwrap_or(u64::MAX))
    }

    /// RFC 3339 UTC with milliseconds, `2026-11-26T03:59:04.373Z`: what
    /// `trace_proto::stats::rfc3339` writes (times past the year 9999 are
    /// written as its last millisecond instead of failing).
    pub fn rfc3339(self) -> String {
        let mut buf = [0; 24];
        self.write(&mut buf).to_owned()
    }

    fn write(self, buf: &mut [u8; 24]) -> &str {
        self.fill(buf);
        // Only ASCII digits and separators were written.
        std::str::from_utf8(buf).unwrap_or_default()
    }

    /// Whole seconds since the epoch (what the first 19 bytes of the text
    /// depend on).
    fn secs(self) -> u64 {
        self.0.min(MAX_MILLIS) / 1000
    }

    fn fill(self, buf: &mut [u8; 24]) {
        let ms = self.0.min(MAX_MILLIS);
        let secs = ms / 1000;
        let (year, month, day) = civil_from_days(secs / 86_400);
        let sod = secs % 86_400;
        digits(&mut buf[0..4], year);
        buf[4] = b'-';
        digits(&mut buf[5..7], month);
        buf[7] = b'-';
        digits(&mut buf[8..10], day);
        buf[10] = b'T';
        digits(&mut buf[11..13], sod / 3600);
        buf[13] = b':';
        digits(&mut buf[14..16], sod / 60 % 60);
        buf[16] = b':';
        digits(&mut buf[17..19], sod % 60);
        buf[19] = b'.';
        digits(&mut buf[20..23], ms % 1000);
        buf[23] = b'Z';
    }
}

/// Writes `v` as decimal digits filling `out` (zero-padded, most significant first).
fn digits(out: &mut [u8], mut v: u64) {
    for b in out.iter_mut().rev() {
        *b = b'0' + (v % 10) as u8;
        v /= 10;
    }
}

/// (year, month, day) of a day counted from 1970-01-01: Howard Hinnant's
/// `civil_from_days` (<https://howardhinnant.github.io/date_algorithms.html>),
/// for days on or after the epoch.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// A name in a [`Names`] buffer: its byte range there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Str {
    start: u32,
    len: u32,
    /// No byte of it needs escaping in JSON (checked once, when it is added).
    plain: bool,
}

/// Names back to back in one buffer: the accounting keeps the names of its
/// tables' entries in one, and a view copies it whole (one `memcpy` under
/// the lock instead of one per name, each likely a cache miss).
#[derive(Debug, Clone, Default)]
pub(crate) struct Names(String);

impl Names {
    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    pub(crate) fn push(&mut self, s: &str) -> Str {
        let start = self.0.len();
        self.0.push_str(s);
        // Names are at most 256 bytes and a view of 10,000 series holds a
        // few hundred KiB of them; past 4 GiB a name would read as empty.
        Str {
            start: u32::try_from(start).unwrap_or(u32::MAX),
            len: u32::try_from(s.len()).unwrap_or(0),
            plain: !needs_escape(s),
        }
    }

    pub(crate) fn push_opt(&mut self, s: Option<&str>) -> Option<Str> {
        s.map(|s| self.push(s))
    }

    pub(crate) fn get(&self, s: Str) -> &str {
        let start = s.start as usize;
        self.0
            .get(start..start + s.len as usize)
            .unwrap_or_default()
    }

    pub(crate) fn get_opt(&self, s: Option<Str>) -> Option<&str> {
        s.map(|s| self.get(s))
    }
}

/// A byte of `s` must be escaped in a JSON string.
fn needs_escape(s: &str) -> bool {
    s.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\')
}

/// One route as copied under the lock.
#[derive(Debug, Clone)]
pub(crate) struct RouteRow {
    pub generator_node: Option<Str>,
    pub agent_node: Option<Str>,
    pub spans: u64,
    /// Spans by [`Attribution::index`].
    pub by_source: [u64; 3],
    pub conflicts: u64,
    pub first: Millis,
    pub last: Millis,
}

/// The sources of `spans_by_attribution` in the order of their names (the
/// order of the `BTreeMap<String, u64>` in [`RouteStats`]).
const SOURCES_BY_NAME: [Attribution; 3] =
    [Attribution::Attribute, Attribution::Both, Attribution::Peer];

impl RouteRow {
    fn spans_from(&self, source: Attribution) -> u64 {
        source.index().map_or(0, |i| self.by_source[i])
    }

    fn attribution(&self) -> Option<Attribution> {
        let mut with_spans = SOURCES_BY_NAME
            .into_iter()
            .filter(|&s| self.spans_from(s) > 0);
        match (with_spans.next(), with_spans.next()) {
            (None, _) => None,
            (Some(one), None) => Some(one),
            (Some(_), Some(_)) => Some(Attribution::Mixed),
        }
    }

    fn by_source(&self) -> impl Iterator<Item = (Attribution, u64)> + '_ {
        SOURCES_BY_NAME
            .into_iter()
            .map(|s| (s, self.spans_from(s)))
            .filter(|&(_, n)| n > 0)
    }
}

/// One agent as copied under the lock; its peers are a range of
/// [`StatsView::peers`] (one vector for all, not one per agent).
#[derive(Debug, Clone)]
pub(crate) struct AgentRow {
    pub node: Option<Str>,
    pub spans: u64,
    pub peers: Range<usize>,
}

/// One generator as copied under the lock.
#[derive(Debug, Clone)]
pub(crate) struct GeneratorRow {
    pub id: Str,
    pub node: Option<Str>,
    pub spans: u64,
    pub duplicates: u64,
    pub missing: u64,
    pub untracked: u64,
    pub min_seq: Option<u64>,
    pub max_seq: Option<u64>,
    pub connections: u64,
    pub last: Millis,
}

/// The numbers of `/stats` as taken under the accounting lock (see the module
/// doc). The tables are empty in a view taken without them (`?summary=true`),
/// which is written as the summary document.
#[derive(Debug, Clone)]
pub struct StatsView {
    /// Taken with the tables (the full document), or without (the summary).
    pub(crate) tables: bool,
    pub(crate) since: Millis,
    pub(crate) spans_total: u64,
    pub(crate) local: u64,
    pub(crate) remote: u64,
    pub(crate) unattributed: u64,
    pub(crate) overflow: u64,
    pub(crate) overflow_generators: u64,
    pub(crate) names: Names,
    pub(crate) routes: Vec<RouteRow>,
    pub(crate) agents: Vec<AgentRow>,
    pub(crate) peers: Vec<SocketAddr>,
    pub(crate) generators: Vec<GeneratorRow>,
    pub(crate) requests: BTreeMap<Via, BTreeMap<Outcome, u64>>,
    pub(crate) conflicts: u64,
    /// With `--k8s-attribution`: `peer_spans` from the accounting, the API's
    /// state for the caller to fill in.
    pub(crate) kubernetes: Option<KubernetesStats>,
}

impl StatsView {
    /// The Kubernetes section, present with `--k8s-attribution`.
    pub fn kubernetes_mut(&mut self) -> Option<&mut KubernetesStats> {
        self.kubernetes.as_mut()
    }

    /// The typed document (owned strings; for embedders, `/check`, and the
    /// summary).
    pub fn to_stats(&self) -> SinkStats {
        let names = &self.names;
        let name = |n: Option<Str>| names.get_opt(n).map(str::to_owned);
        SinkStats {
            schema: SINK_STATS_SCHEMA.to_owned(),
            since: self.since.rfc3339(),
            spans_total: self.spans_total,
            local_spans: self.local,
            remote_spans: self.remote,
            unattributed_spans: self.unattributed,
            overflow_spans: self.overflow,
            overflow_generator_spans: self.overflow_generators,
            routes: self
                .routes
                .iter()
                .map(|r| RouteStats {
                    generator_node: name(r.generator_node),
                    agent_node: name(r.agent_node),
                    spans: r.spans,
                    first_seen: r.first.rfc3339(),
                    last_seen: r.last.rfc3339(),
                    attribution: r.attribution(),
                    spans_by_attribution: r.by_source().collect(),
                    agent_node_conflicts: r.conflicts,
                })
                .collect(),
            agents: self
                .agents
                .iter()
                .map(|a| AgentStats {
                    node: name(a.node),
                    spans: a.spans,
                    peers: self.peers_of(a).iter().map(ToString::to_string).collect(),
                })
                .collect(),
            generators: self
                .generators
                .iter()
                .map(|g| GeneratorStats {
                    id: names.get(g.id).to_owned(),
                    node: name(g.node),
                    spans: g.spans,
                    duplicates: g.duplicates,
                    missing: g.missing,
                    untracked: g.untracked,
                    min_seq: g.min_seq,
                    max_seq: g.max_seq,
                    connections: g.connections,
                    last_seen: g.last.rfc3339(),
                })
                .collect(),
            requests: self.requests.clone(),
            agent_node_conflicts: self.conflicts,
            kubernetes: self.kubernetes.clone(),
            summary: !self.tables,
        }
    }

    fn peers_of(&self, a: &AgentRow) -> &[SocketAddr] {
        self.peers.get(a.peers.clone()).unwrap_or_default()
    }

    /// The JSON of [`StatsView::to_stats`] as serde writes it, byte for byte,
    /// written straight from the view (see the module doc); a view taken
    /// without the tables is the summary: the same document, the tables left
    /// out, `"summary":true` last.
    pub fn to_json(&self) -> Vec<u8> {
        // Rows are 150 to 250 bytes at 10,000 series.
        let rows = self.routes.len() + self.agents.len() + self.generators.len();
        let mut w = Json {
            out: Vec::with_capacity(1024 + rows * 200 + self.peers.len() * 24),
            time_secs: u64::MAX,
            time_text: [0; 24],
        };
        w.raw("{\"schema\":");
        w.str(SINK_STATS_SCHEMA);
        w.raw(",\"since\":");
        w.time(self.since);
        w.raw(",\"spans_total\":");
        w.u64(self.spans_total);
        w.raw(",\"local_spans\":");
        w.u64(self.local);
        w.raw(",\"remote_spans\":");
        w.u64(self.remote);
        w.raw(",\"unattributed_spans\":");
        w.u64(self.unattributed);
        w.raw(",\"overflow_spans\":");
        w.u64(self.overflow);
        w.raw(",\"overflow_generator_spans\":");
        w.u64(self.overflow_generators);
        if self.tables {
            self.write_tables(&mut w);
        }
        w.raw(",\"requests\":");
        w.serde(&self.requests);
        w.raw(",\"agent_node_conflicts\":");
        w.u64(self.conflicts);
        if let Some(k) = &self.kubernetes {
            w.raw(",\"kubernetes\":");
            w.serde(k);
        }
        if !self.tables {
            w.raw(",\"summary\":true");
        }
        w.raw("}");
        w.out
    }

    /// `routes`, `agents` and `generators`, each preceded by a comma.
    fn write_tables(&self, w: &mut Json) {
        let names = &self.names;
        w.raw(",\"routes\":[");
        for (i, r) in self.routes.iter().enumerate() {
            w.raw(if i == 0 { "{" } else { ",{" });
            w.raw("\"generator_node\":");
            w.opt_name(names, r.generator_node);
            w.raw(",\"agent_node\":");
            w.opt_name(names, r.agent_node);
            w.raw(",\"spans\":");
            w.u64(r.spans);
            w.raw(",\"first_seen\":");
            w.time(r.first);
            w.raw(",\"last_seen\":");
            w.time(r.last);
            w.raw(",\"attribution\":");
            w.opt_str(r.attribution().map(Attribution::as_str));
            w.raw(",\"spans_by_attribution\":{");
            for (j, (source, n)) in r.by_source().enumerate() {
                if j > 0 {
                    w.raw(",");
                }
                w.str(source.as_str());
                w.raw(":");
                w.u64(n);
            }
            w.raw("},\"agent_node_conflicts\":");
            w.u64(r.conflicts);
            w.raw("}");
        }
        w.raw("],\"agents\":[");
        for (i, a) in self.agents.iter().enumerate() {
            w.raw(if i == 0 { "{" } else { ",{" });
            w.raw("\"node\":");
            w.opt_name(names, a.node);
            w.raw(",\"spans\":");
            w.u64(a.spans);
            w.raw(",\"peers\":[");
            for (j, p) in self.peers_of(a).iter().enumerate() {
                if j > 0 {
                    w.raw(",");
                }
                w.peer(p);
            }
            w.raw("]}");
        }
        w.raw("],\"generators\":[");
        for (i, g) in self.generators.iter().enumerate() {
            w.raw(if i == 0 { "{" } else { ",{" });
            w.raw("\"id\":");
            w.name(names, g.id);
            w.raw(",\"node\":");
            w.opt_name(names, g.node);
            w.raw(",\"spans\":");
            w.u64(g.spans);
            w.raw(",\"duplicates\":");
            w.u64(g.duplicates);
            w.raw(",\"missing\":");
            w.u64(g.missing);
            w.raw(",\"untracked\":");
            w.u64(g.untracked);
            w.raw(",\"min_seq\":");
            w.opt_u64(g.min_seq);
            w.raw(",\"max_seq\":");
            w.opt_u64(g.max_seq);
            w.raw(",\"connections\":");
            w.u64(g.connections);
            w.raw(",\"last_seen\":");
            w.time(g.last);
            w.raw("}");
        }
        w.raw("]");
    }
}

/// The compact JSON of serde_json, written piece by piece.
struct Json {
    out: Vec<u8>,
    /// The last time written, as [`Millis::secs`] and text: rows written
    /// one after the other mostly share the second, so only the
    /// milliseconds are rewritten.
    time_secs: u64,
    time_text: [u8; 24],
}

impl Json {
    /// JSON text as it is.
    fn raw(&mut self, s: &str) {
        self.out.extend_from_slice(s.as_bytes());
    }

    /// A string: copied between quotes unless a byte must be escaped, then
    /// as serde_json escapes it.
    fn str(&mut self, s: &str) {
        self.quoted(s, !needs_escape(s));
    }

    fn quoted(&mut self, s: &str, plain: bool) {
        if plain {
            self.out.push(b'"');
            self.out.extend_from_slice(s.as_bytes());
            self.out.push(b'"');
        } else {
            self.serde(s);
        }
    }

    fn opt_str(&mut self, s: Option<&str>) {
        match s {
            Some(s) => self.str(s),
            None => self.raw("null"),
        }
    }

    /// A name of the view (whether it needs escaping is known).
    fn name(&mut self, names: &Names, s: Str) {
        self.quoted(names.get(s), s.plain);
    }

    fn opt_name(&mut self, names: &Names, s: Option<Str>) {
        match s {
            Some(s) => self.name(names, s),
            None => self.raw("null"),
        }
    }

    fn u64(&mut self, n: u64) {
        self.raw(itoa::Buffer::new().format(n));
    }

    fn opt_u64(&mut self, n: Option<u64>) {
        match n {
            Some(n) => self.u64(n),
            None => self.raw("null"),
        }
    }

    fn time(&mut self, t: Millis) {
        if t.secs() == self.time_secs {
            digits(&mut self.time_text[20..23], t.0.min(MAX_MILLIS) % 1000);
        } else {
            t.fill(&mut self.time_text);
            self.time_secs = t.secs();
        }
        self.out.push(b'"');
        self.out.extend_from_slice(&self.time_text);
        self.out.push(b'"');
    }

    /// A peer address as `Display` writes it (digits, dots, colons and
    /// brackets: nothing to escape); IPv4 without going through `fmt`.
    fn peer(&mut self, p: &SocketAddr) {
        self.out.push(b'"');
        match p {
            SocketAddr::V4(v4) => {
                let [a, b, c, d] = v4.ip().octets();
                let mut digits = itoa::Buffer::new();
                for (i, octet) in [a, b, c, d].into_iter().enumerate() {
                    if i > 0 {
                        self.out.push(b'.');
                    }
                    self.raw(digits.format(octet));
                }
                self.out.push(b':');
                self.raw(digits.format(v4.port()));
            }
            // Writing into a Vec cannot fail.
            SocketAddr::V6(_) => drop(write!(self.out, "{p}")),
        }
        self.out.push(b'"');
    }

    fn serde<T: serde::Serialize + ?Sized>(&mut self, v: &T) {
        // Plain data with string keys into a Vec: cannot fail.
        let _ = serde_json::to_writer(&mut self.out, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn sources_by_name_are_in_name_order() {
        let names: Vec<_> = SOURCES_BY_NAME.iter().map(|s| s.as_str()).collect();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        assert_eq!(names, sorted);
        assert_eq!(SOURCES_BY_NAME.len(), Attribution::ALL.len());
    }

    /// The same text as humantime (what `trace_proto::stats::rfc3339`
    /// writes) from the epoch to the year 9999, across leap days, month and
    /// century ends.
    #[test]
    fn millis_format_like_humantime() {
        let check = |ms: u64| {
            let t = UNIX_EPOCH + Duration::from_millis(ms);
            assert_eq!(
                Millis(ms).rfc3339(),
                trace_proto::stats::rfc3339(t),
                "{ms} ms"
            );
            assert_eq!(Millis::of(t), Millis(ms));
        };
        for day in [
            0u64, 58, 59, 60, 365, 10_956, 11_016, 11_017, 11_070, 47_540, 47_541,
        ] {
            for ms in [0, 1, 999, 86_399_999] {
                check(day * 86_400_000 + ms);
            }
        }
        // Every day of 2024-2028, and a spread up to the year 9999.
        for day in 19_723..21_550 {
            check(day * 86_400_000 + 45_296_789);
        }
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            check(x % (MAX_MILLIS + 1));
        }
        check(MAX_MILLIS);
        assert_eq!(Millis(u64::MAX).rfc3339(), "9999-12-31T23:59:59.999Z");
        assert_eq!(Millis::of(UNIX_EPOCH - Duration::from_secs(1)), Millis(0));
    }

    /// Times written one after the other (the second's text is reused while
    /// the second stays) read as each on its own.
    #[test]
    fn times_in_a_row_reuse_only_their_second() {
        let t0 = 1_764_000_000_123;
        let times = [
            t0,
            t0,
            t0 + 1,
            t0 + 876,
            t0 + 877,
            t0 - 5_000,
            t0 - 4_999,
            t0 + 86_400_000,
            0,
            999,
            1_000,
            MAX_MILLIS,
            u64::MAX,
        ];
        let mut w = Json {
            out: Vec::new(),
            time_secs: u64::MAX,
            time_text: [0; 24],
        };
        let mut want = String::new();
        for t in times {
            w.time(Millis(t));
            want.push_str(&format!("\"{}\"", Millis(t).rfc3339()));
        }
        assert_eq!(String::from_utf8(w.out).unwrap(), want);
    }
}
