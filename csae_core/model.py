"""The model kinds: ModelConfig, the kinds' registry (KINDS) and `build_model`. CSAE (Table 2) and the
baselines of Table 3 (CSAE_encoder, Basenet) and the CVAE.

Torch-free on purpose: the CLI and the zoo check a config and a kind name here before torch is imported, so a
refused input costs a few MB, not torch's ~220 MB. The networks themselves are in csae_core/nets.py; their names
are re-exported from here on first use (`from csae_core.model import CSAE` imports torch then).
"""
from __future__ import annotations

import importlib
import math
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING

from .errors import CSAEError
from .limits import check_model_limits

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = ["ModelConfig", "ModelOutput", "ModelKind", "KINDS", "MODEL_KINDS", "DEFAULT_KIND", "DEFAULT_BETA",
           "build_model", "CSAE", "CSAEEncoder", "Basenet", "CVAE"]

# What a checkpoint that predates a ModelConfig field was trained with (see ModelConfig.from_dict).
LEGACY_DEFAULTS = {"decoder_fc_relu": True, "cvae_label_encoder": False}


@dataclass
class ModelConfig:
    kind: str = "csae"  # DEFAULT_KIND; one of KINDS (the registry at the end of this file)
    in_channels: int = 1  # 1 for MNIST/Fashion-MNIST, 3 for faces
    image_size: int = 32  # MNIST/Fashion-MNIST are padded 28 -> 32 as in the paper
    widths: tuple = (32, 64, 128, 128)  # stem width, then one stride-2 residual block per further width
    latent_dim: int = 40  # d; the paper uses 40 on MNIST/Fashion-MNIST, 256 on faces
    num_classes: int = 10
    beta: float = 0.0  # decoder-input noise z* = z + sqrt(d) * beta * n0 in training (eq. 12-13)
    recon_loss: str = "wavelet"  # "wavelet" (eq. 8) or "mse" (pixel MSE, the section 4.5 ablation)
    wavelet: str = "haar"
    wavelet_levels: int = 0  # J; 0 = the paper's choice by size (2 at 32x32, 3 at 128x128)
    decoder_fc_relu: bool = False  # Table 2 and the authors' decoder: no ReLU after the decoder's FC layer
    cvae_label_encoder: bool = True  # CVAE encoder sees [x, one-hot(y)] as in a CVAE (the authors' setup)

    def __post_init__(self):
        # Every size is bounded before anything is allocated (a checkpoint JSON is untrusted input).
        check_model_limits({f.name: getattr(self, f.name) for f in fields(self)})
        self.widths = tuple(int(w) for w in self.widths)
        if self.kind not in MODEL_KINDS:
            raise CSAEError(f"model must be one of {', '.join(MODEL_KINDS)}, got {self.kind!r}")
        if len(self.widths) < 2 or min(self.widths) < 1:
            raise CSAEError(f"widths needs >= 2 positive channel counts, got {self.widths}")
        blocks = len(self.widths) - 1
        if self.image_size % (2**blocks) or self.image_size < 2**blocks:
            raise CSAEError(f"image size must be a multiple of {2**blocks} for {blocks} stride-2 blocks, "
                            f"got {self.image_size}")
        if not 0.0 <= self.beta <= 1.0:
            raise CSAEError(f"beta must be in [0, 1], got {self.beta}")
        if self.recon_loss not in ("wavelet", "mse"):
            raise CSAEError(f"recon_loss must be 'wavelet' or 'mse', got {self.recon_loss!r}")
        if self.latent_dim < 2 or self.num_classes < 2 or self.in_channels not in (1, 3):
            raise CSAEError(f"need latent_dim >= 2, num_classes >= 2, in_channels 1 or 3; got "
                            f"{self.latent_dim}, {self.num_classes}, {self.in_channels}")

    @property
    def alpha(self) -> float:
        return math.sqrt(self.latent_dim)  # eq. 5: centroid scale, and the noise scale of eq. 12

    @property
    def feature_size(self) -> int:
        return self.image_size // 2 ** (len(self.widths) - 1)  # 4 at 32x32

    def to_dict(self) -> dict:
        d = asdict(self)
        d["widths"] = list(self.widths)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        # Checkpoints written before a field existed were trained with the old behaviour: a missing
        # key means the legacy value, not today's default (so shipped models keep their outputs).
        d = {**LEGACY_DEFAULTS, **d}
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise CSAEError(f"unknown model config keys {sorted(unknown)}; this checkpoint was written by "
                            f"another version of csae_core")
        return cls(**d)


