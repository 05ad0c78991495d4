//! The few layers every model here is made of, as plain structs over burn tensors, loaded
//! straight from diffusers-named weights. Weight layouts follow PyTorch's on disk.

use burn::tensor::activation::silu;
use burn::tensor::module::{conv2d, layer_norm, linear};
use burn::tensor::ops::ConvOptions;
use burn::tensor::{DType, Device, FloatDType, IndexingUpdateOp, Int, Tensor, TensorData};

use crate::error::Result;
use crate::kernels::{self, Kernels};
use crate::views::{ChannelShift, Columns};
use crate::weights::Scope;

/// diffusers' sinusoidal embedding of one number (a timestep, a size): `dim` values, cosines
/// first where `flip_sin_to_cos`, frequencies `exp(-ln(10000) i / (dim / 2 - freq_shift))`;
/// in f32 throughout, as diffusers computes it.
pub fn sinusoid(value: f64, dim: usize, flip_sin_to_cos: bool, freq_shift: f64) -> Vec<f32> {
    let half = dim / 2;
    let denom = half as f32 - freq_shift as f32;
    let mut row = vec![0f32; dim];
    for i in 0..half {
        let freq = (-(10000f32.ln()) * i as f32 / denom).exp();
        let arg = value as f32 * freq;
        let (sin, cos) = (arg.sin(), arg.cos());
        let (first, second) = if flip_sin_to_cos {
            (cos, sin)
        } else {
            (sin, cos)
        };
        row[i] = first;
        row[half + i] = second;
    }
    row
}

pub struct Linear {
    /// Stored as [in, out]: burn's `linear` does not transpose, PyTorch's layout is [out, in].
    weight: Tensor<2>,
    bias: Option<Tensor<1>>,
    kernels: Kernels,
}

impl Linear {
    pub fn load(w: &Scope, d_in: usize, d_out: usize, bias: bool) -> Result<Self> {
        Self::load_side_by_side(&[(w.clone(), d_out)], d_in, bias)
    }

    /// Projections of one input, each from `d_in` to its own width, as one: their outputs
    /// side by side along the last axis. Attention's q, k and v then take one matmul instead
    /// of three, and all of a UNet's time-embedding projections one instead of one per block.
    pub fn load_side_by_side(parts: &[(Scope, usize)], d_in: usize, bias: bool) -> Result<Self> {
        let weights: Vec<_> = parts.iter().map(|(w, d)| (w.clone(), [*d, d_in])).collect();
        let weight = Scope::stacked(&weights, "weight")?.transpose();
        let bias = if bias {
            let biases: Vec<_> = parts.iter().map(|(w, d)| (w.clone(), [*d])).collect();
            Some(Scope::stacked(&biases, "bias")?)
        } else {
            None
        };
        Ok(Self {
            weight,
            bias,
            kernels: parts
                .first()
                .map_or_else(Kernels::default, |(w, _)| w.kernels()),
        })
    }

    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        self.product(x, self.bias.as_ref())
    }

    /// `residual + self.forward(x)`: on a GPU the bias and the residual are added in one
    /// kernel rather than two.
    pub fn forward_plus(&self, x: Tensor<3>, residual: Tensor<3>) -> Tensor<3> {
        match &self.bias {
            Some(bias) if self.kernels.fused_for(&x.device(), x.dtype()) => {
                kernels::bias_residual(self.forward_unbiased(x), bias, residual)
            }
            _ => residual + self.forward(x),
        }
    }

    /// The product with the weight alone, for kernels that add the bias themselves.
    pub fn forward_unbiased<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        self.product(x, None)
    }

    /// `x` times the weight, plus `bias`: by a matmul kernel of ours where one suits the
    /// adapter (`kernels::matmul_kernel`: cooperative matrices in f16, the lanes matmul on
    /// software adapters), else burn's `linear`.
    fn product<const D: usize>(&self, x: Tensor<D>, bias: Option<&Tensor<1>>) -> Tensor<D> {
        let [d_in, d_out] = self.weight.dims();
        if let Some(kernel) =
            kernels::matmul_kernel(self.kernels, &x.device(), x.dtype(), d_in, d_out)
        {
            let mut dims = x.dims();
            let rows = x.reshape([-1, d_in as i64]);
            dims[D - 1] = d_out;
            return kernels::matmul(rows, &self.weight, bias, kernel).reshape(dims);
        }
        linear(x, self.weight.clone(), bias.cloned())
    }

    /// The kernels this layer (and what is computed from its output) runs.
    pub fn kernels(&self) -> Kernels {
        self.kernels
    }

    pub fn bias(&self) -> Option<&Tensor<1>> {
        self.bias.as_ref()
    }
}

