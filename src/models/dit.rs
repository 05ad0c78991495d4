//! What the diffusion transformers share (SD 3's MMDiT, FLUX's double- and single-stream
//! transformer): adaptive layer norms whose shift, scale and gate come from the timestep
//! and pooled-text embedding (adaLN-Zero), per-head RMS norms of queries and keys, and the
//! 4x-wide GELU feed-forward.

use burn::tensor::Tensor;
use burn::tensor::activation::gelu_approximate;

use crate::error::Result;
use crate::nn::{Linear, RmsNorm};
use crate::views::Columns;
use crate::weights::Scope;

/// The epsilon of every layer norm and RMS norm in both transformers.
pub(super) const EPS: f64 = 1e-6;

/// `x * (1 + scale) + shift`, with `shift` and `scale` [B, 1, dim] per batch row.
pub(super) fn modulate(x: Tensor<3>, shift: &Tensor<3>, scale: &Tensor<3>) -> Tensor<3> {
    x * scale.clone().add_scalar(1.0) + shift.clone()
}

/// An adaptive norm's projection of the conditioning: `linear(silu(temb))`, cut into its
/// `count` [B, 1, dim] parts (shift, scale, gate, ... in diffusers' order).
pub(super) struct Modulation {
    linear: Linear,
    dim: usize,
}

impl Modulation {
    pub(super) fn load(w: &Scope, dim: usize, count: usize) -> Result<Self> {
        Ok(Self {
            linear: Linear::load(&w.at("linear"), dim, count * dim, true)?,
            dim,
        })
    }

    /// The parts for `conditioning`, already through SiLU [B, dim].
    pub(super) fn parts(&self, conditioning: &Tensor<2>) -> Vec<Tensor<3>> {
        let all = self.linear.forward(conditioning.clone());
        let count = all.dims()[1] / self.dim;
        (0..count)
            .map(|i| {
                all.clone()
                    .narrow(1, i * self.dim, self.dim)
                    .unsqueeze_dim(1)
            })
            .collect()
    }
}

/// diffusers' `RMSNorm` over each head's channels, with a learned scale.
pub(super) struct HeadRmsNorm(RmsNorm);

impl HeadRmsNorm {
    pub(super) fn load(w: &Scope, head_dim: usize) -> Result<Self> {
        RmsNorm::load(w, head_dim, EPS).map(Self)
    }

    /// `x` [B, L, H*D] normalised per head.
    pub(super) fn forward(&self, x: Tensor<3>, heads: usize) -> Tensor<3> {
        let [b, l, inner] = x.dims();
        self.0
            .forward(x.reshape([b, l, heads, inner / heads]))
            .reshape([b, l, inner])
    }
}

/// Query and key norms of one attention's stream, where the model has them.
pub(super) struct QkNorm {
    pub(super) q: HeadRmsNorm,
    pub(super) k: HeadRmsNorm,
}

impl QkNorm {
    pub(super) fn load(
        w: &Scope,
        (q, k): (&str, &str),
        head_dim: usize,
        on: bool,
    ) -> Result<Option<Self>> {
        on.then(|| {
            Ok(Self {
                q: HeadRmsNorm::load(&w.at(q), head_dim)?,
                k: HeadRmsNorm::load(&w.at(k), head_dim)?,
            })
        })
        .transpose()
    }
}

/// One stream's projections to queries, keys and values (one matmul giving [q | k | v]),
/// normed where the model norms them.
pub(super) struct StreamQkv {
    qkv: Linear,
    norm: Option<QkNorm>,
}

impl StreamQkv {
    pub(super) fn load(
        w: &Scope,
        names: [&str; 3],
        norms: (&str, &str),
        dim: usize,
        s: &Spec,
    ) -> Result<Self> {
        let parts = names.map(|name| (w.at(name), dim));
        Ok(Self {
            qkv: Linear::load_side_by_side(&parts, dim, true)?,
            norm: QkNorm::load(w, norms, dim / s.heads, s.qk_norm)?,
        })
    }

    pub(super) fn forward(&self, x: Tensor<3>, heads: usize) -> [Tensor<3>; 3] {
        let [q, k, v] = Columns::split(self.qkv.forward(x)).map(Columns::into_tensor);
        match &self.norm {
            Some(n) => [n.q.forward(q, heads), n.k.forward(k, heads), v],
            None => [q, k, v],
        }
    }
}

/// What every block shares: heads and whether queries and keys are normed.
pub(super) struct Spec {
    pub(super) heads: usize,
    pub(super) qk_norm: bool,
}

/// The feed-forward: 4x wider, GELU (tanh approximation), back.
pub(super) struct FeedForward {
    up: Linear,
    down: Linear,
}

impl FeedForward {
    pub(super) fn load(w: &Scope, dim: usize) -> Result<Self> {
        Ok(Self {
            up: Linear::load(&w.at("net.0.proj"), dim, 4 * dim, true)?,
            down: Linear::load(&w.at("net.2"), 4 * dim, dim, true)?,
        })
    }

    /// Each token's output depends on that token alone, so where the 4x-wide hidden state of
    /// every token at once would not fit one buffer of the adapter (SD 3.5 medium at 1024 px
    /// with guidance: 208 MiB), the tokens run in chunks that do, as diffusers'
    /// `_chunked_feed_forward` runs them; the result is the same.
    pub(super) fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let [batch, tokens, dim] = x.dims();
        let limit = crate::device::limits(&x.device()).max_binding_bytes;
        let token_bytes = (batch * 4 * dim * std::mem::size_of::<f32>()) as u64;
        let rows = usize::try_from(limit / token_bytes.max(1)).unwrap_or(usize::MAX);
        self.forward_in_chunks(x, rows.clamp(1, tokens.max(1)))
    }

    fn forward_in_chunks(&self, x: Tensor<3>, rows: usize) -> Tensor<3> {
        let tokens = x.dims()[1];
        let whole = |x: Tensor<3>| self.down.forward(gelu_approximate(self.up.forward(x)));
        if rows >= tokens {
            return whole(x);
        }
        let parts = (0..tokens)
            .step_by(rows)
            .map(|start| whole(x.clone().narrow(1, start, rows.min(tokens - start))))
            .collect();
        Tensor::cat(parts, 1)
    }
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;
    use crate::weights::Weights;
    use burn::tensor::Distribution;

    /// In token chunks (here of 3 of 10 tokens, the last one short) the feed-forward gives
    /// what it gives on all tokens at once.
    #[test]
    fn the_feed_forward_in_token_chunks_equals_it_whole() {
        let device = crate::device::cpu();
        let weights = Weights::random(&device);
        let ff = FeedForward::load(&weights.root(), 8).unwrap();
        let x = Tensor::<3>::random([2, 10, 8], Distribution::Normal(0.0, 1.0), &device);
        let whole = ff.forward_in_chunks(x.clone(), 10);
        let chunked = ff.forward_in_chunks(x, 3);
        let diff = max_diff(whole, chunked);
        assert!(diff < 1e-6, "chunks differ by {diff}");
    }

    /// The largest absolute difference between two tensors.
    fn max_diff<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> f32 {
        (a - b).abs().max().into_data().try_to_vec::<f32>().unwrap()[0]
    }
}
