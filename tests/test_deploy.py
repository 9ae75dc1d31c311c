"""deploy/serve on loopback: 2 Streamlit processes behind Debian's nginx, on the tiny fixture zoo.

A session through the proxy gets a sticky-route cookie and works (websocket, β moves, images); the process
that served it is killed; a session with the same cookie is still served (by the other process); the killed
process is started again by the supervisor and serves that route again; SIGTERM stops everything, exit 0.
"""
from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from test_load import bench_load  # benchmarks/bench_load.py loaded as a module (one copy)

ROOT = Path(__file__).resolve().parents[1]
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
DEADLINE_S = 120  # each wait; a loaded 2-core machine starts a Streamlit process in ~5-15 s

pytestmark = [pytest.mark.slow,  # ~40-90 s: three Streamlit start-ups and sessions that import torch
              pytest.mark.skipif(not Path(NGINX).exists(), reason="nginx not installed (apt-get install nginx)")]


def free_ports(n: int) -> list[int]:
    """n free loopback ports, the last n - 1 of them consecutive (deploy/serve's backends)."""
    import socket

    for _ in range(100):
        with socket.socket() as a, socket.socket() as b:
            a.bind(("127.0.0.1", 0))
            b.bind(("127.0.0.1", 0))
            first, base = a.getsockname()[1], b.getsockname()[1]
        ports = [first] + list(range(base, base + n - 1))
        if len(set(ports)) == n and all(_free(p) for p in ports):
            return ports
    raise RuntimeError("no free ports")


def _free(port: int) -> bool:
    import socket

    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def wait_for(what: str, check, timeout: float = DEADLINE_S):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"{what}: not within {timeout:.0f} s")


def status(run: Path) -> dict | None:
    try:
        return json.loads((run / "status.json").read_text())
    except (OSError, ValueError):
        return None


def served_by(run: Path, route: str) -> str | None:
    """The upstream (127.0.0.1:port) nginx sent the latest websocket of `route` to, from its access log."""
    hits = [m.group(1) for m in re.finditer(r'"GET /_stcore/stream[^"]*" \d+ (\S+) route=' + re.escape(route),
                                          (run / "nginx-access.log").read_text())]
    return hits[-1].split(",")[-1].strip() if hits else None


def one_session(url: str, cookie: str = "") -> "object":
    (result,) = asyncio.run(bench_load().load(url, 1, 1, timeout=90, distinct_images=False, cookie=cookie))
    assert not result.errors and result.held, result.errors
    return result


def test_serve_two_processes_behind_nginx_and_restart_a_killed_one(app_fixture, tmp_path):
    port, backend, _ = free_ports(3)
    run = tmp_path / "run"
    env = {**os.environ, "CSAE_CHECKPOINTS_DIR": str(app_fixture["checkpoints"]),
           "CSAE_DATA_DIR": str(app_fixture["data"]), "CSAE_APP_WARMUP": "0"}
    serve = subprocess.Popen([str(ROOT / "deploy" / "serve"), "--processes", "2", "--port", str(port),
                              "--backend-port", str(backend), "--run-dir", str(run)], cwd=ROOT, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for("status.json with nginx", lambda: (status(run) or {}).get("nginx_pid"))
        with urllib.request.urlopen(f"{url}/", timeout=30) as r:  # the page through nginx, with a sticky cookie
            assert r.status == 200 and "csae_route=" in (r.headers.get("Set-Cookie") or "")

        first = one_session(url)  # websocket through the proxy, a β move, its image fetched
        route = first.cookie.split("csae_route=")[1].split(";")[0]
        victim = served_by(run, route)
        ports = {f"127.0.0.1:{b['port']}": b for b in status(run)["backends"]}
        assert victim in ports, (victim, ports)
        old_pid = ports[victim]["pid"]
        os.kill(old_pid, signal.SIGKILL)

        one_session(url, cookie=f"csae_route={route}")  # the same browser: served by the other process
        assert served_by(run, route) != victim

        back = wait_for("the killed process restarted and healthy", lambda: next(
            (b for b in status(run)["backends"] if f"127.0.0.1:{b['port']}" == victim and b["pid"] != old_pid
             and b["restarts"] == 1 and _healthy(b["port"])), None))
        wait_for("its route served by it again", lambda: _served_again(url, run, route, victim), timeout=30)
        assert back["pid"] != old_pid
    finally:
        serve.send_signal(signal.SIGTERM)
        out = serve.communicate(timeout=60)[0]
    assert serve.returncode == 0, out
    assert "stopped" in out
    final = status(run)
    for pid in [final["nginx_pid"], *(b["pid"] for b in final["backends"])]:
        assert not _alive(pid), f"process {pid} still running after SIGTERM"


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def _served_again(url: str, run: Path, route: str, victim: str) -> bool:
    one_session(url, cookie=f"csae_route={route}")
    return served_by(run, route) == victim


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (exited, not yet reaped by its parent) is not running
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False
