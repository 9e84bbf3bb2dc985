"""Affine registration of a follow-up scan to its baseline (ANTs), and resampling onto a grid.

The NAC paper aligns the 3- and 12-week DCE-MRI to the pre-treatment scan with an ANTs affine
registration before taking the MIP; the lung crops need the same kind of resampling. Two parts:

- `register_affine` runs ``antsRegistration`` and keeps only the result that matters, a 4x4
  matrix in world millimetres (RAS, like `Scan.affine`): ``fixed_to_moving`` maps a point of
  the baseline to the same anatomy in the follow-up. ANTs writes its transform to a file; that
  file lives in a temporary directory that is removed before the function returns.
- `apply` (with `resample.resample`) pulls a scan onto a target grid through such a matrix, with scipy, so
  applying a registration needs neither ANTs nor files, and label maps keep their exact label
  values (label-wise interpolation, like ANTs' ``genericLabel``).

Determinism. ITK splits the metric computation over threads and adds the partial sums in an
order that depends on scheduling: with 2 threads two identical runs differed in the 4th
significant digit of the matrix (measured here, antspyx 0.6.3). With one thread and a fixed
``--random-seed`` (for the metric's random point sampling) two runs are bit-identical. ITK reads
its thread count once, the first time any ITK filter runs in the process, from
``ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS``; changing the variable afterwards has no effect
(also measured). So it is set here, at import time, before this module (or anything else that
imports nacsim's preprocessing first) can run ANTs. ``registration(random_seed=...)`` is
ignored since antspyx 0.6.2: the seed goes through ``ants.config`` instead (`_seed_ants`).
"""

from __future__ import annotations

import os

# Must precede the first ITK filter run in this process (see the module docstring); ants itself
# is imported lazily so that modules needing only `resample` do not pay its 2 s import.
os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = "1"

import dataclasses  # noqa: E402
import tempfile  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

from ...core.errors import InputError  # noqa: E402
from ...core.scan import LABELS, Scan, check_image_values, require_ndim  # noqa: E402
from .resample import resample  # noqa: E402

LINEAR_TRANSFORMS = ("Translation", "Rigid", "Similarity", "Affine")

# NIfTI world is RAS+, ITK world is LPS+: the first two axes change sign, the third does not.
_RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0])
_RAS_TO_LPS_4 = np.diag([-1.0, -1.0, 1.0, 1.0])



@dataclasses.dataclass(frozen=True)
class RegistrationSettings:
    """Parameters of the ANTs linear registration (``antsRegistration`` stage options).

    ANTs stops a resolution level early once the metric stops improving, so ``iterations``
    are upper bounds; the run time is set by the number of voxels the metric samples. With
    ``shrink_factors=None`` the image pyramid follows the volume size: levels shrink by
    (4, 2, 1) x f, f the smallest power of two that leaves at most ``max_finest_voxels`` at
    the finest level, with smoothing sigma = log2(shrink) voxels (the ANTs pattern 3, 2, 1, 0
    for 8, 4, 2, 1). Measured single-threaded on a 96x256x256 volume: 197 s at full
    resolution with 25 % sampling, 23 s with f = 2 and 10 % sampling, same accuracy (0.1 mm).
    """

    metric: str = "mattes"                # mutual information: copes with contrast changes
    histogram_bins: int = 32
    sampling_rate: float = 0.1            # fraction of voxels the metric samples (seeded)
    iterations: tuple[int, ...] = (500, 250, 100)
    shrink_factors: tuple[int, ...] | None = None       # None: from the volume size
    smoothing_sigmas: tuple[float, ...] | None = None   # voxels; None: log2(shrink)
    max_finest_voxels: int = 2_000_000
    initialise: str = "centre_of_mass"    # or "identity" (scanner coordinates already close)
    seed: int = 20240617

    def __post_init__(self):
        given = [v for v in (self.iterations, self.shrink_factors, self.smoothing_sigmas)
                 if v is not None]
        if len({len(v) for v in given}) != 1:
            raise InputError("registration settings", "iterations, shrink_factors and "
                             "smoothing_sigmas need one value per resolution level each")
        if self.initialise not in ("centre_of_mass", "identity"):
            raise InputError("registration settings", f"initialise must be 'centre_of_mass' or "
                             f"'identity', got {self.initialise!r}")
        if not 0 < self.sampling_rate <= 1:
            raise InputError("registration settings", "sampling_rate must be in (0, 1]")

    def resolved(self, n_voxels: int) -> RegistrationSettings:
        """These settings with the pyramid filled in for a volume of ``n_voxels``."""
        levels = len(self.iterations)
        shrink = self.shrink_factors
        if shrink is None:
            finest = 1
            while n_voxels / finest ** 3 > self.max_finest_voxels:
                finest *= 2
            shrink = tuple(finest * 2 ** (levels - 1 - k) for k in range(levels))
        sigmas = self.smoothing_sigmas
        if sigmas is None:
            sigmas = tuple(float(np.log2(f)) for f in shrink)
        return dataclasses.replace(self, shrink_factors=tuple(int(f) for f in shrink),
                                   smoothing_sigmas=tuple(float(v) for v in sigmas))

    def as_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v
                for k, v in dataclasses.asdict(self).items()}


