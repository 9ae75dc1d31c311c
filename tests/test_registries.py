"""The two registries (csae_core.model.KINDS, csae_core.datasets.DATASETS) are where kinds and datasets are
defined: what the zoo trains, what Table 3 and the open-set results list, and how the app names a model and
what it offers for it all follow from one entry."""
import dataclasses
import importlib.util
from pathlib import Path

import pytest
import torch

from app import registry
from csae_core import model, openset
from csae_core.datasets import DATASETS, TRAINABLE

ROOT = Path(__file__).resolve().parents[1]


def load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class TinyNet(model.Basenet):
    """A new kind: a classifier with logits and no decoder."""


@pytest.fixture
def new_kind(monkeypatch):
    kind = model.ModelKind("tinynet", TinyNet, "Tiny net", "TinyNet", zoo_rank=9)
    monkeypatch.setitem(model.KINDS, "tinynet", kind)
    return kind


def test_a_new_kind_is_one_registry_entry(new_kind):
    zoo = load(ROOT / "checkpoints" / "zoo.py", "zoo_registry_test")
    jobs = list(zoo.jobs(["mnist"], seeds=(0,)))
    assert jobs[-1] == ("mnist", "tinynet", 0.0, 0)  # queued by its zoo_rank, after every shipped kind
    assert zoo.name_of("tinynet", 0.0) == "tinynet" and zoo.row_label("tinynet", 0.0) == "TinyNet (not in Table 3)"
    entry = registry.ModelEntry(dataset="mnist", kind="tinynet", beta=0.0, epoch=1, paper_epoch=None, path="x")
    assert entry.label == "Tiny net" and entry.has_logits and not entry.has_decoder and not entry.has_centroids
    assert openset.available_scores(TinyNet) == ["msp", "energy"]  # from its abilities, not its name


class WideAE(model.CSAE):
    """A new kind that is a CSAE in all but name: centroids, a decoder, β."""


def test_a_new_beta_kind_gets_beta_and_centroids_without_being_named_csae(monkeypatch):
    from app import training_plan

    monkeypatch.setitem(model.KINDS, "wide-ae", model.ModelKind("wide-ae", WideAE, "Wide AE", "WideAE"))
    entry = registry.ModelEntry(dataset="mnist", kind="wide-ae", beta=0.04, epoch=1, paper_epoch=None, path="x")
    assert entry.uses_beta and entry.has_centroids and entry.has_decoder and not entry.label_conditioned
    # The Train view offers its β input (and titles its jobs with β) from the class, not from the name "csae".
    assert training_plan.uses_beta("wide-ae") and training_plan.uses_beta("csae")
    assert not any(training_plan.uses_beta(k) for k in ("csae-encoder", "basenet", "cvae", "no-such-kind"))
    assert training_plan.Plan(dataset="mnist").kind == model.DEFAULT_KIND
    # Asked to decode, a kind without a decoder names every kind that has one, the new one included.
    from csae_core.errors import CSAEError
    from csae_core.sample import decode_latents

    basenet = model.build_model(model.ModelConfig(kind="basenet", widths=(4, 4, 4, 4), latent_dim=4))
    with pytest.raises(CSAEError, match="use a csae or cvae or wide-ae checkpoint"):
        decode_latents(basenet, torch.zeros(1, 4))


def test_no_module_outside_the_registry_spells_a_kind():
    """App, pages, the zoo and the library read kinds from KINDS: no string literal names one elsewhere."""
    import ast

    spelled = []
    for top in ("csae_core", "app", "pages", "checkpoints"):
        for f in sorted((ROOT / top).rglob("*.py")):
            if f == ROOT / "csae_core" / "model.py":
                continue
            spelled += [f"{f.relative_to(ROOT)}:{n.lineno} {n.value!r}" for n in ast.walk(ast.parse(f.read_text()))
                        if isinstance(n, ast.Constant) and isinstance(n.value, str) and n.value in model.KINDS]
    assert not spelled


def test_the_train_views_datasets_and_download_sizes_come_from_the_dataset_registry():
    from app import training_plan

    assert list(training_plan.SOURCES) == [*TRAINABLE, "upload"]
    assert [training_plan.SOURCES[n] for n in TRAINABLE] == [DATASETS[n].title for n in TRAINABLE]
    assert all(spec.download_size for spec in DATASETS.values())  # the Home view's download confirmation


