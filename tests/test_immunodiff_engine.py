"""The lung family through the engine with a micro ImmunoDiff: a what-if session comparing
PD-L1 0 % and 50 % on a lung sample crop (with its lobe and vessel masks as context), and a
clear message when the anatomy masks are missing."""

from __future__ import annotations

import numpy as np
import pytest

from generative_helpers import saved_lung_micro_model
from immunodiff_helpers import ThresholdSegmenter


@pytest.fixture(scope="module")
def lung_sample():
    """A lung phantom's baseline model inputs (baseline only: no registration needed)."""
    from napari_nacsim.families import get_family

    family = get_family("lung")
    phantom = family.make_phantom(0, 0)
    rendering = phantom.render()
    visits = rendering.visits()
    inputs = family.model_inputs({"pre": visits["pre"]})["pre"]
    return family, dict(rendering.clinical), inputs


@pytest.fixture(scope="module")
def micro_lung_model(tmp_path_factory):
    return saved_lung_micro_model(tmp_path_factory.mktemp("lung_micro") / "model")


def test_session_compares_pd_l1_values_on_a_lung_sample(lung_sample, micro_lung_model):
    from napari_nacsim.engine import WhatIfRequest, WhatIfSession

    family, clinical, inputs = lung_sample
    assert micro_lung_model.family is family and micro_lung_model.grid == (16, 96, 96)
    session = WhatIfSession(micro_lung_model, ThresholdSegmenter())
    own = {v.name: clinical[v.name] for v in family.schema.condition_variables
           if v.derive is None}
    request = WhatIfRequest(clinical=own, target="post", compare="PD_L1",
                            compare_values=(0, 50), steps=2)
    result = session.run(inputs["image"], request, context=family.model_context(inputs))
    assert [arm.label for arm in result.arms] == ["PD-L1 TPS 0 %", "PD-L1 TPS 50 %"]
    a, b = (arm.followups["post"].image for arm in result.arms)
    assert a.shape == (16, 96, 96) and a.provenance["synthetic"] is True
    assert a.provenance["scenario"]["PD_L1"] == 0.0 and b.provenance["scenario"]["PD_L1"] == 50
    assert not np.array_equal(a.array, b.array)          # the arms differ by PD-L1 only
    assert result.baseline_size.unit == "mL"
    assert result.to_report()["scenarios"][1]["clinical"]["PD_L1"] == 50

    # the same image without its anatomy masks: refused, naming them and how to get them
    from napari_nacsim.core.errors import InputError

    with pytest.raises(InputError, match="lobes and vessels masks.*nacsim crop"):
        session.run(inputs["image"], WhatIfRequest(clinical=own, target="post", steps=2,
                                                   seed=1))
