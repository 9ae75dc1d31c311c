"""Training jobs of the Train view: a queue of separate processes, one running at a time per user folder.

A job is a small JSON file, `<user folder>/jobs/<id>.json`, written atomically; everything else about it is
in its run folder `<user folder>/runs/<id>/` (the library's log.jsonl, progress.jsonl and checkpoints, the
runner's log, the per-epoch strips). The script thread only reads these files and starts or signals processes, so a job
survives reruns, page changes, closed tabs and a restarted server, and any session reattaches to it.

States: queued -> running -> done | stopped | failed; stopping while a Stop is being honoured. A job whose
process is gone while the file says running (killed, crashed, the machine rebooted) is failed, with the last
lines of its log. Only `done` jobs have a model in `<user folder>/models/`. No Streamlit calls here.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

from csae_core.checkpoint import atomic_write_bytes
from csae_core.train import PROGRESS_FILE
from csae_core.errors import CSAEError

from . import registry, training_plan

ROOT = Path(__file__).resolve().parents[1]
ALLOW_ENV = "CSAE_ALLOW_TRAINING"
MAX_MB_ENV = "CSAE_USER_MODELS_MAX_MB"
MAX_MB = 2048  # all user models, runs and uploads together
LOCAL_ADDRESSES = ("localhost", "127.0.0.1", "::1")
ACTIVE = ("running", "stopping", "exporting")
LOG_TAIL = 12  # lines of a failed job's log shown to the user
JOB_ID = re.compile(r"[\w-]{1,64}")  # a job id is a file name (start(): 20261201-013000-1a2b3c), never a path


def user_dir() -> Path:
    return registry.user_models_dir()


def _jobs_dir() -> Path:
    return user_dir() / "jobs"


def run_dir(job_id: str) -> Path:
    return user_dir() / "runs" / job_id


def model_stem(job_id: str) -> Path:
    return user_dir() / "models" / job_id


def training_allowed(address: str | None) -> tuple[bool, str]:
    """(on, why): on when the server listens on this machine only, or when $CSAE_ALLOW_TRAINING=1."""
    if os.environ.get(ALLOW_ENV, "").strip() == "1":
        return True, f"on (${ALLOW_ENV}=1)"
    if (address or "").strip() in LOCAL_ADDRESSES:
        return True, "on (the server listens on this machine only)"
    return False, (f"Training from the browser is off: this server listens on {address or 'every interface'}, "
                   f"so anyone who reaches it could start jobs. Fix: serve on localhost (the shipped "
                   f".streamlit/config.toml does), or set {ALLOW_ENV}=1 to allow it.")


# ---------------------------------------------------------------- the job files

@contextlib.contextmanager
def _locked():
    """One writer at a time over the job files (sessions' threads, other server processes, runners)."""
    _jobs_dir().mkdir(parents=True, exist_ok=True)
    with open(_jobs_dir() / ".lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _write(job: dict) -> None:
    atomic_write_bytes(_jobs_dir() / f"{job['id']}.json", json.dumps(job, indent=1).encode())


def read(job_id: str) -> dict | None:
    try:
        job = json.loads((_jobs_dir() / f"{job_id}.json").read_text())
    except (OSError, ValueError):
        return None
    return job if isinstance(job, dict) and job.get("id") == job_id else None


def update(job_id: str, **fields) -> dict | None:
    with _locked():
        job = read(job_id)
        if job is not None:
            job.update(fields)
            _write(job)
        return job


def all_jobs() -> list[dict]:
    """Every job, oldest first, with dead `running` ones marked failed."""
    folder = _jobs_dir()
    jobs = [read(p.stem) for p in sorted(folder.glob("*.json"))] if folder.is_dir() else []
    jobs = sorted((j for j in jobs if j), key=lambda j: j.get("created", 0))
    return [_check_alive(j) for j in jobs]


def queue_place(job: dict, jobs: list[dict]) -> int:
    """1 for the next job to run, 2 for the one after, ..."""
    queued = [j["id"] for j in jobs if j.get("state") == "queued"]
    return queued.index(job["id"]) + 1 if job["id"] in queued else 0


# ---------------------------------------------------------------- processes

def _alive(pid: int | None, job_id: str) -> bool:
    """The job's runner is still running: the pid exists, is not a zombie, and is this job's runner."""
    if not pid:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z" and job_id.encode() in cmdline


def log_tail(job_id: str, lines: int = LOG_TAIL) -> str:
    try:
        text = (run_dir(job_id) / "job.log").read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.rstrip().splitlines()[-lines:])


def _check_alive(job: dict) -> dict:
    if job.get("state") in ACTIVE and not _alive(job.get("pid"), job["id"]):
        time.sleep(0.2)  # the runner may be writing its final state right now
        again = read(job["id"]) or job
        if again.get("state") == "stopping":  # stopped before its runner could say so (e.g. while starting)
            return update(job["id"], state="stopped", finished=time.time(),
                          note="stopped; its last finished epoch (if any) is kept") or again
        if again.get("state") in ACTIVE:
            with contextlib.suppress(OSError):  # a trainer child left behind by a killed runner
                os.killpg(job["pid"], signal.SIGKILL)
            return fail(job["id"], "the training process ended without saying why (killed, or the machine "
                                   "restarted)") or again
        return again
    return job


def _drop_model(job_id: str) -> None:
    for p in (user_dir() / "models").glob(f"{job_id}.*"):
        p.unlink(missing_ok=True)


def fail(job_id: str, error: str) -> dict | None:
    """Record the job as failed, with its log's last lines. A runner killed between writing the model and
    recording the job as done leaves a model file behind: it goes, since a failed job is never a model."""
    _drop_model(job_id)
    return update(job_id, state="failed", finished=time.time(), error=error, log_tail=log_tail(job_id))


def _launch(job: dict) -> dict:
    """Start the runner of `job` in its own session (so a Stop reaches its whole process group, and the
    server's signals do not), with the job's thread count; reaped by a waiting thread."""
    folder = run_dir(job["id"])
    folder.mkdir(parents=True, exist_ok=True)
    threads = str(training_plan.job_threads())
    env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads,
           "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    with open(folder / "job.log", "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "app.training_runner", str(user_dir()), job["id"]],
                                cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)  # the runner nices itself (no preexec_fn in a threaded server)
    threading.Thread(target=proc.wait, daemon=True).start()  # no zombie left behind
    job.update(state="running", pid=proc.pid, started=time.time(), finished=None, error=None, log_tail=None)
    _write(job)
    return job


