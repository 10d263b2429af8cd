//! Connection floods cannot lock good clients out (issue 22). Each test
//! starts the `trace-sink` binary (so it can get a file limit of its own),
//! floods it with one shape of hostile connections from loopback addresses
//! other than the good clients' (127.0.0.1), or from the same one as behind a
//! mesh sidecar, and then runs beside the flood:
//! - two real trace-gen generators (its library, the code the binary runs:
//!   pacing, exporter, accounting), one OTLP/gRPC and one OTLP/HTTP, 2,000
//!   spans each, no retries: every span must be accepted, and the sink's
//!   counts must match;
//! - a `/stats` reader that must be answered within 1 s, every time.
//!
//! Bounded: at most 3,000 flood sockets per test, a few seconds of sending,
//! every wait with a deadline. `TRACE_SINK_BIN` runs the tests against
//! another build (an older one: the flood shapes still apply, the settings it
//! does not know are ignored; it must write `SINK_LISTEN_FILE`, which says
//! where it listens).

#[path = "common/process.rs"]
mod process;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use process::SinkProcess;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};
use trace_proto::stats::{GeneratorReport, SinkStats};

fn bin() -> String {
    std::env::var("TRACE_SINK_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_trace-sink").into())
}

/// Spans each good generator sends.
const SPANS: u64 = 2_000;
/// Longest time a `/stats` answer may take.
const STATS_WITHIN: Duration = Duration::from_secs(1);

/// The flood sockets of one test (up to 3,000) and the clients' own need more
/// descriptors than a default soft limit of 1,024: raise it to the hard limit.
fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write only the struct given.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        if lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
        }
    }
    assert!(
        lim.rlim_cur >= 4096,
        "these tests need 4,096 open files (ulimit -n), have {}",
        lim.rlim_cur
    );
}

/// Lines "accept failed" the sinks of this test binary logged (EMFILE).
static ACCEPT_FAILED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Starts the binary with settings `env`; `nofile` lowers its file limit. Its
/// stderr goes to the test's, but for "accept failed" lines, which are counted.
fn spawn_sink(env: &[(&str, &str)], nofile: Option<u32>) -> SinkProcess {
    let mut cmd = process::command(&bin(), nofile);
    cmd.envs(env.iter().copied())
        .env("RUST_LOG", "warn,trace_sink=info");
    SinkProcess::spawn(cmd, |line| {
        if line.contains("accept failed") {
            ACCEPT_FAILED.fetch_add(1, Ordering::Relaxed);
        } else {
            eprintln!("sink: {line}");
        }
    })
}

/// What each flood connection does once connected.
#[derive(Clone, Copy)]
enum Shape {
    /// Nothing: holds the socket.
    Idle,
    /// An HTTP/1 request head, one byte every 200 ms (slowloris).
    Slowloris,
}

/// Hostile connections, held until [`Flood::stop`].
struct Flood {
    stop: Arc<AtomicBool>,
    tasks: tokio::task::JoinSet<()>,
    /// Connections established, per target.
    connected: Vec<(SocketAddr, usize)>,
    /// When the last connection attempt ended.
    connected_at: Instant,
}

