#!/usr/bin/env python3
"""Start one container process for the lab's node agent (deploy/lab/node_agent.py).

    podexec.py SPEC.json

SPEC: {"netns": "/run/netns/NAME", "root": DIR, "mounts": [{"target": PATH,
"source": PATH, "ro": bool}], "argv": [...], "env": {...}, "workdir": PATH}

What a container runtime does for a container, reduced to what the lab needs,
then exec(2), so the container's process has this process's pid:
  1. die with the node agent (parent-death signal);
  2. join the pod's network namespace;
  3. a private mount namespace whose root is a tmpfs at ROOT that mirrors the
     host's file system by bind mounts, except along the paths of the
     container's mounts (ConfigMap files, /etc/resolv.conf, the image's binary
     at the image's path, ...), which are built as directories of their own,
     so nothing is created or changed on the host's file system;
  4. chroot into it, chdir, exec argv[0] (looked up in the container's PATH).
Not done: user/PID/UTS/IPC namespaces, cgroups, capabilities, seccomp, the
image's own file system (the host's is used).
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import sys

libc = ctypes.CDLL(None, use_errno=True)
CLONE_NEWNS, CLONE_NEWNET = 0x00020000, 0x40000000
MS_RDONLY, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 1, 32, 4096, 16384, 1 << 18
PR_SET_PDEATHSIG = 1


def check(rc: int, what: str) -> None:
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def mount(src: str | None, dst: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    check(libc.mount(src.encode() if src else None, dst.encode(), fstype.encode() if fstype else None,
                     ctypes.c_ulong(flags), data.encode() if data else None), f"mount {src} -> {dst}")


def host_path(path: str) -> str:
    """PATH with the host's symlinks resolved in its existing part (/var/run/x -> /run/x)."""
    head, tail = path, []
    while head != "/" and not os.path.lexists(head):
        head, t = os.path.split(head)
        tail.insert(0, t)
    return os.path.join(os.path.realpath(head), *tail)


def build_root(root: str, mounts: list[dict]) -> None:
    targets = {host_path(m["target"]): m for m in mounts}
    # directories that hold a target somewhere below: built, not bound
    built = {"/"}
    for t in targets:
        p = os.path.dirname(t)
        while p not in built:
            built.add(p)
            p = os.path.dirname(p)

    def populate(rel: str) -> None:
        try:
            names = os.listdir(rel)
        except (FileNotFoundError, NotADirectoryError):
            names = []
        for name in names:
            src = os.path.join(rel, name)
            dst = root + src
            if src in targets:
                continue
            if src in built:
                os.mkdir(dst)
                populate(src)
            elif os.path.islink(src):
                os.symlink(os.readlink(src), dst)
            elif os.path.isdir(src):
                os.mkdir(dst)
                mount(src, dst, None, MS_BIND | MS_REC)
            else:
                open(dst, "w").close()
                try:
                    mount(src, dst, None, MS_BIND)
                except OSError:
                    os.unlink(dst)  # a socket or similar that cannot be bound: left out
        for name in (os.path.basename(b) for b in built if b != "/" and os.path.dirname(b) == rel):
            if not os.path.lexists(root + os.path.join(rel, name)):
                os.mkdir(root + os.path.join(rel, name))
                populate(os.path.join(rel, name))

    mount("tmpfs", root, "tmpfs", 0, "mode=0755")
    populate("/")
    for t in sorted(targets, key=lambda p: p.count("/")):
        m = targets[t]
        dst = root + t
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        if os.path.isdir(m["source"]):
            os.makedirs(dst, exist_ok=True)
        elif not os.path.exists(dst):
            open(dst, "w").close()
        mount(m["source"], dst, None, MS_BIND | MS_REC)
        if m.get("ro"):
            mount(None, dst, None, MS_REMOUNT | MS_BIND | MS_RDONLY)


def lookup(argv0: str, path: str) -> str:
    if "/" in argv0:
        return argv0
    for d in path.split(":"):
        cand = os.path.join(d or ".", argv0)
        if os.access(cand, os.X_OK) and not os.path.isdir(cand):
            return cand
    raise FileNotFoundError(f'executable file "{argv0}" not found in $PATH ({path})')


def main() -> int:
    spec = json.load(open(sys.argv[1]))
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    with open(spec["netns"], "rb") as f:
        check(libc.setns(f.fileno(), CLONE_NEWNET), "setns(net)")
    check(libc.unshare(CLONE_NEWNS), "unshare(mount)")
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    build_root(spec["root"], spec["mounts"])
    os.chroot(spec["root"])
    os.chdir(spec.get("workdir") or "/")
    env = spec["env"]
    argv = spec["argv"]
    exe = lookup(argv[0], env.get("PATH", "/usr/local/bin:/usr/bin:/bin"))
    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGPIPE):
        signal.signal(s, signal.SIG_DFL)
    os.execve(exe, argv, env)
    return 127


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception as exc:  # the node agent reports it as the container's start error
        print(f"podexec: {exc}", file=sys.stderr, flush=True)
        sys.exit(128)
