"""Bad input that used to get through (issue 15): each class gets a one-line refusal naming
the file and the problem (CLI: exit status 2; napari reader: a notification, no layer) or a
correct result. Files are small and synthetic, built in ``tmp_path``.

The CLI runs in-process with ``capfd``, which also captures what C libraries (ITK) write to
the stderr file descriptor: "one line" means one line there too.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from napari_nacsim.cli.main import main
from napari_nacsim.core.scan_io import MAX_VOXELS, read_scan
from napari_nacsim.plugin.reader import NULL_LAYER, get_reader


def run(capfd, *argv):
    code = main([str(a) for a in argv])
    out, err = capfd.readouterr()
    return code, out, err


def refused(capfd, *argv, needles=()) -> str:
    """Run a command that must refuse its input; returns the error line."""
    code, _, err = run(capfd, *argv)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, err
    assert lines[0].startswith("nacsim: error: ")
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0][len("nacsim: error: "):]


@pytest.fixture
def torch_beside_napari():
    """For tests that load torch models in-process: a napari viewer of another test may
    already be up in this process, and triton loaded after it crashes under Xvfb (see
    docs/workspace.md, "One crash avoided")."""
    from napari_nacsim.plugin.background import keep_triton_out

    keep_triton_out()


@pytest.fixture
def notifications(monkeypatch):
    import napari.utils.notifications as napari_notifications

    shown: list[str] = []
    monkeypatch.setattr(napari_notifications, "show_error", shown.append)
    return shown


def open_in_napari(path, notifications) -> str | list:
    """What the napari reader does with ``path``: the notification text if it refused,
    else the layer data."""
    reader = get_reader(str(path))
    assert reader is not None, f"the reader declined {path}"  # napari's "refused the file"
    layers = reader(str(path))
    if notifications:
        assert layers == NULL_LAYER and len(notifications) == 1
        assert "\n" not in notifications[0]
        return notifications.pop()
    return layers


def same_reason(cli_error: str, notification: str) -> None:
    assert notification == f"nacsim could not open {cli_error}"


def save_nifti(path: Path, data: np.ndarray, affine=None) -> Path:
    nib.save(nib.Nifti1Image(data, np.eye(4) if affine is None else affine), str(path))
    return path


# --- colour 2D images ----------------------------------------------------------------------

def test_colour_images_grey_ones_read_as_grey_colour_ones_refused(tmp_path, capfd,
                                                                   notifications):
    import imageio.v3 as iio

    grey = np.add.outer(np.arange(24) * 4, np.arange(32) * 3).astype(np.uint8)  # smooth
    opaque = np.full_like(grey, 255)
    grey_like = {"rgb.png": np.stack([grey] * 3, -1),
                 "rgba.png": np.stack([grey] * 3 + [opaque], -1),
                 "grey_alpha.png": np.stack([grey, opaque], -1),
                 "rgb.jpg": np.stack([grey] * 3, -1)}
    for name, data in grey_like.items():
        iio.imwrite(tmp_path / name, data)
        scan = read_scan(tmp_path / name)
        tolerance = 8 if name.endswith(".jpg") else 0  # lossy, but channels stay equal
        assert scan.shape == grey.shape and np.abs(scan.array - grey).max() <= tolerance, name
    code, out, _ = run(capfd, "info", tmp_path / "rgba.png")
    assert code == 0 and "shape: (24, 32) (yx)" in out
    layers = open_in_napari(tmp_path / "rgb.png", notifications)
    np.testing.assert_array_equal(layers[0][0], grey)

    colour = np.stack([grey, 255 - grey, grey // 2], -1)
    iio.imwrite(tmp_path / "overlay.png", colour)
    transparent = np.stack([grey] * 3 + [np.where(grey > 128, 255, 0).astype(np.uint8)], -1)
    iio.imwrite(tmp_path / "transparent.png", transparent)
    error = refused(capfd, "info", tmp_path / "overlay.png",
                    needles=("overlay.png: is a colour image", "greyscale"))
    same_reason(error, open_in_napari(tmp_path / "overlay.png", notifications))
    refused(capfd, "segment", "--family", "breast", tmp_path / "transparent.png", "--out",
            tmp_path / "mask.nii.gz", needles=("transparent.png", "transparent pixels"))
    assert not (tmp_path / "mask.nii.gz").exists()


# --- DICOM folders -------------------------------------------------------------------------

def write_dicom_series(folder: Path, volume: np.ndarray, uid: str, number: int,
                       description: str, prefix: str, skip=()) -> None:
    """One file per slice, spacing (x, y, z) = (0.8, 0.7, 2.5) mm; ``skip`` leaves slices
    out (a series with missing slices)."""
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(volume.astype(np.int16))
    image.SetSpacing((0.8, 0.7, 2.5))
    folder.mkdir(exist_ok=True)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(image.GetDepth()):
        if k in skip:
            continue
        sl = image[:, :, k]
        position = "\\".join(map(str, image.TransformIndexToPhysicalPoint((0, 0, k))))
        for tag, value in {"0020|000e": uid, "0020|0011": str(number), "0008|103e": description,
                           "0020|0032": position, "0020|0037": "1\\0\\0\\0\\1\\0",
                           "0020|0013": str(k + 1), "0008|0060": "MR"}.items():
            sl.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"{prefix}{k:03d}.dcm"))
        writer.Execute(sl)


def test_dicom_folder_with_two_series_lists_them_and_reads_the_chosen_one(tmp_path, capfd,
                                                                          notifications, volume):
    folder = tmp_path / "exam"
    write_dicom_series(folder, volume, "1.2.826.0.1.1", 3, "T1 pre", "pre")
    write_dicom_series(folder, volume + 50, "1.2.826.0.1.2", 4, "T1 post", "post")
    error = refused(capfd, "info", folder, needles=(
        "holds 2 DICOM series", "number 3 'T1 pre'", "number 4 'T1 post'", "1.2.826.0.1.2",
        "--dicom-series"))
    same_reason(error, open_in_napari(folder, notifications))

    code, out, _ = run(capfd, "info", folder, "--dicom-series", "4")
    assert code == 0 and "DICOM series: number 4 'T1 post'" in out
    code, out, _ = run(capfd, "info", folder, "--dicom-series", "1.2.826.0.1.1")
    assert code == 0 and "number 3 'T1 pre'" in out
    refused(capfd, "info", folder, "--dicom-series", "7",
            needles=("has no DICOM series '7'", "number 3"))
    # One file of a series stands for that series (CLI and napari alike).
    post = read_scan(folder / "post002.dcm")
    np.testing.assert_array_equal(post.array, (volume + 50).astype(np.int16))
    assert post.provenance["series_uid"] == "1.2.826.0.1.2"
    layers = open_in_napari(folder / "pre000.dcm", notifications)
    np.testing.assert_array_equal(layers[0][0], volume.astype(np.int16))


def test_dicom_series_with_a_missing_slice_is_refused_quietly(tmp_path, capfd, notifications,
                                                              volume):
    folder = tmp_path / "ct"
    write_dicom_series(folder, volume, "1.2.826.0.1.9", 2, "chest", "s", skip=(3,))
    error = refused(capfd, "info", folder, needles=(  # refused() asserts a single stderr line:
        "slice spacing is not uniform", "2.5 mm", "5 mm", "s002.dcm", "s004.dcm"))  # no ITK
    same_reason(error, open_in_napari(folder, notifications))


# --- crop: a tumour mask on another grid ---------------------------------------------------

@pytest.fixture
def ct_and_mask(tmp_path):
    rng = np.random.default_rng(1)
    ct = rng.normal(-700, 50, (30, 40, 20)).astype(np.float32)  # NIfTI order (x, y, z)
    mask = np.zeros(ct.shape, np.uint8)
    mask[12:18, 16:24, 8:12] = 1
    affine = np.diag([-2.5, -2.5, 4.0, 1.0])
    return (save_nifti(tmp_path / "ct.nii.gz", ct, affine),
            save_nifti(tmp_path / "mask.nii.gz", mask, affine), mask, affine)


@pytest.mark.parametrize("change, problem", [
    ("shape", "shape"), ("spacing", "spacing"), ("origin", "origin"), ("direction", "axes")])
def test_crop_refuses_a_mask_on_another_grid(tmp_path, capfd, ct_and_mask, change, problem):
    ct, _, mask, affine = ct_and_mask
    other = affine.copy()
    if change == "shape":
        mask = mask[:-2]
    elif change == "spacing":
        other[:3, :3] *= 1.2
    elif change == "origin":
        other[:3, 3] += (5.0, 0.0, 0.0)
    else:
        angle = np.deg2rad(10)
        rot = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0],
                        [0, 0, 1]])
        other[:3, :3] = rot @ other[:3, :3]
    moved = save_nifti(tmp_path / "other_mask.nii.gz", mask, other)
    out = tmp_path / "crop.nii.gz"
    refused(capfd, "crop", "--ct", ct, "--tumour", moved, "--out", out,
            needles=("other_mask.nii.gz", problem, "ct.nii.gz", "CT's grid"))
    assert not out.exists()


# --- lung segmentation of a volume that is not a crop ---------------------------------------

def test_lung_segmentation_refuses_a_field_of_view_unlike_its_training_crops(
        tmp_path, capfd, ct_and_mask, torch_beside_napari):
    ct = ct_and_mask[0]  # 75 x 100 x 80 mm: not the 288 x 288 x 64 mm box the model knows
    out = tmp_path / "lung_mask.nii.gz"
    refused(capfd, "segment", "--family", "lung", ct, "--out", out,
            needles=("ct.nii.gz: covers 80 x 100 x 75 mm",
                     "trained on crops of 64 x 288 x 288 mm", "nacsim crop"))
    assert not out.exists()


# --- complex-valued NIfTI ------------------------------------------------------------------

def test_complex_nifti_is_refused(tmp_path, capfd, notifications):
    data = np.ones((6, 5, 4), np.complex64) * (1 + 2j)
    path = save_nifti(tmp_path / "phase.nii.gz", data)
    error = refused(capfd, "info", path, needles=("phase.nii.gz", "complex"))
    same_reason(error, open_in_napari(path, notifications))


# --- decompression bombs -------------------------------------------------------------------

def header_only_nifti(path: Path, shape, dtype=np.float32) -> Path:
    """A .nii.gz whose header declares ``shape`` but that holds (almost) no voxels: what a
    bomb looks like before it is inflated. Reading the voxels would fail; the header check
    must refuse it first, with the numbers."""
    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(dtype)
    with gzip.open(path, "wb") as handle:
        handle.write(header.binaryblock + b"\0" * 4 + b"\0" * 4096)
    return path


def test_declared_size_is_checked_before_reading(tmp_path, capfd, notifications,
                                                 torch_beside_napari):
    bomb = header_only_nifti(tmp_path / "bomb.nii.gz", (1024, 1024, 400))
    numbers = ("bomb.nii.gz: declares (1024, 1024, 400) = 419,430,400 voxels",
               f"limit of {MAX_VOXELS:,} voxels")
    error = refused(capfd, "info", bomb, needles=numbers)
    same_reason(error, open_in_napari(bomb, notifications))
    refused(capfd, "segment", "--family", "lung", bomb, "--out", tmp_path / "m.nii.gz",
            needles=numbers)
    refused(capfd, "simulate", "--input", bomb, "--scenario", "time=T2,pCR=yes,HR=+,HER2=-",
            "--out", tmp_path / "sim", "--quiet", needles=numbers)
    four_d = header_only_nifti(tmp_path / "dce.nii.gz", (256, 256, 100, 40))
    refused(capfd, "info", four_d, needles=("dce.nii.gz: 4D image with shape (256, 256, 100, 40)",))
    assert not (tmp_path / "sim").exists()


# --- outputs that cannot be written --------------------------------------------------------

@pytest.mark.parametrize("command", [
    ["phantoms", "lung", "--out", "{out}"],
    ["register", "--fixed", "a.nii.gz", "--moving", "b.nii.gz", "--out", "{out}"],
    ["mip", "--pre", "a.nii.gz", "--post", "b.nii.gz", "--out", "{out}"],
    ["crop", "--ct", "a.nii.gz", "--tumour", "b.nii.gz", "--out", "{out}"],
    ["segment", "a.nii.gz", "--family", "breast", "--out", "{out}"],
    ["simulate", "--sample", "0", "--out", "{out}"],
    ["review", "cohort.json", "--csv", "{out}"],
    ["demo", "--viewer", "no", "--out", "{out}"],
], ids=lambda c: c[0])
def test_unwritable_output_is_refused_before_the_work(tmp_path, capfd, command):
    blocker = tmp_path / "results"  # a file where the output folder should be
    blocker.write_text("not a folder")
    out = blocker / "out.nii.gz"
    argv = [str(out) if a == "{out}" else a for a in command]
    refused(capfd, *argv, needles=(str(out), "cannot be written", "is a file, not a folder"))


def test_napari_writer_notifies_an_unwritable_output(tmp_path, notifications):
    from napari_nacsim.plugin.writer import write_image

    (tmp_path / "results").write_text("not a folder")
    target = tmp_path / "results" / "saved.nii.gz"
    assert write_image(str(target), np.ones((4, 4), np.float32), {}) == []
    assert notifications == [f"nacsim could not save: {target}: cannot be written: "
                             f"{tmp_path / 'results'} is a file, not a folder"]


def test_unwritable_folder_is_refused(tmp_path, capfd, monkeypatch):
    """Permission bits do not stop root, so the denial is simulated where the test file is
    created (the check's probe)."""
    import tempfile

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "TemporaryFile", denied)
    refused(capfd, "review", "cohort.json", "--csv", tmp_path / "review.csv",
            needles=("review.csv: cannot be written", "Permission denied"))


