"""Saving the shown what-if run: a new, time-stamped folder of images, masks, report.json
and comparison.png (`engine.results.write_result`), inside a folder the user chooses."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Optional

from qtpy.QtWidgets import QFileDialog, QWidget

from ...core.errors import InputError


def save_result(result, folder: str | Path) -> Path:
    """Write ``result`` into a new folder inside ``folder``; returns it. An `InputError`
    naming what went wrong (nothing generated yet, a folder that cannot be written)."""
    from ...engine.results import write_result

    if result is None:
        raise InputError("save", "nothing generated yet")
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = Path(folder) / f"nacsim-whatif-{stamp}"
    try:
        write_result(result, out)
    except OSError as err:
        raise InputError(out, str(err)) from None
    return out


def choose_save_folder(parent: QWidget) -> Optional[str]:
    return QFileDialog.getExistingDirectory(parent, "Save the what-if results into…") or None
