"""The failure-case inspector widget: a background review (`nacsim review`'s run, in this
process) filling a sortable table with its progress (done / failed / left), the selected case
in the grid, CSV export, a Cancel that keeps the finished patients and a Run that resumes,
and no crash or stray thread on bad input, cancel or close (napari's fixtures; needs a
display)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from qtpy.QtCore import Qt, QThreadPool

from cohort_helpers import tiny_cohort
from napari_nacsim.engine.cohort_review import METRICS
from napari_nacsim.engine.cohort_runner import CASES, RECORD
from napari_nacsim.plugin.grid_view import grid_of, group_layers
from napari_nacsim.plugin.inspector import (FIXED_COLUMNS, GROUP, SORT_ROLE, CohortInspector,
                                            _NumberItem)
from napari_nacsim.science.measure import format_size

pytestmark = pytest.mark.viewer

WAIT_MS = 240_000


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    # 2 patients, T0 + T1; BR0002 as if real data (no ground truth: one registration less)
    path = tiny_cohort(tmp_path_factory.mktemp("cohort") / "c", 2)
    payload = json.loads(path.read_text())
    payload["patients"][1].pop("extra")
    path.write_text(json.dumps(payload))
    return path


@pytest.fixture
def errors(monkeypatch):
    import napari.utils.notifications as notifications

    messages: list[str] = []
    monkeypatch.setattr(notifications, "show_error", messages.append)
    return messages


@pytest.fixture
def inspector(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    widget = CohortInspector(viewer)
    viewer.window.add_dock_widget(widget, name="Cohort inspector")
    widget.steps.setValue(2)
    widget.results_edit.setText(str(tmp_path / "results"))  # each test its own run
    yield viewer, widget
    widget.shutdown()


def column(key: str) -> int:
    return len(FIXED_COLUMNS) + [m.key for m in METRICS].index(key)


def names_in_cells(viewer) -> list[tuple[str, str]]:
    """(image, outline) names per grid cell, the first cell first."""
    layers = sorted(group_layers(viewer, GROUP),
                    key=lambda layer: layer.metadata["nacsim"]["slot"])
    return [(layers[k].name, layers[k + 1].name) for k in range(0, len(layers), 2)]


def no_threads_left() -> bool:
    return QThreadPool.globalInstance().waitForDone(10_000)


def test_review_fills_table_sorts_shows_case_and_exports(inspector, manifest, errors,
                                                         qtbot, tmp_path):
    viewer, widget = inspector
    while_running = []
    widget.case_ready.connect(lambda *_: while_running.append(
        (widget.table.rowCount(), widget.runner.running, not widget.progress.isHidden())))
    progress = []
    widget.runner.progressed.connect(lambda *args: progress.append(
        (*args, widget.status.text())))
    widget.path_edit.setText(str(manifest))
    widget.run()
    qtbot.waitUntil(lambda: len(widget.cases) == 2 and not widget.runner.running,
                    timeout=WAIT_MS)
    assert errors == []
    assert while_running[0] == (1, True, True)  # the first row came while the run went on
    # the CLI's progress: patients done / failed / left, from the start
    assert progress[0] == (0, 2, "done 0 · failed 0 · left 2",
                           "Reviewing: done 0 · failed 0 · left 2")
    assert progress[-1][:3] == (2, 2, "done 2 · failed 0 · left 0")
    assert widget.status.text().startswith("Done: 2 cases")
    assert widget.progress.isHidden()
    table = widget.table
    headers = [table.horizontalHeaderItem(c).text().replace("\n", " ")
               for c in range(table.columnCount())]
    assert headers[:3] == ["Patient", "Time", "Scenario"]
    assert "Size T0 (mm²)" in headers and "PSNR (dB)" in headers and "Match (%)" in headers
    assert not table.isColumnHidden(column("cf_match"))  # phantoms have ground truth
    assert "mean SSIM" in widget.summary.text()

    table.sortItems(column("match"), Qt.DescendingOrder)
    values = [table.item(r, column("match")).data(SORT_ROLE) for r in range(2)]
    assert values == sorted(values, reverse=True)
    text = table.item(0, column("ssim")).text()
    assert len(text.split(".")[1]) == 2  # rounded for reading, sorted by the number
    table.sortItems(0, Qt.DescendingOrder)
    assert [table.item(r, 0).text() for r in range(2)] == ["BR0002", "BR0001"]

    # readable without side-scrolling: the columns that find failures, the rest on request
    shown = [table.horizontalHeaderItem(c).text().replace("\n", " ")
             for c in range(table.columnCount()) if not table.isColumnHidden(c)]
    assert shown == ["Patient", "Time", "Scenario", "SSIM", "Match (%)", "Size error (%)",
                     "Dice", "CF match (%)"]
    assert sum(table.columnWidth(c) for c in range(table.columnCount())
               if not table.isColumnHidden(c)) <= widget.minimumWidth() - 30
    widget.show_column("psnr")
    assert not table.isColumnHidden(column("psnr"))
    widget.show_column("psnr", False)

    table.selectRow(1)  # BR0001 (a phantom: with the counterfactual and its ground truth)
    case = widget.cases[table.item(1, 0).data(Qt.UserRole)]
    qtbot.waitUntil(lambda: widget.shown_case is case, timeout=30_000)
    layers = group_layers(viewer, GROUP)
    assert len(layers) == 12 and grid_of(viewer).enabled        # 3 x 2 cells
    assert grid_of(viewer).actual_shape(viewer.layers) == (3, 2)
    generated_name = "T1 generated (synthetic)"
    cf_text = case.provenance["counterfactual_text"]
    # the words of the workspace; each cell's second line: the scenario it was made under
    assert names_in_cells(viewer) == [
        ("BR0001 T0 input", "input tumour"),
        ("T1 real follow-up", f"recorded: {case.scenario_text}"),
        (generated_name, f"under {case.scenario_text}"),
        ("T1 generated − real (synthetic)", "generated tumour"),
        ("T1 counterfactual (synthetic)", f"under {cf_text}"),
        ("T1 phantom ground truth", f"phantom under {cf_text}")]
    generated = viewer.layers[generated_name]
    provenance = generated.metadata["nacsim"]["provenance"]
    assert provenance["synthetic"] and provenance["model_hash"] and provenance["steps"] == 2
    for layer in layers:
        if layer._type_string == "labels":
            assert layer.contour == 1
            np.testing.assert_allclose(layer.scale, np.asarray(generated.scale) / 4)
        else:
            np.testing.assert_allclose(layer.scale, generated.scale)
    diff = viewer.layers["T1 generated − real (synthetic)"]
    # dark where they agree (no glaring white square), with a colour bar as its legend
    assert diff.colormap.map(np.array([0.5]))[0][:3] == pytest.approx([0, 0, 0])
    assert diff.colorbar.visible
    # napari offers every registered colormap in every image layer's colormap box: a long
    # name would widen the layer controls of every later viewer (CI: the compare grid lost
    # 177 px that way)
    assert len(diff.colormap.name) <= 16
    assert diff.contrast_limits[0] == pytest.approx(-diff.contrast_limits[1])
    # real and generated on one window: changing one changes the others, not the difference
    real = viewer.layers["T1 real follow-up"]
    real.contrast_limits = (0.1, 0.7)
    assert tuple(generated.contrast_limits) == pytest.approx((0.1, 0.7))
    assert diff.contrast_limits[0] == pytest.approx(-diff.contrast_limits[1])
    assert generated.bounding_box.visible and not real.bounding_box.visible

    out = widget.export_csv(tmp_path / "cases.csv")
    with open(out, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["patient"] for r in rows] == ["BR0002", "BR0001"]  # the table's order
    assert all(float(r["ssim"]) <= 1 for r in rows)


def test_a_size_cell_is_written_as_every_face_writes_a_size(qtbot):
    # the workspace, the reports and the SR's text write 412 mm² and 3.27 mL (the inspector
    # wrote 412.3 and 3.3); other metrics keep their own decimals
    metric = {m.key: m for m in METRICS}
    for value, text in ((412.3, "412"), (3.271, "3.27")):
        item = _NumberItem(value, metric["size_real"])
        assert item.text() == format_size(value) == text
        assert item.data(SORT_ROLE) == value             # sorted by the number itself
    assert _NumberItem(0.8123, metric["ssim"]).text() == "0.81"
    assert _NumberItem(81.26, metric["match"]).text() == "81.3"
    assert _NumberItem(None, metric["size_real"]).text() == "—"


@pytest.mark.parametrize("bad", ["junk", "absent", "wrong family", "broken file"])
def test_bad_manifest_notifies_in_one_line(inspector, manifest, errors, qtbot, tmp_path, bad):
    viewer, widget = inspector
    if bad == "junk":
        path = tmp_path / "junk.json"
        path.write_text("{ not a manifest")
    elif bad == "absent":
        path = tmp_path / "absent.json"
    elif bad == "wrong family":  # breast patients in a lung manifest
        payload = json.loads(manifest.read_text())
        payload["family"] = "lung"
        path = manifest.with_name("lung.json")
        path.write_text(json.dumps(payload))
    else:  # a valid manifest whose T1 scan is truncated: fails in the background run
        payload = json.loads(manifest.read_text())
        source = manifest.parent / payload["patients"][0]["scans"]["T1"]["pre"]
        broken = tmp_path / "broken_T1_pre.nii.gz"
        broken.write_bytes(source.read_bytes()[:200])
        payload["patients"][0]["scans"]["T1"]["pre"] = str(broken)
        path = manifest.with_name("broken.json")  # its other paths are relative
        path.write_text(json.dumps(payload))
    widget.path_edit.setText(str(path))
    widget.run()  # must not raise
    qtbot.waitUntil(lambda: len(errors) == 1 and not widget.runner.running, timeout=WAIT_MS)
    assert "\n" not in errors[0]
    assert (path.name if bad != "broken file" else "broken_T1_pre.nii.gz") in errors[0]
    if bad == "broken file":  # recorded as failed with its reason; the run went on
        assert errors[0].startswith("cohort review: BR0001: ")
        assert [widget.table.item(0, 0).text()] == ["BR0002"]
        assert widget.failed[0][0] == "BR0001"
        assert "1 patient(s) failed (BR0001: " in widget.status.text()
    else:
        assert widget.table.rowCount() == 0
    assert no_threads_left()


def test_cancel_keeps_the_finished_and_run_resumes(inspector, manifest, errors, qtbot,
                                                   tmp_path):
    """Cancel mid-run stops within a sampler step: the finished patient's folder stays (its
    record written last, atomically), the unfinished one leaves nothing; Run on the same
    folder reads the finished patient back instead of running it again."""
    viewer, widget = inspector
    widget.path_edit.setText(str(manifest))
    widget.run()
    # the first patient's rows, then its progress (queued right after them)
    qtbot.waitUntil(lambda: len(widget.cases) == 1 and widget.progress.value() == 1,
                    timeout=WAIT_MS)
    assert widget.cancel_button.isEnabled() and widget.runner.running
    assert "done 1 · failed 0 · left 1" in widget.status.text()
    widget.cancel()
    qtbot.waitUntil(lambda: not widget.runner.running, timeout=WAIT_MS)
    assert widget.status.text().startswith("Cancelled after 1 cases")
    assert errors == [] and widget.run_button.isEnabled()
    assert no_threads_left()
    cases = tmp_path / "results" / CASES
    assert sorted(p.name for p in cases.iterdir()) == ["BR0001"]  # no partial folder left
    record = cases / "BR0001" / RECORD
    written = (record.stat().st_mtime_ns, json.loads(record.read_text())["seconds"])

    widget.run()  # resumes
    qtbot.waitUntil(lambda: len(widget.cases) == 2 and not widget.runner.running,
                    timeout=WAIT_MS)
    assert "(1 patient(s) from an earlier run)" in widget.status.text()
    assert (record.stat().st_mtime_ns, json.loads(record.read_text())["seconds"]) == written
    assert sorted(c.patient for c in widget.cases) == ["BR0001", "BR0002"]
    assert (tmp_path / "results" / "review.csv").is_file()
    assert errors == []


def test_closing_mid_run_leaves_no_thread(inspector, manifest, errors, qtbot):
    viewer, widget = inspector
    widget.path_edit.setText(str(manifest))
    with qtbot.waitSignal(widget.runner.progressed, timeout=WAIT_MS):
        widget.run()
    viewer.window.remove_dock_widget(widget)  # napari's close button does this
    assert widget.runner._idle.is_set()  # shutdown waited for the job
    assert no_threads_left()
    qtbot.wait(50)  # queued signals of the finished worker arrive harmlessly
    assert errors == []


def test_closing_the_viewer_mid_run_stops_the_run(make_napari_viewer, manifest, errors, qtbot):
    viewer = make_napari_viewer(show=True)
    widget = CohortInspector(viewer)
    viewer.window.add_dock_widget(widget, name="Cohort inspector")
    widget.steps.setValue(2)
    widget.path_edit.setText(str(manifest))
    with qtbot.waitSignal(widget.runner.progressed, timeout=WAIT_MS):
        widget.run()
    viewer.close()
    assert widget.runner._idle.is_set()
    assert no_threads_left()
    assert errors == []
