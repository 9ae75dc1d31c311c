"""Which trained models exist. No Streamlit calls: the app caches `scan` in loaders.

Source of truth is `checkpoints/manifest.json` (a JSON list of rows with dataset, model, beta,
epoch, paper_epoch, recipe, test_accuracy, recon_mse, path, ...). While the zoo is still being
trained the manifest may be missing or lag behind, so checkpoint JSONs found under the folder
that the manifest does not list are read directly as well.
"""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path

from csae_core.checkpoint import FORMAT, MAX_JSON_BYTES, MAX_MANIFEST_BYTES, manifest_row_paths, read_regular_file
from csae_core.datasets import DATASETS, TRAINABLE  # noqa: F401  (DATASETS: the pages' dataset registry)
from csae_core.errors import CSAEError
from csae_core.model import DEFAULT_BETA, DEFAULT_KIND, KINDS

ROOT = Path(__file__).resolve().parents[1]
ENV_VAR = "CSAE_CHECKPOINTS_DIR"
USER_ENV_VAR = "CSAE_USER_MODELS_DIR"  # the Train view's models (default <repo>/user_models, git-ignored)
PAPER_EPOCHS = 120  # the paper's schedule; shorter recipes map their epochs onto it
TRAIN_COMMANDS = ("python checkpoints/zoo.py train", "python -m csae_core train --dataset mnist --beta 0.02")

DATASET_ORDER = TRAINABLE  # MNIST first: the paper's main dataset, and the letters page's digits
DEFAULT_MODEL = (TRAINABLE[0], DEFAULT_KIND, DEFAULT_BETA)  # what a page shows before the user picks


@dataclass(frozen=True)
class ModelEntry:
    """One checkpoint, as listed by the manifest or read from its JSON."""

    dataset: str
    kind: str  # a key of csae_core.model.KINDS
    beta: float
    epoch: int
    paper_epoch: int | None  # the epoch of the paper's 120-epoch run: only for models trained with that recipe
    path: str  # absolute path of the checkpoint .json
    recipe: str | None = None
    test_accuracy: float | None = None
    recon_mse: float | None = None
    epochs: int | None = None  # the length of the run this checkpoint comes from
    user: bool = False  # trained from the Train view (user_models/), not shipped
    seed: int = 0  # the training seed: the zoo's extra seeds of a model are for Table 3's mean ± std

    # What the model can do, read from its kind's class (csae_core.model.KINDS[kind].cls); an unknown kind can
    # do nothing.
    def _can(self, ability: str) -> bool:
        return self.kind in KINDS and getattr(KINDS[self.kind].cls, ability)

    has_decoder = property(lambda self: self._can("has_decoder"))
    has_centroids = property(lambda self: self._can("has_centroids"))
    has_logits = property(lambda self: self._can("has_logits"))
    label_conditioned = property(lambda self: self._can("label_conditioned"))
    uses_beta = property(lambda self: self._can("uses_beta"))

    @property
    def label(self) -> str:
        """Short name as in the paper's figures: 'CSAE β=0.02', 'CVAE'."""
        name = KINDS[self.kind].label(self.beta) if self.kind in KINDS else self.kind
        return f"your {name}" if self.user else name

    @property
    def epoch_label(self) -> str:
        """'epoch 120' for the paper's recipe; otherwise the real epoch and recipe: 'epoch 4 of 12, cpu-720k recipe'."""
        if self.paper_epoch:
            return f"epoch {self.paper_epoch}"
        of = f" of {self.epochs}" if self.epochs else ""
        return f"epoch {self.epoch}{of}" + (f", {self.recipe} recipe" if self.recipe else "")

    @property
    def long_label(self) -> str:
        return f"{self.dataset} · {self.label} · {self.epoch_label}"


def checkpoints_dir() -> Path:
    """$CSAE_CHECKPOINTS_DIR if set (tests point it at a fixture), else <repo>/checkpoints."""
    env = os.environ.get(ENV_VAR, "").strip()
    return Path(env).expanduser() if env else ROOT / "checkpoints"


MAX_DEPTH = 3  # checkpoints/<dataset>/<name>.json is depth 2; a training --out folder one more
MAX_FILES = 2000  # JSONs looked at per scan (the zoo has ~25): CSAE_CHECKPOINTS_DIR=/ must not walk the disk
MAX_DIRS = 500  # folders looked into per scan


