"""Losses and the classifier against hand-computed values and pywt (an independent DWT)."""
import numpy as np
import pytest
import pywt
import torch

from csae_core.classify import nearest_centroid
from csae_core.losses import WaveletLoss, centroid_mse, kl_divergence


def test_centroid_mse_hand_computed():
    z = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    centroids = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    # z0 - c1 = (0, 1), z1 - c0 = (3, 4): squares 0, 1, 9, 16 -> mean 6.5
    assert centroid_mse(z, centroids, torch.tensor([1, 0])).item() == pytest.approx(6.5)


def test_kl_hand_computed():
    assert kl_divergence(torch.zeros(3, 4), torch.zeros(3, 4)).item() == pytest.approx(0.0)
    # one dim with mu = 1, var = 1: 0.5 * mu^2 = 0.5; one with mu = 0, logvar = log 2: 0.5 * (2 - 1 - log 2)
    mu, logvar = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, np.log(2.0)]])
    assert kl_divergence(mu, logvar).item() == pytest.approx(0.5 + 0.5 * (1 - np.log(2)), rel=1e-6)


def test_wavelet_loss_zero_for_identical_images():
    x = torch.rand(3, 1, 32, 32)
    assert WaveletLoss(2)(x, x.clone()).item() == 0.0


@pytest.mark.parametrize("levels,size,channels", [(1, 8, 1), (2, 32, 1), (3, 128, 3)])
def test_wavelet_loss_matches_pywt(levels, size, channels):
    g = torch.Generator().manual_seed(levels)
    a, b = torch.rand(2, channels, size, size, generator=g), torch.rand(2, channels, size, size, generator=g)
    got = WaveletLoss(levels, "haar")(a, b).item()
    ca = pywt.wavedec2(a.double().numpy(), "haar", mode="zero", level=levels, axes=(-2, -1))
    cb = pywt.wavedec2(b.double().numpy(), "haar", mode="zero", level=levels, axes=(-2, -1))
    lam = (1, 1, 6, 10)
    want = lam[0] * np.mean((ca[0] - cb[0]) ** 2)  # eq. 8: MSE on the level-J approximation
    for da, db in zip(ca[1:], cb[1:]):  # per level: (horizontal, vertical, diagonal) details, L1
        want += sum(w * np.mean(np.abs(x - y)) for w, x, y in zip(lam[1:], da, db))
    assert got == pytest.approx(want, rel=1e-5)


def test_wavelet_loss_weights_diagonal_details_most():
    """A pure checkerboard only has diagonal detail, so its loss carries lambda4 = 10."""
    x = torch.zeros(1, 1, 4, 4)
    checker = (torch.arange(4)[:, None] + torch.arange(4)[None]) % 2
    y = checker.float()[None, None]
    loss = WaveletLoss(1)(x, y).item()
    low = np.mean(pywt.dwt2(y.numpy()[0, 0], "haar")[0] ** 2)
    diag = np.mean(np.abs(pywt.dwt2(y.numpy()[0, 0], "haar")[1][2]))
    assert diag > 0 and loss == pytest.approx(low + 10 * diag, rel=1e-6)


def test_nearest_centroid():
    centroids = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0]])
    z = torch.tensor([[0.9, 0.1], [-2.0, 0.5], [0.1, 3.0]])
    labels, dist = nearest_centroid(z, centroids)
    assert labels.tolist() == [0, 1, 2]
    assert dist.shape == (3, 3)
    assert dist[0, 0].item() == pytest.approx(np.hypot(0.1, 0.1), rel=1e-5)
