"""Atomic writes under failures that strike after bytes have reached the disk: an existing
file or results folder is left byte for byte as it was, and no partial new one exists.

(The older tests make the failure fire before anything is written, which a writer that
writes straight to its destination also passes.) Also what the writers promise besides
atomicity (missing folders created, the temporary's suffix, the JSON layout) and the
refusal of an output that cannot be written; the modes of written files are in
test_atomic_modes.py."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from napari_nacsim.core import atomic
from napari_nacsim.core.atomic import (atomic_directory, atomic_path, require_writable,
                                       write_json_atomic)
from napari_nacsim.core.errors import InputError


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


def test_failure_moving_the_old_folder_aside_keeps_it_and_reports_that_failure(tmp_path,
                                                                              monkeypatch):
    """The first rename of an overwrite (the old folder aside) fails: nothing was moved, so
    nothing is put back, the old folder is as it was and the caller sees the real cause."""
    out = tmp_path / "run"
    with atomic_directory(out) as staging:
        (staging / "a.txt").write_text("old a")
    before = snapshot(tmp_path)
    real_replace = os.replace

    def failing_replace(src, dst):
        if Path(src) == out:
            raise DiskFull(5, "Input/output error")
        return real_replace(src, dst)

    monkeypatch.setattr(atomic.os, "replace", failing_replace)
    with pytest.raises(DiskFull):
        with atomic_directory(out) as staging:
            (staging / "a.txt").write_text("new a")
    assert snapshot(tmp_path) == before


# --- what the writers promise besides atomicity --------------------------------------------

def test_missing_parent_folders_are_created(tmp_path):
    write_json_atomic(tmp_path / "a" / "b" / "report.json", {"x": 1})
    with atomic_directory(tmp_path / "c" / "d" / "run") as staging:
        (staging / "f.txt").write_text("f")
    assert snapshot(tmp_path) == {"a/b/report.json": b'{\n  "x": 1\n}\n', "c/d/run/f.txt": b"f"}


def test_the_temporary_keeps_the_full_suffix_beside_the_destination(tmp_path):
    """Writers such as nibabel pick the format from the name (``.nii.gz``)."""
    with atomic_path(tmp_path / "scan.nii.gz") as tmp:
        assert tmp.parent == tmp_path and tmp.name.endswith(".nii.gz")
        tmp.write_bytes(b"x")


def test_json_is_written_indented_in_the_callers_key_order_with_numpy_and_paths(tmp_path):
    path = write_json_atomic(tmp_path / "r.json", {
        "zeta": np.float32(1.5), "alpha": np.arange(2), "path": Path("cases") / "c1"})
    assert path.read_text() == ('{\n  "zeta": 1.5,\n  "alpha": [\n    0,\n    1\n  ],\n'
                                '  "path": "cases/c1"\n}\n')
    with pytest.raises(TypeError, match="not JSON serialisable: object"):
        write_json_atomic(tmp_path / "bad.json", {"x": object()})
    assert not (tmp_path / "bad.json").exists()


# --- refusing an output that cannot be written, before any work ----------------------------

class _NoFilesHere:
    """Stands in for the `tempfile` module in atomic.py: no file can be created anywhere
    (what a read-only folder does; permission bits do not stop root, who runs CI here)."""
    def __init__(self):
        self.tried = []

    def TemporaryFile(self, dir):
        self.tried.append(Path(dir))
        raise PermissionError(13, "Permission denied")


def test_require_writable_accepts_a_new_file_in_new_folders(tmp_path):
    require_writable(tmp_path / "a" / "b" / "out.json")   # nearest existing folder: tmp_path
    require_writable(tmp_path)
    assert snapshot(tmp_path) == {} and list(tmp_path.iterdir()) == []  # its probe removed


def test_require_writable_refuses_a_path_below_a_file(tmp_path):
    (tmp_path / "f.txt").write_text("a file")
    target = tmp_path / "f.txt" / "sub" / "out.json"
    with pytest.raises(InputError) as err:
        require_writable(target)
    assert str(err.value) == f"{target}: cannot be written: {tmp_path / 'f.txt'} is a file, " \
                             "not a folder"


@pytest.mark.parametrize("below", [(), ("a", "b", "out.json")], ids=["folder", "new-file"])
def test_require_writable_names_the_folder_that_refuses_files(tmp_path, monkeypatch, below):
    fake = _NoFilesHere()
    monkeypatch.setattr(atomic, "tempfile", fake)
    target = tmp_path.joinpath(*below)
    with pytest.raises(InputError) as err:
        require_writable(target)
    assert fake.tried == [tmp_path]                 # the folder itself / the nearest existing
    assert str(err.value) == f"{target}: cannot be written: no files can be created in " \
                             f"{tmp_path} (Permission denied)"


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
