#!/usr/bin/env python3
"""The lab's node agent: the kubelet's part of a node, emulated (one per node).

    node_agent.py CONFIG.json      (run inside the node's network namespace)

Everything else in the lab is the real Kubernetes component (etcd,
kube-apiserver, kube-controller-manager, kube-scheduler, kube-proxy, CoreDNS).
There is no container runtime here, so this agent does, for the pods the
scheduler bound to its node, what a kubelet does, and reports it through the
API server with the node's own identity (system:node:<name>, checked by the
Node authorizer and NodeRestriction):

  - Node: status (addresses, Ready and pressure conditions, capacity,
    allocatable, nodeInfo, daemonEndpoints), heartbeats via its Lease in
    kube-node-lease;
  - Pod sandbox: its own network namespace, address and routes from the
    reference CNI plugins (loopback + ptp + host-local on the node's podCIDR),
    /etc/resolv.conf pointing at cluster DNS with the pod's search path
    (dnsPolicy ClusterFirst), /etc/hosts, /etc/hostname;
  - containers: the image mapped to a local binary (IMAGE MAP in the config),
    run as a process in the pod's network namespace and in a mount namespace of
    its own with the volumes (configMap, secret, downwardAPI, projected incl. the
    service account token, emptyDir) mounted where the manifest says
    (podexec.py); env with $(VAR) expansion, fieldRef (downward API),
    configMapKeyRef, secretKeyRef, envFrom; command/args;
  - probes: startup, readiness and liveness (httpGet, tcpSocket) with
    initialDelaySeconds, periodSeconds, timeoutSeconds, successThreshold,
    failureThreshold; a liveness failure restarts the container;
  - restarts by restartPolicy with CrashLoopBackOff back-off (base doubling to
    a cap: 10 s and 300 s as the kubelet, configurable for the lab), reset after
    a container ran for twice the cap;
  - termination: preStop hook (sleep, httpGet), SIGTERM, SIGKILL at the end of
    the grace period, then the sandbox is removed and the Pod deleted with
    grace period 0, as the kubelet finalises it;
  - Pod status: phase, podIP(s), hostIP(s), startTime, conditions
    (PodReadyToStartContainers, Initialized, ContainersReady, Ready; PodScheduled
    is the scheduler's), containerStatuses (ready, started, restartCount, state
    waiting/running/terminated with reason, exit code and termination message,
    lastState);
  - kubectl logs: the kubelet's /containerLogs endpoint on port 10250 (HTTPS).

Not imitated: image pulls (images are only mapped), init and ephemeral
containers, exec/attach/port-forward, exec probes and exec hooks, gRPC probes,
postStart hooks, resource limits (cgroups), securityContext (processes run as
root), user/PID/IPC/UTS namespaces, service links env (enableServiceLinks),
volume types other than those listed, ConfigMap updates after the pod started,
static pods, evictions.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))
from kubeapi import Api, ApiError  # noqa: E402

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
TERMINATION_MESSAGE_MAX = 4096
FALLBACK_LOG_LINES, FALLBACK_LOG_BYTES = 80, 2048


def now_iso() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def now_micro() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def log(node: str, msg: str) -> None:
    print(f"{datetime.now(timezone.utc).strftime('%H:%M:%S.%f')[:-3]} [{node}] {msg}", flush=True)


# =========================================================================== env
class ConfigError(Exception):
    """What the kubelet reports as CreateContainerConfigError."""


def expand(value: str, env: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion: defined names are replaced, $$ escapes, others stay."""
    out, i = [], 0
    while i < len(value):
        if value.startswith("$$", i):
            out.append("$")
            i += 2
        elif value.startswith("$(", i) and (j := value.find(")", i + 2)) != -1:
            name = value[i + 2:j]
            out.append(env[name] if name in env else value[i:j + 1])
            i = j + 1
        else:
            out.append(value[i])
            i += 1
    return "".join(out)


def field_value(pod: dict[str, Any], path: str, pod_ip: str, host_ip: str) -> str:
    """The downward API's fieldRef values."""
    meta, spec = pod.get("metadata") or {}, pod.get("spec") or {}
    simple = {
        "metadata.name": meta.get("name", ""), "metadata.namespace": meta.get("namespace", ""),
        "metadata.uid": meta.get("uid", ""), "spec.nodeName": spec.get("nodeName", ""),
        "spec.serviceAccountName": spec.get("serviceAccountName", ""),
        "status.podIP": pod_ip, "status.podIPs": pod_ip, "status.hostIP": host_ip, "status.hostIPs": host_ip,
    }
    if path in simple:
        return simple[path]
    for kind in ("labels", "annotations"):
        prefix = f"metadata.{kind}"
        if path == prefix:
            items = sorted((meta.get(kind) or {}).items())
            return "\n".join(f'{k}="{v}"' for k, v in items)
        if path.startswith(prefix + "['") and path.endswith("']"):
            return (meta.get(kind) or {}).get(path[len(prefix) + 2:-2], "")
    raise ConfigError(f"unsupported fieldRef fieldPath {path!r}")


Lookup = Callable[[str, str, str], dict[str, str] | None]  # (kind, namespace, name) -> data or None


