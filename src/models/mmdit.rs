//! diffusers' `SD3Transformer2DModel`: the multimodal diffusion transformer (MMDiT) of SD 3
//! and 3.5, a rectified-flow model that predicts a velocity.
//!
//! The latents are cut into patches, which become tokens with a position embedding cropped
//! from a larger table. Two streams, image tokens and text tokens, each keep their own
//! weights but attend together in every block: their queries, keys and values are
//! concatenated into one attention (joint attention), then split again. The timestep and the
//! pooled text embedding condition every block through adaptive layer norms whose shift,
//! scale and gate come from that embedding (adaLN-Zero). SD 3.5 adds a per-head RMS norm of
//! queries and keys (`qk_norm`), and in 3.5 medium's first blocks a second, image-only
//! attention (`dual_attention_layers`). The last block updates only the image stream.

use burn::tensor::activation::silu;
use burn::tensor::{Tensor, TensorData};
use serde::Deserialize;

use super::attention_control::{
    AttentionRecord, ControlState, CrossAttentionControl, controlled_joint_attention,
};
use super::config::{check_size, parse};
use super::dit::{EPS, FeedForward, Modulation, Spec, StreamQkv, modulate};
use crate::error::{Error, Result};
use crate::nn::{Conv2d, LayerNorm, Linear, multi_head_attention, sinusoid, to_tokens};
use crate::weights::{Scope, Weights};

pub const CONFIG_FILE: &str = "transformer/config.json";

/// The text tokens T5-XXL contributes to SD 3's context (diffusers' default
/// `max_sequence_length`): zeros where the model runs without T5.
pub const T5_TOKENS: usize = 256;
/// The sinusoid width of the timestep embedding (fixed in SD 3's model).
const TIMESTEP_FEATURES: usize = 256;

#[derive(Debug, Clone, Deserialize)]
pub struct MmditConfig {
    #[serde(rename = "_class_name", default)]
    pub class_name: Option<String>,
    #[serde(default = "d_sample_size")]
    pub sample_size: usize,
    #[serde(default = "d_patch")]
    pub patch_size: usize,
    #[serde(default = "d_channels")]
    pub in_channels: usize,
    #[serde(default = "d_layers")]
    pub num_layers: usize,
    #[serde(default = "d_head_dim")]
    pub attention_head_dim: usize,
    #[serde(default = "d_layers")]
    pub num_attention_heads: usize,
    #[serde(default = "d_joint")]
    pub joint_attention_dim: usize,
    #[serde(default = "d_caption")]
    pub caption_projection_dim: usize,
    #[serde(default = "d_pooled")]
    pub pooled_projection_dim: usize,
    #[serde(default)]
    pub out_channels: Option<usize>,
    #[serde(default = "d_pos_max")]
    pub pos_embed_max_size: usize,
    #[serde(default)]
    pub dual_attention_layers: Vec<usize>,
    #[serde(default)]
    pub qk_norm: Option<String>,
}

fn d_sample_size() -> usize {
    128
}
fn d_patch() -> usize {
    2
}
fn d_channels() -> usize {
    16
}
fn d_layers() -> usize {
    18
}
fn d_head_dim() -> usize {
    64
}
fn d_joint() -> usize {
    4096
}
fn d_caption() -> usize {
    1152
}
fn d_pooled() -> usize {
    2048
}
fn d_pos_max() -> usize {
    96
}

impl MmditConfig {
    pub fn from_json(json: &str) -> Result<Self> {
        let c: Self = parse(CONFIG_FILE, json)?;
        let f = CONFIG_FILE;
        let bad = |m: String| Err(Error::config(f, m));
        if let Some(class) = c.class_name.as_deref()
            && class != "SD3Transformer2DModel"
        {
            return bad(format!(
                "_class_name: {class:?} is not a transformer this runtime has (SD3Transformer2DModel)"
            ));
        }
        for (field, value, max) in [
            ("patch_size", c.patch_size, 16),
            ("in_channels", c.in_channels, 256),
            ("num_layers", c.num_layers, 256),
            ("attention_head_dim", c.attention_head_dim, 1024),
            ("num_attention_heads", c.num_attention_heads, 256),
            ("joint_attention_dim", c.joint_attention_dim, 1 << 16),
            ("pooled_projection_dim", c.pooled_projection_dim, 1 << 16),
            ("pos_embed_max_size", c.pos_embed_max_size, 1024),
            ("sample_size", c.sample_size, 4096),
        ] {
            check_size(f, field, value, max)?;
        }
        check_size(f, "out_channels", c.out_channels(), 256)?;
        if c.caption_projection_dim != c.inner_dim() {
            return bad(format!(
                "caption_projection_dim {} differs from num_attention_heads x attention_head_dim {}: the text stream would not fit the blocks",
                c.caption_projection_dim,
                c.inner_dim()
            ));
        }
        if let Some(norm) = c.qk_norm.as_deref()
            && norm != "rms_norm"
        {
            return bad(format!(
                "qk_norm: {norm:?} is not supported (\"rms_norm\", as SD 3.5's, or none)"
            ));
        }
        if let Some(&i) = c.dual_attention_layers.iter().find(|&&i| i >= c.num_layers) {
            return bad(format!(
                "dual_attention_layers names block {i}, but there are {} blocks",
                c.num_layers
            ));
        }
        Ok(c)
    }

