"""The Train view's quick preset on MNIST, end to end as the view runs it: wall time, test accuracy, images/s.

    python benchmarks/bench_quick_preset.py [--kind csae] [--beta 0.02] [--recipe quick]

Starts the job through app.training_jobs (the runner process, `python -m csae_core train`, the fp16 export and
the full-test-set evaluation) in a temporary user folder, waits for it, and prints one JSON line. The load
average before and after is printed too: a figure taken beside another job is a loaded-machine figure.
`start_s`: how long Start takes to return (the job is recorded and its process launched); `reattach_s`: a new
session's run of the Train view while the job trains. `curve_gap_max_s`: the longest wait, polling every second, between two new points of the view's curves (a
progress line or an epoch record) from the first point to the last epoch; the view shows them within its
5 s refresh.
"""
import argparse
import json
import os
import tempfile
import time


def reattach_seconds() -> float:
    """A new session opening the Train view while the job runs (as a closed tab reopened): seconds for the
    view's run, in a process that has drawn the view once (a server has its modules imported)."""
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    page = str(Path(__file__).resolve().parents[1] / "pages" / "train.py")
    AppTest.from_file(page, default_timeout=60).run()
    t0 = time.perf_counter()
    at = AppTest.from_file(page, default_timeout=60).run()
    seconds = round(time.perf_counter() - t0, 3)
    return seconds if not at.exception else None


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--kind", default="csae")
    p.add_argument("--beta", type=float, default=0.02)
    p.add_argument("--recipe", default="quick")
    p.add_argument("--dataset", default="mnist")
    a = p.parse_args()
    os.environ["CSAE_USER_MODELS_DIR"] = tempfile.mkdtemp(prefix="bench-quick-")
    from app import training_jobs, training_plan

    plan = training_plan.Plan(dataset=a.dataset, kind=a.kind, beta=a.beta, recipe=a.recipe)
    load0 = os.getloadavg()
    t0 = time.perf_counter()
    job = training_jobs.start(plan, training_plan.cuda_available())
    start_s = time.perf_counter() - t0
    reattach_s = None
    points, changes = (0, 0), []  # (progress lines, epoch records) the curves show; when they changed
    while (job := training_jobs.read(job["id"]))["state"] in (*training_jobs.ACTIVE, "queued"):
        time.sleep(1)
        training_jobs.all_jobs()  # marks a dead runner failed
        now = (len(training_jobs.steps(job["id"])), len(training_jobs.history(job["id"])))
        if reattach_s is None and now[0] and job["state"] == "running":
            reattach_s = reattach_seconds()
        if now != points:
            points, changes = now, changes + [time.perf_counter()]
    wall = time.perf_counter() - t0
    hist = training_jobs.history(job["id"])
    train_s = sum(r["seconds"] for r in hist)
    print(json.dumps({
        "recipe": a.recipe, "dataset": a.dataset, "kind": a.kind, "beta": a.beta, "state": job["state"],
        "test_accuracy": job.get("test_accuracy"), "recon_mse": job.get("recon_mse"),
        "val_accuracy_last_epoch": hist[-1].get("val_accuracy") if hist else None,
        "wall_seconds": round(wall, 1), "train_seconds": round(train_s, 1),
        "image_steps": sum(r["images"] for r in hist),
        "images_per_s": round(sum(r["images"] for r in hist) / train_s, 1) if train_s else None,
        "curve_points": len(changes),
        "curve_gap_max_s": round(max(b - a for a, b in zip(changes, changes[1:])), 1) if len(changes) > 1 else None,
        "start_s": round(start_s, 3), "reattach_s": reattach_s,
        "job_threads": training_plan.job_threads(), "cores": os.cpu_count(),
        "load_average_before": [round(x, 2) for x in load0],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "error": job.get("error"), "user_folder": os.environ["CSAE_USER_MODELS_DIR"]}))


if __name__ == "__main__":
    main()
