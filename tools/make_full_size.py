#!/usr/bin/env python3
"""Full-size random-weight models in the layouts the runtime reads, with diffusers' outputs,
for tests/full_size.rs. On demand, never in git: SD 1.5 takes about 13 GB of disk (three
layouts), SD 2.1 about 11 GB, SDXL about 30 GB and 24 GB of memory, SD 3.5 medium about
14 GB.

    python3 tools/make_full_size.py --out target/full-size [--family sd15 sd21 sdxl sd35m]
    LINA_FULL_SIZE=target/full-size cargo test --release --test full_size -- --nocapture

For each family, under OUT/<family>/:
* `diffusers/`: the model as diffusers saves it (f32 safetensors; the text encoders with
  transformers 4's `text_model.` names, as every published repository has them), its
  published configs (tests/fixtures/configs/), a DDIM scheduler and the small test
  tokenizer (tests/fixtures/tokenizer/; its ids are valid in CLIP's vocabulary);
* `single.safetensors`: the same weights as one file in the original LDM names
  (`tools/make_single_file.py`'s mapping, checked here again by diffusers' converters);
* `legacy/` (SD 1.5 only): the VAE with diffusers' pre-0.14 attention names
  (`query`/`key`/`value`/`proj_attn`) as 1x1 convolutions, the other components linked;
* `reference.safetensors`: fixed inputs and diffusers' outputs in f32 on the CPU: the text
  encoders on the test tokenizer's ids for a prompt, one UNet call at 32x32 latents, one VAE
  decode of 32x32 latents; for SD 1.5 also a whole 30-step DDIM run at 256 px from given
  latents (`run_latents`, `run_image`), and `lora_kohya.safetensors` / `lora_peft.safetensors`,
  one LoRA in both formats, with diffusers' UNet call after fusing it (`lora_unet_out`).

SD 3.5 medium (`sd35m`) is a diffusers folder without T5 and the same weights as a single file in
StabilityAI's layout (`single.safetensors`, `tools/make_single_file.py`'s SD 3 names, whose
full-size names and shapes diffusers' converters check there); its reference holds the pipeline's prompt embeddings
(`StableDiffusion3Pipeline.encode_prompt`), one transformer call at 32x32 latents on them and
one decode of 32x32 latents.

Weights are PyTorch's default initialisation under a fixed seed: random, but of the scale
trained weights have, so activations stay finite through every layer.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_single_file import (  # noqa: E402
    FIXTURES, ldm_checkpoint, load_component, sd3_checkpoint, sd3_entries, sdxl_configs,
)

PROMPT = "a red ball on a small mirror"
LATENT = 32
TIMESTEP = 501.0
RUN_STEPS = 30
LORA_SCALE = 0.7

FAMILIES = {
    # family: (single-file family, unet config, vae config, text encoder configs)
    "sd15": ("sd1", "sd15_unet", "sd15_vae", ["sd15_text_encoder"]),
    "sd21": ("sd2", "sd21_unet", "sd15_vae", ["sd21_text_encoder"]),
    "sdxl": ("sdxl", "sdxl_unet", "sdxl_vae", ["sd15_text_encoder", "sdxl_text_encoder_2"]),
}

DDIM = {
    "_class_name": "DDIMScheduler", "num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012,
    "beta_schedule": "scaled_linear", "clip_sample": False, "set_alpha_to_one": False, "steps_offset": 1,
    "timestep_spacing": "leading", "prediction_type": "epsilon",
}


def log(*a):
    print(*a, flush=True)


def with_prefix(path: Path) -> None:
    """Rewrites a text encoder's file with transformers 4's `text_model.` names."""
    sd = load_file(str(path))
    sd = {(k if k.startswith(("text_model.", "text_projection")) else "text_model." + k): v.contiguous() for k, v in sd.items()}
    save_file(sd, str(path), metadata={"format": "pt"})


@torch.no_grad()
def make(family: str, out: Path) -> None:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    single_family, unet_name, vae_name, text_names = FAMILIES[family]
    configs = FIXTURES / "configs"
    root = out / family
    if root.exists():
        shutil.rmtree(root)
    folder = root / "diffusers"
    folder.mkdir(parents=True)
    torch.manual_seed({"sd15": 15, "sd21": 21, "sdxl": 1024}[family])

    log(f"== {family}: building and saving")
    refs = {}
    tok = CLIPTokenizer.from_pretrained(str(FIXTURES / "tokenizer"))
    ids = tok([PROMPT], padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    refs["text_ids"] = ids.to(torch.int64)
    hidden_states = []
    for i, name in enumerate(text_names):
        cfg = CLIPTextConfig.from_pretrained(configs / f"{name}.json")
        model = (CLIPTextModelWithProjection if i == 1 else CLIPTextModel)(cfg).eval()
        sub = "text_encoder" if i == 0 else "text_encoder_2"
        model.save_pretrained(str(folder / sub), safe_serialization=True)
        with_prefix(folder / sub / "model.safetensors")
        outputs = model(ids, output_hidden_states=True)
        if family == "sdxl":
            hidden_states.append(outputs.hidden_states[-2])
            if i == 1:
                refs["text_pooled"] = outputs.text_embeds
        else:
            hidden_states.append(outputs.last_hidden_state)
        refs[f"{sub}_out"] = hidden_states[-1]
        del model
    context = torch.cat(hidden_states, -1)

    unet_cfg = json.loads((configs / f"{unet_name}.json").read_text())
    unet = UNet2DConditionModel.from_config(unet_cfg).eval()
    unet.save_pretrained(str(folder / "unet"), safe_serialization=True)
    g = torch.Generator().manual_seed(7)
    refs["unet_sample"] = torch.randn((1, 4, LATENT, LATENT), generator=g)
    added = {}
    if family == "sdxl":
        refs["time_ids"] = torch.tensor([[LATENT * 8, LATENT * 8, 0, 0, LATENT * 8, LATENT * 8]], dtype=torch.float32)
        added = {"added_cond_kwargs": {"text_embeds": refs["text_pooled"], "time_ids": refs["time_ids"]}}
    log(f"   UNet call at {LATENT}x{LATENT}")
    refs["unet_out"] = unet(refs["unet_sample"], torch.tensor([TIMESTEP]), context, **added).sample
    del unet

    vae_cfg = json.loads((configs / f"{vae_name}.json").read_text())
    vae = AutoencoderKL.from_config(vae_cfg).eval()
    vae.save_pretrained(str(folder / "vae"), safe_serialization=True)
    refs["vae_latents"] = torch.randn((1, 4, LATENT, LATENT), generator=g)
    log("   VAE decode")
    refs["vae_decoded"] = vae.decode(refs["vae_latents"]).sample
    del vae

    (folder / "scheduler").mkdir()
    sched = DDIM if family != "sdxl" else {**DDIM, "_class_name": "EulerDiscreteScheduler"}
    (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps(sched, indent=2) + "\n")
    for sub in ("tokenizer",) + (("tokenizer_2",) if family == "sdxl" else ()):
        shutil.copytree(FIXTURES / "tokenizer", folder / sub)
    # The components listed, as diffusers' `save_pretrained` writes them: the browser fetches
    # only the folders an index names.
    index = {
        "_class_name": "StableDiffusionXLPipeline" if family == "sdxl" else "StableDiffusionPipeline",
        "scheduler": ["diffusers", sched["_class_name"]],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }
    if family == "sdxl":
        index |= {"text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
                  "tokenizer_2": ["transformers", "CLIPTokenizer"]}
    (folder / "model_index.json").write_text(json.dumps(index) + "\n")

    if family == "sd15":
        # The issue's 30-step target: diffusers' whole pipeline from given latents at 256 px.
        from diffusers import DDIMScheduler, StableDiffusionPipeline

        refs["run_latents"] = torch.randn((1, 4, LATENT, LATENT), generator=g)
        pipe = StableDiffusionPipeline(
            vae=AutoencoderKL.from_pretrained(str(folder / "vae")),
            text_encoder=CLIPTextModel.from_pretrained(str(folder / "text_encoder")),
            tokenizer=tok,
            unet=UNet2DConditionModel.from_pretrained(str(folder / "unet")),
            scheduler=DDIMScheduler.from_config(DDIM),
            safety_checker=None, feature_extractor=None, requires_safety_checker=False,
        )
        log(f"   {RUN_STEPS}-step run at {LATENT * 8} px")
        image = pipe(PROMPT, height=LATENT * 8, width=LATENT * 8, num_inference_steps=RUN_STEPS, guidance_scale=7.5,
                     latents=refs["run_latents"].clone(), output_type="np").images
        refs["run_image"] = torch.from_numpy(image)  # [1, H, W, 3] in [0, 1]
        lora_files(pipe, root, refs, context, g)
        del pipe

    refs = {k: (v if v.dtype == torch.int64 else v.float()).contiguous() for k, v in refs.items()}
    save_file(refs, str(root / "reference.safetensors"))

    log("   single file")
    entries, extras, ckpt, sources, _ = ldm_checkpoint(folder, single_family)
    check_single_file(ckpt, sources, folder, single_family)
    save_streaming(ckpt, root / "single.safetensors")
    del ckpt, sources

    if family == "sd15":
        log("   legacy VAE names")
        legacy = root / "legacy"
        legacy.mkdir()
        for entry in folder.iterdir():
            if entry.name != "vae":
                os.symlink(os.path.relpath(entry, legacy), legacy / entry.name)
        (legacy / "vae").mkdir()
        shutil.copy(folder / "vae" / "config.json", legacy / "vae" / "config.json")
        sd = load_file(str(folder / "vae" / "diffusion_pytorch_model.safetensors"))
        renamed = {}
        for k, v in sd.items():
            for new, old in ((".to_q.", ".query."), (".to_k.", ".key."), (".to_v.", ".value."), (".to_out.0.", ".proj_attn.")):
                if new in k:
                    k = k.replace(new, old)
                    v = v[:, :, None, None] if v.dim() == 2 else v
            renamed[k] = v.contiguous()
        save_file(renamed, str(legacy / "vae" / "diffusion_pytorch_model.safetensors"))
    log(f"   done: {sum(f.stat().st_size for f in root.rglob('*') if f.is_file() and not f.is_symlink()) / 2**30:.1f} GiB")


def lora_files(pipe, root: Path, refs: dict, context: torch.Tensor, g: torch.Generator) -> None:
    """The same LoRA for SD 1.5's UNet in both formats: kohya's (`lora_kohya.safetensors`:
    `lora_unet_*` with `.lora_down`/`.lora_up`/`.alpha`) and diffusers'/PEFT's
    (`lora_peft.safetensors`: `unet.<module>.lora_A`/`.lora_B`, alpha = rank, so its up
    half carries kohya's alpha / rank). It adapts a cross-attention query (linear), a
    ResNet's 3x3 convolution (kohya's LoCon: a 3x3 down, a 1x1 up) and a 1x1 projection.
    The reference gets diffusers' UNet call on `unet_sample` after `load_lora_weights` and
    `fuse_lora(lora_scale=LORA_SCALE)` of the kohya file (`lora_unet_out`)."""
    from torch import nn

    unet = pipe.unet
    rank, alpha = 4, 2.0
    modules = {
        "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_q": unet.down_blocks[0].attentions[0].transformer_blocks[0].attn2.to_q,
        "mid_block.resnets.0.conv1": unet.mid_block.resnets[0].conv1,
        "up_blocks.1.attentions.0.proj_in": unet.up_blocks[1].attentions[0].proj_in,
    }
    kohya, peft = {}, {}
    for name, module in modules.items():
        if isinstance(module, nn.Conv2d):
            down = torch.randn((rank, module.in_channels, *module.kernel_size), generator=g) * 0.1
            up = torch.randn((module.out_channels, rank, 1, 1), generator=g) * 0.1
        else:
            down = torch.randn((rank, module.in_features), generator=g) * 0.1
            up = torch.randn((module.out_features, rank), generator=g) * 0.1
        key = "lora_unet_" + name.replace(".", "_")
        kohya[f"{key}.lora_down.weight"] = down.contiguous()
        kohya[f"{key}.lora_up.weight"] = up.contiguous()
        kohya[f"{key}.alpha"] = torch.tensor(alpha)
        peft[f"unet.{name}.lora_A.weight"] = down.contiguous()
        peft[f"unet.{name}.lora_B.weight"] = (up * (alpha / rank)).contiguous()
    save_file(kohya, str(root / "lora_kohya.safetensors"))
    save_file(peft, str(root / "lora_peft.safetensors"))
    with torch.no_grad():
        before = unet(refs["unet_sample"], torch.tensor([TIMESTEP]), context).sample
    pipe.load_lora_weights(str(root / "lora_kohya.safetensors"))
    pipe.fuse_lora(lora_scale=LORA_SCALE)
    pipe.unload_lora_weights()  # the fused weights stay
    with torch.no_grad():
        refs["lora_unet_out"] = pipe.unet(refs["unet_sample"], torch.tensor([TIMESTEP]), context).sample
    # The LoRA must move the output, or the comparison proves nothing.
    moved = float((refs["lora_unet_out"] - before).abs().max() / before.abs().max())
    assert moved > 1e-3, moved
    log(f"   LoRA at {LORA_SCALE}: the UNet output moved by {moved:.3g} of its max")


# SD 3.5 medium's published transformer and VAE configs (stabilityai/stable-diffusion-3.5-medium).
SD35M_TRANSFORMER = dict(
    sample_size=128, patch_size=2, in_channels=16, num_layers=24, attention_head_dim=64, num_attention_heads=24,
    joint_attention_dim=4096, caption_projection_dim=1536, pooled_projection_dim=2048, out_channels=16,
    pos_embed_max_size=384, dual_attention_layers=tuple(range(13)), qk_norm="rms_norm",
)
SD35M_VAE_CHANGES = dict(latent_channels=16, scaling_factor=1.5305, shift_factor=0.0609, use_quant_conv=False,
                         use_post_quant_conv=False)


def sd35m_configs(configs: Path) -> None:
    """tests/fixtures/configs/sd35m_{transformer,vae}.json, as diffusers writes them, and SD 3's
    T5 v1.1 XXL (t5_xxl_text_encoder.json), as transformers does."""
    import tempfile

    from diffusers import AutoencoderKL, SD3Transformer2DModel
    from transformers import T5Config

    t5 = T5Config(vocab_size=32128, d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64,
                  feed_forward_proj="gated-gelu", architectures=["T5EncoderModel"]).to_dict()
    (configs / "t5_xxl_text_encoder.json").write_text(json.dumps(t5, indent=2, sort_keys=True) + "\n")

    with torch.device("meta"), tempfile.TemporaryDirectory() as td:
        SD3Transformer2DModel(**SD35M_TRANSFORMER).save_config(td)
        shutil.copy(Path(td) / "config.json", configs / "sd35m_transformer.json")
        vae = json.loads((configs / "sdxl_vae.json").read_text())
        AutoencoderKL.from_config({**vae, **SD35M_VAE_CHANGES}).save_config(td)
        shutil.copy(Path(td) / "config.json", configs / "sd35m_vae.json")


def flux_configs(configs: Path) -> None:
    """tests/fixtures/configs/flux1_dev_transformer.json, FLUX.1-dev's transformer as diffusers
    writes it (its defaults with the guidance embedding), and prints diffusers' parameter
    count of it, which src/memory.rs's test holds. No full-size FLUX is built: its 12 billion
    parameters take 48 GB in f32, twice this machine's memory."""
    import tempfile

    from diffusers import FluxTransformer2DModel

    with torch.device("meta"), tempfile.TemporaryDirectory() as td:
        model = FluxTransformer2DModel(guidance_embeds=True)
        model.save_config(td)
        shutil.copy(Path(td) / "config.json", configs / "flux1_dev_transformer.json")
    log(f"flux1-dev transformer: {sum(p.numel() for p in model.parameters()):,} parameters")


