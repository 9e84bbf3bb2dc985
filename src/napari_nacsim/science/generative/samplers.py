"""The samplers a generative model runs with, written once for both networks (the breast
ControlNet and the lung ImmunoDiff) and for every face that offers them (the CLI's
``--sampler`` choices, the workspace's and the inspector's combo boxes).

- ``ddim``: DDIM (the NAC paper: 200 steps; the lung model's few-step default).
- ``dpmpp``: DPM-Solver++ 2M.
- ``unipc``: UniPC.
- ``ddpm``: the ancestral sampler of the papers (use ~1000 steps); it draws fresh noise at
  every step, which the sampling loops draw from the seed too.

This module imports nothing heavy (the CLI reads the names when it builds its parser).
"""

from __future__ import annotations

SAMPLERS = ("ddim", "dpmpp", "unipc", "ddpm")
ANCESTRAL = ("ddpm",)   # samplers whose steps draw noise (the loops hand them a generator)


def make_scheduler(schedule, sampler: str, *, clip: float | None = None):
    """The diffusers scheduler that runs ``sampler`` on a model's training noise schedule
    (``schedule``: the config of its `DDPMScheduler`). Every sampler spaces its steps
    "trailing", so that the first step starts at the last training timestep.

    ``clip``: where the predicted clean image is clipped to +-``clip`` at every step (the
    lung model: its model units, `immunodiff.sampling`); None leaves it unclipped (the
    breast model's [-1, 1] images and latents)."""
    from diffusers import (DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler,
                           UniPCMultistepScheduler)

    from ...core.errors import InputError

    # clipping as each scheduler names it: a clip range (ddim, ddpm) or thresholding
    # at a maximum value (the multistep solvers)
    clipped = {"clip_sample": True, "clip_sample_range": clip} if clip is not None \
        else {"clip_sample": False}
    thresholded = {"thresholding": True, "sample_max_value": clip} if clip is not None \
        else {}
    if sampler == "ddim":
        return DDIMScheduler.from_config(schedule, **clipped, set_alpha_to_one=False,
                                         timestep_spacing="trailing")
    if sampler == "dpmpp":
        return DPMSolverMultistepScheduler.from_config(
            schedule, algorithm_type="dpmsolver++", solver_order=2, timestep_spacing="trailing",
            **thresholded)
    if sampler == "unipc":
        return UniPCMultistepScheduler.from_config(schedule, timestep_spacing="trailing",
                                                   **thresholded)
    if sampler == "ddpm":
        return DDPMScheduler.from_config(schedule, timestep_spacing="trailing", **clipped)
    raise InputError("sampler", f"{sampler!r} is not one of {', '.join(SAMPLERS)}")
