"""Synthetic lung CT patients: non-small cell lung cancer under immune checkpoint inhibitors.

The embedded default data of the ImmunoDiff family. Each patient has

- baseline clinical values drawn at realistic ranges (age, sex, race, CEA, ANC, ALC, NLR,
  AEC, AMC, PD-L1 TPS), every one passing the `LUNG` schema;
- outcomes drawn from documented models of those values: RECIST response at 6 weeks from a
  logistic model (about 26 % responders, 19/74 in the paper) and overall survival from a
  Weibull proportional-hazards model with censoring;
- a pre-treatment CT crop in HU (body wall, ribs, spine, mediastinum, heart, both lungs with
  five lobes, fissures, airways, a pulmonary vessel tree and a lobulated tumour) with lobe,
  vessel and tumour masks, and the 6-week follow-up: the same anatomy with the tumour shrunk
  (responders) or persisting/growing (non-responders), a small repositioning and new noise.

Counterfactuals: `render(scenario)` keeps the anatomy, the nuisances and the patient's
latent uniforms, re-evaluates the response model under the scenario's clinical values and
draws the follow-up that follows from it. See ``docs/phantoms-lung.md`` for every number.

Geometry: the phantom is drawn in RAS index order, arrays ``(z, y, x)`` with +x towards the
patient's right, +y anterior, +z superior, coordinates in mm about the grid centre (these
equal the world RAS coordinates of the stored scans). `base.phantom_scan` stores the arrays
flipped in y and x (LPS, the DICOM order) so napari shows axial slices the radiological way.
The misalignment matrix in ``truth`` acts in the drawing frame, as in the breast phantom.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Mapping

import numpy as np
from scipy import ndimage

from ...core.errors import InputError
from ...core.schema import LUNG
from .. import measure
from .base import Rendering, patient_seed, phantom_scan
from .lung_outcomes import (diameter_change_percent, draw_clinical, kaplan_meier_median,
                            recist_category, response_probability, survival_outcome)
from .shapes import Blob, Grid, draw_tubes, random_misalignment, smooth_noise, smooth_path, warp

# Label values of the "lobes" mask (0 = not lung).
LOBES = ("RUL", "RML", "RLL", "LUL", "LLL")
LOBE_LABELS = {name: i + 1 for i, name in enumerate(LOBES)}


@dataclasses.dataclass(frozen=True)
class LungConfig:
    """Grid, tissue attenuations (HU) and noise of the lung phantom."""

    shape: tuple[int, int, int] = (40, 128, 160)           # (z, y, x) voxels
    spacing: tuple[float, float, float] = (4.0, 2.5, 2.5)  # mm: 160 x 320 x 400 mm crop
    noise_sd_hu: float = 18.0
    air_hu: float = -1000.0
    fat_hu: float = -100.0
    muscle_hu: float = 45.0
    mediastinal_fat_hu: float = -90.0
    blood_hu: float = 40.0          # heart, aorta and pulmonary vessels (no contrast)
    abdomen_hu: float = 55.0        # liver / spleen below the diaphragm
    lung_hu: float = -860.0
    lung_gravity_hu: float = 35.0   # dependent (posterior) lung is denser by up to this
    fissure_hu: float = 110.0       # added on the fissure planes (thin pleural lines)
    airway_hu: float = -990.0
    cancellous_bone_hu: float = 230.0
    cortical_bone_hu: float = 800.0
    cartilage_hu: float = 120.0
    disc_hu: float = 90.0
    tumour_hu: float = 35.0
    tumour_texture_hu: float = 12.0
    necrosis_hu: float = -25.0        # added in the core of large necrotic tumours
    treated_tumour_hu: float = -12.0  # added to a responder's residual tumour (less dense)

    @property
    def grid(self) -> Grid:
        return Grid(self.shape, self.spacing)


CONFIG = LungConfig()

# --- the patient ---------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Outcome:
    """The clinical values of a scenario and what the phantom's models make of them."""

    clinical: dict[str, Any]   # validated baseline values + responder, survival, death
    response_probability: float
    responder: bool
    responder_forced: bool
    diameter_change_percent: float
    recist: str


