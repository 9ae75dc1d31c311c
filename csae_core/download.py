"""Fetching datasets: the official files (verified by their published MD5s) or a mirror.

``ensure_dataset(name)`` is the on-demand path (like torchvision's ``download=True``) used by the app
and the test session: it returns the folder holding the dataset, fetching it first into ``./data``
(or ``--data-dir`` / ``$CSAE_DATA_DIR``) when no data root holds it.

Two settings make any mirror usable:

* ``CSAE_DATA_URL``: a base URL under which the files sit as ``<dataset>/<file name>`` (the layout of
  ``../shared/datasets``); every split's files are fetched from there instead of the official sites.
* ``CSAE_DATA_SHA256``: a ``sha256sum``-style file (a path or URL), paths relative to that base; it
  replaces the built-in checksums (for a mirror of non-official copies).

Each file goes to a unique temp name in the target folder, is verified, then ``os.replace``d into
place, under a lock file per dataset folder, so concurrent fetches neither collide nor duplicate work.
A cut connection is resumed with an HTTP Range request (or restarted when the server ignores Range).
"""
from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import shutil
import socket
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from .datasets import (DATASETS, ENV_VAR, DatasetSpec, Download, default_download_root, find_dataset_dir,
                       has_dataset, spec_of)
from .errors import CSAEError
from .idx import IMAGE_MAGIC, LABEL_MAGIC, clear_cache, read_idx, write_idx_gz

__all__ = ["URL_VAR", "SHA256_VAR", "download_dataset", "ensure_dataset", "tqdm_progress"]

URL_VAR = "CSAE_DATA_URL"
SHA256_VAR = "CSAE_DATA_SHA256"
RETRIES = 4  # attempts per URL after a cut connection (each resumes where the last stopped)
TIMEOUT = 30  # seconds without data before a connection counts as cut
CHUNK = 1 << 20
_HEADERS = {"User-Agent": "Mozilla/5.0 (compatible; csae-explorer)"}  # NIST answers 403 to urllib's default

Progress = Callable[[int, "int | None"], None]


class _Cut(Exception):
    """The connection ended before the whole file arrived."""


def tqdm_progress(desc: str) -> tuple[Progress, Callable[[], None]]:
    """A ``progress(done, total)`` callback drawing a tqdm bar (stderr), and its ``close``."""
    from tqdm.auto import tqdm

    bar = tqdm(unit="B", unit_scale=True, desc=desc, leave=False)

    def progress(done: int, total: int | None) -> None:
        if total and bar.total != total:
            bar.reset(total=total)  # a new file
        bar.update(done - bar.n)  # redraws at most every 0.1 s (tqdm's mininterval), so logs stay short

    return progress, bar.close


# ---------------------------------------------------------------- one file over HTTP(S) or file://

def _new_hashes() -> dict[str, "hashlib._Hash"]:
    return {"md5": hashlib.md5(usedforsecurity=False), "sha256": hashlib.sha256()}


