"""Gzipped IDX files: parsing with structural checks, a size cap, cached loading, and `check_datasets`.

Local files are validated by structure (magic, dims, counts, label range), not by checksum: the
shared development copies are recompressed, so their gz checksums differ from the official ones.
Reading never inflates more than the header's shape implies (plus one byte to notice extra data),
and the shape itself is capped, so a gzip bomb is one clear ``CSAEError`` naming the file.
"""
from __future__ import annotations

import functools
import gzip
import os
import zlib
from pathlib import Path

import numpy as np

from .datasets import DATASETS, ENV_VAR, DatasetSpec, find_dataset_dir, split_paths
from .errors import CSAEError

__all__ = ["IMAGE_MAGIC", "LABEL_MAGIC", "IMAGE_SIZE", "MAX_ITEMS", "read_idx", "idx_count", "write_idx_gz",
           "load_split", "present_classes", "check_datasets"]

IMAGE_MAGIC = 2051  # IDX: 0x00000803 = unsigned byte, 3 dims
LABEL_MAGIC = 2049  # IDX: 0x00000801 = unsigned byte, 1 dim
IMAGE_SIZE = 28
MAX_ITEMS = 1_000_000  # EMNIST's largest split (byclass train) has 697,932 images: 0.78 GB at most


def _fix(spec: DatasetSpec) -> str:
    return (f"Fix: delete it and run `python -m csae_core data download {spec.name}` "
            f"(or point --data-dir / {ENV_VAR} at a good copy).")


def _header(f, path: Path, magic: int, spec: DatasetSpec) -> tuple[int, int, int]:
    """(N, bytes per item, header bytes) from an open gzip stream, after checking magic, dims and N."""
    bad = f"{spec.title} file {path}"
    header = 16 if magic == IMAGE_MAGIC else 8
    head = f.read(header)
    if len(head) < header:
        raise CSAEError(f"{bad} is truncated (only {len(head)} bytes, no IDX header). {_fix(spec)}")
    dims = np.frombuffer(head, dtype=">u4")
    if int(dims[0]) != magic:
        kind = "images" if magic == IMAGE_MAGIC else "labels"
        raise CSAEError(f"{bad} has magic number {int(dims[0])}, expected {magic} "
                        f"for an IDX {kind} file. {_fix(spec)}")
    n = int(dims[1])
    if magic == IMAGE_MAGIC and (int(dims[2]), int(dims[3])) != (IMAGE_SIZE, IMAGE_SIZE):
        raise CSAEError(f"{bad} holds {int(dims[2])}x{int(dims[3])} images, expected 28x28. {_fix(spec)}")
    if n > MAX_ITEMS:
        raise CSAEError(f"{bad} claims {n} items, more than the {MAX_ITEMS} we accept "
                        f"(the largest EMNIST split has 697,932). {_fix(spec)}")
    return n, (IMAGE_SIZE * IMAGE_SIZE if magic == IMAGE_MAGIC else 1), header


def _open_error(e: Exception, path: Path, spec: DatasetSpec) -> CSAEError:
    if isinstance(e, MemoryError):
        return CSAEError(f"{spec.title} file {path} is too large to read into memory. {_fix(spec)}")
    return CSAEError(f"{spec.title} file {path} is not a readable gzip file (damaged or truncated: {e}). "
                     f"{_fix(spec)}")


def read_idx(path: Path, magic: int, spec: DatasetSpec) -> np.ndarray:
    """Parse a gzipped IDX file: images -> uint8 (N, 28, 28), labels -> uint8 (N,).

    Inflates at most the header's ``N * 28 * 28`` (or ``N``) bytes + 1, with ``N <= MAX_ITEMS``.
    """
    try:
        with gzip.open(path, "rb") as f:
            n, item, header = _header(f, path, magic, spec)
            body = f.read(n * item + 1)  # one byte more reveals extra data; never inflates beyond it
    except (OSError, EOFError, zlib.error, MemoryError) as e:  # BadGzipFile is an OSError
        raise _open_error(e, path, spec) from None
    if len(body) != n * item:
        if len(body) < n * item:
            what, got = "truncated", f"got {header + len(body)}"
        else:
            what, got = "too long", "it expands beyond that"
        raise CSAEError(f"{spec.title} file {path} is {what} (expected {header + n * item} bytes for {n} items, "
                        f"{got}). {_fix(spec)}")
    arr = np.frombuffer(body, dtype=np.uint8)
    return arr.reshape(n, IMAGE_SIZE, IMAGE_SIZE) if magic == IMAGE_MAGIC else arr


def idx_count(path: Path, magic: int, spec: DatasetSpec) -> int:
    """N from a gzipped IDX file's header (magic, dims and N checked; the payload is not inflated)."""
    try:
        with gzip.open(path, "rb") as f:
            return _header(f, path, magic, spec)[0]
    except (OSError, EOFError, zlib.error, MemoryError) as e:
        raise _open_error(e, path, spec) from None


def _checked_labels(spec: DatasetSpec, images: str, labels: str, n_images: int, lab: np.ndarray) -> np.ndarray:
    """Labels int64 0-based, after checking they match the image count and lie in the class range."""
    if n_images != len(lab):
        raise CSAEError(f"{spec.title} files {images} ({n_images} images) and {labels} "
                        f"({len(lab)} labels) do not match. Fix: delete both and run "
                        f"`python -m csae_core data download {spec.name}`.")
    lab = lab.astype(np.int64) - spec.label_offset
    if len(lab) and (lab.min() < 0 or lab.max() >= spec.num_classes):
        lo, hi = int(lab.min()) + spec.label_offset, int(lab.max()) + spec.label_offset
        raise CSAEError(f"{spec.title} file {labels} has labels {lo}..{hi}, outside "
                        f"{spec.label_offset}..{spec.num_classes - 1 + spec.label_offset}. "
                        f"Fix: delete it and run `python -m csae_core data download {spec.name}`.")
    return lab


