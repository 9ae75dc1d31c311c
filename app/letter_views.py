"""The Letters page's views (Fig. 11), as functions of the models shown: no module state.

`LetterModels` is what the page chose (the decoder models of one dataset, the judging model and its
threshold); `show_results` draws dataset letters row-wise per model, `show_letter_rows` draws each user
letter beside every model's reconstruction. Letters arrive as uint8 28x28 pictures and are converted and
tiled once, below the page (app.analysis, app.grids, app.loaders).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import streamlit as st

from . import analysis, grids, letters, loaders, registry, widgets
from . import openset as app_openset

NEAREST_CAPTION = "Nearest class and the distance to its PEDCC centroid, for each CSAE. "


@dataclass(frozen=True)
class LetterModels:
    """The models a Letters view shows, and the verdict settings: (judging entry, distance threshold) or None."""

    models: list[registry.ModelEntry]
    names: list[str]  # class names of the models' dataset
    verdict: tuple | None = None

    @property
    def with_centroids(self) -> list[registry.ModelEntry]:
        return [e for e in self.models if e.has_centroids]

    def verdicts(self, nearest: Callable) -> list[str] | None:
        if not self.verdict:
            return None
        judge, threshold = self.verdict
        return app_openset.verdicts(*nearest(judge.path), threshold, self.names)


def scale_note(entry: registry.ModelEntry) -> str:
    """What a 'near' distance is: digits to their own centroid (median), and centroid to centroid."""
    centroids = analysis.centroids(loaders.load_model(entry.path).model)
    apart = analysis.pairwise_distances(centroids)[np.triu_indices(len(centroids), 1)].min()
    note = f"Neighbouring centroids are {apart:.2f} apart"
    folder = loaders.data_folder(entry.dataset)
    if folder is not None:
        z, labels = loaders.test_latents(entry.path, entry.dataset, folder, 1000)
        own = np.median(analysis.own_centroid_distances(z, labels, centroids))
        title = registry.DATASETS[entry.dataset].title
        note += f"; {title} test images lie at a median {own:.2f} from their own class's centroid"
    return note + f" ({entry.label})."


def show_results(lm: LetterModels, titles, images28: np.ndarray, row_png: Callable, nearest: Callable) -> None:
    """Input row, one reconstruction row per model, and the nearest-class table."""
    widgets.image_row(grids.row_png(images28, loaders.LETTERS_PER_ROW), "input (28×28, padded to 32)")
    for e in lm.models:
        widgets.image_row(row_png(e.path), e.label)
    if not lm.with_centroids:
        return
    rows = letters.nearest_table(titles, {e.label: nearest(e.path) for e in lm.with_centroids}, lm.names)
    for row, v in zip(rows, lm.verdicts(nearest) or []):
        row["verdict"] = v  # by the judging model at the chosen threshold
    st.dataframe(rows, hide_index=True)
    st.caption(NEAREST_CAPTION + scale_note(lm.with_centroids[0]))


def show_letter_rows(lm: LetterModels, titles, images28: np.ndarray, recon: Callable, nearest: Callable) -> None:
    """One row per letter: its input and every model's reconstruction side by side, and beside them that
    letter's nearest class for each CSAE (so models compare without scrolling)."""
    recons = {e.path: recon(e.path) for e in lm.models}
    near = {e.label: nearest(e.path) for e in lm.with_centroids}
    judged = lm.verdicts(nearest)
    for i, title in enumerate(titles):
        tiles, table = st.columns([len(lm.models) + 1, 4 if near else 1], vertical_alignment="center")
        cells = tiles.columns(len(lm.models) + 1)
        widgets.image_row(grids.row_png(images28[i][None]), f"{title} (input)", where=cells[0])
        for cell, e in zip(cells[1:], lm.models):
            widgets.image_row(grids.row_png(recons[e.path][i][None]), e.label, where=cell)
        if judged:
            table.markdown(f"Verdict ({lm.verdict[0].label}): **{judged[i]}**")
        if near:
            table.dataframe([{"model": label, "nearest class": lm.names[int(classes[i])], "distance": float(dist[i])}
                             for label, (classes, dist) in near.items()], hide_index=True,
                            column_config={"distance": st.column_config.NumberColumn(format="%.2f")})
    if near:
        st.caption(NEAREST_CAPTION + scale_note(lm.with_centroids[0]))


def uploaded_letters(uploads) -> list[letters.LetterInput]:
    """The uploads as letters, each decoded and preprocessed once per session. Per-user: the results
    (thumbnails and 28x28 inputs, never the full images) live in this session only, keyed by the uploader's
    file id, at most letters.MAX_LETTERS of them."""
    seen = st.session_state.setdefault("letter_inputs", {})
    uploads = list(uploads or [])
    if len(uploads) > letters.MAX_LETTERS:
        st.warning(f"{len(uploads)} files uploaded: the first {letters.MAX_LETTERS} are used. "
                   f"Remove some to see the others.")
        uploads = uploads[:letters.MAX_LETTERS]
    inputs = []
    for f in uploads:
        if f.file_id not in seen:
            seen[f.file_id] = letters.prepare_image(f.name, f.getvalue())
        inputs.append(seen[f.file_id])
    for stale in set(seen) - {f.file_id for f in uploads}:
        del seen[stale]
    return inputs