@torch.no_grad()
def make_sd35m(out: Path) -> None:
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection, CLIPTokenizer

    configs = FIXTURES / "configs"
    root = out / "sd35m"
    if root.exists():
        shutil.rmtree(root)
    folder = root / "diffusers"
    folder.mkdir(parents=True)
    torch.manual_seed(35)
    log("== sd35m: building and saving")
    tok = CLIPTokenizer.from_pretrained(str(FIXTURES / "tokenizer"))
    encoders = [CLIPTextModelWithProjection(CLIPTextConfig.from_pretrained(configs / f"{name}.json")).eval()
                for name in ("sd15_text_encoder", "sdxl_text_encoder_2")]
    transformer = SD3Transformer2DModel.from_config(json.loads((configs / "sd35m_transformer.json").read_text())).eval()
    vae = AutoencoderKL.from_config(json.loads((configs / "sd35m_vae.json").read_text())).eval()
    pipe = StableDiffusion3Pipeline(transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
                                    vae=vae, text_encoder=encoders[0], tokenizer=tok, text_encoder_2=encoders[1],
                                    tokenizer_2=tok, text_encoder_3=None, tokenizer_3=None)
    refs = {}
    embeds, _, pooled, _ = pipe.encode_prompt(PROMPT, PROMPT, PROMPT, do_classifier_free_guidance=False)
    refs["prompt_embeds"], refs["pooled_embeds"] = embeds, pooled
    g = torch.Generator().manual_seed(7)
    refs["transformer_sample"] = torch.randn((1, 16, LATENT, LATENT), generator=g)
    log(f"   transformer call at {LATENT}x{LATENT}")
    refs["transformer_out"] = transformer(refs["transformer_sample"], embeds, pooled, torch.tensor([TIMESTEP])).sample
    refs["vae_latents"] = torch.randn((1, 16, LATENT, LATENT), generator=g)
    log("   VAE decode")
    refs["vae_decoded"] = vae.decode(refs["vae_latents"]).sample
    pipe.save_pretrained(str(folder), safe_serialization=True)
    for sub in ("text_encoder", "text_encoder_2"):
        with_prefix(folder / sub / "model.safetensors")
    for sub in ("tokenizer", "tokenizer_2"):
        shutil.rmtree(folder / sub)
        shutil.copytree(FIXTURES / "tokenizer", folder / sub)
    save_file({k: v.float().contiguous() for k, v in refs.items()}, str(root / "reference.safetensors"))
    del pipe, transformer, vae, encoders
    log("   single file")
    texts = ("text_encoder", "text_encoder_2")
    sources = {c: load_component(folder, c) for c in ("transformer", "vae", *texts)}
    vae_cfg = json.loads((folder / "vae" / "config.json").read_text())
    entries = sd3_entries(sources["transformer"], sources["vae"], vae_cfg, {c: sources[c] for c in texts})
    save_streaming(sd3_checkpoint(entries, sources), root / "single.safetensors")
    log(f"   done: {sum(f.stat().st_size for f in root.rglob('*') if f.is_file()) / 2**30:.1f} GiB")


