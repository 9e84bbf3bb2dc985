"""The real training entrypoint on a tiny cohort, and both ways of loading what it trained.

``training/train_segmenter.py`` runs in a subprocess (as users run it, and so that
nnU-Net's process-wide settings stay out of the test process): 3 synthetic breast patients,
baseline MIPs only (no registration), nnU-Net's stages with the compact plan, 2 training
iterations. Then the pickle-free package it wrote and nnU-Net's own results folder are
loaded and must predict the same mask.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_nacsim.cli.main import main as nacsim
from napari_nacsim.core.errors import InputError
from napari_nacsim.core.scan import LABELS
from napari_nacsim.core.scan_io import read_scan, write_scan
from napari_nacsim.science.segmentation import model_files
from napari_nacsim.datasets.segmentation_cases import phantom_cases
from napari_nacsim.families import get_family
from napari_nacsim.science.segmentation.segmenter import TumourSegmenter

REPO = Path(__file__).resolve().parents[1]


def settings_of(family: str, **options):
    """Training settings with the family's specs handed in, as train_segmenter.py does."""
    from napari_nacsim.science.segmentation.train import TrainingSettings

    chosen = get_family(family)
    return TrainingSettings(chosen.name, chosen.segmentation, chosen.segmenter_input,
                            **options)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    env = {k: v for k, v in os.environ.items() if not k.startswith("nnUNet_")}
    env.update({"nnUNet_def_n_proc": "1", "nnUNet_n_proc_DA": "0", "OMP_NUM_THREADS": "2"})
    command = [sys.executable, str(REPO / "training" / "train_segmenter.py"),
               "--family", "breast", "--phantoms", "3", "--seed", "3", "--timepoints", "T0",
               "--lesion-free", "1", "--epochs", "1", "--iterations", "2", "--val-iterations", "1",
               "--base-features", "4", "--max-features", "16", "--jobs", "1", "--threads", "1",
               "--workspace", str(root / "nnunet"), "--out", str(root / "model"),
               "--summary", str(root / "summary.json")]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((root / "summary.json").read_text())
    return root, summary


@pytest.fixture(scope="module")
def image():
    return phantom_cases("breast", 1, 99, timepoints=["T0"], jobs=1)[0].image


def test_entrypoint_runs_nnunet_stages_and_packages_the_model(trained):
    root, summary = trained
    assert set(summary["timings_s"]) == {"export", "fingerprint + integrity check", "plan",
                                         "preprocess", "train", "package"}
    assert summary["trainer"] == "nnUNetTrainer_nacsimCPU"
    assert summary["plans_identifier"] == "nnUNetPlans_nacsimCompact"
    results = Path(summary["results_folder"])
    assert (results / "fold_all" / "checkpoint_final.pth").is_file()
    plans = json.loads((results / "plans.json").read_text())
    assert plans["configurations"]["2d"]["architecture"]["arch_kwargs"][
        "features_per_stage"][:3] == [4, 8, 16]
    # nnU-Net ran exactly the schedule the short trainer was given
    log = next((results / "fold_all").glob("training_log_*.txt")).read_text()
    assert "num_epochs=1, num_iterations_per_epoch=2, num_val_iterations_per_epoch=1" in log

    model = root / "model"
    assert sorted(p.name for p in model.iterdir()) == [
        "dataset.json", "fold_all.safetensors", "model.json", "plans.json"]
    card = json.loads((model / "model.json").read_text())
    assert card["training"]["command"].startswith("python training/train_segmenter.py "
                                                  "--family breast --phantoms 3")
    assert card["training"]["data"]["synthetic"] is True
    # 3 tumour patients + 1 lesion-free one (patient index 3, drawn without its tumour)
    assert card["training"]["data"]["cases"] == 4
    assert card["training"]["data"]["lesion_free_patients"] == 1
    raw = Path(summary["dataset_folder"])
    exported = json.loads((raw / "dataset.json").read_text())["nacsim"]["cases"]
    assert [c["case"] for c in exported] == ["BR0001_T0", "BR0002_T0", "BR0003_T0",
                                             "BR0004-lesion-free_T0"]
    for case in exported:
        label = read_scan(raw / "labelsTr" / f"{case['case']}.nii.gz").array
        assert (label.max() == 0) == case["case"].endswith("lesion-free_T0")
    assert card["family"] == "breast" and card["configuration"] == "2d"
    for name, info in card["files"].items():
        assert model_files.sha256(model / name) == info["sha256"]
    assert not any(p.suffix in (".pth", ".pkl") for p in model.iterdir())


