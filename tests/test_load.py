"""Four browser-protocol sessions at once against a real `streamlit run` server (the small version of
benchmarks/bench_load.py, on the tiny fixture zoo): every β move brings a new grid, no errors, every
session still answering at the end. Bounded: each wait has a timeout and the whole run a deadline."""
from __future__ import annotations

import importlib.util
import os
import sys
import time
from pathlib import Path

from reliability_counts import record

ROOT = Path(__file__).resolve().parents[1]
SESSIONS, MOVES, DEADLINE_S = 4, 2, 240


def bench_load():
    spec = importlib.util.spec_from_file_location("bench_load", ROOT / "benchmarks" / "bench_load.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_load"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_four_sessions_move_the_beta_slider_at_once(app_fixture):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CSAE_CHECKPOINTS_DIR": str(app_fixture["checkpoints"]),
           "CSAE_DATA_DIR": str(app_fixture["data"])}
    t0 = time.monotonic()
    (row,) = bench_load().run_load([SESSIONS], MOVES, timeout=60, env=env)
    assert time.monotonic() - t0 < DEADLINE_S
    assert row["errors"] == 0, row["error_examples"]
    assert row["moves"] == SESSIONS * MOVES and row["held"] == SESSIONS, row
    record("sessions held", row["held"])
