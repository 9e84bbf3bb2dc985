"""Load a generative model (the bundled default unless told otherwise) and simulate
follow-up images of one case under one or more clinical scenarios.

Every generated image is a `Scan` marked synthetic, with provenance: model hash and name,
scenario, seed, steps, sampler, guidance, device; its grid is the model's grid over the same
stretch of the patient as the input image.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ..core.errors import InputError
from ..core.scan import IMAGE, Scan
from ..core.schema import FamilySchema
from ..families import ModelFamily, family_names, get_family


def default_family() -> str:
    """The family used when none is named: the first registered one with a bundled model."""
    return next((n for n in family_names() if get_family(n).bundled_generator), family_names()[0])


def bundled_model_path(family: str | None = None) -> Path:
    return get_family(family or default_family()).bundled_generator_path()


@dataclasses.dataclass
class WhatIfModel:
    """A loaded model, its card and where it runs."""

    network: Any            # science.generative.model.ControlledDiffusion
    card: dict[str, Any]
    path: Path
    device: str

    @property
    def family(self) -> ModelFamily:
        """The model family (registry entry) the model belongs to."""
        return get_family(self.card["family"])

    @property
    def schema(self) -> FamilySchema:
        return self.family.schema

    @property
    def image_size(self) -> int:
        return int(self.card["config"]["image_size"])

    @property
    def grid(self) -> tuple[int, ...]:
        """The model-input grid shape: ``grid_shape`` of the config, or a square of
        ``image_size`` pixels for 2D models."""
        from ..science.generative.card import grid_shape

        return grid_shape(self.card["config"])

    @property
    def model_hash(self) -> str:
        return self.card["model_hash"]

    def _sampling_defaults(self) -> dict[str, Any]:
        from ..science.generative.checkpoint import sampling_defaults

        return sampling_defaults(self.card["config"])

    @property
    def default_sampler(self) -> str:
        return self._sampling_defaults()["default_sampler"]

    @property
    def default_steps(self) -> int:
        return self._sampling_defaults()["default_steps"]

    @property
    def default_guidance(self) -> float:
        """The classifier-free guidance scale the model runs with (1 = none)."""
        return self._sampling_defaults()["default_guidance"]


_CACHE: dict[tuple, WhatIfModel] = {}


def load_model(path: str | Path | None = None, *, family: str | None = None,
               device: str = "auto", half: bool | None = None) -> WhatIfModel:
    """Load (hash-verified) a model folder; ``None`` = the bundled default of ``family``
    (default: `default_family`).

    ``device``: ``"auto"`` (CUDA when present, else CPU), ``"cpu"``, ``"cuda"``. ``half``:
    float16 on CUDA (default: the config's ``half_precision``); always float32 on CPU.
    """
    import torch

    from ..science.generative.checkpoint import read_card
    from ..science.device import resolve_device

    folder = Path(path) if path is not None else bundled_model_path(family)
    dev = resolve_device(device)
    card = read_card(folder)
    if half is None:
        half = bool(card["config"].get("half_precision", False))
    dtype = torch.float16 if (half and dev.type == "cuda") else torch.float32
    key = (str(folder.resolve()), str(dev), str(dtype), card.get("model_hash"))
    if key not in _CACHE:
        network, card = get_family(card["family"]).load_generator(folder, device=dev,
                                                                  dtype=dtype)
        _CACHE[key] = WhatIfModel(network, card, folder, str(dev))
    return _CACHE[key]


def parse_scenario(text: str, family: ModelFamily | FamilySchema | str | None = None
                   ) -> dict[str, Any]:
    """``"time=T2,pCR=yes,HR=+,HER2=-"`` -> a validated scenario dict of ``family``
    (default: `default_family`)."""
    from ..science.generative.conditioning import normalise_scenario

    schema = get_family(family or default_family()).schema
    values: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        if "=" not in part:
            raise InputError(f"scenario {text!r}", f"{part!r} is not NAME=VALUE")
        name, value = (s.strip() for s in part.split("=", 1))
        values[name] = value
    return normalise_scenario(schema, values, f"scenario {text!r}")


def model_grid(model: WhatIfModel, image: Scan) -> Scan:
    """``image`` validated and resampled onto ``model``'s input grid (the family says what
    fits and how to get there; `InputError` naming the image otherwise)."""
    return model.family.to_model_grid(image, model.grid)


def simulate(model: WhatIfModel, image: Scan, scenarios: Sequence[Mapping[str, Any]], *,
             seed: int = 0, steps: int | None = None, sampler: str | None = None,
             guidance_scale: float | None = None,
             progress: Callable[[int, int], None] | None = None,
             context: Mapping[str, Scan] | None = None,
             baseline_mask: Scan | None = None) -> list[Scan]:
    """Generate one follow-up image per scenario (one batch; shared initial noise).
    ``steps``, ``sampler``, ``guidance_scale``: ``None`` = the model's defaults.
    ``context``: extra inputs the family's model needs besides the image (by name);
    ``baseline_mask``: the image's tumour mask where the family's generator uses it (lung:
    the crop is generated around it; the family finds one otherwise, see
    `ModelFamily.generation_inputs`)."""
    from ..science.generative.conditioning import normalise_scenario

    schema = model.schema
    scenarios = [normalise_scenario(schema, s, f"scenario {k + 1}")
                 for k, s in enumerate(scenarios)]
    sampler = sampler or model.default_sampler
    steps = int(steps or model.default_steps)
    guidance_scale = float(model.default_guidance if guidance_scale is None else guidance_scale)
    grid = model_grid(model, image)
    context, made = model.family.generation_inputs(model.network, grid, context,
                                                   baseline_mask=baseline_mask)
    started = time.perf_counter()
    out = model.family.generate(model.network, grid, scenarios, seed=seed, steps=steps,
                                sampler=sampler, guidance_scale=guidance_scale,
                                progress=progress, context=context)
    seconds = time.perf_counter() - started
    results = []
    for scenario, array in zip(scenarios, out):
        scan = grid.derive(array.astype(np.float32), step="generate",
                           model=model.card.get("title", model.path.name),
                           model_hash=model.model_hash, scenario=scenario,
                           scenario_text=_scenario_text(schema, scenario),
                           seed=int(seed), steps=steps, sampler=sampler,
                           guidance_scale=float(guidance_scale), device=model.device,
                           seconds_for_batch=round(seconds, 3),
                           generated_at=datetime.datetime.now(datetime.timezone.utc)
                           .isoformat(timespec="seconds"), **copy.deepcopy(made))
        provenance = {**scan.provenance, "synthetic": True,
                      "generator": "nacsim generative model",
                      "label": "SYNTHETIC - generated counterfactual, not a measurement",
                      "scenario": scenario, "model_hash": model.model_hash, "seed": int(seed),
                      "steps": steps, "sampler": sampler, "guidance_scale": guidance_scale,
                      **copy.deepcopy(made),   # e.g. the lung crop's composition
                      "generated_at": scan.provenance.get("history", [{}])[-1].get(
                          "generated_at"),
                      # its own time point and image kind, not the input's (T0, "post")
                      **_generated_record(model.family, grid, scenario)}
        results.append(Scan(array=scan.array, affine=scan.affine, kind=IMAGE,
                            provenance=provenance))
    return results


def _generated_record(family: ModelFamily, grid: Scan, scenario: Mapping[str, Any]
                      ) -> dict[str, Any]:
    """What a generated image is: the follow-up time point it shows, the model-input kind
    (e.g. the MIP channel), and where its input came from (time point and channel)."""
    from ..science.generative.conditioning import TIME_FACTOR

    inherited = {k: grid.provenance[k] for k in ("timepoint", "channel")
                 if k in grid.provenance}
    return {"role": "generated follow-up", "timepoint": scenario[TIME_FACTOR],
            "channel": family.model_input.channel,
            "input": {"timepoint": inherited.get("timepoint", family.schema.baseline),
                      **({"channel": inherited["channel"]} if "channel" in inherited else {})}}


def _scenario_text(schema: FamilySchema, scenario: Mapping[str, Any]) -> str:
    """``"T2: pCR, HR+, HER2−"``: the target time point, then the clinical values."""
    from ..science.generative.conditioning import TIME_FACTOR

    rest = {k: v for k, v in scenario.items() if k != TIME_FACTOR}
    return f"{scenario[TIME_FACTOR]}: {schema.describe(rest)}"


def sample_case(index: int = 0, *, family: str | None = None, cohort_seed: int = 0,
                size: int | None = None) -> dict[str, Any]:
    """A synthetic sample patient of ``family``: its clinical values and the model inputs
    of every time point (``inputs``: time point -> ``{"image", "tumour"}``)."""
    return get_family(family or default_family()).sample_case(index, cohort_seed=cohort_seed,
                                                               size=size)
