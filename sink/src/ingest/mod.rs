//! The one ingest path of the sink: bytes of one export request in, counted
//! spans out. Both receivers call [`Ingest::export`] after undoing their
//! transport framing (gRPC frames, HTTP bodies, gzip); they only map the typed
//! result to a status code.
//!
//! Per request, in order, and without any lock until the last step:
//! 1. protobuf (gRPC and OTLP/HTTP): [`scan::scan`] counts the elements
//!    against `--max-request-elements` and groups the spans by origin
//!    (generator node, agent node, generator id) in one pass over the bytes,
//!    borrowing from them, allocating nothing per span;
//! 2. OTLP/JSON: [`wire::count_json_objects`] bounds the elements before
//!    anything is decoded, then the body decodes into the lean
//!    [`wire::TraceRequest`] (only what attribution reads) and
//!    [`attribution::attribute`] groups its spans by origin;
//! 3. with `--k8s-attribution`, the peer address is looked up
//!    ([`attribution::PeerLookup`]);
//! 4. [`accounting::Accounting::ingest`]: combine each origin's agent-node
//!    attribute with the peer's node ([`attribution::agent_node`]), sort
//!    sequence numbers into runs, then merge under the one lock.
//!
//! Signal seam: [`Ingest::export`] is generic over a [`Signal`], which names
//! the things that know the request is a *trace* export: its lean type
//! ([`wire::TraceRequest`]) and attribution for JSON, its one-pass scan for
//! protobuf.
//! [`accounting`] sees origins and item counts only. OTLP logs would be a
//! sibling `logs` module with a `Logs` signal, feeding the same accounting.
//!
//! How the paths are tested: the tests' reference (`sink/tests/reference/`)
//! decodes protobuf into [`wire::TraceRequest`] with prost after counting its
//! elements (the path the scan replaced), and `sink/tests/scan.rs`,
//! `sink/tests/differential.rs` and the fuzz targets hold [`Ingest::scan`] to
//! it, and both paths to the full `opentelemetry-proto` types.

pub mod accounting;
pub mod attribution;
pub mod scan;
pub mod seqset;
pub mod view;
pub mod wire;

use std::net::SocketAddr;

use trace_proto::protocol::Protocol;
use trace_proto::stats::SinkStats;

use crate::k8s::PodResolver;
use crate::metrics::Metrics;
use crate::outcome::{Outcome, Via};
use accounting::Accounting;
use attribution::{AttributionKeys, PeerLookup, RequestSummary};
use wire::{TraceRequest, count_json_objects};

/// One OTLP signal as the ingest path sees it.
pub trait Signal {
    /// The lean request type: decodes from the signal's OTLP/JSON, keeping
    /// only what attribution reads.
    type Request: serde::de::DeserializeOwned;
    /// Counts the elements of a protobuf request, failing beyond `limit`,
    /// and groups its items by origin, in one pass and borrowing from it.
    fn scan<'a>(
        protobuf: &'a [u8],
        keys: &AttributionKeys,
        limit: u64,
    ) -> Result<RequestSummary<'a>, scan::Refused>;
    /// Groups the items of a decoded (OTLP/JSON) request by origin.
    fn attribute<'a>(req: &'a Self::Request, keys: &AttributionKeys) -> RequestSummary<'a>;
}

/// OTLP traces (`ExportTraceServiceRequest`).
#[derive(Debug, Clone, Copy)]
pub enum Traces {}

impl Signal for Traces {
    type Request = TraceRequest;
    fn scan<'a>(
        protobuf: &'a [u8],
        keys: &AttributionKeys,
        limit: u64,
    ) -> Result<RequestSummary<'a>, scan::Refused> {
        scan::scan(protobuf, keys, limit)
    }
    fn attribute<'a>(req: &'a TraceRequest, keys: &AttributionKeys) -> RequestSummary<'a> {
        attribution::attribute(req, keys)
    }
}

/// Why a request was refused. Nothing of it was counted as spans.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Rejected {
    /// What it is counted under ([`Outcome::BadRequest`] or [`Outcome::TooLarge`]).
    pub outcome: Outcome,
    /// One line for the client.
    pub message: String,
}

impl Rejected {
    fn bad(message: impl Into<String>) -> Self {
        Rejected {
            outcome: Outcome::BadRequest,
            message: message.into(),
        }
    }
}

/// A request that was accepted and counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Accepted {
    /// Spans it carried.
    pub spans: u64,
}

/// Decoding limits, attribution keys and the accounting they feed.
#[derive(Debug)]
pub struct Ingest {
    keys: AttributionKeys,
    max_elements: u64,
    accounting: Accounting,
    /// The Pod resolver of `--k8s-attribution`.
    pods: Option<PodResolver>,
}

impl Ingest {
    /// An empty account; `max_series` caps every table (see [`Accounting`]).
    /// With `pods`, each request's agent node also comes from the Pod at its
    /// peer address (`--k8s-attribution`).
    pub fn new(
        keys: AttributionKeys,
        max_elements: u64,
        max_series: usize,
        max_gaps: usize,
        max_total_gaps: usize,
        metrics: std::sync::Arc<Metrics>,
        pods: Option<PodResolver>,
    ) -> Self {
        Ingest {
            keys,
            max_elements,
            accounting: Accounting::new(
                max_series,
                max_gaps,
                max_total_gaps,
                pods.is_some(),
                metrics,
            ),
            pods,
        }
    }

    /// The Pod resolver, if `--k8s-attribution` is on.
    pub fn pods(&self) -> Option<&PodResolver> {
        self.pods.as_ref()
    }

