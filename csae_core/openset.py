"""Open-set recognition: does a model know when an input is none of its classes?

Every score here is an *outlier score*: higher means "more likely unknown". Which scores a model
has follows from what it can do, never from its kind's name:

* ``distance`` -- distance of the latent to the nearest PEDCC centroid (models with ``centroids``);
* ``recon``    -- per-image MSE of the reconstruction clipped to [0, 1] (models with a decoder; a
  label-conditional decoder decodes under the label with the best ELBO);
* ``combined`` -- ``distance`` and ``recon`` each z-scored with the mean and standard deviation of
  the known test set's *threshold half*, then added (fixed in advance: no weight is fitted, and the
  unknown set is never looked at);
* ``msp``      -- minus the maximum softmax probability (models whose output has class logits);
* ``energy``   -- minus logsumexp of the logits (Liu et al. 2020);
* ``elbo``     -- minus the best label's ELBO: min over labels of the summed Bernoulli BCE of the
  posterior mean's decoding plus the posterior's KL (models with ``neg_elbo``: the CVAE).

The threshold that accepts 95 % of known images is set on the *threshold half* of the known test set (the
even-indexed test images, kept under the key 'threshold'); the other half (the odd-indexed ones, 'test') is
what the app's histogram shows. Not on training images: the zoo's final models train on all 60,000 of them,
so a threshold set there would be too tight. The reported rates are cross-fitted over every known test image
(each half's threshold judges the other half), so no image is judged by a threshold it helped set.
``fpr_at_95_tpr`` is the fraction of unknown test images accepted as known at those thresholds; the ROC convention takes the known
class as positive (TPR = known images accepted, FPR = unknown images accepted), and ``aupr`` is
the average precision of detecting the *unknown* images (AUPR-out).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from .classify import nearest_centroid
from .datasets import DATASETS
from .errors import CSAEError
from .evaluate import batches, reconstruction_errors

__all__ = ["THRESHOLD_SPLIT", "split_known_test", "TARGET_TPR", "SCORE_DESCRIPTIONS", "UNKNOWN_SETS",
           "available_scores", "default_score", "check_scores", "raw_scores_needed", "score_images",
           "Standardizer", "combine", "threshold_at_tpr", "openset_metrics", "roc_points", "load_known",
           "load_unknown", "unknown_subsets", "unknown_title", "scores_from_raw", "OpenSetResult", "evaluate_openset"]

THRESHOLD_SPLIT = "the even-indexed half of the known test set"  # what sets thresholds (key 'threshold')
TARGET_TPR = 0.95  # keep 95 % of known images: the usual operating point (FPR at 95 % TPR)

SCORE_DESCRIPTIONS = {
    "distance": "distance to the nearest PEDCC centroid",
    "recon": "reconstruction MSE (best label for a conditional decoder)",
    "combined": "distance + reconstruction error, each z-scored on the known threshold half",
    "msp": "minus the maximum softmax probability",
    "energy": "energy, -logsumexp(logits)",
    "elbo": "minus the best label's ELBO (BCE + KL)",
}
# For each outlier-score name, the raw scores it is built from.
_NEEDS = {"distance": ("distance",), "recon": ("recon",), "combined": ("distance", "recon"),
          "msp": ("msp",), "energy": ("energy",), "elbo": ("elbo",)}



def _unknown_sets() -> dict[str, tuple[str, str, str]]:
    """Unknown sets, from the dataset registry: name -> (dataset, split, classes to leave out). Every dataset's
    test split; also without its look-alike classes, where it has some; datasets no model trains on first."""
    out = {}
    for name, spec in sorted(DATASETS.items(), key=lambda item: item[1].trainable):
        out[name] = (name, "test", "")
        if spec.lookalikes:
            out[f"{name}-no-{spec.lookalikes}"] = (name, "test", spec.lookalikes)
    return out


UNKNOWN_SETS = _unknown_sets()  # emnist-letters, emnist-letters-no-ilosz, mnist, fashion-mnist


def unknown_title(name: str) -> str:
    """'MNIST', 'EMNIST letters (all)', 'EMNIST letters without i, l, o, s, z'."""
    if name not in UNKNOWN_SETS:
        return name
    dataset, _, leave_out = UNKNOWN_SETS[name]
    spec = DATASETS[dataset]
    if leave_out:
        return f"{spec.title} without {', '.join(leave_out)}"
    return f"{spec.title} (all)" if spec.lookalikes else spec.title


# ---------------------------------------------------------------- what a model can score
# Capabilities are read from the model (`has_centroids`, `has_decoder`, `has_logits`, `neg_elbo`), never
# from its kind's name, so a new model kind gets the scores its abilities allow.

def _has(model, ability: str) -> bool:
    return bool(getattr(model, ability, False))


def _has_elbo(model) -> bool:
    return callable(getattr(model, "neg_elbo", None))


def available_scores(model) -> list[str]:
    """The outlier scores `model` (or a model class) supports, its default first."""
    out = []
    if _has(model, "has_centroids") and (isinstance(model, type) or getattr(model, "centroids", None) is not None):
        out.append("distance")
    if _has_elbo(model):
        out.append("elbo")
    if _has(model, "has_decoder"):
        out += ["combined", "recon"] if "distance" in out else ["recon"]
    if _has(model, "has_logits"):
        out += ["msp", "energy"]
    return out


def default_score(model) -> str:
    """The score reported when none is asked for: the model's most natural one (distance for
    centroid models, the ELBO for a CVAE, maximum softmax for a plain classifier)."""
    scores = available_scores(model)
    if not scores:
        raise CSAEError("this model has neither centroids, a decoder nor class logits: nothing to score")
    return scores[0]


def raw_scores_needed(names) -> tuple[str, ...]:
    """The raw per-image scores that outlier scores `names` are built from."""
    unknown = [n for n in names if n not in _NEEDS]
    if unknown:
        raise CSAEError(f"unknown score {unknown[0]!r}: choose from {', '.join(_NEEDS)}")
    return tuple(dict.fromkeys(r for n in names for r in _NEEDS[n]))


def check_scores(model, names) -> None:
    """Raise a one-line CSAEError naming the problem and the fix if `model` cannot give scores `names`."""
    have = available_scores(model)
    for n in names:
        if n not in _NEEDS:
            raise CSAEError(f"unknown score {n!r}: choose from {', '.join(_NEEDS)}")
        if n not in have:
            why = {"distance": "it has no PEDCC centroids", "combined": "it needs PEDCC centroids and a decoder",
                   "recon": "it has no decoder", "elbo": "it has no posterior over labels (not a CVAE)",
                   "msp": "it has no class logits", "energy": "it has no class logits"}[n]
            raise CSAEError(f"score {n!r} does not apply to this {model.config.kind} model ({why}); "
                            f"use one of {', '.join(have)}")


# ---------------------------------------------------------------- one pass over the images

@torch.no_grad()
def _batch_scores(model, x: torch.Tensor, raw: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """Raw outlier scores (B,) of one float batch, from a single pass through the model."""
    out = {}
    if _has_elbo(model) and ("elbo" in raw or "recon" in raw):
        nelbo, mus = model.neg_elbo(x)  # (B, n) negative ELBO under every label, (n, B, d) posterior means
        out["elbo"], pred = nelbo.min(1)  # the best label's
        if "recon" in raw:  # decoded under the best label, as `reconstruct` does for an unlabelled image
            out["recon"] = reconstruction_errors(model.decode(mus[pred, torch.arange(len(x), device=x.device)], pred), x)
    else:
        # One pass: latent, prediction and (only if needed: it costs 3x the encoder) the reconstruction.
        res = model.infer(x, with_recon="recon" in raw)
        if "distance" in raw:
            out["distance"] = nearest_centroid(res.z, model.centroids)[1].min(1).values
        if "recon" in raw:
            out["recon"] = reconstruction_errors(res.recon, x)
        if "msp" in raw or "energy" in raw:
            logits = res.logits.float()  # (B, n)
            out["msp"] = -logits.softmax(1).max(1).values
            out["energy"] = -torch.logsumexp(logits, 1)
    return {k: v for k, v in out.items() if k in raw}


@torch.no_grad()
def score_images(model, images: torch.Tensor, raw: tuple[str, ...], batch_size: int = 250,
                 device="cpu") -> dict[str, np.ndarray]:
    """Raw outlier scores {name: (N,) float64} of uint8 images (N, C, H, W), one forward pass per batch."""
    model.eval()
    parts: dict[str, list] = {k: [] for k in raw}
    fmt = torch.channels_last if images.dim() == 4 else torch.contiguous_format
    with torch.inference_mode():
        for _, x in batches(images, batch_size, device):
            for k, v in _batch_scores(model, x.contiguous(memory_format=fmt), raw).items():
                parts[k].append(v.double().cpu())
    return {k: torch.cat(v).numpy() if v else np.zeros(0) for k, v in parts.items()}


# ---------------------------------------------------------------- combining and thresholds

@dataclass(frozen=True)
class Standardizer:
    """z-scoring with the mean and standard deviation of the known threshold half ('threshold')."""

    mean: float
    std: float

    @classmethod
    def fit(cls, values: np.ndarray) -> "Standardizer":
        values = np.asarray(values, dtype=float)
        return cls(float(values.mean()), float(values.std()) or 1.0)

    def __call__(self, values: np.ndarray) -> np.ndarray:
        return (np.asarray(values, dtype=float) - self.mean) / self.std


def combine(raw: dict[str, np.ndarray], stats: dict[str, Standardizer]) -> np.ndarray:
    """The `combined` score: z(distance) + z(recon), with the threshold half's statistics."""
    return stats["distance"](raw["distance"]) + stats["recon"](raw["recon"])


