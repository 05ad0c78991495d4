//! Diffusers' `UNet2DConditionModel` for SD 1.x / 2.x-class models: sinusoidal timestep
//! embedding, down blocks, a cross-attention mid block and up blocks with skip connections.

use std::cell::RefCell;

use burn::tensor::activation::silu;
use burn::tensor::{Device, Tensor, TensorData};
use serde::Deserialize;

use super::attention_control::{AttentionRecord, ControlState, CrossAttentionControl};
use super::config::{PerBlock, check_channels, check_size, parse};
use super::resnet::{Downsample, ResnetBlock, ResnetSpec, Upsample};
use super::transformer::{Transformer2D, TransformerSpec};
use crate::error::{Error, Result};
use crate::nn::{Conv2d, GroupNorm, Linear};
use crate::weights::{Scope, Weights};

pub const CONFIG_FILE: &str = "unet/config.json";

#[derive(Debug, Clone, Deserialize)]
pub struct UNetConfig {
    #[serde(default = "d_sample_size")]
    pub sample_size: usize,
    #[serde(default = "d_channels")]
    pub in_channels: usize,
    #[serde(default = "d_channels")]
    pub out_channels: usize,
    #[serde(default = "d_true")]
    pub flip_sin_to_cos: bool,
    #[serde(default)]
    pub freq_shift: f64,
    pub down_block_types: Vec<String>,
    #[serde(default = "d_mid")]
    pub mid_block_type: Option<String>,
    /// Required of a UNet; a ControlNet (the down half alone) has none.
    #[serde(default)]
    pub up_block_types: Vec<String>,
    pub block_out_channels: Vec<usize>,
    #[serde(default = "d_layers")]
    pub layers_per_block: PerBlock<usize>,
    #[serde(default = "d_one")]
    pub downsample_padding: usize,
    #[serde(default = "d_act")]
    pub act_fn: String,
    #[serde(default = "d_groups")]
    pub norm_num_groups: usize,
    #[serde(default = "d_eps")]
    pub norm_eps: f64,
    pub cross_attention_dim: usize,
    #[serde(default = "d_tlayers")]
    pub transformer_layers_per_block: PerBlock<usize>,
    #[serde(default = "d_head_dim")]
    pub attention_head_dim: PerBlock<usize>,
    #[serde(default)]
    pub num_attention_heads: Option<PerBlock<usize>>,
    #[serde(default)]
    pub use_linear_projection: bool,
    #[serde(default)]
    pub only_cross_attention: PerBlockBool,
    #[serde(default)]
    pub class_embed_type: Option<String>,
    /// `"text_time"` (SDXL): the pooled text embedding and six size/crop numbers, embedded
    /// and added to the time embedding.
    #[serde(default)]
    pub addition_embed_type: Option<String>,
    /// The sinusoid width of each of SDXL's six size/crop numbers.
    #[serde(default)]
    pub addition_time_embed_dim: Option<usize>,
    /// The width of SDXL's added input: the pooled text embedding and the six sinusoids.
    #[serde(default)]
    pub projection_class_embeddings_input_dim: Option<usize>,
    #[serde(default)]
    pub time_cond_proj_dim: Option<usize>,
    #[serde(default = "d_shift")]
    pub resnet_time_scale_shift: String,
    #[serde(default = "d_positional")]
    pub time_embedding_type: String,
    #[serde(default = "d_kernel")]
    pub conv_in_kernel: usize,
    #[serde(default = "d_kernel")]
    pub conv_out_kernel: usize,
    #[serde(default)]
    pub center_input_sample: bool,
    #[serde(default = "d_one_f")]
    pub mid_block_scale_factor: f64,
}

/// `only_cross_attention` may be a bool or a per-block list of bools.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(transparent)]
pub struct PerBlockBool(pub Option<PerBlock<bool>>);

impl PerBlockBool {
    fn any(&self) -> bool {
        match &self.0 {
            Some(PerBlock::One(b)) => *b,
            Some(PerBlock::Many(v)) => v.iter().any(|b| *b),
            None => false,
        }
    }
}

