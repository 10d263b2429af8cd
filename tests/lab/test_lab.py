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


def write_verify_json(out, mode, attribution, passed=True):
    steps = [{"step": i + 1, "key": k, "title": k, "pass": passed, "verdict": "PASS" if passed else "FAIL",
              "explanation": "why", "attribution": attribution}
             for i, k in enumerate(["all-up", "agent-removed"])]
    (out / f"verify-{mode}.json").write_text(json.dumps({"steps": steps}))


def test_results_file_lists_every_scenario_of_every_run_with_the_required_fields(tmp_path):
    """One verify.sh run per attribution mode: results.json lists every
    scenario of both, each with its run, its attribution and the kube-proxy
    rules saved at its check (by the run's file name prefix)."""
    out = tmp_path
    write_verify_json(out, "attribute", "attribute")
    write_verify_json(out, "peer", "peer")
    (out / "logs" / "rules").mkdir(parents=True)
    (out / "logs" / "rules" / "attribute.all-up.check.node-1.txt").write_text("table ip kube-proxy {}")
    (out / "logs" / "rules" / "peer.agent-removed.check.node-1.txt").write_text("table ip kube-proxy {}")
    a = argparse.Namespace(out=out, kube_proxy_mode="iptables", attribution=["attribute", "peer"])
    holder = argparse.Namespace(version="v1.34.2")
    running = {"etcd": True, "node-1-kube-proxy": True}
    assert lab.write_results(a, holder, "t", [("attribute", 0), ("peer", 0)], None, running) is True
    res = json.loads((out / "results.json").read_text())
    assert res["kubernetes_version"] == "v1.34.2" and res["kube_proxy_mode"] == "iptables" and res["pass"] is True
    assert res["verify_exit_code"] == 0
    assert [(r["attribution"], r["pass"], r["scenarios"]) for r in res["runs"]] == [("attribute", True, 2),
                                                                                   ("peer", True, 2)]
    for s in res["scenarios"]:
        assert {"key", "title", "pass", "verdict", "attribution", "run"} <= set(s)
    assert [(s["run"], s["attribution"]) for s in res["scenarios"]] == [("attribute", "attribute")] * 2 + [
        ("peer", "peer")] * 2
    assert res["scenarios"][0]["kube_proxy_rules"] == ["logs/rules/attribute.all-up.check.node-1.txt"]
    assert res["scenarios"][1]["kube_proxy_rules"] == []
    assert res["scenarios"][3]["kube_proxy_rules"] == ["logs/rules/peer.agent-removed.check.node-1.txt"]


@pytest.mark.parametrize("case", ["second run failed", "second run missing", "second run no exit code"])
def test_results_pass_only_when_every_requested_run_passed(tmp_path, case):
    write_verify_json(tmp_path, "attribute", "attribute")
    write_verify_json(tmp_path, "peer", "both", passed=case != "second run failed")
    a = argparse.Namespace(out=tmp_path, kube_proxy_mode="nftables", attribution=["attribute", "peer"])
    runs = {"second run failed": [("attribute", 0), ("peer", 1)], "second run missing": [("attribute", 0)],
            "second run no exit code": [("attribute", 0), ("peer", None)]}[case]
    assert lab.write_results(a, argparse.Namespace(version="v"), "t", runs, None, {"etcd": True}) is False
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["pass"] is False
    assert res["verify_exit_code"] == {"second run failed": 1, "second run missing": 0,
                                       "second run no exit code": None}[case]


@pytest.mark.parametrize("case", ["component down", "verify failed", "no scenarios", "error"])
def test_results_never_pass_on_what_was_not_seen(tmp_path, case):
    """A verdict needs verify.sh's exit 0, every scenario passed, and every real component
    running at the verdict."""
    steps = [] if case == "no scenarios" else [{"step": 1, "key": "all-up", "title": "t", "pass": True, "verdict": "PASS"}]
    (tmp_path / "verify-attribute.json").write_text(json.dumps({"steps": steps}))
    a = argparse.Namespace(out=tmp_path, kube_proxy_mode="nftables", attribution=["attribute"])
    running = {"etcd": True, "kube-apiserver": case != "component down"}
    rc = 1 if case == "verify failed" else 0
    err = "boom" if case == "error" else None
    assert lab.write_results(a, argparse.Namespace(version="v"), "t", [("attribute", rc)], err, running) is False
    assert json.loads((tmp_path / "results.json").read_text())["pass"] is False


def test_command_line_and_hook_arguments():
    a = lab.parse_args(["dump-rules", "--out", "/tmp/x", "--kube-proxy-mode", "iptables", "terminating", "check"])
    assert (a.command, a.rest, a.kube_proxy_mode, str(a.out)) == ("dump-rules", ["terminating", "check"], "iptables", "/tmp/x")
    d = lab.parse_args([])
    assert (d.command, d.kube_proxy_mode, d.attribution, d.no_proofs) == ("run", "nftables", ["attribute", "peer"],
                                                                        False)
    assert lab.parse_args(["--attribution", "peer"]).attribution == ["peer"]
    h = lab.parse_args(["dump-rules", "--prefix", "peer.", "all-up", "check"])
    assert (h.prefix, h.rest) == ("peer.", ["all-up", "check"])
    for bad in (["run", "--kube-proxy-mode", "ipvs"], ["--attribution", "stamp"], ["--attribution", "peer,peer"],
                ["--attribution", ""]):
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


