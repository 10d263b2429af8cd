//! TCP_NODELAY on every connection trace-gen opens (gRPC and HTTP exporters)
//! or accepts (its stats server). Without it a request or answer written in
//! more than one segment waits for the peer's delayed ACK (about 40 ms on
//! Linux), which caps the rate a single worker can send. Deterministic: the
//! generator runs in this process, so the test finds its sockets among this
//! process's file descriptors and reads the option from the kernel.

mod common;

use std::net::{SocketAddr, TcpStream};
use std::os::fd::BorrowedFd;
use std::time::{Duration, Instant};

use common::{config, grpc_url, http_url, start_sink};
use tokio::net::TcpListener;
use trace_gen::Generator;
use trace_gen::config::Protocol;

/// TCP_NODELAY of this process's socket connected to `peer` (and bound to
/// `local`, if given), once it exists.
fn nodelay_of(local: Option<SocketAddr>, peer: SocketAddr) -> Option<bool> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        for entry in std::fs::read_dir("/proc/self/fd").ok()?.flatten() {
            let Ok(fd) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            if !std::fs::read_link(entry.path())
                .is_ok_and(|t| t.to_string_lossy().starts_with("socket:"))
            {
                continue;
            }
            // SAFETY: only borrowed for the calls below; a descriptor closed
            // meanwhile makes them fail (EBADF), nothing worse.
            let fd = unsafe { BorrowedFd::borrow_raw(fd) };
            let sock = socket2::SockRef::from(&fd);
            let addr = |a: std::io::Result<socket2::SockAddr>| a.ok().and_then(|a| a.as_socket());
            if addr(sock.peer_addr()) == Some(peer)
                && local.is_none_or(|l| addr(sock.local_addr()) == Some(l))
            {
                return sock.tcp_nodelay().ok();
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exporter_connections_have_tcp_nodelay() {
    let sink = start_sink().await;
    for (protocol, url, server) in [
        (Protocol::Grpc, grpc_url(&sink), sink.grpc_addr().unwrap()),
        (
            Protocol::HttpProtobuf,
            http_url(&sink),
            sink.http_addr().unwrap(),
        ),
    ] {
        let mut c = config("node-nd", &url, protocol);
        c.rate = 50.0;
        c.batch = 1;
        // No duration: it runs (and keeps its connection) until aborted
        // below, however slow the machine.
        let before = sink.stats().spans_total;
        let run = tokio::spawn(Generator::new(c).unwrap().run(std::future::pending()));
        // Look once a span has arrived: the option is set right after the
        // connect, before the connection is used, but a socket caught between
        // its connect and that call would read false.
        let deadline = Instant::now() + Duration::from_secs(20);
        while sink.stats().spans_total == before && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            sink.stats().spans_total > before,
            "{protocol:?}: nothing arrived"
        );
        let found = tokio::task::spawn_blocking(move || nodelay_of(None, server))
            .await
            .unwrap();
        run.abort();
        assert_eq!(
            found,
            Some(true),
            "{protocol:?}: trace-gen's connection has no TCP_NODELAY (None: not found)"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_server_connections_have_tcp_nodelay() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = l.local_addr().unwrap();
    let counters = Generator::new(config("n", "http://127.0.0.1:1", Protocol::Grpc))
        .unwrap()
        .counters();
    let stop = tokio::sync::oneshot::channel::<()>();
    let serve = tokio::spawn(trace_gen::stats_server::serve(l, counters, async {
        let _ = stop.1.await;
    }));
    let found = tokio::task::spawn_blocking(move || {
        let c = TcpStream::connect(server).unwrap();
        assert!(!c.nodelay().unwrap());
        nodelay_of(Some(server), c.local_addr().unwrap())
    })
    .await
    .unwrap();
    assert_eq!(
        found,
        Some(true),
        "the stats server's accepted connection has no TCP_NODELAY (None: not found)"
    );
    let _ = stop.0.send(());
    serve.await.unwrap().unwrap();
}
