#!/usr/bin/env python3
"""Build the small test fixtures under tests/fixtures/.

Developer-side script (not run by cargo). It needs the pinned versions of
tools/requirements.txt (torch, diffusers, transformers, safetensors, accelerate, ...), the
ones the committed fixtures were made with:

    pip install -r tools/requirements.txt

and OpenAI CLIP's BPE merge file `bpe_simple_vocab_16e6.txt.gz` (shipped in the
`open-clip-torch` wheel as `open_clip/bpe_simple_vocab_16e6.txt.gz`). The file is
looked up in this order: `--bpe PATH`, the installed `open_clip` package, any
`open_clip_torch-*.whl` under `--wheel-dir` (default /tmp/oc), /tmp/bpe_simple_vocab_16e6.txt.gz.

Usage:
    python3 tools/make_fixtures.py [--bpe PATH] [--out tests/fixtures]

Everything is float32, CPU, deterministic (fixed seeds). See tests/fixtures/README.md.
"""

from __future__ import annotations

import argparse
import glob
import gzip
import html
import io
import json
import math
import os
import shutil
import sys
import tempfile
import unicodedata
import zipfile
from pathlib import Path

import numpy as np
import regex
import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent

NUM_MERGES = 2000
MAX_LEN = 77
PROMPT = "a red ball on a small mirror"
NEGATIVE_PROMPT = "blurry"
GUIDANCE = 7.5
STEPS = 10
HEIGHT = WIDTH = 64
UNET_TIMESTEP = 501.0

TOKENIZER_PROMPTS = [
    "a red ball on a small mirror",
    "A Photo of THE Eiffel Tower at NIGHT",
    "Café crème brûlée à Noël",
    "Cafe\u0301 cre\u0300me (decomposed accents, NFC needed)",
    "it's a dog's life!!! (really?)",
    "we'll see, they're here; I'd say you've I'm can't \"quoted\" words",
    "3 cubes, 12 jars and 100 balls",
    "   leading and trailing   spaces\n\nnew lines\tand\ttabs  ",
    "a cute dog \U0001F436 with a rocket \U0001F680 and a heart \u2764\ufe0f",
    "\u732b\u304c\u597d\u304d \u65e5\u672c\u8a9e\u306e\u6587\u7ae0 \u4e00\u53ea\u732b",
    "",
    "photorealistic, 8k, ultra-detailed, trending on artstation -- v2.1 @user #tag $100 50%",
    "mixed: hello123world 4.5 x=y+z a_b c-d e/f",
    "Ελληνικά και русский текст",
    " ".join(["a very long prompt about a castle on a hill under the stars"] * 8),
]


# ----------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------


def log(*a):
    print(*a, flush=True)


def find_bpe(explicit: str | None, wheel_dir: str) -> bytes:
    if explicit:
        return Path(explicit).read_bytes()
    try:
        import open_clip  # type: ignore

        p = Path(open_clip.__file__).parent / "bpe_simple_vocab_16e6.txt.gz"
        if p.exists():
            return p.read_bytes()
    except Exception:
        pass
    for whl in sorted(glob.glob(os.path.join(wheel_dir, "open_clip_torch-*.whl"))):
        with zipfile.ZipFile(whl) as z:
            return z.read("open_clip/bpe_simple_vocab_16e6.txt.gz")
    p = Path("/tmp/bpe_simple_vocab_16e6.txt.gz")
    if p.exists():
        return p.read_bytes()
    sys.exit(
        "bpe_simple_vocab_16e6.txt.gz not found: `pip download --no-deps -d /tmp/oc open-clip-torch` "
        "or pass --bpe"
    )


def bytes_to_unicode() -> dict[int, str]:
    """OpenAI CLIP / GPT-2 reversible byte -> unicode mapping (same order as CLIP's code)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(2**8):
        if b not in bs:
            bs.append(b)
            cs.append(2**8 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def write_json(path: Path, obj, indent=2):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=indent, ensure_ascii=False, allow_nan=False)
        f.write("\n")


def f32_list(t: torch.Tensor) -> list[float]:
    # float(np.float32) is exact in f64, so JSON round-trips to the same f32.
    return [float(x) for x in t.detach().to(torch.float32).reshape(-1).numpy()]


# ----------------------------------------------------------------------------
# 1. tokenizer
# ----------------------------------------------------------------------------


class RefClipBpe:
    """Independent re-implementation of OpenAI CLIP's simple_tokenizer.py algorithm
    (without ftfy.fix_text, which is replaced by NFC normalisation, ftfy's default
    normalisation step). Used to cross-check the `tokenizers`-backed CLIPTokenizer."""

    PAT = regex.compile(
        r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
        regex.IGNORECASE,
    )

    def __init__(self, vocab: dict[str, int], merges: list[tuple[str, str]]):
        self.encoder = vocab
        self.ranks = {m: i for i, m in enumerate(merges)}
        self.byte_encoder = bytes_to_unicode()

    def bpe(self, token: str) -> list[str]:
        word = tuple(token[:-1]) + (token[-1] + "</w>",)
        while len(word) > 1:
            pairs = {(word[i], word[i + 1]) for i in range(len(word) - 1)}
            bigram = min(pairs, key=lambda p: self.ranks.get(p, float("inf")))
            if bigram not in self.ranks:
                break
            first, second = bigram
            new = []
            i = 0
            while i < len(word):
                if i < len(word) - 1 and word[i] == first and word[i + 1] == second:
                    new.append(first + second)
                    i += 2
                else:
                    new.append(word[i])
                    i += 1
            word = tuple(new)
        return list(word)

    def encode(self, text: str) -> list[int]:
        text = unicodedata.normalize("NFC", text)
        text = html.unescape(html.unescape(text)).strip()
        text = regex.sub(r"\s+", " ", text).strip().lower()
        ids = []
        for tok in self.PAT.findall(text):
            tok = "".join(self.byte_encoder[b] for b in tok.encode("utf-8"))
            ids.extend(self.encoder[t] for t in self.bpe(tok))
        return ids


def added_token(content):
    return {"content": content, "lstrip": False, "normalized": True, "rstrip": False, "single_word": False}


def build_tokenizer(bpe_gz: bytes, out: Path):
    lines = gzip.decompress(bpe_gz).decode("utf-8").split("\n")
    # CLIP's code: merges = merges[1:49152-256-2+1]; we keep the first NUM_MERGES.
    merges = [tuple(m.split()) for m in lines[1 : 1 + NUM_MERGES]]
    assert all(len(m) == 2 for m in merges)
    b2u = bytes_to_unicode()
    tokens = list(b2u.values())
    tokens += [t + "</w>" for t in tokens]
    tokens += ["".join(m) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    assert len(set(tokens)) == len(tokens), "duplicate vocab entries"
    vocab = {t: i for i, t in enumerate(tokens)}

    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "vocab.json", vocab, indent=None)
    with open(out / "merges.txt", "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n")
        for a, b in merges:
            f.write(f"{a} {b}\n")
    tok_cfg = {
        "add_prefix_space": False,
        "bos_token": {"__type": "AddedToken", **added_token("<|startoftext|>")},
        "do_lower_case": True,
        "eos_token": {"__type": "AddedToken", **added_token("<|endoftext|>")},
        "errors": "replace",
        "model_max_length": MAX_LEN,
        "name_or_path": "tiny-clip-bpe2000",
        "pad_token": "<|endoftext|>",
        "special_tokens_map_file": "./special_tokens_map.json",
        "tokenizer_class": "CLIPTokenizer",
        "unk_token": {"__type": "AddedToken", **added_token("<|endoftext|>")},
    }
    write_json(out / "tokenizer_config.json", tok_cfg)
    write_json(
        out / "special_tokens_map.json",
        {
            "bos_token": added_token("<|startoftext|>"),
            "eos_token": added_token("<|endoftext|>"),
            "pad_token": "<|endoftext|>",
            "unk_token": added_token("<|endoftext|>"),
        },
    )

    from transformers import CLIPTokenizer, CLIPTokenizerFast

    # transformers >= 5 has no pure-python CLIP tokenizer any more: CLIPTokenizer is
    # the `tokenizers`-backed one (CLIPTokenizerFast is an alias). Load it from
    # vocab.json + merges.txt and save its tokenizer.json next to them.
    fast = CLIPTokenizerFast.from_pretrained(str(out))
    with tempfile.TemporaryDirectory() as td:
        fast.save_pretrained(td)
        shutil.copy(Path(td) / "tokenizer.json", out / "tokenizer.json")
    tok = CLIPTokenizer.from_pretrained(str(out))  # now loads tokenizer.json too
    ref = RefClipBpe(vocab, merges)

    bos, eos = vocab["<|startoftext|>"], vocab["<|endoftext|>"]
    pad = tok.pad_token_id
    assert pad == eos and tok.bos_token_id == bos and tok.eos_token_id == eos, (pad, tok.bos_token_id)
    assert len(tok) == len(vocab), (len(tok), len(vocab))

    cases = []
    mismatches = []
    for p in TOKENIZER_PROMPTS:
        a = tok(p, padding="max_length", truncation=True, max_length=MAX_LEN).input_ids
        b = fast(p, padding="max_length", truncation=True, max_length=MAX_LEN).input_ids
        body = ref.encode(p)[: MAX_LEN - 2]
        r = [bos] + body + [eos]
        unpadded = len(r)
        r = r + [pad] * (MAX_LEN - len(r))
        if not (a == b == r):
            mismatches.append({"prompt": p, "transformers": a, "reference_impl": r})
        assert len(a) == MAX_LEN
        n = len(tok(p, truncation=True, max_length=MAX_LEN).input_ids)
        if n != unpadded:
            mismatches.append({"prompt": p, "unpadded_len": [n, unpadded]})
        cases.append({"prompt": p, "ids": a, "unpadded_len": n})
    write_json(out.parent / "tokenizer_cases.json",
               {"max_length": MAX_LEN, "vocab_size": len(vocab), "bos_id": bos, "eos_id": eos, "pad_id": pad,
                "cases": cases})
    info = {"vocab_size": len(vocab), "bos": bos, "eos": eos, "pad": pad, "mismatches": mismatches}
    log(f"tokenizer: vocab {len(vocab)} bos {bos} eos {eos} pad {pad}; mismatches: {len(mismatches)}")
    for m in mismatches:
        log("  MISMATCH", json.dumps(m, ensure_ascii=False)[:600])
    return tok, info


# ----------------------------------------------------------------------------
# 2. tiny pipelines
# ----------------------------------------------------------------------------


def reinit_(model: nn.Module, seed: int, out_gain: dict[str, float] | None = None):
    """Re-initialise every parameter so nothing is zero / degenerate.

    Linear/Conv weights ~ N(0, 1/fan_in) (unit-gain), biases ~ N(0, 0.05),
    norm weights ~ 1 + N(0, 0.1), norm biases ~ N(0, 0.1), embeddings ~ N(0, 0.5).
    `out_gain` maps a module name to an extra factor on its weight."""
    g = torch.Generator().manual_seed(seed)
    out_gain = out_gain or {}
    seen = set()
    with torch.no_grad():
        for name, mod in model.named_modules():
            params = dict(mod.named_parameters(recurse=False))
            if not params:
                continue
            if isinstance(mod, (nn.Linear, nn.Conv2d)):
                fan_in = mod.weight[0].numel()
                w = torch.randn(mod.weight.shape, generator=g) / math.sqrt(fan_in)
                mod.weight.copy_(w * out_gain.get(name, 1.0))
                if mod.bias is not None:
                    mod.bias.copy_(torch.randn(mod.bias.shape, generator=g) * 0.05)
            elif isinstance(mod, (nn.LayerNorm, nn.GroupNorm)) or type(mod).__name__ in ("RMSNorm", "T5LayerNorm"):
                if mod.weight is not None:
                    mod.weight.copy_(1.0 + 0.1 * torch.randn(mod.weight.shape, generator=g))
                if getattr(mod, "bias", None) is not None:
                    mod.bias.copy_(0.1 * torch.randn(mod.bias.shape, generator=g))
            elif isinstance(mod, nn.Embedding):
                mod.weight.copy_(0.5 * torch.randn(mod.weight.shape, generator=g))
            else:
                raise RuntimeError(f"unhandled module with parameters: {name} {type(mod)} {list(params)}")
            for pn in params:
                seen.add(f"{name}.{pn}" if name else pn)
    all_names = {n for n, _ in model.named_parameters(remove_duplicate=False)}
    assert seen == all_names, all_names - seen


def round_to_f16_(model: nn.Module):
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.half().float())
        for b in model.buffers():
            if b.is_floating_point():
                b.copy_(b.half().float())


def stats(name, t):
    t = torch.as_tensor(t).float()
    log(f"  {name:28s} {tuple(t.shape)} mean {t.mean():+.4f} std {t.std() if t.numel() > 1 else 0.0:.4f} min {t.min():+.3f} max {t.max():+.3f}")
    return {"mean": float(t.mean()), "std": float(t.std()) if t.numel() > 1 else 0.0, "min": float(t.min()), "max": float(t.max())}


SD_BETAS = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")


def make_scheduler(kind: str):
    from diffusers import DDIMScheduler, EulerDiscreteScheduler

    if kind == "sd1":
        return DDIMScheduler(
            **SD_BETAS,
            clip_sample=False,
            set_alpha_to_one=False,
            steps_offset=1,
            prediction_type="epsilon",
            timestep_spacing="leading",
        )
    return EulerDiscreteScheduler(
        **SD_BETAS,
        steps_offset=1,
        prediction_type="v_prediction",
        timestep_spacing="trailing",
    )


def build_models(kind: str, tok):
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    base_seed = 1000 if kind == "sd1" else 2000
    torch.manual_seed(base_seed)
    te_cfg = CLIPTextConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=MAX_LEN,
        hidden_act="quick_gelu" if kind == "sd1" else "gelu",
        projection_dim=32,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        layer_norm_eps=1e-5,
    )
    text_encoder = CLIPTextModel(te_cfg).eval()
    reinit_(text_encoder, base_seed + 1)

    torch.manual_seed(base_seed + 10)
    if kind == "sd1":
        unet = sd1_unet(in_channels=4)
    else:
        unet = UNet2DConditionModel(
            sample_size=8,
            in_channels=4,
            out_channels=4,
            block_out_channels=(32, 64, 64),
            layers_per_block=1,
            down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
            cross_attention_dim=32,
            # one entry per block (diffusers requires len == len(down_block_types));
            # like SD2's [5,10,20,20] it gives a constant head size (16 here).
            attention_head_dim=[2, 4, 4],
            use_linear_projection=True,
            upcast_attention=False,
            norm_num_groups=32,
        )
    unet.eval()
    # output conv scaled down so the eps/v prediction is O(0.5) rather than O(1)
    reinit_(unet, base_seed + 11, out_gain={"conv_out": 0.5})

    torch.manual_seed(base_seed + 20)
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(16, 16, 32, 32),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=64,
        scaling_factor=0.18215,
    ).eval()
    # smaller output conv so decoded images are mostly inside [-1, 1] (less clamping)
    reinit_(vae, base_seed + 21, out_gain={"decoder.conv_out": 0.5})

    if kind == "sd2":
        for m in (text_encoder, unet, vae):
            round_to_f16_(m)
    return text_encoder, unet, vae


@torch.no_grad()
def compute_refs(kind, tok, text_encoder, unet, vae, scheduler_factory):
    from diffusers import StableDiffusionPipeline

    seed = 3000 if kind == "sd1" else 4000
    refs: dict[str, torch.Tensor] = {}
    ids = tok([PROMPT, ""], padding="max_length", truncation=True, max_length=MAX_LEN, return_tensors="pt").input_ids
    refs["text_input_ids"] = ids.to(torch.int64)
    out = text_encoder(ids, output_hidden_states=True)
    refs["text_last_hidden"] = out.last_hidden_state
    # transformers >= 5 flattened CLIPTextModel (no `.text_model` wrapper any more)
    inner = getattr(text_encoder, "text_model", text_encoder)
    assert len(out.hidden_states) == text_encoder.config.num_hidden_layers + 1
    refs["text_clip_skip_1"] = inner.final_layer_norm(out.hidden_states[-2])

    g = torch.Generator().manual_seed(seed)
    refs["unet_sample"] = torch.randn((2, 4, 8, 8), generator=g)
    refs["unet_timestep"] = torch.tensor([UNET_TIMESTEP], dtype=torch.float32)
    refs["unet_encoder_hidden_states"] = refs["text_last_hidden"].clone()
    refs["unet_out"] = unet(refs["unet_sample"], refs["unet_timestep"], refs["unet_encoder_hidden_states"]).sample

    refs["vae_latents"] = torch.randn((1, 4, 8, 8), generator=g)
    refs["vae_decoded"] = vae.decode(refs["vae_latents"]).sample

    refs["pipe_init_latents"] = torch.randn((1, 4, 8, 8), generator=g)
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tok,
        unet=unet,
        scheduler=scheduler_factory(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    per_step = []

    def cb(p, i, t, kw):
        per_step.append(kw["latents"].clone())
        return kw

    res = pipe(
        prompt=PROMPT,
        negative_prompt=NEGATIVE_PROMPT,
        num_inference_steps=STEPS,
        guidance_scale=GUIDANCE,
        latents=refs["pipe_init_latents"].clone(),
        output_type="np",
        height=HEIGHT,
        width=WIDTH,
        callback_on_step_end=cb,
        callback_on_step_end_tensor_inputs=["latents"],
    )
    refs["pipe_image"] = torch.from_numpy(np.asarray(res.images, dtype=np.float32))
    refs["pipe_final_latents"] = per_step[-1]
    refs["pipe_latents_per_step"] = torch.cat(per_step, 0)  # [steps,4,8,8]
    ts = pipe.scheduler.timesteps
    refs["pipe_step_timesteps"] = ts.round().to(torch.int64)
    assert torch.equal(ts.to(torch.float64), refs["pipe_step_timesteps"].to(torch.float64)), ts
    # embeddings the pipeline fed to the UNet (classifier-free guidance order: [negative, positive])
    neg_ids = tok([NEGATIVE_PROMPT], padding="max_length", truncation=True, max_length=MAX_LEN, return_tensors="pt").input_ids
    refs["pipe_negative_input_ids"] = neg_ids.to(torch.int64)
    refs["pipe_prompt_embeds"] = text_encoder(torch.cat([neg_ids, ids[:1]])).last_hidden_state
    pipe_meta = {
        "init_noise_sigma": float(pipe.scheduler.init_noise_sigma),
        "scheduler_timesteps_float": [float(t) for t in ts],
    }
    refs = {k: (v.contiguous() if v.dtype == torch.int64 else v.to(torch.float32).contiguous()) for k, v in refs.items()}
    return refs, pipe_meta


def make_pipeline(kind: str, tok, tok_dir: Path, fix: Path):
    from diffusers import StableDiffusionPipeline
    from safetensors.torch import load_file, save_file

    name = f"{kind}_tiny"
    out = fix / name
    if out.exists():
        shutil.rmtree(out)
    log(f"== {name}")
    text_encoder, unet, vae = build_models(kind, tok)
    sched_factory = lambda: make_scheduler(kind)  # noqa: E731
    refs, pipe_meta = compute_refs(kind, tok, text_encoder, unet, vae, sched_factory)
    st = {k: stats(k, v) for k, v in refs.items() if v.is_floating_point()}
    frac_clamped = float(((refs["pipe_image"] <= 0) | (refs["pipe_image"] >= 1)).float().mean())
    log(f"  pipe_image fraction at 0 or 1: {frac_clamped:.3f}")

    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tok,
        unet=unet,
        scheduler=sched_factory(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    if kind == "sd2":
        pipe.to(torch.float16)
    pipe.save_pretrained(str(out), safe_serialization=True)
    if kind == "sd2":
        pipe.to(torch.float32)
    # transformers >= 5 saves CLIPTextModel weights without the `text_model.` prefix; every
    # real SD 1.x/2.x repository (and transformers 4.x) uses `text_model.embeddings...`.
    # Rewrite the file with the classic names (transformers 5 still loads them, checked below).
    te_file = out / "text_encoder" / "model.safetensors"
    te_sd = load_file(str(te_file))
    te_sd = {(k if k.startswith("text_model.") else "text_model." + k): v.contiguous() for k, v in te_sd.items()}
    if kind == "sd1":
        # SD 1.5's shipped text encoder (saved by transformers < 4.31) also holds the persistent
        # buffer `text_model.embeddings.position_ids` (int64 [1, 77]); keep one so loaders
        # are exercised against a non-float tensor they must skip/accept.
        te_sd["text_model.embeddings.position_ids"] = torch.arange(MAX_LEN, dtype=torch.int64)[None]
    save_file(te_sd, str(te_file), metadata={"format": "pt"})
    # tokenizer/: exact copy of the hand-written SD-style tokenizer folder
    shutil.rmtree(out / "tokenizer")
    shutil.copytree(tok_dir, out / "tokenizer")

    save_file(refs, str(out / "reference.safetensors"))
    meta = {
        "prompt": PROMPT,
        "negative_prompt": NEGATIVE_PROMPT,
        "guidance_scale": GUIDANCE,
        "num_inference_steps": STEPS,
        "height": HEIGHT,
        "width": WIDTH,
        "vae_scaling_factor": float(vae.config.scaling_factor),
        "scheduler": type(pipe.scheduler).__name__,
        "prediction_type": pipe.scheduler.config.prediction_type,
        "timestep_spacing": pipe.scheduler.config.timestep_spacing,
        "init_noise_sigma": pipe_meta["init_noise_sigma"],
        "scheduler_timesteps_float": pipe_meta["scheduler_timesteps_float"],
        "unet_timestep": UNET_TIMESTEP,
        "weights_dtype_on_disk": "float16" if kind == "sd2" else "float32",
        "notes": (
            "pipe_image = StableDiffusionPipeline(...)(prompt, negative_prompt, num_inference_steps, guidance_scale, "
            "latents=pipe_init_latents, output_type='np', height, width).images; the pipeline multiplies the given "
            "latents by init_noise_sigma. vae_latents are raw z (vae_decoded = vae.decode(z), no 1/scaling_factor, "
            "no clamp). pipe_prompt_embeds = [negative; positive] last_hidden_state as fed to the UNet. "
            "pipe_latents_per_step[i] = latents after scheduler step i."
        )
        + (" Weights are stored as float16; references were computed in float32 from the f16-rounded weights." if kind == "sd2" else ""),
        "tensor_stats": st,
    }
    write_json(out / "reference.json", meta)

    # ---- round-trip check: reload from disk (f16 -> f32 for sd2) and recompute
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel

    te2 = CLIPTextModel.from_pretrained(str(out / "text_encoder"), torch_dtype=torch.float32).eval()
    un2 = UNet2DConditionModel.from_pretrained(str(out / "unet"), torch_dtype=torch.float32).eval()
    va2 = AutoencoderKL.from_pretrained(str(out / "vae"), torch_dtype=torch.float32).eval()
    pipe2 = StableDiffusionPipeline.from_pretrained(str(out), torch_dtype=torch.float32)
    tok2 = pipe2.tokenizer
    refs2, _ = compute_refs(kind, tok2, te2, un2, va2, lambda: type(pipe2.scheduler).from_config(pipe2.scheduler.config))
    for k in refs:
        a, b = refs[k], refs2[k]
        if a.is_floating_point():
            err = float((a - b).abs().max())
            log(f"  reload check {k:28s} max|diff| {err:.3g}")
            assert err < 1e-4, (k, err)
        else:
            assert torch.equal(a, b), k
    for f in ("text_encoder/model.safetensors", "unet/diffusion_pytorch_model.safetensors", "vae/diffusion_pytorch_model.safetensors"):
        dt = {str(v.dtype) for v in load_file(str(out / f)).values()}
        log(f"  {f}: dtypes on disk {dt}")
    return refs, meta


# ----------------------------------------------------------------------------
# 3. schedulers
# ----------------------------------------------------------------------------

MODEL_FORMULA = (
    "model_output = 0.5 * scaled_sample + 0.1 * c, where scaled_sample = scheduler.scale_model_input(sample, t) "
    "(identity for DDIM, sample / sqrt(sigma^2 + 1) for Euler) and c = f32(cos(f64(t) / 100)) with t the float value "
    "of the timestep; all tensor arithmetic in f32 (c computed as torch.cos(torch.tensor(t, dtype=torch.float64) / 100).float()). "
    "Loop: sample = init_sample * init_noise_sigma; for t in timesteps: sample = scheduler.step(model_output, t, sample).prev_sample "
    "(DDIM: eta = 0)."
)


def fake_model(scaled: torch.Tensor, t) -> torch.Tensor:
    tf = float(t)
    c = torch.cos(torch.tensor(tf, dtype=torch.float64) / 100.0).float()
    return 0.5 * scaled + 0.1 * c


def run_sched_case(name, kind, cfg_over, steps=10, explicit=None, image_tokens=None):
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler

    from diffusers import EulerAncestralDiscreteScheduler, FlowMatchEulerDiscreteScheduler, LCMScheduler
    from diffusers.pipelines.stable_diffusion_3.pipeline_stable_diffusion_3 import calculate_shift

    cls = {
        "ddim": DDIMScheduler,
        "euler": EulerDiscreteScheduler,
        "dpm++2m": DPMSolverMultistepScheduler,
        "euler_a": EulerAncestralDiscreteScheduler,
        "lcm": LCMScheduler,
        "flow_euler": FlowMatchEulerDiscreteScheduler,
    }[kind]
    flow = kind == "flow_euler"
    base = {} if flow else dict(**SD_BETAS, steps_offset=1)
    if kind == "ddim":
        base.update(clip_sample=False, set_alpha_to_one=False)
    base.update(cfg_over)
    sch = cls(**base)
    # Dynamic shifting: mu from the image's patch count, as SD 3's pipeline computes it.
    kwargs = {}
    if image_tokens is not None:
        c = sch.config
        kwargs["mu"] = calculate_shift(image_tokens, c.base_image_seq_len, c.max_image_seq_len, c.base_shift, c.max_shift)
    if explicit is not None:
        sch.set_timesteps(timesteps=explicit, **kwargs)
    else:
        sch.set_timesteps(steps, **kwargs)
    g = torch.Generator().manual_seed(1234)
    shape = [1, 4, 4, 4]
    init = torch.randn(shape, generator=g)
    # add_noise at the first and the middle step, with init standing in for clean latents.
    extra = torch.randn(shape, generator=torch.Generator().manual_seed(4321))
    noised = {}
    for k in sorted({0, len(sch.timesteps) // 2}):
        at = sch.timesteps[k : k + 1]
        noised[str(k)] = f32_list(sch.scale_noise(init, at, extra) if flow else sch.add_noise(init, extra, at))
    init_noise_sigma = 1.0 if flow else float(sch.init_noise_sigma)
    sample = init * init_noise_sigma
    per_step, outs = [], []
    # Stochastic schedulers: record the noise each step draws, so the Rust test can feed the
    # same values (its own runs draw from the project's seeded generator instead).
    drawn = []
    import diffusers.schedulers.scheduling_euler_ancestral_discrete as ea_mod
    import diffusers.schedulers.scheduling_flow_match_euler_discrete as flow_mod
    import diffusers.schedulers.scheduling_lcm as lcm_mod

    noise_gen = torch.Generator().manual_seed(99)

    def recording_randn(shape, **_):
        n = torch.randn(tuple(shape), generator=noise_gen)
        drawn[-1] = f32_list(n)
        return n

    saved = (ea_mod.randn_tensor, lcm_mod.randn_tensor, flow_mod.randn_tensor)
    ea_mod.randn_tensor = lcm_mod.randn_tensor = flow_mod.randn_tensor = recording_randn
    for t in sch.timesteps:
        drawn.append(None)
        scaled = sample if flow else sch.scale_model_input(sample, t)
        out = fake_model(scaled, t)
        if kind == "ddim":
            sample = sch.step(out, t, sample, eta=0.0).prev_sample
        else:
            sample = sch.step(out, t, sample).prev_sample
        per_step.append(f32_list(sample))
        outs.append(f32_list(out))
    ea_mod.randn_tensor, lcm_mod.randn_tensor, flow_mod.randn_tensor = saved
    cfg = json.loads(sch.to_json_string())
    # JSON has no infinities: DPM-Solver's lambda_min_clipped defaults to -inf, i.e. no clipping.
    cfg = {k: v for k, v in cfg.items() if not (isinstance(v, float) and not math.isfinite(v))}
    case = {
        "name": name,
        "scheduler": kind,
        "config": cfg,
        "num_inference_steps": None if explicit is not None else steps,
        "explicit_timesteps": explicit,
        "timesteps": [float(t) for t in sch.timesteps],
        "sigmas": [float(s) for s in sch.sigmas] if hasattr(sch, "sigmas") else None,
        "init_noise_sigma": init_noise_sigma,
        "image_tokens": image_tokens,
        "shape": shape,
        "init_sample": f32_list(init),
        "final_sample": f32_list(sample),
        "samples_per_step": per_step,
        "noise_per_step": drawn if any(d is not None for d in drawn) else None,
        "add_noise_extra": f32_list(extra),
        "add_noise_at_step": noised,
        "model_outputs_per_step": outs,
    }
    return case


def make_lcm_unet(fix: Path):
    """A tiny UNet with `time_cond_proj_dim` (LCM-distilled models embed the guidance scale
    and add it to the timestep embedding), random weights, and one call's output."""
    from diffusers import LatentConsistencyModelPipeline, UNet2DConditionModel
    from safetensors.torch import save_file

    torch.manual_seed(5)
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(8, 16),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        layers_per_block=1,
        cross_attention_dim=32,
        attention_head_dim=2,
        norm_num_groups=4,
        time_cond_proj_dim=16,
    ).eval()
    out_dir = fix / "lcm_unet"
    unet.save_pretrained(str(out_dir))
    g = torch.Generator().manual_seed(6)
    x = torch.randn(1, 4, 8, 8, generator=g)
    ctx = torch.randn(1, 5, 32, generator=g)
    w = torch.tensor([8.0 - 1.0])
    w_embedding = LatentConsistencyModelPipeline.get_guidance_scale_embedding(None, w, embedding_dim=16)
    t = 759
    out = unet(x, t, ctx, timestep_cond=w_embedding).sample
    save_file(
        {"x": x, "context": ctx, "w_embedding": w_embedding.contiguous(), "out": out.contiguous(),
         "timestep": torch.tensor([float(t)]), "guidance_scale": torch.tensor([8.0])},
        str(out_dir / "reference.safetensors"),
    )
    log(f"lcm unet: out {tuple(out.shape)}, |out| max {float(out.abs().max()):.3f}")


