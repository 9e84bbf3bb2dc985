"""Training entrypoint: both stages for a few steps, resume, split, loss log and plot."""

from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from generative_helpers import micro_config, random_cohort
from napari_nacsim.science.generative.checkpoint import load_checkpoint
from napari_nacsim.science.generative.data import split_ids
from napari_nacsim.science.generative.train import train

ROOT = Path(__file__).resolve().parents[1]


def _weights(folder):
    return {**load_file(str(folder / "controlnet.safetensors")),
            **{f"unet.{k}": v for k, v in load_file(str(folder / "unet.safetensors")).items()},
            **{f"tok.{k}": v for k, v in load_file(str(folder / "prompt_tokens.safetensors")).items()}}


@pytest.fixture(scope="module")
def cohort():
    return random_cohort(6)


def test_two_stages_train_and_write_everything(tmp_path, cohort):
    folder = train(micro_config(), cohort, tmp_path, seed=0, stage1_steps=3, stage2_steps=3,
                   batch_size=2, checkpoint_every=2, progress=False, card={"note": "t"})
    rows = list(csv.DictReader(open(tmp_path / "loss_log.csv")))
    assert [(r["stage"], r["step"]) for r in rows] == [("1", "1"), ("1", "2"), ("1", "3"),
                                                        ("2", "1"), ("2", "2"), ("2", "3")]
    assert all(float(r["loss"]) > 0 for r in rows)
    assert (tmp_path / "loss_curve.png").stat().st_size > 1000
    model, card = load_checkpoint(folder)
    assert card["training"]["stage1_steps"] == 3 and card["note"] == "t"
    assert card["training"]["device"] == "cpu"
    # Stage 2 trained the ControlNet away from its zero-initialised output convolutions
    zero = model.controlnet.controlnet_mid_block.weight
    assert zero.abs().max() > 0


def test_base_encoder_is_frozen_in_stage_2_and_decoder_trains(tmp_path, cohort):
    train(micro_config(), cohort, tmp_path / "a", seed=0, stage1_steps=2, stage2_steps=0,
          batch_size=2, progress=False)
    train(micro_config(), cohort, tmp_path / "b", seed=0, stage1_steps=2, stage2_steps=2,
          batch_size=2, progress=False)
    a, b = _weights(tmp_path / "a" / "model"), _weights(tmp_path / "b" / "model")
    enc = [k for k in a if k.startswith("unet.down_blocks")]
    dec = [k for k in a if k.startswith("unet.up_blocks")]
    assert enc and dec
    assert all(torch.equal(a[k], b[k]) for k in enc)         # frozen base encoder
    assert any(not torch.equal(a[k], b[k]) for k in dec)     # the paper trains the decoder


def test_resume_continues_exactly(tmp_path, cohort):
    full = train(micro_config(), cohort, tmp_path / "full", seed=1, stage1_steps=2,
                 stage2_steps=3, batch_size=2, progress=False)
    # interrupted run: stops after stage 2 step 1 (resume state), then the same command again
    part = tmp_path / "part"
    train(micro_config(), cohort, part, seed=1, stage1_steps=2, stage2_steps=1, batch_size=2,
          checkpoint_every=1, progress=False)
    state = json.loads((part / "resume" / "train_state.json").read_text())
    assert (state["stage"], state["step"]) == (2, 1)
    resumed = train(micro_config(), cohort, part, seed=1, stage1_steps=2, stage2_steps=3,
                    batch_size=2, progress=False)
    a, b = _weights(full), _weights(resumed)
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)


def test_split_is_deterministic_and_patient_level():
    ids = [f"BR{i:04d}" for i in range(1, 41)]
    train_ids, test_ids = split_ids(list(reversed(ids)), 0.25, 7)
    assert (train_ids, test_ids) == split_ids(ids, 0.25, 7)   # order of listing irrelevant
    assert len(test_ids) == 10 and not set(train_ids) & set(test_ids)
    assert split_ids(ids, 0.25, 8)[1] != test_ids


def test_entrypoint_records_split_and_command(tmp_path, monkeypatch, cohort):
    spec = importlib.util.spec_from_file_location("train_nac", ROOT / "training" / "train_nac.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    import napari_nacsim.science.generative.config as config_module
    import napari_nacsim.science.generative.data as data_module

    big = random_cohort(8)
    monkeypatch.setattr(data_module, "breast_phantom_cohort", lambda *a, **k: big)
    monkeypatch.setattr(config_module, "load_config", lambda name: micro_config())
    out = tmp_path / "run"
    assert script.main(["--out", str(out), "--patients", "8", "--stage1-steps", "1",
                        "--stage2-steps", "1", "--batch-size", "2", "--quiet"]) == 0
    split = json.loads((out / "split.json").read_text())
    assert len(split["test"]) == 2 and len(split["train"]) == 6
    card = json.loads((out / "model" / "model_card.json").read_text())
    assert card["data"]["split"]["test"] == split["test"]
    assert card["training"]["command"].startswith("python training/train_nac.py --out")
