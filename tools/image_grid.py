#!/usr/bin/env python3
"""Tile PNGs into one grid for the docs: each argument is a row, its images separated by
commas, drawn left to right with a white gap, and the whole scaled up (nearest neighbour).

    python3 tools/image_grid.py --out docs/prior-pull.png \\
        /tmp/r/spatial_000.png,/tmp/t3/spatial_000_s0.png /tmp/r/quantity_000.png,...
"""

import argparse

from PIL import Image


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("rows", nargs="+", help="one row: PNG paths separated by commas")
    ap.add_argument("--out", required=True)
    ap.add_argument("--scale", type=int, default=3)
    ap.add_argument("--gap", type=int, default=4)
    args = ap.parse_args()
    rows = [[Image.open(p).convert("RGB") for p in row.split(",")] for row in args.rows]
    gap = args.gap
    width = max(sum(im.width for im in row) + gap * (len(row) - 1) for row in rows)
    height = sum(max(im.height for im in row) for row in rows) + gap * (len(rows) - 1)
    grid = Image.new("RGB", (width, height), "white")
    y = 0
    for row in rows:
        x = 0
        for im in row:
            grid.paste(im, (x, y))
            x += im.width + gap
        y += max(im.height for im in row) + gap
    grid.resize((width * args.scale, height * args.scale), Image.NEAREST).save(args.out)


if __name__ == "__main__":
    main()
