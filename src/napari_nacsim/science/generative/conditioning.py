"""The paper's conditioning: one learned token per clinical factor, read through a frozen
OpenCLIP text transformer (prompt tuning).

Factors come from the family schema: the target time point (its time points) and every
variable that conditions the model (binary: 2 states, categorical: its categories,
continuous: a scalar mapped through its plausible range). Each factor is an embedding ->
LayerNorm -> Linear to the text width. The token sequence is
``[factor tokens..., SOT, EOT, pad...]`` (the tokenisation of the empty prompt after the
learned tokens), plus the positional embedding, through the causal text transformer; the
cross-attention context is the output of the **penultimate** block after ``ln_final``
(as Stable Diffusion 2.x uses its OpenCLIP ViT-H/14 tower). The unconditional (null)
context is the empty prompt encoded the same way.

open_clip >= 2.26 is batch-first: no ``permute(1, 0, 2)`` here (the old ldm code needed one).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from ...core.errors import InputError
from ...core.schema import BINARY, CATEGORICAL, CONTINUOUS, FamilySchema

TIME_FACTOR = "time"

# The text tower of the bundled tiny models: an OpenCLIP text transformer of the ViT-H/14
# layout (causal, penultimate output), scaled down; registered with open_clip under this name.
TINY_TEXT_MODEL = "nacsim-tiny-text"


def register_tiny_text_config(text_cfg: Mapping[str, Any], name: str = TINY_TEXT_MODEL) -> str:
    """Register an open_clip model config (text tower from ``text_cfg``, a minimal vision
    tower that is never built by us) so that ``open_clip.get_model_config(name)`` knows it."""
    import json
    import tempfile

    import open_clip

    if open_clip.get_model_config(name) is not None:
        return name
    config = {"embed_dim": int(text_cfg.get("embed_dim", text_cfg["width"])),
              "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "patch_size": 16},
              "text_cfg": {k: v for k, v in text_cfg.items() if k != "embed_dim"}}
    folder = Path(tempfile.mkdtemp(prefix="nacsim-openclip-"))
    (folder / f"{name}.json").write_text(json.dumps(config))
    open_clip.add_model_config(folder)
    return name


class FrozenOpenCLIPText(nn.Module):
    """The text transformer of an open_clip model, without its vision tower, frozen."""

    def __init__(self, model_name: str, text_cfg: Mapping[str, Any] | None = None):
        super().__init__()
        import open_clip
        from open_clip.model import _build_text_tower

        if text_cfg is not None:
            register_tiny_text_config(text_cfg, model_name)
        config = open_clip.get_model_config(model_name)
        if config is None:
            raise InputError("text tower", f"open_clip has no model config {model_name!r}")
        self.model_name = model_name
        self.tower = _build_text_tower(config["embed_dim"], config["text_cfg"],
                                       quick_gelu=config.get("quick_gelu", False))
        self.context_length = int(self.tower.context_length)
        self.width = int(self.tower.width)
        self.requires_grad_(False)
        self.eval()

    # open_clip checkpoints hold the text tower at the top level of the CLIP state dict.
    _TEXT_KEYS = ("token_embedding.", "positional_embedding", "transformer.", "ln_final.",
                  "text_projection", "attn_mask")

    def load_open_clip_state(self, state: Mapping[str, torch.Tensor], subject: str) -> None:
        """Load the text weights out of a full open_clip state dict (vision keys ignored)."""
        text = {k: v for k, v in state.items() if k.startswith(self._TEXT_KEYS)}
        text = {k[len("text."):] if k.startswith("text.") else k: v for k, v in text.items()}
        own = self.tower.state_dict()
        missing = sorted(k for k in own if k not in text and k != "attn_mask")
        if missing:
            raise InputError(subject, f"is not an open_clip {self.model_name} checkpoint "
                                      f"(missing text weight {missing[0]!r})")
        for key, value in text.items():
            if key in own and own[key].shape != value.shape:
                raise InputError(subject, f"weight {key!r} has shape {tuple(value.shape)}, "
                                          f"{self.model_name} expects {tuple(own[key].shape)}")
        self.tower.load_state_dict({k: v for k, v in text.items() if k in own}, strict=False)

    def empty_tokens(self, length: int) -> torch.Tensor:
        """Token ids of the empty prompt, ``[SOT, EOT, 0, ...]``, of ``length``."""
        import open_clip

        return open_clip.tokenize([""], context_length=length)[0]

    def encode(self, prefix: torch.Tensor | None, batch: int = 1) -> torch.Tensor:
        """Context for cross-attention: ``prefix`` (B, F, width) learned tokens (or None for
        the empty prompt) + the empty prompt's tokens, penultimate block, ``ln_final``."""
        tower = self.tower
        n_prefix = 0 if prefix is None else prefix.shape[1]
        batch = batch if prefix is None else prefix.shape[0]
        device = tower.positional_embedding.device
        ids = self.empty_tokens(self.context_length - n_prefix).to(device)
        x = tower.token_embedding(ids)[None].expand(batch, -1, -1)
        if prefix is not None:
            x = torch.cat([prefix.to(x.dtype), x], dim=1)
        x = x + tower.positional_embedding
        mask = tower.attn_mask.to(device) if tower.attn_mask is not None else None
        blocks = tower.transformer.resblocks
        for block in blocks[:-1]:   # penultimate block output, as SD 2.x does
            x = block(x, attn_mask=mask)
        return tower.ln_final(x)


