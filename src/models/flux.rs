//! diffusers' `FluxTransformer2DModel`: the rectified-flow transformer of FLUX.1 (dev,
//! schnell), which predicts a velocity as SD 3's MMDiT does.
//!
//! The pipeline packs each 2x2 patch of latents into one token of 4 x 16 channels; the
//! model here takes latents unpacked, [B, C, H, W], and packs and unpacks them itself, so the
//! sampler treats it as any other denoiser. Positions enter as rotary embeddings of three
//! axes (a constant, the patch's row, its column) in each head's queries and keys; the text
//! tokens' positions are all zero, so their rotation is the identity. The first blocks are
//! double-stream (image and text keep their own weights and attend jointly, as in the MMDiT,
//! with RMS-normed queries and keys); the rest single-stream: one sequence of image and text
//! tokens whose attention and 4x-wide MLP run in parallel from one adaptive norm and meet in
//! one output projection. The timestep, the pooled CLIP text and, in the guidance-distilled
//! dev model, the guidance scale are embedded and summed into the adaLN conditioning.
//!
//! Joint sequences here put the image tokens first and the text tokens after them (diffusers
//! puts text first). Attention does not depend on the order of its tokens, and this order is
//! the one LINA's attention control reads, as in the MMDiT.

use burn::tensor::activation::{gelu_approximate, silu};
use burn::tensor::{Tensor, TensorData};
use serde::Deserialize;

use super::attention_control::{
    AttentionRecord, ControlState, CrossAttentionControl, controlled_joint_attention,
};
use super::config::{check_size, parse};
use super::dit::{EPS, FeedForward, Modulation, QkNorm, Spec, StreamQkv, modulate};
use crate::error::{Error, Result};
use crate::kernels::Kernels;
use crate::nn::{LayerNorm, Linear, multi_head_attention, sinusoid};
use crate::weights::{Scope, Weights};

pub const CONFIG_FILE: &str = "transformer/config.json";
/// The `_class_name` of its config, which tells a FLUX folder from an SD 3 one.
pub const CLASS_NAME: &str = "FluxTransformer2DModel";
/// The T5 tokens of FLUX's context (diffusers' `FluxPipeline` default
/// `max_sequence_length`).
pub const T5_TOKENS: usize = 512;
/// The sinusoid width of the timestep and guidance embeddings (fixed in FLUX's model).
const TIMESTEP_FEATURES: usize = 256;
/// The rotary embedding's base period.
const ROPE_THETA: f64 = 10_000.0;
/// Latent cells per token side: the pipeline's 2x2 packing.
const PACK: usize = 2;

#[derive(Debug, Clone, Deserialize)]
pub struct FluxConfig {
    #[serde(rename = "_class_name", default)]
    pub class_name: Option<String>,
    /// Always 1 in FLUX: the 2x2 patches are packed by the pipeline, not the model.
    #[serde(default = "d_patch")]
    pub patch_size: usize,
    /// Packed channels: 4 x the VAE's latent channels.
    #[serde(default = "d_channels")]
    pub in_channels: usize,
    #[serde(default)]
    pub out_channels: Option<usize>,
    #[serde(default = "d_layers")]
    pub num_layers: usize,
    #[serde(default = "d_single")]
    pub num_single_layers: usize,
    #[serde(default = "d_head_dim")]
    pub attention_head_dim: usize,
    #[serde(default = "d_heads")]
    pub num_attention_heads: usize,
    #[serde(default = "d_joint")]
    pub joint_attention_dim: usize,
    #[serde(default = "d_pooled")]
    pub pooled_projection_dim: usize,
    /// Whether it embeds the guidance scale (FLUX.1-dev) rather than needing none (schnell).
    #[serde(default)]
    pub guidance_embeds: bool,
    #[serde(default = "d_axes")]
    pub axes_dims_rope: Vec<usize>,
    /// The latent side it was trained at. FLUX's config has none; diffusers' pipeline
    /// defaults to 128 (1024 px).
    #[serde(default = "d_sample_size")]
    pub sample_size: usize,
}

