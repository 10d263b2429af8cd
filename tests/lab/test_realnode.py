"""Tests of deploy/lab/realnode.py's parts that need no root: the containerd and
kubelet configuration per node (the settings this machine kind needs), image
names as containerd's CRI stores them, the cgroups made and removed depth-first.
The nodes as a whole run in the lab (`sudo deploy/lab/run.sh`)."""

from __future__ import annotations

import argparse
import json
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "deploy" / "lab"))
import lab  # noqa: E402
import realnode  # noqa: E402


@pytest.mark.parametrize("ref,want", [
    ("trace-gen:dev", "docker.io/library/trace-gen:dev"),
    ("trace-sink", "docker.io/library/trace-sink:latest"),
    ("otel/opentelemetry-collector-contrib:0.165.0", "docker.io/otel/opentelemetry-collector-contrib:0.165.0"),
    ("registry.k8s.io/coredns/coredns:v1.15.0", "registry.k8s.io/coredns/coredns:v1.15.0"),
    ("localhost/pause:lab", "localhost/pause:lab"),
    ("localhost:5000/x/y", "localhost:5000/x/y:latest"),
    ("ghcr.io/acme/trace-gen@sha256:" + "a" * 64, "ghcr.io/acme/trace-gen@sha256:" + "a" * 64),
])
def test_image_names_as_the_cri_stores_them(ref, want):
    assert realnode.normalize(ref) == want


@pytest.fixture
def run_dirs(tmp_path, monkeypatch):
    monkeypatch.setattr(realnode, "RUN_DIR", tmp_path / "run")
    monkeypatch.setattr(realnode, "DISK_DIR", tmp_path / "disk")
    return tmp_path


def test_containerd_config_per_node_has_what_this_machine_kind_needs(run_dirs):
    cfg, sock = realnode.containerd_config("node-2", "/usr/lib/cni", "localhost/pause:lab")
    realnode.cni_config("node-2", "198.18.130.0/24")
    c = tomllib.loads(cfg.read_text())
    run, disk = run_dirs / "run" / "node-2", run_dirs / "disk" / "node-2"
    assert c["version"] == 4 and c["root"] == str(disk / "containerd") and c["state"] == str(run / "containerd")
    servers = {k.rsplit(".", 1)[1]: v for k, v in c["plugins"].items() if k.startswith("io.containerd.server.v1.")}
    assert servers["grpc"]["address"] == str(sock) and sock.parent == run / "containerd"
    # every socket of its own: the defaults under /run/containerd and /var/run/nri are one per host
    assert servers["ttrpc"]["address"] == f"{sock}.ttrpc"
    assert servers["metrics"]["address"] == "" and servers["debug"]["address"] == ""
    nri = c["plugins"]["io.containerd.nri.v1.nri"]
    assert nri["socket_path"].startswith(str(run)) and nri["plugin_path"].startswith(str(run))
    assert nri["plugin_config_path"].startswith(str(run))
    assert "grpc" not in c and "ttrpc" not in c  # version 3's server sections: migrated silently if left
    assert c["plugins"]["io.containerd.internal.v1.opt"]["path"].startswith(str(disk))
    images = c["plugins"]["io.containerd.cri.v1.images"]
    assert images["snapshotter"] == "overlayfs"
    assert images["pinned_images"] == {"sandbox": "localhost/pause:lab"}
    cri = c["plugins"]["io.containerd.cri.v1.runtime"]
    assert cri["restrict_oom_score_adj"] is True  # root has no CAP_SYS_RESOURCE here
    assert cri["netns_mounts_under_state_dir"] is True
    runc = cri["containerd"]["runtimes"]["runc"]
    assert cri["containerd"]["default_runtime_name"] == "runc"
    assert runc["runtime_type"] == "io.containerd.runc.v2"
    assert runc["options"]["SystemdCgroup"] is False and runc["options"]["Root"].startswith(str(run))
    assert cri["cni"] == {"bin_dirs": ["/usr/lib/cni"], "conf_dir": str(run / "cni"), "max_conf_num": 1}
    # nothing of containerd 1.x's layout left (containerd 2 would migrate it silently)
    assert "io.containerd.grpc.v1.cri" not in c["plugins"]
    net = json.loads((run / "cni" / "10-lab-pods.conflist").read_text())
    (ptp,) = net["plugins"]
    assert ptp["type"] == "ptp" and ptp["ipMasq"] is False
    assert ptp["ipam"]["type"] == "host-local" and ptp["ipam"]["ranges"] == [[{"subnet": "198.18.130.0/24"}]]


