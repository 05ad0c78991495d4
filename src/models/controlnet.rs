//! Diffusers' `ControlNetModel` (Zhang et al. 2023): a trained copy of a UNet's down half
//! that reads a control image (edges, depth, a pose) beside the latents and adds what it
//! makes to the UNet's skip connections and mid block, through zero-initialised 1x1
//! convolutions, so the UNet draws what the image outlines.

use burn::tensor::Tensor;
use burn::tensor::activation::silu;
use serde::Deserialize;

use super::attention_control::{ControlState, CrossAttentionControl};
use super::config::{check_size, parse};
use super::unet::{BlockLoader, DownPath, TimeEmbedding, UNetAdditions, UNetConfig};
use crate::error::{Error, Result};
use crate::nn::{Conv2d, Linear};
use crate::weights::{Scope, Weights};

/// A ControlNet's config, at the root of its folder (a hub ControlNet repo such as
/// `lllyasviel/sd-controlnet-canny`), or in a pipeline folder's `controlnet/`.
pub const CONFIG_FILE: &str = "config.json";

/// Its weight files, in order of preference.
pub const WEIGHT_FILES: &[&str] = &[
    "diffusion_pytorch_model.safetensors",
    "diffusion_pytorch_model.fp16.safetensors",
];

#[derive(Debug, Clone)]
pub struct ControlNetConfig {
    /// Everything the down half of a UNet reads: the same fields as the UNet's config.
    pub trunk: UNetConfig,
    pub conditioning: ConditioningConfig,
}

/// The fields of a ControlNet's config that a UNet's lacks: its control image's way in.
#[derive(Debug, Clone, Deserialize)]
pub struct ConditioningConfig {
    #[serde(default = "d_conditioning_channels", rename = "conditioning_channels")]
    pub channels: usize,
    /// The widths of the small network that brings the control image down to the latents'
    /// size: each level after the first halves the image.
    #[serde(
        default = "d_embedding_channels",
        rename = "conditioning_embedding_out_channels"
    )]
    pub embedding_out_channels: Vec<usize>,
    /// `"rgb"`, or `"bgr"` for ControlNets trained on images in OpenCV's order.
    #[serde(default = "d_order", rename = "controlnet_conditioning_channel_order")]
    pub channel_order: String,
    /// Whether its outputs are averaged over the image (the shuffle ControlNets'): they then
    /// shift each channel, not each place.
    #[serde(default)]
    pub global_pool_conditions: bool,
}

fn d_conditioning_channels() -> usize {
    3
}
fn d_embedding_channels() -> Vec<usize> {
    vec![16, 32, 96, 256]
}
fn d_order() -> String {
    "rgb".into()
}

impl ControlNetConfig {
    /// `file` names the config in errors (a folder's `config.json`, or `controlnet/...`).
    pub fn from_json(file: &str, json: &str) -> Result<Self> {
        // Read twice, as a UNet's config and as the rest, so that an error names its key
        // (serde's `flatten` would lose it).
        let trunk: UNetConfig = parse(file, json)?;
        trunk.validate_down_half(file)?;
        let c: ConditioningConfig = parse(file, json)?;
        if c.channels != 3 {
            return Err(Error::config(
                file,
                format!(
                    "`conditioning_channels` = {}: only 3 (an RGB control image) is supported",
                    c.channels
                ),
            ));
        }
        let widths = &c.embedding_out_channels;
        check_size(
            file,
            "conditioning_embedding_out_channels (count)",
            widths.len(),
            8,
        )?;
        for &width in widths {
            check_size(file, "conditioning_embedding_out_channels", width, 4096)?;
        }
        if !matches!(c.channel_order.as_str(), "rgb" | "bgr") {
            return Err(Error::config(
                file,
                format!(
                    "unsupported `controlnet_conditioning_channel_order`: {:?}",
                    c.channel_order
                ),
            ));
        }
        Ok(Self {
            trunk,
            conditioning: c,
        })
    }

    /// How much smaller than the control image its embedding is: 2 per level after the
    /// first. It must be the VAE's downscale, so the embedding lands at the latents' size.
    pub fn downscale(&self) -> usize {
        1 << (self.conditioning.embedding_out_channels.len() - 1)
    }
}

/// The control image's way to the latents' size: a 3x3 convolution, then per level a 3x3
/// convolution and a strided one, each followed by SiLU, and a last (zero-initialised) one
/// to the UNet's first width.
struct ConditioningEmbedding {
    conv_in: Conv2d,
    blocks: Vec<Conv2d>,
    conv_out: Conv2d,
}

impl ConditioningEmbedding {
    fn load(w: &Scope, config: &ControlNetConfig) -> Result<Self> {
        let widths = &config.conditioning.embedding_out_channels;
        let mut blocks = Vec::new();
        for (i, pair) in widths.windows(2).enumerate() {
            let (c_in, c_out) = (pair[0], pair[1]);
            blocks.push(Conv2d::load3(&w.at("blocks").at(2 * i), c_in, c_in)?);
            blocks.push(Conv2d::load(
                &w.at("blocks").at(2 * i + 1),
                c_in,
                c_out,
                3,
                2,
                1,
            )?);
        }
        let last = *widths.last().expect("checked: at least one width");
        Ok(Self {
            conv_in: Conv2d::load3(&w.at("conv_in"), config.conditioning.channels, widths[0])?,
            blocks,
            conv_out: Conv2d::load3(&w.at("conv_out"), last, config.trunk.block_out_channels[0])?,
        })
    }

