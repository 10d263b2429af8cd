"""The two top-level commands check Rust, Go and Python first (deploy/lib/toolchain.sh):
a missing or too old one stops them with one line naming it and exit 2, before anything
is built; the minimums are the ones README.md states; under sudo, what root wrote is handed
back to the invoking user."""

import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TOOLCHAIN = REPO / "deploy/lib/toolchain.sh"


def fake_toolchain(tmp_path, rust="1.95.0", go="1.26.8", python="3.11.7"):
    """A directory of stand-ins that report the given versions, first on PATH. The python3
    stand-in answers the version question and runs anything else with this Python (the
    check reads Cargo.toml's rust-version with deploy/lib/config_value.py)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    scripts = {
        "rustc": f'echo "rustc {rust} (0000000 2026-01-01)"',
        "cargo": f'echo "cargo {rust} (0000000 2026-01-01)"',
        "go": f'[ "$1 $2" = "env GOVERSION" ] && echo "go{go}" || echo "go version go{go} linux/amd64"',
        "python3": f'case "$*" in *version_info*) echo "{python}" ;; *) exec "{sys.executable}" "$@" ;; esac',
    }
    for name, body in scripts.items():
        path = bin_dir / name
        path.write_text(f"#!/bin/sh\n{body}\n")
        path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return bin_dir


def run(cmd, bin_dir, **extra_env):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUDO_")}
    env.update(extra_env)
    env["PATH"] = f"{bin_dir}:{env.get('PATH', '/usr/bin:/bin')}"
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=60)


def minimums():
    out = subprocess.run(
        ["bash", "-c", f'source "{TOOLCHAIN}"; echo "$TOOLCHAIN_MIN_RUST $TOOLCHAIN_MIN_GO $TOOLCHAIN_MIN_PYTHON"'],
        capture_output=True, text=True, check=True,
    ).stdout.split()
    return dict(zip(["rust", "go", "python"], out))


def test_minimums_are_the_ones_the_readme_and_cargo_toml_state():
    """README.md's "What you need" names the versions the commands check; Rust's is
    Cargo.toml's rust-version."""
    mins = minimums()
    readme = (REPO / "README.md").read_text()
    stated = dict(re.findall(r"\*\*(Rust|Go|Python) ≥ ([0-9.]+)\*\*", readme))
    assert stated == {"Rust": mins["rust"], "Go": mins["go"], "Python": mins["python"]}
    cargo = (REPO / "Cargo.toml").read_text()
    assert f'rust-version = "{mins["rust"]}"' in cargo


@pytest.mark.parametrize("tool, versions, message", [
    ("Rust", {"rust": "1.80.0"}, "run-tests.sh: Rust >= {rust} is needed (found rustc 1.80.0 at {bin}/rustc): rustup update"),
    ("Go", {"go": "1.22.5"}, "run-tests.sh: Go >= {go} is needed (found go 1.22.5 at {bin}/go): install it from https://go.dev/doc/install"),
    ("Python", {"python": "3.9.18"}, "run-tests.sh: Python >= {python} is needed (found python3 3.9.18 at {bin}/python3)"),
])
def test_run_tests_stops_on_an_old_toolchain(tmp_path, tool, versions, message):
    """./run-tests.sh with an old Rust, Go or Python first on PATH: exit 2, one line, nothing run."""
    bin_dir = fake_toolchain(tmp_path, **versions)
    result = run(["./run-tests.sh"], bin_dir)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.splitlines() == [message.format(bin=bin_dir, **minimums())]
    assert result.stdout == ""


def test_lab_stops_on_an_old_go(tmp_path):
    """deploy/lab/run.sh with an old Go first on PATH: exit 2 and one line, before it needs
    root, takes the lab lock or installs anything."""
    bin_dir = fake_toolchain(tmp_path, go="1.24.0")
    result = run(["deploy/lab/run.sh"], bin_dir)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.splitlines() == [
        f"[run.sh] error: Go >= {minimums()['go']} is needed (found go 1.24.0 at {bin_dir}/go): "
        "install it from https://go.dev/doc/install"
    ]


def check_without(tmp_path, missing: str, what: str) -> subprocess.CompletedProcess:
    """`toolchain_check check WHAT` with the stand-in toolchain minus `missing`, PATH
    holding only the stand-ins and the few tools the check uses (so nothing of this
    machine can stand in for the missing one)."""
    bin_dir = fake_toolchain(tmp_path)
    (bin_dir / missing).unlink()
    for tool in ("dirname", "sed", "sort", "awk", "cut"):
        (bin_dir / tool).symlink_to(shutil.which(tool))
    return subprocess.run([shutil.which("bash"), "-c", f'source "{TOOLCHAIN}"; toolchain_check check {what}'],
                          env={"PATH": str(bin_dir), "HOME": str(tmp_path)}, capture_output=True, text=True)


def test_a_missing_go_is_named(tmp_path):
    """No go on PATH: the line says so (PATH holds only the stand-ins and the few tools
    the check uses, so a go of this machine cannot be found)."""
    result = check_without(tmp_path, "go", "go")
    assert result.returncode == 2
    assert result.stderr.splitlines() == [f"check: Go >= {minimums()['go']} is needed (no go found): "
                                          "install it from https://go.dev/doc/install"]


