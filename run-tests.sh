#!/usr/bin/env bash
# Runs every test of the project. On a fresh machine it installs what the tests
# need by itself: a Python venv with tests/requirements.txt (pinned), the
# OpenTelemetry Collector build (Go, cached), the real Kubernetes components
# (Go, cached; the sink's Kubernetes tests run kube-apiserver), and the release binaries.
# Needs: cargo (Rust), go, python3. No root needed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

need() {
  command -v "$1" >/dev/null 2>&1 || { echo "run-tests.sh: $1 is required ($2)" >&2; exit 2; }
}
need cargo "https://rustup.rs"
need go "https://go.dev/doc/install"
need python3 "python 3.11+ with venv"

step() { printf '\n== %s\n' "$*"; }

step "release binaries (the Dockerfile's build command)"
cargo build --release --locked --bin trace-gen --bin trace-sink

step "OpenTelemetry Collector (official builder, cached)"
bash deploy/collector/build.sh >/dev/null

step "Kubernetes components: etcd, kube-apiserver, ... (official Go modules, cached)"
bash deploy/kube/build.sh >/dev/null

step "Python test environment (.venv, tests/requirements.txt)"
if [[ ! -x .venv/bin/python ]]; then
  python3 -m venv .venv
fi
if ! cmp -s tests/requirements.txt .venv/.requirements 2>/dev/null; then
  .venv/bin/pip install --quiet --disable-pip-version-check -r tests/requirements.txt
  cp tests/requirements.txt .venv/.requirements
fi

step "cargo test (slow tests that build Go included)"
cargo test --workspace --locked -- --include-ignored

step "pytest"
.venv/bin/python -m pytest tests -q
