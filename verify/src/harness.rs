//! The harness: deploys, makes each event happen, measures each step, and
//! cleans up. The scenarios are data (the suite table in [`crate::suite`]),
//! what passes is the promise table ([`crate::promise`]); this module only
//! drives the cluster and prints progress.
//!
//! A step: the event's set-up (apply a variant, label a node, wait), a
//! settle time, a reset of the sink (the measuring window starts), the
//! window (for rollouts: the rollout itself, `/stats` polled every
//! `--poll`), then the sink's `/stats` and every generator's report.
//!
//! Clean-up, also after an error or Ctrl-C: the node labels it set are
//! removed; unless `--keep`, what the run created is deleted (namespaces that
//! existed before are never deleted, objects of ours that existed before are
//! restored to the base variant and kept).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::Value;
use trace_proto::stats::{Attribution, GeneratorReport};

use crate::cluster::{self, Cluster};
use crate::manifests::{self, Components, Manifests, describe, names};
use crate::measure::{SilenceTracker, attribution, exports_ended, measure_nodes};
use crate::promise::{Judgement, StepData, judge};
use crate::report::{RecordedOptions, Results, StepResult};
use crate::suite::{Event, Policy};

/// What a run is told to do (the flags, parsed).
#[derive(Debug, Clone)]
pub struct Options {
    /// The repository's deploy/ directory.
    pub deploy_dir: PathBuf,
    /// The kubectl that renders the manifests (`kubectl kustomize`).
    pub kubectl: PathBuf,
    /// Where the generated kustomizations go.
    pub work_dir: PathBuf,
    /// The kustomize components.
    pub components: Components,
    /// `--registry`.
    pub registry: Option<String>,
    /// `--tag`.
    pub tag: Option<String>,
    /// `--policy`.
    pub policies: Vec<Policy>,
    /// `--events`.
    pub events: Vec<Event>,
    /// `--window`: how long each step measures.
    pub window: Duration,
    /// `--settle`: wait after the agents changed, before the window.
    pub settle: Duration,
    /// `--timeout`: limit of each wait.
    pub timeout: Duration,
    /// `--poll`: interval of the waits and of `/stats` during rollouts.
    pub poll: Duration,
    /// `--reconnect-every` of the generators.
    pub reconnect_every: String,
    /// `--retries` of the generators.
    pub retries: u32,
    /// `--max-lost`.
    pub max_lost: Option<u64>,
    /// `--keep`.
    pub keep: bool,
    /// `--dry-run`.
    pub dry_run: bool,
    /// Wait until what was deleted is gone (off only where no controller
    /// finalizes namespaces, as in the tests' bare API server).
    pub wait_for_deletion: bool,
}

impl Options {
    /// The graceful shutdown of the terminating event: outlasts settle and window.
    pub fn drain_seconds(&self) -> i64 {
        (self.settle + self.window).as_secs() as i64 + 30
    }

    /// What the results record of these options.
    pub fn recorded(&self) -> RecordedOptions {
        RecordedOptions {
            policies: self.policies.clone(),
            events: self.events.clone(),
            istio: self.components.istio,
            peer_attribution: self.components.peer_attribution,
            window_seconds: self.window.as_secs(),
            settle_seconds: self.settle.as_secs(),
            max_lost: self.max_lost,
        }
    }
}

/// How long a step waits for the exports in flight at the end of its
/// window to end (a generator's retries take about 10 s against a dropped
/// connection with the lab's settings).
pub const RETRIES_BOUND: Duration = Duration::from_secs(60);

/// Why a run could not go on: a set-up error (exit 2).
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The manifests.
    #[error(transparent)]
    Manifests(#[from] manifests::ManifestError),
    /// The API server.
    #[error(transparent)]
    Cluster(#[from] cluster::Error),
    /// Something did not happen in time.
    #[error("gave up waiting until {0}")]
    Timeout(String),
    /// The cluster is not as the run needs it.
    #[error("{0}")]
    Unusable(String),
}

/// Progress lines on stderr: time since the start, step, what it does.
pub struct Progress {
    start: Instant,
    out: Box<dyn Write + Send>,
}

impl Progress {
    /// Progress to `out`.
    pub fn new(out: Box<dyn Write + Send>) -> Self {
        Progress {
            start: Instant::now(),
            out,
        }
    }

    /// One line.
    pub fn line(&mut self, text: impl AsRef<str>) {
        let t = self.start.elapsed().as_secs_f64();
        let _ = writeln!(self.out, "[verify {t:>6.1}s] {}", text.as_ref());
    }
}

/// Which agent configuration a step applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    Base,
    Broken,
    Draining,
    Rolling { surge: bool, mark: u32 },
}

