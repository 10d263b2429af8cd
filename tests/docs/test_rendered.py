"""The measured figures of the docs cannot drift: every one stands between render markers and
is what bench/render.py writes from bench/results/*.json; a figure edited by hand, or a results
file re-measured without re-rendering, fails here."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RENDER = REPO / "bench" / "render.py"
sys.path.insert(0, str(REPO / "bench"))
import render  # noqa: E402


def check(root):
    return subprocess.run([sys.executable, str(RENDER), "--check", "--root", str(root)],
                          capture_output=True, text=True, timeout=60)


def copy_of_the_repo(tmp_path):
    """The pages and results render.py reads, in a scratch directory."""
    for rel in render.PAGES + render.INPUTS:
        src, dst = REPO / rel, tmp_path / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if src.is_dir() else shutil.copy)(src, dst)
    return tmp_path


def test_the_docs_show_what_the_results_files_hold():
    """bench/render.py --check passes on the repository as committed."""
    result = check(REPO)
    assert result.returncode == 0, result.stderr


def test_every_page_has_figures_and_every_figure_is_known():
    """Each page of render.PAGES holds marked figures, each with a name render.py knows, and
    the big tables are among them."""
    values = render.values(REPO)
    names = set()
    for page in render.PAGES:
        found = render.MARKER.findall((REPO / page).read_text())
        assert found, f"{page} has no rendered figure"
        names |= {name for name, _ in found}
    assert names <= set(values), names - set(values)
    assert {"bench.table", "hostile.table", "budget.sum", "gen.full.cpu", "sink.b100.rate"} <= names


def test_the_budget_fits_the_deployments_memory_limit():
    """The memory bound with the default flags, and the peak measured under hostile input,
    are below deploy/sink/deployment.yaml's memory limit."""
    values = render.values(REPO)
    assert values["budget.mib"] < values["deploy.limit.mib"]
    assert float(values["hostile.peak"].split()[0]) < values["deploy.limit.mib"]


def test_the_budget_is_computed_with_the_formulas_sizes():
    """render.py's per-entry sizes are the ones docs/limits.md's formula shows."""
    doc = (REPO / "docs/limits.md").read_text()
    formula = doc[doc.index("**Budget.**"):doc.index("The per-entry sizes")]
    b = render.BUDGET
    for text in (f"~{b['base_mib']} MiB", f"~{b['entry_kib']} KiB", f"~{b['gap_b']} B",
                 f"× ~{b['decode_factor']} ×", f"~{b['stats_kib']} KiB per series",
                 f"({b['conn_kib']} KiB + --max-streams × {b['stream_kib']} KiB)"):
        assert text in formula, text


def test_a_figure_changed_by_hand_fails_the_check(tmp_path):
    """Change one rendered figure in a copy (the trace-gen CPU in docs/trace-gen.md, and a cell
    of the hostile-memory table): --check exits 1 and names the page; rendering restores it."""
    root = copy_of_the_repo(tmp_path)
    page = root / "docs/trace-gen.md"
    text = page.read_text()
    figure = render.values(REPO)["gen.full.cpu"]
    edited = text.replace(f"<!-- render:gen.full.cpu -->{figure}<!-- /render -->",
                          "<!-- render:gen.full.cpu -->0.399<!-- /render -->", 1)
    assert edited != text
    page.write_text(edited)
    result = check(root)
    assert result.returncode == 1
    assert "docs/trace-gen.md" in result.stderr

    limits = root / "docs/limits.md"
    ltext = limits.read_text()
    m = re.search(r"\d+\.\d \(now \d+\.\d\)", ltext)
    limits.write_text(ltext[:m.start()] + "1.0 (now 1.0)" + ltext[m.end():])
    result = check(root)
    assert result.returncode == 1
    assert "docs/limits.md" in result.stderr

    subprocess.run([sys.executable, str(RENDER), "--root", str(root)], check=True, capture_output=True)
    assert page.read_text() == text
    assert limits.read_text() == ltext
    assert check(root).returncode == 0


def test_a_new_results_file_fails_the_check_until_rendered(tmp_path):
    """A re-measured results file (here: one figure of latest.json changed) makes --check fail
    until render.py is run."""
    root = copy_of_the_repo(tmp_path)
    latest = root / "bench/results/latest.json"
    text = latest.read_text()
    new = re.sub(r'("metric": "trace-gen CPU-s/1M at full speed[^"]*",\s*"ours": )[0-9.]+', r"\g<1>0.311", text)
    assert new != text
    latest.write_text(new)
    assert check(root).returncode == 1
    subprocess.run([sys.executable, str(RENDER), "--root", str(root)], check=True, capture_output=True)
    assert "<!-- render:gen.full.cpu -->0.311<!-- /render -->" in (root / "docs/trace-gen.md").read_text()
