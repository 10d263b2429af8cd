"""The lab's nodes as real Kubernetes nodes: per node, in the node's network
namespace, its own containerd (2.x, built from its Go modules by
deploy/kube/build.sh, with Debian's runc) and the real
kubelet of the control plane's release, registered under the node's own
identity (system:node:<name>: the Node authorizer and NodeRestriction apply).

    used by deploy/lab/lab.py

Per node NODE (all paths removed by `cleanup`):

  /run/trace-gen-sink-lab/NODE/      containerd state + socket, runc state,
                                     kubelet and containerd configuration, CNI conf
  /var/lib/trace-gen-sink-lab/NODE/  containerd root (images, snapshots) and the
                                     kubelet's --root-dir: on disk, the images
                                     are not kept in memory
  cgroup /trace-gen-sink-lab/NODE    the kubelet's cgroupRoot, created in every
                                     cgroup v1 hierarchy (cpuset copied from the parent)
  LOGS/NODE-containerd.log, LOGS/NODE-kubelet.log, LOGS/NODE/pods (the
  containers' logs, copied from the kubelet's podLogsDir at cleanup)

Why containerd 2.x built from its Go modules and not Debian's 1.6 package:
containerd 1.x lacks the CRI RuntimeConfig call through which a current
kubelet learns the cgroup driver, Kubernetes deprecated containerd 1.x
(v1.34/v1.35) and a node of a supported release runs containerd 2.x. It is
built once by deploy/kube/build.sh (pinned in deploy/kube/versions.env, cached),
without cgo (overlayfs only). runc is Debian's: the shim only execs it.

Each containerd keeps everything of its own: root, state, socket, runc root,
the pods' network namespaces (netns_mounts_under_state_dir), CNI conf dir and
`opt` directory, so the three do not see each other's containers.

Host-wide things a kubelet touches, and what the lab does about them:
  - kernel tunables (vm.overcommit_memory, vm.panic_on_oom, kernel.panic,
    kernel.panic_on_oops, kernel.keys.root_max*): the kubelet sets them at
    start; their values before the lab are saved and written back at cleanup;
  - /var/log/containers: the kubelet's symlinks to the pod logs (a fixed path);
    the ones pointing into the lab's logs are removed at cleanup.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any, Callable

RUN_DIR = Path("/run/trace-gen-sink-lab")
DISK_DIR = Path("/var/lib/trace-gen-sink-lab")
CGROUP_PARENT = "trace-gen-sink-lab"
CGROUP_FS = Path("/sys/fs/cgroup")
CONTAINER_LOG_LINKS = Path("/var/log/containers")
# the kubelet's device-plugin socket and checkpoint: a fixed path, not under --root-dir
DEVICE_PLUGINS = Path("/var/lib/kubelet/device-plugins")
SHIM_SOCKETS = Path("/run/containerd/s")
KERNEL_TUNABLES = ["vm/overcommit_memory", "vm/panic_on_oom", "kernel/panic", "kernel/panic_on_oops",
                   "kernel/keys/root_maxkeys", "kernel/keys/root_maxbytes"]
PROC_SYS = Path("/proc/sys")
TUNABLES_SAVED = Path("/run/trace-gen-sink-lab.sysctl.json")  # outside RUN_DIR: it must outlive a failed run's rmtree


def run(cmd: list[str], check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if check and res.returncode != 0:
        raise RuntimeError(f"failed ({res.returncode}): {' '.join(cmd)}\n{res.stderr.strip()}")
    return res


# --------------------------------------------------------------------------- cgroups
def cgroup_hierarchies() -> list[Path]:
    """Mount points of every cgroup hierarchy (v1 controllers, named ones and the
    v2 `unified` of a hybrid layout), from /proc/self/mountinfo."""
    found: list[Path] = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fstype = right.split()[0] if right else ""
            if fstype in ("cgroup", "cgroup2"):
                mnt = Path(left.split()[4])
                if mnt not in found:
                    found.append(mnt)
    return found


def make_cgroup(node: str) -> str:
    """The kubelet's cgroupRoot, /trace-gen-sink-lab/NODE, in every v1 hierarchy
    (the kubelet refuses a cgroupRoot missing from one of them); a new cpuset
    cgroup has no CPUs or memory nodes until they are copied from its parent."""
    for h in cgroup_hierarchies():
        for rel in (CGROUP_PARENT, f"{CGROUP_PARENT}/{node}"):
            d = h / rel
            d.mkdir(exist_ok=True)
            if (d / "cpuset.cpus").exists():
                for key in ("cpuset.cpus", "cpuset.mems"):
                    if not (d / key).read_text().strip():
                        (d / key).write_text((d.parent / key).read_text())
    return f"/{CGROUP_PARENT}/{node}"


def cgroup_procs() -> set[int]:
    pids: set[int] = set()
    for h in cgroup_hierarchies():
        root = h / CGROUP_PARENT
        if not root.is_dir():
            continue
        for dirpath, _dirs, files in os.walk(root):
            if "cgroup.procs" in files:
                with contextlib.suppress(OSError):
                    pids |= {int(p) for p in (Path(dirpath) / "cgroup.procs").read_text().split()}
    return pids


def remove_cgroups() -> list[str]:
    """rmdir the lab's cgroups depth-first in every hierarchy; returns what is left."""
    left: list[str] = []
    for h in cgroup_hierarchies():
        root = h / CGROUP_PARENT
        if not root.is_dir():
            continue
        for dirpath, _dirs, _files in sorted(os.walk(root), key=lambda t: -len(Path(t[0]).parts)):
            try:
                os.rmdir(dirpath)
            except OSError:
                left.append(dirpath)
    return left


