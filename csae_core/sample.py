"""Class-conditional generation (section 4.2): sample each class's latent Gaussian (mean and
covariance of its training-set latents) and decode; and decoded paths between class centres."""
from __future__ import annotations

import torch

from .errors import CSAEError

__all__ = ["sample_latents", "sample_images", "interpolate_latents", "decode_latents"]


def sample_latents(mean: torch.Tensor, cov: torch.Tensor, n: int, temperature: float = 1.0,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """n draws (n, d) from N(mean, temperature * cov); a tiny jitter keeps singular covariances usable."""
    if n < 1 or temperature < 0:
        raise CSAEError(f"need n >= 1 and temperature >= 0, got n={n}, temperature={temperature}")
    d = mean.shape[0]
    cov = cov.double() * temperature + 1e-6 * torch.eye(d, dtype=torch.float64)
    # Eigen-decomposition instead of Cholesky: robust for covariances that are PSD only up to rounding.
    evals, evecs = torch.linalg.eigh(cov)
    root = evecs * evals.clamp_min(0).sqrt()  # (d, d): root @ root.T == cov
    eps = torch.randn(n, d, generator=generator, dtype=torch.float64)
    return (mean.double() + eps @ root.T).float()


@torch.no_grad()
def decode_latents(model, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
    """Decoded images (N, C, H, W) clipped to [0, 1]; CVAE decoders also need the class labels (N,)."""
    if not model.has_decoder:
        model.decode(z)  # raises the one "no decoder" message, naming the kinds that have one
    model.eval()
    device = next(model.parameters()).device
    labels = None if labels is None else labels.to(device)
    return model.decode(z.to(device), labels).float().clamp(0, 1).cpu()


def sample_images(model, classes: list[int], n: int, stats: tuple[torch.Tensor, torch.Tensor] | None,
                  temperature: float = 1.0, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """n images per class in `classes` (class-major order) and their labels.

    CSAE: from each class's latent Gaussian `stats` = (means (n, d), covs (n, d, d)).
    CVAE: z ~ N(0, temperature * I) with the class as the decoder's condition.
    """
    num_classes = model.config.num_classes
    bad = [k for k in classes if not 0 <= k < num_classes]
    if bad:
        raise CSAEError(f"class {bad[0]} is out of range: this model has classes 0..{num_classes - 1}")
    g = torch.Generator().manual_seed(seed)
    d = model.config.latent_dim
    zs = []
    for k in classes:
        if model.label_conditioned:  # the class is the decoder's condition; z comes from the prior
            zs.append(torch.randn(n, d, generator=g) * temperature ** 0.5)
        else:
            if stats is None:
                raise CSAEError("this checkpoint has no class latent statistics; retrain with "
                                "`python -m csae_core train` (they are saved with every checkpoint)")
            zs.append(sample_latents(stats[0][k], stats[1][k], n, temperature, g))
    labels = torch.tensor(classes).repeat_interleave(n)
    return decode_latents(model, torch.cat(zs), labels), labels


def interpolate_latents(a: torch.Tensor, b: torch.Tensor, steps: int) -> torch.Tensor:
    """Straight path (steps, d) from a to b, both ends included."""
    if steps < 2:
        raise CSAEError(f"interpolation needs >= 2 steps, got {steps}")
    t = torch.linspace(0, 1, steps)[:, None]
    return (1 - t) * a[None] + t * b[None]