def finite_scores(scores: np.ndarray) -> np.ndarray:
    """Outlier scores with NaN and +inf as the largest finite float (the most unknown: an input the model
    cannot score is no known image) and -inf as the lowest; the order of finite scores is kept."""
    big = np.finfo(float).max
    return np.nan_to_num(np.asarray(scores, dtype=float), nan=big, posinf=big, neginf=-big)


def threshold_at_tpr(known_scores: np.ndarray, tpr: float = TARGET_TPR) -> float:
    """The smallest threshold t with at least `tpr` of `known_scores` <= t (images with score <= t are
    accepted as known). Set it on the threshold half's scores, never on the images it is judged on."""
    s = finite_scores(known_scores)
    if s.size == 0:
        raise CSAEError("no known images to set a threshold on")
    return float(np.quantile(s, tpr, method="inverted_cdf"))


def openset_metrics(known: np.ndarray, unknown: np.ndarray, threshold: float) -> dict:
    """AUROC, AUPR-out and the rates at `threshold` for outlier scores of known and unknown test images.

    fpr_at_95_tpr: unknown images accepted (score <= threshold); known_accepted: the known test images'
    true positive rate at that threshold (near 0.95 when the two halves agree)."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    # sklearn refuses inf/NaN (a model with infinite outputs): they count as the most unknown.
    known, unknown = finite_scores(known), finite_scores(unknown)
    if known.size == 0 or unknown.size == 0:
        raise CSAEError(f"need known and unknown images, got {known.size} and {unknown.size}")
    is_unknown = np.r_[np.zeros(known.size), np.ones(unknown.size)]
    scores = np.r_[known, unknown]
    threshold = float(finite_scores(np.array([threshold]))[0])
    return {
        "auroc": float(roc_auc_score(is_unknown, scores)),
        "aupr": float(average_precision_score(is_unknown, scores)),
        "fpr_at_95_tpr": float((unknown <= threshold).mean()),
        "threshold_at_95_tpr": threshold,
        "known_accepted": float((known <= threshold).mean()),
    }


def roc_points(known: np.ndarray, unknown: np.ndarray, max_points: int = 400) -> tuple[np.ndarray, np.ndarray]:
    """ROC curve (FPR = unknown accepted, TPR = known accepted) from sklearn's roc_curve, thinned to
    at most `max_points` points for plotting."""
    from sklearn.metrics import roc_curve

    is_known = np.r_[np.ones(len(known)), np.zeros(len(unknown))]
    if len(known) == 0 or len(unknown) == 0:  # no curve without both kinds of images
        return np.array([0.0, 1.0]), np.array([0.0, 1.0])
    fpr, tpr, _ = roc_curve(is_known, -finite_scores(np.r_[known, unknown]), drop_intermediate=True)
    if len(fpr) > max_points:
        keep = np.unique(np.r_[np.linspace(0, len(fpr) - 1, max_points).astype(int), len(fpr) - 1])
        fpr, tpr = fpr[keep], tpr[keep]
    return fpr, tpr


# ---------------------------------------------------------------- data

def _pad(images: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 (N, 28, 28) -> (N, 1, size, size), zero-padded centrally as the models were trained."""
    from .preprocess import pad

    return pad(images[:, None], size)


