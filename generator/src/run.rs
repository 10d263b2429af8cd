//! The send loop, in three parts: `Pacer` (when the next batch may go and
//! its sequence numbers), `Sender` (one batch with retries over the current
//! connection epoch, `Connections`) and `drain` (what happens at stop).
//!
//! - Rate: one batch per `batch / rate` seconds on a fixed grid from the
//!   start. Ticks missed by up to [`CATCH_UP`] (a slow answer, the process not
//!   scheduled) are sent as soon as a slot is free, so the long-run rate holds;
//!   ticks further behind (an outage) are skipped, so a recovering endpoint is
//!   not flooded. Never more than `workers` requests in flight either way.
//! - At most `workers` requests are in flight (a semaphore); a batch is built,
//!   and its sequence numbers taken, only once a slot is free, so nothing queues
//!   when the endpoint is slow or down: memory stays bounded.
//! - A sequence number is never reused: a failed batch keeps its numbers and
//!   the sink sees the gap.
//! - After a failure the next request waits for a backoff (doubling, bounded,
//!   with jitter), or the server's retry delay if longer (bounded by
//!   [`MAX_RETRY_AFTER`]); a transport failure also drops the connection so the
//!   next one re-resolves the name. `--reconnect-every` does the same on purpose.
//! - Retries (`--retries`) only for what the OTLP specification calls
//!   retryable ([`Failure::is_retryable`]).
//! - Stop (count reached, duration over, or the shutdown future) ends
//!   production, cancels pending retries and waits for in-flight requests up to
//!   the export timeout.
//!
//! # Time
//! Every part reads the clock only through `tokio::time` (`Instant::now`,
//! `sleep_until`), never `std::time::Instant`: the runtime's clock is the one
//! injected. Under tokio's paused clock (`#[tokio::test(start_paused = true)]`)
//! the pacing is exact and instant. Real sockets do not mix with a paused
//! clock (it jumps to the next timer whenever the runtime waits for one), so
//! such tests send through an in-memory [`Transport`]
//! ([`Generator::with_transport`]).

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use trace_proto::otlp::KeyValue;
use trace_proto::span::encode_request;
use trace_proto::stats::GeneratorReport;

use crate::config::{ConfigError, ExporterSettings, GenConfig, Reconnect};
use crate::counters::{Counters, by_reason};
use crate::failure::{Failure, Reason};
use crate::transport::{Accepted, Connector, Exporter};

/// The longest wait a server may ask for (HTTP `Retry-After`, gRPC
/// `RetryInfo`) and still get a retry: a longer one ends the request's
/// retries (its spans fail under the reason the server gave), and the next
/// requests wait this long.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);

/// The future of one [`Transport::export`].
pub type ExportFuture = Pin<Box<dyn Future<Output = Result<Accepted, Failure>> + Send>>;

/// Where a batch goes: one encoded `ExportTraceServiceRequest` in, how it
/// ended out. [`Exporter`] (OTLP/gRPC or OTLP/HTTP to the configured
/// endpoint) is trace-gen's; [`Generator::with_transport`] puts another in
/// its place (tests: an in-memory endpoint on tokio's paused clock).
pub trait Transport: Send + Sync {
    /// Sends `req`; an answer later than `timeout` is a failure
    /// ([`Reason::ExportTimeout`]).
    fn export(&self, req: Bytes, timeout: Duration) -> ExportFuture;
}

impl Transport for Exporter {
    fn export(&self, req: Bytes, timeout: Duration) -> ExportFuture {
        let exporter = self.clone();
        Box::pin(async move { exporter.export(req, timeout).await })
    }
}

/// Makes the transport of a new connection epoch (at start, after a
/// transport failure, at `--reconnect-every`).
type MakeTransport = Arc<dyn Fn() -> Arc<dyn Transport> + Send + Sync>;

/// One generator: configured, not yet running.
pub struct Generator {
    config: GenConfig,
    generator_id: String,
    resource: Vec<KeyValue>,
    counters: Arc<Counters>,
    transport: Option<MakeTransport>,
}

struct ConnState {
    exporter: Arc<dyn Transport>,
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
    make: MakeTransport,
    reconnect: Reconnect,
    min_backoff: Duration,
    max_backoff: Duration,
}

