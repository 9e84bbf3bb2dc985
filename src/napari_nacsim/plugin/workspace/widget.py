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
background so that the first run does not wait for it.
"""

from __future__ import annotations

import datetime
import html
import logging
import re
from pathlib import Path
from typing import Any, Optional

import numpy as np
from qtpy.QtCore import Qt, QTimer
from qtpy.QtWidgets import (QCheckBox, QComboBox, QFileDialog, QFormLayout, QGroupBox,
                            QHBoxLayout, QLabel, QMainWindow, QProgressBar, QPushButton,
                            QSpinBox, QDoubleSpinBox, QLineEdit, QVBoxLayout, QWidget)

from ...core.errors import InputError
from ...core.scan import IMAGE, Scan
from ...core.schema import BINARY, CATEGORICAL, FamilySchema, family_schema
from ...families import family_names, get_family
from ...engine.jobs import CancelToken, Progress
from ...engine.session import WhatIfRequest, WhatIfResult, WhatIfSession
from ..background import BackgroundRunner, StopsWhenClosed, notify_error
from ..grid_view import group_layers, leave_grid, leave_own_grid, make_layer, show_cells
from ..layers import METADATA_KEY, contour_layer_data, layer_to_scan, scan_to_layer_data
from ..napari_access import real_viewer
from ..reader_choice import remember_our_reader
from ..scenario_panel import TARGET, ScenarioPanel
from ..size_views import SizePlot, SizeTable
from ..viewing import (GENERATED, INPUT, WINDOW_SIZE, ContrastLink, CursorReadout,
                      enlarge_window, readout_label, show_orientation, show_scale_bar,
                      side_docks_to_content)

log = logging.getLogger(__name__)

GROUP = "whatif"
SAMPLERS = ("dpmpp", "unipc", "ddim")
DEBOUNCE_MS = 150  # coalesce bursts of edits (typing a number) into one request
DOCK_WIDTH = 360            # the workspace's width: the rest of the window is the canvas
CUSTOM = "custom"           # the window combo's entry for a window set by hand


def image_cell(scan, name: str, window=(0.0, 1.0), **kwargs) -> tuple:
    kwargs.setdefault("contrast_limits", list(window))  # every cell the same contrast
    return scan_to_layer_data(scan, name=name, **kwargs)


def _short(title: str) -> str:
    return title.replace(" (synthetic)", "")


class WhatIfWorkspace(StopsWhenClosed, QWidget):
    """Dock widget: scenario panel, model and run controls; results in the viewer."""

    def __init__(self, napari_viewer, parent: Optional[QWidget] = None):
        super().__init__(parent)
        self._ready = False  # no runs while the controls are being built
        # the viewer itself, not napari's proxy of it (the Plugins menu, `napari -w`, the
        # demo): see `napari_access`
        self.viewer = real_viewer(napari_viewer)
        self.runner = BackgroundRunner("nacsim what-if", self)
        self.runner.progressed.connect(self._on_progress)
        self.runner.state_changed.connect(self._on_state)
        self._models: list[tuple[str, Optional[Path], str]] = []  # text, folder, family
        self._sampling_defaults: dict[str, dict] = {}  # per model text: its card's defaults
        self._grids: dict[str, tuple[int, ...]] = {}  # per model text: its input grid
        self._sessions: dict[str, WhatIfSession] = {}
        # input layer name -> the family's extra model inputs made with it (lung: lobe and
        # vessel crops), passed to every run on that input
        self._contexts: dict[str, dict] = {}
        self._schema: Optional[FamilySchema] = None
        self.result: Optional[WhatIfResult] = None
        self.results_shown = 0
        self.table = SizeTable()
        self.plot = SizePlot()
        self._docks_added = False
        self._closed = False
        self._resized = False
        self._debounce = QTimer(self)
        self._debounce.setSingleShot(True)
        self._debounce.setInterval(DEBOUNCE_MS)
        self._debounce.timeout.connect(self._auto_run)
        self._submitted: Optional[tuple] = None  # what the newest run was asked (its key)
        # linked viewing of the cells: one window for the images, one for the SD maps
        self.window_link = ContrastLink(on_change=self._on_window_changed)
        self.sd_link = ContrastLink()
        self._build()
        self.readout = CursorReadout(self.viewer, self.cursor_label.setText)
        # every family's bundled model (the registry lists them); the first one selected
        bundled = [n for n in family_names() if get_family(n).bundled_generator]
        for name in reversed(bundled):
            self._add_model(None, name)
        self._refresh_layers()
        layers = self.viewer.layers.events
        for event in (layers.inserted, layers.removed, layers.reordered):
            event.connect(self._refresh_layers)
        self._select_input_layer()
        remember_our_reader()
        self._ready = True
        self._update_header()
        QTimer.singleShot(0, self._start)  # once the widget is docked: the first run

    # --- construction -------------------------------------------------------------------
    def _build(self) -> None:
        from qtpy.QtWidgets import QFrame, QScrollArea

        # everything in a scroll area: the dock never forces the window taller than the
        # screen (Advanced open on a laptop)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 4, 4)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.NoFrame)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
        content = QWidget()
        scroll.setWidget(content)
        outer.addWidget(scroll)
        layout = QVBoxLayout(content)
        self.header = QLabel()
        self.header.setWordWrap(True)
        self.header.setTextFormat(Qt.RichText)
        self.header.setStyleSheet("QLabel { padding: 4px; border: 1px solid #5a6270; "
                                  "border-radius: 3px; }")
        layout.addWidget(self.header)
        banner = QLabel("Generated follow-ups (<span style='color:#ff9f1c'>orange title and "
                        "frame</span>) are <b>synthetic counterfactuals</b>, not "
                        "measurements.")
        banner.setWordWrap(True)
        layout.addWidget(banner)

        source = QFormLayout()
        self.input_combo = QComboBox()
        self.input_combo.setToolTip("the pre-treatment image the selected model takes (sample "
                                    "data, `nacsim mip` / `nacsim crop`, or a cohort patient)")
        self.input_combo.currentIndexChanged.connect(self._on_input_changed)
        source.addRow("Input image", self.input_combo)
        open_patient = QPushButton("Open cohort patient…")
        open_patient.setToolTip("pick a patient of a cohort manifest: its pre-treatment model "
                                "input (breast: the subtraction MIP; lung: the CT crop) opens "
                                "as the input and its clinical values fill the scenario")
        open_patient.clicked.connect(self._choose_cohort_patient)
        self.make_input_button = QPushButton("Make from open scans…")
        self.make_input_button.clicked.connect(lambda: self.make_model_input())
        row = QHBoxLayout()
        row.addWidget(open_patient)
        row.addWidget(self.make_input_button)
        source.addRow(row)
        self.model_combo = QComboBox()
        self.model_combo.currentIndexChanged.connect(self._on_model_changed)
        add_model = QPushButton("Add…")
        add_model.setToolTip("add a local model folder (with its model_card.json)")
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
        self.panel_layout.setContentsMargins(4, 4, 4, 4)
        self.panel: Optional[ScenarioPanel] = None
        layout.addWidget(self.panel_box)

        view = QGroupBox("View")
        view_form = QFormLayout(view)
        self.window_combo = QComboBox()
        self.window_combo.setToolTip("window/level of every image cell (linked: changing the "
                                     "contrast of one cell changes all of them)")
        self.window_combo.currentIndexChanged.connect(self._on_window_preset)
        view_form.addRow("Window", self.window_combo)
        self.grid_mode = QCheckBox("Side by side")
        self.grid_mode.setChecked(True)
        self.grid_mode.toggled.connect(self._on_grid_toggled)
        self.outlines = QCheckBox("Tumour outlines")
        self.outlines.setChecked(True)
        self.outlines.setToolTip("the segmented tumour's outline in every cell")
        self.outlines.toggled.connect(self._apply_outlines)
        row = QHBoxLayout()
        row.addWidget(self.grid_mode)
        row.addWidget(self.outlines)
        view_form.addRow(row)
        layout.addWidget(view)

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
        self.auto_run.toggled.connect(lambda on: None if on else self._debounce.stop())
        layout.addWidget(self.auto_run)

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
        self.status = QLabel("Starting…")
        self.status.setWordWrap(True)
        layout.addStretch(1)
        # progress and status stay in sight below the scrolling controls
        outer.addWidget(self.progress)
        outer.addWidget(self.status)
        self.cursor_label = readout_label()
        outer.addWidget(self.cursor_label)
        # Long layer and model names must not widen the dock (the grid needs the width).
        for combo in (self.input_combo, self.model_combo, self.compare_combo,
                      self.window_combo):
            combo.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
            combo.setMinimumContentsLength(12)
        self.setMinimumWidth(DOCK_WIDTH)  # the controls fit (the scroll area is vertical)
        self.setMaximumWidth(DOCK_WIDTH + 60)

    # --- models -------------------------------------------------------------------------
    def _add_model(self, path: Optional[Path], family: Optional[str] = None) -> None:
        """Add a model folder, or (``path`` None) the bundled model of ``family``."""
        from ...science.generative.card import grid_shape, read_card, sampling_defaults

        card = read_card(path if path is not None else get_family(family).bundled_generator_path())
        title = card.get("title") or (path.name if path else family)
        text = (f"bundled: {title}" if path is None else f"{title} — {path}") + \
            f" ({card['model_hash'][:8]})"
        self._models.append((text, path, card["family"]))
        self._sampling_defaults[text] = sampling_defaults(card["config"])
        self._grids[text] = grid_shape(card["config"])
        self.model_combo.addItem(text)
        self.model_combo.setItemData(self.model_combo.count() - 1, text, Qt.ToolTipRole)
        self.model_combo.setCurrentIndex(self.model_combo.count() - 1)

    def add_model_folder(self, folder: str | Path) -> bool:
        """Add a local model folder (hash-checked card); a folder that is not a model gets a
        notification, nothing else."""
        from ...science.generative.card import read_card

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
            self._set_window_presets()
        self._show_sampling_defaults()
        self._show_outcome_inputs()
        self._update_make_input()  # the scans it is made from depend on the family
        self._update_ready_status()
        self._on_scenario_changed()

    def _show_outcome_inputs(self) -> None:
        """The outcomes the model can be given (its card): a choice each in the panel."""
        from ...science.generative.card import outcome_inputs, read_card

        try:
            names = outcome_inputs(read_card(self._model_folder())["config"])
        except (InputError, OSError, KeyError):
            names = ()
        if self.panel is not None:
            self.panel.set_outcome_inputs(names)

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
        for combo in self.panel.native.findChildren(QComboBox):  # long choices: no wider dock
            combo.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
            combo.setMinimumContentsLength(12)
        self.compare_combo.blockSignals(True)
        self.compare_combo.clear()
        family = get_family(schema.name)
        self.samples.blockSignals(True)   # Advanced starts at what runs without it
        self.samples.setValue(family.default_samples)
        self.samples.blockSignals(False)
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
        self.panel.set_compared(self.compare_combo.currentData())  # both states: disabled

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
        if self.panel is not None:
            # the compared variable's control shows both states; the one it had comes back
            # (never a hidden value) when something else, or nothing, is compared
            self.panel.set_compared(self.compare_combo.currentData())
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
        else:  # prefer a layer that is the model's input (sample data say so in the name),
            # then the layer the user has selected (a sample opens its shown image selected)
            fitting = [i for i, layer in enumerate(layers) if self._input_fits(layer)]
            named = [i for i in fitting if "model input" in names[i].lower()]
            active = self.viewer.layers.selection.active
            selected = [i for i, layer in enumerate(layers) if layer is active]
            pick = (named or fitting or selected or [0])[0]
            if names:
                self.input_combo.setCurrentIndex(pick)
        self.input_combo.blockSignals(False)
        if self.input_combo.currentText() != current:
            self._on_input_changed()
        self._update_make_input()

    def input_layer(self):
        name = self.input_combo.currentText()
        return self.viewer.layers[name] if name and name in self.viewer.layers else None

    def select_input(self, name: str) -> None:
        self.input_combo.setCurrentIndex(self.input_combo.findText(name))

    def _on_input_changed(self, *_):
        self._follow_input_family()
        self._prefill_from_layer()
        if self._ready:
            self._update_header()
            self._update_ready_status()
        self._on_scenario_changed()

    @staticmethod
    def _layer_family(layer) -> Optional[str]:
        """The family of the patient a layer shows, where its record says (sample data,
        cohort patients, inputs made here); None for a plain image."""
        patient = (layer.metadata.get(METADATA_KEY) or {}).get("patient") or {}
        family = patient.get("family")
        return family if isinstance(family, str) and family in family_names() else None

    def _follow_input_family(self) -> None:
        """An input of another family's patient selects a model of that family (the first
        listed): a lung patient is never sent to the breast model because it is listed
        first. A model the user chose for the same family stays."""
        layer = self.input_layer()
        wanted = self._layer_family(layer) if layer is not None else None
        if wanted is None or not self._models or wanted == self._current_model()[2]:
            return
        for index, (_, _, family) in enumerate(self._models):
            if family == wanted:
                self.model_combo.setCurrentIndex(index)
                return

    def _select_input_layer(self) -> None:
        """The input image is the selected layer (not a mask: napari would show its paint
        tools)."""
        layer = self.input_layer()
        if layer is not None:
            self.viewer.layers.selection.active = layer

    def _input_fits(self, layer=None) -> bool:
        """Whether a layer can be the current model's input as it is: its dimensionality,
        and its shape where the family does not resample (a lung crop)."""
        layer = layer if layer is not None else self.input_layer()
        if layer is None or not self._models or layer.rgb:
            return False
        spec = self._model_input()
        if layer.ndim != spec.ndim:
            return False
        return spec.resampled or tuple(layer.data.shape) == self._grids[self._current_model()[0]]

    def _input_is_visit_scan(self) -> bool:
        """Whether the input is one of the open baseline scans the model input is made
        from (a sample's CT or DCE volume), rather than a model input."""
        layer, found = self.input_layer(), self._visit_layers()
        return layer is not None and found is not None and \
            any(layer is scan for scan in found.values())

    def _update_ready_status(self, force: bool = False) -> None:
        """Say what the workspace waits for (when no run is going on, or ``force``)."""
        if (self.runner.running and not force) or not self._models:
            return
        family = self._current_model()[2]
        if self._input_fits():
            self.status.setText("Ready: change the scenario (or press Generate) to compare.")
        elif self.input_layer() is not None:
            layer = self.input_layer()
            self.status.setText(f"layer '{layer.name}' {self._wrong_input_reason(layer)}")
        else:
            self.status.setText(f"Ready. Open the pre-treatment image: the {family} model "
                                f"takes {self._model_input().what}.")

    def _wrong_input_reason(self, layer) -> str:
        """Why a layer cannot be the input, and every way to make one: from the open scans
        (where they are open), with the command line (`nacsim mip`, `nacsim crop`: the
        family's `how_to_make`), or from a cohort."""
        spec, family = self._model_input(), self._family()
        found = f"is {layer.ndim}D" if layer.ndim != spec.ndim else \
            f"has shape {tuple(layer.data.shape)}"
        ways = f"{spec.how_to_make[:1].upper()}{spec.how_to_make[1:]}"
        if self._visit_layers(family) is not None:
            ways = (f"Press '{self.make_input_button.text()}' (the open "
                    f"{family.schema.baseline} {'/'.join(family.schema.channels)} scans), "
                    f"or {spec.how_to_make}")
        return f"{found}; the {family.name} model takes {spec.what}. {ways}."

    def _scenario_text(self) -> str:
        """``"pCR vs non-pCR · HR+, HER2−"``: what is compared, then the values every cell
        shares (they are not repeated in the cell titles)."""
        if self.panel is None:
            return ""
        try:
            clinical = self.panel.clinical
        except InputError:
            return ""
        compared = self.compare_combo.currentData()
        schema = self.panel.schema
        shared = {k: v for k, v in clinical.items()
                  if k != compared and schema.variable(k).derive is None}
        parts = [self.compare_combo.currentText()] if compared is not None else []
        if shared:
            parts.append(schema.describe(shared))
        return " · ".join(parts)

    def _update_header(self) -> None:
        """Who and what is shown: the patient, the input's time point and kind, the recorded
        clinical values; a phantom patient is said once to be synthetic."""
        layer = self.input_layer()
        if layer is None or not self._models:
            self.header.setText("<b>No input image open</b>")
            return
        ours = layer.metadata.get(METADATA_KEY) or {}
        patient = ours.get("patient") or {}
        provenance = ours.get("provenance") or {}
        family = self._family()
        phantom = bool(patient.get("phantom") or provenance.get("phantom"))
        who = patient.get("id") or provenance.get("patient")
        side = patient.get("side") or provenance.get("laterality")
        time = provenance.get("timepoint") or family.schema.baseline
        title = (f"Phantom patient {who}" if phantom and who else f"Patient {who}" if who
                 else html.escape(layer.name))
        parts = [f"<b>{html.escape(str(title))}</b>"]
        if side:
            parts.append(html.escape(str(side)))
        if self._input_fits(layer):
            parts.append(f"input: {html.escape(str(time))} "
                         f"{html.escape(family.model_input.short_name)}")
        else:  # the layer chosen, as it is: not what the model expects
            shape = "×".join(str(n) for n in layer.data.shape)
            parts.append(f"layer: {html.escape(layer.name)} ({layer.ndim}D, {shape}), "
                         f"<i>not the {html.escape(family.name)} model's input</i>")
        text = " · ".join(parts)
        recorded = patient.get("clinical")
        if recorded:
            text += f"<br>recorded: {html.escape(str(recorded))}"
        scenario = self._scenario_text()
        if scenario:
            text += f"<br>scenario: {html.escape(scenario)}"
        if phantom:
            text += ("<br><i>A phantom: every image of this patient is synthetic "
                     "(simulated), not a real patient.</i>")
        self.header.setText(text)

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
        if not self._input_fits(layer):
            raise InputError(f"layer '{layer.name}'", self._wrong_input_reason(layer))
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

        from ...core.scan import Scan, affine_from_spacing
        from ...science.generative.card import read_card

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
            from ...core.cohort import load_cohort

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
        from ...engine.patients import baseline_input

        self.status.setText(f"opening patient {patient_id}…")
        return self.runner.submit(lambda token, progress: baseline_input(cohort, patient_id),
                                  self._add_patient_layers)

    def _add_patient_layers(self, case: dict) -> None:
        """Add a model input (``case``: patient, family, clinical, image, mask) as the input
        layer, its tumour mask as an outline; the scenario fills from its clinical values."""
        if self._closed:
            return
        family = get_family(case["family"])
        base, what = family.schema.baseline, family.model_input.short_name
        patient = {"id": case["patient"], "clinical_values": case["clinical"],
                   **(case.get("patient_meta") or {}), "family": family.name}
        meta = {"patient": patient}
        data, kwargs, kind = scan_to_layer_data(
            case["image"], name=f"{case['patient']} {base} {what} · model input",
            contrast_limits=list(family.window_presets[0].limits))
        kwargs["metadata"][METADATA_KEY].update(meta)
        if case["mask"] is not None:
            source = case.get("mask_source", "manifest")
            data_m, kwargs_m, kind_m = contour_layer_data(
                case["mask"], f"{case['patient']} {base} {what} tumour ({source})")
            kwargs_m["metadata"][METADATA_KEY].update(meta)
            self.viewer.add_layer(make_layer(data_m, kwargs_m, kind_m))
        image = self.viewer.add_layer(make_layer(data, kwargs, kind))  # last: selected
        self._contexts[image.name] = dict(case.get("context") or {})
        self.select_input(image.name)
        self.status.setText(case.get("message") or
                            f"patient {case['patient']}: scenario filled from the manifest")

    # --- the model input from open scans ------------------------------------------------
    def _visit_layers(self, family=None) -> Optional[dict[str, Any]]:
        """The open layers of the baseline visit the family makes its model input from, by
        name: each of its channels (e.g. "pre", "post") among the image layers of the
        family's scan dimensionality, its masks (e.g. "tumour") among the label layers;
        None when a channel is missing."""
        from napari.layers import Image, Labels

        family = family or self._family()
        schema = family.schema
        ours = [layer for layer in self.viewer.layers  # a visit's scans are volumes
                if (layer.metadata.get(METADATA_KEY) or {}).get("group") is None and
                layer.ndim == 3 and  # never another family's patient ("pre ct" is no DCE)
                self._layer_family(layer) in (None, family.name)]
        others = [t for t in schema.timepoint_names if t != schema.baseline]

        def pick(names: tuple[str, ...], cls) -> dict[str, Any]:
            found = {}
            for name in names:
                word = re.compile(rf"(^|[^a-z0-9]){re.escape(name.lower())}([^a-z0-9]|$)")
                matches = [layer for layer in ours if isinstance(layer, cls) and
                           word.search(layer.name.lower()) and "model input" not in
                           layer.name.lower()]
                at_base = [layer for layer in matches if schema.baseline.lower() in
                           layer.name.lower().split()]
                not_later = [layer for layer in matches if not any(
                    t.lower() in layer.name.lower().split() for t in others)]
                chosen = (at_base or not_later)[:1]
                if chosen:
                    found[name] = chosen[0]
            return found

        channels = pick(schema.channels, Image)
        if len(channels) != len(schema.channels):
            return None
        masks = pick(schema.masks, Labels)
        if any(name not in masks for name, _ in schema.baseline_masks):
            return None  # e.g. the lung crop is cut around the tumour: its mask must be open
        return {**channels, **masks}

    def _update_make_input(self) -> None:
        if not self._models:
            return
        family = self._family()
        found = self._visit_layers(family)
        self.make_input_button.setEnabled(found is not None)
        channels = "/".join(family.schema.channels)
        needed = [f"the {name} mask ({why})" for name, why in family.schema.baseline_masks]
        self.make_input_button.setToolTip(
            f"make the {family.name} model's input ({family.model_input.what}) from the open "
            f"{family.schema.baseline} {channels} scans" +
            (": " + ", ".join(f"{k} = '{v.name}'" for k, v in found.items()) if found else
             f" (not open: open the {channels} volumes"
             f"{' and ' + ', '.join(needed) if needed else ''} first)"))

    def make_model_input(self, layers: Optional[dict[str, Any]] = None) -> Optional[int]:
        """Make the model input from open scans of the baseline visit, off the UI thread,
        the family's way (breast: the normalised subtraction MIP of pre and post; lung: the
        CT crop around the tumour); it opens as the input with the patient's values.
        ``layers``: channel or mask name -> layer (default: found by name)."""
        family = self._family()
        layers = layers or self._visit_layers(family)
        if not layers:
            needed = "".join(f" and its {name} mask ({why})"
                             for name, why in family.schema.baseline_masks)
            notify_error(InputError("model input", f"open the {family.schema.baseline} "
                                                   f"{'/'.join(family.schema.channels)} "
                                                   f"scans{needed} first"))
            return None
        kinds = {name: ("labels" if name in family.schema.masks else "image")
                 for name in layers}
        visit = {name: layer_to_scan(np.asarray(layer.data),
                                     {"name": layer.name, "scale": list(layer.scale),
                                      "metadata": layer.metadata}, kinds[name])
                 for name, layer in layers.items()}
        first = next(iter(layers.values()))
        ours = first.metadata.get(METADATA_KEY) or {}
        patient = ours.get("patient") or {}
        patient_id = patient.get("id") or (ours.get("provenance") or {}).get("patient") or \
            first.name.split()[0]
        base = family.schema.baseline

        def job(token: CancelToken, progress: Progress) -> dict:
            progress(0, 1, f"making the {family.model_input.short_name}")
            made = family.model_inputs({base: visit})[base]
            return {"patient": patient_id, "family": family.name,
                    "clinical": patient.get("clinical_values") or {},
                    "patient_meta": {k: v for k, v in patient.items()
                                     if k not in ("id", "clinical_values")},
                    "image": made["image"], "mask": made.get("tumour"),
                    "context": family.model_context(made),
                    "mask_source": "from the open mask",
                    "message": f"made the {family.model_input.short_name} from " +
                               ", ".join(f"'{layer.name}'" for layer in layers.values())}

        self.status.setText(f"making the {family.model_input.short_name}…")
        return self.runner.submit(job, self._add_patient_layers, lambda exc: self._failed(exc))

    # --- requests -----------------------------------------------------------------------
    def request(self) -> WhatIfRequest:
        if self.panel is None:
            raise InputError("scenario", "no model is selected")
        scenario = self.panel.scenario  # validated by the schema
        target = scenario.pop(TARGET)
        compare = self.compare_combo.currentData()
        if compare is not None:  # each arm sets it; the held value must not matter
            scenario.pop(compare, None)
        values = None
        if compare is not None and self._schema.variable(compare).kind != BINARY:
            values = tuple(v.strip() for v in self.compare_values.text().split(",") if v.strip())
            # parsed and checked like any scenario value (one-line errors naming the field)
            values = get_family(self._schema.name).comparison(compare, values).values
        advanced = self.advanced.isChecked()
        defaults = self._sampling_defaults[self._current_model()[0]]

        def unless_default(value, key):
            """An Advanced value, None where it is the model's default: the same request
            with Advanced on or off (ticking it generates nothing new)."""
            if not advanced or value == defaults[key] or \
                    (isinstance(value, float) and abs(value - defaults[key]) < 1e-9):
                return None
            return value

        return WhatIfRequest(
            clinical=scenario, target=target, compare=compare, compare_values=values,
            seed=self.seed.value() if advanced else 0,
            steps=unless_default(self.steps.value(), "default_steps"),
            sampler=unless_default(self.sampler.currentText(), "default_sampler"),
            samples=self.samples.value() if advanced else self._family().default_samples,
            guidance=unless_default(self.guidance.value(), "default_guidance"),
            outcomes=self.panel.outcomes or None)

    def _run_key(self, request: WhatIfRequest) -> tuple:
        """What makes two runs the same: the model, the input layer (its data) and the
        request."""
        layer = self.input_layer()
        return (self._current_model()[0], layer.name if layer is not None else None,
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
        if self.auto_run.isChecked() and self._input_fits():
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
        layer = self.input_layer()
        context = self._contexts.get(layer.name) if layer is not None else None
        self._submitted = self._run_key(request)

        def job(token: CancelToken, progress: Progress) -> WhatIfResult:
            session = self._session(label, path)
            return session.run(image, request, progress=progress, cancel=token,
                               context=context)

        self.status.setText("generating…" if label in self._sessions else
                            "loading the model, then generating…")
        return self.runner.submit(job, self._show_result,
                                  lambda exc: self._failed(exc))

    def _start(self) -> None:
        """Right after opening: the comparison without a click where a model input is open
        (and updates are on), or where the baseline scans it is made from are (the model
        input is made first; once it opens, the comparison follows); otherwise the model
        loads now, in the background, so that the first run does not wait for it."""
        if self._closed or not self._models:
            return
        if self.auto_run.isChecked() and self._input_fits():
            self.run()
        elif self.auto_run.isChecked() and self._input_is_visit_scan():
            self.make_model_input()
        else:
            self.preload()

    def preload(self) -> Optional[int]:
        """Load the current model and segmenter in the worker thread (no UI wait)."""
        label, path, _ = self._current_model()
        if label in self._sessions or self.runner.running:  # never supersedes a user's job
            return None

        def job(token: CancelToken, progress: Progress) -> WhatIfSession:
            progress(0, 1, "loading the model")
            return self._session(label, path)

        self.status.setText("loading the model…")
        return self.runner.submit(job, lambda _: None if self._closed else
                                  self._update_ready_status(force=True),
                                  lambda exc: self._failed(exc))

    def _session(self, label: str, path: Optional[Path]) -> WhatIfSession:
        """Models load once per model (in the worker thread, never on the UI thread)."""
        if label not in self._sessions:
            from ...engine.whatif import load_model

            model = load_model(path if path is not None else self._model_folder())
            self._sessions[label] = WhatIfSession(model, model.family.load_segmenter())
        return self._sessions[label]

    def cancel(self) -> None:
        self._debounce.stop()
        self._submitted = None  # the same request may be asked again
        self.runner.cancel()
        self.status.setText("cancelled")

    # --- results ------------------------------------------------------------------------
    def _failed(self, exc: Exception) -> None:
        self._submitted = None  # asking again is worth a try
        notify_error(exc, "what-if run")
        self.status.setText(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)

    def _show_result(self, result: WhatIfResult) -> None:
        if self._closed:  # a result queued while the widget closed
            return
        self.result = result
        self.results_shown += 1
        self.save_button.setEnabled(True)  # the result is whole: saving does not need the view
        cells, roles, labels = self._cells(result)
        grid = self.grid_mode.isChecked()
        several = result.request.samples > 1
        for link in (self.window_link, self.sd_link):  # slots change content in place
            link.set_layers([])
        shown = show_cells(self.viewer, GROUP, cells, grid=grid, roles=roles,
                           columns=3 if several else None)
        images = [row[0] for row in shown]
        sd_maps = [layer for layer, label in zip(images, labels) if label.endswith(" SD")]
        self.window_link.set_layers([layer for layer in images if layer not in sd_maps])
        self.sd_link.set_layers(sd_maps)
        for layer in sd_maps:  # a legend for the SD colours (the unit at the cell's foot)
            layer.colorbar.visible = True
            layer.colorbar.position = "bottom_left"  # the right: scale bar, letters
            layer.colorbar.size = (14, 90)
            layer.colorbar.font_size = 8
        self.readout.set_cells(list(zip(labels, images)), result.family.model_input.value_unit)
        self._apply_outlines()
        if grid:
            show_orientation(self.viewer, result.family.orientation)
            show_scale_bar(self.viewer)
        self._show_tumour_slice(result, images[0])
        self.table.show_result(result)
        self.plot.show_result(result)
        self._add_docks()
        done = "; ".join(f"{_short(f.title)}: {f.describe_size()}" for _, f in result.shown())
        self.status.setText(f"Done in {result.seconds['total']:.1f} s. Input "
                            f"{result.baseline_size.describe()}; {done}")

    def _cells(self, result: WhatIfResult) -> tuple[list, list, list]:
        """The grid cells (image + tumour outline each), their roles and short labels (the
        cursor read-out). One sample: the input, then each scenario, in one row. Several:
        one row per scenario — the input, the mean, the SD map (on the body, with a colour
        bar; its unit on the second line). Each cell has two title lines: the image (what
        and when), then its outline (the tumour's size and longest diameter); the scenario
        values every cell shares are in the header."""
        family, base = result.family, result.schema.baseline
        window = self._window_limits()
        n = result.request.samples
        size = result.baseline_size
        input_size = (f"{_number(size.total)} {size.unit}, Ø {size.diameter:.0f} mm"
                      if size.found else "no tumour found")

        def outline(mask, title, colour="red"):
            return contour_layer_data(mask, title, colour)

        def input_cell(row: int = 0, row_of: Optional[str] = None):
            suffix = f" · {row_of} row" if row_of else ""
            return [image_cell(result.baseline, f"{base} input{suffix}", window),
                    outline(result.baseline_mask, f"input{f' ({row + 1})' if row else ''}: "
                                                  f"{input_size}")]

        cells, roles, labels = [], [], []
        if n == 1:
            cells.append(input_cell())
            roles.append(INPUT)
            labels.append("input")
            for arm, follow in result.shown():
                title = f"{follow.time} · {arm.label} · generated (synthetic)"
                cells.append([image_cell(follow.image, title, window),
                              outline(follow.mask, f"{arm.label}: {_cell_size(follow)}")])
                roles.append(GENERATED)
                labels.append(arm.label)
            return cells, roles, labels
        body = family.body_mask(result.baseline)
        maps = [_on_body(f.spread, body) for _, f in result.shown()]
        sd_max = max([float(np.nanpercentile(m.array, 99.5)) for m in maps] + [1e-6])
        unit = family.model_input.value_unit
        for row, ((arm, follow), sd) in enumerate(zip(result.shown(), maps)):
            cells.append(input_cell(row, None if row == 0 else arm.label))
            roles.append(INPUT)
            labels.append("input" if row == 0 else f"input ({arm.label} row)")
            mean = f"{follow.time} · {arm.label} · mean of {n} (synthetic)"
            cells.append([image_cell(follow.image, mean, window),
                          outline(follow.mask, f"{arm.label}: {_cell_size(follow)}")])
            roles.append(GENERATED)
            labels.append(f"{arm.label} mean")
            sd_title = f"{follow.time} · {arm.label} · SD of {n} (synthetic)"
            cells.append([image_cell(sd, sd_title, colormap="magma",
                                     contrast_limits=[0.0, sd_max]),
                          outline(follow.mask, f"{arm.label} SD, {unit}", "cyan")])
            roles.append(GENERATED)
            labels.append(f"{arm.label} SD")
        return cells, roles, labels

    def _show_tumour_slice(self, result: WhatIfResult, layer) -> None:
        """3D cells: go to the slice where the input's tumour is largest (the family's
        `display_slice`) when the input is new or the current slice misses the cells."""
        index = result.family.display_slice(result.baseline_mask)
        if index is None or layer.ndim != 3:
            return
        dims = self.viewer.dims
        axis = dims.ndim - 3  # the slice axis of the (z, y, x) cells in world coordinates
        lo, hi = layer.extent.world[:, 0]
        current = dims.point[axis]
        key = id(result.baseline)
        if getattr(self, "_sliced_for", None) == key and lo <= current <= hi:
            return
        self._sliced_for = key
        world = layer.data_to_world([index, 0, 0])[0]
        dims.set_point(axis, float(world))

    # --- window / level, outlines -------------------------------------------------------
    def _set_window_presets(self) -> None:
        """The family's named windows, then "custom" (set by changing a cell's contrast)."""
        self.window_combo.blockSignals(True)
        self.window_combo.clear()
        for preset in self._family().window_presets:
            self.window_combo.addItem(preset.describe(), preset.limits)
        self.window_combo.addItem(CUSTOM, None)
        self.window_combo.setCurrentIndex(0)
        self.window_combo.blockSignals(False)

    def _window_limits(self) -> tuple[float, float]:
        limits = self.window_combo.currentData()
        if limits is None:
            limits = self.window_link.limits or self._family().window_presets[0].limits
        return tuple(map(float, limits))

    def set_window(self, name: str) -> None:
        """Choose a window preset by name (or the start of its description)."""
        for k in range(self.window_combo.count()):
            if self.window_combo.itemText(k).startswith(name):
                self.window_combo.setCurrentIndex(k)
                return
        raise InputError("window", f"{name!r} is not one of "
                                   f"{[self.window_combo.itemText(k) for k in range(self.window_combo.count())]}")

    def _on_window_preset(self, *_):
        limits = self.window_combo.currentData()
        if limits is not None:
            self.window_link.apply(limits)

    def _on_window_changed(self, limits) -> None:
        """A cell's contrast changed (all cells follow): show which preset it is, if any."""
        for k in range(self.window_combo.count()):
            data = self.window_combo.itemData(k)
            if data is not None and np.allclose(data, limits, atol=1e-6 * max(1.0, abs(limits[1]))):
                index = k
                break
        else:
            index = self.window_combo.count() - 1
            lo, hi = limits
            self.window_combo.setItemText(index, f"{CUSTOM} (L {(lo + hi) / 2:.3g}, "
                                                 f"W {hi - lo:.3g})")
        if self.window_combo.currentIndex() != index:
            self.window_combo.blockSignals(True)
            self.window_combo.setCurrentIndex(index)
            self.window_combo.blockSignals(False)

    def _apply_outlines(self, *_):
        """One switch for every tumour outline (opacity, not visibility: a hidden layer
        would leave its grid cell and shift the others)."""
        opacity = 1.0 if self.outlines.isChecked() else 0.0
        for layer in self.result_layers():
            if layer._type_string == "labels" and layer.opacity != opacity:
                layer.opacity = opacity

    def _add_docks(self) -> None:
        """The size table and plot, docked once under the canvas (never a second pair)."""
        if self._docks_added:
            return
        window = getattr(self.viewer, "window", None)
        if window is None or not hasattr(window, "add_dock_widget"):
            return
        self._docks_added = True  # before anything that could fail: never a second pair
        # Under the canvas: the grid keeps the full width, table and plot sit side by side,
        # as tall as the table's rows.
        window.add_dock_widget(self.table, name="nacsim: tumour sizes", area="bottom")
        window.add_dock_widget(self.plot, name="nacsim: size over time", area="bottom")
        main = self.window()
        docks = [_dock_of(widget) for widget in (self.table, self.plot)]
        if isinstance(main, QMainWindow) and all(docks):
            width = main.width()
            height = self.table.maximumHeight()
            self.plot.setMaximumHeight(max(height, self.plot.minimumHeight()))
            main.resizeDocks(docks, [height, height], Qt.Vertical)
            main.resizeDocks(docks, [3 * width // 5, 2 * width // 5], Qt.Horizontal)
            side_docks_to_content(main)  # new docks must not take the grid's width
            if main.width() != width and not (main.isMaximized() or main.isFullScreen()):
                main.resize(width, main.height())  # the docks share the width it had

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
        from ...engine.results import write_result

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
        """Stop any run and wait for its thread (closing the widget mid-run); the viewing
        aids leave with the widget."""
        self._closed = True
        self._debounce.stop()
        self.runner.shutdown()
        for link in (self.window_link, self.sd_link):
            link.close()
        try:
            self.readout.close()
        except (RuntimeError, AttributeError):  # the viewer is already gone
            pass
        leave_own_grid(self.viewer, GROUP)  # never the user's layers left hidden

    def result_layers(self) -> list:
        return group_layers(self.viewer, GROUP)


def _dock_of(widget):
    """The QDockWidget holding ``widget`` (napari wraps each docked widget in one)."""
    from qtpy.QtWidgets import QDockWidget

    parent = widget.parentWidget()
    while parent is not None and not isinstance(parent, QDockWidget):
        parent = parent.parentWidget()
    return parent


def _number(value: float) -> str:
    """Sizes in a cell: whole numbers from 10 up (mm²), two decimals below (mL)."""
    return f"{value:.0f}" if abs(value) >= 10 else f"{value:.2f}"


def _cell_size(follow) -> str:
    """``"64 mm², Ø 12.6 mm"``, with ± over samples; "no tumour found"."""
    if follow.n_found == 0:
        return "no tumour found"
    several = len(follow.samples) > 1
    size = _number(follow.size_mean) + (f"±{_number(follow.size_sd)}" if several else "")
    diameter = f"{follow.diameter_mean:.0f}" + (f"±{follow.diameter_sd:.0f}" if several
                                                  else "")
    return f"{size} {follow.unit}, Ø {diameter} mm"


def _on_body(spread: Scan, body: Optional[np.ndarray]) -> Scan:
    """The SD map shown on the body only (0 outside); the saved map is the full one."""
    if body is None or body.shape != spread.shape:
        return spread
    array = np.where(body, spread.array, 0.0).astype(np.float32)
    return Scan(array=array, affine=spread.affine, kind=IMAGE,
                provenance={**spread.provenance, "display": "restricted to the body"})


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
