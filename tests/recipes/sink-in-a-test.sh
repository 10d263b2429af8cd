#!/usr/bin/env bash
# A sink inside your own test, from a shell: port 0, the ports from --listen-file, curl.
set -euo pipefail
dir=$(mktemp -d)
trace-sink --grpc-listen 127.0.0.1:0 --http-listen 127.0.0.1:0 --api-listen 127.0.0.1:0 \
  --listen-file "$dir/ports.json" 2>"$dir/sink.log" &
sink=$!
trap 'kill $sink; rm -rf "$dir"' EXIT
for _ in $(seq 100); do [[ -e $dir/ports.json ]] && break; sleep 0.1; done  # written whole, once listening
grpc=$(jq -r .grpc "$dir/ports.json")
api=$(jq -r .api "$dir/ports.json")

# 100 spans from node-1; the attribute stands in for an agent on node-1 stamping its node.
trace-gen --node-name node-1 --resource-attribute agent.node.name=node-1 \
  --endpoint "http://$grpc" --count 100 --rate 0 --stats-listen off

curl -fsS -w "\n" "http://$api/check?expect=local&min_spans=100"  # HTTP 412 if not: curl exits 22
curl -fsS "http://$api/stats" | jq -c '.routes[] | {generator_node, agent_node, spans}'