def _fetch(url: str, dest: Path, progress: Progress | None) -> dict[str, str]:
    """Stream ``url`` into ``dest`` (created/truncated); returns its {"md5", "sha256"} hex digests.

    A connection cut part-way is retried up to RETRIES times, asking for the rest with a Range
    header; a server that answers 200 instead of 206 is read again from the start.
    """
    hashes = _new_hashes()
    done, total = 0, None
    with open(dest, "wb") as out:
        for attempt in range(RETRIES + 1):
            headers = dict(_HEADERS)
            if done:
                headers["Range"] = f"bytes={done}-"
            try:
                with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=TIMEOUT) as resp:
                    status = getattr(resp, "status", None) or 200
                    length = resp.headers.get("Content-Length")
                    length = int(length) if length and length.isdigit() else None
                    resumed = status == 206 and resp.headers.get("Content-Range", "").startswith(f"bytes {done}-")
                    if done and not resumed:  # Range ignored (or answered for other bytes): start over
                        out.seek(0)
                        out.truncate()
                        hashes, done = _new_hashes(), 0
                        if status == 206:
                            raise _Cut("the server answered another range")
                    if total is None or status != 206:
                        total = (done + length) if length is not None else None
                    while True:
                        chunk = resp.read(CHUNK)
                        if not chunk:
                            break
                        out.write(chunk)
                        for h in hashes.values():
                            h.update(chunk)
                        done += len(chunk)
                        if progress is not None:
                            progress(done, total)
                if total is not None and done < total:
                    raise _Cut(f"connection closed after {done} of {total} bytes")
                return {k: h.hexdigest() for k, h in hashes.items()}
            except urllib.error.HTTPError:
                raise
            except (_Cut, http.client.IncompleteRead, ConnectionError, socket.timeout, TimeoutError) as e:
                silent = isinstance(e, (socket.timeout, TimeoutError)) and not done  # a host that never answers
                if attempt == RETRIES or silent:
                    raise urllib.error.URLError(f"connection cut {attempt + 1} time(s), last: {e}") from None
                out.flush()
                time.sleep(min(0.2 * 2 ** attempt, 2.0))
            except urllib.error.URLError as e:
                # A reset or refusal (a mirror still starting) surfaces as URLError(reason=ConnectionError):
                # retried; a timeout before any byte is not (a blackholed network would cost minutes).
                if not isinstance(e.reason, ConnectionError) or attempt == RETRIES:
                    raise
                time.sleep(min(0.2 * 2 ** attempt, 2.0))
    raise AssertionError("unreachable")


def _hash_file(path: Path, algo: str) -> str:
    h = hashlib.new(algo)
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """Hold ``<root>/.<folder>.lock`` (one fetch per dataset folder at a time, across processes and
    threads); then remove temp files that a killed fetch left in ``folder``."""
    lock = open(folder.parent / f".{folder.name}.lock", "a+b")
    try:
        try:
            import fcntl
            fcntl.flock(lock, fcntl.LOCK_EX)
        except ImportError:  # not POSIX: no inter-process lock, unique temp names still keep files whole
            pass
        for stale in folder.glob(".*.part"):  # left by a fetch that was killed; we hold the lock now
            stale.unlink(missing_ok=True)
        yield
    finally:
        lock.close()  # releases the lock; the empty lock file stays (removing it would race)


def _temp_in(folder: Path, filename: str) -> Path:
    """A unique empty temp file next to ``filename``, readable by all as a normal download (mkstemp gives 0600)."""
    fd, name = tempfile.mkstemp(prefix=f".{filename}.", suffix=".part", dir=folder)
    os.fchmod(fd, 0o644)
    os.close(fd)
    return Path(name)


def _no_network_fix(spec: DatasetSpec, folder: Path) -> str:
    return (f"Fix: check the network and run `python -m csae_core data download {spec.name}`; or copy the "
            f"files into {folder}; or pass --data-dir / set {ENV_VAR} to a folder that holds {spec.folder}/; "
            f"or set {URL_VAR} to a mirror (files as <base>/{spec.folder}/<file name>).")


def _fetch_verified(urls: tuple[str, ...], filename: str, folder: Path, spec: DatasetSpec,
                    expected: tuple[str, str] | None, progress: Progress | None,
                    validate: Callable[[Path], None] | None = None) -> Path:
    """Fetch the first URL that answers into ``folder/filename``: temp file, verify, os.replace.

    ``expected`` is ("md5" | "sha256", hex digest); None means structure-checked only (``validate``).
    Nothing is left behind on failure.
    """
    target = folder / filename
    tmp = _temp_in(folder, filename)
    try:
        errors = []
        for url in urls:
            try:
                got = _fetch(url, tmp, progress)
            except (urllib.error.URLError, OSError, ValueError) as e:
                errors.append(f"{url}: {getattr(e, 'reason', None) or e}")
                continue
            if expected is not None and got[expected[0]] != expected[1]:
                raise CSAEError(f"Download of {url} failed its checksum ({expected[0].upper()} {got[expected[0]]}, "
                                f"expected {expected[1]}); nothing was written. Fix: retry later, or download "
                                f"{filename} by hand from the official site into {folder}"
                                + (f", or give the mirror's checksums in {SHA256_VAR}." if os.environ.get(URL_VAR)
                                   else "."))
            if validate is not None:
                validate(tmp)
            os.replace(tmp, target)
            return target
        raise CSAEError(f"Could not download {spec.title} ({'; '.join(errors)}). {_no_network_fix(spec, folder)}")
    finally:
        tmp.unlink(missing_ok=True)