def tick() -> None:
    """Start the oldest queued job when none is running. Called on every Start/Resume, by the view's
    refresh, and by a runner when its job ends (so the queue moves on with no tab open)."""
    with _locked():
        jobs = [j for j in (read(p.stem) for p in sorted(_jobs_dir().glob("*.json"))) if j]
        if any(j.get("state") in ACTIVE and _alive(j.get("pid"), j["id"]) for j in jobs):
            return
        queued = sorted((j for j in jobs if j.get("state") == "queued"), key=lambda j: j.get("created", 0))
        if queued:
            _launch(queued[0])


# ---------------------------------------------------------------- what the view asks for

def disk_usage() -> int:
    total = 0
    for sub in ("models", "runs", "datasets"):
        for p in (user_dir() / sub).rglob("*"):
            with contextlib.suppress(OSError):
                total += p.stat().st_size if p.is_file() else 0
    return total


def disk_cap() -> int:
    try:
        return max(1, int(os.environ.get(MAX_MB_ENV, MAX_MB))) * 1024**2
    except ValueError:
        return MAX_MB * 1024**2


def start(plan: training_plan.Plan, cuda: bool) -> dict:
    """Queue a new job for `plan` and start it if nothing else runs; returns the job."""
    training_plan.check(plan, cuda)
    if user_dir().resolve().is_relative_to(registry.checkpoints_dir().resolve()):
        raise CSAEError(f"the user folder {user_dir()} lies inside the shipped checkpoints folder; refused. "
                        f"Fix: point ${registry.USER_ENV_VAR} elsewhere (default: user_models/).")
    if disk_usage() >= disk_cap():
        oldest = [j for j in all_jobs() if j.get("state") not in ACTIVE][:3]
        names = "; ".join(f"{(j.get('plan') or {}).get('kind')} β={(j.get('plan') or {}).get('beta', 0):g} "
                          f"({j['id']})" for j in oldest)
        raise CSAEError(f"your models use {disk_usage() / 1e6:.0f} MB, the cap is {disk_cap() / 1e6:.0f} MB "
                        f"(${MAX_MB_ENV}). Fix: delete some below, oldest first{': ' + names if names else ''}.")
    job = {"id": time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6], "state": "queued", "created": time.time(),
           "plan": plan.to_dict(), "args": training_plan.train_args(plan),
           "image_steps": training_plan.image_steps(plan), "epochs": training_plan.settings(plan)["epochs"]}
    with _locked():
        _write(job)
    tick()
    return read(job["id"]) or job


def stop(job_id: str) -> None:
    """A running job: SIGINT to its process group (the trainer keeps its last finished epoch and exits);
    a queued one is taken out of the queue."""
    with _locked():
        job = read(job_id)
        if job is None:
            return
        if job.get("state") == "queued":
            job.update(state="stopped", finished=time.time(), note="taken out of the queue before it started")
            _write(job)
            return
        if job.get("state") != "running" or not _alive(job.get("pid"), job_id):
            return
        job["state"] = "stopping"
        _write(job)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(job["pid"], signal.SIGINT)


def resume(job_id: str) -> None:
    """Queue a stopped (or failed) job again: it continues from its last finished epoch (`train --resume`)."""
    with _locked():
        job = read(job_id)
        if job is None or job.get("state") not in ("stopped", "failed"):
            return
        job.update(state="queued", created=time.time(), error=None, log_tail=None, note=None)
        _write(job)
    tick()


