"""Segmentation model files: nacsim's pickle-free format, and nnU-Net's own results folders.

nacsim's format (the bundled models are in it) is a folder of data only::

    model.json            model card: what, how trained (command, data, time), metrics,
                          and the sha256 of every other file
    plans.json            nnU-Net plans (architecture, patch size, spacing, normalisation)
    dataset.json          nnU-Net dataset description (channels, labels)
    fold_<f>.safetensors  network weights, one file per fold

Loading never unpickles: the network is rebuilt from the plans with nnU-Net's own code (the
trainer's ``build_network_architecture``) and the weights are read with ``safetensors``.
Hashes are checked first, and the plans may only name network classes from
``dynamic_network_architectures`` and layers from ``torch.nn`` (nnU-Net instantiates
whatever class the plans name).

A user's nnU-Net results folder (``.../<Trainer>__<Plans>__<configuration>/fold_X/
checkpoint_final.pth``) holds pickles. They are read with ``torch.load(weights_only=True)``,
allowing only numpy scalar types besides tensors (nnU-Net stores its logged metrics as numpy
scalars); a checkpoint that needs more can run arbitrary code when unpickled, so it is
loaded only with an explicit ``trust_pickle=True``.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import pickle
from pathlib import Path
from typing import Any, Sequence

from ...core.atomic import atomic_directory, write_json_atomic
from ...core.checksum import file_sha256
from ...core.errors import InputError

FORMAT = "nacsim-nnunet-model"
VERSION = 1
CARD = "model.json"
ALLOWED_CLASS_PREFIXES = ("dynamic_network_architectures.", "torch.nn.")


@dataclasses.dataclass
class LoadedModel:
    """Everything `nnUNetPredictor.manual_initialization` needs, plus where it came from."""

    plans: dict
    dataset_json: dict
    configuration: str
    trainer_name: str
    parameters: list[dict]               # one state dict per fold
    mirroring_axes: tuple[int, ...] | None
    source: Path
    card: dict[str, Any]


sha256 = file_sha256  # the name used throughout this module


def _read_json(path: Path, what: str) -> dict:
    try:
        payload = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(path, f"{what} is missing") from None
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise InputError(path, f"{what} is not valid JSON ({err})") from None
    if not isinstance(payload, dict):
        raise InputError(path, f"{what} is not a JSON object")
    return payload


def check_plans_classes(plans: dict, configuration: str, where: Path) -> None:
    """Refuse plans that would make nnU-Net import and instantiate arbitrary classes."""
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    try:
        manager = PlansManager(plans).get_configuration(configuration)
        arch = manager.network_arch_init_kwargs
        names = [manager.network_arch_class_name]
        names += [arch[k] for k in manager.network_arch_init_kwargs_req_import if arch.get(k)]
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        raise InputError(where, f"plans have no usable configuration {configuration!r} "
                                f"({type(err).__name__}: {err})") from None
    for name in names:
        if not isinstance(name, str) or not name.startswith(ALLOWED_CLASS_PREFIXES):
            raise InputError(where, f"plans name the class {name!r}; nacsim only builds networks "
                                    "from dynamic_network_architectures and torch.nn")


# --- nacsim's format -------------------------------------------------------------------------

def weights_file(fold: str | int) -> str:
    return f"fold_{fold}.safetensors"


def _deduplicate(state: dict) -> tuple[dict, dict[str, list[str]]]:
    """nnU-Net's U-Net reaches the same parameter under several names (``encoder.*`` and
    ``decoder.encoder.*``, ``conv`` and ``all_modules.0``). safetensors stores each tensor
    once: keep one name per shared tensor and record the others as aliases."""
    groups: dict[tuple, list[str]] = {}
    for name, tensor in state.items():
        if tensor.numel() == 0:
            key: tuple = ("empty", name)
        else:
            key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(),
                   tuple(tensor.shape), tuple(tensor.stride()), tensor.dtype)
        groups.setdefault(key, []).append(name)
    kept, aliases = {}, {}
    for names in groups.values():
        main = min(names, key=lambda n: (n.startswith("decoder.encoder."),
                                         n.count("all_modules"), len(n), n))
        kept[main] = state[main]
        others = sorted(n for n in names if n != main)
        if others:
            aliases[main] = others
    return kept, aliases


def _load_weights(path: Path) -> dict:
    from safetensors import safe_open

    state = {}
    with safe_open(str(path), framework="pt", device="cpu") as f:
        metadata = f.metadata() or {}
        for name in f.keys():
            state[name] = f.get_tensor(name)
    try:
        aliases = json.loads(metadata.get("aliases") or "{}")
    except ValueError:
        raise InputError(path, "weights metadata 'aliases' is not valid JSON") from None
    for main, others in aliases.items():
        if main not in state:
            raise InputError(path, f"alias target {main!r} is not in the weights")
        for other in others:
            state[other] = state[main]
    return state


def write_model(out_dir: str | os.PathLike, *, plans: dict, dataset_json: dict,
                configuration: str, trainer_name: str, parameters: dict[str, dict],
                mirroring_axes: Sequence[int] | None, card: dict[str, Any],
                overwrite: bool = False) -> Path:
    """Write a model in nacsim's format (``parameters``: fold -> state dict); returns the
    folder. Built under a temporary name and renamed into place."""
    import torch
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise InputError(out_dir, "already exists and is not empty (allow overwrite)")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with atomic_directory(out_dir) as staging:
        (staging / "plans.json").write_text(json.dumps(plans, indent=2) + "\n")
        (staging / "dataset.json").write_text(json.dumps(dataset_json, indent=2) + "\n")
        for fold, state in parameters.items():
            kept, aliases = _deduplicate(state)
            tensors = {k: v.detach().to("cpu", torch.float32).contiguous()
                       if v.is_floating_point() else v.detach().cpu().contiguous()
                       for k, v in kept.items()}
            save_file(tensors, str(staging / weights_file(fold)),
                      metadata={"format": "pt", "nacsim": FORMAT, "fold": str(fold),
                                "aliases": json.dumps(aliases, sort_keys=True)})
        files = sorted(p.name for p in staging.iterdir())
        full_card = {
            "format": FORMAT,
            "version": VERSION,
            **card,
            "trainer": trainer_name,
            "configuration": configuration,
            "plans_identifier": plans.get("plans_name"),
            "folds": [str(f) for f in parameters],
            "inference_allowed_mirroring_axes": list(mirroring_axes) if mirroring_axes else None,
            "files": {name: {"sha256": sha256(staging / name),
                             "bytes": (staging / name).stat().st_size} for name in files},
            "written_at": datetime.datetime.now(datetime.timezone.utc)
                                  .isoformat(timespec="seconds"),
        }
        write_json_atomic(staging / CARD, full_card)
        _make_readable(staging)
    return out_dir


def _make_readable(folder: Path) -> None:
    """Temporary files and folders are private (0600/0700); a model is shipped data."""
    umask = os.umask(0)
    os.umask(umask)
    folder.chmod(0o777 & ~umask)
    for path in folder.iterdir():
        path.chmod(0o666 & ~umask)


def is_nacsim_model(folder: str | os.PathLike) -> bool:
    return (Path(folder) / CARD).is_file()


def verify_files(folder: str | os.PathLike) -> dict[str, Any]:
    """Read the model card and check every file's sha256; returns the card."""
    folder = Path(folder)
    card = _read_json(folder / CARD, "model card")
    if card.get("format") != FORMAT:
        raise InputError(folder / CARD, f"not a nacsim segmentation model (expected "
                                        f"\"format\": \"{FORMAT}\")")
    if card.get("version") != VERSION:
        raise InputError(folder / CARD, f"model format version {card.get('version')!r} is not "
                                        f"supported (this nacsim reads version {VERSION})")
    files = card.get("files")
    if not isinstance(files, dict) or not files:
        raise InputError(folder / CARD, "lists no files")
    for name, info in files.items():
        path = folder / name
        if Path(name).name != name:
            raise InputError(folder / CARD, f"file name {name!r} is not a plain name")
        if not path.is_file():
            raise InputError(path, "listed in the model card but missing")
        expected = (info or {}).get("sha256") if isinstance(info, dict) else None
        if not expected or sha256(path) != expected:
            raise InputError(path, "sha256 does not match the model card: the file is damaged "
                                   "or was changed after the model was written")
    return card


