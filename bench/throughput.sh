#!/usr/bin/env bash
# Throughput and memory of trace-sink fed by trace-gen on loopback.
# Prints figures; asserts nothing (timing on a shared machine is not a test).
# gen RSS needs /usr/bin/time (Debian package time); 0.0 without it.
#   bench/throughput.sh [SPANS]      default 300000 spans per protocol
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
spans="${1:-300000}"
cargo build --release --locked --bin trace-gen --bin trace-sink >/dev/null 2>&1
tmp="$(mktemp -d)"
sink_pid=""
cleanup() { [[ -n "$sink_pid" ]] && kill "$sink_pid" 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT

RUST_LOG=info NO_COLOR=1 target/release/trace-sink --grpc-listen 127.0.0.1:0 \
  --http-listen 127.0.0.1:0 --api-listen 127.0.0.1:0 2>"$tmp/sink.log" &
sink_pid=$!
for _ in $(seq 50); do grep -q "listening" "$tmp/sink.log" && break; sleep 0.1; done
line="$(grep -m1 listening "$tmp/sink.log")"
grpc="$(sed -E 's/.*OTLP\/gRPC on ([^,]+),.*/\1/' <<<"$line")"
http="$(sed -E 's/.*OTLP\/HTTP on ([^,]+),.*/\1/' <<<"$line")"
api="$(sed -E 's/.*API on ([^ ]+).*/\1/' <<<"$line")"

printf '%-16s %10s %8s %12s %12s\n' protocol spans batch "spans/s" "gen RSS MiB"
for proto in grpc http/protobuf http/json; do
  ep="http://$grpc"; [[ "$proto" != grpc ]] && ep="http://$http"
  echo 0 >"$tmp/rss"
  timer=(); [[ -x /usr/bin/time ]] && timer=(/usr/bin/time -f "%M" -o "$tmp/rss")
  "${timer[@]}" target/release/trace-gen --node-name bench \
    --endpoint "$ep" --protocol "$proto" --rate 0 --batch 500 --workers 4 --count "$spans" \
    --stats-listen off --report-interval 0s --summary-json "$tmp/summary.json" 2>/dev/null || true
  rate="$(python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(round(r["spans_accepted"]/r["elapsed_seconds"]))' "$tmp/summary.json")"
  printf '%-16s %10s %8s %12s %12s\n' "$proto" "$spans" 500 "$rate" "$(awk '{printf "%.1f", $1/1024}' "$tmp/rss")"
done
total="$(curl -s "http://$api/stats" | python3 -c 'import json,sys; s=json.load(sys.stdin); print(s["spans_total"], s["generators"][0]["missing"])')"
echo "sink received (spans_total, missing of first generator): $total"
echo "sink peak RSS: $(awk '/VmHWM/ {printf "%.1f MiB", $2/1024}' "/proc/$sink_pid/status")"
