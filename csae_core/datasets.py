"""The dataset registry (MNIST, Fashion-MNIST, EMNIST letters) and where their files are found.

A data root holds one folder per dataset (``mnist/``, ``fashion-mnist/``, ``emnist-letters/``) with the
gzipped IDX files under their official names. Roots are tried in this order: ``--data-dir``, else
``$CSAE_DATA_DIR`` (both win even when empty, so errors name them), else ``./data``, else
``../shared/datasets``, else the project's ``data/`` (Fashion-MNIST also from Debian's ``/usr/share/datasets``).
No I/O at import.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from .errors import CSAEError

__all__ = ["PROJECT_ROOT", "ENV_VAR", "Download", "DatasetSpec", "DATASETS", "TRAINABLE", "DIGIT_LIKE_LETTERS",
           "find_dataset_dir", "resolve_data_dir", "default_download_root"]

PROJECT_ROOT = Path(__file__).resolve().parents[1]
ENV_VAR = "CSAE_DATA_DIR"


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
    folder: str  # sub-folder of the data root (and of a CSAE_DATA_URL mirror)
    class_names: tuple[str, ...]
    files: dict[str, tuple[str, str]]  # split -> (images file, labels file)
    downloads: tuple[Download, ...]
    transposed: bool = False  # EMNIST stores images transposed
    label_offset: int = 0  # EMNIST labels are 1..26
    # Splits a folder may lack and still count as this dataset (not official files).
    optional_splits: tuple[str, ...] = field(default=())
    # Classes also written like another dataset's: open-set results also report this set without them.
    lookalikes: str = ""
    openset_unknowns: tuple[str, ...] = ()  # what results/make_openset.py scores this dataset's models against
    download_size: str = ""  # what a download fetches, for the Home view's confirmation ("" : size unknown)

    @property
    def trainable(self) -> bool:
        """Has a training split: models are trained on it (the others serve as unknown images)."""
        return "train" in self.files

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def urls(self) -> dict[str, tuple[str, ...]]:
        return {d.filename: d.urls for d in self.downloads}

    @property
    def md5s(self) -> dict[str, str]:
        return {d.filename: d.md5 for d in self.downloads}

    @property
    def required_files(self) -> list[str]:
        """File names a folder must hold to count as this dataset."""
        return [f for split, pair in self.files.items() if split not in self.optional_splits for f in pair]


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
DIGIT_LIKE_LETTERS = "ilosz"  # letters also written like digits (1, 1, 0, 5, 2)
_EMNIST_FILES = {
    "test": ("emnist-letters-test-images-idx3-ubyte.gz", "emnist-letters-test-labels-idx1-ubyte.gz"),
    # Not an official file: one test image per letter, written by download_dataset.
    "one-per-class": (
        "emnist-letters-one-per-class-images-idx3-ubyte.gz",
        "emnist-letters-one-per-class-labels-idx1-ubyte.gz",
    ),
}

def _idx_dataset(name: str, title: str, mirror: str, class_names, md5s, **kw) -> DatasetSpec:
    """An MNIST-format dataset: the four official gzipped IDX files (train images, labels, test images,
    labels) under `mirror`, verified by their MD5s in that order. A new such dataset is one line here."""
    files = _idx_files()
    names = [f for pair in files.values() for f in pair]
    return DatasetSpec(name=name, title=title, folder=name, class_names=tuple(class_names), files=files,
                       downloads=tuple(Download(f, (mirror + f,), md5) for f, md5 in zip(names, md5s)), **kw)


DATASETS: dict[str, DatasetSpec] = {
    "mnist": _idx_dataset("mnist", "MNIST", _MNIST_MIRROR, [str(d) for d in range(10)], (
        "f68b3c2dcbeaaa9fbdd348bbdeb94873", "d53e105ee54ea40749a09fcbcd1e9432",
        "9fb629c4189551a2d022fa330f9573f3", "ec29112dd5afa0611ce80d1b7f02629c"),
        openset_unknowns=("emnist-letters", "fashion-mnist"), download_size="11 MB"),
    "fashion-mnist": _idx_dataset("fashion-mnist", "Fashion-MNIST", _FASHION_MIRROR, (
        "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"), (
        "8d4fb7e6c68d591d4c3dfef9ec88bf0d", "25c81989df183df01b3e8a0aad5dffbe",
        "bef4ecab320f06d8554ea6380940ec79", "bb300cfdad3c16e7a12a480ee83cd310"),
        openset_unknowns=("mnist",), download_size="30 MB"),
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
        lookalikes=DIGIT_LIKE_LETTERS,
        download_size="a 0.56 GB archive, of which the letters test split, about 5 MB, is kept",
    ),
}
TRAINABLE = tuple(n for n, s in DATASETS.items() if s.trainable)  # mnist, fashion-mnist: the paper's order


def spec_of(name: str) -> DatasetSpec:
    try:
        return DATASETS[name]
    except KeyError:
        raise CSAEError(f"Unknown dataset {name!r}. Fix: use one of {', '.join(DATASETS)}.") from None


def fix_hint(spec: DatasetSpec) -> str:
    return (f"Fix: run `python -m csae_core data download {spec.name}`, or pass --data-dir / "
            f"set {ENV_VAR} to a folder that holds {spec.folder}/.")


def forced_root(data_dir: str | Path | None) -> Path | None:
    """The explicit argument, else the env var: used even when empty, so errors name it."""
    if data_dir is not None:
        return Path(data_dir).expanduser()
    env = os.environ.get(ENV_VAR, "").strip()
    return Path(env).expanduser() if env else None


def default_download_root(data_dir: str | Path | None = None) -> Path:
    """Where downloads go: ``data_dir``, else $CSAE_DATA_DIR, else ``./data``."""
    return forced_root(data_dir) or Path.cwd() / "data"


def search_roots(dataset: str | None) -> list[Path]:
    """Automatic candidates in priority order: ./data, the shared datasets, then the project's data/."""
    roots = [Path.cwd() / "data",
             PROJECT_ROOT.parent / "shared" / "datasets",
             Path.cwd().parent / "shared" / "datasets",
             PROJECT_ROOT / "data"]  # where on-demand fetches go when run from elsewhere
    if dataset in (None, "fashion-mnist"):
        roots.append(Path("/usr/share/datasets"))  # Debian package dataset-fashion-mnist
    unique: list[Path] = []
    for r in roots:
        if r.resolve() not in [u.resolve() for u in unique]:
            unique.append(r)
    return unique


