"""Crash consistency of training saves (issue 9): a kill before or after each atomic rename of the save
sequence (log.jsonl, train_state, last weights, last JSON) leaves either no checkpoint (first epoch) or a
loadable `last` pair, of the previous epoch or the new one; `--resume` then ends bitwise equal to an
uninterrupted run, with a complete log.jsonl, no temp files and no superseded weights left behind.

The kill is an exception raised by a patched os.replace at its k-th call (before or after the real
rename); a stale temp file is planted too, as a SIGKILL mid-write would leave one.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from csae_core.checkpoint import load_checkpoint
from csae_core.model import ModelConfig
from csae_core.train import TrainConfig, train
from reliability_counts import record

EPOCHS = 2
SAVES_PER_EPOCH = 4  # log.jsonl, last.<sha>.safetensors, last.json, train_state.safetensors


class Killed(BaseException):
    """Stands for SIGKILL: not an Exception, so nothing on the way up handles it."""


def config(out: Path, data: Path) -> TrainConfig:
    return TrainConfig(dataset="mnist", data_dir=str(data), out=str(out), epochs=EPOCHS, batch_size=16,
                       epoch_images=16, test_images=16, stats_images=20, lr=0.01, lr_step=1, device="cpu")


MODEL = dict(widths=(8, 8, 8, 8), beta=0.04)
QUIET = dict(log=lambda rec: None, progress=False)


def last_weights(out: Path) -> dict:
    return load_file(out / json.loads((out / "last.json").read_text())["weights"])


def log_epochs(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def reference(app_fixture, tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny batches: one thread is fastest, and the same in every run
    out = tmp_path_factory.mktemp("reference") / "run"
    train(config(out, app_fixture["data"]), ModelConfig(**MODEL), **QUIET)
    yield {"weights": last_weights(out), "log": log_epochs(out), "data": app_fixture["data"]}
    torch.set_num_threads(threads)


KILLS = [(k, when) for k in range(1, EPOCHS * SAVES_PER_EPOCH + 1) for when in ("before", "after")]


@pytest.mark.parametrize("k, when", KILLS, ids=[f"replace{k}-{w}" for k, w in KILLS])
def test_kill_at_each_rename_then_resume(k, when, reference, tmp_path, monkeypatch):
    out = tmp_path / "run"
    real_replace = os.replace
    calls = {"n": 0}

    def replace(src, dst):
        calls["n"] += 1
        if calls["n"] == k and when == "before":
            raise Killed(f"killed before renaming onto {dst}")
        real_replace(src, dst)
        if calls["n"] == k and when == "after":
            raise Killed(f"killed after renaming onto {dst}")

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(Killed):
        train(config(out, reference["data"]), ModelConfig(**MODEL), **QUIET)
    monkeypatch.setattr(os, "replace", real_replace)
    killed_in_epoch = (k - 1) // SAVES_PER_EPOCH + 1

    # What the kill left: a loadable pair of the previous or this epoch, or (first epoch) none at all.
    if (out / "last.json").exists():
        assert load_checkpoint(out).meta["epoch"] in (killed_in_epoch - 1, killed_in_epoch)
    else:
        assert killed_in_epoch == 1
    (out / ".last.json.deadbeef.tmp").write_bytes(b"half a save")  # what a SIGKILL mid-write leaves
    (out / ".train_state.safetensors.x1y2z3w4.tmp").write_bytes(b"")

    resume = (out / "train_state.safetensors").exists()
    train(config(out, reference["data"]), ModelConfig(**MODEL), resume=resume, **QUIET)

    got = last_weights(out)
    assert got.keys() == reference["weights"].keys()
    for name, t in reference["weights"].items():
        assert torch.equal(got[name], t), name
    log = log_epochs(out)
    assert [r["epoch"] for r in log] == list(range(1, EPOCHS + 1))
    timing = ("seconds", "images_per_s")
    assert [{k2: v for k2, v in r.items() if k2 not in timing} for r in log] == \
        [{k2: v for k2, v in r.items() if k2 not in timing} for r in reference["log"]]
    assert not list(out.glob(".*.tmp")), list(out.glob(".*"))
    assert len(list(out.glob("last.*.safetensors"))) == 1  # superseded weights removed
    record("kill points survived", 1)
