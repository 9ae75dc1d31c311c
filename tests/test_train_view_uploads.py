"""Uploaded image sets for the Train view (app/uploads.py): a good zip unpacks into the user folder; each bad
one (path traversal, a zip bomb, non-images, a single class, unequal sizes, a link, too many files) gets one
clear message, and nothing is written outside the user folder (nor, for a refused zip, inside it)."""
from __future__ import annotations

import io
import stat
import zipfile

import numpy as np
import pytest
from PIL import Image

from app import uploads
from csae_core.errors import CSAEError


def png(side: int = 28, value: int = 0, seed: int = 0, mode: str = "L") -> bytes:
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 255, (side, side) if mode == "L" else (side, side, 3), dtype=np.uint8)
    a[0, 0] = value
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return buf.getvalue()


def make_zip(members: dict[str, bytes], links: dict[str, str] | None = None,
             method: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", method) as z:
        for name, data in members.items():
            z.writestr(name, data)
        for name, target in (links or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            z.writestr(info, target)
    return buf.getvalue()


def good_members(top: str = "", n: int = 12, side: int = 28) -> dict[str, bytes]:
    return {f"{top}{cls}/{i:03d}.png": png(side, seed=i + 100 * k)
            for k, cls in enumerate(["cats", "dogs"]) for i in range(n)}


def files_under(path):
    return sorted(p for p in path.rglob("*") if p.is_file())


@pytest.fixture
def dirs(tmp_path):
    """(datasets folder inside the user folder, the folder around it that must stay untouched)."""
    outside = tmp_path / "outside"
    user = outside / "user_models"
    user.mkdir(parents=True)
    return user / "datasets", outside


@pytest.mark.parametrize("top", ["", "my-set/"])
def test_a_good_zip_unpacks_into_class_folders(dirs, top):
    datasets, _ = dirs
    s = uploads.unpack(make_zip(good_members(top)), datasets)
    assert s.classes == ["cats", "dogs"] and s.images == 24 and (s.side, s.image_size) == (28, 32)
    assert s.folder.parent == datasets
    assert sorted(p.name for p in s.folder.iterdir()) == ["cats", "dogs"]
    assert len(list((s.folder / "cats").glob("*.png"))) == 12
    # What train --dataset <folder> reads: the library's own image-folder loader accepts it.
    from csae_core.preprocess import load_dataset_tensors

    (x, y), (tx, ty), names = load_dataset_tensors(str(s.folder), image_size=32)
    assert names == ["cats", "dogs"] and x.shape[1:] == (3, 32, 32) and len(y) + len(ty) == 24


def _bomb() -> bytes:
    # 15 MB of zeros deflates to ~15 KB: declared size / packed size ~1000.
    return make_zip({**good_members(), "cats/huge.png": b"\0" * (15 * 1024**2)})


BAD = {
    "traversal": (lambda: make_zip({**good_members(), "../../evil.png": png()}), "outside its folder"),
    "absolute": (lambda: make_zip({**good_members(), "/etc/evil.png": png()}), "outside its folder"),
    "link": (lambda: make_zip(good_members(), links={"cats/link.png": "/etc/passwd"}), "symbolic link"),
    "bomb": (_bomb, "zip bomb"),
    "non-image": (lambda: make_zip({**good_members(), "dogs/notes.png": b"hello, not an image"}),
              "not an image we can decode"),
    "single class": (lambda: make_zip({f"cats/{i}.png": png(seed=i) for i in range(24)}), "single class"),
    "unequal sizes": (lambda: make_zip({**good_members(), "dogs/big.png": png(32, seed=999)}), "unequal sizes"),
    "too many pixels": (lambda: make_zip({**good_members(), "dogs/big.png": png(600, seed=998)}), "pixel limit"),
    "not a zip": (lambda: b"PK\x03\x04 but no zip at all", "not a zip file"),
    "too few": (lambda: make_zip(good_members(n=3)), "at least"),
    "loose file": (lambda: make_zip({**good_members(), "readme.png": png()}), "not in a class folder"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_a_bad_zip_gets_one_clear_message_and_writes_nothing(dirs, case):
    make, words = BAD[case]
    datasets, outside = dirs
    before = files_under(outside)
    with pytest.raises(CSAEError) as err:
        uploads.unpack(make(), datasets)
    message = str(err.value)
    assert words in message and "\n" not in message and "Fix" in message, message
    assert files_under(outside) == before, "a refused zip writes nothing"
    assert not (outside.parent / "evil.png").exists() and not (outside / "evil.png").exists()


def test_limits_on_size_and_file_count(dirs, monkeypatch):
    datasets, outside = dirs
    monkeypatch.setattr(uploads, "MAX_FILES", 10)
    with pytest.raises(CSAEError, match="over the 10 limit"):
        uploads.unpack(make_zip(good_members()), datasets)
    monkeypatch.setattr(uploads, "MAX_ZIP_BYTES", 1000)
    with pytest.raises(CSAEError, match="over the 0 MB limit"):
        uploads.unpack(make_zip(good_members()), datasets)
    assert files_under(outside) == []
