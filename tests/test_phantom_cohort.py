"""Writing synthetic cohorts: the manifest the rest of nacsim reads, deterministic, atomic."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_nacsim.cli.main import main
from napari_nacsim.core.cohort import check_cohort_images, load_cohort
from napari_nacsim.core.scan_io import read_scan
from napari_nacsim.datasets.phantom_cohort import phantom_of, write_phantom_cohort


@pytest.mark.parametrize("family, timepoints, masks", [
    ("breast", {"T0", "T1", "T2"}, {"tumour"}),
    ("lung", {"pre", "post"}, {"tumour", "lobes", "vessels"}),
])
def test_cli_writes_a_valid_cohort(tmp_path, capsys, family, timepoints, masks):
    out = tmp_path / family
    assert main(["phantoms", family, "--patients", "2", "--seed", "5", "--out", str(out),
                 "--quiet"]) == 0
    assert "wrote 2 synthetic" in capsys.readouterr().out
    cohort = load_cohort(out / "cohort.json")
    check_cohort_images(cohort)
    assert cohort.meta["synthetic"] is True
    assert [p.id for p in cohort.patients] == [f"{family[:2].upper()}0001",
                                               f"{family[:2].upper()}0002"]
    patient = cohort.patients[0]
    assert set(patient.scans) == timepoints
    assert set(patient.masks[cohort.family.baseline]) == masks
    scan = read_scan(patient.scan_path(cohort.family.baseline, cohort.family.channels[0]))
    assert scan.provenance["synthetic"] is True
    # No staging folders left beside the output.
    assert sorted(p.name for p in tmp_path.iterdir()) == [family]


def test_deterministic_and_independent_of_jobs_and_size(tmp_path):
    a = write_phantom_cohort("breast", 2, 11, tmp_path / "a", jobs=1)
    b = write_phantom_cohort("breast", 3, 11, tmp_path / "b", jobs=2)
    ca, cb = load_cohort(a), load_cohort(b)
    for pa, pb in zip(ca.patients, cb.patients):
        assert pa.clinical == pb.clinical
        for tp in pa.scans:
            for ch in pa.scans[tp]:
                np.testing.assert_array_equal(read_scan(pa.scans[tp][ch]).array,
                                              read_scan(pb.scans[tp][ch]).array)
    manifest = json.loads(a.read_text())
    assert manifest["generator"]["seed"] == 11


def test_counterfactual_generator_is_recoverable_from_the_manifest(tmp_path):
    cohort = load_cohort(write_phantom_cohort("breast", 1, 3, tmp_path / "c", jobs=1))
    patient = cohort.patients[0]
    phantom = phantom_of(cohort, patient)
    flipped = phantom.render({"pCR": not patient.clinical["pCR"]})
    np.testing.assert_array_equal(flipped.scans["T0"]["post"].array,
                                  read_scan(patient.scan_path("T0", "post")).array)


def test_overwrite_replaces_a_cohort_atomically(tmp_path):
    out = tmp_path / "c"
    write_phantom_cohort("lung", 1, 0, out, jobs=1)
    (out / "stale.txt").write_text("old")
    write_phantom_cohort("lung", 1, 1, out, jobs=1, overwrite=True)
    assert not (out / "stale.txt").exists()
    assert json.loads((out / "cohort.json").read_text())["generator"]["seed"] == 1


def test_interrupted_run_leaves_no_partial_cohort(tmp_path):
    def interrupt(done, total):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_phantom_cohort("lung", 2, 0, tmp_path / "c", jobs=1, progress=interrupt)
    assert list(tmp_path.iterdir()) == []
