"""Checkpoints: weights in safetensors (never pickle) beside a JSON with everything needed to
rebuild and judge the model (config, PEDCC centroids, epoch, metrics, class latent statistics).

A checkpoint named `runs/x/last` is the pair `last.safetensors` + `last.json`; any of the two
paths, the stem, or the run folder (meaning its `last`) can be given. Every write is atomic
(temp file + rename) and the JSON, written last, records the weights' SHA-256, so a crash
mid-save leaves the previous pair intact and a mismatched or truncated pair is detected.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from .errors import CSAEError
from .model import ModelConfig, build_model

__all__ = ["Checkpoint", "save_checkpoint", "load_checkpoint", "resolve_checkpoint", "atomic_write_bytes",
           "save_tensors", "load_tensors", "FORMAT"]

FORMAT = "csae-checkpoint/1"


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write `data` to `path` so that readers see either the old file or the whole new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_tensors(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict | None = None) -> str:
    """Atomically write tensors (and an optional JSON-able `metadata` dict) as safetensors; returns the SHA-256."""
    header = {"json": json.dumps(metadata)} if metadata is not None else None
    data = st_save({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, metadata=header)
    atomic_write_bytes(path, data)
    return hashlib.sha256(data).hexdigest()


def load_tensors(path: str | Path, expected_sha256: str | None = None, with_metadata: bool = False):
    """Read a safetensors file (no code is executed: safe for files from anyone); with `with_metadata`,
    return (tensors, metadata dict or None)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CSAEError(f"weights file {path} is missing. Fix: copy it next to its .json or retrain.") from None
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
        stats = self.meta.get("latent_stats")
        if not stats:
            return None
        return torch.tensor(stats["mean"]), torch.tensor(stats["cov"])


def save_checkpoint(stem: str | Path, model: torch.nn.Module, meta: dict, half: bool = False) -> Path:
    """Write `stem.safetensors` then `stem.json`. `half` stores float weights as fp16 (compact shipping)."""
    stem = Path(stem)
    # The PEDCC centroids stay fp32 even in half-precision files: rounding them costs optimality.
    state = {k: (v.half() if half and v.is_floating_point() and k != "centroids" else v)
             for k, v in model.state_dict().items()}
    sha = save_tensors(sibling(stem, ".safetensors"), state)
    record = {"format": FORMAT, **meta, "model": model.config.to_dict(), "weights": stem.name + ".safetensors",
              "weights_sha256": sha, "weights_dtype": "float16" if half else "float32"}
    if getattr(model, "centroids", None) is not None:
        record["centroids"] = model.centroids.tolist()
    atomic_write_bytes(sibling(stem, ".json"), json.dumps(record, indent=1).encode())
    return stem


def read_meta(stem: Path) -> dict:
    path = sibling(stem, ".json")
    try:
        meta = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CSAEError(f"{path} is not valid JSON ({e}). Fix: it is truncated or not a CSAE checkpoint.") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CSAEError(f"{path} is not a CSAE checkpoint (format {meta.get('format') if isinstance(meta, dict) else None!r},"
                        f" expected {FORMAT!r}). Fix: pass a file written by `python -m csae_core train`.")
    return meta


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> Checkpoint:
    """Rebuild the model from its JSON config and load the weights (as float32) in eval mode."""
    stem = resolve_checkpoint(path)
    meta = read_meta(stem)
    try:
        cfg = ModelConfig.from_dict(meta["model"])
    except (KeyError, TypeError) as e:
        raise CSAEError(f"{stem}.json has no usable model config ({e}). Fix: retrain or use another checkpoint.") from None
    state = load_tensors(stem.parent / meta.get("weights", stem.name + ".safetensors"), meta.get("weights_sha256"))
    centroids = state.get("centroids")
    model = build_model(cfg, centroids.float() if centroids is not None else None)
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise CSAEError(f"weights in {stem}.safetensors do not fit the model in its .json: "
                        f"{str(e).splitlines()[0]}. Fix: keep the pair together.") from None
    return Checkpoint(model.to(device).eval(), cfg, meta, stem)
