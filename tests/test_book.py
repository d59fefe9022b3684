"""The reader's page, checked: what the developers' guide asks of every chapter (the standards for the book).

Short code cells and lines, no tool markers in what the reader sees, enough prose and exercises, and
every displayed figure and diagram made by code in the repository. Chapters 1 to 9 (Parts I and II) are
held to the full standard (Parts III and IV are reworked separately); the nbgrader markers are folded in
every chapter.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

BOOK = Path(__file__).resolve().parents[1] / "book"
CHAPTERS = sorted(BOOK.glob("[0-9][0-9]_*.ipynb"))
MAX_CELL_LINES, MAX_LINE_CHARS = 15, 100
MIN_WORDS, MIN_EXERCISES = 1200, 3
#: Tags with which Jupyter Book folds or removes a cell's code from the page.
HIDDEN = {"hide-input", "remove-input", "remove-cell", "hide-cell"}


def cells(path: Path) -> list[dict]:
    return json.loads(path.read_text())["cells"]


def source(cell: dict) -> str:
    return "".join(cell["source"])


def prose_words(path: Path) -> int:
    """Words of prose in a chapter's markdown: math, code, directives' options and links' targets excluded."""
    words = 0
    for cell in cells(path):
        if cell["cell_type"] != "markdown":
            continue
        text = source(cell)
        text = re.sub(r"```\{(math|code-cell|code|literalinclude|figure|image)\}.*?```", " ", text, flags=re.S)
        text = re.sub(r"```.*?```", " ", text, flags=re.S)
        text = re.sub(r"\$\$.*?\$\$", " ", text, flags=re.S)
        text = re.sub(r"\$[^$]+\$", " ", text)
        text = re.sub(r"^:[a-z-]+:.*$", " ", text, flags=re.M)
        text = re.sub(r"\]\([^)]*\)", "]", text)
        text = re.sub(r"\{[a-z:-]+\}`[^`]*`", " x ", text)
        words += len(re.findall(r"[A-Za-z][A-Za-z'-]*", text))
    return words


def exercises(path: Path) -> int:
    return sum(source(cell).count("```{exercise}") for cell in cells(path) if cell["cell_type"] == "markdown")


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_code_cells_are_short_and_fit_the_page(path):
    for index, cell in enumerate(cells(path)):
        if cell["cell_type"] != "code" or HIDDEN & set(cell["metadata"].get("tags", [])):
            continue
        lines = source(cell).splitlines()
        assert len(lines) <= MAX_CELL_LINES, f"{path.name} cell {index}: {len(lines)} lines"
        for line in lines:
            assert len(line) <= MAX_LINE_CHARS, f"{path.name} cell {index}: {len(line)} characters: {line}"


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_no_tool_markers_on_the_page(path):
    for index, cell in enumerate(cells(path)):
        text = source(cell)
        assert "NBVAL" not in text, f"{path.name} cell {index}: an nbval comment (use the cell tag)"
        tags = set(cell["metadata"].get("tags", []))
        if "### BEGIN" in text:
            assert tags & HIDDEN, f"{path.name} cell {index}: nbgrader markers shown to the reader"


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_a_textbook_chapter_has_prose_and_exercises(path):
    assert prose_words(path) >= MIN_WORDS, f"{path.name}: {prose_words(path)} words of prose"
    assert exercises(path) >= MIN_EXERCISES, f"{path.name}: {exercises(path)} exercises"
    solutions = sum(
        1 for cell in cells(path) if "solution" in cell["metadata"].get("tags", []) and "{solution}" in source(cell)
    )
    assert solutions >= MIN_EXERCISES - 1, f"{path.name}: worked solutions must be tagged `solution`"


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_no_provenance_in_the_chapters(path):
    """Commits, versions and peak memory belong on the generated "Recorded runs" appendix page."""
    for index, cell in enumerate(cells(path)):
        outputs = "".join(
            "".join(out.get("text", "")) + "".join(out.get("data", {}).get("text/plain", ""))
            for out in cell.get("outputs", [])
        )
        text = source(cell) + outputs
        assert not re.search(r"\b[0-9a-f]{40}\b", text), f"{path.name} cell {index}: a commit hash"
        assert "peak_memory" not in text and "torch_version" not in text, f"{path.name} cell {index}"


def test_the_diagrams_are_made_by_code_in_the_repository(tmp_path):
    """The scripts book/figures/make_*.py draw every diagram the book includes, and draw the same files."""
    import subprocess
    import sys

    pytest.importorskip("daft")
    for script in sorted((BOOK / "figures").glob("make_*.py")):
        subprocess.run([sys.executable, str(script), "--out", str(tmp_path)], check=True)
    made = {path.name for path in tmp_path.glob("*.svg")} | {path.name for path in tmp_path.glob("*.png")}
    used = set()
    pages = [source(cell) for path in CHAPTERS for cell in cells(path)] + [(BOOK / "intro.md").read_text()]
    for text in pages:
        used |= set(re.findall(r"figures/([\w-]+\.(?:svg|png))", text))
    assert used, "no chapter includes a diagram"
    assert used <= made, f"diagrams included but not made by make_diagrams.py: {sorted(used - made)}"
    for name in made:
        assert (tmp_path / name).read_bytes() == (BOOK / "figures" / name).read_bytes(), f"{name} is stale"