def test_package_and_results_folder_predict_the_same(trained, image):
    root, summary = trained
    packaged = TumourSegmenter.from_folder(root / "model", family="breast")
    original = TumourSegmenter.from_folder(summary["results_folder"], family="breast")
    assert original.model.card["source"] == "nnU-Net results folder"
    mask = packaged.segment(image)
    assert mask.kind == LABELS and mask.shape == image.shape
    assert np.allclose(mask.affine, image.affine) and mask.spacing == image.spacing
    assert mask.provenance["synthetic"] is True
    assert mask.provenance["history"][-1]["step"] == "segment_tumour"
    assert set(np.unique(mask.array)) <= {0, 1}
    np.testing.assert_array_equal(mask.array, original.segment(image).array)
    # the weights are identical, not just the argmax
    a = packaged.predictor.list_of_parameters[0]
    b = original.predictor.list_of_parameters[0]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


class _NotATensor:
    """Anything outside tensors/containers/numbers forces full unpickling."""


def test_checkpoint_needing_full_unpickling_requires_trust(trained, image, tmp_path):
    _, summary = trained
    folder = tmp_path / "Dataset501_X" / Path(summary["results_folder"]).name
    shutil.copytree(summary["results_folder"], folder)
    checkpoint_file = folder / "fold_all" / "checkpoint_final.pth"
    checkpoint = torch.load(checkpoint_file, map_location="cpu", weights_only=False)
    checkpoint["extra"] = _NotATensor()
    torch.save(checkpoint, checkpoint_file)

    with pytest.raises(model_files.UntrustedPickleError) as info:
        TumourSegmenter.from_folder(folder, family="breast")
    message = str(info.value)
    assert "checkpoint_final.pth" in message and "_NotATensor" in message
    assert "can run any code" in message and "trust_pickle=True" in message
    assert "--trust-pickle" in message and "\n" not in message

    trusted = TumourSegmenter.from_folder(folder, family="breast", trust_pickle=True)
    reference = TumourSegmenter.from_folder(summary["results_folder"], family="breast")
    np.testing.assert_array_equal(trusted.segment(image).array,
                                  reference.segment(image).array)


def test_tampered_or_unsafe_packages_are_refused(trained, tmp_path):
    root, _ = trained
    damaged = tmp_path / "damaged"
    shutil.copytree(root / "model", damaged)
    weights = damaged / "fold_all.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(InputError, match="sha256 does not match"):
        TumourSegmenter.from_folder(damaged)

    unsafe = tmp_path / "unsafe"
    shutil.copytree(root / "model", unsafe)
    plans = json.loads((unsafe / "plans.json").read_text())
    plans["configurations"]["2d"]["architecture"]["network_class_name"] = "os.system"
    (unsafe / "plans.json").write_text(json.dumps(plans))
    card = json.loads((unsafe / "model.json").read_text())
    card["files"]["plans.json"]["sha256"] = model_files.sha256(unsafe / "plans.json")
    (unsafe / "model.json").write_text(json.dumps(card))
    with pytest.raises(InputError, match="'os.system'; nacsim only builds networks"):
        TumourSegmenter.from_folder(unsafe)

    with pytest.raises(InputError, match="is a breast model, not a lung one"):
        TumourSegmenter.from_folder(root / "model", family="lung")


