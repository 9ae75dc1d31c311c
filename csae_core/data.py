"""Datasets: MNIST, Fashion-MNIST, EMNIST letters (gzipped IDX) and image folders.

Everything here returns plain tensors:

* ``load_split`` -> images ``uint8 (N, 28, 28)`` upright, labels ``int64 (N,)`` 0-based.
* ``to_float_images`` -> ``float32 (N, C, size, size)`` in [0, 1], zero-padded
  28 -> 32 as in the paper ("we padded the training MNIST and FashionMNIST images
  to 32 x 32").
* ``ImageFolderDataset`` -> ``float32 (C, size, size)`` per item, for faces at
  3 x 128 x 128 (the paper's FaceScrub setting) or any other folder of images.

Local files are validated by structure (magic, dims, counts, label range), not by
checksum: the shared development copies are recompressed, so their gz checksums
differ from the official ones. Downloads are verified against the official MD5s
(the ones torchvision uses). Problems raise ``CSAEError`` naming the file and the fix.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .errors import CSAEError

PROJECT_ROOT = Path(__file__).resolve().parents[1]
ENV_VAR = "CSAE_DATA_DIR"
IMAGE_MAGIC = 2051  # IDX: 0x00000803 = unsigned byte, 3 dims
LABEL_MAGIC = 2049  # IDX: 0x00000801 = unsigned byte, 1 dim
IMAGE_SIZE = 28

Progress = Callable[[int, "int | None"], None]


@dataclass(frozen=True)
class Download:
    """One official file: tried at each URL in turn, verified by MD5.

    ``members`` maps archive members to local file names when the download is a
    zip we only extract from (EMNIST); empty means the file itself is kept.
    """

    filename: str
    urls: tuple[str, ...]
    md5: str
    members: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class DatasetSpec:
    name: str  # key in DATASETS and in `python -m csae_core data download NAME`
    title: str  # for messages
    folder: str  # sub-folder of the data root
    class_names: tuple[str, ...]
    files: dict[str, tuple[str, str]]  # split -> (images file, labels file)
    downloads: tuple[Download, ...]
    transposed: bool = False  # EMNIST stores images transposed
    label_offset: int = 0  # EMNIST labels are 1..26
    # Splits a folder may lack and still count as this dataset (not official files).
    optional_splits: tuple[str, ...] = field(default=())

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def urls(self) -> dict[str, tuple[str, ...]]:
        return {d.filename: d.urls for d in self.downloads}

    @property
    def md5s(self) -> dict[str, str]:
        return {d.filename: d.md5 for d in self.downloads}


def _idx_files(prefix: str = "") -> dict[str, tuple[str, str]]:
    return {
        split: (f"{prefix}{stem}-images-idx3-ubyte.gz", f"{prefix}{stem}-labels-idx1-ubyte.gz")
        for split, stem in (("train", "train"), ("test", "t10k"))
    }


# URLs and MD5s as in torchvision/datasets/mnist.py (MNIST, FashionMNIST, EMNIST).
_MNIST_MIRROR = "https://ossci-datasets.s3.amazonaws.com/mnist/"
_FASHION_MIRROR = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
_EMNIST_URLS = (
    "https://biometrics.nist.gov/cs_links/EMNIST/gzip.zip",
    "https://www.itl.nist.gov/iaui/vip/cs_links/EMNIST/gzip.zip",  # torchvision's newer URL
)
_EMNIST_FILES = {
    "test": ("emnist-letters-test-images-idx3-ubyte.gz", "emnist-letters-test-labels-idx1-ubyte.gz"),
    # Not an official file: one test image per letter, written by download_dataset.
    "one-per-class": (
        "emnist-letters-one-per-class-images-idx3-ubyte.gz",
        "emnist-letters-one-per-class-labels-idx1-ubyte.gz",
    ),
}

DATASETS: dict[str, DatasetSpec] = {
    "mnist": DatasetSpec(
        name="mnist",
        title="MNIST",
        folder="mnist",
        class_names=tuple(str(d) for d in range(10)),
        files=_idx_files(),
        downloads=tuple(
            Download(f, (_MNIST_MIRROR + f,), md5)
            for f, md5 in (
                ("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
                ("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432"),
                ("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3"),
                ("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c"),
            )
        ),
    ),
    "fashion-mnist": DatasetSpec(
        name="fashion-mnist",
        title="Fashion-MNIST",
        folder="fashion-mnist",
        class_names=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                     "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
        files=_idx_files(),
        downloads=tuple(
            Download(f, (_FASHION_MIRROR + f,), md5)
            for f, md5 in (
                ("train-images-idx3-ubyte.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
                ("train-labels-idx1-ubyte.gz", "25c81989df183df01b3e8a0aad5dffbe"),
                ("t10k-images-idx3-ubyte.gz", "bef4ecab320f06d8554ea6380940ec79"),
                ("t10k-labels-idx1-ubyte.gz", "bb300cfdad3c16e7a12a480ee83cd310"),
            )
        ),
    ),
    "emnist-letters": DatasetSpec(
        name="emnist-letters",
        title="EMNIST letters",
        folder="emnist-letters",
        class_names=tuple("abcdefghijklmnopqrstuvwxyz"),
        files=_EMNIST_FILES,
        downloads=(
            Download("gzip.zip", _EMNIST_URLS, "58c8d27c78d21e728a6bc7b3cc06412e",
                     members=tuple(("gzip/" + f, f) for f in _EMNIST_FILES["test"])),
        ),
        transposed=True,
        label_offset=1,
        optional_splits=("one-per-class",),
    ),
}


def _spec(name: str) -> DatasetSpec:
    try:
        return DATASETS[name]
    except KeyError:
        raise CSAEError(f"Unknown dataset {name!r}. Fix: use one of {', '.join(DATASETS)}.") from None


def _fix(spec: DatasetSpec) -> str:
    return (f"Fix: run `python -m csae_core data download {spec.name}`, or pass --data-dir / "
            f"set {ENV_VAR} to a folder that holds {spec.folder}/.")


# ---------------------------------------------------------------- locating files

def _forced_root(data_dir: str | Path | None) -> Path | None:
    """The explicit argument, else the env var: used even when empty, so errors name it."""
    if data_dir is not None:
        return Path(data_dir).expanduser()
    env = os.environ.get(ENV_VAR, "").strip()
    return Path(env).expanduser() if env else None


def _search_roots(dataset: str | None) -> list[Path]:
    """Automatic candidates in priority order: ./data, then the shared datasets."""
    roots = [Path.cwd() / "data",
             PROJECT_ROOT.parent / "shared" / "datasets",
             Path.cwd().parent / "shared" / "datasets"]
    if dataset in (None, "fashion-mnist"):
        roots.append(Path("/usr/share/datasets"))  # Debian package dataset-fashion-mnist
    unique: list[Path] = []
    for r in roots:
        if r.resolve() not in [u.resolve() for u in unique]:
            unique.append(r)
    return unique


def _has_dataset(folder: Path, spec: DatasetSpec) -> bool:
    """A folder counts if it holds both files of every non-optional split."""
    return all((folder / f).is_file()
               for split, pair in spec.files.items() if split not in spec.optional_splits
               for f in pair)


def find_dataset_dir(name: str, data_dir: str | Path | None = None) -> Path | None:
    """The folder holding dataset ``name``'s files, or None when none is found."""
    spec = _spec(name)
    forced = _forced_root(data_dir)
    if forced is not None:
        # Also accept a root that is itself the dataset folder (files flat inside it).
        for folder in (forced / spec.folder, forced):
            if _has_dataset(folder, spec):
                return folder
        return None
    for root in _search_roots(name):
        if _has_dataset(root / spec.folder, spec):
            return root / spec.folder
    return None


