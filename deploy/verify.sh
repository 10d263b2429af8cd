#!/usr/bin/env bash
# deploy/verify.sh: the node-local traffic verification, on a real cluster or
# on the lab's (deploy/lab runs exactly this script against its own cluster).
#
# Uses kubectl and its current context (KUBECONFIG). Deploys the agent under
# test, the sink and one generator per node (deploy/), then asserts with
# `trace-sink check`, run as a pod next to the sink (its exit code and
# termination message come back in the pod's status; no exec needed):
#   1. all-up: every node's generator delivers, and all its spans came through
#      the agent on its own node;
#   2. agent-removed: the agent is removed from one node (the node is labelled
#      trace-gen-sink/no-agent, which the agent DaemonSet's node affinity
#      excludes: only that node's agent pod goes): that node's generator goes
#      silent and reports failed exports, the other nodes stay local;
#   3. crash-loop: the broken-agent overlay (a config the collector refuses;
#      the agents crash-loop): nothing arrives at all;
#   4. recovered: every node delivers again, all local;
#   5. cluster-policy: the negative control, the cluster-policy overlay
#      (internalTrafficPolicy: Cluster, generators reconnecting): remote spans
#      appear and `check --expect-local` must FAIL, proving the check can fail;
#   6. terminating: the agents get a preStop sleep (a long graceful shutdown)
#      and one node's agent is removed: while its only local endpoint is
#      terminating but still serving, that node's spans still reach only its
#      own agent (kube-proxy falls back to local serving-terminating
#      endpoints), never another node's.
# Prints a results table (and with --results-json a JSON file); exits 0 only
# when every step came out as expected. Cleans up after itself: namespaces that
# existed before are not changed or deleted, everything created is deleted
# (unless --keep), the node label is removed. A deployment of ours that was
# already there is re-applied in this run's variant (flags) and kept.
#
# Talks to the cluster only through kubectl: the sink's and the generators'
# HTTP APIs are reached through the API server's service/pod proxy, so no
# port-forward and no local curl are needed. The permissions it needs are in
# deploy/verify-rbac (a ClusterRole for a CI service account).
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: deploy/verify.sh [options]

  --istio              deploy with the istio component (sidecars for agents and
                       generators, PeerAuthentication PERMISSIVE for the agents)
  --control-plane      run generators and agents on control-plane nodes too
  --peer-attribution   verify the agent as it runs in production: the agents get
                       a configuration that stamps nothing on the spans
                       (components/agent-stamps-nothing; not in step 3, whose
                       broken configuration is its own) and trace-sink finds
                       each span's agent node from the connection's peer Pod
                       through the Kubernetes API (components/peer-attribution:
                       --k8s-attribution, its ServiceAccount, list/watch Pods).
                       Every step with spans must then show attribution "peer"
  --registry PREFIX    image prefix for trace-gen and trace-sink, e.g.
                       ghcr.io/acme (images PREFIX/trace-gen, PREFIX/trace-sink)
  --tag TAG            image tag for trace-gen and trace-sink (default: the
                       kustomizations' own, "dev")
  --within DURATION    time for the positive conditions of each check
                       (default 90s; N, Ns, Nm)
  --hold DURATION      how long the negative conditions must keep holding
                       (default 30s)
  --settle SECONDS     wait after the agents changed, before the sink is reset,
                       for kube-proxy / Envoy to catch up (default 10)
  --timeout SECONDS    limit for each rollout or wait (default 600; the agent
                       DaemonSet rolls one node at a time)
  --results-json FILE  also write the results as JSON to FILE
  --step-hook CMD      run `CMD STEP-KEY check` while each step's check runs
                       (the lab saves every node's kube-proxy rules with it)
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
peer_attribution=0
registry=""
tag=""
within=90s
hold=30s
settle=10
timeout=600
keep=0
dry_run=0
results_json=""
step_hook=""

while (($#)); do
  case "$1" in
    --istio) istio=1 ;;
    --control-plane) control_plane=1 ;;
    --peer-attribution) peer_attribution=1 ;;
    --registry) registry="${2:?--registry needs a value}"; shift ;;
    --tag) tag="${2:?--tag needs a value}"; shift ;;
    --within) within="${2:?--within needs a value}"; shift ;;
    --hold) hold="${2:?--hold needs a value}"; shift ;;
    --settle) settle="${2:?--settle needs a value}"; shift ;;
    --timeout) timeout="${2:?--timeout needs a value}"; shift ;;
    --results-json) results_json="${2:?--results-json needs a file}"; shift ;;
    --step-hook) step_hook="${2:?--step-hook needs a command}"; shift ;;
    --keep) keep=1 ;;
    --dry-run) dry_run=1 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "verify.sh: unknown option: $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
