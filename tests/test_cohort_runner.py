"""Cohort runs on Dask distributed (`engine.cohort_runner`): a 2-worker loopback cluster gives
the single-process answer byte for byte, a worker killed mid-run loses nothing, an interrupted
run resumes and redoes only the unfinished cases, a bad case is recorded and the rest complete.

One 2-worker `LocalCluster` (processes, one thread each, loopback) serves the module: each
worker loads the bundled models once, and the cohorts are tiny (3 patients, one follow-up each,
2 sampler steps)."""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import signal
import time
from pathlib import Path

import pytest

from cohort_helpers import tiny_cohort
from napari_nacsim.core.errors import InputError
from napari_nacsim.engine.cohort_review import cases_to_csv, review_cohort
from napari_nacsim.engine.cohort_runner import (CASES, DONE, FAILED, RECORD, BatchJob, Case,
                                                JobSpec, ReviewJob, RunProgress,
                                                one_torch_thread, run_cases, safe_name)
from napari_nacsim.engine.jobs import Cancelled, CancelToken

STEPS = 2
PATIENTS = ("BR0001", "BR0002", "BR0003")


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    return tiny_cohort(tmp_path_factory.mktemp("runner") / "cohort", len(PATIENTS))


@pytest.fixture(scope="module")
def reference(manifest, tmp_path_factory):
    """The single-process run: the runner here, one case after another."""
    out = tmp_path_factory.mktemp("reference")
    summary = run_cases(ReviewJob(manifest, steps=STEPS), out, workers=0)
    return out, summary


@pytest.fixture(scope="module")
def client():
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None, scheduler_port=0) as cluster, \
            Client(cluster) as connected:
        yield connected


def _images(out: Path) -> dict[str, bytes]:
    """Every finished case's NIfTI files (not those of a staging folder a killed worker left
    behind: nothing reads those)."""
    files = {str(p.relative_to(out)): p for p in sorted((out / CASES).rglob("*.nii.gz"))}
    return {name: p.read_bytes() for name, p in files.items()
            if not any(part.startswith(".") for part in Path(name).parts)}


def _csv_lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def test_single_process_run_is_the_review(manifest, reference, tmp_path):
    """The runner's per-case records give the review's CSV (the inspector's engine), and
    every generated image is on disk, labelled synthetic."""
    out, summary = reference
    assert summary.computed == list(PATIENTS) and not summary.failed
    legacy = tmp_path / "legacy.csv"
    with one_torch_thread():  # as every case of a run
        cases_to_csv(list(review_cohort(manifest, steps=STEPS)), legacy)
    assert summary.csv.read_bytes() == legacy.read_bytes()
    images = _images(out)
    assert {name.split("/")[1] for name in images} == set(PATIENTS)
    assert f"{CASES}/BR0001/T1_generated.nii.gz" in images
    sidecar = json.loads((out / CASES / "BR0001" / "T1_generated.json").read_text())
    assert sidecar["synthetic"] is True and sidecar["provenance"]["steps"] == STEPS


def test_two_workers_give_the_single_process_answer_byte_for_byte(manifest, reference,
                                                                  client, tmp_path):
    ref_out, ref = reference
    summary = run_cases(ReviewJob(manifest, steps=STEPS), tmp_path, client=client)
    assert sorted(summary.computed) == list(PATIENTS) and not summary.failed
    assert summary.csv.read_bytes() == ref.csv.read_bytes()
    assert _images(tmp_path) == _images(ref_out)
    hosts = {r["host"] for r in summary.records}
    assert all(str(os.getpid()) != h.rsplit(":", 1)[1] for h in hosts)  # ran on the workers


