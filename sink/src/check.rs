//! `trace-sink check`: polls a sink's `/stats` and turns the conditions of
//! [`trace_proto::check`] into an exit code for scripts and test suites.
//!
//! Positive conditions (enough spans, every listed node delivered) must become
//! true within `within`. Negative ones (local only, silent nodes) must hold at
//! every poll, and keep holding for `hold` after the positive ones are met.

use std::fmt::Write as _;
use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::time::Instant;
use trace_proto::check::{CheckReport, Conditions, Polarity, evaluate};
use trace_proto::stats::{Attribution, RouteKind, SinkStats};

/// What `trace-sink check` was asked.
#[derive(Debug, Clone)]
pub struct CheckOptions {
    /// Base URL of the sink's API, e.g. `http://trace-sink:8080`.
    pub url: String,
    /// The conditions.
    pub conditions: Conditions,
    /// How long positive conditions may take to become true.
    pub within: Duration,
    /// How long negative conditions must keep holding once positive ones are met.
    pub hold: Duration,
    /// Time between polls.
    pub interval: Duration,
}

/// The result of a check.
#[derive(Debug, Clone)]
pub enum CheckOutcome {
    /// Every condition held.
    Pass {
        /// The last evaluation.
        report: CheckReport,
        /// The last snapshot.
        stats: SinkStats,
    },
    /// A condition failed.
    Fail {
        /// The failing evaluation.
        report: CheckReport,
        /// The snapshot it failed on.
        stats: SinkStats,
    },
    /// The sink could not be reached or did not answer with `/stats` JSON.
    Unreachable(FetchError),
}

impl CheckOutcome {
    /// Exit code: 0 pass, 1 fail, 2 unreachable.
    pub fn exit_code(&self) -> u8 {
        match self {
            CheckOutcome::Pass { .. } => 0,
            CheckOutcome::Fail { .. } => 1,
            CheckOutcome::Unreachable(_) => 2,
        }
    }
}

/// Why `/stats` could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    /// `--url` is not a usable `http://HOST:PORT` base URL.
    #[error("invalid --url {url:?}: {reason}")]
    InvalidUrl {
        /// What was given.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// No connection or no answer (the message carries the causes).
    #[error("{url}: {message}")]
    NoAnswer {
        /// The `/stats` URL.
        url: String,
        /// What happened.
        message: String,
    },
    /// The sink answered with an error status.
    #[error("{url}: HTTP {status}")]
    Status {
        /// The `/stats` URL.
        url: String,
        /// The status line.
        status: String,
    },
    /// The answer is not trace-sink's `/stats` JSON.
    #[error("{url}: not trace-sink /stats JSON: {reason}")]
    NotStats {
        /// The `/stats` URL.
        url: String,
        /// The parse error.
        reason: String,
    },
}

/// Checks that `url` is a usable `http://` base URL and returns its `/stats` URI.
/// The rules are [`trace_proto::cli::parse_http_url`]'s, shared with `trace-gen
/// --endpoint`: a bare `HOST:PORT` is taken as `http://HOST:PORT`.
pub fn validate_url(url: &str) -> Result<hyper::Uri, FetchError> {
    let invalid = |reason: String| FetchError::InvalidUrl {
        url: url.to_owned(),
        reason,
    };
    let base = trace_proto::cli::parse_http_url(url).map_err(invalid)?;
    format!("{}/stats", base.url.trim_end_matches('/'))
        .parse()
        .map_err(|e| invalid(format!("{e}")))
}

/// Fetches `GET {url}/stats`.
pub async fn fetch_stats(url: &str) -> Result<SinkStats, FetchError> {
    let uri = validate_url(url)?;
    let full = uri.to_string();
    let no_answer = |message: String| FetchError::NoAnswer {
        url: full.clone(),
        message,
    };
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<bytes::Bytes>>();
    let req = hyper::Request::get(uri)
        .body(Empty::new())
        .map_err(|e| no_answer(format!("cannot build request: {e}")))?;
    let resp = tokio::time::timeout(Duration::from_secs(5), client.request(req))
        .await
        .map_err(|_| no_answer("no answer within 5s".into()))?
        .map_err(|e| no_answer(trace_proto::error::chain(&e)))?;
    let status = resp.status();
    let body = tokio::time::timeout(Duration::from_secs(5), resp.into_body().collect())
        .await
        .map_err(|_| no_answer("body not received within 5s".into()))?
        .map_err(|e| no_answer(e.to_string()))?
        .to_bytes();
    if !status.is_success() {
        return Err(FetchError::Status {
            url: full,
            status: status.to_string(),
        });
    }
    serde_json::from_slice(&body).map_err(|e| FetchError::NotStats {
        url: full,
        reason: e.to_string(),
    })
}

