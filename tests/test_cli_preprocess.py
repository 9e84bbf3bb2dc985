"""`nacsim register | mip | crop` on synthetic patients, and their bad-input paths."""

from __future__ import annotations

import numpy as np
import pytest

from napari_nacsim.cli.main import main as _main
from napari_nacsim.core.scan_io import read_scan, write_scan
from napari_nacsim.families import get_family
from napari_nacsim.science.preprocess.pipeline import lung_crops


def main(argv):
    return _main([str(a) for a in argv])


@pytest.fixture(scope="module")
def breast_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("breast")
    rendering = get_family("breast").make_phantom(0, 1).render()
    paths = {}
    for tp in ("T0", "T1"):
        for name, scan in {**rendering.scans[tp], **rendering.masks[tp]}.items():
            paths[f"{tp}_{name}"] = write_scan(scan, folder / f"{tp}_{name}.nii.gz")
    return paths


def test_register_then_mip(tmp_path, breast_files, capsys):
    f = breast_files
    out, mask_out = tmp_path / "T1_pre_reg.nii.gz", tmp_path / "T1_tumour_reg.nii.gz"
    assert main(["register", "--fixed", f["T0_pre"], "--moving", f["T1_pre"], "--out", out,
                 "--labels", f["T1_tumour"], "--labels-out", mask_out]) == 0
    moved, fixed = read_scan(out), read_scan(f["T0_pre"])
    assert moved.same_grid(fixed)
    labels = read_scan(mask_out)
    assert labels.kind == "labels" and set(np.unique(labels.array)) <= {0, 1}
    # Aligned follow-up correlates better with the baseline than before registration.
    before = np.corrcoef(read_scan(f["T1_pre"]).array.ravel(), fixed.array.ravel())[0, 1]
    after = np.corrcoef(moved.array.ravel(), fixed.array.ravel())[0, 1]
    assert after > before

    mip = tmp_path / "T0_mip.nii.gz"
    assert main(["mip", "--pre", f["T0_pre"], "--post", f["T0_post"], "--out", mip]) == 0
    image = read_scan(mip)
    assert image.ndim == 2 and image.shape == (128, 128)
    assert image.array.min() >= 0 and image.array.max() <= 1
    # Same command again refuses to overwrite; --overwrite allows it.
    assert main(["mip", "--pre", f["T0_pre"], "--post", f["T0_post"], "--out", mip]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["mip", "--pre", f["T0_pre"], "--post", f["T0_post"], "--out", mip,
                 "--overwrite"]) == 0


def test_mip_with_mismatched_phases(tmp_path, breast_files, capsys):
    small = read_scan(breast_files["T0_post"])
    cut = write_scan(small.derive(small.array[:, :64], step="cut"), tmp_path / "cut.nii.gz")
    code = main(["mip", "--pre", breast_files["T0_pre"], "--post", cut,
                 "--out", tmp_path / "x.nii.gz"])
    err = capsys.readouterr().err
    assert code == 2 and "cut.nii.gz" in err and "does not match" in err
    assert not (tmp_path / "x.nii.gz").exists()


def test_register_refuses_4d_and_nan(tmp_path, breast_files, capsys):
    base = read_scan(breast_files["T0_pre"])
    nan = base.array.copy()
    nan[3, 4, 5] = np.nan
    bad = write_scan(base.derive(nan, step="nan"), tmp_path / "nan.nii.gz")
    code = main(["register", "--fixed", breast_files["T0_pre"], "--moving", bad,
                 "--out", tmp_path / "o.nii.gz"])
    err = capsys.readouterr().err
    assert code == 2 and "nan.nii.gz" in err and "NaN" in err
    assert not (tmp_path / "o.nii.gz").exists()


def test_lung_crop_command_and_pipeline(tmp_path, capsys):
    rendering = get_family("lung").make_phantom(0, 2).render()
    ct = write_scan(rendering.scans["pre"]["ct"], tmp_path / "ct.nii.gz")
    tumour = write_scan(rendering.masks["pre"]["tumour"], tmp_path / "tumour.nii.gz")
    assert main(["crop", "--ct", ct, "--tumour", tumour, "--out", tmp_path / "crop.nii.gz",
                 "--tumour-out", tmp_path / "crop_tumour.nii.gz", "--window"]) == 0
    crop = read_scan(tmp_path / "crop.nii.gz")
    assert crop.shape == (16, 96, 96) and 0 <= crop.array.min() and crop.array.max() <= 1
    assert read_scan(tmp_path / "crop_tumour.nii.gz").array.any()

    empty = write_scan(rendering.masks["pre"]["tumour"].derive(
        np.zeros_like(rendering.masks["pre"]["tumour"].array), step="empty"),
        tmp_path / "empty.nii.gz")
    assert main(["crop", "--ct", ct, "--tumour", empty, "--out", tmp_path / "c2.nii.gz"]) == 2
    assert "tumour mask is empty" in capsys.readouterr().err

    visits = {tp: {**rendering.scans[tp], **rendering.masks[tp]} for tp in ("pre", "post")}
    crops = lung_crops(visits)
    assert set(crops) == {"pre", "post"}
    for tp in crops:
        assert crops[tp]["ct"].same_grid(crops["pre"]["ct"])
        assert set(crops[tp]) == {"ct", "tumour", "lobes", "vessels"}
        assert crops[tp]["lobes"].kind == "labels"