pub struct Conv2d {
    weight: Tensor<4>,
    bias: Option<Tensor<1>>,
    options: ConvOptions<2>,
    kernels: Kernels,
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
            bias: Some(w.tensor("bias", [c_out])?),
            options: ConvOptions::new([stride, stride], [padding, padding], [1, 1], 1),
            kernels: w.kernels(),
        })
    }

    /// The same without a bias (TAESD's strided and skip convolutions have none).
    pub fn load_unbiased(
        w: &Scope,
        c_in: usize,
        c_out: usize,
        kernel: usize,
        stride: usize,
    ) -> Result<Self> {
        Ok(Self {
            weight: w.tensor("weight", [c_out, c_in, kernel, kernel])?,
            bias: None,
            options: ConvOptions::new([stride, stride], [kernel / 2; 2], [1, 1], 1),
            kernels: w.kernels(),
        })
    }

    /// A kernel-3, stride-1, same-size convolution: the most common one here.
    pub fn load3(w: &Scope, c_in: usize, c_out: usize) -> Result<Self> {
        Self::load(w, c_in, c_out, 3, 1, 1)
    }

    pub fn load1(w: &Scope, c_in: usize, c_out: usize) -> Result<Self> {
        Self::load(w, c_in, c_out, 1, 1, 0)
    }

    /// Adds `extra` to the bias (a per-channel term applied after the convolution).
    pub fn add_to_bias(&mut self, extra: Tensor<1>) {
        self.bias = Some(match self.bias.take() {
            Some(bias) => bias + extra,
            None => extra,
        });
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        // Where a matmul kernel of ours suits the adapter (cooperative matrices in f16, the
        // lanes matmul on software adapters with subgroups: 2-4x the gathered convolution on
        // lavapipe), it reads the input in place. On other wgpu adapters, the patches
        // gathered into a matrix for burn's matmul: 2-10x faster than burn's direct
        // convolution on an H200 and 2-4x on lavapipe (docs/bench.md, "On a real GPU").
        let device = x.device();
        let [c_out, c_in, _, _] = self.weight.dims();
        if let Some(kernel) = kernels::matmul_kernel(self.kernels, &device, x.dtype(), c_in, c_out)
        {
            return kernels::conv2d_fused(
                x,
                &self.weight,
                self.bias.as_ref(),
                self.options.stride[0],
                self.options.padding[0].0,
                kernel,
            );
        }
        if self.kernels.fused_for(&device, x.dtype()) {
            return kernels::conv2d_im2col(
                x,
                &self.weight,
                self.bias.as_ref(),
                self.options.stride[0],
                self.options.padding[0].0,
                kernels::GemmCuts::default(),
            );
        }
        conv2d(
            x,
            self.weight.clone(),
            self.bias.clone(),
            self.options.clone(),
        )
    }

    /// The same convolution over row bands, exactly: each band borrows the rows its kernel
    /// reaches into from its neighbours (a halo), and the rows computed from the halo are
    /// dropped. Stride 1 and "same" padding only, which is all the decoder has.
    pub fn forward_bands(&self, x: &Bands) -> Bands {
        assert!(
            self.options.stride == [1, 1],
            "banded convolutions are stride-1 and same-size"
        );
        let halo = self.weight.dims()[2] / 2;
        if halo == 0 {
            return x.map(|band| self.forward(band));
        }
        let bands = &x.0;
        Bands(
            (0..bands.len())
                .map(|i| {
                    let band = bands[i].clone();
                    let rows = band.dims()[2];
                    let mut parts = Vec::with_capacity(3);
                    let top = (i > 0).then(|| {
                        let above = bands[i - 1].dims()[2];
                        bands[i - 1].clone().narrow(2, above - halo, halo)
                    });
                    let bottom =
                        (i + 1 < bands.len()).then(|| bands[i + 1].clone().narrow(2, 0, halo));
                    parts.extend(top.clone());
                    parts.push(band);
                    parts.extend(bottom);
                    let out = self.forward(Tensor::cat(parts, 2));
                    out.narrow(2, if top.is_some() { halo } else { 0 }, rows)
                })
                .collect(),
        )
    }
}

