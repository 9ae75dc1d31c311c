"""Write results/reliability.md from measurements, not by hand (issue 9).

    python benchmarks/reliability_report.py            # tests + load benchmark N = 1, 4, 16 (~5 min on 2 cores)
    python benchmarks/reliability_report.py --sessions 1 4 --moves 2   # quicker

1. Runs the reliability tests (CLI contract, image corpus, crash consistency, hostile-zoo AppTests, the
   N=4 load test) with $CSAE_RELIABILITY_COUNTS set, so each test records what it tried (bad inputs,
   tracebacks seen, kill points survived, pages run, sessions held); the counts are summed here.
2. Runs benchmarks/bench_load.py's sessions against the model zoo in checkpoints/ (the real one).
3. Writes both tables, the commands and the machine's state to results/reliability.md.
"""
from __future__ import annotations

import argparse
import collections
import datetime
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]  # csae_core and app are installed (-e .); run as a script,
# this file's folder is on the import path, so `import bench_load` finds benchmarks/bench_load.py

TESTS = ["tests/test_cli_contract.py", "tests/test_image_corpus.py", "tests/test_crash_consistency.py",
         "tests/test_reliability_app.py", "tests/test_reliability_units.py", "tests/test_load.py",
         # issue 16: one test per finding, the enumerated CLI/zoo.py contract, the app against broken zoos/data
         "tests/test_reliability2.py", "tests/test_contract_enumerated.py", "tests/test_reliability2_app.py"]
COUNT_ORDER = ["bad inputs tried", "bad inputs tried (round 2)", "tracebacks seen", "kill points survived",
               "app pages run against broken zoos or settings", "sessions held"]
TRICKLE = """
import sys, time, http.server
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.send_header('Content-Length', '9912422'); self.end_headers()
        for _ in range(60):
            try: self.wfile.write(b'\\x1f'); self.wfile.flush()
            except Exception: return
            time.sleep(5)
    def log_message(self, *a): pass
s = http.server.ThreadingHTTPServer(('127.0.0.1', 0), H); print(s.server_address[1], flush=True); s.serve_forever()
"""


def _error_line(stderr: str) -> str:
    """The command's `error:` line (a tqdm bar may have drawn after it)."""
    errors = [line[line.index("error:"):] for line in stderr.splitlines() if "error:" in line]
    return (errors[-1] if errors else "")[:200]


def _peak(code_args: list[str], env: dict, code: str = "") -> tuple[int, int, str]:
    """(exit code, peak MB, stderr) of `cli.main(code_args)` (or of `code`) in a child: its own VmHWM
    (ru_maxrss keeps the forking parent's across exec)."""
    body = code or f"from csae_core import cli\nrc = cli.main({code_args!r})\n"
    script = (f"import re, sys\nrc = 0\n{body}"
              "hwm = int(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1))\n"
              "print(hwm // 1024, file=sys.stderr); sys.exit(rc)")
    r = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    return r.returncode, int((r.stderr.strip().splitlines() or ["0"])[-1]), r.stderr


def _trickle_probes(d: str, env: dict) -> list[dict]:
    """A mirror trickling 1 byte / 5 s is given up (seconds, exit code); a second download of the same dataset
    started meanwhile says at once that it waits, and for whom."""
    import time

    server = subprocess.Popen([sys.executable, "-c", TRICKLE], stdout=subprocess.PIPE, text=True)
    try:
        env = {**env, "CSAE_DATA_URL": f"http://127.0.0.1:{server.stdout.readline().strip()}/"}
        cmd = [sys.executable, "-m", "csae_core", "data", "download", "mnist"]
        t0 = time.monotonic()
        first = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                 text=True)
        time.sleep(3)
        try:
            second = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=5).stderr
        except subprocess.TimeoutExpired as e:
            second = (e.stderr or b"").decode() if isinstance(e.stderr, bytes) else (e.stderr or "")
        err = first.communicate(timeout=300)[1]
        seconds = time.monotonic() - t0
    finally:
        server.kill()
        server.wait()
    said = [line[line.index("waiting"):] for line in second.replace("\r", "\n").splitlines()
            if "waiting for another download" in line]
    return [{"probe": "`data download mnist` from a mirror sending 1 byte every 5 s",
             "result": f"exit {first.returncode} after {seconds:.0f} s (target: <= 60 s)",
             "met": first.returncode == 2 and seconds <= 60, "message": _error_line(err)},
            {"probe": "a second `data download mnist` started 3 s later",
             "result": "says it waits within 5 s" if said else "silent for 5 s",
             "met": bool(said), "message": (said or [""])[0][:200]}]


