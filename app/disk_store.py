"""What a fresh server process would otherwise recompute per checkpoint (open-set scores, latent codes, the
Reconstructions grids, the Letters rows), kept on disk across restarts and shared by every process behind
deploy/serve (issue 19). It sits under the in-memory st.cache_data entries (app/loaders.py): memory first, then
this store, then the computation.

* Key: sha256 of (function, code version, the checkpoint JSON's sha256, the other arguments, and for a dataset
  folder argument the names, sizes and mtimes of its files). A checkpoint rewritten, data replaced, or any
  change to csae_core/ or app/ gives a new key, so an entry can never be served stale; the checkpoint's path
  is not in the key (a copy of the same file shares the entry).
* Values: bytes, arrays, numbers, and tuples/lists/dicts/this project's dataclasses of them (None allowed),
  stored as one .npz read with allow_pickle=False: nothing read back is ever unpickled.
* Writes are atomic (a reader sees the whole file or none), so processes can share the folder.
* Folder: $CSAE_CACHE_DIR, else ~/.cache/csae-explorer; CSAE_CACHE_DIR=off turns the store off.
* Best effort: an unreadable, corrupt or unwritable entry is a miss, never an error shown to a user.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib
import inspect
import io
import json
import os
from pathlib import Path

import numpy as np

ENV_VAR = "CSAE_CACHE_DIR"
_OWN = ("app", "csae_core")  # the packages whose dataclasses a stored value may name
_ROOT = Path(__file__).resolve().parents[1]


def _code_version() -> str:
    """sha256 of the library's and the app's source: results computed by other code are other entries."""
    h = hashlib.sha256()
    for folder in ("csae_core", "app"):
        for f in sorted((_ROOT / folder).glob("*.py")):
            h.update(f.name.encode() + b"\0" + f.read_bytes())
    return h.hexdigest()[:16]


CODE_VERSION = _code_version()


def folder() -> Path | None:
    """The store's folder, or None when it is turned off."""
    value = os.environ.get(ENV_VAR, "").strip()
    if value.lower() == "off":
        return None
    return Path(value).expanduser() if value else Path.home() / ".cache" / "csae-explorer"


def folder_stamp(path: str | None) -> list | None:
    """(name, size, mtime_ns) of a data folder's files: replaced data files change the key."""
    if not path:
        return None
    try:
        return sorted((e.name, e.stat().st_size, e.stat().st_mtime_ns) for e in os.scandir(path) if e.is_file())
    except OSError:
        return [str(path)]


# ---------------------------------------------------------------- values <-> npz, without pickle

def _flatten(value, name: str, arrays: dict) -> object:
    """The structure of `value` as JSON, its arrays put into `arrays` under fresh names."""
    if value is None:
        return None
    if isinstance(value, (bytes, bytearray)):
        arrays[name] = np.frombuffer(bytes(value), np.uint8)
        return {"bytes": name}
    if isinstance(value, np.ndarray):
        if value.dtype == object:
            raise TypeError("object arrays are not stored")
        arrays[name] = value
        return {"array": name}
    if isinstance(value, (tuple, list)):
        return {"tuple" if isinstance(value, tuple) else "list":
                [_flatten(v, f"{name}.{i}", arrays) for i, v in enumerate(value)]}
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {"dict": {k: _flatten(v, f"{name}.{i}", arrays) for i, (k, v) in enumerate(value.items())}}
    if isinstance(value, (bool, int, float, str)):
        return {"plain": value}
    cls = type(value)
    if dataclasses.is_dataclass(value) and cls.__module__.split(".")[0] in _OWN:
        fields = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
        return {"dataclass": [f"{cls.__module__}:{cls.__qualname__}", _flatten(fields, name, arrays)]}
    raise TypeError(f"{cls.__name__} is not stored")


def _unflatten(spec, arrays) -> object:
    if spec is None:
        return None
    (tag, body), = spec.items()
    if tag == "bytes":
        return arrays[body].tobytes()
    if tag == "array":
        return arrays[body]
    if tag in ("tuple", "list"):
        items = [_unflatten(s, arrays) for s in body]
        return tuple(items) if tag == "tuple" else items
    if tag == "dict":
        return {k: _unflatten(s, arrays) for k, s in body.items()}
    if tag == "dataclass":  # only this project's own dataclasses: a class is imported, never code unpickled
        where, fields = body
        module, qualname = where.split(":")
        if module.split(".")[0] not in _OWN:
            raise ValueError(f"{where} is not one of this project's classes")
        cls = importlib.import_module(module)
        for part in qualname.split("."):
            cls = getattr(cls, part)
        if not dataclasses.is_dataclass(cls):
            raise ValueError(f"{where} is not a dataclass")
        return cls(**_unflatten(fields, arrays))
    return body  # plain


def encode(value) -> bytes:
    arrays: dict[str, np.ndarray] = {}
    spec = _flatten(value, "v", arrays)
    buf = io.BytesIO()
    np.savez(buf, __spec__=np.frombuffer(json.dumps(spec).encode(), np.uint8), **arrays)
    return buf.getvalue()


def decode(data: bytes):
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    return _unflatten(json.loads(arrays.pop("__spec__").tobytes()), arrays)


# ---------------------------------------------------------------- the store

def key(what: str, sha256: str, args: dict) -> str:
    text = json.dumps([what, CODE_VERSION, sha256, args], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def get_or_compute(what: str, sha256: str | None, args: dict, compute):
    """compute()'s value, read from the store when an entry exists, else computed and stored."""
    root = folder()
    if root is None or not sha256:
        return compute()
    path = root / f"{key(what, sha256, args)}.npz"
    try:
        return decode(path.read_bytes())
    except Exception:  # noqa: BLE001 - missing, truncated or foreign: a miss
        pass
    value = compute()
    try:
        data = encode(value)
    except TypeError:
        return value
    try:
        from csae_core.checkpoint import atomic_write_bytes
        atomic_write_bytes(path, data)
    except Exception:  # noqa: BLE001 - a read-only or full disk only costs the next process the computation
        pass
    return value


def persisted(fn):
    """For a per-checkpoint function `fn(path, stamp, ...)` (app/loaders.py's convention, stamp[2] the JSON's
    sha256): the same function, its value kept in the store. Arguments whose name contains "folder" join the
    key as their files' stamps, and the checkpoint path is left out."""
    params = list(inspect.signature(fn).parameters)

    @functools.wraps(fn)
    def call(*args, **kwargs):
        bound = dict(zip(params, args), **kwargs)
        stamp = bound.get("stamp")
        sha = stamp[2] if isinstance(stamp, (tuple, list)) and len(stamp) > 2 else None
        keyed = {k: folder_stamp(v) if "folder" in k else v for k, v in bound.items() if k not in ("path", "stamp")}
        return get_or_compute(f"{fn.__module__}.{fn.__qualname__}", sha, keyed, lambda: fn(*args, **kwargs))
    return call
