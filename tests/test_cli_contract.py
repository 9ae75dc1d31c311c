"""The CLI's contract, table-driven (issue 9): every subcommand x bad inputs (missing, garbage, truncated
files, directories, FIFOs, /dev/zero, unwritable outputs, negative/NaN/huge numbers) ends with exit code
0 or 2 in bounded time, and never with a traceback.

The commands run in this process (`csae_core.cli.main`), with stdout/stderr captured: an exception that
escapes main() is what a user would see as a traceback, and it fails the case. Each case has an alarm
(CASE_SECONDS), so a read that would hang (a FIFO) fails instead of blocking the suite.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import traceback
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from csae_core import cli
from csae_core.checkpoint import save_checkpoint
from reliability_counts import record

CASE_SECONDS = 60
HUGE = "1" + "0" * 30


def run(argv: list) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `python -m csae_core argv`, run in-process; an escaping exception is
    reported like the interpreter would (a traceback on stderr, exit 1)."""
    out, err = io.StringIO(), io.StringIO()

    def timeout(*_):
        raise TimeoutError(f"no answer in {CASE_SECONDS} s")

    old = signal.signal(signal.SIGALRM, timeout)
    signal.alarm(CASE_SECONDS)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = cli.main([str(a) for a in argv])
            except SystemExit as e:  # argparse: usage error
                code = e.code if isinstance(e.code, int) else 1
            except BaseException:  # noqa: BLE001 - this is what the test is looking for
                traceback.print_exc()
                code = 1
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def f(app_fixture, tmp_path_factory) -> dict:
    """Named bad (and good) inputs."""
    d = tmp_path_factory.mktemp("contract")
    good = app_fixture["checkpoints"] / "mnist" / "csae-b0.04.json"
    files = {"good": good, "data": app_fixture["data"], "dir": d / "a-dir", "missing": d / "missing.json",
             "fifo": d / "fifo.json", "fifo_png": d / "fifo.png", "zero": "/dev/zero",
             "unwritable": "/proc/no/such/out.png", "under_file": d / "plain.txt" / "out.png"}
    files["dir"].mkdir()
    (d / "plain.txt").write_text("x")
    os.mkfifo(files["fifo"])
    os.mkfifo(files["fifo_png"])
    rng = np.random.default_rng(0)
    files["garbage"] = d / "garbage.json"
    files["garbage"].write_bytes(rng.bytes(5000))
    files["garbage_st"] = d / "garbage.safetensors"
    files["garbage_st"].write_bytes(rng.bytes(5000))
    text = good.read_text()
    files["truncated_json"] = d / "trunc" / "t.json"
    files["truncated_json"].parent.mkdir()
    files["truncated_json"].write_text(text[: len(text) // 2])
    # A whole JSON whose weights file is cut short.
    tw = d / "truncw"
    tw.mkdir()
    (tw / "t.json").write_text(text)
    data = (good.parent / json.loads(text)["weights"]).read_bytes()
    (tw / json.loads(text)["weights"]).write_bytes(data[: len(data) // 2])
    files["truncated_weights"] = tw / "t.json"
    # JSONs naming hostile weights: /dev/zero, a traversal, a FIFO and a symlink out of the folder.
    for name, weights in (("wzero", "/dev/zero"), ("wtrav", "../" * 12 + "etc/hostname"),
                          ("wfifo", "w.fifo"), ("wlink", "link.safetensors")):
        folder = d / name
        folder.mkdir()
        j = json.loads(text)
        j["weights"] = weights
        (folder / "m.json").write_text(json.dumps(j))
        files[name] = folder / "m.json"
    os.mkfifo(d / "wfifo" / "w.fifo")
    os.symlink("/dev/zero", d / "wlink" / "link.safetensors")
    # NaN weights (hash consistent) and weights of another shape (a JSON from one model, weights of another).
    from conftest import _tiny_model

    model, _ = _tiny_model("csae", 0.04, 1)
    with torch.no_grad():
        model.decoder.head.weight.fill_(float("nan"))
    meta = {k: v for k, v in json.loads(text).items()
            if k not in ("format", "model", "weights", "weights_sha256", "weights_dtype", "centroids")}
    files["nan"] = save_checkpoint(d / "nan" / "m", model, meta).with_suffix(".json")
    other = d / "shape"
    other.mkdir()
    j = json.loads(text)
    j["model"]["latent_dim"] = 24
    (other / "m.json").write_text(json.dumps(j))
    (other / j["weights"]).write_bytes(data)
    files["shape"] = other / "m.json"
    # Images: garbage named .png, a GIF named .png, a pixel bomb, a truncated PNG.
    files["garbage_png"] = d / "garbage.png"
    files["garbage_png"].write_bytes(rng.bytes(3000))
    buf = io.BytesIO()
    Image.new("L", (40, 40), 255).save(buf, format="GIF")
    files["gif_png"] = d / "gif.png"
    files["gif_png"].write_bytes(buf.getvalue())
    buf = io.BytesIO()
    Image.new("1", (20000, 20000)).save(buf, format="PNG")
    files["bomb_png"] = d / "bomb.png"
    files["bomb_png"].write_bytes(buf.getvalue())
    a = np.full((64, 64), 255, np.uint8)
    a[10:50, 28:36] = 0
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    files["letter"] = d / "letter.png"
    files["letter"].write_bytes(buf.getvalue())
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (64, 64), dtype=np.uint8)).save(buf, format="PNG")  # incompressible
    files["truncated_png"] = d / "trunc.png"
    files["truncated_png"].write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    # IDX gzip bombs: a header claiming 2^31 images, and one claiming 10 images followed by 64 MB of zeros.
    bomb = d / "bombdata" / "mnist"
    bomb.mkdir(parents=True)
    import gzip

    head = lambda n: np.array([2051, n, 28, 28], ">u4").tobytes()  # noqa: E731
    (bomb / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(head(2**31 - 1) + bytes(784), 1))
    (bomb / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(head(10) + bytes(64 * 2**20), 9))
    for stem, n in (("train", 2**31 - 1), ("t10k", 10)):
        (bomb / f"{stem}-labels-idx1-ubyte.gz").write_bytes(
            gzip.compress(np.array([2049, n], ">u4").tobytes() + bytes(10), 1))
    files["bombdata"] = d / "bombdata"
    return files


# (case id, argv with {name} placeholders for the fixture's files, allowed exit codes)
CASES = [
    # pedcc
    ("pedcc classes -1", "pedcc --classes -1 --dim 3", {2}),
    ("pedcc classes huge", "pedcc --classes 1000000 --dim 40", {2}),
    ("pedcc classes 5000 dim 512", "pedcc --classes 5000 --dim 512", {2}),
    ("pedcc dim huge", "pedcc --classes 10 --dim 100000", {2}),
    ("pedcc classes nan", "pedcc --classes nan --dim 3", {2}),
    ("pedcc iters -1", "pedcc --classes 4 --dim 3 --iters -1", {2}),
    ("pedcc iters huge", f"pedcc --classes 4 --dim 3 --iters {HUGE}", {2}),
    ("pedcc seed -1", "pedcc --classes 4 --dim 3 --iters 5 --seed -1", {0, 2}),
    ("pedcc seed huge", f"pedcc --classes 4 --dim 3 --iters 5 --seed {HUGE}", {0, 2}),
    ("pedcc out dir", "pedcc --classes 4 --dim 3 --iters 5 --out {dir}", {2}),
    ("pedcc out unwritable", "pedcc --classes 4 --dim 3 --iters 5 --out {unwritable}", {2}),
    ("pedcc out under a file", "pedcc --classes 4 --dim 3 --iters 5 --out {under_file}", {2}),
    # data
    ("data check missing dir", "data check --data-dir {missing}", {2}),
    ("data check a file", "data check --data-dir {garbage}", {2}),
    ("data check /dev/zero", "data check --data-dir {zero}", {2}),
    ("data download unknown", "data download nosuch --data-dir {dir}", {2}),
    ("data check IDX gzip bombs", "data check --data-dir {bombdata}", {2}),
    ("evaluate on IDX gzip bombs", "evaluate {good} --data-dir {bombdata}", {2}),
    ("train on IDX gzip bombs", "train --epochs 1 --data-dir {bombdata} --out {dir}/bomb-run", {2}),
    # train (all refused before any data is read)
    ("train grad-clip -1", "train --grad-clip -1 --epochs 1 --out {dir}/r", {2}),
    ("train grad-clip nan", "train --grad-clip nan --epochs 1 --out {dir}/r", {2}),
    ("train warmup -5", "train --warmup-steps -5 --epochs 1 --out {dir}/r", {2}),
    ("train epoch-images -1", "train --epoch-images -1 --epochs 1 --out {dir}/r", {2}),
    ("train test-images -1", "train --test-images -1 --epochs 1 --out {dir}/r", {2}),
    ("train lr nan", "train --lr nan --epochs 1 --out {dir}/r", {2}),
    ("train lr inf", "train --lr inf --epochs 1 --out {dir}/r", {2}),
    ("train lr -1", "train --lr -1 --epochs 1 --out {dir}/r", {2}),
    ("train batch 0", "train --batch-size 0 --epochs 1 --out {dir}/r", {2}),
    ("train epochs -1", "train --epochs -1 --out {dir}/r", {2}),
    ("train beta nan", "train --beta nan --epochs 1 --out {dir}/r", {2}),
    ("train latent huge", "train --latent-dim 100000 --epochs 1 --out {dir}/r", {2}),
    ("train widths huge", "train --widths 100000 8 8 8 --epochs 1 --out {dir}/r", {2}),
    ("train image-size huge", "train --image-size 100000 --epochs 1 --out {dir}/r", {2}),
    ("train seed -1", "train --seed -1 --epochs 1 --out {dir}/r", {2}),
    ("train dataset missing", "train --dataset {missing} --epochs 1 --out {dir}/r", {2}),
    ("train dataset /dev/zero", "train --dataset {zero} --epochs 1 --out {dir}/r", {2}),
    ("train dataset fifo", "train --dataset {fifo} --epochs 1 --out {dir}/r", {2}),
    ("train resume nothing", "train --resume --epochs 1 --data-dir {data} --out {dir}/empty-run", {2}),
    ("train out is a file", "train --epochs 1 --data-dir {data} --out {garbage}", {2}),
    ("train out unwritable", "train --epochs 1 --data-dir {data} --out /proc/no/run", {2}),
    # evaluate
    *[(f"evaluate {k}", f"evaluate {{{k}}} --data-dir {{data}} --json", {2}) for k in (
        "missing", "garbage", "garbage_st", "dir", "fifo", "zero", "truncated_json", "truncated_weights",
        "wzero", "wtrav", "wfifo", "wlink", "nan", "shape")],
    ("evaluate limit -5", "evaluate {good} --data-dir {data} --limit -5 --json", {0, 2}),
    ("evaluate limit huge", f"evaluate {{good}} --data-dir {{data}} --limit {HUGE} --json", {0, 2}),
    ("evaluate data dir missing", "evaluate {good} --data-dir {missing}", {2}),
    # sample
    *[(f"sample {k}", f"sample {{{k}}} --out {{dir}}/s.png", {2}) for k in ("missing", "garbage", "zero", "nan",
                                                                            "wtrav", "fifo")],
    ("sample n 0", "sample {good} --n 0 --out {dir}/s.png", {2}),
    ("sample n -1", "sample {good} --n -1 --out {dir}/s.png", {2}),
    ("sample n huge", "sample {good} --n 1000000000 --out {dir}/s.png", {2}),
    ("sample temperature nan", "sample {good} --temperature nan --out {dir}/s.png", {2}),
    ("sample temperature -1", "sample {good} --temperature -1 --out {dir}/s.png", {2}),
    ("sample temperature inf", "sample {good} --temperature inf --out {dir}/s.png", {2}),
    ("sample class -1", "sample {good} --class -1 --out {dir}/s.png", {2}),
    ("sample class huge", f"sample {{good}} --class {HUGE} --out {{dir}}/s.png", {2}),
    ("sample seed -1", "sample {good} --seed -1 --out {dir}/s.png", {0, 2}),
    ("sample out dir", "sample {good} --out {dir}", {2}),
    ("sample out unwritable", "sample {good} --out {unwritable}", {2}),
    ("sample out under a file", "sample {good} --out {under_file}", {2}),
    # reconstruct
    *[(f"reconstruct image {k}", f"reconstruct {{good}} {{{k}}} --out {{dir}}/r.png", {2}) for k in (
        "missing", "garbage_png", "gif_png", "bomb_png", "truncated_png", "fifo_png", "zero", "dir")],
    ("reconstruct checkpoint garbage", "reconstruct {garbage} {letter} --out {dir}/r.png", {2}),
    ("reconstruct out dir", "reconstruct {good} {letter} --out {dir}", {2}),
    ("reconstruct out unwritable", "reconstruct {good} {letter} --out {unwritable}", {2}),
    # export
    *[(f"export {k}", f"export {{{k}}} --out {{dir}}/e", {2}) for k in ("missing", "garbage", "zero", "nan", "wlink")],
    ("export out dir", "export {good} --out {dir}", {0, 2}),
    ("export out unwritable", "export {good} --out /proc/no/e", {2}),
    ("export out under a file", "export {good} --out {under_file}", {2}),
]


# Cases where a refusal is not enough: the reason must be the right one (nothing outside was read).
REASONS = {"evaluate wtrav": "outside its own folder", "evaluate wzero": "outside its own folder",
           "evaluate wlink": "outside its own folder", "evaluate wfifo": "not a regular file",
           "evaluate nan": "NaN/inf", "evaluate shape": "shape (10, 24), got (10, 40)", "evaluate zero": "no checkpoint",
           "reconstruct image bomb_png": "pixel limit", "reconstruct image gif_png": "PNG and JPEG",
           "reconstruct image zero": "not a regular file", "reconstruct image fifo_png": "not a regular file"}


@pytest.mark.parametrize("case, argv, allowed", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_clear_line(case, argv, allowed, f):
    args = [a.format(**f) for a in argv.split()]
    code, out, err = run(args)
    record("bad inputs tried", 1)
    record("tracebacks seen", int("Traceback" in err))
    assert "Traceback" not in err, err[-3000:]
    assert code in allowed, (code, err[-2000:])
    if code == 2 and not err.startswith("usage:"):
        assert err.strip().splitlines()[-1].startswith("error: "), err[-2000:]
    if case in REASONS:
        assert REASONS[case] in err, err[-2000:]
