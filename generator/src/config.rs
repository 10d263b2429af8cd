//! The generator's settings, independent of flags and environment.

use std::time::Duration;

use trace_proto::keys;
use trace_proto::otlp::{KeyValue, kv_str};

/// A configuration that cannot work; the binary reports it as a usage error (exit 2).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The endpoint is not a usable URL.
    #[error("invalid endpoint {0:?}: {1}")]
    Endpoint(String, String),
    /// A `k=v` pair is malformed.
    #[error("invalid {what} {value:?}: expected key=value")]
    Pair {
        /// Which setting.
        what: &'static str,
        /// The offending text.
        value: String,
    },
    /// A header name or value HTTP cannot carry.
    #[error("invalid header {0:?}: {1}")]
    Header(String, String),
    /// Any other invalid value.
    #[error("{0}")]
    Invalid(String),
    /// A protocol name that is none of the specification's.
    #[error(transparent)]
    Protocol(#[from] trace_proto::protocol::UnknownProtocol),
}

/// Wire protocol (one enum for both sides: [`trace_proto::protocol`]).
pub use trace_proto::protocol::Protocol;

/// Body compression.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// None.
    None,
    /// gzip.
    Gzip,
}

impl Compression {
    /// Parses `none` or `gzip`.
    pub fn parse(s: &str) -> Result<Self, ConfigError> {
        match s.trim() {
            "none" | "" => Ok(Compression::None),
            "gzip" => Ok(Compression::Gzip),
            other => Err(ConfigError::Invalid(format!(
                "invalid compression {other:?}: use none or gzip"
            ))),
        }
    }
}

/// Where to send: a plaintext `http://host:port[/path]` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The URL as given (normalised).
    pub url: String,
    /// Host name or address (re-resolved on every new connection).
    pub host: String,
    /// Port.
    pub port: u16,
    /// Path (`/` when none was given).
    pub path: String,
}

/// Largest `--batch`.
pub const MAX_BATCH: usize = 100_000;
/// Largest `--workers`.
pub const MAX_WORKERS: usize = 1024;
/// Longest duration accepted for any setting.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// Default endpoint for OTLP/gRPC.
pub const DEFAULT_GRPC_ENDPOINT: &str = "http://telemetry-otlp-traces-local:4317";
/// Default endpoint for OTLP/HTTP.
pub const DEFAULT_HTTP_ENDPOINT: &str = "http://telemetry-otlp-traces-local:4318/v1/traces";

impl Endpoint {
    /// Parses `http://host[:port][/path]`. A bare `host:port` is taken as `http://host:port`.
    /// The rules are [`trace_proto::cli::parse_http_url`]'s, shared with `trace-sink check --url`.
    pub fn parse(s: &str) -> Result<Self, ConfigError> {
        let u = trace_proto::cli::parse_http_url(s)
            .map_err(|m| ConfigError::Endpoint(s.to_owned(), m))?;
        Ok(Endpoint {
            url: u.url,
            host: u.host,
            port: u.port,
            path: u.path,
        })
    }

    /// For OTLP/HTTP: the same endpoint with `/v1/traces` when no path was given.
    pub fn with_default_traces_path(mut self) -> Self {
        if self.path == "/" {
            self.path = "/v1/traces".into();
            self.url = format!("{}/v1/traces", self.url.trim_end_matches('/'));
        }
        self
    }
}

/// When to drop the connection and open a new one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reconnect {
    /// Keep the connection (reconnect only after failures).
    Never,
    /// After this many requests.
    Requests(u64),
    /// After this long.
    Every(Duration),
}

impl Reconnect {
    /// Parses `N` (requests) or a duration such as `30s`.
    pub fn parse(s: &str) -> Result<Self, ConfigError> {
        let s = s.trim();
        if let Ok(n) = s.parse::<u64>() {
            return Ok(if n == 0 {
                Reconnect::Never
            } else {
                Reconnect::Requests(n)
            });
        }
        humantime::parse_duration(s)
            .map(Reconnect::Every)
            .map_err(|_| {
                ConfigError::Invalid(format!(
                    "invalid --reconnect-every {s:?}: a number of requests or a duration like 30s"
                ))
            })
    }
}

/// Where and how to export: the OTLP exporter settings, resolved from flags
/// and the `OTEL_EXPORTER_OTLP_*` variables by [`crate::env::resolve_exporter`].
#[derive(Debug, Clone, PartialEq)]
pub struct ExporterSettings {
    /// Where to send.
    pub endpoint: Endpoint,
    /// Wire protocol.
    pub protocol: Protocol,
    /// Body compression.
    pub compression: Compression,
    /// Extra request headers / gRPC metadata.
    pub headers: Vec<(String, String)>,
    /// Deadline of one export request.
    pub timeout: Duration,
}

/// Default export timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

