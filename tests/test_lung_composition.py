"""The lung follow-up composed around the baseline tumour (`immunodiff.compose`): the
pre-treatment crop exactly outside the region, the generated crop exactly inside, a smooth
blend between, a region that holds the phantom's largest growth, the same output twice,
the composition in every generated image's provenance, and one-line errors for a missing
or misplaced mask. Micro configurations and synthetic crops (no phantom rendering)."""

from __future__ import annotations

import numpy as np
import pytest

from generative_helpers import saved_lung_micro_model

from napari_nacsim.core.errors import InputError
from napari_nacsim.science.generative.immunodiff.compose import (Composition, compose,
                                                                  tumour_region)

SPACING = (4.0, 3.0, 3.0)          # the lung crop's voxels (z, y, x), mm
SETTINGS = Composition(growth=0.5, allowance_mm=8.0, feather_mm=12.0)


def ball(shape, centre, radius_vox) -> np.ndarray:
    idx = np.indices(shape).astype(float)
    d2 = sum(((i - c) * s / SPACING[1]) ** 2 for i, c, s in zip(idx, centre, SPACING))
    return (d2 <= radius_vox ** 2).astype(np.uint8)


def test_outside_is_the_input_inside_the_generated_crop_and_the_blend_is_smooth():
    from scipy import ndimage

    shape = (16, 40, 40)
    mask = ball(shape, (8, 20, 20), 3)
    region = tumour_region(mask, SPACING, SETTINGS, grid=shape)
    rng = np.random.default_rng(0)
    pre = rng.normal(-700, 200, shape).astype(np.float32)
    generated = rng.normal(-650, 250, (2, *shape)).astype(np.float32)
    out = compose(pre, generated, region)

    distance = ndimage.distance_transform_edt(mask == 0, sampling=SPACING)
    margin = region.margin_mm
    points = np.argwhere(mask) * np.asarray(SPACING)
    reach = np.linalg.norm(points - points.mean(0), axis=1).max()
    assert margin == pytest.approx(0.5 * reach + 8.0)
    inside, outside = distance <= margin, distance >= margin + 12.0
    assert inside.sum() > 0 and outside.sum() > 0 and (~inside & ~outside).sum() > 0
    for k in range(2):
        assert np.array_equal(out[k][outside], pre[outside])          # exactly the input
        assert np.array_equal(out[k][inside], generated[k][inside])   # exactly generated
    # smooth: between neighbours the weight moves by at most one voxel / the feather width
    for axis, step in enumerate(SPACING):
        jump = np.abs(np.diff(region.weight, axis=axis)).max()
        assert 0 < jump <= step / 12.0 + 1e-6, (axis, jump)
    # between, the output lies between the input and the generated crop
    lo, hi = np.minimum(pre, generated[0]), np.maximum(pre, generated[0])
    assert np.all((out[0] >= lo - 1e-3) & (out[0] <= hi + 1e-3))


def test_a_larger_tumour_gets_a_larger_margin_and_an_empty_mask_is_recorded():
    shape = (16, 40, 40)
    small = tumour_region(ball(shape, (8, 20, 20), 2), SPACING, SETTINGS, grid=shape)
    large = tumour_region(ball(shape, (8, 20, 20), 6), SPACING, SETTINGS, grid=shape)
    assert large.margin_mm > small.margin_mm + 5
    assert large.record()["generated_share"] > small.record()["generated_share"]
    text = small.record()["text"]
    assert text.startswith(f"composed outside {small.margin_mm:.1f} mm of the baseline "
                           "tumour") and "\n" not in text
    empty = tumour_region(np.zeros(shape, np.uint8), SPACING, SETTINGS, grid=shape)
    assert not empty.composed and np.all(empty.weight == 1)
    assert empty.record()["text"].startswith("not composed")


@pytest.mark.parametrize("mask, spacing, needle", [
    (None, SPACING, "is missing"),
    (np.ones((16, 40, 41), np.uint8), SPACING, "has shape (16, 40, 41)"),
    (np.ones((16, 40, 40), np.uint8), (4.0, 0.0, 3.0), "voxel spacing"),
])
def test_a_missing_or_misplaced_mask_is_one_line(mask, spacing, needle):
    with pytest.raises(InputError) as err:
        tumour_region(mask, spacing, SETTINGS, grid=(16, 40, 40))
    assert needle in str(err.value) and "\n" not in str(err.value)
    assert str(err.value).startswith("baseline tumour mask:")


