//! The state one sink shares between its receivers, its API and its handle
//! (as mini-redis keeps its `Db` in a module of its own): everything here is
//! created once by [`crate::SinkBuilder::start`] and lives as long as the sink.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use tokio::sync::Semaphore;

use crate::budget::Budget;
use crate::config::SinkConfig;
use crate::ingest::Ingest;
use crate::metrics::Metrics;

/// State shared by the receivers and the API.
#[derive(Debug)]
pub struct Shared {
    /// Settings.
    pub config: SinkConfig,
    /// The ingest path and the accounting it feeds.
    pub ingest: Ingest,
    /// Prometheus registry.
    pub metrics: Arc<Metrics>,
    /// True while the receivers serve.
    pub ready: AtomicBool,
    /// Requests being decoded at once, both receivers together (`--max-concurrent-requests`).
    pub request_slots: Arc<Semaphore>,
    /// Bytes of request bodies held at once (`--max-buffered-bytes`).
    pub budget: Arc<Budget>,
    /// Large API answers (`/stats`, `/reset`, `/check`, `/metrics`) built or
    /// being written at once ([`API_ANSWERS`]).
    pub api_slots: Arc<Semaphore>,
}

/// Large API answers built or being written at once; a further request waits
/// up to [`API_WAIT`] for a slot, then gets 503.
pub const API_ANSWERS: usize = 2;

/// How long an API request waits for one of the [`API_ANSWERS`] slots.
pub const API_WAIT: std::time::Duration = std::time::Duration::from_secs(20);

impl Shared {
    /// Fresh state for `config`.
    pub fn new(config: SinkConfig) -> Self {
        let metrics = Arc::new(Metrics::new(config.max_series));
        Shared {
            ingest: Ingest::new(
                config.keys.clone(),
                config.max_request_elements,
                config.max_series,
                config.max_gaps_per_generator,
                config.max_gaps,
                metrics.clone(),
            ),
            metrics,
            request_slots: Arc::new(Semaphore::new(config.max_concurrent_requests.max(1))),
            budget: Arc::new(Budget::new(config.transport.max_buffered_bytes)),
            api_slots: Arc::new(Semaphore::new(API_ANSWERS)),
            ready: AtomicBool::new(false),
            config,
        }
    }
}