def read_model(folder: str | os.PathLike) -> LoadedModel:
    """Load a model in nacsim's format (no pickle anywhere)."""
    from safetensors import SafetensorError

    folder = Path(folder)
    card = verify_files(folder)
    for key in ("trainer", "configuration", "folds"):
        if not card.get(key):
            raise InputError(folder / CARD, f"has no {key!r}")
    plans = _read_json(folder / "plans.json", "nnU-Net plans")
    dataset_json = _read_json(folder / "dataset.json", "nnU-Net dataset description")
    configuration = str(card["configuration"])
    check_plans_classes(plans, configuration, folder / "plans.json")
    parameters = []
    for fold in card["folds"]:
        path = folder / weights_file(fold)
        if path.name not in card["files"]:
            raise InputError(path, "weights are not listed (with a hash) in the model card")
        try:
            parameters.append(_load_weights(path))
        except (SafetensorError, OSError, ValueError) as err:
            raise InputError(path, f"cannot read safetensors weights ({err})") from None
    axes = card.get("inference_allowed_mirroring_axes")
    return LoadedModel(plans=plans, dataset_json=dataset_json, configuration=configuration,
                       trainer_name=str(card["trainer"]), parameters=parameters,
                       mirroring_axes=tuple(axes) if axes else None, source=folder, card=card)


