#!/usr/bin/env python3
"""The lab: node-local trace routing verified on one Linux machine.

An emulation of a three-node cluster's Service routing, built from real
software: network namespaces joined by a bridge, nftables rules written the way
kube-proxy writes them, real OpenTelemetry Collector agents loading the same
configuration file as the Kubernetes manifests, and the real trace-gen and
trace-sink binaries. deploy/lab/run.sh builds everything and calls this file;
it can also be run directly (as root) with the paths of the binaries.

Layout
  network     namespaces, bridge, veths, routes, hosts files; cleanup of leftovers
  Controller  readiness probes + the nftables rules they imply (EndpointSlices + kube-proxy)
  CrashLoop   restarts a failing agent with backoff (CrashLoopBackOff)
  Lab         the processes and the sink/generator APIs
  scenarios   the five scenarios, each asserted with `trace-sink check`
  report      the results table (terminal, Markdown, JSON) and the span accounting

Only Python 3.11 standard library. Every wait is bounded, and SIGALRM bounds the
whole run. Traffic goes only to addresses inside the namespaces created here
(198.18.0.0/15); no namespace has a route out.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import http.client
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

# --------------------------------------------------------------------------- addresses
NODES = ["node-1", "node-2", "node-3"]
NODE_IP = {"node-1": "198.18.0.11", "node-2": "198.18.0.12", "node-3": "198.18.0.13"}
HUB_NS, SINK_NS = "lab-hub", "lab-sink"
LAB_NAMESPACES = [HUB_NS, SINK_NS, *NODES]
HUB_IP, SINK_IP, PREFIX = "198.18.0.1", "198.18.0.100", 24
BRIDGE = "lab-br0"
VIP_RANGE = "198.19.0.0/16"
AGENT_SERVICE, AGENT_VIP = "telemetry-otlp-traces-local", "198.19.0.10"
SINK_SERVICE, SINK_VIP = "trace-sink", "198.19.0.20"
OTLP_PORTS = (4317, 4318)
HEALTH_PORT, GEN_STATS_PORT, SINK_API_PORT = 13133, 8081, 8080
CONNECT_TIMEOUT = 1.0  # trace-gen --connect-timeout, seconds: how long a DROPped connect hangs
SINK_API = f"http://{SINK_IP}:{SINK_API_PORT}"
NFT_TABLE = "lab"  # the lab's own table (family ip) in each node namespace

# --------------------------------------------------------------------------- logging
T0 = time.monotonic()
_log_file: Any = None
_log_lock = threading.Lock()


def log(msg: str) -> None:
    """One progress line: elapsed time since start, then the message."""
    line = f"[{time.monotonic() - T0:6.1f}s] {msg}"
    with _log_lock:
        print(line, flush=True)
        if _log_file:
            _log_file.write(line + "\n")
            _log_file.flush()


class LabError(Exception):
    """Setup or infrastructure failure: the lab cannot give a verdict."""


class Interrupted(Exception):
    """A signal (Ctrl-C, SIGTERM, parent death) or the run's time limit."""


# --------------------------------------------------------------------------- namespaces
_libc = ctypes.CDLL(None, use_errno=True)
CLONE_NEWNET = 0x40000000
PR_SET_PDEATHSIG = 1


@contextlib.contextmanager
def in_netns(name: str) -> Iterator[None]:
    """Run the block with this thread in network namespace `name`.

    setns(2) moves only the calling thread, so sockets opened in the block live
    in the lab namespace while the rest of the program stays where it was.
    """
    with open("/proc/thread-self/ns/net", "rb") as own, open(f"/run/netns/{name}", "rb") as target:
        if _libc.setns(target.fileno(), CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise LabError(f"setns({name}) failed: {os.strerror(err)}")
        try:
            yield
        finally:
            if _libc.setns(own.fileno(), CLONE_NEWNET) != 0:
                err = ctypes.get_errno()
                raise LabError(f"setns back to the original namespace failed: {os.strerror(err)}")


def http_json(url: str, method: str = "GET", timeout: float = 2.0, ns: str = HUB_NS) -> tuple[int, Any]:
    """HTTP request from inside `ns` (the hub sees every lab address); JSON body or None.

    http.client, not urllib: it never goes through a proxy from the environment.
    """
    assert url.startswith("http://")
    hostport, _, path = url[len("http://"):].partition("/")
    host, _, port = hostport.partition(":")
    with in_netns(ns):
        conn = http.client.HTTPConnection(host, int(port or 80), timeout=timeout)
        try:
            conn.request(method, "/" + path, headers={"Accept": "application/json"})
            resp = conn.getresponse()
            body = resp.read()
        finally:
            conn.close()
    try:
        return resp.status, json.loads(body) if body else None
    except ValueError:
        return resp.status, body.decode(errors="replace")


def run(cmd: list[str], *, input: str | None = None, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
    res = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=timeout)
    if check and res.returncode != 0:
        raise LabError(f"command failed ({res.returncode}): {shlex.join(cmd)}\n{res.stderr.strip()}")
    return res


def _set_pdeathsig() -> None:
    """In the child before exec: die with the lab, even if the lab is SIGKILLed."""
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def existing_namespaces() -> list[str]:
    out = run(["ip", "netns", "list"], check=False).stdout
    names = [line.split()[0] for line in out.splitlines() if line.strip()]
    return [n for n in LAB_NAMESPACES if n in names]


def remove_leftovers(quiet: bool = False) -> list[str]:
    """Remove what a run of the lab leaves behind: processes in the lab namespaces,
    the namespaces (their veths, bridge and nftables tables go with them) and the
    hosts files. Idempotent; used at start, at the end and by `lab.py cleanup`."""
    removed: list[str] = []
    present = existing_namespaces()
    pids: list[int] = []
    for ns in present:
        out = run(["ip", "netns", "pids", ns], check=False).stdout
        pids += [int(p) for p in out.split() if p.isdigit()]
    pids = [p for p in pids if p != os.getpid()]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for p in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, sig)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(_alive(p) for p in pids):
            time.sleep(0.1)
        pids = [p for p in pids if _alive(p)]
        if not pids:
            break
    for ns in present:
        run(["ip", "netns", "del", ns], check=False)
        removed.append(f"namespace {ns}")
    for ns in LAB_NAMESPACES:
        hosts = Path("/etc/netns") / ns / "hosts"
        if hosts.exists():
            hosts.unlink()
            removed.append(str(hosts))
        with contextlib.suppress(OSError):
            hosts.parent.rmdir()
    with contextlib.suppress(OSError):
        Path("/etc/netns").rmdir()  # only if empty: somebody else's entries stay
    if removed and not quiet:
        log("removed: " + ", ".join(removed))
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie of ours counts as gone
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


