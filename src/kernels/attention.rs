//! Attention without a score matrix (shaders/attention*.wgsl): which kernel serves a head on
//! an adapter, the calls, and the text each kernel's loops are written out into.

use burn::backend::Dispatch;
use burn::tensor::{DType, Device, Tensor};
use burn_cubecl::cubecl::prelude::{CubeCount, CubeDim};
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::tensor::CubeTensor;

use super::Wgsl;
use super::dispatch::{launch, output_like, same_tensor, words};
use super::{Fused, Kernels};
use crate::views::Columns;

/// The largest head the attention kernel takes: it keeps a query and an output row of this
/// many values per invocation in registers (SD 1.5's largest head is 160). Larger ones, such as
/// the VAE's single 512-channel head, use burn's kernels.
pub const MAX_HEAD_DIM: usize = 160;

/// Attention without a mask over heads packed in the last dimension: q [B, Lq, H*D], k and v
/// [B, Lk, H*D], each read in place as columns of wider rows where a fused projection made
/// them, give [B, Lq, H*D]; what `nn::multi_head_attention` computes when not causal. With
/// `bias`, that is added to the scores it covers before the softmax (an intervention's
/// control), still without a score matrix. `kernels` is the model's choice, which decides
/// whether f16 attention may multiply in cooperative matrices ([`attention_kernel`]).
pub fn attention(
    q: Columns,
    k: Columns,
    v: Columns,
    heads: usize,
    bias: Option<ScoreBias>,
    kernels: Kernels,
) -> Tensor<3> {
    let device = q.rows.device();
    let kernel = attention_kernel(kernels, &device, q.rows.dtype(), q.width / heads);
    attention_with(q, k, v, heads, bias, kernel)
}

/// The most keys the fused attention takes on a software adapter without subgroups. There
/// it runs shaders/attention.wgsl, and lavapipe (Mesa 22.3, LLVM 15) computes that kernel
/// wrongly beyond about 512 keys (768 keys: outputs off by more than 1, some never written),
/// though it is right at 512 and below and right on an H200 at 4096; the tiled kernel is
/// right there but slower than burn's attention. So past this, such adapters compose burn's
/// operations ([`attention_serves`]); with subgroups they run shaders/attention_lanes.wgsl,
/// which is right at any length. No model the browser ships reaches it (the default
/// model's largest self-attention has 256 keys).
pub const SOFTWARE_ATTENTION_MAX_KEYS: usize = 512;

/// Whether the fused attention serves an attention of q [B, Lq, `heads` x D] of type `dtype`
/// on `device` over `keys` keys, for a model loaded with `kernels`: where the model's kernels
/// are fused on this device and type, heads hold at most [`MAX_HEAD_DIM`] values, and (on
/// software adapters that run the untiled kernel) keys are at most
/// [`SOFTWARE_ATTENTION_MAX_KEYS`]. Otherwise callers compose burn's operations.
pub fn attention_serves(
    kernels: Kernels,
    device: &Device,
    dtype: DType,
    head_dim: usize,
    keys: usize,
) -> bool {
    // Where lavapipe's fault would strike: the untiled kernel on a software adapter.
    let untiled_in_software = crate::device::limits(device).software
        && attention_kernel(kernels, device, dtype, head_dim) == AttentionKernel::Untiled;
    head_dim <= MAX_HEAD_DIM
        && kernels.fused_for(device, dtype)
        && (keys <= SOFTWARE_ATTENTION_MAX_KEYS || !untiled_in_software)
}

/// Which of the fused attention kernels runs: they compute the same.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttentionKernel {
    /// shaders/attention.wgsl: an invocation per query row, no workgroup memory.
    Untiled,
    /// shaders/attention_tiled.wgsl, with blocks of this many keys in workgroup memory.
    Tiled { keys: u32 },
    /// shaders/attention_lanes.wgsl, a subgroup of this many lanes per workgroup.
    Lanes { lanes: u32 },
    /// shaders/attention_coop.wgsl: f16 only, both products in cooperative matrices of
    /// `size` x `size`, by workgroups of `subgroups` subgroups of `lanes` (each `size` query
    /// rows), over blocks of `keys` keys ([`coop_attention_fits`] says which fit an adapter).
    Coop {
        size: u32,
        lanes: u32,
        subgroups: u32,
        keys: u32,
    },
}

