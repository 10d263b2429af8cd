//! The results of a run and the ways they are shown: the final table (at most
//! [`WIDTH`] columns: a summary matrix policy x event of remote and lost
//! spans, one line per step, then the detail of every failed check), the
//! versioned results JSON ([`RESULTS_SCHEMA`], documented in docs/verify.md)
//! and a Markdown report for CI job summaries.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};
use trace_proto::stats::Attribution;

use crate::measure::NodeMeasurement;
use crate::promise::Judgement;
use crate::suite::{Event, Policy};

/// Schema version of [`Results`]. Adding a field keeps it; renaming or
/// removing one changes it.
pub const RESULTS_SCHEMA: &str = "trace-verify/results/v1";

/// The widest line of the final table.
pub const WIDTH: usize = 120;

/// Exit status: every step as promised.
pub const EXIT_PASS: u8 = 0;
/// Exit status: a promise was broken.
pub const EXIT_BROKEN: u8 = 1;
/// Exit status: usage or set-up error (the run could not judge).
pub const EXIT_SETUP: u8 = 2;

/// One step: a (policy, event) cell as it ran.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepResult {
    /// The policy of the agent Service.
    pub policy: Policy,
    /// The event.
    pub event: Event,
    /// The step in words, with the node it singled out.
    pub title: String,
    /// The node the event singled out (agent removed, terminating).
    pub victim: Option<String>,
    /// Every judgement held (and the step ran).
    pub pass: bool,
    /// The promises of the cell and the options' checks, judged.
    pub judgements: Vec<Judgement>,
    /// Spans the sink received in the step's window.
    pub spans_total: u64,
    /// Of them through the generator's own node's agent.
    pub local_spans: u64,
    /// Through another node's agent.
    pub remote_spans: u64,
    /// Agent node unknown.
    pub unattributed_spans: u64,
    /// Where the agent nodes came from (`attribute`, `peer`, `both`, `mixed`), `null` if none.
    pub attribution: Option<Attribution>,
    /// Per generator node.
    pub nodes: Vec<NodeMeasurement>,
    /// Length of the step, seconds (set-up of the event included).
    pub duration_seconds: f64,
}

impl StepResult {
    /// Lost spans, summed over the nodes.
    pub fn lost(&self) -> u64 {
        self.nodes.iter().map(|n| n.lost).sum()
    }

    /// Duplicated spans, summed over the nodes.
    pub fn duplicated(&self) -> u64 {
        self.nodes.iter().map(|n| n.duplicated).sum()
    }

    /// The longest silence of any node (rollouts only).
    pub fn longest_silence_ms(&self) -> Option<u64> {
        self.nodes.iter().filter_map(|n| n.longest_silence_ms).max()
    }

    /// Generator failures by reason, summed over the nodes.
    pub fn failed_by_reason(&self) -> BTreeMap<String, u64> {
        let mut m = BTreeMap::new();
        for n in &self.nodes {
            for (r, c) in &n.failed_by_reason {
                *m.entry(r.clone()).or_insert(0) += c;
            }
        }
        m
    }
}

/// The options of a run, as recorded in the results.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RecordedOptions {
    /// `--policy`.
    pub policies: Vec<Policy>,
    /// `--events`.
    pub events: Vec<Event>,
    /// `--istio`.
    pub istio: bool,
    /// `--peer-attribution`.
    pub peer_attribution: bool,
    /// `--window`, seconds: how long each step measures.
    pub window_seconds: u64,
    /// `--settle`, seconds.
    pub settle_seconds: u64,
    /// `--max-lost`, `null` when loss is not judged.
    pub max_lost: Option<u64>,
}

/// One cell of the summary matrix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MatrixCell {
    /// Row.
    pub event: Event,
    /// Column.
    pub policy: Policy,
    /// Remote spans of the step.
    pub remote: u64,
    /// Lost spans of the step.
    pub lost: u64,
    /// Longest silence of any node, ms (rollouts).
    pub longest_silence_ms: Option<u64>,
    /// The step's verdict.
    pub pass: bool,
}

