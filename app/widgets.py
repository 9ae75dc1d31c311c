"""Streamlit pieces shared by the pages: remembered pickers, notes about what is missing, image rows.

Choices the user makes (dataset, model) are remembered per session in st.session_state, so they
survive switching pages; nothing per-user goes into a process-wide cache.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Sequence

import streamlit as st

from csae_core import data
from csae_core.checkpoint import Checkpoint
from csae_core.errors import CSAEError

from . import defaults, loaders, registry


def choose(label: str, options: Sequence, *, remember: str, key: str, format_func: Callable = str,
           where=None, help: str | None = None, default=None):
    """A selectbox whose choice is remembered under st.session_state[remember] across pages; it starts
    at `default` (else the first option) until the user picks."""
    where = where or st
    options = list(options)
    saved = st.session_state.get(remember)
    start = saved if saved in options else default
    index = options.index(start) if start in options else 0
    value = where.selectbox(label, options, index=index, format_func=format_func, key=key, help=help)
    st.session_state[remember] = value
    return value


def choose_dataset(datasets: Sequence[str], key: str, where=None) -> str:
    titles = {n: spec.title for n, spec in data.DATASETS.items()}
    return choose("Dataset", sorted(datasets, key=registry.dataset_rank), remember="chosen_dataset", key=key,
                  where=where, format_func=lambda n: titles.get(n, n))


def choose_model(entries: Sequence[registry.ModelEntry], key: str, where=None,
                 label: str = "Model") -> registry.ModelEntry:
    by_path = {e.path: e for e in entries}
    preferred = registry.default_entry(list(entries))
    path = choose(label, list(by_path), remember="chosen_model", key=key, where=where,
                  format_func=lambda p: by_path[p].long_label, default=preferred and preferred.path)
    return by_path[path]


def choose_class(names: Sequence[str], key: str, where=None, classes: Sequence[int] | None = None,
                 label: str = "Class", index: int = 0, help: str | None = None) -> int:
    """A class picker (index into `names`) over `classes` (default: every class), shown by name."""
    return (where or st).selectbox(label, list(range(len(names)) if classes is None else classes), index=index,
                                   format_func=lambda k: names[k], key=key, help=help)


def seed_input(key: str, where=None) -> int:
    """The views' random-draw seed (the same seed shows the same images or samples again)."""
    return int((where or st).number_input("Seed", 0, 1_000_000, defaults.SEED, step=1, key=key))


def final_models_or_stop(what: str, decoder_only: bool = False) -> list[registry.ModelEntry]:
    """The fully trained models (decoder_only: those with a decoder); with none, say so and stop the page."""
    entries = registry.finals(loaders.model_entries(), decoder_only=decoder_only)
    if not entries:
        no_models(what)
        st.stop()
    return entries


def choose_final_model(what: str, key: str, where=None, decoder_only: bool = False) -> registry.ModelEntry:
    """A remembered pick among the fully trained models; with none, say so and stop the page."""
    return choose_model(final_models_or_stop(what, decoder_only), key=key, where=where)


def model_controls(what: str, key: str, widths: list) -> tuple[registry.ModelEntry, list]:
    """A row of columns whose first picks the model (as choose_final_model); returns it and the other columns."""
    first, *rest = st.columns(widths)
    return choose_final_model(what, key, where=first), rest


def load_or_stop(entry: registry.ModelEntry) -> Checkpoint:
    """The loaded checkpoint, or its problem (e.g. weights missing) shown with st.error and the page stopped."""
    try:
        return loaders.load_model(entry.path)
    except CSAEError as e:
        st.error(f"{entry.long_label} cannot be loaded: {e}")
        st.stop()


def loadable(entries: Sequence[registry.ModelEntry]) -> list[registry.ModelEntry]:
    """The entries whose checkpoints load; the others are named in one warning instead of failing the page."""
    ok, bad = [], []
    for e in entries:
        try:
            loaders.load_model(e.path)
            ok.append(e)
        except CSAEError as err:
            bad.append(f"- {e.long_label}: {err}")
    if bad:
        st.warning("Left out, because their checkpoints cannot be loaded:\n\n" + "\n".join(bad))
    return ok


