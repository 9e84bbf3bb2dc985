"""ImmunoDiff (seed paper 004) for the lung family: post-immunotherapy CT crops generated
from the pre-treatment crop, its lobe and vessel masks and the clinical values.

One concept per module:

- `config`      configurations (tiny / paper / micro) and the HU <-> model-scale mapping
- `slices`      the 2.5D layout: a crop as axial slices with their neighbours as channels
- `vl_encoder`  vessel and lobe (VL) mask encoders, projection heads, InfoNCE
- `tokens`      clinical values -> one token per variable (missing values: own embedding)
- `cbi_adapter` the clinical/blood/immunotherapy adapter (Q, K, V per group, RoPE, attention)
- `network`     the whole model: VL encoders, base denoiser, anatomy ControlNet, adapter
- `sampling`    generating post-treatment crops (the samplers of `generative.samplers`)
- `reuse`       what the samples of a comparison share, computed once (content-keyed)
- `compose`     the generated crop kept around the baseline tumour, the input elsewhere
- `checkpoint`  safetensors + model card (sha256 of every file; `generative.weights`)
- `training`    the four stages (vl, base, control, adapter) and the loop (the diffusion
                losses are `generative.losses`, shared with the breast model)
- `data`        phantom records (paired through the family, unpaired for pre-training)
"""
