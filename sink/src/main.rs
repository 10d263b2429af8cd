//! The trace-sink binary: flags -> [`trace_sink::SinkConfig`] -> [`trace_sink::SinkBuilder`],
//! or `trace-sink check` -> [`trace_sink::check::run`]. Exit 2 for a usage or setup
//! error (bad flag, bad URL, an address already taken), as in trace-gen.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use tokio::net::TcpListener;
use trace_proto::check::{Conditions, parse_node_list};
use trace_sink::check::{CheckOptions, render, render_verdict};
use trace_sink::config::TransportLimits;
use trace_sink::ingest::attribution::AttributionKeys;
use trace_sink::k8s::{ClientSource, K8sConfig};
use trace_sink::{SinkBuilder, SinkConfig};

/// An OTLP trace sink that attributes every span to its generator node and
/// forwarding agent node, and answers assertions over HTTP.
#[derive(Parser, Debug)]
#[command(name = "trace-sink", version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

// Parsed once at start and moved out at once: the size of a variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
enum Command {
    /// Receive OTLP and serve the API (the default).
    Serve(ServeArgs),
    /// Poll a sink's /stats until the conditions hold or fail; exit 0 pass, 1 fail, 2 error.
    Check(CheckArgs),
}

#[derive(Args, Debug)]
struct ServeArgs {
    /// OTLP/gRPC listen address.
    #[arg(long, env = "SINK_GRPC_LISTEN", default_value = "0.0.0.0:4317")]
    grpc_listen: SocketAddr,
    /// OTLP/HTTP listen address.
    #[arg(long, env = "SINK_HTTP_LISTEN", default_value = "0.0.0.0:4318")]
    http_listen: SocketAddr,
    /// HTTP API listen address (/, /stats, /check, /reset, /metrics, /healthz, /readyz).
    #[arg(long, env = "SINK_API_LISTEN", default_value = "0.0.0.0:8080")]
    api_listen: SocketAddr,
    /// Once listening, write the bound addresses here as JSON,
    /// {"api":"ADDR","grpc":"ADDR","http":"ADDR"} (atomically; removed at a clean exit).
    #[arg(long, env = "SINK_LISTEN_FILE", value_name = "PATH")]
    listen_file: Option<std::path::PathBuf>,
    /// Largest request accepted, in bytes, after decompression too.
    #[arg(long, env = "SINK_MAX_REQUEST_BYTES", default_value_t = trace_sink::config::DEFAULT_MAX_REQUEST_BYTES)]
    max_request_bytes: usize,
    /// Largest number of elements (spans, attributes, ...) in one request, checked before decoding.
    #[arg(long, env = "SINK_MAX_REQUEST_ELEMENTS", default_value_t = trace_sink::config::DEFAULT_MAX_REQUEST_ELEMENTS)]
    max_request_elements: u64,
    /// Export requests decoded at once (gRPC and HTTP together); more wait.
    #[arg(long, env = "SINK_MAX_CONCURRENT_REQUESTS",
          default_value_t = trace_sink::config::DEFAULT_MAX_CONCURRENT_REQUESTS as u64,
          value_parser = clap::value_parser!(u64).range(1..=4096))]
    max_concurrent_requests: u64,
    /// Threads serving connections and decoding requests. 1 (the default): one
    /// thread does everything, which costs the least CPU per span (no thread is
    /// woken per request) and takes up to one core; more for more than that.
    #[arg(long, env = "SINK_WORKER_THREADS", default_value_t = 1,
          value_parser = clap::value_parser!(u64).range(1..=256))]
    worker_threads: u64,
    /// Longest time one export request may take to arrive (a stalled client frees its slot then).
    #[arg(long, env = "SINK_REQUEST_TIMEOUT", default_value = "30s", value_parser = parse_request_timeout)]
    request_timeout: Duration,
    /// Cap on routes, agents and generator ids tracked (each); beyond it spans count in totals and overflow.
    #[arg(long, env = "SINK_MAX_SERIES", default_value_t = trace_sink::config::DEFAULT_MAX_SERIES)]
    max_series: usize,
    /// Attribute naming the generator's node (resource first, then span).
    #[arg(long, env = "SINK_GENERATOR_NODE_KEY", default_value = trace_proto::keys::GENERATOR_NODE)]
    generator_node_key: String,
    /// Attribute naming the forwarding agent's node (resource first, then span).
    #[arg(long, env = "SINK_AGENT_NODE_KEY", default_value = trace_proto::keys::AGENT_NODE)]
    agent_node_key: String,
    /// If set, POST /reset requires `Authorization: Bearer <token>`.
    #[arg(long, env = "SINK_API_TOKEN", hide_env_values = true)]
    api_token: Option<String>,
    #[command(flatten)]
    limits: LimitArgs,
    #[command(flatten)]
    k8s: K8sArgs,
}

