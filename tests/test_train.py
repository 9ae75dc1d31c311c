"""Training: exact resume, NaN handling, DDP under torchrun, and a short real-MNIST run."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from csae_core.checkpoint import load_checkpoint
from csae_core.errors import CSAEError
from csae_core.evaluate import decoder_collapsed, evaluate_model
from csae_core.model import CSAE, ModelConfig, build_model
from csae_core.preprocess import load_dataset_tensors
from csae_core.train import TrainConfig, lr_at, train

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(widths=(8, 8, 8, 8), beta=0.04)


def test_paper_schedule():
    cfg = TrainConfig()
    assert (cfg.lr, cfg.momentum, cfg.weight_decay, cfg.epochs) == (0.1, 0.9, 5e-4, 120)
    assert [lr_at(cfg, e) for e in (1, 30, 31, 60, 61, 91, 120)] == [0.1, 0.1, 0.01, 0.01, 0.001, 0.0001, 0.0001]


def test_resume_reproduces_uninterrupted_run(tmp_path):
    common = dict(dataset="mnist", batch_size=32, epoch_images=96, test_images=100, stats_images=300, lr_step=1)
    quiet = dict(log=lambda rec: None, progress=False)
    train(TrainConfig(out=str(tmp_path / "a"), epochs=3, **common), ModelConfig(**TINY), **quiet)
    train(TrainConfig(out=str(tmp_path / "b"), epochs=1, **common), ModelConfig(**TINY), **quiet)
    train(TrainConfig(out=str(tmp_path / "b"), epochs=3, **common), ModelConfig(**TINY), resume=True, **quiet)
    a, b = (load_file(tmp_path / run / json.loads((tmp_path / run / "last.json").read_text())["weights"])
            for run in ("a", "b"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    hist = load_checkpoint(tmp_path / "b").meta["history"]
    assert [h["epoch"] for h in hist] == [1, 2, 3]


def test_resume_refuses_another_model(tmp_path):
    common = dict(dataset="mnist", batch_size=32, epoch_images=32, test_images=50, stats_images=100)
    train(TrainConfig(out=str(tmp_path), epochs=1, **common), ModelConfig(**TINY), log=lambda r: None, progress=False)
    with pytest.raises(CSAEError, match="another model"):
        train(TrainConfig(out=str(tmp_path), epochs=2, **common), ModelConfig(widths=(8, 8, 8, 8), beta=0.08),
              resume=True, log=lambda r: None, progress=False)


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    calls = {"n": 0}
    real_loss = CSAE.loss

    def loss_turning_nan(self, out, x, y):
        calls["n"] += 1
        losses = real_loss(self, out, x, y)
        if calls["n"] > 3:  # epoch 1 is 3 steps of 32; epoch 2 goes NaN
            losses["loss"] = losses["loss"] * float("nan")
        return losses

    monkeypatch.setattr(CSAE, "loss", loss_turning_nan)
    cfg = TrainConfig(dataset="mnist", out=str(tmp_path), epochs=3, batch_size=32, epoch_images=96,
                      test_images=50, stats_images=100)
    with pytest.raises(CSAEError, match="diverged.*epoch 2"):
        train(cfg, ModelConfig(**TINY), log=lambda r: None, progress=False)
    ck = load_checkpoint(tmp_path)
    assert ck.meta["epoch"] == 1
    assert all(torch.isfinite(p).all() for p in ck.model.parameters())


@pytest.mark.slow  # two torchrun processes, ~10 s
def test_ddp_two_gloo_processes(tmp_path):
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533",
           "-m", "csae_core", "train", "--model", "csae", "--beta", "0.02", "--widths", "8", "8", "8", "8",
           "--epochs", "2", "--epoch-images", "128", "--batch-size", "32", "--test-images", "100",
           "--stats-images", "200", "--device", "cpu", "--out", str(out), "--no-progress"]
    res = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert res.returncode == 0, res.stderr[-2000:]
    epochs = [json.loads(line) for line in res.stdout.splitlines() if line.startswith('{"epoch"')]
    assert [e["epoch"] for e in epochs] == [1, 2]  # one log line per epoch, from rank 0 only
    assert load_checkpoint(out).meta["epoch"] == 2


@pytest.mark.slow
def test_short_real_mnist_run_beats_90_percent(tmp_path):
    """The real CSAE of Table 2 (beta 0.02) on 2 x 3,072 MNIST images with the zoo's cpu-short lr and
    batch (lr 0.1 at batch 64 collapses the decoder): > 90% on 1,000 test images."""
    cfg = TrainConfig(dataset="mnist", out=str(tmp_path), epochs=2, batch_size=64, lr=0.03, epoch_images=3072,
                      test_images=1000, stats_images=2000, lr_step=1)
    records = []
    train(cfg, ModelConfig(beta=0.02), log=records.append, progress=False)
    assert records[-1]["test_accuracy"] > 0.90, records
    assert records[-1]["test_recon_mse"] < records[0]["test_recon_mse"]
    # The decoder really reconstructs: clearly better than a flat image, which an untrained
    # CSAE (zero-initialised output head) is flagged as.
    _, (x, y), _ = load_dataset_tensors("mnist")
    model = load_checkpoint(tmp_path / "last.json").model
    trained = evaluate_model(model, x[:500], y[:500])
    fresh = evaluate_model(build_model(ModelConfig(), model.centroids), x[:500], y[:500])
    assert decoder_collapsed(fresh) and not decoder_collapsed(trained)
    assert trained["recon_mse"] < 0.6 * trained["flat_mse"], trained


def test_schedules_anneal_per_step_and_warm_up():
    cos = TrainConfig(lr=0.1, epochs=4, schedule="cosine", warmup_steps=10)
    lin = TrainConfig(lr=0.1, epochs=4, schedule="linear")
    assert lr_at(cos, 1, 0, 100) == pytest.approx(0.1 / 10)  # first warm-up step
    assert lr_at(cos, 1, 9, 100) == pytest.approx(0.1 * 0.5 * (1 + math.cos(math.pi * 9 / 400)))
    assert lr_at(cos, 3, 0, 100) == pytest.approx(0.05)  # half-way: cosine at its midpoint
    assert lr_at(lin, 3, 0, 100) == pytest.approx(0.05)
    assert lr_at(lin, 4, 99, 100) == pytest.approx(0.1 / 400)  # last step: nearly 0
    with pytest.raises(CSAEError, match="schedule"):
        TrainConfig(schedule="exponential")


def test_validation_split_is_the_training_tail_and_never_the_test_set(tmp_path, monkeypatch):
    """Recipe search measures on the last N training images; the test split is never evaluated, nor read."""
    import csae_core.train as T
    from csae_core import data

    real_split, real_eval = data.load_split, T.evaluate_model
    seen = {"splits": []}

    def load_split(name, split, *a, **kw):
        seen["splits"].append(split)
        images, labels = real_split(name, split, *a, **kw)
        seen[split] = (images, labels)
        return images, labels

    def spy(model, images, labels, **kw):
        seen.setdefault("evaluated", []).append((images.clone(), labels.clone()))
        return real_eval(model, images, labels, **kw)

    monkeypatch.setattr(data, "load_split", load_split)
    monkeypatch.setattr(T, "evaluate_model", spy)
    train(TrainConfig(dataset="mnist", out=str(tmp_path / "v"), epochs=1, batch_size=32, epoch_images=64,
                      val_images=100, stats_images=50), ModelConfig(**TINY), log=lambda r: None, progress=False)
    assert seen["splits"] == ["train"]  # the test files are never opened
    tx, ty = seen["train"]
    for images, labels in seen["evaluated"]:
        assert torch.equal(images.cpu()[:, 0, 2:-2, 2:-2], tx[-100:]) and torch.equal(labels.cpu(), ty[-100:])
    ck = load_checkpoint(tmp_path / "v")
    assert ck.meta["metrics"]["split"] == "validation" and ck.meta["metrics"]["test_images"] == 100
    last = ck.meta["history"][-1]
    assert "val_accuracy" in last and "test_accuracy" not in last
    assert last["images"] == last["image_steps"] == 64  # the training images of the epoch, none of the tail
    with pytest.raises(CSAEError, match="val-images"):
        T.validation_split((tx, ty), len(ty))


def test_make_recipe_trains_on_the_validation_split(monkeypatch):
    """results/make_recipe.py's candidates hold out the training tail (`val_images`): its report is chosen
    on validation images, never on the test set."""
    import importlib.util

    import csae_core.train as T

    spec = importlib.util.spec_from_file_location("make_recipe", ROOT / "results" / "make_recipe.py")
    make_recipe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_recipe)
    got = []
    monkeypatch.setattr(T, "train", lambda cfg, mcfg, **kw: got.append(cfg))
    monkeypatch.setattr(make_recipe, "_log", lambda name: [])
    for name in make_recipe.CANDIDATES:
        make_recipe.train_candidate(name, None, threads=torch.get_num_threads())
    assert len(got) == len(make_recipe.CANDIDATES)
    assert all(cfg.val_images == make_recipe.VAL_IMAGES == 5000 for cfg in got)


def test_resume_refuses_another_epoch_count_under_an_annealed_schedule(tmp_path):
    """Cosine and linear anneal over --epochs: resuming with another count would bend the schedule already
    followed, so it is refused; the step schedule does not depend on it, and a step run may be extended."""
    common = dict(dataset="mnist", batch_size=32, epoch_images=32, test_images=20, stats_images=20)
    quiet = dict(log=lambda r: None, progress=False)
    train(TrainConfig(out=str(tmp_path / "c"), epochs=2, schedule="cosine", **common), ModelConfig(**TINY), **quiet)
    with pytest.raises(CSAEError, match="other settings.*epochs 2 -> 4"):
        train(TrainConfig(out=str(tmp_path / "c"), epochs=4, schedule="cosine", **common), ModelConfig(**TINY),
              resume=True, **quiet)
    train(TrainConfig(out=str(tmp_path / "s"), epochs=1, **common), ModelConfig(**TINY), **quiet)
    train(TrainConfig(out=str(tmp_path / "s"), epochs=2, **common), ModelConfig(**TINY), resume=True, **quiet)
    assert load_checkpoint(tmp_path / "s").meta["epoch"] == 2


def test_pedcc_iters_runs_the_papers_fixed_count(tmp_path):
    """--pedcc-iters Q: Algorithm 1 with q iterations (the authors used 200), recorded in the checkpoint."""
    from csae_core.pedcc import generate_pedcc

    train(TrainConfig(dataset="mnist", out=str(tmp_path / "q"), epochs=1, batch_size=32, epoch_images=32,
                      test_images=20, stats_images=20, pedcc_iters=200), ModelConfig(**TINY),
          log=lambda r: None, progress=False)
    ck = load_checkpoint(tmp_path / "q")
    assert ck.meta["pedcc"]["mode"] == "fixed" and ck.meta["pedcc"]["iterations"] == 200
    fixed = generate_pedcc(10, 40, seed=0, iters=200, converge=False).scaled()
    assert torch.allclose(ck.model.centroids, fixed.float())
    assert not torch.allclose(fixed.float(), generate_pedcc(10, 40, seed=0, converge=True).scaled().float(), atol=1e-4)


def test_cuda_device_always_gets_an_index(monkeypatch):
    """torch.cuda.set_device refuses a bare "cuda" (torch 2.11 on the H200 loan: every model failed at start);
    --device cuda/auto must name the current GPU, or LOCAL_RANK's under torchrun."""
    from csae_core import train as train_mod
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert train_mod._pick_device("cuda") == torch.device("cuda", 0)
    assert train_mod._pick_device("auto") == torch.device("cuda", 0)
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert train_mod._pick_device("cuda") == torch.device("cuda", 3)
    assert train_mod._pick_device("cpu") == torch.device("cpu")


