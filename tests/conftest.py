"""Shared fixtures: a tiny checkpoint zoo and tiny datasets built once per test session.

The explorer's tests must not depend on the real zoo (it may be absent or still training) or on
the shared datasets, so they run against these: MNIST-shaped models with widths (8, 8, 8, 8)
(csae at three betas, epoch snapshots for beta 0, a CVAE) listed in their own manifest.json, and
a few hundred random MNIST/EMNIST-shaped test images. Fixtures are opt-in (not autouse), so other
test files keep their own environment.
"""
from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from csae_core.checkpoint import save_checkpoint
from csae_core.model import ModelConfig, build_model
from csae_core.pedcc import generate_pedcc

PROJECT_ROOT = Path(__file__).resolve().parents[1]
_DATA_NOTES: list[str] = []


def pytest_sessionstart(session):
    """Datasets on demand, as torchvision's ``download=True``: MNIST, Fashion-MNIST and EMNIST letters
    are fetched (verified, atomically) when no data root holds them, through the library's own path
    (``csae_core.data.ensure_dataset``): from the official sites, or from $CSAE_DATA_URL checked
    against $CSAE_DATA_SHA256, into $CSAE_DATA_DIR or else the project's ``data/``. Without network
    each missing dataset is named once, with the fix, and the tests that need it fail (never skip)."""
    import os

    from csae_core.data import DATASETS, ENV_VAR, ensure_dataset, find_dataset_dir
    from csae_core.errors import CSAEError

    # The app's background warm-up (app/warmup.py) would run inside AppTest's process during other tests;
    # tests/test_app.py runs it directly where it is tested.
    os.environ.setdefault("CSAE_APP_WARMUP", "0")
    # The app's on-disk store (app/disk_store.py) starts empty for each test session, and away from ~/.cache.
    import tempfile
    os.environ.setdefault("CSAE_CACHE_DIR", tempfile.mkdtemp(prefix="csae-test-store-"))

    target = None if os.environ.get(ENV_VAR, "").strip() else PROJECT_ROOT / "data"
    _DATA_NOTES.clear()
    for name in DATASETS:
        try:
            folder = find_dataset_dir(name) or ensure_dataset(name, target)
        except CSAEError as e:
            _DATA_NOTES.append(f"datasets: {name} NOT FOUND and not fetched: {e}")
        else:
            _DATA_NOTES.append(f"datasets: {name} at {folder}")


def pytest_report_header(config):
    """Say where each dataset was found or fetched: the zoo, data and training tests need them."""
    return list(_DATA_NOTES)


def pytest_terminal_summary(terminalreporter):
    """Under -q the header is hidden, so repeat a missing dataset once at the end, after the failures it caused."""
    for note in _DATA_NOTES:
        if "NOT FOUND" in note:
            terminalreporter.write_line(note, red=True)


DIGITS = [str(d) for d in range(10)]


def explorer_pages() -> list[str]:
    """The pages app/explorer.py registers with st.navigation, in its order: the one page list."""
    import re

    return re.findall(r'PAGES / "(\w+)\.py"', (PROJECT_ROOT / "app" / "explorer.py").read_text())
FIXTURE_BETAS = (0.0, 0.04, 0.08)
PAPER_EPOCHS = {4: 40, 8: 80, 12: 120}  # a 12-epoch recipe mapped onto the paper's 120


def _write_idx(path: Path, array: np.ndarray, magic: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    header = np.array([magic, *array.shape], dtype=">u4").tobytes()
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes(), compresslevel=1))


def _strokes(n: int, rng: np.random.Generator) -> np.ndarray:
    """n 28x28 uint8 images with a bright bar or ring each: not digits, but with ink and structure."""
    yy, xx = np.mgrid[:28, :28]
    out = np.zeros((n, 28, 28), np.float32)
    for i in range(n):
        cy, cx, r = rng.uniform(10, 18), rng.uniform(10, 18), rng.uniform(4, 9)
        ring = np.abs(np.hypot(yy - cy, xx - cx) - r) < 1.6
        bar = (np.abs(xx - cx - (yy - cy) * rng.uniform(-0.6, 0.6)) < 1.5) & (np.abs(yy - cy) < r + 2)
        out[i] = np.where(ring if i % 2 else bar, 255, 0)
    return out.astype(np.uint8)


