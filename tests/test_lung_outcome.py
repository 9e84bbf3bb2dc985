"""The lung response as an input of the generator, drawn per sample from P(response)
(abduction, action, prediction) — issue 18, on micro models (fast)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_nacsim.core.errors import InputError
from napari_nacsim.science.generative.outcome import (DRAWN, FIXED, NOT_GIVEN, choose_outcome,
                                                      draw_outcome, outcome_uniform)

from immunodiff_helpers import ThresholdSegmenter, lung_baseline_case


@pytest.fixture(scope="module")
def lung_sample():
    return lung_baseline_case()


def _micro(outcome: bool):
    from napari_nacsim.science.generative.immunodiff.config import MICRO, resolve

    cfg = resolve(MICRO)
    if outcome:
        cfg["adapter"]["outcome_input"] = ["responder"]
    return cfg


# --- the draw ----------------------------------------------------------------------------------

def test_a_sample_u_depends_on_its_seed_only_and_the_share_converges_to_p():
    assert outcome_uniform(7, "responder") == outcome_uniform(7, "responder")
    assert outcome_uniform(7, "responder") != outcome_uniform(8, "responder")
    assert outcome_uniform(7, "responder") != outcome_uniform(7, "other")
    us = np.array([outcome_uniform(s, "responder") for s in range(4000)])
    assert abs(us.mean() - 0.5) < 0.02 and us.min() >= 0 and us.max() < 1
    for p in (0.1, 0.37, 0.8):
        share = np.mean([draw_outcome(u, p) for u in us])
        assert abs(share - p) < 0.025, (p, share)
    # any n consecutive seeds (a request's samples) spread evenly: the share is within 2/n
    for n in (4, 8, 16):
        for first in (0, 5, 123):
            us = np.array([outcome_uniform(first + k, "responder") for k in range(n)])
            for p in np.linspace(0.0, 1.0, 41):
                assert abs(np.mean(us < p) - p) <= 2.0 / n, (n, first, p)


def test_a_higher_probability_never_turns_a_responder_into_a_non_responder():
    ps = np.linspace(0, 1, 11)
    for seed in range(300):
        drawn = [choose_outcome("responder", seed, p).value for p in ps]
        assert drawn == sorted(drawn), (seed, drawn)   # False ... False True ... True
    assert choose_outcome("responder", 3, 0.0).value is False
    assert choose_outcome("responder", 3, 1.0).value is True


def test_choose_outcome_fixed_drawn_and_not_given():
    d = choose_outcome("responder", 5, 0.4)
    assert d.source == DRAWN and d.p == 0.4 and d.value == (d.u < 0.4)
    assert choose_outcome("responder", 5, 0.4, fixed=True) .source == FIXED
    assert choose_outcome("responder", 5, 0.4, fixed=False).value is False
    none = choose_outcome("responder", 5, None)
    assert none.source == NOT_GIVEN and none.value is None
    with pytest.raises(ValueError):
        draw_outcome(0.3, 1.5)


def test_consecutive_seeds_step_by_the_golden_ratio_from_stored_offsets():
    """The draws of a saved request are reproducible: u of seeds 0-3 are the stored values
    (a changed offset or step changes which samples respond), and each seed steps u by the
    golden ratio's fraction (the even spread over any n consecutive seeds relies on it)."""
    golden = (5 ** 0.5 - 1) / 2
    assert [outcome_uniform(s, "responder") for s in range(4)] == pytest.approx(
        [0.8675227541014858, 0.48555674285138073, 0.10359073160127563, 0.7216247203511705],
        abs=1e-12)
    assert outcome_uniform(0, "other") == pytest.approx(0.9532870549674439, abs=1e-12)
    for seed in (0, 1, 41, 1000):
        step = (outcome_uniform(seed + 1, "responder") - outcome_uniform(seed, "responder")) % 1
        assert step == pytest.approx(golden, abs=1e-9)


def test_draw_outcome_at_the_edges_of_p_and_u():
    assert draw_outcome(0.0, 0.0) is False          # p = 0 never shows it, even for u = 0
    assert draw_outcome(0.999999, 1.0) is True
    assert draw_outcome(0.4, 0.4) is False and draw_outcome(0.39, 0.4) is True
    for bad in (-0.5, -1e-9, 1.0 + 1e-9, float("nan")):
        with pytest.raises(ValueError, match="is not in \\[0, 1\\]"):
            draw_outcome(0.3, bad)