fn d_patch() -> usize {
    1
}
fn d_channels() -> usize {
    64
}
fn d_layers() -> usize {
    19
}
fn d_single() -> usize {
    38
}
fn d_head_dim() -> usize {
    128
}
fn d_heads() -> usize {
    24
}
fn d_joint() -> usize {
    4096
}
fn d_pooled() -> usize {
    768
}
fn d_axes() -> Vec<usize> {
    vec![16, 56, 56]
}
fn d_sample_size() -> usize {
    128
}

impl FluxConfig {
    pub fn from_json(json: &str) -> Result<Self> {
        let c: Self = parse(CONFIG_FILE, json)?;
        let f = CONFIG_FILE;
        let bad = |m: String| Err(Error::config(f, m));
        if let Some(class) = c.class_name.as_deref()
            && class != CLASS_NAME
        {
            return bad(format!(
                "_class_name: {class:?} is not a FLUX transformer ({CLASS_NAME})"
            ));
        }
        for (field, value, max) in [
            ("in_channels", c.in_channels, 1024),
            ("num_layers", c.num_layers, 256),
            ("num_single_layers", c.num_single_layers, 256),
            ("attention_head_dim", c.attention_head_dim, 1024),
            ("num_attention_heads", c.num_attention_heads, 256),
            ("joint_attention_dim", c.joint_attention_dim, 1 << 16),
            ("pooled_projection_dim", c.pooled_projection_dim, 1 << 16),
            ("sample_size", c.sample_size, 4096),
        ] {
            check_size(f, field, value, max)?;
        }
        check_size(f, "out_channels", c.out_channels(), 1024)?;
        if c.patch_size != 1 {
            return bad(format!(
                "patch_size {} is not FLUX's 1 (its pipeline packs 2x2 patches itself)",
                c.patch_size
            ));
        }
        for (field, value) in [
            ("in_channels", c.in_channels),
            ("out_channels", c.out_channels()),
        ] {
            if !value.is_multiple_of(PACK * PACK) {
                return bad(format!(
                    "{field} {value} is not 4 x a latent channel count (2x2 packed patches)"
                ));
            }
        }
        let axes: usize = c.axes_dims_rope.iter().sum();
        if c.axes_dims_rope.is_empty()
            || axes != c.attention_head_dim
            || c.axes_dims_rope.iter().any(|d| d % 2 == 1)
        {
            return bad(format!(
                "axes_dims_rope {:?} must be even widths that sum to attention_head_dim {}",
                c.axes_dims_rope, c.attention_head_dim
            ));
        }
        Ok(c)
    }

    /// The width of the tokens inside the blocks.
    pub fn inner_dim(&self) -> usize {
        self.num_attention_heads * self.attention_head_dim
    }

    pub fn out_channels(&self) -> usize {
        self.out_channels.unwrap_or(self.in_channels)
    }

    /// The channels it takes, unpacked: the VAE's latents and, for Fill, Canny and Depth,
    /// their image condition's ([`ImageCondition`](super::denoiser::ImageCondition)).
    pub fn input_channels(&self) -> usize {
        self.in_channels / (PACK * PACK)
    }

    /// The VAE latent channels it predicts (unpacked).
    pub fn latent_channels(&self) -> usize {
        self.out_channels() / (PACK * PACK)
    }

    /// Image tokens for `h` x `w` latents: one per packed 2x2 patch.
    pub fn image_tokens(&self, h: usize, w: usize) -> usize {
        (h / PACK) * (w / PACK)
    }

    /// The columns of the pipeline's added conditioning (see [`Flux::added_input`]): the
    /// pooled text, then the guidance scale's sinusoid where the model embeds it.
    pub fn added_width(&self) -> usize {
        self.pooled_projection_dim
            + if self.guidance_embeds {
                TIMESTEP_FEATURES
            } else {
                0
            }
    }
}

/// A sinusoid embedding's MLP: `linear_2(silu(linear_1(x)))`.
struct Embedder {
    linear_1: Linear,
    linear_2: Linear,
}

impl Embedder {
    fn load(w: &Scope, d_in: usize, dim: usize) -> Result<Self> {
        Ok(Self {
            linear_1: Linear::load(&w.at("linear_1"), d_in, dim, true)?,
            linear_2: Linear::load(&w.at("linear_2"), dim, dim, true)?,
        })
    }

    fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        self.linear_2.forward(silu(self.linear_1.forward(x)))
    }
}