def test_a_worker_killed_mid_run_loses_nothing(manifest, reference, client, tmp_path):
    killed = []

    def kill_a_busy_worker(state):
        if killed:
            return
        busy = {w: keys for w, keys in client.processing().items() if keys}
        if busy:
            worker = sorted(busy)[0]
            pid = client.run(os.getpid, workers=[worker])[worker]
            os.kill(pid, signal.SIGKILL)
            killed.append((worker, list(busy[worker])))

    summary = run_cases(ReviewJob(manifest, steps=STEPS), tmp_path, client=client,
                        progress=kill_a_busy_worker)
    assert killed, "no case was in flight to kill a worker under"
    assert [r["status"] for r in summary.records] == [DONE] * len(PATIENTS)
    assert summary.csv.read_bytes() == reference[1].csv.read_bytes()
    assert _images(tmp_path) == _images(reference[0])
    _wait_for_workers(client, 2)


def _wait_for_workers(client, n: int, timeout: float = 60.0) -> None:
    """The nanny restarts a killed worker; later tests want both."""
    deadline = time.monotonic() + timeout
    while len(client.nthreads()) < n and time.monotonic() < deadline:
        time.sleep(0.2)


def test_an_interrupted_run_resumes_and_redoes_only_the_unfinished(manifest, reference,
                                                                   client, tmp_path):
    job = ReviewJob(manifest, steps=STEPS)
    token = CancelToken()
    with pytest.raises(Cancelled):  # interrupted after the first case
        run_cases(job, tmp_path, workers=0, progress=lambda state: token.cancel(),
                  cancel=token)
    finished = [p.parent.name for p in (tmp_path / CASES).glob(f"*/{RECORD}")]
    assert finished == ["BR0001"]
    # what a crash leaves: a half-written case folder, and a record of another request
    (tmp_path / CASES / ".BR0002.partial-x").mkdir()
    (tmp_path / CASES / ".BR0002.partial-x" / RECORD).write_text("{}")
    stale = json.loads((tmp_path / CASES / "BR0001" / RECORD).read_text())
    (tmp_path / CASES / "BR0003").mkdir()
    (tmp_path / CASES / "BR0003" / RECORD).write_text(json.dumps(
        {**stale, "id": "BR0003", "request_hash": "another request"}))

    with pytest.raises(InputError, match="--resume"):  # never over a run by accident
        run_cases(job, tmp_path, workers=0)
    summary = run_cases(job, tmp_path, client=client, resume=True)
    assert sorted(summary.computed) == ["BR0002", "BR0003"] and summary.reused == ["BR0001"]
    assert summary.csv.read_bytes() == reference[1].csv.read_bytes()
    assert _images(tmp_path) == _images(reference[0])
    again = run_cases(job, tmp_path, client=client, resume=True)  # nothing left to do
    assert again.computed == [] and again.csv.read_bytes() == reference[1].csv.read_bytes()


def test_a_bad_case_is_recorded_and_the_rest_complete(manifest, reference, client, tmp_path):
    payload = json.loads(manifest.read_text())
    bad = manifest.parent / "BR0002" / "T1_broken.nii.gz"
    bad.write_bytes(b"not a NIfTI file")
    payload["patients"][1]["scans"]["T1"]["pre"] = str(bad.relative_to(manifest.parent))
    broken = manifest.with_name("broken.json")
    broken.write_text(json.dumps(payload))

    summary = run_cases(ReviewJob(broken, steps=STEPS), tmp_path / "run", client=client)
    assert [r["status"] for r in summary.records] == [DONE, FAILED, DONE]
    ((case, reason),) = summary.failed
    assert case == "BR0002" and "T1_broken.nii.gz" in reason and "\n" not in reason
    good = [line for line in _csv_lines(reference[1].csv) if not line.startswith("BR0002,")]
    assert _csv_lines(summary.csv) == good
    with open(tmp_path / "run" / "failed.csv", newline="") as fh:
        assert list(csv.reader(fh)) == [["case", "reason"], ["BR0002", reason]]


@dataclasses.dataclass(frozen=True)
class _Outcomes(JobSpec):
    """A spec for the submission loop alone: which cases fail (recorded by the case) and
    which raise (outside the case); reaches the workers only through the run's plugin."""

    fail: tuple = ()
    crash: tuple = ()


