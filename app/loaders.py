"""Every cache of the app, in one place.

* Models: st.cache_resource, one copy per process shared by all users; nothing may mutate them
  (they are in eval mode and only ever run under no_grad).
* Everything derived from a checkpoint is keyed by its JSON's sha256 (which records its weights' sha256),
  with the JSON's (path, mtime, size) (`per_checkpoint`): a checkpoint rewritten in place (the zoo
  re-exporting a model while the app runs) gets new entries and can never be served stale results, and
  no other cache entry, of this user or another, is dropped. Old entries age out (max_entries).
  What every visit needs (each view's default grids, open-set scores, latent codes, letter rows) is computed
  into these entries once per process at start-up by app/warmup.py, and kept on disk across restarts and
  processes by app/disk_store.py (`@disk_store.persisted`, under the memory cache), keyed by the same sha256.
* Test images: st.cache_resource, one read-only uint8 copy per process, already padded to the models'
  32 px (st.cache_data would copy the 10 MB array on every call); converted to floats once, per batch,
  by csae_core.preprocess.
* Arrays derived from data or models: st.cache_data, keyed by plain values (checkpoint, dataset
  folder, image indices), so a key never depends on a model object. Dataset folders are part of the
  keys (`data_folder`), so a download or a changed CSAE_DATA_DIR is picked up.
* User letters (uploads, drawings) are never in a process-wide cache: a per-session memo
  (st.session_state) keeps their results for that session's reruns only.

The reconstruction grid of one (checkpoint, image selection) is cached as finished PNG bytes:
moving the beta slider back to a seen value costs one cache lookup.
"""
from __future__ import annotations

import functools
import hashlib
import os
import sys
from pathlib import Path

import numpy as np
import streamlit as st
import torch

from csae_core import data
from csae_core.checkpoint import Checkpoint, load_checkpoint
from csae_core.errors import CSAEError
from csae_core.geometry import tsne
from csae_core.pedcc import PEDCCResult, generate_pedcc
from csae_core.preprocess import pad, to_uint8
from csae_core.sample import decode_latents, interpolate_latents, sample_images

from . import analysis, defaults, disk_store, figures, grids, passes, registry

HISTORY_FRAMES = 60  # plotly animation frames of the PEDCC convergence
LETTERS_PER_ROW = 13  # a-z in two rows: 13 x 32 px stays readable at 3x within st.image's width
SESSION_MEMO = 64  # user-letter results remembered per session (oldest dropped first)
THREADS_ENV = "CSAE_APP_THREADS"  # torch intra-op threads of the app process (default 1)
MODEL_PASSES = passes.PassQueue()  # one model pass at a time per process, a page's own before prefetches


def configure_torch() -> None:
    """Run torch on one intra-op thread unless $CSAE_APP_THREADS says otherwise.

    Why: the app's batches are small (32 images), sessions already run on their own threads, and on
    a busy 2-core machine every parallel region waits for a second thread that is not free. Measured
    with a training job running (load 4.4): loading a checkpoint 200 -> 22 ms, reconstructing 32
    images 1150 -> 160 ms, tiling + PNG 75 -> 6 ms with 1 thread instead of 2.
    """
    threads = thread_setting(os.environ.get(THREADS_ENV))
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


@st.cache_resource(show_spinner=False)
def cuda_available() -> bool:
    """Whether this server has a usable GPU (the Train view's recipes and devices), asked once per process."""
    return torch.cuda.is_available()


def thread_setting(value: str | None) -> int:
    """$CSAE_APP_THREADS as a thread count: unset -> 1; not a whole number in 1..cores -> 1, with a warning
    once on the server's log (a bad setting must not take every page down)."""
    if value is None or not value.strip():
        return 1
    try:
        threads = int(value)
    except ValueError:
        threads = 0
    cores = os.cpu_count() or 1
    if not 1 <= threads <= max(cores, 1) * 4:
        if value not in _warned:
            _warned.add(value)
            print(f"warning: {THREADS_ENV}={value!r} is not a thread count in 1..{cores * 4}; using 1.", file=sys.stderr)
        return 1
    return threads


_warned: set[str] = set()


# ---------------------------------------------------------------- models

def model_entries() -> list[registry.ModelEntry]:
    """All checkpoints under the checkpoints folder, then the user's own (Train view); re-read only when a
    file there changes."""
    folder, user = registry.checkpoints_dir(), registry.user_models_dir() / "models"
    return _scan(str(folder), registry.stamp(folder)) + _scan_user(str(user), registry.stamp(user))


