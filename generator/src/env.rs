//! The standard OpenTelemetry exporter environment variables, resolved as the
//! specification says, with flags taking precedence:
//!
//! | setting | flag | signal-specific variable | generic variable |
//! |---|---|---|---|
//! | endpoint | `--endpoint` | `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (as is) | `OTEL_EXPORTER_OTLP_ENDPOINT` (HTTP: `/v1/traces` appended) |
//! | protocol | `--protocol` | `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL` | `OTEL_EXPORTER_OTLP_PROTOCOL` |
//! | compression | `--compression` | `OTEL_EXPORTER_OTLP_TRACES_COMPRESSION` | `OTEL_EXPORTER_OTLP_COMPRESSION` |
//! | headers | `--header` | `OTEL_EXPORTER_OTLP_TRACES_HEADERS` | `OTEL_EXPORTER_OTLP_HEADERS` |
//! | timeout | `--timeout` | `OTEL_EXPORTER_OTLP_TRACES_TIMEOUT` (ms) | `OTEL_EXPORTER_OTLP_TIMEOUT` (ms) |
//!
//! Headers merge (generic, then signal-specific, then flags; later wins per key).
//! `OTEL_RESOURCE_ATTRIBUTES` values are percent-decoded. Empty variables count as unset.

use std::time::Duration;

use crate::config::{
    Compression, ConfigError, DEFAULT_GRPC_ENDPOINT, DEFAULT_HTTP_ENDPOINT, Endpoint, Protocol,
    parse_pair,
};

/// Exporter settings given as flags (None = not given).
#[derive(Debug, Clone, Default)]
pub struct ExporterFlags {
    /// `--endpoint`.
    pub endpoint: Option<String>,
    /// `--protocol`.
    pub protocol: Option<String>,
    /// `--compression`.
    pub compression: Option<String>,
    /// `--header k=v`, repeatable.
    pub headers: Vec<String>,
    /// `--timeout`.
    pub timeout: Option<Duration>,
}

pub use crate::config::{DEFAULT_TIMEOUT, ExporterSettings};

fn first(env: &dyn Fn(&str) -> Option<String>, names: &[&str]) -> Option<(String, String)> {
    names.iter().find_map(|n| {
        env(n)
            .filter(|v| !v.trim().is_empty())
            .map(|v| ((*n).to_owned(), v))
    })
}

