"""The lung family: ImmunoDiff on CT crops around the tumour (seed paper 004).

Model input: the 3D CT crop in Hounsfield units (16 x 96 x 96 voxels, `preprocess.lung`),
cut around the baseline tumour; the post-treatment CT is registered to the pre-treatment one
and cut with the same box. Tumour size: volume in mL and the RECIST longest diameter.
Comparison by default: PD-L1 TPS below 1 % against 50 % or more.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from ..core.errors import InputError
from ..core.scan import Scan
from ..core.schema import LUNG
from .base import Comparison, ModelFamily, ModelInput, SegmentationSpec, Visits, WindowPreset

CT_CROP_INPUT = ModelInput(
    ndim=3,
    what="a 3D lung CT crop in Hounsfield units (16 x 96 x 96 voxels around the tumour)",
    how_to_make="cut it from the CT and its tumour mask with `nacsim crop --ct CT "
                "--tumour MASK` (or, in the workspace, 'Open a cohort patient…')",
    value_range=None,
    display_range=(-1350.0, 150.0),   # the lung window: level -600 HU, width 1500 HU
    channel="CT",
    short_name="CT crop",
    value_unit="HU",
    resampled=False,
)

PD_L1_LOW, PD_L1_HIGH = 0.0, 50.0   # the clinical strata "< 1 %" and ">= 50 %"
TUMOUR = "tumour"   # the baseline tumour mask's name (schema mask; a context entry)


class LungFamily(ModelFamily):
    name = LUNG.name
    schema = LUNG
    model_input = CT_CROP_INPUT
    segmenter_input = CT_CROP_INPUT
    segmentation = SegmentationSpec(dataset_id=502, dataset_name="NacsimLungCrop",
                                    configuration="3d_fullres")
    size_bins = (0.0, 2.0, 8.0, float("inf"))       # mL
    bundled_generator = "lung_immunodiff"   # ImmunoDiff lung_tiny (docs/lung-model.md)
    # a response is drawn per sample (P(response) from the heads): several samples show a
    # share, one would show a coin toss as if certain (docs/lung-model.md, speed)
    default_samples = 8
    bundled_segmenter = LUNG.name
    sample_channel = "ct"
    orientation = ("A", "P", "R", "L")   # axial slices in LPS storage order
    training_data = ("synthetic phantom patients (nacsim phantoms lung), preprocessed "
                     "with lung_crops")
    normalisation = "CT crop in Hounsfield units, 16 x 96 x 96 voxels around the tumour"
    # ImmunoDiff's anatomy control: lobes (labels 1-5: RUL, RML, RLL, LUL, LLL) and vessels
    context_inputs = ("lobes", "vessels")
    context_help = ("cut them with the CT: `nacsim crop --ct CT --tumour MASK --mask LOBES "
                    "LOBES_CROP --mask VESSELS VESSELS_CROP` (lobe labels 1-5 = RUL, RML, "
                    "RLL, LUL, LLL and a "
                    "vessel mask, e.g. from TotalSegmentator or lungmask), or open a sample "
                    "or cohort patient, whose crops have them")

    def load_generator(self, folder, *, device, dtype):
        """ImmunoDiff (`science.generative.immunodiff`), hashes verified."""
        from ..science.generative.immunodiff.checkpoint import load_checkpoint

        return load_checkpoint(folder, device=device, dtype=dtype)

    def model_context(self, entry: Mapping[str, Scan]) -> dict[str, Scan]:
        """The lobe and vessel crops, and the baseline tumour mask cut with the crop when the
        visit has one: the generated follow-up is kept around it (`generation_inputs`)."""
        out = super().model_context(entry)
        if entry.get(TUMOUR) is not None:
            out[TUMOUR] = entry[TUMOUR]
        return out

    def generation_inputs(self, network, image: Scan,
                          context: Optional[Mapping[str, Scan]] = None, *,
                          baseline_mask: Optional[Scan] = None
                          ) -> tuple[dict[str, Scan], dict[str, Any]]:
        """With a model that composes its crop around the baseline tumour (its config's
        ``composition``, `science.generative.immunodiff.compose`): the context with the
        baseline tumour mask, which is ``baseline_mask`` (e.g. the what-if session's
        segmentation), else the context's ``tumour`` (cut with the crop), else the bundled
        segmenter's, as the workspace and ``nacsim predict`` measure the baseline; and the
        composition's record for the provenance."""
        from ..science.generative.immunodiff.compose import Composition

        anatomy = self.require_context(context, image.shape)   # the anatomy first: its message
        context = {**dict(context or {}), **anatomy}
        if Composition.from_config(network.config) is None:
            return context, {}
        source = "given with the crop"
        if baseline_mask is not None:
            context[TUMOUR] = baseline_mask
            source = "the baseline segmentation"
        elif context.get(TUMOUR) is None:
            segmenter = self.load_segmenter(device=str(next(network.parameters()).device))
            context[TUMOUR] = segmenter.segment(self.to_segmenter(image))
            source = f"segmented by the bundled {self.name} segmenter (none was given)"
        region = self.composition_region(network, image, context, source)
        return context, {"composition": region.record()}

    def composition_region(self, network, image: Scan, context: Optional[Mapping[str, Scan]],
                           source: str = "given with the crop"):
        """The region the generated crop is kept in (`compose.TumourRegion`), from the
        context's baseline tumour mask; None when the model does not compose. `InputError`
        when the mask is missing or not on the crop's grid."""
        from ..core.scan import require_same_geometry
        from ..science.generative.immunodiff.compose import Composition, tumour_region
        from ..science.generative.immunodiff.reuse import content_key, shared

        composition = Composition.from_config(network.config)
        if composition is None:
            return None
        mask = (context or {}).get(TUMOUR)
        grid = network.config["grid_shape"]
        if mask is None:
            return tumour_region(None, image.spacing, composition, grid=grid)   # one line
        require_same_geometry(image, mask, "the baseline tumour mask must lie on the "
                                           "crop's grid")
        # the same region for every sample of a comparison (and for its record): once
        key = content_key("region", mask.array, image.spacing, composition, grid)
        region = shared(network).get(key, lambda: tumour_region(
            mask.array, image.spacing, composition, grid=grid))
        return dataclasses.replace(region, mask_source=source)

    def generate(self, network, image: Scan, scenarios, *, seed: int, steps: int,
                 sampler: str, guidance_scale: float, progress: Any = None,
                 context: Optional[Mapping[str, Scan]] = None) -> np.ndarray:
        """Post-treatment crops in HU from the pre-treatment crop, its lobe and vessel masks
        (``context``) and each scenario's clinical values; composed around the baseline
        tumour (the context's ``tumour``) when the model's config says so. What does not
        depend on the seed is computed once for the network's calls (`immunodiff.reuse`):
        a comparison's samples share it."""
        from ..science.generative.immunodiff.reuse import shared
        from ..science.generative.immunodiff.sampling import generate

        anatomy = self.require_context(context, image.shape)
        region = self.composition_region(network, image, context)
        return generate(network, np.asarray(image.array), np.asarray(anatomy["lobes"].array),
                        np.asarray(anatomy["vessels"].array), scenarios, seed=seed,
                        steps=steps, sampler=sampler, guidance_scale=guidance_scale,
                        progress=progress, region=region, reuse=shared(network))

    @property
    def window_presets(self) -> tuple[WindowPreset, ...]:
        """The radiologists' lung and mediastinal windows (`preprocess.lung.HU_WINDOWS`)."""
        from ..science.preprocess.lung import HU_WINDOWS

        return tuple(WindowPreset(name, level, width)
                     for name, (level, width) in HU_WINDOWS.items())

    def make_phantom(self, cohort_seed: int, index: int) -> Any:
        from ..science.phantoms import lung

        return lung.make_patient(int(cohort_seed), int(index))

    def model_inputs(self, visits: Visits, *, size: Optional[int] = None
                     ) -> dict[str, dict[str, Scan]]:
        from ..science.preprocess.pipeline import lung_crops

        return {tp: {("image" if key == "ct" else key): scan for key, scan in entry.items()}
                for tp, entry in lung_crops(visits).items()}

    def resample(self, scan: Scan, grid: Sequence[int]) -> Scan:
        if tuple(scan.shape) != tuple(grid):
            raise InputError(scan.name, f"has shape {scan.shape}, the model's crop is "
                                        f"{tuple(grid)}; {self.model_input.how_to_make}")
        return scan

    def counterfactual(self, clinical):
        """The other PD-L1 stratum (all else fixed): the phantom's response probability
        depends on it, so its rendering is the counterfactual ground truth."""
        high = float(clinical["PD_L1"]) >= PD_L1_HIGH
        return {**clinical, "PD_L1": PD_L1_LOW if high else PD_L1_HIGH}

    def default_comparison(self) -> Optional[Comparison]:
        return self.comparison("PD_L1", (PD_L1_LOW, PD_L1_HIGH))

    def predictions(self, generator: Any, baseline: Scan, clinical: Mapping[str, Any],
                    context: Optional[Mapping[str, Scan]] = None, *,
                    baseline_mask: Optional[Scan] = None) -> dict[str, dict[str, Any]]:
        """ImmunoDiff's heads (response probability, survival risk relative to the training
        cohort) from the frozen denoiser's features, the clinical values of ``clinical`` and
        the baseline tumour's measured longest diameter, when heads are bundled next to the
        model (``<model>/prediction_heads``, `science.prediction`); {} otherwise or without
        the anatomy masks. The response probability is what each sample's response is
        drawn from (`science.generative.outcome`)."""
        from ..science.measure import measure_tumour
        from ..science.prediction.predict import has_heads, predict

        if generator is None or not has_heads(generator.path) or not context:
            return {}
        context = self.require_context(context, baseline.shape)
        diameter = None if baseline_mask is None else measure_tumour(baseline_mask).diameter
        return predict(generator.network, generator.path, generator.model_hash,
                       np.asarray(baseline.array), np.asarray(context["lobes"].array),
                       np.asarray(context["vessels"].array), clinical,
                       baseline_diameter_mm=diameter)
