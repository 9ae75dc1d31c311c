"""Datasets, one import away: a facade over the modules that each do one job.

* ``datasets``: the registry (``DATASETS``) and locating files (``find_dataset_dir``, ``resolve_data_dir``).
* ``idx``: gzipped IDX parsing with structural checks and a size cap; ``load_split`` ->
  images ``uint8 (N, 28, 28)`` upright, labels ``int64 (N,)`` 0-based; ``check_datasets``.
* ``download``: ``download_dataset`` / ``ensure_dataset`` (on demand, like torchvision's
  ``download=True``), official files or a ``CSAE_DATA_URL`` mirror, verified, atomic, locked.
* ``image_folder``: ``ImageFolderDataset`` -> ``float32 (C, size, size)`` per item.

``to_float_images`` -> ``float32 (N, C, size, size)`` in [0, 1], zero-padded 28 -> 32 as in the
paper ("we padded the training MNIST and FashionMNIST images to 32 x 32").
Torch is imported only when a function that returns tensors is used.
"""
from __future__ import annotations

from .datasets import (DATASETS, ENV_VAR, PROJECT_ROOT, DatasetSpec, Download, default_download_root,
                       find_dataset_dir, resolve_data_dir)
from .download import SHA256_VAR, URL_VAR, download_dataset, ensure_dataset, read_sha256sums, tqdm_progress
from .idx import (IMAGE_MAGIC, IMAGE_SIZE, LABEL_MAGIC, MAX_ITEMS, check_datasets, load_split,
                  present_classes, read_idx, write_idx_gz)

__all__ = ["DATASETS", "ENV_VAR", "PROJECT_ROOT", "DatasetSpec", "Download", "default_download_root",
           "find_dataset_dir", "resolve_data_dir", "URL_VAR", "SHA256_VAR", "download_dataset",
           "ensure_dataset", "read_sha256sums", "tqdm_progress", "IMAGE_MAGIC", "LABEL_MAGIC", "IMAGE_SIZE",
           "MAX_ITEMS", "check_datasets", "load_split", "present_classes", "read_idx", "write_idx_gz",
           "ImageFolderDataset", "IMAGE_EXTENSIONS", "to_float_images"]

_LAZY = {"ImageFolderDataset": "image_folder", "IMAGE_EXTENSIONS": "image_folder"}


def __getattr__(name: str):  # PEP 562: image folders import torch, so load them on first use
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __package__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def to_float_images(images_uint8, size: int = 32):
    """``uint8 (N, H, W)`` or ``(N, C, H, W)`` -> ``float32 (N, C, size, size)`` in [0, 1].

    Images smaller than ``size`` are zero-padded centrally (28 -> 32 pads 2 on each
    side, as in the paper); images already ``size`` x ``size`` are left as they are.
    Float input is taken to be in [0, 1] already.
    """
    import torch

    x = images_uint8
    if x.dim() == 3:
        x = x.unsqueeze(1)
    if x.dim() != 4:
        raise ValueError(f"expected (N, H, W) or (N, C, H, W) images, got shape {tuple(x.shape)}")
    x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
    h, w = x.shape[-2:]
    if h > size or w > size:
        raise ValueError(f"images are {h}x{w}, larger than the target size {size}; resize them instead")
    top, left = (size - h) // 2, (size - w) // 2
    if (h, w) != (size, size):
        x = torch.nn.functional.pad(x, (left, size - w - left, top, size - h - top))
    return x.contiguous()