/// A run in progress: what it rendered, created and labelled.
pub struct Harness {
    opts: Options,
    cluster: Option<Cluster>,
    /// The progress lines.
    pub progress: Progress,
    base: Manifests,
    broken: Manifests,
    existing_namespaces: Vec<String>,
    created: Vec<Value>,
    previously_deployed: bool,
    labelled: BTreeSet<String>,
    printed: Vec<Manifests>,
    dry_out: Box<dyn Write + Send>,
    agent_ns: String,
    sink_ns: String,
    gen_ns: String,
    gen_nodes: Vec<String>,
    /// The generator nodes that have an agent when a policy is deployed.
    served_nodes: Vec<String>,
    victim: Option<String>,
    /// The steps run so far.
    pub steps: Vec<StepResult>,
}

impl Harness {
    /// Renders the manifests and, with a cluster, finds what exists already.
    /// `cluster` is `None` only in a dry run; `dry_out` gets the plan.
    pub async fn prepare(
        opts: Options,
        cluster: Option<Cluster>,
        progress: Progress,
        dry_out: Box<dyn Write + Send>,
    ) -> Result<Harness, SetupError> {
        let mut h = Harness {
            base: manifests::render(
                &opts.kubectl,
                &opts.deploy_dir,
                "base",
                &opts.components,
                &opts.work_dir,
            )?,
            broken: manifests::render(
                &opts.kubectl,
                &opts.deploy_dir,
                "overlays/broken-agent",
                &opts.components,
                &opts.work_dir,
            )?,
            opts,
            cluster,
            progress,
            existing_namespaces: vec![],
            created: vec![],
            previously_deployed: false,
            labelled: BTreeSet::new(),
            printed: vec![],
            dry_out,
            agent_ns: String::new(),
            sink_ns: String::new(),
            gen_ns: String::new(),
            gen_nodes: vec![],
            served_nodes: vec![],
            victim: None,
            steps: vec![],
        };
        h.agent_ns = h.base.namespace_of("DaemonSet", names::AGENT)?;
        h.sink_ns = h.base.namespace_of("Deployment", names::SINK)?;
        h.gen_ns = h.base.namespace_of("DaemonSet", names::GENERATOR)?;
        h.progress.line(format!(
            "namespaces: agent {}, sink {}, generators {}",
            h.agent_ns, h.sink_ns, h.gen_ns
        ));
        let Some(c) = h.cluster.clone() else {
            h.progress
                .line("dry run: printing what would be applied, running nothing");
            return Ok(h);
        };
        if h.opts.components.istio && !c.istio_installed().await? {
            return Err(SetupError::Unusable(
                "--istio: Istio is not installed (no PeerAuthentication CRD)".into(),
            ));
        }
        for ns in h.base.namespaces() {
            if c.namespace_exists(&ns).await? {
                h.existing_namespaces.push(ns);
            }
        }
        if !h.existing_namespaces.is_empty() {
            h.progress.line(format!(
                "namespaces that exist already and stay untouched: {}",
                h.existing_namespaces.join(", ")
            ));
        }
        let plain = h.variant(Policy::Local, Shape::Base)?;
        let found = c.existing(&plain).await?;
        let foreign: Vec<String> = plain
            .objects
            .iter()
            .zip(&found)
            .filter(|(_, f)| matches!(f, Some(l) if l.as_deref() != Some(names::PART_OF_VALUE)))
            .map(|(o, _)| describe(o))
            .collect();
        if !foreign.is_empty() {
            return Err(SetupError::Unusable(format!(
                "these objects exist already and are not part of {}, refusing to touch them: {}",
                names::PART_OF_VALUE,
                foreign.join(", ")
            )));
        }
        h.previously_deployed = found.iter().any(Option::is_some);
        if h.previously_deployed {
            h.progress.line(
                "a deployment of trace-gen-sink exists already: it is restored and kept at the end",
            );
        }
        h.created = plain
            .objects
            .iter()
            .zip(&found)
            .filter(|(_, f)| f.is_none())
            .map(|(o, _)| o.clone())
            .collect();
        // ConfigMaps of other variants (broken, agent-stamps-nothing) have
        // other hashed names: they are created too.
        for o in &h.broken.objects {
            if o["kind"] == "ConfigMap"
                && plain
                    .find("ConfigMap", o["metadata"]["name"].as_str().unwrap_or(""))
                    .is_none()
            {
                h.created.push(o.clone());
            }
        }
        Ok(h)
    }

    /// The manifests of `shape` under `policy`, every typed patch applied.
    fn variant(&self, policy: Policy, shape: Shape) -> Result<Manifests, SetupError> {
        let mut m = if shape == Shape::Broken {
            self.broken.clone()
        } else {
            self.base.clone()
        };
        m.without_namespaces(&self.existing_namespaces);
        m.set_images(self.opts.registry.as_deref(), self.opts.tag.as_deref());
        m.set_policy(policy)?;
        m.set_generator_args(&self.opts.reconnect_every, self.opts.retries)?;
        match shape {
            Shape::Draining => m.set_agent_drain(self.opts.drain_seconds())?,
            Shape::Rolling { surge, mark } => {
                if surge {
                    m.set_agent_strategy("1", "0")?;
                } else {
                    m.set_agent_strategy("0", "1")?;
                }
                m.set_agent_rollout_mark(&format!("{mark}"))?;
            }
            Shape::Base | Shape::Broken => {}
        }
        Ok(m)
    }