def resolve_env(pod: dict[str, Any], container: dict[str, Any], lookup: Lookup, pod_ip: str, host_ip: str,
                defaults: dict[str, str]) -> dict[str, str]:
    """The container's environment as the kubelet builds it: defaults, envFrom, then env in order
    (later entries may refer to earlier ones with $(NAME))."""
    ns = (pod.get("metadata") or {}).get("namespace", "default")
    env = dict(defaults)
    for src in container.get("envFrom") or []:
        ref_kind = "configmap" if "configMapRef" in src else "secret" if "secretRef" in src else None
        if not ref_kind:
            raise ConfigError(f"unsupported envFrom source {src}")
        ref = src.get("configMapRef") or src.get("secretRef")
        data = lookup(ref_kind, ns, ref["name"])
        if data is None:
            if ref.get("optional"):
                continue
            raise ConfigError(f'{ref_kind} "{ref["name"]}" not found')
        for k, v in data.items():
            env[src.get("prefix", "") + k] = v
    for e in container.get("env") or []:
        name = e["name"]
        if "valueFrom" not in e:
            env[name] = expand(e.get("value", ""), env)
            continue
        vf = e["valueFrom"]
        if "fieldRef" in vf:
            env[name] = field_value(pod, vf["fieldRef"]["fieldPath"], pod_ip, host_ip)
        elif "configMapKeyRef" in vf or "secretKeyRef" in vf:
            kind = "configmap" if "configMapKeyRef" in vf else "secret"
            ref = vf.get("configMapKeyRef") or vf.get("secretKeyRef")
            data = lookup(kind, ns, ref["name"])
            if data is None or ref["key"] not in data:
                if ref.get("optional"):
                    continue
                what = f'{kind} "{ref["name"]}"' if data is None else f'key "{ref["key"]}" in {kind} "{ref["name"]}"'
                raise ConfigError(f"couldn't find {what}")
            env[name] = data[ref["key"]]
        else:
            raise ConfigError(f"unsupported valueFrom for {name}: {sorted(vf)}")
    return env


def command_line(container: dict[str, Any], entrypoint: list[str], env: dict[str, str]) -> list[str]:
    """command replaces the image's entrypoint (and its default args); args follow; $(VAR) expanded."""
    cmd = container.get("command") or entrypoint
    return [expand(a, env) for a in [*cmd, *(container.get("args") or [])]]


def volume_files(pod: dict[str, Any], volume: dict[str, Any], lookup: Lookup, pod_ip: str, host_ip: str,
                 token: Callable[[dict[str, Any]], str]) -> dict[str, bytes] | None:
    """Files of a volume (relative path -> content); None for an emptyDir (an empty directory)."""
    ns = (pod.get("metadata") or {}).get("namespace", "default")

    def from_data(kind: str, ref: dict[str, Any]) -> dict[str, bytes]:
        data = lookup(kind, ns, ref.get("name", ""))
        if data is None:
            if ref.get("optional"):
                return {}
            raise ConfigError(f'{kind} "{ref.get("name")}" not found')
        if ref.get("items"):
            out = {}
            for it in ref["items"]:
                if it["key"] not in data:
                    if ref.get("optional"):
                        continue
                    raise ConfigError(f'key "{it["key"]}" not found in {kind} "{ref.get("name")}"')
                out[it["path"]] = data[it["key"]].encode()
            return out
        return {k: v.encode() for k, v in data.items()}

    def downward(items: list[dict[str, Any]]) -> dict[str, bytes]:
        out = {}
        for it in items:
            if "fieldRef" not in it:
                raise ConfigError(f"unsupported downwardAPI item {it}")
            out[it["path"]] = field_value(pod, it["fieldRef"]["fieldPath"], pod_ip, host_ip).encode()
        return out

    if "emptyDir" in volume:
        return None
    if "configMap" in volume:
        return from_data("configmap", volume["configMap"])
    if "secret" in volume:
        ref = dict(volume["secret"])
        ref["name"] = ref.pop("secretName", "")
        return from_data("secret", ref)
    if "downwardAPI" in volume:
        return downward(volume["downwardAPI"].get("items") or [])
    if "projected" in volume:
        files: dict[str, bytes] = {}
        for src in volume["projected"].get("sources") or []:
            if "serviceAccountToken" in src:
                files[src["serviceAccountToken"].get("path", "token")] = token(src["serviceAccountToken"]).encode()
            elif "configMap" in src:
                files.update(from_data("configmap", src["configMap"]))
            elif "secret" in src:
                files.update(from_data("secret", src["secret"]))
            elif "downwardAPI" in src:
                files.update(downward(src["downwardAPI"].get("items") or []))
            else:
                raise ConfigError(f"unsupported projected source {sorted(src)}")
        return files
    raise ConfigError(f"unsupported volume type in {sorted(k for k in volume if k != 'name')}")


# =========================================================================== back-off
class Backoff:
    """CrashLoopBackOff as the kubelet's back-off: the first restart is immediate, then the
    delays are base, 2*base, ... at most cap (10 s .. 300 s in a kubelet); a container that ran
    for 2 * cap without exiting starts the sequence again."""

    def __init__(self, base: float = 10.0, cap: float = 300.0):
        self.base, self.cap = base, cap
        self.delay: float | None = None  # None: no failure yet

    def next_delay(self, ran_for: float) -> float:
        if self.delay is None or ran_for >= 2 * self.cap:
            self.delay = 0.0
        elif self.delay == 0.0:
            self.delay = self.base
        else:
            self.delay = min(self.delay * 2, self.cap)
        return self.delay


# =========================================================================== probes
@dataclass
class ProbeConfig:
    kind: str  # "http", "tcp" or "unsupported"
    port: int = 0
    path: str = "/"
    scheme: str = "HTTP"
    host: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    initial_delay: float = 0.0
    period: float = 10.0
    timeout: float = 1.0
    success_threshold: int = 1
    failure_threshold: int = 3
    termination_grace: float | None = None
    unsupported: str = ""


def resolve_port(port: Any, container: dict[str, Any]) -> int:
    if isinstance(port, int):
        return port
    if isinstance(port, str) and port.isdigit():
        return int(port)
    for p in container.get("ports") or []:
        if p.get("name") == port:
            return int(p["containerPort"])
    raise ConfigError(f"port {port!r} not found among the container's ports")


