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
