"""Generating post-treatment crops: all slices of a crop are denoised together (one batch
of 2.5D slices per scenario, see `slices`), scenarios share the initial noise.

Samplers (`samplers`: diffusers schedulers derived from the training noise schedule; MONAI's
networks do not care which scheduler steps them): ``ddim`` (the default, few steps),
``dpmpp`` (DPM-Solver++ 2M), ``unipc``, and ``ddpm``, the paper-style ancestral sampler (use
1000 steps). Classifier-free guidance: the unconditional branch has every clinical variable
"missing" (their learned missing embeddings), the pre-treatment image and anatomy kept.
Initial noise is drawn on the CPU from ``seed`` (same noise on every device; bit-identical
output on CPU for the same inputs).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from ....core.errors import InputError
from ..samplers import ANCESTRAL, SAMPLERS, make_scheduler
from .compose import TumourRegion, compose
from .config import hu_to_model, model_to_hu
from .network import ImmunoDiff
from .reuse import Reuse, content_key, weights_version
from .slices import to_volume, with_neighbours
from .vl_encoder import lobe_one_hot

X0_CLIP = 1.8   # model units: HU 960 (air is -1, cortical bone ~1.6)


def noise_schedule(config: Mapping[str, Any]):
    from diffusers import DDPMScheduler

    d = config["diffusion"]
    return DDPMScheduler(num_train_timesteps=int(d["train_timesteps"]),
                         beta_schedule=d["beta_schedule"], beta_start=float(d["beta_start"]),
                         beta_end=float(d["beta_end"]), prediction_type=d["prediction_type"],
                         clip_sample=False)


def make_sampler(config: Mapping[str, Any], sampler: str):
    """``sampler`` (`samplers`) on this config's noise schedule. The predicted clean image is
    clipped to the CT's range in model units at every step: with this schedule the last
    timestep keeps sqrt(alpha_bar) = 0.012 of the image, so the first steps divide the
    noise-prediction error by ~80; unclipped, an error of a few percent there made the
    samples diverge (measured: HU std growing to ~3000)."""
    return make_scheduler(noise_schedule(config).config, sampler,
                          clip=float(config.get("x0_clip", X0_CLIP)))


def condition_inputs(model: ImmunoDiff, pre_hu: np.ndarray, lobes: np.ndarray,
                     vessels: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """(pre 2.5D slices in model scale (Z, n, H, W), anatomy control c_a (Z, C, h, w)).
    Refuses inputs that are not on the model's crop grid."""
    grid = tuple(model.config["grid_shape"])
    for name, arr in (("pre-treatment crop", pre_hu), ("lobe mask", lobes),
                      ("vessel mask", vessels)):
        if tuple(np.shape(arr)) != grid:
            raise InputError(name, f"has shape {tuple(np.shape(arr))}, the model's crop is "
                                   f"{grid}")
    param = next(model.parameters())
    dev, dtype = param.device, param.dtype
    k = model.neighbours

    def vol(a):
        return torch.as_tensor(np.ascontiguousarray(a, np.float32))[None, None].to(dev, dtype)

    pre = hu_to_model(vol(pre_hu), model.config)
    pre25 = with_neighbours(pre, k)
    anatomy = model.anatomy(with_neighbours(vol(vessels > 0), k),
                            with_neighbours(lobe_one_hot(vol(lobes)).to(dtype), k))
    return pre25, anatomy


