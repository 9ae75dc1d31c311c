"""Training with the paper's recipe (section 4): SGD momentum 0.9, weight decay 5e-4, lr 0.1
divided by 10 every 30 epochs, 120 epochs. One JSON line per epoch; a checkpoint after every
epoch (atomic), so an interrupted run loses at most the current epoch and `resume` continues
exactly: the data order and the noise of epoch e derive from (seed, e), the optimizer's momentum
is saved, the schedule is a function of the epoch.

Runs on the GPU when present (whole dataset on the device, bf16 autocast), on the CPU
unchanged (both channels-last), and under `torchrun --nproc_per_node N` (DDP; gloo on CPU, nccl on GPU).
"""
from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.distributed as dist

from .checkpoint import (atomic_write_bytes, clean_stale_tmp, load_tensors, save_checkpoint, save_tensors,
                         writable_dir)
from .errors import CSAEError
from .evaluate import decoder_collapsed, encode, evaluate_model, latent_stats
from .model import ModelConfig, build_model
from .pedcc import generate_pedcc, pedcc_metrics
from .preprocess import load_dataset_tensors  # re-exported: scripts import it from here

__all__ = ["TrainConfig", "train", "load_dataset_tensors", "lr_at", "validation_split", "SCHEDULES"]

SCHEDULES = ("step", "cosine", "linear")


