//! trace-gen: a node-tagging OTLP trace generator that keeps an honest account
//! of what it sent, what the endpoint accepted and what failed, and why.
//!
//! # Layout
//! Bottom up; a module imports only modules above it in this list.
//! - [`config`]: the generator's settings ([`GenConfig`], holding one
//!   [`config::ExporterSettings`]) and their validation.
//! - [`env`](mod@env): the standard `OTEL_*` environment variables, resolved into
//!   [`config::ExporterSettings`] with the specification's rules (flags win).
//! - [`failure`]: the failure reasons ([`failure::Reason`]), each with the one
//!   label used in `/stats`, `/metrics`, logs and docs/trace-gen.md.
//! - [`transport`]: OTLP/gRPC and OTLP/HTTP exporters over one TCP connector
//!   that tells DNS failures, refused connections and connect timeouts apart.
//! - [`counters`]: the live account, readable while the generator runs; its
//!   snapshot is the `/stats` JSON and the summary.
//! - [`run`]: [`Generator::run`] in three parts: pacing (rate without drift,
//!   bounded in-flight requests), sending with retries (reconnects, backoff),
//!   draining at stop.
//! - [`stats_server`]: `GET /stats`, `/metrics`, `/healthz`.
//!
//! # Embedding
//! ```no_run
//! # async fn demo() -> Result<(), trace_gen::config::ConfigError> {
//! let mut config = trace_gen::GenConfig::new("node-1");
//! config.exporter.endpoint = trace_gen::config::Endpoint::parse("http://127.0.0.1:4317")?;
//! config.count = Some(100);
//! let generator = trace_gen::Generator::new(config)?;
//! let live = generator.counters(); // readable while it runs
//! let summary = generator.run(std::future::pending()).await;
//! assert_eq!(summary.spans_sent, 100);
//! # let _ = live; Ok(()) }
//! ```
#![deny(missing_docs)]

pub mod config;
pub mod counters;
pub mod env;
pub mod failure;
pub mod run;
pub mod stats_server;
pub mod transport;

pub use config::GenConfig;
pub use run::Generator;
pub use trace_proto::stats::GeneratorReport;
