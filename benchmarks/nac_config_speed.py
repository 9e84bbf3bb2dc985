"""Time a NAC configuration's architecture before training it: the pCR + non-pCR pair on
randomly initialised weights (the compute does not depend on the weights), for a few sampler
settings. Used to choose the 128 px grid (docs/breast-model.md, "128 px at 2 mm");
`nac_latency.py` times a trained model folder.

    python benchmarks/nac_config_speed.py breast_128 --threads 2
    python benchmarks/nac_config_speed.py breast_128 --unet-channels 16,32,64
"""

from __future__ import annotations

import argparse
import time


def main(argv: list[str] | None = None) -> int:
    import torch

    from napari_nacsim.science.generative.config import load_config
    from napari_nacsim.science.generative.model import ControlledDiffusion
    from napari_nacsim.science.generative.sampling import generate

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("config", help="bundled config name or JSON path")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--unet-channels", default=None,
                   help="comma-separated block_out_channels to try instead of the config's")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    config = load_config(args.config)
    if args.unet_channels:
        config["unet"]["block_out_channels"] = [int(c) for c in args.unet_channels.split(",")]
    model = ControlledDiffusion(config).eval()
    size = config["image_size"]
    control = torch.rand(1, size, size, generator=torch.Generator().manual_seed(0))
    pair = [{"time": "T2", "pCR": True, "HR": True, "HER2": False},
            {"time": "T2", "pCR": False, "HR": True, "HER2": False}]
    generate(model, control, pair, steps=2, guidance_scale=2.0)  # warm-up
    for steps, guidance in ((10, 2.0), (6, 2.0), (10, 1.0)):
        started = time.perf_counter()
        generate(model, control, pair, steps=steps, guidance_scale=guidance)
        print(f"{config['name']} unet {config['unet']['block_out_channels']}: {steps} steps, "
              f"guidance {guidance}: {time.perf_counter() - started:.2f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
