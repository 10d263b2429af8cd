//! `trace-verify`: flags -> options -> the library's run; the exit status
//! says how it went (0 as promised, 1 a promise broken, 2 usage or set-up).
//! Documented in docs/verify.md.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use trace_verify::harness::{self, Options, Progress};
use trace_verify::manifests::Components;
use trace_verify::report::{self, EXIT_SETUP};
use trace_verify::suite::{parse_events, parse_policies};

/// The cluster verification of node-local telemetry routing: deploys agent,
/// sink and generators, runs a policy x event matrix and judges each
/// policy's promise.
#[derive(Debug, Parser)]
#[command(name = "trace-verify", version = env!("TRACE_VERIFY_VERSION"))]
struct Cli {
    /// Policies to run (comma-separated or `all`): local, prefer-same-node, cluster.
    #[arg(long, default_value = "all")]
    policy: String,
    /// Events to run (comma-separated or `all`): all-up, agent-removed,
    /// crash-loop, recovered, terminating, rolling-max-unavailable, rolling-max-surge.
    #[arg(long, default_value = "all")]
    events: String,
    /// Deploy with the istio component (sidecars, PeerAuthentication PERMISSIVE).
    #[arg(long)]
    istio: bool,
    /// Run generators and agents on control-plane nodes too.
    #[arg(long)]
    control_plane: bool,
    /// Agents that stamp nothing; the sink attributes by the peer Pod (every
    /// step with spans must show attribution `peer`).
    #[arg(long)]
    peer_attribution: bool,
    /// Image prefix for trace-gen and trace-sink (PREFIX/trace-gen, PREFIX/trace-sink).
    #[arg(long, value_name = "PREFIX")]
    registry: Option<String>,
    /// Image tag for trace-gen and trace-sink.
    #[arg(long)]
    tag: Option<String>,
    /// How long each step measures.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    window: Duration,
    /// Wait after the agents changed, before the window, for kube-proxy to catch up.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    settle: Duration,
    /// Limit of each wait (rollouts, pods, endpoints).
    #[arg(long, default_value = "600s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// Interval of the waits, and of the sink's /stats during rollouts.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    poll: Duration,
    /// The generators open a new connection this often (kube-proxy chooses per connection).
    #[arg(long, default_value = "2s")]
    reconnect_every: String,
    /// Retries of the generators for a failed export.
    #[arg(long, default_value_t = 3)]
    retries: u32,
    /// Fail a step that lost more than N spans (loss is otherwise reported, not judged).
    #[arg(long, value_name = "N")]
    max_lost: Option<u64>,
    /// Keep the deployment at the end, as the last step left it.
    #[arg(long)]
    keep: bool,
    /// Print what would be applied (the rendered manifests) and run nothing.
    #[arg(long)]
    dry_run: bool,
    /// Write the results JSON (schema trace-verify/results/v1) here.
    #[arg(long, value_name = "FILE")]
    results_json: Option<PathBuf>,
    /// Write the Markdown report here (for CI job summaries).
    #[arg(long, value_name = "FILE")]
    markdown: Option<PathBuf>,
    /// The kubeconfig context (default: the current one).
    #[arg(long)]
    context: Option<String>,
    /// The repository's deploy/ directory.
    #[arg(long, default_value = "deploy")]
    deploy_dir: PathBuf,
    /// The kubectl that renders the manifests (`kubectl kustomize`).
    #[arg(long, default_value = "kubectl")]
    kubectl: PathBuf,
}

