//! The binary's contract: usage errors exit 2 with a message saying what is
//! wrong; a dry run prints the plan and the report and exits 0.

use std::path::Path;
use std::process::Command;

fn trace_verify() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_trace-verify"));
    c.current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."));
    c
}

/// Unknown policies and events, a bad duration, a missing deploy/ directory:
/// exit 2, one clear line each, before anything touches a cluster.
#[test]
fn usage_errors_exit_2() {
    for (args, says) in [
        (
            &["--policy", "local,nearby"][..],
            "unknown policy \"nearby\"",
        ),
        (&["--events", "rollout"][..], "unknown event \"rollout\""),
        (&["--window", "soon"][..], "--window"),
        (
            &["--deploy-dir", "/nonexistent"][..],
            "not the repository's deploy/ directory",
        ),
    ] {
        let out = trace_verify().args(args).arg("--dry-run").output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
}

/// `--version` names the commit of the checkout it was built from.
#[test]
fn version_names_the_commit() {
    let out = trace_verify().arg("--version").output().unwrap();
    assert!(out.status.success());
    let said = String::from_utf8_lossy(&out.stdout);
    let head = Command::new("git")
        .args(["rev-parse", "--short=7", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    let want = match head {
        Some(commit) => format!(
            "trace-verify {} (commit {commit})\n",
            env!("CARGO_PKG_VERSION")
        ),
        None => format!("trace-verify {}\n", env!("CARGO_PKG_VERSION")),
    };
    assert_eq!(said, want);
}

/// A dry run renders, prints what it would apply and the report, exits 0
/// and says that nothing was verified.
#[test]
#[ignore = "needs kubectl (deploy/kube/build.sh); run-tests.sh runs it"]
fn dry_run() {
    let built = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/kube/build/bin/kubectl");
    let mut c = trace_verify();
    if built.is_file() {
        c.arg("--kubectl").arg(built);
    }
    let out = c
        .args(["--dry-run", "--policy", "cluster", "--events", "all-up"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("internalTrafficPolicy: Cluster"), "{text}");
    assert!(
        text.contains("RESULT: dry run (nothing was verified)"),
        "{text}"
    );
}
