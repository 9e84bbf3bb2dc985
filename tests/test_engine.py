"""The what-if engine and `nacsim simulate`: scans in, synthetic scans with provenance out."""

from __future__ import annotations

import json

import numpy as np
import pytest

from generative_helpers import micro_model
from napari_nacsim.cli.main import main
from napari_nacsim.core.errors import InputError
from napari_nacsim.core.scan import Scan, affine_from_spacing
from napari_nacsim.core.scan_io import read_scan, write_scan
from napari_nacsim.engine import load_model, parse_scenario, simulate
from napari_nacsim.science.generative.checkpoint import save_checkpoint


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_checkpoint(micro_model(seed=2), tmp_path_factory.mktemp("m") / "model",
                           {"title": "micro test model"})


@pytest.fixture
def mip():
    rng = np.random.default_rng(0)
    array = rng.random((20, 24)).astype(np.float32)  # not square, not the model size
    return Scan(array=array, affine=affine_from_spacing((2.0, 2.0), (10.0, -5.0, 3.0)))


def test_simulate_returns_labelled_synthetic_scans_on_the_input_extent(model_dir, mip):
    model = load_model(model_dir, device="cpu")
    scenarios = [parse_scenario("time=T2,pCR=yes,HR=+,HER2=-"),
                 parse_scenario("time=T2,pCR=no,HR=+,HER2=-")]
    out = simulate(model, mip, scenarios, seed=3, steps=2, sampler="ddim")
    assert len(out) == 2
    for scan, scenario in zip(out, scenarios):
        assert scan.shape == (16, 16)
        assert scan.provenance["synthetic"] is True
        assert scan.provenance["scenario"] == scenario
        assert scan.provenance["model_hash"] == model.model_hash
        assert (scan.provenance["seed"], scan.provenance["steps"],
                scan.provenance["sampler"]) == (3, 2, "ddim")
        assert "SYNTHETIC" in scan.provenance["label"]
        # same stretch of the patient: 24 mm wide input (padded square) -> 16 px of 3 mm
        assert np.allclose(scan.spacing, (3.0, 3.0))
    again = simulate(model, mip, scenarios, seed=3, steps=2, sampler="ddim")
    assert np.array_equal(out[0].array, again[0].array)
    assert not np.array_equal(out[0].array, out[1].array)


def test_scenario_parsing_and_bad_input(model_dir, mip):
    assert parse_scenario("time=t1, pCR=0, HR=-, HER2=HER2+") == {
        "time": "T1", "pCR": False, "HR": False, "HER2": True}
    with pytest.raises(InputError, match="NAME=VALUE"):
        parse_scenario("T1")
    model = load_model(model_dir, device="cpu")
    volume = Scan(array=np.zeros((3, 4, 4), np.float32) + np.arange(4), affine=np.eye(4))
    with pytest.raises(InputError, match="2D"):
        simulate(model, volume, [parse_scenario("time=T1,pCR=1,HR=1,HER2=1")], steps=1)
    raw = Scan(array=mip.array * 1000, affine=mip.affine)
    with pytest.raises(InputError, match=r"outside \[0, 1\]"):
        simulate(model, raw, [parse_scenario("time=T1,pCR=1,HR=1,HER2=1")], steps=1)


def test_cli_simulate_writes_nifti_with_provenance_sidecar(model_dir, mip, tmp_path, capsys):
    src = write_scan(mip, tmp_path / "t0_mip.nii.gz")
    out = tmp_path / "sim"
    rc = main(["simulate", "--input", str(src), "--model", str(model_dir), "--scenario",
               "time=T1,pCR=yes,HR=+,HER2=-", "--scenario", "time=T2,pCR=no,HR=+,HER2=-",
               "--steps", "2", "--sampler", "unipc", "--seed", "5", "--out", str(out),
               "--quiet"])
    assert rc == 0
    files = sorted(out.glob("synthetic_*.nii.gz"))
    assert [f.name for f in files] == ["synthetic_01_T1_pCRpos_HRpos_HER2neg.nii.gz",
                                       "synthetic_02_T2_pCRneg_HRpos_HER2neg.nii.gz"]
    scan = read_scan(files[0])
    assert scan.provenance["synthetic"] is True and scan.provenance["seed"] == 5
    summary = json.loads((out / "simulation.json").read_text())
    assert summary["synthetic"] is True and summary["sampler"] == "unipc"
    assert "SYNTHETIC" in capsys.readouterr().out


def test_cli_simulate_errors_are_one_line(model_dir, tmp_path, capsys):
    rc = main(["simulate", "--model", str(model_dir), "--out", str(tmp_path / "x")])
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "exactly one of --input FILE or --sample N" in err
    rc = main(["simulate", "--input", str(tmp_path / "missing.nii.gz"), "--model",
               str(model_dir), "--scenario", "time=T1,pCR=1,HR=1,HER2=1", "--out",
               str(tmp_path / "x")])
    assert rc == 2 and "does not exist" in capsys.readouterr().err


def test_guidance_defaults_to_the_models_own_and_is_recorded(tmp_path, mip):
    network = micro_model(seed=2)
    network.config["default_guidance"] = 2.5
    folder = save_checkpoint(network, tmp_path / "guided", {"title": "guided micro model"})
    model = load_model(folder, device="cpu")
    assert model.default_guidance == 2.5
    scenario = [parse_scenario("time=T2,pCR=yes,HR=+,HER2=-")]
    default = simulate(model, mip, scenario, seed=1, steps=2, sampler="ddim")[0]
    explicit = simulate(model, mip, scenario, seed=1, steps=2, sampler="ddim",
                        guidance_scale=2.5)[0]
    unguided = simulate(model, mip, scenario, seed=1, steps=2, sampler="ddim",
                        guidance_scale=1.0)[0]
    assert default.provenance["guidance_scale"] == 2.5
    assert unguided.provenance["guidance_scale"] == 1.0
    assert np.array_equal(default.array, explicit.array)
    assert not np.array_equal(default.array, unguided.array)
