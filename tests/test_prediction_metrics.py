"""Prediction metrics and heads against known answers: c-index on hand-made orderings
(torchsurv, cross-checked with lifelines), classification metrics on a hand-counted
confusion table, Cox and logistic heads recovering known coefficients, the phantom's
ceiling, and the heads' safetensors + card round trip."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_nacsim.core.errors import InputError
from napari_nacsim.science.prediction import metrics as M


def test_c_index_on_a_hand_made_ordering_matches_lifelines():
    from lifelines.utils import concordance_index

    # all deaths, times 1..5; risks in the right order except the last two swapped:
    # 10 comparable pairs, 1 discordant -> 0.9
    time = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    event = np.ones(5, bool)
    risk = np.array([5.0, 4.0, 3.0, 1.0, 2.0])
    c = M.concordance(risk, event, time)
    assert c["c_index"] == pytest.approx(0.9)
    assert concordance_index(time, -risk, event) == pytest.approx(0.9)
    assert c["c_index_low"] <= 0.9 <= c["c_index_high"] and c["c_index_high"] > c["c_index_low"]
    # with censoring: patient 2 (t=2) censored -> pairs starting at it do not count:
    # comparable (i event, t_i < t_j): 4 + 2 + 1 = 7, discordant (t=4 vs t=5) 1 -> 6/7
    event2 = np.array([True, False, True, True, True])
    risk2 = np.array([5.0, 0.0, 3.0, 1.0, 2.0])
    assert M.concordance(risk2, event2, time)["c_index"] == pytest.approx(6 / 7)
    assert concordance_index(time, -risk2, event2) == pytest.approx(6 / 7)


def test_perfect_ordering_falls_back_to_the_bootstrap_interval():
    time = np.arange(1.0, 9.0)
    c = M.concordance(-time, np.ones(8, bool), time)
    assert c["c_index"] == 1.0 and c["c_index_low"] <= 1.0 == c["c_index_high"]


def test_classification_metrics_on_a_hand_counted_table():
    y = [1, 1, 0, 0, 0, 0]
    p = [0.9, 0.3, 0.6, 0.2, 0.1, 0.1]
    m = M.classification_metrics(y, p, threshold=0.5)
    # TP 1, FN 1, FP 1, TN 3
    assert m["recall"] == pytest.approx(0.5) and m["precision"] == pytest.approx(0.5)
    assert m["f1"] == pytest.approx(0.5)
    assert m["balanced_accuracy"] == pytest.approx((0.5 + 0.75) / 2)
    assert m["roc_auc"] == pytest.approx(7 / 8)
    assert m["brier"] == pytest.approx(0.92 / 6)
    assert M.balanced_threshold(y) == pytest.approx(1 / 3)
    # the balanced threshold moves the decision: at 1/3, 0.3 is a non-responder still
    assert M.classification_metrics(y, p, 0.25)["recall"] == 1.0


def test_mean_sd_and_format():
    s = M.mean_sd([{"a": 0.5}, {"a": 0.7}, {"a": float("nan")}])
    assert s["a"]["mean"] == pytest.approx(0.6)
    assert s["a"]["sd"] == pytest.approx(np.std([0.5, 0.7], ddof=1))
    assert M.format_mean_sd(s["a"]) == "0.60 ± 0.14"


def _ph_data(n=400, beta=1.0, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 2)).astype(np.float32)   # the second column is noise
    t = rng.exponential(1.0 / np.exp(beta * x[:, 0]))
    c = rng.exponential(2.0, size=n)
    return x, np.minimum(t, c), t <= c


def test_cox_head_recovers_the_hazard_ratio_like_lifelines():
    import pandas as pd
    from lifelines import CoxPHFitter

    from napari_nacsim.science.prediction.heads import fit_survival

    x, time, event = _ph_data()
    head = fit_survival(x, time, event, l2=1e-4)
    beta = (head.linear.weight[0] / head.scale).detach().numpy()
    frame = pd.DataFrame(x, columns=["a", "b"]).assign(T=time, E=event)
    ref = CoxPHFitter().fit(frame, "T", "E").params_.to_numpy()
    assert beta[0] == pytest.approx(1.0, abs=0.2)
    assert beta == pytest.approx(ref, abs=0.03)
    assert M.concordance(head.predict(x), event, time)["c_index"] > 0.65


def test_response_head_recovers_a_logistic_coefficient():
    from sklearn.linear_model import LogisticRegression

    from napari_nacsim.science.prediction.heads import fit_response

    rng = np.random.default_rng(1)
    x = rng.normal(size=(600, 3)).astype(np.float32)
    y = (rng.random(600) < 1 / (1 + np.exp(-(1.5 * x[:, 0] - 1.0)))).astype(int)
    head = fit_response(x, y, l2=1e-5)
    w = (head.linear.weight[0] / head.scale).detach().numpy()
    ref = LogisticRegression(C=1e6, max_iter=1000).fit(x, y).coef_[0]
    assert w == pytest.approx(ref, abs=0.05)
    assert w[0] == pytest.approx(1.5, abs=0.35)
    # the inner CV picks a grid value and the head still separates the classes
    auto = fit_response(x, y)
    assert auto.l2 in (1e-3, 1e-2, 1e-1, 1.0)
    assert M.classification_metrics(y, 1 / (1 + np.exp(-auto.predict(x))), y.mean())[
        "roc_auc"] > 0.75


def test_phantom_ceiling_orders_survival_and_response():
    from napari_nacsim.science.phantoms import lung
    from napari_nacsim.science.phantoms.lung_outcomes import response_probability
    from napari_nacsim.science.prediction.ceiling import oracle, patient_oracle

    patients = [lung.make_patient(5, i) for i in range(400)]
    o = [patient_oracle(5, i) for i in range(400)]
    p = np.array([q["probability"] for q in o])
    assert p[3] == pytest.approx(response_probability(patients[3].clinical,
                                                      patients[3].tumour_diameter_mm))
    y = np.array([q.clinical["responder"] for q in patients])
    t = np.array([q.clinical["survival_months"] for q in patients])
    e = np.array([q.clinical["death"] for q in patients])
    base = M.concordance([q["eta_baseline"] for q in o], e, t)["c_index"]
    true = M.concordance([q["eta_true"] for q in o], e, t)["c_index"]
    assert 0.55 < base < true          # knowing the response orders survival better
    assert M.classification_metrics(y, p, y.mean())["roc_auc"] > 0.6
    # removing the tumour-size term: same p at the 30 mm reference, otherwise bigger
    # tumours respond less, so their clinical-only probability is higher
    from napari_nacsim.science.prediction.ceiling import without_tumour_size

    assert without_tumour_size(0.3, 30.0) == pytest.approx(0.3)
    assert without_tumour_size(0.3, 50.0) > 0.3 > without_tumour_size(0.3, 20.0)
    # the baseline hazard mixes the two response branches by p
    q = oracle({**patients[0].clinical, "responder": False}, 0.0)
    assert q["eta_baseline"] == pytest.approx(q["eta_true"])


def test_heads_round_trip_and_refuse_tampering_or_another_model(tmp_path):
    from napari_nacsim.science.prediction.heads import (fit_response, fit_survival,
                                                         load_heads, save_heads)

    x, time, event = _ph_data(n=80)
    y = (x[:, 0] > 0).astype(int)
    r, s = fit_response(x, y, l2=0.1), fit_survival(x, time, event, l2=0.1)
    folder = save_heads(tmp_path / "heads", r, s, {"model_hash": "abc123",
                                                   "feature_variant": "full",
                                                   "timestep_fraction": 0.1,
                                                   "reference_log_risk": 0.0})
    r2, s2, card = load_heads(folder, "abc123")
    assert np.allclose(r2.predict(x), r.predict(x)) and np.allclose(s2.predict(x), s.predict(x))
    assert card["files"]["response"]["sha256"] and card["files"]["survival"]["l2"] == 0.1
    with pytest.raises(InputError, match="trained on lung model"):
        load_heads(folder, "another")
    path = folder / "survival.safetensors"
    path.write_bytes(path.read_bytes()[:-1] + b"\x00")
    with pytest.raises(InputError, match="sha256"):
        load_heads(folder)
    (folder / "heads_card.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(InputError, match="not a prediction-heads card"):
        load_heads(folder)


def test_heads_fitted_on_another_diameter_definition_are_refused(tmp_path):
    """Heads taking ln(baseline diameter / 30 mm) record the definition it was measured by;
    heads from before the axial (RECIST 1.1) definition (no record: the 3D Feret diameter,
    ~3 mm longer on lung tumours) are refused rather than fed shifted inputs."""
    from napari_nacsim.science.measure import LONGEST_DIAMETER_DEFINITION
    from napari_nacsim.science.prediction.heads import (fit_response, fit_survival,
                                                         load_heads, save_heads)

    x, time, event = _ph_data(n=80)
    r = fit_response(x, (x[:, 0] > 0).astype(int), l2=0.1)
    s = fit_survival(x, time, event, l2=0.1)
    base = {"model_hash": "abc123", "feature_variant": "full", "timestep_fraction": 0.1,
            "reference_log_risk": 0.0, "inputs": ["clinical", "baseline_diameter"]}
    folder = save_heads(tmp_path / "now", r, s, base)
    assert load_heads(folder)[2]["baseline_diameter_definition"] == LONGEST_DIAMETER_DEFINITION
    card_path = folder / "heads_card.json"
    card = json.loads(card_path.read_text())
    del card["baseline_diameter_definition"]          # as cards written before it
    card_path.write_text(json.dumps(card))
    with pytest.raises(InputError, match="fitted on another longest diameter.*3D"):
        load_heads(folder)
    # heads without the diameter input do not care
    load_heads(save_heads(tmp_path / "plain", r, s, {**base, "inputs": ["clinical"]}))


def test_reliability_diagram_is_written(tmp_path):
    curves = {"a": {**M.calibration([0, 0, 1, 1, 0, 1], [0.1, 0.2, 0.8, 0.7, 0.4, 0.6],
                                    bins=2), "brier": 0.1}}
    M.reliability_diagram(curves, tmp_path / "r.png", "test")
    assert (tmp_path / "r.png").stat().st_size > 5000
