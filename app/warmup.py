"""Warm the explorer's process-wide caches in the background, so the first visit to Reconstructions is a lookup.

`start()` is called by the entrypoint on every script run and does its work once per server process, in a
daemon thread at a lower CPU priority (nice +10), without delaying the page that triggered it: it imports
torch and the model code, parses the default dataset's test images and renders the Reconstructions page's
default grid (default dataset, its second β, 32 random test images, seed 0), then precomputes what the
first visit to each view needs: the modules they import (scikit-learn, pyarrow) and, per checkpoint, into
the same st.cache_* entries the pages read (keyed by the checkpoint's sha256, app/loaders.py), the default
grid for every other β, the Open set view's default
scores (known threshold/test halves and unknown images), the Latent space view's default latent codes, the Letters
view's thresholds and letter rows; last it loads every other decoder. Each piece is read from app/disk_store.py
when an earlier process stored it. Streamlit caches compute each key once (a page asking for a key the thread is computing
waits for it instead of computing it again). Everything here is best effort: a failure only means the page
computes that piece itself.
"""
from __future__ import annotations

import gc
import logging
import os
import sys
import threading
import time

THREAD_NAME = "csae-warmup"
ENV_VAR = "CSAE_APP_WARMUP"  # "0" turns the warm-up off (the test session does, to keep its timings its own)
_lock = threading.Lock()
_thread: threading.Thread | None = None
done = threading.Event()  # set when the warm-up finished (or failed)
report: dict = {}  # what was warmed and how long it took (seconds), for logs and benchmarks


