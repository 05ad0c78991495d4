#!/usr/bin/env python3
"""Where a UNet call's GPU time goes, from cubecl's per-kernel profile.

Run a command with cubecl's full profiling and its log in a file, e.g.

    CUBECL_DEBUG_OPTION=profile-full CUBECL_DEBUG_LOG=/tmp/unet.log \\
        lina-cli bench-unet --config C --device gpu-f16 --repeat 1
    python3 tools/profile_table.py /tmp/unet.log --calls 2

and this prints one markdown table: each kind of kernel (ours by their shaders/ name, burn's
by type), how many ran, their summed GPU time per call and their share. Profiling waits for
each kernel in turn, so the sum is the GPU's busy time without overlap; set against the
call's wall time (printed by bench-unet without profiling) the rest is time the GPU waits
for the host. `--calls` divides by the calls in the log (bench-unet: one warm-up plus
--repeat); weight initialisation (random numbers) is left out.
"""

import argparse
import collections
import re
import sys

ENTRY = re.compile(r"^\| (\S+)\s+\| (.*)$")
UNITS = {"ns": 1e-6, "µs": 1e-3, "us": 1e-3, "ms": 1.0, "s": 1e3}


def milliseconds(text):
    match = re.fullmatch(r"([0-9.]+)(ns|µs|us|ms|s)", text)
    if not match:
        return None
    return float(match.group(1)) * UNITS[match.group(2)]


def kind(head, body):
    """A short name for a kernel from its profile entry's first line and the lines after."""
    if "lina_runtime::kernels::Wgsl" in head:
        name = re.search(r'"([a-z_0-9]+)"', body)
        return "ours: " + (name.group(1) if name else "?")
    path = head.split(": ")[0]
    if "MatmulEntry" in path:
        return "burn: matmul"
    # a::b::Kernel<c::Op> -> Kernel<Op>
    short = re.sub(r"(\w+::)+", "", path)
    short = re.sub(r"_[0-9a-f]{8}$", "", short)
    return "burn: " + short


def parse(lines):
    entries = []
    current = None
    for line in lines:
        match = ENTRY.match(line)
        if match:
            if current:
                entries.append(current)
            ms = milliseconds(match.group(1))
            current = None if ms is None else [ms, match.group(2), ""]
            continue
        if current is not None:
            if line.startswith("[") or line.startswith("name:"):
                entries.append(current)
                current = None
            elif len(current[2]) < 400:
                current[2] += line
    if current:
        entries.append(current)
    return [(ms, kind(head, body)) for ms, head, body in entries]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("log")
    parser.add_argument("--calls", type=int, default=1)
    parser.add_argument("--title", default="")
    args = parser.parse_args()
    with open(args.log, encoding="utf-8", errors="replace") as f:
        entries = parse(f.read().splitlines())
    entries = [(ms, k) for ms, k in entries if "Prng" not in k]
    if not entries:
        sys.exit(f"no profiled kernels in {args.log}")
    totals = collections.defaultdict(float)
    counts = collections.Counter()
    for ms, k in entries:
        totals[k] += ms
        counts[k] += 1
    whole = sum(totals.values())
    if args.title:
        print(f"{args.title}\n")
    print("| kernel | per call | ms per call | share |")
    print("| --- | --- | --- | --- |")
    for k, ms in sorted(totals.items(), key=lambda item: -item[1]):
        share = 100 * ms / whole
        print(f"| {k} | {counts[k] / args.calls:.0f} | {ms / args.calls:.2f} | {share:.1f}% |")
    print(f"| all | {len(entries) / args.calls:.0f} | {whole / args.calls:.2f} | 100% |")


if __name__ == "__main__":
    main()
