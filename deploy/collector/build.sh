#!/usr/bin/env bash
# Build the OpenTelemetry Collector distribution in builder-config.yaml with the
# official builder, once: the binary is cached under deploy/collector/build/ and
# rebuilt only when the manifest changes. Prints the binary's path on stdout.
# The binary is static (CGO_ENABLED=0: Go's own resolver and user lookup), so it
# runs the same on any Linux and from a `scratch` image (deploy/images).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
builder_version=v0.165.0
manifest="$here/builder-config.yaml"
out="$here/build"
bin="$out/otelcol-trace-lab"
stamp="$out/.manifest.sha256"

if ! command -v go >/dev/null 2>&1; then
  echo "build.sh: Go is required to build the collector (https://go.dev/doc/install)" >&2
  exit 1
fi
want="$(sha256sum "$manifest" | cut -d' ' -f1)"
# A binary built before the build was static (cgo) is rebuilt once.
if [[ -x "$bin" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]] \
  && [[ "$(go version -m "$bin" 2>/dev/null)" == *CGO_ENABLED=0* ]]; then
  echo "$bin"
  exit 0
fi
gobin="$(go env GOPATH)/bin"
if [[ ! -x "$gobin/builder" ]] || [[ "$("$gobin/builder" version 2>&1)" != *"${builder_version#v}"* ]]; then
  echo "build.sh: installing go.opentelemetry.io/collector/cmd/builder@$builder_version" >&2
  go install "go.opentelemetry.io/collector/cmd/builder@$builder_version" >&2
fi
echo "build.sh: building the collector (about 2 minutes the first time)" >&2
(cd "$here" && CGO_ENABLED=0 "$gobin/builder" --config "$manifest" >&2)
echo "$want" >"$stamp"
echo "$bin"
