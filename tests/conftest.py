"""Shared fixtures: small scans written in the formats users bring."""

from __future__ import annotations

import os

# Keep numerical libraries within a 2-core CI machine and deterministic.
os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", "1")  # 2 threads: not bit-identical

import nibabel as nib
import numpy as np
import pytest


def oblique_affine() -> np.ndarray:
    """A non-trivial geometry: LPS-like flips, anisotropic spacing, small rotation, origin."""
    angle = np.deg2rad(7.0)
    rot = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0],
                    [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rot @ np.diag([-0.8, -0.7, 2.5])
    affine[:3, 3] = [120.0, 95.0, -40.0]
    return affine


@pytest.fixture
def volume() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.normal(100, 20, size=(6, 20, 24)).astype(np.float32)  # (z, y, x)


@pytest.fixture
def nifti_file(tmp_path, volume):
    """A NIfTI volume with an oblique affine; returns (path, zyx array, affine)."""
    path = tmp_path / "scan.nii.gz"
    nib.save(nib.Nifti1Image(volume.T.copy(), oblique_affine()), str(path))
    return path, volume, oblique_affine()


@pytest.fixture
def dicom_folder(tmp_path, volume):
    """A DICOM series (one file per slice) of ``volume`` with spacing (x, y, z) =
    (0.8, 0.7, 2.5) mm and LPS origin (-10, 20, 5)."""
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(volume.astype(np.int16))
    image.SetSpacing((0.8, 0.7, 2.5))
    image.SetOrigin((-10.0, 20.0, 5.0))
    folder = tmp_path / "dicom"
    folder.mkdir()
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(image.GetDepth()):
        sl = image[:, :, k]
        position = "\\".join(map(str, image.TransformIndexToPhysicalPoint((0, 0, k))))
        for tag, value in {"0020|000e": "1.2.826.0.1.3680043.2.1125.1",
                           "0020|0032": position, "0020|0037": "1\\0\\0\\0\\1\\0",
                           "0020|0013": str(k), "0008|0060": "MR"}.items():
            sl.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"slice{k:03d}.dcm"))
        writer.Execute(sl)
    return folder


@pytest.fixture
def told(monkeypatch):
    """The napari notifications shown during a test, as (kind, text)."""
    import napari.utils.notifications as notifications

    messages: list[tuple[str, str]] = []
    for kind in ("error", "warning", "info"):
        monkeypatch.setattr(notifications, f"show_{kind}",
                            lambda m, kind=kind: messages.append((kind, m)))
    return messages
