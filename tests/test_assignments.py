"""companion.assignments: markup validation, deterministic generation, no leaked solutions,
verification on every chapter, grading with hidden checks, and the student edition of the book."""

import json
import re

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from companion import assignments
from companion.assignments import MarkupError, VerificationError

CHAPTERS = assignments.chapters()
WITH_EXERCISES = [p for p in CHAPTERS if assignments.parse(p).has_exercises]


def _solution_meta(grade_id="ex"):
    return {"nbgrader": {"solution": True, "grade": False, "grade_id": grade_id, "locked": False, "schema_version": 3}}


def _check_meta(grade_id="check", points=1):
    return {"nbgrader": {"solution": False, "grade": True, "grade_id": grade_id, "points": points, "locked": True, "schema_version": 3}}


def _notebook(path, cells):
    nb = new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"cell{i}"
    nbformat.write(nb, str(path))
    return path


def _secrets(path):
    """Lines and tokens of a chapter that must never reach a student: solution regions, hidden checks,
    worked-solution cells, and identifiers that occur only inside them."""
    nb = nbformat.read(path, as_version=4)
    secret_lines, secret_code, public_text = set(), [], []
    for cell in nb.cells:
        meta = cell.metadata.get("nbgrader", {})
        if "solution" in cell.metadata.get("tags", []):
            lines, rest = cell.source.splitlines(), ""
        else:
            regions = re.findall(r"### BEGIN (?:SOLUTION|HIDDEN TESTS)\n(.*?)### END (?:SOLUTION|HIDDEN TESTS)", cell.source, re.S)
            lines = [line for region in regions for line in region.splitlines()]
            rest = re.sub(r"### BEGIN (SOLUTION|HIDDEN TESTS).*?### END (SOLUTION|HIDDEN TESTS)", "", cell.source, flags=re.S)
        if cell.cell_type == "code":  # identifiers are compared for code; prose is compared line by line
            secret_code += [line.split("#")[0] for line in lines]
        public_text.append(rest)
        secret_lines |= {line.strip() for line in lines if len(line.strip()) > 12 and not line.strip().startswith(("#", "```", ":"))}
    public = set(re.findall(r"[A-Za-z_][A-Za-z0-9_]{3,}", "\n".join(public_text)))
    tokens = set(re.findall(r"[A-Za-z_][A-Za-z0-9_]{3,}", "\n".join(secret_code))) - public
    public_lines = {line.strip() for text in public_text for line in text.splitlines()}
    return secret_lines - public_lines, tokens          # a line the chapter also shows openly is no secret


def _public_text():
    """Every chapter's text outside its secrets: a secret line that also occurs here is not a leak."""
    parts = []
    for path in CHAPTERS:
        for cell in nbformat.read(path, as_version=4).cells:
            if "solution" in cell.metadata.get("tags", []):
                continue
            parts.append(re.sub(r"### BEGIN (SOLUTION|HIDDEN TESTS).*?### END (SOLUTION|HIDDEN TESTS)", "", cell.source, flags=re.S))
    return "\n".join(parts)


def _student_text(nb_path):
    """What a student can read in a notebook: cell sources and the text of outputs (not JSON keys)."""
    nb = nbformat.read(nb_path, as_version=4)
    parts = []
    for cell in nb.cells:
        parts.append(cell.source)
        for output in cell.get("outputs", []):
            parts.append(output.get("text", ""))
            parts += [v for k, v in output.get("data", {}).items() if k.startswith("text/") and isinstance(v, str)]
    return "\n".join(parts)


def test_every_chapter_has_exercises_of_both_kinds():
    for path in CHAPTERS:
        info = assignments.parse(path)
        assert info.solutions and info.checks and info.worked, f"{path.name} needs a coding exercise with a check and a worked solution"


def test_generation_is_deterministic(tmp_path):
    assignments.build(out=tmp_path / "a", verify=False, log=lambda *_: None)
    assignments.build(out=tmp_path / "b", verify=False, log=lambda *_: None)
    files_a = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*") if p.is_file())
    assert files_a == files_b and len(files_a) == 3 * len(WITH_EXERCISES) + 1
    for rel in files_a:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel


@pytest.mark.parametrize("path", WITH_EXERCISES, ids=lambda p: p.stem)
def test_no_token_of_a_reference_solution_in_the_student_version(path, tmp_path):
    assignments.build([path.stem], tmp_path, verify=False, log=lambda *_: None)
    student = _student_text(tmp_path / "student" / path.name)
    lines, tokens = _secrets(path)
    assert lines and tokens, "the chapter should have solution lines to protect"
    leaked = [line for line in lines if line in student] + [t for t in tokens if re.search(rf"\b{t}\b", student)]
    assert not leaked, f"solution text in the student version of {path.name}: {leaked[:5]}"
    autograder = _student_text(tmp_path / "autograder" / path.name)
    assert "### BEGIN HIDDEN TESTS" in autograder and "BEGIN SOLUTION" not in autograder


