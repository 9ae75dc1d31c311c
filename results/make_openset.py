"""results/openset.md and openset.csv: open-set recognition of every shipped final model (not typed by hand).

    python results/make_openset.py            # scores every final model of checkpoints/manifest.json

Each model scores its known dataset's test images, split in two (csae_core.openset.split_known_test): the
even-indexed half sets the 95 %-TPR threshold and the z-scores, the odd-indexed half is scored against it
(the final models train on all 60,000 training images, so none of those can set a threshold), and the
unknown sets of its pair, every score from one pass
(csae_core.openset). Per-image scores are cached under runs/openset-cache/, keyed by the weights' SHA-256,
so a retrained zoo is rescored and an interrupted run resumes; --no-cache recomputes everything.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

from csae_core import openset
from csae_core.checkpoint import load_checkpoint
from csae_core.datasets import DATASETS, TRAINABLE
from csae_core.model import DEFAULT_BETA, DEFAULT_KIND, KINDS

ROOT = Path(__file__).resolve().parents[1]
PAIRS = {name: DATASETS[name].openset_unknowns for name in TRAINABLE}  # known dataset -> unknown sets
ORDER = list(KINDS)  # Table 3's rows, then the CVAE
# Scoring a label-conditioned model (the CVAE) costs one encode and one decode per class per image (10x):
# such models are scored on evenly spaced subsets of this many images per split (stated in the table).
LABEL_CONDITIONED_IMAGES = 1000
CLEAR_SE = 2.0  # an AUROC difference counts as clear beyond this many standard errors (Hanley-McNeil)


def final_models(manifest: list[dict]) -> list[dict]:
    """The last epoch of seed 0 (the lowest seed shipped) of each (dataset, model, beta): the app's models,
    epoch snapshots and the extra seeds of Table 3's spread left out."""
    best = {}
    rank = lambda row: (int(row.get("seed") or 0), -row["epoch"])
    for row in manifest:
        key = (row["dataset"], row["model"], float(row.get("beta", 0.0)))
        if key not in best or rank(row) < rank(best[key]):
            best[key] = row
    return sorted(best.values(), key=lambda r: (list(PAIRS).index(r["dataset"]) if r["dataset"] in PAIRS else 9,
                                               ORDER.index(r["model"]) if r["model"] in ORDER else 9, r["beta"]))


def label(row) -> str:
    kind = KINDS.get(row["model"])
    return kind.label(row["beta"], paper=True) if kind else row["model"]


class Scorer:
    """Raw per-image scores of one checkpoint on named image sets, cached on disk by weights hash."""

    def __init__(self, cache: Path | None):
        self.cache = cache
        self.images: dict[tuple, tuple] = {}

    def data(self, kind: str, name: str, size: int, limit: int):
        key = (kind, name, size, limit)
        if key not in self.images:
            if kind == "known":
                self.images[key] = (openset.load_known(name, size, limit=limit), None)
            else:
                self.images[key] = openset.load_unknown(name, size, limit=limit)
        return self.images[key]

    def raw(self, ckpt, model, split: str, images: torch.Tensor, raw_names) -> dict[str, np.ndarray]:
        sha = ckpt.meta.get("weights_sha256", "nohash")[:16]
        path = self.cache / f"{sha}-{split}-{len(images)}.npz" if self.cache else None
        if path is not None and path.exists():
            stored = np.load(path)
            if all(n in stored for n in raw_names):
                return {n: stored[n] for n in raw_names}
        t0 = time.perf_counter()
        out = openset.score_images(model, images, raw_names, batch_size=250)
        dt = time.perf_counter() - t0
        print(f"  {split}: {len(images)} images in {dt:.1f} s ({len(images) / dt:.0f} images/s)", flush=True)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            np.savez(path, **out)
        return out


def auroc_se(a: float, n_known: int, n_unknown: int) -> float:
    """Hanley & McNeil (1982) standard error of an AUROC."""
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    return math.sqrt(max(a * (1 - a) + (n_unknown - 1) * (q1 - a * a) + (n_known - 1) * (q2 - a * a), 0)
                     / (n_known * n_unknown))


