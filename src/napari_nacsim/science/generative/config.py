"""Model configuration: one JSON file per configuration, the same code for all of them.

A config names the family (whose schema gives the conditioning factors), the image size, the
diffusers UNet / ControlNet / optional VAE arguments, the OpenCLIP text tower, the noise
schedule, what trains in each stage, and (for configurations built on user weights, e.g.
``sd21``) where the local weight files are. Paths in ``weights`` may use ``${NAME}``
environment variables and are resolved relative to the config file.
"""

from __future__ import annotations

import copy
import json
import math
import os
import re
from pathlib import Path
from typing import Any

from ...core.errors import InputError

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"

# What the denoiser generates: the follow-up itself, or its change from the pre-treatment
# image (the result is then the pre-treatment image plus the generated change).
TARGETS = ("image", "change")
# Per-sample loss weighting over timesteps: none, or min-SNR (Hang et al. 2023).
LOSS_WEIGHTINGS = ("none", "min_snr")

_REQUIRED = ("name", "family", "image_size", "image_channels", "unet", "controlnet", "text",
             "scheduler")


def builtin_config_path(name: str) -> Path:
    path = CONFIG_DIR / f"{name}.json"
    if not path.exists():
        known = sorted(p.stem for p in CONFIG_DIR.glob("*.json"))
        raise InputError("model config", f"{name!r} is not a bundled config (known: "
                                         f"{', '.join(known)})")
    return path


def load_config(name_or_path: str | os.PathLike) -> dict[str, Any]:
    """A bundled config by name (``breast_tiny``) or a JSON file path."""
    path = Path(name_or_path)
    if not path.suffix == ".json":
        path = builtin_config_path(str(name_or_path))
    if not path.exists():
        raise InputError(path, "model config file does not exist")
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise InputError(path, f"is not valid JSON ({err.msg} at line {err.lineno})") from None
    config = validate_config(config, str(path))
    if "weights" in config:
        config["weights"] = {k: _resolve(v, path.parent) if isinstance(v, str) else v
                             for k, v in config["weights"].items()}
    return config


def validate_config(config: dict[str, Any], subject: str = "model config") -> dict[str, Any]:
    if not isinstance(config, dict):
        raise InputError(subject, "must be a JSON object")
    missing = [k for k in _REQUIRED if k not in config]
    if missing:
        raise InputError(subject, f"field '{missing[0]}' is missing")
    from ...core.schema import family_schema

    family_schema(config["family"])  # raises for an unknown family
    if int(config["image_size"]) % 8:
        raise InputError(f"{subject}: field 'image_size'", "must be a multiple of 8")
    vae, control = config.get("vae"), (config.get("controlnet") or {})
    embedding = control.get("conditioning_embedding_out_channels")
    fold = config.get("pixel_fold", 1)
    if not isinstance(fold, int) or isinstance(fold, bool) or fold < 1 or \
            int(config["image_size"]) % (8 * fold):
        raise InputError(f"{subject}: field 'pixel_fold'", f"must be a whole number >= 1 that "
                                                           f"divides image_size / 8, got {fold!r}")
    if fold > 1 and vae:
        raise InputError(f"{subject}: field 'pixel_fold'", "folds pixels into channels in "
                                                           "pixel space: not with a VAE")
    if fold > 1 and embedding and 2 ** (len(embedding) - 1) != fold:
        raise InputError(f"{subject}: field 'controlnet.conditioning_embedding_out_channels'",
                         f"has {len(embedding)} entries (downsampling {2 ** (len(embedding) - 1)}"
                         f"x); pixel_fold {fold} needs {int(math.log2(fold)) + 1} entries")
    if config.get("target", "image") not in TARGETS:
        raise InputError(f"{subject}: field 'target'", f"{config.get('target')!r} is not one of "
                                                       f"{', '.join(TARGETS)}")
    weighting = ((config.get("training") or {}).get("loss_weighting") or "none")
    if weighting not in LOSS_WEIGHTINGS:
        raise InputError(f"{subject}: field 'training.loss_weighting'",
                         f"{weighting!r} is not one of {', '.join(LOSS_WEIGHTINGS)}")
    if vae and embedding and not (config.get("weights") or {}).get("vae"):
        # The ControlNet sees the pixel-space image; its embedding must bring it down to the
        # latent grid (each extra entry halves the resolution). A VAE read from pretrained
        # weights is described by its own files, not by this entry.
        factor = 2 ** (len(vae["block_out_channels"]) - 1)
        if 2 ** (len(embedding) - 1) != factor:
            raise InputError(f"{subject}: field 'controlnet.conditioning_embedding_out_channels'",
                             f"has {len(embedding)} entries (downsampling "
                             f"{2 ** (len(embedding) - 1)}x), the VAE's latent grid is {factor}x "
                             f"smaller than the image: use {int(math.log2(factor)) + 1} entries")
    return copy.deepcopy(config)


def _resolve(value: str, base: Path) -> str:
    def env(match):
        name = match.group(1)
        if name not in os.environ:
            raise InputError("model config weights", f"environment variable ${{{name}}} is "
                                                     "not set (it should point to your local "
                                                     "weight files)")
        return os.environ[name]

    value = re.sub(r"\$\{(\w+)\}", env, value)
    path = Path(value).expanduser()
    return str(path if path.is_absolute() else (base / path).resolve())