def has_dataset(folder: Path, spec: DatasetSpec) -> bool:
    """A folder counts if it holds both files of every non-optional split."""
    return all((folder / f).is_file() for f in spec.required_files)


def find_dataset_dir(name: str, data_dir: str | Path | None = None) -> Path | None:
    """The folder holding dataset ``name``'s files, or None when none is found."""
    spec = spec_of(name)
    forced = forced_root(data_dir)
    if forced is not None:
        # Also accept a root that is itself the dataset folder (files flat inside it).
        for folder in (forced / spec.folder, forced):
            if has_dataset(folder, spec):
                return folder
        return None
    for root in search_roots(name):
        if has_dataset(root / spec.folder, spec):
            return root / spec.folder
    return None


def resolve_data_dir(data_dir: str | Path | None = None, dataset: str | None = None) -> Path:
    """The data root: ``data_dir``, else $CSAE_DATA_DIR, else ./data, else ../shared/datasets.

    The explicit argument and the env var win even when they hold nothing (so an error
    names them). Otherwise a root counts only if it holds ``dataset``'s folder with its
    files (any dataset when ``dataset`` is None); with none found, ./data (where
    ``download_dataset`` writes) is returned.
    """
    forced = forced_root(data_dir)
    if forced is not None:
        return forced
    names = [dataset] if dataset is not None else list(DATASETS)
    for root in search_roots(dataset):
        if any(has_dataset(root / DATASETS[n].folder, DATASETS[n]) for n in names if n in DATASETS):
            return root
    return Path.cwd() / "data"


def split_paths(name: str, split: str, data_dir: str | Path | None) -> tuple[Path, Path]:
    """Paths of the split's (images, labels) files; CSAEError naming where we looked if missing."""
    spec = spec_of(name)
    if split not in spec.files:
        raise CSAEError(f"{spec.title} has no split {split!r}. Fix: use one of {', '.join(spec.files)}.")
    folder = find_dataset_dir(name, data_dir)
    if folder is None:
        raise CSAEError(f"{spec.title} not found: no complete {spec.folder}/ folder in "
                        f"{', '.join(str(s) for s in searched_folders(name, data_dir))}. {fix_hint(spec)}")
    paths = tuple(folder / f for f in spec.files[split])
    for p in paths:
        if not p.is_file():
            raise CSAEError(f"{spec.title} file {p} is missing. {fix_hint(spec)}")
    return paths  # type: ignore[return-value]


def searched_folders(name: str, data_dir: str | Path | None = None) -> list[Path]:
    spec = spec_of(name)
    forced = forced_root(data_dir)
    return [forced / spec.folder] if forced is not None else [r / spec.folder for r in search_roots(name)]
