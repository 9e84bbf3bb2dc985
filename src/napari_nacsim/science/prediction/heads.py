"""The prediction heads on ImmunoDiff's up-block features (or any feature matrix).

- Response: logistic regression (a standardising layer, clipped at ±6 SD, + one linear
  unit, binary cross-entropy). With 74 patients and ~300 features a small MLP has nothing to gain over a
  linear head and more to overfit; the L2 strength is chosen by an inner 3-fold CV.
- Survival: a linear proportional-hazards risk trained with the Cox partial likelihood
  (torchsurv's ``neg_partial_log_likelihood``, Efron ties), L2 chosen by an inner 3-fold CV
  on the held-out partial likelihood.

Both are fitted full-batch with L-BFGS (deterministic, seconds on a CPU). Heads are saved as
safetensors with a JSON card recording the sha256 of each file, the features they read
(variant, timestep, length), the lung model's hash, the decision threshold and the
cohort's reference risk; loading verifies every hash and refuses heads made for another
model.
"""

from __future__ import annotations

import datetime
import json
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from ...core.atomic import atomic_path, write_json_atomic
from ...core.checksum import file_sha256
from ...core.errors import InputError

L2_GRID = (1e-3, 1e-2, 1e-1, 1.0)
# a second column group (the denoiser's ~300 features beside a dozen clinical columns) gets
# its own strength, up to one that switches it off: one shared L2 let the features' noise
# dilute the clinical signal (600 patients: ROC AUC 0.66 with the features, 0.73 without)
GROUP_L2_GRID = (1e-2, 1e-1, 1.0, 10.0, 100.0, 1000.0)
CARD = "heads_card.json"
CARD_FORMAT = "nacsim-prediction-heads/1"
HEADS = ("response", "survival")


