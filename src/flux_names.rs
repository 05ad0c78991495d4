//! FLUX.1's original tensor names (Black Forest Labs') in diffusers' terms: what BFL's and
//! ComfyUI's single-file FLUX transformers call their tensors (`crate::single_file`), and what
//! kohya's FLUX LoRA files name their modules after (`crate::weights::lora`). The original
//! fuses each double-stream attention's q/k/v into one `qkv` projection, and each
//! single-stream block's q, k, v and MLP widening into one `linear1` (rows in proportion
//! 1:1:1:4); its output adaLN projection yields shift before scale, where diffusers'
//! `AdaLayerNormContinuous` takes scale first; its RMS norms keep their weight as `scale`.

use crate::ldm::{Renamed, index};

/// The single-stream block's MLP is this many times the width.
const MLP_RATIO: usize = 4;

/// The original's modules outside the blocks, and their diffusers names.
const TOP: &[(&str, &str)] = &[
    ("img_in", "x_embedder"),
    ("txt_in", "context_embedder"),
    (
        "time_in.in_layer",
        "time_text_embed.timestep_embedder.linear_1",
    ),
    (
        "time_in.out_layer",
        "time_text_embed.timestep_embedder.linear_2",
    ),
    (
        "vector_in.in_layer",
        "time_text_embed.text_embedder.linear_1",
    ),
    (
        "vector_in.out_layer",
        "time_text_embed.text_embedder.linear_2",
    ),
    (
        "guidance_in.in_layer",
        "time_text_embed.guidance_embedder.linear_1",
    ),
    (
        "guidance_in.out_layer",
        "time_text_embed.guidance_embedder.linear_2",
    ),
    ("final_layer.linear", "proj_out"),
];

/// The output layer's adaLN projection (its halves swapped).
const FINAL_ADA_LN: (&str, &str) = ("final_layer.adaLN_modulation.1", "norm_out.linear");

/// A double-stream block's fused projections, and the three each is cut into.
const DOUBLE_FUSED: &[(&str, [&str; 3])] = &[
    ("img_attn.qkv", ["attn.to_q", "attn.to_k", "attn.to_v"]),
    (
        "txt_attn.qkv",
        ["attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj"],
    ),
];

/// A double-stream block's other modules, and their diffusers names.
const DOUBLE: &[(&str, &str)] = &[
    ("img_mod.lin", "norm1.linear"),
    ("txt_mod.lin", "norm1_context.linear"),
    ("img_attn.proj", "attn.to_out.0"),
    ("txt_attn.proj", "attn.to_add_out"),
    ("img_mlp.0", "ff.net.0.proj"),
    ("img_mlp.2", "ff.net.2"),
    ("txt_mlp.0", "ff_context.net.0.proj"),
    ("txt_mlp.2", "ff_context.net.2"),
];

/// A double-stream block's RMS norms (their weight named `scale`).
const DOUBLE_NORMS: &[(&str, &str)] = &[
    ("img_attn.norm.query_norm", "attn.norm_q"),
    ("img_attn.norm.key_norm", "attn.norm_k"),
    ("txt_attn.norm.query_norm", "attn.norm_added_q"),
    ("txt_attn.norm.key_norm", "attn.norm_added_k"),
];

/// A single-stream block's fused input projection: q, k, v and the MLP's widening.
const SINGLE_FUSED: (&str, [&str; 4]) = (
    "linear1",
    ["attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp"],
);

/// A single-stream block's other modules.
const SINGLE: &[(&str, &str)] = &[("linear2", "proj_out"), ("modulation.lin", "norm.linear")];

/// A single-stream block's RMS norms.
const SINGLE_NORMS: &[(&str, &str)] = &[
    ("norm.query_norm", "attn.norm_q"),
    ("norm.key_norm", "attn.norm_k"),
];

/// The first parts of the original's module paths: what tells a FLUX module from a UNet's
/// or SD 3's.
pub const ROOTS: &[&str] = &[
    "double_blocks",
    "single_blocks",
    "img_in",
    "txt_in",
    "time_in",
    "vector_in",
    "guidance_in",
    "final_layer",
];

/// `module.kind` (`kind` the tensor: weight, bias) with `module` found in `table`, renamed.
fn in_table(name: &str, table: &[(&str, &str)]) -> Option<String> {
    table.iter().find_map(|(original, renamed)| {
        let kind = name.strip_prefix(original)?.strip_prefix('.')?;
        Some(format!("{renamed}.{kind}"))
    })
}

/// An RMS norm's `module.scale` in `table`, as diffusers' `module.weight`.
fn norm_in_table(name: &str, table: &[(&str, &str)]) -> Option<String> {
    table.iter().find_map(|(original, renamed)| {
        (name.strip_prefix(original)? == ".scale").then(|| format!("{renamed}.weight"))
    })
}

