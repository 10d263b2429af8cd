"""Checks of the container images, the Kubernetes manifests and deploy/verify.sh
that need no cluster and no container engine.

What is proven here:
- every kustomization under deploy/ renders with kubectl's kustomize and its
  objects validate strictly against the Kubernetes schemas of K8S_VERSIONS;
  the Istio objects (CRDs, no schema shipped) are checked field by field;
- the agent's ConfigMap carries deploy/agent/config.yaml byte for byte (the
  file the lab runs), the real collector starts with it and refuses the
  broken-agent overlay's config;
- the Services' traffic policies, security settings, probes and downward API
  environment are what the issue asks for, and the cross-namespace addresses
  follow a change of namespace;
- every container command line in the manifests, and every `trace-sink check`
  command line deploy/verify.sh runs, is accepted by the built binaries;
- the Dockerfile builds with the same command as CI (static), its runtime is
  scratch and its entrypoints are the binaries (tests/images builds and runs
  the images);
- deploy/verify.sh passes shellcheck, its --dry-run plan uses only flags
  kubectl accepts, and against a stand-in kubectl it runs the four steps,
  reports PASS/FAIL correctly and cleans up.

kubectl, shellcheck and the schemas come from the pinned pip packages in
tests/requirements.txt (nothing is taken from the machine), the collector from
deploy/collector/build.sh, the binaries from `cargo build --release --locked`.
"""

from __future__ import annotations

import copy
import functools
import json
import os
import random
import re
import shlex
import shutil
import signal
import subprocess
import sys
import sysconfig
import textwrap
import time
import urllib.error
import urllib.request
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
# The Kubernetes versions the manifests are validated against. kubernetes-validate
# 1.37.0 ships schemas for 1.28 .. 1.37: a conservative middle and the newest.
K8S_VERSIONS = ("1.33.0", "1.37.0")
PART_OF = "trace-gen-sink"
BUILD_COMMAND = "cargo build --release --locked --bin trace-gen --bin trace-sink"
BINARIES = ("trace-gen", "trace-sink")

# Every kustomization a user can apply, and what it must contain.
KUSTOMIZATIONS = [
    "deploy",
    "deploy/base",
    "deploy/agent",
    "deploy/sink",
    "deploy/generator",
    "deploy/overlays/istio",
    "deploy/overlays/broken-agent",
    "deploy/overlays/cluster-policy",
    "deploy/overlays/control-plane",
    "deploy/overlays/peer-attribution",
    "deploy/verify-rbac",
]
WHOLE = [k for k in KUSTOMIZATIONS if k == "deploy" or k == "deploy/base" or "/overlays/" in k]
# Kinds without a namespace that the manifests use.
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding"}


# ---------------------------------------------------------------- tools


def tool(name: str) -> str:
    """A tool installed by the pip packages of tests/requirements.txt (never the
    machine's own: a fresh CI machine has none)."""
    path = Path(sysconfig.get_path("scripts")) / name
    assert path.exists(), f"{path} is missing: pip install -r tests/requirements.txt"
    return str(path)


def kubectl() -> str:
    return tool("kubectl")