def test_an_outcome_draw_records_u_to_six_decimals_and_writes_only_what_it_has():
    import dataclasses

    drawn = choose_outcome("responder", 5, 0.4)      # u 0.95769269785...
    assert drawn.to_json() == {"variable": "responder", "value": False, "source": DRAWN,
                               "u": 0.957693, "p": 0.4}
    assert choose_outcome("responder", 5, None).to_json() == {"variable": "responder",
                                                              "source": NOT_GIVEN}
    assert choose_outcome("responder", 5, 0.4, fixed=True).to_json() == {
        "variable": "responder", "value": True, "source": FIXED}
    with pytest.raises(dataclasses.FrozenInstanceError):
        drawn.value = True


def test_sample_outcomes_for_the_inputs_the_card_lists():
    from napari_nacsim.engine.outcomes import given, sample_outcomes

    class Family:                                    # P(response) 0.5 for every scenario
        def outcome_probability(self, name, predictions):
            return 0.5

    card = {"config": {"adapter": {"outcome_input": ["responder"]}}}
    draws = sample_outcomes(Family(), card, {}, seed=1)
    assert draws == [choose_outcome("responder", 1, 0.5)]        # u 0.4856 < 0.5
    assert given(draws) == {"responder": True}
    fixed = sample_outcomes(Family(), card, {}, seed=1, fixed={"responder": False})
    assert fixed == [choose_outcome("responder", 1, 0.5, fixed=False)]
    assert given(fixed) == {"responder": False}
    assert given([choose_outcome("responder", 1, None)]) == {}
    assert sample_outcomes(Family(), {"config": {}}, {}, seed=1) == []


# --- the outcome input of the cbi-Adapter --------------------------------------------------------

def test_the_outcome_is_a_token_of_its_own_group_appended_last():
    from napari_nacsim.core.schema import LUNG
    from napari_nacsim.science.generative.immunodiff.cbi_adapter import CbiAdapter
    from napari_nacsim.science.generative.immunodiff.tokens import model_variables

    names = [v.name for v in model_variables(LUNG, ["responder"])]
    assert names[-1] == "responder" and names[:-1] == [v.name for v in model_variables(LUNG)]
    adapter = CbiAdapter(LUNG, _micro(True)["adapter"], image_in_channels=12)
    assert adapter.groups["outcome"] == [len(names) - 1]
    with pytest.raises(ValueError, match="outcome"):
        model_variables(LUNG, ["PD_L1"])          # a baseline value is not an outcome input
    with pytest.raises(ValueError, match="outcome"):
        model_variables(LUNG, ["survival_months"])  # a continuous outcome is not one either


def _generate(net, scenarios, seed=0):
    from napari_nacsim.science.generative.immunodiff.sampling import generate

    z, y, x = net.config["grid_shape"]
    pre = np.full((z, y, x), -800.0, np.float32)
    pre[6:10, 40:56, 40:56] = 20.0
    lobes = np.ones((z, y, x), np.uint8)
    vessels = np.zeros((z, y, x), np.uint8)
    return generate(net, pre, lobes, vessels, scenarios, seed=seed, steps=2)


CLINICAL = {"age": 60.0, "sex": "male", "race": "White", "CEA": 3.0, "ANC": 4.0, "ALC": 1.5,
            "NLR": 4.0 / 1.5, "AEC": 0.1, "AMC": 0.5, "PD_L1": 30.0}