/// Kubernetes attribution: the agent node from the connection's peer address.
#[derive(Args, Debug)]
struct K8sArgs {
    /// Also attribute each connection to the node of the Pod at its peer
    /// address (the forwarding agent), watching Pods through the Kubernetes API.
    #[arg(long = "k8s-attribution", env = "SINK_K8S_ATTRIBUTION")]
    enabled: bool,
    /// Kubeconfig file to reach the API with (default: KUBECONFIG or
    /// ~/.kube/config if present, else the Pod's service account).
    #[arg(
        long = "k8s-kubeconfig",
        env = "SINK_K8S_KUBECONFIG",
        value_name = "PATH",
        requires = "enabled"
    )]
    kubeconfig: Option<std::path::PathBuf>,
    /// Watch Pods of this namespace only (default: all namespaces).
    #[arg(
        long = "k8s-namespace",
        env = "SINK_K8S_NAMESPACE",
        value_name = "NS",
        requires = "enabled"
    )]
    namespace: Option<String>,
    /// Watch only Pods matching this label selector (default: all Pods).
    #[arg(
        long = "k8s-pod-selector",
        env = "SINK_K8S_POD_SELECTOR",
        value_name = "SELECTOR",
        requires = "enabled"
    )]
    pod_selector: Option<String>,
    /// Cap on Pods tracked (Pods holding an IP); beyond it no peer resolves.
    #[arg(long = "k8s-max-pods", env = "SINK_K8S_MAX_PODS",
          default_value_t = trace_sink::k8s::DEFAULT_MAX_PODS as u64,
          value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    max_pods: u64,
}

impl K8sArgs {
    /// The watch settings, if attribution is on.
    fn settings(&self) -> Option<K8sConfig> {
        self.enabled.then(|| K8sConfig {
            source: match &self.kubeconfig {
                Some(path) => ClientSource::Kubeconfig(path.clone()),
                None => ClientSource::Infer,
            },
            namespace: self.namespace.clone().filter(|n| !n.is_empty()),
            label_selector: self.pod_selector.clone().filter(|s| !s.is_empty()),
            max_pods: self.max_pods as usize,
        })
    }
}

