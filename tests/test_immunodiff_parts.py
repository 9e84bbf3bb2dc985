"""ImmunoDiff components against their definitions: InfoNCE, RoPE, the clinical tokens,
the cbi-Adapter's groups, the 2.5D slice layout, the VL control."""

from __future__ import annotations

import math

import pytest
import torch

from napari_nacsim.core.schema import LUNG
from napari_nacsim.science.generative.immunodiff.cbi_adapter import CbiAdapter, GroupAttention
from napari_nacsim.science.generative.immunodiff.slices import slices_of, with_neighbours
from napari_nacsim.science.generative.immunodiff.tokens import ClinicalTokens
from napari_nacsim.science.generative.immunodiff.vl_encoder import VLEncoders, info_nce


def test_info_nce_matches_a_hand_computed_cross_entropy():
    # Unit vectors, so cosine similarity = dot product; temperature 0.5.
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    p = torch.tensor([[0.6, 0.8], [0.0, 1.0]])
    # logits row 0: [0.6, 0.0] / 0.5 = [1.2, 0.0]; row 1: [0.8, 1.0] / 0.5 = [1.6, 2.0]
    row0 = -1.2 + math.log(math.exp(1.2) + math.exp(0.0))
    row1 = -2.0 + math.log(math.exp(1.6) + math.exp(2.0))
    expected = (row0 + row1) / 2
    assert float(info_nce(a, p, 0.5)) == pytest.approx(expected, rel=1e-6)
    # one-directional: the anchor picks among the positives, not the other way round
    assert float(info_nce(p, a, 0.5)) != pytest.approx(expected, rel=1e-3)
    # scale does not matter (cosine), a perfect match with far negatives approaches 0
    assert float(info_nce(3 * a, p, 0.5)) == pytest.approx(expected, rel=1e-6)
    eye = torch.eye(4)
    assert float(info_nce(eye, eye, 0.05)) < 1e-6


def test_rope_makes_attention_scores_depend_on_relative_position_only():
    torch.manual_seed(0)
    att = GroupAttention(dim=16, heads=1, rope_base=1e5, out_dim=4)
    q, k = torch.randn(1, 1, 1, 16), torch.randn(1, 1, 1, 16)

    def score(i, j):  # q placed at position i, k at position j
        seq_q = torch.zeros(1, 1, 12, 16)
        seq_k = torch.zeros(1, 1, 12, 16)
        seq_q[:, :, i], seq_k[:, :, j] = q[:, :, 0], k[:, :, 0]
        rq = att.rope.rotate_queries_or_keys(seq_q)[0, 0, i]
        rk = att.rope.rotate_queries_or_keys(seq_k)[0, 0, j]
        return float(rq @ rk)

    assert score(3, 1) == pytest.approx(score(9, 7), rel=1e-4, abs=1e-5)
    assert score(5, 5) == pytest.approx(score(0, 0), rel=1e-4, abs=1e-5)
    assert score(0, 0) == pytest.approx(float(q[0, 0, 0] @ k[0, 0, 0]), rel=1e-4)
    assert abs(score(6, 1) - score(1, 1)) > 1e-3     # a different offset changes the score
    assert att.rope.freqs.numel() == 8               # dim/2 frequencies, base 1e5:
    assert float(att.rope.freqs[1]) == pytest.approx(1e5 ** (-2 / 16), rel=1e-5)