    /// The width of both streams inside the blocks.
    pub fn inner_dim(&self) -> usize {
        self.num_attention_heads * self.attention_head_dim
    }

    pub fn out_channels(&self) -> usize {
        self.out_channels.unwrap_or(self.in_channels)
    }

    /// Image tokens for `h` x `w` latents: one per patch.
    pub fn image_tokens(&self, h: usize, w: usize) -> usize {
        (h / self.patch_size) * (w / self.patch_size)
    }
}

/// Joint attention: both streams' tokens attend to all tokens, image first, then text.
struct JointAttention {
    image: StreamQkv,
    text: StreamQkv,
    image_out: Linear,
    /// Absent in the last block, whose text output is not used.
    text_out: Option<Linear>,
}

impl JointAttention {
    fn load(w: &Scope, dim: usize, last: bool, s: &Spec) -> Result<Self> {
        Ok(Self {
            image: StreamQkv::load(w, ["to_q", "to_k", "to_v"], ("norm_q", "norm_k"), dim, s)?,
            text: StreamQkv::load(
                w,
                ["add_q_proj", "add_k_proj", "add_v_proj"],
                ("norm_added_q", "norm_added_k"),
                dim,
                s,
            )?,
            image_out: Linear::load(&w.at("to_out.0"), dim, dim, true)?,
            text_out: (!last)
                .then(|| Linear::load(&w.at("to_add_out"), dim, dim, true))
                .transpose()?,
        })
    }

    /// The image stream's output and, but in the last block, the text stream's; the image
    /// tokens lie on a `grid` of patches.
    fn forward(
        &self,
        image: Tensor<3>,
        text: Tensor<3>,
        heads: usize,
        grid: [usize; 2],
        control: &mut ControlState,
    ) -> (Tensor<3>, Option<Tensor<3>>) {
        let image_len = image.dims()[1];
        let text_len = text.dims()[1];
        let [q, k, v] = self.image.forward(image, heads);
        let [tq, tk, tv] = self.text.forward(text, heads);
        let joint = |a: Tensor<3>, b: Tensor<3>| Tensor::cat(vec![a, b], 1);
        let (q, k, v) = (joint(q, tq), joint(k, tk), joint(v, tv));
        let kernels = self.image_out.kernels();
        let out = if control.is_active() {
            controlled_joint_attention(q, k, v, heads, grid, image_len, kernels, control)
        } else {
            multi_head_attention(q.into(), k.into(), v.into(), heads, false, kernels)
        };
        let image = self.image_out.forward(out.clone().narrow(1, 0, image_len));
        let text = self
            .text_out
            .as_ref()
            .map(|o| o.forward(out.narrow(1, image_len, text_len)));
        (image, text)
    }
}

/// SD 3.5's second attention in its first blocks: the image tokens among themselves.
struct ImageAttention {
    qkv: StreamQkv,
    out: Linear,
}

impl ImageAttention {
    fn load(w: &Scope, dim: usize, s: &Spec) -> Result<Self> {
        Ok(Self {
            qkv: StreamQkv::load(w, ["to_q", "to_k", "to_v"], ("norm_q", "norm_k"), dim, s)?,
            out: Linear::load(&w.at("to_out.0"), dim, dim, true)?,
        })
    }

    fn forward(&self, x: Tensor<3>, heads: usize) -> Tensor<3> {
        let [q, k, v] = self.qkv.forward(x, heads);
        let kernels = self.out.kernels();
        self.out.forward(multi_head_attention(
            q.into(),
            k.into(),
            v.into(),
            heads,
            false,
            kernels,
        ))
    }
}

