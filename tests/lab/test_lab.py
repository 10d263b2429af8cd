"""Tests of deploy/lab/lab.py's parts that need no root: one lab at a time (the
lock), the results file's shape, the command line. The lab as a whole runs in
CI (`sudo deploy/lab/run.sh`)."""

from __future__ import annotations

import argparse
import json
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


def test_results_file_lists_every_scenario_with_the_required_fields(tmp_path):
    out = tmp_path
    steps = [{"step": i + 1, "key": k, "title": k, "pass": True, "verdict": "PASS", "explanation": "why",
              "attribution": None} for i, k in enumerate(["all-up", "agent-removed"])]
    (out / "verify.json").write_text(json.dumps({"steps": steps}))
    (out / "logs" / "rules").mkdir(parents=True)
    (out / "logs" / "rules" / "all-up.check.node-1.txt").write_text("table ip kube-proxy {}")
    a = argparse.Namespace(out=out, kube_proxy_mode="iptables")
    holder = argparse.Namespace(version="v1.34.2")
    running = {"etcd": True, "node-1-kube-proxy": True}
    assert lab.write_results(a, holder, "t", 0, None, running) is True
    res = json.loads((out / "results.json").read_text())
    assert res["kubernetes_version"] == "v1.34.2" and res["kube_proxy_mode"] == "iptables" and res["pass"] is True
    for s in res["scenarios"]:
        assert {"key", "title", "pass", "verdict", "attribution"} <= set(s)
    assert res["scenarios"][0]["kube_proxy_rules"] == ["logs/rules/all-up.check.node-1.txt"]
    assert res["scenarios"][1]["kube_proxy_rules"] == []


@pytest.mark.parametrize("case", ["component down", "verify failed", "no scenarios", "error"])
def test_results_never_pass_on_what_was_not_seen(tmp_path, case):
    """A verdict needs verify.sh's exit 0, every scenario passed, and every real component
    running at the verdict."""
    steps = [] if case == "no scenarios" else [{"step": 1, "key": "all-up", "title": "t", "pass": True, "verdict": "PASS"}]
    (tmp_path / "verify.json").write_text(json.dumps({"steps": steps}))
    a = argparse.Namespace(out=tmp_path, kube_proxy_mode="nftables")
    running = {"etcd": True, "kube-apiserver": case != "component down"}
    rc = 1 if case == "verify failed" else 0
    err = "boom" if case == "error" else None
    assert lab.write_results(a, argparse.Namespace(version="v"), "t", rc, err, running) is False
    assert json.loads((tmp_path / "results.json").read_text())["pass"] is False


def test_command_line_and_hook_arguments():
    a = lab.parse_args(["dump-rules", "--out", "/tmp/x", "--kube-proxy-mode", "iptables", "terminating", "check"])
    assert (a.command, a.rest, a.kube_proxy_mode, str(a.out)) == ("dump-rules", ["terminating", "check"], "iptables", "/tmp/x")
    d = lab.parse_args([])
    assert (d.command, d.kube_proxy_mode, d.backoff_base) == ("run", "nftables", 10.0)
    with pytest.raises(SystemExit):
        lab.parse_args(["run", "--kube-proxy-mode", "ipvs"])


def test_addresses_stay_in_the_lab_ranges():
    import ipaddress
    lab_net = ipaddress.ip_network("198.18.0.0/15")
    for addr in [lab.HUB_IP, *lab.NODE_IP.values(), lab.KUBERNETES_SVC_IP, lab.DNS_IP]:
        assert ipaddress.ip_address(addr) in lab_net
    for net in [lab.CLUSTER_CIDR, lab.SERVICE_CIDR, *lab.POD_CIDR.values()]:
        assert ipaddress.ip_network(net).subnet_of(lab_net)
    assert all(ipaddress.ip_network(c).subnet_of(ipaddress.ip_network(lab.CLUSTER_CIDR)) for c in lab.POD_CIDR.values())
    assert ipaddress.ip_address(lab.DNS_IP) in ipaddress.ip_network(lab.SERVICE_CIDR)
