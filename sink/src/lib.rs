//! trace-sink: an OTLP trace sink that attributes every span to the node that
//! generated it and the node whose agent forwarded it, finds lost and duplicated
//! spans from trace-gen's sequence numbers, and answers assertions over HTTP.
//!
//! # Layout
//! - [`config`]: the sink's settings (limits, attribute keys, API token).
//! - [`stats`]: the accounting: routes, agents, generators, request outcomes; one
//!   lock taken once per request.
//! - [`metrics`]: the Prometheus registry behind `GET /metrics`.
//! - [`receiver`]: OTLP/gRPC ([`receiver::grpc`]) and OTLP/HTTP ([`receiver::http`]).
//! - [`api`]: the HTTP API: `/stats`, `/reset`, `/check`, `/metrics`, `/healthz`, `/readyz`.
//! - [`k8s`]: Kubernetes attribution: a Pod watch that resolves peer IPs to Pods and nodes.
//! - [`check`]: the polling `trace-sink check` command, for scripts and test suites.
//! - [`server`]: [`SinkBuilder`] serves on caller-supplied listeners and returns a
//!   [`SinkHandle`] (bound addresses, `stats()`, `reset()`, `shutdown()`).
//!
//! # Embedding
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use tokio::net::TcpListener;
//! let sink = trace_sink::SinkBuilder::new(trace_sink::SinkConfig::default())
//!     .grpc(TcpListener::bind("127.0.0.1:0").await?)
//!     .http(TcpListener::bind("127.0.0.1:0").await?)
//!     .api(TcpListener::bind("127.0.0.1:0").await?)
//!     .start()?;
//! println!("OTLP/gRPC on {}", sink.grpc_addr().unwrap());
//! let stats = sink.stats();
//! assert_eq!(stats.spans_total, 0);
//! sink.shutdown().await;
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

pub mod api;
pub mod check;
pub mod config;
pub mod k8s;
pub mod metrics;
pub mod receiver;
pub mod server;
pub mod stats;

pub use config::SinkConfig;
pub use server::{SinkBuilder, SinkHandle};
pub use trace_proto::stats::SinkStats;