fn d_sample_size() -> usize {
    64
}
fn d_channels() -> usize {
    4
}
fn d_true() -> bool {
    true
}
fn d_mid() -> Option<String> {
    Some("UNetMidBlock2DCrossAttn".into())
}
fn d_layers() -> PerBlock<usize> {
    PerBlock::One(2)
}
fn d_one() -> usize {
    1
}
fn d_one_f() -> f64 {
    1.0
}
fn d_act() -> String {
    "silu".into()
}
fn d_groups() -> usize {
    32
}
fn d_eps() -> f64 {
    1e-5
}
fn d_tlayers() -> PerBlock<usize> {
    PerBlock::One(1)
}
fn d_head_dim() -> PerBlock<usize> {
    PerBlock::One(8)
}
fn d_shift() -> String {
    "default".into()
}
fn d_positional() -> String {
    "positional".into()
}
fn d_kernel() -> usize {
    3
}

/// Everything about one block level that the config spreads over several fields.
struct Level {
    channels: usize,
    cross_attention: bool,
    layers: usize,
    heads: usize,
    transformer_layers: usize,
}

impl UNetConfig {
    pub fn from_json(json: &str) -> Result<Self> {
        let c: Self = parse(CONFIG_FILE, json)?;
        c.validate()?;
        Ok(c)
    }

    fn unsupported(file: &str, field: &str, value: impl std::fmt::Debug) -> Error {
        Error::config(file, format!("unsupported `{field}`: {value:?}"))
    }

    fn validate(&self) -> Result<()> {
        let f = CONFIG_FILE;
        self.validate_down_half(f)?;
        check_size(f, "out_channels", self.out_channels, 64)?;
        if self.up_block_types.len() != self.block_out_channels.len() {
            return Err(Error::config(
                f,
                "down_block_types, up_block_types and block_out_channels differ in length",
            ));
        }
        for t in &self.up_block_types {
            if !matches!(t.as_str(), "CrossAttnUpBlock2D" | "UpBlock2D") {
                return Err(Self::unsupported(f, "up_block_types", t));
            }
        }
        if self.conv_out_kernel != 3 {
            return Err(Self::unsupported(
                f,
                "conv_out_kernel",
                self.conv_out_kernel,
            ));
        }
        Ok(())
    }

