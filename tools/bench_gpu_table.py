#!/usr/bin/env python3
"""The tables of scripts/bench-gpu.sh from the figures it wrote: UNet calls (ours with our
kernels and with burn's, PyTorch eager and compiled) with ratios, our output against
PyTorch's, each layer kind's time and rate, burn's kernels beside ours, and where our call's
GPU time goes (tools/profile_table.py).

Usage: python3 tools/bench_gpu_table.py OUT_DIR   (markdown on stdout)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def load(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def ms(summary) -> str:
    return f"{summary['median']:.1f}" if summary else "-"


def main() -> None:
    out = Path(sys.argv[1])
    print("### UNet call, batch 2 (CFG), median ms\n")
    print("| model | precision | ours, our kernels | ours, no cooperative matrices | ours, burn's | PyTorch eager | PyTorch compiled | ours / PyTorch eager |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    errors = []
    for name, label in [("sd15", "SD 1.5, 64x64"), ("sd21", "SD 2.1, 96x96")]:
        torch = load(out / f"torch-{name}.json") or {}
        by = torch.get("by_dtype", {})
        for precision in ["f32", "f16"]:
            ours = {}
            for kernels in ["fused", "no-matrices", "burn"]:
                report = load(out / f"unet-{name}-{precision}-{kernels}.json")
                if report and report.get("unet_s"):
                    ours[kernels] = {k: v * 1000 for k, v in report["unet_s"].items() if k != "runs"}
                    for key, rel, peak in report.get("errors", []):
                        errors.append((label, precision, kernels, key, rel, peak))
            if not ours and not by:
                continue
            theirs = by.get(precision)
            if precision == "f32" and "f32-tf32" in by:
                extra = f" (TF32: {ms(by['f32-tf32'])})"
            else:
                extra = ""
            ratio = "-"
            if "fused" in ours and theirs:
                ratio = f"{ours['fused']['median'] / theirs['median']:.1f}x"
            print(
                f"| {label} | {precision} | {ms(ours.get('fused'))} | {ms(ours.get('no-matrices'))} | "
                f"{ms(ours.get('burn'))} | "
                f"{ms(theirs)}{extra} | {ms(by.get(precision + '-compile'))} | {ratio} |"
            )
    if torch_peer := (load(out / "torch-sd15.json") or {}).get("peer"):
        print(f"\nPeer: {torch_peer}.")
    if errors:
        print("\n### Our output against PyTorch's, same weights and inputs\n")
        print("| model | precision | kernels | against | relative L2 | largest difference / largest value |")
        print("| --- | --- | --- | --- | --- | --- |")
        for label, precision, kernels, key, rel, peak in errors:
            print(f"| {label} | {precision} | {kernels} | PyTorch `{key}` | {rel:.1e} | {peak:.1e} |")

    for precision in ["f32", "f16"]:
        path = out / f"kernels-{precision}.jsonl"
        if not path.exists():
            continue
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        peak = max((r["tera_per_s"] for r in rows if "peak" in r["case"]), default=None)
        print(f"\n### Layer kinds, {precision} (TFLOP/s; TB/s for the norm)\n")
        if peak:
            print(f"The matrix peak as burn's matmul reaches it (square 4096 product): {peak:.1f} TFLOP/s.\n")
        print("| case | kind | way | ms | rate | of that peak | error |")
        print("| --- | --- | --- | --- | --- | --- | --- |")
        for r in rows:
            share = f"{100 * r['tera_per_s'] / peak:.0f}%" if peak and r["kind"] in ("conv", "matmul") else ""
            print(
                f"| {r['case']} | {r['kind']} | {r['how']} | {r['ms']:.3f} | {r['tera_per_s']:.2f} | {share} | {r['error']:.0e} |"
            )

    for precision in ["f32", "f16"]:
        path = out / f"profile-sd15-{precision}.md"
        if path.exists():
            print(f"\n### Where the GPU time goes, SD 1.5, {precision} (each kernel timed alone)\n")
            print("\n".join(path.read_text().splitlines()[2:]))


if __name__ == "__main__":
    main()
