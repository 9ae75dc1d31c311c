"""Unit tests of the explorer's non-UI modules: registry, analysis, grids, figures, letters."""
from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from app import analysis, figures, grids, letters, registry

ROOT = Path(__file__).resolve().parents[1]


def _load(path: Path):
    """A script of the repo (not a package module) imported by its path."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"units_{path.stem}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# ---------------------------------------------------------------- registry

def test_scan_reads_the_manifest(app_fixture):
    entries = registry.scan(app_fixture["checkpoints"])
    assert len(entries) == 7
    assert {(e.kind, e.beta) for e in entries} == {("csae", 0.0), ("csae", 0.04), ("csae", 0.08), ("cvae", 0.0),
                                                   ("csae-encoder", 0.0)}
    assert all(Path(e.path).is_file() and Path(e.path).is_absolute() for e in entries)
    finals = registry.finals(entries)
    assert len(finals) == 5 and all(e.paper_epoch is None and e.epoch == e.epochs == 12 for e in finals)
    assert len(registry.finals(entries, decoder_only=True)) == 4  # not the encoder-only model
    assert list(registry.snapshots(entries, "mnist", "csae", 0.0)) == [4, 8, 12]
    assert list(registry.snapshots(entries, "mnist", "csae", 0.04)) == [12]


def test_scan_without_manifest_reads_the_checkpoint_jsons(app_fixture, tmp_path):
    zoo = tmp_path / "zoo"
    shutil.copytree(app_fixture["checkpoints"], zoo)
    (zoo / "manifest.json").unlink()
    (zoo / "notes.json").write_text('{"not": "a checkpoint"}')  # ignored
    (zoo / "broken.json").write_text("{truncated")  # ignored
    by_manifest = registry.scan(app_fixture["checkpoints"])
    by_glob = registry.scan(zoo)
    strip = lambda es: sorted((e.dataset, e.kind, e.beta, e.epoch, e.paper_epoch) for e in es)  # noqa: E731
    assert strip(by_glob) == strip(by_manifest)  # a non-paper recipe has no paper-scale epoch either way


def test_scan_skips_bad_or_missing_manifest_rows_and_adds_unlisted_checkpoints(app_fixture, tmp_path):
    zoo = tmp_path / "zoo"
    shutil.copytree(app_fixture["checkpoints"], zoo)
    rows = json.loads((zoo / "manifest.json").read_text())
    listed, unlisted = rows[1:], rows[0]
    listed.append({"dataset": "mnist", "model": "csae", "beta": 0.02, "epoch": 12, "path": "mnist/not-there.json"})
    listed.append({"model": "csae"})  # malformed
    listed[0]["path"] = listed[0]["path"][: -len(".json")]  # a stem with a dot (csae-b0.04) also resolves
    (zoo / "manifest.json").write_text(json.dumps(listed))
    entries = registry.scan(zoo)
    assert len(entries) == 7  # the missing and malformed rows dropped, the unlisted JSON found
    assert any(e.path.endswith(Path(unlisted["path"]).name) for e in entries)


def test_mnist_and_the_default_beta_come_first(tmp_path):
    """With both datasets present, pickers start at MNIST and at CSAE β=0.02's final epoch."""
    def entry(dataset, kind, beta, epoch):
        return registry.ModelEntry(dataset, kind, beta, epoch, epoch * 10, str(tmp_path / f"{dataset}{kind}{beta}{epoch}"))

    entries = [entry("fashion-mnist", "csae", 0.02, 12), entry("mnist", "basenet", 0.0, 12),
               entry("mnist", "csae", 0.02, 4), entry("mnist", "csae", 0.02, 12), entry("faces", "csae", 0.0, 12)]
    assert registry.datasets(entries) == ["mnist", "fashion-mnist", "faces"]
    assert sorted(["fashion-mnist", "faces", "mnist"], key=registry.dataset_rank) == ["mnist", "fashion-mnist", "faces"]
    assert registry.default_entry(entries) == entries[3]
    assert registry.default_entry(entries[:2]) is None


