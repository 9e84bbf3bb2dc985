"""The diffusion training losses, written once for both networks
(science.generative.losses; issue 20): the two ways a weighted MSE is normalised, which
each trained model depends on."""

from __future__ import annotations

import pytest
import torch

from napari_nacsim.science.generative.losses import tumour_weights, weighted_mse


def test_per_sample_and_whole_batch_normalisation_are_different_means():
    pred, target = torch.zeros(2, 1, 2, 2), torch.zeros(2, 1, 2, 2)
    pred[0, 0, 0, 0] = 1.0                        # one error, in the first sample's tumour
    weight = torch.ones(2, 1, 2, 2)
    weight[0, 0, 0, 0] = 4.0                      # sample 0 weighs 7, sample 1 weighs 4
    per_sample = weighted_mse(pred, target, weight)
    assert torch.isclose(per_sample, torch.tensor((4 / 7 + 0) / 2))
    assert torch.allclose(weighted_mse(pred, target, weight, reduce=False),
                          torch.tensor([4 / 7, 0.0]))
    assert torch.isclose(weighted_mse(pred, target, weight, normalise="batch"),
                         torch.tensor(4 / 11))
    with pytest.raises(ValueError, match="no per-sample values"):
        weighted_mse(pred, target, weight, normalise="batch", reduce=False)
    with pytest.raises(ValueError, match="'voxel' is not 'sample' or 'batch'"):
        weighted_mse(pred, target, weight, normalise="voxel")


def test_tumour_weights_of_one_mask_or_two_and_no_margin():
    one = torch.zeros(1, 1, 5, 5, dtype=torch.bool)
    one[0, 0, 2, 2] = True
    assert int((tumour_weights(one, 3.0, 0) == 4).sum()) == 1       # the tumour alone
    assert int((tumour_weights(one, 3.0, 1) == 4).sum()) == 9
    two = torch.zeros(1, 2, 5, 5)
    two[0, 1, 0, 0] = 1
    assert torch.equal(tumour_weights(torch.cat([one.float(), two[:, 1:]], 1), 3.0, 0),
                       tumour_weights(one, 3.0, 0) + 3.0 * two[:, 1:])