impl Connections {
    /// Connections to `settings`' endpoint, counted in `opened`.
    fn new(cfg: &GenConfig, opened: Arc<std::sync::atomic::AtomicU64>) -> Self {
        let (settings, connect_timeout) = (cfg.exporter.clone(), cfg.connect_timeout);
        let make: MakeTransport = Arc::new(move || {
            Arc::new(
                Exporter::new(&settings, Connector::new(connect_timeout, opened.clone()))
                    .expect("validated in Generator::new"),
            )
        });
        Self::with(cfg, make)
    }

    /// Connections made by `make`.
    fn with(cfg: &GenConfig, make: MakeTransport) -> Self {
        Connections {
            state: Mutex::new(ConnState {
                exporter: make(),
                epoch: 0,
                requests: 0,
                opened_at: Instant::now(),
                broken: false,
                backoff: Duration::ZERO,
                retry_at: None,
            }),
            make,
            reconnect: cfg.reconnect,
            min_backoff: cfg.min_backoff,
            max_backoff: cfg.max_backoff,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ConnState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The exporter for the next request, replacing it when it is due.
    fn get(&self) -> (Arc<dyn Transport>, u64) {
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

    /// Records a failure; returns when the next attempt may go: the backoff
    /// (doubling from `min_backoff` to `max_backoff`, with jitter: a uniform
    /// draw from its upper half), or the server's retry delay if longer
    /// (bounded by [`MAX_RETRY_AFTER`]). Every request waits for it.
    fn failed(&self, epoch: u64, failure: &Failure) -> Instant {
        let mut st = self.lock();
        if failure.reason.is_transport() && epoch == st.epoch {
            st.broken = true;
        }
        st.backoff = if st.backoff.is_zero() {
            self.min_backoff
        } else {
            (st.backoff * 2).min(self.max_backoff)
        };
        let jittered = st.backoff.mul_f64(rand::random_range(0.5..=1.0));
        let wait = failure
            .retry_after
            .map_or(jittered, |hint| hint.min(MAX_RETRY_AFTER).max(jittered));
        let at = Instant::now() + wait;
        st.retry_at = Some(st.retry_at.map_or(at, |prev| prev.max(at)));
        at
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
            &config.exporter.endpoint.url,
            config.exporter.protocol.as_str(),
        ));
        // Build one exporter now so header or endpoint problems are usage errors.
        check_exporter(&config.exporter, config.connect_timeout)?;
        Ok(Generator {
            config,
            generator_id,
            resource,
            counters,
            transport: None,
        })
    }

    /// Sends through the transports `make` returns, one per connection epoch,
    /// instead of OTLP to the configured endpoint (which is still validated,
    /// and still named in the report). For tests on tokio's paused clock, and
    /// embedders with a transport of their own.
    pub fn with_transport<T: Transport + 'static>(
        mut self,
        make: impl Fn() -> T + Send + Sync + 'static,
    ) -> Self {
        self.transport = Some(Arc::new(move || Arc::new(make()) as Arc<dyn Transport>));
        self
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
        let conns = match self.transport {
            Some(make) => Connections::with(&cfg, make),
            None => Connections::new(&cfg, counters.connections()),
        };
        let sender = Sender {
            conns: Arc::new(conns),
            counters: counters.clone(),
            stopping: CancellationToken::new(),
            timeout: cfg.exporter.timeout,
            retries: cfg.retries,
        };
        let reporter = (!cfg.report_interval.is_zero())
            .then(|| tokio::spawn(report_progress(counters.clone(), cfg.report_interval)));
        let start = Instant::now();
        let end = cfg.duration.map(|d| start + d);
        let end_sleep = async {
            match end {
                Some(e) => tokio::time::sleep_until(e).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(shutdown);
        tokio::pin!(end_sleep);
        let mut stops = Stops {
            shutdown: shutdown.as_mut(),
            end: end_sleep,
        };
        let mut pacer = Pacer::new(&cfg, start);
        // A Send rng, so the run future can be spawned. Trace and span ids need
        // to be random and unique, not unpredictable: a fast non-cryptographic
        // generator seeded from the OS (xoshiro256++, as the OpenTelemetry
        // SDKs' id generators), not ChaCha (4% of trace-gen's CPU at full speed).
        let mut rng = <rand::rngs::SmallRng as rand::SeedableRng>::from_os_rng();
        let mut tasks = JoinSet::new();
        let stop = loop {
            let (permit, n) = match pacer.next(&mut stops, &sender.conns, end).await {
                Ok(next) => next,
                Err(stop) => break stop,
            };
            // Reap finished tasks so the set stays small.
            while tasks.try_join_next().is_some() {}
            let Some((lo, hi)) = pacer.take(n) else {
                break Stop::Done;
            };
            // Written straight as protobuf: no Span structs per span.
            let req = Bytes::from(encode_request(
                &self.resource,
                lo..=hi,
                SystemTime::now(),
                &mut rng,
            ));
            counters.sent(lo, hi);
            tasks.spawn(sender.clone().send(req, hi - lo + 1, permit));
        };
        let grace = cfg.exporter.timeout + Duration::from_millis(500);
        drain(
            tasks,
            stop,
            stops.shutdown,
            grace,
            &sender.stopping,
            &counters,
        )
        .await;
        if let Some(r) = reporter {
            r.abort();
        }
        counters.report()
    }
}

/// Builds one exporter, so header or endpoint problems show before the run.
fn check_exporter(
    settings: &ExporterSettings,
    connect_timeout: Duration,
) -> Result<(), ConfigError> {
    Exporter::new(
        settings,
        Connector::new(connect_timeout, Default::default()),
    )
    .map(drop)
}

/// Why production stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// The shutdown future fired: pending retries are cancelled.
    Interrupted,
    /// Count or duration reached (or sequence numbers exhausted): pending
    /// retries may finish.
    Done,
}

/// The two things that end production, raced against every wait of the loop.
struct Stops<'a, S, E> {
    shutdown: Pin<&'a mut S>,
    end: Pin<&'a mut E>,
}

