#!/usr/bin/env bash
# Runs every test of the project. On a fresh machine it installs what the tests
# need by itself: a Python venv with tests/requirements.txt (pinned), the
# OpenTelemetry Collector build (Go, cached), the real Kubernetes components
# (Go, cached; the sink's Kubernetes tests run kube-apiserver), and the release binaries.
# Needs: cargo (Rust), go, python3. As root (as CI runs it) it also installs
# podman, buildah, runc and debootstrap from Debian, builds the container images
# (deploy/images/build.sh, cached) and runs their tests (tests/images), which
# need root; without root it says so and leaves tests/images out. As root it also
# installs Chromium (the page test, tests/web) when missing; without root and
# without Chromium it says so and leaves tests/web out.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

need() {
  command -v "$1" >/dev/null 2>&1 || { echo "run-tests.sh: $1 is required ($2)" >&2; exit 2; }
}
need cargo "https://rustup.rs"
need go "https://go.dev/doc/install"
need python3 "python 3.11+ with venv"

# The last line of the run is its totals, `N passed, N failed[, N skipped]`, added up
# from cargo test's and pytest's own result lines (tests/run_tests/totals.py), printed
# even when a step failed; the exit status is then non-zero and that step is named.
logs="$(mktemp -d)"
current=""
failed_steps=""
finish() {
  local rc=$?
  trap - EXIT
  if [[ -n $failed_steps ]]; then
    printf '\nrun-tests.sh: failed: %s\n' "$failed_steps"
    ((rc)) || rc=1
  elif ((rc)); then
    printf '\nrun-tests.sh: step "%s" failed (exit %d)\n' "$current" "$rc"
  fi
  printf '\n'
  python3 tests/run_tests/totals.py "$logs"/*.log || rc=2
  rm -rf "$logs"
  exit "$rc"
}
trap finish EXIT

step() { current="$*"; printf '\n== %s\n' "$*"; }

# Runs a test command, keeping its output for the totals; a failure is recorded and
# the next test step still runs.
tests_step() {
  local name=$1 log=$2
  shift 2
  step "$name"
  if ! "$@" 2>&1 | tee "$logs/$log.log"; then
    failed_steps+="${failed_steps:+, }$name"
  fi
}

step "release binaries (the Dockerfile's build command)"
cargo build --release --locked --bin trace-gen --bin trace-sink

step "OpenTelemetry Collector (official builder, cached)"
bash deploy/collector/build.sh >/dev/null

step "Kubernetes components: etcd, kube-apiserver, ... (official Go modules, cached)"
bash deploy/kube/build.sh >/dev/null

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

# The page test (tests/web) drives Debian's Chromium; the shell recipe's test needs jq and curl.
missing=()
for tool in chromium:chromium chromedriver:chromium-driver jq:jq curl:curl; do
  command -v "${tool%%:*}" >/dev/null 2>&1 || missing+=("${tool#*:}")
done
if ((${#missing[@]})); then
  if [[ "$(id -u)" == 0 ]]; then
    step "Debian packages for the browser and recipe tests: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  elif ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
    step "page test in Chromium: NOT run (needs chromium and chromium-driver; sudo ./run-tests.sh installs them)"
    pytest_args+=(--ignore=tests/web)
  fi
fi

step "Python test environment (.venv, tests/requirements.txt)"
if [[ ! -x .venv/bin/python ]]; then
  python3 -m venv .venv
fi
if ! cmp -s tests/requirements.txt .venv/.requirements 2>/dev/null; then
  .venv/bin/pip install --quiet --disable-pip-version-check -r tests/requirements.txt
  cp tests/requirements.txt .venv/.requirements
fi

tests_step "cargo test (slow tests that build Go included)" cargo cargo test --workspace --locked --no-fail-fast -- --include-ignored
tests_step "pytest" pytest .venv/bin/python -m pytest tests -q "${pytest_args[@]}"
