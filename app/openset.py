"""The open-set view's cached computations and figures (issue 11); pages/open_set.py draws them.

Scores of a model's known threshold and test halves and of an unknown set are computed once per
process and checkpoint version (st.cache_data keyed by checkpoint path, its file stamp, the dataset
folders and the image count). Moving the threshold then only counts array entries and rebuilds a
figure, so a redraw costs milliseconds, not a model pass. Figure builders return go.Figure and make
no Streamlit calls, so they are testable.
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from csae_core import openset

from . import disk_store, loaders, registry

APP_IMAGES = 1000  # images per split scored live (evenly spaced); results/make_openset.py scores all of them
# A label-conditioned model (the CVAE) costs an encode and a decode per class per image: fewer images.
APP_IMAGES_LABEL_CONDITIONED = 200
RESULTS_CSV = Path(__file__).resolve().parents[1] / "results" / "openset.csv"
KNOWN_COLOR, UNKNOWN_COLOR = "#3182bd", "#e6550d"


def unknown_choices(dataset: str) -> list[str]:
    """Unknown sets for models trained on `dataset`: the other datasets whose files are present."""
    return [n for n, (ds, _, _) in openset.UNKNOWN_SETS.items() if ds != dataset and loaders.data_folder(ds)]


def unknown_folder(unknown: str) -> str | None:
    """The folder of unknown set `unknown`'s dataset (None if missing)."""
    return loaders.data_folder(openset.UNKNOWN_SETS[unknown][0])


def score_help() -> str:
    return "; ".join(f"{k}: {v}" for k, v in openset.SCORE_DESCRIPTIONS.items())


def threshold95(split_scores: dict[str, np.ndarray]) -> float:
    """The threshold that keeps 95 % of the known threshold half (never the images the figures are on)."""
    return openset.threshold_at_tpr(split_scores["threshold"])


def roc_curves(results: dict, labels: dict[str, str], shown: tuple[str, str]) -> dict:
    """{'label · score': (FPR, TPR)} of each model's default score, and of the (path, score) `shown` above."""
    curves = {}
    for p, per_score in results.items():
        default = openset.default_score(loaders.load_model(p).model)
        for name, s in per_score.items():
            if (p, name) == shown or name == default:
                curves[f"{labels[p]} · {name}"] = openset.roc_points(s["test"], s["unknown"])
    return curves


def images_for(path: str) -> int:
    return APP_IMAGES_LABEL_CONDITIONED if getattr(loaders.load_model(path).model, "label_conditioned", False) \
        else APP_IMAGES


@loaders.per_checkpoint
@st.cache_data(show_spinner="Scoring known and unknown images (once per model)…", max_entries=64)
@disk_store.persisted
def scores(path: str, stamp, dataset: str, known_folder: str, unknown: str, unknown_folder: str,
           images: int) -> dict[str, dict[str, np.ndarray]]:
    """{score: {'threshold', 'test', 'unknown': (N,) outlier scores}} of every score the model has."""
    ckpt = loaders.load_model(path)
    size = ckpt.config.image_size
    known = openset.load_known(dataset, size, known_folder, images)
    x, labels = openset.load_unknown(unknown, size, unknown_folder, images)
    result = openset.evaluate_openset(ckpt.model, known, x, labels, batch_size=250)
    return {name: finite_for_display(split_scores) for name, split_scores in result.scores.items()}


