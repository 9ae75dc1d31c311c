"""The Train view's pieces: the settings form, the estimate, the live job panel and the user's models.

Widgets here return values; the work is in app.training_plan (what to run), app.training_jobs (the jobs) and
app.uploads (an uploaded image set). The job panel is a fragment that reruns on its own every few seconds
while a job is active, reading the run's files: no session holds any job state, so any tab reattaches.
"""
from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

from csae_core.errors import CSAEError

from . import loaders, training_jobs, training_plan, uploads

REFRESH_S = 5  # the job panel's refresh while a job runs (the issue asks for at most 10 s)
DATASETS = training_plan.SOURCES
STATE_TEXT = {"queued": "queued", "running": "running", "stopping": "stopping…", "exporting": "exporting the model…",
              "stopped": "stopped", "done": "done", "failed": "failed"}


def _uploaded_set(key: str) -> uploads.ImageSet | None:
    """The session's unpacked zip: unpacked once per upload, remembered in session_state."""
    f = st.file_uploader("A zip of image folders, one per class (PNG or JPEG, all one size)", type=["zip"], key=key)
    if f is None:
        return None
    memo = st.session_state.get("train_upload")
    if memo and memo[0] == f.file_id:
        return memo[1]
    try:
        result = uploads.unpack(f.getvalue(), training_jobs.user_dir() / "datasets")
    except CSAEError as e:
        st.error(str(e))
        return None
    st.session_state["train_upload"] = (f.file_id, result)
    return result


def settings_form() -> training_plan.Plan | None:
    """The user's choices as a Plan (None while an upload is missing or refused)."""
    c = st.columns(3)
    source = c[0].radio("Dataset", list(DATASETS), format_func=DATASETS.get, key="train_dataset")
    kind = c[1].selectbox("Model", tuple(training_plan.KINDS), format_func=training_plan.kind_title,
                          key="train_kind")
    beta = c[2].number_input("β (latent noise in training)", 0.0, training_plan.MAX_BETA, 0.02, step=0.01,
                             format="%.3f", key="train_beta", disabled=not training_plan.uses_beta(kind),
                             help="any value from 0 to 0.5; only the CSAE uses it")
    d = st.columns(3)
    latent = d[0].number_input("Latent size", *training_plan.LATENT_RANGE, 40, step=1, key="train_latent")
    names = training_plan.recipes(loaders.cuda_available())
    recipe = d[1].selectbox("Recipe", names, format_func=lambda r: training_plan.RECIPES[r]["title"],
                            key="train_recipe")
    gpu = ["cuda"] if loaders.cuda_available() else []
    device = d[2].selectbox("Device", ["auto", "cpu", *gpu], key="train_device",
                            help="auto: the GPU when there is one")
    beta = float(beta) if training_plan.uses_beta(kind) else 0.0
    if source != "upload":
        return training_plan.Plan(dataset=source, kind=kind, beta=beta, latent_dim=int(latent), recipe=recipe,
                                  device=device, dataset_title=DATASETS[source])
    images = _uploaded_set("train_zip")
    if images is None:
        return None
    st.caption(f"{images.images} images in {len(images.classes)} classes ({', '.join(images.classes[:12])}"
               f"{', …' if len(images.classes) > 12 else ''}), {images.side} px, read at {images.image_size} px "
               f"in colour; 10 % held out for the test.")
    return training_plan.Plan(dataset=str(images.folder), kind=kind, beta=beta, latent_dim=int(latent),
                              recipe=recipe, device=device, train_images=images.images,
                              image_size=images.image_size, dataset_title="your images")


def estimate(plan: training_plan.Plan, busy: bool) -> None:
    """'About 4 min (55,000 image-steps at 230 images/s measured on this machine)'."""
    steps = training_plan.image_steps(plan)
    cache = training_jobs.user_dir() / "speed.json"
    if busy and training_plan.speed_key(plan) not in _known_speeds(cache):
        st.caption(f"{steps:,} image-steps. The time estimate is measured when no job is running.")
        return
    try:
        with st.spinner("Measuring this machine's training speed (once)…"):
            speed = training_plan.measured_speed(plan, cache)
    except (CSAEError, OSError, ValueError) as e:
        st.caption(f"{steps:,} image-steps; no estimate ({e}).")
        return
    where = "this machine's GPU" if training_plan.job_device(plan) == "cuda" else "this machine"
    st.caption(f"Estimated time: about **{training_plan.duration(training_plan.estimate_seconds(plan, speed))}** "
               f"({steps:,} image-steps at {speed:.0f} images/s, measured on {where}"
               f"{' while it was busy' if busy else ''}; evaluations included).")