/// Transport and memory limits (docs/limits.md).
#[derive(Args, Debug)]
struct LimitArgs {
    /// Connections open at once on each listener; a newcomer beyond it evicts the longest-idle one (none idle: it is closed).
    #[arg(long, env = "SINK_MAX_CONNECTIONS", default_value_t = trace_sink::config::DEFAULT_MAX_CONNECTIONS as u64,
          value_parser = clap::value_parser!(u64).range(1..=65536))]
    max_connections: u64,
    /// Connections one peer address may hold on each listener; more from it are closed at once (0: no per-peer share).
    #[arg(long, env = "SINK_MAX_CONNECTIONS_PER_PEER", default_value_t = trace_sink::config::DEFAULT_MAX_CONNECTIONS_PER_PEER as u64,
          value_parser = clap::value_parser!(u64).range(0..=65536))]
    max_connections_per_peer: u64,
    /// Comma-separated peer addresses the per-peer share does not apply to (a mesh sidecar's: Istio's is 127.0.0.6); empty for none.
    #[arg(long, env = "SINK_PER_PEER_EXEMPT", default_value = trace_sink::config::DEFAULT_PER_PEER_EXEMPT,
          value_parser = parse_ip_list)]
    per_peer_exempt: IpList,
    /// HTTP/2 streams open at once on one connection (MAX_CONCURRENT_STREAMS).
    #[arg(long, env = "SINK_MAX_STREAMS", default_value_t = trace_sink::config::DEFAULT_MAX_STREAMS,
          value_parser = clap::value_parser!(u32).range(1..=1024))]
    max_streams: u32,
    /// A connection with no byte read or written for this long is closed (must exceed --request-timeout).
    #[arg(long, env = "SINK_IDLE_TIMEOUT", default_value = "60s", value_parser = parse_timeout)]
    idle_timeout: Duration,
    /// HTTP/1: the request head must arrive within this long (also the keep-alive idle time).
    #[arg(long, env = "SINK_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = parse_timeout)]
    header_read_timeout: Duration,
    /// Bytes of export request bodies held at once, both receivers; more answer 503 / UNAVAILABLE.
    #[arg(long, env = "SINK_MAX_BUFFERED_BYTES", default_value_t = trace_sink::config::DEFAULT_MAX_BUFFERED_BYTES as u64,
          value_parser = clap::value_parser!(u64).range(1..=(1u64 << 40)))]
    max_buffered_bytes: u64,
    /// An API answer not read within this long is dropped and its connection closed.
    #[arg(long, env = "SINK_API_WRITE_TIMEOUT", default_value = "30s", value_parser = parse_timeout)]
    api_write_timeout: Duration,
    /// Sequence gaps tracked across all generators; past it the largest tables are frozen.
    #[arg(long, env = "SINK_MAX_GAPS", default_value_t = trace_sink::config::DEFAULT_MAX_GAPS as u64,
          value_parser = clap::value_parser!(u64).range(1..=(1u64 << 32)))]
    max_gaps: u64,
    /// At exit, write the final /stats JSON here (it is always logged on stderr too).
    #[arg(long, env = "SINK_FINAL_STATS", value_name = "PATH")]
    final_stats: Option<std::path::PathBuf>,
}

#[derive(Args, Debug)]
struct CheckArgs {
    /// Base URL of the sink's API.
    #[arg(long, env = "SINK_URL", default_value = "http://127.0.0.1:8080")]
    url: String,
    /// No remote and no unattributed spans (must hold at every poll).
    #[arg(long)]
    expect_local: bool,
    /// At least this many spans in total (must become true).
    #[arg(long, default_value_t = 1)]
    min_spans: u64,
    /// Comma-separated generator nodes that must each deliver at least one span.
    #[arg(long, value_name = "NODES", default_value = "")]
    from_nodes: String,
    /// Comma-separated generator nodes that must deliver nothing (must hold at every poll).
    #[arg(long, value_name = "NODES", default_value = "")]
    silent_nodes: String,
    /// How long positive conditions may take to become true.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    within: Duration,
    /// How long negative conditions must keep holding after the positive ones are met.
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    hold: Duration,
    /// Time between polls.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    interval: Duration,
    /// Print the final report and stats as JSON on stdout instead of the table.
    #[arg(long)]
    json: bool,
}

/// A comma-separated list of IP addresses (a type of its own: clap reads a
/// `Vec` as a repeated flag).
#[derive(Debug, Clone)]
struct IpList(Vec<std::net::IpAddr>);

fn parse_ip_list(s: &str) -> Result<IpList, String> {
    s.split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(|a| {
            a.parse().map_err(|_| {
                format!("{a:?} is not an IP address (a comma-separated list of addresses)")
            })
        })
        .collect::<Result<_, _>>()
        .map(IpList)
}

fn parse_timeout(s: &str) -> Result<Duration, String> {
    parse_request_timeout(s)
}

