//! The trace-sink binary as a child process of a test, on loopback ports the
//! kernel picks: it names them in its listen file (`SINK_LISTEN_FILE`, the
//! variable of `--listen-file`), which [`SinkProcess::spawn`] waits for, so no
//! test parses the sink's log to find its ports. Included by path by the tests
//! that need a process of its own (a file limit, memory read from /proc, the
//! real flags), beside `common/mod.rs`'s in-process sink.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long a sink may take to bind its listeners and write the file.
const START_WITHIN: Duration = Duration::from_secs(30);

/// The command that runs `bin`, with its file limit lowered to `nofile`
/// (through `sh -c 'ulimit -n'`, which then `exec`s the binary) if given.
pub fn command(bin: &str, nofile: Option<u32>) -> Command {
    match nofile {
        Some(n) => {
            let mut c = Command::new("sh");
            c.arg("-c")
                .arg(format!("ulimit -n {n} && exec \"$0\" \"$@\""))
                .arg(bin);
            c
        }
        None => Command::new(bin),
    }
}

/// A running trace-sink; killed (and its listen file's directory removed)
/// when dropped.
pub struct SinkProcess {
    pub child: Child,
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    pub api: SocketAddr,
    stderr: Option<JoinHandle<()>>,
    dir: PathBuf,
}

impl SinkProcess {
    /// Runs `cmd` (the binary with its settings, see [`command`]) on
    /// `127.0.0.1:0` for all three listeners, handing each line of its stderr
    /// to `on_line` on a thread of its own, and returns once the listen file
    /// names the bound addresses. Fails if the process exits first, or writes
    /// no file within 30 s (a build older than `--listen-file` writes none).
    pub fn spawn(mut cmd: Command, mut on_line: impl FnMut(String) + Send + 'static) -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "trace-sink-proc-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("listen.json");
        cmd.args([
            "--grpc-listen=127.0.0.1:0",
            "--http-listen=127.0.0.1:0",
            "--api-listen=127.0.0.1:0",
        ])
        .env("SINK_LISTEN_FILE", &path)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn trace-sink");
        let err = child.stderr.take().unwrap();
        let stderr = std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                on_line(line);
            }
        });
        let deadline = Instant::now() + START_WITHIN;
        let text = loop {
            // Written whole or not at all (renamed into place).
            if let Ok(text) = std::fs::read_to_string(&path) {
                break text;
            }
            if let Some(status) = child.try_wait().unwrap() {
                panic!("trace-sink exited ({status}) before writing its listen file");
            }
            assert!(
                Instant::now() < deadline,
                "trace-sink wrote no listen file within {START_WITHIN:?} (a build older than --listen-file?)"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        let doc: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("listen file {text:?}: {e}"));
        let addr = |name: &str| -> SocketAddr {
            doc.get(name)
                .and_then(|a| a.as_str()?.parse().ok())
                .unwrap_or_else(|| panic!("listen file {text:?}: no {name} address"))
        };
        SinkProcess {
            grpc: addr("grpc"),
            http: addr("http"),
            api: addr("api"),
            child,
            stderr: Some(stderr),
            dir,
        }
    }

    /// Waits until every line of stderr went to `on_line`: call it once the
    /// process has exited (its stderr then ends).
    pub fn join_stderr(&mut self) {
        if let Some(reader) = self.stderr.take() {
            let _ = reader.join();
        }
    }
}

impl Drop for SinkProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
