#!/usr/bin/env python3
"""Ctrl-C in the middle of a lab run leaves nothing behind (run by .ci/run as root).

    sudo tests/lab/interrupted.py [--out DIR]

Starts `deploy/lab/run.sh --attribution attribute --no-proofs` in a process
group of its own, waits until the pods run (a trace-gen container's process
exists under a real kubelet), then sends SIGINT to the whole group, as a
terminal's Ctrl-C does. Passes only if the run exits 130 within its bound and
the machine holds nothing of it, judged from the machine itself rather than
from the lab's own bookkeeping:
  - no network namespace of the lab (lab-hub, node-1..3) and no new ones
    (the pods' cni-* namespaces included);
  - no mount under the lab's directories, and the directories gone;
  - no cgroup named after the lab in any hierarchy;
  - no process that was not there before and belongs to the lab (kubelet,
    containerd, its shims, kube-proxy, the control plane, the pods' processes);
  - the kernel tunables the kubelet sets back at their values before the run;
  - the lab's lock free again (a next run can start).
Exit 0 pass, 1 something was left behind or the run did not stop as it should,
2 the run could not be started or never got its pods running.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LAB_NS = {"lab-hub", "node-1", "node-2", "node-3"}
LAB_DIRS = [Path("/run/trace-gen-sink-lab"), Path("/var/lib/trace-gen-sink-lab")]
CGROUP_NAME = "trace-gen-sink-lab"
LOCK = Path("/run/trace-gen-sink-lab.lock")
TUNABLES = ["vm/overcommit_memory", "vm/panic_on_oom", "kernel/panic", "kernel/panic_on_oops",
            "kernel/keys/root_maxkeys", "kernel/keys/root_maxbytes"]
# a lab process: its program is one of the build's (deploy/kube/build/**/bin/: the control plane,
# kubelet, kube-proxy, containerd), a shim, a pod's program, or it names the lab's directories
LAB_PROGRAMS = {"containerd-shim-runc-v2", "trace-gen", "trace-sink", "otelcol-trace-lab", "coredns", "busybox"}


def is_lab_process(cmdline: str) -> bool:
    argv0 = cmdline.split(" ", 1)[0]
    return (("/deploy/kube/build/" in argv0 and "/bin/" in argv0) or argv0.rsplit("/", 1)[-1] in LAB_PROGRAMS
            or "trace-gen-sink-lab" in cmdline or "deploy/lab/lab.py" in cmdline)


POD_RUNNING_WITHIN = 420.0  # seconds from start: builds are cached by the lab run before this one
STOP_WITHIN = 180.0  # seconds from SIGINT to exit


def namespaces() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def processes() -> dict[int, str]:
    procs: dict[int, str] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                procs[int(d.name)] = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
    return procs


def tunables() -> dict[str, str]:
    return {t: Path("/proc/sys", t).read_text().strip() for t in TUNABLES if Path("/proc/sys", t).exists()}


def lab_cgroups() -> list[str]:
    found = []
    root = Path("/sys/fs/cgroup")
    for h in [root, *(p for p in root.iterdir() if p.is_dir())]:
        if (h / CGROUP_NAME).exists():
            found.append(str(h / CGROUP_NAME))
    return found


def lab_mounts() -> list[str]:
    lines = Path("/proc/self/mountinfo").read_text().splitlines()
    return [line.split()[4] for line in lines if any(str(d) in line.split()[4] for d in LAB_DIRS)]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=REPO / "target" / "lab-interrupted")
    a = p.parse_args()
    if os.geteuid() != 0:
        print("interrupted.py: must run as root (it runs the lab)", file=sys.stderr)
        return 2
    ns_before, procs_before, tun_before = namespaces(), processes(), tunables()
    if ns_before & LAB_NS:
        print(f"interrupted.py: lab namespaces exist before the run: {sorted(ns_before & LAB_NS)}", file=sys.stderr)
        return 2
    cmd = ["bash", str(REPO / "deploy" / "lab" / "run.sh"), "--attribution", "attribute", "--no-proofs",
           "--out", str(a.out)]
    print(f"interrupted.py: {' '.join(cmd)}", flush=True)
    t0 = time.monotonic()
    run = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, process_group=0)
    lines: list[str] = []

    def pump() -> None:
        assert run.stdout
        for line in run.stdout:
            lines.append(line)
            print(f"  | {line}", end="", flush=True)
    reader = threading.Thread(target=pump, daemon=True)
    reader.start()

    def pods_running() -> bool:
        return any(cmdline.startswith("/usr/local/bin/trace-gen") for cmdline in processes().values())
    while not pods_running():
        if run.poll() is not None:
            print(f"interrupted.py: FAIL: the lab ended (exit {run.returncode}) before its pods ran", flush=True)
            return 2
        if time.monotonic() - t0 > POD_RUNNING_WITHIN:
            os.killpg(run.pid, signal.SIGINT)
            run.wait(STOP_WITHIN)
            print(f"interrupted.py: FAIL: no trace-gen pod ran within {POD_RUNNING_WITHIN:.0f}s", flush=True)
            return 2
        time.sleep(0.5)
    print(f"interrupted.py: pods run ({time.monotonic() - t0:.0f}s); SIGINT to the run's process group", flush=True)
    t_int = time.monotonic()
    os.killpg(run.pid, signal.SIGINT)
    try:
        rc = run.wait(STOP_WITHIN)
    except subprocess.TimeoutExpired:
        os.killpg(run.pid, signal.SIGKILL)
        run.wait()
        print(f"interrupted.py: FAIL: the run did not stop within {STOP_WITHIN:.0f}s of SIGINT", flush=True)
        return 1
    reader.join(10)
    stopped = time.monotonic() - t_int
    problems = []
    if rc != 130:
        problems.append(f"exit code {rc}, expected 130 (interrupted)")
    left_ns = sorted((namespaces() - ns_before) | (namespaces() & LAB_NS))
    if left_ns:
        problems.append(f"network namespaces left: {left_ns}")
    if m := lab_mounts():
        problems.append(f"mounts left: {m}")
    if d := [str(x) for x in LAB_DIRS if x.exists()]:
        problems.append(f"directories left: {d}")
    if c := lab_cgroups():
        problems.append(f"cgroups left: {c}")
    new = {pid: c for pid, c in processes().items() if pid not in procs_before and is_lab_process(c)}
    if new:
        problems.append(f"processes left: {sorted(new.items())}")
    if (tun := tunables()) != tun_before:
        problems.append(f"kernel tunables changed: before {tun_before}, after {tun}")
    with open(LOCK, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.flock(f, fcntl.LOCK_UN)
        except BlockingIOError:
            problems.append(f"the lab's lock {LOCK} is still held")
    if not any("interrupted" in line for line in lines):
        problems.append("the run's output never says it was interrupted")
    for problem in problems:
        print(f"interrupted.py: FAIL: {problem}", flush=True)
    if not problems:
        print(f"interrupted.py: PASS: SIGINT with the pods running; the run exited 130 in {stopped:.0f}s and left no "
              "namespace, mount, directory, cgroup, process or lock behind, the kernel tunables as they were",
              flush=True)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