# --------------------------------------------------------------------------- host-wide state
def save_kernel_tunables() -> None:
    if TUNABLES_SAVED.exists():  # a killed run saved them first: those are the host's values
        return
    values = {}
    for t in KERNEL_TUNABLES:
        with contextlib.suppress(OSError):
            values[t] = (PROC_SYS / t).read_text().strip()
    TUNABLES_SAVED.write_text(json.dumps(values))


def restore_kernel_tunables() -> None:
    if not TUNABLES_SAVED.exists():
        return
    with contextlib.suppress(ValueError, OSError):
        for t, v in json.loads(TUNABLES_SAVED.read_text()).items():
            with contextlib.suppress(OSError):
                path = PROC_SYS / t
                if path.read_text().strip() != v:
                    path.write_text(v)
    TUNABLES_SAVED.unlink(missing_ok=True)


def lab_mounts() -> list[str]:
    """Mount points under the lab's directories (overlay rootfs, shm, the pods'
    network namespaces, the kubelet's volumes), deepest first."""
    targets = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            mnt = line.split()[4].replace("\\040", " ")
            if mnt.startswith((f"{RUN_DIR}/", f"{DISK_DIR}/")):
                targets.append(mnt)
    return sorted(set(targets), key=lambda m: -m.count("/"))


def unmount_all() -> None:
    for _ in range(3):
        mounts = lab_mounts()
        if not mounts:
            return
        for m in mounts:
            if run(["umount", m], check=False).returncode != 0:
                run(["umount", "-l", m], check=False)


def remove_log_links() -> None:
    if not CONTAINER_LOG_LINKS.is_dir():
        return
    for link in CONTAINER_LOG_LINKS.iterdir():
        with contextlib.suppress(OSError):
            if link.is_symlink() and os.readlink(link).startswith(f"{DISK_DIR}/"):
                link.unlink()


def remove_device_plugin_dir() -> None:
    """/var/lib/kubelet/device-plugins as the kubelets left it (their socket and
    checkpoint), and the directories if that leaves them empty."""
    for name in ("kubelet.sock", "kubelet_internal_checkpoint"):
        with contextlib.suppress(OSError):
            (DEVICE_PLUGINS / name).unlink()
    # containerd's shims put their sockets in /run/containerd/s whatever the
    # containerd's state directory: removed when empty (no other containerd here)
    for d in (DEVICE_PLUGINS, DEVICE_PLUGINS.parent, SHIM_SOCKETS, SHIM_SOCKETS.parent):
        with contextlib.suppress(OSError):
            d.rmdir()


def save_pod_logs(logs: Path) -> None:
    """The containers' logs (the kubelet's podLogsDir of each node) into LOGS/NODE/pods."""
    if not DISK_DIR.is_dir():
        return
    for node_dir in DISK_DIR.iterdir():
        src = node_dir / "pod-logs"
        if src.is_dir():
            with contextlib.suppress(OSError, shutil.Error):
                shutil.copytree(src, logs / node_dir.name / "pods", dirs_exist_ok=True, symlinks=False)


def kill_cgroup_procs() -> None:
    """The containers' processes (and anything else left in the lab's cgroups)."""
    for _ in range(3):
        pids = cgroup_procs() - {os.getpid()}
        if not pids:
            return
        for p in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and cgroup_procs():
            time.sleep(0.1)


