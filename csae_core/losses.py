"""CSAE losses: Loss1 (MSE to the predefined centroid, eq. 6), Loss2 (wavelet loss, eq. 8),
plain pixel MSE (the section 4.5 ablation) and the CVAE's KL term."""
from __future__ import annotations

import warnings

import torch
import torch.nn as nn
import torch.nn.functional as F

with warnings.catch_warnings():  # pytorch-wavelets imports the deprecated pkg_resources
    warnings.simplefilter("ignore", UserWarning)
    from pytorch_wavelets import DWTForward

__all__ = ["centroid_mse", "WaveletLoss", "kl_divergence", "default_wavelet_levels"]

# Eq. 8 weights: approximation MSE, then L1 on horizontal, vertical, diagonal details.
PAPER_LAMBDAS = (1.0, 1.0, 6.0, 10.0)


def centroid_mse(z: torch.Tensor, centroids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Loss1: mean squared error between latents z (B, d) and their class centroids (n, d)[labels]."""
    return F.mse_loss(z, centroids[labels])


def default_wavelet_levels(image_size: int) -> int:
    """J of the paper: 2 at 32x32 (MNIST/Fashion), 3 at 128x128 (FaceScrub); in between by size."""
    return 2 if image_size <= 64 else 3


class WaveletLoss(nn.Module):
    """Loss2 (eq. 8) on a J-level 2-D DWT of reconstruction and target.

    lambda1 * MSE(b_J*, b_J) + sum_q [lambda2 L1(h_q) + lambda3 L1(v_q) + lambda4 L1(c_q)], q = 1..J,
    with L1 the mean absolute difference (eq. 9). Inputs: (N, C, H, W).
    """

    def __init__(self, levels: int = 2, wave: str = "haar", lambdas=PAPER_LAMBDAS):
        super().__init__()
        if levels < 1:
            raise ValueError(f"wavelet levels must be >= 1, got {levels}")
        self.dwt = DWTForward(J=levels, wave=wave, mode="zero")
        self.lambdas = tuple(float(v) for v in lambdas)

    def forward(self, recon: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        # The DWT filters are float32 buffers; compute the loss in float32 even under autocast.
        with torch.autocast(device_type=recon.device.type, enabled=False):
            low_r, high_r = self.dwt(recon.float())
            low_t, high_t = self.dwt(target.float())
            l1, l2, l3, l4 = self.lambdas
            loss = l1 * F.mse_loss(low_r, low_t)
            for hr, ht in zip(high_r, high_t):  # each (N, C, 3, H_q, W_q): horizontal, vertical, diagonal
                diff = (hr - ht).abs()
                loss = loss + l2 * diff[:, :, 0].mean() + l3 * diff[:, :, 1].mean() + l4 * diff[:, :, 2].mean()
        return loss


def kl_per_image(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) of each image (B,), summed over the latent dims."""
    return -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(dim=1)


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)), summed over latent dims, averaged over the batch."""
    return kl_per_image(mu, logvar).mean()
