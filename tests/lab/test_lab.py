"""Tests of deploy/lab/lab.py's parts that need no root: one lab at a time (the
lock), the results file's shape, the command line. The lab as a whole runs in
CI (`sudo deploy/lab/run.sh`)."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "deploy" / "lab"))
import lab  # noqa: E402


def test_a_second_lab_refuses_at_once_naming_the_first(tmp_path, monkeypatch):
    lock = tmp_path / "lab.lock"
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(REPO / 'deploy' / 'lab')!r})
        import lab
        from pathlib import Path
        lab.LOCK_FILE = Path({str(lock)!r})
        f = lab.take_lock(Path('/somewhere/target/lab'))
        print('locked', flush=True)
        time.sleep(30)
    """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        monkeypatch.setattr(lab, "LOCK_FILE", lock)
        with pytest.raises(lab.LabError) as err:
            lab.take_lock(tmp_path / "out")
        msg = str(err.value)
        assert "another lab run is active" in msg and f"pid {holder.pid}" in msg and "/somewhere/target/lab" in msg
    finally:
        holder.kill()
        holder.wait()
    # the holder is gone: the lock is free again (flock dies with its process)
    f = lab.take_lock(tmp_path / "out")
    assert f"pid {__import__('os').getpid()}" in lock.read_text()
    f.close()


def step(policy: str, event: str, attribution: str, passed: bool = True, lost: int = 0) -> dict:
    """One step of trace-verify's results (schema trace-verify/results/v1)."""
    node = {"node": "node-1", "local": 100, "remote": 0, "unattributed": 0, "lost": lost, "missing": 0,
            "duplicated": 0, "generator_failed": lost, "failed_by_reason": {}, "longest_silence_ms": None}
    return {"policy": policy, "event": event, "title": event, "pass": passed, "attribution": attribution,
            "remote_spans": 0, "judgements": [{"check": "no-remote", "requires": "no span remote",
                                               "pass": passed, "detail": "why"}], "nodes": [node]}


def write_run(out: Path, mode: str, keys: list[str], attribution: str, failing: str | None = None) -> None:
    """trace-verify's results file of one run, a step per `policy/event` key."""
    steps = [step(*k.split("/"), attribution, passed=k != failing) for k in keys]
    (out / f"trace-verify-{mode}.json").write_text(json.dumps({"schema": "trace-verify/results/v1", "steps": steps}))


def lab_args(out: Path, *extra: str) -> argparse.Namespace:
    return lab.parse_args(["--out", str(out), *extra])


def test_results_file_lists_every_step_of_every_run_with_the_required_fields(tmp_path):
    """One trace-verify run per attribution mode: results.json lists every step of
    both, each with its run, its attribution and the kube-proxy rules saved at
    its verdict (by the run and the step in the file name)."""
    out = tmp_path
    a = lab_args(out, "--policy", "local", "--events", "all-up,agent-removed", "--peer-policy", "cluster",
                 "--peer-events", "all-up,agent-removed", "--kube-proxy-mode", "iptables")
    write_run(out, "attribute", ["local/all-up", "local/agent-removed"], "attribute")
    write_run(out, "peer", ["cluster/all-up", "cluster/agent-removed"], "peer")
    (out / "logs" / "rules").mkdir(parents=True)
    for mode, key in (("attribute", "local/all-up"), ("peer", "cluster/agent-removed")):
        for n in lab.NODES:
            (out / "logs" / "rules" / lab.rules_file(mode, key, n)).write_text("table ip kube-proxy {}")
    holder = argparse.Namespace(version="v1.37.2")
    running = {"etcd": True, "node-1-kube-proxy": True}
    assert lab.write_results(a, holder, "t", [("attribute", 0), ("peer", 0)], None, running) is True
    res = json.loads((out / "results.json").read_text())
    assert res["kubernetes_version"] == "v1.37.2" and res["kube_proxy_mode"] == "iptables" and res["pass"] is True
    assert res["runner"] == "trace-verify" and res["verify_exit_code"] == 0
    assert [(r["attribution"], r["pass"], r["scenarios"], r["missing_steps"]) for r in res["runs"]] == [
        ("attribute", True, 2, []), ("peer", True, 2, [])]
    for s in res["scenarios"]:
        assert {"key", "title", "pass", "verdict", "attribution", "run", "lost_spans", "remote_spans"} <= set(s)
    assert [(s["run"], s["key"], s["attribution"]) for s in res["scenarios"]] == [
        ("attribute", "local/all-up", "attribute"), ("attribute", "local/agent-removed", "attribute"),
        ("peer", "cluster/all-up", "peer"), ("peer", "cluster/agent-removed", "peer")]
    assert res["scenarios"][0]["kube_proxy_rules"] == [
        f"logs/rules/attribute.local.all-up.{n}.txt" for n in lab.NODES]
    assert res["scenarios"][1]["kube_proxy_rules"] == []
    assert res["scenarios"][3]["kube_proxy_rules"] == [
        f"logs/rules/peer.cluster.agent-removed.{n}.txt" for n in lab.NODES]