/// The attention kernel for heads of `head_dim` values of type `dtype` on `device`, for a
/// model loaded with `kernels`. Where the device multiplies f16 in cooperative matrices
/// (tensor cores, natively), f16 attention multiplies in them, as f16 products do
/// ([`matmul_kernel`](super::matmul_kernel): with [`Kernels::Matrices`] on software
/// adapters too, with [`Kernels::NoMatrices`] never), in the largest block that fits.
/// Otherwise heads that are no multiple of 4 values take the untiled kernel (the others read
/// vec4s). On software adapters, where barriers are slow, the lanes kernel where the adapter
/// has subgroups (6x burn's attention on lavapipe at SD 1.5's 64x64 self-attention,
/// docs/bench.md), else the untiled one. On GPUs the tiled kernel with 16 keys, the fastest
/// block on an H200 (twice as fast as 64 at SD 1.5's 64x64 self-attention), or fewer where
/// the adapter's workgroup memory holds fewer.
pub fn attention_kernel(
    kernels: Kernels,
    device: &Device,
    dtype: DType,
    head_dim: usize,
) -> AttentionKernel {
    let limits = crate::device::limits(device);
    let matrices = match kernels {
        Kernels::Matrices => true,
        Kernels::NoMatrices | Kernels::Burn => false,
        Kernels::Fused => !limits.software,
    };
    if let (true, DType::F16, Some(kernel)) = (matrices, dtype, coop_attention(&limits, head_dim)) {
        return kernel;
    }
    if !head_dim.is_multiple_of(4) {
        return AttentionKernel::Untiled;
    }
    if limits.software {
        return match limits.subgroup_lanes {
            Some(lanes) => AttentionKernel::Lanes { lanes },
            None => AttentionKernel::Untiled,
        };
    }
    if limits.workgroup_invocations < 64 {
        return AttentionKernel::Untiled;
    }
    let fitting = limits.workgroup_bytes as usize / (2 * 4 * head_dim);
    match fitting.min(16) {
        0..4 => AttentionKernel::Untiled,
        keys => AttentionKernel::Tiled {
            keys: 1 << keys.ilog2(),
        },
    }
}

/// The coop attention's largest block that fits the adapter for heads of `head_dim` values,
/// where it multiplies in cooperative matrices: the most subgroups (query rows per
/// workgroup, each key and value copied once for all of them), then the most keys per
/// block (fewer barriers per key).
pub(super) fn coop_attention(
    limits: &crate::device::Limits,
    head_dim: usize,
) -> Option<AttentionKernel> {
    let (size, lanes) = (limits.coop_size?, limits.subgroup_lanes?);
    [4, 2, 1].into_iter().find_map(|subgroups| {
        [64, 32, 16, 8]
            .into_iter()
            .map(|keys| AttentionKernel::Coop {
                size,
                lanes,
                subgroups,
                keys,
            })
            .find(|&kernel| coop_attention_fits(limits, kernel, head_dim))
    })
}

/// Whether the coop attention `kernel` (an [`AttentionKernel::Coop`]) fits the adapter for
/// heads of `head_dim` values: its invocations and workgroup memory within the adapter's
/// limits, and its block of keys in whole matrices. The memory: the keys (first the
/// queries) and values of a block in f16, each row's scores in f32 and weights in f16, its
/// output sums in f32 and two statistics, the rows of each padded (shaders/attention_coop.wgsl).
pub fn coop_attention_fits(
    limits: &crate::device::Limits,
    kernel: AttentionKernel,
    head_dim: usize,
) -> bool {
    let AttentionKernel::Coop {
        size,
        lanes,
        subgroups,
        keys,
    } = kernel
    else {
        return false;
    };
    let tiles = CoopAttentionTiles::new(size, subgroups, keys, head_dim as u32);
    keys.is_multiple_of(size)
        && subgroups * lanes <= limits.workgroup_invocations
        && tiles.bytes() <= limits.workgroup_bytes
}

/// The coop attention's tiles in workgroup memory, in values, as shaders/attention_coop.wgsl
/// declares them: what [`coop_attention_fits`] weighs and what the kernel's text is written
/// with. Each tile's rows are padded by 16 bytes (8 f16 or 4 f32 values).
struct CoopAttentionTiles {
    /// The head's values padded to whole matrices.
    padded: u32,
    /// The block's keys (first the queries) and its values, in f16.
    keys: u32,
    values: u32,
    /// Each row's scores (f32) and weights (f16), its output sums (f32), and its running
    /// maximum and total (f32).
    scores: u32,
    weights: u32,
    sums: u32,
    statistics: u32,
}

