"""The lung model's "change" target and tumour emphasis: the sampled quantity is the
follow-up minus the pre-treatment crop (the result is pre + change), the loss weighs the
tumour's neighbourhood, slices showing the tumour are drawn more often, and with a change
target every denoiser stage trains on registered pairs."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from immunodiff_helpers import micro_config, write_records

ROOT = Path(__file__).resolve().parents[1]


def test_tumour_weights_cover_the_tumour_and_its_rim_only():
    from napari_nacsim.science.generative.immunodiff.training import TUMOUR_MARGIN
    from napari_nacsim.science.generative.losses import tumour_weights

    mask = torch.zeros(1, 1, 20, 20, dtype=torch.bool)
    mask[0, 0, 10, 10] = True
    w = tumour_weights(mask, 20.0, TUMOUR_MARGIN)
    assert w.shape == (1, 1, 20, 20)
    assert w[0, 0, 10, 10] == 21 and w[0, 0, 13, 13] == 21      # within 3 voxels (square)
    assert w[0, 0, 10, 14] == 1 and w[0, 0, 0, 0] == 1          # beyond it
    assert int((w > 1).sum()) == 49


def test_weighted_loss_is_the_plain_mse_without_weight():
    from napari_nacsim.science.generative.losses import tumour_weights, weighted_mse

    def _mse(pred, target, weights):  # the lung training's normalisation
        return weighted_mse(pred, target, weights, normalise="batch")

    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(3, 1, 8, 8, generator=g), torch.randn(3, 1, 8, 8, generator=g)
    mask = torch.zeros(3, 1, 8, 8, dtype=torch.bool)
    mask[:, :, 2, 2] = True
    assert torch.allclose(_mse(a, b, tumour_weights(mask, 0.0, 3)), torch.nn.functional.mse_loss(a, b))
    err = (a - b) ** 2
    near = tumour_weights(mask, 10.0, 3) > 1
    weighted = _mse(a, b, tumour_weights(mask, 10.0, 3))
    expected = (err.sum() + 10 * err[near].sum()) / (err.numel() + 10 * near.sum())
    assert torch.allclose(weighted, expected)


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    from napari_nacsim.science.generative.immunodiff.data import load_records

    folder = write_records(tmp_path_factory.mktemp("lung_records"))
    return folder, load_records(folder / "paired_0")


def test_tumour_slices_are_drawn_at_the_share_asked(records):
    from napari_nacsim.science.generative.immunodiff.training import CropSet, step_generator

    data = CropSet(records[1], paired=True)
    shows = data.tumour[:, 0].flatten(2).any(-1)                    # (N, Z)
    assert 0 < int(shows[0].sum()) < shows.shape[1]                  # the test means something
    plain = data.draw(64, step_generator(0, "adapter", 5))
    again = data.draw(64, step_generator(0, "adapter", 5), tumour_share=0.0)
    assert all(torch.equal(p, q) for p, q in zip(plain, again))      # share 0: same batches
    idx, z = data.draw(64, step_generator(0, "adapter", 5), tumour_share=1.0)
    assert bool(shows[idx, z].all())
    base_rate = float(shows.float().mean())   # a uniform slice of a uniform record
    idx, z = data.draw(400, step_generator(0, "adapter", 6), tumour_share=0.5)
    share = float(shows[idx, z].float().mean())
    assert abs(share - (0.5 + 0.5 * base_rate)) < 0.08


def test_config_target_is_checked_and_stages_pick_their_data():
    from napari_nacsim.core.errors import InputError
    from napari_nacsim.science.generative.immunodiff.config import resolve
    from napari_nacsim.science.generative.immunodiff.training import stage_data

    with pytest.raises(InputError, match="target"):
        resolve({"target": "difference"})
    image, change = resolve({}), resolve({"target": "change"})
    assert [stage_data(image, s) for s in ("vl", "base", "control", "adapter")] == \
        ["unpaired", "unpaired", "unpaired", "paired"]
    assert [stage_data(change, s) for s in ("vl", "base", "control", "adapter")] == \
        ["unpaired", "paired", "paired", "paired"]


def test_change_target_result_is_the_pre_crop_plus_the_sampled_change():
    from napari_nacsim.science.generative.immunodiff.config import MICRO, resolve
    from napari_nacsim.science.generative.immunodiff.network import ImmunoDiff
    from napari_nacsim.science.generative.immunodiff.sampling import generate

    torch.manual_seed(0)
    image_model = ImmunoDiff(MICRO)
    with torch.no_grad():
        for p in [*image_model.controlnet.parameters(), *image_model.unet.parameters()]:
            p.add_(0.05 * torch.randn_like(p))
    change_model = ImmunoDiff(resolve({**MICRO, "target": "change"}))
    change_model.load_state_dict(image_model.state_dict())
    rng = np.random.default_rng(0)
    pre = rng.normal(-600, 150, (16, 96, 96)).astype(np.float32)
    lobes = np.zeros((16, 96, 96), np.uint8)
    lobes[:, 20:70, 10:45] = 1
    vessels = np.zeros_like(lobes)
    scen = [{"PD_L1": 0.0}, {"PD_L1": 80.0}]
    kw = dict(seed=1, steps=3, strength=1.0)
    image = generate(image_model, pre, lobes, vessels, scen, **kw)
    change = generate(change_model, pre, lobes, vessels, scen, **kw)
    # same network, same noise: the same sampled x; the change model adds it to the crop
    # (HU = 700 x + centre for an image; pre + 700 x for a change)
    inside = (image > -1000) & (image < 3000) & (change > -1000) & (change < 3000)
    assert inside.mean() > 0.5
    expected = image - (-300.0) + pre[None]
    assert np.allclose(change[inside], expected[inside], atol=0.05)


def test_change_target_trains_every_denoiser_stage_on_pairs(tmp_path):
    folder = write_records(tmp_path / "records")
    cfg = micro_config(tmp_path / "micro.json", target="change",
                       training={**json.loads(micro_config(tmp_path / "m0.json").read_text())
                                 ["training"], "tumour_weight": 20.0,
                                 "tumour_slice_share": 0.5})
    sys.path.insert(0, str(ROOT / "training"))
    try:
        import train_lung
    finally:
        sys.path.pop(0)
    out = tmp_path / "run"
    assert train_lung.main(["--config", str(cfg), "--out", str(out), "--data", str(folder),
                            "--use-cached", "--no-progress", "--stages", "vl,base"]) == 0
    progress = json.loads((out / "state" / "progress.json").read_text())
    assert progress["data"]["unpaired"]["patients_vl"] == 4       # vl: masks of each visit
    assert "patients_base" not in progress["data"]["unpaired"]
    assert progress["data"]["paired"]["train"] == 3               # base: the pairs' changes
    card = json.loads((out / "model" / "model_card.json").read_text())
    assert card["config"]["target"] == "change"
    assert card["config"]["training"]["tumour_weight"] == 20.0


def test_change_model_features_start_from_no_change():
    """Prediction features of a change model: the U-Net's input is "no change" noised, so
    the base denoiser alone (no control) sees nothing of the pre-treatment crop, while an
    image model's input is that crop."""
    from napari_nacsim.science.generative.immunodiff.config import MICRO, resolve
    from napari_nacsim.science.generative.immunodiff.network import ImmunoDiff
    from napari_nacsim.science.prediction.features import extract

    torch.manual_seed(0)
    image_model = ImmunoDiff(MICRO)
    with torch.no_grad():   # the zero convolutions of a fresh ControlNet pass nothing
        for p in image_model.controlnet.parameters():
            p.add_(0.05 * torch.randn_like(p))
    change_model = ImmunoDiff(resolve({**MICRO, "target": "change"}))
    change_model.load_state_dict(image_model.state_dict())
    rng = np.random.default_rng(1)
    crops = [rng.normal(-600, 150, (16, 96, 96)).astype(np.float32) for _ in range(2)]
    lobes = np.ones((16, 96, 96), np.uint8)
    vessels = np.zeros_like(lobes)

    def features(model, crop, variant):
        return extract(model, crop, lobes, vessels, {"PD_L1": 10.0}, variant=variant)

    assert np.array_equal(features(change_model, crops[0], "base"),
                          features(change_model, crops[1], "base"))
    assert not np.allclose(features(image_model, crops[0], "base"),
                           features(image_model, crops[1], "base"))
    assert not np.allclose(features(change_model, crops[0], "full"),   # through the control
                           features(change_model, crops[1], "full"))


