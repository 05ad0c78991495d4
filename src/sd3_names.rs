//! The original SD 3 MMDiT's tensor names (StabilityAI's) in diffusers' terms: what a
//! single-file SD 3 checkpoint's `model.diffusion_model.*` tensors are called
//! (`crate::single_file`), and what kohya's SD 3 LoRA files name their modules after
//! (`crate::weights::lora`). The original fuses each attention's q/k/v into one `qkv`
//! projection, and its final adaLN projections (the last block's context side and the
//! output layer's) yield shift before scale, where diffusers' `AdaLayerNormContinuous` takes
//! scale first.

use crate::ldm::{Renamed, index};

/// The original's modules outside the joint blocks, and their diffusers names.
const TOP: &[(&str, &str)] = &[
    ("x_embedder.proj", "pos_embed.proj"),
    (
        "t_embedder.mlp.0",
        "time_text_embed.timestep_embedder.linear_1",
    ),
    (
        "t_embedder.mlp.2",
        "time_text_embed.timestep_embedder.linear_2",
    ),
    ("y_embedder.mlp.0", "time_text_embed.text_embedder.linear_1"),
    ("y_embedder.mlp.2", "time_text_embed.text_embedder.linear_2"),
    ("context_embedder", "context_embedder"),
    ("final_layer.linear", "proj_out"),
];

/// The output layer's adaLN projection (its halves swapped).
const FINAL_ADA_LN: (&str, &str) = ("final_layer.adaLN_modulation.1", "norm_out.linear");

/// A joint block's fused projections, and the three each is cut into.
const FUSED: &[(&str, [&str; 3])] = &[
    ("x_block.attn.qkv", ["attn.to_q", "attn.to_k", "attn.to_v"]),
    (
        "context_block.attn.qkv",
        ["attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj"],
    ),
    (
        "x_block.attn2.qkv",
        ["attn2.to_q", "attn2.to_k", "attn2.to_v"],
    ),
];

/// A joint block's context adaLN projection (its halves swapped in the last block, which
/// keeps only the context's shift and scale).
const CONTEXT_ADA_LN: (&str, &str) = ("context_block.adaLN_modulation.1", "norm1_context.linear");

/// A joint block's other modules, and their diffusers names.
const BLOCK: &[(&str, &str)] = &[
    ("x_block.attn.ln_q", "attn.norm_q"),
    ("x_block.attn.ln_k", "attn.norm_k"),
    ("context_block.attn.ln_q", "attn.norm_added_q"),
    ("context_block.attn.ln_k", "attn.norm_added_k"),
    ("x_block.attn.proj", "attn.to_out.0"),
    ("context_block.attn.proj", "attn.to_add_out"),
    ("x_block.attn2.ln_q", "attn2.norm_q"),
    ("x_block.attn2.ln_k", "attn2.norm_k"),
    ("x_block.attn2.proj", "attn2.to_out.0"),
    ("x_block.adaLN_modulation.1", "norm1.linear"),
    ("x_block.mlp.fc1", "ff.net.0.proj"),
    ("x_block.mlp.fc2", "ff.net.2"),
    ("context_block.mlp.fc1", "ff_context.net.0.proj"),
    ("context_block.mlp.fc2", "ff_context.net.2"),
];

/// The first parts of the original's module paths: what tells an SD 3 module from a UNet's.
pub const ROOTS: &[&str] = &[
    "joint_blocks",
    "x_embedder",
    "t_embedder",
    "y_embedder",
    "context_embedder",
    "final_layer",
];

