"""Tumour segmentation with nnU-Net v2: datasets, training, bundled models, inference.

Modules, in the order of nnU-Net's own stages:

- `nnunet_env`      the environment variables nnU-Net reads, set up for this machine
- `dataset`         nacsim cases (model input + tumour mask) -> nnU-Net raw dataset (the
                    cases themselves are made by `napari_nacsim.datasets`, which knows the
                    families; here a family's specs come in as arguments)
- `plans`           nnU-Net's default plan and a compact one for small CPU models
- `nnunet_trainers` ``nnUNetTrainer_nacsimCPU``: nnU-Net's trainer on a short schedule
- `train`           export -> fingerprint -> plan -> preprocess -> train -> package
- `model_files`     nacsim's pickle-free model format; nnU-Net results folders
- `segmenter`       `TumourSegmenter`: one image in memory -> tumour mask `Scan`

Nothing here imports nnunetv2 at module import time: `nnunet_env.configure` must run
first (nnU-Net reads some settings once, when it is imported). Tumour sizes, deltas and
the NAC paper's size/match numbers are in `napari_nacsim.science.measure`.
"""

from __future__ import annotations

__all__ = ["TumourSegmenter", "load_segmenter"]


def __getattr__(name):  # lazy: importing the package must not import torch/nnunetv2
    if name in __all__:
        from . import segmenter

        return getattr(segmenter, name)
    raise AttributeError(name)
