"""Deterministic image-to-image baselines and the evaluation's tumour segmenter.

- `Pix2PixUNet`: the baseline a user might pick instead of diffusion: a pix2pix-style
  U-Net generator mapping (T0 image, scenario planes) -> follow-up image in one pass. It is
  trained with the L1 loss only (no discriminator), so it is deterministic and predicts the
  conditional *mean* follow-up.
- The same U-Net with one logit output is the small tumour segmenter the evaluation uses to
  measure tumour size on real and generated MIPs alike (a stand-in for the nnU-Net model).

Both are trained on the same training split as the diffusion model and saved as
safetensors + a JSON card with sha256 (loading verifies it).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from ...core.atomic import atomic_path, write_json_atomic
from ...core.errors import InputError
from ...core.checksum import file_sha256
from .data import PairedCohort


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.GroupNorm(4, cout), nn.SiLU(),
                         nn.Conv2d(cout, cout, 3, padding=1), nn.GroupNorm(4, cout), nn.SiLU())


class Pix2PixUNet(nn.Module):
    """A plain 3-level U-Net (skip connections), ``in_ch`` -> ``out_ch``."""

    def __init__(self, in_ch: int, out_ch: int, width: int = 16):
        super().__init__()
        w = width
        self.enc1, self.enc2, self.enc3 = _block(in_ch, w), _block(w, 2 * w), _block(2 * w, 4 * w)
        self.dec2, self.dec1 = _block(6 * w, 2 * w), _block(3 * w, w)
        self.out = nn.Conv2d(w, out_ch, 1)
        self.config = {"in_ch": in_ch, "out_ch": out_ch, "width": width}

    def forward(self, x):
        e1 = self.enc1(x)
        e2 = self.enc2(nn.functional.avg_pool2d(e1, 2))
        e3 = self.enc3(nn.functional.avg_pool2d(e2, 2))
        d2 = self.dec2(torch.cat([nn.functional.interpolate(e3, scale_factor=2), e2], 1))
        d1 = self.dec1(torch.cat([nn.functional.interpolate(d2, scale_factor=2), e1], 1))
        return self.out(d1)


def scenario_planes(cohort: PairedCohort, codes: list[list[float]], size: int) -> torch.Tensor:
    """Scenario codes (time index, factor values) -> constant planes: time one-hot + factors."""
    n_t = len(cohort.family.timepoint_names)
    rows = []
    for c in codes:
        onehot = [1.0 if int(c[0]) == k else 0.0 for k in range(n_t)]
        rows.append(onehot + [float(v) for v in c[1:]])
    planes = torch.tensor(rows, dtype=torch.float32)
    return planes[:, :, None, None].expand(-1, -1, size, size)


def _codes(cohort: PairedCohort, i: int, t: int) -> list[float]:
    clinical = cohort.clinical[i]
    return [float(t)] + [float(clinical[v.name]) for v in cohort.family.condition_variables]


def _augment_pair(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    k = int(torch.randint(0, 4, (1,), generator=g))
    x = torch.rot90(x, k, dims=(-2, -1))
    return torch.flip(x, dims=(-1,)) if bool(torch.randint(0, 2, (1,), generator=g)) else x


def _fit(net: nn.Module, *, steps: int, lr: float, seed: int,
         loss_at: Callable[[torch.Generator], torch.Tensor],
         log: Callable[[int, float], None] | None) -> nn.Module:
    """AdamW for ``steps`` steps; each step's random draws come from its own generator
    (``seed``, step), so a run is reproducible."""
    opt = torch.optim.AdamW(net.parameters(), lr=lr)
    for step in range(steps):
        loss = loss_at(torch.Generator().manual_seed(seed + step))
        opt.zero_grad()
        loss.backward()
        opt.step()
        if log:
            log(step, float(loss.detach()))
    return net.eval()


def train_pix2pix(cohort: PairedCohort, *, steps: int = 1500, batch: int = 16, lr: float = 1e-3,
                  seed: int = 0, log: Callable[[int, float], None] | None = None) -> Pix2PixUNet:
    torch.manual_seed(seed)
    n_factors = len(cohort.family.timepoint_names) + len(cohort.family.condition_variables)
    net = Pix2PixUNet(1 + n_factors, 1)
    images = torch.from_numpy(cohort.images).float()
    size = images.shape[-1]

    def loss_at(g: torch.Generator) -> torch.Tensor:
        idx = torch.randint(0, len(cohort), (batch,), generator=g)
        tp = torch.randint(0, images.shape[1], (batch,), generator=g)
        pair = _augment_pair(torch.stack([images[idx, 0], images[idx, tp]], 1), g)
        planes = scenario_planes(cohort, [_codes(cohort, int(i), int(t))
                                          for i, t in zip(idx, tp)], size)
        pred = net(torch.cat([pair[:, :1] * 2 - 1, planes], 1))
        return nn.functional.l1_loss(pred, pair[:, 1:] * 2 - 1)

    return _fit(net, steps=steps, lr=lr, seed=seed * 7919, loss_at=loss_at, log=log)


@torch.no_grad()
def pix2pix_predict(net: Pix2PixUNet, cohort: PairedCohort, t0: np.ndarray,
                    codes: list[list[float]]) -> np.ndarray:
    size = t0.shape[-1]
    x = torch.from_numpy(t0).float()[None, None].expand(len(codes), -1, -1, -1) * 2 - 1
    out = net(torch.cat([x, scenario_planes(cohort, codes, size)], 1))
    return ((out[:, 0] + 1) / 2).clamp(0, 1).numpy()


def train_segmenter(cohort: PairedCohort, *, steps: int = 1200, batch: int = 16,
                    lr: float = 2e-3, seed: int = 0,
                    log: Callable[[int, float], None] | None = None) -> Pix2PixUNet:
    """Tumour segmenter on every time point's MIP (BCE + soft Dice)."""
    torch.manual_seed(seed)
    net = Pix2PixUNet(1, 1)
    images = torch.from_numpy(cohort.images).float()
    masks = torch.from_numpy(cohort.masks).float()

    def loss_at(g: torch.Generator) -> torch.Tensor:
        idx = torch.randint(0, len(cohort), (batch,), generator=g)
        tp = torch.randint(0, images.shape[1], (batch,), generator=g)
        pair = _augment_pair(torch.stack([images[idx, tp], masks[idx, tp]], 1), g)
        logits = net(pair[:, :1] * 2 - 1)
        target = pair[:, 1:]
        prob = torch.sigmoid(logits)
        dice = 1 - (2 * (prob * target).sum() + 1) / (prob.sum() + target.sum() + 1)
        return nn.functional.binary_cross_entropy_with_logits(logits, target) + dice

    return _fit(net, steps=steps, lr=lr, seed=seed * 104729, loss_at=loss_at, log=log)


@torch.no_grad()
def segment(net: Pix2PixUNet, images: np.ndarray) -> np.ndarray:
    """(N, H, W) [0, 1] images -> (N, H, W) uint8 tumour masks."""
    x = torch.from_numpy(np.asarray(images, np.float32))[:, None] * 2 - 1
    return (net(x)[:, 0] > 0).numpy().astype(np.uint8)


def save_net(net: Pix2PixUNet, path: str | Path, card: dict[str, Any]) -> Path:
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(tmp))
    write_json_atomic(path.with_suffix(".json"), {**card, "config": net.config,
                                                  "sha256": file_sha256(path)})
    return path


def load_net(path: str | Path) -> tuple[Pix2PixUNet, dict[str, Any]]:
    from safetensors.torch import load_file

    path = Path(path)
    card = json.loads(path.with_suffix(".json").read_text())
    if file_sha256(path) != card["sha256"]:
        raise InputError(path, "sha256 does not match its card (corrupt or changed file)")
    net = Pix2PixUNet(**card["config"])
    net.load_state_dict(load_file(str(path)), strict=True)
    return net.eval(), card