def cleanup_host(logs: Path | None = None) -> list[str]:
    """Everything of the real nodes outside the network namespaces: processes in
    the lab's cgroups, mounts, cgroups, directories, the kernel tunables, log
    links. Idempotent; returns what could not be removed."""
    if logs:
        save_pod_logs(logs)
    kill_cgroup_procs()
    unmount_all()
    left = remove_cgroups()
    for d in (DISK_DIR,):
        if d.exists():
            shutil.rmtree(d, ignore_errors=True)
            if d.exists():
                left.append(str(d))
    remove_log_links()
    remove_device_plugin_dir()
    restore_kernel_tunables()
    return left


# --------------------------------------------------------------------------- images
def normalize(ref: str) -> str:
    """An image reference as containerd's CRI stores it (docker.io/library/x:latest)."""
    name, tag = ref, ""
    if "@" not in ref:
        last = ref.rsplit("/", 1)[-1]
        if ":" in last:
            name, tag = ref.rsplit(":", 1)
        tag = tag or "latest"
    first = name.split("/", 1)[0]
    if "/" not in name:
        name = f"docker.io/library/{name}"
    elif "." not in first and ":" not in first and first != "localhost":
        name = f"docker.io/{name}"
    return f"{name}:{tag}" if tag else name


def export_image(image: str, name: str, cache: Path) -> Path:
    """`buildah push IMAGE oci-archive:FILE:NAME`, cached by the image's ID."""
    image_id = run(["buildah", "inspect", "--type", "image", "--format", "{{.FromImageID}}", image]).stdout.strip()
    if not image_id:
        raise RuntimeError(f"image {image} not found (deploy/images/build.sh --lab builds it)")
    cache.mkdir(parents=True, exist_ok=True)
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", name)
    archive = cache / f"{safe}.{image_id[:16]}.tar"
    if not archive.exists():
        for old in cache.glob(f"{safe}.*.tar"):
            old.unlink()
        tmp = archive.with_suffix(".part")
        run(["buildah", "push", "--quiet", image, f"oci-archive:{tmp}:{name}"], timeout=300)
        tmp.rename(archive)
    return archive


# --------------------------------------------------------------------------- configuration
def containerd_config(node: str, cni_bin: str, pause: str) -> tuple[Path, Path]:
    """containerd 2.x's configuration (version 4, containerd 2.4's) for one node:
    everything of its own (root, state, sockets, NRI, CNI), nothing from the host's
    /etc/nri, /opt/nri or /opt/containerd. (containerd 2.4 always imports
    /etc/containerd/conf.d/*.toml, its built-in default; the lab adds nothing there.)"""
    state = RUN_DIR / node / "containerd"
    root = DISK_DIR / node / "containerd"
    sock = state / "containerd.sock"
    conf_dir = RUN_DIR / node / "cni"
    for d in (state, root, conf_dir):
        d.mkdir(parents=True, exist_ok=True)
    cfg = RUN_DIR / node / "containerd.toml"
    images, runtime = "plugins.'io.containerd.cri.v1.images'", "plugins.'io.containerd.cri.v1.runtime'"
    cfg.write_text(f"""# containerd of the lab's {node} (written by deploy/lab/realnode.py)
version = 4
root = "{root}"
state = "{state}"
oom_score = 0
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.erofs",
  "io.containerd.tracing.processor.v1.otlp"]

# the sockets are per node: the defaults (/run/containerd/...) would be shared by the three
[plugins.'io.containerd.server.v1.grpc']
  address = "{sock}"

[plugins.'io.containerd.server.v1.ttrpc']
  address = "{sock}.ttrpc"

[plugins.'io.containerd.server.v1.metrics']
  address = ""

[plugins.'io.containerd.server.v1.debug']
  address = ""

# NRI on, as on a production node, with a socket per node: the default
# /var/run/nri/nri.sock is one path for all three, and the second to bind it fails
[plugins.'io.containerd.nri.v1.nri']
  socket_path = "{state}/nri.sock"
  plugin_path = "{state}/nri/plugins"
  plugin_config_path = "{state}/nri/conf.d"

[plugins.'io.containerd.image-verifier.v1.bindir']
  bin_dir = "{root}/image-verifier/bin"

[plugins.'io.containerd.internal.v1.opt']
  path = "{root}/opt"

[{images}]
  snapshotter = "overlayfs"

[{images}.pinned_images]
  sandbox = "{pause}"

[{runtime}]
  # lowering oom_score_adj (the kubelet asks -998 for a sandbox) needs
  # CAP_SYS_RESOURCE, which root does not have here
  restrict_oom_score_adj = true
  # the pods' network namespaces under this containerd's state, not /run/netns
  netns_mounts_under_state_dir = true
  enable_selinux = false
  max_container_log_line_size = 16384

[{runtime}.containerd]
  default_runtime_name = "runc"

[{runtime}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[{runtime}.containerd.runtimes.runc.options]
  SystemdCgroup = false
  Root = "{state}/runc"

[{runtime}.cni]
  bin_dirs = ["{cni_bin}"]
  conf_dir = "{conf_dir}"
  max_conf_num = 1
""")
    return cfg, sock