def test_every_cell_of_the_matrix_must_have_run(tmp_path):
    """The default attribute run asks for the whole matrix: a results file
    without one of its 21 cells fails the lab, naming the cell; with every cell
    it passes."""
    a = lab_args(tmp_path, "--attribution", "attribute")
    every = lab.cells(a, "attribute")
    assert len(every) == 21 and every[0] == "local/all-up" and every[-1] == "cluster/rolling-max-surge"
    write_run(tmp_path, "attribute", every, "attribute")
    assert lab.write_results(a, argparse.Namespace(version="v"), "t", [("attribute", 0)], None, {"etcd": True})
    write_run(tmp_path, "attribute", [c for c in every if c != "prefer-same-node/rolling-max-surge"], "attribute")
    assert not lab.write_results(a, argparse.Namespace(version="v"), "t", [("attribute", 0)], None, {"etcd": True})
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["runs"][0]["missing_steps"] == ["prefer-same-node/rolling-max-surge"]


def test_the_lab_knows_trace_verifys_policies_and_events():
    """lab.py's names are trace-verify's: those of a results file it wrote (the
    committed lab matrix lists every policy and event in its options)."""
    doc = json.loads((REPO / "verify" / "results" / "lab-matrix.json").read_text())
    assert list(lab.POLICIES) == doc["options"]["policies"]
    assert list(lab.EVENTS) == doc["options"]["events"]


@pytest.mark.parametrize("case", ["second run failed", "second run missing", "second run no exit code"])
def test_results_pass_only_when_every_requested_run_passed(tmp_path, case):
    a = lab_args(tmp_path, "--policy", "local", "--events", "all-up", "--peer-policy", "local",
                 "--peer-events", "all-up")
    write_run(tmp_path, "attribute", ["local/all-up"], "attribute")
    write_run(tmp_path, "peer", ["local/all-up"], "peer",
              failing="local/all-up" if case == "second run failed" else None)
    runs = {"second run failed": [("attribute", 0), ("peer", 1)], "second run missing": [("attribute", 0)],
            "second run no exit code": [("attribute", 0), ("peer", None)]}[case]
    assert lab.write_results(a, argparse.Namespace(version="v"), "t", runs, None, {"etcd": True}) is False
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["pass"] is False
    assert res["verify_exit_code"] == {"second run failed": 1, "second run missing": 0,
                                       "second run no exit code": None}[case]


@pytest.mark.parametrize("case", ["component down", "verify failed", "no steps", "error"])
def test_results_never_pass_on_what_was_not_seen(tmp_path, case):
    """A verdict needs trace-verify's exit 0, every step as promised, and every real
    component running at the verdict."""
    a = lab_args(tmp_path, "--attribution", "attribute", "--policy", "local", "--events", "all-up")
    write_run(tmp_path, "attribute", [] if case == "no steps" else ["local/all-up"], "attribute")
    running = {"etcd": True, "kube-apiserver": case != "component down"}
    rc = 1 if case == "verify failed" else 0
    err = "boom" if case == "error" else None
    assert lab.write_results(a, argparse.Namespace(version="v"), "t", [("attribute", rc)], err, running) is False
    assert json.loads((tmp_path / "results.json").read_text())["pass"] is False


def test_command_line():
    d = lab.parse_args([])
    assert (d.command, d.kube_proxy_mode, d.attribution, d.no_proofs) == ("run", "nftables", ["attribute", "peer"],
                                                                        False)
    assert (d.policy, d.events, d.peer_policy, d.peer_events) == ("all", "all", "local,cluster",
                                                                  "all-up,agent-removed")
    assert lab.parse_args(["--attribution", "peer"]).attribution == ["peer"]
    for bad in (["run", "--kube-proxy-mode", "ipvs"], ["--attribution", "stamp"], ["--attribution", "peer,peer"],
                ["--attribution", ""], ["dump-rules"], ["--runner", "verify.sh"]):
        with pytest.raises(SystemExit):
            lab.parse_args(bad)


