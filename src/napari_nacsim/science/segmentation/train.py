"""Train an nnU-Net tumour segmenter on nacsim cases, through nnU-Net's own stages.

``export -> fingerprint (+ nnU-Net's dataset integrity check) -> plan -> preprocess ->
train -> package``. Every stage is nnU-Net's API, in nnU-Net's folders
(``nnUNet_raw``/``_preprocessed``/``_results`` under a workspace), so a user can pick the
run up with nnU-Net's own commands (``nnUNetv2_train``, ``nnUNetv2_predict``) as well.

Two departures from ``nnUNetv2_train``, both for CPU practicality:
- the trainer is ``nnUNetTrainer_nacsimCPU`` by default: nnU-Net's trainer with a short,
  configurable schedule (`nnunet_trainers`);
- nnU-Net's final validation (predicting every validation case with test-time mirroring
  and worker processes) is skipped: with fold ``all`` it would predict the training set,
  and nacsim measures its models on held-out patients instead
  (``training/evaluate_segmenter.py``).

The trained checkpoint is then packaged in nacsim's pickle-free format (`model_files`)
with a model card that records the command, the data and the schedule.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import platform
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from ...core.errors import InputError
from ...core.model_input import ModelInput, SegmentationSpec
from ...core.schema import family_schema
from . import nnunet_env
from .dataset import Case, export_dataset, tumour_fraction
from .plans import CompactSettings

DEFAULT_TRAINER = "nnUNetTrainer_nacsimCPU"


@dataclasses.dataclass
class TrainingSettings:
    family: str                             # the family's name (dataset.json, model card)
    segmentation: SegmentationSpec | None   # the family's nnU-Net dataset and configuration
    input_spec: ModelInput                  # what the family's segmenter takes
    plan: str = "compact"                   # "compact" or "default" (nnU-Net's own)
    compact: CompactSettings = dataclasses.field(default_factory=CompactSettings)
    configuration: str | None = None        # default: 2d (breast MIPs), 3d_fullres (lung)
    trainer: str = DEFAULT_TRAINER
    fold: str = "all"                       # small sets: train on all cases
    epochs: int = 100
    iterations: int = 50                    # per epoch
    val_iterations: int = 5
    learning_rate: float = 1e-2
    device: str = "auto"
    dataset_id: int | None = None
    dataset_name: str | None = None
    processes: int | None = None            # nnU-Net preprocessing workers
    threads: int | None = None              # torch threads for training (default: torch's)
    gpus: int = 1                           # > 1: nnU-Net's own multi-GPU (DDP) training

    def __post_init__(self):
        self.family = family_schema(self.family).name
        if self.segmentation is None:
            raise InputError(f"{self.family} family", "has no nnU-Net segmentation settings")
        if self.plan not in ("compact", "default"):
            raise InputError("--plan", f"{self.plan!r} is not 'compact' or 'default'")
        # the family's nnU-Net configuration ("2d" for MIPs, "3d_fullres" for CT crops)
        self.configuration = self.configuration or self.segmentation.configuration
        for name in ("epochs", "iterations", "val_iterations"):
            if getattr(self, name) < 1:
                raise InputError(f"--{name.replace('_', '-')}", "must be at least 1")
        if not self.learning_rate > 0:
            raise InputError("--lr", "must be positive")
        if self.gpus < 1:
            raise InputError("--gpus", "must be at least 1")
        if self.fold != "all":
            try:
                int(self.fold)
            except ValueError:
                raise InputError("--fold", f"{self.fold!r} is not 'all' or a fold number") \
                    from None

    def schedule_environment(self) -> dict[str, str]:
        return {"NACSIM_NNUNET_EPOCHS": str(self.epochs),
                "NACSIM_NNUNET_ITERATIONS": str(self.iterations),
                "NACSIM_NNUNET_VAL_ITERATIONS": str(self.val_iterations),
                "NACSIM_NNUNET_LR": repr(float(self.learning_rate))}


def _run_settings(settings: TrainingSettings) -> dict[str, Any]:
    """The settings of the run as its model card records them: the family's own specs are
    recorded elsewhere in the card (``family``, ``input``), not repeated here."""
    recorded = dataclasses.asdict(settings)
    del recorded["segmentation"], recorded["input_spec"]
    return recorded


@contextlib.contextmanager
def _environment(values: dict[str, str]):
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _log_to_stderr(message: str) -> None:
    print(f"[train_segmenter] {message}", file=sys.stderr, flush=True)


def _machine() -> dict[str, Any]:
    import torch

    return {"platform": platform.platform(), "python": platform.python_version(),
            "cpu_cores": nnunet_env.cpu_count(), "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("nacsim", "nnunetv2", "torch", "dynamic_network_architectures"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


def _count_cases(folder: Path) -> int | None:
    import json

    try:
        return int(json.loads((folder / "dataset.json").read_text())["numTraining"])
    except (OSError, ValueError, KeyError):
        return None


def _exported_source(folder: Path) -> dict[str, Any] | None:
    """The data description an earlier export wrote into the raw ``dataset.json``."""
    import json

    try:
        nacsim = json.loads((folder / "dataset.json").read_text()).get("nacsim") or {}
    except (OSError, ValueError):
        return None
    source = nacsim.get("source") if isinstance(nacsim, dict) else None
    return dict(source) if isinstance(source, dict) and source else None


def _previous_run(settings: TrainingSettings, raw_root: Path) -> tuple[Path, dict, str]:
    """(raw dataset folder, plans, plans identifier) of the run ``resume`` continues."""
    import json

    from .plans import COMPACT_PLANS, DEFAULT_PLANS

    dataset_id = settings.dataset_id or settings.segmentation.dataset_id
    found = sorted(raw_root.glob(f"Dataset{dataset_id:03d}_*")) if raw_root.is_dir() else []
    if not found:
        raise InputError("--resume", f"no dataset {dataset_id} in {raw_root}: nothing to resume")
    identifier = COMPACT_PLANS if settings.plan == "compact" else DEFAULT_PLANS
    plans_file = Path(os.environ["nnUNet_preprocessed"]) / found[0].name / f"{identifier}.json"
    if not plans_file.is_file():
        raise InputError(plans_file, "missing: the run to resume was not planned yet")
    plans = json.loads(plans_file.read_text())
    if settings.configuration not in plans.get("configurations", {}):
        raise InputError("--configuration", f"{settings.configuration!r} is not in {plans_file}")
    return found[0], plans, identifier


def _unwrap(network):
    """The plain module under nnU-Net's optional DDP / torch.compile wrappers."""
    network = getattr(network, "module", network)      # DistributedDataParallel
    return getattr(network, "_orig_mod", network)      # torch.compile's OptimizedModule


