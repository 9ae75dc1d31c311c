"""Checkpoints: weights in safetensors (never pickle) beside a JSON with everything needed to
rebuild and judge the model (config, PEDCC centroids, epoch, metrics, class latent statistics).

A checkpoint named `runs/x/last` is the pair `last.safetensors` + `last.json`; any of the two
paths, the stem, or the run folder (meaning its `last`) can be given. Every write is atomic
(temp file + rename) and the JSON, written last, records the weights' SHA-256, so a mismatched or
truncated pair is detected; training runs write versioned weights (`last.<sha>.safetensors`, named by
the JSON), so a kill at any point of a save leaves a loadable `last`.

Files are untrusted input: the weights a JSON names must lie in its own folder and be a regular
file under a size cap (MAX_WEIGHTS_BYTES); NaN/inf weights and shape mismatches are explained errors.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path

from typing import TYPE_CHECKING

from .errors import CSAEError
from .limits import check_model_limits

if TYPE_CHECKING:
    import torch

    from .model import ModelConfig

# torch (and the model code) is imported by the functions that need it: a checkpoint whose JSON asks for an
# oversized model is refused before torch is loaded (~200 MB), so a refusal costs a few MB.

__all__ = ["Checkpoint", "save_checkpoint", "load_checkpoint", "resolve_checkpoint", "atomic_write_bytes",
           "save_tensors", "load_tensors", "clean_stale_tmp", "writable_dir", "read_regular_file", "FORMAT", "MAX_WEIGHTS_BYTES",
           "export_checkpoint", "manifest_row_paths"]

FORMAT = "csae-checkpoint/1"
MAX_WEIGHTS_BYTES = 2 * 1024**3  # a safetensors file bigger than this is refused unread (the zoo's are ~2.5 MB)
MAX_JSON_BYTES = 256 * 1024**2  # checkpoint JSONs hold centroids and class covariances: a few MB at most
_TMP = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.tmp$")  # atomic_write_bytes' temp names: .<name>.<random>.tmp
_VERSIONED = r"\.[0-9a-f]{16}\.safetensors"  # <stem>.<sha256[:16]>.safetensors (save_checkpoint versioned=True)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write `data` to `path` so that readers see either the old file or the whole new one.
    A path that cannot be written (a directory, no permission, a file as parent) is one CSAEError."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_dir():
            raise IsADirectoryError(21, "it is a directory")
        if path.exists() and not path.is_file():  # a device or pipe: the rename would replace /dev/zero itself
            raise FileExistsError(17, "it is a device or pipe, not a regular file")
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; a new file normally gets 0666 minus the umask
    except OSError as e:
        raise CSAEError(f"cannot write {path}: {e.strerror or e}. Fix: give a file path in a writable folder.") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise CSAEError(f"cannot write {path}: {e.strerror or e}. Fix: free disk space or choose another "
                            f"path.") from None
        raise


def _umask() -> int:
    """The process umask. Linux states it in /proc (never touching it: the app writes from several threads,
    and a set-and-restore would briefly give another thread's new files the wrong mode); elsewhere reading
    it means setting it, then straight back."""
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f:
                if line.startswith(b"Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def writable_dir(folder: str | Path) -> Path:
    """`folder`, created if needed; a path that is a file, or cannot be created or written, is one CSAEError
    (asked before a training run spends an epoch, not at its first save)."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CSAEError(f"cannot create the folder {folder}: {e.strerror or e}. Fix: choose another --out.") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise CSAEError(f"the folder {folder} is not writable. Fix: choose another --out.")
    return folder


def clean_stale_tmp(folder: str | Path) -> list[Path]:
    """Remove temp files that a killed atomic_write_bytes left in `folder` (call only where no other
    process is writing, e.g. a training run's own --out folder at start-up); returns what was removed."""
    removed = []
    folder = Path(folder)
    if folder.is_dir():
        for p in folder.iterdir():
            if _TMP.match(p.name) and p.is_file():
                p.unlink(missing_ok=True)
                removed.append(p)
    return removed


def read_regular_file(path: str | Path, max_bytes: int, what: str = "file", fix: str = "check the path.") -> bytes:
    """The bytes of `path` if it is a regular file of at most `max_bytes`: a FIFO, a device such as
    /dev/zero, a directory or an oversized file is refused before it is opened or read."""
    path = Path(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise CSAEError(f"{what} {path} is missing. Fix: {fix}") from None
    except OSError as e:
        raise CSAEError(f"cannot read {what} {path}: {e.strerror or e}.") from None
    if not stat.S_ISREG(st.st_mode):
        raise CSAEError(f"{what} {path} is not a regular file (a directory, device or pipe). "
                        f"Fix: point at a real file.")
    if st.st_size > max_bytes:
        raise CSAEError(f"{what} {path} is {st.st_size:,} bytes, over the {max_bytes:,}-byte limit. "
                        f"Fix: this is not a CSAE file; use another.")
    try:
        with open(path, "rb") as f:
            # Read the size the stat found (+1 to notice growth), not max_bytes: a 2 GiB read buffer
            # reserved for a 2 MB file fails under a memory limit (ulimit -v).
            data = f.read(st.st_size + 1)
    except OSError as e:
        raise CSAEError(f"cannot read {what} {path}: {e.strerror or e}.") from None
    if len(data) > min(max_bytes, st.st_size):  # grew since the stat
        raise CSAEError(f"{what} {path} is over the {max_bytes:,}-byte limit. Fix: use another file.")
    return data


def save_tensors(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict | None = None) -> str:
    """Atomically write tensors (and an optional JSON-able `metadata` dict) as safetensors; returns the SHA-256."""
    from safetensors.torch import save as st_save

    header = {"json": json.dumps(metadata)} if metadata is not None else None
    data = st_save({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, metadata=header)
    atomic_write_bytes(path, data)
    return hashlib.sha256(data).hexdigest()


def load_tensors(path: str | Path, expected_sha256: str | None = None, with_metadata: bool = False):
    """Read a safetensors file (no code is executed: safe for files from anyone); with `with_metadata`,
    return (tensors, metadata dict or None)."""
    from safetensors import SafetensorError
    from safetensors.torch import load as st_load

    path = Path(path)
    data = read_regular_file(path, MAX_WEIGHTS_BYTES, "weights file", "copy it next to its .json or retrain.")
    if expected_sha256 and hashlib.sha256(data).hexdigest() != expected_sha256:
        raise CSAEError(f"weights file {path} does not match its .json (truncated, or from another run). "
                        f"Fix: restore the pair from the same save, or retrain.")
    try:
        tensors = st_load(data)
        if not with_metadata:
            return tensors
        header = json.loads(data[8:8 + int.from_bytes(data[:8], "little")])  # safetensors' JSON header
        meta = header.get("__metadata__", {}).get("json")
        return tensors, (json.loads(meta) if meta else None)
    except (SafetensorError, ValueError, RuntimeError) as e:
        raise CSAEError(f"{path} is not a readable safetensors file ({e}). "
                        f"Fix: it may be truncated or not a CSAE checkpoint; use another file.") from None


def sibling(stem: Path, suffix: str) -> Path:
    """`stem` + suffix; unlike Path.with_suffix it keeps dots in names like `csae-b0.02`."""
    return stem.parent / (stem.name + suffix)


def resolve_checkpoint(path: str | Path) -> Path:
    """The stem (path without suffix) of a checkpoint given as .json, .safetensors, stem or run folder."""
    p = Path(path)
    if p.is_dir():
        p = p / "last"
    if p.suffix in (".json", ".safetensors"):
        p = p.with_suffix("")
        if re.fullmatch(r"\.[0-9a-f]{16}", p.suffix) and not sibling(p, ".json").is_file():
            p = p.with_suffix("")  # a versioned weights file, <stem>.<sha>.safetensors: its stem
    if not sibling(p, ".json").is_file():
        raise CSAEError(f"no checkpoint at {path} (looked for {sibling(p, '.json')}). "
                        f"Fix: pass a .json/.safetensors checkpoint path or a training --out folder.")
    return p


@dataclass
class Checkpoint:
    model: torch.nn.Module  # in eval mode
    config: ModelConfig
    meta: dict  # the JSON: dataset, epoch, metrics, centroids, latent_stats, train config, ...
    path: Path  # stem

    @property
    def class_names(self) -> list[str]:
        return self.meta.get("class_names") or [str(i) for i in range(self.config.num_classes)]

    def latent_stats(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Per-class mean (n, d) and covariance (n, d, d) of the training-set latents, if recorded."""
        import torch

        stats = self.meta.get("latent_stats")
        if not stats:
            return None
        return torch.tensor(stats["mean"]), torch.tensor(stats["cov"])


def save_checkpoint(stem: str | Path, model: torch.nn.Module, meta: dict, half: bool = False,
                    versioned: bool = False) -> Path:
    """Write `stem.safetensors` then `stem.json`. `half` stores float weights as fp16 (compact shipping).

    `versioned` (training runs, rewritten every epoch): the weights go to `stem.<sha256[:16]>.safetensors`,
    a new name for new content, which the JSON names; the JSON's rename is the one commit point, so a
    kill at any moment leaves the old pair or the new pair loadable. Superseded weights are removed after.
    """
    from safetensors.torch import save as st_save

    stem = Path(stem)
    if stem.exists() and not stem.is_file() and not stem.is_dir():  # `export --out /dev/zero`
        raise CSAEError(f"cannot write a checkpoint at {stem}: it is a device or pipe. Fix: give a path in a folder.")
    # The PEDCC centroids stay fp32 even in half-precision files: rounding them costs optimality.
    state = {k: (v.half() if half and v.is_floating_point() and k != "centroids" else v)
             for k, v in model.state_dict().items()}
    data = st_save({k: v.detach().cpu().contiguous() for k, v in state.items()})
    sha = hashlib.sha256(data).hexdigest()
    weights = f"{stem.name}.{sha[:16]}.safetensors" if versioned else stem.name + ".safetensors"
    atomic_write_bytes(stem.parent / weights, data)
    record = {"format": FORMAT, **meta, "model": model.config.to_dict(), "weights": weights,
              "weights_sha256": sha, "weights_dtype": "float16" if half else "float32"}
    if getattr(model, "centroids", None) is not None:
        record["centroids"] = model.centroids.tolist()
    atomic_write_bytes(sibling(stem, ".json"), json.dumps(record, indent=1).encode())
    if versioned:
        for old in stem.parent.glob(f"{glob_escape(stem.name)}.*.safetensors"):
            if old.name != weights and re.fullmatch(re.escape(stem.name) + _VERSIONED, old.name):
                old.unlink(missing_ok=True)
    return stem


def glob_escape(name: str) -> str:
    return re.sub(r"([*?[])", r"[\1]", name)


def weights_path(stem: Path, meta: dict) -> Path:
    """The weights file a checkpoint JSON names, which must lie in the JSON's own folder (no absolute
    paths, no `..`, no symlink out of it)."""
    name = meta.get("weights", stem.name + ".safetensors")
    folder = stem.parent.resolve()
    if not isinstance(name, str) or not name or "\x00" in name:
        raise CSAEError(f"{stem}.json names no usable weights file ({name!r}). Fix: restore the pair or retrain.")
    path = (folder / name).resolve()
    if Path(name).is_absolute() or not path.is_relative_to(folder):
        raise CSAEError(f"{stem}.json names weights outside its own folder ({name!r}); refused. "
                        f"Fix: keep the .safetensors next to its .json and name it without a folder.")
    return path


def read_meta(stem: Path) -> dict:
    path = sibling(stem, ".json")
    try:
        meta = json.loads(read_regular_file(path, MAX_JSON_BYTES, "checkpoint JSON"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise CSAEError(f"{path} is not valid JSON ({e}). Fix: it is truncated or not a CSAE checkpoint.") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CSAEError(f"{path} is not a CSAE checkpoint (format {meta.get('format') if isinstance(meta, dict) else None!r},"
                        f" expected {FORMAT!r}). Fix: pass a file written by `python -m csae_core train`.")
    return meta


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu",
                    check_manifest: bool = True) -> Checkpoint:
    """Rebuild the model from its JSON config and load the weights (as float32) in eval mode.
    `check_manifest=False` is for the zoo driver, which replaces models and then rebuilds the manifest."""
    stem = resolve_checkpoint(path)
    meta = read_meta(stem)
    if not isinstance(meta.get("model"), dict):
        raise CSAEError(f"{stem}.json has no model config. Fix: retrain or use another checkpoint.")
    try:
        check_model_limits(meta["model"])  # before torch and the model code are imported
    except CSAEError as e:
        raise CSAEError(f"{stem}.json: {e}") from None
    import torch

    from .model import ModelConfig, build_model

    try:
        cfg = ModelConfig.from_dict(meta["model"])
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise CSAEError(f"{stem}.json has no usable model config ({e}). Fix: retrain or use another checkpoint.") from None
    wpath = weights_path(stem, meta)
    sha = meta.get("weights_sha256")
    listed = manifest_sha256(stem) if check_manifest else None
    if listed is not None and listed != sha:
        raise CSAEError(f"{stem.name}'s weights do not match the SHA-256 recorded in {listed_in(stem)} (the pair was "
                        f"replaced or retrained after the manifest was built). Fix: restore the shipped files, or "
                        f"rebuild the manifest (python checkpoints/zoo.py manifest) if the new model is wanted.")
    state = load_tensors(wpath, sha if isinstance(sha, str) else None)
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise CSAEError(f"{wpath.name} holds NaN/inf values in {len(bad)} tensor(s) ({', '.join(bad[:3])}"
                        f"{', ...' if len(bad) > 3 else ''}): training diverged before this save. "
                        f"Fix: use an earlier checkpoint or retrain with a smaller --lr.")
    centroids = state.get("centroids")
    try:
        model = build_model(cfg, centroids.float() if centroids is not None else None)
    except (RuntimeError, ValueError) as e:
        raise CSAEError(f"{stem}.json: the model cannot be built from its config and centroids ({e}). "
                        f"Fix: keep the pair together.") from None
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    problems = state_dict_problems(model.state_dict(), state)
    if problems:
        raise CSAEError(f"weights in {wpath.name} do not fit the model in {stem.name}.json ({cfg.kind}, "
                        f"widths {list(cfg.widths)}, latent_dim {cfg.latent_dim}): {'; '.join(problems)}. "
                        f"Fix: keep the pair together.")
    model.load_state_dict(state)
    return Checkpoint(model.to(device).eval(), cfg, meta, stem)


# What a copy of a checkpoint does not carry over: save_checkpoint writes these afresh.
WRITTEN_BY_SAVE = ("format", "model", "weights", "weights_sha256", "weights_dtype", "centroids")


def export_checkpoint(src: str | Path, dst: str | Path, half: bool = False) -> Path:
    """Copy checkpoint `src` to stem `dst` (fp16 weights with `half`, the compact shipping form); returns the
    stem. The CLI's `export` and the zoo's fp16 export both come through here."""
    ckpt = load_checkpoint(src)
    meta = {k: v for k, v in ckpt.meta.items() if k not in WRITTEN_BY_SAVE}
    return save_checkpoint(dst, ckpt.model, meta, half=half)


MAX_MANIFEST_BYTES = 16 * 1024**2


def _manifests(stem: Path) -> list[Path]:
    """The manifest.json files that may list checkpoint `stem`: in its folder and the one above (the zoo's
    checkpoints/manifest.json lists checkpoints/<dataset>/<name>.json)."""
    folder = stem.parent.resolve()
    return [f / "manifest.json" for f in (folder, folder.parent) if (f / "manifest.json").is_file()]


def manifest_row_paths(manifest: Path, row_path: str) -> list[Path]:
    """Where a manifest row's checkpoint JSON may be: rows name it relative to the manifest's folder or the
    folder above (the repo root), with or without ".json" (a stem such as mnist/csae-b0.02: appended, as
    with_suffix would eat ".02")."""
    p = Path(row_path)
    p = p if p.suffix == ".json" else p.parent / (p.name + ".json")
    return [manifest.parent / p, manifest.parent.parent / p]


def manifest_sha256(stem: Path) -> str | None:
    """The weights' SHA-256 that a manifest next to (or above) checkpoint `stem` records, if any lists it.
    Rows name the checkpoint JSON relative to the manifest's folder or the folder above (the repo root).
    A missing, half-written or malformed manifest records nothing."""
    target = sibling(stem, ".json").resolve()
    for manifest in _manifests(stem):
        try:
            rows = json.loads(read_regular_file(manifest, MAX_MANIFEST_BYTES, "manifest"))
        except (CSAEError, ValueError, RecursionError):
            continue
        for row in rows if isinstance(rows, list) else []:
            if not (isinstance(row, dict) and isinstance(row.get("path"), str) and isinstance(row.get("sha256"), str)):
                continue
            if any(p.resolve() == target for p in manifest_row_paths(manifest, row["path"])):
                return row["sha256"]
    return None


def listed_in(stem: Path) -> str:
    found = _manifests(stem)
    return str(found[0]) if found else "the manifest"


def state_dict_problems(expected: dict, got: dict, limit: int = 8) -> list[str]:
    """Every way `got` fails to fit `expected`: missing and unexpected tensors, shapes expected vs got."""
    out = [f"{k}: expected shape {tuple(v.shape)}, got {tuple(got[k].shape)}"
           for k, v in expected.items() if k in got and got[k].shape != v.shape]
    missing = [k for k in expected if k not in got]
    extra = [k for k in got if k not in expected]
    if missing:
        out.append(f"missing {', '.join(missing[:limit])}{' ...' if len(missing) > limit else ''}")
    if extra:
        out.append(f"unexpected {', '.join(extra[:limit])}{' ...' if len(extra) > limit else ''}")
    return out[:limit + 2]