/// The grids a call's rotation tables are for: the latents' packed patches and any
/// reference image's.
type RotaryGrids = ([usize; 2], Option<[usize; 2]>);

/// Latents [B, C, H, W] as tokens [B, (H/2)(W/2), 4C], one per 2x2 patch, row-major, each
/// patch's channels channel by channel (diffusers' `_pack_latents`).
fn pack(x: Tensor<4>) -> Tensor<3> {
    let [b, c, h, w] = x.dims();
    let (gh, gw) = (h / PACK, w / PACK);
    x.reshape([b, c, gh, PACK, gw, PACK])
        .permute([0, 2, 4, 1, 3, 5])
        .reshape([b, gh * gw, c * PACK * PACK])
}

/// Each image token's rotation: cos and sin per channel of a head, [1, L, 1, D], the pairs
/// of channels (2i, 2i + 1) sharing one angle.
#[derive(Clone)]
struct Rotary {
    cos: Tensor<4>,
    sin: Tensor<4>,
}

impl Rotary {
    /// For the `gh` x `gw` grid of packed patches, row-major: axis 0 is a constant 0, axis 1
    /// the row, axis 2 the column; then for a reference's grid (Kontext's) the same with axis
    /// 0 at 1. Each axis's channels turn at `theta^(-2i / width)` per unit of position
    /// (diffusers' `FluxPosEmbed`, angles in f64 as it computes them).
    fn new(axes: &[usize], grids: RotaryGrids, device: &burn::tensor::Device) -> Self {
        let head_dim: usize = axes.iter().sum();
        let (grid, reference) = grids;
        let images: Vec<(f64, [usize; 2])> = std::iter::once((0.0, grid))
            .chain(reference.map(|r| (1.0, r)))
            .collect();
        let tokens: usize = images.iter().map(|(_, [gh, gw])| gh * gw).sum();
        let (mut cos, mut sin) = (
            Vec::with_capacity(tokens * head_dim),
            Vec::with_capacity(tokens * head_dim),
        );
        let positions = images.iter().flat_map(|&(image, [gh, gw])| {
            (0..gh * gw).map(move |i| [image, (i / gw) as f64, (i % gw) as f64])
        });
        for position in positions {
            for (axis, &width) in axes.iter().enumerate() {
                let at = position.get(axis).copied().unwrap_or(0.0);
                for i in 0..width / 2 {
                    let angle = at * ROPE_THETA.powf(-((2 * i) as f64) / width as f64);
                    let (s, c) = angle.sin_cos();
                    cos.extend([c as f32; 2]);
                    sin.extend([s as f32; 2]);
                }
            }
        }
        let table = |values: Vec<f32>| {
            Tensor::<4>::from_data(TensorData::new(values, [1, tokens, 1, head_dim]), device)
        };
        Self {
            cos: table(cos),
            sin: table(sin),
        }
    }

    /// `x` [B, L, H*D] (image tokens) rotated: each pair (a, b) of a head's channels becomes
    /// (a cos - b sin, b cos + a sin).
    fn apply(&self, x: Tensor<3>, heads: usize) -> Tensor<3> {
        let [b, l, inner] = x.dims();
        let d = inner / heads;
        let x = x.reshape([b, l, heads, d]);
        let pairs = x.clone().reshape([b, l, heads, d / 2, 2]);
        let first = pairs.clone().narrow(4, 0, 1);
        let second = pairs.narrow(4, 1, 1);
        let turned = Tensor::cat(vec![second.neg(), first], 4).reshape([b, l, heads, d]);
        let dtype = x.dtype();
        let (cos, sin) = (self.cos.clone().cast(dtype), self.sin.clone().cast(dtype));
        (x * cos + turned * sin).reshape([b, l, inner])
    }
}

/// What every block of one call shares.
struct Call<'a> {
    /// SiLU of the summed embeddings, which every adaptive norm projects.
    conditioning: &'a Tensor<2>,
    /// The layer norm without affine of every block.
    norm: &'a LayerNorm,
    rotary: &'a Rotary,
    heads: usize,
    /// The image tokens' grid of packed patches.
    grid: [usize; 2],
}