def initialise_from_model(network, model_dir: str | os.PathLike,
                          configuration: str) -> dict[str, Any]:
    """Load the weights of a model in nacsim's format (e.g. a bundled model) into
    ``network`` before training: fine-tuning, like ``nnUNetv2_train -pretrained_weights``
    but from safetensors (hashes checked, no pickle). The architecture must be the same
    (every parameter name and shape); returns what the model card records about it."""
    from .model_files import read_model, weights_file

    model = read_model(model_dir)
    where = Path(model_dir)
    if model.configuration != configuration:
        raise InputError(where, f"is a {model.configuration!r} model; this run trains "
                                f"{configuration!r}")
    if len(model.parameters) != 1:
        raise InputError(where, f"has {len(model.parameters)} folds; initialise from a "
                                "single-fold model")
    state = model.parameters[0]
    target = _unwrap(network).state_dict()
    missing = sorted(set(target) - set(state))
    unexpected = sorted(set(state) - set(target))
    wrong = sorted(k for k in set(target) & set(state)
                   if tuple(target[k].shape) != tuple(state[k].shape))
    if missing or unexpected or wrong:
        detail = "; ".join(f"{what}: {', '.join(names[:3])}{' ...' if len(names) > 3 else ''}"
                           for what, names in (("missing", missing), ("unexpected", unexpected),
                                               ("other shape", wrong)) if names)
        raise InputError(where, f"its network does not match this run's plans ({detail})")
    _unwrap(network).load_state_dict(state, strict=True)
    fold = model.card["folds"][0]
    return {"model": str(where), "name": model.card.get("name"),
            "weights_sha256": model.card["files"][weights_file(fold)]["sha256"],
            "training": model.card.get("training"), "metrics": model.card.get("metrics")}


def training_commands(card_training: dict[str, Any] | None) -> list[str]:
    """Every command that produced a model, first to last (following ``init_from``)."""
    if not card_training:
        return []
    earlier = training_commands((card_training.get("init_from") or {}).get("training"))
    return earlier + ([card_training["command"]] if card_training.get("command") else [])