def finite_for_display(split_scores: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The splits' scores with NaN/+inf just above the largest finite score (and -inf just below the lowest):
    a model with infinite outputs still gets a histogram and slider bounds a browser can draw (inf cannot)."""
    finite = np.concatenate([v[np.isfinite(v)] for v in split_scores.values()] + [np.zeros(0)])
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    pad = max(1.0, abs(hi - lo)) * 0.1
    return {k: np.nan_to_num(np.asarray(v, float), nan=hi + pad, posinf=hi + pad, neginf=lo - pad)
            for k, v in split_scores.items()}


@loaders.per_checkpoint
@st.cache_data(show_spinner="Setting the threshold on the threshold half of the test set (once per model)…",
               max_entries=32)
@disk_store.persisted
def threshold_half_95(path: str, stamp, dataset: str, folder: str, tpr: float = openset.TARGET_TPR) -> float:
    """The centroid distance that accepts `tpr` of the known threshold half (openset.split_known_test)."""
    ckpt = loaders.load_model(path)
    val = openset.load_known(dataset, ckpt.config.image_size, folder)["threshold"]
    distances = openset.score_images(ckpt.model, val, ("distance",), 250)["distance"]
    return openset.threshold_at_tpr(finite_for_display({"threshold": distances})["threshold"], tpr)


def verdicts(classes: np.ndarray, distances: np.ndarray, threshold: float, class_names: list[str]) -> list[str]:
    """'unknown' where the distance to the nearest centroid exceeds `threshold`, else that class's name."""
    return ["unknown" if float(d) > threshold else str(class_names[int(c)]) for c, d in zip(classes, distances)]


def rates(split_scores: dict[str, np.ndarray], threshold: float) -> dict[str, float]:
    """Fractions of known test and unknown images accepted as known (score <= threshold)."""
    def accepted(v: np.ndarray) -> float:
        return float((v <= threshold).mean()) if len(v) else 0.0  # an empty set accepts nothing
    return {"known_accepted": accepted(split_scores["test"]), "unknown_accepted": accepted(split_scores["unknown"])}


def slider_range(split_scores: dict[str, np.ndarray]) -> tuple[float, float]:
    """A threshold range covering the 0.5th-99.5th percentiles of every split's scores."""
    allv = np.concatenate(list(split_scores.values()))
    lo, hi = np.percentile(allv, [0.5, 99.5])
    return float(lo), float(hi) if hi > lo else float(lo) + 1.0


def histogram_figure(known: np.ndarray, unknown: np.ndarray, threshold: float, threshold95: float | None = None,
                     xtitle: str = "outlier score", unknown_name: str = "unknown", height: int = 340) -> go.Figure:
    """Overlaid histograms of known test and unknown scores, with the chosen threshold (solid) and the
    95 %-TPR threshold from the threshold half (dashed)."""
    known, unknown = np.asarray(known, float), np.asarray(unknown, float)
    lo, hi = np.percentile(np.r_[known, unknown], [0.5, 99.5])
    size = (hi - lo) / 60 if hi > lo else 1.0
    bins = dict(start=float(lo), end=float(hi), size=float(size))
    fig = go.Figure([go.Histogram(x=known, name="known (test)", xbins=bins, marker_color=KNOWN_COLOR,
                                  opacity=0.6, histnorm="probability"),
                     go.Histogram(x=unknown, name=unknown_name, xbins=bins, marker_color=UNKNOWN_COLOR,
                                  opacity=0.6, histnorm="probability")])
    fig.add_vline(x=threshold, line_color="black", annotation_text="threshold")
    if threshold95 is not None:
        fig.add_vline(x=threshold95, line_dash="dash", line_color="gray", annotation_text="95 % TPR (threshold half)",
                      annotation_position="bottom right")
    fig.update_layout(barmode="overlay", height=height, margin=dict(l=10, r=10, t=30, b=10),
                      xaxis_title=xtitle + " (higher = more unknown)", yaxis_title="fraction of images",
                      legend=dict(orientation="h", y=1.12))
    return fig


def roc_figure(curves: dict[str, tuple[np.ndarray, np.ndarray]], height: int = 380) -> go.Figure:
    """ROC curves {label: (FPR = unknown accepted, TPR = known accepted)} with the 95 % TPR line."""
    fig = go.Figure()
    for name, (fpr, tpr) in curves.items():
        fig.add_trace(go.Scatter(x=fpr, y=tpr, mode="lines", name=name))
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", line=dict(dash="dot", color="gray"),
                             name="chance", hoverinfo="skip"))
    fig.add_hline(y=openset.TARGET_TPR, line_dash="dash", line_color="gray")
    fig.update_layout(height=height, margin=dict(l=10, r=10, t=10, b=10), xaxis_title="unknown accepted (FPR)",
                      yaxis_title="known accepted (TPR)", xaxis=dict(range=[0, 1]), yaxis=dict(range=[0, 1.01]))
    return fig


