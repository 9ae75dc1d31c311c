"""Image utilities shared by the CLI and the app: grids, safe decoding of user images, and
EMNIST-style preprocessing of handwritten letters (Cohen et al. 2017: grey, blur, crop to the
ink, centre in a square frame keeping the aspect ratio, pad 2 px, resize to 28x28, stretch the
intensities)."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFilter, ImageOps, UnidentifiedImageError

from .errors import CSAEError

__all__ = ["tile", "to_grid", "decode_image", "preprocess_letter", "MAX_PIXELS", "MAX_BYTES", "thumbnail"]

MAX_PIXELS = 4096 * 4096  # bigger uploads are refused before decoding (decompression bombs)
MAX_BYTES = 20 * 1024**2  # bigger files are refused unread (the app's own upload limit is 10 MB)
MAX_ASPECT = 50  # a letter image narrower than 1:50 is a line, and squaring it would cost side^2 pixels
WORK_SIDE = 1024  # preprocessing runs on at most this long a side (a 4096^2 scan is shrunk first)
FORMATS = ["PNG", "JPEG"]  # what is decoded: PIL's other formats (and their parsers) are not offered to uploads


GUTTER = 128  # the grey between tiles


def tile(images: np.ndarray, nrow: int, gap: int = 2) -> np.ndarray:
    """uint8 picture (H, W) or (H, W, C) tiling uint8 images (N, h, w) or (N, h, w, C), `nrow` per row, with
    grey gutters. The one grid tiler: the CLI's PNGs and the app's grids both come from here."""
    images = np.asarray(images, dtype=np.uint8)
    n, h, w = images.shape[:3]
    nrow = max(1, min(nrow, n))
    rows = -(-n // nrow)
    out = np.full((rows * (h + gap) + gap, nrow * (w + gap) + gap, *images.shape[3:]), GUTTER, np.uint8)
    for i, image in enumerate(images):
        r, c = divmod(i, nrow)
        out[gap + r * (h + gap): gap + r * (h + gap) + h, gap + c * (w + gap): gap + c * (w + gap) + w] = image
    return out


def to_grid(images: torch.Tensor, nrow: int = 8, pad: int = 2) -> np.ndarray:
    """uint8 picture (H, W) or (H, W, 3) tiling float images (N, C, h, w) in [0, 1], `nrow` per row."""
    from .preprocess import to_uint8

    return tile(to_uint8(images), nrow, pad)


def decode_image(data: bytes | str | Path, name: str = "image", max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Decode one still image from bytes or a path, refusing what the rest of the pipeline cannot use."""
    if isinstance(data, (str, Path)):
        name = str(data)
        from .checkpoint import read_regular_file  # regular files under a size cap only (no FIFO, no /dev/zero)

        data = read_regular_file(data, MAX_BYTES, "image")
    if len(data) > MAX_BYTES:
        raise CSAEError(f"{name} is {len(data) / 1e6:.1f} MB, over the {MAX_BYTES / 1e6:.0f} MB limit. "
                        f"Fix: scale it down first.")
    too_big = (f"{name} is over the {max_pixels:,}-pixel limit. Fix: scale it down first.")
    try:
        img = Image.open(io.BytesIO(data), formats=FORMATS)  # reads the header only: nothing decoded yet
        w, h = img.size
        if w * h > max_pixels:
            raise CSAEError(f"{name} is {w}x{h} pixels, over the {max_pixels:,}-pixel limit. "
                            f"Fix: scale it down first.")
        if getattr(img, "n_frames", 1) > 1:
            raise CSAEError(f"{name} is animated or has several frames. Fix: upload a single still image.")
        if min(w, h) < 2:
            raise CSAEError(f"{name} is only {w}x{h} pixels. Fix: use an image of a written character.")
        if max(w, h) > MAX_ASPECT * min(w, h):
            raise CSAEError(f"{name} is {w}x{h} pixels, a line rather than a character (over 1:{MAX_ASPECT}). "
                            f"Fix: crop it around the character.")
        img.load()
    except CSAEError:
        raise
    except Image.DecompressionBombError:  # PIL's own bound, hit in open() for a huge header
        raise CSAEError(too_big) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError, MemoryError):
        raise CSAEError(f"{name} is not an image we can decode (only PNG and JPEG are read, and a truncated file "
                        f"fails too). Fix: upload a PNG or JPEG file.") from None
    return img