# ---------------------------------------------------------------- the official files

def _download_official(spec: DatasetSpec, folder: Path, progress: Progress | None) -> None:
    for d in spec.downloads:
        if d.members and all((folder / local).is_file() for _, local in d.members):
            continue  # the archive's files are already extracted
        target = folder / d.filename
        if not (target.is_file() and _hash_file(target, "md5") == d.md5):
            _fetch_verified(d.urls, d.filename, folder, spec, ("md5", d.md5), progress)
        if d.members:
            _extract_members(target, d, spec, folder)
            target.unlink()  # the 0.5 GB archive is no longer needed
    _write_one_per_class(spec, folder)


def _extract_members(zip_path: Path, d: Download, spec: DatasetSpec, folder: Path) -> None:
    """Extract the listed members of an official zip (EMNIST's gzip.zip), each atomically."""
    try:
        with zipfile.ZipFile(zip_path) as zf:
            for member, local in d.members:
                tmp = _temp_in(folder, local)
                try:
                    with zf.open(member) as src, open(tmp, "wb") as dst:
                        shutil.copyfileobj(src, dst)
                    os.replace(tmp, folder / local)
                finally:
                    tmp.unlink(missing_ok=True)
    except (zipfile.BadZipFile, KeyError, OSError) as e:
        raise CSAEError(f"Could not extract {spec.title} from {zip_path} ({e}). "
                        f"Fix: delete it and run `python -m csae_core data download {spec.name}`.") from None


def _write_one_per_class(spec: DatasetSpec, folder: Path) -> None:
    """EMNIST: one test image per letter (the first of each class), in the stored (transposed) layout."""
    if "one-per-class" not in spec.files or all((folder / f).is_file() for f in spec.files["one-per-class"]):
        return
    img_file, lab_file = spec.files["test"]
    img = read_idx(folder / img_file, IMAGE_MAGIC, spec)
    lab = read_idx(folder / lab_file, LABEL_MAGIC, spec)
    classes, first = np.unique(lab, return_index=True)
    one_img, one_lab = spec.files["one-per-class"]
    write_idx_gz(folder / one_img, img[first], IMAGE_MAGIC)
    write_idx_gz(folder / one_lab, classes.astype(np.uint8), LABEL_MAGIC)


# ---------------------------------------------------------------- a mirror (CSAE_DATA_URL)

def _read_text(source: str) -> str:
    if urllib.parse.urlparse(source).scheme in ("http", "https", "file"):
        with urllib.request.urlopen(urllib.request.Request(source, headers=_HEADERS), timeout=TIMEOUT) as r:
            return r.read(1 << 20).decode("utf-8", "replace")
    return Path(source).expanduser().read_text("utf-8", "replace")


def read_sha256sums(source: str) -> dict[str, str]:
    """``{relative path: sha256}`` from a ``sha256sum``-style file (``<hex>  <path>`` or ``<hex> *<path>``)."""
    try:
        text = _read_text(source)
    except (OSError, urllib.error.URLError, ValueError) as e:
        raise CSAEError(f"Cannot read {SHA256_VAR}={source} ({getattr(e, 'reason', None) or e}). "
                        f"Fix: point it at a sha256sum-style file (paths relative to {URL_VAR}).") from None
    sums = {}
    for line in text.splitlines():
        parts = line.strip().split(None, 1)
        if len(parts) == 2 and len(parts[0]) == 64 and all(c in "0123456789abcdefABCDEF" for c in parts[0]):
            sums[parts[1].lstrip("*").removeprefix("./")] = parts[0].lower()
    if not sums:
        raise CSAEError(f"{SHA256_VAR}={source} lists no checksums. Fix: give a file as written by "
                        f"`sha256sum */*.gz` in the mirror's root.")
    return sums