def check_gpus(gpus: int, device, init_from) -> None:
    """Refuse a multi-GPU run that cannot happen, before any data is prepared."""
    import torch

    if gpus < 1:
        raise InputError("--gpus", "must be at least 1")
    if gpus == 1:
        return
    if device.type != "cuda":
        raise InputError("--gpus", f"{gpus} GPUs asked for, but training would run on "
                                   f"{device}: nnU-Net trains on several GPUs with CUDA only")
    found = torch.cuda.device_count()
    if found < gpus:
        raise InputError("--gpus", f"{gpus} GPUs asked for, {found} CUDA GPU(s) found")
    if init_from is not None:
        raise InputError("--init-from", "fine-tuning runs on one GPU here: drop --gpus (or "
                                        "use nnUNetv2_train -num_gpus with -pretrained_weights)")


def _train_on_gpus(dataset_id: int, settings: TrainingSettings, fold, plans_identifier: str,
                   resume: bool, device, log: Callable[[str], None]):
    """nnU-Net's own multi-GPU training, as ``nnUNetv2_train ID CONFIG FOLD -num_gpus N``:
    nnunetv2's ``run_training(num_gpus=N)`` starts one process per GPU (DDP over NCCL; the
    plan's batch size is split over them, so a step sees the same batch as on one GPU) and
    validates at the end as nnU-Net does. The schedule environment (epochs, iterations)
    reaches the processes it spawns. Returns a trainer holding the final checkpoint (network
    and training log), as the one-GPU path leaves it."""
    from nnunetv2.run.run_training import (get_trainer_from_args, maybe_load_checkpoint,
                                           run_training)

    log(f"training on {settings.gpus} GPUs (nnU-Net's multi-GPU training)")
    run_training(str(dataset_id), settings.configuration, fold, settings.trainer,
                 plans_identifier, num_gpus=settings.gpus, continue_training=resume,
                 device=device)
    trainer = get_trainer_from_args(str(dataset_id), settings.configuration, fold,
                                    settings.trainer, plans_identifier,
                                    continue_training=True, device=device)
    maybe_load_checkpoint(trainer, True, False)  # checkpoint_final.pth of the GPU run
    return trainer


@dataclasses.dataclass
class _Dataset:
    """The nnU-Net dataset a run trains on: its raw folder, plans and what the data is."""

    folder: Path
    plans: dict
    plans_identifier: str
    data: dict[str, Any] | None       # the model card's data description

    @property
    def name(self) -> str:
        return self.folder.name

    @property
    def id(self) -> int:
        return _dataset_id(self.folder)


def _dataset_id(folder: Path) -> int:
    """The number of nnU-Net's dataset folder ``Dataset501_...``."""
    return int(folder.name[len("Dataset"):len("Dataset") + 3])


class _Stages:
    """Seconds per stage (the summary's ``timings_s``), logged as each stage ends."""

    def __init__(self, log: Callable[[str], None]):
        self.timings: dict[str, float] = {}
        self._log = log
        self._t0 = time.time()

    def done(self, name: str) -> None:
        self.timings[name] = round(time.time() - self._t0, 2)
        self._t0 = time.time()
        self._log(f"{name}: {self.timings[name]:.1f} s")


def train_segmenter(cases: Sequence[Case] | None, settings: TrainingSettings,
                    workspace: str | os.PathLike | None, *,
                    out: str | os.PathLike | None = None, command: str | None = None,
                    data: dict[str, Any] | None = None, overwrite: bool = False,
                    resume: bool = False, reuse: bool = False,
                    init_from: str | os.PathLike | None = None,
                    log: Callable[[str], None] = _log_to_stderr) -> dict[str, Any]:
    """Run all stages; returns a summary (folders, timings, final pseudo Dice). With
    ``out``, the trained model is also written there in nacsim's format.

    ``resume`` continues an interrupted run in the same workspace: export, planning and
    preprocessing are taken as done, and training goes on from nnU-Net's latest checkpoint
    (``checkpoint_latest.pth``, saved every 10 epochs) like ``nnUNetv2_train --c``.
    ``reuse`` also takes the workspace's export, plans and preprocessed data as done but
    starts a new training (a new schedule; the previous run's checkpoints in the results
    folder are replaced). ``init_from`` starts the network from a nacsim-format model's
    weights (fine-tuning) instead of nnU-Net's random initialisation."""
    if resume and init_from is not None:
        raise InputError("--init-from", "cannot be combined with --resume (the checkpoint "
                                        "being resumed holds the weights)")
    device, env = _configure(settings, workspace, init_from, log)
    # Imported only now: nnunetv2.configuration reads nnUNet_def_n_proc and the
    # augmentation processes at import (the stages import the rest of nnunetv2).
    import nnunetv2.configuration  # noqa: F401

    started = time.time()
    stages = _Stages(log)
    raw_root = Path(os.environ["nnUNet_raw"])
    if resume or reuse:
        dataset = _reopen(settings, raw_root, data)
    else:
        dataset = _prepare(cases, settings, raw_root, data, overwrite, stages)
    trainer, initialised = _train(dataset, settings, device, resume, init_from, log)
    stages.done("train")

    try:
        final_ema = float(trainer.logger.get_value("ema_fg_dice", step=-1))
    except (KeyError, IndexError, TypeError):
        final_ema = None
    summary: dict[str, Any] = {
        "dataset": dataset.name, "dataset_folder": str(dataset.folder),
        "results_folder": trainer.output_folder_base,
        "plans_identifier": dataset.plans_identifier,
        "configuration": settings.configuration, "fold": str(settings.fold),
        "trainer": settings.trainer, "device": str(device), "gpus": settings.gpus,
        "final_pseudo_dice_ema": final_ema,
        "timings_s": stages.timings, "duration_s": round(time.time() - started, 1),
        "init_from": initialised["model"] if initialised else None,
        "environment": {k: v for k, v in env.items() if not k.startswith("nnUNet_raw")},
    }
    if out is not None:
        from .model_files import convert_results_folder

        card = _model_card(out, dataset, settings, cases, command, resume, reuse,
                           initialised, summary)
        summary["model"] = str(convert_results_folder(trainer.output_folder_base, out,
                                                      card=card, folds=[settings.fold],
                                                      overwrite=overwrite))
        stages.done("package")
        summary["timings_s"] = stages.timings
    return summary


