"""Response and survival prediction for the lung family (ImmunoDiff's heads, seed paper 004).

One concept per module:

- `features`  up-block features of the frozen ImmunoDiff denoiser (forward hooks), conditioned
              on the pre-treatment crop, its anatomy masks and the clinical values
- `clinical`  the clinical design matrix of the clinical-only baselines (log-scaled labs)
- `heads`     the response classifier (logistic) and the survival head (Cox partial
              likelihood, torchsurv); saved as safetensors + a card with sha256
- `metrics`   classification metrics, Brier score, calibration (scikit-learn), c-index with
              confidence intervals (torchsurv), the reliability diagram (matplotlib)
- `ceiling`   the phantom's own response probability and hazard: the best any model could do
- `image_cnn` the image-only (and image + clinical) 3D CNN baseline (MONAI DenseNet)

See docs/lung-prediction.md.
"""