def parse_probe(spec: dict[str, Any], container: dict[str, Any]) -> ProbeConfig:
    """A probe as the API defaults it (period 10, timeout 1, thresholds 1 and 3)."""
    c = ProbeConfig(kind="unsupported",
                    initial_delay=float(spec.get("initialDelaySeconds", 0)),
                    period=float(spec.get("periodSeconds", 10)),
                    timeout=float(spec.get("timeoutSeconds", 1)),
                    success_threshold=int(spec.get("successThreshold", 1)),
                    failure_threshold=int(spec.get("failureThreshold", 3)),
                    termination_grace=spec.get("terminationGracePeriodSeconds"))
    if "httpGet" in spec:
        h = spec["httpGet"]
        c.kind, c.port, c.path = "http", resolve_port(h["port"], container), h.get("path", "/")
        c.scheme, c.host = h.get("scheme", "HTTP"), h.get("host", "")
        c.headers = {x["name"]: x["value"] for x in h.get("httpHeaders") or []}
    elif "tcpSocket" in spec:
        t = spec["tcpSocket"]
        c.kind, c.port, c.host = "tcp", resolve_port(t["port"], container), t.get("host", "")
    else:
        c.unsupported = f"probe type {sorted(k for k in spec if k in ('exec', 'grpc')) or sorted(spec)} is not imitated by the lab's node agent"
    return c


def run_probe(c: ProbeConfig, pod_ip: str) -> tuple[bool, str]:
    """One probe attempt, as the kubelet's prober: HTTP 200-399 is success, a TCP connect is success."""
    host = c.host or pod_ip
    try:
        if c.kind == "http":
            if c.scheme.upper() == "HTTPS":
                conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                    host, c.port, timeout=c.timeout, context=ssl._create_unverified_context())
            else:
                conn = http.client.HTTPConnection(host, c.port, timeout=c.timeout)
            try:
                conn.request("GET", c.path, headers={"User-Agent": "kube-probe/1.34", "Accept": "*/*", **c.headers})
                resp = conn.getresponse()
                resp.read(10240)
            finally:
                conn.close()
            if 200 <= resp.status < 400:
                return True, f"HTTP {resp.status}"
            return False, f"HTTP probe failed with statuscode: {resp.status}"
        if c.kind == "tcp":
            with socket.create_connection((host, c.port), timeout=c.timeout):
                return True, "connected"
        return False, c.unsupported
    except (OSError, http.client.HTTPException) as exc:
        return False, f'Get "{c.scheme.lower()}://{host}:{c.port}{c.path}": {exc}' if c.kind == "http" \
            else f"dial tcp {host}:{c.port}: {exc}"


class ProbeState:
    """The result a probe worker keeps: it changes only after successThreshold successes or
    failureThreshold failures in a row. `initial` is what holds before any result:
    failure for readiness and startup, success for liveness."""

    def __init__(self, c: ProbeConfig, initial: bool):
        self.c = c
        self.ok = initial
        self.successes = self.failures = 0
        self.last_message = ""

    def record(self, ok: bool, message: str = "") -> bool:
        """Feed one attempt; returns True when the result changed."""
        self.last_message = message
        if ok:
            self.successes, self.failures = self.successes + 1, 0
            if not self.ok and self.successes >= self.c.success_threshold:
                self.ok = True
                return True
        else:
            self.failures, self.successes = self.failures + 1, 0
            if self.ok and self.failures >= self.c.failure_threshold:
                self.ok = False
                return True
            # a failing first result is not a change, but counts as "decided"
        return False


# =========================================================================== status
@dataclass
class ContainerRecord:
    name: str
    state: str = "waiting"  # waiting | running | terminated
    reason: str = "ContainerCreating"
    message: str = ""
    started_at: str = ""
    finished_at: str = ""
    exit_code: int | None = None
    restart_count: int = 0
    ready: bool = False
    started: bool = False
    last_state: dict[str, Any] | None = None
    image: str = ""
    container_id: str = ""

    def state_dict(self) -> dict[str, Any]:
        if self.state == "running":
            return {"running": {"startedAt": self.started_at}}
        if self.state == "terminated":
            t: dict[str, Any] = {"exitCode": self.exit_code if self.exit_code is not None else -1,
                                 "reason": self.reason, "startedAt": self.started_at or None,
                                 "finishedAt": self.finished_at, "containerID": self.container_id}
            if self.message:
                t["message"] = self.message
            return {"terminated": t}
        w: dict[str, Any] = {"reason": self.reason}
        if self.message:
            w["message"] = self.message
        return {"waiting": w}


def container_status(r: ContainerRecord) -> dict[str, Any]:
    s: dict[str, Any] = {"name": r.name, "image": r.image, "imageID": "", "ready": r.ready,
                         "started": r.started, "restartCount": r.restart_count, "state": r.state_dict(),
                         "lastState": r.last_state or {}}
    if r.container_id:
        s["containerID"] = r.container_id
    return s


def pod_phase(records: list[ContainerRecord], restart_policy: str, sandbox_ready: bool) -> str:
    """The kubelet's phase rules (getPhase), for regular containers."""
    if not records or not sandbox_ready:
        return "Pending"
    running = sum(r.state == "running" for r in records)
    waiting = sum(r.state == "waiting" for r in records)
    terminated = [r for r in records if r.state == "terminated"]
    succeeded = sum(r.exit_code == 0 for r in terminated)
    failed = len(terminated) - succeeded
    # a container restarted after exiting counts as running (waiting with a previous termination)
    restarting = sum(r.state == "waiting" and r.restart_count > 0 for r in records)
    if waiting - restarting > 0:
        return "Pending"
    if running or restarting:
        return "Running"
    if restart_policy == "Always":
        return "Running"
    if failed == 0:
        return "Succeeded"
    if restart_policy == "OnFailure":
        return "Running"
    return "Failed"


def condition(ctype: str, ok: bool, previous: dict[str, dict[str, Any]], reason: str = "",
              message: str = "") -> dict[str, Any]:
    status = "True" if ok else "False"
    prev = previous.get(ctype)
    c: dict[str, Any] = {"type": ctype, "status": status, "lastProbeTime": None,
                         "lastTransitionTime": prev["lastTransitionTime"] if prev and prev.get("status") == status
                         and prev.get("lastTransitionTime") else now_iso()}
    if reason and not ok:
        c["reason"] = reason
    if message and not ok:
        c["message"] = message
    return c


