"""Glue between the app and csae_core on plain arrays; no Streamlit calls, no caching (see loaders).

The maths is csae_core's: reconstruct/embed/predict, reconstruction_errors, psnr, nearest_centroid,
sample_images, interpolate_latents, decode_latents; distances, class means and PCA are in
csae_core.geometry.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from csae_core.classify import nearest_centroid
from csae_core.evaluate import encode, psnr, reconstruction_errors
from csae_core.preprocess import to_model_input, to_uint8


@dataclass(frozen=True)
class Recon:
    """Reconstructions of a batch: uint8 images (N, H, W) and per-image MSE and PSNR (dB, peak 1)."""

    images: np.ndarray
    mse: np.ndarray
    psnr: np.ndarray


def choose_indices(labels: np.ndarray, class_index: int | None, n: int, seed: int) -> np.ndarray:
    """n test-image indices: uniformly at random, or from one class; reproducible from `seed`."""
    pool = np.arange(len(labels)) if class_index is None else np.flatnonzero(labels == class_index)
    g = torch.Generator().manual_seed(int(seed))  # a local generator: no global RNG state is touched
    order = torch.randperm(len(pool), generator=g).numpy()
    return np.sort(pool[order[:n]])


@torch.no_grad()
def reconstruct(model, images: np.ndarray) -> Recon:
    """Reconstruct uint8 images (N, 32, 32) (28 px ones are padded) with a decoder model (CSAE, or CVAE
    under its predicted label)."""
    x = to_model_input(images)  # (N, 1, 32, 32) in [0, 1]
    recon = model.reconstruct(x.contiguous(memory_format=torch.channels_last))  # matches the app's model layout
    mse = reconstruction_errors(recon, x)
    return Recon(to_uint8(recon), mse.numpy(), psnr(mse).numpy())


@torch.no_grad()
def reconstruct_letters(model, x: torch.Tensor) -> np.ndarray:
    """uint8 reconstructions (N, 32, 32) of float letter inputs (N, 1, 32, 32)."""
    return to_uint8(model.reconstruct(x))


@torch.no_grad()
def latents(model, images: np.ndarray, batch_size: int = 250) -> np.ndarray:
    """Latent codes (N, d) float32 of uint8 images (N, 32, 32) (28 px ones are padded, like training)."""
    x = to_model_input(images)
    return encode(model, x, batch_size=batch_size).numpy()


@torch.no_grad()
def nearest_classes(model, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """For a model with PEDCC centroids: the nearest class (N,) of each input and its distance (N,)."""
    labels, dist = nearest_centroid(model.embed(x), model.centroids)
    return labels.numpy(), dist.gather(1, labels[:, None])[:, 0].numpy()