def test_adapter_groups_come_from_the_schema():
    adapter = CbiAdapter(LUNG, {"dim": 8, "heads": 2, "rope_base": 1e5, "image_channels": 4,
                                "lambda_init": 1.0}, image_in_channels=3)
    names = {g: [adapter.tokens.variables[i].name for i in idx]
             for g, idx in adapter.groups.items()}
    assert names == {"clinical": ["age", "sex", "race"],
                     "blood": ["CEA", "ANC", "ALC", "NLR", "AEC", "AMC"],
                     "immunotherapy": ["PD_L1"]}
    values, codes, present = adapter.encode([{"PD_L1": 0.0}, {"PD_L1": 80.0}])
    s = adapter.clinical(values, codes, present)
    fused = adapter(torch.zeros(2, 3, 6, 6), s)
    assert fused.shape == (2, 4, 6, 6)
    # ĉ = SiLU(Conv(0)) + λ Σ Z_i: with a zero image, the two scenarios differ by λ ΔΣZ
    diff = fused[0] - fused[1]
    assert torch.allclose(diff, (adapter.lam * (s[0] - s[1]))[:, None, None].expand_as(diff),
                          atol=1e-6)
    assert float(diff.detach().abs().max()) > 0


def test_missing_values_have_their_own_embedding():
    torch.manual_seed(0)
    tok = ClinicalTokens(LUNG, 8)
    full = {"age": 60, "sex": "male", "race": "Asian", "CEA": 0.0, "ANC": 4.0, "ALC": 2.0,
            "NLR": 2.0, "AEC": 0.1, "AMC": 0.4, "PD_L1": 0.0}
    values, codes, present = tok.encode([full, {**full, "PD_L1": None}])
    assert present[0].all() and not present[1, -1] and present[1, :-1].all()
    out = tok(values, codes, present)
    j = [v.name for v in tok.variables].index("PD_L1")
    assert not torch.allclose(out[0, j], out[1, j])       # missing != a value of 0
    assert torch.allclose(out[1, j], tok.missing[j] + tok.identity[j])
    assert torch.allclose(out[0, :j], out[1, :j])          # the others are untouched


def test_slice_layout_puts_neighbours_in_channels():
    vol = torch.arange(5.0)[None, None, :, None, None].expand(2, 1, 5, 3, 3).clone()
    vol[1] += 10
    stack = with_neighbours(vol, 1)                         # (2*5, 3, 3, 3)
    assert stack.shape == (10, 3, 3, 3)
    assert stack[0, :, 0, 0].tolist() == [0, 0, 1]          # edge slice repeats itself
    assert stack[2, :, 0, 0].tolist() == [1, 2, 3]
    assert stack[9, :, 0, 0].tolist() == [13, 14, 14]
    picked = slices_of(vol, 1, torch.tensor([2, 4]))
    assert torch.equal(picked[0], stack[2]) and torch.equal(picked[1], stack[9])


def test_vl_control_is_spatial_and_contrastive_loss_trains():
    torch.manual_seed(0)
    vl = VLEncoders({"channels": [4, 8], "feature_channels": 4, "projection_dim": 8,
                     "temperature": 0.5}, neighbours=1, patch=2)
    # Four "patients", each with a lobe (its own label, place and size) and a vessel of
    # its own length inside it, so each vessel mask has one matching lobe mask. (Pooled
    # convolution features are translation invariant: shapes must differ, not only places.)
    vessels = torch.zeros(4, 3, 16, 16)
    labels = torch.zeros(4, 3, 16, 16, dtype=torch.long)
    for i, (y, x) in enumerate([(1, 1), (1, 8), (8, 1), (8, 8)]):
        labels[i, :, y:y + 4 + i, x:x + 4 + i] = i + 1
        vessels[i, :, y + 1, x:x + 1 + i] = 1
    lobes = torch.nn.functional.one_hot(labels, 6).permute(0, 1, 4, 2, 3)
    lobes = lobes.reshape(4, 18, 16, 16).float()
    control = vl.control(vessels, lobes)
    assert control.shape == (4, 8, 8, 8)                    # Z_v ⊕ Z_l at the denoiser grid
    opt = torch.optim.Adam(vl.parameters(), 1e-2)
    first = float(vl.contrastive_loss(vessels, lobes))
    for _ in range(80):
        loss = vl.contrastive_loss(vessels, lobes)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert first == pytest.approx(math.log(4), abs=0.2)     # chance level at the start
    assert float(loss) < 0.75 * first
