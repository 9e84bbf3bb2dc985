"""One way to write a tumour size, its longest diameter and a change in percent
(core.size_format, re-exported by science.measure): the CLI's line, the size table, the grid
cells, the report and the DICOM SR's text print the same number the same way (the
inspector's cells: test_inspector_widget)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from napari_nacsim.core import size_format
from napari_nacsim.core.dicom import describe_measurements
from napari_nacsim.core.scan import LABELS, Scan, affine_from_spacing
from napari_nacsim.engine.session import FollowUp, _describe_diameter_change
from napari_nacsim.plugin.cells import cell_size
from napari_nacsim.science.measure import (TumourSize, format_change_percent, format_diameter,
                                           format_size, size_change)


@pytest.mark.parametrize("value, kwargs, text", [
    (412.3, {"unit": "mm²"}, "412 mm²"),
    (10.0, {}, "10"),
    (3.271, {"unit": "mL"}, "3.27 mL"),
    (0.046, {"unit": "mL"}, "0.05 mL"),
    (3.4, {"scale": 412.0}, "3"),              # an SD written like its size
    (3.4, {"scale": 4.0}, "3.40"),
    (-32.4, {"sign": True}, "-32"),
    (0.41, {"sign": True, "unit": "mL"}, "+0.41 mL"),
    (0.0, {"sign": True}, "0.00"),             # no change is not "+"
    (math.nan, {"unit": "mL"}, "n/a"),
])
def test_the_rule(value, kwargs, text):
    assert format_size(value, **kwargs) == text


@pytest.mark.parametrize("write, value, kwargs, text", [
    (format_diameter, 31.24, {}, "31.2 mm"),
    (format_diameter, 8.0, {"unit": ""}, "8.0"),
    (format_diameter, 1.37, {"unit": "", "sign": True}, "+1.4"),
    (format_diameter, -0.04, {"sign": True}, "0.0 mm"),   # no "-0.0"
    (format_change_percent, -29.64, {}, "-29.6 %"),       # not "-30 %": RECIST's PR is -30
    (format_change_percent, 3.0, {}, "+3.0 %"),
    (format_change_percent, 1.23, {"unit": "", "sign": False}, "1.2"),
    (format_change_percent, math.nan, {}, "n/a"),
    (format_size, 0.001, {"sign": True}, "0.00"),         # a change that rounds to none
])
def test_the_diameter_and_change_rules(write, value, kwargs, text):
    assert write(value, **kwargs) == text


def _follow(totals, unit="mm²", baseline=400.0, diameters=None):
    ndim = 2 if unit == "mm²" else 3
    mask = Scan(np.zeros((4,) * ndim, np.uint8), affine_from_spacing((1.0,) * ndim),
                kind=LABELS)
    sizes = [TumourSize(t, unit, (t,), 10, d)
             for t, d in zip(totals, diameters or [20.0] * len(totals))]
    return FollowUp(time="T2", title="T2 · pCR (synthetic)", scenario={},
                    samples=[mask] * len(totals), image=mask, spread=None, mask=mask, sizes=sizes,
                    change=size_change(baseline, float(np.mean(totals)), unit),
                    baseline_diameter=30.0)


@pytest.mark.parametrize("totals, unit", [([412.3], "mm²"), ([3.271], "mL"),
                                           ([400.0, 404.0, 411.0], "mm²")])
def test_every_face_writes_a_size_alike(totals, unit):
    follow = _follow(totals, unit)
    mean = format_size(float(np.mean(totals)))
    # the CLI's and the report's line of a measured mask, the table's size column, the cell
    assert TumourSize(float(np.mean(totals)), unit, (1.0,), 10).describe() == \
        f"{mean} {unit}"
    assert follow.describe_size().startswith(f"{mean} ")
    assert cell_size(follow).startswith(mean)
    if len(totals) > 1:   # the SD written like the mean: 6, not 5.57
        sd = format_size(follow.size_sd, scale=follow.size_mean)
        assert sd == "6"
        assert follow.describe_size().startswith(f"{mean} ± {sd} {unit}")
        assert cell_size(follow).startswith(f"{mean}±{sd} {unit}")


def test_every_face_writes_a_diameter_and_its_change_alike():
    # the grid cell rounded the long axis to whole mm ("Ø 21±0 mm") and the table's long-axis
    # change to whole % ("-30 %") where the table wrote 21.1 mm and the SR -29.6 %
    follow = _follow([400.0, 404.0], diameters=[21.0, 21.24])    # baseline long axis 30 mm
    mean, sd = format_diameter(21.12, ""), format_diameter(follow.diameter_sd, "")
    assert (mean, sd) == ("21.1", "0.2")
    assert cell_size(follow).endswith(f", Ø {mean}±{sd} mm")
    assert follow.describe_diameter() == f"{mean} ± {sd} mm"
    assert _describe_diameter_change(follow) == "-8.9 ± 0.2 mm (-29.6 %)"
    assert TumourSize(400.0, "mm²", (400.0,), 10, 21.12).describe().endswith(
        f"longest diameter {format_diameter(21.12)}")
    assert describe_measurements({
        "description": "d", "completion": "PARTIAL", "verification": "UNVERIFIED",
        "groups": [{"tracking": "t", "evaluations": [], "measurements": [
            {"name": "Long axis", "value": 21.12, "unit": "mm"},
            {"name": "Long axis change from baseline", "value": -29.6, "unit": "%"}]}]}
    ).splitlines()[1] == "  t: Long axis 21.1 mm; Long axis change from baseline -29.6 %"


def test_a_change_and_its_sd_share_their_digits():
    change = size_change(400.0, 417.0, "mm²")
    assert change.absolute_text() == "+17 mm²"
    assert change.absolute_text(15.72) == "+17 ± 16 mm²"
    small = size_change(3.0, 2.5, "mL")
    assert small.absolute_text(0.123) == "-0.50 ± 0.12 mL"
    assert small.describe() == "3.00 -> 2.50 mL (-0.50 mL, -16.7 %)"


def test_science_gives_the_one_rule_of_core():
    assert format_size is size_format.format_size


def test_the_dicom_srs_text_writes_a_size_as_every_face():
    # `nacsim info` and the napari notification of an SR: the report keeps full precision,
    # the text rounds as the size table (it wrote 4 significant digits: "412.3 mm2")
    def report(measurements):
        return {"description": "nacsim tumour sizes", "completion": "PARTIAL",
                "verification": "UNVERIFIED",
                "groups": [{"tracking": "T2 · pCR (SYNTHETIC) tumour", "evaluations": [],
                            "measurements": [{"name": n, "value": v, "unit": u}
                                             for n, v, u in measurements]}]}

    text = describe_measurements(report([
        ("Area", 412.3, "mm2"), ("Long axis", 31.24, "mm"),
        ("Size change from baseline", -42.57, "%"), ("Long axis change from baseline", 3.0, "%")]))
    assert text.splitlines()[1] == (
        f"  T2 · pCR (SYNTHETIC) tumour: Area {format_size(412.3, 'mm²')}; Long axis 31.2 mm; "
        "Size change from baseline -42.6 %; Long axis change from baseline +3.0 %")
    assert format_size(412.3, "mm²") == "412 mm²"
    volume = describe_measurements(report([("Volume", 3.271, "mL"), ("Other", 1234.56, "g")]))
    assert volume.endswith("Volume 3.27 mL; Other 1235 g")   # a unit of another program's SR