def test_progress_lines_within_an_epoch_carry_the_running_losses(tmp_path):
    """progress.jsonl (the Train view's live curves): a line every `progress_every` seconds inside an epoch, with
    the mean losses of the images since the previous line, so an epoch's lines average to its log.jsonl record.
    A fresh run into the folder starts the file afresh; log.jsonl stays one record per epoch."""
    out = tmp_path / "run"
    cfg = TrainConfig(dataset="mnist", out=str(out), epochs=2, batch_size=16, epoch_images=64, test_images=20,
                      stats_images=50, lr=0.01, progress_every=1e-9)  # every step: 4 lines per epoch
    for _ in range(2):  # the second, fresh (not --resume) run replaces the first one's lines
        train(cfg, ModelConfig(**TINY), log=lambda rec: None, progress=False)
    lines = [json.loads(x) for x in (out / "progress.jsonl").read_text().splitlines()]
    assert [(r["epoch"], r["step"], r["images"]) for r in lines] == \
        [(e, s, 16 * s) for e in (1, 2) for s in range(1, 5)]
    log = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2]
    for rec in log:
        mine = [r for r in lines if r["epoch"] == rec["epoch"]]
        assert all(r["epoch_images"] == 64 and r["steps"] == 4 for r in mine)
        for key in ("loss1", "loss2", "train_accuracy"):
            assert sum(r[key] for r in mine) / len(mine) == pytest.approx(rec[key], rel=1e-5), key

    quiet = tmp_path / "quiet"
    train(TrainConfig(**{**cfg.__dict__, "out": str(quiet), "epochs": 1, "progress_every": 0}), ModelConfig(**TINY),
          log=lambda rec: None, progress=False)
    assert not (quiet / "progress.jsonl").exists()
