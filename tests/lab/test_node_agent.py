"""Unit tests of the lab's node agent (deploy/lab/node_agent.py), the part of the
lab that emulates the kubelet: env resolution (downward API, ConfigMaps),
volumes, probes and their state machine, CrashLoopBackOff back-off, Pod and Node
status. They run the real functions; the end-to-end proof is the lab itself
(`sudo deploy/lab/run.sh`), where the real API server, controllers and
kube-proxy act on what the agent reports."""

from __future__ import annotations

import http.server
import socket
import sys
import threading
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "deploy" / "lab"))
import node_agent as na  # noqa: E402


def agent_pod() -> dict:
    """A pod as the DaemonSet controller creates it from deploy/agent/daemonset.yaml."""
    ds = yaml.safe_load((REPO / "deploy/agent/daemonset.yaml").read_text())
    spec = ds["spec"]["template"]["spec"]
    spec["nodeName"] = "node-2"
    return {"metadata": {"name": "trace-agent-x7k2p", "namespace": "kyma-system", "uid": "1234-5678",
                         "labels": {"app.kubernetes.io/name": "trace-agent", "tier": "a b"},
                         "annotations": {"note": "hi"}},
            "spec": spec,
            "status": {"conditions": [{"type": "PodScheduled", "status": "True",
                                       "lastTransitionTime": "2026-01-01T00:00:00Z"}]}}


def no_objects(kind, ns, name):
    return None


# ---------------------------------------------------------------- env
def test_expand_follows_kubernetes_rules():
    env = {"A": "1", "B": "two"}
    assert na.expand("$(A)-$(B)", env) == "1-two"
    assert na.expand("$(MISSING)", env) == "$(MISSING)", "undefined references stay as written"
    assert na.expand("$$(A)", env) == "$(A)", "$$ escapes"
    assert na.expand("x$(A", env) == "x$(A"


def test_agent_manifest_env_resolves_from_the_downward_api():
    pod = agent_pod()
    c = pod["spec"]["containers"][0]
    env = na.resolve_env(pod, c, no_objects, "198.18.130.7", "198.18.0.12", {"PATH": "/bin"})
    assert env["MY_NODE_NAME"] == "node-2"
    assert env["MY_POD_IP"] == "198.18.130.7"
    assert env["SINK_OTLP_ENDPOINT"] == "trace-sink.trace-sink.svc:4317"
    assert env["PATH"] == "/bin"


def test_generator_manifest_env_resolves_metadata_fields():
    ds = yaml.safe_load((REPO / "deploy/generator/daemonset.yaml").read_text())
    pod = {"metadata": {"name": "trace-gen-abc", "namespace": "trace-gen", "uid": "u"},
           "spec": {**ds["spec"]["template"]["spec"], "nodeName": "node-3"}}
    env = na.resolve_env(pod, pod["spec"]["containers"][0], no_objects, "198.18.131.4", "198.18.0.13", {})
    assert (env["NODE_NAME"], env["POD_NAME"], env["POD_NAMESPACE"]) == ("node-3", "trace-gen-abc", "trace-gen")


def test_field_refs_for_labels_annotations_and_hosts():
    pod = agent_pod()
    assert na.field_value(pod, "metadata.labels['tier']", "", "") == "a b"
    assert na.field_value(pod, "metadata.annotations['note']", "", "") == "hi"
    assert na.field_value(pod, "metadata.labels['absent']", "", "") == ""
    assert na.field_value(pod, "metadata.uid", "", "") == "1234-5678"
    assert na.field_value(pod, "status.hostIP", "1.1.1.1", "198.18.0.12") == "198.18.0.12"
    assert 'tier="a b"' in na.field_value(pod, "metadata.labels", "", "").splitlines()
    with pytest.raises(na.ConfigError, match="unsupported fieldRef"):
        na.field_value(pod, "spec.hostname", "", "")


def test_env_order_expansion_configmap_refs_and_envfrom():
    objects = {("configmap", "ns", "cm"): {"K": "from-cm", "X": "x"}, ("secret", "ns", "s"): {"PW": "p"}}
    lookup = lambda kind, ns, name: objects.get((kind, ns, name))  # noqa: E731
    pod = {"metadata": {"name": "p", "namespace": "ns"}, "spec": {"nodeName": "n"}}
    c = {"envFrom": [{"configMapRef": {"name": "cm"}, "prefix": "CM_"}],
         "env": [{"name": "K", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "K"}}},
                 {"name": "URL", "value": "http://$(K):$(CM_X)"},
                 {"name": "PW", "valueFrom": {"secretKeyRef": {"name": "s", "key": "PW"}}},
                 {"name": "OPT", "valueFrom": {"configMapKeyRef": {"name": "nope", "key": "k", "optional": True}}},
                 {"name": "CM_X", "value": "overridden"}]}
    env = na.resolve_env(pod, c, lookup, "", "", {})
    assert env["URL"] == "http://from-cm:x", "a value sees the variables defined before it"
    assert env["CM_X"] == "overridden", "env wins over envFrom"
    assert env["PW"] == "p" and "OPT" not in env