impl<S: Future<Output = ()>, E: Future<Output = ()>> Stops<'_, S, E> {
    /// `fut`'s output, unless a stop comes first (shutdown wins a tie).
    async fn race<T>(&mut self, fut: impl Future<Output = T>) -> Result<T, Stop> {
        tokio::select! {
            biased;
            _ = self.shutdown.as_mut() => Err(Stop::Interrupted),
            _ = self.end.as_mut() => Err(Stop::Done),
            v = fut => Ok(v),
        }
    }
}

/// How far behind its grid the pacer catches up. Skipping every missed tick
/// (tokio's `MissedTickBehavior::Skip`, as before) lost 3-10% of the target
/// rate on a busy machine, where a request or the process itself is often
/// late by a period; catching up without a bound would flood an endpoint
/// that comes back after an outage.
pub const CATCH_UP: Duration = Duration::from_secs(1);

/// Pacing: when the next batch may go, and its sequence numbers.
///
/// One batch per `batch / rate` seconds on a fixed grid from the start;
/// missed ticks up to [`CATCH_UP`] behind are caught up, older ones skipped.
struct Pacer {
    slots: Arc<Semaphore>,
    /// The grid: the next tick and the period (None: no rate limit).
    ticker: Option<(Instant, Duration)>,
    next_seq: u64,
    count: Option<u64>,
    batch: u64,
}

impl Pacer {
    fn new(cfg: &GenConfig, start: Instant) -> Self {
        let ticker = (cfg.rate > 0.0).then(|| {
            let period =
                Duration::from_secs_f64(cfg.batch as f64 / cfg.rate).max(Duration::from_micros(1));
            (start, period)
        });
        Pacer {
            slots: Arc::new(Semaphore::new(cfg.workers)),
            ticker,
            next_seq: 1,
            count: cfg.count,
            batch: cfg.batch as u64,
        }
    }