impl Call<'_> {
    /// Attention over `[image; text]` tokens, the image's queries and keys rotated; under
    /// `control` where it acts (its bias and record span the text keys).
    fn attend(
        &self,
        [q, k, v]: [Tensor<3>; 3],
        image_len: usize,
        kernels: Kernels,
        control: &mut ControlState,
    ) -> Tensor<3> {
        let rotate = |x: Tensor<3>| {
            let [_, l, _] = x.dims();
            let image = self
                .rotary
                .apply(x.clone().narrow(1, 0, image_len), self.heads);
            match l > image_len {
                true => Tensor::cat(vec![image, x.narrow(1, image_len, l - image_len)], 1),
                false => image,
            }
        };
        let (q, k) = (rotate(q), rotate(k));
        if control.is_active() {
            controlled_joint_attention(q, k, v, self.heads, self.grid, image_len, kernels, control)
        } else {
            multi_head_attention(q.into(), k.into(), v.into(), self.heads, false, kernels)
        }
    }
}

/// diffusers' `FluxTransformerBlock`: the MMDiT's joint block, with rotary positions.
struct DoubleBlock {
    /// 6 parts each: shift, scale, gate of the attention; shift, scale, gate of the MLP.
    image_modulation: Modulation,
    text_modulation: Modulation,
    image_qkv: StreamQkv,
    text_qkv: StreamQkv,
    image_out: Linear,
    text_out: Linear,
    ff: FeedForward,
    ff_text: FeedForward,
}

impl DoubleBlock {
    fn load(w: &Scope, dim: usize, s: &Spec) -> Result<Self> {
        let attn = w.at("attn");
        Ok(Self {
            image_modulation: Modulation::load(&w.at("norm1"), dim, 6)?,
            text_modulation: Modulation::load(&w.at("norm1_context"), dim, 6)?,
            image_qkv: StreamQkv::load(
                &attn,
                ["to_q", "to_k", "to_v"],
                ("norm_q", "norm_k"),
                dim,
                s,
            )?,
            text_qkv: StreamQkv::load(
                &attn,
                ["add_q_proj", "add_k_proj", "add_v_proj"],
                ("norm_added_q", "norm_added_k"),
                dim,
                s,
            )?,
            image_out: Linear::load(&attn.at("to_out.0"), dim, dim, true)?,
            text_out: Linear::load(&attn.at("to_add_out"), dim, dim, true)?,
            ff: FeedForward::load(&w.at("ff"), dim)?,
            ff_text: FeedForward::load(&w.at("ff_context"), dim)?,
        })
    }

    fn forward(
        &self,
        image: Tensor<3>,
        text: Tensor<3>,
        call: &Call,
        control: &mut ControlState,
    ) -> (Tensor<3>, Tensor<3>) {
        let (norm, heads) = (call.norm, call.heads);
        let m = self.image_modulation.parts(call.conditioning);
        let t = self.text_modulation.parts(call.conditioning);
        let image_in = modulate(norm.forward(image.clone()), &m[0], &m[1]);
        let text_in = modulate(norm.forward(text.clone()), &t[0], &t[1]);
        let [image_len, text_len] = [image.dims()[1], text.dims()[1]];
        let [q, k, v] = self.image_qkv.forward(image_in, heads);
        let [tq, tk, tv] = self.text_qkv.forward(text_in, heads);
        let joint = |a: Tensor<3>, b: Tensor<3>| Tensor::cat(vec![a, b], 1);
        let qkv = [joint(q, tq), joint(k, tk), joint(v, tv)];
        let out = call.attend(qkv, image_len, self.image_out.kernels(), control);

        let attended = self.image_out.forward(out.clone().narrow(1, 0, image_len));
        let image = image + attended * m[2].clone();
        let ff_in = modulate(norm.forward(image.clone()), &m[3], &m[4]);
        let image = image.clone() + self.ff.forward(ff_in) * m[5].clone();

        let attended = self.text_out.forward(out.narrow(1, image_len, text_len));
        let text = text + attended * t[2].clone();
        let ff_in = modulate(norm.forward(text.clone()), &t[3], &t[4]);
        let text = text.clone() + self.ff_text.forward(ff_in) * t[5].clone();
        (image, text)
    }
}