/// Percent-decodes (`%2C` -> `,`); malformed escapes are kept as they are.
pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && b[i + 1].is_ascii_hexdigit()
            && b[i + 2].is_ascii_hexdigit()
            && let Some(v) = std::str::from_utf8(&b[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses a `k1=v1,k2=v2` list (W3C-baggage-like, values percent-decoded).
pub fn parse_list(what: &'static str, s: &str) -> Result<Vec<(String, String)>, ConfigError> {
    s.split(',')
        .filter(|item| !item.trim().is_empty())
        .map(|item| parse_pair(what, item).map(|(k, v)| (percent_decode(&k), percent_decode(&v))))
        .collect()
}

fn merge(into: &mut Vec<(String, String)>, more: Vec<(String, String)>) {
    for (k, v) in more {
        into.retain(|(ek, _)| !ek.eq_ignore_ascii_case(&k));
        into.push((k, v));
    }
}

/// Resolves the exporter settings from flags and the environment.
pub fn resolve_exporter(
    flags: &ExporterFlags,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<ExporterSettings, ConfigError> {
    let protocol = match &flags.protocol {
        Some(p) => Protocol::parse(p)?,
        None => match first(
            env,
            &[
                "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
                "OTEL_EXPORTER_OTLP_PROTOCOL",
            ],
        ) {
            Some((_, v)) => Protocol::parse(&v)?,
            None => Protocol::Grpc,
        },
    };
    let endpoint = if let Some(e) = &flags.endpoint {
        let e = Endpoint::parse(e)?;
        if protocol.is_http() {
            e.with_default_traces_path()
        } else {
            e
        }
    } else if let Some((_, v)) = first(env, &["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"]) {
        Endpoint::parse(&v)?
    } else if let Some((_, v)) = first(env, &["OTEL_EXPORTER_OTLP_ENDPOINT"]) {
        if protocol.is_http() {
            Endpoint::parse(&format!("{}/v1/traces", v.trim_end_matches('/')))?
        } else {
            Endpoint::parse(&v)?
        }
    } else if protocol.is_http() {
        Endpoint::parse(DEFAULT_HTTP_ENDPOINT)?
    } else {
        Endpoint::parse(DEFAULT_GRPC_ENDPOINT)?
    };
    let compression = match &flags.compression {
        Some(c) => Compression::parse(c)?,
        None => match first(
            env,
            &[
                "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION",
                "OTEL_EXPORTER_OTLP_COMPRESSION",
            ],
        ) {
            Some((_, v)) => Compression::parse(&v)?,
            None => Compression::None,
        },
    };
    let mut headers = Vec::new();
    for name in [
        "OTEL_EXPORTER_OTLP_HEADERS",
        "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
    ] {
        if let Some((_, v)) = first(env, &[name]) {
            merge(&mut headers, parse_list("header", &v)?);
        }
    }
    let flag_headers = flags
        .headers
        .iter()
        .map(|h| parse_pair("--header", h))
        .collect::<Result<Vec<_>, _>>()?;
    merge(&mut headers, flag_headers);
    let timeout = match flags.timeout {
        Some(t) => t,
        None => match first(
            env,
            &[
                "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
                "OTEL_EXPORTER_OTLP_TIMEOUT",
            ],
        ) {
            Some((name, v)) => Duration::from_millis(v.trim().parse().map_err(|_| {
                ConfigError::Invalid(format!("invalid {name}={v:?}: milliseconds expected"))
            })?),
            None => DEFAULT_TIMEOUT,
        },
    };
    Ok(ExporterSettings {
        endpoint,
        protocol,
        compression,
        headers,
        timeout,
    })
}

/// Resource attributes: `OTEL_RESOURCE_ATTRIBUTES`, then `--resource-attribute` flags (later wins).
pub fn resolve_resource(
    flags: &[String],
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<(String, String)>, ConfigError> {
    let mut attrs = Vec::new();
    if let Some((_, v)) = first(env, &["OTEL_RESOURCE_ATTRIBUTES"]) {
        merge(
            &mut attrs,
            parse_list("OTEL_RESOURCE_ATTRIBUTES entry", &v)?,
        );
    }
    let from_flags = flags
        .iter()
        .map(|a| parse_pair("--resource-attribute", a))
        .collect::<Result<Vec<_>, _>>()?;
    merge(&mut attrs, from_flags);
    Ok(attrs)
}

/// `service.name`: the flag or `OTEL_SERVICE_NAME` (clap resolves those two), else
/// `service.name` from the resource attributes, else `trace-gen`.
pub fn resolve_service_name(given: Option<String>, resource: &[(String, String)]) -> String {
    given
        .filter(|s| !s.is_empty())
        .or_else(|| {
            resource
                .iter()
                .rev()
                .find(|(k, _)| k == trace_proto::keys::SERVICE_NAME)
                .map(|(_, v)| v.clone())
        })
        .unwrap_or_else(|| "trace-gen".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    /// Nothing set: gRPC to the node-local Service.
    #[test]
    fn defaults() {
        let s = resolve_exporter(&ExporterFlags::default(), &env_of(&[])).unwrap();
        assert_eq!(s.protocol, Protocol::Grpc);
        assert_eq!(s.endpoint.url, "http://telemetry-otlp-traces-local:4317");
        assert_eq!(s.timeout, DEFAULT_TIMEOUT);
        assert_eq!(s.compression, Compression::None);
        let s = resolve_exporter(
            &ExporterFlags {
                protocol: Some("http/json".into()),
                ..Default::default()
            },
            &env_of(&[]),
        )
        .unwrap();
        assert_eq!(
            s.endpoint.url,
            "http://telemetry-otlp-traces-local:4318/v1/traces"
        );
    }

    /// The generic endpoint gets /v1/traces for HTTP, the signal one is used as is.
    #[test]
    fn endpoint_rules() {
        let e = env_of(&[
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/"),
        ]);
        let s = resolve_exporter(&ExporterFlags::default(), &e).unwrap();
        assert_eq!(s.endpoint.url, "http://collector:4318/v1/traces");
        let e = env_of(&[
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
            (
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "http://other:9999/custom/path",
            ),
        ]);
        let s = resolve_exporter(&ExporterFlags::default(), &e).unwrap();
        assert_eq!(s.endpoint.url, "http://other:9999/custom/path");
        let e = env_of(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317")]);
        let s = resolve_exporter(&ExporterFlags::default(), &e).unwrap();
        assert_eq!((s.endpoint.path.as_str(), s.endpoint.port), ("/", 4317));
    }

    /// Flags win over the environment; signal-specific variables over generic ones.
    #[test]
    fn precedence() {
        let e = env_of(&[
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
            ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf"),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://env:1"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "1500"),
            ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "a=1,b=2"),
            ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "b=3,c=x%2Cy"),
        ]);
        let s = resolve_exporter(&ExporterFlags::default(), &e).unwrap();
        assert_eq!(s.protocol, Protocol::HttpProtobuf);
        assert_eq!(s.timeout, Duration::from_millis(1500));
        assert_eq!(s.compression, Compression::Gzip);
        assert_eq!(
            s.headers,
            vec![
                ("a".into(), "1".into()),
                ("b".into(), "3".into()),
                ("c".into(), "x,y".into())
            ]
        );
        let flags = ExporterFlags {
            endpoint: Some("http://flag:2".into()),
            protocol: Some("grpc".into()),
            compression: Some("none".into()),
            headers: vec!["a=9".into()],
            timeout: Some(Duration::from_secs(1)),
        };
        let s = resolve_exporter(&flags, &e).unwrap();
        assert_eq!(s.protocol, Protocol::Grpc);
        assert_eq!(s.endpoint.url, "http://flag:2");
        assert_eq!(s.timeout, Duration::from_secs(1));
        assert_eq!(s.compression, Compression::None);
        assert!(s.headers.contains(&("a".into(), "9".into())));
    }

    /// Bad values are usage errors naming the variable.
    #[test]
    fn bad_values() {
        let e = env_of(&[("OTEL_EXPORTER_OTLP_TIMEOUT", "5s")]);
        let err = resolve_exporter(&ExporterFlags::default(), &e).unwrap_err();
        assert!(err.to_string().contains("OTEL_EXPORTER_OTLP_TIMEOUT"));
        let e = env_of(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "carrier-pigeon")]);
        assert!(resolve_exporter(&ExporterFlags::default(), &e).is_err());
        let e = env_of(&[("OTEL_EXPORTER_OTLP_HEADERS", "novalue")]);
        assert!(resolve_exporter(&ExporterFlags::default(), &e).is_err());
    }

    /// Resource attributes: environment then flags; service name fallbacks.
    #[test]
    fn resource_and_service_name() {
        let e = env_of(&[(
            "OTEL_RESOURCE_ATTRIBUTES",
            "team=obs,service.name=from-env,x=a%3Db",
        )]);
        let r = resolve_resource(&["team=sre".into()], &e).unwrap();
        assert!(r.contains(&("team".into(), "sre".into())));
        assert!(r.contains(&("x".into(), "a=b".into())));
        assert_eq!(resolve_service_name(None, &r), "from-env");
        assert_eq!(resolve_service_name(Some("flag".into()), &r), "flag");
        assert_eq!(resolve_service_name(None, &[]), "trace-gen");
    }
}