    async fn apply(&mut self, what: &str, m: &Manifests) -> Result<(), SetupError> {
        let Some(c) = self.cluster.clone() else {
            if self.printed.contains(m) {
                let _ = writeln!(self.dry_out, "# {what}: apply (the same objects as before)");
            } else {
                let _ = writeln!(
                    self.dry_out,
                    "# {what}: apply (server-side, field manager {}):",
                    cluster::FIELD_MANAGER
                );
                let _ = write!(self.dry_out, "{}", m.to_yaml());
                self.printed.push(m.clone());
            }
            return Ok(());
        };
        self.progress
            .line(format!("{what}: applying {} objects", m.objects.len()));
        c.apply(m).await?;
        Ok(())
    }

    /// Polls `check` every `--poll` until it is true, at most `--timeout`.
    async fn wait_until<F, Fut>(&mut self, what: &str, mut check: F) -> Result<(), SetupError>
    where
        F: FnMut(Cluster) -> Fut,
        Fut: std::future::Future<Output = Result<bool, cluster::Error>>,
    {
        let Some(c) = self.cluster.clone() else {
            let _ = writeln!(self.dry_out, "# wait until {what}");
            return Ok(());
        };
        let start = Instant::now();
        self.progress.line(format!(
            "waiting until {what} (at most {}s)",
            self.opts.timeout.as_secs()
        ));
        loop {
            if check(c.clone()).await? {
                self.progress.line(format!(
                    "  {what}: after {:.1}s",
                    start.elapsed().as_secs_f64()
                ));
                return Ok(());
            }
            if start.elapsed() > self.opts.timeout {
                return Err(SetupError::Timeout(what.to_owned()));
            }
            tokio::time::sleep(self.opts.poll).await;
        }
    }

    async fn wait_rollouts(&mut self) -> Result<(), SetupError> {
        let (sink_ns, gen_ns) = (self.sink_ns.clone(), self.gen_ns.clone());
        self.wait_until("the sink's Deployment is rolled out", |c| {
            let ns = sink_ns.clone();
            async move { c.deployment_done(&ns, names::SINK).await }
        })
        .await?;
        self.wait_agents("the agent DaemonSet is rolled out")
            .await?;
        self.wait_until("the generator DaemonSet is rolled out", |c| {
            let ns = gen_ns.clone();
            async move { Ok(c.daemonset_state(&ns, names::GENERATOR).await?.0) }
        })
        .await
    }

    /// Waits until the agent DaemonSet is rolled out.
    async fn wait_agents(&mut self, what: &str) -> Result<(), SetupError> {
        let ns = self.agent_ns.clone();
        self.wait_until(what, move |c| {
            let ns = ns.clone();
            async move { Ok(c.daemonset_state(&ns, names::AGENT).await?.0) }
        })
        .await
    }

    /// Ends the terminating event's long drain: the usual configuration
    /// again, and every agent pod replaced at once (see
    /// [`Cluster::replace_agent_pods`]), outside any measuring window.
    async fn end_drain(&mut self, policy: Policy) -> Result<(), SetupError> {
        let m = self.variant(policy, Shape::Base)?;
        self.apply(
            &format!("{policy} / terminating: the usual graceful shutdown again"),
            &m,
        )
        .await?;
        let Some(c) = self.cluster.clone() else {
            let _ = writeln!(
                self.dry_out,
                "# delete every agent pod now (grace period 0): the DaemonSet replaces them"
            );
            return Ok(());
        };
        let n = c.replace_agent_pods(&self.agent_ns).await?;
        self.progress.line(format!(
            "  replaced {n} draining agent pods at once (grace period 0)"
        ));
        Ok(())
    }

    async fn label(&mut self, node: &str, on: bool) -> Result<(), SetupError> {
        let Some(c) = self.cluster.clone() else {
            let _ = writeln!(
                self.dry_out,
                "# label node {node} {}{}",
                names::NO_AGENT_LABEL,
                if on { "=true" } else { "-" }
            );
            return Ok(());
        };
        if on {
            self.labelled.insert(node.to_owned());
            c.label_node(node, names::NO_AGENT_LABEL, Some("true"))
                .await?;
        } else {
            c.label_node(node, names::NO_AGENT_LABEL, None).await?;
            self.labelled.remove(node);
        }
        Ok(())
    }

    async fn reports(&self) -> BTreeMap<String, GeneratorReport> {
        let mut out = BTreeMap::new();
        let Some(c) = &self.cluster else { return out };
        if let Ok(pods) = c.pods_by_node(&self.gen_ns, names::GENERATOR).await {
            for (node, pod) in pods {
                if let Ok(r) = c.generator_report(&self.gen_ns, &pod).await {
                    out.insert(node, r);
                }
            }
        }
        out
    }