class PromptTokens(nn.Module):
    """One learned token per factor (target time + the schema's conditioning variables)."""

    def __init__(self, schema: FamilySchema, width: int, embed_dim: int = 64):
        super().__init__()
        self.schema = schema
        self.factors: list[tuple[str, str, tuple]] = [(TIME_FACTOR, CATEGORICAL,
                                                       schema.timepoint_names)]
        for var in schema.condition_variables:
            if var.kind == BINARY:
                self.factors.append((var.name, BINARY, (False, True)))
            elif var.kind == CATEGORICAL:
                self.factors.append((var.name, CATEGORICAL, var.categories))
            elif var.kind == CONTINUOUS:
                self.factors.append((var.name, CONTINUOUS, var.plausible or (0.0, 1.0)))
        self.embed = nn.ModuleDict()
        for name, kind, states in self.factors:
            first = (nn.Linear(1, embed_dim) if kind == CONTINUOUS
                     else nn.Embedding(len(states), embed_dim))
            self.embed[name] = nn.Sequential(first, nn.LayerNorm(embed_dim),
                                             nn.Linear(embed_dim, width))

    @property
    def names(self) -> list[str]:
        return [f[0] for f in self.factors]

    def encode_values(self, scenarios: Sequence[Mapping[str, Any]]) -> torch.Tensor:
        """Scenarios -> (B, F) float codes (state index, or scaled value)."""
        rows = []
        for k, scenario in enumerate(scenarios):
            scenario = normalise_scenario(self.schema, scenario, f"scenario {k + 1}")
            row = []
            for name, kind, states in self.factors:
                value = scenario[name]
                if kind == CONTINUOUS:
                    lo, hi = states
                    row.append((float(value) - lo) / (hi - lo))
                else:
                    row.append(float(states.index(value)))
            rows.append(row)
        return torch.tensor(rows, dtype=torch.float32)

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        device = next(self.parameters()).device
        codes = codes.to(device)
        tokens = []
        for j, (name, kind, _) in enumerate(self.factors):
            inp = codes[:, j:j + 1] if kind == CONTINUOUS else codes[:, j].long()
            tokens.append(self.embed[name](inp))
        return torch.stack(tokens, dim=1)


def normalise_scenario(schema: FamilySchema, scenario: Mapping[str, Any],
                       subject: str = "scenario") -> dict[str, Any]:
    """Validate a scenario: the target ``time`` and every conditioning variable."""
    scenario = dict(scenario)
    if TIME_FACTOR not in scenario:
        raise InputError(f"{subject}: field '{TIME_FACTOR}'",
                         f"is missing (one of {', '.join(schema.timepoint_names)})")
    time = str(scenario.pop(TIME_FACTOR)).strip()
    lookup = {t.lower(): t for t in schema.timepoint_names}
    if time.lower() not in lookup:
        raise InputError(f"{subject}: field '{TIME_FACTOR}'", f"= {time!r} is not one of "
                                                              f"{', '.join(schema.timepoint_names)}")
    needed = {v.name for v in schema.condition_variables}
    values = {k: v for k, v in scenario.items()}
    clinical = schema.validate_clinical(values, subject=subject, partial=True)
    missing = sorted(needed - set(clinical))
    if missing:
        raise InputError(f"{subject}: field '{missing[0]}'", "is missing")
    # an outcome given with the scenario (lung: the response a sample was drawn or fixed to
    # show) is kept for a generator that takes it as an input (`generative.outcome`)
    outcomes = {v.name: clinical[v.name] for v in schema.variables
                if v.outcome and not v.conditions_model and v.kind != CONTINUOUS
                and v.name in clinical}
    return {TIME_FACTOR: lookup[time.lower()],
            **{k: clinical[k] for k in (v.name for v in schema.condition_variables)},
            **outcomes}


class Conditioner(nn.Module):
    """Scenarios -> cross-attention context (learned tokens through the frozen text tower)."""

    def __init__(self, schema: FamilySchema, text: FrozenOpenCLIPText, embed_dim: int = 64):
        super().__init__()
        self.text = text
        self.tokens = PromptTokens(schema, text.width, embed_dim)

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        return self.text.encode(self.tokens(codes))

    def context(self, scenarios: Sequence[Mapping[str, Any]]) -> torch.Tensor:
        return self(self.tokens.encode_values(scenarios))

    @torch.no_grad()
    def null_context(self, batch: int = 1) -> torch.Tensor:
        """The empty prompt: what the frozen base UNet sees, and CFG's unconditional branch."""
        return self.text.encode(None, batch)
