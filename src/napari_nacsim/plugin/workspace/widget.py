"""The what-if workspace: pick a patient's pre-treatment image, set the clinical scenario,
and compare generated follow-ups side by side with tumour outlines, sizes and diameters.

A thin face over `engine.session.WhatIfSession`: the widget turns its controls into a
`WhatIfRequest`, runs it with a `BackgroundRunner` (off the UI thread, newest request wins),
and shows the `WhatIfResult` — grid cells (the input + each scenario, one camera, one linked
window/level, orientation letters, a scale bar in mm, the value under the cursor in every
cell), tumour outlines, the docked size table and size-over-time plot. Nothing here
computes an image or a size.

When it opens, the workspace starts at once: with a model input open (the sample patient)
it generates the default comparison without a click; otherwise it loads the model in the
background so that the first run does not wait for it. The widget wires its collaborators
together (the package docstring lists them) and runs the jobs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QWidget

from ...core.errors import InputError
from ...engine.jobs import CancelToken, Progress
from ...engine.session import WhatIfRequest, WhatIfResult
from ..background import BackgroundRunner, StopsWhenClosed, notify_error
from ..cells import short_title
from ..grid_view import leave_grid
from ..napari_access import real_viewer
from ..reader_choice import remember_our_reader
from ..viewing import WINDOW_SIZE, enlarge_window
from . import input_finder, patient_input
from .comparison import Comparison
from .controls import NAMES, WorkspaceControls
from .docks import SizeDocks
from .input_finder import InputChoice, input_fits
from .model_list import ModelList, check_model_folder, choose_model_folder, read_entry
from .result_view import GROUP, ResultView
from .saving import ResultSaver, choose_save_folder
from .window_presets import WindowPresets

__all__ = ["GROUP", "WhatIfWorkspace"]

DEBOUNCE_MS = 150  # coalesce bursts of edits (typing a number) into one request


class WhatIfWorkspace(StopsWhenClosed, QWidget):
    """Dock widget: scenario panel, model and run controls; results in the viewer."""

    def __init__(self, napari_viewer, parent: Optional[QWidget] = None):
        super().__init__(parent)
        self._ready = False  # no runs while the controls are being built
        # the viewer itself, not napari's proxy of it (the Plugins menu, `napari -w`, the
        # demo): see `napari_access`
        self.viewer = real_viewer(napari_viewer)
        self.runner = BackgroundRunner("nacsim what-if", self)
        # input layer name -> the family's extra model inputs made with it (lung: lobe and
        # vessel crops), passed to every run on that input
        self._contexts: dict[str, dict] = {}
        self.result: Optional[WhatIfResult] = None
        self.results_shown = 0
        self.sizes = SizeDocks()
        self.table, self.plot = self.sizes.table, self.sizes.plot
        self._closed = False
        self._resized = False
        self._debounce = QTimer(self)
        self._debounce.setSingleShot(True)
        self._debounce.setInterval(DEBOUNCE_MS)
        self._debounce.timeout.connect(self._auto_run)
        self._submitted: Optional[tuple] = None  # what the newest run was asked (its key)
        self.controls = WorkspaceControls(self)
        for name in NAMES:  # `workspace.seed`, as tests, scripts and the benchmark reach them
            setattr(self, name, getattr(self.controls, name))
        self.models = ModelList(self.model_combo)
        self.comparison = Comparison(self.panel_layout, self.compare_combo, self.compare_values)
        self.inputs = InputChoice(self.viewer, self.input_combo)
        self.windows = WindowPresets(self.window_combo)
        self.view = ResultView(self.viewer, self.windows.link, self.cursor_label.setText)
        self.window_link, self.sd_link = self.view.window_link, self.view.sd_link
        self.readout = self.view.readout
        self.saver = ResultSaver(self.save_format)
        self._connect()
        self.models.add_bundled()
        self._refresh_layers()
        layers = self.viewer.layers.events
        for event in (layers.inserted, layers.removed, layers.reordered):
            event.connect(self._refresh_layers)
        self.inputs.select_in_viewer()
        remember_our_reader()
        self._ready = True
        self._update_header()
        QTimer.singleShot(0, self._start)  # once the widget is docked: the first run

    def _show_progress(self, done: int, total: int, what: str) -> None:
        self.controls.show_progress(done, total, what)

    def _show_state(self, state: str) -> None:
        self.controls.show_state(state)

    def _connect(self) -> None:
        controls = self.controls
        # Through the widget's own methods: Qt drops a connection to a QObject's method when
        # the widget is deleted, never one to a plain object's (a late progress signal of a
        # job would then reach a deleted progress bar).
        self.runner.progressed.connect(self._show_progress)
        self.runner.state_changed.connect(self._show_state)
        self.input_combo.currentIndexChanged.connect(self._on_input_changed)
        controls.open_patient_button.clicked.connect(self._choose_cohort_patient)
        self.make_input_button.clicked.connect(lambda: self.make_model_input())
        self.model_combo.currentIndexChanged.connect(self._on_model_changed)
        controls.add_model_button.clicked.connect(self._choose_model_folder)
        self.compare_combo.currentIndexChanged.connect(self._on_compare_changed)
        for signal in controls.scenario_signals():
            signal.connect(self._on_scenario_changed)
        self.grid_mode.toggled.connect(self._on_grid_toggled)
        self.outlines.toggled.connect(self._apply_outlines)
        self.advanced.toggled.connect(self._on_advanced_toggled)
        self.auto_run.toggled.connect(lambda on: None if on else self._debounce.stop())
        self.run_button.clicked.connect(self.run)
        self.cancel_button.clicked.connect(self.cancel)
        self.save_button.clicked.connect(self._choose_save_folder)

    @property
    def panel(self):
        """The scenario panel of the current model's family (`scenario_panel.ScenarioPanel`)."""
        return self.comparison.panel

    # --- models -------------------------------------------------------------------------
    def add_model_folder(self, folder: str | Path) -> bool:
        """Add a local model folder (hash-checked card); a folder that is not a model gets a
        notification, nothing else."""
        try:
            folder = check_model_folder(folder)
        except InputError as err:
            notify_error(err)
            return False
        self.models.add(read_entry(folder))
        return True

    def _choose_model_folder(self) -> None:
        folder = choose_model_folder(self)
        if folder:
            self.add_model_folder(folder)

    def _on_model_changed(self, *_):
        model = self.models.current
        if model is None:
            return
        if self.comparison.family is None or model.family.name != self.comparison.family.name:
            self._set_family(model.family)
        self.controls.show_sampling_defaults(model.sampling_defaults)
        if self.panel is not None:
            self.panel.set_outcome_inputs(model.outcome_inputs)
        self._update_make_input()  # the scans it is made from depend on the family
        self._update_ready_status()
        self._on_scenario_changed()

    def _set_family(self, family) -> None:
        panel = self.comparison.set_family(family)
        panel.changed.connect(self._on_scenario_changed)
        self.controls.show_default_samples(family.default_samples)
        self._prefill()
        self.comparison.show_compared()  # both states: disabled
        self.windows.set_family(family)

    # --- the input layer, the header ----------------------------------------------------
    def input_layer(self):
        return self.inputs.layer()

    def select_input(self, name: str) -> None:
        self.inputs.select(name)

    def _refresh_layers(self, *_):
        if self.inputs.refresh(self.models.current):
            self._on_input_changed()
        self._update_make_input()

    def _on_input_changed(self, *_):
        # an input of another family's patient selects a model of that family (the first
        # listed): a lung patient is never sent to the breast model because it is listed
        # first. A model the user chose for the same family stays.
        layer = self.input_layer()
        wanted = input_finder.layer_family(layer) if layer is not None else None
        if wanted is not None:
            self.models.select_family(wanted)
        self._prefill()
        if self._ready:
            self._update_header()
            self._update_ready_status()
        self._on_scenario_changed()

    def _prefill(self) -> None:
        try:
            self.comparison.prefill(self.input_layer())
        except InputError as err:  # the layer's record disagrees with the schema
            notify_error(err)

    def _on_compare_changed(self, *_):
        self.comparison.show_values()
        self.comparison.show_compared()
        self._on_scenario_changed()

    def _update_ready_status(self, force: bool = False) -> None:
        """Say what the workspace waits for (when no run is going on, or ``force``)."""
        model = self.models.current
        if (self.runner.running and not force) or model is None:
            return
        self.status.setText(input_finder.ready_status(
            self.input_layer(), model, self.viewer.layers, self.make_input_button.text()))

    def _update_header(self) -> None:
        self.header.setText(input_finder.header_html(
            self.input_layer(), self.models.current, self.comparison.scenario_text()))

    # --- making the model input: a cohort patient, the open scans -----------------------
    def _choose_cohort_patient(self) -> None:
        try:
            chosen = patient_input.choose_cohort_patient(self)
        except InputError as err:
            notify_error(err)
            return
        if chosen is not None:
            self.open_cohort_patient(*chosen)

    def open_cohort_patient(self, cohort, patient_id: str) -> int:
        """Load the patient's baseline MIP off the UI thread, add it as the input layer and
        pre-fill the scenario with the patient's clinical values."""
        self.status.setText(f"opening patient {patient_id}…")
        return self.runner.submit(patient_input.cohort_patient_job(cohort, patient_id),
                                  self._add_patient_layers)

    def _update_make_input(self) -> None:
        model = self.models.current
        if model is None:
            return
        found = input_finder.visit_layers(self.viewer.layers, model.family)
        self.make_input_button.setEnabled(found is not None)
        self.make_input_button.setToolTip(patient_input.make_input_tooltip(model.family, found))

    def make_model_input(self, layers: Optional[dict[str, Any]] = None) -> Optional[int]:
        """Make the model input from open scans of the baseline visit, off the UI thread,
        the family's way (`patient_input.open_scans_job`); it opens as the input with the
        patient's values. ``layers``: channel or mask name -> layer (default: found by
        name)."""
        family = self.models.current.family
        layers = layers or input_finder.visit_layers(self.viewer.layers, family)
        if not layers:
            notify_error(patient_input.missing_scans(family))
            return None
        job = patient_input.open_scans_job(family, layers)
        self.status.setText(f"making the {family.model_input.short_name}…")
        return self.runner.submit(job, self._add_patient_layers, lambda exc: self._failed(exc))

    def _add_patient_layers(self, case: dict) -> None:
        if self._closed:
            return
        image = patient_input.add_case_layers(self.viewer, case)
        self._contexts[image.name] = dict(case.get("context") or {})
        self.select_input(image.name)
        self.status.setText(case.get("message") or
                            f"patient {case['patient']}: scenario filled from the manifest")

    # --- requests and runs --------------------------------------------------------------
    def request(self) -> WhatIfRequest:
        model = self.models.current
        return self.comparison.request(self.controls.sampling(),
                                       model.sampling_defaults if model is not None else {})

    def _run_key(self, request: WhatIfRequest) -> tuple:
        """What makes two runs the same: the model, the input layer (its data) and the
        request."""
        layer = self.input_layer()
        return (self.models.current.text, layer.name if layer is not None else None,
                id(layer.data) if layer is not None else None, request.key())

    def _auto_run(self) -> Optional[int]:
        """A run after a change (debounced): none where nothing that matters changed (ticking
        Advanced with its values at the model's defaults, a value set back while a run for
        it is going on or shown)."""
        try:
            key = self._run_key(self.request())
        except InputError:
            key = None  # run() says what is wrong
        if key is not None and key == self._submitted:
            return None
        return self.run()

    def _on_scenario_changed(self, *_):
        if not self._ready:
            return
        self._update_header()
        if self.auto_run.isChecked() and input_fits(self.input_layer(), self.models.current):
            self._debounce.start()

    def _on_advanced_toggled(self, on: bool) -> None:
        self.controls.show_advanced(on)
        self._on_scenario_changed()

    def run(self) -> Optional[int]:
        """Submit the current panel state (supersedes a running request)."""
        self._debounce.stop()
        model, layer = self.models.current, self.input_layer()
        try:
            image = input_finder.input_scan(layer, model, self.viewer.layers,
                                            self.make_input_button.text())
            request = self.request()
        except InputError as err:
            notify_error(err)
            self.status.setText(str(err))
            return None
        context = self._contexts.get(layer.name)
        self._submitted = self._run_key(request)

        def job(token: CancelToken, progress: Progress) -> WhatIfResult:
            return model.load_session().run(image, request, progress=progress, cancel=token,
                                            context=context)

        self.status.setText("generating…" if model.session is not None else
                            "loading the model, then generating…")
        return self.runner.submit(job, self._show_result, lambda exc: self._failed(exc))

    def _start(self) -> None:
        """Right after opening: the comparison without a click where a model input is open
        (and updates are on), or where the baseline scans it is made from are (the model
        input is made first; once it opens, the comparison follows); otherwise the model
        loads now, in the background, so that the first run does not wait for it."""
        model = self.models.current
        if self._closed or model is None:
            return
        layer = self.input_layer()
        if self.auto_run.isChecked() and input_fits(layer, model):
            self.run()
        elif self.auto_run.isChecked() and input_finder.is_visit_scan(
                layer, input_finder.visit_layers(self.viewer.layers, model.family)):
            self.make_model_input()
        else:
            self.preload()

    def preload(self) -> Optional[int]:
        """Load the current model and segmenter in the worker thread (no UI wait)."""
        model = self.models.current
        if model.session is not None or self.runner.running:  # never supersedes a user's job
            return None

        def job(token: CancelToken, progress: Progress):
            progress(0, 1, "loading the model")
            return model.load_session()

        self.status.setText("loading the model…")
        return self.runner.submit(job, lambda _: None if self._closed else
                                  self._update_ready_status(force=True),
                                  lambda exc: self._failed(exc))

    def cancel(self) -> None:
        self._debounce.stop()
        self._submitted = None  # the same request may be asked again
        self.runner.cancel()
        self.status.setText("cancelled")

    def _failed(self, exc: Exception) -> None:
        self._submitted = None  # asking again is worth a try
        notify_error(exc, "what-if run")
        self.status.setText(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)

    # --- showing a result ---------------------------------------------------------------
    def _show_result(self, result: WhatIfResult) -> None:
        if self._closed:  # a result queued while the widget closed
            return
        self.result = result
        self.results_shown += 1
        self.save_button.setEnabled(True)  # the result is whole: saving does not need the view
        self.view.show(result, self.windows.limits(), grid=self.grid_mode.isChecked(),
                       outlines=self.outlines.isChecked())
        self.sizes.show(result, self.viewer, self.window())
        done = "; ".join(f"{short_title(f.title)}: {f.describe_size()}"
                         for _, f in result.shown())
        self.status.setText(f"Done in {result.seconds['total']:.1f} s. Input "
                            f"{result.baseline_size.describe()}; {done}")

    def set_window(self, name: str) -> None:
        """Choose a window preset by name (or the start of its description)."""
        self.windows.select(name)

    def _apply_outlines(self, *_):
        self.view.show_outlines(self.outlines.isChecked())

    def _on_grid_toggled(self, on: bool) -> None:
        if self.result is None:
            return
        if on:
            self._show_result(self.result)
        else:
            leave_grid(self.viewer)

    def showEvent(self, event) -> None:  # noqa: N802 (Qt)
        """The first time it is shown, enlarge napari's window so that every cell and its
        title are readable."""
        super().showEvent(event)
        if not self._resized:
            self._resized = True
            enlarge_window(self, WINDOW_SIZE)

    # --- saving -------------------------------------------------------------------------
    def save_results(self, folder: str | Path, fmt: Optional[str] = None) -> Optional[Path]:
        """Write the shown run into a new folder inside ``folder``, in ``fmt`` ("nifti",
        "dicom", "both"; default: the Save as choice), on this thread (scripts, tests)."""
        return self.saver.save_now(self.result, folder, fmt)

    def _choose_save_folder(self) -> None:
        folder = choose_save_folder(self)
        if folder:
            self.saver.save(self.result, folder)   # off the UI thread; notifies when written

    # --- lifetime -----------------------------------------------------------------------
    def shutdown(self) -> None:
        """Stop any run and wait for its thread (closing the widget mid-run); the viewing
        aids leave with the widget."""
        self._closed = True
        self._debounce.stop()
        self.runner.shutdown()
        self.saver.wait()
        self.view.close()

    def result_layers(self) -> list:
        return self.view.layers()