def round2_probes() -> list[dict]:
    """Issue 16's measured targets: the trickling mirror (_trickle_probes), and the peak memory of refused
    inputs: a checkpoint JSON asking for latent_dim 100000, `train --image-size 512`, a zoo.py unknown dataset."""
    import shutil

    with tempfile.TemporaryDirectory() as d:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "CSAE_DATA_DIR": str(Path(d) / "data")}
        rows = _trickle_probes(d, env)
        src = ROOT / "checkpoints" / "mnist" / "cvae.json"
        meta = json.loads(src.read_text())
        meta["model"]["latent_dim"] = 100_000
        shutil.copy(src.parent / meta["weights"], Path(d) / meta["weights"])
        (Path(d) / "cvae.json").write_text(json.dumps(meta))
        rc, peak, err = _peak(["evaluate", str(Path(d) / "cvae.json")], env)
        rows.append({"probe": "`evaluate` of a CVAE JSON with latent_dim 100000 (366 KB)",
                     "result": f"exit {rc}, peak {peak} MB (target: <= 200 MB)",
                     "met": rc == 2 and peak <= 200, "message": _error_line(err)})
        rc, peak, err = _peak(["train", "--dataset", "mnist", "--image-size", "512", "--epochs", "1",
                               "--out", str(Path(d) / "run")], env)
        torch_mb = _peak([], env, "import torch\n")[1]
        rows.append({"probe": "`train --image-size 512` (refused from the flags)",
                     "result": f"exit {rc}, peak {peak} MB (target: <= 200 MB; importing torch alone: {torch_mb} MB, "
                               f"which a refused input never does)",
                     "met": rc == 2 and peak <= 200, "message": _error_line(err)})
        zoo = ("import importlib.util\nspec = importlib.util.spec_from_file_location('zoo', "
               f"{str(ROOT / 'checkpoints' / 'zoo.py')!r})\nzoo = importlib.util.module_from_spec(spec)\n"
               "spec.loader.exec_module(zoo)\ntry:\n    rc = zoo.cli(['train', '--recipe', 'tiny', '--datasets', 'nosuch'])\n"
               "except SystemExit as e:  # argparse's refusal\n    rc = e.code\n")
        rc, peak, err = _peak([], env, zoo)
        rows.append({"probe": "`checkpoints/zoo.py train --datasets nosuch`",
                     "result": f"exit {rc}, peak {peak} MB (target: <= 200 MB)",
                     "met": rc == 2 and peak <= 200, "message": _error_line(err)})
    return rows


