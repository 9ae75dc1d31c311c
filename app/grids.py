"""Image grids as PNG bytes for st.image: uint8 arrays tiled in numpy (no float round trip), the
paper's layouts (ground truth row above its reconstruction row) and nearest-neighbour upscaling
(28-32 px digits are unreadable at screen size, and browser smoothing would blur them)."""
from __future__ import annotations

import io

import numpy as np
from PIL import Image

from csae_core.images import GUTTER, tile  # noqa: F401  (GUTTER: the grey between tiles)
from csae_core.preprocess import pad

SCALE = 3  # display magnification of 32 px images
MAX_WIDTH = 1460  # st.image shrinks (bilinear) anything wider; wide strips get a smaller scale instead


def grid(images: np.ndarray, nrow: int, gap: int = 2) -> np.ndarray:
    """uint8 picture (H, W) tiling uint8 images (N, h, w), nrow per row; 28 px images are padded to 32
    first, as the models see them."""
    return tile(pad(np.asarray(images, dtype=np.uint8)), nrow, gap)


def comparison_grid(originals: np.ndarray, recons: np.ndarray, nrow: int) -> np.ndarray:
    """Fig. 4 layout: each row of `nrow` originals is followed by the row of their reconstructions."""
    originals, recons = pad(np.asarray(originals)), pad(np.asarray(recons))
    rows = []
    for i in range(0, len(originals), nrow):
        rows += [originals[i:i + nrow], recons[i:i + nrow]]
    filled = [np.concatenate([r, np.zeros((nrow - len(r), *r.shape[1:]), r.dtype)]) for r in rows]
    return grid(np.concatenate(filled), nrow)


def row_png(images: np.ndarray, per_row: int | None = None) -> bytes:
    """PNG of uint8 images (N, h, w) tiled `per_row` to a row (default: all in one row)."""
    return png(grid(images, nrow=min(len(images), per_row or len(images))))


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