def _json_files(folder: Path) -> list[Path]:
    """Checkpoint JSON candidates under `folder`: at most MAX_DEPTH folders down and MAX_FILES files, no
    symlinked folder followed, no file whose real path leaves `folder` (a symlinked *.json pointing out)."""
    if not folder.is_dir():
        return []
    inside = folder.resolve()
    found: list[Path] = []
    for visited, (here, dirs, files) in enumerate(os.walk(folder, followlinks=False)):
        if visited >= MAX_DIRS:
            break
        depth = len(Path(here).relative_to(folder).parts)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".")) if depth < MAX_DEPTH else []
        for name in sorted(files):
            if not name.endswith(".json") or name == "manifest.json" or name.startswith("."):
                continue
            p = Path(here) / name
            if p.is_symlink() and not p.resolve().is_relative_to(inside):
                continue
            found.append(p)
            if len(found) >= MAX_FILES:
                return sorted(found)
    return sorted(found)


def stamp(folder: Path) -> tuple:
    """(path, mtime, size) of the manifest and every JSON: a cache key that changes when the zoo does."""
    files = _json_files(folder) + [folder / "manifest.json"]
    out = []
    for p in files:
        try:
            s = p.stat()
        except OSError:
            continue
        out.append((str(p), s.st_mtime_ns, s.st_size))
    return tuple(out)


def is_paper_run(recipe: str | None, train: dict | None) -> bool:
    """A run of the paper's recipe: labelled "paper" AND 120 epochs over the whole training set. Checkpoints
    written before TrainConfig's default recipe became "custom" say "paper" for any run (a 4-epoch run of
    64-image epochs among them), so the label alone is not believed."""
    train = train or {}
    return recipe == "paper" and train.get("epochs") == PAPER_EPOCHS and not train.get("epoch_images")


def recipe_label(recipe: str | None, train: dict | None) -> str | None:
    """The recipe to show: an old checkpoint's default "paper" label on a run that is not the paper's reads
    "custom" (the default label since)."""
    return "custom" if recipe == "paper" and not is_paper_run(recipe, train) else recipe


def _paper_epoch(epoch: int, train: dict | None, recipe: str | None = "paper") -> int | None:
    """The epoch on the paper's 120-epoch scale, only for runs of the paper's recipe: a 12-epoch CPU run's
    epoch 4 is not the paper's epoch 40, and labelling it so would overstate its training."""
    if not is_paper_run(recipe, train):
        return None
    return round(PAPER_EPOCHS * epoch / train["epochs"])


def _resolve(row_path: str, folder: Path) -> Path | None:
    """Manifest paths are relative to the repo root; fixtures may make them relative to the folder
    (csae_core.checkpoint.manifest_row_paths). Either way the file must lie inside the checkpoints folder:
    a path that leaves it is ignored."""
    if Path(row_path).is_absolute():
        return None  # a manifest names its checkpoints inside its own folder, never elsewhere
    inside = folder.resolve()
    for c in manifest_row_paths(folder / "manifest.json", row_path):
        c = c.resolve()
        if c.is_relative_to(inside) and c.is_file():  # no `..` or symlink out of the checkpoints folder
            return c
    return None


def _from_manifest(folder: Path) -> list[ModelEntry]:
    try:
        manifest = folder / "manifest.json"
        if not manifest.is_file():
            return []
        rows = json.loads(read_regular_file(manifest, MAX_MANIFEST_BYTES, "manifest"))
    except (CSAEError, OSError, ValueError, RecursionError):
        return []  # no (or a half-written) manifest: the glob below still finds the checkpoints
    entries = []
    for row in rows if isinstance(rows, list) else []:
        try:
            path = _resolve(str(row["path"]), folder)
            if path is None:
                continue  # listed but not (yet) on disk
            entries.append(ModelEntry(
                dataset=str(row["dataset"]), kind=str(row["model"]), beta=float(row.get("beta", 0.0)),
                epoch=int(row["epoch"]), paper_epoch=row.get("paper_epoch") if is_paper_run(
                    row.get("recipe"), {"epochs": row.get("epochs")}) else None,
                path=str(path), recipe=recipe_label(row.get("recipe"), {"epochs": row.get("epochs")}),
                test_accuracy=row.get("test_accuracy"),
                recon_mse=row.get("recon_mse"), epochs=row.get("epochs"), seed=int(row.get("seed") or 0)))
        except (KeyError, TypeError, ValueError):
            continue  # a malformed row hides one model, not the whole zoo
    return entries