@st.cache_data(show_spinner=False, max_entries=8)
def _scan_user(folder: str, stamp: tuple) -> list[registry.ModelEntry]:
    return registry.scan_user(Path(folder))


@st.cache_data(show_spinner=False, max_entries=8)
def _scan(folder: str, stamp: tuple) -> list[registry.ModelEntry]:
    return registry.scan(Path(folder))  # `stamp` (file mtimes and sizes) is only part of the key


def checkpoint_stamp(path: str | None) -> tuple[int, int, str] | None:
    """(mtime_ns, size, sha256) of a checkpoint JSON; None for no checkpoint or a missing file (loading then
    raises the CSAEError that names the problem). The sha256 is read once per file version (mtime, size)."""
    if path is None:
        return None
    try:
        s = os.stat(path)
    except OSError:
        return None
    stamp = (path, s.st_mtime_ns, s.st_size)
    sha = _sha256_memo.get(stamp)
    if sha is None:
        try:
            with open(path, "rb") as f:
                sha = hashlib.sha256(f.read()).hexdigest()
        except OSError:
            return None
        if len(_sha256_memo) > 1024:
            _sha256_memo.clear()
        _sha256_memo[stamp] = sha
    return s.st_mtime_ns, s.st_size, sha


_sha256_memo: dict[tuple, str] = {}  # (path, mtime_ns, size) -> sha256 of the JSON bytes; process-wide, tiny


def per_checkpoint(cached):
    """`f(path, *args)` for a cached `cached(path, stamp, *args)`: the checkpoint file's (mtime, size, sha256)
    joins the cache key, so a checkpoint rewritten in place is recomputed, and nothing else is dropped."""
    @functools.wraps(cached)
    def call(path, *args, **kwargs):
        return cached(path, checkpoint_stamp(path), *args, **kwargs)
    call.clear = cached.clear
    return call


def load_model(path: str) -> Checkpoint:
    """The checkpoint at `path` (model in eval mode), loaded once per process and file version. A file that
    cannot be loaded raises its CSAEError, remembered too: a bad file is not re-read on every rerun."""
    result = _load_model(path)
    if isinstance(result, CSAEError):
        raise CSAEError(str(result))  # a fresh exception: re-raising the cached one would grow its traceback
    return result


@per_checkpoint
@st.cache_resource(show_spinner="Loading the model…", max_entries=48)
def _load_model(path: str, stamp) -> Checkpoint | CSAEError:
    try:
        return _load(path)
    except CSAEError as e:
        return CSAEError(str(e))


def _load(path: str) -> Checkpoint:
    ckpt = load_checkpoint(path)
    ckpt.model.requires_grad_(False)
    # NHWC weights: oneDNN's CPU convolutions are ~1.5x faster (32 MNIST reconstructions with the
    # paper's widths on one busy core: 173 -> 114 ms). Same maths, another memory layout.
    ckpt.model.to(memory_format=torch.channels_last)
    return ckpt


# ---------------------------------------------------------------- datasets

def data_folder(name: str) -> str | None:
    """Where dataset `name` is (None if missing, or not one of data.DATASETS: a model trained on an image
    folder has no test set here): part of every data cache key."""
    if name not in data.DATASETS:
        return None
    folder = data.find_dataset_dir(name)
    return None if folder is None else str(folder.resolve())


def dataset_rows() -> list[dict]:
    """One row per dataset/split (ok, images, classes present, problem), refreshed when folders change."""
    key = tuple((n, data_folder(n)) for n in data.DATASETS)
    return _dataset_status(key)


@st.cache_data(show_spinner="Checking the datasets…", max_entries=8)
def _dataset_status(folders: tuple) -> list[dict]:
    # `folders` is only part of the key. The app reads test splits only: those are parsed whole, the
    # training splits checked by header and labels (parsing them would cost ~1 s and 100 MB per process).
    return data.check_datasets(full_splits=("test", "one-per-class"))


@st.cache_resource(show_spinner="Reading the test images…", max_entries=8)
def _split(name: str, split: str, folder: str) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images (N, 32, 32), padded as the models see them, and labels (N,): read-only, one copy per process."""
    images, labels = data.load_split(name, split, data_dir=folder)
    images, labels = pad(images.numpy()), labels.numpy().copy()
    images.flags.writeable = labels.flags.writeable = False  # shared by every session
    return images, labels


@st.cache_data(show_spinner=False, max_entries=64)
def test_selection(name: str, folder: str, class_index: int | None, n: int, seed: int,
                   split: str = "test") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(indices, uint8 images (n, 32, 32), labels) of n test images, random or from one class."""
    images, labels = _split(name, split, folder)
    idx = analysis.choose_indices(labels, class_index, n, seed)
    return idx, images[idx], labels[idx]


