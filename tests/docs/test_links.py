"""Every relative link in the repository's Markdown resolves: the file (or folder) exists,
and a `#anchor` names a heading of the page it points to (GitHub's anchors)."""

import re
import subprocess
import unicodedata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# [text](target) and ![alt](target); the target ends at whitespace or ')'.
LINK = re.compile(r"!?\[(?:[^\]\\]|\\.)*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
INLINE_CODE = re.compile(r"(`+).*?\1")


def markdown_files():
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "*.md"],
        cwd=ROOT, check=True, capture_output=True, text=True,
    ).stdout.split()
    return sorted(p for p in out if (ROOT / p).is_file())


def prose_lines(text, keep_code=False):
    """The lines outside fenced code blocks, with inline code removed unless keep_code
    (a heading's anchor keeps the text of its code)."""
    fence = None
    for line in text.splitlines():
        stripped = line.lstrip()
        if fence is None and (stripped.startswith("```") or stripped.startswith("~~~")):
            fence = stripped[:3]
            continue
        if fence is not None:
            if stripped.startswith(fence):
                fence = None
            continue
        yield line if keep_code else INLINE_CODE.sub("", line)


def slug(heading):
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to '-'."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text only
    text = text.lower()
    kept = []
    for ch in text:
        if ch in " -_" or unicodedata.category(ch)[0] in "LN":
            kept.append(ch)
    return "".join(kept).replace(" ", "-")


def anchors(path):
    """Every heading anchor of a Markdown file, with GitHub's -1, -2 for repeated ones."""
    seen = {}
    out = set()
    for line in prose_lines(path.read_text(), keep_code=True):
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not m:
            continue
        base = slug(m.group(1))
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def broken_links(md):
    """(link, why) for every relative link of one Markdown file that does not resolve."""
    path = ROOT / md
    broken = []
    for line in prose_lines(path.read_text()):
        for target in LINK.findall(line):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # https:, mailto:, ...
                continue
            file_part, _, anchor = target.partition("#")
            dest = (path.parent / file_part).resolve() if file_part else path
            if not dest.exists():
                broken.append((target, f"{dest} does not exist"))
                continue
            if anchor and dest.suffix == ".md":
                if anchor not in anchors(dest):
                    broken.append((target, f"no heading with anchor #{anchor} in {dest}"))
    return broken


def test_the_markdown_files_are_found():
    """The test looks at the pages it is meant to: the README and the docs/ pages at least."""
    files = markdown_files()
    assert "README.md" in files
    assert any(f.startswith("docs/") for f in files), files


@pytest.mark.parametrize("md", markdown_files())
def test_relative_links_resolve(md):
    """Every relative link (and #anchor) of the page resolves."""
    assert broken_links(md) == []


def test_a_broken_link_and_a_broken_anchor_are_found(tmp_path):
    """The checker itself fails on a missing file and on an anchor no heading has."""
    global ROOT
    saved = ROOT
    ROOT = tmp_path
    try:
        (tmp_path / "a.md").write_text(
            "# Title\n\n## Limits and memory (`--max-series`)\n\n"
            "[ok](#limits-and-memory---max-series) [ok](b.md#b-page)\n"
            "[bad](missing.md) [bad](b.md#nowhere) [bad](#title-1)\n"
            "`[code](ignored.md)`\n```\n[fenced](ignored.md)\n```\n"
            "[web](https://example.invalid/x)\n"
        )
        (tmp_path / "b.md").write_text("# B page\n")
        assert [t for t, _ in broken_links("a.md")] == ["missing.md", "b.md#nowhere", "#title-1"]
    finally:
        ROOT = saved
