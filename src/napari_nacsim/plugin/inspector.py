"""The failure-case inspector: run the model over a cohort with real follow-ups and find the
cases it gets wrong.

A thin face over the cohort run of `nacsim review` (`engine.cohort_runner`, in napari's
process): the run goes in a `BackgroundRunner`; each patient's folder is written atomically
into the results folder as it finishes, read back in the worker thread and its cases queued
to the UI thread and added to a sortable table at once (so a long run can be read while it
goes). The progress shows cases done / failed / left; Cancel stops within a sampler step,
keeping the finished patients, and Run on the same folder resumes (only the unfinished
patients are run; the others are read from their folders).

Selecting a row shows the case in napari's grid (its layer data made in a worker thread: a
lung case's outlines took seconds of the UI thread): the input, the
real follow-up, the generated follow-up (its scenario in the title) and the difference map
(generated − real, with a colour bar), and for phantoms also the generated counterfactual
and its ground truth, each with its tumour outline; the cells share one window/level and a
cursor read-out (`viewing`). The table shows the columns that find failures first and fits
the dock; the others are a right-click on the header away (the CSV has them all).
Nothing here computes an image or a metric.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Optional

from qtpy.QtCore import Qt, Signal
from qtpy.QtWidgets import (QAbstractItemView, QComboBox, QFileDialog, QFormLayout, QGroupBox,
                            QHBoxLayout, QHeaderView, QLabel, QLineEdit, QMenu, QProgressBar,
                            QPushButton, QSpinBox, QTableWidget, QTableWidgetItem, QVBoxLayout,
                            QWidget)

from ..core.cohort import load_cohort
from ..core.errors import InputError
from ..engine.cohort_review import (METRICS, CaseReview, Metric, Skipped, cases_to_csv,
                                    describe_summary, metric_unit, summarise)
from ..engine.cohort_runner import (FAILED, ReviewJob, RunProgress, RunSummary, case_folder,
                                    read_review_case, run_cases)
from ..engine.jobs import CancelToken, Progress
from ..families import get_family
from ..science.measure import format_size
from .background import BackgroundRunner, StopsWhenClosed, notify_error
from .cells import case_cells, show_colour_bar
from .grid_view import leave_own_grid, show_cells
from .napari_access import real_viewer
from .reader_choice import remember_our_reader
from .viewing import (ContrastLink, CursorReadout, enlarge_window, readout_label,
                      show_orientation, show_scale_bar, show_slice)

GROUP = "inspector"
FIXED_COLUMNS = ("Patient", "Time", "Scenario")
# Shown at first (the dock's width without scrolling): the numbers that find failures;
# the others (PSNR, the sizes themselves, counterfactual details) by a right-click.
DEFAULT_COLUMNS = ("ssim", "match", "size_error_percent", "dice", "cf_match")
SCENARIO_WIDTH = 115  # px; the full scenario is in the tooltip and the cell title
CASE_ROLE = Qt.UserRole          # on the patient cell: index into `cases`
SORT_ROLE = Qt.UserRole + 1      # on metric cells: the number the column sorts by
DEFAULT = "model default"
RESULTS_SUFFIX = "_review"  # the default results folder: beside the manifest, named after it


def default_results(manifest: Path) -> Path:
    return manifest.parent / f"{manifest.stem}{RESULTS_SUFFIX}"


class _NumberItem(QTableWidgetItem):
    """A metric cell: shows the rounded value, sorts by the number (missing values first).
    A size is written by the one rule for sizes (`format_size`), as in the workspace and
    the reports; any other metric to its own decimals."""

    def __init__(self, value: Optional[float], metric: Metric):
        missing = value is None or not math.isfinite(value)
        super().__init__("—" if missing else format_size(value) if metric.unit == "size"
                         else f"{value:.{metric.decimals}f}")
        self.setData(SORT_ROLE, -math.inf if missing else float(value))
        self.setTextAlignment(int(Qt.AlignRight | Qt.AlignVCenter))

    def __lt__(self, other: QTableWidgetItem) -> bool:
        mine, theirs = self.data(SORT_ROLE), other.data(SORT_ROLE)
        if mine is None or theirs is None:
            return super().__lt__(other)
        return mine < theirs


class CohortInspector(StopsWhenClosed, QWidget):
    """Dock widget: manifest, run/cancel, the case table, summary and CSV export."""

    case_ready = Signal(int, object)  # run number, CaseReview; emitted from the worker
    case_failed = Signal(int, str, str)  # run number, case id, one-line reason; from the worker
    case_shown = Signal(object)  # the CaseReview now in the grid

    def __init__(self, napari_viewer, parent: Optional[QWidget] = None):
        super().__init__(parent)
        self.viewer = real_viewer(napari_viewer)  # not napari's proxy: see `napari_access`
        self.runner = BackgroundRunner("nacsim cohort review", self)
        self.runner.progressed.connect(self._on_progress)
        self.runner.state_changed.connect(self._on_state)
        # the selected case's layer data (contours on a finer grid, percentiles): newest wins
        self.loader = BackgroundRunner("nacsim inspector: the selected case", self,
                                       activity=False)
        self.case_ready.connect(self._on_case)
        self.case_failed.connect(self._on_case_failed)
        self.cases: list[CaseReview] = []
        self.skipped: list[Skipped] = []
        self.failed: list[tuple[str, str]] = []  # (case, one-line reason) of the last run
        self.results: Optional[Path] = None      # the folder of the last run's cases
        self.shown_case: Optional[CaseReview] = None
        self._run_number = 0
        self._closed = False
        self._family = None                   # the family of the cohort under review
        self._shown_columns = set(DEFAULT_COLUMNS)
        self.window_link = ContrastLink()     # input, real, generated: one window
        self._build()
        self.readout = CursorReadout(self.viewer, self.cursor_label.setText)
        remember_our_reader()

    # --- layout ---------------------------------------------------------------------------
    def _build(self) -> None:
        from ..science.generative.samplers import SAMPLERS

        self.path_edit = QLineEdit()
        self.path_edit.setPlaceholderText("cohort.json with real follow-ups")
        self.path_edit.returnPressed.connect(self.run)
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse)
        path_row = QHBoxLayout()
        path_row.addWidget(self.path_edit, 1)
        path_row.addWidget(browse)
        self.results_edit = QLineEdit()
        self.results_edit.setPlaceholderText(f"beside the manifest: <name>{RESULTS_SUFFIX}")
        self.results_edit.setToolTip("each patient's images and record are kept here as it "
                                     "finishes; Run on the same folder resumes a cancelled "
                                     "review (docs/cohort-scale.md)")

        self.seed = QSpinBox()
        self.seed.setRange(0, 2**31 - 1)
        self.steps = QSpinBox()
        self.steps.setRange(0, 1000)
        self.steps.setSpecialValueText(DEFAULT)  # 0: the model card's default
        self.sampler = QComboBox()
        self.sampler.addItems([DEFAULT, *SAMPLERS])
        advanced = QGroupBox("Advanced")
        form = QFormLayout(advanced)
        form.addRow("Seed", self.seed)
        form.addRow("Steps", self.steps)
        form.addRow("Sampler", self.sampler)
        form.addRow("Results folder", self.results_edit)

        self.run_button = QPushButton("Run")
        self.run_button.clicked.connect(self.run)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.clicked.connect(self.cancel)
        self.cancel_button.setEnabled(False)
        buttons = QHBoxLayout()
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.cancel_button)

        self.progress = QProgressBar()
        self.progress.setFormat("%v / %m patients")
        self.progress.setVisible(False)
        self.status = QLabel("Open a cohort manifest and press Run.")
        self.status.setWordWrap(True)
        self.table = self._make_table()
        self.summary = QLabel("")
        self.summary.setWordWrap(True)
        self.export_button = QPushButton("Export CSV…")
        self.export_button.clicked.connect(lambda: self.export_csv())
        self.export_button.setEnabled(False)

        self.setMinimumWidth(560)  # the default columns fit without scrolling
        layout = QVBoxLayout(self)
        layout.addWidget(QLabel("Cohort manifest"))
        layout.addLayout(path_row)
        layout.addWidget(advanced)
        layout.addLayout(buttons)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addWidget(self.table, 1)
        layout.addWidget(self.summary)
        layout.addWidget(self.export_button)
        self.cursor_label = readout_label()
        layout.addWidget(self.cursor_label)

    def _make_table(self) -> QTableWidget:
        table = QTableWidget(0, len(FIXED_COLUMNS) + len(METRICS))
        table.setEditTriggers(QAbstractItemView.NoEditTriggers)
        table.setSelectionBehavior(QAbstractItemView.SelectRows)
        table.setSelectionMode(QAbstractItemView.SingleSelection)
        table.verticalHeader().setVisible(False)
        header = table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.Interactive)  # widths: `_fit_columns`
        header.setStretchLastSection(False)
        header.setContextMenuPolicy(Qt.CustomContextMenu)
        header.customContextMenuRequested.connect(self._column_menu)
        header.setToolTip("right-click: choose the columns")
        table.setColumnWidth(2, SCENARIO_WIDTH)
        table.setTextElideMode(Qt.ElideRight)
        table.setSortingEnabled(True)
        table.itemSelectionChanged.connect(self._on_select)
        self._has_truth = False
        self._set_headers(table, "mm²")
        return table

    def showEvent(self, event) -> None:  # noqa: N802 (Qt)
        """The first time it is shown, enlarge napari's window (readable cells)."""
        super().showEvent(event)
        if not getattr(self, "_resized", False):
            self._resized = True
            enlarge_window(self)

    def _fit_columns(self) -> None:
        """Each column as wide as its header words and numbers (Qt's own fit also keeps
        room for a sort arrow on every column, which alone would need side-scrolling);
        the scenario elided at a fixed width (the full text is in its tooltip)."""
        table = self.table
        metrics = table.fontMetrics()
        bold = table.horizontalHeader().fontMetrics()
        for col in range(table.columnCount()):
            if col == 2:
                table.setColumnWidth(col, SCENARIO_WIDTH)
                continue
            header = table.horizontalHeaderItem(col)
            texts = header.text().split("\n") if header is not None else []
            widths = [bold.horizontalAdvance(t) for t in texts]
            widths += [metrics.horizontalAdvance(table.item(r, col).text())
                       for r in range(table.rowCount()) if table.item(r, col) is not None]
            table.setColumnWidth(col, max(widths + [24]) + 16)

    def _column_menu(self, position) -> None:
        menu = QMenu(self)
        for k, metric in enumerate(METRICS):
            action = menu.addAction(self.table.horizontalHeaderItem(len(FIXED_COLUMNS) + k)
                                    .text().replace("\n", " "))
            action.setCheckable(True)
            action.setChecked(metric.key in self._shown_columns)
            action.setEnabled(not metric.counterfactual or self._has_truth)
            action.toggled.connect(lambda on, key=metric.key: self.show_column(key, on))
        menu.exec_(self.table.horizontalHeader().mapToGlobal(position))

    def show_column(self, key: str, shown: bool = True) -> None:
        """Show or hide a metric column (the CSV export always has every column)."""
        (self._shown_columns.add if shown else self._shown_columns.discard)(key)
        self._apply_columns(self.table)

    def _set_headers(self, table: QTableWidget, size_unit: str) -> None:
        for col, text in enumerate(FIXED_COLUMNS):
            table.setHorizontalHeaderItem(col, QTableWidgetItem(text))
        for k, metric in enumerate(METRICS):
            unit = metric_unit(metric, size_unit)
            # the unit on a second line: the column is as narrow as its numbers
            item = QTableWidgetItem(f"{metric.label}\n({unit})" if unit else metric.label)
            item.setToolTip(metric.description)
            table.setHorizontalHeaderItem(len(FIXED_COLUMNS) + k, item)
        self._apply_columns(table)
        if table is getattr(self, "table", None):
            self._fit_columns()

    def _apply_columns(self, table: QTableWidget) -> None:
        """The chosen columns; counterfactual ones only where there is ground truth."""
        for k, metric in enumerate(METRICS):
            shown = metric.key in self._shown_columns and \
                (not metric.counterfactual or self._has_truth)
            table.setColumnHidden(len(FIXED_COLUMNS) + k, not shown)

    def _show_counterfactual_columns(self, table: QTableWidget, shown: bool) -> None:
        self._has_truth = shown
        self._apply_columns(table)

    # --- actions --------------------------------------------------------------------------
    def _browse(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open a cohort manifest",
                                              self.path_edit.text(), "Cohort manifest (*.json)")
        if path:
            self.path_edit.setText(path)

    def run(self) -> None:
        """Validate the manifest here (fast, one-line errors at once) and review it in the
        background: `nacsim review`'s run in this process, resuming the results folder."""
        text = self.path_edit.text().strip()
        if not text:
            self._fail(InputError("cohort manifest", "choose a cohort.json first"))
            return
        manifest = Path(text).expanduser()
        chosen = self.results_edit.text().strip()
        out = Path(chosen).expanduser() if chosen else default_results(manifest)
        try:
            cohort = load_cohort(manifest)
            job = ReviewJob(cohort, seed=self.seed.value(), steps=self.steps.value() or None,
                            sampler=None if self.sampler.currentText() == DEFAULT
                            else self.sampler.currentText(), inputs=True)
        except InputError as err:
            self._fail(err)
            return
        self._run_number += 1
        self._closed = False
        number = self._run_number
        self._family = get_family(cohort.family)
        self._clear()
        self.results = out

        def job_fn(token: CancelToken, progress: Progress) -> RunSummary:
            def report(state: RunProgress) -> None:
                if state.last:  # a patient finished (or was found finished): read it here
                    record, reviews = read_review_case(case_folder(out, state.last))
                    if record.get("status") == FAILED:
                        self.case_failed.emit(number, state.last, record.get("reason", ""))
                    for review in reviews:
                        self.case_ready.emit(number, review)  # queued: the UI adds the row
                progress(state.total - state.remaining, state.total, state.describe())

            # resume: a folder of an earlier run of this very request is read, not redone
            return run_cases(job, out, workers=0, resume=True, progress=report,
                             on_start=report, cancel=token)

        self.progress.setRange(0, len(job))
        self.progress.setValue(0)
        self.progress.setVisible(True)
        self.status.setText(f"Reviewing {len(job)} patients of {manifest.name} into {out}…")
        self.runner.submit(job_fn, lambda summary: self._on_done(number, summary),
                           lambda exc: self._on_error(number, exc))

    def cancel(self) -> None:
        """Stop the run within a sampler step; the finished patients stay in the results
        folder (Run resumes)."""
        self.runner.cancel()

    def export_csv(self, path: str | Path | None = None) -> Optional[Path]:
        """Write the table (in its current sort order) as CSV; asks for a file if no path."""
        if not self.cases:
            return None
        if path is None:
            path, _ = QFileDialog.getSaveFileName(self, "Export the case table",
                                                  "cohort_review.csv", "CSV (*.csv)")
            if not path:
                return None
        try:
            written = cases_to_csv(self.ordered_cases(), path)
        except (InputError, OSError) as err:
            notify_error(err, "CSV export")
            return None
        self.status.setText(f"Exported {len(self.cases)} cases to {written}")
        return written

    def ordered_cases(self) -> list[CaseReview]:
        return [self.cases[self.table.item(row, 0).data(CASE_ROLE)]
                for row in range(self.table.rowCount())]

    # --- results --------------------------------------------------------------------------
    def _clear(self) -> None:
        self.cases, self.skipped, self.failed = [], [], []
        # a new cohort opens on its family's window (a lung CT after a breast MIP would keep
        # the MIP's 0–1 window: a black-and-white image), not the last one chosen
        self.window_link.set_layers([])
        self.table.setRowCount(0)
        self._show_counterfactual_columns(self.table, False)
        self.summary.setText("")
        self.export_button.setEnabled(False)

    def _on_case(self, number: int, case: CaseReview) -> None:
        if number != self._run_number or self._closed:
            return  # a superseded run's case, still in the queue
        if not self.cases:
            self._set_headers(self.table, case.unit)
        index = len(self.cases)
        self.cases.append(case)
        table = self.table
        table.setSortingEnabled(False)  # Qt: inserting into a sorted table scrambles rows
        row = table.rowCount()
        table.insertRow(row)
        first = QTableWidgetItem(case.patient)
        first.setData(CASE_ROLE, index)
        table.setItem(row, 0, first)
        table.setItem(row, 1, QTableWidgetItem(case.time))
        scenario = QTableWidgetItem(self._scenario_cell(case))
        tip = f"scenario: {case.scenario_text}"
        if case.counterfactual is not None:
            tip += f"\ncounterfactual: {case.provenance.get('counterfactual_text')}"
        scenario.setToolTip(tip)
        table.setItem(row, 2, scenario)
        for k, metric in enumerate(METRICS):
            item = _NumberItem(case.metrics.get(metric.key), metric)
            item.setToolTip(metric.description)
            table.setItem(row, len(FIXED_COLUMNS) + k, item)
        table.setSortingEnabled(True)
        if case.has_truth:
            self._show_counterfactual_columns(table, True)
        self._fit_columns()
        self.summary.setText(describe_summary(summarise(self.cases)))
        self.export_button.setEnabled(True)

    def _scenario_cell(self, case: CaseReview) -> str:
        """The scenario in the narrow column: the variables the schema puts in titles first
        (lung: PD-L1, not the age and blood counts that come first in the schema and filled
        the column), the rest after them (the full text is the tooltip)."""
        if self._family is None:
            return case.scenario_text
        schema = self._family.schema
        values = {k: v for k, v in case.clinical.items() if k in
                  {var.name for var in schema.condition_variables}}
        titled = {k: v for k, v in values.items() if schema.variable(k).in_title and
                  schema.variable(k).derive is None}
        rest = {k: v for k, v in values.items() if k not in titled}
        parts = [schema.describe(part) for part in (titled, rest) if part]
        return " · ".join(parts) or case.scenario_text

    def _on_case_failed(self, number: int, case_id: str, reason: str) -> None:
        if number != self._run_number or self._closed:
            return
        self.failed.append((case_id, reason))
        # the run goes on; the reason names the file or value at fault
        notify_error(InputError(f"cohort review: {case_id}", reason))

    def _on_done(self, number: int, summary: RunSummary) -> None:
        if number != self._run_number or self._closed:
            return
        self.progress.setVisible(False)
        self.skipped = [Skipped(case, reason) for case, reason in summary.skipped]
        text = f"Done: {len(self.cases)} cases"
        if summary.reused:
            text += f" ({summary.reused} patient(s) from an earlier run)"
        for what, items in (("skipped", summary.skipped), ("failed", summary.failed)):
            if items:
                shown = "; ".join(f"{case}: {reason}" for case, reason in items[:3])
                more = "; …" if len(items) > 3 else ""
                text += f"; {len(items)} patient(s) {what} ({shown}{more})"
        self.status.setText(text + f". Saved in {self.results}. Select a row to inspect it.")

    def _on_error(self, number: int, exc: Exception) -> None:
        if number == self._run_number and not self._closed:
            self._fail(exc)

    def _fail(self, exc: BaseException) -> None:
        notify_error(exc, "cohort review")
        self.status.setText(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)

    def _on_progress(self, done: int, total: int, what: str) -> None:
        if not self._closed:
            self.progress.setRange(0, total)
            self.progress.setValue(done)
            self.status.setText(f"Reviewing: {what or 'starting'}")

    def _on_state(self, state: str) -> None:
        if self._closed:
            return
        self.cancel_button.setEnabled(state == "running")
        if state in ("cancelled", "failed"):
            self.progress.setVisible(False)
        if state == "cancelled":
            self.status.setText(f"Cancelled after {len(self.cases)} cases: the finished "
                                f"patients are kept in {self.results}; Run resumes.")

    def _on_select(self) -> None:
        rows = {index.row() for index in self.table.selectedIndexes()}
        if len(rows) != 1:
            return
        item = self.table.item(rows.pop(), 0)
        if item is not None:
            self.select_case(self.cases[item.data(CASE_ROLE)])

    def _window(self) -> tuple[float, float]:
        family = self._family
        window = family.window_presets[0].limits if family is not None else (0.0, 1.0)
        if self.window_link.limits is not None:
            window = self.window_link.limits  # the window the user chose stays
        return window

    def select_case(self, case: CaseReview) -> None:
        """Show ``case`` without holding the UI thread while its layer data are made (a lung
        case's tumour outlines on a 4x finer grid took seconds): they are made in a worker
        (the newest selection wins), then put on screen; ``case_shown`` says when."""
        window = self._window()

        def shown(made) -> None:  # only the newest selection's (the runner drops the rest)
            if not self._closed:
                self._show(case, made)

        self.loader.submit(lambda token, progress: case_cells(case, window), shown)

    def show_case(self, case: CaseReview) -> list[list[Any]]:
        """Show ``case`` now (on this thread; a row selection uses `select_case`)."""
        return self._show(case, case_cells(case, self._window()))

    def _show(self, case: CaseReview, made) -> list[list[Any]]:
        cells, roles, labels = made
        family = self._family
        shown = show_cells(self.viewer, GROUP, cells, roles=roles,
                           columns=2)  # 2 x 2 or 3 x 2: square images, large cells
        images = [row[0] for row in shown]
        difference = images[3]
        show_colour_bar(difference)  # the legend of the difference colours
        self.window_link.set_layers([layer for layer in images if layer is not difference])
        unit = family.model_input.value_unit if family is not None else ""
        self.readout.set_cells(list(zip(labels, images)), unit)
        if family is not None:
            show_orientation(self.viewer, family.orientation)
            # a volume opens on the slice where the case's input tumour is largest
            show_slice(self.viewer, images[0], family.display_slice(case.images.baseline_mask))
        show_scale_bar(self.viewer)
        self.shown_case = case
        self.case_shown.emit(case)
        return shown

    # --- closing --------------------------------------------------------------------------
    def shutdown(self) -> None:
        """Stop the run and wait for its thread (closing the widget or the viewer)."""
        if not self._closed:
            self._closed = True
            self.runner.shutdown()
            self.loader.shutdown()
            self.window_link.close()
            try:
                self.readout.close()
            except (RuntimeError, AttributeError):  # the viewer is already gone
                pass
            leave_own_grid(self.viewer, GROUP)  # never the user's layers left hidden

