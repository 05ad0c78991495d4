//! The few layers every model here is made of, as plain structs over burn tensors, loaded
//! straight from diffusers-named weights. Weight layouts follow PyTorch's on disk.

use burn::tensor::activation::silu;
use burn::tensor::module::{conv2d, layer_norm, linear};
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Int, Tensor};

use crate::error::Result;
use crate::weights::Scope;

pub struct Linear {
    /// Stored as [in, out]: burn's `linear` does not transpose, PyTorch's layout is [out, in].
    weight: Tensor<2>,
    bias: Option<Tensor<1>>,
}

impl Linear {
    pub fn load(w: &Scope, d_in: usize, d_out: usize, bias: bool) -> Result<Self> {
        let weight = w.tensor("weight", [d_out, d_in])?.transpose();
        let bias = if bias {
            Some(w.tensor("bias", [d_out])?)
        } else {
            None
        };
        Ok(Self { weight, bias })
    }

    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        linear(x, self.weight.clone(), self.bias.clone())
    }
}

pub struct Conv2d {
    weight: Tensor<4>,
    bias: Tensor<1>,
    options: ConvOptions<2>,
}

impl Conv2d {
    pub fn load(
        w: &Scope,
        c_in: usize,
        c_out: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
    ) -> Result<Self> {
        Ok(Self {
            weight: w.tensor("weight", [c_out, c_in, kernel, kernel])?,
            bias: w.tensor("bias", [c_out])?,
            options: ConvOptions::new([stride, stride], [padding, padding], [1, 1], 1),
        })
    }

    /// A kernel-3, stride-1, same-size convolution: the most common one here.
    pub fn load3(w: &Scope, c_in: usize, c_out: usize) -> Result<Self> {
        Self::load(w, c_in, c_out, 3, 1, 1)
    }

    pub fn load1(w: &Scope, c_in: usize, c_out: usize) -> Result<Self> {
        Self::load(w, c_in, c_out, 1, 1, 0)
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        conv2d(
            x,
            self.weight.clone(),
            Some(self.bias.clone()),
            self.options.clone(),
        )
    }
}

pub struct GroupNorm {
    groups: usize,
    eps: f64,
    gamma: Tensor<1>,
    beta: Tensor<1>,
}

impl GroupNorm {
    pub fn load(w: &Scope, groups: usize, channels: usize, eps: f64) -> Result<Self> {
        Ok(Self {
            groups,
            eps,
            gamma: w.tensor("weight", [channels])?,
            beta: w.tensor("bias", [channels])?,
        })
    }

    /// Normalises [B, C, H, W] over each group of channels and all positions.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let [b, c, h, wd] = x.dims();
        let grouped: Tensor<3> = x.reshape([b, self.groups, (c / self.groups) * h * wd]);
        let (var, mean) = grouped.clone().var_mean_bias(2);
        let normed = (grouped - mean).div(var.add_scalar(self.eps).sqrt());
        let normed: Tensor<4> = normed.reshape([b, c, h, wd]);
        normed * self.gamma.clone().reshape([1, c, 1, 1]) + self.beta.clone().reshape([1, c, 1, 1])
    }

    pub fn forward_silu(&self, x: Tensor<4>) -> Tensor<4> {
        silu(self.forward(x))
    }
}

pub struct LayerNorm {
    gamma: Tensor<1>,
    beta: Tensor<1>,
    eps: f64,
}

impl LayerNorm {
    pub fn load(w: &Scope, dim: usize, eps: f64) -> Result<Self> {
        Ok(Self {
            gamma: w.tensor("weight", [dim])?,
            beta: w.tensor("bias", [dim])?,
            eps,
        })
    }

    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        layer_norm(x, self.gamma.clone(), Some(self.beta.clone()), self.eps)
    }
}

pub struct Embedding {
    weight: Tensor<2>,
}

impl Embedding {
    pub fn load(w: &Scope, count: usize, dim: usize) -> Result<Self> {
        Ok(Self {
            weight: w.tensor("weight", [count, dim])?,
        })
    }

    /// Looks up rows for ids of shape [B, L], giving [B, L, dim].
    pub fn forward(&self, ids: Tensor<2, Int>) -> Tensor<3> {
        let [b, l] = ids.dims();
        let dim = self.weight.dims()[1];
        let flat = self.weight.clone().select(0, ids.reshape([b * l]));
        flat.reshape([b, l, dim])
    }
}

/// Scaled dot-product attention over heads packed in the last dimension:
/// q [B, Lq, H*D], k and v [B, Lk, H*D] give [B, Lq, H*D].
pub fn multi_head_attention(
    q: Tensor<3>,
    k: Tensor<3>,
    v: Tensor<3>,
    heads: usize,
    causal: bool,
) -> Tensor<3> {
    use burn::tensor::module::attention;
    use burn::tensor::ops::AttentionModuleOptions;

    let [b, lq, inner] = q.dims();
    let split = |x: Tensor<3>| -> Tensor<4> {
        let [b, l, _] = x.dims();
        x.reshape([b, l, heads, inner / heads]).swap_dims(1, 2)
    };
    let options = AttentionModuleOptions {
        scale: None,
        softcap: None,
        is_causal: causal,
    };
    let out = attention(split(q), split(k), split(v), None, None, options);
    out.swap_dims(1, 2).reshape([b, lq, inner])
}
