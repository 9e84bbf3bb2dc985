"""A third model family defined entirely in the tests: the proof that a family is a plug-in.

"spheroid": a tumour spheroid in a dish, imaged in 2D at baseline and after four weeks of a
drug. Its schema has a continuous variable (the dose) and a categorical one (the drug);
its phantom shrinks a bright disc by an amount the dose and the drug fix; its segmenter is
a threshold. Nothing under ``src/`` knows about it: it is registered with
`napari_nacsim.families.register_family` and used through the same engine, CLI, results
folder, cohort review and workspace as breast.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from napari_nacsim.core.scan import IMAGE, LABELS, Scan, affine_from_spacing
from napari_nacsim.core.schema import CATEGORICAL, CONTINUOUS, FamilySchema, TimePoint, Variable
from napari_nacsim.families import (Comparison, ModelFamily, ModelInput, register_family,
                                    unregister_family)

NAME = "spheroid"
GRID = 24          # pixels per side of the phantom images (and of the model)
SPACING = 0.5      # mm

SCHEMA = FamilySchema(
    name=NAME, version="1", title="Tumour spheroids under a drug (2D microscopy)",
    timepoints=(TimePoint("day0", "before the drug", 0.0),
                TimePoint("week4", "after four weeks", 4.0)),
    channels=("brightfield",), masks=("tumour",),
    variables=(
        Variable("dose", "Dose", CONTINUOUS, "mg", plausible=(0, 100), normal=(10, 60)),
        Variable("drug", "Drug", CATEGORICAL, categories=("alpha", "beta", "gamma")),
    ),
)
DRUG_EFFECT = {"alpha": 0.2, "beta": 0.5, "gamma": 0.8}
INPUT = ModelInput(ndim=2, what="a 2D spheroid image in [0, 1]",
                   how_to_make="normalise the image to [0, 1]", value_range=(0.0, 1.0),
                   display_range=(0.0, 1.0), channel="BF", short_name="image")


def shrink(clinical: Mapping[str, Any]) -> float:
    """The phantom's truth: the fraction of the radius kept after four weeks."""
    return 1.0 - 0.6 * DRUG_EFFECT[clinical["drug"]] * float(clinical["dose"]) / 100.0


def disc(radius_px: float, centre=(GRID / 2, GRID / 2)) -> np.ndarray:
    yy, xx = np.mgrid[:GRID, :GRID]
    return ((yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius_px ** 2)


def scan(array: np.ndarray, kind: str = IMAGE) -> Scan:
    return Scan(array=array.astype(np.float32 if kind == IMAGE else np.uint8),
                affine=affine_from_spacing((SPACING, SPACING)), kind=kind,
                provenance={"synthetic": True, "generator": "spheroid phantom"})


@dataclasses.dataclass
class SpheroidPhantom:
    cohort_seed: int
    index: int

    def __post_init__(self):
        rng = np.random.default_rng([self.cohort_seed, self.index])
        self.id = f"SP{self.index + 1:04d}"
        self.family = SCHEMA
        self.radius = float(rng.uniform(5.0, 8.0))
        self.noise = rng.normal(0.0, 0.02, size=(2, GRID, GRID))
        self.clinical = {"dose": float(rng.choice([10.0, 40.0, 80.0])),
                         "drug": str(rng.choice(SCHEMA.variable("drug").categories))}

    def render(self, scenario: Optional[Mapping[str, Any]] = None):
        from napari_nacsim.science.phantoms import Rendering

        clinical = SCHEMA.validate_clinical({**self.clinical, **(scenario or {})})
        radii = {"day0": self.radius, "week4": self.radius * shrink(clinical)}
        scans, masks = {}, {}
        for k, (tp, radius) in enumerate(radii.items()):
            mask = disc(radius)
            image = np.clip(0.15 + 0.7 * mask + self.noise[k], 0.0, 1.0)
            scans[tp] = {"brightfield": scan(image)}
            masks[tp] = {"tumour": scan(mask, LABELS)}
        truth = {"radius_px": radii}
        return Rendering(self.id, SCHEMA, clinical, scans, masks, truth)


class ThresholdSegmenter:
    """The trivial segmenter: bright pixels are tumour."""

    name = "threshold 0.5"

    def segment(self, image: Scan) -> Scan:
        return image.derive((np.asarray(image.array) > 0.5).astype(np.uint8), kind=LABELS,
                            step="segment_tumour", model=self.name)

    def describe(self) -> dict:
        return {"name": self.name}


class SpheroidFamily(ModelFamily):
    name = NAME
    schema = SCHEMA
    model_input = INPUT
    segmenter_input = INPUT
    sample_channel = "brightfield"
    training_data = "spheroid phantoms (tests/third_family.py)"
    normalisation = "brightfield in [0, 1]"

    def make_phantom(self, cohort_seed: int, index: int) -> SpheroidPhantom:
        return SpheroidPhantom(int(cohort_seed), int(index))

    def model_inputs(self, visits, *, size=None):
        out = {}
        for tp, visit in visits.items():
            entry = {"image": visit["brightfield"]}
            if "tumour" in visit:
                entry["tumour"] = visit["tumour"]
            out[tp] = {k: self.resample(v, (size, size)) if size else v
                       for k, v in entry.items()}
        return out

    def resample(self, image: Scan, grid: Sequence[int]) -> Scan:
        from skimage.transform import resize

        if tuple(image.shape) == tuple(grid):
            return image
        labels = image.kind == LABELS
        array = resize(image.array, tuple(grid), order=0 if labels else 1,
                       preserve_range=True, anti_aliasing=not labels)
        zoom = image.shape[0] / grid[0]
        spacing = [s * zoom for s in image.spacing]
        return Scan(array=array.astype(image.array.dtype), kind=image.kind,
                    affine=affine_from_spacing(spacing), provenance=dict(image.provenance))

    def load_segmenter(self, path=None, *, device="auto", trust_pickle=False):
        return ThresholdSegmenter()

    def counterfactual(self, clinical):
        categories = SCHEMA.variable("drug").categories
        other = categories[(categories.index(clinical["drug"]) + 1) % len(categories)]
        return {**clinical, "drug": other}

    def default_comparison(self) -> Comparison:
        return self.comparison("dose", (10, 90))

    def predictions(self, generator, baseline, clinical, context=None, *, baseline_mask=None):
        p = 1.0 / (1.0 + math.exp(-(float(clinical["dose"]) - 50.0) / 10.0))
        return {"response_probability": {"label": "P(response)", "value": round(p, 4),
                                         "unit": "", "meaning": "a toy logistic dose response"}}


FAMILY = SpheroidFamily()


def register() -> SpheroidFamily:
    return register_family(FAMILY, replace=True)


def unregister() -> None:
    unregister_family(NAME)


def micro_config() -> dict:
    """A tiny generative configuration of the real code path, for this family."""
    from generative_helpers import micro_config as breast_micro

    return breast_micro(name="spheroid_micro", family=NAME, image_size=GRID,
                        default_steps=2, default_sampler="ddim", default_guidance=1.0)
