"""Geometry of latent points for analysis and display: pairwise distances and cosines, class
means, and the PCA the latent-space view projects with. Arrays in, float64 numpy arrays out."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["pairwise_distances", "pairwise_cosines", "class_means", "own_centroid_distances", "PCA", "fit_pca"]


def _f64(points) -> torch.Tensor:
    return torch.as_tensor(np.asarray(points), dtype=torch.float64)


def pairwise_distances(points) -> np.ndarray:
    """Euclidean distance matrix (n, n) between the rows of points (n, d)."""
    p = _f64(points)
    return torch.cdist(p[None], p[None])[0].numpy()


def pairwise_cosines(points) -> np.ndarray:
    """Cosines of all pairs i < j of the rows of points (n, d), as a flat array."""
    u = torch.nn.functional.normalize(_f64(points), dim=1)
    iu = torch.triu_indices(len(u), len(u), offset=1)
    return (u @ u.T)[iu[0], iu[1]].numpy()


def class_means(z, labels, num_classes: int) -> np.ndarray:
    """Mean latent (n, d) of each class; NaN rows for classes with no sample (not a fake zero mean)."""
    z, labels = np.asarray(z, dtype=np.float64), np.asarray(labels)
    out = np.full((num_classes, z.shape[1]), np.nan)
    for k in range(num_classes):
        if (labels == k).any():
            out[k] = z[labels == k].mean(0)
    return out


def own_centroid_distances(z, labels, centroids) -> np.ndarray:
    """Distance (N,) of each latent to the centroid of its own class."""
    return np.linalg.norm(np.asarray(z, np.float64) - np.asarray(centroids, np.float64)[np.asarray(labels)], axis=1)


@dataclass(frozen=True)
class PCA:
    """A k-component PCA fitted on some points; projects any other points (e.g. the centroids) with it."""

    mean: np.ndarray  # (d,)
    components: np.ndarray  # (k, d), rows orthonormal
    explained: np.ndarray  # (k,) fraction of the variance each component explains

    def project(self, points) -> np.ndarray:
        return (np.asarray(points, dtype=np.float64) - self.mean) @ self.components.T  # (N, k)


def fit_pca(z, k: int) -> PCA:
    """PCA of latents z (N, d) by SVD of the centred data (exact; N x d is small here)."""
    x = _f64(z)
    mean = x.mean(0)
    _, s, vh = torch.linalg.svd(x - mean, full_matrices=False)
    var = s**2
    return PCA(mean.numpy(), vh[:k].numpy(), (var[:k] / var.sum().clamp_min(1e-12)).numpy())
