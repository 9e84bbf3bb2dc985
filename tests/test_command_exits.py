"""How a command ends when it fails (napari_nacsim.cli.exits): one line and an exit status,
the same for `nacsim` and the training scripts; a full disk says to free some space, and the
entrypoints whose checkpoints are written atomically say that they resume from the last."""

from __future__ import annotations

import errno
import importlib.util
from pathlib import Path

import pytest

from napari_nacsim.cli.exits import (EXIT_BAD_INPUT, EXIT_FAILED, EXIT_INTERRUPTED, RESUMES,
                                     os_error_line, run_command)
from napari_nacsim.core.errors import InputError

TRAINING = Path(__file__).resolve().parents[1] / "training"


def _raises(err):
    def run(*_):
        raise err
    return run


FULL = OSError(errno.ENOSPC, "No space left on device", "out/state")


def test_bad_input_and_a_failed_write_end_in_one_line(capsys):
    assert run_command("prog", lambda: 0) == 0
    assert run_command("prog", _raises(InputError("--epochs", "must be\n>= 1"))) == \
        EXIT_BAD_INPUT == 2
    assert capsys.readouterr().err == "prog: error: --epochs: must be >= 1\n"
    assert run_command("prog", _raises(FULL), resumable=True) == EXIT_FAILED == 1
    assert capsys.readouterr().err == "prog: error: out/state: No space left on device (the " \
        "last checkpoint is intact; free some space and run the same command again to resume)\n"
    assert run_command("prog", _raises(OSError("lost mount")), resumable=True) == 1
    assert capsys.readouterr().err == f"prog: error: lost mount ({RESUMES})\n"
    assert run_command("prog", _raises(FULL)) == 1          # no promise it cannot keep
    assert capsys.readouterr().err == "prog: error: out/state: No space left on device (free " \
                                      "some space and run it again)\n"
    assert run_command("prog", _raises(OSError("lost mount"))) == 1
    assert capsys.readouterr().err == "prog: error: lost mount\n"
    assert run_command("prog", _raises(KeyboardInterrupt()), resumable=True) == \
        EXIT_INTERRUPTED == 130
    assert capsys.readouterr().err == f"prog: interrupted ({RESUMES})\n"


def test_the_os_error_line_says_what_to_do_about_a_full_disk():
    quota = OSError(errno.EDQUOT, "Disk quota exceeded", "out/m.nii.gz")
    assert os_error_line(quota, atomic=True) == "out/m.nii.gz: Disk quota exceeded (nothing " \
        "was left half-written; free some space and run it again)"
    denied = OSError(errno.EACCES, "Permission denied", "out/m.nii.gz")
    assert os_error_line(denied, atomic=True) == "out/m.nii.gz: Permission denied"
    assert os_error_line(OSError()) == "OSError"


def test_nacsim_ends_as_the_training_scripts_do(tmp_path, monkeypatch, capsys):
    from napari_nacsim.cli import main as cli

    full = OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "x"))
    monkeypatch.setattr(cli, "_run", _raises(full))
    assert cli.main(["phantoms", "breast", "--out", str(tmp_path / "c")]) == 1
    assert capsys.readouterr().err == f"nacsim: error: {os_error_line(full, atomic=True)}\n"
    assert "free some space" in os_error_line(full, atomic=True)


def test_a_bug_keeps_its_traceback():
    with pytest.raises(RuntimeError, match="a bug"):
        run_command("prog", _raises(RuntimeError("a bug")), resumable=True)


def _script(name):
    spec = importlib.util.spec_from_file_location(name, TRAINING / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name, argv, hint", [
    ("train_nac", ["--out", "out"], "the last checkpoint is intact; free some space and run "
                                    "the same command again to resume"),
    ("train_lung", ["--out", "out"], "the last checkpoint is intact; free some space and run "
                                     "the same command again to resume"),
    ("train_segmenter", ["--family", "breast", "--phantoms", "1"],
     "free some space and run it again"),          # nnU-Net's checkpoints are not atomic
    ("evaluate_segmenter", ["--family", "breast"],
     "nothing was left half-written; free some space and run it again"),
    ("set_sampling_defaults", ["model", "--steps", "9", "--evidence", "x"],
     "nothing was left half-written; free some space and run it again")])
def test_the_training_entrypoints_end_alike(name, argv, hint, monkeypatch, capsys):
    module = _script(name)
    monkeypatch.setattr(module, "_run", _raises(OSError(errno.ENOSPC, "No space left on "
                                                                      "device", "out/x")))
    assert module.main(argv) == 1
    assert capsys.readouterr().err == f"{name}: error: out/x: No space left on device ({hint})\n"
    monkeypatch.setattr(module, "_run", _raises(InputError("--out", "not writable")))
    assert module.main(argv) == 2
    assert capsys.readouterr().err == f"{name}: error: --out: not writable\n"