# --- messages that name the files ------------------------------------------------------------

def test_messages_name_the_files_and_hold_back_library_noise(tmp_path, capfd, notifications):
    volume = np.random.default_rng(2).normal(100, 10, (12, 10, 4)).astype(np.float32)
    pre = save_nifti(tmp_path / "pre.nii.gz", volume)
    post = save_nifti(tmp_path / "post.nii.gz", volume - 5)
    refused(capfd, "mip", "--pre", pre, "--post", post, "--out", tmp_path / "mip.nii.gz",
            needles=("post.nii.gz: has no voxel brighter than the pre-contrast", "pre.nii.gz"))
    # nibabel logs a header repair at load time; the one-line error must stand alone.
    img = nib.Nifti1Image(np.ones((6, 5, 4), np.complex64), None)  # None: keep the header
    img.header["pixdim"][1] = 0.0
    path = tmp_path / "repaired.nii.gz"
    img.to_filename(str(path))
    error = refused(capfd, "info", path, needles=("repaired.nii.gz", "complex"))
    same_reason(error, open_in_napari(path, notifications))


# --- info reports NaN voxels ----------------------------------------------------------------

def test_info_reports_nan_voxels(tmp_path, capfd, notifications):
    data = np.zeros((10, 8, 5), np.float32)
    data[0, 0, :3] = np.nan
    path = save_nifti(tmp_path / "holes.nii.gz", data)
    code, out, _ = run(capfd, "info", path)
    assert code == 0 and "NaN voxels: 3 (0.75 % of 400)" in out
    assert "holes.nii.gz: contains 3 NaN/Inf voxels" in open_in_napari(path, notifications)


