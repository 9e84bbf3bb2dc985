"""The JSON model card of a checkpoint folder, read without torch: what a widget needs to
list a model (title, family, hash, sampling defaults) costs no torch import on the UI
thread. `checkpoint` re-exports everything here."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ...core.errors import InputError

CARD = "model_card.json"
CARD_FORMAT = "nacsim-model-card/1"


def model_hash(card: dict[str, Any]) -> str:
    """One id for a model: sha256 over its files' hashes (in name order)."""
    import hashlib

    files = card["files"]
    joined = "".join(f"{name}:{files[name]['sha256']}" for name in sorted(files))
    return hashlib.sha256(joined.encode()).hexdigest()


# How a model runs when the user does not choose, with the values for cards without them.
SAMPLING_DEFAULTS = {"default_steps": 20, "default_sampler": "dpmpp", "default_guidance": 1.0}


def sampling_defaults(config: dict[str, Any]) -> dict[str, Any]:
    """A card config's sampling defaults (steps, sampler, guidance), typed, with fallbacks."""
    values = {k: config.get(k, v) for k, v in SAMPLING_DEFAULTS.items()}
    return {"default_steps": int(values["default_steps"]),
            "default_sampler": str(values["default_sampler"]),
            "default_guidance": float(values["default_guidance"])}


def grid_shape(config: dict[str, Any]) -> tuple[int, ...]:
    """The model-input grid of a model's config: ``grid_shape``, or a square of
    ``image_size`` pixels (2D models)."""
    if config.get("grid_shape"):
        return tuple(int(n) for n in config["grid_shape"])
    size = int(config["image_size"])
    return (size, size)


def outcome_inputs(config: dict[str, Any]) -> tuple[str, ...]:
    """The outcome variables a model's generator takes as inputs (the lung model's
    ``adapter.outcome_input``, `science.generative.outcome`); () = none: the outcome emerges
    from the diffusion (the paper's implicit mode)."""
    names = (config.get("adapter") or {}).get("outcome_input") or config.get("outcome_input")
    return tuple(names or ())


def read_card(folder: str | os.PathLike) -> dict[str, Any]:
    path = Path(folder) / CARD
    if not path.exists():
        raise InputError(folder, f"is not a nacsim model folder (no {CARD})")
    try:
        card = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise InputError(path, f"is not valid JSON ({err.msg} at line {err.lineno})") from None
    if (not isinstance(card, dict) or card.get("format") != CARD_FORMAT or "files" not in card
            or "config" not in card):
        raise InputError(path, f"is not a {CARD_FORMAT} model card")
    return card
