"""Evaluation script and pix2pix baseline: fast run of the real code on a micro setup."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from generative_helpers import micro_model, random_cohort
from napari_nacsim.core.errors import InputError
from napari_nacsim.science.generative.baseline import (load_net, pix2pix_predict, save_net,
                                                        segment, train_pix2pix, train_segmenter)
from napari_nacsim.science.generative.checkpoint import save_checkpoint

ROOT = Path(__file__).resolve().parents[1]


def _script(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "training" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_match_is_symmetric_and_100_only_when_equal():
    evaluate = _script("evaluate_nac")
    assert evaluate.match(50, 50) == 100 and evaluate.match(0, 0) == 100
    assert evaluate.match(40, 50) == evaluate.match(50, 40) == 80
    assert evaluate.match(0, 10) == 0


def test_baseline_round_trip_and_hash_check(tmp_path):
    cohort = random_cohort(4)
    net = train_pix2pix(cohort, steps=2, batch=2)
    path = save_net(net, tmp_path / "p.safetensors", {"what": "pix2pix"})
    loaded, card = load_net(path)
    out = pix2pix_predict(loaded, cohort, cohort.images[0, 0], [[1.0, 1.0, 0.0, 1.0]])
    assert out.shape == (1, 16, 16) and card["what"] == "pix2pix"
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(InputError, match="sha256"):
        load_net(path)


def _assert_rows_recomputed(rows, cohort, test_ids, made, segmenter):
    """Every row's PSNR, SSIM, sizes and match, recomputed with skimage and the sizing
    segmenter from the reference images and the images the methods produced."""
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    pixel_mm2 = float(np.prod(cohort.spacing))
    for i, pid in enumerate(test_ids):
        k = cohort.ids.index(pid)
        entries = [("factual", t, cohort.images[k][t], cohort.masks[k][t]) for t in (1, 2)] + \
                  [("counterfactual", t, cohort.cf_images[pid][t], cohort.cf_masks[pid][t])
                   for t in (1, 2)]
        refs = np.stack([e[2] for e in entries])
        nac, pix = made["nac"][i], made["pix2pix"][i]
        # sized in one batch, in the evaluation's order: T0, references, pix2pix, samples
        areas = segment(segmenter, np.concatenate([cohort.images[k][:1], refs, pix, nac])
                        ).sum(axis=(1, 2)) * pixel_mm2
        size_t0, size_ref = areas[0], areas[1:5]
        sized = {"pix2pix": areas[5:9], "nac": areas[9:13]}
        mine = rows[8 * i: 8 * (i + 1)]
        for m, (method, images) in enumerate((("nac", nac), ("pix2pix", pix))):
            for j, (kind, t, ref, truth) in enumerate(entries):
                row = mine[4 * m + j]
                assert (row["patient"], row["method"], row["kind"], row["time"]) == \
                    (pid, method, kind, f"T{t}")
                assert row["ssim"] == pytest.approx(
                    structural_similarity(ref, images[j], data_range=1.0), abs=1e-9)
                assert row["psnr"] == pytest.approx(
                    peak_signal_noise_ratio(ref, images[j], data_range=1.0), abs=1e-9)
                gen, real = sized[method][j], size_ref[j]
                assert row["size_generated_mm2"] == pytest.approx(gen)
                assert row["size_real_mm2"] == pytest.approx(real)
                assert row["size_t0_mm2"] == pytest.approx(size_t0)
                assert row["size_truth_mm2"] == pytest.approx(truth.sum() * pixel_mm2)
                assert row["match"] == pytest.approx(
                    100.0 if gen == real == 0 else 100.0 * min(gen, real) / max(gen, real))


def test_evaluation_end_to_end_on_micro_model(tmp_path, monkeypatch):
    cohort = random_cohort(6)
    cohort.masks[:] = 0  # small tumours, so that there is an outside to measure
    cohort.masks[:, :, 6:9, 6:9] = 1
    test_ids = cohort.ids[-2:]
    for pid in test_ids:  # counterfactual ground truth for the held-out patients
        k = cohort.ids.index(pid)
        cohort.cf_images[pid] = cohort.images[k][::-1].copy()
        cohort.cf_masks[pid] = cohort.masks[k][::-1].copy()
        cohort.cf_clinical[pid] = {**cohort.clinical[k], "pCR": not cohort.clinical[k]["pCR"]}
    split = {"cohort_seed": 0, "patients": 6, "train": cohort.ids[:4], "test": test_ids}
    model_dir = save_checkpoint(micro_model(), tmp_path / "model", {"data": {"split": split}})
    base = tmp_path / "base"
    save_net(train_pix2pix(cohort, steps=1, batch=2), base / "pix2pix.safetensors", {})
    seg = train_segmenter(cohort, steps=1, batch=2)
    assert segment(seg, cohort.images[:2, 0]).shape == (2, 16, 16)
    save_net(seg, base / "segmenter.safetensors", {})
    import napari_nacsim.datasets.paired as data_module

    monkeypatch.setattr(data_module, "phantom_cohort", lambda *a, **k: cohort)
    # keep the images the evaluation scores, to recompute its metrics from them
    import napari_nacsim.science.generative.baseline as baseline_module
    import napari_nacsim.science.generative.sampling as sampling_module

    made = {"nac": [], "pix2pix": []}

    def keeping(method, function):
        def wrapped(*args, **kwargs):
            images = function(*args, **kwargs)
            made[method].append(np.asarray(images)[:, 0] if method == "nac" else images)
            return images
        return wrapped

    monkeypatch.setattr(sampling_module, "generate", keeping("nac", sampling_module.generate))
    monkeypatch.setattr(baseline_module, "pix2pix_predict",
                        keeping("pix2pix", baseline_module.pix2pix_predict))
    evaluate = _script("evaluate_nac")
    out = tmp_path / "eval"
    assert evaluate.main(["--model", str(model_dir), "--baseline", str(base), "--out", str(out),
                          "--steps", "2", "--sizer", "unet"]) == 0
    result = json.loads((out / "results.json").read_text())
    assert len(result["rows"]) == 2 * 2 * 2 * 2  # patients x kinds x times x methods
    groups = {(s["method"], s["kind"], s["time"]) for s in result["summary"]}
    assert ("nac", "counterfactual", "T2") in groups and ("pix2pix", "factual", "T1") in groups
    _assert_rows_recomputed(result["rows"], cohort, test_ids, made, load_net(
        base / "segmenter.safetensors")[0])
    assert "| nac |" in (out / "results.md").read_text()
    # T1 ordering: each held-out patient has both outcomes (factual + flipped counterfactual)
    t1 = [r for r in result["rows"] if r["method"] == "nac" and r["time"] == "T1"]
    by = {}
    for r in t1:
        by.setdefault(r["patient"], {})[r["pCR"]] = r["size_generated_mm2"]
    assert result["ordering"]["nac"]["patients"] == 2
    assert result["ordering"]["nac"]["pcr_smaller_generated"] == sum(
        v[True] < v[False] for v in by.values())
    # outside-tumour intensity: recomputed from the rows, and the pixels it reads are right
    entry = next(e for e in result["outside_intensity"]
                 if (e["method"], e["kind"]) == ("nac", "factual"))
    rs = [r for r in result["rows"] if r["method"] == "nac" and r["kind"] == "factual"]
    gen, real = (np.mean([r[k] for r in rs]) for k in ("outside_mean_generated",
                                                       "outside_mean_real"))
    assert entry["generated_vs_real_percent"] == pytest.approx(100 * (gen / real - 1))
    first = rs[0]
    k = cohort.ids.index(first["patient"])
    t = ["T0", "T1", "T2"].index(first["time"])
    from scipy import ndimage
    outside = ~ndimage.binary_dilation((cohort.masks[k, 0] > 0) | (cohort.masks[k, t] > 0),
                                       iterations=3)
    assert first["outside_mean_real"] == pytest.approx(float(cohort.images[k, t][outside].mean()))
    assert "pCR tumour smaller" in (out / "results.md").read_text()
    # another cohort seed: every patient held out, recorded; the training seed is refused
    out2 = tmp_path / "eval2"
    assert evaluate.main(["--model", str(model_dir), "--baseline", str(base), "--out", str(out2),
                          "--steps", "2", "--sizer", "unet", "--cohort-seed", "9100",
                          "--patients", "6", "--limit", "1"]) == 0
    held = json.loads((out2 / "results.json").read_text())
    assert held["held_out"] == {"kind": "unseen synthetic cohort", "cohort_seed": 9100,
                                "patients": 6}
    assert held["n_test_patients"] == 1
    with pytest.raises(SystemExit) as refused:
        evaluate.main(["--model", str(model_dir), "--baseline", str(base), "--out",
                       str(tmp_path / "eval3"), "--cohort-seed", "0"])
    assert refused.value.code == 2