impl Flood {
    /// `n` connections to each of `targets`, from the loopback addresses
    /// `sources` in turn; returns once every connection attempt is done.
    async fn start(targets: &[SocketAddr], n: usize, sources: &[Ipv4Addr], shape: Shape) -> Flood {
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = tokio::task::JoinSet::new();
        let (connected_tx, mut connected_rx) =
            tokio::sync::mpsc::channel::<(SocketAddr, bool)>(n * targets.len());
        let mut k = 0;
        for &target in targets {
            for _ in 0..n {
                let source = sources[k % sources.len()];
                k += 1;
                let (stop, connected) = (stop.clone(), connected_tx.clone());
                tasks.spawn(async move {
                    let s = connect_from(source, target).await;
                    let _ = connected.send((target, s.is_ok())).await;
                    let Ok(mut s) = s else { return };
                    match shape {
                        Shape::Idle => {
                            while !stop.load(Ordering::Relaxed) {
                                tokio::time::sleep(Duration::from_millis(100)).await;
                            }
                        }
                        Shape::Slowloris => {
                            let head = b"POST /v1/traces HTTP/1.1\r\nHost: sink\r\nContent-Type: application/x-protobuf\r\nX-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n";
                            for b in head.iter().cycle() {
                                if stop.load(Ordering::Relaxed)
                                    || s.write_all(std::slice::from_ref(b)).await.is_err()
                                {
                                    break;
                                }
                                tokio::time::sleep(Duration::from_millis(200)).await;
                            }
                        }
                    }
                    drop(s);
                });
            }
        }
        drop(connected_tx);
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut done = 0;
        let mut connected: Vec<(SocketAddr, usize)> = targets.iter().map(|&t| (t, 0)).collect();
        while done < n * targets.len() {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, connected_rx.recv()).await {
                Ok(Some((target, ok))) => {
                    done += 1;
                    if ok {
                        connected.iter_mut().find(|(t, _)| *t == target).unwrap().1 += 1;
                    }
                }
                _ => panic!("only {done} flood connections were attempted within 60 s"),
            }
        }
        Flood {
            stop,
            tasks,
            connected,
            connected_at: Instant::now(),
        }
    }

    /// Waits (at most 30 s) until the sink has taken the flood connections
    /// from its listeners' queues: `trace_sink_connections_accepted_total`
    /// has grown past a tenth of them and then stood still for half a second
    /// (a client may count as connected while the kernel dropped its
    /// handshake from a full queue, so "all of them" may never come). The
    /// flood is then in place, held or closed by the sink, and what follows
    /// measures the sink under it, not the queue of its arrival. A sink whose
    /// API cannot be reached is measured after the 30 s; one that does not
    /// count accepted connections (an older one) at once (slowloris heads
    /// expire after `--header-read-timeout`, 10 s: waiting would measure nothing).
    async fn wait_taken_in(&self, sink: &SinkProcess) {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .unwrap();
        let expected: usize = self.connected.iter().map(|&(_, n)| n).sum();
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut last = None;
        while Instant::now() < deadline {
            let text = async {
                client
                    .get(format!("http://{}/metrics", sink.api))
                    .send()
                    .await?
                    .text()
                    .await
            }
            .await;
            if let Ok(text) = text {
                if !text.contains("trace_sink_connections_accepted") {
                    eprintln!("this sink does not count accepted connections; measuring at once");
                    return;
                }
                let accepted = metric(&text, "trace_sink_connections_accepted_total{");
                if accepted as usize * 10 >= expected && last == Some(accepted) {
                    return;
                }
                last = Some(accepted);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        eprintln!("the sink did not report the flood taken in within 30 s; measuring anyway");
    }

    /// Waits until the flood's connections are older than the sink's
    /// eviction grace (`EVICT_MIN_IDLE`, 3 s): a connection younger than that
    /// may be a client about to send its request and is never evicted, so
    /// until then the flood is a burst the sink refuses newcomers through.
    /// The promise under test is about a flood in place.
    async fn wait_past_grace(&self) {
        let past = self.connected_at + trace_sink::net::EVICT_MIN_IDLE + Duration::from_millis(100);
        tokio::time::sleep_until(past.into()).await;
    }

    async fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        while self.tasks.join_next().await.is_some() {}
    }
}

async fn connect_from(source: Ipv4Addr, target: SocketAddr) -> std::io::Result<TcpStream> {
    let s = TcpSocket::new_v4()?;
    s.bind(SocketAddr::new(IpAddr::V4(source), 0))?;
    tokio::time::timeout(Duration::from_secs(5), s.connect(target))
        .await
        .map_err(|_| std::io::Error::other("connect timed out"))?
}

/// `count` loopback addresses other than 127.0.0.1.
fn sources(count: u8) -> Vec<Ipv4Addr> {
    (0..count)
        .map(|i| Ipv4Addr::new(127, 0, 1, 1 + i))
        .collect()
}

