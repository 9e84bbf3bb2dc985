"""Up-block features of the frozen ImmunoDiff denoiser (the paper's f̂, Fig. 1.F).

What goes in: the pre-treatment crop (HU), its lobe and vessel masks and the patient's
clinical values, exactly as when the model generates a follow-up: the anatomy maps and the
cbi-Adapter's fused condition ĉ drive the ControlNet, whose residuals enter the frozen U-Net.
The U-Net's noisy input is the *pre-treatment* crop noised to timestep t with a fixed noise
draw (seed 0 for every patient, so feature differences come from the patient, not the noise);
for a model whose target is the change from the pre-treatment crop, "no change" noised the
same way (the pre-treatment crop then reaches the U-Net through the ControlNet only).

Choices (docs/lung-prediction.md says why):

- **t = 0.1 T** (100 of 1000 training steps): at small t the noisy input still shows the
  tumour and its surroundings, so the up-blocks carry image content *and* the conditioning;
  at large t the input is mostly noise and the features reflect little of the patient's
  image (feature-extraction studies of diffusion models, e.g. Baranchuk et al. 2022 and
  DDAE, find the most linearly separable up-block features at small-to-moderate t).
- **Pooling**: per up-block, the channel means over the whole crop (all slices, all
  positions) and over its centre (middle half of the slices, middle third in-plane). The
  crop is cut around the tumour's centre of mass, so the centre pool is a tumour pool
  without needing a segmentation, and the whole-crop pool keeps the tumour's size relative
  to the crop and the surroundings (vessels, lobe borders). Means, not maxima: stable with
  one noise draw.

Forward hooks on ``unet.up_blocks`` read the features; nothing in the model changes, and
the hooks are removed afterwards (also on error).

Variants (the ablations, run-time switches of the same trained model; see
`sampling.generate`'s ``use_adapter`` / ``use_anatomy``): ``full``; ``anatomy_only`` (the
ControlNet with the anatomy maps, no clinical / pre-image condition: the stage-1 model's
input); ``adapter_only`` (anatomy maps zeroed: the adapter's condition alone); ``base`` (the
frozen base DDPM, no ControlNet: Table 2's "DDPM").
"""

from __future__ import annotations

import contextlib
from typing import Any, Mapping

import numpy as np
import torch

from ...core.errors import InputError

VARIANTS = ("full", "anatomy_only", "adapter_only", "base")
TIMESTEP_FRACTION = 0.1
NOISE_SEED = 0


def feature_names(model) -> list[str]:
    """Names of the feature vector's entries (block, pool, channel)."""
    names = []
    for b, channels in enumerate(up_block_channels(model)):
        for pool in ("crop", "centre"):
            names += [f"up{b}_{pool}_{c}" for c in range(channels)]
    return names


def up_block_channels(model) -> list[int]:
    """Output channels of each U-Net up-block (MONAI builds them in reversed order)."""
    return [int(c) for c in reversed(model.config["unet"]["channels"])]


def timestep_of(model, fraction: float = TIMESTEP_FRACTION) -> int:
    total = int(model.config["diffusion"]["train_timesteps"])
    return int(min(total - 1, max(0, round(fraction * total))))


@contextlib.contextmanager
def _hooked(blocks):
    outputs: list[torch.Tensor] = []
    handles = [b.register_forward_hook(lambda _m, _i, out: outputs.append(out))
               for b in blocks]
    try:
        yield outputs
    finally:
        for h in handles:
            h.remove()


def _pool(h: torch.Tensor) -> torch.Tensor:
    """(Z, C, H, W) -> (2C,): whole-crop and centre channel means."""
    z, _, hh, ww = h.shape
    z0, z1 = z // 4, max(z // 4 + 1, z - z // 4)
    y0, y1 = hh // 3, max(hh // 3 + 1, hh - hh // 3)
    x0, x1 = ww // 3, max(ww // 3 + 1, ww - ww // 3)
    return torch.cat([h.mean(dim=(0, 2, 3)), h[z0:z1, :, y0:y1, x0:x1].mean(dim=(0, 2, 3))])


@torch.no_grad()
def extract(model, pre_hu: np.ndarray, lobes: np.ndarray, vessels: np.ndarray,
            clinical: Mapping[str, Any], *, variant: str = "full",
            timestep_fraction: float = TIMESTEP_FRACTION) -> np.ndarray:
    """The feature vector (float32, ``len(feature_names(model))``) of one patient."""
    from ..generative.immunodiff.config import hu_to_model
    from ..generative.immunodiff.sampling import condition_inputs, noise_schedule
    from ..generative.immunodiff.slices import with_neighbours

    if variant not in VARIANTS:
        raise InputError("feature variant", f"{variant!r} is not one of {', '.join(VARIANTS)}")
    grid = tuple(model.config["grid_shape"])
    param = next(model.parameters())
    dev, dtype = param.device, param.dtype
    z = grid[0]
    pre25, anatomy = condition_inputs(model, pre_hu, lobes, vessels)
    if variant == "adapter_only":
        anatomy = torch.zeros_like(anatomy)
    control = None
    if variant != "base":
        fused = None
        if variant in ("full", "adapter_only"):
            # an outcome input (lung: responder) is what the heads predict from these
            # features: it is always "not given" here, whatever ``clinical`` holds
            outcomes = set(model.config["adapter"].get("outcome_input") or ())
            given = {k: v for k, v in clinical.items() if k not in outcomes}
            values, codes, present = (t.to(dev) for t in model.adapter.encode([given]))
            sums = model.adapter.clinical(values.to(dtype), codes, present)
            fused = model.fused(pre25, sums[0][None].expand(z, -1))
        control = model.control(anatomy, fused)

    t = timestep_of(model, timestep_fraction)
    x0 = hu_to_model(torch.as_tensor(np.ascontiguousarray(pre_hu, np.float32))[None, None],
                     model.config)
    if model.config.get("target") == "change":
        # a change model denoises follow-up minus pre: its input is "no change" noised (as
        # where its sampling starts); the pre-treatment crop reaches it through the control
        x0 = torch.zeros_like(x0)
    noise = torch.randn(x0.shape, generator=torch.Generator("cpu").manual_seed(NOISE_SEED))
    timestep = torch.tensor([t])
    xt = noise_schedule(model.config).add_noise(x0, noise, timestep).to(dev, dtype)
    x25 = with_neighbours(xt, model.neighbours)
    with _hooked(model.unet.up_blocks) as outputs:
        model.denoise(x25, timestep.to(dev), control)
    if len(outputs) != len(model.unet.up_blocks):
        raise RuntimeError(f"expected {len(model.unet.up_blocks)} up-block outputs, got "
                           f"{len(outputs)}")
    return torch.cat([_pool(h.float()) for h in outputs]).cpu().numpy().astype(np.float32)
