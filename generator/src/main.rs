//! The trace-gen binary: flags and environment -> [`trace_gen::GenConfig`] ->
//! [`trace_gen::Generator::run`]. Exit 0 when every span was accepted, 1 when any
//! export failed, 2 for a usage error.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use tokio::net::TcpListener;
use trace_gen::config::{ConfigError, GenConfig, Reconnect};
use trace_gen::counters::one_line;
use trace_gen::env::{ExporterFlags, resolve_exporter, resolve_resource, resolve_service_name};

/// A node-tagging OTLP trace generator that counts what it sent and what failed.
#[derive(Parser, Debug)]
#[command(name = "trace-gen", version)]
struct Cli {
    /// Node this generator runs on (k8s.node.name); from the downward API spec.nodeName.
    #[arg(long, env = "NODE_NAME")]
    node_name: Option<String>,
    /// Pod name (k8s.pod.name).
    #[arg(long, env = "POD_NAME")]
    pod_name: Option<String>,
    /// Namespace (k8s.namespace.name).
    #[arg(long, env = "POD_NAMESPACE")]
    namespace: Option<String>,
    /// service.name [default: trace-gen, or service.name from OTEL_RESOURCE_ATTRIBUTES].
    #[arg(long, env = "OTEL_SERVICE_NAME")]
    service_name: Option<String>,
    /// Extra resource attribute k=v (repeatable); adds to OTEL_RESOURCE_ATTRIBUTES.
    #[arg(long = "resource-attribute", value_name = "K=V")]
    resource_attributes: Vec<String>,
    /// OTLP endpoint [default: http://telemetry-otlp-traces-local:4317, or :4318/v1/traces for HTTP;
    /// env OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, OTEL_EXPORTER_OTLP_ENDPOINT].
    #[arg(long)]
    endpoint: Option<String>,
    /// grpc, http/protobuf or http/json [default: grpc; env OTEL_EXPORTER_OTLP_PROTOCOL].
    #[arg(long)]
    protocol: Option<String>,
    /// none or gzip [default: none; env OTEL_EXPORTER_OTLP_COMPRESSION].
    #[arg(long)]
    compression: Option<String>,
    /// Request header / gRPC metadata k=v (repeatable; env OTEL_EXPORTER_OTLP_HEADERS).
    #[arg(long = "header", value_name = "K=V")]
    headers: Vec<String>,
    /// Deadline of one export [default: 5s; env OTEL_EXPORTER_OTLP_TIMEOUT in ms].
    #[arg(long, value_parser = humantime::parse_duration)]
    timeout: Option<Duration>,
    /// Deadline of name resolution plus TCP connect.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    connect_timeout: Duration,
    /// Spans per second in total; 0 = as fast as possible.
    #[arg(long, default_value_t = 10.0)]
    rate: f64,
    /// Spans per request.
    #[arg(long, default_value_t = 10)]
    batch: usize,
    /// Requests in flight at most.
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// Stop after this many spans.
    #[arg(long, conflicts_with = "duration")]
    count: Option<u64>,
    /// Stop after this long (e.g. 30s, 5m).
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
    /// Open a new connection (resolving the name again) every N requests, or every duration (e.g. 10s).
    #[arg(long, value_name = "N|DURATION")]
    reconnect_every: Option<String>,
    /// Extra attempts for a failed request (default: none).
    #[arg(long, default_value_t = 0)]
    retries: u32,
    /// Period of the progress line; 0s disables it.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    report_interval: Duration,
    /// Address of GET /stats, /metrics, /healthz, or "off".
    #[arg(long, env = "TRACE_GEN_STATS_LISTEN", default_value = "0.0.0.0:8081")]
    stats_listen: String,
    /// Once listening, write the bound address here as JSON, {"stats":"ADDR"}
    /// ({} with --stats-listen off; atomically; removed at a clean exit).
    #[arg(long, env = "TRACE_GEN_LISTEN_FILE", value_name = "PATH")]
    listen_file: Option<std::path::PathBuf>,
    /// Write the final summary as JSON to this file ("-" = stdout).
    #[arg(long, value_name = "PATH")]
    summary_json: Option<String>,
}

fn usage(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("trace-gen: {msg}");
    ExitCode::from(2)
}

fn hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