def _from_json(path: Path) -> ModelEntry | None:
    try:
        # Regular files under the size cap only: a FIFO or device named *.json would hang or exhaust memory.
        meta = json.loads(read_regular_file(path, MAX_JSON_BYTES, "checkpoint JSON"))
        if meta.get("format") != FORMAT:
            return None
        model = meta["model"]
        epoch = int(meta["epoch"])
        metrics = meta.get("metrics") or {}
        return ModelEntry(
            dataset=str(meta["dataset"]), kind=str(model["kind"]), beta=float(model.get("beta", 0.0)),
            epoch=epoch, paper_epoch=_paper_epoch(epoch, meta.get("train"), meta.get("recipe")),
            path=str(path.resolve()), recipe=recipe_label(meta.get("recipe"), meta.get("train")),
            test_accuracy=metrics.get("accuracy"), recon_mse=metrics.get("recon_mse"),
            epochs=(meta.get("train") or {}).get("epochs"), seed=int((meta.get("train") or {}).get("seed") or 0))
    except (CSAEError, OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError):
        return None  # not a checkpoint (or being written): skip it


def scan(folder: Path | None = None) -> list[ModelEntry]:
    """Every model under `folder` (default: checkpoints_dir()): manifest rows, then unlisted JSONs."""
    folder = Path(folder) if folder is not None else checkpoints_dir()
    entries = _from_manifest(folder)
    listed = {e.path for e in entries}
    for p in _json_files(folder):
        if str(p.resolve()) not in listed:
            e = _from_json(p)
            if e is not None:
                entries.append(e)
    kinds = list(KINDS)
    return sorted(entries, key=lambda e: (dataset_rank(e.dataset), kinds.index(e.kind) if e.kind in kinds else 9,
                                          e.beta, e.epoch))


def dataset_rank(name: str) -> tuple:
    """Sort key putting the paper's datasets first, in DATASET_ORDER, then any other by name."""
    return (DATASET_ORDER.index(name) if name in DATASET_ORDER else len(DATASET_ORDER), name)


def _rank(e: ModelEntry) -> tuple:
    """Which checkpoint of one (dataset, kind, beta) a view shows: the lowest seed (the zoo's seed 0; seeds 1
    and 2 are there for Table 3's spread), then its last epoch."""
    return (e.seed, -e.epoch)


def default_entry(entries: list[ModelEntry]) -> ModelEntry | None:
    """The fully trained DEFAULT_MODEL if listed, else None (a picker then starts at its first option)."""
    matches = [e for e in entries if (e.dataset, e.kind, e.beta) == DEFAULT_MODEL and not e.user]
    return min(matches, key=_rank) if matches else None


def finals(entries: list[ModelEntry], dataset: str | None = None, decoder_only: bool = False) -> list[ModelEntry]:
    """The last epoch of each (dataset, kind, beta): the fully trained models, snapshots and extra seeds left
    out."""
    best: dict[tuple, ModelEntry] = {}
    for e in entries:
        if dataset is not None and e.dataset != dataset:
            continue
        if decoder_only and not e.has_decoder:
            continue
        key = (e.dataset, e.kind, e.beta, e.user and e.path)  # each user model is a final of its own
        if key not in best or _rank(e) < _rank(best[key]):
            best[key] = e
    return [e for e in entries if best.get((e.dataset, e.kind, e.beta, e.user and e.path)) is e]


def snapshots(entries: list[ModelEntry], dataset: str, kind: str, beta: float) -> dict[int, ModelEntry]:
    """{paper epoch: entry} of one model's saved epochs (40/80/120 for the Fig. 4 betas)."""
    out = {}
    same = [e for e in entries if (e.dataset, e.kind, e.beta) == (dataset, kind, beta)]
    shipped = [e for e in same if not e.user]  # a user model of a shipped β is not one of its epochs
    shipped = [e for e in shipped if e.seed == min(x.seed for x in shipped)]  # one run's epochs, not seeds'
    for e in shipped or same[-1:]:  # a user model: one "snapshot", its last epoch
        out[e.paper_epoch if e.paper_epoch is not None else e.epoch] = e
    return dict(sorted(out.items()))


def datasets(entries: list[ModelEntry]) -> list[str]:
    return sorted({e.dataset for e in entries}, key=dataset_rank)


def user_models_dir() -> Path:
    """$CSAE_USER_MODELS_DIR if set, else <repo>/user_models: where the Train view keeps jobs and models."""
    env = os.environ.get(USER_ENV_VAR, "").strip()
    return Path(env).expanduser() if env else ROOT / "user_models"


def scan_user(folder: Path | None = None) -> list[ModelEntry]:
    """The models trained from the Train view (`<user folder>/models`), marked as the user's own."""
    folder = Path(folder) if folder is not None else user_models_dir() / "models"
    return [dataclasses.replace(e, user=True) for e in scan(folder)]
