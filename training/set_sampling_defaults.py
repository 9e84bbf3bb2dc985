#!/usr/bin/env python
"""Set how a trained NAC model runs by default: sampler steps, sampler, guidance scale.

    python training/set_sampling_defaults.py src/napari_nacsim/models/breast_nac \\
        --steps 10 --evidence "docs/breast-model.md: 10 and 20 steps score alike"

Only the model card changes (its ``config`` defaults, plus an entry in
``sampling_defaults_history`` with this command and the evidence); the weights and the
model hash do not. The engine, `nacsim simulate`, the workspace, the evaluation and the
benchmark use these defaults whenever the user does not choose.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    from napari_nacsim.cli.exits import run_command

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", type=Path, help="model folder (model_card.json + safetensors)")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--sampler", default=None)
    p.add_argument("--guidance", type=float, default=None)
    p.add_argument("--evidence", required=True,
                   help="why (e.g. the evaluation that supports the change); kept in the card")
    args = p.parse_args(argv)
    changes = {key: value for key, value in (("default_steps", args.steps),
                                             ("default_sampler", args.sampler),
                                             ("default_guidance", args.guidance))
               if value is not None}
    if not changes:
        p.error("nothing to change: give --steps, --sampler and/or --guidance")
    command = "python training/set_sampling_defaults.py " + " ".join(
        shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    return run_command("set_sampling_defaults", lambda: _run(args, changes, command),
                       atomic=True)


def _run(args: argparse.Namespace, changes: dict, command: str) -> int:
    from napari_nacsim.science.generative.checkpoint import set_sampling_defaults

    card = set_sampling_defaults(args.model, changes,
                                 {"command": command, "evidence": args.evidence})
    shown = ", ".join(f"{k} = {card['config'][k]}" for k in changes)
    print(f"{args.model}: {shown} (model hash unchanged: {card['model_hash'][:12]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