@pytest.mark.parametrize("ref,msg", [({"name": "nope", "key": "k"}, 'configmap "nope"'),
                                     ({"name": "cm", "key": "absent"}, 'key "absent"')])
def test_missing_configmap_key_is_a_config_error(ref, msg):
    lookup = lambda kind, ns, name: {"k": "v"} if name == "cm" else None  # noqa: E731
    c = {"env": [{"name": "A", "valueFrom": {"configMapKeyRef": ref}}]}
    with pytest.raises(na.ConfigError, match=msg):
        na.resolve_env({"metadata": {"namespace": "ns"}, "spec": {}}, c, lookup, "", "", {})


def test_command_line_args_and_entrypoint():
    env = {"N": "node-1"}
    assert na.command_line({"args": ["--config=/conf/config.yaml"]}, ["/otelcol-contrib"], env) == \
        ["/otelcol-contrib", "--config=/conf/config.yaml"]
    assert na.command_line({"command": ["trace-sink", "check"], "args": ["--from-nodes=$(N)"]}, ["/x"], env) == \
        ["trace-sink", "check", "--from-nodes=node-1"], "command replaces the entrypoint, $(VAR) expanded"


# ---------------------------------------------------------------- volumes
def test_configmap_volume_files_all_keys_and_items():
    lookup = lambda kind, ns, name: {"config.yaml": "a: 1\n", "other": "o"} if kind == "configmap" else None  # noqa: E731
    pod = agent_pod()
    vol = pod["spec"]["volumes"][0]
    assert vol["configMap"]["name"] == "trace-agent-config"
    assert na.volume_files(pod, vol, lookup, "", "", lambda s: "") == {"config.yaml": b"a: 1\n", "other": b"o"}
    items = {"name": "v", "configMap": {"name": "c", "items": [{"key": "other", "path": "sub/o.txt"}]}}
    assert na.volume_files(pod, items, lookup, "", "", lambda s: "") == {"sub/o.txt": b"o"}
    with pytest.raises(na.ConfigError, match="not found"):
        na.volume_files(pod, vol, no_objects, "", "", lambda s: "")
    assert na.volume_files(pod, {"name": "e", "emptyDir": {}}, no_objects, "", "", lambda s: "") is None


