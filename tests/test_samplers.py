"""One sampler table (science.generative.samplers) for both networks and every face: the
names, the scheduler each makes, and the faces that offer them (issue 20)."""

from __future__ import annotations

import pytest
import torch

from generative_helpers import micro_model, scenarios
from napari_nacsim.science.generative.samplers import SAMPLERS, make_scheduler


@pytest.fixture(scope="module")
def schedule():
    from diffusers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=100, prediction_type="v_prediction",
                         clip_sample=False).config


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_every_sampler_steps_trailing_and_clips_only_when_asked(schedule, sampler):
    free, clipped = make_scheduler(schedule, sampler), make_scheduler(schedule, sampler,
                                                                      clip=1.8)
    free.set_timesteps(4)
    assert int(free.timesteps[0]) == 99          # "trailing": from the last training step
    assert free.config.prediction_type == "v_prediction"
    for config, clip in ((free.config, None), (clipped.config, 1.8)):
        limit = (config.get("clip_sample") and config.get("clip_sample_range")) or \
            (config.get("thresholding") and config.get("sample_max_value")) or None
        assert limit == clip


def test_an_unknown_sampler_is_one_line_naming_the_known_ones(schedule):
    from napari_nacsim.core.errors import InputError

    with pytest.raises(InputError, match="sampler: 'euler' is not one of ddim, dpmpp, unipc, "
                                         "ddpm"):
        make_scheduler(schedule, "euler")


def test_the_breast_model_runs_the_ancestral_sampler_from_its_seed():
    """``ddpm`` draws noise at every step; the ControlNet loop draws it from the seed, so a
    seed gives the same image (it was the lung model's alone, and the workspace did not
    offer it)."""
    from napari_nacsim.science.generative.sampling import generate

    model = micro_model(seed=2)
    image = torch.rand(1, 16, 16, generator=torch.Generator().manual_seed(0))
    a, b, c = (generate(model, image, scenarios(("T1", True)), seed=s, steps=3,
                        sampler="ddpm") for s in (1, 1, 2))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_every_command_offers_the_one_list():
    """``--sampler`` of simulate, review and batch, and the breast checkpoint's sampling
    defaults, take the samplers of the one table (review lacked ddpm)."""
    import argparse

    from napari_nacsim.cli.main import build_parser

    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    offered = {}
    for name in ("simulate", "review", "batch"):
        option = next(a for a in commands.choices[name]._actions if "--sampler" in
                      a.option_strings)
        offered[name] = tuple(option.choices)
    assert offered == {name: SAMPLERS for name in offered}


def test_the_workspace_offers_the_one_list():
    """The workspace's sampler box is filled from the table (its own copy lacked ddpm, the
    lung paper model's default: the box could not show it)."""
    pytest.importorskip("qtpy")
    from napari_nacsim.plugin.workspace import controls

    assert controls.SAMPLERS is SAMPLERS
