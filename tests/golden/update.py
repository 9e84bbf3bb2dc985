"""Golden outputs of the bundled generative models: what each one generates for its sample
patient at a fixed seed, stored as reference values (tests/golden/<family>.json) and
checked in a fresh process by tests/test_golden_outputs.py.

    python tests/golden/update.py --reason "lung model retrained (issue 19)"   # rewrite all
    python tests/golden/update.py --family lung --reason "..."                 # one family
    python tests/golden/update.py --check          # compare with the stored files (exit 1)
    python tests/golden/update.py --print breast   # the computed record as JSON

Rewrite only on purpose (a retrained model, a deliberate change of the sampler or of the
preprocessing), never to make a failing test pass: see tests/golden/README.md.

What is recorded per family (the sample patient ``sample_case(0)``, its baseline only):
- the model input on the model grid (catches preprocessing changes);
- each generated image of the family's default comparison at every follow-up time (and,
  for a model that takes an outcome input, with the outcome given both ways): mean, SD,
  and block means of the image (breast) or of its middle slice (lung) on an 8 x 8 grid of
  blocks, plus the generated tumour's size by a fixed threshold rule (no segmenter model:
  a change here is the generator's; inside the baseline tumour grown by 4 voxels), and
  the input's tumour size the same way; the sha256 of the float32 bytes (information
  only: other CPUs may differ in the last bits, so the check uses the tolerances);
- the evaluation file in docs/ that names the model's hash (found, not typed).
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", "1")

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
FAMILIES = ("breast", "lung")
SEED = 0
BLOCKS = 8
# Sampler steps per family (few: the record is about the code path, not image quality).
STEPS = {"breast": 4, "lung": 2}
# Absolute tolerances in the image's unit (breast: intensity 0-1; lung: HU). Far below the
# differences between the compared arms (checked by the test), far above what another CPU
# changes.
TOLERANCE = {"breast": {"image": 1e-3, "size_fraction": 0.1},
             "lung": {"image": 1.0, "size_fraction": 0.1}}
# The fixed threshold rule for the generated tumour (see tumour_size).
THRESHOLD = {"breast": 0.4, "lung": -300.0}


def golden_path(family: str) -> Path:
    return HERE / f"{family}.json"


def _digest(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array, np.float32).tobytes()).hexdigest()


def image_stats(array: np.ndarray, decimals: int) -> dict[str, Any]:
    a = np.asarray(array, np.float64)
    plane = a[a.shape[0] // 2] if a.ndim == 3 else a
    h, w = plane.shape
    blocks = plane[: h - h % BLOCKS, : w - w % BLOCKS].reshape(
        BLOCKS, h // BLOCKS, BLOCKS, w // BLOCKS).mean(axis=(1, 3))
    return {"shape": list(a.shape), "mean": round(float(a.mean()), decimals),
            "sd": round(float(a.std()), decimals),
            "blocks": np.round(blocks, decimals).tolist(), "sha256": _digest(array)}


def tumour_size(family: str, array: np.ndarray, spacing, region: np.ndarray) -> float:
    """mm² (2D) or mL (3D) of the voxels above the family's threshold inside ``region`` (the
    baseline tumour mask grown by 4 voxels in-plane: where the tumour can be)."""
    n = int(np.count_nonzero(region & (np.asarray(array) > THRESHOLD[family])))
    volume = float(np.prod(spacing))
    return round(n * volume / (1000.0 if np.ndim(array) == 3 else 1.0), 3)


def tumour_region(mask: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    mask = np.asarray(mask) > 0
    structure = np.zeros((3,) * mask.ndim, bool)
    structure[(1,) * (mask.ndim - 2) + (slice(None), slice(None))] = True  # in-plane
    return ndimage.binary_dilation(mask, structure, iterations=4)


def _scenarios(family, clinical: dict) -> list[dict]:
    """The default comparison's arms at every follow-up time, the patient's other values
    (derived ones recomputed); with the outcome given both ways where the model takes one."""
    schema = family.schema
    own = {k: v for k, v in clinical.items()
           if k in {v.name for v in schema.condition_variables if v.derive is None}}
    comparison = family.default_comparison()
    out = []
    for tp in family.followup_times:
        for value in comparison.values:
            values = schema.validate_clinical({**own, comparison.variable.name: value},
                                              subject="golden", partial=True)
            out.append({"time": tp, **values})
    return out


def compute(family_name: str, steps: int | None = None, sampler: str | None = None
            ) -> dict[str, Any]:
    """The record of ``family_name``'s bundled model (see the module docstring)."""
    from napari_nacsim.engine import load_model, model_grid, simulate
    from napari_nacsim.families import get_family
    from napari_nacsim.science.generative.card import outcome_inputs

    family = get_family(family_name)
    model = load_model(family=family.name, device="cpu")
    phantom = family.make_phantom(0, 0)
    rendering = phantom.render()
    base = family.schema.baseline
    entry = family.model_inputs({base: rendering.visits()[base]})[base]
    grid = model_grid(model, entry["image"])
    region = tumour_region(family.resample(entry["tumour"], model.grid).array)
    context = family.model_context(entry)
    scenarios = _scenarios(family, dict(rendering.clinical))
    for name in outcome_inputs(model.card["config"]):
        scenarios = [{**s, name: value} for s in scenarios for value in (True, False)]
    steps = int(steps or STEPS[family.name])
    sampler = sampler or model.default_sampler
    images = simulate(model, grid, scenarios, seed=SEED, steps=steps, sampler=sampler,
                      context=context)
    decimals = 5 if family.model_input.value_range == (0.0, 1.0) else 2
    return {
        "family": family.name, "model_hash": model.model_hash,
        "model": model.card.get("title", model.path.name),
        "patient": phantom.id, "seed": SEED, "steps": steps, "sampler": sampler,
        "guidance": model.default_guidance, "tolerance": TOLERANCE[family.name],
        "input": {**image_stats(grid.array, decimals),
                  "tumour_size": tumour_size(family.name, grid.array, grid.spacing, region)},
        "outputs": [{"scenario": _plain(s), **image_stats(img.array, decimals),
                     "tumour_size": tumour_size(family.name, img.array, img.spacing, region)}
                    for s, img in zip(scenarios, images)],
        "evaluation": find_evaluation(model.model_hash),
    }


