"""One `resolve_device` (science.device) for the generative models and the segmenter
(issue 20): the same names mean the same device everywhere, and a bad one is one line."""

from __future__ import annotations

import pytest
import torch

from napari_nacsim.core.errors import InputError
from napari_nacsim.science.device import resolve_device


def test_auto_cpu_and_device_objects():
    auto = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device() == resolve_device("auto") == resolve_device("AUTO") == auto
    assert resolve_device("") == auto
    assert resolve_device("CPU") == resolve_device(torch.device("cpu")) == torch.device("cpu")


def test_a_bad_name_and_missing_cuda_are_one_line(monkeypatch):
    with pytest.raises(InputError, match=r"^device: 'gpu0' is not a device"):
        resolve_device("gpu0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(InputError, match="CUDA was requested but no CUDA GPU is available"):
        resolve_device("cuda:0")
    assert resolve_device("auto") == torch.device("cpu")


def test_the_engine_and_the_segmenter_use_it():
    from napari_nacsim.science.segmentation import segmenter

    assert segmenter.resolve_device is resolve_device
