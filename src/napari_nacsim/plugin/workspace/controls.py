"""The workspace's form: every control it shows, built into the dock widget.

`WorkspaceControls` builds the widgets and holds them (the workspace exposes them as its own
attributes: ``workspace.seed``). It connects no signal of the workspace's: the workspace,
and the collaborators each given their controls, connect what they handle. What it does by
itself concerns only its widgets: Advanced shown or hidden, the model's sampling defaults,
the run's progress and state.
"""

from __future__ import annotations

from typing import Optional

from qtpy.QtCore import Qt
from qtpy.QtWidgets import (QCheckBox, QComboBox, QDoubleSpinBox, QFormLayout, QFrame,
                            QGroupBox, QHBoxLayout, QLabel, QLineEdit, QProgressBar,
                            QPushButton, QScrollArea, QSpinBox, QVBoxLayout, QWidget)

from ...science.generative.samplers import SAMPLERS
from ..viewing import readout_label

DOCK_WIDTH = 360            # the workspace's width: the rest of the window is the canvas
MIN_COMBO_CHARS = 12        # long layer, model and choice names must not widen the dock

# The controls the workspace exposes as its attributes (tests, scripts and the benchmark
# reach them as ``workspace.<name>``).
NAMES = ("header", "input_combo", "make_input_button", "model_combo", "compare_combo",
         "compare_values", "panel_box", "panel_layout", "window_combo", "grid_mode",
         "outlines", "advanced", "seed", "steps", "sampler", "samples", "guidance",
         "auto_run", "run_button", "cancel_button", "save_button", "save_format", "progress",
         "status", "cursor_label")


def narrow(combo: QComboBox) -> None:
    """A combo box as wide as a short name, whatever its choices (the grid needs the width)."""
    combo.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
    combo.setMinimumContentsLength(MIN_COMBO_CHARS)


