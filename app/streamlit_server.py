"""Start and stop one explorer server (`python -m app`, i.e. `streamlit run app/explorer.py`) on loopback, for benchmarks, tests and deploy/serve.

    proc = start(port, env)   # returns once http://127.0.0.1:port/_stcore/health answers 200
    stop(proc)                # SIGTERM, then SIGKILL after 10 s
    wait_log(proc, text, t)   # until its log (a temporary file unless start(log=...) was given) has `text`
"""
from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def command(port: int, address: str = "127.0.0.1") -> list[str]:
    """The server's command line, README's start command (`python -m app`: `streamlit run app/explorer.py` with
    the heavy imports done first): headless, no file watcher (a server, not a development loop), no telemetry."""
    return [sys.executable, "-m", "app", "--server.port", str(port),
            "--server.address", address, "--server.headless", "true", "--browser.gatherUsageStats", "false",
            "--server.fileWatcherType", "none"]


def healthy(port: int, host: str = "127.0.0.1", timeout: float = 2) -> bool:
    """Whether /_stcore/health answers 200 now."""
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/_stcore/health", timeout=timeout) as r:
            return r.status == 200
    except OSError:
        return False


def start(port: int, env: dict, timeout: float = 120, log=None, address: str = "127.0.0.1") -> subprocess.Popen:
    """Start the server on address:port; returns once /_stcore/health answers (RuntimeError, with the end of
    its log, if it exits or does not answer within `timeout`). `log`: a binary file for its output (default:
    an anonymous temporary file; never a pipe, which would block a chatty server once full)."""
    log = log if log is not None else tempfile.TemporaryFile()
    proc = subprocess.Popen(command(port, address), cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    proc.log = log
    if not wait_healthy(proc, port, timeout):
        stop(proc)
        raise RuntimeError(f"streamlit did not answer on port {port} within {timeout:.0f} s: {log_tail(proc)}")
    return proc


def log_tail(proc: subprocess.Popen, chars: int = 2000) -> str:
    try:
        proc.log.flush()
        proc.log.seek(0)
        return proc.log.read().decode(errors="replace")[-chars:]
    except (AttributeError, OSError, ValueError):
        return ""


def wait_log(proc: subprocess.Popen, text: str, timeout: float) -> bool:
    """Wait until the server's log (a start() log file) contains `text`; False after `timeout` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in log_tail(proc, 1 << 20):
            return True
        time.sleep(0.5)
    return False


def wait_healthy(proc: subprocess.Popen, port: int, timeout: float) -> bool:
    """Wait until the server at `port` answers its health check; RuntimeError if the process exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"streamlit exited with {proc.returncode}: {log_tail(proc)}")
        if healthy(port):
            return True
        time.sleep(0.3)
    return False


def stop(proc: subprocess.Popen, timeout: float = 10) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)


@contextmanager
def running(env: dict, log: Path | None = None, timeout: float = 120):
    """The URL of a server on a free port for the `with` block (output to the file `log`); stopped after it."""
    port = free_port()
    out = open(log, "wb") if log else None
    try:
        proc = start(port, env, timeout, log=out)
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            stop(proc)
    finally:
        if out:
            out.close()
