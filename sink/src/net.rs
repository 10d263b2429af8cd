//! Connections, for every listener of the sink (OTLP/gRPC, OTLP/HTTP, API):
//! admitted fairly across peers, `TCP_NODELAY` set, closed when idle, and
//! served by hyper with bounded HTTP/1 heads and HTTP/2 streams.
//!
//! Why an accept loop of our own rather than `axum::serve` / tonic's
//! `serve`: neither caps connections, and `axum::serve` gives hyper no timer,
//! so hyper's header-read timeout never fires. Everything a connection can
//! make the sink hold is bounded here or by the receivers:
//! - connections: `--max-connections` per listener, lowered at start if the
//!   process's file limit (`RLIMIT_NOFILE`) cannot hold that many on every
//!   listener ([`fit_to_descriptors`]);
//! - idle connections: no byte read or written for `--idle-timeout` closes it
//!   ([`Conn`]), whatever the protocol (an HTTP/2 client holding an open,
//!   silent connection included); no server pings, so the sink's own
//!   keep-alive traffic cannot keep a dead connection alive;
//! - HTTP/1: the head must arrive within `--header-read-timeout` (which is
//!   also the keep-alive idle time), and hyper's read buffer is [`H1_MAX_BUF`];
//! - HTTP/2: `--max-streams` concurrent streams, a header list of at most
//!   [`H2_MAX_HEADER_LIST`], small flow-control windows ([`H2_STREAM_WINDOW`],
//!   [`H2_CONN_WINDOW`]) and send buffers ([`H2_MAX_SEND_BUF`]), and hyper's limits on streams a client resets
//!   ([`H2_MAX_PENDING_RESETS`], [`H2_MAX_LOCAL_ERROR_RESETS`]) set explicitly.
//!
//! # Fairness: who gets a slot
//! A cap alone lets the first comer keep everyone else out: one pod leaking
//! connections, a port scanner or a flood of idle sockets fills the listener
//! and every agent's export fails until the idle timeout. So a new connection
//! is admitted in two steps ([`Acceptor::accept`]), after the usual models
//! (nginx `limit_conn` per key, Envoy's overload manager closing connections
//! to make room):
//! 1. **Per-peer share** (`--max-connections-per-peer`): one peer address may
//!    hold at most this many connections of a listener; one more from it is
//!    closed at once (refused), as nginx `limit_conn` does. One address then
//!    cannot fill a listener on its own. Behind a service mesh sidecar every
//!    client arrives from the same address (Istio's inbound passthrough uses
//!    127.0.0.6), so the share does not apply to the addresses in
//!    `--per-peer-exempt` (default `127.0.0.6`), and `0` turns it off.
//! 2. **Room for newcomers**: when the listener is full, the newcomer is not
//!    refused: the connection that has waited longest without a request is
//!    closed (evicted) to make room. Candidates are the connections without
//!    a request for at least [`EVICT_MIN_IDLE`] (since they opened, or since
//!    their last answer), in this order: those that never started a request
//!    (an idle or slowloris socket: its head never completed), oldest first;
//!    then answered keep-alive connections, longest idle first. A connection
//!    with a request in flight is never evicted, nor one that just opened
//!    (its request may be on the way), nor a client between two quick
//!    requests (so a burst of new connections cannot churn busy agents
//!    out). Only when there is no candidate is the newcomer refused.
//!
//! Refused and evicted connections are counted per listener
//! (`trace_sink_connections_refused_total{listener}`,
//! `trace_sink_connections_evicted_total{listener}`). The API listener has
//! the same rules and its own slots, so `/stats` and `/check` stay reachable
//! whatever floods the OTLP ports, and a flood of the API port itself gives
//! way to a newcomer the same way. Running out of file descriptors anyway
//! (something else took them) evicts a candidate too, so the accept loop
//! never stalls on `EMFILE` while idle sockets hold the descriptors.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use crate::config::TransportLimits;
use crate::metrics::Metrics;

