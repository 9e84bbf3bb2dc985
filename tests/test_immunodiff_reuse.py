"""What the samples of a lung comparison share (`immunodiff.reuse`, the embedded control,
the U-Net's encoder at the first step) is computed once, and the output stays bit for bit
what the plain path gives: MONAI's networks called as they are, every condition recomputed
for every sample. Micro configuration, synthetic crops."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from generative_helpers import saved_lung_micro_model, synthetic_lung_crop

SCENARIOS = [{"time": "post", "PD_L1": 0.0, "age": 60.0},
             {"time": "post", "PD_L1": 80.0, "age": 60.0}]


@pytest.fixture(scope="module")
def micro(tmp_path_factory):
    return saved_lung_micro_model(tmp_path_factory.mktemp("lung_micro") / "model",
                                  target="change")


@pytest.fixture(scope="module")
def arrays():
    return synthetic_lung_crop()


def test_the_precomputed_control_and_the_shared_encoder_give_monais_output(micro):
    net = micro.network
    torch.manual_seed(1)
    half = torch.randn(16, 3, 96, 96)
    x25 = torch.cat([half, half])                    # two scenarios from the same noise
    control = torch.randn(32, net.control_channels, 48, 48)
    t = torch.tensor([700])
    with torch.no_grad():
        plain = net.denoise(x25, t, control)         # MONAI's ControlNet and U-Net as they are
        embedded = net.embed_control(control)
        assert torch.equal(net.denoise(x25, t, embedded_control=embedded), plain)
        assert torch.equal(net.denoise(x25, t, embedded_control=embedded, copies=2), plain)
        assert torch.equal(net.denoise(x25, t, control, copies=2), plain)
        assert torch.equal(net.denoise(x25, t, copies=2), net.denoise(x25, t))  # base alone
        # the control reaches the output (the comparison above could not pass by ignoring it)
        assert not torch.equal(net.denoise(x25, t, embedded_control=0 * embedded), plain)
        with pytest.raises(ValueError, match="not 3 equal parts"):
            net.denoise(x25, t, embedded_control=embedded, copies=3)


def _counting(monkeypatch, net, name):
    calls = []
    original = getattr(net, name)

    def counted(*args, **kwargs):
        calls.append(name)
        return original(*args, **kwargs)

    monkeypatch.setattr(net, name, counted)
    return calls


def test_samples_reuse_what_does_not_depend_on_the_seed_with_the_same_output(micro, arrays,
                                                                           monkeypatch):
    from napari_nacsim.science.generative.immunodiff.reuse import Reuse
    from napari_nacsim.science.generative.immunodiff.sampling import generate

    net = micro.network
    anatomy = _counting(monkeypatch, net, "anatomy")
    embed = _counting(monkeypatch, net, "embed_control")
    fresh = [generate(net, *arrays, SCENARIOS, seed=s, steps=2) for s in range(3)]
    assert len(anatomy) == len(embed) == 3                      # once per call without reuse
    anatomy.clear(), embed.clear()
    reuse = Reuse()
    reused = [generate(net, *arrays, SCENARIOS, seed=s, steps=2, reuse=reuse)
              for s in range(3)]
    assert len(anatomy) == len(embed) == 1                      # once for the three samples
    for a, b in zip(fresh, reused):
        assert np.array_equal(a, b)
    assert not np.array_equal(reused[0], reused[1])             # the seeds still differ
    # other scenarios: the crop's conditions are reused, the control is embedded anew
    other = [{**s, "PD_L1": 30.0} for s in SCENARIOS]
    out = generate(net, *arrays, other, seed=0, steps=2, reuse=reuse)
    assert len(anatomy) == 1 and len(embed) == 2
    anatomy.clear(), embed.clear()
    assert np.array_equal(out, generate(net, *arrays, other, seed=0, steps=2))
    anatomy.clear(), embed.clear()
    # another crop: everything anew
    pre, lobes, vessels = arrays
    generate(net, pre + 10.0, lobes, vessels, SCENARIOS, seed=0, steps=2, reuse=reuse)
    assert len(anatomy) == len(embed) == 1


def test_a_weight_update_is_never_served_a_stale_condition(micro, arrays, tmp_path):
    from napari_nacsim.science.generative.immunodiff.reuse import Reuse
    from napari_nacsim.science.generative.immunodiff.sampling import generate

    net = saved_lung_micro_model(tmp_path / "model", target="change").network
    reuse = Reuse()
    before = generate(net, *arrays, SCENARIOS, seed=0, steps=2, reuse=reuse)
    with torch.no_grad():   # a training step changes the anatomy encoders and the adapter
        for p in [*net.vl.parameters(), *net.controlnet.controlnet_cond_embedding.parameters()]:
            p.add_(0.05)
    after = generate(net, *arrays, SCENARIOS, seed=0, steps=2, reuse=reuse)
    assert not np.array_equal(after, before)
    assert np.array_equal(after, generate(net, *arrays, SCENARIOS, seed=0, steps=2))


def test_the_engine_computes_a_comparisons_conditions_and_region_once(micro, monkeypatch):
    from napari_nacsim.core.scan import LABELS, Scan
    from napari_nacsim.engine import simulate
    from napari_nacsim.families import get_family
    from napari_nacsim.science.generative.immunodiff import compose
    from napari_nacsim.science.phantoms import lung

    clinical = lung.make_patient(0, 0).clinical   # drawn without images
    own = {v.name: clinical[v.name] for v in get_family("lung").schema.condition_variables
           if v.derive is None}
    scenarios = [{"time": "post", **own, "PD_L1": v} for v in (0.0, 50.0)]

    rng = np.random.default_rng(1)
    shape, affine = (16, 96, 96), np.diag([3.0, 3.0, 4.0, 1.0])
    tumour = np.zeros(shape, np.uint8)
    tumour[6:10, 44:52, 44:52] = 1
    image = Scan((rng.normal(-800, 40, shape) + 850.0 * tumour).astype(np.float32), affine)
    context = {"lobes": Scan(np.where(np.indices(shape)[2] < 48, 1, 4).astype(np.uint8),
                             affine, kind=LABELS),
               "vessels": Scan((rng.random(shape) < 0.02).astype(np.uint8), affine,
                               kind=LABELS),
               "tumour": Scan(tumour, affine, kind=LABELS)}
    regions = _counting(monkeypatch, compose, "tumour_region")
    anatomy = _counting(monkeypatch, micro.network, "anatomy")
    embed = _counting(monkeypatch, micro.network, "embed_control")
    outs = [simulate(micro, image, scenarios, seed=seed, steps=2, context=context)
            for seed in range(3)]
    # the region was computed once for the record and the crop of all three samples
    assert len(regions) == len(anatomy) == len(embed) == 1
    assert outs[0][0].provenance["composition"]["mask"] == "given with the crop"
    # what is shared cannot be changed through one sample
    region = micro.family.composition_region(micro.network, image, context)
    with pytest.raises(ValueError, match="read-only"):
        region.weight[0, 0, 0] = 0.5
