"""Saving the shown what-if run: a new, time-stamped folder inside a folder the user chooses,
in the format chosen beside the Save button — NIfTI (images, masks, sidecars), DICOM (image
series labelled SYNTHETIC, tumour SEGs, a TID 1500 size report, in ``dicom/``) or both —
with report.json and comparison.png in every case. What is written is what ``nacsim demo
--format`` writes for a run (`engine.dicom_export.write_result_as`), atomically.

`ResultSaver` writes off the UI thread (a DICOM export of a lung run takes seconds) and says
where the folder went, or why it was not written, in one napari notification. Each save is
a job of its own: a second save while one is written never drops the first, and a new
what-if run never cancels a save.
"""

from __future__ import annotations

import datetime
import logging
import threading
from pathlib import Path
from typing import Optional

from qtpy.QtWidgets import QComboBox, QFileDialog, QWidget

from ...core.errors import InputError

log = logging.getLogger(__name__)

# (format of `write_result_as`, what the combo says); the first is the default
SAVE_FORMATS = (("nifti", "NIfTI"), ("dicom", "DICOM (PACS)"), ("both", "NIfTI and DICOM"))
FOLDER_PREFIX = "nacsim-whatif-"
WAIT_ON_CLOSE_S = 60.0   # closing the workspace waits this long for a save being written


def save_result(result, folder: str | Path, fmt: str = "nifti") -> Path:
    """Write ``result`` in format ``fmt`` ("nifti", "dicom" or "both") into a new folder
    inside ``folder``; returns it. An `InputError` naming what went wrong: nothing generated
    yet, a folder that cannot be written, an input DICOM lacking an attribute a derived
    series needs. Nothing is left behind on failure."""
    from ...core.atomic import require_writable
    from ...engine.dicom_export import write_result_as

    if result is None:
        raise InputError("save", "nothing generated yet")
    require_writable(folder)   # a read-only folder: one line now, not an OSError later
    out = _new_folder(Path(folder))
    try:
        write_result_as(result, out, fmt)
    except OSError as err:
        raise InputError(out, err.strerror or str(err)) from None
    return out


def _new_folder(folder: Path) -> Path:
    """``nacsim-whatif-<time>`` inside ``folder``; a second save within the same second gets
    ``-2``, ``-3``… rather than failing on a folder that exists."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = folder / f"{FOLDER_PREFIX}{stamp}"
    k = 2
    while out.exists():
        out = folder / f"{FOLDER_PREFIX}{stamp}-{k}"
        k += 1
    return out


def saved_message(out: Path, fmt: str) -> str:
    """The notification after a save: what was written, and where."""
    from ...engine.dicom_export import DICOM_FOLDER

    dicom = (f"DICOM (series labelled SYNTHETIC, tumour SEGs, size report SR) in "
             f"{out / DICOM_FOLDER}")
    what = {"nifti": "NIfTI images, masks",
            "dicom": dicom,
            "both": f"NIfTI images, masks; {dicom}"}[fmt]
    return f"saved the synthetic follow-ups to {out}: {what}; report.json, comparison.png"


def choose_save_folder(parent: QWidget) -> Optional[str]:
    return QFileDialog.getExistingDirectory(parent, "Save the what-if results into…") or None


def fill_format_combo(combo: QComboBox) -> None:
    for fmt, label in SAVE_FORMATS:
        combo.addItem(label, fmt)
    combo.setToolTip("what Save results… writes: NIfTI files with sidecars; DICOM for a "
                     "PACS viewer (each image a new series labelled SYNTHETIC, the tumour "
                     "masks as SEG, the sizes as a TID 1500 SR; in the input's study when "
                     "it was DICOM); or both. report.json and comparison.png always")


class ResultSaver:
    """Saves runs in the format ``combo`` shows, each in a worker thread of its own."""

    def __init__(self, combo: QComboBox):
        self.combo = combo
        fill_format_combo(combo)
        self._workers: set = set()
        self._done = threading.Condition()
        self._writing = 0

    @property
    def format(self) -> str:
        return self.combo.currentData() or SAVE_FORMATS[0][0]

    @property
    def running(self) -> bool:
        return self._writing > 0

    def save_now(self, result, folder: str | Path, fmt: Optional[str] = None
                 ) -> Optional[Path]:
        """Write on the calling thread (scripts, tests); notifies as a save does."""
        fmt = fmt or self.format
        try:
            out = save_result(result, folder, fmt)
        except Exception as exc:  # noqa: BLE001 - every failure is one notification
            _failed(exc)
            return None
        _saved(out, fmt)
        return out

    def save(self, result, folder: str | Path, fmt: Optional[str] = None) -> None:
        """Write in a worker thread; the notification follows when it is written."""
        from napari.qt.threading import create_worker
        from napari.utils import progress
        from superqt.utils import FunctionWorker

        fmt = fmt or self.format
        if result is None:   # nothing to start a thread for
            _failed(InputError("save", "nothing generated yet"))
            return
        bar = progress(total=0, desc=f"nacsim: saving ({dict(SAVE_FORMATS)[fmt]})")

        def work() -> Path:
            try:
                return save_result(result, folder, fmt)
            finally:
                with self._done:
                    self._writing -= 1
                    self._done.notify_all()

        # errors go to our notification only (see plugin.background: napari's worker class
        # would add a traceback dialog)
        worker = create_worker(work, _start_thread=False, _ignore_errors=True,
                               _worker_class=FunctionWorker)
        worker.returned.connect(lambda out: _saved(out, fmt))
        worker.errored.connect(_failed)
        worker.finished.connect(lambda: (bar.close(), self._workers.discard(worker)))
        self._workers.add(worker)   # a worker nothing refers to could be collected mid-run
        with self._done:
            self._writing += 1
        worker.start()

    def wait(self, timeout_s: float = WAIT_ON_CLOSE_S) -> bool:
        """Wait for the saves being written (the workspace closing): a save is never cut
        off (it would leave nothing, being atomic, but the user asked for it)."""
        with self._done:
            return self._done.wait_for(lambda: self._writing == 0, timeout_s)


def _saved(out: Path, fmt: str) -> None:
    from napari.utils.notifications import show_info

    show_info(saved_message(out, fmt))


def _failed(exc: BaseException) -> None:
    from ..background import notify_error

    notify_error(exc, "saving the what-if results")