@dataclasses.dataclass(frozen=True, eq=False)  # holds arrays: compare fields explicitly
class Registration:
    """A linear registration result: everything needed to bring moving-space scans onto the
    fixed scan's grid, held in memory."""

    fixed_to_moving: np.ndarray        # 4x4, RAS mm: fixed-world point -> moving-world point
    fixed_shape: tuple[int, int, int]  # (z, y, x)
    fixed_affine: np.ndarray           # the fixed scan's voxel-to-world (RAS) affine
    fixed_name: str
    moving_name: str
    type_of_transform: str
    settings: RegistrationSettings     # as run: the pyramid is filled in

    @property
    def moving_to_fixed(self) -> np.ndarray:
        return np.linalg.inv(self.fixed_to_moving)

    def apply(self, scan: Scan, *, labels: bool | None = None,
              fill: float | None = None) -> Scan:
        return apply(self, scan, labels=labels, fill=fill)

    def summary(self) -> dict[str, Any]:
        """Readable parameters of ``fixed_to_moving`` (for provenance and reports): its
        rotation angle, where it moves the fixed grid's centre, and its scale factors."""
        matrix = self.fixed_to_moving[:3, :3]
        u, s, vt = np.linalg.svd(matrix)
        rotation = u @ vt
        angle = np.degrees(np.arccos(np.clip((np.trace(rotation) - 1) / 2, -1.0, 1.0)))
        centre_idx = (np.array(self.fixed_shape[::-1], float) - 1) / 2
        centre = self.fixed_affine[:3, :3] @ centre_idx + self.fixed_affine[:3, 3]
        shift = self.fixed_to_moving[:3, :3] @ centre + self.fixed_to_moving[:3, 3] - centre
        return {"rotation_deg": round(float(angle), 4),
                "centre_shift_mm": [round(float(v), 4) for v in shift],
                "scales": [round(float(v), 5) for v in s]}


# --- registration --------------------------------------------------------------------------

def register_affine(fixed: Scan, moving: Scan, *, type_of_transform: str = "Affine",
                    settings: RegistrationSettings | None = None) -> Registration:
    """Register ``moving`` (e.g. a follow-up) to ``fixed`` (its baseline) with ANTs.

    Both must be finite, non-constant 3D images; they may have different grids (the
    registration works in world millimetres). Same inputs and settings give a bit-identical
    result. ``type_of_transform`` is one of `LINEAR_TRANSFORMS`.
    """
    if type_of_transform not in LINEAR_TRANSFORMS:
        raise InputError("type_of_transform", f"{type_of_transform!r} is not a linear "
                         f"transform; choose one of {', '.join(LINEAR_TRANSFORMS)}")
    for scan, role in ((fixed, "fixed"), (moving, "moving")):
        require_ndim(scan, 3, f"{scan.name} ({role} image)")
        check_image_values(scan, f"{scan.name} ({role} image)")

    settings = (settings or RegistrationSettings()).resolved(max(fixed.array.size,
                                                                 moving.array.size))
    ants = _import_ants()
    # Mutual information does not care about an intensity offset, but the centre-of-mass
    # initialisation does: CT (mostly negative HU) or zero-mean images would put the "mass"
    # anywhere. Shifting both images to start at 0 makes background weigh nothing.
    fixed_img = to_ants(fixed, shift_to_zero=True)
    moving_img = to_ants(moving, shift_to_zero=True)
    _seed_ants(ants, settings.seed)
    with tempfile.TemporaryDirectory(prefix="nacsim-ants-") as workdir:
        try:
            result = ants.registration(
                fixed_img, moving_img, type_of_transform=type_of_transform,
                initial_transform="Identity" if settings.initialise == "identity" else None,
                outprefix=os.path.join(workdir, "reg_"),
                aff_metric=settings.metric, aff_sampling=settings.histogram_bins,
                aff_random_sampling_rate=settings.sampling_rate,
                aff_iterations=tuple(int(i) for i in settings.iterations),
                aff_shrink_factors=settings.shrink_factors,
                aff_smoothing_sigmas=settings.smoothing_sigmas,
                verbose=False)
        except RuntimeError as err:  # antsRegistration exited non-zero: no usable overlap etc.
            raise InputError(moving.name, f"ANTs could not register it to {fixed.name}: "
                                          f"{str(err).splitlines()[0] if str(err) else err!r}"
                             ) from err
        transforms = result["fwdtransforms"]
        if len(transforms) != 1:  # "-z 1" collapses the initialisation into the affine
            raise RuntimeError(f"expected one linear transform from ANTs, got {transforms}")
        transform = ants.read_transform(transforms[0])
        fixed_to_moving = _itk_affine_to_ras(transform.parameters, transform.fixed_parameters)
    return Registration(fixed_to_moving=fixed_to_moving, fixed_shape=fixed.shape,
                        fixed_affine=fixed.affine.copy(), fixed_name=fixed.name,
                        moving_name=moving.name, type_of_transform=type_of_transform,
                        settings=settings)