/// What every block of one call shares.
struct Call<'a> {
    /// SiLU of the timestep and pooled-text embedding, which every adaptive norm projects.
    conditioning: &'a Tensor<2>,
    /// The layer norm without affine of every block (it has no weights of its own).
    norm: &'a LayerNorm,
    heads: usize,
    /// The image tokens' grid of patches.
    grid: [usize; 2],
}

/// diffusers' `JointTransformerBlock`.
struct Block {
    /// 6 parts (shift, scale, gate of the attention; shift, scale, gate of the
    /// feed-forward), 9 with the second attention (its shift, scale, gate last).
    image_modulation: Modulation,
    /// 6 parts as the image's; in the last block 2 (scale, shift: a plain adaptive norm).
    text_modulation: Modulation,
    attn: JointAttention,
    attn2: Option<ImageAttention>,
    ff: FeedForward,
    ff_text: Option<FeedForward>,
}

impl Block {
    fn load(w: &Scope, dim: usize, last: bool, dual: bool, s: &Spec) -> Result<Self> {
        Ok(Self {
            image_modulation: Modulation::load(&w.at("norm1"), dim, if dual { 9 } else { 6 })?,
            text_modulation: Modulation::load(
                &w.at("norm1_context"),
                dim,
                if last { 2 } else { 6 },
            )?,
            attn: JointAttention::load(&w.at("attn"), dim, last, s)?,
            attn2: dual
                .then(|| ImageAttention::load(&w.at("attn2"), dim, s))
                .transpose()?,
            ff: FeedForward::load(&w.at("ff"), dim)?,
            ff_text: (!last)
                .then(|| FeedForward::load(&w.at("ff_context"), dim))
                .transpose()?,
        })
    }

    /// Both streams through the block; the text stream is `None` after the last block.
    fn forward(
        &self,
        image: Tensor<3>,
        text: Tensor<3>,
        call: &Call,
        control: &mut ControlState,
    ) -> (Tensor<3>, Option<Tensor<3>>) {
        let (norm, heads) = (call.norm, call.heads);
        let m = self.image_modulation.parts(call.conditioning);
        let normed = norm.forward(image.clone());
        let image_in = modulate(normed.clone(), &m[0], &m[1]);
        let t = self.text_modulation.parts(call.conditioning);
        let text_normed = norm.forward(text.clone());
        let text_in = match t.len() {
            // The last block's plain adaptive norm: scale first, then shift.
            2 => modulate(text_normed, &t[1], &t[0]),
            _ => modulate(text_normed, &t[0], &t[1]),
        };

        let (attended, text_attended) = self
            .attn
            .forward(image_in, text_in, heads, call.grid, control);
        let mut image = image + attended * m[2].clone();
        if let Some(attn2) = &self.attn2 {
            let second = attn2.forward(modulate(normed, &m[6], &m[7]), heads);
            image = image + second * m[8].clone();
        }
        let ff_in = modulate(norm.forward(image.clone()), &m[3], &m[4]);
        let image = image.clone() + self.ff.forward(ff_in) * m[5].clone();

        let text = match (text_attended, &self.ff_text) {
            (Some(attended), Some(ff)) => {
                let text = text + attended * t[2].clone();
                let ff_in = modulate(norm.forward(text.clone()), &t[3], &t[4]);
                Some(text.clone() + ff.forward(ff_in) * t[5].clone())
            }
            _ => None,
        };
        (image, text)
    }
}

/// A loaded SD 3.x transformer.
pub struct Mmdit {
    config: MmditConfig,
    patch_embed: Conv2d,
    /// [max * max, dim]: sinusoidal position embeddings over the largest grid, of which each
    /// image takes its centred crop; in blocks of whole rows where the table is larger than
    /// one buffer of the adapter (SD 3.5 medium's is 906 MiB in f32).
    pos_embed: Vec<Tensor<2>>,
    time_1: Linear,
    time_2: Linear,
    pooled_1: Linear,
    pooled_2: Linear,
    context_embedder: Linear,
    blocks: Vec<Block>,
    /// Every layer norm of the model: none learns a scale or shift.
    norm: LayerNorm,
    /// The final adaptive norm: 2 parts, scale then shift.
    norm_out: Modulation,
    proj_out: Linear,
    device: burn::tensor::Device,
}

