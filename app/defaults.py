"""Where the views' widgets start: their first draw. The pages start their widgets here and app/warmup.py
precomputes exactly these draws (a cache key is the call's arguments), so a default changed here changes both,
and the warm-up cannot go on filling a key no page asks for."""
from __future__ import annotations

from csae_core.model import ModelConfig

SEED = 0  # every view's "Seed" input

# PEDCC sphere: n points on the 3-D sphere, run until converged (the radio's first choice)
PEDCC_POINTS = 10
PEDCC_CONVERGE = True
# The PEDCC view without a checkpoint: centroids like the ones the models are trained with
MODEL_CLASSES = ModelConfig.num_classes
MODEL_LATENT_DIM = ModelConfig.latent_dim

# Reconstructions: how many random test images, shown in rows of ROW
RECON_IMAGES = 32
RECON_ROW = 8

LATENT_IMAGES = 1000  # Latent space: test images projected
LETTERS_SPLIT = "one-per-class"  # Letters: one EMNIST image of each letter, a to z


def beta(betas: list[float]) -> float:
    """The Reconstructions β slider's start among a dataset's sorted β: the second (0.02 in the zoo, the
    paper's Table 3 setting; 0 is the no-noise ablation), or the only one."""
    return betas[min(1, len(betas) - 1)]
