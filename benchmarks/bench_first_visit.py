"""First visit to every view: a fresh server, a real browser (Debian's Chromium through Playwright).

    python benchmarks/bench_first_visit.py                 # 3 fresh servers, the real zoo in checkpoints/
    python benchmarks/bench_first_visit.py --repeats 5 --data-dir D --json F
    python benchmarks/bench_first_visit.py --store cold    # each server with an empty on-disk store

Per repeat: `streamlit run app/explorer.py` starts fresh; Chromium opens its Home page (the very first
page of a fresh server: "Home (first page)"); once the server has been up --settle seconds (10: the
issue's "once the server has been up for 10 s"), each other view is opened in turn from the sidebar, as
a user does, in the same tab. A view counts as shown when its title is on screen, the script run has
finished (the app's data-test-script-state is notRunning) and every image in it has loaded. Printed:
the median over repeats per view, every run, and the machine's load average at the start and end (a
figure taken beside other jobs is a loaded-machine figure). The browser's own start-up is not counted.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

from app import streamlit_server  # app/streamlit_server.py: the one server start (README's command)

ROOT = Path(__file__).resolve().parents[1]

CHROMIUM = Path("/usr/bin/chromium")
# (sidebar link, the page's st.title): app/explorer.py's navigation order
VIEWS = [("PEDCC sphere", "PEDCC on the sphere"), ("Distance matrix", "Distance matrix"),
         ("Reconstructions", "Reconstructions"), ("Class sampling", "Class sampling"),
         ("Letters (EMNIST)", "Letters: extrapolation"), ("Open set", "Open set: known or unknown?"),
         ("Latent space", "Latent space")]
HOME = ("Home", "CSAE Explorer")


def wait_shown(page, title: str) -> None:
    """Until the view titled `title` is drawn: title visible, the script run finished, its images loaded."""
    page.get_by_role("heading", name=title, exact=True).first.wait_for(state="visible")
    page.wait_for_selector('[data-testid="stApp"][data-test-script-state="notRunning"]')
    page.wait_for_function("() => [...document.querySelectorAll('[data-testid=\"stMain\"] img')]"
                           ".every(i => i.complete)")


def one_server(env: dict, settle: float) -> dict:
    """Seconds to show each view once, on one fresh server: {"Home (first page)": s, view: s, ...}."""
    from playwright.sync_api import sync_playwright

    port = streamlit_server.free_port()
    url = f"http://127.0.0.1:{port}"
    times: dict[str, float] = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM))
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(120_000)
        proc = streamlit_server.start(port, env)
        up = time.perf_counter()
        try:
            t0 = time.perf_counter()
            page.goto(url)
            wait_shown(page, HOME[1])
            times["Home (first page)"] = time.perf_counter() - t0
            time.sleep(max(0.0, settle - (time.perf_counter() - up)))
            for link, title in VIEWS:
                t0 = time.perf_counter()
                page.get_by_role("link", name=link).first.click()
                wait_shown(page, title)
                times[link] = time.perf_counter() - t0
        finally:
            browser.close()
            streamlit_server.stop(proc)
    return times


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=3, help="fresh servers (medians over them)")
    p.add_argument("--settle", type=float, default=10.0, help="seconds the server is up before the other views")
    p.add_argument("--checkpoints-dir", help="CSAE_CHECKPOINTS_DIR for the server (default: checkpoints/)")
    p.add_argument("--data-dir", help="CSAE_DATA_DIR for the server")
    p.add_argument("--json", help="write the runs and medians here")
    p.add_argument("--store", choices=("warm", "cold"), default="warm",
                   help="app/disk_store.py: warm (default) = filled by an untimed first server, as every start "
                        "after a machine's first; cold = empty for each server (a machine's very first start)")
    a = p.parse_args(argv)
    if not CHROMIUM.exists():
        print(f"error: {CHROMIUM} not found. Fix: apt-get install chromium", file=sys.stderr)
        return 2
    if not 1 <= a.repeats <= 50 or not 0 <= a.settle <= 600:
        print("error: --repeats in 1..50, --settle in 0..600", file=sys.stderr)
        return 2
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("CSAE_APP_WARMUP", None)  # the server as shipped: warm-up on
    if a.checkpoints_dir:
        env["CSAE_CHECKPOINTS_DIR"] = str(Path(a.checkpoints_dir).resolve())
    if a.data_dir:
        env["CSAE_DATA_DIR"] = str(Path(a.data_dir).resolve())
    import tempfile
    store = tempfile.mkdtemp(prefix="csae-bench-store-")
    env["CSAE_CACHE_DIR"] = store
    if a.store == "warm":
        one_server(env, a.settle)  # untimed: fills the store, as a machine's first start does
    load_start = os.getloadavg()[0]
    runs = []
    for _ in range(a.repeats):
        if a.store == "cold":
            env["CSAE_CACHE_DIR"] = tempfile.mkdtemp(prefix="csae-bench-store-")
        runs.append(one_server(env, a.settle))
    load_end = os.getloadavg()[0]
    medians = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    print(f"| view | first visit, median of {a.repeats} fresh servers | runs (s) |")
    print("|---|---:|---|")
    for k, m in medians.items():
        print(f"| {k} | {m * 1000:.0f} ms | {', '.join(f'{r[k]:.2f}' for r in runs)} |")
    print(f"(on-disk store {a.store}; Chromium {CHROMIUM}, {os.cpu_count()} cores, load average {load_start:.1f} at the start, "
          f"{load_end:.1f} at the end; other views opened once the server had been up {a.settle:g} s)")
    if a.json:
        Path(a.json).write_text(json.dumps({"medians_s": medians, "runs_s": runs, "cores": os.cpu_count(),
                                            "load_start": load_start, "load_end": load_end,
                                            "settle_s": a.settle, "store": a.store}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