pub struct GroupNorm {
    groups: usize,
    eps: f64,
    gamma: Tensor<1>,
    beta: Tensor<1>,
    kernels: Kernels,
}

impl GroupNorm {
    pub fn load(w: &Scope, groups: usize, channels: usize, eps: f64) -> Result<Self> {
        Ok(Self {
            groups,
            eps,
            gamma: w.tensor("weight", [channels])?,
            beta: w.tensor("bias", [channels])?,
            kernels: w.kernels(),
        })
    }

    /// Normalises [B, C, H, W] over each group of channels and all positions. The statistics
    /// are taken in f32 whatever the device computes in: an f16 sum over a group's thousands
    /// of values loses most of its digits.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        self.forward_then(x, false)
    }

    pub fn forward_silu(&self, x: Tensor<4>) -> Tensor<4> {
        self.forward_then(x, true)
    }

    /// `forward_silu(x + shift)`, with the shift's one value per sample and channel added
    /// inside the norm's kernel on a GPU rather than by an addition of its own.
    pub fn forward_silu_shifted(&self, x: Tensor<4>, shift: &ChannelShift) -> Tensor<4> {
        if self.kernels.fused_for(&x.device(), x.dtype()) {
            return kernels::group_norm_silu_shifted(
                x,
                &self.gamma,
                &self.beta,
                shift,
                self.groups,
                self.eps,
            );
        }
        let [b, c, _, _] = x.dims();
        let values = shift.table.clone().narrow(1, shift.first, c);
        self.forward_silu(x + values.reshape([b, c, 1, 1]))
    }

    /// The fused kernels of shaders/ on a GPU (`kernels::group_norm`); burn's operations
    /// elsewhere.
    fn forward_then(&self, x: Tensor<4>, then_silu: bool) -> Tensor<4> {
        if self.kernels.fused_for(&x.device(), x.dtype()) {
            return kernels::group_norm(
                x,
                &self.gamma,
                &self.beta,
                self.groups,
                self.eps,
                then_silu,
            );
        }
        let normed = self.composed(x);
        if then_silu { silu(normed) } else { normed }
    }

    fn composed(&self, x: Tensor<4>) -> Tensor<4> {
        let [b, c, h, wd] = x.dims();
        let dtype = x.dtype();
        let n = (c / self.groups) * h * wd;
        let grouped: Tensor<3> = x.reshape([b, self.groups, n]).cast(FloatDType::F32);
        let mean = sum_last(grouped.clone()).div_scalar(n as f64);
        let centred = grouped - mean;
        let var = sum_last(centred.clone().powi_scalar(2)).div_scalar(n as f64);
        let normed = centred.div(var.add_scalar(self.eps).sqrt());
        self.affine(normed.reshape([b, c, h, wd]).cast(dtype))
    }

    /// The same over row bands, with the statistics of the whole tensor: the mean from every
    /// band's sums, then the variance from every band's squared deviations from it (two
    /// passes, as accurate as the whole tensor's), each band normalised with both.
    pub fn forward_bands_silu(&self, x: &Bands) -> Bands {
        let [b, c, _, wd] = x.0[0].dims();
        let dtype = x.0[0].dtype();
        let grouped = |band: &Tensor<4>| -> Tensor<3> {
            let rows = band.dims()[2];
            band.clone()
                .reshape([b, self.groups, (c / self.groups) * rows * wd])
                .cast(FloatDType::F32)
        };
        let count = ((c / self.groups) * x.rows() * wd) as f64;
        let total = |f: &dyn Fn(Tensor<3>) -> Tensor<3>| {
            x.0.iter()
                .map(|band| sum_last(f(grouped(band))))
                .reduce(|a, b| a + b)
                .expect("at least one band")
                .div_scalar(count)
        };
        let mean = total(&|g| g);
        let var = total(&|g| (g - mean.clone()).powi_scalar(2));
        let scale = var.add_scalar(self.eps).sqrt();
        x.map(|band| {
            let rows = band.dims()[2];
            let normed = (grouped(&band) - mean.clone()).div(scale.clone());
            silu(self.affine(normed.reshape([b, c, rows, wd]).cast(dtype)))
        })
    }

    fn affine(&self, normed: Tensor<4>) -> Tensor<4> {
        let c = normed.dims()[1];
        normed * self.gamma.clone().reshape([1, c, 1, 1]) + self.beta.clone().reshape([1, c, 1, 1])
    }
}