def score_zoo(rows: list[dict], scorer: Scorer, label_conditioned_images: int) -> list[dict]:
    out = []
    for row in rows:
        ckpt = load_checkpoint(ROOT / row["path"])
        model = ckpt.model.to(memory_format=torch.channels_last)
        names = openset.available_scores(model)
        raw_names = openset.raw_scores_needed(names)
        limit = label_conditioned_images if getattr(model, "label_conditioned", False) else 0
        size = ckpt.config.image_size
        print(f"{row['dataset']} {label(row)}: {', '.join(names)}", flush=True)
        known, _ = scorer.data("known", row["dataset"], size, limit)
        raw = {s: scorer.raw(ckpt, model, s, known[s], raw_names) for s in ("threshold", "test")}
        for unknown in PAIRS.get(row["dataset"], ()):
            images, labels = scorer.data("unknown", unknown, size, limit)
            raw_u = {**raw, "unknown": scorer.raw(ckpt, model, unknown, images, raw_names)}
            res = openset.OpenSetResult(openset.scores_from_raw(raw_u, names), labels.numpy())
            sets = {unknown: None, **openset.unknown_subsets(unknown, labels.numpy())}
            for set_name, mask in sets.items():
                for name in names:
                    m = res.metrics(name, mask)
                    out.append({"dataset": row["dataset"], "model": row["model"], "beta": row["beta"],
                                "label": label(row), "recipe": row.get("recipe"), "unknown": set_name,
                                "score": name,
                                "auroc": m["auroc"], "aupr": m["aupr"], "fpr_at_95_tpr": m["fpr_at_95_tpr"],
                                "threshold_at_95_tpr": m["threshold_at_95_tpr"],
                                "known_accepted": m["known_accepted"],
                                "auroc_se": auroc_se(m["auroc"], m["known_images"], m["unknown_images"]),
                                "known_images": m["known_images"], "unknown_images": m["unknown_images"],
                                "threshold_images": m["threshold_images"],
                                "checkpoint": row["path"]})
    return out


def beta_trend(results: list[dict]) -> list[str]:
    """For each pair and CSAE score: AUROC against β, and whether the noise helps rejection."""
    lines = ["## Does the training noise β help rejection?", "",
             f"AUROC of the CSAE models by β, per pair and score. A change counts as clear when it exceeds "
             f"{CLEAR_SE:g} standard errors (Hanley–McNeil, the two AUROCs treated as independent) of the "
             f"difference; ρ is Spearman's rank correlation of AUROC with β. That error covers the sampling of test "
             f"images only: each β is one training run, so run-to-run variation is not in it, and differences of a "
             f"few thousandths may not survive retraining with another seed.", ""]
    csae = [r for r in results if r["model"] == DEFAULT_KIND]  # the kind whose β the zoo sweeps
    betas = sorted({r["beta"] for r in csae})
    if len(betas) < 2:
        return lines + ["Fewer than two CSAE β values are shipped: no trend to report."]
    lines += ["| known | unknown | score | " + " | ".join(f"β={b:g}" for b in betas) + " | ρ | verdict |",
              "|---" * (len(betas) + 5) + "|"]
    verdicts = []
    for (ds, unknown, score) in dict.fromkeys((r["dataset"], r["unknown"], r["score"]) for r in csae):
        by_beta = {r["beta"]: r for r in csae if (r["dataset"], r["unknown"], r["score"]) == (ds, unknown, score)}
        if len(by_beta) < 2:
            continue
        bs = sorted(by_beta)
        a = np.array([by_beta[b]["auroc"] for b in bs])
        rho = float(np.corrcoef(np.argsort(np.argsort(bs)), np.argsort(np.argsort(a)))[0, 1])
        first, last = by_beta[bs[0]], by_beta[bs[-1]]
        se = math.hypot(first["auroc_se"], last["auroc_se"])
        delta = last["auroc"] - first["auroc"]
        if abs(delta) <= CLEAR_SE * se:
            verdict = "no clear change"
        else:
            verdict = ("helps" if delta > 0 else "hurts") + f" ({delta:+.3f} from β={bs[0]:g} to β={bs[-1]:g}"
            verdict += ", monotonic)" if abs(rho) > 0.99 else ")"
        verdicts.append((ds, unknown, score, verdict))
        cells = [f"{by_beta[b]['auroc']:.3f}" if b in by_beta else "—" for b in betas]
        lines.append(f"| {openset.unknown_title(ds)} | {openset.unknown_title(unknown)} | {score} | " + " | ".join(cells)
                     + f" | {rho:+.2f} | {verdict} |")
    lines += recipe_caveats(csae)
    helps = [v for v in verdicts if v[3].startswith("helps")]
    hurts = [v for v in verdicts if v[3].startswith("hurts")]
    lines += ["", f"In short: of {len(verdicts)} (pair, score) combinations, β from {betas[0]:g} to {betas[-1]:g} "
              f"clearly improves rejection in {len(helps)}, clearly worsens it in {len(hurts)}, and makes no clear "
              f"difference in {len(verdicts) - len(helps) - len(hurts)}."]
    for tag, group in (("Improves", helps), ("Worsens", hurts)):
        if group:
            lines.append(f"{tag}: " + "; ".join(f"{openset.unknown_title(d)} vs {openset.unknown_title(u)} ({s})"
                                                for d, u, s, _ in group) + ".")
    return lines