def test_cli_segment_with_a_model_folder(trained, image, tmp_path, capsys):
    root, _ = trained
    image_file = write_scan(image, tmp_path / "mip.nii.gz")
    baseline = image.derive(np.zeros(image.shape, np.uint8), kind=LABELS)
    baseline.array[10:20, 10:20] = 1
    baseline_file = write_scan(baseline, tmp_path / "base_mask.nii.gz")
    out = tmp_path / "mask.nii.gz"
    assert nacsim(["segment", str(image_file), "--family", "breast", "--model",
                   str(root / "model"), "--out", str(out), "--baseline-mask",
                   str(baseline_file)]) == 0
    printed = capsys.readouterr().out
    assert f"wrote the tumour mask of {image_file}" in printed
    assert "tumour: " in printed and "baseline: 400 mm²" in printed
    assert "change vs baseline:" in printed and "synthetic" in printed
    mask = read_scan(out)
    assert mask.kind == LABELS and mask.shape == image.shape
    assert np.allclose(mask.spacing, image.spacing)

    # a checkpoint the restricted unpickler refuses: one-line error, exit status 2
    results = root / "nnunet" / "nnUNet_results"
    folder = next(results.glob("Dataset*/*__*__2d"))
    bad = tmp_path / "bad" / folder.name
    shutil.copytree(folder, bad)
    with open(bad / "fold_all" / "checkpoint_final.pth", "wb") as f:
        pickle.dump({"network_weights": {}, "x": _NotATensor()}, f, protocol=2)
    assert nacsim(["segment", str(image_file), "--family", "breast", "--model", str(bad),
                   "--out", str(tmp_path / "m2.nii.gz")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("nacsim: error: ") and "--trust-pickle" in err
    assert err.count("\n") == 1


def test_resume_finds_the_interrupted_run(trained, monkeypatch):
    from napari_nacsim.science.segmentation.train import _previous_run

    root, summary = trained
    monkeypatch.setenv("nnUNet_preprocessed", str(root / "nnunet" / "nnUNet_preprocessed"))
    raw = root / "nnunet" / "nnUNet_raw"
    folder, plans, identifier = _previous_run(settings_of("breast"), raw)
    assert folder.name == summary["dataset"] and identifier == summary["plans_identifier"]
    assert "2d" in plans["configurations"]
    with pytest.raises(InputError, match="no dataset 502 .* nothing to resume"):
        _previous_run(settings_of("lung"), raw)
    with pytest.raises(InputError, match="was not planned yet"):
        _previous_run(settings_of("breast", plan="default"), raw)


@pytest.fixture(scope="module")
def finetuned(trained, tmp_path_factory):
    """Fine-tune the packaged model on the cases the first run left in its workspace:
    ``--reuse-workspace --init-from``, with a learning rate so small that the weights must
    stay those of the model it started from."""
    root, _ = trained
    work = tmp_path_factory.mktemp("finetune")
    shutil.copytree(root / "nnunet", work / "nnunet")  # the first run's results stay as they are
    env = {k: v for k, v in os.environ.items() if not k.startswith("nnUNet_")}
    env.update({"nnUNet_def_n_proc": "1", "nnUNet_n_proc_DA": "0", "OMP_NUM_THREADS": "2"})
    command = [sys.executable, str(REPO / "training" / "train_segmenter.py"),
               "--family", "breast", "--phantoms", "3", "--seed", "3", "--reuse-workspace",
               "--init-from", str(root / "model"), "--epochs", "1", "--iterations", "1",
               "--val-iterations", "1", "--lr", "1e-9", "--threads", "1",
               "--workspace", str(work / "nnunet"), "--out", str(work / "model"),
               "--summary", str(work / "summary.json")]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return work, json.loads((work / "summary.json").read_text())


def test_finetuning_starts_from_the_given_model_and_records_it(trained, finetuned):
    root, _ = trained
    work, summary = finetuned
    # no case preparation, export, planning or preprocessing: the workspace's are reused
    assert set(summary["timings_s"]) == {"train", "package"}
    assert summary["init_from"] == str(root / "model")
    before = model_files.read_model(root / "model")
    after = model_files.read_model(work / "model")
    a, b = before.parameters[0], after.parameters[0]
    assert a.keys() == b.keys()
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-4) for k in a)
    card = after.card["training"]
    assert card["reused_workspace"] is True
    assert card["init_from"]["weights_sha256"] == before.card["files"][
        "fold_all.safetensors"]["sha256"]
    assert card["init_from"]["training"]["command"] == before.card["training"]["command"]
    # every command behind the model, first to last
    assert card["commands"] == [before.card["training"]["command"], card["command"]]
    assert "--init-from" in card["commands"][1] and "--reuse-workspace" in card["commands"][1]
    # the data description comes from the reused export
    assert card["data"]["cases"] == 4 and card["data"]["seed"] == 3
    assert card["data"]["prepared_by_an_earlier_run"] is True


def test_lesion_free_is_refused_where_it_does_not_apply(tmp_path, capsys):
    sys.path.insert(0, str(REPO / "training"))
    try:
        import train_segmenter
    finally:
        sys.path.pop(0)
    common = ["--workspace", str(tmp_path / "nnunet"), "--epochs", "1"]
    assert train_segmenter.main(["--family", "lung", "--phantoms", "1", "--lesion-free", "1",
                                 *common]) == 2
    assert "the lung family has no lesion-free phantoms" in capsys.readouterr().err
    assert train_segmenter.main(["--family", "breast", "--phantoms", "1", "--lesion-free",
                                 "-1", *common]) == 2
    assert "must be >= 0" in capsys.readouterr().err
    assert train_segmenter.main(["--cohort", str(tmp_path / "cohort.json"), "--lesion-free",
                                 "1", *common]) == 2
    assert "needs --phantoms" in capsys.readouterr().err
    assert not (tmp_path / "nnunet").exists()