def _download_mirror(spec: DatasetSpec, folder: Path, base: str, sums: dict[str, str] | None,
                     progress: Progress | None) -> None:
    """Every split's files from ``<base>/<folder>/<file>``; checked by ``sums`` (else the official MD5s)."""
    base = base if base.endswith("/") else base + "/"
    official = spec.md5s
    for split, pair in spec.files.items():
        for filename, magic in zip(pair, (IMAGE_MAGIC, LABEL_MAGIC)):
            rel = f"{spec.folder}/{filename}"
            if sums is not None:
                expected = ("sha256", sums[rel]) if rel in sums else None
                if expected is None and split in spec.optional_splits:
                    continue  # derived below
                if expected is None:
                    raise CSAEError(f"{SHA256_VAR} has no checksum for {rel}. Fix: add its line "
                                    f"(`sha256sum {rel}` in the mirror's root).")
            else:
                expected = ("md5", official[filename]) if filename in official else None
            target = folder / filename
            if target.is_file() and expected is not None and _hash_file(target, expected[0]) == expected[1]:
                continue

            def validate(p: Path, magic=magic) -> None:
                read_idx(p, magic, spec)  # raises CSAEError naming the file if it is not a sound IDX file

            try:
                _fetch_verified((urllib.parse.urljoin(base, rel),), filename, folder, spec, expected, progress,
                                validate)
            except CSAEError:
                if split in spec.optional_splits:
                    continue  # a mirror may lack the derived files: written below
                raise
    _write_one_per_class(spec, folder)


# ---------------------------------------------------------------- entry points

def download_dataset(name: str, data_dir: str | Path | None = None, progress: Progress | None = None) -> Path:
    """Fetch ``name`` into ``<root>/<folder>/``; returns that folder.

    ``root`` is ``data_dir``, else $CSAE_DATA_DIR, else ./data. With $CSAE_DATA_URL set, the files
    come from that mirror (checked against $CSAE_DATA_SHA256 when set, else the official MD5s);
    otherwise from the official sites, checked against their published MD5s. Files already
    present with the right checksum are kept. ``progress(bytes_done, bytes_total_or_None)`` is
    called per chunk of the file being downloaded (it restarts at 0 for each file).
    """
    spec = spec_of(name)
    folder = default_download_root(data_dir) / spec.folder
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CSAEError(f"Cannot create {folder} ({e}). Fix: pass a writable --data-dir or set {ENV_VAR}.") from None
    base = os.environ.get(URL_VAR, "").strip()
    sums_source = os.environ.get(SHA256_VAR, "").strip()
    sums = read_sha256sums(sums_source) if sums_source else None
    with _locked(folder):
        if base:
            _download_mirror(spec, folder, base, sums, progress)
        else:
            _download_official(spec, folder, progress)
    clear_cache()
    return folder


def ensure_dataset(name: str, data_dir: str | Path | None = None, progress: Progress | None = None,
                   bar: bool = True) -> Path:
    """The folder holding ``name`` (see ``find_dataset_dir``), fetching it first when none holds it.

    The on-demand path (torchvision's ``download=True``): the files go to ``data_dir``, else
    $CSAE_DATA_DIR, else ./data, verified, atomically, with a tqdm bar on stderr unless ``progress``
    is given or ``bar`` is False. Without network: one CSAEError saying what to run or where to point
    $CSAE_DATA_DIR.
    """
    spec = spec_of(name)
    found = find_dataset_dir(name, data_dir)
    if found is not None:
        return found
    close = None
    if progress is None and bar:
        progress, close = tqdm_progress(f"{spec.title} -> {default_download_root(data_dir) / spec.folder}")
    try:
        folder = download_dataset(name, data_dir, progress)
    finally:
        if close is not None:
            close()
    if not has_dataset(folder, spec):
        missing = [f for f in spec.required_files if not (folder / f).is_file()]
        raise CSAEError(f"{spec.title}: fetched, but {folder} still lacks {', '.join(missing)}. "
                        f"{_no_network_fix(spec, folder)}")
    return folder

