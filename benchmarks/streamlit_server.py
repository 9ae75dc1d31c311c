"""Start and stop `streamlit run app/explorer.py` on a free loopback port: the one copy of the command line,
the port picking and the health polling, for tests/test_app_browser.py, bench_app.py and bench_load.py.

The server is the `streamlit` console script beside this interpreter, as a user runs it: it does not put the
repository root on sys.path, so it also checks that the installed project makes csae_core and app importable.
"""
from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(env: dict, port: int | None = None, log: Path | None = None,
          timeout: float = 120) -> tuple[subprocess.Popen, str]:
    """(process, URL) of a headless server; returns once /_stcore/health answers. Its output goes to `log`
    (default: discarded); RuntimeError, with the log's tail, if it exits or stays silent for `timeout` s."""
    port = port or free_port()
    url = f"http://127.0.0.1:{port}"
    out = open(log, "w") if log else subprocess.DEVNULL
    proc = subprocess.Popen(
        [str(Path(sys.executable).with_name("streamlit")), "run", "app/explorer.py", "--server.headless", "true",
         "--server.port", str(port), "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false",
         "--server.fileWatcherType", "none"],
        cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout
    while True:
        try:
            if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                return proc, url
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            stop(proc)
            tail = Path(log).read_text()[-2000:] if log else "(no log kept)"
            raise RuntimeError(f"streamlit did not start on port {port}: {tail}")
        time.sleep(0.05)


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


@contextmanager
def running(env: dict, log: Path | None = None, timeout: float = 120):
    """The server's URL for the `with` block; stopped after it."""
    proc, url = start(env, log=log, timeout=timeout)
    try:
        yield url
    finally:
        stop(proc)
