#!/usr/bin/env python3
"""Plain sampling beside a LINA plan on the same prompts and seeds, each image followed by
where it attended to each word of the prompt (`lina-cli generate --attention-maps`): one PNG
for the docs, two rows per prompt (plain, then the plan), scaled 3x.

    python3 tools/attention_grid.py --plan '{"mirror":true}' --out docs/ood-attention.png \\
        "a purple cube and a green ball with a lamp on the right" ...

Each word's map is its cross-attention summed over the run's steps and layers, scaled to its
own maximum, in red over the dimmed image (the CLI's strip). Under the mirrored frame the
words are the mirrored text's, which is what the model read, and the maps are flipped back
into the image's frame.
"""

import argparse
import subprocess
import tempfile
from pathlib import Path

from PIL import Image


def strip(cli: str, model: str, prompt: str, plan: str, seed: int, folder: Path, name: str):
    maps = folder / f"{name}-maps.png"
    subprocess.run(
        [cli, "generate", "--model", model, "--prompt", prompt, "--seed", str(seed),
         "--guidance", "3", "--plan", plan, "--out", str(folder / f"{name}.png"),
         "--attention-maps", str(maps)],
        check=True, stdout=subprocess.DEVNULL,
    )
    return Image.open(maps).convert("RGB")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("prompts", nargs="+")
    ap.add_argument("--plan", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--model", default="www/models/default")
    ap.add_argument("--cli", default="target/debug/lina-cli")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, prompt in enumerate(args.prompts):
            for plan in ["baseline", args.plan]:
                rows.append(strip(args.cli, args.model, prompt, plan, args.seed, Path(tmp),
                                  f"{i}-{len(rows)}"))
    gap, scale = 4, 3
    width = max(r.width for r in rows)
    # A wider gap between prompts than between a prompt's two rows.
    tops, y = [], 0
    for k, r in enumerate(rows):
        tops.append(y)
        y += r.height + (3 * gap if k % 2 else gap)
    grid = Image.new("RGB", (width, y - 3 * gap), "white")
    for top, r in zip(tops, rows):
        grid.paste(r, (0, top))
    grid.resize((grid.width * scale, grid.height * scale), Image.NEAREST).save(args.out)


if __name__ == "__main__":
    main()
