#!/usr/bin/env bash
# Build the real Kubernetes components the lab runs, from their official Go
# modules, once: etcd, kube-apiserver, kube-controller-manager, kube-scheduler,
# kube-proxy, kubelet, kubectl, CoreDNS, and the nodes' container runtime
# (containerd, its runc shim and ctr). Binaries are cached under
# deploy/kube/build/bin, each with a stamp of its own pin: a binary is rebuilt
# only when its pin in versions.env or `recipe` below changes (bump it when a
# build command here changes), and a binary that is missing is built alone.
# Prints the bin directory on stdout; progress goes to stderr.
#
# kubectl is built here too (same release as the API server) because it is not
# a Debian package and CI machines may not have it.
#
# Why containerd from its Go modules and not Debian's package: Debian 12 has
# containerd 1.6, which lacks the CRI RuntimeConfig call the kubelet uses to
# learn the cgroup driver (containerd 2.0 added it); Kubernetes deprecated
# containerd 1.x in v1.34/v1.35 and the kubelet's fallback for it is being
# removed. A node of a current release runs containerd 2.x, so the lab does too.
# runc stays Debian's (a cgo build needing libseccomp; the shim only execs it).
#
# Why a wrapper module: k8s.io/kubernetes replaces every k8s.io/<staging>
# module with ./staging/..., so `go install k8s.io/kubernetes/cmd/...@v` is
# refused. A module of our own requires k8s.io/kubernetes and replaces each
# staging module with its published v0.Y.Z of the same release.
# First build: about 10-15 minutes on 2 cores with cold Go caches.
#
# The Kubernetes release is a knob: KUBERNETES_VERSION=v1.35.4 in the
# environment builds that release instead of the pin in versions.env (the
# staging modules of the same release, v0.35.4), into build/v1.35.4/bin, so
# switching back and forth rebuilds nothing; the pinned release stays in build/bin.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
override="${KUBERNETES_VERSION:-}"
# shellcheck source=SCRIPTDIR/versions.env
source "$here/versions.env"
out="$here/build"
bin="$out/bin"
recipe=3
if [[ -n "$override" && "$override" != "$KUBERNETES_VERSION" ]]; then
  [[ "$override" =~ ^v1\.[0-9]+\.[0-9]+$ ]] || {
    echo "kube/build.sh: KUBERNETES_VERSION must look like v1.35.4 (got '$override')" >&2
    exit 2
  }
  KUBERNETES_VERSION="$override"
  bin="$out/$override/bin"
fi
tools=(etcd kube-apiserver kube-controller-manager kube-scheduler kube-proxy kubelet kubectl coredns
  containerd containerd-shim-runc-v2 ctr)
k8s_tools=(kube-proxy kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl)
runtime_tools=(containerd containerd-shim-runc-v2 ctr)

if ! command -v go >/dev/null 2>&1; then
  echo "kube/build.sh: Go is required (https://go.dev/doc/install)" >&2
  exit 1
fi
# the pin a binary is built from: its stamp holds this (and the recipe)
pin_of() {
  case "$1" in
  etcd) echo "etcd=$ETCD_VERSION" ;;
  coredns) echo "coredns=$COREDNS_VERSION" ;;
  containerd | containerd-shim-runc-v2 | ctr) echo "containerd=$CONTAINERD_VERSION" ;;
  *) echo "kubernetes=$KUBERNETES_VERSION" ;;
  esac
}
want() { echo "$(pin_of "$1") recipe=$recipe"; }
fresh() { [[ -x "$bin/$1" && -f "$bin/.$1.stamp" && "$(cat "$bin/.$1.stamp")" == "$(want "$1")" ]]; }
need() { local t; for t in "$@"; do fresh "$t" || return 0; done; return 1; }
stamp() { want "$1" >"$bin/.$1.stamp"; }
if ! need "${tools[@]}"; then
  echo "$bin"
  exit 0
fi
mkdir -p "$bin" "$out/src"
export GOFLAGS="-trimpath" CGO_ENABLED=0

kv="$KUBERNETES_VERSION"          # v1.34.2
sv="v0.${kv#v1.}"                 # v0.34.2: the staging modules' tag of the same release
k8s="$out/src/kubernetes"
[[ "$bin" == "$out/bin" ]] || k8s="$out/src/kubernetes-$kv"
mkdir -p "$k8s"
if need "${k8s_tools[@]}"; then
echo "kube/build.sh: Kubernetes $kv (staging modules $sv), about 10 minutes the first time" >&2
(
  cd "$k8s"
  go mod download -json "k8s.io/kubernetes@$kv" >/dev/null
  modfile="$(go env GOMODCACHE)/cache/download/k8s.io/kubernetes/@v/$kv.mod"
  {
    echo "module trace-gen-sink.lab/kubernetes"
    echo
    echo "go $(sed -n 's/^go //p' "$modfile")"
    echo
    echo "require k8s.io/kubernetes $kv"
    echo
    echo "replace ("
    sed -n 's#^[[:space:]]*\(k8s.io/[a-z0-9-]*\) => ./staging/.*#\1#p' "$modfile" | sort -u |
      while read -r m; do echo "	$m => $m $sv"; done
    echo ")"
  } >go.mod
  cat >tools.go <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-proxy"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubelet"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
GO
  go mod tidy >&2
  pkg=k8s.io/component-base/version
  ldflags="-s -w -X $pkg.gitVersion=$kv -X $pkg.gitMajor=1 -X $pkg.gitMinor=$(echo "$kv" | cut -d. -f2) -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  for t in "${k8s_tools[@]}"; do
    fresh "$t" && continue
    echo "kube/build.sh: go build $t" >&2
    go build -ldflags "$ldflags" -o "$bin/$t" "k8s.io/kubernetes/cmd/$t"
    stamp "$t"
  done
)
fi

etcd="$out/src/etcd"
mkdir -p "$etcd"
if ! fresh etcd; then
echo "kube/build.sh: etcd $ETCD_VERSION" >&2
(
  cd "$etcd"
  cat >go.mod <<GOMOD
module trace-gen-sink.lab/etcd

go 1.24

require go.etcd.io/etcd/server/v3 $ETCD_VERSION
GOMOD
  cat >main.go <<'GO'
// The real etcd command line: etcdmain.Main is what the upstream etcd binary runs.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO
  go mod tidy >&2
  go build -ldflags "-s -w" -o "$bin/etcd" .
)
stamp etcd
fi

if ! fresh coredns; then
  echo "kube/build.sh: CoreDNS $COREDNS_VERSION" >&2
  GOBIN="$bin" go install -ldflags "-s -w" "github.com/coredns/coredns@$COREDNS_VERSION"
  stamp coredns
fi

if need "${runtime_tools[@]}"; then
  echo "kube/build.sh: containerd $CONTAINERD_VERSION (containerd, containerd-shim-runc-v2, ctr)" >&2
  # no cgo: the snapshotters that need it (btrfs, devmapper, zfs) are left out; the nodes use overlayfs
  CGO_ENABLED=0 GOBIN="$bin" go install -ldflags "-s -w" -tags "no_btrfs no_devmapper no_zfs" \
    "github.com/containerd/containerd/v2/cmd/containerd@$CONTAINERD_VERSION" \
    "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2@$CONTAINERD_VERSION" \
    "github.com/containerd/containerd/v2/cmd/ctr@$CONTAINERD_VERSION"
  for t in "${runtime_tools[@]}"; do stamp "$t"; done
fi

for t in "${tools[@]}"; do
  fresh "$t" || { echo "kube/build.sh: $t was not built" >&2; exit 1; }
done
echo "$bin"
