//! The shared contract between trace-gen and trace-sink.
//!
//! Both binaries, and any Rust test suite that embeds them, use this crate so
//! that an attribute key, a JSON field or a check condition is spelled once.
//!
//! # Layout
//! - [`keys`]: the attribute keys of the contract (`k8s.node.name`, `agent.node.name`, ...).
//! - [`otlp`]: re-exports of the OTLP types and small helpers to read and write attributes.
//! - [`span`]: building the spans and requests trace-gen sends.
//! - [`attribution`]: turning one export request into a per-request summary (routes,
//!   generators, sequence numbers) that the sink merges under one lock.
//! - [`stats`]: the versioned `/stats` JSON of trace-sink and trace-gen.
//! - [`check`]: the conditions behind `/check` and `trace-sink check`.
//! - [`wire`]: the lean request types the sink decodes, and the element count checked first.
//! - `cli` (feature `cli`): logging and the shutdown signal of both binaries.
//! - [`seqset`]: an interval set of sequence numbers whose memory grows with the gaps.
#![deny(missing_docs)]

pub mod attribution;
pub mod check;
#[cfg(feature = "cli")]
pub mod cli;
pub mod keys;
pub mod otlp;
pub mod seqset;
pub mod span;
pub mod stats;
pub mod wire;
