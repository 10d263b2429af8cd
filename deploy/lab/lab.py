#!/usr/bin/env python3
"""The lab: a three-node Kubernetes cluster of real components on one Linux machine,
and the project's verification, trace-verify, run against it.

    sudo deploy/lab/run.sh [options]          (builds everything, then runs this file)
    sudo deploy/lab/lab.py run --help         (this file, once the binaries exist)
    sudo deploy/lab/lab.py cleanup            (remove what a killed run left behind)

Real: etcd, kube-apiserver, kube-controller-manager, kube-scheduler (namespace
lab-hub), one kube-proxy per node in the node's network namespace (nftables or
iptables mode), CoreDNS as a pod behind the kube-dns Service, the reference CNI
plugins (ptp, host-local, loopback), the project's manifests applied with
kubectl, the agents (OpenTelemetry Collector), trace-gen and trace-sink.
Per node, in its namespace: the real kubelet with its own containerd (2.x, built by
deploy/kube/build.sh), Debian's
runc and the reference CNI plugins; the pods run the images built by
deploy/images/build.sh --lab (deploy/lab/realnode.py). What differs from a
production node: docs/lab-vs-production.md.
The steps are trace-verify's policy x event matrix (target/release/trace-verify),
run with KUBECONFIG pointing at the lab and a service account bound to
deploy/verify-rbac; the lab saves every node's kube-proxy rules at each
verdict. trace-verify runs once per attribution mode (--attribution, default
both, in this order):
  attribute  the agents stamp their node on every span (deploy/ as it is):
             the matrix of --policy x --events (default: all of it);
  peer       the agents run a configuration that stamps nothing, as in
             production, and trace-sink finds each span's agent node from the
             connection's peer Pod through the API (trace-verify
             --peer-attribution): --peer-policy x --peer-events (default
             local,cluster x all-up,agent-removed: local routes, remote routes
             and a node without an agent, each attributed by the peer). What
             the matrix measures does not depend on where the sink learns the
             agent node, so the peer run proves the attribution, not the matrix.

Addresses: nodes 198.18.0.11-13 on a bridge in lab-hub (198.18.0.1 = API
server), pods 198.18.128.0/17 (one /24 per node), Services 198.19.0.0/16. No
namespace has a route out; nothing is changed in the host's network.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import fcntl
import http.client
import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import threading
import time
import urllib.parse
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE))
import realnode  # noqa: E402

NODES = ["node-1", "node-2", "node-3"]
HUB_NS = "lab-hub"
BRIDGE = "lab-br0"
HUB_IP = "198.18.0.1"
NODE_IP = {n: f"198.18.0.{11 + i}" for i, n in enumerate(NODES)}
POD_CIDR = {n: f"198.18.{129 + i}.0/24" for i, n in enumerate(NODES)}
CLUSTER_CIDR = "198.18.128.0/17"
SERVICE_CIDR = "198.19.0.0/16"
KUBERNETES_SVC_IP = "198.19.0.1"
DNS_IP = "198.19.0.10"
API_PORT = 6443
RUN_DIR = Path("/run/trace-gen-sink-lab")
LOCK_FILE = Path("/run/trace-gen-sink-lab.lock")

T0 = time.monotonic()
_log_file: Any = None
libc = ctypes.CDLL(None, use_errno=True)


def log(msg: str) -> None:
    line = f"[{time.monotonic() - T0:6.1f}s] {msg}"
    print(line, flush=True)
    if _log_file:
        _log_file.write(line + "\n")
        _log_file.flush()


class LabError(Exception):
    pass


class Interrupted(BaseException):
    """A signal (SIGINT, SIGTERM, SIGHUP, SIGALRM): the run stops and cleans up. Not an
    Exception, so that no `except Exception` (wait_until's retry of a failing check)
    swallows it: a SIGTERM during the set-up was once caught there, the handler had
    already ignored further signals, and the run went on to its end."""


def run(cmd: list[str], check: bool = True, timeout: float = 60, input: str | None = None) -> subprocess.CompletedProcess:
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, input=input)
    if check and res.returncode != 0:
        raise LabError(f"failed ({res.returncode}): {' '.join(cmd)}\n{res.stderr.strip()}")
    return res


# --------------------------------------------------------------------------- API
class ApiError(Exception):
    def __init__(self, status: int, body: str, method: str, path: str):
        self.status = status
        msg = body
        with contextlib.suppress(ValueError, AttributeError):
            msg = json.loads(body).get("message", body)
        super().__init__(f"{method} {path}: HTTP {status}: {msg}")


class Api:
    """The few reads lab.py makes of the API server (bearer token, TLS verified
    against the lab's CA); everything the lab changes goes through kubectl."""

    def __init__(self, server: str, token: str, ca_file: str, timeout: float = 10.0):
        u = urllib.parse.urlsplit(server)
        self.host, self.port = u.hostname or "", u.port or 443
        self.token, self.timeout = token, timeout
        self.ctx = ssl.create_default_context(cafile=ca_file)

    def raw(self, path: str) -> tuple[int, str]:
        conn = http.client.HTTPSConnection(self.host, self.port, context=self.ctx, timeout=self.timeout)
        try:
            conn.request("GET", path, headers={"Authorization": f"Bearer {self.token}", "Accept": "application/json"})
            resp = conn.getresponse()
            return resp.status, resp.read().decode(errors="replace")
        finally:
            conn.close()

    def get(self, path: str) -> Any:
        status, body = self.raw(path)
        if status >= 300:
            raise ApiError(status, body, "GET", path)
        return json.loads(body) if body else None


# --------------------------------------------------------------------------- lock
def take_lock(out: Path) -> Any:
    """One lab at a time: a second run refuses at once and names the running one."""
    f = open(LOCK_FILE, "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        owner = f.read().strip() or "unknown"
        raise LabError(f"another lab run is active ({owner}); wait for it to end or stop it "
                       f"(its namespaces lab-hub, node-1..3 belong to it)") from None
    f.seek(0)
    f.truncate()
    f.write(f"pid {os.getpid()}, started {datetime.now(timezone.utc).isoformat(timespec='seconds')}, "
            f"by {os.environ.get('SUDO_USER') or 'root'}, output {out}\n")
    f.flush()
    return f


# --------------------------------------------------------------------------- namespaces
def lab_namespaces() -> list[str]:
    out = run(["ip", "netns", "list"], check=False).stdout
    names = [line.split()[0] for line in out.splitlines() if line.strip()]
    return [n for n in names if n in (HUB_NS, *NODES)]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except (ProcessLookupError, OSError):
        return False


def remove_leftovers(quiet: bool = False, logs: Path | None = None) -> None:
    """Kill every process in the lab's namespaces and cgroups (kubelets, containerd,
    its shims, the containers), unmount what is mounted under the lab's
    directories, delete the namespaces (veths, bridge, nftables/iptables rules go
    with them), the cgroups and the directories. Idempotent."""
    present = lab_namespaces()
    pids: set[int] = set()
    for ns in present:
        pids |= {int(p) for p in run(["ip", "netns", "pids", ns], check=False).stdout.split() if p.isdigit()}
    pids.discard(os.getpid())
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for p in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, sig)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(_alive(p) for p in pids):
            time.sleep(0.1)
        pids = {p for p in pids if _alive(p)}
        if not pids:
            break
    # the real nodes' containers (in the lab's cgroups), mounts, cgroups, disk state
    left = realnode.cleanup_host(logs)
    for ns in present:
        run(["ip", "netns", "del", ns], check=False)
    if RUN_DIR.exists() and not realnode.lab_mounts():
        shutil.rmtree(RUN_DIR, ignore_errors=True)
    if left and not quiet:
        log(f"could not remove: {', '.join(left)}")
    if present and not quiet:
        log(f"removed namespaces: {', '.join(present)}")


def setup_network() -> None:
    ip = ["ip"]
    for ns in (HUB_NS, *NODES):
        run(ip + ["netns", "add", ns])
        run(ip + ["-n", ns, "link", "set", "lo", "up"])
    hub = ip + ["-n", HUB_NS]
    run(hub + ["link", "add", BRIDGE, "type", "bridge"])
    run(hub + ["addr", "add", f"{HUB_IP}/24", "dev", BRIDGE])
    run(hub + ["link", "set", BRIDGE, "up"])
    for i, node in enumerate(NODES):
        veth = f"veth-{node}"
        run(["ip", "netns", "exec", HUB_NS, "ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", node])
        run(hub + ["link", "set", veth, "master", BRIDGE])
        run(hub + ["link", "set", veth, "up"])
        n = ip + ["-n", node]
        run(n + ["addr", "add", f"{NODE_IP[node]}/24", "dev", "eth0"])
        run(n + ["link", "set", "eth0", "up"])
        # Services: routed out of eth0 so the node's own connects reach kube-proxy's rules
        run(n + ["route", "add", SERVICE_CIDR, "dev", "eth0"])
        for other in NODES:
            if other != node:
                run(n + ["route", "add", POD_CIDR[other], "via", NODE_IP[other]])
        run(hub + ["route", "add", POD_CIDR[node], "via", NODE_IP[node]])
        run(["ip", "netns", "exec", node, "sysctl", "-qw", "net.ipv4.ip_forward=1"])
    for ns in (HUB_NS, *NODES):
        if run(ip + ["-n", ns, "route", "show", "default"]).stdout.strip():
            raise LabError(f"namespace {ns} has a default route")


# --------------------------------------------------------------------------- processes
class Proc:
    def __init__(self, name: str, ns: str, cmd: list[str], logs: Path, env: dict[str, str] | None = None):
        self.name = name
        self.log_path = logs / f"{name}.log"
        out = open(self.log_path, "ab")
        base = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "HOME": "/root", "LANG": "C.UTF-8"}
        # nsenter, not `ip netns exec`: only the network namespace changes; `ip netns
        # exec` remounts /sys, and the kubelet needs the machine's /sys/fs/cgroup
        self.popen = subprocess.Popen(["nsenter", f"--net=/run/netns/{ns}", "--", *cmd], env={**base, **(env or {})},
                                      stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                      process_group=0, preexec_fn=lambda: libc.prctl(1, signal.SIGTERM, 0, 0, 0))
        out.close()

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, timeout: float = 10) -> None:
        if not self.alive():
            return
        with contextlib.suppress(ProcessLookupError):
            self.popen.terminate()
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(5)