def test_manifest_claims_every_file_type_the_reader_reads():
    """A type nacsim reads but the manifest does not list gets napari's generic refusal."""
    import yaml

    from napari_nacsim.core.scan_io import IMAGE_2D_SUFFIXES, NIFTI_SUFFIXES

    manifest = Path(__file__).resolve().parents[1] / "napari.yaml"
    (reader,) = yaml.safe_load(manifest.read_text())["contributions"]["readers"]
    patterns = set(reader["filename_patterns"])
    assert {f"*{s}" for s in NIFTI_SUFFIXES + IMAGE_2D_SUFFIXES + (".dcm", ".ima")} <= patterns


@pytest.mark.viewer
def test_napari_viewer_shows_the_reason_and_opens_a_series_by_one_file(
        make_napari_viewer, tmp_path, notifications, volume):
    """Through napari itself (npe2 picks the reader by the manifest): a refused file adds no
    layer and shows the reason; a single DICOM file opens its series."""
    import imageio.v3 as iio

    grey = np.zeros((16, 16), np.uint8)
    iio.imwrite(tmp_path / "photo.jpg", np.stack([grey, grey + 200, grey], -1))
    folder = tmp_path / "exam"
    write_dicom_series(folder, volume, "1.2.826.0.1.1", 3, "T1 pre", "pre")
    write_dicom_series(folder, volume + 50, "1.2.826.0.1.2", 4, "T1 post", "post")
    viewer = make_napari_viewer()
    viewer.open(str(tmp_path / "photo.jpg"), plugin="nacsim")
    assert len(viewer.layers) == 0
    assert len(notifications) == 1 and "photo.jpg: is a colour image" in notifications.pop()
    (layer,) = viewer.open(str(folder / "post001.dcm"), plugin="nacsim")
    np.testing.assert_array_equal(layer.data, (volume + 50).astype(np.int16))
    np.testing.assert_allclose(layer.scale, (2.5, 0.7, 0.8), atol=1e-4)
