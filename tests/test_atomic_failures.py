"""Atomic writes under failures that strike after bytes have reached the disk: an existing
file or results folder is left byte for byte as it was, and no partial new one exists.

(The older tests make the failure fire before anything is written, which a writer that
writes straight to its destination also passes.)"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from napari_nacsim.core import atomic
from napari_nacsim.core.atomic import atomic_directory, atomic_path, write_json_atomic


class DiskFull(OSError):
    """The injected failure (a disk filling up half-way through a write)."""


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (hidden ones too) -> its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def half_then_fail(real_write, only: str = ""):
    """A stand-in for a write method: writes the first half of the data, then fails (where
    ``only`` is given: only for files whose name contains it; others are written)."""
    def write(self, data, *args, **kwargs):
        if only not in self.name:
            return real_write(self, data, *args, **kwargs)
        real_write(self, data[: len(data) // 2], *args, **kwargs)
        raise DiskFull(28, "No space left on device")
    return write


# --- one file ------------------------------------------------------------------------------

def test_failed_json_write_keeps_the_old_file_byte_for_byte(tmp_path, monkeypatch):
    path = tmp_path / "report.json"
    write_json_atomic(path, {"version": 1, "sizes": [1.0, 2.0]})
    before = snapshot(tmp_path)
    monkeypatch.setattr(Path, "write_text", half_then_fail(Path.write_text))
    with pytest.raises(DiskFull):
        write_json_atomic(path, {"version": 2, "sizes": list(range(1000))})
    assert snapshot(tmp_path) == before  # same bytes, no partial temporary left


def test_failed_write_of_a_new_file_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(Path, "write_text", half_then_fail(Path.write_text))
    with pytest.raises(DiskFull):
        write_json_atomic(tmp_path / "new.json", {"x": list(range(1000))})
    assert snapshot(tmp_path) == {}


def test_bytes_written_before_a_failure_never_reach_the_destination(tmp_path):
    path = tmp_path / "data.bin"
    path.write_bytes(b"old contents")
    with pytest.raises(DiskFull):
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                fh.write(b"new, partial")
                fh.flush()
                os.fsync(fh.fileno())          # the bytes are on the disk ...
            assert tmp.read_bytes() == b"new, partial"
            raise DiskFull(28, "No space left on device")  # ... then the writer fails
    assert snapshot(tmp_path) == {"data.bin": b"old contents"}


def test_failed_rename_keeps_the_old_file(tmp_path, monkeypatch):
    """The temporary is complete but the final rename fails: the old file stays."""
    path = tmp_path / "report.json"
    write_json_atomic(path, {"version": 1})
    before = snapshot(tmp_path)

    def failing_replace(src, dst):
        raise DiskFull(5, "Input/output error")

    monkeypatch.setattr(atomic.os, "replace", failing_replace)
    with pytest.raises(DiskFull):
        write_json_atomic(path, {"version": 2})
    assert snapshot(tmp_path) == before


# --- a folder ------------------------------------------------------------------------------

def test_failed_folder_write_keeps_the_old_folder(tmp_path):
    out = tmp_path / "run"
    with atomic_directory(out) as staging:
        (staging / "a.txt").write_text("old a")
        (staging / "sub").mkdir()
        (staging / "sub" / "b.txt").write_text("old b")
    before = snapshot(tmp_path)
    with pytest.raises(DiskFull):
        with atomic_directory(out) as staging:
            (staging / "a.txt").write_text("new a")   # some new files are complete ...
            with open(staging / "c.txt", "wb") as fh:  # ... one is half-written
                fh.write(b"partial")
            raise DiskFull(28, "No space left on device")
    assert snapshot(tmp_path) == before


def test_failed_swap_of_folders_keeps_the_old_folder(tmp_path, monkeypatch):
    """The new folder is complete, but moving it into place fails: the old folder must
    still be there, unchanged (it must not be deleted before the new one is in place)."""
    out = tmp_path / "run"
    with atomic_directory(out) as staging:
        (staging / "a.txt").write_text("old a")
    before = snapshot(tmp_path)
    real_replace = os.replace

    def failing_replace(src, dst):
        if Path(src).name.startswith(".run.partial-"):  # the staging folder into place
            raise DiskFull(5, "Input/output error")
        return real_replace(src, dst)

    monkeypatch.setattr(atomic.os, "replace", failing_replace)
    with pytest.raises(DiskFull):
        with atomic_directory(out) as staging:
            (staging / "a.txt").write_text("new a")
    assert snapshot(tmp_path) == before


# --- the results folder of a what-if run ---------------------------------------------------

class _Threshold:
    def segment(self, image):
        return image.derive((np.asarray(image.array) > 0.6).astype(np.uint8),
                            step="segment_tumour", kind="labels")


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    from generative_helpers import micro_model
    from napari_nacsim.core.scan import Scan, affine_from_spacing
    from napari_nacsim.engine import WhatIfRequest, WhatIfSession, load_model
    from napari_nacsim.science.generative.checkpoint import save_checkpoint

    folder = save_checkpoint(micro_model(seed=4), tmp_path_factory.mktemp("m") / "model",
                             {"title": "micro (atomic test)"})
    rng = np.random.default_rng(0)
    image = Scan(array=rng.random((16, 16)).astype(np.float32),
                 affine=affine_from_spacing((4.0, 4.0)))
    session = WhatIfSession(load_model(folder, device="cpu"), _Threshold())
    return session.run(image, WhatIfRequest(clinical={"HR": True, "HER2": False},
                                            target="T2", steps=1))


def test_interrupted_overwrite_of_a_results_folder_keeps_the_old_one(result, tmp_path,
                                                                      monkeypatch):
    """`write_result` over an earlier run fails after images are written and while the
    report is half on the disk: the earlier folder is unchanged, no partial one remains."""
    from napari_nacsim.engine.results import write_result

    out = tmp_path / "run"
    write_result(result, out, figure=False)
    before = snapshot(tmp_path)
    assert "run/report.json" in before and len(before) > 10
    # every image and sidecar is written, then report.json fails half-way
    monkeypatch.setattr(Path, "write_text", half_then_fail(Path.write_text, "report.json"))
    with pytest.raises(DiskFull):
        write_result(result, out, overwrite=True, figure=False)
    assert snapshot(tmp_path) == before
    monkeypatch.undo()
    # and an interrupted first write leaves no folder at all
    monkeypatch.setattr(Path, "write_text", half_then_fail(Path.write_text))
    with pytest.raises(DiskFull):
        write_result(result, tmp_path / "fresh", figure=False)
    assert not (tmp_path / "fresh").exists() and snapshot(tmp_path) == before


def test_overwrite_failing_at_the_final_swap_keeps_the_old_results(result, tmp_path,
                                                                   monkeypatch):
    from napari_nacsim.engine.results import write_result

    out = tmp_path / "run"
    first = write_result(result, out, figure=False)
    before = snapshot(tmp_path)
    real_replace = os.replace

    def failing_replace(src, dst):
        if Path(dst) == out and Path(src).name.startswith(".run.partial-"):
            raise DiskFull(5, "Input/output error")  # the new folder into place
        return real_replace(src, dst)

    monkeypatch.setattr(atomic.os, "replace", failing_replace)
    with pytest.raises(DiskFull):
        write_result(result, out, overwrite=True, figure=False)
    assert snapshot(tmp_path) == before
    monkeypatch.undo()
    report = write_result(result, out, overwrite=True, figure=False)  # works once it can
    assert json.loads((out / "report.json").read_text())["files"] == report["files"] == \
        first["files"]