def _configure(settings: TrainingSettings, workspace: str | os.PathLike | None,
               init_from, log: Callable[[str], None]):
    """The device and nnU-Net's environment (folders, processes, trainers) of the run;
    (device, the environment as configured). Refuses GPUs that cannot be used and a run
    without nnU-Net's folders, before any work."""
    from .segmenter import resolve_device

    device = resolve_device(settings.device)
    if settings.gpus > 1:
        check_gpus(settings.gpus, device, init_from)
    env = nnunet_env.configure(
        workspace, training=True, gpu=device.type == "cuda", force_paths=workspace is not None,
        override={"nnUNet_def_n_proc": str(settings.processes)} if settings.processes else None)
    for name in nnunet_env.PATH_VARIABLES:
        if not os.environ.get(name):
            raise InputError(name, "is not set: give a workspace folder (--workspace)")
    log("nnU-Net environment: " + ", ".join(f"{k}={v}" for k, v in nnunet_env.describe().items()))
    if settings.trainer != DEFAULT_TRAINER:
        log(f"note: trainer {settings.trainer} ignores the nacsim schedule (--epochs etc.)")
    return device, env


def _reopen(settings: TrainingSettings, raw_root: Path,
            data: dict[str, Any] | None) -> _Dataset:
    """The workspace's exported, planned and preprocessed dataset (resume or reuse)."""
    folder, plans, plans_identifier = _previous_run(settings, raw_root)
    exported = _exported_source(folder)
    if exported:  # what the workspace's cases really are, whatever the arguments say
        data = {**(data or {}), **exported, "prepared_by_an_earlier_run": True}
    return _Dataset(folder, plans, plans_identifier, data)


def _prepare(cases: Sequence[Case] | None, settings: TrainingSettings, raw_root: Path,
             data: dict[str, Any] | None, overwrite: bool, stages: _Stages) -> _Dataset:
    """Export the cases to nnU-Net's raw format, then nnU-Net's fingerprint (with its
    dataset integrity check), plan and preprocessing."""
    from nnunetv2.experiment_planning.plan_and_preprocess_api import (
        extract_fingerprint_dataset, preprocess_dataset)

    from .plans import plan_dataset

    if not cases:
        raise InputError("training data", "no cases")
    n_proc = int(os.environ["nnUNet_def_n_proc"])
    folder = export_dataset(cases, raw_root, family=settings.family,
                            input_spec=settings.input_spec, segmentation=settings.segmentation,
                            dataset_id=settings.dataset_id, name=settings.dataset_name,
                            overwrite=overwrite, source=data or {})
    dataset_id = _dataset_id(folder)
    if overwrite:  # derived from the raw dataset just replaced
        for root in (os.environ["nnUNet_preprocessed"], os.environ["nnUNet_results"]):
            shutil.rmtree(Path(root) / folder.name, ignore_errors=True)
    stages.done("export")

    # nnU-Net's planner sets torch threads to nnUNet_n_proc_DA, which must be >= 1 then.
    planning_env = {"nnUNet_n_proc_DA": str(max(1, int(os.environ["nnUNet_n_proc_DA"])))}
    with _environment(planning_env):
        extract_fingerprint_dataset(dataset_id, num_processes=n_proc,
                                    check_dataset_integrity=True, clean=True,
                                    verbose=False, show_progress_bar=False)
        stages.done("fingerprint + integrity check")
        plans, plans_identifier = plan_dataset(
            dataset_id, settings.compact if settings.plan == "compact" else None)
        stages.done("plan")
    if settings.configuration not in plans["configurations"]:
        raise InputError("--configuration", f"{settings.configuration!r} was not planned "
                                            f"for this dataset (planned: "
                                            f"{', '.join(plans['configurations'])})")
    preprocess_dataset(dataset_id, plans_identifier, [settings.configuration], [n_proc],
                       verbose=False, show_progress_bar=False)
    stages.done("preprocess")
    return _Dataset(folder, plans, plans_identifier, data)