/// The longest axis summed in one reduction. Past 2^18 elements along an axis, burn's wgpu
/// reduction (cubecl 0.11) returns wrong sums: on lavapipe, the mean of 2^18 + 1 unit normals
/// comes back off by 0.75. SD's VAE decoder group-normalises 2M values per group at 512x512.
const LONGEST_SUM: usize = 1 << 16;

/// Sums the last axis of `x` (keeping it, with length 1), in slices of at most
/// `LONGEST_SUM` whose partial sums are then added.
pub fn sum_last(x: Tensor<3>) -> Tensor<3> {
    let n = x.dims()[2];
    if n <= LONGEST_SUM {
        return x.sum_dim(2);
    }
    (0..n)
        .step_by(LONGEST_SUM)
        .map(|start| {
            x.clone()
                .narrow(2, start, LONGEST_SUM.min(n - start))
                .sum_dim(2)
        })
        .reduce(|a, b| a + b)
        .expect("a non-empty axis")
}

pub struct LayerNorm {
    gamma: Tensor<1>,
    beta: Tensor<1>,
    eps: f64,
    kernels: Kernels,
}

impl LayerNorm {
    pub fn load(w: &Scope, dim: usize, eps: f64) -> Result<Self> {
        Ok(Self {
            gamma: w.tensor("weight", [dim])?,
            beta: w.tensor("bias", [dim])?,
            eps,
            kernels: w.kernels(),
        })
    }

    /// A layer norm without a learned scale or shift (the MMDiT's blocks: their adaptive
    /// modulation supplies both), on the same kernels as a learned one.
    pub fn without_affine(w: &Scope, dim: usize, eps: f64) -> Self {
        Self {
            gamma: w.constant([dim], 1.0),
            beta: w.constant([dim], 0.0),
            eps,
            kernels: w.kernels(),
        }
    }

    /// In f32 whatever the device computes in, as [`GroupNorm`].
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let dtype = x.dtype();
        if self.kernels.fused_for(&x.device(), dtype) {
            // Each row is a group of one channel whose positions are the row's values.
            let shape = x.shape();
            let dim = shape[D - 1];
            let rows = shape.num_elements() / dim;
            let as_groups = x.reshape([rows, dim, 1, 1]);
            let normed =
                kernels::group_norm(as_groups, &self.gamma, &self.beta, 1, self.eps, false);
            return normed.reshape(shape);
        }
        if dtype == DType::F32 {
            return layer_norm(x, self.gamma.clone(), Some(self.beta.clone()), self.eps);
        }
        let f32 = |t: Tensor<1>| t.cast(FloatDType::F32);
        layer_norm(
            x.cast(FloatDType::F32),
            f32(self.gamma.clone()),
            Some(f32(self.beta.clone())),
            self.eps,
        )
        .cast(dtype)
    }
}

/// Root-mean-square norm over the last axis with a learned scale and no shift (T5's layer
/// norm; the MMDiT's per-head query and key norm): in f32 whatever the device computes in.
pub struct RmsNorm {
    weight: Tensor<1>,
    eps: f64,
}

impl RmsNorm {
    pub fn load(w: &Scope, dim: usize, eps: f64) -> Result<Self> {
        Ok(Self {
            weight: w.tensor("weight", [dim])?,
            eps,
        })
    }

    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let dtype = x.dtype();
        let x = x.cast(FloatDType::F32);
        let rms = x
            .clone()
            .square()
            .mean_dim(D - 1)
            .add_scalar(self.eps)
            .sqrt();
        let dim = self.weight.dims()[0];
        let mut shape = [1; D];
        shape[D - 1] = dim;
        let weight = self.weight.clone().cast(FloatDType::F32).reshape(shape);
        (x.div(rms) * weight).cast(dtype)
    }
}

pub struct Embedding {
    /// The table, in row blocks the device can bind (usually one), and rows appended later
    /// (textual-inversion embeddings) as blocks of their own.
    blocks: Vec<Tensor<2>>,
    /// The id of each block's first row.
    starts: Vec<u32>,
}

impl Embedding {
    pub fn load(w: &Scope, count: usize, dim: usize) -> Result<Self> {
        let blocks = w.row_blocks("weight", [count, dim])?;
        let mut starts = Vec::with_capacity(blocks.len());
        let mut next = 0u32;
        for b in &blocks {
            starts.push(next);
            next += b.dims()[0] as u32;
        }
        Ok(Self { blocks, starts })
    }

