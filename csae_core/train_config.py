"""TrainConfig: every training setting, with its bounds, checked at construction. Torch-free on purpose (the
CLI generates its train flags from it and refuses a bad value before torch is imported); csae_core.train
re-exports it.
"""
from __future__ import annotations

from dataclasses import dataclass

from .errors import CSAEError

__all__ = ["TrainConfig", "SCHEDULES", "COMPILE_MODES", "check_compile_mode"]

COMPILE_MODES = ("none", "compile", "cudagraph")  # TrainConfig.compile (csae_core/fast_step.py)


def check_compile_mode(mode: str) -> None:
    if mode not in COMPILE_MODES:
        raise CSAEError(f"compile must be one of {', '.join(COMPILE_MODES)}, got {mode!r}")


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
    compile: str = "none"  # none | compile | cudagraph: fewer kernel launches per step (csae_core/fast_step.py)
    progress_every: float = 5.0  # seconds between progress.jsonl lines within an epoch (live curves; 0: none)

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
        check_compile_mode(self.compile)


# (field, lowest, highest) of the numeric settings; NaN fails every range. A negative grad clip or
# warm-up would train backwards, a negative image count would slice from the end; lr_step counts epochs
# (the step schedule changes the lr once per epoch), so under 1 it means nothing.
_RANGES = (("lr", 0, 100), ("lr_step", 1, 1e9), ("momentum", 0, 1), ("weight_decay", 0, 1),
           ("grad_clip", 0, 1e9), ("warmup_steps", 0, 10**9), ("epoch_images", 0, 10**9),
           ("test_images", 0, 10**9), ("stats_images", 0, 10**9), ("val_images", 0, 10**9), ("epochs", 1, 100_000),
           ("batch_size", 1, 1_000_000), ("seed", 0, 2**31 - 1), ("pedcc_seed", 0, 2**31 - 1),
           ("pedcc_iters", 0, 10**7), ("image_size", 0, 256), ("progress_every", 0, 86_400))


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
