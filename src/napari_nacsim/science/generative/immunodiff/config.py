"""ImmunoDiff configurations and the mapping between Hounsfield units and model values.

A config is a JSON dict (``configs/lung_tiny.json``, ``configs/lung_paper.json``); `resolve`
fills in the defaults below so that a card's config is always complete. ``micro`` is the
CI size (same code paths, a few thousand parameters).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, Mapping

CONFIG_DIR = Path(__file__).resolve().parents[3] / "configs"

DEFAULTS: dict[str, Any] = {
    "family": "lung",
    "name": "lung_tiny",
    "grid_shape": [16, 96, 96],          # (z, y, x) voxels: the family's CT crop
    "image_size": 96,                    # in-plane size (the engine reads it)
    "hu_centre": -300.0,                 # model value = (HU - centre) / scale
    "hu_scale": 700.0,                   # air -1000 -> -1, soft tissue ~ +0.5, bone > 1
    "hu_clip": [-1024.0, 3071.0],
    "neighbours": 1,                     # slices on each side, as extra input channels
    "patch": 2,                          # pixel-unshuffle factor (96x96 -> 4 x 48x48)
    "unet": {"channels": [32, 48, 64], "attention_levels": [False, False, True],
             "num_res_blocks": 1, "norm_num_groups": 16, "num_head_channels": 32},
    "controlnet": {"conditioning_channels": [32]},
    "vl": {"channels": [16, 32], "feature_channels": 16, "projection_dim": 32,
           "temperature": 0.5},
    "adapter": {"dim": 32, "heads": 2, "rope_base": 100000.0, "lambda_init": 1.0,
                "image_channels": 16, "drop_condition": 0.1,
                # outcome variables the generator is given (e.g. ["responder"]); [] = the
                # paper's implicit mode: the outcome emerges from the diffusion
                "outcome_input": [],
                # training: each given outcome alone is dropped ("not given") this often,
                # so that the same network keeps the implicit mode
                "drop_outcome": 0.0},
    "diffusion": {"train_timesteps": 1000, "beta_schedule": "scaled_linear",
                  "beta_start": 0.0015, "beta_end": 0.0195, "prediction_type": "epsilon"},
    "default_steps": 20, "default_sampler": "ddim", "default_guidance": 1.0,
    "init_strength": 1.0,                # 1: sample from pure noise; < 1: from the noised
    #                                      pre-treatment crop (sampling.generate)
    "x0_clip": 1.8,                      # the predicted clean crop is clipped to +-this
    "target": "image",                   # what is diffused: "image", the follow-up crop,
    #                                      or "change", follow-up minus pre-treatment crop
    #                                      (model units; the result is pre + change)
    "half_precision": False,
    # The final crop: the generated crop within growth x reach + allowance_mm of the baseline
    # tumour, the pre-treatment crop beyond, blended over feather_mm (`compose`). growth: the
    # phantom's largest growth (+50 % of the longest diameter); allowance_mm: the most by
    # which the phantom's changed voxels exceed growth x reach, over 400 tumours
    # (docs/lung-model.md)
    "composition": {"around_tumour": True, "growth": 0.5, "allowance_mm": 8.0,
                    "feather_mm": 12.0},
    "training": {"optimizer": "adam", "lr": 2e-4, "batch_size": 8,
                 "steps": {"vl": 300, "base": 2000, "control": 800, "adapter": 1500},
                 "unpaired_patients": 600, "paired_patients": 160, "validation_share": 0.1,
                 "cohort_seed_paired": 0, "cohort_seed_unpaired": 100, "seed": 0,
                 # the tumour is ~0.5 % of a crop's voxels: its voxels (dilated) weigh
                 # 1 + tumour_weight in the loss, and this share of the drawn slices is
                 # drawn among the slices that show it (0, 0: every voxel and slice alike)
                 "tumour_weight": 0.0, "tumour_slice_share": 0.0,
                 # adapter stage with an outcome input: every paired patient also rendered
                 # under the other outcome (`data.flipped_outcome_record`)
                 "flipped_outcomes": False},
}


def _merge(base: dict, override: Mapping) -> dict:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


TARGETS = ("image", "change")


def resolve(config: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``config`` over the defaults (nested dicts merged key by key)."""
    cfg = _merge(DEFAULTS, config or {})
    if cfg["target"] not in TARGETS:
        from ....core.errors import InputError

        raise InputError("config target", f"{cfg['target']!r} is not one of "
                                          f"{', '.join(TARGETS)}")
    from .compose import Composition

    Composition.from_config(cfg)   # a bad composition is refused here, not at sampling
    return cfg


def load_config(name_or_path: str | Path) -> dict[str, Any]:
    """A config by name (``lung_tiny``) from the package's configs, or from a JSON file."""
    path = Path(name_or_path)
    if not path.suffix:
        path = CONFIG_DIR / f"{name_or_path}.json"
    from ....core.errors import InputError

    if not path.exists():
        raise InputError(path, "config file not found")
    try:
        return resolve(json.loads(path.read_text()))
    except json.JSONDecodeError as err:
        raise InputError(path, f"is not valid JSON ({err.msg} at line {err.lineno})") from None
    except InputError as err:   # a bad setting: the file and the field
        raise InputError(path, f"{err.subject.removeprefix('config ')} {err.problem}") from None


# The CI size: the family's real crop grid (so the engine and the family accept it), a
# few thousand parameters, a few steps per stage.
MICRO = {"name": "lung_micro",
         "unet": {"channels": [8, 8], "attention_levels": [False, True], "norm_num_groups": 4,
                  "num_head_channels": 8},
         "controlnet": {"conditioning_channels": [8]},
         "vl": {"channels": [4, 8], "feature_channels": 4, "projection_dim": 8},
         "adapter": {"dim": 8, "heads": 2, "image_channels": 4},
         "diffusion": {"train_timesteps": 100}, "default_steps": 3,
         "training": {"lr": 1e-3, "batch_size": 4,
                      "steps": {"vl": 2, "base": 2, "control": 2, "adapter": 2},
                      "unpaired_patients": 4, "paired_patients": 4, "validation_share": 0.25}}


def hu_to_model(hu, config: Mapping[str, Any]):
    return (hu - config["hu_centre"]) / config["hu_scale"]


def model_to_hu(x, config: Mapping[str, Any]):
    lo, hi = config["hu_clip"]
    return (x * config["hu_scale"] + config["hu_centre"]).clip(lo, hi)