    /// Checks what the down half (time embedding, input convolution, down and mid blocks)
    /// reads: all of a ControlNet's trunk; `file` is the config's name in errors.
    pub(crate) fn validate_down_half(&self, f: &str) -> Result<()> {
        let n = self.block_out_channels.len();
        check_channels(f, &self.block_out_channels, self.norm_num_groups)?;
        check_size(f, "in_channels", self.in_channels, 64)?;
        check_size(f, "cross_attention_dim", self.cross_attention_dim, 1 << 14)?;
        if self.down_block_types.len() != n {
            return Err(Error::config(
                f,
                "down_block_types and block_out_channels differ in length",
            ));
        }
        for t in &self.down_block_types {
            if !matches!(t.as_str(), "CrossAttnDownBlock2D" | "DownBlock2D") {
                return Err(Self::unsupported(f, "down_block_types", t));
            }
        }
        if self.mid_block_type.as_deref() != Some("UNetMidBlock2DCrossAttn") {
            return Err(Self::unsupported(f, "mid_block_type", &self.mid_block_type));
        }
        if self.act_fn != "silu" {
            return Err(Self::unsupported(f, "act_fn", &self.act_fn));
        }
        if self.resnet_time_scale_shift != "default" {
            return Err(Self::unsupported(
                f,
                "resnet_time_scale_shift",
                &self.resnet_time_scale_shift,
            ));
        }
        if self.time_embedding_type != "positional" {
            return Err(Self::unsupported(
                f,
                "time_embedding_type",
                &self.time_embedding_type,
            ));
        }
        if self.class_embed_type.is_some() {
            return Err(Self::unsupported(
                f,
                "class_embed_type",
                &self.class_embed_type,
            ));
        }
        match (self.addition_embed_type.as_deref(), self.text_time_dims()) {
            (None, _) => {}
            (Some("text_time"), Some((time, input))) => {
                check_size(f, "addition_time_embed_dim", time, 4096)?;
                check_size(f, "projection_class_embeddings_input_dim", input, 1 << 16)?;
                // Five numbers for the SDXL refiner (an aesthetic score in place of the target
                // size), six for SDXL base: which one, the text encoder's pooled width tells.
                if input <= 5 * time {
                    return Err(Error::config(
                        f,
                        format!(
                            "projection_class_embeddings_input_dim {input} leaves no room for the pooled text embedding beside 5 or 6 x addition_time_embed_dim {time}"
                        ),
                    ));
                }
                if self.time_cond_proj_dim.is_some() {
                    return Err(Self::unsupported(
                        f,
                        "time_cond_proj_dim with addition_embed_type",
                        true,
                    ));
                }
            }
            (Some("text_time"), None) => {
                return Err(Error::config(
                    f,
                    "addition_embed_type \"text_time\" needs addition_time_embed_dim and projection_class_embeddings_input_dim",
                ));
            }
            (Some(_), _) => {
                return Err(Self::unsupported(
                    f,
                    "addition_embed_type",
                    &self.addition_embed_type,
                ));
            }
        }
        if let Some(dim) = self.time_cond_proj_dim {
            check_size(f, "time_cond_proj_dim", dim, 4096)?;
        }
        if self.conv_in_kernel != 3 {
            return Err(Self::unsupported(f, "conv_in_kernel", self.conv_in_kernel));
        }
        if self.center_input_sample || self.mid_block_scale_factor != 1.0 {
            return Err(Self::unsupported(
                f,
                "center_input_sample/mid_block_scale_factor",
                (self.center_input_sample, self.mid_block_scale_factor),
            ));
        }
        if self.only_cross_attention.any() {
            return Err(Self::unsupported(f, "only_cross_attention", true));
        }
        for level in self.levels(f)? {
            check_size(f, "layers_per_block", level.layers, 64)?;
            check_size(f, "attention heads", level.heads, 1024)?;
            check_size(
                f,
                "transformer_layers_per_block",
                level.transformer_layers,
                64,
            )?;
            if level.channels % level.heads != 0 {
                return Err(Error::config(
                    f,
                    format!(
                        "{} channels do not split into {} attention heads",
                        level.channels, level.heads
                    ),
                ));
            }
        }
        Ok(())
    }

    /// SDXL's added conditioning, (`addition_time_embed_dim`,
    /// `projection_class_embeddings_input_dim`), where the config has both.
    pub fn text_time_dims(&self) -> Option<(usize, usize)> {
        self.addition_time_embed_dim
            .zip(self.projection_class_embeddings_input_dim)
    }

    /// Per-level settings, in the order of the down blocks.
    ///
    /// Diffusers reads `attention_head_dim` as the number of heads when `num_attention_heads`
    /// is absent (a historical misnomer that every SD 1.x/2.x config relies on).
    fn levels(&self, f: &str) -> Result<Vec<Level>> {
        let n = self.block_out_channels.len();
        let heads = match &self.num_attention_heads {
            Some(h) => h.expand(n, "num_attention_heads", f)?,
            None => self.attention_head_dim.expand(n, "attention_head_dim", f)?,
        };
        let layers = self.layers_per_block.expand(n, "layers_per_block", f)?;
        let tlayers =
            self.transformer_layers_per_block
                .expand(n, "transformer_layers_per_block", f)?;
        Ok((0..n)
            .map(|i| Level {
                channels: self.block_out_channels[i],
                cross_attention: self.down_block_types[i] == "CrossAttnDownBlock2D",
                layers: layers[i],
                heads: heads[i],
                transformer_layers: tlayers[i],
            })
            .collect())
    }
}

/// What side networks add to the UNet: a ControlNet's residuals (`super::controlnet`: one
/// per skip connection, in the order the down half makes them, and one to the mid block's
/// output) and a T2I-Adapter's features (`super::t2i_adapter`: one per down block, added to
/// its output, from the first block on). Several ControlNets' and adapters' are summed.
#[derive(Default)]
pub struct UNetAdditions {
    pub skips: Vec<Tensor<4>>,
    pub mid: Option<Tensor<4>>,
    pub intrablock: Vec<Tensor<4>>,
}