    /// The generators' reports once every span they had sent by now has
    /// come to an end (accepted, or failed after its retries), so that the
    /// step's loss counts the exports in flight at the end of its window
    /// (an export to a dropped connection gives up only after its retries,
    /// about 10 s of connect timeouts and back-off). At most
    /// [`RETRIES_BOUND`]; a generator whose report cannot be read, or that
    /// restarted, is not waited for.
    async fn reports_after_retries(&mut self) -> BTreeMap<String, GeneratorReport> {
        let end = self.reports().await;
        let concluded = |now: &BTreeMap<String, GeneratorReport>| exports_ended(&end, now);
        if concluded(&end) {
            return end;
        }
        self.progress.line(format!(
            "  waiting until the exports of the window end (retries included; at most {}s)",
            RETRIES_BOUND.as_secs()
        ));
        let start = Instant::now();
        loop {
            tokio::time::sleep(self.opts.poll).await;
            let now = self.reports().await;
            if concluded(&now) || start.elapsed() >= RETRIES_BOUND {
                self.progress.line(format!(
                    "  {} after {:.1}s",
                    if concluded(&now) {
                        "the exports of the window ended"
                    } else {
                        "some exports of the window still go on"
                    },
                    start.elapsed().as_secs_f64()
                ));
                return now;
            }
        }
    }

    /// Runs every selected policy and event. Steps are added to `self.steps`
    /// as they finish, so an abort keeps the ones before it.
    pub async fn run_steps(&mut self) -> Result<(), SetupError> {
        let policies = self.opts.policies.clone();
        if let Some(&first) = policies.first() {
            self.sink_first(first).await?;
        }
        for policy in policies {
            let m = self.variant(policy, Shape::Base)?;
            if policy == Policy::Local {
                let (itp, td) = m.agent_service_policy();
                self.progress.line(format!(
                    "policy {policy}: the agent Service as shipped, internalTrafficPolicy: {itp}{}",
                    td.map(|t| format!(", trafficDistribution: {t}"))
                        .unwrap_or_default()
                ));
            } else {
                self.progress
                    .line(format!("policy {policy}: {}", policy.describe()));
            }
            self.apply(&format!("{policy}: deploy"), &m).await?;
            self.wait_rollouts().await?;
            self.find_nodes().await?;
            self.wait_pipeline().await?;
            for event in self.opts.events.clone() {
                self.run_event(policy, event).await?;
            }
        }
        Ok(())
    }

    async fn find_nodes(&mut self) -> Result<(), SetupError> {
        let Some(c) = self.cluster.clone() else {
            self.gen_nodes = vec!["NODE-1".into(), "NODE-2".into(), "NODE-3".into()];
            self.victim = Some("NODE-1".into());
            return Ok(());
        };
        let gens = c.pods_by_node(&self.gen_ns, names::GENERATOR).await?;
        let agents = c.pods_by_node(&self.agent_ns, names::AGENT).await?;
        if gens.is_empty() {
            return Err(SetupError::Unusable(format!(
                "no generator pod is running (are the images pullable? see the pods in {})",
                self.gen_ns
            )));
        }
        self.gen_nodes = gens.keys().cloned().collect();
        self.served_nodes = self
            .gen_nodes
            .iter()
            .filter(|n| agents.contains_key(*n))
            .cloned()
            .collect();
        for n in &self.gen_nodes {
            if !agents.contains_key(n) {
                self.progress.line(format!(
                    "warning: no agent on {n}: its generator cannot deliver"
                ));
            }
        }
        self.victim = self
            .gen_nodes
            .iter()
            .find(|n| agents.contains_key(*n))
            .cloned();
        self.progress.line(format!(
            "generator nodes: {}; the node singled out: {}",
            self.gen_nodes.join(", "),
            self.victim.as_deref().unwrap_or("none")
        ));
        Ok(())
    }

    /// The sink before anything that sends to it, and `--settle` for
    /// kube-proxy to program its Service. Seen in the lab when everything
    /// was applied at once: an agent dialled the sink's new Service before
    /// kube-proxy had its rules, the connection attempt hung until gRPC's
    /// 20 s dial timeout and gRPC backed off; the agents queued spans
    /// meanwhile, and that backlog trickled into the first windows for
    /// minutes (the collector's queue retries with back-off), its gaps
    /// counted as loss.
    async fn sink_first(&mut self, policy: Policy) -> Result<(), SetupError> {
        let m = self.variant(policy, Shape::Base)?.sink_part(&self.sink_ns);
        self.apply(&format!("{policy}: the sink first"), &m).await?;
        let ns = self.sink_ns.clone();
        self.wait_until("the sink's Deployment is rolled out", move |c| {
            let ns = ns.clone();
            async move { c.deployment_done(&ns, names::SINK).await }
        })
        .await?;
        if self.cluster.is_some() {
            self.progress.line(format!(
                "  letting kube-proxy program the sink's Service for {}s",
                self.opts.settle.as_secs()
            ));
            tokio::time::sleep(self.opts.settle).await;
        }
        Ok(())
    }