def test_views_show_seed_0_not_the_extra_seeds_of_table3(app_fixture, tmp_path):
    """The zoo ships CSAE β=0.02 with seeds 1 and 2 (csae-b0.02-s1/-s2) for Table 3's spread; views, the
    default model and the saved-epoch strip keep showing seed 0, even when another seed trained longer."""
    zoo = tmp_path / "zoo"
    shutil.copytree(app_fixture["checkpoints"], zoo)
    rows = json.loads((zoo / "manifest.json").read_text())
    base = next(r for r in rows if r["model"] == "csae" and r["beta"] == 0.0 and r["epoch"] == r["epochs"])
    for seed, epoch in ((1, base["epoch"]), (2, base["epoch"] + 1)):
        src = zoo / base["path"]
        for ext in (".json", ".safetensors"):
            shutil.copy(src.with_suffix(ext), src.with_name(f"{src.stem}-s{seed}{ext}"))
        rows.append({**base, "seed": seed, "epoch": epoch, "path": str(Path(base["path"]).with_name(f"{src.stem}-s{seed}.json"))})
    (zoo / "manifest.json").write_text(json.dumps(rows))
    entries = registry.scan(zoo)
    assert sorted(e.seed for e in entries if (e.kind, e.beta) == ("csae", 0.0)) == [0, 0, 0, 1, 2]
    final = [e for e in registry.finals(entries) if (e.dataset, e.kind, e.beta) == ("mnist", "csae", 0.0)]
    assert [(e.seed, e.epoch) for e in final] == [(0, base["epoch"])]
    assert {e.seed for e in registry.snapshots(entries, "mnist", "csae", 0.0).values()} == {0}
    assert list(registry.snapshots(entries, "mnist", "csae", 0.0)) == [4, 8, 12]
    seeded = [registry.ModelEntry("mnist", "csae", 0.02, 13, None, "/s1.json", seed=1),
              registry.ModelEntry("mnist", "csae", 0.02, 12, None, "/s0.json")]
    assert registry.default_entry(seeded).path == "/s0.json"
    make_openset = _load(ROOT / "results" / "make_openset.py")
    picked = make_openset.final_models(rows)
    assert [(r["epoch"], r.get("seed", 0)) for r in picked if (r["model"], r["beta"]) == ("csae", 0.0)] == [
        (base["epoch"], 0)]


def test_openset_beta_trend_flags_a_column_of_another_recipe():
    """MNIST β=0.02 is a GPU paper-recipe model among cpu-720k ones: results/openset.md's β trend says so."""
    make_openset = _load(ROOT / "results" / "make_openset.py")
    row = lambda ds, beta, recipe: {"dataset": ds, "beta": beta, "recipe": recipe}
    mixed = [row("mnist", b, "paper" if b == 0.02 else "cpu-720k") for b in (0.0, 0.02, 0.04)]
    same = [row("fashion-mnist", b, "cpu-720k") for b in (0.0, 0.02, 0.04)]
    lines = make_openset.recipe_caveats(mixed + same)
    assert len(lines) == 2 and lines[1].startswith("MNIST: β=0.02 is from the paper recipe, the other β from cpu-720k")
    assert make_openset.recipe_caveats(same) == []


def test_checkpoints_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(registry.ENV_VAR, str(tmp_path))
    assert registry.checkpoints_dir() == tmp_path
    monkeypatch.delenv(registry.ENV_VAR)
    assert registry.checkpoints_dir() == ROOT / "checkpoints"
    assert registry.scan(tmp_path / "nothing") == []


def test_labels():
    e = registry.ModelEntry("mnist", "csae", 0.02, 120, 120, "/x.json", recipe="paper", epochs=120)
    assert e.label == "CSAE β=0.02" and e.long_label == "mnist · CSAE β=0.02 · epoch 120"
    short = registry.ModelEntry("mnist", "csae", 0.02, 4, None, "/x.json", recipe="cpu-short", epochs=12)
    assert short.long_label == "mnist · CSAE β=0.02 · epoch 4 of 12, cpu-short recipe"
    assert registry.ModelEntry("mnist", "cvae", 0.0, 12, None, "/x.json").label == "CVAE"


# ---------------------------------------------------------------- analysis

def test_choose_indices_is_seeded_and_respects_the_class():
    labels = np.arange(100) % 10
    a = analysis.choose_indices(labels, None, 16, seed=3)
    assert np.array_equal(a, analysis.choose_indices(labels, None, 16, seed=3))
    assert not np.array_equal(a, analysis.choose_indices(labels, None, 16, seed=4))
    assert len(set(a.tolist())) == 16
    c = analysis.choose_indices(labels, 7, 32, seed=0)
    assert len(c) == 10 and set(labels[c]) == {7}  # a class has only 10: all of them


def test_reconstruct_and_nearest_with_a_fixture_model(app_fixture):
    from csae_core.checkpoint import load_checkpoint

    entry = next(e for e in registry.scan(app_fixture["checkpoints"]) if e.kind == "csae")
    model = load_checkpoint(entry.path).model
    images = (np.random.default_rng(0).random((5, 28, 28)) * 255).astype(np.uint8)
    rec = analysis.reconstruct(model, images)
    assert rec.images.shape == (5, 32, 32) and rec.images.dtype == np.uint8
    assert rec.mse.shape == (5,) and np.allclose(rec.psnr, 10 * np.log10(1 / rec.mse), atol=1e-4)
    classes, dist = analysis.nearest_classes(model, images)
    z = analysis.latents(model, images)
    ref = np.linalg.norm(z[:, None] - model.centroids.numpy()[None], axis=2)
    assert np.array_equal(classes, ref.argmin(1)) and np.allclose(dist, ref.min(1), atol=1e-4)