impl UNetAdditions {
    /// Puts a row of zeros before the batch's rows: nothing added to the unconditional row
    /// of a guided call, where a ControlNet ran on the conditional row alone.
    pub fn prepend_zero_row(&mut self) {
        let zero_first = |t: &Tensor<4>| {
            let zero = t.clone().narrow(0, 0, 1).zeros_like();
            Tensor::cat(vec![zero, t.clone()], 0)
        };
        self.skips = self.skips.iter().map(zero_first).collect();
        self.mid = self.mid.as_ref().map(zero_first);
        self.intrablock = self.intrablock.iter().map(zero_first).collect();
    }

    /// These and `other`'s additions summed (several ControlNets': diffusers'
    /// `MultiControlNetModel`); where one side has none of a kind, the other's.
    pub fn plus(self, other: Self) -> Self {
        let sum = |a: Vec<Tensor<4>>, b: Vec<Tensor<4>>| match (a.is_empty(), b.is_empty()) {
            (true, _) => b,
            (_, true) => a,
            _ => a.into_iter().zip(b).map(|(a, b)| a + b).collect(),
        };
        Self {
            skips: sum(self.skips, other.skips),
            mid: match (self.mid, other.mid) {
                (Some(a), Some(b)) => Some(a + b),
                (a, b) => a.or(b),
            },
            intrablock: sum(self.intrablock, other.intrablock),
        }
    }
}

/// A ResNet block optionally followed by a Transformer2D: the unit of every UNet block.
struct Layer {
    resnet: ResnetBlock,
    attention: Option<Transformer2D>,
}

impl Layer {
    /// `time`: the UNet's table of time projections (`ResnetBlock::forward`).
    fn forward(
        &self,
        x: Tensor<4>,
        time: &Tensor<2>,
        context: &Tensor<3>,
        control: &mut ControlState,
    ) -> Tensor<4> {
        let x = self.resnet.forward(x, Some(time));
        match &self.attention {
            Some(t) => t.forward(x, context, control),
            None => x,
        }
    }
}

struct DownBlock {
    layers: Vec<Layer>,
    downsample: Option<Downsample>,
}

struct UpBlock {
    layers: Vec<Layer>,
    upsample: Option<Upsample>,
}

struct MidBlock {
    first: ResnetBlock,
    attention: Transformer2D,
    second: ResnetBlock,
}

/// Loads the ResNet and transformer blocks of a UNet-shaped network (a UNet, a ControlNet),
/// gathering every ResNet block's time projection as it goes: they become one matmul, each
/// block reading its own columns of the result.
pub(crate) struct BlockLoader<'c, 'w> {
    config: &'c UNetConfig,
    levels: Vec<Level>,
    time_parts: RefCell<Vec<(Scope<'w>, usize)>>,
}

impl<'c, 'w> BlockLoader<'c, 'w> {
    pub(crate) fn new(config: &'c UNetConfig) -> Result<Self> {
        Ok(Self {
            levels: config.levels(CONFIG_FILE)?,
            config,
            time_parts: RefCell::new(Vec::new()),
        })
    }

    fn resnet(&self, w: &Scope<'w>, c_in: usize, c_out: usize) -> Result<ResnetBlock> {
        let mut parts = self.time_parts.borrow_mut();
        let first = parts.iter().map(|(_, width)| width).sum();
        parts.push((w.at("time_emb_proj"), c_out));
        ResnetBlock::load(
            w,
            &ResnetSpec {
                c_in,
                c_out,
                time_first: Some(first),
                groups: self.config.norm_num_groups,
                eps: self.config.norm_eps,
            },
        )
    }

    fn transformer(&self, w: &Scope, level: &Level) -> Result<Transformer2D> {
        Transformer2D::load(
            w,
            &TransformerSpec {
                channels: level.channels,
                heads: level.heads,
                layers: level.transformer_layers,
                context_dim: self.config.cross_attention_dim,
                groups: self.config.norm_num_groups,
                linear_projection: self.config.use_linear_projection,
            },
        )
    }