@st.cache_data(show_spinner=False, max_entries=8)
def split_labels(name: str, folder: str, split: str = "test") -> np.ndarray:
    return _split(name, split, folder)[1]


# ---------------------------------------------------------------- reconstructions

@per_checkpoint
@st.cache_data(show_spinner=False, max_entries=512)
@disk_store.persisted
def reconstruction(path: str, stamp, name: str, folder: str, indices: tuple[int, ...],
                   split: str = "test") -> analysis.Recon:
    """Reconstructions and per-image MSE/PSNR of test images `indices` by the checkpoint at `path`."""
    images, _ = _split(name, split, folder)
    model = load_model(path).model
    with MODEL_PASSES:
        return analysis.reconstruct(model, images[list(indices)])


@per_checkpoint
@st.cache_data(show_spinner=False, max_entries=512)
@disk_store.persisted
def comparison_png(path: str, stamp, name: str, folder: str, indices: tuple[int, ...], nrow: int) -> bytes:
    """PNG of the Fig. 4 grid (originals above reconstructions) for one checkpoint and image selection."""
    images, _ = _split(name, "test", folder)
    rec = reconstruction(path, name, folder, indices)
    return grids.png(grids.comparison_grid(images[list(indices)], rec.images, nrow))


@per_checkpoint
@st.cache_data(show_spinner=False, max_entries=512)
def row_png(path: str | None, stamp, name: str, folder: str, indices: tuple[int, ...]) -> bytes:
    """One row of images: the originals (path None) or one checkpoint's reconstructions."""
    if path is None:
        images, _ = _split(name, "test", folder)
        row = images[list(indices)]
    else:
        row = reconstruction(path, name, folder, indices).images
    return grids.row_png(row)


def prefetch_grids(paths: list[str], name: str, folder: str, indices: tuple[int, ...], nrow: int) -> None:
    """comparison_png of each checkpoint in `paths` for this image selection, so the next β move is a lookup;
    once per session and selection (a move reruns the page, and its lookups need not run again)."""
    done = st.session_state.setdefault("_prefetched_grids", set())
    for path in paths:
        key = (path, checkpoint_stamp(path), name, folder, indices, nrow)
        if key not in done:
            with passes.background():  # other sessions' first grids go first
                comparison_png(path, name, folder, indices, nrow)
            if len(done) >= SESSION_MEMO:
                done.clear()
            done.add(key)


# ---------------------------------------------------------------- latents