def _known_speeds(cache) -> dict:
    import json

    try:
        return json.loads(cache.read_text())
    except (OSError, ValueError):
        return {}


def start_button(plan: training_plan.Plan | None, allowed: bool) -> None:
    if st.button("Start training", type="primary", disabled=plan is None or not allowed, key="train_start"):
        try:
            job = training_jobs.start(plan, loaders.cuda_available())
        except CSAEError as e:
            st.error(str(e))
            return
        st.session_state["train_watch"] = job["id"]
        st.toast("Started" if job["state"] == "running" else "Queued: it starts when the running job ends")


PANELS = (("loss1", "Loss1 (to the centroid)"), ("loss2", "Loss2 (reconstruction)"), ("accuracy", "accuracy"))


def curves(hist: list[dict], points: list[dict]) -> go.Figure:
    """Loss1 (latent to centroid), Loss2 (reconstruction) and accuracy against epochs: every few seconds from
    the trainer's progress lines (training images since the line before), and per epoch (its mean losses at
    its middle; the validation accuracy at its end)."""
    acc_key = next((k for k in ("val_accuracy", "test_accuracy") if hist and k in hist[-1]), "val_accuracy")
    panels = [(k, t) for k, t in PANELS[:2] if any(k in r for r in hist + points)] or [("loss", "loss")]
    panels.append(PANELS[2])
    fig = make_subplots(rows=1, cols=len(panels), subplot_titles=[t for _, t in panels])
    live = dict(mode="lines+markers", line=dict(width=1, color="#9ab"), marker=dict(size=3), legendgroup="live",
                name="training images, every few seconds")
    epoch = dict(mode="lines+markers", line=dict(color="#1f77b4"), legendgroup="epoch", name="per epoch")
    x_live = [training_jobs.epochs_done(r) for r in points]
    for i, (k, _) in enumerate(panels, 1):
        live_key = "train_accuracy" if k == "accuracy" else k
        if any(live_key in r for r in points):
            fig.add_trace(go.Scatter(x=x_live, y=[r.get(live_key) for r in points], showlegend=i == 1, **live), 1, i)
        if k == "accuracy":  # measured after the epoch, on the held-out images
            xs, ys = [r["epoch"] for r in hist], [r.get(acc_key) for r in hist]
            name = "validation" if acc_key == "val_accuracy" else "test (first images)"
            fig.add_trace(go.Scatter(x=xs, y=ys, showlegend=False, **{**epoch, "name": f"{name}, per epoch"}), 1, i)
        else:  # an epoch's mean loss belongs to its middle
            fig.add_trace(go.Scatter(x=[r["epoch"] - 0.5 for r in hist], y=[r.get(k) for r in hist],
                                     showlegend=i == 1, **epoch), 1, i)
        fig.update_xaxes(title_text="epochs", rangemode="tozero", row=1, col=i)
    fig.update_layout(height=300, margin=dict(l=10, r=10, t=40, b=10),
                      legend=dict(orientation="h", y=-0.35, x=0))
    return fig


def _job_title(job: dict) -> str:
    p = job.get("plan") or {}
    name = training_plan.kind_title(p.get("kind"))
    beta = f" β={p.get('beta', 0):g}" if training_plan.uses_beta(p.get("kind")) else ""
    return f"{name}{beta} on {p.get('dataset_title') or p.get('dataset')} · {p.get('recipe')} recipe · latent {p.get('latent_dim')}"


def _job_buttons(job: dict, where) -> None:
    state, jid = job.get("state"), job["id"]
    cols = where.columns(3)
    if state in ("running", "queued") and cols[0].button("Stop", key=f"stop_{jid}"):
        training_jobs.stop(jid)
        st.rerun()
    can_resume = state == "stopped" or (state == "failed" and
                                        (training_jobs.run_dir(jid) / "train_state.safetensors").is_file())
    if can_resume and cols[1].button("Resume", key=f"resume_{jid}",
                                     help="continues from the last finished epoch, exactly (train --resume)"):
        training_jobs.resume(jid)
        st.rerun()
    if state not in training_jobs.ACTIVE and cols[2].button("Delete", key=f"delete_{jid}"):
        training_jobs.delete(jid)
        st.rerun(scope="app")


