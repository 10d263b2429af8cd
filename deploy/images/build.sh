#!/usr/bin/env bash
# Builds the container images with buildah, offline, from the project's own
# Dockerfile (the file users build in their CI) and the collector build:
#
#   localhost/trace-gen:TAG   localhost/trace-gen:latest    Dockerfile --target trace-gen
#   localhost/trace-sink:TAG  localhost/trace-sink:latest   Dockerfile --target trace-sink
#   localhost/otelcol-trace-lab:VERSION                     deploy/images/agent.Containerfile
#
# TAG is the tag the manifests use (deploy/{generator,sink}/kustomization.yaml
# `newTag`), VERSION the collector release (deploy/collector/builder-config.yaml).
#
# No registry can be reached here, so the Dockerfile's build image
# (ARG RUST_IMAGE, rust:<version>-bookworm) is replaced by a stand-in made on
# this machine by deploy/images/rust-standin.sh (Debian bookworm + the same Rust
# toolchain, laid out like the official image); every stage after that is the
# Dockerfile's own. The runtime base is the Dockerfile's default, scratch.
#
# Cheap when nothing changed:
# - the stand-in is rebuilt only when its recipe (rust-standin.sh, Rust version)
#   changes or the image is gone;
# - an image is rebuilt only when its inputs changed: the build context (the
#   files git knows, minus .dockerignore), the Dockerfile, the base image, the
#   build arguments; the inputs' hash is the image label trace-gen-sink.inputs;
# - the host's cargo registry seeds the Dockerfile's registry cache mount (no
#   crate downloads), and its target cache mount keeps cargo's target directory
#   between builds (an edit recompiles only what it touches).
#
# Prints one image name per line on stdout and writes them to
# target/images/images.env (TRACE_GEN_IMAGE=..., TRACE_SINK_IMAGE=...,
# AGENT_IMAGE=...), for the lab and the tests.
#
# With --lab, also the two images only the lab's nodes need (deploy/lab):
#
#   localhost/coredns:VERSION   deploy/images/coredns.Containerfile, the CoreDNS
#                               binary of deploy/kube/build.sh (VERSION: its pin)
#   localhost/pause:lab         deploy/images/pause.Containerfile, Debian's
#                               busybox-static (/bin/busybox)
#
# and records them as COREDNS_IMAGE and PAUSE_IMAGE.
#
# Usage: deploy/images/build.sh [--no-agent] [--lab]
# Needs root, buildah, debootstrap (for the stand-in), cargo/rustup with the
# Dockerfile's Rust version, go (for the collector and CoreDNS), Python >= 3.11
# with PyYAML (it reads Cargo.toml and the YAML with deploy/lib/config_value.py;
# installs Debian's python3-yaml when it is missing).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
here="$repo/deploy/images"
cd "$repo"

agent=1
lab=0
for arg in "$@"; do
  case "$arg" in
    --no-agent) agent=0 ;;
    --lab) lab=1 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "build.sh: unknown argument $arg (see --help)" >&2; exit 2 ;;
  esac
done

need() {
  command -v "$1" >/dev/null 2>&1 || { echo "build.sh: $1 is required ($2)" >&2; exit 2; }
}
need buildah "apt-get install buildah"
need sha256sum "coreutils"
if [[ "$(id -u)" != 0 ]]; then
  echo "build.sh: needs root (buildah's storage is /var/lib/containers, shared with podman)" >&2
  exit 2
fi

log() { printf 'build.sh: %s\n' "$*" >&2; }

# Cargo.toml and the manifests are read with a parser (tomllib, PyYAML), not sed.
need python3 "apt-get install python3"
if ! python3 -c 'import yaml' 2>/dev/null; then
  need apt-get "python3's yaml module is missing: install PyYAML"
  log "installing Debian's python3-yaml (to read the manifests)"
  if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-yaml >/dev/null; }; then
    log "apt-get install python3-yaml failed"
    exit 2
  fi
  python3 -c 'import yaml' 2>/dev/null ||
    { log "python3 ($(command -v python3)) still has no yaml module: install PyYAML for it"; exit 2; }
fi
# The value at KEY... of a TOML or YAML file; one line and exit 1 when it is not there.
value_of() { python3 "$repo/deploy/lib/config_value.py" "$@"; }
started=$SECONDS
elapsed() { echo "$((SECONDS - started))s"; }

# Label value of an image, empty when the image does not exist.
label_of() {
  buildah inspect --type image --format "{{index .OCIv1.Config.Labels \"$2\"}}" "$1" 2>/dev/null || true
}

