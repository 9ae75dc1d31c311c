"""The zoo driver (checkpoints/zoo.py): recipe-aware skipping, and the whole GPU path (concurrent jobs,
fp16 export, full evaluation, manifest, table, <= 16 MiB packing) run end to end on a tiny CPU config."""
import importlib.util
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ZOO = ROOT / "checkpoints" / "zoo.py"


def load_zoo():
    spec = importlib.util.spec_from_file_location("zoo_under_test", ZOO)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_skip_decision_follows_the_recipe_and_force(tmp_path):
    zoo = load_zoo()
    zoo.set_root(tmp_path)
    (tmp_path / "checkpoints" / "mnist").mkdir(parents=True)
    shipped = {"format": "csae-checkpoint/1", "recipe": "cpu-short", "train": {"seed": 0}}
    (tmp_path / "checkpoints" / "mnist" / "csae-b0.02.json").write_text(json.dumps(shipped))
    only = ["mnist/csae-b0.02"]
    assert zoo.plan("cpu-short", ["mnist"], only=only) == []  # shipped with this recipe: skipped
    assert zoo.plan("paper", ["mnist"], only=only) == [("mnist", "csae", 0.02, 0)]  # another recipe: retrained
    assert zoo.plan("cpu-short", ["mnist"], force=True, only=only) == [("mnist", "csae", 0.02, 0)]
    # the extra seeds are their own models, and the most-needed models come first
    names = [zoo.name_of(m, b, s) for _, m, b, s in zoo.plan("paper", ["mnist"])]
    assert names[0] == "csae-b0.02" and {"csae-b0.02-s1", "csae-b0.02-s2"} <= set(names)
    assert len(names) == len(set(names)) == 10  # 5 betas, 2 more seeds, encoder, Basenet, CVAE
    # a paper-recipe model (a GPU loan's) is never replaced by a cheaper recipe's, except with --force
    (tmp_path / "checkpoints" / "mnist" / "csae-b0.02.json").write_text(json.dumps({**shipped, "recipe": "paper"}))
    assert zoo.plan("cpu-720k", ["mnist"], only=only) == zoo.plan("paper", ["mnist"], only=only) == []
    assert zoo.plan("cpu-720k", ["mnist"], force=True, only=only) == [("mnist", "csae", 0.02, 0)]


