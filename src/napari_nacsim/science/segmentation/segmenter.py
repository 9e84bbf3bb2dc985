"""Segment one tumour image in memory with an nnU-Net v2 model.

`TumourSegmenter` wraps `nnUNetPredictor`: the network is built from the plans and
handed over with ``manual_initialization`` (no checkpoint unpickling), and each image goes
through ``predict_single_npy_array``, which preprocesses in the calling process (no worker
processes), so it works inside napari and in tests. On a CPU, test-time mirroring is off (it
multiplies the cost by 4 in 2D and 8 in 3D for a small gain); on a GPU it is on.

The result is a labels `Scan` on the input's grid, with the input's provenance (a
generated image's mask is marked synthetic like the image) plus the model that made it.
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import threading
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from ...core.errors import InputError
from ...core.model_input import ModelInput
from ...core.scan import LABELS, Scan, check_image_values
from ...core.schema import family_schema
from ..device import resolve_device
from . import nnunet_env
from .dataset import nnunet_input
from .input_grid import check_field_of_view, spacing_note
from .model_files import LoadedModel, read_any


def _trainer_class(name: str):
    """The trainer whose ``build_network_architecture`` rebuilds the network: nacsim's own
    by direct import, others through nnU-Net's search (nnunetv2, ``nnUNet_extTrainer``)."""
    from .nnunet_trainers import nacsim_trainers

    if hasattr(nacsim_trainers, name):
        return getattr(nacsim_trainers, name)
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

    try:
        return recursive_find_trainer_class_by_name(name)
    except (RuntimeError, AssertionError):
        raise InputError(f"trainer {name}", "is not part of nnunetv2 or nacsim; install the "
                                            "code that defines it or add its folder to "
                                            "nnUNet_extTrainer") from None


def build_network(model: LoadedModel):
    """nnU-Net's network for ``model``, built from its plans, weights of the first fold."""
    import inspect

    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    plans_manager = PlansManager(model.plans)
    configuration_manager = plans_manager.get_configuration(model.configuration)
    n_in = determine_num_input_channels(plans_manager, configuration_manager, model.dataset_json)
    n_out = plans_manager.get_label_manager(model.dataset_json).num_segmentation_heads
    trainer = _trainer_class(model.trainer_name)
    if "plans_manager" in inspect.signature(trainer.build_network_architecture).parameters:
        network = trainer.build_network_architecture(plans_manager, configuration_manager, n_in,
                                                     n_out, enable_deep_supervision=False)
    else:  # the pre-2.6 signature, still used by some external trainers
        network = trainer.build_network_architecture(
            configuration_manager.network_arch_class_name,
            configuration_manager.network_arch_init_kwargs,
            configuration_manager.network_arch_init_kwargs_req_import, n_in, n_out,
            enable_deep_supervision=False)
    try:
        network.load_state_dict(model.parameters[0])
    except RuntimeError as err:
        raise InputError(model.source, "weights do not fit the network the plans describe ("
                                       + str(err).strip().splitlines()[0] + ")") from None
    network.eval()
    return network, plans_manager, configuration_manager


@contextlib.contextmanager
def _torch_threads(n: int | None):
    import torch

    if not n:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


