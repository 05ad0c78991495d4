//! ControlNets in their original layout: the files lllyasviel's ControlNet code saves
//! (`control_v11p_sd15_canny.pth` and the `.safetensors` copies most people download), whose
//! tensors are named after the UNet they copy (`input_blocks.*`, `middle_block.*`,
//! `time_embed.*`, SDXL's `label_emb.*`) plus the conditioning embedding
//! (`input_hint_block.*`) and the zero convolutions (`zero_convs.*`, `middle_block_out.*`),
//! each under `control_model.` or with no prefix at all (ControlNets shared on their own,
//! as diffusers' converter also reads them). Renamed into diffusers' `ControlNetModel` names,
//! with a config inferred from the shapes as a checkpoint's UNet's is.

use std::collections::HashMap;

use serde_json::Value;

use crate::error::{Error, Result};
use crate::ldm::{UNetNames, index};
use crate::weights::{Regroup, Weights};

use super::configs::controlnet_config;
use super::names::unet_layout;
use super::{Family, Part, Shapes, UNET, unused};

/// The prefix the training code's checkpoints put before every ControlNet tensor.
const PREFIX: &str = "control_model.";
/// The conditioning embedding's sequential: what tells an original ControlNet.
const HINT: &str = "input_hint_block.";

/// `name` without the ControlNet prefix, where it has it.
fn bare(name: &str) -> &str {
    name.strip_prefix(PREFIX).unwrap_or(name)
}

/// Whether tensors of these names are a ControlNet in the original layout.
pub fn is_original(names: &[&str]) -> bool {
    names
        .iter()
        .any(|n| bare(n).starts_with(&format!("{HINT}0.")))
}

/// The ControlNet in `weights` (an original-layout file, [`is_original`]) under diffusers'
/// names, with its inferred config; a tensor no rule explains, or a file whose shapes do not
/// make a ControlNet, is a `weight_file` error naming it.
pub fn split(file: &str, weights: Weights) -> Result<Part> {
    let weights = weights.with_scales_applied()?;
    let (config, renames) = layout(file, &weights.shapes())?;
    let mut parts = weights.regroup(1, |name| match renames.get(name) {
        Some(renamed) => Regroup::Move {
            part: 0,
            name: renamed.clone(),
        },
        None => Regroup::Drop,
    })?;
    Ok(Part {
        weights: parts.remove(0),
        config: config.to_string(),
    })
}

/// The config inferred for an original ControlNet file of these tensor names and shapes,
/// without its values: the checks [`split`] makes before it moves anything.
pub fn inspect(file: &str, shapes: &[(&str, &[usize])]) -> Result<Value> {
    Ok(layout(file, shapes)?.0)
}

/// The config of an original ControlNet file of these names and shapes, and each tensor's
/// name in diffusers' naming (the unused ones left out).
fn layout(file: &str, shapes: &[(&str, &[usize])]) -> Result<(Value, HashMap<String, String>)> {
    // The trunk's names as a UNet checkpoint writes them, so that the UNet's numbering and
    // config inference read them; the ControlNet's own under their bare names.
    let named: Vec<(String, &[usize])> = shapes
        .iter()
        .filter(|(name, _)| !unused(name))
        .map(|&(name, shape)| {
            let rest = bare(name);
            let own = [HINT, "zero_convs.", "middle_block_out."]
                .iter()
                .any(|p| rest.starts_with(p));
            let name = match own {
                true => rest.to_string(),
                false => format!("{UNET}{rest}"),
            };
            (name, shape)
        })
        .collect();
    let table: Shapes = named.iter().map(|(n, s)| (n.as_str(), *s)).collect();
    let config = controlnet_config(file, family(&table), &table)?;
    let unet = unet_layout(&table);
    let hint_convolutions = config["conditioning_embedding_out_channels"]
        .as_array()
        .map_or(0, |widths| 2 * widths.len());
    let mut renames = HashMap::new();
    for &(name, _) in shapes.iter().filter(|(name, _)| !unused(name)) {
        let renamed =
            rename(bare(name), &unet, hint_convolutions).ok_or_else(|| Error::WeightFile {
                file: file.to_string(),
                message: format!("tensor `{name}` fits no part of a ControlNet"),
            })?;
        renames.insert(name.to_string(), renamed);
    }
    Ok((config, renames))
}

/// The UNet family whose heads the ControlNet's attention has: SDXL's by its size input,
/// else SD 2.x's by its context width (1024), else SD 1.x's.
fn family(shapes: &Shapes) -> Family {
    let has = |prefix: &str| shapes.keys().any(|n| n.starts_with(prefix));
    if has(&format!("{UNET}label_emb.")) {
        return Family::Sdxl;
    }
    let context = shapes
        .iter()
        .find(|(n, _)| n.ends_with("attn2.to_k.weight"))
        .and_then(|(_, s)| s.last().copied());
    match context {
        Some(1024) => Family::Sd2,
        _ => Family::Sd1,
    }
}

/// A bare original ControlNet name in diffusers' naming, with `hint_convolutions` the
/// conditioning embedding's convolutions (its last is `conv_out`).
fn rename(rest: &str, unet: &UNetNames, hint_convolutions: usize) -> Option<String> {
    if let Some(r) = rest.strip_prefix(HINT) {
        let (k, t) = index(r)?;
        if !k.is_multiple_of(2) {
            return None;
        }
        let convolution = k / 2;
        return Some(match convolution {
            0 => format!("controlnet_cond_embedding.conv_in.{t}"),
            c if c + 1 == hint_convolutions => format!("controlnet_cond_embedding.conv_out.{t}"),
            c if c + 1 < hint_convolutions => {
                format!("controlnet_cond_embedding.blocks.{}.{t}", c - 1)
            }
            _ => return None,
        });
    }
    if let Some(r) = rest.strip_prefix("zero_convs.") {
        let (i, t) = index(r)?;
        return Some(format!(
            "controlnet_down_blocks.{i}.{}",
            t.strip_prefix("0.")?
        ));
    }
    if let Some(t) = rest.strip_prefix("middle_block_out.0.") {
        return Some(format!("controlnet_mid_block.{t}"));
    }
    // The UNet's down half only: a ControlNet has no up blocks and no output layers.
    let renamed = unet.rename(rest)?;
    let trunk = [
        "time_embedding.",
        "add_embedding.",
        "conv_in.",
        "down_blocks.",
        "mid_block.",
    ];
    trunk
        .iter()
        .any(|p| renamed.starts_with(p))
        .then_some(renamed)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hostile file's header may give any tensor any shape: inferring its config reads
    /// axes that may not exist, and must say so rather than panic (a panic would trap a
    /// page's wasm).
    #[test]
    fn tensors_of_too_few_axes_are_errors_not_panics() {
        let names = [
            "control_model.input_hint_block.0.weight",
            "control_model.input_hint_block.2.weight",
            "control_model.input_hint_block.4.weight",
            "control_model.input_blocks.0.0.weight",
            "control_model.input_blocks.1.0.out_layers.3.weight",
            "control_model.input_blocks.1.1.proj_in.weight",
            "control_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight",
            "control_model.label_emb.0.0.weight",
        ];
        for shape in [&[][..], &[0][..], &[3][..], &[0, 0][..]] {
            for count in 1..=names.len() {
                let shapes: Vec<(&str, &[usize])> =
                    names[..count].iter().map(|n| (*n, shape)).collect();
                let result = inspect("hostile.safetensors", &shapes);
                assert!(result.is_err(), "{count} names of shape {shape:?} passed");
            }
        }
    }
}
