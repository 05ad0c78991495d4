#!/usr/bin/env python3
"""The tables of scripts/bench-gpu.sh from the figures it wrote: UNet calls (ours with our
kernels and with burn's, PyTorch eager and compiled) with ratios, our output against
PyTorch's, each layer kind's time and rate, burn's kernels beside ours, and where our call's
GPU time goes (tools/profile_table.py).

Usage: python3 tools/bench_gpu_table.py OUT_DIR   (markdown on stdout)
"""

from __future__ import annotations

import json
import re
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
        # The peak is the square product's fastest way: burn's matmul in f32, and in f16 on a
        # GPU with cooperative matrices most likely the coop matmul (the tensor cores).
        peak_row = max((r for r in rows if "peak" in r["case"]), key=lambda r: r["tera_per_s"], default=None)
        peak = peak_row["tera_per_s"] if peak_row else None
        print(f"\n### Layer kinds, {precision} (TFLOP/s; TB/s for the norm)\n")
        if peak_row:
            print(f"The matrix peak, the square 4096 product's fastest way ({peak_row['how']}): {peak:.1f} TFLOP/s.\n")
        print("| case | kind | way | ms | rate | of that peak | error |")
        print("| --- | --- | --- | --- | --- | --- | --- |")
        for r in rows:
            share = f"{100 * r['tera_per_s'] / peak:.0f}%" if peak and r["kind"] in ("conv", "matmul") else ""
            print(
                f"| {r['case']} | {r['kind']} | {r['how']} | {r['ms']:.3f} | {r['tera_per_s']:.2f} | {share} | {r['error']:.0e} |"
            )

    for precision in ["f32", "f16"]:
        path = out / f"kernels-{precision}.jsonl"
        if path.exists():
            rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
            fastest_per_case(rows, precision)
            coop_blocks(rows)

    for precision in ["f32", "f16"]:
        path = out / f"profile-sd15-{precision}.md"
        if path.exists():
            print(f"\n### Where the GPU time goes, SD 1.5, {precision} (each kernel timed alone)\n")
            print("\n".join(path.read_text().splitlines()[2:]))


def fastest_per_case(rows, precision: str) -> None:
    """Each case's fastest way beside the one the runtime takes on a GPU (the row marked
    "chosen", where bench-kernels marks one), so that a run shows at once where another way
    wins."""
    cases: dict[str, list] = {}
    for r in rows:
        if "peak" not in r["case"]:
            cases.setdefault(r["case"], []).append(r)
    if not cases:
        return
    print(f"\n### Fastest way per case, {precision}\n")
    print("| case | fastest | ms | the runtime's way on a GPU | ms | runtime / fastest |")
    print("| --- | --- | --- | --- | --- | --- |")
    for case, ways in cases.items():
        best = min(ways, key=lambda r: r["ms"])
        # On a GPU with cooperative matrices the runtime takes them for f16 products and
        # attention; elsewhere the other way marked chosen (the gathered convolution's cut).
        marked = [r for r in ways if "chosen" in r["how"]]
        chosen = next((r for r in marked if r["how"].startswith("coop")), None) or next(iter(marked), None)
        if chosen:
            runtime = f"{chosen['how']} | {chosen['ms']:.3f} | {chosen['ms'] / best['ms']:.2f}x"
        else:
            runtime = "- | - | -"
        print(f"| {case} | {best['how']} | {best['ms']:.3f} | {runtime} |")


COOP_WAY = re.compile(r"^coop (\d+), (\d+x\d+)(.*?)(, implicit)?$")


def coop_blocks(rows) -> None:
    """The coop matmul's blocks (bench-kernels' fixed blocks: as the runtime has them,
    unpadded, deeper, prefetching) summed over the product cases that every block ran, each
    against the runtime's block of its size: which variant `CoopBlock::new` should be."""
    times: dict[str, dict[str, float]] = {}
    for r in rows:
        m = COOP_WAY.match(r["how"])
        if r["kind"] in ("conv", "matmul") and m:
            block = f"{m.group(2)}{m.group(3)}"
            times.setdefault(block, {})[r["case"]] = r["ms"]
    if not times:
        return
    shared = set.intersection(*(set(cases) for cases in times.values()))
    if not shared:
        return
    print(f"\n### Coop matmul blocks over {len(shared)} product cases, f16\n")
    print("| block | total ms | against the runtime's block of its size |")
    print("| --- | --- | --- |")
    for block, cases in sorted(times.items()):
        total = sum(cases[c] for c in shared)
        usual = times.get(block.split(",")[0])
        against = f"{total / sum(usual[c] for c in shared):.2f}x" if usual else "-"
        print(f"| {block} | {total:.3f} | {against} |")


if __name__ == "__main__":
    main()
