"""SSIM/PSNR of a generated image against a real one: one function for the cohort review,
the NAC evaluation and the lung evaluation (science.measure.image_agreement)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from napari_nacsim.science.measure import image_agreement


def _pair(dtype):
    rng = np.random.default_rng(0)
    real = rng.random((32, 32)).astype(dtype)
    return np.clip(real + 0.1 * rng.standard_normal(real.shape), 0, 1).astype(dtype), real


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_scikit_image_numbers_in_the_inputs_precision(dtype):
    # The NAC evaluation passes float32 [0, 1] images and reports these exact numbers.
    generated, real = _pair(dtype)
    assert image_agreement(generated, real) == {
        "psnr": float(peak_signal_noise_ratio(real, generated, data_range=1.0)),
        "ssim": float(structural_similarity(real, generated, data_range=1.0))}


def test_values_beyond_the_range_are_clipped():
    # CT in HU over a display window: differences beyond the window are not seen.
    window = (-1000.0, 400.0)
    real = np.full((16, 16), -1000.0)
    real[4:12, 4:12] = 40.0
    generated = real.copy()
    generated[real == -1000.0] = -3000.0        # darker than the window shows
    generated[0, 0] = 3000.0                    # brighter than it
    clipped = np.clip(generated, *window)
    assert image_agreement(generated, real, window) == image_agreement(clipped, real, window)
    assert image_agreement(generated, real, window)["ssim"] == pytest.approx(
        structural_similarity(real, clipped, data_range=1400.0))
    with pytest.warns(RuntimeWarning, match="divide by zero"):   # scikit-image's, for MSE 0
        same = image_agreement(real, real, window)
    assert same == {"psnr": float("inf"), "ssim": pytest.approx(1.0)}


def test_the_lung_evaluation_measures_in_the_lung_window():
    # training/evaluate_lung.py: SSIM of crops in HU, the lung window mapped to [0, 1]
    # (float32, data range 1), as its reported numbers have always been computed.
    path = Path(__file__).resolve().parents[1] / "training" / "evaluate_lung.py"
    spec = importlib.util.spec_from_file_location("evaluate_lung", path)
    evaluate = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(evaluate)
    rng = np.random.default_rng(0)
    real = rng.uniform(-2000.0, 800.0, (8, 16, 16)).astype(np.float32)
    generated = real + rng.normal(0.0, 200.0, real.shape).astype(np.float32)
    lo, hi = evaluate.LUNG_WINDOW
    window = [np.clip((x - lo) / (hi - lo), 0, 1).astype(np.float32) for x in (generated, real)]
    assert evaluate.ssim3d(generated, real) == float(
        structural_similarity(window[1], window[0], data_range=1.0))
