"""The CLI as a user runs it: JSON outputs, and bad input as one clear line, never a traceback."""
import argparse
import dataclasses
import gzip
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from csae_core.checkpoint import save_checkpoint
from csae_core.cli import FROM_DATA, add_config_flags, build_parser, config_from, main, train_configs
from csae_core.model import ModelConfig, build_model
from csae_core.pedcc import generate_pedcc
from csae_core.train import TrainConfig

ROOT = Path(__file__).resolve().parents[1]


def cli(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "csae_core", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=300, env=clean_env())


@pytest.fixture
def here(capsys):
    """The CLI run in this process (torch is imported already: seconds faster per call on 2 busy cores),
    giving what `cli` gives: exit code, stdout and stderr. The pedcc tests keep the real process."""
    def run(*args):
        try:
            rc = main([str(a) for a in args])
        except SystemExit as e:  # argparse's usage errors
            rc = e.code
        out = capsys.readouterr()
        return subprocess.CompletedProcess(args, rc, out.out, out.err)
    return run


def clean_env() -> dict:
    """A bare environment for the CLI (no PYTHONPATH: the installed project must be enough), keeping
    only where the datasets are if the user said so."""
    env = {"PATH": "/usr/bin:/bin"}
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
    assert (rec["classes"], rec["dim"], rec["seed"], rec["converged"]) == (10, 40, 0, True)
    # the regular simplex: every cosine -1/9, every chordal distance sqrt(2 + 2/9), 45 pairs
    edge = math.sqrt(2 + 2 / 9)
    assert rec["max_cosine"] == pytest.approx(-1 / 9, abs=1e-6)
    assert rec["min_distance"] == pytest.approx(edge, abs=1e-6)
    assert rec["energy"] == pytest.approx(45 / edge, rel=1e-6)
    assert abs(rec["simplex_gap"]) < 1e-6 and 0 < rec["iterations"] < 100_000