/// Everything a run found: the results JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Results {
    /// Always [`RESULTS_SCHEMA`].
    pub schema: String,
    /// Start (RFC 3339).
    pub started: String,
    /// End (RFC 3339).
    pub finished: String,
    /// The kubeconfig context (`dry-run` in a dry run).
    pub context: String,
    /// trace-verify's version (added in v1: absent from older files).
    #[serde(default)]
    pub version: String,
    /// The git commit trace-verify was built from; `None` when not built
    /// from a git checkout (added in v1: absent from older files).
    #[serde(default)]
    pub commit: Option<String>,
    /// The options.
    pub options: RecordedOptions,
    /// `complete`, `dry run` or `aborted: REASON`.
    pub result: String,
    /// Complete and every step passed.
    pub pass: bool,
    /// The exit status: 0 as promised, 1 a promise broken, 2 set-up error.
    pub exit_code: u8,
    /// Every step run, in order.
    pub steps: Vec<StepResult>,
    /// The summary matrix, one cell per step run.
    pub matrix: Vec<MatrixCell>,
}

impl Results {
    /// Results of a run that ended as `result` (`None`: complete).
    pub fn new(
        started: String,
        context: String,
        options: RecordedOptions,
        steps: Vec<StepResult>,
        aborted: Option<String>,
        dry_run: bool,
    ) -> Self {
        let all = steps.iter().all(|s| s.pass);
        let (result, exit_code) = match (&aborted, dry_run) {
            (Some(why), _) => (format!("aborted: {why}"), EXIT_SETUP),
            (None, true) => ("dry run".to_owned(), EXIT_PASS),
            (None, false) if steps.is_empty() => ("complete".to_owned(), EXIT_SETUP),
            (None, false) => (
                "complete".to_owned(),
                if all { EXIT_PASS } else { EXIT_BROKEN },
            ),
        };
        let matrix = steps
            .iter()
            .map(|s| MatrixCell {
                event: s.event,
                policy: s.policy,
                remote: s.remote_spans,
                lost: s.lost(),
                longest_silence_ms: s.longest_silence_ms(),
                pass: s.pass,
            })
            .collect();
        Results {
            schema: RESULTS_SCHEMA.to_owned(),
            started,
            finished: trace_proto::stats::rfc3339(std::time::SystemTime::now()),
            context,
            version: env!("CARGO_PKG_VERSION").to_owned(),
            commit: Some(env!("TRACE_VERIFY_COMMIT"))
                .filter(|c| !c.is_empty())
                .map(str::to_owned),
            pass: exit_code == EXIT_PASS && !dry_run && !steps.is_empty(),
            exit_code,
            result,
            options,
            steps,
            matrix,
        }
    }
}

/// `0.1.0 (commit abc1234)`, or the version alone.
fn built(r: &Results) -> String {
    match &r.commit {
        Some(c) => format!("{} (commit {c})", r.version),
        None => r.version.clone(),
    }
}

fn verdict(pass: bool) -> &'static str {
    if pass { "PASS" } else { "FAIL" }
}

fn secs(ms: Option<u64>) -> String {
    ms.map_or("-".to_owned(), |ms| format!("{:.1}s", ms as f64 / 1000.0))
}

fn clip(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        s.to_owned()
    } else {
        let mut t: String = s.chars().take(width.saturating_sub(1)).collect();
        t.push('~');
        t
    }
}

/// Wraps `text` to `width` columns, continuation lines indented by `indent`.
fn wrap(text: &str, width: usize, indent: &str) -> String {
    let mut out = String::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > width {
            out.push_str(&line);
            out.push('\n');
            line = indent.to_owned();
        } else if !line.is_empty() && line != indent {
            line.push(' ');
        }
        line.push_str(&clip(word, width - indent.len()));
    }
    out.push_str(&line);
    out
}

