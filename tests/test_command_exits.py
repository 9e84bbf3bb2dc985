"""How a command ends when it fails (napari_nacsim.cli.exits): one line and an exit status,
the same for the three training entrypoints, which resume from an intact checkpoint where
their checkpoints are written atomically."""

from __future__ import annotations

import errno
import importlib.util
from pathlib import Path

import pytest

from napari_nacsim.cli.exits import EXIT_BAD_INPUT, EXIT_FAILED, RESUMES, run_command
from napari_nacsim.core.errors import InputError

TRAINING = Path(__file__).resolve().parents[1] / "training"


def _raises(err):
    def run(*_):
        raise err
    return run


def test_bad_input_and_a_failed_write_end_in_one_line(capsys):
    assert run_command("prog", lambda: 0) == 0
    assert run_command("prog", _raises(InputError("--epochs", "must be\n>= 1"))) == \
        EXIT_BAD_INPUT == 2
    assert capsys.readouterr().err == "prog: error: --epochs: must be >= 1\n"
    full = OSError(errno.ENOSPC, "No space left on device", "out/state")
    assert run_command("prog", _raises(full), resumable=True) == EXIT_FAILED == 1
    assert capsys.readouterr().err == f"prog: error: out/state: No space left on device " \
                                      f"({RESUMES})\n"
    assert run_command("prog", _raises(full)) == 1          # no promise it cannot keep
    assert capsys.readouterr().err == "prog: error: out/state: No space left on device\n"
    assert run_command("prog", _raises(OSError("lost mount"))) == 1
    assert capsys.readouterr().err == "prog: error: lost mount\n"


def test_a_bug_keeps_its_traceback():
    with pytest.raises(RuntimeError, match="a bug"):
        run_command("prog", _raises(RuntimeError("a bug")), resumable=True)


def _script(name):
    spec = importlib.util.spec_from_file_location(name, TRAINING / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name, argv, resumable", [
    ("train_nac", ["--out", "out"], True),
    ("train_lung", ["--out", "out"], True),
    ("train_segmenter", ["--family", "breast", "--phantoms", "1"], False)])
def test_the_training_entrypoints_end_alike(name, argv, resumable, monkeypatch, capsys):
    module = _script(name)
    monkeypatch.setattr(module, "_run", _raises(OSError(errno.ENOSPC, "No space left on "
                                                                      "device", "out/x")))
    assert module.main(argv) == 1
    hint = f" ({RESUMES})" if resumable else ""
    assert capsys.readouterr().err == f"{name}: error: out/x: No space left on device{hint}\n"
    monkeypatch.setattr(module, "_run", _raises(InputError("--out", "not writable")))
    assert module.main(argv) == 2
    assert capsys.readouterr().err == f"{name}: error: --out: not writable\n"
