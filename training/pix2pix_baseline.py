"""Train the deterministic pix2pix-style baseline and the evaluation's tumour segmenter on
the same synthetic cohort and training split as the NAC model.

    python training/pix2pix_baseline.py --split artifacts/nac_tiny/split.json --out artifacts/eval

Writes ``pix2pix.safetensors`` and ``segmenter.safetensors`` (+ JSON cards with sha256).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path

os.environ.setdefault("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", "1")


def main(argv: list[str] | None = None) -> int:
    from napari_nacsim.science.generative.baseline import save_net, train_pix2pix, train_segmenter
    from napari_nacsim.datasets.paired import phantom_cohort

    p = argparse.ArgumentParser(description="pix2pix-style baseline + tumour segmenter")
    p.add_argument("--split", type=Path, required=True, help="split.json of the NAC training run")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--seg-steps", type=int, default=500)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache", type=Path, default=Path("artifacts/breast_cache"))
    args = p.parse_args(argv)
    split = json.loads(args.split.read_text())
    # split.json names its family since the family registry; older ones are breast
    cohort = phantom_cohort(split.get("family", "breast"), split["cohort_seed"],
                            split["patients"], args.size, cache_dir=args.cache,
                            counterfactual_ids=split["test"])
    train = cohort.subset(split["train"])
    command = "python training/pix2pix_baseline.py " + " ".join(
        shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    card = {"command": command, "train_ids": split["train"], "seed": args.seed}
    for name, fn, steps in (("segmenter", train_segmenter, args.seg_steps),
                            ("pix2pix", train_pix2pix, args.steps)):
        started = time.time()
        losses = []
        net = fn(train, steps=steps, batch=args.batch_size, seed=args.seed,
                 log=lambda s, v: losses.append(v))
        save_net(net, args.out / f"{name}.safetensors",
                 {**card, "what": name, "steps": steps, "batch_size": args.batch_size,
                  "seconds": round(time.time() - started, 1),
                  "final_loss": round(sum(losses[-50:]) / len(losses[-50:]), 5)})
        print(f"{name}: {steps} steps in {time.time() - started:.0f} s, "
              f"loss {sum(losses[-50:]) / len(losses[-50:]):.4f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
