"""The breast NAC model input: subtraction MIP of the first post-contrast DCE-MRI phase.

The NAC paper (ACRIN 6698, "first phase after contrast injection") feeds its model a 2D
maximum-intensity projection (MIP). Following the abbreviated-MRI practice it cites (Kuhl et
al. 2014), the volume projected is the *subtraction* first post-contrast minus pre-contrast:
enhancing tissue (tumour, vessels) stays bright, fat and fibroglandular tissue cancel out. The
steps, each a function of its own so that callers can stop at any of them:

    subtraction(pre, post) -> axial_mip -> normalise -> resize_square

Follow-ups (T1, T2) are registered to the baseline (`registration.py`) before this, and are
normalised with the baseline's intensity scale (``reference=``) so that a fading tumour looks
fainter instead of being stretched back to full brightness.
"""

from __future__ import annotations

import nibabel as nib
import numpy as np

from ...core.errors import InputError
from ...core.scan import (IMAGE, LABELS, Scan, check_image_values, require_finite, require_ndim,
                          require_same_grid)

MODEL_SIZES = (64, 128, 256)  # bundled models and the paper (256)
MIP_ORIENTATION = ("L", "P", "S")  # index axes x, y, z of the volume a MIP is taken from


def subtraction(pre: Scan, post: Scan) -> Scan:
    """First post-contrast minus pre-contrast, with negative values clipped to 0.

    Negative differences come from wash-out, motion and noise, not from enhancement; clipping
    keeps the background of the MIP at 0 as on clinical subtraction MIPs. Both series must
    share one grid (same shape, spacing, position and orientation): they are phases of one
    acquisition, so a mismatch means the wrong series or a missing registration.
    """
    for scan, role in ((pre, "pre-contrast"), (post, "post-contrast")):
        _require_image(scan, role)
        check_image_values(scan, f"{scan.name} ({role})")
    require_same_grid(pre, post, "pre- and post-contrast series must share a grid")
    tolerance = 0.01 * min(pre.spacing)  # position/orientation, beyond float rounding
    if not np.allclose(pre.affine, post.affine, atol=tolerance):
        raise InputError(post.name, f"position or orientation differs from {pre.name} "
                                    "(same shape and spacing); register the series first")
    difference = post.array.astype(np.float32) - pre.array.astype(np.float32)
    np.maximum(difference, 0.0, out=difference)
    if not np.any(difference):  # would surface later as a constant MIP, naming neither file
        same = "is identical to" if np.array_equal(pre.array, post.array) else \
            "has no voxel brighter than"
        raise InputError(post.name, f"{same} the pre-contrast {pre.name}, so the subtraction "
                                    "is empty; are the pre- and post-contrast files swapped "
                                    "or the same series?")
    return post.derive(difference, step="subtraction", pre_contrast=pre.name,
                       post_contrast=post.name, negative_values="clipped to 0")


def axial_mip(volume: Scan) -> Scan:
    """Maximum-intensity projection along the superior-inferior axis.

    Which array axis runs S-I is read from the affine, never assumed. The volume is first
    brought to the closest LPS orientation (`MIP_ORIENTATION`) by flipping/permuting axes (no
    interpolation), so every MIP has the same in-plane layout whatever the scanner's storage
    order (a model must see the same anatomy layout at training and at use). LPS is the
    storage order of DICOM and of nacsim's phantoms: napari, drawing row 0 on top, shows the
    MIP like the axial slices, the radiological way (anterior up, patient's right on the
    left); for an LPS volume the MIP is simply ``array.max(axis=0)``.

    The result is 2D, ``(y, x)``; its 4x4 affine keeps the in-plane geometry, and its third
    column is the S-I voxel step placed at the middle of the projected slab. A label map
    projects to the union of its labels (max), which is the tumour's footprint on the MIP.
    """
    require_ndim(volume, 3)
    require_finite(volume)  # a constant volume (an empty mask) projects fine
    current = nib.orientations.io_orientation(volume.affine)  # row i: index axis i -> RAS axis
    si_index_axis = int(np.flatnonzero(current[:, 0] == 2)[0])
    to_lps = nib.orientations.ornt_transform(current,
                                             nib.orientations.axcodes2ornt(MIP_ORIENTATION))
    xyz = volume.array.transpose(2, 1, 0)
    lps = nib.orientations.apply_orientation(xyz, to_lps)
    affine = volume.affine @ nib.orientations.inv_ornt_aff(to_lps, xyz.shape)
    mip = lps.max(axis=2).T  # (x, y) -> (y, x)
    mip_affine = affine.copy()
    mip_affine[:3, 3] += affine[:3, 2] * (lps.shape[2] - 1) / 2.0  # mid-slab
    slab_mm = lps.shape[2] * volume.spacing_xyz[si_index_axis]
    return volume.derive(np.ascontiguousarray(mip), step="axial_mip", affine=mip_affine,
                         projected_array_axis=2 - si_index_axis,
                         input_orientation=volume.orientation, slab_mm=round(slab_mm, 3))


