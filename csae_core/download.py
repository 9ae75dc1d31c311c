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
import io
import os
import shutil
import socket
import sys
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
# Bounds on one file (issue 16): a mirror that trickles or never ends must be given up, with a message.
MIN_RATE = 1024  # bytes/s: a transfer slower than this over STALL_WINDOW seconds is given up
STALL_WINDOW = 30.0
FILE_DEADLINE_BASE = 120.0  # seconds, plus the file's size cap at DEADLINE_RATE: the overall deadline per file
DEADLINE_RATE = 100 * 1024  # bytes/s (64 MiB: 12 min; EMNIST's 0.5 GB zip: 1.5 h at most)
MAX_IDX_BYTES = 64 * 2**20  # stated maximum of one IDX file (the largest official one, Fashion's train images, 26 MB)
MAX_ARCHIVE_BYTES = 1 << 30  # stated maximum of an official archive (EMNIST's gzip.zip, 0.54 GB)
MAX_SUMS_BYTES = 1 << 20  # a CSAE_DATA_SHA256 file
LOCK_WAIT = 600.0  # seconds to wait for another process's download of the same dataset
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


class _TooSlow(Exception):
    """The transfer broke the minimum rate or the file's deadline: not retried."""


def _deadline_for(cap: int) -> float:
    """Seconds one file may take in all (every retry included): generous for a slow line, never forever."""
    return FILE_DEADLINE_BASE + cap / DEADLINE_RATE


def _copy_body(resp, out, hashes: dict, done: int, cap: int, deadline: float,
               progress: Progress | None, total: int | None) -> int:
    """Stream `resp` into `out` until EOF; returns the bytes done. Stops at `cap` bytes (an endless body),
    at the `deadline` (time.monotonic()), and when fewer than MIN_RATE bytes/s arrive over STALL_WINDOW
    seconds (a trickling mirror that keeps each read under the socket timeout)."""
    read = getattr(resp, "read1", resp.read)  # read1: whatever has arrived, so the checks run between bytes
    window_start, window_bytes = time.monotonic(), 0
    while True:
        chunk = read(CHUNK)
        if not chunk:
            return done
        if done + len(chunk) > cap:
            raise _TooSlow(f"the server sent more than the file's {cap:,}-byte limit (an endless body?)")
        out.write(chunk)
        for h in hashes.values():
            h.update(chunk)
        done += len(chunk)
        window_bytes += len(chunk)
        if progress is not None:
            progress(done, total)
        now = time.monotonic()
        if now > deadline:
            raise _TooSlow(f"not finished within the file's deadline ({done:,} bytes so far)")
        if now - window_start >= STALL_WINDOW:
            if window_bytes < MIN_RATE * (now - window_start):
                raise _TooSlow(f"only {window_bytes} bytes in {now - window_start:.0f} s (under "
                               f"{MIN_RATE // 1024} KB/s): the mirror is stalled")
            window_start, window_bytes = now, 0


def _fetch(url: str, dest: Path, progress: Progress | None, cap: int) -> dict[str, str]:
    """Stream `url` into `dest` (created/truncated); returns its {"md5", "sha256"} hex digests.

    A connection cut part-way is retried up to RETRIES times, asking for the rest with a Range
    header; a server that answers 200 instead of 206 is read again from the start. The whole file,
    retries included, has a deadline (_deadline_for), a minimum rate and a size cap (`cap` bytes).
    """
    hashes = _new_hashes()
    done, total = 0, None
    deadline = time.monotonic() + _deadline_for(cap)
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
                    if total is not None and total > cap:
                        raise _TooSlow(f"the server announces {total:,} bytes, over the file's {cap:,}-byte limit")
                    done = _copy_body(resp, out, hashes, done, cap, deadline, progress, total)
                if total is not None and done < total:
                    raise _Cut(f"connection closed after {done} of {total} bytes")
                return {k: h.hexdigest() for k, h in hashes.items()}
            except urllib.error.HTTPError:
                raise
            except _TooSlow as e:
                raise urllib.error.URLError(f"gave up: {e}") from None
            except (_Cut, http.client.IncompleteRead, ConnectionError, socket.timeout, TimeoutError) as e:
                silent = isinstance(e, (socket.timeout, TimeoutError)) and not done  # a host that never answers
                if attempt == RETRIES or silent or time.monotonic() > deadline:
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
def _locked(folder: Path, wait: float | None = None) -> Iterator[None]:
    """Hold ``<root>/.<folder>.lock`` (one fetch per dataset folder at a time, across processes and
    threads), waiting at most ``wait`` seconds (LOCK_WAIT); then remove temp files that a killed fetch
    left in ``folder``."""
    lock = _acquire(folder.parent / f".{folder.name}.lock", LOCK_WAIT if wait is None else wait, folder)
    try:
        for stale in folder.glob(".*.part"):  # left by a fetch that was killed; we hold the lock now
            stale.unlink(missing_ok=True)
        yield
    finally:
        lock.close()  # releases the lock; the lock file stays (removing it would race)