/// diffusers' `FluxSingleTransformerBlock`: one stream of image and text tokens; attention
/// and a 4x-wide GELU MLP in parallel from one adaptive norm, their outputs side by side
/// through one projection.
struct SingleBlock {
    /// 3 parts: shift, scale, gate.
    modulation: Modulation,
    /// q, k, v and the MLP's widening as one matmul: [q | k | v | mlp].
    projections: Linear,
    norm: QkNorm,
    /// From [attention | MLP] (5 x dim) back to dim.
    out: Linear,
    dim: usize,
}

impl SingleBlock {
    fn load(w: &Scope, dim: usize, head_dim: usize) -> Result<Self> {
        let attn = w.at("attn");
        let parts = [
            (attn.at("to_q"), dim),
            (attn.at("to_k"), dim),
            (attn.at("to_v"), dim),
            (w.at("proj_mlp"), 4 * dim),
        ];
        Ok(Self {
            modulation: Modulation::load(&w.at("norm"), dim, 3)?,
            projections: Linear::load_side_by_side(&parts, dim, true)?,
            norm: QkNorm::load(&attn, ("norm_q", "norm_k"), head_dim, true)?
                .expect("loaded when asked"),
            out: Linear::load(&w.at("proj_out"), 5 * dim, dim, true)?,
            dim,
        })
    }

    /// `x` [B, image + text tokens, dim], image tokens first.
    fn forward(
        &self,
        x: Tensor<3>,
        image_len: usize,
        call: &Call,
        control: &mut ControlState,
    ) -> Tensor<3> {
        let m = self.modulation.parts(call.conditioning);
        let normed = modulate(call.norm.forward(x.clone()), &m[0], &m[1]);
        let all = self.projections.forward(normed);
        let dim = self.dim;
        let part = |i: usize, width: usize| all.clone().narrow(2, i * dim, width);
        let q = self.norm.q.forward(part(0, dim), call.heads);
        let k = self.norm.k.forward(part(1, dim), call.heads);
        let attended = call.attend([q, k, part(2, dim)], image_len, self.out.kernels(), control);
        let mlp = gelu_approximate(part(3, 4 * dim));
        let out = self.out.forward(Tensor::cat(vec![attended, mlp], 2));
        x + out * m[2].clone()
    }
}

/// A loaded FLUX transformer.
pub struct Flux {
    config: FluxConfig,
    x_embedder: Linear,
    time: Embedder,
    guidance: Option<Embedder>,
    pooled: Embedder,
    context_embedder: Linear,
    double: Vec<DoubleBlock>,
    single: Vec<SingleBlock>,
    norm: LayerNorm,
    /// The final adaptive norm: 2 parts, scale then shift.
    norm_out: Modulation,
    proj_out: Linear,
    device: burn::tensor::Device,
    /// The rotation tables of the last grid called with: every step of a run has the same
    /// grid, so they are made and uploaded once per run rather than once per step.
    rotary: std::sync::Mutex<Option<(RotaryGrids, Rotary)>>,
}

impl Flux {
    pub fn load(config: FluxConfig, weights: &Weights) -> Result<Self> {
        let w = weights.root();
        let dim = config.inner_dim();
        let spec = Spec {
            heads: config.num_attention_heads,
            qk_norm: true,
        };
        let time = w.at("time_text_embed");
        let double = (0..config.num_layers)
            .map(|i| DoubleBlock::load(&w.at("transformer_blocks").at(i), dim, &spec))
            .collect::<Result<_>>()?;
        let single = (0..config.num_single_layers)
            .map(|i| {
                let block = w.at("single_transformer_blocks").at(i);
                SingleBlock::load(&block, dim, config.attention_head_dim)
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            x_embedder: Linear::load(&w.at("x_embedder"), config.in_channels, dim, true)?,
            time: Embedder::load(&time.at("timestep_embedder"), TIMESTEP_FEATURES, dim)?,
            guidance: config
                .guidance_embeds
                .then(|| Embedder::load(&time.at("guidance_embedder"), TIMESTEP_FEATURES, dim))
                .transpose()?,
            pooled: Embedder::load(&time.at("text_embedder"), config.pooled_projection_dim, dim)?,
            context_embedder: Linear::load(
                &w.at("context_embedder"),
                config.joint_attention_dim,
                dim,
                true,
            )?,
            double,
            single,
            norm: LayerNorm::without_affine(&w, dim, EPS),
            norm_out: Modulation::load(&w.at("norm_out"), dim, 2)?,
            proj_out: Linear::load(&w.at("proj_out"), dim, config.out_channels(), true)?,
            device: weights.device().clone(),
            rotary: std::sync::Mutex::new(None),
            config,
        })
    }