def run_tests() -> tuple[dict, str, int]:
    with tempfile.TemporaryDirectory() as d:
        counts_file = Path(d) / "counts.jsonl"
        env = {**os.environ, "CSAE_RELIABILITY_COUNTS": str(counts_file), "PYTHONPATH": str(ROOT)}
        res = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *TESTS], cwd=ROOT,
                             env=env, capture_output=True, text=True, timeout=1800)
        counts: dict[str, int] = collections.Counter()
        if counts_file.exists():
            for line in counts_file.read_text().splitlines():
                rec = json.loads(line)
                counts[rec["name"]] += rec["n"]
    summary = (res.stdout.strip().splitlines() or ["(no output)"])[-1]
    return dict(counts), summary, res.returncode


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sessions", type=int, nargs="+", default=[1, 4, 16])
    p.add_argument("--moves", type=int, default=4)
    p.add_argument("--out", default=str(ROOT / "results" / "reliability.md"))
    a = p.parse_args(argv)

    counts, summary, code = run_tests()
    print(f"tests: {summary}")
    probes = round2_probes()
    for row in probes:
        print(f"{row['probe']}: {row['result']} ({row['message']})")
    import bench_load

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    rows = bench_load.run_load(a.sessions, a.moves, timeout=120, env=env)
    table = bench_load.table(rows)
    print(table)
    load = os.getloadavg()[0]
    worst = max((r["p95_s"] or 0) for r in rows)
    biggest = max(rows, key=lambda r: r["sessions"])

    lines = [
        "# Reliability: bad inputs, crashes, many users",
        "",
        f"Generated by `python benchmarks/reliability_report.py{' --sessions ' + ' '.join(map(str, a.sessions)) if a.sessions != [1, 4, 16] else ''}"
        f"{f' --moves {a.moves}' if a.moves != 4 else ''}` on {datetime.date.today()}; "
        f"{os.cpu_count()} CPU cores, load average {load:.1f} at the end: the machine was loaded by a zoo training "
        f"job and other work the whole time, so the times are loaded-machine figures. Issues 9 and 16.",
        "",
        "## What the tests tried",
        "",
        f"`python -m pytest -q {' '.join(TESTS)}`: {summary}",
        "",
        "| count | value |",
        "|---|---:|",
        *[f"| {name} | {counts.get(name, 0)} |" for name in COUNT_ORDER],
        "",
        "- *bad inputs tried*: CLI cases of tests/test_cli_contract.py (every subcommand x missing, garbage, truncated",
        "  files, directories, FIFOs, /dev/zero, unwritable outputs, negative/NaN/huge numbers) plus the image corpus",
        "  of tests/test_image_corpus.py, each bad image counted twice (uploader and forged canvas).",
        "- *kill points survived*: a kill before and after each rename of a 2-epoch run's save sequence, each",
        "  followed by `--resume` ending bitwise equal to an uninterrupted run (tests/test_crash_consistency.py).",
        "- *app pages run*: AppTest page runs against a zoo with a folder-trained RGB model, missing and NaN",
        "  weights, traversal paths, a wrong manifest SHA-256, a half-written manifest, and bad env vars.",
        "- *bad inputs tried (round 2)*: issue 16's cases: tests/test_contract_enumerated.py drives every",
        "  subcommand of `python -m csae_core` and `checkpoints/zoo.py` and every argument (the train flags generated",
        "  from TrainConfig/ModelConfig) with 0, -1, 10^30, NaN, empty, /dev/zero, a FIFO and a directory (exit 0 or 2,",
        "  one error line, no traceback, 60 s and +200 MB per case at most), plus one test per finding",
        "  (tests/test_reliability2.py: faint uploads, trickling/endless mirrors, locks held by live and dead",
        "  processes, oversized configs, infinite-output models, zoo.py errors, ...).",
        "- *tracebacks seen*: CLI runs whose stderr held a traceback (the tests fail if it is not 0). A segfault",
        "  would end the test process, so a passing run also means 0 segfaults.",
        "- *sessions held*: sessions of the N=4 load test still answering at the end.",
        "",
        "## Issue 16's measured targets",
        "",
        "| probe | result | message |",
        "|---|---|---|",
        *[f"| {r['probe']} | {r['result']}{'' if r['met'] else ' NOT MET'} | {r['message'].replace('|', '/')} |"
          for r in probes],
        "",
        f"Issue 16 found 29 tracebacks, 1 segfault, 4 hangs and 2 ways to lose data. Now: "
        f"{'0 tracebacks and 0 segfaults' if code == 0 else 'FAILURES (see the test run)'} over the "
        f"{counts.get('bad inputs tried (round 2)', 0)} round-2 cases above (every subcommand and argument of both "
        f"CLIs with every odd value, and the issue's items); no hang: a stalled mirror is given up "
        f"({probes[0]['result']}), a lock is waited on at most 10 minutes, the wait said at once with the "
        f"holder's pid, and taken over from a dead holder; every generated file is written atomically with the umask's mode and never over "
        f"a device or pipe; checkpoints are read only inside their folder (weights named by a JSON, manifest rows, "
        f"the app's bounded search); a refused oversized checkpoint config peaks at "
        f"{probes[2]['result'].split('peak ')[1]}, refused train flags at "
        f"{probes[3]['result'].split('peak ')[1].split(' (')[0]} and refused zoo.py arguments at "
        f"{probes[4]['result'].split('peak ')[1].split(' (')[0]} (torch is imported only once the input is checked).",
        "",
        "## Many users at once",
        "",
        "`benchmarks/bench_load.py`: N simultaneous Streamlit websocket sessions on loopback, each on its own",
        f"test images, open Reconstructions and move the β slider {a.moves} times; time from sending the new",
        "widget state to the new grid's delta and its PNG fetched (real zoo in checkpoints/, one server).",
        "",
        table,
        "",
    ]
    target = biggest["errors"] == 0 and (biggest["p95_s"] or 99) < 1.0
    lines.append(
        f"Target (N = 16, zero errors, p95 < 1 s): {'met' if target else 'not met'} at N = {biggest['sessions']} "
        f"(errors {biggest['errors']}, p95 {bench_load.fmt(biggest['p95_s'])}). "
        + ("" if target else
           "What limits it: one Streamlit process runs every session's script (page code, protobuf and Arrow "
           "serialisation, cache copies) under one interpreter lock, so the sessions' reruns queue behind each "
           "other: with one session a β move is a cache hit whose whole script run takes the 'script run' time "
           "above, and N sessions moving at once wait for about N of those, on 2 cores shared with other jobs. "
           "The grid itself is ready early (grid delta column); the PNG is served when the run ends. Several "
           "server processes behind a proxy, or fewer elements per rerun, would be the ways past it. ")
        + f"Worst p95 over all N: {bench_load.fmt(worst)}.")
    for r in rows:
        for e in r["error_examples"]:
            lines.append(f"- N={r['sessions']} error: {e}")
    from csae_core.checkpoint import atomic_write_bytes  # a cut run leaves the old report whole

    atomic_write_bytes(a.out, ("\n".join(lines) + "\n").encode())
    print(f"wrote {a.out}")
    return 0 if code == 0 and all(r["errors"] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
