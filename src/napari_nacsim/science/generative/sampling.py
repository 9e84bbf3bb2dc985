"""Our sampling loop around diffusers schedulers (the diffusers pipelines need
``transformers``; this does not).

- Samplers: those of `samplers` (``ddim``, the paper's, 200 steps by default; ``dpmpp``,
  ``unipc``; ``ddpm``, the ancestral one, 1000), derived from the training noise schedule.
- Several scenarios of one patient are one batch; they share the initial noise, so the
  generated images differ only by the scenario.
- Work that does not change across steps is done once: the clinical context, the empty-prompt
  context and the ControlNet's embedding of the control image.
- Classifier-free guidance (``guidance_scale != 1``) keeps the learned clinical tokens in the
  conditional branch; the unconditional branch replaces them with the empty prompt. (The NAC
  reference code's guidance built its conditional branch without the tokens, so guidance
  silently removed the clinical conditioning.)
- A model that generates the change (config ``target: change``) returns the pre-treatment
  image plus the generated change; the change is still sampled from noise, so samples differ.
- Initial noise comes from a CPU generator seeded with ``seed``, so a seed means the same
  noise on every device (the ancestral sampler's per-step noise too); on CPU, the same inputs
  and seed give bit-identical output.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import torch

from ...core.errors import InputError
from .model import ControlledDiffusion, fixed_control_embedding, latent_factor
from .samplers import ANCESTRAL, SAMPLERS, make_scheduler

DEFAULT_STEPS = {"ddim": 200, "dpmpp": 20, "unipc": 20, "ddpm": 1000}


@torch.no_grad()
def generate(model: ControlledDiffusion, control_image: torch.Tensor,
             scenarios: Sequence[Mapping[str, Any]], *, seed: int = 0, steps: int | None = None,
             sampler: str = "dpmpp", guidance_scale: float = 1.0,
             progress: Callable[[int, int], None] | None = None) -> torch.Tensor:
    """Generate one image per scenario from one pre-treatment image.

    ``control_image``: (C, H, W) or (1, C, H, W) in [0, 1] at the model's size, on the
    model's device. Returns (len(scenarios), C, H, W) float32 in [0, 1].
    """
    if sampler not in SAMPLERS:
        raise InputError("sampler", f"{sampler!r} is not one of {', '.join(SAMPLERS)}")
    steps = int(steps or DEFAULT_STEPS[sampler])
    if steps < 1:
        raise InputError("steps", f"{steps} must be at least 1")
    if not scenarios:
        raise InputError("scenarios", "at least one scenario is needed")
    param = next(model.unet.parameters())
    device, dtype = param.device, param.dtype
    if control_image.ndim == 3:
        control_image = control_image[None]
    size = model.config["image_size"]
    if control_image.shape[-2:] != (size, size) or control_image.shape[0] != 1:
        raise InputError("pre-treatment image", f"expected one {size}x{size} image, got "
                                                f"shape {tuple(control_image.shape)}")
    batch = len(scenarios)
    guided = guidance_scale != 1.0

    # Done once: contexts, control embedding, initial noise.
    context = model.conditioner.context(scenarios).to(dtype)
    null = model.conditioner.null_context(1).to(dtype)
    control = model.control_input(control_image.to(device, dtype))
    latent_size = size // latent_factor(model.config)
    channels = model.unet.config.in_channels
    generator = torch.Generator("cpu").manual_seed(int(seed))
    noise = torch.randn((1, channels, latent_size, latent_size), generator=generator)

    scheduler = make_scheduler(model.scheduler.config, sampler)
    scheduler.set_timesteps(steps, device=device)
    # the ancestral sampler draws fresh noise every step: from the seed too (reproducible)
    step_kw = {"generator": torch.Generator("cpu").manual_seed(int(seed) + 1)} \
        if sampler in ANCESTRAL else {}
    x = (noise * scheduler.init_noise_sigma).to(device, dtype).expand(batch, -1, -1, -1)
    x = x.contiguous()
    if guided:  # [conditional | unconditional] in one batch
        context_in = torch.cat([context, null.expand(batch, -1, -1)]).contiguous()
        n_in = 2 * batch
    else:
        context_in, n_in = context, batch
    # Materialised (not stride-0 views): convolutions on expanded views are very slow.
    null_in = null.expand(n_in, -1, -1).contiguous()
    control_in = control.expand(n_in, -1, -1, -1).contiguous()
    timesteps = scheduler.timesteps
    with fixed_control_embedding(model.controlnet, control_in):
        for i, t in enumerate(timesteps):
            x_in = torch.cat([x, x]) if guided else x
            x_in = scheduler.scale_model_input(x_in, t)
            out = model.denoise(x_in, t, context_in, null_in, control_in)
            if guided:
                cond, uncond = out.chunk(2)
                out = uncond + guidance_scale * (cond - uncond)
            x = scheduler.step(out, t, x, return_dict=False, **step_kw)[0]
            if progress:
                progress(i + 1, len(timesteps))
    return model.decode(x, control_image.to(device, dtype)).float()