    pub fn config(&self) -> &FluxConfig {
        &self.config
    }

    /// Whether latents of `h` x `w` fit: whole 2x2 patches.
    pub fn check_latent_size(&self, h: usize, w: usize) -> Result<()> {
        if !h.is_multiple_of(PACK) || !w.is_multiple_of(PACK) {
            return Err(Error::InvalidInput(format!(
                "latents of {h}x{w} do not divide into FLUX's 2x2 packed patches"
            )));
        }
        Ok(())
    }

    /// The added conditioning of one row, [1, added_width]: the pooled CLIP text [1, P] and,
    /// where the model embeds guidance, the sinusoid of `guidance_scale` x 1000 (as diffusers
    /// scales it); one tensor, as SDXL's pooled text and size ids are, so that the sampler
    /// passes it as it passes theirs.
    pub fn added_input(&self, pooled: Tensor<2>, guidance_scale: f64) -> Tensor<2> {
        if !self.config.guidance_embeds {
            return pooled;
        }
        let features = sinusoid(guidance_scale * 1000.0, TIMESTEP_FEATURES, true, 0.0);
        let features = Tensor::<2>::from_data(
            TensorData::new(features, [1, TIMESTEP_FEATURES]),
            &self.device,
        )
        .cast(pooled.dtype());
        Tensor::cat(vec![pooled, features], 1)
    }

    /// The rotation tables for a `grid` of packed patches and any reference's, made once
    /// per pair of grids.
    fn rotary_for(&self, grids: RotaryGrids) -> Rotary {
        // A poisoned lock only means another call panicked while filling it: refill it.
        let mut cached = self.rotary.lock().unwrap_or_else(|e| e.into_inner());
        match cached.as_ref() {
            Some((at, tables)) if *at == grids => tables.clone(),
            _ => {
                let tables = Rotary::new(&self.config.axes_dims_rope, grids, &self.device);
                *cached = Some((grids, tables.clone()));
                tables
            }
        }
    }

    /// Predicts the velocity for latents `x` [B, C, H, W] at `timestep` (sigma x 1000),
    /// conditioned on `context` [B, L, joint_attention_dim] (T5's states) and `added`
    /// [B, added_width] ([`added_input`](Self::added_input)).
    pub fn forward(
        &self,
        x: Tensor<4>,
        timestep: f64,
        context: &Tensor<3>,
        added: &Tensor<2>,
    ) -> Tensor<4> {
        let none = CrossAttentionControl::default();
        self.forward_controlled(x, timestep, context, added, None, &none, 0)
            .0
    }

