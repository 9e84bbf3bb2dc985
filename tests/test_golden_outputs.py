"""The bundled models' outputs at a fixed seed against their golden records
(tests/golden/*.json), recomputed in a fresh Python process: a silent change of a sampler,
the preprocessing, the conditioning or the weights fails here (tests/golden/README.md says
when and how to update a record on purpose)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

GOLDEN = Path(__file__).resolve().parent / "golden"
FAMILIES = ("breast", "lung")


def _update_module():
    spec = importlib.util.spec_from_file_location("golden_update", GOLDEN / "update.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _stored(family: str) -> dict:
    return json.loads((GOLDEN / f"{family}.json").read_text())


@pytest.fixture(scope="module")
def computed() -> dict:
    """Both families' records, computed by a fresh interpreter (no state of other tests)."""
    argv = [sys.executable, str(GOLDEN / "update.py")]
    for family in FAMILIES:
        argv += ["--print", family]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("family", FAMILIES)
def test_bundled_model_generates_its_golden_outputs(family, computed):
    problems = _update_module().compare(_stored(family), computed[family])
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("family", FAMILIES)
def test_the_record_is_complete_and_says_why_it_was_written(family):
    stored = _stored(family)
    assert stored["family"] == family and len(stored["model_hash"]) == 64
    assert stored["reason"] and stored["updated"]
    assert stored["outputs"] and all(o["scenario"]["time"] for o in stored["outputs"])
    assert {"image", "size_fraction"} <= set(stored["tolerance"])


def test_the_breast_record_tells_pcr_from_non_pcr():
    """A model answering with the arms swapped cannot meet the record: at T2 the pCR and
    non-pCR images differ by far more than the tolerance, and the pCR tumour is smaller."""
    stored = _stored("breast")
    tol = stored["tolerance"]["image"]
    t2 = {o["scenario"]["pCR"]: o for o in stored["outputs"] if o["scenario"]["time"] == "T2"}
    gap = np.max(np.abs(np.asarray(t2[True]["blocks"]) - np.asarray(t2[False]["blocks"])))
    assert gap > 10 * tol, gap
    assert t2[True]["tumour_size"] < t2[False]["tumour_size"]
    size = t2[True]["tumour_size"]
    assert abs(t2[False]["tumour_size"] - size) > stored["tolerance"]["size_fraction"] * size


def test_a_changed_output_is_reported():
    """The comparison itself: one block moved by twice the tolerance, another model hash."""
    update = _update_module()
    stored = _stored("breast")
    changed = json.loads(json.dumps(stored))
    changed["outputs"][0]["blocks"][3][4] += 2 * stored["tolerance"]["image"]
    (problem,) = update.compare(stored, changed)
    assert "block means differ" in problem and "T1" in problem
    changed = json.loads(json.dumps(stored))
    changed["outputs"][1]["tumour_size"] = 1.5 * changed["outputs"][1]["tumour_size"] + 100
    assert "tumour size" in update.compare(stored, changed)[0]
    changed = dict(stored, model_hash="0" * 64)
    assert "a retrained model needs a new record" in update.compare(stored, changed)[0]
    assert update.compare(stored, stored) == []
