"""The ``sd21`` loading path, on a small model of the same structure saved in the formats a
user brings: diffusers folders (UNet, VAE) and an open_clip weights file."""

from __future__ import annotations

import json

import open_clip
import pytest
import torch
from safetensors.torch import save_file

from generative_helpers import scenarios
from napari_nacsim.core.errors import InputError
from napari_nacsim.science.generative.checkpoint import load_checkpoint, save_checkpoint
from napari_nacsim.science.generative.config import builtin_config_path, load_config
from napari_nacsim.science.generative.pretrained import load_pretrained_model
from napari_nacsim.science.generative.sampling import generate

CLIP_NAME = "nacsim-test-sd21-like"
WIDTH = 32


@pytest.fixture(scope="module")
def user_files(tmp_path_factory):
    """A scaled-down SD 2.1 layout: linear-projection cross-attention UNet, 4-channel VAE,
    an open_clip CLIP model (vision + text) of the ViT-H/14 kind."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    root = tmp_path_factory.mktemp("user")
    folder = root / "clipcfg"
    folder.mkdir()
    (folder / f"{CLIP_NAME}.json").write_text(json.dumps({
        "embed_dim": WIDTH,
        "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16,
                       "patch_size": 16},
        "text_cfg": {"context_length": 12, "vocab_size": 49408, "width": WIDTH, "heads": 2,
                     "layers": 3}}))
    open_clip.add_model_config(folder)
    torch.manual_seed(0)
    clip = open_clip.create_model(CLIP_NAME, pretrained=None)
    state = {k: v.contiguous() for k, v in clip.state_dict().items()}
    save_file(state, str(root / "open_clip_model.safetensors"))
    torch.save(state, str(root / "open_clip_pytorch_model.bin"))
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, block_out_channels=(16, 32),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), layers_per_block=1,
        attention_head_dim=(2, 4), use_linear_projection=True, cross_attention_dim=WIDTH,
        norm_num_groups=8)
    unet.save_pretrained(str(root / "sd" / "unet"))
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4,
                        block_out_channels=(8, 16), norm_num_groups=4,
                        down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, sample_size=16)
    vae.save_pretrained(str(root / "sd" / "vae"))
    return root, state, unet


def _config(root, monkeypatch, clip_file="open_clip_model.safetensors"):
    config = json.loads(builtin_config_path("breast_sd21").read_text())
    config["text"]["open_clip_model"] = CLIP_NAME
    config["controlnet"]["conditioning_embedding_out_channels"] = [8, 16]  # /2 = the VAE's
    path = root / "cfg.json"
    path.write_text(json.dumps(config))
    monkeypatch.setenv("NACSIM_SD21", str(root / "sd"))
    monkeypatch.setenv("NACSIM_OPENCLIP", str(root / clip_file))
    return load_config(path)


@pytest.mark.parametrize("clip_file", ["open_clip_model.safetensors",
                                       "open_clip_pytorch_model.bin"])
def test_sd21_path_loads_user_files_and_generates(user_files, monkeypatch, tmp_path,
                                                  clip_file):
    root, clip_state, unet = user_files
    model = load_pretrained_model(_config(root, monkeypatch, clip_file)).eval()
    assert model.vae is not None and model.config["image_size"] == 16
    for k, v in unet.state_dict().items():
        assert torch.equal(model.unet.state_dict()[k], v)
    tower = model.conditioner.text.tower.state_dict()
    assert torch.equal(tower["token_embedding.weight"], clip_state["token_embedding.weight"])
    assert torch.equal(tower["transformer.resblocks.2.mlp.c_fc.weight"],
                       clip_state["transformer.resblocks.2.mlp.c_fc.weight"])
    image = torch.rand(1, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    out = generate(model, image, scenarios(("T2", True), ("T2", False)), seed=0, steps=2,
                   sampler="ddim")
    assert out.shape == (2, 1, 16, 16) and torch.isfinite(out).all()
    # a fine-tuned model saves and reloads through the ordinary checkpoint format
    loaded, card = load_checkpoint(save_checkpoint(model, tmp_path / "ft"))
    assert card["config"]["initialised_from"]["unet"].endswith("unet")
    again = generate(loaded, image, scenarios(("T2", True), ("T2", False)), seed=0, steps=2,
                     sampler="ddim")
    torch.testing.assert_close(out, again)


def test_sd21_path_errors(user_files, monkeypatch, tmp_path):
    root, _, _ = user_files
    config = _config(root, monkeypatch)
    bad = dict(config, weights={**config["weights"], "unet": str(tmp_path)})
    with pytest.raises(InputError, match="not a diffusers UNet folder"):
        load_pretrained_model(bad)
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"not a torch file")
    with pytest.raises(InputError, match="junk.bin: is not a readable open_clip"):
        load_pretrained_model(dict(config, weights={**config["weights"], "open_clip": str(junk)}))
    monkeypatch.delenv("NACSIM_SD21")
    with pytest.raises(InputError, match=r"\$\{NACSIM_SD21\} is not set"):
        load_config(root / "cfg.json")
