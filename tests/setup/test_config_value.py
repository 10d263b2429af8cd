"""deploy/lib/config_value.py: how the shell scripts (deploy/images/build.sh,
deploy/lib/toolchain.sh) read one value of Cargo.toml or a manifest with a parser
instead of sed; what it cannot find it says in one line, with exit 1."""

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TOOL = REPO / "deploy/lib/config_value.py"


def value(*args, cwd=REPO):
    return subprocess.run([sys.executable, str(TOOL), *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize("args", [
    ("Cargo.toml", "workspace", "package", "rust-version"),
    ("Cargo.toml", "workspace", "package", "version"),
    ("deploy/generator/kustomization.yaml", "images", "name=trace-gen", "newTag"),
    ("deploy/sink/kustomization.yaml", "images", "name=trace-sink", "newTag"),
    ("deploy/collector/builder-config.yaml", "dist", "version"),
])
def test_reads_the_values_the_scripts_need(args):
    """The values build.sh and toolchain.sh read exist in the real files, one line each."""
    result = value(*args)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert len(result.stdout.splitlines()) == 1 and result.stdout.strip()


def test_the_collector_version_is_the_builders_dist_version():
    """The agent image's tag (build.sh) is dist.version, the release every module is pinned at."""
    out = value("deploy/collector/builder-config.yaml", "dist", "version").stdout.strip()
    text = (REPO / "deploy/collector/builder-config.yaml").read_text()
    assert f"gomod: go.opentelemetry.io/collector/receiver/otlpreceiver v{out}" in text


def test_selects_the_list_element_by_name_whatever_its_place(tmp_path):
    """`images name=X newTag` finds X's tag among several images, in any key order
    (a line-based read took the first `newTag:` of the file)."""
    f = tmp_path / "kustomization.yaml"
    f.write_text("images:\n  - newTag: other\n    name: sidecar\n  - newTag: v2 # pinned\n    name: trace-sink\n"
                 "  - name: last\n    newTag: v3\n")
    result = value(f, "images", "name=trace-sink", "newTag")
    assert (result.returncode, result.stdout) == (0, "v2\n"), result.stderr


@pytest.mark.parametrize("text, args, message", [
    ('[workspace]\nmembers = []\n', ("workspace", "package", "version"), "workspace package: no key 'package'"),
    ("images:\n  - name: a\n", ("images", "name=b", "newTag"), "images name=b: 0 elements with name = 'b', need exactly one"),
    ("images:\n  - name: a\n", ("images", "3"), "images 3: no element 3 (the list has 1)"),
    ("images:\n  - name: a\n", ("images",), "images: a list, not a single value"),
    ("images: [\n", ("images",), None),
])
def test_a_missing_or_unreadable_value_is_one_line_and_exit_1(tmp_path, text, args, message):
    """No such key, no such element, a list where a value was asked, a file that does not parse."""
    f = tmp_path / ("Cargo.toml" if text.startswith("[") else "k.yaml")
    f.write_text(text)
    result = value(f, *args)
    assert result.returncode == 1
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"config_value.py: {f}: "), result.stderr
    if message:
        assert lines[0] == f"config_value.py: {f}: {message}"


def test_a_file_of_unknown_format_is_refused(tmp_path):
    f = tmp_path / "Dockerfile"
    f.write_text("FROM scratch\n")
    result = value(f, "FROM")
    assert result.returncode == 1
    assert result.stderr == f"config_value.py: {f}: unknown format (not .toml, .yaml, .yml or .json)\n"