def test_init_from_starts_a_run_from_a_trained_model(tmp_path):
    """--init-from: a later stage fine-tuned from a trained model's weights (e.g. another
    parameterisation); the stages not run keep that model's weights; the card says so."""
    from safetensors.torch import load_file

    folder = write_records(tmp_path / "records")
    cfg = micro_config(tmp_path / "micro.json")
    sys.path.insert(0, str(ROOT / "training"))
    try:
        import train_lung
    finally:
        sys.path.pop(0)
    common = ["--config", str(cfg), "--data", str(folder), "--use-cached", "--no-progress"]
    assert train_lung.main(common + ["--out", str(tmp_path / "first")]) == 0
    first = tmp_path / "first" / "model"
    first_card = json.loads((first / "model_card.json").read_text())
    v_cfg = micro_config(tmp_path / "v.json", diffusion={"train_timesteps": 100,
                                                       "prediction_type": "v_prediction"})
    out = tmp_path / "second"
    assert train_lung.main(["--config", str(v_cfg), "--data", str(folder), "--use-cached",
                            "--no-progress", "--out", str(out), "--init-from", str(first),
                            "--stages", "adapter"]) == 0
    card = json.loads((out / "model" / "model_card.json").read_text())
    assert card["training"]["initialised_from"]["model_hash"] == first_card["model_hash"]
    assert card["training"]["initialised_from"]["prediction_type"] == "epsilon"
    assert card["config"]["diffusion"]["prediction_type"] == "v_prediction"
    for part in ("vl", "unet"):                               # not trained: unchanged
        a, b = load_file(str(first / f"{part}.safetensors")), \
            load_file(str(out / "model" / f"{part}.safetensors"))
        assert all(torch.equal(a[k], b[k]) for k in a)
    a, b = load_file(str(first / "adapter.safetensors")), \
        load_file(str(out / "model" / "adapter.safetensors"))
    assert not all(torch.equal(a[k], b[k]) for k in a)      # trained on

    wide = micro_config(tmp_path / "wide.json", unet={"channels": [8, 16],
                                                      "attention_levels": [False, True],
                                                      "norm_num_groups": 4,
                                                      "num_head_channels": 8})
    with pytest.raises(SystemExit, match="network sizes differ"):
        train_lung.main(["--config", str(wide), "--data", str(folder), "--use-cached",
                         "--no-progress", "--out", str(tmp_path / "third"), "--init-from",
                         str(first), "--stages", "adapter"])


