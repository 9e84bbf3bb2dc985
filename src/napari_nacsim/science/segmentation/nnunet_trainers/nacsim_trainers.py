"""Short training schedules that make nnU-Net practical on a CPU.

nnU-Net's default is 1000 epochs of 250 iterations (days on a CPU), and even
``nnUNetTrainer_1epoch`` runs 250 iterations. These trainers read their schedule from
environment variables, so one class name (the one stored in a checkpoint and looked up at
inference) covers the 2-iteration CI run and the bundled models' training alike:

=============================== ======= ====================================================
``NACSIM_NNUNET_EPOCHS``          100    epochs (the poly learning-rate schedule spans them)
``NACSIM_NNUNET_ITERATIONS``       50    training iterations per epoch
``NACSIM_NNUNET_VAL_ITERATIONS``    5    validation iterations per epoch (pseudo Dice only)
``NACSIM_NNUNET_LR``             0.01    initial learning rate (nnU-Net's default)
``NACSIM_NNUNET_SAVE_EVERY``       10    epochs between ``checkpoint_latest.pth`` saves
=============================== ======= ====================================================

The network architecture is nnU-Net's own (built from the plans), so a model trained with
these classes predicts exactly like one trained with ``nnUNetTrainer``.

Self-contained on purpose: nnU-Net imports this file as a top-level module through
``nnUNet_extTrainer`` (absolute imports only, nothing from nacsim).
"""

import os

import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

SCHEDULE_VARIABLES = {
    "NACSIM_NNUNET_EPOCHS": ("num_epochs", int, 100),
    "NACSIM_NNUNET_ITERATIONS": ("num_iterations_per_epoch", int, 50),
    "NACSIM_NNUNET_VAL_ITERATIONS": ("num_val_iterations_per_epoch", int, 5),
    "NACSIM_NNUNET_LR": ("initial_lr", float, 1e-2),
    "NACSIM_NNUNET_SAVE_EVERY": ("save_every", int, 10),
}


def _schedule_value(variable, cast, default):
    text = os.environ.get(variable, "").strip()
    if not text:
        return default
    try:
        value = cast(text)
    except ValueError:
        raise ValueError(f"{variable}={text!r} is not a valid {cast.__name__}") from None
    if value <= 0:
        raise ValueError(f"{variable}={text!r} must be positive")
    return value


class nnUNetTrainer_nacsimCPU(nnUNetTrainer):
    """nnUNetTrainer with an environment-configurable (short) schedule."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        for variable, (attribute, cast, default) in SCHEDULE_VARIABLES.items():
            setattr(self, attribute, _schedule_value(variable, cast, default))
        self.print_to_log_file(
            "nacsim schedule: " + ", ".join(f"{a}={getattr(self, a)}"
                                            for a, _, _ in SCHEDULE_VARIABLES.values()),
            also_print_to_console=False)