/// Where the original tensor `rest` (after any `model.diffusion_model.`) goes; `None` for a
/// name the original does not have.
pub fn rename(rest: &str) -> Option<Renamed> {
    if let Some(name) = in_table(rest, &[FINAL_ADA_LN]) {
        return Some(Renamed::HalvesSwapped(name));
    }
    if let Some(name) = in_table(rest, TOP) {
        return Some(Renamed::Same(name));
    }
    if let Some((i, t)) = rest.strip_prefix("double_blocks.").and_then(index) {
        let block = format!("transformer_blocks.{i}");
        if let Some((kind, names)) = DOUBLE_FUSED
            .iter()
            .find_map(|(fused, names)| Some((t.strip_prefix(fused)?.strip_prefix('.')?, names)))
        {
            let pieces = names.map(|n| (format!("{block}.{n}.{kind}"), 1));
            return Some(Renamed::Fused(pieces.into()));
        }
        let name = in_table(t, DOUBLE).or_else(|| norm_in_table(t, DOUBLE_NORMS))?;
        return Some(Renamed::Same(format!("{block}.{name}")));
    }
    let (i, t) = index(rest.strip_prefix("single_blocks.")?)?;
    let block = format!("single_transformer_blocks.{i}");
    let (fused, names) = SINGLE_FUSED;
    if let Some(kind) = t.strip_prefix(fused).and_then(|k| k.strip_prefix('.')) {
        let shares = [1, 1, 1, MLP_RATIO];
        let pieces = names
            .iter()
            .zip(shares)
            .map(|(n, share)| (format!("{block}.{n}.{kind}"), share));
        return Some(Renamed::Fused(pieces.collect()));
    }
    let name = in_table(t, SINGLE).or_else(|| norm_in_table(t, SINGLE_NORMS))?;
    Some(Renamed::Same(format!("{block}.{name}")))
}

/// Every module path of the original transformer of `double` and `single` blocks that holds
/// a weight a LoRA may adapt (`double_blocks.0.img_attn.qkv`, ...; not the norms' scales):
/// what kohya's flattened module names are matched against.
pub fn modules(double: usize, single: usize) -> Vec<String> {
    let mut out: Vec<String> = TOP
        .iter()
        .chain(std::iter::once(&FINAL_ADA_LN))
        .map(|(original, _)| original.to_string())
        .collect();
    for i in 0..double {
        let in_block = DOUBLE_FUSED
            .iter()
            .map(|(original, _)| *original)
            .chain(DOUBLE.iter().map(|(original, _)| *original));
        out.extend(in_block.map(|m| format!("double_blocks.{i}.{m}")));
    }
    for i in 0..single {
        let in_block = std::iter::once(SINGLE_FUSED.0).chain(SINGLE.iter().map(|(o, _)| *o));
        out.extend(in_block.map(|m| format!("single_blocks.{i}.{m}")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fused_swapped_and_norm_tensors_are_named_as_diffusers_loads_them() {
        assert_eq!(
            rename("single_blocks.3.linear1.bias"),
            Some(Renamed::Fused(vec![
                ("single_transformer_blocks.3.attn.to_q.bias".into(), 1),
                ("single_transformer_blocks.3.attn.to_k.bias".into(), 1),
                ("single_transformer_blocks.3.attn.to_v.bias".into(), 1),
                ("single_transformer_blocks.3.proj_mlp.bias".into(), 4),
            ]))
        );
        assert_eq!(
            rename("double_blocks.1.txt_attn.qkv.weight"),
            Some(Renamed::Fused(vec![
                ("transformer_blocks.1.attn.add_q_proj.weight".into(), 1),
                ("transformer_blocks.1.attn.add_k_proj.weight".into(), 1),
                ("transformer_blocks.1.attn.add_v_proj.weight".into(), 1),
            ]))
        );
        assert_eq!(
            rename("double_blocks.0.txt_attn.norm.key_norm.scale"),
            Some(Renamed::Same(
                "transformer_blocks.0.attn.norm_added_k.weight".into()
            ))
        );
        assert_eq!(
            rename("single_blocks.0.norm.query_norm.scale"),
            Some(Renamed::Same(
                "single_transformer_blocks.0.attn.norm_q.weight".into()
            ))
        );
        assert_eq!(
            rename("final_layer.adaLN_modulation.1.weight"),
            Some(Renamed::HalvesSwapped("norm_out.linear.weight".into()))
        );
        assert_eq!(
            rename("guidance_in.out_layer.bias"),
            Some(Renamed::Same(
                "time_text_embed.guidance_embedder.linear_2.bias".into()
            ))
        );
        // A name the original does not have, or a module's prefix alone, goes nowhere.
        assert_eq!(rename("double_blocks.0.img_attn.qkvx.weight"), None);
        assert_eq!(rename("single_blocks.0.norm.query_norm.weight"), None);
        assert_eq!(rename("final_layer.linearity.weight"), None);
        // Every module listed renames, once each.
        let all = modules(2, 3);
        assert_eq!(all.len(), 10 + 2 * 10 + 3 * 3);
        for m in &all {
            assert!(rename(&format!("{m}.weight")).is_some(), "{m}");
        }
    }
}
