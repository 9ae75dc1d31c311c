"""AppTest tests of the explorer's views against the tiny fixture zoo and data (tests/conftest.py).

Uploads are tested both ways: through the page with AppTest's file_uploader (the message appears
in the page as st.error), and through app.letters.prepare_image in test_app_units.py.
"""
from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from conftest import explorer_pages

ROOT = Path(__file__).resolve().parents[1]
ENTRY = ROOT / "app" / "explorer.py"
PAGES = explorer_pages()
TIMEOUT = 60  # first runs import torch and load models; 2 busy cores


def open_page(page: str) -> AppTest:
    at = AppTest.from_file(str(ENTRY), default_timeout=TIMEOUT).run()
    if page != "home":
        at.switch_page(f"../pages/{page}.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def png_bytes(img: Image.Image, **save) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", **save)
    return buf.getvalue()


def letter_png() -> bytes:
    """A dark 'L' on white, like a scan of a handwritten letter."""
    a = np.full((80, 60), 255, np.uint8)
    a[10:70, 15:25] = 0
    a[60:70, 15:50] = 0
    return png_bytes(Image.fromarray(a))


def image_urls(at: AppTest) -> list[str]:
    """The media URLs of the page's images. Streamlit names a media file by a hash of its bytes and
    mimetype, so equal URLs mean equal image payloads and different URLs different ones."""
    return [url for img in at.image for url in img.value]


# ---------------------------------------------------------------- every view, with everything present

# What each view shows a user with the fixture zoo and data: its main figures, images or tables.
SHOWS = {"home": ("dataframe", 2), "pedcc_sphere": ("plotly_chart", 3), "distance_matrix": ("plotly_chart", 2),
         "reconstructions": ("image", 1), "class_sampling": ("image", 2), "letters": ("image", 2),
         "open_set": ("plotly_chart", 2), "latent_space": ("plotly_chart", 1), "train": ("button", 1)}


@pytest.mark.usefixtures("app_env")
@pytest.mark.parametrize("page", PAGES)
def test_every_view_renders(page):
    at = open_page(page)
    assert at.title, "every view has a title"
    assert not at.error, [e.value for e in at.error]
    kind, least = SHOWS.get(page, ("title", 1))  # a view added to app/explorer.py runs here before it has a row
    shown = len(at.get(kind))
    assert shown >= least, f"{page} shows {shown} {kind}, expected at least {least}"


@pytest.mark.usefixtures("app_env")
def test_home_lists_models_and_datasets_and_offers_missing_downloads():
    at = open_page("home")
    models, datasets = at.dataframe[0].value, at.dataframe[1].value
    assert len(models) == 7 and set(models["dataset"]) == {"mnist"}
    assert "CSAE β=0.04" in set(models["model"]) and "CVAE" in set(models["model"])
    assert set(models["seed"]) == {0}  # the extra seeds of Table 3's spread are told apart by this column
    ok = datasets.set_index(["dataset", "split"])["ok"]
    assert ok[("mnist", "test")] and not ok[("fashion-mnist", "test")]
    # Downloads only behind an explicit confirmation, and only the missing one is offered.
    assert not at.button
    assert [c.label.split(" (")[0] for c in at.checkbox if c.key.startswith("confirm_download")] == [
        "Yes, download Fashion-MNIST"]
    at.checkbox(key="confirm_download_fashion-mnist").check().run()
    assert [b.label for b in at.button] == ["Download Fashion-MNIST"]
    # Paths relative to the checkpoints folder / project root, never the machine's absolute layout.
    assert set(models["checkpoint"]) >= {"mnist/cvae.json"}
    assert not any(str(p).startswith("/") for p in list(models["checkpoint"]) + list(datasets["path or problem"]))


@pytest.mark.usefixtures("app_env")
def test_download_failure_is_an_error_message_not_a_traceback(monkeypatch):
    from csae_core import data
    from csae_core.errors import CSAEError

    def offline(name, data_dir=None, progress=None):
        progress(10, 100)
        raise CSAEError(f"could not download {name}: network unreachable. Fix: check the connection.")

    monkeypatch.setattr(data, "download_dataset", offline)
    at = open_page("home")
    at.checkbox(key="confirm_download_fashion-mnist").check().run()
    at.button[0].click().run()
    assert not at.exception
    assert any("network unreachable" in e.value for e in at.error)