[[ "$settle" =~ ^[0-9]+$ ]] || { echo "verify.sh: --settle takes whole seconds" >&2; exit 2; }
[[ "$timeout" =~ ^[0-9]+$ ]] || { echo "verify.sh: --timeout takes whole seconds" >&2; exit 2; }
# DURATION -> whole seconds (N, Ns, Nm)
seconds_of() {
  case "$1" in
    *[!0-9sm]* | "" | s | m) return 1 ;;
    *m) echo $((${1%m} * 60)) ;;
    *s) echo "${1%s}" ;;
    *) echo "$1" ;;
  esac
}
within_s="$(seconds_of "$within")" || { echo "verify.sh: --within takes a duration like 90s or 2m (got '$within')" >&2; exit 2; }
hold_s="$(seconds_of "$hold")" || { echo "verify.sh: --hold takes a duration like 30s or 1m (got '$hold')" >&2; exit 2; }
within="${within_s}s"
hold="${hold_s}s"
# Step 6: the agent's graceful shutdown must outlast the whole check.
drain_s=$((settle + within_s + hold_s + 15))

if ((BASH_VERSINFO[0] < 4 || (BASH_VERSINFO[0] == 4 && BASH_VERSINFO[1] < 4))); then
  echo "verify.sh: needs bash >= 4.4 (this is $BASH_VERSION; on macOS: brew install bash)" >&2
  exit 2
fi

# Results, filled by record(); read by cleanup() too, so set before any trap.
rows=()
json_rows=()
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
cluster_yaml="$work/cluster.yaml"
draining_yaml="$work/draining.yaml"
preexisting_ns=()

