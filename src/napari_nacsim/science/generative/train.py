"""Two-stage training of a family's generative model (used by ``training/train_nac.py``).

Stage 0 (latent configurations whose VAE is not loaded from pretrained weights, e.g. a
diffusers ``AutoencoderKL`` sized for a laptop CPU) first trains the VAE on the images of
every time point: L1 reconstruction plus a small KL term (``training.vae.kl_weight``, as the
latent-diffusion autoencoders), then freezes it and sets its latent scaling factor to one over
the standard deviation of the training latents (Stable Diffusion's convention).

Stage 1 pre-trains the base denoiser (the UNet, empty prompt) on unpaired images of every
time point; it is then frozen. Stage 2 trains what the NAC paper trains - the ControlNet, the
prompt tokens and (config ``train_unet_decoder``) the UNet decoder - on (T0, target, factors)
triples whose target time is drawn per sample (T0 -> T0 identity pairs included), with the
same random flips / 90-degree rotations applied to input and target. The clinical context is
replaced by the empty prompt with probability ``cond_drop_prob`` so that classifier-free
guidance has an unconditional branch.

Two stage-2 options exist because the clinical effect is small in pixels (config
``training.stage2``): ``tumour_weight`` multiplies the loss inside the tumour (the union of the
T0 and target masks, grown by ``tumour_margin`` pixels) so that a tumour of a few pixels is
not drowned by the rest of the image, and ``balance`` names a conditioning variable (breast:
``pCR``) whose values are drawn equally often, so a minority outcome is seen as often as the
majority. ``time_weights`` (one relative weight per time point, e.g. ``[1, 2, 1]``) draws the
target visits of stage 2 unequally, for a time point whose effect the model has learnt worst
(breast T1, where the response is half-way). ``counterfactual_pairs`` trains on both outcomes
of every patient side by side: each drawn patient fills two places of the batch, its factual
follow-up and its counterfactual one (the same patient rendered under the other outcome), with
the same time point, flips, timestep and noise, so the only difference between the two is the
outcome. A small per-patient effect (breast T1: a few pixels between pCR and non-pCR) is then
learnt from exact contrasts rather than across patients whose anatomy differs more than the
effect. Stage 2 can also start from a trained model (``init_from``), which skips stage 1.

A model that generates the change (config ``target: change``) learns, in both stages, the
encoding of the target visit minus that of the pre-treatment image (stage 1: unconditional
changes from T0 to a drawn visit). ``training.loss_weighting: min_snr`` weights each sample's
loss by min(SNR, ``min_snr_gamma``) over its timestep's SNR (+1 for v-prediction), which
stops the nearly noise-free timesteps from dominating the gradient.

`accelerate` runs it on one CPU, one GPU or many (``accelerate launch``, docs/training.md).
Every random draw of a step comes from a generator seeded with (seed, stage, step), so a
resumed run continues exactly as an uninterrupted one. With N processes, every process draws
the whole global batch (N x the per-process batch size) from that generator and trains on its
own slice of it (process k: samples k*B ... (k+1)*B - 1); the gradients are averaged over the
processes, so N processes with batch B take the same steps as one process with batch N*B (up
to floating-point summation order). Only the main process writes (loss log, plot, resume
state, model folder). Resume state (weights + optimizer moments + step) is written as
safetensors + JSON, does not depend on the number of processes (a run can be resumed with
another), and nothing is pickled.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import platform
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from ...core.atomic import atomic_directory, atomic_path, write_json_atomic
from ...core.errors import InputError
from .checkpoint import SAMPLING_DEFAULTS, load_checkpoint, save_checkpoint
from .config import validate_config
from .data import PairedCohort
from .losses import prediction_target, tumour_weights, weighted_mse
from .model import ControlledDiffusion, build_controlnet, generates_change

STATE = "train_state.json"


def augment(images: torch.Tensor, generator: torch.Generator,
            keep: slice | None = None, repeat: int = 1) -> torch.Tensor:
    """Same random flip + 90-degree rotation for all channels of each sample (B, C, H, W).

    ``keep``: transform and return only these samples; the draws are still made for every
    sample, so the random stream (and what the kept samples get) does not depend on it.
    ``repeat``: one draw serves this many consecutive samples (a counterfactual pair gets
    the same transform)."""
    out = []
    kept = range(len(images))[keep] if keep is not None else range(len(images))
    for i, sample in enumerate(images):
        if i % repeat == 0:
            k = int(torch.randint(0, 4, (1,), generator=generator))
            flip = bool(torch.randint(0, 2, (1,), generator=generator))
        if i not in kept:
            continue
        sample = torch.rot90(sample, k, dims=(-2, -1))
        out.append(torch.flip(sample, dims=(-1,)) if flip else sample)
    return torch.stack(out)


def scenario_of(cohort: PairedCohort, i: int, time_index: int,
                counterfactual: bool = False) -> dict[str, Any]:
    """The conditions of patient ``i`` at a time point: its own clinical values, or
    (``counterfactual``) those it was rendered under for its counterfactual follow-ups."""
    clinical = (cohort.cf_clinical[cohort.ids[i]] if counterfactual else cohort.clinical[i])
    return {"time": cohort.family.timepoint_names[time_index],
            **{v.name: clinical[v.name] for v in cohort.family.condition_variables}}


def _noisy(model, shape, g, repeat: int = 1):
    """Timesteps and noise of a batch of images of ``shape``, in the space the UNet denoises
    (the VAE latent of latent configurations). ``repeat``: one draw serves this many
    consecutive samples (a counterfactual pair shares its timestep and noise)."""
    from .model import latent_channels, latent_factor

    factor = latent_factor(model.config)
    n = shape[0] // repeat
    shape = (n, latent_channels(model.config), shape[-2] // factor, shape[-1] // factor)
    t = torch.randint(0, model.scheduler.config.num_train_timesteps, (n,), generator=g)
    noise = torch.randn(shape, generator=g)
    return t.repeat_interleave(repeat, 0), noise.repeat_interleave(repeat, 0)


def trains_vae(config: dict[str, Any]) -> bool:
    """A latent configuration whose VAE is not read from pretrained weights: stage 0 trains
    it here."""
    return bool(config.get("vae")) and not (config.get("weights") or {}).get("vae")


class _Stage0(nn.Module):
    """The VAE's loss: L1 reconstruction of [-1, 1] images + ``kl_weight`` x KL (summed over
    the latent, averaged over the batch). The posterior sample uses the caller's ``noise``,
    so that the step is a function of its seeded generator."""

    def __init__(self, model: ControlledDiffusion, kl_weight: float):
        super().__init__()
        self.model = model
        self.kl_weight = kl_weight

    def forward(self, images, noise):
        vae = self.model.vae
        x = images * 2.0 - 1.0
        if x.shape[1] != vae.config.in_channels:
            x = x.expand(-1, vae.config.in_channels, -1, -1)
        posterior = vae.encode(x).latent_dist
        z = posterior.mean + posterior.std * noise.to(posterior.mean)
        reconstruction = vae.decode(z).sample
        return (nn.functional.l1_loss(reconstruction.float(), x.float())
                + self.kl_weight * posterior.kl().mean())


@torch.no_grad()
def latent_scaling_factor(model: ControlledDiffusion, images: torch.Tensor) -> float:
    """1 / standard deviation of the VAE latents of ``images`` (B, 1, H, W) in [0, 1]."""
    model.config["vae"]["scaling_factor"] = 1.0
    latents = torch.cat([model.encode_images(images[i:i + 16])
                         for i in range(0, len(images), 16)])
    return float(1.0 / latents.float().std().clamp_min(1e-6))


class _Stage1(nn.Module):
    """The base denoiser alone, on single images (or, for a model that generates the change,
    on the change between a patient's pre-treatment image ``base`` and another visit)."""

    def __init__(self, model: ControlledDiffusion, min_snr_gamma: float | None = None):
        super().__init__()
        self.model = model
        self.min_snr_gamma = min_snr_gamma

    def forward(self, images, t, noise, null, base=None):
        m = self.model
        x0 = m.diffusion_sample(images, base)
        noise, t = noise.to(x0), t.to(x0.device)
        x_t = m.scheduler.add_noise(x0, noise, t)
        pred = m.base_denoise(x_t, t, null)
        goal = prediction_target(m.scheduler, x0, noise, t)
        per_sample = weighted_mse(pred.float(), goal.float(), None, reduce=False)
        return _timestep_weighted(m, per_sample, t, self.min_snr_gamma)


class _Stage2(nn.Module):
    def __init__(self, model: ControlledDiffusion, min_snr_gamma: float | None = None):
        super().__init__()
        self.model = model
        self.min_snr_gamma = min_snr_gamma

    def forward(self, control, target, codes, drop, t, noise, null, weight=None):
        m = self.model
        x0 = m.diffusion_sample(target, control)
        noise, t = noise.to(x0), t.to(x0.device)
        x_t = m.scheduler.add_noise(x0, noise, t)
        context = m.conditioner(codes)
        context = torch.where(drop.to(x0.device)[:, None, None], null, context)
        pred = m.denoise(x_t, t, context, null, m.control_input(control))
        goal = prediction_target(m.scheduler, x0, noise, t)
        per_sample = weighted_mse(pred.float(), goal.float(), weight, reduce=False)
        return _timestep_weighted(m, per_sample, t, self.min_snr_gamma)


def _timestep_weighted(model: ControlledDiffusion, per_sample: torch.Tensor, t: torch.Tensor,
                       gamma: float | None) -> torch.Tensor:
    """Mean of the per-sample losses, each weighted by min-SNR-gamma (Hang et al. 2023) when
    ``gamma`` is set: min(SNR, gamma) / SNR for epsilon targets, / (SNR + 1) for v targets.
    The SNR comes from diffusers' `compute_snr` (the one its training scripts use)."""
    if gamma is None:
        return per_sample.mean()
    from diffusers.training_utils import compute_snr

    snr = compute_snr(model.scheduler, t.cpu()).to(per_sample)
    clipped = torch.clamp(snr, max=float(gamma))
    if model.scheduler.config.prediction_type == "v_prediction":
        w = clipped / (snr + 1.0)
    else:
        w = clipped / snr.clamp_min(1e-8)
    return (per_sample * w).mean()


def balanced_probabilities(cohort: PairedCohort, variable: str) -> torch.Tensor:
    """Per-patient draw probabilities giving every value of ``variable`` the same share."""
    names = [v.name for v in cohort.family.condition_variables]
    if variable not in names:
        raise InputError("training.stage2.balance", f"{variable!r} is not a conditioning "
                                                    f"variable of {cohort.family.name} "
                                                    f"(known: {', '.join(names)})")
    values = [cohort.clinical[i][variable] for i in range(len(cohort))]
    counts = {v: values.count(v) for v in set(values)}
    probs = torch.tensor([1.0 / (counts[v] * len(counts)) for v in values], dtype=torch.float64)
    return probs / probs.sum()


def time_probabilities(weights: Sequence[float] | None, timepoints: Sequence[str]
                       ) -> torch.Tensor | None:
    """Draw probabilities of the target time points from relative ``weights`` (one per time
    point; None: uniform draws, ``torch.randint`` as before)."""
    if weights is None:
        return None
    field = "training.stage2.time_weights"
    try:
        w = [float(v) for v in weights]
    except (TypeError, ValueError):
        raise InputError(field, f"{weights!r} is not a list of numbers") from None
    if len(w) != len(timepoints):
        raise InputError(field, f"{len(w)} weight(s) given for {len(timepoints)} time points "
                                f"({', '.join(timepoints)})")
    if any(not math.isfinite(v) or v < 0 for v in w) or sum(w) <= 0:
        raise InputError(field, f"{w} must be finite, not negative, and not all zero")
    probs = torch.tensor(w, dtype=torch.float64)
    return probs / probs.sum()


def _save_resume(folder: Path, model: ControlledDiffusion, optimizer, stage: int, step: int,
                 extra: dict) -> None:
    from safetensors.torch import save_file

    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    opt = optimizer.state_dict()
    for idx, state in opt["state"].items():
        for key, value in state.items():
            value = value if torch.is_tensor(value) else torch.tensor(value)
            tensors[f"opt.{idx}.{key}"] = value.detach().cpu().contiguous()
    # weights and state replace the previous checkpoint together: a write that fails midway
    # (a full disk) leaves the previous one whole, never new weights under an old step
    with atomic_directory(folder) as staging:
        save_file(tensors, str(staging / "resume.safetensors"))
        (staging / STATE).write_text(json.dumps(
            {"stage": stage, "step": step, "param_groups": opt["param_groups"], **extra},
            indent=1))


def _load_resume(folder: Path, model: ControlledDiffusion, make_optimizer):
    from safetensors.torch import load_file

    state = json.loads((folder / STATE).read_text())
    tensors = load_file(str(folder / "resume.safetensors"))
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")},
                          strict=True)
    optimizer = make_optimizer(state["stage"])
    opt_state: dict[int, dict] = {}
    for key, value in tensors.items():
        if key.startswith("opt."):
            _, idx, name = key.split(".", 2)
            opt_state.setdefault(int(idx), {})[name] = value
    optimizer.load_state_dict({"state": opt_state, "param_groups": state["param_groups"]})
    return state, optimizer