def write_idx_gz(path: Path, array: np.ndarray, magic: int) -> None:
    """Write a gzipped IDX file atomically (unique temp name, then replace). ``array``: uint8 (N, 28, 28) or (N,)."""
    import tempfile

    header = np.array([magic, *array.shape], dtype=">u4").tobytes()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.fchmod(fd, 0o644)  # mkstemp gives 0600; a dataset file is readable by all
    try:
        with os.fdopen(fd, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", filename="") as f:
            f.write(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@functools.lru_cache(maxsize=8)
def _load_cached(name: str, images: str, labels: str, _stamp: tuple) -> tuple[np.ndarray, np.ndarray]:
    """Parsed, validated (images (N,28,28) upright, labels int64 (N,) 0-based), read-only.

    ``_stamp`` (mtimes and sizes) is part of the key so a replaced file is re-read.
    """
    spec = DATASETS[name]
    img = read_idx(Path(images), IMAGE_MAGIC, spec)
    lab = _checked_labels(spec, images, labels, len(img), read_idx(Path(labels), LABEL_MAGIC, spec))
    if spec.transposed:
        img = np.ascontiguousarray(img.transpose(0, 2, 1))
    img.setflags(write=False)
    lab.setflags(write=False)
    return img, lab


def clear_cache() -> None:
    _load_cached.cache_clear()


def load_paths(name: str, images: Path, labels: Path) -> tuple[np.ndarray, np.ndarray]:
    stamp = tuple((p.stat().st_mtime_ns, p.stat().st_size) for p in (images, labels))
    return _load_cached(name, str(images.resolve()), str(labels.resolve()), stamp)


def split_arrays(name: str, split: str, data_dir: str | Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The parsed (read-only) arrays of a split. A derived split that is missing (EMNIST's one-per-class,
    absent where a folder holds only the official test files) is made in memory from the test split: the
    first image of each class, as download_dataset writes it."""
    spec = DATASETS[name] if name in DATASETS else None
    if spec is not None and split in spec.optional_splits:
        folder = find_dataset_dir(name, data_dir)
        if folder is not None and not all((folder / f).is_file() for f in spec.files[split]):
            img, lab = load_paths(name, *split_paths(name, "test", data_dir))
            _, first = np.unique(lab, return_index=True)
            return img[first], lab[first]
    return load_paths(name, *split_paths(name, split, data_dir))


def load_split(name: str, split: str, data_dir: str | Path | None = None):
    """Load one split: images ``uint8 (N, 28, 28)`` upright, labels ``int64 (N,)`` 0-based (torch tensors).

    ``split`` is "train" or "test" (emnist-letters: "test" and "one-per-class").
    EMNIST images are transposed back to upright and its labels shifted to a=0 .. z=25.
    Parsed arrays are cached in-process; the returned tensors are fresh copies, so
    callers may modify them.
    """
    import torch

    img, lab = split_arrays(name, split, data_dir)
    return torch.from_numpy(img.copy()), torch.from_numpy(lab.copy())


def present_classes(name: str, split: str, data_dir: str | Path | None = None) -> list[int]:
    """Sorted 0-based class indices that occur in the split (partial copies hold fewer)."""
    _, lab = split_arrays(name, split, data_dir)
    return [int(c) for c in np.unique(lab)]


def check_datasets(data_dir: str | Path | None = None, full_splits: tuple[str, ...] | None = None) -> list[dict]:
    """Validate every dataset/split by structure; never raises for a bad or missing file.

    One row per dataset/split: ``{dataset, split, path, ok, missing, images, problem, classes, checked}``
    (``missing``: no folder holds the dataset, as opposed to a damaged file; ``classes``: names
    of the classes present, so a partial split is visible). Splits in ``full_splits`` (all when None)
    are parsed whole; the others are ``checked: "header"``: their images file's header and their
    labels whole, without inflating the images (the app, which reads only test splits, checks so).
    """
    rows = []
    for name, spec in DATASETS.items():
        folder = find_dataset_dir(name, data_dir)
        for split, (img_file, lab_file) in spec.files.items():
            full = full_splits is None or split in full_splits
            row = {"dataset": name, "split": split, "path": None, "ok": False, "missing": folder is None,
                   "images": 0, "problem": None, "classes": [], "checked": "full" if full else "header"}
            rows.append(row)
            try:
                images, labels = split_paths(name, split, data_dir)
                row["path"] = str(images)
                if full:
                    img, lab = load_paths(name, images, labels)
                else:
                    n = idx_count(images, IMAGE_MAGIC, spec)
                    lab = _checked_labels(spec, str(images), str(labels), n, read_idx(labels, LABEL_MAGIC, spec))
                    img = range(n)
            except (CSAEError, OSError, MemoryError) as e:
                row["problem"] = str(e) if isinstance(e, CSAEError) else f"{img_file}: cannot read ({e})"
                if folder is not None:
                    row["path"] = str(folder / img_file)
                    row["missing"] = split in spec.optional_splits and not (folder / img_file).exists()
                continue
            row.update(ok=True, images=len(img),
                       classes=[spec.class_names[c] for c in np.unique(lab)])
    return rows
