"""The README's main job without a display: `nacsim demo --out DIR`."""

from __future__ import annotations

import json

from napari_nacsim.cli.main import main
from napari_nacsim.core.scan_io import read_scan


def test_demo_writes_mips_masks_report_and_figure(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["synthetic"] is True
    areas = {tp: v["tumour_area_mm2"] for tp, v in report["timepoints"].items()}
    assert set(areas) == {"T0", "T1", "T2"} and areas["T0"] > 0
    # The sample patient's tumour shrinks under treatment (registered follow-ups).
    assert areas["T2"] < areas["T0"]
    for tp in areas:
        mip = read_scan(out / f"{tp}_mip.nii.gz")
        assert mip.ndim == 2 and 0.0 <= mip.array.min() and mip.array.max() <= 1.0
        assert mip.provenance["synthetic"] is True
        mask = read_scan(out / f"{tp}_tumour_mip.nii.gz")
        assert mask.kind == "labels" and mask.shape == mip.shape
    png = (out / "comparison.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
