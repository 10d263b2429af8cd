#!/usr/bin/env bash
# deploy/verify.sh: the node-local traffic verification on a real cluster.
#
# Uses kubectl and its current context. Deploys the agent under test, the sink
# and one generator per node (deploy/), then asserts with `trace-sink check`,
# run inside the sink pod:
#   1. every node's generator delivers, and all its spans came through the
#      agent on its own node;
#   2. the agent is removed from one node (the node is labelled
#      trace-gen-sink/no-agent, which the agent DaemonSet's node affinity
#      excludes: only that node's agent pod goes): that node's generator goes
#      silent and reports failed exports, the other nodes stay local;
#   3. the broken-agent overlay (a config the collector refuses; the agents
#      crash-loop): nothing arrives at all;
#   4. restored: every node delivers again, all local.
# Prints a results table; exits 0 only when every step came out as expected.
# Cleans up after itself: namespaces that existed before are not changed or
# deleted, everything created is deleted (unless --keep), the node label is
# removed. A deployment of ours that was already there is re-applied in this
# run's variant (flags) and kept.
#
# Talks to the cluster only through kubectl: the sink's and the generators'
# HTTP APIs are reached through the API server's service/pod proxy, so no
# port-forward and no local curl are needed.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: deploy/verify.sh [options]

  --istio              deploy with the istio component (sidecars for agents and
                       generators, PeerAuthentication PERMISSIVE for the agents)
  --control-plane      run generators and agents on control-plane nodes too
  --registry PREFIX    image prefix for trace-gen and trace-sink, e.g.
                       ghcr.io/acme (images PREFIX/trace-gen, PREFIX/trace-sink)
  --tag TAG            image tag for trace-gen and trace-sink (default: the
                       kustomizations' own, "dev")
  --within DURATION    time for the positive conditions of each check (default 90s)
  --hold DURATION      how long the negative conditions must keep holding (default 30s)
  --settle SECONDS     wait after the agents changed, before the sink is reset,
                       for kube-proxy / Envoy to catch up (default 10)
  --timeout SECONDS    limit for each rollout or wait (default 600; the agent
                       DaemonSet rolls one node at a time)
  --keep               keep the deployment at the end, as the last step left it
  --dry-run            print the kubectl commands instead of running them
                       (rendering the manifests still runs, locally)
  -h, --help           this help

Exit status: 0 every step as expected, 1 a step was not, 2 usage or setup error.
EOF
}

# ---------------------------------------------------------------- options
istio=0
control_plane=0
registry=""
tag=""
within=90s
hold=30s
settle=10
timeout=600
keep=0
dry_run=0

while (($#)); do
  case "$1" in
    --istio) istio=1 ;;
    --control-plane) control_plane=1 ;;
    --registry) registry="${2:?--registry needs a value}"; shift ;;
    --tag) tag="${2:?--tag needs a value}"; shift ;;
    --within) within="${2:?--within needs a value}"; shift ;;
    --hold) hold="${2:?--hold needs a value}"; shift ;;
    --settle) settle="${2:?--settle needs a value}"; shift ;;
    --timeout) timeout="${2:?--timeout needs a value}"; shift ;;
    --keep) keep=1 ;;
    --dry-run) dry_run=1 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "verify.sh: unknown option: $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
[[ "$settle" =~ ^[0-9]+$ ]] || { echo "verify.sh: --settle takes whole seconds" >&2; exit 2; }
[[ "$timeout" =~ ^[0-9]+$ ]] || { echo "verify.sh: --timeout takes whole seconds" >&2; exit 2; }

if ((BASH_VERSINFO[0] < 4 || (BASH_VERSINFO[0] == 4 && BASH_VERSINFO[1] < 4))); then
  echo "verify.sh: needs bash >= 4.4 (this is $BASH_VERSION; on macOS: brew install bash)" >&2
  exit 2
fi

# Results, filled by record(); read by cleanup() too, so set before any trap.
rows=()
table_printed=0
all_ok=1

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
part_of="trace-gen-sink" # app.kubernetes.io/part-of on everything we deploy

