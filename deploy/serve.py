"""Serve the explorer to a classroom: N explorer processes (`python -m app`) behind nginx, supervised.

    deploy/serve --processes 2 --port 8080                  # http://127.0.0.1:8080, backends on 8081, 8082
    deploy/serve --processes 2 --port 8080 --host 0.0.0.0   # reachable from other machines
    deploy/serve --processes 2 --port 8080 --upstream 10.0.0.7:8501 --upstream 10.0.0.8:8501   # and remote ones

One Streamlit process runs all its sessions' scripts under one GIL, so it uses about one core; several
processes use several cores, and nginx (Debian's package) spreads the sessions over them: websocket upgrade
for /_stcore/stream, sticky sessions by a cookie (deploy/nginx.conf.template says why not ip_hash).

Everything runs as the current user, with nginx's pid, logs, temp files and the rendered config in a
private run folder (default deploy/run/<port>/, git-ignored), next to each Streamlit process's log and
status.json (ports, pids, restarts). Every second each local process is checked: one that exited, or
whose /_stcore/health has not answered for HEALTH_FAILURES checks in a row, is (killed and) started again;
its sessions' browsers reconnect to another process meanwhile (nginx skips a process that refuses
connections). Ctrl-C or SIGTERM stops nginx and every process, and exits 0.

Remote upstreams (--upstream HOST:PORT) are Streamlit processes another machine runs with the same code,
checkpoints and data: e.g. `python -m app --server.address 0.0.0.0 --server.port 8501
--server.headless true` there, or `deploy/serve --processes 2 --no-proxy --host 0.0.0.0` (supervised
processes without nginx). nginx checks them passively only (this script restarts local processes only).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from app import streamlit_server  # app/streamlit_server.py: the one server start (README's command)

ROOT = Path(__file__).resolve().parents[1]

TEMPLATE = Path(__file__).resolve().parent / "nginx.conf.template"
CHECK_EVERY_S = 1.0
# Consecutive failed health checks (2 s timeout each) before a live but silent process is restarted: generous,
# since a process busy with many sessions answers slowly, and one that died is restarted at the next check.
HEALTH_FAILURES = 15
START_TIMEOUT_S = 120


@dataclass
class Backend:
    port: int
    proc: subprocess.Popen | None = None
    failures: int = 0
    restarts: int = 0
    since: float = 0.0  # monotonic time of the last (re)start: a starting process is given START_TIMEOUT_S


def server_lines(ports: list[int], remote: list[str]) -> str:
    """The upstream block's server lines: local processes, then remote HOST:PORT ones. max_fails=1 with a
    short fail_timeout: a dead process is skipped at once and tried again 3 s later."""
    hosts = [f"127.0.0.1:{p}" for p in ports] + list(remote)
    return "\n".join(f"        server {h} max_fails=1 fail_timeout=3s;" for h in hosts)


def render_config(run: Path, listen: str, ports: list[int], remote: list[str]) -> str:
    """deploy/nginx.conf.template filled in for this run folder, listen address and upstreams."""
    # nginx started by root would run its workers as `nobody`, which cannot write this user's run folder.
    user = "user root;" if os.geteuid() == 0 else "# (workers run as the current user)"
    return (TEMPLATE.read_text().replace("{{USER}}", user).replace("{{RUN}}", str(run))
            .replace("{{LISTEN}}", listen).replace("{{SERVERS}}", server_lines(ports, remote)))


def parse_upstream(value: str) -> str:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"{value!r} is not HOST:PORT (e.g. 10.0.0.7:8501)")
    return value


class Supervisor:
    def __init__(self, a: argparse.Namespace):
        self.a = a
        self.run = Path(a.run_dir or ROOT / "deploy" / "run" / str(a.port)).resolve()
        first = a.backend_port or a.port + 1
        self.backends = [Backend(first + i) for i in range(a.processes)]
        self.nginx: subprocess.Popen | None = None
        self.env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
        self.stopping = False

    # ------------------------------------------------------------ processes

    def start_backend(self, b: Backend, wait: bool) -> None:
        log = open(self.run / f"streamlit-{b.port}.log", "ab")
        address = self.a.host if self.a.no_proxy else "127.0.0.1"  # behind nginx: loopback only
        b.since, b.failures = time.monotonic(), 0
        if wait:
            b.proc = streamlit_server.start(b.port, self.env, START_TIMEOUT_S, log=log, address=address)
        else:  # a restart: do not hold up the checks of the others; health checks see it come up
            b.proc = subprocess.Popen(streamlit_server.command(b.port, address), cwd=ROOT, env=self.env,
                                      stdout=log, stderr=subprocess.STDOUT)

    def start_nginx(self) -> None:
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        if not Path(nginx).exists():
            raise SystemExit("error: nginx not found. Fix: `apt-get install nginx` (Debian's package), "
                             "or run with --no-proxy.")
        conf = self.run / "nginx.conf"
        conf.write_text(render_config(self.run, f"{self.a.host}:{self.a.port}", [b.port for b in self.backends],
                                      self.a.upstream))
        for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (self.run / "tmp" / sub).mkdir(parents=True, exist_ok=True)
        test = subprocess.run([nginx, "-t", "-q", "-p", str(self.run), "-c", str(conf)], capture_output=True, text=True)
        if test.returncode != 0:
            raise SystemExit(f"error: nginx rejected {conf}: {test.stderr.strip()}")
        self.nginx = subprocess.Popen([nginx, "-p", str(self.run), "-c", str(conf)], stdout=subprocess.DEVNULL,
                                      stderr=open(self.run / "nginx-error.log", "ab"))

    def start(self) -> None:
        self.run.mkdir(parents=True, exist_ok=True)
        for b in self.backends:
            self.start_backend(b, wait=True)
        if not self.a.no_proxy:
            self.start_nginx()
        self.write_status()
        where = f"http://{self.a.host}:{self.a.port}" if not self.a.no_proxy else "no proxy"
        print(f"serving {where}: {len(self.backends)} Streamlit processes on ports "
              f"{', '.join(str(b.port) for b in self.backends)}{' + ' + ', '.join(self.a.upstream) if self.a.upstream else ''}"
              f"; logs and status in {self.run}. Ctrl-C stops.", flush=True)

    def check(self) -> None:
        """Restart each local process that exited or stopped answering its health check; nginx too."""
        changed = False
        for b in self.backends:
            dead = b.proc is None or b.proc.poll() is not None
            if not dead:
                b.failures = 0 if streamlit_server.healthy(b.port) else b.failures + 1
                if b.failures < HEALTH_FAILURES or time.monotonic() - b.since < START_TIMEOUT_S:
                    continue
                streamlit_server.stop(b.proc)  # hung: answers nothing
            print(f"process on port {b.port} {'exited' if dead else 'stopped answering'}; restarting it",
                  file=sys.stderr, flush=True)
            self.start_backend(b, wait=False)
            b.restarts, changed = b.restarts + 1, True
        if self.nginx is not None and self.nginx.poll() is not None:
            print(f"nginx exited ({self.nginx.returncode}); restarting it", file=sys.stderr, flush=True)
            self.start_nginx()
            changed = True
        if changed:
            self.write_status()

    def write_status(self) -> None:
        from csae_core.checkpoint import atomic_write_bytes  # the project's atomic write (imports torch: once)

        status = {"url": None if self.a.no_proxy else f"http://{self.a.host}:{self.a.port}",
                  "nginx_pid": self.nginx.pid if self.nginx else None, "upstreams": self.a.upstream,
                  "backends": [{"port": b.port, "pid": b.proc.pid if b.proc else None, "restarts": b.restarts}
                               for b in self.backends]}
        atomic_write_bytes(self.run / "status.json", json.dumps(status, indent=1).encode())

    def stop(self) -> None:
        if self.nginx is not None and self.nginx.poll() is None:
            self.nginx.send_signal(signal.SIGQUIT)  # graceful: finish the requests in flight
        for b in self.backends:
            if b.proc is not None and b.proc.poll() is None:
                b.proc.terminate()
        for p in [self.nginx, *(b.proc for b in self.backends)]:
            if p is not None:
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(5)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="deploy/serve", description=__doc__.split("\n\n")[0])
    p.add_argument("--processes", type=int, default=2, help="local Streamlit processes (about one core each)")
    p.add_argument("--port", type=int, default=8080, help="nginx's port (the URL to hand out)")
    p.add_argument("--host", default="127.0.0.1", help="nginx's listen address (0.0.0.0: every interface)")
    p.add_argument("--backend-port", type=int, help="the first Streamlit port (default: --port + 1)")
    p.add_argument("--upstream", action="append", default=[], type=parse_upstream, metavar="HOST:PORT",
                   help="a Streamlit process on another machine (repeatable)")
    p.add_argument("--run-dir", help="pid, logs, temp files and config (default: deploy/run/<port>/)")
    p.add_argument("--no-proxy", action="store_true", help="supervised Streamlit processes only, on --host "
                                                           "(the upstreams of an nginx elsewhere)")
    a = p.parse_args(argv)
    if not 0 <= a.processes <= 64 or (a.processes == 0 and not a.upstream):
        p.error("--processes must be 1..64 (or 0 with at least one --upstream)")
    return a


def main(argv=None) -> int:
    a = parse_args(argv)
    sup = Supervisor(a)

    def on_signal(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    try:
        sup.start()
        while True:
            time.sleep(CHECK_EVERY_S)
            sup.check()
    except KeyboardInterrupt:
        pass
    except RuntimeError as e:  # a process did not come up
        print(f"error: {e}", file=sys.stderr)
        sup.stop()
        return 1
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not cut the clean-up short
    sup.stop()
    print("stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
