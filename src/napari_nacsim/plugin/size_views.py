"""The docked views of a what-if result: the size table and the size-over-time plot.

Both only read a `WhatIfResult` (engine), so they show exactly what `report.json` holds.
"""

from __future__ import annotations

import warnings
from typing import Optional

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (QAbstractItemView, QHeaderView, QLabel, QSizePolicy,
                            QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget)

from ..engine.session import AUTO, WhatIfResult

COLUMNS = ("scenario", "tumour size", "Δ vs input", "Δ %", "longest diameter",
           "Δ diameter")
KEYS = ("scenario", "size", "delta", "delta_percent", "diameter", "diameter_delta")
PREDICTIONS = "predicted"  # a column shown when the model attaches predictions
# columns shown when the samples were generated for an outcome (lung: the response drawn
# per sample from P(response)): how many samples show it, and the RECIST category measured
# on each generated image
OUTCOME_COLUMNS = ("samples generated as", "RECIST (measured)")
OUTCOME_KEYS = ("outcome", "recist")
# Colour of a scenario in the plot: the same for the same value of the same variable in
# every run (pCR keeps its colour whether it is compared or the one scenario). Red is the
# tumour contour's colour, so it is not used here.
PALETTE = ("tab:blue", "tab:orange", "tab:purple", "tab:cyan", "tab:olive", "tab:brown",
           "tab:pink", "tab:gray")


class SizeTable(QWidget):
    """Tumour size and delta vs the baseline, per scenario and follow-up time."""

    def __init__(self, parent: Optional[QWidget] = None):
        super().__init__(parent)
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.table.verticalHeader().setVisible(False)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.Stretch)
        for col in range(1, len(COLUMNS)):
            header.setSectionResizeMode(col, QHeaderView.ResizeToContents)
        self.table.setVerticalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
        self.note = QLabel("Run a scenario to see tumour sizes.")
        self.note.setWordWrap(True)
        font = self.note.font()
        font.setPointSizeF(max(font.pointSizeF() - 1, 7))
        self.note.setFont(font)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self.table)
        layout.addWidget(self.note)
        self.setMinimumWidth(560)
        self._fit_height(5)

    def _fit_height(self, rows: int) -> None:
        """As tall as its rows and its note (no empty area, no scrolling): the dock under
        the canvas takes no more height than that."""
        header = self.table.horizontalHeader().sizeHint().height()
        self.table.resizeRowsToContents()
        body = self.table.verticalHeader().length() if self.table.rowCount() else \
            rows * self.table.verticalHeader().defaultSectionSize()
        self.table.setFixedHeight(header + body + 2 * self.table.frameWidth() + 2)
        note = self.note.heightForWidth(max(self.width(), self.minimumWidth()) - 8)
        self.setMaximumHeight(self.table.height() + max(note, 3 * self.note.fontMetrics()
                                                        .height()) + 14)

    def show_result(self, result: WhatIfResult) -> None:
        rows = result.table_rows()
        outcomes = result.has_outcomes
        # RECIST per scenario wherever the tumour is measured on cross-sections (a volume,
        # lung CT), with or without outcomes; the samples' outcome where they have one
        extra = [(c, k) for c, k in zip(OUTCOME_COLUMNS, OUTCOME_KEYS)
                 if outcomes or (k == "recist" and result.baseline.ndim == 3)]
        columns = COLUMNS + ((PREDICTIONS,) if result.has_predictions else ()) + \
            tuple(c for c, _ in extra)
        self.table.setColumnCount(len(columns))
        self.table.setHorizontalHeaderLabels(columns)
        self.table.setRowCount(len(rows))
        target = result.target
        for r, row in enumerate(rows):
            values = tuple(row[k] for k in KEYS) + \
                ((row["predictions"],) if result.has_predictions else ()) + \
                tuple(row[k] for _, k in extra)
            for c, value in enumerate(values):
                item = QTableWidgetItem(str(value))
                if c == 0:
                    item.setToolTip(str(value))
                if row["time"] == target:  # the time point shown side by side
                    font = item.font()
                    font.setBold(True)
                    item.setFont(font)
                if 0 < c < len(COLUMNS):
                    item.setTextAlignment(int(Qt.AlignRight | Qt.AlignVCenter))
                self.table.setItem(r, c, item)
        self._fit_height(len(rows))
        samples = result.request.samples
        spread = (f"± is the standard deviation over {samples} samples (seeds "
                  f"{result.request.seed}–{result.request.seed + samples - 1}): the model's "
                  "sampling variability, not a clinical confidence interval. "
                  if samples > 1 else "One sample per scenario (no spread shown). ")
        if outcomes:
            spread += ("Each sample's response was drawn from P(response) (the same random "
                       "number in every scenario, so a higher P never turns a responder into "
                       "a non-responder) and its image generated for it. ")
        grid = "×".join(str(n) for n in result.baseline.shape)
        spacing = " × ".join(f"{s:g}" for s in result.baseline.spacing)
        self.note.setText(
            f"Sizes by the tumour segmenter on the {grid} model grid ({spacing} mm voxels); "
            "longest diameter in mm (RECIST 1.1: the longest in-plane diameter, in the slice where "
            "it is largest). "
            f"Rows marked (synthetic) are generated counterfactuals, not measurements. {spread}"
            f"Bold: {target}, shown side by side.")

    def rows_text(self) -> list[list[str]]:
        return [[self.table.item(r, c).text() for c in range(self.table.columnCount())]
                for r in range(self.table.rowCount())]


