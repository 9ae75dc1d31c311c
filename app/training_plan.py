"""What a Train-view job will run: recipes, the bounded settings, the `train` command line, the time estimate.

No Streamlit calls. The job itself is the library's own `python -m csae_core train` (app/training_jobs.py
launches it); this module only turns the user's choices into its flags, refusing out-of-range ones with one
CSAEError line.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from csae_core import recipes
from csae_core.datasets import DATASETS, TRAINABLE
from csae_core.errors import CSAEError
from csae_core.model import DEFAULT_KIND, KINDS  # the model-kind registry: a new kind appears here by itself

ROOT = Path(__file__).resolve().parents[1]
MAX_BETA = 0.5
LATENT_RANGE = (2, 256)  # the paper: 40 on the digits, 256 on faces
MAX_IMAGE_STEPS_ENV = "CSAE_MAX_IMAGE_STEPS"
MAX_IMAGE_STEPS = 8_000_000  # the paper's 120 epochs of MNIST are 7.2 M image-steps

# A recipe: TrainConfig settings (as `train` flags) and a line for the user. The quick preset is the project's
# CPU optimizer (csae_core.recipes.CPU_SGD: 98.3 % on MNIST validation at 55k image-steps, results/recipe.md),
# cut into 5 epochs of 11,000 random images (a validation point and strip about every minute; the loss curves
# move every 5 s from the trainer's progress lines, TrainConfig.progress_every). cpu-720k and paper are the
# zoo's recipes (csae_core.recipes), evaluated per epoch on 1,000 test images. `tiny` is a smoke test (its
# progress lines come every 0.05 s, so its second-long runs show them too).
RECIPES = {
    "quick": dict(title="quick (55k image-steps, a few minutes on 2 CPU cores)", cuda_only=False,
                  train=dict(recipes.CPU_SGD, epochs=5, epoch_images=11_000, val_images=1000, stats_images=5000)),
    "cpu-720k": dict(title="cpu-720k (the zoo's CPU recipe: 12 passes, about an hour per CSAE on 2 cores)",
                     cuda_only=False, train=dict(recipes.CPU_720K)),
    "paper": dict(title="paper (120 epochs, lr 0.1 /10 every 30; needs a GPU)", cuda_only=True,
                  train=dict(recipes.PAPER, test_images=1000)),
    "tiny": dict(title="tiny (a smoke test: seconds, not a useful model)", cuda_only=False,
                 train=dict(epochs=2, lr=0.03, schedule="step", lr_step=1, batch_size=16, epoch_images=32,
                            val_images=10, stats_images=50, progress_every=0.05), widths=(8, 8, 8, 8)),
}
# The view's data sources: the registry's datasets with a training split (a new one appears by itself), then a zip.
SOURCES = {**{n: DATASETS[n].title for n in TRAINABLE}, "upload": "Your images (a zip)"}


@dataclass(frozen=True)
class Plan:
    """One job's choices. `dataset` is mnist, fashion-mnist or the folder of an uploaded image set."""

    dataset: str
    kind: str = DEFAULT_KIND
    beta: float = 0.02
    latent_dim: int = 40
    recipe: str = "quick"
    device: str = "auto"
    train_images: int = 60_000  # the dataset's training images (an upload's count): bounds the validation split
    image_size: int = 0  # 0: the library's default (32 for the digits)
    dataset_title: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def recipes(cuda: bool) -> list[str]:
    """The recipes offered: the paper's only where CUDA is present."""
    return [name for name, r in RECIPES.items() if cuda or not r["cuda_only"]]


def kind_title(kind: str) -> str:
    return KINDS[kind].title if kind in KINDS else str(kind)


def uses_beta(kind: str) -> bool:
    """Whether β (the decoder-input noise) changes this kind's training: the view offers the β input only then."""
    return kind in KINDS and KINDS[kind].cls.uses_beta


def max_image_steps() -> int:
    try:
        return max(1, int(os.environ.get(MAX_IMAGE_STEPS_ENV, MAX_IMAGE_STEPS)))
    except ValueError:
        return MAX_IMAGE_STEPS


