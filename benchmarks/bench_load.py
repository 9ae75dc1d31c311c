"""Many users at once: N simultaneous browser-protocol sessions against one `streamlit run` server.

    python benchmarks/bench_load.py                      # N = 1, 4, 16 on the real zoo in checkpoints/
    python benchmarks/bench_load.py --sessions 4 --moves 3 --checkpoints-dir D --data-dir E
    python benchmarks/bench_load.py --sessions 64 --url http://127.0.0.1:8080   # a running server or deploy/serve
    python benchmarks/bench_load.py --sessions 1 4 --beside-job    # while the Train view's quick job trains

Each session speaks Streamlit's own protocol, as a browser tab does, on loopback only: a websocket to
/_stcore/stream (subprotocol "streamlit"), BackMsg protobufs up (rerun_script with the page name and the
widget states), ForwardMsg protobufs down (deltas, script_finished). A session opens the Reconstructions
page, picks its own image seed (so every session computes its own grids, as different users would), then
moves the β slider `--moves` times. All sessions start together and move concurrently. A move is sent as
the browser sends it: when the slider sits in an st.fragment (the delta names its fragment id), the rerun
request names that fragment, so the server reruns the fragment only.

With `--url` the sessions go to a server that is already running (e.g. nginx in front of several processes,
deploy/serve). Each session first GETs the page, as a browser does, and keeps the cookies it is given (the
proxy's sticky-session cookie), so its websocket and its image fetches reach the same process.

Per slider move it measures the time from sending the new widget state to having the new comparison grid:
its delta received (an image whose media URL differs from the previous grid) and its PNG fetched over
HTTP from the media URL, as the browser does (the fetch is answered once the script run ends: the server's
event loop and every session's script share one Python process). "grid delta" and "script run" split
that time: until the grid's delta arrived, and until the run's script_finished. Opening the page (with the
session's own images) is reported twice: until its grid is shown (delta arrived, PNG fetched: what the user
sees) and until that run finished (the Reconstructions page then computes the other β's grids for these images,
so the moves are lookups). A fresh server starts with an empty on-disk store (`--store cold`), so earlier
runs' grids are not read back. Reported per N: p50/p95/max of those times, errors (a page
exception or st.error, a script that did not finish, a timeout, a dropped connection), and sessions held
(still connected and answering at the end). Bounded in time: every wait has a timeout (--timeout).

`--json PATH` writes the rows; benchmarks/reliability_report.py puts them in results/reliability.md.
"""
from __future__ import annotations

import argparse
import asyncio
from contextlib import contextmanager, nullcontext
import http.cookiejar
import json
import os
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from app import streamlit_server  # app/streamlit_server.py: the one server start (README's command)

ROOT = Path(__file__).resolve().parents[1]

PAGE = "reconstructions"
SLIDER_LABEL = "β"  # the Reconstructions page's β select_slider
SEED_LABEL = "Seed"
WARMUP_LINE = "csae warm-up:"  # app/warmup.py's one line in the server log when it is done
WARMUP_WAIT_S = 300


@dataclass
class Run:
    """What one script run sent down: the β slider, the seed input, the first image (the grid), problems."""

    slider: object | None = None
    fragment_id: str = ""  # the st.fragment the slider sits in ("" for none)
    seed: object | None = None
    grid_url: str | None = None
    grid_at: float | None = None  # perf_counter when the grid's delta arrived
    problems: list[str] = field(default_factory=list)
    finished: bool = False
    finished_at: float | None = None


@dataclass
class SessionResult:
    open_s: float | None = None  # opening the page (with this user's own images): until its run finished
    shown_s: float | None = None  # the same, until its grid was shown (delta arrived, PNG fetched)
    moves_s: list[float] = field(default_factory=list)
    delta_s: list[float] = field(default_factory=list)  # the same moves, until the grid's delta only
    run_s: list[float] = field(default_factory=list)  # the same moves, until the script run finished
    errors: list[str] = field(default_factory=list)
    held: bool = False
    cookie: str = ""  # the cookies it was given (behind deploy/serve's nginx: its sticky route)


