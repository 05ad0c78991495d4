//! The UNet's hook point for interventions that act through cross-attention, as diffusers'
//! attention processors are: per text token and latent cell, an additive bias on the scores of
//! one batch row (the conditional one), and a record of that row's attention probabilities.
//!
//! A bias `b[t, y, x]` is added to the score of text token `t` for the query at latent cell
//! `(y, x)` before the softmax over tokens, in every cross-attention layer, broadcast over
//! heads; a layer whose grid is coarser than the latents takes the bias average-pooled to its
//! grid. A multiplicative reweighting `w` of a token's attention is the bias `ln w`. A record
//! is the mean over heads and layers of each layer's probabilities, resized (nearest) to the
//! latents' grid: per token, where the image attends to it.
//!
//! A control that only biases runs in the fused attention kernel, which takes the bias as an
//! input and makes no score matrix (`kernels::ScoreBias`); a record needs the probabilities,
//! so a recording layer makes its scores explicitly (cross-attention's have one column per
//! text token, 77, the bias's own size). Either way a controlled step costs no extra model
//! evaluation.

use burn::tensor::Tensor;
use burn::tensor::activation::softmax;
use burn::tensor::module::{adaptive_avg_pool2d, interpolate};
use burn::tensor::ops::{InterpolateMode, InterpolateOptions};

use crate::kernels::Kernels;

/// What one model call asks of the UNet's cross-attention layers. The default asks nothing,
/// and the layers run as they do without a control.
#[derive(Clone, Default)]
pub struct CrossAttentionControl {
    /// [T, H, W]: T the text context's length, H x W the latents' grid. Finite values.
    pub bias: Option<Tensor<3>>,
    /// Whether to record the probabilities ([`AttentionRecord`]).
    pub record: bool,
}

impl CrossAttentionControl {
    pub fn is_active(&self) -> bool {
        self.bias.is_some() || self.record
    }
}

/// Per-token cross-attention maps of one model call: [T, H, W] at the latents' grid, each
/// cell's probabilities over the T tokens (so each cell sums to 1 over tokens).
pub type AttentionRecord = Tensor<3>;

/// A control as the layers of one forward pass share it: the batch row it acts on, the bias
/// pooled once per grid size, and the running sum of the records.
pub(crate) struct ControlState<'a> {
    control: &'a CrossAttentionControl,
    row: usize,
    latent: [usize; 2],
    /// [B, 1, h*w, T] per grid: the bias in the controlled row, zeros in the others.
    pooled: Vec<([usize; 2], usize, Tensor<4>)>,
    sum: Option<Tensor<3>>,
    layers: usize,
}

impl<'a> ControlState<'a> {
    pub(crate) fn new(control: &'a CrossAttentionControl, row: usize, latent: [usize; 2]) -> Self {
        Self {
            control,
            row,
            latent,
            pooled: Vec::new(),
            sum: None,
            layers: 0,
        }
    }

    pub(crate) fn is_active(&self) -> bool {
        self.control.is_active()
    }

    /// The additive score bias for a layer at `grid` over a batch of `batch` rows:
    /// [B, 1, h*w, T], zero but in the controlled row.
    fn bias(&mut self, grid: [usize; 2], batch: usize) -> Option<Tensor<4>> {
        let bias = self.control.bias.as_ref()?;
        if let Some((_, _, b)) = self
            .pooled
            .iter()
            .find(|(g, n, _)| *g == grid && *n == batch)
        {
            return Some(b.clone());
        }
        let [tokens, ..] = bias.dims();
        let [h, w] = grid;
        let at_grid = if grid == self.latent {
            bias.clone()
        } else {
            adaptive_avg_pool2d(bias.clone().unsqueeze::<4>(), grid).squeeze_dim(0)
        };
        let row = at_grid
            .reshape([tokens, h * w])
            .swap_dims(0, 1)
            .reshape([1, 1, h * w, tokens]);
        let device = row.device();
        let zeros = |n: usize| Tensor::<4>::zeros([n, 1, h * w, tokens], &device);
        let mut parts = Vec::new();
        if self.row > 0 {
            parts.push(zeros(self.row));
        }
        parts.push(row);
        if batch > self.row + 1 {
            parts.push(zeros(batch - self.row - 1));
        }
        let full = Tensor::cat(parts, 0);
        self.pooled.push((grid, batch, full.clone()));
        Some(full)
    }

