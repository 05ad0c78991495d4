//! Diffusers' `Transformer2DModel` for continuous inputs: group norm, a projection in (1x1 conv
//! for SD 1.x, linear for SD 2.x), `BasicTransformerBlock`s, a projection out, a residual.

use burn::tensor::Tensor;
use burn::tensor::activation::gelu;

use super::attention_control::{ControlState, controlled_attention};
use crate::error::Result;
use crate::kernels;
use crate::nn::{Conv2d, GroupNorm, LayerNorm, Linear, multi_head_attention, to_image, to_tokens};
use crate::views::Columns;
use crate::weights::Scope;

/// Diffusers' `Attention` over its own input, as used in UNets: bias-free q, k and v
/// projections, here one matmul giving [q | k | v], and an output projection with bias.
struct SelfAttention {
    qkv: Linear,
    out: Linear,
    heads: usize,
}

impl SelfAttention {
    fn load(w: &Scope, dim: usize, heads: usize) -> Result<Self> {
        let parts = ["to_q", "to_k", "to_v"].map(|name| (w.at(name), dim));
        Ok(Self {
            qkv: Linear::load_side_by_side(&parts, dim, false)?,
            out: Linear::load(&w.at("to_out.0"), dim, dim, true)?,
            heads,
        })
    }

    /// `residual + attention(x)`.
    fn forward_plus(&self, x: Tensor<3>, residual: Tensor<3>) -> Tensor<3> {
        let kernels = self.qkv.kernels();
        let [q, k, v] = Columns::split(self.qkv.forward(x));
        let attn = multi_head_attention(q, k, v, self.heads, false, kernels);
        self.out.forward_plus(attn, residual)
    }
}

/// The same attending to a context (the text): k and v, projected from the context, are one
/// matmul giving [k | v].
struct CrossAttention {
    q: Linear,
    kv: Linear,
    out: Linear,
    heads: usize,
}

impl CrossAttention {
    fn load(w: &Scope, dim: usize, context_dim: usize, heads: usize) -> Result<Self> {
        let parts = ["to_k", "to_v"].map(|name| (w.at(name), dim));
        Ok(Self {
            q: Linear::load(&w.at("to_q"), dim, dim, false)?,
            kv: Linear::load_side_by_side(&parts, context_dim, false)?,
            out: Linear::load(&w.at("to_out.0"), dim, dim, true)?,
            heads,
        })
    }

    /// `residual + attention(x, context)`, for x over a `grid` of latent cells, under
    /// `control` where one is active.
    fn forward_plus(
        &self,
        x: Tensor<3>,
        context: &Tensor<3>,
        residual: Tensor<3>,
        grid: [usize; 2],
        control: &mut ControlState,
    ) -> Tensor<3> {
        let [k, v] = Columns::split(self.kv.forward(context.clone()));
        let q = self.q.forward(x);
        let attn = if control.is_active() {
            let (k, v) = (k.into_tensor(), v.into_tensor());
            controlled_attention(q, k, v, self.heads, grid, self.q.kernels(), control)
        } else {
            multi_head_attention(q.into(), k, v, self.heads, false, self.q.kernels())
        };
        self.out.forward_plus(attn, residual)
    }
}

/// Gated GELU feed-forward: `proj` gives [value, gate]; out = value * gelu(gate).
struct GegluFeedForward {
    proj: Linear,
    out: Linear,
}

impl GegluFeedForward {
    fn load(w: &Scope, dim: usize) -> Result<Self> {
        let inner = dim * 4;
        Ok(Self {
            proj: Linear::load(&w.at("net.0.proj"), dim, inner * 2, true)?,
            out: Linear::load(&w.at("net.2"), inner, dim, true)?,
        })
    }

    /// `residual + ff(x)`.
    fn forward_plus(&self, x: Tensor<3>, residual: Tensor<3>) -> Tensor<3> {
        let gated = match self.proj.bias() {
            Some(bias) if self.proj.kernels().fused_for(&x.device(), x.dtype()) => {
                kernels::geglu(self.proj.forward_unbiased(x), bias)
            }
            _ => {
                let [value, gate] = self.proj.forward(x).chunk(2, 2).try_into().expect("halves");
                value * gelu(gate)
            }
        };
        self.out.forward_plus(gated, residual)
    }
}

