"""Resampling a scan onto another grid (optionally through a world-space transform).

Shared by registration (follow-up onto the baseline grid) and the lung crops (CT into a
fixed box). scipy does the interpolation; label maps are interpolated label-wise, like
ANTs' ``genericLabel``, so they never gain label values.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from ...core.errors import InputError
from ...core.scan import Scan, require_ndim

# Label maps with more distinct values than this are resampled by nearest neighbour: the
# label-wise interpolation costs one resampling per label.
MAX_LABELWISE_LABELS = 16


def resample(scan: Scan, shape, affine, *, transform: np.ndarray | None = None,
             labels: bool = False, fill: float | None = None,
             antialias: bool = True) -> np.ndarray:
    """Sample a 3D ``scan`` on the grid ``(shape (z, y, x), affine (RAS))``.

    A target voxel is placed in world space by ``affine``, moved by ``transform`` (4x4 RAS
    mm, target world -> scan world; identity if None) and read from ``scan`` by trilinear
    interpolation. Where target voxels are larger than the scan's, the scan is first blurred
    (``antialias``, sigma = (step - 1) / 2 voxels, the scikit-image rule) so that noise and
    thin structures are averaged rather than aliased. Label maps are interpolated one label
    at a time (each as a 0/1 image, blurred the same way) and every voxel takes the label with
    the largest weight, so the output holds only input labels and ``fill``.
    Returns float32 for images, the input dtype for label maps.
    """
    require_ndim(scan, 3)
    shape = tuple(int(n) for n in shape)
    source = scan.array
    if np.issubdtype(source.dtype, np.floating) and not np.all(np.isfinite(source)):
        bad = int(np.count_nonzero(~np.isfinite(source)))
        raise InputError(scan.name, f"contains {bad} NaN/Inf voxels")
    if fill is None:
        fill = 0 if labels else float(source.min())
    world = np.eye(4) if transform is None else np.asarray(transform, float)
    # target index (x, y, z) -> source index (x, y, z); then both in array order (z, y, x).
    index_map = np.linalg.inv(scan.affine) @ world @ np.asarray(affine, float)
    flip = np.eye(4)[[2, 1, 0, 3]]
    index_map = flip @ index_map @ flip
    matrix, offset = index_map[:3, :3], index_map[:3, 3]

    # Source voxels per target voxel along each source axis decides the blur.
    step = np.abs(matrix).max(axis=1)
    sigma = np.maximum(0.0, (step - 1.0) / 2.0) if antialias else np.zeros(3)

    # Only the part of the source the target box can reach is filtered and read (the lung crop
    # takes a 16x96x96 box out of a 512x512x300 CT).
    corners = np.array(np.meshgrid(*[[0, n - 1] for n in shape], indexing="ij")).reshape(3, -1)
    reach = matrix @ corners + offset[:, None]
    margin = np.ceil(3 * sigma) + 2
    lo = np.clip(np.floor(reach.min(axis=1) - margin), 0, source.shape).astype(int)
    hi = np.clip(np.ceil(reach.max(axis=1) + margin) + 1, 0, source.shape).astype(int)
    out_dtype = source.dtype if labels else np.float32
    if np.any(hi <= lo):  # the target box lies wholly outside the scan
        return np.full(shape, fill, dtype=out_dtype)
    block = source[tuple(slice(a, b) for a, b in zip(lo, hi))]
    offset = offset - lo

    def sample(values: np.ndarray, cval: float) -> np.ndarray:
        values = values.astype(np.float32, copy=False)
        if np.any(sigma > 0):
            values = ndimage.gaussian_filter(values, sigma, mode="nearest")
        return ndimage.affine_transform(values, matrix, offset, output_shape=shape, order=1,
                                        mode="constant", cval=cval, prefilter=False)

    if not labels:
        return sample(block, float(fill))

    values = np.unique(block)
    if len(values) > MAX_LABELWISE_LABELS:
        return ndimage.affine_transform(block, matrix, offset, output_shape=shape, order=0,
                                        mode="constant", cval=fill, prefilter=False
                                        ).astype(out_dtype)
    candidates = list(values) + ([] if np.any(values == fill) else [fill])
    best = np.full(shape, -1.0, np.float32)
    out = np.full(shape, fill, dtype=out_dtype)
    for value in candidates:  # ties keep the earlier (smaller) label, background first
        weight = sample(block == value, 1.0 if value == fill else 0.0)
        wins = weight > best
        out[wins] = value
        best[wins] = weight[wins]
    return out