def _subsample(n: int, limit: int) -> torch.Tensor:
    """Evenly spaced indices: the first N of a class-sorted split would be one class."""
    return torch.arange(n) if not limit or limit >= n else torch.linspace(0, n - 1, limit).round().long()


def split_known_test(images: torch.Tensor) -> dict[str, torch.Tensor]:
    """{'threshold': the even-indexed test images (they set thresholds and z-scores), 'test': the odd-indexed
    ones (every figure)}: interleaved, so both halves hold every class whatever the file's order."""
    return {"threshold": images[0::2], "test": images[1::2]}


def load_known(dataset: str, size: int, data_dir=None, limit: int = 0) -> dict[str, torch.Tensor]:
    """split_known_test of the known dataset's test images, uint8 (N, 1, size, size); `limit` keeps an evenly
    spaced subset of each half. The training split is not read: models may have trained on any of it."""
    from . import data

    if dataset not in DATASETS:
        raise CSAEError(f"open-set scoring needs a known dataset among {', '.join(DATASETS)}, got {dataset!r}")
    test, _ = data.load_split(dataset, "test", data_dir)
    return {k: _pad(v[_subsample(len(v), limit)], size) for k, v in split_known_test(test).items()}


def load_unknown(name: str, size: int, data_dir=None, limit: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Images uint8 (N, 1, size, size) and labels of an unknown set in UNKNOWN_SETS."""
    from . import data

    if name not in UNKNOWN_SETS:
        raise CSAEError(f"unknown dataset {name!r}: choose from {', '.join(UNKNOWN_SETS)}")
    dataset, split, leave_out = UNKNOWN_SETS[name]
    images, labels = data.load_split(dataset, split, data_dir)
    if leave_out:
        names = DATASETS[dataset].class_names
        drop = torch.tensor([names.index(c) for c in leave_out])
        keep = ~torch.isin(labels, drop)
        images, labels = images[keep], labels[keep]
    idx = _subsample(len(labels), limit)
    return _pad(images[idx], size), labels[idx]


def unknown_subsets(name: str, labels) -> dict[str, np.ndarray]:
    """Subsets of unknown set `name` also worth reporting, as boolean masks over its images: EMNIST
    letters without the digit-like letters (the shipped test split holds a-m, so that drops i and l)."""
    dataset, _, leave_out = UNKNOWN_SETS.get(name, (None, None, None))
    if dataset is None or leave_out or not DATASETS[dataset].lookalikes:
        return {}
    spec = DATASETS[dataset]
    drop = [spec.class_names.index(c) for c in spec.lookalikes]
    return {f"{dataset}-no-{spec.lookalikes}": ~np.isin(np.asarray(labels), drop)}


# ---------------------------------------------------------------- one model against one unknown set

@dataclass
class OpenSetResult:
    """Outlier scores of one model on its known threshold/test halves and on unknown images."""

    scores: dict[str, dict[str, np.ndarray]]  # score name -> {'threshold', 'test', 'unknown'} -> (N,)
    unknown_labels: np.ndarray  # (N_unknown,) class labels within the unknown dataset
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)

    def metrics(self, name: str, unknown_mask: np.ndarray | None = None) -> dict:
        """Metrics of score `name` over every known test image; `unknown_mask` restricts the unknown images.
        AUROC/AUPR need no threshold. The rates are cross-fitted: each half's 95 %-TPR threshold judges the
        other half, so no image is judged by a threshold it helped set; `threshold_at_95_tpr` is the threshold
        half's ('threshold'), the one the app starts its slider at."""
        s = self.scores[name]
        unknown = s["unknown"] if unknown_mask is None else s["unknown"][unknown_mask]
        halves = (s["threshold"], s["test"])
        cuts = [threshold_at_tpr(h) for h in halves]
        m = openset_metrics(np.r_[halves[0], halves[1]], unknown, cuts[0])
        folds = [openset_metrics(halves[1], unknown, cuts[0]), openset_metrics(halves[0], unknown, cuts[1])]
        m["fpr_at_95_tpr"] = float(np.mean([f["fpr_at_95_tpr"] for f in folds]))
        m["known_accepted"] = float((folds[0]["known_accepted"] * len(halves[1])
                                     + folds[1]["known_accepted"] * len(halves[0])) / (len(halves[0]) + len(halves[1])))
        return {**m, "known_images": int(len(halves[0]) + len(halves[1])), "unknown_images": int(len(unknown)),
                "threshold_images": int(len(halves[0])), "score": name}


def scores_from_raw(raw: dict[str, dict[str, np.ndarray]], names) -> dict[str, dict[str, np.ndarray]]:
    """Outlier scores `names` from raw scores {split: {raw name: (N,)}}; `combined` is z-scored with
    threshold-half statistics only."""
    out = {}
    for name in names:
        if name == "combined":
            stats = {k: Standardizer.fit(raw["threshold"][k]) for k in ("distance", "recon")}
            out[name] = {split: combine(r, stats) for split, r in raw.items()}
        else:
            out[name] = {split: r[name] for split, r in raw.items()}
    return out


def evaluate_openset(model, known: dict[str, torch.Tensor], unknown: torch.Tensor, unknown_labels: torch.Tensor,
                     names=None, batch_size: int = 250, device="cpu") -> OpenSetResult:
    """Score `model` on known {'threshold', 'test'} and unknown uint8 images; `names` (default: every
    score the model has) are all derived from one forward pass per image."""
    import time

    names = list(names or available_scores(model))
    check_scores(model, names)
    raw_names = raw_scores_needed(names)
    t0 = time.perf_counter()
    raw = {split: score_images(model, imgs, raw_names, batch_size, device)
           for split, imgs in (("threshold", known["threshold"]), ("test", known["test"]), ("unknown", unknown))}
    return OpenSetResult(scores_from_raw(raw, names), unknown_labels.numpy(), time.perf_counter() - t0)