    /// Before a policy's first step: the sink hears from every generator
    /// node that has an agent, with no gap in their sequence numbers since
    /// its last reset, so that a first window does not measure a pipeline
    /// still starting. Seen in the lab: the agents dialled the sink's new
    /// Service before kube-proxy had its rules, that attempt timed out after
    /// 20 s and gRPC backed off; when the agents' queued spans then arrive
    /// among new ones, the gaps of what they dropped meanwhile would count
    /// as the first step's loss. Each time spans arrived with a gap, the sink
    /// is reset and the wait goes on. Not a measurement: the sink is reset
    /// again before every window.
    async fn wait_pipeline(&mut self) -> Result<(), SetupError> {
        if let Some(c) = &self.cluster {
            c.sink_reset(&self.sink_ns).await?;
        }
        let (ns, nodes) = (self.sink_ns.clone(), self.served_nodes.clone());
        self.wait_until(
            "the sink receives spans from every node with an agent, without gaps",
            move |c| {
                let (ns, nodes) = (ns.clone(), nodes.clone());
                async move {
                    let s = c.sink_stats(&ns).await?;
                    let heard = nodes.iter().all(|n| {
                        s.routes
                            .iter()
                            .any(|r| r.generator_node.as_deref() == Some(n.as_str()) && r.spans > 0)
                    });
                    if !heard {
                        return Ok(false);
                    }
                    if s.generators.iter().any(|g| g.missing > 0) {
                        c.sink_reset(&ns).await?;
                        return Ok(false);
                    }
                    Ok(true)
                }
            },
        )
        .await
    }