def build_pod_status(pod: dict[str, Any], records: list[ContainerRecord], pod_ip: str, host_ip: str,
                     sandbox_ready: bool, start_time: str) -> dict[str, Any]:
    """The status subresource the node agent writes (PodScheduled is kept as the scheduler wrote it)."""
    old = (pod.get("status") or {}).get("conditions") or []
    previous = {c["type"]: c for c in old}
    spec = pod.get("spec") or {}
    phase = pod_phase(records, spec.get("restartPolicy", "Always"), sandbox_ready)
    not_ready = sorted(r.name for r in records if not r.ready)
    containers_ready = bool(records) and not not_ready and phase == "Running"
    msg = f"containers with unready status: [{' '.join(not_ready)}]" if not_ready else ""
    conditions = [c for c in old if c["type"] == "PodScheduled"]
    conditions += [
        condition("PodReadyToStartContainers", sandbox_ready, previous),
        condition("Initialized", True, previous),
        condition("ContainersReady", containers_ready, previous, "ContainersNotReady", msg),
        condition("Ready", containers_ready, previous, "ContainersNotReady", msg),
    ]
    if phase in ("Succeeded", "Failed"):
        for c in conditions[2:]:
            c["reason"] = "PodCompleted"
            c.pop("message", None)
    status: dict[str, Any] = {"phase": phase, "conditions": conditions, "hostIP": host_ip,
                              "hostIPs": [{"ip": host_ip}], "startTime": start_time,
                              "containerStatuses": [container_status(r) for r in records]}
    if pod_ip:
        status["podIP"] = pod_ip
        status["podIPs"] = [{"ip": pod_ip}]
    return status


