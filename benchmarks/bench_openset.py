"""Open-set speed: the `openset` command on 10,000 known + 10,000 unknown images, and the Open set view's
threshold redraw.

    python benchmarks/bench_openset.py               # CLI runs on the shipped zoo + the view's redraw
    python benchmarks/bench_openset.py --no-app      # CLI runs only

Figures printed:
  cli            wall time of `python -m csae_core openset CKPT --unknown emnist-letters --json [--score S]`
                 (process start, data, model, the test split's two halves (threshold and figures), 10,000 unknown images scored),
                 its CPU time (user + system: the work, whatever else runs), and images/s over the process
  redraw         a whole rerun of the Open set view after a threshold move (AppTest, server time: script,
                 cache lookups, figures, serialisation), median of --repeats, after the first render
The machine is shared: note the load average printed with the figures.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUNS = [("checkpoints/mnist/csae-b0.02.json", None), ("checkpoints/mnist/basenet.json", None),
        ("checkpoints/mnist/csae-b0.02.json", "all")]


def bench_cli(ckpt: str, score: str | None) -> str:
    cmd = [sys.executable, "-m", "csae_core", "openset", ckpt, "--unknown", "emnist-letters", "--json"]
    cmd += ["--score", score] if score else []
    t0, r0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
    q = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    wall, r1 = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)  # independent of how busy the machine is
    if q.returncode:
        return f"{ckpt}: exit {q.returncode}: {q.stderr.strip().splitlines()[-1:]}"
    j = json.loads(q.stdout)
    images = j["threshold_images"] + j["known_images"] + j["unknown_images"]
    return (f"cli  {Path(ckpt).stem:<12} --score {score or j['score']:<8} {wall:6.1f} s wall, {cpu:5.1f} s CPU "
            f"on {j.get('threads', '?')} thread(s) "
            f"({j['known_images']:,} known + {j['unknown_images']:,} unknown + {j['threshold_images']:,} threshold-half; "
            f"AUROC {j['auroc']:.4f}, FPR@95 {j['fpr_at_95_tpr']:.4f}; process total {j['seconds']:.1f} s, "
            f"{images / j['seconds']:.0f} images/s incl. loading)")


def bench_redraw(repeats: int) -> str:
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "app" / "explorer.py"), default_timeout=600).run()
    at.switch_page("../pages/open_set.py").run()
    if at.exception:
        return f"redraw: the view failed: {[e.value for e in at.exception]}"
    times = []
    for i in range(repeats):
        slider = next(s for s in at.slider if s.key.startswith("openset_threshold"))
        value = slider.min + (slider.max - slider.min) * (i + 1) / (repeats + 1)
        t0 = time.perf_counter()
        slider.set_value(value).run()
        times.append(time.perf_counter() - t0)
    return (f"redraw  threshold move, whole view rerun: median {statistics.median(times) * 1000:.0f} ms, "
            f"min {min(times) * 1000:.0f} ms over {repeats}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--no-app", action="store_true")
    p.add_argument("--repeats", type=int, default=7)
    a = p.parse_args()
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores", flush=True)
    for ckpt, score in RUNS:
        print(bench_cli(ckpt, score), flush=True)
    if not a.no_app:
        print(bench_redraw(a.repeats), flush=True)
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
