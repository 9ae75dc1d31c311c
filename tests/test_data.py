"""Tests for csae_core.data: real shared IDX files, lookup order, corrupt files,
downloads from a local file:// fake, and image folders."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from csae_core import data
from csae_core.data import (DATASETS, Download, ImageFolderDataset, check_datasets, download_dataset,
                            find_dataset_dir, load_split, present_classes, resolve_data_dir)
from csae_core.errors import CSAEError
from csae_core.preprocess import to_model_input

SHARED = data.PROJECT_ROOT.parent / "shared" / "datasets"
# The real datasets wherever the session found or fetched them (tests/conftest.py), looked up at
# import, before `_no_env` hides $CSAE_DATA_DIR. A missing one fails its tests with the fix: no skip.
REAL = {name: find_dataset_dir(name) for name in DATASETS}


def real(name: str) -> Path:
    if REAL[name] is None:
        pytest.fail(f"{name} not found and not fetched (see the session's first lines). Fix: set "
                    f"CSAE_DATA_DIR to a folder holding {DATASETS[name].folder}/, or CSAE_DATA_URL to a mirror.")
    return REAL[name]


@pytest.fixture(autouse=True)
def _no_env(monkeypatch):
    # A developer's CSAE_DATA_DIR must not leak into lookup-order tests, nor a mirror (CSAE_DATA_URL, as in
    # .ci/run's fresh-clone run) into the tests of the official-download path.
    for var in (data.ENV_VAR, data.URL_VAR, data.SHA256_VAR):
        monkeypatch.delenv(var, raising=False)


def idx_bytes(array: np.ndarray, magic: int) -> bytes:
    return np.array([magic, *array.shape], dtype=">u4").tobytes() + array.astype(np.uint8).tobytes()


def write_idx(path: Path, array: np.ndarray, magic: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(idx_bytes(array, magic)))
    return path


def make_fake_mnist(root: Path, n: int = 20) -> Path:
    """A small valid mnist/ folder under root; returns the folder."""
    rng = np.random.default_rng(0)
    for split, (img_file, lab_file) in DATASETS["mnist"].files.items():
        write_idx(root / "mnist" / img_file, rng.integers(0, 256, (n, 28, 28)), data.IMAGE_MAGIC)
        write_idx(root / "mnist" / lab_file, np.arange(n) % 10, data.LABEL_MAGIC)
    return root / "mnist"


def stored_idx(path: Path, header: int) -> np.ndarray:
    """Raw payload of an IDX file, read independently of the module under test."""
    return np.frombuffer(gzip.decompress(path.read_bytes()), dtype=np.uint8, offset=header)


# ---------------------------------------------------------------- real shared data

def test_mnist_real():
    x, y = load_split("mnist", "train", real("mnist"))
    assert x.shape == (60000, 28, 28) and x.dtype == torch.uint8
    assert y.shape == (60000,) and y.dtype == torch.int64
    counts = torch.bincount(y, minlength=10)
    assert len(counts) == 10 and counts.min() > 5000 and counts.max() < 7000
    xt, yt = load_split("mnist", "test", real("mnist"))
    assert xt.shape == (10000, 28, 28) and torch.bincount(yt).min() > 800
    f = to_model_input(xt)
    assert f.shape == (10000, 1, 32, 32) and f.dtype == torch.float32
    assert 0.0 <= f.min() and f.max() <= 1.0 and f.max() == 1.0
    border = torch.ones(32, 32, dtype=torch.bool)
    border[2:30, 2:30] = False
    assert f[:, :, border].abs().max() == 0
    assert torch.equal(f[:, 0, 2:30, 2:30], xt.float() / 255)


def test_cache_returns_copies():
    x1, _ = load_split("mnist", "test", real("mnist"))
    x1.zero_()
    x2, _ = load_split("mnist", "test", real("mnist"))
    assert x2.max() == 255  # the in-process cache was not modified through x1


def test_fashion_real():
    x, y = load_split("fashion-mnist", "test", real("fashion-mnist"))
    assert x.shape == (10000, 28, 28)
    assert torch.bincount(y).tolist() == [1000] * 10
    assert len(DATASETS["fashion-mnist"].class_names) == 10


def test_emnist_real_upright_and_partial():
    spec, root = DATASETS["emnist-letters"], real("emnist-letters")
    x, y = load_split("emnist-letters", "test", root)
    stored = stored_idx(root / spec.files["test"][0], 16).reshape(-1, 28, 28)
    assert torch.equal(x, torch.from_numpy(stored.transpose(0, 2, 1).copy()))
    if len(x) == 10000:  # the shared partial copy: a..m
        assert present_classes("emnist-letters", "test", root) == list(range(13))
        assert torch.bincount(y).tolist() == [800] * 12 + [400]
    else:  # the official test split
        assert len(x) == 20800 and torch.bincount(y).tolist() == [800] * 26
    xo, yo = load_split("emnist-letters", "one-per-class", root)
    assert xo.shape == (26, 28, 28) and sorted(yo.tolist()) == list(range(26))
    with pytest.raises(CSAEError, match="train"):
        load_split("emnist-letters", "train", root)


def test_check_datasets_real(tmp_path):
    # One root holding the three real folders (they may have been found in different places).
    for name, folder in REAL.items():
        if folder is not None:
            (tmp_path / DATASETS[name].folder).symlink_to(folder, target_is_directory=True)
    rows = check_datasets(tmp_path)
    assert {(r["dataset"], r["split"]) for r in rows} == {
        (n, s) for n, spec in DATASETS.items() for s in spec.files}
    assert all(r["ok"] and r["problem"] is None for r in rows), [r["problem"] for r in rows]
    emnist = next(r for r in rows if r["dataset"] == "emnist-letters" and r["split"] == "test")
    assert emnist["images"] in (10000, 20800) and emnist["classes"][:13] == list("abcdefghijklm")


# ---------------------------------------------------------------- lookup order

def test_resolve_order(tmp_path, monkeypatch):
    explicit, env, cwd, empty = (tmp_path / n for n in ("explicit", "env", "cwd", "empty"))
    for root in (explicit, env, cwd / "data"):
        make_fake_mnist(root, n=1)
    empty.mkdir()
    monkeypatch.setenv(data.ENV_VAR, str(env))
    monkeypatch.chdir(cwd)
    assert resolve_data_dir(explicit, "mnist") == explicit
    assert resolve_data_dir(None, "mnist") == env
    assert find_dataset_dir("mnist") == env / "mnist"
    # An explicit or env dir wins even when empty, so errors name it.
    assert resolve_data_dir(empty, "mnist") == empty
    assert find_dataset_dir("mnist", empty) is None
    monkeypatch.delenv(data.ENV_VAR)
    assert resolve_data_dir(None, "mnist") == cwd / "data"
    monkeypatch.chdir(empty)
    if (SHARED / "mnist").is_dir():
        assert resolve_data_dir(None, "mnist") == SHARED
    # A folder holding only part of a dataset does not count.
    (cwd / "data" / "mnist" / "train-images-idx3-ubyte.gz").unlink()
    monkeypatch.chdir(cwd)
    assert find_dataset_dir("mnist") != cwd / "data" / "mnist"


def test_missing_dataset_names_search_and_fix(tmp_path):
    with pytest.raises(CSAEError) as e:
        load_split("mnist", "train", tmp_path)
    assert str(tmp_path / "mnist") in str(e.value)
    assert "python -m csae_core data download mnist" in str(e.value)
    rows = check_datasets(tmp_path)
    assert rows and not any(r["ok"] for r in rows)
    assert all("data download" in r["problem"] for r in rows)
    with pytest.raises(CSAEError, match="Unknown dataset"):
        load_split("cifar", "train", tmp_path)


# ---------------------------------------------------------------- corrupt files

def _corrupt(kind: str, folder: Path) -> str:
    """Damage the test split of a fake mnist folder; returns the damaged file's name."""
    img, lab = (folder / f for f in DATASETS["mnist"].files["test"])
    raw = gzip.decompress(img.read_bytes())
    if kind == "bad magic":
        img.write_bytes(gzip.compress(np.array([1234], ">u4").tobytes() + raw[4:]))
    elif kind == "truncated":
        img.write_bytes(gzip.compress(raw[:1000]))
    elif kind == "truncated gzip":
        img.write_bytes(img.read_bytes()[:200])
    elif kind == "not gzip":
        img.write_bytes(raw)
    elif kind == "wrong dims":
        write_idx(img, np.zeros((20, 28, 27)), data.IMAGE_MAGIC)
    elif kind == "count mismatch":
        write_idx(lab, np.zeros(19), data.LABEL_MAGIC)
        return lab.name
    elif kind == "labels out of range":
        write_idx(lab, np.full(20, 10), data.LABEL_MAGIC)
        return lab.name
    return img.name


