"""Synthetic breast DCE-MRI patients under neoadjuvant chemotherapy (NAC).

A patient is drawn once from ``(cohort_seed, index)``: clinical labels, anatomy (chest wall,
two breasts, fibroglandular tissue, vessels, an irregular tumour), latent response quantiles
and the nuisances of every visit (misalignment, coil bias, contrast timing, noise). `render`
images the patient at T0 (baseline), T1 (3 weeks) and T2 (12 weeks), pre-contrast and first
post-contrast phase, under its own clinical values or under a counterfactual scenario. A
scenario only changes the tumour's response (its size and enhancement at T1/T2): anatomy,
nuisances and the latent quantiles are the patient's, so the counterfactual is the ground
truth of "the same patient, had she (not) responded".

The response model is calibrated to the published ground truth of the NAC simulation paper
(tumour size reduction vs T0, on MIPs): T1 pCR 47.93 %, non-pCR 43.13 %; T2 pCR 87.48 %,
non-pCR 59.28 %. See ``docs/phantoms-breast.md`` for the model, its parameters and the
measured cohort means.

Geometry: arrays are (z, y, x); millimetre coordinates are about the grid centre (see
`shapes.Grid`). The phantom is drawn in RAS index order: +y is anterior, +x is the
patient's right and +z superior, so the breasts lie at high y. `base.phantom_scan` stores
it in LPS order (the DICOM convention, anterior at the top of a napari view); the recorded
misalignment matrices act in the drawing frame.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from typing import Any, Mapping

import numpy as np
from scipy import ndimage, special

from ...core.errors import InputError
from ...core.schema import BREAST
from .. import measure
from . import shapes
from .base import Rendering, patient_seed, phantom_scan
from .breast_outcomes import FOLLOWUPS, RESPONSE, ResponseModel, draw_clinical, subtype_name
from .shapes import Blob, Grid

GENERATOR = "nacsim breast DCE-MRI phantom v1"


# --- configuration ----------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class BreastConfig:
    """Acquisition and tissue constants shared by every breast phantom."""

    shape: tuple[int, int, int] = (32, 128, 128)        # (z, y, x): 96 x 256 x 256 mm
    spacing: tuple[float, float, float] = (3.0, 2.0, 2.0)
    signal_scale: float = 1000.0      # arbitrary MR units; fat ends up around 850
    noise_sigma: float = 0.02         # Rician sigma, fraction of signal_scale (fat SNR ~ 40)
    bias_strength: float = 0.12       # coil bias spans about exp(±0.12)
    contrast_jitter: float = 0.07     # visit-to-visit contrast timing: enhancement x U(1±0.07)
    # Non-fat-saturated T1 (pre, post) signal, fraction of signal_scale. Fat is bright,
    # parenchyma and muscle darker; blood pool and tumour enhance strongly after contrast.
    fat: tuple[float, float] = (0.85, 0.87)
    fgt_pre: float = 0.30             # fibroglandular tissue; its enhancement (BPE) per patient
    muscle: tuple[float, float] = (0.38, 0.45)
    lung: tuple[float, float] = (0.04, 0.05)
    heart: tuple[float, float] = (0.42, 0.75)
    skin: tuple[float, float] = (0.55, 0.60)
    blood: tuple[float, float] = (0.35, 1.0)
    tumour_pre: float = 0.36          # tumour enhancement is per patient (0.65-0.95)
    enhancement_fade: float = 0.4     # a fully regressed tumour keeps 60 % of its enhancement
    partial_volume_sigma_vox: tuple[float, float, float] = (0.35, 0.6, 0.6)
    max_scale: float = 1.2            # largest tumour scale vs T0 (growth + fitting slack)

    @property
    def grid(self) -> Grid:
        return Grid(self.shape, self.spacing)


CONFIG = BreastConfig()


# --- anatomy -----------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Lobe:
    """One breast: a rounded lobe hanging anteriorly from the chest wall (prone position),
    tapering superiorly and inferiorly."""

    x_mm: float             # centre, left-right
    half_width_mm: float    # at its widest slice
    depth_mm: float         # projection from the chest wall at its widest slice
    z_mm: float             # widest slice
    half_height_mm: float   # superior-inferior extent from z_mm

    def taper(self, z):
        return np.sqrt(np.clip(1 - ((z - self.z_mm) / self.half_height_mm) ** 2, 0, 1))

    def level(self, z, y, x, wall_y):
        """< 1 inside the breast; 0 at its base centre, 1 on the skin."""
        taper = self.taper(z)
        width = self.half_width_mm * (0.55 + 0.45 * taper)
        depth = self.depth_mm * taper + 1e-6
        return ((x - self.x_mm) / width) ** 2 + (np.maximum(y - wall_y, 0) / depth) ** 2


@dataclasses.dataclass(frozen=True)
class BreastAnatomy:
    wall_y_mm: float         # anterior surface of the pectoral muscle at the midline
    wall_curvature: float    # the chest wall recedes laterally: y -= curvature * x^2
    wall_tilt: float         # ... and slopes superiorly-inferiorly: y += tilt * z
    presternal_fat_mm: float
    muscle_mm: float         # pectoral muscle + ribs between breast and lung
    body_half_width_mm: float
    lobes: tuple[Lobe, Lobe]
    heart_center_mm: tuple[float, float, float]
    heart_radii_mm: tuple[float, float, float]
    density: float           # fibroglandular fraction of the breast volume
    bpe: float               # background parenchymal enhancement (signal fraction)
    tumour_enhancement: float
    tumour_side: int         # index into lobes
    tumour: Blob

    def wall_y(self, z, x):
        return self.wall_y_mm - self.wall_curvature * x ** 2 + self.wall_tilt * z

    def breast_level(self, z, y, x):
        wall = self.wall_y(z, x)
        return np.minimum(*(lobe.level(z, y, x, wall) for lobe in self.lobes))


def _draw_anatomy(rng: np.random.Generator, grid: Grid, config: BreastConfig) -> BreastAnatomy:
    half_x = rng.uniform(52, 60)
    lobes = tuple(
        Lobe(x_mm=side * half_x * rng.uniform(0.97, 1.03),
             half_width_mm=rng.uniform(45, 58), depth_mm=rng.uniform(60, 95),
             z_mm=rng.uniform(-6, 6), half_height_mm=rng.uniform(58, 75))
        for side in (1, -1))
    fields = dict(
        wall_y_mm=rng.uniform(-40, -28), wall_curvature=rng.uniform(0.0022, 0.0032),
        wall_tilt=rng.uniform(-0.1, 0.1), presternal_fat_mm=rng.uniform(6, 14),
        muscle_mm=rng.uniform(14, 22), body_half_width_mm=rng.uniform(116, 124),
        lobes=lobes,
        heart_center_mm=(rng.uniform(-24, -8), 0.0, -rng.uniform(10, 25)),  # left: -x
        heart_radii_mm=(rng.uniform(40, 50), rng.uniform(38, 46), rng.uniform(50, 60)),
        density=rng.uniform(0.2, 0.55), bpe=rng.uniform(0.02, 0.12),
        tumour_enhancement=rng.uniform(0.65, 0.95))
    # The heart sits behind the chest wall (its y is relative to the wall, set here).
    cz, _, cx = fields["heart_center_mm"]
    fields["heart_center_mm"] = (cz, fields["wall_y_mm"] - fields["muscle_mm"]
                                 - 12.0 - fields["heart_radii_mm"][1], cx)

    # Tumour: log-normal mean radius (median 10 mm, clipped to 6-16 mm), placed in the
    # central part of one breast so that it stays inside even at its largest scale.
    radius = float(np.clip(10.0 * math.exp(rng.normal(0, 0.28)), 6.0, 16.0))
    side = int(rng.integers(2))
    lobe = lobes[side]
    half_z = grid.extent_mm[0] / 2
    draft = BreastAnatomy(**fields, tumour_side=side, tumour=None)  # geometry only
    for attempt in range(60):
        if attempt and attempt % 10 == 0:
            radius = max(6.0, radius * 0.9)   # a big tumour that does not fit: shrink it
        z = lobe.z_mm + rng.uniform(-1, 1) * min(0.35 * lobe.half_height_mm, half_z - radius)
        taper = float(lobe.taper(z))
        x = lobe.x_mm + rng.uniform(-0.45, 0.45) * lobe.half_width_mm * (0.55 + 0.45 * taper)
        y = float(draft.wall_y(z, x)) + rng.uniform(0.2, 0.6) * lobe.depth_mm * taper
        blob = Blob.random(rng, (z, y, x), radius, elongation=0.25,
                           irregularity=rng.uniform(0.15, 0.3), waves=6)
        if _fits(draft, blob, grid, config.max_scale):
            break
    else:  # cannot happen with the ranges above; fail loudly rather than draw nonsense
        raise RuntimeError("breast phantom: no tumour position fits inside the breast")
    return dataclasses.replace(draft, tumour=blob)


def _fits(anatomy: BreastAnatomy, blob: Blob, grid: Grid, max_scale: float) -> bool:
    """Blob at its largest scale is inside its breast, clear of skin, chest wall and the
    top/bottom slices (a tumour cut by the field of view would fake a size change)."""
    found = blob.depth(grid, max_scale)
    if found is None:
        return False
    bbox, depth = found
    points = grid.coords(bbox)[depth < 1.0]
    z, y, x = points[:, 0], points[:, 1], points[:, 2]
    lobe = anatomy.lobes[anatomy.tumour_side]
    wall = anatomy.wall_y(z, x)
    edge = grid.extent_mm[0] / 2 - 1.5 * grid.spacing[0]
    return bool(np.all(lobe.level(z, y, x, wall) < 0.8) and np.all(y > wall + 5.0)
                and np.all(np.abs(z) < edge))


def _vessel_paths(rng: np.random.Generator, anatomy: BreastAnatomy):
    """Centre lines (mm) and radii of the enhancing vessels: branches running from the chest
    wall towards the nipple in each breast, internal mammary vessels behind the sternum, and
    one or two feeders converging on the tumour (tumours recruit vessels)."""
    paths, radii = [], []
    for lobe in anatomy.lobes:
        for _ in range(int(rng.integers(3, 6))):
            x0 = lobe.x_mm + rng.uniform(-0.7, 0.7) * lobe.half_width_mm
            z0 = lobe.z_mm + rng.uniform(-25, 25)
            start = (z0, float(anatomy.wall_y(z0, x0)) + 2.0, x0)
            z1 = lobe.z_mm + rng.uniform(-12, 12)
            x1 = lobe.x_mm + rng.uniform(-0.35, 0.35) * lobe.half_width_mm
            end = (z1, float(anatomy.wall_y(z1, x1)) + rng.uniform(0.4, 0.85) * lobe.depth_mm
                   * float(lobe.taper(z1)), x1)
            paths.append(shapes.smooth_path(rng, start, end, wiggle_mm=4.0))
            radii.append(float(rng.choice([1.0, 1.0, 1.5])))
    for side in (1, -1):  # internal mammary vessels: craniocaudal, beside the sternum
        x = side * rng.uniform(25, 35)
        y = float(anatomy.wall_y(0.0, x)) - anatomy.muscle_mm + 3.0
        paths.append(shapes.smooth_path(rng, (-60.0, y, x), (60.0, y, x), wiggle_mm=2.0))
        radii.append(2.0)
    centre = anatomy.tumour.center_mm
    lobe = anatomy.lobes[anatomy.tumour_side]
    for _ in range(int(rng.integers(1, 3))):
        x0 = centre[2] + rng.uniform(-0.5, 0.5) * lobe.half_width_mm
        z0 = centre[0] + rng.uniform(-10, 10)
        start = (z0, float(anatomy.wall_y(z0, x0)) + 2.0, x0)
        paths.append(shapes.smooth_path(rng, start, centre, wiggle_mm=3.0))
        radii.append(1.5)
    return paths, radii


def _render_anatomy(anatomy: BreastAnatomy, grid: Grid, config: BreastConfig,
                    texture_rng: np.random.Generator, vessel_rng: np.random.Generator):
    """Pre- and post-contrast signal of everything but the tumour, in the T0 frame, as
    fractions of ``signal_scale``; plus the breast mask."""
    axes = [(np.arange(n) + 0.5) * d - n * d / 2 for n, d in zip(grid.shape, grid.spacing)]
    z = axes[0][:, None, None].astype(np.float32)
    y = axes[1][None, :, None].astype(np.float32)
    x = axes[2][None, None, :].astype(np.float32)
    wall = anatomy.wall_y(z, x)
    level = anatomy.breast_level(z, y, x)
    breast = (level < 1.0) & (y >= wall)

    # Thorax: an ellipse whose anterior part is cut by the chest wall (+ presternal fat).
    body_half = anatomy.body_half_width_mm
    thorax_cy, thorax_ry = anatomy.wall_y_mm - 100.0, 130.0
    thorax = ((x / body_half) ** 2 + ((y - thorax_cy) / thorax_ry) ** 2 < 1.0) & (
        y < wall + anatomy.presternal_fat_mm)
    body = breast | thorax
    inner = (((x / (body_half - 14)) ** 2 + ((y - thorax_cy) / (thorax_ry - 14)) ** 2 < 1.0)
             & (y < wall - anatomy.muscle_mm))
    muscle = thorax & (y < wall) & ~inner
    hz, hy, hx = anatomy.heart_center_mm
    rz, ry, rx = anatomy.heart_radii_mm
    heart = inner & (((z - hz) / rz) ** 2 + ((y - hy) / ry) ** 2 + ((x - hx) / rx) ** 2 < 1.0)
    lung = inner & ~heart
    fat = body & ~muscle & ~inner
    skin = body & ~ndimage.binary_erosion(body, structure=np.array(
        [[[0, 0, 0], [0, 0, 0], [0, 0, 0]], [[0, 1, 0], [1, 1, 1], [0, 1, 0]],
         [[0, 0, 0], [0, 0, 0], [0, 0, 0]]], bool), border_value=1)

    # Fibroglandular tissue: a thresholded smooth random field, favoured centrally (FGT
    # spares the subcutaneous fat) and around the tumour (cancers arise in FGT). The
    # threshold is the quantile that gives the patient's breast density.
    # Correlated farther along y than across: strands running from the chest wall towards
    # the nipple, like the ducts and their stroma.
    field = shapes.smooth_noise(texture_rng, grid.shape, (0.8, 3.0, 1.3))
    tumour = anatomy.tumour
    dist2 = (((z - tumour.center_mm[0]) ** 2 + (y - tumour.center_mm[1]) ** 2
              + (x - tumour.center_mm[2]) ** 2) / (2.0 * tumour.radii_mm.mean()) ** 2)
    score = field + 1.5 * (0.5 - np.minimum(level, 1.0)) + 1.2 * np.exp(-dist2)
    threshold = np.quantile(score[breast], 1.0 - anatomy.density)
    fgt = np.where(breast, special.expit(4.0 * (score - threshold)), 0.0).astype(np.float32)

    vessels = shapes.draw_tubes(grid, *_vessel_paths(vessel_rng, anatomy)) * body

    images = []
    for phase in (0, 1):
        img = np.zeros(grid.shape, np.float32)
        img[fat] = config.fat[phase]
        img *= 1.0 + 0.02 * field   # faint fat lobule texture
        img[muscle] = config.muscle[phase]
        img[lung] = config.lung[phase]
        img[heart] = config.heart[phase]
        fgt_signal = config.fgt_pre + (anatomy.bpe if phase else 0.0)
        img += fgt * (fgt_signal - img)
        img += vessels * (config.blood[phase] - img)
        img[skin] = config.skin[phase]
        images.append(ndimage.gaussian_filter(img, config.partial_volume_sigma_vox))
    return images[0], images[1], breast


# --- tumour course -----------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class _TumourAt:
    """The tumour at one visit: its scale vs T0 (in the T0 frame) and its mask, cropped to
    ``box``, in the visit's (misaligned) frame."""

    scale: float
    box: tuple[slice, slice, slice]
    mask: np.ndarray
    area_mm2: float
    target_reduction: float | None


