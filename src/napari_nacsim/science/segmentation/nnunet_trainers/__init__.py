"""nnU-Net trainer classes of nacsim.

This folder is put on ``nnUNet_extTrainer`` (see `..nnunet_env`), where nnU-Net imports
every module in it *as a top-level module*: modules here must use absolute imports only
and import nothing from nacsim.
"""

from .nacsim_trainers import (  # noqa: F401
    SCHEDULE_VARIABLES,
    nnUNetTrainer_nacsimCPU,
)