    /// The time projections of every ResNet block loaded so far, side by side.
    pub(crate) fn time_projection(self) -> Result<Linear> {
        let temb_dim = self.config.block_out_channels[0] * 4;
        Linear::load_side_by_side(&self.time_parts.into_inner(), temb_dim, false)
    }
}

/// The time embedding: sinusoids of the timestep through two linear layers, plus what some
/// networks add to it (LCM's embedded guidance scale, SDXL's pooled text and size), ending
/// in the SiLU every ResNet block applies before its own projection.
pub(crate) struct TimeEmbedding {
    /// LCM-distilled UNets: the embedded guidance scale, added to the timestep features.
    cond_proj: Option<Linear>,
    /// SDXL: the embedding of the pooled text and size/crop input (`add_embedding`), added to
    /// the time embedding.
    add_embedding: Option<(Linear, Linear)>,
    linear_1: Linear,
    linear_2: Linear,
    /// The sinusoids' width and phase, as the config sets them.
    features: usize,
    flip_sin_to_cos: bool,
    freq_shift: f64,
    device: Device,
}

impl TimeEmbedding {
    pub(crate) fn load(w: &Scope, config: &UNetConfig, device: &Device) -> Result<Self> {
        let c0 = config.block_out_channels[0];
        let temb_dim = c0 * 4;
        Ok(Self {
            cond_proj: config
                .time_cond_proj_dim
                .map(|dim| Linear::load(&w.at("time_embedding.cond_proj"), dim, c0, false))
                .transpose()?,
            add_embedding: match config.text_time_dims() {
                Some((_, input)) if config.addition_embed_type.is_some() => Some((
                    Linear::load(&w.at("add_embedding.linear_1"), input, temb_dim, true)?,
                    Linear::load(&w.at("add_embedding.linear_2"), temb_dim, temb_dim, true)?,
                )),
                _ => None,
            },
            linear_1: Linear::load(&w.at("time_embedding.linear_1"), c0, temb_dim, true)?,
            linear_2: Linear::load(&w.at("time_embedding.linear_2"), temb_dim, temb_dim, true)?,
            features: c0,
            flip_sin_to_cos: config.flip_sin_to_cos,
            freq_shift: config.freq_shift,
            device: device.clone(),
        })
    }

    /// SiLU of the embedding of `timestep` for `batch` rows, [B, 4 x block_out_channels[0]],
    /// with `added` (one row per batch row) where the network takes it.
    pub(crate) fn forward(
        &self,
        timestep: f64,
        batch: usize,
        added: Option<&Tensor<2>>,
    ) -> Tensor<2> {
        let row = crate::nn::sinusoid(
            timestep,
            self.features,
            self.flip_sin_to_cos,
            self.freq_shift,
        );
        let data: Vec<f32> = (0..batch).flat_map(|_| row.iter().copied()).collect();
        let mut features =
            Tensor::from_data(TensorData::new(data, [batch, self.features]), &self.device);
        if let (Some(proj), Some(cond)) = (&self.cond_proj, added) {
            features = features + proj.forward(cond.clone());
        }
        let mut temb = self.linear_2.forward(silu(self.linear_1.forward(features)));
        if let (Some((first, second)), Some(input)) = (&self.add_embedding, added) {
            temb = temb + second.forward(silu(first.forward(input.clone())));
        }
        silu(temb)
    }
}

/// The UNet's contracting half: the input convolution, the down blocks and the mid block.
/// A ControlNet is a trained copy of it.
pub(crate) struct DownPath {
    conv_in: Conv2d,
    down: Vec<DownBlock>,
    mid: MidBlock,
}

impl DownPath {
    pub(crate) fn load<'w>(blocks: &BlockLoader<'_, 'w>, w: &Scope<'w>) -> Result<Self> {
        let config = blocks.config;
        let levels = &blocks.levels;
        let c0 = config.block_out_channels[0];
        let mut down = Vec::new();
        let mut c_prev = c0;
        for (i, level) in levels.iter().enumerate() {
            let bw = w.at("down_blocks").at(i);
            let mut layers = Vec::new();
            for j in 0..level.layers {
                let c_in = if j == 0 { c_prev } else { level.channels };
                layers.push(Layer {
                    resnet: blocks.resnet(&bw.at("resnets").at(j), c_in, level.channels)?,
                    attention: level
                        .cross_attention
                        .then(|| blocks.transformer(&bw.at("attentions").at(j), level))
                        .transpose()?,
                });
            }
            let last = i + 1 == levels.len();
            down.push(DownBlock {
                layers,
                downsample: (!last)
                    .then(|| {
                        Downsample::load(
                            &bw.at("downsamplers.0"),
                            level.channels,
                            config.downsample_padding,
                        )
                    })
                    .transpose()?,
            });
            c_prev = level.channels;
        }
        let deepest = levels.last().expect("at least one level");
        let mw = w.at("mid_block");
        let mid = MidBlock {
            first: blocks.resnet(&mw.at("resnets.0"), deepest.channels, deepest.channels)?,
            attention: blocks.transformer(&mw.at("attentions.0"), deepest)?,
            second: blocks.resnet(&mw.at("resnets.1"), deepest.channels, deepest.channels)?,
        };
        Ok(Self {
            conv_in: Conv2d::load3(&w.at("conv_in"), config.in_channels, c0)?,
            down,
            mid,
        })
    }

