"""Datasets, one import away: a facade over the modules that each do one job.

* ``datasets``: the registry (``DATASETS``) and locating files (``find_dataset_dir``, ``resolve_data_dir``).
* ``idx``: gzipped IDX parsing with structural checks and a size cap; ``load_split`` ->
  images ``uint8 (N, 28, 28)`` upright, labels ``int64 (N,)`` 0-based; ``check_datasets``.
* ``download``: ``download_dataset`` / ``ensure_dataset`` (on demand, like torchvision's
  ``download=True``), official files or a ``CSAE_DATA_URL`` mirror, verified, atomic, locked.
* ``image_folder``: ``ImageFolderDataset`` -> ``float32 (C, size, size)`` per item.

Images become model inputs (zero-padded 28 -> 32, floats in [0, 1]) in ``preprocess``.
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
           "ImageFolderDataset", "IMAGE_EXTENSIONS"]

_LAZY = {"ImageFolderDataset": "image_folder", "IMAGE_EXTENSIONS": "image_folder"}


def __getattr__(name: str):  # PEP 562: image folders import torch, so load them on first use
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __package__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