    /// Adds a layer's probabilities, [B, heads, h*w, T], to the record.
    fn record(&mut self, grid: [usize; 2], probs: Tensor<4>) {
        if !self.control.record {
            return;
        }
        let [_, _, cells, tokens] = probs.dims();
        let [h, w] = grid;
        let mean = probs
            .narrow(0, self.row, 1)
            .mean_dim(1)
            .reshape([cells, tokens])
            .swap_dims(0, 1)
            .reshape([1, tokens, h, w]);
        let at_latent = if grid == self.latent {
            mean
        } else {
            let options = InterpolateOptions {
                mode: InterpolateMode::Nearest,
                align_corners: false,
                output_size: Some(self.latent),
                scale_factor: None,
            };
            interpolate(mean, options)
        };
        let map = at_latent.squeeze_dim(0);
        self.sum = Some(match self.sum.take() {
            Some(sum) => sum + map,
            None => map,
        });
        self.layers += 1;
    }

    /// The record: the mean of the layers' maps. `None` unless recording.
    pub(crate) fn finish(self) -> Option<AttentionRecord> {
        let layers = self.layers;
        self.sum.map(|sum| sum.div_scalar(layers as f64))
    }
}

/// The fused attention kernel with the control's bias as its input (`kernels::ScoreBias`),
/// where the control only biases (a record needs the probabilities themselves) and the
/// kernels serve this device, type and head size: no score matrix is made. The bias covers
/// query rows 0..R (R: the grid's cells) for keys `first_key`.. (the text tokens).
fn fused_biased_attention(
    [q, k, v]: [&Tensor<3>; 3],
    heads: usize,
    grid: [usize; 2],
    first_key: usize,
    kernels: Kernels,
    state: &mut ControlState,
) -> Option<Tensor<3>> {
    let [b, _, inner] = q.dims();
    let keys = k.dims()[1];
    if state.control.record
        || !crate::kernels::attention_serves(kernels, &q.device(), q.dtype(), inner / heads, keys)
    {
        return None;
    }
    let bias = state.bias(grid, b)?;
    let [_, _, cells, tokens] = bias.dims();
    let values = bias.reshape([b, cells, tokens]).cast(q.dtype());
    let score_bias = crate::kernels::ScoreBias {
        values: &values,
        first_key,
    };
    Some(crate::kernels::attention(
        q.clone().into(),
        k.clone().into(),
        v.clone().into(),
        heads,
        Some(score_bias),
        kernels,
    ))
}

/// Scaled dot-product cross-attention under a control: q [B, L, H*D] over a `grid` of
/// L = h*w cells, k and v [B, T, H*D]; gives [B, L, H*D]. Through the fused kernel where
/// the control only biases (see [`fused_biased_attention`]), else with the scores made.
pub(crate) fn controlled_attention(
    q: Tensor<3>,
    k: Tensor<3>,
    v: Tensor<3>,
    heads: usize,
    grid: [usize; 2],
    kernels: Kernels,
    state: &mut ControlState,
) -> Tensor<3> {
    if let Some(out) = fused_biased_attention([&q, &k, &v], heads, grid, 0, kernels, state) {
        return out;
    }
    let [b, lq, inner] = q.dims();
    let split = |x: Tensor<3>| -> Tensor<4> {
        let [b, l, _] = x.dims();
        x.reshape([b, l, heads, inner / heads]).swap_dims(1, 2)
    };
    let (q, k, v) = (split(q), split(k), split(v));
    let scale = 1.0 / ((inner / heads) as f64).sqrt();
    let mut scores = q.matmul(k.swap_dims(2, 3)).mul_scalar(scale);
    if let Some(bias) = state.bias(grid, b) {
        scores = scores + bias;
    }
    let probs = softmax(scores, 3);
    state.record(grid, probs.clone());
    probs.matmul(v).swap_dims(1, 2).reshape([b, lq, inner])
}