def no_models(what: str = "this view", dataset: str | None = None) -> None:
    """Say that no trained model was found, where we looked, and which command makes one."""
    where = registry.checkpoints_dir()
    on = f" for {data.DATASETS[dataset].title}" if dataset in data.DATASETS else ""
    st.info(f"No trained model{on} was found in `{where}`, and {what} needs one. Train the model zoo with "
            f"`{registry.TRAIN_COMMANDS[0]}`, or one model with `{registry.TRAIN_COMMANDS[1]}` "
            f"(then export it to `checkpoints/` or point `{registry.ENV_VAR}` at its folder). "
            f"The PEDCC sphere view works without models.")


def note_folder_models(datasets: Sequence[str], what: str) -> None:
    """Say (st.info) that models trained on image folders are left out of a view that needs a test set."""
    folders = [d for d in datasets if d not in data.DATASETS]
    if folders:
        st.info(f"{what} leaves out the models trained on image folders ({', '.join(f'`{d}`' for d in folders)}): "
                f"there is no test set for them here.")


def no_dataset(name: str, what: str = "This view") -> None:
    if name not in data.DATASETS:  # e.g. a model trained with `train --dataset <image folder>`
        st.info(f"{what} needs a test set, and there is none for `{name}`: that model was trained on an image "
                f"folder. Pick a model trained on {', '.join(s.title for s in data.DATASETS.values())}.")
        return
    spec = data.DATASETS[name]
    st.warning(f"{what} needs the {spec.title} test images, which were not found. Get them with the "
               f"download button on the Home page or `python -m csae_core data download {name}`, or set "
               f"`{data.ENV_VAR}` to a folder holding `{spec.folder}/`.")


def shown_path(path, base: Path | None = None) -> str:
    """A path as the app shows it: relative to ``base`` or the project root (``../`` for its siblings, such
    as ../shared), never the machine's absolute layout; a path elsewhere shows only its last two parts."""
    if not path:
        return ""
    p = Path(path).resolve()
    bases = ([base.resolve()] if base is not None else []) + [data.PROJECT_ROOT, data.PROJECT_ROOT.parent]
    for b in bases:
        if p == b or p.is_relative_to(b):
            return os.path.relpath(p, data.PROJECT_ROOT if b == data.PROJECT_ROOT.parent else b)
    return ".../" + "/".join(p.parts[-2:])


def shown_text(text: str | None) -> str:
    """A message with the project's absolute paths made relative."""
    text = text or ""
    return text.replace(f"{data.PROJECT_ROOT.parent}/", "../").replace(f"{data.PROJECT_ROOT}/", "")


def download_source() -> tuple[str, str]:
    """(where downloads come from, the folder they go to) in words, for the Home page's confirmation."""
    source = (f"the mirror `{os.environ[data.URL_VAR]}` (`{data.URL_VAR}`)" if os.environ.get(data.URL_VAR)
              else "the official sites, checked against their published MD5 sums")
    return source, shown_path(data.default_download_root()) or "data"


def image_row(png: bytes, caption: str | None = None, where=None) -> None:
    """Show PNG bytes from app.grids as they are (output_format "auto" would re-encode them as JPEG)."""
    (where or st).image(png, caption=caption, output_format="PNG")


def download_dataset_button(name: str, key: str) -> bool:
    """A button that downloads dataset `name` with a progress bar; True when a download finished.
    Errors (offline, checksum mismatch, disk full) are shown with st.error, never as a traceback."""
    spec = data.DATASETS[name]
    if not st.button(f"Download {spec.title}", key=key):
        return False
    bar = st.progress(0.0, text=f"Downloading {spec.title}…")

    def progress(done: int, total: int | None) -> None:
        if total:
            bar.progress(min(done / total, 1.0), text=f"{spec.title}: {done / 1e6:.1f} of {total / 1e6:.1f} MB")
        else:
            bar.progress(0.0, text=f"{spec.title}: {done / 1e6:.1f} MB")

    try:
        folder = data.download_dataset(name, progress=progress)
    except CSAEError as e:
        bar.empty()
        st.error(str(e))
        return False
    except OSError as e:  # network or disk trouble that csae_core did not translate
        bar.empty()
        st.error(f"Downloading {spec.title} failed: {e}. Fix: check the network connection and free disk "
                 f"space, or run `python -m csae_core data download {name}`.")
        return False
    bar.progress(1.0, text=f"{spec.title} saved to {folder}")
    return True