def trace_verify_doc(second_passes: bool = True) -> dict:
    """The shape of trace-verify's results (schema trace-verify/results/v1), two steps."""
    def node(name, local, remote, lost):
        return {"node": name, "local": local, "remote": remote, "unattributed": 0, "lost": lost, "missing": 0,
                "duplicated": 0, "generator_failed": lost, "failed_by_reason": {}, "longest_silence_ms": None}
    return {"schema": "trace-verify/results/v1", "pass": second_passes, "exit_code": 0 if second_passes else 1,
            "steps": [
                {"policy": "local", "event": "all-up", "title": "all agents up", "pass": True, "attribution": "peer",
                 "remote_spans": 0, "judgements": [{"check": "no-remote", "requires": "no span reaches another "
                                                    "node's agent", "pass": True, "detail": "300 spans"}],
                 "nodes": [node("node-1", 100, 0, 0), node("node-2", 100, 0, 0)]},
                {"policy": "prefer-same-node", "event": "agent-removed", "title": "agent removed from node",
                 "pass": second_passes, "attribution": "peer", "remote_spans": 100,
                 "judgements": [{"check": "no-loss", "requires": "the node without a ready local agent loses no span",
                                 "pass": second_passes, "detail": "7 lost"}],
                 "nodes": [node("node-1", 0, 100, 3), node("node-2", 100, 0, 4)]},
            ]}


@pytest.mark.parametrize("second_passes", [True, False])
def test_results_of_the_trace_verify_runner(tmp_path, second_passes):
    """--runner trace-verify: its steps become the scenarios (key policy/event, the
    judgements as the explanation, lost spans summed over the nodes); the run
    passes only with exit 0 and every step as promised."""
    (tmp_path / "trace-verify-peer.json").write_text(json.dumps(trace_verify_doc(second_passes)))
    a = argparse.Namespace(out=tmp_path, kube_proxy_mode="nftables", attribution=["peer"], runner="trace-verify")
    rc = 0 if second_passes else 1
    assert lab.write_results(a, argparse.Namespace(version="v1.37.2"), "t", [("peer", rc)], None,
                             {"etcd": True}) is second_passes
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["runner"] == "trace-verify" and res["pass"] is second_passes
    assert [(s["key"], s["pass"], s["lost_spans"], s["remote_spans"]) for s in res["scenarios"]] == [
        ("local/all-up", True, 0, 0), ("prefer-same-node/agent-removed", second_passes, 7, 100)]
    assert res["scenarios"][1]["explanation"].startswith("PASS" if second_passes else "FAIL")
    assert res["runs"] == [{"attribution": "peer", "verify_exit_code": rc, "scenarios": 2, "pass": second_passes}]


def test_trace_verify_runner_without_its_results_never_passes(tmp_path):
    a = argparse.Namespace(out=tmp_path, kube_proxy_mode="nftables", attribution=["peer"], runner="trace-verify")
    assert lab.write_results(a, argparse.Namespace(version="v"), "t", [("peer", 0)], None, {"etcd": True}) is False


def test_trace_verify_command_has_the_lab_windows_and_the_attribution():
    a = lab.parse_args(["run", "--runner", "trace-verify", "--policy", "local,prefer-same-node", "--events",
                        "all-up,rolling-max-surge", "--out", "/tmp/x"])
    cmd = lab.trace_verify_command(a, "peer")
    assert cmd[:4] == ["ip", "netns", "exec", lab.HUB_NS] and cmd[4] == str(lab.TRACE_VERIFY)
    args = dict(zip(cmd[5::1], cmd[6::1]))
    assert args["--policy"] == "local,prefer-same-node" and args["--events"] == "all-up,rolling-max-surge"
    assert args["--window"] == "10s" and args["--settle"] == "3s"
    assert args["--results-json"] == "/tmp/x/trace-verify-peer.json" and cmd[-1] == "--peer-attribution"
    assert "--peer-attribution" not in lab.trace_verify_command(a, "attribute")


def test_components_are_recorded_at_the_runners_verdicts():
    """The real components are recorded where every pod should run: verify.sh's result
    table; trace-verify's all-up and recovered verdicts (its summary comes after its
    clean-up), or its first verdict when neither was run; never at a progress line."""
    v = lab.verdict_line
    assert v("verify.sh", "RESULT: every step came out as expected\n", True)
    assert v("verify.sh", "Node-local verification, context lab, istio=0\n", False)
    assert not v("verify.sh", "[verify 09:15:22] step 2: the agent is removed\n", False)
    tv = "[verify   23.8s] local / all-up: as promised in 13s (300 spans, 0 remote, 0 lost)\n"
    assert v("trace-verify", tv, True)
    assert v("trace-verify", tv.replace("as promised", "PROMISE BROKEN"), True)
    assert v("trace-verify", tv.replace("all-up", "recovered"), True)
    crash = tv.replace("all-up", "crash-loop")
    assert v("trace-verify", crash, False) and not v("trace-verify", crash, True)
    assert not v("trace-verify", "RESULT: every step as promised\n", False)
    assert not v("trace-verify", "[verify   22.5s] local / all-up: all agents up\n", False)