def test_addresses_stay_in_the_lab_ranges():
    import ipaddress
    lab_net = ipaddress.ip_network("198.18.0.0/15")
    for addr in [lab.HUB_IP, *lab.NODE_IP.values(), lab.KUBERNETES_SVC_IP, lab.DNS_IP]:
        assert ipaddress.ip_address(addr) in lab_net
    for net in [lab.CLUSTER_CIDR, lab.SERVICE_CIDR, *lab.POD_CIDR.values()]:
        assert ipaddress.ip_network(net).subnet_of(lab_net)
    assert all(ipaddress.ip_network(c).subnet_of(ipaddress.ip_network(lab.CLUSTER_CIDR)) for c in lab.POD_CIDR.values())
    assert ipaddress.ip_address(lab.DNS_IP) in ipaddress.ip_network(lab.SERVICE_CIDR)


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root (CI runs as root)")
def test_files_the_lab_writes_under_sudo_are_handed_to_the_invoking_user(tmp_path):
    """Under sudo, run.sh gives target/lab back to the user who ran sudo
    (SUDO_UID/SUDO_GID), so a later build or `rm` as that user works; run as
    root without sudo, it leaves ownership alone."""
    out = tmp_path / "lab"
    (out / "logs" / "rules").mkdir(parents=True)
    (out / "results.json").write_text("{}")
    (out / "logs" / "rules" / "node-1.nft").write_text("table ip kube-proxy {}")
    # run.sh's cleanup calls the shared give_back (deploy/lib/toolchain.sh) on target/lab.
    assert 'give_back "$out"' in (REPO / "deploy" / "lab" / "run.sh").read_text()
    script = f'source "{REPO / "deploy" / "lib" / "toolchain.sh"}"\ngive_back "$out"\n'
    env = {"PATH": os.environ["PATH"], "out": str(out), "SUDO_UID": "4242", "SUDO_GID": "4343"}
    subprocess.run(["bash", "-c", f'out="$out"\n{script}'], env=env, check=True)
    for path in [out, out / "results.json", out / "logs", out / "logs" / "rules" / "node-1.nft"]:
        st = path.stat()
        assert (st.st_uid, st.st_gid) == (4242, 4343), path
    # root without sudo: nothing changes hands
    (out / "new.json").write_text("{}")
    env_root = {"PATH": os.environ["PATH"], "out": str(out)}
    subprocess.run(["bash", "-c", f'out="$out"\n{script}'], env=env_root, check=True)
    assert (out / "new.json").stat().st_uid == 0


def test_trace_verify_command_has_the_lab_windows_and_the_attribution():
    a = lab.parse_args(["run", "--policy", "local,prefer-same-node", "--events", "all-up,rolling-max-surge",
                        "--out", "/tmp/x"])
    cmd = lab.trace_verify_command(a, "attribute")
    assert cmd[:4] == ["ip", "netns", "exec", lab.HUB_NS] and cmd[4] == str(lab.TRACE_VERIFY)
    args = dict(zip(cmd[5::1], cmd[6::1]))
    assert args["--policy"] == "local,prefer-same-node" and args["--events"] == "all-up,rolling-max-surge"
    assert args["--window"] == "10s" and args["--settle"] == "3s"
    assert args["--results-json"] == "/tmp/x/trace-verify-attribute.json"
    assert "--peer-attribution" not in cmd
    peer = lab.trace_verify_command(a, "peer")
    pargs = dict(zip(peer[5::1], peer[6::1]))
    assert pargs["--policy"] == "local,cluster" and pargs["--events"] == "all-up,agent-removed"
    assert pargs["--results-json"] == "/tmp/x/trace-verify-peer.json" and peer[-1] == "--peer-attribution"


def test_verdicts_are_read_from_trace_verifys_progress():
    """A verdict line names its step (rules are saved there); the real components
    are recorded at the all-up and recovered verdicts (its summary comes after its
    clean-up), or at its first verdict when neither was run; never at a progress line."""
    tv = "[verify   23.8s] local / all-up: as promised in 13s (300 spans, 0 remote, 0 lost)\n"
    assert lab.verdict_of(tv) == "local/all-up"
    assert lab.verdict_of(tv.replace("local / all-up", "prefer-same-node / rolling-max-surge").replace(
        "as promised", "PROMISE BROKEN")) == "prefer-same-node/rolling-max-surge"
    assert lab.verdict_of("[verify   22.5s] local / all-up: all agents up\n") is None
    assert lab.verdict_of("RESULT: every step as promised\n") is None
    assert lab.verdict_of("[verify    1.0s] local / terminating: the usual graceful shutdown again: applying 12 "
                          "objects\n") is None
    v = lab.verdict_line
    assert v(tv, True)
    assert v(tv.replace("as promised", "PROMISE BROKEN"), True)
    assert v(tv.replace("all-up", "recovered"), True)
    crash = tv.replace("all-up", "crash-loop")
    assert v(crash, False) and not v(crash, True)
    assert not v("RESULT: every step as promised\n", False)


def test_a_signal_during_a_wait_is_not_swallowed():
    """wait_until retries a check that raises an error, but a signal's Interrupted
    (raised by the handler wherever the main thread is) goes through at once."""
    calls = []

    def check() -> bool:
        calls.append(1)
        if len(calls) == 1:
            raise OSError("not yet")
        raise lab.Interrupted("SIGTERM")
    with pytest.raises(lab.Interrupted):
        lab.wait_until("something", check, timeout=5, interval=0.01)
    assert len(calls) == 2, "the first error was retried, the signal was not"