# ---------------------------------------------------------------- grids

def test_comparison_grid_and_png():
    originals = np.full((10, 28, 28), 255, np.uint8)
    recons = np.zeros((10, 32, 32), np.uint8)
    g = grids.comparison_grid(originals, recons, nrow=4)
    rows = 2 * 3  # 10 images in rows of 4: 3 original rows, each followed by its reconstruction row
    assert g.shape == (2 + rows * 34, 2 + 4 * 34)
    assert g[2 + 2 + 10, 2 + 2 + 10] == 255 and g[2 + 34 + 10, 2 + 10] == 0  # first row originals, then recons
    img = Image.open(io.BytesIO(grids.png(g)))
    assert img.format == "PNG" and img.size == (g.shape[1] * 3, g.shape[0] * 3)
    wide = Image.open(io.BytesIO(grids.png(np.zeros((34, 26 * 34), np.uint8))))
    assert wide.width <= grids.MAX_WIDTH  # a smaller magnification instead of Streamlit's blurry resize


# ---------------------------------------------------------------- figures

def test_sphere_figure_frames_and_slider():
    history = np.random.default_rng(0).normal(size=(7, 5, 3))
    fig = figures.sphere_figure(history)
    assert len(fig.frames) == 7 and all(f.traces == (1,) for f in fig.frames)
    assert len(fig.layout.sliders[0].steps) == 7 and fig.layout.sliders[0].active == 6
    assert np.allclose(fig.data[1].x, history[-1, :, 0])  # opens on the final frame
    assert not figures.sphere_figure(history[-1]).frames  # a single configuration: no animation
    sphere = np.stack([fig.data[0].x, fig.data[0].y, fig.data[0].z], 1).astype(float)
    sphere = sphere[~np.isnan(sphere).any(1)]
    assert len(sphere) > 500 and np.allclose(np.linalg.norm(sphere, axis=1), 1, atol=1e-3)  # circles on the unit sphere


def test_distance_heatmap_upper_triangle_and_names():
    d = np.arange(9, dtype=float).reshape(3, 3)
    fig = figures.distance_heatmap(d, ["a", "b", "c"], upper_only=True)
    z = np.array(fig.data[0].z, dtype=float)
    assert np.isnan(z[np.tril_indices(3)]).all() and z[0, 2] == 2
    assert list(fig.data[0].x) == ["a", "b", "c"]


def test_latent_scatter_traces():
    proj = np.random.default_rng(0).normal(size=(30, 3))
    fig = figures.latent_scatter(proj, np.arange(30) % 3, ["x", "y", "z"], centroids=np.zeros((3, 3)))
    assert [t.name for t in fig.data] == ["x", "y", "z", "PEDCC centroids"] and fig.data[0].type == "scatter3d"
    fig2 = figures.latent_scatter(proj[:, :2], np.arange(30) % 3, ["x", "y", "z"])
    assert len(fig2.data) == 3 and fig2.data[0].type == "scatter"
    assert figures.cosine_histogram(np.array([-0.1, -0.1]), -1 / 9).data[0].type == "histogram"


# ---------------------------------------------------------------- letters