def delete(job_id: str) -> None:
    """Remove a job with its run folder, its model and its uploaded images (a running job is stopped first);
    a model whose job file is gone goes too."""
    if not JOB_ID.fullmatch(job_id):
        return  # not one of ours: never a path
    job = read(job_id) or {"id": job_id}
    if job.get("state") in ACTIVE:
        raise CSAEError("this job is still running. Fix: stop it first, then delete it.")
    with _locked():
        shutil.rmtree(run_dir(job_id), ignore_errors=True)
        _drop_model(job_id)
        upload = (job.get("plan") or {}).get("dataset", "")
        datasets = (user_dir() / "datasets").resolve()
        if upload and Path(upload).resolve().is_relative_to(datasets) and Path(upload).resolve() != datasets:
            shutil.rmtree(upload, ignore_errors=True)
        (_jobs_dir() / f"{job_id}.json").unlink(missing_ok=True)


def _records(path: Path, keys: tuple[str, ...]) -> list[dict]:
    """The JSON lines of `path` that are objects with numbers at `keys`; a torn or odd line is skipped."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return []
    out = []
    for line in lines:
        with contextlib.suppress(ValueError):
            rec = json.loads(line)
            if isinstance(rec, dict) and all(isinstance(rec.get(k), (int, float)) for k in keys):
                out.append(rec)
    return out


def history(job_id: str) -> list[dict]:
    """The run's epoch records (log.jsonl), [] before the first epoch ends."""
    return _records(run_dir(job_id) / "log.jsonl", ("epoch",))


def steps(job_id: str) -> list[dict]:
    """The run's lines from within its epochs (the trainer's progress.jsonl, one every few seconds: the mean
    losses since the line before), in training order: the lines of an epoch redone after a resume replace
    the ones they repeat."""
    out: list[dict] = []
    for rec in _records(run_dir(job_id) / PROGRESS_FILE, ("epoch", "images", "epoch_images")):
        while out and (out[-1]["epoch"], out[-1]["images"]) >= (rec["epoch"], rec["images"]):
            out.pop()
        out.append(rec)
    return out


def epochs_done(rec: dict) -> float:
    """Where a progress line lies on the epoch axis: 2.25 is a quarter into epoch 3."""
    return rec["epoch"] - 1 + rec["images"] / max(1, rec["epoch_images"])


def strips(job_id: str) -> list[tuple[int, Path]]:
    """(epoch, PNG) of each epoch's validation images and their reconstructions, in order."""
    folder = run_dir(job_id) / "strips"
    if not folder.is_dir():
        return []
    return sorted((int(p.stem[5:]), p) for p in folder.glob("epoch*.png") if p.stem[5:].isdigit())


def _live(job: dict, done: int) -> dict | None:
    """The running job's latest line from inside its current epoch (none from an earlier attempt at it)."""
    pts = steps(job["id"]) if job.get("state") == "running" else []
    last = pts[-1] if pts else None
    fresh = last is not None and last.get("time", 0) >= (job.get("started") or 0) - 1
    return last if fresh and last["epoch"] == done + 1 else None


def progress(job: dict) -> tuple[float, str]:
    """(fraction done, 'epoch 3 of 5: 40 % · 230 images/s · ETA 1 min'): inside an epoch from the trainer's
    progress lines, else from the epoch records; the ETA from this run's own images/s."""
    hist = history(job["id"])
    epochs = job.get("epochs") or 1
    done = int(hist[-1]["epoch"]) if hist else 0
    if job.get("state") == "done":
        return 1.0, f"finished: {done} of {epochs} epochs"
    live = _live(job, done)
    if job.get("state") == "exporting" or (job.get("state") == "running" and done >= epochs):
        return 0.99, f"epoch {done} of {epochs} done · exporting, and evaluating on the whole test set"
    if live:
        within = live["images"] / max(1, live["epoch_images"])
        left = ((epochs - done) * live["epoch_images"] - live["images"]) / max(live.get("images_per_s") or 0, 1e-9)
        text = f"epoch {done + 1} of {epochs}: {within:.0%} · {live.get('images_per_s', 0):.0f} images/s"
    elif hist:
        within, left = 0.0, (epochs - done) * (hist[-1].get("seconds") or 0)
        text = f"epoch {done} of {epochs} done · {hist[-1].get('images_per_s', 0):.0f} images/s"
    elif job.get("state") == "running":
        return 0.0, f"epoch 1 of {epochs} running (the first point appears within seconds)"
    else:
        return 0.0, f"epoch 0 of {epochs} done"
    eta = f" · ETA {training_plan.duration(left)}" if job.get("state") == "running" and left else ""
    # 100 % only when the model is listed: the export and the test-set evaluation come after the last epoch.
    return min((done + within) / epochs, 0.99), text + eta
