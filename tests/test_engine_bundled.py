"""The bundled breast NAC model ships inside the package and is the default."""

from __future__ import annotations

import json

import numpy as np

from napari_nacsim.core.scan import Scan, affine_from_spacing
from napari_nacsim.engine import bundled_model_path, load_model, parse_scenario, simulate
from napari_nacsim.science.generative.checkpoint import verify_checkpoint
from napari_nacsim.science.generative.config import builtin_config_path


def test_bundled_model_is_small_verified_and_documented():
    folder = bundled_model_path("breast")
    total = sum(f.stat().st_size for f in folder.iterdir())
    assert total < 30 * 1024 * 1024
    card = verify_checkpoint(folder)
    assert card["family"] == "breast"
    assert card["training"]["command"].startswith("python training/train_nac.py")
    assert card["training"]["stage2_steps"] > 0
    assert card["data"]["split"]["test"] and not (set(card["data"]["split"]["test"])
                                                  & set(card["data"]["split"]["train"]))
    bundled_config = json.loads(builtin_config_path("breast_128").read_text())
    assert card["config"]["unet"] == bundled_config["unet"]
    assert "randomly initialised" in card["text_tower_note"]


def test_default_model_generates_deterministically():
    model = load_model()  # no arguments: the bundled default
    assert model.path == bundled_model_path("breast")
    rng = np.random.default_rng(1)
    mip = Scan(array=rng.random((128, 128)).astype(np.float32),
               affine=affine_from_spacing((2.0, 2.0)))
    pair = [parse_scenario("time=T2,pCR=1,HR=1,HER2=0"),
            parse_scenario("time=T2,pCR=0,HR=1,HER2=0")]
    a = simulate(model, mip, pair, seed=11, steps=3)
    b = simulate(model, mip, pair, seed=11, steps=3)
    assert all(np.array_equal(x.array, y.array) for x, y in zip(a, b))
    assert a[0].provenance["sampler"] == model.default_sampler
    assert a[0].shape == (128, 128) and 0 <= a[0].array.min() and a[0].array.max() <= 1