def test_pedcc_command_imports_no_torch():
    code = ("import sys; from csae_core.cli import main; rc = main(['pedcc', '--classes', '10', '--dim', '40']); "
            "print(rc, sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'PIL', 'safetensors', 'tqdm'}))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=clean_env(), timeout=60)
    assert res.stdout.splitlines()[-1] == "0 []", res.stderr


def test_train_on_a_missing_dataset_is_refused_before_torch_is_imported(tmp_path):
    code = ("import sys; from csae_core.cli import main; "
            f"rc = main(['train', '--dataset', 'mnist', '--data-dir', {str(tmp_path)!r}, '--epochs', '1']); "
            "print(rc, sorted({m.split('.')[0] for m in sys.modules} & {'torch'}))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=clean_env(), timeout=60)
    assert res.stdout.splitlines()[-1] == "2 []", (res.stdout, res.stderr)
    assert "MNIST not found" in res.stderr and "Traceback" not in res.stderr


def test_train_has_a_flag_for_every_config_field():
    train = build_parser()._subparsers._group_actions[0].choices["train"]  # argparse keeps subparsers there
    dests = {a.dest for a in train._actions}
    wanted = {f"train.{f.name}" for f in dataclasses.fields(TrainConfig)}
    wanted |= {f"model.{f.name}" for f in dataclasses.fields(ModelConfig) if f.name not in FROM_DATA}
    assert wanted <= dests, sorted(wanted - dests)


def test_config_flags_from_any_dataclass():
    @dataclasses.dataclass
    class Demo:
        rate: float = 0.5  # used 50% of the time
        names: tuple = ("a",)  # several values
        fast: bool = False
        where: str | None = None
        size: int = dataclasses.field(default_factory=lambda: 7)

    p = argparse.ArgumentParser()
    add_config_flags(p, Demo, "demo")
    assert "used 50% of the time (default: 0.5)" in " ".join(p.format_help().split())
    assert config_from(Demo, p.parse_args([]), "demo") == Demo()
    got = config_from(Demo, p.parse_args(["--rate", "0.25", "--names", "x", "y", "--fast", "--where", "w",
                                          "--size", "3"]), "demo")
    assert got == Demo(0.25, ("x", "y"), True, "w", 3)
    assert config_from(Demo, p.parse_args(["--no-fast"]), "demo").fast is False


def test_no_train_flags_give_the_dataclass_defaults():
    tcfg, mcfg = train_configs(build_parser().parse_args(["train"]))
    assert mcfg == ModelConfig()
    assert tcfg == dataclasses.replace(TrainConfig(), out="runs/mnist-csae-b0")


def test_train_flags_reach_the_configs():
    argv = ["train", "--model", "cvae", "--beta", "0.1", "--widths", "8", "8", "8", "--momentum", "0.5",
            "--weight-decay", "0", "--pedcc-iters", "7", "--snapshot", "4", "--snapshot", "8", "--lr-step", "2.5",
            "--epoch-images", "3072", "--stats-images", "500", "--test-images", "200", "--recipe", "cpu-short",
            "--device", "cpu", "--no-progress", "--image-size", "64", "--data-dir", "/somewhere"]
    a = build_parser().parse_args(argv)
    tcfg, mcfg = train_configs(a)
    assert (mcfg.kind, mcfg.beta, mcfg.widths, mcfg.image_size) == ("cvae", 0.1, (8, 8, 8), 64)
    assert (tcfg.momentum, tcfg.weight_decay, tcfg.pedcc_iters) == (0.5, 0, 7)
    assert (tcfg.snapshots, tcfg.lr_step) == ((4, 8), 2.5)
    assert (tcfg.epoch_images, tcfg.stats_images, tcfg.test_images) == (3072, 500, 200)
    assert (tcfg.recipe, tcfg.device, tcfg.data_dir, tcfg.image_size) == ("cpu-short", "cpu", "/somewhere", 64)
    assert tcfg.out == "runs/mnist-cvae-b0.1" and a.no_progress and not a.resume
    assert train_configs(build_parser().parse_args(["train", "--out", "runs/x"]))[0].out == "runs/x"


def test_pedcc_fixed_iterations_and_out(tmp_path, here):
    res = here("pedcc", "--classes", 4, "--dim", 3, "--iters", 50, "--json", "--out", tmp_path / "c.safetensors")
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


def test_evaluate_json(checkpoint, here):
    res = here("evaluate", checkpoint.with_suffix(".json"), "--limit", 200, "--json")
    assert res.returncode == 0, res.stderr
    m = json.loads(res.stdout)
    confusion = torch.tensor(m["confusion"])
    assert m["test_images"] == 200 and confusion.shape == (10, 10) and confusion.sum() == 200
    # accuracy and per-class accuracy are the confusion matrix's diagonal, read two ways
    assert m["accuracy"] == pytest.approx(confusion.diag().sum().item() / 200)
    rows = confusion.sum(1)
    for k, acc in enumerate(m["per_class_accuracy"]):
        if rows[k]:
            assert acc == pytest.approx(confusion[k, k].item() / rows[k].item())
    # the mean of per-image PSNRs is at least the PSNR of the mean MSE (Jensen: -log is convex)
    assert m["recon_mse"] > 0 and m["psnr"] >= -10 * math.log10(m["recon_mse"]) - 1e-6
    dist = torch.tensor(m["latent_mean_distances"])
    assert dist.shape == (10, 10) and torch.allclose(dist, dist.T) and (dist.diag() == 0).all()


def test_sample_and_reconstruct_write_pngs(checkpoint, tmp_path, here):
    from PIL import Image
    res = here("sample", checkpoint, "--class", 3, "--n", 4, "--out", tmp_path / "s.png")
    assert res.returncode == 0, res.stderr
    assert Image.open(tmp_path / "s.png").size[0] > 4 * 32
    Image.new("L", (60, 40), 255).save(tmp_path / "blank.png")
    img = Image.new("L", (60, 40), 255)
    img.paste(0, (20, 5, 30, 35))  # a dark stroke on white paper
    img.save(tmp_path / "letter.png")
    res = here("reconstruct", checkpoint, tmp_path / "letter.png", "--out", tmp_path / "r.png")
    assert res.returncode == 0, res.stderr
    assert_clean_error(here("reconstruct", checkpoint, tmp_path / "blank.png", "--out", tmp_path / "r2.png"), "blank")


def test_bad_inputs_give_one_clear_line(tmp_path, checkpoint, here):
    assert_clean_error(cli("pedcc", "--classes", 1, "--dim", 3), "classes")  # a real process, as a user runs it
    assert_clean_error(here("evaluate", tmp_path / "nope.json"), "no checkpoint")
    (tmp_path / "x.json").write_text("{}")
    assert_clean_error(here("evaluate", tmp_path / "x.json"), "not a CSAE checkpoint")
    assert_clean_error(here("train", "--beta", 3, "--epochs", 1), "beta")
    assert_clean_error(here("train", "--momentum", 2, "--epochs", 1), "momentum")
    assert_clean_error(here("sample", checkpoint, "--class", 12, "--out", tmp_path / "s.png"), "out of range")
    res = here("train", "--epochs", "many")  # argparse: usage and the bad value, exit 2
    assert res.returncode == 2 and "--epochs" in res.stderr and "many" in res.stderr


def test_corrupt_dataset_is_named(tmp_path, here):
    d = tmp_path / "mnist"
    d.mkdir()
    for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
                 "t10k-labels-idx1-ubyte.gz"):
        (d / name).write_bytes(gzip.compress(b"\x00\x00\x08\x03garbage"))
    res = here("train", "--data-dir", tmp_path, "--epochs", 1, "--out", tmp_path / "run")
    assert_clean_error(res, "train-images-idx3-ubyte.gz")
    res = here("data", "check", "--data-dir", tmp_path)
    assert "BAD" in res.stdout