def build_node_status(node_ip: str, hostname: str, capacity: dict[str, str], version: str,
                      previous: list[dict[str, Any]] | None, kubelet_port: int) -> dict[str, Any]:
    prev = {c["type"]: c for c in previous or []}
    t = now_iso()

    def cond(ctype: str, status: str, reason: str, message: str) -> dict[str, Any]:
        p = prev.get(ctype)
        since = p["lastTransitionTime"] if p and p.get("status") == status else t
        return {"type": ctype, "status": status, "reason": reason, "message": message,
                "lastHeartbeatTime": t, "lastTransitionTime": since}

    return {
        "addresses": [{"type": "InternalIP", "address": node_ip}, {"type": "Hostname", "address": hostname}],
        "capacity": capacity, "allocatable": capacity,
        "conditions": [
            cond("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
            cond("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
            cond("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
            cond("Ready", "True", "KubeletReady", "kubelet is posting ready status (trace-gen-sink lab node agent)"),
        ],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": kubelet_port}},
        "nodeInfo": {"kubeletVersion": version, "kubeProxyVersion": version, "operatingSystem": "linux",
                     "architecture": "amd64", "containerRuntimeVersion": "lab://node-agent",
                     "osImage": "trace-gen-sink lab", "kernelVersion": os.uname().release,
                     "machineID": "", "systemUUID": "", "bootID": ""},
    }


def termination_message(path: Path, log_path: Path, policy: str, exit_code: int) -> str:
    """The message the kubelet reports: the file at terminationMessagePath, or with
    FallbackToLogsOnError and a failed container, the end of its log."""
    try:
        msg = path.read_bytes()[:TERMINATION_MESSAGE_MAX].decode(errors="replace")
    except OSError:
        msg = ""
    if not msg and policy == "FallbackToLogsOnError" and exit_code != 0:
        try:
            data = log_path.read_bytes()
        except OSError:
            data = b""
        tail = b"\n".join(data.splitlines()[-FALLBACK_LOG_LINES:])
        msg = tail[-FALLBACK_LOG_BYTES:].decode(errors="replace")
    return msg


def image_binary(image: str, image_map: list[dict[str, str]]) -> dict[str, str] | None:
    """The image map entry whose `repository` is the image's last path element (tag and digest dropped)."""
    repo = image.split("@")[0].rsplit("/", 1)[-1].split(":")[0]
    for m in image_map:
        if m["repository"] == repo:
            return m
    return None


# =========================================================================== runtime
class Container:
    """One container of a pod: its process, probes and restarts."""

    def __init__(self, worker: "PodWorker", spec: dict[str, Any]):
        self.w = worker
        self.spec = spec
        self.rec = ContainerRecord(name=spec["name"], image=spec.get("image", ""))
        self.proc: subprocess.Popen | None = None
        self.started_mono = 0.0
        self.backoff = Backoff(worker.agent.cfg["backoff_base"], worker.agent.cfg["backoff_max"])
        self.next_start = 0.0  # monotonic; 0 = now
        self.restart_pending = False  # exited; restarts at next_start (restartCount counts restarts done)
        self.probe_stop = threading.Event()
        self.readiness: ProbeState | None = None
        self.liveness: ProbeState | None = None
        self.startup: ProbeState | None = None
        self.kill_reason = ""
        self.dir = worker.dir / "containers" / spec["name"]
        self.log_path = worker.log_dir / f"{spec['name']}.log"
        self.prestop_done = False

    # ----------------------------------------------------------- start
    def start(self) -> None:
        w, spec = self.w, self.spec
        entry = image_binary(spec.get("image", ""), w.agent.cfg["image_map"])
        if entry is None:
            self.rec.state, self.rec.reason = "waiting", "ErrImagePull"
            self.rec.message = f'image "{spec.get("image")}" is not in the lab\'s image map'
            self.next_start = time.monotonic() + 10
            return
        try:
            defaults = {"PATH": DEFAULT_PATH, "HOSTNAME": w.name, **w.agent.cfg["default_env"]}
            env = resolve_env(w.pod, spec, w.lookup, w.pod_ip, w.agent.node_ip, defaults)
            argv = command_line(spec, entry["entrypoint"], env)
        except ConfigError as exc:
            self.rec.state, self.rec.reason, self.rec.message = "waiting", "CreateContainerConfigError", str(exc)
            self.next_start = time.monotonic() + 5
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        tm = self.dir / "termination-log"
        tm.write_bytes(b"")
        mounts = [{"target": "/etc/resolv.conf", "source": str(w.dir / "resolv.conf"), "ro": True},
                  {"target": "/etc/hosts", "source": str(w.dir / "hosts"), "ro": True},
                  {"target": "/etc/hostname", "source": str(w.dir / "hostname"), "ro": True},
                  {"target": spec.get("terminationMessagePath", "/dev/termination-log"), "source": str(tm)},
                  {"target": entry["path"], "source": entry["binary"], "ro": True}]
        for vm in spec.get("volumeMounts") or []:
            src = w.dir / "volumes" / vm["name"]
            if vm.get("subPath"):
                src = src / vm["subPath"]
            mounts.append({"target": vm["mountPath"], "source": str(src), "ro": bool(vm.get("readOnly"))})
        run_spec = {"netns": f"/run/netns/{w.netns}", "root": str(self.dir / "root"), "mounts": mounts,
                    "argv": argv, "env": env, "workdir": spec.get("workingDir") or "/"}
        (self.dir / "root").mkdir(exist_ok=True)
        spec_file = self.dir / "spec.json"
        spec_file.write_text(json.dumps(run_spec))
        if self.log_path.exists() and self.restart_pending:
            self.log_path.replace(self.log_path.with_suffix(".previous.log"))
        out = open(self.log_path, "ab")
        self.proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name("podexec.py")), str(spec_file)],
                                     stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        out.close()
        self.started_mono = time.monotonic()
        self.kill_reason = ""
        self.prestop_done = False
        r = self.rec
        if self.restart_pending:
            r.restart_count += 1
            self.restart_pending = False
        r.state, r.reason, r.message, r.started_at, r.exit_code = "running", "", "", now_iso(), None
        r.container_id = f"lab://{w.uid[:8]}-{spec['name']}-{r.restart_count}-{self.proc.pid}"
        log(w.agent.node, f"{w.key}: started container {spec['name']} (pid {self.proc.pid}): {' '.join(argv)}")
        self.start_probes()

    # ----------------------------------------------------------- probes
    def start_probes(self) -> None:
        self.probe_stop = threading.Event()
        stop = self.probe_stop
        spec = self.spec
        self.readiness = self.liveness = self.startup = None
        self.rec.ready = False
        self.rec.started = "startupProbe" not in spec
        if "readinessProbe" not in spec:
            self.rec.ready = True
        for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
            if kind in spec:
                try:
                    cfg = parse_probe(spec[kind], spec)
                except ConfigError as exc:
                    cfg = ProbeConfig(kind="unsupported", unsupported=str(exc))
                state = ProbeState(cfg, initial=(kind == "livenessProbe"))
                setattr(self, kind.replace("Probe", ""), state)
                threading.Thread(target=self.probe_loop, args=(kind, state, stop), daemon=True).start()

    def probe_loop(self, kind: str, st: ProbeState, stop: threading.Event) -> None:
        c, started = st.c, time.monotonic()
        while not stop.is_set():
            running = self.rec.state == "running"
            if running and time.monotonic() - started >= c.initial_delay and (kind == "startupProbe" or self.rec.started):
                ok, msg = run_probe(c, self.w.pod_ip)
                if stop.is_set():
                    return
                changed = st.record(ok, msg)
                if not ok:
                    self.w.event(f"{kind} failed for {self.spec['name']}: {msg}")
                if kind == "readinessProbe" and changed:
                    self.rec.ready = st.ok
                    self.w.wake()
                elif kind == "readinessProbe" and ok and st.ok and not self.rec.ready:
                    self.rec.ready = True
                    self.w.wake()
                elif kind == "startupProbe" and st.ok:
                    self.rec.started = True
                    self.w.wake()
                    return  # a startup probe stops once it succeeded
                elif kind in ("livenessProbe", "startupProbe") and not st.ok and st.failures >= c.failure_threshold:
                    self.kill_reason = f"{kind} failed {st.failures} times: {msg}"
                    self.w.wake()
                    return
            stop.wait(c.period)

    # ----------------------------------------------------------- stop
    def signal(self, sig: int) -> None:
        if self.proc and self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, sig)
            except ProcessLookupError:
                pass

    def reap(self) -> bool:
        """True once the process has exited (status recorded)."""
        if self.proc is None:
            return True
        code = self.proc.poll()
        if code is None:
            return False
        self.probe_stop.set()
        r = self.rec
        r.exit_code = code if code >= 0 else 128 - code  # killed by signal N -> 128+N
        r.finished_at = now_iso()
        r.state, r.ready = "terminated", False
        r.reason = "Completed" if r.exit_code == 0 else "Error"
        r.message = termination_message(self.dir / "termination-log", self.log_path,
                                        self.spec.get("terminationMessagePolicy", "File"), r.exit_code)
        self.ran_for = time.monotonic() - self.started_mono
        log(self.w.agent.node, f"{self.w.key}: container {r.name} exited with code {r.exit_code}"
            + (f" ({self.kill_reason})" if self.kill_reason else ""))
        self.proc = None
        return True


