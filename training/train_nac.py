"""Train a NAC model (breast by default) in two stages on a synthetic phantom cohort.

    python training/train_nac.py --config breast_tiny --out artifacts/nac_tiny
    accelerate launch training/train_nac.py --config breast_tiny --out ...   # many GPUs

Resumable: run the same command again and it continues from the last checkpoint in
``--out/resume``. Writes ``--out/model`` (safetensors + model card with this command),
``--out/split.json`` (deterministic patient-level split), ``--out/loss_log.csv`` and
``--out/loss_curve.png``.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from pathlib import Path

os.environ.setdefault("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", "1")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    p.add_argument("--config", default="breast_tiny", help="bundled config name or JSON path")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--patients", type=int, default=80, help="synthetic patients (default 80)")
    p.add_argument("--cohort-seed", type=int, default=2024)
    p.add_argument("--test-fraction", type=float, default=None)
    p.add_argument("--seed", type=int, default=0, help="training seed")
    p.add_argument("--stage1-steps", type=int, default=None)
    p.add_argument("--stage2-steps", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--checkpoint-every", type=int, default=100)
    p.add_argument("--cache", type=Path, default=Path("artifacts/breast_cache"),
                   help="prepared-patient cache folder")
    p.add_argument("--jobs", type=int, default=1, help="processes preparing patients")
    p.add_argument("--no-resume", action="store_true")
    p.add_argument("--cpu", action="store_true", help="train on the CPU even with a GPU")
    p.add_argument("--quiet", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    import torch

    from napari_nacsim.core.atomic import write_json_atomic
    from napari_nacsim.science.generative.config import load_config
    from napari_nacsim.science.generative.data import breast_phantom_cohort, split_ids
    from napari_nacsim.science.generative.train import train

    args = build_parser().parse_args(argv)
    torch.set_num_threads(max(1, min(torch.get_num_threads(), os.cpu_count() or 1)))
    config = load_config(args.config)
    if config["family"] != "breast":
        raise SystemExit(f"train_nac.py: family {config['family']!r} has no phantom data "
                         "loader here yet")
    test_fraction = args.test_fraction or config.get("training", {}).get("test_fraction", 0.2)
    ids = [f"BR{i + 1:04d}" for i in range(args.patients)]
    train_ids, test_ids = split_ids(ids, test_fraction, args.cohort_seed)
    started = time.time()
    cohort = breast_phantom_cohort(args.cohort_seed, args.patients, config["image_size"],
                                   cache_dir=args.cache, counterfactual_ids=test_ids,
                                   jobs=args.jobs)
    prep_seconds = time.time() - started
    args.out.mkdir(parents=True, exist_ok=True)
    split = {"cohort": "nacsim breast phantoms", "cohort_seed": args.cohort_seed,
             "patients": args.patients, "test_fraction": test_fraction,
             "rule": "sorted ids permuted by numpy default_rng(cohort_seed); first "
                     "round(n * test_fraction) are test",
             "train": train_ids, "test": test_ids}
    write_json_atomic(args.out / "split.json", split)
    command = "python training/train_nac.py " + " ".join(shlex.quote(a) for a in
                                                         (argv if argv is not None else sys.argv[1:]))
    card = {
        "title": f"nacsim {config['family']} NAC model ({config['name']})",
        "spacing_mm": list(cohort.spacing),
        "normalisation": "subtraction MIP (first post-contrast - pre-contrast), axial, LPS "
                         "layout; [0, 1] by the baseline's 0.5-99.5 percentile window "
                         "(follow-ups on the baseline's window); resized to image_size",
        "training": {"command": command, "data_preparation_seconds": round(prep_seconds, 1)},
        "data": {"source": "synthetic phantom patients (nacsim phantoms breast), "
                           "preprocessed with breast_mips", "split": split,
                 "n_train": len(train_ids), "n_test": len(test_ids)},
        "text_tower_note": ("The OpenCLIP text transformer is randomly initialised and frozen "
                            "(no pretrained weights are available offline); only the prompt "
                            "tokens, the ControlNet and the UNet decoder learn, so the random "
                            "tower acts as a fixed mixing of the learned tokens.")
        if config["text"].get("random_init") else "frozen pretrained OpenCLIP text tower",
    }
    model_dir = train(config, cohort.subset(train_ids), args.out, seed=args.seed,
                      stage1_steps=args.stage1_steps, stage2_steps=args.stage2_steps,
                      batch_size=args.batch_size, checkpoint_every=args.checkpoint_every,
                      resume=not args.no_resume, cpu=args.cpu, card=card,
                      progress=not args.quiet)
    print(f"model written to {model_dir} in {time.time() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
