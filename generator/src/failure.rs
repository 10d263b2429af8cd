//! Why an export failed: the one list of failure reasons, each with the one
//! label used as the key of `*_failed_by_reason` in `/stats` and the summary,
//! the `reason` label in `/metrics`, the log lines and the table in docs/trace-gen.md.

use std::fmt;
use std::time::Duration;

/// A failure reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// TCP RST: nothing listening, or kube-proxy's REJECT.
    ConnectionRefused,
    /// No answer to the SYN within `--connect-timeout`.
    ConnectTimeout,
    /// Name resolution failed.
    Dns,
    /// Connected, but no answer within `--timeout`.
    ExportTimeout,
    /// The connection broke (reset, closed, protocol error).
    Transport,
    /// The endpoint answered with a gRPC status (`grpc_<code>`).
    Grpc(tonic::Code),
    /// The endpoint answered with an HTTP error status (`http_<status>`).
    Http(u16),
    /// The endpoint accepted the request but rejected some spans (partial success).
    PartialRejected,
    /// A success status whose response body could not be read in full (cut
    /// off, larger than the bound) or did not decode: whether, or how many,
    /// spans were accepted is unknown, so none is counted as accepted.
    BadResponse,
    /// Still in flight when the run stopped and the grace period ran out.
    Aborted,
    /// Anything else (the request could not be built).
    Other,
}

impl Reason {
    /// The reasons with a fixed label, in docs/trace-gen.md's order (plus `grpc_<code>`
    /// and `http_<status>`).
    pub const FIXED: [Reason; 9] = [
        Reason::ConnectionRefused,
        Reason::ConnectTimeout,
        Reason::Dns,
        Reason::ExportTimeout,
        Reason::Transport,
        Reason::PartialRejected,
        Reason::BadResponse,
        Reason::Aborted,
        Reason::Other,
    ];

    /// True when the connection is suspect and the next request should open a new one.
    pub fn is_transport(self) -> bool {
        matches!(
            self,
            Reason::ConnectionRefused
                | Reason::ConnectTimeout
                | Reason::ExportTimeout
                | Reason::Dns
                | Reason::Transport
        )
    }

    /// True when the OTLP specification lets the request be sent again:
    /// transport failures, the gRPC codes CANCELLED, DEADLINE_EXCEEDED,
    /// ABORTED, OUT_OF_RANGE, UNAVAILABLE, DATA_LOSS, and the HTTP statuses
    /// 429, 502, 503, 504. RESOURCE_EXHAUSTED is retryable only when the
    /// server sent `RetryInfo` ([`Failure::is_retryable`] knows that). Never
    /// a partial success, nor a success answer that could not be read (the
    /// spans may have been accepted: a retry could duplicate them).
    pub fn is_retryable(self) -> bool {
        use tonic::Code;
        match self {
            Reason::Grpc(code) => matches!(
                code,
                Code::Cancelled
                    | Code::DeadlineExceeded
                    | Code::Aborted
                    | Code::OutOfRange
                    | Code::Unavailable
                    | Code::DataLoss
            ),
            Reason::Http(status) => matches!(status, 429 | 502 | 503 | 504),
            r => r.is_transport(),
        }
    }

    /// The label (what [`fmt::Display`] prints).
    pub fn label(self) -> String {
        self.to_string()
    }
}

fn grpc_code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "ok",
        Cancelled => "cancelled",
        Unknown => "unknown",
        InvalidArgument => "invalid_argument",
        DeadlineExceeded => "deadline_exceeded",
        NotFound => "not_found",
        AlreadyExists => "already_exists",
        PermissionDenied => "permission_denied",
        ResourceExhausted => "resource_exhausted",
        FailedPrecondition => "failed_precondition",
        Aborted => "aborted",
        OutOfRange => "out_of_range",
        Unimplemented => "unimplemented",
        Internal => "internal",
        Unavailable => "unavailable",
        DataLoss => "data_loss",
        Unauthenticated => "unauthenticated",
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let fixed = match self {
            Reason::ConnectionRefused => "connection_refused",
            Reason::ConnectTimeout => "connect_timeout",
            Reason::Dns => "dns",
            Reason::ExportTimeout => "export_timeout",
            Reason::Transport => "transport",
            Reason::PartialRejected => "partial_rejected",
            Reason::BadResponse => "bad_response",
            Reason::Aborted => "aborted",
            Reason::Other => "other",
            Reason::Grpc(code) => return write!(f, "grpc_{}", grpc_code_name(*code)),
            Reason::Http(status) => return write!(f, "http_{status}"),
        };
        f.write_str(fixed)
    }
}

