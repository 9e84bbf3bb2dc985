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


def test_a_deadline_stops_at_a_checkpoint_writes_the_model_and_resumes_exactly(tmp_path,
                                                                              cohort):
    full = train(micro_config(), cohort, tmp_path / "full", seed=1, stage1_steps=2,
                 stage2_steps=4, batch_size=2, progress=False)
    part = tmp_path / "part"
    # a deadline already past: stage 1 stops at its first checkpoint, nothing but the state
    first = train(micro_config(), cohort, part, seed=1, stage1_steps=2, stage2_steps=4,
                  batch_size=2, checkpoint_every=1, stop_at=0.0, progress=False)
    assert first == part / "resume" and not (part / "model").exists()
    state = json.loads((part / "resume" / "train_state.json").read_text())
    assert (state["stage"], state["step"]) == (1, 1)
    # resumed without a deadline into stage 2, then stopped again: the model as it stands
    train(micro_config(), cohort, part, seed=1, stage1_steps=2, stage2_steps=1, batch_size=2,
          checkpoint_every=1, progress=False)
    stopped = train(micro_config(), cohort, part, seed=1, stage1_steps=2, stage2_steps=4,
                    batch_size=2, checkpoint_every=1, stop_at=0.0, progress=False)
    card = json.loads((stopped / "model_card.json").read_text())
    assert card["training"]["stopped_at"] == {"stage": 2, "step": 2, "of": 4}
    resumed = train(micro_config(), cohort, part, seed=1, stage1_steps=2, stage2_steps=4,
                    batch_size=2, progress=False)
    assert "stopped_at" not in json.loads((resumed / "model_card.json").read_text())["training"]
    a, b = _weights(full), _weights(resumed)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)


def test_split_is_deterministic_and_patient_level():
    ids = [f"BR{i:04d}" for i in range(1, 41)]
    train_ids, test_ids = split_ids(list(reversed(ids)), 0.25, 7)
    assert (train_ids, test_ids) == split_ids(ids, 0.25, 7)   # order of listing irrelevant
    assert len(test_ids) == 10 and not set(train_ids) & set(test_ids)
    assert split_ids(ids, 0.25, 8)[1] != test_ids


@pytest.fixture
def train_nac_script(monkeypatch):
    """training/train_nac.py on an 8-patient random cohort and the micro config."""
    spec = importlib.util.spec_from_file_location("train_nac", ROOT / "training" / "train_nac.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    import napari_nacsim.science.generative.config as config_module
    import napari_nacsim.datasets.paired as data_module

    big = random_cohort(8)
    monkeypatch.setattr(data_module, "phantom_cohort", lambda *a, **k: big)
    monkeypatch.setattr(config_module, "load_config", lambda name: micro_config())
    return script


def test_entrypoint_records_split_and_command(tmp_path, train_nac_script):
    script = train_nac_script
    out = tmp_path / "run"
    assert script.main(["--out", str(out), "--patients", "8", "--stage1-steps", "1",
                        "--stage2-steps", "1", "--batch-size", "2", "--quiet"]) == 0
    split = json.loads((out / "split.json").read_text())
    assert len(split["test"]) == 2 and len(split["train"]) == 6
    card = json.loads((out / "model" / "model_card.json").read_text())
    assert card["data"]["split"]["test"] == split["test"]
    assert card["training"]["command"].startswith("python training/train_nac.py --out")


# --- stage-2 options: tumour-weighted loss, balanced outcomes, starting from a model -------

def test_tumour_weights_cover_the_grown_union_of_both_masks():
    from napari_nacsim.science.generative.train import tumour_weights

    masks = torch.zeros(1, 2, 9, 9)
    masks[0, 0, 2, 2] = 1          # T0 tumour
    masks[0, 1, 6, 6] = 1          # target tumour elsewhere
    w = tumour_weights(masks, 10.0, 1)[0, 0]
    assert w.shape == (9, 9)
    assert w[1:4, 1:4].eq(11).all() and w[5:8, 5:8].eq(11).all()   # 3x3 around each
    assert int(w.eq(11).sum()) == 18 and w[0, 8] == 1 and w[4, 4] == 1


def test_weighted_mse_is_the_mse_without_weights_and_favours_the_tumour():
    from napari_nacsim.science.generative.train import weighted_mse

    pred, target = torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 4)
    pred[0, 0, 0, 0] = 1.0                                  # an error inside the tumour
    uniform = torch.ones(1, 1, 4, 4)
    assert torch.isclose(weighted_mse(pred, target, uniform), weighted_mse(pred, target, None))
    tumour = uniform.clone()
    tumour[0, 0, 0, 0] = 16.0
    # 16 / 31 of the loss instead of 1 / 16
    assert torch.isclose(weighted_mse(pred, target, tumour), torch.tensor(16 / 31))
    # a weight map on the image grid is pooled to a smaller (latent) grid
    small = weighted_mse(torch.zeros(1, 4, 2, 2), torch.ones(1, 4, 2, 2), torch.ones(1, 1, 4, 4))
    assert torch.isclose(small, torch.tensor(1.0))