/// Joint attention (the MMDiT's) under a control: q, k, v [B, Li + Lt, H*D], the first Li
/// rows image tokens over a `grid` of patches, the last Lt text tokens; gives [B, Li + Lt,
/// H*D]. The control acts where the UNet's does: on the image queries' scores for the text
/// keys (the bias) and on their probabilities there (the record, renormalised over the text
/// tokens, since an image token here also attends to the image). The text queries run
/// uncontrolled. The image queries run in row chunks whose scores fit the attention budget,
/// so no score matrix larger than one chunk's is held.
#[allow(clippy::too_many_arguments)]
pub(crate) fn controlled_joint_attention(
    q: Tensor<3>,
    k: Tensor<3>,
    v: Tensor<3>,
    heads: usize,
    grid: [usize; 2],
    image_len: usize,
    kernels: Kernels,
    state: &mut ControlState,
) -> Tensor<3> {
    // A bias alone: the image rows' scores for the text keys, in the fused kernel.
    if let Some(out) = fused_biased_attention([&q, &k, &v], heads, grid, image_len, kernels, state)
    {
        return out;
    }
    let [b, l, inner] = q.dims();
    let text_len = l - image_len;
    // The grid's tokens lead the image stream; a reference image's (FLUX Kontext's) follow
    // them and, like the text's, run uncontrolled.
    let cells = grid[0] * grid[1];
    let split = |x: Tensor<3>| -> Tensor<4> {
        let [b, l, _] = x.dims();
        x.reshape([b, l, heads, inner / heads]).swap_dims(1, 2)
    };
    let (q4, k4, v4) = (split(q.clone()), split(k.clone()), split(v.clone()));
    let scale = 1.0 / ((inner / heads) as f64).sqrt();
    let bias = state.bias(grid, b);
    let limit = crate::device::limits(&q4.device()).max_binding_bytes;
    let budget = (crate::nn::ATTENTION_SCORE_BUDGET as u64).min(limit) as usize;
    let rows = (budget / (b * heads * l * 4)).clamp(1, cells);
    let mut outputs = Vec::new();
    let mut maps = Vec::new();
    for start in (0..cells).step_by(rows) {
        let len = rows.min(cells - start);
        let mut scores = q4
            .clone()
            .narrow(2, start, len)
            .matmul(k4.clone().swap_dims(2, 3))
            .mul_scalar(scale);
        if let Some(bias) = &bias {
            let text_bias = bias.clone().narrow(2, start, len);
            let image_part = Tensor::<4>::zeros([b, 1, len, image_len], &text_bias.device());
            scores = scores + Tensor::cat(vec![image_part, text_bias], 3);
        }
        let probs = softmax(scores, 3);
        if state.control.record {
            let text = probs.clone().narrow(3, image_len, text_len);
            let total = text.clone().sum_dim(3);
            maps.push(text.div(total).mean_dim(1));
        }
        outputs.push(probs.matmul(v4.clone()));
    }
    if !maps.is_empty() {
        state.record(grid, Tensor::cat(maps, 2));
    }
    let image = Tensor::cat(outputs, 2)
        .swap_dims(1, 2)
        .reshape([b, cells, inner]);
    let rest = crate::nn::multi_head_attention(
        q.narrow(1, cells, l - cells).into(),
        k.into(),
        v.into(),
        heads,
        false,
        crate::kernels::Kernels::Burn,
    );
    Tensor::cat(vec![image, rest], 1)
}