@functools.lru_cache(maxsize=None)
def render_text(directory: str) -> str:
    result = subprocess.run(
        [kubectl(), "kustomize", str(REPO / directory)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, f"kubectl kustomize {directory} failed:\n{result.stderr}"
    return result.stdout


def render(directory: str) -> list[dict]:
    """The objects of a kustomization (a fresh copy each call)."""
    return copy.deepcopy([d for d in yaml.safe_load_all(render_text(directory)) if d])


def render_path(path: Path) -> list[dict]:
    result = subprocess.run([kubectl(), "kustomize", str(path)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"kubectl kustomize {path} failed:\n{result.stderr}"
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def find(objs: list[dict], kind: str, name: str) -> dict:
    found = [o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


def find_prefix(objs: list[dict], kind: str, prefix: str) -> dict:
    found = [o for o in objs if o["kind"] == kind and o["metadata"]["name"].startswith(prefix)]
    assert len(found) == 1, f"expected one {kind}/{prefix}*, found {len(found)}"
    return found[0]


def workloads(objs: list[dict]) -> list[dict]:
    return [o for o in objs if o["kind"] in ("Deployment", "DaemonSet")]


def container(obj: dict, name: str) -> dict:
    cs = [c for c in obj["spec"]["template"]["spec"]["containers"] if c["name"] == name]
    assert len(cs) == 1, f"{obj['kind']}/{obj['metadata']['name']} has no container {name}"
    return cs[0]


def env_of(c: dict) -> dict[str, dict]:
    return {e["name"]: e for e in c.get("env", [])}


# ---------------------------------------------------------------- rendering and schemas


def test_every_kustomization_is_listed():
    """Every kustomization.yaml under deploy/ is rendered by these tests (a new
    overlay cannot slip through unchecked)."""
    on_disk = set()
    for path in DEPLOY.rglob("kustomization.yaml"):
        rel = path.parent.relative_to(REPO).as_posix()
        if rel.startswith(("deploy/collector", "deploy/lab")):
            continue
        kind = yaml.safe_load(path.read_text()).get("kind", "Kustomization")
        if kind == "Component":
            continue
        on_disk.add(rel)
    assert on_disk == set(KUSTOMIZATIONS)


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("directory", KUSTOMIZATIONS)
def test_kustomization_renders_and_validates_strictly(directory, version):
    """`kubectl kustomize` renders it, and every built-in object passes strict
    schema validation (unknown fields rejected) for each of K8S_VERSIONS;
    objects of other API groups must be ones checked by hand below."""
    objs = render(directory)
    assert objs, f"{directory} renders nothing"
    for obj in objs:
        group = obj["apiVersion"].split("/")[0] if "/" in obj["apiVersion"] else ""
        if group == "security.istio.io":
            continue  # CRD: test_istio_objects_have_their_required_fields
        try:
            validated = kubernetes_validate.validate(obj, version, strict=True)
            assert validated == version.rsplit(".", 1)[0]  # no silent fallback to older schemas
        except kubernetes_validate.ValidationError as e:
            pytest.fail(f"{directory}: {obj['kind']}/{obj['metadata']['name']}: {e.message} at {list(e.path)}")
        except kubernetes_validate.SchemaNotFoundError as e:
            pytest.fail(f"{directory}: {e.message}")


def test_strict_validation_rejects_an_unknown_field():
    """Negative control: the validator used above does reject a misspelt field."""
    ds = find(render("deploy/agent"), "DaemonSet", "trace-agent")
    ds["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {"periodSeconds": 1}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(ds, K8S_VERSIONS[0], strict=True)


@pytest.mark.parametrize("directory", WHOLE)
def test_every_object_is_labelled_and_namespaced(directory):
    """Everything deployed carries app.kubernetes.io/part-of (deploy/verify.sh
    uses it to tell our objects from foreign ones) and every namespaced object
    sits in one of the rendered namespaces."""
    objs = render(directory)
    namespaces = {o["metadata"]["name"] for o in objs if o["kind"] == "Namespace"}
    assert len(namespaces) == 3
    for o in objs:
        assert o["metadata"].get("labels", {}).get("app.kubernetes.io/part-of") == PART_OF, o["metadata"]["name"]
        if o["kind"] not in CLUSTER_SCOPED:
            assert o["metadata"].get("namespace") in namespaces, f"{o['kind']}/{o['metadata']['name']}"


def test_istio_objects_have_their_required_fields():
    """The istio overlay's PeerAuthentication (a CRD, so no schema above): the
    fields Istio requires, PERMISSIVE mode, in the agent's namespace, selecting
    exactly the agent pods; and the sidecar injection labels are where the
    component says."""
    objs = render("deploy/overlays/istio")
    pas = [o for o in objs if o["kind"] == "PeerAuthentication"]
    assert len(pas) == 1
    pa = pas[0]
    # v1beta1: served by every Istio since 1.17 (v1 only from 1.22)
    assert pa["apiVersion"] == "security.istio.io/v1beta1"
    assert set(pa) == {"apiVersion", "kind", "metadata", "spec"}
    assert pa["metadata"]["name"]
    agent = find(objs, "DaemonSet", "trace-agent")
    assert pa["metadata"]["namespace"] == agent["metadata"]["namespace"]
    assert set(pa["spec"]) <= {"selector", "mtls", "portLevelMtls"}
    assert set(pa["spec"]["selector"]) == {"matchLabels"}
    match = pa["spec"]["selector"]["matchLabels"]
    assert match and match.items() <= agent["spec"]["template"]["metadata"]["labels"].items()
    assert pa["spec"]["mtls"] == {"mode": "PERMISSIVE"}

    ns_labels = {o["metadata"]["name"]: o["metadata"].get("labels", {}) for o in objs if o["kind"] == "Namespace"}
    gen = find(objs, "DaemonSet", "trace-gen")
    sink = find(objs, "Deployment", "trace-sink")
    assert ns_labels[agent["metadata"]["namespace"]].get("istio-injection") == "enabled"
    assert ns_labels[gen["metadata"]["namespace"]].get("istio-injection") == "enabled"
    assert "istio-injection" not in ns_labels[sink["metadata"]["namespace"]]
    assert agent["spec"]["template"]["metadata"]["labels"]["sidecar.istio.io/inject"] == "true"
    assert gen["spec"]["template"]["metadata"]["labels"]["sidecar.istio.io/inject"] == "true"
    assert sink["spec"]["template"]["metadata"]["labels"]["sidecar.istio.io/inject"] == "false"
    annotations = gen["spec"]["template"]["metadata"]["annotations"]
    assert json.loads(annotations["proxy.istio.io/config"]) == {"holdApplicationUntilProxyStarts": True}
    stats_port = container(gen, "trace-gen")["ports"][0]["containerPort"]
    assert annotations["traffic.sidecar.istio.io/excludeInboundPorts"] == str(stats_port)


# ---------------------------------------------------------------- the agent


def agent_configmap(objs: list[dict]) -> tuple[dict, dict]:
    ds = find(objs, "DaemonSet", "trace-agent")
    cm = find_prefix(objs, "ConfigMap", "trace-agent-config")
    volumes = {v["name"]: v for v in ds["spec"]["template"]["spec"]["volumes"]}
    assert volumes["config"]["configMap"]["name"] == cm["metadata"]["name"], "the DaemonSet mounts another ConfigMap"
    return ds, cm


@pytest.mark.parametrize("directory", ["deploy/agent", "deploy", "deploy/overlays/istio", "deploy/overlays/cluster-policy"])
def test_agent_configmap_is_the_lab_config_byte_for_byte(directory):
    """The ConfigMap the agents run holds deploy/agent/config.yaml unchanged,
    the file the lab loads, at the path the collector is started with."""
    ds, cm = agent_configmap(render(directory))
    assert cm["data"] == {"config.yaml": (DEPLOY / "agent" / "config.yaml").read_bytes().decode()}
    c = container(ds, "otel-collector")
    mount = next(m for m in c["volumeMounts"] if m["name"] == "config")
    assert c["args"] == [f"--config={mount['mountPath']}/config.yaml"]


def test_broken_agent_overlay_swaps_only_the_config():
    """The broken-agent overlay replaces the agent's configuration by
    deploy/overlays/broken-agent/config.yaml (the lab's scenario 3 file),
    breaks all agents at once, and changes nothing else."""
    base, broken = render("deploy"), render("deploy/overlays/broken-agent")
    ds, cm = agent_configmap(broken)
    assert cm["data"] == {"config.yaml": (DEPLOY / "overlays/broken-agent/config.yaml").read_bytes().decode()}
    assert ds["spec"]["updateStrategy"]["rollingUpdate"]["maxUnavailable"] == "100%"

    def strip(objs):
        out = []
        for o in objs:
            o = copy.deepcopy(o)
            if o["kind"] == "ConfigMap":
                continue
            if o["kind"] == "DaemonSet" and o["metadata"]["name"] == "trace-agent":
                o["spec"]["template"]["spec"]["volumes"][0]["configMap"]["name"] = "X"
                o["spec"]["updateStrategy"] = "X"
            out.append(o)
        return out

    assert strip(broken) == strip(base)


@pytest.mark.parametrize("directory", WHOLE)
def test_agent_service_traffic_policy(directory):
    """telemetry-otlp-traces-local: internalTrafficPolicy Local (Cluster only in
    the cluster-policy overlay), named OTLP ports, selecting the agent pods."""
    objs = render(directory)
    svc = find(objs, "Service", "telemetry-otlp-traces-local")
    agent = find(objs, "DaemonSet", "trace-agent")
    want = "Cluster" if directory.endswith("cluster-policy") else "Local"
    assert svc["spec"]["internalTrafficPolicy"] == want
    assert {(p["name"], p["port"]) for p in svc["spec"]["ports"]} == {("grpc-otlp", 4317), ("http-otlp", 4318)}
    assert svc["spec"]["selector"].items() <= agent["spec"]["template"]["metadata"]["labels"].items()
    assert svc["metadata"]["namespace"] == agent["metadata"]["namespace"]


def test_agent_daemonset():
    """The agent: upstream contrib image pinned, downward API MY_NODE_NAME and
    MY_POD_IP, the sink's address, probes on the health_check port 13133, and
    only the node affinity deploy/verify.sh step 2 relies on (nodes labelled
    trace-gen-sink/no-agent get no agent)."""
    objs = render("deploy")
    ds = find(objs, "DaemonSet", "trace-agent")
    assert ds["metadata"]["namespace"] == "kyma-system"
    c = container(ds, "otel-collector")
    image, _, tag = c["image"].rpartition(":")
    assert image == "otel/opentelemetry-collector-contrib" and re.fullmatch(r"\d+\.\d+\.\d+", tag)
    # The cluster's agent is the release the tests and the lab build and run.
    manifest = (REPO / "deploy/collector/builder-config.yaml").read_text()
    versions = set(re.findall(r"gomod: \S+ v(\d+\.\d+\.\d+)", manifest))
    assert f"version: {tag}" in manifest
    assert tag in versions and versions <= {tag, "1.71.0"}, versions
    env = env_of(c)
    assert env["MY_NODE_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
    assert env["MY_POD_IP"]["valueFrom"] == {"fieldRef": {"fieldPath": "status.podIP"}}
    sink_svc = find(objs, "Service", "trace-sink")
    grpc = next(p["port"] for p in sink_svc["spec"]["ports"] if p["name"] == "grpc-otlp")
    assert env["SINK_OTLP_ENDPOINT"]["value"] == f"trace-sink.{sink_svc['metadata']['namespace']}.svc:{grpc}"
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"grpc-otlp": 4317, "http-otlp": 4318, "health": 13133}
    for probe in ("readinessProbe", "livenessProbe"):
        assert c[probe]["httpGet"]["port"] == "health"
    assert c["readinessProbe"]["periodSeconds"] * c["readinessProbe"]["failureThreshold"] == 30
    for directory in WHOLE:
        agent = find(render(directory), "DaemonSet", "trace-agent")
        assert agent["spec"]["template"]["spec"]["affinity"] == {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {"matchExpressions": [{"key": "trace-gen-sink/no-agent", "operator": "DoesNotExist"}]}
                    ]
                }
            }
        }, directory


# ---------------------------------------------------------------- sink and generators


@pytest.mark.parametrize("directory", WHOLE)
def test_workloads_are_locked_down(directory):
    """Every container: non-root, read-only root filesystem, no privilege
    escalation, all capabilities dropped, seccomp RuntimeDefault, requests and
    limits, liveness and readiness probes on a named port it declares."""
    for w in workloads(render(directory)):
        pod = w["spec"]["template"]["spec"]
        where = f"{directory}: {w['kind']}/{w['metadata']['name']}"
        assert pod["securityContext"]["runAsNonRoot"] is True, where
        assert pod["securityContext"]["runAsUser"] > 0, where
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, where
        # Only the sink with Kubernetes attribution talks to the API, as its own
        # ServiceAccount (test_peer_attribution_overlay checks what it may do).
        api_client = directory.endswith("peer-attribution") and w["metadata"]["name"] == "trace-sink"
        assert pod["automountServiceAccountToken"] is api_client, where
        assert pod.get("serviceAccountName") == ("trace-sink" if api_client else None), where
        for c in pod["containers"]:
            sc = c["securityContext"]
            assert sc["runAsNonRoot"] is True and sc["readOnlyRootFilesystem"] is True, where
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc["capabilities"] == {"drop": ["ALL"]}, where
            assert {"cpu", "memory"} <= set(c["resources"]["requests"]), where
            assert {"cpu", "memory"} <= set(c["resources"]["limits"]), where
            names = {p["name"] for p in c["ports"]}
            for probe in ("readinessProbe", "livenessProbe"):
                assert c[probe]["httpGet"]["port"] in names, f"{where}: {probe}"


def test_sink():
    """trace-sink: one replica, replaced (not rolled) so counts are never split,
    Service with named ports grpc-otlp 4317, http-otlp 4318, http-api 8080,
    probes /healthz and /readyz on the API port."""
    objs = render("deploy")
    dep = find(objs, "Deployment", "trace-sink")
    assert dep["metadata"]["namespace"] == "trace-sink"
    assert dep["spec"]["replicas"] == 1 and dep["spec"]["strategy"] == {"type": "Recreate"}
    svc = find(objs, "Service", "trace-sink")
    assert {(p["name"], p["port"], p["targetPort"]) for p in svc["spec"]["ports"]} == {
        ("grpc-otlp", 4317, "grpc-otlp"),
        ("http-otlp", 4318, "http-otlp"),
        ("http-api", 8080, "http-api"),
    }
    assert svc["spec"]["selector"].items() <= dep["spec"]["template"]["metadata"]["labels"].items()
    c = container(dep, "trace-sink")
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == {"grpc-otlp": 4317, "http-otlp": 4318, "http-api": 8080}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http-api"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http-api"}


def test_generator():
    """trace-gen: a DaemonSet with NODE_NAME, POD_NAME, POD_NAMESPACE from the
    downward API, sending to the agent Service by its cluster DNS name, the
    stats port 8081 probed on /healthz."""
    objs = render("deploy")
    ds = find(objs, "DaemonSet", "trace-gen")
    assert ds["metadata"]["namespace"] == "trace-gen"
    c = container(ds, "trace-gen")
    env = env_of(c)
    for name, path in (("NODE_NAME", "spec.nodeName"), ("POD_NAME", "metadata.name"), ("POD_NAMESPACE", "metadata.namespace")):
        assert env[name]["valueFrom"] == {"fieldRef": {"fieldPath": path}}, name
    svc = find(objs, "Service", "telemetry-otlp-traces-local")
    assert env["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"]["value"] == (
        f"http://telemetry-otlp-traces-local.{svc['metadata']['namespace']}.svc:4317"
    )
    assert c["ports"] == [{"name": "http-stats", "containerPort": 8081, "protocol": "TCP"}]
    assert "--stats-listen=0.0.0.0:8081" in c["args"]
    assert c["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "http-stats"}


def test_peer_attribution_overlay():
    """The peer-attribution overlay: the agents run deploy/components/
    agent-stamps-nothing/config.yaml, which stamps nothing (no processor, no agent.node.name); the
    sink runs with --k8s-attribution as its own ServiceAccount, whose only
    permission is list and watch on Pods (cluster-wide: the agents live in
    another namespace); nothing else differs from deploy/."""
    base, objs = render("deploy"), render("deploy/overlays/peer-attribution")
    ds, cm = agent_configmap(objs)
    text = (DEPLOY / "components/agent-stamps-nothing/config.yaml").read_bytes().decode()
    assert cm["data"] == {"config.yaml": text}
    config = yaml.safe_load(text)
    assert "processors" not in config
    assert all("processors" not in p for p in config["service"]["pipelines"].values())
    assert "agent.node.name" not in re.sub(r"#.*", "", text)
    # The rest of the agent config is the default one's.
    default = yaml.safe_load((DEPLOY / "agent/config.yaml").read_text())
    del default["processors"]
    for p in default["service"]["pipelines"].values():
        del p["processors"]
    assert config == default

    dep = find(objs, "Deployment", "trace-sink")
    sink_ns = dep["metadata"]["namespace"]
    assert "--k8s-attribution" in container(dep, "trace-sink")["args"]
    pod = dep["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "trace-sink" and pod["automountServiceAccountToken"] is True
    sa = find(objs, "ServiceAccount", "trace-sink")
    assert sa["metadata"]["namespace"] == sink_ns
    role = find(objs, "ClusterRole", "trace-sink-pod-reader")
    assert role["rules"] == [{"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "watch"]}]
    bindings = [o for o in objs if o["kind"] in ("ClusterRoleBinding", "RoleBinding")]
    assert len(bindings) == 1
    assert bindings[0]["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role["metadata"]["name"]}
    assert bindings[0]["subjects"] == [{"kind": "ServiceAccount", "name": "trace-sink", "namespace": sink_ns}]

    def strip(objs):
        out = []
        for o in objs:
            o = copy.deepcopy(o)
            if o["kind"] in ("ConfigMap", "ServiceAccount", "ClusterRole", "ClusterRoleBinding"):
                continue
            if o["kind"] == "DaemonSet" and o["metadata"]["name"] == "trace-agent":
                o["spec"]["template"]["spec"]["volumes"][0]["configMap"]["name"] = "X"
            if o["kind"] == "Deployment" and o["metadata"]["name"] == "trace-sink":
                spec = o["spec"]["template"]["spec"]
                spec.pop("serviceAccountName", None)
                spec["automountServiceAccountToken"] = False
                args = spec["containers"][0]["args"]
                spec["containers"][0]["args"] = [a for a in args if a != "--k8s-attribution"]
            out.append(o)
        return out

    assert strip(objs) == strip(base)


def test_peer_attribution_rbac_follows_the_sink_namespace(tmp_path):
    """Moving the sink to another namespace moves its ServiceAccount and the
    binding's subject with it."""
    copy_root = tmp_path / "deploy"
    shutil.copytree(DEPLOY, copy_root, ignore=shutil.ignore_patterns("collector", "lab"))
    k = copy_root / "sink" / "kustomization.yaml"
    k.write_text(k.read_text().replace("\nnamespace: trace-sink\n", "\nnamespace: sink-x\n"))
    objs = render_path(copy_root / "overlays" / "peer-attribution")
    assert find(objs, "ServiceAccount", "trace-sink")["metadata"]["namespace"] == "sink-x"
    assert find(objs, "ClusterRoleBinding", "trace-sink-pod-reader")["subjects"][0]["namespace"] == "sink-x"


def test_control_plane_overlay_tolerates_control_plane_taints():
    """The control-plane overlay lets both DaemonSets (generators and agents:
    a generator without its agent could not deliver) onto control-plane nodes."""
    objs = render("deploy/overlays/control-plane")
    for name in ("trace-gen", "trace-agent"):
        tolerations = find(objs, "DaemonSet", name)["spec"]["template"]["spec"]["tolerations"]
        assert {"key": "node-role.kubernetes.io/control-plane", "operator": "Exists", "effect": "NoSchedule"} in tolerations
    assert "tolerations" not in find(render("deploy"), "DaemonSet", "trace-gen")["spec"]["template"]["spec"]


def test_addresses_follow_a_change_of_namespace(tmp_path):
    """Changing the agent's or the sink's namespace in its own kustomization
    (the one documented knob) moves every address that names it: the
    generators' endpoint, the agents' sink endpoint, the PeerAuthentication."""
    copy_root = tmp_path / "deploy"
    shutil.copytree(DEPLOY, copy_root, ignore=shutil.ignore_patterns("collector", "lab"))
    for part, old, new in (("agent", "kyma-system", "telemetry-x"), ("sink", "trace-sink", "sink-x")):
        k = copy_root / part / "kustomization.yaml"
        text = k.read_text()
        assert f"\nnamespace: {old}\n" in text
        k.write_text(text.replace(f"\nnamespace: {old}\n", f"\nnamespace: {new}\n"))
    objs = render_path(copy_root / "overlays" / "istio")
    gen_env = env_of(container(find(objs, "DaemonSet", "trace-gen"), "trace-gen"))
    agent = find(objs, "DaemonSet", "trace-agent")
    assert agent["metadata"]["namespace"] == "telemetry-x"
    assert gen_env["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"]["value"] == "http://telemetry-otlp-traces-local.telemetry-x.svc:4317"
    assert env_of(container(agent, "otel-collector"))["SINK_OTLP_ENDPOINT"]["value"] == "trace-sink.sink-x.svc:4317"
    assert find(objs, "PeerAuthentication", "trace-agent")["metadata"]["namespace"] == "telemetry-x"
    assert {o["metadata"]["name"] for o in objs if o["kind"] == "Namespace"} == {"telemetry-x", "sink-x", "trace-gen"}


# ---------------------------------------------------------------- the real collector


@pytest.fixture(scope="session")
def collector() -> str:
    """The lab's collector, built from deploy/collector/builder-config.yaml
    (cached). Not skippable: without it the agent config is unproven."""
    result = subprocess.run(
        ["bash", str(DEPLOY / "collector" / "build.sh")], capture_output=True, text=True, timeout=1200
    )
    assert result.returncode == 0, f"deploy/collector/build.sh failed:\n{result.stderr[-4000:]}"
    path = result.stdout.strip().splitlines()[-1]
    assert os.access(path, os.X_OK), path
    return path


def collector_env(pod_ip: str) -> dict[str, str]:
    env = dict(os.environ)
    # SINK_OTLP_ENDPOINT: a closed loopback port; the exporter connects lazily.
    env.update(MY_NODE_NAME="node-test", MY_POD_IP=pod_ip, SINK_OTLP_ENDPOINT="127.0.0.1:9")
    return env


@pytest.mark.parametrize("config", ["agent/config.yaml", "components/agent-stamps-nothing/config.yaml"])
def test_collector_runs_the_agent_config(collector, config):
    """The real collector starts with deploy/agent/config.yaml (and the
    config of deploy/components/agent-stamps-nothing, which stamps nothing) and its
    health_check answers 200 on MY_POD_IP:13133, as the readiness probe asks.
    MY_POD_IP is a random 127.x.y.z address so nothing else on this machine
    (or a second test run) holds the ports."""
    pod_ip = f"127.{random.randint(1, 254)}.{random.randint(1, 254)}.{random.randint(1, 254)}"
    proc = subprocess.Popen(
        [collector, f"--config={DEPLOY / config}"],
        env=collector_env(pod_ip),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        status = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://{pod_ip}:13133/", timeout=2) as r:
                    status = r.status
                    break
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.3)
        assert proc.poll() is None, f"collector exited with {proc.returncode}:\n{proc.stdout.read()}"
        assert status == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_collector_refuses_the_broken_agent_config(collector):
    """The real collector exits non-zero at once on the broken-agent overlay's
    config (so the agents crash-loop), and says why."""
    start = time.monotonic()
    result = subprocess.run(
        [collector, f"--config={DEPLOY / 'overlays' / 'broken-agent' / 'config.yaml'}"],
        env=collector_env("127.0.0.1"),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode != 0
    assert time.monotonic() - start < 10
    assert 'unknown type: "resouce"' in result.stderr


# ---------------------------------------------------------------- shell scripts


def shell_scripts() -> list[Path]:
    skip = {".git", "target", "node_modules", ".venv", "build", "__pycache__"}
    out = []
    for dirpath, dirnames, filenames in os.walk(REPO):
        dirnames[:] = [d for d in dirnames if d not in skip]
        out += [Path(dirpath) / f for f in filenames if f.endswith(".sh")]
    return sorted(out)


def test_every_shell_script_passes_shellcheck():
    """Every *.sh in the repository passes shellcheck (the pinned one)."""
    scripts = shell_scripts()
    assert DEPLOY / "verify.sh" in scripts
    result = subprocess.run([tool("shellcheck"), "--external-sources", *map(str, scripts)], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stdout + result.stderr


# ---------------------------------------------------------------- Dockerfile


def dockerfile_stages() -> dict[str, list[str]]:
    """Stage name -> its instructions (continuation lines joined, comments dropped)."""
    lines, current = [], ""
    for raw in (REPO / "Dockerfile").read_text().splitlines():
        if raw.lstrip().startswith("#") and not current:
            continue
        current += raw.rstrip("\\").strip() + " " if raw.rstrip().endswith("\\") else raw.strip()
        if not raw.rstrip().endswith("\\"):
            if current:
                lines.append(current)
            current = ""
    stages: dict[str, list[str]] = {"": []}
    name = ""
    for line in lines:
        m = re.match(r"FROM\s+(\S+)(?:\s+AS\s+(\S+))?$", line, re.IGNORECASE)
        if m:
            name = m.group(2) or m.group(1)
            stages[name] = [line]
        else:
            stages[name].append(line)
    return stages


def ci_scripts() -> list[Path]:
    """.ci/run and the repository scripts it runs (./run-tests.sh, ...)."""
    ci = REPO / ".ci" / "run"
    assert ci.exists(), ".ci/run is missing"
    scripts = [ci]
    for m in re.finditer(r"^\s*(?:bash\s+)?\.?/?([\w./-]+\.sh)\b", ci.read_text(), re.M):
        path = REPO / m.group(1)
        if path.exists():
            scripts.append(path)
    return scripts


def test_dockerfile_build_command_is_the_ci_command():
    """The Dockerfile's build step and CI (.ci/run, or the script it runs) use
    the same release build command, so CI compiling it proves the image's build
    step compiles."""
    docker = (REPO / "Dockerfile").read_text()
    build_run = [line for line in dockerfile_stages()["build"] if line.startswith("RUN")]
    assert len(build_run) == 1 and BUILD_COMMAND in build_run[0]
    assert f"#   {BUILD_COMMAND}" in docker  # the comment a reader (and grep) finds
    # every release build of named binaries in CI (mentions in messages name none)
    found = {
        m.group(0)
        for script in ci_scripts()
        for m in re.finditer(r"cargo build --release(?: --?[\w-]+| [A-Za-z][\w-]*)*", script.read_text())
        if "--bin" in m.group(0)
    }
    assert found == {BUILD_COMMAND}, found


def test_dockerfile_images():
    """Two runtime targets named after the binaries, each on scratch (the
    binaries are linked static), non-root, with OCI labels, the ports the
    manifests use, and the binary as ENTRYPOINT; the build image is pinned to a
    full version."""
    stages = dockerfile_stages()
    docker = (REPO / "Dockerfile").read_text()
    assert re.search(r"^ARG RUST_IMAGE=rust:\d+\.\d+\.\d+-bookworm$", docker, re.M)
    assert re.search(r"^ARG RUNTIME_IMAGE=scratch$", docker, re.M)
    build_run = next(line for line in stages["build"] if line.startswith("RUN"))
    assert 'RUSTFLAGS="-C target-feature=+crt-static"' in build_run and "--target" in build_run
    objs = render("deploy")
    ports = {
        "trace-gen": {p["containerPort"] for p in container(find(objs, "DaemonSet", "trace-gen"), "trace-gen")["ports"]},
        "trace-sink": {p["containerPort"] for p in container(find(objs, "Deployment", "trace-sink"), "trace-sink")["ports"]},
    }
    for binary in BINARIES:
        stage = stages[binary]
        assert stage[0] == f"FROM ${{RUNTIME_IMAGE}} AS {binary}"
        assert f"COPY --from=build /out/{binary} /usr/local/bin/{binary}" in stage
        assert f'ENTRYPOINT ["/usr/local/bin/{binary}"]' in stage
        user = next(line for line in stage if line.startswith("USER"))
        assert user.split()[1].split(":")[0] not in ("0", "root")
        label = next(line for line in stage if line.startswith("LABEL"))
        for key in ("title", "description", "version", "revision", "licenses"):
            assert f"org.opencontainers.image.{key}=" in label
        assert f'org.opencontainers.image.title="{binary}"' in label
        exposed = {int(p) for line in stage if line.startswith("EXPOSE") for p in line.split()[1:]}
        assert exposed == ports[binary]
    # the binaries the build copies are the [[bin]] targets of the crates
    for binary, crate in (("trace-gen", "generator"), ("trace-sink", "sink")):
        cargo = (REPO / crate / "Cargo.toml").read_text()
        assert re.search(rf'\[\[bin\]\]\s*\nname = "{binary}"', cargo), crate
    assert "target" in (REPO / ".dockerignore").read_text().split()


# ---------------------------------------------------------------- the binaries against the manifests


@pytest.fixture(scope="session")
def binaries() -> dict[str, Path]:
    """target/release/{trace-gen,trace-sink}, built with the CI command (a no-op
    when they are up to date)."""
    result = subprocess.run(shlex.split(BUILD_COMMAND), cwd=REPO, capture_output=True, text=True, timeout=3000)
    assert result.returncode == 0, result.stderr[-4000:]
    return {b: REPO / "target" / "release" / b for b in BINARIES}


def image_binary(image: str) -> str | None:
    """trace-gen / trace-sink for our images whatever the registry and tag."""
    name = image.rsplit("/", 1)[-1].split(":")[0].split("@")[0]
    return name if name in BINARIES else None


def assert_accepted(binary: Path, args: list[str], where: str) -> None:
    """clap parses the arguments in order, so `args --help` exits 0 only if every
    argument before --help is a known flag with a valid value. Independently,
    every --flag used must appear in the help text."""
    result = subprocess.run([str(binary), *args, "--help"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, f"{where}: {binary.name} {shlex.join(args)} rejected:\n{result.stderr}"
    help_text = result.stdout
    for a in args:
        if a.startswith("--"):
            flag = a.split("=", 1)[0]
            assert re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", help_text), f"{where}: {flag} not in --help"


def test_help_short_circuit_does_not_hide_unknown_flags(binaries):
    """Negative control for assert_accepted: an unknown flag before --help fails."""
    for binary in binaries.values():
        result = subprocess.run([str(binary), "--no-such-flag", "--help"], capture_output=True, text=True, timeout=30)
        assert result.returncode != 0, f"{binary.name} accepted an unknown flag before --help"


@pytest.mark.parametrize("directory", WHOLE)
def test_container_command_lines_match_the_binaries(binaries, directory):
    """Each container of our images runs its ENTRYPOINT (the binary of the same
    name) with the manifest's args: the built binary accepts them."""
    seen = set()
    for w in workloads(render(directory)):
        for c in w["spec"]["template"]["spec"]["containers"]:
            binary = image_binary(c["image"])
            if binary is None:
                continue
            seen.add(binary)
            assert "command" not in c, "the image's ENTRYPOINT is the binary; set args only"
            assert c["name"] == binary
            assert_accepted(binaries[binary], c.get("args", []), f"{directory}: {w['kind']}/{w['metadata']['name']}")
    assert seen == set(BINARIES)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http_status(url: str, deadline: float) -> int | None:
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                return r.status
        except urllib.error.HTTPError as e:
            return e.code
        except (urllib.error.URLError, ConnectionError, OSError):
            time.sleep(0.2)
    return None


def test_probes_hit_endpoints_the_binaries_serve(binaries):
    """The probe paths of the manifests answer 200 on the real binaries, started
    with the manifests' args (listen addresses moved to loopback ports)."""
    objs = render("deploy")
    sink_c = container(find(objs, "Deployment", "trace-sink"), "trace-sink")
    gen_c = container(find(objs, "DaemonSet", "trace-gen"), "trace-gen")
    api, grpc, http, stats = free_port(), free_port(), free_port(), free_port()
    sink_args = [*sink_c["args"], f"--api-listen=127.0.0.1:{api}", f"--grpc-listen=127.0.0.1:{grpc}", f"--http-listen=127.0.0.1:{http}"]
    gen_args = [a for a in gen_c["args"] if not a.startswith("--stats-listen")] + [f"--stats-listen=127.0.0.1:{stats}"]
    env = dict(os.environ, NODE_NAME="node-test", OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=f"http://127.0.0.1:{grpc}")
    procs = [
        subprocess.Popen([str(binaries["trace-sink"]), *sink_args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
        subprocess.Popen([str(binaries["trace-gen"]), *gen_args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
    ]
    try:
        deadline = time.monotonic() + 20
        for c, port in ((sink_c, api), (gen_c, stats)):
            for probe in ("readinessProbe", "livenessProbe"):
                url = f"http://127.0.0.1:{port}{c[probe]['httpGet']['path']}"
                assert http_status(url, deadline) == 200, url
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


# ---------------------------------------------------------------- deploy/verify.sh


def verify_env(extra_path: Path | None = None) -> dict[str, str]:
    env = dict(os.environ)
    path = str(Path(sysconfig.get_path("scripts")))
    if extra_path is not None:
        path = f"{extra_path}{os.pathsep}{path}"
    env["PATH"] = f"{path}{os.pathsep}{env.get('PATH', '')}"
    env.pop("KUBECONFIG", None)
    return env


STEP_KEYS = ["all-up", "agent-removed", "crash-loop", "recovered", "cluster-policy", "terminating"]


@functools.lru_cache(maxsize=None)
def dry_run(*flags: str) -> tuple[subprocess.CompletedProcess, dict[str, list[dict]]]:
    """verify.sh --dry-run, and the manifests it rendered, including the check
    pods (its work directory, kept by a dry run for inspection, is removed here)."""
    result = subprocess.run(
        ["bash", str(DEPLOY / "verify.sh"), "--dry-run", *flags],
        capture_output=True,
        text=True,
        timeout=120,
        env=verify_env(),
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr
    workdir = Path(re.search(r"rendered manifests stay in (\S+)", result.stderr).group(1))
    assert workdir.parent == REPO / "target"
    try:
        rendered = {
            name: [d for d in yaml.safe_load_all((workdir / f"{name}.yaml").read_text()) if d]
            for name in ("base", "broken", "cluster", "draining")
        }
        for key in STEP_KEYS:
            rendered[f"check-{key}"] = [d for d in yaml.safe_load_all((workdir / f"check-{key}.yaml").read_text()) if d]
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return result, rendered


def planned_commands(result: subprocess.CompletedProcess) -> list[list[str]]:
    return [shlex.split(line[2:]) for line in result.stdout.splitlines() if line.startswith("+ kubectl ")]


@pytest.mark.parametrize("flags", [(), ("--istio", "--control-plane", "--registry", "ghcr.io/acme", "--tag", "v1")])
def test_verify_dry_run_plan_uses_valid_kubectl_flags(flags):
    """verify.sh --dry-run prints its whole plan (apply, rollouts, the six
    check pods, the agent removal, the overlays, clean-up); kubectl accepts
    every flag of every planned command (`--help` placed before any `--`)."""
    result = dry_run(*flags)[0]
    commands = planned_commands(result)
    joined = "\n".join(shlex.join(c) for c in commands)
    creates = [c for c in commands if c[:2] == ["kubectl", "create"] and "-f" in c and "--raw" not in c]
    assert [Path(c[c.index("-f") + 1]).name for c in creates] == [f"check-{k}.yaml" for k in STEP_KEYS]
    assert joined.count("trace-gen-sink/no-agent=true") == 2 and joined.count("trace-gen-sink/no-agent-") == 2
    applied = [Path(c[c.index("-f") + 1]).name for c in commands if c[:2] == ["kubectl", "apply"]]
    assert applied == ["base.yaml", "broken.yaml", "base.yaml", "cluster.yaml", "draining.yaml"]
    assert [c[1] for c in commands[-2:]] == ["delete", "delete"]
    assert "RESULT: dry run: nothing was run against the cluster and nothing was verified" in result.stdout
    assert "every step came out as expected" not in result.stdout
    for c in commands:
        args = c[1:]
        cut = args.index("--") if "--" in args else len(args)
        res = subprocess.run([kubectl(), *args[:cut], "--help"], capture_output=True, text=True, timeout=30)
        assert res.returncode == 0, f"kubectl rejects: {shlex.join(c)}\n{res.stderr}"


def test_verify_check_pods_run_commands_the_binary_accepts(binaries):
    """Every check pod verify.sh creates is a valid Pod (strict schema), runs
    the sink's image with `check` args the built trace-sink accepts, needs no
    API access and reports through FallbackToLogsOnError."""
    _, rendered = dry_run()
    sink_image = container(find(rendered["base"], "Deployment", "trace-sink"), "trace-sink")["image"]
    for key in STEP_KEYS:
        (pod,) = rendered[f"check-{key}"]
        kubernetes_validate.validate(pod, K8S_VERSIONS[0], strict=True)
        assert pod["metadata"]["name"] == f"trace-sink-check-{key}"
        assert pod["metadata"]["labels"]["app.kubernetes.io/part-of"] == PART_OF
        spec = pod["spec"]
        assert spec["restartPolicy"] == "Never" and spec["automountServiceAccountToken"] is False
        (c,) = spec["containers"]
        assert c["image"] == sink_image and "command" not in c
        assert c["terminationMessagePolicy"] == "FallbackToLogsOnError"
        assert c["args"][0] == "check" and c["args"][1] == "--url=http://trace-sink.trace-sink.svc:8080"
        assert_accepted(binaries["trace-sink"], c["args"], f"verify.sh check pod {key}")


def test_verify_dry_run_renders_the_requested_variant():
    """--registry/--tag/--istio reach the manifests verify.sh applies; step 6's
    variant gives the agents a preStop sleep that outlasts the check."""
    _, rendered = dry_run("--istio", "--control-plane", "--registry", "ghcr.io/acme", "--tag", "v1")
    for name in ("base", "broken", "cluster", "draining"):
        objs = rendered[name]
        images = {c["image"] for w in workloads(objs) for c in w["spec"]["template"]["spec"]["containers"]}
        assert {"ghcr.io/acme/trace-gen:v1", "ghcr.io/acme/trace-sink:v1"} <= images
        assert any(o["kind"] == "PeerAuthentication" for o in objs)
        assert "tolerations" in find(objs, "DaemonSet", "trace-agent")["spec"]["template"]["spec"]
    broken_config = find_prefix(rendered["broken"], "ConfigMap", "trace-agent-config")["data"]["config.yaml"]
    assert broken_config == (DEPLOY / "overlays/broken-agent/config.yaml").read_text()
    assert find(rendered["cluster"], "Service", "telemetry-otlp-traces-local")["spec"]["internalTrafficPolicy"] == "Cluster"
    agent = find(rendered["draining"], "DaemonSet", "trace-agent")["spec"]["template"]["spec"]
    sleep = container({"spec": {"template": {"spec": agent}}, "kind": "DaemonSet", "metadata": {"name": "a"}},
                      "otel-collector")["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert sleep == 10 + 90 + 30 + 15, "settle + within + hold + 15 s by default"
    assert agent["terminationGracePeriodSeconds"] > sleep
    assert find(rendered["draining"], "Service", "telemetry-otlp-traces-local")["spec"]["internalTrafficPolicy"] == "Local"
    assert rendered["check-all-up"][0]["spec"]["tolerations"][0]["key"] == "node-role.kubernetes.io/control-plane"


FAKE_KUBECTL = textwrap.dedent(
    r"""
    #!{python}
    # A stand-in kubectl for testing deploy/verify.sh's logic: a 3-node cluster
    # whose every call is logged. `kubectl kustomize` runs the real kubectl.
    import json, os, shutil, sys
    import yaml
    REAL = {real!r}
    state = os.environ["FAKE_KUBE_DIR"]
    args = sys.argv[1:]
    if args[:1] == ["kustomize"]:
        os.execv(REAL, [REAL] + args)
    with open(os.path.join(state, "calls.jsonl"), "a") as f:
        f.write(json.dumps(args) + "\n")

    def counter(name, bump=True):
        path = os.path.join(state, name)
        n = int(open(path).read()) if os.path.exists(path) else 0
        if bump:
            n += 1
            open(path, "w").write(str(n))
        return n

    def phase(value=None):
        path = os.path.join(state, "phase")
        if value is not None:
            open(path, "w").write(value)
        return open(path).read() if os.path.exists(path) else "none"

    def opt(name):
        return args[args.index(name) + 1] if name in args else None

    def check_failed():
        n = counter("checks", bump=False)
        if str(n) == os.environ.get("FAKE_FAIL_CHECK"):
            return True
        # remote spans under Cluster policy: --expect-local fails (unless told otherwise)
        return phase() == "cluster" and not os.environ.get("FAKE_CLUSTER_PASSES")

    nodes = ["node-b", "node-a", "node-c", "node-a"]  # unsorted, repeated: the script sorts
    if args[:2] == ["config", "current-context"]:
        print("fake-context")
    elif args[:1] == ["version"] or args[:2] == ["get", "crd"]:
        pass
    elif args[:2] == ["get", "namespace"]:
        if args[2] in os.environ.get("FAKE_PREEXISTING", "").split(","):
            print("namespace/" + args[2])
    elif args[:2] == ["get", "-f"]:
        if os.environ.get("FAKE_FOREIGN"):  # KIND/NAME with another owner
            print(os.environ["FAKE_FOREIGN"] + " ")
    elif args[:1] == ["apply"]:
        n = counter("applies")
        shutil.copy(opt("-f"), os.path.join(state, "applied-%d.yaml" % n))
        phase(os.path.basename(opt("-f")).split(".")[0])
    elif args[:1] == ["create"] and "-f" in args and "--raw" not in args:
        n = counter("checks")
        pod = yaml.safe_load(open(opt("-f")))
        with open(os.path.join(state, "checks.jsonl"), "a") as f:
            f.write(json.dumps(pod["spec"]["containers"][0]["args"]) + "\n")
        print("pod/" + pod["metadata"]["name"] + " created")
    elif args[:2] == ["get", "pod"]:
        out = opt("-o")
        if "phase" in out:
            print("Failed" if check_failed() else "Succeeded", end="")
        elif "exitCode" in out:
            print("1" if check_failed() else "0", end="")
    elif args[:1] == ["logs"]:
        print("GENERATOR NODE  AGENT NODE  SPANS")
        print("FAIL" if check_failed() else "PASS")
    elif args[:2] == ["get", "endpointslices"]:
        print("node-a false true true\nnode-b true true false\nnode-c true true false")
    elif args[:2] == ["get", "pods"] and "restartCount" in opt("-o"):
        loop = os.environ.get("FAKE_NO_CRASHLOOP") and "node-b=0/true/ " or "node-b=1/false/CrashLoopBackOff "
        print("node-a=2/false/CrashLoopBackOff " + loop + "node-c=1/false/", end="")
    elif args[:2] == ["get", "pods"]:
        selector = opt("-l")
        field = opt("--field-selector")
        if field is None:
            print("\n".join(nodes))
        elif selector.endswith("trace-gen"):
            print("trace-gen-" + field.split(",")[0].split("=")[1], end="")
        # agents: none left on the node asked about
    elif args[:2] == ["get", "daemonset"]:
        print("2 2 3 3 0", end="")
    elif args[:2] == ["create", "--raw"]:
        print("{{}}")
    elif args[:2] == ["get", "--raw"]:
        path = args[2]
        if "/services/" in path and os.environ.get("FAKE_NO_STATS"):
            print("Error from server (ServiceUnavailable)", file=sys.stderr)
            sys.exit(1)
        if "/services/" in path:
            total = 0 if phase() == "broken" else 300
            remote = 120 if phase() == "cluster" and not os.environ.get("FAKE_CLUSTER_PASSES") else 0
            routes = []
            if total and os.environ.get("FAKE_ATTRIBUTION"):  # where the agent nodes came from
                a = os.environ["FAKE_ATTRIBUTION"]
                routes = [{{"generator_node": "node-a", "agent_node": "node-a", "spans": total - remote,
                           "attribution": a, "spans_by_attribution": {{a: total - remote}}}},
                          {{"generator_node": "node-b", "agent_node": None, "spans": 0, "attribution": None}}]
            print(json.dumps({{"schema": "trace-sink/stats/v1", "spans_total": total, "local_spans": total - remote,
                              "remote_spans": remote, "unattributed_spans": 0, "routes": routes}}))
        else:
            n = counter("genstats-" + path.split("/pods/")[1].split(":")[0]) * 10
            print(json.dumps({{"schema": "trace-gen/stats/v1", "spans_failed": n,
                              "spans_failed_by_reason": {{"connect_timeout": n}}}}, indent=2))
    elif args[:1] == ["rollout"]:
        if str(counter("rollouts")) == os.environ.get("FAKE_FAIL_ROLLOUT"):
            print("error: timed out waiting for the condition", file=sys.stderr)
            sys.exit(1)
    """
).lstrip()


def run_verify_with_fake_kubectl(tmp_path: Path, *flags: str, **env_extra: str) -> tuple[subprocess.CompletedProcess, list[list[str]], Path]:
    bindir, state = tmp_path / "bin", tmp_path / "state"
    bindir.mkdir()
    state.mkdir()
    fake = bindir / "kubectl"
    fake.write_text(FAKE_KUBECTL.format(python=sys.executable, real=kubectl()))
    fake.chmod(0o755)
    env = verify_env(bindir)
    env.update(FAKE_KUBE_DIR=str(state), **env_extra)
    before = set((REPO / "target").glob("verify.*"))
    result = subprocess.run(
        ["bash", str(DEPLOY / "verify.sh"), "--settle", "0", "--timeout", "5", *flags],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=REPO,
    )
    calls = [json.loads(line) for line in (state / "calls.jsonl").read_text().splitlines()]
    assert set((REPO / "target").glob("verify.*")) == before, "verify.sh left its work directory behind"
    return result, calls, state


def table_rows(stdout: str) -> dict[str, str]:
    return {line.split()[0]: line for line in stdout.splitlines() if re.match(r"^[1-6]\s", line)}


def check_args(state: Path) -> list[list[str]]:
    return [json.loads(line) for line in (state / "checks.jsonl").read_text().splitlines()]


def test_verify_runs_the_six_steps_and_cleans_up(tmp_path):
    """Against a stand-in 3-node cluster where everything behaves: six PASS
    rows (the Cluster-policy one because its check failed, as it must) with the
    sink's and the generators' numbers, the agent removed from the first node
    and given back (twice), the overlays applied in order, the step hook called
    for every check, a JSON result, everything deleted at the end; exit 0."""
    hook_log = tmp_path / "hook.log"
    hook = tmp_path / "hook.sh"
    hook.write_text(f'#!/bin/sh\necho "$@" >>{hook_log}\n')
    hook.chmod(0o755)
    out = tmp_path / "verify.json"
    result, calls, state = run_verify_with_fake_kubectl(tmp_path, "--results-json", str(out), "--step-hook", str(hook))
    assert result.returncode == 0, result.stdout + result.stderr
    rows = table_rows(result.stdout)
    assert sorted(rows) == ["1", "2", "3", "4", "5", "6"]
    assert all("PASS" in row for row in rows.values()), result.stdout
    assert "PASS (check failed, as expected)" in rows["5"] and "120 spans remote" in rows["5"]
    assert "300 (local 300, remote 0, unattributed 0)" in rows["1"]
    assert "agent removed from node-a" in rows["2"] and "node-a +10 (since start: connect_timeout=20)" in rows["2"]
    assert rows["3"].split("PASS")[0].count("connect_timeout=") == 3 and " 0 (local 0" in rows["3"]
    assert "local agent terminating on node-a" in rows["6"]
    checks = check_args(state)
    assert len(checks) == 6
    assert checks[0][checks[0].index("--from-nodes") + 1] == "node-a,node-b,node-c"
    assert checks[1][checks[1].index("--silent-nodes") + 1] == "node-a"
    assert checks[1][checks[1].index("--from-nodes") + 1] == "node-b,node-c"
    assert "--min-spans" in checks[2] and checks[2][checks[2].index("--silent-nodes") + 1] == "node-a,node-b,node-c"
    assert "--expect-local" in checks[4] and "--expect-local" in checks[5]
    verbs = [c[0] for c in calls if c[0] in ("apply", "patch", "label") or c[:2] == ["delete", "-f"]]
    assert verbs == ["apply", "label", "label", "apply", "apply", "apply", "apply", "label", "label", "delete", "delete"]
    labels = [c for c in calls if c[0] == "label"]
    assert all(lab[2] == labels[0][2] for lab in labels), "the same node each time"
    assert [lab[3] for lab in labels] == ["trace-gen-sink/no-agent=true", "trace-gen-sink/no-agent-"] * 2
    applied = [c[c.index("-f") + 1] for c in calls if c[0] == "apply"]
    assert [Path(p).name for p in applied] == ["base.yaml", "broken.yaml", "base.yaml", "cluster.yaml", "draining.yaml"]
    resets = [c for c in calls if c[:2] == ["create", "--raw"]]
    assert len(resets) == 6 and all(c[2].endswith("/services/http:trace-sink:http-api/proxy/reset") for c in resets)
    assert hook_log.read_text().split("\n")[:-1] == [f"{k} check" for k in STEP_KEYS]
    res = json.loads(out.read_text())
    assert res["pass"] is True and res["result"] == "complete"
    assert [s["key"] for s in res["steps"]] == STEP_KEYS
    assert all(s["pass"] is True and s["verdict"].startswith("PASS") and s["title"] and s["explanation"]
               for s in res["steps"])
    assert "node-a=2/false/CrashLoopBackOff" in res["steps"][2]["explanation"]
    assert all("attribution" in s for s in res["steps"])


def test_verify_reports_a_failed_step_and_still_cleans_up(tmp_path):
    """When step 2's check fails, that row says FAIL, the others still run, the
    cluster is still cleaned up, and the exit status is 1."""
    out = tmp_path / "verify.json"
    result, calls, _ = run_verify_with_fake_kubectl(tmp_path, "--results-json", str(out), FAKE_FAIL_CHECK="2")
    assert result.returncode == 1, result.stdout + result.stderr
    rows = table_rows(result.stdout)
    assert rows["2"].rstrip().endswith("FAIL")
    assert all("PASS" in rows[s] for s in ("1", "3", "4", "5", "6"))
    assert [c[0] for c in calls[-2:]] == ["delete", "delete"]
    res = json.loads(out.read_text())
    assert res["pass"] is False and [s["pass"] for s in res["steps"]] == [True, False, True, True, True, True]


def test_verify_crash_loop_step_needs_every_agent_restarting(tmp_path):
    """Step 3 passes only when every agent pod has restarted and is not ready (a
    crash loop, read from the pods' status), not merely because nothing arrived."""
    out = tmp_path / "verify.json"
    result, _, _ = run_verify_with_fake_kubectl(tmp_path, "--results-json", str(out), FAKE_NO_CRASHLOOP="1")
    assert result.returncode == 1, result.stdout + result.stderr
    rows = table_rows(result.stdout)
    assert rows["3"].rstrip().endswith("FAIL")
    step = json.loads(out.read_text())["steps"][2]
    assert step["key"] == "crash-loop" and "node-b=0/true/" in step["explanation"]


def test_verify_negative_control_fails_when_the_check_passes(tmp_path):
    """If the local-only check passed under Cluster policy (no remote span seen),
    step 5 is a FAIL and the run exits 1: a check that cannot fail proves nothing."""
    result, _, _ = run_verify_with_fake_kubectl(tmp_path, FAKE_CLUSTER_PASSES="1")
    assert result.returncode == 1, result.stdout + result.stderr
    rows = table_rows(result.stdout)
    assert rows["5"].rstrip().endswith("FAIL") and "yes (unexpected)" in rows["5"]
    assert all("PASS" in rows[s] for s in ("1", "2", "3", "4", "6"))


def agent_config_of(manifests: Path) -> str:
    docs = [d for d in yaml.safe_load_all(manifests.read_text()) if d]
    return next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("trace-agent-config"))[
        "data"]["config.yaml"]


def test_verify_peer_attribution_deploys_the_unstamping_agent_and_wants_peer(tmp_path):
    """--peer-attribution: every variant runs the sink with --k8s-attribution as
    its own ServiceAccount (list/watch Pods), every agent but step 3's broken one
    gets the configuration that stamps nothing, each step records where its
    agent nodes came from, and the steps that received spans pass with "peer"."""
    out = tmp_path / "verify.json"
    result, calls, state = run_verify_with_fake_kubectl(tmp_path, "--peer-attribution", "--results-json", str(out),
                                                        FAKE_ATTRIBUTION="peer")
    assert result.returncode == 0, result.stdout + result.stderr
    rows = table_rows(result.stdout)
    assert all("PASS" in rows[s] and " peer " in rows[s] for s in ("1", "2", "4", "5", "6")), result.stdout
    assert "PASS" in rows["3"] and " peer " not in rows["3"]
    res = json.loads(out.read_text())
    assert res["pass"] is True and res["peer_attribution"] is True
    assert [s["attribution"] for s in res["steps"]] == ["peer", "peer", None, "peer", "peer", "peer"]
    assert all("attribution peer" in s["explanation"] for s in res["steps"])
    applied = sorted(state.glob("applied-*.yaml"), key=lambda p: int(p.stem.split("-")[1]))
    assert len(applied) == 5  # base, broken, base, cluster, draining
    for n, path in enumerate(applied, 1):
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
        sink = find(docs, "Deployment", "trace-sink")
        assert "--k8s-attribution" in container(sink, "trace-sink")["args"], path.name
        assert sink["spec"]["template"]["spec"]["serviceAccountName"] == "trace-sink"
        role = find(docs, "ClusterRole", "trace-sink-pod-reader")
        assert role["rules"] == [{"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "watch"]}]
        config = agent_config_of(path)
        if n == 2:  # step 3: the broken configuration, as without the option
            assert "resouce/agent-node" in config
        else:
            parsed = yaml.safe_load(config)
            assert "processors" not in parsed and "processors" not in parsed["service"]["pipelines"]["traces"], path.name


def test_verify_peer_attribution_fails_steps_whose_nodes_did_not_come_from_the_peer(tmp_path):
    """Under --peer-attribution an agent that still stamps its node ("both") or a
    sink that did not resolve peers ("attribute") means the run did not verify
    what it claims: every step that received spans is a FAIL, exit 1."""
    for seen in ("both", "attribute"):
        d = tmp_path / seen
        d.mkdir()
        out = d / "verify.json"
        result, _, _ = run_verify_with_fake_kubectl(d, "--peer-attribution", "--results-json", str(out),
                                                    FAKE_ATTRIBUTION=seen)
        assert result.returncode == 1, result.stdout + result.stderr
        rows = table_rows(result.stdout)
        assert all(f"FAIL (attribution {seen}, expected peer)" in rows[s] for s in ("1", "2", "4", "5", "6"))
        assert "PASS" in rows["3"]
        steps = json.loads(out.read_text())["steps"]
        assert [s["attribution"] for s in steps] == [seen, seen, None, seen, seen, seen]


def test_verify_peer_attribution_never_passes_without_the_sinks_stats(tmp_path):
    """Under --peer-attribution a step whose /stats could not be read has no
    attribution to show: it is a FAIL even though its check passed."""
    result, _, _ = run_verify_with_fake_kubectl(tmp_path, "--peer-attribution", FAKE_NO_STATS="1",
                                                FAKE_ATTRIBUTION="peer")
    assert result.returncode == 1, result.stdout + result.stderr
    rows = table_rows(result.stdout)
    assert all("FAIL (attribution unknown" in rows[s] for s in ("1", "2", "4", "6")), result.stdout
    # steps 3 and 5 need the sink's numbers for their own verdict already
    assert rows["3"].rstrip().endswith("FAIL") and rows["5"].rstrip().endswith("FAIL")


def test_verify_records_attribute_without_the_option(tmp_path):
    """Without --peer-attribution the agents stamp their node: each step records
    "attribute" (and a step is not failed for it)."""
    out = tmp_path / "verify.json"
    result, _, state = run_verify_with_fake_kubectl(tmp_path, "--results-json", str(out), FAKE_ATTRIBUTION="attribute")
    assert result.returncode == 0, result.stdout + result.stderr
    res = json.loads(out.read_text())
    assert res["peer_attribution"] is False
    assert [s["attribution"] for s in res["steps"]] == ["attribute", "attribute", None, "attribute", "attribute",
                                                        "attribute"]
    assert "resource/agent-node" in yaml.safe_load(agent_config_of(state / "applied-1.yaml"))["processors"]
    assert "ClusterRole" not in (state / "applied-1.yaml").read_text()


def test_verify_leaves_existing_namespaces_alone(tmp_path):
    """A namespace that exists already (kyma-system on a Kyma cluster) is
    neither applied (its labels stay) nor deleted."""
    result, calls, state = run_verify_with_fake_kubectl(tmp_path, FAKE_PREEXISTING="kyma-system")
    assert result.returncode == 0, result.stdout + result.stderr
    for applied in state.glob("applied-*.yaml"):
        names = {d["metadata"]["name"] for d in yaml.safe_load_all(applied.read_text()) if d and d["kind"] == "Namespace"}
        assert names == {"trace-gen", "trace-sink"}, applied.name
        agent = find([d for d in yaml.safe_load_all(applied.read_text()) if d], "DaemonSet", "trace-agent")
        assert agent["metadata"]["namespace"] == "kyma-system"


def test_verify_aborted_midway_prints_the_steps_so_far_and_cleans_up(tmp_path):
    """A rollout that times out (here the 4th: the agent coming back to the
    node step 2 took it from) aborts the run: non-zero exit, the rows so far
    are printed, and the clean-up still deletes what was created."""
    out = tmp_path / "verify.json"
    result, calls, _ = run_verify_with_fake_kubectl(tmp_path, "--results-json", str(out), FAKE_FAIL_ROLLOUT="4")
    assert result.returncode == 2, "an aborted run is a setup problem"
    assert "ABORTED" in result.stdout
    assert sorted(table_rows(result.stdout)) == ["1", "2"]
    assert [c[0] for c in calls[-2:]] == ["delete", "delete"]
    res = json.loads(out.read_text())
    assert res["pass"] is False and res["result"].startswith("aborted") and len(res["steps"]) == 2


def test_verify_refuses_to_touch_foreign_objects(tmp_path):
    """Objects with our names that are not part of trace-gen-sink (say a
    platform's own telemetry-otlp-traces-local) make verify.sh stop before it
    changes anything, with status 2."""
    result, calls, _ = run_verify_with_fake_kubectl(tmp_path, FAKE_FOREIGN="Service/telemetry-otlp-traces-local")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "not part of trace-gen-sink" in result.stderr
    assert not [c for c in calls if c[0] in ("apply", "patch", "delete", "create", "exec", "label")]


def test_verify_rbac_grants_what_verify_needs_and_no_more():
    """deploy/verify-rbac: one ServiceAccount bound to one ClusterRole; it can
    do what verify.sh's plan does (namespaces, node labels, the workloads, the
    check pods and their logs, the API proxy, EndpointSlices) but not exec,
    secrets or RBAC. The lab runs verify.sh with exactly this account."""
    objs = render("deploy/verify-rbac")
    role = find(objs, "ClusterRole", "trace-gen-sink-verify")
    binding = find(objs, "ClusterRoleBinding", "trace-gen-sink-verify")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "trace-gen-sink-verify",
                                    "namespace": "trace-gen-sink-verify"}]
    grants = {(g, r, v) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]}
    for need in [("", "namespaces", "create"), ("", "namespaces", "delete"), ("", "namespaces", "watch"),
                 ("", "configmaps", "watch"), ("apps", "daemonsets", "watch"), ("", "nodes", "patch"),
                 ("apps", "daemonsets", "patch"), ("apps", "deployments", "create"), ("", "configmaps", "create"),
                 ("", "services", "patch"), ("", "pods", "create"), ("", "pods", "delete"), ("", "pods/log", "get"),
                 ("", "services/proxy", "create"), ("", "services/proxy", "get"), ("", "pods/proxy", "get"),
                 ("discovery.k8s.io", "endpointslices", "list")]:
        assert need in grants, need
    resources = {r for _, r, _ in grants}
    assert not resources & {"pods/exec", "secrets", "roles", "rolebindings", "*"}
    assert not any(v in ("*", "escalate", "bind", "impersonate") for _, _, v in grants)
    # --peer-attribution: the sink's ServiceAccount, ClusterRole and binding,
    # created by any name (create cannot be narrowed), all else only by theirs
    for rule in role["rules"]:
        if set(rule["resources"]) & {"serviceaccounts", "clusterroles", "clusterrolebindings"}:
            assert rule["verbs"] == ["create"] or (
                rule.get("resourceNames") in (["trace-sink"], ["trace-sink-pod-reader"])
                and "create" not in rule["verbs"]), rule
    names = {n for rule in role["rules"] for n in rule.get("resourceNames", [])}
    component = render("deploy/overlays/peer-attribution")
    for kind in ("ServiceAccount", "ClusterRole", "ClusterRoleBinding"):
        assert [o["metadata"]["name"] for o in component if o["kind"] == kind][0] in names, kind
