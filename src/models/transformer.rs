//! Diffusers' `Transformer2DModel` for continuous inputs: group norm, a projection in (1x1 conv
//! for SD 1.x, linear for SD 2.x), `BasicTransformerBlock`s, a projection out, a residual.

use burn::tensor::Tensor;
use burn::tensor::activation::gelu;

use crate::error::Result;
use crate::kernels;
use crate::nn::{Conv2d, GroupNorm, LayerNorm, Linear, multi_head_attention};
use crate::weights::Scope;

/// Diffusers' `Attention` as used in UNets: bias-free q/k/v, an output projection with bias.
pub struct Attention {
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
    heads: usize,
}

impl Attention {
    pub fn load(w: &Scope, dim: usize, context_dim: usize, heads: usize) -> Result<Self> {
        Ok(Self {
            q: Linear::load(&w.at("to_q"), dim, dim, false)?,
            k: Linear::load(&w.at("to_k"), context_dim, dim, false)?,
            v: Linear::load(&w.at("to_v"), context_dim, dim, false)?,
            out: Linear::load(&w.at("to_out.0"), dim, dim, true)?,
            heads,
        })
    }

    /// `context` is `None` for self-attention.
    pub fn forward(&self, x: Tensor<3>, context: Option<&Tensor<3>>) -> Tensor<3> {
        let ctx = context.cloned().unwrap_or_else(|| x.clone());
        let attn = multi_head_attention(
            self.q.forward(x),
            self.k.forward(ctx.clone()),
            self.v.forward(ctx),
            self.heads,
            false,
        );
        self.out.forward(attn)
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

    fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let h = self.proj.forward(x);
        if kernels::available(&h.device(), h.dtype()) {
            return self.out.forward(kernels::geglu(h));
        }
        let mut halves = h.chunk(2, 2);
        let gate = halves.pop().expect("two halves");
        let value = halves.pop().expect("two halves");
        self.out.forward(value * gelu(gate))
    }
}

struct BasicTransformerBlock {
    norm1: LayerNorm,
    attn1: Attention,
    norm2: LayerNorm,
    attn2: Attention,
    norm3: LayerNorm,
    ff: GegluFeedForward,
}

impl BasicTransformerBlock {
    fn load(w: &Scope, dim: usize, heads: usize, context_dim: usize) -> Result<Self> {
        Ok(Self {
            norm1: LayerNorm::load(&w.at("norm1"), dim, 1e-5)?,
            attn1: Attention::load(&w.at("attn1"), dim, dim, heads)?,
            norm2: LayerNorm::load(&w.at("norm2"), dim, 1e-5)?,
            attn2: Attention::load(&w.at("attn2"), dim, context_dim, heads)?,
            norm3: LayerNorm::load(&w.at("norm3"), dim, 1e-5)?,
            ff: GegluFeedForward::load(&w.at("ff"), dim)?,
        })
    }

    fn forward(&self, x: Tensor<3>, context: &Tensor<3>) -> Tensor<3> {
        let x = x.clone() + self.attn1.forward(self.norm1.forward(x), None);
        let x = x.clone() + self.attn2.forward(self.norm2.forward(x), Some(context));
        x.clone() + self.ff.forward(self.norm3.forward(x))
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

    pub fn forward(&self, x: Tensor<4>, context: &Tensor<3>) -> Tensor<4> {
        let [b, c, h, w] = x.dims();
        let residual = x.clone();
        let x = self.norm.forward(x);
        let to_tokens = |x: Tensor<4>| -> Tensor<3> { x.reshape([b, c, h * w]).swap_dims(1, 2) };
        let to_image = |x: Tensor<3>| -> Tensor<4> { x.swap_dims(1, 2).reshape([b, c, h, w]) };
        let mut tokens = match &self.proj_in {
            Projection::Conv(conv) => to_tokens(conv.forward(x)),
            Projection::Linear(lin) => lin.forward(to_tokens(x)),
        };
        for block in &self.blocks {
            tokens = block.forward(tokens, context);
        }
        let out = match &self.proj_out {
            Projection::Conv(conv) => conv.forward(to_image(tokens)),
            Projection::Linear(lin) => to_image(lin.forward(tokens)),
        };
        out + residual
    }
}
