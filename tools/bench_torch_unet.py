#!/usr/bin/env python3
"""The PyTorch peer of `lina-cli bench-unet`: one UNet call of a diffusers UNet config with
random weights, batch 2 (classifier-free guidance), on the CPU or a CUDA GPU.

For full-size architectures whose checkpoints cannot be downloaded here: the weights' values
do not change the time. Same protocol as `lina-cli bench-unet`: one warm-up call, then the
median, min and max of --repeat calls, with the same shapes (latents [2, C, N, N], a context
of 77 tokens, timestep 500). On CUDA each call is timed to its end (`torch.cuda.synchronize`),
as ours is timed to its output's read-back. Developer-side; CI does not run it.

`--save DIR` also writes what `lina-cli bench-unet --reference` checks our output against:
the weights (`DIR/unet.safetensors`, f32) and `DIR/reference.safetensors` with the inputs and
this run's output in f32 (`out_f32`, computed in f32 with TF32 off) and, on CUDA, in f16
(`out_f16`).

Usage:
    python3 tools/bench_torch_unet.py --config tests/fixtures/configs/sd15_unet.json --latent 64
    python3 tools/bench_torch_unet.py --config ... --device cuda --dtype f16 --compile
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch
from diffusers import UNet2DConditionModel

from bench_torch import summary


def timed_calls(unet, sample, context, repeat: int, sync) -> list[float]:
    times = []
    with torch.inference_mode():
        for i in range(repeat + 1):
            start = time.perf_counter()
            unet(sample, 500, context)
            sync()
            if i > 0:
                times.append((time.perf_counter() - start) * 1000)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True)
    parser.add_argument("--latent", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--dtype", choices=["f32", "f16"], nargs="+", default=["f32"])
    parser.add_argument("--compile", action="store_true", help="also time torch.compile (CUDA, f16)")
    parser.add_argument("--save", help="write the weights, inputs and outputs here")
    args = parser.parse_args()

    torch.manual_seed(0)
    # PyTorch's own default for convolutions is TF32 on GPUs that have it; both settings are
    # timed for f32 so the table can say which one a figure is.
    with open(args.config) as f:
        config = json.load(f)
    start = time.perf_counter()
    unet = UNet2DConditionModel.from_config(config).eval()
    build_ms = (time.perf_counter() - start) * 1000
    # Weights rounded to f16 once, so that the f32 and f16 runs (theirs and ours, which casts
    # the saved f32 weights to f16 on the GPU) all compute with the same values.
    unet = unet.half().float()
    cfg = unet.config
    sample = torch.randn(2, cfg.in_channels, args.latent, args.latent)
    context = torch.randn(2, 77, cfg.cross_attention_dim)
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    unet = unet.to(device)
    sample, context = sample.to(device), context.to(device)
    name = torch.cuda.get_device_name() if cuda else f"CPU ({torch.get_num_threads()} threads)"
    results = {}
    outputs = {}
    for dtype in args.dtype:
        if dtype == "f32":
            for tf32 in ([False, True] if cuda else [False]):
                torch.backends.cuda.matmul.allow_tf32 = tf32
                torch.backends.cudnn.allow_tf32 = tf32
                key = "f32-tf32" if tf32 else "f32"
                results[key] = summary(timed_calls(unet, sample, context, args.repeat, sync))
                if not tf32:
                    with torch.inference_mode():
                        outputs["out_f32"] = unet(sample, 500, context).sample.float().cpu()
        else:
            half = unet.to(torch.float16)
            s16, c16 = sample.half(), context.half()
            results["f16"] = summary(timed_calls(half, s16, c16, args.repeat, sync))
            with torch.inference_mode():
                outputs["out_f16"] = half(s16, 500, c16).sample.float().cpu()
            if args.compile and cuda:
                start = time.perf_counter()
                compiled = torch.compile(half)
                with torch.inference_mode():
                    compiled(s16, 500, c16)
                sync()
                results["f16-compile-warmup-ms"] = (time.perf_counter() - start) * 1000
                results["f16-compile"] = summary(timed_calls(compiled, s16, c16, args.repeat, sync))
            unet = half.to(torch.float32)  # exact: the weights were f16 values already
    if args.save:
        from safetensors.torch import save_file

        os.makedirs(args.save, exist_ok=True)
        state = {k: v.float().contiguous().cpu() for k, v in unet.state_dict().items()}
        save_file(state, os.path.join(args.save, "unet.safetensors"))
        refs = {"sample": sample.float().cpu(), "context": context.float().cpu(), **outputs}
        save_file({k: v.contiguous() for k, v in refs.items()}, os.path.join(args.save, "reference.safetensors"))
    print(json.dumps({
        "peer": f"PyTorch {torch.__version__} {name}",
        "config": args.config,
        "latent": args.latent,
        "build_ms": build_ms,
        "unet_ms": results.get("f32", next(iter(results.values()))),
        "by_dtype": results,
    }))


if __name__ == "__main__":
    main()
