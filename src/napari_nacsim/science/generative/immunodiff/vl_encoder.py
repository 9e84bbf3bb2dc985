"""Vessel and lobe (VL) encoders, their projection heads, and the InfoNCE loss.

Each encoder is a small CNN over a 2.5D mask slice (lobes: one-hot background + 5 lobes;
vessels: one channel; both with the neighbouring slices as channels) that keeps a spatial
feature map at the denoiser's grid (in-plane / ``patch``). The paper pools each encoder's
output (AvgPool -> h) and trains projection heads z = W2 ReLU(W1 h) with InfoNCE
(temperature 0.5; positives = the vessel and lobe masks of the same patient). It does not
say how the pooled embeddings become a *spatial* control for the ControlNet.

Our choice: the pooled vector is used only for the contrastive loss; the control is the
encoders' feature maps *before* pooling (Z_v ⊕ Z_l, concatenated along channels). Pooling
is a linear average of those maps, so the contrastive objective shapes exactly the features
that the ControlNet sees, while the maps keep where the vessels and lobe borders are —
broadcasting a pooled vector over the image would throw that location away, and anatomy
control is about location. The frozen maps are the control (the ControlNet's conditioning
embedding takes them at the denoiser's resolution).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

N_LOBE_CLASSES = 6  # background + RUL, RML, RLL, LUL, LLL (phantoms.lung.LOBE_LABELS)


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(8, channels), channels)


class MaskEncoder(nn.Module):
    """2.5D mask slice (B, C_in, H, W) -> feature map (B, F, H/patch, W/patch)."""

    def __init__(self, in_channels: int, channels: Sequence[int], feature_channels: int,
                 patch: int):
        super().__init__()
        c0, c1 = channels
        # GroupNorm matters here: the masks are sparse (vessels are ~0.1 % of a crop), and
        # without a norm the pooled features of every patient were nearly the bias alone
        # (measured: InfoNCE stayed at chance, ln 8 for a batch of 8; with it, it learns).
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, c0, 3, padding=1), _norm(c0), nn.SiLU(),
            nn.Conv2d(c0, c1, 3, stride=patch, padding=1) if patch > 1
            else nn.Conv2d(c0, c1, 3, padding=1), _norm(c1), nn.SiLU(),
            nn.Conv2d(c1, c1, 3, padding=1), _norm(c1), nn.SiLU(),
            nn.Conv2d(c1, feature_channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class ProjectionHead(nn.Module):
    """z = W2 ReLU(W1 h) (the paper's projection head)."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.w1 = nn.Linear(in_dim, in_dim)
        self.w2 = nn.Linear(in_dim, out_dim)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.w2(F.relu(self.w1(h)))


def info_nce(anchor: torch.Tensor, positive: torch.Tensor, temperature: float) -> torch.Tensor:
    """One-directional InfoNCE: row i of ``anchor`` should pick row i of ``positive`` among
    all rows (the other rows are the negatives). Cosine similarities / temperature, then
    cross-entropy (torch's, so the log-sum-exp is the library's stable one)."""
    a = F.normalize(anchor, dim=-1)
    p = F.normalize(positive, dim=-1)
    logits = a @ p.T / temperature
    return F.cross_entropy(logits, torch.arange(len(a), device=a.device))


def lobe_one_hot(lobes: torch.Tensor) -> torch.Tensor:
    """(B, 1, Z, H, W) labels 0..5 -> (B, 6, Z, H, W) float."""
    labels = lobes[:, 0].long().clamp(0, N_LOBE_CLASSES - 1)
    return F.one_hot(labels, N_LOBE_CLASSES).permute(0, 4, 1, 2, 3).float()


class VLEncoders(nn.Module):
    """The vessel and lobe encoders with their projection heads."""

    def __init__(self, cfg: dict, neighbours: int, patch: int):
        super().__init__()
        n = 2 * neighbours + 1
        self.vessel = MaskEncoder(n, cfg["channels"], cfg["feature_channels"], patch)
        self.lobe = MaskEncoder(N_LOBE_CLASSES * n, cfg["channels"], cfg["feature_channels"],
                                patch)
        self.vessel_head = ProjectionHead(cfg["feature_channels"], cfg["projection_dim"])
        self.lobe_head = ProjectionHead(cfg["feature_channels"], cfg["projection_dim"])
        self.temperature = float(cfg["temperature"])
        self.out_channels = 2 * cfg["feature_channels"]

    def maps(self, vessels: torch.Tensor, lobes: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """2.5D vessel slices (B, n, H, W) and one-hot lobe slices (B, 6n, H, W) -> the
        feature maps (Z_v, Z_l)."""
        return self.vessel(vessels), self.lobe(lobes)

    def control(self, vessels: torch.Tensor, lobes: torch.Tensor) -> torch.Tensor:
        """The anatomy control c_a = Z_v ⊕ Z_l (channels)."""
        return torch.cat(self.maps(vessels, lobes), dim=1)

    def contrastive_loss(self, vessels: torch.Tensor, lobes: torch.Tensor) -> torch.Tensor:
        """InfoNCE between the pooled, projected vessel and lobe embeddings of a batch whose
        rows are different patients (row i's vessels and lobes are the positive pair)."""
        z_v, z_l = self.maps(vessels, lobes)
        h_v, h_l = z_v.mean(dim=(2, 3)), z_l.mean(dim=(2, 3))   # AvgPool -> h
        return info_nce(self.vessel_head(h_v), self.lobe_head(h_l), self.temperature)
