#!/usr/bin/env bash
# Build the benchmark's peers from the Go module proxy, once; cached under
# bench/build/ and rebuilt only when a pin (or the collector manifest) changes.
#   telemetrygen  github.com/open-telemetry/opentelemetry-collector-contrib/cmd/telemetrygen
#   otelcol-bench otlp receiver + nop and debug exporters (bench/collector-builder.yaml)
# Prints "name=path" lines on stdout.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# Newest telemetrygen the Go module proxy served when this was pinned
# (go list -m -versions .../cmd/telemetrygen); it has no v0.165.0.
telemetrygen_version=v0.161.0
builder_version=v0.165.0
out="$here/build"
mkdir -p "$out"
if ! command -v go >/dev/null 2>&1; then
  echo "build-peers.sh: Go is required to build the peers (https://go.dev/doc/install)" >&2
  exit 1
fi

# telemetrygen
tg="$out/telemetrygen"
tg_stamp="$out/.telemetrygen.version"
if [[ ! -x "$tg" || ! -f "$tg_stamp" || "$(cat "$tg_stamp")" != "$telemetrygen_version" ]]; then
  echo "build-peers.sh: building telemetrygen $telemetrygen_version" >&2
  GOBIN="$out" nice go install \
    "github.com/open-telemetry/opentelemetry-collector-contrib/cmd/telemetrygen@$telemetrygen_version" >&2
  echo "$telemetrygen_version" >"$tg_stamp"
fi
echo "telemetrygen=$tg"

# the reference collector (otlp receiver -> nop / debug exporter)
manifest="$here/collector-builder.yaml"
col="$out/otelcol-bench/otelcol-bench"
col_stamp="$out/.otelcol-bench.sha256"
want="$(cat "$manifest" <(echo "$builder_version") | sha256sum | cut -d' ' -f1)"
if [[ ! -x "$col" || ! -f "$col_stamp" || "$(cat "$col_stamp")" != "$want" ]]; then
  gobin="$(go env GOPATH)/bin"
  if [[ ! -x "$gobin/builder" ]] || [[ "$("$gobin/builder" version 2>&1)" != *"${builder_version#v}"* ]]; then
    echo "build-peers.sh: installing go.opentelemetry.io/collector/cmd/builder@$builder_version" >&2
    go install "go.opentelemetry.io/collector/cmd/builder@$builder_version" >&2
  fi
  echo "build-peers.sh: building the reference collector (a few minutes the first time)" >&2
  (cd "$here" && nice "$gobin/builder" --config "$manifest" >&2)
  echo "$want" >"$col_stamp"
fi
echo "collector=$col"