    async fn run_event(&mut self, policy: Policy, event: Event) -> Result<(), SetupError> {
        let started = Instant::now();
        self.progress
            .line(format!("{policy} / {event}: {}", event.title()));
        let victim = if event.has_victim() {
            self.victim.clone()
        } else {
            None
        };
        if event.has_victim() && victim.is_none() {
            return Err(SetupError::Unusable(
                "no node has both a generator and an agent".into(),
            ));
        }
        let mut pre: Vec<Judgement> = Vec::new();
        let agent_ns = self.agent_ns.clone();
        let title = match &victim {
            Some(v) => format!("{} {v}", event.title()),
            None => event.title().to_owned(),
        };
        let mut rollout: Option<Manifests> = None;
        match event {
            Event::AllUp => {}
            Event::Recovered => {
                let m = self.variant(policy, Shape::Base)?;
                self.apply(&format!("{policy} / {event}"), &m).await?;
                self.wait_rollouts().await?;
            }
            Event::AgentRemoved => {
                let v = victim.clone().unwrap_or_default();
                self.label(&v, true).await?;
                let ns = agent_ns.clone();
                let vv = v.clone();
                self.wait_until(&format!("no agent pod is left on {v}"), move |c| {
                    let (ns, vv) = (ns.clone(), vv.clone());
                    async move { Ok(!c.agent_pods(&ns).await?.iter().any(|p| p.node == vv)) }
                })
                .await?;
            }
            Event::CrashLoop => {
                let m = self.variant(policy, Shape::Broken)?;
                self.apply(&format!("{policy} / {event}"), &m).await?;
                let ns = agent_ns.clone();
                self.wait_until(
                    "every agent runs the broken configuration and none is ready",
                    move |c| {
                        let ns = ns.clone();
                        async move { Ok(c.daemonset_state(&ns, names::AGENT).await?.1) }
                    },
                )
                .await?;
            }
            Event::Terminating => {
                let m = self.variant(policy, Shape::Draining)?;
                self.apply(
                    &format!("{policy} / {event}: agents with a long graceful shutdown"),
                    &m,
                )
                .await?;
                self.wait_rollouts().await?;
                let v = victim.clone().unwrap_or_default();
                self.label(&v, true).await?;
                let (ns, vv) = (agent_ns.clone(), v.clone());
                self.wait_until(
                    &format!("the only endpoint on {v} is terminating and serving"),
                    move |c| {
                        let (ns, vv) = (ns.clone(), vv.clone());
                        async move {
                            Ok(only_terminating_serving(
                                &c.agent_endpoints(&ns).await?,
                                &vv,
                            ))
                        }
                    },
                )
                .await?;
            }
            Event::RollingMaxUnavailable | Event::RollingMaxSurge => {
                let surge = event == Event::RollingMaxSurge;
                let m = self.variant(policy, Shape::Rolling { surge, mark: 0 })?;
                self.apply(&format!("{policy} / {event}: the strategy"), &m)
                    .await?;
                self.wait_rollouts().await?;
                rollout = Some(self.variant(policy, Shape::Rolling { surge, mark: 1 })?);
            }
        }
        // The window.
        if self.cluster.is_some() {
            self.progress.line(format!(
                "  letting the routing settle for {}s",
                self.opts.settle.as_secs()
            ));
            tokio::time::sleep(self.opts.settle).await;
        }
        let before = self.reports().await;
        let silences = self.window(policy, event, rollout).await?;
        let Some(c) = self.cluster.clone() else {
            self.progress
                .line(format!("{policy} / {event}: dry run, nothing measured"));
            return self.after_event(policy, event, victim).await;
        };
        let stats = c.sink_stats(&self.sink_ns).await?;
        let after = self.reports_after_retries().await;
        let mut nodes = measure_nodes(&stats, &self.gen_nodes, &before, &after);
        if let Some(s) = &silences {
            for n in &mut nodes {
                n.longest_silence_ms = s.get(&n.node).copied();
            }
        }
        // The event's premise, checked at the end of the window.
        match event {
            Event::CrashLoop => {
                let pods = c.agent_pods(&agent_ns).await?;
                let ok = !pods.is_empty() && pods.iter().all(|p| p.restarts > 0 && !p.ready);
                let seen: Vec<String> = pods
                    .iter()
                    .map(|p| format!("{}={}/{}", p.node, p.restarts, p.ready))
                    .collect();
                pre.push(Judgement {
                    check: "precondition:crash-loop".into(),
                    requires: "every agent crash-looped (restarted, not ready)".into(),
                    pass: ok,
                    detail: format!("node=restarts/ready: {}", seen.join(" ")),
                });
            }
            Event::Terminating => {
                let v = victim.clone().unwrap_or_default();
                let eps = c.agent_endpoints(&agent_ns).await?;
                pre.push(Judgement {
                    check: "precondition:terminating".into(),
                    requires: format!("the only endpoint on {v} stayed terminating and serving"),
                    pass: only_terminating_serving(&eps, &v),
                    detail: format!(
                        "{:?}",
                        eps.iter().filter(|e| e.node == v).collect::<Vec<_>>()
                    ),
                });
            }
            _ => {}
        }
        let data = StepData {
            stats: &stats,
            nodes: &nodes,
            gen_nodes: &self.gen_nodes,
            victim: victim.as_deref(),
        };
        let mut judgements = pre;
        judgements.extend(judge(policy, event, &data, self.opts.max_lost));
        let attr = attribution(&stats);
        if self.opts.components.peer_attribution && stats.spans_total > 0 {
            judgements.push(Judgement {
                check: "attribution".into(),
                requires: "every agent node came from the peer (--peer-attribution)".into(),
                pass: attr == Some(Attribution::Peer),
                detail: format!("attribution {}", attr.map_or("-", Attribution::as_str)),
            });
        }
        let step = StepResult {
            policy,
            event,
            title,
            victim: victim.clone(),
            pass: judgements.iter().all(|j| j.pass),
            judgements,
            spans_total: stats.spans_total,
            local_spans: stats.local_spans,
            remote_spans: stats.remote_spans,
            unattributed_spans: stats.unattributed_spans,
            attribution: attr,
            nodes,
            duration_seconds: started.elapsed().as_secs_f64(),
        };
        self.progress.line(format!(
            "{policy} / {event}: {} in {:.0}s ({} spans, {} remote, {} lost)",
            if step.pass {
                "as promised"
            } else {
                "PROMISE BROKEN"
            },
            step.duration_seconds,
            step.spans_total,
            step.remote_spans,
            step.lost()
        ));
        self.steps.push(step);
        self.after_event(policy, event, victim).await
    }

    /// The measuring window: reset, then `--window` (or the rollout, polled).
    async fn window(
        &mut self,
        policy: Policy,
        event: Event,
        rollout: Option<Manifests>,
    ) -> Result<Option<BTreeMap<String, u64>>, SetupError> {
        let Some(c) = self.cluster.clone() else {
            let _ = writeln!(
                self.dry_out,
                "# POST {} ; measure {}s ; GET {}",
                Cluster::sink_path(&self.sink_ns, "reset"),
                self.opts.window.as_secs(),
                Cluster::sink_path(&self.sink_ns, "stats")
            );
            if let Some(m) = rollout {
                self.apply(&format!("{policy} / {event}: the rollout"), &m)
                    .await?;
            }
            return Ok(None);
        };
        c.sink_reset(&self.sink_ns).await?;
        let start = Instant::now();
        let Some(m) = rollout else {
            self.progress
                .line(format!("  measuring for {}s", self.opts.window.as_secs()));
            tokio::time::sleep(self.opts.window).await;
            return Ok(None);
        };
        let ms = |t: Instant| t.duration_since(start).as_millis() as u64;
        let mut tracker = SilenceTracker::new(&self.gen_nodes, 0);
        self.apply(&format!("{policy} / {event}: the rollout"), &m)
            .await?;
        self.progress.line(format!(
            "  polling /stats every {:.1}s until the rollout is done",
            self.opts.poll.as_secs_f64()
        ));
        let mut done_at: Option<Instant> = None;
        loop {
            tokio::time::sleep(self.opts.poll).await;
            let now = Instant::now();
            if let Ok(s) = c.sink_stats(&self.sink_ns).await {
                tracker.observe(ms(now), &s);
            }
            if done_at.is_none() && c.daemonset_state(&self.agent_ns, names::AGENT).await?.0 {
                self.progress.line(format!(
                    "  rollout done after {:.1}s",
                    start.elapsed().as_secs_f64()
                ));
                done_at = Some(now);
            }
            if let Some(d) = done_at {
                if now.duration_since(d) >= self.opts.settle && start.elapsed() >= self.opts.window
                {
                    return Ok(Some(tracker.finish(ms(now))));
                }
            } else if start.elapsed() > self.opts.timeout {
                return Err(SetupError::Timeout("the agent rollout is done".into()));
            }
        }
    }