# A dock squeezed small (a short window) makes constrained layout fall back to the plain
# one with a UserWarning, which napari shows the user as a notification; the fallback is fine.
warnings.filterwarnings("ignore", message="constrained_layout not applied",
                        category=UserWarning)


class SizePlot(QWidget):
    """Tumour size over T0 -> T1 -> T2 for each scenario (mean ± SD over samples)."""

    def __init__(self, parent: Optional[QWidget] = None):
        super().__init__(parent)
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        self.figure = Figure(figsize=(4.2, 3.0), dpi=90, layout="constrained")
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Expanding)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.addWidget(self.canvas)
        self.setMinimumHeight(170)
        self.setMinimumWidth(360)
        self.series: dict[str, tuple[list[float], list[float], list[float]]] = {}
        self.colours: dict[str, str] = {}      # arm label -> its colour in the last plot
        self._colour_of: dict[tuple, str] = {}  # (variable, value) -> colour, kept
        self._empty()

    def colour_for(self, key: tuple) -> str:
        """The colour of a scenario key, the same in every later plot."""
        if key not in self._colour_of:
            self._colour_of[key] = PALETTE[len(self._colour_of) % len(PALETTE)]
        return self._colour_of[key]

    def _empty(self) -> None:
        self.figure.clear()
        ax = self.figure.add_subplot()
        ax.text(0.5, 0.5, "tumour size over time appears here", ha="center", va="center",
                transform=ax.transAxes, color="gray")
        ax.set_axis_off()
        self.canvas.draw_idle()

    def show_result(self, result: WhatIfResult) -> None:
        family = result.schema
        weeks = {t.name: t.weeks for t in family.timepoints}
        base = family.baseline
        self.figure.clear()
        ax = self.figure.add_subplot()
        self.series = {}
        self.colours = {}
        for arm in result.arms:
            times = [base, *arm.followups]
            x = [weeks[t] for t in times]
            y = [result.baseline_size.total, *[f.size_mean for f in arm.followups.values()]]
            sd = [0.0, *[f.size_sd for f in arm.followups.values()]]
            self.series[arm.label] = (x, y, sd)
            colour = self.colour_for(_colour_key(result, arm))
            self.colours[arm.label] = colour
            ax.errorbar(x, y, yerr=sd if any(sd) else None, marker="o", capsize=3,
                        color=colour, label=f"{arm.label} (synthetic)")
            ax.plot(x[:1], y[:1], marker="s", color="black", linestyle="none")
        ax.set_xticks([weeks[t] for t in family.timepoint_names])
        ax.set_xticklabels([f"{t}\n{weeks[t]:g} wk" for t in family.timepoint_names],
                           fontsize=8)
        ax.set_ylabel(f"tumour size ({result.baseline_size.unit})", fontsize=8)
        ax.tick_params(labelsize=8)
        tops = [v + e for _, y, sd in self.series.values() for v, e in zip(y, sd)]
        top = float(np.nanmax(tops)) if tops and np.isfinite(tops).any() else 0.0
        # (all sizes 0, no tumour found: a range of its own, not matplotlib's warning about
        # identical limits, which napari would show the user)
        ax.set_ylim(0, top * 1.08 if top > 0 else 1.0)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
        n = result.request.samples
        ax.set_title(f"{base} measured (■), follow-ups generated"
                     f"{f'; mean ± SD of {n} samples' if n > 1 else ''}", fontsize=8)
        self.canvas.draw_idle()

    def values(self) -> dict[str, list[float]]:
        return {label: list(np.round(y, 3)) for label, (_, y, _) in self.series.items()}


def _colour_key(result: WhatIfResult, arm) -> tuple:
    """What identifies a scenario's colour: the compared variable's value, or (one scenario)
    the value of the variable the family compares by default — so "non-pCR" has one colour
    whether it is an arm of pCR vs non-pCR or the only scenario."""
    compare = result.request.compare
    default = result.family.default_comparison()
    if compare in (None, AUTO) and default is not None:
        name = default.variable.name
    elif compare not in (None, AUTO):
        name = compare
    else:
        return ("label", arm.label)
    return (name, repr(arm.clinical.get(name)))