def _holder(path: Path) -> int | None:
    """The pid the lock's holder wrote into the lock file, if any."""
    try:
        text = path.read_bytes()[:32].decode("ascii", "replace").split()
        return int(text[0]) if text and text[0].isdigit() else None
    except OSError:
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


def _acquire(path: Path, wait: float, folder: Path):
    """The open, flock-ed lock file, with our pid written in it. The kernel drops a flock when its holder
    dies; a lock still held although the pid written in it is dead was inherited by a stray child: the
    lock file is then replaced (taken over), not waited on. A wait for a live holder is said once on stderr
    (naming it); waiting longer than `wait` is a CSAEError naming the holder."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no inter-process lock, unique temp names still keep files whole
        return open(os.devnull, "rb")
    deadline, suspect, told = time.monotonic() + wait, None, False
    while True:
        try:
            f = open(path, "a+b")
        except OSError as e:
            raise CSAEError(f"cannot create the lock file {path}: {e.strerror or e}. Fix: pass a writable "
                            f"--data-dir or set {ENV_VAR} to a folder you can write.") from None
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.close()
            holder = _holder(path)
            if holder is not None and holder != os.getpid() and not _alive(holder):
                if suspect == holder:  # seen dead twice (not a new holder that has yet to write its pid)
                    _replace_lock_file(path)  # take over
                    continue
                suspect = holder
            else:
                suspect = None
            if not told and suspect is None:  # a wait of up to `wait` seconds must not look like a hang (issue 16)
                told = True
                from tqdm.auto import tqdm  # its write: on a line of its own, though a bar is drawn

                tqdm.write(f"waiting for another download into {folder} (pid {holder or 'unknown'}) to finish, "
                           f"for at most {wait:.0f} s", file=sys.stderr)
            if time.monotonic() > deadline:
                raise CSAEError(f"another download into {folder} (pid {holder if holder else 'unknown'}) has held "
                                f"{path} for over {wait:.0f} s. Fix: wait for it to finish, or stop it"
                                f"{f' (kill {holder})' if holder else ''} and run the download again.") from None
            time.sleep(0.2)
            continue
        try:
            same = os.fstat(f.fileno()).st_ino == os.stat(path).st_ino
        except OSError:
            same = False
        if not same:  # replaced (taken over by another waiter) between our open and flock: lock the new one
            f.close()
            continue
        f.seek(0)
        f.truncate()
        f.write(f"{os.getpid()}\n".encode())
        f.flush()
        return f


def _replace_lock_file(path: Path) -> None:
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".new", dir=path.parent)
    os.close(fd)
    os.replace(tmp, path)


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
                    validate: Callable[[Path], None] | None = None, cap: int | None = None) -> Path:
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
                got = _fetch(url, tmp, progress, MAX_IDX_BYTES if cap is None else cap)
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
            _fetch_verified(d.urls, d.filename, folder, spec, ("md5", d.md5), progress,
                            cap=MAX_ARCHIVE_BYTES if d.members else MAX_IDX_BYTES)
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
    """A small text file from a URL or a local path: at most MAX_SUMS_BYTES, within the file deadline; a
    local path must be a regular file (a FIFO would hang, /dev/zero would fill the memory)."""
    if urllib.parse.urlparse(source).scheme in ("http", "https", "file"):
        buf = io.BytesIO()
        with urllib.request.urlopen(urllib.request.Request(source, headers=_HEADERS), timeout=TIMEOUT) as r:
            try:
                _copy_body(r, buf, {}, 0, MAX_SUMS_BYTES, time.monotonic() + TIMEOUT, None, None)
            except _TooSlow as e:
                raise ValueError(str(e)) from None
        return buf.getvalue().decode("utf-8", "replace")
    from .checkpoint import read_regular_file  # torch-free: regular files under a size cap only

    return read_regular_file(Path(source).expanduser(), MAX_SUMS_BYTES, "checksum file").decode("utf-8", "replace")


def read_sha256sums(source: str) -> dict[str, str]:
    """``{relative path: sha256}`` from a ``sha256sum``-style file (``<hex>  <path>`` or ``<hex> *<path>``)."""
    try:
        text = _read_text(source)
    except (OSError, urllib.error.URLError, ValueError, CSAEError) as e:
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