    /// [`forward`](Self::forward) with a `reference` image's latents (Kontext's: their tokens
    /// join the image stream after the latents', and only the latents' are predicted), and
    /// every attention under `control`, which acts on batch row `row`: the latents' tokens'
    /// attention to the text tokens is biased and recorded as
    /// the MMDiT's is, in the double- and the single-stream blocks.
    #[allow(clippy::too_many_arguments)]
    pub fn forward_controlled(
        &self,
        x: Tensor<4>,
        timestep: f64,
        context: &Tensor<3>,
        added: &Tensor<2>,
        reference: Option<&Tensor<4>>,
        control: &CrossAttentionControl,
        row: usize,
    ) -> (Tensor<4>, Option<AttentionRecord>) {
        let [b, _, h, w] = x.dims();
        let (gh, gw) = (h / PACK, w / PACK);
        let mut control = ControlState::new(control, row, [h, w]);

        // Kontext: the reference image's tokens follow the latents' in the image stream,
        // embedded by the same layer; their positions say they are another image.
        let mut packed = vec![pack(x)];
        let reference_grid = reference.map(|r| {
            let [rb, _, rh, rw] = r.dims();
            let rows = if rb == b {
                r.clone()
            } else {
                r.clone().repeat_dim(0, b)
            };
            packed.push(pack(rows));
            [rh / PACK, rw / PACK]
        });
        let image = self.x_embedder.forward(Tensor::cat(packed, 1));
        let dtype = image.dtype();
        let features = sinusoid(timestep, TIMESTEP_FEATURES, true, 0.0);
        let features = Tensor::<2>::from_data(
            TensorData::new(features, [1, TIMESTEP_FEATURES]),
            &self.device,
        )
        .cast(dtype)
        .repeat_dim(0, b);
        let pooled_dim = self.config.pooled_projection_dim;
        let mut temb = self.time.forward(features)
            + self.pooled.forward(added.clone().narrow(1, 0, pooled_dim));
        if let Some(guidance) = &self.guidance {
            temb = temb + guidance.forward(added.clone().narrow(1, pooled_dim, TIMESTEP_FEATURES));
        }
        let conditioning = silu(temb);
        let rotary = self.rotary_for(([gh, gw], reference_grid));
        let call = Call {
            conditioning: &conditioning,
            norm: &self.norm,
            rotary: &rotary,
            heads: self.config.num_attention_heads,
            grid: [gh, gw],
        };

        // The image stream: the latents' tokens, then any reference's.
        let image_len = image.dims()[1];
        let mut image = image;
        let mut text = self.context_embedder.forward(context.clone());
        for block in &self.double {
            (image, text) = block.forward(image, text, &call, &mut control);
        }
        let mut joint = Tensor::cat(vec![image, text], 1);
        for block in &self.single {
            joint = block.forward(joint, image_len, &call, &mut control);
        }
        let image = joint.narrow(1, 0, gh * gw);
        let out = self.norm_out.parts(&conditioning);
        let image = modulate(self.norm.forward(image), &out[1], &out[0]);
        let cells = self.proj_out.forward(image);
        let c_out = self.config.out_channels() / (PACK * PACK);
        let latents = cells
            .reshape([b, gh, gw, c_out, PACK, PACK])
            .permute([0, 3, 1, 4, 2, 5])
            .reshape([b, c_out, h, w]);
        (latents, control.finish())
    }
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;

    /// The rotation turns each pair of channels by its angle: (1, 0) at angle a becomes
    /// (cos a, sin a), and a token at position (0, 0) is left as it is.
    #[test]
    fn the_rotary_embedding_turns_channel_pairs() {
        let device = crate::device::cpu();
        let axes = [2, 2, 2];
        let rotary = Rotary::new(&axes, ([2, 3], None), &device);
        // One head of 6 channels; every pair (1, 0).
        let x = Tensor::<3>::from_data(
            TensorData::new([1.0f32, 0.0].repeat(6 * 6 / 2), [1, 6, 6]),
            &device,
        );
        let out = rotary
            .apply(x, 1)
            .into_data()
            .try_to_vec::<f32>()
            .expect("f32");
        for token in 0..6 {
            let (r, c) = ((token / 3) as f64, (token % 3) as f64);
            // Each axis has one pair, turning at theta^0 = 1 radian per unit.
            for (axis, at) in [0.0, r, c].into_iter().enumerate() {
                let i = token * 6 + axis * 2;
                let (s, co) = at.sin_cos();
                assert!(
                    (out[i] as f64 - co).abs() < 1e-6,
                    "token {token} axis {axis}"
                );
                assert!(
                    (out[i + 1] as f64 - s).abs() < 1e-6,
                    "token {token} axis {axis}"
                );
            }
        }
    }

    #[test]
    fn configs_that_cannot_be_flux_are_refused() {
        let ok =
            r#"{"_class_name": "FluxTransformer2DModel", "num_layers": 1, "num_single_layers": 1}"#;
        assert!(FluxConfig::from_json(ok).is_ok());
        for (json, says) in [
            (r#"{"_class_name": "SD3Transformer2DModel"}"#, "_class_name"),
            (r#"{"patch_size": 2}"#, "patch_size"),
            (r#"{"in_channels": 62}"#, "in_channels"),
            (r#"{"axes_dims_rope": [16, 56, 58]}"#, "axes_dims_rope"),
            (r#"{"axes_dims_rope": [15, 57, 56]}"#, "axes_dims_rope"),
            (r#"{"num_single_layers": 0}"#, "num_single_layers"),
        ] {
            let err = FluxConfig::from_json(json).expect_err(json).to_string();
            assert!(err.contains(says), "{json}: {err}");
        }
    }
}
