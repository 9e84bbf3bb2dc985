"""The what-if workspace: pick a patient's pre-treatment image, set the clinical scenario,
and compare generated follow-ups side by side with tumour masks and size deltas.

A thin face over `engine.session.WhatIfSession`: the widget turns its controls into a
`WhatIfRequest`, runs it with a `BackgroundRunner` (off the UI thread, newest request wins),
and shows the `WhatIfResult` — grid cells (baseline + each scenario, one camera, same
contrast), contour masks, the docked size table and size-over-time plot. Nothing here
computes an image or a size.
"""

from __future__ import annotations

import datetime
import logging
from pathlib import Path
from typing import Optional

import numpy as np
from qtpy.QtCore import Qt, QTimer
from qtpy.QtWidgets import (QCheckBox, QComboBox, QFileDialog, QFormLayout, QGroupBox,
                            QHBoxLayout, QLabel, QProgressBar, QPushButton, QSpinBox,
                            QDoubleSpinBox, QLineEdit, QVBoxLayout, QWidget)

from ..core.errors import InputError
from ..core.schema import BINARY, CATEGORICAL, FamilySchema, family_schema
from ..families import family_names, get_family
from ..engine.jobs import CancelToken, Progress
from ..engine.session import WhatIfRequest, WhatIfResult, WhatIfSession
from .background import BackgroundRunner, StopsWhenClosed, notify_error
from .grid_view import group_layers, leave_grid, make_layer, show_cells
from .layers import METADATA_KEY, contour_layer_data, layer_to_scan, scan_to_layer_data
from .scenario_panel import TARGET, ScenarioPanel
from .size_views import SizePlot, SizeTable

log = logging.getLogger(__name__)

GROUP = "whatif"
SAMPLERS = ("dpmpp", "unipc", "ddim")
DEBOUNCE_MS = 150  # coalesce bursts of edits (typing a number) into one request


def image_cell(scan, name: str, window=(0.0, 1.0), **kwargs) -> tuple:
    kwargs.setdefault("contrast_limits", list(window))  # every cell the same contrast
    return scan_to_layer_data(scan, name=name, **kwargs)


def _with(title: str, word: str) -> str:
    """``"T2 · pCR (synthetic)"`` + ``"tumour"`` -> ``"T2 · pCR tumour (synthetic)"``."""
    marker = " (synthetic)"
    return title.replace(marker, f" {word}{marker}") if marker in title else f"{title} {word}"