@dataclass
class TrainConfig:
    dataset: str = "mnist"  # mnist | fashion-mnist | a folder of class sub-folders (train/ and test/ inside, or split 9:1)
    data_dir: str | None = None
    out: str = "runs/mnist-csae"
    epochs: int = 120
    batch_size: int = 128  # global batch; split over DDP processes
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    lr_step: float = 30  # schedule "step": divide lr by 10 every lr_step epochs
    schedule: str = "step"  # step (the paper) | cosine | linear (to 0 over the run; few-step recipes)
    nesterov: bool = False
    optimizer: str = "sgd"  # sgd (the paper's CSAE recipe) | adam (the authors' CVAE: Adam 1e-3, batch 512)
    warmup_steps: int = 0  # linear lr warm-up over this many optimizer steps (0: none)
    grad_clip: float = 5.0  # global grad-norm clip (0: off); only bites in the first steps, where lr 0.1 diverged
    epoch_images: int = 0  # 0: the whole training set each epoch; N: a fresh random N-image subset (short recipes)
    test_images: int = 0  # 0: the whole test set after each epoch; N: its first N images (faster epochs)
    val_images: int = 0  # N > 0: hold out the LAST N training images; per-epoch metrics on them, test set untouched
    snapshots: tuple = ()  # epochs kept as their own checkpoints (e.g. 40, 80 for Fig. 4)
    seed: int = 0
    pedcc_seed: int = 0
    pedcc_iters: int = 0  # 0: PEDCC in convergence mode (optimal centroids); N: the paper's fixed count
    stats_images: int = 0  # training images for the class latent statistics saved each epoch (0: all)
    device: str = "auto"  # auto | cpu | cuda
    recipe: str = "custom"  # label stored in the checkpoint: "custom", or a zoo recipe ("paper", "cpu-short", ...)
    image_size: int = 0  # 0: 32 for the IDX datasets, 128 for image folders

    def __post_init__(self):
        self.snapshots = tuple(int(s) for s in self.snapshots)
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise CSAEError(f"{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if not (self.lr > 0 and self.lr_step > 0):
            raise CSAEError(f"lr and lr-step must be > 0, got {self.lr}, {self.lr_step}")
        if self.schedule not in SCHEDULES:
            raise CSAEError(f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        if self.optimizer not in ("sgd", "adam"):
            raise CSAEError(f"optimizer must be sgd or adam, got {self.optimizer!r}")
        if self.val_images < 0:
            raise CSAEError(f"val-images must be >= 0, got {self.val_images}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise CSAEError(f"device must be auto, cpu or cuda, got {self.device!r}")
        _check_settings(self)


# (field, lowest, highest) of the numeric settings; NaN fails every range. A negative grad clip or
# warm-up would train backwards, a negative image count would slice from the end; lr_step counts epochs
# (the step schedule changes the lr once per epoch), so under 1 it means nothing.
_RANGES = (("lr", 0, 100), ("lr_step", 1, 1e9), ("momentum", 0, 1), ("weight_decay", 0, 1),
           ("grad_clip", 0, 1e9), ("warmup_steps", 0, 10**9), ("epoch_images", 0, 10**9),
           ("test_images", 0, 10**9), ("stats_images", 0, 10**9), ("val_images", 0, 10**9), ("epochs", 1, 100_000),
           ("batch_size", 1, 1_000_000), ("seed", 0, 2**31 - 1), ("pedcc_seed", 0, 2**31 - 1),
           ("pedcc_iters", 0, 10**7), ("image_size", 0, 256))


def _check_settings(cfg: TrainConfig) -> None:
    for name, lo, hi in _RANGES:
        v = getattr(cfg, name, None)
        if v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not (lo <= v <= hi):
            raise CSAEError(f"{name.replace('_', '-')} must be a number in [{lo:g}, {hi:g}], got {v!r}")
    if not isinstance(cfg.dataset, str) or not cfg.dataset.strip():
        raise CSAEError("dataset must be mnist, fashion-mnist or a folder of class sub-folders, got an empty name")
    if any(s < 1 for s in cfg.snapshots):
        raise CSAEError(f"snapshot epochs must be >= 1, got {list(cfg.snapshots)}")


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
    diff = [f"{k} {recorded[k]!r} -> {now[k]!r}" for k in TRAJECTORY
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
    if name == "cuda" and "LOCAL_RANK" in os.environ:
        return torch.device("cuda", int(os.environ["LOCAL_RANK"]))
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


def train(cfg: TrainConfig, mcfg: ModelConfig, resume: bool = False,
          log: Callable[[dict], None] = lambda rec: print(json.dumps(rec), flush=True),
          progress: bool = True) -> Path:
    """Train `mcfg` on `cfg.dataset`; returns the stem of the final checkpoint (`out/last`)."""
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    device = _pick_device(cfg.device)
    if distributed and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = True
    out = Path(cfg.out)
    _check_model_size(mcfg)
    if rank == 0:
        clean_stale_tmp(writable_dir(out))  # temp files of a save that was killed mid-write

    (train_x, train_y), (test_x, test_y), class_names = load_dataset_tensors(
        cfg.dataset, cfg.data_dir, cfg.image_size, cfg.seed)
    eval_split = "test"
    if cfg.val_images:  # recipe search: train on the rest, measure on the held-out tail, never on the test set
        (train_x, train_y), (test_x, test_y) = validation_split((train_x, train_y), cfg.val_images)
        eval_split = "validation"
    elif cfg.test_images:
        test_x, test_y = test_x[:cfg.test_images], test_y[:cfg.test_images]
    n_classes = int(max(train_y.max(), test_y.max())) + 1
    if mcfg.num_classes != n_classes or mcfg.in_channels != train_x.shape[1] or mcfg.image_size != train_x.shape[-1]:
        mcfg = ModelConfig(**{**mcfg.to_dict(), "num_classes": n_classes, "in_channels": train_x.shape[1],
                              "image_size": train_x.shape[-1]})
    # The whole dataset lives on the device as uint8: 60k MNIST images are 61 MB.
    train_x, train_y = train_x.to(device), train_y.to(device)

    start_epoch, meta_prev, state = 1, None, None
    if resume:
        # One file holds the resume point (weights, momentum, and the JSON record as metadata), so it
        # is consistent even if the run died between writing it and the user-facing last.* pair.
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
        start_epoch = int(meta_prev["epoch"]) + 1
        centroids = state["model.centroids"] if "model.centroids" in state else None
    else:
        centroids, pedcc_info = None, None
    if centroids is None:
        pedcc = generate_pedcc(mcfg.num_classes, mcfg.latent_dim, seed=cfg.pedcc_seed,
                               iters=cfg.pedcc_iters or None, converge=not cfg.pedcc_iters)
        centroids = pedcc.scaled()
    # How the centroids were made: the paper's fixed count q (Algorithm 1) or the convergence mode.
    mode = {"mode": "fixed", "iterations": cfg.pedcc_iters} if cfg.pedcc_iters else {"mode": "converge"}
    pedcc_info = {"seed": cfg.pedcc_seed, **mode, **{k: v for k, v in pedcc_metrics(centroids).items()
                                             if k in ("max_cosine", "min_distance", "simplex_gap")}}

    torch.manual_seed(cfg.seed)  # the initial weights
    # Channels-last on every device: cuDNN's and oneDNN's fastest conv layout (measured 1.5x on 2 CPU
    # cores, benchmarks/bench_train.py).
    model = build_model(mcfg, centroids).to(device).to(memory_format=torch.channels_last)
    opt = _make_optimizer(cfg, model.parameters())
    if state is not None:
        model.load_state_dict({k[len("model."):]: v for k, v in state.items() if k.startswith("model.")})
        _load_optimizer_state(opt, model.named_parameters(), state, device)
    names = {p: n for n, p in model.named_parameters()}
    net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None) \
        if distributed else model
    amp = device.type == "cuda"
    # Where the run's images/s were measured, for the manifest and anyone comparing speeds.
    hardware = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                "processes": world, "threads": torch.get_num_threads(), "torch": torch.__version__}
    per_rank = max(1, cfg.batch_size // world)
    history = list(meta_prev.get("history", [])) if meta_prev else []
    stats = meta_prev.get("latent_stats") if meta_prev else None

    if start_epoch > cfg.epochs and rank == 0:
        log({"event": "already-done", "epoch": start_epoch - 1, "epochs": cfg.epochs})
    for epoch in range(start_epoch, cfg.epochs + 1):
        # Everything random in an epoch derives from (seed, epoch): a resumed run repeats it exactly.
        torch.manual_seed(cfg.seed * 1_000_003 + epoch)
        g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch)
        order = torch.randperm(len(train_y), generator=g)
        if cfg.epoch_images:
            order = order[:cfg.epoch_images]
        order = order[: len(order) // world * world][rank::world].to(device)
        steps_per_epoch = -(-len(order) // per_rank)
        model.train()
        sums: dict[str, torch.Tensor] = {}
        correct = torch.zeros((), device=device)
        t0 = time.perf_counter()
        steps = range(0, len(order), per_rank)
        bar = None
        if progress and rank == 0:
            from tqdm.auto import tqdm
            bar = tqdm(steps, desc=f"epoch {epoch}/{cfg.epochs}", leave=False, unit="batch")
        for step, i in enumerate(bar if bar is not None else steps):
            idx = order[i:i + per_rank]
            lr_now = lr_at(cfg, epoch, step, steps_per_epoch)
            for group in opt.param_groups:
                group["lr"] = lr_now
            x = train_x[idx].float().div_(255).contiguous(memory_format=torch.channels_last)
            y = train_y[idx]
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                out_ = net(x, y)
                losses = model.loss(out_, x, y)
            opt.zero_grad(set_to_none=True)
            losses["loss"].backward()
            if cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            for k, v in losses.items():
                sums[k] = sums.get(k, 0) + v.detach().float() * len(idx)
            if step % 50 == 0 and not torch.isfinite(losses["loss"]):
                break  # checked below, before anything is saved
            with torch.no_grad():
                pred = model.predictions_from_output(out_)
                if pred is not None:
                    correct += (pred == y).sum()
        if bar is not None:
            bar.close()
        seen = torch.tensor(float(len(order)), device=device)
        if distributed:
            for v in [*sums.values(), correct, seen]:
                dist.all_reduce(v)
        totals = {k: float(v / seen) for k, v in sums.items()}
        if not all(math.isfinite(v) for v in totals.values()):
            raise CSAEError(f"training diverged: the loss became NaN/inf in epoch {epoch} "
                            f"(lr {lr_at(cfg, epoch):g}). "
                            + (f"The last good checkpoint ({out / 'last'}) is intact. Fix: lower --lr or check the "
                               f"data, then --resume." if (out / "train_state.safetensors").is_file() else
                               "No checkpoint was written. Fix: lower --lr or check the data, then start again."))
        train_seconds = time.perf_counter() - t0
        # The epoch's lr is the one at its last step (a warm-up would make epoch 1 read as tiny).
        rec = {"epoch": epoch, "lr": lr_at(cfg, epoch, steps_per_epoch - 1, steps_per_epoch), **totals,
               "images": int(seen),
               "train_accuracy": float(correct / seen), "seconds": round(train_seconds, 2),
               "images_per_s": round(float(seen) / train_seconds, 1)}
        if rank == 0:
            metrics = evaluate_model(model, test_x, test_y, device=device, class_names=class_names)
            prefix = "val" if eval_split == "validation" else "test"
            rec.update({f"{prefix}_accuracy": metrics["accuracy"], f"{prefix}_recon_mse": metrics["recon_mse"],
                        f"{prefix}_psnr": metrics["psnr"], "image_steps": epoch * int(seen)})
            if metrics.get("flat_mse") is not None:
                rec["flat_mse"] = metrics["flat_mse"]
            if decoder_collapsed(metrics):
                print(f"warning: epoch {epoch}: test reconstructions (MSE {metrics['recon_mse']:.4f}) are no better "
                      f"than a flat grey image ({metrics['flat_mse']:.4f}): the decoder has collapsed or not started "
                      f"learning. If it stays so for a few epochs, retrain with a smaller --lr (at batch 64, lr 0.1 "
                      f"collapsed and 0.03 did not; benchmarks/bench_decoder_lr.py) or a larger --batch-size.",
                      file=sys.stderr)
            history.append(rec)
            if model.has_decoder and (epoch == cfg.epochs or epoch in cfg.snapshots or stats is None):
                # Class latent statistics for sampling: on the final/snapshot epochs (and the first save).
                stats_n = min(len(train_y), cfg.stats_images or len(train_y))
                means, covs = latent_stats(encode(model, train_x[:stats_n], device=device),
                                           train_y[:stats_n].cpu(), mcfg.num_classes)
                stats = {"images": stats_n, "epoch": epoch, "mean": means.tolist(), "cov": covs.tolist()}
            meta = {"dataset": cfg.dataset, "class_names": class_names, "epoch": epoch, "recipe": cfg.recipe,
                    "hardware": hardware,
                    "train": {**asdict(cfg), "snapshots": list(cfg.snapshots)}, "pedcc": pedcc_info,
                    "metrics": {"split": eval_split, **{k: metrics[k] for k in (
                        "accuracy", "recon_mse", "psnr", "test_images", "per_class_accuracy")}},
                    "history": history,
                    "latent_stats": stats}
            # The save sequence: every step is one atomic rename, and a kill between any two leaves a
            # resumable run (tests/test_crash_consistency.py kills it at each). 1. log.jsonl, rewritten whole
            # from the history, so a redone epoch never doubles a line; 2. the last.* pair (and snapshot),
            # whose JSON names new versioned weights, so the old pair stays whole until the JSON's rename;
            # 3. the resume point, last: until it is written a resume redoes this epoch, identically.
            atomic_write_bytes(out / "log.jsonl", "".join(json.dumps(r) + "\n" for r in history).encode())
            save_checkpoint(out / "last", model, meta, versioned=True)
            if epoch in cfg.snapshots:
                save_checkpoint(out / f"epoch{epoch:03d}", model, meta, versioned=True)
            save_tensors(out / "train_state.safetensors",
                         {**{f"model.{k}": v for k, v in model.state_dict().items()},
                          **_optimizer_state(opt, names)}, metadata={**meta, "model": mcfg.to_dict()})
            log(rec)
        if distributed:
            dist.barrier()
    if distributed:
        dist.destroy_process_group()
    return out / "last"