free_port = streamlit_server.free_port


def start_server(port: int, env: dict, timeout: float = 120):
    return streamlit_server.start(port, env, timeout)


stop_server = streamlit_server.stop


def rerun_msg(widgets: list, page_hash: str = "", fragment_id: str = "") -> bytes:
    from streamlit.proto.BackMsg_pb2 import BackMsg

    msg = BackMsg()
    cs = msg.rerun_script
    cs.page_name = PAGE
    if page_hash:
        cs.page_script_hash = page_hash
    if fragment_id:  # what the browser sends for a widget inside an st.fragment: rerun that fragment only
        cs.fragment_id = fragment_id
    for w in widgets:
        cs.widget_states.widgets.append(w)
    return msg.SerializeToString()


def slider_state(slider, option: str):
    from streamlit.proto.WidgetStates_pb2 import WidgetState

    w = WidgetState(id=slider.id)
    w.string_array_value.data.append(option)
    return w


def seed_state(seed_input, value: int):
    from streamlit.proto.WidgetStates_pb2 import WidgetState

    return WidgetState(id=seed_input.id, double_value=float(value))


async def read_run(ws, timeout: float, state: dict) -> Run:
    """Read ForwardMsgs until the script run finishes (or `timeout` passes between two messages)."""
    from streamlit.proto.Alert_pb2 import Alert
    from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

    run = Run()
    while True:
        fm = ForwardMsg()
        fm.ParseFromString(await asyncio.wait_for(ws.recv(), timeout))
        kind = fm.WhichOneof("type")
        if kind == "new_session" and fm.new_session.page_script_hash:
            state["page_hash"] = fm.new_session.page_script_hash
        elif kind == "page_info_changed" or kind == "navigation":
            h = getattr(getattr(fm, kind), "page_script_hash", "")
            if h:
                state["page_hash"] = h
        elif kind == "page_not_found":
            run.problems.append("page not found")
        elif kind == "delta" and fm.delta.WhichOneof("type") == "new_element":
            el = fm.delta.new_element
            etype = el.WhichOneof("type")
            if etype == "slider" and el.slider.label.startswith(SLIDER_LABEL):
                run.slider = el.slider
                run.fragment_id = fm.delta.fragment_id
            elif etype == "number_input" and el.number_input.label == SEED_LABEL:
                run.seed = el.number_input
            elif etype == "imgs" and run.grid_url is None and el.imgs.imgs:
                run.grid_url = el.imgs.imgs[0].url
                run.grid_at = time.perf_counter()
            elif etype == "exception":
                run.problems.append(f"exception: {el.exception.message[:200]}")
            elif etype == "alert" and el.alert.format == Alert.ERROR:
                run.problems.append(f"st.error: {el.alert.body[:200]}")
        elif kind == "script_finished":
            status = fm.script_finished
            if status == ForwardMsg.FINISHED_WITH_COMPILE_ERROR:
                run.problems.append("script compile error")
            if status != ForwardMsg.FINISHED_EARLY_FOR_RERUN:  # that one is followed by the new run
                run.finished = True
                run.finished_at = time.perf_counter()
                return run


def fetch(opener, base: str, url: str) -> int:
    """GET a media URL (relative to the server) with this session's cookies; returns its size."""
    with opener.open(base + url if url.startswith("/") else url, timeout=30) as r:
        return len(r.read())


def open_browser(base: str, cookie: str = ""):
    """A urllib opener with its own cookie jar, after GETting the page as a browser does first (a proxy's
    sticky-session cookie is set there; `cookie`, "name=value", is one the browser already had); returns
    (opener, Cookie header value)."""
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    if cookie:
        opener.addheaders = [("Cookie", cookie)]
    with opener.open(base + "/", timeout=30) as r:
        r.read()
    return opener, "; ".join(f"{c.name}={c.value}" for c in jar) or cookie