class TumourSegmenter:
    """An nnU-Net tumour model ready to segment single images.

    ``family``: the family the model must belong to (its name); ``input_spec``: what the
    family's segmenter takes (``ModelFamily.segmenter_input``), against which each image is
    checked before it is segmented."""

    def __init__(self, model: LoadedModel, *, family: str | None = None,
                 input_spec: Optional[ModelInput] = None,
                 device: str | None = None, use_mirroring: bool | None = None,
                 tile_step_size: float = 0.5, threads: int | None = None):
        nnunet_env.configure()  # before nnunetv2 is first imported
        from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

        model_family = (model.dataset_json.get("nacsim") or {}).get("family") or \
            model.card.get("family")
        if family is not None:
            family = family_schema(family).name
            if model_family and model_family != family:
                raise InputError(model.source, f"is a {model_family} model, not a {family} one")
        self.family = family or model_family
        self.input_spec = input_spec
        self.model = model
        self.device = resolve_device(device)
        self.use_mirroring = (self.device.type == "cuda") if use_mirroring is None \
            else bool(use_mirroring)
        self.threads = threads
        network, plans_manager, configuration_manager = build_network(model)
        with contextlib.redirect_stdout(io.StringIO()):  # it prints a CPU notice
            self.predictor = nnUNetPredictor(
                tile_step_size=tile_step_size, use_gaussian=True,
                use_mirroring=self.use_mirroring,
                perform_everything_on_device=self.device.type == "cuda", device=self.device,
                verbose=False, verbose_preprocessing=False, allow_tqdm=False)
        self.predictor.manual_initialization(
            network.to(self.device), plans_manager, configuration_manager, model.parameters,
            model.dataset_json, model.trainer_name, model.mirroring_axes)
        self.spacing = tuple(float(s) for s in configuration_manager.spacing)
        # One prediction at a time: nnU-Net reloads the weights into the network per call
        # (napari may call from several worker threads).
        self._lock = threading.Lock()

    # --- construction ---------------------------------------------------------------------
    @classmethod
    def from_folder(cls, folder: str | os.PathLike, *, trust_pickle: bool = False,
                    folds: Sequence[str | int] | None = None, **options) -> TumourSegmenter:
        """A nacsim model folder or a standard nnU-Net results folder."""
        return cls(read_any(folder, trust_pickle=trust_pickle, folds=folds), **options)

    @property
    def name(self) -> str:
        return str(self.model.card.get("name") or self.model.source.name)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "source": str(self.model.source),
                "family": self.family, "trainer": self.model.trainer_name,
                "configuration": self.model.configuration, "device": str(self.device),
                "mirroring": self.use_mirroring,
                "files": {name: info.get("sha256")
                          for name, info in (self.model.card.get("files") or {}).items()}}

    def model_spacing(self, ndim: int, current: list[float]) -> list[float]:
        """The plans' voxel spacing in the input's axis order (nnU-Net stores it transposed)."""
        spacing = list(self.spacing)
        if ndim == 2 or len(spacing) == 2:
            return [current[0], *spacing[-2:]]
        backward = self.predictor.plans_manager.transpose_backward
        return [spacing[i] for i in backward]

    # --- inference --------------------------------------------------------------------------
    def check_input(self, image: Scan) -> None:
        """Clear messages for images this model cannot segment."""
        check_image_values(image)
        spec = self.input_spec
        check_field_of_view(image, self.model, spec.how_to_make if spec else "")  # 3D crops
        if spec is None:
            return
        if image.ndim != spec.ndim:
            raise InputError(image.name, f"is {image.ndim}D with shape {image.shape}; the "
                                         f"{self.family} segmenter takes {spec.what}")
        if spec.value_range is None:  # physical units (CT in HU), not a normalised image
            values = image.array
            if float(values.min()) >= -0.5 and float(values.max()) <= 1.5:
                raise InputError(image.name, "values lie in 0..1, like a windowed crop; the "
                                             f"{self.family} segmenter needs the CT in Hounsfield units")

    def segment(self, image: Scan) -> Scan:
        """The tumour mask of ``image`` (labels 0/1) on the same grid."""
        self.check_input(image)
        array, properties = nnunet_input(image)
        spacing_known = image.provenance.get("spacing_known", True)
        if not spacing_known:
            # A plain image file has no voxel size: take it to be the model's, rather than
            # resampling with the 1 mm placeholder.
            properties["spacing"] = self.model_spacing(image.ndim, properties["spacing"])
        with self._lock, _torch_threads(self.threads):
            seg = self.predictor.predict_single_npy_array(array, properties, None, None, False)
        seg = np.asarray(seg).reshape(image.shape).astype(np.uint8)
        resampled = spacing_note(image, self.model) if spacing_known else None
        return image.derive(seg, step="segment_tumour", kind=LABELS, model=self.name,
                            trainer=self.model.trainer_name,
                            configuration=self.model.configuration,
                            device=str(self.device), mirroring=self.use_mirroring,
                            **({} if spacing_known else {"spacing_assumed_mm":
                                                          list(self.spacing)}),
                            **({"resampled": resampled} if resampled else {}))


@functools.lru_cache(maxsize=4)
def _bundled(folder: str, family: Optional[str], input_spec: Optional[ModelInput],
             device: str) -> TumourSegmenter:
    return TumourSegmenter.from_folder(folder, family=family, input_spec=input_spec,
                                       device=device)


def load_segmenter(folder: str | os.PathLike, *, family: str | None = None,
                   input_spec: Optional[ModelInput] = None, bundled: bool = False,
                   trust_pickle: bool = False, device: str | None = None) -> TumourSegmenter:
    """The segmenter in ``folder`` (nacsim format or nnU-Net results folder), for
    ``family``'s images (``input_spec``: what they look like). A ``bundled`` model, one
    shipped with nacsim, is loaded once per process (cached) and never unpickled; its
    absence is a broken installation. A family asks for its own with
    ``ModelFamily.load_segmenter``."""
    if bundled:
        if not Path(folder).is_dir():
            raise InputError(folder, "the bundled segmentation model is missing from this "
                                     "installation")
        return _bundled(str(folder), family, input_spec, str(resolve_device(device)))
    return TumourSegmenter.from_folder(folder, family=family, input_spec=input_spec,
                                       trust_pickle=trust_pickle, device=device)
