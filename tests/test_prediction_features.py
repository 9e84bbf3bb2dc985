"""Up-block features of a micro ImmunoDiff: shape, determinism, what each variant reads
(clinical values reach the full and adapter-only features, not the anatomy-only or base
ones), the hooks are removed, and bad crops are refused."""

from __future__ import annotations

import numpy as np
import pytest

from prediction_helpers import micro_model_folder

from napari_nacsim.core.errors import InputError


@pytest.fixture(scope="module")
def micro(tmp_path_factory):
    from napari_nacsim.science.generative.immunodiff.checkpoint import load_checkpoint

    model, _ = load_checkpoint(micro_model_folder(tmp_path_factory.mktemp("m") / "model"))
    rng = np.random.default_rng(0)
    pre = rng.normal(-500, 300, (16, 96, 96)).astype(np.float32)
    lobes = rng.integers(0, 6, (16, 96, 96)).astype(np.uint8)
    vessels = (rng.random((16, 96, 96)) < 0.05).astype(np.uint8)
    clinical = {"age": 66.0, "sex": "male", "race": "White", "CEA": 4.0, "ANC": 5.0,
                "ALC": 1.5, "NLR": 5.0 / 1.5, "AEC": 0.15, "AMC": 0.55, "PD_L1": 0.0}
    return model, pre, lobes, vessels, clinical


def test_features_shape_determinism_and_variants(micro):
    from napari_nacsim.science.prediction import features as F

    model, pre, lobes, vessels, clinical = micro
    f = F.extract(model, pre, lobes, vessels, clinical)
    assert f.shape == (len(F.feature_names(model)),) == (2 * sum(F.up_block_channels(model)),)
    assert np.isfinite(f).all()
    assert np.array_equal(f, F.extract(model, pre, lobes, vessels, clinical))
    assert all(len(b._forward_hooks) == 0 for b in model.unet.up_blocks)
    other = {**clinical, "PD_L1": 90.0}
    for variant, reads_clinical in (("full", True), ("adapter_only", True),
                                    ("anatomy_only", False), ("base", False)):
        a = F.extract(model, pre, lobes, vessels, clinical, variant=variant)
        b = F.extract(model, pre, lobes, vessels, other, variant=variant)
        assert (np.abs(a - b).max() > 1e-6) == reads_clinical, variant
    full = F.extract(model, pre, lobes, vessels, clinical, variant="full")
    assert np.abs(full - F.extract(model, pre, lobes, vessels, clinical,
                                   variant="adapter_only")).max() > 1e-6   # anatomy read
    assert np.abs(full - F.extract(model, pre, lobes, vessels, clinical,
                                   timestep_fraction=0.5)).max() > 1e-6     # timestep read
    assert F.timestep_of(model) == 10    # 0.1 of the micro model's 100 training steps


def test_bad_inputs_are_refused(micro):
    from napari_nacsim.science.prediction import features as F

    model, pre, lobes, vessels, clinical = micro
    with pytest.raises(InputError, match="pre-treatment crop"):
        F.extract(model, pre[:8], lobes, vessels, clinical)
    with pytest.raises(InputError, match="variant"):
        F.extract(model, pre, lobes, vessels, clinical, variant="nope")
