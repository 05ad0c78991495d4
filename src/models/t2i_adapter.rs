//! Diffusers' `T2IAdapter` (Mou et al. 2023), full type: a small network that turns a control
//! image (a sketch, edges, depth, a pose) into one feature map per UNet down block, computed
//! once per run and added inside those blocks at every step. Far lighter than a ControlNet (it
//! never sees the latents or the text).

use burn::tensor::{Tensor, TensorData};
use serde::Deserialize;

use super::config::{check_size, parse};
use crate::error::{Error, Result};
use crate::nn::Conv2d;
use crate::weights::{Scope, Weights};

/// A T2I-Adapter's config, at the root of its folder (a hub adapter repo such as
/// `TencentARC/t2iadapter_canny_sd15v2`).
pub const CONFIG_FILE: &str = "config.json";

/// Its weight files, in order of preference.
pub const WEIGHT_FILES: &[&str] = &[
    "diffusion_pytorch_model.safetensors",
    "diffusion_pytorch_model.fp16.safetensors",
];

#[derive(Debug, Clone, Deserialize)]
pub struct T2IAdapterConfig {
    #[serde(default = "d_in_channels")]
    pub in_channels: usize,
    /// Each feature map's channels: the UNet's down blocks' widths.
    pub channels: Vec<usize>,
    #[serde(default = "d_res_blocks")]
    pub num_res_blocks: usize,
    /// The pixel unshuffle's factor: the first feature map's size is the image's over it.
    #[serde(default = "d_downscale")]
    pub downscale_factor: usize,
    #[serde(default = "d_type")]
    pub adapter_type: String,
}

fn d_in_channels() -> usize {
    3
}
fn d_res_blocks() -> usize {
    2
}
fn d_downscale() -> usize {
    8
}
fn d_type() -> String {
    "full_adapter".into()
}

impl T2IAdapterConfig {
    /// `file` names the config in errors.
    pub fn from_json(file: &str, json: &str) -> Result<Self> {
        let c: Self = parse(file, json)?;
        if c.adapter_type != "full_adapter" {
            return Err(Error::config(
                file,
                format!(
                    "unsupported `adapter_type`: {:?} (only \"full_adapter\", SD 1.x and 2.x's, is read)",
                    c.adapter_type
                ),
            ));
        }
        if c.in_channels != 3 {
            return Err(Error::config(
                file,
                format!(
                    "`in_channels` = {}: only 3 (an RGB control image) is supported",
                    c.in_channels
                ),
            ));
        }
        check_size(file, "channels (count)", c.channels.len(), 8)?;
        for &width in &c.channels {
            check_size(file, "channels", width, 1 << 14)?;
        }
        check_size(file, "num_res_blocks", c.num_res_blocks, 64)?;
        check_size(file, "downscale_factor", c.downscale_factor, 64)?;
        Ok(c)
    }
}

/// A 3x3 convolution, ReLU, a 1x1 convolution, and the input added back.
struct ResnetBlock {
    block1: Conv2d,
    block2: Conv2d,
}

/// One feature map's stage: halve the size (all but the first), change the width where it
/// changes, then the ResNet blocks.
struct Stage {
    down: bool,
    in_conv: Option<Conv2d>,
    resnets: Vec<ResnetBlock>,
}

pub struct T2IAdapter {
    config: T2IAdapterConfig,
    conv_in: Conv2d,
    stages: Vec<Stage>,
}

impl T2IAdapter {
    pub fn load(config: T2IAdapterConfig, weights: &Weights) -> Result<Self> {
        let w = weights.root().at("adapter");
        let f = config.downscale_factor;
        let c = &config.channels;
        let stages = (0..c.len())
            .map(|i| -> Result<Stage> {
                let sw = w.at("body").at(i);
                let (c_in, c_out) = (c[i.saturating_sub(1)], c[i]);
                let resnet = |r: &Scope| -> Result<ResnetBlock> {
                    Ok(ResnetBlock {
                        block1: Conv2d::load3(&r.at("block1"), c_out, c_out)?,
                        block2: Conv2d::load1(&r.at("block2"), c_out, c_out)?,
                    })
                };
                Ok(Stage {
                    down: i > 0,
                    in_conv: (c_in != c_out)
                        .then(|| Conv2d::load1(&sw.at("in_conv"), c_in, c_out))
                        .transpose()?,
                    resnets: (0..config.num_res_blocks)
                        .map(|j| resnet(&sw.at("resnets").at(j)))
                        .collect::<Result<_>>()?,
                })
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            conv_in: Conv2d::load3(&w.at("conv_in"), config.in_channels * f * f, c[0])?,
            stages,
            config,
        })
    }

