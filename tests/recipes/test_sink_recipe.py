"""The shell recipe "a sink inside your own test" (tests/recipes/sink-in-a-test.sh):
it is in the docs word for word, it runs as written against the release binaries,
and it fails when the check it makes fails."""

import os
import re
import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RECIPE = Path(__file__).with_name("sink-in-a-test.sh")
BIN = REPO / "target/release"


def run(script: str) -> subprocess.CompletedProcess:
    for tool in ("jq", "curl"):
        assert shutil.which(tool), f"the recipe needs {tool} (apt-get install {tool})"
    for binary in ("trace-sink", "trace-gen"):
        assert (BIN / binary).exists(), f"{BIN / binary} missing: cargo build --release (./run-tests.sh does)"
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "RUST_LOG": "warn"}
    return subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env, timeout=120)


def test_recipe_is_in_the_docs_verbatim():
    """A ```sh block of README.md or a page under docs/ is the script, byte for byte."""
    script = RECIPE.read_text()
    pages = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
    blocks = [b for p in pages if p.exists() for b in re.findall(r"^```sh\n(.*?)^```$", p.read_text(), re.M | re.S)]
    assert script in blocks, "copy tests/recipes/sink-in-a-test.sh into the docs as a ```sh block"


def test_recipe_passes():
    """As written: the sink's ports come from --listen-file, the check passes, the route prints."""
    r = run(RECIPE.read_text())
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith('{"pass":true,'), r.stdout
    assert lines[1:] == ['{"generator_node":"node-1","agent_node":"node-1","spans":100}'], r.stdout


def test_recipe_fails_when_the_check_fails():
    """The same script with the stand-in agent on another node: /check answers 412 and
    the script exits non-zero (curl's 22), so a test built on it fails too."""
    broken = RECIPE.read_text().replace("agent.node.name=node-1", "agent.node.name=node-2")
    assert broken != RECIPE.read_text()
    r = run(broken)
    assert r.returncode == 22, (r.returncode, r.stdout, r.stderr)
    assert "412" in r.stderr, r.stderr
