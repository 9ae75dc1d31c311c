"""The process behind one Train-view job: `python -m app.training_runner <user folder> <job id>`.

It runs the library's own trainer (`python -m csae_core train <the job's flags> --out runs/<id>`, with
`--resume` when the run has a resume point) as a child process, draws a strip of validation images and their
reconstructions after each epoch, and when the trainer has finished, exports the model with fp16 weights (as
the zoo ships its models) evaluated on the full test set into models/<id>. Only then is it a model the
explorer lists. A Stop is SIGINT to the whole process group: the trainer keeps its last finished epoch
(its KeyboardInterrupt path) and exits 130, and this runner records the job as stopped.

`python -m app.training_runner --measure ...` times a few training steps instead (the view's estimate).
"""
from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

STRIP_IMAGES = 8
_stop_asked = False


def _on_signal(signum, frame) -> None:
    global _stop_asked
    _stop_asked = True  # the trainer child got the same signal (same process group) and saves nothing new


def _strip_inputs(job: dict):
    """The first STRIP_IMAGES validation images (the held-out tail of the training set) or test images."""
    from csae_core.preprocess import load_dataset_tensors

    plan, args = job["plan"], job["args"]
    (train_x, _), (test_x, _), _ = load_dataset_tensors(plan["dataset"], None, plan.get("image_size") or 0)
    val = int(args[args.index("--val-images") + 1]) if "--val-images" in args else 0
    return train_x[-val:][:STRIP_IMAGES] if val else test_x[:STRIP_IMAGES]


def _draw_strip(run: Path, inputs, done: set) -> None:
    """strips/epochNNN.png for the run's latest checkpoint, if not drawn yet: inputs above, reconstructions below."""
    import torch

    from csae_core.checkpoint import atomic_write_bytes, load_checkpoint
    from csae_core.images import to_grid
    from csae_core.preprocess import to_model_input

    meta = json.loads((run / "last.json").read_text())
    epoch = int(meta["epoch"])
    if epoch in done:
        return
    ckpt = load_checkpoint(run / "last", check_manifest=False)
    with torch.no_grad():
        x = to_model_input(inputs, ckpt.config.image_size)
        recon = ckpt.model.reconstruct(x).float().clamp(0, 1)
    from io import BytesIO

    from PIL import Image

    buf = BytesIO()
    Image.fromarray(to_grid(torch.cat([x, recon]), nrow=len(x))).save(buf, format="PNG")
    atomic_write_bytes(run / "strips" / f"epoch{epoch:03d}.png", buf.getvalue())
    done.add(epoch)


def _watch(child: subprocess.Popen, job: dict, run: Path) -> None:
    """Wait for the trainer, drawing each new epoch's strip (a failure here never stops the training)."""
    inputs, done, seen = None, set(), None
    from csae_core.model import KINDS

    has_decoder = KINDS[job["plan"]["kind"]].cls.has_decoder
    while True:
        finished = child.poll() is not None
        stamp = None
        try:
            stamp = (run / "last.json").stat().st_mtime_ns if (run / "last.json").exists() else None
            if has_decoder and stamp is not None and stamp != seen:
                inputs = _strip_inputs(job) if inputs is None else inputs
                _draw_strip(run, inputs, done)
                seen = stamp
        except Exception as e:  # noqa: BLE001 - a strip is a picture, the training goes on
            print(f"warning: no strip for this epoch ({type(e).__name__}: {e})", flush=True)
            seen = stamp
        if finished:
            return
        time.sleep(1.0)


