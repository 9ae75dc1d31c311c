"""csae_core.geometry: the distances, class means and PCA the explorer's views are drawn from."""
from __future__ import annotations

import numpy as np

from csae_core import geometry
from csae_core.pedcc import generate_pedcc


def test_pca_matches_numpy_svd():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(300, 6)) @ rng.normal(size=(6, 6)) + 5
    pca = geometry.fit_pca(z, 3)
    xc = z - z.mean(0)
    _, s, vt = np.linalg.svd(xc, full_matrices=False)
    ref = xc @ vt[:3].T
    got = pca.project(z)
    assert np.allclose(np.abs(got), np.abs(ref), atol=1e-8)  # components are defined up to sign
    assert np.allclose(pca.explained, s[:3] ** 2 / (s**2).sum())


def test_pairwise_helpers_on_a_regular_simplex():
    # The 4 vertices of a regular tetrahedron: every cosine is -1/3, every distance sqrt(8/3).
    u = np.array([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]], float) / np.sqrt(3)
    assert np.allclose(geometry.pairwise_cosines(u), -1 / 3)
    d = geometry.pairwise_distances(u)
    assert np.allclose(d[~np.eye(4, dtype=bool)], np.sqrt(8 / 3)) and np.allclose(np.diag(d), 0)
    means = geometry.class_means(np.array([[0.0, 2], [2, 0], [5, 5]]), np.array([0, 0, 2]), 3)
    assert np.allclose(means[0], [1, 1]) and np.isnan(means[1]).all() and np.allclose(means[2], [5, 5])


def test_pedcc_centroids_project_to_a_simplex_in_pca():
    # 4 PEDCC centroids in d=40 span a 3-D affine subspace: a 3-component PCA keeps all their
    # variance and their pairwise distances (what the latent-space view relies on to mark them).
    c = generate_pedcc(4, 40, seed=3, converge=True).scaled().numpy()
    pca = geometry.fit_pca(c, 3)
    assert np.isclose(pca.explained.sum(), 1.0)
    assert np.allclose(geometry.pairwise_distances(pca.project(c)), geometry.pairwise_distances(c), atol=1e-5)
    assert np.allclose(geometry.own_centroid_distances(c, np.arange(4), c), 0)


def test_tsne_keeps_separated_clusters_apart_and_is_reproducible():
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(3, 10)) * 20
    labels = np.repeat(np.arange(3), 40)
    x = centres[labels] + rng.normal(size=(120, 10))
    y = geometry.tsne(x, seed=0)
    assert y.shape == (120, 2)
    d = geometry.pairwise_distances(y)
    np.fill_diagonal(d, np.inf)
    assert (labels[d.argmin(1)] == labels).all()  # every point's nearest neighbour is of its own cluster
    assert np.allclose(geometry.tsne(x, seed=0), y)


def test_pca_caps_components_at_the_data_rank():
    pca = geometry.fit_pca(np.eye(2), 3)
    assert pca.components.shape == (2, 2) and np.isclose(pca.explained.sum(), 1.0)
