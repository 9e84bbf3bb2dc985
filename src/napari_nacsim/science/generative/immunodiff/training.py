"""The four training stages of ImmunoDiff and a resumable loop around them.

Stages (each can run alone; a later one loads the earlier ones' weights from the run
folder):

- ``vl``: vessel and lobe encoders + projection heads, InfoNCE (positives: the two masks of
  the same patient and slice; the other rows of the batch, other patients, are negatives).
- ``base``: the U-Net as an unconditional denoiser of unpaired crop slices (pre and post
  visits of many patients), noise-prediction MSE.
- ``control``: the ControlNet (initialised from the base U-Net) with the frozen VL maps as
  the control, on the unpaired crops (each visit's own masks); U-Net and encoders frozen.
- ``adapter``: the cbi-Adapter and the ControlNet on paired patients: target = the
  post-treatment slice, control = [anatomy of the pre-treatment masks ; ĉ(pre slice,
  clinical values)]; the clinical values are dropped (all "missing") with probability
  ``drop_condition`` so that classifier-free guidance has an unconditional branch. With an
  outcome input (``adapter.outcome_input``) the record's actual outcome is one of the values
  (dropped alone with probability ``drop_outcome``), and with ``training.flipped_outcomes``
  every patient comes twice: as it happened and rendered under the other outcome.

With the config's ``target`` "change" the diffused quantity is the follow-up minus the
pre-treatment crop (registered pairs), not the follow-up itself. Why: outside the tumour the
two visits differ only by noise, so an image model spends its capacity re-drawing anatomy the
pre-treatment crop already gives (the first bundled model: SSIM 0.68 against 0.95 for a
plain copy, seams between slices), while a change model spends it on the tumour. A change
needs registered visits, so with it the ``base`` and ``control`` stages train on the paired
set too (the base denoiser learns what changes look like, unconditionally).

The tumour is about 0.5 % of a crop: ``tumour_weight`` weighs its (dilated) voxels more in
the loss and ``tumour_slice_share`` of the slices are drawn among those showing it.

Batches are drawn from a generator seeded by (seed, stage, step), so a resumed run draws
the same batches as an uninterrupted one. With N processes (``accelerate launch``), every
process draws the step's global batch (N x ``batch``) and trains on its own slice of it;
the gradients are averaged over the processes, so N processes with batch B take the steps
of one process with batch N x B (the InfoNCE of stage ``vl`` excepted: its negatives are the
rows of each process's own slice).
"""

from __future__ import annotations

import hashlib
from typing import Any, Callable, Optional

import numpy as np
import torch

from ..losses import prediction_target, tumour_weights, weighted_mse
from .config import hu_to_model
from .network import ImmunoDiff
from .sampling import noise_schedule
from .slices import slices_of
from .vl_encoder import lobe_one_hot

STAGES = ("vl", "base", "control", "adapter")
TUMOUR_MARGIN = 3   # voxels around the tumour that weigh as it does: its rim shows a change