def job_card(job: dict, jobs: list[dict]) -> None:
    """One job: state, progress bar with ETA, curves, strips, failure log, buttons."""
    state = job.get("state")
    box = st.container(border=True)
    box.markdown(f"**{_job_title(job)}** · {STATE_TEXT.get(state, state)}")
    if state == "queued":
        box.caption(f"Place in the queue: {training_jobs.queue_place(job, jobs)} (one job runs at a time)")
    fraction, text = training_jobs.progress(job)
    if state != "queued":
        box.progress(fraction, text=text)
    if job.get("note"):
        box.caption(job["note"].capitalize())
    if state == "failed":
        box.error(f"Failed: {job.get('error')}. It is not listed as a model.")
        if job.get("log_tail"):
            box.code(job["log_tail"], language=None)
    if state == "done" and job.get("test_accuracy") is not None:
        box.caption(f"Test accuracy {job['test_accuracy']:.2%}; listed in every view as “your model”.")
    hist, points = training_jobs.history(job["id"]), training_jobs.steps(job["id"])
    if hist or points:
        box.plotly_chart(curves(hist, points), key=f"curves_{job['id']}")
    strips = training_jobs.strips(job["id"])
    if strips:
        with box.expander(f"Validation images (top) and reconstructions (bottom), {len(strips)} epoch(s)",
                          expanded=state in training_jobs.ACTIVE):
            for epoch, png in reversed(strips):
                st.image(png.read_bytes(), caption=f"epoch {epoch}", output_format="PNG")
    _job_buttons(job, box)


def jobs_panel() -> None:
    """Every job, newest first; refreshes itself while one is active."""
    jobs = training_jobs.all_jobs()
    active = any(j.get("state") in (*training_jobs.ACTIVE, "queued") for j in jobs)
    was = st.session_state.get("train_active")
    st.session_state["train_active"] = active
    if was and not active:
        st.rerun(scope="app")  # a job ended: the estimate, the models list and the other views update
    if active:
        training_jobs.tick()  # a queued job whose predecessor died without starting it
    if not jobs:
        st.caption("No jobs yet.")
    for job in reversed(jobs):
        job_card(job, jobs)


def live_jobs_panel() -> None:
    active = any(j.get("state") in (*training_jobs.ACTIVE, "queued") for j in training_jobs.all_jobs())
    st.fragment(run_every=REFRESH_S if active else None)(jobs_panel)()


def models_table() -> None:
    """The user's models, oldest first (what to delete when the disk cap is near), with the disk they use."""
    used, cap = training_jobs.disk_usage(), training_jobs.disk_cap()
    st.caption(f"Stored in `{training_jobs.user_dir()}`: {used / 1e6:.1f} MB of {cap / 1e6:.0f} MB allowed.")
    mine = [e for e in loaders.model_entries() if e.user]
    if not mine:
        st.caption("None yet: a finished job's model appears here and in every view.")
        return
    rows = [{"model": e.label, "dataset": e.dataset if len(e.dataset) < 20 else "your images",
             "epoch": e.epoch_label, "test accuracy": e.test_accuracy, "file": e.path.rsplit("/", 1)[-1],
             "created": time.strftime("%Y-%m-%d %H:%M", time.localtime(_mtime(e.path)))}
            for e in sorted(mine, key=lambda e: _mtime(e.path))]
    st.dataframe(pd.DataFrame(rows), hide_index=True,
                 column_config={"test accuracy": st.column_config.NumberColumn(format="percent")})
    _delete_row(sorted(mine, key=lambda e: _mtime(e.path)), used >= cap)


def _delete_row(oldest_first: list, full: bool) -> None:
    """Delete a model (with its job, run folder and uploaded images), the oldest offered first."""
    by_path = {e.path: e for e in oldest_first}
    c = st.columns([3, 1])
    path = c[0].selectbox("Delete a model (oldest first)" + (": the disk cap is reached" if full else ""),
                          list(by_path), format_func=lambda p: f"{by_path[p].long_label} · {Path(p).stem}",
                          key="train_delete_model")
    if c[1].button("Delete", key="train_delete_model_button", disabled=path is None):
        try:
            training_jobs.delete(Path(path).stem)
        except CSAEError as e:
            st.error(str(e))
            return
        st.rerun()


def _mtime(path: str) -> float:
    try:
        import os

        return os.stat(path).st_mtime
    except OSError:
        return 0.0
