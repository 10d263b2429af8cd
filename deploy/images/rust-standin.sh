#!/usr/bin/env bash
# Makes the local stand-in for the Dockerfile's build image `rust:<version>-bookworm`
# (no registry can be reached here, so the official image cannot be pulled):
#
#   debootstrap --variant=minbase bookworm + gcc, libc6-dev, ca-certificates
#   + this machine's rustup toolchain <version> as installed, without its HTML docs
#     under /usr/local/rustup, with rustup's proxies in /usr/local/cargo/bin
#   + the official image's environment: RUSTUP_HOME=/usr/local/rustup,
#     CARGO_HOME=/usr/local/cargo, PATH=/usr/local/cargo/bin:..., RUST_VERSION
#
# That is what the Dockerfile's build stage relies on from the official image
# (a Debian bookworm with a C toolchain and glibc's static libc.a, Rust at
# the pinned version behind rustup's proxies, CARGO_HOME=/usr/local/cargo).
# The official image has more (buildpack-deps: git, curl, make, pkg-config,
# ...); the build stage uses none of it.
#
#   rust-standin.sh IMAGE RUST_VERSION
#
# Commits IMAGE (e.g. localhost/trace-gen-sink/rust-standin:1.95.0-bookworm)
# labelled trace-gen-sink.recipe=<hash build.sh computes from this script and the version>;
# deploy/images/build.sh calls it only when that label is missing or differs.
# Needs root, debootstrap, buildah and the toolchain (`rustup toolchain list`).
set -euo pipefail
image="${1:?usage: rust-standin.sh IMAGE RUST_VERSION}"
version="${2:?usage: rust-standin.sh IMAGE RUST_VERSION}"
recipe="${3:?recipe hash (given by build.sh)}"
arch="$(uname -m)"
toolchain="$version-$arch-unknown-linux-gnu"

sysroot="$(rustc "+$version" --print sysroot 2>/dev/null)" || {
  echo "rust-standin.sh: Rust toolchain $version is not installed (rustup toolchain install $version --profile minimal)" >&2
  exit 1
}
rustup_bin="$(command -v rustup)" || { echo "rust-standin.sh: rustup is required" >&2; exit 1; }
# The Debian mirror apt uses on this machine (deb.debian.org by default).
mirror="$(sed -n 's/^URIs: *\(http[^ ]*\/debian\)$/\1/p; T; q' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)"
mirror="${mirror:-http://deb.debian.org/debian}"

work="$(mktemp -d "${TMPDIR:-/var/tmp}/rust-standin.XXXXXX")"
ctr=""
cleanup() {
  if [[ -n "$ctr" ]]; then buildah rm "$ctr" >/dev/null 2>&1 || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

echo "rust-standin.sh: debootstrap bookworm (minbase + gcc, libc6-dev) from $mirror" >&2
debootstrap --variant=minbase --include=gcc,libc6-dev,ca-certificates \
  bookworm "$work/rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 || {
  tail -n 20 "$work/debootstrap.log" >&2
  exit 1
}
# As in Debian's official images: no apt lists or caches in the image.
rm -rf "$work/rootfs/var/lib/apt/lists/"* "$work/rootfs/var/cache/apt/"*.bin \
  "$work/rootfs/var/cache/apt/archives/"*.deb "$work/rootfs/var/log/"*

echo "rust-standin.sh: toolchain $toolchain from $sysroot" >&2
rustup_home="$work/rootfs/usr/local/rustup"
cargo_home="$work/rootfs/usr/local/cargo"
mkdir -p "$rustup_home/toolchains/$toolchain" "$cargo_home/bin"
# rustc, cargo, the standard library; not the 600 MB of HTML docs.
tar -C "$sysroot" --exclude=./share/doc -cf - . | tar -C "$rustup_home/toolchains/$toolchain" -xf -
cp "$rustup_bin" "$cargo_home/bin/rustup"
for proxy in cargo rustc rustdoc cargo-clippy clippy-driver cargo-fmt rustfmt; do
  ln -s rustup "$cargo_home/bin/$proxy"
done
cat >"$rustup_home/settings.toml" <<EOF
version = "12"
default_toolchain = "$toolchain"
profile = "minimal"

[overrides]
EOF

ctr="$(buildah from scratch)"
buildah copy --quiet "$ctr" "$work/rootfs" / >/dev/null
buildah config \
  --env RUSTUP_HOME=/usr/local/rustup \
  --env CARGO_HOME=/usr/local/cargo \
  --env PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  --env RUST_VERSION="$version" \
  --cmd /bin/bash \
  --label "org.opencontainers.image.description=Local stand-in for rust:$version-bookworm (deploy/images/rust-standin.sh)" \
  --label "trace-gen-sink.recipe=$recipe" \
  "$ctr"
buildah commit --quiet --rm "$ctr" "$image" >/dev/null
ctr=""
echo "rust-standin.sh: committed $image" >&2