@torch.no_grad()
def generate(model: ImmunoDiff, pre_hu: np.ndarray, lobes: np.ndarray, vessels: np.ndarray,
             scenarios: Sequence[Mapping[str, Any]], *, seed: int = 0, steps: int = 20,
             sampler: str = "ddim", guidance_scale: float = 1.0,
             progress: Callable[[int, int], None] | None = None,
             use_adapter: bool = True, use_anatomy: bool = True,
             strength: float | None = None,
             region: TumourRegion | None = None,
             reuse: Reuse | None = None) -> np.ndarray:
    """Post-treatment crops in HU, (len(scenarios), Z, H, W), from the pre-treatment crop
    (Z, H, W) in HU and its lobe (labels 0..5) and vessel masks on the same grid.
    ``use_adapter`` / ``use_anatomy`` False: the ablations (no clinical/pre-image condition;
    anatomy maps zeroed). ``strength`` (default: the config's ``init_strength``, else 1):
    where sampling starts. 1 = from pure noise; s < 1 = from the pre-treatment crop noised
    to the timestep at fraction s of the schedule, running only the last s x ``steps``
    steps (SDEdit-style initialisation, as in image-to-image pipelines): the follow-up keeps
    the pre-treatment anatomy and the denoiser, conditioned as usual, changes what the
    remaining noise level lets it change. With the config's ``target`` "change" the sampled
    quantity is the change from the pre-treatment crop (s < 1 starts from "no change"
    noised), and the result is the pre-treatment crop plus it. ``region`` (`compose`): the
    final crops keep the generated crop there and the pre-treatment crop elsewhere; None:
    the whole crop as generated. ``reuse`` (`reuse.Reuse`): what does not depend on the
    seed (the crop's conditions, the embedded control) is taken from there when an earlier
    call computed it, e.g. for the other samples of a comparison; same output."""
    if sampler not in SAMPLERS:
        raise InputError("sampler", f"{sampler!r} is not one of {', '.join(SAMPLERS)}")
    if int(steps) < 1:
        raise InputError("steps", f"{steps} must be at least 1")
    if not scenarios:
        raise InputError("scenarios", "at least one scenario is needed")
    grid = tuple(model.config["grid_shape"])
    if region is not None and tuple(region.weight.shape) != grid:
        raise InputError("composition region", f"has shape {tuple(region.weight.shape)}, the "
                                               f"model's crop is {grid}")
    param = next(model.parameters())
    dev, dtype = param.device, param.dtype
    b, z = len(scenarios), grid[0]
    guided = use_adapter and guidance_scale != 1.0
    n_branch = 2 if guided else 1

    def remember(*key: Any, compute: Callable[[], Any]) -> Any:
        return compute() if reuse is None else reuse.get(content_key(*key), compute)

    # what the conditions depend on besides the scenarios (hashed once, only when reused)
    inputs = None if reuse is None else content_key(weights_version(model), dev, dtype,
                                                    pre_hu, lobes, vessels)
    pre25, anatomy = remember("inputs", inputs,
                              compute=lambda: condition_inputs(model, pre_hu, lobes, vessels))
    encoded = model.adapter.encode(scenarios) if use_adapter else ()

    def fused(encoding):
        values, codes, present = (t.to(dev) for t in encoding)
        sums = model.adapter.clinical(values.to(dtype), codes, present)        # (B, ch)
        return torch.cat([model.fused(pre25, s[None].expand(z, -1)) for s in sums])

    def embedded_control() -> torch.Tensor:
        cond = None
        if use_adapter:
            cond = fused(encoded)
            if guided:
                cond = torch.cat([cond, fused(model.adapter.encode([{}] * b))])
        maps = anatomy if use_anatomy else torch.zeros_like(anatomy)
        return model.embed_control(model.control(maps.repeat(b * n_branch, 1, 1, 1), cond))

    # the control is the same at every step (and for every seed): embedded once
    embedded = remember("control", inputs, b, use_adapter, use_anatomy, guided, *encoded,
                        compute=embedded_control)

    generator = torch.Generator("cpu").manual_seed(int(seed))
    noise = torch.randn((1, 1) + grid, generator=generator)
    scheduler = make_sampler(model.config, sampler)
    scheduler.set_timesteps(int(steps), device=dev)
    # the ancestral sampler draws fresh noise every step: from the seed too (reproducible)
    step_kw = {"generator": torch.Generator("cpu").manual_seed(int(seed) + 1)} \
        if sampler in ANCESTRAL else {}
    strength = float(model.config.get("init_strength", 1.0) if strength is None else strength)
    if not 0.0 < strength <= 1.0:
        raise InputError("strength", f"{strength} must be in (0, 1]")
    timesteps = scheduler.timesteps
    pre = hu_to_model(torch.as_tensor(np.ascontiguousarray(pre_hu, np.float32)),
                      model.config)[None, None]
    change = model.config["target"] == "change"   # x is the change: follow-up - pre
    if strength < 1.0:
        keep = max(1, int(round(len(timesteps) * strength)))
        timesteps = timesteps[len(timesteps) - keep:]
        start = torch.zeros_like(pre) if change else pre   # "no change" / the pre crop
        x = scheduler.add_noise(start, noise, timesteps[:1].cpu()).to(dev, dtype)
    else:
        x = (noise * scheduler.init_noise_sigma).to(dev, dtype)
    x = x.expand(b, -1, -1, -1, -1).contiguous()
    if hasattr(scheduler, "_step_index"):   # multistep solvers index from the first step
        scheduler._step_index = None
        if hasattr(scheduler, "set_begin_index"):
            scheduler.set_begin_index(len(scheduler.timesteps) - len(timesteps))
    for i, t in enumerate(timesteps):
        x_in = scheduler.scale_model_input(x, t)
        x25 = with_neighbours(x_in, model.neighbours)
        if guided:
            x25 = torch.cat([x25, x25])
        # the network's output: noise, clean change or velocity (the config's prediction_type;
        # the scheduler reads it as such). At the first step every scenario and branch has
        # the same input (the shared noise): the U-Net's encoder runs once for them
        out = model.denoise(x25, t.reshape(1).to(dev), embedded_control=embedded,
                            copies=b * n_branch if i == 0 else n_branch)
        if guided:
            cond_out, uncond_out = out.chunk(2)
            out = uncond_out + guidance_scale * (cond_out - uncond_out)
        x = scheduler.step(to_volume(out, b), t, x, return_dict=False, **step_kw)[0]
        if progress:
            progress(i + 1, len(timesteps))
    x = x[:, 0].float()
    if change:
        x = x + pre[:, 0].to(x.device)
    out = model_to_hu(x, model.config).cpu().numpy()
    if region is not None:   # in HU, so that outside the region the input comes back exactly
        out = compose(pre_hu, out, region)
    return out