# ---------------------------------------------------------------- inputs
rust_version="$(sed -n 's/^ARG RUST_IMAGE=rust:\([0-9.]*\)-bookworm$/\1/p' Dockerfile)"
[[ -n "$rust_version" ]] || { log "Dockerfile: no 'ARG RUST_IMAGE=rust:<version>-bookworm'"; exit 1; }
tag="$(value_of deploy/generator/kustomization.yaml images name=trace-gen newTag)"
sink_tag="$(value_of deploy/sink/kustomization.yaml images name=trace-sink newTag)"
[[ -n "$tag" && "$tag" == "$sink_tag" ]] || {
  log "deploy/{generator,sink}/kustomization.yaml must set the same newTag (have '$tag' and '$sink_tag')"
  exit 1
}
version="$(value_of Cargo.toml workspace package version)"
revision="$(git rev-parse HEAD 2>/dev/null || echo unknown)"

# ---------------------------------------------------------------- stand-in for rust:<version>-bookworm
standin="localhost/trace-gen-sink/rust-standin:$rust_version-bookworm"
# the recipe: the script without its comments, and the Rust version
recipe="$(grep -v '^[[:space:]]*#' "$here/rust-standin.sh" | cat - <(echo "$rust_version") | sha256sum | cut -c1-16)"
if [[ "$(label_of "$standin" trace-gen-sink.recipe)" == "$recipe" ]]; then
  log "stand-in $standin is up to date"
else
  need debootstrap "apt-get install debootstrap"
  log "making the stand-in $standin (debootstrap, a few minutes, once)"
  previous="$(buildah inspect --type image --format '{{.FromImageID}}' "$standin" 2>/dev/null || true)"
  bash "$here/rust-standin.sh" "$standin" "$rust_version" "$recipe"
  if [[ -n "$previous" ]]; then buildah rmi "$previous" >/dev/null 2>&1 || true; fi
  log "stand-in ready after $(elapsed)"
fi
standin_id="$(buildah inspect --type image --format '{{.FromImageID}}' "$standin")"