# --- nnU-Net results folders -----------------------------------------------------------------

def _numpy_safe_globals() -> list:
    """numpy scalar and dtype reconstructors: data, not code (nnU-Net logs metrics as numpy
    scalars). Both module spellings, since numpy 2 renamed numpy.core to numpy._core."""
    import numpy as np

    try:
        scalar = np._core.multiarray.scalar
    except AttributeError:  # numpy 1.x
        scalar = np.core.multiarray.scalar
    allowed: list = [(scalar, "numpy.core.multiarray.scalar"),
                     (scalar, "numpy._core.multiarray.scalar"), np.dtype]
    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None:
        for name in ("Float16DType", "Float32DType", "Float64DType", "Int8DType", "Int16DType",
                     "Int32DType", "Int64DType", "UInt8DType", "UInt16DType", "UInt32DType",
                     "UInt64DType", "BoolDType"):
            if hasattr(dtypes, name):
                allowed.append(getattr(dtypes, name))
    return allowed


class UntrustedPickleError(InputError):
    """A checkpoint that cannot be read without full unpickling."""


def load_checkpoint(path: str | os.PathLike, *, trust_pickle: bool = False) -> dict:
    """Read an nnU-Net ``checkpoint_*.pth``: restricted unpickling (tensors, containers,
    numpy scalars) first; full unpickling only with ``trust_pickle``."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise InputError(path, "checkpoint file does not exist")
    try:
        with torch.serialization.safe_globals(_numpy_safe_globals()):
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)  # restricted
    except pickle.UnpicklingError as err:
        reason = _unpickling_reason(err)
        if not trust_pickle:
            raise UntrustedPickleError(
                path, f"this checkpoint cannot be read as plain weights ({reason}); reading it "
                      "fully means unpickling, which can run any code hidden in the file. Load "
                      "it only if you trust where it came from, with trust_pickle=True (CLI: "
                      "--trust-pickle)") from None
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)  # trust_pickle only
    except (RuntimeError, OSError, EOFError, ValueError) as err:
        raise InputError(path, f"cannot read checkpoint ({type(err).__name__}: "
                               f"{str(err).strip().splitlines()[0] if str(err).strip() else ''}"
                               "); the file is damaged or not a PyTorch checkpoint") from None
    if not isinstance(checkpoint, dict) or "network_weights" not in checkpoint:
        raise InputError(path, "not an nnU-Net checkpoint (no 'network_weights')")
    return checkpoint


def _unpickling_reason(err: Exception) -> str:
    for line in str(err).splitlines():
        if "Unsupported global" in line or "Unsupported operand" in line:
            return line.strip().split(" was not")[0].replace("WeightsUnpickler error: ", "")
    return "it needs objects other than tensors and numbers"


def find_trained_folder(folder: str | os.PathLike) -> Path:
    """Accept the ``<Trainer>__<Plans>__<configuration>`` folder, or one of its ``fold_X``
    folders, or a dataset folder holding exactly one trained configuration."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(folder, "model folder does not exist")
    if folder.name.startswith("fold_") and (folder.parent / "plans.json").is_file():
        return folder.parent
    if (folder / "plans.json").is_file():
        return folder
    candidates = [p for p in folder.iterdir() if p.is_dir() and (p / "plans.json").is_file()]
    if len(candidates) == 1:
        return candidates[0]
    if candidates:
        raise InputError(folder, "holds several trained configurations ("
                                 + ", ".join(sorted(p.name for p in candidates))
                                 + "); give one of them")
    raise InputError(folder, "is neither a nacsim model (model.json) nor an nnU-Net results "
                             "folder (plans.json, dataset.json, fold_X/checkpoint_final.pth)")


