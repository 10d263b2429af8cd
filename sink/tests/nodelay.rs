//! TCP_NODELAY on every connection the sink accepts (OTLP/gRPC, OTLP/HTTP, API).
//!
//! Without it, an answer written in more than one segment (gRPC: headers,
//! data, trailers) waits for the client's delayed ACK, about 40 ms on Linux:
//! an agent exporting to the sink over one connection stalls on every request.
//! The check is deterministic: the sink runs in this process, so the test finds
//! the socket it accepted among this process's file descriptors and reads the
//! option from the kernel.

use std::net::{SocketAddr, TcpStream};
use std::os::fd::BorrowedFd;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use trace_sink::{SinkBuilder, SinkConfig};

/// TCP_NODELAY of this process's socket `local` <-> `peer`: `Some(true)` as
/// soon as it has it, else what it had when 20 s ran out (`None`: never found).
/// Polled, because the accept loop sets the option right after `accept`, and a
/// socket caught between the two would read false for a moment.
fn nodelay_of(local: SocketAddr, peer: SocketAddr) -> Option<bool> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = None;
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
            if addr(sock.local_addr()) == Some(local) && addr(sock.peer_addr()) == Some(peer) {
                seen = sock.tcp_nodelay().ok();
                if seen == Some(true) {
                    return seen;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_accepted_connection_has_tcp_nodelay() {
    let l = || TcpListener::bind("127.0.0.1:0");
    let sink = SinkBuilder::new(SinkConfig::default())
        .grpc(l().await.unwrap())
        .http(l().await.unwrap())
        .api(l().await.unwrap())
        .start()
        .unwrap();
    for (what, server) in [
        ("OTLP/gRPC", sink.grpc_addr().unwrap()),
        ("OTLP/HTTP", sink.http_addr().unwrap()),
        ("API", sink.api_addr().unwrap()),
    ] {
        let client = tokio::task::spawn_blocking(move || {
            let c = TcpStream::connect(server).unwrap();
            // The test's own end keeps the default, so finding it by mistake would fail.
            assert!(!c.nodelay().unwrap());
            let local = c.local_addr().unwrap();
            (nodelay_of(server, local), c)
        });
        let (accepted, _client) = client.await.unwrap();
        assert_eq!(
            accepted,
            Some(true),
            "{what}: the connection the sink accepted has no TCP_NODELAY (None: not found)"
        );
    }
    sink.shutdown().await;
}