def test_capabilities_and_names_come_from_the_classes():
    for name, kind in model.KINDS.items():
        entry = registry.ModelEntry(dataset="mnist", kind=name, beta=0.02, epoch=1, paper_epoch=None, path="x")
        assert (entry.has_decoder, entry.has_centroids) == (kind.cls.has_decoder, kind.cls.has_centroids)
    assert [registry.ModelEntry("mnist", k, b, 1, None, "x").label for k, b in
            (("csae", 0.02), ("csae-encoder", 0.0), ("basenet", 0.0), ("cvae", 0.0))] == \
        ["CSAE β=0.02", "CSAE encoder", "Basenet", "CVAE"]
    zoo = load(ROOT / "checkpoints" / "zoo.py", "zoo_registry_test2")
    assert zoo.PAPER[("csae", 0.02)] == (99.52, 92.36) and zoo.PAPER[("basenet", 0.0)] == (99.20, 92.45)
    assert [zoo.name_of(*j[1:]) for j in zoo.jobs(["mnist"])][:3] == ["csae-b0.02", "basenet", "csae-encoder"]
    assert zoo.ROWS[-1] == ("cvae", 0.0) and len(zoo.ROWS) == 8  # Table 3's seven rows, then the CVAE


def test_a_kind_with_its_own_optimizer_keeps_it_under_every_recipe():
    zoo = load(ROOT / "checkpoints" / "zoo.py", "zoo_registry_test3")
    for recipe in zoo.RECIPES:
        cvae, csae = zoo.settings_for(recipe, "cvae"), zoo.settings_for(recipe, "csae")
        assert cvae["optimizer"] == "adam" and cvae["lr"] == 1e-3 and cvae["weight_decay"] == 0.0
        assert cvae["epochs"] == zoo.RECIPES[recipe]["own"]["epochs"] and csae.get("optimizer", "sgd") == "sgd"
    assert zoo.settings_for("tiny", "cvae")["batch_size"] == 16  # the recipe's own run length wins
    assert zoo.settings_for("cpu-720k", "cvae")["batch_size"] == 512 and zoo.settings_for("cpu-720k", "csae")["nesterov"]


def test_open_set_lists_and_pairs_come_from_the_dataset_registry():
    assert TRAINABLE == ("mnist", "fashion-mnist")  # MNIST first: the app's default and Table 3's first column
    assert list(openset.UNKNOWN_SETS) == ["emnist-letters", "emnist-letters-no-ilosz", "mnist", "fashion-mnist"]
    assert openset.unknown_title("emnist-letters-no-ilosz") == "EMNIST letters without i, l, o, s, z"
    assert openset.unknown_title("fashion-mnist") == "Fashion-MNIST"
    make_openset = load(ROOT / "results" / "make_openset.py", "make_openset_registry_test")
    assert make_openset.PAIRS == {"mnist": ("emnist-letters", "fashion-mnist"), "fashion-mnist": ("mnist",)}
    assert ("cvae", 0.0, "elbo") in make_openset.HEADLINE and ("basenet", 0.0, "msp") in make_openset.HEADLINE


def test_a_new_trainable_dataset_gets_a_table3_row_without_a_paper_value(monkeypatch):
    import pandas as pd

    zoo = load(ROOT / "checkpoints" / "zoo.py", "zoo_registry_test4")
    monkeypatch.setattr(zoo, "DATASETS", (*TRAINABLE, "kmnist"))
    rows = zoo.table_rows([{"dataset": "kmnist", "model": "csae", "beta": 0.02, "epoch": 12, "epochs": 12,
                            "test_accuracy": 0.95, "recon_mse": 0.01, "psnr": 20.0, "image_steps": 720_000,
                            "recipe": "cpu-720k"}])
    new = rows[(rows.dataset == "kmnist") & (rows.model == "csae") & (rows.beta == 0.02)].iloc[0]
    assert new.accuracy == 95.0 and pd.isna(new.paper) and pd.isna(new.delta)  # no paper value, no delta
    mnist = rows[(rows.dataset == "mnist") & (rows.model == "csae") & (rows.beta == 0.02)].iloc[0]
    fashion = rows[(rows.dataset == "fashion-mnist") & (rows.model == "basenet")].iloc[0]
    assert (mnist.paper, fashion.paper) == (99.52, 92.45)  # the paper's columns keep their values
    monkeypatch.setattr(zoo, "SPECS", {**DATASETS, "kmnist": dataclasses.replace(DATASETS["mnist"], title="KMNIST")})
    header = zoo.table_header().strip("| ").split(" | ")
    assert len(header) == 2 + 4 * 3 and "KMNIST ours" in header and header[-1] == "KMNIST MSE / PSNR"


def test_idx_datasets_keep_their_official_files():
    mnist = DATASETS["mnist"]
    assert [d.filename for d in mnist.downloads] == ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                                                     "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]
    assert mnist.md5s["t10k-labels-idx1-ubyte.gz"] == "ec29112dd5afa0611ce80d1b7f02629c"
    assert DATASETS["fashion-mnist"].urls["train-images-idx3-ubyte.gz"][0].endswith(
        "amazonaws.com/train-images-idx3-ubyte.gz")
    assert DATASETS["fashion-mnist"].class_names[-1] == "Ankle boot" and mnist.folder == "mnist"
