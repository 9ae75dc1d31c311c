"""Nearest-predefined-centroid classification (section 4.3)."""
from __future__ import annotations

import torch

__all__ = ["nearest_centroid"]


def nearest_centroid(z: torch.Tensor, centroids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Labels (B,) of the closest centroid (n, d) to each latent z (B, d), and the distances (B, n)."""
    dist = torch.cdist(z.float(), centroids.float())  # (B, n)
    return dist.argmin(dim=1), dist