    /// Waits until the next batch may go: a free slot first, then the tick,
    /// then the backoff, so slots freed during a stall cannot turn into a
    /// burst. Returns the slot and the batch size.
    async fn next<S, E>(
        &mut self,
        stops: &mut Stops<'_, S, E>,
        conns: &Connections,
        end: Option<Instant>,
    ) -> Result<(OwnedSemaphorePermit, u64), Stop>
    where
        S: Future<Output = ()>,
        E: Future<Output = ()>,
    {
        let left = self.count.map(|c| c.saturating_sub(self.next_seq - 1));
        if left == Some(0) {
            return Err(Stop::Done);
        }
        let permit = stops
            .race(self.slots.clone().acquire_owned())
            .await?
            .map_err(|_| Stop::Done)?;
        if let Some((due, period)) = self.ticker.as_mut() {
            let now = Instant::now();
            if *due > now {
                stops.race(tokio::time::sleep_until(*due)).await?;
            } else if now.duration_since(*due) > CATCH_UP {
                // Too far behind: skip the ticks older than CATCH_UP, whole
                // periods only, so the grid stays where it was.
                let behind = now.duration_since(*due) - CATCH_UP;
                let skip = behind.as_nanos() / period.as_nanos().max(1) + 1;
                *due = match u32::try_from(skip) {
                    Ok(k) => *due + period.saturating_mul(k),
                    Err(_) => now.checked_sub(CATCH_UP).unwrap_or(now),
                };
            }
            *due += *period;
        }
        if let Some(at) = conns.retry_at()
            && at > Instant::now()
        {
            stops.race(tokio::time::sleep_until(at)).await?;
        }
        if end.is_some_and(|e| Instant::now() >= e) {
            return Err(Stop::Done);
        }
        Ok((permit, left.map_or(self.batch, |l| self.batch.min(l))))
    }

    /// Takes the next `n` sequence numbers; `None` once they are exhausted.
    /// A sequence number is never reused: a failed batch keeps its numbers.
    fn take(&mut self, n: u64) -> Option<(u64, u64)> {
        let (lo, hi) = (self.next_seq, self.next_seq + n - 1);
        if hi > i64::MAX as u64 {
            // The sequence attribute is an OTLP int64: stop rather than wrap.
            tracing::warn!("sequence numbers exhausted at {}", lo - 1);
            return None;
        }
        self.next_seq = hi + 1;
        Some((lo, hi))
    }
}

/// Sending one batch with retries; cloned into every request task.
#[derive(Clone)]
struct Sender {
    conns: Arc<Connections>,
    counters: Arc<Counters>,
    /// Cancelled at an interrupting stop: no further retries, and a pending
    /// retry wait ends at once.
    stopping: CancellationToken,
    timeout: Duration,
    retries: u32,
}

impl Sender {
    /// Sends `req` (`n` spans), retrying up to `retries` times the failures
    /// the OTLP specification calls retryable, after the backoff or the
    /// server's retry delay, and counts the outcome. Holds `permit` until done.
    async fn send(self, req: Bytes, n: u64, permit: OwnedSemaphorePermit) {
        let _permit = permit;
        let mut attempt = 0;
        let mut req = Some(req);
        loop {
            let (exporter, epoch) = self.conns.get();
            // Bytes: a retry shares the buffer (a reference count, no copy).
            let attempt_req = if attempt >= self.retries {
                req.take().unwrap_or_default()
            } else {
                req.clone().unwrap_or_default()
            };
            match Transport::export(&*exporter, attempt_req, self.timeout).await {
                Ok(Accepted { rejected, message }) => {
                    self.conns.succeeded();
                    if self.counters.accepted(n, rejected, &message) {
                        if rejected > 0 {
                            tracing::warn!(reason = %Reason::PartialRejected, "the endpoint rejected {rejected} of {n} spans: {message} (further partial successes are summed up in the progress lines)");
                        } else {
                            tracing::warn!(
                                "the endpoint accepted every span with a warning: {message}"
                            );
                        }
                    }
                    return;
                }
                Err(f) => {
                    let retry_at = self.failed_attempt(epoch, &f);
                    let too_long = f.retry_after.filter(|&d| d > MAX_RETRY_AFTER);
                    if let Some(d) = too_long
                        && attempt < self.retries
                    {
                        tracing::debug!(
                            "not retrying: the server asked to wait {d:?}, more than {MAX_RETRY_AFTER:?}"
                        );
                    }
                    if attempt >= self.retries
                        || !f.is_retryable()
                        || too_long.is_some()
                        || self.stopping.is_cancelled()
                    {
                        self.counters.spans_failed(f.reason, n);
                        return;
                    }
                    attempt += 1;
                    tokio::select! {
                        _ = tokio::time::sleep_until(retry_at) => {}
                        _ = self.stopping.cancelled() => {
                            self.counters.spans_failed(f.reason, n);
                            return;
                        }
                    }
                }
            }
        }
    }