def recipe_caveats(csae: list[dict]) -> list[str]:
    """A line per known dataset whose β columns come from more than one training recipe (MNIST β=0.02 is a GPU
    paper-recipe model beside CPU ones): such a column is not a like-for-like point of the trend."""
    out = []
    for ds in dict.fromkeys(r["dataset"] for r in csae):
        recipes = {r["beta"]: r.get("recipe") for r in csae if r["dataset"] == ds}
        common = max(set(recipes.values()), key=list(recipes.values()).count)
        odd = {b: rc for b, rc in sorted(recipes.items()) if rc != common}
        if odd:
            out.append(f"{openset.unknown_title(ds)}: " + ", ".join(f"β={b:g}" for b in odd) + " "
                       + ("is" if len(odd) == 1 else "are") + " from the "
                       + "/".join(sorted({str(rc) for rc in odd.values()})) + f" recipe, the other β from {common}, "
                       f"so {'that column is' if len(odd) == 1 else 'those columns are'} not like-for-like; "
                       f"the verdicts compare the lowest and highest β.")
    return ["", *out] if out else []


# (kind, β, score): each kind at the default β (or its only one), with every score but the bare `recon`.
HEADLINE = [(k.name, DEFAULT_BETA if DEFAULT_BETA in k.betas else k.betas[0], score) for k in KINDS.values()
            for score in openset.available_scores(k.cls) if score != "recon"]


def headline(results: list[dict]) -> list[str]:
    """AUROC / FPR@95 of the app's default CSAE against the baselines, every pair in one table."""
    pairs = list(dict.fromkeys((r["dataset"], r["unknown"]) for r in results))
    lines = ["## Headline", "", "AUROC / FPR@95 (higher / lower is better).", "",
             "| model | score | " + " | ".join(f"{openset.unknown_title(d)} vs {openset.unknown_title(u)}" for d, u in pairs) + " |",
             "|---" * (2 + len(pairs)) + "|"]
    for model, beta, score in HEADLINE:
        cells, name = [], None
        for d, u in pairs:
            r = next((r for r in results if (r["model"], r["beta"], r["score"], r["dataset"], r["unknown"]) ==
                      (model, beta, score, d, u)), None)
            cells.append(f"{r['auroc']:.3f} / {r['fpr_at_95_tpr']:.3f}" if r else "—")
            name = name or (r and r["label"])
        if name:
            lines.append(f"| {name} | {score} | " + " | ".join(cells) + " |")
    return lines + [""]


