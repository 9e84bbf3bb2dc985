"""training/train_nac.py on an 8-patient random cohort and the micro config, as a script
that ``accelerate launch`` can start in several processes (tests/test_train_multiprocess.py).

    accelerate launch --multi_gpu --num_processes 2 tests/train_nac_launch.py --cpu --out ...

Everything after the data and the config is the real entrypoint: argument parsing, process
state, the split, the trainer, the model card. `use_micro_setup` is also what the in-process
tests call, so both see the same cohort.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))


def use_micro_setup(patch=setattr):
    """Make train_nac.py read a random 8-patient cohort and the micro config; returns the
    script module. ``patch``: pytest's monkeypatch.setattr in a test (undone after it); the
    plain ``setattr`` in a launched process."""
    from generative_helpers import micro_config, random_cohort

    import napari_nacsim.science.generative.config as config_module
    import napari_nacsim.datasets.paired as data_module

    cohort = random_cohort(8)
    patch(data_module, "phantom_cohort", lambda *a, **k: cohort)
    patch(config_module, "load_config", lambda name: micro_config())
    spec = importlib.util.spec_from_file_location("train_nac", ROOT / "training" / "train_nac.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script


if __name__ == "__main__":
    sys.exit(use_micro_setup().main(sys.argv[1:]))