@pytest.mark.slow
@pytest.mark.parametrize("path", WITH_EXERCISES, ids=lambda p: p.stem)
def test_checks_fail_on_the_student_version(path, tmp_path):
    """Every check fails, saying "not implemented yet", on the unmodified student version. That the
    checks pass on the reference solution is tested by nbval, which executes the chapter itself with
    the hidden checks inline (``assignments build --verify`` does both for instructors)."""
    summary = assignments.build([path.stem], tmp_path, verify=True, reference=False, log=lambda *_: None)
    assert summary[path.stem]["checks"] >= 1 and summary[path.stem]["verify_s"] > 0


@pytest.mark.parametrize("cells, message", [
    ([new_code_cell("def f():\n    ### BEGIN SOLUTION\n    return 1\n", metadata=_solution_meta())], "no matching"),
    ([new_code_cell("def f():\n    ### END SOLUTION\n", metadata=_solution_meta())], "without a preceding"),
    ([new_code_cell("def f():\n    ### BEGIN SOLUTION\n    return 1\n    ### END SOLUTION\n")], "lacks nbgrader.solution"),
    ([new_code_cell("def f():\n    return 1\n", metadata=_solution_meta())], "no '### BEGIN SOLUTION' region"),
    ([new_code_cell("x = 1\n### BEGIN HIDDEN TESTS\nassert x\n### END HIDDEN TESTS\n")], "hidden tests outside a check cell"),
    ([new_code_cell("assert True", metadata=_check_meta(points=0))], "positive nbgrader.points"),
    ([new_code_cell("assert True", metadata=_check_meta()), new_code_cell("assert 1", metadata=_check_meta())], "duplicate grade_id"),
    ([new_markdown_cell("```{solution} ex-1\nThe answer.\n```")], "not tagged 'solution'"),
])
def test_malformed_markup_names_the_notebook_and_cell(tmp_path, cells, message):
    path = _notebook(tmp_path / "99_broken.ipynb", cells)
    with pytest.raises(MarkupError) as info:
        assignments.parse(path)
    assert "99_broken.ipynb, cell " in str(info.value) and "(id cell" in str(info.value) and message in str(info.value)


def _toy(tmp_path, check_source):
    return _notebook(tmp_path / "01_toy.ipynb", [
        new_markdown_cell("# Toy"),
        new_code_cell("def double(x):\n    ### BEGIN SOLUTION\n    return 2 * x\n    ### END SOLUTION\n", metadata=_solution_meta("ex-double")),
        new_code_cell(check_source, metadata=_check_meta("check-double", 3)),
    ])


def test_verification_rejects_a_check_that_cannot_fail(tmp_path):
    _toy(tmp_path, "assert True")
    with pytest.raises(VerificationError, match="cannot fail"):
        assignments.build(out=tmp_path / "out", book=tmp_path, log=lambda *_: None)


def test_verification_rejects_a_check_that_fails_on_the_reference(tmp_path):
    _toy(tmp_path, "assert double(2) == 5")
    with pytest.raises(VerificationError, match="fail on the reference"):
        assignments.build(out=tmp_path / "out", book=tmp_path, log=lambda *_: None)


def test_grading_uses_the_hidden_checks_and_ignores_edits_to_check_cells(tmp_path):
    path = _toy(tmp_path, "assert double(1) == 2\n### BEGIN HIDDEN TESTS\nassert double(5) == 10\n### END HIDDEN TESTS\n")
    assignments.build(out=tmp_path / "out", book=tmp_path, log=lambda *_: None)
    autograder = tmp_path / "out" / "autograder" / path.name
    student = nbformat.read(tmp_path / "out" / "student" / path.name, as_version=4)
    assert "double(5)" not in json.dumps(student)

    def submit(body, check=None):
        nb = nbformat.read(tmp_path / "out" / "student" / path.name, as_version=4)
        for cell in nb.cells:
            if cell.metadata.get("nbgrader", {}).get("solution"):
                cell.source = f"def double(x):\n    {body}\n"
            if check is not None and cell.metadata.get("nbgrader", {}).get("grade"):
                cell.source = check
        return nb

    right = assignments.grade(submit("return x + x"), autograder, cwd=tmp_path)
    assert [(r.passed, r.earned) for r in right] == [(True, 3.0)]
    public_only = assignments.grade(submit("return 2"), autograder, cwd=tmp_path)  # passes the public check only
    assert not public_only[0].passed and public_only[0].earned == 0
    tampered = assignments.grade(submit("return 2", check="pass"), autograder, cwd=tmp_path)
    assert not tampered[0].passed


def test_unknown_chapter_name(tmp_path):
    with pytest.raises(ValueError, match="no chapter"):
        assignments.build(["99"], tmp_path, verify=False)


