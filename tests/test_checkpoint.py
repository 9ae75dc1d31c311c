"""Checkpoints: safetensors + JSON round trip, fp16 export, and clear errors for bad files."""
import json

import pytest
import torch

from csae_core.checkpoint import load_checkpoint, save_checkpoint
from csae_core.errors import CSAEError
from csae_core.model import ModelConfig, build_model
from csae_core.pedcc import generate_pedcc


@pytest.fixture
def saved(tmp_path):
    cfg = ModelConfig(widths=(8, 8, 8, 8), beta=0.02)
    torch.manual_seed(0)
    m = build_model(cfg, generate_pedcc(10, 40, converge=True).scaled()).eval()
    stem = save_checkpoint(tmp_path / "ck", m, {"dataset": "mnist", "epoch": 3, "metrics": {"accuracy": 0.5}})
    return m, stem


def test_round_trip(saved):
    m, stem = saved
    x = torch.rand(4, 1, 32, 32)
    for path in (stem, stem.with_suffix(".json"), stem.with_suffix(".safetensors"), stem.parent / "ck"):
        ck = load_checkpoint(path)
        assert torch.equal(ck.model.reconstruct(x), m.reconstruct(x))
        assert ck.meta["epoch"] == 3 and ck.config == m.config
    assert len(json.loads(stem.with_suffix(".json").read_text())["centroids"]) == 10


def test_half_precision_export_is_close(saved, tmp_path):
    m, _ = saved
    stem = save_checkpoint(tmp_path / "half", m, {"dataset": "mnist"}, half=True)
    assert stem.with_suffix(".safetensors").stat().st_size < (tmp_path / "ck.safetensors").stat().st_size * 0.6
    x = torch.rand(4, 1, 32, 32)
    assert torch.allclose(load_checkpoint(stem).model.reconstruct(x), m.reconstruct(x), atol=2e-2)


def test_truncated_weights(saved):
    _, stem = saved
    w = stem.with_suffix(".safetensors")
    w.write_bytes(w.read_bytes()[:1000])
    with pytest.raises(CSAEError, match="does not match its .json"):
        load_checkpoint(stem)


def test_garbage_weights_without_checksum(saved):
    _, stem = saved
    meta = json.loads(stem.with_suffix(".json").read_text())
    meta.pop("weights_sha256")
    stem.with_suffix(".json").write_text(json.dumps(meta))
    stem.with_suffix(".safetensors").write_bytes(b"\x80\x04not a safetensors file")  # e.g. a pickle
    with pytest.raises(CSAEError, match="not a readable safetensors"):
        load_checkpoint(stem)


def test_foreign_and_broken_json(tmp_path):
    (tmp_path / "foreign.json").write_text(json.dumps({"hello": 1}))
    with pytest.raises(CSAEError, match="not a CSAE checkpoint"):
        load_checkpoint(tmp_path / "foreign.json")
    (tmp_path / "broken.json").write_text('{"format": "csae-check')
    with pytest.raises(CSAEError, match="not valid JSON"):
        load_checkpoint(tmp_path / "broken.json")
    with pytest.raises(CSAEError, match="no checkpoint"):
        load_checkpoint(tmp_path / "missing.json")
