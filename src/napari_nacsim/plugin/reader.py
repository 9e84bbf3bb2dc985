"""napari reader: NIfTI files, DICOM series folders and 2D images (with nacsim sidecars)."""

from __future__ import annotations

import os
from pathlib import Path

from ..core.errors import InputError
from ..core.scan import Scan
from ..core.scan_io import is_readable_path, read_scan
from .layers import guess_kind, scan_to_layer_data

NULL_LAYER = [(None,)]  # napari's sentinel for "read, but nothing to show"


def get_reader(path):
    """Return a reader for ``path`` or ``None`` to decline (napari then asks another plugin)."""
    if isinstance(path, (list, tuple)):
        if len(path) != 1:
            return None
        path = path[0]
    try:
        readable = is_readable_path(path)
    except OSError:
        return None
    return read_layers if readable else None


def read_layers(path: str | os.PathLike | list) -> list:
    """Read one scan into layer data; a bad file gives a notification, not a traceback."""
    from napari.utils.notifications import show_error

    if isinstance(path, (list, tuple)):
        path = path[0]
    try:
        scan = read_scan(Path(path))
        kind = guess_kind(scan)
        if kind != scan.kind:
            scan = read_scan(Path(path), kind=kind)
        _check_displayable(scan)
    except InputError as err:  # the same one-line reason the CLI gives
        show_error(f"nacsim could not open {err}")
        return NULL_LAYER
    except MemoryError:  # headers are checked first (scan_io.MAX_VOXELS); this is the rest
        show_error(f"nacsim could not open {path}: not enough memory to load it")
        return NULL_LAYER
    return [scan_to_layer_data(scan)]


def _check_displayable(scan: Scan) -> None:
    if scan.array.size == 0 or 0 in scan.shape:
        raise InputError(scan.name, f"image is empty (shape {scan.shape})")
    if scan.array.dtype.kind == "f":
        import numpy as np

        bad = int((~np.isfinite(scan.array)).sum())
        if bad:
            raise InputError(scan.name, f"contains {bad} NaN/Inf voxels")
