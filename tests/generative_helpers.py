"""A micro configuration of the real generative code paths, for fast tests."""

from __future__ import annotations

import copy

import numpy as np

MICRO = {
    "name": "breast_micro",
    "family": "breast",
    "image_size": 16,
    "image_channels": 1,
    "unet": {
        "block_out_channels": [8, 16],
        "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"],
        "up_block_types": ["CrossAttnUpBlock2D", "UpBlock2D"],
        "layers_per_block": 1,
        "attention_head_dim": 4,
        "norm_num_groups": 4,
    },
    "controlnet": {"conditioning_embedding_out_channels": [8], "init_from_unet": True},
    "vae": None,
    "text": {"open_clip_model": "nacsim-micro-text",
             "text_cfg": {"context_length": 8, "vocab_size": 49408, "width": 16, "heads": 2,
                          "layers": 2, "embed_dim": 16},
             "token_embed_dim": 8, "random_init": True, "store_half": True},
    "scheduler": {"num_train_timesteps": 1000, "beta_schedule": "squaredcos_cap_v2",
                  "prediction_type": "v_prediction", "clip_sample": False},
    "train_unet_decoder": True,
    "training": {"stage1": {"steps": 2, "batch_size": 4, "lr": 1e-3},
                 "stage2": {"steps": 2, "batch_size": 4, "lr": 1e-3, "cond_drop_prob": 0.5},
                 "test_fraction": 0.25},
}


def micro_config(**overrides):
    config = copy.deepcopy(MICRO)
    config.update(overrides)
    return config


def micro_model(seed: int = 0, **overrides):
    import torch

    from napari_nacsim.science.generative.model import ControlledDiffusion

    torch.manual_seed(seed)
    model = ControlledDiffusion(micro_config(**overrides)).eval()
    # Zero-initialised ControlNet outputs would make every scenario look alike; give the
    # zero convs small random weights so that conditioning differences show in tests.
    with torch.no_grad():
        for name, p in model.controlnet.named_parameters():
            if "zero_conv" in name or "controlnet_down_blocks" in name or "controlnet_mid_block" in name:
                p.normal_(0, 0.3)
        for p in model.unet.conv_out.parameters():
            p.normal_(0, 0.3)
    return model


def scenarios(*times_pcr):
    return [{"time": t, "pCR": p, "HR": True, "HER2": False} for t, p in times_pcr]


def random_cohort(n: int = 6, size: int = 16, seed: int = 0):
    from napari_nacsim.core.schema import BREAST
    from napari_nacsim.science.generative.data import PairedCohort

    rng = np.random.default_rng(seed)
    images = rng.random((n, 3, size, size), dtype=np.float32)
    masks = (images > 0.8).astype(np.uint8)
    clinical = [{"pCR": bool(i % 2), "HR": bool(i % 3), "HER2": False} for i in range(n)]
    ids = [f"BR{i + 1:04d}" for i in range(n)]
    return PairedCohort(BREAST, ids, images, masks, clinical, (4.0, 4.0), [{} for _ in ids])


def saved_lung_micro_model(folder, **overrides):
    """A micro ImmunoDiff (config MICRO + ``overrides``) whose ControlNet and U-Net are
    nudged off their zero-initialised outputs (so the conditions change what it draws),
    saved to ``folder`` and loaded through the engine as a user's model would be."""
    import torch

    from napari_nacsim.engine import load_model
    from napari_nacsim.science.generative.immunodiff.checkpoint import save_checkpoint
    from napari_nacsim.science.generative.immunodiff.config import MICRO as LUNG_MICRO
    from napari_nacsim.science.generative.immunodiff.network import ImmunoDiff

    torch.manual_seed(0)
    net = ImmunoDiff({**LUNG_MICRO, **overrides})
    with torch.no_grad():
        for p in [*net.controlnet.parameters(), *net.unet.parameters()]:
            p.add_(0.05 * torch.randn_like(p))
    return load_model(save_checkpoint(net, folder, {"title": "ImmunoDiff micro (test)"}))


def synthetic_lung_crop(seed: int = 0):
    """A lung crop of the micro models' grid (16 x 96 x 96) in HU with a block of lobe and a
    band of vessels: ``(pre, lobes, vessels)`` as `immunodiff.sampling.generate` takes them."""
    rng = np.random.default_rng(seed)
    pre = rng.normal(-700, 200, (16, 96, 96)).astype(np.float32)
    lobes = np.zeros((16, 96, 96), np.uint8)
    lobes[:, 20:70, 10:45] = 1
    vessels = np.zeros_like(lobes)
    vessels[:, 40:44, 20:60] = 1
    return pre, lobes, vessels
