//! The shared contract between trace-gen and trace-sink.
//!
//! Both binaries, and any Rust test suite that embeds them, use this crate so
//! that an attribute key, a JSON field or a check condition is spelled once.
//!
//! # Layout
//! - [`keys`]: the attribute keys of the contract (`k8s.node.name`, `agent.node.name`, ...).
//! - [`otlp`]: re-exports of the OTLP types and small helpers to read and write attributes.
//! - [`span`]: building the spans and requests trace-gen sends.
//! - [`protocol`]: the one [`protocol::Protocol`] enum, with the specification's
//!   spelling (`http/protobuf`) and trace-sink's label (`http_protobuf`).
//! - [`outcome`]: how a request to trace-sink ended ([`outcome::Outcome`]) and what
//!   it is counted under ([`outcome::Via`]): the keys of `/stats` `requests`.
//! - [`stats`]: the versioned `/stats` JSON of trace-sink and trace-gen.
//! - [`check`]: the conditions behind `/check` and `trace-sink check`.
//! - [`json`]: the one proto3 JSON int64 reader ([`json::Int64`]) of both binaries.
//! - [`error`]: printing an error with its causes, one way for both crates.
//! - `cli` (feature `cli`): logging, the shutdown signal and URL flags of both binaries.
//!
//! What only the sink reads (lean decoding, attribution, sequence sets) lives in
//! trace-sink's `ingest` module, not here.
#![deny(missing_docs)]

pub mod check;
#[cfg(feature = "cli")]
pub mod cli;
pub mod error;
pub mod json;
pub mod keys;
mod label;
pub mod otlp;
pub mod outcome;
pub mod protocol;
pub mod span;
pub mod stats;
