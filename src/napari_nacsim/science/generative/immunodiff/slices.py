"""The 2.5D layout: a crop (Z, H, W) as Z axial slices, each with its neighbours as channels.

Why 2.5D: a 3D U-Net over 16 x 96 x 96 is several times the cost of a 2D one per voxel on a
CPU, and the paper's own formulation (Conv2D, (h, w) rotary positions) is 2D. A 2D network
generating slices independently shows seams along z; here every slice's denoiser sees the
*current noisy estimates* of its neighbours (all slices are denoised together, one batch),
and the pre-treatment image, lobes and vessels of the neighbouring slices too. So the slices
of one crop are coupled at every sampling step, which is what keeps the volume consistent
(measured: adjacent-slice differences, docs/lung-model.md). Edge slices repeat themselves.

The in-plane grid is pixel-unshuffled by ``patch`` (96 x 96 x 1 -> 48 x 48 x 4): lossless,
and 4x cheaper convolutions (the patching of DiT/Imagen-style pixel models).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def with_neighbours(volume: torch.Tensor, k: int) -> torch.Tensor:
    """(B, C, Z, H, W) -> (B*Z, C*(2k+1), H, W): slice z with slices z-k..z+k (edges
    replicated), channel-major (all offsets of channel 0, then channel 1, ...)."""
    b, c, z, h, w = volume.shape
    if k == 0:
        return volume.permute(0, 2, 1, 3, 4).reshape(b * z, c, h, w)
    padded = torch.cat([volume[:, :, :1].expand(-1, -1, k, -1, -1), volume,
                        volume[:, :, -1:].expand(-1, -1, k, -1, -1)], dim=2)
    stack = torch.stack([padded[:, :, i:i + z] for i in range(2 * k + 1)], dim=2)
    return stack.permute(0, 3, 1, 2, 4, 5).reshape(b * z, c * (2 * k + 1), h, w)


def slices_of(volume: torch.Tensor, k: int, index: torch.Tensor) -> torch.Tensor:
    """The 2.5D slices ``index`` (one per volume) of (B, C, Z, H, W): (B, C*(2k+1), H, W)."""
    b, c, z, h, w = volume.shape
    offsets = torch.arange(-k, k + 1, device=volume.device)
    idx = (index[:, None].to(volume.device) + offsets).clamp(0, z - 1)        # (B, 2k+1)
    gathered = volume[torch.arange(b, device=volume.device)[:, None], :, idx]  # (B,2k+1,C,H,W)
    return gathered.permute(0, 2, 1, 3, 4).reshape(b, c * (2 * k + 1), h, w)


def unshuffle(x: torch.Tensor, patch: int) -> torch.Tensor:
    return F.pixel_unshuffle(x, patch) if patch > 1 else x


def shuffle(x: torch.Tensor, patch: int) -> torch.Tensor:
    return F.pixel_shuffle(x, patch) if patch > 1 else x


def to_volume(slices: torch.Tensor, batch: int) -> torch.Tensor:
    """(B*Z, C, H, W) -> (B, C, Z, H, W)."""
    bz, c, h, w = slices.shape
    return slices.reshape(batch, bz // batch, c, h, w).permute(0, 2, 1, 3, 4)
