"""Training on many processes: `accelerate launch` with 2 CPU processes (gloo) runs the real
entrypoints (train_nac.py, train_lung.py) on micro setups. The processes share out each
step's samples, only the main one writes, the card says how it ran, and a run resumes on
another number of processes.

2 processes x batch 2 must take the same steps as 1 process x batch 4 (every process draws the
global batch and trains on its half; the gradients are averaged), so the in-process run on
one process is the reference for the launched one.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from train_nac_launch import use_micro_setup

ROOT = Path(__file__).resolve().parents[1]


def arguments(out: Path, batch_size: int, stage2_steps: int) -> list[str]:
    # (The learning rate schedule of 2 or 3 stage-2 steps is the same for the first two.)
    return ["--out", str(out), "--batch-size", str(batch_size), "--patients", "8",
            "--stage1-steps", "2", "--stage2-steps", str(stage2_steps), "--cpu",
            "--checkpoint-every", "1", "--log-samples", "--quiet"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return {f"{name}.{k}": v for name in ("unet", "controlnet", "prompt_tokens")
            for k, v in load_file(str(folder / f"{name}.safetensors")).items()}


def _assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    for key in wa:  # equal up to the order of floating-point sums (measured: 3e-6)
        torch.testing.assert_close(wa[key], wb[key], rtol=1e-4, atol=5e-5, msg=key)


@pytest.fixture(scope="module")
def launched(tmp_path_factory):
    """One `accelerate launch` of 2 CPU processes, batch 2 each, 2 + 2 steps."""
    out = tmp_path_factory.mktemp("two_processes") / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           # no user-wide accelerate config (~/.cache/huggingface/accelerate) may apply
           "HF_HOME": str(out.parent / "hf_home"), "PYTHONWARNINGS": "ignore"}
    # --multi_gpu is accelerate's torchrun launcher; with --cpu in the script (no GPU here
    # anyway) the processes form a MULTI_CPU group on the gloo backend. (`accelerate launch
    # --cpu --num_processes 2` would start one process unless an MPI hostfile is given.)
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu",
               "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
               "--dynamo_backend", "no", "--main_process_port", str(_free_port()),
               str(ROOT / "tests" / "train_nac_launch.py"), *arguments(out, 2, 2)]
    done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    return out, done.stdout


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The same run on one process with batch 4, in this process, 2 + 3 steps."""
    out = tmp_path_factory.mktemp("one_process") / "run"
    with pytest.MonkeyPatch.context() as mp:
        script = use_micro_setup(mp.setattr)
        assert script.main(arguments(out, 4, 3)) == 0
    return out


def test_processes_share_out_each_step_and_one_writes(launched, reference):
    out, stdout = launched
    # Each process trained on its own half of every step's global batch ...
    rank0, rank1 = _rows(out / "samples" / "rank0.csv"), _rows(out / "samples" / "rank1.csv")
    one = _rows(reference / "samples" / "rank0.csv")
    steps = [("1", "1"), ("1", "2"), ("2", "1"), ("2", "2")]
    assert [(r["stage"], r["step"]) for r in rank0] == steps
    assert [(r["stage"], r["step"]) for r in rank1] == steps
    assert all(r["num_processes"] == "2" and len(r["patients"].split()) == 2
               for r in rank0 + rank1)
    assert [r["patients"] for r in rank0] != [r["patients"] for r in rank1]
    # ... and together they drew exactly what one process with the global batch draws.
    for a, b, ref in zip(rank0, rank1, one):
        assert a["patients"].split() + b["patients"].split() == ref["patients"].split()
        assert a["times"].split() + b["times"].split() == ref["times"].split()
    # Written once: one loss row per step (the loss of the global batch, as one process
    # logs it), one "model written" line, no per-process copies of anything.
    log = _rows(out / "loss_log.csv")
    assert [(r["stage"], r["step"]) for r in log] == steps
    ref_log = _rows(reference / "loss_log.csv")[:4]
    for r, ref in zip(log, ref_log):
        assert float(r["loss"]) == pytest.approx(float(ref["loss"]), rel=1e-4)
    assert stdout.count("model written to") == 1 and "(2 process(es))" in stdout
    assert sorted(p.name for p in out.iterdir()) == ["loss_curve.png", "loss_log.csv", "model",
                                                      "resume", "samples", "split.json"]
    assert not [p for p in out.rglob("*") if ".part" in p.name]
    # The card records how it really ran.
    card = json.loads((out / "model" / "model_card.json").read_text())["training"]
    assert card["num_processes"] == 2 and card["distributed_type"] == "MULTI_CPU"
    assert card["batch_size"] == {"1": 2, "2": 2}
    assert card["effective_batch_size"] == {"1": 4, "2": 4}
    assert card["command"].startswith("accelerate launch --num_processes 2 training/train_nac.py")


