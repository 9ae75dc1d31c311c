"""An uploaded zip of images, one sub-folder per class, checked and unpacked for `train --dataset <folder>`.

Nothing in the zip is trusted: its size, file count and unpacked size are capped before anything is read,
every name is checked (no absolute path, no `..`, no link), every member is read with a byte limit (its
header may lie) and decoded as the Letters view decodes uploads (csae_core.images.decode_image: PNG/JPEG,
pixel limit). Only re-encoded PNGs of the decoded pixels are written, into a new folder under the user
folder, renamed into place when all is well. Each problem is one CSAEError line. No Streamlit calls.
"""
from __future__ import annotations

import io
import re
import shutil
import uuid
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from csae_core.errors import CSAEError
from csae_core.images import MAX_BYTES, decode_image

MAX_ZIP_BYTES = 10 * 1024**2  # as the server's upload limit (.streamlit/config.toml maxUploadSize)
MAX_FILES = 5000
MAX_UNPACKED = 100 * 1024**2  # all members together, as their headers declare them
MAX_RATIO = 100  # declared size / compressed size above this (and over 1 MB): a zip bomb
MAX_SIDE = 512  # pixels per side: the models read 32, 64 or 128
MIN_IMAGES = 20  # the folder is split 9:1 into train/test, and the train part again for validation
CLASS_NAME = re.compile(r"[\w][\w .+-]{0,63}")
SKIP = re.compile(r"(^|/)(__MACOSX|\.[^/]*)(/|$)|(^|/)Thumbs\.db$")  # what zip tools add: not data


@dataclass(frozen=True)
class ImageSet:
    folder: Path  # user folder/datasets/<id>/<class>/<n>.png
    classes: list[str]
    images: int
    side: int  # the images' common side (they are square or not: the larger side)
    image_size: int  # what the model will read them at: 32, 64 or 128


def _check_name(i: zipfile.ZipInfo) -> None:
    """Refuse a member that could land outside the folder: an absolute path, a `..`, a link."""
    name = i.filename.replace("\\", "/")
    if name.startswith("/") or re.match(r"[A-Za-z]:", name) or ".." in PurePosixPath(name).parts:
        raise CSAEError(f"the zip names a path outside its folder ({i.filename!r}); refused. "
                        f"Fix: zip the class folders themselves.")
    if (i.external_attr >> 16) & 0o170000 == 0o120000:
        raise CSAEError(f"the zip holds a symbolic link ({i.filename!r}); refused. Fix: zip real files only.")


def _members(zf: zipfile.ZipFile) -> list[zipfile.ZipInfo]:
    """The image members, after the checks on names, links, counts and declared sizes."""
    if len(zf.infolist()) > 4 * MAX_FILES:
        raise CSAEError(f"the zip holds {len(zf.infolist()):,} entries, over the {MAX_FILES:,} limit. "
                        f"Fix: upload fewer images.")
    for i in zf.infolist():
        _check_name(i)
    infos = [i for i in zf.infolist() if not i.is_dir() and not SKIP.search(i.filename.replace("\\", "/"))]
    if len(infos) > MAX_FILES:
        raise CSAEError(f"the zip holds {len(infos):,} files, over the {MAX_FILES:,} limit. Fix: upload fewer images.")
    total = 0
    for i in infos:
        if i.file_size > MAX_BYTES:
            raise CSAEError(f"{i.filename} unpacks to {i.file_size / 1e6:.0f} MB, over the {MAX_BYTES / 1e6:.0f} MB "
                            f"limit per image. Fix: scale it down.")
        if i.file_size > 1024**2 and i.file_size > MAX_RATIO * max(i.compress_size, 1):
            raise CSAEError(f"{i.filename} unpacks {i.file_size // max(i.compress_size, 1):,} times larger than it "
                            f"is packed: a zip bomb, refused. Fix: upload ordinary images.")
        total += i.file_size
    if total > MAX_UNPACKED:
        raise CSAEError(f"the zip unpacks to {total / 1e6:.0f} MB, over the {MAX_UNPACKED / 1e6:.0f} MB limit. "
                        f"Fix: upload fewer or smaller images.")
    return infos


