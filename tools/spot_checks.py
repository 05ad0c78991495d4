#!/usr/bin/env python3
"""Spot checks for a probe run: per category, the first images whose checks failed, as one
PNG grid (scaled 3x) and a Markdown table of what failed, so a reader can see that the
failures come from the model and not from the checker.

    python3 tools/spot_checks.py /tmp/ood docs/ood-spot-checks   # writes .png and .md
"""

import json
import sys
from pathlib import Path

from PIL import Image, ImageDraw


def main(run_dir: str, out_stem: str, per_category: int = 2):
    run = Path(run_dir)
    report = json.loads((run / "report.json").read_text())
    picked = {}
    for e in report["entries"]:
        failed = [v for v in e["verdicts"] if not v["passed"]]
        cat = e["scene"]["category"]
        if failed and len(picked.setdefault(cat, [])) < per_category:
            picked[cat].append((e, failed))
    rows = [item for cat in sorted(picked) for item in picked[cat]]
    scale, cell = 3, 64 * 3 + 8
    grid = Image.new("RGB", (cell * len(rows), cell + 14), "white")
    draw = ImageDraw.Draw(grid)
    lines = ["| # | prompt | seed | failed checks (measurement) |", "| --- | --- | --- | --- |"]
    for i, (e, failed) in enumerate(rows):
        img = Image.open(run / e["image"]).resize((64 * scale, 64 * scale), Image.NEAREST)
        grid.paste(img, (i * cell + 4, 4))
        draw.text((i * cell + 4, 64 * scale + 6), str(i + 1), fill="black")
        what = "; ".join(f"{v['check']} ({v['detail']})" for v in failed)
        lines.append(f"| {i + 1} | {e['prompt']} | {e['seed']} | {what} |")
    grid.save(out_stem + ".png")
    Path(out_stem + ".md").write_text("\n".join(lines) + "\n")
    print(f"wrote {out_stem}.png and {out_stem}.md ({len(rows)} images)")


if __name__ == "__main__":
    main(*sys.argv[1:3])
