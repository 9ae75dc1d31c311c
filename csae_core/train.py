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
import torch.nn.functional as F

from .checkpoint import load_tensors, save_checkpoint, save_tensors
from .errors import CSAEError
from .evaluate import decoder_collapsed, encode, evaluate_model, latent_stats
from .model import ModelConfig, build_model
from .pedcc import generate_pedcc, pedcc_metrics

__all__ = ["TrainConfig", "train", "load_dataset_tensors"]


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
    lr_step: float = 30  # divide lr by 10 every lr_step epochs
    warmup_steps: int = 0  # linear lr warm-up over this many optimizer steps (0: none)
    grad_clip: float = 5.0  # global grad-norm clip (0: off); only bites in the first steps, where lr 0.1 diverged
    epoch_images: int = 0  # 0: the whole training set each epoch; N: a fresh random N-image subset (short recipes)
    test_images: int = 0  # 0: the whole test set after each epoch; N: its first N images (faster epochs)
    snapshots: tuple = ()  # epochs kept as their own checkpoints (e.g. 40, 80 for Fig. 4)
    seed: int = 0
    pedcc_seed: int = 0
    pedcc_iters: int = 0  # 0: PEDCC in convergence mode (optimal centroids); N: the paper's fixed count
    stats_images: int = 0  # training images for the class latent statistics saved each epoch (0: all)
    device: str = "auto"  # auto | cpu | cuda
    recipe: str = "paper"  # label stored in the checkpoint: "paper" or e.g. "cpu-short"
    image_size: int = 0  # 0: 32 for the IDX datasets, 128 for image folders

    def __post_init__(self):
        self.snapshots = tuple(int(s) for s in self.snapshots)
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise CSAEError(f"{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if not (self.lr > 0 and self.lr_step > 0):
            raise CSAEError(f"lr and lr-step must be > 0, got {self.lr}, {self.lr_step}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise CSAEError(f"device must be auto, cpu or cuda, got {self.device!r}")


def lr_at(cfg: TrainConfig, epoch: int) -> float:
    """Step schedule: lr / 10 ** floor((epoch - 1) / lr_step) for 1-based epochs (0.01, not 0.010000000000000002)."""
    return cfg.lr / 10 ** math.floor((epoch - 1) / cfg.lr_step)


def load_dataset_tensors(name: str, data_dir=None, image_size: int = 0, seed: int = 0):
    """uint8 (N, C, S, S) train/test images with labels and class names, padded like the paper."""
    from . import data

    if name in data.DATASETS:
        xs = {}
        for split in ("train", "test"):
            images, labels = data.load_split(name, split, data_dir)
            size = image_size or 32
            pad = (size - images.shape[-1]) // 2
            if pad < 0:
                raise CSAEError(f"image size {size} is smaller than the {images.shape[-1]}px {name} images")
            xs[split] = (F.pad(images[:, None], (pad, size - images.shape[-1] - pad) * 2), labels)
        return xs["train"], xs["test"], list(data.DATASETS[name].class_names)
    root = Path(name)
    if not root.is_dir():
        raise CSAEError(f"unknown dataset {name!r}: use mnist, fashion-mnist or a folder of class sub-folders")
    size = image_size or 128
    if (root / "train").is_dir() and (root / "test").is_dir():
        tr = data.ImageFolderDataset(root / "train", size=size, channels=3)
        te = data.ImageFolderDataset(root / "test", size=size, channels=3)
        return tr.load_all(), te.load_all(), list(tr.class_names)
    ds = data.ImageFolderDataset(root, size=size, channels=3)
    images, labels = ds.load_all()
    perm = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    cut = max(1, len(perm) // 10)  # hold out 10% for testing, deterministically
    return (images[perm[cut:]], labels[perm[cut:]]), (images[perm[:cut]], labels[perm[:cut]]), list(ds.class_names)


def _pick_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise CSAEError("--device cuda asked for, but no CUDA GPU is visible. Fix: use --device auto or cpu.")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and "LOCAL_RANK" in os.environ:
        return torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    return torch.device(name)


def _optimizer_state(opt: torch.optim.SGD, names: dict) -> dict[str, torch.Tensor]:
    return {f"momentum.{names[p]}": s["momentum_buffer"] for p, s in opt.state.items()
            if s.get("momentum_buffer") is not None}


def _load_optimizer_state(opt: torch.optim.SGD, named_params, tensors: dict, device) -> None:
    for name, p in named_params:
        buf = tensors.get(f"momentum.{name}")
        if buf is not None:
            opt.state[p]["momentum_buffer"] = buf.to(device)


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

    (train_x, train_y), (test_x, test_y), class_names = load_dataset_tensors(
        cfg.dataset, cfg.data_dir, cfg.image_size, cfg.seed)
    if cfg.test_images:
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
        start_epoch = int(meta_prev["epoch"]) + 1
        centroids = state["model.centroids"] if "model.centroids" in state else None
    else:
        centroids, pedcc_info = None, None
    if centroids is None:
        pedcc = generate_pedcc(mcfg.num_classes, mcfg.latent_dim, seed=cfg.pedcc_seed,
                               iters=cfg.pedcc_iters or None, converge=not cfg.pedcc_iters)
        centroids = pedcc.scaled()
    pedcc_info = {"seed": cfg.pedcc_seed, **{k: v for k, v in pedcc_metrics(centroids).items()
                                             if k in ("max_cosine", "min_distance", "simplex_gap")}}

    torch.manual_seed(cfg.seed)  # the initial weights
    # Channels-last on every device: cuDNN's and oneDNN's fastest conv layout (measured 1.5x on 2 CPU
    # cores, benchmarks/bench_train.py).
    model = build_model(mcfg, centroids).to(device).to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
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
        base_lr = lr_at(cfg, epoch)
        steps_before = (epoch - 1) * -(-len(order) // per_rank)  # optimizer steps of earlier epochs
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
            warm = min(1.0, (steps_before + step + 1) / cfg.warmup_steps) if cfg.warmup_steps else 1.0
            for group in opt.param_groups:
                group["lr"] = base_lr * warm
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
                correct += (_train_predictions(model, out_) == y).sum()
        if bar is not None:
            bar.close()
        seen = torch.tensor(float(len(order)), device=device)
        if distributed:
            for v in [*sums.values(), correct, seen]:
                dist.all_reduce(v)
        totals = {k: float(v / seen) for k, v in sums.items()}
        if not all(math.isfinite(v) for v in totals.values()):
            raise CSAEError(f"training diverged: the loss became NaN/inf in epoch {epoch} "
                            f"(lr {lr_at(cfg, epoch):g}). The last good checkpoint ({out / 'last'}) is intact. "
                            f"Fix: lower --lr or check the data, then --resume.")
        train_seconds = time.perf_counter() - t0
        rec = {"epoch": epoch, "lr": lr_at(cfg, epoch), **totals, "images": int(seen),
               "train_accuracy": float(correct / seen), "seconds": round(train_seconds, 2),
               "images_per_s": round(float(seen) / train_seconds, 1)}
        if rank == 0:
            metrics = evaluate_model(model, test_x, test_y, device=device, class_names=class_names)
            rec.update(test_accuracy=metrics["accuracy"], test_recon_mse=metrics["recon_mse"],
                       test_psnr=metrics["psnr"])
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
                    "metrics": {k: metrics[k] for k in ("accuracy", "recon_mse", "psnr", "test_images",
                                                          "per_class_accuracy")},
                    "history": history,
                    "latent_stats": stats}
            # Weights + state first, the JSON (which names the epoch) last: a crash leaves the old pair.
            save_tensors(out / "train_state.safetensors",
                         {**{f"model.{k}": v for k, v in model.state_dict().items()},
                          **_optimizer_state(opt, names)}, metadata={**meta, "model": mcfg.to_dict()})
            save_checkpoint(out / "last", model, meta)
            if epoch in cfg.snapshots:
                save_checkpoint(out / f"epoch{epoch:03d}", model, meta)
            with open(out / "log.jsonl", "a") as f:
                f.write(json.dumps(rec) + "\n")
            log(rec)
        if distributed:
            dist.barrier()
    if distributed:
        dist.destroy_process_group()
    return out / "last"


def _train_predictions(model, out) -> torch.Tensor:
    """Training-batch predictions from the forward pass already done (no second forward)."""
    if out.logits is not None and out.logvar is None:
        return out.logits.argmax(1)
    if getattr(model, "centroids", None) is not None:
        return torch.cdist(out.z.float(), model.centroids).argmin(1)
    return torch.full((out.z.shape[0],), -1, device=out.z.device)  # CVAE: no cheap train-time classifier
