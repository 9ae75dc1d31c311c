"""Warm the explorer's process-wide caches in the background, so the first visit to Reconstructions is a lookup.

`start()` is called by the entrypoint on every script run and does its work once per server process, in a
daemon thread, without delaying the page that triggered it: it imports torch and the model code, loads the
decoders the Reconstructions page loads, parses the default dataset's test images and renders the page's
default grid (default dataset, its second β, 32 random test images, seed 0) into the same st.cache_* entries
the page reads. Streamlit caches compute each key once (a page asking for a key the thread is computing
waits for it instead of computing it again). Everything here is best effort: a failure only means the page
computes that piece itself.
"""
from __future__ import annotations

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
    try:
        _warm(t0)
    except Exception as e:  # noqa: BLE001 - best effort: the page computes what is missing
        report["error"] = f"{type(e).__name__}: {e}"
    finally:
        report["seconds"] = round(time.perf_counter() - t0, 3)
        done.set()
        print(f"csae warm-up: {report}", file=sys.stderr, flush=True)  # one line in the server's log
    return report


def _warm(t0: float) -> None:
    from app import loaders, registry  # torch, csae_core and the app's compute modules

    loaders.configure_torch()
    report["imports"] = round(time.perf_counter() - t0, 3)
    entries = loaders.model_entries()
    decoders = registry.finals(entries, decoder_only=True)
    csae = [e for e in decoders if e.kind == "csae"]
    datasets = [d for d in registry.datasets(csae) if loaders.data_folder(d) is not None]
    if not datasets:
        report["dataset"] = None
        return
    dataset = datasets[0]  # the page's default: the paper's first dataset that has models and test images
    betas = sorted({e.beta for e in csae if e.dataset == dataset})
    beta = betas[min(1, len(betas) - 1)]  # the page's default β
    epochs = registry.snapshots(entries, dataset, "csae", beta)
    entry = epochs[max(epochs)]
    loaders.load_model(entry.path)  # the default model first, then its test images and grid
    folder = loaders.data_folder(dataset)
    indices, _, _ = loaders.test_selection(dataset, folder, None, 32, 0)
    key = tuple(int(i) for i in indices)
    loaders.comparison_png(entry.path, dataset, folder, key, 8)
    loaders.reconstruction(entry.path, dataset, folder, key)
    report.update(dataset=dataset, model=entry.path, grid=round(time.perf_counter() - t0, 3))
    # Then what the page loads besides (every decoder it lists), the default dataset's first.
    for e in sorted(decoders, key=lambda e: e.dataset != dataset):
        try:
            loaders.load_model(e.path)
        except Exception:  # noqa: BLE001 - the page names a checkpoint that cannot be loaded
            continue
    report["models"] = len(decoders)