def test_balanced_draws_give_each_outcome_half_of_the_batches():
    from napari_nacsim.core.errors import InputError
    from napari_nacsim.science.generative.train import balanced_probabilities

    cohort = random_cohort(8)
    cohort.clinical = [{**c, "pCR": i == 0} for i, c in enumerate(cohort.clinical)]  # 1 of 8
    probs = balanced_probabilities(cohort, "pCR")
    assert torch.isclose(probs[0], torch.tensor(0.5, dtype=probs.dtype))
    assert torch.isclose(probs.sum(), torch.tensor(1.0, dtype=probs.dtype))
    with pytest.raises(InputError, match="'size' is not a conditioning variable"):
        balanced_probabilities(cohort, "size")


def test_time_weights_draw_the_weighted_visit_more_often_and_bad_weights_are_refused(
        tmp_path, cohort):
    from napari_nacsim.core.errors import InputError
    from napari_nacsim.science.generative.train import time_probabilities

    names = cohort.family.timepoint_names
    probs = time_probabilities([1, 2, 1], names)
    assert torch.allclose(probs, torch.tensor([0.25, 0.5, 0.25], dtype=probs.dtype))
    assert time_probabilities(None, names) is None
    for bad, why in [([1, 2], "2 weight"), ([1, -1, 1], "not negative"), ([0, 0, 0], "all zero"),
                     (["a", 1, 1], "not a list of numbers")]:
        with pytest.raises(InputError, match=why):
            time_probabilities(bad, names)
    # in training: stage 2 draws only the weighted visit; stage 1 stays uniform
    config = micro_config()
    config["training"]["stage2"]["time_weights"] = [0, 1, 0]
    folder = train(config, cohort, tmp_path / "t1", seed=0, stage1_steps=3, stage2_steps=3,
                   batch_size=4, progress=False, sample_log=True)
    rows = list(csv.DictReader(open(tmp_path / "t1" / "samples" / "rank0.csv")))
    drawn = {stage: {t for r in rows if r["stage"] == stage for t in r["times"].split()}
             for stage in ("1", "2")}
    assert drawn["2"] == {names[1]} and len(drawn["1"]) > 1
    _, card = load_checkpoint(folder)
    assert card["training"]["time_weights"] == [0, 1, 0]


def test_stage_2_continues_from_a_trained_model_with_the_weighted_loss(tmp_path, cohort):
    start = train(micro_config(), cohort, tmp_path / "start", seed=0, stage1_steps=2,
                  stage2_steps=2, batch_size=2, progress=False)
    config = micro_config()
    config["training"]["stage2"].update(tumour_weight=20.0, tumour_margin=1, balance="pCR")
    folder = train(config, cohort, tmp_path / "tuned", seed=0, stage2_steps=2, batch_size=2,
                   init_from=start, progress=False)
    rows = list(csv.DictReader(open(tmp_path / "tuned" / "loss_log.csv")))
    assert [r["stage"] for r in rows] == ["2", "2"]           # stage 1 skipped
    a, b = _weights(start), _weights(folder)
    enc = [k for k in a if k.startswith("unet.down_blocks")]
    assert all(torch.equal(a[k], b[k]) for k in enc)         # base encoder still frozen
    ctrl = [k for k in a if not k.startswith(("unet.", "tok."))]
    assert any(not torch.equal(a[k], b[k]) for k in ctrl)    # ControlNet kept training
    _, card = load_checkpoint(folder)
    assert card["training"]["tumour_weight"] == 20.0 and card["training"]["balance"] == "pCR"
    assert card["config"]["training"]["stage2"]["balance"] == "pCR"
    # a different architecture cannot start from it
    from napari_nacsim.core.errors import InputError

    other = micro_config(image_size=24)
    with pytest.raises(InputError, match="config differs in image_size"):
        train(other, cohort, tmp_path / "bad", seed=0, stage2_steps=1, batch_size=2,
              init_from=start, progress=False)


def test_entrypoint_fine_tunes_and_records_the_chain(tmp_path, train_nac_script):
    script = train_nac_script
    start = tmp_path / "start"
    assert script.main(["--out", str(start), "--patients", "8", "--stage1-steps", "1",
                        "--stage2-steps", "1", "--batch-size", "2", "--quiet"]) == 0
    out = tmp_path / "tuned"
    assert script.main(["--out", str(out), "--patients", "8", "--stage2-steps", "1",
                        "--batch-size", "2", "--init-from", str(start / "model"),
                        "--tumour-weight", "5", "--stage2-lr", "1e-4", "--balance", "pCR",
                        "--quiet"]) == 0
    card = json.loads((out / "model" / "model_card.json").read_text())
    training = card["training"]
    assert training["tumour_weight"] == 5.0 and training["balance"] == "pCR"
    assert training["learning_rate"]["2"] == 1e-4 and training["stage1_steps"] == 0
    chain = training["init_from"]
    assert chain["model"] == str(start / "model")
    assert chain["training"]["command"].startswith("python training/train_nac.py --out")
    # a model folder that is not one is refused with one line, no traceback
    assert script.main(["--out", str(tmp_path / "bad"), "--patients", "8", "--init-from",
                        str(tmp_path), "--quiet"]) == 2


def test_counterfactual_pairs_put_both_outcomes_of_a_patient_side_by_side(tmp_path, cohort):
    """Each drawn patient fills two places: its factual follow-up and its counterfactual one,
    with the same visit, transform, timestep and noise; the conditions differ in the outcome."""
    import dataclasses

    import numpy as np

    from napari_nacsim.core.errors import InputError
    from napari_nacsim.science.generative import train as train_module

    rng = np.random.default_rng(1)
    paired = dataclasses.replace(
        cohort,
        cf_images={i: rng.random(cohort.images.shape[1:], dtype=np.float32) for i in cohort.ids},
        cf_masks={i: (rng.random(cohort.images.shape[1:]) > 0.8).astype(np.uint8)
                  for i in cohort.ids},
        cf_clinical={i: {**c, "pCR": not c["pCR"]} for i, c in zip(cohort.ids, cohort.clinical)})
    config = micro_config()
    config["training"]["stage2"]["counterfactual_pairs"] = True
    seen = []
    real_stage2 = train_module._Stage2.forward

    def spy(self, control, target, codes, drop, t, noise, null, weight=None):
        seen.append((control.clone(), target.clone(), codes.clone(), drop.clone(), t.clone(),
                     noise.clone()))
        return real_stage2(self, control, target, codes, drop, t, noise, null, weight)

    train_module._Stage2.forward = spy
    try:
        folder = train(config, paired, tmp_path / "pairs", seed=0, stage1_steps=1,
                       stage2_steps=3, batch_size=4, progress=False, sample_log=True)
    finally:
        train_module._Stage2.forward = real_stage2
    assert len(seen) == 3
    for control, target, codes, drop, t, noise in seen:
        for a, b in ((0, 1), (2, 3)):          # (factual, counterfactual) places
            assert torch.equal(control[a], control[b])           # the same T0, same transform
            assert torch.equal(t[a], t[b]) and torch.equal(noise[a], noise[b])
            assert bool(drop[a]) == bool(drop[b])
            assert not torch.equal(target[a], target[b])          # two different follow-ups
            assert not torch.equal(codes[a], codes[b])            # under two outcomes
    rows = list(csv.DictReader(open(tmp_path / "pairs" / "samples" / "rank0.csv")))
    for row in (r for r in rows if r["stage"] == "2"):
        patients, times = row["patients"].split(), row["times"].split()
        assert patients[0] == patients[1] and patients[2] == patients[3]
        assert times[0] == times[1] and times[2] == times[3]
    _, card = load_checkpoint(folder)
    assert card["training"]["counterfactual_pairs"] is True
    # a patient without its counterfactual, or an odd batch, is refused
    with pytest.raises(InputError, match="have no counterfactual follow-ups"):
        train(config, cohort, tmp_path / "none", seed=0, stage1_steps=1, stage2_steps=1,
              batch_size=4, progress=False)
    with pytest.raises(InputError, match="must be even"):
        train(config, paired, tmp_path / "odd", seed=0, stage1_steps=1, stage2_steps=1,
              batch_size=3, progress=False)