# ---------------------------------------------------------------- the model-kind registry

@dataclass(frozen=True)
class ModelKind:
    """Everything the CLI, the zoo, the app and the results scripts know about one model kind. A new kind is
    its class (csae_core/nets.py) plus one entry in KINDS; what it can do is read from the class:
    `kind.cls.has_decoder`, `has_centroids`, `has_logits`, `label_conditioned`, `uses_beta` (nothing here
    repeats them)."""

    name: str  # ModelConfig.kind, the CLI's --model value, the "kind" a checkpoint records
    net: type | str  # its class, or the class's name in csae_core/nets.py (looked up on use: imports torch)
    title: str  # the app's name for it
    paper_name: str  # the paper's name for it (Table 3)
    betas: tuple = (0.0,)  # the β the zoo trains it at; several: β is part of its checkpoint names and labels
    paper: dict = field(default_factory=dict)  # Table 3 of the paper, recognition %: β -> (MNIST, Fashion-MNIST)
    zoo_rank: int = 1  # place in the zoo's training queue (lower first; the default model always leads)
    snapshot_betas: tuple = ()  # Fig. 4: the β whose epoch snapshots the zoo keeps (MNIST)
    train: dict = field(default_factory=dict)  # the kind's own optimizer settings, over any recipe's

    @property
    def cls(self) -> type:
        return getattr(importlib.import_module(".nets", __package__), self.net) if isinstance(self.net, str) \
            else self.net

    def label(self, beta: float = 0.0, paper: bool = False) -> str:
        """'CSAE β=0.02', 'CVAE' (paper=True: the paper's spelling, 'CSAE_encoder')."""
        name = self.paper_name if paper else self.title
        return f"{name} β={beta:g}" if len(self.betas) > 1 else name

    def checkpoint_name(self, beta: float = 0.0, seed: int = 0) -> str:
        """The zoo's file stem: 'csae-b0.02', 'basenet', 'csae-b0.02-s1'."""
        base = f"{self.name}-b{beta:g}" if len(self.betas) > 1 else self.name
        return f"{base}-s{seed}" if seed else base


KINDS: dict[str, ModelKind] = {k.name: k for k in (
    ModelKind("csae", "CSAE", "CSAE", "CSAE", betas=(0.0, 0.02, 0.04, 0.06, 0.08), zoo_rank=3,
              snapshot_betas=(0.0, 0.04, 0.08),
              paper={0.0: (99.48, 92.70), 0.02: (99.52, 92.36), 0.04: (99.50, 92.45), 0.06: (99.50, 92.89),
                     0.08: (99.47, 92.48)}),
    ModelKind("csae-encoder", "CSAEEncoder", "CSAE encoder", "CSAE_encoder", zoo_rank=2, paper={0.0: (99.45, 92.60)}),
    ModelKind("basenet", "Basenet", "Basenet", "Basenet", zoo_rank=1, paper={0.0: (99.20, 92.45)}),
    # Not in Table 3. Adam 1e-3 at batch 512, no weight decay, constant lr: the settings of an older commit of
    # the authors' code (their current code differs; README, "Where we depart from the paper").
    ModelKind("cvae", "CVAE", "CVAE", "CVAE", zoo_rank=4,
              train=dict(optimizer="adam", lr=1e-3, batch_size=512, weight_decay=0.0, schedule="step",
                         lr_step=10**6, warmup_steps=0, nesterov=False)),
)}
MODEL_KINDS = tuple(KINDS)
DEFAULT_KIND, DEFAULT_BETA = "csae", 0.02  # what the app shows first, the zoo trains first (and with seeds);
# DEFAULT_KIND is also the kind whose β the Reconstructions view and the open-set β trend sweep (Fig. 4/5)


def build_model(cfg: ModelConfig, centroids: torch.Tensor | None = None) -> nn.Module:
    """The model of `cfg.kind`; kinds with centroids need the scaled PEDCC centroids (n, d)."""
    cls = KINDS[cfg.kind].cls
    if cls.has_centroids and centroids is None:
        raise CSAEError(f"a {cfg.kind} model needs PEDCC centroids")
    return cls(cfg, centroids)


def __getattr__(name: str):
    """The networks' names (`model.CSAE`, `model.ModelOutput`, ...), imported from nets.py (and torch) on first use."""
    if name not in __all__:  # e.g. a `hasattr` probe: no torch import for it
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(".nets", __package__), name)
