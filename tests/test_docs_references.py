"""Code and docs cite only what is in the repository.

Every ``docs/design.md §N`` citation names a section that exists, every relative link of a
docs page resolves, and nothing points at a file outside the repository.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCANNED = ["lib", "src", "tests", "bench", "docs", "scripts", "examples", "README.md"]
SUFFIXES = {".py", ".md", ".sh", ".txt", ".cfg", ".toml"}
# files outside the repository that older text pointed at
OUTSIDE = [re.compile(p) for p in (r"\bDESIGN\.md", r"/work/", r"\.\./shared", r"shared/notes")]
CITATION = re.compile(r"design\.md\)?\s+((?:§\d+(?:\.\d+)?[\s,–-]*)+)")
SECTION = re.compile(r"§(\d+(?:\.\d+)?)")
HEADING = re.compile(r"^#{2,3} (\d+(?:\.\d+)?)\.? ", re.MULTILINE)
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def text_files() -> list[Path]:
    """Text files of the repository's scanned folders, this test excepted."""
    files = []
    for name in SCANNED:
        path = ROOT / name
        candidates = [path] if path.is_file() else sorted(path.rglob("*"))
        files += [p for p in candidates if p.is_file() and p.suffix in SUFFIXES and "__pycache__" not in p.parts]
    return [p for p in files if p != Path(__file__).resolve()]


def cited_sections(text: str) -> set[str]:
    """Section numbers cited as ``design.md §N`` (ranges and lists included)."""
    return {s for group in CITATION.findall(text) for s in SECTION.findall(group)}


def test_design_sections_exist():
    sections = set(HEADING.findall((ROOT / "docs" / "design.md").read_text()))
    assert {str(n) for n in range(1, 8)} <= sections
    missing = {}
    for path in text_files():
        bad = cited_sections(path.read_text(errors="replace")) - sections
        if bad:
            missing[str(path.relative_to(ROOT))] = sorted(bad)
    assert not missing, f"citations of sections docs/design.md does not have: {missing}"


def test_citation_parser_finds_ranges_and_lists():
    text = "see docs/design.md §4.2–§4.5 and [design.md](design.md) §3.2, §9"
    assert cited_sections(text) == {"4.2", "4.5", "3.2", "9"}


def test_nothing_points_outside_the_repository():
    hits = [f"{path.relative_to(ROOT)}:{n}: {line.strip()}"
            for path in text_files()
            for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1)
            if any(p.search(line) for p in OUTSIDE)]
    assert not hits, "\n".join(hits)


def test_docs_links_resolve():
    broken = []
    for page in sorted((ROOT / "docs").glob("*.md")) + [ROOT / "README.md"]:
        for target in LINK.findall(page.read_text()):
            if "://" in target:
                continue
            if not (page.parent / target).exists():
                broken.append(f"{page.relative_to(ROOT)} -> {target}")
    assert not broken, broken
