"""Explorer latency: what a β-slider move costs on the server, cold and warm, and the app's cold start.

    python benchmarks/bench_app.py            # the real zoo in checkpoints/ if it has MNIST CSAE models
    python benchmarks/bench_app.py --fixture  # always a full-size (paper widths, untrained) stand-in zoo

Figures printed (milliseconds, median of --repeats):
  grid cold      comparison_png for a β not seen yet: load the checkpoint, reconstruct 32 test images,
                 tile and PNG-encode (caches empty)
  grid warm      the same call once cached (what a β move costs after the page has prefetched)
  rerun warm     a whole page rerun after a β move, through streamlit.testing AppTest (server time:
                 script + cache lookups + element serialisation), after the first render
  rerun cold     the same with every cache cleared first (includes prefetching the other β values)
  cold start     `streamlit run app/explorer.py` until /_stcore/health answers; then, in headless
                 Chromium (if /usr/bin/chromium exists), on a fresh server each: (newcomer) Home until
                 shown, --read-seconds on it, then Reconstructions until its grid is shown; (direct)
                 Reconstructions as the very first page until its grid is shown. Each with the
                 background warm-up (app/warmup.py) on and off (CSAE_APP_WARMUP=0: the app before it).
    python benchmarks/bench_app.py --cold-start-only   # just these
The untrained stand-in has the same architecture, so the same compute cost as trained models.
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from app import streamlit_server  # app/streamlit_server.py: the one server start (README's command)

ROOT = Path(__file__).resolve().parents[1]

BETAS = (0.0, 0.02, 0.04, 0.06, 0.08)


def build_standin_zoo(folder: Path) -> Path:
    """MNIST csae models at the paper's β values and a CVAE, paper widths, random weights, no manifest."""
    import torch

    from csae_core.checkpoint import save_checkpoint
    from csae_core.model import ModelConfig, build_model
    from csae_core.pedcc import generate_pedcc

    centroids = generate_pedcc(10, 40, converge=True).scaled()
    for i, (kind, beta) in enumerate([("csae", b) for b in BETAS] + [("cvae", 0.0)]):
        torch.manual_seed(i)
        model = build_model(ModelConfig(kind=kind, beta=beta), centroids if kind == "csae" else None).eval()
        torch.nn.init.normal_(model.decoder.head.weight, std=0.3)  # not a flat output
        meta = {"dataset": "mnist", "class_names": [str(d) for d in range(10)], "epoch": 12, "recipe": "bench",
                "train": {"epochs": 12}, "latent_stats": None}
        save_checkpoint(folder / "mnist" / f"{kind}-{i}", model, meta, half=True)
    return folder


def ms(seconds: float) -> str:
    return f"{seconds * 1000:8.1f} ms"


def bench_grid(entries, folder: str, repeats: int) -> tuple[float, float]:
    """(cold, warm) seconds of comparison_png for one β's 32-image grid."""
    import streamlit as st

    from app import loaders

    idx, _, _ = loaders.test_selection("mnist", folder, None, 32, 0)
    key = tuple(int(i) for i in idx)
    colds, warms = [], []
    for _ in range(repeats):
        for e in entries:
            st.cache_data.clear()
            st.cache_resource.clear()
            t = time.perf_counter()
            loaders.comparison_png(e.path, "mnist", folder, key, 8)
            loaders.reconstruction(e.path, "mnist", folder, key)  # the MSE/PSNR table uses it too
            colds.append(time.perf_counter() - t)
            t = time.perf_counter()
            loaders.comparison_png(e.path, "mnist", folder, key, 8)
            loaders.reconstruction(e.path, "mnist", folder, key)
            warms.append(time.perf_counter() - t)
    return statistics.median(colds), statistics.median(warms)


def bench_rerun(betas: list[float], repeats: int) -> tuple[float, float]:
    """(cold, warm) seconds of a reconstructions-page rerun after a β move, via AppTest."""
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "app" / "explorer.py"), default_timeout=300).run()
    at.switch_page("../pages/reconstructions.py").run()
    assert not at.exception, [e.value for e in at.exception]
    warm, cold = [], []
    for _ in range(repeats):
        for b in betas:
            t = time.perf_counter()
            at.select_slider(key="recon_beta_mnist").set_value(b).run()
            warm.append(time.perf_counter() - t)
        for b in betas:
            st.cache_data.clear()
            st.cache_resource.clear()
            t = time.perf_counter()
            at.select_slider(key="recon_beta_mnist").set_value(b).run()
            cold.append(time.perf_counter() - t)
    assert not at.exception, [e.value for e in at.exception]
    return statistics.median(cold), statistics.median(warm)


def _grid_shown(page) -> None:
    img = page.locator('[data-testid="stImage"] img').first
    img.wait_for(state="visible")
    page.wait_for_function("i => i.complete && i.naturalWidth > 0", arg=img.element_handle())


