"""Student versions, autograder material and instructor notebooks, generated from the chapters.

The chapter notebooks are the single source of every exercise. The markup is nbgrader's (Jupyter's
grading tool, https://nbgrader.readthedocs.io), so a chapter is also a valid nbgrader source notebook:

- **solution cell**: a code cell whose metadata has ``nbgrader.solution = true``; the reference code
  sits between a ``### BEGIN SOLUTION`` and a ``### END SOLUTION`` line. Students get, in its place, a
  line that raises ``NotImplementedError("exercise <id>: not implemented yet ...")``.
- **check cell**: a code cell with ``nbgrader.grade = true``, a ``grade_id`` and ``points``. Its public
  checks are plain code (usually a ``companion.checks`` call); hidden checks sit between
  ``### BEGIN HIDDEN TESTS`` and ``### END HIDDEN TESTS`` and are removed from the student version.
- **worked solutions**: cells tagged ``solution`` (the sphinx-exercise ``{solution}`` blocks of
  pen-and-paper exercises, and cells that verify numbers quoted in them) are removed for students.

The regions are cleared with nbgrader's own preprocessors (``ClearSolutions``, ``ClearHiddenTests``);
this module adds the validation, the three versions, grading without a gradebook database, and the
verification that checks pass on the reference and fail on the student version.

See: appendix "For instructors".
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from .paths import BOOK, REPO

__all__ = [
    "MarkupError", "VerificationError", "CheckResult", "ChapterExercises",
    "chapters", "parse", "student_version", "autograder_version", "grade", "build", "student_book",
]

BEGIN_SOLUTION, END_SOLUTION = "BEGIN SOLUTION", "END SOLUTION"
BEGIN_HIDDEN, END_HIDDEN = "BEGIN HIDDEN TESTS", "END HIDDEN TESTS"
SOLUTION_TAG = "solution"
STUB = 'raise NotImplementedError("exercise {id}: not implemented yet; replace this line with your code")'
BANNER = ("```{{note}}\nStudent version of this chapter: the worked solutions are removed, and each coding "
          "exercise raises `NotImplementedError` until you write it. Run the check cell after each "
          "exercise; it explains what is wrong.\n```")


class MarkupError(ValueError):
    """An exercise marker is malformed; the message names the notebook and the cell."""


class VerificationError(RuntimeError):
    """The checks of a chapter do not pass on the reference solution or do not fail on the student version."""


@dataclass
class ChapterExercises:
    """What a chapter holds: solution cells, check cells (grade_id -> points), hidden-check count."""

    path: Path
    solutions: list[str] = field(default_factory=list)
    checks: dict[str, float] = field(default_factory=dict)
    hidden: dict[str, int] = field(default_factory=dict)
    worked: int = 0

    @property
    def name(self) -> str:
        return self.path.stem

    @property
    def has_exercises(self) -> bool:
        return bool(self.solutions or self.checks or self.worked)


@dataclass
class CheckResult:
    """The outcome of one check cell when grading: passed, points earned of ``points``, the error if any."""

    grade_id: str
    passed: bool
    points: float
    earned: float
    error: str = ""


def _nbgrader(cell) -> dict:
    return cell.get("metadata", {}).get("nbgrader", {})


def _marker_lines(source: str, begin: str, end: str) -> list[tuple[int, str]]:
    out = []
    for i, line in enumerate(source.splitlines(), 1):
        stripped = line.strip()
        if stripped.startswith("#") and (begin in stripped or end in stripped):
            out.append((i, begin if begin in stripped else end))
    return out


def _check_regions(where: str, source: str, begin: str, end: str) -> int:
    """Raise MarkupError unless begin/end markers alternate properly; return the number of regions."""
    depth, count = 0, 0
    for line, kind in _marker_lines(source, begin, end):
        if kind == begin:
            if depth:
                raise MarkupError(f"{where}, line {line}: '{begin}' inside another region (nested or missing '{end}')")
            depth, count = 1, count + 1
        else:
            if not depth:
                raise MarkupError(f"{where}, line {line}: '{end}' without a preceding '{begin}'")
            depth = 0
    if depth:
        raise MarkupError(f"{where}: '{begin}' has no matching '{end}'")
    return count


def chapters(book: Path = BOOK) -> list[Path]:
    """The chapter notebooks under ``book`` (``NN_name.ipynb``; appendices are not chapters), sorted by name."""
    return sorted(Path(book).glob("[0-9][0-9]_*.ipynb"))


def parse(path: str | Path, nb=None) -> ChapterExercises:
    """Validate a chapter's exercise markup and list its exercises.

    Raises:
        MarkupError: naming the notebook and the cell (index and id), for: solution markers in a cell
            not marked as a solution, or a solution cell without them; unbalanced or nested markers;
            hidden-test markers outside a check cell; a check cell without ``grade_id`` or ``points``;
            a duplicate ``grade_id``; a sphinx-exercise ``{solution}`` block in a cell not tagged
            ``solution``.
    """
    path = Path(path)
    nb = nb if nb is not None else nbformat.read(path, as_version=4)
    info = ChapterExercises(path)
    for index, cell in enumerate(nb.cells):
        where = f"{path.name}, cell {index} (id {cell.get('id', '?')})"
        meta, tags = _nbgrader(cell), cell.get("metadata", {}).get("tags", [])
        source = cell.source
        if SOLUTION_TAG in tags:
            info.worked += 1
            continue
        if cell.cell_type == "markdown":
            if re.search(r"`{3,}\s*\{solution\}|:{3,}\s*\{solution\}", source):
                raise MarkupError(f"{where}: a {{solution}} block in a cell not tagged '{SOLUTION_TAG}'; "
                                  "tag the cell so student versions drop it")
            continue
        if cell.cell_type != "code":
            continue
        regions = _check_regions(where, source, BEGIN_SOLUTION, END_SOLUTION)
        hidden = _check_regions(where, source, BEGIN_HIDDEN, END_HIDDEN)
        if regions and not meta.get("solution"):
            raise MarkupError(f"{where}: has '### {BEGIN_SOLUTION}' but its metadata lacks nbgrader.solution = true")
        if meta.get("solution") and not regions:
            raise MarkupError(f"{where}: marked nbgrader.solution but has no '### {BEGIN_SOLUTION}' region")
        if hidden and not meta.get("grade"):
            raise MarkupError(f"{where}: hidden tests outside a check cell (nbgrader.grade = true)")
        if meta.get("solution"):
            info.solutions.append(meta.get("grade_id") or f"cell-{index}")
        if meta.get("grade"):
            grade_id, points = meta.get("grade_id"), meta.get("points")
            if not grade_id or not isinstance(points, (int, float)) or points <= 0:
                raise MarkupError(f"{where}: a check cell needs nbgrader.grade_id and positive nbgrader.points")
            if grade_id in info.checks:
                raise MarkupError(f"{where}: duplicate grade_id {grade_id!r}")
            if meta.get("solution"):
                raise MarkupError(f"{where}: a cell cannot be both a solution and a check")
            info.checks[grade_id] = float(points)
            info.hidden[grade_id] = hidden
    return info


def _cleared(path: str | Path, keep_hidden: bool):
    """Read and validate a chapter; drop worked solutions, stub the exercises, clear exercise outputs."""
    from nbgrader.preprocessors import ClearHiddenTests, ClearSolutions

    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    parse(path, nb)
    nb.cells = [c for c in nb.cells if SOLUTION_TAG not in c.get("metadata", {}).get("tags", [])]
    for cell in nb.cells:
        meta = _nbgrader(cell)
        if cell.cell_type == "code" and meta.get("solution"):
            marker = f"__STUB_{meta.get('grade_id', 'exercise')}__"
            nb_stub = ClearSolutions(enforce_metadata=False, code_stub={"python": marker})
            single = nbformat.v4.new_notebook(cells=[cell], metadata=nb.metadata)
            try:
                single, _ = nb_stub.preprocess(single, {})
            except RuntimeError as error:  # nbgrader's message lacks the location
                raise MarkupError(f"{path.name}, cell id {cell.get('id', '?')}: {error}") from None
            cell.source = single.cells[0].source.replace(marker, STUB.format(id=meta.get("grade_id", "exercise")))
        if cell.cell_type == "code" and (meta.get("solution") or meta.get("grade")):
            cell.outputs, cell.execution_count = [], None
            tags = cell.metadata.get("tags", [])
            if "hide-input" in tags:
                cell.metadata["tags"] = [t for t in tags if t != "hide-input"]
    if not keep_hidden:
        nb, _ = ClearHiddenTests(enforce_metadata=False).preprocess(nb, {})
    return nb


def student_version(path: str | Path):
    """The student notebook: solutions stubbed, worked solutions and hidden checks removed; other outputs kept."""
    nb = _cleared(path, keep_hidden=False)
    nb.cells.insert(1 if nb.cells and nb.cells[0].cell_type == "markdown" else 0,
                    nbformat.v4.new_markdown_cell(BANNER.format(), id="student-note"))
    return nb


def autograder_version(path: str | Path):
    """The autograder notebook: like the student version but with every check (public and hidden), no outputs."""
    nb = _cleared(path, keep_hidden=True)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    return nb


def _execute(nb, cwd: Path, timeout: int = 900):
    from nbclient import NotebookClient

    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", allow_errors=True,
                            resources={"metadata": {"path": str(cwd)}})
    client.execute()
    return nb


def _error_of(cell) -> str:
    for output in cell.get("outputs", []):
        if output.get("output_type") == "error":
            return f"{output.get('ename')}: {output.get('evalue')}"
    return ""


def grade(submission, autograder, cwd: str | Path = BOOK) -> list[CheckResult]:
    """Run a submission with every check of the autograder notebook and score each check cell.

    The submission's check cells (matched by ``nbgrader.grade_id``) are replaced by the autograder's
    full versions, so a student who edited or deleted a check cannot change the grade. The notebook is
    executed top to bottom (errors do not stop it), up to the last check cell (what follows cannot
    change a grade); a check passes when its cell raises nothing.

    Arguments:
        submission, autograder: notebook paths or ``nbformat`` notebooks.
        cwd: the folder the notebook runs in (the book's, so relative paths resolve).
    Returns:
        One ``CheckResult`` per check of the autograder; a check missing from the submission fails.
    """
    sub = copy.deepcopy(submission if not isinstance(submission, (str, Path)) else nbformat.read(submission, as_version=4))
    ref = autograder if not isinstance(autograder, (str, Path)) else nbformat.read(autograder, as_version=4)
    checks = {_nbgrader(c)["grade_id"]: c for c in ref.cells if _nbgrader(c).get("grade")}
    present = set()
    for cell in sub.cells:
        grade_id = _nbgrader(cell).get("grade_id")
        if _nbgrader(cell).get("grade") and grade_id in checks:
            cell.source = checks[grade_id].source
            present.add(grade_id)
    last = max((i for i, c in enumerate(sub.cells) if _nbgrader(c).get("grade")), default=-1)
    sub.cells = sub.cells[:last + 1]
    _execute(sub, Path(cwd))
    results = []
    for grade_id, ref_cell in checks.items():
        points = float(_nbgrader(ref_cell)["points"])
        if grade_id not in present:
            results.append(CheckResult(grade_id, False, points, 0.0, "check cell missing from the submission"))
            continue
        cell = next(c for c in sub.cells if _nbgrader(c).get("grade_id") == grade_id)
        error = _error_of(cell)
        results.append(CheckResult(grade_id, not error, points, 0.0 if error else points, error))
    return results


def _write(nb, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(path))


def build(names: list[str] | None = None, out: str | Path = "assignments", *, verify: bool = True,
          reference: bool = True, book: Path = BOOK, log=print) -> dict:
    """Write ``out/{student,autograder,instructor}/<chapter>.ipynb`` for each chapter with exercises.

    Arguments:
        names: chapter names or prefixes ("06", "06_gaussian_kl"); default every chapter.
        out: output folder.
        verify: run the instructor version through ``grade`` (every check must pass) and the student
            version (every check must fail, saying the exercise is "not implemented yet").
        reference: with ``verify``, also grade the instructor version (default). The test suite
            turns it off: nbval already executes every chapter with its hidden checks inline, so a
            check that fails on the reference solution fails nbval, and one execution per chapter is
            saved.
    Returns:
        ``{chapter: {"exercises", "worked_solutions", "checks", "hidden_checks", "points", "verify_s"}}``,
        also written to ``out/summary.json`` (without the timings, so the file is deterministic).
    Raises:
        ValueError: for a name that matches no chapter. MarkupError: malformed markup.
        VerificationError: a check that fails on the reference or passes on the student version.
    """
    out = Path(out)
    paths = chapters(book)
    if names:
        chosen = []
        for name in names:
            match = [p for p in paths if p.stem == name or p.stem.startswith(f"{name}_")]
            if not match:
                raise ValueError(f"no chapter {name!r}; chapters: {', '.join(p.stem for p in paths)}")
            chosen += match
        paths = chosen
    summary = {}
    for path in paths:
        info = parse(path)
        if not info.has_exercises:
            continue
        student, autograder = student_version(path), autograder_version(path)
        _write(student, out / "student" / path.name)
        _write(autograder, out / "autograder" / path.name)
        _write(nbformat.read(path, as_version=4), out / "instructor" / path.name)
        entry = {"exercises": len(info.solutions), "worked_solutions": info.worked, "checks": len(info.checks),
                 "hidden_checks": sum(info.hidden.values()), "points": sum(info.checks.values())}
        if verify:
            start = time.perf_counter()
            _verify(path, student, autograder, book, reference=reference)
            entry["verify_s"] = round(time.perf_counter() - start, 1)
        summary[path.stem] = entry
        log(f"{path.stem}: {entry['exercises']} coding exercises, {entry['worked_solutions']} worked-solution cells, "
            f"{entry['checks']} checks ({entry['hidden_checks']} hidden regions), {entry['points']:g} points"
            + (f"; verified in {entry['verify_s']} s" if verify else ""))
    deterministic = {k: {kk: vv for kk, vv in v.items() if kk != "verify_s"} for k, v in summary.items()}
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(deterministic, indent=2, sort_keys=True) + "\n")
    return summary


def _verify(path: Path, student, autograder, book: Path, reference: bool = True) -> None:
    graded = grade(nbformat.read(path, as_version=4), autograder, cwd=book) if reference else []
    failed = [r for r in graded if not r.passed]
    if failed:
        raise VerificationError(f"{path.name}: checks fail on the reference solution: "
                                + "; ".join(f"{r.grade_id} ({r.error})" for r in failed))
    results = grade(student, autograder, cwd=book)
    passed = [r.grade_id for r in results if r.passed]
    if passed:
        raise VerificationError(f"{path.name}: checks pass on the unmodified student version (they cannot fail): {passed}")
    unclear = [f"{r.grade_id} ({r.error})" for r in results if "not implemented" not in r.error.lower()]
    if unclear:
        raise VerificationError(f"{path.name}: on the student version these checks fail without saying "
                                f"'not implemented yet': {'; '.join(unclear)}")


STUDENT_TREE = ("_config.yml", "_toc.yml", "book", "companion", "pyproject.toml", "environment.yml", "postBuild", "README.md")


def student_book(out: str | Path, *, repository: str | None = None, branch: str | None = None,
                 html: bool = True, repo: Path = REPO) -> Path:
    """A student edition of the course: the repository's book and package with student notebooks.

    The tree in ``out`` can be pushed as its own repository (or branch) for students: its Binder
    buttons and downloadable notebooks then carry no solutions. ``_config.yml`` is rewritten to point
    the launch buttons at ``repository``/``branch`` and to show the notebooks' stored outputs instead
    of executing them (the exercises would raise). With ``html``, the book is built into
    ``out/_build/html`` with warnings as errors.

    Returns:
        ``out``. Raises MarkupError for malformed markup, CalledProcessError if the build fails, and
        ModuleNotFoundError when ``html`` is asked for without the jupyter-book command.
    """
    import yaml

    if html and shutil.which("jupyter-book") is None:
        raise ModuleNotFoundError("the jupyter-book command is not installed (the book extra)", name="jupyter_book")
    out = Path(out)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    for name in STUDENT_TREE:
        src = repo / name
        if src.is_dir():
            shutil.copytree(src, out / name, ignore=shutil.ignore_patterns("__pycache__", "_runs", "*.pyc", ".ipynb_checkpoints"))
        elif src.exists():
            shutil.copy2(src, out / name)
    for path in chapters(repo / "book"):
        _write(student_version(path), out / "book" / path.name)
    config = yaml.safe_load((out / "_config.yml").read_text())
    config["title"] = f"{config.get('title', '')} (student edition)"
    config.setdefault("execute", {})["execute_notebooks"] = "off"
    if repository:
        config.setdefault("repository", {})["url"] = repository
    if branch:
        config.setdefault("repository", {})["branch"] = branch
    (out / "_config.yml").write_text("# Generated by `python -m companion assignments book`; edit the course's own _config.yml instead.\n"
                                     + yaml.safe_dump(config, sort_keys=False))
    if html:
        subprocess.run(["jupyter-book", "build", "-W", "--keep-going", str(out)], check=True,
                       stdout=subprocess.DEVNULL)
    return out
