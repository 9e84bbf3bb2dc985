"""A training checkpoint that cannot be saved (a full disk midway) leaves the previous one
whole, weights and step together, so the run resumes from it (issue 24, item 10)."""

from __future__ import annotations

import errno

import pytest
import torch

from napari_nacsim.science.generative import train


def _model_and_optimizer(value: float):
    model = torch.nn.Linear(3, 2)
    with torch.no_grad():
        model.weight.fill_(value)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    return model, optimizer


def test_failed_checkpoint_keeps_the_previous_one_whole(tmp_path, monkeypatch):
    folder = tmp_path / "resume"
    model, optimizer = _model_and_optimizer(1.0)
    train._save_resume(folder, model, optimizer, stage=2, step=100, extra={})
    before = {p.name: p.read_bytes() for p in folder.iterdir()}

    newer, newer_optimizer = _model_and_optimizer(5.0)
    real_dumps = train.json.dumps

    def disk_full(*args, **kwargs):  # the weights are written, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device", str(folder / train.STATE))

    monkeypatch.setattr(train.json, "dumps", disk_full)
    with pytest.raises(OSError):
        train._save_resume(folder, newer, newer_optimizer, stage=2, step=200, extra={})
    monkeypatch.setattr(train.json, "dumps", real_dumps)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    assert not [p for p in tmp_path.iterdir() if p.name != "resume"]  # no staging left

    fresh, _ = _model_and_optimizer(0.0)
    state, _ = train._load_resume(folder, fresh, lambda stage: torch.optim.Adam(
        fresh.parameters(), lr=1e-3))
    assert state["step"] == 100
    assert torch.allclose(fresh.weight, model.weight)


def test_training_stops_with_one_line_when_it_cannot_save(monkeypatch, capsys):
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(
        "train_nac", Path(__file__).resolve().parents[1] / "training" / "train_nac.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    def full(args, argv):
        raise OSError(errno.ENOSPC, "No space left on device", "out/resume")

    monkeypatch.setattr(module, "_run", full)
    assert module.main(["--out", "out"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "No space left on device" in err
    assert "resume" in err
