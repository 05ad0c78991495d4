//! diffusers' `AutoencoderKL`: the decoder (latents to RGB in [-1, 1]) and, where the file
//! has it, the encoder (RGB to the posterior's mean), for img2img and inpainting.

use burn::tensor::{FloatDType, Tensor};
use serde::Deserialize;

use super::config::{check_channels, check_size, parse};
use super::resnet::{Downsample, ResnetBlock, ResnetSpec, Upsample};
use crate::error::{Error, Result};
use crate::nn::{Bands, Conv2d, GroupNorm, Linear, multi_head_attention, to_image, to_tokens};
use crate::views::Columns;
use crate::weights::{Scope, Weights};

pub const CONFIG_FILE: &str = "vae/config.json";

#[derive(Debug, Clone, Deserialize)]
pub struct VaeConfig {
    #[serde(default = "d_three")]
    pub in_channels: usize,
    #[serde(default = "d_three")]
    pub out_channels: usize,
    #[serde(default)]
    pub down_block_types: Vec<String>,
    #[serde(default = "d_true")]
    pub use_quant_conv: bool,
    pub up_block_types: Vec<String>,
    pub block_out_channels: Vec<usize>,
    #[serde(default = "d_one")]
    pub layers_per_block: usize,
    #[serde(default = "d_act")]
    pub act_fn: String,
    #[serde(default = "d_four")]
    pub latent_channels: usize,
    #[serde(default = "d_groups")]
    pub norm_num_groups: usize,
    #[serde(default = "d_scaling")]
    pub scaling_factor: f64,
    #[serde(default)]
    pub shift_factor: Option<f64>,
    #[serde(default = "d_true")]
    pub use_post_quant_conv: bool,
    #[serde(default = "d_true")]
    pub mid_block_add_attention: bool,
    /// Whether the VAE runs in f32 where the model computes in f16 (diffusers' name; true
    /// by default, as there): SD's and SDXL's VAEs overflow f16 and draw black or NaN
    /// images. Only VAEs fine-tuned for f16 (the "fp16-fix" ones) say false.
    #[serde(default = "d_true")]
    pub force_upcast: bool,
}

fn d_three() -> usize {
    3
}
fn d_four() -> usize {
    4
}
fn d_one() -> usize {
    1
}
fn d_act() -> String {
    "silu".into()
}
fn d_groups() -> usize {
    32
}
fn d_scaling() -> f64 {
    0.18215
}
fn d_true() -> bool {
    true
}

impl VaeConfig {
    pub fn from_json(json: &str) -> Result<Self> {
        let c: Self = parse(CONFIG_FILE, json)?;
        let f = CONFIG_FILE;
        check_channels(f, &c.block_out_channels, c.norm_num_groups)?;
        check_size(f, "latent_channels", c.latent_channels, 64)?;
        check_size(f, "out_channels", c.out_channels, 64)?;
        check_size(f, "layers_per_block", c.layers_per_block, 64)?;
        if c.up_block_types.len() != c.block_out_channels.len() {
            return Err(Error::config(
                f,
                "up_block_types and block_out_channels differ in length",
            ));
        }
        if let Some(t) = c
            .down_block_types
            .iter()
            .find(|t| *t != "DownEncoderBlock2D")
        {
            return Err(Error::config(
                f,
                format!("unsupported `down_block_types`: {t:?}"),
            ));
        }
        check_size(f, "in_channels", c.in_channels, 64)?;
        if let Some(t) = c.up_block_types.iter().find(|t| *t != "UpDecoderBlock2D") {
            return Err(Error::config(
                f,
                format!("unsupported `up_block_types`: {t:?}"),
            ));
        }
        if c.act_fn != "silu" {
            return Err(Error::config(
                f,
                format!("unsupported `act_fn`: {:?}", c.act_fn),
            ));
        }
        if !(c.scaling_factor.is_finite() && c.scaling_factor > 0.0) {
            return Err(Error::config(f, "`scaling_factor` must be positive"));
        }
        Ok(c)
    }

    /// How many pixels one latent cell spans along each side.
    pub fn downscale(&self) -> usize {
        1 << (self.block_out_channels.len() - 1)
    }