def metrics_rows(results: dict[str, dict[str, dict[str, np.ndarray]]]) -> list[dict]:
    """One row per (model label, score) of the view's live subsets."""
    rows = []
    for label, per_score in results.items():
        for name, s in per_score.items():
            if not (len(s["test"]) and len(s["unknown"]) and len(s["threshold"])):
                continue  # an empty set (no unknown image left in a partial copy) has no AUROC
            m = openset.openset_metrics(s["test"], s["unknown"], openset.threshold_at_tpr(s["threshold"]))
            rows.append({"model": label, "score": name, "AUROC": round(m["auroc"], 4), "AUPR": round(m["aupr"], 4),
                         "FPR@95": round(m["fpr_at_95_tpr"], 4), "known kept": round(m["known_accepted"], 4),
                         "threshold": round(m["threshold_at_95_tpr"], 4), "known images": len(s["test"]),
                         "unknown images": len(s["unknown"])})
    return rows


def zoo_rows(dataset: str, unknown: str) -> list[dict]:
    """The full-set rows of results/openset.csv for this pair (empty if it has not been generated)."""
    try:
        stamp = RESULTS_CSV.stat().st_mtime_ns
    except OSError:
        return []
    return [r for r in _read_results(str(RESULTS_CSV), stamp) if (r["dataset"], r["unknown"]) == (dataset, unknown)]


@st.cache_data(show_spinner=False, max_entries=4)
def _read_results(path: str, stamp: int) -> list[dict]:
    with open(path, newline="") as f:
        return [{"dataset": r["dataset"], "unknown": r["unknown"], "model": r["label"], "score": r["score"],
                 "AUROC": float(r["auroc"]), "FPR@95": float(r["fpr_at_95_tpr"]),
                 "known kept": float(r["known_accepted"]), "known images": int(r["known_images"]),
                 "unknown images": int(r["unknown_images"])} for r in csv.DictReader(f)]


def title(name: str) -> str:
    return openset.unknown_title(name)


def default_judge(entries: list):
    """The Letters view's first "Verdict by" model: the default CSAE if listed, else the first with centroids
    (None when none has them)."""
    judges = [e for e in entries if e.has_centroids]
    return next((e for e in judges if (e.dataset, e.kind, e.beta) == registry.DEFAULT_MODEL), judges[0] if judges else None)


def verdict_controls(entries: list, dataset: str, where=None):
    """Letters view: pick the judging model (one with centroids) and its distance threshold, starting at the
    95 %-TPR threshold of the known threshold half. Returns (entry, threshold), or None when no verdict can be given."""
    where = where or st
    judges = [e for e in entries if e.has_centroids]
    folder = loaders.data_folder(dataset)
    if not judges or folder is None:
        return None
    by_path = {e.path: e for e in judges}
    preferred = default_judge(judges).path
    cols = where.columns([1, 2])
    path = cols[0].selectbox("Verdict by", list(by_path), index=list(by_path).index(preferred),
                             format_func=lambda p: by_path[p].label, key="letters_verdict_model")
    t95 = threshold_half_95(path, dataset, folder)
    threshold = cols[1].slider("Unknown beyond this distance to the nearest centroid", 0.0, round(max(3 * t95, 1.0), 2),
                               round(t95, 3), step=0.01, key=f"letters_verdict_threshold_{path}",
                               help=f"Starts at {t95:.3f}: the distance that keeps 95 % of the known "
                                    f"threshold images ({openset.THRESHOLD_SPLIT}).")
    return by_path[path], threshold


def default_models(entries: list) -> list:
    """The Open set view's first choice among one dataset's models: those with class logits (Basenet) and
    the default CSAE, else the first (the warm-up precomputes exactly these)."""
    preferred = registry.default_entry(entries)
    return [e for e in entries if e.has_logits or (preferred and e.path == preferred.path)] or entries[:1]
