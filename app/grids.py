"""Image grids as PNG bytes for st.image. Tiling is csae_core.images.to_grid; this adds the
paper's layouts (ground truth row above its reconstruction row) and nearest-neighbour upscaling
(28-32 px digits are unreadable at screen size, and browser smoothing would blur them)."""
from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image

from csae_core.images import to_grid

SCALE = 3  # display magnification of 32 px images
MAX_WIDTH = 1460  # st.image shrinks (bilinear) anything wider; wide strips get a smaller scale instead


def pad32(images: np.ndarray) -> np.ndarray:
    """uint8 (N, 28, 28) -> (N, 32, 32) with a black border, as the models see them (32 px stays as is)."""
    images = np.asarray(images)
    p = 32 - images.shape[-1]
    return np.pad(images, ((0, 0), (p // 2, p - p // 2), (p // 2, p - p // 2))) if p > 0 else images


def _as_float(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W) -> float (N, 1, 32, 32) in [0, 1]."""
    return torch.as_tensor(pad32(images)).float()[:, None] / 255


def grid(images: np.ndarray, nrow: int) -> np.ndarray:
    """uint8 picture tiling uint8 images (N, H, W), nrow per row."""
    return to_grid(_as_float(images), nrow=nrow)


def comparison_grid(originals: np.ndarray, recons: np.ndarray, nrow: int) -> np.ndarray:
    """Fig. 4 layout: each row of `nrow` originals is followed by the row of their reconstructions."""
    originals, recons = pad32(originals), pad32(recons)
    rows = []
    for i in range(0, len(originals), nrow):
        rows += [originals[i:i + nrow], recons[i:i + nrow]]
    pad = [np.concatenate([r, np.zeros((nrow - len(r), *r.shape[1:]), r.dtype)]) for r in rows]
    return grid(np.concatenate(pad), nrow)


def png(picture: np.ndarray, scale: int = SCALE) -> bytes:
    """PNG bytes of a uint8 picture (H, W), magnified up to `scale` times without smoothing.
    Show them with st.image(..., output_format="PNG"): "auto" would re-encode grey PNGs as JPEG."""
    picture = np.asarray(picture)
    scale = max(1, min(scale, MAX_WIDTH // picture.shape[1]))
    big = picture.repeat(scale, 0).repeat(scale, 1)
    buf = io.BytesIO()
    Image.fromarray(big).save(buf, format="PNG", compress_level=1)  # speed over size: it is served locally
    return buf.getvalue()


def small_png(image: np.ndarray, size: int = 96) -> bytes:
    """PNG of one picture resized (nearest) to about `size` px on its long side, for step-by-step views."""
    h, w = image.shape[:2]
    scale = max(1, size // max(h, w))
    if max(h, w) > size:  # big uploads: shrink instead
        img = Image.fromarray(image)
        img.thumbnail((size, size))
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        return buf.getvalue()
    return png(image, scale)
