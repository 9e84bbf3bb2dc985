"""The diffusion training losses of both networks (the breast ControlNet model's
`generative.train` and the lung ImmunoDiff's `immunodiff.training`), written once: what the
denoiser learns to output, the tumour's weight in the loss, and the weighted MSE.
"""

from __future__ import annotations

import torch
from torch import nn


def prediction_target(scheduler, clean: torch.Tensor, noise: torch.Tensor,
                      t: torch.Tensor) -> torch.Tensor:
    """What the denoiser learns to output, by the noise schedule's ``prediction_type``: the
    noise ("epsilon"), the clean image ("sample") or the velocity ("v_prediction", diffusers'
    `get_velocity`). Why not always the noise: for a change target, mostly zero, a
    noise-prediction error is divided by sqrt(alpha_bar) in the clean estimate, so few-step
    sampling leaves visible noise (measured in docs/lung-model.md)."""
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        return noise
    if kind == "sample":
        return clean
    if kind == "v_prediction":
        return scheduler.get_velocity(clean, noise, t)
    raise ValueError(f"prediction_type {kind!r} is not epsilon, sample or v_prediction")


def tumour_weights(masks: torch.Tensor, weight: float, margin: int) -> torch.Tensor:
    """Per-pixel loss weights (B, 1, H, W): 1 outside, ``1 + weight`` inside the union of the
    tumour masks (B, K, H, W; e.g. the two visits' masks) grown by ``margin`` pixels (a
    square), so that a tumour of a few pixels, and the rim where shrinkage or growth shows,
    is not drowned by the rest of the image."""
    union = (masks > 0).any(1, keepdim=True).float()
    if margin > 0:
        union = nn.functional.max_pool2d(union, 2 * margin + 1, stride=1, padding=margin)
    return 1.0 + float(weight) * union


def weighted_mse(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None, *,
                 normalise: str = "sample", reduce: bool = True) -> torch.Tensor:
    """MSE with a per-pixel weight map (B, 1, H, W); ``None`` is the plain MSE.

    The weights are normalised so that the loss keeps the scale of a plain MSE, in one of two
    ways (each is what a trained model was trained with, so neither replaces the other):

    - ``"sample"`` (breast): per sample, so every sample counts the same whatever its
      tumour's size. A map on the image grid is pooled to the model's (smaller, latent)
      grid. ``reduce=False``: one value per sample (for per-timestep weighting).
    - ``"batch"`` (lung): over the whole batch, so a voxel counts the same wherever it is.
    """
    if normalise == "batch":
        if not reduce:
            raise ValueError("a loss normalised over the batch has no per-sample values")
        if weight is None:
            return nn.functional.mse_loss(pred, target)
        return (weight * (pred - target) ** 2).sum() / (weight.sum() * pred.shape[1])
    if normalise != "sample":
        raise ValueError(f"normalise {normalise!r} is not 'sample' or 'batch'")
    if weight is None:
        per_sample = ((pred - target) ** 2).flatten(1).mean(1)
        return per_sample.mean() if reduce else per_sample
    if weight.shape[-1] != pred.shape[-1]:
        weight = nn.functional.adaptive_avg_pool2d(weight, pred.shape[-2:])
    weight = weight.to(pred)
    per_pixel = ((pred - target) ** 2).mean(1, keepdim=True)
    per_sample = (per_pixel * weight).sum((1, 2, 3)) / weight.sum((1, 2, 3))
    return per_sample.mean() if reduce else per_sample