async def session(i: int, base: str, moves: int, timeout: float, start: asyncio.Event,
                  distinct_images: bool, cookie: str = "") -> SessionResult:
    from websockets.asyncio.client import connect

    res = SessionResult()
    state: dict = {}
    try:
        opener, cookie = await asyncio.to_thread(open_browser, base, cookie)
        res.cookie = cookie
        headers = {"Cookie": cookie} if cookie else None
        async with connect(base.replace("http", "ws", 1) + "/_stcore/stream", subprotocols=["streamlit"],
                           additional_headers=headers, max_size=None, open_timeout=timeout,
                           ping_interval=None) as ws:
            await start.wait()
            t0 = time.perf_counter()
            await ws.send(rerun_msg([]))
            run = await read_run(ws, timeout, state)
            res.errors += run.problems
            if run.slider is None or run.grid_url is None:
                res.errors.append("no β slider or no grid on the page")
                return res
            shown_at = run.grid_at
            if distinct_images and run.seed is not None:  # this user's own images: grids not shared
                widgets = [seed_state(run.seed, 1000 + i)]
                await ws.send(rerun_msg(widgets, state.get("page_hash", "")))
                run2 = await read_run(ws, timeout, state)
                res.errors += run2.problems
                shown_at = run2.grid_at if run2.grid_url else shown_at
                run = Run(slider=run2.slider or run.slider, fragment_id=run2.fragment_id if run2.slider else
                          run.fragment_id, seed=run2.seed, grid_url=run2.grid_url or run.grid_url)
            else:
                widgets = []
            t_fetch = time.perf_counter()
            await asyncio.to_thread(fetch, opener, base, run.grid_url)
            res.open_s = time.perf_counter() - t0
            # A browser fetches the grid as soon as its delta arrives; the page's run may go on (the Reconstructions
            # page then computes the other β's grids for this user's images, so that moves are lookups).
            res.shown_s = shown_at - t0 + (time.perf_counter() - t_fetch)
            slider, grid, fragment = run.slider, run.grid_url, run.fragment_id
            options = list(slider.options)
            current = options[int(slider.default[0])] if slider.default else options[0]
            for m in range(moves):
                target = options[(options.index(current) + 1 + m) % len(options)]
                if target == current:
                    target = options[(options.index(current) + 1) % len(options)]
                t0 = time.perf_counter()
                await ws.send(rerun_msg([*widgets, slider_state(slider, target)], state.get("page_hash", ""),
                                        fragment))
                run = await read_run(ws, timeout, state)
                res.errors += run.problems
                if run.grid_url is None or run.grid_url == grid:
                    res.errors.append(f"move {m + 1}: no new grid for β={target}")
                    continue
                res.delta_s.append(run.grid_at - t0)
                res.run_s.append(run.finished_at - t0)
                await asyncio.to_thread(fetch, opener, base, run.grid_url)
                res.moves_s.append(time.perf_counter() - t0)
                grid, current = run.grid_url, target
                slider = run.slider or slider
                fragment = run.fragment_id if run.slider else fragment
            # Held: still connected and still answering a rerun at the end.
            await ws.send(rerun_msg([*widgets, slider_state(slider, current)], state.get("page_hash", "")))
            final = await read_run(ws, timeout, state)
            res.held = final.finished and not final.problems
    except (asyncio.TimeoutError, TimeoutError):
        res.errors.append(f"timeout: no message for {timeout:.0f} s")
    except Exception as e:  # noqa: BLE001 - a dropped connection or protocol error is a measured error
        res.errors.append(f"{type(e).__name__}: {e}")
    return res


async def load(base: str | int, n: int, moves: int, timeout: float, distinct_images: bool,
               cookie: str = "") -> list[SessionResult]:
    """n sessions against `base` (a URL such as http://127.0.0.1:8080, or a loopback port), started together;
    `cookie` ("name=value"): what each session's browser already holds."""
    base = f"http://127.0.0.1:{base}" if isinstance(base, int) else base.rstrip("/")
    start = asyncio.Event()
    tasks = [asyncio.create_task(session(i, base, moves, timeout, start, distinct_images, cookie))
             for i in range(n)]
    await asyncio.sleep(0.5)  # let every websocket connect, then start them together
    start.set()
    return await asyncio.gather(*tasks)


