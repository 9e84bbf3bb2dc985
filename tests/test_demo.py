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


@pytest.mark.viewer
def test_demo_with_a_display_opens_the_sample_patient_and_the_workspace(make_napari_viewer,
                                                                        monkeypatch):
    import napari

    from napari_nacsim.cli import demo

    opened = {}

    def fake_viewer(**kwargs):
        opened["viewer"] = make_napari_viewer()
        return opened["viewer"]

    monkeypatch.setattr(napari, "Viewer", fake_viewer)
    monkeypatch.setattr(napari, "run", lambda: opened.setdefault("ran", True))
    monkeypatch.setenv("DISPLAY", ":99")
    assert demo.run_demo(out=None, viewer="auto") == 0
    viewer = opened["viewer"]
    assert opened["ran"] is True
    assert any(layer.ndim == 2 and "MIP" in layer.name for layer in viewer.layers)
    docks = viewer.window.dock_widgets
    widget = next(w for w in docks.values() if type(w).__name__ == "WhatIfWorkspace")
    assert "MIP" in widget.input_combo.currentText()
    widget.shutdown()