# ---------------------------------------------------------------- reconstructions

@pytest.mark.usefixtures("app_env")
def test_beta_slider_changes_the_reconstruction_grid():
    at = open_page("reconstructions")
    slider = at.select_slider(key="recon_beta_mnist")
    assert slider.options == ["0", "0.04", "0.08"]
    before = image_urls(at)[0]
    slider.set_value(0.08).run()
    after = image_urls(at)[0]
    assert not at.exception
    assert before != after, "a different β must show different reconstructions"
    at.select_slider(key="recon_beta_mnist").set_value(0.04).run()
    assert image_urls(at)[0] == before, "back to the first β: the same (cached) picture"


@pytest.mark.usefixtures("app_env")
def test_epoch_snapshots_and_side_by_side_strip():
    at = open_page("reconstructions")
    at.select_slider(key="recon_beta_mnist").set_value(0.0).run()
    epoch = at.radio(key="recon_epoch_0")
    assert epoch.options == ["4", "8", "12"] and epoch.value == 12  # a 12-epoch recipe: real epochs, not 40/80/120
    final = image_urls(at)[0]
    epoch.set_value(4).run()
    assert image_urls(at)[0] != final
    at.toggle(key="recon_strip").set_value(True).run()
    rows = [c for img in at.image for c in img.captions][1:]  # after the main grid
    assert rows[0] == "test images"
    assert sum(c.startswith("CSAE β=") for c in rows) == 3 and sum(c.startswith("CVAE") for c in rows) == 1


@pytest.mark.usefixtures("app_env")
def test_images_of_one_class_and_seed():
    at = open_page("reconstructions")
    at.radio(key="recon_how").set_value("one class").run()
    at.selectbox(key="recon_class").set_value(3).run()
    assert set(at.expander[0].dataframe[0].value["class"]) == {"3"}
    at.radio(key="recon_how").set_value("random").run()
    first = image_urls(at)[0]
    at.number_input(key="recon_seed").set_value(7).run()
    assert image_urls(at)[0] != first
    at.number_input(key="recon_seed").set_value(0).run()
    assert image_urls(at)[0] == first, "the same seed picks the same images"


# ---------------------------------------------------------------- other views

def _points(trace: dict) -> int:
    """Number of points of a plotly trace in the chart JSON (arrays may come base64-encoded)."""
    x = trace["x"]
    if isinstance(x, dict):
        return len(base64.b64decode(x["bdata"])) // np.dtype(x["dtype"]).itemsize
    return len(x)


@pytest.mark.usefixtures("app_env")
def test_pedcc_sphere_has_frames_and_metrics():
    at = open_page("pedcc_sphere")
    spec = json.loads(at.get("plotly_chart")[0].proto.spec)
    assert len(spec["frames"]) >= 2 and _points(spec["data"][1]) == 10
    labels = [m.label for m in at.metric]
    assert any("angle" in lab for lab in labels) and any("best known" in lab for lab in labels)
    at.slider(key="pedcc_n").set_value(12).run()
    spec = json.loads(at.get("plotly_chart")[0].proto.spec)
    assert _points(spec["data"][1]) == 12


@pytest.mark.usefixtures("app_env")
def test_latent_space_tsne_and_confusion_matrix():
    at = open_page("latent_space")
    spec = json.loads(at.get("plotly_chart")[0].proto.spec)
    assert spec["layout"]["xaxis"]["title"]["text"].startswith("PC1")
    confusion = at.dataframe[-1].value  # rows: true class, columns: nearest centroid
    assert confusion.shape == (10, 10) and confusion.to_numpy().sum() == 200  # the fixture's 200 test images
    at.radio(key="latent_projection").set_value("t-SNE 2-D").run()
    assert not at.exception, [e.value for e in at.exception]
    spec = json.loads(at.get("plotly_chart")[0].proto.spec)
    assert spec["layout"]["xaxis"]["title"]["text"] == "t-SNE 1"
    assert _points(spec["data"][-1]) == 10  # the centroids, embedded with the codes