def test_projected_service_account_volume_as_the_admission_plugin_injects_it():
    vol = {"name": "kube-api-access-abcde", "projected": {"sources": [
        {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
        {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
        {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}}]}}
    asked = []
    lookup = lambda kind, ns, name: {"ca.crt": "PEM"} if (kind, name) == ("configmap", "kube-root-ca.crt") else None  # noqa: E731
    files = na.volume_files(agent_pod(), vol, lookup, "", "", lambda src: asked.append(src) or "TOKEN")
    assert files == {"token": b"TOKEN", "ca.crt": b"PEM", "namespace": b"kyma-system"}
    assert asked[0]["expirationSeconds"] == 3607


# ---------------------------------------------------------------- back-off
def test_crashloop_backoff_doubles_to_the_cap_and_resets_after_a_long_run():
    """As the kubelet: the first restart at once, then 10 s doubling to 300 s."""
    b = na.Backoff(10, 300)
    assert [b.next_delay(1) for _ in range(8)] == [0, 10, 20, 40, 80, 160, 300, 300]
    assert b.next_delay(600) == 0, "a container that ran 2 x cap starts the back-off again"
    assert b.next_delay(1) == 10
    fast = na.Backoff(1, 8)
    assert [fast.next_delay(0) for _ in range(6)] == [0, 1, 2, 4, 8, 8]


# ---------------------------------------------------------------- probes
def test_parse_probe_resolves_named_ports_and_defaults():
    c = agent_pod()["spec"]["containers"][0]
    r = na.parse_probe(c["readinessProbe"], c)
    assert (r.kind, r.port, r.path, r.period, r.timeout, r.failure_threshold, r.success_threshold, r.initial_delay) == \
        ("http", 13133, "/", 10, 2, 3, 1, 0)
    live = na.parse_probe(c["livenessProbe"], c)
    assert live.initial_delay == 10
    d = na.parse_probe({"tcpSocket": {"port": 53}}, {})
    assert (d.kind, d.port, d.period, d.timeout, d.failure_threshold) == ("tcp", 53, 10, 1, 3)
    with pytest.raises(na.ConfigError):
        na.parse_probe({"httpGet": {"port": "nope"}}, c)
    g = na.parse_probe({"grpc": {"port": 4317}}, c)
    assert g.kind == "unsupported" and "not imitated" in g.unsupported


def test_readiness_state_machine_thresholds():
    st = na.ProbeState(na.ProbeConfig(kind="http", success_threshold=2, failure_threshold=3), initial=False)
    assert not st.record(True) and not st.ok, "one success of two needed"
    assert st.record(True) and st.ok, "ready after successThreshold successes in a row"
    assert not st.record(False) and not st.record(False) and st.ok, "two failures of three"
    assert not st.record(True) and st.ok, "a success resets the failure count"
    assert not st.record(False) and not st.record(False) and st.ok
    assert st.record(False) and not st.ok, "not ready after failureThreshold failures in a row"
    assert not st.record(True) and not st.ok and st.successes == 1


def test_liveness_starts_successful():
    st = na.ProbeState(na.ProbeConfig(kind="http", failure_threshold=1), initial=True)
    assert st.ok
    assert st.record(False, "refused") and not st.ok and st.last_message == "refused"


@pytest.fixture()
def http_server():
    class H(http.server.BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_GET(self):  # noqa: N802
            code = 200 if self.path == "/ok" else 302 if self.path == "/moved" else 503
            self.send_response(code)
            self.send_header("Content-Length", "0")
            self.end_headers()
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv.server_address[1]
    srv.shutdown()


def test_run_probe_against_a_real_server(http_server):
    port = http_server
    cfg = lambda path: na.ProbeConfig(kind="http", port=port, path=path, timeout=2)  # noqa: E731
    assert na.run_probe(cfg("/ok"), "127.0.0.1") == (True, "HTTP 200")
    assert na.run_probe(cfg("/moved"), "127.0.0.1")[0], "2xx and 3xx are success"
    ok, msg = na.run_probe(cfg("/bad"), "127.0.0.1")
    assert not ok and "503" in msg
    assert na.run_probe(na.ProbeConfig(kind="tcp", port=port, timeout=2), "127.0.0.1")[0]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    ok, msg = na.run_probe(na.ProbeConfig(kind="http", port=closed, timeout=2), "127.0.0.1")
    assert not ok and f"127.0.0.1:{closed}" in msg
    assert not na.run_probe(na.ProbeConfig(kind="tcp", port=closed, timeout=2), "127.0.0.1")[0]


# ---------------------------------------------------------------- status
def rec(**kw) -> na.ContainerRecord:
    return na.ContainerRecord(name="otel-collector", image="otel/opentelemetry-collector-contrib:0.165.0", **kw)


def conds(status: dict) -> dict:
    return {c["type"]: c for c in status["conditions"]}


def test_running_ready_pod_status():
    pod = agent_pod()
    r = rec(state="running", reason="", started_at="2026-01-01T00:00:01Z", ready=True, started=True)
    st = na.build_pod_status(pod, [r], "198.18.130.7", "198.18.0.12", True, "2026-01-01T00:00:00Z")
    assert st["phase"] == "Running"
    assert st["podIP"] == "198.18.130.7" and st["podIPs"] == [{"ip": "198.18.130.7"}]
    assert st["hostIP"] == "198.18.0.12"
    c = conds(st)
    assert c["PodScheduled"]["lastTransitionTime"] == "2026-01-01T00:00:00Z", "the scheduler's condition is kept"
    assert c["Ready"]["status"] == c["ContainersReady"]["status"] == c["Initialized"]["status"] == "True"
    cs = st["containerStatuses"][0]
    assert cs["ready"] and cs["started"] and cs["state"] == {"running": {"startedAt": "2026-01-01T00:00:01Z"}}


def test_crashlooping_container_status():
    pod = agent_pod()
    last = rec(state="terminated", reason="Error", exit_code=1, started_at="t0", finished_at="t1").state_dict()
    r = rec(state="waiting", reason="CrashLoopBackOff", message="back-off 20s restarting failed container",
            restart_count=2, last_state=last)
    st = na.build_pod_status(pod, [r], "198.18.130.7", "198.18.0.12", True, "t")
    assert st["phase"] == "Running", "a restarting container keeps the pod Running"
    c = conds(st)
    assert c["Ready"]["status"] == "False" and c["Ready"]["reason"] == "ContainersNotReady"
    assert "otel-collector" in c["Ready"]["message"]
    cs = st["containerStatuses"][0]
    assert cs["restartCount"] == 2 and not cs["ready"]
    assert cs["state"]["waiting"]["reason"] == "CrashLoopBackOff"
    assert cs["lastState"]["terminated"]["exitCode"] == 1


def test_ready_condition_transition_time_is_kept_until_it_changes():
    pod = agent_pod()
    r = rec(state="running", ready=True, started=True)
    st = na.build_pod_status(pod, [r], "ip", "h", True, "t")
    pod["status"] = st
    st["conditions"][-1]["lastTransitionTime"] = "2000-01-01T00:00:00Z"
    again = na.build_pod_status(pod, [r], "ip", "h", True, "t")
    assert conds(again)["Ready"]["lastTransitionTime"] == "2000-01-01T00:00:00Z"
    r.ready = False
    changed = na.build_pod_status(pod, [r], "ip", "h", True, "t")
    assert conds(changed)["Ready"]["lastTransitionTime"] != "2000-01-01T00:00:00Z"


@pytest.mark.parametrize("policy,codes,phase", [("Never", [0], "Succeeded"), ("Never", [1], "Failed"),
                                                ("OnFailure", [0], "Succeeded"), ("Always", [0], "Running")])
def test_phase_of_completed_pods(policy, codes, phase):
    recs = [rec(state="terminated", reason="Completed" if c == 0 else "Error", exit_code=c) for c in codes]
    assert na.pod_phase(recs, policy, True) == phase


def test_pending_before_the_sandbox_and_while_creating():
    assert na.pod_phase([rec()], "Always", False) == "Pending"
    assert na.pod_phase([rec(state="waiting", reason="ContainerCreating")], "Always", True) == "Pending"
    st = na.build_pod_status(agent_pod(), [rec()], "", "198.18.0.12", False, "t")
    assert "podIP" not in st and conds(st)["PodReadyToStartContainers"]["status"] == "False"


def test_terminated_status_carries_exit_code_and_message():
    r = rec(state="terminated", reason="Error", exit_code=1, message="FAIL: remote spans", started_at="a",
            finished_at="b")
    t = na.container_status(r)["state"]["terminated"]
    assert (t["exitCode"], t["reason"], t["message"]) == (1, "Error", "FAIL: remote spans")


def test_termination_message_file_then_fallback_to_logs_on_error(tmp_path):
    msg, logf = tmp_path / "termination-log", tmp_path / "c.log"
    msg.write_text("")
    logf.write_text("".join(f"line {i}\n" for i in range(200)))
    assert na.termination_message(msg, logf, "File", 1) == ""
    fb = na.termination_message(msg, logf, "FallbackToLogsOnError", 1)
    assert fb.endswith("line 199") and "line 119\n" not in fb and len(fb.encode()) <= na.FALLBACK_LOG_BYTES
    assert na.termination_message(msg, logf, "FallbackToLogsOnError", 0) == "", "logs only on failure"
    msg.write_text("x" * 10000)
    assert na.termination_message(msg, logf, "FallbackToLogsOnError", 1) == "x" * na.TERMINATION_MESSAGE_MAX


def test_node_status_addresses_and_ready_heartbeat():
    st = na.build_node_status("198.18.0.11", "node-1", {"cpu": "2", "memory": "4Gi", "pods": "110"}, "v1.34.2",
                              None, 10250)
    assert st["addresses"] == [{"type": "InternalIP", "address": "198.18.0.11"},
                               {"type": "Hostname", "address": "node-1"}]
    ready = {c["type"]: c for c in st["conditions"]}["Ready"]
    assert ready["status"] == "True" and ready["reason"] == "KubeletReady"
    assert st["allocatable"] == st["capacity"] and st["daemonEndpoints"]["kubeletEndpoint"]["Port"] == 10250
    later = na.build_node_status("198.18.0.11", "node-1", {}, "v", [{**ready, "lastTransitionTime": "then"}], 10250)
    assert {c["type"]: c for c in later["conditions"]}["Ready"]["lastTransitionTime"] == "then"


def test_image_map_matches_the_repository_name():
    m = [{"repository": "trace-gen", "binary": "/b/trace-gen"},
         {"repository": "opentelemetry-collector-contrib", "binary": "/b/otel"}]
    assert na.image_binary("ghcr.io/acme/trace-gen:v1", m)["binary"] == "/b/trace-gen"
    assert na.image_binary("trace-gen", m)["binary"] == "/b/trace-gen"
    assert na.image_binary("otel/opentelemetry-collector-contrib:0.165.0", m)["binary"] == "/b/otel"
    assert na.image_binary("registry:5000/x/trace-gen@sha256:abc", m)["binary"] == "/b/trace-gen"
    assert na.image_binary("nginx:1", m) is None