/// Where the original tensor `rest` (after `model.diffusion_model.`) goes, in a transformer
/// of `blocks` joint blocks; `None` for a name the original does not have.
pub fn rename(rest: &str, blocks: usize) -> Option<Renamed> {
    if rest == "pos_embed" {
        return Some(Renamed::Same("pos_embed.pos_embed".into()));
    }
    // `module.kind` (`kind` the tensor: weight, bias) with `module` found in `table`.
    let in_table = |name: &str, table: &[(&str, &str)]| {
        table.iter().find_map(|(original, renamed)| {
            let kind = name.strip_prefix(original)?.strip_prefix('.')?;
            Some(format!("{renamed}.{kind}"))
        })
    };
    if let Some(name) = in_table(rest, &[FINAL_ADA_LN]) {
        return Some(Renamed::HalvesSwapped(name));
    }
    if let Some(name) = in_table(rest, TOP) {
        return Some(Renamed::Same(name));
    }
    let (i, t) = index(rest.strip_prefix("joint_blocks.")?)?;
    let block = format!("transformer_blocks.{i}");
    if let Some((kind, names)) = FUSED
        .iter()
        .find_map(|(fused, names)| Some((t.strip_prefix(fused)?.strip_prefix('.')?, names)))
    {
        return Some(Renamed::Fused(
            names
                .iter()
                .map(|n| (format!("{block}.{n}.{kind}"), 1))
                .collect(),
        ));
    }
    if let Some(name) = in_table(t, &[CONTEXT_ADA_LN]) {
        let name = format!("{block}.{name}");
        return Some(match i + 1 == blocks {
            true => Renamed::HalvesSwapped(name),
            false => Renamed::Same(name),
        });
    }
    Some(Renamed::Same(format!("{block}.{}", in_table(t, BLOCK)?)))
}

/// Every module path of the original transformer of `blocks` joint blocks that holds a
/// weight (`joint_blocks.0.x_block.attn.qkv`, ...): what kohya's flattened module names are
/// matched against, since `_` in them stands for `.` and for itself.
pub fn modules(blocks: usize) -> Vec<String> {
    let mut out: Vec<String> = TOP
        .iter()
        .chain(std::iter::once(&FINAL_ADA_LN))
        .map(|(original, _)| original.to_string())
        .collect();
    for i in 0..blocks {
        let in_block = FUSED
            .iter()
            .map(|(original, _)| *original)
            .chain(std::iter::once(CONTEXT_ADA_LN.0))
            .chain(BLOCK.iter().map(|(original, _)| *original));
        out.extend(in_block.map(|m| format!("joint_blocks.{i}.{m}")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fused_and_swapped_tensors_are_named_as_diffusers_loads_them() {
        assert_eq!(
            rename("joint_blocks.1.context_block.attn.qkv.bias", 2),
            Some(Renamed::Fused(vec![
                ("transformer_blocks.1.attn.add_q_proj.bias".into(), 1),
                ("transformer_blocks.1.attn.add_k_proj.bias".into(), 1),
                ("transformer_blocks.1.attn.add_v_proj.bias".into(), 1),
            ]))
        );
        // Only the last block's context adaLN has its halves swapped.
        let context = |i| {
            rename(
                &format!("joint_blocks.{i}.context_block.adaLN_modulation.1.weight"),
                2,
            )
        };
        assert_eq!(
            context(0),
            Some(Renamed::Same(
                "transformer_blocks.0.norm1_context.linear.weight".into()
            ))
        );
        assert_eq!(
            context(1),
            Some(Renamed::HalvesSwapped(
                "transformer_blocks.1.norm1_context.linear.weight".into()
            ))
        );
        assert_eq!(
            rename("final_layer.adaLN_modulation.1.bias", 2),
            Some(Renamed::HalvesSwapped("norm_out.linear.bias".into()))
        );
        // A name the original does not have, or a module's prefix alone, goes nowhere.
        assert_eq!(rename("joint_blocks.0.x_block.attn.qkvx.weight", 2), None);
        assert_eq!(rename("final_layer.linearity.weight", 2), None);
        // Every module with a weight is listed once and renames.
        let all = modules(2);
        assert_eq!(all.len(), 8 + 2 * 18);
        for m in &all {
            assert!(rename(&format!("{m}.weight"), 2).is_some(), "{m}");
        }
    }
}