@pytest.mark.usefixtures("app_env")
def test_sampling_grid_and_temperature():
    at = open_page("class_sampling")
    grid = image_urls(at)[0]
    at.slider(key="sample_temperature").set_value(2.0).run()
    assert image_urls(at)[0] != grid
    assert len(image_urls(at)) == 2  # the samples and the interpolation path


# ---------------------------------------------------------------- letters and uploads

def _bad_files() -> dict[str, tuple[bytes, str]]:
    frames = [Image.new("L", (16, 16), v) for v in (0, 255)]
    buf = io.BytesIO()
    frames[0].save(buf, format="PNG", save_all=True, append_images=frames[1:])  # an animated PNG
    return {
        "not an image": (b"this is text, not a picture", "not an image we can decode"),
        "over the pixel bound": (png_bytes(Image.new("1", (4100, 4100))), "pixel limit"),
        "animated": (buf.getvalue(), "animated"),
        "1x1": (png_bytes(Image.new("L", (1, 1), 0)), "1x1"),
        "all white": (png_bytes(Image.new("L", (64, 64), 255)), "looks blank"),
    }


@pytest.mark.usefixtures("app_env")
def test_bad_uploads_each_show_their_message_and_good_ones_are_processed():
    at = open_page("letters")
    bad = _bad_files()
    files = [(f"{name.replace(' ', '_')}.png", content, "image/png") for name, (content, _) in bad.items()]
    files.append(("good_L.png", letter_png(), "image/png"))
    at.file_uploader(key="letter_files").set_value(files).run()
    assert not at.exception
    errors = [e.value for e in at.error]
    for name, (_, message) in bad.items():
        assert any(message in e for e in errors), (name, errors)
    assert len(errors) == len(bad)
    captions = [c for img in at.image for c in img.captions]
    assert "resized to 28x28" in captions  # the good file's preprocessing steps
    assert captions.count("CSAE β=0.04") == 2  # EMNIST section and the uploaded letter


@pytest.mark.usefixtures("app_env")
def test_letters_nearest_class_table():
    at = open_page("letters")
    table = at.dataframe[0].value
    assert list(table["letter"]) == list("abcdefghijklmnopqrstuvwxyz")
    assert {"CSAE β=0", "CSAE β=0.04", "CSAE β=0.08"} <= set(table.columns)


@pytest.mark.usefixtures("app_env")
def test_each_uploaded_letter_is_one_row_with_every_model_and_its_nearest_classes():
    at = open_page("letters")
    tables_before = len(at.dataframe)
    at.file_uploader(key="letter_files").set_value(
        [("first.png", letter_png(), "image/png"), ("second.png", png_bytes(Image.open(io.BytesIO(letter_png()))
                                                                             .rotate(90, fillcolor=255)), "image/png")]
    ).run()
    assert not at.exception, [e.value for e in at.exception]
    captions = [c for img in at.image for c in img.captions]
    models = ["CSAE β=0", "CSAE β=0.04", "CSAE β=0.08", "CVAE"]
    for name in ("first.png", "second.png"):  # the input, then every model's reconstruction, in one row
        start = captions.index(f"{name} (input)")
        assert captions[start + 1:start + 1 + len(models)] == models
    tables = [t.value for t in at.dataframe[tables_before:]]
    assert len(tables) == 2  # one nearest-class table beside each letter, one row per CSAE
    assert all(list(t["model"]) == models[:3] and list(t.columns) == ["model", "nearest class", "distance"]
               for t in tables)


# ---------------------------------------------------------------- missing models / data

@pytest.mark.parametrize("page", PAGES)
def test_views_without_checkpoints(page, app_env, monkeypatch):
    monkeypatch.setenv("CSAE_CHECKPOINTS_DIR", str(app_env["empty"]))
    at = open_page(page)
    notes = " ".join(i.value for i in at.info)
    if page == "pedcc_sphere":
        assert at.get("plotly_chart"), "the PEDCC views work without models"
        # the d = 40 section falls back to centroids made as the models' are: the simplex, cosine -1/9
        assert "freshly generated (10 classes, d = 40, seed 0)" in notes, notes
        largest = next(m.value for m in at.metric if m.label == "Largest cosine")
        assert abs(float(largest) + 1 / 9) < 1e-4, largest
    elif page == "train":  # training needs no shipped model: Start is offered
        assert any(b.label == "Start training" for b in at.button), [b.label for b in at.button]
    else:
        assert "python checkpoints/zoo.py train" in notes and "python -m csae_core train" in notes