def resolve_data_dir(data_dir: str | Path | None = None, dataset: str | None = None) -> Path:
    """The data root: ``data_dir``, else $CSAE_DATA_DIR, else ./data, else ../shared/datasets.

    The explicit argument and the env var win even when they hold nothing (so an error
    names them). Otherwise a root counts only if it holds ``dataset``'s folder with its
    files (any dataset when ``dataset`` is None); with none found, ./data (where
    ``download_dataset`` writes) is returned.
    """
    forced = _forced_root(data_dir)
    if forced is not None:
        return forced
    names = [dataset] if dataset is not None else list(DATASETS)
    for root in _search_roots(dataset):
        if any(_has_dataset(root / DATASETS[n].folder, DATASETS[n]) for n in names if n in DATASETS):
            return root
    return Path.cwd() / "data"


def _split_paths(name: str, split: str, data_dir: str | Path | None) -> tuple[Path, Path]:
    """Paths of the split's (images, labels) files; CSAEError if missing."""
    spec = _spec(name)
    if split not in spec.files:
        raise CSAEError(f"{spec.title} has no split {split!r}. Fix: use one of {', '.join(spec.files)}.")
    folder = find_dataset_dir(name, data_dir)
    if folder is None:
        forced = _forced_root(data_dir)
        searched = [forced / spec.folder] if forced is not None else \
            [r / spec.folder for r in _search_roots(name)]
        raise CSAEError(f"{spec.title} not found: no complete {spec.folder}/ folder in "
                        f"{', '.join(str(s) for s in searched)}. {_fix(spec)}")
    paths = tuple(folder / f for f in spec.files[split])
    for p in paths:
        if not p.is_file():
            raise CSAEError(f"{spec.title} file {p} is missing. {_fix(spec)}")
    return paths  # type: ignore[return-value]