    /// The decoder's largest activation for `h` x `w` latents: the up block whose input
    /// (the previous block's channels, upsampled to its own resolution, or its own channels
    /// where wider) is largest, and that input's shape.
    pub fn decoder_peak(&self, h: usize, w: usize) -> (usize, [usize; 4]) {
        let rev: Vec<usize> = self.block_out_channels.iter().rev().copied().collect();
        (0..rev.len())
            .map(|k| {
                let input = if k == 0 { rev[0] } else { rev[k - 1] };
                (k, [1, input.max(rev[k]), h << k, w << k])
            })
            .max_by_key(|(k, shape)| (shape.iter().product::<usize>(), *k))
            .expect("validated non-empty")
    }
}

/// How many row bands the decoder's up blocks run in so that no activation exceeds
/// `max_bytes` (in f32), for `h` x `w` latents: 1 where the whole decode fits. Bands give the
/// whole decode's result exactly (see [`Bands`]); only the buffers are smaller. At most one
/// band per latent row; past that, the decode cannot fit and [`crate::memory::check`] says so.
pub fn decoder_bands(config: &VaeConfig, h: usize, w: usize, max_bytes: u64) -> usize {
    (1..=h)
        .find(|&bands| band_peak_bytes(config, h, w, bands) <= max_bytes)
        .unwrap_or(h)
}

/// The decoder's largest activation when its up blocks run in `bands` row bands: the up
/// block and the shape of its widest band's input, with the rows a convolution borrows from
/// each neighbour.
pub fn band_peak(config: &VaeConfig, h: usize, w: usize, bands: usize) -> (usize, [usize; 4]) {
    let (block, [b, c, full, cols]) = config.decoder_peak(h, w);
    if bands <= 1 {
        return (block, [b, c, full, cols]);
    }
    let scale = full / h;
    (block, [b, c, h.div_ceil(bands) * scale + 2, cols])
}

fn band_peak_bytes(config: &VaeConfig, h: usize, w: usize, bands: usize) -> u64 {
    let (_, shape) = band_peak(config, h, w, bands);
    shape.iter().map(|&d| d as u64).product::<u64>() * 4
}

/// Single-head self-attention over all positions, with its own group norm and residual.
struct SpatialAttention {
    norm: GroupNorm,
    /// q, k and v in one matmul: [q | k | v].
    qkv: Linear,
    out: Linear,
}

impl SpatialAttention {
    fn load(w: &Scope, c: usize, groups: usize) -> Result<Self> {
        // Diffusers before 0.14 named the projections query, key, value and proj_attn, and
        // many published VAEs (the original SD 1.5 repository's among them) still do, some
        // with [C, C, 1, 1] weights, which the loader reads as [C, C].
        let (qkv, out) = if w.contains("query.weight") {
            (["query", "key", "value"], "proj_attn")
        } else {
            (["to_q", "to_k", "to_v"], "to_out.0")
        };
        Ok(Self {
            norm: GroupNorm::load(&w.at("group_norm"), groups, c, 1e-6)?,
            qkv: Linear::load_side_by_side(&qkv.map(|name| (w.at(name), c)), c, true)?,
            out: Linear::load(&w.at(out), c, c, true)?,
        })
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let [_, _, h, w] = x.dims();
        let tokens = to_tokens(self.norm.forward(x.clone()));
        let [q, k, v] = Columns::split(self.qkv.forward(tokens));
        let attn = multi_head_attention(q, k, v, 1, false, self.qkv.kernels());
        to_image(self.out.forward(attn), [h, w]) + x
    }
}

fn resnet(w: &Scope, c_in: usize, c_out: usize, groups: usize) -> Result<ResnetBlock> {
    ResnetBlock::load(
        w,
        &ResnetSpec {
            c_in,
            c_out,
            time_first: None,
            groups,
            eps: 1e-6,
        },
    )
}

/// The resnet, attention, resnet block at the bottleneck of both halves.
struct MidBlock {
    first: ResnetBlock,
    attention: Option<SpatialAttention>,
    second: ResnetBlock,
}

impl MidBlock {
    fn load(w: &Scope, c: usize, config: &VaeConfig) -> Result<Self> {
        let groups = config.norm_num_groups;
        Ok(Self {
            first: resnet(&w.at("resnets.0"), c, c, groups)?,
            attention: config
                .mid_block_add_attention
                .then(|| SpatialAttention::load(&w.at("attentions.0"), c, groups))
                .transpose()?,
            second: resnet(&w.at("resnets.1"), c, c, groups)?,
        })
    }

    fn forward(&self, mut x: Tensor<4>) -> Tensor<4> {
        x = self.first.forward(x, None);
        if let Some(attn) = &self.attention {
            x = attn.forward(x);
        }
        self.second.forward(x, None)
    }
}

