#!/usr/bin/env bash
# The lab: verify node-local trace routing on this Linux machine, in one command.
#
#   sudo deploy/lab/run.sh [--out DIR] [lab.py options...]   (deploy/lab/lab.py --help lists them)
#
# Checks the prerequisites (installs missing Debian packages with apt-get), builds
# trace-gen, trace-sink and the collector (cached: a second run builds nothing),
# then runs deploy/lab/lab.py: network namespaces, kube-proxy-like nftables rules,
# real agents, the five scenarios, a results table under target/lab/, and cleanup.
# Exit code: 0 every scenario as expected, 1 a scenario failed, 2 missing
# prerequisite or build failure, 130 interrupted.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../../.." && pwd)"

say() { printf '[run.sh] %s\n' "$*"; }
die() {
  printf '[run.sh] error: %s\n' "$*" >&2
  exit 2
}

if [[ "$(id -u)" -ne 0 ]]; then
  die "must run as root (it creates network namespaces and nftables rules): sudo $0 $*"
fi

# command -> Debian package that provides it
declare -A packages=([ip]=iproute2 [nft]=nftables [python3]=python3)
missing=()
for cmd in ip nft python3; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${packages[$cmd]}")
done
if ((${#missing[@]})); then
  command -v apt-get >/dev/null 2>&1 ||
    die "missing packages: ${missing[*]} (no apt-get here: install them with your package manager)"
  say "installing missing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq || die "apt-get update failed"
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null ||
    die "apt-get install ${missing[*]} failed"
fi
# sudo resets PATH: look for Go and Rust where they are usually installed, for
# the invoking user too, and build as that user so target/ stays theirs.
user_home="$HOME"
if [[ -n "${SUDO_USER:-}" && "$SUDO_USER" != root ]]; then
  user_home="$(getent passwd "$SUDO_USER" | cut -d: -f6)"
fi
for dir in "$user_home/.cargo/bin" "$HOME/.cargo/bin" /usr/local/go/bin "$user_home/go/bin"; do
  [[ -d "$dir" ]] && PATH="$PATH:$dir"
done
export PATH
as_user() {
  if [[ -n "${SUDO_USER:-}" && "$SUDO_USER" != root ]]; then
    sudo -u "$SUDO_USER" env "PATH=$PATH" "HOME=$user_home" "$@"
  else
    "$@"
  fi
}

python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
  die "python3 >= 3.11 is needed (found $(python3 --version 2>&1))"
# Debian's Go and Rust are too old for the collector builder and the workspace.
command -v go >/dev/null 2>&1 ||
  die "Go is needed to build the OpenTelemetry Collector: install it from https://go.dev/doc/install"
command -v cargo >/dev/null 2>&1 ||
  die "cargo is needed to build trace-gen and trace-sink: install Rust with rustup (https://rustup.rs)"
[[ -e /proc/self/ns/net ]] || die "this kernel has no network namespaces"

say "building trace-gen and trace-sink (cargo build --release --locked; cached)"
(cd "$repo" && as_user cargo build --release --locked --bin trace-gen --bin trace-sink) ||
  die "cargo build failed"
say "building the collector (deploy/collector/build.sh; cached)"
collector="$(as_user bash "$repo/deploy/collector/build.sh")" || die "collector build failed"

# lab.py cleans up after itself (try/finally, signal handlers) and its processes
# die with it (parent-death signal). This trap is the last line: if lab.py itself
# was killed, remove what it left behind (namespaces, their rules, hosts files).
lab_pid=""
# shellcheck disable=SC2317,SC2329  # called from the trap
cleanup() {
  if [[ -n "$lab_pid" ]] && kill -0 "$lab_pid" 2>/dev/null; then
    kill -TERM "$lab_pid" 2>/dev/null || true
    wait "$lab_pid" 2>/dev/null || true
  fi
  python3 "$here/lab.py" cleanup >/dev/null 2>&1 || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

# In the background + wait, so a signal to this script reaches the trap at once.
python3 "$here/lab.py" run \
  --trace-gen "$repo/target/release/trace-gen" \
  --trace-sink "$repo/target/release/trace-sink" \
  --collector "$collector" \
  "$@" &
lab_pid=$!
rc=0
wait "$lab_pid" || rc=$?
lab_pid=""
exit "$rc"
