"""training/train_lung.py on the micro config: every stage runs a few real steps, alone or
all in one command, resumes, records its split, log, plot and command; the model folder
loads with hash checks; generation is deterministic."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from generative_helpers import synthetic_lung_crop
from immunodiff_helpers import micro_config, write_records

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_records(tmp_path_factory.mktemp("lung_records"))


def _train(argv):
    sys.path.insert(0, str(ROOT / "training"))
    try:
        import train_lung
    finally:
        sys.path.pop(0)
    return train_lung.main(argv)


def test_all_stages_train_resume_and_record(tmp_path, data):
    composition = {"around_tumour": True, "growth": 0.4, "allowance_mm": 6.0,
                   "feather_mm": 9.0}   # not the code default: the config's must reach the card
    cfg = micro_config(tmp_path / "micro.json", composition=composition)
    out = tmp_path / "run"
    args = ["--config", str(cfg), "--out", str(out), "--data", str(data), "--use-cached",
            "--no-progress"]
    assert _train(args + ["--stages", "vl,base"]) == 0           # stages alone ...
    progress = json.loads((out / "state" / "progress.json").read_text())
    assert progress["done"] == ["vl", "base"]
    assert _train(args + ["--stages", "control,adapter"]) == 0   # ... continued in order
    rows = list(csv.DictReader((out / "loss_log.csv").open()))
    assert [r["stage"] for r in rows] == ["vl"] * 2 + ["base"] * 2 + ["control"] * 2 + \
        ["adapter"] * 2
    assert all(np.isfinite(float(r["loss"])) for r in rows)
    assert (out / "loss_curve.png").stat().st_size > 1000
    split = json.loads((out / "split.json").read_text())
    assert split["train"] == [0, 1, 3] and split["validation"] == [2]   # seeded, sorted
    card = json.loads((out / "model" / "model_card.json").read_text())
    assert card["training"]["command"].startswith("python training/train_lung.py --config")
    assert card["training"]["steps_done"] == {"vl": 2, "base": 2, "control": 2, "adapter": 2}
    assert card["training"]["data"]["paired"]["train"] == 3
    assert set(card["files"]) == {"vl", "unet", "controlnet", "adapter"}
    assert card["config"]["composition"] == composition   # the model composes as configured

    # resume: a finished run does nothing more; an interrupted stage continues at its step
    progress = json.loads((out / "state" / "progress.json").read_text())
    progress.update(done=["vl", "base", "control"], stage="adapter", step=1)
    (out / "state" / "progress.json").write_text(json.dumps(progress))
    assert _train(args + ["--stages", "adapter", "--steps", "adapter=3"]) == 0
    rows = list(csv.DictReader((out / "loss_log.csv").open()))
    assert [int(r["step"]) for r in rows if r["stage"] == "adapter"][-2:] == [2, 3]


def test_save_load_checks_hashes_and_generation_is_deterministic(tmp_path):
    import torch

    from napari_nacsim.core.errors import InputError
    from napari_nacsim.science.generative.immunodiff.checkpoint import (load_checkpoint,
                                                                         save_checkpoint)
    from napari_nacsim.science.generative.immunodiff.config import MICRO
    from napari_nacsim.science.generative.immunodiff.network import ImmunoDiff
    from napari_nacsim.science.generative.immunodiff.sampling import generate

    torch.manual_seed(0)
    model = ImmunoDiff(MICRO)
    with torch.no_grad():   # zero-initialised output and control convolutions would hide
        for p in [*model.controlnet.parameters(), *model.unet.parameters()]:  # everything
            p.add_(0.05 * torch.randn_like(p))
    folder = save_checkpoint(model, tmp_path / "m")
    loaded, card = load_checkpoint(folder)
    for name, module in model.components().items():
        for (k, a), (_, b) in zip(module.state_dict().items(),
                                  loaded.components()[name].state_dict().items()):
            assert torch.equal(a, b), (name, k)

    pre, lobes, vessels = synthetic_lung_crop()
    scen = [{"PD_L1": 0.0, "age": 60.0}, {"PD_L1": 80.0, "age": 60.0}]
    a = generate(loaded, pre, lobes, vessels, scen, seed=3, steps=2)
    b = generate(loaded, pre, lobes, vessels, scen, seed=3, steps=2)
    c = generate(loaded, pre, lobes, vessels, scen, seed=4, steps=2)
    assert a.shape == (2, 16, 96, 96) and a.dtype == np.float32
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert -1024 <= a.min() and a.max() <= 3071            # HU, clipped to the CT range
    assert not np.array_equal(a[0], a[1])                   # the scenario reaches the image
    long_a, long_b = (generate(loaded, pre, lobes, vessels, scen, seed=3, steps=2,
                               sampler="ddpm") for _ in range(2))
    assert np.array_equal(long_a, long_b)                   # ancestral noise from the seed
    guided = generate(loaded, pre, lobes, vessels, scen, seed=3, steps=2, guidance_scale=2.0)
    assert not np.array_equal(guided, a)

    weights = folder / "adapter.safetensors"
    weights.write_bytes(weights.read_bytes()[:-4] + b"\0\0\0\0")
    with pytest.raises(InputError, match="sha256"):
        load_checkpoint(folder)