def test_an_extended_model_starts_as_its_source_and_learns_to_tell_the_outcomes_apart():
    from napari_nacsim.science.generative.immunodiff.checkpoint import load_extending
    from napari_nacsim.science.generative.immunodiff.network import ImmunoDiff

    torch.manual_seed(0)
    source = ImmunoDiff(_micro(False)).eval()
    with torch.no_grad():  # zero convolutions would hide the control branch entirely
        for p in [*source.controlnet.parameters(), *source.unet.parameters()]:
            p.add_(0.05 * torch.randn_like(p))
    extended = ImmunoDiff(_micro(True)).eval()
    new = load_extending(extended, source)
    assert "adapter.attention.outcome.out.weight" in new
    assert any(n.startswith("adapter.tokens.missing[") for n in new)
    base = _generate(source, [CLINICAL])[0]
    same = _generate(extended, [CLINICAL, {**CLINICAL, "responder": True},
                                {**CLINICAL, "responder": False}])
    for image in same:      # the new group starts silent: whatever the outcome, the source
        np.testing.assert_allclose(image, base, atol=1e-2)
    with torch.no_grad():   # as fine-tuning does: the outcome group's output map moves
        extended.adapter.attention["outcome"].out.weight.normal_(0, 0.5)
    told = _generate(extended, [{**CLINICAL, "responder": True},
                                {**CLINICAL, "responder": False}])
    assert np.abs(told[0] - told[1]).max() > 1.0


def test_extending_refuses_a_network_of_other_sizes():
    from napari_nacsim.science.generative.immunodiff.checkpoint import load_extending
    from napari_nacsim.science.generative.immunodiff.network import ImmunoDiff

    cfg = _micro(True)
    cfg["unet"]["channels"] = [8, 16]
    with pytest.raises(ValueError, match="shape"):
        load_extending(ImmunoDiff(cfg), ImmunoDiff(_micro(False)))


# --- the what-if session: abduction, action, prediction ------------------------------------------

@pytest.fixture(scope="module")
def outcome_model(tmp_path_factory):
    from napari_nacsim.engine import load_model
    from napari_nacsim.science.generative.immunodiff.checkpoint import save_checkpoint
    from napari_nacsim.science.generative.immunodiff.network import ImmunoDiff

    torch.manual_seed(0)
    net = ImmunoDiff(_micro(True))
    with torch.no_grad():
        for p in [*net.controlnet.parameters(), *net.unet.parameters()]:
            p.add_(0.05 * torch.randn_like(p))
        net.adapter.attention["outcome"].out.weight.normal_(0, 0.5)
    folder = save_checkpoint(net, tmp_path_factory.mktemp("lung_outcome") / "model",
                             {"title": "ImmunoDiff micro with an outcome input (test)"})
    return load_model(folder, device="cpu")


