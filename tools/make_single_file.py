#!/usr/bin/env python3
"""Single-file (original LDM key layout) fixtures for tests/single_file.rs.

Developer-side (not run by cargo); needs torch, diffusers, transformers and safetensors at
tools/requirements.txt's pins. Writes, under tests/fixtures/single_file/:

* `sd1_tiny.json`, `sd2_tiny.json`, `sdxl_tiny.json`, `sdxl_refiner_tiny.json`: how the tiny diffusers fixtures' tensors are named in a
  single-file checkpoint of the original layout (`model.diffusion_model.*`,
  `first_stage_model.*`, `cond_stage_model.*`), in file order, plus the extra tensors such
  files carry and no diffusers model uses (the noise schedule's buffers, SD 2's unused last
  text layer and text projection, SD 1's `position_ids`). The test assembles the checkpoint
  from the diffusers folder with this list, so git holds the names, not a second copy of the
  weights.
* `sd15_shapes.json`, `sd21_shapes.json`, `sdxl_shapes.json`, `sdxl_refiner_shapes.json`: every
  tensor name and shape of full-size SD 1.5, SD 2.1, SDXL base and SDXL refiner checkpoints (no values), built on PyTorch's meta
  device from the configs in tests/fixtures/configs/ (SDXL's written here from its published
  values), so the runtime's config inference is checked at full size.

The LDM names are this script's own mapping, and are checked against diffusers' own
single-file converters (`diffusers.loaders.single_file_utils`): for the tiny models every
converted tensor must equal the diffusers model's, value for value; for the full-size ones
every name and shape must match, and diffusers must infer the right model family. So the
committed names are what diffusers reads, not what the runtime under test writes.

* `sd3_tiny.json` and `sd35m_shapes.json`: the same for SD 3 (`tests/fixtures/sd3_tiny`, and a
  full-size SD 3.5 medium with CLIP-L, CLIP-G and T5-XXL), in the layout of StabilityAI's
  single files (`model.diffusion_model.joint_blocks.*`, `text_encoders.*`), checked against
  diffusers' SD 3 converters.
* `controlnet_tiny.json`: `tests/fixtures/controlnet_tiny` (a ControlNet for the tiny SD 1.x
  model) as lllyasviel's original ControlNet files name it (`control_model.input_hint_block.*`,
  `control_model.zero_convs.*`, `control_model.middle_block_out.*` and the UNet's down half
  in LDM names), checked against diffusers' ControlNet converter value for value.
* `sd15_controlnet_shapes.json`, `sd21_controlnet_shapes.json`: every tensor name and shape
  of full-size original ControlNet files for SD 1.5 (lllyasviel's `control_v11p_sd15_*`) and
  SD 2.1, from `ControlNetModel.from_unet` of the published UNet configs (whose configs, as
  the published ControlNets' are, go to tests/fixtures/configs/*_controlnet.json), checked
  with diffusers' model-type inference and ControlNet converter.
* `flux_tiny.json` and `flux1_dev_shapes.json`: FLUX's transformer as Black Forest Labs'
  single file names it (`double_blocks.*`, `single_blocks.*`; ComfyUI's files put
  `model.diffusion_model.` before each name), for `tests/fixtures/flux_tiny` and a full-size
  FLUX.1-dev, whose names and shapes diffusers' FLUX converter rebuilds.

Usage:
    python3 tools/make_single_file.py [--out tests/fixtures/single_file] [--only sd3|flux|ldm|controlnet]
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"

# diffusers renames inside a ResNet block, LDM name -> diffusers name.
UNET_RESNET = {
    "in_layers.0": "norm1",
    "in_layers.2": "conv1",
    "emb_layers.1": "time_emb_proj",
    "out_layers.0": "norm2",
    "out_layers.3": "conv2",
    "skip_connection": "conv_shortcut",
}
VAE_RESNET = {"nin_shortcut": "conv_shortcut"}
VAE_ATTENTION = {
    "norm": "group_norm",
    "q": "to_q",
    "k": "to_k",
    "v": "to_v",
    "proj_out": "to_out.0",
}
OPEN_CLIP_LAYER = {
    "ln_1": "layer_norm1",
    "ln_2": "layer_norm2",
    "attn.out_proj": "self_attn.out_proj",
    "mlp.c_fc": "mlp.fc1",
    "mlp.c_proj": "mlp.fc2",
}


def inner(rest: str, table: dict[str, str]) -> str:
    """`rest` (a module path inside a block) with diffusers' name swapped for LDM's."""
    for ldm, diffusers in table.items():
        if rest == diffusers or rest.startswith(diffusers + "."):
            return ldm + rest[len(diffusers):]
    return rest


def unet_ldm_name(name: str, config: dict) -> str:
    """A diffusers UNet tensor name in the original layout (without `model.diffusion_model.`)."""
    layers = config["layers_per_block"]
    blocks = len(config["block_out_channels"])
    if m := re.fullmatch(r"time_embedding\.linear_([12])\.(.*)", name):
        return f"time_embed.{0 if m[1] == '1' else 2}.{m[2]}"
    if m := re.fullmatch(r"add_embedding\.linear_([12])\.(.*)", name):  # SDXL's
        return f"label_emb.0.{0 if m[1] == '1' else 2}.{m[2]}"
    if name.startswith("conv_in."):
        return "input_blocks.0.0." + name[len("conv_in."):]
    if name.startswith("conv_norm_out."):
        return "out.0." + name[len("conv_norm_out."):]
    if name.startswith("conv_out."):
        return "out.2." + name[len("conv_out."):]
    if m := re.fullmatch(r"down_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.*)", name):
        index = 1 + int(m[1]) * (layers + 1) + int(m[3])
        if m[2] == "resnets":
            return f"input_blocks.{index}.0.{inner(m[4], UNET_RESNET)}"
        return f"input_blocks.{index}.1.{m[4]}"
    if m := re.fullmatch(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.*)", name):
        return f"input_blocks.{(int(m[1]) + 1) * (layers + 1)}.0.op.{m[2]}"
    if m := re.fullmatch(r"mid_block\.resnets\.(\d)\.(.*)", name):
        return f"middle_block.{2 * int(m[1])}.{inner(m[2], UNET_RESNET)}"
    if m := re.fullmatch(r"mid_block\.attentions\.0\.(.*)", name):
        return f"middle_block.1.{m[1]}"
    if m := re.fullmatch(r"up_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.*)", name):
        index = int(m[1]) * (layers + 1) + int(m[3])
        if m[2] == "resnets":
            return f"output_blocks.{index}.0.{inner(m[4], UNET_RESNET)}"
        return f"output_blocks.{index}.1.{m[4]}"
    if m := re.fullmatch(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.*)", name):
        up = int(m[1])
        index = up * (layers + 1) + layers
        has_attention = config["up_block_types"][up].startswith("CrossAttn")
        assert up < blocks - 1
        return f"output_blocks.{index}.{2 if has_attention else 1}.conv.{m[2]}"
    raise ValueError(f"no LDM name for UNet tensor {name}")


def controlnet_ldm_name(name: str, config: dict) -> str:
    """A diffusers ControlNet tensor name in the original layout (lllyasviel's `cldm`, without
    `control_model.`): the conditioning embedding is one sequential of convolutions and SiLUs
    (`input_hint_block`, the convolutions at even indices), the zero convolutions are
    `zero_convs.i.0` and `middle_block_out.0`, the rest the UNet's down half."""
    levels = len(config["conditioning_embedding_out_channels"])
    if m := re.fullmatch(r"controlnet_cond_embedding\.conv_in\.(.*)", name):
        return f"input_hint_block.0.{m[1]}"
    if m := re.fullmatch(r"controlnet_cond_embedding\.blocks\.(\d+)\.(.*)", name):
        return f"input_hint_block.{2 * (int(m[1]) + 1)}.{m[2]}"
    if m := re.fullmatch(r"controlnet_cond_embedding\.conv_out\.(.*)", name):
        return f"input_hint_block.{2 * (2 * (levels - 1) + 1)}.{m[1]}"
    if m := re.fullmatch(r"controlnet_down_blocks\.(\d+)\.(.*)", name):
        return f"zero_convs.{m[1]}.0.{m[2]}"
    if m := re.fullmatch(r"controlnet_mid_block\.(.*)", name):
        return f"middle_block_out.0.{m[1]}"
    return unet_ldm_name(name, config)