def settings(plan: Plan) -> dict:
    """The TrainConfig settings of `plan`'s recipe for its kind, with the validation split fitted to the data."""
    r = RECIPES[plan.recipe]
    # A kind with its own optimizer settings (the CVAE: Adam 1e-3 at batch 512, ModelKind.train) keeps them.
    s = dict(r["train"], **(KINDS[plan.kind].train if plan.kind in KINDS else {}))
    if s.get("val_images"):
        # A folder is split 9:1 into train/test first; keep at least 2 training images per validation image.
        train = plan.train_images if plan.dataset in TRAINABLE else plan.train_images * 9 // 10
        s["val_images"] = max(1, min(s["val_images"], train // 3))
    return s


def image_steps(plan: Plan) -> int:
    s = settings(plan)
    per_epoch = s.get("epoch_images") or plan.train_images - s.get("val_images", 0)
    return s["epochs"] * per_epoch


def check(plan: Plan, cuda: bool) -> None:
    """One CSAEError line for a choice out of bounds; nothing else is refused."""
    if plan.kind not in KINDS:
        raise CSAEError(f"model kind must be one of {', '.join(KINDS)}, got {plan.kind!r}")
    if not (isinstance(plan.beta, (int, float)) and 0 <= plan.beta <= MAX_BETA):
        raise CSAEError(f"β must be a number in [0, {MAX_BETA}], got {plan.beta!r}")
    lo, hi = LATENT_RANGE
    if not (isinstance(plan.latent_dim, int) and lo <= plan.latent_dim <= hi):
        raise CSAEError(f"latent size must be a whole number in [{lo}, {hi}], got {plan.latent_dim!r}")
    if plan.recipe not in RECIPES:
        raise CSAEError(f"recipe must be one of {', '.join(RECIPES)}, got {plan.recipe!r}")
    if plan.recipe not in recipes(cuda):
        raise CSAEError(f"the {plan.recipe} recipe needs a CUDA GPU, and none is visible. Fix: choose quick or cpu-720k.")
    if plan.device not in ("auto", "cpu", "cuda") or (plan.device == "cuda" and not cuda):
        raise CSAEError(f"device must be auto or cpu{' or cuda' if cuda else ''}, got {plan.device!r}")
    if image_steps(plan) > max_image_steps():
        raise CSAEError(f"{plan.recipe} would train {image_steps(plan):,} image-steps, over this server's cap of "
                        f"{max_image_steps():,} (${MAX_IMAGE_STEPS_ENV}). Fix: choose a shorter recipe.")


def train_args(plan: Plan) -> list[str]:
    """The `python -m csae_core train` flags of `plan` (without --out, --resume)."""
    args = ["--dataset", plan.dataset, "--model", plan.kind, "--beta", f"{plan.beta:g}",
            "--latent-dim", str(plan.latent_dim), "--device", plan.device, "--recipe", plan.recipe]
    if plan.image_size:
        args += ["--image-size", str(plan.image_size)]
    widths = RECIPES[plan.recipe].get("widths")
    if widths:
        args += ["--widths", *map(str, widths)]
    for key, value in settings(plan).items():
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            args.append(flag if value else "--no-" + key.replace("_", "-"))
        else:
            args += [flag, f"{value:g}" if isinstance(value, float) else str(value)]
    return args


def job_threads() -> int:
    """Torch threads of a training job: every core on a 2-core machine (the job runs at nice 10, so the server
    still comes first), one core fewer on bigger ones; $CSAE_TRAIN_THREADS overrides."""
    cores = os.cpu_count() or 1
    try:
        return max(1, int(os.environ["CSAE_TRAIN_THREADS"]))
    except (KeyError, ValueError):
        return cores if cores <= 2 else cores - 1


# ---------------------------------------------------------------- the time estimate

# Timed optimizer steps after the warm-up ones: ~2 s for a paper-sized CSAE on 2 cores; a GPU step takes
# milliseconds, so it gets more of both (cuDNN picks its kernels in the first steps).
MEASURE_STEPS = {"cpu": (1, 3), "cuda": (5, 30)}  # device: (warm-up steps, timed steps)


def job_device(plan: Plan) -> str:
    """Where the job will train: `train --device auto` takes the GPU when there is one."""
    return "cuda" if plan.device != "cpu" and cuda_available() else "cpu"


def speed_key(plan: Plan) -> str:
    widths = RECIPES[plan.recipe].get("widths") or ()
    return f"{plan.kind}/{plan.latent_dim}/{plan.image_size or 32}/{'-'.join(map(str, widths))}/{job_device(plan)}"


def measured_speed(plan: Plan, cache: Path) -> float:
    """Training images/s of `plan`'s model on this machine and the job's device, measured once (a few steps in
    a separate process, niced and threaded as a job is) and kept in `cache` (JSON) for later visits and restarts."""
    key = speed_key(plan)
    try:
        known = json.loads(cache.read_text())
    except (OSError, ValueError):
        known = {}
    if isinstance(known, dict) and isinstance(known.get(key), (int, float)):
        return float(known[key])
    channels = 3 if plan.dataset not in TRAINABLE else 1
    widths = RECIPES[plan.recipe].get("widths") or (32, 64, 128, 128)
    batch = min(settings(plan)["batch_size"], 128)
    cmd = [sys.executable, "-m", "app.training_runner", "--measure", plan.kind, str(plan.latent_dim),
           str(plan.image_size or 32), str(channels), str(batch), ",".join(map(str, widths)), job_device(plan)]
    env = {**os.environ, "OMP_NUM_THREADS": str(job_threads())}
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    if out.returncode != 0:
        raise CSAEError(f"measuring this machine's training speed failed: {out.stderr.strip()[-300:]}")
    speed = float(out.stdout.strip().splitlines()[-1])
    from csae_core.checkpoint import atomic_write_bytes

    atomic_write_bytes(cache, json.dumps({**(known if isinstance(known, dict) else {}), key: speed}).encode())
    return speed


def estimate_seconds(plan: Plan, images_per_s: float) -> float:
    """Training time at `images_per_s`, plus the evaluations (inference ~3x faster than a training step):
    each epoch's validation images, and the whole test set once at the end."""
    s = settings(plan)
    per_epoch_eval = s.get("val_images") or s.get("test_images") or 10_000
    test = 10_000 if plan.dataset in TRAINABLE else max(1, plan.train_images // 10)
    evals = s["epochs"] * per_epoch_eval + test
    return image_steps(plan) / images_per_s + evals / (3 * images_per_s)


def duration(seconds: float) -> str:
    """'45 s', '4 min', '1 h 20 min'."""
    if not math.isfinite(seconds):
        return "?"
    if seconds < 90:
        return f"{seconds:.0f} s"
    minutes = round(seconds / 60)
    return f"{minutes} min" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"