def make_datasets(root: Path) -> Path:
    """MNIST (60 train, 200 test images) and EMNIST letters (test a-m, one-per-class a-z) in IDX files."""
    rng = np.random.default_rng(0)
    for split, stem, n in (("train", "train", 60), ("test", "t10k", 200)):
        _write_idx(root / "mnist" / f"{stem}-images-idx3-ubyte.gz", _strokes(n, rng), 2051)
        _write_idx(root / "mnist" / f"{stem}-labels-idx1-ubyte.gz", np.arange(n) % 10, 2049)
    em = root / "emnist-letters"
    labels = np.repeat(np.arange(1, 14), 8)  # a..m, 8 each, sorted like the official file
    # EMNIST stores images transposed; transposing here keeps the loader's un-transpose honest.
    _write_idx(em / "emnist-letters-test-images-idx3-ubyte.gz",
               _strokes(len(labels), rng).transpose(0, 2, 1), 2051)
    _write_idx(em / "emnist-letters-test-labels-idx1-ubyte.gz", labels, 2049)
    _write_idx(em / "emnist-letters-one-per-class-images-idx3-ubyte.gz", _strokes(26, rng).transpose(0, 2, 1), 2051)
    _write_idx(em / "emnist-letters-one-per-class-labels-idx1-ubyte.gz", np.arange(1, 27), 2049)
    return root


def _tiny_model(kind: str, beta: float, seed: int):
    cfg = ModelConfig(kind=kind, widths=(8, 8, 8, 8), latent_dim=40, beta=beta)
    centroids = generate_pedcc(10, 40, converge=True).scaled()
    torch.manual_seed(seed)  # module init draws from the global generator; fixed per model
    model = build_model(cfg, centroids if kind in ("csae", "csae-encoder") else None)
    head = getattr(getattr(model, "decoder", None), "head", None)
    if head is not None:
        # The decoder's head starts at zero (flat output); random weights make each model's
        # reconstructions differ, which the beta-slider tests rely on.
        g = torch.Generator().manual_seed(seed)
        head.weight.data = torch.randn(head.weight.shape, generator=g) * 0.5
        head.bias.data = torch.full_like(head.bias, 0.3)
    return model.eval(), centroids


def make_zoo(folder: Path) -> Path:
    """Checkpoints + manifest.json (paths relative to `folder`) shaped like checkpoints/zoo.py's."""
    rows = []

    def add(kind: str, beta: float, epoch: int, name: str, seed: int) -> None:
        model, centroids = _tiny_model(kind, beta, seed)
        stats = {"images": 60, "epoch": epoch, "mean": centroids.tolist(),
                 "cov": (0.5 * torch.eye(40).expand(10, 40, 40)).tolist()}
        meta = {"dataset": "mnist", "class_names": DIGITS, "epoch": epoch, "recipe": "test",
                "train": {"epochs": 12}, "metrics": {"accuracy": 0.1, "recon_mse": 0.2},
                "latent_stats": stats if kind != "basenet" else None}
        save_checkpoint(folder / "mnist" / name, model, meta, half=True)
        rows.append({"dataset": "mnist", "model": kind, "beta": beta, "epoch": epoch, "epochs": 12,
                     "paper_epoch": PAPER_EPOCHS[epoch], "recipe": "test", "test_accuracy": 0.1,
                     "recon_mse": 0.2, "path": f"mnist/{name}.json"})

    for i, beta in enumerate(FIXTURE_BETAS):
        add("csae", beta, 12, f"csae-b{beta:g}", seed=i)  # dotted names, as the zoo writes them
    for epoch in (4, 8):
        add("csae", 0.0, epoch, f"csae-b0-epoch{epoch:03d}", seed=10 + epoch)
    add("cvae", 0.0, 12, "cvae", seed=20)
    add("csae-encoder", 0.0, 12, "csae-encoder", seed=21)
    (folder / "manifest.json").write_text(json.dumps(rows, indent=1))
    return folder


@pytest.fixture(scope="session")
def app_fixture(tmp_path_factory) -> dict[str, Path]:
    """{'checkpoints': tiny zoo folder, 'data': tiny data root, 'empty': an empty folder}."""
    base = tmp_path_factory.mktemp("explorer")
    return {"checkpoints": make_zoo(base / "checkpoints"), "data": make_datasets(base / "data"),
            "empty": (base / "empty").resolve()}


@pytest.fixture
def app_env(app_fixture, monkeypatch) -> dict[str, Path]:
    """Point the app at the fixture zoo and data (CSAE_CHECKPOINTS_DIR, CSAE_DATA_DIR)."""
    app_fixture["empty"].mkdir(exist_ok=True)
    monkeypatch.setenv("CSAE_CHECKPOINTS_DIR", str(app_fixture["checkpoints"]))
    monkeypatch.setenv("CSAE_DATA_DIR", str(app_fixture["data"]))
    monkeypatch.setenv("CSAE_USER_MODELS_DIR", str(app_fixture["empty"].parent / "no_user_models"))  # no stray user models
    return app_fixture