fn build_config(cli: &Cli) -> Result<GenConfig, ConfigError> {
    let env = |k: &str| std::env::var(k).ok();
    let exporter = resolve_exporter(
        &ExporterFlags {
            endpoint: cli.endpoint.clone(),
            protocol: cli.protocol.clone(),
            compression: cli.compression.clone(),
            headers: cli.headers.clone(),
            timeout: cli.timeout,
        },
        &env,
    )?;
    let extra_resource = resolve_resource(&cli.resource_attributes, &env)?;
    let node_name = match cli.node_name.clone().filter(|n| !n.is_empty()) {
        Some(n) => n,
        None => {
            let h = hostname().ok_or_else(|| {
                ConfigError::Invalid("no node name: set --node-name or NODE_NAME".into())
            })?;
            tracing::warn!(
                "NODE_NAME is not set: using the hostname {h:?} as the node name; in Kubernetes set NODE_NAME from the downward API (spec.nodeName)"
            );
            h
        }
    };
    let mut c = GenConfig::new(node_name);
    c.service_name = resolve_service_name(cli.service_name.clone(), &extra_resource);
    c.pod_name = cli.pod_name.clone().filter(|s| !s.is_empty());
    c.namespace = cli.namespace.clone().filter(|s| !s.is_empty());
    c.extra_resource = extra_resource;
    c.exporter = exporter;
    c.connect_timeout = cli.connect_timeout;
    c.rate = cli.rate;
    c.batch = cli.batch;
    c.workers = cli.workers;
    c.count = cli.count;
    c.duration = cli.duration;
    c.reconnect = match &cli.reconnect_every {
        Some(s) => Reconnect::parse(s)?,
        None => Reconnect::Never,
    };
    c.retries = cli.retries;
    c.report_interval = cli.report_interval;
    c.validate()?;
    Ok(c)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    trace_proto::cli::init_logging();
    let config = match build_config(&cli) {
        Ok(c) => c,
        Err(e) => return usage(e),
    };
    let stats_addr = match cli.stats_listen.as_str() {
        "off" | "" => None,
        s => match s.parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                return usage(format!(
                    "invalid --stats-listen {s:?}: use host:port or off"
                ));
            }
        },
    };
    // One thread: sending needs less than a core even at full speed, and a
    // multi-thread runtime spends more CPU waking its threads for each request
    // than building and encoding the request costs (bench/run.sh: about half
    // the CPU per span). DNS lookups still go to tokio's blocking pool.
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("trace-gen: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    rt.block_on(run(config, stats_addr, cli.listen_file, cli.summary_json))
}

async fn run(
    config: GenConfig,
    stats_addr: Option<SocketAddr>,
    listen_file: Option<std::path::PathBuf>,
    summary_json: Option<String>,
) -> ExitCode {
    let generator = match trace_gen::Generator::new(config.clone()) {
        Ok(g) => g,
        Err(e) => return usage(e),
    };
    let stop_stats = tokio_util::sync::CancellationToken::new();
    let mut stats_task = None;
    let mut bound = Vec::new();
    if let Some(addr) = stats_addr {
        let listener = match TcpListener::bind(addr).await {
            Ok(l) => l,
            Err(e) => return usage(format!("cannot listen on --stats-listen {addr}: {e}")),
        };
        let local = listener.local_addr().unwrap_or(addr);
        tracing::info!("stats on http://{local}/stats");
        bound.push(("stats", local));
        stats_task = Some(tokio::spawn(trace_gen::stats_server::serve(
            listener,
            generator.counters(),
            stop_stats.clone().cancelled_owned(),
        )));
    }
    if let Some(path) = &listen_file
        && let Err(e) = trace_proto::cli::write_listen_file(path, &bound)
    {
        // Whoever asked for the file waits for it: a setup error, as a taken port.
        return usage(e);
    }
    let pace = if config.rate == 0.0 {
        "as fast as possible".to_owned()
    } else {
        format!("at {} spans/s", config.rate)
    };
    tracing::info!(
        "trace-gen {} on node {}: {} to {} {pace}, batch {}, {} worker(s)",
        generator.generator_id(),
        config.node_name,
        config.exporter.protocol.as_str(),
        config.exporter.endpoint.url,
        config.batch,
        config.workers
    );
    let report = generator.run(shutdown_signal()).await;
    stop_stats.cancel();
    if let Some(t) = stats_task {
        let _ = t.await;
    }
    if let Some(path) = &listen_file {
        // Gone once the address is: a file left over is from a process that was killed.
        let _ = std::fs::remove_file(path);
    }
    eprintln!("trace-gen summary: {}", one_line(&report));
    if let Some(path) = summary_json {
        let json = serde_json::to_string_pretty(&report).unwrap_or_default();
        if path == "-" {
            println!("{json}");
        } else if let Err(e) = std::fs::write(&path, json + "\n") {
            eprintln!("trace-gen: cannot write --summary-json {path}: {e}");
            return ExitCode::FAILURE;
        }
    }
    if report.spans_failed == 0 && report.spans_accepted == report.spans_sent {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

async fn shutdown_signal() {
    trace_proto::cli::shutdown_signal().await;
    tracing::info!("stopping: waiting for in-flight requests");
}
