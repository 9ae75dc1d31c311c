"""The models' view of images, in one place: uint8 pictures in, the float tensor a model takes out,
and back.

* ``pad``: uint8 (or float) pictures (N, H, W) or (N, C, H, W), numpy or torch, zero-padded centrally
  to size x size (28 -> 32 pads 2 px on each side: "we padded the training MNIST and FashionMNIST
  images to 32 x 32"). Same type and dtype out.
* ``to_model_input``: pictures -> float32 (N, C, size, size) in [0, 1], padded: what every model takes.
* ``to_uint8``: a model's float output (N, C, H, W) -> uint8 numpy (N, H, W), or (N, H, W, C) in colour.
* ``load_dataset_tensors``: a whole dataset as padded uint8 tensors (training keeps these on the
  device and converts one batch at a time; the app keeps them as uint8 arrays).

Torch is imported only by the functions that make or take tensors.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import CSAEError

__all__ = ["MODEL_SIZE", "pad", "to_float", "to_model_input", "to_uint8", "load_dataset_tensors"]

MODEL_SIZE = 32  # the paper's input size for MNIST and Fashion-MNIST (28 px images, padded)


def pad(images, size: int = MODEL_SIZE):
    """Zero-pad pictures (..., H, W) centrally to (..., size, size); numpy or torch in, the same out.
    Pictures already size x size are returned as they are."""
    h, w = images.shape[-2:]
    if h > size or w > size:
        raise CSAEError(f"images are {h}x{w}, larger than the model's {size}x{size} input. "
                        f"Fix: resize them first, or use a model trained at that size.")
    if (h, w) == (size, size):
        return images
    top, left = (size - h) // 2, (size - w) // 2
    if isinstance(images, np.ndarray):
        return np.pad(images, [(0, 0)] * (images.ndim - 2) + [(top, size - h - top), (left, size - w - left)])
    import torch.nn.functional as F

    return F.pad(images, (left, size - w - left, top, size - h - top))


def to_model_input(images, size: int = MODEL_SIZE):
    """uint8 pictures (N, H, W) or (N, C, H, W), numpy or torch -> float32 tensor (N, C, size, size) in [0, 1].

    Float input is taken to be in [0, 1] already. Padding happens on the uint8 pictures (4x less memory).
    """
    import torch

    if not isinstance(images, torch.Tensor):
        images = np.asarray(images)
        if not images.flags.writeable:  # a shared read-only array (the app's cached test images)
            images = images.copy()  # uint8: a quarter of the float tensor made from it below
    x = torch.as_tensor(images)
    if x.dim() == 3:
        x = x[:, None]  # (N, 1, H, W)
    if x.dim() != 4:
        raise CSAEError(f"expected images (N, H, W) or (N, C, H, W), got shape {tuple(x.shape)}")
    return to_float(pad(x, size)).contiguous()


def to_float(x):
    """uint8 tensor -> float32 in [0, 1] (x / 255); a float tensor is taken to be in [0, 1] already.
    The one place pictures become model floats: training, evaluation and the app convert here, per batch."""
    import torch

    return x.float().div_(255) if x.dtype == torch.uint8 else x.float()


def to_uint8(x) -> np.ndarray:
    """A model's float images (N, C, H, W) in [0, 1] -> uint8 numpy (N, H, W) for C = 1, else (N, H, W, C)."""
    u = (x.detach().float().clamp(0, 1) * 255).round().byte().cpu()
    return u[:, 0].numpy() if u.shape[1] == 1 else u.permute(0, 2, 3, 1).numpy()


def load_dataset_tensors(name: str, data_dir=None, image_size: int = 0, seed: int = 0, test: bool = True):
    """((train uint8 (N, C, S, S), labels), (test images, labels), class names) of dataset `name`.
    test=False: the test split is not read at all (returned as None), for runs that must never see it.

    MNIST-like datasets (data.DATASETS) are padded to `image_size` (0: MODEL_SIZE); any other name is
    a folder of class sub-folders, read at `image_size` (0: 128) in colour, with train/ and test/
    inside or else split 9:1 (deterministically from `seed`).
    """
    import torch

    from . import data

    if name in data.DATASETS:
        xs = {}
        for split in ("train", "test") if test else ("train",):
            images, labels = data.load_split(name, split, data_dir)
            xs[split] = (pad(images[:, None], image_size or MODEL_SIZE), labels)
        return xs["train"], xs.get("test"), list(data.DATASETS[name].class_names)
    if not str(name).strip():  # Path("") is ".": the current folder would be read as an image folder
        raise CSAEError("no dataset given (an empty name). Fix: --dataset mnist, fashion-mnist or a folder of "
                        "class sub-folders.")
    root = Path(name)
    if not root.is_dir():
        raise CSAEError(f"unknown dataset {name!r}: use mnist, fashion-mnist or a folder of class sub-folders")
    size = image_size or 128
    if (root / "train").is_dir() and (root / "test").is_dir():
        tr = data.ImageFolderDataset(root / "train", size=size, channels=3)
        te = data.ImageFolderDataset(root / "test", size=size, channels=3).load_all() if test else None
        return tr.load_all(), te, list(tr.class_names)
    ds = data.ImageFolderDataset(root, size=size, channels=3)
    if len(ds) < 2:
        raise CSAEError(f"image folder {root} holds {len(ds)} image(s): training needs at least 2 (9 of 10 to "
                        f"train on, 1 of 10 to test). Fix: add images, or give train/ and test/ sub-folders.")
    images, labels = ds.load_all()
    perm = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    cut = max(1, len(perm) // 10)  # hold out 10% for testing, deterministically
    held_out = (images[perm[:cut]], labels[perm[:cut]]) if test else None
    return (images[perm[cut:]], labels[perm[cut:]]), held_out, list(ds.class_names)
