"""The generative model of a family, built from its config: a frozen diffusers
`UNet2DConditionModel` (the base denoiser), a `ControlNetModel` that reads the pre-treatment
image, the prompt-token `Conditioner`, and an optional `AutoencoderKL` latent space.

As in the NAC paper's reference code, the learned clinical tokens condition the ControlNet
branch while the locked UNet receives the empty prompt; stage 2 trains the ControlNet, the
tokens and (if the config says so, as the paper does) the UNet decoder. The noise schedule is
a diffusers `DDPMScheduler` config, from which every sampler is derived.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

import torch
from torch import nn

from ...core.schema import family_schema
from .conditioning import Conditioner, FrozenOpenCLIPText
from .config import validate_config


def build_unet(config: dict[str, Any]):
    from diffusers import UNet2DConditionModel

    channels = latent_channels(config)
    size = config["image_size"] // latent_factor(config)
    kwargs = {k: (tuple(v) if isinstance(v, list) else v) for k, v in config["unet"].items()}
    return UNet2DConditionModel(sample_size=size, in_channels=channels, out_channels=channels,
                                cross_attention_dim=text_width(config), **kwargs)


def build_controlnet(config: dict[str, Any], unet) -> nn.Module:
    from diffusers import ControlNetModel

    cn = config["controlnet"]
    return ControlNetModel.from_unet(
        unet, conditioning_embedding_out_channels=tuple(cn["conditioning_embedding_out_channels"]),
        conditioning_channels=config["image_channels"],
        load_weights_from_unet=cn.get("init_from_unet", True))


def build_vae(config: dict[str, Any]):
    if not config.get("vae"):
        return None
    from diffusers import AutoencoderKL

    kwargs = {k: (tuple(v) if isinstance(v, list) else v) for k, v in config["vae"].items()
              if k != "scaling_factor"}
    return AutoencoderKL(**kwargs)


def latent_factor(config: dict[str, Any]) -> int:
    """How many times coarser the UNet's grid is than the image: the VAE's downsampling, or
    the pixel fold."""
    vae = config.get("vae")
    return 2 ** (len(vae["block_out_channels"]) - 1) if vae else pixel_fold(config)


def latent_channels(config: dict[str, Any]) -> int:
    vae = config.get("vae")
    if vae:
        return int(vae.get("latent_channels", 4))
    return int(config["image_channels"]) * pixel_fold(config) ** 2


def pixel_fold(config: dict[str, Any]) -> int:
    return int(config.get("pixel_fold", 1))


def generates_change(config: dict[str, Any]) -> bool:
    """True when the denoiser generates the change from the pre-treatment image."""
    return config.get("target", "image") == "change"


def text_width(config: dict[str, Any]) -> int:
    text = config["text"]
    if "text_cfg" in text:
        return int(text["text_cfg"]["width"])
    import open_clip

    return int(open_clip.get_model_config(text["open_clip_model"])["text_cfg"]["width"])


def build_text(config: dict[str, Any]) -> FrozenOpenCLIPText:
    text = config["text"]
    return FrozenOpenCLIPText(text["open_clip_model"], text.get("text_cfg"))


def noise_scheduler(config: dict[str, Any]):
    from diffusers import DDPMScheduler

    return DDPMScheduler(**config["scheduler"])


class ControlledDiffusion(nn.Module):
    """Everything a family's generative model holds; see the module docstring."""

    def __init__(self, config: dict[str, Any], *, unet=None, controlnet=None, vae=None,
                 text: FrozenOpenCLIPText | None = None):
        super().__init__()
        self.config = validate_config(config)
        self.schema = family_schema(self.config["family"])
        self.unet = unet if unet is not None else build_unet(self.config)
        self.controlnet = (controlnet if controlnet is not None
                           else build_controlnet(self.config, self.unet))
        self.vae = vae if vae is not None else build_vae(self.config)
        text = text if text is not None else build_text(self.config)
        self.conditioner = Conditioner(self.schema, text,
                                       int(self.config["text"].get("token_embed_dim", 64)))
        self.scheduler = noise_scheduler(self.config)
        self.unet.requires_grad_(False)
        if self.vae is not None:
            self.vae.requires_grad_(False)

    # --- image <-> model space --------------------------------------------------------------
    @property
    def scaling_factor(self) -> float:
        return float(self.config["vae"].get("scaling_factor", 1.0)) if self.vae else 1.0

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """[0, 1] images (B, C, H, W) -> the space the UNet denoises (pixels in [-1, 1], or
        VAE latents; a grey image is repeated to the VAE's channels)."""
        x = images * 2.0 - 1.0
        if self.vae is None:
            # Pixel unshuffle: each fold x fold block becomes fold**2 channels (no pixel is
            # lost; the UNet's convolutions and attention work on the coarser grid).
            fold = pixel_fold(self.config)
            return nn.functional.pixel_unshuffle(x, fold) if fold > 1 else x
        if x.shape[1] != self.vae.config.in_channels:
            x = x.mean(1, keepdim=True).expand(-1, self.vae.config.in_channels, -1, -1)
        return self.vae.encode(x.to(self.vae.dtype)).latent_dist.mode() * self.scaling_factor

    def diffusion_sample(self, target: torch.Tensor, control: torch.Tensor | None
                         ) -> torch.Tensor:
        """What the denoiser learns to generate for a [0, 1] ``target`` image: its encoding,
        or (``target: change``) its encoding minus that of the pre-treatment ``control``."""
        x0 = self.encode_images(target)
        if generates_change(self.config):
            x0 = x0 - self.encode_images(control)
        return x0

    def decode(self, x: torch.Tensor, control: torch.Tensor | None = None) -> torch.Tensor:
        """Model space -> [0, 1] images with ``image_channels`` channels. A generated change
        (``target: change``) is added to the encoding of the pre-treatment ``control``
        image ([0, 1], one per sample or one for all) first."""
        if generates_change(self.config):
            if control is None:
                raise ValueError("this model generates a change: decode needs the "
                                 "pre-treatment image")
            x = x + self.encode_images(control.to(x)).expand_as(x)
        if self.vae is None:
            fold = pixel_fold(self.config)
            if fold > 1:
                x = nn.functional.pixel_shuffle(x, fold)
        if self.vae is not None:
            x = self.vae.decode(x.to(self.vae.dtype) / self.scaling_factor).sample
            if x.shape[1] != self.config["image_channels"]:
                x = x.mean(1, keepdim=True)
        return ((x.float() + 1.0) / 2.0).clamp(0.0, 1.0)

    def control_input(self, images: torch.Tensor) -> torch.Tensor:
        """The pre-treatment image as ControlNet input: [0, 1] -> [-1, 1], pixel space."""
        return images * 2.0 - 1.0

    # --- the denoiser ---------------------------------------------------------------------
    def denoise(self, x: torch.Tensor, t, context: torch.Tensor, null: torch.Tensor,
                control: torch.Tensor) -> torch.Tensor:
        """One model evaluation: ControlNet(x, t, clinical context, control) -> residuals
        into the locked UNet, which sees the empty prompt ``null``."""
        down, mid = self.controlnet(x, t, encoder_hidden_states=context,
                                    controlnet_cond=control, return_dict=False)
        return self.unet(x, t, encoder_hidden_states=null, down_block_additional_residuals=down,
                         mid_block_additional_residual=mid, return_dict=False)[0]

    def base_denoise(self, x: torch.Tensor, t, null: torch.Tensor) -> torch.Tensor:
        """The base denoiser alone (stage 1)."""
        return self.unet(x, t, encoder_hidden_states=null, return_dict=False)[0]

    # --- what trains ------------------------------------------------------------------------
    def stage2_parameters(self) -> list[nn.Parameter]:
        """ControlNet + prompt tokens (+ the UNet decoder if ``train_unet_decoder``)."""
        params = list(self.controlnet.parameters()) + list(self.conditioner.tokens.parameters())
        if self.config.get("train_unet_decoder", False):
            params += list(self.unet_decoder_parameters())
        return params

    def unet_decoder_parameters(self) -> Iterator[nn.Parameter]:
        for module in (self.unet.up_blocks, self.unet.conv_norm_out, self.unet.conv_out):
            if module is not None:
                yield from module.parameters()


class _Constant(nn.Module):
    def __init__(self, value: torch.Tensor):
        super().__init__()
        self.value = value

    def forward(self, _):
        return self.value


@contextlib.contextmanager
def fixed_control_embedding(controlnet, control: torch.Tensor) -> Iterator[None]:
    """Run the ControlNet's conditioning embedding of ``control`` once and reuse it at every
    step (the control image does not change across steps)."""
    original = controlnet.controlnet_cond_embedding
    embedded = original(control)
    controlnet.controlnet_cond_embedding = _Constant(embedded)
    try:
        yield
    finally:
        controlnet.controlnet_cond_embedding = original