impl CoopAttentionTiles {
    fn new(size: u32, subgroups: u32, keys: u32, head_dim: u32) -> Self {
        let (rows, padded) = (subgroups * size, head_dim.div_ceil(size) * size);
        Self {
            padded,
            keys: keys.max(rows) * (padded + 8),
            values: keys * (padded + 8),
            scores: rows * (keys + 4),
            weights: rows * (keys + 8),
            sums: rows * (padded + 4),
            statistics: 2 * rows,
        }
    }

    fn bytes(&self) -> u32 {
        2 * (self.keys + self.values + self.weights)
            + 4 * (self.scores + self.sums + self.statistics)
    }
}

/// [`attention`] by the kernel given (which must suit the adapter: a tiled block that fits its
/// workgroup memory, lanes that are its subgroup's, a coop kernel that fits and f16 tensors;
/// [`attention_kernel`] picks one that does).
pub fn attention_with(
    q: Columns,
    k: Columns,
    v: Columns,
    heads: usize,
    bias: Option<ScoreBias>,
    kernel: AttentionKernel,
) -> Tensor<3> {
    assert_eq!(
        k.rows.dims(),
        v.rows.dims(),
        "k and v are read with one row stride"
    );
    let [bias_rows, bias_cols] = bias.map_or([0, 0], |b| {
        let [_, rows, cols] = b.values.dims();
        [rows as u32, cols as u32]
    });
    let columns = AttentionColumns {
        width: q.width as u32,
        q: q.first as u32,
        k: k.first as u32,
        v: v.first as u32,
        kernel,
        bias_rows,
        bias_first: bias.map_or(0, |b| b.first_key as u32),
        bias_cols,
    };
    let bias_values = bias.map_or_else(|| q.rows.clone(), |b| b.values.clone());
    Tensor::from_dispatch(<Dispatch as Fused>::attention(
        q.rows.into_dispatch(),
        k.rows.into_dispatch(),
        v.rows.into_dispatch(),
        bias_values.into_dispatch(),
        heads as u32,
        columns,
    ))
}

/// Where attention's q, k and v lie in their rows, in elements: `width` columns each, from
/// columns `q`, `k` and `v` on; the kernel; and the block of scores a bias covers (none: 0
/// rows).
#[derive(Clone, Copy, Debug)]
pub struct AttentionColumns {
    width: u32,
    q: u32,
    k: u32,
    v: u32,
    kernel: AttentionKernel,
    bias_rows: u32,
    bias_first: u32,
    bias_cols: u32,
}

/// An additive bias on attention's scores before the softmax, the same for every head:
/// `values` [B, R, C] is added to the scores of query rows 0..R for keys `first_key`..
/// `first_key + C`; the other scores are left as they are. An intervention's per-token,
/// per-cell bias (`models::attention_control`): for a UNet's cross-attention every query row
/// and every text token; for an MMDiT's joint attention the image rows and the text keys.
#[derive(Clone, Copy, Debug)]
pub struct ScoreBias<'a> {
    pub values: &'a Tensor<3>,
    pub first_key: usize,
}