class LungPhantom:
    """One synthetic NSCLC patient; a pure function of ``(cohort_seed, index)``."""

    family = LUNG

    def __init__(self, cohort_seed: int, index: int):
        self.cohort_seed, self.index = int(cohort_seed), int(index)
        self.id = f"LU{self.index + 1:04d}"
        self._baseline = LUNG.validate_clinical(draw_clinical(self._rng("clinical")),
                                                subject=self.id)
        size = self._rng("tumour-size")
        # Baseline longest diameter (mm) and lobe: upper lobes predominate in NSCLC.
        self.tumour_diameter_mm = float(np.clip(30.0 * np.exp(0.35 * size.standard_normal()),
                                                16.0, 58.0))
        self.tumour_lobe = LOBES[int(size.choice(5, p=(0.30, 0.07, 0.17, 0.28, 0.18)))]
        self._u_response, self._u_change = self._rng("response").random(2)
        self._u_event, self._u_admin, self._u_loss = self._rng("survival").random(3)
        self.clinical = self.outcome().clinical

    def _rng(self, stream: str) -> np.random.Generator:
        return patient_seed(self.cohort_seed, self.index, stream)

    def __repr__(self) -> str:
        return f"LungPhantom({self.cohort_seed}, {self.index}) <{self.id}>"

    # --- outcomes (no images) ----------------------------------------------------------------
    def outcome(self, scenario: Mapping[str, Any] | None = None) -> Outcome:
        """Clinical values and outcomes under ``scenario``, without drawing images.

        The scenario overrides baseline values (missing or None = the patient's own). NLR is
        re-derived from ANC/ALC; an NLR given alone is realised by changing ANC and keeping
        ALC. ``responder`` may be forced (the follow-up then shows that response; the
        probability is still the model's). ``survival_months`` and ``death`` are consequences
        of the survival model and cannot be set.
        """
        inputs, forced = self._scenario_inputs(scenario)
        p = response_probability(inputs, self.tumour_diameter_mm)
        responder = bool(self._u_response < p) if forced is None else forced
        change = diameter_change_percent(responder, self._u_change)
        months, death = survival_outcome(inputs, responder, self._u_event, self._u_admin,
                                         self._u_loss)
        clinical = LUNG.validate_clinical(
            {**inputs, "responder": responder, "survival_months": months, "death": death},
            subject=self.id)
        return Outcome(clinical, p, responder, forced is not None, change,
                       recist_category(change))

    def _scenario_inputs(self, scenario):
        scenario = {k: v for k, v in dict(scenario or {}).items() if v is not None}
        for name in ("survival_months", "death"):
            if name in scenario:
                raise InputError(f"{self.id}: scenario field '{name}'",
                                 "is an outcome of the phantom's survival model and cannot be "
                                 "set; set 'responder' or the baseline values instead")
        forced = None
        if "responder" in scenario:
            forced = LUNG.variable("responder").parse(scenario.pop("responder"), self.id)
        merged = {k: v for k, v in self._baseline.items() if k != "NLR"}
        if "NLR" in scenario:
            nlr = LUNG.variable("NLR").parse(scenario["NLR"], self.id)
            if nlr <= 0:
                raise InputError(f"{self.id}: clinical field 'NLR'", f"= {nlr:g} must be > 0")
            if "ANC" in scenario and "ALC" not in scenario:
                merged["ALC"] = LUNG.variable("ANC").parse(scenario["ANC"], self.id) / nlr
            elif "ANC" not in scenario:
                alc = scenario.get("ALC", merged["ALC"])
                merged["ANC"] = nlr * LUNG.variable("ALC").parse(alc, self.id)
        merged.update(scenario)
        return LUNG.validate_clinical(merged, subject=self.id), forced

    # --- images ------------------------------------------------------------------------------
    def render(self, scenario: Mapping[str, Any] | None = None) -> Rendering:
        out = self.outcome(scenario)
        anatomy = _anatomy(self.cohort_seed, self.index, self.tumour_diameter_mm,
                           self.tumour_lobe)
        grid = CONFIG.grid
        scale = {"pre": 1.0, "post": 1.0 + out.diameter_change_percent / 100.0}
        shift = {"pre": 0.0, "post": CONFIG.treated_tumour_hu if out.responder else 0.0}
        provenance = dict(patient=self.id, cohort_seed=self.cohort_seed, index=self.index,
                          scenario=_json_scenario(scenario))
        scans, masks, diameters, volumes = {}, {}, {}, {}
        for tp in ("pre", "post"):
            frame = anatomy.frames[tp]
            image, tumour = _draw_tumour(frame, anatomy.tumour, grid, scale[tp], shift[tp])
            image += frame.noise
            np.clip(image, -1024, 3071, out=image)
            vessels = frame.vessels & ~tumour
            scans[tp] = {"ct": phantom_scan(image, grid, timepoint=tp, channel="ct",
                                            **provenance)}
            masks[tp] = {name: phantom_scan(arr.astype(np.uint8), grid, kind="labels",
                                            timepoint=tp, mask=name, **provenance)
                         for name, arr in (("tumour", tumour), ("lobes", frame.lobes),
                                           ("vessels", vessels))}
            diameters[tp] = longest_axial_diameter_mm(tumour, grid.spacing)
            volumes[tp] = measure.volume_ml(tumour, grid.spacing)
        truth = {
            "patient_id": self.id,
            "family": LUNG.name,
            "synthetic": True,
            "scenario": _json_scenario(scenario),
            "tumour_lobe": self.tumour_lobe,
            "lobe_labels": {str(v): k for k, v in LOBE_LABELS.items()},
            "baseline_diameter_nominal_mm": self.tumour_diameter_mm,
            "response_probability": out.response_probability,
            "responder": out.responder,
            "responder_forced": out.responder_forced,
            "recist": out.recist,
            "diameter_change_percent": out.diameter_change_percent,
            "longest_diameter_mm": diameters,
            "measured_diameter_change_percent": _change(diameters["pre"], diameters["post"]),
            "tumour_volume_ml": volumes,
            "volume_reduction_percent": measure.reduction_percent(volumes["pre"],
                                                                  volumes["post"]),
            "survival_months": out.clinical["survival_months"],
            "death": out.clinical["death"],
            "misalignment": {
                "pre": np.eye(4).tolist(),
                "post": anatomy.frames["post"].transform.tolist(),
                "convention": "4x4 on (z, y, x) mm about the grid centre in the drawing frame "
                              "(RAS index order; stored scans are flipped in y and x): "
                              "image_tp(p) = pre(M @ p); masks are in the frame of their "
                              "time point",
            },
            "noise_sd_hu": CONFIG.noise_sd_hu,
        }
        return Rendering(self.id, LUNG, out.clinical, scans, masks, truth)