async fn connect(context: Option<String>) -> Result<(kube::Client, String), String> {
    let opts = kube::config::KubeConfigOptions {
        context: context.clone(),
        ..Default::default()
    };
    let name = match &context {
        Some(c) => c.clone(),
        None => kube::config::Kubeconfig::read()
            .ok()
            .and_then(|k| k.current_context)
            .unwrap_or_else(|| "in-cluster".into()),
    };
    let config = match kube::Config::from_kubeconfig(&opts).await {
        Ok(c) => c,
        Err(e) if context.is_none() => kube::Config::incluster()
            .map_err(|e2| format!("no kubeconfig ({e}) and not in a cluster ({e2})"))?,
        Err(e) => return Err(format!("kubeconfig context {name}: {e}")),
    };
    // No client-level retry: kube's default retries a 429/503/504 up to 15 times
    // with back-off (minutes in all), and the service proxy answers 503 while the
    // sink has no ready endpoint. The waits of the steps poll themselves
    // (--poll, --timeout) and say what they wait for; a request that fails is
    // seen at once and polled again, or reported.
    let mut config = config;
    config.default_retry = false;
    let client = kube::Client::try_from(config).map_err(|e| format!("client: {e}"))?;
    client
        .apiserver_version()
        .await
        .map_err(|e| format!("cannot reach the cluster of context {name}: {e}"))?;
    Ok((client, name))
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if !cli.deploy_dir.join("base").is_dir() {
        eprintln!(
            "trace-verify: {} is not the repository's deploy/ directory (no base/ in it); give --deploy-dir",
            cli.deploy_dir.display()
        );
        return ExitCode::from(EXIT_SETUP);
    }
    let (policies, events) = match (parse_policies(&cli.policy), parse_events(&cli.events)) {
        (Ok(p), Ok(e)) => (p, e),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("trace-verify: {e}");
            return ExitCode::from(EXIT_SETUP);
        }
    };
    let work_dir = std::env::temp_dir().join(format!("trace-verify-{}", std::process::id()));
    let opts = Options {
        deploy_dir: cli.deploy_dir,
        kubectl: cli.kubectl,
        work_dir: work_dir.clone(),
        components: Components {
            istio: cli.istio,
            control_plane: cli.control_plane,
            peer_attribution: cli.peer_attribution,
        },
        registry: cli.registry,
        tag: cli.tag,
        policies,
        events,
        window: cli.window,
        settle: cli.settle,
        timeout: cli.timeout,
        poll: cli.poll,
        reconnect_every: cli.reconnect_every,
        retries: cli.retries,
        max_lost: cli.max_lost,
        keep: cli.keep,
        dry_run: cli.dry_run,
        wait_for_deletion: true,
    };
    let (cluster, context) = if opts.dry_run {
        (None, "dry-run".to_owned())
    } else {
        match connect(cli.context).await {
            Ok((c, name)) => (Some(trace_verify::cluster::Cluster::new(c)), name),
            Err(e) => {
                eprintln!("trace-verify: {e}");
                return ExitCode::from(EXIT_SETUP);
            }
        }
    };
    let results = harness::run(
        opts,
        cluster,
        context,
        Progress::new(Box::new(std::io::stderr())),
        Box::new(std::io::stdout()),
        trace_proto::cli::shutdown_signal(),
    )
    .await;
    let _ = std::fs::remove_dir_all(&work_dir);
    println!();
    print!("{}", report::table(&results));
    println!();
    print!("{}", report::details(&results));
    if let Some(path) = &cli.results_json {
        let text = serde_json::to_string_pretty(&results).unwrap_or_default();
        if let Err(e) = std::fs::write(path, text + "\n") {
            eprintln!("trace-verify: writing {}: {e}", path.display());
            return ExitCode::from(EXIT_SETUP);
        }
    }
    if let Some(path) = &cli.markdown
        && let Err(e) = std::fs::write(path, report::markdown(&results))
    {
        eprintln!("trace-verify: writing {}: {e}", path.display());
        return ExitCode::from(EXIT_SETUP);
    }
    println!(
        "RESULT: {}",
        match results.exit_code {
            0 if results.pass => "every step as promised".to_owned(),
            0 => format!("{} (nothing was verified)", results.result),
            1 => "a promise was broken (see above)".to_owned(),
            _ => format!("could not judge: {}", results.result),
        }
    );
    ExitCode::from(results.exit_code)
}
