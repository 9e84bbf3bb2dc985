"""A model's weights on disk: one safetensors file per component (``unet.safetensors``, ...),
written once for both networks (the breast ControlNet model, the lung ImmunoDiff) and the
lung training's resume state.

Each file is written atomically and listed with its sha256 and size, which the model card
records (`card.model_hash` hashes those entries); nothing is pickled, and loading is strict.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Collection, Mapping

import torch

from ...core.atomic import atomic_path
from ...core.checksum import file_sha256
from ...core.errors import InputError
from .card import CARD


def save_components(components: Mapping[str, torch.nn.Module], folder: Path, *,
                    half: Collection[str] = ()) -> dict[str, dict[str, Any]]:
    """Write each component's state to ``folder/<name>.safetensors``; ``half``: components
    whose floating-point tensors are stored as float16 (a frozen text tower, to keep bundles
    small). Returns the card's ``files`` entries: path, sha256, bytes."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    for name, module in components.items():
        state = {k: v.detach().to("cpu").contiguous() for k, v in module.state_dict().items()}
        if name in half:
            state = {k: (v.half() if v.is_floating_point() else v) for k, v in state.items()}
        path = folder / f"{name}.safetensors"
        with atomic_path(path) as tmp:
            # one metadata key: safetensors writes the map in random order, so two keys gave
            # the same weights other bytes (and another model hash) at every save
            save_file(state, str(tmp), metadata={"format": "pt"})
        files[name] = {"path": path.name, "sha256": file_sha256(path),
                       "bytes": path.stat().st_size}
    return files


def load_components(components: Mapping[str, torch.nn.Module], folder: Path,
                    files: Mapping[str, Mapping[str, Any]]) -> None:
    """Load ``files`` (the card's entries) from ``folder`` into the components, strictly;
    a tensor stored in another precision (``half``) is cast to the module's. The hashes
    are the caller's to check first (`checkpoint.verify_checkpoint`)."""
    from safetensors.torch import load_file

    if set(components) != set(files):
        raise InputError(folder / CARD, f"lists components {sorted(files)}, the config needs "
                                        f"{sorted(components)}")
    for name, module in components.items():
        path = folder / files[name]["path"]
        state = load_file(str(path))
        own = module.state_dict()
        state = {k: v.to(own[k].dtype) if k in own else v for k, v in state.items()}
        try:
            module.load_state_dict(state, strict=True)
        except RuntimeError as err:
            raise InputError(path, f"does not fit the config: {str(err).splitlines()[0]}") \
                from None