def _warp_box(crop: np.ndarray, box, grid: Grid, transform_mm: np.ndarray):
    """`shapes.warp` (order 0) of a volume that is zero outside ``box``, computed on the
    output region it can reach only. Same voxel mapping as `shapes.warp`, so the result
    equals the full-volume warp (checked in the tests); it is what makes fitting a tumour's
    size cheap."""
    spacing = np.asarray(grid.spacing)
    to_mm = np.eye(4)
    to_mm[:3, :3] = np.diag(spacing)
    to_mm[:3, 3] = 0.5 * spacing - grid.extent_mm / 2
    full = np.linalg.inv(to_mm) @ transform_mm @ to_mm   # output voxel -> input voxel
    src_lo = np.array([s.start for s in box])
    src_hi = np.array([s.stop for s in box])
    corners = np.array([[*c, 1.0] for c in itertools.product(*zip(src_lo - 1, src_hi))])
    reach = (np.linalg.inv(full) @ corners.T)[:3]
    out_lo = np.clip(np.floor(reach.min(axis=1)).astype(int) - 1, 0, grid.shape)
    out_hi = np.clip(np.ceil(reach.max(axis=1)).astype(int) + 2, 0, grid.shape)
    out_box = tuple(slice(int(a), int(b)) for a, b in zip(out_lo, out_hi))
    matrix = full[:3, :3]
    offset = full[:3, 3] + matrix @ out_lo - src_lo
    out = ndimage.affine_transform(crop.astype(np.uint8), matrix, offset,
                                   output_shape=tuple(int(v) for v in out_hi - out_lo),
                                   order=0, mode="constant", cval=0, prefilter=False)
    return out_box, out.astype(bool)


