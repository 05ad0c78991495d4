//! The original (LDM / SGM) Stable Diffusion UNet's module names in diffusers' terms: what a
//! single-file checkpoint's `model.diffusion_model.*` tensors are called
//! (`crate::single_file`), and what kohya's LoRA files for SDXL name their UNet modules
//! after (`crate::weights::lora`); with what every reader of an original layout's names
//! shares (`Renamed`, `index`, `count_indices`).

/// Where one tensor of an original layout (LDM's UNet, SD 3's MMDiT, FLUX's transformer)
/// goes in diffusers' naming.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Renamed {
    /// One tensor of the same values.
    Same(String),
    /// A fused projection (q/k/v; FLUX's q/k/v and MLP): cut along its first axis into these
    /// tensors, in order, each with rows in proportion to its share.
    Fused(Vec<(String, usize)>),
    /// Its two halves along the first axis in the other order.
    HalvesSwapped(String),
}

/// `rest`'s first dotted part as an index, and what follows it.
pub fn index(rest: &str) -> Option<(usize, &str)> {
    let (head, tail) = rest.split_once('.')?;
    Some((head.parse().ok()?, tail))
}

/// How many numbered modules follow `prefix` among the tensor `names`: indices 0, 1, ... as
/// long as each is there (`transformer_blocks.` over blocks 0 to 23: 24), 0 for none.
pub fn count_indices<'a>(names: impl IntoIterator<Item = &'a str>, prefix: &str) -> usize {
    let indices: std::collections::BTreeSet<usize> = names
        .into_iter()
        .filter_map(|n| n.strip_prefix(prefix))
        .filter_map(|rest| rest.split('.').next()?.parse().ok())
        .collect();
    (0..).take_while(|i| indices.contains(i)).count()
}

/// The LDM UNet's numbering: `input_blocks.i` runs over the down blocks' layers (a ResNet,
/// then its attention where the block has one) and each down block's downsampler;
/// `output_blocks.i` over the up blocks' layers, the last layer of each holding its
/// upsampler.
pub struct UNetNames {
    pub layers_per_block: usize,
}

impl UNetNames {
    /// A dotted tensor name after `model.diffusion_model.` in diffusers' naming.
    pub fn rename(&self, rest: &str) -> Option<String> {
        let per = self.layers_per_block + 1;
        if let Some(r) = rest.strip_prefix("time_embed.") {
            let (i, t) = index(r)?;
            let linear = [(0, "linear_1"), (2, "linear_2")]
                .iter()
                .find(|(k, _)| *k == i)?
                .1;
            return Some(format!("time_embedding.{linear}.{t}"));
        }
        if let Some(t) = rest.strip_prefix("out.0.") {
            return Some(format!("conv_norm_out.{t}"));
        }
        if let Some(t) = rest.strip_prefix("out.2.") {
            return Some(format!("conv_out.{t}"));
        }
        // SDXL's size conditioning.
        if let Some(t) = rest.strip_prefix("label_emb.0.0.") {
            return Some(format!("add_embedding.linear_1.{t}"));
        }
        if let Some(t) = rest.strip_prefix("label_emb.0.2.") {
            return Some(format!("add_embedding.linear_2.{t}"));
        }
        if let Some(t) = rest.strip_prefix("input_blocks.0.0.") {
            return Some(format!("conv_in.{t}"));
        }
        if let Some(r) = rest.strip_prefix("input_blocks.") {
            let (i, r) = index(r)?;
            let (j, t) = index(r)?;
            let i = i.checked_sub(1)?;
            let (block, layer) = (i / per, i % per);
            let at = format!("down_blocks.{block}");
            return match (layer == self.layers_per_block, j) {
                (true, 0) => Some(format!(
                    "{at}.downsamplers.0.conv.{}",
                    t.strip_prefix("op.")?
                )),
                (false, 0) => Some(format!("{at}.resnets.{layer}.{}", resnet_name(t)?)),
                (false, 1) => Some(format!("{at}.attentions.{layer}.{t}")),
                _ => None,
            };
        }
        if let Some(r) = rest.strip_prefix("middle_block.") {
            let (j, t) = index(r)?;
            return match j {
                0 | 2 => Some(format!("mid_block.resnets.{}.{}", j / 2, resnet_name(t)?)),
                1 => Some(format!("mid_block.attentions.0.{t}")),
                _ => None,
            };
        }
        if let Some(r) = rest.strip_prefix("output_blocks.") {
            let (i, r) = index(r)?;
            let (j, t) = index(r)?;
            let (block, layer) = (i / per, i % per);
            let at = format!("up_blocks.{block}");
            if j == 0 {
                return Some(format!("{at}.resnets.{layer}.{}", resnet_name(t)?));
            }
            if let Some(conv) = t.strip_prefix("conv.") {
                return (layer == self.layers_per_block)
                    .then(|| format!("{at}.upsamplers.0.conv.{conv}"));
            }
            return (j == 1).then(|| format!("{at}.attentions.{layer}.{t}"));
        }
        None
    }
}

