//! diffusers' `AutoencoderTiny` (TAESD): a small VAE of plain convolutions that shares SD's
//! latent space, for previews at every step (a few milliseconds where the full decoder takes
//! far longer) and for a cheap encoder.
//!
//! Encoder: a 3x3 conv, then per level a stride-2 conv (none at the first level) and
//! `num_encoder_blocks[i]` blocks, then a conv to the latent channels; the input goes from
//! [-1, 1] to [0, 1] first. Decoder: latents soft-clamped to +-3 (`tanh(x/3)*3`), a conv and
//! ReLU, then per level its blocks, a 2x nearest upsample (not after the last) and a conv
//! (with a bias only in the last); the output goes from [0, 1] back to [-1, 1]. Each block is
//! `relu(conv(relu(conv(relu(conv(x))))) + skip(x))`. The weights are `encoder.layers.N` and
//! `decoder.layers.N`, numbered as the layers of diffusers' `nn.Sequential`s.

use burn::tensor::Tensor;
use burn::tensor::activation::{relu, tanh};
use burn::tensor::module::interpolate;
use burn::tensor::ops::{InterpolateMode, InterpolateOptions};
use serde::Deserialize;

use super::config::{check_size, parse};
use crate::error::{Error, Result};
use crate::nn::Conv2d;
use crate::weights::{Scope, Weights};

/// Where a TAESD model lives in a diffusers folder (as `madebyollin/taesd` ships it, it is
/// a model of its own; the runtime looks for it beside the main VAE).
pub const CONFIG_FILE: &str = "vae_tiny/config.json";

#[derive(Debug, Clone, Deserialize)]
pub struct TaesdConfig {
    #[serde(default = "d_three")]
    pub in_channels: usize,
    #[serde(default = "d_three")]
    pub out_channels: usize,
    #[serde(default = "d_channels")]
    pub encoder_block_out_channels: Vec<usize>,
    #[serde(default = "d_channels")]
    pub decoder_block_out_channels: Vec<usize>,
    #[serde(default = "d_act")]
    pub act_fn: String,
    #[serde(default = "d_upsample")]
    pub upsample_fn: String,
    #[serde(default = "d_four")]
    pub latent_channels: usize,
    #[serde(default = "d_two")]
    pub upsampling_scaling_factor: usize,
    #[serde(default = "d_encoder_blocks")]
    pub num_encoder_blocks: Vec<usize>,
    #[serde(default = "d_decoder_blocks")]
    pub num_decoder_blocks: Vec<usize>,
    #[serde(default = "d_one")]
    pub scaling_factor: f64,
    #[serde(default)]
    pub shift_factor: f64,
}

fn d_three() -> usize {
    3
}
fn d_four() -> usize {
    4
}
fn d_two() -> usize {
    2
}
fn d_one() -> f64 {
    1.0
}
fn d_channels() -> Vec<usize> {
    vec![64; 4]
}
fn d_act() -> String {
    "relu".into()
}
fn d_upsample() -> String {
    "nearest".into()
}
fn d_encoder_blocks() -> Vec<usize> {
    vec![1, 3, 3, 3]
}
fn d_decoder_blocks() -> Vec<usize> {
    vec![3, 3, 3, 1]
}

impl TaesdConfig {
    pub fn from_json(json: &str) -> Result<Self> {
        let c: Self = parse(CONFIG_FILE, json)?;
        let unsupported = |field: &str, value: &str| {
            Err(Error::config(
                CONFIG_FILE,
                format!("`{field}` = \"{value}\" is not supported"),
            ))
        };
        if c.act_fn != "relu" {
            return unsupported("act_fn", &c.act_fn);
        }
        if c.upsample_fn != "nearest" {
            return unsupported("upsample_fn", &c.upsample_fn);
        }
        for (field, channels, blocks) in [
            (
                "encoder",
                &c.encoder_block_out_channels,
                &c.num_encoder_blocks,
            ),
            (
                "decoder",
                &c.decoder_block_out_channels,
                &c.num_decoder_blocks,
            ),
        ] {
            check_size(CONFIG_FILE, &format!("{field} levels"), channels.len(), 8)?;
            if blocks.len() != channels.len() {
                return Err(Error::config(
                    CONFIG_FILE,
                    format!(
                        "num_{field}_blocks has {} entries for {} levels",
                        blocks.len(),
                        channels.len()
                    ),
                ));
            }
            for &ch in channels {
                check_size(
                    CONFIG_FILE,
                    &format!("{field}_block_out_channels"),
                    ch,
                    4096,
                )?;
            }
            for &n in blocks {
                check_size(CONFIG_FILE, &format!("num_{field}_blocks"), n.max(1), 64)?;
            }
        }
        check_size(CONFIG_FILE, "latent_channels", c.latent_channels, 64)?;
        check_size(
            CONFIG_FILE,
            "upsampling_scaling_factor",
            c.upsampling_scaling_factor,
            8,
        )?;
        Ok(c)
    }

    /// Pixels per latent cell along each side.
    pub fn downscale(&self) -> usize {
        1 << (self.encoder_block_out_channels.len() - 1)
    }
}

/// `AutoencoderTinyBlock`: three 3x3 convs with ReLUs between, plus a 1x1 skip where the
/// channel count changes, then a ReLU.
struct TinyBlock {
    convs: [Conv2d; 3],
    skip: Option<Conv2d>,
}

