"""The lung training's resume state is one folder replaced whole, as the breast training's
(tests/test_checkpoint_write_failures.py): a save that fails midway (a full disk) leaves the
previous state, weights, optimizer and step together, and train_lung stops with one line
(issue 24, item 10; issue 20)."""

from __future__ import annotations

import errno
import json
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def train_lung():
    sys.path.insert(0, str(ROOT / "training"))
    try:
        import train_lung
    finally:
        sys.path.pop(0)
    return train_lung


def _trained(seed: int):
    from napari_nacsim.science.generative.immunodiff.config import MICRO
    from napari_nacsim.science.generative.immunodiff.network import ImmunoDiff

    torch.manual_seed(seed)
    model = ImmunoDiff(MICRO)
    optimizer = torch.optim.Adam(model.adapter.parameters(), lr=1e-3)
    sum(p.sum() for p in model.adapter.parameters()).backward()
    optimizer.step()
    return model, optimizer


def test_a_failed_save_keeps_the_previous_state_whole(tmp_path, train_lung, monkeypatch):
    folder = tmp_path / "state"
    model, optimizer = _trained(0)
    train_lung._save_state(model, optimizer, folder, {"stage": "adapter", "step": 100})
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    assert {"adapter.safetensors", "optimizer.pt", "progress.json"} <= set(before)

    newer, newer_optimizer = _trained(1)
    real_dumps = json.dumps

    def disk_full(*args, **kwargs):  # weights and optimizer written, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device", str(folder / "progress.json"))

    monkeypatch.setattr(json, "dumps", disk_full)
    with pytest.raises(OSError):
        train_lung._save_state(newer, newer_optimizer, folder,
                               {"stage": "adapter", "step": 200})
    monkeypatch.setattr(json, "dumps", real_dumps)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["state"]   # no staging folder left

    fresh, _ = _trained(2)
    assert train_lung._load_state(fresh, folder)["step"] == 100
    for a, b in zip(fresh.state_dict().values(), model.state_dict().values()):
        assert torch.equal(a, b)
    # a stage's end writes the state without its optimizer: the file goes with the rest
    train_lung._save_state(model, None, folder, {"stage": None, "step": 0})
    assert not (folder / "optimizer.pt").exists()


def test_train_lung_stops_with_one_line(train_lung, monkeypatch, capsys, tmp_path):
    def full(args, argv):
        raise OSError(errno.ENOSPC, "No space left on device", "out/state")

    monkeypatch.setattr(train_lung, "_run", full)
    assert train_lung.main(["--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "No space left on device" in err
    assert "out/state" in err and "resume" in err
    monkeypatch.undo()
    missing = tmp_path / "missing.json"
    assert train_lung.main(["--config", str(missing), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"train_lung: error: {missing}: config file not found"