def wait_until(what: str, pred: Callable[[], bool], timeout: float, interval: float = 0.5) -> None:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if pred():
                return
        except Exception as exc:  # noqa: BLE001 - retried until the deadline, then reported
            last = exc
        time.sleep(interval)
    raise LabError(f"timed out after {timeout:.0f}s waiting for {what}" + (f" (last error: {last})" if last else ""))


# --------------------------------------------------------------------------- certificates
def make_pki(d: Path) -> None:
    d.mkdir(parents=True, exist_ok=True)
    o = ["openssl"]
    run(o + ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(d / "ca.key"), "-out", str(d / "ca.crt"),
             "-days", "2", "-subj", "/CN=trace-gen-sink-lab-ca"])

    def leaf(name: str, cn: str, sans: str) -> None:
        ext = d / f"{name}.ext"
        ext.write_text(f"subjectAltName={sans}\nextendedKeyUsage=serverAuth,clientAuth\n")
        run(o + ["req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(d / f"{name}.key"), "-out", str(d / f"{name}.csr"),
                 "-subj", f"/CN={cn}"])
        run(o + ["x509", "-req", "-in", str(d / f"{name}.csr"), "-CA", str(d / "ca.crt"), "-CAkey", str(d / "ca.key"),
                 "-CAcreateserial", "-out", str(d / f"{name}.crt"), "-days", "2", "-extfile", str(ext)])

    leaf("apiserver", "kube-apiserver",
         f"IP:{HUB_IP},IP:{KUBERNETES_SVC_IP},IP:127.0.0.1,DNS:kubernetes,DNS:kubernetes.default,"
         "DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local")
    leaf("kubelet", "lab-kubelet", ",".join(f"IP:{ip}" for ip in NODE_IP.values()))
    run(o + ["genrsa", "-out", str(d / "sa.key"), "2048"])
    run(o + ["rsa", "-in", str(d / "sa.key"), "-pubout", "-out", str(d / "sa.pub")])