def _class_of(names: list[str]) -> list[str]:
    """Each member's class folder: `<class>/<file>`, or `<top>/<class>/<file>` when one folder holds them all."""
    parts = [PurePosixPath(n.replace("\\", "/")).parts for n in names]
    if parts and len({p[0] for p in parts}) == 1 and all(len(p) == 3 for p in parts):
        parts = [p[1:] for p in parts]
    if any(len(p) != 2 for p in parts):
        bad = next(n for n, p in zip(names, parts) if len(p) != 2)
        raise CSAEError(f"{bad!r} is not in a class folder. Fix: zip one folder per class with the images directly "
                        f"inside (e.g. cats/001.png, dogs/001.png).")
    for p in parts:
        if not CLASS_NAME.fullmatch(p[0]):
            raise CSAEError(f"class folder name {p[0]!r} is not allowed. Fix: use letters, digits, spaces, . _ + -.")
    return [p[0] for p in parts]


def _read(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytes:
    with zf.open(info) as f:
        data = f.read(MAX_BYTES + 1)  # the header's size may lie
    if len(data) > MAX_BYTES:
        raise CSAEError(f"{info.filename} unpacks to more than {MAX_BYTES / 1e6:.0f} MB: refused. Fix: scale it down.")
    return data


def _decode_all(zf: zipfile.ZipFile, infos: list[zipfile.ZipInfo]):
    """PIL images of every member, all of one size."""
    pictures, size, first = [], None, None
    for i in infos:
        try:
            img = decode_image(_read(zf, i), i.filename, max_pixels=MAX_SIDE * MAX_SIDE)
        except (zipfile.BadZipFile, RuntimeError, NotImplementedError, EOFError, OSError) as e:
            raise CSAEError(f"{i.filename} cannot be unpacked ({e}). Fix: zip it again.") from None
        if max(img.size) > MAX_SIDE:
            raise CSAEError(f"{i.filename} is {img.size[0]}x{img.size[1]} pixels, over {MAX_SIDE} per side. "
                            f"Fix: scale the images down.")
        if size is None:
            size, first = img.size, i.filename
        elif img.size != size:
            raise CSAEError(f"the images are of unequal sizes: {first} is {size[0]}x{size[1]}, {i.filename} is "
                            f"{img.size[0]}x{img.size[1]}. Fix: give them all one size.")
        pictures.append(img)
    return pictures, size


def unpack(data: bytes, datasets_dir: Path) -> ImageSet:
    """Check the zip `data` and unpack it into a new folder under `datasets_dir`; see the module docstring."""
    if len(data) > MAX_ZIP_BYTES:
        raise CSAEError(f"the zip is {len(data) / 1e6:.1f} MB, over the {MAX_ZIP_BYTES / 1e6:.0f} MB limit. "
                        f"Fix: upload fewer or smaller images.")
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, ValueError, OSError):
        raise CSAEError("the upload is not a zip file. Fix: zip the folder of class folders and upload that.") from None
    with zf:
        infos = _members(zf)
        classes = _class_of([i.filename for i in infos])
        if len(infos) < MIN_IMAGES:
            raise CSAEError(f"the zip holds {len(infos)} images; training needs at least {MIN_IMAGES}. "
                            f"Fix: add more images.")
        names = sorted(set(classes))
        if len(names) < 2:
            raise CSAEError(f"the zip holds a single class ({names[0]!r}); a classifier needs two or more. "
                            f"Fix: add a folder of images for each further class.")
        pictures, (w, h) = _decode_all(zf, infos)
    return _write(pictures, classes, names, max(w, h), datasets_dir)


def _write(pictures, classes: list[str], names: list[str], side: int, datasets_dir: Path) -> ImageSet:
    """Re-encoded PNGs into datasets_dir/.<id>.tmp, renamed to datasets_dir/<id> when complete."""
    folder = datasets_dir / uuid.uuid4().hex[:12]
    tmp = datasets_dir / f".{folder.name}.tmp"
    try:
        for n, (img, cls) in enumerate(zip(pictures, classes)):
            (tmp / cls).mkdir(parents=True, exist_ok=True)
            mode = img.mode if img.mode in ("L", "RGB") else "RGB"
            img.convert(mode).save(tmp / cls / f"{n:05d}.png", format="PNG")
        tmp.rename(folder)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise CSAEError(f"cannot write the images under {datasets_dir}: {e.strerror or e}. Fix: free disk space.") from None
    size = 32 if side <= 32 else 64 if side <= 64 else 128
    return ImageSet(folder=folder, classes=names, images=len(pictures), side=side, image_size=size)
