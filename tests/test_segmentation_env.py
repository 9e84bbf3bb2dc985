"""nnU-Net's environment, set up for the user, and the short trainer's schedule."""

from __future__ import annotations

import os

import pytest

from napari_nacsim.science.segmentation import nnunet_env


def test_configure_sets_folders_processes_and_trainer_path(tmp_path, monkeypatch):
    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results", "nnUNet_def_n_proc",
                 "nnUNet_n_proc_DA", "nnUNet_compile", "nnUNet_extTrainer"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(nnunet_env, "cpu_count", lambda: 2)
    monkeypatch.setenv("nnUNet_extTrainer", "/somewhere/else")
    with nnunet_env.nnunet_environment(tmp_path, training=True) as wanted:
        assert os.environ["nnUNet_raw"] == str(tmp_path / "nnUNet_raw")
        assert (tmp_path / "nnUNet_results").is_dir()
        assert os.environ["nnUNet_def_n_proc"] == "1"   # one core left to the main process
        assert os.environ["nnUNet_n_proc_DA"] == "0"    # augmentation in the main process
        assert os.environ["nnUNet_compile"] == "f"
        paths = os.environ["nnUNet_extTrainer"].split(os.pathsep)
        assert paths == ["/somewhere/else", str(nnunet_env.TRAINERS_FOLDER)]
        assert wanted["nnUNet_def_n_proc"] == "1"
    assert "nnUNet_raw" not in os.environ                 # restored afterwards
    assert os.environ["nnUNet_extTrainer"] == "/somewhere/else"


@pytest.mark.filterwarnings("ignore:nnunetv2 was imported before nacsim configured it")
def test_user_settings_win_unless_overridden(tmp_path, monkeypatch):
    monkeypatch.delenv("nnUNet_def_n_proc", raising=False)
    monkeypatch.setenv("nnUNet_raw", "/user/raw")
    monkeypatch.setenv("nnUNet_n_proc_DA", "5")
    monkeypatch.setattr(nnunet_env, "cpu_count", lambda: 16)
    with nnunet_env.nnunet_environment():
        assert os.environ["nnUNet_raw"] == "/user/raw"
        assert os.environ["nnUNet_n_proc_DA"] == "5"
        assert os.environ["nnUNet_def_n_proc"] == "15"
    assert nnunet_env.suggested_settings(training=True, gpu=True)["nnUNet_n_proc_DA"] == "12"
    assert nnunet_env.suggested_settings(training=True)["nnUNet_n_proc_DA"] == "8"


def test_short_trainer_is_found_by_nnunet_and_reads_its_schedule(monkeypatch):
    with nnunet_env.nnunet_environment():
        from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

        from napari_nacsim.science.segmentation.nnunet_trainers import nacsim_trainers

        found = recursive_find_trainer_class_by_name("nnUNetTrainer_nacsimCPU")
    assert found.__name__ == "nnUNetTrainer_nacsimCPU"
    assert found.__module__ == "nacsim_trainers"  # imported by nnU-Net from the folder
    monkeypatch.setenv("NACSIM_NNUNET_ITERATIONS", "7")
    assert nacsim_trainers._schedule_value("NACSIM_NNUNET_ITERATIONS", int, 50) == 7
    monkeypatch.setenv("NACSIM_NNUNET_ITERATIONS", "many")
    with pytest.raises(ValueError, match="NACSIM_NNUNET_ITERATIONS='many' is not a valid int"):
        nacsim_trainers._schedule_value("NACSIM_NNUNET_ITERATIONS", int, 50)
    monkeypatch.setenv("NACSIM_NNUNET_EPOCHS", "0")
    with pytest.raises(ValueError, match="must be positive"):
        nacsim_trainers._schedule_value("NACSIM_NNUNET_EPOCHS", int, 100)


def test_warns_when_nnunet_read_its_settings_before_nacsim(monkeypatch):
    import nnunetv2.configuration as configuration

    other = str(configuration.default_num_processes + 1)
    with pytest.warns(RuntimeWarning, match=f"nnUNet_def_n_proc={other} is ignored"):
        with nnunet_env.nnunet_environment(override={"nnUNet_def_n_proc": other}):
            pass
