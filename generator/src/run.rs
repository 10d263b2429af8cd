//! The send loop.
//!
//! - Rate: a ticker fires once per batch (`batch / rate` seconds) on a fixed
//!   grid from the start, skipping ticks it missed, so the rate holds without
//!   drift and never bursts beyond one batch.
//! - At most `workers` requests are in flight (a semaphore); a batch is built,
//!   and its sequence numbers taken, only once a slot is free, so nothing queues
//!   when the endpoint is slow or down: memory stays bounded.
//! - A sequence number is never reused: a failed batch keeps its numbers and
//!   the sink sees the gap.
//! - After a failure the next request waits for a backoff (doubling, bounded);
//!   a transport failure also drops the connection so the next one re-resolves
//!   the name. `--reconnect-every` does the same on purpose.
//! - Stop (count reached, duration over, or the shutdown future) ends
//!   production, cancels pending retries and waits for in-flight requests up to
//!   the export timeout.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::Semaphore;
use tokio::time::{Instant, MissedTickBehavior};
use trace_proto::otlp::KeyValue;
use trace_proto::span::{build_request, build_span};
use trace_proto::stats::GeneratorReport;

use crate::config::{ConfigError, GenConfig, Reconnect};
use crate::counters::{Counters, by_reason};
use crate::transport::{Connector, Exporter, Failure, reason};

/// One generator: configured, not yet running.
pub struct Generator {
    config: GenConfig,
    generator_id: String,
    resource: Vec<KeyValue>,
    counters: Arc<Counters>,
}

struct ConnState {
    exporter: Exporter,
    epoch: u64,
    requests: u64,
    opened_at: Instant,
    broken: bool,
    backoff: Duration,
    retry_at: Option<Instant>,
}

/// Owns the current connection epoch: when to replace it and how long to back off.
struct Connections {
    state: Mutex<ConnState>,
    make: Box<dyn Fn() -> Exporter + Send + Sync>,
    reconnect: Reconnect,
    min_backoff: Duration,
    max_backoff: Duration,
}

impl Connections {
    fn lock(&self) -> std::sync::MutexGuard<'_, ConnState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The exporter for the next request, replacing it when it is due.
    fn get(&self) -> (Exporter, u64) {
        let mut st = self.lock();
        let due = st.broken
            || match self.reconnect {
                Reconnect::Never => false,
                Reconnect::Requests(n) => st.requests >= n,
                Reconnect::Every(d) => st.opened_at.elapsed() >= d,
            };
        if due {
            st.exporter = (self.make)();
            st.epoch += 1;
            st.requests = 0;
            st.opened_at = Instant::now();
            st.broken = false;
        }
        st.requests += 1;
        (st.exporter.clone(), st.epoch)
    }

    fn succeeded(&self) {
        let mut st = self.lock();
        st.backoff = Duration::ZERO;
        st.retry_at = None;
    }

    fn failed(&self, epoch: u64, failure: &Failure) {
        let mut st = self.lock();
        let transport = matches!(
            failure.reason.as_str(),
            reason::CONNECTION_REFUSED
                | reason::CONNECT_TIMEOUT
                | reason::EXPORT_TIMEOUT
                | reason::DNS
                | reason::TRANSPORT
        );
        if transport && epoch == st.epoch {
            st.broken = true;
        }
        st.backoff = if st.backoff.is_zero() {
            self.min_backoff
        } else {
            (st.backoff * 2).min(self.max_backoff)
        };
        st.retry_at = Some(Instant::now() + st.backoff);
    }

    fn retry_at(&self) -> Option<Instant> {
        self.lock().retry_at
    }
}

