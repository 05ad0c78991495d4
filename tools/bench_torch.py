#!/usr/bin/env python3
"""The PyTorch peer of `lina-cli bench`: diffusers on the CPU, on the same model folder.

Developer-side script (scripts/bench.sh runs it when torch is installed; CI does not). It
measures what `lina-cli bench` measures, with the same shapes and the same protocol (one
warm-up call, then the median, min and max of --repeat runs), and prints one JSON object:

- unet_ms: one UNet call, batch 2 (classifier-free guidance), at the model's native size;
- step_ms: one sampling step: that call, the guidance combine and a DDIM update;
- image_ms: a whole image through StableDiffusionPipeline with --steps DDIM steps;
- load_ms: building the pipeline from the folder.

Needs torch and diffusers in the versions of tools/requirements.txt (`pip install -r
tools/requirements.txt`), the ones docs/bench.md's figures came from.

Usage:
    python3 tools/bench_torch.py --model www/models/default [--repeat 10] [--steps 20]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from diffusers import DDIMScheduler, StableDiffusionPipeline


def summary(times: list[float]) -> dict:
    return {
        "runs": len(times),
        "median": statistics.median(times),
        "min": min(times),
        "max": max(times),
    }


def timed(fn, repeat: int) -> dict:
    fn()  # warm-up: allocator, oneDNN primitive caches
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return summary(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()

    torch.manual_seed(0)
    start = time.perf_counter()
    pipe = StableDiffusionPipeline.from_pretrained(args.model, safety_checker=None, requires_safety_checker=False,
                                                   torch_dtype=torch.float32)
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    load_ms = (time.perf_counter() - start) * 1000
    unet = pipe.unet.eval()
    cfg = unet.config
    size = cfg.sample_size
    sample = torch.randn(2, cfg.in_channels, size, size)
    context = torch.randn(2, 77, cfg.cross_attention_dim)
    latents = torch.randn(1, cfg.in_channels, size, size)
    pipe.scheduler.set_timesteps(args.steps)
    t = pipe.scheduler.timesteps[0]

    def unet_call():
        with torch.inference_mode():
            unet(sample, t, context)

    def step():
        with torch.inference_mode():
            noise = unet(torch.cat([latents, latents]), t, context).sample
            uncond, cond = noise.chunk(2)
            guided = uncond + 7.5 * (cond - uncond)
            pipe.scheduler.step(guided, t, latents)

    def image():
        with torch.inference_mode():
            pipe("a red ball on a mirror", num_inference_steps=args.steps, guidance_scale=7.5,
                 generator=torch.Generator().manual_seed(0), output_type="np")

    result = {
        "peer": f"PyTorch {torch.__version__} CPU ({torch.get_num_threads()} threads)",
        "model": args.model,
        "latent": size,
        "steps": args.steps,
        "load_ms": load_ms,
        "unet_ms": timed(unet_call, args.repeat),
        "step_ms": timed(step, args.repeat),
        "image_ms": timed(image, max(1, args.repeat // 5)),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