# ---------------------------------------------------------------- helpers
log() { printf '[verify %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf 'verify.sh: %s\n' "$*" >&2; exit 2; }

# Print a command the way a shell would take it back (copy-pasteable).
show() {
  local out="+" a q="'"
  for a in "$@"; do
    if [[ "$a" =~ ^[A-Za-z0-9_./:=,@%+-]+$ ]]; then
      out+=" $a"
    else
      out+=" '${a//$q/$q\\$q$q}'"
    fi
  done
  printf '%s\n' "$out"
}

# Under --dry-run the commands go to fd 3, the script's stdout, even from
# inside $(...), so the printed plan is complete.
exec 3>&1

# kubectl that changes the cluster: shown (on stderr), and under --dry-run
# shown on stdout and not run.
kdo() {
  if ((dry_run)); then show kubectl "$@" >&3; return 0; fi
  show kubectl "$@" >&2
  kubectl "$@"
}

# kubectl that only reads the cluster; under --dry-run shown and not run, its
# output empty (the callers use placeholders then).
kget() {
  if ((dry_run)); then show kubectl "$@" >&3; return 0; fi
  kubectl "$@"
}

# Sleep, but not in a dry run.
pause() { ((dry_run)) || sleep "$1"; }

# The first number under "key" in a JSON text (the APIs answer flat enough).
json_num() {
  local key="$1" text="$2" v
  v="$(grep -oE "\"$key\"[[:space:]]*:[[:space:]]*-?[0-9]+" <<<"$text" | head -n1 | grep -oE -- '-?[0-9]+$' || true)"
  printf '%s' "${v:-}"
}

# "spans_failed_by_reason": {"connect_timeout":3,"dns":1} -> connect_timeout=3,dns=1
json_reasons() {
  local text="$1" obj
  obj="$(tr -d '\n' <<<"$text" | grep -oE '"spans_failed_by_reason"[[:space:]]*:[[:space:]]*\{[^}]*\}' | head -n1 || true)"
  obj="${obj#*\{}"
  obj="${obj%\}}"
  obj="${obj//\"/}"
  obj="${obj//:/=}"
  obj="${obj//[[:space:]]/}"
  printf '%s' "${obj:-none}"
}

# Namespace of the object KIND/NAME in a kustomize output (top-level metadata
# is indented by two spaces there, everything deeper by more).
ns_of() {
  awk -v kind="$1" -v name="$2" '
    function found() { if (k == kind && n == name && !done) { print ns; done = 1 } }
    /^---/ { found(); k = n = ns = ""; next }
    /^kind: / { k = $2 }
    /^  name: / { n = $2 }
    /^  namespace: / { ns = $2 }
    END { found() }
  ' "$3"
}

# Names of the Namespace objects in a kustomize output.
namespaces_in() {
  awk '
    /^---/ { if (k == "Namespace" && n != "") print n; k = n = ""; next }
    /^kind: / { k = $2 }
    /^  name: / { n = $2 }
    END { if (k == "Namespace" && n != "") print n }
  ' "$1"
}

join_by() { local IFS="$1"; shift; printf '%s' "$*"; }

# ---------------------------------------------------------------- prerequisites
command -v kubectl >/dev/null 2>&1 || die "kubectl is required (https://kubernetes.io/docs/tasks/tools/)"
if ((!dry_run)); then
  context="$(kubectl config current-context 2>/dev/null)" || die "kubectl has no current context"
  kubectl version >/dev/null 2>&1 || die "cannot reach the cluster of context '$context' (kubectl version failed)"
  if ((istio)) && ! kubectl get crd peerauthentications.security.istio.io >/dev/null 2>&1; then
    die "--istio: Istio is not installed in context '$context' (no PeerAuthentication CRD)"
  fi
  log "context: $context"
else
  log "dry run: printing the kubectl commands, running none of them"
fi

# ---------------------------------------------------------------- manifests
# A throw-away kustomization under target/ (git-ignored; kustomize only takes
# relative paths) adds the chosen components, images and, for namespaces that
# exist already, a patch that leaves them out.
mkdir -p "$repo/target"
work="$(mktemp -d "$repo/target/verify.XXXXXX")"
trap 'rm -rf "$work"' EXIT # until cleanup() takes over, below
base_yaml="$work/base.yaml"
broken_yaml="$work/broken.yaml"
preexisting_ns=()

