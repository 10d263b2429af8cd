//! What both binaries do the same way around their library call (feature `cli`):
//! logging to stderr, waiting for SIGTERM or Ctrl-C, reading an `http://` URL flag,
//! and writing the bound addresses to `--listen-file`.

use std::net::SocketAddr;
use std::path::Path;

/// Logs to stderr, level from `RUST_LOG` (default `info`), colours only on a terminal.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(filter)
        .init();
}

/// Completes on SIGTERM (how Kubernetes stops a pod) or Ctrl-C.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// A plaintext `http://` URL given on the command line or in the environment,
/// read the same way by `trace-gen --endpoint` and `trace-sink check --url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl {
    /// The URL with its scheme (`http://` added to a bare `host:port`).
    pub url: String,
    /// Host name or address, IPv6 without brackets.
    pub host: String,
    /// Port (80 when the URL names none).
    pub port: u16,
    /// Path, `/` when none was given.
    pub path: String,
}

/// Reads `http://host[:port][/path]`; a bare `host[:port][/path]` is taken as
/// `http://...`. The error is one line saying what is wrong and what is expected.
///
/// The syntax is `http::Uri`'s (RFC 3986). Its port accessor turns a port it cannot
/// read (`:65536`, `:abc`, an empty `:`) into "no port", which would silently mean
/// port 80, so the port text is checked here. (The `url` crate has the same gap
/// for an empty port, and would add IDNA tables for host names we never see.)
pub fn parse_http_url(s: &str) -> Result<HttpUrl, String> {
    const EXPECTED: &str = "expected http://HOST:PORT with a port from 1 to 65535";
    let s = s.trim();
    if s.is_empty() {
        return Err(format!("the URL is empty; {EXPECTED}"));
    }
    let url = if s.contains("://") {
        s.to_owned()
    } else {
        format!("http://{s}")
    };
    let uri: http::Uri = url.parse().map_err(|e| format!("{e}; {EXPECTED}"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err(
                "https is not supported (plaintext OTLP and API only); use http://HOST:PORT".into(),
            );
        }
        Some(other) => return Err(format!("scheme {other}:// is not supported; {EXPECTED}")),
        None => return Err(EXPECTED.into()),
    }
    let authority = uri.authority().map(|a| a.as_str()).unwrap_or_default();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    // After an IPv6 literal's `]`, or anywhere in a name or IPv4 address.
    let after_host = match host_port.rfind(']') {
        Some(i) => &host_port[i + 1..],
        None => host_port,
    };
    let port_text = after_host.rsplit_once(':').map(|(_, p)| p);
    let host = uri
        .host()
        .unwrap_or_default()
        .trim_start_matches('[')
        .trim_end_matches(']');
    if host.is_empty() {
        return Err(format!("no host; {EXPECTED}"));
    }
    let port = match port_text {
        None => 80,
        Some("") => return Err(format!("the port after ':' is empty; {EXPECTED}")),
        Some(p) => match p.parse::<u32>() {
            Ok(n @ 1..=65535) => n as u16,
            Ok(n) => return Err(format!("port {n} is out of range; {EXPECTED}")),
            Err(_) => return Err(format!("port {p:?} is not a number; {EXPECTED}")),
        },
    };
    let path = match uri.path() {
        "" => "/".to_owned(),
        p => p.to_owned(),
    };
    Ok(HttpUrl {
        url,
        host: host.to_owned(),
        port,
        path,
    })
}

