"""Shared by the ImmunoDiff tests: a micro model and phantom records made once."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from napari_nacsim.core.scan import LABELS, Scan


def micro_config(path: Path, **changes) -> Path:
    from napari_nacsim.science.generative.immunodiff.config import MICRO

    path.write_text(json.dumps({**MICRO, **changes}))
    return path


def write_records(folder: Path, n: int = 4) -> Path:
    """One lung phantom's crops (both visits, with masks) written as ``n`` records of the
    unpaired and the paired cache, each with other clinical values (record layouts are
    the same; drawing n phantoms would cost seconds each)."""
    from napari_nacsim.families import get_family
    from napari_nacsim.science.generative.immunodiff.data import (unpaired_record,
                                                                   write_record)

    record = unpaired_record(get_family("lung"), 0, 0)
    for i in range(n):
        meta = {**record["meta"], "index": i,
                "clinical": {**record["meta"]["clinical"], "PD_L1": float(20 * i),
                             "age": 50.0 + i}}
        for kind in ("unpaired_100", "paired_0"):
            write_record(folder / kind, i, {"arrays": record["arrays"], "meta": meta})
    return folder


class ThresholdSegmenter:
    """Tumour = soft tissue (> -300 HU) within 15 voxels of the crop's centre (a stand-in:
    the engine test is about the engine, not the segmenter)."""

    name = "threshold (test)"

    def segment(self, image: Scan) -> Scan:
        arr = np.asarray(image.array)
        z, y, x = np.indices(arr.shape)
        c = (np.array(arr.shape) - 1) / 2
        near = (np.abs(y - c[1]) < 15) & (np.abs(x - c[2]) < 15)
        return image.derive((near & (arr > -300)).astype(np.uint8), step="segment",
                            kind=LABELS)


def copy_tree(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def lung_baseline_case() -> dict:
    """A lung phantom's baseline model inputs and clinical values (baseline only: no
    registration needed): ``{"inputs": {"pre": {...}}, "clinical": {...}}``."""
    from napari_nacsim.families import get_family

    family = get_family("lung")
    rendering = family.make_phantom(0, 0).render()
    visits = rendering.visits()
    return {"inputs": family.model_inputs({"pre": visits["pre"]}),
            "clinical": dict(rendering.clinical)}
