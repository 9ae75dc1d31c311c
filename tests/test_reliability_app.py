"""The explorer against a hostile model zoo and bad settings (issue 9): every page renders without an
exception, and each broken model is named in a visible warning instead of failing the page.

One zoo holds every kind of damage at once (each model at its own beta, so each is listed): a model
trained on an image folder (RGB, folder dataset name), missing weights, NaN weights, a JSON whose
weights path leaves its folder, manifest rows pointing outside the checkpoints folder, and a manifest
SHA-256 that does not match. A second zoo has a half-written manifest. Bad environment variables
(CSAE_APP_THREADS, CSAE_CHECKPOINTS_DIR) are set per test.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from streamlit.testing.v1 import AppTest

from conftest import DIGITS, _tiny_model, explorer_pages
from reliability_counts import record
from csae_core.checkpoint import save_checkpoint
from csae_core.model import ModelConfig, build_model
from csae_core.pedcc import generate_pedcc

ROOT = Path(__file__).resolve().parents[1]
ENTRY = ROOT / "app" / "explorer.py"
PAGES = explorer_pages()
MODEL_PAGES = [p for p in PAGES if p not in ("home", "pedcc_sphere", "train")]  # the views that show a model


def open_page(page: str) -> AppTest:
    at = AppTest.from_file(str(ENTRY), default_timeout=90).run()
    if page != "home":
        at.switch_page(f"../pages/{page}.py").run()
    assert not at.exception, [e.value for e in at.exception]
    record("app pages run against broken zoos or settings", 1)
    return at


def _meta(epoch=12, dataset="mnist", names=DIGITS):
    return {"dataset": dataset, "class_names": names, "epoch": epoch, "recipe": "test", "train": {"epochs": 12},
            "metrics": {"accuracy": 0.1, "recon_mse": 0.2}, "latent_stats": None}


def _add_csae(zoo: Path, name: str, beta: float, seed: int) -> Path:
    model, _ = _tiny_model("csae", beta, seed)
    return save_checkpoint(zoo / "mnist" / name, model, _meta(), half=True)


def make_hostile_zoo(base: Path, clean_zoo: Path) -> Path:
    zoo = base / "hostile"
    shutil.copytree(clean_zoo, zoo)
    rows = json.loads((zoo / "manifest.json").read_text())

    # 1. A CSAE trained on an image folder: RGB input, a folder path as its dataset name.
    cfg = ModelConfig(kind="csae", widths=(8, 8, 8, 8), latent_dim=40, beta=0.0, in_channels=3, num_classes=3)
    torch.manual_seed(0)
    rgb = build_model(cfg, generate_pedcc(3, 40, converge=True).scaled()).eval()
    meta = _meta(dataset=str(base / "my-photos"), names=["cat", "dog", "fox"])
    meta["latent_stats"] = {"images": 9, "epoch": 12, "mean": rgb.centroids.tolist(),
                            "cov": (0.5 * torch.eye(40).expand(3, 40, 40)).tolist()}
    save_checkpoint(zoo / "folder" / "csae-rgb", rgb, meta)

    # 2. NaN weights (the JSON's hash matches them: only the values are bad).
    model, _ = _tiny_model("csae", 0.01, 30)
    with torch.no_grad():
        model.decoder.head.weight.fill_(float("nan"))
    save_checkpoint(zoo / "mnist" / "csae-nan", model, _meta(), half=True)

    # 3. A JSON whose weights path leaves its folder.
    stem = _add_csae(zoo, "csae-traversal", 0.03, 31)
    j = json.loads((zoo / "mnist" / "csae-traversal.json").read_text())
    j["weights"] = "../" * 12 + "etc/hostname"
    (zoo / "mnist" / "csae-traversal.json").write_text(json.dumps(j))
    (stem.parent / "csae-traversal.safetensors").unlink()

    # 4. Missing weights.
    _add_csae(zoo, "csae-missing", 0.05, 32)
    (zoo / "mnist" / "csae-missing.safetensors").unlink()

    # 5. A manifest SHA-256 that is not the weights'.
    _add_csae(zoo, "csae-wrongsha", 0.025, 33)
    rows.append({"dataset": "mnist", "model": "csae", "beta": 0.025, "epoch": 12, "paper_epoch": 120,
                 "path": "mnist/csae-wrongsha.json", "sha256": "0" * 64})

    # 6. Manifest rows that point outside the checkpoints folder (absolute, and `..`).
    outside = base / "outside"
    outside.mkdir(exist_ok=True)
    model, _ = _tiny_model("csae", 0.06, 34)
    save_checkpoint(outside / "evil", model, _meta(), half=True)
    rows += [{"dataset": "mnist", "model": "csae", "beta": 0.06, "epoch": 12, "path": str(outside / "evil.json")},
             {"dataset": "mnist", "model": "csae", "beta": 0.07, "epoch": 12, "path": "../outside/evil.json"},
             {"dataset": "mnist", "model": "csae", "beta": 0.09, "epoch": 12, "path": "/etc/hostname"}]
    (zoo / "manifest.json").write_text(json.dumps(rows))
    return zoo


@pytest.fixture(scope="module")
def zoos(app_fixture, tmp_path_factory):
    base = tmp_path_factory.mktemp("hostile")
    half = base / "half"
    shutil.copytree(app_fixture["checkpoints"], half)
    text = (half / "manifest.json").read_text()
    (half / "manifest.json").write_text(text[: len(text) // 2])  # a save killed halfway
    return {"hostile": make_hostile_zoo(base, app_fixture["checkpoints"]), "half": half,
            "a_file": half / "manifest.json"}


@pytest.mark.parametrize("page", PAGES)
def test_every_page_survives_the_hostile_zoo(page, app_env, zoos, monkeypatch):
    monkeypatch.setenv("CSAE_CHECKPOINTS_DIR", str(zoos["hostile"]))
    at = open_page(page)
    # A page may show st.error for the one model the user picked if that one cannot be loaded; the
    # default pick is a sound model, so nothing else is an error.
    assert not at.error, [e.value for e in at.error]
    shown = " ".join(w.value for w in [*at.warning, *at.info])
    if page in ("reconstructions", "letters"):
        assert "NaN/inf" in shown and "SHA-256" in shown and "outside its own folder" in shown
        assert "csae-missing.safetensors is missing" in shown
        assert "image folders" in shown and "my-photos" in shown


def test_home_lists_no_model_from_outside_the_folder(app_env, zoos, monkeypatch):
    monkeypatch.setenv("CSAE_CHECKPOINTS_DIR", str(zoos["hostile"]))
    at = open_page("home")
    models = at.dataframe[0].value
    assert len(models) == 7 + 5, models  # the clean seven, the folder model and four broken ones; none from outside
    assert "evil" not in models.to_string() and "hostname" not in models.to_string()


@pytest.mark.parametrize("page", ["latent_space", "distance_matrix"])
def test_folder_trained_model_can_be_picked(page, app_env, zoos, monkeypatch):
    """Latent space needs its test set (a note says there is none); the distance matrix uses the
    training statistics stored in the checkpoint, so it simply shows them."""
    monkeypatch.setenv("CSAE_CHECKPOINTS_DIR", str(zoos["hostile"]))
    at = open_page(page)
    key = {"latent_space": "latent_model", "distance_matrix": "dist_model"}[page]
    rgb = str((zoos["hostile"] / "folder" / "csae-rgb.json").resolve())
    boxes = [b for b in at.selectbox if b.key == key] or list(at.selectbox)
    box = next(b for b in boxes if any("my-photos" in o for o in b.options))
    box.set_value(rgb).run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    if page == "latent_space":
        assert any("image folder" in i.value for i in at.info), [i.value for i in at.info]
    else:
        assert len(at.get("plotly_chart")) == 2


@pytest.mark.parametrize("page", MODEL_PAGES)
def test_half_written_manifest(page, app_env, zoos, monkeypatch):
    monkeypatch.setenv("CSAE_CHECKPOINTS_DIR", str(zoos["half"]))
    at = open_page(page)
    assert not at.error, [e.value for e in at.error]
    assert at.image or at.get("plotly_chart") or page == "distance_matrix"  # the models are still found


@pytest.mark.parametrize("value", ["abc", "0", "-3", "99999"])
@pytest.mark.parametrize("page", ["home", "reconstructions"])
def test_bad_thread_setting_falls_back(page, value, app_env, monkeypatch):
    monkeypatch.setenv("CSAE_APP_THREADS", value)
    at = open_page(page)
    assert not at.error
    assert at.dataframe if page == "home" else at.image  # the view still shows its tables / its grid
    from app import loaders

    assert loaders.thread_setting(value) == 1  # (torch's thread count is per thread: AppTest runs the script in its own)


@pytest.mark.parametrize("where", ["a_file", "missing"])
@pytest.mark.parametrize("page", ["home", "reconstructions", "letters"])
def test_bad_checkpoints_dir(page, where, app_env, zoos, monkeypatch, tmp_path):
    monkeypatch.setenv("CSAE_CHECKPOINTS_DIR", str(zoos["a_file"] if where == "a_file" else tmp_path / "nowhere"))
    at = open_page(page)
    assert not at.error
    # What the user reads instead: no model was found, and the command that makes one.
    assert any("No trained model" in i.value and "zoo.py train" in i.value for i in at.info), \
        [i.value for i in at.info]


@pytest.mark.parametrize("value", ["/dev/zero", "/nowhere/at/all", "\x01weird"])
@pytest.mark.parametrize("page", ["home", "reconstructions", "letters", "latent_space"])
def test_bad_data_dir(page, value, app_env, monkeypatch):
    monkeypatch.setenv("CSAE_DATA_DIR", value)
    at = open_page(page)
    assert not at.error, [e.value for e in at.error]
    if page == "home":  # every dataset row says it is missing, with the problem
        rows = at.dataframe[1].value
        assert not rows["ok"].any() and rows["path or problem"].str.len().min() > 0
    else:  # the view says which test images it needs and how to get them
        assert any("were not found" in w.value and "data download" in w.value for w in at.warning), \
            [w.value for w in at.warning]