struct DownEncoderBlock {
    resnets: Vec<ResnetBlock>,
    downsample: Option<Downsample>,
}

/// The encoder half: images in [-1, 1] to the latent posterior's mean.
pub struct VaeEncoder {
    config: VaeConfig,
    /// The float type it computes in, where it is not the device's own.
    dtype: Option<FloatDType>,
    conv_in: Conv2d,
    down: Vec<DownEncoderBlock>,
    mid: MidBlock,
    norm_out: GroupNorm,
    conv_out: Conv2d,
    quant_conv: Option<Conv2d>,
}

impl VaeEncoder {
    pub fn load(config: VaeConfig, weights: &Weights) -> Result<Self> {
        if config.down_block_types.len() != config.block_out_channels.len() {
            return Err(Error::config(
                CONFIG_FILE,
                "down_block_types and block_out_channels differ in length",
            ));
        }
        let root = weights.root();
        let w = root.at("encoder");
        let groups = config.norm_num_groups;
        let latent = config.latent_channels;
        let channels = &config.block_out_channels;
        let n = channels.len();
        let mut down = Vec::new();
        let mut c_prev = channels[0];
        for (i, &c_out) in channels.iter().enumerate() {
            let bw = w.at("down_blocks").at(i);
            let resnets = (0..config.layers_per_block)
                .map(|j| {
                    let c_in = if j == 0 { c_prev } else { c_out };
                    resnet(&bw.at("resnets").at(j), c_in, c_out, groups)
                })
                .collect::<Result<Vec<_>>>()?;
            down.push(DownEncoderBlock {
                resnets,
                // Padded (0, 1, 0, 1) by hand before a padding-0 convolution, as diffusers does.
                downsample: (i + 1 < n)
                    .then(|| Downsample::load(&bw.at("downsamplers.0"), c_out, 0))
                    .transpose()?,
            });
            c_prev = c_out;
        }
        let top = channels[n - 1];
        Ok(Self {
            conv_in: Conv2d::load3(&w.at("conv_in"), config.in_channels, channels[0])?,
            down,
            mid: MidBlock::load(&w.at("mid_block"), top, &config)?,
            norm_out: GroupNorm::load(&w.at("conv_norm_out"), groups, top, 1e-6)?,
            conv_out: Conv2d::load3(&w.at("conv_out"), top, 2 * latent)?,
            quant_conv: config
                .use_quant_conv
                .then(|| Conv2d::load1(&root.at("quant_conv"), 2 * latent, 2 * latent))
                .transpose()?,
            dtype: weights.dtype(),
            config,
        })
    }

    /// The posterior's mean for images in [-1, 1], before scaling: diffusers'
    /// `encode(x).latent_dist.mode()`.
    pub fn encode(&self, x: Tensor<4>) -> Tensor<4> {
        let dtype = x.dtype();
        let x = match self.dtype {
            Some(own) => x.cast(own),
            None => x,
        };
        let mut h = self.conv_in.forward(x);
        for block in &self.down {
            for r in &block.resnets {
                h = r.forward(h, None);
            }
            if let Some(down) = &block.downsample {
                h = down.forward(h.pad((0, 1, 0, 1), burn::tensor::ops::PadMode::Constant(0.0)));
            }
        }
        h = self.mid.forward(h);
        let mut moments = self.conv_out.forward(self.norm_out.forward_silu(h));
        if let Some(q) = &self.quant_conv {
            moments = q.forward(moments);
        }
        moments
            .narrow(1, 0, self.config.latent_channels)
            .cast(dtype)
    }

    /// Images in [-1, 1] to latents as the sampler holds them (shifted, scaled).
    pub fn encode_scaled(&self, x: Tensor<4>) -> Tensor<4> {
        let mut z = self.encode(x);
        if let Some(shift) = self.config.shift_factor {
            z = z.sub_scalar(shift);
        }
        z.mul_scalar(self.config.scaling_factor)
    }
}

struct UpDecoderBlock {
    resnets: Vec<ResnetBlock>,
    upsample: Option<Upsample>,
}

pub struct VaeDecoder {
    config: VaeConfig,
    /// The float type it computes in, where it is not the device's own (see
    /// [`VaeConfig::force_upcast`]).
    dtype: Option<FloatDType>,
    post_quant_conv: Option<Conv2d>,
    conv_in: Conv2d,
    mid: MidBlock,
    up: Vec<UpDecoderBlock>,
    norm_out: GroupNorm,
    conv_out: Conv2d,
}