def make_patient(cohort_seed: int, index: int) -> LungPhantom:
    return LungPhantom(cohort_seed, index)


def cohort_summary(cohort_seed: int, n: int) -> dict[str, float]:
    """Outcome statistics of the first ``n`` patients of a cohort (no images drawn)."""
    patients = [LungPhantom(cohort_seed, i) for i in range(n)]
    resp = np.array([p.clinical["responder"] for p in patients])
    months = np.array([p.clinical["survival_months"] for p in patients])
    death = np.array([p.clinical["death"] for p in patients])
    probs = np.array([p.outcome().response_probability for p in patients])
    return {
        "n": n,
        "responder_rate": float(resp.mean()),
        "mean_response_probability": float(probs.mean()),
        "censored_fraction": float(1 - death.mean()),
        "km_median_months_responders": kaplan_meier_median(months[resp], death[resp]),
        "km_median_months_non_responders": kaplan_meier_median(months[~resp], death[~resp]),
    }


def _json_scenario(scenario) -> dict[str, Any]:
    out = {}
    for k, v in dict(scenario or {}).items():
        out[str(k)] = v.item() if isinstance(v, np.generic) else v
    return out


def _change(before: float, after: float) -> float:
    return 100.0 * (after / before - 1.0) if before > 0 else float("nan")


def longest_axial_diameter_mm(mask: np.ndarray, spacing) -> float:
    """RECIST-like longest diameter: the largest in-plane extent over the axial slices.

    Distance between the farthest voxel centres plus one voxel, so a single voxel measures
    one voxel across.
    """
    found = ndimage.find_objects(mask.astype(np.uint8))
    if not found or found[0] is None:
        return 0.0
    box = mask[found[0]]
    step = np.asarray(spacing[1:], float)
    best = 0.0
    for section in box:
        if not section.any():
            continue
        edge = section & ~ndimage.binary_erosion(section)
        pts = np.argwhere(edge) * step
        d2 = ((pts[:, None, :] - pts[None, :, :]) ** 2).sum(-1)
        best = max(best, float(np.sqrt(d2.max())))
    return best + float(step.mean())


# --- anatomy -------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class _Tumour:
    """A lobulated, optionally spiculated solid with a mottled texture (mm, (z, y, x))."""

    blob: Blob
    spike_directions: np.ndarray   # (k, 3) unit vectors in the blob frame
    spike_amplitudes: np.ndarray   # (k,) relative protrusion
    texture_waves: np.ndarray      # (m, 3) cycles / mm
    texture_phases: np.ndarray     # (m,)
    necrotic: bool

    SPIKE_SHARPNESS_LOG2 = 6  # cosine lobe ** 64: thin, tapering spicules

    @functools.cached_property
    def reach_mm(self) -> float:
        """Farthest surface point from the centre at scale 1 (checked over 4000 directions,
        +5 %), to size the box the tumour is drawn in."""
        directions = np.random.default_rng(0).normal(size=(4000, 3))
        directions /= np.linalg.norm(directions, axis=1, keepdims=True)
        directions = np.concatenate([directions, self.spike_directions])
        return float(self.blob.radii_mm.max() * self._surface(directions).max() * 1.05)

    def _surface(self, direction: np.ndarray) -> np.ndarray:
        b = self.blob
        surface = 1.0 + np.cos(2 * np.pi * direction @ b.wave_vectors.T + b.wave_phases) \
            @ b.wave_amplitudes
        if len(self.spike_amplitudes):
            lobes = np.clip(direction @ self.spike_directions.T, 0, 1)
            for _ in range(self.SPIKE_SHARPNESS_LOG2):  # squaring: much faster than pow
                lobes *= lobes
            surface = surface + lobes @ self.spike_amplitudes
        return surface

    @property
    def mean_radius_mm(self) -> float:
        return float(np.cbrt(np.prod(self.blob.radii_mm)))

    def depth(self, points_mm: np.ndarray, scale: float) -> np.ndarray:
        """Normalised depth (0 centre, 1 surface) as `Blob.depth`, plus the spicules."""
        b = self.blob
        local = (points_mm - b.center_mm) @ b.rotation
        norm = np.linalg.norm(local, axis=-1) + 1e-9
        direction = local / norm[..., None]
        ellipsoidal = np.linalg.norm(local / b.radii_mm, axis=-1)
        return ellipsoidal / (scale * self._surface(direction))

    def texture(self, points_mm: np.ndarray) -> np.ndarray:
        """Zero-mean, unit-variance mottling attached to the tumour (plane waves)."""
        local = points_mm - self.blob.center_mm
        waves = np.cos(2 * np.pi * local @ self.texture_waves.T + self.texture_phases)
        return waves.sum(-1) * np.sqrt(2.0 / len(self.texture_phases))


@dataclasses.dataclass(frozen=True)
class _Frame:
    """Everything of one time point that does not depend on the scenario (read-only)."""

    background: np.ndarray   # HU without tumour and noise
    lobes: np.ndarray        # uint8 labels 0..5
    vessels: np.ndarray      # bool
    noise: np.ndarray        # HU
    transform: np.ndarray    # 4x4: frame point -> reference point (mm)


