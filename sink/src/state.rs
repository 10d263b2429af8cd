//! The state one sink shares between its receivers, its API and its handle
//! (as mini-redis keeps its `Db` in a module of its own): everything here is
//! created once by [`crate::SinkBuilder::start`] and lives as long as the sink.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use tokio::sync::Semaphore;

use crate::config::SinkConfig;
use crate::ingest::Ingest;
use crate::k8s::PodResolver;
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
}

impl Shared {
    /// Fresh state for `config`; `pods` turns on peer attribution.
    pub fn new(config: SinkConfig, pods: Option<PodResolver>) -> Self {
        let metrics = Arc::new(Metrics::new(config.max_series));
        Shared {
            ingest: Ingest::new(
                config.keys.clone(),
                config.max_request_elements,
                config.max_series,
                config.max_gaps_per_generator,
                metrics.clone(),
                pods,
            ),
            metrics,
            request_slots: Arc::new(Semaphore::new(config.max_concurrent_requests.max(1))),
            ready: AtomicBool::new(false),
            config,
        }
    }
}
