"""Shared by the prediction tests: a micro ImmunoDiff (the immunodiff tests' size, with its
control branch perturbed so that the conditions reach the up-blocks) and a few lung records
made from one phantom (drawing a phantom costs seconds)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def micro_model_folder(folder: Path) -> Path:
    import torch

    from napari_nacsim.science.generative.immunodiff.checkpoint import save_checkpoint
    from napari_nacsim.science.generative.immunodiff.config import MICRO
    from napari_nacsim.science.generative.immunodiff.network import ImmunoDiff

    torch.manual_seed(0)
    net = ImmunoDiff(MICRO)
    with torch.no_grad():  # zero convolutions would hide the control branch entirely
        for p in [*net.controlnet.parameters(), *net.unet.parameters()]:
            p.add_(0.05 * torch.randn_like(p))
    return save_checkpoint(net, folder, {"title": "ImmunoDiff micro (prediction test)"})


def lung_records(folder: Path, n: int = 12) -> Path:
    """``n`` records of cohort "seed 0" in ``folder``/records_0: one phantom's crops (its
    HU shifted a little per patient) with other clinical values and outcomes (a third
    respond; survival longer for responders)."""
    from napari_nacsim.families import get_family
    from napari_nacsim.science.generative.immunodiff.data import (unpaired_record,
                                                                   write_record)

    record = unpaired_record(get_family("lung"), 0, 0)
    rng = np.random.default_rng(0)
    for i in range(n):
        responder = i % 3 == 0
        pdl1 = float(60 + i) if responder else float(i)
        labs = {k: float(round(v * rng.uniform(0.6, 1.6), 2)) for k, v in
                record["meta"]["clinical"].items() if k in ("CEA", "ANC", "ALC", "AEC", "AMC")}
        labs["NLR"] = labs["ANC"] / labs["ALC"]
        clinical = {**record["meta"]["clinical"], **labs, "PD_L1": pdl1, "age": 50.0 + 2 * i,
                    "sex": ("male", "female")[i % 2],
                    "responder": responder,
                    "survival_months": float(round((30 if responder else 8)
                                                   * rng.uniform(0.5, 1.5), 2)),
                    "death": bool(i % 4 != 1)}
        arrays = dict(record["arrays"])
        arrays["pre_image"] = (arrays["pre_image"].astype(np.int32) + 8 * i).astype(np.int16)
        meta = {**record["meta"], "index": i, "patient": f"LU{i + 1:04d}",
                "clinical": clinical, "response_probability": 0.6 if responder else 0.2}
        write_record(folder / "records_0", i, {"arrays": arrays, "meta": meta})
    return folder
