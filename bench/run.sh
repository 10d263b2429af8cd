#!/usr/bin/env bash
# The side-by-side benchmark in one command (see bench/run.py for what it measures):
#   bench/run.sh [--reps N] [--scale F] [--only sink,gen,rate,e2e,stats]
# Builds the release binaries, the peers from the Go module proxy (cached, see
# bench/build-peers.sh) and the agent (deploy/collector/build.sh, cached), then
# prints one table and writes it as JSON to bench/results/<UTC time>.json and
# bench/results/latest.json. Needs cargo, go, python3 (stdlib only). Loopback only;
# about 8 minutes at the defaults on 2 cores. Not a pass/fail step: it exits 0
# whatever the figures are (non-zero only when something could not be built or run).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
cd "$repo"
echo "bench: building trace-gen and trace-sink (release)" >&2
nice cargo build --release --locked --bin trace-gen --bin trace-sink >&2
declare -A bin
while IFS='=' read -r k v; do bin[$k]="$v"; done < <("$here/build-peers.sh")
bin[agent]="$(deploy/collector/build.sh)"
bins="$(python3 -c 'import json,sys; print(json.dumps(dict(zip(sys.argv[1::2], sys.argv[2::2]))))' \
  trace-sink "$repo/target/release/trace-sink" trace-gen "$repo/target/release/trace-gen" \
  telemetrygen "${bin[telemetrygen]}" collector "${bin[collector]}" agent "${bin[agent]}")"
out="$here/results/$(date -u +%Y%m%dT%H%M%SZ).json"
python3 "$here/run.py" --bins "$bins" --json "$out" "$@"
cp "$out" "$here/results/latest.json"