fn parse_request_timeout(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| e.to_string())?;
    if d.is_zero() || d > Duration::from_secs(3600) {
        return Err("must be above 0 and at most 1h".into());
    }
    Ok(d)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    trace_proto::cli::init_logging();
    let workers = match &cli.command {
        Some(Command::Serve(a)) => a.worker_threads,
        None => cli.serve.worker_threads,
        Some(Command::Check(_)) => 1,
    };
    // One thread by default (see --worker-threads): at the rates a sink sees,
    // waking a second thread for each request costs more CPU than it saves.
    let built = if workers <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers as usize)
            .enable_all()
            .build()
    };
    let rt = match built {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("trace-sink: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match cli.command {
        Some(Command::Check(args)) => rt.block_on(check(args)),
        Some(Command::Serve(args)) => rt.block_on(serve(args)),
        None => rt.block_on(serve(cli.serve)),
    }
}

/// A listen address that could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen for {what} on {addr}: {source}")]
struct BindError {
    what: &'static str,
    addr: SocketAddr,
    source: std::io::Error,
}

async fn bind(what: &'static str, addr: SocketAddr) -> Result<TcpListener, BindError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| BindError { what, addr, source })
}

async fn serve(args: ServeArgs) -> ExitCode {
    let l = &args.limits;
    if l.idle_timeout <= args.request_timeout {
        eprintln!(
            "trace-sink: --idle-timeout ({}) must exceed --request-timeout ({}): a request waiting for a decode slot sends no bytes",
            humantime::format_duration(l.idle_timeout),
            humantime::format_duration(args.request_timeout)
        );
        return ExitCode::from(2);
    }
    let transport = TransportLimits {
        max_connections: l.max_connections as usize,
        max_connections_per_peer: l.max_connections_per_peer as usize,
        per_peer_exempt: l.per_peer_exempt.0.clone(),
        max_streams: l.max_streams,
        idle_timeout: l.idle_timeout,
        header_read_timeout: l.header_read_timeout,
        max_buffered_bytes: usize::try_from(l.max_buffered_bytes).unwrap_or(usize::MAX),
        api_write_timeout: l.api_write_timeout,
    };
    let final_stats = args.limits.final_stats.clone();
    let listen_file = args.listen_file.clone();
    let config = SinkConfig {
        max_gaps: usize::try_from(args.limits.max_gaps).unwrap_or(usize::MAX),
        transport,
        max_request_bytes: args.max_request_bytes,
        max_request_elements: args.max_request_elements,
        max_concurrent_requests: args.max_concurrent_requests as usize,
        request_timeout: args.request_timeout,
        max_series: args.max_series,
        keys: AttributionKeys {
            generator_node: args.generator_node_key,
            agent_node: args.agent_node_key,
        },
        api_token: args.api_token.filter(|t| !t.is_empty()),
        ..SinkConfig::default()
    };
    let k8s = args.k8s.settings();
    // A missing or unusable configuration is an error at start; an API that
    // cannot be reached is not (it is retried, and /readyz says so).
    let k8s_client = match &k8s {
        Some(settings) => match trace_sink::k8s::client(&settings.source).await {
            Ok(client) => Some(client),
            Err(e) => {
                eprintln!("trace-sink: --k8s-attribution: {e}");
                return ExitCode::from(2);
            }
        },
        None => None,
    };
    let listeners = async {
        Ok::<_, BindError>((
            bind("OTLP/gRPC", args.grpc_listen).await?,
            bind("OTLP/HTTP", args.http_listen).await?,
            bind("the API", args.api_listen).await?,
        ))
    };
    let (grpc, http, api) = match listeners.await {
        Ok(l) => l,
        Err(e) => {
            // A taken or unusable address is a setup error: 2, as in trace-gen.
            eprintln!("trace-sink: {e}");
            return ExitCode::from(2);
        }
    };
    let mut builder = SinkBuilder::new(config).grpc(grpc).http(http).api(api);
    if let (Some(client), Some(settings)) = (k8s_client, k8s) {
        tracing::info!(
            "Kubernetes attribution on: watching Pods (at most {}) to resolve peer addresses",
            settings.max_pods
        );
        builder = builder.kubernetes(client, settings);
    }
    let sink = match builder.start() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("trace-sink: cannot start: {e}");
            return ExitCode::from(2);
        }
    };
    let (grpc, http, api) = (
        sink.grpc_addr().expect("bound"),
        sink.http_addr().expect("bound"),
        sink.api_addr().expect("bound"),
    );
    if let Some(path) = &listen_file {
        let listeners = [("grpc", grpc), ("http", http), ("api", api)];
        if let Err(e) = trace_proto::cli::write_listen_file(path, &listeners) {
            // Whoever asked for the file waits for it: a setup error, as a taken port.
            eprintln!("trace-sink: {e}");
            sink.shutdown().await;
            return ExitCode::from(2);
        }
    }
    tracing::info!("trace-sink listening: OTLP/gRPC on {grpc}, OTLP/HTTP on {http}, API on {api}");
    trace_proto::cli::shutdown_signal().await;
    tracing::info!("shutting down");
    let last = sink.shutdown().await;
    if let Some(path) = &listen_file {
        // Gone once the addresses are: a file left over is from a process that was killed.
        let _ = std::fs::remove_file(path);
    }
    // Spans acknowledged while draining are in no /stats a client could still
    // fetch: the final numbers go to stderr (one JSON line) and to --final-stats.
    let json = serde_json::to_string(&last).unwrap_or_default();
    eprintln!("trace-sink: final stats {json}");
    if let Some(path) = final_stats
        && let Err(e) = std::fs::write(&path, json + "\n")
    {
        eprintln!(
            "trace-sink: cannot write --final-stats {}: {e}",
            path.display()
        );
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

/// Longest duration accepted for --within, --hold and --interval.
const MAX_WAIT: Duration = Duration::from_secs(7 * 24 * 3600);

async fn check(args: CheckArgs) -> ExitCode {
    if let Err(e) = trace_sink::check::validate_url(&args.url) {
        eprintln!("trace-sink check: {e}");
        return ExitCode::from(2);
    }
    for (name, d) in [
        ("--within", args.within),
        ("--hold", args.hold),
        ("--interval", args.interval),
    ] {
        if d > MAX_WAIT {
            eprintln!(
                "trace-sink check: {name} {} is longer than the 7 days allowed",
                humantime::format_duration(d)
            );
            return ExitCode::from(2);
        }
    }
    let opts = CheckOptions {
        url: args.url,
        conditions: Conditions {
            expect_local: args.expect_local,
            min_spans: args.min_spans,
            from_nodes: parse_node_list(&args.from_nodes),
            silent_nodes: parse_node_list(&args.silent_nodes),
        },
        within: args.within,
        hold: args.hold,
        interval: args.interval.max(Duration::from_millis(50)),
    };
    let outcome = trace_sink::check::run(&opts).await;
    if args.json {
        let doc = match &outcome {
            trace_sink::check::CheckOutcome::Pass { report, stats }
            | trace_sink::check::CheckOutcome::Fail { report, stats } => {
                serde_json::json!({ "report": report, "stats": stats })
            }
            trace_sink::check::CheckOutcome::Unreachable(e) => {
                serde_json::json!({ "error": e.to_string() })
            }
        };
        println!("{doc}");
    } else {
        if let trace_sink::check::CheckOutcome::Pass { stats, .. }
        | trace_sink::check::CheckOutcome::Fail { stats, .. } = &outcome
        {
            print!("{}", render(stats));
        }
        if !matches!(outcome, trace_sink::check::CheckOutcome::Unreachable(_)) {
            print!("{}", render_verdict(&outcome));
        }
    }
    if let trace_sink::check::CheckOutcome::Unreachable(e) = &outcome {
        eprintln!("trace-sink check: sink unreachable: {e}");
    }
    ExitCode::from(outcome.exit_code())
}