def test_kubelet_config_per_node(run_dirs):
    (run_dirs / "run" / "node-1").mkdir(parents=True)
    path = realnode.kubelet_config("node-1", "198.18.0.11", Path("/x/containerd.sock"), Path("/pki"), "198.19.0.10",
                                   "198.18.129.0/24")
    k = json.loads(path.read_text())
    assert k["kind"] == "KubeletConfiguration" and k["address"] == "198.18.0.11"
    assert k["cgroupRoot"] == "/trace-gen-sink-lab/node-1" and k["cgroupDriver"] == "cgroupfs"
    assert k["failSwapOn"] is False and k["failCgroupV1"] is False
    assert k["enforceNodeAllocatable"] == [] and k["localStorageCapacityIsolation"] is False
    assert k["containerRuntimeEndpoint"] == "unix:///x/containerd.sock"
    assert k["clusterDNS"] == ["198.19.0.10"] and k["clusterDomain"] == "cluster.local"
    assert k["podLogsDir"].startswith(str(run_dirs / "disk" / "node-1"))
    assert k["authentication"]["x509"]["clientCAFile"] == "/pki/ca.crt"
    assert k["authentication"]["anonymous"]["enabled"] is False


def test_cgroups_made_in_every_hierarchy_with_cpuset_and_removed_depth_first(tmp_path, monkeypatch):
    hier = {name: tmp_path / name for name in ("cpuset", "memory", "unified")}
    for h in hier.values():
        h.mkdir()
    (hier["cpuset"] / "cpuset.cpus").write_text("0-1\n")
    (hier["cpuset"] / "cpuset.mems").write_text("0\n")
    monkeypatch.setattr(realnode, "cgroup_hierarchies", lambda: list(hier.values()))

    real_mkdir = Path.mkdir

    def mkdir(self: Path, *a, **kw):  # a cgroup fs creates the control files of a new cgroup itself
        real_mkdir(self, *a, **kw)
        if self.parent.name != "" and (self.parent / "cpuset.cpus").exists() and not (self / "cpuset.cpus").exists():
            (self / "cpuset.cpus").write_text("")
            (self / "cpuset.mems").write_text("")
    monkeypatch.setattr(Path, "mkdir", mkdir)

    assert realnode.make_cgroup("node-1") == "/trace-gen-sink-lab/node-1"
    for h in hier.values():
        assert (h / "trace-gen-sink-lab" / "node-1").is_dir()
    assert (hier["cpuset"] / "trace-gen-sink-lab" / "node-1" / "cpuset.cpus").read_text() == "0-1\n"
    assert (hier["cpuset"] / "trace-gen-sink-lab" / "node-1" / "cpuset.mems").read_text() == "0\n"

    # a cgroup fs removes a cgroup's control files with it: model that, then rmdir depth-first
    for f in (hier["cpuset"] / "trace-gen-sink-lab").rglob("cpuset.*"):
        f.unlink()
    (hier["memory"] / "trace-gen-sink-lab" / "node-1" / "kubepods" / "burstable").mkdir(parents=True)
    assert realnode.remove_cgroups() == []
    for h in hier.values():
        assert not (h / "trace-gen-sink-lab").exists()


def test_kernel_tunables_the_kubelet_changes_are_restored(tmp_path, monkeypatch):
    proc_sys = tmp_path / "proc-sys"
    (proc_sys / "vm").mkdir(parents=True)
    (proc_sys / "vm" / "overcommit_memory").write_text("0\n")
    monkeypatch.setattr(realnode, "KERNEL_TUNABLES", ["vm/overcommit_memory"])
    monkeypatch.setattr(realnode, "TUNABLES_SAVED", tmp_path / "saved.json")
    monkeypatch.setattr(realnode, "PROC_SYS", proc_sys)
    realnode.save_kernel_tunables()
    (proc_sys / "vm" / "overcommit_memory").write_text("1\n")  # what the kubelet sets
    realnode.save_kernel_tunables()  # a second save (a later run after a crash) keeps the host's value
    realnode.restore_kernel_tunables()
    assert (proc_sys / "vm" / "overcommit_memory").read_text().strip() == "0"
    assert not (tmp_path / "saved.json").exists()


@pytest.mark.parametrize("proof_passed", [True, False])
def test_results_pass_only_if_every_kubelet_proof_passed(tmp_path, proof_passed):
    steps = [{"policy": "local", "event": "all-up", "title": "t", "pass": True, "judgements": [], "nodes": []}]
    (tmp_path / "trace-verify-attribute.json").write_text(json.dumps({"steps": steps}))
    a = lab.parse_args(["--out", str(tmp_path), "--attribution", "attribute", "--policy", "local", "--events",
                        "all-up"])
    holder = argparse.Namespace(version="v1.34.2", proofs=[
        {"name": "root-refused", "pass": True, "expected": "x", "detail": "y"},
        {"name": "liveness-restart", "pass": proof_passed, "expected": "x", "detail": "y"}])
    assert lab.write_results(a, holder, "t", [("attribute", 0)], None, {"etcd": True}) is proof_passed
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["pass"] is proof_passed and [p["name"] for p in res["kubelet_proofs"]] == ["root-refused",
                                                                                         "liveness-restart"]
    assert res["kubelet"] == "real"
