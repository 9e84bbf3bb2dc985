"""The cbi-Adapter: clinical (C), blood (B) and immunotherapy (I) variables -> a condition
map for the anatomy ControlNet.

Per group i (groups and their variables read from the schema's ``Variable.group``):
tokens of the group's variables -> Q_i, K_i, V_i by linear maps -> rotary position
embedding (RoPE, base 1e5) on Q and K over the variables' positions in the group ->
scaled dot-product attention (``torch.nn.functional.scaled_dot_product_attention``) ->
an output map -> mean over the group's tokens -> Z_i, a vector of the image-embedding width.
The rotary embedding is `rotary_embedding_torch.RotaryEmbedding` (theta = base).

The fused condition, as in the paper: ĉ = Z_img + λ Σ_i Z_i, with
Z_img = SiLU(Conv2d(pre-treatment 2.5D slice)) and each Z_i broadcast over (h, w). The
paper leaves λ open: here a learned scalar (initialised from the config, 1.0), so training
sets how strongly the clinical values steer the control. The positions: the paper's text says
1-D RoPE and its equation uses (h, w) positions; with one token per variable there is no
image grid inside a group, so 1-D positions over the group's variables are what applies.

Outcome input (not in the paper; ``adapter.outcome_input``, docs/lung-model.md): the
response the follow-up is generated for is one more token, in a group "outcome" of its own,
whose "missing" embedding means "not given". A calibrated head then says how likely a
response is, and the generator shows what this tumour looks like under the response drawn.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from rotary_embedding_torch import RotaryEmbedding
from torch import nn

from ....core.schema import FamilySchema
from .tokens import ClinicalTokens, token_group


class GroupAttention(nn.Module):
    """Q, K, V maps, RoPE, attention, output map for one group of variable tokens."""

    def __init__(self, dim: int, heads: int, rope_base: float, out_dim: int):
        super().__init__()
        if dim % heads or (dim // heads) % 2:
            raise ValueError(f"adapter dim {dim} must split into {heads} heads of even size")
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.rope = RotaryEmbedding(dim // heads, theta=rope_base)
        self.out = nn.Linear(dim, out_dim)

    def _split(self, x: torch.Tensor) -> torch.Tensor:  # (B, n, D) -> (B, h, n, D/h)
        b, n, d = x.shape
        return x.reshape(b, n, self.heads, d // self.heads).transpose(1, 2)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, n, D) -> Z_i (B, out_dim)."""
        q, k, v = (self._split(m(tokens)) for m in (self.q, self.k, self.v))
        q, k = self.rope.rotate_queries_or_keys(q), self.rope.rotate_queries_or_keys(k)
        att = F.scaled_dot_product_attention(q, k, v)
        b, h, n, dh = att.shape
        return self.out(att.transpose(1, 2).reshape(b, n, h * dh)).mean(dim=1)


class CbiAdapter(nn.Module):
    def __init__(self, schema: FamilySchema, cfg: dict, image_in_channels: int):
        super().__init__()
        dim, channels = int(cfg["dim"]), int(cfg["image_channels"])
        self.tokens = ClinicalTokens(schema, dim, cfg.get("outcome_input", ()))
        groups: dict[str, list[int]] = {}
        for j, var in enumerate(self.tokens.variables):
            groups.setdefault(token_group(var), []).append(j)
        self.groups = groups
        self.attention = nn.ModuleDict({g: GroupAttention(dim, int(cfg["heads"]),
                                                          float(cfg["rope_base"]), channels)
                                        for g in groups})
        self.image = nn.Conv2d(image_in_channels, channels, 3, padding=1)
        self.lam = nn.Parameter(torch.tensor(float(cfg["lambda_init"])))
        self.out_channels = channels

    def encode(self, scenarios: Sequence[Mapping[str, Any]]):
        return self.tokens.encode(scenarios)

    def clinical(self, values, codes, present) -> torch.Tensor:
        """Σ_i Z_i: (B, channels)."""
        tokens = self.tokens(values, codes, present)
        return sum(self.attention[g](tokens[:, idx]) for g, idx in self.groups.items())

    def forward(self, pre: torch.Tensor, clinical_sum: torch.Tensor) -> torch.Tensor:
        """ĉ = SiLU(Conv(pre)) + λ Σ_i Z_i; ``pre`` (B, C, h, w), ``clinical_sum`` (B, ch)."""
        return F.silu(self.image(pre)) + self.lam * clinical_sum[:, :, None, None]