def controlnet_tiny(out: Path) -> None:
    """tests/fixtures/controlnet_tiny's names in the original layout, each tensor checked to
    come back from diffusers' converter unchanged."""
    from diffusers.loaders.single_file_utils import convert_controlnet_checkpoint

    folder = FIXTURES / "controlnet_tiny"
    config = json.loads((folder / "config.json").read_text())
    weights = load_file(str(folder / "diffusion_pytorch_model.safetensors"))
    entries = [[f"control_model.{controlnet_ldm_name(n, config)}", "controlnet", [n]] for n in sorted(weights)]
    ckpt = {ldm: weights[names[0]] for ldm, _, names in entries}
    converted = convert_controlnet_checkpoint(ckpt, config)
    assert set(converted) == set(weights), set(converted) ^ set(weights)
    for name, value in weights.items():
        assert torch.equal(converted[name], value), name
    about = ("tests/fixtures/controlnet_tiny as an original ControlNet file (lllyasviel's layout): made and checked "
             "against diffusers' converter by tools/make_single_file.py")
    lines = ",\n".join(json.dumps(e) for e in entries)
    (out / "controlnet_tiny.json").write_text(f'{{"about": {json.dumps(about)},\n"tensors": [\n{lines}\n],\n"extras": {{}}}}\n')
    print(f"controlnet_tiny: {len(entries)} tensors, checked against diffusers")