/// [`Fused::attention`] on a wgpu device: binds q, k and v once per distinct tensor and
/// launches the kernel `columns` names.
pub(super) fn dispatch(
    q: CubeTensor,
    k: CubeTensor,
    v: CubeTensor,
    bias: CubeTensor,
    heads: u32,
    columns: AttentionColumns,
) -> CubeTensor {
    // q, k and v are often one tensor (a fused projection's output): made contiguous
    // once, bound three times.
    let (q, k, v) = (into_contiguous(q), into_contiguous(k), into_contiguous(v));
    let mut shape = q.meta.shape().clone();
    let [b, lq, q_stride] = [shape[0], shape[1], shape[2]].map(|d| d as u32);
    let [lk, kv_stride] = [k.meta.shape()[1], k.meta.shape()[2]].map(|d| d as u32);
    let head_dim = columns.width / heads;
    shape[2] = columns.width as usize;
    let out = output_like(&q, shape);
    let scale = 1.0 / (head_dim as f32).sqrt();
    let params = words(&[
        heads,
        lq,
        lk,
        scale.to_bits(),
        q_stride,
        kv_stride,
        columns.q,
        columns.k,
        columns.v,
        columns.bias_rows,
        columns.bias_first,
        columns.bias_cols,
    ]);
    let bias = (columns.bias_rows > 0).then(|| into_contiguous(bias));
    // Each tensor bound once, however many of q, k and v it holds.
    let mut bound: Vec<&CubeTensor> = Vec::with_capacity(4);
    let sources = [&q, &k, &v].map(|t| {
        let at = bound.iter().position(|b| same_tensor(b, t));
        at.unwrap_or_else(|| {
            bound.push(t);
            bound.len() - 1
        }) as u32
    });
    bound.push(&out);
    if let Some(bias) = &bias {
        bound.push(bias);
    }
    // The kernel, its invocations per workgroup and query rows per workgroup.
    let (name, threads, rows_per_group) = match columns.kernel {
        AttentionKernel::Untiled => ("attention", 64, 64),
        AttentionKernel::Tiled { .. } => ("attention_tiled", 64, 64),
        AttentionKernel::Lanes { lanes } => ("attention_lanes", lanes, lanes),
        AttentionKernel::Coop {
            size,
            lanes,
            subgroups,
            ..
        } => ("attention_coop", subgroups * lanes, subgroups * size),
    };
    let mut kernel = Wgsl::new(name, q.dtype, head_dim);
    kernel.sources = sources;
    match columns.kernel {
        AttentionKernel::Tiled { keys } => kernel.key_block = keys,
        AttentionKernel::Lanes { lanes } => {
            kernel.lanes = lanes;
            kernel.quads = [q_stride, kv_stride, columns.q, columns.k, columns.v]
                .iter()
                .all(|v| v % 4 == 0);
        }
        AttentionKernel::Coop {
            size,
            lanes,
            subgroups,
            keys,
        } => {
            assert_eq!(q.dtype, DType::F16, "the coop attention multiplies f16");
            kernel.key_block = keys;
            kernel.coop_attention = Some(CoopAttention {
                size,
                lanes,
                subgroups,
                key_count: lk,
            });
        }
        AttentionKernel::Untiled => {}
    }
    kernel.biased = bias.is_some();
    launch(
        &q,
        kernel,
        CubeDim::new_1d(threads),
        CubeCount::Static(lq.div_ceil(rows_per_group), b * heads, 1),
        &bound,
        &params,
    );
    out
}

/// What a coop attention kernel is written for besides its head and block of keys: the
/// cooperative matrices' side, the subgroups' invocations, the workgroup's subgroups, and the
/// number of keys (a constant of its text, shaders/attention_coop.wgsl says why).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) struct CoopAttention {
    size: u32,
    lanes: u32,
    subgroups: u32,
    key_count: u32,
}

impl Wgsl {
    /// Attention's bindings for q, k and v (one per distinct tensor), and where its output
    /// and parameters follow them.
    pub(super) fn bind_sources(&self, text: String) -> String {
        let count = self.sources.iter().max().map_or(0, |m| m + 1);
        let element = if self.quads { "vec4<T>" } else { "T" };
        let declarations: String = (0..count)
            .map(|i| {
                format!(
                    "@group(0) @binding({i}) var<storage, read_write> src{i}: array<{element}>;\n"
                )
            })
            .collect();
        let [q, k, v] = self.sources.map(|i| format!("src{i}"));
        let (bias, params_binding) = if self.biased {
            let binding = count + 1;
            let bias = format!(
                "@group(0) @binding({binding}) var<storage, read_write> bias: array<T>;\n\
                 fn bias_at(b: u32, row: u32, key: u32) -> f32 {{\n\
                 \x20   if (row < p.bias_rows && key >= p.bias_first && key < p.bias_first + p.bias_cols) {{\n\
                 \x20       return f32(bias[(b * p.bias_rows + row) * p.bias_cols + key - p.bias_first]);\n\
                 \x20   }}\n\
                 \x20   return 0.0;\n}}\n"
            );
            (bias, count + 2)
        } else {
            let none = "fn bias_at(b: u32, row: u32, key: u32) -> f32 {\n    return 0.0;\n}\n";
            (none.to_string(), count + 1)
        };
        text.replace("{{ sources }}", &declarations)
            .replace("{{ bias }}", &bias)
            .replace("{{ out_binding }}", &count.to_string())
            .replace("{{ params_binding }}", &params_binding.to_string())
            .replace("{{ q }}", &q)
            .replace("{{ k }}", &k)
            .replace("{{ v }}", &v)
    }

