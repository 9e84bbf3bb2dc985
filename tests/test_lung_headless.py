"""The lung family's command-line paths, headless: `nacsim demo --family lung`, `nacsim
simulate --family lung --input CROP --context lobes=... --context vessels=...`, and
`nacsim review` of a lung cohort. The bundled lung model with 2 sampler steps."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from napari_nacsim.cli.main import main
from napari_nacsim.core.scan_io import read_scan, write_scan
from napari_nacsim.engine import bundled_model_path, load_model, simulate
from napari_nacsim.families import get_family
from napari_nacsim.science.generative.checkpoint import read_card

STEPS = 2


@pytest.fixture()
def no_display(monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)


def _lung_hash() -> str:
    return read_card(bundled_model_path("lung"))["model_hash"]


def test_demo_lung_writes_pd_l1_arms_masks_report_and_figure(tmp_path, no_display,
                                                              monkeypatch):
    family = get_family("lung")
    monkeypatch.setattr(type(family), "default_samples", 2)   # 8 by default: same path
    out = tmp_path / "demo"
    assert main(["demo", "--family", "lung", "--out", str(out), "--steps", str(STEPS)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["synthetic"] is True and report["demo"] == "nacsim demo"
    assert report["compared"] == "PD_L1" and report["patient"] == "LU0001"
    assert report["model"]["model_hash"] == _lung_hash()
    assert [s["label"] for s in report["scenarios"]] == ["PD-L1 TPS 0 %", "PD-L1 TPS 50 %"]
    baseline = report["baseline"]["size"]
    assert baseline["unit"] == "mL" and baseline["total"] > 0
    images = []
    for scenario, pd_l1 in zip(report["scenarios"], (0.0, 50.0)):
        assert set(scenario["followups"]) == {"post"}
        follow = scenario["followups"]["post"]
        assert follow["change_vs_baseline"]["baseline"] == pytest.approx(baseline["total"])
        image = read_scan(out / follow["files"]["image"])
        assert image.shape == (16, 96, 96) and image.provenance["synthetic"] is True
        assert image.provenance["scenario"]["PD_L1"] == pd_l1
        assert image.provenance["model_hash"] == _lung_hash()
        assert image.provenance["steps"] == STEPS
        assert len(follow["files"]["samples"]) == 2
        mask = read_scan(out / follow["files"]["mask"])
        assert mask.kind == "labels" and mask.shape == image.shape
        images.append(image.array)
    assert not np.array_equal(images[0], images[1])
    assert set(report["phantom_real_followups"]["sizes"]) == {"pre", "post"}
    png = (out / "comparison.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000


@pytest.fixture(scope="module")
def crop_files(tmp_path_factory):
    """The lung sample patient's baseline crop and its lobe and vessel crops as NIfTI (as
    `nacsim crop --mask` writes them), and its clinical values."""
    family = get_family("lung")
    rendering = family.make_phantom(0, 0).render()
    entry = family.model_inputs({"pre": rendering.visits()["pre"]})["pre"]
    own = {v.name: rendering.clinical[v.name] for v in family.schema.condition_variables
           if v.derive is None}
    folder = tmp_path_factory.mktemp("crops")
    paths = {name: write_scan(entry[name], folder / f"{name}.nii.gz")
             for name in ("image", "lobes", "vessels")}
    return paths, own


def _scenario_text(own: dict, pd_l1: float) -> str:
    values = {**own, "PD_L1": pd_l1}
    return ",".join(["time=post", *(f"{k}={v}" for k, v in values.items())])


def test_simulate_lung_with_context_generates_what_the_engine_generates(crop_files,
                                                                        tmp_path, capsys):
    paths, own = crop_files
    out = tmp_path / "sim"
    argv = ["simulate", "--family", "lung", "--input", str(paths["image"]),
            "--context", f"lobes={paths['lobes']}", "--context", f"vessels={paths['vessels']}",
            "--scenario", _scenario_text(own, 0.0), "--scenario", _scenario_text(own, 50.0),
            "--steps", str(STEPS), "--seed", "2", "--out", str(out), "--quiet"]
    assert main(argv) == 0
    assert "wrote 2 SYNTHETIC images" in capsys.readouterr().out
    record = json.loads((out / "simulation.json").read_text())
    assert record["synthetic"] is True and record["model_hash"] == _lung_hash()
    assert [o["scenario"]["PD_L1"] for o in record["outputs"]] == [0.0, 50.0]
    written = [read_scan(out / o["file"]) for o in record["outputs"]]
    # the same as the engine given the same files: the context reached the generator
    model = load_model(family="lung", device="cpu")
    context = {name: read_scan(paths[name], kind="labels") for name in ("lobes", "vessels")}
    expected = simulate(model, read_scan(paths["image"]),
                        [o["scenario"] for o in record["outputs"]], seed=2, steps=STEPS,
                        context=context)
    for got, want in zip(written, expected):
        assert got.provenance["synthetic"] is True and got.provenance["seed"] == 2
        np.testing.assert_allclose(got.array, want.array, atol=0.5)
    # the anatomy masks swapped: another image (the context is used, not just read)
    swapped = simulate(model, read_scan(paths["image"]), [record["outputs"][0]["scenario"]],
                       seed=2, steps=STEPS,
                       context={"lobes": context["vessels"], "vessels": context["lobes"]})
    assert np.abs(swapped[0].array - written[0].array).max() > 1.0


@pytest.mark.parametrize("context, needle", [
    ([], "lobes and vessels masks"),
    (["--context", "airways=x.nii.gz"], "--context 'airways=x.nii.gz'"),
])
def test_simulate_lung_without_its_context_is_one_line(crop_files, tmp_path, capsys,
                                                       context, needle):
    paths, own = crop_files
    code = main(["simulate", "--family", "lung", "--input", str(paths["image"]), *context,
                 "--scenario", _scenario_text(own, 0.0), "--steps", "1",
                 "--out", str(tmp_path / "sim"), "--quiet"])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and needle in lines[0], err
    assert not (tmp_path / "sim").exists()


def test_review_of_a_lung_cohort_writes_its_table(tmp_path, capsys):
    from napari_nacsim.datasets.phantom_cohort import write_phantom_cohort

    manifest = write_phantom_cohort("lung", 1, 3, tmp_path / "cohort", jobs=1)
    table = tmp_path / "cases.csv"
    assert main(["review", str(manifest), "--csv", str(table), "--steps", str(STEPS),
                 "--workers", "0", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "1 case (1 patient)" in printed
    (row,) = list(csv.DictReader(table.open(encoding="utf-8")))
    assert row["patient"] == "LU0001" and row["time"] == "post"
    assert row["model_hash"] == _lung_hash() and row["steps"] == str(STEPS)
    assert "PD-L1" in row["counterfactual_scenario"]
    assert float(row["size_t0_ml"]) > 0 and float(row["size_real_ml"]) >= 0
    for column in ("ssim", "psnr_db", "cf_ssim", "cf_match_percent"):
        assert np.isfinite(float(row[column])), column
