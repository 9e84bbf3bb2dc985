"""The ImmunoDiff network: VL encoders, base denoiser, anatomy ControlNet, cbi-Adapter.

Networks are MONAI's generative ones (`DiffusionModelUNet`, `ControlNet`; the paper's
group builds on them, and they measured faster than diffusers' at this size, see
docs/lung-model.md). Everything works on 2.5D slices (`slices`): the denoiser's input is the
noisy slice with its noisy neighbours, pixel-unshuffled by ``patch``.

Which parts train when (`training`): ``vl`` the encoders (InfoNCE); ``base`` the U-Net on
unpaired crops (unconditional); ``control`` the ControlNet with the frozen VL maps as the
control, U-Net and encoders frozen; ``adapter`` the cbi-Adapter and the ControlNet on the
paired set, with the pre-treatment slice and the clinical values added to the control.
The ControlNet's conditioning input is c = [c_a ; ĉ] (channels): the anatomy maps and the
adapter's fused condition (zeros before the adapter stage, so the control stage learns
anatomy alone and the adapter stage adds to it).
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

import torch
from torch import nn

from ....core.schema import FamilySchema, family_schema
from .cbi_adapter import CbiAdapter
from .config import resolve
from .slices import shuffle, unshuffle
from .vl_encoder import VLEncoders

COMPONENTS = ("vl", "unet", "controlnet", "adapter")


class ImmunoDiff(nn.Module):
    def __init__(self, config: Mapping[str, Any], schema: Optional[FamilySchema] = None):
        super().__init__()
        from monai.networks.nets import ControlNet, DiffusionModelUNet

        cfg = resolve(config)
        self.config = cfg
        self.schema = schema or family_schema(cfg["family"])
        k, p = int(cfg["neighbours"]), int(cfg["patch"])
        self.neighbours, self.patch = k, p
        n = 2 * k + 1
        u = cfg["unet"]
        unet_kw = dict(spatial_dims=2, in_channels=n * p * p, channels=tuple(u["channels"]),
                       attention_levels=tuple(u["attention_levels"]),
                       num_res_blocks=int(u["num_res_blocks"]),
                       norm_num_groups=int(u["norm_num_groups"]),
                       num_head_channels=int(u["num_head_channels"]))
        self.vl = VLEncoders(cfg["vl"], k, p)
        self.unet = DiffusionModelUNet(out_channels=p * p, **unet_kw)
        self.adapter = CbiAdapter(self.schema, cfg["adapter"], image_in_channels=n * p * p)
        self.control_channels = self.vl.out_channels + self.adapter.out_channels
        self.controlnet = ControlNet(
            conditioning_embedding_in_channels=self.control_channels,
            conditioning_embedding_num_channels=tuple(cfg["controlnet"]["conditioning_channels"]),
            **unet_kw)

    def components(self) -> dict[str, nn.Module]:
        return {name: getattr(self, name) for name in COMPONENTS}

    def init_controlnet_from_unet(self) -> None:
        """ControlNet practice: start the control branch as a copy of the base encoder
        (its zero convolutions keep the base's output unchanged at first)."""
        self.controlnet.load_state_dict(self.unet.state_dict(), strict=False)

    # --- conditions ----------------------------------------------------------------------------
    def anatomy(self, vessels25: torch.Tensor, lobes25: torch.Tensor) -> torch.Tensor:
        """c_a from 2.5D vessel slices (B, n, H, W) and one-hot lobe slices (B, 6n, H, W)."""
        return self.vl.control(vessels25, lobes25)

    def control(self, anatomy: torch.Tensor, fused: Optional[torch.Tensor]) -> torch.Tensor:
        """[c_a ; ĉ]; ``fused`` None (control stage, no adapter): zeros."""
        if fused is None:
            b, _, h, w = anatomy.shape
            fused = anatomy.new_zeros(b, self.adapter.out_channels, h, w)
        return torch.cat([anatomy, fused], dim=1)

    def fused(self, pre25: torch.Tensor, clinical_sum: torch.Tensor) -> torch.Tensor:
        """ĉ = SiLU(Conv(pre)) + λ Σ Z_i from the 2.5D pre-treatment slices (model scale)."""
        return self.adapter(unshuffle(pre25, self.patch), clinical_sum)

    def embed_control(self, control: torch.Tensor) -> torch.Tensor:
        """The ControlNet's embedding of a control [c_a ; ĉ] (its conditioning network): it
        depends on neither the noisy input nor the timestep, so a sampler computes it once
        for all its steps (``denoise(embedded_control=)``)."""
        return self.controlnet.controlnet_cond_embedding(control)

    # --- the denoiser --------------------------------------------------------------------------
    def denoise(self, x25: torch.Tensor, t: torch.Tensor,
                control: Optional[torch.Tensor] = None, *,
                embedded_control: Optional[torch.Tensor] = None,
                copies: int = 1) -> torch.Tensor:
        """Predicted noise of the centre slice (B, 1, H, W) from the noisy 2.5D slices
        (B, n, H, W) at timesteps ``t``; ``control`` None = the base denoiser alone;
        ``embedded_control``: the control already through `embed_control`. ``copies`` > 1:
        ``x25`` is that many copies of its first B / copies rows at one timestep (a
        sampler's first step: every scenario starts from the same noise), so the base
        U-Net's encoder, which sees only the noisy input and the timestep, runs on one copy.
        Both give the same output as the plain call."""
        x = unshuffle(x25, self.patch)
        t = t.expand(len(x)) if t.ndim == 1 and len(t) == 1 else t
        if t.ndim == 0:
            t = t.expand(len(x))
        if embedded_control is not None:
            down, mid = self._control_residuals(x, t, embedded_control)
        elif control is not None:
            down, mid = self.controlnet(x, t, controlnet_cond=control)
        else:
            down = mid = None
        if copies > 1:
            out = self._unet_shared_encoder(x, t, down, mid, copies)
        else:
            out = self.unet(x, t, down_block_additional_residuals=down,
                            mid_block_additional_residual=mid)
        return shuffle(out, self.patch)

    def _unet_shared_encoder(self, x: torch.Tensor, t: torch.Tensor,
                             down: Optional[list[torch.Tensor]], mid: Optional[torch.Tensor],
                             copies: int) -> torch.Tensor:
        """MONAI's `DiffusionModelUNet.forward` (1.x) for a batch of ``copies`` equal
        parts: time embedding, input convolution, down and middle blocks on the first part,
        repeated; then the control's residuals, the up blocks and the output on the whole
        batch. The time embedding is computed for the whole batch as MONAI does (its rows
        for the first part are the ones MONAI's encoder uses); no class labels or
        cross-attention context in this model. tests/test_immunodiff_parts.py checks it
        gives MONAI's output bit for bit."""
        from monai.networks.nets.diffusion_model_unet import get_timestep_embedding

        net = self.unet
        n = len(x) // copies
        if n * copies != len(x):
            raise ValueError(f"a batch of {len(x)} is not {copies} equal parts")
        emb = net.time_embed(get_timestep_embedding(t, net.block_out_channels[0]).to(x.dtype))
        h = net.conv_in(x[:n])
        skips = [h]
        for block in net.down_blocks:
            h, res = block(hidden_states=h, temb=emb[:n], context=None)
            skips.extend(res)
        h = net.middle_block(hidden_states=h, temb=emb[:n], context=None)
        skips = [s.repeat(copies, 1, 1, 1) for s in skips]
        h = h.repeat(copies, 1, 1, 1)
        if down is not None:
            skips = [s + r for s, r in zip(skips, down)]
        if mid is not None:
            h = h + mid
        for block in net.up_blocks:
            cut = -len(block.resnets)
            h = block(hidden_states=h, res_hidden_states_list=skips[cut:], temb=emb,
                      context=None)
            skips = skips[:cut]
        return net.out(h)

    def _control_residuals(self, x: torch.Tensor, t: torch.Tensor,
                           embedded: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """MONAI's `ControlNet.forward` (1.x: time embedding, input convolution plus the
        embedded control, down and middle blocks, the 1x1 control blocks) with the control
        embedded beforehand. Its conditioning scale is 1 (x * 1.0 is exact, so it is left
        out) and this model has no class labels or cross-attention context.
        tests/test_immunodiff_parts.py checks it gives MONAI's output bit for bit."""
        from monai.networks.nets.diffusion_model_unet import get_timestep_embedding

        net = self.controlnet
        emb = net.time_embed(get_timestep_embedding(t, net.block_out_channels[0]).to(x.dtype))
        h = net.conv_in(x)
        h += embedded
        residuals = [h]
        for block in net.down_blocks:
            h, res = block(hidden_states=h, temb=emb, context=None)
            residuals.extend(res)
        h = net.middle_block(hidden_states=h, temb=emb, context=None)
        down = [block(r) for r, block in zip(residuals, net.controlnet_down_blocks)]
        return down, net.controlnet_mid_block(h)