def test_without_python_the_rust_check_names_python(tmp_path):
    """The minimum Rust version is read from Cargo.toml by python3 (tomllib): with no
    python3 on PATH the Rust check stops with the Python line, not with an empty minimum."""
    result = check_without(tmp_path, "python3", "rust")
    assert result.returncode == 2
    assert result.stderr.splitlines() == [f"check: Python >= {minimums()['python']} is needed (no python3 found)"]


@pytest.mark.parametrize("versions, ok", [
    ({"rust": "{rust}.0", "go": "{go}.0", "python": "{python}.0"}, True),  # exactly the minimums
    ({"rust": "1.100.0-nightly"}, True),                                  # numeric order, not text
    ({"rust": "1.87.9"}, False),
    ({"go": "1.25.9"}, False),
    ({"python": "3.10.14"}, False),
])
def test_the_minimums_are_inclusive_and_compared_as_numbers(tmp_path, versions, ok):
    """Versions at the minimum pass, one below fails; 1.100 is newer than 1.88."""
    versions = {k: v.format(**minimums()) for k, v in versions.items()}
    bin_dir = fake_toolchain(tmp_path, **versions)
    result = run(["bash", "-c", f'source "{TOOLCHAIN}"; toolchain_check check rust go python'], bin_dir)
    assert (result.returncode == 0) == ok, result.stderr
    assert result.returncode in (0, 2)


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")
def test_give_back_hands_root_files_to_the_sudo_user(tmp_path):
    """Under sudo (SUDO_UID set), give_back chowns what root wrote to the invoking user;
    without sudo it changes nothing."""
    made = tmp_path / "target" / "release"
    made.mkdir(parents=True)
    (made / "file").write_text("x")
    script = f'source "{TOOLCHAIN}"; give_back "{tmp_path / "target"}" "{tmp_path / "absent"}"'
    subprocess.run(["bash", "-c", script], env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
                   check=True)
    assert (made / "file").stat().st_uid == 0
    subprocess.run(["bash", "-c", script], check=True,
                   env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "SUDO_UID": "65534", "SUDO_GID": "65534"})
    for p in (tmp_path / "target", made, made / "file"):
        assert (p.stat().st_uid, p.stat().st_gid) == (65534, 65534), p


SECURE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"  # Debian's sudoers


def test_under_sudos_secure_path_cargo_and_go_are_found():
    """With only sudo's secure_path on PATH (what `sudo ./run-tests.sh` gets), toolchain_path
    finds cargo in ~/.cargo/bin and go in /usr/local/go/bin, and the check passes; without it,
    the same check stops on the missing Rust (the failure the README's sudo command had)."""
    home = Path.home()
    secure = [Path(d) for d in SECURE_PATH.split(":")]
    if any((d / "cargo").exists() for d in secure):
        pytest.skip("cargo is on secure_path here: nothing for toolchain_path to find")
    if not (home / ".cargo/bin/cargo").exists() or not (
        Path("/usr/local/go/bin/go").exists() or any((d / "go").exists() for d in secure)
    ):
        pytest.skip("cargo is not in ~/.cargo/bin or go not in /usr/local/go/bin on this machine")
    env = {"PATH": SECURE_PATH, "HOME": str(home)}
    found = subprocess.run(
        [shutil.which("bash"), "-c", f'source "{TOOLCHAIN}"; toolchain_path; toolchain_check sudo rust go python'],
        env=env, capture_output=True, text=True, timeout=60)
    assert found.returncode == 0, found.stderr
    missing = subprocess.run(
        [shutil.which("bash"), "-c", f'source "{TOOLCHAIN}"; toolchain_check sudo rust'],
        env=env, capture_output=True, text=True, timeout=60)
    assert missing.returncode == 2
    assert missing.stderr.startswith("sudo: Rust >= "), missing.stderr


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("runuser"), reason="needs root and runuser")
def test_as_user_runs_as_the_sudo_user_with_the_found_path(tmp_path):
    """Under sudo (SUDO_USER set), as_user runs the command as that user, with the PATH
    toolchain_path built and that user's HOME; `sudo -u` is played by runuser here."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sudo").write_text('#!/bin/sh\n[ "$1" = -u ] || exit 99\nu=$2; shift 2\nexec runuser -u "$u" -- "$@"\n')
    (bin_dir / "sudo").chmod(0o755)
    home = subprocess.run(["getent", "passwd", "nobody"], capture_output=True, text=True,
                          check=True).stdout.split(":")[5]
    script = f'source "{TOOLCHAIN}"; toolchain_path; as_user sh -c \'echo "$(id -u) $HOME $PATH"\''
    out = subprocess.run([shutil.which("bash"), "-c", script], capture_output=True, text=True, check=True,
                         env={"PATH": f"{bin_dir}:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": str(tmp_path),
                              "SUDO_USER": "nobody", "SUDO_UID": "65534", "SUDO_GID": "65534"}).stdout.split()
    assert out[0] == "65534"
    assert out[1] == home
    assert out[2].startswith(f"{bin_dir}:")
    # without sudo, as_user runs the command as is
    out = subprocess.run([shutil.which("bash"), "-c", script], capture_output=True, text=True, check=True,
                         env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}).stdout.split()
    assert out[:2] == ["0", str(tmp_path)]