    fn forward(&self, image: Tensor<4>) -> Tensor<4> {
        let x = self
            .blocks
            .iter()
            .fold(silu(self.conv_in.forward(image)), |x, conv| {
                silu(conv.forward(x))
            });
        self.conv_out.forward(x)
    }
}

pub struct ControlNet {
    config: ControlNetConfig,
    time_embedding: TimeEmbedding,
    time_proj: Linear,
    down: DownPath,
    conditioning: ConditioningEmbedding,
    /// One 1x1 convolution per skip connection, and one for the mid block.
    zero_convs: Vec<Conv2d>,
    mid_conv: Conv2d,
}

impl ControlNet {
    pub fn load(config: ControlNetConfig, weights: &Weights) -> Result<Self> {
        let w = weights.root();
        let blocks = BlockLoader::new(&config.trunk)?;
        let down = DownPath::load(&blocks, &w)?;
        let zero_convs = DownPath::skip_channels(&config.trunk)?
            .into_iter()
            .enumerate()
            .map(|(i, c)| Conv2d::load1(&w.at("controlnet_down_blocks").at(i), c, c))
            .collect::<Result<Vec<_>>>()?;
        let deepest = *config.trunk.block_out_channels.last().expect("checked");
        Ok(Self {
            time_embedding: TimeEmbedding::load(&w, &config.trunk, weights.device())?,
            time_proj: blocks.time_projection()?,
            down,
            conditioning: ConditioningEmbedding::load(&w.at("controlnet_cond_embedding"), &config)?,
            zero_convs,
            mid_conv: Conv2d::load1(&w.at("controlnet_mid_block"), deepest, deepest)?,
            config,
        })
    }

    pub fn config(&self) -> &ControlNetConfig {
        &self.config
    }

    /// Whether it always runs in guess mode: a ControlNet that averages its outputs over the
    /// image (`global_pool_conditions`, the shuffle ControlNets'), as diffusers' pipelines
    /// run it.
    pub fn always_guesses(&self) -> bool {
        self.config.conditioning.global_pool_conditions
    }

    /// Whether it reads SDXL's pooled text and size input (`addition_embed_type`
    /// `"text_time"`), as an SDXL ControlNet does.
    pub fn takes_text_time(&self) -> bool {
        self.config.trunk.addition_embed_type.is_some()
    }

    /// The control `image` [1, 3, H, W] (values in [0, 1]) brought to the latents' size by
    /// the conditioning embedding, [1, block_out_channels[0], H/f, W/f]: what [`forward`]
    /// takes. It depends on the image alone, so a run makes it once.
    ///
    /// [`forward`]: Self::forward
    pub fn embed_image(&self, image: Tensor<4>) -> Tensor<4> {
        let image = match self.config.conditioning.channel_order.as_str() {
            "bgr" => image.flip([1]),
            _ => image,
        };
        self.conditioning.forward(image)
    }

    /// What it adds to the UNet for latents `x` [B, C, h, w] at `timestep`, attending to
    /// `context`, with the UNet's `added` input (SDXL's pooled text and size, read only by
    /// an SDXL ControlNet; LCM's guidance embedding, read by none) and the control image's
    /// embedding ([`embed_image`](Self::embed_image), one row per batch row), all scaled
    /// by `scale` (diffusers' `controlnet_conditioning_scale`); in guess mode (`guess`,
    /// diffusers' `guess_mode`) each by its own share of it, from a tenth for the first skip
    /// connection's to the whole for the mid block's, evenly in log scale (except where it
    /// pools its outputs).
    pub fn forward(
        &self,
        x: Tensor<4>,
        timestep: f64,
        context: &Tensor<3>,
        added: Option<&Tensor<2>>,
        condition: Tensor<4>,
        (scale, guess): (f64, bool),
    ) -> Result<UNetAdditions> {
        let [b, _, h, w] = x.dims();
        let [_, _, ch, cw] = condition.dims();
        if [ch, cw] != [h, w] {
            return Err(Error::InvalidInput(format!(
                "the ControlNet brings the control image to {cw}x{ch}, not the latents' {w}x{h}: the image must be {} times the latents' size",
                self.config.downscale()
            )));
        }
        let added = added.filter(|_| self.takes_text_time());
        let time = self
            .time_proj
            .forward(self.time_embedding.forward(timestep, b, added));
        let x = self.down.conv_in(x) + condition;
        // LINA's attention controls act on the UNet; the ControlNet attends as trained.
        let none = CrossAttentionControl::default();
        let mut control = ControlState::new(&none, 0, [h, w]);
        let (mid, skips) = self.down.forward(x, &time, context, &mut control, &[]);
        let pooled = self.config.conditioning.global_pool_conditions;
        let n = self.zero_convs.len();
        // torch.logspace(-1, 0, n + 1) in f32, times the scale.
        let share = |i: usize| match guess && !pooled {
            true => 10f32.powf(-1.0 + i as f32 / n as f32) * scale as f32,
            false => scale as f32,
        };
        let out = |conv: &Conv2d, t: Tensor<4>, share: f32| {
            let t = conv.forward(t).mul_scalar(share);
            match pooled {
                true => t.mean_dim(2).mean_dim(3),
                false => t,
            }
        };
        Ok(UNetAdditions {
            skips: self
                .zero_convs
                .iter()
                .zip(skips)
                .enumerate()
                .map(|(i, (conv, skip))| out(conv, skip, share(i)))
                .collect(),
            mid: Some(out(&self.mid_conv, mid, share(n))),
            intrablock: Vec::new(),
        })
    }
}