@pytest.mark.slow  # about a minute: trains and evaluates a tiny zoo in subprocesses
def test_tiny_recipe_end_to_end_with_two_jobs(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = lambda *a: subprocess.run([sys.executable, str(ZOO), *a, "--root", str(tmp_path)], env=env,
                                    capture_output=True, text=True, timeout=600)
    only = ["--only", "mnist/csae-b0", "mnist/cvae"]
    q = run("train", "--recipe", "tiny", "--datasets", "mnist", "--jobs", "2", "--threads", "1", *only)
    assert q.returncode == 0, q.stderr[-2000:]
    ck = tmp_path / "checkpoints" / "mnist"
    for name in ("csae-b0", "csae-b0-epoch001", "cvae"):
        meta = json.loads((ck / f"{name}.json").read_text())
        assert meta["recipe"] == "tiny" and meta["weights_dtype"] == "float16"
        record = json.loads((tmp_path / "results" / "eval" / "mnist" / f"{name}.json").read_text())
        assert record["test_images"] == 50 and record["checkpoint"] == f"checkpoints/mnist/{name}.json"
    assert json.loads((ck / "cvae.json").read_text())["train"]["optimizer"] == "adam"
    again = run("train", "--recipe", "tiny", "--datasets", "mnist", *only)
    assert again.returncode == 0 and "0 model(s)" in again.stdout  # recipe-aware skip on a rerun
    assert run("manifest").returncode == 0
    rows = json.loads((tmp_path / "checkpoints" / "manifest.json").read_text())
    assert {(r["model"], r["epoch"], r["recipe"], r["seed"]) for r in rows} == {
        ("csae", 2, "tiny", 0), ("csae", 1, "tiny", 0), ("cvae", 2, "tiny", 0)}
    assert all(r["image_steps"] == r["epoch"] * 32 for r in rows)
    assert all(r["paper_epoch"] is None for r in rows)  # only paper-recipe models get the paper's epoch scale
    assert run("table").returncode == 0
    assert "| CSAE β=0 |" in (tmp_path / "results" / "table3.md").read_text()
    out = tmp_path / "packed"
    assert run("pack", "--out", str(out)).returncode == 0
    parts = sorted(out.glob("zoo-part*.tar.gz"))
    assert parts and all(p.stat().st_size <= 16 * 2**20 for p in parts)
    with tarfile.open(parts[0]) as tar:
        assert "checkpoints/mnist/cvae.safetensors" in tar.getnames()


def test_the_app_offers_the_zoo_recipes_themselves():
    """The Train view's cpu-720k and paper are the zoo's (csae_core.recipes), up to the per-epoch evaluation the
    view adds so its curves move: a recipe changed for the zoo changes in the app too."""
    sys.path.insert(0, str(ROOT))
    from app import training_plan

    zoo = load_zoo()
    for name in ("cpu-720k", "paper"):
        ours = {k: v for k, v in zoo.settings_for(name, "csae").items() if k != "test_images"}
        app = {k: v for k, v in training_plan.settings(training_plan.Plan(dataset="mnist", recipe=name)).items()
               if k != "test_images"}
        assert app == ours, name


def test_seed_statistics_never_mix_recipes():
    """MNIST β=0.02's seed 0 came from a GPU loan (paper recipe); CPU seeds of cpu-720k must not enter its mean ±
    std, but are still shown, one line per seed."""
    zoo = load_zoo()
    row = lambda seed, recipe, acc: {"dataset": "mnist", "model": "csae", "beta": 0.02, "seed": seed, "epoch": 12,
                                     "epochs": 12, "test_accuracy": acc, "recon_mse": 0.003, "psnr": 25.0,
                                     "image_steps": 720_000, "recipe": recipe}
    rows = zoo.table_rows([row(0, "paper", 0.9953), row(1, "cpu-720k", 0.9940), row(2, "cpu-720k", 0.9930)])
    r = rows[(rows.dataset == "mnist") & (rows.model == "csae") & (rows.beta == 0.02)].iloc[0]
    assert (r.seeds, r.accuracy, r.recipe, r.other_recipe_seeds) == (1, 99.53, "paper", 2)
    same = zoo.table_rows([row(0, "cpu-720k", 0.99), row(1, "cpu-720k", 0.98), row(2, "cpu-720k", 0.97)])
    r = same[(same.dataset == "mnist") & (same.model == "csae") & (same.beta == 0.02)].iloc[0]
    assert r.seeds == 3 and abs(r.accuracy - 98.0) < 1e-9 and abs(r["std"] - 1.0) < 1e-9 and r.other_recipe_seeds == 0
    lines = zoo._seeds_section([row(0, "paper", 0.9953), row(1, "cpu-720k", 0.9940)])
    assert any("| 1 | cpu-720k | 99.40 |" in line for line in lines) and any("| 0 | paper | 99.53 |" in line
                                                                             for line in lines)
    assert zoo._seeds_section([row(0, "paper", 0.9953)]) == []  # one seed: no section
    # Each recipe's own spread: the CPU seeds of a GPU seed-0 row still give a std
    lines = zoo._seeds_section([row(0, "paper", 0.9953), row(1, "cpu-720k", 0.9940), row(2, "cpu-720k", 0.9930)])
    assert "- mnist CSAE β=0.02, cpu-720k: 99.35 ± 0.07 (n=2, sample std)" in lines
    assert not any(line.startswith("- mnist CSAE β=0.02, paper") for line in lines)  # n=1: no spread


def test_fig10_curve_lists_each_models_class_mean_distances_by_epoch(tmp_path):
    """Fig. 10's shortfall is reported with its curve: every MNIST CSAE checkpoint's training-image class-mean
    distances, a model's snapshots before its final epoch."""
    zoo = load_zoo()
    zoo.set_root(tmp_path)
    (tmp_path / "checkpoints" / "mnist").mkdir(parents=True)
    (tmp_path / "checkpoints" / "mnist" / "csae-b0.04.json").write_text(  # malformed means: skipped, no crash
        json.dumps({"epoch": 12, "recipe": "cpu-720k", "latent_stats": {"mean": [[0.0, 0.0], "x"]}}))
    for stem, epoch, spread in (("csae-b0", 12, 3.0), ("csae-b0-epoch004", 4, 2.0), ("csae-encoder", 12, None)):
        stats = {"mean": [[0.0, 0.0], [spread, 0.0], [0.0, 2 * spread]]} if spread else {}
        (tmp_path / "checkpoints" / "mnist" / f"{stem}.json").write_text(
            json.dumps({"epoch": epoch, "recipe": "cpu-720k", "latent_stats": stats}))
    lines = zoo._fig10_curve()
    rows = [line for line in lines if line.startswith("| csae")]
    assert rows == ["| csae-b0-epoch004 | cpu-720k | 4 | 2.00 | 4.47 |", "| csae-b0 | cpu-720k | 12 | 3.00 | 6.71 |"]


def test_table_command_writes_mean_and_std_of_seeds(tmp_path, capsys):
    zoo = load_zoo()
    zoo.set_root(tmp_path)
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "results").mkdir()
    rows = [{"dataset": "fashion-mnist", "model": "csae", "beta": 0.02, "seed": s, "epoch": 12, "epochs": 12,
             "test_accuracy": acc, "recon_mse": 0.0065, "psnr": 23.2, "image_steps": 720_000, "recipe": "cpu-720k",
             "path": f"checkpoints/fashion-mnist/csae-b0.02{'-s%d' % s if s else ''}.json", "bytes": 2**20,
             "train_seconds": 3600, "images_per_s": 200, "hardware": {"device": "cpu", "threads": 2}}
            for s, acc in ((0, 0.9313), (1, 0.9301), (2, 0.9325))]
    (tmp_path / "checkpoints" / "manifest.json").write_text(json.dumps(rows))
    zoo.cmd_table(None)
    md = (tmp_path / "results" / "table3.md").read_text()
    assert "| CSAE β=0.02 | — | 99.52 | — | 93.13 ± 0.12 (n=3) | 92.36 | +0.77 |" in md, md.splitlines()[8:12]
    assert "## Seeds" in md and "| fashion-mnist | CSAE β=0.02 | 2 | cpu-720k | 93.25 | 0.0065 |" in md
