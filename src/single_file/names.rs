//! The original keys renamed into diffusers' names, each sent to its component.

use std::collections::HashMap;

use crate::error::{Error, Result};
use crate::ldm::Renamed;
use crate::ldm::{UNetNames, count_indices, index};
use crate::sd3_names;
use crate::weights::Regroup;

use super::{
    CLIP, CLIP_XL, Family, MMDIT_BLOCKS, OPEN_CLIP, OPEN_CLIP_REFINER, OPEN_CLIP_XL,
    SCHEDULE_MARKERS, SD3_CLIP_G, SD3_CLIP_L, SD3_T5, Shapes, UNET, VAE, unused,
};

/// Part indices of [`Weights::regroup`](crate::weights::Weights::regroup).
const DENOISER_PART: usize = 0;
const VAE_PART: usize = 1;
const TEXT_PART: usize = 2;
const TEXT_2_PART: usize = 3;
const TEXT_3_PART: usize = 4;
pub(super) const PARTS: usize = 5;

/// Where every tensor of the file goes; fails on a name no rule explains.
pub(super) fn routes(
    file: &str,
    family: Family,
    shapes: &Shapes,
) -> Result<HashMap<String, Regroup>> {
    let unet = unet_layout(shapes);
    let vae_blocks = count_indices(shapes.keys().copied(), "first_stage_model.encoder.down.");
    let open_clip_layers = count_indices(
        shapes.keys().copied(),
        "cond_stage_model.model.transformer.resblocks.",
    );
    let mmdit_blocks = count_indices(shapes.keys().copied(), MMDIT_BLOCKS);
    let mut routes = HashMap::new();
    let mut unexplained = Vec::new();
    for name in shapes.keys() {
        let route = if unused(name) || SCHEDULE_MARKERS.contains(name) {
            Some(Regroup::Drop)
        } else if let (Family::Sd3, Some(rest)) = (family, name.strip_prefix(UNET)) {
            mmdit_route(rest, mmdit_blocks)
        } else if let (Family::Flux, false) = (
            family,
            name.starts_with(VAE) || name.starts_with("text_encoders."),
        ) {
            flux_route(name.strip_prefix(UNET).unwrap_or(name))
        } else if let Some(rest) = name.strip_prefix(UNET) {
            unet.rename(rest).map(|n| moved(DENOISER_PART, n))
        } else if let Some(rest) = name.strip_prefix(VAE) {
            vae_name(rest, vae_blocks).map(|n| moved(VAE_PART, n))
        } else if let (Family::Sd1, Some(rest)) = (family, name.strip_prefix(CLIP)) {
            Some(moved(TEXT_PART, rest.to_string()))
        } else if let (Family::Sd2, Some(rest)) = (family, name.strip_prefix(OPEN_CLIP)) {
            // SD 2 runs the penultimate layer: the last one is never used.
            open_clip_name(rest, TEXT_PART, Some(open_clip_layers))
        } else if let (Family::Sdxl, Some(rest)) = (family, name.strip_prefix(CLIP_XL)) {
            Some(moved(TEXT_PART, rest.to_string()))
        } else if let Some(rest) = match family {
            Family::Sdxl => name.strip_prefix(OPEN_CLIP_XL),
            Family::SdxlRefiner => name.strip_prefix(OPEN_CLIP_REFINER),
            _ => None,
        } {
            // SDXL keeps every layer (its pipeline reads the penultimate one's output), and
            // the projection, which OpenCLIP applies as `x @ text_projection`.
            match rest {
                "text_projection" => Some(Regroup::Transpose {
                    part: TEXT_2_PART,
                    name: "text_projection.weight".into(),
                }),
                _ => open_clip_name(rest, TEXT_2_PART, None),
            }
        } else if let Family::Sd3 | Family::Flux = family {
            // FLUX's files name CLIP-L and T5 as SD 3's do; T5 is FLUX's only other.
            [
                (SD3_CLIP_L, TEXT_PART),
                (SD3_CLIP_G, TEXT_2_PART),
                (SD3_T5, TEXT_3_PART),
            ]
            .iter()
            .find_map(|(prefix, part)| Some(moved(*part, name.strip_prefix(prefix)?.to_string())))
        } else {
            None
        };
        match route {
            Some(route) => {
                routes.insert(name.to_string(), route);
            }
            None => unexplained.push(*name),
        }
    }
    if let Some(first) = unexplained.first() {
        let label = match family {
            Family::Sd1 => "an SD 1.x",
            Family::Sd2 => "an SD 2.x",
            Family::Sdxl => "an SDXL",
            Family::SdxlRefiner => "an SDXL refiner",
            Family::Sd3 => "an SD 3",
            Family::Flux => "a FLUX transformer",
        };
        return Err(Error::WeightFile {
            file: file.to_string(),
            message: format!(
                "{} tensor(s) fit no part of {label} checkpoint, first `{first}`",
                unexplained.len()
            ),
        });
    }
    Ok(routes)
}

fn moved(part: usize, name: String) -> Regroup {
    Regroup::Move { part, name }
}

/// Where an SD 3 transformer tensor (after `model.diffusion_model.`) goes, in a transformer
/// of `blocks` joint blocks (`crate::sd3_names`).
fn mmdit_route(rest: &str, blocks: usize) -> Option<Regroup> {
    transformer_route(sd3_names::rename(rest, blocks)?)
}

/// Where a FLUX transformer tensor (after any `model.diffusion_model.`) goes
/// (`crate::flux_names`).
fn flux_route(rest: &str) -> Option<Regroup> {
    transformer_route(crate::flux_names::rename(rest)?)
}