def test_the_defaults_come_from_the_phantom_and_its_growth_stays_inside_the_margin():
    """growth is the phantom's largest growth (+50 %); for phantom tumours (their own shapes
    and sizes) grown by it, every voxel whose value changes (with the partial-volume rim)
    lies where the weight is 1."""
    from scipy import ndimage

    from napari_nacsim.science.generative.immunodiff.config import DEFAULTS
    from napari_nacsim.science.phantoms import lung
    from napari_nacsim.science.phantoms.base import patient_seed
    from napari_nacsim.science.phantoms.lung_outcomes import diameter_change_percent
    from napari_nacsim.science.phantoms.shapes import Grid

    growth = max(diameter_change_percent(False, u) for u in np.linspace(0, 1, 101)) / 100
    settings = Composition.from_config(DEFAULTS)
    assert settings.growth == pytest.approx(growth)
    phantom_grid = Grid((40, 128, 160), (4.0, 2.5, 2.5))
    lobes = np.ones(phantom_grid.shape, np.uint8)
    spacing = np.asarray(SPACING)
    for index in range(4):
        patient = lung.make_patient(0, index)
        tumour = lung._place_tumour(patient_seed(0, index, "tumour-shape"), phantom_grid,
                                    lobes, 1, patient.tumour_diameter_mm)
        half = tumour.reach_mm * (1 + growth) + 25.0
        n = np.ceil(2 * half / spacing).astype(int)
        axes = [(np.arange(k) + 0.5) * s - k * s / 2 for k, s in zip(n, spacing)]
        points = np.stack(np.meshgrid(*axes, indexing="ij"), -1) + tumour.blob.center_mm

        def shows(scale):   # the phantom's tumour weight (its 2 mm rim included) > 0
            depth = tumour.depth(points, scale)
            return (1 - depth) * tumour.mean_radius_mm * scale / 2 + 0.5 > 0

        mask = (tumour.depth(points, 1.0) < 1.0).astype(np.uint8)
        changed = shows(1.0 + growth) | shows(1.0)
        region = tumour_region(mask, SPACING, settings, grid=mask.shape)
        assert np.all(region.weight[changed] == 1.0), index
        # and the region is not the whole crop: beyond it, the input
        far = ndimage.distance_transform_edt(mask == 0, sampling=SPACING) > \
            region.margin_mm + settings.feather_mm
        assert far.any() and np.all(region.weight[far] == 0)


# --- through the sampler and the engine (micro model) -----------------------------------------

@pytest.fixture(scope="module")
def micro(tmp_path_factory):
    return saved_lung_micro_model(tmp_path_factory.mktemp("lung_micro") / "model",
                                  target="change")


@pytest.fixture(scope="module")
def own():
    """A phantom patient's clinical values (drawn without images)."""
    from napari_nacsim.families import get_family
    from napari_nacsim.science.phantoms import lung

    clinical = lung.make_patient(0, 0).clinical
    return {v.name: clinical[v.name] for v in get_family("lung").schema.condition_variables
            if v.derive is None}


@pytest.fixture(scope="module")
def crop():
    """A synthetic crop on the model grid with lobes, vessels and a tumour (Scans)."""
    from napari_nacsim.core.scan import LABELS, Scan

    shape = (16, 96, 96)
    rng = np.random.default_rng(1)
    affine = np.diag([3.0, 3.0, 4.0, 1.0])
    tumour = ball(shape, (8, 48, 48), 4)
    image = (rng.normal(-800, 40, shape) + 850.0 * tumour).astype(np.float32)
    lobes = np.where(np.indices(shape)[2] < 48, 1, 4).astype(np.uint8)
    vessels = (rng.random(shape) < 0.02).astype(np.uint8)
    return (Scan(image, affine), {"lobes": Scan(lobes, affine, kind=LABELS),
                                  "vessels": Scan(vessels, affine, kind=LABELS),
                                  "tumour": Scan(tumour, affine, kind=LABELS)})


def test_sampler_output_is_the_input_outside_and_the_generated_crop_inside(micro, crop):
    from napari_nacsim.science.generative.immunodiff.sampling import generate

    image, context = crop
    net = micro.network
    pre, lobes, vessels = (np.asarray(s.array) for s in (image, context["lobes"],
                                                           context["vessels"]))
    scenario = [{"time": "post", "PD_L1": 50.0}]
    region = micro.family.composition_region(net, image, context)
    plain = generate(net, pre, lobes, vessels, scenario, seed=3, steps=2)
    composed = generate(net, pre, lobes, vessels, scenario, seed=3, steps=2, region=region)
    again = generate(net, pre, lobes, vessels, scenario, seed=3, steps=2, region=region)
    np.testing.assert_array_equal(composed, again)                    # deterministic
    w = region.weight
    assert np.array_equal(composed[0][w == 0], pre[w == 0])
    assert np.array_equal(composed[0][w == 1], plain[0][w == 1])
    assert np.abs(plain[0][w == 0] - pre[w == 0]).max() > 1.0    # there was noise to remove
    with pytest.raises(InputError, match="composition region: has shape"):
        generate(net, pre, lobes, vessels, scenario, steps=1,
                 region=tumour_region(np.ones((4, 4, 4)), SPACING, SETTINGS, grid=(4, 4, 4)))


