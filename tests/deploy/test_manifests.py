"""Checks of the container images, the Kubernetes manifests and the shell scripts
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
- every container command line in the manifests is accepted by the built
  binaries, and the probes hit endpoints they serve;
- the Dockerfile builds with the same command as CI (static), its runtime is
  scratch and its entrypoints are the binaries (tests/images builds and runs
  the images);
- every shell script passes shellcheck, and none under pipefail pipes into
  grep -q or head;
- deploy/verify-rbac grants what trace-verify needs and no more (trace-verify's
  own tests run its calls with that role against a real kube-apiserver).

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
import sysconfig
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
    """Everything deployed carries app.kubernetes.io/part-of (trace-verify
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
    only the node affinity trace-verify's agent-removed event relies on (nodes
    labelled trace-gen-sink/no-agent get no agent)."""
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
    assert {REPO / "run-tests.sh", DEPLOY / "images" / "build.sh", DEPLOY / "lib" / "toolchain.sh"} <= set(scripts)
    result = subprocess.run([tool("shellcheck"), "--external-sources", *map(str, scripts)], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stdout + result.stderr


# A reader that stops at its first match or line: the writer before it in a
# pipeline may be killed by SIGPIPE, and under pipefail the pipeline then fails.
EARLY_EXIT_READER = re.compile(r"\|\s*(?:grep\s+(?:-\w*[qm]|--quiet|--max-count)|head\b)")


def early_exit_pipes(text: str, sourced_under_pipefail: bool = False) -> list[str]:
    """The lines of a pipefail script (or of a library a pipefail script
    sources) that pipe into an early-exit reader."""
    if "pipefail" not in text and not sourced_under_pipefail:
        return []
    return [line.strip() for line in text.splitlines() if not line.lstrip().startswith("#") and EARLY_EXIT_READER.search(line)]


def test_no_pipe_into_an_early_exit_reader_under_pipefail():
    """No pipefail script pipes into grep -q, grep -m or head. A CI run failed on
    `/bin/busybox --help | grep -q '^BusyBox'`: grep exited at the first line,
    busybox died of SIGPIPE writing the next, and pipefail made the check say
    busybox was missing (1 run in 200 on an idle machine, more under load)."""
    assert early_exit_pipes("set -o pipefail\nbusybox --help 2>&1 | grep -q '^BusyBox'\n")
    assert early_exit_pipes("set -euo pipefail\nx=$(sed -n p f | head -n1)\n")
    assert not early_exit_pipes("set -e\nx=$(sed -n p f | head -n1)\n")
    assert not early_exit_pipes("set -o pipefail\n# a | grep -q comment\ny=$(a | grep -c b)\n")
    assert early_exit_pipes("x=$(a | head -n1)\n", sourced_under_pipefail=True)
    scripts = [*shell_scripts(), REPO / ".ci" / "run"]
    # a library (deploy/lib/toolchain.sh) runs under the pipefail of the scripts that source it
    sourced = {m for p in scripts if "pipefail" in p.read_text()
               for m in re.findall(r"^\s*(?:source|\.)\s+\S*?([\w.-]+\.sh)\b", p.read_text(), re.M)}
    assert "toolchain.sh" in sourced
    found = {str(p.relative_to(REPO)): early_exit_pipes(p.read_text(), p.name in sourced) for p in scripts}
    assert not {k: v for k, v in found.items() if v}


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


# ---------------------------------------------------------------- deploy/verify-rbac


# What trace-verify calls (verify/src/cluster.rs), as (group, resource, resource
# name or None, verb): everything deploy/verify-rbac may grant, and all of it.
VERIFY_CALLS = {
    *{("", r, None, v) for r in ("namespaces", "services", "configmaps")
      for v in ("get", "create", "patch", "delete")},
    *{("apps", r, None, v) for r in ("daemonsets", "deployments") for v in ("get", "create", "patch", "delete")},
    ("", "nodes", None, "get"), ("", "nodes", None, "patch"),
    ("", "pods", None, "list"), ("", "pods", None, "delete"),
    # not called: held so that RBAC lets the account create --peer-attribution's
    # ClusterRole (list and watch on pods) without escalate or bind
    ("", "pods", None, "watch"),
    ("discovery.k8s.io", "endpointslices", None, "list"),
    ("", "services/proxy", None, "get"), ("", "services/proxy", None, "create"),
    ("", "pods/proxy", None, "get"),
    ("", "serviceaccounts", None, "create"),
    *{("", "serviceaccounts", "trace-sink", v) for v in ("get", "patch", "delete")},
    *{("rbac.authorization.k8s.io", r, None, "create") for r in ("clusterroles", "clusterrolebindings")},
    *{("rbac.authorization.k8s.io", r, "trace-sink-pod-reader", v)
      for r in ("clusterroles", "clusterrolebindings") for v in ("get", "patch", "delete")},
    *{("security.istio.io", "peerauthentications", None, v) for v in ("get", "create", "patch", "delete")},
    ("apiextensions.k8s.io", "customresourcedefinitions", "peerauthentications.security.istio.io", "get"),
}


def test_verify_rbac_grants_exactly_what_verify_calls():
    """deploy/verify-rbac: one ServiceAccount bound to one ClusterRole that
    grants exactly what trace-verify calls (VERIFY_CALLS), nothing more: no
    watch or list it does not call, no exec, secrets or logs, no pod creation
    (trace-verify runs no check pods). verify/tests/cluster.rs runs
    trace-verify's calls with this role (sufficient); this test keeps it from
    growing (least privilege)."""
    objs = render("deploy/verify-rbac")
    role = find(objs, "ClusterRole", "trace-gen-sink-verify")
    binding = find(objs, "ClusterRoleBinding", "trace-gen-sink-verify")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "trace-gen-sink-verify",
                                    "namespace": "trace-gen-sink-verify"}]
    assert binding["roleRef"]["name"] == "trace-gen-sink-verify"
    grants = {(g, r, n, v) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"]
              for n in rule.get("resourceNames", [None]) for v in rule["verbs"]}
    assert grants - VERIFY_CALLS == set(), "granted but not called"
    assert VERIFY_CALLS - grants == set(), "called but not granted"
    # --peer-attribution: the names the role narrows to are those of the component
    names = {n for rule in role["rules"] for n in rule.get("resourceNames", [])}
    component = render("deploy/overlays/peer-attribution")
    for kind in ("ServiceAccount", "ClusterRole", "ClusterRoleBinding"):
        assert [o["metadata"]["name"] for o in component if o["kind"] == kind][0] in names, kind
    # and the component's ClusterRole asks for nothing the account does not hold
    # (RBAC's escalation check)
    reader = find(component, "ClusterRole", "trace-sink-pod-reader")
    for rule in reader["rules"]:
        for g in rule["apiGroups"]:
            for r in rule["resources"]:
                for v in rule["verbs"]:
                    assert (g, r, None, v) in grants, (g, r, v)