@pytest.mark.parametrize("kind", ["bad magic", "truncated", "truncated gzip", "not gzip",
                                  "wrong dims", "count mismatch", "labels out of range"])
def test_corrupt_files(tmp_path, kind):
    folder = make_fake_mnist(tmp_path)
    name = _corrupt(kind, folder)
    with pytest.raises(CSAEError) as e:
        load_split("mnist", "test", tmp_path)
    assert name in str(e.value) and "Fix:" in str(e.value)
    rows = {r["split"]: r for r in check_datasets(tmp_path) if r["dataset"] == "mnist"}
    assert rows["train"]["ok"] and rows["train"]["images"] == 20
    assert not rows["test"]["ok"] and name in rows["test"]["problem"]


@pytest.mark.parametrize("claim", ["shape", "count"])
def test_gzip_bomb_is_one_clear_error_not_a_memory_error(tmp_path, claim):
    """A small gzip that inflates far beyond what its IDX header says (or whose header claims billions of
    images) is refused after reading at most the header's size + 1 byte: one CSAEError naming the file."""
    folder = make_fake_mnist(tmp_path)
    img = folder / DATASETS["mnist"].files["test"][0]
    n = 20 if claim == "shape" else 4_000_000_000
    with gzip.open(img, "wb") as f:
        f.write(np.array([data.IMAGE_MAGIC, n, 28, 28], ">u4").tobytes())
        for _ in range(32):  # 32 MB of zeros in a ~32 kB file; reading stops after 15,681 bytes
            f.write(bytes(1 << 20))
    assert img.stat().st_size < 64 << 10
    import tracemalloc

    tracemalloc.start()
    with pytest.raises(CSAEError, match="too long" if claim == "shape" else "claims") as e:
        data.read_idx(img, data.IMAGE_MAGIC, DATASETS["mnist"])
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 4 << 20, f"inflated {peak} bytes"  # not the 32 MB the gzip holds
    assert img.name in str(e.value) and "Fix:" in str(e.value)
    rows = {r["split"]: r for r in check_datasets(tmp_path) if r["dataset"] == "mnist"}
    assert rows["train"]["ok"] and not rows["test"]["ok"] and img.name in rows["test"]["problem"]