def test_init_from_refuses_another_architecture(trained):
    from napari_nacsim.science.segmentation.train import initialise_from_model, train_segmenter

    root, _ = trained
    with pytest.raises(InputError, match="does not match this run's plans"):
        initialise_from_model(torch.nn.Linear(2, 2), root / "model", "2d")
    with pytest.raises(InputError, match="is a '2d' model"):
        initialise_from_model(torch.nn.Linear(2, 2), root / "model", "3d_fullres")
    with pytest.raises(InputError, match="cannot be combined with --resume"):
        train_segmenter(None, settings_of("breast"), None, resume=True,
                        init_from=root / "model")


# --- several GPUs: nnU-Net's own multi-GPU training ---------------------------------------

def test_gpus_that_cannot_be_used_are_refused_before_any_work(tmp_path, capsys):
    sys.path.insert(0, str(REPO / "training"))
    try:
        import train_segmenter
    finally:
        sys.path.pop(0)
    common = ["--family", "breast", "--phantoms", "1", "--workspace", str(tmp_path / "nnunet")]
    assert train_segmenter.main([*common, "--gpus", "2", "--device", "cpu"]) == 2
    assert ("--gpus: 2 GPUs asked for, but training would run on cpu: nnU-Net trains on "
            "several GPUs with CUDA only") in capsys.readouterr().err
    assert train_segmenter.main([*common, "--gpus", "0"]) == 2
    assert "--gpus: must be at least 1" in capsys.readouterr().err
    assert not (tmp_path / "nnunet").exists()


def test_gpus_reach_nnunets_multi_gpu_training(trained, tmp_path, monkeypatch):
    """No GPU here: the devices are faked and nnunetv2's run_training is replaced by a
    recorder, which must be called as ``nnUNetv2_train 501 2d all -tr ... -p ...
    -num_gpus 2`` would call it, with nacsim's schedule in the environment its processes
    inherit."""
    from napari_nacsim.science.segmentation import nnunet_env
    from napari_nacsim.science.segmentation import segmenter as segmenter_module
    from napari_nacsim.science.segmentation.train import train_segmenter

    root, summary = trained
    shutil.copytree(root / "nnunet", tmp_path / "nnunet")
    for name in (*nnunet_env.PATH_VARIABLES, "nnUNet_def_n_proc", "nnUNet_n_proc_DA",
                 "nnUNet_compile", "nnUNet_extTrainer"):
        monkeypatch.delenv(name, raising=False)  # restored after the test
    # configured as train_segmenter configures it, before nnunetv2 is imported
    nnunet_env.configure(tmp_path / "nnunet", training=True, gpu=True, force_paths=True)
    import nnunetv2.run.run_training as nnunet_run

    cuda = torch.device("cuda")
    monkeypatch.setattr(segmenter_module, "resolve_device", lambda name: cuda)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    calls = []

    class Recorded(Exception):
        pass

    def run_training(*args, **kwargs):
        calls.append((args, kwargs, os.environ.get("NACSIM_NNUNET_EPOCHS"),
                      os.environ.get("nnUNet_extTrainer")))
        raise Recorded

    monkeypatch.setattr(nnunet_run, "run_training", run_training)
    settings = settings_of("breast", epochs=7, gpus=2, device="cuda")
    with pytest.raises(Recorded):
        train_segmenter(None, settings, tmp_path / "nnunet", reuse=True, log=lambda m: None)
    (args, kwargs, epochs, ext), = calls
    assert args == ("501", "2d", "all", "nnUNetTrainer_nacsimCPU", summary["plans_identifier"])
    assert kwargs == {"num_gpus": 2, "continue_training": False, "device": cuda}
    assert epochs == "7" and str(nnunet_env.TRAINERS_FOLDER) in ext
    # fine-tuning from a nacsim model is a one-GPU run
    with pytest.raises(InputError, match="--init-from: fine-tuning runs on one GPU"):
        train_segmenter(None, settings, tmp_path / "nnunet", reuse=True,
                        init_from=root / "model", log=lambda m: None)