def test_each_generated_image_records_its_composition(micro, crop, own):
    from immunodiff_helpers import ThresholdSegmenter

    from napari_nacsim.engine import WhatIfRequest, WhatIfSession, simulate

    image, context = crop
    scenarios = [{"time": "post", **own, "PD_L1": v} for v in (0.0, 50.0)]
    images = simulate(micro, image, scenarios, seed=2, steps=2, context=context)
    for scan in images:
        record = scan.provenance["composition"]
        assert record["text"].startswith("composed outside") and record["composed"]
        assert record["mask"] == "given with the crop" and 0 < record["generated_share"] < 0.5
        assert scan.provenance["history"][-1]["composition"] == record
        w = micro.family.composition_region(micro.network, image, context).weight
        assert np.array_equal(scan.array[w == 0], image.array[w == 0])
    # the what-if session composes around its own baseline segmentation, and reports it
    session = WhatIfSession(micro, ThresholdSegmenter())
    result = session.run(image, WhatIfRequest(clinical=own, target="post",
                                              compare="PD_L1", compare_values=(0, 50),
                                              steps=1, samples=2),
                         context={k: context[k] for k in ("lobes", "vessels")})
    follow = result.arms[0].followups["post"]
    for sample in follow.samples:
        assert sample.provenance["composition"]["mask"] == "the baseline segmentation"
    report = result.to_report()["scenarios"][0]["followups"]["post"]
    assert report["composition"]["text"].startswith("composed outside")


def test_a_mask_off_the_crops_grid_is_one_line_and_a_model_without_composition_ignores_it(
        micro, crop, own, tmp_path):
    from napari_nacsim.core.scan import LABELS, Scan
    from napari_nacsim.engine import load_model, simulate
    from napari_nacsim.science.generative.immunodiff.checkpoint import save_checkpoint
    from napari_nacsim.science.generative.immunodiff.network import ImmunoDiff

    image, context = crop
    scenario = [{"time": "post", **own, "PD_L1": 0.0}]
    moved = Scan(context["tumour"].array, np.diag([3.0, 3.0, 5.0, 1.0]), kind=LABELS)
    for bad in (moved, Scan(context["tumour"].array[:, :90], np.diag([3.0, 3.0, 4.0, 1.0]),
                            kind=LABELS)):
        with pytest.raises(InputError) as err:
            simulate(micro, image, scenario, steps=1, context={**context, "tumour": bad})
        assert "\n" not in str(err.value)
    # the family's generator given no mask at all: refused (the engine finds one first)
    with pytest.raises(InputError, match="baseline tumour mask: is missing"):
        micro.family.generate(micro.network, image, scenario, seed=0, steps=1,
                              sampler="ddim", guidance_scale=1.0,
                              context={k: context[k] for k in ("lobes", "vessels")})
    # composition off in the config: the whole crop as generated, nothing recorded
    config = {**micro.network.config, "composition": {"around_tumour": False}}
    net = ImmunoDiff(config)
    net.load_state_dict(micro.network.state_dict())
    off = load_model(save_checkpoint(net, tmp_path / "off", {"title": "micro, no composition"}))
    (plain,) = simulate(off, image, scenario, seed=2, steps=2, context=context)
    (composed,) = simulate(micro, image, scenario, seed=2, steps=2, context=context)
    assert "composition" not in plain.provenance
    w = micro.family.composition_region(micro.network, image, context).weight
    assert np.array_equal(composed.array[w == 1], plain.array[w == 1])
    assert not np.array_equal(composed.array[w == 0], plain.array[w == 0])


# --- the configuration ------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["lung_tiny", "lung_tiny_implicit", "lung_paper"])
def test_each_shipped_config_composes_like_the_bundled_model(name):
    """A model trained from a shipped config composes as the bundled one does: the config
    states its composition (not left to a code default that may change) and it is the
    bundled model's."""
    import json

    from napari_nacsim.families import get_family
    from napari_nacsim.science.generative.checkpoint import read_card
    from napari_nacsim.science.generative.immunodiff.config import (CONFIG_DIR, DEFAULTS,
                                                                     load_config, resolve)

    stated = json.loads((CONFIG_DIR / f"{name}.json").read_text()).get("composition")
    assert stated == DEFAULTS["composition"], f"{name}.json: composition {stated}"
    bundled = read_card(get_family("lung").bundled_generator_path())["config"]
    assert Composition.from_config(load_config(name)) == \
        Composition.from_config(resolve(bundled)) == SETTINGS


@pytest.mark.parametrize("composition, needle", [
    ({"around_tumour": True, "feather_mm": 0}, "feather_mm 0 > 0"),
    ({"around_tumour": True, "growth": "half"}, "composition.growth 'half' is not a number"),
    ("on", "composition 'on' is not a mapping")])
def test_a_bad_composition_in_a_config_file_is_one_line_naming_it(tmp_path, composition,
                                                                  needle):
    import json

    from napari_nacsim.science.generative.immunodiff.config import load_config

    path = tmp_path / "lung_bad.json"
    path.write_text(json.dumps({"composition": composition}))
    with pytest.raises(InputError) as err:
        load_config(path)
    assert str(err.value).startswith(str(path)) and needle in str(err.value)
    assert "\n" not in str(err.value)
