"""Real-browser test of the Train view: start a tiny job, watch the progress bar advance, and find the new
model in Reconstructions' β slider. Headless Debian Chromium as in test_app_browser.py; slow (it trains)."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from app import streamlit_server  # app/streamlit_server.py: the one server start (README's command)
from test_app_browser import CHROMIUM, TIMEOUT_MS

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} not installed (apt-get install chromium)"),
              pytest.mark.slow]


@pytest.fixture
def train_server(app_fixture, tmp_path):
    from app import training_plan

    user = tmp_path / "user_models"
    user.mkdir()
    speeds = {training_plan.speed_key(training_plan.Plan(dataset="mnist", recipe=r)): 100.0 for r in ("quick", "tiny")}
    (user / "speed.json").write_text(json.dumps(speeds))  # no speed measurement in the test
    env = {**os.environ, "CSAE_CHECKPOINTS_DIR": str(app_fixture["checkpoints"]), "CSAE_DATA_DIR": str(app_fixture["data"]),
           "CSAE_USER_MODELS_DIR": str(user), "CSAE_TRAIN_THREADS": "1", "CSAE_APP_WARMUP": "0"}
    with streamlit_server.running(env, log=tmp_path / "streamlit.log", timeout=60) as url:
        yield url, user


def test_train_in_a_real_browser(train_server, tmp_path):
    from playwright.sync_api import sync_playwright

    url, user = train_server
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM))
        page = browser.new_page(viewport={"width": 1400, "height": 1200})
        page.set_default_timeout(TIMEOUT_MS)
        page.goto(f"{url}/train")
        page.get_by_text("Estimated time").wait_for()
        page.locator('[data-testid="stSelectbox"]').filter(has_text="Recipe").click()
        page.get_by_role("option", name="tiny", exact=False).click()
        beta = page.get_by_role("spinbutton", name="β (latent noise in training)")
        beta.fill("0.3")
        beta.press("Enter")
        page.wait_for_timeout(1000)
        page.get_by_role("button", name="Start training").click()

        bar = page.locator('[data-testid="stProgress"]').first
        bar.wait_for()
        seen, deadline = [], time.monotonic() + 120
        while time.monotonic() < deadline:  # the panel refreshes itself every few seconds
            seen.append(int(bar.get_by_role("progressbar").get_attribute("aria-valuenow") or 0))
            if seen[-1] >= 100:
                break
            page.wait_for_timeout(500)
        page.screenshot(path=str(tmp_path / "train.png"), full_page=True)
        assert seen[0] < seen[-1] == 100, f"the progress bar must advance to the end, saw {sorted(set(seen))}"
        page.get_by_text("listed in every view").wait_for()
        # The Loss1/Loss2/accuracy curves: they can reach the browser after that text (counting at once failed
        # in one CI run), so wait for them; a panel without curves still fails, at the timeout.
        page.locator('[data-testid="stPlotlyChart"]').first.wait_for()
        assert page.locator('[data-testid="stException"]').count() == 0

        page.goto(f"{url}/reconstructions")
        slider = page.locator('[data-testid="stSlider"]').filter(has_text="β")
        thumb = slider.get_by_role("slider")
        thumb.wait_for()
        thumb.focus()
        page.keyboard.press("End")  # β 0.3, the largest: the user's model
        page.get_by_text("your CSAE β=0.3").first.wait_for()
        page.screenshot(path=str(tmp_path / "reconstructions.png"), full_page=True)
        assert page.locator('[data-testid="stException"]').count() == 0
        browser.close()