def setup_network() -> None:
    """The hub namespace holds the bridge, so the root namespace gets no lab
    address or route; every other namespace has one veth into the bridge."""
    ip = ["ip"]
    for ns in LAB_NAMESPACES:
        run(ip + ["netns", "add", ns])
        run(ip + ["-n", ns, "link", "set", "lo", "up"])
    hub = ip + ["-n", HUB_NS]
    run(hub + ["link", "add", BRIDGE, "type", "bridge"])
    run(hub + ["addr", "add", f"{HUB_IP}/{PREFIX}", "dev", BRIDGE])
    run(hub + ["link", "set", BRIDGE, "up"])
    members = {SINK_NS: SINK_IP, **NODE_IP}
    for i, (ns, addr) in enumerate(members.items()):
        veth = f"veth-{ns.split('-')[-1]}"  # veth-sink, veth-1, ...
        # ip netns exec (not -n) so the peer's "netns NAME" is resolved while already in the hub
        run(["ip", "netns", "exec", HUB_NS, "ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns])
        run(hub + ["link", "set", veth, "master", BRIDGE])
        run(hub + ["link", "set", veth, "up"])
        run(ip + ["-n", ns, "addr", "add", f"{addr}/{PREFIX}", "dev", "eth0"])
        run(ip + ["-n", ns, "link", "set", "eth0", "up"])
        if ns in NODE_IP:
            # Routing happens before the output hook: without a route for the VIPs the
            # connect fails with "network unreachable" before any DNAT rule is seen.
            run(ip + ["-n", ns, "route", "add", VIP_RANGE, "dev", "eth0"])
            hosts = Path("/etc/netns") / ns / "hosts"
            hosts.parent.mkdir(parents=True, exist_ok=True)
            hosts.write_text(
                "# written by deploy/lab/lab.py; removed when the lab ends\n"
                f"127.0.0.1 localhost\n{AGENT_VIP} {AGENT_SERVICE}\n{SINK_VIP} {SINK_SERVICE}\n"
            )
    for ns in LAB_NAMESPACES:  # no way out: the lab must have no default route
        routes = run(ip + ["-n", ns, "route", "show", "default"]).stdout.strip()
        if routes:
            raise LabError(f"namespace {ns} has a default route: {routes}")


# --------------------------------------------------------------------------- processes
@dataclass
class Proc:
    name: str
    popen: subprocess.Popen
    log_path: Path
    started: float = field(default_factory=time.monotonic)

    def alive(self) -> bool:
        return self.popen.poll() is None

    def send(self, sig: int) -> None:
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                self.popen.send_signal(sig)

    def stop(self, timeout: float = 10.0, sig: int = signal.SIGTERM) -> int | None:
        """Signal, wait at most `timeout`, then SIGKILL. Returns the exit code."""
        self.send(sig)
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            log(f"{self.name} did not stop within {timeout:.0f}s; SIGKILL")
            self.send(signal.SIGKILL)
            return self.popen.wait(5)


def spawn(name: str, ns: str, cmd: list[str], env: dict[str, str], logs: Path) -> Proc:
    """Start `cmd` in namespace `ns` (ip netns exec bind-mounts /etc/netns/<ns>/hosts).

    Its own process group keeps Ctrl-C away from it (the lab stops it in order);
    the parent-death signal stops it if the lab itself is killed."""
    log_path = logs / f"{name}.log"
    out = open(log_path, "ab")
    base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/root"), "LANG": "C.UTF-8"}
    popen = subprocess.Popen(
        ["ip", "netns", "exec", ns, *cmd],
        env={**base, **env},  # nothing else from the caller's environment (no OTEL_*, SINK_*, proxies)
        stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
        process_group=0, preexec_fn=_set_pdeathsig,
    )
    out.close()
    return Proc(name, popen, log_path)


def wait_until(what: str, pred: Callable[[], bool], timeout: float, interval: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if pred():
                return
        except (OSError, http.client.HTTPException):
            pass
        if time.monotonic() >= deadline:
            raise LabError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


# --------------------------------------------------------------------------- readiness + rules
def nft_ruleset(node: str, policy: str, ready: list[str]) -> tuple[str, str]:
    """The node's nftables table for the current readiness; (ruleset, one-line summary).

    As kube-proxy's nftables mode: a filter chain ahead of NAT decides for new
    connections when there is no usable endpoint (drop: none on this node under
    Local; reject: none at all), then DNAT to the usable endpoints, chosen per
    new connection. The trace-sink Service always DNATs to the sink."""
    ports = "{ " + ", ".join(map(str, OTLP_PORTS)) + " }"
    match = f"ip daddr {AGENT_VIP} tcp dport {ports}"
    if policy == "Local":
        targets = [NODE_IP[node]] if node in ready else []
    else:
        targets = [NODE_IP[n] for n in ready]
    filter_rules, nat_rules = [], []
    if targets:
        if len(targets) == 1:
            dnat = f"dnat to {targets[0]}"
        else:
            pairs = ", ".join(f"{i} : {t}" for i, t in enumerate(targets))
            dnat = f"dnat to numgen random mod {len(targets)} map {{ {pairs} }}"
        nat_rules.append(f'{match} {dnat} comment "{AGENT_SERVICE} endpoints"')
        summary = "local agent" if policy == "Local" else f"DNAT to any of {len(targets)} ready agents"
    elif ready:  # only reachable under Local: endpoints exist, none on this node
        filter_rules.append(f'ct state new {match} drop comment "{AGENT_SERVICE} has no local endpoints"')
        summary = "DROP (no local endpoint)"
    else:
        filter_rules.append(f'ct state new {match} reject with tcp reset comment "{AGENT_SERVICE} has no endpoints"')
        summary = "REJECT (no endpoint anywhere)"
    nat_rules.append(f'ip daddr {SINK_VIP} tcp dport {ports} dnat to {SINK_IP} comment "{SINK_SERVICE}"')
    body = "\n".join(
        [
            f"table ip {NFT_TABLE} {{}}",
            f"flush table ip {NFT_TABLE}",
            f"table ip {NFT_TABLE} {{",
            "  chain services-filter {",
            "    type filter hook output priority -110; policy accept;",
            *[f"    {r}" for r in filter_rules],
            "  }",
            "  chain services-nat {",
            "    type nat hook output priority -100; policy accept;",
            *[f"    {r}" for r in nat_rules],
            "  }",
            "}",
            "",
        ]
    )
    return body, summary


class Controller(threading.Thread):
    """Readiness probes for every agent and the rules they imply on every node.

    Probes like a kubelet readiness probe (HTTP GET on the health endpoint, from the
    hub: period, timeout, failure threshold, success threshold 1; not ready until the
    first success) and, whenever the set of ready agents or the policy changes,
    rewrites every node's table atomically (nft -f with a flush of the lab table),
    as EndpointSlices + kube-proxy would."""

    def __init__(self, period: float, failure_threshold: int, probe_timeout: float, logs: Path):
        super().__init__(name="readiness-controller", daemon=True)
        self.period, self.failure_threshold, self.probe_timeout = period, failure_threshold, probe_timeout
        self.logs = logs
        self.ready = {n: False for n in NODES}
        self.failures = {n: 0 for n in NODES}
        self.policy = "Local"
        self.applied: tuple[str, frozenset[str]] | None = None  # (policy, ready) last written to nft
        self.changes: list[dict[str, Any]] = []
        self.error: BaseException | None = None
        self.cond = threading.Condition()
        self.stopping = threading.Event()

    # -- public, thread-safe
    def set_policy(self, policy: str) -> None:
        with self.cond:
            self.policy = policy
            self.cond.notify_all()

    def wait_for(self, what: str, pred: Callable[[dict[str, bool]], bool], timeout: float) -> float:
        """Wait until pred(ready) holds AND the rules for it are written; returns seconds waited."""
        start = time.monotonic()
        deadline = start + timeout
        with self.cond:
            while True:
                if self.error:
                    raise LabError(f"readiness controller failed: {self.error}")
                if pred(dict(self.ready)) and self.applied == (self.policy, self._ready_set()):
                    return time.monotonic() - start
                left = deadline - time.monotonic()
                if left <= 0:
                    raise LabError(f"timed out after {timeout:.0f}s waiting for {what} (ready: {self.ready})")
                self.cond.wait(min(left, 0.2))

    def stop(self) -> None:
        self.stopping.set()
        self.join(5)

    # -- the loop
    def _ready_set(self) -> frozenset[str]:
        return frozenset(n for n, r in self.ready.items() if r)

    def run(self) -> None:
        try:
            self._apply("initial rules: no agent is ready yet")
            next_tick = time.monotonic()
            while not self.stopping.is_set():
                reasons = []
                for node in NODES:
                    ok, detail = self._probe(node)
                    with self.cond:
                        if ok:
                            self.failures[node] = 0
                            if not self.ready[node]:
                                self.ready[node] = True
                                reasons.append(f"{node} agent Ready")
                        else:
                            self.failures[node] += 1
                            if self.ready[node] and self.failures[node] >= self.failure_threshold:
                                self.ready[node] = False
                                reasons.append(f"{node} agent NotReady after {self.failures[node]} failed probes ({detail})")
                with self.cond:
                    policy_changed = self.applied is not None and self.applied[0] != self.policy
                if policy_changed:
                    reasons.append(f"policy {self.policy}")
                if reasons:
                    self._apply("; ".join(reasons))
                next_tick += self.period
                self.stopping.wait(max(0.0, next_tick - time.monotonic()))
        except BaseException as exc:  # surfaced to the main thread by wait_for
            with self.cond:
                self.error = exc
                self.cond.notify_all()

    def _probe(self, node: str) -> tuple[bool, str]:
        try:
            status, _ = http_json(f"http://{NODE_IP[node]}:{HEALTH_PORT}/", timeout=self.probe_timeout)
            return status == 200, f"HTTP {status}"
        except ConnectionRefusedError:
            return False, "connection refused"
        except TimeoutError:
            return False, "timeout"
        except (OSError, http.client.HTTPException) as exc:
            return False, type(exc).__name__

    def _apply(self, reason: str) -> None:
        with self.cond:
            policy, ready = self.policy, self._ready_set()
        ordered = [n for n in NODES if n in ready]
        summaries = {}
        for node in NODES:
            ruleset, summaries[node] = nft_ruleset(node, policy, ordered)
            run(["ip", "netns", "exec", node, "nft", "-f", "-"], input=ruleset)
            (self.logs / f"nft-{node}.nft").write_text(ruleset)
        with self.cond:
            self.applied = (policy, ready)
            self.changes.append({
                "t": round(time.monotonic() - T0, 1), "reason": reason, "policy": policy,
                "ready": ordered, "rules": summaries,
            })
            self.cond.notify_all()
        rules = " | ".join(f"{n}: {s}" for n, s in summaries.items())
        log(f"readiness: {reason} -> {policy} rules: {rules}")


class CrashLoop(threading.Thread):
    """An agent whose container keeps failing: restart it with growing backoff
    (kubelet's CrashLoopBackOff, scaled down: 0.5 s doubling to at most 4 s)."""

    lock = threading.Lock()
    errors_seen: set[str] = set()  # each start-up error is logged once

    def __init__(self, node: str, start: Callable[[int], Proc]):
        super().__init__(name=f"crashloop-{node}", daemon=True)
        self.node, self.start_fn = node, start
        self.restarts = 0
        self.exit_codes: list[int] = []
        self.stopping = threading.Event()
        self.current: Proc | None = None

    def run(self) -> None:
        backoff = 0.5
        while not self.stopping.is_set():
            proc = self.start_fn(self.restarts)
            self.current = proc
            while proc.alive() and not self.stopping.wait(0.1):
                pass
            if self.stopping.is_set():
                proc.stop(5)
                return
            self.exit_codes.append(proc.popen.returncode)
            if len(self.exit_codes) == 1:
                error = last_error_line(proc.log_path)
                with CrashLoop.lock:
                    said = error in CrashLoop.errors_seen
                    CrashLoop.errors_seen.add(error)
                log(f"  agent {self.node} (broken config) exited with code {proc.popen.returncode}: "
                    + ("the same error" if said else error))
            if self.stopping.wait(backoff):
                return
            backoff = min(backoff * 2, 4.0)
            self.restarts += 1

    def stop(self) -> None:
        self.stopping.set()
        self.join(10)


def last_error_line(path: Path) -> str:
    """The collector's start-up error: its last "Error:" line and what follows, on one line."""
    try:
        lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return "(no log)"
    starts = [i for i, ln in enumerate(lines) if ln.startswith("Error")]
    tail = lines[starts[-1]:] if starts else lines[-1:]
    return " ".join(tail)[:300] or "(empty log)"


# --------------------------------------------------------------------------- the lab
@dataclass
class Snapshot:
    """One /stats document of the sink, with when it was taken and under which policy."""
    label: str
    policy: str
    stats: dict[str, Any]


class Lab:
    """The processes of one run (sink, agents, crash loops, generators), the API
    calls to the sink and the generators, and the snapshots kept for the accounting."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.out: Path = args.out
        self.logs = self.out / "logs"
        self.procs: list[Proc] = []
        self.agents: dict[str, Proc] = {}
        self.crashloops: dict[str, CrashLoop] = {}
        self.generators: dict[str, Proc] = {}
        self.gen_generation = 0
        self.summaries: dict[str, Path] = {}
        self.sink: Proc | None = None
        self.controller: Controller | None = None
        self.snapshots: list[Snapshot] = []  # every /reset answer: summed by the accounting
        self.observed: list[Snapshot] = []  # /stats reads: checked for routes, not summed
        self.tmpdir = Path(f"/tmp/trace-lab-{os.getpid()}")

    # -- lifecycle
    def start_sink(self) -> None:
        a = self.args
        self.sink = self._spawn("sink", SINK_NS, [
            str(a.trace_sink), "--grpc-listen", "0.0.0.0:4317", "--http-listen", "0.0.0.0:4318",
            "--api-listen", f"{SINK_IP}:{SINK_API_PORT}"], {})
        wait_until("trace-sink's API (/readyz)", lambda: http_json(f"{SINK_API}/readyz", timeout=1)[0] == 200, 15)

    def agent_cmd(self, config: Path) -> list[str]:
        return [str(self.args.collector), "--config", str(config)]

    def agent_env(self, node: str) -> dict[str, str]:
        return {"MY_NODE_NAME": node, "MY_POD_IP": NODE_IP[node], "SINK_OTLP_ENDPOINT": f"{SINK_SERVICE}:4317"}

    def start_agent(self, node: str) -> None:
        self.agents[node] = self._spawn(f"agent-{node}", node, self.agent_cmd(self.args.agent_config), self.agent_env(node))

    def start_crashloop(self, node: str, config: Path) -> None:
        def start(i: int) -> Proc:
            return self._spawn(f"agent-{node}-broken", node, self.agent_cmd(config), self.agent_env(node))
        loop = CrashLoop(node, start)
        self.crashloops[node] = loop
        loop.start()

    def stop_crashloops(self) -> dict[str, dict[str, Any]]:
        info = {}
        for node, loop in self.crashloops.items():
            loop.stop()
            info[node] = {"restarts": loop.restarts, "exit_codes": sorted(set(loop.exit_codes))}
        self.crashloops = {}
        return info

    def start_generators(self, extra: list[str]) -> None:
        a = self.args
        self.gen_generation += 1
        gen = self.gen_generation
        for node in NODES:
            summary = self.out / "generators" / f"gen{gen}-{node}.summary.json"
            summary.parent.mkdir(parents=True, exist_ok=True)
            summary.unlink(missing_ok=True)
            # no --endpoint: the default http://telemetry-otlp-traces-local:4317 resolves to the Service VIP
            cmd = [str(a.trace_gen), "--rate", str(a.rate), "--batch", str(a.batch), "--workers", "1",
                   "--timeout", "10s", "--connect-timeout", f"{CONNECT_TIMEOUT:g}s", "--report-interval", "5s",
                   "--stats-listen", f"{NODE_IP[node]}:{GEN_STATS_PORT}", "--summary-json", str(summary), *extra]
            self.generators[node] = self._spawn(f"gen{gen}-{node}", node, cmd, {"NODE_NAME": node})
            self.summaries[node] = summary
        for node in NODES:
            wait_until(f"trace-gen on {node} (/stats)", lambda n=node: http_json(self.gen_url(n), timeout=1)[0] == 200, 15)

    def stop_generators(self) -> dict[str, dict[str, Any]]:
        """SIGTERM: each generator stops, waits for its in-flight export and writes its summary."""
        for p in self.generators.values():
            p.send(signal.SIGTERM)
        result = {}
        for node, p in self.generators.items():
            code = p.stop(timeout=15)
            try:
                summary = json.loads(self.summaries[node].read_text())
            except (OSError, ValueError) as exc:
                raise LabError(f"trace-gen on {node} wrote no readable --summary-json ({exc}); see {p.log_path}")
            result[node] = {"exit_code": code, "summary": summary}
        self.generators = {}
        return result

    def _spawn(self, name: str, ns: str, cmd: list[str], env: dict[str, str]) -> Proc:
        p = spawn(name, ns, cmd, env, self.logs)
        self.procs.append(p)
        return p

    def teardown(self) -> None:
        if self.controller:  # rules stay as they are while everything stops
            self.controller.stop()
        for loop in list(self.crashloops.values()):
            loop.stopping.set()
        order = sorted(self.procs, key=lambda p: (not p.name.startswith("gen"), p.name == "sink"))
        for p in order:
            p.send(signal.SIGTERM)
        for p in order:
            with contextlib.suppress(Exception):
                p.stop(timeout=8)
        for loop in list(self.crashloops.values()):
            loop.join(5)
        remove_leftovers(quiet=True)
        shutil.rmtree(self.tmpdir, ignore_errors=True)

    # -- APIs
    @staticmethod
    def gen_url(node: str) -> str:
        return f"http://{NODE_IP[node]}:{GEN_STATS_PORT}/stats"

    def gen_stats(self) -> dict[str, dict[str, Any]]:
        out = {}
        for node in NODES:
            status, body = http_json(self.gen_url(node))
            if status != 200 or not isinstance(body, dict):
                raise LabError(f"trace-gen on {node}: GET /stats answered {status}")
            out[node] = body
        return out

    def sink_stats(self, label: str | None = None) -> dict[str, Any]:
        status, body = http_json(f"{SINK_API}/stats")
        if status != 200 or not isinstance(body, dict):
            raise LabError(f"trace-sink: GET /stats answered {status}: {body}")
        if label:
            self._record(label, body, keep=False)
        return body

    def sink_reset(self, label: str) -> dict[str, Any]:
        """POST /reset; the snapshot it returns is kept: it is part of the accounting."""
        status, body = http_json(f"{SINK_API}/reset", method="POST")
        if status != 200 or not isinstance(body, dict):
            raise LabError(f"trace-sink: POST /reset answered {status}: {body}")
        self._record(label, body, keep=True)
        return body

    def _record(self, label: str, stats: dict[str, Any], keep: bool) -> None:
        policy = self.controller.policy if self.controller else "Local"
        snap = Snapshot(label, policy, stats)
        if keep:
            self.snapshots.append(snap)
        else:
            self.observed.append(snap)

    def check(self, args: list[str]) -> dict[str, Any]:
        """Run `trace-sink check` in the sink's namespace; exit code, JSON report and text."""
        a = self.args
        args = [*args, "--within", f"{a.within}s", "--hold", f"{a.hold}s"]
        cmd = [str(a.trace_sink), "check", "--url", SINK_API, *args]
        timeout = a.within + a.hold + 20
        started = time.monotonic()
        log(f"  $ trace-sink check {shlex.join(args)}  (up to {a.within}s for the data, then {a.hold}s holding)")
        res = subprocess.run(["ip", "netns", "exec", SINK_NS, *cmd, "--json"], capture_output=True, text=True,
                             timeout=timeout, env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
                             stdin=subprocess.DEVNULL)
        report: Any = None
        with contextlib.suppress(ValueError):
            report = json.loads(res.stdout)
        text = res.stderr.strip()
        for line in text.splitlines():
            log(f"    {line}")
        if isinstance(report, dict) and isinstance(report.get("report"), dict):
            r = report["report"]
            log(f"    spans {r.get('spans_total')}: local {r.get('local_spans')}, remote {r.get('remote_spans')}, "
                f"unattributed {r.get('unattributed_spans')}")
            for f in r.get("failures") or []:
                log(f"    failure ({f.get('polarity')}): {f.get('message')}")
        if isinstance(report, dict) and isinstance(report.get("stats"), dict):
            self._record("trace-sink check " + shlex.join(args), report["stats"], keep=False)
        log(f"  -> exit {res.returncode} after {time.monotonic() - started:.1f}s")
        return {"command": "trace-sink check " + shlex.join(args), "exit_code": res.returncode,
                "report": report if report is not None else res.stdout.strip(), "output": text}


# --------------------------------------------------------------------------- scenarios
@dataclass
class Scenario:
    key: str
    title: str
    same_node: str = "—"
    silent_when_down: str = "—"
    sent: int = 0
    received: int = 0
    lost: int = 0
    checks: list[dict[str, Any]] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def expect(self, name: str, ok: bool, detail: Any = "") -> bool:
        self.checks.append({"name": name, "ok": bool(ok), "detail": detail})
        log(f"  {'ok  ' if ok else 'FAIL'} {name}{': ' + str(detail) if detail != '' else ''}")
        return ok

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(c["ok"] for c in self.checks)


def completed(g: dict[str, Any]) -> int:
    """Spans whose export has finished, accepted or failed. Not spans_sent, which also
    counts spans still in flight: this way a window's sent = received + lost."""
    return int(g.get("spans_accepted") or 0) + int(g.get("spans_failed") or 0)


def delta(after: dict[str, Any], before: dict[str, Any], key: str) -> int:
    return int(after.get(key) or 0) - int(before.get(key) or 0)


def reason_delta(after: dict[str, Any], before: dict[str, Any]) -> dict[str, int]:
    a, b = after.get("spans_failed_by_reason") or {}, before.get("spans_failed_by_reason") or {}
    return {k: a.get(k, 0) - b.get(k, 0) for k in sorted(set(a) | set(b)) if a.get(k, 0) - b.get(k, 0)}


def remote_routes(stats: dict[str, Any], generator_node: str | None = None) -> list[dict[str, Any]]:
    """Routes where a generator's spans went through another node's agent (or none)."""
    return [r for r in stats.get("routes") or []
            if r.get("generator_node") != r.get("agent_node")
            and (generator_node is None or r.get("generator_node") == generator_node)]


def routes_text(stats: dict[str, Any]) -> str:
    return ", ".join(f"{r.get('generator_node')}->{r.get('agent_node')}: {r.get('spans')}"
                     for r in stats.get("routes") or []) or "none"


class Window:
    """One scenario's measuring window: generator counters and the sink between a
    /reset and the end of the scenario's check."""

    def __init__(self, lab: Lab, label: str):
        self.lab = lab
        self.before = lab.gen_stats()
        lab.sink_reset(f"{label}: reset (closes the previous window)")

    def close(self, sc: Scenario, label: str) -> tuple[dict[str, Any], dict[str, Any]]:
        # Read right after each other, so both ends of the window match to a few ms.
        after = self.lab.gen_stats()
        sink = self.lab.sink_stats(label)
        per_node = {n: {"spans_sent": completed(after[n]) - completed(self.before[n]),
                        "spans_accepted": delta(after[n], self.before[n], "spans_accepted"),
                        "spans_failed": delta(after[n], self.before[n], "spans_failed"),
                        "spans_failed_by_reason": reason_delta(after[n], self.before[n])}
                    for n in NODES}
        sc.sent = sum(g["spans_sent"] for g in per_node.values())
        sc.lost = sum(g["spans_failed"] for g in per_node.values())
        sc.received = int(sink.get("spans_total") or 0)
        sc.details["generators"] = per_node
        sc.details["sink"] = {k: sink.get(k) for k in ("spans_total", "local_spans", "remote_spans", "unattributed_spans")}
        sc.details["routes"] = sink.get("routes")
        log(f"  window: sent {sc.sent}, received {sc.received}, failed at generators {sc.lost}; routes {routes_text(sink)}")
        return after, sink


def settle() -> None:
    """After a rule change, let connection attempts made under the old rules end
    (they last at most trace-gen's --connect-timeout, 1 s) before a window opens."""
    log(f"  rules written; waiting {CONNECT_TIMEOUT + 0.5:.1f}s for attempts under the old rules to end")
    time.sleep(CONNECT_TIMEOUT + 0.5)


def scenario_1(lab: Lab, a: argparse.Namespace) -> Scenario:
    sc = Scenario("1", "Local, all agents up")
    w = Window(lab, "scenario 1")
    res = lab.check(["--expect-local", "--from-nodes", ",".join(NODES)])
    sc.details["check"] = res
    after, sink = w.close(sc, "scenario 1: end")
    sc.expect("trace-sink check: every node delivers, all local", res["exit_code"] == 0, f"exit {res['exit_code']}")
    sc.expect("no remote or unattributed spans", not remote_routes(sink) and not sink.get("unattributed_spans"),
              routes_text(sink))
    sc.expect("no failed exports at the generators", sc.lost == 0, sc.lost)
    sc.same_node = "yes" if sc.passed else "no"
    return sc


def scenario_2(lab: Lab, a: argparse.Namespace) -> Scenario:
    sc = Scenario("2", "Local, node-2 agent killed")
    ctl = lab.controller
    assert ctl
    limit = (a.probe_period + a.probe_timeout) * (a.failure_threshold + 2) + 5
    log(f"  SIGKILL agent on node-2; waiting up to {limit:.0f}s for readiness to propagate")
    lab.agents["node-2"].stop(sig=signal.SIGKILL, timeout=5)
    waited = ctl.wait_for("node-2 NotReady", lambda r: not r["node-2"] and r["node-1"] and r["node-3"], limit)
    sc.details["propagation_seconds"] = round(waited, 1)
    settle()
    w = Window(lab, "scenario 2")
    gen_before = w.before["node-2"]
    res = lab.check(["--silent-nodes", "node-2", "--min-spans", "1", "--from-nodes", "node-1,node-3", "--expect-local"])
    sc.details["check"] = res
    after, sink = w.close(sc, "scenario 2: end")
    reasons = reason_delta(after["node-2"], gen_before)
    sc.details["node2_failed_by_reason"] = reasons
    sc.details["node2_stats_before"], sc.details["node2_stats_after"] = gen_before, after["node-2"]
    sc.expect("trace-sink check: node-2 silent, node-1 and node-3 local", res["exit_code"] == 0, f"exit {res['exit_code']}")
    sc.expect("node-2's generator failed with connect_timeout only", set(reasons) == {"connect_timeout"}, reasons)
    sc.expect("no span of node-2 in this window", not [r for r in sink.get("routes") or [] if r.get("generator_node") == "node-2"],
              routes_text(sink))
    # "no route node-2 -> another agent in any snapshot" is asserted at the end, over every snapshot
    sc.same_node = "yes (node-1, node-3)" if res["exit_code"] == 0 else "no"
    sc.silent_when_down = "yes (node-2: connect timeout)" if sc.passed else "no"
    return sc


def broken_config(a: argparse.Namespace, lab: Lab) -> Path:
    if a.broken_config.exists():
        return a.broken_config
    # Stand-in until deploy/overlays/broken-agent/config.yaml exists: an invalid key,
    # which the collector refuses at start.
    lab.tmpdir.mkdir(parents=True, exist_ok=True)
    path = lab.tmpdir / "broken-agent.yaml"
    path.write_text(a.agent_config.read_text() + "\nnot_a_collector_section: {}\n")
    log(f"  NOTE: {a.broken_config} does not exist; using a stand-in broken config {path}")
    return path


def scenario_3(lab: Lab, a: argparse.Namespace) -> Scenario:
    sc = Scenario("3", "Local, every agent crash-looping")
    ctl = lab.controller
    assert ctl
    config = broken_config(a, lab)
    sc.details["broken_config"] = str(config)
    log("  stopping the agents gracefully (SIGTERM), waiting up to 15s")
    for node, p in lab.agents.items():
        if p.alive():
            code = p.stop(timeout=15)
            log(f"  agent {node} exited with code {code}")
    for node in NODES:
        lab.start_crashloop(node, config)
    limit = (a.probe_period + a.probe_timeout) * (a.failure_threshold + 2) + 5
    log(f"  agents crash-looping; waiting up to {limit:.0f}s for readiness to propagate")
    waited = ctl.wait_for("every agent NotReady", lambda r: not any(r.values()), limit)
    sc.details["propagation_seconds"] = round(waited, 1)
    settle()
    w = Window(lab, "scenario 3")
    res = lab.check(["--min-spans", "0", "--silent-nodes", ",".join(NODES)])
    sc.details["check"] = res
    after, sink = w.close(sc, "scenario 3: end")
    sc.expect("trace-sink check: every node silent", res["exit_code"] == 0, f"exit {res['exit_code']}")
    sc.expect("nothing reached the sink", int(sink.get("spans_total") or 0) == 0, sink.get("spans_total"))
    for node in NODES:
        reasons = reason_delta(after[node], w.before[node])
        sc.expect(f"{node}'s generator failed with connection_refused only", set(reasons) == {"connection_refused"}, reasons)
    loops = {n: {"restarts": lp.restarts, "exit_codes": sorted(set(lp.exit_codes))} for n, lp in lab.crashloops.items()}
    sc.details["crash_loops"] = loops
    sc.expect("every broken agent keeps exiting non-zero (crash loop)",
              all(lp["restarts"] >= 1 and lp["exit_codes"] and 0 not in lp["exit_codes"] for lp in loops.values()), loops)
    sc.silent_when_down = "yes (all nodes: connection refused)" if sc.passed else "no"
    return sc


def scenario_4(lab: Lab, a: argparse.Namespace) -> tuple[Scenario, dict[str, Any]]:
    sc = Scenario("4", "Local, agents recovered")
    ctl = lab.controller
    assert ctl
    loops = lab.stop_crashloops()
    sc.details["crash_loops"] = loops
    counts = ", ".join(f"{n}: {v['restarts']} restarts" for n, v in loops.items())
    log(f"  crash loops stopped ({counts}); starting good agents")
    for node in NODES:
        lab.start_agent(node)
    waited = ctl.wait_for("every agent Ready", lambda r: all(r.values()), 30)
    sc.details["ready_after_seconds"] = round(waited, 1)
    w = Window(lab, "scenario 4")
    res = lab.check(["--expect-local", "--from-nodes", ",".join(NODES)])
    sc.details["check"] = res
    after, sink = w.close(sc, "scenario 4: end")
    sc.expect("trace-sink check: every node delivers again, all local", res["exit_code"] == 0, f"exit {res['exit_code']}")
    sc.expect("no remote or unattributed spans", not remote_routes(sink) and not sink.get("unattributed_spans"), routes_text(sink))
    sc.same_node = "yes" if sc.passed else "no"
    log("  stopping the generators gracefully (SIGTERM) for the accounting")
    stopped = lab.stop_generators()
    flush_sink(lab)
    lab.sink_reset("accounting: final snapshot of the first generators")
    return sc, stopped


def flush_sink(lab: Lab) -> None:
    """Wait (at most 10 s) until the sink's span count has stopped moving: the agents have flushed."""
    log("  letting the agents flush: waiting up to 10s for the sink's count to settle")
    deadline, last, stable = time.monotonic() + 10, -1, 0
    while time.monotonic() < deadline:
        total = int(lab.sink_stats().get("spans_total") or 0)
        stable = stable + 1 if total == last else 0
        if stable >= 3:
            return
        last = total
        time.sleep(0.5)


def scenario_5(lab: Lab, a: argparse.Namespace) -> tuple[Scenario, dict[str, Any]]:
    sc = Scenario("5", "Cluster policy (negative control)")
    ctl = lab.controller
    assert ctl
    ctl.set_policy("Cluster")
    ctl.wait_for("Cluster rules written", lambda r: all(r.values()), 10)
    lab.start_generators(["--reconnect-every", "5"])
    w = Window(lab, "scenario 5")
    log(f"  letting Cluster-policy traffic flow for {a.hold}s before the check")
    time.sleep(a.hold)
    res = lab.check(["--expect-local", "--from-nodes", ",".join(NODES)])
    sc.details["check"] = res
    after, sink = w.close(sc, "scenario 5: end")
    remote = int(sink.get("remote_spans") or 0)
    sc.expect("trace-sink check --expect-local fails (exit 1), as it must", res["exit_code"] == 1, f"exit {res['exit_code']}")
    failures = (res["report"].get("report") or {}).get("failures") or [] if isinstance(res["report"], dict) else []
    sc.expect("it fails on the local-only condition", any(f.get("polarity") == "negative" and "remote" in str(f.get("message"))
                                                         for f in failures), [f.get("message") for f in failures])
    sc.expect("remote (cross-node) spans reached the sink", remote > 0 and bool(remote_routes(sink)), routes_text(sink))
    sc.same_node = f"no: {remote} of {sc.received} spans remote (expected)" if remote else "yes (unexpected)"
    stopped = lab.stop_generators()
    flush_sink(lab)
    lab.sink_reset("accounting: final snapshot of the Cluster-policy generators")
    return sc, stopped


# --------------------------------------------------------------------------- accounting
def accounting(lab: Lab, stopped: dict[str, dict[str, Any]], killed: set[str]) -> list[dict[str, Any]]:
    """Per generator over its whole life: the sink's missing count (sent − received,
    received summed over every snapshot) against the generator's own failed count.
    The difference is spans an agent accepted and never delivered."""
    rows = []
    for node, info in stopped.items():
        s = info["summary"]
        gid = s.get("generator_id")
        received = 0
        duplicates = 0
        for snap in lab.snapshots:
            for g in snap.stats.get("generators") or []:
                if g.get("id") == gid:
                    received += int(g.get("spans") or 0) - int(g.get("duplicates") or 0)
                    duplicates += int(g.get("duplicates") or 0)
        sent, failed = int(s.get("spans_sent") or 0), int(s.get("spans_failed") or 0)
        missing = sent - received
        rows.append({"node": node, "generator_id": gid, "sent": sent, "accepted": s.get("spans_accepted"),
                     "received": received, "duplicates": duplicates, "sink_missing": missing,
                     "generator_failed": failed, "failed_by_reason": s.get("spans_failed_by_reason"),
                     "difference": missing - failed, "exit_code": info["exit_code"],
                     "asserted": node not in killed})
    return rows


# --------------------------------------------------------------------------- report
HEADERS = ["Scenario", "Data sent to the agent on the same node", "No data when the local agent is down",
           "Spans sent / received / lost", "Verdict"]


def verdict(sc: Scenario) -> str:
    if sc.key == "5":
        return "PASS (check failed, as expected)" if sc.passed else "FAIL"
    return "PASS" if sc.passed else "FAIL"


def table_rows(scenarios: list[Scenario]) -> list[list[str]]:
    return [[f"{s.key}. {s.title}", s.same_node, s.silent_when_down, f"{s.sent} / {s.received} / {s.lost}", verdict(s)]
            for s in scenarios]


def text_table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]
    def fmt(r: list[str]) -> str:
        return "  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip()
    return "\n".join([fmt(headers), "  ".join("-" * w for w in widths), *map(fmt, rows)])


def md_table(headers: list[str], rows: list[list[str]]) -> str:
    esc = lambda c: str(c).replace("|", "\\|")  # noqa: E731
    return "\n".join(["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers),
                      *("| " + " | ".join(esc(c) for c in r) + " |" for r in rows)])


ACC_HEADERS = ["Generator", "Sent", "Received by the sink", "Sink-side missing", "Failed at the generator",
               "Difference (accepted, never delivered)", "Asserted"]


def acc_rows(rows: list[dict[str, Any]], label: str) -> list[list[str]]:
    return [[f"{r['node']} ({label})", str(r["sent"]), str(r["received"]), str(r["sink_missing"]), str(r["generator_failed"]),
             str(r["difference"]), "== 0" if r["asserted"] else "no: agent SIGKILLed"] for r in rows]


def write_report(lab: Lab, scenarios: list[Scenario], acc: dict[str, list[dict[str, Any]]], extra_checks: list[dict[str, Any]],
                 passed: bool, error: str | None, started: str) -> None:
    out = lab.out
    rows = table_rows(scenarios)
    arows = acc_rows(acc.get("local", []), "1-4") + acc_rows(acc.get("cluster", []), "5")
    duration = round(time.monotonic() - T0, 1)
    print()
    print(text_table(HEADERS, rows))
    if arows:
        print()
        print("Accounting over each generator's life (received = Σ over every sink snapshot of spans − duplicates):")
        print(text_table(ACC_HEADERS, arows))
    for c in extra_checks:
        print(f"{'ok  ' if c['ok'] else 'FAIL'} {c['name']}: {c['detail']}")
    result = "PASS: every scenario came out as expected" if passed else f"FAIL{': ' + error if error else ''}"
    print(f"\nLab result: {result} ({duration}s). Report: {out / 'results.md'}")

    md = [f"# Lab results\n", f"Run {started}, {duration} s, result: **{'PASS' if passed else 'FAIL'}**"
          + (f" ({error})" if error else "") + "\n", md_table(HEADERS, rows), "",
          "Spans sent / received / lost: measured in the scenario's window (from the sink's reset to the end of "
          "its check); sent and lost are the generators' own counters (lost = exports that failed), received is "
          "what the sink got. Spans in flight at the window's edges can make sent − lost differ from received "
          "by a batch; the accounting below is exact.\n"]
    if arows:
        md += ["## Accounting over each generator's whole life\n", md_table(ACC_HEADERS, arows), ""]
    if extra_checks:
        md += ["## Checks over every snapshot\n", *[f"- {'ok' if c['ok'] else 'FAIL'}: {c['name']} ({c['detail']})" for c in extra_checks], ""]
    md += ["## Checks per scenario\n"]
    for s in scenarios:
        md.append(f"### {s.key}. {s.title} ({s.seconds:.1f} s)\n")
        if "check" in s.details:
            md.append(f"`{s.details['check']['command']}` → exit {s.details['check']['exit_code']}\n")
        md += [f"- {'ok' if c['ok'] else 'FAIL'}: {c['name']} ({c['detail']})" for c in s.checks] + [""]
    if lab.controller:
        md += ["## Readiness changes (rules rewritten)\n"]
        md += [f"- {c['t']} s: {c['reason']} → {c['policy']}: " + "; ".join(f"{n} {r}" for n, r in c["rules"].items())
               for c in lab.controller.changes] + [""]
    (out / "results.md").write_text("\n".join(md))
    (out / "results.json").write_text(json.dumps({
        "schema": "trace-lab/results/v1", "started": started, "duration_seconds": duration, "pass": passed,
        "error": error, "settings": {k: str(v) for k, v in vars(lab.args).items()},
        "scenarios": [{"key": s.key, "title": s.title, "pass": s.passed, "verdict": verdict(s), "same_node": s.same_node,
                       "silent_when_local_agent_down": s.silent_when_down, "spans_sent": s.sent, "spans_received": s.received,
                       "spans_lost": s.lost, "seconds": round(s.seconds, 1), "checks": s.checks, "details": s.details}
                      for s in scenarios],
        "accounting": acc, "snapshot_checks": extra_checks,
        "readiness_changes": lab.controller.changes if lab.controller else [],
        "snapshots": [{"label": s.label, "policy": s.policy, "stats": s.stats} for s in lab.snapshots],
    }, indent=2) + "\n")


# --------------------------------------------------------------------------- main
def parse_args(argv: list[str]) -> argparse.Namespace:
    repo = Path(__file__).resolve().parents[3]
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", nargs="?", default="run", choices=["run", "cleanup"],
                   help="run the lab (default) or only remove what an earlier run left behind")
    p.add_argument("--out", type=Path, default=repo / "target" / "lab", help="where results.md/json and logs go (default target/lab)")
    p.add_argument("--trace-gen", type=Path, default=repo / "target" / "release" / "trace-gen")
    p.add_argument("--trace-sink", type=Path, default=repo / "target" / "release" / "trace-sink")
    p.add_argument("--collector", type=Path, default=repo / "deploy" / "collector" / "build" / "otelcol-trace-lab")
    p.add_argument("--agent-config", type=Path, default=repo / "deploy" / "agent" / "config.yaml")
    p.add_argument("--broken-config", type=Path, default=repo / "deploy" / "overlays" / "broken-agent" / "config.yaml")
    p.add_argument("--probe-period", type=float, default=1.0, help="readiness probe period, seconds (default 1)")
    p.add_argument("--failure-threshold", type=int, default=3, help="failed probes before NotReady (default 3)")
    p.add_argument("--probe-timeout", type=float, default=2.0, help="readiness probe timeout, seconds (default 2)")
    p.add_argument("--rate", type=int, default=40, help="spans per second per generator (default 40)")
    p.add_argument("--batch", type=int, default=5, help="spans per export request (default 5)")
    p.add_argument("--within", type=int, default=20, help="trace-sink check --within, seconds (default 20)")
    p.add_argument("--hold", type=int, default=8, help="trace-sink check --hold, seconds (default 8)")
    p.add_argument("--time-limit", type=int, default=290, help="abort the whole run after this many seconds (default 290)")
    a = p.parse_args(argv)
    a.out = a.out.resolve()
    return a


def main(argv: list[str]) -> int:
    global _log_file
    a = parse_args(argv)
    if os.geteuid() != 0:
        print("lab.py: must run as root: it creates network namespaces and nftables rules", file=sys.stderr)
        return 2
    if a.command == "cleanup":
        remove_leftovers()
        return 0

    def on_signal(signum: int, _frame: Any) -> None:
        for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGALRM):
            signal.signal(s, signal.SIG_IGN)  # one is enough: the cleanup must not be interrupted
        raise Interrupted(signal.Signals(signum).name)
    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGALRM):
        signal.signal(s, on_signal)
    parent = os.getppid()
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)  # run.sh killed -> we clean up
    if os.getppid() != parent:  # it died before prctl took effect
        return 130

    for path in (a.trace_gen, a.trace_sink, a.collector):
        if not os.access(path, os.X_OK):
            print(f"lab.py: {path} is missing or not executable; build it first (deploy/lab/run.sh does)", file=sys.stderr)
            return 2
    if not a.agent_config.is_file():
        print(f"lab.py: agent config {a.agent_config} not found", file=sys.stderr)
        return 2

    a.out.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(a.out / "logs", ignore_errors=True)
    shutil.rmtree(a.out / "generators", ignore_errors=True)
    (a.out / "logs").mkdir()
    _log_file = open(a.out / "logs" / "lab.log", "w")
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    signal.alarm(a.time_limit)

    lab = Lab(a)
    scenarios: list[Scenario] = []
    acc: dict[str, list[dict[str, Any]]] = {}
    extra: list[dict[str, Any]] = []
    error: str | None = None
    try:
        log("cleaning leftovers of an earlier run, if any")
        remove_leftovers()
        log(f"network: namespaces {', '.join(LAB_NAMESPACES)}; bridge {BRIDGE} in {HUB_NS}; addresses 198.18.0.0/24; "
            f"VIPs {AGENT_SERVICE}={AGENT_VIP}, {SINK_SERVICE}={SINK_VIP}")
        setup_network()
        log("starting trace-sink in lab-sink, waiting up to 15s for /readyz")
        lab.start_sink()
        lab.controller = Controller(a.probe_period, a.failure_threshold, a.probe_timeout, lab.logs)
        lab.controller.start()
        log(f"starting one agent per node ({a.collector.name} --config {a.agent_config}); waiting up to 30s for readiness")
        for node in NODES:
            lab.start_agent(node)
        lab.controller.wait_for("every agent Ready", lambda r: all(r.values()), 30)
        log(f"starting one trace-gen per node (rate {a.rate}/s, batch {a.batch}, default endpoint), waiting up to 15s")
        lab.start_generators([])

        steps: list[tuple[str, Callable[[], Any]]] = [
            ("Scenario 1: Local policy, all agents up", lambda: scenario_1(lab, a)),
            ("Scenario 2: Local policy, agent on node-2 SIGKILLed", lambda: scenario_2(lab, a)),
            ("Scenario 3: every agent crash-looping on a broken config", lambda: scenario_3(lab, a)),
            ("Scenario 4: recovery", lambda: scenario_4(lab, a)),
            ("Scenario 5: negative control, Cluster policy", lambda: scenario_5(lab, a)),
        ]
        for title, fn in steps:
            log(f"== {title}")
            t = time.monotonic()
            out = fn()
            sc, stopped = out if isinstance(out, tuple) else (out, None)
            sc.seconds = time.monotonic() - t
            scenarios.append(sc)
            if sc.key == "4":
                acc["local"] = accounting(lab, stopped, killed={"node-2"})
                for r in acc["local"]:
                    ok = r["difference"] == 0 if r["asserted"] else r["difference"] >= 0
                    sc.expect(f"accounting {r['node']}: sink-side missing {r['sink_missing']} − generator failed "
                              f"{r['generator_failed']} = {r['difference']}"
                              + (" (asserted == 0)" if r["asserted"] else " (agent SIGKILLed: reported)"),
                              ok if r["asserted"] else True, "")
            if sc.key == "5":
                acc["cluster"] = accounting(lab, stopped, killed=set())
                for r in acc["cluster"]:
                    sc.expect(f"accounting {r['node']} (Cluster-policy generator): sink-side missing {r['sink_missing']} − "
                              f"generator failed {r['generator_failed']} = {r['difference']} (asserted == 0)",
                              r["difference"] == 0, "")

        # Under Local policy no snapshot may show a span through another node's agent.
        local = [s for s in lab.snapshots + lab.observed if s.policy == "Local"]
        bad = [(s.label, r) for s in local for r in remote_routes(s.stats, "node-2")]
        extra.append({"name": "no span of node-2 through another node's agent, in any snapshot under Local policy",
                      "ok": not bad, "detail": f"{len(local)} snapshots checked" + (f"; violations: {bad}" if bad else "")})
        bad_any = [(s.label, r) for s in local for r in remote_routes(s.stats)]
        extra.append({"name": "no remote or unattributed span at all under Local policy",
                      "ok": not bad_any and not any(s.stats.get("unattributed_spans") for s in local),
                      "detail": f"{len(local)} snapshots checked" + (f"; violations: {bad_any}" if bad_any else "")})
        if scenarios and scenarios[1].key == "2":
            scenarios[1].checks.append({"name": "no route node-2 -> another agent in any snapshot", **{k: extra[0][k] for k in ("ok", "detail")}})
    except Interrupted as exc:
        error = f"interrupted ({exc})"
        log(f"{error}; cleaning up")
    except (LabError, subprocess.TimeoutExpired, OSError) as exc:
        error = str(exc)
        log(f"ERROR: {error}")
    finally:
        signal.alarm(0)
        for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(s, signal.SIG_IGN)
        log("cleaning up: stopping processes, deleting namespaces and hosts files")
        try:
            lab.teardown()
        finally:
            passed = error is None and len(scenarios) == 5 and all(s.passed for s in scenarios) and all(c["ok"] for c in extra)
            write_report(lab, scenarios, acc, extra, passed, error, started)
    if error and error.startswith("interrupted"):
        return 130
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