impl TinyBlock {
    fn load(w: &Scope, c_in: usize, c_out: usize) -> Result<Self> {
        let conv = w.at("conv");
        Ok(Self {
            convs: [
                Conv2d::load3(&conv.at(0), c_in, c_out)?,
                Conv2d::load3(&conv.at(2), c_out, c_out)?,
                Conv2d::load3(&conv.at(4), c_out, c_out)?,
            ],
            skip: (c_in != c_out)
                .then(|| Conv2d::load_unbiased(&w.at("skip"), c_in, c_out, 1, 1))
                .transpose()?,
        })
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let [a, b, c] = &self.convs;
        let h = c.forward(relu(b.forward(relu(a.forward(x.clone())))));
        let skip = match &self.skip {
            Some(conv) => conv.forward(x),
            None => x,
        };
        relu(h + skip)
    }
}

/// One entry of the encoder's or decoder's layer sequence.
enum Layer {
    // Boxed: burn's tensor handles make these structs large.
    Conv(Box<Conv2d>),
    Block(Box<TinyBlock>),
    Relu,
    Upsample(usize),
}

impl Layer {
    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        match self {
            Layer::Conv(c) => c.forward(x),
            Layer::Block(b) => b.forward(x),
            Layer::Relu => relu(x),
            Layer::Upsample(factor) => {
                let [_, _, h, w] = x.dims();
                let options = InterpolateOptions {
                    mode: InterpolateMode::Nearest,
                    align_corners: false,
                    output_size: Some([h * factor, w * factor]),
                    scale_factor: None,
                };
                interpolate(x, options)
            }
        }
    }
}

fn run(layers: &[Layer], mut x: Tensor<4>) -> Tensor<4> {
    for layer in layers {
        x = layer.forward(x);
    }
    x
}

pub struct TaesdEncoder {
    config: TaesdConfig,
    layers: Vec<Layer>,
}

impl TaesdEncoder {
    pub fn load(config: TaesdConfig, weights: &Weights) -> Result<Self> {
        let w = weights.root().at("encoder.layers");
        let channels = &config.encoder_block_out_channels;
        let mut layers = Vec::new();
        for (i, (&ch, &blocks)) in channels.iter().zip(&config.num_encoder_blocks).enumerate() {
            let at = w.at(layers.len());
            layers.push(Layer::Conv(Box::new(if i == 0 {
                Conv2d::load3(&at, config.in_channels, ch)?
            } else {
                Conv2d::load_unbiased(&at, ch, ch, 3, 2)?
            })));
            for _ in 0..blocks {
                layers.push(Layer::Block(Box::new(TinyBlock::load(
                    &w.at(layers.len()),
                    ch,
                    ch,
                )?)));
            }
        }
        let last = *channels.last().expect("checked non-empty");
        layers.push(Layer::Conv(Box::new(Conv2d::load3(
            &w.at(layers.len()),
            last,
            config.latent_channels,
        )?)));
        Ok(Self { config, layers })
    }

    pub fn config(&self) -> &TaesdConfig {
        &self.config
    }

    /// RGB in [-1, 1] to latents in SD's scaled latent space, as the sampler holds them.
    pub fn encode(&self, x: Tensor<4>) -> Tensor<4> {
        run(&self.layers, x.add_scalar(1.0).div_scalar(2.0))
    }
}

pub struct TaesdDecoder {
    config: TaesdConfig,
    layers: Vec<Layer>,
}

impl TaesdDecoder {
    /// Loads the decoder; the encoder's tensors in the same file are marked as not needed.
    pub fn load(config: TaesdConfig, weights: &Weights) -> Result<Self> {
        weights.skip_prefix("encoder.");
        let w = weights.root().at("decoder.layers");
        let channels = &config.decoder_block_out_channels;
        let mut layers = vec![Layer::Conv(Box::new(Conv2d::load3(
            &w.at(0),
            config.latent_channels,
            channels[0],
        )?))];
        layers.push(Layer::Relu);
        let levels = channels.len();
        for (i, (&ch, &blocks)) in channels.iter().zip(&config.num_decoder_blocks).enumerate() {
            for _ in 0..blocks {
                layers.push(Layer::Block(Box::new(TinyBlock::load(
                    &w.at(layers.len()),
                    ch,
                    ch,
                )?)));
            }
            let last = i + 1 == levels;
            if !last {
                layers.push(Layer::Upsample(config.upsampling_scaling_factor));
            }
            let at = w.at(layers.len());
            layers.push(Layer::Conv(Box::new(if last {
                Conv2d::load3(&at, ch, config.out_channels)?
            } else {
                Conv2d::load_unbiased(&at, ch, ch, 3, 1)?
            })));
        }
        Ok(Self { config, layers })
    }

    pub fn config(&self) -> &TaesdConfig {
        &self.config
    }

    /// The sampler's latents, as they are, to RGB in [-1, 1]: TAESD works in SD's scaled
    /// latent space (its own scaling factor is 1).
    pub fn decode(&self, z: Tensor<4>) -> Tensor<4> {
        let z = tanh(z.div_scalar(3.0)).mul_scalar(3.0);
        run(&self.layers, z).mul_scalar(2.0).sub_scalar(1.0)
    }
}