    /// Rows in the table.
    pub fn rows(&self) -> usize {
        self.blocks.iter().map(|b| b.dims()[0]).sum()
    }

    pub fn dim(&self) -> usize {
        self.blocks[0].dims()[1]
    }

    /// Appends `rows` ([n, dim]) to the table; returns the id of the first.
    pub fn extend(&mut self, rows: Tensor<2>) -> u32 {
        let first = self.rows() as u32;
        self.starts.push(first);
        self.blocks.push(rows);
        first
    }

    /// Looks up rows for `ids` (host values, all below the table's row count), giving
    /// [B, L, dim] for `shape` [B, L]. A table in several blocks (larger than the device
    /// binds at once, or extended) is looked up block by block, each block's rows put in
    /// place.
    pub fn forward(&self, ids: &[u32], shape: [usize; 2], device: &Device) -> Tensor<3> {
        let [b, l] = shape;
        let dim = self.dim();
        let index = |values: Vec<i64>| {
            let n = values.len();
            Tensor::<1, Int>::from_data(TensorData::new(values, [n]), device)
        };
        if self.blocks.len() == 1 {
            let ids = index(ids.iter().map(|&i| i as i64).collect());
            return self.blocks[0].clone().select(0, ids).reshape([b, l, dim]);
        }
        let mut out = Tensor::<2>::zeros([b * l, dim], device);
        for (block, &first) in self.blocks.iter().zip(&self.starts) {
            let (positions, rows): (Vec<i64>, Vec<i64>) = ids
                .iter()
                .enumerate()
                .filter(|&(_, &id)| id >= first && id - first < block.dims()[0] as u32)
                .map(|(at, &id)| (at as i64, (id - first) as i64))
                .unzip();
            if !positions.is_empty() {
                let found = block.clone().select(0, index(rows));
                out = out.select_assign(0, index(positions), found, IndexingUpdateOp::Add);
            }
        }
        out.reshape([b, l, dim])
    }
}

/// The most bytes one attention score block may take. Many adapters bind at most 128 MiB per
/// storage buffer, and a 512x512 image's self-attention would need 1 GiB of scores at once
/// (SD 2.x at 768x768: 3.4 GiB), so queries are processed in chunks below this size.
pub const ATTENTION_SCORE_BUDGET: usize = 128 << 20;

/// [B, C, H, W] as [B, H*W, C] tokens. Free where the image is stored channels-last (as the
/// GPU's group norms write it), one copy otherwise.
pub fn to_tokens(x: Tensor<4>) -> Tensor<3> {
    let [b, c, h, w] = x.dims();
    x.permute([0, 2, 3, 1]).reshape([b, h * w, c])
}

/// [B, H*W, C] tokens as a [B, C, H, W] image stored channels-last, without a copy: what
/// burn's GPU convolutions read in place.
pub fn to_image(x: Tensor<3>, [h, w]: [usize; 2]) -> Tensor<4> {
    let [b, _, c] = x.dims();
    x.reshape([b, h, w, c]).permute([0, 3, 1, 2])
}

