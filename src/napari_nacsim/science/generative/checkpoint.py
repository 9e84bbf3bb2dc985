"""Checkpoints: one safetensors file per component + a JSON model card.

The card records the family, schema version, image size, pixel spacing, intensity
normalisation, the full config, how the model was trained (command, data, split, machine),
its metrics and the sha256 of every weight file. Loading verifies every hash before reading
a tensor, and nothing is unpickled (safetensors holds tensors only).

Components: ``unet``, ``controlnet``, ``prompt_tokens``, ``text_tower`` (the frozen OpenCLIP
text transformer; stored in float16 when the config says so, to keep bundles small),
``vae`` (latent configurations only).
"""

from __future__ import annotations

import datetime
import os
from pathlib import Path
from typing import Any

import torch

from ...core.atomic import write_json_atomic
from ...core.checksum import file_sha256
from ...core.errors import InputError
from ...core.schema import family_schema
from .card import (CARD, CARD_FORMAT, SAMPLING_DEFAULTS, model_hash,  # noqa: F401 (re-exported)
                   read_card, sampling_defaults)
from .model import ControlledDiffusion
from .weights import load_components, save_components


def _components(model: ControlledDiffusion) -> dict[str, torch.nn.Module]:
    parts = {"unet": model.unet, "controlnet": model.controlnet,
             "prompt_tokens": model.conditioner.tokens,
             "text_tower": model.conditioner.text.tower}
    if model.vae is not None:
        parts["vae"] = model.vae
    return parts


def save_checkpoint(model: ControlledDiffusion, folder: str | os.PathLike,
                    card: dict[str, Any] | None = None) -> Path:
    """Write every component + the card into ``folder`` (each file atomically)."""
    folder = Path(folder)
    half = ("text_tower",) if model.config["text"].get("store_half", False) else ()
    files = save_components(_components(model), folder, half=half)
    schema = model.schema
    full = {
        "format": CARD_FORMAT,
        "synthetic_output": True,
        "family": schema.name,
        "schema_version": schema.version,
        "config": model.config,
        "image_size": model.config["image_size"],
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        **(card or {}),
        "files": files,
    }
    full["model_hash"] = model_hash(full)
    write_json_atomic(folder / CARD, full)
    return folder


def set_sampling_defaults(folder: str | os.PathLike, changes: dict[str, Any],
                          record: dict[str, Any]) -> dict[str, Any]:
    """Change how a trained model is run by default (steps, sampler, guidance) in its card.

    The weights, their hashes and the model hash stay the same (it is the same network;
    every generated image records the settings it was made with). Each change is appended
    to the card's ``sampling_defaults_history`` with ``record`` (command, evidence)."""
    from .samplers import SAMPLERS

    folder = Path(folder)
    card = verify_checkpoint(folder)
    unknown = sorted(set(changes) - set(SAMPLING_DEFAULTS))
    if unknown:
        raise InputError("sampling defaults", f"unknown setting {unknown[0]!r} (known: "
                                              f"{', '.join(SAMPLING_DEFAULTS)})")
    if "default_steps" in changes and int(changes["default_steps"]) < 1:
        raise InputError("--steps", f"{changes['default_steps']} must be at least 1")
    if "default_sampler" in changes and changes["default_sampler"] not in SAMPLERS:
        raise InputError("--sampler", f"{changes['default_sampler']!r} is not one of "
                                      f"{', '.join(SAMPLERS)}")
    if "default_guidance" in changes and not float(changes["default_guidance"]) >= 1.0:
        raise InputError("--guidance", f"{changes['default_guidance']} must be at least 1")
    before = {k: card["config"].get(k) for k in changes}
    card["config"].update(changes)
    card.setdefault("sampling_defaults_history", []).append({
        "changed": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "from": before, "to": dict(changes), **record})
    write_json_atomic(folder / CARD, card)
    return card


def verify_checkpoint(folder: str | os.PathLike) -> dict[str, Any]:
    """Check that every weight file exists and matches its sha256, that the card's model
    hash is the hash of those files (it is what every generated image names) and that the
    schema version is this nacsim's; return the card."""
    folder = Path(folder)
    card = read_card(folder)
    for name, entry in card["files"].items():
        path = folder / entry["path"]
        if not path.exists():
            raise InputError(path, f"weight file of component '{name}' is missing")
        digest = file_sha256(path)
        if digest != entry["sha256"]:
            raise InputError(path, f"sha256 {digest[:12]}... does not match the model card "
                                   f"({entry['sha256'][:12]}...): the file is corrupt or was "
                                   "changed")
    if "model_hash" in card and card["model_hash"] != model_hash(card):
        raise InputError(folder / CARD, f"model_hash {str(card['model_hash'])[:12]}... is not "
                                        f"the hash of its weight files "
                                        f"({model_hash(card)[:12]}...): the card was edited")
    schema = family_schema(card["family"])
    if str(card.get("schema_version")) != schema.version:
        raise InputError(folder / CARD, f"model was trained with {schema.name} schema version "
                                        f"{card.get('schema_version')}, this nacsim has "
                                        f"version {schema.version}")
    return card


def load_checkpoint(folder: str | os.PathLike, device: str | torch.device = "cpu",
                    dtype: torch.dtype = torch.float32) -> tuple[ControlledDiffusion, dict]:
    """Verify hashes, build the model from the card's config, load the tensors (strict)."""
    folder = Path(folder)
    card = verify_checkpoint(folder)
    model = ControlledDiffusion(card["config"])
    load_components(_components(model), folder, card["files"])
    model.to(device=device, dtype=dtype).eval()
    return model, card
