"""Cancellation and progress for long engine calls (generation, segmentation, cohort review).

The engine never knows who is watching: the CLI passes nothing, the napari widgets pass a
`CancelToken` they can trip from the UI thread and a progress callback that forwards to a
progress bar. Cancellation is cooperative: the engine checks the token between steps (every
sampler step, every segmentation, every patient), so a cancelled run stops within one step.
"""

from __future__ import annotations

import threading
from typing import Callable, Optional

Progress = Callable[[int, int, str], None]  # (done, total, what is happening)


class Cancelled(Exception):
    """Raised inside a run whose `CancelToken` was tripped; not an error."""


class CancelToken:
    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def check(self) -> None:
        if self._event.is_set():
            raise Cancelled()


class Steps:
    """Counts the steps of a run made of stages and reports each one (checking the token)."""

    def __init__(self, total: int, progress: Optional[Progress] = None,
                 cancel: Optional[CancelToken] = None):
        self.total, self.done = max(1, int(total)), 0
        self._progress, self._cancel = progress, cancel

    def check(self) -> None:
        if self._cancel is not None:
            self._cancel.check()

    def advance(self, n: int = 1, what: str = "") -> None:
        self.check()
        self.done = min(self.total, self.done + n)
        if self._progress is not None:
            self._progress(self.done, self.total, what)