impl Default for ExporterSettings {
    /// OTLP/gRPC to the node-local agent Service, no compression, no headers.
    fn default() -> Self {
        ExporterSettings {
            endpoint: Endpoint::parse(DEFAULT_GRPC_ENDPOINT).expect("valid default"),
            protocol: Protocol::Grpc,
            compression: Compression::None,
            headers: Vec::new(),
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

/// Everything a generator needs.
#[derive(Debug, Clone)]
pub struct GenConfig {
    /// Node name (`k8s.node.name`).
    pub node_name: String,
    /// Pod name (`k8s.pod.name`), if known.
    pub pod_name: Option<String>,
    /// Namespace (`k8s.namespace.name`), if known.
    pub namespace: Option<String>,
    /// `service.name`.
    pub service_name: String,
    /// Further resource attributes (lower precedence than the ones above).
    pub extra_resource: Vec<(String, String)>,
    /// Endpoint, protocol, compression, headers, export timeout.
    pub exporter: ExporterSettings,
    /// Deadline of DNS resolution plus TCP connect.
    pub connect_timeout: Duration,
    /// Spans per second in total; 0 = as fast as possible.
    pub rate: f64,
    /// Spans per request.
    pub batch: usize,
    /// Requests in flight at most.
    pub workers: usize,
    /// Stop after this many spans.
    pub count: Option<u64>,
    /// Stop after this long.
    pub duration: Option<Duration>,
    /// Reconnect policy.
    pub reconnect: Reconnect,
    /// Extra attempts per failed request (0 = no retry).
    pub retries: u32,
    /// Progress line period (zero disables it).
    pub report_interval: Duration,
    /// Backoff after a failure starts here and doubles up to `max_backoff`.
    pub min_backoff: Duration,
    /// Upper bound of the backoff.
    pub max_backoff: Duration,
}

impl GenConfig {
    /// Defaults for a generator on `node_name`.
    pub fn new(node_name: impl Into<String>) -> Self {
        GenConfig {
            node_name: node_name.into(),
            pod_name: None,
            namespace: None,
            service_name: "trace-gen".into(),
            extra_resource: Vec::new(),
            exporter: ExporterSettings::default(),
            connect_timeout: Duration::from_secs(2),
            rate: 10.0,
            batch: 10,
            workers: 1,
            count: None,
            duration: None,
            reconnect: Reconnect::Never,
            retries: 0,
            report_interval: Duration::from_secs(10),
            min_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
        }
    }

    /// Checks the values that cannot work.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if self.node_name.is_empty() {
            return bad("the node name is empty: set --node-name or NODE_NAME".into());
        }
        if !self.rate.is_finite() || self.rate < 0.0 {
            return bad(format!(
                "invalid --rate {}: spans per second, >= 0",
                self.rate
            ));
        }
        if self.batch == 0 || self.batch > MAX_BATCH {
            return bad(format!("--batch must be between 1 and {MAX_BATCH}"));
        }
        if self.workers == 0 || self.workers > MAX_WORKERS {
            return bad(format!("--workers must be between 1 and {MAX_WORKERS}"));
        }
        if self.rate > 0.0 && self.batch as f64 / self.rate > MAX_DURATION.as_secs_f64() {
            return bad(format!(
                "--rate {} is too low: one batch of {} would take longer than a year",
                self.rate, self.batch
            ));
        }
        if self.exporter.timeout.is_zero() || self.connect_timeout.is_zero() {
            return bad("--timeout and --connect-timeout must be above zero".into());
        }
        let durations = [
            ("--timeout", Some(self.exporter.timeout)),
            ("--connect-timeout", Some(self.connect_timeout)),
            ("--duration", self.duration),
            ("--report-interval", Some(self.report_interval)),
            (
                "--reconnect-every",
                match self.reconnect {
                    Reconnect::Every(d) => Some(d),
                    _ => None,
                },
            ),
            ("the backoff", Some(self.max_backoff)),
        ];
        for (name, d) in durations {
            if d.is_some_and(|d| d > MAX_DURATION) {
                return bad(format!("{name} is longer than the year allowed"));
            }
        }
        for (k, v) in &self.exporter.headers {
            http::HeaderName::from_bytes(k.as_bytes())
                .map_err(|e| ConfigError::Header(k.clone(), e.to_string()))?;
            http::HeaderValue::from_str(v)
                .map_err(|e| ConfigError::Header(k.clone(), e.to_string()))?;
            if self.exporter.protocol == Protocol::Grpc {
                tonic::metadata::MetadataKey::<tonic::metadata::Ascii>::from_bytes(
                    k.to_ascii_lowercase().as_bytes(),
                )
                .map_err(|e| ConfigError::Header(k.clone(), e.to_string()))?;
            }
        }
        Ok(())
    }

    /// The resource attributes of every request: extra attributes first, then the
    /// contract's (node, pod, namespace, service, generator id), which win.
    pub fn resource_attributes(&self, generator_id: &str) -> Vec<KeyValue> {
        let mut attrs: Vec<(String, String)> = Vec::new();
        let mut set = |k: &str, v: &str| {
            attrs.retain(|(ek, _)| ek != k);
            attrs.push((k.to_owned(), v.to_owned()));
        };
        for (k, v) in &self.extra_resource {
            set(k, v);
        }
        set(keys::SERVICE_NAME, &self.service_name);
        set(keys::GENERATOR_NODE, &self.node_name);
        if let Some(p) = &self.pod_name {
            set(keys::POD_NAME, p);
        }
        if let Some(n) = &self.namespace {
            set(keys::NAMESPACE_NAME, n);
        }
        set(keys::GENERATOR_ID, generator_id);
        set(keys::SERVICE_INSTANCE_ID, generator_id);
        attrs.into_iter().map(|(k, v)| kv_str(&k, v)).collect()
    }
}

/// Parses `key=value`.
pub fn parse_pair(what: &'static str, s: &str) -> Result<(String, String), ConfigError> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_owned(), v.trim().to_owned())),
        _ => Err(ConfigError::Pair {
            what,
            value: s.to_owned(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use trace_proto::otlp::get_str;

    /// Endpoints: scheme required to be http, port and path kept, host:port accepted.
    #[test]
    fn endpoints() {
        let e = Endpoint::parse("http://agent:4317").unwrap();
        assert_eq!(
            (e.host.as_str(), e.port, e.path.as_str()),
            ("agent", 4317, "/")
        );
        let e = Endpoint::parse("127.0.0.1:4318")
            .unwrap()
            .with_default_traces_path();
        assert_eq!(e.path, "/v1/traces");
        assert_eq!(e.url, "http://127.0.0.1:4318/v1/traces");
        let e = Endpoint::parse("http://[::1]:9/custom")
            .unwrap()
            .with_default_traces_path();
        assert_eq!((e.host.as_str(), e.path.as_str()), ("::1", "/custom"));
        assert!(
            Endpoint::parse("https://x:1")
                .unwrap_err()
                .to_string()
                .contains("https")
        );
        assert!(Endpoint::parse("ftp://x").is_err());
        assert!(Endpoint::parse("http://").is_err());
        assert!(Endpoint::parse("not a url").is_err());
        let e = Endpoint::parse("http://127.0.0.1:65536").unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid endpoint \"http://127.0.0.1:65536\": port 65536 is out of range; \
             expected http://HOST:PORT with a port from 1 to 65535"
        );
    }

    /// The contract's attributes win over extra ones.
    #[test]
    fn resource_precedence() {
        let mut c = GenConfig::new("n1");
        c.extra_resource = vec![
            ("k8s.node.name".into(), "spoofed".into()),
            ("team".into(), "obs".into()),
        ];
        let attrs = c.resource_attributes("id-1");
        assert_eq!(get_str(&attrs, keys::GENERATOR_NODE), Some("n1"));
        assert_eq!(get_str(&attrs, "team"), Some("obs"));
        assert_eq!(get_str(&attrs, keys::GENERATOR_ID), Some("id-1"));
        assert_eq!(get_str(&attrs, keys::SERVICE_NAME), Some("trace-gen"));
        assert_eq!(
            attrs
                .iter()
                .filter(|kv| kv.key == keys::GENERATOR_NODE)
                .count(),
            1
        );
    }

    /// Reconnect policy: requests, durations, 0 = never.
    #[test]
    fn reconnect_policy() {
        assert_eq!(Reconnect::parse("5").unwrap(), Reconnect::Requests(5));
        assert_eq!(Reconnect::parse("0").unwrap(), Reconnect::Never);
        assert_eq!(
            Reconnect::parse("2s").unwrap(),
            Reconnect::Every(Duration::from_secs(2))
        );
        assert!(Reconnect::parse("often").is_err());
    }

    /// Validation rejects what cannot work.
    #[test]
    fn validation() {
        let mut c = GenConfig::new("n");
        assert!(c.validate().is_ok());
        c.batch = 0;
        assert!(c.validate().is_err());
        let mut c = GenConfig::new("n");
        c.exporter.headers = vec![("bad header".into(), "v".into())];
        assert!(c.validate().is_err());
        let mut c = GenConfig::new("n");
        c.rate = f64::NAN;
        assert!(c.validate().is_err());
        for f in [
            |c: &mut GenConfig| c.rate = 1e-300,
            |c: &mut GenConfig| c.workers = usize::MAX,
            |c: &mut GenConfig| c.batch = usize::MAX,
            |c: &mut GenConfig| c.duration = Some(Duration::from_secs(u64::MAX)),
            |c: &mut GenConfig| c.exporter.timeout = Duration::from_secs(u64::MAX),
            |c: &mut GenConfig| c.connect_timeout = Duration::from_secs(u64::MAX),
            |c: &mut GenConfig| c.report_interval = Duration::from_secs(u64::MAX),
            |c: &mut GenConfig| c.reconnect = Reconnect::Every(Duration::from_secs(u64::MAX)),
        ] {
            let mut c = GenConfig::new("n");
            f(&mut c);
            assert!(c.validate().is_err(), "{c:?}");
        }
    }
}