class PodWorker(threading.Thread):
    """Owns one pod from its binding to its deletion (its processes are children of this thread,
    so they die with it: parent-death signal)."""

    def __init__(self, agent: "NodeAgent", pod: dict[str, Any]):
        super().__init__(daemon=True)
        self.agent = agent
        self.pod = pod
        meta = pod["metadata"]
        self.uid, self.name, self.namespace = meta["uid"], meta["name"], meta["namespace"]
        self.key = f"{self.namespace}/{self.name}"
        self.netns = f"lab-pod-{self.uid[:13]}"
        self.dir = Path(agent.cfg["run_dir"]) / "pods" / self.uid
        self.log_dir = Path(agent.cfg["log_dir"]) / "pods" / f"{self.namespace}_{self.name}_{self.uid[:8]}"
        self.pod_ip = ""
        self.sandbox_ready = False
        self.start_time = now_iso()
        self.containers = [Container(self, c) for c in pod["spec"].get("containers") or []]
        self.cv = threading.Condition()
        self.gone = False
        self.last_status: Any = None
        self.terminating_since: float | None = None
        self.done = False  # finalised (deleted or removed)
        self._cache: dict[tuple[str, str, str], dict[str, str] | None] = {}

    # -------------------------------------------------------------- helpers
    def wake(self) -> None:
        with self.cv:
            self.cv.notify()

    def update(self, pod: dict[str, Any] | None) -> None:
        with self.cv:
            if pod is None:
                self.gone = True
            else:
                self.pod = pod
            self.cv.notify()

    def event(self, msg: str) -> None:
        log(self.agent.node, f"{self.key}: {msg}")

    def lookup(self, kind: str, ns: str, name: str) -> dict[str, str] | None:
        k = (kind, ns, name)
        if k not in self._cache:
            try:
                obj = self.agent.api.get(f"/api/v1/namespaces/{ns}/{kind}s/{name}")
            except ApiError as exc:
                if exc.status == 404:
                    return None
                raise ConfigError(str(exc)) from exc
            data = dict(obj.get("data") or {})
            if kind == "secret":
                data = {key: base64.b64decode(v).decode(errors="replace") for key, v in data.items()}
            else:
                data.update({key: base64.b64decode(v).decode(errors="replace")
                             for key, v in (obj.get("binaryData") or {}).items()})
            self._cache[k] = data
        return self._cache[k]

    def token(self, src: dict[str, Any]) -> str:
        sa = self.pod["spec"].get("serviceAccountName") or "default"
        body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                "spec": {"audiences": [src["audience"]] if src.get("audience") else None,
                         "expirationSeconds": int(src.get("expirationSeconds", 3607)),
                         "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": self.name, "uid": self.uid}}}
        res = self.agent.api.request("POST", f"/api/v1/namespaces/{self.namespace}/serviceaccounts/{sa}/token", body)
        return res["status"]["token"]

    # -------------------------------------------------------------- sandbox
    def setup_sandbox(self) -> None:
        a = self.agent
        self.dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        subprocess.run(["ip", "netns", "add", self.netns], check=True, capture_output=True)
        res = a.cni("ADD", self.uid, self.netns)
        self.pod_ip = res["ips"][0]["address"].split("/")[0]
        spec = self.pod["spec"]
        ns = self.namespace
        dom = a.cfg["cluster_domain"]
        policy = spec.get("dnsPolicy", "ClusterFirst")
        if policy in ("ClusterFirst", "ClusterFirstWithHostNet"):
            resolv = (f"search {ns}.svc.{dom} svc.{dom} {dom}\nnameserver {a.cfg['dns_ip']}\noptions ndots:5\n")
        else:  # Default / None: the node's resolver; the lab's nodes have none
            resolv = "".join(f"nameserver {x}\n" for x in ((spec.get("dnsConfig") or {}).get("nameservers") or []))
        (self.dir / "resolv.conf").write_text(resolv)
        (self.dir / "hosts").write_text(f"# Kubernetes-managed hosts file (lab node agent).\n127.0.0.1\tlocalhost\n"
                                        f"::1\tlocalhost ip6-localhost ip6-loopback\n{self.pod_ip}\t{self.name}\n")
        (self.dir / "hostname").write_text(self.name + "\n")
        vols = self.dir / "volumes"
        for v in spec.get("volumes") or []:
            files = volume_files(self.pod, v, self.lookup, self.pod_ip, a.node_ip, self.token)
            d = vols / v["name"]
            d.mkdir(parents=True, exist_ok=True)
            for rel, content in (files or {}).items():
                p = d / rel
                p.parent.mkdir(parents=True, exist_ok=True)
                p.write_bytes(content)
        self.sandbox_ready = True
        self.event(f"sandbox ready: netns {self.netns}, IP {self.pod_ip}")

    def teardown_sandbox(self) -> None:
        if self.sandbox_ready or Path(f"/run/netns/{self.netns}").exists():
            try:
                self.agent.cni("DEL", self.uid, self.netns)
            except Exception as exc:  # noqa: BLE001 - reported, the namespace goes anyway
                self.event(f"CNI DEL failed: {exc}")
            subprocess.run(["ip", "netns", "del", self.netns], capture_output=True)
        self.sandbox_ready = False
        shutil.rmtree(self.dir, ignore_errors=True)

    # -------------------------------------------------------------- status
    def push_status(self) -> None:
        status = build_pod_status(self.pod, [c.rec for c in self.containers],
                                  self.pod_ip if self.sandbox_ready or self.pod_ip else "", self.agent.node_ip,
                                  self.sandbox_ready, self.start_time)
        comparable = json.dumps({k: v for k, v in status.items()}, sort_keys=True)
        if comparable == self.last_status:
            return
        try:
            self.pod = self.agent.api.patch_merge(f"/api/v1/namespaces/{self.namespace}/pods/{self.name}/status",
                                                  {"status": status})
            self.last_status = comparable
        except ApiError as exc:
            if exc.status == 404:
                self.gone = True
            else:
                self.event(f"status update failed: {exc}")

    # -------------------------------------------------------------- lifecycle
    def run(self) -> None:
        try:
            self.lifecycle()
        except Exception as exc:  # noqa: BLE001 - logged; the pod is left to the next sync
            self.event(f"worker failed: {exc!r}")
            for c in self.containers:
                c.signal(signal.SIGKILL)
        finally:
            self.teardown_sandbox()
            self.done = True
            self.agent.forget(self.uid)

    def lifecycle(self) -> None:
        while True:  # the sandbox, retried like the kubelet's pod sync until it works or the pod goes
            try:
                self.setup_sandbox()
                break
            except (ConfigError, subprocess.CalledProcessError, ApiError, OSError, KeyError) as exc:
                self.event(f"sandbox setup failed (retried in 2s): {exc}")
                for c in self.containers:
                    c.rec.reason, c.rec.message = "CreateContainerConfigError", str(exc)
                self.teardown_sandbox()
                self.push_status()
                with self.cv:
                    self.cv.wait(2)
                if self.gone:
                    return
                if self.pod["metadata"].get("deletionTimestamp"):
                    self.finalize()
                    return
        policy = self.pod["spec"].get("restartPolicy", "Always")
        completed = False
        while True:
            with self.cv:
                self.cv.wait(0.5)
            if self.gone:  # deleted from the API without us (force delete): stop at once
                for c in self.containers:
                    c.signal(signal.SIGKILL)
                for c in self.containers:
                    if c.proc:
                        c.proc.wait()
                return
            meta = self.pod["metadata"]
            if meta.get("deletionTimestamp"):
                self.terminate()
                self.finalize()
                return
            for c in self.containers:
                if c.proc is not None:
                    if c.kill_reason and c.proc.poll() is None:
                        grace = self.pod["spec"].get("terminationGracePeriodSeconds", 30)
                        self.stop_container(c, float(grace))
                    if not c.reap():
                        continue
                    exited_ok = c.rec.exit_code == 0
                    if policy == "Always" or (policy == "OnFailure" and not exited_ok):
                        delay = c.backoff.next_delay(getattr(c, "ran_for", 0.0))
                        c.rec.last_state = c.rec.state_dict()
                        c.restart_pending = True
                        c.rec.started = False
                        c.next_start = time.monotonic() + delay
                        if delay > 0:
                            c.rec.state, c.rec.reason = "waiting", "CrashLoopBackOff"
                            c.rec.message = (f"back-off {int(delay)}s restarting failed container={c.rec.name} "
                                             f"pod={self.name}_{self.namespace}({self.uid})")
                elif (c.rec.state == "waiting" or c.restart_pending) and time.monotonic() >= c.next_start:
                    c.start()
            if policy != "Always" and all(c.rec.state == "terminated" for c in self.containers) and not completed:
                completed = True
                self.push_status()
                self.teardown_sandbox_keep_ip()
            self.push_status()

    def teardown_sandbox_keep_ip(self) -> None:
        """A completed pod keeps its status (podIP too) but gives its network back, as the kubelet does."""
        try:
            self.agent.cni("DEL", self.uid, self.netns)
        except Exception as exc:  # noqa: BLE001
            self.event(f"CNI DEL failed: {exc}")
        subprocess.run(["ip", "netns", "del", self.netns], capture_output=True)

    def stop_container(self, c: Container, grace: float, hooks: bool = True) -> None:
        """preStop hook, SIGTERM, then SIGKILL when the grace period is over."""
        deadline = time.monotonic() + grace
        if hooks and not c.prestop_done:
            c.prestop_done = True
            pre = ((c.spec.get("lifecycle") or {}).get("preStop")) or {}
            if "sleep" in pre:
                secs = float(pre["sleep"].get("seconds", 0))
                self.event(f"preStop hook of {c.rec.name}: sleep {secs:.0f}s (grace period {grace:.0f}s)")
                end = min(deadline, time.monotonic() + secs)
                while time.monotonic() < end and c.proc and c.proc.poll() is None:
                    time.sleep(0.2)
                    self.push_status()
            elif "httpGet" in pre:
                try:
                    h = pre["httpGet"]
                    run_probe(ProbeConfig(kind="http", port=resolve_port(h["port"], c.spec), path=h.get("path", "/"),
                                          host=h.get("host", ""), timeout=max(1.0, deadline - time.monotonic())),
                              self.pod_ip)
                except ConfigError as exc:
                    self.event(f"preStop hook failed: {exc}")
            elif pre:
                self.event(f"preStop hook {sorted(pre)} is not imitated by the lab's node agent; skipped")
        c.signal(signal.SIGTERM)
        self.event(f"SIGTERM to {c.rec.name}; SIGKILL in {max(0.0, deadline - time.monotonic()):.0f}s")
        while c.proc and c.proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        if c.proc and c.proc.poll() is None:
            self.event(f"{c.rec.name} still running at the end of its grace period: SIGKILL")
            c.signal(signal.SIGKILL)
            c.proc.wait()

    def terminate(self) -> None:
        meta = self.pod["metadata"]
        grace = float(meta.get("deletionGracePeriodSeconds",
                               self.pod["spec"].get("terminationGracePeriodSeconds", 30)))
        self.event(f"terminating (grace period {grace:.0f}s)")
        threads = [threading.Thread(target=self.stop_container, args=(c, grace), daemon=True)
                   for c in self.containers if c.proc is not None]
        for t in threads:
            t.start()
        while any(t.is_alive() for t in threads):
            time.sleep(0.2)
            self.push_status()
        for c in self.containers:
            c.reap()
            if c.rec.state == "waiting":
                c.rec.state, c.rec.reason, c.rec.exit_code, c.rec.finished_at = "terminated", "ContainerStatusUnknown", 137, now_iso()
        self.push_status()

    def finalize(self) -> None:
        self.teardown_sandbox()
        try:
            self.agent.api.request("DELETE", f"/api/v1/namespaces/{self.namespace}/pods/{self.name}",
                                   {"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0,
                                    "preconditions": {"uid": self.uid}})
            self.event("containers stopped; pod deleted (grace period 0)")
        except ApiError as exc:
            if exc.status not in (404, 409):
                self.event(f"final delete failed: {exc}")


