"""The generative core shared by the model families: a frozen diffusers UNet denoiser, a
ControlNet that reads the pre-treatment image, learned per-factor prompt tokens through a
frozen OpenCLIP text tower, our own sampling loop (no ``transformers``), and safetensors
checkpoints with a JSON model card. A family (breast NAC, lung) plugs in a config, a schema
and its data; nothing here is breast-specific."""