write_kustomization() { # DIR RESOURCE [EXTRA-PATCH-FILE]
  local dir="$1" resource="$2" extra="${3:-}" ns img
  mkdir -p "$dir"
  {
    echo "apiVersion: kustomize.config.k8s.io/v1beta1"
    echo "kind: Kustomization"
    echo "resources:"
    echo "  - ../../../deploy/$resource"
    if ((istio || control_plane || peer_attribution)); then
      echo "components:"
      if ((istio)); then echo "  - ../../../deploy/components/istio"; fi
      if ((control_plane)); then echo "  - ../../../deploy/components/control-plane"; fi
      if ((peer_attribution)); then
        echo "  - ../../../deploy/components/peer-attribution"
        # the broken-agent overlay's configuration is the point of step 3: kept
        [[ "$resource" == overlays/broken-agent ]] || echo "  - ../../../deploy/components/agent-stamps-nothing"
      fi
    fi
    if [[ -n "$registry" || -n "$tag" ]]; then
      echo "images:"
      for img in trace-gen trace-sink; do
        echo "  - name: $img"
        if [[ -n "$registry" ]]; then echo "    newName: ${registry%/}/$img"; fi
        if [[ -n "$tag" ]]; then echo "    newTag: $tag"; fi
      done
    fi
    if ((${#preexisting_ns[@]})) || [[ -n "$extra" ]]; then
      echo "patches:"
      for ns in "${preexisting_ns[@]}"; do
        echo "  - patch: |-"
        echo "      \$patch: delete"
        echo "      apiVersion: v1"
        echo "      kind: Namespace"
        echo "      metadata:"
        echo "        name: $ns"
      done
      if [[ -n "$extra" ]]; then cat "$extra"; fi
    fi
  } >"$dir/kustomization.yaml"
}

# Step 6's variant: the base, with a graceful shutdown that outlasts the check
# (a preStop sleep, the grace period after it) and generators that open a new
# connection every 2 s, so kube-proxy chooses an endpoint again and again while
# the agent terminates.
write_draining_patch() {
  cat >"$work/draining-patch.yaml" <<EOF
  - target:
      kind: DaemonSet
      name: trace-agent
    patch: |-
      - op: add
        path: /spec/template/spec/containers/0/lifecycle
        value:
          preStop:
            sleep:
              seconds: $drain_s
      - op: replace
        path: /spec/template/spec/terminationGracePeriodSeconds
        value: $((drain_s + 30))
  - target:
      kind: DaemonSet
      name: trace-gen
    patch: |-
      - op: add
        path: /spec/template/spec/containers/0/args/-
        value: --reconnect-every=2s
EOF
}

render() {
  write_draining_patch
  write_kustomization "$work/base" base
  write_kustomization "$work/broken" overlays/broken-agent
  write_kustomization "$work/cluster" overlays/cluster-policy
  write_kustomization "$work/draining" base "$work/draining-patch.yaml"
  kubectl kustomize "$work/base" >"$base_yaml"
  kubectl kustomize "$work/broken" >"$broken_yaml"
  kubectl kustomize "$work/cluster" >"$cluster_yaml"
  kubectl kustomize "$work/draining" >"$draining_yaml"
  log "rendered: $base_yaml (steps 1, 2, 4), $broken_yaml (3), $cluster_yaml (5), $draining_yaml (6)"
}

render
agent_ns="$(ns_of DaemonSet trace-agent "$base_yaml")"
sink_ns="$(ns_of Deployment trace-sink "$base_yaml")"
gen_ns="$(ns_of DaemonSet trace-gen "$base_yaml")"
[[ -n "$agent_ns" && -n "$sink_ns" && -n "$gen_ns" ]] || die "could not find the namespaces in the rendered manifests ($base_yaml)"
sink_image="$(grep -oE 'image: [^ ]*trace-sink[^ ]*' "$base_yaml" | head -n1 | cut -d' ' -f2)"
[[ -n "$sink_image" ]] || die "could not find the trace-sink image in $base_yaml"
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
check_pod=""

sink_reset() {
  if ((dry_run)); then show kubectl create --raw "$sink_api/reset" -f /dev/null >&3; return 0; fi
  kubectl create --raw "$sink_api/reset" -f /dev/null >/dev/null ||
    die "could not reset the sink through the API server proxy ($sink_api/reset)"
}

sink_stats() { kget get --raw "$sink_api/stats" || true; }

# `trace-sink check` as a pod beside the sink (image: the sink's), talking to
# the sink's Service. Its verdict is the container's exit code in the pod's
# status; its route table comes from `kubectl logs`, or from the termination
# message (FallbackToLogsOnError) where logs cannot be read. Returns the exit
# code; 2 and the run aborted if the pod did not run to its end in time.
sink_check() { # STEP-KEY CHECK-ARGS...
  local key="$1" rc="" phase="" start=$SECONDS limit hooked=0 a sink_host
  shift
  check_pod="trace-sink-check-$key"
  limit=$((within_s + hold_s + 180))
  # The Service's cluster IP rather than its DNS name: a Service created
  # seconds ago may not resolve yet (the lab saw "Temporary failure in name
  # resolution" for one), and DNS is not what a check verifies. The name when
  # the IP cannot be read (dry run).
  sink_host="trace-sink.$sink_ns.svc"
  if ((!dry_run)); then
    a="$(kubectl get service -n "$sink_ns" trace-sink -o 'jsonpath={.spec.clusterIP}' 2>/dev/null || true)"
    [[ "$a" =~ ^[0-9a-fA-F.:]+$ ]] && sink_host="$a"
    [[ "$sink_host" == *:* ]] && sink_host="[$sink_host]"
  fi
  {
    cat <<EOF
apiVersion: v1
kind: Pod
metadata:
  name: $check_pod
  namespace: $sink_ns
  labels:
    app.kubernetes.io/name: trace-sink-check
    app.kubernetes.io/component: check
    app.kubernetes.io/part-of: $part_of
    sidecar.istio.io/inject: "false"
spec:
  restartPolicy: Never
  automountServiceAccountToken: false
  enableServiceLinks: false
  terminationGracePeriodSeconds: 5
  securityContext:
    runAsNonRoot: true
    runAsUser: 65532
    runAsGroup: 65532
    seccompProfile:
      type: RuntimeDefault
EOF
    if ((control_plane)); then
      cat <<EOF
  tolerations:
    - key: node-role.kubernetes.io/control-plane
      operator: Exists
      effect: NoSchedule
EOF
    fi
    cat <<EOF
  containers:
    - name: check
      image: $sink_image
      imagePullPolicy: IfNotPresent
      terminationMessagePolicy: FallbackToLogsOnError
      args:
        - check
        - --url=http://$sink_host:8080
EOF
    for a in "$@"; do printf '        - "%s"\n' "$a"; done
    cat <<EOF
      resources:
        requests:
          cpu: 10m
          memory: 16Mi
        limits:
          cpu: 200m
          memory: 64Mi
      securityContext:
        allowPrivilegeEscalation: false
        readOnlyRootFilesystem: true
        runAsNonRoot: true
        capabilities:
          drop:
            - ALL
EOF
  } >"$work/check-$key.yaml"
  kdo create -f "$work/check-$key.yaml" >/dev/null
  if ((dry_run)); then
    show kubectl logs -n "$sink_ns" "$check_pod" >&3
    kdo delete pod -n "$sink_ns" "$check_pod" --wait=false >/dev/null
    check_pod=""
    return 0
  fi
  while :; do
    phase="$(kubectl get pod -n "$sink_ns" "$check_pod" -o 'jsonpath={.status.phase}' 2>/dev/null || true)"
    if [[ -n "$step_hook" && $hooked == 0 && ("$phase" == Running || "$phase" == Succeeded || "$phase" == Failed) ]]; then
      hooked=1
      # shellcheck disable=SC2086 # a command line, split on purpose
      $step_hook "$key" check || log "the step hook failed (ignored)"
    fi
    [[ "$phase" == Succeeded || "$phase" == Failed ]] && break
    if ((SECONDS - start > limit)); then
      log "the check pod $sink_ns/$check_pod did not finish within ${limit}s (phase '${phase:-unknown}')"
      kubectl describe pod -n "$sink_ns" "$check_pod" 2>/dev/null | tail -n 15 | sed 's/^/    /' >&2 || true
      return 2
    fi
    sleep 2
  done
  rc="$(kubectl get pod -n "$sink_ns" "$check_pod" -o 'jsonpath={.status.containerStatuses[0].state.terminated.exitCode}')"
  if ! kubectl logs -n "$sink_ns" "$check_pod" 2>/dev/null | sed 's/^/    /' >&2; then
    kubectl get pod -n "$sink_ns" "$check_pod" -o 'jsonpath={.status.containerStatuses[0].state.terminated.message}' |
      sed 's/^/    /' >&2 || true
  fi
  kubectl delete pod -n "$sink_ns" "$check_pod" --wait=false >/dev/null 2>&1 || true
  check_pod=""
  [[ "$rc" =~ ^[0-9]+$ ]] || { log "the check pod's exit code could not be read"; return 2; }
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
    --field-selector "spec.nodeName=$1,status.phase=Running" -o 'jsonpath={.items[0].metadata.name}' 2>/dev/null || true
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

# "NODE ready serving terminating" for each endpoint of the agent Service
agent_endpoints() {
  kget get endpointslices -n "$agent_ns" -l kubernetes.io/service-name=telemetry-otlp-traces-local \
    -o 'jsonpath={range .items[*].endpoints[*]}{.nodeName} {.conditions.ready} {.conditions.serving} {.conditions.terminating}{"\n"}{end}' 2>/dev/null || true
}

# The agent on NODE is terminating and still serving, and it is the only endpoint there.
# shellcheck disable=SC2317,SC2329 # called through wait_until
only_terminating_serving_on() {
  local eps
  eps="$(agent_endpoints | awk -v n="$1" '$1 == n')"
  [[ "$eps" == "$1 false true true" ]]
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
    write_json "aborted (status $rc)"
  fi
  if [[ -n "$check_pod" ]] && ((!dry_run)); then
    kubectl delete pod -n "$sink_ns" "$check_pod" --wait=false >/dev/null 2>&1
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
json_str() { # a JSON string literal
  local s="$1"
  s="${s//\\/\\\\}"
  s="${s//\"/\\\"}"
  s="${s//$'\t'/ }"
  s="${s//$'\n'/ }"
  printf '"%s"' "$s"
}

# Where the agent nodes of a step's spans came from, from the sink's /stats:
# the routes' "attribution" values (routes without an agent node have none):
# one value -> it (attribute, peer or both), several -> mixed, none -> "-".
attribution_of() { # /stats JSON
  local values
  mapfile -t values < <(grep -oE '"attribution"[[:space:]]*:[[:space:]]*"[a-z]+"' <<<"$1" |
    grep -oE '"[a-z]+"$' | tr -d '"' | sort -u)
  case ${#values[@]} in
    0) printf -- '-' ;;
    1) printf '%s' "${values[0]}" ;;
    *) printf 'mixed' ;;
  esac
}

# One row per step (rows, json_rows, all_ok: see the top). The sink's /stats
# of the step is in step_stats (empty where the step read none); it gives the
# attribution column, and under --peer-attribution a step that received spans
# passes only if every agent node came from the peer ("peer").
step_stats=""
record() { # STEP KEY SCENARIO SAME_NODE_ONLY NOTHING_WHEN_DOWN RECEIVED GEN_FAILED VERDICT [EXPLANATION]
  local step="$1" key="$2" pass=false attribution want total verdict
  shift 2
  verdict="$6"
  attribution="$(attribution_of "$step_stats")"
  if ((peer_attribution && !dry_run)) && [[ "$verdict" == PASS* ]]; then
    total="$(json_num spans_total "$step_stats")"
    want=peer
    [[ "${total:-0}" -gt 0 ]] || want="-"
    if [[ -z "$total" ]]; then
      # no /stats to read the attribution from: not verified, so not a pass
      verdict="FAIL (attribution unknown: the sink's /stats could not be read)"
    elif [[ "$attribution" != "$want" ]]; then
      verdict="FAIL (attribution $attribution, expected $want)"
    fi
  fi
  step_stats=""
  rows+=("$(printf '%s\t' "$step" "$1" "$2" "$3" "$4" "$5" "$attribution" "$verdict")")
  [[ "$verdict" == PASS* || "$verdict" == "dry-run" ]] && pass=true
  [[ "$pass" == true ]] || all_ok=0
  local explanation="${7:-}"
  if ((peer_attribution)) && [[ -n "$explanation" ]]; then
    explanation+="; the agents stamp nothing: each span's agent node is the node of the agent Pod at its connection's peer address, from the Kubernetes API (attribution peer)"
  fi
  [[ "$pass" == true || -z "$explanation" ]] || explanation="NOT as expected; expected: $explanation"
  local attr_json=null
  [[ "$attribution" == "-" ]] || attr_json="$(json_str "$attribution")"
  json_rows+=("{\"step\": $step, \"key\": $(json_str "$key"), \"title\": $(json_str "$1"), \"pass\": $pass, \"verdict\": $(json_str "$verdict"), \"same_node_agent_only\": $(json_str "$2"), \"nothing_when_local_agent_down\": $(json_str "$3"), \"spans_received\": $(json_str "$4"), \"generator_failed_exports\": $(json_str "$5"), \"explanation\": $(json_str "$explanation"), \"attribution\": $attr_json}")
}

write_json() { # RESULT
  [[ -n "$results_json" ]] || return 0
  local IFS=,
  printf '{"schema": "trace-gen-sink/verify/v1", "context": %s, "istio": %s, "peer_attribution": %s, "result": %s, "pass": %s, "steps": [%s]}\n' \
    "$(json_str "${context:-dry-run}")" "$( ((istio)) && echo true || echo false)" \
    "$( ((peer_attribution)) && echo true || echo false)" "$(json_str "$1")" \
    "$( ((all_ok)) && [[ "$1" == complete ]] && echo true || echo false)" "${json_rows[*]}" >"$results_json"
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
    printf 'step\tscenario\tsame-node agent only\tnothing when local agent down\tspans received\tgenerator failed exports\tattribution\tverdict\n'
    for line in "${rows[@]}"; do printf '%s\n' "${line%$'\t'}"; done
  } | column -t -s $'\t' 2>/dev/null || {
    # column(1) missing: tab-separated then
    printf 'step\tscenario\tsame-node agent only\tnothing when local agent down\tspans received\tgenerator failed exports\tattribution\tverdict\n'
    for line in "${rows[@]}"; do printf '%s\n' "${line%$'\t'}"; done
  }
}

verdict() { # CHECK_RC [EXTRA_CONDITION_OK]
  if ((dry_run)); then echo "dry-run"; elif (($1 == 0)) && [[ "${2:-1}" == 1 ]]; then echo PASS; else echo FAIL; fi
}

check_or_abort() { # RC: a check pod that could not run is a setup problem
  (($1 != 2)) || die "a trace-sink check could not run to its end (see above)"
}

# ---------------------------------------------------------------- deploy
log "deploying (istio=$istio, control-plane=$control_plane, peer-attribution=$peer_attribution)"
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
victim=""
for n in "${gen_nodes[@]}"; do
  if [[ " ${agent_nodes[*]} " == *" $n "* ]]; then victim="$n"; break; fi
done
others=()
for n in "${gen_nodes[@]}"; do [[ "$n" == "$victim" ]] || others+=("$n"); done

# ---------------------------------------------------------------- steps 1 and 4
# Every node delivers, and only through the agent of its own node.
all_local_step() { # STEP KEY TITLE
  local rc=0 s w="$within"
  # The first check after a fresh deployment also waits for the pipeline to start: an
  # agent that asked for the sink Service's name before CoreDNS knew it asks again only
  # after gRPC's re-resolution interval (30s), so that check gets at least 45s.
  if [[ "$2" == all-up ]] && ((within_s < 45)); then w=45s; fi
  settle_down
  sink_reset
  sink_check "$2" --expect-local --from-nodes "$all_nodes" --within "$w" --hold "$hold" || rc=$?
  check_or_abort "$rc"
  s="$(sink_stats)"
  step_stats="$s"
  record "$1" "$2" "$3" "$( ((rc == 0)) && echo yes || echo no)" "-" "$(received "$s")" "-" "$(verdict "$rc")" \
    "every generator's spans arrived, each only through the agent on its own node (kube-proxy: local endpoint for internalTrafficPolicy Local)"
}

log "step 1: all agents up: every node delivers, only through its own agent"
all_local_step 1 all-up "all agents up"

# ---------------------------------------------------------------- step 2
if [[ -z "$victim" ]]; then
  record 2 agent-removed "agent removed from a node" "-" "-" "n/a" "n/a" "FAIL (no node with both a generator and an agent)"
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
  sink_check agent-removed "${args[@]}" || rc=$?
  check_or_abort "$rc"
  s="$(sink_stats)"
  step_stats="$s"
  g="$(gen_stats_on "$victim")"
  after="$(json_num spans_failed "$g")"
  failed_ok=0
  failed="n/a"
  if [[ -n "$before" && -n "$after" ]]; then
    failed="$victim +$((after - before)) (since start: $(json_reasons "$g"))"
    ((after > before)) && failed_ok=1
  fi
  record 2 agent-removed "agent removed from $victim" "$( ((rc == 0)) && echo yes || echo no)" \
    "$( ((rc == 0)) && echo yes || echo no)" "$(received "$s")" "$failed" "$(verdict "$rc" "$failed_ok")" \
    "$victim has no local endpoint while the others have theirs: kube-proxy drops its new connections (no fallback to other nodes), so its exports fail and nothing of it arrives"

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
  sink_check crash-loop --min-spans 0 --silent-nodes "$all_nodes" --within 10s --hold "$hold" || rc=$?
  check_or_abort "$rc"
fi
s="$(sink_stats)"
step_stats="$s"
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
# The agents really crash-looped: every one restarted at least once, none ready.
loops="$(kget get pods -n "$agent_ns" -l app.kubernetes.io/name=trace-agent \
  -o 'jsonpath={range .items[*]}{.spec.nodeName}={.status.containerStatuses[0].restartCount}/{.status.containerStatuses[0].ready}/{.status.containerStatuses[0].state.waiting.reason}{" "}{end}' || true)"
loops_ok=1
[[ -n "$loops" ]] || loops_ok=0
for l in $loops; do
  IFS=/ read -r nr ready _ <<<"$l"
  [[ "${nr#*=}" =~ ^[1-9][0-9]*$ && "$ready" == false ]] || loops_ok=0
done
((dry_run)) && nothing_ok=1 && loops_ok=1
log "agents (node=restarts/ready/waiting reason): ${loops:-none}"
record 3 crash-loop "broken agent config (crash loop)" "-" "$( ((rc == 0 && nothing_ok)) && echo yes || echo no)" \
  "$(received "$s")" "$(join_by ';' "${failed_parts[@]}" | sed 's/;/; /g')" "$(verdict "$rc" "$((nothing_ok && all_failed_ok && loops_ok))")" \
  "every agent crash-loops (node=restarts/ready/reason: ${loops% }), none is ready: the Service has no ready endpoint anywhere, kube-proxy rejects new connections, nothing arrives"

# ---------------------------------------------------------------- step 4
log "step 4: restored: every node delivers again, all local"
kdo apply -f "$base_yaml"
wait_rollouts
all_local_step 4 recovered "restored"

# ---------------------------------------------------------------- step 5
log "step 5: negative control: internalTrafficPolicy Cluster, generators reconnecting: the local-only check must FAIL"
kdo apply -f "$cluster_yaml"
wait_rollouts
settle_down
sink_reset
rc=0
if ((${#gen_nodes[@]} < 2)); then
  record 5 cluster-policy "Cluster policy (negative control)" "n/a" "-" "n/a" "-" "FAIL (needs two nodes)"
else
  sink_check cluster-policy --expect-local --from-nodes "$all_nodes" --within "$within" --hold "$hold" || rc=$?
  check_or_abort "$rc"
  s="$(sink_stats)"
  step_stats="$s"
  remote="$(json_num remote_spans "$s")"
  ok=0
  ((rc == 1)) && [[ "${remote:-0}" -gt 0 ]] && ok=1
  ((dry_run)) && ok=1
  v=FAIL
  if ((dry_run)); then v=dry-run; elif ((ok)); then v="PASS (check failed, as expected)"; fi
  record 5 cluster-policy "Cluster policy (negative control)" "$( ((rc == 0)) && echo "yes (unexpected)" || echo "no: ${remote:-?} spans remote (expected)")" \
    "-" "$(received "$s")" "-" "$v" \
    "with internalTrafficPolicy Cluster kube-proxy picks any node's agent for each new connection: remote spans arrive and --expect-local fails, so the check can fail"
fi

# ---------------------------------------------------------------- step 6
if [[ -z "$victim" ]]; then
  record 6 terminating "local agent terminating" "-" "-" "n/a" "n/a" "FAIL (no node with both a generator and an agent)"
else
  log "step 6: the agents get a ${drain_s}s graceful shutdown; the one on $victim is removed: while it terminates but still serves, $victim's spans must reach only it"
  kdo apply -f "$draining_yaml"
  wait_rollouts
  labelled_node="$victim"
  kdo label node "$victim" trace-gen-sink/no-agent=true --overwrite
  rc=0
  wait_until "the only endpoint on $victim is terminating and still serving" only_terminating_serving_on "$victim" || rc=1
  settle_down
  sink_reset
  if ((rc == 0)); then
    sink_check terminating --expect-local --from-nodes "$all_nodes" --within "$within" --hold "$hold" || rc=$?
    check_or_abort "$rc"
  fi
  s="$(sink_stats)"
  step_stats="$s"
  still=1
  ((dry_run)) || only_terminating_serving_on "$victim" || still=0
  eps="$(agent_endpoints | awk -v n="$victim" '$1 == n' | tr '\n' ';')"
  record 6 terminating "local agent terminating on $victim" "$( ((rc == 0)) && echo "yes (incl. $victim)" || echo no)" \
    "-" "$(received "$s")" "-" "$(verdict "$rc" "$still")" \
    "the only endpoint on $victim was ready=false serving=true terminating=true (${eps:-?}) for the whole check: kube-proxy falls back to the local serving-terminating endpoint, so $victim kept delivering, only to its own agent"
  kdo label node "$victim" trace-gen-sink/no-agent-
  labelled_node=""
fi

# ---------------------------------------------------------------- report
echo
echo "Node-local verification, context ${context:-(dry run)}, istio=$istio, peer-attribution=$peer_attribution"
print_table
table_printed=1
echo
if ((dry_run)); then
  write_json "dry run"
  echo "RESULT: dry run: nothing was run against the cluster and nothing was verified (the kubectl commands above are what a run would do)"
  exit 0
fi
write_json complete
if ((all_ok)); then
  echo "RESULT: every step came out as expected"
  exit 0
fi
echo "RESULT: at least one step did not come out as expected (see the route tables above)"
exit 1