@dataclasses.dataclass(frozen=True)
class _Anatomy:
    frames: dict[str, _Frame]
    tumour: _Tumour


Z_PAD = 4  # slices (16 mm): more than a 2 degree tilt moves the edge of a 400 mm field

# A few patients' scenario-independent volumes are kept, so that rendering one patient under
# many scenarios (the what-if use) redraws only the tumour.
@functools.lru_cache(maxsize=4)
def _anatomy(cohort_seed: int, index: int, diameter_mm: float, lobe: str) -> _Anatomy:
    grid = CONFIG.grid
    # The anatomy is drawn on a grid taller by Z_PAD slices at each end (same centre, so the
    # same mm coordinates): the follow-up's tilt then pulls real anatomy, not empty space,
    # into its top and bottom slices.
    padded = Grid((grid.shape[0] + 2 * Z_PAD, *grid.shape[1:]), grid.spacing)
    crop = slice(Z_PAD, Z_PAD + grid.shape[0])
    background, lobes, vessels = _draw_body(patient_seed(cohort_seed, index, "anatomy"), padded)
    transform = random_misalignment(patient_seed(cohort_seed, index, "nuisance"))
    # Labels are warped in one pass: lobe label in the low bits, vessel flag above.
    packed = warp(lobes + 8 * vessels.astype(np.uint8), padded, transform, order=0)[crop]
    frames = {
        "pre": _Frame(background[crop], lobes[crop], vessels[crop],
                      _ct_noise(patient_seed(cohort_seed, index, "noise-pre"), grid),
                      np.eye(4)),
        "post": _Frame(warp(background, padded, transform, order=1, cval=CONFIG.air_hu)[crop],
                       packed & 7, packed >= 8,
                       _ct_noise(patient_seed(cohort_seed, index, "noise-post"), grid),
                       transform),
    }
    tumour = _place_tumour(patient_seed(cohort_seed, index, "tumour-shape"), grid,
                           frames["pre"].lobes, LOBE_LABELS[lobe], diameter_mm)
    for frame in frames.values():
        for arr in (frame.background, frame.lobes, frame.vessels, frame.noise):
            arr.flags.writeable = False
    return _Anatomy(frames, tumour)


def _ct_noise(rng: np.random.Generator, grid: Grid) -> np.ndarray:
    """White Gaussian CT noise (quantum noise at this voxel size is close to white)."""
    noise = rng.standard_normal(grid.shape, dtype=np.float32)
    noise *= np.float32(CONFIG.noise_sd_hu)
    return noise


def _draw_tumour(frame: _Frame, tumour: _Tumour, grid: Grid, scale: float, shift_hu: float):
    """Composite the tumour at ``scale`` into a copy of the frame's background.

    Depth is evaluated at the reference-frame position of each voxel (``transform``), so the
    follow-up tumour is exactly the warped reference tumour, without resampling an image.
    Returns (image, tumour mask); the tumour is confined to the lungs.
    """
    image = frame.background.copy()
    mask = np.zeros(grid.shape, bool)
    if scale <= 0:
        return image, mask
    matrix = frame.transform
    centre = (np.linalg.inv(matrix) @ np.append(tumour.blob.center_mm, 1.0))[:3]
    bbox = grid.bbox_around(centre, tumour.reach_mm * scale * 1.02 + 2 * max(grid.spacing))
    if any(s.stop <= s.start for s in bbox):
        return image, mask
    points = grid.coords(bbox) @ matrix[:3, :3].T + matrix[:3, 3]
    depth = tumour.depth(points, scale)
    lung = frame.lobes[bbox] > 0
    inside = (depth < 1.0) & lung
    # ~2 mm partial-volume rim; the 0.5 level is the mask boundary.
    weight = np.clip((1.0 - depth) * tumour.mean_radius_mm * scale / 2.0 + 0.5, 0, 1) * lung
    touched = weight > 0  # texture only where the tumour shows
    hu = CONFIG.tumour_hu + shift_hu + CONFIG.tumour_texture_hu * tumour.texture(points[touched])
    if tumour.necrotic:
        hu = hu + CONFIG.necrosis_hu * np.clip((0.55 - depth[touched]) / 0.2, 0, 1)
    region = image[bbox]
    region[touched] += weight[touched] * (hu - region[touched])
    mask[bbox] = inside
    return image, mask


DIAMETER_PER_MEAN_RADIUS = 2.5


