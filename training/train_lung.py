"""Train ImmunoDiff (the lung family's generative model) in four stages.

    python training/train_lung.py --config lung_tiny --out artifacts/lung_tiny
    python training/train_lung.py --config lung_tiny --out artifacts/lung_tiny --stages vl
    accelerate launch --multi_gpu --num_processes 4 training/train_lung.py --config lung_paper \
        --out ... --device cuda

Stages ``vl`` (vessel/lobe encoders, InfoNCE), ``base`` (unconditional denoiser on unpaired
crops), ``control`` (anatomy ControlNet) and ``adapter`` (cbi-Adapter + ControlNet on
paired patients; with a config whose ``target`` is "change", base and control train on the
paired patients' changes too), each alone (``--stages base``) or several in one command (default: all,
in that order; a stage loads the weights the earlier ones left in ``--out/state``).

Resumable: the same command again continues from ``--out/state`` (weights every
``--save-every`` steps or ``--save-minutes``, optimizer, step; batches are drawn from
(seed, stage, step), so a resumed run sees the batches an uninterrupted one would).
Writes ``--out/model`` (safetensors + model card with this command, data, split, machine,
time), ``--out/split.json`` (deterministic patient split), ``--out/loss_log.csv`` and
``--out/loss_curve.png``. Phantom records are cached in ``--data`` (drawn when missing).

With N processes (``accelerate launch``, docs/training.md) ``--batch-size`` is per process,
every process trains on its own share of each step's samples (the gradients are averaged),
only the main process writes, and a run resumes on another number of processes.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path

os.environ.setdefault("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", "1")

STAGE_NAMES = ("vl", "base", "control", "adapter")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="lung_tiny", help="bundled config name or JSON path")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--stages", default=",".join(STAGE_NAMES),
                   help="comma-separated stages to run, in order (default: all)")
    p.add_argument("--steps", action="append", default=[], metavar="STAGE=N",
                   help="steps of a stage (default: the config's training.steps)")
    p.add_argument("--minutes", action="append", default=[], metavar="STAGE=M",
                   help="stop a stage after M minutes of training (the model keeps what it "
                        "learnt; the card records the steps done)")
    p.add_argument("--data", type=Path, default=Path("artifacts/lung_data"),
                   help="phantom-record cache (paired_<seed>/, unpaired_<seed>/)")
    p.add_argument("--paired", type=int, default=None, help="paired patients (default: config)")
    p.add_argument("--unpaired", type=int, default=None,
                   help="unpaired patients for the vl/base/control stages (default: config)")
    p.add_argument("--use-cached", action="store_true",
                   help="train on the records already cached (at least 2), draw none")
    p.add_argument("--batch-size", type=int, default=None,
                   help="samples per step and process (default: the config's)")
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--save-every", type=int, default=200)
    p.add_argument("--save-minutes", type=float, default=5.0)
    p.add_argument("--device", default="cpu", help="cpu, cuda (accelerate picks the process's "
                                                    "GPU under accelerate launch)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--no-resume", action="store_true")
    p.add_argument("--init-from", type=Path, default=None, metavar="MODEL",
                   help="start from a trained model folder's weights (hash-checked; same "
                        "network sizes), e.g. to fine-tune its later stages with --stages")
    return p


def _pairs(items: list[str], what: str, cast) -> dict[str, object]:
    out = {}
    for item in items:
        if "=" not in item or item.split("=", 1)[0] not in STAGE_NAMES:
            raise SystemExit(f"{what} {item!r}: expected STAGE=VALUE with STAGE one of "
                             f"{', '.join(STAGE_NAMES)}")
        name, value = item.split("=", 1)
        out[name] = cast(value)
    return out


def _records(args, family, cfg, paired: bool):
    tr = cfg["training"]
    seed = tr["cohort_seed_paired"] if paired else tr["cohort_seed_unpaired"]
    n = (args.paired if paired else args.unpaired) or tr["paired_patients" if paired
                                                        else "unpaired_patients"]
    folder = args.data / f"{'paired' if paired else 'unpaired'}_{seed}"
    records = _cached(args, family, folder, seed, n, paired=paired)
    # an outcome-conditioned generator also sees every patient under the other outcome
    for outcome in (cfg["adapter"]["outcome_input"] if paired and tr["flipped_outcomes"]
                    else ()):
        flipped = _cached(args, family, args.data / f"paired_{seed}_flipped_{outcome}", seed,
                          n, paired=True, flip_outcome=outcome)
        mine = {r["meta"]["index"] for r in records}
        records = records + [r for r in flipped if r["meta"]["index"] in mine]
    return records, seed, folder


def _cached(args, family, folder: Path, seed: int, n: int, *, paired: bool,
            flip_outcome: str | None = None) -> list:
    from napari_nacsim.science.generative.immunodiff.data import build_cache, load_records

    if args.use_cached:
        records = load_records(folder)[:n]
        if len(records) < 2:
            raise SystemExit(f"{folder}: fewer than 2 cached records (drop --use-cached)")
        return records
    what = "flipped-outcome" if flip_outcome else ("paired" if paired else "unpaired")
    bar = _bar(args, n, f"{what} phantoms")
    build_cache(folder, family, seed, range(n), paired=paired, flip_outcome=flip_outcome,
                progress=(lambda k: bar.update(k)) if bar else None)
    if bar:
        bar.close()
    return load_records(folder, range(n))


def _init_from(model, folder: Path) -> dict:
    """Load a model folder's weights into ``model`` (a resumed run's state, if any, is
    loaded afterwards and wins); returns what the card records."""
    from napari_nacsim.core.errors import InputError
    from napari_nacsim.science.generative.immunodiff.checkpoint import load_checkpoint

    try:
        source, card = load_checkpoint(folder)
    except InputError as err:
        raise SystemExit(f"--init-from: {err}") from None
    from napari_nacsim.science.generative.immunodiff.checkpoint import load_extending

    try:
        # same sizes; the config may add inputs to the cbi-Adapter (an outcome), which
        # start silent (`load_extending`)
        new = load_extending(model, source)
    except ValueError as err:
        raise SystemExit(f"--init-from {folder}: its network sizes differ from the config's "
                         f"({err})") from None
    return {"path": str(folder), "model_hash": card["model_hash"], "new_weights": new,
            "prediction_type": card["config"]["diffusion"]["prediction_type"],
            "target": card["config"].get("target", "image"),
            "steps_done": card.get("training", {}).get("steps_done")}


def _bar(args, total: int, desc: str, initial: int = 0):
    if args.no_progress or not getattr(args, "main_process", True):
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, dynamic_ncols=True)


def _save_state(model, optimizer, state_dir: Path, progress: dict) -> None:
    """The resume state: weights, optimizer (while a stage runs) and progress, written as one
    folder that replaces the previous one whole (as the breast training's), so a save that
    fails midway (a full disk) leaves the previous state, never new weights under an old
    step."""
    import torch

    from napari_nacsim.core.atomic import atomic_directory, write_json_atomic
    from napari_nacsim.science.generative.weights import save_components

    with atomic_directory(state_dir) as staging:
        save_components(model.components(), staging)
        if optimizer is not None:
            torch.save(optimizer.state_dict(), staging / "optimizer.pt")
        write_json_atomic(staging / "progress.json", progress)


def _load_state(model, state_dir: Path) -> dict:
    from napari_nacsim.science.generative.weights import load_components

    progress = json.loads((state_dir / "progress.json").read_text())
    load_components(model.components(), state_dir, {n: {"path": f"{n}.safetensors"}
                                                    for n in model.components()})
    return progress


def _plot(log_path: Path, out_png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    rows = list(csv.DictReader(log_path.open()))
    if not rows:
        return
    stages = [s for s in STAGE_NAMES if any(r["stage"] == s for r in rows)]
    fig, axes = plt.subplots(1, len(stages), figsize=(4 * len(stages), 3), squeeze=False)
    for ax, stage in zip(axes[0], stages):
        loss = np.array([float(r["loss"]) for r in rows if r["stage"] == stage])
        step = np.array([int(r["step"]) for r in rows if r["stage"] == stage])
        ax.plot(step, loss, lw=0.5, alpha=0.4)
        w = max(1, len(loss) // 30)
        if len(loss) >= w:
            ax.plot(step[w - 1:], np.convolve(loss, np.ones(w) / w, "valid"), lw=1.5)
        ax.set_title(stage)
        ax.set_xlabel("step")
        ax.set_yscale("log" if stage != "vl" else "linear")
    axes[0][0].set_ylabel("loss")
    fig.tight_layout()
    fig.savefig(out_png, dpi=90)
    plt.close(fig)



class _Run:
    """One command: the config and its settings, the model, the data of each stage, the
    loss log and the progress record that the resume state holds. Its methods are the
    command's parts, in order: `resume`, `open_log`, `train_stage` per stage (its data from
    `data_for`), `close_log`, `write_model` (with `card`)."""

    def __init__(self, args, argv: list[str] | None):
        """Set up: the config and the command's overrides, the processes, a new model."""
        import torch
        from accelerate import Accelerator

        from napari_nacsim.families import get_family
        from napari_nacsim.science.generative.immunodiff.config import load_config
        from napari_nacsim.science.generative.immunodiff.network import ImmunoDiff

        self.args, self.argv = args, argv
        self.stages = [s.strip() for s in args.stages.split(",") if s.strip()]
        unknown = [s for s in self.stages if s not in STAGE_NAMES]
        if unknown:
            raise SystemExit(f"--stages: unknown stage {unknown[0]!r} "
                             f"({', '.join(STAGE_NAMES)})")
        self.cfg = load_config(args.config)
        self.tr = tr = self.cfg["training"]
        self.steps = {**tr["steps"], **_pairs(args.steps, "--steps", int)}
        self.minutes = _pairs(args.minutes, "--minutes", float)
        self.seed = tr["seed"] if args.seed is None else args.seed
        self.batch = args.batch_size or tr["batch_size"]
        self.lr = args.lr or tr["lr"]
        self.family = get_family(self.cfg["family"])
        self.accelerator = Accelerator(cpu=args.device == "cpu")
        # Many processes: each trains on its share of every batch; only the main one writes.
        self.main, self.world = self.accelerator.is_main_process, self.accelerator.num_processes
        args.main_process = self.main
        self.out, self.state_dir = args.out, args.out / "state"
        self.out.mkdir(parents=True, exist_ok=True)
        self.log_path = self.out / "loss_log.csv"

        torch.manual_seed(self.seed)
        self.model = ImmunoDiff(self.cfg, self.family.schema)
        self.progress = {"done": [], "stage": None, "step": 0, "seconds": {},
                         "steps_done": {}}
        self.data_info, self.split, self.loaded = {}, {}, {}
        self.log_file = self.writer = None

    def resume(self) -> None:
        """Start from ``--init-from``'s weights, then from the resume state (which wins);
        refuse processes that see different states; record this run's start."""
        args, progress, state_dir = self.args, self.progress, self.state_dir
        if args.init_from is not None:
            progress["initialised_from"] = _init_from(self.model, args.init_from)
        if (state_dir / "progress.json").exists() and not args.no_resume:
            progress = self.progress = _load_state(self.model, state_dir)
            if self.main:
                print(f"resuming from {state_dir}: done {progress['done']}, "
                      f"{progress['stage']} at step {progress['step']}", flush=True)
        elif self.log_path.exists() and self.main:
            self.log_path.unlink()
        if self.world > 1:  # e.g. several machines, --out not on a folder they share
            from accelerate.utils import gather_object

            seen = gather_object([(tuple(progress["done"]), progress["stage"],
                                   progress["step"])])
            if len(set(seen)) > 1:
                raise SystemExit(f"{state_dir}: the processes do not see the same resume "
                                 f"state ({seen}); with several machines, --out must be a "
                                 "folder they all share")
        progress.setdefault("processes", []).append(
            {"done": list(progress["done"]), "stage": progress["stage"],
             "step": progress["step"], "num_processes": self.world,
             "effective_batch_size": self.batch * self.world})
        self.data_info.update(progress.get("data", {}))
        self.split.update(progress.get("split", {}))

    def data_for(self, stage: str):
        """The stage's data, loaded when the stage starts (so that with --use-cached a later
        stage sees the records cached meanwhile); the paired set is split into train and
        validation patients (``split.json``)."""
        from napari_nacsim.science.generative.data import split_ids
        from napari_nacsim.science.generative.immunodiff import training as T

        args, cfg, loaded = self.args, self.cfg, self.loaded
        kind = T.stage_data(cfg, stage)
        if kind in loaded and not args.use_cached:
            return loaded[kind]
        records, cseed, folder = _records(args, self.family, cfg, paired=kind == "paired")
        if kind == "unpaired":
            loaded[kind] = T.CropSet(records, paired=False)
            self.data_info.setdefault("unpaired", {}).update(
                {"cohort_seed": cseed, "folder": str(folder),
                 "alignment": "none (each visit cut with the baseline tumour's box)"})
            self.data_info["unpaired"][f"patients_{stage}"] = len(records)
        else:
            patients = sorted({r["meta"]["index"] for r in records})
            train_ids, validation = split_ids(patients, float(self.tr["validation_share"]),
                                              self.seed, at_least_one=False,
                                              field="training.validation_share")
            self.split.update({"train": train_ids, "validation": validation})
            train = [r for r in records if r["meta"]["index"] in set(self.split["train"])]
            loaded[kind] = T.CropSet(train, paired=True)
            flipped = sum(1 for r in train if r["meta"].get("flipped_outcome"))
            self.data_info["paired"] = {"cohort_seed": cseed, "patients": len(patients),
                                        "train": len(self.split["train"]),
                                        "records": len(records), "train_records": len(train),
                                        "flipped_outcome_records": flipped,
                                        "folder": str(folder),
                                        "alignment": records[0]["meta"].get("align", "ants")}
            if self.main:
                (self.out / "split.json").write_text(json.dumps(
                    {"cohort_seed": cseed, "seed": self.seed, **self.split}, indent=1))
        return loaded[kind]

    def open_log(self) -> None:
        if self.main:
            log_new = not self.log_path.exists()
            self.log_file = self.log_path.open("a", newline="")
            self.writer = csv.writer(self.log_file)
            if log_new:
                self.writer.writerow(["stage", "step", "loss", "seconds"])

    def close_log(self) -> None:
        if self.main:
            self.log_file.close()
            _plot(self.log_path, self.out / "loss_curve.png")

    def train_stage(self, stage: str) -> None:
        """One stage from where the progress says it stands: its optimizer (resumed when
        the state holds one), its data, the steps (saving every ``--save-every`` steps or
        ``--save-minutes``, stopping after ``--minutes``), then the stage marked done."""
        import torch

        from napari_nacsim.science.generative.immunodiff import training as T

        args, model, progress, state_dir = self.args, self.model, self.progress, self.state_dir
        params = T.trainable(model, stage)
        if stage == "control" and progress["stage"] != "control":
            model.init_controlnet_from_unet()
        optimizer = torch.optim.Adam(params, lr=self.lr)
        start = 0
        if progress["stage"] == stage and (state_dir / "optimizer.pt").exists():
            optimizer.load_state_dict(torch.load(state_dir / "optimizer.pt", weights_only=True))
            start = int(progress["step"])
        model.to(self.accelerator.device)
        # Not wrapped in DistributedDataParallel: the stage losses call the model's parts,
        # and run_stage averages the gradients over the processes itself.
        optimizer_p = self.accelerator.prepare(optimizer)
        with self.accelerator.local_main_process_first():  # one process per machine draws
            data = self.data_for(stage)
        total = int(self.steps[stage])
        bar = _bar(args, total, stage, start)
        began = time.perf_counter()
        spent = float(progress["seconds"].get(stage, 0.0))
        last_save = [time.perf_counter()]
        limit = self.minutes.get(stage)

        def save(step):
            progress.update(stage=stage, step=step)
            progress["seconds"][stage] = round(spent + time.perf_counter() - began, 1)
            progress["steps_done"][stage] = step
            progress["data"], progress["split"] = self.data_info, self.split
            if self.main:
                _save_state(model, optimizer, state_dir, progress)
                self.log_file.flush()
            last_save[0] = time.perf_counter()

        def on_step(step, loss):
            if self.writer is not None:
                self.writer.writerow([stage, step, f"{loss:.6g}",
                                      round(spent + time.perf_counter() - began, 2)])
            if bar:
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.4f}")
            if step % args.save_every == 0 or \
                    time.perf_counter() - last_save[0] > 60 * args.save_minutes:
                save(step)

        def should_stop():
            return limit is not None and spent + time.perf_counter() - began > 60 * limit

        step = T.run_stage(model, stage, data, steps=total, start=start, optimizer=optimizer_p,
                           seed=self.seed, batch=self.batch, on_step=on_step,
                           accelerator=self.accelerator, should_stop=should_stop)
        if bar:
            bar.close()
        progress["done"].append(stage)
        save(step)
        progress.update(stage=None, step=0)
        if self.main:  # the next stage starts with a fresh optimizer
            _save_state(model, None, state_dir, progress)

    def card(self) -> dict:
        """The model card: this command, the stages, data, split and machine."""
        import torch

        progress, accelerator, world = self.progress, self.accelerator, self.world
        launcher = (f"accelerate launch --num_processes {world}" if world > 1 else "python")
        command = launcher + " " + " ".join(shlex.quote(a) for a in [
            "training/train_lung.py", *(self.argv if self.argv is not None else sys.argv[1:])])
        return {"title": f"ImmunoDiff {self.cfg['name']} (synthetic lung phantoms)",
                "training": {"command": command, "stages": progress["done"],
                             "initialised_from": progress.get("initialised_from"),
                             "steps_done": progress["steps_done"],
                             "seconds": progress["seconds"], "batch_size": self.batch,
                             "lr": self.lr, "num_processes": world,
                             "distributed_type": str(accelerator.distributed_type.value),
                             "effective_batch_size": self.batch * world,
                             "batch_size_note": "batch_size is per process; "
                                                "effective_batch_size = batch_size x "
                                                "num_processes",
                             "processes_per_run": progress["processes"],
                             "optimizer": "Adam", "seed": self.seed, "data": self.data_info,
                             "split": self.split, "machine": {
                                 "platform": platform.platform(),
                                 "processor": platform.processor(),
                                 "device": str(accelerator.device),
                                 "torch_threads": torch.get_num_threads(),
                                 "gpu": torch.cuda.get_device_name(0)
                                 if torch.cuda.is_available() else None}},
                "training_data": self.family.training_data,
                "normalisation": self.family.normalisation,
                "intended_use": "research demonstration on synthetic phantoms; output is "
                                "synthetic, never a measurement"}

    def write_model(self) -> None:
        from napari_nacsim.science.generative.immunodiff.checkpoint import save_checkpoint

        card = self.card()
        if self.main:
            save_checkpoint(self.model, self.out / "model", card)
            print(f"model written to {self.out / 'model'} ({self.world} process(es))",
                  flush=True)
        self.accelerator.wait_for_everyone()  # every process returns once the model is written


def main(argv: list[str] | None = None) -> int:
    from napari_nacsim.cli.exits import run_command

    args = build_parser().parse_args(argv)
    # the resume state is one atomic folder: a failed save leaves the last one whole
    return run_command("train_lung", lambda: _run(args, argv), resumable=True)


def _run(args, argv: list[str] | None) -> int:
    run = _Run(args, argv)
    run.resume()
    run.open_log()
    for stage in run.stages:
        if stage not in run.progress["done"]:
            run.train_stage(stage)
    run.close_log()
    run.write_model()
    return 0


if __name__ == "__main__":
    sys.exit(main())