/// hyper's HTTP/1 read buffer (headers and body chunks), per connection.
pub const H1_MAX_BUF: usize = 64 * 1024;
/// HTTP/2 `SETTINGS_MAX_HEADER_LIST_SIZE`.
pub const H2_MAX_HEADER_LIST: u32 = 8 * 1024;
/// HTTP/2 initial stream window: body bytes a client may send ahead on one stream.
pub const H2_STREAM_WINDOW: u32 = 128 * 1024;
/// HTTP/2 initial connection window: body bytes ahead on all streams of a connection.
pub const H2_CONN_WINDOW: u32 = 512 * 1024;
/// HTTP/2 answer bytes hyper buffers per stream (its default is 400 KiB).
pub const H2_MAX_SEND_BUF: usize = 64 * 1024;
/// HTTP/2 streams reset by the client before they were served, per connection.
pub const H2_MAX_PENDING_RESETS: usize = 20;
/// HTTP/2 streams the sink may reset for a client's protocol errors before it
/// closes the connection.
pub const H2_MAX_LOCAL_ERROR_RESETS: usize = 256;

/// A connection is evicted for a newcomer only after this long without a
/// request (since it opened, or since its last answer): a client that just
/// connected has time to send its first request, and one exporting more
/// often than this keeps its connection whatever else arrives. A burst of
/// new connections is refused rather than evicting each other.
/// Three seconds: far more than a client needs to send its request after
/// connecting, even on a loaded node, and still a small part of
/// `--header-read-timeout` and `--idle-timeout`, which would close a silent
/// socket anyway (only later).
pub const EVICT_MIN_IDLE: Duration = Duration::from_secs(3);

/// File descriptors kept out of the connection budget (standard streams,
/// listeners, the runtime's epoll and timers, the Kubernetes API client).
pub const RESERVED_FDS: usize = 64;

/// What a connection is doing, shared between the connection, the services
/// serving its requests ([`TrackRequests`]) and its listener's admission table.
#[derive(Debug)]
pub struct Activity {
    /// Requests being served; [`EVICTING`] once chosen for eviction.
    in_flight: AtomicU32,
    /// Set once a request started: the connection is a client, not a silent socket.
    proven: AtomicBool,
    /// Opened (or last answered / written to) at this many ms after the listener's start.
    idle_since_ms: AtomicU64,
    epoch: std::time::Instant,
    evict: CancellationToken,
}

/// `in_flight` of a connection chosen for eviction (no request may start then).
const EVICTING: u32 = 1 << 31;

impl Activity {
    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn touch(&self) {
        self.idle_since_ms.store(self.now_ms(), Ordering::Relaxed);
    }

    /// A request started; the guard marks its end.
    pub fn begin(self: &Arc<Self>) -> RequestGuard {
        self.proven.store(true, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        RequestGuard(self.clone())
    }
}

/// A request in flight on a connection (see [`Activity::begin`]).
#[derive(Debug)]
pub struct RequestGuard(Arc<Activity>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The connection's peer and activity, in every request's extensions (tonic
/// puts it there as the connection's `ConnectInfo`; [`serve_http`] too).
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// Local and peer address.
    pub tcp: tonic::transport::server::TcpConnectInfo,
    /// The connection's activity.
    pub activity: Arc<Activity>,
}

impl ConnInfo {
    /// The peer's address.
    pub fn remote_addr(&self) -> Option<SocketAddr> {
        self.tcp.remote_addr()
    }
}

/// A tower layer marking each request as in flight on its connection
/// (a connection with a request in flight is never evicted).
#[derive(Debug, Clone, Copy, Default)]
pub struct TrackRequestsLayer;

impl<S> tower::Layer<S> for TrackRequestsLayer {
    type Service = TrackRequests<S>;
    fn layer(&self, inner: S) -> Self::Service {
        TrackRequests { inner }
    }
}

/// See [`TrackRequestsLayer`].
#[derive(Debug, Clone)]
pub struct TrackRequests<S> {
    inner: S,
}

impl<S, B> tower::Service<http::Request<B>> for TrackRequests<S>
where
    S: tower::Service<http::Request<B>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn std::future::Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let guard = req
            .extensions()
            .get::<ConnInfo>()
            .map(|c| c.activity.begin());
        let fut = self.inner.call(req);
        Box::pin(async move {
            let r = fut.await;
            drop(guard);
            r
        })
    }
}

/// One accepted TCP connection holding its slot of the listener's cap, closed
/// (an I/O error for hyper) after `idle` with no byte read or written, or at
/// once when evicted for a newcomer.
pub struct Conn {
    io: TcpStream,
    local: Option<SocketAddr>,
    peer: Option<SocketAddr>,
    idle: Duration,
    timer: Pin<Box<Sleep>>,
    evicted: Pin<Box<WaitForCancellationFutureOwned>>,
    activity: Arc<Activity>,
    _slot: Slot,
}

impl Conn {
    /// The peer's address.
    pub fn peer(&self) -> Option<SocketAddr> {
        self.peer
    }