    /// The tiled attention's loops over a head's values and over a block's keys, written out
    /// with constant indices (shaders/attention_tiled.wgsl says why).
    pub(super) fn write_out_attention_loops(&self, text: String) -> String {
        let (d4, keys) = (self.head_dim / 4, self.key_block);
        let q = "{{ q }}";
        let mut load = String::new();
        for d in 0..d4 {
            let at = format!("q_at + {}u", 4 * d);
            load += &format!(
                "    query[{d}] = vec4<f32>(f32({q}[{at}]), f32({q}[{at} + 1u]), \
                 f32({q}[{at} + 2u]), f32({q}[{at} + 3u])) * p.scale;\n    acc[{d}] = vec4<f32>(0.0);\n"
            );
        }
        let mut scores = String::new();
        for j in 0..keys {
            scores += &format!("            var s{j} = vec4<f32>(0.0);\n");
            for d in 0..d4 {
                let tile = j * d4 + d;
                scores += &format!("            s{j} = fma(query[{d}], k_tile[{tile}], s{j});\n");
            }
            scores += &format!(
                "            let score{j} = select(-3.0e38, s{j}.x + s{j}.y + s{j}.z + s{j}.w + bias_at(b, row, j0 + {j}u), {j}u < count);\n\
                 \x20           block_best = max(block_best, score{j});\n"
            );
        }
        let mut accumulate = String::new();
        for d in 0..d4 {
            accumulate += &format!("            acc[{d}] *= rescale;\n");
        }
        for j in 0..keys {
            accumulate += &format!(
                "            let w{j} = exp(score{j} - best);\n            total += w{j};\n"
            );
            for d in 0..d4 {
                let tile = j * d4 + d;
                accumulate += &format!(
                    "            acc[{d}] = fma(vec4<f32>(w{j}), v_tile[{tile}], acc[{d}]);\n"
                );
            }
        }
        let mut store = String::new();
        for d in 0..d4 {
            let at = 4 * d;
            store += &format!("        let o{d} = acc[{d}] / total;\n");
            for (i, lane) in ["x", "y", "z", "w"].iter().enumerate() {
                store += &format!(
                    "        out[out_at + {}u] = T(o{d}.{lane});\n",
                    at + i as u32
                );
            }
        }
        text.replace("{{ load_query }}", &load)
            .replace("{{ scores }}", &scores)
            .replace("{{ accumulate }}", &accumulate)
            .replace("{{ store }}", &store)
    }

    /// The coop attention's sizes and its loops over the cooperative matrices, written out
    /// (shaders/attention_coop.wgsl says what each part is).
    pub(super) fn write_out_attention_coop(&self, text: String) -> String {
        let shape = self
            .coop_attention
            .expect("the coop attention is written for a key count");
        let (size, keys) = (shape.size, self.key_block);
        let tiles = CoopAttentionTiles::new(size, shape.subgroups, keys, self.head_dim);
        let padded = tiles.padded;
        let matrix = |role: &str, scalar: &str| format!("coop_mat{size}x{size}<{scalar}, {role}>");
        let (a, b, c) = (matrix("A", "f16"), matrix("B", "f16"), matrix("C", "f32"));
        let (values, blocks) = (padded / size, keys / size);
        let mut load_queries = String::new();
        for t in 0..values {
            load_queries += &format!(
                "    let q{t} = coopLoadT<{a}>(&k_tile[sub_row * KS + {}u], KS);\n",
                t * size
            );
        }
        load_queries += &format!("    let zero = {c}();\n");
        // Keys as the product's right-hand side, [values, keys]: k_tile's rows are its
        // columns, so read column by column.
        let mut scores = String::new();
        for kc in 0..blocks {
            scores += "        {\n";
            let mut sum = "zero".to_string();
            for t in 0..values {
                scores += &format!(
                    "            let k{t} = coopLoad<{b}>(&k_tile[{}u * KS + {}u], KS);\n            \
                     let s{t} = coopMultiplyAdd(q{t}, k{t}, {sum});\n",
                    kc * size,
                    t * size
                );
                sum = format!("s{t}");
            }
            scores += &format!(
                "            coopStoreT({sum}, &s_tile[sub_row * SS + {}u], SS);\n        }}\n",
                kc * size
            );
        }
        let mut accumulate = String::new();
        for kc in 0..blocks {
            accumulate += &format!(
                "        let w{kc} = coopLoadT<{a}>(&w_tile[sub_row * WS + {}u], WS);\n",
                kc * size
            );
        }
        for t in 0..values {
            accumulate += &format!(
                "        {{\n            let o = coopLoadT<{c}>(&o_tile[sub_row * OS + {}u], OS);\n",
                t * size
            );
            let mut sum = "o".to_string();
            for kc in 0..blocks {
                accumulate += &format!(
                    "            let v{kc} = coopLoadT<{b}>(&v_tile[{}u * KS + {}u], KS);\n            \
                     let o{kc} = coopMultiplyAdd(w{kc}, v{kc}, {sum});\n",
                    kc * size,
                    t * size
                );
                sum = format!("o{kc}");
            }
            accumulate += &format!(
                "            coopStoreT({sum}, &o_tile[sub_row * OS + {}u], OS);\n        }}\n",
                t * size
            );
        }
        let number = |v: u32| v.to_string();
        text.replace("{{ size }}", &number(size))
            .replace("{{ lanes }}", &number(shape.lanes))
            .replace("{{ subgroups }}", &number(shape.subgroups))
            .replace("{{ threads }}", &number(shape.subgroups * shape.lanes))
            .replace("{{ padded }}", &number(padded))
            .replace("{{ keys }}", &number(shape.key_count))
            .replace("{{ k_tile }}", &number(tiles.keys))
            .replace("{{ v_tile }}", &number(tiles.values))
            .replace("{{ load_queries }}", &load_queries)
            .replace("{{ scores }}", &scores)
            .replace("{{ accumulate }}", &accumulate)
    }