def _outcome(spec, case, out):
    if case.payload in spec.crash:
        raise RuntimeError(f"case {case.id} crashed")
    return {"id": case.id, "status": FAILED if case.payload in spec.fail else DONE,
            "reason": "bad input" if case.payload in spec.fail else ""}


def test_the_window_bounds_the_cases_in_flight_and_reports_each_once(client, tmp_path):
    """A 100,000-row manifest never sits in the scheduler: at most ``window`` cases are drawn
    ahead of those reported; every case is reported once with its outcome (a failed case,
    a task that raised: recorded by the client)."""
    from napari_nacsim.engine.cohort_dask import run_on_dask

    n, window, drawn, reported, ahead = 60, 6, [], [], []

    def pending():
        for i in range(n):
            ahead.append(len(drawn) - len(reported))   # before drawing one more
            drawn.append(i)
            yield Case(f"c{i:02d}", i, "hash", i)

    run_on_dask(client, _Outcomes(fail=(3, 41), crash=(7,)), pending(), str(tmp_path),
                RunProgress(total=n), lambda case, status: reported.append((case, status)),
                window=window, execute=_outcome)
    assert max(ahead) == window - 1  # the window is filled, never overfilled
    assert sorted(reported) == [(f"c{i:02d}", FAILED if i in (3, 7, 41) else DONE)
                                for i in range(n)]
    crashed = json.loads((tmp_path / CASES / "c07" / RECORD).read_text())
    assert crashed["status"] == FAILED and crashed["reason"] == "RuntimeError: case c07 crashed"
    assert not (tmp_path / CASES / "c03").exists()  # a failed case is the case's to record


def test_batch_command_on_a_phantom_cohort_through_a_scheduler(client, tmp_path, capsys):
    from napari_nacsim.cli.main import main

    out = tmp_path / "batch"
    argv = ["batch", "--phantoms", "breast", "--patients", "2", "--scenario", "pCR=yes",
            "--steps", str(STEPS), "--no-figure", "--out", str(out), "--quiet",
            "--scheduler", client.scheduler.address]
    assert main(argv) == 0
    assert "wrote 2 SYNTHETIC what-if runs" in capsys.readouterr().out
    rows = list(csv.DictReader((out / "batch.csv").open()))
    assert [(r["patient"], r["time"]) for r in rows] == [
        ("BR0001", "T1"), ("BR0001", "T2"), ("BR0002", "T1"), ("BR0002", "T2")]
    assert all(r["scenario"] == "pCR=yes" and r["steps"] == str(STEPS) for r in rows)
    folder = out / CASES / "BR0001" / safe_name("pCR=yes")
    report = json.loads((folder / "report.json").read_text())
    assert report["synthetic"] is True and report["patient"] == "BR0001"
    assert report["request"]["clinical"]["pCR"] is True
    first = (out / "batch.csv").read_bytes()
    assert main([*argv, "--resume"]) == 0  # nothing to redo: the same table
    assert "(2 from before)" in capsys.readouterr().out
    assert (out / "batch.csv").read_bytes() == first


def test_bad_run_options_are_one_line_errors(manifest, tmp_path, capfd):
    from napari_nacsim.cli.main import main

    base = ["review", str(manifest), "--csv", str(tmp_path / "r.csv")]
    for extra, words in ((["--queue", "short"], "--queue: is a job option"),
                         (["--workers", "2", "--scheduler", "tcp://127.0.0.1:1"], "choose one"),
                         (["--retry-failed"], "goes with --resume"),
                         (["--workers", "-1"], "must be 0 or more")):
        assert main([*base, *extra]) == 2
        err = capfd.readouterr().err.strip()
        assert err.startswith("nacsim: error: ") and words in err and "\n" not in err
    with pytest.raises(InputError, match="scenario variable"):
        BatchJob(manifest, ["colour=blue"])