def kubeconfig(path: Path, token: str, ca: Path, user: str) -> None:
    path.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "lab",
        "clusters": [{"name": "lab", "cluster": {"server": f"https://{HUB_IP}:{API_PORT}", "certificate-authority": str(ca)}}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": "lab", "context": {"cluster": "lab", "user": user}}],
    }, indent=1))


# --------------------------------------------------------------------------- the lab
class Lab:
    def __init__(self, a: argparse.Namespace):
        self.a = a
        self.out: Path = a.out
        self.logs = self.out / "logs"
        self.pki = RUN_DIR / "pki"
        self.procs: dict[str, Proc] = {}
        self.tokens: dict[str, str] = {}
        self.api: Api | None = None
        self.kubectl = str(a.kube_bin / "kubectl")
        self.verify: subprocess.Popen | None = None
        self.real: realnode.RealNodes | None = None
        self.proofs: list[dict[str, Any]] = []
        self.pod_logs_stop = threading.Event()

    def start(self, name: str, ns: str, cmd: list[str], env: dict[str, str] | None = None) -> Proc:
        p = Proc(name, ns, cmd, self.logs, env)
        self.procs[name] = p
        return p

    def k(self, *args: str, kubeconfig_path: Path | None = None, check: bool = True, timeout: float = 120,
          input: str | None = None) -> subprocess.CompletedProcess:
        cfg = kubeconfig_path or RUN_DIR / "admin.kubeconfig"
        return run(["ip", "netns", "exec", HUB_NS, self.kubectl, "--kubeconfig", str(cfg), *args],
                   check=check, timeout=timeout, input=input)

    def control_plane(self) -> None:
        a, bin_ = self.a, self.a.kube_bin
        make_pki(self.pki)
        tok = {u: os.urandom(16).hex() for u in ["admin", "kube-proxy", *NODES]}
        self.tokens = tok
        lines = [f'{tok["admin"]},lab-admin,lab-admin,"system:masters"', f"{tok['kube-proxy']},system:kube-proxy,kube-proxy"]
        lines += [f'{tok[n]},system:node:{n},{n},"system:nodes"' for n in NODES]
        (RUN_DIR / "tokens.csv").write_text("\n".join(lines) + "\n")
        os.chmod(RUN_DIR / "tokens.csv", 0o600)
        ca = self.pki / "ca.crt"
        kubeconfig(RUN_DIR / "admin.kubeconfig", tok["admin"], ca, "lab-admin")
        kubeconfig(RUN_DIR / "kube-proxy.kubeconfig", tok["kube-proxy"], ca, "system:kube-proxy")

        log("etcd (lab-hub, 127.0.0.1:2379)")
        self.start("etcd", HUB_NS, [str(bin_ / "etcd"), "--name", "lab", "--data-dir", str(RUN_DIR / "etcd"),
                                    "--listen-client-urls", "http://127.0.0.1:2379",
                                    "--advertise-client-urls", "http://127.0.0.1:2379",
                                    "--listen-peer-urls", "http://127.0.0.1:2380",
                                    "--initial-advertise-peer-urls", "http://127.0.0.1:2380",
                                    "--initial-cluster", "lab=http://127.0.0.1:2380", "--log-level", "warn"])
        log(f"kube-apiserver (lab-hub, https://{HUB_IP}:{API_PORT})")
        self.start("kube-apiserver", HUB_NS, [
            str(bin_ / "kube-apiserver"), "--etcd-servers=http://127.0.0.1:2379",
            f"--bind-address={HUB_IP}", f"--advertise-address={HUB_IP}", f"--secure-port={API_PORT}",
            f"--tls-cert-file={self.pki / 'apiserver.crt'}", f"--tls-private-key-file={self.pki / 'apiserver.key'}",
            f"--token-auth-file={RUN_DIR / 'tokens.csv'}", "--authorization-mode=Node,RBAC",
            "--enable-admission-plugins=NodeRestriction",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={self.pki / 'sa.pub'}",
            f"--service-account-signing-key-file={self.pki / 'sa.key'}",
            f"--service-cluster-ip-range={SERVICE_CIDR}", "--kubelet-preferred-address-types=InternalIP",
            f"--kubelet-certificate-authority={ca}", f"--kubelet-client-certificate={self.pki / 'apiserver.crt'}",
            f"--kubelet-client-key={self.pki / 'apiserver.key'}", "--profiling=false", "--v=1"])
        self.api = Api(f"https://{HUB_IP}:{API_PORT}", tok["admin"], str(ca))
        api = self.api

        def readyz() -> bool:
            with self.in_hub():
                return api.raw("/readyz")[0] == 200
        wait_until("the API server's /readyz", readyz, 60)
        common = [f"--kubeconfig={RUN_DIR / 'admin.kubeconfig'}", "--leader-elect=false", "--secure-port=0", "--v=1"]
        log("kube-controller-manager, kube-scheduler (lab-hub)")
        self.start("kube-controller-manager", HUB_NS, [
            str(bin_ / "kube-controller-manager"), *common, "--controllers=*",
            f"--service-account-private-key-file={self.pki / 'sa.key'}", f"--root-ca-file={ca}",
            f"--cluster-cidr={CLUSTER_CIDR}", f"--service-cluster-ip-range={SERVICE_CIDR}"])
        self.start("kube-scheduler", HUB_NS, [str(bin_ / "kube-scheduler"), *common])
        self.version = json.loads(self.k("version", "-o", "json").stdout)["serverVersion"]["gitVersion"]
        log(f"Kubernetes {self.version}")

    @contextlib.contextmanager
    def in_hub(self) -> Any:
        with open("/proc/thread-self/ns/net", "rb") as own, open(f"/run/netns/{HUB_NS}", "rb") as target:
            if libc.setns(target.fileno(), 0x40000000) != 0:
                raise LabError("setns(lab-hub) failed")
            try:
                yield
            finally:
                libc.setns(own.fileno(), 0x40000000)

    def nodes(self) -> None:
        self.real_nodes()
        self.kube_proxies()

    def real_nodes(self) -> None:
        """Per node: containerd + runc + the reference CNI plugins and the real
        kubelet (deploy/lab/realnode.py), the images imported into containerd."""
        images = read_images_env(self.a.images_env)
        rn = realnode.RealNodes(NODES, NODE_IP, POD_CIDR, self.a.kube_bin, self.a.cni_bin, self.pki, DNS_IP,
                                self.logs, log, self.start)
        self.real = rn
        log("containerd per node (containerd 2.x of deploy/kube/build.sh, Debian's runc; CNI ptp + host-local + loopback)")
        rn.containerd(images["PAUSE_IMAGE"])
        wanted = {
            images["TRACE_GEN_IMAGE"]: ["trace-gen:" + images["TRACE_GEN_IMAGE"].rsplit(":", 1)[1]],
            images["TRACE_SINK_IMAGE"]: ["trace-sink:" + images["TRACE_SINK_IMAGE"].rsplit(":", 1)[1]],
            images["AGENT_IMAGE"]: [manifest_image(REPO / "deploy" / "agent" / "daemonset.yaml")],
            images["COREDNS_IMAGE"]: [manifest_image(HERE / "coredns" / "coredns.yaml")],
            images["PAUSE_IMAGE"]: [images["PAUSE_IMAGE"]],
        }
        t = time.monotonic()
        rn.import_images(wanted, self.out.parent / "images" / "oci")
        log(f"images imported into every node's containerd ({time.monotonic() - t:.0f}s): "
            + ", ".join(f"{names[0]} ({img})" for img, names in wanted.items()))
        log("kubelet per node, one after the other (registers its Node as system:node:<name>)")

        def ready(n: str) -> bool:
            node = self.get_or_none(f"/api/v1/nodes/{n}")
            conds = ((node or {}).get("status") or {}).get("conditions") or []
            return any(c["type"] == "Ready" and c["status"] == "True" for c in conds)

        def started(n: str) -> None:
            deadline = time.monotonic() + 60
            while not ready(n):
                if not self.procs[f"{n}-kubelet"].alive():
                    raise LabError(f"the kubelet of {n} exited (logs/{n}-kubelet.log)")
                if time.monotonic() > deadline:
                    raise LabError(f"{n} not Ready 60s after its kubelet started (logs/{n}-kubelet.log)")
                time.sleep(0.3)
            log(f"{n} Ready")
        rn.kubelets(self.tokens, f"https://{HUB_IP}:{API_PORT}", started)

    def get_or_none(self, path: str) -> Any:
        try:
            return self.get(path)
        except ApiError:
            return None

    def keep_pod_logs(self) -> None:
        """The containers' logs, copied into LOGS/NODE/pods every 5s while the
        lab runs: a kubelet deletes a pod's logs with the pod, and trace-verify
        deletes its pods at the end of each run."""
        def loop() -> None:
            while not self.pod_logs_stop.wait(5):
                with contextlib.suppress(OSError):
                    realnode.save_pod_logs(self.logs)
        threading.Thread(target=loop, name="pod-logs", daemon=True).start()

    def remove_pods(self) -> None:
        """Real nodes: the pods removed by their kubelets (containers stopped,
        sandboxes and their network torn down through CNI), before the kubelets
        stop. The controllers are stopped first so that nothing comes back."""
        self.pod_logs_stop.set()
        with contextlib.suppress(OSError):
            realnode.save_pod_logs(self.logs)
        for name in ("kube-controller-manager", "kube-scheduler"):
            if name in self.procs:
                self.procs[name].stop(5)
        if not all(self.procs.get(f"{n}-kubelet") and self.procs[f"{n}-kubelet"].alive() for n in NODES):
            return
        log("removing every pod through the kubelets (at most 60s)")
        self.k("delete", "pods", "--all", "--all-namespaces", "--grace-period=2", "--wait=true", "--timeout=60s",
               check=False, timeout=70)

    def kubelet_proofs(self) -> list[dict[str, Any]]:
        """Two pods whose fate only a real kubelet decides.
        root-refused: an image that runs as root (CoreDNS's, no USER) under
        `runAsNonRoot: true` must be refused (CreateContainerConfigError) and the
        pod reported not Ready. liveness-restart: a container whose liveness
        probe always fails must be killed and restarted by the kubelet, with its
        own back-off (CrashLoopBackOff, a delay of at least 5 s before a start)."""
        ns = "lab-proofs"
        coredns_image = manifest_image(HERE / "coredns" / "coredns.yaml")
        pause_image = read_images_env(self.a.images_env)["PAUSE_IMAGE"]
        pods = [
            {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "root-refused", "namespace": ns},
             "spec": {"securityContext": {"runAsNonRoot": True}, "terminationGracePeriodSeconds": 1,
                      "containers": [{"name": "c", "image": coredns_image, "imagePullPolicy": "Never",
                                      "args": ["-conf", "/dev/null"]}]}},
            {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "liveness-restart", "namespace": ns},
             "spec": {"terminationGracePeriodSeconds": 1,
                      "containers": [{"name": "c", "image": pause_image, "imagePullPolicy": "Never",
                                      "livenessProbe": {"tcpSocket": {"port": 9}, "periodSeconds": 1,
                                                        "failureThreshold": 1, "timeoutSeconds": 1}}]}},
        ]
        log("kubelet proofs: a root image under runAsNonRoot (refused?), a failing liveness probe (restarted with "
            "back-off?)")
        self.k("create", "namespace", ns)
        # pods are admitted only once the namespace's default ServiceAccount exists
        wait_until(f"the ServiceAccount {ns}/default", lambda: bool(self.get_or_none(
            f"/api/v1/namespaces/{ns}/serviceaccounts/default")), 30)
        self.k("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": pods}))
        results: list[dict[str, Any]] = []

        def status(name: str) -> dict[str, Any]:
            return self.get(f"/api/v1/namespaces/{ns}/pods/{name}").get("status") or {}

        def container(st: dict[str, Any]) -> dict[str, Any]:
            return (st.get("containerStatuses") or [{}])[0]

        def not_ready(st: dict[str, Any]) -> bool:
            return any(c["type"] == "Ready" and c["status"] == "False" for c in st.get("conditions") or [])

        seen: dict[str, Any] = {}

        def refused() -> bool:
            st = status("root-refused")
            w = (container(st).get("state") or {}).get("waiting") or {}
            seen["root-refused"] = w
            return w.get("reason") == "CreateContainerConfigError" and not_ready(st)
        try:
            wait_until("the root image to be refused", refused, 60)
            ok, why = True, seen["root-refused"].get("message", "")
        except LabError as exc:
            ok, why = False, f"{exc}; last waiting state {seen.get('root-refused')}"
        results.append({"name": "root-refused", "pass": ok,
                        "expected": "CreateContainerConfigError, pod not Ready", "detail": why})

        starts: dict[int, tuple[str, str]] = {}  # restartCount -> (previous run finished, this run started)
        backoff_seen = []

        def restarted() -> bool:
            c = container(status("liveness-restart"))
            state, last = c.get("state") or {}, c.get("lastState") or {}
            if ((state.get("waiting") or {}).get("reason")) == "CrashLoopBackOff":
                backoff_seen.append(True)
            n = c.get("restartCount") or 0
            if n and "running" in state and "terminated" in last:
                starts[n] = (last["terminated"].get("finishedAt", ""), state["running"].get("startedAt", ""))
                seen["liveness"] = last["terminated"]
            return n >= 3 and 3 in starts
        try:
            wait_until("three restarts by the liveness probe", restarted, 120, interval=0.5)
            gaps = {n: (datetime.fromisoformat(b.replace("Z", "+00:00")) - datetime.fromisoformat(
                a.replace("Z", "+00:00"))).total_seconds() for n, (a, b) in starts.items() if a and b}
            killed = seen["liveness"].get("exitCode") in (137, 143)
            # the kubelet restarts a liveness-killed container at once a few times, then
            # its back-off holds it (CrashLoopBackOff) before the next start
            ok = bool(backoff_seen) and killed and max(gaps.values(), default=0) >= 5
            why = (f"restart delays {', '.join(f'{g:.0f}s' for g in (gaps[n] for n in sorted(gaps)))}; "
                   f"CrashLoopBackOff seen: {bool(backoff_seen)}; last exit code {seen['liveness'].get('exitCode')}")
        except LabError as exc:
            ok, why = False, f"{exc}; restarts seen {starts}"
        results.append({"name": "liveness-restart", "pass": ok,
                        "expected": "killed (137/143), restarted 3 times, CrashLoopBackOff and a back-off delay >= 5s",
                        "detail": why})
        self.k("delete", "namespace", ns, "--wait=false", check=False)
        for r in results:
            log(f"kubelet proof {r['name']}: {'PASS' if r['pass'] else 'FAIL'} ({r['detail']})")
        return results

    def kube_proxies(self) -> None:
        mode = self.a.kube_proxy_mode
        for n in NODES:
            conf = RUN_DIR / f"{n}-kube-proxy.yaml"
            conf.write_text(json.dumps({
                "apiVersion": "kubeproxy.config.k8s.io/v1alpha1", "kind": "KubeProxyConfiguration",
                "clientConnection": {"kubeconfig": str(RUN_DIR / "kube-proxy.kubeconfig")},
                "hostnameOverride": n, "bindAddress": NODE_IP[n], "mode": mode, "clusterCIDR": CLUSTER_CIDR,
                "healthzBindAddress": f"{NODE_IP[n]}:10256", "metricsBindAddress": f"{NODE_IP[n]}:10249",
                "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"},
                "nodePortAddresses": [f"{NODE_IP[n]}/32"],
            }, indent=1))
            self.start(f"{n}-kube-proxy", n, [str(self.a.kube_bin / "kube-proxy"), f"--config={conf}", "--v=1"])
        log(f"kube-proxy on every node ({mode} mode); waiting for its rules")
        wait_until("kube-proxy's rules on every node", lambda: all("kubernetes" in self.rules(n) for n in NODES), 60)

    def get(self, path: str) -> Any:
        assert self.api
        with self.in_hub():
            return self.api.get(path)

    def rules(self, node: str) -> str:
        if self.a.kube_proxy_mode == "nftables":
            cmd = ["ip", "netns", "exec", node, "nft", "list", "table", "ip", "kube-proxy"]
        else:
            cmd = ["ip", "netns", "exec", node, "iptables-save"]
        return run(cmd, check=False).stdout

    def dns(self) -> None:
        log("CoreDNS: applying deploy/lab/coredns (Deployment + Service kube-dns at 198.19.0.10)")
        self.k("apply", "-k", str(HERE / "coredns"))
        self.k("-n", "kube-system", "rollout", "status", "deployment/coredns", "--timeout=120s", timeout=130)

    def verify_account(self) -> Path:
        """The service account trace-verify runs as, bound to deploy/verify-rbac (least privilege)."""
        self.k("apply", "-k", str(REPO / "deploy" / "verify-rbac"))
        token = self.k("-n", "trace-gen-sink-verify", "create", "token", "trace-gen-sink-verify",
                       "--duration=2h").stdout.strip()
        path = RUN_DIR / "verify.kubeconfig"
        kubeconfig(path, token, self.pki / "ca.crt", "trace-gen-sink-verify")
        return path

    def components_running(self) -> dict[str, Any]:
        """Which real components run right now (their processes), for the report."""
        res: dict[str, Any] = {}
        per_node = ["kube-proxy", "kubelet", "containerd"]
        for name in ["etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler",
                     *[f"{n}-{c}" for n in NODES for c in per_node]]:
            p = self.procs.get(name)
            res[name] = bool(p and p.alive())
        ps = run(["ps", "-eo", "args"], check=False).stdout.splitlines()
        res["coredns (pod)"] = any(line.startswith("/coredns -conf") for line in ps)
        if self.real:
            res["containerd-shim-runc-v2 (pod sandboxes)"] = any("containerd-shim-runc-v2" in line for line in ps)
            # the pods' processes, under runc, with the uid of their image and securityContext
            uids = run(["ps", "-eo", "uid=,args="], check=False).stdout.splitlines()
            for binary, uid in (("/usr/local/bin/trace-sink", "65532"), ("/usr/local/bin/trace-gen", "65532"),
                                ("/otelcol-trace-lab", "10001")):
                res[f"{binary} (pod, uid {uid})"] = any(
                    line.split(None, 1)[0] == uid and line.split(None, 1)[1].startswith(binary)
                    for line in uids if len(line.split(None, 1)) == 2)
        return res


