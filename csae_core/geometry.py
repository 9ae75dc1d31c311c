"""Geometry of latent points for analysis and display: pairwise distances and cosines, class
means, and the projections the latent-space view draws (PCA, t-SNE; scikit-learn's).
Arrays in, float64 numpy arrays out; no torch."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["pairwise_distances", "pairwise_cosines", "class_means", "own_centroid_distances", "PCA", "fit_pca",
           "tsne"]


def _f64(points) -> np.ndarray:
    return np.asarray(points, dtype=np.float64)


def pairwise_distances(points) -> np.ndarray:
    """Euclidean distance matrix (n, n) between the rows of points (n, d) (exact differences: n is small)."""
    p = _f64(points)
    return np.sqrt(((p[:, None, :] - p[None, :, :]) ** 2).sum(-1))


def pairwise_cosines(points) -> np.ndarray:
    """Cosines of all pairs i < j of the rows of points (n, d), as a flat array."""
    u = _f64(points)
    u = u / np.linalg.norm(u, axis=1, keepdims=True)
    return (u @ u.T)[np.triu_indices(len(u), k=1)]


def class_means(z, labels, num_classes: int) -> np.ndarray:
    """Mean latent (n, d) of each class; NaN rows for classes with no sample (not a fake zero mean)."""
    z, labels = _f64(z), np.asarray(labels)
    out = np.full((num_classes, z.shape[1]), np.nan)
    for k in range(num_classes):
        if (labels == k).any():
            out[k] = z[labels == k].mean(0)
    return out


def own_centroid_distances(z, labels, centroids) -> np.ndarray:
    """Distance (N,) of each latent to the centroid of its own class."""
    return np.linalg.norm(_f64(z) - _f64(centroids)[np.asarray(labels)], axis=1)


@dataclass(frozen=True)
class PCA:
    """A k-component PCA fitted on some points; projects any other points (e.g. the centroids) with it."""

    mean: np.ndarray  # (d,)
    components: np.ndarray  # (k, d), rows orthonormal
    explained: np.ndarray  # (k,) fraction of the variance each component explains

    def project(self, points) -> np.ndarray:
        return (_f64(points) - self.mean) @ self.components.T  # (N, k)


def fit_pca(z, k: int) -> PCA:
    """PCA of latents z (N, d) (sklearn.decomposition.PCA, exact SVD); k is capped at min(N, d)."""
    from sklearn.decomposition import PCA as SkPCA

    x = _f64(z)
    p = SkPCA(n_components=min(k, *x.shape), svd_solver="full").fit(x)
    return PCA(p.mean_, p.components_, p.explained_variance_ratio_)


def tsne(points, seed: int = 0, perplexity: float = 30.0) -> np.ndarray:
    """2-D t-SNE embedding (N, 2) of points (N, d) (sklearn.manifold.TSNE, PCA initialisation, fixed seed).

    Unlike PCA it has no projection for new points: embed everything to be shown (e.g. the latents and
    the centroids) in one call. Perplexity is capped below N, as t-SNE requires.
    """
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    x = _f64(points)
    # One thread: on a busy 2-core machine every parallel region waits for a second core (1000 latents:
    # 41 s with the default threads, 7.7 s with one, under a training job's load).
    with threadpool_limits(1):
        return TSNE(n_components=2, perplexity=min(perplexity, max(1.0, (len(x) - 1) / 3)), init="pca",
                    random_state=seed, n_jobs=1).fit_transform(x)
