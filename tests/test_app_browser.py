"""Real-browser test: `streamlit run app/explorer.py` in a subprocess, driven by headless Chromium.

Uses Debian's /usr/bin/chromium (Playwright's own browser download is not available here); the
test is skipped when it is missing. Screenshots go to the test's tmp_path.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from app import streamlit_server  # app/streamlit_server.py: the one server start (README's command)
from conftest import explorer_pages

ROOT = Path(__file__).resolve().parents[1]

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} not installed (apt-get install chromium)")
TIMEOUT_MS = 60_000  # 2 shared cores: the first page loads torch and the models


@pytest.fixture(scope="module")
def server(app_fixture, tmp_path_factory):
    """The app served on a free loopback port against the fixture zoo and data; yields its URL."""
    env = {**os.environ, "CSAE_CHECKPOINTS_DIR": str(app_fixture["checkpoints"]),
           "CSAE_DATA_DIR": str(app_fixture["data"])}
    try:
        with streamlit_server.running(env, log=tmp_path_factory.mktemp("server") / "streamlit.log", timeout=60) as url:
            yield url
    except RuntimeError as e:
        pytest.fail(str(e))


@pytest.fixture
def page(server):
    """A fresh headless-Chromium page (1400 x 1000) on the running app."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM))
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(TIMEOUT_MS)
        yield page
        browser.close()


def test_beta_slider_in_a_real_browser(server, page, tmp_path):
    page.goto(f"{server}/reconstructions")

    grid = page.locator('[data-testid="stImage"] img').first
    grid.wait_for(state="visible")
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=grid.element_handle())
    # Only the views app/explorer.py registers are in the navigation: no auto-discovered pages/ entries.
    assert page.locator('[data-testid="stSidebarNavLink"]').count() == len(explorer_pages())
    before_src = grid.get_attribute("src")
    before_png = grid.screenshot(path=str(tmp_path / "grid_beta_0.04.png"))
    page.screenshot(path=str(tmp_path / "page_beta_0.04.png"), full_page=True)

    thumb = page.locator('[data-testid="stSlider"]').filter(has_text="β").get_by_role("slider")
    thumb.focus()
    page.keyboard.press("ArrowRight")  # β 0.04 -> 0.08
    page.wait_for_function(
        "([sel, old]) => { const i = document.querySelector(sel); return i && i.src !== old && i.complete; }",
        arg=['[data-testid="stImage"] img', before_src])
    grid = page.locator('[data-testid="stImage"] img').first
    after_src = grid.get_attribute("src")
    after_png = grid.screenshot(path=str(tmp_path / "grid_beta_0.08.png"))
    page.screenshot(path=str(tmp_path / "page_beta_0.08.png"), full_page=True)
    assert page.get_by_text("CSAE β=0.08").count() >= 1
    assert after_src != before_src
    assert after_png != before_png, "the reconstructions must look different after the β change"


def test_drawing_a_letter_on_the_canvas(server, page, tmp_path):
    page.goto(f"{server}/letters")
    canvas = page.locator("canvas.upper-canvas")  # fabric.js's input layer (inside the component's shadow root)
    canvas.scroll_into_view_if_needed()
    box = canvas.bounding_box()
    x, y = box["x"], box["y"]
    # An "L", started below the component's toolbar, which overlaps the top ~40 px of the canvas.
    page.mouse.move(x + 70, y + 60)
    page.mouse.down()
    for i in range(16):
        page.mouse.move(x + 70, y + 60 + 7 * i, steps=2)
    for i in range(10):
        page.mouse.move(x + 70 + 8 * i, y + 165, steps=2)
    page.mouse.up()
    page.get_by_text("Preprocessing of drawing").wait_for()
    page.get_by_text("resized to 28x28").first.wait_for()
    page.screenshot(path=str(tmp_path / "letters_drawing.png"))
    assert page.locator('[data-testid="stException"]').count() == 0
    assert page.get_by_text("CSAE β=0.04").count() >= 2  # EMNIST rows and the drawing's rows
