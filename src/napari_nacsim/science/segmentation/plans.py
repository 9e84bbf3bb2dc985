"""nnU-Net plans: the default one, and a compact one that keeps a bundled model small.

nnU-Net's `ExperimentPlanner` sizes the U-Net for a GPU: 32 features in the first stage,
doubling per stage up to 512 (2D) / 320 (3D), and a batch as large as the GPU memory target
allows. That is tens of MB of weights and a slow CPU step. `CompactPlanner` is the same
planner (same patch size, spacing, normalisation, pooling) with fewer features per stage
and a capped batch size, which is what the bundled models use. Users with a GPU and real
data should use the default plan (``--plan default`` in ``training/train_segmenter.py``).

Planning goes through nnU-Net's own API: nnU-Net's command-line planner only finds planner
classes inside the nnunetv2 package, so nacsim instantiates its planner directly.
"""

from __future__ import annotations

import dataclasses

DEFAULT_PLANS = "nnUNetPlans"
COMPACT_PLANS = "nnUNetPlans_nacsimCompact"


@dataclasses.dataclass(frozen=True)
class CompactSettings:
    base_features: int = 16      # features of the first stage (nnU-Net: 32)
    max_features: int = 128      # cap on features per stage (nnU-Net: 512 in 2D, 320 in 3D)
    max_batch_size: int = 8      # cap on the planned batch size (CPU step time)
    min_edge_length: int = 4     # smallest feature map edge; larger = fewer stages
    # nnU-Net computes the Dice loss over the whole batch in 2D ("batch_dice"), so large
    # tumours dominate it; per-image Dice weighs a faded follow-up tumour like a large one.
    batch_dice: bool = False

    def __post_init__(self):
        for field in dataclasses.fields(self):
            if field.name != "batch_dice" and getattr(self, field.name) < 1:
                raise ValueError(f"compact plan: {field.name} must be >= 1")


def planner_class(settings: CompactSettings | None):
    """nnU-Net's `ExperimentPlanner` (``settings`` None) or the compact variant."""
    from nnunetv2.experiment_planning.experiment_planners.default_experiment_planner import \
        ExperimentPlanner

    if settings is None:
        return ExperimentPlanner

    class CompactPlanner(ExperimentPlanner):
        def __init__(self, dataset_name_or_id, gpu_memory_target_in_gb: float = 8,
                     preprocessor_name: str = "DefaultPreprocessor",
                     plans_name: str = COMPACT_PLANS, overwrite_target_spacing=None,
                     suppress_transpose: bool = False):
            super().__init__(dataset_name_or_id, gpu_memory_target_in_gb, preprocessor_name,
                             plans_name, overwrite_target_spacing, suppress_transpose)
            self.UNet_base_num_features = settings.base_features
            self.UNet_max_features_2d = settings.max_features
            self.UNet_max_features_3d = settings.max_features
            self.UNet_featuremap_min_edge_length = settings.min_edge_length

        def get_plans_for_configuration(self, *args, **kwargs) -> dict:
            plan = super().get_plans_for_configuration(*args, **kwargs)
            plan["batch_size"] = int(min(plan["batch_size"], settings.max_batch_size))
            return plan

        def plan_experiment(self):
            plans = super().plan_experiment()
            for configuration in plans["configurations"].values():
                if "batch_dice" in configuration:
                    configuration["batch_dice"] = bool(settings.batch_dice)
            # Say in the plans how they were made (nnU-Net ignores unknown keys).
            plans["nacsim_compact_plan"] = dataclasses.asdict(settings)
            self.plans = plans
            self.save_plans(plans)
            return plans

    return CompactPlanner


def plan_dataset(dataset_id: int, settings: CompactSettings | None = None,
                 gpu_memory_target_gb: float | None = None) -> tuple[dict, str]:
    """Write the plans of an already fingerprinted dataset; returns (plans, identifier)."""
    cls = planner_class(settings)
    kwargs = {"plans_name": COMPACT_PLANS if settings is not None else DEFAULT_PLANS}
    if gpu_memory_target_gb is not None:
        kwargs["gpu_memory_target_in_gb"] = gpu_memory_target_gb
    planner = cls(dataset_id, **kwargs)
    plans = planner.plan_experiment()
    return plans, planner.plans_identifier