def test_card_and_mask():
    """The test card of tests/img2img.rs (four flat quadrants) and a mask over its right part
    and a bottom strip, as uint8 arrays."""
    card = np.zeros((64, 64, 3), dtype=np.uint8)
    card[:32, :32] = (220, 40, 40)
    card[:32, 32:] = (40, 200, 60)
    card[32:, :32] = (40, 60, 210)
    card[32:, 32:] = (230, 220, 200)
    mask = np.zeros((64, 64), dtype=np.uint8)
    mask[:, 40:] = 255
    mask[52:, :] = 255
    return card, mask


def sd1_unet(in_channels: int):
    """The tiny SD 1.x UNet's architecture; in_channels 9 makes it an inpainting UNet."""
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=8,
        in_channels=in_channels,
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=2,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=8,
        norm_num_groups=32,
    )


def make_turbo(fix: Path):
    """SD-Turbo's recipe on the tiny SD 2.x model: stabilityai/sd-turbo's scheduler config
    (Euler, trailing spacing, epsilon), 1 and 4 steps, no classifier-free guidance."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(str(fix / "sd2_tiny"), torch_dtype=torch.float32)
    turbo = {
        "_class_name": "EulerDiscreteScheduler",
        **SD_BETAS,
        "clip_sample": False,
        "interpolation_type": "linear",
        "prediction_type": "epsilon",
        "set_alpha_to_one": False,
        "steps_offset": 1,
        "timestep_spacing": "trailing",
        "use_karras_sigmas": False,
    }
    pipe.scheduler = EulerDiscreteScheduler.from_config(turbo)
    turbo_references(pipe, turbo, fix / "sd_turbo_tiny", seed=11, steps=(1, 4))


def make_zero_snr(fix: Path):
    """Zero terminal SNR on the tiny SD 2.x model (`sd2_zero_snr/`; Lin et al. 2023): its
    own scheduler config (Euler, trailing spacing, v-prediction) with `rescale_betas_zero_snr`,
    and `StableDiffusionPipeline`'s 10-step images at guidance 7.5 with the negative prompt,
    with `guidance_rescale` 0.7 (`image`) and 0 (`image_plain`), from fixed latents. The
    rescale moves the guided prediction's spread back to the conditional one's."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline
    from safetensors.torch import save_file

    out = fix / "sd2_zero_snr"
    log("== sd2_zero_snr")
    pipe = StableDiffusionPipeline.from_pretrained(str(fix / "sd2_tiny"), torch_dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    config = {**json.loads((fix / "sd2_tiny" / "scheduler" / "scheduler_config.json").read_text()),
              "rescale_betas_zero_snr": True}
    pipe.scheduler = EulerDiscreteScheduler.from_config(config)
    (out / "scheduler").mkdir(parents=True, exist_ok=True)
    write_json(out / "scheduler" / "scheduler_config.json", config)
    latents = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(2902))
    images = {}
    for key, rescale in (("image", 0.7), ("image_plain", 0.0)):
        images[key] = pipe(PROMPT, negative_prompt=NEGATIVE_PROMPT, num_inference_steps=STEPS, guidance_scale=GUIDANCE,
                           guidance_rescale=rescale, latents=latents.clone(), output_type="np").images
    moved = float(np.abs(images["image"] - images["image_plain"]).max())
    assert moved > 2 / 255, moved
    log(f"  guidance_rescale 0.7 moved the image by up to {moved * 255:.1f}/255; "
        f"first sigma {float(pipe.scheduler.sigmas[0]):.1f}")
    save_file({"latents": latents, **{k: torch.from_numpy(np.asarray(v, dtype=np.float32)).contiguous()
                                      for k, v in images.items()}}, str(out / "reference.safetensors"))
    write_json(out / "reference.json", {
        "prompt": PROMPT, "negative_prompt": NEGATIVE_PROMPT, "num_inference_steps": STEPS, "guidance_scale": GUIDANCE,
        "guidance_rescale": 0.7,
        "notes": "image = StableDiffusionPipeline(sd2_tiny with this scheduler; prompt, negative prompt, steps, "
                 "guidance, guidance_rescale=0.7, latents, output_type='np'); image_plain: guidance_rescale=0.",
    })


def turbo_references(pipe, scheduler: dict, out_dir: Path, seed: int, steps: tuple, noise_steps: tuple = ()) -> None:
    """A distilled model's recipe: `scheduler` as `out_dir/scheduler/`, and the images of
    fixed latents at each step count, without classifier-free guidance. For each count in
    `noise_steps` (an ancestral scheduler's), also the unit noise the scheduler drew at each
    step, `noise_{n}` [n, 1, C, h, w], recorded as diffusers draws it, so that the runtime can
    be given the same noise (`GenerateOptions::step_noise`)."""
    from diffusers.schedulers import scheduling_euler_ancestral_discrete as ancestral
    from safetensors.torch import save_file

    (out_dir / "scheduler").mkdir(parents=True, exist_ok=True)
    write_json(out_dir / "scheduler" / "scheduler_config.json", scheduler)
    latents = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(seed))
    refs = {"latents": latents}
    drawn = []
    plain_randn = ancestral.randn_tensor

    def recording_randn(*args, **kwargs):
        out = plain_randn(*args, **kwargs)
        drawn.append(out.clone())
        return out

    for n in sorted(set(steps) | set(noise_steps)):
        drawn.clear()
        ancestral.randn_tensor = recording_randn
        try:
            generator = torch.Generator().manual_seed(seed + n)
            image = pipe(PROMPT, num_inference_steps=n, guidance_scale=0.0, latents=latents.clone(),
                         output_type="np", height=64, width=64, generator=generator).images
        finally:
            ancestral.randn_tensor = plain_randn
        refs[f"image_{n}"] = torch.from_numpy(image).contiguous()
        if n in noise_steps:
            assert len(drawn) == n, f"{n} steps drew noise {len(drawn)} times"
            refs[f"noise_{n}"] = torch.stack(drawn).contiguous()
        log(f"{out_dir.name} {n} steps: timesteps {pipe.scheduler.timesteps.tolist()}")
    save_file(refs, str(out_dir / "reference.safetensors"))


def tiny_text_config(tok, hidden: int, act: str, projection: int):
    """A tiny CLIP text encoder's config for `tok`, as SDXL's and SD 3's fixtures take two of
    them: three layers, four heads, the widths and activation given."""
    from transformers import CLIPTextConfig

    return CLIPTextConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=hidden + 5,
                          num_hidden_layers=3, num_attention_heads=4, max_position_embeddings=MAX_LEN,
                          hidden_act=act, projection_dim=projection, bos_token_id=tok.bos_token_id,
                          eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, layer_norm_eps=1e-5)

def with_text_model_prefix(path: Path):
    """Rewrites a text encoder file saved by transformers 5 (names without `text_model.`) in
    the names real repositories hold: `text_model.` inside, the projection at the root."""
    from safetensors.torch import load_file, save_file

    sd = load_file(str(path))
    sd = {(k if k.startswith(("text_model.", "text_projection")) else "text_model." + k): v.contiguous() for k, v in sd.items()}
    save_file(sd, str(path), metadata={"format": "pt"})