    fn failed_attempt(&self, epoch: u64, f: &Failure) -> Instant {
        if self.counters.attempt_failed(f) {
            tracing::warn!(reason = %f.reason, "export failed: {} (further failures of this kind are summed up in the progress lines)", f.message);
        }
        self.conns.failed(epoch, f)
    }
}

/// Draining: waits for the request tasks. After an interrupting stop, no more
/// retries and at most `grace`; after a done run, pending retries may finish
/// unless `shutdown` fires meanwhile. Spans still in flight when the grace runs
/// out are counted as failed ([`Reason::Aborted`]).
async fn drain<S: Future<Output = ()>>(
    mut tasks: JoinSet<()>,
    stop: Stop,
    shutdown: Pin<&mut S>,
    grace: Duration,
    stopping: &CancellationToken,
    counters: &Counters,
) {
    let drained = {
        let drain = async { while tasks.join_next().await.is_some() {} };
        tokio::pin!(drain);
        match stop {
            Stop::Interrupted => {
                stopping.cancel();
                tokio::time::timeout(grace, &mut drain).await
            }
            Stop::Done => {
                tokio::select! {
                    _ = &mut drain => Ok(()),
                    _ = shutdown => {
                        stopping.cancel();
                        tokio::time::timeout(grace, &mut drain).await
                    }
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
                "{left} spans still in flight after {grace:?} at stop: counted as failed ({})",
                Reason::Aborted
            );
            counters.spans_failed(Reason::Aborted, left);
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn connections() -> Connections {
        let mut cfg = GenConfig::new("n");
        cfg.min_backoff = Duration::from_millis(100);
        cfg.max_backoff = Duration::from_secs(2);
        Connections::new(&cfg, Default::default())
    }

    /// Exponential backoff with jitter: each wait is drawn from the upper
    /// half of a backoff doubling from 100 ms to 2 s.
    #[tokio::test]
    async fn backoff_doubles_with_jitter() {
        let c = connections();
        let f = Failure::new(Reason::Http(503), "");
        let mut waits = Vec::new();
        for i in 0..40u32 {
            let now = Instant::now();
            let wait = c.failed(0, &f) - now;
            let backoff =
                Duration::from_millis(100 * 2u64.pow(i.min(10))).min(Duration::from_secs(2));
            assert!(
                wait >= backoff / 2 && wait <= backoff + Duration::from_millis(5),
                "{i}: {wait:?}"
            );
            waits.push(wait);
        }
        waits.sort();
        waits.dedup();
        assert!(waits.len() > 20, "jittered, not fixed: {waits:?}");
        c.succeeded();
        assert_eq!(c.retry_at(), None);
    }

    /// The server's delay wins over a shorter backoff, bounded by MAX_RETRY_AFTER.
    #[tokio::test]
    async fn server_delay_honoured_with_a_bound() {
        let c = connections();
        let mut f = Failure::new(Reason::Grpc(tonic::Code::ResourceExhausted), "");
        f.retry_after = Some(Duration::from_secs(5));
        let now = Instant::now();
        let wait = c.failed(0, &f) - now;
        assert!(
            wait >= Duration::from_secs(5) && wait < Duration::from_secs(6),
            "{wait:?}"
        );
        f.retry_after = Some(Duration::from_secs(3600));
        let now = Instant::now();
        let wait = c.failed(0, &f) - now;
        assert!(
            wait <= MAX_RETRY_AFTER + Duration::from_millis(50),
            "{wait:?}"
        );
        assert!(c.retry_at().unwrap() <= Instant::now() + MAX_RETRY_AFTER);
    }
}