def _lr_at(step: int, base: float, warmup: int, total: int) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return base * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))


@dataclasses.dataclass
class _Settings:
    """The training settings of one run: the config's ``training`` section, overridden by
    the arguments of `train`. Stage 0 appears in ``lrs`` and ``bs`` only when this run
    trains the VAE (the card and the resume state name only the stages a run has)."""

    steps: dict[int, int]
    lrs: dict[int, float]
    bs: dict[int, int]            # per process
    kl_weight: float
    drop_p: float
    tumour_weight: float
    tumour_margin: int
    balance: str | None
    time_weights: list[float] | None
    pairs: bool                   # counterfactual pairs in stage 2
    weighting: str
    min_snr_gamma: float | None
    with_vae: bool
    change: bool


def _settings(config: dict[str, Any], *, init_from: Path | None, stage1_steps: int | None,
              stage2_steps: int | None, batch_size: int | None,
              vae_steps: int | None) -> _Settings:
    tcfg = config.get("training", {})
    s0 = {**tcfg.get("vae", {})}
    s1 = {**tcfg.get("stage1", {})}
    s2 = {**tcfg.get("stage2", {})}
    with_vae = trains_vae(config) and init_from is None
    steps = {0: int(vae_steps if vae_steps is not None else s0.get("steps", 1000))
             if with_vae else 0,
             1: int(stage1_steps if stage1_steps is not None else s1.get("steps", 1000)),
             2: int(stage2_steps if stage2_steps is not None else s2.get("steps", 2000))}
    if init_from is not None:  # stage 2 continues from a trained model: no stage 1
        steps[1] = 0
    lrs = {0: float(s0.get("lr", 1e-3)), 1: float(s1.get("lr", 5e-4)),
           2: float(s2.get("lr", 5e-4))}
    bs = {0: int(batch_size or s0.get("batch_size", 8)),
          1: int(batch_size or s1.get("batch_size", 8)), 2: int(batch_size or s2.get("batch_size", 8))}
    if not with_vae:
        del lrs[0], bs[0]
    weighting = tcfg.get("loss_weighting") or "none"
    return _Settings(
        steps=steps, lrs=lrs, bs=bs, kl_weight=float(s0.get("kl_weight", 1e-6)),
        drop_p=float(s2.get("cond_drop_prob", 0.1)),
        tumour_weight=float(s2.get("tumour_weight", 0.0)),
        tumour_margin=int(s2.get("tumour_margin", 2)), balance=s2.get("balance"),
        time_weights=s2.get("time_weights"), pairs=bool(s2.get("counterfactual_pairs", False)),
        weighting=weighting,
        min_snr_gamma=float(tcfg.get("min_snr_gamma", 5.0)) if weighting == "min_snr" else None,
        with_vae=with_vae, change=generates_change(config))