# ---------------------------------------------------------------- parsing IDX

def _read_idx(path: Path, magic: int, spec: DatasetSpec) -> np.ndarray:
    """Parse a gzipped IDX file: images -> uint8 (N, 28, 28), labels -> uint8 (N,)."""
    fix = (f"Fix: delete it and run `python -m csae_core data download {spec.name}` "
           f"(or point --data-dir / {ENV_VAR} at a good copy).")
    bad = f"{spec.title} file {path}"
    try:
        raw = gzip.decompress(path.read_bytes())
    except (OSError, EOFError, zlib.error) as e:  # BadGzipFile is an OSError
        raise CSAEError(f"{bad} is not a readable gzip file (damaged or truncated: {e}). {fix}") from None
    header = 16 if magic == IMAGE_MAGIC else 8
    if len(raw) < header:
        raise CSAEError(f"{bad} is truncated (only {len(raw)} bytes, no IDX header). {fix}")
    dims = np.frombuffer(raw, dtype=">u4", count=header // 4)
    if int(dims[0]) != magic:
        kind = "images" if magic == IMAGE_MAGIC else "labels"
        raise CSAEError(f"{bad} has magic number {int(dims[0])}, expected {magic} "
                        f"for an IDX {kind} file. {fix}")
    n = int(dims[1])
    if magic == IMAGE_MAGIC and (int(dims[2]), int(dims[3])) != (IMAGE_SIZE, IMAGE_SIZE):
        raise CSAEError(f"{bad} holds {int(dims[2])}x{int(dims[3])} images, expected 28x28. {fix}")
    item = IMAGE_SIZE * IMAGE_SIZE if magic == IMAGE_MAGIC else 1
    expected = header + n * item
    if len(raw) != expected:
        what = "truncated" if len(raw) < expected else "too long"
        raise CSAEError(f"{bad} is {what} (expected {expected} bytes for {n} items, "
                        f"got {len(raw)}). {fix}")
    arr = np.frombuffer(raw, dtype=np.uint8, offset=header)
    return arr.reshape(n, IMAGE_SIZE, IMAGE_SIZE) if magic == IMAGE_MAGIC else arr


@functools.lru_cache(maxsize=8)
def _load_cached(name: str, images: str, labels: str, _stamp: tuple) -> tuple[np.ndarray, np.ndarray]:
    """Parsed, validated (images (N,28,28) upright, labels int64 (N,) 0-based), read-only.

    ``_stamp`` (mtimes and sizes) is part of the key so a replaced file is re-read.
    """
    spec = DATASETS[name]
    img = _read_idx(Path(images), IMAGE_MAGIC, spec)
    lab = _read_idx(Path(labels), LABEL_MAGIC, spec)
    if len(img) != len(lab):
        raise CSAEError(f"{spec.title} files {images} ({len(img)} images) and {labels} "
                        f"({len(lab)} labels) do not match. Fix: delete both and run "
                        f"`python -m csae_core data download {name}`.")
    lab = lab.astype(np.int64) - spec.label_offset
    if len(lab) and (lab.min() < 0 or lab.max() >= spec.num_classes):
        lo, hi = int(lab.min()) + spec.label_offset, int(lab.max()) + spec.label_offset
        raise CSAEError(f"{spec.title} file {labels} has labels {lo}..{hi}, outside "
                        f"{spec.label_offset}..{spec.num_classes - 1 + spec.label_offset}. "
                        f"Fix: delete it and run `python -m csae_core data download {name}`.")
    if spec.transposed:
        img = np.ascontiguousarray(img.transpose(0, 2, 1))
    img.setflags(write=False)
    lab.setflags(write=False)
    return img, lab


def _load_paths(name: str, images: Path, labels: Path) -> tuple[np.ndarray, np.ndarray]:
    stamp = tuple((p.stat().st_mtime_ns, p.stat().st_size) for p in (images, labels))
    return _load_cached(name, str(images.resolve()), str(labels.resolve()), stamp)


def load_split(name: str, split: str, data_dir: str | Path | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Load one split: images ``uint8 (N, 28, 28)`` upright, labels ``int64 (N,)`` 0-based.

    ``split`` is "train" or "test" (emnist-letters: "test" and "one-per-class").
    EMNIST images are transposed back to upright and its labels shifted to a=0 .. z=25.
    Parsed arrays are cached in-process; the returned tensors are fresh copies, so
    callers may modify them.
    """
    img, lab = _load_paths(name, *_split_paths(name, split, data_dir))
    return torch.from_numpy(img.copy()), torch.from_numpy(lab.copy())


def present_classes(name: str, split: str, data_dir: str | Path | None = None) -> list[int]:
    """Sorted 0-based class indices that occur in the split (partial copies hold fewer)."""
    _, lab = _load_paths(name, *_split_paths(name, split, data_dir))
    return [int(c) for c in np.unique(lab)]


def to_float_images(images_uint8: torch.Tensor, size: int = 32) -> torch.Tensor:
    """``uint8 (N, H, W)`` or ``(N, C, H, W)`` -> ``float32 (N, C, size, size)`` in [0, 1].

    Images smaller than ``size`` are zero-padded centrally (28 -> 32 pads 2 on each
    side, as in the paper); images already ``size`` x ``size`` are left as they are.
    Float input is taken to be in [0, 1] already.
    """
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


# ---------------------------------------------------------------- checking

def check_datasets(data_dir: str | Path | None = None) -> list[dict]:
    """Validate every dataset/split by structure; never raises for a bad or missing file.

    One row per dataset/split: ``{dataset, split, path, ok, images, problem, classes}``
    (``classes``: names of the classes present, so a partial split is visible).
    """
    rows = []
    for name, spec in DATASETS.items():
        folder = find_dataset_dir(name, data_dir)
        for split, (img_file, lab_file) in spec.files.items():
            row = {"dataset": name, "split": split, "path": None, "ok": False,
                   "images": 0, "problem": None, "classes": []}
            rows.append(row)
            try:
                images, labels = _split_paths(name, split, data_dir)
                row["path"] = str(images)
                img, lab = _load_paths(name, images, labels)
            except CSAEError as e:
                row["problem"] = str(e)
                if folder is not None:
                    row["path"] = str(folder / img_file)
                continue
            row.update(ok=True, images=len(img),
                       classes=[spec.class_names[c] for c in np.unique(lab)])
    return rows


# ---------------------------------------------------------------- downloading

def _fetch(url: str, dest: Path, progress: Progress | None) -> str:
    """Stream ``url`` into ``dest``; returns the MD5 of what was written."""
    md5 = hashlib.md5()
    # NIST answers 403 to urllib's default User-Agent.
    req = urllib.request.Request(url, headers={"User-Agent": "Mozilla/5.0 (compatible; csae-explorer)"})
    with urllib.request.urlopen(req, timeout=60) as resp, open(dest, "wb") as out:
        total = resp.headers.get("Content-Length")
        total = int(total) if total and total.isdigit() else None
        done = 0
        while chunk := resp.read(1 << 20):
            out.write(chunk)
            md5.update(chunk)
            done += len(chunk)
            if progress is not None:
                progress(done, total)
    return md5.hexdigest()


def _md5_file(path: Path) -> str:
    md5 = hashlib.md5()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            md5.update(chunk)
    return md5.hexdigest()


def _download_one(d: Download, spec: DatasetSpec, folder: Path, progress: Progress | None) -> Path:
    """Download ``d`` into ``folder`` atomically (temp file, verify MD5, os.replace)."""
    target = folder / d.filename
    if target.is_file() and _md5_file(target) == d.md5:
        return target
    fd, tmp_name = tempfile.mkstemp(prefix=f".{d.filename}.", suffix=".part", dir=folder)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        errors = []
        for url in d.urls:
            try:
                got = _fetch(url, tmp, progress)
            except (urllib.error.URLError, OSError, ValueError) as e:
                errors.append(f"{url}: {getattr(e, 'reason', e)}")
                continue
            if got != d.md5:
                raise CSAEError(f"Download of {url} failed its checksum (MD5 {got}, expected {d.md5}); "
                                f"nothing was written. Fix: retry later, or download {d.filename} by "
                                f"hand from the official site into {folder}.")
            os.replace(tmp, target)
            return target
        raise CSAEError(f"Could not download {spec.title} ({'; '.join(errors)}). Fix: check the "
                        f"network, or place the files by hand in {folder}, or point --data-dir / "
                        f"{ENV_VAR} at an existing copy.")
    finally:
        tmp.unlink(missing_ok=True)


def _write_idx_gz(path: Path, array: np.ndarray, magic: int) -> None:
    """Write a gzipped IDX file atomically. ``array``: uint8 (N, 28, 28) or (N,)."""
    header = np.array([magic, *array.shape], dtype=">u4").tobytes()
    tmp = path.with_name(f".{path.name}.part")
    with gzip.open(tmp, "wb") as f:
        f.write(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())
    os.replace(tmp, path)


def _extract_emnist(zip_path: Path, d: Download, spec: DatasetSpec, folder: Path) -> None:
    """Extract the letters files from NIST's gzip.zip, then write the one-per-class split."""
    try:
        with zipfile.ZipFile(zip_path) as zf:
            for member, local in d.members:
                tmp = folder / f".{local}.part"
                with zf.open(member) as src, open(tmp, "wb") as dst:
                    shutil.copyfileobj(src, dst)
                os.replace(tmp, folder / local)
    except (zipfile.BadZipFile, KeyError, OSError) as e:
        raise CSAEError(f"Could not extract {spec.title} from {zip_path} ({e}). "
                        f"Fix: delete it and run `python -m csae_core data download {spec.name}`.") from None
    # One test image per letter (the first of each class), in the stored (transposed) layout.
    img_file, lab_file = spec.files["test"]
    img = _read_idx(folder / img_file, IMAGE_MAGIC, spec)
    lab = _read_idx(folder / lab_file, LABEL_MAGIC, spec)
    classes, first = np.unique(lab, return_index=True)
    one_img, one_lab = spec.files["one-per-class"]
    _write_idx_gz(folder / one_img, img[first], IMAGE_MAGIC)
    _write_idx_gz(folder / one_lab, classes.astype(np.uint8), LABEL_MAGIC)


def download_dataset(name: str, data_dir: str | Path | None = None,
                     progress: Progress | None = None) -> Path:
    """Fetch the official files of ``name`` into ``<root>/<folder>/``; returns that folder.

    ``root`` is ``data_dir``, else $CSAE_DATA_DIR, else ./data. Each file is checked
    against its official MD5 before it replaces anything; files already present with
    the right MD5 are kept. ``progress(bytes_done, bytes_total_or_None)`` is called per
    chunk of the file being downloaded (it restarts at 0 for each file).
    """
    spec = _spec(name)
    root = _forced_root(data_dir) or Path("data")
    folder = root / spec.folder
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CSAEError(f"Cannot create {folder} ({e}). Fix: pass a writable --data-dir.") from None
    for d in spec.downloads:
        if d.members and all((folder / local).is_file() for _, local in d.members):
            continue  # the archive's files are already extracted
        path = _download_one(d, spec, folder, progress)
        if d.members:
            _extract_emnist(path, d, spec, folder)
            path.unlink()  # the 0.5 GB archive is no longer needed
    _load_cached.cache_clear()
    return folder


# ---------------------------------------------------------------- image folders

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


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
        return torch.from_numpy(self._read(index).astype(np.float32) / 255.0), self.samples[index][1]

    def load_all(self, progress: Progress | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """All images ``uint8 (N, C, size, size)`` and labels ``int64 (N,)``."""
        images = np.empty((len(self), self.channels, self.size, self.size), dtype=np.uint8)
        for i in range(len(self)):
            images[i] = self._read(i)
            if progress is not None:
                progress(i + 1, len(self))
        labels = torch.tensor([label for _, label in self.samples], dtype=torch.int64)
        return torch.from_numpy(images), labels
