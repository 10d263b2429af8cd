#!/usr/bin/env bash
# Runs every test of the project. On a fresh machine it installs what the tests
# need by itself: a Python venv with tests/requirements.txt (pinned), the
# OpenTelemetry Collector build (Go, cached), and the release binaries.
# Needs: cargo (Rust), go, python3. As root (as CI runs it) it also installs
# podman, buildah, runc and debootstrap from Debian, builds the container images
# (deploy/images/build.sh, cached) and runs their tests (tests/images), which
# need root; without root it says so and leaves tests/images out.
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

pytest_args=()
if [[ "$(id -u)" == 0 ]]; then
  step "container images (deploy/images/build.sh: podman, buildah, runc from Debian; cached)"
  missing=()
  for tool in podman:podman buildah:buildah runc:runc debootstrap:debootstrap ip:iproute2; do
    command -v "${tool%%:*}" >/dev/null 2>&1 || missing+=("${tool#*:}")
  done
  if ((${#missing[@]})); then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
  bash deploy/images/build.sh
else
  step "container images: NOT built or tested (needs root: sudo ./run-tests.sh)"
  pytest_args+=(--ignore=tests/images)
fi

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
.venv/bin/python -m pytest tests -q "${pytest_args[@]}"
