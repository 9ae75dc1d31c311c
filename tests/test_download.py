"""Datasets on demand, over real HTTP without the internet: a threaded loopback server (127.0.0.1)
serves a generated tiny IDX mirror laid out as ../shared/datasets (``<dataset>/<file>`` + SHA256SUMS),
and can corrupt a file, cut a connection part-way (with or without HTTP Range support) or go slow.
One test, marked ``network``, fetches a real official file (deselected by default: ``-m network``)."""
from __future__ import annotations

import dataclasses
import gzip
import hashlib
import http.server
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from csae_core import data
from csae_core.data import DATASETS, Download, download_dataset, ensure_dataset, load_split
from csae_core.errors import CSAEError


def _idx(array: np.ndarray, magic: int) -> bytes:
    header = np.array([magic, *array.shape], dtype=">u4").tobytes()
    return gzip.compress(header + array.astype(np.uint8).tobytes(), compresslevel=1)


def make_mirror(root: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Tiny valid copies of every file of every dataset under root/<folder>/, plus root/SHA256SUMS."""
    rng = np.random.default_rng(3)
    arrays = {}
    for name, spec in DATASETS.items():
        for split, (img_file, lab_file) in spec.files.items():
            n = 26 if split == "one-per-class" else 40
            images = rng.integers(0, 256, (n, 28, 28))
            labels = np.arange(n) % spec.num_classes + spec.label_offset
            (root / spec.folder).mkdir(parents=True, exist_ok=True)
            (root / spec.folder / img_file).write_bytes(_idx(images, data.IMAGE_MAGIC))
            (root / spec.folder / lab_file).write_bytes(_idx(labels, data.LABEL_MAGIC))
            arrays[f"{name}/{split}"] = (images, labels - spec.label_offset)
    write_sums(root)
    return arrays


def write_sums(root: Path) -> Path:
    lines = [f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.relative_to(root).as_posix()}"
             for p in sorted(root.glob("*/*.gz"))]
    (root / "SHA256SUMS").write_text("\n".join(lines) + "\n")
    return root / "SHA256SUMS"


class Mirror:
    """``http://127.0.0.1:<port>/`` over ``root``; records (path, Range header) of every GET."""

    def __init__(self, root: Path):
        self.root, self.requests, self.lock = root, [], threading.Lock()
        self.cut_once: dict[str, int] = {}  # path -> bytes sent before the first answer is cut
        self.ranges = True  # honour "Range: bytes=N-" with 206
        self.corrupt: set[str] = set()  # paths served with one byte flipped
        self.delay = 0.0  # seconds before each answer (to overlap concurrent fetches)
        mirror = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):
                path = self.path.lstrip("/")
                with mirror.lock:
                    mirror.requests.append((path, self.headers.get("Range")))
                    cut = mirror.cut_once.pop(path, None)
                time.sleep(mirror.delay)
                file = (mirror.root / path).resolve()
                if not file.is_file() or mirror.root.resolve() not in file.parents:
                    self.send_error(404)
                    return
                body = bytearray(file.read_bytes())
                if path in mirror.corrupt:
                    body[len(body) // 2] ^= 0xFF
                start = 0
                rng = self.headers.get("Range", "")
                if mirror.ranges and rng.startswith("bytes=") and rng.endswith("-"):
                    start = int(rng[6:-1])
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                if cut is not None:  # promise everything, send part, hang up
                    self.wfile.write(bytes(body[start:start + cut]))
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(bytes(body[start:]))

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def gets(self) -> Counter:
        return Counter(p for p, _ in self.requests)

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def mirror(tmp_path, monkeypatch):
    """A loopback mirror of a tiny dataset set, named by CSAE_DATA_URL + CSAE_DATA_SHA256."""
    root = tmp_path / "mirror"
    m = Mirror(root)
    m.arrays = make_mirror(root)
    monkeypatch.setenv(data.URL_VAR, m.url)
    monkeypatch.setenv(data.SHA256_VAR, str(root / "SHA256SUMS"))
    monkeypatch.delenv(data.ENV_VAR, raising=False)
    yield m
    m.close()


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_good_fetch(mirror, tmp_path):
    calls = []
    folder = ensure_dataset("mnist", tmp_path / "data", progress=lambda d, t: calls.append((d, t)))
    assert folder == tmp_path / "data" / "mnist"
    x, y = load_split("mnist", "train", tmp_path / "data")
    images, labels = mirror.arrays["mnist/train"]
    assert torch.equal(x, torch.from_numpy(images.astype(np.uint8))) and y.tolist() == labels.tolist()
    assert calls and all(t is not None and 0 < d <= t for d, t in calls)
    assert _leftovers(folder) == []
    assert set(mirror.gets()) == {f"mnist/{f}" for f in DATASETS["mnist"].required_files}
    # Found now: no second fetch.
    n = len(mirror.requests)
    assert ensure_dataset("mnist", tmp_path / "data") == folder and len(mirror.requests) == n


def test_emnist_one_per_class_derived_when_the_mirror_lacks_it(mirror, tmp_path):
    spec = DATASETS["emnist-letters"]
    for f in spec.files["one-per-class"]:
        (mirror.root / spec.folder / f).unlink()
    write_sums(mirror.root)
    folder = ensure_dataset("emnist-letters", tmp_path / "data", bar=False)
    xo, yo = load_split("emnist-letters", "one-per-class", tmp_path / "data")
    x, y = load_split("emnist-letters", "test", tmp_path / "data")
    assert yo.tolist() == list(range(26)) and torch.equal(xo, x[:26])
    assert _leftovers(folder) == []


@pytest.mark.parametrize("sums", [True, False], ids=["CSAE_DATA_SHA256", "official MD5"])
def test_checksum_mismatch_rejects_the_file_and_leaves_nothing(mirror, tmp_path, monkeypatch, sums):
    if sums:
        mirror.corrupt.add("mnist/train-images-idx3-ubyte.gz")
    else:  # without CSAE_DATA_SHA256 a mirror is held to the official MD5s, which these tiny files fail
        monkeypatch.delenv(data.SHA256_VAR)
    with pytest.raises(CSAEError, match="checksum") as e:
        ensure_dataset("mnist", tmp_path / "data", bar=False)
    assert "train-images-idx3-ubyte.gz" in str(e.value)
    folder = tmp_path / "data" / "mnist"
    assert "train-images-idx3-ubyte.gz" not in os.listdir(folder) and _leftovers(folder) == []
    with pytest.raises(CSAEError, match="not found"):
        load_split("mnist", "train", tmp_path / "data")


@pytest.mark.parametrize("ranges", [True, False], ids=["resumed with Range", "clean retry"])
def test_cut_connection(mirror, tmp_path, ranges):
    path = "mnist/train-images-idx3-ubyte.gz"
    mirror.ranges = ranges
    mirror.cut_once[path] = 1000
    ensure_dataset("mnist", tmp_path / "data", bar=False)
    x, _ = load_split("mnist", "train", tmp_path / "data")
    assert torch.equal(x, torch.from_numpy(mirror.arrays["mnist/train"][0].astype(np.uint8)))
    tries = [r for p, r in mirror.requests if p == path]
    assert tries == [None, "bytes=1000-"]  # the second asks for the rest; a server without Range resends all
    assert _leftovers(tmp_path / "data" / "mnist") == []


def test_concurrent_fetches_share_one_download(mirror, tmp_path):
    """Three threads and two processes fetch into one folder at once: all succeed, each file comes once."""
    mirror.delay = 0.3
    out, errors = tmp_path / "data", []

    def fetch():
        try:
            ensure_dataset("fashion-mnist", out, bar=False)
        except Exception as e:  # noqa: BLE001 - collected for the assertion
            errors.append(repr(e))

    code = "import sys; from csae_core.data import ensure_dataset; ensure_dataset('fashion-mnist', sys.argv[1], bar=False)"
    procs = [subprocess.Popen([sys.executable, "-c", code, str(out)], stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    threads = [threading.Thread(target=fetch) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    assert errors == []
    assert all(n == 1 for n in mirror.gets().values()), mirror.gets()
    x, _ = load_split("fashion-mnist", "test", out)
    assert torch.equal(x, torch.from_numpy(mirror.arrays["fashion-mnist/test"][0].astype(np.uint8)))
    assert _leftovers(out / "fashion-mnist") == []


def test_no_network_is_one_clear_message(tmp_path, monkeypatch):
    with socketserver_port() as port:  # a port nothing listens on
        monkeypatch.setenv(data.URL_VAR, f"http://127.0.0.1:{port}/")
        monkeypatch.delenv(data.SHA256_VAR, raising=False)
        monkeypatch.delenv(data.ENV_VAR, raising=False)
        with pytest.raises(CSAEError) as e:
            ensure_dataset("mnist", tmp_path / "data", bar=False)
        msg = str(e.value)
        assert "python -m csae_core data download mnist" in msg and data.ENV_VAR in msg and "Traceback" not in msg
        env = {**os.environ, data.URL_VAR: f"http://127.0.0.1:{port}/"}
        r = subprocess.run([sys.executable, "-m", "csae_core", "data", "download", "mnist",
                            "--data-dir", str(tmp_path / "cli")], env=env, capture_output=True, text=True,
                           timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr and data.ENV_VAR in r.stderr
    assert _leftovers(tmp_path / "cli" / "mnist") == []


class socketserver_port:
    """Reserve a free loopback port, then close it, so connecting to it is refused."""

    def __enter__(self) -> int:
        import socket

        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        return port

    def __exit__(self, *exc):
        return False


def test_bad_sha256_file_is_one_clear_message(mirror, tmp_path, monkeypatch):
    (tmp_path / "sums").write_text("not a checksum file\n")
    monkeypatch.setenv(data.SHA256_VAR, str(tmp_path / "sums"))
    with pytest.raises(CSAEError, match=data.SHA256_VAR):
        ensure_dataset("mnist", tmp_path / "data", bar=False)


@pytest.mark.network
def test_official_download_over_the_internet(tmp_path, monkeypatch):
    """The real thing: MNIST's test labels (4.5 kB) from the official mirror, checked by their MD5."""
    monkeypatch.delenv(data.URL_VAR, raising=False)
    spec = DATASETS["mnist"]
    one = [d for d in spec.downloads if d.filename == "t10k-labels-idx1-ubyte.gz"]
    monkeypatch.setitem(DATASETS, "mnist", dataclasses.replace(spec, downloads=tuple(one)))
    folder = download_dataset("mnist", tmp_path)
    labels = data.read_idx(folder / "t10k-labels-idx1-ubyte.gz", data.LABEL_MAGIC, spec)
    assert len(labels) == 10000 and isinstance(one[0], Download)