def test_the_heads_features_never_see_the_outcome_they_predict(outcome_model):
    """The outcome is what the heads predict: a responder value in the clinical values (as a
    cohort record's has) must not reach the features (it would leak the answer)."""
    from napari_nacsim.science.prediction.features import extract

    net = outcome_model.network
    z, y, x = net.config["grid_shape"]
    pre = np.full((z, y, x), -800.0, np.float32)
    pre[z // 2 - 1:z // 2 + 1, y // 3:2 * y // 3, x // 3:2 * x // 3] = 20.0
    lobes, vessels = np.ones((z, y, x), np.uint8), np.zeros((z, y, x), np.uint8)
    plain = extract(net, pre, lobes, vessels, CLINICAL)
    for responder in (True, False):
        told = extract(net, pre, lobes, vessels, {**CLINICAL, "responder": responder})
        np.testing.assert_array_equal(told, plain)


@pytest.fixture
def p_of_pdl1(monkeypatch):
    """The lung family's predictions replaced by a known P(response) rising with PD-L1."""
    from napari_nacsim.families import get_family

    family = get_family("lung")

    def predictions(generator, baseline, clinical, context=None, *, baseline_mask=None):
        assert baseline_mask is not None  # the heads measure the baseline tumour
        p = 0.1 + 0.8 * float(clinical["PD_L1"]) / 100.0
        return {"response_probability": {"label": "P(response)", "value": p, "unit": "",
                                         "outcome": "responder", "meaning": "test"}}
    monkeypatch.setattr(family, "predictions", predictions)
    return family


def test_session_draws_each_sample_once_for_all_arms_and_never_lowers_a_higher_p(
        lung_sample, outcome_model, p_of_pdl1):
    from napari_nacsim.engine import WhatIfRequest, WhatIfSession

    family = p_of_pdl1
    inputs = lung_sample["inputs"]["pre"]
    session = WhatIfSession(outcome_model, ThresholdSegmenter())
    clinical = {k: v for k, v in lung_sample["clinical"].items()
                if family.schema.variable(k).conditions_model}
    request = WhatIfRequest(clinical=clinical, target="post", compare="PD_L1",
                            compare_values=(0.0, 50.0, 100.0), samples=10, seed=3)
    result = session.run(inputs["image"], request, context=family.model_context(inputs))
    draws = [arm.followups["post"].outcomes for arm in result.arms]
    ps = [0.1, 0.5, 0.9]
    for k in range(10):
        us = {d[k][0].u for d in draws}
        assert len(us) == 1, "every arm uses the sample's own u"
        values = [d[k][0].value for d in draws]
        assert values == sorted(values), f"sample {k}: {values}"
        for arm_draws, p in zip(draws, ps):
            expected = choose_outcome("responder", 3 + k, p)
            assert arm_draws[k][0] == expected
    shares = [arm.followups["post"].outcome_share("responder") for arm in result.arms]
    assert [s[1] for s in shares] == [10, 10, 10]
    assert shares[0][0] <= shares[1][0] <= shares[2][0]
    # each image says what it was generated for; the table and report carry the share
    sample = result.arms[2].followups["post"].samples[0]
    assert sample.provenance["outcome"][0]["p"] == pytest.approx(0.9)
    assert sample.provenance["scenario"]["responder"] == draws[2][0][0].value
    row = [r for r in result.table_rows() if r["scenario"].startswith("post · PD-L1 TPS 100")][0]
    assert row["outcome"] == f"{shares[2][0]}/10 responder"
    assert len(row["recist"]) > 0
    report = result.to_report()["scenarios"][0]["outcomes"]["post"]["responder"]
    assert report["samples"] == 10 and report["source"] == DRAWN
    assert report["share"] == pytest.approx(shares[0][0] / 10)


def test_the_user_can_fix_the_response_and_cannot_fix_what_the_model_does_not_take(
        lung_sample, outcome_model, p_of_pdl1):
    from napari_nacsim.engine import WhatIfRequest, WhatIfSession

    family = p_of_pdl1
    inputs = lung_sample["inputs"]["pre"]
    session = WhatIfSession(outcome_model, ThresholdSegmenter())
    clinical = {k: v for k, v in lung_sample["clinical"].items()
                if family.schema.variable(k).conditions_model}
    fixed = session.run(inputs["image"], WhatIfRequest(
        clinical=clinical, target="post", compare=None, samples=2, outcomes={"responder": "yes"}),
        context=family.model_context(inputs))
    follow = fixed.arms[0].followups["post"]
    assert all(d[0].source == FIXED and d[0].value is True for d in follow.outcomes)
    assert fixed.arms[0].describe_outcomes(follow, family.schema) == "fixed: responder"
    drawn = session.run(inputs["image"], WhatIfRequest(
        clinical=clinical, target="post", compare=None, samples=2),
        context=family.model_context(inputs))
    assert drawn.arms[0].followups["post"].outcomes[0][0].source == DRAWN
    with pytest.raises(InputError, match="outcome 'death'"):
        session.run(inputs["image"], WhatIfRequest(
            clinical=clinical, target="post", compare=None, outcomes={"death": True}),
            context=family.model_context(inputs))


def test_a_cohort_patients_actual_response_never_reaches_the_generator(
        lung_sample, outcome_model, p_of_pdl1):
    """The manifest's 'responder' is what happened; the run draws its own."""
    from napari_nacsim.engine import WhatIfRequest, WhatIfSession

    family = p_of_pdl1
    inputs = lung_sample["inputs"]["pre"]
    session = WhatIfSession(outcome_model, ThresholdSegmenter())
    clinical = dict(lung_sample["clinical"])   # responder, survival and death included
    assert "responder" in clinical
    result = session.run(inputs["image"], WhatIfRequest(
        clinical={**clinical, "responder": True, "PD_L1": 0.0}, target="post", compare=None,
        samples=6, seed=0), context=family.model_context(inputs))
    follow = result.arms[0].followups["post"]
    assert "responder" not in result.arms[0].clinical
    expected = [choose_outcome("responder", k, 0.1).value for k in range(6)]
    assert [d[0].value for d in follow.outcomes] == expected


# --- the heads' inputs ------------------------------------------------------------------------

def test_heads_read_the_inputs_their_card_lists(tmp_path):
    from napari_nacsim.science.generative.immunodiff.checkpoint import load_checkpoint
    from napari_nacsim.science.prediction import heads as H
    from napari_nacsim.science.prediction.features import feature_names
    from napari_nacsim.science.prediction.predict import diameter_feature, predict

    from prediction_helpers import micro_model_folder

    folder = micro_model_folder(tmp_path / "model")
    net, card = load_checkpoint(folder)
    n = len(feature_names(net)) + 14 + 1
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, n)).astype(np.float32)
    y = (x[:, -1] > 0).astype(int)
    r = H.fit_response(x, y, l2=0.1)
    s = H.fit_survival(x, rng.uniform(1, 30, 30), rng.uniform(size=30) < 0.7, l2=0.1)
    H.save_heads(folder / "prediction_heads", r, s, {
        "model_hash": card["model_hash"], "feature_variant": "full",
        "inputs": ["denoiser_features", "clinical", "baseline_diameter"],
        "timestep_fraction": 0.1, "n_features": n, "threshold": 0.5,
        "reference_log_risk": 0.0, "training_cohort": {"patients": 30}})
    z, yy, xx = net.config["grid_shape"]
    pre = np.full((z, yy, xx), -800.0, np.float32)
    masks = np.ones((z, yy, xx), np.uint8), np.zeros((z, yy, xx), np.uint8)
    with pytest.raises(InputError, match="baseline tumour mask"):
        predict(net, folder, card["model_hash"], pre, *masks, CLINICAL)
    small = predict(net, folder, card["model_hash"], pre, *masks, CLINICAL,
                    baseline_diameter_mm=10.0)["response_probability"]
    large = predict(net, folder, card["model_hash"], pre, *masks, CLINICAL,
                    baseline_diameter_mm=60.0)["response_probability"]
    assert small["outcome"] == "responder"
    # the head learnt y from the last column (the diameter): the size moves P
    assert diameter_feature(60.0) > diameter_feature(10.0)
    assert large["value"] > small["value"]


