"""Dependencies by role (pyproject.toml): every third-party module the code imports is declared for the role
that runs it (the library alone, the explorer [app], tests/benchmarks/results [dev]), and requirements.txt,
the pinned full set the README's install line uses, names each of them too."""
from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOCAL = {"csae_core", "app", "conftest", "reliability_counts"}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_name(line: str) -> str:
    return _norm(re.split(r"[<>=!~\[;\s]", line.strip(), maxsplit=1)[0])


def third_party(folders) -> dict[str, str]:
    """{module: a file importing it} for the top-level modules imported under `folders`, local ones left out."""
    # Scripts that import each other by file name; the repo's own files only (a .venv inside the checkout
    # holds a pyarrow.py, which would pass `import pyarrow` off as local).
    own = (p for p in ROOT.rglob("*.py") if not any(part.startswith(".") or part in ("runs", "data")
                                                     for part in p.relative_to(ROOT).parts[:-1]))
    local = LOCAL | {p.stem for p in own}
    found = {}
    for folder in folders:
        for f in sorted((ROOT / folder).rglob("*.py")):
            for n in ast.walk(ast.parse(f.read_text())):
                names = [a.name for a in n.names] if isinstance(n, ast.Import) else \
                    [n.module] if isinstance(n, ast.ImportFrom) and n.level == 0 and n.module else []
                for top in (m.split(".")[0] for m in names):
                    if top not in sys.stdlib_module_names and top not in local:
                        found.setdefault(top, str(f.relative_to(ROOT)))
    return found


def distribution(module: str) -> str:
    return _norm(packages_distributions()[module][0])


def declared() -> dict[str, set[str]]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    lib = {_requirement_name(r) for r in project["dependencies"]}
    app = lib | {_requirement_name(r) for r in extras["app"]}
    dev = app | {_requirement_name(r) for r in extras["dev"]}
    return {"lib": lib, "app": app, "dev": dev}


def test_every_import_is_declared_for_the_role_that_runs_it():
    roles = declared()
    missing = []
    for role, folders in (("lib", ["csae_core"]), ("app", ["app", "pages"]),
                          ("dev", ["tests", "benchmarks", "results", "checkpoints", "deploy"])):
        missing += [f"{file} imports {module} ({distribution(module)}), not in {role}"
                    for module, file in third_party(folders).items() if distribution(module) not in roles[role]]
    assert not missing


def test_the_library_alone_needs_no_streamlit_nor_test_tools():
    lib = declared()["lib"]
    assert not lib & {"streamlit", "plotly", "pandas", "pytest", "playwright"}
    assert "pywavelets" in lib  # csae_core.limits and pytorch-wavelets import pywt at run time


def test_requirements_txt_pins_the_full_set():
    pinned = {_requirement_name(line) for line in (ROOT / "requirements.txt").read_text().splitlines()
              if line.strip() and not line.startswith(("#", "-e"))}
    assert declared()["dev"] - {"csae-explorer"} <= pinned
    assert "torch==2.13.0" in (ROOT / "requirements.txt").read_text().split()