def _tumour_at(blob: Blob, grid: Grid, scale: float, transform_mm: np.ndarray | None):
    """Mask (box, crop) of the blob at ``scale``, moved into a visit's frame."""
    found = blob.depth(grid, scale)
    if found is None:
        return (slice(0, 0),) * 3, np.zeros((0, 0, 0), bool)
    box, depth = found
    mask = depth < 1.0
    if transform_mm is None:
        return box, mask
    return _warp_box(mask, box, grid, transform_mm)


def _fit_scale(area_at, target_mm2: float, first_guess: float, max_scale: float,
               pixel_mm2: float, steps: int = 8):
    """Scale whose rendered projected area is closest to ``target_mm2``.

    Area grows monotonically with scale (the blob's surface radius is proportional to it),
    so a bracketed secant on sqrt(area) converges in a few steps; the remaining error is
    the pixel discretisation. A target below half a pixel is a vanished tumour.
    """
    if target_mm2 < 0.5 * pixel_mm2:
        return 0.0, area_at(0.0)
    lo, hi = 0.0, max_scale
    scale = min(max(first_guess, 1e-3), max_scale)
    best = None
    for _ in range(steps):
        result = area_at(scale)
        error = result[-1] - target_mm2
        if best is None or abs(error) < abs(best[1][-1] - target_mm2):
            best = (scale, result)
        if abs(error) <= 0.5 * pixel_mm2:
            break
        if error > 0:
            hi = scale
        else:
            lo = scale
        guess = scale * math.sqrt(target_mm2 / result[-1]) if result[-1] > 0 else 0.5 * (lo + hi)
        scale = guess if lo < guess < hi else 0.5 * (lo + hi)
    return best