/// Writes `--listen-file`: one JSON object, listener name -> bound address
/// (`{"api":"127.0.0.1:41237","grpc":"127.0.0.1:41235"}`), so a program that
/// started a binary on port 0 reads its ports without parsing logs.
///
/// Atomically: the JSON goes to a temporary file in the same directory, which
/// is then renamed over `path`, so a reader polling for `path` sees either no
/// file or the whole document. (Hand-written rather than the `tempfile` crate:
/// one process writes one file once, so a name with the process id cannot clash,
/// and it saves the crate and its dependencies.) The error says which path and why.
pub fn write_listen_file(path: &Path, listeners: &[(&str, SocketAddr)]) -> Result<(), String> {
    let doc: serde_json::Map<String, serde_json::Value> = listeners
        .iter()
        .map(|(name, addr)| ((*name).to_owned(), addr.to_string().into()))
        .collect();
    let json = serde_json::Value::Object(doc).to_string() + "\n";
    let fail = |e: std::io::Error| format!("cannot write --listen-file {}: {e}", path.display());
    let name = path
        .file_name()
        .ok_or_else(|| format!("--listen-file {}: not a file name", path.display()))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".{}.tmp", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    let written = std::fs::write(&tmp, json).and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(fail(e));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch_dir(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("trace-proto-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// The listen file is one JSON object of name -> address, and nothing else is
    /// left in its directory.
    #[test]
    fn listen_file_holds_the_addresses() {
        let dir = scratch_dir("listen");
        let path = dir.join("ports.json");
        let grpc: SocketAddr = "127.0.0.1:41235".parse().unwrap();
        let api: SocketAddr = "[::1]:41237".parse().unwrap();
        write_listen_file(&path, &[("grpc", grpc), ("api", api)]).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            text,
            "{\"api\":\"[::1]:41237\",\"grpc\":\"127.0.0.1:41235\"}\n"
        );
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["ports.json"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// An existing file is replaced by a rename, not rewritten in place: a reader
    /// that opened the old one still reads it whole, never a mix.
    #[test]
    fn listen_file_is_replaced_atomically() {
        let dir = scratch_dir("atomic");
        let path = dir.join("ports.json");
        std::fs::write(&path, "old contents\n").unwrap();
        let mut reader = std::fs::File::open(&path).unwrap();
        write_listen_file(&path, &[("stats", "127.0.0.1:8081".parse().unwrap())]).unwrap();
        let mut old = String::new();
        std::io::Read::read_to_string(&mut reader, &mut old).unwrap();
        assert_eq!(old, "old contents\n");
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "{\"stats\":\"127.0.0.1:8081\"}\n"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A path that cannot be written is an error naming it, and leaves no temporary file.
    #[test]
    fn listen_file_error_names_the_path() {
        let dir = scratch_dir("missing");
        let path = dir.join("no-such-dir/ports.json");
        let e = write_listen_file(&path, &[("stats", "127.0.0.1:1".parse().unwrap())]).unwrap_err();
        assert!(e.starts_with("cannot write --listen-file "), "{e}");
        assert!(e.contains("no-such-dir/ports.json"), "{e}");
        // A directory where the file should be: the temporary file is written, the
        // rename fails, and the temporary file is removed again.
        let taken = dir.join("taken");
        std::fs::create_dir(&taken).unwrap();
        std::fs::write(taken.join("inner"), "x").unwrap();
        let e =
            write_listen_file(&taken, &[("stats", "127.0.0.1:1".parse().unwrap())]).unwrap_err();
        assert!(e.contains("taken"), "{e}");
        let mut names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        assert_eq!(names, ["taken"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Scheme optional, port and path kept, IPv6 literals unbracketed, port 80 by default.
    #[test]
    fn accepted_urls() {
        let u = parse_http_url("http://agent:4317").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("agent", 4317, "/")
        );
        let u = parse_http_url("127.0.0.1:4318/v1/traces").unwrap();
        assert_eq!(u.url, "http://127.0.0.1:4318/v1/traces");
        assert_eq!((u.port, u.path.as_str()), (4318, "/v1/traces"));
        let u = parse_http_url("http://[::1]:9/custom").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 9));
        assert_eq!(parse_http_url("http://[::1]").unwrap().port, 80);
        assert_eq!(parse_http_url("sink").unwrap().port, 80);
        assert_eq!(parse_http_url("http://sink:65535").unwrap().port, 65535);
    }

    /// Every port `http::Uri` would read as "none" is refused, in words.
    #[test]
    fn bad_ports_are_refused() {
        for (url, says) in [
            ("http://127.0.0.1:65536", "port 65536 is out of range"),
            ("http://127.0.0.1:99999", "port 99999 is out of range"),
            ("127.0.0.1:0", "port 0 is out of range"),
            ("http://127.0.0.1:abc", "port \"abc\" is not a number"),
            ("http://127.0.0.1:", "the port after ':' is empty"),
            ("http://[::1]:", "the port after ':' is empty"),
            ("http://[::1]:70000/x", "port 70000 is out of range"),
        ] {
            let e = parse_http_url(url).unwrap_err();
            assert!(e.contains(says), "{url}: {e}");
            assert!(e.contains("expected http://HOST:PORT"), "{url}: {e}");
            assert!(!e.contains('\n'));
        }
    }

    /// Other schemes, no host, empty and garbage input: refused with what is expected.
    #[test]
    fn bad_urls_are_refused() {
        assert!(
            parse_http_url("https://x:1")
                .unwrap_err()
                .contains("https is not supported")
        );
        assert!(
            parse_http_url("ftp://x")
                .unwrap_err()
                .contains("scheme ftp://")
        );
        for url in ["http://", "", "   ", "not a url", "http://:4317"] {
            let e = parse_http_url(url).unwrap_err();
            assert!(e.contains("expected http://HOST:PORT"), "{url:?}: {e}");
        }
    }
}
