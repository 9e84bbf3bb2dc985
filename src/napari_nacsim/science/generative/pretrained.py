"""Build a model on weights a user provides locally (e.g. the ``sd21`` config): diffusers
folders for the UNet, VAE and (optionally) ControlNet, and an open_clip weights file for the
text tower. No network: every ``from_pretrained`` is ``local_files_only``; open_clip files
are read as safetensors, or as a PyTorch file with ``weights_only=True`` (tensors only, no
arbitrary unpickling).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ...core.errors import InputError
from .model import ControlledDiffusion, build_controlnet

_UNET_KEYS = ("block_out_channels", "down_block_types", "up_block_types", "layers_per_block",
              "attention_head_dim", "use_linear_projection", "norm_num_groups",
              "mid_block_type", "upcast_attention", "only_cross_attention", "num_attention_heads")
_VAE_KEYS = ("in_channels", "out_channels", "block_out_channels", "down_block_types",
             "up_block_types", "latent_channels", "layers_per_block", "norm_num_groups",
             "sample_size", "scaling_factor")


def _folder(path: str, what: str) -> Path:
    folder = Path(path)
    if not folder.exists():
        raise InputError(folder, f"{what} does not exist")
    if not (folder / "config.json").exists():
        raise InputError(folder, f"is not a diffusers {what} folder (no config.json)")
    return folder


def read_open_clip_state(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.exists():
        raise InputError(path, "open_clip weights file does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file is the user's input problem
        raise InputError(path, f"is not a readable open_clip weights file "
                               f"({str(err).splitlines()[0][:120]})") from None
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise InputError(path, "does not hold a state dict")
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}


def load_pretrained_model(config: dict[str, Any]) -> ControlledDiffusion:
    """Assemble `ControlledDiffusion` from the local files named in ``config["weights"]``.

    The architecture found in the files is written back into the returned model's config, so
    a checkpoint saved from it rebuilds the same networks.
    """
    from diffusers import AutoencoderKL, ControlNetModel, UNet2DConditionModel

    from .model import build_text

    weights = config.get("weights") or {}
    if "unet" not in weights or "open_clip" not in weights:
        raise InputError("model config weights", "needs at least 'unet' (diffusers folder) and "
                                                 "'open_clip' (weights file)")
    config = dict(config)
    text = build_text(config)
    text.load_open_clip_state(read_open_clip_state(weights["open_clip"]), str(weights["open_clip"]))
    unet = UNet2DConditionModel.from_pretrained(_folder(weights["unet"], "UNet"),
                                                local_files_only=True)
    if unet.config.cross_attention_dim != text.width:
        raise InputError(weights["unet"], f"UNet cross-attention width "
                                          f"{unet.config.cross_attention_dim} does not match the "
                                          f"text tower width {text.width}")
    config["unet"] = {k: (list(v) if isinstance(v, tuple) else v)
                      for k, v in unet.config.items() if k in _UNET_KEYS}
    vae = None
    if weights.get("vae"):
        vae = AutoencoderKL.from_pretrained(_folder(weights["vae"], "VAE"), local_files_only=True)
        config["vae"] = {k: (list(v) if isinstance(v, tuple) else v)
                         for k, v in vae.config.items() if k in _VAE_KEYS}
    factor = 2 ** (len(vae.config.block_out_channels) - 1) if vae is not None else 1
    if unet.config.sample_size * factor != config["image_size"]:
        config["image_size"] = int(unet.config.sample_size * factor)
    if weights.get("controlnet"):
        controlnet = ControlNetModel.from_pretrained(_folder(weights["controlnet"], "ControlNet"),
                                                     local_files_only=True)
        config["controlnet"] = {**config["controlnet"], "conditioning_embedding_out_channels":
                                list(controlnet.config.conditioning_embedding_out_channels)}
        config["image_channels"] = int(controlnet.config.conditioning_channels)
    else:
        controlnet = build_controlnet(config, unet)
    config = {k: v for k, v in config.items() if k != "weights"}
    config["initialised_from"] = {k: str(v) for k, v in weights.items()}
    return ControlledDiffusion(config, unet=unet, controlnet=controlnet, vae=vae, text=text)