class WhatIfWorkspace(StopsWhenClosed, QWidget):
    """Dock widget: scenario panel, model and run controls; results in the viewer."""

    def __init__(self, napari_viewer, parent: Optional[QWidget] = None):
        super().__init__(parent)
        self._ready = False  # no runs while the controls are being built
        self.viewer = napari_viewer
        self.runner = BackgroundRunner("nacsim what-if", self)
        self.runner.progressed.connect(self._on_progress)
        self.runner.state_changed.connect(self._on_state)
        self._models: list[tuple[str, Optional[Path], str]] = []  # text, folder, family
        self._sampling_defaults: dict[str, dict] = {}  # per model text: its card's defaults
        self._sessions: dict[str, WhatIfSession] = {}
        self._schema: Optional[FamilySchema] = None
        self.result: Optional[WhatIfResult] = None
        self.results_shown = 0
        self.table = SizeTable()
        self.plot = SizePlot()
        self._docks_added = False
        self._debounce = QTimer(self)
        self._debounce.setSingleShot(True)
        self._debounce.setInterval(DEBOUNCE_MS)
        self._debounce.timeout.connect(self.run)
        self._build()
        # every family's bundled model (the registry lists them); the first one selected
        bundled = [n for n in family_names() if get_family(n).bundled_generator]
        for name in reversed(bundled):
            self._add_model(None, name)
        self._refresh_layers()
        layers = self.viewer.layers.events
        for event in (layers.inserted, layers.removed, layers.reordered):
            event.connect(self._refresh_layers)
        self._ready = True

    # --- construction -------------------------------------------------------------------
    def _build(self) -> None:
        layout = QVBoxLayout(self)
        banner = QLabel("Generated follow-ups are <b>synthetic counterfactuals</b>, "
                        "not measurements.")
        banner.setWordWrap(True)
        layout.addWidget(banner)

        source = QFormLayout()
        open_patient = QPushButton("Open a cohort patient…")
        open_patient.setToolTip("pick a patient of a cohort manifest: its pre-treatment model "
                                "input (breast: the subtraction MIP; lung: the CT crop) opens "
                                "as the input and its clinical values fill the scenario")
        open_patient.clicked.connect(self._choose_cohort_patient)
        source.addRow(open_patient)
        self.input_combo = QComboBox()
        self.input_combo.setToolTip("the pre-treatment image the selected model takes (sample "
                                    "data, `nacsim mip` / `nacsim crop`, or a cohort patient)")
        self.input_combo.currentIndexChanged.connect(self._on_input_changed)
        source.addRow("Pre-treatment image", self.input_combo)
        self.model_combo = QComboBox()
        self.model_combo.currentIndexChanged.connect(self._on_model_changed)
        add_model = QPushButton("Add model folder…")
        add_model.clicked.connect(self._choose_model_folder)
        row = QHBoxLayout()
        row.addWidget(self.model_combo, 1)
        row.addWidget(add_model)
        source.addRow("Model", row)
        self.compare_combo = QComboBox()
        self.compare_combo.setToolTip("generate the scenario once per value of this variable, "
                                      "side by side")
        self.compare_combo.currentIndexChanged.connect(self._on_compare_changed)
        source.addRow("Compare", self.compare_combo)
        self.compare_values = QLineEdit()
        self.compare_values.setToolTip("the values compared, separated by commas (numbers in "
                                       "the variable's unit, or category names)")
        self.compare_values.editingFinished.connect(self._on_scenario_changed)
        source.addRow("Values", self.compare_values)
        layout.addLayout(source)

        self.panel_box = QGroupBox("Scenario")
        self.panel_layout = QVBoxLayout(self.panel_box)
        self.panel: Optional[ScenarioPanel] = None
        layout.addWidget(self.panel_box)

        self.advanced = QGroupBox("Advanced")
        self.advanced.setCheckable(True)
        self.advanced.setChecked(False)
        form = QFormLayout(self.advanced)
        self.seed = QSpinBox(minimum=0, maximum=2**31 - 1, value=0)
        self.steps = QSpinBox(minimum=1, maximum=1000, value=20)
        self.sampler = QComboBox()
        self.sampler.addItems(SAMPLERS)
        self.samples = QSpinBox(minimum=1, maximum=16, value=1)
        self.samples.setToolTip("samples per scenario (different seeds): mean image, per-pixel "
                                "SD map and size as mean ± SD")
        self.guidance = QDoubleSpinBox(minimum=1.0, maximum=10.0, value=1.0, singleStep=0.5)
        for label, widget in (("Seed", self.seed), ("Steps", self.steps),
                              ("Sampler", self.sampler), ("Samples", self.samples),
                              ("Guidance", self.guidance)):
            form.addRow(label, widget)
            signal = getattr(widget, "valueChanged", None) or widget.currentIndexChanged
            signal.connect(self._on_scenario_changed)
        self.advanced.toggled.connect(self._on_advanced_toggled)
        self._on_advanced_toggled(False)
        layout.addWidget(self.advanced)

        self.auto_run = QCheckBox("Update when the scenario changes")
        self.auto_run.setChecked(True)
        self.grid_mode = QCheckBox("Side by side (grid)")
        self.grid_mode.setChecked(True)
        self.grid_mode.toggled.connect(self._on_grid_toggled)
        options = QHBoxLayout()
        options.addWidget(self.auto_run)
        options.addWidget(self.grid_mode)
        layout.addLayout(options)

        buttons = QHBoxLayout()
        self.run_button = QPushButton("Generate")
        self.run_button.clicked.connect(self.run)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        self.save_button = QPushButton("Save results…")
        self.save_button.setEnabled(False)
        self.save_button.clicked.connect(self._choose_save_folder)
        for b in (self.run_button, self.cancel_button, self.save_button):
            buttons.addWidget(b)
        layout.addLayout(buttons)
        self.progress = QProgressBar()
        self.progress.setTextVisible(True)
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.status = QLabel("Pick the pre-treatment image.")
        self.status.setWordWrap(True)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addStretch(1)
        # Long layer and model names must not widen the dock (the grid needs the width).
        for combo in (self.input_combo, self.model_combo, self.compare_combo):
            combo.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
            combo.setMinimumContentsLength(16)
        self.setMaximumWidth(460)

    # --- models -------------------------------------------------------------------------
    def _add_model(self, path: Optional[Path], family: Optional[str] = None) -> None:
        """Add a model folder, or (``path`` None) the bundled model of ``family``."""
        from ..science.generative.checkpoint import read_card, sampling_defaults

        card = read_card(path if path is not None else get_family(family).bundled_generator_path())
        title = card.get("title") or (path.name if path else family)
        text = (f"bundled: {title}" if path is None else f"{title} — {path}") + \
            f" ({card['model_hash'][:8]})"
        self._models.append((text, path, card["family"]))
        self._sampling_defaults[text] = sampling_defaults(card["config"])
        self.model_combo.addItem(text)
        self.model_combo.setItemData(self.model_combo.count() - 1, text, Qt.ToolTipRole)
        self.model_combo.setCurrentIndex(self.model_combo.count() - 1)

    def add_model_folder(self, folder: str | Path) -> bool:
        """Add a local model folder (hash-checked card); a folder that is not a model gets a
        notification, nothing else."""
        from ..science.generative.checkpoint import read_card

        folder = Path(folder)
        try:
            if not folder.is_dir():
                raise InputError(folder, "is not a folder")
            card = read_card(folder)
            family_schema(card.get("family", ""))
        except InputError as err:
            notify_error(err)
            return False
        except (OSError, ValueError, KeyError) as err:
            notify_error(InputError(folder, f"is not a nacsim model folder ({err})"))
            return False
        self._add_model(folder)
        return True

    def _choose_model_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "nacsim model folder (model_card.json)")
        if folder:
            self.add_model_folder(folder)

    def _current_model(self) -> tuple[str, Optional[Path], str]:
        return self._models[self.model_combo.currentIndex()]

    def _model_folder(self) -> Path:
        _, path, family = self._current_model()
        return path if path is not None else get_family(family).bundled_generator_path()

    def _family(self):
        return get_family(self._current_model()[2])

    def _model_input(self):
        """What the current model's family takes as input (2D MIP, 3D CT crop)."""
        return self._family().model_input

    def _on_model_changed(self, *_):
        if not self._models:
            return
        family = family_schema(self._current_model()[2])
        if self._schema is None or family.name != self._schema.name:
            self._set_schema(family)
            self.status.setText(f"Pick the pre-treatment image: {self._model_input().what}.")
        self._show_sampling_defaults()
        self._on_scenario_changed()

    def _show_sampling_defaults(self) -> None:
        """The Advanced fields start at the model's own defaults (its card), which are also
        what runs while Advanced is off."""
        defaults = self._sampling_defaults[self._current_model()[0]]
        for widget, set_value in (
                (self.steps, lambda: self.steps.setValue(defaults["default_steps"])),
                (self.sampler, lambda: self.sampler.setCurrentText(defaults["default_sampler"])),
                (self.guidance, lambda: self.guidance.setValue(defaults["default_guidance"]))):
            widget.blockSignals(True)
            set_value()
            widget.blockSignals(False)

    def _set_schema(self, schema: FamilySchema) -> None:
        self._schema = schema
        if self.panel is not None:
            self.panel_layout.removeWidget(self.panel.native)
            self.panel.native.deleteLater()
        self.panel = ScenarioPanel(schema)
        self.panel.changed.connect(self._on_scenario_changed)
        self.panel_layout.addWidget(self.panel.native)
        self.compare_combo.blockSignals(True)
        self.compare_combo.clear()
        family = get_family(schema.name)
        default = family.default_comparison()
        self._compare_defaults = {}
        variables = [v for v in schema.condition_variables if v.derive is None]
        if default is not None:  # the family's comparison first
            variables.sort(key=lambda v: v.name != default.variable.name)
        for var in variables:
            values = default.values if default is not None and \
                var.name == default.variable.name else _default_values(var)
            self._compare_defaults[var.name] = values
            self.compare_combo.addItem(" vs ".join(var.describe(v) for v in values)
                                       if var.kind != CATEGORICAL else f"{var.label}: each "
                                       "category", var.name)
        self.compare_combo.addItem("nothing (one scenario)", None)
        self.compare_combo.setCurrentIndex(0 if default is not None else len(variables))
        self.compare_combo.blockSignals(False)
        self._show_compare_values()
        self._prefill_from_layer()

    # --- input layer --------------------------------------------------------------------
    def _candidate_layers(self) -> list:
        from napari.layers import Image

        return [layer for layer in self.viewer.layers if isinstance(layer, Image) and
                (layer.metadata.get(METADATA_KEY) or {}).get("group") is None]

    def _show_compare_values(self) -> None:
        """The Values field shows the compared values (editable for numbers and categories;
        a yes/no variable is compared in both states)."""
        name = self.compare_combo.currentData()
        values = self._compare_defaults.get(name, ())
        var = self._schema.variable(name) if name is not None else None
        self.compare_values.blockSignals(True)
        self.compare_values.setText(", ".join(_value_text(v) for v in values))
        self.compare_values.setEnabled(var is not None and var.kind != BINARY)
        self.compare_values.blockSignals(False)

    def _on_compare_changed(self, *_):
        self._show_compare_values()
        self._on_scenario_changed()

    def _refresh_layers(self, *_):
        current = self.input_combo.currentText()
        layers = self._candidate_layers()
        names = [layer.name for layer in layers]
        self.input_combo.blockSignals(True)
        self.input_combo.clear()
        self.input_combo.addItems(names)
        if current in names:
            self.input_combo.setCurrentIndex(names.index(current))
        else:  # prefer a layer that is the model's input (sample data say so in the name)
            spec = self._model_input() if self._models else None
            preferred = [i for i, layer in enumerate(layers)
                         if spec is not None and layer.ndim == spec.ndim]
            named = [i for i in preferred if "model input" in names[i].lower()]
            pick = (named or preferred or [0])[0]
            if names:
                self.input_combo.setCurrentIndex(pick)
        self.input_combo.blockSignals(False)
        if self.input_combo.currentText() != current:
            self._on_input_changed()

    def input_layer(self):
        name = self.input_combo.currentText()
        return self.viewer.layers[name] if name and name in self.viewer.layers else None

    def select_input(self, name: str) -> None:
        self.input_combo.setCurrentIndex(self.input_combo.findText(name))

    def _on_input_changed(self, *_):
        self._prefill_from_layer()
        self._on_scenario_changed()

    def _prefill_from_layer(self) -> None:
        layer = self.input_layer()
        if layer is None or self.panel is None:
            return
        patient = (layer.metadata.get(METADATA_KEY) or {}).get("patient") or {}
        values = patient.get("clinical_values")
        if isinstance(values, dict):
            try:
                self.panel.set_values(values)
            except InputError as err:  # the layer's record disagrees with the schema
                notify_error(err)

    def _input_scan(self):
        layer = self.input_layer()
        if layer is None:
            raise InputError("input", "no image layer is open; open a scan or a sample patient")
        if layer.rgb:
            raise InputError(f"layer '{layer.name}'", "is an RGB image; the model takes a "
                                                      "grey-level subtraction MIP")
        family = self._current_model()[2]
        spec = self._model_input()
        if layer.ndim != spec.ndim:
            raise InputError(f"layer '{layer.name}'",
                             f"is {layer.ndim}D; the {family} model takes {spec.what} "
                             f"of the pre-treatment visit: {spec.how_to_make}")
        scan = layer_to_scan(np.asarray(layer.data),
                             {"name": layer.name, "scale": list(layer.scale),
                              "metadata": layer.metadata}, "image")
        ours = layer.metadata.get(METADATA_KEY) or {}
        if not ours.get("spacing_mm") and np.allclose(layer.scale, 1.0):
            scan = self._assume_model_field_of_view(scan, layer.name)
        return scan

    def _assume_model_field_of_view(self, scan, name: str):
        """A layer without voxel spacing (a plain array or PNG): take the model's field of
        view (its card's spacing at its image size), say so, and record it."""
        from napari.utils.notifications import show_warning

        from ..core.scan import Scan, affine_from_spacing
        from ..science.generative.checkpoint import read_card

        card = read_card(self._model_folder())
        fov = [s * card["image_size"] for s in card["spacing_mm"]]
        spacing = [f / n for f, n in zip(fov, scan.shape)]
        show_warning(f"layer '{name}': no voxel spacing (scale 1); assuming the model's "
                     f"{fov[0]:g} x {fov[1]:g} mm field of view ({spacing[0]:.2f} mm pixels) "
                     "for tumour sizes")
        return Scan(array=scan.array, affine=affine_from_spacing(spacing), kind=scan.kind,
                    provenance={**scan.provenance, "spacing_known": False,
                                "spacing_assumed_mm": spacing})

    # --- a cohort patient -----------------------------------------------------------------
    def _choose_cohort_patient(self) -> None:
        from qtpy.QtWidgets import QInputDialog

        path, _ = QFileDialog.getOpenFileName(self, "Cohort manifest", "",
                                              "cohort manifest (*.json)")
        if not path:
            return
        try:
            from ..core.cohort import load_cohort

            cohort = load_cohort(path)
        except InputError as err:
            notify_error(err)
            return
        ids = [p.id for p in cohort.patients]
        patient, ok = QInputDialog.getItem(self, "Patient", f"{len(ids)} patients in "
                                           f"{Path(path).name}", ids, 0, False)
        if ok:
            self.open_cohort_patient(cohort, patient)

    def open_cohort_patient(self, cohort, patient_id: str) -> int:
        """Load the patient's baseline MIP off the UI thread, add it as the input layer and
        pre-fill the scenario with the patient's clinical values."""
        from ..engine.patients import baseline_input

        self.status.setText(f"opening patient {patient_id}…")
        return self.runner.submit(lambda token, progress: baseline_input(cohort, patient_id),
                                  self._add_patient_layers)

    def _add_patient_layers(self, case: dict) -> None:
        family = get_family(case["family"])
        base, what = family.schema.baseline, family.model_input.short_name
        meta = {"patient": {"id": case["patient"], "clinical_values": case["clinical"]}}
        data, kwargs, kind = scan_to_layer_data(
            case["image"], name=f"{case['patient']} {base} {what} · model input",
            contrast_limits=list(family.model_input.display_range))
        kwargs["metadata"][METADATA_KEY].update(meta)
        image = self.viewer.add_layer(make_layer(data, kwargs, kind))
        if case["mask"] is not None:
            data, kwargs, kind = contour_layer_data(case["mask"], f"{case['patient']} {base} "
                                                             f"{what} tumour (manifest)")
            kwargs["metadata"][METADATA_KEY].update(meta)
            self.viewer.add_layer(make_layer(data, kwargs, kind))
        self.select_input(image.name)
        self.status.setText(f"patient {case['patient']}: scenario filled from the manifest")

    # --- requests -----------------------------------------------------------------------
    def request(self) -> WhatIfRequest:
        if self.panel is None:
            raise InputError("scenario", "no model is selected")
        scenario = self.panel.scenario  # validated by the schema
        target = scenario.pop(TARGET)
        compare = self.compare_combo.currentData()
        values = None
        if compare is not None and self._schema.variable(compare).kind != BINARY:
            values = tuple(v.strip() for v in self.compare_values.text().split(",") if v.strip())
            # parsed and checked like any scenario value (one-line errors naming the field)
            values = get_family(self._schema.name).comparison(compare, values).values
        advanced = self.advanced.isChecked()
        return WhatIfRequest(
            clinical=scenario, target=target, compare=compare, compare_values=values,
            seed=self.seed.value() if advanced else 0,
            steps=self.steps.value() if advanced else None,
            sampler=self.sampler.currentText() if advanced else None,
            samples=self.samples.value() if advanced else 1,
            guidance=self.guidance.value() if advanced else None)

    def _on_scenario_changed(self, *_):
        if not self._ready:
            return
        if self.panel is not None:
            compared = self.compare_combo.currentData()
            for widget in self.panel:
                if widget.name in {v.name for v in self.panel.schema.condition_variables}:
                    widget.enabled = widget.name != compared  # both states are generated
        layer = self.input_layer()
        if self.auto_run.isChecked() and layer is not None and \
                layer.ndim == self._model_input().ndim:
            self._debounce.start()

    def _on_advanced_toggled(self, on: bool) -> None:
        for child in self.advanced.findChildren(QWidget):
            child.setVisible(on)
        self._on_scenario_changed()

    def run(self) -> Optional[int]:
        """Submit the current panel state (supersedes a running request)."""
        self._debounce.stop()
        try:
            image = self._input_scan()
            request = self.request()
        except InputError as err:
            notify_error(err)
            self.status.setText(str(err))
            return None
        label, path, _ = self._current_model()

        def job(token: CancelToken, progress: Progress) -> WhatIfResult:
            session = self._session(label, path)
            return session.run(image, request, progress=progress, cancel=token)

        self.status.setText("running…")
        return self.runner.submit(job, self._show_result,
                                  lambda exc: self._failed(exc))

    def _session(self, label: str, path: Optional[Path]) -> WhatIfSession:
        """Models load once per model (in the worker thread, never on the UI thread)."""
        if label not in self._sessions:
            from ..engine.whatif import load_model

            model = load_model(path if path is not None else self._model_folder())
            self._sessions[label] = WhatIfSession(model, model.family.load_segmenter())
        return self._sessions[label]

    def cancel(self) -> None:
        self._debounce.stop()
        self.runner.cancel()
        self.status.setText("cancelled")

    # --- results ------------------------------------------------------------------------
    def _failed(self, exc: Exception) -> None:
        notify_error(exc, "what-if run")
        self.status.setText(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)

    def _show_result(self, result: WhatIfResult) -> None:
        self.result = result
        self.results_shown += 1
        base, window = result.schema.baseline, result.family.model_input.display_range
        cells = [[image_cell(result.baseline, f"{base} baseline", window),
                  contour_layer_data(result.baseline_mask, f"{base} baseline tumour")]]
        spreads = [f.spread for _, f in result.shown() if f.spread is not None]
        sd_max = max([float(np.nanmax(s.array)) for s in spreads] + [1e-6])
        for arm, follow in result.shown():
            n = len(follow.samples)
            title = follow.title if n == 1 else \
                follow.title.replace(" (synthetic)", f" · mean of {n} (synthetic)")
            cells.append([image_cell(follow.image, title, window),
                          contour_layer_data(follow.mask, _with(title, "tumour"))])
            if follow.spread is not None:
                sd_title = follow.title.replace(" (synthetic)", f" · SD of {n} (synthetic)")
                cells.append([image_cell(follow.spread, sd_title, colormap="magma",
                                         contrast_limits=[0.0, sd_max]),
                              contour_layer_data(follow.mask, _with(sd_title, "tumour"))])
        show_cells(self.viewer, GROUP, cells, grid=self.grid_mode.isChecked())
        self.table.show_result(result)
        self.plot.show_result(result)
        self._add_docks()
        self.save_button.setEnabled(True)
        shown = "; ".join(f"{f.title.replace(' (synthetic)', '')}: {f.describe_size()}"
                          for _, f in result.shown())
        self.status.setText(f"{result.seconds['total']:.1f} s — baseline "
                            f"{result.baseline_size.describe()}; {shown}")

    def _add_docks(self) -> None:
        if self._docks_added:
            return
        window = getattr(self.viewer, "window", None)
        if window is None or not hasattr(window, "add_dock_widget"):
            return
        # Under the canvas: the grid keeps the full width, table and plot sit side by side.
        window.add_dock_widget(self.table, name="nacsim: tumour sizes", area="bottom")
        window.add_dock_widget(self.plot, name="nacsim: size over time", area="bottom")
        self._docks_added = True

    def _on_grid_toggled(self, on: bool) -> None:
        if self.result is None:
            return
        if on:
            self._show_result(self.result)
        else:
            leave_grid(self.viewer)

    def _on_progress(self, done: int, total: int, what: str) -> None:
        self.progress.setRange(0, max(total, 1))
        self.progress.setValue(done)
        if what:
            self.progress.setFormat(f"{what} (%p%)")

    def _on_state(self, state: str) -> None:
        running = state == "running"
        self.cancel_button.setEnabled(running)
        if not running:
            self.progress.setRange(0, 1)
            self.progress.setValue(1 if state == "idle" else 0)
            self.progress.setFormat("%p%")

    # --- saving -------------------------------------------------------------------------
    def save_results(self, folder: str | Path) -> Optional[Path]:
        """Write the shown run (images, masks, report.json, comparison.png) into a new
        folder inside ``folder``."""
        from ..engine.results import write_result

        if self.result is None:
            notify_error(InputError("save", "nothing generated yet"))
            return None
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        out = Path(folder) / f"nacsim-whatif-{stamp}"
        try:
            write_result(self.result, out)
        except (InputError, OSError) as err:
            notify_error(err if isinstance(err, InputError) else InputError(out, str(err)))
            return None
        from napari.utils.notifications import show_info

        show_info(f"saved the synthetic follow-ups, masks and report to {out}")
        return out

    def _choose_save_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Save the what-if results into…")
        if folder:
            self.save_results(folder)

    # --- lifetime -----------------------------------------------------------------------
    def shutdown(self) -> None:
        """Stop any run and wait for its thread (closing the widget mid-run)."""
        self._debounce.stop()
        self.runner.shutdown()

    def result_layers(self) -> list:
        return group_layers(self.viewer, GROUP)


def _default_values(var) -> tuple:
    """Values compared when a variable is picked: both states, every category, or for a
    number the ends of its reference range (else of its plausible range)."""
    if var.kind == BINARY:
        return (True, False)
    if var.kind == CATEGORICAL:
        return tuple(var.categories)
    lo, hi = var.normal or var.plausible or (0.0, 1.0)
    return (float(lo), float(hi))


def _value_text(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)