    /// The channels of each skip connection, in the order the down path makes them (the input
    /// convolution's output first).
    pub(crate) fn skip_channels(config: &UNetConfig) -> Result<Vec<usize>> {
        let levels = config.levels(CONFIG_FILE)?;
        let mut channels = vec![config.block_out_channels[0]];
        for (i, level) in levels.iter().enumerate() {
            let downsample = usize::from(i + 1 < levels.len());
            channels.extend(std::iter::repeat_n(
                level.channels,
                level.layers + downsample,
            ));
        }
        Ok(channels)
    }

    /// The input convolution (a ControlNet adds its conditioning to its output).
    pub(crate) fn conv_in(&self, x: Tensor<4>) -> Tensor<4> {
        self.conv_in.forward(x)
    }

    /// The down blocks and the mid block from the input convolution's output `x`, with a
    /// T2I-Adapter's features (`intrablock`, one per block from the first, as many as given)
    /// added to the blocks' outputs: the mid block's output and every skip connection, in
    /// order.
    pub(crate) fn forward(
        &self,
        mut x: Tensor<4>,
        time: &Tensor<2>,
        context: &Tensor<3>,
        control: &mut ControlState,
        intrablock: &[Tensor<4>],
    ) -> (Tensor<4>, Vec<Tensor<4>>) {
        let mut skips = vec![x.clone()];
        for (i, block) in self.down.iter().enumerate() {
            let feature = intrablock.get(i);
            // As diffusers adds them: after a cross-attention block's last layer (its skip
            // and its downsampler's input then hold it), after a plain block's downsampler.
            let cross = block.layers.iter().any(|l| l.attention.is_some());
            let last = block.layers.len().saturating_sub(1);
            for (j, layer) in block.layers.iter().enumerate() {
                x = layer.forward(x, time, context, control);
                if let (true, true, Some(f)) = (cross, j == last, feature) {
                    x = x + f.clone();
                }
                skips.push(x.clone());
            }
            if let Some(down) = &block.downsample {
                x = down.forward(x);
                skips.push(x.clone());
            }
            if let (false, Some(f)) = (cross, feature) {
                x = x + f.clone();
                if let Some(skip) = skips.last_mut() {
                    *skip = x.clone();
                }
            }
        }
        x = self.mid.first.forward(x, Some(time));
        x = self.mid.attention.forward(x, context, control);
        x = self.mid.second.forward(x, Some(time));
        (x, skips)
    }
}

pub struct UNet {
    config: UNetConfig,
    time_embedding: TimeEmbedding,
    /// Every ResNet block's time projection, side by side (their biases are in the blocks'
    /// conv1 biases).
    time_proj: Linear,
    down: DownPath,
    up: Vec<UpBlock>,
    norm_out: GroupNorm,
    conv_out: Conv2d,
    device: Device,
}