def markdown(results: list[dict], rows: list[dict], label_conditioned_images: int) -> str:
    lines = ["# Open-set recognition", "",
             "Generated by `python results/make_openset.py` from the shipped final models "
             "(checkpoints/manifest.json; epoch snapshots left out). Can a model tell an image of none of its "
             "classes from one of them? Every score is an outlier score (higher = more likely unknown):", ""]
    lines += [f"- **{k}**: {v}" for k, v in openset.SCORE_DESCRIPTIONS.items()]
    lines += ["",
              f"AUROC: known test images against unknown ones (0.5 = chance). FPR@95: the fraction of unknown "
              f"images still accepted as known at the threshold that keeps 95 % of the known *threshold* "
              f"images ({openset.THRESHOLD_SPLIT}: the final models trained on every training image), "
              f"cross-fitted: each half's threshold judges the other half, so all known test images count and "
              f"none is judged by a threshold it set; 'known kept' is the fraction of known test images kept that "
              f"way, AUROC is over all of them. The `combined` score is fixed in advance (z-scores from the threshold half, "
              f"added), never fitted on unknown images.",
              "",
              "Caveats: the shipped EMNIST letters test split holds only a–m (10,000 images), so 'without i, l, o, "
              "s, z' drops i and l (8,400 images). "
              f"Label-conditioned models (the CVAE) cost one encode and one decode per class per image and are "
              f"scored on evenly spaced subsets of {label_conditioned_images:,} images per split; the image counts "
              f"are in openset.csv.", ""]
    lines += headline(results)
    for ds in dict.fromkeys(r["dataset"] for r in results):
        unknowns = list(dict.fromkeys(r["unknown"] for r in results if r["dataset"] == ds))
        lines += [f"## {openset.unknown_title(ds)} models", "",
                  "| model | score | " + " | ".join(f"{openset.unknown_title(u)}: AUROC | FPR@95" for u in unknowns)
                  + " | known kept |", "|---" * (2 + 2 * len(unknowns) + 1) + "|"]
        for key in dict.fromkeys((r["label"], r["score"]) for r in results if r["dataset"] == ds):
            cells = []
            kept = None
            for u in unknowns:
                r = next((r for r in results if (r["dataset"], r["label"], r["score"], r["unknown"]) ==
                          (ds, *key, u)), None)
                cells += [f"{r['auroc']:.3f}", f"{r['fpr_at_95_tpr']:.3f}"] if r else ["—", "—"]
                kept = r["known_accepted"] if r else kept
            lines.append(f"| {key[0]} | {key[1]} | " + " | ".join(cells) + f" | {kept:.3f} |")
        lines.append("")
        for u in unknowns:
            best = max((r for r in results if r["dataset"] == ds and r["unknown"] == u), key=lambda r: r["auroc"])
            lines.append(f"- Best against {openset.unknown_title(u)}: {best['label']} with `{best['score']}` "
                         f"(AUROC {best['auroc']:.3f}, FPR@95 {best['fpr_at_95_tpr']:.3f}).")
        for r in results:
            if r["dataset"] == ds and r["auroc"] < 0.5:
                lines.append(f"- Worse than chance: {r['label']} `{r['score']}` against {openset.unknown_title(r['unknown'])} "
                             f"(AUROC {r['auroc']:.3f}): the model finds the unknown images *more* typical than its "
                             f"own (for a likelihood such as the ELBO, simpler images score higher: Nalisnick et "
                             f"al., 2019).")
        lines.append("")
    lines += beta_trend(results)
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cache", default=str(ROOT / "runs" / "openset-cache"), help="per-image score cache folder")
    p.add_argument("--no-cache", action="store_true")
    p.add_argument("--label-conditioned-images", type=int, default=LABEL_CONDITIONED_IMAGES,
                   help="images per split for label-conditioned models (0: all)")
    p.add_argument("--threads", type=int, default=0,
                   help="torch threads (0: torch's default); 1 is faster on a machine already busy")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    manifest = json.loads((ROOT / "checkpoints" / "manifest.json").read_text())
    rows = final_models(manifest)
    t0 = time.perf_counter()
    results = score_zoo(rows, Scorer(None if a.no_cache else Path(a.cache)), a.label_conditioned_images)
    md = markdown(results, rows, a.label_conditioned_images)
    (ROOT / "results" / "openset.md").write_text(md)
    with open(ROOT / "results" / "openset.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(results[0]))
        w.writeheader()
        w.writerows({k: round(v, 6) if isinstance(v, float) else v for k, v in r.items()} for r in results)
    print(md)
    print(f"{len(rows)} models, {len(results)} rows in {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    from csae_core.errors import CSAEError

    try:
        main()
    except CSAEError as e:  # a broken checkpoint or missing dataset: one line naming it, not a traceback
        raise SystemExit(f"error: {e}")
