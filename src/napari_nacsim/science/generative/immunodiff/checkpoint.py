"""ImmunoDiff model folders: one safetensors file per component (`weights`) + the nacsim
model card.

The card is the same format as the breast models' (`science.generative.checkpoint`): config,
family, schema version, how it was trained, and the sha256 of every file; loading verifies
every hash (`verify_checkpoint`) before a tensor is read, and nothing is unpickled.
"""

from __future__ import annotations

import datetime
import os
from pathlib import Path
from typing import Any

import torch

from ....core.atomic import write_json_atomic
from ....core.errors import InputError
from ..checkpoint import CARD, CARD_FORMAT, model_hash, verify_checkpoint
from ..weights import load_components, save_components
from .network import ImmunoDiff

ARCHITECTURE = "immunodiff-2.5d/1"


def load_extending(model: ImmunoDiff, source: ImmunoDiff) -> list[str]:
    """Load ``source``'s weights into ``model``, a network of the same sizes whose
    cbi-Adapter takes more inputs (e.g. an outcome: ``adapter.outcome_input``). Every tensor
    of ``source`` is copied; the per-variable token rows of the new variables (appended last,
    `tokens.model_variables`) and the new groups keep their initialisation, and each new
    group's output map starts at zero, so that the extended model generates exactly what
    ``source`` does until fine-tuning teaches it the new input. Returns the names of what is
    new; raises ValueError when the networks differ otherwise."""
    target, weights = model.state_dict(), source.state_dict()
    extra = sorted(set(weights) - set(target))
    if extra:
        raise ValueError(f"the source has weights the model lacks ({extra[0]})")
    new: list[str] = []
    for key, value in target.items():
        if key not in weights:
            new.append(key)
            continue
        src = weights[key]
        if src.shape == value.shape:
            target[key] = src
        elif (key.startswith("adapter.tokens.") and src.ndim == value.ndim
              and src.shape[1:] == value.shape[1:] and src.shape[0] < value.shape[0]):
            value[:src.shape[0]] = src     # rows of the source's variables, in their order
            new.append(f"{key}[{src.shape[0]}:]")
        else:
            raise ValueError(f"{key}: shape {tuple(src.shape)} in the source, "
                             f"{tuple(value.shape)} in the model")
    model.load_state_dict(target, strict=True)
    new_groups = set(model.adapter.groups) - set(source.adapter.groups)
    with torch.no_grad():
        for group in new_groups:
            model.adapter.attention[group].out.weight.zero_()
            model.adapter.attention[group].out.bias.zero_()
    return new


def save_checkpoint(model: ImmunoDiff, folder: str | os.PathLike,
                    card: dict[str, Any] | None = None) -> Path:
    folder = Path(folder)
    files = save_components(model.components(), folder)
    schema = model.schema
    full = {"format": CARD_FORMAT, "architecture": ARCHITECTURE, "synthetic_output": True,
            "family": schema.name, "schema_version": schema.version, "config": model.config,
            "image_size": model.config["grid_shape"][-1],
            "created": datetime.datetime.now(datetime.timezone.utc)
            .isoformat(timespec="seconds"),
            **(card or {}), "files": files}
    full["model_hash"] = model_hash(full)
    write_json_atomic(folder / CARD, full)
    return folder


def load_checkpoint(folder: str | os.PathLike, device: str | torch.device = "cpu",
                    dtype: torch.dtype = torch.float32) -> tuple[ImmunoDiff, dict]:
    """Verify every hash, build the network from the card's config, load (strict)."""
    folder = Path(folder)
    card = verify_checkpoint(folder)
    if card.get("architecture") != ARCHITECTURE:
        raise InputError(folder / CARD, f"is not an ImmunoDiff model ({ARCHITECTURE}); "
                                        f"architecture {card.get('architecture')!r}")
    model = ImmunoDiff(card["config"])
    load_components(model.components(), folder, card["files"])
    model.to(device=device, dtype=dtype).eval()
    return model, card