impl UNet {
    pub fn load(config: UNetConfig, weights: &Weights) -> Result<Self> {
        let w = weights.root();
        let blocks = BlockLoader::new(&config)?;
        let down = DownPath::load(&blocks, &w)?;
        let levels = &blocks.levels;
        let c0 = config.block_out_channels[0];

        // Up blocks mirror the down blocks; each layer also eats one skip connection, and
        // each block has one layer more than its down twin (for the downsampler's output).
        let mut up = Vec::new();
        let n = levels.len();
        let mut c_prev_out = levels[n - 1].channels;
        for i in 0..n {
            let level = &levels[n - 1 - i];
            let is_cross = config.up_block_types[i] == "CrossAttnUpBlock2D";
            let c_out = level.channels;
            let c_skip_in = levels[(n - 1 - i).saturating_sub(1)].channels;
            let bw = w.at("up_blocks").at(i);
            let count = level.layers + 1;
            let mut layers = Vec::new();
            for j in 0..count {
                let skip = if j + 1 == count { c_skip_in } else { c_out };
                let res_in = if j == 0 { c_prev_out } else { c_out };
                layers.push(Layer {
                    resnet: blocks.resnet(&bw.at("resnets").at(j), res_in + skip, c_out)?,
                    attention: is_cross
                        .then(|| blocks.transformer(&bw.at("attentions").at(j), level))
                        .transpose()?,
                });
            }
            let last = i + 1 == n;
            up.push(UpBlock {
                layers,
                upsample: (!last)
                    .then(|| Upsample::load(&bw.at("upsamplers.0"), c_out))
                    .transpose()?,
            });
            c_prev_out = c_out;
        }

        Ok(Self {
            time_embedding: TimeEmbedding::load(&w, &config, weights.device())?,
            time_proj: blocks.time_projection()?,
            down,
            up,
            norm_out: GroupNorm::load(
                &w.at("conv_norm_out"),
                config.norm_num_groups,
                c0,
                config.norm_eps,
            )?,
            conv_out: Conv2d::load3(&w.at("conv_out"), c0, config.out_channels)?,
            device: weights.device().clone(),
            config,
        })
    }

    pub fn config(&self) -> &UNetConfig {
        &self.config
    }

    /// Whether the UNet takes an embedded guidance scale (`time_cond_proj_dim`).
    pub fn embeds_guidance(&self) -> bool {
        self.time_embedding.cond_proj.is_some()
    }

    /// The guidance-scale embedding LCM pipelines feed it: sinusoids of `(scale - 1) * 1000`,
    /// sines then cosines, [1, time_cond_proj_dim].
    pub fn guidance_embedding(&self, guidance_scale: f64) -> Option<Tensor<2>> {
        let dim = self.config.time_cond_proj_dim?;
        let half = dim / 2;
        let w = ((guidance_scale - 1.0) * 1000.0) as f32;
        let step = 10000f32.ln() / (half as f32 - 1.0).max(1.0);
        let mut row: Vec<f32> = (0..half)
            .map(|i| (w * (-(i as f32) * step).exp()).sin())
            .collect();
        row.extend((0..half).map(|i| (w * (-(i as f32) * step).exp()).cos()));
        row.resize(dim, 0.0);
        Some(Tensor::from_data(
            TensorData::new(row, [1, dim]),
            &self.device,
        ))
    }

    /// Whether the UNet takes SDXL's pooled text and size/crop input
    /// ([`UNet::text_time_input`]).
    pub fn takes_text_time(&self) -> bool {
        self.time_embedding.add_embedding.is_some()
    }

