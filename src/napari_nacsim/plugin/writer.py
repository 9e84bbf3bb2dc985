"""napari writers: image and labels layers as NIfTI plus the JSON provenance sidecar."""

from __future__ import annotations

from typing import Any

from ..core.atomic import require_writable
from ..core.errors import InputError
from ..core.scan import IMAGE, LABELS
from ..core.scan_io import write_scan
from .layers import layer_to_scan


def _write(path: str, data: Any, meta: dict, kind: str) -> list[str]:
    from napari.utils.notifications import show_error

    try:
        require_writable(path)  # a notification, not a PermissionError traceback
        scan = layer_to_scan(data, meta, kind)
        # napari's save dialog has already confirmed overwriting; inputs stay protected.
        written = write_scan(scan, path, overwrite=True)
    except InputError as err:
        show_error(f"nacsim could not save: {err}")
        return []
    return [str(written)]


def write_image(path: str, data: Any, meta: dict) -> list[str]:
    return _write(path, data, meta, IMAGE)


def write_labels(path: str, data: Any, meta: dict) -> list[str]:
    return _write(path, data, meta, LABELS)