def step_generator(seed: int, stage: str, step: int) -> torch.Generator:
    key = hashlib.sha256(f"{seed}/{stage}/{step}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(key[:8], "little"))


class CropSet:
    """Crops, masks and clinical values held as tensors: (N, 1, Z, H, W)."""

    def __init__(self, records: list[dict[str, Any]], *, paired: bool, baseline: str = "pre",
                 followup: str = "post"):
        if not records:
            raise ValueError("no training records")
        self.paired = paired
        if paired:
            visits = [(r, baseline, followup) for r in records]
        else:  # every visit is a crop of its own (its own masks)
            visits = [(r, tp, tp) for r in records for tp in (baseline, followup)]
        self.patient = torch.tensor([i for i, r in enumerate(records)
                                     for _ in range(1 if paired else 2)])

        def stack(key_of):
            return torch.from_numpy(np.stack([r["arrays"][key_of(src, dst)]
                                              for r, src, dst in visits]))[:, None]

        self.source = stack(lambda s, d: f"{s}_image")       # int16 HU
        self.target = stack(lambda s, d: f"{d}_image")
        self.lobes = stack(lambda s, d: f"{s}_lobes")
        self.vessels = stack(lambda s, d: f"{s}_vessels")
        # the tumour of either visit: where a change happens
        self.tumour = (stack(lambda s, d: f"{s}_tumour") > 0) | \
            (stack(lambda s, d: f"{d}_tumour") > 0)
        self.clinical = [r["meta"]["clinical"] for r, _, _ in visits]
        self.n_patients = len(records)

    def __len__(self) -> int:
        return len(self.source)

    def draw(self, batch: int, g: torch.Generator, *, distinct_patients: bool = False,
             tumour_share: float = 0.0):
        if distinct_patients:
            patients = torch.randperm(self.n_patients, generator=g)[:batch]
            per = torch.randint(0, 1 if self.paired else 2, (len(patients),), generator=g)
            idx = patients * (1 if self.paired else 2) + per
        else:
            idx = torch.randint(0, len(self), (batch,), generator=g)
        z = torch.randint(0, self.source.shape[2], (len(idx),), generator=g)
        if tumour_share > 0:  # (extra draws only then: other configs keep their batches)
            pick = torch.rand(len(idx), generator=g) < tumour_share
            u = torch.rand(len(idx), generator=g)
            shows = self.tumour[idx, 0].flatten(2).any(-1)                   # (B, Z)
            for row in torch.nonzero(pick & shows.any(-1)).flatten().tolist():
                where = torch.nonzero(shows[row]).flatten()
                z[row] = where[min(int(u[row] * len(where)), len(where) - 1)]
        return idx, z


def _masks25(data: CropSet, idx, z, k: int, dtype=torch.float32):
    vessels = slices_of((data.vessels[idx] > 0).to(dtype), k, z)
    lobes = slices_of(lobe_one_hot(data.lobes[idx]).to(dtype), k, z)
    return vessels, lobes


def _noised(model: ImmunoDiff, scheduler, clean25: torch.Tensor, g: torch.Generator,
            n_global: int | None = None, part: slice = slice(None)):
    """The 2.5D clean slices noised at one timestep per row (independent noise per slice,
    i.e. the forward process of the whole volume); returns (x_t, t, centre noise).
    ``n_global``, ``part``: the draws are made for the global batch, ``clean25`` is its
    ``part``."""
    b = n_global or len(clean25)
    t = torch.randint(0, scheduler.config.num_train_timesteps, (b,), generator=g)[part]
    noise = torch.randn((b, *clean25.shape[1:]), generator=g)[part]
    noisy = scheduler.add_noise(clean25, noise, t)
    return noisy, t, noise[:, model.neighbours:model.neighbours + 1]


def stage_data(config, stage: str) -> str:
    """"paired" or "unpaired": the records ``stage`` trains on (see the module's text)."""
    if stage == "adapter" or (config["target"] == "change" and stage != "vl"):
        return "paired"
    return "unpaired"


def stage_loss(model: ImmunoDiff, stage: str, data: CropSet, batch: int, g: torch.Generator,
               scheduler=None, drop_condition: float = 0.0, *, rank: int = 0,
               world: int = 1) -> torch.Tensor:
    """The loss of process ``rank`` of ``world``: its ``batch`` rows of the global batch."""
    k, cfg = model.neighbours, model.config
    mine = slice(rank * batch, (rank + 1) * batch)
    device = next(model.parameters()).device  # the data is drawn on the CPU (seeded)
    if stage == "vl":
        idx, z = data.draw(batch * world, g, distinct_patients=True)
        idx, z = idx[mine], z[mine]
        if len(idx) < 2:
            raise ValueError(f"stage vl: {data.n_patients} patients cannot give {world} "
                             f"processes 2 or more distinct patients each (batch {batch}); "
                             "use fewer processes")
        vessels, lobes = _masks25(data, idx, z, k)
        return model.vl.contrastive_loss(vessels.to(device), lobes.to(device))
    scheduler = scheduler or noise_schedule(cfg)
    tr = cfg["training"]
    idx, z = data.draw(batch * world, g, tumour_share=float(tr["tumour_slice_share"]))
    n_global, idx, z = len(idx), idx[mine], z[mine]
    clean = slices_of(hu_to_model(data.target[idx].float(), cfg), k, z)
    if cfg["target"] == "change":
        clean = clean - slices_of(hu_to_model(data.source[idx].float(), cfg), k, z)
    noisy, t, noise = _noised(model, scheduler, clean, g, n_global, mine)
    goal = prediction_target(scheduler, clean[:, k:k + 1], noise, t)
    noisy, t, goal = noisy.to(device), t.to(device), goal.to(device)
    weights = None
    if float(tr["tumour_weight"]) > 0:
        weights = tumour_weights(slices_of(data.tumour[idx], 0, z), float(tr["tumour_weight"]),
                                 TUMOUR_MARGIN).to(device)
    if stage == "base":
        return weighted_mse(model.denoise(noisy, t), goal, weights, normalise="batch")
    with torch.no_grad():
        anatomy = model.anatomy(*(m.to(device) for m in _masks25(data, idx, z, k)))
    fused = None
    if stage == "adapter":
        scen = [dict(data.clinical[int(i)]) for i in idx]
        drop = torch.rand(n_global, generator=g)[mine] < drop_condition
        scen = [{} if d else s for s, d in zip(scen, drop.tolist())]
        outcomes = list(cfg["adapter"].get("outcome_input", ()))
        drop_outcome = float(cfg["adapter"].get("drop_outcome", 0.0))
        if outcomes and drop_outcome > 0:  # (extra draws only then: other configs keep theirs)
            # the outcome alone "not given": the same network keeps the implicit mode
            hide = (torch.rand(n_global, generator=g)[mine] < drop_outcome).tolist()
            scen = [{k: v for k, v in s.items() if k not in outcomes} if h else s
                    for s, h in zip(scen, hide)]
        values, codes, present = (v.to(device) for v in model.adapter.encode(scen))
        pre25 = slices_of(hu_to_model(data.source[idx].float(), cfg), k, z).to(device)
        fused = model.fused(pre25, model.adapter.clinical(values, codes, present))
    return weighted_mse(model.denoise(noisy, t, model.control(anatomy, fused)), goal, weights,
                        normalise="batch")


def trainable(model: ImmunoDiff, stage: str) -> list[torch.nn.Parameter]:
    """Freeze everything, then unfreeze what ``stage`` trains."""
    model.requires_grad_(False)
    parts = {"vl": [model.vl], "base": [model.unet], "control": [model.controlnet],
             "adapter": [model.adapter, model.controlnet]}[stage]
    for part in parts:
        part.requires_grad_(True)
    return [p for part in parts for p in part.parameters()]


def run_stage(model: ImmunoDiff, stage: str, data: CropSet, *, steps: int, start: int,
              optimizer: torch.optim.Optimizer, seed: int, batch: int,
              on_step: Callable[[int, float], None], accelerator=None,
              should_stop: Optional[Callable[[], bool]] = None) -> int:
    """Steps ``start`` .. ``steps`` - 1 of ``stage``; returns the next step to run."""
    scheduler = noise_schedule(model.config)
    drop = float(model.config["adapter"]["drop_condition"])
    model.train()
    step = start
    rank, world = ((accelerator.process_index, accelerator.num_processes)
                   if accelerator is not None else (0, 1))
    while step < steps:
        g = step_generator(seed, stage, step)
        loss = stage_loss(model, stage, data, batch, g, scheduler, drop, rank=rank,
                          world=world)
        optimizer.zero_grad(set_to_none=True)
        if accelerator is not None:
            accelerator.backward(loss)
        else:
            loss.backward()
        if world > 1:
            average_gradients(optimizer, accelerator)
            loss = accelerator.reduce(loss.detach(), "mean")  # the global batch's loss
        optimizer.step()
        step += 1
        on_step(step, float(loss.detach()))
        if should_stop is not None and should_stop():
            break
    model.eval()
    return step


def average_gradients(optimizer: torch.optim.Optimizer, accelerator) -> None:
    """Average the gradients of the optimizer's parameters over the processes (one
    collective on a flat buffer). The model is not wrapped in DistributedDataParallel: the
    stage losses call its parts directly, not its forward. A parameter without a gradient on
    this process counts as a zero gradient, so every process sends the same layout (and
    keeps no gradient if no process had one, as the optimizer then skips it)."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = accelerator.reduce(torch.cat([g.reshape(-1) for g in grads]), "mean")
    offset = 0
    for p, g in zip(params, grads):
        mean = flat[offset:offset + g.numel()].view_as(g)
        offset += g.numel()
        if p.grad is not None or mean.any():
            p.grad = mean.clone()