/// One good generator: trace-gen's library, `SPANS` spans, no retries.
async fn good_generator(protocol: &str, endpoint: String) -> GeneratorReport {
    let mut config = trace_gen::GenConfig::new(format!("good-{protocol}"));
    config.exporter.protocol = protocol.parse().unwrap();
    config.exporter.endpoint = trace_gen::config::Endpoint::parse(&endpoint).unwrap();
    config.count = Some(SPANS);
    // About 2 s at this rate; a sink that does not answer ends it here.
    config.duration = Some(Duration::from_secs(20));
    config.rate = 1_000.0;
    config.batch = 10;
    config.retries = 0;
    config.report_interval = Duration::ZERO;
    trace_gen::Generator::new(config)
        .unwrap()
        .run(std::future::pending())
        .await
}

/// Reads `/stats` every 100 ms until `stop`; returns the slowest answer and
/// the failures (no answer within [`STATS_WITHIN`], or not 200).
async fn stats_reader(api: SocketAddr, stop: Arc<AtomicBool>) -> (Duration, Vec<String>, usize) {
    let client = reqwest::Client::builder()
        .timeout(STATS_WITHIN)
        .build()
        .unwrap();
    let (mut slowest, mut failures, mut reads) = (Duration::ZERO, Vec::new(), 0);
    while !stop.load(Ordering::Relaxed) {
        let t0 = Instant::now();
        let r = client.get(format!("http://{api}/stats")).send().await;
        let body = match r {
            Ok(r) if r.status() == 200 => r.bytes().await.map_err(|e| e.to_string()),
            Ok(r) => Err(format!("HTTP {}", r.status())),
            Err(e) => Err(e.to_string()),
        };
        let took = t0.elapsed();
        reads += 1;
        slowest = slowest.max(took);
        match body {
            Ok(_) if took <= STATS_WITHIN => {}
            Ok(_) => failures.push(format!("answered after {took:?}")),
            Err(e) => failures.push(format!("after {took:?}: {e}")),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (slowest, failures, reads)
}

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// Runs the good clients beside a flood already in place and checks the
/// promise: nothing lost, `/stats` always within 1 s.
async fn good_clients_are_served(sink: &SinkProcess, what: &str) {
    let stop = Arc::new(AtomicBool::new(false));
    let reader = tokio::spawn(stats_reader(sink.api, stop.clone()));
    let grpc = tokio::spawn(good_generator("grpc", format!("http://{}", sink.grpc)));
    let http = tokio::spawn(good_generator(
        "http/protobuf",
        format!("http://{}/v1/traces", sink.http),
    ));
    let bounded = |h: tokio::task::JoinHandle<GeneratorReport>| async move {
        tokio::time::timeout(Duration::from_secs(60), h)
            .await
            .expect("a generator did not finish within 60 s")
            .unwrap()
    };
    let (grpc, http) = (bounded(grpc).await, bounded(http).await);
    stop.store(true, Ordering::Relaxed);
    let (slowest, failures, reads) = reader.await.unwrap();
    // Bounded reads: a sink whose API is stuck must fail the test, not hang it.
    let api = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let metrics = match api.get(format!("http://{}/metrics", sink.api)).send().await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(e) => format!("(no /metrics: {e})"),
    };
    eprintln!(
        "{what}: gRPC accepted {}/{SPANS} failed {:?}; HTTP accepted {}/{SPANS} failed {:?}; \
         /stats {reads} reads, slowest {slowest:?}, {} over 1 s or failed; \
         connections refused {}, evicted {}; accept failures logged so far {}",
        grpc.spans_accepted,
        grpc.spans_failed_by_reason,
        http.spans_accepted,
        http.spans_failed_by_reason,
        failures.len(),
        metric(&metrics, "trace_sink_connections_refused_total{"),
        metric(&metrics, "trace_sink_connections_evicted_total{"),
        ACCEPT_FAILED.load(Ordering::Relaxed),
    );
    for g in [&grpc, &http] {
        assert_eq!(
            (g.spans_accepted, g.spans_failed),
            (SPANS, 0),
            "{what}: the good {} generator lost spans: {:?}, last error {:?}",
            g.protocol,
            g.spans_failed_by_reason,
            g.last_error
        );
    }
    assert!(
        failures.is_empty(),
        "{what}: {} of {reads} /stats reads were not answered within 1 s: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    let s: SinkStats = api
        .get(format!("http://{}/stats", sink.api))
        .send()
        .await
        .expect("GET /stats after the run")
        .json()
        .await
        .unwrap();
    assert_eq!(s.spans_total, 2 * SPANS, "{what}: the sink's count");
    for g in [&grpc, &http] {
        let counted = s
            .generators
            .iter()
            .find(|x| x.id == g.generator_id)
            .unwrap_or_else(|| panic!("{what}: generator {} not in /stats", g.generator_id));
        assert_eq!(
            (counted.spans, counted.missing, counted.duplicates),
            (SPANS, 0, 0),
            "{what}: {counted:?}"
        );
    }
}

/// 1,100 idle connections to the OTLP/HTTP port from 50 addresses (22 each,
/// within the per-peer share, so the listener fills and newcomers must
/// evict). On the old main the HTTP generator failed every span.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_flood_on_the_http_port() {
    raise_fd_limit();
    let sink = spawn_sink(&[], None);
    let flood = Flood::start(&[sink.http], 1_100, &sources(50), Shape::Idle).await;
    flood.wait_taken_in(&sink).await;
    flood.wait_past_grace().await;
    good_clients_are_served(&sink, "1,100 idle on HTTP").await;
    flood.stop().await;
}

/// 1,000 slowloris connections (an HTTP/1 head one byte at a time) to the
/// OTLP/HTTP port, from 40 addresses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_on_the_http_port() {
    raise_fd_limit();
    let sink = spawn_sink(&[], None);
    let flood = Flood::start(&[sink.http], 1_000, &sources(40), Shape::Slowloris).await;
    flood.wait_taken_in(&sink).await;
    flood.wait_past_grace().await;
    good_clients_are_served(&sink, "1,000 slowloris on HTTP").await;
    flood.stop().await;
}