# --------------------------------------------------------------------------- trace-verify, the runner
TRACE_VERIFY = REPO / "target" / "release" / "trace-verify"


def trace_verify_command(a: argparse.Namespace, mode: str) -> list[str]:
    """trace-verify against the lab, with the lab's short windows: the matrix of
    --policy x --events (attribute), or --peer-policy x --peer-events with
    --peer-attribution (peer); its results JSON and Markdown report under --out."""
    policy, events = (a.peer_policy, a.peer_events) if mode == "peer" else (a.policy, a.events)
    cmd = ["ip", "netns", "exec", HUB_NS, str(TRACE_VERIFY), "--deploy-dir", str(REPO / "deploy"),
           "--kubectl", str(a.kube_bin / "kubectl"), "--policy", policy, "--events", events,
           "--window", a.window, "--settle", f"{a.settle}s" if a.settle.isdigit() else a.settle,
           "--timeout", "240s", "--results-json", str(a.out / f"trace-verify-{mode}.json"),
           "--markdown", str(a.out / f"trace-verify-{mode}.md")]
    if mode == "peer":
        cmd.append("--peer-attribution")
    return cmd


# trace-verify's policies and events in its order (its --help; the names of its results JSON)
POLICIES = ("local", "prefer-same-node", "cluster")
EVENTS = ("all-up", "agent-removed", "crash-loop", "recovered", "terminating", "rolling-max-unavailable",
          "rolling-max-surge")


