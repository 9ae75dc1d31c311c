"""Training with the paper's recipe (section 4): SGD momentum 0.9, weight decay 5e-4, lr 0.1
divided by 10 every 30 epochs, 120 epochs. One JSON line per epoch; a checkpoint after every
epoch (atomic), so an interrupted run loses at most the current epoch and `resume` continues
exactly: the data order and the noise of epoch e derive from (seed, e), the optimizer's momentum
is saved, the schedule is a function of the epoch.

Runs on the GPU when present (whole dataset on the device, bf16 autocast), on the CPU
unchanged (both channels-last), and under `torchrun --nproc_per_node N` (DDP; gloo on CPU, nccl on GPU).
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.distributed as dist

from .checkpoint import (atomic_write_bytes, clean_stale_tmp, load_tensors, save_checkpoint, save_tensors,
                         writable_dir)
from .errors import CSAEError
from .fast_step import fast_net
from .evaluate import decoder_collapsed, encode, evaluate_model, latent_stats
from .model import ModelConfig, build_model
from .pedcc import generate_pedcc, pedcc_metrics
from .preprocess import load_dataset_tensors, to_float
from .train_config import SCHEDULES, TrainConfig  # torch-free, re-exported here

__all__ = ["TrainConfig", "train", "run_epoch", "evaluate_epoch", "save_epoch", "lr_at", "validation_split",
           "SCHEDULES"]

MAX_MODEL_DIM = 4096  # latent dim and channel widths above this are refused before anything is allocated
# Settings that change what a resumed run computes: a resume with other values would not continue the run.
TRAJECTORY = ("lr", "batch_size", "seed", "momentum", "weight_decay", "lr_step", "warmup_steps", "grad_clip",
              "epoch_images", "pedcc_seed", "pedcc_iters", "schedule", "nesterov", "optimizer", "val_images")


def _check_model_size(mcfg: ModelConfig) -> None:
    if mcfg.latent_dim > MAX_MODEL_DIM or max(mcfg.widths) > MAX_MODEL_DIM:
        raise CSAEError(f"latent dim {mcfg.latent_dim} / widths {list(mcfg.widths)} are over the {MAX_MODEL_DIM} "
                        f"limit. Fix: use smaller --latent-dim / --widths (the paper: 40 and 32 64 128 128).")


def _check_same_trajectory(recorded: dict, cfg: TrainConfig, state_path: Path) -> None:
    now = asdict(cfg)
    # cosine and linear anneal over the whole run: another --epochs would bend the schedule already followed
    # (the paper's step schedule does not depend on it, so a step run may be extended).
    keys = TRAJECTORY + (("epochs",) if cfg.schedule != "step" else ())
    diff = [f"{k} {recorded[k]!r} -> {now[k]!r}" for k in keys
            if k in recorded and k in now and recorded[k] != now[k]]
    if diff:
        raise CSAEError(f"--resume: {state_path} was trained with other settings ({', '.join(diff)}); resuming "
                        f"with them would not continue that run. Fix: pass the recorded values, or train into "
                        f"another --out.")


def lr_at(cfg: TrainConfig, epoch: int, step: int = 0, steps_per_epoch: int = 1) -> float:
    """The lr of optimizer step `step` (0-based) in 1-based `epoch`.

    step: lr / 10 ** floor((epoch - 1) / lr_step) (0.01, not 0.010000000000000002); cosine and linear
    anneal per step from lr to 0 over the whole run. A linear warm-up over `warmup_steps` scales any of them.
    """
    done = (epoch - 1) * steps_per_epoch + step  # optimizer steps before this one
    if cfg.schedule == "step":
        # At most 10^300 (a tiny lr_step such as 0.003 would make 10^k overflow a float, OverflowError).
        lr = cfg.lr / 10.0 ** min(300, math.floor((epoch - 1) / cfg.lr_step))
    else:
        t = min(1.0, done / max(1, cfg.epochs * steps_per_epoch))  # fraction of the run done
        lr = cfg.lr * (0.5 * (1 + math.cos(math.pi * t)) if cfg.schedule == "cosine" else 1 - t)
    if cfg.warmup_steps:
        lr *= min(1.0, (done + 1) / cfg.warmup_steps)
    return lr


def validation_split(train: tuple, n: int) -> tuple[tuple, tuple]:
    """(train minus its last n images, the last n images): the fixed validation split recipes are chosen on.
    The test set is never involved."""
    x, y = train
    if not 0 < n < len(y):
        raise CSAEError(f"val-images must be between 1 and {len(y) - 1} for this dataset, got {n}")
    return (x[:-n], y[:-n]), (x[-n:], y[-n:])


def _pick_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise CSAEError("--device cuda asked for, but no CUDA GPU is visible. Fix: use --device auto or cpu.")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":  # always with an index: torch.cuda.set_device refuses a bare "cuda"
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", torch.cuda.current_device())))
    return torch.device(name)


def _make_optimizer(cfg: TrainConfig, params) -> torch.optim.Optimizer:
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                           nesterov=cfg.nesterov)


def _optimizer_state(opt: torch.optim.Optimizer, names: dict) -> dict[str, torch.Tensor]:
    """Every per-parameter tensor of the optimizer (SGD momentum; Adam moments and step) by parameter name."""
    out = {}
    for p, state in opt.state.items():
        for key, v in state.items():
            if isinstance(v, torch.Tensor):
                out[f"optim.{names[p]}.{key}"] = v
    return out


def _load_optimizer_state(opt: torch.optim.Optimizer, named_params, tensors: dict, device) -> None:
    for name, p in named_params:
        legacy = tensors.get(f"momentum.{name}")  # resume states written before Adam was supported
        if legacy is not None:
            opt.state[p]["momentum_buffer"] = legacy.to(device)
        prefix = f"optim.{name}."
        for k, v in tensors.items():
            if k.startswith(prefix):
                key = k[len(prefix):]
                opt.state[p][key] = v if key == "step" and isinstance(opt, torch.optim.Adam) else v.to(device)


# ---------------------------------------------------------------- the training loop
# train() reads top to bottom: `_setup` (device, data, resume point, PEDCC, model), then per epoch
# `run_epoch` (the optimizer steps), `evaluate_epoch` (metrics, latent statistics) and `save_epoch`.

@dataclass
class Run:
    """One training run's state between epochs (built by `_setup`)."""

    cfg: TrainConfig
    mcfg: ModelConfig  # in_channels, image_size and num_classes taken from the data
    out: Path
    device: torch.device
    rank: int
    world: int
    data: tuple  # ((train uint8 images, labels) on the device, (eval images, labels), class names)
    eval_split: str  # "test", or "validation" with --val-images
    model: torch.nn.Module
    net: torch.nn.Module  # the model, or its DistributedDataParallel wrapper
    opt: torch.optim.Optimizer
    start_epoch: int = 1
    pedcc_info: dict | None = None
    history: list = field(default_factory=list)
    stats: dict | None = None  # class latent statistics for sampling

    @property
    def distributed(self) -> bool:
        return self.world > 1

    @property
    def per_rank(self) -> int:
        return max(1, self.cfg.batch_size // self.world)


def train(cfg: TrainConfig, mcfg: ModelConfig, resume: bool = False,
          log: Callable[[dict], None] = lambda rec: print(json.dumps(rec), flush=True),
          progress: bool = True) -> Path:
    """Train `mcfg` on `cfg.dataset`; returns the stem of the final checkpoint (`out/last`)."""
    run = _setup(cfg, mcfg, resume)
    if run.start_epoch > cfg.epochs and run.rank == 0:
        log({"event": "already-done", "epoch": run.start_epoch - 1, "epochs": cfg.epochs})
    for epoch in range(run.start_epoch, cfg.epochs + 1):
        rec = run_epoch(run, epoch, progress)
        if run.rank == 0:
            metrics = evaluate_epoch(run, epoch, rec)
            save_epoch(run, epoch, metrics)
            log(rec)
        if run.distributed:
            dist.barrier()
    if run.distributed:
        dist.destroy_process_group()
    return run.out / "last"


# ---------------------------------------------------------------- setup and resume

def _setup(cfg: TrainConfig, mcfg: ModelConfig, resume: bool) -> Run:
    device, rank, world = _init_device(cfg.device)
    out = Path(cfg.out)
    _check_model_size(mcfg)
    if rank == 0:
        clean_stale_tmp(writable_dir(out))  # temp files of a save that was killed mid-write
        if not resume:
            (out / PROGRESS_FILE).unlink(missing_ok=True)  # an earlier run's lines in this folder
    (train_x, train_y), (eval_x, eval_y), class_names, eval_split = _load_data(cfg)
    n_classes = int(max(train_y.max(), eval_y.max())) + 1
    if mcfg.num_classes != n_classes or mcfg.in_channels != train_x.shape[1] or mcfg.image_size != train_x.shape[-1]:
        mcfg = ModelConfig(**{**mcfg.to_dict(), "num_classes": n_classes, "in_channels": train_x.shape[1],
                              "image_size": train_x.shape[-1]})
    # The whole dataset lives on the device as uint8: 60k MNIST images are 61 MB.
    data = ((train_x.to(device), train_y.to(device)), (eval_x, eval_y), class_names)
    meta_prev, state = _resume_point(cfg, mcfg, out) if resume else (None, None)
    centroids, pedcc_info = _centroids(cfg, mcfg, state)
    model, net, opt = _build(cfg, mcfg, centroids, state, device, world)
    return Run(cfg, mcfg, out, device, rank, world, data, eval_split, model, net, opt,
               start_epoch=int(meta_prev["epoch"]) + 1 if meta_prev else 1, pedcc_info=pedcc_info,
               history=list(meta_prev.get("history", [])) if meta_prev else [],
               stats=meta_prev.get("latent_stats") if meta_prev else None)


def _init_device(name: str) -> tuple[torch.device, int, int]:
    """(device, rank, world size); joins the process group under torchrun."""
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    device = _pick_device(name)
    if distributed and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = True
    return (device, dist.get_rank(), dist.get_world_size()) if distributed else (device, 0, 1)


def _load_data(cfg: TrainConfig):
    """(train, eval, class names, eval split name). With --val-images the eval images are the training tail
    and the test split is not even read (recipe search must never see it)."""
    if cfg.val_images:
        train_xy, _, class_names = load_dataset_tensors(cfg.dataset, cfg.data_dir, cfg.image_size, cfg.seed,
                                                        test=False)
        train_xy, val_xy = validation_split(train_xy, cfg.val_images)
        return train_xy, val_xy, class_names, "validation"
    train_xy, (test_x, test_y), class_names = load_dataset_tensors(cfg.dataset, cfg.data_dir, cfg.image_size,
                                                                   cfg.seed)
    if cfg.test_images:
        test_x, test_y = test_x[:cfg.test_images], test_y[:cfg.test_images]
    return train_xy, (test_x, test_y), class_names, "test"


def _resume_point(cfg: TrainConfig, mcfg: ModelConfig, out: Path) -> tuple[dict, dict]:
    """(metadata, tensors) of the run's resume state, refusing one of another model, dataset or trajectory.
    One file holds the resume point (weights, optimizer state, and the JSON record as metadata), so it is
    consistent even if the run died between writing it and the user-facing last.* pair."""
    state_path = out / "train_state.safetensors"
    if not state_path.is_file():
        raise CSAEError(f"--resume: no {state_path}. Fix: pass the --out folder of an earlier run, "
                        f"or drop --resume to start afresh.")
    state, meta_prev = load_tensors(state_path, with_metadata=True)
    if not meta_prev or meta_prev.get("model") != mcfg.to_dict() or meta_prev.get("dataset") != cfg.dataset:
        raise CSAEError(f"--resume: {state_path} was trained with another model or dataset "
                        f"({(meta_prev or {}).get('model', {}).get('kind')}, {(meta_prev or {}).get('dataset')}). "
                        f"Fix: use the same --model/--beta/--dataset, or another --out.")
    _check_same_trajectory(meta_prev.get("train") or {}, cfg, state_path)
    return meta_prev, state


def _centroids(cfg: TrainConfig, mcfg: ModelConfig, state: dict | None) -> tuple[torch.Tensor, dict]:
    """The PEDCC centroids (the resumed run's, else generated) and how they were made."""
    centroids = state.get("model.centroids") if state is not None else None
    if centroids is None:
        pedcc = generate_pedcc(mcfg.num_classes, mcfg.latent_dim, seed=cfg.pedcc_seed,
                               iters=cfg.pedcc_iters or None, converge=not cfg.pedcc_iters)
        centroids = pedcc.scaled()
    # The paper's fixed count q (Algorithm 1) or the convergence mode.
    mode = {"mode": "fixed", "iterations": cfg.pedcc_iters} if cfg.pedcc_iters else {"mode": "converge"}
    return centroids, {"seed": cfg.pedcc_seed, **mode, **{k: v for k, v in pedcc_metrics(centroids).items()
                                                        if k in ("max_cosine", "min_distance", "simplex_gap")}}


def _build(cfg: TrainConfig, mcfg: ModelConfig, centroids, state: dict | None, device, world: int):
    """(model, the model or its DDP wrapper, optimizer), with the resumed weights and optimizer state."""
    torch.manual_seed(cfg.seed)  # the initial weights
    # Channels-last on every device: cuDNN's and oneDNN's fastest conv layout (measured 1.5x on 2 CPU
    # cores, benchmarks/bench_train.py).
    model = build_model(mcfg, centroids).to(device).to(memory_format=torch.channels_last)
    opt = _make_optimizer(cfg, model.parameters())
    if state is not None:
        model.load_state_dict({k[len("model."):]: v for k, v in state.items() if k.startswith("model.")})
        _load_optimizer_state(opt, model.named_parameters(), state, device)
    net = model
    if world > 1:
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
    net = fast_net(net, cfg.compile, device)  # opt-in: torch.compile / CUDA graphs of the forward and backward
    return model, net, opt


# ---------------------------------------------------------------- one epoch

def _epoch_order(run: Run, epoch: int) -> torch.Tensor:
    """This rank's training-image indices for `epoch`. Everything random in an epoch derives from
    (seed, epoch), so a resumed run repeats it exactly."""
    seed = run.cfg.seed * 1_000_003 + epoch
    torch.manual_seed(seed)  # the β noise and the CVAE's sampling
    order = torch.randperm(len(run.data[0][1]), generator=torch.Generator().manual_seed(seed))
    if run.cfg.epoch_images:
        order = order[:run.cfg.epoch_images]
    return order[: len(order) // run.world * run.world][run.rank::run.world].to(run.device)


def _progress(steps, run: Run, epoch: int, progress: bool):
    if not (progress and run.rank == 0):
        return steps
    from tqdm.auto import tqdm

    return tqdm(steps, desc=f"epoch {epoch}/{run.cfg.epochs}", leave=False, unit="batch")


def train_step(run: Run, idx: torch.Tensor, lr: float):
    """One optimizer step on training images `idx`: (losses, the forward output, labels)."""
    for group in run.opt.param_groups:
        group["lr"] = lr
    train_x, train_y = run.data[0]
    x = to_float(train_x[idx]).contiguous(memory_format=torch.channels_last)
    y = train_y[idx]
    with torch.autocast(run.device.type, dtype=torch.bfloat16, enabled=run.device.type == "cuda"):
        out = run.net(x, y)
        losses = run.model.loss(out, x, y)
    run.opt.zero_grad(set_to_none=True)
    losses["loss"].backward()
    if run.cfg.grad_clip:
        torch.nn.utils.clip_grad_norm_(run.model.parameters(), run.cfg.grad_clip)
    run.opt.step()
    return losses, out, y


def run_epoch(run: Run, epoch: int, progress: bool = False) -> dict:
    """The epoch's optimizer steps; returns its record (mean losses, training accuracy, speed), summed over
    the DDP processes. Raises CSAEError, before anything is saved, if the loss diverged."""
    cfg, order = run.cfg, _epoch_order(run, epoch)
    steps_per_epoch = -(-len(order) // run.per_rank)
    run.model.train()
    sums: dict[str, torch.Tensor] = {}
    correct = torch.zeros((), device=run.device)
    t0 = time.perf_counter()
    bar = _progress(range(0, len(order), run.per_rank), run, epoch, progress)
    note = ProgressNote(run, epoch, steps_per_epoch, len(order), t0) if cfg.progress_every and run.rank == 0 else None
    try:
        for step, i in enumerate(bar):
            idx = order[i:i + run.per_rank]
            losses, out, y = train_step(run, idx, lr_at(cfg, epoch, step, steps_per_epoch))
            for k, v in losses.items():
                sums[k] = sums.get(k, 0) + v.detach().float() * len(idx)
            if step % 50 == 0 and not torch.isfinite(losses["loss"]):
                break  # checked below, before anything is saved
            with torch.no_grad():
                pred = run.model.predictions_from_output(out)
                if pred is not None:
                    correct += (pred == y).sum()
            if note is not None and time.perf_counter() >= note.due:
                note.write(step + 1, i + len(idx), sums, correct)
    finally:
        getattr(bar, "close", lambda: None)()
    seen = torch.tensor(float(len(order)), device=run.device)
    if run.distributed:
        for v in [*sums.values(), correct, seen]:
            dist.all_reduce(v)
    totals = {k: float(v / seen) for k, v in sums.items()}
    _check_finite(run, epoch, totals)
    seconds = time.perf_counter() - t0
    # The epoch's lr is the one at its last step (a warm-up would make epoch 1 read as tiny).
    return {"epoch": epoch, "lr": lr_at(cfg, epoch, steps_per_epoch - 1, steps_per_epoch), **totals,
            "images": int(seen), "train_accuracy": float(correct / seen), "seconds": round(seconds, 2),
            "images_per_s": round(float(seen) / seconds, 1)}


PROGRESS_FILE = "progress.jsonl"


class ProgressNote:
    """Appends a line to `out/progress.jsonl` every `progress_every` seconds within an epoch: the mean losses
    and training accuracy of the images since the previous line, from sums the loop keeps anyway (no extra
    forward pass; one device sync per line). Append-only, one write per line: a reader skips a torn last
    line. Rank 0's share of the images only, under DDP. log.jsonl stays one record per finished epoch."""

    def __init__(self, run: Run, epoch: int, steps: int, images: int, t0: float):
        self.path, self.epoch, self.steps, self.world = run.out / PROGRESS_FILE, epoch, steps, run.world
        self.every, self.images, self.t0 = run.cfg.progress_every, images, t0
        self.due, self.prev = t0 + self.every, {"images": 0, "correct": 0.0}

    def write(self, step: int, seen: int, sums: dict, correct: torch.Tensor) -> None:
        now = {"images": seen, "correct": float(correct), **{k: float(v) for k, v in sums.items()}}
        n = max(1, now["images"] - self.prev["images"])
        seconds = time.perf_counter() - self.t0
        rec = {"time": round(time.time(), 1), "epoch": self.epoch, "step": step, "steps": self.steps,
               "images": seen * self.world, "epoch_images": self.images * self.world, "seconds": round(seconds, 2),
               "images_per_s": round(seen * self.world / seconds, 1),
               **{k: (v - self.prev.get(k, 0.0)) / n for k, v in now.items() if k not in ("images", "correct")},
               "train_accuracy": (now["correct"] - self.prev["correct"]) / n}
        with contextlib.suppress(OSError), open(self.path, "a") as f:  # a lost line never stops the training
            f.write(json.dumps(rec) + "\n")
        self.prev, self.due = now, time.perf_counter() + self.every


def _check_finite(run: Run, epoch: int, totals: dict) -> None:
    if all(math.isfinite(v) for v in totals.values()):
        return
    raise CSAEError(f"training diverged: the loss became NaN/inf in epoch {epoch} (lr {lr_at(run.cfg, epoch):g}). "
                    + (f"The last good checkpoint ({run.out / 'last'}) is intact. Fix: lower --lr or check the "
                       f"data, then --resume." if (run.out / "train_state.safetensors").is_file() else
                       "No checkpoint was written. Fix: lower --lr or check the data, then start again."))


def evaluate_epoch(run: Run, epoch: int, rec: dict) -> dict:
    """Metrics on the eval split (added to `rec`, which joins the history); refreshes the class latent
    statistics on the final and snapshot epochs (and at the first save). Returns the metrics."""
    (train_x, train_y), (eval_x, eval_y), class_names = run.data
    metrics = evaluate_model(run.model, eval_x, eval_y, device=run.device, class_names=class_names)
    prefix = "val" if run.eval_split == "validation" else "test"
    rec.update({f"{prefix}_accuracy": metrics["accuracy"], f"{prefix}_recon_mse": metrics["recon_mse"],
                f"{prefix}_psnr": metrics["psnr"], "image_steps": epoch * rec["images"]})
    if metrics.get("flat_mse") is not None:
        rec["flat_mse"] = metrics["flat_mse"]
    if decoder_collapsed(metrics):
        print(f"warning: epoch {epoch}: test reconstructions (MSE {metrics['recon_mse']:.4f}) are no better "
              f"than a flat grey image ({metrics['flat_mse']:.4f}): the decoder has collapsed or not started "
              f"learning. If it stays so for a few epochs, retrain with a smaller --lr (at batch 64, lr 0.1 "
              f"collapsed and 0.03 did not; benchmarks/bench_decoder_lr.py) or a larger --batch-size.",
              file=sys.stderr)
    run.history.append(rec)
    if run.model.has_decoder and (epoch == run.cfg.epochs or epoch in run.cfg.snapshots or run.stats is None):
        n = min(len(train_y), run.cfg.stats_images or len(train_y))
        means, covs = latent_stats(encode(run.model, train_x[:n], device=run.device), train_y[:n].cpu(),
                                   run.mcfg.num_classes)
        run.stats = {"images": n, "epoch": epoch, "mean": means.tolist(), "cov": covs.tolist()}
    return metrics


def save_epoch(run: Run, epoch: int, metrics: dict) -> None:
    """The save sequence: every step is one atomic rename, and a kill between any two leaves a resumable run
    (tests/test_crash_consistency.py kills it at each). 1. log.jsonl, rewritten whole from the history, so a
    redone epoch never doubles a line; 2. the last.* pair (and snapshot), whose JSON names new versioned
    weights, so the old pair stays whole until the JSON's rename; 3. the resume point, last: until it is
    written a resume redoes this epoch, identically."""
    cfg, model = run.cfg, run.model
    meta = {"dataset": cfg.dataset, "class_names": run.data[2], "epoch": epoch, "recipe": cfg.recipe,
            "hardware": _hardware(run), "train": {**asdict(cfg), "snapshots": list(cfg.snapshots)},
            "pedcc": run.pedcc_info,
            "metrics": {"split": run.eval_split, **{k: metrics[k] for k in (
                "accuracy", "recon_mse", "psnr", "test_images", "per_class_accuracy")}},
            "history": run.history, "latent_stats": run.stats}
    atomic_write_bytes(run.out / "log.jsonl", "".join(json.dumps(r) + "\n" for r in run.history).encode())
    save_checkpoint(run.out / "last", model, meta, versioned=True)
    if epoch in cfg.snapshots:
        save_checkpoint(run.out / f"epoch{epoch:03d}", model, meta, versioned=True)
    names = {p: n for n, p in model.named_parameters()}
    save_tensors(run.out / "train_state.safetensors",
                 {**{f"model.{k}": v for k, v in model.state_dict().items()}, **_optimizer_state(run.opt, names)},
                 metadata={**meta, "model": run.mcfg.to_dict()})


def _hardware(run: Run) -> dict:
    """Where the run's images/s were measured, for the manifest and anyone comparing speeds."""
    device = run.device
    return {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "processes": run.world, "threads": torch.get_num_threads(), "torch": torch.__version__}