def cni_config(node: str, pod_cidr: str) -> None:
    """The pods' network as the lab had it: ptp (a veth per pod, routed by the
    node) + host-local on the node's pod CIDR, no masquerading (the loopback
    interface containerd sets up itself)."""
    (RUN_DIR / node / "cni" / "10-lab-pods.conflist").write_text(json.dumps({
        "cniVersion": "1.0.0", "name": "lab-pods",
        "plugins": [{"type": "ptp", "ipMasq": False, "mtu": 1500,
                     "ipam": {"type": "host-local", "ranges": [[{"subnet": pod_cidr}]],
                              "routes": [{"dst": "0.0.0.0/0"}], "dataDir": str(RUN_DIR / node / "cni-ipam")}}],
    }, indent=1))


def kubelet_config(node: str, node_ip: str, sock: Path, pki: Path, dns_ip: str, pod_cidr: str) -> Path:
    d = RUN_DIR / node
    pod_logs = DISK_DIR / node / "pod-logs"  # copied to LOGS/NODE/pods at cleanup
    pod_logs.mkdir(parents=True, exist_ok=True)
    cfg: dict[str, Any] = {
        "apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
        "address": node_ip, "port": 10250, "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1", "healthzPort": 10248,
        "tlsCertFile": str(pki / "kubelet.crt"), "tlsPrivateKeyFile": str(pki / "kubelet.key"),
        # the API server (kubectl logs) authenticates with its client certificate
        "authentication": {"x509": {"clientCAFile": str(pki / "ca.crt")}, "webhook": {"enabled": False},
                           "anonymous": {"enabled": False}},
        "authorization": {"mode": "AlwaysAllow"},
        "containerRuntimeEndpoint": f"unix://{sock}",
        "cgroupDriver": "cgroupfs", "cgroupRoot": f"/{CGROUP_PARENT}/{node}", "cgroupsPerQOS": True,
        "failSwapOn": False, "failCgroupV1": False,
        "enforceNodeAllocatable": [], "localStorageCapacityIsolation": False,
        "clusterDNS": [dns_ip], "clusterDomain": "cluster.local", "resolvConf": "",
        "podCIDR": pod_cidr, "podLogsDir": str(pod_logs), "maxPods": 110,
        "volumePluginDir": str(d / "volume-plugins"),
        # the images exist only because the lab imported them: never collected
        "imageGCHighThresholdPercent": 100, "imageGCLowThresholdPercent": 99,
        # every node is the same disk and memory: no evictions for the host's figures
        "evictionHard": {"memory.available": "1Mi", "nodefs.available": "1%", "imagefs.available": "1%",
                         "nodefs.inodesFree": "1%"},
        "serializeImagePulls": False, "nodeStatusUpdateFrequency": "5s", "nodeStatusReportFrequency": "1m",
        "syncFrequency": "10s",
    }
    path = d / "kubelet.json"
    path.write_text(json.dumps(cfg, indent=1))
    return path