def cells(a: argparse.Namespace, mode: str) -> list[str]:
    """The steps (`policy/event`) a run was asked for: its --policy x --events."""
    policy, events = (a.peer_policy, a.peer_events) if mode == "peer" else (a.policy, a.events)

    def names(text: str, every: tuple[str, ...]) -> list[str]:
        return list(every) if text.strip() == "all" else [x.strip() for x in text.split(",") if x.strip()]
    return [f"{p}/{e}" for p in names(policy, POLICIES) for e in names(events, EVENTS)]


def verdict_of(line: str) -> str | None:
    """The step (`policy/event`) of one of trace-verify's verdict lines, else None."""
    head, sep, rest = line.partition(": ")
    if not sep or not (rest.startswith("as promised in ") or rest.startswith("PROMISE BROKEN in ")):
        return None
    tail = head.rsplit("] ", 1)[-1].strip()
    policy, sep, event = tail.partition(" / ")
    return f"{policy}/{event}" if sep and policy and event and " " not in policy + event else None


def verdict_line(line: str, seen: bool) -> bool:
    """Whether a line of trace-verify's output is a verdict at which every real
    component must be running (the lab records them there): the verdicts of
    steps with every agent up (all-up, recovered), or the first verdict if no
    such step was run (its summary comes after its clean-up: no pods there)."""
    key = verdict_of(line)
    if key is None:
        return False
    return key.split("/", 1)[1] in ("all-up", "recovered") or not seen