/// A ResNet block's inner names, LDM to diffusers.
fn resnet_name(t: &str) -> Option<String> {
    const NAMES: &[(&str, &str)] = &[
        ("in_layers.0.", "norm1."),
        ("in_layers.2.", "conv1."),
        ("emb_layers.1.", "time_emb_proj."),
        ("out_layers.0.", "norm2."),
        ("out_layers.3.", "conv2."),
        ("skip_connection.", "conv_shortcut."),
    ];
    NAMES
        .iter()
        .find_map(|(ldm, ours)| t.strip_prefix(ldm).map(|p| format!("{ours}{p}")))
}

/// A kohya-style flattened module path of the original UNet
/// (`input_blocks_4_1_transformer_blocks_0_attn1_to_q`, as SDXL LoRAs name them) as the
/// flattened diffusers path (`down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q`);
/// `None` for a path of another shape.
pub fn flat_unet_module(flat: &str, layers_per_block: usize) -> Option<String> {
    let number = |s: &str| -> Option<(usize, String)> {
        let (head, tail) = s.split_once('_')?;
        Some((head.parse().ok()?, tail.to_string()))
    };
    let (head, tail) = if let Some(r) = flat.strip_prefix("input_blocks_") {
        let (i, r) = number(r)?;
        let (j, tail) = number(&r)?;
        (format!("input_blocks.{i}.{j}."), tail)
    } else if let Some(r) = flat.strip_prefix("output_blocks_") {
        let (i, r) = number(r)?;
        let (j, tail) = number(&r)?;
        (format!("output_blocks.{i}.{j}."), tail)
    } else if let Some(r) = flat.strip_prefix("middle_block_") {
        let (j, tail) = number(r)?;
        (format!("middle_block.{j}."), tail)
    } else {
        return None;
    };
    // A ResNet's inner modules carry their own indices; attention ones keep their names.
    const RESNET: &[(&str, &str)] = &[
        ("in_layers_0", "in_layers.0"),
        ("in_layers_2", "in_layers.2"),
        ("emb_layers_1", "emb_layers.1"),
        ("out_layers_0", "out_layers.0"),
        ("out_layers_3", "out_layers.3"),
    ];
    let tail = RESNET
        .iter()
        .find(|(f, _)| tail == *f)
        .map_or(tail.clone(), |(_, dotted)| dotted.to_string());
    let names = UNetNames { layers_per_block };
    let renamed = names.rename(&format!("{head}{tail}.weight"))?;
    Some(renamed.strip_suffix(".weight")?.replace('.', "_"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sdxl_kohya_module_names_map_to_diffusers_ones() {
        let cases = [
            (
                "input_blocks_4_1_transformer_blocks_0_attn1_to_q",
                "down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q",
            ),
            (
                "input_blocks_7_0_in_layers_2",
                "down_blocks_2_resnets_0_conv1",
            ),
            ("input_blocks_3_0_op", "down_blocks_0_downsamplers_0_conv"),
            ("middle_block_1_proj_in", "mid_block_attentions_0_proj_in"),
            (
                "middle_block_2_emb_layers_1",
                "mid_block_resnets_1_time_emb_proj",
            ),
            ("output_blocks_2_2_conv", "up_blocks_0_upsamplers_0_conv"),
            (
                "output_blocks_5_0_skip_connection",
                "up_blocks_1_resnets_2_conv_shortcut",
            ),
            (
                "output_blocks_3_1_transformer_blocks_1_ff_net_0_proj",
                "up_blocks_1_attentions_0_transformer_blocks_1_ff_net_0_proj",
            ),
        ];
        for (kohya, diffusers) in cases {
            assert_eq!(
                flat_unet_module(kohya, 2).as_deref(),
                Some(diffusers),
                "{kohya}"
            );
        }
        assert_eq!(flat_unet_module("down_blocks_0_resnets_0_conv1", 2), None);
    }
}