/// One failed export attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// Why.
    pub reason: Reason,
    /// Human-readable detail.
    pub message: String,
    /// How long the server asked the client to wait before trying again
    /// (HTTP `Retry-After`, gRPC `google.rpc.RetryInfo`), if it did.
    pub retry_after: Option<Duration>,
}

impl Failure {
    /// A failure without a retry hint.
    pub fn new(reason: Reason, message: impl Into<String>) -> Self {
        Failure {
            reason,
            message: message.into(),
            retry_after: None,
        }
    }

    /// True when the request may be sent again ([`Reason::is_retryable`];
    /// RESOURCE_EXHAUSTED only with a `RetryInfo`, as the OTLP specification says).
    pub fn is_retryable(&self) -> bool {
        match self.reason {
            Reason::Grpc(tonic::Code::ResourceExhausted) => self.retry_after.is_some(),
            r => r.is_retryable(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        assert_eq!(
            Reason::Grpc(tonic::Code::Unavailable).label(),
            "grpc_unavailable"
        );
        assert_eq!(Reason::Http(503).label(), "http_503");
        assert_eq!(Reason::Aborted.label(), "aborted");
        assert_eq!(Reason::BadResponse.label(), "bad_response");
    }

    /// The OTLP specification's retryable codes, and nothing else.
    #[test]
    fn retryable_as_the_specification_says() {
        use tonic::Code::*;
        let retryable = [
            Cancelled,
            DeadlineExceeded,
            Aborted,
            OutOfRange,
            Unavailable,
            DataLoss,
        ];
        for code in [
            Ok,
            Cancelled,
            Unknown,
            InvalidArgument,
            DeadlineExceeded,
            NotFound,
            AlreadyExists,
            PermissionDenied,
            ResourceExhausted,
            FailedPrecondition,
            Aborted,
            OutOfRange,
            Unimplemented,
            Internal,
            Unavailable,
            DataLoss,
            Unauthenticated,
        ] {
            let f = Failure::new(Reason::Grpc(code), "");
            assert_eq!(f.is_retryable(), retryable.contains(&code), "{code:?}");
        }
        let mut exhausted = Failure::new(Reason::Grpc(ResourceExhausted), "");
        assert!(!exhausted.is_retryable());
        exhausted.retry_after = Some(Duration::from_secs(1));
        assert!(
            exhausted.is_retryable(),
            "RESOURCE_EXHAUSTED with RetryInfo"
        );
        for status in 100..600 {
            let f = Failure::new(Reason::Http(status), "");
            assert_eq!(
                f.is_retryable(),
                [429, 502, 503, 504].contains(&status),
                "{status}"
            );
        }
        for r in Reason::FIXED {
            let expected = !matches!(
                r,
                Reason::PartialRejected | Reason::BadResponse | Reason::Aborted | Reason::Other
            );
            assert_eq!(Failure::new(r, "").is_retryable(), expected, "{r}");
        }
    }

    /// Every reason is in docs/trace-gen.md's table of failure reasons.
    #[test]
    fn every_reason_is_in_the_docs() {
        let doc = include_str!("../../docs/trace-gen.md");
        let table: Vec<&str> = doc
            .lines()
            .skip_while(|l| !l.starts_with("| failure reason |"))
            .take_while(|l| l.starts_with('|'))
            .collect();
        assert!(
            !table.is_empty(),
            "docs/trace-gen.md has no failure reason table"
        );
        let documented = |label: &str| {
            table
                .iter()
                .any(|l| l.starts_with(&format!("| `{label}` |")))
        };
        for r in Reason::FIXED {
            assert!(
                documented(&r.label()),
                "docs/trace-gen.md table lacks `{r}`"
            );
        }
        assert!(documented("grpc_<code>") && documented("http_<status>"));
    }
}