@pytest.mark.parametrize("kind", ["bad magic", "wrong dims", "count mismatch", "labels out of range"])
def test_header_check_finds_structural_damage_without_inflating(tmp_path, kind):
    import tracemalloc

    make_fake_mnist(tmp_path, n=5000)  # 3.9 MB of images per split
    name = _corrupt(kind, tmp_path / "mnist")
    tracemalloc.start()
    rows = {r["split"]: r for r in check_datasets(tmp_path, full_splits=()) if r["dataset"] == "mnist"}
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert rows["train"]["ok"] and rows["train"]["images"] == 5000 and rows["train"]["checked"] == "header"
    assert not rows["test"]["ok"] and name in rows["test"]["problem"]
    assert peak < 1 << 20  # the images were not inflated


def test_replaced_file_is_reread(tmp_path):
    folder = make_fake_mnist(tmp_path)
    assert load_split("mnist", "test", tmp_path)[0].shape[0] == 20
    img, lab = (folder / f for f in DATASETS["mnist"].files["test"])
    write_idx(img, np.zeros((5, 28, 28)), data.IMAGE_MAGIC)
    write_idx(lab, np.zeros(5), data.LABEL_MAGIC)
    assert load_split("mnist", "test", tmp_path)[0].shape[0] == 5


# ---------------------------------------------------------------- download (file:// fakes)

def _fake_downloads(monkeypatch, name: str, downloads: tuple[Download, ...]):
    monkeypatch.setitem(DATASETS, name, dataclasses.replace(DATASETS[name], downloads=downloads))


def _serve(tmp_path: Path, filename: str, payload: bytes) -> tuple[str, str]:
    src = tmp_path / "server" / filename
    src.parent.mkdir(parents=True, exist_ok=True)
    src.write_bytes(payload)
    return src.as_uri(), hashlib.md5(payload).hexdigest()


def test_download_good_checksum(tmp_path, monkeypatch):
    rng = np.random.default_rng(1)
    downloads = []
    for img_file, lab_file in DATASETS["mnist"].files.values():
        for f, arr, magic in ((img_file, rng.integers(0, 256, (7, 28, 28)), data.IMAGE_MAGIC),
                              (lab_file, np.arange(7), data.LABEL_MAGIC)):
            url, md5 = _serve(tmp_path, f, gzip.compress(idx_bytes(arr, magic)))
            downloads.append(Download(f, ("file:///nonexistent/mirror/" + f, url), md5))
    _fake_downloads(monkeypatch, "mnist", tuple(downloads))
    calls = []
    folder = download_dataset("mnist", tmp_path / "out", progress=lambda d, t: calls.append((d, t)))
    assert folder == tmp_path / "out" / "mnist"
    assert calls and all(t is None or d <= t for d, t in calls)
    x, y = load_split("mnist", "train", tmp_path / "out")
    assert x.shape == (7, 28, 28) and y.tolist() == list(range(7))
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]  # no temp files left


