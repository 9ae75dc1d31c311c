"""Issue 16's app half: every view against broken zoos and data, through AppTest. A visitor never sees a
traceback: no page raises (at.exception), and no page falls back to the explorer's "unexpected problem"
boundary either (that would mean a defect the page should have handled itself).

Zoos: the fixture zoo plus a CSAE with finite weights and infinite outputs, or with NaN outputs (the default
β, so every page picks it first). Data: the fixture data; EMNIST with only the official test files (no one-per-class);
EMNIST holding only the letters i and l (the "without i, l, o, s, z" unknown set is empty); no data.
The default run covers the cases the issue found; `-m slow` runs every page against every combination.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from conftest import explorer_pages
from reliability_counts import record
from test_reliability2 import _emnist_only, _inf_checkpoint

ROOT = Path(__file__).resolve().parents[1]
ENTRY = ROOT / "app" / "explorer.py"
PAGES = [p for p in explorer_pages() if p != "train"]  # the Train view reads no zoo or data: its own tests
BOUNDARY = "unexpected problem"


@pytest.fixture(scope="module")
def worlds(app_fixture, tmp_path_factory):
    base = tmp_path_factory.mktemp("rel2-app")
    zoos = {}
    for name in ("inf", "nan"):  # mnist/csae-inf or csae-nan at beta 0.02: the default model of every page
        zoos[name] = base / f"zoo-{name}"
        shutil.copytree(app_fixture["checkpoints"], zoos[name])
        _inf_checkpoint(zoos[name], nan=name == "nan")
    partial = base / "partial"
    shutil.copytree(app_fixture["data"], partial)
    for p in (partial / "emnist-letters").glob("*one-per-class*"):
        p.unlink()
    il = _emnist_only(base / "il", [9, 12], app_fixture)
    (base / "none").mkdir()
    return {"zoo": zoos["inf"], "zoos": zoos, "data": {"fixture": app_fixture["data"], "partial": partial, "il": il,
                                 "none": base / "none"}}


def open_page(page: str, monkeypatch, zoo: Path, data: Path) -> AppTest:
    monkeypatch.setenv("CSAE_CHECKPOINTS_DIR", str(zoo))
    monkeypatch.setenv("CSAE_DATA_DIR", str(data))
    monkeypatch.setenv("CSAE_USER_MODELS_DIR", str(zoo.parent / "user_models"))  # the Train view's, not the repo's
    at = AppTest.from_file(str(ENTRY), default_timeout=120).run()
    if page != "home":
        at.switch_page(f"../pages/{page}.py").run()
    record("app pages run against broken zoos or settings", 1)
    return at


def assert_clean(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not [e.value for e in at.error if BOUNDARY in e.value], [e.value for e in at.error]


@pytest.mark.parametrize("page, data", [("letters", "partial"), ("letters", "fixture"), ("open_set", "fixture"),
                                        ("reconstructions", "fixture")])
def test_the_issues_pages(page, data, worlds, monkeypatch):
    at = open_page(page, monkeypatch, worlds["zoo"], worlds["data"][data])
    assert_clean(at)


def test_open_set_with_an_empty_unknown_set(worlds, monkeypatch):
    at = open_page("open_set", monkeypatch, worlds["zoo"], worlds["data"]["il"])
    assert_clean(at)
    box = next(b for b in at.selectbox if b.key == "openset_unknown")
    box.set_value("emnist-letters-no-ilosz").run()
    assert_clean(at)


def test_home_download_from_a_trickling_mirror_returns_with_a_message(worlds, tmp_path, monkeypatch):
    """Issue 16, item 2: a Home-page download click on a mirror sending a byte now and then never returned."""
    import time

    from csae_core import download
    from test_reliability2 import Server, trickle

    monkeypatch.setattr(download, "STALL_WINDOW", 1.0)  # 1 KB/s over 1 s; the real window is 30 s
    server = Server(trickle)
    monkeypatch.setenv("CSAE_DATA_URL", server.url)
    monkeypatch.delenv("CSAE_DATA_SHA256", raising=False)
    try:
        at = open_page("home", monkeypatch, worlds["zoos"]["inf"], tmp_path / "no-data")
        at.checkbox(key="confirm_download_mnist").check().run()
        t0 = time.monotonic()
        at.button(key="download_mnist").click().run()
        assert time.monotonic() - t0 < 30
    finally:
        server.close()
    assert_clean(at)
    assert any("stalled" in e.value for e in at.error), [e.value for e in at.error]


def test_a_failing_page_shows_one_message_and_no_details(app_env, monkeypatch):
    from app import registry

    def broken(*a, **k):
        raise RuntimeError("/srv/secret/path exploded")

    monkeypatch.setattr(registry, "checkpoints_dir", broken)  # called on every run (scan is cached)
    at = AppTest.from_file(str(ENTRY), default_timeout=120).run()
    assert not at.exception
    assert any(BOUNDARY in e.value for e in at.error) and not any("/srv" in e.value for e in at.error)


@pytest.mark.parametrize("page", PAGES)
def test_every_page_with_a_nan_model(page, worlds, monkeypatch):
    assert_clean(open_page(page, monkeypatch, worlds["zoos"]["nan"], worlds["data"]["fixture"]))


@pytest.mark.slow  # 2 zoos x 8 pages x 4 data folders through AppTest: ~20 s
@pytest.mark.parametrize("data", ["fixture", "partial", "il", "none"])
@pytest.mark.parametrize("page", PAGES)
@pytest.mark.parametrize("zoo", ["inf", "nan"])
def test_every_page_every_data(zoo, page, data, worlds, monkeypatch):
    assert_clean(open_page(page, monkeypatch, worlds["zoos"][zoo], worlds["data"][data]))
