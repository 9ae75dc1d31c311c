"""User letters (uploads and the drawing canvas) -> EMNIST-style 28x28 model inputs, or a message.

Everything happens on the bytes in memory: nothing a user uploads is written to disk. The checks
(undecodable, over the pixel bound, animated/multi-frame, 1x1, blank) are csae_core.images'; here
they become one result object per file so a page can show the message instead of a traceback.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from csae_core.errors import CSAEError
from csae_core.images import decode_image, preprocess_letter, thumbnail

MAX_LETTERS = 26  # uploads processed per session; more are named in a warning, not decoded
CANVAS_MAX_PIXELS = 1024 * 1024  # the canvas is 200x200 (x the screen's pixel ratio); a bigger value is forged


@dataclass(frozen=True)
class LetterInput:
    """One user image: its EMNIST-style preprocessing steps (title, uint8 array), or why it was refused."""

    name: str
    steps: list[tuple[str, np.ndarray]] = field(default_factory=list)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def model_input(self) -> np.ndarray:
        """The 28x28 uint8 picture the models see (the last step)."""
        return self.steps[-1][1]


def prepare_image(name: str, data: bytes, max_pixels: int | None = None) -> LetterInput:
    """Decode and preprocess one image file given as bytes; CSAEError messages are returned, not raised.
    Only small thumbnails of the intermediate steps are kept (they live in the user's session state)."""
    try:
        img = decode_image(data, name) if max_pixels is None else decode_image(data, name, max_pixels)
        steps = preprocess_letter(img, name)
    except CSAEError as e:
        return LetterInput(name, error=str(e))
    except Exception:  # noqa: BLE001 - an image no check foresaw fails alone, not the page and the other uploads
        logging.getLogger("csae_explorer").exception("preprocessing upload %r failed", name)
        return LetterInput(name, error=f"{name} could not be processed. Fix: try another PNG or JPEG of one "
                                       f"written character.")
    return LetterInput(name, [(title, thumbnail(arr)) for title, arr in steps[:-1]] + [steps[-1]])


def prepare_canvas(drawn) -> LetterInput | None:
    """The drawing canvas' value -> a letter, or None while nothing is drawn.

    The value is a PNG data URL sent by the browser, so it is untrusted: only its bytes are taken
    (`image_bytes`, a base64 decode), and they go through decode_image's size check, which reads the
    PNG header before any pixel is decoded. `drawn.image_data` is never touched: it decodes the whole
    picture with plain PIL first.
    """
    data = getattr(drawn, "image_bytes", None) if drawn is not None else None
    if not data:
        return None
    item = prepare_image("drawing", data, max_pixels=CANVAS_MAX_PIXELS)
    if not item.ok and "blank" in (item.error or ""):
        return None  # an untouched canvas: a hint, not an error
    return item


def nearest_table(titles: list[str], nearest: dict[str, tuple[np.ndarray, np.ndarray]],
                  class_names: list[str]) -> list[dict]:
    """Rows for st.dataframe: per letter, each model's nearest class and the distance to its centroid."""
    rows = []
    for i, title in enumerate(titles):
        row = {"letter": title}
        for label, (classes, dist) in nearest.items():
            row[label] = f"{class_names[int(classes[i])]}  ({float(dist[i]):.2f})"
        rows.append(row)
    return rows