@per_checkpoint
@st.cache_data(show_spinner="Encoding test images…", max_entries=32)
@disk_store.persisted
def test_latents(path: str, stamp, name: str, folder: str, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Latents (n, d) of the first n test images (a fixed, class-balanced-enough prefix) and their labels."""
    images, labels = _split(name, "test", folder)
    model = load_model(path).model
    with MODEL_PASSES:
        return analysis.latents(model, images[:n]), labels[:n]


@per_checkpoint
@st.cache_data(show_spinner="Running t-SNE (a few seconds per thousand codes)…", max_entries=16)
@disk_store.persisted
def test_latents_tsne(path: str, stamp, name: str, folder: str, n: int,
                      seed: int = 0) -> tuple[np.ndarray, np.ndarray | None]:
    """2-D t-SNE of the first n test latents, and of the model's PEDCC centroids embedded with them
    (t-SNE cannot place new points afterwards): ((n, 2), (classes, 2) or None)."""
    z, _ = test_latents(path, name, folder, n)
    centroids = analysis.centroids(load_model(path).model)
    points = z if centroids is None else np.concatenate([z, centroids])
    y = tsne(points, seed=seed)
    return (y, None) if centroids is None else (y[:len(z)], y[len(z):])


# ---------------------------------------------------------------- sampling

@per_checkpoint
@st.cache_data(show_spinner="Sampling…", max_entries=128)
def samples_png(path: str, stamp, classes: tuple[int, ...], n: int, temperature: float, seed: int) -> bytes:
    """Decoded samples from each class's latent Gaussian (one row per class) as PNG."""
    ckpt = load_model(path)
    images, _ = sample_images(ckpt.model, list(classes), n, ckpt.latent_stats(), temperature, seed)
    return grids.png(grids.grid(to_uint8(images), nrow=n))


@per_checkpoint
@st.cache_data(show_spinner=False, max_entries=128)
def interpolation_png(path: str, stamp, a: int, b: int, steps: int, use_means: bool) -> bytes:
    """Decoded straight path (CSAE) from class a's centre to class b's (PEDCC centroids or learned means)."""
    ckpt = load_model(path)
    if use_means:
        centres = ckpt.latent_stats()[0]
    else:
        centres = ckpt.model.centroids.cpu()
    z = interpolate_latents(centres[a], centres[b], steps)
    return grids.png(grids.grid(to_uint8(decode_latents(ckpt.model, z)), nrow=steps))


# ---------------------------------------------------------------- letters

# User letters never go into a process-wide cache (it would keep what one user uploaded): a memo in
# the user's own session state spares re-encoding them on every rerun of that session.

def _letters_png(path: str, images28: np.ndarray) -> bytes:
    return grids.row_png(analysis.reconstruct_letters(load_model(path).model, images28), LETTERS_PER_ROW)


def _letters_nearest(path: str, images28: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return analysis.nearest_classes(load_model(path).model, images28)


def _session_memo(what: str, path: str, images: np.ndarray, compute):
    """compute(), remembered in this session's st.session_state for (what, checkpoint version, images)."""
    images = np.ascontiguousarray(images)
    key = (what, path, checkpoint_stamp(path), images.shape, hashlib.sha256(images.tobytes()).hexdigest())
    memo = st.session_state.setdefault("_letters_memo", {})
    if key not in memo:
        while len(memo) >= SESSION_MEMO:
            memo.pop(next(iter(memo)))  # oldest first
        memo[key] = compute()
    return memo[key]


def letters_recon(path: str, images28: np.ndarray) -> np.ndarray:
    """A checkpoint's uint8 reconstructions (k, 32, 32) of 28x28 letter images (memoised per session)."""
    return _session_memo("recon", path, images28, lambda: analysis.reconstruct_letters(
        load_model(path).model, images28))


def letters_nearest(path: str, images28: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest PEDCC class and its distance for each 28x28 letter image (memoised per session)."""
    return _session_memo("nearest", path, images28, lambda: _letters_nearest(path, images28))


@st.cache_data(show_spinner=False, max_entries=128)
def one_letter_per_class(name: str, folder: str) -> tuple[int, ...]:
    """The Letters view's default selection: one image of each letter of the one-per-class split, a to z."""
    idx, _, labels = test_selection(name, folder, None, 26, 0, split=defaults.LETTERS_SPLIT)
    return tuple(int(i) for i in idx[np.argsort(labels)])


def emnist_letters(name: str, folder: str, split: str, indices: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images (k, 32, 32) and labels of EMNIST letters `indices` of `split`."""
    images, labels = _split(name, split, folder)
    return images[list(indices)], labels[list(indices)]


@per_checkpoint
@st.cache_data(show_spinner=False, max_entries=256)
@disk_store.persisted
def emnist_letters_png(path: str, stamp, name: str, folder: str, split: str, indices: tuple[int, ...]) -> bytes:
    """letters_png for dataset letters (cached: the key is the dataset selection, not user data)."""
    return _letters_png(path, emnist_letters(name, folder, split, indices)[0])


@per_checkpoint
@st.cache_data(show_spinner=False, max_entries=256)
@disk_store.persisted
def emnist_letters_nearest(path: str, stamp, name: str, folder: str, split: str,
                           indices: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    return _letters_nearest(path, emnist_letters(name, folder, split, indices)[0])


# ---------------------------------------------------------------- PEDCC

@st.cache_data(show_spinner="Running PEDCC…", max_entries=64)
def pedcc_run(n: int, d: int, seed: int, iters: int | None, converge: bool) -> PEDCCResult:
    """generate_pedcc with a position history for the animation (a few ms to ~0.3 s on the 3-D sphere)."""
    return generate_pedcc(n, d, seed=seed, iters=iters, converge=converge, history_frames=HISTORY_FRAMES)


@st.cache_resource(show_spinner=False, max_entries=64)
def sphere_figure(n: int, seed: int, iters: int | None, converge: bool, height: int = 560,
                  animated: bool = False):
    """The plotly figure of a 3-D PEDCC run (animated: with its convergence frames), built once per process
    and shared: plotly validates every trace of every frame as it builds (~0.3 s for 60 frames), while
    st.plotly_chart only reads a figure (it serializes a copy)."""
    result = pedcc_run(n, 3, seed, iters, converge)
    if not animated:
        return figures.sphere_figure(result.centroids.numpy(), height=height)
    history = result.history.numpy()
    return figures.sphere_figure(history, [f"{k + 1}/{len(history)}" for k in range(len(history))], height=height)
