"""One training step (UNet + ControlNet, forward + backward) and one sampling step of the
lung_tiny network size in MONAI's generative networks and in diffusers, on this machine.

    OMP_NUM_THREADS=2 python benchmarks/lung_library_step.py

The numbers go into docs/lung-model.md (library choice)."""

import time

import torch

torch.manual_seed(0)
B, C_IN, H = 8, 12, 48   # lung_tiny: 3 slices x 2x2 pixel-unshuffle of 96 x 96
CH, ATT = (32, 48, 64), (False, False, True)
COND_CH = 48


def monai_nets():
    from monai.networks.nets import ControlNet, DiffusionModelUNet

    kw = dict(spatial_dims=2, in_channels=C_IN, num_res_blocks=1, channels=CH,
              attention_levels=ATT, norm_num_groups=16, num_head_channels=32)
    unet = DiffusionModelUNet(out_channels=4, **kw)
    ctrl = ControlNet(conditioning_embedding_in_channels=COND_CH,
                      conditioning_embedding_num_channels=(32,), **kw)

    def step(x, t, c):
        down, mid = ctrl(x, t, c)
        return unet(x, t, down_block_additional_residuals=down,
                    mid_block_additional_residual=mid)
    return unet, ctrl, step


def diffusers_nets():
    from diffusers import ControlNetModel, UNet2DConditionModel

    down = tuple("CrossAttnDownBlock2D" if a else "DownBlock2D" for a in ATT)
    up = tuple("CrossAttnUpBlock2D" if a else "UpBlock2D" for a in ATT[::-1])
    unet = UNet2DConditionModel(sample_size=H, in_channels=C_IN, out_channels=4,
                                down_block_types=down, up_block_types=up,
                                block_out_channels=CH, layers_per_block=1,
                                norm_num_groups=16, cross_attention_dim=32,
                                attention_head_dim=1, mid_block_type="UNetMidBlock2DCrossAttn")
    ctrl = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(32,))
    ctrl.controlnet_cond_embedding.conv_in = torch.nn.Conv2d(COND_CH, 32, 3, padding=1)
    def step(x, t, c):
        ctx = torch.zeros(len(x), 1, 32)   # one empty context token (no text conditioning)
        d, m = ctrl(x, t, encoder_hidden_states=ctx, controlnet_cond=c, return_dict=False)
        return unet(x, t, encoder_hidden_states=ctx,
                    down_block_additional_residuals=d,
                    mid_block_additional_residual=m).sample
    return unet, ctrl, step


def measure(make, reps=3):
    unet, ctrl, step = make()
    n = sum(p.numel() for p in unet.parameters()) + sum(p.numel() for p in ctrl.parameters())
    opt = torch.optim.Adam(list(unet.parameters()) + list(ctrl.parameters()), 1e-4)
    x, c = torch.randn(B, C_IN, H, H), torch.randn(B, COND_CH, H, H)
    t = torch.randint(0, 1000, (B,))
    times = []
    for _ in range(reps + 1):
        t0 = time.perf_counter()
        loss = step(x, t, c).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    with torch.no_grad():
        xs, cs, ts = torch.randn(16, C_IN, H, H), torch.randn(16, COND_CH, H, H), t[:1].repeat(16)
        step(xs, ts, cs)
        t0 = time.perf_counter()
        for _ in range(reps):
            step(xs, ts, cs)
        sample = (time.perf_counter() - t0) / reps
    return n, min(times[1:]), sample


if __name__ == "__main__":
    print(f"threads {torch.get_num_threads()}; batch {B} slices {H}x{H}, channels {CH}, "
          f"attention {ATT}")
    for name, make in (("monai", monai_nets), ("diffusers", diffusers_nets)):
        n, train, sample = measure(make)
        print(f"{name:10s} params {n / 1e6:.2f} M  train step {train * 1000:.0f} ms  "
              f"sampling step (16 slices) {sample * 1000:.0f} ms")