    pub fn config(&self) -> &T2IAdapterConfig {
        &self.config
    }

    /// The feature maps of a control `image` [B, 3, H, W] with values in [0, 1], one per
    /// stage, each scaled by `scale` (diffusers' `adapter_conditioning_scale`): the first at
    /// the image's size over `downscale_factor`, each next one half of it (rounding up, as
    /// the UNet's downsamplers do).
    pub fn forward(&self, image: Tensor<4>, scale: f64) -> Result<Vec<Tensor<4>>> {
        let f = self.config.downscale_factor;
        let [b, c, h, w] = image.dims();
        if h % f != 0 || w % f != 0 {
            return Err(Error::InvalidInput(format!(
                "the T2I-Adapter's image is {w}x{h}; its sides must be multiples of {f}"
            )));
        }
        // Pixel unshuffle: each f x f patch becomes f² channels, channel-major.
        let x = image
            .reshape([b, c, h / f, f, w / f, f])
            .permute([0, 1, 3, 5, 2, 4])
            .reshape([b, c * f * f, h / f, w / f]);
        let mut x = self.conv_in.forward(x);
        let mut features = Vec::with_capacity(self.stages.len());
        for stage in &self.stages {
            if stage.down {
                x = halve(x);
            }
            if let Some(conv) = &stage.in_conv {
                x = conv.forward(x);
            }
            for r in &stage.resnets {
                // ReLU as a clamp, a kernel the page's module already holds.
                let inner = r.block1.forward(x.clone()).clamp(0.0, f32::MAX);
                x = x + r.block2.forward(inner);
            }
            features.push(x.clone().mul_scalar(scale));
        }
        Ok(features)
    }
}

/// 2x2 average pooling in ceil mode, as torch's `AvgPool2d(2, ceil_mode=True)` averages: a
/// window hanging past an odd side averages the cells it covers. Built from reshapes and sums
/// rather than burn's pooling, whose kernels would grow the page's module for this one use.
fn halve(x: Tensor<4>) -> Tensor<4> {
    let [b, c, h, w] = x.dims();
    let (h2, w2) = (h.div_ceil(2), w.div_ceil(2));
    let mut x = x;
    if h % 2 == 1 {
        let zeros = x.clone().narrow(2, 0, 1).zeros_like();
        x = Tensor::cat(vec![x, zeros], 2);
    }
    if w % 2 == 1 {
        let zeros = x.clone().narrow(3, 0, 1).zeros_like();
        x = Tensor::cat(vec![x, zeros], 3);
    }
    let sums = x
        .reshape([b, c, h2, 2, w2, 2])
        .sum_dim(5)
        .sum_dim(3)
        .reshape([b, c, h2, w2]);
    if h % 2 == 0 && w % 2 == 0 {
        return sums.mul_scalar(0.25);
    }
    // Each window's share: a half where it covers one row or column, a quarter otherwise.
    let covered = |i: usize, n: usize| if 2 * i + 1 < n { 2.0 } else { 1.0 };
    let shares: Vec<f32> = (0..h2 * w2)
        .map(|i| 1.0 / (covered(i / w2, h) * covered(i % w2, w)))
        .collect();
    let device = sums.device();
    sums * Tensor::from_data(TensorData::new(shares, [1, 1, h2, w2]), &device)
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;

    /// The pooling averages what each window covers: 2x2 blocks on even sides, the edge's
    /// row, column or corner alone on odd ones, as torch's ceil mode does.
    #[test]
    fn halving_averages_what_each_window_covers() {
        let device = crate::device::cpu();
        let values: Vec<f32> = (0..15).map(|v| v as f32).collect();
        // 3 rows of 5: [0..5], [5..10], [10..15].
        let x = Tensor::<4>::from_data(TensorData::new(values, [1, 1, 3, 5]), &device);
        let out: Vec<f32> = halve(x).into_data().try_to_vec::<f32>().unwrap();
        let expected = [
            (0.0 + 1.0 + 5.0 + 6.0) / 4.0,
            (2.0 + 3.0 + 7.0 + 8.0) / 4.0,
            (4.0 + 9.0) / 2.0,
            (10.0 + 11.0) / 2.0,
            (12.0 + 13.0) / 2.0,
            14.0,
        ];
        assert_eq!(out, expected);
    }
}