impl Mmdit {
    pub fn load(config: MmditConfig, weights: &Weights) -> Result<Self> {
        let w = weights.root();
        let dim = config.inner_dim();
        let p = config.patch_size;
        let max = config.pos_embed_max_size;
        let spec = Spec {
            heads: config.num_attention_heads,
            qk_norm: config.qk_norm.is_some(),
        };
        let time = w.at("time_text_embed");
        let blocks = (0..config.num_layers)
            .map(|i| {
                let last = i + 1 == config.num_layers;
                let dual = config.dual_attention_layers.contains(&i);
                Block::load(&w.at("transformer_blocks").at(i), dim, last, dual, &spec)
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            patch_embed: Conv2d::load(&w.at("pos_embed.proj"), config.in_channels, dim, p, p, 0)?,
            pos_embed: w.row_blocks("pos_embed.pos_embed", [max * max, dim])?,
            time_1: Linear::load(
                &time.at("timestep_embedder.linear_1"),
                TIMESTEP_FEATURES,
                dim,
                true,
            )?,
            time_2: Linear::load(&time.at("timestep_embedder.linear_2"), dim, dim, true)?,
            pooled_1: Linear::load(
                &time.at("text_embedder.linear_1"),
                config.pooled_projection_dim,
                dim,
                true,
            )?,
            pooled_2: Linear::load(&time.at("text_embedder.linear_2"), dim, dim, true)?,
            context_embedder: Linear::load(
                &w.at("context_embedder"),
                config.joint_attention_dim,
                dim,
                true,
            )?,
            blocks,
            norm: LayerNorm::without_affine(&w, dim, EPS),
            norm_out: Modulation::load(&w.at("norm_out"), dim, 2)?,
            proj_out: Linear::load(&w.at("proj_out"), dim, p * p * config.out_channels(), true)?,
            device: weights.device().clone(),
            config,
        })
    }

    pub fn config(&self) -> &MmditConfig {
        &self.config
    }

    /// Whether latents of `h` x `w` fit: whole patches, within the position table.
    pub fn check_latent_size(&self, h: usize, w: usize) -> Result<()> {
        let (p, max) = (self.config.patch_size, self.config.pos_embed_max_size);
        if !h.is_multiple_of(p) || !w.is_multiple_of(p) {
            return Err(Error::InvalidInput(format!(
                "latents of {h}x{w} do not divide into this transformer's {p}x{p} patches"
            )));
        }
        if h / p > max || w / p > max {
            return Err(Error::InvalidInput(format!(
                "latents of {h}x{w} are {}x{} patches, more than this transformer's position table of {max}x{max}",
                h / p,
                w / p
            )));
        }
        Ok(())
    }

    /// Predicts the velocity for latents `x` [B, C, H, W] at `timestep` (sigma x 1000),
    /// conditioned on `context` [B, L, joint_attention_dim] and `pooled` [B, pooled dim].
    pub fn forward(
        &self,
        x: Tensor<4>,
        timestep: f64,
        context: &Tensor<3>,
        pooled: &Tensor<2>,
    ) -> Tensor<4> {
        let none = CrossAttentionControl::default();
        self.forward_controlled(x, timestep, context, pooled, &none, 0)
            .0
    }

    /// [`forward`](Self::forward) with its joint attention under `control`, which acts on
    /// batch row `row`: the image tokens' attention to the text tokens is biased and recorded
    /// as the UNet's cross-attention is.
    pub fn forward_controlled(
        &self,
        x: Tensor<4>,
        timestep: f64,
        context: &Tensor<3>,
        pooled: &Tensor<2>,
        control: &CrossAttentionControl,
        row: usize,
    ) -> (Tensor<4>, Option<AttentionRecord>) {
        self.run(x, timestep, context, pooled, (control, row), &[])
    }

    /// [`forward`](Self::forward) with the joint blocks `skip` (their indices) passed over:
    /// both streams go on as they came in, as diffusers' `skip_layers` does (skip-layer
    /// guidance).
    pub fn forward_skipping(
        &self,
        x: Tensor<4>,
        timestep: f64,
        context: &Tensor<3>,
        pooled: &Tensor<2>,
        skip: &[usize],
    ) -> Tensor<4> {
        let none = CrossAttentionControl::default();
        self.run(x, timestep, context, pooled, (&none, 0), skip).0
    }

    /// How many joint blocks the transformer has.
    pub fn blocks(&self) -> usize {
        self.blocks.len()
    }