def _start_model(config: dict[str, Any], init_from: Path | None) -> ControlledDiffusion:
    """A new model, or (``init_from``) a trained one whose architecture is ``config``'s."""
    if init_from is None:
        return ControlledDiffusion(config)
    model, start_card = load_checkpoint(init_from)
    model.train()
    _check_same_architecture(config, start_card["config"], init_from)
    # Same network; the new run's config (training and sampling settings) describes it.
    model.config = validate_config(config)
    return model


def _optimizer(model: ControlledDiffusion, stage: int, lr: float) -> torch.optim.Optimizer:
    """The optimizer of ``stage``. Only what the stage trains requires grad: many processes
    average the gradients of exactly those parameters (DistributedDataParallel expects every
    one to get one)."""
    model.requires_grad_(False)
    if stage == 0:
        model.vae.requires_grad_(True)
        params = list(model.vae.parameters())
    elif stage == 1:
        model.unet.requires_grad_(True)
        params = list(model.unet.parameters())
    else:
        for p in model.stage2_parameters():
            p.requires_grad_(True)
        params = model.stage2_parameters()
    return torch.optim.AdamW(params, lr=lr, weight_decay=0.0)


class _Run:
    """One call of `train`: the model, the data as tensors, the logs, and where the run
    stands (stage, step, optimizer). Its methods are the run's parts, in order: `resume`,
    `take_data`, `open_logs`, then `train_stage` per stage (made of `_draw`, `_loss`,
    `_log_step` and `_checkpoint` per step, and `_next_stage`), `close_logs`; `card` describes
    the result."""

    def __init__(self, model: ControlledDiffusion, out: Path, settings: _Settings,
                 accelerator, *, seed: int, log: Callable[[str], None], from_model: bool):
        self.model, self.out, self.s, self.accelerator = model, out, settings, accelerator
        self.seed, self.log, self.from_model = seed, log, from_model
        self.world, self.rank = accelerator.num_processes, accelerator.process_index
        self.main = accelerator.is_main_process
        self.stage = 2 if from_model else 0 if settings.with_vae else 1
        self.step = 0
        self.optimizer = None
        self.processes: list[dict] = []  # one entry per run of this training: start, processes
        self.timing: dict[str, float] = {}
        self.stopped_at: dict | None = None
        self.log_path = out / "loss_log.csv"
        self.log_file = self.writer = self.samples_file = self.samples_writer = None

    def make_optimizer(self, stage: int) -> torch.optim.Optimizer:
        return _optimizer(self.model, stage, self.s.lrs[stage])

    # --- setup ---------------------------------------------------------------------------
    def resume(self, resume: bool) -> None:
        """Continue from ``out/resume`` when it holds a state (and ``resume``); refuse
        processes that see different states; record this run's start."""
        out, world, bs = self.out, self.world, self.s.bs
        if resume and (out / "resume" / STATE).exists():
            state, self.optimizer = _load_resume(out / "resume", self.model, self.make_optimizer)
            self.stage, self.step = state["stage"], state["step"]
            if state.get("vae_scaling_factor") is not None:  # stage 0 finished earlier
                self.model.config["vae"]["scaling_factor"] = state["vae_scaling_factor"]
            self.processes = list(state.get("processes", []))
            self.log(f"resuming stage {self.stage} at step {self.step}")
            if self.processes and self.processes[-1]["num_processes"] != world:
                before = self.processes[-1]["effective_batch_size"][str(self.stage)]
                self.log(f"note: the checkpoint was written by "
                         f"{self.processes[-1]['num_processes']} process(es), this run has "
                         f"{world}" + (f": the effective batch size changes from {before} to "
                                       f"{bs[self.stage] * world}"
                                       if before != bs[self.stage] * world else ""))
        if world > 1:  # e.g. several machines, --out not on a folder they share
            from accelerate.utils import gather_object

            seen = gather_object([(self.stage, self.step)])
            if len(set(seen)) > 1:
                raise InputError(out / "resume", "the processes do not see the same resume "
                                 f"state (stage, step per process: {seen}); with several "
                                 "machines, --out must be a folder they all share")
        self.processes.append({"stage": self.stage, "step": self.step, "num_processes": world,
                               "effective_batch_size": {str(k): v * world
                                                        for k, v in bs.items()}})

    def take_data(self, data: PairedCohort) -> None:
        self.data = data
        self.images = torch.from_numpy(data.images).float()  # (N, T, H, W)
        self.masks = torch.from_numpy(data.masks > 0).float()
        self.draw_probs = balanced_probabilities(data, self.s.balance) if self.s.balance \
            else None
        self.time_probs = time_probabilities(self.s.time_weights, data.family.timepoint_names)
        self.codes_cache: dict[tuple[int, int, bool], torch.Tensor] = {}
        self.n, self.n_t = self.images.shape[0], self.images.shape[1]
        if self.s.pairs and self.s.steps[2]:
            field = "training.stage2.counterfactual_pairs"
            missing = [i for i in data.ids if i not in data.cf_images]
            if missing:
                raise InputError(field, f"{len(missing)} of {self.n} training patients have no "
                                        f"counterfactual follow-ups (first: {missing[0]}); "
                                        "prepare them with the counterfactual")
            if self.s.bs[2] % 2:
                raise InputError(field, f"the stage-2 batch size ({self.s.bs[2]} per process) "
                                        "must be even: each patient fills two places")
            self.cf_images = torch.from_numpy(
                np.stack([data.cf_images[i] for i in data.ids])).float()
            self.cf_masks = torch.from_numpy(
                np.stack([data.cf_masks[i] for i in data.ids]) > 0).float()

    def open_logs(self, sample_log: bool) -> None:
        """The loss log (main process) and, with ``sample_log``, this process's log of what
        it drew. A resumed run redoes the steps after its checkpoint: their rows are
        dropped, then logged again."""
        stage, step, first = self.stage, self.step, min(steps_order(self.s.steps))
        if self.main:
            new_log = not self.log_path.exists() or step == 0 and stage == first
            if not new_log:
                _trim_log(self.log_path, stage, step)
            self.log_file = open(self.log_path, "w" if new_log else "a", newline="")
            self.writer = csv.writer(self.log_file)
            if new_log:
                self.writer.writerow(["stage", "step", "loss", "lr", "seconds"])
        if sample_log:
            path = self.out / "samples" / f"rank{self.rank}.csv"
            path.parent.mkdir(parents=True, exist_ok=True)
            fresh = not path.exists() or step == 0 and stage == first
            if not fresh:
                _trim_log(path, stage, step)
            self.samples_file = open(path, "w" if fresh else "a", newline="")
            self.samples_writer = csv.writer(self.samples_file)
            if fresh:
                self.samples_writer.writerow(["stage", "step", "num_processes", "patients",
                                              "times"])
        self.started = time.time()

    def close_logs(self) -> None:
        for handle in (self.log_file, self.samples_file):
            if handle is not None:
                handle.close()

    # --- one stage -----------------------------------------------------------------------
    def train_stage(self, checkpoint_every: int, stop_at: float | None,
                    progress: bool) -> None:
        """Steps of the current stage from the current step to its end, or to the first
        checkpoint after the deadline (``stopped_at`` is then set); then on to the next
        stage."""
        from tqdm import tqdm

        model, s, stage = self.model, self.s, self.stage
        total = s.steps[stage]
        if self.step == 0 and stage == 2 and not self.from_model:
            # The ControlNet starts as a copy of the trained base encoder (zero convs).
            model.controlnet = build_controlnet(model.config, model.unet)
            self.optimizer = None
        if self.optimizer is None:
            self.optimizer = self.make_optimizer(stage)
        wrapper = (_Stage0(model, s.kl_weight) if stage == 0 else
                   _Stage1(model, s.min_snr_gamma) if stage == 1 else
                   _Stage2(model, s.min_snr_gamma))
        wrapper, opt = self.accelerator.prepare(wrapper, self.optimizer)
        device = self.accelerator.device
        null = model.conditioner.null_context(s.bs[stage]).to(device) if stage else None
        # Every process draws the global batch; this one trains on its slice of it.
        n_global = s.bs[stage] * self.world
        mine = slice(self.rank * s.bs[stage], (self.rank + 1) * s.bs[stage])
        bar = tqdm(total=total, initial=self.step, desc=f"stage {stage}",
                   disable=not (progress and self.main))
        t_stage = time.time()
        while self.step < total:
            for group in opt.param_groups:
                group["lr"] = _lr_at(self.step, s.lrs[stage], min(100, total // 10 + 1), total)
            g, idx, tp = self._draw(n_global)
            loss = self._loss(wrapper, g, idx, tp, null, n_global, mine, device)
            self.accelerator.backward(loss)
            self.accelerator.clip_grad_norm_([p for g_ in opt.param_groups
                                              for p in g_["params"]], 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            self.step += 1
            # the loss of the global batch (one value for every process)
            value = float(self.accelerator.reduce(loss.detach(), "mean"))
            self._log_step(value, idx[mine], tp[mine], opt)
            bar.update(1)
            bar.set_postfix(loss=f"{value:.4f}")
            if self.step % checkpoint_every == 0 or self.step == total:
                if self._checkpoint(total, stop_at, device):
                    break
        bar.close()
        if self.stopped_at is None:
            self.timing[f"stage{stage}_seconds_this_run"] = round(time.time() - t_stage, 1)
            self._next_stage(device)

    def _draw(self, n_global: int):
        """The step's generator, seeded by (seed, stage, step), and the global batch's
        patients and time points drawn from it."""
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.stage * 100_003
                                          + self.step)
        per = self._per_patient()
        n = n_global // per
        if self.stage == 2 and self.draw_probs is not None:
            idx = torch.multinomial(self.draw_probs, n, replacement=True, generator=g)
        else:
            idx = torch.randint(0, self.n, (n,), generator=g)
        if self.stage == 2 and self.time_probs is not None:
            tp = torch.multinomial(self.time_probs, n, replacement=True, generator=g)
        else:
            tp = torch.randint(0, self.n_t, (n,), generator=g)
        return g, idx.repeat_interleave(per), tp.repeat_interleave(per)

    def _per_patient(self) -> int:
        """Places of the batch each drawn patient fills: 2 (factual, counterfactual) in stage
        2 with counterfactual pairs, else 1."""
        return 2 if self.stage == 2 and self.s.pairs else 1

    def _loss(self, wrapper, g, idx, tp, null, n_global: int, mine: slice, device):
        """The loss of this process's slice of the global batch: stage 0 the VAE's, stage 1
        the base denoiser's (of the change from T0, for a change model), stage 2 the
        ControlNet's on (T0, target) pairs with their masks. The rest of the step's draws
        (flips, timesteps, noise, dropped contexts) come from ``g`` in this order."""
        model, s, images, masks = self.model, self.s, self.images, self.masks
        if self.stage == 0:
            batch = augment(images[idx, tp][:, None], g, mine)
            factor = 2 ** (len(model.vae.config.block_out_channels) - 1)
            shape = (n_global, model.vae.config.latent_channels,
                     batch.shape[-2] // factor, batch.shape[-1] // factor)
            return wrapper(batch.to(device), torch.randn(shape, generator=g)[mine])
        if self.stage == 1 and s.change:  # the change from T0 to the drawn visit
            pair = augment(torch.stack([images[idx, 0], images[idx, tp]], 1), g, mine)
            t, noise = _noisy(model, (n_global, 1, *pair.shape[2:]), g)
            return wrapper(pair[:, 1:2].to(device), t[mine], noise[mine], null,
                           pair[:, :1].to(device))
        if self.stage == 1:
            batch = augment(images[idx, tp][:, None], g, mine)
            t, noise = _noisy(model, (n_global, *batch.shape[1:]), g)
            return wrapper(batch.to(device), t[mine], noise[mine], null)
        per = self._per_patient()
        # with pairs, every second place is the counterfactual follow-up of the one before
        arm = (torch.arange(n_global) % per).bool()
        target_images, target_masks = images[idx, tp], masks[idx, tp]
        if per == 2:
            target_images = torch.where(arm[:, None, None], self.cf_images[idx, tp],
                                        target_images)
            target_masks = torch.where(arm[:, None, None], self.cf_masks[idx, tp], target_masks)
        pair = augment(torch.stack([images[idx, 0], target_images,
                                    masks[idx, 0], target_masks], 1), g, mine, repeat=per)
        control, target = pair[:, :1].to(device), pair[:, 1:2].to(device)
        weight = (tumour_weights(pair[:, 2:], s.tumour_weight, s.tumour_margin)
                  .to(device) if s.tumour_weight > 0 else None)
        keys = [(int(i), int(j), bool(a)) for i, j, a in zip(idx[mine], tp[mine], arm[mine])]
        for key in keys:
            if key not in self.codes_cache:
                self.codes_cache[key] = model.conditioner.tokens.encode_values(
                    [scenario_of(self.data, *key)])[0]
        codes = torch.stack([self.codes_cache[k] for k in keys])
        drop = (torch.rand(n_global // per, generator=g) < s.drop_p).repeat_interleave(per)[mine]
        t, noise = _noisy(model, (n_global, *target.shape[1:]), g, repeat=per)
        return wrapper(control, target, codes, drop, t[mine], noise[mine], null, weight)

    def _log_step(self, value: float, idx, tp, opt) -> None:
        """One row of the loss log (main process) and of the samples log (``idx``, ``tp``:
        what this process trained on)."""
        if self.samples_file is not None:
            self.samples_writer.writerow(
                [self.stage, self.step, self.world,
                 " ".join(self.data.ids[int(i)] for i in idx),
                 " ".join(self.data.family.timepoint_names[int(j)] for j in tp)])
        if self.main:
            self.writer.writerow([self.stage, self.step, f"{value:.6f}",
                                  f"{opt.param_groups[0]['lr']:.3g}",
                                  f"{time.time() - self.started:.1f}"])

    def _resume_extra(self) -> dict[str, Any]:
        return {"seed": self.seed, "processes": self.processes,
                "vae_scaling_factor": _vae_scale(self.model)}

    def _checkpoint(self, total: int, stop_at: float | None, device) -> bool:
        """Save the resume state (main process); True when the deadline stops the run here
        (every process must stop at the same step: the deadline is agreed on)."""
        if self.main:
            self.log_file.flush()
            _save_resume(self.out / "resume", self.model, self.optimizer, self.stage,
                         self.step, self._resume_extra())
        late = torch.tensor(float(stop_at is not None and time.time() >= stop_at))
        if self.step < total and float(self.accelerator.reduce(late.to(device), "sum")) > 0:
            self.stopped_at = {"stage": self.stage, "step": self.step, "of": total}
            self.log(f"deadline reached: stopped at stage {self.stage} step {self.step} of "
                     f"{total}; the checkpoint is saved and the same command resumes")
            return True
        return False

    def _next_stage(self, device) -> None:
        """After stage 0 the VAE is frozen and its latents scaled to unit spread; the next
        stage starts at step 0 with a fresh optimizer (saved, so that a resume starts it)."""
        model = self.model
        if self.stage == 0:
            model.vae.requires_grad_(False)
            images = self.images
            model.config["vae"]["scaling_factor"] = latent_scaling_factor(
                model, images[:, :].reshape(-1, 1, *images.shape[2:])[:256].to(device))
            self.log(f"VAE trained; latent scaling factor "
                     f"{model.config['vae']['scaling_factor']:.4f}")
        self.stage, self.step, self.optimizer = self.stage + 1, 0, None
        if self.stage in (1, 2) and self.main:
            _save_resume(self.out / "resume", model, self.make_optimizer(self.stage),
                         self.stage, 0, self._resume_extra())

    # --- the result ----------------------------------------------------------------------
    def card(self, config: dict[str, Any], card: dict[str, Any] | None,
             losses: dict[str, float]) -> dict[str, Any]:
        """The model card: the caller's ``card`` plus how this model was trained."""
        s, accelerator, world = self.s, self.accelerator, self.world
        return {
            **(card or {}),
            "training": {**(card or {}).get("training", {}),
                         "seed": self.seed, "stage1_steps": s.steps[1],
                         "stage2_steps": s.steps[2],
                         **({"vae": {"steps": s.steps[0], "kl_weight": s.kl_weight,
                                     "learning_rate": s.lrs[0], "batch_size": s.bs[0],
                                     "scaling_factor": _vae_scale(self.model),
                                     "note": "diffusers AutoencoderKL trained here (stage 0): "
                                             "L1 reconstruction + kl_weight x KL"}}
                            if s.with_vae else {}),
                         "batch_size": s.bs, "learning_rate": s.lrs,
                         "cond_drop_prob": s.drop_p,
                         "tumour_weight": s.tumour_weight, "tumour_margin": s.tumour_margin,
                         "loss_weighting": s.weighting,
                         **({"min_snr_gamma": s.min_snr_gamma} if s.min_snr_gamma else {}),
                         "target": config.get("target", "image"),
                         "pixel_fold": config.get("pixel_fold", 1),
                         "balance": s.balance,
                         **({"time_weights": s.time_weights} if s.time_weights else {}),
                         **({"counterfactual_pairs": True} if s.pairs else {}),
                         "device": str(accelerator.device),
                         "num_processes": world,
                         "distributed_type": str(accelerator.distributed_type.value),
                         "effective_batch_size": {k: v * world for k, v in s.bs.items()},
                         "batch_size_note": "batch_size is per process; effective_batch_size "
                                            "= batch_size x num_processes",
                         "processes_per_run": self.processes,
                         "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
                         "torch": torch.__version__, **self.timing,
                         **({"stopped_at": self.stopped_at,
                             "stopped_note": "stopped by its deadline before the end of "
                                             "the schedule; resuming continues it"}
                            if self.stopped_at else {}),
                         "final_loss": losses},
        }


def train(config: dict[str, Any], train_data: PairedCohort, out: Path, *, seed: int = 0,
          stage1_steps: int | None = None, stage2_steps: int | None = None,
          batch_size: int | None = None, checkpoint_every: int = 200, resume: bool = True,
          cpu: bool = False, card: dict[str, Any] | None = None,
          init_from: Path | None = None, sample_log: bool = False,
          vae_steps: int | None = None, stop_at: float | None = None,
          progress: bool = True, log: Callable[[str], None] = print) -> Path:
    """Run (or resume) both stages; write ``out/model`` (safetensors + card), the loss log
    (``loss_log.csv``) and plot (``loss_curve.png``). Returns the model folder.

    ``batch_size`` (and the config's) is per process: N processes train on batches of N times
    that size (the model card records both). ``init_from``: a trained model folder (hashes
    verified) whose architecture matches ``config``; training then continues stage 2 from its
    weights (stage 1 is skipped), with the stage-2 settings of ``config``. ``sample_log``:
    every process also writes the patients and time points it drew at each step to
    ``out/samples/rank<k>.csv`` (to check how the data is shared out). ``vae_steps``: steps
    of stage 0 (the config's ``training.vae.steps`` otherwise; latent configurations whose VAE
    is trained here only). ``stop_at``: a ``time.time()`` deadline; at the first checkpoint
    after it the run saves its resume state, writes the model as it stands (the card says where
    it stopped) and returns; the same call resumes it to the end."""
    from accelerate import Accelerator

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    settings = _settings(config, init_from=init_from, stage1_steps=stage1_steps,
                         stage2_steps=stage2_steps, batch_size=batch_size, vae_steps=vae_steps)
    accelerator = Accelerator(cpu=cpu)
    main = accelerator.is_main_process
    if not main:
        log = lambda message: None  # noqa: E731 - one voice: the main process's
    torch.manual_seed(seed)
    model = _start_model(config, init_from)
    run = _Run(model, out, settings, accelerator, seed=seed, log=log,
               from_model=init_from is not None)
    run.resume(resume)
    run.take_data(train_data)
    run.open_logs(sample_log)
    try:
        while run.stage <= 2 and run.stopped_at is None:
            run.train_stage(checkpoint_every, stop_at, progress)
    finally:
        run.close_logs()
    model_dir = out / "model"
    if run.stopped_at is not None and run.stopped_at["stage"] < 2:
        # before stage 2 there is no ControlNet to write: the checkpoint is the whole result
        log("no model written before stage 2; run the same command again to continue")
        accelerator.wait_for_everyone()
        return out / "resume"
    if main:
        losses = _plot_losses(run.log_path, out / "loss_curve.png")
        save_checkpoint(model.to("cpu"), model_dir, run.card(config, card, losses))
    accelerator.wait_for_everyone()  # every process returns once the model is written
    return model_dir


def steps_order(steps: dict[int, int]) -> list[int]:
    """The stages this run has (stage 0 only for a VAE trained here)."""
    return [k for k in sorted(steps) if k > 0 or steps[k] > 0]


def _vae_scale(model: ControlledDiffusion) -> float | None:
    return float(model.config["vae"].get("scaling_factor", 1.0)) if model.vae is not None \
        else None


def _trim_log(path: Path, stage: int, step: int) -> None:
    """Drop the rows of a CSV log (``stage``, ``step`` columns) after (stage, step): a resumed
    run redoes the steps after its checkpoint, and logs them again."""
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    if not rows:
        return
    header, body = rows[0], rows[1:]
    s_col, t_col = header.index("stage"), header.index("step")
    keep = [r for r in body if (int(r[s_col]), int(r[t_col])) <= (stage, step)]
    if len(keep) < len(body):
        with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
            csv.writer(fh).writerows([header, *keep])


def _check_same_architecture(config: dict[str, Any], start: dict[str, Any], folder) -> None:
    """Everything but the training and sampling settings must match the model training
    starts from."""
    free = ("training", "description", "weights", *SAMPLING_DEFAULTS)
    ours = {k: v for k, v in config.items() if k not in free}
    theirs = {k: v for k, v in start.items() if k not in free}
    differ = sorted(k for k in set(ours) | set(theirs) if ours.get(k) != theirs.get(k))
    if differ:
        raise InputError(folder, f"cannot start from this model: its config differs in "
                                 f"{', '.join(differ)}")


def _plot_losses(log_path: Path, png: Path) -> dict[str, float]:
    """Loss curve per stage (moving average); returns the last averaged loss of each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(csv.DictReader(open(log_path)))
    final = {}
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    for ax, stage in zip(axes, ("1", "2")):
        vals = np.array([float(r["loss"]) for r in rows if r["stage"] == stage])
        if vals.size:
            k = max(1, min(50, vals.size // 10))
            smooth = np.convolve(vals, np.ones(k) / k, mode="valid")
            ax.plot(vals, alpha=0.3, lw=0.7)
            ax.plot(np.arange(k - 1, vals.size), smooth, lw=1.5)
            final[f"stage{stage}"] = round(float(smooth[-1]), 5)
        ax.set_title(f"stage {stage} ({'base denoiser' if stage == '1' else 'ControlNet + tokens'})")
        ax.set_xlabel("step")
        ax.set_ylabel("MSE loss")
        ax.set_yscale("log")
    fig.tight_layout()
    with atomic_path(png) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
    return final