def _export(job: dict, run: Path, stem: Path) -> dict:
    """fp16 copy of the run's last checkpoint, evaluated on the whole test set, saved as models/<id>."""
    from csae_core.checkpoint import load_checkpoint, save_checkpoint
    from csae_core.evaluate import evaluate_model
    from csae_core.preprocess import load_dataset_tensors

    ck = load_checkpoint(run / "last", check_manifest=False)
    meta = {k: v for k, v in ck.meta.items() if k not in ("format", "model", "weights", "weights_sha256",
                                                         "weights_dtype", "centroids")}
    save_checkpoint(run / "export", ck.model, meta, half=True)
    half = load_checkpoint(run / "export", check_manifest=False)  # evaluate what is shipped: the fp16 weights
    _, (x, y), _ = load_dataset_tensors(job["plan"]["dataset"], None, job["plan"].get("image_size") or 0)
    m = evaluate_model(half.model, x, y, class_names=half.class_names)
    meta["metrics"] = {"split": "test", **{k: m[k] for k in ("accuracy", "recon_mse", "psnr", "test_images",
                                                             "per_class_accuracy")}}
    meta["user"] = {"job": job["id"], "dataset_title": job["plan"].get("dataset_title") or job["plan"]["dataset"]}
    save_checkpoint(stem, half.model, meta, half=True)
    for p in run.glob("*.safetensors"):  # the model is exported: the run's fp32 copies and resume point go
        p.unlink(missing_ok=True)
    for name in ("last.json", "export.json"):
        (run / name).unlink(missing_ok=True)
    return m


def run_job(job_id: str) -> None:
    from app import training_jobs as jobs

    job = jobs.read(job_id)
    if job is None or job.get("state") != "running":
        return
    run = jobs.run_dir(job_id)
    resume = (run / "train_state.safetensors").is_file()
    cmd = [sys.executable, "-m", "csae_core", "train", *job["args"], "--out", str(run), "--no-progress",
           *(["--resume"] if resume else [])]
    print(f"{time.strftime('%H:%M:%S')} {'resuming' if resume else 'starting'}: {shlex.join(cmd)}", flush=True)
    child = subprocess.Popen(cmd, stdin=subprocess.DEVNULL)  # output: this runner's log (job.log)
    _watch(child, job, run)
    rc = child.returncode
    if rc == 0 and not _stop_asked:
        jobs.update(job_id, state="exporting")
        m = _export(job, run, jobs.model_stem(job_id))
        jobs.update(job_id, state="done", finished=time.time(), test_accuracy=m["accuracy"],
                    recon_mse=m["recon_mse"], model=str(jobs.model_stem(job_id)) + ".json")
        print(f"done: test accuracy {m['accuracy']:.4f} on {m['test_images']} images", flush=True)
    elif rc == 130 or _stop_asked:
        jobs.update(job_id, state="stopped", finished=time.time(), note="stopped; its last finished epoch is kept")
    else:
        jobs.fail(job_id, f"the trainer exited with code {rc}")


def measure(kind: str, latent: int, size: int, channels: int, batch: int, widths: str, device: str = "cpu") -> float:
    """Training images/s of one model on `device`, stepped as train_step does (csae_core.throughput): warm-up
    steps, then timed ones on random images (MEASURE_STEPS), at this process's lower priority."""
    import torch

    from app.training_plan import MEASURE_STEPS
    from csae_core.model import KINDS, ModelConfig
    from csae_core.pedcc import generate_pedcc
    from csae_core.throughput import training_images_per_s

    os.nice(10)
    cfg = ModelConfig(kind=kind, latent_dim=latent, image_size=size, in_channels=channels, beta=0.02,
                      widths=tuple(int(w) for w in widths.split(",")))
    centroids = generate_pedcc(10, latent, iters=50).scaled() if KINDS[kind].cls.has_centroids else None
    warm, timed = MEASURE_STEPS[torch.device(device).type]
    return training_images_per_s(cfg, centroids, batch, warm, timed, device)


def main(argv: list[str]) -> int:
    if argv and argv[0] == "--measure":
        kind, latent, size, channels, batch, widths, *device = argv[1:8]
        print(f"{measure(kind, int(latent), int(size), int(channels), int(batch), widths, *device):.1f}")
        return 0
    user, job_id = argv
    os.environ["CSAE_USER_MODELS_DIR"] = user  # app.registry.USER_ENV: the same folder as the server's
    os.nice(10)  # the explorer's sessions come first; the trainer child inherits this
    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    from app import training_jobs as jobs

    try:
        run_job(job_id)
    except Exception as e:  # noqa: BLE001 - whatever went wrong, the job must not stay "running"
        print(f"error: {type(e).__name__}: {e}", flush=True)
        jobs.fail(job_id, f"{type(e).__name__}: {e}")
    finally:
        jobs.tick()  # the next queued job, with or without a tab open
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