def trace_verify_scenarios(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """trace-verify's steps (schema trace-verify/results/v1) as the lab's scenarios."""
    out = []
    for i, st in enumerate(doc.get("steps") or [], 1):
        judged = st.get("judgements") or []
        out.append({
            "step": i, "key": f"{st.get('policy')}/{st.get('event')}", "title": st.get("title", ""),
            "pass": bool(st.get("pass")), "verdict": "as promised" if st.get("pass") else "NOT as promised",
            "attribution": st.get("attribution"),
            "explanation": "; ".join(f"{'PASS' if j.get('pass') else 'FAIL'} {j.get('requires')}: {j.get('detail')}"
                                     for j in judged),
            "remote_spans": st.get("remote_spans"),
            "lost_spans": sum(n.get("lost") or 0 for n in st.get("nodes") or []),
        })
    return out


# --------------------------------------------------------------------------- main
ATTRIBUTION_MODES = ("attribute", "peer")


def attribution_modes(text: str) -> list[str]:
    modes = [m.strip() for m in text.split(",") if m.strip()]
    bad = [m for m in modes if m not in ATTRIBUTION_MODES]
    if not modes or bad or len(set(modes)) != len(modes):
        raise argparse.ArgumentTypeError(f"expected attribute, peer or attribute,peer (got {text!r})")
    return modes


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="lab.py", description=__doc__.split("\n\n")[0])
    p.add_argument("command", nargs="?", default="run", choices=["run", "cleanup"])
    p.add_argument("--out", type=Path, default=REPO / "target" / "lab")
    p.add_argument("--kube-bin", type=Path, default=REPO / "deploy" / "kube" / "build" / "bin")
    p.add_argument("--cni-bin", default="/usr/lib/cni")
    p.add_argument("--no-proofs", action="store_true",
                   help="skip the kubelet proofs (a root image refused, a liveness restart)")
    p.add_argument("--images-env", type=Path, default=REPO / "target" / "images" / "images.env",
                   help="the images deploy/images/build.sh --lab built (its images.env)")
    p.add_argument("--kube-proxy-mode", choices=["nftables", "iptables"], default="nftables")
    p.add_argument("--settle", default="3", help="trace-verify --settle, seconds (default 3)")
    p.add_argument("--window", default="10s", help="trace-verify --window (default 10s)")
    p.add_argument("--attribution", default="attribute,peer", type=attribution_modes,
                   help="trace-verify runs, in order: attribute (the agents stamp their node), peer (the agents "
                        "stamp nothing, the sink resolves the peer Pod: --peer-attribution); default attribute,peer")
    p.add_argument("--policy", default="all", help="the attribute run's --policy (default all)")
    p.add_argument("--events", default="all", help="the attribute run's --events (default all)")
    p.add_argument("--peer-policy", default="local,cluster", help="the peer run's --policy (default local,cluster)")
    p.add_argument("--peer-events", default="all-up,agent-removed",
                   help="the peer run's --events (default all-up,agent-removed)")
    p.add_argument("--time-limit", type=int, default=1500, help="abort the whole run after this many seconds")
    a = p.parse_intermixed_args(argv)
    a.out = a.out.resolve()
    return a