def thumbnail(arr: np.ndarray, side: int = 96) -> np.ndarray:
    """A uint8 picture shrunk so its longer side is at most `side` (for showing a step, not computing)."""
    h, w = arr.shape[:2]
    if max(h, w) <= side:
        return arr
    scale = side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(Image.fromarray(arr).resize(size, Image.BILINEAR))


def _grey(img: Image.Image) -> np.ndarray:
    """Grey levels (H, W) float in [0, 255]; transparent areas count as background (white)."""
    img = ImageOps.exif_transpose(img)  # phone photos: the orientation the camera recorded
    if img.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        # 16-bit (and 32-bit) grey: scale to 0..255; convert("L") would clamp every value over 255 to white.
        a = np.asarray(img, dtype=np.float32)
        top = 65535.0 if img.mode.startswith("I;16") or a.max() > 255 else 255.0  # I;16 / 257 = 8-bit
        img = Image.fromarray(np.clip(a * (255.0 / top), 0, 255).round().astype(np.uint8))
    if max(img.size) > WORK_SIDE:
        img = img.copy()
        img.thumbnail((WORK_SIDE, WORK_SIDE), Image.BILINEAR)  # keeps the aspect ratio
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, rgba)
    return np.asarray(img.convert("L"), dtype=np.float32)


def preprocess_letter(img: Image.Image, name: str = "image") -> list[tuple[str, np.ndarray]]:
    """EMNIST-style steps, each (title, uint8 array); the last is the 28x28 upright model input
    (white ink on black, like MNIST). Raises CSAEError for a blank image."""
    steps = []
    grey = _grey(img)
    steps.append(("grey", grey.astype(np.uint8)))
    # EMNIST and MNIST have light ink on a dark background; flip dark-on-light drawings and scans.
    ink = 255 - grey if np.median(grey) > 127 else grey
    steps.append(("ink light on dark", ink.astype(np.uint8)))
    if ink.max() - ink.min() < 16 or ink.max() < 32:
        raise CSAEError(f"{name} looks blank (no ink found). Fix: upload or draw a character.")
    blurred = np.asarray(Image.fromarray(ink.astype(np.uint8)).filter(ImageFilter.GaussianBlur(1)), np.float32)
    ys, xs = np.nonzero(blurred > max(blurred.max() * 0.1, 8))
    if ys.size == 0:  # a speck of ink (one faint pixel) that the blur spreads below the ink level
        raise CSAEError(f"{name} looks blank (too little ink after blurring). Fix: upload or draw a character.")
    crop = blurred[ys.min(): ys.max() + 1, xs.min(): xs.max() + 1]
    steps.append(("cropped to the ink", crop.astype(np.uint8)))
    side = max(crop.shape)
    square = np.zeros((side, side), np.float32)
    y0, x0 = (side - crop.shape[0]) // 2, (side - crop.shape[1]) // 2
    square[y0: y0 + crop.shape[0], x0: x0 + crop.shape[1]] = crop  # centred, aspect ratio kept
    square = np.pad(square, 2)  # EMNIST's 2-pixel border
    steps.append(("centred in a square, 2 px border", square.astype(np.uint8)))
    small = np.asarray(Image.fromarray(square).resize((28, 28), Image.BICUBIC), np.float32).clip(0, None)
    small = small / max(small.max(), 1e-6) * 255  # stretch to the full intensity range
    steps.append(("resized to 28x28", small.round().astype(np.uint8)))
    return steps

