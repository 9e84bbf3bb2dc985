"""ImmunoDiff's prediction heads (response, survival) evaluated as in the paper, beside
baselines and the phantom's ceiling, on synthetic lung cohorts.

    python training/evaluate_prediction.py --protocol 1 --out artifacts/lung_pred/p1
    python training/evaluate_prediction.py --protocol 2 --out artifacts/lung_pred/p2 \
        --bundle src/napari_nacsim/models/lung_immunodiff/prediction_heads

Protocols (cohort seed 2: not used to train the lung model, whose cohorts are 0, 100, and
1 for its evaluation):

1. the paper's: the first 74 patients of cohort seed 2, of whom exactly 19 respond (the
   smallest cohort seed >= 2 whose first 74 patients have 19 responders; checked here);
2. the first 600 patients of cohort seed 2 (protocol 1's 74 included).

``--patients N --cohort-seed S`` runs any other cohort (the CI's fast version).

5-fold patient-level cross-validation, stratified on the response, seeded (``--seed``);
every model is trained and scored on the same folds; mean ± SD over folds of balanced
accuracy, F1, precision, recall, ROC AUC, Brier score and c-index (torchsurv; plus the
pooled out-of-fold c-index with Noether's 95 % CI). Probabilities are thresholded at the
training fold's responder rate (the balanced-accuracy-optimal rule) for every model.

Models (rows):
- ``phantom ceiling``: the phantom's own response probability and pre-treatment hazard
  (`science.prediction.ceiling`), no fitting; ``phantom oracle (knows response)``: the
  phantom's hazard including the response that happened (survival only; an upper bound);
- ``clinical only``: logistic regression (scikit-learn) and a Cox model (lifelines
  ``CoxPHFitter``, penaliser 0.1, raised to 1 or 10 only if it fails to converge) on the
  clinical design matrix (`prediction.clinical`);
- ``image CNN`` and ``image CNN + clinical`` (`prediction.image_cnn`, MONAI DenseNet);
- with a lung model (``--model``; default: the bundled one when it exists): ImmunoDiff heads
  on the up-block features (`prediction.features`) of the variants ``full`` (the paper's
  "Ours"), ``anatomy_only`` (Table 3 "Stage-1"), ``adapter_only`` (Table 3 "Stage-2"),
  ``base`` (Table 2 "DDPM"), and ``full + clinical`` (features and the clinical matrix).

Writes ``--out``/results.json, results.md (the tables), reliability.png (pooled out-of-fold
probabilities), features_<variant>.npz (cached, keyed by the model hash). ``--bundle DIR``:
heads fitted on every patient of the cohort (variant full), saved as safetensors + card.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

PROTOCOLS = {1: {"patients": 74, "responders": 19, "cohort_seed": 2},
             2: {"patients": 600, "responders": None, "cohort_seed": 2}}
FEATURE_ROWS = {"full": "ImmunoDiff heads (full)",
                "anatomy_only": "ImmunoDiff heads, anatomy only (Table 3 Stage-1)",
                "adapter_only": "ImmunoDiff heads, adapter only (Table 3 Stage-2)",
                "base": "ImmunoDiff heads, base DDPM (Table 2 DDPM)"}
PAPER = {  # Tables 1-3 of the paper (mean ± SD over its 5 folds)
    "Ours (ImmunoDiff)": {"balanced_accuracy": "0.74 ± 0.20", "f1": "0.76 ± 0.13",
                          "precision": "0.79 ± 0.16", "recall": "0.75 ± 0.12",
                          "c_index": "0.57 ± 0.12"},
    "ResNet-50": {"balanced_accuracy": "0.53 ± 0.09", "f1": "0.69 ± 0.13",
                  "precision": "0.66 ± 0.14", "recall": "0.74 ± 0.11"},
    "DenseNet-121": {"balanced_accuracy": "0.47 ± 0.07", "f1": "0.56 ± 0.13",
                     "precision": "0.64 ± 0.11", "recall": "0.54 ± 0.12"},
    "DenseNet-121 + C_X": {"balanced_accuracy": "0.50 ± 0.00", "f1": "0.65 ± 0.11",
                           "precision": "0.58 ± 0.14", "recall": "0.75 ± 0.08"},
    "Stage-1 (anatomy)": {"f1": "0.70 ± 0.03", "precision": "0.82 ± 0.07",
                          "recall": "0.72 ± 0.05", "c_index": "0.47 ± 0.04"},
    "Stage-2 (adapter)": {"f1": "0.64 ± 0.13", "precision": "0.56 ± 0.15",
                          "recall": "0.74 ± 0.09", "c_index": "0.54 ± 0.07"},
    "DDPM": {"c_index": "0.54 ± 0.08"},
    "ControlNet": {"balanced_accuracy": "0.43 ± 0.12", "f1": "0.40 ± 0.09",
                   "precision": "0.61 ± 0.10", "recall": "0.38 ± 0.05",
                   "c_index": "0.52 ± 0.14"},
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--protocol", type=int, choices=sorted(PROTOCOLS))
    p.add_argument("--patients", type=int, help="cohort size (instead of --protocol)")
    p.add_argument("--cohort-seed", type=int, default=2)
    p.add_argument("--records", default=str(ROOT / "artifacts" / "lung_pred"),
                   help="phantom-record cache: records_<seed>/ (drawn when missing)")
    p.add_argument("--model", default="bundled",
                   help="lung ImmunoDiff model folder; 'bundled' (default) = the family's "
                        "bundled model when it exists; 'none' = baselines and ceiling only")
    p.add_argument("--variants", default="full,anatomy_only,adapter_only,base")
    p.add_argument("--timestep-fraction", type=float, default=None,
                   help="feature timestep as a fraction of the training steps (default 0.1)")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--seed", type=int, default=0, help="fold assignment and CNN seed")
    p.add_argument("--cnn-epochs", type=int, default=10)
    p.add_argument("--no-cnn", action="store_true", help="skip the image CNN baselines")
    p.add_argument("--bundle", help="save heads fitted on the whole cohort here")
    p.add_argument("--head-inputs", default="denoiser_features,clinical,baseline_diameter",
                   help="what the bundled heads take (comma-separated, in order): "
                        "denoiser_features (the full variant), clinical (the clinical "
                        "matrix), baseline_diameter (ln of the longest diameter measured on "
                        "the pre-treatment crop's tumour mask / 30 mm)")
    p.add_argument("--no-group-l2", dest="group_l2", action="store_false",
                   help="one L2 strength for all the heads' inputs (default: the denoiser's "
                        "features get their own, chosen by the inner CV)")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    if (args.protocol is None) == (args.patients is None):
        p.error("give --protocol or --patients")
    return args


def cohort(args):
    """(records, protocol description); records are drawn into the cache when missing."""
    from napari_nacsim.families import get_family
    from napari_nacsim.science.generative.immunodiff.data import build_cache, load_records

    if args.protocol is not None:
        spec = PROTOCOLS[args.protocol]
        n, seed = spec["patients"], spec["cohort_seed"]
    else:
        spec, n, seed = {"responders": None}, args.patients, args.cohort_seed
    folder = Path(args.records) / f"records_{seed}"
    build_cache(folder, get_family("lung"), seed, range(n), paired=False)
    records = load_records(folder, range(n))
    if len(records) != n:
        raise SystemExit(f"{folder}: {len(records)} of {n} records")
    responders = sum(bool(r["meta"]["clinical"]["responder"]) for r in records)
    if spec["responders"] is not None and responders != spec["responders"]:
        raise SystemExit(f"cohort seed {seed}: {responders} responders among the first {n}, "
                         f"the protocol needs {spec['responders']}")
    return records, {"cohort_seed": seed, "patients": n, "responders": responders,
                     "indices": f"0..{n - 1}"}


def resolve_model(arg: str):
    if arg == "none":
        return None
    if arg == "bundled":
        from napari_nacsim.families import get_family

        folder = ROOT / "src" / "napari_nacsim" / "models" / "lung_immunodiff"
        if not (folder / "model_card.json").exists():
            folder = get_family("lung").bundled_generator_path() if \
                get_family("lung").bundled_generator else None
        if folder is None or not (Path(folder) / "model_card.json").exists():
            print("no bundled lung model yet: baselines and ceiling only", flush=True)
            return None
        return Path(folder)
    return Path(arg)


def features_of(model, card, records, variant, out: Path, fraction):
    """(N, F) features of ``variant``, cached in ``out`` by model hash and patient."""
    from napari_nacsim.science.prediction import features as F

    fraction = F.TIMESTEP_FRACTION if fraction is None else fraction
    path = out / f"features_{variant}.npz"
    ids = [r["meta"]["patient"] for r in records]
    key = f"{card['model_hash']}|{fraction}"
    if path.exists():
        with np.load(path, allow_pickle=False) as d:
            if str(d["key"]) == key and list(d["ids"]) == ids:
                return d["x"]
    started = time.perf_counter()
    rows = []
    for i, r in enumerate(records):
        a = r["arrays"]
        rows.append(F.extract(model, a["pre_image"], a["pre_lobes"], a["pre_vessels"],
                              r["meta"]["clinical"], variant=variant,
                              timestep_fraction=fraction))
        if (i + 1) % 50 == 0:
            print(f"  features {variant}: {i + 1}/{len(records)} "
                  f"({time.perf_counter() - started:.0f} s)", flush=True)
    x = np.stack(rows)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, x=x, ids=np.array(ids), key=np.array(key))
    os.replace(tmp, path)
    return x


def score_folds(name, folds, y, time_, event, predict, rows, oof):
    """``predict(train, test) -> (probability or None, risk or None)`` per fold."""
    from napari_nacsim.science.prediction import metrics as M

    started = time.perf_counter()
    per_fold, prob_all, risk_all = [], np.full(len(y), np.nan), np.full(len(y), np.nan)
    for train, test in folds:
        prob, risk = predict(train, test)
        m = {}
        if prob is not None:
            m.update(M.classification_metrics(y[test], prob, M.balanced_threshold(y[train])))
            prob_all[test] = prob
        if risk is not None:
            m["c_index"] = M.concordance(risk, event[test], time_[test],
                                         interval=False)["c_index"]
            risk_all[test] = risk
        per_fold.append(m)
    summary = M.mean_sd(per_fold)
    if np.isfinite(risk_all).all():
        # fold-wise risks are on different scales: rank within each fold first
        pooled = np.empty(len(y))
        for _, test in folds:
            pooled[test] = np.argsort(np.argsort(risk_all[test])) / max(len(test) - 1, 1)
        summary["c_index_pooled"] = M.concordance(pooled, event, time_)
    rows[name] = {"summary": summary, "folds": per_fold,
                  "seconds": round(time.perf_counter() - started, 1)}
    oof[name] = {"probability": prob_all, "risk": risk_all}
    line = "  ".join(f"{k} {M.format_mean_sd(v)}" for k, v in summary.items()
                     if k in M.ALL)
    print(f"{name}: {line} ({rows[name]['seconds']} s)", flush=True)


def measured_diameter_mm(record) -> float:
    """The longest diameter of the pre-treatment crop's tumour mask, measured as the product
    measures a segmented tumour (`science.measure`; the crop's spacing)."""
    from scipy import ndimage

    from napari_nacsim.science.measure import longest_diameter_mm
    from napari_nacsim.science.preprocess.lung import CROP_SPACING

    spacing = record["meta"].get("spacing") or CROP_SPACING
    mask = record["arrays"]["pre_tumour"] > 0
    labelled, _ = ndimage.label(mask, structure=np.ones((3, 3, 3), bool))
    return longest_diameter_mm(labelled, spacing)


def head_groups(names, n_denoiser: int, n_clinical: int) -> np.ndarray:
    """Each column's L2 group in `head_matrix`'s order: 1 for the denoiser's features, 0
    for the rest."""
    sizes = {"denoiser_features": n_denoiser, "clinical": n_clinical, "baseline_diameter": 1}
    return np.concatenate([np.full(sizes[n], int(n == "denoiser_features")) for n in names])


def head_matrix(names, denoiser, xc, records) -> np.ndarray:
    """The heads' input matrix, columns in the order of ``names`` (as
    `science.prediction.predict.head_input` builds one row)."""
    from napari_nacsim.science.prediction.predict import diameter_feature

    parts = []
    for name in names:
        if name == "denoiser_features":
            parts.append(denoiser)
        elif name == "clinical":
            parts.append(xc)
        elif name == "baseline_diameter":
            parts.append(np.array([[diameter_feature(measured_diameter_mm(r))]
                                   for r in records], np.float32))
        else:
            raise SystemExit(f"--head-inputs: unknown input {name!r}")
    return np.concatenate(parts, axis=1)


def main(argv=None) -> int:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    args = parse_args(argv)
    import warnings

    warnings.filterwarnings("ignore", message="Ties in `time` detected")
    warnings.filterwarnings("ignore", category=FutureWarning)
    import torch
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from napari_nacsim.science.prediction import ceiling, clinical, heads as H
    from napari_nacsim.science.prediction import metrics as M

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    records, description = cohort(args)
    metas = [r["meta"] for r in records]
    y = np.array([bool(m["clinical"]["responder"]) for m in metas], int)
    time_ = np.array([m["clinical"]["survival_months"] for m in metas], float)
    event = np.array([bool(m["clinical"]["death"]) for m in metas])
    xc = clinical.clinical_matrix([m["clinical"] for m in metas])
    oracles = [ceiling.oracle(m["clinical"], m["response_probability"]) for m in metas]
    p_true = np.array([o["probability"] for o in oracles])
    eta_base = np.array([o["eta_baseline"] for o in oracles])
    eta_true = np.array([o["eta_true"] for o in oracles])
    folds = list(StratifiedKFold(args.folds, shuffle=True, random_state=args.seed)
                 .split(xc, y))
    print(f"cohort seed {description['cohort_seed']}: {len(y)} patients, {y.sum()} "
          f"responders, {event.sum()} deaths; {args.folds} folds (seed {args.seed})",
          flush=True)
    rows, oof = {}, {}

    score_folds("phantom ceiling (its p and pre-treatment hazard)", folds, y, time_, event,
                lambda tr, te: (p_true[te], eta_base[te]), rows, oof)
    score_folds("phantom oracle (hazard knowing the response)", folds, y, time_, event,
                lambda tr, te: (None, eta_true[te]), rows, oof)
    from napari_nacsim.science.phantoms import lung as lung_phantom

    diameters = [lung_phantom.make_patient(m["cohort_seed"], m["index"]).tumour_diameter_mm
                 for m in metas]
    p_clinical = np.array([ceiling.without_tumour_size(p, d)
                           for p, d in zip(p_true, diameters)])
    score_folds("phantom ceiling without tumour size (clinical part of its p)", folds, y,
                time_, event, lambda tr, te: (p_clinical[te], None), rows, oof)

    def clinical_only(tr, te):
        import pandas as pd
        from lifelines import CoxPHFitter

        lr = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000))
        lr.fit(xc[tr], y[tr])
        cols = list(clinical.COLUMNS)
        keep = [j for j in range(xc.shape[1]) if np.std(xc[tr, j]) > 0]
        frame = pd.DataFrame(xc[tr][:, keep], columns=[cols[j] for j in keep])
        frame["T"], frame["E"] = time_[tr], event[tr]
        from lifelines.exceptions import ConvergenceError

        for penalizer in (0.1, 1.0, 10.0):   # more shrinkage only if Newton fails (tiny sets)
            try:
                cox = CoxPHFitter(penalizer=penalizer).fit(frame, "T", "E")
                break
            except ConvergenceError:
                if penalizer == 10.0:
                    raise
        test = pd.DataFrame(xc[te][:, keep], columns=[cols[j] for j in keep])
        return lr.predict_proba(xc[te])[:, 1], np.asarray(cox.predict_log_partial_hazard(test))

    score_folds("clinical only (logistic regression; Cox, lifelines)", folds, y, time_,
                event, clinical_only, rows, oof)

    if not args.no_cnn:
        from napari_nacsim.science.prediction import image_cnn

        images = image_cnn.image_tensor(np.stack([r["arrays"]["pre_image"] for r in records]))
        for name, use_clinical in (("image CNN (MONAI DenseNet, 3D)", False),
                                   ("image CNN + clinical", True)):
            def cnn(tr, te, use_clinical=use_clinical):
                return image_cnn.fit_predict(
                    images[tr], y[tr], time_[tr], event[tr], images[te],
                    xc[tr] if use_clinical else None, xc[te] if use_clinical else None,
                    epochs=args.cnn_epochs, seed=args.seed)
            score_folds(name, folds, y, time_, event, cnn, rows, oof)

    model_folder = resolve_model(args.model)
    model_info = None
    feats = {}
    if model_folder is not None:
        from napari_nacsim.science.generative.immunodiff.checkpoint import load_checkpoint

        model, card = load_checkpoint(model_folder)
        model_info = {"path": str(model_folder), "model_hash": card["model_hash"],
                      "title": card.get("title", card.get("config", {}).get("name"))}
        for variant in [v for v in args.variants.split(",") if v]:
            feats[variant] = features_of(model, card, records, variant, out,
                                         args.timestep_fraction)

            def heads(tr, te, x=feats[variant]):
                r = H.fit_response(x[tr], y[tr])
                s = H.fit_survival(x[tr], time_[tr], event[tr])
                return 1 / (1 + np.exp(-r.predict(x[te]))), s.predict(x[te])
            score_folds(FEATURE_ROWS[variant], folds, y, time_, event, heads, rows, oof)
        if "full" in feats:
            heads_inputs = [n for n in args.head_inputs.split(",") if n]
            xh = head_matrix(heads_inputs, feats["full"], xc, records)
            # the denoiser's features get an L2 strength of their own (heads.GROUP_L2_GRID)
            gh = head_groups(heads_inputs, feats["full"].shape[1], xc.shape[1]) \
                if args.group_l2 else None

            def heads_chosen(tr, te):
                r = H.fit_response(xh[tr], y[tr], groups=gh)
                s = H.fit_survival(xh[tr], time_[tr], event[tr], groups=gh)
                return 1 / (1 + np.exp(-r.predict(xh[te]))), s.predict(xh[te])
            score_folds(f"ImmunoDiff heads ({' + '.join(heads_inputs)})", folds, y, time_,
                        event, heads_chosen, rows, oof)
            xf = np.concatenate([feats["full"], xc], axis=1)

            def heads_clinical(tr, te):
                r = H.fit_response(xf[tr], y[tr])
                s = H.fit_survival(xf[tr], time_[tr], event[tr])
                return 1 / (1 + np.exp(-r.predict(xf[te]))), s.predict(xf[te])
            score_folds("ImmunoDiff heads (full) + clinical", folds, y, time_, event,
                        heads_clinical, rows, oof)

    # calibration: pooled out-of-fold probabilities
    curves = {}
    for name, o in oof.items():
        p = o["probability"]
        if np.isfinite(p).all():
            c = M.calibration(y, p)
            from sklearn.metrics import brier_score_loss

            curves[name] = {**c, "brier": float(brier_score_loss(y, p))}
    M.reliability_diagram(curves, out / "reliability.png",
                          title=f"{len(y)} synthetic patients, out-of-fold")

    if args.bundle and "full" in feats:
        from napari_nacsim.science.prediction import features as F

        x = xh
        r = H.fit_response(x, y, groups=gh)
        s = H.fit_survival(x, time_, event, groups=gh)
        risks = s.predict(x)
        H.save_heads(args.bundle, r, s, {
            "model_hash": model_info["model_hash"], "feature_variant": "full",
            "inputs": heads_inputs,
            "l2_groups": None if gh is None else
            "denoiser_features: group 1 (its own L2 strength); the other inputs: group 0",
            "timestep_fraction": args.timestep_fraction or F.TIMESTEP_FRACTION,
            "n_features": int(x.shape[1]), "threshold": float(y.mean()),
            "reference_log_risk": float(np.median(risks)),
            "training_cohort": description,
            "command": " ".join(shlex.quote(a) for a in sys.argv)})
        print(f"heads saved to {args.bundle}")

    result = {"cohort": description, "folds": args.folds, "seed": args.seed,
              "model": model_info, "cnn_epochs": None if args.no_cnn else args.cnn_epochs,
              "command": " ".join(shlex.quote(a) for a in sys.argv),
              "seconds": round(time.perf_counter() - started, 1),
              "rows": rows, "calibration": curves, "paper": PAPER}
    (out / "results.json").write_text(json.dumps(result, indent=1, default=float))
    (out / "results.md").write_text(markdown(result))
    print(markdown(result))
    return 0


def markdown(result) -> str:
    from napari_nacsim.science.prediction import metrics as M

    c = result["cohort"]
    lines = [f"Cohort seed {c['cohort_seed']}, patients {c['indices']}: {c['patients']} "
             f"patients, {c['responders']} responders; {result['folds']}-fold stratified CV "
             f"(seed {result['seed']}); mean ± SD over folds.", "",
             "| model | bal. acc. | F1 | precision | recall | ROC AUC | Brier | c-index | "
             "pooled c-index [95 % CI] |", "|---|---|---|---|---|---|---|---|---|"]
    for name, row in result["rows"].items():
        s = row["summary"]
        cells = [M.format_mean_sd(s[k]) if k in s else "—" for k in M.ALL]
        pooled = s.get("c_index_pooled")
        cells.append(f"{pooled['c_index']:.2f} [{pooled['c_index_low']:.2f}, "
                     f"{pooled['c_index_high']:.2f}]" if pooled else "—")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if result["model"] is None:
        lines += ["", "ImmunoDiff heads: pending (no trained lung model was given)."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