def read_images_env(path: Path) -> dict[str, str]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise LabError(f"{path}: {exc.strerror} (deploy/images/build.sh --lab writes it)") from None
    env = dict(line.split("=", 1) for line in text.splitlines() if "=" in line and not line.startswith("#"))
    missing = [k for k in ("TRACE_GEN_IMAGE", "TRACE_SINK_IMAGE", "AGENT_IMAGE", "COREDNS_IMAGE", "PAUSE_IMAGE")
               if not env.get(k)]
    if missing:
        raise LabError(f"{path} names no {', '.join(missing)} (deploy/images/build.sh --lab builds them)")
    return env


def manifest_image(path: Path) -> str:
    """The image a manifest's (first) container names."""
    for line in path.read_text().splitlines():
        if line.strip().startswith("image:"):
            return line.split(":", 1)[1].strip()
    raise LabError(f"{path}: no image")


def node_runtime(a: argparse.Namespace) -> dict[str, str] | None:
    """The versions of the node software."""
    if not hasattr(a, "kube_bin"):
        return None
    out: dict[str, str] = {}
    for name, cmd in (("kubelet", [str(a.kube_bin / "kubelet"), "--version"]), ("containerd", [str(a.kube_bin / "containerd"), "--version"]),
                      ("runc", ["runc", "--version"])):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out[name] = run(cmd, check=False, timeout=10).stdout.strip().splitlines()[0]
    return out


def rules_file(mode: str, key: str, node: str) -> str:
    """The file name of a node's kube-proxy rules at a step's verdict."""
    return f"{mode}.{key.replace('/', '.')}.{node}.txt"


def dump_rules(a: argparse.Namespace, mode: str, key: str) -> None:
    """Saves every node's kube-proxy rules at a step's verdict (logs/rules/)."""
    d = a.out / "logs" / "rules"
    d.mkdir(parents=True, exist_ok=True)
    for n in NODES:
        cmd = (["nft", "list", "table", "ip", "kube-proxy"] if a.kube_proxy_mode == "nftables" else ["iptables-save"])
        text = run(["ip", "netns", "exec", n, *cmd], check=False).stdout
        (d / rules_file(mode, key, n)).write_text(text)