/// Polls until the outcome is known.
pub async fn run(opts: &CheckOptions) -> CheckOutcome {
    let start = Instant::now();
    // The binary bounds --within; a caller's absurd value just means "no deadline".
    let deadline = start
        .checked_add(opts.within)
        .unwrap_or(start + Duration::from_secs(100 * 365 * 24 * 3600));
    let mut positives_met_at: Option<Instant> = None;
    let mut fetch_failures = 0;
    loop {
        let stats = match fetch_stats(&opts.url).await {
            Ok(s) => {
                fetch_failures = 0;
                s
            }
            Err(e) => {
                fetch_failures += 1;
                // A sink that never answers, or stops answering for three polls, is unreachable.
                if fetch_failures >= 3 || Instant::now() >= deadline {
                    return CheckOutcome::Unreachable(e);
                }
                tokio::time::sleep(opts.interval).await;
                continue;
            }
        };
        let report = evaluate(&stats, &opts.conditions);
        let now = Instant::now();
        if report
            .failures
            .iter()
            .any(|f| f.polarity == Polarity::Negative)
        {
            return CheckOutcome::Fail { report, stats };
        }
        if report.pass {
            let met = *positives_met_at.get_or_insert(now);
            if now.duration_since(met) >= opts.hold {
                return CheckOutcome::Pass { report, stats };
            }
        } else if now >= deadline {
            return CheckOutcome::Fail { report, stats };
        }
        // Never sleep past the moment that decides the outcome.
        let wake = match positives_met_at {
            Some(met) => met.checked_add(opts.hold).unwrap_or(deadline),
            None => deadline,
        };
        let nap = opts
            .interval
            .min(wake.saturating_duration_since(now))
            .max(Duration::from_millis(10));
        tokio::time::sleep(nap).await;
    }
}

/// A human-readable table of routes and generators.
pub fn render(stats: &SinkStats) -> String {
    let node = |n: &Option<String>| n.clone().unwrap_or_else(|| "(unknown)".into());
    let mut out = String::new();
    let _ = writeln!(
        out,
        "spans: {} total, {} local, {} remote, {} unattributed, {} overflow (since {})",
        stats.spans_total,
        stats.local_spans,
        stats.remote_spans,
        stats.unattributed_spans,
        stats.overflow_spans,
        stats.since
    );
    let _ = writeln!(
        out,
        "{:<24} {:<24} {:>10}  ROUTE",
        "GENERATOR NODE", "AGENT NODE", "SPANS"
    );
    for r in &stats.routes {
        let kind = match r.kind() {
            RouteKind::Local => "local",
            RouteKind::Remote => "REMOTE",
            RouteKind::Unattributed => "unattributed",
        };
        // Where the agent node came from, when it did not come only from the
        // span's attribute (the classic case).
        let from = match r.attribution {
            None | Some(Attribution::Attribute) => String::new(),
            Some(a) => format!(" (agent node by {a})"),
        };
        let conflicts = if r.agent_node_conflicts > 0 {
            format!(", {} CONFLICTING", r.agent_node_conflicts)
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "{:<24} {:<24} {:>10}  {}{from}{conflicts}",
            node(&r.generator_node),
            node(&r.agent_node),
            r.spans,
            kind
        );
    }
    if let Some(k) = &stats.kubernetes {
        let peers: Vec<String> = k
            .peer_spans
            .iter()
            .map(|(r, n)| format!("{n} {r}"))
            .collect();
        let _ = writeln!(
            out,
            "kubernetes API {} since {}{}; {} pods tracked; peer spans: {}",
            k.api,
            k.api_since,
            k.last_error
                .as_deref()
                .map(|e| format!(" ({e})"))
                .unwrap_or_default(),
            k.pods,
            if peers.is_empty() {
                "none".to_owned()
            } else {
                peers.join(", ")
            }
        );
    }
    if !stats.generators.is_empty() {
        let _ = writeln!(
            out,
            "{:<24} {:<38} {:>10} {:>8} {:>10}",
            "GENERATOR NODE", "GENERATOR ID", "SPANS", "MISSING", "DUPLICATES"
        );
        for g in &stats.generators {
            let _ = writeln!(
                out,
                "{:<24} {:<38} {:>10} {:>8} {:>10}",
                node(&g.node),
                g.id,
                g.spans,
                g.missing,
                g.duplicates
            );
        }
    }
    out
}

/// The verdict lines: PASS, or FAIL with each failed condition.
pub fn render_verdict(outcome: &CheckOutcome) -> String {
    match outcome {
        CheckOutcome::Pass { .. } => "PASS\n".into(),
        CheckOutcome::Fail { report, .. } => {
            let mut s = String::from("FAIL\n");
            for f in &report.failures {
                let _ = writeln!(s, "  - {}", f.message);
            }
            s
        }
        CheckOutcome::Unreachable(e) => format!("ERROR: sink unreachable: {e}\n"),
    }
}
