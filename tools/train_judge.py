"""Trains the second judge's segmenter (crates/judge/src/segment.rs) on the probe's renders.

    cargo run --bin lina-cli -- probe-data --split train --count 14000 --labels --with-broken --out /tmp/judge-data
    python3 tools/train_judge.py /tmp/judge-data crates/judge/judge.safetensors 6

Needs only numpy (tools/requirements.txt). The network labels each pixel from its 5x5
neighbourhood and its height in the image: 76 inputs, ReLU layers of 48 and 32, one score per
label (16). Every image is degraded at random before its pixels are sampled (Gaussian blur,
noise, a colour gain and offset), because the judge must read a diffusion model's soft and
noisy images, not only clean renders. Half the scenes are drawn with their category's
typical failure (a floating object, a spilled reflection), so that the network does not learn
that what sits above a table is always on it. The labels come from the probe's exact masks
(lina_judge::Label::training_map). The checker is never consulted: this network is the
judge's own view of the image. The last argument is the number of epochs.

Writes the weights as safetensors (l1/l2/l3 .weight [inputs, outputs] and .bias), F32, by
hand: the format is an 8-byte header length, a JSON header and the raw data.
"""

import json
import struct
import sys

import numpy as np

SIZE = 64
LABELS = 16
PATCH = 5
INPUTS = PATCH * PATCH * 3 + 1
HIDDEN = (48, 32)
SEED = 20261203


def blur(img, sigma):
    """Separable Gaussian blur of an HxWx3 float image, edges repeated."""
    if sigma < 0.05:
        return img
    r = max(1, int(3 * sigma))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    k /= k.sum()
    p = np.pad(img, ((r, r), (0, 0), (0, 0)), mode="edge")
    img = sum(k[i] * p[i : i + img.shape[0]] for i in range(2 * r + 1))
    p = np.pad(img, ((0, 0), (r, r), (0, 0)), mode="edge")
    return sum(k[i] * p[:, i : i + img.shape[1]] for i in range(2 * r + 1))


def degrade(img, rng):
    img = blur(img, rng.uniform(0.0, 1.3))
    img = img * rng.uniform(0.9, 1.1, size=3) + rng.uniform(-12, 12, size=3)
    img = img + rng.normal(0.0, rng.uniform(0.0, 10.0), size=img.shape)
    return np.clip(img, 0, 255)


def features(img, ys, xs):
    """The network's inputs at the given pixels of one HxWx3 image in [0, 255]."""
    r = PATCH // 2
    p = np.pad(img, ((r, r), (r, r), (0, 0)), mode="edge")
    cols = []
    for dy in range(PATCH):
        for dx in range(PATCH):
            cols.append(p[ys + dy, xs + dx])
    x = np.concatenate(cols, axis=1) / 255.0 - 0.5
    h = ((ys + 0.5) / SIZE - 0.5)[:, None]
    return np.concatenate([x, h], axis=1).astype(np.float32)


def sample(images, labels, rng, per_image):
    """Pixels from every image, degraded, weighted towards rare labels and edges."""
    xs_all, ys_all = [], []
    for img, lab in zip(images, labels):
        img = degrade(img.astype(np.float32), rng)
        flat = lab.reshape(-1)
        # Rare labels (a shadow, a reflection, a thin jar wall) get as many samples as
        # the wall does: weight each pixel by the inverse of its label's frequency.
        counts = np.bincount(flat, minlength=LABELS).astype(np.float64)
        w = 1.0 / np.maximum(counts[flat], 1.0) ** 0.7
        w /= w.sum()
        idx = rng.choice(flat.size, size=per_image, p=w)
        ys, xs = idx // SIZE, idx % SIZE
        xs_all.append(features(img, ys, xs))
        ys_all.append(flat[idx])
    return np.concatenate(xs_all), np.concatenate(ys_all)


def init(rng):
    dims = (INPUTS,) + HIDDEN + (LABELS,)
    return [
        [rng.normal(0, np.sqrt(2.0 / a), size=(a, b)).astype(np.float32), np.zeros(b, np.float32)]
        for a, b in zip(dims[:-1], dims[1:])
    ]


def forward(params, x):
    acts = [x]
    for i, (w, b) in enumerate(params):
        x = x @ w + b
        if i < len(params) - 1:
            x = np.maximum(x, 0)
        acts.append(x)
    return acts


def train(params, x, y, rng, epochs, lr=3e-3, batch=1024):
    """Adam on the cross-entropy."""
    m = [[np.zeros_like(p) for p in layer] for layer in params]
    v = [[np.zeros_like(p) for p in layer] for layer in params]
    t = 0
    for epoch in range(epochs):
        order = rng.permutation(len(x))
        total = 0.0
        for s in range(0, len(x), batch):
            idx = order[s : s + batch]
            acts = forward(params, x[idx])
            logits = acts[-1]
            logits = logits - logits.max(axis=1, keepdims=True)
            p = np.exp(logits)
            p /= p.sum(axis=1, keepdims=True)
            total += -np.log(p[np.arange(len(idx)), y[idx]] + 1e-9).sum()
            g = p
            g[np.arange(len(idx)), y[idx]] -= 1
            g /= len(idx)
            t += 1
            for i in reversed(range(len(params))):
                w, b = params[i]
                gw = acts[i].T @ g
                gb = g.sum(axis=0)
                if i > 0:
                    g = (g @ w.T) * (acts[i] > 0)
                for j, (param, grad) in enumerate(((w, gw), (b, gb))):
                    m[i][j] = 0.9 * m[i][j] + 0.1 * grad
                    v[i][j] = 0.999 * v[i][j] + 0.001 * grad * grad
                    mh = m[i][j] / (1 - 0.9**t)
                    vh = v[i][j] / (1 - 0.999**t)
                    param -= lr * mh / (np.sqrt(vh) + 1e-8)
        lr *= 0.6
        print(f"epoch {epoch}: loss {total / len(x):.4f}", flush=True)
    return params


def accuracy(params, x, y):
    pred = forward(params, x)[-1].argmax(axis=1)
    return (pred == y).mean()


def save(params, path):
    header, blobs, offset = {}, [], 0
    for i, (w, b) in enumerate(params):
        for name, t in ((f"l{i + 1}.weight", w), (f"l{i + 1}.bias", b)):
            data = np.ascontiguousarray(t, dtype="<f4").tobytes()
            header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
            blobs.append(data)
            offset += len(data)
    header["__metadata__"] = {"tool": "tools/train_judge.py", "seed": str(SEED)}
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for blob in blobs:
            f.write(blob)


def main():
    data, out = sys.argv[1], sys.argv[2]
    images = np.fromfile(f"{data}/images.u8", dtype=np.uint8).reshape(-1, SIZE, SIZE, 3)
    labels = np.fromfile(f"{data}/labels.u8", dtype=np.uint8).reshape(-1, SIZE, SIZE)
    n = len(images)
    held = max(n // 10, 1)
    rng = np.random.default_rng(SEED)
    x, y = sample(images[held:], labels[held:], rng, per_image=160)
    xv, yv = sample(images[:held], labels[:held], rng, per_image=160)
    print(f"{len(x)} training pixels from {n - held} images, {len(xv)} held-out pixels", flush=True)
    params = train(init(rng), x, y, rng, epochs=int(sys.argv[3]) if len(sys.argv) > 3 else 6)
    print(f"held-out pixel accuracy (degraded, rare labels weighted up): {accuracy(params, xv, yv):.4f}")
    save(params, out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