write_kustomization() { # DIR RESOURCE
  local dir="$1" resource="$2" ns img
  mkdir -p "$dir"
  {
    echo "apiVersion: kustomize.config.k8s.io/v1beta1"
    echo "kind: Kustomization"
    echo "resources:"
    echo "  - ../../../deploy/$resource"
    if ((istio || control_plane)); then
      echo "components:"
      if ((istio)); then echo "  - ../../../deploy/components/istio"; fi
      if ((control_plane)); then echo "  - ../../../deploy/components/control-plane"; fi
    fi
    if [[ -n "$registry" || -n "$tag" ]]; then
      echo "images:"
      for img in trace-gen trace-sink; do
        echo "  - name: $img"
        if [[ -n "$registry" ]]; then echo "    newName: ${registry%/}/$img"; fi
        if [[ -n "$tag" ]]; then echo "    newTag: $tag"; fi
      done
    fi
    if ((${#preexisting_ns[@]})); then
      echo "patches:"
      for ns in "${preexisting_ns[@]}"; do
        echo "  - patch: |-"
        echo "      \$patch: delete"
        echo "      apiVersion: v1"
        echo "      kind: Namespace"
        echo "      metadata:"
        echo "        name: $ns"
      done
    fi
  } >"$dir/kustomization.yaml"
}

render() {
  write_kustomization "$work/base" base
  write_kustomization "$work/broken" overlays/broken-agent
  kubectl kustomize "$work/base" >"$base_yaml"
  kubectl kustomize "$work/broken" >"$broken_yaml"
  log "rendered: $base_yaml (steps 1, 2, 4) and $broken_yaml (step 3)"
}

render
agent_ns="$(ns_of DaemonSet trace-agent "$base_yaml")"
sink_ns="$(ns_of Deployment trace-sink "$base_yaml")"
gen_ns="$(ns_of DaemonSet trace-gen "$base_yaml")"
[[ -n "$agent_ns" && -n "$sink_ns" && -n "$gen_ns" ]] || die "could not find the namespaces in the rendered manifests ($base_yaml)"
log "namespaces: agent $agent_ns, sink $sink_ns, generators $gen_ns"

while read -r ns; do
  if ((!dry_run)) && [[ -n "$(kubectl get namespace "$ns" -o name --ignore-not-found)" ]]; then
    preexisting_ns+=("$ns")
  fi
done < <(namespaces_in "$base_yaml")
if ((${#preexisting_ns[@]})); then
  log "namespaces that exist already and stay untouched: ${preexisting_ns[*]}"
  render
  if ((istio)) && [[ " ${preexisting_ns[*]} " == *" $agent_ns "* ]]; then
    log "note: $agent_ns keeps its labels; the agent pods request a sidecar by their own label"
  fi
fi

# Objects with our names that are not ours: refuse. Ours: a deployment that
# was there before; it is restored and kept at the end.
previously_deployed=0
if ((!dry_run)); then
  existing="$(kubectl get -f "$base_yaml" --ignore-not-found \
    -o jsonpath='{range .items[*]}{.kind}/{.metadata.name} {.metadata.labels.app\.kubernetes\.io/part-of}{"\n"}{end}')"
  foreign="$(awk -v p="$part_of" 'NF && $2 != p { print $1 }' <<<"$existing")"
  [[ -z "$foreign" ]] || die "these objects exist already and are not part of $part_of, refusing to touch them: $(echo "$foreign" | tr '\n' ' ')"
  if [[ -n "$existing" ]]; then
    previously_deployed=1
    log "a deployment of $part_of exists already: it will be restored and kept at the end"
  fi
fi

# ---------------------------------------------------------------- cluster helpers
sink_api="/api/v1/namespaces/$sink_ns/services/http:trace-sink:http-api/proxy"
labelled_node=""

sink_reset() {
  if ((dry_run)); then show kubectl create --raw "$sink_api/reset" -f /dev/null >&3; return 0; fi
  kubectl create --raw "$sink_api/reset" -f /dev/null >/dev/null ||
    die "could not reset the sink through the API server proxy ($sink_api/reset)"
}

sink_stats() { kget get --raw "$sink_api/stats" || true; }

# trace-sink check inside the sink pod (the image has no shell, but the binary
# is on PATH). Prints its route table; returns its exit status.
sink_check() {
  local rc=0
  if ((dry_run)); then
    show kubectl exec -n "$sink_ns" deploy/trace-sink -c trace-sink -- trace-sink check --url http://127.0.0.1:8080 "$@" >&3
    return 0
  fi
  kubectl exec -n "$sink_ns" deploy/trace-sink -c trace-sink -- \
    trace-sink check --url http://127.0.0.1:8080 "$@" 2>&1 | sed 's/^/    /' >&2 || rc=$?
  # pipefail: rc is kubectl's (= trace-sink check's) status unless sed failed
  return "$rc"
}

pods_nodes() { # NAMESPACE APP -> node names, one a line, sorted
  if ((dry_run)); then
    kget get pods -n "$1" -l "app.kubernetes.io/name=$2" -o 'jsonpath={range .items[*]}{.spec.nodeName}{"\n"}{end}'
    printf '%s\n' NODE-1 NODE-2 NODE-3
    return 0
  fi
  kubectl get pods -n "$1" -l "app.kubernetes.io/name=$2" \
    -o 'jsonpath={range .items[*]}{.spec.nodeName}{"\n"}{end}' | sed '/^$/d' | sort -u
}

gen_pod_on() { # NODE -> name of the generator pod there
  if ((dry_run)); then echo "trace-gen-POD-ON-$1"; return 0; fi
  kubectl get pods -n "$gen_ns" -l app.kubernetes.io/name=trace-gen \
    --field-selector "spec.nodeName=$1" -o 'jsonpath={.items[0].metadata.name}' 2>/dev/null || true
}

gen_stats_on() { # NODE -> trace-gen /stats JSON of the generator there (empty if unreadable)
  local pod
  pod="$(gen_pod_on "$1")"
  [[ -n "$pod" ]] || return 0
  kget get --raw "/api/v1/namespaces/$gen_ns/pods/$pod:8081/proxy/stats" 2>/dev/null || true
}

wait_rollouts() {
  kdo rollout status -n "$sink_ns" deployment/trace-sink --timeout "${timeout}s"
  kdo rollout status -n "$agent_ns" daemonset/trace-agent --timeout "${timeout}s"
  kdo rollout status -n "$gen_ns" daemonset/trace-gen --timeout "${timeout}s"
}

# Wait until CONDITION (a function name) succeeds, polling every 3 s.
wait_until() { # DESCRIPTION CONDITION [ARGS...]
  local what="$1" start=$SECONDS
  shift
  ((dry_run)) && { log "(dry run) would wait until $what"; return 0; }
  log "waiting until $what (at most ${timeout}s)"
  until "$@"; do
    ((SECONDS - start < timeout)) || { log "gave up waiting until $what"; return 1; }
    sleep 3
  done
}

# shellcheck disable=SC2317,SC2329 # called through wait_until
no_agent_on() { [[ -z "$(kubectl get pods -n "$agent_ns" -l app.kubernetes.io/name=trace-agent --field-selector "spec.nodeName=$1" -o name)" ]]; }

# Every agent pod runs the new (broken) template and none is ready.
# shellcheck disable=SC2317,SC2329 # called through wait_until
all_agents_broken() {
  local s gen obs desired updated ready
  s="$(kubectl get daemonset -n "$agent_ns" trace-agent -o 'jsonpath={.metadata.generation} {.status.observedGeneration} {.status.desiredNumberScheduled} {.status.updatedNumberScheduled} {.status.numberReady}')"
  read -r gen obs desired updated ready <<<"$s"
  [[ -n "$gen" && "$gen" == "$obs" && "${desired:-0}" -gt 0 && "${updated:-0}" == "$desired" && "${ready:-0}" == 0 ]]
}

settle_down() {
  log "letting the routing settle for ${settle}s"
  pause "$settle"
}

# ---------------------------------------------------------------- cleanup
# shellcheck disable=SC2317,SC2329 # called by the EXIT trap
cleanup() {
  local rc=$?
  trap - EXIT
  trap "" INT TERM # a second Ctrl-C must not cut the cleanup short
  set +e
  if ((!table_printed)); then
    # Aborted before the verdict (a rollout timed out, kubectl failed, ...): a
    # setup problem, status 2, unless interrupted (130).
    if ((${#rows[@]})); then
      echo
      echo "Node-local verification ABORTED (status $rc) after step ${#rows[@]}; the steps so far:"
      print_table
    fi
    ((rc == 0 || rc == 1)) && rc=2
  fi
  if [[ -n "$labelled_node" ]]; then
    kdo label node "$labelled_node" trace-gen-sink/no-agent- >/dev/null
  fi
  if ((keep)); then
    log "--keep: leaving the deployment as it is"
  elif ((previously_deployed)); then
    log "restoring the deployment that was there before"
    kdo apply -f "$base_yaml" >/dev/null
  else
    log "deleting what this run created"
    kdo delete -f "$broken_yaml" --ignore-not-found --wait=false >/dev/null
    kdo delete -f "$base_yaml" --ignore-not-found --timeout "${timeout}s" >/dev/null
  fi
  if ((dry_run)); then log "the rendered manifests stay in $work"; else rm -rf "$work"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- results
# One row per step, as the lab prints it (rows, all_ok: see the top).
record() { # STEP SCENARIO SAME_NODE_ONLY NOTHING_WHEN_DOWN RECEIVED GEN_FAILED VERDICT
  rows+=("$(printf '%s\t' "$@")")
  [[ "$7" == PASS || "$7" == "dry-run" ]] || all_ok=0
}

# "1234 (local 1234, remote 0, unattributed 0)" from the sink's /stats
received() {
  local s="$1" total
  total="$(json_num spans_total "$s")"
  [[ -n "$total" ]] || { printf 'n/a'; return; }
  printf '%s (local %s, remote %s, unattributed %s)' "$total" \
    "$(json_num local_spans "$s")" "$(json_num remote_spans "$s")" "$(json_num unattributed_spans "$s")"
}

print_table() {
  local line
  {
    printf 'step\tscenario\tsame-node agent only\tnothing when local agent down\tspans received\tgenerator failed exports\tverdict\n'
    for line in "${rows[@]}"; do printf '%s\n' "${line%$'\t'}"; done
  } | column -t -s $'\t' 2>/dev/null || {
    # column(1) missing: tab-separated then
    printf 'step\tscenario\tsame-node agent only\tnothing when local agent down\tspans received\tgenerator failed exports\tverdict\n'
    for line in "${rows[@]}"; do printf '%s\n' "${line%$'\t'}"; done
  }
}

verdict() { # CHECK_RC [EXTRA_CONDITION_OK]
  if ((dry_run)); then echo "dry-run"; elif (($1 == 0)) && [[ "${2:-1}" == 1 ]]; then echo PASS; else echo FAIL; fi
}

# ---------------------------------------------------------------- deploy
log "deploying (istio=$istio, control-plane=$control_plane)"
kdo apply -f "$base_yaml"
wait_rollouts

mapfile -t gen_nodes < <(pods_nodes "$gen_ns" trace-gen)
mapfile -t agent_nodes < <(pods_nodes "$agent_ns" trace-agent)
((${#gen_nodes[@]})) || die "no generator pod is running (are the images pullable? see kubectl get pods -n $gen_ns)"
log "generator nodes: ${gen_nodes[*]}"
log "agent nodes:     ${agent_nodes[*]}"
for n in "${gen_nodes[@]}"; do
  [[ " ${agent_nodes[*]} " == *" $n "* ]] || log "warning: no agent on $n: its generator cannot deliver and step 1 will fail"
done
all_nodes="$(join_by , "${gen_nodes[@]}")"

# ---------------------------------------------------------------- step 1
# Steps 1 and 4: every node delivers, and only through the agent of its own node.
all_local_step() {
  local step="$1" name="$2" rc=0 s
  settle_down
  sink_reset
  sink_check --expect-local --from-nodes "$all_nodes" --within "$within" --hold "$hold" || rc=$?
  s="$(sink_stats)"
  record "$step" "$name" "$( ((rc == 0)) && echo yes || echo no)" "-" "$(received "$s")" "-" "$(verdict "$rc")"
}

log "step 1: all agents up: every node delivers, only through its own agent"
all_local_step 1 "all agents up"

# ---------------------------------------------------------------- step 2
victim=""
for n in "${gen_nodes[@]}"; do
  if [[ " ${agent_nodes[*]} " == *" $n "* ]]; then victim="$n"; break; fi
done
others=()
for n in "${gen_nodes[@]}"; do [[ "$n" == "$victim" ]] || others+=("$n"); done

if [[ -z "$victim" ]]; then
  record 2 "agent removed from a node" "-" "-" "n/a" "n/a" "FAIL (no node with both a generator and an agent)"
else
  log "step 2: the agent is removed from $victim; its generator must go silent, the others stay local"
  before="$(json_num spans_failed "$(gen_stats_on "$victim")")"
  # The agent DaemonSet requires nodes without this label: labelling the node
  # makes the DaemonSet controller delete just that node's agent pod.
  labelled_node="$victim"
  kdo label node "$victim" trace-gen-sink/no-agent=true --overwrite
  wait_until "no agent pod is left on $victim" no_agent_on "$victim"
  settle_down
  sink_reset
  rc=0
  args=(--expect-local --silent-nodes "$victim" --within "$within" --hold "$hold")
  if ((${#others[@]})); then args+=(--from-nodes "$(join_by , "${others[@]}")"); else args+=(--min-spans 0); fi
  sink_check "${args[@]}" || rc=$?
  s="$(sink_stats)"
  g="$(gen_stats_on "$victim")"
  after="$(json_num spans_failed "$g")"
  failed_ok=0
  failed="n/a"
  if [[ -n "$before" && -n "$after" ]]; then
    failed="$victim +$((after - before)) (since start: $(json_reasons "$g"))"
    ((after > before)) && failed_ok=1
  fi
  record 2 "agent removed from $victim" "$( ((rc == 0)) && echo yes || echo no)" \
    "$( ((rc == 0)) && echo yes || echo no)" "$(received "$s")" "$failed" "$(verdict "$rc" "$failed_ok")"

  log "step 2: giving $victim its agent back"
  kdo label node "$victim" trace-gen-sink/no-agent-
  labelled_node=""
  kdo rollout status -n "$agent_ns" daemonset/trace-agent --timeout "${timeout}s"
fi

# ---------------------------------------------------------------- step 3
log "step 3: the broken agent configuration (the collector refuses it, the agents crash-loop): nothing may arrive"
declare -A failed_before=()
for n in "${gen_nodes[@]}"; do failed_before[$n]="$(json_num spans_failed "$(gen_stats_on "$n")")"; done
kdo apply -f "$broken_yaml"
rc=0
wait_until "every agent runs the broken configuration and none is ready" all_agents_broken || rc=1
settle_down
sink_reset
if ((rc == 0)); then
  sink_check --min-spans 0 --silent-nodes "$all_nodes" --within 10s --hold "$hold" || rc=$?
fi
s="$(sink_stats)"
total="$(json_num spans_total "$s")"
nothing_ok=0
[[ "$total" == 0 ]] && nothing_ok=1
failed_parts=()
all_failed_ok=1
for n in "${gen_nodes[@]}"; do
  g="$(gen_stats_on "$n")"
  after="$(json_num spans_failed "$g")"
  if [[ -n "${failed_before[$n]}" && -n "$after" ]]; then
    failed_parts+=("$n +$((after - failed_before[$n])) (since start: $(json_reasons "$g"))")
    ((after > failed_before[$n])) || all_failed_ok=0
  else
    failed_parts+=("$n n/a")
    all_failed_ok=0
  fi
done
((dry_run)) && nothing_ok=1
record 3 "broken agent config (crash loop)" "-" "$( ((rc == 0 && nothing_ok)) && echo yes || echo no)" \
  "$(received "$s")" "$(join_by ';' "${failed_parts[@]}" | sed 's/;/; /g')" "$(verdict "$rc" "$((nothing_ok && all_failed_ok))")"

# ---------------------------------------------------------------- step 4
log "step 4: restored: every node delivers again, all local"
kdo apply -f "$base_yaml"
wait_rollouts
all_local_step 4 "restored"

# ---------------------------------------------------------------- report
echo
echo "Node-local verification, context ${context:-(dry run)}, istio=$istio"
print_table
table_printed=1
echo
if ((all_ok)); then
  echo "RESULT: every step came out as expected"
  exit 0
fi
echo "RESULT: at least one step did not come out as expected (see the route tables above)"
exit 1
