#!/usr/bin/env bash
# The lab: the project's verification (trace-verify) against a three-node
# Kubernetes cluster of real components on this Linux machine, in one command.
#
#   sudo deploy/lab/run.sh [lab.py options...]   (deploy/lab/lab.py --help lists them)
#   sudo KUBERNETES_VERSION=v1.35.4 deploy/lab/run.sh   (another Kubernetes release than the pin
#                                                 in deploy/kube/versions.env; built once, cached)
#
# Refuses at once while another lab run is active. Checks the prerequisites
# (installs missing Debian packages with apt-get), builds the collector, the
# Kubernetes components and the images of trace-gen, trace-sink, the agent,
# CoreDNS and pause (deploy/images/build.sh --lab; all cached: a second run
# builds nothing), then runs deploy/lab/lab.py: namespaces, control plane, per node
# containerd + kubelet + kube-proxy, CoreDNS, trace-verify's matrix, the kubelet proofs,
# results under target/lab/, cleanup.
# Exit code: 0 every step as promised, 1 a step failed, 2 missing
# prerequisite (Rust, Go or Python older than README.md says: one line naming
# it), build failure or another run active, 130 interrupted.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"

say() { printf '[run.sh] %s\n' "$*"; }
die() {
  printf '[run.sh] error: %s\n' "$*" >&2
  exit 2
}

# Rust, Go and Python at their minimum versions (deploy/lib/toolchain.sh): found
# under sudo too, where secure_path drops ~/.cargo/bin; builds run as the invoking
# user, so target/ stays theirs.
# shellcheck source=deploy/lib/toolchain.sh
source "$repo/deploy/lib/toolchain.sh"
toolchain_path
toolchain_check "[run.sh] error" rust go

if [[ "$(id -u)" -ne 0 ]]; then
  die "must run as root (it creates network namespaces and runs kube-proxy): sudo $0 $*"
fi

# One lab at a time (the namespaces and addresses are fixed): the lock is held
# by this process and its children until the lab has cleaned up.
lock=/run/trace-gen-sink-lab.lock
exec 9>>"$lock"
if ! flock -n 9; then
  die "another lab run is active ($(cat "$lock" 2>/dev/null || echo unknown)); wait for it to end"
fi
: >"$lock"
echo "pid $$, started $(date -u +%Y-%m-%dT%H:%M:%SZ), by ${SUDO_USER:-root}, in $repo" >"$lock"
export TRACE_LAB_LOCKED=1

# command -> Debian package that provides it
declare -A packages=([ip]=iproute2 [nft]=nftables [iptables]=iptables [python3]=python3 [openssl]=openssl
  [flock]=util-linux [column]=bsdextrautils)
missing=()
for cmd in "${!packages[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${packages[$cmd]}")
done
[[ -x /usr/lib/cni/ptp && -x /usr/lib/cni/host-local && -x /usr/lib/cni/loopback ]] ||
  missing+=(containernetworking-plugins)
# the nodes' runc (containerd is built with the Kubernetes components) and the image build
declare -A runtime=([runc]=runc [buildah]=buildah [debootstrap]=debootstrap)
for cmd in "${!runtime[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${runtime[$cmd]}")
done
[[ -x /bin/busybox ]] || missing+=(busybox-static)
if ((${#missing[@]})); then
  command -v apt-get >/dev/null 2>&1 ||
    die "missing packages: ${missing[*]} (no apt-get here: install them with your package manager)"
  say "installing missing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq || die "apt-get update failed"
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null ||
    die "apt-get install ${missing[*]} failed"
fi
toolchain_check "[run.sh] error" python
[[ -e /proc/self/ns/net ]] || die "this kernel has no network namespaces"

say "building the collector (deploy/collector/build.sh; cached)"
as_user bash "$repo/deploy/collector/build.sh" >/dev/null || die "collector build failed"
say "building the Kubernetes components (deploy/kube/build.sh; cached: the long step of a first run)"
kube_bin="$(as_user env "KUBERNETES_VERSION=${KUBERNETES_VERSION:-}" nice bash "$repo/deploy/kube/build.sh")" || die "Kubernetes build failed"
say "building trace-verify (cargo build --release -p trace-verify; cached)"
(cd "$repo" && as_user nice cargo build --release --locked -p trace-verify -q) ||
  die "trace-verify build failed"
# as root: buildah's storage is the machine's (/var/lib/containers), shared with run-tests.sh
say "building the images (deploy/images/build.sh --lab; cached, shared with run-tests.sh)"
(cd "$repo" && nice bash deploy/images/build.sh --lab >/dev/null) || die "image build failed"

# Files the lab writes as root under target/ are handed to the invoking user.
out="$repo/target/lab"

# lab.py cleans up after itself (try/finally, signal handlers) and its processes
# die with it (parent-death signal). This trap is the last line: if lab.py itself
# was killed, remove what it left behind (processes, namespaces with their rules).
lab_pid=""
# shellcheck disable=SC2317,SC2329  # called from the trap
cleanup() {
  if [[ -n "$lab_pid" ]] && kill -0 "$lab_pid" 2>/dev/null; then
    kill -TERM "$lab_pid" 2>/dev/null || true
    wait "$lab_pid" 2>/dev/null || true
  fi
  python3 "$here/lab.py" cleanup >/dev/null 2>&1 || true
  give_back "$out"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

# In the background + wait, so a signal to this script reaches the trap at once.
python3 "$here/lab.py" run \
  --out "$out" \
  --kube-bin "$kube_bin" \
  "$@" &
lab_pid=$!
rc=0
wait "$lab_pid" || rc=$?
lab_pid=""
exit "$rc"
