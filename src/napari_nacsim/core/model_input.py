"""What a family's models take, as plain data: handed down to the floors that need it.

A model family (`napari_nacsim.families`) owns one `ModelInput` per model (its generator's
and its segmenter's) and a `SegmentationSpec`; segmentation and dataset code below the
registry get these objects as arguments instead of looking the family up by name.
"""

from __future__ import annotations

import dataclasses
from typing import Optional


@dataclasses.dataclass(frozen=True)
class ModelInput:
    """What an image must look like for a family's models (generator and segmenter)."""

    ndim: int                                   # 2 (a MIP) or 3 (a CT crop)
    what: str                                   # "a 2D breast subtraction MIP (nacsim mip)"
    how_to_make: str                            # the command or action that makes one
    value_range: Optional[tuple[float, float]]  # None: physical units (HU), not normalised
    display_range: tuple[float, float]          # default window of the viewer and figure
    channel: str                                # nnU-Net channel name ("MIP", "CT")
    short_name: str                             # "MIP", "CT crop" (layer names, labels)
    value_unit: str = "normalised intensity"     # what the values are ("HU"): SD maps, read-out
    # False: the input must already be on the model's grid (a crop cut around the tumour),
    # it is not resampled; a larger scan of the patient has to be made into one first
    resampled: bool = True


@dataclasses.dataclass(frozen=True)
class SegmentationSpec:
    """How the family's nnU-Net segmenter is trained and found."""

    dataset_id: int
    dataset_name: str
    configuration: str               # nnU-Net configuration ("2d", "3d_fullres")
    lesion_free: bool = False        # phantoms can be drawn without their tumour
    input_size: Optional[int] = None  # 2D inputs are resized to this square grid