class LinearHead(nn.Module):
    """Standardise the features (training mean / SD, as buffers), then one linear unit."""

    def __init__(self, n_features: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(n_features))
        self.register_buffer("scale", torch.ones(n_features))
        self.linear = nn.Linear(n_features, 1)

    # standardised features are clipped to this many SDs: a patient far outside the
    # training features cannot push a prediction to 0 or 1 (or overflow exp) through one
    # feature
    CLIP_SD = 6.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = ((x - self.mean) / self.scale).clamp(-self.CLIP_SD, self.CLIP_SD)
        return self.linear(z)[:, 0]

    def predict(self, x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return self(torch.as_tensor(np.asarray(x, np.float32))).numpy().astype(float)


def _init(x: np.ndarray) -> tuple[LinearHead, torch.Tensor]:
    x = np.asarray(x, np.float32)
    head = LinearHead(x.shape[1])
    head.mean.copy_(torch.as_tensor(x.mean(0)))
    head.scale.copy_(torch.as_tensor(np.maximum(x.std(0), 1e-6)))
    torch.manual_seed(0)
    nn.init.zeros_(head.linear.weight)
    nn.init.zeros_(head.linear.bias)
    return head, torch.as_tensor(x)


def _penalty(l2, groups, n: int) -> torch.Tensor:
    """Per-column L2 strengths: ``l2`` a number (every column), or one strength per group
    with ``groups`` (each column's group index)."""
    if groups is None:
        return torch.full((n,), float(l2))
    return torch.as_tensor(np.asarray(l2, np.float32)[np.asarray(groups, int)])


def _lbfgs(head: LinearHead, loss_fn, l2, iterations: int = 200, groups=None) -> LinearHead:
    opt = torch.optim.LBFGS(head.linear.parameters(), lr=1.0, max_iter=iterations,
                            line_search_fn="strong_wolfe")
    strength = _penalty(l2, groups, head.linear.weight.shape[1])

    def closure():
        opt.zero_grad()
        loss = loss_fn() + (strength * head.linear.weight[0].pow(2)).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return head


def _cox_loss(risk: torch.Tensor, event: torch.Tensor, time: torch.Tensor) -> torch.Tensor:
    from torchsurv.loss.cox import neg_partial_log_likelihood

    if not bool(event.any()):
        return risk.sum() * 0.0
    return neg_partial_log_likelihood(risk[:, None], event, time, ties_method="efron",
                                      reduction="mean")


def fit_response(x: np.ndarray, y: Sequence[int], l2=None,
                 groups: Sequence[int] | None = None) -> LinearHead:
    """Logistic regression of ``y`` (0/1) on ``x``; ``l2`` None: chosen by inner CV.
    ``groups`` (0 or 1 per column): group 1 gets an L2 strength of its own (`_choose_l2`)."""
    y = np.asarray(y, int)
    if l2 is None:
        l2 = _choose_l2(x, y, None, "response", groups)
    head, xt = _init(x)
    yt = torch.as_tensor(y, dtype=torch.float32)
    loss = nn.BCEWithLogitsLoss()
    head = _lbfgs(head, lambda: loss(head(xt), yt), l2, groups=groups)
    head.l2 = l2
    return head


def fit_survival(x: np.ndarray, time: Sequence[float], event: Sequence[bool],
                 l2=None, groups: Sequence[int] | None = None) -> LinearHead:
    """Linear Cox model (log hazard ratio) of ``(time, event)`` on ``x``."""
    time, event = np.asarray(time, float), np.asarray(event, bool)
    if l2 is None:
        l2 = _choose_l2(x, time, event, "survival", groups)
    head, xt = _init(x)
    tt = torch.as_tensor(time, dtype=torch.float32)
    et = torch.as_tensor(event)
    head = _lbfgs(head, lambda: _cox_loss(head(xt), et, tt), l2, groups=groups)
    head.l2 = l2
    return head


def _choose_l2(x, target, event, kind: str, groups=None):
    """The L2 strength of ``L2_GRID`` with the best held-out loss over an inner 3-fold CV
    (stratified on the response, or on the event for survival); with ``groups``, the pair
    (group 0's from ``L2_GRID``, group 1's from ``GROUP_L2_GRID``) that does best."""
    import itertools

    from sklearn.model_selection import StratifiedKFold

    x = np.asarray(x, np.float32)
    strata = np.asarray(target if kind == "response" else event, int)
    splits = min(3, int(np.bincount(strata).min()) if len(np.unique(strata)) > 1 else 0)
    grid = L2_GRID if groups is None else \
        [list(pair) for pair in itertools.product(L2_GRID, GROUP_L2_GRID)]
    if splits < 2:
        return 0.1 if groups is None else [0.1, 0.1]
    folds = list(StratifiedKFold(splits, shuffle=True, random_state=0).split(x, strata))
    best, best_loss = grid[0], float("inf")
    for l2 in grid:
        total = 0.0
        for tr, te in folds:
            if kind == "response":
                head = fit_response(x[tr], target[tr], l2, groups)
                with torch.no_grad():
                    total += float(nn.functional.binary_cross_entropy_with_logits(
                        head(torch.as_tensor(x[te])),
                        torch.as_tensor(target[te], dtype=torch.float32)))
            else:
                head = fit_survival(x[tr], target[tr], event[tr], l2, groups)
                with torch.no_grad():
                    total += float(_cox_loss(head(torch.as_tensor(x[te])),
                                             torch.as_tensor(event[te]),
                                             torch.as_tensor(target[te], dtype=torch.float32)))
        if total < best_loss:
            best, best_loss = l2, total
    return best


# --- saving and loading --------------------------------------------------------------------

def _l2_json(l2):
    return [float(v) for v in l2] if isinstance(l2, (list, tuple)) else float(l2)


def save_heads(folder: str | os.PathLike, response: LinearHead, survival: LinearHead,
               card: dict[str, Any]) -> Path:
    """``folder``/response.safetensors, survival.safetensors and the card (sha256 each).
    Heads that take the baseline diameter record the definition it was measured by (the
    one `measure.longest_diameter_mm` measures now: the caller fitted on it)."""
    from safetensors.torch import save_file

    from ..measure import LONGEST_DIAMETER_DEFINITION

    if "baseline_diameter" in card.get("inputs", []):
        card = {**card, "baseline_diameter_definition": card.get(
            "baseline_diameter_definition", LONGEST_DIAMETER_DEFINITION)}

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    for name, head in (("response", response), ("survival", survival)):
        path = folder / f"{name}.safetensors"
        state = {k: v.detach().cpu().contiguous() for k, v in head.state_dict().items()}
        with atomic_path(path) as tmp:
            save_file(state, str(tmp), metadata={"head": name})
        files[name] = {"path": path.name, "sha256": file_sha256(path),
                       "bytes": path.stat().st_size,
                       "n_features": int(head.linear.in_features),
                       "l2": _l2_json(getattr(head, "l2", float("nan")))}
    full = {"format": CARD_FORMAT, "synthetic_training_data": True,
            "created": datetime.datetime.now(datetime.timezone.utc)
            .isoformat(timespec="seconds"), **card, "files": files}
    write_json_atomic(folder / CARD, full)
    return folder


def read_heads_card(folder: str | os.PathLike) -> dict[str, Any]:
    path = Path(folder) / CARD
    if not path.exists():
        raise InputError(path, "not found (no prediction heads here)")
    try:
        card = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise InputError(path, f"is not valid JSON ({err.msg})") from None
    if card.get("format") != CARD_FORMAT:
        raise InputError(path, f"is not a prediction-heads card ({CARD_FORMAT})")
    return card


def _require_diameter_definition(folder: Path, card: dict[str, Any]) -> None:
    """Heads that take the baseline diameter must have been fitted on the definition the
    product measures today (`measure.LONGEST_DIAMETER_DEFINITION`): another one shifts
    ln(D / 30 mm) by millimetres the heads never saw (the 3D Feret diameter read lung
    tumours ~3 mm longer than the axial one)."""
    from ..measure import LONGEST_DIAMETER_DEFINITION

    if "baseline_diameter" not in card.get("inputs", []):
        return
    fitted = card.get("baseline_diameter_definition", "the 3D maximum Feret diameter")
    if fitted != LONGEST_DIAMETER_DEFINITION:
        raise InputError(folder / CARD, f"heads were fitted on another longest diameter "
                                        f"({fitted}); refit them with "
                                        "training/evaluate_prediction.py --bundle")


def load_heads(folder: str | os.PathLike, model_hash: str | None = None
               ) -> tuple[LinearHead, LinearHead, dict[str, Any]]:
    """(response, survival, card), every file's sha256 verified first; ``model_hash``: the
    lung model the features come from must be the one the heads were trained on."""
    from safetensors.torch import load_file

    folder = Path(folder)
    card = read_heads_card(folder)
    if model_hash is not None and card.get("model_hash") != model_hash:
        raise InputError(folder / CARD, f"heads were trained on lung model "
                                        f"{str(card.get('model_hash'))[:12]}, not on "
                                        f"{model_hash[:12]}")
    _require_diameter_definition(folder, card)
    heads = []
    for name in HEADS:
        entry = card["files"][name]
        path = folder / entry["path"]
        if not path.exists():
            raise InputError(path, "is missing (listed in the heads card)")
        if file_sha256(path) != entry["sha256"]:
            raise InputError(path, "sha256 does not match the heads card (changed or "
                                   "corrupted)")
        head = LinearHead(int(entry["n_features"]))
        head.load_state_dict(load_file(str(path)), strict=True)
        heads.append(head.eval())
    return heads[0], heads[1], card
