"""Real-browser check of the Open set view and the letter verdicts (headless Chromium, fixture zoo and data).

Reuses the app server and page fixtures of test_app_browser.py; skipped where /usr/bin/chromium is missing.
"""
from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from test_app import letter_png
from test_app_browser import CHROMIUM, page, server  # noqa: F401  (pytest fixtures)

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} not installed (apt-get install chromium)")


def test_open_set_view_and_threshold_in_a_real_browser(server, page, tmp_path):  # noqa: F811
    page.goto(f"{server}/open_set")
    page.get_by_text("Scores of known and unknown images").wait_for()
    page.locator(".js-plotly-plot").nth(1).wait_for(state="visible")  # histogram and ROC drawn
    assert page.locator('[data-testid="stException"]').count() == 0
    rates = page.get_by_text("At this threshold")
    before = rates.inner_text()
    thumb = page.locator('[data-testid="stSlider"]').filter(has_text="Threshold").get_by_role("slider")
    thumb.focus()
    page.keyboard.press("Home")  # the lowest threshold: hardly anything is accepted
    page.wait_for_function("old => ![...document.querySelectorAll('p')].some(p => p.innerText === old)",
                           arg=before)
    page.screenshot(path=str(tmp_path / "open_set.png"), full_page=True)
    assert page.get_by_text("At this threshold").inner_text() != before


def test_letter_verdicts_in_a_real_browser(server, page, tmp_path):  # noqa: F811
    page.goto(f"{server}/letters")
    page.get_by_text("Verdicts: unknown, or which digit?").wait_for()
    slider = page.locator('[data-testid="stSlider"]').filter(has_text="Unknown beyond")
    slider.wait_for()
    table = page.locator('[data-testid="stDataFrame"]').first
    table.wait_for()
    page.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files(
        files=[{"name": "L.png", "mimeType": "image/png", "buffer": letter_png()}])
    verdict = page.get_by_text(re.compile(r"^Verdict \(")).first  # the uploaded letter's verdict line
    verdict.wait_for()
    thumb = slider.get_by_role("slider")
    thumb.focus()
    page.keyboard.press("Home")  # threshold 0: every letter is unknown
    expect(slider.locator('[data-testid="stSliderThumbValue"]')).to_have_text("0.00")
    expect(verdict).to_have_text(re.compile(r": unknown$"), timeout=30_000)
    page.keyboard.press("End")  # the largest threshold: the letter is taken for a digit
    expect(verdict).to_have_text(re.compile(r": [0-9]$"), timeout=30_000)
    page.screenshot(path=str(tmp_path / "letters_verdicts.png"), full_page=True)
    assert page.locator('[data-testid="stException"]').count() == 0
