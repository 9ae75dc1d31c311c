"""Model passes over test images, one at a time per process, a page's own before prefetches.

One at a time: 16 sessions opening Reconstructions at once would otherwise put 16 torch threads on 2 cores,
and every cheap rerun (another user's β move, a cache lookup) would get a 16th of a core. Queued, the passes
take the same total time and the moves keep a core.

A page's own before prefetches: the Reconstructions page computes the grids of the other β after its own
(so the next move is a lookup), and the warm-up precomputes every view's first draw. Those are background
passes: a pass some page is waiting to show goes first, so the 16th user to open a page waits for up to
15 first grids, not for 15 × 5.
"""
from __future__ import annotations

import threading
from contextlib import contextmanager

_local = threading.local()


class PassQueue:
    """A lock for model passes in which foreground passes overtake waiting background ones."""

    def __init__(self) -> None:
        self._cv = threading.Condition()
        self._busy = False
        self._foreground_waiting = 0

    def __enter__(self) -> "PassQueue":
        foreground = not getattr(_local, "background", False)
        with self._cv:
            self._foreground_waiting += foreground
            try:
                self._cv.wait_for(lambda: not self._busy and (foreground or not self._foreground_waiting))
            finally:
                self._foreground_waiting -= foreground
            self._busy = True
        return self

    def __exit__(self, *exc) -> None:
        with self._cv:
            self._busy = False
            self._cv.notify_all()


@contextmanager
def background():
    """Passes started inside this block (in this thread) let any foreground pass go first."""
    before = getattr(_local, "background", False)
    _local.background = True
    try:
        yield
    finally:
        _local.background = before