def _png(img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", **kw)
    return buf.getvalue()


@pytest.mark.parametrize("content, message", [
    (b"GIF89a not really", "not an image we can decode"),
    (b"", "not an image we can decode"),
    (_png(Image.new("1", (4100, 4100))), "pixel limit"),
    (_png(Image.new("L", (8, 8), 0), save_all=True, append_images=[Image.new("L", (8, 8), 255)]), "animated"),
    (_png(Image.new("L", (1, 1))), "1x1"),
    (_png(Image.new("L", (40, 40), 255)), "looks blank"),
    (_png(Image.new("RGBA", (40, 40), (0, 0, 0, 0))), "looks blank"),  # fully transparent
])
def test_prepare_image_refuses_with_a_message(content, message):
    result = letters.prepare_image("upload.png", content)
    assert not result.ok and message in result.error and "upload.png" in result.error


def test_prepare_image_gives_the_emnist_steps():
    a = np.full((90, 50), 250, np.uint8)
    a[10:80, 20:28] = 5
    result = letters.prepare_image("l.jpg", _png(Image.fromarray(a)))
    assert result.ok and result.steps[-1][0] == "resized to 28x28"
    x = result.model_input
    assert x.shape == (28, 28) and x.max() == 255 and x[0, 0] == 0  # light ink on black, like EMNIST


def test_nearest_table():
    nearest = {"M": (np.array([3, 1]), np.array([5.0, 6.5]))}
    rows = letters.nearest_table(["a", "b"], nearest, [str(i) for i in range(10)])
    assert rows == [{"letter": "a", "M": "3  (5.00)"}, {"letter": "b", "M": "1  (6.50)"}]


def test_no_legacy_pages_folder_next_to_the_entrypoint():
    # Streamlit's legacy auto-discovery looks for pages/ next to the main script; st.navigation
    # turns it off anyway, and there is none there (the browser test checks the sidebar too).
    assert not (ROOT / "app" / "pages").exists()


def test_a_rewritten_checkpoint_is_not_served_from_the_cache(app_fixture, tmp_path, monkeypatch):
    import os

    from app import loaders

    zoo = tmp_path / "zoo"
    shutil.copytree(app_fixture["checkpoints"], zoo)
    monkeypatch.setenv(registry.ENV_VAR, str(zoo))
    entry = next(e for e in loaders.model_entries() if e.kind == "cvae")
    first = loaders.load_model(entry.path)
    assert loaders.load_model(entry.path) is first  # cached
    shutil.copy(zoo / "mnist" / "csae-b0.04.json", zoo / "mnist" / "extra.json")  # a new file: no reset
    loaders.model_entries()
    assert loaders.load_model(entry.path) is first
    other = next(e for e in loaders.model_entries() if e.kind == "csae")
    kept = loaders.load_model(other.path)
    os.utime(entry.path, ns=(1, 1))  # the zoo re-exported this model in place
    assert loaders.load_model(entry.path) is not first
    assert loaders.load_model(other.path) is kept  # no global clear: other checkpoints stay cached


def test_grid_tiles_uint8_images_exactly():
    images = np.arange(3 * 28 * 28, dtype=np.int64).reshape(3, 28, 28).astype(np.uint8)
    g = grids.grid(images, nrow=2)
    assert g.shape == (2 + 2 * 34, 2 + 2 * 34) and g.dtype == np.uint8
    assert np.array_equal(g[2 + 2:2 + 30, 2 + 2:2 + 30], images[0])  # padded to 32, 2 px gutter
    assert np.array_equal(g[36 + 2:36 + 30, 2 + 2:2 + 30], images[2])  # second row, first column
    assert (g[2 + 34:2 + 34 + 32, 2 + 34:2 + 34 + 32] == grids.GUTTER).all()  # the empty fourth tile
    assert (g[2:2 + 32, 2:4] == 0).all()  # the 2 px black padding left of a 28 px digit


def test_user_letter_results_are_memoised_per_session(app_fixture, monkeypatch):
    from app import loaders

    monkeypatch.setenv(registry.ENV_VAR, str(app_fixture["checkpoints"]))
    entry = next(e for e in loaders.model_entries() if e.kind == "csae")
    memo_home: dict = {}
    monkeypatch.setattr(loaders.st, "session_state", memo_home)
    calls = []
    real = loaders.analysis.reconstruct_letters
    monkeypatch.setattr(loaders.analysis, "reconstruct_letters", lambda m, x: calls.append(1) or real(m, x))
    letters28 = np.zeros((2, 28, 28), np.uint8)
    letters28[:, 8:20, 12:16] = 255
    first = loaders.letters_recon(entry.path, letters28)
    assert np.array_equal(loaders.letters_recon(entry.path, letters28), first) and len(calls) == 1  # the rerun is a lookup
    other = letters28.copy()
    other[0, 0, 0] = 1
    loaders.letters_recon(entry.path, other)
    assert len(calls) == 2  # different pixels: computed
    monkeypatch.setattr(loaders.st, "session_state", {})  # another session: its own memo
    loaders.letters_recon(entry.path, letters28)
    assert len(calls) == 3 and len(memo_home["_letters_memo"]) == 2


def test_model_passes_run_one_at_a_time_and_a_pages_own_go_before_prefetches():
    """16 users opening Reconstructions: each one's first grid must not queue behind the others' prefetches."""
    import threading
    import time

    from app import passes

    queue, order, running = passes.PassQueue(), [], []
    release = threading.Event()

    def pass_(name, background=False, hold=None):
        ctx = passes.background() if background else threading.Lock()  # a lock: any no-op context
        with ctx, queue:
            running.append(name)
            assert len(running) == 1, f"two passes at once: {running}"
            order.append(name)
            if hold is not None:
                hold.wait(10)
            running.remove(name)

    first = threading.Thread(target=pass_, args=("busy",), kwargs={"hold": release})
    first.start()
    while not order:
        time.sleep(0.01)
    threads = [threading.Thread(target=pass_, args=("prefetch", True))]
    threads[0].start()
    time.sleep(0.2)  # the prefetch is waiting first ...
    threads.append(threading.Thread(target=pass_, args=("own",)))
    threads[1].start()
    time.sleep(0.2)  # ... then a page's own pass
    release.set()
    for t in [first, *threads]:
        t.join(10)
    assert order == ["busy", "own", "prefetch"]
