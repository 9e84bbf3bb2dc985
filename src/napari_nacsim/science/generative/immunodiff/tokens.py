"""Clinical values -> one token per conditioning variable, read from the family schema.

Encoding (all from the schema, so a new variable is a one-place change):
- continuous: v = tanh((x - centre) / scale), centre and scale from the reference range
  (``normal``) where the schema has one, else from the plausible range (centre = middle,
  scale = width / 4); tanh bounds extreme values (CEA up to 10 000 ng/mL) without clipping
  away their order. Token = a per-variable affine map of v, then a shared SiLU + linear.
- categorical / yes-no: an embedding table per variable.
- missing: every variable has its own learned "missing" embedding in place of the value
  (never a silent 0, which would read as a real value). The same embeddings form the null
  condition of classifier-free guidance (all variables missing).
- every token adds a learned embedding of the variable's identity.
- outcomes (e.g. the response) are not conditions of the paper's model: it must learn their
  probability implicitly. A config may name outcome variables as inputs
  (``adapter.outcome_input``): they come last, each in the group "outcome", and their
  "missing" embedding means "not given" (the implicit mode of the same network).
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from ....core.schema import BINARY, CATEGORICAL, CONTINUOUS, FamilySchema, Variable


def model_variables(schema: FamilySchema, outcome_input: Sequence[str] = ()) -> list[Variable]:
    """The variables the model is conditioned on: the baseline ones in schema order, then
    the outcomes named in ``outcome_input`` (appended, so that a model trained without them
    keeps its token rows when it is extended with them)."""
    baseline = [v for v in schema.condition_variables if v.conditions_model and not v.outcome]
    outcomes = []
    for name in outcome_input:
        var = schema.variable(name)
        if not var.outcome or var.kind not in (BINARY, CATEGORICAL):
            raise ValueError(f"outcome input {name!r} must be a yes/no or categorical "
                             f"outcome of the {schema.name} schema")
        outcomes.append(var)
    return baseline + outcomes


def token_group(var: Variable) -> str:
    """The cbi-Adapter group of a variable's token: outcomes form a group of their own."""
    return "outcome" if var.outcome else (var.group or "clinical")


def continuous_scale(var: Variable) -> tuple[float, float]:
    if var.normal is not None:
        lo, hi = var.normal
        return (lo + hi) / 2, max(hi - lo, 1e-6)
    lo, hi = var.plausible or (0.0, 1.0)
    return (lo + hi) / 2, max((hi - lo) / 4, 1e-6)


class ClinicalTokens(nn.Module):
    def __init__(self, schema: FamilySchema, dim: int, outcome_input: Sequence[str] = ()):
        super().__init__()
        self.variables = model_variables(schema, outcome_input)
        n = len(self.variables)
        self.identity = nn.Parameter(torch.randn(n, dim) * 0.02)
        self.missing = nn.Parameter(torch.randn(n, dim) * 0.02)
        self.cont_weight = nn.Parameter(torch.randn(n, dim) / math.sqrt(dim))
        self.cont_bias = nn.Parameter(torch.zeros(n, dim))
        self.tables = nn.ModuleDict()
        for var in self.variables:
            if var.kind in (CATEGORICAL, BINARY):
                size = len(var.categories) if var.kind == CATEGORICAL else 2
                self.tables[var.name] = nn.Embedding(size, dim)
        self.mix = nn.Sequential(nn.SiLU(), nn.Linear(dim, dim))
        self.dim = dim

    def encode(self, scenarios: Sequence[Mapping[str, Any]]) -> tuple[torch.Tensor, ...]:
        """Scenarios -> (values (B, n) for continuous variables, codes (B, n) for the
        others, present (B, n) bool). A value of None or an absent key is missing."""
        b, n = len(scenarios), len(self.variables)
        values = torch.zeros(b, n)
        codes = torch.zeros(b, n, dtype=torch.long)
        present = torch.zeros(b, n, dtype=torch.bool)
        for i, scenario in enumerate(scenarios):
            for j, var in enumerate(self.variables):
                value = scenario.get(var.name)
                if value is None:
                    continue
                present[i, j] = True
                if var.kind == CONTINUOUS:
                    centre, scale = continuous_scale(var)
                    values[i, j] = math.tanh((float(value) - centre) / scale)
                elif var.kind == CATEGORICAL:
                    codes[i, j] = var.categories.index(str(value))
                else:
                    codes[i, j] = int(bool(value))
        return values, codes, present

    def forward(self, values: torch.Tensor, codes: torch.Tensor, present: torch.Tensor
                ) -> torch.Tensor:
        """-> tokens (B, n, dim)."""
        value_part = values[..., None] * self.cont_weight + self.cont_bias
        parts = []
        for j, var in enumerate(self.variables):
            if var.name in self.tables:
                parts.append(self.tables[var.name](codes[:, j]))
            else:
                parts.append(value_part[:, j])
        known = self.mix(torch.stack(parts, dim=1))
        token = torch.where(present[..., None], known, self.missing.expand_as(known))
        return token + self.identity
