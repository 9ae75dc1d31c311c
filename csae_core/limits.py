"""Upper bounds on every size a model config may ask for, checked before anything is allocated.

A checkpoint JSON and the CLI's flags are untrusted: `latent_dim: 100000` or `--widths 4096 4096 4096 4096`
would otherwise cost gigabytes (and seconds) before the first shape error. ModelConfig.__post_init__ calls
`check_model_limits`, and checkpoint loading calls it on the raw JSON before torch is even imported, so a
refused file costs a few MB. Torch-free on purpose.
"""
from __future__ import annotations

import math

from .errors import CSAEError

__all__ = ["MODEL_LIMITS", "MAX_PARAMETERS", "check_model_limits", "estimated_parameters"]

# field: (lowest, highest). The paper: latent 40 (256 on faces), widths 32..128, 32 px (128 on faces).
MODEL_LIMITS = {"latent_dim": (2, 4096), "num_classes": (2, 1000), "image_size": (2, 256), "width": (1, 1024),
                "blocks": (1, 7), "wavelet_levels": (0, 6)}
MAX_PARAMETERS = 64_000_000  # 256 MB of fp32 weights (the paper's CSAE has ~1.4 M); training needs ~4x that


def _int(d: dict, name: str, default) -> int:
    v = d.get(name, default)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v != int(v):
        raise CSAEError(f"model config field {name} must be a whole number, got {v!r}")
    return int(v)


def _in_range(name: str, v: int, key: str | None = None) -> None:
    lo, hi = MODEL_LIMITS[key or name]
    if not lo <= v <= hi:
        raise CSAEError(f"model config field {name} must be in {lo}..{hi}, got {v}. Fix: choose a value in that "
                        f"range (the paper: latent_dim 40, widths 32 64 128 128, image_size 32).")


def estimated_parameters(in_channels: int, image_size: int, widths: tuple, latent_dim: int, num_classes: int) -> int:
    """An upper estimate of a model's parameter count (encoder and decoder trunks, their FC layers)."""
    trunk = 9 * (in_channels + num_classes) * widths[0]
    for a, b in zip(widths[:-1], widths[1:]):
        trunk += 9 * a * b + 9 * b * b + a * b  # a residual block: two 3x3 convs and a 1x1 shortcut
    feature = widths[-1] * (image_size // 2 ** (len(widths) - 1)) ** 2
    fc = feature * (2 * latent_dim + num_classes)
    return 2 * trunk + 2 * fc


def check_model_limits(d: dict) -> None:
    """Raise CSAEError (naming the field and its limit) for any size in a model-config dict over its bound.
    Missing fields take ModelConfig's defaults; wrong types are refused too."""
    if not isinstance(d, dict):
        raise CSAEError(f"model config must be a JSON object, got {type(d).__name__}")
    for name, default in (("latent_dim", 40), ("num_classes", 10), ("image_size", 32), ("wavelet_levels", 0)):
        _in_range(name, _int(d, name, default))
    widths = d.get("widths", (32, 64, 128, 128))
    if not isinstance(widths, (list, tuple)):
        raise CSAEError(f"model config field widths must be a list of channel counts, got {widths!r}")
    _in_range("number of widths - 1 (stride-2 blocks)", len(widths) - 1, "blocks")
    widths = tuple(_int({"widths": w}, "widths", 0) for w in widths)
    for w in widths:
        _in_range("widths", w, "width")
    in_channels = _int(d, "in_channels", 1)
    if in_channels not in (1, 3):
        raise CSAEError(f"model config field in_channels must be 1 or 3, got {in_channels}")
    n = estimated_parameters(in_channels, _int(d, "image_size", 32), widths, _int(d, "latent_dim", 40),
                             _int(d, "num_classes", 10))
    if n > MAX_PARAMETERS:
        raise CSAEError(f"this model config would have about {n / 1e6:.0f} M parameters, over the "
                        f"{MAX_PARAMETERS / 1e6:.0f} M limit (widths {list(widths)}, latent_dim {d.get('latent_dim')}, "
                        f"image_size {d.get('image_size')}). Fix: use smaller --widths / --latent-dim / --image-size.")
    wavelet = d.get("wavelet", "haar")
    if d.get("recon_loss", "wavelet") == "wavelet":
        import pywt  # a small pure lookup (pytorch-wavelets' own dependency); no torch

        if not isinstance(wavelet, str) or wavelet not in pywt.wavelist(kind="discrete"):
            raise CSAEError(f"model config field wavelet must be a discrete wavelet name such as haar, db2 or "
                            f"sym4, got {wavelet!r}")
