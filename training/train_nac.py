"""Train a NAC model (breast by default) in two stages on a synthetic phantom cohort.

    python training/train_nac.py --config breast_tiny --out artifacts/nac_tiny
    accelerate launch --multi_gpu --num_processes 8 training/train_nac.py --config ... --out ...

Resumable: run the same command again and it continues from the last checkpoint in
``--out/resume`` (also with another number of processes). Writes ``--out/model``
(safetensors + model card with this command), ``--out/split.json`` (deterministic
patient-level split), ``--out/loss_log.csv`` and ``--out/loss_curve.png``. With N processes
(``accelerate launch``, docs/training.md) ``--batch-size`` is per process, every process
trains on its own share of each step's samples, and only the main process writes.
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
    p.add_argument("--vae-steps", type=int, default=None,
                   help="stage 0 steps (latent configurations whose VAE is trained here; "
                        "default: the config's training.vae.steps)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="samples per step and process (default: the config's); with N "
                        "processes a step sees N times as many")
    p.add_argument("--checkpoint-every", type=int, default=100)
    p.add_argument("--init-from", type=Path, metavar="MODEL_DIR",
                   help="continue stage 2 from a trained model folder (hashes verified; "
                        "same architecture as --config; stage 1 is skipped)")
    p.add_argument("--tumour-weight", type=float, default=None, metavar="W",
                   help="stage-2 loss weight 1+W inside the tumour (T0 and target masks, "
                        "grown by --tumour-margin pixels); default: the config's (0 = off)")
    p.add_argument("--tumour-margin", type=int, default=None, metavar="PX",
                   help="pixels the tumour masks are grown by for --tumour-weight")
    p.add_argument("--stage2-lr", type=float, default=None, metavar="LR",
                   help="stage-2 peak learning rate (default: the config's; lower it when "
                        "continuing from a trained model with --init-from)")
    p.add_argument("--balance", default=None, metavar="VARIABLE",
                   help="draw every value of this conditioning variable (e.g. pCR) equally "
                        "often in stage 2; 'none' turns a config's balancing off")
    p.add_argument("--time-weights", default=None, metavar="W0,W1,...",
                   help="relative weights of the target time points drawn in stage 2 (one "
                        "per time point, e.g. 1,2,1 draws breast T1 half the time); "
                        "default: the config's, else uniform")
    p.add_argument("--counterfactual-pairs", action="store_true",
                   help="stage 2 trains each drawn patient's factual and counterfactual "
                        "follow-ups side by side (same visit, flips, timestep and noise; the "
                        "phantoms render both outcomes, so the cache gains the "
                        "counterfactuals); the batch size must be even")
    p.add_argument("--cache", type=Path, default=Path("artifacts/breast_cache"),
                   help="prepared-patient cache folder")
    p.add_argument("--jobs", type=int, default=1, help="processes preparing patients")
    p.add_argument("--stop-after", type=float, default=None, metavar="MINUTES",
                   help="stop at the first checkpoint after this many minutes: the resume "
                        "state is saved and, in stage 2, the model is written as it stands "
                        "(its card says where it stopped); the same command continues")
    p.add_argument("--no-resume", action="store_true")
    p.add_argument("--cpu", action="store_true", help="train on the CPU even with a GPU")
    p.add_argument("--log-samples", action="store_true",
                   help="every process writes the patients and time points it drew at each "
                        "step to --out/samples/rank<k>.csv")
    p.add_argument("--quiet", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    from napari_nacsim.cli.exits import run_command

    args = build_parser().parse_args(argv)
    # checkpoints are written atomically: a failed save leaves the last one whole
    return run_command("train_nac", lambda: _run(args, argv), resumable=True)


def _run(args, argv: list[str] | None) -> int:
    import torch
    from accelerate import PartialState

    from napari_nacsim.core.atomic import write_json_atomic
    from napari_nacsim.core.errors import InputError
    from napari_nacsim.science.generative.config import load_config
    from napari_nacsim.families import get_family
    from napari_nacsim.datasets.paired import phantom_cohort, phantom_ids
    from napari_nacsim.science.generative.data import split_ids
    from napari_nacsim.science.generative.train import train

    torch.set_num_threads(max(1, min(torch.get_num_threads(), os.cpu_count() or 1)))
    config = load_config(args.config)
    stage2 = config.setdefault("training", {}).setdefault("stage2", {})
    if args.stage2_lr is not None:
        stage2["lr"] = args.stage2_lr
    if args.tumour_weight is not None:
        stage2["tumour_weight"] = args.tumour_weight
    if args.tumour_margin is not None:
        stage2["tumour_margin"] = args.tumour_margin
    if args.balance is not None:
        stage2["balance"] = None if args.balance.lower() == "none" else args.balance
    if args.counterfactual_pairs:
        stage2["counterfactual_pairs"] = True
    if args.time_weights is not None:
        try:
            stage2["time_weights"] = [float(v) for v in args.time_weights.split(",")]
        except ValueError:
            raise InputError("--time-weights", f"{args.time_weights!r} is not a comma-separated "
                                               "list of numbers") from None
    family = get_family(config["family"])  # the family's phantoms and preprocessing
    test_fraction = args.test_fraction or config.get("training", {}).get("test_fraction", 0.2)
    ids = phantom_ids(family, args.cohort_seed, args.patients)
    train_ids, test_ids = split_ids(ids, test_fraction, args.cohort_seed)
    started = time.time()
    # One process state for the whole run (the trainer's Accelerator shares it). With many
    # processes the main one of each machine prepares (and caches) the patients first, the
    # others read them.
    processes = PartialState(cpu=args.cpu)
    with processes.local_main_process_first():
        cohort = phantom_cohort(family, args.cohort_seed, args.patients, config["image_size"],
                                cache_dir=args.cache,
                                counterfactual_ids=(ids if stage2.get("counterfactual_pairs")
                                                    else test_ids),
                                jobs=args.jobs)
    prep_seconds = time.time() - started
    args.out.mkdir(parents=True, exist_ok=True)
    split = {"cohort": f"nacsim {family.name} phantoms", "family": family.name,
             "cohort_seed": args.cohort_seed,
             "patients": args.patients, "test_fraction": test_fraction,
             "rule": "sorted ids permuted by numpy default_rng(cohort_seed); first "
                     "round(n * test_fraction) are test",
             "train": train_ids, "test": test_ids}
    if processes.is_main_process:
        write_json_atomic(args.out / "split.json", split)
    launcher = (f"accelerate launch --num_processes {processes.num_processes}"
                if processes.num_processes > 1 else "python")
    command = f"{launcher} training/train_nac.py " + " ".join(
        shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    card = {
        "title": f"nacsim {config['family']} NAC model ({config['name']})",
        "spacing_mm": list(cohort.spacing),
        "normalisation": family.normalisation,
        "training": {"command": command, "data_preparation_seconds": round(prep_seconds, 1)},
        "data": {"source": family.training_data, "split": split,
                 "n_train": len(train_ids), "n_test": len(test_ids)},
        "text_tower_note": ("The OpenCLIP text transformer is randomly initialised and frozen "
                            "(no pretrained weights are available offline); only the prompt "
                            "tokens, the ControlNet and the UNet decoder learn, so the random "
                            "tower acts as a fixed mixing of the learned tokens.")
        if config["text"].get("random_init") else "frozen pretrained OpenCLIP text tower",
    }
    if args.init_from is not None:
        from napari_nacsim.science.generative.checkpoint import model_hash, verify_checkpoint

        start = verify_checkpoint(args.init_from)
        card["training"]["init_from"] = {"model": str(args.init_from),
                                         "model_hash": model_hash(start),
                                         "training": start.get("training", {})}
    model_dir = train(config, cohort.subset(train_ids), args.out, seed=args.seed,
                      stage1_steps=args.stage1_steps, stage2_steps=args.stage2_steps,
                      vae_steps=args.vae_steps,
                      batch_size=args.batch_size, checkpoint_every=args.checkpoint_every,
                      resume=not args.no_resume, cpu=args.cpu, card=card,
                      init_from=args.init_from, sample_log=args.log_samples,
                      stop_at=(None if args.stop_after is None
                               else started + 60 * args.stop_after),
                      progress=not args.quiet)
    if processes.is_main_process:
        print(f"model written to {model_dir} in {time.time() - started:.0f} s "
              f"({processes.num_processes} process(es))")
    return 0


if __name__ == "__main__":
    sys.exit(main())