    /// The one entry point: counts, decodes, attributes and merges one export
    /// request of signal `S` (`body` is the uncompressed protobuf or OTLP/JSON message, as
    /// `protocol` says), delivered by `peer`. A rejected request is not counted
    /// here: the receiver counts it with [`Ingest::reject`] after mapping it.
    pub fn export<S: Signal>(
        &self,
        body: &[u8],
        protocol: Protocol,
        peer: Option<SocketAddr>,
    ) -> Result<Accepted, Rejected> {
        let json: S::Request;
        let summary = match protocol {
            Protocol::Grpc | Protocol::HttpProtobuf => self.scan::<S>(body)?,
            Protocol::HttpJson => {
                json = self.decode_json::<S>(body)?;
                S::attribute(&json, &self.keys)
            }
        };
        let spans = summary.spans;
        let lookup = PeerLookup::of(self.pods.as_ref(), peer);
        self.accounting
            .ingest(summary, peer, &lookup, Via::Otlp(protocol));
        Ok(Accepted { spans })
    }

    fn too_many(&self) -> Rejected {
        Rejected {
            outcome: Outcome::TooLarge,
            message: format!(
                "request carries more than {} elements (spans and attributes); limit --max-request-elements",
                self.max_elements
            ),
        }
    }

    /// Step 2 of [`Ingest::export`] for an OTLP/JSON body: the element
    /// bound, then the lean decode, nothing counted. Public for the
    /// differential test and the fuzz targets, which hold it to the full
    /// `opentelemetry-proto` types.
    pub fn decode_json<S: Signal>(&self, body: &[u8]) -> Result<S::Request, Rejected> {
        if count_json_objects(body) > self.max_elements {
            Err(self.too_many())
        } else if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            Err(Rejected::bad(
                "invalid OTLP/JSON body: expected a JSON object",
            ))
        } else {
            serde_json::from_slice::<S::Request>(body)
                .map_err(|e| Rejected::bad(format!("invalid OTLP/JSON body: {e}")))
        }
    }

    /// Step 1 of [`Ingest::export`] for a protobuf body: the one-pass scan,
    /// nothing counted. Public for `sink/tests/scan.rs`, the differential test
    /// and the fuzz targets, which hold it to the tests' reference: count,
    /// decode with prost, then attribute.
    pub fn scan<'a, S: Signal>(&self, body: &'a [u8]) -> Result<RequestSummary<'a>, Rejected> {
        S::scan(body, &self.keys, self.max_elements).map_err(|r| match r {
            scan::Refused::TooMany => self.too_many(),
            scan::Refused::Malformed(why) => {
                Rejected::bad(format!("invalid OTLP protobuf message: {why}"))
            }
        })
    }

    /// Attribution of a decoded request with this ingest's keys (what
    /// [`Ingest::export`] does after decoding OTLP/JSON).
    pub fn attribute<'a, S: Signal>(&self, req: &'a S::Request) -> RequestSummary<'a> {
        S::attribute(req, &self.keys)
    }

    /// Counts a request a receiver refused (its own transport checks, or a
    /// [`Rejected`] from [`Ingest::export`]).
    pub fn reject(&self, via: impl Into<Via>, outcome: Outcome) {
        self.accounting.reject(via.into(), outcome);
    }

    /// `GET /stats` as JSON bytes: the [`SinkStats`] document, or with
    /// `summary` its totals only: without the per-series tables `routes`,
    /// `agents` and `generators` (left out, so that "omitted" is never read as
    /// "none"), and with `"summary": true` ([`SinkStats::summary`]).
    ///
    /// The accounting lock is held only to copy the numbers
    /// ([`Accounting::view`]); the document is written after it is released,
    /// straight from that copy ([`view::StatsView::to_json`]: the bytes serde
    /// gives for the [`SinkStats`] of [`Ingest::snapshot`]).
    pub fn stats_json(&self, summary: bool) -> Vec<u8> {
        self.view(!summary).to_json()
    }

    /// The current numbers.
    pub fn snapshot(&self) -> SinkStats {
        self.view(true).to_stats()
    }

    /// The current numbers as copied under the accounting lock, the API's
    /// state filled in: what [`Ingest::snapshot`] and [`Ingest::stats_json`]
    /// are made from.
    pub fn view(&self, tables: bool) -> view::StatsView {
        let mut view = self.accounting.view(tables);
        self.with_api_state(&mut view);
        view
    }

    /// Zeroes everything and returns the numbers as they were just before.
    pub fn reset(&self) -> SinkStats {
        self.reset_view().to_stats()
    }

    /// `POST /reset`: zeroes everything and returns the JSON of the numbers
    /// as they were just before (the document of [`Ingest::stats_json`]).
    pub fn reset_json(&self) -> Vec<u8> {
        self.reset_view().to_json()
    }

    fn reset_view(&self) -> view::StatsView {
        let mut view = self.accounting.reset();
        self.with_api_state(&mut view);
        view
    }

    fn with_api_state(&self, view: &mut view::StatsView) {
        if let (Some(pods), Some(k)) = (&self.pods, view.kubernetes_mut()) {
            let st = pods.status();
            k.api = st.state.as_str().to_owned();
            k.api_since = trace_proto::stats::rfc3339(st.since);
            k.last_error = st.last_error;
            k.pods = st.pods as u64;
            k.max_pods = st.max_pods as u64;
            k.over_capacity = st.over_capacity;
        }
    }
}