def make_sdxl(fix: Path):
    """A tiny SDXL-like pipeline (`sdxl_tiny/`): two text encoders (a CLIP-L-like one and a
    bigG-like one with its projection, of different widths), the size and crop conditioning
    added to the time embedding (`addition_embed_type` "text_time"), one and two transformer
    layers per block, the SDXL VAE's scaling factor, Euler with leading spacing as SDXL base
    ships it. tokenizer_2 pads with "!" as SDXL's does. References: the pipeline's embeddings,
    time ids, one UNet call, and images with a negative prompt and without one (which
    `force_zeros_for_empty_prompt` turns into zeros). Weights are stored as f16."""
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from safetensors.torch import load_file, save_file
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    out = fix / "sdxl_tiny"
    if out.exists():
        shutil.rmtree(out)
    log("== sdxl_tiny")
    tok_dir = fix / "tokenizer"
    tok = CLIPTokenizer.from_pretrained(str(tok_dir))
    tok2_dir = out / "tokenizer_2"
    shutil.copytree(tok_dir, tok2_dir)
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        cfg = json.loads((tok2_dir / name).read_text())
        cfg["pad_token"] = "!" if isinstance(cfg.get("pad_token"), str) or name == "special_tokens_map.json" else {**cfg["pad_token"], "content": "!"}
        write_json(tok2_dir / name, cfg)
    (tok2_dir / "tokenizer.json").unlink()  # vocab.json + merges.txt carry it; the pad lives in the config
    tok2 = CLIPTokenizer.from_pretrained(str(tok2_dir))
    assert tok2.pad_token_id == 0, tok2.pad_token_id

    torch.manual_seed(5000)
    te1 = CLIPTextModel(tiny_text_config(tok, 32, "quick_gelu", 32)).eval()
    reinit_(te1, 5001)
    te2 = CLIPTextModelWithProjection(tiny_text_config(tok, 48, "gelu", 24)).eval()
    reinit_(te2, 5002)
    torch.manual_seed(5010)
    time_dim = 8
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, block_out_channels=(32, 64), layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        transformer_layers_per_block=(1, 2), attention_head_dim=(2, 4), cross_attention_dim=32 + 48,
        use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=time_dim,
        projection_class_embeddings_input_dim=6 * time_dim + 24, norm_num_groups=32,
    ).eval()
    reinit_(unet, 5011, out_gain={"conv_out": 0.5})
    torch.manual_seed(5020)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(16, 16, 32, 32), layers_per_block=1,
        latent_channels=4, norm_num_groups=8, sample_size=64, scaling_factor=0.13025,
    ).eval()
    reinit_(vae, 5021, out_gain={"decoder.conv_out": 0.5})
    # Stored as f16 (as SDXL's fp16 variants are), the references computed in f32 from the
    # rounded weights: half the bytes in git.
    for model in (te1, te2, unet, vae):
        round_to_f16_(model)
    scheduler = EulerDiscreteScheduler(**SD_BETAS, steps_offset=1, prediction_type="epsilon",
                                       timestep_spacing="leading", interpolation_type="linear")
    pipe = StableDiffusionXLPipeline(vae=vae, text_encoder=te1, text_encoder_2=te2, tokenizer=tok, tokenizer_2=tok2,
                                     unet=unet, scheduler=scheduler, force_zeros_for_empty_prompt=True)
    pipe.set_progress_bar_config(disable=True)

    refs = {}
    embeds, neg_embeds, pooled, neg_pooled = pipe.encode_prompt(PROMPT, negative_prompt=NEGATIVE_PROMPT,
                                                               do_classifier_free_guidance=True)
    refs["prompt_embeds"] = torch.cat([neg_embeds, embeds])
    refs["pooled_embeds"] = torch.cat([neg_pooled, pooled])
    # diffusers zeroes the negative embeddings where no negative prompt is given (None); the
    # runtime takes an empty one for none.
    _, zero_embeds, _, zero_pooled = pipe.encode_prompt(PROMPT, negative_prompt=None, do_classifier_free_guidance=True)
    assert not zero_embeds.any() and not zero_pooled.any(), "force_zeros_for_empty_prompt"
    time_ids = torch.tensor([[HEIGHT, WIDTH, 0, 0, HEIGHT, WIDTH]], dtype=torch.float32)
    refs["time_ids"] = time_ids
    g = torch.Generator().manual_seed(5030)
    sample = torch.randn((2, 4, 8, 8), generator=g)
    refs["unet_sample"] = sample
    refs["unet_out"] = unet(sample, torch.tensor([UNET_TIMESTEP]), refs["prompt_embeds"],
                            added_cond_kwargs={"text_embeds": refs["pooled_embeds"], "time_ids": time_ids.repeat(2, 1)}).sample
    refs["latents"] = torch.randn((1, 4, 8, 8), generator=g)
    for key, negative, steps in (("image", NEGATIVE_PROMPT, STEPS), ("image_empty_negative", None, 4)):
        image = pipe(PROMPT, negative_prompt=negative, num_inference_steps=steps, guidance_scale=GUIDANCE,
                     latents=refs["latents"].clone(), height=HEIGHT, width=WIDTH, output_type="np").images
        refs[key] = torch.from_numpy(np.asarray(image, dtype=np.float32))
        log(f"  {key}: mean {float(image.mean()):.3f}, timesteps {pipe.scheduler.timesteps.tolist()}")

    pipe.to(torch.float16)
    pipe.save_pretrained(str(out), safe_serialization=True)
    pipe.to(torch.float32)
    shutil.rmtree(out / "tokenizer")
    shutil.copytree(tok_dir, out / "tokenizer")
    # As every real SDXL repository names them: `text_model.` inside both text encoders (the
    # projection of the second at the root).
    for folder in ("text_encoder", "text_encoder_2"):
        with_text_model_prefix(out / folder / "model.safetensors")
    refs = {k: v.to(torch.float32).contiguous() for k, v in refs.items()}
    save_file(refs, str(out / "reference.safetensors"))
    write_json(out / "reference.json", {
        "prompt": PROMPT, "negative_prompt": NEGATIVE_PROMPT, "guidance_scale": GUIDANCE,
        "num_inference_steps": STEPS, "empty_negative_steps": 4, "height": HEIGHT, "width": WIDTH,
        "unet_timestep": UNET_TIMESTEP,
        "notes": "image = StableDiffusionXLPipeline(prompt, negative_prompt, steps, guidance, latents, 64x64, "
                 "output_type='np'); image_empty_negative the same with no negative prompt (zeros, "
                 "force_zeros_for_empty_prompt) and 4 steps. prompt_embeds / pooled_embeds: [negative; positive]. "
                 "unet_out: one call at unet_timestep on unet_sample with prompt_embeds, pooled_embeds and time_ids.",
    })
    reloaded = StableDiffusionXLPipeline.from_pretrained(str(out), torch_dtype=torch.float32)
    reloaded.set_progress_bar_config(disable=True)
    again = reloaded(PROMPT, negative_prompt=NEGATIVE_PROMPT, num_inference_steps=STEPS, guidance_scale=GUIDANCE,
                     latents=refs["latents"].clone(), height=HEIGHT, width=WIDTH, output_type="np").images
    err = float(np.abs(again - refs["image"].numpy()).max())
    log(f"  reload check image max|diff| {err:.3g}")
    assert err < 1e-5, err


def make_sdxl_turbo(fix: Path):
    """SDXL-Turbo's recipe on the tiny SDXL model (`sdxl_turbo_tiny/`): stabilityai/sdxl-turbo's
    scheduler config (Euler ancestral, trailing spacing), no classifier-free guidance, one to
    four steps. One ancestral step ends at sigma 0, where it adds no noise, so its image does
    not depend on the noise generator; at 2 and 4 steps the noise diffusers drew is kept
    (`noise_2`, `noise_4`) for the runtime to be given."""
    from diffusers import EulerAncestralDiscreteScheduler, StableDiffusionXLPipeline

    pipe = StableDiffusionXLPipeline.from_pretrained(str(fix / "sdxl_tiny"), torch_dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    turbo = {
        "_class_name": "EulerAncestralDiscreteScheduler",
        **SD_BETAS,
        "prediction_type": "epsilon",
        "steps_offset": 1,
        "timestep_spacing": "trailing",
    }
    pipe.scheduler = EulerAncestralDiscreteScheduler.from_config(turbo)
    turbo_references(pipe, turbo, fix / "sdxl_turbo_tiny", seed=13, steps=(1,), noise_steps=(2, 4))


def make_sdxl_refiner(fix: Path):
    """A tiny SDXL-refiner-like pipeline (`sdxl_refiner_tiny/`), as stabilityai's refiner is
    laid out: no first text encoder or tokenizer (`null` in model_index.json), the second
    (bigG-like, with its projection) alone, its penultimate hidden states as the UNet's
    context; the size conditioning with an aesthetic score in place of the target size (five
    time ids, `requires_aesthetics_score`), no zeros for an empty negative prompt. The text
    encoder, tokenizer and VAE are sdxl_tiny's; the UNet is its own (f16). Reference: img2img
    of the test card at strength 0.5 with the noise and the posterior mean patched in (as
    `make_img2img` does), and the embeddings and time ids."""
    import diffusers.pipelines.stable_diffusion_xl.pipeline_stable_diffusion_xl_img2img as xl_img2img
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLImg2ImgPipeline, UNet2DConditionModel
    from PIL import Image
    from safetensors.torch import save_file
    from transformers import CLIPTextModelWithProjection, CLIPTokenizer

    base = fix / "sdxl_tiny"
    out = fix / "sdxl_refiner_tiny"
    if out.exists():
        shutil.rmtree(out)
    log("== sdxl_refiner_tiny")
    te2 = CLIPTextModelWithProjection.from_pretrained(str(base / "text_encoder_2"), torch_dtype=torch.float32).eval()
    tok2 = CLIPTokenizer.from_pretrained(str(base / "tokenizer_2"))
    vae = AutoencoderKL.from_pretrained(str(base / "vae"), torch_dtype=torch.float32).eval()
    torch.manual_seed(5110)
    time_dim = 8
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, block_out_channels=(32, 64), layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        transformer_layers_per_block=(1, 1), attention_head_dim=(2, 4), cross_attention_dim=48,
        use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=time_dim,
        projection_class_embeddings_input_dim=5 * time_dim + 24, norm_num_groups=32,
    ).eval()
    reinit_(unet, 5111, out_gain={"conv_out": 0.5})
    round_to_f16_(unet)
    scheduler = EulerDiscreteScheduler(**SD_BETAS, steps_offset=1, prediction_type="epsilon",
                                       timestep_spacing="leading", interpolation_type="linear")
    pipe = StableDiffusionXLImg2ImgPipeline(vae=vae, text_encoder=None, text_encoder_2=te2, tokenizer=None,
                                            tokenizer_2=tok2, unet=unet, scheduler=scheduler,
                                            requires_aesthetics_score=True, force_zeros_for_empty_prompt=False)
    pipe.set_progress_bar_config(disable=True)

    refs = {}
    embeds, neg_embeds, pooled, neg_pooled = pipe.encode_prompt(PROMPT, negative_prompt=NEGATIVE_PROMPT,
                                                               do_classifier_free_guidance=True)
    refs["prompt_embeds"] = torch.cat([neg_embeds, embeds])
    refs["pooled_embeds"] = torch.cat([neg_pooled, pooled])
    # An empty negative prompt is encoded, not zeroed (force_zeros_for_empty_prompt false).
    _, empty, _, empty_pooled = pipe.encode_prompt(PROMPT, negative_prompt=None, do_classifier_free_guidance=True)
    assert empty.abs().sum() > 0 and empty_pooled.abs().sum() > 0
    refs["empty_negative_embeds"] = empty
    time_ids, neg_time_ids = pipe._get_add_time_ids((64, 64), (0, 0), (64, 64), 6.0, 2.5, (64, 64), (0, 0), 2.5,
                                                    dtype=torch.float32, text_encoder_projection_dim=24)
    refs["time_ids"] = torch.cat([neg_time_ids, time_ids])

    noise = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(15))
    xl_img2img.randn_tensor = lambda shape, **_: noise.clone()
    xl_img2img.retrieve_latents = lambda output, generator=None, sample_mode="sample": output.latent_dist.mode()
    card, _ = test_card_and_mask()
    image = pipe(PROMPT, negative_prompt=NEGATIVE_PROMPT, image=Image.fromarray(card), strength=0.5,
                 num_inference_steps=STEPS, guidance_scale=GUIDANCE, output_type="np").images
    refs["noise"] = noise
    refs["card"] = torch.from_numpy(card.astype(np.float32)).contiguous()
    refs["image"] = torch.from_numpy(np.asarray(image, dtype=np.float32)).contiguous()
    log(f"  refiner img2img: mean {float(image.mean()):.3f}, timesteps {pipe.scheduler.timesteps.tolist()}")
    # The ensemble of experts: sdxl_tiny runs the first 80% of the schedule and hands its
    # latents over (output_type "latent"); the refiner runs the rest from them, no noise added.
    from diffusers import StableDiffusionXLPipeline
    base_pipe = StableDiffusionXLPipeline.from_pretrained(str(base), torch_dtype=torch.float32)
    base_pipe.set_progress_bar_config(disable=True)
    start = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(16))
    handed = base_pipe(PROMPT, negative_prompt=NEGATIVE_PROMPT, num_inference_steps=STEPS, guidance_scale=GUIDANCE,
                       latents=start.clone(), denoising_end=0.8, output_type="latent").images
    refined = pipe(PROMPT, negative_prompt=NEGATIVE_PROMPT, image=handed, num_inference_steps=STEPS,
                   guidance_scale=GUIDANCE, denoising_start=0.8, output_type="np").images
    refs["handoff_start"] = start
    refs["handoff_latents"] = handed
    refs["handoff_image"] = torch.from_numpy(np.asarray(refined, dtype=np.float32)).contiguous()
    log(f"  handoff at 0.8: latents std {float(handed.std()):.3f}, image mean {float(refined.mean()):.3f}")

    pipe.to(torch.float16)
    pipe.save_pretrained(str(out), safe_serialization=True)
    pipe.to(torch.float32)
    # As the refiner's repository names its tensors: `text_model.` inside the text encoder.
    with_text_model_prefix(out / "text_encoder_2" / "model.safetensors")
    shutil.rmtree(out / "tokenizer_2")
    shutil.copytree(base / "tokenizer_2", out / "tokenizer_2")
    refs = {k: v.to(torch.float32).contiguous() for k, v in refs.items()}
    save_file(refs, str(out / "reference.safetensors"))
    write_json(out / "reference.json", {
        "prompt": PROMPT, "negative_prompt": NEGATIVE_PROMPT, "guidance_scale": GUIDANCE,
        "num_inference_steps": STEPS, "strength": 0.5, "aesthetic_score": 6.0, "negative_aesthetic_score": 2.5,
        "notes": "image = StableDiffusionXLImg2ImgPipeline(prompt, negative_prompt, image=card, strength 0.5, "
                 "10 steps, guidance 7.5) with randn_tensor patched to `noise` and the VAE posterior's mode. "
                 "prompt_embeds / pooled_embeds / time_ids: [negative; positive]. handoff_latents = "
                 "sdxl_tiny's StableDiffusionXLPipeline from handoff_start (10 steps, guidance 7.5, negative "
                 "prompt) with denoising_end 0.8 and output_type 'latent'; handoff_image = this refiner from "
                 "them with denoising_start 0.8.",
    })


