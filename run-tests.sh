#!/usr/bin/env bash
# Runs every test of the project. On a fresh machine it installs what the tests
# need by itself: a Python venv with tests/requirements.txt (pinned), the
# OpenTelemetry Collector build (Go, cached), the real Kubernetes components
# (Go, cached; the sink's Kubernetes tests run kube-apiserver), and the release binaries.
# Needs: Rust, Go and Python 3 at the versions README.md names (checked first:
# one line and exit 2 if one is missing or too old). As root (as CI runs it) it
# also installs podman, buildah, runc and debootstrap from Debian, builds the
# container images (deploy/images/build.sh, cached) and runs their tests
# (tests/images), which need root; without root it says so and leaves
# tests/images out. Under sudo it finds cargo and go in the invoking user's
# usual places, builds and runs cargo as that user, and hands back to them what
# root wrote (target/, .venv, the build caches), as deploy/lab/run.sh does. As
# root it also installs Chromium (the page test, tests/web) when missing; without
# root and without Chromium it says so and leaves tests/web out.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

# shellcheck source=deploy/lib/toolchain.sh
source deploy/lib/toolchain.sh
toolchain_path
toolchain_check run-tests.sh rust go python

# What a run writes in the checkout; under sudo it is handed to the invoking user
# at the end, and before the builds (a root-owned target/ or .venv left by an
# earlier root run would make the user's cargo or pip fail).
give_back_outputs() {
  local caches=()
  mapfile -t caches < <(find tests deploy bench -name __pycache__ -type d -user 0 2>/dev/null)
  give_back target .venv .pytest_cache deploy/collector/build deploy/kube/build "${caches[@]}"
}
give_back_outputs

# The last line of the run is its totals, `N passed, N failed[, N skipped]`, added up
# from cargo test's and pytest's own result lines (tests/run_tests/totals.py), printed
# even when a step failed; the exit status is then non-zero and that step is named.
logs="$(mktemp -d)"
current=""
failed_steps=""
finish() {
  local rc=$?
  trap - EXIT
  # a step failed while the image build ran in the background: stop it
  if [[ -n ${images_pid:-} ]]; then
    kill "$images_pid" 2>/dev/null || true
    wait "$images_pid" 2>/dev/null || true
    [[ -z ${images_out:-} ]] || { cat "$images_out"; rm -f "$images_out"; }
  fi
  if [[ -n $failed_steps ]]; then
    printf '\nrun-tests.sh: failed: %s\n' "$failed_steps"
    ((rc)) || rc=1
  elif ((rc)); then
    printf '\nrun-tests.sh: step "%s" failed (exit %d)\n' "$current" "$rc"
  fi
  printf '\n'
  python3 tests/run_tests/totals.py "$logs"/*.log || rc=2
  rm -rf "$logs"
  give_back_outputs
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
as_user cargo build --release --locked --bin trace-gen --bin trace-sink

step "OpenTelemetry Collector (official builder, cached)"
as_user bash deploy/collector/build.sh >/dev/null

# As root the container images (which need the collector above) build in the
# background while the Kubernetes components build: on a cold machine both take
# minutes, and each leaves a core idle at times (the image's debootstrap, Go's
# serial links), so together they take less than one after the other.
pytest_args=()
images_pid=""
images_out=""
if [[ "$(id -u)" == 0 ]]; then
  step "container images (deploy/images/build.sh: podman, buildah, runc from Debian; cached; in the background)"
  missing=()
  for tool in podman:podman buildah:buildah runc:runc debootstrap:debootstrap ip:iproute2; do
    command -v "${tool%%:*}" >/dev/null 2>&1 || missing+=("${tool#*:}")
  done
  if ((${#missing[@]})); then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
  # The image build (root) seeds its cache from the cargo registry: fetched here as the
  # invoking user, so root finds every crate there and writes nothing into their ~/.cargo.
  as_user cargo fetch --locked --quiet
  images_out="$(mktemp)"
  bash deploy/images/build.sh >"$images_out" 2>&1 &
  images_pid=$!
else
  step "container images: NOT built or tested (needs root: sudo ./run-tests.sh)"
  pytest_args+=(--ignore=tests/images)
fi

step "Kubernetes components: etcd, kube-apiserver, ... (official Go modules, cached)"
as_user bash deploy/kube/build.sh >/dev/null

if [[ -n $images_pid ]]; then
  step "container images: the build started above"
  images_rc=0
  wait "$images_pid" || images_rc=$?
  images_pid=""
  cat "$images_out"
  rm -f "$images_out"
  ((images_rc == 0)) || exit "$images_rc"
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
  as_user python3 -m venv .venv
fi
if ! cmp -s tests/requirements.txt .venv/.requirements 2>/dev/null; then
  as_user .venv/bin/pip install --quiet --disable-pip-version-check -r tests/requirements.txt
  as_user cp tests/requirements.txt .venv/.requirements
fi

tests_step "cargo test (slow tests that build Go included)" cargo as_user cargo test --workspace --locked --no-fail-fast -- --include-ignored
tests_step "pytest" pytest .venv/bin/python -m pytest tests -q "${pytest_args[@]}"