def percentile(xs: list[float], q: float) -> float | None:
    if not xs:
        return None
    xs = sorted(xs)
    k = (len(xs) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def summarise(n: int, results: list[SessionResult], wall: float) -> dict:
    moves = [t for r in results for t in r.moves_s]
    opens = [r.open_s for r in results if r.open_s is not None]
    errors = [e for r in results for e in r.errors]
    return {"sessions": n, "moves": len(moves), "p50_s": percentile(moves, 0.5), "p95_s": percentile(moves, 0.95),
            "max_s": max(moves) if moves else None,
            "delta_p50_s": percentile([t for r in results for t in r.delta_s], 0.5),
            "run_p50_s": percentile([t for r in results for t in r.run_s], 0.5), "open_p50_s": percentile(opens, 0.5),
            "shown_p50_s": percentile([r.shown_s for r in results if r.shown_s is not None], 0.5),
            "errors": len(errors), "error_examples": sorted(set(errors))[:5],
            "held": sum(r.held for r in results), "wall_s": round(wall, 2)}


def run_load(ns: list[int], moves: int, timeout: float, env: dict, distinct_images: bool = True,
             warmup: bool = True, url: str | None = None) -> list[dict]:
    """One fresh server (or the one running at `url`); for each N, N sessions at once. One summary row per N."""
    proc = None
    if url is None:
        port = free_port()
        proc = start_server(port, env)
        url = f"http://127.0.0.1:{port}"
    rows = []
    try:
        if warmup:  # the first script run imports torch and plotly: a cold start, not load (bench_app.py has it)
            asyncio.run(load(url, 1, 1, timeout, distinct_images=False))
            warm_on = env.get("CSAE_APP_WARMUP", "1").strip() != "0"
            if proc is not None and warm_on:  # and the server's warm-up thread (app/warmup.py): start-up, not load
                t0 = time.perf_counter()
                done = streamlit_server.wait_log(proc, WARMUP_LINE, WARMUP_WAIT_S)
                print(f"(server warm-up {'finished' if done else 'still running'} "
                      f"{time.perf_counter() - t0:.1f} s after the first session)", flush=True)
        for n in ns:
            t0 = time.perf_counter()
            results = asyncio.run(load(url, n, moves, timeout, distinct_images))
            rows.append(summarise(n, results, time.perf_counter() - t0))
    finally:
        if proc is not None:
            stop_server(proc)
    return rows


@contextmanager
def training_job_running():
    """The Train view's quick preset (MNIST CSAE β=0.02) started as the view starts it (app.training_jobs: its
    own niced process), in a temporary user folder, and training (first progress line written) before the
    sessions start; stopped after them."""
    import tempfile

    os.environ["CSAE_USER_MODELS_DIR"] = tempfile.mkdtemp(prefix="bench-load-job-")
    from app import training_jobs, training_plan

    job = training_jobs.start(training_plan.Plan(dataset="mnist", kind="csae", beta=0.02, recipe="quick"),
                              cuda=False)
    deadline = time.monotonic() + 300
    while not training_jobs.steps(job["id"]) and time.monotonic() < deadline:
        time.sleep(1)
        job = training_jobs.read(job["id"])
        if job["state"] not in (*training_jobs.ACTIVE, "queued"):
            raise RuntimeError(f"the training job ended before the sessions started: {job.get('error')}")
    print(f"(a quick-preset training job is running: {training_jobs.run_dir(job['id'])})", flush=True)
    try:
        yield job
    finally:
        training_jobs.stop(job["id"])
        deadline = time.monotonic() + 60  # its process exits at the next step; leave no load behind
        while training_jobs.read(job["id"])["state"] in training_jobs.ACTIVE and time.monotonic() < deadline:
            time.sleep(0.5)
            training_jobs.all_jobs()


def fmt(x) -> str:
    return "–" if x is None else f"{x * 1000:.0f} ms"


def table(rows: list[dict]) -> str:
    lines = ["| N sessions | β moves | p50 to new grid | p95 | max | grid delta p50 | script run p50 "
             "| open page: grid shown p50 | open page: run finished p50 | errors | sessions held |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['sessions']} | {r['moves']} | {fmt(r['p50_s'])} | {fmt(r['p95_s'])} | {fmt(r['max_s'])} | "
                     f"{fmt(r.get('delta_p50_s'))} | {fmt(r.get('run_p50_s'))} | {fmt(r.get('shown_p50_s'))} | "
                     f"{fmt(r['open_p50_s'])} | "
                     f"{r['errors']} | {r['held']}/{r['sessions']} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sessions", type=int, nargs="+", default=[1, 4, 16])
    p.add_argument("--moves", type=int, default=4, help="β slider moves per session")
    p.add_argument("--timeout", type=float, default=120, help="seconds to wait for any one message")
    p.add_argument("--checkpoints-dir", help="CSAE_CHECKPOINTS_DIR for the server (default: checkpoints/)")
    p.add_argument("--data-dir", help="CSAE_DATA_DIR for the server")
    p.add_argument("--same-images", action="store_true", help="all sessions on the same images (shared cache)")
    p.add_argument("--json", help="write the rows here")
    p.add_argument("--url", help="a running server or proxy (e.g. http://127.0.0.1:8080 from deploy/serve) "
                                 "instead of a fresh server; its own checkpoints and data then count")
    p.add_argument("--no-warmup", action="store_true", help="no single warm-up session before the measured ones")
    p.add_argument("--beside-job", action="store_true",
                   help="with the Train view's quick job training meanwhile (its own niced process, both cores)")
    p.add_argument("--store", choices=("cold", "warm"), default="cold",
                   help="the fresh server's on-disk store (app/disk_store.py): cold (default) = an empty one, so "
                        "each user's own images are computed as they would be the first time; warm = $CSAE_CACHE_DIR "
                        "or ~/.cache as it is (grids of earlier runs' images are then read back)")
    a = p.parse_args(argv)
    if any(n < 1 or n > 256 for n in a.sessions) or not 1 <= a.moves <= 100 or not 1 <= a.timeout <= 3600:
        print("error: --sessions in 1..256, --moves in 1..100, --timeout in 1..3600", file=sys.stderr)
        return 2
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if a.checkpoints_dir:
        env["CSAE_CHECKPOINTS_DIR"] = str(Path(a.checkpoints_dir).resolve())
    if a.data_dir:
        env["CSAE_DATA_DIR"] = str(Path(a.data_dir).resolve())
    if a.store == "cold" and not a.url:
        import tempfile
        env["CSAE_CACHE_DIR"] = tempfile.mkdtemp(prefix="csae-bench-store-")
    try:
        with training_job_running() if a.beside_job else nullcontext():
            rows = run_load(a.sessions, a.moves, a.timeout, env, distinct_images=not a.same_images,
                            warmup=not a.no_warmup, url=a.url)
    except RuntimeError as e:  # the job or the server did not start: one line, not a traceback
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(table(rows))
    for r in rows:
        for e in r["error_examples"]:
            print(f"  N={r['sessions']} error: {e}")
    load1 = os.getloadavg()[0]
    where = (a.url or f"a fresh server process, on-disk store {a.store}") + (
        ", a quick-preset training job running" if a.beside_job else "")
    print(f"({where}, loopback, {os.cpu_count()} cores, load average {load1:.1f} at the end)")
    if a.json:
        Path(a.json).write_text(json.dumps({"rows": rows, "cores": os.cpu_count(), "load": load1, "url": a.url,
                                            "distinct_images": not a.same_images, "moves": a.moves,
                                            "store": None if a.url else a.store,
                                            "beside_job": a.beside_job}, indent=1))
    return 0 if all(r["errors"] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