def tiny_t5_tokenizer():
    """A SentencePiece-style Unigram tokenizer in T5's layout (no download can fetch T5's own):
    `<pad>` 0, `</s>` 1, `<unk>` 2, Metaspace pre-tokenizer, `</s>` appended; trained on the
    fixtures' prompts."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import T5TokenizerFast

    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always")
    corpus = [PROMPT, NEGATIVE_PROMPT, "a person close to the water and in the sand",
              "a lamp casts a shadow on the wall", "two blue cubes stacked on a green table"] * 20
    trainer = trainers.UnigramTrainer(vocab_size=120, special_tokens=["<pad>", "</s>", "<unk>"], unk_token="<unk>")
    tok.train_from_iterator(corpus, trainer)
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", pair="$A </s> $B </s>",
                                                       special_tokens=[("</s>", 1)])
    return T5TokenizerFast(tokenizer_object=tok, eos_token="</s>", pad_token="<pad>", unk_token="<unk>", extra_ids=0)


def make_sd3(fix: Path):
    """A tiny SD 3.5-like pipeline (`sd3_tiny/`): an MMDiT with QK-norm (RMS), a dual-attention
    first block (3.5 medium's), a context-pre-only last block, position embeddings cropped
    from a larger table; two CLIP text encoders with projections (widths 32 and 48, pooled 16
    each), their hidden states side by side and padded to the joint width; a T5 v1.1 encoder
    (gated GELU, relative position buckets) with a SentencePiece-style Unigram tokenizer
    (`tiny_t5_tokenizer`); a 16-channel VAE with SD 3's scaling and shift and no quant
    convolutions; flow-matching Euler with SD 3's shift of 3. References: embeddings and T5's
    ids, one transformer call, a square image with a negative prompt and a wide one, and the
    wide one without T5 (zeros in its place, as diffusers runs without it). Weights are f32."""
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline
    from safetensors.torch import save_file
    from transformers import CLIPTextModelWithProjection, CLIPTokenizer, T5Config, T5EncoderModel

    out = fix / "sd3_tiny"
    if out.exists():
        shutil.rmtree(out)
    log("== sd3_tiny")
    tok_dir = fix / "tokenizer"
    tok = CLIPTokenizer.from_pretrained(str(tok_dir))

    torch.manual_seed(6000)
    te1 = CLIPTextModelWithProjection(tiny_text_config(tok, 32, "quick_gelu", 16)).eval()
    reinit_(te1, 6001)
    te2 = CLIPTextModelWithProjection(tiny_text_config(tok, 48, "gelu", 16)).eval()
    reinit_(te2, 6002)
    tok3 = tiny_t5_tokenizer()
    te3 = T5EncoderModel(T5Config(vocab_size=len(tok3), d_model=96, d_kv=8, d_ff=37, num_layers=2, num_heads=4,
                                  feed_forward_proj="gated-gelu", decoder_start_token_id=0)).eval()
    reinit_(te3, 6003)
    torch.manual_seed(6010)
    transformer = SD3Transformer2DModel(
        sample_size=16, patch_size=2, in_channels=16, num_layers=3, attention_head_dim=8, num_attention_heads=4,
        joint_attention_dim=96, caption_projection_dim=32, pooled_projection_dim=32, out_channels=16,
        pos_embed_max_size=12, dual_attention_layers=(0,), qk_norm="rms_norm",
    ).eval()
    reinit_(transformer, 6011, out_gain={"proj_out": 0.5})
    torch.manual_seed(6020)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(16, 32), layers_per_block=1,
        latent_channels=16, norm_num_groups=8, sample_size=32, scaling_factor=1.5305, shift_factor=0.0609,
        use_quant_conv=False, use_post_quant_conv=False,
    ).eval()
    reinit_(vae, 6021, out_gain={"decoder.conv_out": 0.5})
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0)
    pipe = StableDiffusion3Pipeline(transformer=transformer, scheduler=scheduler, vae=vae, text_encoder=te1,
                                    tokenizer=tok, text_encoder_2=te2, tokenizer_2=tok, text_encoder_3=te3,
                                    tokenizer_3=tok3)
    pipe.set_progress_bar_config(disable=True)

    refs = {"t5_ids": tok3([PROMPT], padding="max_length", max_length=256, truncation=True,
                           add_special_tokens=True, return_tensors="pt").input_ids.float()}
    embeds, neg_embeds, pooled, neg_pooled = pipe.encode_prompt(PROMPT, PROMPT, PROMPT, negative_prompt=NEGATIVE_PROMPT,
                                                               do_classifier_free_guidance=True)
    refs["prompt_embeds"] = torch.cat([neg_embeds, embeds])
    refs["pooled_embeds"] = torch.cat([neg_pooled, pooled])
    g = torch.Generator().manual_seed(6030)
    sample = torch.randn((2, 16, 16, 16), generator=g)
    refs["transformer_sample"] = sample
    refs["transformer_out"] = transformer(sample, refs["prompt_embeds"], refs["pooled_embeds"],
                                          torch.tensor([UNET_TIMESTEP, UNET_TIMESTEP])).sample
    side, wide = 32, 48
    refs["latents"] = torch.randn((1, 16, side // 2, side // 2), generator=g)
    refs["latents_wide"] = torch.randn((1, 16, side // 2, wide // 2), generator=g)
    runs = (("image", "latents", side, STEPS), ("image_wide", "latents_wide", wide, 4))
    for key, latents, width, steps in runs:
        image = pipe(PROMPT, negative_prompt=NEGATIVE_PROMPT, num_inference_steps=steps, guidance_scale=GUIDANCE,
                     latents=refs[latents].clone(), height=side, width=width, output_type="np").images
        refs[key] = torch.from_numpy(np.asarray(image, dtype=np.float32))
        log(f"  {key}: mean {float(image.mean()):.3f}, timesteps {[round(float(t), 2) for t in pipe.scheduler.timesteps]}")
    without_t5 = StableDiffusion3Pipeline(**{**pipe.components, "text_encoder_3": None, "tokenizer_3": None})
    without_t5.set_progress_bar_config(disable=True)
    image = without_t5(PROMPT, negative_prompt=NEGATIVE_PROMPT, num_inference_steps=4, guidance_scale=GUIDANCE,
                       latents=refs["latents_wide"].clone(), height=side, width=wide, output_type="np").images
    refs["image_wide_no_t5"] = torch.from_numpy(np.asarray(image, dtype=np.float32))

    pipe.save_pretrained(str(out), safe_serialization=True)
    for name in ("tokenizer", "tokenizer_2"):
        shutil.rmtree(out / name)
        shutil.copytree(tok_dir, out / name)
    (out / "tokenizer_2" / "tokenizer.json").unlink()  # vocab.json + merges.txt carry it
    refs = {k: v.to(torch.float32).contiguous() for k, v in refs.items()}
    save_file(refs, str(out / "reference.safetensors"))
    write_json(out / "reference.json", {
        "prompt": PROMPT, "negative_prompt": NEGATIVE_PROMPT, "guidance_scale": GUIDANCE,
        "num_inference_steps": STEPS, "wide_steps": 4, "height": side, "width": side, "wide_width": wide,
        "transformer_timestep": UNET_TIMESTEP,
        "notes": "image = StableDiffusion3Pipeline(prompt, negative_prompt, steps, guidance, latents, 32x32, "
                 "output_type='np'); image_wide the same at 48x32 with latents_wide and 4 steps; "
                 "image_wide_no_t5 that without text_encoder_3 (zeros in its place). t5_ids: the prompt's "
                 "ids from tokenizer_3 (256, padded). "
                 "prompt_embeds / pooled_embeds: [negative; positive]. transformer_out: one call at "
                 "transformer_timestep on transformer_sample with prompt_embeds and pooled_embeds.",
    })
    reloaded = StableDiffusion3Pipeline.from_pretrained(str(out), torch_dtype=torch.float32)
    reloaded.set_progress_bar_config(disable=True)
    again = reloaded(PROMPT, negative_prompt=NEGATIVE_PROMPT, num_inference_steps=STEPS, guidance_scale=GUIDANCE,
                     latents=refs["latents"].clone(), height=side, width=side, output_type="np").images
    err = float(np.abs(again - refs["image"].numpy()).max())
    log(f"  reload check image max|diff| {err:.3g}")
    assert err < 1e-5, err


def make_flux(fix: Path):
    """A tiny FLUX.1-dev-like pipeline (`flux_tiny/`): a `FluxTransformer2DModel` with two
    double-stream and two single-stream blocks, 3-axis rotary positions (4 + 6 + 6 of each
    head's 16 channels) and the guidance embedding of the guidance-distilled dev model; a CLIP
    text encoder without projection (its pooled output only) and a T5 v1.1 encoder with the
    tiny SentencePiece-style tokenizer (`tiny_t5_tokenizer`) as `text_encoder_2`; a 16-channel
    VAE with FLUX's scaling and shift and no quant convolutions; flow-matching Euler with
    dynamic shifting. The pipeline packs each 2x2 patch of latents into one token; the
    references hold latents unpacked, as this runtime takes them. References: embeddings,
    T5's ids, one transformer call on a 16x12 latent (a non-square grid of positions), a
    square image and a wide one. Weights are f32."""
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from safetensors.torch import save_file
    from transformers import CLIPTextModel, CLIPTokenizer, T5Config, T5EncoderModel

    out = fix / "flux_tiny"
    if out.exists():
        shutil.rmtree(out)
    log("== flux_tiny")
    tok_dir = fix / "tokenizer"
    tok = CLIPTokenizer.from_pretrained(str(tok_dir))
    torch.manual_seed(7000)
    te1 = CLIPTextModel(tiny_text_config(tok, 32, "quick_gelu", 16)).eval()
    reinit_(te1, 7001)
    tok2 = tiny_t5_tokenizer()
    te2 = T5EncoderModel(T5Config(vocab_size=len(tok2), d_model=96, d_kv=8, d_ff=37, num_layers=2, num_heads=4,
                                  feed_forward_proj="gated-gelu", decoder_start_token_id=0)).eval()
    reinit_(te2, 7002)
    torch.manual_seed(7010)
    transformer = FluxTransformer2DModel(
        patch_size=1, in_channels=64, num_layers=2, num_single_layers=2, attention_head_dim=16,
        num_attention_heads=2, joint_attention_dim=96, pooled_projection_dim=32, guidance_embeds=True,
        axes_dims_rope=(4, 6, 6),
    ).eval()
    reinit_(transformer, 7011, out_gain={"proj_out": 0.5})
    torch.manual_seed(7020)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(16, 32), layers_per_block=1,
        latent_channels=16, norm_num_groups=8, sample_size=32, scaling_factor=0.3611, shift_factor=0.1159,
        use_quant_conv=False, use_post_quant_conv=False,
    ).eval()
    reinit_(vae, 7021, out_gain={"decoder.conv_out": 0.5})
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
                                                base_image_seq_len=256, max_image_seq_len=4096)
    pipe = FluxPipeline(transformer=transformer, scheduler=scheduler, vae=vae, text_encoder=te1, tokenizer=tok,
                        text_encoder_2=te2, tokenizer_2=tok2)
    pipe.set_progress_bar_config(disable=True)
    guidance = 3.5

    refs = {"t5_ids": tok2([PROMPT], padding="max_length", max_length=512, truncation=True,
                           add_special_tokens=True, return_tensors="pt").input_ids.float()}
    embeds, pooled, text_ids = pipe.encode_prompt(PROMPT, PROMPT, max_sequence_length=512)
    refs["prompt_embeds"], refs["pooled_embeds"] = embeds, pooled
    g = torch.Generator().manual_seed(7030)
    lh, lw = 16, 12
    sample = torch.randn((1, 16, lh, lw), generator=g)
    refs["transformer_sample"] = sample
    img_ids = pipe._prepare_latent_image_ids(1, lh // 2, lw // 2, "cpu", torch.float32)
    packed = pipe._pack_latents(sample, 1, 16, lh, lw)
    call = transformer(hidden_states=packed, encoder_hidden_states=embeds, pooled_projections=pooled,
                       timestep=torch.tensor([UNET_TIMESTEP / 1000]), img_ids=img_ids, txt_ids=text_ids,
                       guidance=torch.tensor([guidance])).sample
    refs["transformer_out"] = pipe._unpack_latents(call, lh, lw, 1)
    side, wide = 32, 48
    refs["latents"] = torch.randn((1, 16, side // 2, side // 2), generator=g)
    refs["latents_wide"] = torch.randn((1, 16, side // 2, wide // 2), generator=g)
    runs = (("image", "latents", side, STEPS), ("image_wide", "latents_wide", wide, 4))
    for key, latents, width, steps in runs:
        packed = pipe._pack_latents(refs[latents].clone(), 1, 16, side // 2, width // 2)
        image = pipe(PROMPT, num_inference_steps=steps, guidance_scale=guidance, latents=packed, height=side,
                     width=width, output_type="np").images
        refs[key] = torch.from_numpy(np.asarray(image, dtype=np.float32))
        log(f"  {key}: mean {float(image.mean()):.3f}, timesteps {[round(float(t), 2) for t in pipe.scheduler.timesteps]}")

    pipe.save_pretrained(str(out), safe_serialization=True)
    shutil.rmtree(out / "tokenizer")
    shutil.copytree(tok_dir, out / "tokenizer")
    refs = {k: v.to(torch.float32).contiguous() for k, v in refs.items()}
    save_file(refs, str(out / "reference.safetensors"))
    write_json(out / "reference.json", {
        "prompt": PROMPT, "guidance_scale": guidance, "num_inference_steps": STEPS, "wide_steps": 4,
        "height": side, "width": side, "wide_width": wide, "transformer_timestep": UNET_TIMESTEP,
        "notes": "image = FluxPipeline(prompt, steps, guidance_scale, latents packed, 32x32, output_type='np'); "
                 "image_wide the same at 48x32 with latents_wide and 4 steps. Latents are stored unpacked "
                 "[1, 16, h, w]. t5_ids: the prompt's ids from tokenizer_2 (512, padded). prompt_embeds: T5's "
                 "states; pooled_embeds: CLIP's pooled output. transformer_out: one call (unpacked) at "
                 "transformer_timestep / 1000 with guidance_scale on transformer_sample (16x12 latents).",
    })
    reloaded = FluxPipeline.from_pretrained(str(out), torch_dtype=torch.float32)
    reloaded.set_progress_bar_config(disable=True)
    packed = pipe._pack_latents(refs["latents"].clone(), 1, 16, side // 2, side // 2)
    again = reloaded(PROMPT, num_inference_steps=STEPS, guidance_scale=guidance, latents=packed, height=side,
                     width=side, output_type="np").images
    err = float(np.abs(again - refs["image"].numpy()).max())
    log(f"  reload check image max|diff| {err:.3g}")
    assert err < 1e-5, err


def make_lora(fix: Path):
    """A LoRA for the tiny SD 1.x model's UNet in kohya's names (`lora/`), covering a linear
    layer (a cross-attention query), a 3x3 convolution (kohya's LoCon: a 3x3 down, a 1x1 up)
    and a 1x1 convolution (a projection), with alpha differing from the rank; and what
    diffusers makes of it: `load_lora_weights` then
    `fuse_lora(lora_scale=0.7)`, one UNet call, the text encoder's output and a 4-step image.
    Needs `peft` (diffusers' LoRA backend)."""
    from diffusers import StableDiffusionPipeline
    from safetensors.torch import save_file

    out = fix / "lora"
    out.mkdir(parents=True, exist_ok=True)
    pipe = StableDiffusionPipeline.from_pretrained(str(fix / "sd1_tiny"), torch_dtype=torch.float32,
                                                   safety_checker=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    unet, te = pipe.unet, pipe.text_encoder
    g = torch.Generator().manual_seed(77)
    rank, alpha = 4, 2.0
    targets = {
        "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_q": unet.down_blocks[0].attentions[0].transformer_blocks[0].attn2.to_q,
        "lora_unet_mid_block_resnets_0_conv1": unet.mid_block.resnets[0].conv1,
        "lora_unet_up_blocks_1_attentions_0_proj_in": unet.up_blocks[1].attentions[0].proj_in,
    }
    # No text encoder module: diffusers 0.42 with transformers 5 (whose CLIPTextModel lost its
    # `text_model` wrapper) cannot load a kohya text encoder LoRA ("Could not automatically
    # infer state dict type"); tests/lora.rs checks that path against a merge by hand.
    tensors = {}
    for name, module in targets.items():
        if isinstance(module, nn.Conv2d):
            k = module.kernel_size
            down = torch.randn((rank, module.in_channels, *k), generator=g) * 0.3
            up = torch.randn((module.out_channels, rank, 1, 1), generator=g) * 0.3
        else:
            down = torch.randn((rank, module.in_features), generator=g) * 0.3
            up = torch.randn((module.out_features, rank), generator=g) * 0.3
        tensors[f"{name}.lora_down.weight"] = down.contiguous()
        tensors[f"{name}.lora_up.weight"] = up.contiguous()
        tensors[f"{name}.alpha"] = torch.tensor(alpha)
    path = out / "sd1_tiny_kohya.safetensors"
    save_file(tensors, str(path))

    scale = 0.7
    pipe.load_lora_weights(str(path))
    pipe.fuse_lora(lora_scale=scale)
    pipe.unload_lora_weights()  # the fused weights stay
    ids = pipe.tokenizer([PROMPT], padding="max_length", max_length=MAX_LEN, truncation=True, return_tensors="pt").input_ids
    refs = {"scale": torch.tensor([scale])}
    with torch.no_grad():
        refs["text_out"] = te(ids).last_hidden_state
        sample = torch.randn((1, 4, 8, 8), generator=g)
        refs["unet_sample"] = sample
        refs["unet_out"] = unet(sample, torch.tensor([UNET_TIMESTEP]), refs["text_out"]).sample
    refs["latents"] = torch.randn((1, 4, 8, 8), generator=g)
    image = pipe(PROMPT, negative_prompt=NEGATIVE_PROMPT, num_inference_steps=4, guidance_scale=GUIDANCE,
                 latents=refs["latents"].clone(), height=64, width=64, output_type="np").images
    refs["image"] = torch.from_numpy(np.asarray(image, dtype=np.float32))
    # The LoRA must change what it adapts, or the comparison proves nothing.
    plain = StableDiffusionPipeline.from_pretrained(str(fix / "sd1_tiny"), torch_dtype=torch.float32,
                                                    safety_checker=None, requires_safety_checker=False)
    with torch.no_grad():
        changed = float((plain.unet(sample, torch.tensor([UNET_TIMESTEP]), refs["text_out"]).sample - refs["unet_out"]).abs().max())
    assert changed > 1e-3, changed
    save_file({k: v.float().contiguous() for k, v in refs.items()}, str(out / "sd1_tiny_reference.safetensors"))
    log(f"lora: fused at {scale}; the UNet output moved by up to {changed:.3f}")


def make_sd3_lora(fix: Path):
    """A LoRA for the tiny SD 3 transformer in diffusers' names (`lora/sd3_tiny_peft.safetensors`:
    `transformer.<module>.lora_A.weight` / `.lora_B.weight`, as `save_lora_weights` writes
    them), on the joint attention's image query, context key and output, 3.5 medium's second
    attention's value and a feed-forward; and what diffusers makes of it: `load_lora_weights`,
    `fuse_lora(lora_scale=0.7)`, one transformer call. Needs `peft`."""
    from diffusers import StableDiffusion3Pipeline
    from safetensors.torch import load_file, save_file

    out = fix / "lora"
    out.mkdir(parents=True, exist_ok=True)
    pipe = StableDiffusion3Pipeline.from_pretrained(str(fix / "sd3_tiny"), torch_dtype=torch.float32)
    tr = pipe.transformer
    g = torch.Generator().manual_seed(78)
    rank = 4
    modules = ["transformer_blocks.0.attn.to_q", "transformer_blocks.0.attn.add_k_proj",
               "transformer_blocks.1.attn.to_out.0", "transformer_blocks.0.attn2.to_v",
               "transformer_blocks.2.ff.net.0.proj"]
    tensors = {}
    for name in modules:
        module = tr.get_submodule(name)
        tensors[f"transformer.{name}.lora_A.weight"] = (torch.randn((rank, module.in_features), generator=g) * 0.3).contiguous()
        tensors[f"transformer.{name}.lora_B.weight"] = (torch.randn((module.out_features, rank), generator=g) * 0.3).contiguous()
    path = out / "sd3_tiny_peft.safetensors"
    save_file(tensors, str(path))

    refs = json.loads((fix / "sd3_tiny" / "reference.json").read_text())
    ref = load_file(str(fix / "sd3_tiny" / "reference.safetensors"))
    args = (ref["transformer_sample"], ref["prompt_embeds"], ref["pooled_embeds"], torch.tensor([refs["transformer_timestep"]]))
    with torch.no_grad():
        plain = tr(hidden_states=args[0], encoder_hidden_states=args[1], pooled_projections=args[2], timestep=args[3]).sample
    scale = 0.7
    pipe.load_lora_weights(str(path))
    pipe.fuse_lora(lora_scale=scale)
    pipe.unload_lora_weights()  # the fused weights stay
    with torch.no_grad():
        fused = pipe.transformer(hidden_states=args[0], encoder_hidden_states=args[1], pooled_projections=args[2], timestep=args[3]).sample
    changed = float((fused - plain).abs().max())
    assert changed > 1e-3, changed  # the LoRA must change what it adapts
    save_file({"scale": torch.tensor([scale]), "transformer_out": fused.float().contiguous()},
              str(out / "sd3_tiny_reference.safetensors"))
    log(f"sd3 lora: fused at {scale}; the transformer output moved by up to {changed:.3f}")


def make_flux_lora(fix: Path):
    """A LoRA for the tiny FLUX transformer in diffusers' names (`lora/flux_tiny_peft.safetensors`,
    as ai-toolkit and diffusers' trainers write them), on a double-stream block's image query
    and context value, a single-stream block's key, MLP widening and output projection (which
    this runtime reads side by side with others), and the final projection; and what
    diffusers makes of it: `load_lora_weights`, `fuse_lora(lora_scale=0.7)`, one transformer
    call on flux_tiny's reference inputs. Needs `peft`."""
    from diffusers import FluxPipeline
    from safetensors.torch import load_file, save_file

    out = fix / "lora"
    out.mkdir(parents=True, exist_ok=True)
    pipe = FluxPipeline.from_pretrained(str(fix / "flux_tiny"), torch_dtype=torch.float32)
    tr = pipe.transformer
    g = torch.Generator().manual_seed(79)
    rank = 4
    modules = ["transformer_blocks.0.attn.to_q", "transformer_blocks.1.attn.add_v_proj",
               "single_transformer_blocks.0.attn.to_k", "single_transformer_blocks.1.proj_mlp",
               "single_transformer_blocks.1.proj_out", "proj_out"]
    tensors = {}
    for name in modules:
        module = tr.get_submodule(name)
        tensors[f"transformer.{name}.lora_A.weight"] = (torch.randn((rank, module.in_features), generator=g) * 0.3).contiguous()
        tensors[f"transformer.{name}.lora_B.weight"] = (torch.randn((module.out_features, rank), generator=g) * 0.3).contiguous()
    path = out / "flux_tiny_peft.safetensors"
    save_file(tensors, str(path))

    refs = json.loads((fix / "flux_tiny" / "reference.json").read_text())
    ref = load_file(str(fix / "flux_tiny" / "reference.safetensors"))
    sample = ref["transformer_sample"]
    _, _, lh, lw = sample.shape
    embeds, pooled = ref["prompt_embeds"], ref["pooled_embeds"]

    def call(transformer):
        with torch.no_grad():
            out = transformer(hidden_states=pipe._pack_latents(sample, 1, 16, lh, lw), encoder_hidden_states=embeds,
                              pooled_projections=pooled, timestep=torch.tensor([refs["transformer_timestep"] / 1000]),
                              img_ids=pipe._prepare_latent_image_ids(1, lh // 2, lw // 2, "cpu", torch.float32),
                              txt_ids=torch.zeros(embeds.shape[1], 3),
                              guidance=torch.tensor([refs["guidance_scale"]])).sample
        return pipe._unpack_latents(out, lh, lw, 1)

    plain = call(tr)
    scale = 0.7
    pipe.load_lora_weights(str(path))
    pipe.fuse_lora(lora_scale=scale)
    pipe.unload_lora_weights()  # the fused weights stay
    fused = call(pipe.transformer)
    changed = float((fused - plain).abs().max())
    assert changed > 1e-3, changed  # the LoRA must change what it adapts
    assert float((plain - ref["transformer_out"]).abs().max()) < 1e-5  # the same inputs as the reference
    save_file({"scale": torch.tensor([scale]), "transformer_out": fused.float().contiguous()},
              str(out / "flux_tiny_reference.safetensors"))
    log(f"flux lora: fused at {scale}; the transformer output moved by up to {changed:.3f}")


def make_resize(fix: Path):
    """`resize/`: Pillow's Lanczos resizing (`Image.resize(size, Image.LANCZOS)`), which
    diffusers' pipelines give a PIL image (FLUX.1 Kontext's reference image) and
    `Image::resized` must match to the byte. Two sources, the 50x34 FLUX card (flat
    quadrants, sharp edges, so the kernel's lobes overshoot and clamp) and 37x29 uniform
    noise, each resized to sizes that shrink, grow, and change one axis only."""
    from PIL import Image

    out = fix / "resize"
    out.mkdir(parents=True, exist_ok=True)
    log("== resize")
    card, _ = flux_test_card(50, 34)
    noise = np.random.default_rng(2901).integers(0, 256, (29, 37, 3), dtype=np.uint8)
    cases = {"card": (card, [(48, 32), (16, 40), (120, 84), (7, 5)]),
             "noise": (noise, [(64, 48), (20, 13), (37, 10), (11, 29)])}
    listed = []
    for name, (pixels, sizes) in cases.items():
        source = Image.fromarray(pixels)
        source.save(out / f"{name}.png")
        for w, h in sizes:
            source.resize((w, h), Image.LANCZOS).save(out / f"{name}_{w}x{h}.png")
            listed.append({"source": f"{name}.png", "width": w, "height": h, "resized": f"{name}_{w}x{h}.png"})
    write_json(out / "cases.json", {"cases": listed, "pillow": Image.__version__,
                                    "notes": "resized = Image.open(source).resize((width, height), Image.LANCZOS)"})


def make_fp8_table(fix: Path):
    """`fp8.json`: the value of every byte as PyTorch's `float8_e4m3fn` and `float8_e5m2`
    (null for NaN, "inf"/"-inf" for infinities), which the runtime's fp8 decoding is checked
    against."""
    def values(dtype):
        out = []
        for v in torch.arange(256, dtype=torch.uint8).view(dtype).float().tolist():
            out.append(None if v != v else ("inf" if v == float("inf") else "-inf" if v == float("-inf") else v))
        return out
    write_json(fix / "fp8.json", {"e4m3fn": values(torch.float8_e4m3fn), "e5m2": values(torch.float8_e5m2),
                                  "notes": "value of byte i at index i, from torch.arange(256, dtype=uint8).view(dtype)"})
    log("fp8: 256 values of each type")


def make_flux_schnell(fix: Path):
    """FLUX.1-schnell's variant of flux_tiny (`flux_schnell_tiny/`): a transformer without the
    guidance embedding and schnell's scheduler (no dynamic shift, shift 1), beside
    flux_tiny's text encoders, tokenizers and VAE (the test takes those from there). Reference:
    `FluxPipeline`'s 4-step image at guidance 0 (ignored: nothing embeds it) from flux_tiny's
    latents, as schnell runs."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from safetensors.torch import load_file, save_file

    out = fix / "flux_schnell_tiny"
    if out.exists():
        shutil.rmtree(out)
    log("== flux_schnell_tiny")
    base = FluxPipeline.from_pretrained(str(fix / "flux_tiny"), torch_dtype=torch.float32)
    torch.manual_seed(7100)
    transformer = FluxTransformer2DModel(
        patch_size=1, in_channels=64, num_layers=2, num_single_layers=2, attention_head_dim=16,
        num_attention_heads=2, joint_attention_dim=96, pooled_projection_dim=32, guidance_embeds=False,
        axes_dims_rope=(4, 6, 6),
    ).eval()
    reinit_(transformer, 7101, out_gain={"proj_out": 0.5})
    scheduler = FlowMatchEulerDiscreteScheduler(shift=1.0, use_dynamic_shifting=False, base_shift=0.5, max_shift=1.15,
                                                base_image_seq_len=256, max_image_seq_len=4096)
    pipe = FluxPipeline(**{**base.components, "transformer": transformer, "scheduler": scheduler})
    pipe.set_progress_bar_config(disable=True)
    ref = load_file(str(fix / "flux_tiny" / "reference.safetensors"))
    side, steps = 32, 4
    packed = pipe._pack_latents(ref["latents"].clone(), 1, 16, side // 2, side // 2)
    image = pipe(PROMPT, num_inference_steps=steps, guidance_scale=0.0, latents=packed, height=side, width=side,
                 output_type="np").images
    log(f"  image: mean {float(image.mean()):.3f}, timesteps {[round(float(t), 2) for t in pipe.scheduler.timesteps]}")
    # As schnell's model card runs it: T5's text padded to 256 tokens, not FluxPipeline's 512.
    image_256 = pipe(PROMPT, num_inference_steps=steps, guidance_scale=0.0, latents=packed.clone(), height=side,
                     width=side, max_sequence_length=256, output_type="np").images
    moved = float(np.abs(np.asarray(image_256) - np.asarray(image)).max())
    assert moved > 2 / 255, moved  # the padding takes part in attention, so its length shows
    log(f"  with 256 T5 tokens the image moved by up to {moved * 255:.1f}/255")
    out.mkdir(parents=True)
    transformer.save_pretrained(str(out / "transformer"), safe_serialization=True)
    scheduler.save_pretrained(str(out / "scheduler"))
    save_file({"image": torch.from_numpy(np.asarray(image, dtype=np.float32)).contiguous(),
               "image_256": torch.from_numpy(np.asarray(image_256, dtype=np.float32)).contiguous()},
              str(out / "reference.safetensors"))
    write_json(out / "reference.json", {
        "prompt": PROMPT, "guidance_scale": 0.0, "num_inference_steps": steps, "height": side, "width": side,
        "notes": "image = FluxPipeline(flux_tiny's text encoders, tokenizers and VAE with this transformer and "
                 "scheduler; prompt, steps, guidance 0, flux_tiny's reference latents packed, 32x32, "
                 "output_type='np'). image_256: the same with max_sequence_length=256.",
    })


def make_flux_true_cfg(fix: Path):
    """True classifier-free guidance on the tiny FLUX (`flux_true_cfg/`): `FluxPipeline` with
    a negative prompt and `true_cfg_scale` 4 beside the embedded guidance 3.5, on flux_tiny's
    wide run (its latents, 4 steps): each step runs the negative prompt's row too and takes
    neg + 4 (cond - neg)."""
    from diffusers import FluxPipeline
    from safetensors.torch import load_file, save_file

    out = fix / "flux_true_cfg"
    out.mkdir(parents=True, exist_ok=True)
    log("== flux_true_cfg")
    pipe = FluxPipeline.from_pretrained(str(fix / "flux_tiny"), torch_dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    ref = load_file(str(fix / "flux_tiny" / "reference.safetensors"))
    side, wide, steps, scale = 32, 48, 4, 4.0
    packed = pipe._pack_latents(ref["latents_wide"].clone(), 1, 16, side // 2, wide // 2)
    image = pipe(PROMPT, negative_prompt=NEGATIVE_PROMPT, true_cfg_scale=scale, num_inference_steps=steps,
                 guidance_scale=3.5, latents=packed, height=side, width=wide, output_type="np").images
    image = torch.from_numpy(np.asarray(image, dtype=np.float32)).contiguous()
    moved = float((image - ref["image_wide"]).abs().max())
    assert moved > 0.02, moved  # the guidance must change the image
    save_file({"image": image}, str(out / "reference.safetensors"))
    write_json(out / "reference.json", {
        "negative_prompt": NEGATIVE_PROMPT, "true_cfg_scale": scale, "guidance_scale": 3.5,
        "num_inference_steps": steps,
        "notes": "image = FluxPipeline(flux_tiny, its prompt, this negative prompt and true_cfg_scale, guidance 3.5, "
                 "4 steps, 48x32, flux_tiny's latents_wide packed, output_type='np').",
    })
    log(f"flux true cfg: scale {scale}; the image moved by up to {moved:.3f}")


def flux_parts(pipe):
    """A FluxPipeline's parts that every FLUX pipeline takes (not the IP-Adapter's)."""
    keep = ("scheduler", "vae", "text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2", "transformer")
    return {k: v for k, v in pipe.components.items() if k in keep}


def flux_conditioned_transformer(seed: int, condition_channels: int):
    """flux_tiny's transformer shape taking `condition_channels` more latent channels
    (packed 2x2, so 4x that many more inputs), predicting the 16 latent channels alone."""
    from diffusers import FluxTransformer2DModel

    torch.manual_seed(seed)
    transformer = FluxTransformer2DModel(
        patch_size=1, in_channels=4 * (16 + condition_channels), out_channels=64, num_layers=2,
        num_single_layers=2, attention_head_dim=16, num_attention_heads=2, joint_attention_dim=96,
        pooled_projection_dim=32, guidance_embeds=True, axes_dims_rope=(4, 6, 6),
    ).eval()
    reinit_(transformer, seed + 1, out_gain={"proj_out": 0.5})
    return transformer


def flux_test_card(width: int, height: int):
    """A card for the FLUX image conditions: four flat quadrants split off-centre and a
    diagonal mask whose edge crosses the VAE's cells (so each pixel of a cell matters to
    Fill), as uint8 arrays."""
    card = np.zeros((height, width, 3), dtype=np.uint8)
    ys, xs = np.mgrid[:height, :width]
    card[...] = (230, 220, 200)
    card[(ys < 13) & (xs < 29)] = (220, 40, 40)
    card[(ys < 13) & (xs >= 29)] = (40, 200, 60)
    card[(ys >= 13) & (xs < 29)] = (40, 60, 210)
    mask = np.where(xs + 2 * ys > 41, 255, 0).astype(np.uint8)
    return card, mask


def flux_variant_image(fix: Path, pipeline_class, transformer, guidance: float, **inputs):
    """The 4-step 48x32 image `pipeline_class` (a FLUX pipeline) draws with `transformer` beside
    flux_tiny's other parts, from flux_tiny's wide latents, with `inputs` (its images)."""
    from diffusers import FluxPipeline
    from safetensors.torch import load_file

    base = FluxPipeline.from_pretrained(str(fix / "flux_tiny"), torch_dtype=torch.float32)
    pipe = pipeline_class(**{**flux_parts(base), "transformer": transformer})
    pipe.set_progress_bar_config(disable=True)
    ref = load_file(str(fix / "flux_tiny" / "reference.safetensors"))
    height, width = 32, 48
    packed = pipe._pack_latents(ref["latents_wide"].clone(), 1, 16, height // 2, width // 2)
    image = pipe(PROMPT, num_inference_steps=4, guidance_scale=guidance, latents=packed, height=height, width=width,
                 output_type="np", **inputs).images
    image = torch.from_numpy(np.asarray(image, dtype=np.float32)).contiguous()
    log(f"  image: mean {float(image.mean()):.3f}")
    return image


def make_flux_fill(fix: Path):
    """FLUX.1 Fill's variant of flux_tiny (`flux_fill_tiny/`): a transformer taking the
    latents, the masked image's latents and the mask's 2x2 pixels of each latent cell (the
    tiny VAE downscales by 2; FLUX.1-Fill-dev's by 8, 64 channels), 4 x 36 = 144 packed
    inputs, beside flux_tiny's text encoders, tokenizers, VAE and scheduler. Reference:
    `FluxFillPipeline`'s 4-step 48x32 image at guidance 30 (Fill's default) and strength 1,
    from flux_tiny's wide latents; diffusers samples the masked image's latent
    distribution, which the fixture patches to the mean as this runtime takes it."""
    import diffusers.pipelines.flux.pipeline_flux_fill as fill_module
    from diffusers import FluxFillPipeline
    from PIL import Image
    from safetensors.torch import save_file

    out = fix / "flux_fill_tiny"
    if out.exists():
        shutil.rmtree(out)
    log("== flux_fill_tiny")
    fill_module.retrieve_latents = lambda output, generator=None, sample_mode="sample": output.latent_dist.mode()
    transformer = flux_conditioned_transformer(7200, 16 + 4)
    card, mask = flux_test_card(48, 32)
    guidance = 30.0
    image = flux_variant_image(fix, FluxFillPipeline, transformer, guidance, image=Image.fromarray(card),
                               mask_image=Image.fromarray(mask))
    out.mkdir(parents=True)
    transformer.save_pretrained(str(out / "transformer"), safe_serialization=True)
    save_file({"image": image, "card": torch.from_numpy(card).contiguous(), "mask": torch.from_numpy(mask).contiguous()},
              str(out / "reference.safetensors"))
    write_json(out / "reference.json", {
        "prompt": PROMPT, "guidance_scale": guidance, "num_inference_steps": 4, "height": 32, "width": 48,
        "strength": 1.0,
        "notes": "image = FluxFillPipeline(flux_tiny's text encoders, tokenizers, VAE and scheduler with this "
                 "transformer; prompt, image=card, mask_image=mask (255: regenerate), steps, guidance, flux_tiny's "
                 "latents_wide packed, 48x32, output_type='np'), with retrieve_latents patched to the mean.",
    })


def make_flux_control(fix: Path):
    """FLUX.1 Canny's and Depth's variant of flux_tiny (`flux_control_tiny/`): a transformer
    taking the latents and the control image's latents, 4 x 32 = 128 packed inputs, beside
    flux_tiny's other parts. Reference: `FluxControlPipeline`'s 4-step 48x32 image at
    guidance 10 (Depth's card) with the test card as the control image, from flux_tiny's
    wide latents; the control image's latent distribution is read at its mean, as this
    runtime does (diffusers samples it; the fixture patches that)."""
    from diffusers import FluxControlPipeline
    from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution
    from PIL import Image
    from safetensors.torch import save_file

    out = fix / "flux_control_tiny"
    if out.exists():
        shutil.rmtree(out)
    log("== flux_control_tiny")
    DiagonalGaussianDistribution.sample = lambda self, generator=None: self.mode()
    transformer = flux_conditioned_transformer(7300, 16)
    card, _ = flux_test_card(48, 32)
    guidance = 10.0
    image = flux_variant_image(fix, FluxControlPipeline, transformer, guidance, control_image=Image.fromarray(card))
    out.mkdir(parents=True)
    transformer.save_pretrained(str(out / "transformer"), safe_serialization=True)
    save_file({"image": image, "card": torch.from_numpy(card).contiguous()}, str(out / "reference.safetensors"))
    write_json(out / "reference.json", {
        "prompt": PROMPT, "guidance_scale": guidance, "num_inference_steps": 4, "height": 32, "width": 48,
        "notes": "image = FluxControlPipeline(flux_tiny's text encoders, tokenizers, VAE and scheduler with this "
                 "transformer; prompt, control_image=card, steps, guidance, flux_tiny's latents_wide packed, 48x32, "
                 "output_type='np'), with the VAE's latent sample patched to the mean.",
    })


def flux_control_lora_tensors(seed: int, rank: int = 4):
    """A control LoRA for flux_tiny in Black Forest Labs' names, shaped as
    `flux1-canny-dev-lora.safetensors` is for FLUX.1-dev: a low-rank update of every linear
    layer of the original transformer (fused q/k/v and single-stream `linear1` included), the
    input layer `img_in` reading twice the model's inputs (the latents and the control image's
    latents, packed: 128 for flux_tiny's 64), bias updates (`lora_B.bias`) on every layer, and
    every attention's RMS norm scales whole."""
    g = torch.Generator().manual_seed(seed)
    d, head, mlp, pooled, joint, freq = 32, 16, 128, 32, 96, 256
    linear = {"img_in": (128, d), "txt_in": (joint, d), "time_in.in_layer": (freq, d), "time_in.out_layer": (d, d),
              "vector_in.in_layer": (pooled, d), "vector_in.out_layer": (d, d), "guidance_in.in_layer": (freq, d),
              "guidance_in.out_layer": (d, d), "final_layer.linear": (d, 64), "final_layer.adaLN_modulation.1": (d, 2 * d)}
    norms = []
    for i in range(2):
        for stream in ("img", "txt"):
            linear.update({f"double_blocks.{i}.{stream}_attn.qkv": (d, 3 * d), f"double_blocks.{i}.{stream}_attn.proj": (d, d),
                           f"double_blocks.{i}.{stream}_mlp.0": (d, mlp), f"double_blocks.{i}.{stream}_mlp.2": (mlp, d),
                           f"double_blocks.{i}.{stream}_mod.lin": (d, 6 * d)})
            norms += [f"double_blocks.{i}.{stream}_attn.norm.query_norm", f"double_blocks.{i}.{stream}_attn.norm.key_norm"]
        linear.update({f"single_blocks.{i}.linear1": (d, 3 * d + mlp), f"single_blocks.{i}.linear2": (d + mlp, d),
                       f"single_blocks.{i}.modulation.lin": (d, 3 * d)})
        norms += [f"single_blocks.{i}.norm.query_norm", f"single_blocks.{i}.norm.key_norm"]
    tensors = {}
    for name, (fan_in, fan_out) in linear.items():
        tensors[f"{name}.lora_A.weight"] = (torch.randn((rank, fan_in), generator=g) * 0.25).contiguous()
        tensors[f"{name}.lora_B.weight"] = (torch.randn((fan_out, rank), generator=g) * 0.25).contiguous()
        # PEFT gives every layer's lora_B a bias once one has it (`lora_bias`).
        tensors[f"{name}.lora_B.bias"] = (torch.randn((fan_out,), generator=g) * 0.1).contiguous()
    # diffusers' converter swaps the halves of the final adaLN's lora_A rows as well as of its
    # lora_B (and bias): the rank's halves then meet the other halves' columns, which changes
    # the update. With lora_A's two halves equal that swap changes nothing, and the converted
    # file is the original update with its output halves swapped, as it should be.
    down = tensors["final_layer.adaLN_modulation.1.lora_A.weight"]
    tensors["final_layer.adaLN_modulation.1.lora_A.weight"] = torch.cat([down[: rank // 2]] * 2).contiguous()
    for name in norms:
        tensors[f"{name}.scale"] = (1.0 + 0.3 * torch.randn((head,), generator=g)).contiguous()
    return tensors


def make_flux_control_lora(fix: Path):
    """A FLUX.1 control LoRA in BFL's names (`lora/flux_tiny_control_bfl.safetensors`, see
    flux_control_lora_tensors), the same in diffusers' names (`flux_tiny_control_peft`), and
    what diffusers draws with it: flux_tiny's parts in
    `FluxControlPipeline`, `load_lora_weights` (which widens the transformer's input layer to
    128 inputs and sets the norms' scales), the 4-step 48x32 image at guidance 10 and LoRA scale
    0.8 (`joint_attention_kwargs`), the test card as the control image, from flux_tiny's wide
    latents, the control image's latents at their mean (as in flux_control_tiny)."""
    from diffusers import FluxControlPipeline, FluxPipeline
    from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution
    from PIL import Image
    from safetensors.torch import load_file, save_file

    out = fix / "lora"
    out.mkdir(parents=True, exist_ok=True)
    log("== lora/flux_tiny_control_bfl")
    DiagonalGaussianDistribution.sample = lambda self, generator=None: self.mode()
    path = out / "flux_tiny_control_bfl.safetensors"
    tensors = flux_control_lora_tensors(7500)
    save_file(tensors, str(path))
    # diffusers reads BFL's control LoRAs with a converter written for FLUX.1-dev's sizes (19
    # and 38 blocks, 3072 wide); the same converter at flux_tiny's sizes puts the file in
    # diffusers' names, which `load_lora_weights` then takes as it takes the real file.
    import inspect
    from diffusers.loaders import lora_conversion_utils as conversion
    source = inspect.getsource(conversion._convert_bfl_flux_control_lora_to_diffusers)
    for size, tiny in (("num_layers = 19", "num_layers = 2"), ("num_single_layers = 38", "num_single_layers = 2"),
                       ("inner_dim = 3072", "inner_dim = 32")):
        assert size in source, size
        source = source.replace(size, tiny)
    scope = dict(vars(conversion))
    exec(source, scope)
    converted = scope["_convert_bfl_flux_control_lora_to_diffusers"](dict(tensors))
    # The same LoRA in diffusers' names (as diffusers' control LoRA trainer saves them).
    save_file({k: v.contiguous() for k, v in converted.items()}, str(out / "flux_tiny_control_peft.safetensors"))
    base = FluxPipeline.from_pretrained(str(fix / "flux_tiny"), torch_dtype=torch.float32)
    pipe = FluxControlPipeline(**flux_parts(base))
    pipe.set_progress_bar_config(disable=True)
    pipe.load_lora_weights(converted)
    assert pipe.transformer.config.in_channels == 128, pipe.transformer.config.in_channels
    ref = load_file(str(fix / "flux_tiny" / "reference.safetensors"))
    height, width, scale, guidance = 32, 48, 0.8, 10.0
    card, _ = flux_test_card(width, height)
    packed = pipe._pack_latents(ref["latents_wide"].clone(), 1, 16, height // 2, width // 2)
    image = pipe(PROMPT, control_image=Image.fromarray(card), num_inference_steps=4, guidance_scale=guidance,
                 latents=packed, height=height, width=width, joint_attention_kwargs={"scale": scale},
                 output_type="np").images
    image = torch.from_numpy(np.asarray(image, dtype=np.float32)).contiguous()
    log(f"  image: mean {float(image.mean()):.3f}")
    save_file({"image": image, "card": torch.from_numpy(card).contiguous(), "scale": torch.tensor([scale])},
              str(out / "flux_tiny_control_bfl_reference.safetensors"))


def make_flux_kontext(fix: Path):
    """FLUX.1 Kontext on the tiny FLUX (`flux_kontext/`): Kontext's transformer has FLUX.1-dev's
    architecture, so `FluxKontextPipeline` runs on flux_tiny's parts as they are. The
    reference image (the 48x32 card, kept at its size: `_auto_resize=False`) is encoded at the
    posterior's mode, packed, and appended to the latents' tokens with positions (1, row,
    column); the prediction keeps the latents' tokens. Reference: the 4-step 32x32 image at
    guidance 2.5 from flux_tiny's square latents (`max_area` 32x32, so the pipeline keeps the
    size asked for)."""
    from diffusers import FluxKontextPipeline, FluxPipeline
    from PIL import Image
    from safetensors.torch import load_file, save_file

    out = fix / "flux_kontext"
    out.mkdir(parents=True, exist_ok=True)
    log("== flux_kontext")
    base = FluxPipeline.from_pretrained(str(fix / "flux_tiny"), torch_dtype=torch.float32)
    pipe = FluxKontextPipeline(**flux_parts(base))
    pipe.set_progress_bar_config(disable=True)
    ref = load_file(str(fix / "flux_tiny" / "reference.safetensors"))
    side, steps, guidance = 32, 4, 2.5
    card, _ = flux_test_card(48, 32)
    packed = pipe._pack_latents(ref["latents"].clone(), 1, 16, side // 2, side // 2)
    image = pipe(image=Image.fromarray(card), prompt=PROMPT, height=side, width=side, max_area=side * side,
                 _auto_resize=False, num_inference_steps=steps, guidance_scale=guidance, latents=packed,
                 output_type="np").images
    image = torch.from_numpy(np.asarray(image, dtype=np.float32)).contiguous()
    plain = pipe(prompt=PROMPT, height=side, width=side, max_area=side * side, num_inference_steps=steps,
                 guidance_scale=guidance, latents=packed.clone(), output_type="np").images
    moved = float((image - torch.from_numpy(np.asarray(plain, dtype=np.float32))).abs().max())
    assert moved > 0.02, moved  # the reference image must change the image
    # A 50x34 card kept at its size: the pipeline cuts its sides to multiples of 4 (twice the
    # tiny VAE's downscale) and resizes it to 48x32 with Pillow's Lanczos filter.
    uneven, _ = flux_test_card(50, 34)
    kept = pipe(image=Image.fromarray(uneven), prompt=PROMPT, height=side, width=side, max_area=side * side,
                _auto_resize=False, num_inference_steps=steps, guidance_scale=guidance, latents=packed.clone(),
                output_type="np").images
    kept = torch.from_numpy(np.asarray(kept, dtype=np.float32)).contiguous()
    # The trained size the pipeline picks for images of other sizes (its own choice: resizing
    # is stopped at the size it asks for).
    class Picked(Exception):
        pass

    def stop(_image, height, width, **_):
        raise Picked(width, height)

    pipe.image_processor.resize = stop
    trained = []
    for w, h in [(1000, 700), (640, 480), (480, 640), (512, 512), (1920, 1080), (700, 1600), (100, 3000),
                 (1024, 1023), (33, 47), (1187, 883)]:
        try:
            pipe(image=Image.new("RGB", (w, h)), prompt=PROMPT, height=side, width=side, max_area=side * side,
                 num_inference_steps=1)
        except Picked as picked:
            trained.append([w, h, *picked.args])
    # One transformer call with a reference's tokens beside the latents': a 16x16 sample and
    # 16x24 reference latents, the prediction of the sample's tokens alone.
    g = torch.Generator().manual_seed(7400)
    sample, reference = torch.randn((1, 16, 16, 16), generator=g), torch.randn((1, 16, 16, 24), generator=g)
    ids = pipe._prepare_latent_image_ids(1, 8, 8, "cpu", torch.float32)
    reference_ids = pipe._prepare_latent_image_ids(1, 8, 12, "cpu", torch.float32)
    reference_ids[..., 0] = 1
    tokens = torch.cat([pipe._pack_latents(sample, 1, 16, 16, 16), pipe._pack_latents(reference, 1, 16, 16, 24)], 1)
    call = pipe.transformer(hidden_states=tokens, encoder_hidden_states=ref["prompt_embeds"],
                            pooled_projections=ref["pooled_embeds"], timestep=torch.tensor([UNET_TIMESTEP / 1000]),
                            img_ids=torch.cat([ids, reference_ids]), txt_ids=torch.zeros(ref["prompt_embeds"].shape[1], 3),
                            guidance=torch.tensor([guidance])).sample[:, :64]
    save_file({"image": image, "card": torch.from_numpy(card).contiguous(), "image_kept": kept,
               "uneven_card": torch.from_numpy(uneven).contiguous(), "transformer_sample": sample,
               "reference_latents": reference, "transformer_out": pipe._unpack_latents(call, 32, 32, 2).contiguous()},
              str(out / "reference.safetensors"))
    write_json(out / "reference.json", {
        "prompt": PROMPT, "guidance_scale": guidance, "num_inference_steps": steps, "height": side, "width": side,
        "transformer_timestep": UNET_TIMESTEP, "trained_sizes": trained,
        "notes": "image = FluxKontextPipeline(flux_tiny's parts; image=card (48x32, _auto_resize=False), prompt, "
                 "steps, guidance, flux_tiny's latents packed, 32x32 with max_area 32*32, output_type='np'). "
                 "transformer_out: flux_tiny's transformer on transformer_sample's tokens then reference_latents' "
                 "(positions (1, row, column)), with flux_tiny's prompt_embeds and pooled_embeds, at "
                 "transformer_timestep / 1000 and guidance_scale: the sample's tokens, unpacked. image_kept: as image "
                 "with uneven_card (50x34, which the pipeline resizes to 48x32). trained_sizes: [width, height, "
                 "the width and height the pipeline resizes an image of that size to by default].",
    })
    log(f"  image: mean {float(image.mean()):.3f}; the reference image moved it by up to {moved:.3f}")


def make_flow_img2img(fix: Path):
    """img2img (strength 0.6) and latent-blend inpainting (strength 0.75) on the flow-matching
    models, `flow_img2img/`: `FluxImg2ImgPipeline` and `FluxInpaintPipeline` on flux_tiny,
    `StableDiffusion3Img2ImgPipeline` and `StableDiffusion3InpaintPipeline` on sd3_tiny, each
    at 48x32 from the FLUX image conditions' card and diagonal mask. diffusers draws the noise
    and samples the image's latent distribution from a generator; both are patched to given
    values (the noise, stored unpacked, and the posterior's mean, which this runtime uses)."""
    import diffusers.pipelines.flux.pipeline_flux_img2img as flux_img2img
    import diffusers.pipelines.flux.pipeline_flux_inpaint as flux_inpaint
    import diffusers.pipelines.stable_diffusion_3.pipeline_stable_diffusion_3_img2img as sd3_img2img
    import diffusers.pipelines.stable_diffusion_3.pipeline_stable_diffusion_3_inpaint as sd3_inpaint
    from diffusers import (FluxImg2ImgPipeline, FluxInpaintPipeline, FluxPipeline, StableDiffusion3Img2ImgPipeline,
                           StableDiffusion3InpaintPipeline, StableDiffusion3Pipeline)
    from PIL import Image
    from safetensors.torch import save_file

    out = fix / "flow_img2img"
    out.mkdir(parents=True, exist_ok=True)
    log("== flow_img2img")
    height, width = 32, 48
    card, mask = flux_test_card(width, height)
    g = torch.Generator().manual_seed(7500)
    refs = {"card": torch.from_numpy(card).contiguous(), "mask": torch.from_numpy(mask).contiguous()}
    runs = (
        ("flux", flux_img2img, flux_inpaint, FluxPipeline, "flux_tiny", FluxImg2ImgPipeline, FluxInpaintPipeline,
         dict(guidance_scale=3.5)),
        ("sd3", sd3_img2img, sd3_inpaint, StableDiffusion3Pipeline, "sd3_tiny", StableDiffusion3Img2ImgPipeline,
         StableDiffusion3InpaintPipeline, dict(guidance_scale=GUIDANCE, negative_prompt=NEGATIVE_PROMPT)),
    )
    for name, img2img_module, inpaint_module, base_class, folder, img2img_class, inpaint_class, settings in runs:
        noise = torch.randn((1, 16, height // 2, width // 2), generator=g)
        refs[f"{name}_noise"] = noise
        for module in (img2img_module, inpaint_module):
            module.randn_tensor = lambda shape, noise=noise, **_: noise.clone()
            module.retrieve_latents = lambda output, generator=None, sample_mode="sample": output.latent_dist.mode()
        base = base_class.from_pretrained(str(fix / folder), torch_dtype=torch.float32)
        parts = flux_parts(base) if name == "flux" else {k: v for k, v in base.components.items()
                                                          if k not in ("image_encoder", "feature_extractor")}
        common = dict(prompt=PROMPT, num_inference_steps=STEPS, height=height, width=width, output_type="np", **settings)
        pipe = img2img_class(**parts)
        pipe.set_progress_bar_config(disable=True)
        image = pipe(image=Image.fromarray(card), strength=0.6, **common).images
        refs[f"{name}_img2img"] = torch.from_numpy(np.asarray(image, dtype=np.float32)).contiguous()
        pipe = inpaint_class(**parts)
        pipe.set_progress_bar_config(disable=True)
        if name == "sd3":
            # diffusers 0.42's SD 3 inpainting decodes without the VAE's shift (its
            # `latents / scaling_factor`, where its encode and every other SD 3 pipeline use
            # the shift: diffusers issue 13611, pull request 14671): its latents are kept and
            # decoded as the other SD 3 pipelines decode them.
            latents = pipe(image=Image.fromarray(card), mask_image=Image.fromarray(mask), strength=0.75,
                           **{**common, "output_type": "latent"}).images
            vae = pipe.vae.config
            decoded = pipe.vae.decode(latents / vae.scaling_factor + vae.shift_factor, return_dict=False)[0]
            image = pipe.image_processor.postprocess(decoded, output_type="np")
        else:
            image = pipe(image=Image.fromarray(card), mask_image=Image.fromarray(mask), strength=0.75, **common).images
        refs[f"{name}_inpaint"] = torch.from_numpy(np.asarray(image, dtype=np.float32)).contiguous()
        log(f"  {name}: img2img mean {float(refs[f'{name}_img2img'].mean()):.3f}, "
            f"inpaint mean {float(refs[f'{name}_inpaint'].mean()):.3f}")
    save_file(refs, str(out / "reference.safetensors"))
    write_json(out / "reference.json", {
        "prompt": PROMPT, "num_inference_steps": STEPS, "height": height, "width": width,
        "flux": {"guidance_scale": 3.5}, "sd3": {"guidance_scale": GUIDANCE, "negative_prompt": NEGATIVE_PROMPT},
        "strength": {"img2img": 0.6, "inpaint": 0.75},
        "notes": "X_img2img = (Flux|StableDiffusion3)Img2ImgPipeline(flux_tiny | sd3_tiny; image=card, strength 0.6, "
                 "prompt, steps, guidance (and SD 3's negative prompt), 48x32, output_type='np'); X_inpaint = the "
                 "Inpaint pipeline with mask_image=mask (255 redraws) at strength 0.75; randn_tensor patched to "
                 "X_noise (unpacked [1, 16, 16, 24]) and retrieve_latents to the posterior's mean. sd3_inpaint's "
                 "latents are decoded with the VAE's shift, as the other SD 3 pipelines decode (diffusers 0.42's "
                 "inpainting pipeline drops it: diffusers issue 13611).",
    })


def make_sdxl_img2img(fix: Path):
    """img2img (strength 0.6) and latent-blend inpainting (strength 0.75) on the tiny SDXL
    base (`sdxl_tiny/img2img_reference.safetensors`): `StableDiffusionXLImg2ImgPipeline` and
    `StableDiffusionXLInpaintPipeline` at 48x32 from the FLUX card and diagonal mask, the
    noise patched in and the image latents read at the posterior's mean, as `make_img2img`
    does for SD 1.x."""
    import diffusers.pipelines.stable_diffusion_xl.pipeline_stable_diffusion_xl_img2img as xl_img2img
    import diffusers.pipelines.stable_diffusion_xl.pipeline_stable_diffusion_xl_inpaint as xl_inpaint
    from diffusers import StableDiffusionXLImg2ImgPipeline, StableDiffusionXLInpaintPipeline, StableDiffusionXLPipeline
    from PIL import Image
    from safetensors.torch import save_file

    log("== sdxl img2img")
    height, width = 32, 48
    card, mask = flux_test_card(width, height)
    noise = torch.randn((1, 4, height // 8, width // 8), generator=torch.Generator().manual_seed(7600))
    for module in (xl_img2img, xl_inpaint):
        module.randn_tensor = lambda shape, **_: noise.clone()
        module.retrieve_latents = lambda output, generator=None, sample_mode="sample": output.latent_dist.mode()
    base = StableDiffusionXLPipeline.from_pretrained(str(fix / "sdxl_tiny"), torch_dtype=torch.float32)
    parts = {k: v for k, v in base.components.items() if k not in ("image_encoder", "feature_extractor")}
    common = dict(prompt=PROMPT, negative_prompt=NEGATIVE_PROMPT, num_inference_steps=STEPS, guidance_scale=GUIDANCE,
                  height=height, width=width, output_type="np")
    pipe = StableDiffusionXLImg2ImgPipeline(**parts)
    pipe.set_progress_bar_config(disable=True)
    img2img = pipe(image=Image.fromarray(card), strength=0.6, **common).images
    pipe = StableDiffusionXLInpaintPipeline(**parts)
    pipe.set_progress_bar_config(disable=True)
    inpaint = pipe(image=Image.fromarray(card), mask_image=Image.fromarray(mask), strength=0.75, **common).images
    save_file({"noise": noise, "card": torch.from_numpy(card).contiguous(), "mask": torch.from_numpy(mask).contiguous(),
               "img2img": torch.from_numpy(np.asarray(img2img, dtype=np.float32)).contiguous(),
               "inpaint": torch.from_numpy(np.asarray(inpaint, dtype=np.float32)).contiguous()},
              str(fix / "sdxl_tiny" / "img2img_reference.safetensors"))
    log(f"  img2img mean {float(img2img.mean()):.3f}, inpaint mean {float(inpaint.mean()):.3f}")


def make_sd3_slg(fix: Path):
    """Skip-layer guidance on the tiny SD 3 (`sd3_slg/`): `StableDiffusion3Pipeline` with
    `skip_guidance_layers` on sd3_tiny's square image (its prompt, negative prompt, latents,
    10 steps, guidance 7.5), skipping the middle and the last of its three joint blocks at
    diffusers' default scale and start and a later stop (0.5: steps 1 to 4 rather than step
    1 alone), so that the skipped call runs in several steps and through the last block,
    which drops the text stream."""
    from diffusers import StableDiffusion3Pipeline
    from safetensors.torch import load_file, save_file

    out = fix / "sd3_slg"
    out.mkdir(parents=True, exist_ok=True)
    log("== sd3_slg")
    pipe = StableDiffusion3Pipeline.from_pretrained(str(fix / "sd3_tiny"), torch_dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    tiny = json.loads((fix / "sd3_tiny" / "reference.json").read_text())
    ref = load_file(str(fix / "sd3_tiny" / "reference.safetensors"))
    layers, scale, start, stop = [1, 2], 2.8, 0.01, 0.5
    side, steps = tiny["height"], tiny["num_inference_steps"]
    image = pipe(tiny["prompt"], negative_prompt=tiny["negative_prompt"], num_inference_steps=steps,
                 guidance_scale=tiny["guidance_scale"], latents=ref["latents"].clone(), height=side, width=side,
                 skip_guidance_layers=layers, skip_layer_guidance_scale=scale,
                 skip_layer_guidance_start=start, skip_layer_guidance_stop=stop, output_type="np").images
    image = torch.from_numpy(np.asarray(image, dtype=np.float32)).contiguous()
    moved = float((image - ref["image"]).abs().max())
    assert moved > 0.02, moved  # the guidance must change the image (by 5/255 or more)
    save_file({"image": image}, str(out / "reference.safetensors"))
    write_json(out / "reference.json", {
        "skip_guidance_layers": layers, "skip_layer_guidance_scale": scale,
        "skip_layer_guidance_start": start, "skip_layer_guidance_stop": stop,
        "notes": "image = StableDiffusion3Pipeline(sd3_tiny, its reference.json's prompt, negative_prompt, "
                 "num_inference_steps, guidance_scale, height and width, latents = its reference's latents, "
                 "these skip-layer guidance settings, output_type='np').",
    })
    log(f"sd3 slg: layers {layers}, scale {scale}, window ({start}, {stop}); the image moved by up to {moved:.3f}")


def make_inpaint(fix: Path):
    """A tiny 9-channel inpainting UNet (latents, mask, masked-image latents) with the tiny
    SD 1.x text encoder and VAE, through StableDiffusionInpaintPipeline. diffusers samples the
    masked image's latent distribution; this runtime takes its mean (the spread of a VAE
    latent is tiny), so the fixture patches the pipeline to the mean as well."""
    from diffusers import StableDiffusionInpaintPipeline
    from PIL import Image
    from safetensors.torch import save_file

    import tempfile

    # The pipeline loads a whole folder; only the UNet and the reference are kept (the test
    # borrows the rest from sd1_tiny).
    out_dir = fix / "sd1_inpaint_tiny"
    if out_dir.exists():
        shutil.rmtree(out_dir)
    work = Path(tempfile.mkdtemp())
    shutil.copytree(fix / "sd1_tiny", work, dirs_exist_ok=True, ignore=shutil.ignore_patterns("*reference*", "unet"))
    torch.manual_seed(1200)
    unet = sd1_unet(in_channels=9).eval()
    reinit_(unet, 1201, out_gain={"conv_out": 0.5})
    unet.save_pretrained(str(work / "unet"))
    pipe = StableDiffusionInpaintPipeline.from_pretrained(str(work), torch_dtype=torch.float32,
                                                          safety_checker=None, requires_safety_checker=False)
    pipe._encode_vae_image = lambda image, generator: pipe.vae.encode(image).latent_dist.mode() * pipe.vae.config.scaling_factor

    # The test card of tests/img2img.rs, and a mask over its right half and a bottom strip.
    card, mask = test_card_and_mask()
    latents = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(12))
    image = pipe(PROMPT, image=Image.fromarray(card), mask_image=Image.fromarray(mask), latents=latents.clone(),
                 num_inference_steps=STEPS, guidance_scale=GUIDANCE, negative_prompt=NEGATIVE_PROMPT,
                 strength=1.0, height=64, width=64, output_type="np").images
    shutil.copytree(work / "unet", out_dir / "unet")
    shutil.rmtree(work)
    save_file({"latents": latents, "image": torch.from_numpy(image).contiguous(),
               "card": torch.from_numpy(card).contiguous(), "mask": torch.from_numpy(mask).contiguous()},
              str(out_dir / "reference.safetensors"))
    log(f"inpaint: image mean {float(image.mean()):.3f}")


def controlnet_card():
    """A control image as ControlNet's Canny models take one: white edges on black (a circle
    and a horizon line crossing the VAE's cells), 64x64, as a uint8 array."""
    card = np.zeros((64, 64, 3), dtype=np.uint8)
    ys, xs = np.mgrid[:64, :64]
    ring = np.abs(np.hypot(ys - 24.5, xs - 30.5) - 14) < 1.5
    card[ring | (np.abs(ys - 46) < 1)] = 255
    return card


def tiny_controlnet(unet, seed: int):
    """`ControlNetModel.from_unet` of a tiny UNet, with a conditioning embedding of four levels
    (the tiny VAEs' 8x) and every layer re-initialised from `seed`, the zero convolutions
    included (trained ones are not zero)."""
    from diffusers import ControlNetModel

    torch.manual_seed(seed)
    controlnet = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(16, 16, 32, 32)).eval()
    reinit_(controlnet, seed + 1, out_gain={n: 0.5 for n, _ in controlnet.named_modules() if n.startswith("controlnet_")})
    return controlnet


def make_controlnet(fix: Path):
    """A ControlNet for the tiny SD 1.x model (`controlnet_tiny/`, laid out as a hub ControlNet
    repo: config.json and weights at its root): `ControlNetModel.from_unet` of sd1_tiny's UNet
    (its down and mid blocks copied), with a conditioning embedding of four levels (the VAE's
    8x) and every layer re-initialised, the zero convolutions included (trained ones are not
    zero). Reference: `StableDiffusionControlNetPipeline`'s 10-step images with the Canny-like
    card, guidance 7.5 and the negative prompt, from fixed latents: at conditioning scale 1
    over the whole schedule (`image`), at 0.6 from 20% to 80% of the steps (`image_window`),
    the same pipeline without a control image's effect (scale 0, `image_unguided`) to
    show the ControlNet moves the image, in guess mode at scale 1 (`image_guess`), and
    `StableDiffusionControlNetImg2ImgPipeline`'s image from the img2img test card at strength
    0.6, scale 0.8 from 20% to 70% of the steps it runs (`image_img2img`), and with two
    ControlNets (the same one twice, diffusers' `MultiControlNetModel`), the card at 0.7 and
    the img2img card at 0.5 from 30% to 90% (`image_multi`)."""
    from diffusers import StableDiffusionControlNetPipeline
    from PIL import Image
    from safetensors.torch import save_file

    out = fix / "controlnet_tiny"
    if out.exists():
        shutil.rmtree(out)
    log("== controlnet_tiny")
    base = sd_pipeline(fix / "sd1_tiny")
    controlnet = tiny_controlnet(base.unet, 2600)
    pipe = StableDiffusionControlNetPipeline(**{k: v for k, v in base.components.items()
                                                if k not in ("image_encoder",)}, controlnet=controlnet)
    pipe.set_progress_bar_config(disable=True)
    card = controlnet_card()
    latents = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(2602))
    cases = {"image": (1.0, 0.0, 1.0, False), "image_window": (0.6, 0.2, 0.8, False),
             "image_unguided": (0.0, 0.0, 1.0, False), "image_guess": (1.0, 0.0, 1.0, True)}
    images = {}
    for key, (scale, start, end, guess) in cases.items():
        image = pipe(PROMPT, image=Image.fromarray(card), negative_prompt=NEGATIVE_PROMPT, num_inference_steps=STEPS,
                     guidance_scale=GUIDANCE, latents=latents.clone(), height=64, width=64, output_type="np",
                     controlnet_conditioning_scale=scale, control_guidance_start=start,
                     control_guidance_end=end, guess_mode=guess).images
        images[key] = torch.from_numpy(np.asarray(image, dtype=np.float32)).contiguous()
    # img2img with a ControlNet: diffusers' noise and latent sampling patched to given noise
    # and the latent mean, as make_img2img does; its window counts the steps the run takes.
    import diffusers.pipelines.controlnet.pipeline_controlnet_img2img as controlnet_img2img
    from diffusers import StableDiffusionControlNetImg2ImgPipeline

    noise = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(2603))
    controlnet_img2img.randn_tensor = lambda shape, **_: noise.clone()
    controlnet_img2img.retrieve_latents = lambda output, generator=None, sample_mode="sample": output.latent_dist.mode()
    start, _ = test_card_and_mask()
    img2img = StableDiffusionControlNetImg2ImgPipeline(**{k: v for k, v in base.components.items()
                                                          if k not in ("image_encoder",)}, controlnet=controlnet)
    img2img.set_progress_bar_config(disable=True)
    image = img2img(PROMPT, image=Image.fromarray(start), control_image=Image.fromarray(card), strength=0.6,
                    negative_prompt=NEGATIVE_PROMPT, num_inference_steps=STEPS, guidance_scale=GUIDANCE, height=64,
                    width=64, output_type="np", controlnet_conditioning_scale=0.8, control_guidance_start=0.2,
                    control_guidance_end=0.7).images
    images["image_img2img"] = torch.from_numpy(np.asarray(image, dtype=np.float32)).contiguous()
    # Two ControlNets (diffusers' MultiControlNetModel: their additions summed), here the same
    # one twice, each with its own image, scale and window.
    multi = StableDiffusionControlNetPipeline(**{k: v for k, v in base.components.items() if k not in ("image_encoder",)},
                                              controlnet=[controlnet, controlnet])
    multi.set_progress_bar_config(disable=True)
    image = multi(PROMPT, image=[Image.fromarray(card), Image.fromarray(start)], negative_prompt=NEGATIVE_PROMPT,
                  num_inference_steps=STEPS, guidance_scale=GUIDANCE, latents=latents.clone(), height=64, width=64,
                  output_type="np", controlnet_conditioning_scale=[0.7, 0.5], control_guidance_start=[0.0, 0.3],
                  control_guidance_end=[1.0, 0.9]).images
    images["image_multi"] = torch.from_numpy(np.asarray(image, dtype=np.float32)).contiguous()
    for key in ("image", "image_window", "image_guess"):
        moved = float((images[key] - images["image_unguided"]).abs().max())
        assert moved > 4 / 255, (key, moved)
        log(f"  {key}: the ControlNet moved the image by up to {moved * 255:.1f}/255")
    controlnet.save_pretrained(str(out), safe_serialization=True)
    save_file({"latents": latents, "card": torch.from_numpy(card).contiguous(), "noise": noise,
               "start": torch.from_numpy(start).contiguous(), **images},
              str(out / "reference.safetensors"))
    write_json(out / "reference.json", {
        "prompt": PROMPT, "negative_prompt": NEGATIVE_PROMPT, "num_inference_steps": STEPS, "guidance_scale": GUIDANCE,
        "height": 64, "width": 64,
        "img2img": {"strength": 0.6, "controlnet_conditioning_scale": 0.8, "control_guidance_start": 0.2,
                    "control_guidance_end": 0.7},
        "multi": {"image": ["card", "start"], "controlnet_conditioning_scale": [0.7, 0.5],
                  "control_guidance_start": [0.0, 0.3], "control_guidance_end": [1.0, 0.9]},
        "cases": {k: {"controlnet_conditioning_scale": s, "control_guidance_start": a, "control_guidance_end": b,
                      "guess_mode": g}
                  for k, (s, a, b, g) in cases.items()},
        "notes": "image* = StableDiffusionControlNetPipeline(sd1_tiny's parts, this controlnet; prompt, image=card, "
                 "negative prompt, steps, guidance, latents, 64x64, output_type='np', and each case's "
                 "controlnet_conditioning_scale, control_guidance_start, control_guidance_end and guess_mode). "
                 "image_img2img = StableDiffusionControlNetImg2ImgPipeline(the same parts; image=start, "
                 "control_image=card, strength 0.6, scale 0.8 from 20% to 70% of the steps it runs), its noise "
                 "patched to `noise` and the start's latents to the VAE posterior's mean. image_multi = "
                 "StableDiffusionControlNetPipeline(controlnet=[this, this]; image=[card, start], the scales and "
                 "windows of `multi`, latents).",
    })


def scaled_images(pipe, latents, scale_arg: str, what: str) -> dict:
    """The 10-step 64x64 guided images `pipe` (a pipeline with a side network: a ControlNet,
    a T2I-Adapter) draws from `latents` with the ControlNet card, the network at scale 0.8
    (`image`) and 0 (`image_unguided`), checked to differ: the network moves the image."""
    from PIL import Image

    images = {}
    for key, scale in (("image", 0.8), ("image_unguided", 0.0)):
        image = pipe(PROMPT, image=Image.fromarray(controlnet_card()), negative_prompt=NEGATIVE_PROMPT,
                     num_inference_steps=STEPS, guidance_scale=GUIDANCE, latents=latents.clone(), height=64, width=64,
                     output_type="np", **{scale_arg: scale}).images
        images[key] = torch.from_numpy(np.asarray(image, dtype=np.float32)).contiguous()
    moved = float((images["image"] - images["image_unguided"]).abs().max())
    assert moved > 4 / 255, moved
    log(f"  {what} moved the image by up to {moved * 255:.1f}/255")
    return images


def make_controlnet_sdxl(fix: Path):
    """A ControlNet for the tiny SDXL model (`controlnet_sdxl_tiny/`): `ControlNetModel.from_unet`
    of sdxl_tiny's UNet, so it also reads SDXL's pooled text and size input, re-initialised
    as `controlnet_tiny` is. Reference: `StableDiffusionXLControlNetPipeline`'s 10-step image
    with the same card at conditioning scale 0.8, guidance 7.5 and the negative prompt, from
    fixed latents (`image`), and at scale 0 (`image_unguided`)."""
    from diffusers import StableDiffusionXLControlNetPipeline, StableDiffusionXLPipeline
    from safetensors.torch import save_file

    out = fix / "controlnet_sdxl_tiny"
    if out.exists():
        shutil.rmtree(out)
    log("== controlnet_sdxl_tiny")
    base = StableDiffusionXLPipeline.from_pretrained(str(fix / "sdxl_tiny"), torch_dtype=torch.float32)
    controlnet = tiny_controlnet(base.unet, 2610)
    keep = ("vae", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2", "unet", "scheduler")
    pipe = StableDiffusionXLControlNetPipeline(**{k: v for k, v in base.components.items() if k in keep},
                                               controlnet=controlnet)
    pipe.set_progress_bar_config(disable=True)
    latents = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(2612))
    images = scaled_images(pipe, latents, "controlnet_conditioning_scale", "the SDXL ControlNet")
    controlnet.save_pretrained(str(out), safe_serialization=True)
    save_file({"latents": latents, "card": torch.from_numpy(controlnet_card()).contiguous(), **images},
              str(out / "reference.safetensors"))
    write_json(out / "reference.json", {
        "prompt": PROMPT, "negative_prompt": NEGATIVE_PROMPT, "num_inference_steps": STEPS, "guidance_scale": GUIDANCE,
        "height": 64, "width": 64, "controlnet_conditioning_scale": 0.8,
        "notes": "image = StableDiffusionXLControlNetPipeline(sdxl_tiny's parts, this controlnet; prompt, image=card, "
                 "negative prompt, steps, guidance, latents, 64x64, output_type='np', "
                 "controlnet_conditioning_scale=0.8); image_unguided: scale 0.",
    })


def make_t2i_adapter(fix: Path):
    """A T2I-Adapter for the tiny SD 1.x model (`t2i_adapter_tiny/`, laid out as a hub adapter
    repo: config.json and weights at its root): `T2IAdapter` of the full type with sd1_tiny's
    widths (features at the latents' size and half of it), every layer re-initialised.
    Reference: `StableDiffusionAdapterPipeline`'s 10-step images with the ControlNet's card,
    guidance 7.5 and the negative prompt, from fixed latents, at adapter scale 0.8 (`image`)
    and 0 (`image_unguided`)."""
    from diffusers import StableDiffusionAdapterPipeline, T2IAdapter
    from safetensors.torch import save_file

    out = fix / "t2i_adapter_tiny"
    if out.exists():
        shutil.rmtree(out)
    log("== t2i_adapter_tiny")
    base = sd_pipeline(fix / "sd1_tiny")
    torch.manual_seed(2700)
    adapter = T2IAdapter(in_channels=3, channels=[32, 64], num_res_blocks=2, downscale_factor=8,
                         adapter_type="full_adapter").eval()
    reinit_(adapter, 2701, out_gain={n: 0.5 for n, _ in adapter.named_modules() if n.endswith("block2")})
    pipe = StableDiffusionAdapterPipeline(**{k: v for k, v in base.components.items() if k not in ("image_encoder",)},
                                          adapter=adapter)
    pipe.set_progress_bar_config(disable=True)
    latents = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(2702))
    images = scaled_images(pipe, latents, "adapter_conditioning_scale", "the T2I-Adapter")
    adapter.save_pretrained(str(out), safe_serialization=True)
    save_file({"latents": latents, "card": torch.from_numpy(controlnet_card()).contiguous(), **images},
              str(out / "reference.safetensors"))
    write_json(out / "reference.json", {
        "prompt": PROMPT, "negative_prompt": NEGATIVE_PROMPT, "num_inference_steps": STEPS, "guidance_scale": GUIDANCE,
        "height": 64, "width": 64, "adapter_conditioning_scale": 0.8,
        "notes": "image = StableDiffusionAdapterPipeline(sd1_tiny's parts, this adapter; prompt, image=card, negative "
                 "prompt, steps, guidance, latents, 64x64, output_type='np', adapter_conditioning_scale=0.8); "
                 "image_unguided: scale 0.",
    })


def sd_pipeline(folder: Path):
    """A tiny SD folder as a `StableDiffusionPipeline` in f32, with no safety checker."""
    from diffusers import StableDiffusionPipeline

    return StableDiffusionPipeline.from_pretrained(str(folder), torch_dtype=torch.float32, safety_checker=None,
                                                   requires_safety_checker=False)


def make_taesd(fix: Path):
    """A tiny AutoencoderTiny (TAESD's architecture, 16 channels, fewer blocks) with random
    weights: one encode and one decode."""
    from diffusers import AutoencoderTiny
    from safetensors.torch import save_file

    torch.manual_seed(1300)
    vae = AutoencoderTiny(
        encoder_block_out_channels=(16, 16, 16, 16),
        decoder_block_out_channels=(16, 16, 16, 16),
        num_encoder_blocks=(1, 2, 2, 2),
        num_decoder_blocks=(2, 2, 2, 1),
    ).eval()
    reinit_(vae, 1301)
    out_dir = fix / "taesd_tiny"
    if out_dir.exists():
        shutil.rmtree(out_dir)
    vae.save_pretrained(str(out_dir / "vae_tiny"))
    g = torch.Generator().manual_seed(1302)
    image = torch.rand(1, 3, 64, 64, generator=g) * 2 - 1
    latents = torch.randn(1, 4, 8, 8, generator=g) * 2
    encoded = vae.encode(image).latents
    decoded = vae.decode(latents).sample
    save_file({"image": image, "encoded": encoded.contiguous(), "latents": latents, "decoded": decoded.contiguous()},
              str(out_dir / "reference.safetensors"))
    log(f"taesd: encoded {tuple(encoded.shape)} |max| {float(encoded.abs().max()):.3f}, "
        f"decoded |max| {float(decoded.abs().max()):.3f}")


def make_img2img(fix: Path):
    """img2img (strength 0.6) and latent-blend inpainting (a 4-channel UNet, strength 0.75)
    on the tiny SD 1.x model. diffusers draws the noise and samples the image's latent
    distribution from a generator; both are patched to given values (the noise, and the
    latent mean, which this runtime uses), so the runtime can take the same noise."""
    import diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion_img2img as img2img_module
    import diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion_inpaint as inpaint_module
    from diffusers import StableDiffusionImg2ImgPipeline, StableDiffusionInpaintPipeline
    from PIL import Image
    from safetensors.torch import save_file

    noise = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(14))
    for module in (img2img_module, inpaint_module):
        module.randn_tensor = lambda shape, **_: noise.clone()
        module.retrieve_latents = lambda output, generator=None, sample_mode="sample": output.latent_dist.mode()
    card, mask = test_card_and_mask()
    common = dict(prompt=PROMPT, negative_prompt=NEGATIVE_PROMPT, num_inference_steps=STEPS, guidance_scale=GUIDANCE,
                  output_type="np")
    pipe = StableDiffusionImg2ImgPipeline.from_pretrained(str(fix / "sd1_tiny"), torch_dtype=torch.float32,
                                                          safety_checker=None, requires_safety_checker=False)
    img2img = pipe(image=Image.fromarray(card), strength=0.6, **common).images
    pipe = StableDiffusionInpaintPipeline.from_pretrained(str(fix / "sd1_tiny"), torch_dtype=torch.float32,
                                                          safety_checker=None, requires_safety_checker=False)
    pipe._encode_vae_image = lambda image, generator: pipe.vae.encode(image).latent_dist.mode() * pipe.vae.config.scaling_factor
    inpaint = pipe(image=Image.fromarray(card), mask_image=Image.fromarray(mask), strength=0.75, height=64, width=64,
                   **common).images
    save_file({"noise": noise, "card": torch.from_numpy(card).contiguous(), "mask": torch.from_numpy(mask).contiguous(),
               "img2img": torch.from_numpy(img2img).contiguous(), "inpaint": torch.from_numpy(inpaint).contiguous()},
              str(fix / "sd1_tiny" / "img2img_reference.safetensors"))
    log(f"img2img mean {float(img2img.mean()):.3f}, inpaint mean {float(inpaint.mean()):.3f}")


def make_vae_encoder(fix: Path):
    """The sd1_tiny VAE's encoder on a fixed image: the posterior mean before scaling, and the
    image decoded back, for the encoder's parity and a round trip."""
    from diffusers import AutoencoderKL
    from safetensors.torch import save_file

    vae = AutoencoderKL.from_pretrained(str(fix / "sd1_tiny" / "vae")).float().eval()
    g = torch.Generator().manual_seed(77)
    # A smooth image with edges: low-frequency noise through tanh, in [-1, 1].
    low = torch.randn(1, 3, 8, 8, generator=g)
    image = torch.tanh(2 * torch.nn.functional.interpolate(low, size=(64, 64), mode="bilinear", align_corners=False))
    mean = vae.encode(image).latent_dist.mean
    save_file(
        {"image": image.contiguous(), "posterior_mean": mean.contiguous()},
        str(fix / "sd1_tiny" / "vae_encoder_reference.safetensors"),
    )
    log(f"vae encoder: mean {tuple(mean.shape)}, |mean| max {float(mean.abs().max()):.3f}")


def make_schedulers(fix: Path):
    from diffusers import DDIMScheduler

    cases = []
    for spacing in ("leading", "trailing", "linspace"):
        for pred in ("epsilon", "v_prediction", "sample"):
            cases.append(run_sched_case(f"ddim_{spacing}_{pred}", "ddim", dict(timestep_spacing=spacing, prediction_type=pred)))
    for spacing in ("leading", "trailing", "linspace"):
        for pred in ("epsilon", "v_prediction"):
            cases.append(run_sched_case(f"euler_{spacing}_{pred}", "euler", dict(timestep_spacing=spacing, prediction_type=pred)))
    explicit = [999, 950, 900, 800, 700, 500, 300, 150, 50, 0]
    for pred in ("epsilon", "v_prediction"):
        cases.append(
            run_sched_case(f"euler_explicit_{pred}", "euler", dict(timestep_spacing="leading", prediction_type=pred), explicit=explicit)
        )
    # Euler on Karras sigmas ("Euler Karras"), between the spaced schedule's own ends, with
    # fractional timesteps.
    cases.append(run_sched_case("euler_karras_linspace_epsilon", "euler", dict(use_karras_sigmas=True)))
    cases.append(
        run_sched_case("euler_karras_trailing_v_prediction", "euler",
                       dict(use_karras_sigmas=True, timestep_spacing="trailing", prediction_type="v_prediction"), steps=20)
    )
    # DPM-Solver++ 2M (midpoint), as SD front ends call it, with and without Karras sigmas;
    # 10 and 20 steps (fewer than 15 switch to first order at the end).
    for spacing in ("leading", "trailing", "linspace"):
        for pred in ("epsilon", "v_prediction"):
            cases.append(run_sched_case(f"dpm++2m_{spacing}_{pred}", "dpm++2m", dict(timestep_spacing=spacing, prediction_type=pred)))
    for steps in (10, 20):
        cases.append(
            run_sched_case(f"dpm++2m_karras_{steps}", "dpm++2m", dict(use_karras_sigmas=True), steps=steps)
        )
    cases.append(run_sched_case("dpm++2m_leading_20", "dpm++2m", dict(timestep_spacing="leading"), steps=20))
    cases.append(run_sched_case("dpm++2m_explicit", "dpm++2m", dict(), explicit=explicit))
    for spacing in ("leading", "trailing", "linspace"):
        cases.append(run_sched_case(f"euler_a_{spacing}_epsilon", "euler_a", dict(timestep_spacing=spacing)))
    cases.append(run_sched_case("euler_a_leading_v_prediction", "euler_a", dict(prediction_type="v_prediction")))
    for steps in (1, 4, 8):
        cases.append(run_sched_case(f"lcm_{steps}", "lcm", dict(set_alpha_to_one=True), steps=steps))
    cases.append(run_sched_case("lcm_4_v_prediction", "lcm", dict(prediction_type="v_prediction"), steps=4))
    # A small timestep_scaling makes the boundary condition's skip term count.
    cases.append(run_sched_case("lcm_4_scaling_0.001", "lcm", dict(timestep_scaling=0.001), steps=4))
    # Zero terminal SNR (`rescale_betas_zero_snr`, Lin et al. 2023, with the trailing spacing
    # and v-prediction it is trained with): the betas rescaled so that the last timestep is
    # pure noise; the sigma schedulers keep its alpha_cumprod at 2^-24 (a first sigma of 4096).
    for kind in ("ddim", "euler", "euler_a", "dpm++2m"):
        cases.append(run_sched_case(f"{kind}_zero_snr", kind, dict(rescale_betas_zero_snr=True, timestep_spacing="trailing",
                                                                    prediction_type="v_prediction")))
    cases.append(run_sched_case("lcm_4_zero_snr", "lcm", dict(rescale_betas_zero_snr=True, timestep_spacing="trailing",
                                                              prediction_type="v_prediction"), steps=4))
    # Flow matching (SD 3): the fixed shift of SD 3's configs, none, dynamic shifting from the
    # image's size (exponential and linear), Karras and exponential sigmas, a stretched
    # terminal, inverted sigmas, stochastic sampling, and an explicit list (at shift 1, where
    # diffusers' explicit timesteps and sigmas agree).
    cases.append(run_sched_case("flow_euler_shift_3", "flow_euler", dict(shift=3.0), steps=28))
    cases.append(run_sched_case("flow_euler_shift_1", "flow_euler", dict(), steps=4))
    for shift_type in ("exponential", "linear"):
        dynamic = dict(use_dynamic_shifting=True, time_shift_type=shift_type)
        cases.append(run_sched_case(f"flow_euler_dynamic_{shift_type}", "flow_euler", dynamic, image_tokens=1024))
    cases.append(run_sched_case("flow_euler_karras", "flow_euler", dict(shift=3.0, use_karras_sigmas=True)))
    cases.append(run_sched_case("flow_euler_exponential", "flow_euler", dict(shift=3.0, use_exponential_sigmas=True)))
    cases.append(run_sched_case("flow_euler_terminal", "flow_euler", dict(shift=3.0, shift_terminal=0.1)))
    cases.append(run_sched_case("flow_euler_inverted", "flow_euler", dict(shift=3.0, invert_sigmas=True), steps=4))
    cases.append(run_sched_case("flow_euler_stochastic", "flow_euler", dict(shift=3.0, stochastic_sampling=True), steps=6))
    cases.append(run_sched_case("flow_euler_explicit", "flow_euler", dict(), explicit=[1000.0, 900.0, 750.0, 500.0, 250.0, 100.0]))
    import inspect

    ddim_explicit = "timesteps" in inspect.signature(DDIMScheduler.set_timesteps).parameters
    if ddim_explicit:
        cases.append(run_sched_case("ddim_explicit_epsilon", "ddim", dict(prediction_type="epsilon"), explicit=explicit))
    write_json(
        fix / "schedulers.json",
        {
            "model": MODEL_FORMULA,
            "ddim_supports_explicit_timesteps": ddim_explicit,
            "cases": cases,
        },
        indent=None,
    )
    log(f"schedulers: {len(cases)} cases; DDIM explicit timesteps supported: {ddim_explicit}")
    return cases, ddim_explicit


# ----------------------------------------------------------------------------
# 4. full-size configs
# ----------------------------------------------------------------------------


def make_full_configs(fix: Path):
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    out = fix / "configs"
    out.mkdir(parents=True, exist_ok=True)
    down = ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"]
    up = ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"]
    unet_common = dict(
        in_channels=4,
        out_channels=4,
        block_out_channels=[320, 640, 1280, 1280],
        layers_per_block=2,
        down_block_types=down,
        up_block_types=up,
        norm_num_groups=32,
        norm_eps=1e-5,
        act_fn="silu",
        flip_sin_to_cos=True,
        freq_shift=0,
        downsample_padding=1,
        mid_block_scale_factor=1,
        center_input_sample=False,
    )
    unets = {
        "sd15_unet.json": dict(unet_common, cross_attention_dim=768, attention_head_dim=8, sample_size=64),
        "sd21_unet.json": dict(
            unet_common,
            cross_attention_dim=1024,
            attention_head_dim=[5, 10, 20, 20],
            use_linear_projection=True,
            upcast_attention=True,
            sample_size=96,
        ),
    }
    report = {}
    for fname, kw in unets.items():
        with torch.device("meta"):
            m = UNet2DConditionModel(**kw)
        with tempfile.TemporaryDirectory() as td:
            m.save_config(td)
            shutil.copy(Path(td) / "config.json", out / fname)
        cfg = UNet2DConditionModel.load_config(str(out / fname))
        with torch.device("meta"):  # check the written file instantiates
            m2 = UNet2DConditionModel.from_config(cfg)
        assert sum(p.numel() for p in m2.parameters()) == sum(p.numel() for p in m.parameters())
        report[fname] = sum(p.numel() for p in m.parameters())

    with torch.device("meta"):
        vae = AutoencoderKL(
            in_channels=3,
            out_channels=3,
            down_block_types=["DownEncoderBlock2D"] * 4,
            up_block_types=["UpDecoderBlock2D"] * 4,
            block_out_channels=[128, 256, 512, 512],
            layers_per_block=2,
            latent_channels=4,
            norm_num_groups=32,
            act_fn="silu",
            sample_size=512,
            scaling_factor=0.18215,
        )
    with tempfile.TemporaryDirectory() as td:
        vae.save_config(td)
        shutil.copy(Path(td) / "config.json", out / "sd15_vae.json")
    report["sd15_vae.json"] = sum(p.numel() for p in vae.parameters())

    te = {
        # openai/clip-vit-large-patch14 text tower as shipped in runwayml/stable-diffusion-v1-5/text_encoder
        "sd15_text_encoder.json": dict(
            _name_or_path="openai/clip-vit-large-patch14",
            vocab_size=49408,
            hidden_size=768,
            intermediate_size=3072,
            num_hidden_layers=12,
            num_attention_heads=12,
            max_position_embeddings=77,
            hidden_act="quick_gelu",
            projection_dim=768,
            layer_norm_eps=1e-5,
            bos_token_id=0,
            eos_token_id=2,
            pad_token_id=1,
        ),
        # OpenCLIP ViT-H/14 text tower as shipped in stabilityai/stable-diffusion-2-1/text_encoder (23 of 24 layers)
        "sd21_text_encoder.json": dict(
            _name_or_path="hf-models/stable-diffusion-v2-768x768/text_encoder",
            vocab_size=49408,
            hidden_size=1024,
            intermediate_size=4096,
            num_hidden_layers=23,
            num_attention_heads=16,
            max_position_embeddings=77,
            hidden_act="gelu",
            projection_dim=512,
            layer_norm_eps=1e-5,
            bos_token_id=0,
            eos_token_id=2,
            pad_token_id=1,
        ),
    }
    for fname, kw in te.items():
        kw = dict(kw)
        name_or_path = kw.pop("_name_or_path")
        cfg = CLIPTextConfig(architectures=["CLIPTextModel"], **kw)
        cfg._name_or_path = name_or_path
        with torch.device("meta"):
            m = CLIPTextModel(cfg)
        with tempfile.TemporaryDirectory() as td:
            cfg.save_pretrained(td)
            d = json.loads((Path(td) / "config.json").read_text())
        d = {"_name_or_path": name_or_path, **{k: v for k, v in d.items() if k != "_name_or_path"}}
        write_json(out / fname, d)
        cfg2 = CLIPTextConfig.from_pretrained(str(out / fname))
        assert cfg2.hidden_size == kw["hidden_size"] and cfg2.num_hidden_layers == kw["num_hidden_layers"]
        report[fname] = sum(p.numel() for p in m.parameters())
    for k, v in report.items():
        log(f"config {k}: {v/1e6:.2f}M params")
    return report


# ----------------------------------------------------------------------------


def parts():
    """The parts `--only` rebuilds alone, each its makers in order (later ones are made from,
    or beside, the earlier ones' folders)."""
    flux = [make_flux, make_flux_lora, make_flux_schnell, make_flux_true_cfg, make_flux_fill, make_flux_control,
            make_flux_control_lora, make_flux_kontext]
    return {
        "schedulers": [make_schedulers],
        "vae-encoder": [make_vae_encoder],
        "lcm-unet": [make_lcm_unet],
        "turbo": [make_turbo],
        "zero-snr": [make_zero_snr],
        "inpaint": [make_inpaint],
        "controlnet": [make_controlnet, make_controlnet_sdxl],
        "t2i-adapter": [make_t2i_adapter],
        "taesd": [make_taesd],
        "img2img": [make_img2img],
        "sdxl": [make_sdxl],
        "sdxl-turbo": [make_sdxl_turbo],
        "sdxl-refiner": [make_sdxl_refiner],
        "sdxl-img2img": [make_sdxl_img2img],
        "lora": [make_lora, make_sd3_lora],
        "sd3": [make_sd3, make_sd3_slg],
        "sd3-slg": [make_sd3_slg],
        "flux": flux,
        "flux-lora": [make_flux_lora],
        "flux-schnell": [make_flux_schnell],
        "flux-true-cfg": [make_flux_true_cfg],
        "flux-fill": [make_flux_fill],
        "flux-control": [make_flux_control],
        "flux-control-lora": [make_flux_control_lora],
        "flux-kontext": [make_flux_kontext],
        "flow-img2img": [make_flow_img2img],
        "fp8": [make_fp8_table],
        "resize": [make_resize],
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bpe", default=None, help="path to bpe_simple_vocab_16e6.txt.gz")
    ap.add_argument("--wheel-dir", default="/tmp/oc", help="folder holding an open_clip_torch wheel")
    ap.add_argument("--out", default=str(ROOT / "tests/fixtures"))
    ap.add_argument("--only", choices=list(parts()), help="rebuild one part only")
    args = ap.parse_args()

    torch.set_grad_enabled(False)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

    import diffusers
    import transformers

    fix = Path(args.out)
    fix.mkdir(parents=True, exist_ok=True)
    log(f"torch {torch.__version__} diffusers {diffusers.__version__} transformers {transformers.__version__}")

    if args.only:
        for make in parts()[args.only]:
            make(fix)
        return
    tok_dir = fix / "tokenizer"
    if tok_dir.exists():
        shutil.rmtree(tok_dir)
    tok, tok_info = build_tokenizer(find_bpe(args.bpe, args.wheel_dir), tok_dir)
    for kind in ("sd1", "sd2"):
        make_pipeline(kind, tok, tok_dir, fix)
    make_schedulers(fix)
    make_full_configs(fix)
    write_json(
        fix / "versions.json",
        {
            "torch": torch.__version__,
            "diffusers": diffusers.__version__,
            "transformers": transformers.__version__,
            "tokenizer_mismatches": tok_info["mismatches"],
        },
    )
    log("done")


if __name__ == "__main__":
    main()
