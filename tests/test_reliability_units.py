"""Issue 9's smaller findings, one test each: training settings, resume with other settings, SIGINT before
the first save, data check with a BAD row, manifest SHA-256 in the CLI, shape errors spelled out, NaN
weights, the server defaults in .streamlit/config.toml."""
from __future__ import annotations

import gzip
import json
import shutil
import sys
import tomllib
from pathlib import Path

import pytest
import torch

from csae_core import cli
from csae_core.checkpoint import load_checkpoint, save_checkpoint
from csae_core.errors import CSAEError
from csae_core.model import ModelConfig
from csae_core.train import TrainConfig, train

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("field, value", [("grad_clip", -1), ("grad_clip", float("nan")), ("warmup_steps", -5),
                                          ("epoch_images", -1), ("test_images", -1), ("stats_images", -2),
                                          ("lr", float("inf")), ("momentum", -0.1), ("weight_decay", -1),
                                          ("seed", -1), ("image_size", 100_000), ("snapshots", (0,))])
def test_train_config_refuses_bad_settings(field, value):
    with pytest.raises(CSAEError, match=field.replace("_", "-").rstrip("s") if field != "snapshots" else "snapshot"):
        TrainConfig(**{field: value})


def tiny(out, data, **kw) -> TrainConfig:
    return TrainConfig(**{**dict(dataset="mnist", data_dir=str(data), out=str(out), epochs=1, batch_size=16,
                                 epoch_images=16, test_images=16, stats_images=20, device="cpu"), **kw})


@pytest.mark.parametrize("change", [{"lr": 0.05}, {"batch_size": 8}, {"seed": 3}])
def test_resume_with_other_settings_is_refused(change, app_fixture, tmp_path):
    model = ModelConfig(widths=(8, 8, 8, 8))
    train(tiny(tmp_path, app_fixture["data"]), model, log=lambda r: None, progress=False)
    with pytest.raises(CSAEError, match=f"other settings.*{next(iter(change))}"):
        train(tiny(tmp_path, app_fixture["data"], epochs=2, **change), model, resume=True, log=lambda r: None,
              progress=False)
    # the recorded settings resume fine
    train(tiny(tmp_path, app_fixture["data"], epochs=2), model, resume=True, log=lambda r: None, progress=False)
    assert load_checkpoint(tmp_path).meta["epoch"] == 2


def test_interrupt_before_the_first_save_claims_no_checkpoint(tmp_path, monkeypatch, capsys):
    import csae_core.train as train_module

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(train_module, "train", interrupted)
    monkeypatch.setattr("csae_core.datasets.split_paths", lambda *a: None)  # no data needed: train is stubbed
    with pytest.raises(SystemExit) as e:
        cli.main(["train", "--epochs", "1", "--out", str(tmp_path / "run")])
    assert e.value.code == 130
    err = capsys.readouterr().err
    assert "no checkpoint was written" in err and "intact" not in err


def test_data_check_exits_2_when_a_row_is_bad(app_fixture, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(app_fixture["data"], data)
    (data / "mnist" / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(b"\x00\x00\x08\x01garbage"))
    code = cli.main(["data", "check", "--data-dir", str(data)])
    out, err = capsys.readouterr()
    assert "ok " in out and "BAD" in out  # some rows fine, one bad
    assert code == 2 and err.startswith("error: ") and "BAD" in err


@pytest.fixture
def zoo_copy(app_fixture, tmp_path) -> Path:
    zoo = tmp_path / "checkpoints"
    shutil.copytree(app_fixture["checkpoints"], zoo)
    return zoo


def test_manifest_hash_mismatch_is_a_cli_error(zoo_copy, capsys):
    rows = json.loads((zoo_copy / "manifest.json").read_text())
    for row in rows:
        row["sha256"] = json.loads((zoo_copy / row["path"]).read_text())["weights_sha256"]
    rows[1]["sha256"] = "0" * 64
    (zoo_copy / "manifest.json").write_text(json.dumps(rows))
    assert load_checkpoint(zoo_copy / rows[0]["path"]).meta  # a matching row loads
    code = cli.main(["sample", str(zoo_copy / rows[1]["path"]), "--out", str(zoo_copy / "s.png")])
    err = capsys.readouterr().err
    assert code == 2 and "SHA-256" in err and "manifest.json" in err


def test_shape_mismatch_names_the_tensor_and_both_shapes(zoo_copy):
    j = json.loads((zoo_copy / "mnist" / "csae-b0.04.json").read_text())
    j["model"]["widths"] = [8, 8, 8, 16]  # the JSON of a wider model than its weights
    (zoo_copy / "mnist" / "csae-b0.04.json").write_text(json.dumps(j))
    with pytest.raises(CSAEError) as e:
        load_checkpoint(zoo_copy / "mnist" / "csae-b0.04.json")
    msg = str(e.value)
    assert "expected shape (16," in msg and "got (8," in msg and "encoder." in msg and "\n" not in msg


def test_nan_weights_are_an_error(tmp_path):
    from conftest import _tiny_model

    model, _ = _tiny_model("csae", 0.0, 0)
    with torch.no_grad():
        next(model.parameters()).view(-1)[0] = float("inf")
    save_checkpoint(tmp_path / "m", model, {"dataset": "mnist", "epoch": 1})
    with pytest.raises(CSAEError, match="NaN/inf"):
        load_checkpoint(tmp_path / "m")


def test_server_defaults_are_private_and_small():
    cfg = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert cfg["browser"]["gatherUsageStats"] is False
    assert cfg["server"]["maxUploadSize"] <= 10
    assert cfg["server"]["address"] == "localhost"
    assert cfg["server"]["maxWidgetStateSize"] <= 10
    readme = (ROOT / "README.md").read_text()
    assert "--server.address 0.0.0.0" in readme