def test_the_review_csv_carries_what_each_image_was_generated_for(tmp_path):
    import csv

    from napari_nacsim.engine.cohort_review import rows_to_csv

    row = {"patient": "LU0001", "time": "post", "scenario": "PD-L1 TPS 30 %",
           "predicted_response_probability": 0.4, "outcome_responder": True,
           "outcome_responder_u": 0.21, "outcome_responder_p": 0.4,
           "counterfactual_outcome_responder": False,
           "counterfactual_outcome_responder_u": 0.21,
           "counterfactual_outcome_responder_p": 0.1, "model_hash": "abc"}
    path = rows_to_csv([row], "mm", tmp_path / "cases.csv")
    with open(path, newline="") as fh:
        (read,) = list(csv.DictReader(fh))
    assert read["outcome_responder"] == "True"
    assert read["outcome_responder_u"] == "0.21"
    assert read["counterfactual_outcome_responder"] == "False"
    assert read["counterfactual_outcome_responder_p"] == "0.1"


def test_heads_give_noise_features_their_own_penalty_and_switch_them_off():
    """~300 noise columns beside one informative column: with one shared L2 the noise
    dilutes the signal; a group of its own is penalised away by the inner CV."""
    from napari_nacsim.science.prediction import heads as H

    rng = np.random.default_rng(0)
    n = 400
    signal = rng.normal(size=(n, 1))
    noise = rng.normal(size=(n, 300))
    y = (rng.random(n) < 1 / (1 + np.exp(-1.5 * signal[:, 0]))).astype(int)
    x = np.concatenate([signal, noise], axis=1).astype(np.float32)
    groups = np.r_[0, np.ones(300, int)]
    head = H.fit_response(x, y, groups=groups)
    shared = H.fit_response(x, y)
    assert head.l2[1] > head.l2[0]
    w = head.linear.weight.detach().numpy()[0]
    assert abs(w[0] - 1.5) < 0.3 and abs(w[0]) > 10 * np.abs(w[1:]).max()
    test = rng.normal(size=(2000, 301)).astype(np.float32)
    y_test = (rng.random(2000) < 1 / (1 + np.exp(-1.5 * test[:, 0]))).astype(int)

    def log_loss(h):
        p = 1 / (1 + np.exp(-h.predict(test)))
        return -np.mean(y_test * np.log(p) + (1 - y_test) * np.log(1 - p))
    assert log_loss(head) < log_loss(shared) - 0.05