def bench_cold_start(env: dict, flow: str = "direct", read_seconds: float = 5.0) -> dict:
    """A fresh `streamlit run`: seconds until /_stcore/health answers ("healthy"), then in headless Chromium
    (if /usr/bin/chromium exists; the browser's own start-up is not counted):

    flow "direct":   open /reconstructions as the server's very first page until its grid is shown ("first").
    flow "newcomer": open the Home page (what `streamlit run` opens) until its title is shown ("home"), read
                     it for `read_seconds`, then click Reconstructions in the sidebar until the grid is
                     shown ("first"): the background warm-up (app/warmup.py) has had the reading time.
    """
    t0 = time.perf_counter()
    try:
        port = streamlit_server.free_port()
        log = env.get("BENCH_SERVER_LOG")
        proc = streamlit_server.start(port, env, log=open(log, "wb") if log else None)
        url = f"http://127.0.0.1:{port}"
    except RuntimeError as e:
        raise SystemExit(str(e)) from None
    out: dict = {}
    try:
        out["healthy"] = time.perf_counter() - t0
        if Path("/usr/bin/chromium").exists():
            from playwright.sync_api import sync_playwright

            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path="/usr/bin/chromium")
                page = browser.new_page()
                page.set_default_timeout(300_000)
                if flow == "direct":
                    t0 = time.perf_counter()
                    page.goto(f"{url}/reconstructions")
                    _grid_shown(page)
                    out["first"] = time.perf_counter() - t0
                else:
                    t0 = time.perf_counter()
                    page.goto(url)
                    page.get_by_role("heading", name="CSAE Explorer").first.wait_for(state="visible")
                    out["home"] = time.perf_counter() - t0
                    time.sleep(read_seconds)
                    t0 = time.perf_counter()
                    page.get_by_role("link", name="Reconstructions").first.click()
                    _grid_shown(page)
                    out["first"] = time.perf_counter() - t0
                browser.close()
        return out
    finally:
        streamlit_server.stop(proc)


def report_cold_start(read_seconds: float, repeats: int = 3,
                      flows: tuple[str, ...] = ("newcomer", "direct")) -> None:
    """Both flows, with the warm-up on and off (off = the app before app/warmup.py): `repeats` fresh servers
    each, interleaved so that a burst of load from elsewhere hits both settings; medians, then every run."""
    runs: dict[tuple[str, str], list[dict]] = {}
    for _ in range(repeats):
        for flow in flows:
            for warm in ("1", "0"):
                runs.setdefault((flow, warm), []).append(
                    bench_cold_start({**os.environ, "CSAE_APP_WARMUP": warm}, flow, read_seconds))
    for (flow, warm), rs in runs.items():
        med = {k: statistics.median(r[k] for r in rs) for k in rs[0]}
        tag = f"{flow}, warm-up {'on ' if warm == '1' else 'off'}"
        line = f"cold start [{tag}]: `streamlit run` to healthy {ms(med['healthy'])}"
        if "home" in med:
            line += f" | Home shown {ms(med['home'])}"
        if "first" in med:
            what = f"Reconstructions after {read_seconds:g} s on Home" if flow == "newcomer" else \
                "Reconstructions as the first page"
            line += f" | {what}: grid shown {ms(med['first'])}"
            firsts = ", ".join(f"{r['first']:.2f}" for r in rs)
            line += f"  (runs: {firsts} s)"
        print(line, flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--fixture", action="store_true", help="use a full-size untrained stand-in zoo")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--no-browser", action="store_true", help="skip the cold-start measurement")
    p.add_argument("--cold-start-only", action="store_true", help="only the cold-start / first-visit figures")
    p.add_argument("--read-seconds", type=float, default=5.0,
                   help="newcomer flow: seconds spent on Home before opening Reconstructions")
    p.add_argument("--flow", choices=("newcomer", "direct"), action="append",
                   help="cold-start flow(s) to measure (default: both)")
    a = p.parse_args()
    if a.cold_start_only:
        print(f"cpu cores: {os.cpu_count()}, load average: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
        report_cold_start(a.read_seconds, a.repeats, tuple(a.flow or ("newcomer", "direct")))
        return

    import logging

    from app import loaders, registry

    # Bare-mode "No runtime found" cache warnings, one per call: Streamlit sets each of its loggers'
    # level when it creates them (on import), so quieten them after the imports.
    for name in list(logging.root.manager.loggerDict):
        if name.startswith("streamlit"):
            logging.getLogger(name).setLevel(logging.ERROR)

    entries = [e for e in registry.finals(registry.scan()) if e.dataset == "mnist" and e.kind == "csae"]
    source = f"the zoo in {registry.checkpoints_dir()}"
    if a.fixture or len(entries) < 2:
        tmp = Path(tempfile.mkdtemp(prefix="bench_app_"))
        os.environ[registry.ENV_VAR] = str(build_standin_zoo(tmp / "checkpoints"))
        entries = [e for e in registry.finals(registry.scan()) if e.kind == "csae"]
        why = "--fixture" if a.fixture else "fewer than 2 trained MNIST CSAE checkpoints found"
        source = f"a full-size untrained stand-in zoo (paper widths; {why})"
    folder = loaders.data_folder("mnist")
    if folder is None:
        raise SystemExit("MNIST test images not found: run `python -m csae_core data download mnist`")
    import torch

    loaders.configure_torch()  # as the app's entrypoint does
    print(f"models: {len(entries)} MNIST CSAE β values from {source}")
    print(f"torch threads: {torch.get_num_threads()}, cpu cores: {os.cpu_count()}, load average: "
          f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    cold, warm = bench_grid(entries, folder, a.repeats)
    print(f"β change, 32-image grid (compute + PNG), cold caches  {ms(cold)}")
    print(f"β change, 32-image grid (compute + PNG), warm cache   {ms(warm)}")
    rcold, rwarm = bench_rerun(sorted({e.beta for e in entries}), a.repeats)
    print(f"β change, whole page rerun (AppTest), warm            {ms(rwarm)}")
    print(f"β change, whole page rerun (AppTest), cold + prefetch {ms(rcold)}")
    if not a.no_browser:
        report_cold_start(a.read_seconds, a.repeats, tuple(a.flow or ("newcomer", "direct")))

if __name__ == "__main__":
    main()