# --------------------------------------------------------------------------- nodes
class RealNodes:
    """containerd + kubelet per node. `start(name, ns, cmd)` runs a process in a
    network namespace and returns a handle with alive()/stop() (lab.py's Proc)."""

    def __init__(self, nodes: list[str], node_ip: dict[str, str], pod_cidr: dict[str, str], kube_bin: Path,
                 cni_bin: str, pki: Path, dns_ip: str, logs: Path, log: Callable[[str], None],
                 start: Callable[..., Any]):
        self.nodes, self.node_ip, self.pod_cidr = nodes, node_ip, pod_cidr
        self.kube_bin, self.cni_bin, self.pki, self.dns_ip, self.logs = kube_bin, cni_bin, pki, dns_ip, logs
        self.log, self.start = log, start
        self.socks: dict[str, Path] = {}

    def ctr(self, node: str, *args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
        return run([str(self.kube_bin / "ctr"), "--address", str(self.socks[node]), "--namespace", "k8s.io", *args],
                   timeout=timeout, check=check)

    def containerd(self, pause: str) -> None:
        save_kernel_tunables()
        for n in self.nodes:
            make_cgroup(n)
            cfg, sock = containerd_config(n, self.cni_bin, pause)
            cni_config(n, self.pod_cidr[n])
            self.socks[n] = sock
            # the shim (containerd-shim-runc-v2) is looked up on PATH: the build's first
            env = {"PATH": f"{self.kube_bin}:{os.environ.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}"}
            self.start(f"{n}-containerd", n, [str(self.kube_bin / "containerd"), "--config", str(cfg),
                                              "--log-level", "warn"], env)
        deadline = time.monotonic() + 60
        for n in self.nodes:
            while self.ctr(n, "version", check=False, timeout=10).returncode != 0:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"containerd of {n} did not answer on {self.socks[n]} within 60s "
                                       f"(logs/{n}-containerd.log)")
                time.sleep(0.2)

    def import_images(self, images: dict[str, list[str]], cache: Path) -> None:
        """images: local buildah image -> the names the pods use. One OCI archive
        per image (cached), imported into every node's containerd and tagged."""
        archives: list[tuple[Path, list[str]]] = []
        for image, names in images.items():
            names = [normalize(x) for x in names]
            archives.append((export_image(image, names[0], cache), names))
        procs = []
        for n in self.nodes:
            script = []
            for archive, names in archives:
                script.append(f"{self.kube_bin / 'ctr'} --address {self.socks[n]} -n k8s.io images import {archive}")
            procs.append((n, subprocess.Popen(["bash", "-euc", " && ".join(script)], stdout=subprocess.PIPE,
                                              stderr=subprocess.STDOUT, text=True)))
        for n, p in procs:
            out, _ = p.communicate(timeout=600)
            if p.returncode != 0:
                raise RuntimeError(f"importing the images into {n}'s containerd failed:\n{out.strip()}")
        for n in self.nodes:
            have = set(self.ctr(n, "images", "list", "-q").stdout.split())
            for _archive, names in archives:
                for extra in names:
                    if extra not in have:
                        self.ctr(n, "images", "tag", "--force", names[0], extra)

    def kubelets(self, tokens: dict[str, str], server: str, started: Callable[[str], None]) -> None:
        """One kubelet after the other: each binds the device-plugin socket at a
        fixed path (/var/lib/kubelet/device-plugins/kubelet.sock) after removing
        the one there, and two doing that at once fail (address in use).
        `started(node)` returns once the node's kubelet is up (its Node Ready)."""
        for n in self.nodes:
            kc = RUN_DIR / n / "kubelet.kubeconfig"
            kc.write_text(json.dumps({
                "apiVersion": "v1", "kind": "Config", "current-context": "lab",
                "clusters": [{"name": "lab", "cluster": {"server": server,
                                                         "certificate-authority": str(self.pki / "ca.crt")}}],
                "users": [{"name": f"system:node:{n}", "user": {"token": tokens[n]}}],
                "contexts": [{"name": "lab", "context": {"cluster": "lab", "user": f"system:node:{n}"}}],
            }, indent=1))
            os.chmod(kc, 0o600)
            cfg = kubelet_config(n, self.node_ip[n], self.socks[n], self.pki, self.dns_ip, self.pod_cidr[n])
            root = DISK_DIR / n / "kubelet"
            root.mkdir(parents=True, exist_ok=True)
            self.start(f"{n}-kubelet", n, [
                str(self.kube_bin / "kubelet"), f"--config={cfg}", f"--kubeconfig={kc}", f"--root-dir={root}",
                f"--cert-dir={root / 'pki'}", f"--hostname-override={n}", f"--node-ip={self.node_ip[n]}",
                "--v=1"])
            started(n)

    def remove_pods_everywhere(self) -> None:
        """After the kubelets are gone: whatever containerd still runs, removed
        through containerd (tasks killed, containers deleted)."""
        for n, sock in self.socks.items():
            if not sock.exists():
                continue
            for cid in self.ctr(n, "tasks", "list", "-q", check=False, timeout=20).stdout.split():
                self.ctr(n, "tasks", "kill", "-s", "SIGKILL", cid, check=False, timeout=20)
                self.ctr(n, "tasks", "delete", "-f", cid, check=False, timeout=20)
            for cid in self.ctr(n, "containers", "list", "-q", check=False, timeout=20).stdout.split():
                self.ctr(n, "containers", "delete", cid, check=False, timeout=20)
