"""Load a generative model (the bundled default unless told otherwise) and simulate
follow-up images of one case under one or more clinical scenarios.

Every generated image is a `Scan` marked synthetic, with provenance: model hash and name,
scenario, seed, steps, sampler, guidance, device; its grid is the model's grid over the same
stretch of the patient as the input image.
"""

from __future__ import annotations

import dataclasses
import datetime
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ..core.errors import InputError
from ..core.scan import IMAGE, Scan, check_image_values, require_ndim
from ..core.schema import FamilySchema, family_schema

MODELS_DIR = Path(__file__).resolve().parents[1] / "models"
BUNDLED_MODELS = {"breast": "breast_nac"}


def bundled_model_path(family: str = "breast") -> Path:
    if family not in BUNDLED_MODELS:
        raise InputError("family", f"no bundled model for {family!r} (bundled: "
                                   f"{', '.join(BUNDLED_MODELS)})")
    return MODELS_DIR / BUNDLED_MODELS[family]


@dataclasses.dataclass
class WhatIfModel:
    """A loaded model, its card and where it runs."""

    network: Any            # science.generative.model.ControlledDiffusion
    card: dict[str, Any]
    path: Path
    device: str

    @property
    def family(self) -> FamilySchema:
        return family_schema(self.card["family"])

    @property
    def image_size(self) -> int:
        return int(self.card["config"]["image_size"])

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


def load_model(path: str | Path | None = None, *, family: str = "breast",
               device: str = "auto", half: bool | None = None) -> WhatIfModel:
    """Load (hash-verified) a model folder; ``None`` = the bundled default of ``family``.

    ``device``: ``"auto"`` (CUDA when present, else CPU), ``"cpu"``, ``"cuda"``. ``half``:
    float16 on CUDA (default: the config's ``half_precision``); always float32 on CPU.
    """
    import torch

    from ..science.generative.checkpoint import load_checkpoint, read_card
    from ..science.generative.sampling import resolve_device

    folder = Path(path) if path is not None else bundled_model_path(family)
    dev = resolve_device(device)
    card = read_card(folder)
    if half is None:
        half = bool(card["config"].get("half_precision", False))
    dtype = torch.float16 if (half and dev.type == "cuda") else torch.float32
    key = (str(folder.resolve()), str(dev), str(dtype), card.get("model_hash"))
    if key not in _CACHE:
        network, card = load_checkpoint(folder, device=dev, dtype=dtype)
        _CACHE[key] = WhatIfModel(network, card, folder, str(dev))
    return _CACHE[key]


def parse_scenario(text: str, family: FamilySchema | str = "breast") -> dict[str, Any]:
    """``"time=T2,pCR=yes,HR=+,HER2=-"`` -> a validated scenario dict."""
    from ..science.generative.conditioning import normalise_scenario

    schema = family_schema(family) if isinstance(family, str) else family
    values: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        if "=" not in part:
            raise InputError(f"scenario {text!r}", f"{part!r} is not NAME=VALUE")
        name, value = (s.strip() for s in part.split("=", 1))
        values[name] = value
    return normalise_scenario(schema, values, f"scenario {text!r}")


def model_grid(image: Scan, size: int) -> Scan:
    from ..science.preprocess.breast import resize_square

    require_ndim(image, 2, f"{image.name} (the model takes a 2D pre-treatment image, e.g. the "
                           "subtraction MIP written by `nacsim mip`)")
    if image.kind != IMAGE:
        raise InputError(image.name, "is a label map; the model needs the pre-treatment image")
    check_image_values(image)
    arr = image.array.astype(np.float32)
    if arr.min() < -1e-3 or arr.max() > 1 + 1e-3:
        raise InputError(image.name, f"values {arr.min():g}..{arr.max():g} are outside [0, 1]; "
                                     "use the normalised model input written by `nacsim mip`")
    if image.shape == (size, size):
        return image
    return resize_square(image, size)


def simulate(model: WhatIfModel, image: Scan, scenarios: Sequence[Mapping[str, Any]], *,
             seed: int = 0, steps: int | None = None, sampler: str | None = None,
             guidance_scale: float | None = None,
             progress: Callable[[int, int], None] | None = None) -> list[Scan]:
    """Generate one follow-up image per scenario (one batch; shared initial noise).
    ``steps``, ``sampler``, ``guidance_scale``: ``None`` = the model's defaults."""
    import torch

    from ..science.generative.conditioning import normalise_scenario
    from ..science.generative.sampling import generate

    schema = model.family
    scenarios = [normalise_scenario(schema, s, f"scenario {k + 1}")
                 for k, s in enumerate(scenarios)]
    sampler = sampler or model.default_sampler
    steps = int(steps or model.default_steps)
    guidance_scale = float(model.default_guidance if guidance_scale is None else guidance_scale)
    grid = model_grid(image, model.image_size)
    param = next(model.network.unet.parameters())
    control = torch.from_numpy(np.ascontiguousarray(grid.array, np.float32))[None, None]
    started = time.perf_counter()
    out = generate(model.network, control.to(param.device, param.dtype), scenarios, seed=seed,
                   steps=steps, sampler=sampler, guidance_scale=guidance_scale,
                   progress=progress)
    seconds = time.perf_counter() - started
    results = []
    for scenario, array in zip(scenarios, out.cpu().numpy()[:, 0]):
        scan = grid.derive(array.astype(np.float32), step="generate",
                           model=model.card.get("title", model.path.name),
                           model_hash=model.model_hash, scenario=scenario,
                           scenario_text=f"{scenario['time']}: {schema.describe({k: v for k, v in scenario.items() if k != 'time'})}",
                           seed=int(seed), steps=steps, sampler=sampler,
                           guidance_scale=float(guidance_scale), device=model.device,
                           seconds_for_batch=round(seconds, 3),
                           generated_at=datetime.datetime.now(datetime.timezone.utc)
                           .isoformat(timespec="seconds"))
        provenance = {**scan.provenance, "synthetic": True,
                      "generator": "nacsim generative model",
                      "label": "SYNTHETIC - generated counterfactual, not a measurement",
                      "scenario": scenario, "model_hash": model.model_hash, "seed": int(seed),
                      "steps": steps, "sampler": sampler, "guidance_scale": guidance_scale,
                      "generated_at": scan.provenance.get("history", [{}])[-1].get(
                          "generated_at")}
        results.append(Scan(array=scan.array, affine=scan.affine, kind=IMAGE,
                            provenance=provenance))
    return results


def sample_case(index: int = 0, *, cohort_seed: int = 0, size: int | None = None
                ) -> dict[str, Any]:
    """A synthetic sample patient: its clinical values and T0/T1/T2 model inputs (MIPs)."""
    from ..science.phantoms import make_patient
    from ..science.preprocess.pipeline import breast_mips

    patient = make_patient("breast", cohort_seed, index)
    rendering = patient.render()
    visits = {tp: {**rendering.scans[tp], **rendering.masks[tp]} for tp in rendering.scans}
    mips = breast_mips(visits, size=size)
    return {"patient": patient.id, "clinical": dict(rendering.clinical), "mips": mips,
            "truth": rendering.truth}
