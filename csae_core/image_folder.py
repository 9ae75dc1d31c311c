"""Folders of images, one sub-folder per class (faces at 3 x 128 x 128, as in the paper's FaceScrub setting)."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .errors import CSAEError
from .preprocess import to_float

__all__ = ["IMAGE_EXTENSIONS", "ImageFolderDataset"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")

Progress = Callable[[int, "int | None"], None]


class ImageFolderDataset(torch.utils.data.Dataset):
    """Images in ``root/<class_name>/*.png|jpg|jpeg|bmp|webp``, any size, RGB or grey.

    Each item is ``(float32 (channels, size, size) in [0, 1], label int)``; images are
    resized to ``size`` x ``size`` (faces: 3 x 128 x 128 as in the paper). Classes are
    the sub-folder names, sorted; labels index ``class_names``.
    """

    def __init__(self, root: str | Path, size: int = 128, channels: int = 3):
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {channels}")
        self.root, self.size, self.channels = Path(root), int(size), channels
        if not self.root.is_dir():
            raise CSAEError(f"Image folder {self.root} does not exist. Fix: pass a folder that "
                            f"holds one sub-folder of images per class.")
        self.class_names = sorted(p.name for p in self.root.iterdir()
                                  if p.is_dir() and not p.name.startswith("."))
        self.samples: list[tuple[Path, int]] = [
            (f, label)
            for label, cls in enumerate(self.class_names)
            for f in sorted((self.root / cls).iterdir())
            if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS
        ]
        if not self.samples:
            raise CSAEError(f"Image folder {self.root} holds no images. Fix: put images "
                            f"({', '.join(IMAGE_EXTENSIONS)}) in one sub-folder per class, "
                            f"e.g. {self.root}/<class_name>/0001.png.")

    def __len__(self) -> int:
        return len(self.samples)

    def _read(self, index: int) -> np.ndarray:
        """uint8 (C, size, size)."""
        from PIL import Image, UnidentifiedImageError

        path = self.samples[index][0]
        try:
            with Image.open(path) as im:
                im = im.convert("L" if self.channels == 1 else "RGB")
                im = im.resize((self.size, self.size), Image.Resampling.BILINEAR)
                arr = np.asarray(im, dtype=np.uint8)
        except (UnidentifiedImageError, OSError, ValueError) as e:
            raise CSAEError(f"Cannot read image {path} ({e}). Fix: delete or replace that file.") from None
        return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return to_float(torch.tensor(self._read(index))), self.samples[index][1]  # a copy: PIL arrays are read-only

    def load_all(self, progress: Progress | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """All images ``uint8 (N, C, size, size)`` and labels ``int64 (N,)``."""
        images = np.empty((len(self), self.channels, self.size, self.size), dtype=np.uint8)
        for i in range(len(self)):
            images[i] = self._read(i)
            if progress is not None:
                progress(i + 1, len(self))
        labels = torch.tensor([label for _, label in self.samples], dtype=torch.int64)
        return torch.from_numpy(images), labels