def save_streaming(tensors: dict, path: Path) -> None:
    """A safetensors file of f32 tensors written one tensor at a time: safetensors'
    `save_file` copies every tensor into memory first, twice SDXL's 14 GB."""
    header, offset = {}, 0
    for name, t in tensors.items():
        size = t.numel() * 4
        header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the data starts 8-byte aligned, as safetensors writes it
    with open(path, "wb") as f:
        f.write(len(text).to_bytes(8, "little"))
        f.write(text)
        for t in tensors.values():
            f.write(t.detach().to(torch.float32).contiguous().numpy().tobytes())


def check_single_file(ckpt, sources, folder: Path, family: str) -> None:
    """diffusers' converters read the single file back into the folder's tensors."""
    from diffusers.loaders import single_file_utils as su
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    cfg = lambda c: json.loads((folder / c / "config.json").read_text())
    prefixed = lambda d: {k if k.startswith(("text_model.", "text_projection")) else "text_model." + k: v for k, v in d.items()}
    got = {
        "unet": su.convert_ldm_unet_checkpoint(ckpt, cfg("unet")),
        "vae": su.convert_ldm_vae_checkpoint(ckpt, cfg("vae")),
    }
    if family == "sd2":
        with torch.device("meta"):
            model = CLIPTextModel(CLIPTextConfig.from_pretrained(folder / "text_encoder"))
        got["text_encoder"] = prefixed(su.convert_open_clip_checkpoint(model, ckpt))
    elif family == "sdxl":
        got["text_encoder"] = prefixed(su.convert_ldm_clip_checkpoint(ckpt, remove_prefix="conditioner.embedders.0.transformer."))
        with torch.device("meta"):
            model = CLIPTextModelWithProjection(CLIPTextConfig.from_pretrained(folder / "text_encoder_2"))
        got["text_encoder_2"] = prefixed(su.convert_open_clip_checkpoint(model, ckpt, prefix="conditioner.embedders.1.model."))
    else:
        got["text_encoder"] = prefixed(su.convert_ldm_clip_checkpoint(ckpt))
    for comp, converted in got.items():
        for k, v in sources[comp].items():
            if k.endswith("position_ids"):
                continue
            assert torch.equal(converted[k].float().reshape(v.shape), v.float()), f"{comp} {k}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--family", nargs="+", choices=sorted([*FAMILIES, "sd35m"]), default=["sd15", "sd21"])
    args = parser.parse_args()
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    sdxl_configs(FIXTURES / "configs")
    sd35m_configs(FIXTURES / "configs")
    flux_configs(FIXTURES / "configs")
    for family in args.family:
        if family == "sd35m":
            make_sd35m(args.out)
        else:
            make(family, args.out)


if __name__ == "__main__":
    main()