class WorkspaceControls:
    """The form of the workspace ``parent``, top to bottom: who is shown, where the input and
    the model come from and what is compared, the scenario, the view, Advanced, auto-run,
    the buttons; progress, status and the cursor read-out stay in sight below the scroll."""

    def __init__(self, parent: QWidget):
        # everything in a scroll area: the dock never forces the window taller than the
        # screen (Advanced open on a laptop)
        outer = QVBoxLayout(parent)
        outer.setContentsMargins(0, 0, 4, 4)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.NoFrame)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
        content = QWidget()
        scroll.setWidget(content)
        outer.addWidget(scroll)
        layout = QVBoxLayout(content)
        self._header(layout)
        self._source(layout)
        self._scenario(layout)
        self._view(layout)
        self._advanced(layout)
        self.auto_run = QCheckBox("Update when the scenario changes")
        self.auto_run.setChecked(True)
        layout.addWidget(self.auto_run)
        self._buttons(layout)
        layout.addStretch(1)
        self._footer(outer)
        for combo in (self.input_combo, self.model_combo, self.compare_combo,
                      self.window_combo):
            narrow(combo)
        parent.setMinimumWidth(DOCK_WIDTH)  # the controls fit (the scroll area is vertical)
        parent.setMaximumWidth(DOCK_WIDTH + 60)

    # --- the sections, top to bottom --------------------------------------------------------
    def _header(self, layout: QVBoxLayout) -> None:
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

    def _source(self, layout: QVBoxLayout) -> None:
        source = QFormLayout()
        self.input_combo = QComboBox()
        self.input_combo.setToolTip("the pre-treatment image the selected model takes (sample "
                                    "data, `nacsim mip` / `nacsim crop`, or a cohort patient)")
        source.addRow("Input image", self.input_combo)
        self.open_patient_button = QPushButton("Open cohort patient…")
        self.open_patient_button.setToolTip(
            "pick a patient of a cohort manifest: its pre-treatment model input (breast: the "
            "subtraction MIP; lung: the CT crop) opens as the input and its clinical values "
            "fill the scenario")
        self.make_input_button = QPushButton("Make from open scans…")
        row = QHBoxLayout()
        row.addWidget(self.open_patient_button)
        row.addWidget(self.make_input_button)
        source.addRow(row)
        self.model_combo = QComboBox()
        self.add_model_button = QPushButton("Add…")
        self.add_model_button.setToolTip("add a local model folder (with its model_card.json)")
        row = QHBoxLayout()
        row.addWidget(self.model_combo, 1)
        row.addWidget(self.add_model_button)
        source.addRow("Model", row)
        self.compare_combo = QComboBox()
        self.compare_combo.setToolTip("generate the scenario once per value of this variable, "
                                      "side by side")
        source.addRow("Compare", self.compare_combo)
        self.compare_values = QLineEdit()
        self.compare_values.setToolTip("the values compared, separated by commas (numbers in "
                                       "the variable's unit, or category names)")
        source.addRow("Values", self.compare_values)
        layout.addLayout(source)

    def _scenario(self, layout: QVBoxLayout) -> None:
        """The box the scenario panel of the model's family goes into (`comparison`)."""
        self.panel_box = QGroupBox("Scenario")
        self.panel_layout = QVBoxLayout(self.panel_box)
        self.panel_layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self.panel_box)

    def _view(self, layout: QVBoxLayout) -> None:
        view = QGroupBox("View")
        view_form = QFormLayout(view)
        self.window_combo = QComboBox()
        self.window_combo.setToolTip("window/level of every image cell (linked: changing the "
                                     "contrast of one cell changes all of them)")
        view_form.addRow("Window", self.window_combo)
        self.grid_mode = QCheckBox("Side by side")
        self.grid_mode.setChecked(True)
        self.outlines = QCheckBox("Tumour outlines")
        self.outlines.setChecked(True)
        self.outlines.setToolTip("the segmented tumour's outline in every cell")
        row = QHBoxLayout()
        row.addWidget(self.grid_mode)
        row.addWidget(self.outlines)
        view_form.addRow(row)
        layout.addWidget(view)

    def _advanced(self, layout: QVBoxLayout) -> None:
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
        self._sampling_fields = (self.seed, self.steps, self.sampler, self.samples,
                                 self.guidance)
        for label, widget in zip(("Seed", "Steps", "Sampler", "Samples", "Guidance"),
                                 self._sampling_fields):
            form.addRow(label, widget)
        self.show_advanced(False)
        layout.addWidget(self.advanced)

    def _buttons(self, layout: QVBoxLayout) -> None:
        buttons = QHBoxLayout()
        self.run_button = QPushButton("Generate")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.save_button = QPushButton("Save results…")
        self.save_button.setEnabled(False)
        for b in (self.run_button, self.cancel_button, self.save_button):
            buttons.addWidget(b)
        layout.addLayout(buttons)
        # what Save writes (`saving` fills it): NIfTI by default, DICOM for a PACS viewer
        self.save_format = QComboBox()
        narrow(self.save_format)
        row = QFormLayout()
        row.addRow("Save as", self.save_format)
        layout.addLayout(row)

    def _footer(self, outer: QVBoxLayout) -> None:
        self.progress = QProgressBar()
        self.progress.setTextVisible(True)
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.status = QLabel("Starting…")
        self.status.setWordWrap(True)
        # progress and status stay in sight below the scrolling controls
        outer.addWidget(self.progress)
        outer.addWidget(self.status)
        self.cursor_label = readout_label()
        outer.addWidget(self.cursor_label)

    # --- what the controls say ----------------------------------------------------------
    def scenario_signals(self) -> list:
        """The signals of an edit that changes what is generated, besides the scenario panel
        and the compared variable: the compared values, the Advanced fields."""
        return [self.compare_values.editingFinished] + [
            getattr(widget, "valueChanged", None) or widget.currentIndexChanged
            for widget in self._sampling_fields]

    def sampling(self) -> Optional[dict]:
        """The Advanced values (seed, steps, sampler, samples, guidance); None while
        Advanced is off."""
        if not self.advanced.isChecked():
            return None
        return {"seed": self.seed.value(), "steps": self.steps.value(),
                "sampler": self.sampler.currentText(), "samples": self.samples.value(),
                "guidance": self.guidance.value()}

    # --- what the controls show ---------------------------------------------------------
    def show_advanced(self, on: bool) -> None:
        for child in self.advanced.findChildren(QWidget):
            child.setVisible(on)

    def show_sampling_defaults(self, defaults: dict) -> None:
        """The Advanced fields start at the model's own defaults (its card), which are also
        what runs while Advanced is off."""
        for widget, set_value in (
                (self.steps, lambda: self.steps.setValue(defaults["default_steps"])),
                (self.sampler, lambda: self.sampler.setCurrentText(defaults["default_sampler"])),
                (self.guidance, lambda: self.guidance.setValue(defaults["default_guidance"]))):
            widget.blockSignals(True)
            set_value()
            widget.blockSignals(False)

    def show_default_samples(self, samples: int) -> None:
        """Advanced starts at what runs without it (the family's number of samples)."""
        self.samples.blockSignals(True)
        self.samples.setValue(samples)
        self.samples.blockSignals(False)

    def show_progress(self, done: int, total: int, what: str) -> None:
        self.progress.setRange(0, max(total, 1))
        self.progress.setValue(done)
        if what:
            self.progress.setFormat(f"{what} (%p%)")

    def show_state(self, state: str) -> None:
        running = state == "running"
        self.cancel_button.setEnabled(running)
        if not running:
            self.progress.setRange(0, 1)
            self.progress.setValue(1 if state == "idle" else 0)
            self.progress.setFormat("%p%")
