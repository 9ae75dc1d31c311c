"""The layer rules README's Architecture section states: pages -> app -> csae_core, each importing only the
layer below, and the app's memory caches in two modules (loaders; openset for its own view's scores)."""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CACHING = {"app/loaders.py", "app/openset.py"}


def imports(f: Path) -> set[str]:
    out = set()
    for n in ast.walk(ast.parse(f.read_text())):
        if isinstance(n, ast.Import):
            out |= {a.name.split(".")[0] for a in n.names}
        elif isinstance(n, ast.ImportFrom) and n.level == 0 and n.module:
            out.add(n.module.split(".")[0])
    return out


def test_each_layer_imports_only_the_one_below():
    for f in (ROOT / "pages").glob("*.py"):
        assert "csae_core" not in imports(f), f"{f.name} imports csae_core: go through app/"
    for f in (ROOT / "csae_core").glob("*.py"):
        assert not imports(f) & {"app", "streamlit", "plotly", "pandas"}, f"{f.name} reaches above the library"


def test_the_app_caches_in_loaders_and_openset_only():
    cachers = set()
    for f in (ROOT / "app").glob("*.py"):
        for n in ast.walk(ast.parse(f.read_text())):
            if isinstance(n, ast.Attribute) and n.attr in ("cache_data", "cache_resource"):
                cachers.add(f"app/{f.name}")
    for f in (ROOT / "pages").glob("*.py"):
        assert "cache_" not in f.read_text(), f"{f.name} caches: caches live in app/loaders.py"
    assert cachers == CACHING
