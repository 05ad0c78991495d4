#!/usr/bin/env python3
"""Draws the default model's training curves (www/models/default/training.json, written by
train_default.py's export) as an SVG, with no plotting library: docs/loss.svg.

    python3 tools/plot_loss.py www/models/default/training.json docs/loss.svg
"""

import json
import math
import sys


def polyline(points, x_of, y_of, colour):
    path = " ".join(f"{x_of(x):.1f},{y_of(y):.1f}" for x, y in points)
    return f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{path}"/>'


def main(src, dst):
    log = json.load(open(src))
    unet = [(s, l) for s, _, l in log["unet"]]
    vae = [(s, r) for s, _, r, _ in log["vae"]]
    w, h, pad = 640, 300, 50

    def panel(series, title, x0, width, colour):
        xs = [s for s, _ in series]
        ys = [math.log10(max(v, 1e-6)) for _, v in series]
        lo, hi = math.floor(min(ys) * 2) / 2, math.ceil(max(ys) * 2) / 2
        x_of = lambda s: x0 + pad + (s - xs[0]) / max(1, xs[-1] - xs[0]) * (width - 1.5 * pad)
        y_of = lambda v: h - pad + (lo - math.log10(max(v, 1e-6))) / max(1e-9, hi - lo) * (h - 1.5 * pad)
        out = [f'<text x="{x0 + pad}" y="20" font-size="13">{title}</text>']
        out.append(polyline(series, x_of, y_of, colour))
        out.append(f'<line x1="{x0 + pad}" y1="{h - pad}" x2="{x0 + width - pad / 2}" y2="{h - pad}" stroke="#888"/>')
        out.append(f'<line x1="{x0 + pad}" y1="{h - pad}" x2="{x0 + pad}" y2="{pad / 2}" stroke="#888"/>')
        for e in range(int(lo * 2), int(hi * 2) + 1):
            v = 10 ** (e / 2)
            y = y_of(v)
            out.append(f'<text x="{x0 + 4}" y="{y + 4:.1f}" font-size="10">{v:.3g}</text>')
        out.append(f'<text x="{x0 + pad}" y="{h - pad + 15}" font-size="10">step {xs[0]}</text>')
        out.append(f'<text x="{x0 + width - 2 * pad}" y="{h - pad + 15}" font-size="10">step {xs[-1]}</text>')
        return out

    body = panel(vae, "VAE reconstruction (L1 + MSE), log scale", 0, w / 2, "#c33")
    body += panel(unet, "UNet loss (min-SNR weighted MSE), log scale", w / 2, w / 2, "#33c")
    svg = f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif">' + "".join(body) + "</svg>\n"
    open(dst, "w").write(svg)


if __name__ == "__main__":
    main(*sys.argv[1:3])
