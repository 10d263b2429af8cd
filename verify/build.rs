//! The git commit trace-verify is built from, for `--version`, the results
//! JSON and the reports: `TRACE_VERIFY_COMMIT` (empty when not built from a
//! git checkout, e.g. from a source archive) and `TRACE_VERIFY_VERSION`.
//! Written here, not taken from a crate: one `git rev-parse` is all it takes.

use std::path::Path;
use std::process::Command;

fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| ".".to_owned());
    let git = |args: &[&str]| -> Option<String> {
        let out = Command::new("git")
            .arg("-C")
            .arg(&dir)
            .args(args)
            .output()
            .ok()?;
        let text = String::from_utf8(out.stdout).ok()?.trim().to_owned();
        (out.status.success() && !text.is_empty()).then_some(text)
    };
    let commit = git(&["rev-parse", "--short=7", "HEAD"]).unwrap_or_default();
    let version = env!("CARGO_PKG_VERSION");
    println!("cargo:rustc-env=TRACE_VERIFY_COMMIT={commit}");
    if commit.is_empty() {
        println!("cargo:rustc-env=TRACE_VERIFY_VERSION={version}");
    } else {
        println!("cargo:rustc-env=TRACE_VERIFY_VERSION={version} (commit {commit})");
    }
    // Built again when HEAD moves: HEAD itself, the branch it names, packed
    // refs. Only files that exist are named (cargo reruns a build script
    // whose named file is missing on every build).
    println!("cargo:rerun-if-changed=build.rs");
    let mut watched = vec!["HEAD".to_owned(), "packed-refs".to_owned()];
    watched.extend(git(&["symbolic-ref", "-q", "HEAD"]));
    for name in watched {
        if let Some(path) = git(&["rev-parse", "--git-path", &name]) {
            let path = Path::new(&dir).join(path);
            if path.exists() {
                println!("cargo:rerun-if-changed={}", path.display());
            }
        }
    }
}
