//! The decoder half of diffusers' `AutoencoderKL`: latents to RGB in [-1, 1].

use burn::tensor::Tensor;
use serde::Deserialize;

use super::config::{check_channels, check_size, parse};
use super::resnet::{ResnetBlock, ResnetSpec, Upsample};
use crate::error::{Error, Result};
use crate::nn::{Conv2d, GroupNorm, Linear, multi_head_attention};
use crate::weights::{Scope, Weights};

pub const CONFIG_FILE: &str = "vae/config.json";

#[derive(Debug, Clone, Deserialize)]
pub struct VaeConfig {
    #[serde(default = "d_three")]
    pub out_channels: usize,
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
}

/// Single-head self-attention over all positions, with its own group norm and residual.
struct SpatialAttention {
    norm: GroupNorm,
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
}

impl SpatialAttention {
    fn load(w: &Scope, c: usize, groups: usize) -> Result<Self> {
        Ok(Self {
            norm: GroupNorm::load(&w.at("group_norm"), groups, c, 1e-6)?,
            q: Linear::load(&w.at("to_q"), c, c, true)?,
            k: Linear::load(&w.at("to_k"), c, c, true)?,
            v: Linear::load(&w.at("to_v"), c, c, true)?,
            out: Linear::load(&w.at("to_out.0"), c, c, true)?,
        })
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let [b, c, h, w] = x.dims();
        let tokens: Tensor<3> = self
            .norm
            .forward(x.clone())
            .reshape([b, c, h * w])
            .swap_dims(1, 2);
        let attn = multi_head_attention(
            self.q.forward(tokens.clone()),
            self.k.forward(tokens.clone()),
            self.v.forward(tokens),
            1,
            false,
        );
        let out: Tensor<4> = self.out.forward(attn).swap_dims(1, 2).reshape([b, c, h, w]);
        out + x
    }
}

struct UpDecoderBlock {
    resnets: Vec<ResnetBlock>,
    upsample: Option<Upsample>,
}

pub struct VaeDecoder {
    config: VaeConfig,
    post_quant_conv: Option<Conv2d>,
    conv_in: Conv2d,
    mid_first: ResnetBlock,
    mid_attention: Option<SpatialAttention>,
    mid_second: ResnetBlock,
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
        let resnet = |w: &Scope, c_in: usize, c_out: usize| {
            ResnetBlock::load(
                w,
                &ResnetSpec {
                    c_in,
                    c_out,
                    temb: None,
                    groups,
                    eps: 1e-6,
                },
            )
        };
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
            mid_first: resnet(&mid.at("resnets.0"), top, top)?,
            mid_attention: config
                .mid_block_add_attention
                .then(|| SpatialAttention::load(&mid.at("attentions.0"), top, groups))
                .transpose()?,
            mid_second: resnet(&mid.at("resnets.1"), top, top)?,
            up,
            norm_out: GroupNorm::load(&w.at("conv_norm_out"), groups, c0, 1e-6)?,
            conv_out: Conv2d::load3(&w.at("conv_out"), c0, config.out_channels)?,
            config,
        })
    }

    pub fn config(&self) -> &VaeConfig {
        &self.config
    }

    /// Decodes raw latents `z` (already divided by the scaling factor) to images in [-1, 1].
    pub fn decode(&self, z: Tensor<4>) -> Tensor<4> {
        let z = match &self.post_quant_conv {
            Some(conv) => conv.forward(z),
            None => z,
        };
        let mut x = self.conv_in.forward(z);
        x = self.mid_first.forward(x, None);
        if let Some(attn) = &self.mid_attention {
            x = attn.forward(x);
        }
        x = self.mid_second.forward(x, None);
        for block in &self.up {
            for r in &block.resnets {
                x = r.forward(x, None);
            }
            if let Some(up) = &block.upsample {
                x = up.forward(x, None);
            }
        }
        self.conv_out.forward(self.norm_out.forward_silu(x))
    }

    /// Latents as the sampler holds them (scaled, shifted) to images in [-1, 1].
    pub fn decode_scaled(&self, latents: Tensor<4>) -> Tensor<4> {
        let mut z = latents.div_scalar(self.config.scaling_factor);
        if let Some(shift) = self.config.shift_factor {
            z = z.add_scalar(shift);
        }
        self.decode(z)
    }
}