def main(argv: list[str]) -> int:
    global _log_file
    a = parse_args(argv)
    if os.geteuid() != 0:
        print("lab.py: must run as root (network namespaces, nftables)", file=sys.stderr)
        return 2
    if a.command == "cleanup":
        remove_leftovers()
        return 0
    try:
        lock = take_lock(a.out) if not os.environ.get("TRACE_LAB_LOCKED") else None
    except LabError as exc:
        print(f"lab.py: {exc}", file=sys.stderr)
        return 2
    for cmd in ("runc", "buildah"):
        if not shutil.which(cmd):
            print(f"lab.py: {cmd} is missing; deploy/lab/run.sh installs it", file=sys.stderr)
            return 2
    for path in (a.kube_bin / t for t in ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler",
                                          "kube-proxy", "kubelet", "coredns", "kubectl", "containerd",
                                          "containerd-shim-runc-v2", "ctr")):
        if not os.access(path, os.X_OK):
            print(f"lab.py: {path} is missing; deploy/lab/run.sh builds it", file=sys.stderr)
            return 2

    if not os.access(TRACE_VERIFY, os.X_OK):
        print(f"lab.py: {TRACE_VERIFY} is missing; build it: cargo build --release -p trace-verify", file=sys.stderr)
        return 2

    def on_signal(signum: int, _frame: Any) -> None:
        for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGALRM):
            signal.signal(s, signal.SIG_IGN)
        raise Interrupted(signal.Signals(signum).name)
    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGALRM):
        signal.signal(s, on_signal)
    libc.prctl(1, signal.SIGTERM, 0, 0, 0)

    a.out.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(a.out / "logs", ignore_errors=True)
    (a.out / "logs").mkdir()
    _log_file = open(a.out / "logs" / "lab.log", "w")
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    signal.alarm(a.time_limit)
    lab = Lab(a)
    error: str | None = None
    runs: list[tuple[str, int | None]] = []
    components: dict[str, Any] = {}
    lab.version = ""
    try:
        remove_leftovers()
        RUN_DIR.mkdir(parents=True)
        log(f"network: namespaces {HUB_NS} (bridge {BRIDGE}, {HUB_IP}), {', '.join(NODES)} "
            f"({', '.join(NODE_IP.values())}); pods {CLUSTER_CIDR}; Services {SERVICE_CIDR}")
        setup_network()
        lab.control_plane()
        lab.nodes()
        lab.keep_pod_logs()
        lab.dns()
        kc = lab.verify_account()
        for mode in a.attribution:
            log("running trace-verify against the lab "
                f"(service account trace-gen-sink-verify), attribution {mode}")
            cmd = trace_verify_command(a, mode)
            env = {**os.environ, "KUBECONFIG": str(kc), "PATH": f"{a.kube_bin}:{os.environ.get('PATH', '')}"}
            (a.out / f"trace-verify-{mode}.json").unlink(missing_ok=True)
            runs.append((mode, None))
            with open(a.out / "logs" / f"verify-{mode}.log", "w") as vlog:
                p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     process_group=0)
                lab.verify = p
                assert p.stdout
                for line in p.stdout:
                    print(line, end="", flush=True)
                    vlog.write(line)
                    key = verdict_of(line)
                    if key:
                        dump_rules(a, mode, key)
                    if verdict_line(line, bool(components)):
                        # the real components at every verdict: all of them must have run at each
                        now = lab.components_running()
                        components = {k: v and components.get(k, True) for k, v in now.items()}
                runs[-1] = (mode, p.wait())
            lab.verify = None
        if not components:
            components = lab.components_running()
        if lab.real and not a.no_proofs:
            lab.proofs = lab.kubelet_proofs()
    except Interrupted as exc:
        error = f"interrupted ({exc})"
    except (LabError, ApiError, OSError, subprocess.TimeoutExpired) as exc:
        error = str(exc)
        log(f"ERROR: {error}")
    finally:
        signal.alarm(0)
        for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(s, signal.SIG_IGN)
        if lab.verify and lab.verify.poll() is None:
            # interrupted while trace-verify runs: let it clean up the cluster (it deletes what it created)
            log("stopping trace-verify (it deletes what it created), at most 20s")
            with contextlib.suppress(ProcessLookupError):
                os.killpg(lab.verify.pid, signal.SIGTERM)
            try:
                lab.verify.wait(20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(lab.verify.pid, signal.SIGKILL)
        if lab.real:
            with contextlib.suppress(LabError, OSError, subprocess.TimeoutExpired):
                lab.remove_pods()
        log("cleaning up: stopping every process, deleting the namespaces")
        for name in list(lab.procs)[::-1]:
            lab.procs[name].stop(5)
        remove_leftovers(quiet=True, logs=a.out / "logs")
        passed = write_results(a, lab, started, runs, error, components)
        if lock:
            lock.close()
    if error and error.startswith("interrupted"):
        return 130
    if error:
        return 2
    return 0 if passed else 1


def write_results(a: argparse.Namespace, lab: Lab, started: str, runs: list[tuple[str, int | None]],
                  error: str | None, components: dict[str, Any]) -> bool:
    """results.json: every run's scenarios (each with the run's attribution mode
    in `run` and where its agent nodes came from in `attribution`). Passes only
    if every requested run ran to its end with exit 0, has a step for every cell
    it was asked for (--policy x --events), and every step was as promised."""
    rules = sorted(str(p.relative_to(a.out)) for p in (a.out / "logs" / "rules").glob("*.txt")) \
        if (a.out / "logs" / "rules").exists() else []
    scenarios: list[dict[str, Any]] = []
    run_rows: list[dict[str, Any]] = []
    for mode, rc in runs:
        try:
            steps = trace_verify_scenarios(json.loads((a.out / f"trace-verify-{mode}.json").read_text()))
        except (OSError, ValueError, AttributeError):
            steps = []
        missing = [c for c in cells(a, mode) if c not in {s["key"] for s in steps}]
        for s in steps:
            s["run"] = mode
            s["kube_proxy_rules"] = [r for r in rules
                                     if any(Path(r).name == rules_file(mode, s["key"], n) for n in NODES)]
        scenarios += steps
        run_rows.append({"attribution": mode, "verify_exit_code": rc, "scenarios": len(steps),
                         "missing_steps": missing,
                         "pass": rc == 0 and bool(steps) and not missing and all(s.get("pass") for s in steps)})
    real = all(components.values()) if components else False
    wanted = list(getattr(a, "attribution", [m for m, _ in runs]))
    proofs = list(getattr(lab, "proofs", []) or [])
    passed = (error is None and [m for m, _ in runs] == wanted and all(r["pass"] for r in run_rows) and real
              and all(p["pass"] for p in proofs))
    codes = [rc for _, rc in runs]
    result = {
        "schema": "trace-lab/results/v2", "started": started, "duration_seconds": round(time.monotonic() - T0, 1),
        "pass": passed, "error": error, "kubernetes_version": lab.version, "kube_proxy_mode": a.kube_proxy_mode,
        "kubelet": "real", "node_runtime": node_runtime(a), "runner": "trace-verify",
        "verify_exit_code": None if not codes or None in codes else max(codes),
        "components_running_at_the_verdict": components,
        "runs": run_rows,
        "kubelet_proofs": proofs,
        "scenarios": scenarios,
    }
    (a.out / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    print()
    if scenarios:
        print("What happened and why (kube-proxy's rules of every node at each check: logs/rules/):")
        for s in scenarios:
            print(f"  [{s['run']}] {s['step']}. {s['key']}: {s['verdict']} (attribution {s.get('attribution') or '-'})"
                  f": {s.get('explanation', '')}")
    for r in run_rows:
        if r["missing_steps"]:
            print(f"  [{r['attribution']}] steps asked for and not run: {', '.join(r['missing_steps'])}")
    for p in proofs:
        print(f"  kubelet proof {p['name']}: {'PASS' if p['pass'] else 'FAIL'} (expected {p['expected']}): {p['detail']}")
    if components:
        print(f"Kubernetes {lab.version or '?'}, kube-proxy mode {a.kube_proxy_mode}; real components running at the "
              f"verdict: {', '.join(k for k, ok in components.items() if ok) or 'none'}"
              + ("" if real else f"; NOT running: {', '.join(k for k, ok in components.items() if not ok)}"))
    else:
        print(f"Kubernetes {lab.version or '?'}, kube-proxy mode {a.kube_proxy_mode}; no verdict was reached")
    print(f"Lab result: {'PASS: every step as promised' if passed else 'FAIL' + (': ' + error if error else '')}"
          f" ({round(time.monotonic() - T0)}s). Results: {a.out / 'results.json'}; logs and kube-proxy rules: {a.out / 'logs'}")
    return passed


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