def _plain(scenario: dict) -> dict:
    return {k: (float(v) if isinstance(v, (float, np.floating)) else v)
            for k, v in scenario.items()}


def find_evaluation(model_hash: str) -> str | None:
    """The docs/*.json evaluation that names ``model_hash`` (top level or under "model"),
    relative to the repository; None when there is none yet."""
    for path in sorted((ROOT / "docs").rglob("*eval*.json"), key=lambda p: (len(p.name), p.name)):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        named = data.get("model_hash") or (data.get("model") or {}).get("model_hash")
        if named == model_hash:
            return str(path.relative_to(ROOT))
    return None


def compare(stored: dict[str, Any], computed: dict[str, Any]) -> list[str]:
    """The differences beyond the stored tolerances (empty: the same outputs)."""
    family = stored["family"]
    if computed["model_hash"] != stored["model_hash"]:
        return [f"{family}: the bundled model is {computed['model_hash'][:12]}, the golden "
                f"record is of {stored['model_hash'][:12]}: a retrained model needs a new "
                "record (tests/golden/README.md)"]
    tol = stored["tolerance"]
    problems = []

    def close(what: str, a: dict, b: dict) -> None:
        if a["shape"] != b["shape"]:
            problems.append(f"{family} {what}: shape {b['shape']} != {a['shape']}")
            return
        for key in ("mean", "sd"):
            if abs(a[key] - b[key]) > tol["image"]:
                problems.append(f"{family} {what}: {key} {b[key]} != {a[key]} "
                                f"(tolerance {tol['image']})")
        worst = float(np.max(np.abs(np.asarray(a["blocks"]) - np.asarray(b["blocks"]))))
        if worst > tol["image"]:
            problems.append(f"{family} {what}: block means differ by up to {worst:.4g} "
                            f"(tolerance {tol['image']})")

    close("model input", stored["input"], computed["input"])
    if [o["scenario"] for o in stored["outputs"]] != [o["scenario"] for o in
                                                       computed["outputs"]]:
        return problems + [f"{family}: the scenarios differ from the record's"]
    for a, b in zip(stored["outputs"], computed["outputs"]):
        what = ", ".join(f"{k}={v}" for k, v in a["scenario"].items()
                         if k in ("time", "pCR", "PD_L1", "responder"))
        close(what, a, b)
        allowed = tol["size_fraction"] * max(a["tumour_size"], 1e-9)
        if abs(a["tumour_size"] - b["tumour_size"]) > allowed:
            problems.append(f"{family} {what}: tumour size {b['tumour_size']} != "
                            f"{a['tumour_size']} (tolerance {100 * tol['size_fraction']:.0f} %)")
    return problems


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--family", choices=FAMILIES, action="append")
    p.add_argument("--reason", help="why the record changes (required to write)")
    p.add_argument("--check", action="store_true", help="compare with the stored records")
    p.add_argument("--print", dest="print_", choices=FAMILIES, action="append",
                   help="print the computed record(s) as JSON (with the stored settings)")
    args = p.parse_args(argv)
    families = args.family or list(FAMILIES)
    if args.print_:
        records = {}
        for name in args.print_:
            stored = json.loads(golden_path(name).read_text()) if golden_path(name).exists() \
                else {}
            records[name] = compute(name, stored.get("steps"), stored.get("sampler"))
        print(json.dumps(records))
        return 0
    if args.check:
        problems = []
        for name in families:
            stored = json.loads(golden_path(name).read_text())
            problems += compare(stored, compute(name, stored["steps"], stored["sampler"]))
        print("\n".join(problems) or "golden outputs: same")
        return 1 if problems else 0
    if not args.reason:
        p.error("--reason is required to rewrite a golden record (tests/golden/README.md)")
    for name in families:
        record = compute(name)
        record["updated"] = datetime.date.today().isoformat()
        record["reason"] = args.reason
        golden_path(name).write_text(json.dumps(record, indent=1) + "\n")
        print(f"wrote {golden_path(name).relative_to(ROOT)} (model {record['model_hash'][:12]}"
              f", evaluation: {record['evaluation'] or 'none yet'})")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT / "src"))
    raise SystemExit(main())