# ---------------------------------------------------------------- trace-gen, trace-sink
# The build context as buildah sends it: the files git knows (tracked, or new
# and not ignored) that .dockerignore does not exclude.
excluded() {
  local path="$1" pattern result=1 keep
  for pattern in "${ignores[@]}"; do
    keep=1 # a match excludes (status 0), a match of a !pattern includes again
    if [[ "$pattern" == '!'* ]]; then keep=0 pattern="${pattern#!}"; fi
    pattern="${pattern#/}" pattern="${pattern%/}"
    if [[ "$pattern" == '**/'* ]]; then
      pattern="${pattern#'**/'}"
      # shellcheck disable=SC2053 # the pattern is a glob on purpose
      [[ "$path" == $pattern || "$path" == $pattern/* || "$path" == */$pattern || "$path" == */$pattern/* ]] && result=$((1 - keep))
    else
      # shellcheck disable=SC2053
      [[ "$path" == $pattern || "$path" == $pattern/* ]] && result=$((1 - keep))
    fi
  done
  return "$result"
}
mapfile -t ignores < <(sed -e 's/#.*//' -e 's/[[:space:]]*$//' -e '/^$/d' .dockerignore)
context_hash() {
  local f files=()
  while IFS= read -r -d '' f; do
    [[ -f "$f" ]] || continue # deleted but still in the index
    excluded "$f" || files+=("$f")
  done < <({ git ls-files -z --cached --others --exclude-standard 2>/dev/null ||
    find . -type f ! -path './.git/*' -printf '%P\0'; } | sort -z)
  sha256sum -- "${files[@]}" | sha256sum | cut -d' ' -f1
}
build_args=(
  --build-arg "RUST_IMAGE=$standin"
  --build-arg "VERSION=$version"
  --build-arg "REVISION=$revision"
)
inputs="$({
  context_hash
  sha256sum Dockerfile .dockerignore
  echo "$standin_id ${build_args[*]}"
} | sha256sum | cut -c1-16)"

# The crates: the host's registry (cargo fetch: nothing to do when the host
# built the workspace before) is hard-linked into the buildah cache directory
# the Dockerfile's registry cache mount uses, so the build finds every crate
# and needs no network (crates.io is reached here only through a TLS proxy the
# build image does not trust). `buildah bud --volume` of the registry does not
# do it: with a cache mount on the same path, which of the two is mounted varies
# from run to run. The layout is buildah's (1.28: $TMPDIR or /var/tmp, then
# buildah-cache/<mount target>); were it to change, cargo would download the
# crates itself.
seed_registry() {
  need cargo "https://rustup.rs"
  cargo fetch --locked --quiet
  local registry="${CARGO_HOME:-$HOME/.cargo}/registry"
  local cache="${TMPDIR:-/var/tmp}/buildah-cache/usr/local/cargo/registry"
  mkdir -p "$cache"
  cp -al --no-clobber "$registry/." "$cache/" 2>/dev/null || cp -a --no-clobber "$registry/." "$cache/"
}

mkdir -p target/images
seeded=0
images=()
for target in trace-gen trace-sink; do
  image="localhost/$target:$tag"
  images+=("$image")
  if [[ "$(label_of "$image" trace-gen-sink.inputs)" == "$inputs" ]]; then
    log "$image is up to date"
    continue
  fi
  if ((!seeded)); then seed_registry; seeded=1; fi
  previous="$(buildah inspect --type image --format '{{.FromImageID}}' "$image" 2>/dev/null || true)"
  log "building $image (Dockerfile --target $target; log: target/images/$target.log)"
  if ! nice buildah bud \
    --file Dockerfile --target "$target" \
    "${build_args[@]}" \
    --label "trace-gen-sink.inputs=$inputs" \
    --tag "$image" --tag "localhost/$target:latest" \
    . >"target/images/$target.log" 2>&1; then
    tail -n 30 "target/images/$target.log" >&2
    log "building $image failed (whole log: target/images/$target.log)"
    exit 1
  fi
  # the image it replaces, now without a name, is removed (unless in use)
  if [[ -n "$previous" && "$previous" != "$(buildah inspect --type image --format '{{.FromImageID}}' "$image")" ]]; then
    buildah rmi "$previous" >/dev/null 2>&1 || true
  fi
  log "$image built after $(elapsed)"
done

# ---------------------------------------------------------------- small images
# An image of one static binary: IMAGE CONTAINERFILE NAME-IN-CONTEXT FILE [VERSION].
# Rebuilt only when the binary or the Containerfile changed (label
# trace-gen-sink.inputs).
context=""
trap 'if [[ -n "$context" ]]; then rm -rf "$context"; fi' EXIT
one_binary_image() {
  local image="$1" file="$2" name="$3" binary="$4" version="${5:-unknown}" inputs previous
  inputs="$({ sha256sum <"$binary"; sha256sum "$file"; echo "$version"; } | sha256sum | cut -c1-16)"
  if [[ "$(label_of "$image" trace-gen-sink.inputs)" == "$inputs" ]]; then
    log "$image is up to date"
    return 0
  fi
  log "building $image ($file)"
  previous="$(buildah inspect --type image --format '{{.FromImageID}}' "$image" 2>/dev/null || true)"
  context="$(mktemp -d "${TMPDIR:-/tmp}/image-context.XXXXXX")"
  cp "$binary" "$context/$name"
  buildah bud --quiet \
    --file "$file" \
    --build-arg "VERSION=$version" \
    --label "trace-gen-sink.inputs=$inputs" \
    --tag "$image" \
    "$context" >/dev/null
  rm -rf "$context"
  context=""
  if [[ -n "$previous" && "$previous" != "$(buildah inspect --type image --format '{{.FromImageID}}' "$image")" ]]; then
    buildah rmi "$previous" >/dev/null 2>&1 || true
  fi
  log "$image built after $(elapsed)"
}

# ---------------------------------------------------------------- the agent
if ((agent)); then
  collector="$(bash deploy/collector/build.sh)"
  agent_version="$(value_of deploy/collector/builder-config.yaml dist version)"
  image="localhost/otelcol-trace-lab:$agent_version"
  images+=("$image")
  one_binary_image "$image" "$here/agent.Containerfile" otelcol-trace-lab "$collector" "$agent_version"
fi

# ---------------------------------------------------------------- the lab's CoreDNS and pause
if ((lab)); then
  # The pause image is busybox alone on scratch: it must be linked static (ldd
  # fails on a static binary). Its banner is read whole, not piped into grep -q:
  # under pipefail, busybox killed by SIGPIPE once grep had its match failed
  # this check at random.
  banner="$( { [[ -x /bin/busybox ]] && /bin/busybox --help 2>&1; } || true)"
  if [[ "$banner" != BusyBox* ]] || ldd /bin/busybox >/dev/null 2>&1; then
    log "a static /bin/busybox is required for the pause image (apt-get install busybox-static)"
    exit 2
  fi
  kube_bin="$(bash deploy/kube/build.sh)"
  coredns_version="$(sed -n 's/^COREDNS_VERSION=//p' deploy/kube/versions.env)"
  coredns_image="localhost/coredns:$coredns_version"
  images+=("$coredns_image" "localhost/pause:lab")
  one_binary_image "$coredns_image" "$here/coredns.Containerfile" coredns "$kube_bin/coredns" "$coredns_version"
  one_binary_image localhost/pause:lab "$here/pause.Containerfile" busybox /bin/busybox
fi

# ---------------------------------------------------------------- record
{
  echo "# written by deploy/images/build.sh"
  echo "TRACE_GEN_IMAGE=${images[0]}"
  echo "TRACE_SINK_IMAGE=${images[1]}"
  if ((agent)); then echo "AGENT_IMAGE=${images[2]}"; fi
  if ((lab)); then
    echo "COREDNS_IMAGE=$coredns_image"
    echo "PAUSE_IMAGE=localhost/pause:lab"
  fi
} >target/images/images.env
for image in "${images[@]}"; do
  log "$(buildah images --format '{{.Name}}:{{.Tag}} {{.Size}}' "$image" | sed -n 1p)"
done
log "done after $(elapsed); names in target/images/images.env"
printf '%s\n' "${images[@]}"