# =========================================================================== agent
class NodeAgent:
    def __init__(self, cfg: dict[str, Any]):
        self.cfg = cfg
        self.node = cfg["node"]
        self.node_ip = cfg["node_ip"]
        self.api = Api(cfg["server"], cfg["token"], cfg["ca_file"])
        self.workers: dict[str, PodWorker] = {}
        self.lock = threading.Lock()
        self.node_conditions: list[dict[str, Any]] | None = None

    def cni(self, command: str, container_id: str, netns: str) -> dict[str, Any]:
        """Runs the CNI plugin chain (loopback, then the pod network) in this node's namespace."""
        result: dict[str, Any] = {}
        for conf in self.cfg["cni_chain"] if command == "ADD" else reversed(self.cfg["cni_chain"]):
            env = {"CNI_COMMAND": command, "CNI_CONTAINERID": container_id, "CNI_NETNS": f"/run/netns/{netns}",
                   "CNI_IFNAME": "eth0" if conf["type"] != "loopback" else "lo", "CNI_PATH": self.cfg["cni_bin"],
                   "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
            p = subprocess.run([os.path.join(self.cfg["cni_bin"], conf["type"])], input=json.dumps(conf).encode(),
                               env=env, capture_output=True, timeout=30)
            if p.returncode != 0:
                raise OSError(f"CNI {conf['type']} {command}: {p.stdout.decode()} {p.stderr.decode()}".strip())
            if command == "ADD" and conf["type"] != "loopback":
                result = json.loads(p.stdout)
        return result

    def forget(self, uid: str) -> None:
        with self.lock:
            w = self.workers.get(uid)
            if w and w.done:
                del self.workers[uid]

    # -------------------------------------------------------------- node
    def node_status_loop(self) -> None:
        lease_path = f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{self.node}"
        last_status = 0.0
        while True:
            try:
                if time.monotonic() - last_status > 30:
                    st = build_node_status(self.node_ip, self.node, self.cfg["capacity"], self.cfg["version"],
                                           self.node_conditions, self.cfg["kubelet_port"])
                    res = self.api.patch_merge(f"/api/v1/nodes/{self.node}/status", {"status": st})
                    self.node_conditions = (res.get("status") or {}).get("conditions")
                    last_status = time.monotonic()
                try:
                    self.api.patch_merge(lease_path, {"spec": {"renewTime": now_micro(), "holderIdentity": self.node}})
                except ApiError as exc:
                    if exc.status != 404:
                        raise
                    node = self.api.get(f"/api/v1/nodes/{self.node}")
                    self.api.request("POST", "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases", {
                        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                        "metadata": {"name": self.node, "ownerReferences": [{
                            "apiVersion": "v1", "kind": "Node", "name": self.node, "uid": node["metadata"]["uid"]}]},
                        "spec": {"holderIdentity": self.node, "leaseDurationSeconds": 40, "renewTime": now_micro()}})
            except (ApiError, OSError) as exc:
                log(self.node, f"node status / lease update failed: {exc}")
            time.sleep(10)

    # -------------------------------------------------------------- pods
    def handle(self, pod: dict[str, Any], deleted: bool = False) -> None:
        uid = pod["metadata"]["uid"]
        with self.lock:
            w = self.workers.get(uid)
            if w is None:
                if deleted or (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed") \
                        and not pod["metadata"].get("deletionTimestamp"):
                    return
                w = PodWorker(self, pod)
                self.workers[uid] = w
                w.start()
                return
        w.update(None if deleted else pod)

    def watch_pods(self) -> None:
        path = "/api/v1/pods"
        sel = f"spec.nodeName={self.node}"
        while True:
            try:
                lst = self.api.get(path, fieldSelector=sel)
                seen = set()
                for pod in lst.get("items") or []:
                    seen.add(pod["metadata"]["uid"])
                    self.handle(pod)
                with self.lock:
                    stale = [w for uid, w in self.workers.items() if uid not in seen]
                for w in stale:
                    w.update(None)
                rv = lst["metadata"]["resourceVersion"]
                while True:
                    for ev in self.api.watch(path, rv, fieldSelector=sel):
                        obj = ev.get("object") or {}
                        if ev.get("type") == "ERROR":
                            raise ApiError(int(obj.get("code", 500)), json.dumps(obj), "WATCH", path)
                        rv = obj.get("metadata", {}).get("resourceVersion", rv)
                        if ev.get("type") == "BOOKMARK":
                            continue
                        self.handle(obj, deleted=ev.get("type") == "DELETED")
            except (ApiError, OSError, http.client.HTTPException, ValueError) as exc:
                log(self.node, f"pod watch ended ({exc}); listing again")
                time.sleep(1)

    def run(self) -> None:
        threading.Thread(target=self.node_status_loop, daemon=True).start()
        threading.Thread(target=serve_logs, args=(self,), daemon=True).start()
        log(self.node, f"node agent up: {self.node_ip}, podCIDR {self.cfg['pod_cidr']}")
        self.watch_pods()


# =========================================================================== kubectl logs
def serve_logs(agent: NodeAgent) -> None:
    """The kubelet's /containerLogs/{ns}/{pod}/{container} endpoint (HTTPS) for `kubectl logs`.
    The API server is the only client; like a kubelet with anonymous auth, it does not check who asks."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802
            from urllib.parse import parse_qs, urlsplit
            u = urlsplit(self.path)
            parts = u.path.strip("/").split("/")
            q = parse_qs(u.query)
            if len(parts) != 4 or parts[0] != "containerLogs":
                self.send_error(404)
                return
            _, ns, pod, container = parts
            with agent.lock:
                ws = [w for w in agent.workers.values() if w.namespace == ns and w.name == pod]
            base = Path(agent.cfg["log_dir"]) / "pods"
            dirs = [w.log_dir for w in ws] or sorted(base.glob(f"{ns}_{pod}_*"))
            name = f"{container}.previous.log" if q.get("previous", ["false"])[0] == "true" else f"{container}.log"
            files = [d / name for d in dirs if (d / name).exists()]
            if not files:
                self.send_error(404, f'container "{container}" in pod "{pod}" has no log')
                return
            data = files[-1].read_bytes()
            if "tailLines" in q:
                n = int(q["tailLines"][0])
                data = b"".join(data.splitlines(keepends=True)[-n:]) if n > 0 else b""
            if "limitBytes" in q:
                data = data[:int(q["limitBytes"][0])]
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    srv = ThreadingHTTPServer((agent.node_ip, agent.cfg["kubelet_port"]), Handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(agent.cfg["serving_cert"], agent.cfg["serving_key"])
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    srv.serve_forever()


def main() -> int:
    cfg = json.load(open(sys.argv[1]))
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    NodeAgent(cfg).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
