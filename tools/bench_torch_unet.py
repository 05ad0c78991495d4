#!/usr/bin/env python3
"""The PyTorch peer of `lina-cli bench-unet`: one UNet call of a diffusers UNet config with
random weights, batch 2 (classifier-free guidance), on the CPU.

For full-size architectures whose checkpoints cannot be downloaded here: the weights' values
do not change the time. Same protocol as `lina-cli bench-unet`: one warm-up call, then the
median, min and max of --repeat calls, with the same shapes (latents [2, C, N, N], a context
of 77 tokens, timestep 500). Developer-side; CI does not run it.

Usage:
    python3 tools/bench_torch_unet.py --config tests/fixtures/configs/sd15_unet.json --latent 64
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from diffusers import UNet2DConditionModel

from bench_torch import summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True)
    parser.add_argument("--latent", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    torch.manual_seed(0)
    with open(args.config) as f:
        config = json.load(f)
    start = time.perf_counter()
    unet = UNet2DConditionModel.from_config(config).eval()
    build_ms = (time.perf_counter() - start) * 1000
    cfg = unet.config
    sample = torch.randn(2, cfg.in_channels, args.latent, args.latent)
    context = torch.randn(2, 77, cfg.cross_attention_dim)
    times = []
    with torch.inference_mode():
        for i in range(args.repeat + 1):
            start = time.perf_counter()
            unet(sample, 500, context)
            if i > 0:
                times.append((time.perf_counter() - start) * 1000)
    print(json.dumps({
        "peer": f"PyTorch {torch.__version__} CPU ({torch.get_num_threads()} threads)",
        "config": args.config,
        "latent": args.latent,
        "build_ms": build_ms,
        "unet_ms": summary(times),
    }))


if __name__ == "__main__":
    main()
