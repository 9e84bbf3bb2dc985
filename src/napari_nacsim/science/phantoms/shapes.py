"""Building blocks shared by the breast and lung phantoms.

Everything is defined in millimetres on a voxel grid described by ``Grid``; random choices
come from a ``numpy.random.Generator`` handed in by the caller, so a phantom is a pure
function of its seed. The anatomy is drawn once on a reference grid; a follow-up's
misalignment is applied afterwards with `warp`.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import ndimage


@dataclasses.dataclass(frozen=True)
class Grid:
    shape: tuple[int, int, int]      # (z, y, x)
    spacing: tuple[float, float, float]  # mm, (z, y, x)

    @property
    def extent_mm(self) -> np.ndarray:
        return np.asarray(self.shape) * np.asarray(self.spacing)

    def coords(self, bbox: tuple[slice, slice, slice] | None = None) -> np.ndarray:
        """Voxel-centre coordinates in mm, shape (*sub_shape, 3), (z, y, x) order, origin at
        the grid centre."""
        bbox = bbox or tuple(slice(0, n) for n in self.shape)
        axes = [(np.arange(s.start, s.stop) + 0.5) * d - n * d / 2
                for s, d, n in zip(bbox, self.spacing, self.shape)]
        return np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1)

    def bbox_around(self, center_mm, radius_mm: float) -> tuple[slice, slice, slice]:
        center_vox = (np.asarray(center_mm) + self.extent_mm / 2) / np.asarray(self.spacing)
        half = radius_mm / np.asarray(self.spacing)
        lo = np.clip(np.floor(center_vox - half).astype(int), 0, self.shape)
        hi = np.clip(np.ceil(center_vox + half).astype(int) + 1, 0, self.shape)
        return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))


def rotation_matrix(angles_rad) -> np.ndarray:
    """Rotation about the z, y and x axes (in that order), acting on (z, y, x) vectors."""
    az, ay, ax = angles_rad
    cz, sz, cy, sy, cx, sx = np.cos(az), np.sin(az), np.cos(ay), np.sin(ay), np.cos(ax), np.sin(ax)
    # In (z, y, x) component order: rotation about z mixes y and x, etc.
    rz = np.array([[1, 0, 0], [0, cz, -sz], [0, sz, cz]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rx = np.array([[cx, -sx, 0], [sx, cx, 0], [0, 0, 1]])
    return rz @ ry @ rx


@dataclasses.dataclass(frozen=True)
class Blob:
    """An irregular, lobulated solid: an ellipsoid whose surface radius is modulated by a few
    random cosine waves over the direction sphere. Scaling keeps its shape, which is how a
    tumour shrinks or grows between time points."""

    center_mm: np.ndarray        # (z, y, x)
    radii_mm: np.ndarray         # semi-axes, (3,)
    rotation: np.ndarray         # 3x3
    wave_vectors: np.ndarray     # (k, 3)
    wave_amplitudes: np.ndarray  # (k,)
    wave_phases: np.ndarray      # (k,)

    @classmethod
    def random(cls, rng: np.random.Generator, center_mm, mean_radius_mm: float,
               elongation: float = 0.25, irregularity: float = 0.18, waves: int = 6) -> Blob:
        radii = mean_radius_mm * np.exp(rng.uniform(-elongation, elongation, 3))
        radii *= mean_radius_mm / np.cbrt(np.prod(radii))  # keep the mean radius
        directions = rng.normal(size=(waves, 3))
        directions /= np.linalg.norm(directions, axis=1, keepdims=True)
        frequencies = rng.uniform(0.6, 2.2, waves)
        amplitudes = rng.uniform(0.3, 1.0, waves)
        amplitudes *= irregularity / amplitudes.sum()
        return cls(np.asarray(center_mm, float), radii,
                   rotation_matrix(rng.uniform(-np.pi, np.pi, 3)),
                   directions * frequencies[:, None], amplitudes, rng.uniform(0, 2 * np.pi, waves))

    @property
    def max_radius_mm(self) -> float:
        return float(self.radii_mm.max() * (1 + self.wave_amplitudes.sum()))

    def depth(self, grid: Grid, scale: float = 1.0):
        """Normalised depth on the blob's bounding box: ``(bbox, d)`` with d < 1 inside, 0 at
        the centre, 1 on the surface. ``None`` when the blob is smaller than nothing."""
        if scale <= 0:
            return None
        bbox = grid.bbox_around(self.center_mm, self.max_radius_mm * scale + 2 * max(grid.spacing))
        if any(s.stop <= s.start for s in bbox):
            return None
        local = (grid.coords(bbox) - self.center_mm) @ self.rotation  # into the blob frame
        norm = np.linalg.norm(local, axis=-1) + 1e-9
        direction = local / norm[..., None]
        ellipsoidal = np.linalg.norm(local / self.radii_mm, axis=-1)
        wobble = np.cos(2 * np.pi * direction @ self.wave_vectors.T + self.wave_phases)
        surface = scale * (1.0 + wobble @ self.wave_amplitudes)
        return bbox, ellipsoidal / surface

    def mask(self, grid: Grid, scale: float = 1.0) -> np.ndarray:
        out = np.zeros(grid.shape, bool)
        found = self.depth(grid, scale)
        if found is not None:
            bbox, d = found
            out[bbox] = d < 1.0
        return out


def smooth_noise(rng: np.random.Generator, shape, sigma_vox) -> np.ndarray:
    """Gaussian random field: white noise blurred by ``sigma_vox``, zero mean, unit s.d."""
    field = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma_vox,
                                    mode="wrap")
    field -= field.mean()
    field /= field.std() + 1e-8
    return field


def smooth_path(rng: np.random.Generator, start_mm, end_mm, n_points: int = 64,
                wiggle_mm: float = 6.0) -> np.ndarray:
    """A gently curving path from ``start`` to ``end`` (points in mm, (n, 3))."""
    start, end = np.asarray(start_mm, float), np.asarray(end_mm, float)
    t = np.linspace(0, 1, n_points)[:, None]
    path = start + t * (end - start)
    # Sum of two sine bumps per axis, zero at both ends.
    for harmonic in (1, 2):
        amplitude = rng.normal(0, wiggle_mm / harmonic, 3)
        path += amplitude * np.sin(np.pi * harmonic * t)
    return path


def draw_tubes(grid: Grid, paths: list[np.ndarray], radii_mm: list[float]) -> np.ndarray:
    """Rasterise tubes (paths with a radius) as a soft occupancy map in [0, 1].

    Points are densified to sub-voxel steps, splatted into the grid and blurred; cheaper than
    a distance transform and smooth enough for vessels.
    """
    occupancy = np.zeros(grid.shape, np.float32)
    spacing = np.asarray(grid.spacing)
    half = grid.extent_mm / 2
    by_radius: dict[float, np.ndarray] = {}
    for path, radius in zip(paths, radii_mm):
        steps = np.linalg.norm(np.diff(path, axis=0), axis=1)
        n = max(2, int(steps.sum() / (0.5 * spacing.min())))
        t = np.linspace(0, len(path) - 1, n)
        dense = np.stack([np.interp(t, np.arange(len(path)), path[:, i]) for i in range(3)], 1)
        idx = np.floor((dense + half) / spacing).astype(int)
        keep = np.all((idx >= 0) & (idx < grid.shape), axis=1)
        key = round(float(radius), 1)
        if key not in by_radius:  # not setdefault: that would allocate a volume per path
            by_radius[key] = np.zeros(grid.shape, np.float32)
        layer = by_radius[key]
        layer[tuple(idx[keep].T)] = 1.0
    for radius, layer in by_radius.items():
        sigma = np.maximum(radius / spacing, 0.5)
        blurred = ndimage.gaussian_filter(layer, sigma)
        peak = blurred.max()
        if peak > 0:
            # Normalise so the tube centre line reaches ~1 whatever its radius.
            occupancy = np.maximum(occupancy, np.clip(blurred / (peak * 0.6), 0, 1))
    return occupancy


def random_misalignment(rng: np.random.Generator, max_rotation_deg: float = 2.0,
                        max_shift_mm: float = 3.0, max_scale: float = 0.015) -> np.ndarray:
    """A small random affine (4x4, mm, (z, y, x), about the grid centre): patient
    repositioning between visits."""
    matrix = np.eye(4)
    rotation = rotation_matrix(np.deg2rad(rng.uniform(-max_rotation_deg, max_rotation_deg, 3)))
    scale = np.diag(1 + rng.uniform(-max_scale, max_scale, 3))
    matrix[:3, :3] = rotation @ scale
    matrix[:3, 3] = rng.uniform(-max_shift_mm, max_shift_mm, 3)
    return matrix


def warp(volume: np.ndarray, grid: Grid, transform_mm: np.ndarray, order: int = 1,
         cval: float = 0.0) -> np.ndarray:
    """Resample ``volume`` so that output(p) = volume(transform(p)), p in mm about the
    centre. ``order=0`` for label maps."""
    spacing = np.asarray(grid.spacing)
    centre = grid.extent_mm / 2
    # voxel -> mm: p = (i + 0.5) * s - c ; transform ; mm -> voxel: (q + c) / s - 0.5
    to_mm = np.eye(4)
    to_mm[:3, :3] = np.diag(spacing)
    to_mm[:3, 3] = 0.5 * spacing - centre
    to_vox = np.linalg.inv(to_mm)
    full = to_vox @ transform_mm @ to_mm
    return ndimage.affine_transform(volume, full[:3, :3], full[:3, 3], output_shape=grid.shape,
                                    order=order, mode="constant", cval=cval, prefilter=False)


def bias_field(rng: np.random.Generator, grid: Grid, strength: float = 0.15) -> np.ndarray:
    """Smooth multiplicative intensity inhomogeneity (MRI coil bias): exp of a random
    low-order polynomial, spanning roughly ±``strength``."""
    z, y, x = np.meshgrid(*[np.linspace(-1, 1, n) for n in grid.shape], indexing="ij")
    terms = [z, y, x, y * x, z * y, z * x, y * y, x * x]
    coefficients = rng.normal(0, 1, len(terms))
    poly = sum(c * t for c, t in zip(coefficients, terms))
    poly /= np.abs(poly).max() + 1e-8
    return np.exp(strength * poly).astype(np.float32)


def rician(rng: np.random.Generator, image: np.ndarray, sigma: float) -> np.ndarray:
    """Magnitude-image noise as in MRI: |image + complex Gaussian noise|."""
    real = image + rng.normal(0, sigma, image.shape)
    imag = rng.normal(0, sigma, image.shape)
    return np.sqrt(real ** 2 + imag ** 2).astype(np.float32)
