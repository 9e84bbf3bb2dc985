"""The image baselines of Table 1: a small 3D CNN on the pre-treatment crop alone, or with
the clinical values (the paper's "+ C_X").

MONAI's `DenseNet` (3D; init_features 8, growth 8, blocks (2, 2, 2): ~27 k parameters,
trainable on a CPU) over the centre 16 x 48 x 48 voxels of the crop (144 mm in-plane; the
crop is cut around the tumour, whose largest diameter is 58 mm), averaged 2 x 2 in-plane
(16 x 24 x 24 at 4 x 6 x 6 mm: a quarter of the cost, the CPU budget of 600 patients x 5
folds x 2 models; the smallest tumour, 16 mm, still spans ~3 voxels), HU in
the lung window scaled to [0, 1]. One network, two outputs: the response logit (binary
cross-entropy) and the log hazard ratio (torchsurv's Cox partial likelihood), summed; with
clinical values, the CNN's embedding and the standardised clinical matrix feed the two
linear outputs. Adam, seeded; in-plane flips as augmentation.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import nn

CENTRE = (16, 48, 48)
WINDOW = (-1350.0, 150.0)   # lung window, HU


def image_tensor(crops_hu: np.ndarray) -> torch.Tensor:
    """(N, Z, H, W) HU -> (N, 1, 16, 24, 24) in [0, 1] (centre, 2 x 2 in-plane means)."""
    crops = np.asarray(crops_hu, np.float32)
    _, z, h, w = crops.shape
    cz, cy, cx = CENTRE
    z0, y0, x0 = (z - cz) // 2, (h - cy) // 2, (w - cx) // 2
    crops = crops[:, z0:z0 + cz, y0:y0 + cy, x0:x0 + cx]
    lo, hi = WINDOW
    x = torch.as_tensor(np.clip((crops - lo) / (hi - lo), 0, 1))[:, None]
    return torch.nn.functional.avg_pool3d(x, (1, 2, 2))


class ImageNet(nn.Module):
    def __init__(self, n_clinical: int = 0, embedding: int = 16):
        super().__init__()
        from monai.networks.nets import DenseNet

        self.cnn = DenseNet(spatial_dims=3, in_channels=1, out_channels=embedding,
                            init_features=8, growth_rate=8, block_config=(2, 2, 2), bn_size=2)
        self.out = nn.Linear(embedding + n_clinical, 2)
        self.register_buffer("clin_mean", torch.zeros(n_clinical))
        self.register_buffer("clin_scale", torch.ones(n_clinical))

    def forward(self, image: torch.Tensor, clinical: torch.Tensor | None = None):
        h = torch.relu(self.cnn(image))
        if clinical is not None and clinical.shape[1]:
            h = torch.cat([h, (clinical - self.clin_mean) / self.clin_scale], dim=1)
        out = self.out(h)
        return out[:, 0], out[:, 1]   # response logit, log hazard ratio


def fit_predict(train_images: torch.Tensor, train_y: Sequence[int], train_time, train_event,
                test_images: torch.Tensor, train_clinical: np.ndarray | None = None,
                test_clinical: np.ndarray | None = None, *, epochs: int = 15,
                batch: int = 16, lr: float = 1e-3, seed: int = 0
                ) -> tuple[np.ndarray, np.ndarray]:
    """Train on the training fold, return (response probability, log hazard) of the test
    fold."""
    from .heads import _cox_loss

    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    n_clin = 0 if train_clinical is None else train_clinical.shape[1]
    net = ImageNet(n_clin)
    ctr = cte = None
    if n_clin:
        ctr = torch.as_tensor(np.asarray(train_clinical, np.float32))
        cte = torch.as_tensor(np.asarray(test_clinical, np.float32))
        net.clin_mean.copy_(ctr.mean(0))
        net.clin_scale.copy_(ctr.std(0).clamp_min(1e-6))
    y = torch.as_tensor(np.asarray(train_y), dtype=torch.float32)
    t = torch.as_tensor(np.asarray(train_time, float), dtype=torch.float32)
    e = torch.as_tensor(np.asarray(train_event, bool))
    opt = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=1e-4)
    bce = nn.BCEWithLogitsLoss()
    n = len(y)
    for _ in range(int(epochs)):
        net.train()
        order = torch.randperm(n, generator=gen)
        for start in range(0, n, batch):
            idx = order[start:start + batch]
            if len(idx) < 2:
                continue
            x = train_images[idx]
            flip = torch.rand(2, generator=gen) < 0.5
            if flip[0]:
                x = x.flip(-1)
            if flip[1]:
                x = x.flip(-2)
            logit, risk = net(x, None if ctr is None else ctr[idx])
            loss = bce(logit, y[idx]) + _cox_loss(risk, e[idx], t[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    net.eval()
    with torch.no_grad():
        logit, risk = net(test_images, cte)
    return torch.sigmoid(logit).numpy().astype(float), risk.numpy().astype(float)