/// Scaled dot-product attention over heads packed in the last dimension:
/// q [B, Lq, H*D], k and v [B, Lk, H*D] give [B, Lq, H*D]; with the fused kernel where
/// `kernels` allows it.
pub fn multi_head_attention(
    q: Columns,
    k: Columns,
    v: Columns,
    heads: usize,
    causal: bool,
    kernels: Kernels,
) -> Tensor<3> {
    use burn::tensor::module::attention;
    use burn::tensor::ops::AttentionModuleOptions;

    let inner = q.width;
    let (device, dtype, keys) = (q.rows.device(), q.rows.dtype(), k.rows.dims()[1]);
    if !causal && kernels::attention_serves(kernels, &device, dtype, inner / heads, keys) {
        return kernels::attention(q, k, v, heads, None, kernels);
    }
    let (q, k, v) = (q.into_tensor(), k.into_tensor(), v.into_tensor());
    let [b, lq, _] = q.dims();
    let lk = k.dims()[1];
    let split = |x: Tensor<3>| -> Tensor<4> {
        let [b, l, _] = x.dims();
        x.reshape([b, l, heads, inner / heads]).swap_dims(1, 2)
    };
    let (q, k, v) = (split(q), split(k), split(v));
    let options = AttentionModuleOptions {
        scale: None,
        softcap: None,
        is_causal: causal,
    };
    // Below the adapter's binding limit too, where that is smaller.
    let limit = crate::device::limits(&q.device()).max_binding_bytes;
    let budget = (ATTENTION_SCORE_BUDGET as u64).min(limit) as usize;
    let rows = (budget / (b * heads * lk * 4)).max(1);
    let out = if causal || rows >= lq {
        // Causal masks are only used by the text encoder, whose scores are tiny.
        attention(q, k, v, None, None, options)
    } else {
        let parts = (0..lq)
            .step_by(rows)
            .map(|start| {
                let len = rows.min(lq - start);
                attention(
                    q.clone().narrow(2, start, len),
                    k.clone(),
                    v.clone(),
                    None,
                    None,
                    options,
                )
            })
            .collect();
        Tensor::cat(parts, 2)
    };
    out.swap_dims(1, 2).reshape([b, lq, inner])
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;
    use burn::tensor::Distribution;

    #[test]
    fn chunked_attention_equals_one_block() {
        let device = crate::device::cpu();
        // 1 batch x 2 heads x 9000 keys x 4 bytes: 72 KB a query row, so the 128 MiB
        // budget takes 1864 rows and 9000 queries run in 5 chunks (the last one short).
        let (b, l, inner, heads) = (1, 9000, 8, 2);
        let q = Tensor::<3>::random([b, l, inner], Distribution::Normal(0.0, 1.0), &device);
        let k = Tensor::<3>::random([b, l, inner], Distribution::Normal(0.0, 1.0), &device);
        let v = Tensor::<3>::random([b, l, inner], Distribution::Normal(0.0, 1.0), &device);
        let chunked = multi_head_attention(
            q.clone().into(),
            k.clone().into(),
            v.clone().into(),
            heads,
            false,
            Kernels::Burn,
        );

        let split =
            |x: Tensor<3>| -> Tensor<4> { x.reshape([b, l, heads, inner / heads]).swap_dims(1, 2) };
        let whole = burn::tensor::module::attention(
            split(q),
            split(k),
            split(v),
            None,
            None,
            burn::tensor::ops::AttentionModuleOptions {
                scale: None,
                softcap: None,
                is_causal: false,
            },
        )
        .swap_dims(1, 2)
        .reshape([b, l, inner]);
        let diff: Vec<f32> = (chunked - whole)
            .abs()
            .max()
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        assert!(diff[0] < 1e-5, "chunked attention differs by {}", diff[0]);
    }
}

/// A [B, C, H, W] tensor held as horizontal bands (consecutive row ranges, in order), for
/// activations larger than one buffer may be: SD's VAE decoder holds 256 channels at full
/// resolution, 256 MiB at 512x512, twice WebGPU's default binding limit. The layers that
/// run on bands ([`Conv2d::forward_bands`], [`GroupNorm::forward_bands_silu`], and any
/// row-local operation through [`Bands::map`]) give the whole tensor's result exactly.
#[derive(Clone)]
pub struct Bands(pub Vec<Tensor<4>>);

impl Bands {
    /// Splits `x` into `count` bands of rows as equal as can be.
    pub fn split(x: Tensor<4>, count: usize) -> Self {
        let rows = x.dims()[2];
        let count = count.clamp(1, rows);
        Self(
            (0..count)
                .map(|i| {
                    let (start, end) = (i * rows / count, (i + 1) * rows / count);
                    x.clone().narrow(2, start, end - start)
                })
                .collect(),
        )
    }

    /// The whole tensor again (which must then fit in one buffer).
    pub fn join(self) -> Tensor<4> {
        Tensor::cat(self.0, 2)
    }

    /// All the rows, over every band.
    pub fn rows(&self) -> usize {
        self.0.iter().map(|band| band.dims()[2]).sum()
    }

    /// Applies an operation that works row by row (elementwise, or nearest upsampling) to
    /// each band.
    pub fn map(&self, f: impl Fn(Tensor<4>) -> Tensor<4>) -> Self {
        Self(self.0.iter().cloned().map(f).collect())
    }

    /// Band-wise sum with another tensor banded the same way.
    pub fn add(&self, other: &Self) -> Self {
        Self(
            self.0
                .iter()
                .zip(&other.0)
                .map(|(a, b)| a.clone() + b.clone())
                .collect(),
        )
    }
}