impl VaeDecoder {
    /// Loads the decoder; the encoder's tensors in the same file are marked as not needed.
    pub fn load(config: VaeConfig, weights: &Weights) -> Result<Self> {
        weights.skip_prefix("encoder.");
        weights.skip_prefix("quant_conv.");
        let root = weights.root();
        let w = root.at("decoder");
        let groups = config.norm_num_groups;
        let latent = config.latent_channels;
        let top = *config
            .block_out_channels
            .last()
            .expect("validated non-empty");
        let mid = w.at("mid_block");

        let mut up = Vec::new();
        let mut c_prev = top;
        let n = config.block_out_channels.len();
        for i in 0..n {
            let c_out = config.block_out_channels[n - 1 - i];
            let bw = w.at("up_blocks").at(i);
            let resnets = (0..=config.layers_per_block)
                .map(|j| {
                    resnet(
                        &bw.at("resnets").at(j),
                        if j == 0 { c_prev } else { c_out },
                        c_out,
                        groups,
                    )
                })
                .collect::<Result<Vec<_>>>()?;
            up.push(UpDecoderBlock {
                resnets,
                upsample: (i + 1 < n)
                    .then(|| Upsample::load(&bw.at("upsamplers.0"), c_out))
                    .transpose()?,
            });
            c_prev = c_out;
        }

        let c0 = config.block_out_channels[0];
        Ok(Self {
            post_quant_conv: config
                .use_post_quant_conv
                .then(|| Conv2d::load1(&root.at("post_quant_conv"), latent, latent))
                .transpose()?,
            conv_in: Conv2d::load3(&w.at("conv_in"), latent, top)?,
            mid: MidBlock::load(&mid, top, &config)?,
            up,
            norm_out: GroupNorm::load(&w.at("conv_norm_out"), groups, c0, 1e-6)?,
            conv_out: Conv2d::load3(&w.at("conv_out"), c0, config.out_channels)?,
            dtype: weights.dtype(),
            config,
        })
    }

    pub fn config(&self) -> &VaeConfig {
        &self.config
    }

    /// Decodes raw latents `z` (already divided by the scaling factor) to images in [-1, 1],
    /// of `z`'s float type.
    pub fn decode(&self, z: Tensor<4>) -> Tensor<4> {
        let dtype = z.dtype();
        let z = self.upcast(z);
        let z = match &self.post_quant_conv {
            Some(conv) => conv.forward(z),
            None => z,
        };
        let mut x = self.mid.forward(self.conv_in.forward(z));
        for block in &self.up {
            for r in &block.resnets {
                x = r.forward(x, None);
            }
            if let Some(up) = &block.upsample {
                x = up.forward(x, None);
            }
        }
        self.conv_out
            .forward(self.norm_out.forward_silu(x))
            .cast(dtype)
    }

    /// `x` in the decoder's own float type.
    fn upcast(&self, x: Tensor<4>) -> Tensor<4> {
        match self.dtype {
            Some(dtype) => x.cast(dtype),
            None => x,
        }
    }

    /// The same decode with the up blocks in `bands` row bands (see [`decoder_bands`]), so
    /// that no buffer holds a whole full-resolution activation.
    pub fn decode_in_bands(&self, z: Tensor<4>, bands: usize) -> Tensor<4> {
        let dtype = z.dtype();
        let z = self.upcast(z);
        let z = match &self.post_quant_conv {
            Some(conv) => conv.forward(z),
            None => z,
        };
        let mut x = Bands::split(self.mid.forward(self.conv_in.forward(z)), bands);
        for block in &self.up {
            for r in &block.resnets {
                x = r.forward_bands(&x);
            }
            if let Some(up) = &block.upsample {
                x = up.forward_bands(&x);
            }
        }
        self.conv_out
            .forward_bands(&self.norm_out.forward_bands_silu(&x))
            .join()
            .cast(dtype)
    }

    /// Latents as the sampler holds them (scaled, shifted) to images in [-1, 1]; in row bands
    /// where the whole decode would exceed the device's binding limit.
    pub fn decode_scaled(&self, latents: Tensor<4>) -> Tensor<4> {
        let mut z = latents.div_scalar(self.config.scaling_factor);
        if let Some(shift) = self.config.shift_factor {
            z = z.add_scalar(shift);
        }
        let [_, _, h, w] = z.dims();
        let limit = crate::device::limits(&z.device()).max_binding_bytes;
        match decoder_bands(&self.config, h, w, limit) {
            1 => self.decode(z),
            bands => self.decode_in_bands(z, bands),
        }
    }
}
