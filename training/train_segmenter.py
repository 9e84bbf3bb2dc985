#!/usr/bin/env python
"""Train an nnU-Net v2 tumour segmenter for nacsim (breast MIPs or lung CT crops).

Data: a cohort manifest (``--cohort``, see docs/cohort-manifest.md) or synthetic phantom
patients rendered in memory (``--phantoms N --seed S``). Each visit with a tumour mask goes
through nacsim's preprocessing (registration, subtraction MIP / CT crop) and becomes one
nnU-Net case. Then nnU-Net's own stages run in a workspace (``nnUNet_raw``,
``nnUNet_preprocessed``, ``nnUNet_results`` under ``--workspace``): fingerprint with the
dataset integrity check, plan (``--plan compact``: a small U-Net for CPUs and bundling;
``--plan default``: nnU-Net's own), preprocess, train. With ``--out`` the trained model is
written in nacsim's pickle-free format with this command recorded in its model card.

Examples::

    # the bundled breast model (see docs/segmentation.md for the exact command and timing)
    python training/train_segmenter.py --family breast --phantoms 48 --seed 1000 \\
        --workspace /tmp/nnunet --out src/napari_nacsim/models/segmentation/breast

    # fine-tune the bundled model longer on the cases an earlier run left in its workspace
    python training/train_segmenter.py --family breast --phantoms 64 --seed 1000 \\
        --reuse-workspace --init-from src/napari_nacsim/models/segmentation/breast \\
        --epochs 130 --iterations 30 --workspace /tmp/nnunet --out /tmp/breast_finetuned

    # fine-tune it on a larger set: 112 tumour patients and 32 lesion-free ones
    python training/train_segmenter.py --family breast --phantoms 112 --seed 1000 \
        --lesion-free 32 --init-from src/napari_nacsim/models/segmentation/breast \
        --epochs 160 --iterations 30 --workspace /tmp/nnunet2 --out /tmp/breast_finetuned

    # a user's cohort on a GPU with nnU-Net's default plan and schedule lengths
    python training/train_segmenter.py --cohort my_cohort/cohort.json --plan default \\
        --epochs 1000 --iterations 250 --device cuda --workspace ~/nnunet

    # the same on 4 GPUs of one machine (nnU-Net's own DDP; docs/training.md)
    python training/train_segmenter.py --cohort my_cohort/cohort.json --plan default \\
        --epochs 1000 --iterations 250 --device cuda --gpus 4 --workspace ~/nnunet

The run can be continued or inspected with nnU-Net's commands, e.g.
``nnUNetv2_train 501 2d all -tr nnUNetTrainer_nacsimCPU -p nnUNetPlans_nacsimCompact``
(with ``nnUNet_extTrainer`` pointing at nacsim's trainer folder, which this script sets).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    from napari_nacsim.science.segmentation.plans import CompactSettings

    compact = CompactSettings()
    p = argparse.ArgumentParser(prog="train_segmenter.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    data = p.add_argument_group("data")
    source = data.add_mutually_exclusive_group(required=True)
    source.add_argument("--cohort", type=Path, help="cohort manifest (cohort.json)")
    source.add_argument("--phantoms", type=int, metavar="N",
                        help="train on N synthetic phantom patients")
    from napari_nacsim.families import family_names

    data.add_argument("--family", choices=family_names(),
                      help="model family (required with --phantoms; read from a cohort)")
    data.add_argument("--seed", type=int, default=0, help="phantom cohort seed (default 0)")
    data.add_argument("--first-index", type=int, default=0,
                      help="index of the first phantom patient (default 0)")
    data.add_argument("--timepoints", nargs="+", metavar="TP",
                      help="visits to use (default: all; the baseline is always included)")
    data.add_argument("--lesion-free", type=int, default=0, metavar="M",
                      help="with --phantoms (breast): also M lesion-free phantom patients, "
                           "the patients after the N tumour patients (indices first-index+N "
                           "...) rendered with no tumour at any visit; their visits are cases "
                           "with empty masks, so the model also sees MIPs without a tumour "
                           "(default 0)")
    data.add_argument("--size", type=int, default=128, help="breast MIP size (default 128)")
    data.add_argument("--jobs", type=int, default=None,
                      help="processes preparing the cases (default: up to 2)")

    nn = p.add_argument_group("nnU-Net")
    nn.add_argument("--workspace", type=Path, default=None,
                    help="folder for nnUNet_raw/_preprocessed/_results (default: the "
                         "nnUNet_* environment variables, else ./nnunet_workspace)")
    nn.add_argument("--dataset-id", type=int, default=None,
                    help="nnU-Net dataset id (default 501 breast, 502 lung)")
    nn.add_argument("--dataset-name", default=None)
    nn.add_argument("--plan", choices=["compact", "default"], default="compact")
    nn.add_argument("--base-features", type=int, default=compact.base_features,
                    help=f"compact plan: first-stage features (default {compact.base_features})")
    nn.add_argument("--max-features", type=int, default=compact.max_features,
                    help=f"compact plan: most features per stage (default {compact.max_features})")
    nn.add_argument("--max-batch-size", type=int, default=compact.max_batch_size,
                    help=f"compact plan: batch size cap (default {compact.max_batch_size})")
    nn.add_argument("--min-edge", type=int, default=compact.min_edge_length,
                    help="compact plan: smallest feature-map edge, larger means fewer stages "
                         f"(default {compact.min_edge_length})")
    nn.add_argument("--batch-dice", action="store_true",
                    help="compact plan: Dice loss over the whole batch (nnU-Net's 2D default) "
                         "instead of per image")
    nn.add_argument("--configuration", default=None,
                    help="nnU-Net configuration (default: 2d for breast, 3d_fullres for lung)")
    nn.add_argument("--trainer", default="nnUNetTrainer_nacsimCPU")
    nn.add_argument("--fold", default="all", help="'all' (default) or 0-4")
    nn.add_argument("--epochs", type=int, default=100)
    nn.add_argument("--iterations", type=int, default=50, help="iterations per epoch")
    nn.add_argument("--val-iterations", type=int, default=5)
    nn.add_argument("--lr", type=float, default=1e-2, help="initial learning rate")
    nn.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N")
    nn.add_argument("--gpus", type=int, default=1, metavar="N",
                    help="train on N CUDA GPUs with nnU-Net's own multi-GPU training (as "
                         "nnUNetv2_train -num_gpus N: one process per GPU, the plan's batch "
                         "split over them; default 1)")
    nn.add_argument("--processes", type=int, default=None,
                    help="nnU-Net preprocessing workers (default: cores - 1)")
    nn.add_argument("--threads", type=int, default=None,
                    help="torch threads while training (default: torch's choice; 1 is "
                         "faster on a busy 2-core machine)")

    p.add_argument("--out", type=Path, default=None,
                   help="write the trained model here (nacsim format: safetensors + JSON)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing dataset/model of the same id/folder")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted run in the same workspace from nnU-Net's "
                        "latest checkpoint (same arguments otherwise)")
    p.add_argument("--reuse-workspace", action="store_true",
                   help="train anew on the cases a previous run exported, planned and "
                        "preprocessed in --workspace (skips case preparation; the data "
                        "description in the model card is read from that export)")
    p.add_argument("--init-from", type=Path, default=None, metavar="MODEL_DIR",
                   help="start from the weights of a nacsim-format model (e.g. a bundled "
                        "one) with the same architecture: fine-tuning; the model card "
                        "records it and its training commands")
    p.add_argument("--summary", type=Path, default=None, help="also write the summary JSON here")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)

    from napari_nacsim.cli.exits import run_command

    # nnU-Net writes its own checkpoints, not atomically: no promise that the last is whole
    return run_command("train_segmenter", lambda: _run(args, argv))


def _run(args, argv: list[str]) -> int:
    import os

    from napari_nacsim.core.errors import InputError
    from napari_nacsim.science.segmentation import nnunet_env
    from napari_nacsim.datasets.segmentation_cases import cohort_cases, phantom_cases
    from napari_nacsim.families import get_family
    from napari_nacsim.science.segmentation.plans import CompactSettings
    from napari_nacsim.science.segmentation.train import TrainingSettings, train_segmenter

    workspace = args.workspace
    if workspace is None and not all(os.environ.get(v) for v in nnunet_env.PATH_VARIABLES):
        workspace = Path("nnunet_workspace")
    try:
        compact = CompactSettings(args.base_features, args.max_features, args.max_batch_size,
                                  args.min_edge, args.batch_dice)
    except ValueError as err:
        raise InputError("compact plan", str(err)) from None
    if args.gpus != 1:  # refused before the (slow) case preparation if it cannot run
        from napari_nacsim.science.segmentation.segmenter import resolve_device
        from napari_nacsim.science.segmentation.train import check_gpus

        check_gpus(args.gpus, resolve_device(args.device), args.init_from)

    import time

    started = time.time()
    if args.lesion_free < 0:
        raise InputError("--lesion-free", f"{args.lesion_free} must be >= 0")
    if args.lesion_free and args.family is not None:
        spec = get_family(args.family).segmentation
        if spec is None or not spec.lesion_free:
            raise InputError("--lesion-free", f"the {args.family} family has no lesion-free "
                                              "phantoms")
    if args.resume and args.reuse_workspace:
        raise InputError("--reuse-workspace", "cannot be combined with --resume")
    if args.resume or args.reuse_workspace:  # the cases were exported by an earlier run
        if args.family is None:
            raise InputError("--family", "is required with --resume / --reuse-workspace")
        family, cases = args.family, None
        data = {"source": "nacsim phantoms" if args.phantoms is not None else "cohort manifest",
                "synthetic": args.phantoms is not None, "family": family}
        if args.phantoms is not None:
            data.update({"seed": args.seed, "patients": args.phantoms,
                         "first_index": args.first_index, "timepoints": args.timepoints or "all",
                         "lesion_free_patients": args.lesion_free})
        else:
            data["manifest"] = str(args.cohort)
    elif args.phantoms is not None:
        if args.family is None:
            raise InputError("--family", "is required with --phantoms")
        family = args.family
        cases = phantom_cases(family, args.phantoms, args.seed, timepoints=args.timepoints,
                              size=args.size, first_index=args.first_index, jobs=args.jobs)
        if args.lesion_free:
            cases += phantom_cases(family, args.lesion_free, args.seed,
                                   timepoints=args.timepoints, size=args.size,
                                   first_index=args.first_index + args.phantoms,
                                   jobs=args.jobs, lesion_free=True)
        data = {"source": "nacsim phantoms", "synthetic": True, "family": family,
                "seed": args.seed, "patients": args.phantoms, "first_index": args.first_index,
                "timepoints": args.timepoints or "all", "lesion_free_patients": args.lesion_free}
    else:
        if args.lesion_free:
            raise InputError("--lesion-free", "needs --phantoms (a cohort brings its own "
                                              "visits)")
        family, cases = cohort_cases(args.cohort, timepoints=args.timepoints, size=args.size,
                                     jobs=args.jobs)
        if args.family and args.family != family:
            raise InputError("--family", f"{args.family} does not match the cohort's {family}")
        data = {"source": "cohort manifest", "manifest": str(args.cohort), "family": family,
                "patients": len({c.patient_id for c in cases}),
                "timepoints": args.timepoints or "all",
                "synthetic": all(c.image.provenance.get("synthetic") for c in cases)}
    data["cases"] = len(cases) if cases else None
    data["prepare_cases_s"] = round(time.time() - started, 1)
    chosen = get_family(family)
    # 2D inputs (MIPs) are resized to --size; 3D crops keep their grid
    data["breast_mip_size"] = args.size if chosen.segmenter_input.ndim == 2 else None

    settings = TrainingSettings(
        family=chosen.name, segmentation=chosen.segmentation,
        input_spec=chosen.segmenter_input, plan=args.plan, compact=compact,
        configuration=args.configuration,
        trainer=args.trainer, fold=args.fold, epochs=args.epochs, iterations=args.iterations,
        val_iterations=args.val_iterations, learning_rate=args.lr, device=args.device,
        dataset_id=args.dataset_id, dataset_name=args.dataset_name, processes=args.processes,
        threads=args.threads, gpus=args.gpus)
    command = "python training/train_segmenter.py " + shlex.join(argv)
    summary = train_segmenter(cases, settings, workspace, out=args.out, command=command,
                              data=data, overwrite=args.overwrite, resume=args.resume,
                              reuse=args.reuse_workspace, init_from=args.init_from)
    text = json.dumps(summary, indent=2, default=str)
    if args.summary:
        args.summary.parent.mkdir(parents=True, exist_ok=True)
        args.summary.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