def test_velocity_and_sample_targets():
    from napari_nacsim.science.generative.immunodiff.config import MICRO, resolve
    from napari_nacsim.science.generative.immunodiff.sampling import noise_schedule
    from napari_nacsim.science.generative.losses import prediction_target

    g = torch.Generator().manual_seed(0)
    clean, noise = torch.randn(4, 1, 6, 6, generator=g), torch.randn(4, 1, 6, 6, generator=g)
    t = torch.tensor([0, 10, 50, 99])
    for kind, expected in (("epsilon", noise), ("sample", clean)):
        sched = noise_schedule(resolve({**MICRO, "diffusion": {"train_timesteps": 100,
                                                                "prediction_type": kind}}))
        assert torch.equal(prediction_target(sched, clean, noise, t), expected)
    sched = noise_schedule(resolve({**MICRO, "diffusion": {"train_timesteps": 100,
                                                            "prediction_type": "v_prediction"}}))
    v = prediction_target(sched, clean, noise, t)
    ab = sched.alphas_cumprod[t].view(-1, 1, 1, 1)
    assert torch.allclose(v, ab.sqrt() * noise - (1 - ab).sqrt() * clean, atol=1e-6)
    # x_t and v give back the clean slice: x0 = sqrt(ab) x_t - sqrt(1 - ab) v
    xt = sched.add_noise(clean, noise, t)
    assert torch.allclose(ab.sqrt() * xt - (1 - ab).sqrt() * v, clean, atol=1e-5)