    /// Undoes what the event did to the nodes.
    async fn after_event(
        &mut self,
        policy: Policy,
        event: Event,
        victim: Option<String>,
    ) -> Result<(), SetupError> {
        if event == Event::Terminating {
            self.end_drain(policy).await?;
        }
        if let (true, Some(v)) = (event.has_victim(), victim) {
            self.label(&v, false).await?;
            // The DaemonSet's status still counts the nodes of before the label
            // went (a label is no spec change: observedGeneration stays), so it
            // reads "rolled out" at once; wait for the agent on that node itself.
            let ns = self.agent_ns.clone();
            let vv = v.clone();
            self.wait_until(&format!("the agent on {v} is back and ready"), move |c| {
                let (ns, vv) = (ns.clone(), vv.clone());
                async move {
                    Ok(c.agent_pods(&ns)
                        .await?
                        .iter()
                        .any(|p| p.node == vv && p.ready && !p.terminating))
                }
            })
            .await?;
            if event == Event::Terminating {
                // Every agent was just replaced: the DaemonSet's status may
                // still read "rolled out"; wait for the pods themselves.
                let (ns, nodes) = (self.agent_ns.clone(), self.gen_nodes.clone());
                self.wait_until("every node's new agent is ready", move |c| {
                    let (ns, nodes) = (ns.clone(), nodes.clone());
                    async move {
                        let pods = c.agent_pods(&ns).await?;
                        Ok(nodes.iter().all(|n| {
                            pods.iter()
                                .any(|p| &p.node == n && p.ready && !p.terminating)
                        }))
                    }
                })
                .await?;
            }
            self.wait_agents("the agent DaemonSet is rolled out again")
                .await?;
        }
        Ok(())
    }

    /// Removes the node labels and, unless `--keep`, deletes what the run
    /// created (or restores a deployment that was there before). Errors are
    /// printed, not returned: clean-up goes as far as it can.
    pub async fn cleanup(&mut self) {
        let labelled: Vec<String> = self.labelled.iter().cloned().collect();
        for n in labelled {
            self.progress.line(format!(
                "clean-up: removing the label {} from {n}",
                names::NO_AGENT_LABEL
            ));
            if let Err(e) = self.label(&n, false).await {
                self.progress.line(format!("clean-up: {e}"));
            }
        }
        if self.opts.keep {
            self.progress
                .line("--keep: leaving the deployment as the last step left it");
            return;
        }
        let Some(c) = self.cluster.clone() else {
            let _ = writeln!(self.dry_out, "# clean-up: delete what the run created");
            return;
        };
        if self.previously_deployed {
            self.progress
                .line("clean-up: restoring the deployment that was there before");
            if let Err(e) = c.apply(&self.plain_base()).await {
                self.progress.line(format!("clean-up: {e}"));
            }
        }
        // Namespaced objects first, then namespaces and cluster-scoped ones.
        let mut order: Vec<Value> = self
            .created
            .iter()
            .filter(|o| o["kind"] != "Namespace")
            .cloned()
            .collect();
        order.reverse();
        order.extend(
            self.created
                .iter()
                .filter(|o| o["kind"] == "Namespace")
                .cloned(),
        );
        self.progress.line(format!(
            "clean-up: deleting the {} objects this run created",
            order.len()
        ));
        for o in &order {
            if let Err(e) = c.delete(o).await {
                self.progress.line(format!("clean-up: {e}"));
            }
        }
        if self.opts.wait_for_deletion {
            let start = Instant::now();
            for o in &order {
                loop {
                    match c.gone(o, false).await {
                        Ok(true) => break,
                        Ok(false) if start.elapsed() < self.opts.timeout => {
                            tokio::time::sleep(self.opts.poll).await
                        }
                        Ok(false) => {
                            self.progress.line(format!(
                                "clean-up: {} is not gone after {}s",
                                describe(o),
                                self.opts.timeout.as_secs()
                            ));
                            break;
                        }
                        Err(e) => {
                            self.progress.line(format!("clean-up: {e}"));
                            break;
                        }
                    }
                }
            }
        }
        self.created.clear();
    }

