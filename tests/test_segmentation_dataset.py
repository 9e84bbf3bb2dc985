"""Export of nacsim cases to nnU-Net's raw dataset format, checked by nnU-Net itself."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_nacsim.core.errors import InputError
from napari_nacsim.datasets.segmentation_cases import cohort_cases, phantom_cases
from napari_nacsim.families import get_family
from napari_nacsim.science.segmentation import nnunet_env
from napari_nacsim.science.segmentation.dataset import (SLICE_SPACING_2D, export_dataset,
                                                        nnunet_input, verify_dataset)


def export(cases, family, raw_root, **options):
    """`export_dataset` handed the family's specs (segmentation training hands those its
    `TrainingSettings` carry)."""
    chosen = get_family(family)
    return export_dataset(cases, raw_root, family=chosen.name,
                          input_spec=chosen.segmenter_input,
                          segmentation=chosen.segmentation, **options)


@pytest.fixture(scope="module")
def lung_cases():
    return phantom_cases("lung", 1, 11, timepoints=["pre"], jobs=1)


@pytest.fixture(scope="module")
def breast_cases():
    return phantom_cases("breast", 2, 11, timepoints=["T0"], jobs=1)


@pytest.fixture(autouse=True)
def nnunet_settings(tmp_path):
    # nnU-Net reads nnUNet_def_n_proc when first imported; keep this module's settings local.
    with nnunet_env.nnunet_environment(tmp_path / "nnunet"):
        yield


def read_with_nnunet_io(path):
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO

    return SimpleITKIO().read_images([str(path)])


def test_lung_crops_export_passes_nnunet_integrity_check(tmp_path, lung_cases):
    case = lung_cases[0]
    assert case.image.shape == (16, 96, 96) and case.label.array.any()
    folder = export(lung_cases, "lung", tmp_path / "raw")
    assert folder.name == "Dataset502_NacsimLungCrop"
    meta = json.loads((folder / "dataset.json").read_text())
    assert meta["channel_names"] == {"0": "CT"}          # nnU-Net's CT normalisation
    assert meta["labels"] == {"background": 0, "tumour": 1}
    assert meta["numTraining"] == 1 and meta["file_ending"] == ".nii.gz"
    assert meta["nacsim"]["cases"] == [{"case": case.case_id, "patient": case.patient_id,
                                        "timepoint": "pre", "synthetic": True}]
    verify_dataset(folder)  # nnU-Net's own --verify_dataset_integrity: raises if it fails

    # nnU-Net reads the files exactly as nacsim hands arrays to the predictor.
    data, props = read_with_nnunet_io(folder / "imagesTr" / f"{case.case_id}_0000.nii.gz")
    array, properties = nnunet_input(case.image)
    np.testing.assert_allclose(data, array, atol=1e-4)
    np.testing.assert_allclose(props["spacing"], properties["spacing"], rtol=1e-5)
    assert tuple(properties["spacing"]) == pytest.approx((4.0, 3.0, 3.0))
    labels, _ = read_with_nnunet_io(folder / "labelsTr" / f"{case.case_id}.nii.gz")
    np.testing.assert_array_equal(labels[0], case.label.array)


def test_breast_mips_are_2d_slices_with_nnunet_2d_spacing(tmp_path, breast_cases):
    case = breast_cases[0]
    assert case.image.ndim == 2 and case.image.shape == (128, 128)
    folder = export(breast_cases, "breast", tmp_path / "raw", dataset_id=777,
                            name="MIPs")
    assert folder.name == "Dataset777_MIPs"
    data, props = read_with_nnunet_io(folder / "imagesTr" / f"{case.case_id}_0000.nii.gz")
    assert data.shape == (1, 1, 128, 128)
    assert props["spacing"][0] == SLICE_SPACING_2D
    assert tuple(props["spacing"][1:]) == pytest.approx(case.image.spacing)
    array, properties = nnunet_input(case.image)
    np.testing.assert_allclose(data, array, atol=1e-5)
    assert properties["spacing"] == pytest.approx(list(props["spacing"]))
    assert json.loads((folder / "dataset.json").read_text())["channel_names"] == {"0": "MIP"}


def test_export_refuses_clashes_and_wrong_dimensions(tmp_path, breast_cases, lung_cases):
    raw = tmp_path / "raw"
    export(breast_cases, "breast", raw)
    with pytest.raises(InputError, match="already exists"):
        export(breast_cases, "breast", raw)
    with pytest.raises(InputError, match="another dataset already uses id 501"):
        export(breast_cases, "breast", raw, name="Other")
    with pytest.raises(InputError, match="not unique"):
        export(breast_cases + breast_cases[:1], "breast", raw, overwrite=True)
    with pytest.raises(InputError, match="is 3D; the breast segmenter takes a 2D"):
        export(lung_cases, "breast", raw, dataset_id=9)
    with pytest.raises(InputError, match="1..999"):
        export(breast_cases, "breast", raw, dataset_id=1000)
    with pytest.raises(InputError, match="spheroid family: has no nnU-Net segmentation"):
        export_dataset(breast_cases, raw, family="spheroid",
                       input_spec=get_family("breast").segmenter_input, segmentation=None)
    export(breast_cases[:1], "breast", raw, overwrite=True)
    assert len(list((raw / "Dataset501_NacsimBreastMIP" / "imagesTr").iterdir())) == 1
    assert not [p for p in raw.iterdir() if p.name.startswith(".")]  # no staging left


def test_lesion_free_phantom_cases_have_empty_masks():
    cases = phantom_cases("breast", 1, 11, first_index=2, timepoints=["T0"], jobs=1,
                          lesion_free=True)
    assert [c.case_id for c in cases] == ["BR0003-lesion-free_T0"]
    assert cases[0].patient_id == "BR0003-lesion-free"
    assert cases[0].label.shape == cases[0].image.shape == (128, 128)
    assert not cases[0].label.array.any() and cases[0].image.array.std() > 0
    assert cases[0].image.provenance.get("lesion_free") is True
    with pytest.raises(InputError, match="breast only, not lung"):
        phantom_cases("lung", 1, 11, jobs=1, lesion_free=True)


def test_cases_from_a_cohort_manifest(tmp_path):
    from napari_nacsim.datasets.phantom_cohort import write_phantom_cohort

    from napari_nacsim.core.cohort import load_cohort

    manifest = write_phantom_cohort("lung", 1, 5, tmp_path / "cohort", jobs=1)
    family, cases = cohort_cases(manifest, timepoints=["pre"], jobs=1)
    assert family == "lung"
    assert [c.case_id for c in cases] == [f"{p.id}_pre" for p in load_cohort(manifest).patients]
    again = phantom_cases("lung", 1, 5, timepoints=["pre"], jobs=1)
    for from_files, in_memory in zip(cases, again):  # the manifest path = the in-memory path
        np.testing.assert_array_equal(from_files.label.array, in_memory.label.array)
        np.testing.assert_allclose(from_files.image.array, in_memory.image.array, atol=0.05)
    with pytest.raises(InputError, match="'T1' is not a lung time point"):
        cohort_cases(manifest, timepoints=["T1"])
