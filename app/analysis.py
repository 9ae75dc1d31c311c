"""Glue between the app and csae_core on plain arrays; no Streamlit calls, no caching (see loaders).

The maths is csae_core's: reconstruct/embed/predict, reconstruction_errors, psnr, nearest_centroid,
sample_images, interpolate_latents, decode_latents; distances, class means and PCA are in
csae_core.geometry, re-exported here with the PEDCC metrics because pages import only `app`.
Images come in as uint8 pictures (28 or 32 px) and are converted to model floats here, once.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from csae_core.classify import nearest_centroid
from csae_core.evaluate import encode, psnr, reconstruction_errors
from csae_core.geometry import class_means, fit_pca, own_centroid_distances, pairwise_cosines, pairwise_distances
from csae_core.pedcc import pedcc_metrics
from csae_core.preprocess import to_model_input, to_uint8

__all__ = ["centroids", "Recon", "choose_indices", "reconstruct", "reconstruct_letters", "latents", "nearest_classes",
           "nearest_centroid_confusion", "class_means", "fit_pca", "own_centroid_distances", "pairwise_cosines",
           "pairwise_distances", "pedcc_metrics"]


def centroids(model) -> np.ndarray | None:
    """A model's predefined PEDCC centroids (n, d), as scaled for it, in numpy; None for a kind without them."""
    return model.centroids.detach().cpu().numpy() if model.has_centroids else None


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
def reconstruct_letters(model, images: np.ndarray) -> np.ndarray:
    """uint8 reconstructions (N, 32, 32) of uint8 letter pictures (N, 28, 28) (or 32 px ones)."""
    return to_uint8(model.reconstruct(to_model_input(images)))


@torch.no_grad()
def latents(model, images: np.ndarray, batch_size: int = 250) -> np.ndarray:
    """Latent codes (N, d) float32 of uint8 images (N, 32, 32) (28 px ones are padded, like training)."""
    x = to_model_input(images)
    return encode(model, x, batch_size=batch_size).numpy()


@torch.no_grad()
def nearest_classes(model, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For a model with PEDCC centroids: the nearest class (N,) of each uint8 picture and its distance (N,)."""
    labels, dist = nearest_centroid(model.embed(to_model_input(images)), model.centroids)
    return labels.numpy(), dist.gather(1, labels[:, None])[:, 0].numpy()


def nearest_centroid_confusion(z: np.ndarray, labels: np.ndarray, centroids: np.ndarray,
                               class_names: list[str]) -> tuple["pd.DataFrame", float]:
    """Confusion table (rows: true class, columns: nearest centroid) of latents z (N, d), and the accuracy."""
    import pandas as pd  # only the Latent space view needs these: not on the app's start-up path
    from sklearn.metrics import confusion_matrix

    predicted = nearest_centroid(torch.as_tensor(z), torch.as_tensor(centroids))[0].numpy()
    k = len(class_names)
    table = pd.DataFrame(confusion_matrix(labels, predicted, labels=np.arange(k)),
                         index=pd.Index(class_names, name="true"), columns=pd.Index(class_names, name="predicted"))
    return table, float(np.mean(predicted == labels))