def _place_tumour(rng: np.random.Generator, grid: Grid, lobes: np.ndarray, label: int,
                  diameter_mm: float) -> _Tumour:
    """Shape the tumour, then try centres in its lobe until it lies (almost) within it."""
    # Mean radius from the nominal longest diameter: the longest axial extent of these
    # lobulated, spiculated blobs is about 2.5 mean radii (median of 400, docs/phantoms-lung.md).
    blob = Blob.random(rng, np.zeros(3), diameter_mm / DIAMETER_PER_MEAN_RADIUS,
                       elongation=0.3, irregularity=0.3, waves=8)
    n_spikes = int(rng.integers(0, 9))
    directions = rng.normal(size=(n_spikes, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True) + 1e-12
    amplitudes = rng.uniform(0.2, 0.5, n_spikes)
    waves = rng.normal(size=(10, 3))
    waves *= (1.0 / rng.uniform(5.0, 12.0, 10) / np.linalg.norm(waves, axis=1))[:, None]
    phases = rng.uniform(0, 2 * np.pi, 10)
    necrotic = bool(rng.random() < 0.5) and diameter_mm > 40.0
    tumour = _Tumour(blob, directions, amplitudes, waves, phases, necrotic)

    candidates = np.flatnonzero(lobes.ravel() == label)
    spacing = np.asarray(grid.spacing)
    reach = tumour.reach_mm + 2 * spacing.max()  # the shape's extent, whatever its centre
    best, best_fraction = tumour, -1.0
    for _ in range(60):
        voxel = np.array(np.unravel_index(int(rng.choice(candidates)), grid.shape))
        centre = (voxel + 0.5) * spacing - grid.extent_mm / 2
        trial = dataclasses.replace(tumour, blob=dataclasses.replace(blob, center_mm=centre))
        bbox = grid.bbox_around(centre, reach)
        inside = trial.depth(grid.coords(bbox), 1.0) < 1.0
        fraction = float((inside & (lobes[bbox] == label)).sum() / max(inside.sum(), 1))
        if fraction > best_fraction:
            best, best_fraction = trial, fraction
        if fraction >= 0.98:
            break
    return best


def _superellipse_level(x, y, half_x, half_front, half_back, power=2.6):
    """1 on a chest-like rounded-rectangle outline, < 1 inside; y >= 0 is anterior."""
    half_y = np.where(y >= 0, half_front, half_back)
    return ((np.abs(x) / half_x) ** power + (np.abs(y) / half_y) ** power) ** (1 / power)


@dataclasses.dataclass(frozen=True)
class _Chest:
    """The chest every stage of `_draw_body` draws into. Coordinates in mm about the body
    centre: ``z`` (nz, 1, 1), ``yy`` (ny, 1) (+ anterior), ``xx`` (1, nx) (+ the patient's
    right). Axial masks (ny, nx): inside the skin, inside the subcutaneous fat, the cavity;
    ``cavity`` (nz, ny, nx) narrows towards the apex. ``cav_*``: the cavity's half-widths."""

    z: np.ndarray
    yy: np.ndarray
    xx: np.ndarray
    body: np.ndarray
    muscle_in: np.ndarray
    cav_level: np.ndarray     # the cavity's superellipse level: 1 on its outline
    cavity_2d: np.ndarray
    cavity: np.ndarray
    cav_x: float
    cav_front: float
    cav_back: float


@dataclasses.dataclass(frozen=True)
class _Spine:
    yv: float                 # vertebral body centre (y, mm) and radius
    rv: float
    dv: np.ndarray            # axial distance to the vertebral body's centre (mm)
    dc: np.ndarray            # axial distance to the spinal canal's centre (mm)


@dataclasses.dataclass(frozen=True)
class _Mediastinum:
    xm: float                 # its centre (x, mm) and half-width at the hila
    half_med: float
    band: np.ndarray          # (ny, nx) within the cavity
    desc_aorta_c: tuple       # (y, x) of the descending aorta
    right: np.ndarray         # (1, nx) the patient's right of the mediastinum


@dataclasses.dataclass(frozen=True)
class _Heart:
    heart: np.ndarray
    pericardium: np.ndarray   # the heart with its pericardial fat
    asc_aorta: np.ndarray


def _draw_body(rng: np.random.Generator, grid: Grid):
    """Noiseless reference CT (HU) without tumour, lobe labels and vessel mask.

    Most structures do not change along z within the crop, so they are drawn once on the
    axial plane (``yy``, ``xx``: mm, (ny, 1) and (1, nx), y measured from the body centre)
    and broadcast; float32 throughout keeps a render fast. The stages draw from ``rng`` in
    this order, so a patient's anatomy depends on it.
    """
    c = CONFIG
    chest = _chest_outline(rng, grid)
    texture = smooth_noise(rng, grid.shape, (0.5, 1.0, 1.0))
    plane = np.full(grid.shape[1:], c.air_hu, np.float32)  # the z-invariant wall, then broadcast
    plane[chest.body] = c.fat_hu
    plane[chest.muscle_in] = c.muscle_hu
    plane[chest.cavity_2d] = c.mediastinal_fat_hu
    spine = _draw_spine(rng, chest, plane)
    mediastinum = _draw_mediastinum(rng, chest, spine, plane)

    image = np.broadcast_to(plane, grid.shape).copy()
    image[~chest.cavity & (plane == c.mediastinal_fat_hu)] = c.muscle_hu  # wall above the narrowing
    image += (6.0 * texture) * chest.body
    _draw_discs(rng, chest, spine, image)
    _draw_ribs(rng, chest, image)
    heart = _heart(rng, chest, mediastinum)
    below = _below_diaphragm(rng, chest, mediastinum)
    abdomen_hu = np.where(mediastinum.right, c.abdomen_hu, c.abdomen_hu - 10.0)  # liver, spleen
    image = np.where(chest.cavity & below & ~heart.pericardium, abdomen_hu.astype(np.float32),
                     image)
    image[heart.pericardium] = c.mediastinal_fat_hu
    image[heart.heart] = c.blood_hu
    image[heart.asc_aorta] = c.blood_hu

    # Lungs: the cavity minus mediastinum, heart, aorta and spine, above the diaphragm.
    aorta_y, aorta_x = mediastinum.desc_aorta_c
    excluded_2d = mediastinum.band | (np.hypot(chest.xx - aorta_x, chest.yy - aorta_y) < 15) \
        | (spine.dv < spine.rv + 4) | (spine.dc < 16)
    lung = chest.cavity & ~excluded_2d & ~heart.pericardium & ~below & ~heart.asc_aorta
    lobes, image = _draw_lobes(rng, chest, mediastinum, lung, texture, image)
    image, vessels = _draw_vessels_and_airways(rng, grid, chest, spine, mediastinum, heart,
                                               lung, lobes, image)
    return image, lobes, vessels


def _chest_outline(rng: np.random.Generator, grid: Grid) -> _Chest:
    """The body outline and wall layers (mm). The posterior wall is thicker: paraspinal
    muscles."""
    nz, ny, nx = grid.shape
    sz, sy, sx = grid.spacing
    f32 = np.float32
    z = ((np.arange(nz, dtype=f32) + 0.5) * sz - nz * sz / 2)[:, None, None]
    y = (np.arange(ny, dtype=f32) + 0.5) * sy - ny * sy / 2
    xx = ((np.arange(nx, dtype=f32) + 0.5) * sx - nx * sx / 2)[None, :]
    half_x, front, back = rng.uniform(150, 170), rng.uniform(105, 122), rng.uniform(105, 120)
    yy = (y - f32(rng.uniform(-10, 0)))[:, None]
    fat, muscle = rng.uniform(5, 22), rng.uniform(6, 12)
    wall = fat + muscle + 10.0  # + rib layer
    cav_x, cav_front, cav_back = half_x - wall, front - wall, back - wall - 10.0
    body = _superellipse_level(xx, yy, half_x, front, back) < 1
    muscle_in = _superellipse_level(xx, yy, half_x - fat, front - fat, back - fat) < 1
    cav_level = _superellipse_level(xx, yy, cav_x, cav_front, cav_back)
    # The chest narrows slightly towards the apex (top of the crop).
    cavity = cav_level[None] < 1.0 - 0.10 * np.clip((z - 30.0) / 50.0, 0, 1)
    return _Chest(z, yy, xx, body, muscle_in, cav_level, cav_level < 1, cavity, cav_x,
                  cav_front, cav_back)


def _draw_spine(rng: np.random.Generator, chest: _Chest, plane: np.ndarray) -> _Spine:
    """Spine: vertebral body (cortex + cancellous), canal, posterior arch; and the sternum.
    The vertebral body bulges into the back of the cavity; the lungs wrap around it."""
    c, xx, yy = CONFIG, chest.xx, chest.yy
    yv, rv = -chest.cav_back + 16.0, rng.uniform(15, 19)
    dv = np.hypot(xx, yy - yv)
    canal_y = yv - rv - 9.0
    dc = np.hypot(xx, yy - canal_y)
    arch = ((dc < 14) & (yy < yv - rv + 3)) | ((np.abs(xx) < 4) & (yy < canal_y) &
                                                 (yy > canal_y - 28)) \
        | ((np.abs(yy - canal_y) < 4) & (np.abs(xx) < 28))
    arch &= (dc >= 8) & chest.muscle_in
    vertebra = dv < rv
    plane[arch] = c.cortical_bone_hu * 0.6
    plane[dc < 8] = 15.0  # cord and CSF
    plane[vertebra] = c.cancellous_bone_hu
    plane[vertebra & (dv > rv - 2.5)] = c.cortical_bone_hu
    sternum = (((yy - chest.cav_front - 8) / 6.0) ** 2 + (xx / 16.0) ** 2) < 1
    plane[sternum] = c.cortical_bone_hu * 0.5
    return _Spine(yv, rv, dv, dc)


def _draw_mediastinum(rng: np.random.Generator, chest: _Chest, spine: _Spine,
                      plane: np.ndarray) -> _Mediastinum:
    """Mediastinum: a band widest at the hila, narrowing to the anterior and posterior
    junctions, holding the heart (with pericardial fat), the aortas and the airways. The
    descending aorta is drawn here; the rest by later stages."""
    xx, yy = chest.xx, chest.yy
    xm, half_med = rng.uniform(-8, 0), rng.uniform(16, 24)
    depth = np.clip(yy / np.where(yy > 0, chest.cav_front, chest.cav_back), -1, 1)
    band = (np.abs(xx - xm) < half_med * (0.45 + 0.55 * (1 - depth ** 2))) & chest.cavity_2d
    desc_aorta_c = (spine.yv + 6.0, xm - 24.0)
    desc_aorta = np.hypot(xx - desc_aorta_c[1], yy - desc_aorta_c[0]) < 12
    plane[desc_aorta] = CONFIG.blood_hu
    return _Mediastinum(xm, half_med, band, desc_aorta_c, xx > xm)


def _draw_discs(rng: np.random.Generator, chest: _Chest, spine: _Spine,
                image: np.ndarray) -> None:
    """Intervertebral discs, one per 27 mm of spine."""
    disc_phase = np.mod(chest.z - rng.uniform(0, 27), 27.0)
    disc = np.minimum(disc_phase, 27.0 - disc_phase) < 3.0  # (nz, 1, 1)
    image[disc & (spine.dv < spine.rv - 1)] = CONFIG.disc_hu


def _draw_ribs(rng: np.random.Generator, chest: _Chest, image: np.ndarray) -> None:
    """Ribs: rounded bars just outside the cavity, descending anteriorly, one per pitch.
    Only the ring of pixels where a rib can be is evaluated."""
    c, z, xx, yy = CONFIG, chest.z, chest.xx, chest.yy
    cav_x, cav_front, cav_back = chest.cav_x, chest.cav_front, chest.cav_back
    pitch, tilt = rng.uniform(24, 30), rng.uniform(0.25, 0.45)
    radial = (chest.cav_level - 1.0) * 0.5 * (cav_x + 0.5 * (cav_front + cav_back)) - 6.0
    anterior = yy > 0.55 * cav_front
    rib_zone = ~((np.abs(xx) < 30) & (yy < 0)) & ~((np.abs(xx) < 25) & anterior)
    iy, ix = np.nonzero((np.abs(radial) < 3.5) & rib_zone)
    phase = np.mod(z[:, :, 0] + tilt * yy[iy, 0] - rng.uniform(0, pitch), pitch)  # (nz, n)
    along = np.minimum(phase, pitch - phase)  # mm from the nearest rib axis
    section = (radial[iy, ix] / 3.5) ** 2 + (along / 5.0) ** 2
    cartilage = anterior[iy, 0]
    ring = image[:, iy, ix]
    ring = np.where(section < 1, np.where(cartilage, c.cartilage_hu, c.cortical_bone_hu), ring)
    ring = np.where((section < 0.35) & ~cartilage, c.cancellous_bone_hu, ring)
    image[:, iy, ix] = ring


def _heart(rng: np.random.Generator, chest: _Chest, mediastinum: _Mediastinum) -> _Heart:
    """The heart (an ellipsoid low in the cavity), its pericardial fat and the ascending
    aorta above it."""
    z, xx, yy, cavity, xm = chest.z, chest.xx, chest.yy, chest.cavity, mediastinum.xm
    zh = rng.uniform(-70, -50)
    # Python floats, not numpy scalars, so the 3D arithmetic stays float32.
    heart_c = (zh, rng.uniform(0.15, 0.35) * chest.cav_front, xm - rng.uniform(15, 25))
    heart_r = (55.0, rng.uniform(48, 58), rng.uniform(55, 65))
    heart_axial = ((yy - heart_c[1]) / heart_r[1]) ** 2 + ((xx - heart_c[2]) / heart_r[2]) ** 2
    heart_level = ((z - heart_c[0]) / heart_r[0]) ** 2 + heart_axial
    heart = (heart_level < 1) & cavity
    pericardium = (heart_level < (1 + 5.0 / np.mean(heart_r)) ** 2) & cavity
    asc_aorta = (np.hypot(xx - (xm + 14), yy - 0.35 * chest.cav_front) < 15) & \
        (z > zh + 0.7 * heart_r[0])
    return _Heart(heart, pericardium, asc_aorta)


def _below_diaphragm(rng: np.random.Generator, chest: _Chest,
                     mediastinum: _Mediastinum) -> np.ndarray:
    """Where the diaphragm domes leave abdomen (liver right, spleen left) rather than lung:
    lung only above z_base. The right dome is higher."""
    xx, yy, cav_x = chest.xx, chest.yy, chest.cav_x
    xm, half_med, right = mediastinum.xm, mediastinum.half_med, mediastinum.right
    dome_r = rng.uniform(-55, -40)
    dome_l = dome_r - rng.uniform(5, 15)
    dome_x = np.where(right, xm + half_med + 0.5 * cav_x, xm - half_med - 0.5 * cav_x)
    q = ((xx - dome_x) / (0.6 * cav_x)) ** 2 + \
        (yy / np.where(yy > 0, chest.cav_front, chest.cav_back)) ** 2
    z_base = (np.where(right, dome_r, dome_l) - 35.0 * q).astype(np.float32)  # (ny, nx)
    return chest.z < z_base


def _draw_lobes(rng: np.random.Generator, chest: _Chest, mediastinum: _Mediastinum,
                lung: np.ndarray, texture: np.ndarray, image: np.ndarray):
    """Lobes: oblique fissures on both sides, horizontal fissure on the right; the lung
    parenchyma (denser where dependent) with its fissures drawn as thin denser lines.
    Returns (lobe labels, image)."""
    c, z, xx, yy, right = CONFIG, chest.z, chest.xx, chest.yy, mediastinum.right
    c_r, s_r = rng.uniform(-25, -5), -rng.uniform(0.8, 1.2)
    c_l, s_l = c_r + rng.uniform(0, 12), -rng.uniform(0.8, 1.2)
    bend_r, bend_l = rng.uniform(-8, 8, 2)
    h_r = rng.uniform(-20, -5)
    lateral = ((np.abs(xx - mediastinum.xm) - mediastinum.half_med) / chest.cav_x) ** 2
    # the fissures curve with depth; z of each surface:
    oblique = np.where(right, c_r + s_r * yy + bend_r * lateral,
                       c_l + s_l * yy + bend_l * lateral).astype(np.float32)
    horizontal = (h_r + 0.15 * yy).astype(np.float32)
    upper = z > oblique
    above_horizontal = z > horizontal
    label = np.where(right, np.where(upper, np.where(above_horizontal, 1, 2), 3),
                     np.where(upper, 4, 5))
    lobes = np.where(lung, label, 0).astype(np.uint8)

    dependent = np.clip(-yy / chest.cav_back, -1, 1)  # +1 posterior (gravity), -1 anterior
    lung_hu = (c.lung_hu + c.lung_gravity_hu * dependent) + 20.0 * texture
    # Fissures: thin denser lines; distance to each surface along its normal (mm).
    slope = np.hypot(1.0, np.where(right, s_r, s_l)).astype(np.float32)
    fissure = np.maximum(0, 1 - (np.abs(z - oblique) / slope / 1.5) ** 2)
    fissure_h = np.maximum(0, 1 - ((z - horizontal) / 1.5) ** 2) * (right & upper)
    lung_hu += c.fissure_hu * np.maximum(fissure, fissure_h)
    return lobes, np.where(lung, lung_hu, image)


def _draw_vessels_and_airways(rng: np.random.Generator, grid: Grid, chest: _Chest,
                              spine: _Spine, mediastinum: _Mediastinum, heart: _Heart,
                              lung: np.ndarray, lobes: np.ndarray, image: np.ndarray):
    """Vessels (a tree per lobe) and airways from each hilum. Returns (image, vessel
    mask)."""
    c, z, xx, yy = CONFIG, chest.z, chest.xx, chest.yy
    xm, half_med = mediastinum.xm, mediastinum.half_med
    z_hilum = rng.uniform(0, 15)
    hila = {"R": np.array([z_hilum, rng.uniform(-5, 10), xm + half_med + 6]),
            "L": np.array([z_hilum + rng.uniform(-5, 5), rng.uniform(-5, 10),
                           xm - half_med - 6])}
    paths, radii, trunks = [], [], []
    spacing, half = np.asarray(grid.spacing), grid.extent_mm / 2
    flat_lobes = lobes.ravel()
    for name in LOBES:
        idx = np.flatnonzero(flat_lobes == LOBE_LABELS[name])
        picks = rng.choice(idx, size=min(300, len(idx)), replace=len(idx) < 300)
        points = (np.stack(np.unravel_index(picks, grid.shape), 1) + 0.5) * spacing - half
        tree = _vessel_tree(rng, hila[name[0]], points)
        for path, radius in tree:
            paths.append(path)
            radii.append(radius)
        trunks.append(tree[0][0])
    vessel_occupancy = draw_tubes(grid, paths, radii)
    # Airways: trachea (a cylinder down to the carina), main bronchi to the hila and lobar
    # bronchi beside the lobar arteries; one tube radius keeps this to a single blur.
    carina = np.array([rng.uniform(20, 35), spine.yv + spine.rv + 22.0, xm])
    airway_paths = [smooth_path(rng, carina, hilum - [0, 4, 0], 32, wiggle_mm=2.0)
                    for hilum in hila.values()]
    airway_paths += [trunk + np.array([0.0, -4.0, 0.0]) for trunk in trunks]
    airway_occupancy = draw_tubes(grid, airway_paths, [2.4] * len(airway_paths))
    trachea = (np.hypot(xx - xm, yy - carina[1]) < 8.0) & (z > carina[0])
    airway_occupancy[trachea] = 1.0

    mediastinum_3d = mediastinum.band & chest.cavity
    vessel_occupancy *= lung | (mediastinum_3d & ~heart.heart)
    image += vessel_occupancy * (c.blood_hu - image)
    airway_occupancy *= lung | mediastinum_3d
    image += airway_occupancy * (c.airway_hu - image)
    vessels = (vessel_occupancy > 0.5) & (airway_occupancy < 0.5) & lung
    return image, vessels


# Radii below ~1.2 mm all blur with draw_tubes' floor of half a voxel, so the two finest
# generations share one radius (one blur instead of two).
VESSEL_GENERATIONS = ((1.5, 5, (25.0, 70.0)), (0.6, 4, (12.0, 32.0)), (0.6, 3, (8.0, 20.0)))
TRUNK_RADIUS_MM = 2.2


def _vessel_tree(rng: np.random.Generator, hilum: np.ndarray, points: np.ndarray):
    """Branching arteries of one lobe: a lobar trunk from the hilum into the lobe, then
    `VESSEL_GENERATIONS` of branches towards random points of the lobe (``points``, mm), each
    heading roughly away from its parent. Returns [(path, radius_mm)], trunk first."""
    toward = hilum + 0.45 * (points.mean(0) - hilum)
    trunk_end = points[np.argmin(np.linalg.norm(points - toward, axis=1))]
    trunk = smooth_path(rng, hilum, trunk_end, 48, wiggle_mm=3.0)
    tree = [(trunk, TRUNK_RADIUS_MM)]

    def grow(parent: np.ndarray, generation: int):
        if generation == len(VESSEL_GENERATIONS):
            return
        radius, children, (lo, hi) = VESSEL_GENERATIONS[generation]
        heading = parent[-1] - parent[0]
        heading /= np.linalg.norm(heading) + 1e-9
        for k in range(children):
            start = parent[-1] if k % 2 else parent[len(parent) // 2]
            offsets = points - start
            dist = np.linalg.norm(offsets, axis=1) + 1e-9
            ok = np.flatnonzero((dist > lo) & (dist < hi) & (offsets @ heading > -0.2 * dist))
            pool = ok if len(ok) else np.argsort(np.abs(dist - (lo + hi) / 2))[:20]
            path = smooth_path(rng, start, points[int(rng.choice(pool))],
                               max(12, int(hi / 1.5)), wiggle_mm=0.05 * hi)
            tree.append((path, radius))
            grow(path, generation + 1)

    grow(trunk, 0)
    return tree