    /// The call under `control` (acting on batch row `row`), with the joint blocks `skip`
    /// passed over.
    fn run(
        &self,
        x: Tensor<4>,
        timestep: f64,
        context: &Tensor<3>,
        pooled: &Tensor<2>,
        (control, row): (&CrossAttentionControl, usize),
        skip: &[usize],
    ) -> (Tensor<4>, Option<AttentionRecord>) {
        let [b, _, h, w] = x.dims();
        let p = self.config.patch_size;
        let (gh, gw) = (h / p, w / p);
        let mut control = ControlState::new(control, row, [h, w]);

        let image = to_tokens(self.patch_embed.forward(x)) + self.position_embedding(gh, gw);
        let features: Vec<f32> = sinusoid(timestep, TIMESTEP_FEATURES, true, 0.0);
        let features = Tensor::<2>::from_data(
            TensorData::new(features, [1, TIMESTEP_FEATURES]),
            &self.device,
        )
        .cast(image.dtype())
        .repeat_dim(0, b);
        let temb = self.time_2.forward(silu(self.time_1.forward(features)))
            + self
                .pooled_2
                .forward(silu(self.pooled_1.forward(pooled.clone())));
        // Every adaptive norm projects SiLU of the embedding: taken once here.
        let conditioning = silu(temb);

        let call = Call {
            conditioning: &conditioning,
            norm: &self.norm,
            heads: self.config.num_attention_heads,
            grid: [gh, gw],
        };
        let mut image = image;
        let mut text = Some(self.context_embedder.forward(context.clone()));
        for (i, block) in self.blocks.iter().enumerate() {
            if skip.contains(&i) {
                continue;
            }
            let t = text
                .take()
                .expect("only the last block drops the text stream");
            (image, text) = block.forward(image, t, &call, &mut control);
        }
        let out = self.norm_out.parts(&conditioning);
        let image = modulate(self.norm.forward(image), &out[1], &out[0]);
        let patches = self.proj_out.forward(image);
        let c = self.config.out_channels();
        let latents = patches
            .reshape([b, gh, gw, p, p, c])
            .permute([0, 5, 1, 3, 2, 4])
            .reshape([b, c, gh * p, gw * p]);
        (latents, control.finish())
    }

    /// The centred `gh` x `gw` crop of the position table, [1, gh * gw, dim].
    fn position_embedding(&self, gh: usize, gw: usize) -> Tensor<3> {
        let crop = centred_crop(&self.pos_embed, self.config.pos_embed_max_size, gh, gw);
        let dim = crop.dims()[1];
        crop.reshape([1, gh * gw, dim])
    }
}

/// The centred `gh` x `gw` crop, [gh * gw, dim], of a `max` x `max` grid of rows held in
/// consecutive row blocks.
fn centred_crop(blocks: &[Tensor<2>], max: usize, gh: usize, gw: usize) -> Tensor<2> {
    let (top, left) = ((max - gh) / 2, (max - gw) / 2);
    if let [table] = blocks {
        let dim = table.dims()[1];
        return table
            .clone()
            .reshape([max, max, dim])
            .slice([top..top + gh, left..left + gw, 0..dim])
            .reshape([gh * gw, dim]);
    }
    // Each grid row's `gw` cells are consecutive table rows, which may straddle two blocks.
    let mut pieces = Vec::new();
    for r in top..top + gh {
        let (mut start, mut wanted) = (r * max + left, gw);
        let mut first = 0;
        for block in blocks {
            let rows = block.dims()[0];
            if wanted > 0 && start < first + rows {
                let take = wanted.min(first + rows - start);
                pieces.push(block.clone().narrow(0, start - first, take));
                start += take;
                wanted -= take;
            }
            first += rows;
        }
    }
    Tensor::cat(pieces, 0)
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;
    use burn::tensor::Distribution;

    /// A table in row blocks (here of 7 rows, so that grid rows straddle blocks) gives the
    /// crop the whole table gives.
    #[test]
    fn the_position_crop_from_row_blocks_equals_the_whole_tables() {
        let device = crate::device::cpu();
        let (max, dim) = (6, 3);
        let table = Tensor::<2>::random([max * max, dim], Distribution::Normal(0.0, 1.0), &device);
        let blocks: Vec<Tensor<2>> = (0..max * max)
            .step_by(7)
            .map(|s| table.clone().narrow(0, s, 7.min(max * max - s)))
            .collect();
        for (gh, gw) in [(6, 6), (4, 2), (3, 5), (1, 1)] {
            let whole = centred_crop(std::slice::from_ref(&table), max, gh, gw);
            let split = centred_crop(&blocks, max, gh, gw);
            assert_eq!(max_diff(whole, split), 0.0, "{gh}x{gw}");
        }
    }

    /// The largest absolute difference between two tensors.
    fn max_diff<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> f32 {
        (a - b).abs().max().into_data().try_to_vec::<f32>().unwrap()[0]
    }
}
