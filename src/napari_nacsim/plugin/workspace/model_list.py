"""The models the workspace can run: one record per model, in the order of the model combo.

A `ModelEntry` holds all the workspace knows of a model: the text it is listed under, its
folder and family, its card's sampling defaults, input grid and outcome inputs, and its
`WhatIfSession` once loaded. `ModelList` keeps the entries and the combo that shows them in
step; the entry of the combo's current item is `ModelList.current`. Listing a model reads
its card only (`science.generative.card`, no torch); the model itself loads in the worker
thread (`ModelEntry.load_session`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Optional

from qtpy.QtCore import Qt
from qtpy.QtWidgets import QComboBox, QFileDialog, QWidget

from ...core.errors import InputError
from ...core.schema import family_schema
from ...families import ModelFamily, family_names, get_family

if TYPE_CHECKING:
    from ...engine.session import WhatIfSession


@dataclass
class ModelEntry:
    text: str                     # as listed in the model combo
    folder: Path                  # the model folder (the bundled model's, for a bundled one)
    bundled: bool
    family: ModelFamily
    card: dict
    sampling_defaults: dict       # default_steps, default_sampler, default_guidance
    grid: tuple[int, ...]         # the model-input grid
    session: Optional["WhatIfSession"] = None  # the loaded model and segmenter

    @property
    def outcome_inputs(self) -> tuple[str, ...]:
        """The outcomes the model can be given (its card): a choice each in the panel."""
        from ...science.generative.card import outcome_inputs

        try:
            return outcome_inputs(self.card["config"])
        except KeyError:
            return ()

    def load_session(self) -> "WhatIfSession":
        """The model and its family's segmenter, loaded once per model (in the worker thread,
        never on the UI thread)."""
        if self.session is None:
            from ...engine.session import WhatIfSession
            from ...engine.whatif import load_model

            model = load_model(self.folder)
            self.session = WhatIfSession(model, model.family.load_segmenter())
        return self.session


def read_entry(folder: Optional[Path], family: Optional[str] = None) -> ModelEntry:
    """The entry of a model folder, or (``folder`` None) of the bundled model of ``family``."""
    from ...science.generative.card import grid_shape, read_card, sampling_defaults

    path = folder if folder is not None else get_family(family).bundled_generator_path()
    card = read_card(path)
    title = card.get("title") or (folder.name if folder else family)
    text = (f"bundled: {title}" if folder is None else f"{title} — {folder}") + \
        f" ({card['model_hash'][:8]})"
    return ModelEntry(text=text, folder=path, bundled=folder is None,
                      family=get_family(card["family"]), card=card,
                      sampling_defaults=sampling_defaults(card["config"]),
                      grid=grid_shape(card["config"]))


def check_model_folder(folder: str | Path) -> Path:
    """A local model folder, checked (a hash-checked card of a known family); raises a
    one-line `InputError` naming the folder."""
    from ...science.generative.card import read_card

    folder = Path(folder)
    try:
        if not folder.is_dir():
            raise InputError(folder, "is not a folder")
        card = read_card(folder)
        family_schema(card.get("family", ""))
    except InputError:
        raise
    except (OSError, ValueError, KeyError) as err:
        raise InputError(folder, f"is not a nacsim model folder ({err})") from None
    return folder


def choose_model_folder(parent: QWidget) -> Optional[str]:
    return QFileDialog.getExistingDirectory(parent, "nacsim model folder (model_card.json)") \
        or None


class ModelList:
    """The entries, and the combo listing them (one item per entry, same order)."""

    def __init__(self, combo: QComboBox):
        self.combo = combo
        self.entries: list[ModelEntry] = []

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self) -> Iterator[ModelEntry]:
        return iter(self.entries)

    def add_bundled(self) -> None:
        """Every family's bundled model (the registry lists them); the first one selected."""
        bundled = [n for n in family_names() if get_family(n).bundled_generator]
        for name in reversed(bundled):
            self.add(read_entry(None, name))

    def add(self, entry: ModelEntry) -> None:
        """List ``entry`` and select it (the combo's signal follows: the entry is there)."""
        self.entries.append(entry)
        self.combo.addItem(entry.text)
        self.combo.setItemData(self.combo.count() - 1, entry.text, Qt.ToolTipRole)
        self.combo.setCurrentIndex(self.combo.count() - 1)

    @property
    def current(self) -> Optional[ModelEntry]:
        index = self.combo.currentIndex()
        return self.entries[index] if 0 <= index < len(self.entries) else None

    def select_family(self, name: str) -> None:
        """Select the first model of family ``name``, unless the current one is of it."""
        current = self.current
        if current is None or current.family.name == name:
            return
        for index, entry in enumerate(self.entries):
            if entry.family.name == name:
                self.combo.setCurrentIndex(index)
                return
