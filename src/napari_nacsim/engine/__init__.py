"""The what-if service: a case + scenarios -> generated follow-up images with provenance.

Used identically by the CLI, the napari widgets and the evaluation. A model family is a
plug-in: a checkpoint folder whose model card names its family (schema) and config.
"""

from .whatif import (BUNDLED_MODELS, WhatIfModel, bundled_model_path, load_model,
                     parse_scenario, sample_case, simulate)

__all__ = ["BUNDLED_MODELS", "WhatIfModel", "bundled_model_path", "load_model",
           "parse_scenario", "sample_case", "simulate"]