/// The summary matrix: one row per event, per policy the remote and lost
/// spans and the verdict (`-` where the cell did not run).
pub fn matrix_text(r: &Results) -> String {
    let policies: Vec<Policy> = Policy::ALL
        .into_iter()
        .filter(|p| r.matrix.iter().any(|c| c.policy == *p))
        .collect();
    let events: Vec<Event> = Event::ALL
        .into_iter()
        .filter(|e| r.matrix.iter().any(|c| c.event == *e))
        .collect();
    let mut out = String::new();
    let _ = write!(out, "{:<24}", "remote / lost spans");
    for p in &policies {
        let _ = write!(out, " | {:<29}", p.key());
    }
    out.push('\n');
    let _ = write!(out, "{:<24}", "");
    for _ in &policies {
        let _ = write!(
            out,
            " | {:>8} {:>8} {:>6} {:<4}",
            "remote", "lost", "quiet", ""
        );
    }
    out.push('\n');
    for e in &events {
        let _ = write!(out, "{:<24}", e.title());
        for p in &policies {
            match r.matrix.iter().find(|c| c.event == *e && c.policy == *p) {
                Some(c) => {
                    let _ = write!(
                        out,
                        " | {:>8} {:>8} {:>6} {:<4}",
                        c.remote,
                        c.lost,
                        secs(c.longest_silence_ms),
                        verdict(c.pass)
                    );
                }
                None => {
                    let _ = write!(out, " | {:>8} {:>8} {:>6} {:<4}", "-", "-", "-", "");
                }
            }
        }
        out.push('\n');
    }
    out
}

/// The final table: summary matrix, one line per step, the failed checks.
pub fn table(r: &Results) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "trace-verify {}, context {}: {}",
        built(r),
        r.context,
        r.result
    );
    if r.steps.is_empty() {
        return out;
    }
    out.push('\n');
    out.push_str(&matrix_text(r));
    out.push('\n');
    let _ = writeln!(
        out,
        "{:<16} {:<24} {:<4} {:>7} {:>7} {:>7} {:>6} {:>5} {:>6}  generator failures",
        "policy", "event", "", "spans", "local", "remote", "lost", "dup", "quiet"
    );
    for s in &r.steps {
        let reasons: Vec<String> = s
            .failed_by_reason()
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let line = format!(
            "{:<16} {:<24} {:<4} {:>7} {:>7} {:>7} {:>6} {:>5} {:>6}  {}",
            s.policy.key(),
            clip(&s.title, 24),
            verdict(s.pass),
            s.spans_total,
            s.local_spans,
            s.remote_spans,
            s.lost(),
            s.duplicated(),
            secs(s.longest_silence_ms()),
            if reasons.is_empty() {
                "-".to_owned()
            } else {
                reasons.join(",")
            }
        );
        let _ = writeln!(out, "{}", clip(&line, WIDTH));
    }
    let failed: Vec<(&StepResult, &Judgement)> = r
        .steps
        .iter()
        .flat_map(|s| s.judgements.iter().filter(|j| !j.pass).map(move |j| (s, j)))
        .collect();
    if !failed.is_empty() {
        out.push('\n');
        out.push_str("Broken promises:\n");
        for (s, j) in failed {
            let text = format!(
                "- {} / {}: {} ({}): {}",
                s.policy, s.event, j.requires, j.check, j.detail
            );
            let _ = writeln!(out, "{}", wrap(&text, WIDTH, "    "));
        }
    }
    out
}

/// The per-step detail: every node's figures and every judgement.
pub fn details(r: &Results) -> String {
    let mut out = String::new();
    for s in &r.steps {
        let head = format!(
            "{} / {}: {} ({:.0}s, attribution {})",
            s.policy,
            s.event,
            s.title,
            s.duration_seconds,
            s.attribution.map_or("-", Attribution::as_str)
        );
        let _ = writeln!(out, "{}", wrap(&head, WIDTH, "    "));
        for n in &s.nodes {
            let reasons: Vec<String> = n
                .failed_by_reason
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            let line = format!(
                "    {}: local {}, remote {}, unattributed {}, lost {} (missing {}, failed {}), dup {}, quiet {}{}",
                n.node,
                n.local,
                n.remote,
                n.unattributed,
                n.lost,
                n.missing,
                n.generator_failed.map_or("?".to_owned(), |f| f.to_string()),
                n.duplicated,
                secs(n.longest_silence_ms),
                if reasons.is_empty() {
                    String::new()
                } else {
                    format!(", failures {}", reasons.join(","))
                }
            );
            let _ = writeln!(out, "{}", wrap(&line, WIDTH, "        "));
        }
        for j in &s.judgements {
            let line = format!("    {} {}: {}", verdict(j.pass), j.requires, j.detail);
            let _ = writeln!(out, "{}", wrap(&line, WIDTH, "        "));
        }
    }
    out
}