    /// The base as shipped (images and existing namespaces of this run only).
    fn plain_base(&self) -> Manifests {
        let mut m = self.base.clone();
        m.without_namespaces(&self.existing_namespaces);
        m.set_images(self.opts.registry.as_deref(), self.opts.tag.as_deref());
        m
    }

    /// The manifests of the base shape under `policy`, every typed patch applied.
    pub fn deployment(&self, policy: Policy) -> Result<Manifests, SetupError> {
        self.variant(policy, Shape::Base)
    }

    /// Applies [`Harness::deployment`] without waiting for the rollouts.
    pub async fn deploy(&mut self, policy: Policy) -> Result<(), SetupError> {
        let m = self.variant(policy, Shape::Base)?;
        self.apply(&format!("{policy}: deploy"), &m).await
    }

    /// The objects this run created so far (what clean-up deletes).
    pub fn created(&self) -> &[Value] {
        &self.created
    }

    /// The nodes this run labelled and has not unlabelled yet.
    pub fn labelled(&self) -> Vec<String> {
        self.labelled.iter().cloned().collect()
    }

    /// Labels `node` as the agent-removed event does (tests).
    pub async fn remove_agent_from(&mut self, node: &str) -> Result<(), SetupError> {
        self.label(node, true).await
    }
}

/// The node's only endpoint is terminating and still serving.
fn only_terminating_serving(eps: &[cluster::AgentEndpoint], node: &str) -> bool {
    let on: Vec<&cluster::AgentEndpoint> = eps.iter().filter(|e| e.node == node).collect();
    on.len() == 1 && !on[0].ready && on[0].serving && on[0].terminating
}

/// Runs everything: prepare, the steps (until done, an error or `cancel`),
/// clean-up, results. Never panics on the cluster's answers.
pub async fn run(
    opts: Options,
    cluster: Option<Cluster>,
    context: String,
    progress: Progress,
    dry_out: Box<dyn Write + Send>,
    cancel: impl std::future::Future<Output = ()>,
) -> Results {
    let started = trace_proto::stats::rfc3339(std::time::SystemTime::now());
    let recorded = opts.recorded();
    let dry_run = opts.dry_run;
    let mut h = match Harness::prepare(opts, cluster, progress, dry_out).await {
        Ok(h) => h,
        Err(e) => {
            eprintln!("trace-verify: {e}");
            return Results::new(
                started,
                context,
                recorded,
                vec![],
                Some(e.to_string()),
                dry_run,
            );
        }
    };
    let aborted = tokio::select! {
        r = h.run_steps() => r.err().map(|e| e.to_string()),
        _ = cancel => Some("interrupted".to_owned()),
    };
    if let Some(why) = &aborted {
        h.progress.line(format!("ABORTED: {why}"));
    }
    h.cleanup().await;
    let steps = std::mem::take(&mut h.steps);
    Results::new(started, context, recorded, steps, aborted, dry_run)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::AgentEndpoint;

    fn ep(node: &str, ready: bool, serving: bool, terminating: bool) -> AgentEndpoint {
        AgentEndpoint {
            node: node.into(),
            ready,
            serving,
            terminating,
        }
    }

    /// The terminating event's premise: the node's only endpoint is
    /// terminating and serving; a second (new, ready) one there, a
    /// non-serving one, or none at all break it.
    #[test]
    fn only_terminating_serving_endpoint() {
        let other = ep("b", true, true, false);
        assert!(only_terminating_serving(
            &[ep("a", false, true, true), other.clone()],
            "a"
        ));
        assert!(!only_terminating_serving(
            &[ep("a", false, true, true), ep("a", true, true, false)],
            "a"
        ));
        assert!(!only_terminating_serving(
            &[ep("a", false, false, true)],
            "a"
        ));
        assert!(!only_terminating_serving(&[other], "a"));
    }

    /// The drain outlasts the settle time and the window.
    #[test]
    fn drain_outlasts_the_window() {
        let o = Options {
            deploy_dir: PathBuf::new(),
            kubectl: PathBuf::new(),
            work_dir: PathBuf::new(),
            components: Components::default(),
            registry: None,
            tag: None,
            policies: vec![],
            events: vec![],
            window: Duration::from_secs(20),
            settle: Duration::from_secs(3),
            timeout: Duration::from_secs(1),
            poll: Duration::from_secs(1),
            reconnect_every: "2s".into(),
            retries: 3,
            max_lost: None,
            keep: false,
            dry_run: true,
            wait_for_deletion: false,
        };
        assert_eq!(o.drain_seconds(), 53);
    }
}