# --- the patient -------------------------------------------------------------------------

class BreastPhantom:
    """One synthetic breast NAC patient; see the module docstring."""

    family = BREAST

    def __init__(self, cohort_seed: int, index: int, config: BreastConfig = CONFIG,
                 response: ResponseModel = RESPONSE):
        if int(index) < 0:
            raise InputError("patient index", f"{index} must be >= 0")
        self.cohort_seed = int(cohort_seed)
        self.index = int(index)
        self.id = f"BR{self.index + 1:04d}"
        self.config = config
        self.response = response
        self.grid = config.grid
        self.clinical = draw_clinical(self._rng("clinical"))
        self.anatomy = _draw_anatomy(self._rng("anatomy"), self.grid, config)
        self.latents = response.latents(self._rng("response"))
        self.misalignment = {"T0": np.eye(4)}
        for t in FOLLOWUPS:
            self.misalignment[t] = shapes.random_misalignment(self._rng(f"misalignment:{t}"))
        self._static = None   # anatomy images, rendered on first use (the slow part)

    def __repr__(self) -> str:
        return f"BreastPhantom({self.id}, {BREAST.describe(self.clinical)})"

    def _rng(self, stream: str) -> np.random.Generator:
        return patient_seed(self.cohort_seed, self.index, stream)

    def scenario(self, scenario: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The patient's clinical values with ``scenario`` overriding some, validated."""
        return BREAST.validate_clinical({**self.clinical, **(scenario or {})}, subject=self.id)

    # The tumour's course is the only thing a scenario changes.
    def _course(self, clinical: Mapping[str, Any]) -> dict[str, _TumourAt]:
        grid, blob = self.grid, self.anatomy.tumour
        pixel = grid.spacing[1] * grid.spacing[2]
        subtype = (clinical["HR"], clinical["HER2"])

        def area_at(transform):
            def at(scale):
                box, mask = _tumour_at(blob, grid, scale, transform)
                return box, mask, measure.projected_area_mm2(mask, grid.spacing)
            return at

        box, mask, area0 = area_at(None)(1.0)
        course = {"T0": _TumourAt(1.0, box, mask, area0, None)}
        for t in FOLLOWUPS:
            r = self.response.reduction(t, clinical["pCR"], subtype, self.latents[t])
            scale, (box, mask, area) = _fit_scale(
                area_at(self.misalignment[t]), (1 - r) * area0, math.sqrt(max(1 - r, 0)),
                self.config.max_scale, pixel)
            course[t] = _TumourAt(scale, box, mask, area, r)
        return course

    def tumour_sizes(self, scenario: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Tumour sizes under a scenario without rendering images (what `render` reports
        in its truth, by the same code): for calibration over many patients."""
        clinical = self.scenario(scenario)
        return self._sizes(clinical, self._course(clinical))

    def _sizes(self, clinical, course) -> dict[str, Any]:
        areas = {t: v.area_mm2 for t, v in course.items()}
        return {
            "subtype": subtype_name(clinical["HR"], clinical["HER2"]),
            "tumour_area_mm2": areas,
            "tumour_volume_ml": {t: float(v.mask.sum() * np.prod(self.grid.spacing) / 1000)
                                 for t, v in course.items()},
            "reduction_percent": {t: measure.reduction_percent(areas["T0"], areas[t])
                                  for t in FOLLOWUPS},
            "target_reduction_percent": {t: 100.0 * course[t].target_reduction
                                         if course[t].target_reduction is not None
                                         else float("nan") for t in FOLLOWUPS},
            "tumour_scale": {t: v.scale for t, v in course.items()},
        }

    def _anatomy_images(self):
        if self._static is None:
            self._static = _render_anatomy(self.anatomy, self.grid, self.config,
                                           self._rng("texture"), self._rng("vessels"))
        return self._static

    def _tumour_signal(self, pre: np.ndarray, post: np.ndarray, scale: float,
                       reduction: float) -> None:
        """Paint the tumour at ``scale`` into the T0-frame images, in place: slightly darker
        than FGT before contrast; afterwards a heterogeneous, rim-enhancing mass whose
        enhancement fades as it responds."""
        found = self.anatomy.tumour.depth(self.grid, scale)
        if found is None:
            return
        box, depth = found
        blob, config = self.anatomy.tumour, self.config
        # A texture fixed in space over the box of the largest tumour, so that a shrinking
        # tumour keeps the texture of the tissue it still occupies.
        outer = self.grid.bbox_around(blob.center_mm, blob.max_radius_mm * config.max_scale
                                      + 2 * max(self.grid.spacing))
        texture = shapes.smooth_noise(self._rng("tumour texture"),
                                      tuple(s.stop - s.start for s in outer), (0.7, 1.2, 1.2))
        texture = texture[tuple(slice(b.start - o.start, b.stop - o.start)
                                for b, o in zip(box, outer))]
        # Soft edge about one voxel wide, 0.5 exactly on the mask boundary (depth 1).
        width = min(0.5, 2.0 * self.grid.spacing[1] / (blob.radii_mm.mean() * scale))
        alpha = np.clip((1.0 - depth) / width + 0.5, 0, 1).astype(np.float32)
        enhancement = (self.anatomy.tumour_enhancement
                       * (1 - config.enhancement_fade * min(max(reduction, 0.0), 1.0))
                       * (0.45 + 0.55 * np.minimum(depth, 1.0) ** 2) * (1 + 0.25 * texture))
        signal_pre = config.tumour_pre * (1 + 0.05 * texture)
        signal_post = signal_pre + np.maximum(enhancement, 0)
        pre[box] += alpha * (signal_pre - pre[box])
        post[box] += alpha * (signal_post - post[box])

    def render(self, scenario: Mapping[str, Any] | None = None, *,
               tumour: bool = True) -> Rendering:
        """Images and masks of every visit under ``scenario``. ``tumour=False`` draws the
        same patient with no tumour at any visit (empty masks; anatomy, feeder vessels and
        nuisances unchanged): lesion-free images, e.g. negatives for segmenter training."""
        clinical = self.scenario(scenario)
        if tumour:
            course = self._course(clinical)
        else:
            nothing = (slice(0, 0),) * 3, np.zeros((0, 0, 0), bool)
            course = {t: _TumourAt(0.0, *nothing, 0.0, None) for t in BREAST.timepoint_names}
        grid, config = self.grid, self.config
        base_pre, base_post, _ = self._anatomy_images()
        scans: dict[str, dict] = {}
        masks: dict[str, dict] = {}
        contrast = {}
        for t, visit_tumour in course.items():
            pre, post = base_pre.copy(), base_post.copy()
            self._tumour_signal(pre, post, visit_tumour.scale,
                                visit_tumour.target_reduction or 0.0)
            # Per-visit nuisances, from the visit's own streams: the same under any scenario.
            nuisance = self._rng(f"acquisition:{t}")
            contrast[t] = float(nuisance.uniform(1 - config.contrast_jitter,
                                                 1 + config.contrast_jitter))
            post = pre + contrast[t] * (post - pre)
            if t != "T0":
                pre = shapes.warp(pre, grid, self.misalignment[t], order=1)
                post = shapes.warp(post, grid, self.misalignment[t], order=1)
            bias = shapes.bias_field(nuisance, grid, config.bias_strength) * config.signal_scale
            noise = self._rng(f"noise:{t}")
            sigma = config.noise_sigma * config.signal_scale
            provenance = dict(timepoint=t, patient=self.id, cohort_seed=self.cohort_seed,
                              index=self.index, scenario=dict(clinical), family=BREAST.name,
                              phantom=GENERATOR)
            if not tumour:
                provenance["lesion_free"] = True
            scans[t] = {
                channel: phantom_scan(shapes.rician(noise, image * bias, sigma), grid,
                                      channel=channel, **provenance)
                for channel, image in (("pre", pre), ("post", post))}
            label = np.zeros(grid.shape, np.uint8)
            label[visit_tumour.box] = visit_tumour.mask
            masks[t] = {"tumour": phantom_scan(label, grid, kind="labels", channel="tumour",
                                               **provenance)}
        truth = {
            "generator": GENERATOR,
            "patient": self.id,
            "factual": dict(self.clinical),
            "scenario": dict(clinical),
            "counterfactual": clinical != self.clinical,
            "lesion_free": not tumour,
            **self._sizes(clinical, course),
            "tumour_area_unit": "mm² of the axial projection (MIP) of the tumour mask",
            "latent_quantiles": dict(self.latents),
            "misalignment_mm": {t: m.tolist() for t, m in self.misalignment.items()},
            "misalignment_convention": "4x4 on (z, y, x) mm about the grid centre; visit "
                                       "voxel at p shows the T0 anatomy at M @ p",
            "contrast_factor": contrast,
            "tumour_side": "right" if self.anatomy.lobes[self.anatomy.tumour_side].x_mm > 0
                           else "left",
            "tumour_center_mm": self.anatomy.tumour.center_mm.tolist(),
            "tumour_mean_radius_mm": float(np.cbrt(np.prod(self.anatomy.tumour.radii_mm))),
            "breast_density": self.anatomy.density,
        }
        return Rendering(patient_id=self.id, family=BREAST, clinical=clinical, scans=scans,
                         masks=masks, truth=truth)


def make_patient(cohort_seed: int, index: int) -> BreastPhantom:
    return BreastPhantom(cohort_seed, index)
