"""Folders napari's own reader declines (issue 24, item 11): an empty folder, a patient
folder of NIfTI scans, a folder with a looping or broken link. nacsim opens what can be
opened, one layer per scan, and says in one notification why the rest cannot."""

from __future__ import annotations

import os

import numpy as np
import pytest

from napari_nacsim.core.scan import IMAGE, LABELS, Scan, affine_from_spacing
from napari_nacsim.core.scan_io import write_scan
from napari_nacsim.plugin.reader import NULL_LAYER, get_reader


@pytest.fixture
def told(monkeypatch):
    import napari.utils.notifications as notifications

    messages: list[tuple[str, str]] = []
    monkeypatch.setattr(notifications, "show_error", lambda m: messages.append(("error", m)))
    monkeypatch.setattr(notifications, "show_warning",
                        lambda m: messages.append(("warning", m)))
    return messages


@pytest.fixture
def patient_folder(tmp_path):
    """T0_pre, T0_post (NIfTI + sidecars), a tumour mask, notes, a loop and a broken link."""
    folder = tmp_path / "BR0001"
    folder.mkdir()
    affine = affine_from_spacing([2.0, 0.8, 0.8])
    rng = np.random.default_rng(0)
    for name in ("T0_pre", "T0_post"):
        write_scan(Scan(array=rng.random((4, 16, 16)).astype(np.float32), affine=affine,
                        kind=IMAGE), folder / f"{name}.nii.gz")
    mask = np.zeros((4, 16, 16), np.uint8)
    mask[1:3, 4:9, 4:9] = 1
    write_scan(Scan(array=mask, affine=affine, kind=LABELS), folder / "T0_tumour.nii.gz")
    (folder / "notes.txt").write_text("follow-up in 3 weeks")
    os.symlink(folder, folder / "loop")               # a link back into its own folder
    os.symlink(folder / "gone.nii.gz", folder / "broken.nii.gz")
    return folder


def test_patient_folder_opens_every_scan_and_says_why_not_the_rest(patient_folder, told):
    reader = get_reader(str(patient_folder))
    assert reader is not None                         # napari's builtins decline folders
    layers = reader(str(patient_folder))
    names = sorted(kwargs["name"] for _, kwargs, _ in layers)
    assert names == ["T0_post", "T0_pre", "T0_tumour"]
    kinds = {kwargs["name"]: kind for _, kwargs, kind in layers}
    assert kinds["T0_tumour"] == "labels"
    assert len(told) == 1 and told[0][0] == "warning"
    text = told[0][1]
    assert "\n" not in text and "BR0001" in text
    assert "notes.txt: not a scan" in text
    assert "loop: a link back into its own folder" in text
    assert "broken.nii.gz: a broken link" in text
    assert ".json" not in text                        # sidecars are not problems


def test_empty_folder_says_so(tmp_path, told):
    empty = tmp_path / "empty"
    empty.mkdir()
    reader = get_reader(str(empty))
    assert reader is not None and reader(str(empty)) == NULL_LAYER
    assert len(told) == 1 and told[0][0] == "error"
    assert str(empty) in told[0][1] and "holds no scan" in told[0][1]


def test_folder_of_unreadable_files_names_each(tmp_path, told):
    folder = tmp_path / "junk"
    folder.mkdir()
    (folder / "a.txt").write_text("x")
    (folder / "bad.nii.gz").write_bytes(b"not a nifti")
    assert get_reader(str(folder))(str(folder)) == NULL_LAYER
    (kind, text), = told
    assert kind == "error" and "a.txt: not a scan" in text and "bad.nii.gz:" in text


@pytest.mark.viewer
def test_napari_opens_the_patient_folder(make_napari_viewer, patient_folder, told):
    """File → Open Folder, nacsim chosen (napari's builtin reader claims folders too, so
    napari asks, as `napari --plugin nacsim FOLDER` answers): the scans open, no "no
    reader" error."""
    viewer = make_napari_viewer()
    viewer.open(str(patient_folder), plugin="nacsim")
    assert sorted(layer.name for layer in viewer.layers) == ["T0_post", "T0_pre",
                                                             "T0_tumour"]
