"""Run engine jobs off napari's UI thread: one at a time, the newest wins.

A widget submits a job (a function of a `CancelToken` and a progress callback). If a job is
already running, it is cancelled and the new one waits for it to stop — only the newest
submission is kept, so rapid toggling supersedes stale runs instead of queueing them. A
result is delivered only if it answers the newest submission, so the viewer never shows a
stale result. Progress goes to a napari progress bar (activity dock; not for the quick jobs
of a runner made with ``activity=False``) and to the widget.

The threads come from napari's `create_worker` (superqt); cancellation is the engine's
cooperative `CancelToken`, checked at every sampler step and segmentation.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Callable, Optional

from qtpy.QtCore import QObject, Signal

from ..core.errors import InputError
from ..engine.jobs import Cancelled, CancelToken, Progress

log = logging.getLogger(__name__)

Job = Callable[[CancelToken, Progress], Any]


class BackgroundRunner(QObject):
    """Runs the newest submitted job in a worker thread (see module docstring)."""

    progressed = Signal(int, int, str)       # done, total, what (queued to the UI thread)
    state_changed = Signal(str)              # "running", "idle", "cancelled", "failed"

    def __init__(self, description: str = "nacsim", parent: Optional[QObject] = None, *,
                 activity: bool = True):
        super().__init__(parent)
        self.description = description
        self.activity = activity  # a bar in napari's activity dock per job
        self._ticket = 0
        self._running: Optional[tuple[int, CancelToken, Any]] = None
        self._pending: Optional[tuple[int, Job, Callable, Optional[Callable]]] = None
        self._idle = threading.Event()
        self._idle.set()
        self._pbar = None
        self.progressed.connect(self._on_progress)

    # --- public -------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._running is not None

    @property
    def latest(self) -> int:
        return self._ticket

    def submit(self, job: Job, on_result: Callable[[Any], None],
               on_error: Optional[Callable[[Exception], None]] = None) -> int:
        """Run ``job`` as soon as the current one (if any) has stopped; returns its ticket."""
        self._ticket += 1
        self._pending = (self._ticket, job, on_result, on_error)
        if self._running is not None:
            self._running[1].cancel()       # superseded: stop within one step
        else:
            self._start_pending()
        return self._ticket

    def cancel(self) -> None:
        """Cancel the running job and drop any waiting one."""
        self._pending = None
        if self._running is not None:
            self._running[1].cancel()
            self.state_changed.emit("cancelled")

    def shutdown(self, timeout_s: float = 30.0) -> bool:
        """Cancel everything and wait for the worker thread to end (widget closing)."""
        self.cancel()
        return self._idle.wait(timeout_s)

    # --- internals ----------------------------------------------------------------------
    def _start_pending(self) -> None:
        from napari.qt.threading import create_worker

        ticket, job, on_result, on_error = self._pending
        self._pending = None
        token = CancelToken()

        def work():
            try:
                keep_triton_out()
                return job(token, lambda d, n, what="": self.progressed.emit(int(d), int(n),
                                                                             str(what)))
            finally:
                self._idle.set()

        self._idle.clear()
        from superqt.utils import FunctionWorker

        # Errors go to our handlers only: napari's worker class would also show each one as
        # a traceback and superqt would re-raise it in the UI thread (every cancel, every
        # bad file).
        worker = create_worker(work, _start_thread=False, _ignore_errors=True,
                               _worker_class=FunctionWorker)
        worker.returned.connect(lambda value: self._on_returned(ticket, value, on_result,
                                                                on_error))
        worker.errored.connect(lambda exc: self._on_errored(ticket, exc, on_error))
        worker.finished.connect(self._on_finished)
        self._running = (ticket, token, worker)
        self._open_progress()
        self.state_changed.emit("running")
        worker.start()

    def _open_progress(self) -> None:
        from napari.utils import progress

        self._close_progress()
        if not self.activity:
            return
        self._pbar = progress(total=0, desc=self.description)

    def _close_progress(self) -> None:
        if self._pbar is not None:
            self._pbar.close()
            self._pbar = None

    def _on_progress(self, done: int, total: int, what: str) -> None:
        pbar = self._pbar  # napari may process events while updating: keep our reference
        if pbar is None:
            return
        if pbar.total != total:
            pbar.total = total
        pbar.n = done
        if what:
            pbar.set_description(f"{self.description}: {what}")
        pbar.refresh()

    def _on_returned(self, ticket: int, value: Any, on_result: Callable,
                     on_error: Optional[Callable] = None) -> None:
        if ticket != self._ticket or self._pending is not None:
            return  # a newer request exists; this result is stale and dropped
        try:
            on_result(value)  # the newest request: show it
        except Exception as exc:  # noqa: BLE001 — showing failed: say so, never hang
            # (an exception escaping a Qt slot would leave the widget saying "generating…"
            # with its buttons as they were; it goes where a failed job goes instead)
            log.error("nacsim: showing the result of %s failed", self.description,
                      exc_info=exc)
            self.state_changed.emit("failed")
            (on_error or notify_error)(exc)

    def _on_errored(self, ticket: int, exc: Exception, on_error: Optional[Callable]) -> None:
        if isinstance(exc, Cancelled) or ticket != self._ticket:
            return
        self.state_changed.emit("failed")
        if on_error is not None:
            on_error(exc)
        else:
            notify_error(exc)

    def _on_finished(self) -> None:
        self._running = None
        self._close_progress()
        if self._pending is not None:
            self._start_pending()
        else:
            self.state_changed.emit("idle")


class StopsWhenClosed:
    """For dock widgets that own a `BackgroundRunner`: ``shutdown()`` runs when the widget is
    closed, when napari's dock close button takes it out of its dock, and when the viewer
    window closes — so no run outlives its widget. (Put it before QWidget in the bases; the
    widget defines ``shutdown``: cancel its runner and wait for the thread.)"""

    def closeEvent(self, event) -> None:  # noqa: N802 (Qt)
        self.shutdown()
        super().closeEvent(event)

    def changeEvent(self, event) -> None:  # noqa: N802
        from qtpy.QtCore import QEvent

        # napari's close button takes the widget out of its dock (parent None)
        if event.type() == QEvent.ParentChange and self.parent() is None:
            self.shutdown()
        super().changeEvent(event)

    def hideEvent(self, event) -> None:  # noqa: N802
        from qtpy.QtWidgets import QMainWindow

        window = self.window()  # a floating dock is a window of its own: not a close
        if isinstance(window, QMainWindow) and window.isHidden():  # the viewer is closing
            self.shutdown()
        super().hideEvent(event)


def keep_triton_out() -> None:
    """Never load triton inside a running napari on a machine without CUDA.

    triton ships its own LLVM; loading it into a process whose OpenGL is Mesa's llvmpipe
    (software rendering: VMs, remote desktops, Xvfb) crashes the process with a segmentation
    fault. diffusers probes for triton on import (`torch.utils._triton`); without CUDA triton
    has nothing to do, so the probe is answered "not installed" (the None entry makes
    ``import triton`` raise ImportError, which the probe expects).
    """
    import sys

    if "triton" in sys.modules:
        return
    import torch

    if not torch.cuda.is_available():
        sys.modules["triton"] = None  # type: ignore[assignment]


def notify_error(exc: BaseException, context: str = "") -> None:
    """A one-line napari notification: input problems as they are, anything else with its
    type (the traceback goes to the log, not to the user)."""
    from napari.utils.notifications import show_error

    if isinstance(exc, InputError):
        message = str(exc)
    else:
        log.error("nacsim: %s failed", context or "a run", exc_info=exc)
        message = f"{context + ' failed: ' if context else ''}{type(exc).__name__}: {exc}"
    show_error(message.splitlines()[0] if message else type(exc).__name__)
