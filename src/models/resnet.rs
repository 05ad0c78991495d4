//! Diffusers' `ResnetBlock2D` and the up/down samplers shared by the UNet and the VAE.

use burn::tensor::Tensor;
use burn::tensor::module::interpolate;
use burn::tensor::ops::{InterpolateMode, InterpolateOptions};

use crate::error::Result;
use crate::nn::{Bands, Conv2d, GroupNorm};
use crate::views::ChannelShift;
use crate::weights::Scope;

pub struct ResnetBlock {
    norm1: GroupNorm,
    conv1: Conv2d,
    /// Where this block's time projection lies in the UNet's table of them (absent in the
    /// VAE, which has no time embedding).
    time_first: Option<usize>,
    norm2: GroupNorm,
    conv2: Conv2d,
    shortcut: Option<Conv2d>,
}

pub struct ResnetSpec {
    pub c_in: usize,
    pub c_out: usize,
    /// The first column of this block's time projection in the UNet's table; the UNet
    /// projects every block's time embedding in one matmul (`UNet::forward_with`).
    pub time_first: Option<usize>,
    pub groups: usize,
    pub eps: f64,
}

impl ResnetBlock {
    pub fn load(w: &Scope, s: &ResnetSpec) -> Result<Self> {
        let mut conv1 = Conv2d::load3(&w.at("conv1"), s.c_in, s.c_out)?;
        if s.time_first.is_some() {
            // The time projection's bias is added to every position of conv1's output, as
            // conv1's own bias is: carried in conv1's, it costs nothing of its own. Its
            // weight is loaded by the UNet, with every other block's.
            conv1.add_to_bias(w.at("time_emb_proj").tensor("bias", [s.c_out])?);
        }
        Ok(Self {
            norm1: GroupNorm::load(&w.at("norm1"), s.groups, s.c_in, s.eps)?,
            conv1,
            time_first: s.time_first,
            norm2: GroupNorm::load(&w.at("norm2"), s.groups, s.c_out, s.eps)?,
            conv2: Conv2d::load3(&w.at("conv2"), s.c_out, s.c_out)?,
            shortcut: (s.c_in != s.c_out)
                .then(|| Conv2d::load1(&w.at("conv_shortcut"), s.c_in, s.c_out))
                .transpose()?,
        })
    }

    /// `time` is the UNet's table of time projections [B, N], or `None` in the VAE. This
    /// block's columns are added to conv1's output inside norm2's kernel.
    pub fn forward(&self, x: Tensor<4>, time: Option<&Tensor<2>>) -> Tensor<4> {
        let h = self.conv1.forward(self.norm1.forward_silu(x.clone()));
        let h = match (self.time_first, time) {
            (Some(first), Some(table)) => self
                .norm2
                .forward_silu_shifted(h, &ChannelShift { table, first }),
            _ => self.norm2.forward_silu(h),
        };
        let h = self.conv2.forward(h);
        let skip = match &self.shortcut {
            Some(conv) => conv.forward(x),
            None => x,
        };
        skip + h
    }

    /// The same over row bands, without a time embedding (the VAE's blocks).
    pub fn forward_bands(&self, x: &Bands) -> Bands {
        let h = self.conv1.forward_bands(&self.norm1.forward_bands_silu(x));
        let h = self.conv2.forward_bands(&self.norm2.forward_bands_silu(&h));
        let skip = match &self.shortcut {
            Some(conv) => conv.forward_bands(x),
            None => x.clone(),
        };
        skip.add(&h)
    }
}

/// A stride-2 3x3 convolution (`downsamplers.0.conv`).
pub struct Downsample {
    conv: Conv2d,
}

impl Downsample {
    pub fn load(w: &Scope, channels: usize, padding: usize) -> Result<Self> {
        Ok(Self {
            conv: Conv2d::load(&w.at("conv"), channels, channels, 3, 2, padding)?,
        })
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        self.conv.forward(x)
    }
}

/// Nearest-neighbour upsampling to `size` (2x, or the skip connection's size when the
/// latent is odd-sized) followed by a 3x3 convolution (`upsamplers.0.conv`).
pub struct Upsample {
    conv: Conv2d,
}

impl Upsample {
    pub fn load(w: &Scope, channels: usize) -> Result<Self> {
        Ok(Self {
            conv: Conv2d::load3(&w.at("conv"), channels, channels)?,
        })
    }

    pub fn forward(&self, x: Tensor<4>, size: Option<[usize; 2]>) -> Tensor<4> {
        let [_, _, h, w] = x.dims();
        self.conv
            .forward(nearest(x, size.unwrap_or([h * 2, w * 2])))
    }

    /// Doubles each band's rows and columns (nearest neighbour, so band by band is exact),
    /// then convolves the bands.
    pub fn forward_bands(&self, x: &Bands) -> Bands {
        let doubled = x.map(|band| {
            let [_, _, h, w] = band.dims();
            nearest(band, [h * 2, w * 2])
        });
        self.conv.forward_bands(&doubled)
    }
}

/// Nearest-neighbour resizing to `size`.
fn nearest(x: Tensor<4>, size: [usize; 2]) -> Tensor<4> {
    let options = InterpolateOptions {
        mode: InterpolateMode::Nearest,
        align_corners: false,
        output_size: Some(size),
        scale_factor: None,
    };
    interpolate(x, options)
}