    /// SDXL's added input for one batch row: its pooled text embedding [1, P] and sinusoids of
    /// the time ids (SDXL base: original height and width, crop top and left, target height
    /// and width; the refiner: an aesthetic score in place of the target size), as diffusers'
    /// `add_time_proj` computes them, [1, P + n x addition_time_embed_dim]. `None` for UNets
    /// without it.
    pub fn text_time_input(&self, pooled: Tensor<2>, time_ids: &[f64]) -> Option<Tensor<2>> {
        let (dim, _) = self.config.text_time_dims()?;
        self.time_embedding.add_embedding.as_ref()?;
        let sinusoids: Vec<f32> = time_ids
            .iter()
            .flat_map(|&v| self.sinusoid(v, dim))
            .collect();
        let n = sinusoids.len();
        let time = Tensor::from_data(TensorData::new(sinusoids, [1, n]), &self.device);
        Some(Tensor::cat(vec![pooled, time], 1))
    }

    /// Sinusoidal embedding of `value`, `dim` wide, as diffusers' `Timesteps` computes it
    /// with this UNet's `flip_sin_to_cos` and `freq_shift` (f32 throughout).
    fn sinusoid(&self, value: f64, dim: usize) -> Vec<f32> {
        let c = &self.config;
        crate::nn::sinusoid(value, dim, c.flip_sin_to_cos, c.freq_shift)
    }

    /// Predicts the noise (or v) for latents `x` [B, C, H, W] at `timestep`, conditioned on
    /// `context` [B, L, cross_attention_dim].
    pub fn forward(&self, x: Tensor<4>, timestep: f64, context: &Tensor<3>) -> Tensor<4> {
        self.forward_with(x, timestep, context, None)
    }

    /// [`forward`](Self::forward) with the conditioning some UNets add to the time
    /// embedding, one row per batch row: LCM-distilled UNets' embedded guidance scale [B,
    /// time_cond_proj_dim] ([`UNet::guidance_embedding`]), or SDXL's pooled text and
    /// size/crop input [B, projection_class_embeddings_input_dim]
    /// ([`UNet::text_time_input`]).
    pub fn forward_with(
        &self,
        x: Tensor<4>,
        timestep: f64,
        context: &Tensor<3>,
        added: Option<&Tensor<2>>,
    ) -> Tensor<4> {
        let none = CrossAttentionControl::default();
        self.forward_controlled(x, timestep, context, added, &none, 0, None)
            .0
    }

    /// [`forward_with`](Self::forward_with) with its cross-attention layers under `control`,
    /// which acts on batch row `row` (the conditional one), and what ControlNets and
    /// T2I-Adapters add to it (`additions`); also gives the record, where `control` asks for
    /// one.
    #[allow(clippy::too_many_arguments)]
    pub fn forward_controlled(
        &self,
        x: Tensor<4>,
        timestep: f64,
        context: &Tensor<3>,
        added: Option<&Tensor<2>>,
        control: &CrossAttentionControl,
        row: usize,
        additions: Option<&UNetAdditions>,
    ) -> (Tensor<4>, Option<AttentionRecord>) {
        let [b, _, h, w] = x.dims();
        let mut control = ControlState::new(control, row, [h, w]);
        // Every ResNet block projects the embedding's SiLU: all projections run here at once.
        let time = self
            .time_proj
            .forward(self.time_embedding.forward(timestep, b, added));

        let x = self.down.conv_in(x);
        let none = UNetAdditions::default();
        let additions = additions.unwrap_or(&none);
        let (mut x, mut skips) =
            self.down
                .forward(x, &time, context, &mut control, &additions.intrablock);
        // A ControlNet's residuals join each skip connection and the mid block's output.
        for (skip, extra) in skips.iter_mut().zip(&additions.skips) {
            *skip = skip.clone() + extra.clone();
        }
        if let Some(mid) = &additions.mid {
            x = x + mid.clone();
        }

        for block in &self.up {
            for layer in &block.layers {
                let skip = skips.pop().expect("one skip per up layer");
                x = layer.forward(Tensor::cat(vec![x, skip], 1), &time, context, &mut control);
            }
            if let Some(up) = &block.upsample {
                let size = skips.last().map(|s| {
                    let [_, _, h, w] = s.dims();
                    [h, w]
                });
                x = up.forward(x, size);
            }
        }

        let out = self.conv_out.forward(self.norm_out.forward_silu(x));
        (out, control.finish())
    }
}
