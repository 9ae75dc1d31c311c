"""The CLI as a user runs it: JSON outputs, and bad input as one clear line, never a traceback."""
import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from csae_core.checkpoint import save_checkpoint
from csae_core.model import ModelConfig, build_model
from csae_core.pedcc import generate_pedcc

ROOT = Path(__file__).resolve().parents[1]


def cli(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "csae_core", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=300, env=clean_env())


def clean_env() -> dict:
    """A bare environment for the CLI, keeping only where the datasets are if the user said so."""
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    if os.environ.get("CSAE_DATA_DIR"):
        env["CSAE_DATA_DIR"] = os.environ["CSAE_DATA_DIR"]
    return env


def assert_clean_error(res, *words):
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr
    assert res.stderr.startswith("error: ") and len(res.stderr.strip().splitlines()) == 1
    for w in words:
        assert w in res.stderr


def test_pedcc_json():
    res = cli("pedcc", "--classes", 10, "--dim", 40, "--converge", "--json")
    assert res.returncode == 0, res.stderr
    rec = json.loads(res.stdout)
    for key in ("classes", "dim", "seed", "iterations", "max_cosine", "min_distance", "energy", "seconds"):
        assert key in rec
    assert rec["max_cosine"] == pytest.approx(-1 / 9, abs=1e-6)


def test_pedcc_fixed_iterations_and_out(tmp_path):
    res = cli("pedcc", "--classes", 4, "--dim", 3, "--iters", 50, "--json", "--out", tmp_path / "c.safetensors")
    assert json.loads(res.stdout)["iterations"] == 50
    from safetensors.torch import load_file
    c = load_file(tmp_path / "c.safetensors")["centroids"]
    assert c.shape == (4, 3) and torch.allclose(c.norm(dim=1), torch.full((4,), 3 ** 0.5), atol=1e-4)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    m = build_model(ModelConfig(widths=(8, 8, 8, 8), beta=0.02), generate_pedcc(10, 40, converge=True).scaled())
    d = 40
    stats = {"mean": m.centroids.tolist(), "cov": (torch.eye(d).expand(10, d, d) * 0.1).tolist(), "images": 0}
    return save_checkpoint(tmp_path_factory.mktemp("ck") / "tiny", m.eval(),
                           {"dataset": "mnist", "epoch": 1, "latent_stats": stats,
                            "class_names": [str(i) for i in range(10)]})


def test_evaluate_json(checkpoint):
    res = cli("evaluate", checkpoint.with_suffix(".json"), "--limit", 200, "--json")
    assert res.returncode == 0, res.stderr
    m = json.loads(res.stdout)
    for key in ("accuracy", "per_class_accuracy", "confusion", "recon_mse", "psnr", "latent_mean_distances",
                "test_images"):
        assert key in m
    assert m["test_images"] == 200 and sum(map(sum, m["confusion"])) == 200
    assert 0 <= m["accuracy"] <= 1 and len(m["latent_mean_distances"]) == 10


def test_sample_and_reconstruct_write_pngs(checkpoint, tmp_path):
    from PIL import Image
    res = cli("sample", checkpoint, "--class", 3, "--n", 4, "--out", tmp_path / "s.png")
    assert res.returncode == 0, res.stderr
    assert Image.open(tmp_path / "s.png").size[0] > 4 * 32
    Image.new("L", (60, 40), 255).save(tmp_path / "blank.png")
    img = Image.new("L", (60, 40), 255)
    img.paste(0, (20, 5, 30, 35))  # a dark stroke on white paper
    img.save(tmp_path / "letter.png")
    res = cli("reconstruct", checkpoint, tmp_path / "letter.png", "--out", tmp_path / "r.png")
    assert res.returncode == 0, res.stderr
    assert_clean_error(cli("reconstruct", checkpoint, tmp_path / "blank.png", "--out", tmp_path / "r2.png"), "blank")


def test_bad_inputs_give_one_clear_line(tmp_path, checkpoint):
    assert_clean_error(cli("evaluate", tmp_path / "nope.json"), "no checkpoint")
    (tmp_path / "x.json").write_text("{}")
    assert_clean_error(cli("evaluate", tmp_path / "x.json"), "not a CSAE checkpoint")
    assert_clean_error(cli("pedcc", "--classes", 1, "--dim", 3), "classes")
    assert_clean_error(cli("train", "--beta", 3, "--epochs", 1), "beta")
    assert_clean_error(cli("sample", checkpoint, "--class", 12, "--out", tmp_path / "s.png"), "out of range")


def test_corrupt_dataset_is_named(tmp_path):
    d = tmp_path / "mnist"
    d.mkdir()
    for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
                 "t10k-labels-idx1-ubyte.gz"):
        (d / name).write_bytes(gzip.compress(b"\x00\x00\x08\x03garbage"))
    res = cli("train", "--data-dir", tmp_path, "--epochs", 1, "--out", tmp_path / "run")
    assert_clean_error(res, "train-images-idx3-ubyte.gz")
    res = cli("data", "check", "--data-dir", tmp_path)
    assert "BAD" in res.stdout