def controlnet_full_size(out: Path) -> None:
    from diffusers import ControlNetModel, UNet2DConditionModel
    from diffusers.loaders import single_file_utils as su

    configs = FIXTURES / "configs"
    for tag in ("sd15", "sd21"):
        unet_cfg = json.loads((configs / f"{tag}_unet.json").read_text())
        with torch.device("meta"):
            unet = UNet2DConditionModel.from_config(unet_cfg)
            controlnet = ControlNetModel.from_unet(unet, load_weights_from_unet=False)
        config = json.loads(controlnet.to_json_string())
        config.pop("_diffusers_version", None)
        (configs / f"{tag}_controlnet.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        state = controlnet.state_dict()
        shapes = {f"control_model.{controlnet_ldm_name(k, config)}": list(v.shape) for k, v in state.items()}
        meta = {k: torch.empty(s, device="meta") for k, s in shapes.items()}
        inferred = su.infer_diffusers_model_type(meta)
        assert inferred == "controlnet", f"{tag}: diffusers infers {inferred}"
        got = su.convert_controlnet_checkpoint(meta, config)
        assert set(got) == set(state), sorted(set(got) ^ set(state))[:5]
        for k, v in state.items():
            assert list(got[k].shape) == list(v.shape), (tag, k)
        doc = {
            "about": f"every tensor name and shape of a full-size {tag} ControlNet in the original layout (values "
                     "omitted); made by tools/make_single_file.py, checked with diffusers' infer_diffusers_model_type "
                     "and convert_controlnet_checkpoint",
            "shapes": shapes,
        }
        (out / f"{tag}_controlnet_shapes.json").write_text(json.dumps(doc, separators=(",", ":")) + "\n")
        print(f"{tag} ControlNet: {len(shapes)} tensors, diffusers infers {inferred}")


def vae_ldm_name(name: str, config: dict) -> str:
    """A diffusers VAE tensor name in the original layout (without `first_stage_model.`)."""
    blocks = len(config["block_out_channels"])
    if m := re.fullmatch(r"(encoder|decoder)\.mid_block\.resnets\.(\d)\.(.*)", name):
        return f"{m[1]}.mid.block_{int(m[2]) + 1}.{inner(m[3], VAE_RESNET)}"
    if m := re.fullmatch(r"(encoder|decoder)\.mid_block\.attentions\.0\.(.*)", name):
        return f"{m[1]}.mid.attn_1.{inner(m[2], VAE_ATTENTION)}"
    if m := re.fullmatch(r"encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.(.*)", name):
        return f"encoder.down.{m[1]}.block.{m[2]}.{inner(m[3], VAE_RESNET)}"
    if m := re.fullmatch(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.*)", name):
        return f"encoder.down.{m[1]}.downsample.conv.{m[2]}"
    if m := re.fullmatch(r"decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(.*)", name):
        return f"decoder.up.{blocks - 1 - int(m[1])}.block.{m[2]}.{inner(m[3], VAE_RESNET)}"
    if m := re.fullmatch(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.*)", name):
        return f"decoder.up.{blocks - 1 - int(m[1])}.upsample.conv.{m[2]}"
    if m := re.fullmatch(r"(encoder|decoder)\.conv_norm_out\.(.*)", name):
        return f"{m[1]}.norm_out.{m[2]}"
    return name  # conv_in, conv_out, quant_conv, post_quant_conv keep their names


def vae_ldm_tensor(name: str, value: torch.Tensor) -> torch.Tensor:
    """The original VAE's attention projections are 1x1 convolutions."""
    if re.search(r"mid\.attn_1\.(q|k|v|proj_out)\.weight$", name) and value.dim() == 2:
        return value[:, :, None, None]
    return value


def open_clip_entries(text: dict, prefix: str) -> list:
    """(LDM name, diffusers names) of a transformers CLIPTextModel written as OpenCLIP."""
    entries = []
    tm = "text_model."
    entries.append((prefix + "token_embedding.weight", [tm + "embeddings.token_embedding.weight"]))
    entries.append((prefix + "positional_embedding", [tm + "embeddings.position_embedding.weight"]))
    layers = sorted({int(m[1]) for k in text if (m := re.match(r"text_model\.encoder\.layers\.(\d+)\.", k))})
    for i in layers:
        hf = f"{tm}encoder.layers.{i}."
        ldm = f"{prefix}transformer.resblocks.{i}."
        for part in ("weight", "bias"):
            entries.append((ldm + f"attn.in_proj_{part}", [hf + f"self_attn.{p}_proj.{part}" for p in "qkv"]))
        for ldm_mod, hf_mod in OPEN_CLIP_LAYER.items():
            for part in ("weight", "bias"):
                entries.append((ldm + f"{ldm_mod}.{part}", [hf + f"{hf_mod}.{part}"]))
    for part in ("weight", "bias"):
        entries.append((prefix + f"ln_final.{part}", [tm + f"final_layer_norm.{part}"]))
    return entries, len(layers)


def schedule_buffers(config: dict) -> dict[str, list[int]]:
    """The noise schedule's buffers an LDM checkpoint carries at its root (1000 steps)."""
    n = config["num_train_timesteps"]
    names = ["betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod",
             "sqrt_one_minus_alphas_cumprod", "log_one_minus_alphas_cumprod",
             "sqrt_recip_alphas_cumprod", "sqrt_recipm1_alphas_cumprod",
             "posterior_variance", "posterior_log_variance_clipped",
             "posterior_mean_coef1", "posterior_mean_coef2"]
    return {name: [n] for name in names}


def load_component(folder: Path, name: str) -> dict:
    """A component's tensors, from its one weight file or from all its shards."""
    files = sorted((folder / name).glob("*.safetensors"))
    assert files, f"no weights in {folder / name}"
    tensors = {}
    for file in files:
        tensors.update(load_file(file))
    return tensors


def ldm_checkpoint(folder: Path, family: str):
    """A diffusers folder of `family` ("sd1", "sd2", "sdxl", "sdxl_refiner") as a single-file checkpoint in
    the original LDM names: (entries, extras, checkpoint, sources, configs), where entries
    are [LDM name, component, [diffusers names]] (+ "transposed"), extras the names and
    shapes of the tensors such files carry that no diffusers model uses (zeros in the
    checkpoint), sources the folder's tensors by component, configs (unet, vae)."""
    cfg = lambda c: json.loads((folder / c / ("scheduler_config.json" if c == "scheduler" else "config.json")).read_text())
    unet_cfg, vae_cfg, sched_cfg = cfg("unet"), cfg("vae"), cfg("scheduler")
    xl, refiner = family == "sdxl", family == "sdxl_refiner"
    components = ("unet", "vae") + (("text_encoder_2",) if refiner else ("text_encoder",)) + (("text_encoder_2",) if xl else ())
    sources = {c: load_component(folder, c) for c in components}
    for c in components:
        if c.startswith("text_encoder"):
            sources[c] = {k if k.startswith(("text_model.", "text_projection")) else "text_model." + k: v
                          for k, v in sources[c].items()}
    unet, vae, text = sources["unet"], sources["vae"], sources.get("text_encoder")
    open_clip = family == "sd2"

    entries = []  # [LDM name, component, [diffusers names]] (+ "transposed")
    for k in unet:
        entries.append(["model.diffusion_model." + unet_ldm_name(k, unet_cfg), "unet", [k]])
    for k in vae:
        entries.append(["first_stage_model." + vae_ldm_name(k, vae_cfg), "vae", [k]])
    extras = schedule_buffers(sched_cfg)
    if open_clip:
        clip_entries, layers = open_clip_entries(text, "cond_stage_model.model.")
        entries += [[ldm, "text_encoder", hf] for ldm, hf in clip_entries]
        # SD 2 runs OpenCLIP's penultimate layer: the file holds one more, never used, and
        # the projection to the image-text space, which the UNet never sees.
        hidden = text["text_model.final_layer_norm.weight"].shape[0]
        extras.update(open_clip_layer_shapes(f"cond_stage_model.model.transformer.resblocks.{layers}.", hidden,
                                             text["text_model.encoder.layers.0.mlp.fc1.weight"].shape[0]))
        extras["cond_stage_model.model.text_projection"] = [hidden, hidden]
        extras["cond_stage_model.model.logit_scale"] = []
    elif not refiner:
        # SD 1's CLIP ViT-L, or SDXL's first encoder, keep transformers' names.
        prefix = "conditioner.embedders.0.transformer." if xl else "cond_stage_model.transformer."
        for k in text:
            if k.endswith("position_ids"):
                continue
            entries.append([prefix + k, "text_encoder", [k]])
        extras[prefix + "text_model.embeddings.position_ids"] = [1, 77]
    if xl or refiner:
        # SDXL's second encoder: OpenCLIP ViT-bigG, every layer kept (the pipeline takes the
        # penultimate one), its projection stored the other way round. The refiner has it
        # alone, as its first embedder.
        text2 = sources["text_encoder_2"]
        prefix = f"conditioner.embedders.{0 if refiner else 1}.model."
        clip_entries, _ = open_clip_entries(text2, prefix)
        entries += [[ldm, "text_encoder_2", hf] for ldm, hf in clip_entries]
        entries.append([prefix + "text_projection", "text_encoder_2", ["text_projection.weight"], "transposed"])
        extras[prefix + "logit_scale"] = []

    # The checkpoint as this script names it, values from the diffusers folder.
    ckpt = {}
    for ldm, comp, hf, *how in entries:
        parts = [sources[comp][h].float() for h in hf]
        value = torch.cat(parts, 0) if len(parts) > 1 else parts[0]
        if how == ["transposed"]:
            value = value.T.contiguous()
        ckpt[ldm] = vae_ldm_tensor(ldm, value) if comp == "vae" else value
    for ldm, shape in extras.items():
        ckpt[ldm] = torch.zeros(shape)

    return entries, extras, ckpt, sources, (unet_cfg, vae_cfg)


def tiny(name: str, out: Path) -> None:
    family = name.removesuffix("_tiny")
    entries, extras, ckpt, sources, (unet_cfg, vae_cfg) = ldm_checkpoint(FIXTURES / name, family)
    check_against_diffusers(name, ckpt, sources, unet_cfg, vae_cfg, family)
    out.mkdir(parents=True, exist_ok=True)
    about = (f"tests/fixtures/{name} as a single-file checkpoint in the original LDM layout: "
             "made and checked against diffusers' converters by tools/make_single_file.py")
    # One tensor per line: diffs stay readable.
    lines = ",\n".join(json.dumps(e) for e in entries)
    text = (f'{{"about": {json.dumps(about)},\n"tensors": [\n{lines}\n],\n'
            f'"extras": {json.dumps(extras)}}}\n')
    json.loads(text)
    (out / f"{name}.json").write_text(text)
    print(f"{name}: {len(entries)} tensors, {len(extras)} extras, checked against diffusers")


# SD 3's transformer, diffusers name -> original (MMDiT) name, for the tensors renamed one to
# one; q/k/v are fused in the original (`attn.qkv`) and its last adaLN projections store
# shift before scale (see `sd3_entries`).
SD3_TOP = {
    "pos_embed.pos_embed": "pos_embed",
    "pos_embed.proj": "x_embedder.proj",
    "time_text_embed.timestep_embedder.linear_1": "t_embedder.mlp.0",
    "time_text_embed.timestep_embedder.linear_2": "t_embedder.mlp.2",
    "time_text_embed.text_embedder.linear_1": "y_embedder.mlp.0",
    "time_text_embed.text_embedder.linear_2": "y_embedder.mlp.2",
    "context_embedder": "context_embedder",
    "proj_out": "final_layer.linear",
}
SD3_BLOCK = {
    "attn.norm_q": "x_block.attn.ln_q",
    "attn.norm_k": "x_block.attn.ln_k",
    "attn.norm_added_q": "context_block.attn.ln_q",
    "attn.norm_added_k": "context_block.attn.ln_k",
    "attn.to_out.0": "x_block.attn.proj",
    "attn.to_add_out": "context_block.attn.proj",
    "attn2.norm_q": "x_block.attn2.ln_q",
    "attn2.norm_k": "x_block.attn2.ln_k",
    "attn2.to_out.0": "x_block.attn2.proj",
    "norm1.linear": "x_block.adaLN_modulation.1",
    "norm1_context.linear": "context_block.adaLN_modulation.1",
    "ff.net.0.proj": "x_block.mlp.fc1",
    "ff.net.2": "x_block.mlp.fc2",
    "ff_context.net.0.proj": "context_block.mlp.fc1",
    "ff_context.net.2": "context_block.mlp.fc2",
}
SD3_QKV = {"attn.to_": "x_block.attn.qkv", "attn.add_": "context_block.attn.qkv", "attn2.to_": "x_block.attn2.qkv"}
# The prefixes of SD 3's single files (StabilityAI's `sd3_medium_incl_clips_t5xxlfp16`,
# `sd3.5_medium` and the like): the text encoders keep transformers' names under them.
SD3_TEXT = {
    "text_encoder": "text_encoders.clip_l.transformer.",
    "text_encoder_2": "text_encoders.clip_g.transformer.",
    "text_encoder_3": "text_encoders.t5xxl.transformer.",
}


def sd3_entries(transformer: dict, vae: dict, vae_cfg: dict, texts: dict) -> list:
    """[original name, component, [diffusers names]] (+ "swapped": shift and scale halves in
    the other order) of an SD 3 single file, from its diffusers components' tensors."""
    d = "model.diffusion_model."
    entries = []
    layers = 1 + max(int(m[1]) for k in transformer if (m := re.match(r"transformer_blocks\.(\d+)\.", k)))
    for k in transformer:
        module, _, part = k.rpartition(".")
        if k == "pos_embed.pos_embed":
            entries.append([d + "pos_embed", "transformer", [k]])
        elif module in SD3_TOP:
            entries.append([d + f"{SD3_TOP[module]}.{part}", "transformer", [k]])
        elif module == "norm_out.linear":
            entries.append([d + f"final_layer.adaLN_modulation.1.{part}", "transformer", [k], "swapped"])
        elif m := re.fullmatch(r"transformer_blocks\.(\d+)\.(.*)", module):
            i, inner_name = int(m[1]), m[2]
            at = f"{d}joint_blocks.{i}."
            fused = next(((p, o) for p, o in SD3_QKV.items()
                          if re.fullmatch(re.escape(p) + r"(q|k|v)(_proj)?", inner_name)), None)
            if fused:
                if inner_name.startswith(fused[0] + "q"):  # once per fused tensor
                    suffix = "_proj" if inner_name.endswith("_proj") else ""
                    entries.append([f"{at}{fused[1]}.{part}", "transformer",
                                    [f"transformer_blocks.{i}.{fused[0]}{x}{suffix}.{part}" for x in "qkv"]])
                continue
            entry = [f"{at}{SD3_BLOCK[inner_name]}.{part}", "transformer", [k]]
            # The last block's context side is an AdaLayerNormContinuous in diffusers.
            if inner_name == "norm1_context.linear" and i == layers - 1:
                entry.append("swapped")
            entries.append(entry)
        else:
            raise ValueError(f"no original name for SD 3 transformer tensor {k}")
    for k in vae:
        entries.append(["first_stage_model." + vae_ldm_name(k, vae_cfg), "vae", [k]])
    for comp, tensors in texts.items():
        for k in tensors:
            if not k.endswith("position_ids"):
                entries.append([SD3_TEXT[comp] + k, comp, [k]])
    return entries


def sd3_checkpoint(entries: list, sources: dict) -> dict:
    ckpt = {}
    for ldm, comp, hf, *how in entries:
        parts = [sources[comp][h].float() for h in hf]
        value = torch.cat(parts, 0) if len(parts) > 1 else parts[0]
        if how == ["swapped"]:
            a, b = value.chunk(2, 0)
            value = torch.cat([b, a], 0)
        ckpt[ldm] = vae_ldm_tensor(ldm, value) if comp == "vae" else value
    return ckpt


def sd3_converted(ckpt: dict, vae_cfg: dict) -> dict:
    """What diffusers' own single-file converters make of an SD 3 checkpoint."""
    from diffusers.loaders import single_file_utils as su

    return {
        "transformer": su.convert_sd3_transformer_checkpoint_to_diffusers(dict(ckpt)),
        "vae": su.convert_ldm_vae_checkpoint(ckpt, vae_cfg),
        "text_encoder": su.convert_ldm_clip_checkpoint(ckpt, SD3_TEXT["text_encoder"]),
        "text_encoder_2": su.convert_ldm_clip_checkpoint(ckpt, SD3_TEXT["text_encoder_2"]),
        "text_encoder_3": su.convert_sd3_t5_checkpoint_to_diffusers(ckpt),
    }


def sd3_tiny(out: Path) -> None:
    name = "sd3_tiny"
    folder = FIXTURES / name
    vae_cfg = json.loads((folder / "vae" / "config.json").read_text())
    texts = ("text_encoder", "text_encoder_2", "text_encoder_3")
    sources = {c: load_component(folder, c) for c in ("transformer", "vae", *texts)}
    entries = sd3_entries(sources["transformer"], sources["vae"], vae_cfg, {c: sources[c] for c in texts})
    ckpt = sd3_checkpoint(entries, sources)
    for comp, got in sd3_converted(ckpt, vae_cfg).items():
        want = {k: v for k, v in sources[comp].items() if not k.endswith("position_ids")}
        got = {k: v for k, v in got.items() if not k.endswith("position_ids")}
        assert set(got) == set(want), f"{name} {comp}: {sorted(set(got) ^ set(want))[:5]}"
        for k, v in want.items():
            assert torch.equal(got[k].float().reshape(v.shape), v.float()), f"{name}: {comp} tensor {k} differs"
    about = (f"tests/fixtures/{name} as a single-file checkpoint in SD 3's original layout: "
             "made and checked against diffusers' converters by tools/make_single_file.py")
    lines = ",\n".join(json.dumps(e) for e in entries)
    text = f'{{"about": {json.dumps(about)},\n"tensors": [\n{lines}\n],\n"extras": {{}}}}\n'
    json.loads(text)
    (out / f"{name}.json").write_text(text)
    print(f"{name}: {len(entries)} tensors, checked against diffusers")


def sd35m_shapes(out: Path) -> None:
    """Every name and shape of a full-size SD 3.5 medium single file with its three text
    encoders, from the configs in tests/fixtures/configs/."""
    from diffusers import AutoencoderKL, SD3Transformer2DModel
    from diffusers.loaders import single_file_utils as su
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection, T5Config, T5EncoderModel

    configs = FIXTURES / "configs"
    read = lambda n: json.loads((configs / f"{n}.json").read_text())
    vae_cfg = read("sd35m_vae")
    with torch.device("meta"):
        sources = {
            "transformer": SD3Transformer2DModel.from_config(read("sd35m_transformer")).state_dict(),
            "vae": AutoencoderKL.from_config(vae_cfg).state_dict(),
            "text_encoder": CLIPTextModelWithProjection(CLIPTextConfig.from_pretrained(configs / "sd15_text_encoder.json")).state_dict(),
            "text_encoder_2": CLIPTextModelWithProjection(CLIPTextConfig.from_pretrained(configs / "sdxl_text_encoder_2.json")).state_dict(),
            "text_encoder_3": T5EncoderModel(T5Config.from_pretrained(configs / "t5_xxl_text_encoder.json")).state_dict(),
        }
    # transformers saves T5's embedding once, as `shared`.
    sources["text_encoder_3"].pop("encoder.embed_tokens.weight", None)
    texts = {c: sources[c] for c in ("text_encoder", "text_encoder_2", "text_encoder_3")}
    entries = sd3_entries(sources["transformer"], sources["vae"], vae_cfg, texts)
    shapes = {}
    for ldm, comp, hf, *_ in entries:
        first = sources[comp][hf[0]].shape
        shapes[ldm] = [sum(sources[comp][h].shape[0] for h in hf), *first[1:]]
        if comp == "vae":
            shapes[ldm] = list(vae_ldm_tensor(ldm, torch.empty(shapes[ldm], device="meta")).shape)
    meta = {k: torch.empty(s, device="meta") for k, s in shapes.items()}
    inferred = su.infer_diffusers_model_type(meta)
    assert inferred == "sd35_medium", f"diffusers infers {inferred}"
    for comp, got in sd3_converted(meta, vae_cfg).items():
        want = {k for k in sources[comp] if not k.endswith("position_ids")}
        got_names = {k for k in got if not k.endswith("position_ids")}
        assert want == got_names, f"sd35m {comp}: {sorted(want ^ got_names)[:5]}"
    doc = {
        "about": "every tensor name and shape of a full-size SD 3.5 medium single-file checkpoint with "
                 "CLIP-L, CLIP-G and T5-XXL (values omitted); made by tools/make_single_file.py, family "
                 "checked with diffusers' infer_diffusers_model_type (sd35_medium)",
        "shapes": shapes,
    }
    (out / "sd35m_shapes.json").write_text(json.dumps(doc, separators=(",", ":")) + "\n")
    print(f"sd35m: {len(shapes)} tensors, diffusers infers {inferred}")


def open_clip_layer_shapes(prefix: str, d: int, ffn: int) -> dict[str, list[int]]:
    """The tensors of one OpenCLIP transformer layer, by name."""
    return {prefix + k: s for k, s in (
        ("attn.in_proj_weight", [3 * d, d]), ("attn.in_proj_bias", [3 * d]),
        ("attn.out_proj.weight", [d, d]), ("attn.out_proj.bias", [d]),
        ("ln_1.weight", [d]), ("ln_1.bias", [d]), ("ln_2.weight", [d]), ("ln_2.bias", [d]),
        ("mlp.c_fc.weight", [ffn, d]), ("mlp.c_fc.bias", [ffn]),
        ("mlp.c_proj.weight", [d, ffn]), ("mlp.c_proj.bias", [d]))}


def check_against_diffusers(name, ckpt, sources, unet_cfg, vae_cfg, family):
    from diffusers.loaders import single_file_utils as su
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    prefixed = lambda d: {k if k.startswith(("text_model.", "text_projection")) else "text_model." + k: v for k, v in d.items()}
    converted = {
        "unet": su.convert_ldm_unet_checkpoint(ckpt, unet_cfg),
        "vae": su.convert_ldm_vae_checkpoint(ckpt, vae_cfg),
    }
    if family == "sd2":
        model = CLIPTextModel(CLIPTextConfig.from_pretrained(FIXTURES / name / "text_encoder"))
        converted["text_encoder"] = prefixed(su.convert_open_clip_checkpoint(model, ckpt))
    elif family == "sdxl_refiner":
        model = CLIPTextModelWithProjection(CLIPTextConfig.from_pretrained(FIXTURES / name / "text_encoder_2"))
        converted["text_encoder_2"] = prefixed(su.convert_open_clip_checkpoint(model, ckpt, prefix="conditioner.embedders.0.model."))
    elif family == "sdxl":
        converted["text_encoder"] = prefixed(su.convert_ldm_clip_checkpoint(ckpt, remove_prefix="conditioner.embedders.0.transformer."))
        model = CLIPTextModelWithProjection(CLIPTextConfig.from_pretrained(FIXTURES / name / "text_encoder_2"))
        converted["text_encoder_2"] = prefixed(su.convert_open_clip_checkpoint(model, ckpt, prefix="conditioner.embedders.1.model."))
    else:
        converted["text_encoder"] = prefixed(su.convert_ldm_clip_checkpoint(ckpt))
    for comp, got in converted.items():
        want = sources[comp]
        for k, v in want.items():
            if k.endswith("position_ids"):
                continue
            assert k in got, f"{name}: diffusers' converter produced no {comp} tensor {k}"
            g = got[k].float().reshape(v.shape)
            assert torch.equal(g, v.float()), f"{name}: {comp} tensor {k} differs after conversion"
        extra = sorted(k for k in set(got) - set(want) if not k.endswith("position_ids"))
        # Only SD 2's last OpenCLIP layer (diffusers drops it by index 23, i.e. at full size).
        assert all(re.search(r"encoder\.layers\.\d+\.", k) for k in extra), extra


# SDXL base 1.0's published configs (stabilityai/stable-diffusion-xl-base-1.0: unet/,
# text_encoder_2/ and vae/config.json; its text_encoder/ is SD 1.5's CLIP ViT-L), the values
# that differ from diffusers' and transformers' defaults. Written to tests/fixtures/configs/
# by `sdxl_configs`, as make_fixtures.py writes SD 1.5's and SD 2.1's.
SDXL_UNET = dict(
    sample_size=128, in_channels=4, out_channels=4, block_out_channels=[320, 640, 1280], layers_per_block=2,
    down_block_types=["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    up_block_types=["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    transformer_layers_per_block=[1, 2, 10], attention_head_dim=[5, 10, 20], cross_attention_dim=2048,
    use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=256,
    projection_class_embeddings_input_dim=2816, norm_num_groups=32,
)
# The SDXL refiner's UNet (stabilityai/stable-diffusion-xl-refiner-1.0, unet/config.json):
# 384 channels, attention at the two middle levels, four transformer layers each, the
# pooled OpenCLIP output and five time ids (1280 + 5 * 256) in its added embedding.
SDXL_REFINER_UNET = dict(
    sample_size=128, in_channels=4, out_channels=4, block_out_channels=[384, 768, 1536, 1536], layers_per_block=2,
    down_block_types=["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    up_block_types=["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    transformer_layers_per_block=4, attention_head_dim=[6, 12, 24, 24], cross_attention_dim=1280,
    use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=256,
    projection_class_embeddings_input_dim=2560, norm_num_groups=32,
)
SDXL_TEXT_2 = dict(
    vocab_size=49408, hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=20,
    max_position_embeddings=77, hidden_act="gelu", projection_dim=1280, layer_norm_eps=1e-5,
    # CLIP's legacy special ids, as SD's text encoder configs keep them (eos 2 makes
    # transformers pool at the largest id, the end token).
    bos_token_id=0, eos_token_id=2, pad_token_id=1,
)


def sdxl_configs(configs: Path) -> None:
    import shutil
    import tempfile

    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig

    with torch.device("meta"), tempfile.TemporaryDirectory() as td:
        UNet2DConditionModel(**SDXL_UNET).save_config(td)
        shutil.copy(Path(td) / "config.json", configs / "sdxl_unet.json")
        UNet2DConditionModel(**SDXL_REFINER_UNET).save_config(td)
        shutil.copy(Path(td) / "config.json", configs / "sdxl_refiner_unet.json")
        vae = json.loads((configs / "sd15_vae.json").read_text())
        AutoencoderKL.from_config({**vae, "scaling_factor": 0.13025}).save_config(td)
        shutil.copy(Path(td) / "config.json", configs / "sdxl_vae.json")
    text = CLIPTextConfig(**SDXL_TEXT_2, architectures=["CLIPTextModelWithProjection"]).to_dict()
    (configs / "sdxl_text_encoder_2.json").write_text(json.dumps(text, indent=2, sort_keys=True) + "\n")


def full_size(out: Path) -> None:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.loaders import single_file_utils as su
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    configs = FIXTURES / "configs"
    sdxl_configs(configs)
    prefixed = lambda d: {k if k.startswith(("text_model.", "text_projection")) else "text_model." + k: v for k, v in d.items()}
    for tag, family in (("sd15", "v1"), ("sd21", "v2"), ("sdxl", "xl_base"), ("sdxl_refiner", "xl_refiner")):
        xl, refiner = tag.startswith("sdxl"), tag == "sdxl_refiner"
        unet_cfg = json.loads((configs / f"{tag}_unet.json").read_text())
        vae_cfg = json.loads((configs / ("sdxl_vae.json" if xl else "sd15_vae.json")).read_text())
        with torch.device("meta"):
            unet = UNet2DConditionModel.from_config(unet_cfg).state_dict()
            vae = AutoencoderKL.from_config(vae_cfg).state_dict()
            if not refiner:
                text_cfg = CLIPTextConfig.from_pretrained(configs / ("sd15_text_encoder.json" if xl else f"{tag}_text_encoder.json"))
                text = prefixed(CLIPTextModel(text_cfg).state_dict())
            if xl:
                text_2 = prefixed(CLIPTextModelWithProjection(CLIPTextConfig.from_pretrained(configs / "sdxl_text_encoder_2.json")).state_dict())
        shapes = {}
        for k, v in unet.items():
            shapes["model.diffusion_model." + unet_ldm_name(k, unet_cfg)] = list(v.shape)
        for k, v in vae.items():
            ldm = "first_stage_model." + vae_ldm_name(k, vae_cfg)
            shapes[ldm] = list(vae_ldm_tensor(ldm, torch.empty(v.shape, device="meta")).shape)
        open_clip = []
        if family == "v2":
            open_clip.append(("cond_stage_model.model.", text, True))
        elif not refiner:
            prefix = "conditioner.embedders.0.transformer." if xl else "cond_stage_model.transformer."
            for k, v in text.items():
                shapes[prefix + k] = list(v.shape)
        if xl:
            # The refiner's only embedder is the base's second.
            open_clip.append((f"conditioner.embedders.{0 if refiner else 1}.model.", text_2, False))
        for prefix, model, extra_layer in open_clip:
            entries, layers = open_clip_entries(model, prefix)
            for ldm, hf in entries:
                rows = sum(model[h].shape[0] for h in hf)
                shapes[ldm] = [rows, *model[hf[0]].shape[1:]]
            d = model["text_model.final_layer_norm.weight"].shape[0]
            if extra_layer:  # SD 2's unused last layer
                ffn = model["text_model.encoder.layers.0.mlp.fc1.weight"].shape[0]
                shapes.update(open_clip_layer_shapes(f"{prefix}transformer.resblocks.{layers}.", d, ffn))
            projection = model.get("text_projection.weight")
            shapes[prefix + "text_projection"] = [d, d] if projection is None else list(projection.shape[::-1])
            shapes[prefix + "logit_scale"] = []
        for k, s in schedule_buffers({"num_train_timesteps": 1000}).items():
            shapes[k] = s
        meta = {k: torch.empty(s, device="meta") for k, s in shapes.items()}
        inferred = su.infer_diffusers_model_type(meta)
        assert inferred == family, f"{tag}: diffusers infers {inferred}, not {family}"
        # Every name diffusers' converters produce is one of the model's, with its shape.
        for comp, want, got in (
            ("unet", unet, su.convert_ldm_unet_checkpoint(meta, unet_cfg)),
            ("vae", vae, su.convert_ldm_vae_checkpoint(meta, vae_cfg)),
        ):
            assert set(want) == set(got), f"{tag} {comp}: {sorted(set(want) ^ set(got))[:5]}"
            for k in want:
                assert got[k].numel() == want[k].numel(), (tag, comp, k)
        doc = {
            "about": f"every tensor name and shape of a full-size {tag} single-file checkpoint "
                     "(values omitted); made by tools/make_single_file.py, family checked "
                     f"with diffusers' infer_diffusers_model_type ({family})",
            "shapes": shapes,
        }
        (out / f"{tag}_shapes.json").write_text(json.dumps(doc, separators=(",", ":")) + "\n")
        print(f"{tag}: {len(shapes)} tensors, diffusers infers {inferred}")


# FLUX.1's original (Black Forest Labs') names of the diffusers transformer's modules: the
# top-level ones, a double-stream block's, a single-stream block's.
FLUX_TOP = {
    "x_embedder": "img_in", "context_embedder": "txt_in",
    "time_text_embed.timestep_embedder.linear_1": "time_in.in_layer",
    "time_text_embed.timestep_embedder.linear_2": "time_in.out_layer",
    "time_text_embed.text_embedder.linear_1": "vector_in.in_layer",
    "time_text_embed.text_embedder.linear_2": "vector_in.out_layer",
    "time_text_embed.guidance_embedder.linear_1": "guidance_in.in_layer",
    "time_text_embed.guidance_embedder.linear_2": "guidance_in.out_layer",
    "proj_out": "final_layer.linear",
}
FLUX_DOUBLE = {
    "norm1.linear": "img_mod.lin", "norm1_context.linear": "txt_mod.lin",
    "attn.to_out.0": "img_attn.proj", "attn.to_add_out": "txt_attn.proj",
    "ff.net.0.proj": "img_mlp.0", "ff.net.2": "img_mlp.2",
    "ff_context.net.0.proj": "txt_mlp.0", "ff_context.net.2": "txt_mlp.2",
}
FLUX_DOUBLE_NORMS = {"attn.norm_q": "img_attn.norm.query_norm", "attn.norm_k": "img_attn.norm.key_norm",
                     "attn.norm_added_q": "txt_attn.norm.query_norm", "attn.norm_added_k": "txt_attn.norm.key_norm"}
FLUX_SINGLE = {"proj_out": "linear2", "norm.linear": "modulation.lin"}
FLUX_SINGLE_NORMS = {"attn.norm_q": "norm.query_norm", "attn.norm_k": "norm.key_norm"}


def flux_entries(transformer: dict, prefix: str = "") -> list:
    """[original name, "transformer", [diffusers names]] (+ "swapped") of a FLUX single file
    (BFL's transformer file; ComfyUI's puts `model.diffusion_model.` before each name)."""
    entries = []
    for k in transformer:
        module, _, part = k.rpartition(".")
        if module in FLUX_TOP:
            entries.append([prefix + f"{FLUX_TOP[module]}.{part}", "transformer", [k]])
        elif module == "norm_out.linear":
            entries.append([prefix + f"final_layer.adaLN_modulation.1.{part}", "transformer", [k], "swapped"])
        elif m := re.fullmatch(r"transformer_blocks\.(\d+)\.(.*)", module):
            i, name = int(m[1]), m[2]
            at = f"{prefix}double_blocks.{i}."
            if name in ("attn.to_q", "attn.add_q_proj"):  # once per fused tensor
                side, names = (("img", ["attn.to_q", "attn.to_k", "attn.to_v"]) if name == "attn.to_q"
                               else ("txt", ["attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj"]))
                entries.append([f"{at}{side}_attn.qkv.{part}", "transformer",
                                [f"transformer_blocks.{i}.{n}.{part}" for n in names]])
            elif name in ("attn.to_k", "attn.to_v", "attn.add_k_proj", "attn.add_v_proj"):
                continue
            elif name in FLUX_DOUBLE_NORMS:
                entries.append([f"{at}{FLUX_DOUBLE_NORMS[name]}.scale", "transformer", [k]])
            else:
                entries.append([f"{at}{FLUX_DOUBLE[name]}.{part}", "transformer", [k]])
        elif m := re.fullmatch(r"single_transformer_blocks\.(\d+)\.(.*)", module):
            i, name = int(m[1]), m[2]
            at = f"{prefix}single_blocks.{i}."
            if name == "attn.to_q":
                names = ["attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp"]
                entries.append([f"{at}linear1.{part}", "transformer",
                                [f"single_transformer_blocks.{i}.{n}.{part}" for n in names]])
            elif name in ("attn.to_k", "attn.to_v", "proj_mlp"):
                continue
            elif name in FLUX_SINGLE_NORMS:
                entries.append([f"{at}{FLUX_SINGLE_NORMS[name]}.scale", "transformer", [k]])
            else:
                entries.append([f"{at}{FLUX_SINGLE[name]}.{part}", "transformer", [k]])
        else:
            raise ValueError(f"no original name for FLUX transformer tensor {k}")
    return entries


def flux_tiny(out: Path) -> None:
    """tests/fixtures/flux_tiny's transformer as BFL's single file names it. diffusers'
    converter fixes FLUX.1's width (3072), so it cannot read the tiny one: the names are
    checked against it at full size (`flux1_dev_shapes`), the values by tests/single_file.rs
    (the file draws the folder's image exactly)."""
    name = "flux_tiny"
    source = load_component(FIXTURES / name, "transformer")
    entries = flux_entries(source)
    covered = {h for _, _, hf, *_ in entries for h in hf}
    assert covered == set(source), sorted(covered ^ set(source))[:5]
    about = (f"tests/fixtures/{name}'s transformer as a single file in FLUX.1's original (Black Forest "
             "Labs') layout: made by tools/make_single_file.py, whose names diffusers' converter checks "
             "at full size")
    lines = ",\n".join(json.dumps(e) for e in entries)
    text = f'{{"about": {json.dumps(about)},\n"tensors": [\n{lines}\n],\n"extras": {{}}}}\n'
    json.loads(text)
    (out / f"{name}.json").write_text(text)
    print(f"{name}: {len(entries)} tensors")


def flux1_dev_shapes(out: Path) -> None:
    """Every name and shape of FLUX.1-dev's transformer as BFL's single file holds it (from
    tests/fixtures/configs/flux1_dev_transformer.json), checked with diffusers' converter:
    it must rebuild every diffusers name with its shape, and infer the file's family."""
    from diffusers import FluxTransformer2DModel
    from diffusers.loaders import single_file_utils as su

    config = json.loads((FIXTURES / "configs" / "flux1_dev_transformer.json").read_text())
    with torch.device("meta"):
        source = FluxTransformer2DModel.from_config(config).state_dict()
    entries = flux_entries(source)
    shapes = {}
    for ldm, _, hf, *_ in entries:
        first = source[hf[0]].shape
        shapes[ldm] = [sum(source[h].shape[0] for h in hf), *first[1:]]
    meta = {k: torch.empty(s, device="meta") for k, s in shapes.items()}
    inferred = su.infer_diffusers_model_type(meta)
    assert inferred == "flux-dev", f"diffusers infers {inferred}"
    got = su.convert_flux_transformer_checkpoint_to_diffusers(dict(meta))
    assert set(got) == set(source), sorted(set(got) ^ set(source))[:5]
    for k, v in got.items():
        assert tuple(v.shape) == tuple(source[k].shape), f"{k}: {tuple(v.shape)} vs {tuple(source[k].shape)}"
    doc = {
        "about": "every tensor name and shape of FLUX.1-dev's transformer as Black Forest Labs' single file "
                 "holds it (values omitted); made by tools/make_single_file.py, checked with diffusers' "
                 "convert_flux_transformer_checkpoint_to_diffusers and infer_diffusers_model_type (flux-dev)",
        "shapes": shapes,
    }
    (out / "flux1_dev_shapes.json").write_text(json.dumps(doc, separators=(",", ":")) + "\n")
    print(f"flux1-dev: {len(shapes)} tensors, diffusers infers {inferred}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=FIXTURES / "single_file")
    parser.add_argument("--only", choices=["sd3", "flux", "ldm", "controlnet"],
                        help="only SD 3's files, FLUX's, the ControlNet's, or the others")
    args = parser.parse_args()
    if args.only in (None, "flux"):
        flux_tiny(args.out)
        flux1_dev_shapes(args.out)
    if args.only in (None, "controlnet"):
        controlnet_tiny(args.out)
        controlnet_full_size(args.out)
    if args.only not in ("sd3", "flux", "controlnet"):
        for name in ("sd1_tiny", "sd2_tiny", "sdxl_tiny", "sdxl_refiner_tiny"):
            tiny(name, args.out)
        full_size(args.out)
    if args.only in (None, "sd3"):
        sd3_tiny(args.out)
        sd35m_shapes(args.out)


if __name__ == "__main__":
    main()
