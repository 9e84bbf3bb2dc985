"""The README's main job without a display: `nacsim demo --out DIR`."""

from __future__ import annotations

import json

import pytest

from napari_nacsim.cli.main import main
from napari_nacsim.core.scan_io import read_scan


@pytest.fixture()
def no_display(monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)


def test_demo_writes_pcr_vs_non_pcr_images_masks_report_and_figure(tmp_path, no_display):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--steps", "4"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["synthetic"] is True and report["demo"] == "nacsim demo"
    labels = [s["label"] for s in report["scenarios"]]
    assert labels == ["pCR", "non-pCR"]
    baseline = report["baseline"]["size"]["total"]
    assert baseline > 0 and report["baseline"]["size"]["unit"] == "mm²"
    for scenario in report["scenarios"]:
        assert set(scenario["followups"]) == {"T1", "T2"}
        for tp, follow in scenario["followups"].items():
            change = follow["change_vs_baseline"]
            assert change["baseline"] == pytest.approx(baseline)
            assert change["absolute"] == pytest.approx(follow["size_mean"] - baseline)
            image = read_scan(out / follow["files"]["image"])
            assert image.provenance["synthetic"] is True
            assert image.provenance["scenario"]["time"] == tp
            assert image.provenance["scenario"]["pCR"] is (scenario["label"] == "pCR")
            assert image.provenance["model_hash"] == report["model"]["model_hash"]
            assert image.provenance["steps"] == 4 and image.provenance["seed"] == 0
            mask = read_scan(out / follow["files"]["mask"])
            assert mask.kind == "labels" and mask.shape == image.shape
    assert set(report["phantom_real_followups"]["sizes"]) == {"T0", "T1", "T2"}
    png = (out / "comparison.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000

    # Running it again replaces the earlier demo; a folder of something else is refused.
    assert main(["demo", "--out", str(out), "--steps", "4"]) == 0
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    assert main(["demo", "--out", str(other), "--steps", "4"]) != 0
    assert (other / "notes.txt").read_text() == "keep me"
