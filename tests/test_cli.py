"""The `nacsim` command line: bad input ends with one line on stderr and exit status 2."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from napari_nacsim.cli.main import main


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _assert_one_line_error(code, err, *needles):
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("nacsim")
    for needle in needles:
        assert needle in lines[0]


def test_info_reports_geometry(capsys, nifti_file):
    path, _, _ = nifti_file
    code, out, _ = run(capsys, "info", path)
    assert code == 0
    assert "spacing: (2.5, 0.7, 0.8) mm" in out and "orientation: LPS" in out


@pytest.mark.parametrize("content, problem", [
    (b"garbage" * 30, "corrupt or truncated"),
    (None, "does not exist"),
])
def test_info_bad_files(capsys, tmp_path, content, problem):
    path = tmp_path / "scan.nii.gz"
    if content is not None:
        path.write_bytes(content)
    code, _, err = run(capsys, "info", path)
    _assert_one_line_error(code, err, "scan.nii.gz", problem)


def test_validate_bad_manifest(capsys, tmp_path):
    manifest = tmp_path / "cohort.json"
    manifest.write_text(json.dumps({"format": "nacsim-cohort", "version": 1, "family": "lung",
                                    "patients": [{"id": "L1", "clinical": {"age": 250}}]}))
    code, _, err = run(capsys, "validate", manifest)
    _assert_one_line_error(code, err, "patient L1", "'age'", "plausible range")


def test_usage_errors_are_one_line(capsys, tmp_path):
    with pytest.raises(SystemExit) as exc:
        main(["phantoms", "prostate", "--out", str(tmp_path)])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "invalid choice: 'prostate'" in err


@pytest.mark.parametrize("args, needle", [
    (["--patients", "0"], "--patients: 0 is not in 1..10000"),
    (["--patients", "2", "--seed", "-1"], "--seed: -1 must be >= 0"),
])
def test_phantoms_bad_arguments(capsys, tmp_path, args, needle):
    code, _, err = run(capsys, "phantoms", "breast", "--out", tmp_path / "c", *args)
    _assert_one_line_error(code, err, needle)
    assert not (tmp_path / "c").exists()


def test_phantoms_refuses_non_empty_folder(capsys, tmp_path):
    (tmp_path / "keep.txt").write_text("precious")
    code, _, err = run(capsys, "phantoms", "lung", "--patients", "1", "--out", tmp_path)
    _assert_one_line_error(code, err, "folder is not empty")
    assert (tmp_path / "keep.txt").read_text() == "precious"


def test_console_script_runs():
    result = subprocess.run([sys.executable, "-m", "napari_nacsim.cli.main", "--version"],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0 and result.stdout.startswith("nacsim ")
