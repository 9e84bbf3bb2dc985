"""The environment nnU-Net v2 reads, set up for the user.

nnU-Net is configured through environment variables, and some of them are read only once,
when ``nnunetv2.configuration`` is first imported (``nnUNet_def_n_proc``). So every nacsim
function that uses nnU-Net calls `configure` *before* importing anything from ``nnunetv2``,
and values a user has already exported are left alone.

==================== ================================================================
``nnUNet_raw``          raw datasets (``DatasetXXX_Name/imagesTr``, ``labelsTr``, ...)
``nnUNet_preprocessed`` fingerprints, plans and preprocessed arrays
``nnUNet_results``      trained models (``checkpoint_final.pth`` per fold)
``nnUNet_def_n_proc``   worker processes for preprocessing and export; also the torch
                        threads nnU-Net allows itself at inference (``min`` with the
                        current setting)
``nnUNet_n_proc_DA``    data-augmentation workers during training (0: in the main process)
``nnUNet_compile``      ``torch.compile`` the network; off on CPU (slow to compile, and
                        fragile with one or two cores)
``nnUNet_extTrainer``   folders searched for trainer classes that are not part of
                        nnunetv2: nacsim adds its own (`nnunet_trainers`) so that a model
                        trained with the short CPU trainer loads by name anywhere
==================== ================================================================
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import Iterator, Mapping

PATH_VARIABLES = ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")
TRAINERS_FOLDER = Path(__file__).resolve().parent / "nnunet_trainers"


def cpu_count() -> int:
    """Cores this process may use (the affinity mask, not the machine's total)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def suggested_settings(*, training: bool = False, gpu: bool = False) -> dict[str, str]:
    """Process counts suited to this machine.

    Preprocessing workers leave one core to the main process. Data augmentation runs in
    background workers only when there are cores to spare: on a 2-core machine a worker
    would fight the training step for the same cores, so it runs in the main process.
    """
    cores = cpu_count()
    n_proc = max(1, cores - 1)
    if gpu:
        n_da = min(12, max(1, cores - 1))  # nnU-Net's own default is 12 per GPU
    else:
        n_da = 0 if cores <= 2 else min(8, cores - 2)
    return {
        "nnUNet_def_n_proc": str(n_proc),
        "nnUNet_n_proc_DA": str(n_da if training else min(n_da, n_proc)),
        "nnUNet_compile": "f",
    }


def configure(root: str | os.PathLike | None = None, *, training: bool = False,
              gpu: bool = False, override: Mapping[str, str] | None = None,
              force_paths: bool = False) -> dict[str, str]:
    """Set the nnU-Net environment variables of this process; returns what was set.

    ``root`` gives the three data folders (``root/nnUNet_raw`` etc.); with ``force_paths``
    they replace folders the user had exported, otherwise those win. Process counts come
    from `suggested_settings` unless already set; ``override`` wins over everything.
    Our trainer folder is always appended to ``nnUNet_extTrainer``.
    """
    wanted: dict[str, str] = {}
    if root is not None:
        root = Path(root)
        for name in PATH_VARIABLES:
            if force_paths or name not in os.environ:
                wanted[name] = str(root / name)
    for name, value in suggested_settings(training=training, gpu=gpu).items():
        if name not in os.environ:
            wanted[name] = value
    wanted.update({k: str(v) for k, v in (override or {}).items()})

    ext = [p for p in os.environ.get("nnUNet_extTrainer", "").split(os.pathsep) if p]
    if str(TRAINERS_FOLDER) not in ext:
        wanted["nnUNet_extTrainer"] = os.pathsep.join([*ext, str(TRAINERS_FOLDER)])

    for name, value in wanted.items():
        os.environ[name] = value
    for name in PATH_VARIABLES:
        if name in wanted:
            Path(wanted[name]).mkdir(parents=True, exist_ok=True)
    _warn_if_frozen()
    return wanted


def _warn_if_frozen() -> None:
    """``nnUNet_def_n_proc`` is read once, at import; say so if it no longer applies."""
    module = sys.modules.get("nnunetv2.configuration")
    if module is None:
        return
    wanted = os.environ.get("nnUNet_def_n_proc")
    if wanted is not None and str(getattr(module, "default_num_processes", wanted)) != wanted:
        import warnings

        warnings.warn(f"nnunetv2 was imported before nacsim configured it: nnUNet_def_n_proc="
                      f"{wanted} is ignored in this process (nnU-Net uses "
                      f"{module.default_num_processes})", RuntimeWarning, stacklevel=3)


@contextlib.contextmanager
def nnunet_environment(root: str | os.PathLike | None = None, **options) -> Iterator[dict]:
    """`configure` for the duration of a ``with`` block, then restore the previous values
    (tests, or a training run inside a long-lived process such as napari)."""
    names = (*PATH_VARIABLES, "nnUNet_def_n_proc", "nnUNet_n_proc_DA", "nnUNet_compile",
             "nnUNet_extTrainer", *dict(options.get("override") or {}))
    saved = {name: os.environ.get(name) for name in names}
    try:
        yield configure(root, force_paths=root is not None, **options)
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def describe() -> dict[str, str | None]:
    """The nnU-Net variables as this process sees them (for logs and model cards)."""
    names = (*PATH_VARIABLES, "nnUNet_def_n_proc", "nnUNet_n_proc_DA", "nnUNet_compile",
             "nnUNet_extTrainer")
    return {name: os.environ.get(name) for name in names}