def test_download_bad_checksum_leaves_nothing(tmp_path, monkeypatch):
    url, _ = _serve(tmp_path, "train-images-idx3-ubyte.gz", b"not the official file")
    _fake_downloads(monkeypatch, "mnist", (Download("train-images-idx3-ubyte.gz", (url,), "0" * 32),))
    with pytest.raises(CSAEError, match="checksum"):
        download_dataset("mnist", tmp_path / "out")
    assert list((tmp_path / "out" / "mnist").iterdir()) == []


def test_download_network_failure_names_url(tmp_path, monkeypatch):
    url = (tmp_path / "nowhere.gz").as_uri()
    _fake_downloads(monkeypatch, "mnist", (Download("nowhere.gz", (url,), "0" * 32),))
    with pytest.raises(CSAEError) as e:
        download_dataset("mnist", tmp_path / "out")
    assert url in str(e.value) and "--data-dir" in str(e.value)
    assert list((tmp_path / "out" / "mnist").iterdir()) == []


def test_download_emnist_zip_extracts_letters(tmp_path, monkeypatch):
    spec = DATASETS["emnist-letters"]
    labels = np.repeat(np.arange(1, 27), 2)  # 1..26, two per letter
    images = np.random.default_rng(2).integers(0, 256, (52, 28, 28))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        img_file, lab_file = spec.files["test"]
        zf.writestr("gzip/" + img_file, gzip.compress(idx_bytes(images, data.IMAGE_MAGIC)))
        zf.writestr("gzip/" + lab_file, gzip.compress(idx_bytes(labels, data.LABEL_MAGIC)))
        zf.writestr("gzip/emnist-digits-test-labels-idx1-ubyte.gz", b"unused")
    url, md5 = _serve(tmp_path, "gzip.zip", buf.getvalue())
    _fake_downloads(monkeypatch, "emnist-letters",
                    (dataclasses.replace(spec.downloads[0], urls=(url,), md5=md5),))
    folder = download_dataset("emnist-letters", tmp_path / "out")
    assert sorted(p.name for p in folder.iterdir()) == sorted(f for pair in spec.files.values() for f in pair)
    x, y = load_split("emnist-letters", "test", tmp_path / "out")
    assert torch.equal(x, torch.from_numpy(images.astype(np.uint8).transpose(0, 2, 1).copy()))
    assert y.tolist() == (labels - 1).tolist()
    xo, yo = load_split("emnist-letters", "one-per-class", tmp_path / "out")
    assert yo.tolist() == list(range(26)) and torch.equal(xo, x[::2])


# ---------------------------------------------------------------- image folders and padding

def test_image_folder(tmp_path):
    (tmp_path / "dog").mkdir()
    (tmp_path / "cat").mkdir()
    Image.new("RGB", (40, 30), (255, 0, 0)).save(tmp_path / "cat" / "a.png")
    Image.new("L", (10, 70), 128).save(tmp_path / "cat" / "b.JPG")
    Image.new("RGBA", (16, 16), (0, 0, 255, 10)).save(tmp_path / "dog" / "c.png")
    Image.new("P", (5, 5)).save(tmp_path / "dog" / "d.bmp")
    (tmp_path / "dog" / "notes.txt").write_text("ignored")
    ds = ImageFolderDataset(tmp_path, size=24, channels=3)
    assert ds.class_names == ["cat", "dog"] and len(ds) == 4
    x, label = ds[0]
    assert x.shape == (3, 24, 24) and x.dtype == torch.float32 and label == 0
    assert torch.allclose(x[:, 5, 5], torch.tensor([1.0, 0.0, 0.0]))
    images, labels = ImageFolderDataset(tmp_path, size=8, channels=1).load_all()
    assert images.shape == (4, 1, 8, 8) and images.dtype == torch.uint8
    assert labels.tolist() == [0, 0, 1, 1]
    assert images[1].float().mean().round() == 128

    (tmp_path / "dog" / "broken.webp").write_bytes(b"not an image")
    with pytest.raises(CSAEError, match="broken.webp"):
        ImageFolderDataset(tmp_path, size=8).load_all()


def test_image_folder_empty_or_missing(tmp_path):
    with pytest.raises(CSAEError, match="does not exist"):
        ImageFolderDataset(tmp_path / "nope")
    (tmp_path / "a").mkdir()
    with pytest.raises(CSAEError, match="no images"):
        ImageFolderDataset(tmp_path)