def intensity_range(image: Scan, low_percentile: float = 0.5,
                    high_percentile: float = 99.5) -> tuple[float, float]:
    """The intensities at two percentiles of ``image``: the window `normalise` maps to [0, 1].
    Percentiles rather than min/max, so one hot voxel does not set the scale."""
    if not 0.0 <= low_percentile < high_percentile <= 100.0:
        raise InputError("normalise percentiles", f"need 0 <= low < high <= 100, got "
                                                  f"{low_percentile} and {high_percentile}")
    check_image_values(image)
    low, high = np.percentile(image.array.astype(np.float64), [low_percentile, high_percentile])
    if not high > low:
        raise InputError(image.name, f"intensities between the {low_percentile} and "
                                     f"{high_percentile} percentiles are all {low}; widen the "
                                     "percentiles or check the image")
    return float(low), float(high)


def normalise(image: Scan, *, low_percentile: float = 0.5, high_percentile: float = 99.5,
              reference: Scan | None = None) -> Scan:
    """Map intensities linearly to [0, 1] (float32), clipping outside the window.

    The window is the ``[low_percentile, high_percentile]`` range of ``reference`` if given,
    else of ``image`` itself. Pass the baseline (un-normalised) MIP as ``reference`` when
    normalising its follow-ups, so all time points share one intensity scale.
    """
    _require_image(image, "image to normalise")
    check_image_values(image)
    scale_from = image if reference is None else reference
    low, high = intensity_range(scale_from, low_percentile, high_percentile)
    out = (image.array.astype(np.float32) - np.float32(low)) / np.float32(high - low)
    np.clip(out, 0.0, 1.0, out=out)
    return image.derive(out, step="normalise", low_percentile=low_percentile,
                        high_percentile=high_percentile, low_value=low, high_value=high,
                        reference=None if reference is None else reference.name)


def resize_square(image: Scan, size: int, *, fit: str = "pad",
                  labels: bool | None = None) -> Scan:
    """Resize a 2D image (or label map) to ``size x size`` pixels for a model.

    ``fit="pad"`` first pads the shorter side symmetrically (with the image minimum, 0 for
    label maps) so the anatomy keeps its aspect ratio; ``fit="stretch"`` scales each axis on
    its own. Images are resampled linearly with anti-aliasing when shrinking; label maps
    (``labels``, default from ``image.kind``) by nearest neighbour, so they keep their label
    values. The affine (and so ``spacing``) is
    updated: the image still covers the same stretch of the patient.
    """
    from skimage.transform import resize  # noqa: PLC0415 - heavy import, used only here

    require_ndim(image, 2)
    require_finite(image)
    if int(size) != size or size < 1:
        raise InputError("model size", f"expected a positive whole number of pixels, got {size}")
    if fit not in ("pad", "stretch"):
        raise InputError("fit", f"expected 'pad' or 'stretch', got {fit!r}")
    size = int(size)
    labels = image.kind == LABELS if labels is None else labels
    array, affine = image.array, image.affine.copy()
    if fit == "pad" and array.shape[0] != array.shape[1]:
        side = max(array.shape)
        before = [(side - n) // 2 for n in array.shape]
        pad = [(b, side - n - b) for b, n in zip(before, array.shape)]
        array = np.pad(array, pad, constant_values=0 if labels else array.min())
        # Array axes (y, x) are affine columns 1 and 0: padding moves the first pixel back.
        affine[:3, 3] -= affine[:3, 1] * before[0] + affine[:3, 0] * before[1]
    factors = np.array(array.shape, float) / size  # old pixels per new pixel, (y, x)
    resized = resize(array, (size, size), order=0 if labels else 1, mode="edge",
                     anti_aliasing=(not labels) and bool(np.any(factors > 1)),
                     preserve_range=True)
    resized = resized.astype(image.array.dtype if labels else np.float32)
    # Pixel centres keep the image extent: new pixel j sits at old (j + 0.5) * f - 0.5.
    for column, f in ((1, factors[0]), (0, factors[1])):
        affine[:3, 3] += affine[:3, column] * (0.5 * f - 0.5)
        affine[:3, column] *= f
    return image.derive(resized, step="resize_square", affine=affine, size=size, fit=fit,
                        input_shape=list(image.shape),
                        input_spacing_mm=[round(float(s), 6) for s in image.spacing])


def subtraction_mip(pre: Scan, post: Scan) -> Scan:
    """`axial_mip` of the `subtraction`: the un-normalised MIP (use it as the ``reference``
    for follow-ups)."""
    return axial_mip(subtraction(pre, post))


def breast_model_input(pre: Scan, post: Scan, *, reference: Scan | None = None,
                       size: int | None = None, low_percentile: float = 0.5,
                       high_percentile: float = 99.5) -> Scan:
    """Pre- and first post-contrast volumes -> the 2D [0, 1] image the NAC models take.

    ``reference`` is the baseline's `subtraction_mip` when preparing a follow-up (its
    intensity window is reused); ``size`` resizes to a square model size (see `MODEL_SIZES`).
    """
    image = normalise(subtraction_mip(pre, post), low_percentile=low_percentile,
                      high_percentile=high_percentile, reference=reference)
    return image if size is None else resize_square(image, size)


def _require_image(scan: Scan, role: str) -> None:
    if scan.kind != IMAGE:
        raise InputError(scan.name, f"the {role} must be an image, got a label map")