impl Generator {
    /// Validates the config and prepares the generator (new generator id).
    pub fn new(config: GenConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        let generator_id = uuid::Uuid::new_v4().to_string();
        let resource = config.resource_attributes(&generator_id);
        let counters = Arc::new(Counters::new(
            &config.node_name,
            &generator_id,
            &config.endpoint.url,
            config.protocol.as_str(),
        ));
        // Build one exporter now so header or endpoint problems are usage errors.
        Exporter::new(
            &config.endpoint,
            config.protocol,
            config.compression,
            &config.headers,
            Connector::new(config.connect_timeout, counters.connections()),
        )?;
        Ok(Generator {
            config,
            generator_id,
            resource,
            counters,
        })
    }

    /// This process's generator id.
    pub fn generator_id(&self) -> &str {
        &self.generator_id
    }

    /// The live counters, readable while [`Generator::run`] runs.
    pub fn counters(&self) -> Arc<Counters> {
        self.counters.clone()
    }

    /// Sends until the count or duration is reached or `shutdown` completes,
    /// waits for in-flight requests (at most the export timeout), and returns the summary.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> GeneratorReport {
        let cfg = self.config;
        let counters = self.counters;
        let make = {
            let cfg = cfg.clone();
            let conns = counters.connections();
            move || {
                Exporter::new(
                    &cfg.endpoint,
                    cfg.protocol,
                    cfg.compression,
                    &cfg.headers,
                    Connector::new(cfg.connect_timeout, conns.clone()),
                )
                .expect("validated in Generator::new")
            }
        };
        let first = make();
        let conns = Arc::new(Connections {
            state: Mutex::new(ConnState {
                exporter: first,
                epoch: 0,
                requests: 0,
                opened_at: Instant::now(),
                broken: false,
                backoff: Duration::ZERO,
                retry_at: None,
            }),
            make: Box::new(make),
            reconnect: cfg.reconnect,
            min_backoff: cfg.min_backoff,
            max_backoff: cfg.max_backoff,
        });
        let stopping = Arc::new(AtomicBool::new(false));
        let slots = Arc::new(Semaphore::new(cfg.workers));
        let start = Instant::now();
        let end = cfg.duration.map(|d| start + d);
        let mut ticker = (cfg.rate > 0.0).then(|| {
            let period =
                Duration::from_secs_f64(cfg.batch as f64 / cfg.rate).max(Duration::from_micros(1));
            let mut t = tokio::time::interval_at(start, period);
            t.set_missed_tick_behavior(MissedTickBehavior::Skip);
            t
        });
        let reporter = (!cfg.report_interval.is_zero())
            .then(|| tokio::spawn(report_progress(counters.clone(), cfg.report_interval)));
        let mut tasks = tokio::task::JoinSet::new();
        let mut next_seq: u64 = 1;
        // A Send rng, so the run future can be spawned.
        let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::from_os_rng();
        let end_sleep = async {
            match end {
                Some(e) => tokio::time::sleep_until(e).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(shutdown);
        tokio::pin!(end_sleep);
        // Set when the shutdown future fired: pending retries are cancelled then,
        // while a run that reached its count or duration lets them finish.
        let mut interrupted = false;
        loop {
            if let Some(count) = cfg.count
                && next_seq > count
            {
                break;
            }
            // Take a free slot first, then wait for the tick, then for the backoff:
            // slots freed during a stall cannot turn into a burst of batches.
            let permit = tokio::select! {
                biased;
                _ = &mut shutdown => { interrupted = true; break }
                _ = &mut end_sleep => break,
                p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            };
            if let Some(t) = ticker.as_mut() {
                tokio::select! {
                    biased;
                    _ = &mut shutdown => { interrupted = true; break }
                    _ = &mut end_sleep => break,
                    _ = t.tick() => {}
                }
            }
            if let Some(at) = conns.retry_at()
                && at > Instant::now()
            {
                tokio::select! {
                    biased;
                    _ = &mut shutdown => { interrupted = true; break }
                    _ = &mut end_sleep => break,
                    _ = tokio::time::sleep_until(at) => {}
                }
            }
            if end.is_some_and(|e| Instant::now() >= e) {
                break;
            }
            // Reap finished tasks so the set stays small.
            while tasks.try_join_next().is_some() {}
            let n = cfg.count.map_or(cfg.batch as u64, |c| {
                (cfg.batch as u64).min(c - next_seq + 1)
            });
            let (lo, hi) = (next_seq, next_seq + n - 1);
            if hi > i64::MAX as u64 {
                // The sequence attribute is an OTLP int64: stop rather than wrap.
                tracing::warn!("sequence numbers exhausted at {}", next_seq - 1);
                break;
            }
            next_seq = hi + 1;
            let now = SystemTime::now();
            let spans = (lo..=hi).map(|s| build_span(s, now, &mut rng)).collect();
            let req = build_request(&self.resource, spans);
            counters.sent(lo, hi);
            let (conns, counters, stopping) = (conns.clone(), counters.clone(), stopping.clone());
            let (timeout, retries) = (cfg.timeout, cfg.retries);
            tasks.spawn(async move {
                let _permit = permit;
                let mut attempt = 0;
                let mut req = Some(req);
                loop {
                    let (exporter, epoch) = conns.get();
                    // Only a request that may be retried is copied; the last attempt takes it.
                    let attempt_req = if attempt >= retries {
                        req.take().unwrap_or_default()
                    } else {
                        req.clone().unwrap_or_default()
                    };
                    match exporter.export(attempt_req, timeout).await {
                        Ok(rejected) => {
                            conns.succeeded();
                            counters.accepted(n, rejected.min(n));
                            return;
                        }
                        Err(f) => {
                            if counters.attempt_failed(&f) {
                                tracing::warn!(reason = %f.reason, "export failed: {} (further failures of this kind are summed up in the progress lines)", f.message);
                            }
                            conns.failed(epoch, &f);
                            if attempt >= retries || stopping.load(Ordering::Relaxed) {
                                counters.spans_failed(&f.reason, n);
                                return;
                            }
                            attempt += 1;
                            if let Some(at) = conns.retry_at() {
                                tokio::time::sleep_until(at).await;
                            }
                        }
                    }
                }
            });
        }
        let grace = cfg.timeout + Duration::from_millis(500);
        let drained = {
            let drain = async { while tasks.join_next().await.is_some() {} };
            tokio::pin!(drain);
            if interrupted {
                // Stop now: no more retries; in-flight requests end within the export timeout.
                stopping.store(true, Ordering::Relaxed);
                tokio::time::timeout(grace, &mut drain).await
            } else {
                // Done: let pending retries run, unless the shutdown future fires meanwhile.
                tokio::select! {
                    _ = &mut drain => Ok(()),
                    _ = &mut shutdown => {
                        stopping.store(true, Ordering::Relaxed);
                        tokio::time::timeout(grace, &mut drain).await
                    }
                }
            }
        };
        if drained.is_err() {
            tasks.abort_all();
            while tasks.join_next().await.is_some() {}
            let left = counters.in_flight();
            if left > 0 {
                tracing::warn!(
                    "{left} spans still in flight after {grace:?} at stop: counted as failed (aborted)"
                );
                counters.spans_failed("aborted", left);
            }
        }
        if let Some(r) = reporter {
            r.abort();
        }
        counters.report()
    }
}

async fn report_progress(counters: Arc<Counters>, every: Duration) {
    let mut t = tokio::time::interval_at(Instant::now() + every, every);
    let mut last = (Instant::now(), 0u64);
    loop {
        t.tick().await;
        let r = counters.report();
        let now = Instant::now();
        let rate = (r.spans_sent - last.1) as f64 / now.duration_since(last.0).as_secs_f64();
        last = (now, r.spans_sent);
        tracing::info!(
            "progress: {rate:.1} spans/s, sent {} accepted {} failed {} ({}), in flight {}, connections {}",
            r.spans_sent,
            r.spans_accepted,
            r.spans_failed,
            by_reason(&r.spans_failed_by_reason),
            counters.in_flight(),
            r.connections_opened
        );
    }
}