def read_nnunet_results(folder: str | os.PathLike, *, folds: Sequence[str | int] | None = None,
                        checkpoint_name: str = "checkpoint_final.pth",
                        trust_pickle: bool = False) -> LoadedModel:
    """Load a standard nnU-Net results folder (one or several folds)."""
    folder = find_trained_folder(folder)
    if folds is None:
        folds = sorted(p.name[len("fold_"):] for p in folder.glob("fold_*")
                       if (p / checkpoint_name).is_file())
        if not folds:
            raise InputError(folder, f"no fold_X/{checkpoint_name} in this folder (training "
                                     "not finished?)")
    plans = _read_json(folder / "plans.json", "nnU-Net plans")
    dataset_json = _read_json(folder / "dataset.json", "nnU-Net dataset description")
    parameters, trainer_name, configuration, axes = [], None, None, None
    for fold in folds:
        checkpoint = load_checkpoint(folder / f"fold_{fold}" / checkpoint_name,
                                     trust_pickle=trust_pickle)
        if trainer_name is None:
            trainer_name = str(checkpoint.get("trainer_name") or "")
            init_args = checkpoint.get("init_args") or {}
            configuration = init_args.get("configuration")
            axes = checkpoint.get("inference_allowed_mirroring_axes")
        parameters.append(checkpoint["network_weights"])
    if not configuration:  # folder name: Trainer__Plans__configuration
        parts = folder.name.split("__")
        configuration = parts[2] if len(parts) == 3 else None
    if not trainer_name or not configuration:
        raise InputError(folder, "cannot tell the trainer and configuration of this model")
    if not trust_pickle:
        check_plans_classes(plans, configuration, folder / "plans.json")
    card = {"name": folder.name, "source": "nnU-Net results folder",
            "folds": [str(f) for f in folds], "checkpoint": checkpoint_name,
            "family": (dataset_json.get("nacsim") or {}).get("family")}
    return LoadedModel(plans=plans, dataset_json=dataset_json, configuration=configuration,
                       trainer_name=trainer_name, parameters=parameters,
                       mirroring_axes=tuple(axes) if axes else None, source=folder, card=card)


def convert_results_folder(folder: str | os.PathLike, out_dir: str | os.PathLike, *,
                           card: dict[str, Any], folds: Sequence[str | int] | None = None,
                           trust_pickle: bool = False, overwrite: bool = False) -> Path:
    """An nnU-Net results folder -> nacsim's pickle-free format (how the bundled models are
    packaged after training)."""
    model = read_nnunet_results(folder, folds=folds, trust_pickle=trust_pickle)
    folds = model.card["folds"]
    return write_model(out_dir, plans=model.plans, dataset_json=model.dataset_json,
                       configuration=model.configuration, trainer_name=model.trainer_name,
                       parameters=dict(zip(folds, model.parameters)),
                       mirroring_axes=model.mirroring_axes, card=card, overwrite=overwrite)


def read_any(folder: str | os.PathLike, *, trust_pickle: bool = False,
             folds: Sequence[str | int] | None = None) -> LoadedModel:
    """nacsim format if the folder has a model card, else an nnU-Net results folder."""
    if is_nacsim_model(folder):
        return read_model(folder)
    return read_nnunet_results(folder, folds=folds, trust_pickle=trust_pickle)
