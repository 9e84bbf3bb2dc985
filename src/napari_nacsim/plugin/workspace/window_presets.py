"""The Window combo: the family's named windows, then "custom", over one linked window.

`WindowPresets` is given the combo. Its `link` (a `viewing.ContrastLink`) keeps every image
cell on one window: choosing a preset applies it to the cells, and a cell's contrast
changed by hand selects the preset it matches, else "custom" with its level and width.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
from qtpy.QtWidgets import QComboBox

from ...core.errors import InputError
from ..viewing import ContrastLink

CUSTOM = "custom"           # the window combo's entry for a window set by hand


class WindowPresets:
    def __init__(self, combo: QComboBox):
        self.combo = combo
        self.family = None
        self.link = ContrastLink(on_change=self._follow)
        combo.currentIndexChanged.connect(self._on_preset)

    def set_family(self, family) -> None:
        """The family's named windows, then "custom" (set by changing a cell's contrast)."""
        self.family = family
        self.combo.blockSignals(True)
        self.combo.clear()
        for preset in family.window_presets:
            self.combo.addItem(preset.describe(), preset.limits)
        self.combo.addItem(CUSTOM, None)
        self.combo.setCurrentIndex(0)
        self.combo.blockSignals(False)

    def limits(self) -> tuple[float, float]:
        """The window of new cells: the preset chosen, else the cells' own (custom)."""
        limits: Optional[tuple] = self.combo.currentData()
        if limits is None:
            limits = self.link.limits or self.family.window_presets[0].limits
        return tuple(map(float, limits))

    def select(self, name: str) -> None:
        """Choose a window preset by name (or the start of its description)."""
        texts = [self.combo.itemText(k) for k in range(self.combo.count())]
        for k, text in enumerate(texts):
            if text.startswith(name):
                self.combo.setCurrentIndex(k)
                return
        raise InputError("window", f"{name!r} is not one of {texts}")

    def _on_preset(self, *_):
        limits = self.combo.currentData()
        if limits is not None:
            self.link.apply(limits)

    def _follow(self, limits) -> None:
        """A cell's contrast changed (all cells follow): show which preset it is, if any."""
        for k in range(self.combo.count()):
            data = self.combo.itemData(k)
            if data is not None and np.allclose(data, limits,
                                                atol=1e-6 * max(1.0, abs(limits[1]))):
                index = k
                break
        else:
            index = self.combo.count() - 1
            lo, hi = limits
            self.combo.setItemText(index, f"{CUSTOM} (L {(lo + hi) / 2:.3g}, "
                                          f"W {hi - lo:.3g})")
        if self.combo.currentIndex() != index:
            self.combo.blockSignals(True)
            self.combo.setCurrentIndex(index)
            self.combo.blockSignals(False)