class _QuietWarmupThread(logging.Filter):
    """Streamlit logs 'missing ScriptRunContext' for cache calls outside a script run: expected here."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.threadName != THREAD_NAME


PRIORITY = 10  # niceness of the warm-up thread: sessions' own work goes first


def start() -> bool:
    """Start the warm-up thread unless it already ran in this process; True when this call started it."""
    global _thread
    if os.environ.get(ENV_VAR, "1").strip() == "0":
        return False
    with _lock:
        if _thread is not None:
            return False
        _thread = threading.Thread(target=warm, name=THREAD_NAME, daemon=True)
    logging.getLogger("streamlit.runtime.scriptrunner_utils.script_run_context").addFilter(_QuietWarmupThread())
    _thread.start()
    return True


def warm() -> dict:
    """Do the warm-up now (in the calling thread); returns ``report``."""
    t0 = time.perf_counter()
    if threading.current_thread().name == THREAD_NAME:
        try:  # Linux: a thread's own niceness (torch runs the thread's ops in it: intra-op threads are 1)
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), PRIORITY)
        except (AttributeError, OSError):
            pass
    from app import passes

    try:
        with passes.background():  # a visitor's own model passes go before the warm-up's
            _warm(t0)
    except Exception as e:  # noqa: BLE001 - best effort: the page computes what is missing
        report["error"] = f"{type(e).__name__}: {e}"
    finally:
        # Modules, models and caches live as long as the process: move them out of the GC's sight, so a full
        # collection (Python's own, now that .streamlit/config.toml turns Streamlit's per-run one off) scans
        # only what sessions allocate since. Costs a full collection now, once.
        gc.collect()
        gc.freeze()
        report["seconds"] = round(time.perf_counter() - t0, 3)
        done.set()
        print(f"csae warm-up: {report}", file=sys.stderr, flush=True)  # one line in the server's log
    return report


def _warm(t0: float) -> None:
    from app import defaults, loaders, registry  # torch, csae_core and the app's compute modules

    loaders.configure_torch()
    report["imports"] = round(time.perf_counter() - t0, 3)
    # The PEDCC sphere view's default run and animated figure, called as the page calls it (a cache key is
    # the call's arguments).
    _step("pedcc", t0, lambda: loaders.sphere_figure(defaults.PEDCC_POINTS, defaults.SEED, None,
                                                     defaults.PEDCC_CONVERGE, animated=True))
    entries = loaders.model_entries()
    decoders = registry.finals(entries, decoder_only=True)
    csae = [e for e in decoders if e.kind == registry.DEFAULT_KIND]  # the β the page sweeps
    datasets = [d for d in registry.datasets(csae) if loaders.data_folder(d) is not None]
    if not datasets:
        report["dataset"] = None
        return
    dataset = datasets[0]  # the page's default: the paper's first dataset that has models and test images
    betas = sorted({e.beta for e in csae if e.dataset == dataset})
    beta = defaults.beta(betas)
    epochs = registry.snapshots(entries, dataset, registry.DEFAULT_KIND, beta)
    entry = epochs[max(epochs)]
    loaders.load_model(entry.path)  # the default model first, then its test images and grid
    folder = loaders.data_folder(dataset)
    indices, _, _ = loaders.test_selection(dataset, folder, None, defaults.RECON_IMAGES, defaults.SEED)
    key = tuple(int(i) for i in indices)
    loaders.comparison_png(entry.path, dataset, folder, key, defaults.RECON_ROW)
    loaders.reconstruction(entry.path, dataset, folder, key)
    report.update(dataset=dataset, model=entry.path, grid=round(time.perf_counter() - t0, 3))
    # The grids of the other β values (the page prefetches them after its first draw), then the other views.
    for b in betas:
        snaps = registry.snapshots(entries, dataset, registry.DEFAULT_KIND, b)
        _step("grids", t0, loaders.comparison_png, snaps[max(snaps)].path, dataset, folder, key, defaults.RECON_ROW)
    _step("view_imports", t0, _view_imports)
    _step("open_set", t0, _open_set_defaults, entries)
    _step("latents", t0, _latent_defaults, entries)
    _step("letters", t0, _letters_defaults, entries)
    # Then what the Reconstructions page loads besides (every decoder it lists), the default dataset's first.
    for e in sorted(decoders, key=lambda e: e.dataset != dataset):
        _step("decoders", t0, loaders.load_model, e.path)
    report["models"] = len(decoders)


def _step(name: str, t0: float, fn, *args) -> None:
    """fn(*args), best effort; report[name] = seconds since the start when the last such step ended."""
    try:
        fn(*args)
    except Exception as e:  # noqa: BLE001 - the page shows the problem itself (e.g. a checkpoint that cannot load)
        report[f"{name}_error"] = f"{type(e).__name__}: {e}"
    report[name] = round(time.perf_counter() - t0, 3)


def _view_imports() -> None:
    """What the Open set, Latent space and Distance matrix views import on their first run and `python -m app`
    does not preload (it would delay the first page): scikit-learn's metrics, PCA and t-SNE (with scipy) and
    pyarrow (st.dataframe). About 1 s on 2 cores, once per process, that the first visit no longer pays."""
    import pyarrow  # noqa: F401
    import sklearn.decomposition  # noqa: F401
    import sklearn.manifold  # noqa: F401
    import sklearn.metrics  # noqa: F401


def _open_set_defaults(entries) -> None:
    """The Open set view's first draw: its default dataset and unknown set, the scores of its default models
    (Basenet and the default CSAE) on the known threshold/test halves and unknown images."""
    from app import loaders, registry
    from app import openset as app_openset
    from csae_core import data, openset

    finals = registry.finals(entries)
    datasets = [d for d in registry.datasets(finals) if d in data.DATASETS and loaders.data_folder(d)]
    if not datasets:
        return
    dataset = datasets[0]
    choices = app_openset.unknown_choices(dataset)
    if not choices:
        return
    unknown = choices[0]
    known_folder, unknown_folder = loaders.data_folder(dataset), loaders.data_folder(openset.UNKNOWN_SETS[unknown][0])
    models = [e for e in finals if e.dataset == dataset]
    for e in app_openset.default_models(models):  # the page's default choice of models
        app_openset.scores(e.path, dataset, known_folder, unknown, unknown_folder, app_openset.images_for(e.path))


def _letters_defaults(entries) -> None:
    """The Letters view's first draw: the default judge's verdict threshold (the threshold half of the test
    set scored once) and, for each decoder of the default dataset, its row of one EMNIST letter per class."""
    from app import defaults, loaders, registry
    from app import openset as app_openset

    decoders = [e for e in registry.finals(entries, decoder_only=True) if e.dataset in registry.DATASETS]
    datasets = registry.datasets(decoders)
    em_folder = loaders.data_folder("emnist-letters")
    if not datasets:
        return
    dataset = datasets[0]
    folder = loaders.data_folder(dataset)
    split = defaults.LETTERS_SPLIT
    key = loaders.one_letter_per_class("emnist-letters", em_folder) if em_folder else None
    models = [e for e in decoders if e.dataset == dataset]
    judge = app_openset.default_judge(models)
    if judge and folder:  # the page's default "Verdict by" model
        app_openset.threshold_half_95(judge.path, dataset, folder)
    for e in models:
        if key:
            loaders.emnist_letters_png(e.path, "emnist-letters", em_folder, split, key)
            if e.has_centroids:  # the page asks only models with centroids for the nearest class
                loaders.emnist_letters_nearest(e.path, "emnist-letters", em_folder, split, key)


def _latent_defaults(entries) -> None:
    """The Latent space view's first draw: the default model's codes of its first 1,000 test images."""
    from app import defaults, loaders, registry

    finals = registry.finals(entries)
    entry = registry.default_entry(finals) or (finals[0] if finals else None)
    folder = entry and loaders.data_folder(entry.dataset)
    if folder:
        loaders.test_latents(entry.path, entry.dataset, folder, defaults.LATENT_IMAGES)
