//! The generator's live account. Hot counters are atomics; failures by reason
//! sit behind a mutex taken only when something fails. [`Counters::report`] is
//! the `/stats` JSON, the progress line and the summary.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use tokio::time::Instant;
use trace_proto::stats::{GENERATOR_STATS_SCHEMA, GeneratorReport, LastError, rfc3339};

use crate::failure::{Failure, Reason};

#[derive(Debug, Default)]
struct Failures {
    spans: BTreeMap<String, u64>,
    requests: BTreeMap<String, u64>,
    last: Option<LastError>,
    seen: BTreeSet<String>,
}

/// Live counters of one generator.
#[derive(Debug)]
pub struct Counters {
    started: Instant,
    node: String,
    generator_id: String,
    endpoint: String,
    protocol: String,
    spans_sent: AtomicU64,
    spans_accepted: AtomicU64,
    spans_failed: AtomicU64,
    requests_ok: AtomicU64,
    in_flight: AtomicU64,
    connections: Arc<AtomicU64>,
    first_seq: AtomicU64,
    last_seq: AtomicU64,
    failures: Mutex<Failures>,
}

impl Counters {
    pub(crate) fn new(node: &str, generator_id: &str, endpoint: &str, protocol: &str) -> Self {
        Counters {
            started: Instant::now(),
            node: node.into(),
            generator_id: generator_id.into(),
            endpoint: endpoint.into(),
            protocol: protocol.into(),
            spans_sent: AtomicU64::new(0),
            spans_accepted: AtomicU64::new(0),
            spans_failed: AtomicU64::new(0),
            requests_ok: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            connections: Arc::new(AtomicU64::new(0)),
            first_seq: AtomicU64::new(0),
            last_seq: AtomicU64::new(0),
            failures: Mutex::new(Failures::default()),
        }
    }

    /// The counter the connector increments for every TCP connection opened.
    pub(crate) fn connections(&self) -> Arc<AtomicU64> {
        self.connections.clone()
    }

    pub(crate) fn sent(&self, first: u64, last: u64) {
        let n = last - first + 1;
        let _ = self
            .first_seq
            .compare_exchange(0, first, Ordering::Relaxed, Ordering::Relaxed);
        self.last_seq.fetch_max(last, Ordering::Relaxed);
        self.spans_sent.fetch_add(n, Ordering::Relaxed);
        self.in_flight.fetch_add(n, Ordering::Relaxed);
    }

    /// An accepted request of `n` spans, `rejected` of which the endpoint
    /// reported as rejected with `message` (partial success). True the first
    /// time the endpoint reported rejected spans, or (with none rejected) a
    /// warning message: log it.
    pub(crate) fn accepted(&self, n: u64, rejected: u64, message: &str) -> bool {
        let rejected = rejected.min(n);
        self.requests_ok.fetch_add(1, Ordering::Relaxed);
        self.spans_accepted
            .fetch_add(n - rejected, Ordering::Relaxed);
        self.in_flight.fetch_sub(n, Ordering::Relaxed);
        if rejected > 0 {
            self.spans_failed.fetch_add(rejected, Ordering::Relaxed);
            let mut f = self.lock();
            let label = Reason::PartialRejected.label();
            *f.spans.entry(label.clone()).or_default() += rejected;
            let detail = if message.is_empty() {
                "(no error message)"
            } else {
                message
            };
            f.last = Some(LastError {
                reason: label.clone(),
                message: format!("{rejected} of {n} spans rejected: {detail}"),
                time: rfc3339(SystemTime::now()),
            });
            f.seen.insert(label)
        } else if !message.is_empty() {
            // A warning with full success (the specification allows it).
            self.lock().seen.insert("partial_success_warning".into())
        } else {
            false
        }
    }

    /// Records a failed attempt; true the first time this reason is seen (log it).
    pub(crate) fn attempt_failed(&self, failure: &Failure) -> bool {
        let mut f = self.lock();
        let label = failure.reason.label();
        *f.requests.entry(label.clone()).or_default() += 1;
        f.last = Some(LastError {
            reason: label.clone(),
            message: failure.message.clone(),
            time: rfc3339(SystemTime::now()),
        });
        f.seen.insert(label)
    }

    /// The spans of a request whose every attempt failed.
    pub(crate) fn spans_failed(&self, reason: Reason, n: u64) {
        self.spans_failed.fetch_add(n, Ordering::Relaxed);
        self.in_flight.fetch_sub(n, Ordering::Relaxed);
        *self.lock().spans.entry(reason.label()).or_default() += n;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Failures> {
        self.failures.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Spans sent whose outcome is not known yet.
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// A consistent-enough snapshot (each counter is read once).
    pub fn report(&self) -> GeneratorReport {
        let elapsed = self.started.elapsed().as_secs_f64();
        let sent = self.spans_sent.load(Ordering::Relaxed);
        let f = self.lock();
        let seq = |a: &AtomicU64| Some(a.load(Ordering::Relaxed)).filter(|&v| v > 0);
        GeneratorReport {
            schema: GENERATOR_STATS_SCHEMA.into(),
            node: self.node.clone(),
            generator_id: self.generator_id.clone(),
            endpoint: self.endpoint.clone(),
            protocol: self.protocol.clone(),
            spans_sent: sent,
            spans_accepted: self.spans_accepted.load(Ordering::Relaxed),
            spans_failed: self.spans_failed.load(Ordering::Relaxed),
            spans_failed_by_reason: f.spans.clone(),
            requests_ok: self.requests_ok.load(Ordering::Relaxed),
            requests_failed_by_reason: f.requests.clone(),
            last_error: f.last.clone(),
            connections_opened: self.connections.load(Ordering::Relaxed),
            first_seq: seq(&self.first_seq),
            last_seq: seq(&self.last_seq),
            elapsed_seconds: (elapsed * 1000.0).round() / 1000.0,
            rate: if elapsed > 0.0 {
                ((sent as f64 / elapsed) * 10.0).round() / 10.0
            } else {
                0.0
            },
        }
    }
}

/// `reason=n, reason=n` or `none`.
pub fn by_reason(m: &BTreeMap<String, u64>) -> String {
    if m.is_empty() {
        return "none".into();
    }
    let mut s = String::new();
    for (k, v) in m {
        if !s.is_empty() {
            s.push_str(", ");
        }
        let _ = write!(s, "{k}={v}");
    }
    s
}

/// The one-line form of a report (progress lines and the final summary).
pub fn one_line(r: &GeneratorReport) -> String {
    format!(
        "node={} generator={} sent={} accepted={} failed={} ({}) connections={} seq={}..{} elapsed={:.1}s rate={:.1}/s",
        r.node,
        r.generator_id,
        r.spans_sent,
        r.spans_accepted,
        r.spans_failed,
        by_reason(&r.spans_failed_by_reason),
        r.connections_opened,
        r.first_seq.map_or("-".into(), |v| v.to_string()),
        r.last_seq.map_or("-".into(), |v| v.to_string()),
        r.elapsed_seconds,
        r.rate,
    )
}
