//! Connections, for every listener of the sink (OTLP/gRPC, OTLP/HTTP, API):
//! accepted under a cap, `TCP_NODELAY` set, closed when idle, and served by
//! hyper with bounded HTTP/1 heads and HTTP/2 streams.
//!
//! Why an accept loop of our own rather than `axum::serve` / tonic's
//! `serve`: neither caps connections, and `axum::serve` gives hyper no timer,
//! so hyper's header-read timeout never fires. Everything a connection can
//! make the sink hold is bounded here or by the receivers:
//! - connections: `--max-connections` per listener; one over the cap is
//!   accepted and closed at once (so the kernel backlog cannot fill either),
//!   and counted in `trace_sink_connections_refused_total{listener}`;
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

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;

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

/// One accepted TCP connection holding its slot of the listener's cap, closed
/// (an I/O error for hyper) after `idle` with no byte read or written.
pub struct Conn {
    io: TcpStream,
    local: Option<SocketAddr>,
    peer: Option<SocketAddr>,
    idle: Duration,
    timer: Pin<Box<Sleep>>,
    _slot: OwnedSemaphorePermit,
}

impl Conn {
    /// The peer's address.
    pub fn peer(&self) -> Option<SocketAddr> {
        self.peer
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

    /// What every poll does with the socket's answer: bytes moved restart the
    /// idle timer; a socket that is not ready fails once the idle time is over.
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
            Poll::Pending => match self.check_idle(cx) {
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
        this.track(cx, polled, |n| *n > 0)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.track(cx, polled, |n| *n > 0)
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

impl tonic::transport::server::Connected for Conn {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;
    fn connect_info(&self) -> Self::ConnectInfo {
        tonic::transport::server::TcpConnectInfo {
            local_addr: self.local,
            remote_addr: self.peer,
        }
    }
}

/// A listener with its connection cap.
pub struct Acceptor {
    listener: TcpListener,
    slots: Arc<Semaphore>,
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
        Acceptor {
            listener,
            slots: Arc::new(Semaphore::new(limits.max_connections.max(1))),
            idle: limits.idle_timeout,
            metrics,
            name,
        }
    }

    /// The next connection within the cap. Connections over the cap are
    /// closed at once; accept errors (such as running out of file
    /// descriptors) are logged and retried after a pause, never fatal.
    pub async fn accept(&self) -> Conn {
        loop {
            let (io, peer) = match self.listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!("{} listener: accept failed: {e}", self.name);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Ok(slot) = self.slots.clone().try_acquire_owned() else {
                self.metrics.count_refused_connection(self.name);
                tracing::debug!(
                    "{} listener: closing {peer}: --max-connections reached",
                    self.name
                );
                drop(io);
                continue;
            };
            // Small requests and answers must not wait for Nagle's algorithm.
            let _ = io.set_nodelay(true);
            return Conn {
                local: io.local_addr().ok(),
                peer: Some(peer),
                timer: Box::pin(tokio::time::sleep(self.idle)),
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
        let svc = tower::ServiceExt::map_request(
            app.clone(),
            move |mut req: http::Request<hyper::body::Incoming>| {
                req.extensions_mut()
                    .insert(axum::extract::ConnectInfo(peer));
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