/// 1,000 idle connections to each of the three ports at once, from one
/// address (the per-peer share holds it to 64 per port).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_flood_on_all_three_ports_from_one_address() {
    raise_fd_limit();
    let sink = spawn_sink(&[], None);
    let targets = [sink.grpc, sink.http, sink.api];
    let flood = Flood::start(&targets, 1_000, &sources(1), Shape::Idle).await;
    flood.wait_taken_in(&sink).await;
    flood.wait_past_grace().await;
    good_clients_are_served(&sink, "3 x 1,000 idle, one address").await;
    flood.stop().await;
}

/// The same behind a mesh sidecar: every client, the flood's and the good
/// ones', arrives from one address, exempt from the per-peer share
/// (`--per-peer-exempt`); evicting the longest-idle connection makes room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_flood_on_all_three_ports_from_the_clients_own_address() {
    raise_fd_limit();
    let sink = spawn_sink(&[("SINK_PER_PEER_EXEMPT", "127.0.0.1")], None);
    let targets = [sink.grpc, sink.http, sink.api];
    let flood = Flood::start(&targets, 1_000, &[Ipv4Addr::LOCALHOST], Shape::Idle).await;
    flood.wait_taken_in(&sink).await;
    flood.wait_past_grace().await;
    good_clients_are_served(&sink, "3 x 1,000 idle, the clients' own address").await;
    flood.stop().await;
}

/// A descriptor flood: the sink may open 256 files, fewer than its three
/// listeners' caps together (3 x 128), and 1,000 idle connections from 100
/// addresses go to each port. On the old main `accept` failed with EMFILE on
/// every listener, the API's included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn descriptor_flood() {
    raise_fd_limit();
    let sink = spawn_sink(&[], Some(256));
    let targets = [sink.grpc, sink.http, sink.api];
    let flood = Flood::start(&targets, 1_000, &sources(100), Shape::Idle).await;
    flood.wait_taken_in(&sink).await;
    flood.wait_past_grace().await;
    good_clients_are_served(&sink, "descriptor flood, RLIMIT_NOFILE 256").await;
    flood.stop().await;
}