/// An original transformer's tensor, renamed, into the denoiser's part.
fn transformer_route(renamed: Renamed) -> Option<Regroup> {
    let part = DENOISER_PART;
    Some(match renamed {
        Renamed::Same(name) => Regroup::Move { part, name },
        Renamed::Fused(pieces) => Regroup::Split { part, pieces },
        Renamed::HalvesSwapped(name) => Regroup::SwapHalves { part, name },
    })
}

/// `name` with the first prefix of `table` it starts with replaced by that prefix's new name.
fn renamed(name: &str, table: &[(&str, &str)]) -> Option<String> {
    table
        .iter()
        .find_map(|(old, new)| name.strip_prefix(old).map(|rest| format!("{new}{rest}")))
}

/// The original UNet's numbering in a checkpoint of these shapes.
pub(super) fn unet_layout(shapes: &Shapes) -> UNetNames {
    // The first downsampler sits right after the first block's layers.
    let first_down = shapes
        .keys()
        .filter_map(|n| n.strip_prefix("model.diffusion_model.input_blocks."))
        .filter(|rest| rest.contains(".0.op."))
        .filter_map(|rest| index(rest).map(|(i, _)| i))
        .min();
    let layers_per_block = match first_down {
        Some(i) => i.saturating_sub(1),
        // One block and no downsampler: every input block after conv_in is a layer.
        None => count_indices(
            shapes.keys().copied(),
            "model.diffusion_model.input_blocks.",
        )
        .saturating_sub(1),
    };
    UNetNames {
        layers_per_block: layers_per_block.max(1),
    }
}

/// A VAE name (after `first_stage_model.`) in diffusers' naming; the decoder's up blocks
/// run in the opposite order.
fn vae_name(rest: &str, blocks: usize) -> Option<String> {
    let (side, r) = rest.split_once('.')?;
    if side != "encoder" && side != "decoder" {
        return ["quant_conv.", "post_quant_conv."]
            .iter()
            .any(|p| rest.starts_with(p))
            .then(|| rest.to_string());
    }
    let resnet = |t: &str| match t.strip_prefix("nin_shortcut.") {
        Some(p) => format!("conv_shortcut.{p}"),
        None => t.to_string(),
    };
    if let Some(t) = r.strip_prefix("mid.attn_1.") {
        const NAMES: &[(&str, &str)] = &[
            ("norm.", "group_norm."),
            ("q.", "to_q."),
            ("k.", "to_k."),
            ("v.", "to_v."),
            ("proj_out.", "to_out.0."),
        ];
        let inner = renamed(t, NAMES)?;
        return Some(format!("{side}.mid_block.attentions.0.{inner}"));
    }
    if let Some(t) = r.strip_prefix("mid.block_") {
        let (k, t) = index(t)?;
        return (k == 1 || k == 2)
            .then(|| format!("{side}.mid_block.resnets.{}.{}", k - 1, resnet(t)));
    }
    if let Some(t) = r.strip_prefix("norm_out.") {
        return Some(format!("{side}.conv_norm_out.{t}"));
    }
    if r.starts_with("conv_in.") || r.starts_with("conv_out.") {
        return Some(rest.to_string());
    }
    let (kind, t) = match side {
        "encoder" => ("down", r.strip_prefix("down.")?),
        _ => ("up", r.strip_prefix("up.")?),
    };
    let (i, t) = index(t)?;
    let block = if kind == "down" {
        i
    } else {
        blocks.checked_sub(i + 1)?
    };
    let at = format!("{side}.{kind}_blocks.{block}");
    if let Some(t) = t.strip_prefix("block.") {
        let (j, t) = index(t)?;
        return Some(format!("{at}.resnets.{j}.{}", resnet(t)));
    }
    let sampler = if kind == "down" {
        "downsample.conv."
    } else {
        "upsample.conv."
    };
    let t = t.strip_prefix(sampler)?;
    Some(format!("{at}.{kind}samplers.0.conv.{t}"))
}

/// An OpenCLIP text-tower name (after its prefix) in transformers' CLIP naming, into `part`.
/// The fused q/k/v projection splits into three; with `drop_last_of`, the last of that many
/// layers is dropped.
fn open_clip_name(rest: &str, part: usize, drop_last_of: Option<usize>) -> Option<Regroup> {
    let text = |n: String| Some(moved(part, format!("text_model.{n}")));
    match rest {
        "token_embedding.weight" => return text("embeddings.token_embedding.weight".into()),
        "positional_embedding" => return text("embeddings.position_embedding.weight".into()),
        _ => {}
    }
    if let Some(t) = rest.strip_prefix("ln_final.") {
        return text(format!("final_layer_norm.{t}"));
    }
    let (i, t) = index(rest.strip_prefix("transformer.resblocks.")?)?;
    if drop_last_of == Some(i + 1) {
        return Some(Regroup::Drop);
    }
    let at = format!("text_model.encoder.layers.{i}");
    if let Some(kind) = t.strip_prefix("attn.in_proj_") {
        return Some(Regroup::Split {
            part,
            pieces: ["q", "k", "v"]
                .iter()
                .map(|p| (format!("{at}.self_attn.{p}_proj.{kind}"), 1))
                .collect(),
        });
    }
    const NAMES: &[(&str, &str)] = &[
        ("ln_1.", "layer_norm1."),
        ("ln_2.", "layer_norm2."),
        ("attn.out_proj.", "self_attn.out_proj."),
        ("mlp.c_fc.", "mlp.fc1."),
        ("mlp.c_proj.", "mlp.fc2."),
    ];
    let inner = renamed(t, NAMES)?;
    Some(moved(part, format!("{at}.{inner}")))
}
