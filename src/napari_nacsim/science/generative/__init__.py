"""The generative core shared by the model families: a frozen diffusers UNet denoiser, a
ControlNet that reads the pre-treatment image, learned per-factor prompt tokens through a
frozen OpenCLIP text tower, our own sampling loop (no ``transformers``), and safetensors
checkpoints with a JSON model card. A family (breast NAC, lung) plugs in a config, a schema
and its data; nothing here is breast-specific. The lung model's own network is `immunodiff`.

Written once for both networks: the samplers and their diffusers schedulers (`samplers`),
the component weights on disk (`weights`), the diffusion training losses (`losses`) and
the patient split (`data.split_ids`)."""