@pytest.mark.parametrize("page", ["reconstructions", "latent_space", "letters"])
def test_views_without_datasets(page, app_env, monkeypatch):
    monkeypatch.setenv("CSAE_DATA_DIR", str(app_env["empty"]))
    at = open_page(page)
    warnings = " ".join(w.value for w in at.warning)
    assert "python -m csae_core data download" in warnings
    if page == "letters":  # uploads still work without EMNIST
        at.file_uploader(key="letter_files").set_value(("L.png", letter_png(), "image/png")).run()
        assert not at.exception and not at.error
        assert any("CSAE β=0.04" in c for img in at.image for c in img.captions)


def test_broken_checkpoint_is_reported_not_raised(app_env, monkeypatch, tmp_path):
    import shutil

    zoo = tmp_path / "zoo"
    shutil.copytree(app_env["checkpoints"], zoo)
    (zoo / "mnist" / "cvae.safetensors").unlink()  # a JSON without its weights
    monkeypatch.setenv("CSAE_CHECKPOINTS_DIR", str(zoo))
    at = open_page("reconstructions")
    assert not at.error
    assert any("cvae.safetensors is missing" in w.value for w in at.warning)


# ---------------------------------------------------------------- warm-up

@pytest.mark.usefixtures("app_env")
def test_warmup_renders_the_default_reconstruction_grid_into_the_page_caches(monkeypatch):
    import streamlit as st

    from app import loaders, warmup

    st.cache_data.clear()
    st.cache_resource.clear()
    report = warmup.warm()
    assert "error" not in report, report
    assert report["dataset"] == "mnist" and report["models"] >= 4 and report["model"].endswith("csae-b0.04.json")
    # The page's first run finds its default grid, and the other β values' grids it prefetches, cached (the
    # warm-up renders every β's default grid, issue 19): no β reaches the model.
    computed, real = [], loaders.analysis.reconstruct
    monkeypatch.setattr(loaders.analysis, "reconstruct", lambda model, *a, **k: computed.append(model) or
                        real(model, *a, **k))
    at = open_page("reconstructions")
    assert not at.exception and image_urls(at)
    assert report["grids"] and not computed


@pytest.mark.usefixtures("app_env")
def test_warmup_precomputes_the_pedcc_open_set_latent_space_and_letters_first_draws(monkeypatch):
    import streamlit as st

    from app import loaders, warmup
    from app import openset as app_openset

    st.cache_data.clear()
    st.cache_resource.clear()
    report = warmup.warm()
    assert not [k for k in report if k.endswith("error")], report
    # Their first visits after the warm-up find the sphere figure, scores, latent codes, thresholds and letter
    # rows cached (app/defaults.py: the pages' widgets start where the warm-up computed): no model pass.
    passes = []
    monkeypatch.setattr(app_openset.openset, "evaluate_openset", lambda *a, **k: passes.append("scores"))
    monkeypatch.setattr(app_openset.openset, "score_images", lambda *a, **k: passes.append("threshold"))
    monkeypatch.setattr(loaders.analysis, "latents", lambda *a, **k: passes.append("latents"))
    monkeypatch.setattr(loaders.analysis, "reconstruct_letters", lambda *a, **k: passes.append("letters"))
    monkeypatch.setattr(loaders.analysis, "nearest_classes", lambda *a, **k: passes.append("nearest"))
    sphere = loaders.figures.sphere_figure  # Home (every open_page's first run) draws its own, still sphere
    monkeypatch.setattr(loaders.figures, "sphere_figure", lambda h, labels=None, **k:
                        (passes.append("sphere") if labels else None) or sphere(h, labels, **k))
    for page in ("pedcc_sphere", "open_set", "latent_space", "letters"):
        at = open_page(page)
        assert not at.exception and not at.error
    assert passes == []
