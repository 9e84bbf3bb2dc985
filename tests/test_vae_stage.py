"""Stage 0: a latent configuration trains its own VAE (diffusers AutoencoderKL) before the
diffusion stages; the VAE is saved with hash checks, frozen afterwards, and a resumed run
continues exactly."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from generative_helpers import micro_config, random_cohort
from napari_nacsim.science.generative.checkpoint import load_checkpoint
from napari_nacsim.science.generative.train import train, trains_vae

VAE = {"in_channels": 1, "out_channels": 1, "latent_channels": 4, "layers_per_block": 1,
       "block_out_channels": [8, 16], "norm_num_groups": 4,
       "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D"],
       "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D"], "sample_size": 16}


def latent_config():
    config = micro_config(name="breast_micro_latent", vae=dict(VAE),
                          controlnet={"conditioning_embedding_out_channels": [8, 8],
                                      "init_from_unet": True})
    config["training"]["vae"] = {"steps": 3, "batch_size": 4, "lr": 1e-3, "kl_weight": 1e-6}
    return config


@pytest.fixture(scope="module")
def cohort():
    return random_cohort(6)


def test_the_vae_trains_first_then_is_frozen_and_saved(tmp_path, cohort):
    assert trains_vae(latent_config()) and not trains_vae(micro_config())
    assert not trains_vae({**latent_config(), "weights": {"vae": "/some/sd21/vae"}})
    folder = train(latent_config(), cohort, tmp_path, seed=0, stage1_steps=2, stage2_steps=2,
                   batch_size=2, progress=False)
    rows = [line.split(",")[:2] for line in (tmp_path / "loss_log.csv").read_text().split()[1:]]
    assert rows == [["0", "1"], ["0", "2"], ["0", "3"], ["1", "1"], ["1", "2"],
                    ["2", "1"], ["2", "2"]]
    card = json.loads((folder / "model_card.json").read_text())
    assert card["files"]["vae"]["path"] == "vae.safetensors" and card["files"]["vae"]["sha256"]
    record = card["training"]["vae"]
    assert record["steps"] == 3 and record["kl_weight"] == 1e-6
    assert card["config"]["vae"]["scaling_factor"] == pytest.approx(record["scaling_factor"])
    assert record["scaling_factor"] != 1.0
    model, _ = load_checkpoint(folder)     # hashes verified on load
    # the frozen VAE is the one stage 0 trained: later stages did not change it
    untrained = train(latent_config(), cohort, tmp_path / "vae_only", seed=0, stage1_steps=0,
                      stage2_steps=0, batch_size=2, progress=False)
    a = load_file(str(folder / "vae.safetensors"))
    b = load_file(str(untrained / "vae.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    # encode / decode shapes: 16 x 16 pixels <-> 4 x 8 x 8 latents
    images = torch.rand(2, 1, 16, 16)
    latents = model.encode_images(images)
    assert latents.shape == (2, 4, 8, 8)
    assert model.decode(latents).shape == (2, 1, 16, 16)
    assert float(latents.std()) == pytest.approx(1.0, abs=0.6)   # scaled to unit spread


def test_a_controlnet_embedding_that_misses_the_latent_grid_is_refused():
    from napari_nacsim.core.errors import InputError
    from napari_nacsim.science.generative.config import validate_config

    with pytest.raises(InputError, match="use 2 entries"):
        validate_config(micro_config(vae=dict(VAE)))


def test_resume_inside_the_vae_stage_continues_exactly(tmp_path, cohort, monkeypatch):
    import napari_nacsim.science.generative.train as train_module

    full = train(latent_config(), cohort, tmp_path / "full", seed=3, vae_steps=3,
                 stage1_steps=1, stage2_steps=1, batch_size=2, progress=False)
    save = train_module._save_resume

    def interrupted(folder, model, optimizer, stage, step, extra):
        save(folder, model, optimizer, stage, step, extra)
        if (stage, step) == (0, 1):
            raise KeyboardInterrupt  # the run stops right after its first checkpoint

    monkeypatch.setattr(train_module, "_save_resume", interrupted)
    part = tmp_path / "part"
    with pytest.raises(KeyboardInterrupt):
        train(latent_config(), cohort, part, seed=3, vae_steps=3, stage1_steps=1,
              stage2_steps=1, batch_size=2, checkpoint_every=1, progress=False)
    monkeypatch.setattr(train_module, "_save_resume", save)
    state = json.loads((part / "resume" / "train_state.json").read_text())
    assert (state["stage"], state["step"]) == (0, 1)
    resumed = train(latent_config(), cohort, part, seed=3, vae_steps=3, stage1_steps=1,
                    stage2_steps=1, batch_size=2, checkpoint_every=1, progress=False)
    for name in ("vae", "unet"):
        a = load_file(str(full / f"{name}.safetensors"))
        b = load_file(str(resumed / f"{name}.safetensors"))
        for key in a:
            torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6)
