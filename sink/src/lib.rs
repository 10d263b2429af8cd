//! trace-sink: an OTLP trace sink that attributes every span to the node that
//! generated it and the node whose agent forwarded it, finds lost and duplicated
//! spans from trace-gen's sequence numbers, and answers assertions over HTTP.
//!
//! # Layout
//! Bottom up; a module imports only modules above it in this list.
//! - [`outcome`]: request outcomes ([`outcome::Outcome`]) and what they are
//!   counted under ([`outcome::Via`]), each with its one label.
//! - [`k8s`]: Kubernetes attribution: a Pod watch ([`k8s::watch`]) that resolves
//!   peer IPs to Pod, namespace and node ([`k8s::PodResolver`]).
//! - [`metrics`]: the Prometheus registry behind `GET /metrics`.
//! - [`ingest`]: the one ingest path, [`ingest::Ingest::export`]: the one-pass
//!   protobuf scan ([`ingest::scan`]), element count and lean decoding of
//!   OTLP/JSON ([`ingest::wire`]), attribution ([`ingest::attribution`]),
//!   sequence sets ([`ingest::seqset`]) and the accounting
//!   ([`ingest::accounting`], one lock taken once per request).
//! - [`config`]: the sink's settings (limits, attribute keys, API token).
//! - [`budget`]: the byte budget of request bodies held in memory, charged as
//!   bytes arrive.
//! - [`state`]: [`state::Shared`], what the receivers and the API share.
//! - [`net`]: accepting connections under a cap (`TCP_NODELAY`, idle
//!   timeout) and serving them with bounded HTTP/1 heads and HTTP/2 streams.
//! - [`receiver`]: transport adapters, OTLP/gRPC ([`receiver::grpc`]) and
//!   OTLP/HTTP ([`receiver::http`]): undo framing, call ingest, map the result.
//! - [`page`]: the route matrix page at `/` (one HTML file, inline CSS and JS)
//!   and its Content-Security-Policy.
//! - [`api`]: the HTTP API: `/`, `/stats`, `/reset`, `/check`, `/metrics`, `/healthz`, `/readyz`.
//! - [`server`]: [`SinkBuilder`] serves on caller-supplied listeners and returns a
//!   [`SinkHandle`] (bound addresses, `stats()`, `reset()`, `shutdown()`).
//! - [`check`]: the polling `trace-sink check` command, for scripts and test suites.
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
pub mod budget;
pub mod check;
pub mod config;
pub mod ingest;
pub mod k8s;
pub mod metrics;
pub mod net;
pub mod outcome;
pub mod page;
pub mod receiver;
pub mod server;
pub mod state;

pub use config::SinkConfig;
pub use server::{SinkBuilder, SinkHandle};
pub use trace_proto::stats::SinkStats;
