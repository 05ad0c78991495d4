#!/usr/bin/env python3
"""Trains the page's embedded default model on the probe's training split.

The model is a small Stable-Diffusion-class model in the diffusers folder layout that the
runtime loads: a byte-level BPE tokenizer in CLIP's format (merges learned with `tokenizers`
on the training prompts), a CLIP text encoder, a UNet2DConditionModel and an AutoencoderKL
(4x downscale: 64x64 RGB <-> 16x16x4 latents), with a DDIM scheduler config.

Data comes from the Rust generator, which is the one source of truth for scenes:

    cargo run --release --bin lina-cli -- probe-data --split train --count 70000 --out DATA

Stages run in order and each resumes from what it left in --work: tokenizer, vae (trained
for --vae-minutes), latents (the training set encoded once), unet (UNet and text encoder
trained jointly for --unet-minutes more, checkpointing every few minutes), export (EMA
weights in f16 to --out). Everything is seeded; a rerun with the same data, settings and
thread count continues the same run. To continue in a later session without --work, pass
--init-from a previously exported model folder: its weights seed a fresh optimiser.

    python3 tools/train_default.py --data DATA --work WORK --out models/default \\
        --vae-minutes 15 --unet-minutes 100

It needs torch, diffusers, transformers, tokenizers and safetensors: `pip install -r
tools/requirements.txt` installs the versions the other tools and the fixtures use.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

SIZE = 64
MAX_LEN = 32
CLIP_SPLIT = (
    r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"
)
BOS, EOS = "<|startoftext|>", "<|endoftext|>"

VAE_CONFIG = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=["DownEncoderBlock2D"] * 3,
    up_block_types=["UpDecoderBlock2D"] * 3,
    block_out_channels=[16, 32, 32],
    layers_per_block=1,
    latent_channels=4,
    norm_num_groups=8,
    sample_size=SIZE,
)
UNET_CONFIG = dict(
    sample_size=SIZE // 4,
    in_channels=4,
    out_channels=4,
    block_out_channels=[48, 96, 96],
    down_block_types=["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    up_block_types=["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    layers_per_block=1,
    cross_attention_dim=128,
    attention_head_dim=4,
    norm_num_groups=16,
)
TEXT_CONFIG = dict(
    hidden_size=128,
    intermediate_size=512,
    num_hidden_layers=3,
    num_attention_heads=4,
    max_position_embeddings=MAX_LEN,
    hidden_act="quick_gelu",
)
SCHEDULER_CONFIG = {
    "_class_name": "DDIMScheduler",
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000,
    "clip_sample": False,
    "set_alpha_to_one": False,
    "steps_offset": 1,
    "prediction_type": "epsilon",
    "timestep_spacing": "leading",
}


def log(msg: str):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def write_json(path: Path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2) + "\n")


def save_atomic(obj, path: Path):
    """torch.save through a temporary file, so a kill mid-write never leaves a torn checkpoint."""
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------
# data


class Data:
    def __init__(self, root: Path):
        lines = (root / "prompts.jsonl").read_text().splitlines()
        self.meta = [json.loads(l) for l in lines]
        self.prompts = [m["prompt"] for m in self.meta]
        n = len(self.prompts)
        self.images = np.memmap(root / "images.u8", dtype=np.uint8, mode="r", shape=(n, SIZE, SIZE, 3))

    def __len__(self):
        return len(self.prompts)

    def pixels(self, idx) -> torch.Tensor:
        """Images at `idx` as [B, 3, 64, 64] in [-1, 1]."""
        x = torch.from_numpy(np.ascontiguousarray(self.images[np.sort(idx)])).float()
        return x.permute(0, 3, 1, 2) / 127.5 - 1.0


# ---------------------------------------------------------------------------------------------
# tokenizer


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible map from bytes to printable characters."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def train_tokenizer(prompts: list[str], out: Path):
    """Learns BPE merges on the prompts with `tokenizers`, then writes them in CLIP's format:
    the 256 byte characters, the same with `</w>`, one token per merge, then the two specials.
    Byte-level BPE covers any text, so words outside the training vocabulary still encode."""
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(end_of_word_suffix="</w>"))
    tok.normalizer = normalizers.Sequence(
        [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()]
    )
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(CLIP_SPLIT), behavior="removed", invert=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    trainer = trainers.BpeTrainer(
        vocab_size=2000,
        min_frequency=2,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        end_of_word_suffix="</w>",
    )
    tok.train_from_iterator(sorted(set(prompts)), trainer)
    raw = json.loads(tok.to_str())["model"]["merges"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in raw]

    base = list(bytes_to_unicode().values())
    tokens = base + [t + "</w>" for t in base]
    seen = set(tokens)
    kept = []
    for a, b in merges:
        if a in seen and b in seen and a + b not in seen:
            kept.append((a, b))
            tokens.append(a + b)
            seen.add(a + b)
    tokens += [BOS, EOS]
    vocab = {t: i for i, t in enumerate(tokens)}

    out.mkdir(parents=True, exist_ok=True)
    (out / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    with open(out / "merges.txt", "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n")
        for a, b in kept:
            f.write(f"{a} {b}\n")
    special = lambda c: {"content": c, "lstrip": False, "normalized": True, "rstrip": False, "single_word": False}
    write_json(
        out / "tokenizer_config.json",
        {
            "add_prefix_space": False,
            "bos_token": special(BOS),
            "do_lower_case": True,
            "eos_token": special(EOS),
            "errors": "replace",
            "model_max_length": MAX_LEN,
            "pad_token": EOS,
            "tokenizer_class": "CLIPTokenizer",
            "unk_token": special(EOS),
        },
    )
    write_json(
        out / "special_tokens_map.json",
        {"bos_token": special(BOS), "eos_token": special(EOS), "pad_token": EOS, "unk_token": special(EOS)},
    )
    from transformers import CLIPTokenizerFast

    fast = CLIPTokenizerFast.from_pretrained(str(out))
    with tempfile.TemporaryDirectory() as td:
        fast.save_pretrained(td)
        shutil.copy(Path(td) / "tokenizer.json", out / "tokenizer.json")
    words = sorted({w for p in prompts for w in p.replace(",", " ").split()})
    whole = sum(len(fast(w, add_special_tokens=False).input_ids) == 1 for w in words)
    longest = max(len(fast(p).input_ids) for p in set(prompts))
    log(f"tokenizer: {len(vocab)} tokens, {len(kept)} merges; {whole}/{len(words)} words are one token; longest prompt {longest} tokens")
    assert longest <= MAX_LEN, "a training prompt does not fit the text encoder"


def load_tokenizer(path: Path):
    from transformers import CLIPTokenizerFast

    return CLIPTokenizerFast.from_pretrained(str(path))


def tokenize(tok, texts: list[str]) -> torch.Tensor:
    return tok(texts, padding="max_length", max_length=MAX_LEN, truncation=True, return_tensors="pt").input_ids


# ---------------------------------------------------------------------------------------------
# autoencoder


def train_vae(data: Data, work: Path, minutes: float, batch: int, seed: int):
    from diffusers import AutoencoderKL

    ckpt = work / "vae.pt"
    torch.manual_seed(seed)
    vae = AutoencoderKL(**VAE_CONFIG)
    opt = torch.optim.AdamW(vae.parameters(), lr=1e-3, weight_decay=0.0)
    state = {"step": 0, "seconds": 0.0, "log": []}
    if ckpt.exists():
        saved = torch.load(ckpt, weights_only=False)
        vae.load_state_dict(saved["model"])
        opt.load_state_dict(saved["opt"])
        state = saved["state"]
        log(f"vae: resuming at step {state['step']}")
    rng = np.random.default_rng(seed + state["step"])
    budget = minutes * 60.0
    started, last_save = time.time(), time.time()
    spent0 = state["seconds"]
    while state["seconds"] < budget:
        x = data.pixels(rng.integers(0, len(data), batch))
        post = vae.encode(x).latent_dist
        z = post.sample()
        y = vae.decode(z).sample
        rec = F.l1_loss(y, x) + F.mse_loss(y, x)
        kl = post.kl().mean() / (4 * 16 * 16)
        loss = rec + 1e-4 * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        state["step"] += 1
        state["seconds"] = spent0 + time.time() - started
        if state["step"] % 50 == 0:
            state["log"].append([state["step"], round(state["seconds"], 1), float(rec), float(kl)])
            log(f"vae step {state['step']}: reconstruction {float(rec):.4f}, kl {float(kl):.3f}")
        if time.time() - last_save > 300:
            save_atomic({"model": vae.state_dict(), "opt": opt.state_dict(), "state": state}, ckpt)
            last_save = time.time()
    save_atomic({"model": vae.state_dict(), "opt": opt.state_dict(), "state": state}, ckpt)
    return vae


def load_vae(work: Path):
    from diffusers import AutoencoderKL

    vae = AutoencoderKL(**VAE_CONFIG)
    vae.load_state_dict(torch.load(work / "vae.pt", weights_only=False)["model"])
    return vae.eval()


@torch.no_grad()
def encode_all(data: Data, vae, work: Path):
    """The posterior mean and std of every training image, in f16, and the scaling factor
    that gives the latents unit variance (as SD's 0.18215 does for its VAE)."""
    path = work / "latents.pt"
    if path.exists():
        return torch.load(path, weights_only=False)
    means, stds = [], []
    for i in range(0, len(data), 256):
        post = vae.encode(data.pixels(np.arange(i, min(i + 256, len(data))))).latent_dist
        means.append(post.mean.half())
        stds.append(post.std.half())
    mean, std = torch.cat(means), torch.cat(stds)
    scale = float(1.0 / mean.float().std())
    out = {"mean": mean, "std": std, "scaling_factor": scale}
    save_atomic(out, path)
    log(f"latents: {tuple(mean.shape)}, scaling factor {scale:.4f}")
    return out


# ---------------------------------------------------------------------------------------------
# UNet and text encoder


def build_denoiser(vocab_size: int, bos: int, eos: int, pad: int):
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    text = CLIPTextModel(
        CLIPTextConfig(vocab_size=vocab_size, bos_token_id=bos, eos_token_id=eos, pad_token_id=pad, **TEXT_CONFIG)
    )
    unet = UNet2DConditionModel(**UNET_CONFIG)
    return text, unet


def sampling_weights(data: Data, category_weights: dict[str, float]) -> np.ndarray | None:
    """Per-scene probabilities that draw the named categories more often (None: uniform).

    Oversampling changes how often the model sees a category, not what the scenes hold: the
    training split's priors stay as documented."""
    if not category_weights:
        return None
    unknown = set(category_weights) - {m["category"] for m in data.meta}
    if unknown:
        raise SystemExit(f"--category-weight names unknown categories: {sorted(unknown)}")
    w = np.array([category_weights.get(m["category"], 1.0) for m in data.meta], dtype=np.float64)
    return w / w.sum()


def train_unet(
    data: Data,
    work: Path,
    init_from: Path | None,
    minutes: float,
    batch: int,
    seed: int,
    category_weights: dict[str, float],
    lr_final: float | None,
):
    from diffusers import DDPMScheduler

    tok = load_tokenizer(work / "tokenizer")
    latents = encode_all(data, load_vae(work), work)
    text, unet = build_denoiser(len(tok), tok.bos_token_id, tok.eos_token_id, tok.pad_token_id)
    ckpt = work / "unet.pt"
    params = list(unet.parameters()) + list(text.parameters())
    opt = torch.optim.AdamW(params, lr=3e-4, weight_decay=1e-2)
    state = {"step": 0, "seconds": 0.0, "log": []}
    if ckpt.exists():
        saved = torch.load(ckpt, weights_only=False)
        unet.load_state_dict(saved["unet"])
        text.load_state_dict(saved["text"])
        opt.load_state_dict(saved["opt"])
        ema = saved["ema"]
        state = saved["state"]
        log(f"unet: resuming at step {state['step']} ({state['seconds'] / 60:.1f} min trained)")
    else:
        if init_from is not None:
            from safetensors.torch import load_file

            unet.load_state_dict({k: v.float() for k, v in load_file(init_from / "unet/diffusion_pytorch_model.safetensors").items()})
            text.load_state_dict({k: v.float() for k, v in load_file(init_from / "text_encoder/model.safetensors").items()}, strict=False)
            log(f"unet: initialised from {init_from}")
        ema = {k: v.detach().clone() for k, v in list(unet.state_dict().items()) + [("text." + k, v) for k, v in text.state_dict().items()]}
    n_params = sum(p.numel() for p in unet.parameters()) / 1e6, sum(p.numel() for p in text.parameters()) / 1e6
    log(f"unet {n_params[0]:.2f}M params, text encoder {n_params[1]:.2f}M params")

    sched = DDPMScheduler(**{k: v for k, v in SCHEDULER_CONFIG.items() if not k.startswith("_") and k not in ("set_alpha_to_one", "steps_offset")})
    alphas = sched.alphas_cumprod
    snr = alphas / (1 - alphas)
    ids_all = tokenize(tok, data.prompts)
    empty = tokenize(tok, [""])[0]
    scale = latents["scaling_factor"]
    g = torch.Generator().manual_seed(seed + state["step"])
    rng = np.random.default_rng(seed + state["step"])
    budget = state["seconds"] + minutes * 60.0
    started, last_save, spent0 = time.time(), time.time(), state["seconds"]
    decay = 0.999

    def save():
        save_atomic({"unet": unet.state_dict(), "text": text.state_dict(), "opt": opt.state_dict(), "ema": ema, "state": state}, ckpt)

    probs = sampling_weights(data, category_weights)
    running = []
    while state["seconds"] < budget:
        if probs is None:
            idx = torch.from_numpy(rng.integers(0, len(data), batch))
        else:
            idx = torch.from_numpy(rng.choice(len(data), size=batch, p=probs))
        z0 = (latents["mean"][idx].float() + latents["std"][idx].float() * torch.randn(batch, 4, 16, 16, generator=g)) * scale
        ids = ids_all[idx].clone()
        drop = torch.rand(batch, generator=g) < 0.1  # for classifier-free guidance
        ids[drop] = empty
        t = torch.randint(0, 1000, (batch,), generator=g)
        noise = torch.randn(z0.shape, generator=g)
        zt = sched.add_noise(z0, noise, t)
        ctx = text(ids)[0]
        pred = unet(zt, t, ctx).sample
        # Min-SNR weighting (gamma 5): stops the easy low-noise steps from dominating.
        w = torch.clamp(snr[t], max=5.0) / snr[t]
        loss = (w * ((pred - noise) ** 2).mean(dim=(1, 2, 3))).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        lr = 3e-4 * min(1.0, (state["step"] + 1) / 500)
        if lr_final is not None:
            # Cosine decay over this run's budget: a continuation ends on a low learning rate.
            done = min(1.0, (state["seconds"] - spent0) / max(1.0, budget - spent0))
            lr = lr_final + (lr - lr_final) * 0.5 * (1 + math.cos(math.pi * done))
        for group in opt.param_groups:
            group["lr"] = lr
        opt.step()
        with torch.no_grad():
            d = min(decay, (1 + state["step"]) / (10 + state["step"]))
            current = dict(list(unet.state_dict().items()) + [("text." + k, v) for k, v in text.state_dict().items()])
            for k, v in current.items():
                if v.dtype.is_floating_point:
                    ema[k].mul_(d).add_(v.detach(), alpha=1 - d)
                else:
                    ema[k].copy_(v)
        state["step"] += 1
        state["seconds"] = spent0 + time.time() - started
        running.append(float(loss.detach()))
        if state["step"] % 50 == 0:
            mean = sum(running) / len(running)
            running = []
            state["log"].append([state["step"], round(state["seconds"], 1), mean])
            log(f"unet step {state['step']}: loss {mean:.4f} ({state['seconds'] / 60:.1f} min)")
        if time.time() - last_save > 300:
            save()
            last_save = time.time()
    save()


# ---------------------------------------------------------------------------------------------
# export


def export(work: Path, out: Path):
    """Writes the EMA weights in f16 in the diffusers layout, and the loss curves next to them."""
    from diffusers import AutoencoderKL

    tok = load_tokenizer(work / "tokenizer")
    text, unet = build_denoiser(len(tok), tok.bos_token_id, tok.eos_token_id, tok.pad_token_id)
    saved = torch.load(work / "unet.pt", weights_only=False)
    ema = saved["ema"]
    unet.load_state_dict({k: v for k, v in ema.items() if not k.startswith("text.")})
    text.load_state_dict({k[5:]: v for k, v in ema.items() if k.startswith("text.")})
    vae_saved = torch.load(work / "vae.pt", weights_only=False)
    vae = AutoencoderKL(**VAE_CONFIG)
    vae.load_state_dict(vae_saved["model"])
    scale = torch.load(work / "latents.pt", weights_only=False)["scaling_factor"]
    vae.register_to_config(scaling_factor=scale)

    if out.exists():
        shutil.rmtree(out)
    # save_pretrained writes the configs and safetensors exactly as diffusers folders have them.
    unet.half().save_pretrained(out / "unet")
    vae.half().save_pretrained(out / "vae")
    text.half().save_pretrained(out / "text_encoder")
    # transformers >= 5 drops the `text_model.` prefix that every SD repository has; put it back.
    from safetensors.torch import load_file, save_file

    te_file = out / "text_encoder" / "model.safetensors"
    te = {(k if k.startswith("text_model.") else "text_model." + k): v.contiguous() for k, v in load_file(te_file).items()}
    save_file(te, str(te_file), metadata={"format": "pt"})
    shutil.copytree(work / "tokenizer", out / "tokenizer", ignore=shutil.ignore_patterns("tokenizer.json"))
    write_json(out / "scheduler" / "scheduler_config.json", SCHEDULER_CONFIG)
    write_json(
        out / "model_index.json",
        {
            "_class_name": "StableDiffusionPipeline",
            "scheduler": ["diffusers", "DDIMScheduler"],
            "text_encoder": ["transformers", "CLIPTextModel"],
            "tokenizer": ["transformers", "CLIPTokenizer"],
            "unet": ["diffusers", "UNet2DConditionModel"],
            "vae": ["diffusers", "AutoencoderKL"],
        },
    )
    curves = {"vae": vae_saved["state"]["log"], "unet": saved["state"]["log"],
              "unet_steps": saved["state"]["step"], "unet_minutes": saved["state"]["seconds"] / 60,
              "vae_steps": vae_saved["state"]["step"], "vae_minutes": vae_saved["state"]["seconds"] / 60,
              "threads": torch.get_num_threads()}
    write_json(out / "training.json", curves)
    total = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    log(f"exported to {out}: {total / 1e6:.1f} MB; unet at step {saved['state']['step']}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--stages", default="tokenizer,vae,latents,unet,export")
    ap.add_argument("--vae-minutes", type=float, default=15)
    ap.add_argument("--unet-minutes", type=float, default=100)
    ap.add_argument("--vae-batch", type=int, default=32)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--init-from", type=Path)
    ap.add_argument(
        "--category-weight",
        action="append",
        default=[],
        metavar="CATEGORY=W",
        help="draw scenes of CATEGORY W times as often (repeatable)",
    )
    ap.add_argument("--lr-final", type=float, help="decay the learning rate to this over the run (cosine)")
    args = ap.parse_args()
    category_weights = {}
    for item in args.category_weight:
        name, _, w = item.partition("=")
        category_weights[name] = float(w)
    torch.set_num_threads(args.threads)
    random.seed(args.seed)
    args.work.mkdir(parents=True, exist_ok=True)
    data = Data(args.data)
    log(f"data: {len(data)} scenes from {args.data}")
    stages = args.stages.split(",")
    if "tokenizer" in stages and not (args.work / "tokenizer" / "tokenizer.json").exists():
        train_tokenizer(data.prompts, args.work / "tokenizer")
    if "vae" in stages:
        train_vae(data, args.work, args.vae_minutes, args.vae_batch, args.seed)
    if "latents" in stages:
        encode_all(data, load_vae(args.work), args.work)
    if "unet" in stages:
        train_unet(
            data,
            args.work,
            args.init_from,
            args.unet_minutes,
            args.batch,
            args.seed,
            category_weights,
            args.lr_final,
        )
    if "export" in stages:
        export(args.work, args.out)


if __name__ == "__main__":
    sys.exit(main())