@pytest.mark.slow
def test_student_book_has_no_solutions_in_html_notebooks_or_binder(tmp_path):
    out = assignments.student_book(tmp_path / "student", repository="https://github.com/example/course-student", branch="student")
    config = (out / "_config.yml").read_text()
    assert "https://github.com/example/course-student" in config and "execute_notebooks: 'off'" in config
    html = out / "_build" / "html"
    pages = list(html.rglob("*.html")) + list(html.rglob("*.ipynb"))
    assert any(p.suffix == ".ipynb" for p in pages), "the downloadable notebooks should be in the build"
    binder = (html / "book" / "06_gaussian_kl.html").read_text()
    assert "mybinder.org/v2/gh/example/course-student/student" in binder  # launch buttons: student repository and branch
    assert "vae-course/vae-course" not in binder
    public = _public_text()
    for path in WITH_EXERCISES:
        lines = {line for line in _secrets(path)[0] if line not in public}
        for page in pages + list((out / "book").glob("*.ipynb")):
            text = page.read_text(errors="ignore")
            leaked = [line for line in lines if line in text]
            assert not leaked, f"{page.relative_to(out)} shows solution lines of {path.name}: {leaked[:3]}"


def test_grade_command_exits_nonzero_when_a_check_fails(tmp_path, capsys):
    """An instructor's script tests the exit status: 0 only when every check passes."""
    from companion.cli import main

    path = _toy(tmp_path, "assert double(1) == 2")
    assignments.build(out=tmp_path / "out", book=tmp_path, log=lambda *_: None, verify=False)
    autograder = str(tmp_path / "out" / "autograder" / path.name)
    student = tmp_path / "out" / "student" / path.name
    assert main(["assignments", "grade", str(student), "--autograder", autograder]) == 1
    assert "score: 0 / 3" in capsys.readouterr().out
    nb = nbformat.read(student, as_version=4)
    for cell in nb.cells:
        if cell.metadata.get("nbgrader", {}).get("solution"):
            cell.source = "def double(x):\n    return x + x\n"
    nbformat.write(nb, str(tmp_path / "right.ipynb"))
    assert main(["assignments", "grade", str(tmp_path / "right.ipynb"), "--autograder", autograder]) == 0
    assert "score: 3 / 3" in capsys.readouterr().out


def _nbgrader(course, *args):
    import subprocess
    import sys

    import os
    from pathlib import Path

    # nbgrader runs alembic, a command of the environment's bin folder, which need not be on PATH
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    done = subprocess.run([sys.executable, "-m", "nbgrader", *args, "--force"], cwd=course, capture_output=True,
                          text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]


@pytest.mark.slow
def test_nbgrader_with_the_shipped_config_removes_worked_solutions_and_grades(tmp_path):
    """nbgrader itself, with the repository's nbgrader_config.py: generate_assignment leaves none of the
    worked solutions (cells tagged 'solution', which nbgrader alone keeps), and autograde gives the
    reference solution full marks and the unmodified release none."""
    import shutil

    from companion.paths import REPO

    chapter = next(p for p in WITH_EXERCISES if p.stem.startswith("02_"))
    course = tmp_path / "course"
    (course / "source" / "ch").mkdir(parents=True)
    shutil.copy(chapter, course / "source" / "ch" / chapter.name)
    (course / "nbgrader_config.py").write_text((REPO / "nbgrader_config.py").read_text()
                                               + '\nc.CourseDirectory.course_id = "test"\n')
    _nbgrader(course, "generate_assignment", "ch")
    release = nbformat.read(course / "release" / "ch" / chapter.name, as_version=4)
    source = nbformat.read(chapter, as_version=4)
    worked = [c.source for c in source.cells if "solution" in c.metadata.get("tags", [])]
    assert worked and not [c for c in release.cells if c.source in worked or "{solution}" in c.source]
    public = _public_text()
    secret = {line for line in _secrets(chapter)[0] if line not in public}
    shown = _student_text(course / "release" / "ch" / chapter.name)
    assert secret and not [line for line in secret if line in shown]

    reference = {c.metadata["nbgrader"]["grade_id"]: c.source for c in source.cells
                 if c.metadata.get("nbgrader", {}).get("solution")}
    right = nbformat.read(course / "release" / "ch" / chapter.name, as_version=4)
    for cell in right.cells:
        meta = cell.metadata.get("nbgrader", {})
        if meta.get("solution"):
            cell.source = "\n".join(line for line in reference[meta["grade_id"]].splitlines() if "SOLUTION" not in line)
    for student, nb in (("reference", right), ("stub", release)):
        (course / "submitted" / student / "ch").mkdir(parents=True)
        nbformat.write(nb, str(course / "submitted" / student / "ch" / chapter.name))
    _nbgrader(course, "autograde", "ch")
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gradebook:
        scores = {s: (gradebook.find_submission("ch", s).score, gradebook.find_submission("ch", s).max_score)
                  for s in ("reference", "stub")}
    points = sum(assignments.parse(chapter).checks.values())
    assert scores == {"reference": (points, points), "stub": (0.0, points)}