def _train(dataset: _Dataset, settings: TrainingSettings, device, resume: bool, init_from,
           log: Callable[[str], None]):
    """nnU-Net's training (on one device, or its own multi-GPU training), from its latest
    checkpoint with ``resume``, from a nacsim model's weights with ``init_from``; returns
    (the trainer holding the final network, what the model card records of ``init_from``
    or None)."""
    import torch
    from nnunetv2.run.run_training import get_trainer_from_args, maybe_load_checkpoint

    fold = settings.fold if settings.fold == "all" else int(settings.fold)
    if settings.threads:
        # On a busy 2-core machine one thread was 3-10x faster than two (measured: OpenMP
        # threads wait on each other while other processes hold the cores).
        torch.set_num_threads(settings.threads)
    initialised = None
    with _environment(settings.schedule_environment()):
        if settings.gpus > 1:
            return _train_on_gpus(dataset.id, settings, fold, dataset.plans_identifier,
                                  resume, device, log), None
        trainer = get_trainer_from_args(str(dataset.id), settings.configuration, fold,
                                        settings.trainer, dataset.plans_identifier,
                                        continue_training=resume, device=device)
        if resume:
            maybe_load_checkpoint(trainer, True, False)
            log(f"resumed at epoch {trainer.current_epoch}")
        if init_from is not None:  # as nnU-Net's run_training does for -pretrained_weights
            if not trainer.was_initialized:
                trainer.initialize()
            initialised = initialise_from_model(trainer.network, init_from,
                                                settings.configuration)
            log(f"network initialised from {init_from} "
                f"(weights sha256 {initialised['weights_sha256'][:12]})")
        trainer.run_training()
    return trainer, initialised


def _model_card(out: str | os.PathLike, dataset: _Dataset, settings: TrainingSettings,
                cases: Sequence[Case] | None, command: str | None, resume: bool, reuse: bool,
                initialised: dict[str, Any] | None, summary: dict[str, Any]) -> dict[str, Any]:
    """The card of the packaged model: what it segments, and how it was trained (command,
    data, settings, architecture, timings, machine and versions)."""
    data = dataset.data
    configuration = dataset.plans["configurations"][settings.configuration]
    architecture = configuration["architecture"]
    return {
        "name": Path(out).name if Path(out).name not in ("", ".") else dataset.name,
        "family": settings.family,
        "task": "tumour segmentation (labels: 0 background, 1 tumour)",
        "input": settings.input_spec.what,
        "intended_use": ("Measuring tumour size on nacsim model inputs. Trained on "
                         "synthetic phantoms only: not validated on patient data."
                         if (data or {}).get("synthetic") else
                         "Measuring tumour size on nacsim model inputs."),
        "training": {
            "command": command,
            "data": {**(data or {}), **(tumour_fraction(cases) if cases else
                                        {"cases": _count_cases(dataset.folder)})},
            "resumed": resume,
            "reused_workspace": reuse,
            "init_from": initialised,
            "commands": training_commands({"command": command, "init_from": initialised}),
            "settings": {**_run_settings(settings),
                         "compact": dataclasses.asdict(settings.compact)
                         if settings.plan == "compact" else None},
            "architecture": {"class": architecture["network_class_name"],
                             "features_per_stage": architecture["arch_kwargs"].get(
                                 "features_per_stage")},
            "patch_size": configuration["patch_size"],
            "batch_size": configuration["batch_size"],
            "final_pseudo_dice_ema_on_training_cases": summary["final_pseudo_dice_ema"],
            "duration_s": summary["duration_s"], "timings_s": summary["timings_s"],
            "machine": _machine(), "versions": _versions(),
        },
        "metrics": {},
    }