def apply(registration: Registration, scan: Scan, *, labels: bool | None = None,
          fill: float | None = None) -> Scan:
    """Resample ``scan`` (in the moving scan's world, e.g. the follow-up or its tumour mask)
    onto the fixed scan's grid. The result has the fixed scan's affine and shape.

    ``labels`` (default: from ``scan.kind``) selects label-wise interpolation, which never
    creates a label value that was not in the input. ``fill`` is the value outside the moving
    field of view (default: the image minimum, i.e. background; 0 for label maps).
    """
    require_ndim(scan, 3)
    labels = scan.kind == LABELS if labels is None else labels
    array = resample(scan, registration.fixed_shape, registration.fixed_affine,
                     transform=registration.fixed_to_moving, labels=labels, fill=fill)
    return scan.derive(
        array, step="registration_resample", affine=registration.fixed_affine,
        fixed=registration.fixed_name, moving=registration.moving_name,
        type_of_transform=registration.type_of_transform,
        fixed_to_moving_ras_mm=[[round(float(v), 8) for v in row]
                                for row in registration.fixed_to_moving],
        interpolation="labelwise-linear" if labels else "linear",
        settings=registration.settings.as_dict(), **registration.summary())


# --- geometry between nacsim scans and ANTs images -----------------------------------------

def to_ants(scan: Scan, *, shift_to_zero: bool = False):
    """An ANTs image with the scan's voxels and physical geometry (ITK LPS world).

    ANTs/ITK describe a grid by origin, spacing and an orthonormal direction matrix, with
    ``world_LPS = origin + direction @ diag(spacing) @ index``; a sheared affine cannot be
    expressed that way and is refused.
    """
    ants = _import_ants()
    require_ndim(scan, 3)
    array = scan.array.astype(np.float32)
    if shift_to_zero:
        array = array - array.min()
    lps = _RAS_TO_LPS @ scan.affine[:3, :3]
    spacing = np.linalg.norm(lps, axis=0)
    direction = lps / spacing
    if not np.allclose(direction.T @ direction, np.eye(3), atol=1e-4):
        raise InputError(scan.name, "voxel axes are not perpendicular (sheared affine); "
                                    "resample the scan to an orthogonal grid first")
    origin = _RAS_TO_LPS @ scan.affine[:3, 3]
    # ANTs wants index order (x, y, z); our arrays are (z, y, x).
    return ants.from_numpy(np.ascontiguousarray(array.transpose(2, 1, 0)),
                           origin=tuple(float(v) for v in origin),
                           spacing=tuple(float(v) for v in spacing),
                           direction=direction)


def affine_from_ants(image) -> np.ndarray:
    """The RAS voxel-to-world affine (index order x, y, z) of an ANTs image."""
    lps = np.asarray(image.direction, float) @ np.diag(np.asarray(image.spacing, float))
    affine = np.eye(4)
    affine[:3, :3] = _RAS_TO_LPS @ lps
    affine[:3, 3] = _RAS_TO_LPS @ np.asarray(image.origin, float)
    return affine


def _itk_affine_to_ras(parameters, fixed_parameters) -> np.ndarray:
    """ITK ``AffineTransform`` parameters -> 4x4 matrix acting on RAS points.

    ITK stores the 3x3 matrix row by row, then the translation, and the centre of rotation as
    fixed parameters: ``T(p) = M (p - c) + c + t`` on LPS points, mapping fixed to moving.
    """
    parameters = np.asarray(parameters, float)
    matrix = parameters[:9].reshape(3, 3)
    translation = parameters[9:12]
    centre = np.asarray(fixed_parameters, float)[:3]
    lps = np.eye(4)
    lps[:3, :3] = matrix
    lps[:3, 3] = translation + centre - matrix @ centre
    return _RAS_TO_LPS_4 @ lps @ _RAS_TO_LPS_4


def _seed_ants(ants, seed: int) -> None:
    """Make ANTs pass ``--random-seed`` (what makes its sampled metric reproducible).

    ``set_ants_deterministic(on=True)`` would in addition reseed numpy's and Python's global
    random generators (a side effect on the caller) and sets the thread variable too late to
    matter; where its "Repro transforms only" check is honoured it would also refuse plain
    "Affine". The seed is the part we need.
    """
    ants.config.set_ants_deterministic(on=False, seed_value=int(seed))


def _import_ants():
    import ants  # noqa: PLC0415 - deliberately lazy, see the module docstring

    return ants