    /// The peer, addresses and activity, for request extensions.
    pub fn info(&self) -> ConnInfo {
        ConnInfo {
            tcp: tonic::transport::server::TcpConnectInfo {
                local_addr: self.local,
                remote_addr: self.peer,
            },
            activity: self.activity.clone(),
        }
    }

    fn progressed(&mut self) {
        self.timer.as_mut().reset(Instant::now() + self.idle);
    }

    /// Called when the socket is not ready: an error once the idle time is over.
    fn check_idle(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        match self.timer.as_mut().poll(cx) {
            Poll::Ready(()) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "connection idle for longer than --idle-timeout",
            )),
            Poll::Pending => Ok(()),
        }
    }

    /// An error once the listener evicted this connection for a newcomer.
    fn check_evicted(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        match self.evicted.as_mut().poll(cx) {
            Poll::Ready(()) => Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "connection evicted to admit a new one (listener full)",
            )),
            Poll::Pending => Ok(()),
        }
    }

    /// What every poll does with the socket's answer: bytes moved restart the
    /// idle timer; a socket that is not ready fails once the idle time is
    /// over, or once the connection was evicted.
    fn track<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<T>>,
        moved: impl FnOnce(&T) -> bool,
    ) -> Poll<io::Result<T>> {
        match polled {
            Poll::Ready(Ok(v)) => {
                if moved(&v) {
                    self.progressed();
                }
                Poll::Ready(Ok(v))
            }
            // Checked only when the socket is not ready: the hot path (bytes
            // moving) costs nothing more, and an evicted connection is idle
            // by definition, so its next poll comes here.
            Poll::Pending => match self.check_idle(cx).and_then(|()| self.check_evicted(cx)) {
                Ok(()) => Poll::Pending,
                Err(e) => Poll::Ready(Err(e)),
            },
            other => other,
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.io).poll_read(cx, buf);
        let grew = buf.filled().len() > before;
        this.track(cx, polled, |_| grew)
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_write(cx, buf);
        this.wrote(cx, polled)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.wrote(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

impl Conn {
    /// A write: bytes the sink sends (an answer being written) also make the
    /// connection busy for eviction, not only for the idle timeout.
    fn wrote(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        self.track(cx, polled, |n| *n > 0)
    }
}

impl tonic::transport::server::Connected for Conn {
    type ConnectInfo = ConnInfo;
    fn connect_info(&self) -> Self::ConnectInfo {
        self.info()
    }
}

/// A connection's place in its listener's table; leaving it (the connection
/// closed) frees the slot.
struct Slot {
    table: Arc<Admission>,
    id: u64,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.table.remove(self.id);
    }
}

/// The open connections of one listener, by peer.
#[derive(Debug)]
struct Admission {
    max: usize,
    per_peer: usize,
    exempt: Vec<IpAddr>,
    epoch: std::time::Instant,
    table: Mutex<Table>,
}

#[derive(Debug, Default)]
struct Table {
    conns: HashMap<u64, (IpAddr, Arc<Activity>)>,
    peers: HashMap<IpAddr, usize>,
    next: u64,
}

/// How a newcomer was admitted, or why not.
#[derive(Debug, PartialEq, Eq)]
enum Admit {
    /// A slot was free.
    Free,
    /// The listener was full: this many connections were evicted.
    Evicted,
    /// Its peer holds its share already.
    PeerShare,
    /// The listener is full and no connection may be evicted.
    Full,
}

impl Admission {
    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        // Every update leaves the table consistent: a panic elsewhere cannot
        // have left it half done.
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn remove(&self, id: u64) {
        let mut t = self.lock();
        if let Some((peer, _)) = t.conns.remove(&id) {
            Self::unpeer(&mut t, peer);
        }
    }

    fn unpeer(t: &mut Table, peer: IpAddr) {
        if let Some(n) = t.peers.get_mut(&peer) {
            *n -= 1;
            if *n == 0 {
                t.peers.remove(&peer);
            }
        }
    }

    /// The connection to evict for a newcomer, marked so no request starts on it.
    fn evict_one(&self, t: &mut Table) -> bool {
        let now = self.epoch.elapsed().as_millis() as u64;
        let min_idle = EVICT_MIN_IDLE.as_millis() as u64;
        let mut candidates: Vec<(bool, u64, u64)> = t
            .conns
            .iter()
            .filter_map(|(&id, (_, a))| {
                if a.in_flight.load(Ordering::Acquire) != 0 {
                    return None;
                }
                let proven = a.proven.load(Ordering::Relaxed);
                let since = a.idle_since_ms.load(Ordering::Relaxed);
                if now.saturating_sub(since) < min_idle {
                    return None;
                }
                Some((proven, since, id))
            })
            .collect();
        // Silent sockets first, then the longest idle.
        candidates.sort_unstable();
        for (_, _, id) in candidates {
            let Some((peer, a)) = t.conns.get(&id).cloned() else {
                continue;
            };
            // A request may have started since the scan: then it stays.
            if a.in_flight
                .compare_exchange(0, EVICTING, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
            {
                continue;
            }
            a.evict.cancel();
            t.conns.remove(&id);
            Self::unpeer(t, peer);
            return true;
        }
        false
    }

    /// Admits a connection from `peer`, evicting one if the listener is full.
    fn admit(self: &Arc<Self>, peer: IpAddr) -> Result<(Admit, Slot, Arc<Activity>), Admit> {
        let mut t = self.lock();
        if self.per_peer > 0
            && !self.exempt.contains(&peer)
            && t.peers.get(&peer).copied().unwrap_or(0) >= self.per_peer
        {
            return Err(Admit::PeerShare);
        }
        let how = if t.conns.len() < self.max {
            Admit::Free
        } else if self.evict_one(&mut t) {
            Admit::Evicted
        } else {
            return Err(Admit::Full);
        };
        let activity = Arc::new(Activity {
            in_flight: AtomicU32::new(0),
            proven: AtomicBool::new(false),
            idle_since_ms: AtomicU64::new(self.epoch.elapsed().as_millis() as u64),
            epoch: self.epoch,
            evict: CancellationToken::new(),
        });
        let id = t.next;
        t.next += 1;
        t.conns.insert(id, (peer, activity.clone()));
        *t.peers.entry(peer).or_insert(0) += 1;
        drop(t);
        Ok((
            how,
            Slot {
                table: self.clone(),
                id,
            },
            activity,
        ))
    }
}

/// A listener with its connection cap and per-peer share (see the module doc).
pub struct Acceptor {
    listener: TcpListener,
    admission: Arc<Admission>,
    idle: Duration,
    metrics: Arc<Metrics>,
    name: &'static str,
}

impl Acceptor {
    /// `name` is the `listener` label (`grpc`, `http`, `api`).
    pub fn new(
        listener: TcpListener,
        limits: &TransportLimits,
        metrics: Arc<Metrics>,
        name: &'static str,
    ) -> Self {
        let max = limits.max_connections.max(1);
        Acceptor {
            listener,
            admission: Arc::new(Admission {
                max,
                per_peer: limits.max_connections_per_peer,
                exempt: limits
                    .per_peer_exempt
                    .iter()
                    .map(|ip| ip.to_canonical())
                    .collect(),
                epoch: std::time::Instant::now(),
                table: Mutex::new(Table::default()),
            }),
            idle: limits.idle_timeout,
            metrics,
            name,
        }
    }

    /// The next connection admitted (see the module doc). Connections that
    /// are not are closed at once; accept errors (such as running out of file
    /// descriptors) are logged and retried after a pause, never fatal; when
    /// descriptors ran out, one evictable connection is closed first.
    pub async fn accept(&self) -> Conn {
        loop {
            let (io, peer) = match self.listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!("{} listener: accept failed: {e}", self.name);
                    // EMFILE / ENFILE: free a descriptor held by a silent socket.
                    if matches!(e.raw_os_error(), Some(23 | 24)) {
                        let evicted = self.admission.evict_one(&mut self.admission.lock());
                        if evicted {
                            self.metrics.count_evicted_connection(self.name);
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            self.metrics.count_accepted_connection(self.name);
            let (how, slot, activity) = match self.admission.admit(peer.ip().to_canonical()) {
                Ok(admitted) => admitted,
                Err(why) => {
                    self.metrics.count_refused_connection(self.name);
                    tracing::debug!(
                        "{} listener: closing {peer}: {}",
                        self.name,
                        match why {
                            Admit::PeerShare => "--max-connections-per-peer reached",
                            _ => "--max-connections reached, none idle to evict",
                        }
                    );
                    drop(io);
                    continue;
                }
            };
            if how == Admit::Evicted {
                self.metrics.count_evicted_connection(self.name);
            }
            // Small requests and answers must not wait for Nagle's algorithm.
            let _ = io.set_nodelay(true);
            return Conn {
                local: io.local_addr().ok(),
                peer: Some(peer),
                timer: Box::pin(tokio::time::sleep(self.idle)),
                evicted: Box::pin(activity.evict.clone().cancelled_owned()),
                activity,
                idle: self.idle,
                io,
                _slot: slot,
            };
        }
    }

    /// The accepted connections as a stream, for tonic; ends when `cancel` fires.
    pub fn into_stream(
        self,
        cancel: CancellationToken,
    ) -> tokio_stream::wrappers::ReceiverStream<io::Result<Conn>> {
        let (tx, rx) = mpsc::channel(1);
        tokio::spawn(async move {
            loop {
                let conn = tokio::select! {
                    _ = cancel.cancelled() => return,
                    c = self.accept() => c,
                };
                if tx.send(Ok(conn)).await.is_err() {
                    return;
                }
            }
        });
        tokio_stream::wrappers::ReceiverStream::new(rx)
    }
}

/// The process's soft limit on open files (`RLIMIT_NOFILE`), if known.
pub fn descriptor_limit() -> Option<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct it is given.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    (rc == 0 && lim.rlim_cur != libc::RLIM_INFINITY).then_some(lim.rlim_cur)
}

/// The per-listener cap that `listeners` listeners can hold at once within a
/// file limit of `nofile` (less [`RESERVED_FDS`]), if lower than `max`.
/// Without it a descriptor flood makes `accept` fail (`EMFILE`) before any
/// cap is reached, and every listener stalls, the API's included.
pub fn fit_to_descriptors(max: usize, listeners: usize, nofile: Option<u64>) -> usize {
    let Some(nofile) = nofile else { return max };
    let room = (nofile as usize).saturating_sub(RESERVED_FDS) / listeners.max(1);
    max.min(room.max(1))
}

/// hyper's server settings for `limits` (HTTP/1 and HTTP/2, as the client chooses).
pub fn http_builder(limits: &TransportLimits) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(H1_MAX_BUF);
    b.http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_streams)
        .max_header_list_size(H2_MAX_HEADER_LIST)
        .initial_stream_window_size(H2_STREAM_WINDOW)
        .initial_connection_window_size(H2_CONN_WINDOW)
        .max_send_buf_size(H2_MAX_SEND_BUF)
        .max_pending_accept_reset_streams(H2_MAX_PENDING_RESETS)
        .max_local_error_reset_streams(H2_MAX_LOCAL_ERROR_RESETS);
    b
}

/// Serves an axum router on `acceptor` until `cancel` fires, then lets open
/// requests finish (the caller bounds how long). Handlers see the peer as
/// `ConnectInfo<SocketAddr>`.
pub async fn serve_http(
    acceptor: Acceptor,
    app: axum::Router,
    limits: TransportLimits,
    cancel: CancellationToken,
) {
    let builder = http_builder(&limits);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    // Owning the connection tasks here means aborting this task closes them.
    let mut conns = JoinSet::new();
    loop {
        let conn = tokio::select! {
            _ = cancel.cancelled() => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
            c = acceptor.accept() => c,
        };
        let peer = conn
            .peer()
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
        let info = conn.info();
        let svc = tower::ServiceExt::map_request(
            TrackRequests { inner: app.clone() },
            move |mut req: http::Request<hyper::body::Incoming>| {
                req.extensions_mut()
                    .insert(axum::extract::ConnectInfo(peer));
                req.extensions_mut().insert(info.clone());
                req
            },
        );
        let svc = hyper_util::service::TowerToHyperService::new(svc);
        let served = builder
            .serve_connection(TokioIo::new(conn), svc)
            .into_owned();
        let served = graceful.watch(served);
        conns.spawn(async move {
            if let Err(e) = served.await {
                tracing::debug!("connection from {peer} ended: {e}");
            }
        });
    }
    drop(acceptor);
    graceful.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admission(max: usize, per_peer: usize, exempt: &[&str]) -> Arc<Admission> {
        Arc::new(Admission {
            max,
            per_peer,
            exempt: exempt.iter().map(|a| a.parse().unwrap()).collect(),
            epoch: std::time::Instant::now() - Duration::from_secs(60),
            table: Mutex::new(Table::default()),
        })
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// Sets when a connection was last idle from, `ago` before now.
    fn idle_for(a: &Admission, act: &Activity, ago: Duration) {
        let now = a.epoch.elapsed().as_millis() as u64;
        act.idle_since_ms
            .store(now - ago.as_millis() as u64, Ordering::Relaxed);
    }

    /// One peer address cannot hold more than its share; others still get in,
    /// and an exempt address (a mesh sidecar's) is not held to it.
    #[test]
    fn one_peer_holds_at_most_its_share() {
        let a = admission(10, 2, &["127.0.0.6"]);
        let _held: Vec<_> = (0..2).map(|_| a.admit(ip("10.0.0.1")).unwrap()).collect();
        assert_eq!(a.admit(ip("10.0.0.1")).err(), Some(Admit::PeerShare));
        assert!(a.admit(ip("10.0.0.2")).is_ok());
        let _mesh: Vec<_> = (0..5).map(|_| a.admit(ip("127.0.0.6")).unwrap()).collect();
    }

    /// A full listener evicts a connection that never started a request
    /// (the oldest) before an answered one, never one with a request in
    /// flight nor one opened or answered less than EVICT_MIN_IDLE ago; with
    /// none left to evict the newcomer is refused.
    #[test]
    fn a_full_listener_evicts_the_longest_idle() {
        let a = admission(3, 0, &[]);
        let (_, _s1, busy) = a.admit(ip("10.0.0.1")).unwrap();
        let (_, _s2, answered) = a.admit(ip("10.0.0.2")).unwrap();
        let (_, _s3, silent) = a.admit(ip("10.0.0.3")).unwrap();
        let _in_flight = busy.begin();
        drop(answered.begin());
        idle_for(&a, &answered, EVICT_MIN_IDLE + Duration::from_secs(5));
        idle_for(&a, &silent, EVICT_MIN_IDLE + Duration::from_secs(1));
        // The silent socket goes first, although it has been idle for less.
        let (how, _s4, fresh) = a.admit(ip("10.0.0.4")).unwrap();
        assert_eq!(how, Admit::Evicted);
        assert!(silent.evict.is_cancelled() && !answered.evict.is_cancelled());
        // A socket that just opened is not evicted: the answered one goes.
        assert!(!fresh.evict.is_cancelled());
        let (_, _s5, newer) = a.admit(ip("10.0.0.5")).unwrap();
        assert!(answered.evict.is_cancelled() && !fresh.evict.is_cancelled());
        // Nothing idle long enough is left: the next newcomer is refused,
        // until a silent socket has waited EVICT_MIN_IDLE.
        assert_eq!(a.admit(ip("10.0.0.6")).err(), Some(Admit::Full));
        idle_for(&a, &fresh, EVICT_MIN_IDLE);
        idle_for(&a, &newer, EVICT_MIN_IDLE * 2);
        let (_, _s6, _) = a.admit(ip("10.0.0.6")).unwrap();
        assert!(newer.evict.is_cancelled() && !fresh.evict.is_cancelled());
        assert!(
            !busy.evict.is_cancelled(),
            "a request in flight is never evicted"
        );
    }

    /// A client between two quick requests keeps its connection.
    #[test]
    fn a_recently_answered_connection_is_not_evicted() {
        let a = admission(1, 0, &[]);
        let (_, _s, agent) = a.admit(ip("10.0.0.1")).unwrap();
        drop(agent.begin());
        assert_eq!(a.admit(ip("10.0.0.2")).err(), Some(Admit::Full));
        idle_for(&a, &agent, EVICT_MIN_IDLE + Duration::from_millis(1));
        assert_eq!(a.admit(ip("10.0.0.2")).unwrap().0, Admit::Evicted);
        assert!(agent.evict.is_cancelled());
    }

    /// A closed connection frees its slot and its peer's share.
    #[test]
    fn closing_frees_the_slot() {
        let a = admission(1, 1, &[]);
        let held = a.admit(ip("10.0.0.1")).unwrap();
        assert_eq!(a.admit(ip("10.0.0.1")).err(), Some(Admit::PeerShare));
        drop(held);
        assert_eq!(a.admit(ip("10.0.0.1")).unwrap().0, Admit::Free);
    }

    /// The caps are fitted to the file limit, less the reserve.
    #[test]
    fn caps_fit_the_file_limit() {
        assert_eq!(fit_to_descriptors(128, 3, Some(256)), 64);
        assert_eq!(fit_to_descriptors(128, 3, Some(100_000)), 128);
        assert_eq!(fit_to_descriptors(128, 3, None), 128);
        assert_eq!(fit_to_descriptors(128, 3, Some(10)), 1);
    }
}
