"""Metrics of the prediction heads, from maintained libraries (not hand-written):
scikit-learn for classification (balanced accuracy, F1, precision, recall, ROC AUC), the
Brier score and the calibration curve; torchsurv for the c-index and its confidence
interval. A unit test checks the c-index against lifelines on a hand-made ordering.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np

CLASSIFICATION = ("balanced_accuracy", "f1", "precision", "recall", "roc_auc", "brier")
ALL = CLASSIFICATION + ("c_index",)


def balanced_threshold(train_labels: Sequence[int]) -> float:
    """The decision threshold that maximises balanced accuracy for calibrated probabilities:
    the prevalence (predict a responder when p / π > (1 - p) / (1 - π), i.e. p > π). The
    same rule for every model and for the phantom's own probability (its Bayes-optimal
    balanced accuracy)."""
    y = np.asarray(train_labels, float)
    return float(y.mean())


def classification_metrics(labels: Sequence[int], probability: Sequence[float],
                           threshold: float) -> dict[str, float]:
    """Balanced accuracy, F1, precision, recall (responders positive, ``probability >
    threshold``), ROC AUC and Brier score of ``probability``."""
    from sklearn.metrics import (balanced_accuracy_score, brier_score_loss, f1_score,
                                 precision_score, recall_score, roc_auc_score)

    y = np.asarray(labels, int)
    p = np.asarray(probability, float)
    pred = (p > threshold).astype(int)
    both = len(np.unique(y)) == 2
    return {
        "balanced_accuracy": float(balanced_accuracy_score(y, pred)),
        "f1": float(f1_score(y, pred, zero_division=0)),
        "precision": float(precision_score(y, pred, zero_division=0)),
        "recall": float(recall_score(y, pred, zero_division=0)),
        "roc_auc": float(roc_auc_score(y, p)) if both else float("nan"),
        "brier": float(brier_score_loss(y, np.clip(p, 0, 1))),
    }


def concordance(risk: Sequence[float], event: Sequence[bool], time: Sequence[float],
                alpha: float = 0.05, interval: bool = True) -> dict[str, float]:
    """Harrell's c-index of ``risk`` (higher = dies sooner) with a (1 - alpha) confidence
    interval, torchsurv's `ConcordanceIndex`: Noether's standard error, or the bootstrap
    when Noether's is zero (a perfect ordering, or constant risks); ``interval`` False: the
    c-index alone."""
    import torch
    from torchsurv.metrics.cindex import ConcordanceIndex

    r = torch.as_tensor(np.asarray(risk, float), dtype=torch.float32)
    e = torch.as_tensor(np.asarray(event, bool))
    t = torch.as_tensor(np.asarray(time, float), dtype=torch.float32)
    metric = ConcordanceIndex()
    c = float(metric(r, e, t))
    if not interval:
        return {"c_index": c}
    try:
        lo, hi = (float(v) for v in metric.confidence_interval(method="noether", alpha=alpha))
    except ValueError:
        torch.manual_seed(0)
        lo, hi = (float(v) for v in metric.confidence_interval(method="bootstrap",
                                                                alpha=alpha,
                                                                n_bootstraps=199))
    return {"c_index": c, "c_index_low": min(lo, c), "c_index_high": max(hi, c)}


def calibration(labels: Sequence[int], probability: Sequence[float], bins: int = 5
                ) -> dict[str, list[float]]:
    """Reliability curve (scikit-learn `calibration_curve`, quantile bins)."""
    from sklearn.calibration import calibration_curve

    observed, predicted = calibration_curve(np.asarray(labels, int),
                                            np.clip(np.asarray(probability, float), 0, 1),
                                            n_bins=bins, strategy="quantile")
    return {"predicted": predicted.tolist(), "observed": observed.tolist()}


def mean_sd(per_fold: Sequence[Mapping[str, float]]) -> dict[str, dict[str, float]]:
    """metric -> {"mean", "sd"} over folds (sample SD, ddof 1; NaN folds left out)."""
    out: dict[str, dict[str, float]] = {}
    for key in per_fold[0]:
        values = np.array([f[key] for f in per_fold], float)
        values = values[np.isfinite(values)]
        out[key] = {"mean": float(values.mean()) if len(values) else float("nan"),
                    "sd": float(values.std(ddof=1)) if len(values) > 1 else float("nan")}
    return out


def format_mean_sd(stat: Mapping[str, float]) -> str:
    if not math.isfinite(stat["mean"]):
        return "—"
    sd = stat["sd"]
    return f"{stat['mean']:.2f} ± {sd:.2f}" if math.isfinite(sd) else f"{stat['mean']:.2f}"


def reliability_diagram(curves: Mapping[str, Mapping[str, Any]], path, title: str = "") -> None:
    """Reliability diagram (matplotlib, Agg): one line per model, the diagonal, and each
    model's Brier score in the legend. ``curves``: name -> {"predicted", "observed",
    "brier"}."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.6, 4.4), dpi=120)
    ax.plot([0, 1], [0, 1], color="0.6", lw=1, ls="--", label="perfectly calibrated")
    for name, c in curves.items():
        ax.plot(c["predicted"], c["observed"], marker="o", lw=1.4,
                label=f"{name} (Brier {c['brier']:.3f})")
    ax.set_xlabel("predicted probability of response")
    ax.set_ylabel("observed fraction of responders")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_title(title, fontsize=9)
    ax.set_aspect("equal")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.03, 1.0), frameon=False)
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
