//! trace-verify: the cluster verification of node-local telemetry routing.
//!
//! It deploys the agent under test, trace-sink and one trace-gen per node
//! (deploy/), puts the agent Service under each policy, makes each event
//! happen to the agents, measures what every node's spans did, and judges
//! the result against what the policy promises. Built like cilium-cli's
//! connectivity test: a harness, scenarios as data, a suite table and a
//! promise table.
//!
//! # Layout
//! - [`suite`]: the policies and events of the matrix (the suite table).
//! - [`promise`]: what each policy promises in each event, and the judging.
//! - [`measure`]: per step and node: local / remote / lost / duplicated spans,
//!   generator failures, the longest silence during a rollout.
//! - [`cluster`]: the API server calls (apply, delete, labels, rollouts, the proxies).
//! - [`harness`]: deploy, make each event happen, measure each step, clean up.
//! - [`manifests`]: `kubectl kustomize` output read as YAML, varied by typed patches.
//! - [`report`]: the results JSON, the final table and the Markdown report.
//!
//! Nothing in these modules talks to a cluster: they are fed the typed
//! documents of trace-proto (`SinkStats`, `GeneratorReport`).
#![deny(missing_docs)]

pub mod cluster;
pub mod harness;
pub mod manifests;
pub mod measure;
pub mod promise;
pub mod report;
pub mod suite;