/// The Markdown report (for `$GITHUB_STEP_SUMMARY` and the like).
pub fn markdown(r: &Results) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "## trace-verify: {}\n",
        if r.pass { "PASS" } else { "FAIL" }
    );
    let _ = writeln!(
        out,
        "trace-verify {}, context `{}`, {} to {}: {}.\n",
        built(r),
        r.context,
        r.started,
        r.finished,
        r.result
    );
    let policies: Vec<Policy> = Policy::ALL
        .into_iter()
        .filter(|p| r.matrix.iter().any(|c| c.policy == *p))
        .collect();
    out.push_str("| event |");
    for p in &policies {
        let _ = write!(out, " {} (remote / lost) |", p.key());
    }
    out.push_str("\n|---|");
    for _ in &policies {
        out.push_str("---|");
    }
    out.push('\n');
    for e in Event::ALL {
        if !r.matrix.iter().any(|c| c.event == e) {
            continue;
        }
        let _ = write!(out, "| {} |", e.title());
        for p in &policies {
            match r.matrix.iter().find(|c| c.event == e && c.policy == *p) {
                Some(c) => {
                    let _ = write!(
                        out,
                        " {} / {}{} {} |",
                        c.remote,
                        c.lost,
                        c.longest_silence_ms
                            .map_or(String::new(), |ms| format!(" (quiet {})", secs(Some(ms)))),
                        if c.pass { "✅" } else { "❌" }
                    );
                }
                None => out.push_str(" - |"),
            }
        }
        out.push('\n');
    }
    let failed: Vec<String> = r
        .steps
        .iter()
        .flat_map(|s| {
            s.judgements.iter().filter(|j| !j.pass).map(move |j| {
                format!(
                    "- **{} / {}**: {}: {}",
                    s.policy, s.event, j.requires, j.detail
                )
            })
        })
        .collect();
    if !failed.is_empty() {
        out.push_str("\n### Broken promises\n\n");
        for f in failed {
            let _ = writeln!(out, "{f}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(policy: Policy, event: Event, pass: bool) -> StepResult {
        StepResult {
            policy,
            event,
            title: format!(
                "{} with a very long node name node-with-a-long-name-1",
                event.title()
            ),
            victim: None,
            pass,
            judgements: vec![Judgement {
                check: "no-remote".into(),
                requires: "no span reaches another node's agent".into(),
                pass,
                detail: "expected only local spans, got 7 remote (a -> b: 7) ".repeat(8),
            }],
            spans_total: 1_234_567,
            local_spans: 1_234_560,
            remote_spans: 7,
            unattributed_spans: 0,
            attribution: Some(Attribution::Attribute),
            nodes: vec![NodeMeasurement {
                node: "node-with-a-long-name-1".into(),
                lost: 3,
                generator_failed: Some(3),
                failed_by_reason: (0..12)
                    .map(|i| (format!("reason_number_{i}"), 100_000))
                    .collect(),
                longest_silence_ms: event.is_rollout().then_some(12_345),
                ..Default::default()
            }],
            duration_seconds: 42.0,
        }
    }

    fn results(pass: bool) -> Results {
        let mut steps = Vec::new();
        for p in Policy::ALL {
            for e in Event::ALL {
                steps.push(step(p, e, pass || e != Event::Terminating));
            }
        }
        Results::new(
            "t0".into(),
            "ctx".into(),
            RecordedOptions::default(),
            steps,
            None,
            false,
        )
    }

    /// Every line of the final table and the detail fits 120 columns, even
    /// with long node names, many failure reasons and long failure messages.
    #[test]
    fn fits_120_columns() {
        for r in [results(true), results(false)] {
            for text in [table(&r), details(&r)] {
                for line in text.lines() {
                    assert!(
                        line.chars().count() <= WIDTH,
                        "{} columns: {line}",
                        line.chars().count()
                    );
                }
            }
        }
    }

    /// The matrix has one row per event and a cell per policy with remote,
    /// lost and the verdict; a broken promise is listed with its detail.
    #[test]
    fn matrix_and_broken_promises() {
        let r = results(false);
        let t = table(&r);
        assert_eq!(matrix_text(&r).lines().count(), 2 + Event::ALL.len());
        let row = t
            .lines()
            .find(|l| l.starts_with("local agent terminating"))
            .unwrap();
        assert_eq!(row.matches("FAIL").count(), 3, "{row}");
        assert!(row.contains("       7        3"), "{row}");
        assert!(t.contains("Broken promises:"));
        assert!(t.contains("local / terminating: no span reaches another node's agent"));
        assert!(!table(&results(true)).contains("Broken promises"));
    }

    /// Exit codes: 0 all as promised, 1 a promise broken, 2 aborted or
    /// nothing run; a dry run passes nothing.
    #[test]
    fn exit_codes() {
        assert_eq!(results(true).exit_code, EXIT_PASS);
        assert!(results(true).pass);
        assert_eq!(results(false).exit_code, EXIT_BROKEN);
        let o = RecordedOptions::default();
        let r = Results::new(
            "t".into(),
            "c".into(),
            o.clone(),
            vec![],
            Some("rollout timed out".into()),
            false,
        );
        assert_eq!(
            (r.exit_code, r.result.as_str()),
            (EXIT_SETUP, "aborted: rollout timed out")
        );
        let r = Results::new("t".into(), "c".into(), o.clone(), vec![], None, false);
        assert_eq!(r.exit_code, EXIT_SETUP);
        let r = Results::new("t".into(), "dry-run".into(), o, vec![], None, true);
        assert_eq!((r.exit_code, r.pass), (EXIT_PASS, false));
    }

    /// The JSON carries its schema and round-trips; the Markdown has the
    /// matrix and the broken promises.
    #[test]
    fn json_and_markdown() {
        let r = results(false);
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["schema"], RESULTS_SCHEMA);
        assert_eq!(v["steps"][0]["policy"], "local");
        assert_eq!(v["steps"][0]["event"], "all-up");
        assert_eq!(v["matrix"][1]["event"], "agent-removed");
        let back: Results = serde_json::from_value(v).unwrap();
        assert_eq!(back, r);
        let md = markdown(&r);
        assert!(
            md.contains("| local agent terminating | 7 / 3 ❌ |"),
            "{md}"
        );
        assert!(md.contains("### Broken promises"));
    }

    /// The results name the build that produced them (the commit of this
    /// checkout, put there by build.rs), in the JSON and both reports.
    #[test]
    fn results_name_their_build() {
        let r = results(true);
        assert_eq!(r.version, env!("CARGO_PKG_VERSION"));
        let built = match &r.commit {
            Some(c) => {
                assert_eq!(c, env!("TRACE_VERIFY_COMMIT"));
                assert!(
                    c.len() >= 7 && c.chars().all(|ch| ch.is_ascii_hexdigit()),
                    "{c}"
                );
                format!("trace-verify {} (commit {c})", r.version)
            }
            None => {
                assert_eq!(env!("TRACE_VERIFY_COMMIT"), "");
                format!("trace-verify {}", r.version)
            }
        };
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["version"], r.version.as_str());
        assert_eq!(v["commit"], serde_json::json!(r.commit));
        assert!(
            table(&r).starts_with(&format!("{built}, context ctx")),
            "{}",
            table(&r)
        );
        assert!(markdown(&r).contains(&format!("{built}, context `ctx`")));
    }

    /// A results file written before `version` and `commit` were added (the
    /// earlier lab matrix kept in verify/results/) still reads.
    #[test]
    fn older_results_files_read() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/results/lab-matrix-2026-12-06.json"
        );
        let text = std::fs::read_to_string(path).unwrap();
        assert!(
            !text.contains("\"commit\""),
            "no longer an older file: pick one without the field"
        );
        let r: Results = serde_json::from_str(&text).unwrap();
        assert_eq!((r.version.as_str(), r.commit), ("", None));
        assert_eq!(r.schema, RESULTS_SCHEMA);
        assert_eq!(r.matrix.len(), 21);
    }
}
