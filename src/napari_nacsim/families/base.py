"""What a model family provides to the rest of nacsim: the plug-in interface.

A *model family* (breast NAC, lung ImmunoDiff, or one of your own) is one object that
answers every question whose answer differs between families: its clinical schema, what
its model takes as input and how a user's image gets there, how a patient's visits become
model inputs, its phantom patients and their counterfactual ground truth, its bundled
generative model and segmenter, how tumours are measured and shown, and which scenarios
are compared by default. The engine, the CLI, the widgets and the training entrypoints
ask the family; none of them tests a family's name.

Subclass `ModelFamily`, fill in the class attributes and the methods that raise
`NotImplementedError` (or keep the defaults), and register an instance with
`napari_nacsim.families.register_family`. Heavy imports (torch, ANTs, nnU-Net) happen
inside the methods, so that listing the families stays cheap and the core layer can read
their schemas without importing torch.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from ..core.errors import InputError
from ..core.model_input import ModelInput, SegmentationSpec
from ..core.scan import IMAGE, Scan, check_image_values, require_ndim
from ..core.schema import BINARY, CATEGORICAL, FamilySchema, Variable

MODELS_DIR = Path(__file__).resolve().parents[1] / "models"

Visits = Mapping[str, Mapping[str, Scan]]  # time point -> channel or mask name -> scan


@dataclasses.dataclass(frozen=True)
class WindowPreset:
    """A named display window (window/level), as radiologists pick them: ``level`` is the
    centre, ``width`` the range shown from black to white."""

    name: str
    level: float
    width: float

    @property
    def limits(self) -> tuple[float, float]:
        return (self.level - self.width / 2, self.level + self.width / 2)

    def describe(self) -> str:
        """``"lung (L -600, W 1500)"``."""
        return f"{self.name} (L {self.level:g}, W {self.width:g})"


@dataclasses.dataclass(frozen=True)
class Comparison:
    """The arms of a comparison: one variable at two or more values."""

    variable: Variable
    values: tuple[Any, ...]

    def labels(self) -> list[str]:
        return [self.variable.describe(v) for v in self.values]


class ModelFamily:
    """Base class of the model families (see the module docstring)."""

    name: str = ""
    schema: FamilySchema
    model_input: ModelInput
    segmenter_input: ModelInput
    segmentation: Optional[SegmentationSpec] = None
    bundled_generator: Optional[str] = None   # folder under models/ (None: none yet)
    bundled_segmenter: Optional[str] = None   # folder under models/segmentation/
    sample_channel: str = ""                  # the channel shown when a sample opens
    orientation: tuple[str, str, str, str] = ("A", "P", "R", "L")  # top, bottom, left, right
    training_data: str = ""                   # model cards: what the phantom data are
    normalisation: str = ""                   # model cards: how images become model inputs
    size_bins: tuple[float, ...] = (0.0, float("inf"))  # evaluation reports: tumour-size bins
    # Extra inputs the generator needs besides the image (by name, e.g. anatomy masks), each
    # an entry of `model_inputs(visits)[time point]` on the model grid; and how a user gets
    # them (shown when one is missing).
    context_inputs: tuple[str, ...] = ()
    context_help: str = ""
    # Samples per scenario a what-if run makes unless told otherwise: more than one where
    # the outcome is stochastic (lung: a share of responding samples), one where a single
    # image says what the scenario does (breast: pCR is an input)
    default_samples: int = 1

    # --- schema ------------------------------------------------------------------------------
    @property
    def title(self) -> str:
        return self.schema.title

    @property
    def followup_times(self) -> list[str]:
        return [t for t in self.schema.timepoint_names if t != self.schema.baseline]

    # --- models ------------------------------------------------------------------------------
    def bundled_generator_path(self) -> Path:
        if self.bundled_generator is None:
            raise InputError("family", f"{self.name!r} has no bundled generative model yet; "
                                       "pass a model folder")
        return MODELS_DIR / self.bundled_generator

    def bundled_segmenter_path(self) -> Path:
        if self.bundled_segmenter is None:
            raise InputError("family", f"{self.name!r} has no bundled tumour segmenter")
        return MODELS_DIR / "segmentation" / self.bundled_segmenter

    def load_generator(self, folder: Path, *, device: Any, dtype: Any) -> tuple[Any, dict]:
        """The generative network of a model folder and its (hash-verified) card. Default:
        the prompt-tuned ControlNet of `science.generative` (the breast NAC design)."""
        from ..science.generative.checkpoint import load_checkpoint

        return load_checkpoint(folder, device=device, dtype=dtype)

    def generate(self, network: Any, image: Scan, scenarios: Sequence[Mapping[str, Any]], *,
                 seed: int, steps: int, sampler: str, guidance_scale: float,
                 progress: Any = None, context: Optional[Mapping[str, Scan]] = None
                 ) -> np.ndarray:
        """One generated image per scenario from ``image`` on the model grid: an array
        ``(len(scenarios), *grid)``. ``context``: extra inputs a family's model needs
        (e.g. anatomy masks), by name. Default: the ControlNet sampler of
        `science.generative.sampling`, the image as the control."""
        import torch

        from ..science.generative.sampling import generate

        param = next(network.unet.parameters())
        control = torch.from_numpy(np.ascontiguousarray(image.array, np.float32))[None, None]
        out = generate(network, control.to(param.device, param.dtype), scenarios, seed=seed,
                       steps=steps, sampler=sampler, guidance_scale=guidance_scale,
                       progress=progress)
        return out.float().cpu().numpy()[:, 0]

    def generation_inputs(self, network: Any, image: Scan,
                          context: Optional[Mapping[str, Scan]] = None, *,
                          baseline_mask: Optional[Scan] = None
                          ) -> tuple[dict[str, Scan], dict[str, Any]]:
        """What `generate` is given besides the scenarios for ``image`` (on the model grid):
        ``context`` completed where the family can (e.g. with ``baseline_mask``, the
        baseline's tumour mask, or a mask its generator needs that the caller did not give),
        and what each generated image's provenance records about how it was made beyond the
        sampler ({}: nothing). Default: the context as given."""
        return dict(context or {}), {}

    def load_segmenter(self, path: str | Path | None = None, *, device: str = "auto",
                       trust_pickle: bool = False) -> Any:
        """The tumour segmenter (an object with ``segment(scan) -> labels scan``)."""
        from ..science.segmentation import load_segmenter

        # the bundled model is loaded once per process; a given folder each time asked
        return load_segmenter(self.bundled_segmenter_path() if path is None else path,
                              family=self.name, input_spec=self.segmenter_input,
                              bundled=path is None, device=device, trust_pickle=trust_pickle)

    # --- images ------------------------------------------------------------------------------
    def check_model_input(self, image: Scan) -> None:
        """Raise `InputError` (one line naming the image) when ``image`` cannot be the
        family's model input."""
        spec = self.model_input
        require_ndim(image, spec.ndim, f"{image.name} (the {self.name} model takes "
                                       f"{spec.what}; {spec.how_to_make})")
        if image.kind != IMAGE:
            raise InputError(image.name, "is a label map; the model needs the pre-treatment "
                                         "image")
        check_image_values(image)
        if spec.value_range is not None:
            lo, hi = spec.value_range
            arr = image.array
            a_min, a_max = float(np.min(arr)), float(np.max(arr))
            if a_min < lo - 1e-3 or a_max > hi + 1e-3:
                raise InputError(image.name, f"values {a_min:g}..{a_max:g} are outside "
                                             f"[{lo:g}, {hi:g}]; {spec.how_to_make}")

    def to_model_grid(self, image: Scan, grid: Sequence[int]) -> Scan:
        """A user's pre-treatment image on the model grid (validated; the same stretch of
        the patient, resampled when its grid differs)."""
        self.check_model_input(image)
        if tuple(image.shape) == tuple(grid):
            return image
        return self.resample(image, grid)

    def resample(self, scan: Scan, grid: Sequence[int]) -> Scan:
        """``scan`` (image or labels) resampled onto ``grid`` (model-input shape); images are
        clipped to the model's value range."""
        raise NotImplementedError  # each family: the interface has no generic resampling

    def model_inputs(self, visits: Visits, *, size: Optional[int] = None
                     ) -> dict[str, dict[str, Scan]]:
        """A patient's visits -> time point -> ``{"image": model input, "tumour": mask}``
        (the mask where the visit has one), follow-ups aligned to the baseline."""
        raise NotImplementedError  # each family: its own preprocessing

    def model_context(self, entry: Mapping[str, Scan]) -> dict[str, Scan]:
        """The generator's extra inputs (`context_inputs`) from one visit's model inputs
        (an entry of `model_inputs`); those the visit lacks are left out (the generator
        names them, see `require_context`)."""
        return {name: entry[name] for name in self.context_inputs if name in entry}

    def require_context(self, context: Optional[Mapping[str, Scan]],
                        grid: Sequence[int]) -> dict[str, Scan]:
        """``context`` checked: every `context_inputs` entry present, a label map on the
        model grid (resampled with `resample` when its grid differs); `InputError` naming
        what is missing and how to get it otherwise."""
        context = dict(context or {})
        missing = [n for n in self.context_inputs if context.get(n) is None]
        if missing:
            raise InputError(f"{self.name} model input",
                             f"the {' and '.join(missing)} mask{'s' if len(missing) > 1 else ''}"
                             f" of the pre-treatment image {'are' if len(missing) > 1 else 'is'}"
                             f" missing; {self.context_help or 'provide them'}")
        out = {}
        for name in self.context_inputs:
            scan = context[name]
            if tuple(scan.shape) != tuple(grid):
                scan = self.resample(scan, grid)
            out[name] = scan
        return out

    def to_segmenter(self, generated: Scan) -> Scan:
        """A generated (or model-input) image as the segmenter takes it."""
        return generated

    # --- patients ----------------------------------------------------------------------------
    def make_phantom(self, cohort_seed: int, index: int) -> Any:
        """Synthetic patient ``index`` of the phantom cohort ``cohort_seed`` (a
        `science.phantoms.PhantomPatient`)."""
        raise NotImplementedError  # each family: its own phantoms

    def counterfactual(self, clinical: Mapping[str, Any]) -> dict[str, Any]:
        """The scenario a patient did *not* have, whose phantom rendering is the
        counterfactual ground truth (default: the first outcome variable flipped)."""
        outcome = next((v for v in self.schema.condition_variables if v.outcome), None)
        if outcome is None or outcome.kind != BINARY:
            raise InputError(f"{self.name} family", "has no yes/no outcome to flip")
        return {**clinical, outcome.name: not clinical[outcome.name]}

    def counterfactual_truth(self, phantom: Any, clinical: Mapping[str, Any], *,
                             size: Optional[int] = None) -> dict[str, dict[str, Scan]]:
        """The model inputs of ``phantom`` rendered under ``clinical`` (same latent draws):
        what a perfect model would generate for that scenario."""
        return self.model_inputs(phantom.render(dict(clinical)).visits(), size=size)

    def sample_case(self, index: int = 0, *, cohort_seed: int = 0,
                    size: Optional[int] = None) -> dict[str, Any]:
        """A phantom patient as a case: ``{"patient", "clinical", "inputs", "truth"}`` with
        ``inputs`` = time point -> ``{"image", "tumour"}`` (see `model_inputs`)."""
        phantom = self.make_phantom(cohort_seed, index)
        rendering = phantom.render()
        return {"patient": phantom.id, "clinical": dict(rendering.clinical),
                "inputs": self.model_inputs(rendering.visits(), size=size),
                "truth": rendering.truth}

    # --- scenarios ---------------------------------------------------------------------------
    def default_comparison(self) -> Optional[Comparison]:
        """What the workspace and the demo compare by default: the first yes/no outcome
        the model is conditioned on, both states."""
        var = next((v for v in self.schema.condition_variables
                    if v.outcome and v.kind == BINARY), None)
        return Comparison(var, (True, False)) if var is not None else None

    def comparison(self, variable: str, values: Optional[Sequence[Any]] = None) -> Comparison:
        """Arms over ``variable`` at ``values`` (validated); without values, every state of a
        yes/no or categorical variable."""
        known = {v.name: v for v in self.schema.condition_variables if v.derive is None}
        var = known.get(variable)
        if var is None:
            raise InputError(f"compare '{variable}'", "is not a variable the model is "
                                                      f"conditioned on ({', '.join(known)})")
        if values is None or len(values) == 0:
            if var.kind == BINARY:
                values = (True, False)
            elif var.kind == CATEGORICAL:
                values = var.categories
            else:
                raise InputError(f"compare '{variable}'", "is a number: give the values to "
                                                          "compare (e.g. 0 and 50)")
        parsed = tuple(var.parse(v, "compare") for v in values)
        if len(parsed) < 2:
            raise InputError(f"compare '{variable}'", "needs at least two values")
        if len(set(map(repr, parsed))) != len(parsed):
            raise InputError(f"compare '{variable}'", "values repeat: "
                                                      f"{', '.join(map(str, values))}")
        return Comparison(var, parsed)

    # --- predictions -------------------------------------------------------------------------
    def predictions(self, generator: Any, baseline: Scan, clinical: Mapping[str, Any],
                    context: Optional[Mapping[str, Scan]] = None, *,
                    baseline_mask: Optional[Scan] = None) -> dict[str, dict[str, Any]]:
        """Model predictions per scenario beside the images (e.g. a response probability):
        name -> ``{"label", "value", "unit", "meaning"}``, plus ``"outcome": VARIABLE`` on a
        prediction that is the probability of a yes/no outcome the generator can be given
        (`outcome_probability`); ``context``: the family's extra model inputs on the
        baseline's grid (see `context_inputs`); ``baseline_mask``: the baseline's tumour mask
        (its measured size). None by default."""
        return {}

    @staticmethod
    def outcome_probability(variable: str, predictions: Mapping[str, Mapping[str, Any]]
                            ) -> Optional[float]:
        """The predicted probability of the yes/no outcome ``variable`` among
        ``predictions`` (the one marked ``"outcome": variable``), or None."""
        for prediction in predictions.values():
            if prediction.get("outcome") == variable:
                return float(prediction["value"])
        return None

    # --- display -----------------------------------------------------------------------------
    @property
    def window_presets(self) -> tuple[WindowPreset, ...]:
        """The display windows the viewer offers by name, the first one the default. Default:
        one, the model input's display range."""
        lo, hi = self.model_input.display_range
        return (WindowPreset(self.model_input.short_name, (lo + hi) / 2, hi - lo),)

    def body_mask(self, image: Scan) -> Optional[np.ndarray]:
        """Where the patient is in a model-input image (a boolean array of its shape), so
        that maps such as the sampling SD are shown on the body only; None = everywhere
        (the default: e.g. a CT crop inside the thorax)."""
        return None

    def display_slice(self, mask: Optional[Scan]) -> Optional[int]:
        """For 3D inputs: the slice to show (the one with the largest tumour area in
        ``mask``, else the middle). None for 2D."""
        if self.model_input.ndim != 3:
            return None
        if mask is None or not np.any(mask.array):
            return None if mask is None else mask.shape[0] // 2
        areas = np.count_nonzero(np.asarray(mask.array).reshape(mask.shape[0], -1), axis=1)
        return int(np.argmax(areas))

    def figure_plane(self, scan: Scan, index: Optional[int]) -> tuple[np.ndarray, tuple]:
        """The 2D array drawn for ``scan`` in the report figure and its (row, column)
        spacing: the image itself (2D) or slice ``index`` (3D)."""
        if scan.ndim == 2:
            return np.asarray(scan.array), tuple(scan.spacing)
        z = scan.shape[0] // 2 if index is None else int(index)
        return np.asarray(scan.array[z]), tuple(scan.spacing[1:])

    def __repr__(self) -> str:
        return f"<model family {self.name!r}: {self.title}>"

