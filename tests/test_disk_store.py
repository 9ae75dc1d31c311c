"""The app's on-disk store (app/disk_store.py): values round-trip without pickle, a changed checkpoint, data
folder or code version is a miss (never a stale value), a corrupt entry is recomputed, "off" writes nothing,
and the open-set scores a fresh process would recompute come from disk instead, equal to the computed ones."""
import numpy as np
import pytest

from app import analysis, disk_store


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setenv(disk_store.ENV_VAR, str(tmp_path / "store"))
    return tmp_path / "store"


def counted(value):
    calls = []

    def compute():
        calls.append(1)
        return value
    return compute, calls


def test_values_round_trip_without_pickle(store):
    value = {"distance": {"threshold": np.arange(5.0), "unknown": np.ones(3, np.float32)},
             "png": b"\x89PNG...", "pair": (np.zeros((2, 2)), None), "n": 3,
             "recon": analysis.Recon(np.zeros((1, 4, 4), np.uint8), np.ones(1), np.full(1, 20.0))}
    compute, calls = counted(value)
    for _ in range(2):
        got = disk_store.get_or_compute("f", "sha-a", {"n": 1}, compute)
    assert len(calls) == 1 and len(list(store.glob("*.npz"))) == 1
    assert np.array_equal(got["distance"]["threshold"], value["distance"]["threshold"])
    assert got["distance"]["unknown"].dtype == np.float32 and got["png"] == value["png"]
    assert got["pair"][1] is None and got["n"] == 3
    assert isinstance(got["recon"], analysis.Recon) and np.array_equal(got["recon"].psnr, [20.0])
    with np.load(next(store.glob("*.npz")), allow_pickle=False) as npz:  # readable without pickle
        assert "__spec__" in npz.files


def test_another_checkpoint_folder_or_code_is_a_miss(store, tmp_path, monkeypatch):
    compute, calls = counted(np.arange(3))
    data = tmp_path / "data"
    data.mkdir()
    (data / "x.gz").write_bytes(b"1")
    stamp = lambda: {"folder": disk_store.folder_stamp(str(data))}
    disk_store.get_or_compute("f", "sha-a", stamp(), compute)
    disk_store.get_or_compute("f", "sha-b", stamp(), compute)  # the checkpoint was rewritten
    assert len(calls) == 2
    (data / "x.gz").write_bytes(b"22")  # the data replaced
    disk_store.get_or_compute("f", "sha-a", stamp(), compute)
    assert len(calls) == 3
    monkeypatch.setattr(disk_store, "CODE_VERSION", "other")  # the code changed
    disk_store.get_or_compute("f", "sha-a", stamp(), compute)
    assert len(calls) == 4


def test_corrupt_entry_is_recomputed_and_off_writes_nothing(store, monkeypatch):
    compute, calls = counted(np.arange(4))
    disk_store.get_or_compute("f", "sha", {}, compute)
    entry = next(store.glob("*.npz"))
    entry.write_bytes(entry.read_bytes()[:20])  # a truncated file (a crash mid-write elsewhere)
    assert np.array_equal(disk_store.get_or_compute("f", "sha", {}, compute), np.arange(4)) and len(calls) == 2
    assert np.array_equal(disk_store.decode(entry.read_bytes()), np.arange(4))  # rewritten whole
    monkeypatch.setenv(disk_store.ENV_VAR, "off")
    entry.unlink()
    disk_store.get_or_compute("f", "sha", {}, compute)
    assert len(calls) == 3 and not list(store.glob("*.npz"))


def test_a_foreign_class_name_is_refused(store):
    spec = {"dataclass": ["os:system", {"dict": {}}]}
    with pytest.raises(ValueError):
        disk_store._unflatten(spec, {})


def test_open_set_scores_come_from_disk_in_a_fresh_process(store, app_fixture, app_env):
    """What app/warmup.py precomputes: a second process (here: the memory cache cleared) reads the scores
    from the store without a model pass, and they equal the computed ones."""
    from app import loaders
    from app import openset as app_openset

    entry = next(e for e in loaders.model_entries() if e.kind == "csae")
    known = loaders.data_folder(entry.dataset)
    unknown = app_openset.unknown_choices(entry.dataset)[0]
    args = (entry.path, entry.dataset, known, unknown, app_openset.unknown_folder(unknown), 50)
    first = app_openset.scores(*args)
    app_openset.scores.clear()
    passes = []
    real = loaders.load_model
    try:
        loaders.load_model = lambda p: passes.append(p) or real(p)
        again = app_openset.scores(*args)
    finally:
        loaders.load_model = real
    assert not passes  # no model was even loaded
    assert first.keys() == again.keys()
    for name in first:
        for split in first[name]:
            assert np.array_equal(first[name][split], again[name][split])
