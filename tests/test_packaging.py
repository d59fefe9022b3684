"""Packaging and structure: every command but `assignments` runs on the core dependencies alone, the
Binder environment matches pyproject.toml, and the package's modules import each other one way only."""

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

from companion.paths import REPO

#: Modules of the optional extras and of what only notebooks use, hidden from the commands below;
#: ``platformdirs`` (the cache folder has a fallback) and ``resource`` (POSIX only: Windows lacks it)
#: too. The GPU machines of this project have torch, torchvision, sympy, matplotlib, scipy and tqdm only.
HIDDEN = ("nbformat", "nbgrader", "nbclient", "nbconvert", "yaml", "jupyter_book", "sphinx_exercise", "nbval",
          "ipykernel", "ipywidgets", "IPython", "jupyter_client", "pytest", "platformdirs", "resource", "daft",
          "myst_nb")
#: Distribution name -> module name, for the optional dependencies whose names differ.
MODULE_OF = {"daft-pgm": "daft", "pyyaml": "yaml", "jupyter-book": "jupyter_book", "sphinx-exercise": "sphinx_exercise"}

BLOCKER = f"""
import importlib.abc, sys
HIDDEN = {HIDDEN!r}
class Hide(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in HIDDEN:
            raise ModuleNotFoundError(f"No module named {{name!r}} (hidden by the test)", name=name)
for name in list(sys.modules):
    if name.split(".")[0] in HIDDEN:
        del sys.modules[name]
sys.meta_path.insert(0, Hide())
from companion.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _pyproject() -> dict:
    tomllib = pytest.importorskip("tomllib" if sys.version_info >= (3, 11) else "tomli")
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[ ;]", requirement, maxsplit=1)[0].strip().lower()


def test_every_optional_dependency_is_hidden_below():
    extras = _pyproject()["project"]["optional-dependencies"]
    names = {_name(r) for group in extras.values() for r in group} - {"vae-course-companion"}
    modules = {MODULE_OF.get(n, n.replace("-", "_")) for n in names}
    assert modules <= set(HIDDEN), f"add to HIDDEN: {sorted(modules - set(HIDDEN))}"


def _run(args, cwd, tmp_path):
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PYTHONPATH": str(REPO),
           "COMPANION_CACHE": str(tmp_path / "cache"), "XDG_CACHE_HOME": str(tmp_path / "xdg")}
    return subprocess.run([sys.executable, "-c", BLOCKER, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=900)


@pytest.mark.slow
def test_commands_run_with_the_core_dependencies_alone(data_root, tmp_path):
    """`train` used to fail with ModuleNotFoundError: nbformat, because the command line imported the
    instructors' extra at start; `import resource` failed on Windows."""
    common = ["--data-root", str(data_root), "--device", "cpu", "--no-progress"]
    for args in (["train", "vae", "--epochs", "1", "--hidden", "16", "--latent-dim", "2", "--out", "run", *common],
                 ["reproduce", "vae-mlp-mnist-z2", "--epochs", "0", "--iwae-k", "2", "--results", "results", *common],
                 ["reproduce", "--list"],
                 ["data", "--data-root", str(data_root), "--no-download"]):
        done = _run(args, tmp_path, tmp_path)
        assert done.returncode == 0, f"{args[:2]}: {done.stderr[-3000:]}"
        assert "hidden by the test" not in done.stdout + done.stderr
    assert (tmp_path / "run" / "metrics.json").is_file()
    assert (tmp_path / "results" / "vae-mlp-mnist-z2" / "metrics.json").is_file()
    assert (tmp_path / "cache" / "MNIST" / "raw" / "train-images-idx3-ubyte").is_file()
    # without platformdirs and with no COMPANION_CACHE the cache falls back to ~/.cache/companion
    print_cache = BLOCKER.replace("from companion.cli import main\nsys.exit(main(sys.argv[1:]))",
                                  "from companion.data import cache_dir\nprint(cache_dir())")
    env_free = subprocess.run([sys.executable, "-c", print_cache],
                              env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PYTHONPATH": str(REPO)},
                              capture_output=True, text=True, timeout=300)
    assert env_free.stdout.strip() == str(tmp_path / ".cache" / "companion"), env_free.stderr[-2000:]
    # the one command that needs the extra says which one to install
    done = _run(["assignments", "build", "--out", "a"], tmp_path, tmp_path)
    assert done.returncode == 2 and "pip install -e '.[instructor]'" in done.stderr and "Traceback" not in done.stderr


def test_environment_yml_matches_pyproject():
    """Binder's environment holds pyproject.toml's core dependencies with the same lower bounds (conda's
    pytorch-cpu is PyPI's torch), plus only the book extra's packages, Python, pip and JupyterLab."""
    import yaml   # pyyaml comes with the dev extra, which the test command installs
    project = _pyproject()["project"]
    core = {_name(r): r[len(_name(r)):].replace(" ", "") for r in project["dependencies"]}
    book = {_name(r) for r in project["optional-dependencies"]["book"]}
    conda = {}
    for entry in yaml.safe_load((REPO / "environment.yml").read_text())["dependencies"]:
        name = _name(entry)
        conda[{"pytorch-cpu": "torch"}.get(name, name)] = entry[len(name):].replace(" ", "")
    assert {name: conda.get(name) for name in core} == core
    assert set(conda) - set(core) <= book | {"python", "pip", "jupyterlab"}, set(conda) - set(core) - book


def _imports(path: Path) -> set[str]:
    """The companion modules ``path`` imports, at module level or inside functions."""
    package = "companion" + ("." + path.parent.name if path.parent.name != "companion" else "")
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package.split(".")[: len(package.split(".")) - node.level + 1]
            target = ".".join(base + ([node.module] if node.module else []))
            names = [target] if node.module else [f"{target}.{a.name}" for a in node.names]
            found |= {n for n in names}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("companion")}
    return found


def test_modules_import_each_other_one_way():
    """No cycle in the import graph of companion's modules (frechet and reproduce used to import each other)."""
    root = REPO / "companion"
    modules = {}
    for path in root.rglob("*.py"):
        name = ".".join(("companion", *path.relative_to(root).with_suffix("").parts)).removesuffix(".__init__")
        modules[name] = path
    graph = {name: {m for m in _imports(path) if m in modules and m != name} for name, path in modules.items()}
    graph = {name: deps - {"companion.models"} if name.startswith("companion.models.") else deps
             for name, deps in graph.items()}
    state: dict[str, int] = {}

    def visit(node, trail):
        state[node] = 1
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                pytest.fail("import cycle: " + " -> ".join(trail[trail.index(dep):] + [dep]))
            if dep not in state:
                visit(dep, trail + [dep])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert "companion.reproduce" not in graph["companion.frechet"] and "companion.paths" in graph["companion.frechet"]