def test_resume_on_another_number_of_processes_continues_the_run(launched, reference,
                                                                 tmp_path):
    out, _ = launched
    # The launched run's resume state (2 processes, after stage 2 step 2) goes on here on one
    # process with batch 4: the same effective batch, so it must end where the uninterrupted
    # one-process run ends (the state holds nothing that depends on the process count).
    resumed = tmp_path / "resumed"
    shutil.copytree(out, resumed)
    state = json.loads((resumed / "resume" / "train_state.json").read_text())
    assert (state["stage"], state["step"]) == (2, 2)
    with pytest.MonkeyPatch.context() as mp:
        script = use_micro_setup(mp.setattr)
        assert script.main(arguments(resumed, 4, 3)) == 0
    _assert_same_weights(resumed / "model", reference / "model")
    card = json.loads((resumed / "model" / "model_card.json").read_text())["training"]
    assert card["num_processes"] == 1 and card["effective_batch_size"] == {"1": 4, "2": 4}
    assert [(r["stage"], r["step"], r["num_processes"]) for r in card["processes_per_run"]] \
        == [(1, 0, 2), (2, 2, 1)]
    log = _rows(resumed / "loss_log.csv")
    assert [(r["stage"], r["step"]) for r in log] == [("1", "1"), ("1", "2"), ("2", "1"),
                                                      ("2", "2"), ("2", "3")]


# --- the lung family's ImmunoDiff (training/train_lung.py) --------------------------------

def _lung_records(folder: Path, n: int = 4) -> Path:
    """One lung phantom's crops as ``n`` records of the unpaired and paired caches, each with
    other clinical values (drawing n phantoms would cost seconds each)."""
    from napari_nacsim.families import get_family
    from napari_nacsim.science.generative.immunodiff.data import unpaired_record, write_record

    record = unpaired_record(get_family("lung"), 0, 0)
    for i in range(n):
        meta = {**record["meta"], "index": i,
                "clinical": {**record["meta"]["clinical"], "PD_L1": float(20 * i),
                             "age": 50.0 + i}}
        for kind in ("unpaired_100", "paired_0"):
            write_record(folder / kind, i, {"arrays": record["arrays"], "meta": meta})
    return folder


def _lung_arguments(tmp: Path, out: Path, batch_size: int) -> list[str]:
    from napari_nacsim.science.generative.immunodiff.config import MICRO

    config = tmp / "lung_micro.json"
    if not config.exists():
        config.write_text(json.dumps(MICRO))
    # base: the denoiser; adapter: cbi-Adapter + ControlNet on paired patients (stage vl's
    # InfoNCE takes its negatives within each process's rows, so it is not comparable)
    return ["--config", str(config), "--out", str(out), "--data", str(tmp / "records"),
            "--use-cached", "--no-progress", "--stages", "base,adapter", "--steps", "base=2",
            "--steps", "adapter=2", "--batch-size", str(batch_size)]


def test_lung_training_shares_out_each_step_and_writes_once(tmp_path):
    _lung_records(tmp_path / "records")
    two = tmp_path / "two"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HOME": str(tmp_path / "hf_home"),
           "PYTHONWARNINGS": "ignore"}
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu",
               "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
               "--dynamo_backend", "no", "--main_process_port", str(_free_port()),
               str(ROOT / "training" / "train_lung.py"), *_lung_arguments(tmp_path, two, 2)]
    done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    assert done.stdout.count("model written to") == 1 and "(2 process(es))" in done.stdout
    # the same steps on one process with the global batch, in this process
    one = tmp_path / "one"
    sys.path.insert(0, str(ROOT / "training"))
    try:
        import train_lung
    finally:
        sys.path.pop(0)
    assert train_lung.main(_lung_arguments(tmp_path, one, 4)) == 0
    # Each process trained on its half of every step's global batch: the loss of the global
    # batch (logged once per step) and the weights are those of the one-process run.
    log, ref = _rows(two / "loss_log.csv"), _rows(one / "loss_log.csv")
    assert [(r["stage"], r["step"]) for r in log] == [("base", "1"), ("base", "2"),
                                                      ("adapter", "1"), ("adapter", "2")]
    assert [(r["stage"], r["step"]) for r in ref] == [(r["stage"], r["step"]) for r in log]
    for r, r1 in zip(log, ref):
        assert float(r["loss"]) == pytest.approx(float(r1["loss"]), rel=1e-4)
    for name in ("unet", "controlnet", "adapter"):
        a = load_file(str(two / "model" / f"{name}.safetensors"))
        b = load_file(str(one / "model" / f"{name}.safetensors"))
        assert a.keys() == b.keys()
        for key in a:
            if key.startswith("controlnet_cond_embedding.conv_out"):
                # Zero-initialised behind zero convolutions: no gradient at the first step,
                # a near-zero one at the second, which Adam's first steps turn into about
                # +-lr whatever its size, so summation order decides the sign (measured:
                # 169 of its 576 weights differ by up to 1.2e-3; every other weight of the
                # three modules agrees to 5e-5)
                continue
            torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=5e-5, msg=key)
    assert not [p for p in two.rglob("*") if ".part" in p.name or ".tmp" in p.name]
    card = json.loads((two / "model" / "model_card.json").read_text())["training"]
    assert card["num_processes"] == 2 and card["distributed_type"] == "MULTI_CPU"
    assert card["batch_size"] == 2 and card["effective_batch_size"] == 4
    assert card["command"].startswith("accelerate launch --num_processes 2 "
                                      "training/train_lung.py")