struct BasicTransformerBlock {
    norm1: LayerNorm,
    attn1: SelfAttention,
    norm2: LayerNorm,
    attn2: CrossAttention,
    norm3: LayerNorm,
    ff: GegluFeedForward,
}

impl BasicTransformerBlock {
    fn load(w: &Scope, dim: usize, heads: usize, context_dim: usize) -> Result<Self> {
        Ok(Self {
            norm1: LayerNorm::load(&w.at("norm1"), dim, 1e-5)?,
            attn1: SelfAttention::load(&w.at("attn1"), dim, heads)?,
            norm2: LayerNorm::load(&w.at("norm2"), dim, 1e-5)?,
            attn2: CrossAttention::load(&w.at("attn2"), dim, context_dim, heads)?,
            norm3: LayerNorm::load(&w.at("norm3"), dim, 1e-5)?,
            ff: GegluFeedForward::load(&w.at("ff"), dim)?,
        })
    }

    fn forward(
        &self,
        x: Tensor<3>,
        context: &Tensor<3>,
        grid: [usize; 2],
        control: &mut ControlState,
    ) -> Tensor<3> {
        let x = self.attn1.forward_plus(self.norm1.forward(x.clone()), x);
        let x = self
            .attn2
            .forward_plus(self.norm2.forward(x.clone()), context, x, grid, control);
        self.ff.forward_plus(self.norm3.forward(x.clone()), x)
    }
}

enum Projection {
    Conv(Conv2d),
    Linear(Linear),
}

pub struct TransformerSpec {
    pub channels: usize,
    pub heads: usize,
    pub layers: usize,
    pub context_dim: usize,
    pub groups: usize,
    pub linear_projection: bool,
}

pub struct Transformer2D {
    norm: GroupNorm,
    proj_in: Projection,
    blocks: Vec<BasicTransformerBlock>,
    proj_out: Projection,
}

impl Transformer2D {
    pub fn load(w: &Scope, s: &TransformerSpec) -> Result<Self> {
        let c = s.channels;
        let projection = |name: &str| -> Result<Projection> {
            Ok(if s.linear_projection {
                Projection::Linear(Linear::load(&w.at(name), c, c, true)?)
            } else {
                Projection::Conv(Conv2d::load1(&w.at(name), c, c)?)
            })
        };
        Ok(Self {
            norm: GroupNorm::load(&w.at("norm"), s.groups, c, 1e-6)?,
            proj_in: projection("proj_in")?,
            blocks: (0..s.layers)
                .map(|i| {
                    BasicTransformerBlock::load(
                        &w.at("transformer_blocks").at(i),
                        c,
                        s.heads,
                        s.context_dim,
                    )
                })
                .collect::<Result<_>>()?,
            proj_out: projection("proj_out")?,
        })
    }

    /// The block over image `x` attending to `context`; its cross-attention layers act under
    /// `control`.
    pub(crate) fn forward(
        &self,
        x: Tensor<4>,
        context: &Tensor<3>,
        control: &mut ControlState,
    ) -> Tensor<4> {
        let [_, _, h, w] = x.dims();
        let residual = x.clone();
        let x = self.norm.forward(x);
        let to_image = |x: Tensor<3>| to_image(x, [h, w]);
        let mut tokens = match &self.proj_in {
            Projection::Conv(conv) => to_tokens(conv.forward(x)),
            Projection::Linear(lin) => lin.forward(to_tokens(x)),
        };
        for block in &self.blocks {
            tokens = block.forward(tokens, context, [h, w], control);
        }
        let out = match &self.proj_out {
            Projection::Conv(conv) => conv.forward(to_image(tokens)),
            Projection::Linear(lin) => to_image(lin.forward(tokens)),
        };
        out + residual
    }
}
