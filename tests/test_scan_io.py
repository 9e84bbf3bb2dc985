"""Reading and writing scans: geometry is preserved, bad files give one-line errors."""

from __future__ import annotations

import gzip
import json

import nibabel as nib
import numpy as np
import pytest

from napari_nacsim.core.errors import InputError
from napari_nacsim.core.scan import Scan, affine_from_spacing, check_image_values
from napari_nacsim.core.scan_io import read_scan, sidecar_path, write_scan


def test_nifti_read_keeps_spacing_orientation_and_axis_order(nifti_file):
    path, volume, affine = nifti_file
    scan = read_scan(path)
    assert scan.shape == volume.shape  # (z, y, x)
    np.testing.assert_array_equal(scan.array, volume)
    np.testing.assert_allclose(scan.affine, affine)
    np.testing.assert_allclose(scan.spacing, (2.5, 0.7, 0.8))
    assert scan.orientation == "LPS"
    assert scan.source == path


def test_nifti_round_trip_with_sidecar(tmp_path, nifti_file):
    path, volume, affine = nifti_file
    scan = read_scan(path)
    out = write_scan(scan.derive(scan.array * 2, step="double"), tmp_path / "out" / "x.nii.gz")
    back = read_scan(out)
    np.testing.assert_allclose(back.array, volume * 2)
    np.testing.assert_allclose(back.affine, affine, atol=1e-5)
    assert back.orientation == "LPS"
    side = json.loads(sidecar_path(out).read_text())
    assert side["spacing_mm"] == pytest.approx([2.5, 0.7, 0.8])
    assert side["provenance"]["derived_from"] == str(path)
    assert side["provenance"]["history"][-1]["step"] == "double"
    assert side["synthetic"] is False
    # The input file is untouched.
    np.testing.assert_array_equal(np.asanyarray(nib.load(str(path)).dataobj).T, volume)


def test_2d_scan_round_trip_and_labels(tmp_path):
    mip = Scan(np.arange(12, dtype=np.float32).reshape(3, 4), affine_from_spacing((0.6, 0.9)),
               provenance={"synthetic": True})
    out = write_scan(mip, tmp_path / "mip.nii")
    back = read_scan(out)
    assert back.ndim == 2 and back.shape == (3, 4)
    np.testing.assert_allclose(back.spacing, (0.6, 0.9))
    assert back.provenance["synthetic"] is True
    assert nib.load(str(out)).header["descrip"].tobytes().startswith(b"nacsim SYNTHETIC")

    mask = Scan(np.array([[0, 1], [2, 0]], np.int64), affine_from_spacing((1, 1)), kind="labels")
    back = read_scan(write_scan(mask, tmp_path / "mask.nii.gz"))
    assert back.kind == "labels" and back.array.dtype == np.uint8
    np.testing.assert_array_equal(back.array, [[0, 1], [2, 0]])


def test_dicom_series_folder(dicom_folder, volume):
    folder = dicom_folder
    scan = read_scan(folder)
    assert scan.shape == volume.shape
    np.testing.assert_array_equal(scan.array, volume.astype(np.int16))
    np.testing.assert_allclose(scan.spacing, (2.5, 0.7, 0.8), atol=1e-4)
    # DICOM is LPS; nacsim stores RAS: x and y origins flip sign.
    np.testing.assert_allclose(scan.affine[:3, 3], (10.0, -20.0, 5.0), atol=1e-4)
    assert scan.orientation == "LPS"


def test_png_reads_as_2d_with_unknown_spacing(tmp_path):
    import imageio.v3 as iio

    iio.imwrite(tmp_path / "mip.png", (np.arange(64).reshape(8, 8) * 3).astype(np.uint8))
    scan = read_scan(tmp_path / "mip.png")
    assert scan.shape == (8, 8)
    assert scan.provenance["spacing_known"] is False


# --- bad input -----------------------------------------------------------------------------

def _one_line(err: InputError, name: str) -> None:
    text = str(err)
    assert "\n" not in text and name in text


def test_truncated_nifti(tmp_path, nifti_file):
    path, _, _ = nifti_file
    bad = tmp_path / "truncated.nii.gz"
    bad.write_bytes(path.read_bytes()[:200])
    with pytest.raises(InputError, match="corrupt or truncated") as err:
        read_scan(bad)
    _one_line(err.value, "truncated.nii.gz")


def test_corrupt_nifti(tmp_path):
    bad = tmp_path / "garbage.nii"
    bad.write_bytes(b"this is not a nifti header" * 20)
    with pytest.raises(InputError, match="garbage.nii") as err:
        read_scan(bad)
    _one_line(err.value, "garbage.nii")


def test_gzip_of_garbage(tmp_path):
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(gzip.compress(b"\x00" * 100))
    with pytest.raises(InputError, match="bad.nii.gz"):
        read_scan(bad)


def test_unsupported_and_missing(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(InputError, match="unsupported file type '.txt'"):
        read_scan(tmp_path / "notes.txt")
    with pytest.raises(InputError, match="does not exist"):
        read_scan(tmp_path / "nope.nii.gz")
    empty = tmp_path / "empty_dir"
    empty.mkdir()
    with pytest.raises(InputError, match="no DICOM series"):
        read_scan(empty)


def test_4d_is_refused(tmp_path):
    path = tmp_path / "dce4d.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 3, 5), np.float32), np.eye(4)), str(path))
    with pytest.raises(InputError, match="4D image.*split 4D series"):
        read_scan(path)


@pytest.mark.parametrize("values, problem", [
    (np.full((3, 4, 5), np.nan, np.float32), "NaN/Inf"),
    (np.full((3, 4, 5), 7.0, np.float32), "constant"),
    (np.zeros((0, 4, 5), np.float32), "empty"),
])
def test_image_value_checks(values, problem):
    with pytest.raises(InputError, match=problem):
        check_image_values(Scan(values, np.eye(4)), "T0 pre")


def test_writer_refuses_inputs_and_existing(tmp_path, nifti_file):
    path, _, _ = nifti_file
    scan = read_scan(path)
    with pytest.raises(InputError, match="refusing to write over an input"):
        write_scan(scan, path, overwrite=True)
    with pytest.raises(InputError, match="refusing to write over an input"):
        write_scan(scan.derive(scan.array + 1, step="x"), path, overwrite=True)
    target = tmp_path / "new.nii.gz"
    write_scan(scan, target)
    with pytest.raises(InputError, match="already exists"):
        write_scan(scan, target)
    with pytest.raises(InputError, match="must end in .nii"):
        write_scan(scan, tmp_path / "x.png")


def test_failed_write_leaves_nothing(tmp_path, monkeypatch):
    scan = Scan(np.ones((2, 3, 4), np.float32), np.eye(4))

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(nib, "save", boom)
    with pytest.raises(OSError):
        write_scan(scan, tmp_path / "x.nii.gz")
    assert list(tmp_path.iterdir()) == []


def test_written_files_get_normal_permissions(tmp_path):
    import os
    import stat

    out = write_scan(Scan(np.ones((2, 3, 4), np.float32), np.eye(4)), tmp_path / "p.nii.gz")
    mask = os.umask(0)
    os.umask(mask)
    for path in (out, sidecar_path(out)):
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask
