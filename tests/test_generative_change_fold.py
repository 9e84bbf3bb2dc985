"""The finer-grid options of the generative core: pixel fold (2x2 pixel blocks as channels),
the change target (generate follow-up minus pre-treatment) and min-SNR loss weighting."""

from __future__ import annotations

import csv

import pytest
import torch

from generative_helpers import micro_config, random_cohort, scenarios
from napari_nacsim.core.errors import InputError
from napari_nacsim.science.generative.checkpoint import load_checkpoint
from napari_nacsim.science.generative.config import load_config, validate_config
from napari_nacsim.science.generative.model import ControlledDiffusion
from napari_nacsim.science.generative.sampling import generate
from napari_nacsim.science.generative.train import _timestep_weighted, train

FOLDED = dict(image_size=32, pixel_fold=2, target="change",
              controlnet={"conditioning_embedding_out_channels": [8, 8], "init_from_unet": True})


def _model(**overrides):
    torch.manual_seed(0)
    return ControlledDiffusion(micro_config(**{**FOLDED, **overrides})).eval()


def test_the_unet_works_on_the_folded_grid_without_losing_a_pixel():
    model = _model()
    assert model.unet.config.in_channels == 4 and model.unet.config.sample_size == 16
    target, control = torch.rand(3, 1, 32, 32), torch.rand(3, 1, 32, 32)
    x0 = model.diffusion_sample(target, control)
    assert x0.shape == (3, 4, 16, 16)
    # the change of the encodings, decoded onto the pre-treatment image, is the target
    torch.testing.assert_close(model.decode(x0, control), target, atol=1e-6, rtol=0)
    # no change -> the pre-treatment image itself
    torch.testing.assert_close(model.decode(torch.zeros_like(x0), control), control)


def test_a_change_model_cannot_decode_without_its_pre_treatment_image():
    with pytest.raises(ValueError, match="pre-treatment"):
        _model().decode(torch.zeros(1, 4, 16, 16))


def test_an_image_model_decodes_as_before():
    model = _model(target="image")
    target = torch.rand(2, 1, 32, 32)
    torch.testing.assert_close(model.decode(model.diffusion_sample(target, None)), target,
                               atol=1e-6, rtol=0)


def test_sampling_a_change_model_gives_full_size_deterministic_images():
    model = _model()
    control = torch.rand(1, 32, 32)
    pair = scenarios(("T2", True), ("T2", False))
    a = generate(model, control, pair, seed=3, steps=3)
    b = generate(model, control, pair, seed=3, steps=3)
    assert a.shape == (2, 1, 32, 32) and torch.equal(a, b)
    assert float(a.min()) >= 0.0 and float(a.max()) <= 1.0


@pytest.mark.parametrize("bad, field", [
    (dict(pixel_fold=3), "pixel_fold"),              # 32 / 8 = 4 is not divisible by 3
    (dict(pixel_fold=0), "pixel_fold"),
    (dict(pixel_fold=True), "pixel_fold"),
    (dict(target="follow-up"), "target"),
    (dict(controlnet={"conditioning_embedding_out_channels": [8]}), "conditioning_embedding"),
    (dict(training={"loss_weighting": "snr"}), "loss_weighting"),
])
def test_bad_fold_target_or_weighting_is_refused_by_name(bad, field):
    with pytest.raises(InputError, match=field):
        validate_config(micro_config(**{**FOLDED, **bad}))


def test_min_snr_weights_follow_the_timestep_snr():
    model = _model()
    losses = torch.ones(3)
    t = torch.tensor([5, 500, 990])
    # gamma high enough: v-prediction weight snr / (snr + 1) rises towards 1 at small t
    from diffusers.training_utils import compute_snr

    snr = compute_snr(model.scheduler, t)
    expected = (torch.clamp(snr, max=5.0) / (snr + 1)).mean()
    torch.testing.assert_close(_timestep_weighted(model, losses, t, 5.0), expected)
    assert float(_timestep_weighted(model, losses, t, None)) == 1.0
    # the clipped nearly noise-free step weighs less than it would unclipped
    assert float(torch.clamp(snr, max=5.0)[0] / (snr[0] + 1)) < 0.9


def test_both_stages_train_a_folded_change_model_with_min_snr(tmp_path):
    cohort = random_cohort(6, size=32)
    config = micro_config(**FOLDED, training={
        **micro_config()["training"], "loss_weighting": "min_snr", "min_snr_gamma": 5.0,
        "stage2": {**micro_config()["training"]["stage2"], "tumour_weight": 10}})
    folder = train(config, cohort, tmp_path, seed=0, stage1_steps=2, stage2_steps=2,
                   batch_size=2, progress=False)
    rows = list(csv.DictReader(open(tmp_path / "loss_log.csv")))
    assert len(rows) == 4 and all(float(r["loss"]) > 0 for r in rows)
    model, card = load_checkpoint(folder)
    assert card["training"]["target"] == "change" and card["training"]["pixel_fold"] == 2
    assert card["training"]["loss_weighting"] == "min_snr"
    assert model.config["pixel_fold"] == 2
    out = generate(model.eval(), torch.rand(1, 32, 32), scenarios(("T1", True)), steps=2)
    assert out.shape == (1, 1, 32, 32)


def test_the_bundled_128_config_is_valid_and_folds_to_64():
    config = load_config("breast_128")
    assert config["image_size"] == 128 and config["pixel_fold"] == 2
    assert config["target"] == "change"