    /// The lanes attention's loops over a head's values and over a block of keys, written
    /// out (shaders/attention_lanes.wgsl says why).
    pub(super) fn write_out_attention_lanes(&self, text: String) -> String {
        let (d4, lanes) = (self.head_dim / 4, self.lanes);
        let (q, k, v) = ("{{ q }}", "{{ k }}", "{{ v }}");
        let quads = self.quads;
        let quad = |array: &str, at: String| {
            if quads {
                format!("vec4<f32>({array}[({at}) / 4u])")
            } else {
                format!(
                    "vec4<f32>(f32({array}[{at}]), f32({array}[{at} + 1u]), f32({array}[{at} + 2u]), f32({array}[{at} + 3u]))"
                )
            }
        };
        let mut load_query = String::new();
        for d in 0..d4 {
            load_query += &format!(
                "    let q{d} = {} * p.scale;\n    var acc{d} = vec4<f32>(0.0);\n",
                quad(q, format!("q_at + {}u", 4 * d))
            );
        }
        let mut load_block = String::new();
        for d in 0..d4 {
            load_block += &format!(
                "        let k{d} = {};\n        let v{d} = {};\n",
                quad(k, format!("kv_at + p.k_col + {}u", 4 * d)),
                quad(v, format!("kv_at + p.v_col + {}u", 4 * d))
            );
        }
        let mut scores = String::new();
        for j in 0..lanes {
            scores += &format!("        var s{j} = vec4<f32>(0.0);\n");
            for d in 0..d4 {
                scores +=
                    &format!("        s{j} = fma(q{d}, subgroupBroadcast(k{d}, {j}u), s{j});\n");
            }
            scores += &format!(
                "        let score{j} = select(-3.0e38, s{j}.x + s{j}.y + s{j}.z + s{j}.w + bias_at(b, q_row, j0 + {j}u), j0 + {j}u < p.keys);\n\
                 \x20       block_best = max(block_best, score{j});\n"
            );
        }
        let mut accumulate = String::new();
        for d in 0..d4 {
            accumulate += &format!("        acc{d} *= rescale;\n");
        }
        for j in 0..lanes {
            accumulate +=
                &format!("        let w{j} = exp(score{j} - best);\n        total += w{j};\n");
            for d in 0..d4 {
                accumulate += &format!(
                    "        acc{d} = fma(vec4<f32>(w{j}), subgroupBroadcast(v{d}, {j}u), acc{d});\n"
                );
            }
        }
        let mut store = String::new();
        for d in 0..d4 {
            store += &format!("        let o{d} = acc{d} / total;\n");
            for (i, part) in ["x", "y", "z", "w"].iter().enumerate() {
                store += &format!(
                    "        out[out_at + {}u] = T(o{d}.{part});\n",
                    4 * d + i as u32
                );
            }
        }
        text.replace("{{ lanes }}", &lanes.to_string())
            .replace("{{ load_query }}", &load_query)
            .replace("{{ load_block }}", &load_block)
            .replace("{{ scores }}", &scores)
            .replace("{{ accumulate }}", &accumulate)
            .replace("{{ store }}", &store)
    }
}
