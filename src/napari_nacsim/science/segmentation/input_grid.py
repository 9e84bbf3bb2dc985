"""Is an image like those a segmentation model was trained on (field of view, voxel size)?

nnU-Net resamples every input to the spacing it was trained at, so another voxel size is
handled (a crop of the same box at half the spacing segments the same). The field of view
is not: nacsim's 3D models are trained on fixed boxes cut around the tumour (`nacsim crop`),
and on a whole CT, or a box of another size, they find "tumour" in anatomy they never saw
(on a whole lung phantom the bundled model found three parts; on a box half the size it
over-measured by 30 %). Such inputs are refused, with the model's box in the message.

The training box is read from the model's own plans (the median image shape and spacing
nnU-Net recorded from its training data), never assumed. 2D models see whole MIPs resized to
their grid, whose field is the patient's, so only 3D models are checked.
"""

from __future__ import annotations

import numpy as np

from ...core.errors import InputError
from ...core.scan import Scan
from .model_files import LoadedModel

# An input box may differ from the training box by this factor along each axis.
FIELD_TOLERANCE = 1.25


def training_box(model: LoadedModel) -> tuple[tuple[int, ...], tuple[float, ...]] | None:
    """(shape, spacing) of a 3D model's training images in array order (z, y, x), from its
    plans; None for a 2D model or when the plans do not record them."""
    plans = model.plans
    configuration = (plans.get("configurations") or {}).get(model.configuration) or {}
    if len(configuration.get("spacing") or []) != 3:
        return None
    shape = plans.get("original_median_shape_after_transp")
    spacing = plans.get("original_median_spacing_after_transp")
    backward = plans.get("transpose_backward") or list(range(len(shape or [])))
    if not shape or not spacing or len(shape) != len(spacing) or len(backward) != len(shape):
        return None
    return (tuple(int(round(shape[i])) for i in backward),
            tuple(float(spacing[i]) for i in backward))


def _fmt(values) -> str:
    return " x ".join(f"{v:g}" for v in values)


def check_field_of_view(image: Scan, model: LoadedModel, hint: str = "") -> None:
    """Refuse a 3D ``image`` whose extent (voxels x spacing) differs from the 3D model's
    training box by more than `FIELD_TOLERANCE` along any axis."""
    box = training_box(model)
    if box is None or image.ndim != 3 or len(box[0]) != 3:
        return
    shape, spacing = box
    trained = np.array(shape) * np.array(spacing)
    field = np.array(image.shape) * np.array(image.spacing)
    ratio = field / trained
    if np.all(ratio <= FIELD_TOLERANCE) and np.all(ratio >= 1 / FIELD_TOLERANCE):
        return
    raise InputError(image.name, f"covers {_fmt(np.round(field, 1))} mm ({_fmt(image.shape)} "
                                 f"voxels of {_fmt(np.round(image.spacing, 3))} mm), but the "
                                 f"segmentation model was trained on crops of "
                                 f"{_fmt(np.round(trained, 1))} mm ({_fmt(shape)} voxels of "
                                 f"{_fmt(spacing)} mm) and gives wrong sizes on other fields of "
                                 "view" + (f"; {hint}" if hint else ""))


def spacing_note(image: Scan, model: LoadedModel) -> str | None:
    """A one-line note when nnU-Net will resample a 3D ``image`` to the model's voxel size
    (more than 10 % apart along an axis); None otherwise."""
    box = training_box(model)
    if box is None or image.ndim != 3 or len(box[1]) != 3:
        return None
    spacing = np.array(image.spacing)
    if np.all(np.abs(spacing / np.array(box[1]) - 1) <= 0.1):
        return None
    return (f"the image's voxels ({_fmt(np.round(spacing, 3))} mm) were resampled to the "
            f"model's ({_fmt(box[1])} mm) for segmentation; the mask is on the image's grid")
