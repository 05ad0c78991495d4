//! Hand-written WGSL kernels (`shaders/`, whose README lists them) for the hot paths that burn
//! runs as chains of small kernels or slowly: group and layer normalisation with an optional
//! SiLU, attention (tiled in workgroup memory on GPUs), the gated GELU, a linear layer's bias
//! with the residual around it, the guidance combine with the sampler's step, and the
//! gathering of a convolution's patches for burn's matmul on GPUs. On a GPU each dispatch has
//! a fixed cost, and on a small model most of a UNet call is that cost (`docs/bench.md`,
//! "Fused kernels"); on a large one, arithmetic rate is ("On a real GPU").
//!
//! They run on wgpu devices (WebGPU in the browser, Vulkan natively) through burn's backend
//! extension API, as templates burn hands to wgpu untranslated. Callers ask their model's
//! [`Kernels`] choice first ([`Kernels::fused_for`]) and otherwise compose burn's own
//! operations; the CPU backend always does, and so does a GPU for a model loaded with
//! [`Kernels::Burn`] (to measure the kernels, or to rule them out).

use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, Dispatch, backend_extension};
use burn::tensor::{DType, Device, Tensor};
use burn_cubecl::CubeBackend;
use burn_cubecl::cubecl::prelude::{CubeCount, CubeDim, KernelId};
use burn_cubecl::cubecl::server::KernelArguments;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_contiguous_dtype;
use burn_cubecl::ops::permute;
use burn_cubecl::template::{KernelSource, SourceKernel, SourceTemplate};
use burn_cubecl::tensor::CubeTensor;

use crate::schedulers::{AffineStep, StepOutput};
use crate::views::{ChannelShift, Columns};

/// Which kernels a model's layers run, chosen per model when it is loaded
/// ([`crate::weights::Weights::with_kernels`], `StableDiffusion::load_with`): never a global
/// switch, so two models (or two tests) can run side by side with different choices.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Kernels {
    /// The WGSL kernels of shaders/ where the device is a GPU and the type f32 or f16;
    /// burn's kernels elsewhere.
    #[default]
    Fused,
    /// burn's kernels only: to measure what the fused ones bring, or to rule them out.
    Burn,
    /// The fused kernels, with every f16 product in cooperative matrices wherever the device
    /// has them, even on software adapters, where the lanes matmul is faster: to check the
    /// matrices through whole models on a lavapipe that emulates them.
    Matrices,
    /// The fused kernels with no product in cooperative matrices, where the device has them
    /// too: to measure what the matrices bring on a GPU in the same run, and to keep a
    /// working f16 path on a driver that mishandles them.
    NoMatrices,
}

impl Kernels {
    /// `"fused"`, `"burn"`, `"matrices"` or `"no-matrices"`.
    pub fn parse(name: &str) -> crate::error::Result<Self> {
        match name {
            "fused" => Ok(Self::Fused),
            "burn" => Ok(Self::Burn),
            "matrices" => Ok(Self::Matrices),
            "no-matrices" => Ok(Self::NoMatrices),
            other => Err(crate::error::Error::InvalidInput(format!(
                "kernels must be \"fused\", \"burn\", \"matrices\" or \"no-matrices\", not \"{other}\""
            ))),
        }
    }

    /// Whether tensors on `device` of type `dtype` go through the fused kernels.
    pub fn fused_for(self, device: &Device, dtype: DType) -> bool {
        self != Self::Burn
            && matches!(dtype, DType::F32 | DType::F16)
            && crate::device::is_gpu(device)
    }
}

/// Group normalisation of [B, C, H, W] over `groups` groups of channels, then `y * gamma +
/// beta` per channel and, with `silu`, SiLU: what `nn::GroupNorm` computes.
pub fn group_norm(
    x: Tensor<4>,
    gamma: &Tensor<1>,
    beta: &Tensor<1>,
    groups: usize,
    eps: f64,
    silu: bool,
) -> Tensor<4> {
    let wide = norm_in_workgroups(&x.device());
    group_norm_in(x, gamma, beta, groups, eps, silu, wide)
}

/// [`group_norm`] with short groups normalised by a workgroup each where `wide`, else by an
/// invocation each ([`norm_in_workgroups`] says which suits a device).
pub fn group_norm_in(
    x: Tensor<4>,
    gamma: &Tensor<1>,
    beta: &Tensor<1>,
    groups: usize,
    eps: f64,
    silu: bool,
    wide: bool,
) -> Tensor<4> {
    Tensor::from_dispatch(<Dispatch as Fused>::group_norm(
        x.into_dispatch(),
        gamma.clone().into_dispatch(),
        beta.clone().into_dispatch(),
        groups as u32,
        eps as f32,
        silu,
        wide,
    ))
}

/// SiLU of the group normalisation of `x + shift`, where `shift` holds one value per sample
/// and channel: columns `first..first + C` of a [B, N] table. A ResNet block's time
/// embedding enters this way, without an addition of its own.
pub fn group_norm_silu_shifted(
    x: Tensor<4>,
    gamma: &Tensor<1>,
    beta: &Tensor<1>,
    shift: &ChannelShift,
    groups: usize,
    eps: f64,
) -> Tensor<4> {
    let wide = norm_in_workgroups(&x.device());
    group_norm_silu_shifted_in(x, gamma, beta, shift, groups, eps, wide)
}

/// [`group_norm_silu_shifted`] with short groups normalised by a workgroup each where `wide`.
pub fn group_norm_silu_shifted_in(
    x: Tensor<4>,
    gamma: &Tensor<1>,
    beta: &Tensor<1>,
    shift: &ChannelShift,
    groups: usize,
    eps: f64,
    wide: bool,
) -> Tensor<4> {
    Tensor::from_dispatch(<Dispatch as Fused>::group_norm_silu_shifted(
        x.into_dispatch(),
        gamma.clone().into_dispatch(),
        beta.clone().into_dispatch(),
        shift.table.clone().into_dispatch(),
        shift.first as u32,
        groups as u32,
        eps as f32,
        wide,
    ))
}

/// Whether the norm kernels normalise each short group in one workgroup
/// (shaders/norm_wide.wgsl) on `device`: on GPUs, where a layer norm's row left to one
/// invocation took a quarter of SD 1.5's UNet call on an H200. Software adapters, where
/// barriers are slow, keep one invocation per group (shaders/norm_rows.wgsl).
pub fn norm_in_workgroups(device: &Device) -> bool {
    let limits = crate::device::limits(device);
    !limits.software && limits.workgroup_invocations >= 64
}

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
/// ([`matmul_kernel`]: with [`Kernels::Matrices`] on software adapters too, with
/// [`Kernels::NoMatrices`] never), in the largest block that fits. Otherwise heads that are
/// no multiple of 4 values take the untiled kernel (the others read vec4s). On software
/// adapters, where barriers are slow, the lanes kernel where the adapter has subgroups (6x
/// burn's attention on lavapipe at SD 1.5's 64x64 self-attention, docs/bench.md), else the
/// untiled one. On GPUs the tiled kernel with 16 keys, the fastest block on an H200 (twice as
/// fast as 64 at SD 1.5's 64x64 self-attention), or fewer where the adapter's workgroup
/// memory holds fewer.
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
fn coop_attention(limits: &crate::device::Limits, head_dim: usize) -> Option<AttentionKernel> {
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
    let (rows, padded) = (subgroups * size, (head_dim as u32).div_ceil(size) * size);
    // Each tile's rows padded by 16 bytes, as the kernel has them.
    let bytes = 2 * (keys.max(rows) + keys) * (padded + 8)
        + 4 * rows * (keys + 4)
        + 2 * rows * (keys + 8)
        + 4 * rows * (padded + 4)
        + 8 * rows;
    keys.is_multiple_of(size)
        && subgroups * lanes <= limits.workgroup_invocations
        && bytes <= limits.workgroup_bytes
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

/// `value * gelu(gate)` for x [B, L, 2F] holding [value, gate] along its last axis once `bias`
/// [2F] is added: [B, L, F].
pub fn geglu(x: Tensor<3>, bias: &Tensor<1>) -> Tensor<3> {
    Tensor::from_dispatch(<Dispatch as Fused>::geglu(
        x.into_dispatch(),
        bias.clone().into_dispatch(),
    ))
}

/// `x + bias + residual` for x and residual [B, L, F] and bias [F]: a linear layer's bias
/// and the residual connection around it.
pub fn bias_residual(x: Tensor<3>, bias: &Tensor<1>, residual: Tensor<3>) -> Tensor<3> {
    Tensor::from_dispatch(<Dispatch as Fused>::bias_residual(
        x.into_dispatch(),
        bias.clone().into_dispatch(),
        residual.into_dispatch(),
    ))
}

/// The largest gathered matrix [`conv2d_im2col`] makes at once: it lives only for its
/// product, but a VAE's convolution at 512 pixels would gather 1.2 GB in one piece. SD 1.5's
/// UNet at 64x64 latents gathers at most 283 MB, so its convolutions stay whole.
pub const GATHER_BLOCK_BYTES: u64 = 512 << 20;

/// A 2-D convolution as one matrix product with burn's tiled matmul: the input's patches are
/// gathered into the rows of a matrix (shaders/im2col.wgsl) and multiplied by the filters.
/// x [B, Cin, H, W] is read in place where stored channels-last; `weight` [Cout, Cin, k, k]
/// is best stored as the [K, Cout] filter matrix, as `crate::weights` uploads 3x3 filters to
/// GPUs (else each call copies it). A 1x1 convolution of stride 1 multiplies the
/// channels-last input itself, with nothing gathered. Gives [B, Cout, Ho, Wo] stored
/// channels-last, as burn's GPU convolution does.
///
/// The gathered matrix is made in blocks of output positions of at most the adapter's
/// binding limit and [`GATHER_BLOCK_BYTES`]. burn's matmul makes this 2-10x faster than its
/// direct convolution on an H200 and 2-4x on lavapipe, and faster than a tiled implicit GEMM
/// of our own, which this replaced (docs/bench.md, "On a real GPU"); the gathered copy costs
/// one pass over memory. Where the product is too small to fill a GPU its sum over K is cut
/// into parts, multiplied in one batched product and added ([`k_splits`]). `cuts` overrides
/// either choice (benchmarks, tests); the default takes the adapter's.
pub fn conv2d_im2col(
    x: Tensor<4>,
    weight: &Tensor<4>,
    bias: Option<&Tensor<1>>,
    stride: usize,
    padding: usize,
    cuts: GemmCuts,
) -> Tensor<4> {
    let [b, _, h, w] = x.dims();
    let [c_out, c_in, kernel, _] = weight.dims();
    let shape = ConvShape::new(x.dims(), weight.dims(), stride, padding);
    let (out_h, out_w) = (shape.out_h as usize, shape.out_w as usize);
    let rows = b * out_h * out_w;
    let k = kernel * kernel * c_in;
    if kernel == 1 && stride == 1 && padding == 0 {
        let x = Tensor::<4>::from_dispatch(<Dispatch as Fused>::channels_last(x.into_dispatch()));
        let filters = weight.clone().reshape([c_out, c_in]).transpose();
        let mut out = x
            .permute([0, 2, 3, 1])
            .reshape([rows, c_in])
            .matmul(filters);
        if let Some(bias) = bias {
            out = out + bias.clone().reshape([1, c_out]);
        }
        return out.reshape([b, h, w, c_out]).permute([0, 3, 1, 2]);
    }
    let limits = crate::device::limits(&x.device());
    let elem = x.dtype().size() as u64;
    // Output positions per block: as many as fit (all of a UNet's at 64x64 latents).
    let max_bytes = cuts
        .max_bytes
        .unwrap_or(limits.max_binding_bytes)
        .min(GATHER_BLOCK_BYTES);
    let per_block = ((max_bytes / (k as u64 * elem)) as usize).clamp(1, rows);
    let splits = match cuts.k_splits {
        Some(asked) if asked > 0 && k.is_multiple_of(asked) => asked,
        Some(_) => 1,
        None => k_splits(&limits, rows, c_out, k),
    };
    // The filters as [splits, K / splits, N]: a view of the [kh, kw, Cin, N] filter matrix.
    let filters: Tensor<3> =
        weight
            .clone()
            .permute([2, 3, 1, 0])
            .reshape([splits, k / splits, c_out]);
    // Channels-last once, however many blocks read it.
    let x = <Dispatch as Fused>::channels_last(x.into_dispatch());
    let blocks: Vec<Tensor<2>> = (0..rows)
        .step_by(per_block)
        .map(|first| {
            let count = per_block.min(rows - first);
            let cols: Tensor<3> = Tensor::from_dispatch(<Dispatch as Fused>::im2col(
                x.clone(),
                shape,
                first as u32,
                count as u32,
                splits as u32,
            ));
            let parts = cols.matmul(filters.clone());
            if splits == 1 {
                parts.reshape([count, c_out])
            } else {
                parts.sum_dim(0).reshape([count, c_out])
            }
        })
        .collect();
    let mut out = if blocks.len() == 1 {
        blocks.into_iter().next().expect("one block")
    } else {
        Tensor::cat(blocks, 0)
    };
    if let Some(bias) = bias {
        out = out + bias.clone().reshape([1, c_out]);
    }
    out.reshape([b, out_h, out_w, c_out]).permute([0, 3, 1, 2])
}

/// Groups of a subgroup's lanes in the rows each workgroup of the lanes matmul computes
/// (shaders/matmul_lanes.wgsl): 2, 16 rows on lavapipe, ran fastest beside 1 and 4.
const MATMUL_ROW_GROUPS: u32 = 2;

/// Columns each lane of the lanes matmul keeps the sums of: two vec4s of them where b is
/// stored as [K, N] rows, four where it is stored as [N, K] (each read as four values of K).
fn matmul_cols_per_lane(b_rows: bool) -> u32 {
    if b_rows { 8 } else { 4 }
}

/// Which of our matmul kernels runs a product (or a convolution as one): they compute the
/// same. [`matmul_kernel`] picks one that suits the adapter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MatmulKernel {
    /// shaders/matmul_lanes.wgsl: a workgroup is one subgroup of this many lanes.
    Lanes { lanes: u32 },
    /// shaders/matmul_coop.wgsl: f16 only, multiplied in cooperative matrices of `size` x
    /// `size` by workgroups of four subgroups of `lanes`, in `block`s (`None`: chosen per
    /// product from its size).
    Coop {
        size: u32,
        lanes: u32,
        block: Option<CoopBlock>,
    },
}

/// How the coop matmul cuts a product: each subgroup keeps `tiles` x `tiles` cooperative
/// matrices of sums (a workgroup's block of the output is 2 `tiles` `size` square), each
/// step between barriers takes `depth` matrices' worth of K, and the sum over K is cut into
/// `splits` parts, each summed by its own workgroups into an f32 partial product, then
/// added.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CoopBlock {
    pub tiles: u32,
    pub depth: u32,
    pub splits: u32,
    /// Whether each row of a's and b's blocks in workgroup memory is followed by
    /// [`COOP_PAD`] unused values, so that the rows a matrix load reads together lie in
    /// different banks: unpadded, rows 64 bytes apart (32 values of K) meet in every second
    /// row's banks, and b's rows of 64 or 128 columns all in the same ones.
    pub padded: bool,
    /// Whether each invocation loads its share of the next step's blocks into registers
    /// before the subgroups multiply this step's, so that the loads' latency is spent on
    /// the products (at the cost of registers), rather than copying each step's blocks
    /// between its barriers.
    pub prefetch: bool,
}

/// The values after each row of the coop matmul's blocks in workgroup memory where they are
/// padded: 16 bytes, which keeps every row as aligned as a matrix load may need.
const COOP_PAD: u32 = 8;

/// Cooperative matrices along K per step of the coop matmul (each step one barrier pair).
const COOP_K_TILES: u32 = 2;

impl CoopBlock {
    /// The runtime's block with `tiles` x `tiles` matrices of sums per subgroup:
    /// [`COOP_K_TILES`] matrices of K per step, rows padded, the sum whole.
    pub fn new(tiles: u32) -> Self {
        Self {
            tiles,
            depth: COOP_K_TILES,
            splits: 1,
            padded: true,
            prefetch: false,
        }
    }
}

/// Workgroups from which the coop matmul takes blocks of 4 x 4 matrices of sums per
/// subgroup rather than 2 x 2 (128 x 128 sums per workgroup rather than 64 x 64 where the
/// matrices are 16 x 16): each value a subgroup loads then feeds twice the products, but a
/// product needs enough blocks to keep a large GPU's multiprocessors busy (an H200 has 132).
const COOP_WIDE_BLOCKS: usize = 512;

impl MatmulKernel {
    /// The parts a coop matmul with its block chosen cuts its sum over K into; 1 otherwise.
    fn splits(self) -> u32 {
        match self {
            MatmulKernel::Coop {
                block: Some(block), ..
            } => block.splits,
            _ => 1,
        }
    }
}

/// The coop matmul's block of the output and values of K per step: (rows, cols, depth).
fn coop_block(size: u32, block: &CoopBlock) -> (u32, u32, u32) {
    let side = 2 * block.tiles * size;
    (side, side, block.depth * size)
}

/// The matmul kernel of ours, if any, that runs a product over `depth` values into `cols`
/// columns, of type `dtype` on `device`, for a model loaded with `kernels`:
/// - on software adapters with subgroups, whose loads the lanes matmul is written around, for
///   depths and widths in fours (it reads vec4s): 6-7x faster than emulated cooperative
///   matrices on Mesa 26's lavapipe (docs/bench.md, "Cooperative matrices");
/// - where the device multiplies f16 in cooperative matrices ([`crate::device::Limits`]'s
///   `coop_size`: tensor cores, natively), f16 products in them, whatever their shape (with
///   [`Kernels::Matrices`], on software adapters too; with [`Kernels::NoMatrices`], never);
/// - none elsewhere: GPUs keep burn's matmul, which reached 10-25 TFLOP/s on an H200
///   (docs/bench.md, "On a real GPU").
pub fn matmul_kernel(
    kernels: Kernels,
    device: &Device,
    dtype: DType,
    depth: usize,
    cols: usize,
) -> Option<MatmulKernel> {
    if !kernels.fused_for(device, dtype) {
        return None;
    }
    let limits = crate::device::limits(device);
    let lanes = limits.subgroup_lanes?;
    let lanes_serve = limits.software && depth.is_multiple_of(4) && cols.is_multiple_of(4);
    if lanes_serve && kernels != Kernels::Matrices {
        return Some(MatmulKernel::Lanes { lanes });
    }
    let coop = limits
        .coop_size
        .filter(|&size| {
            kernels != Kernels::NoMatrices
                && dtype == DType::F16
                && coop_fits(&limits, size, lanes, CoopBlock::new(2))
        })
        .map(|size| MatmulKernel::Coop {
            size,
            lanes,
            block: None,
        });
    coop.or(lanes_serve.then_some(MatmulKernel::Lanes { lanes }))
}

/// Whether the adapter runs the coop matmul with matrices of `size`, subgroups of `lanes`
/// and `block` (its sum's parts aside): its workgroup's invocations and workgroup memory
/// within the adapter's limits, and each invocation copying whole shares of the blocks (true
/// of every size the device module accepts: subgroups of 4 to 64, matrices of 8 or 16).
pub fn coop_fits(limits: &crate::device::Limits, size: u32, lanes: u32, block: CoopBlock) -> bool {
    let (rows, cols, depth) = coop_block(size, &block);
    let threads = 4 * lanes;
    // a's `rows` rows of `depth` values; b's `depth` rows of `cols` values, or stored as
    // [N, K] its `cols` columns of `depth` values, the larger where the rows are padded
    // (`cols` is at least `depth`); each padded or not; and the sums.
    let pad = if block.padded { COOP_PAD } else { 0 };
    let bytes = 2 * (rows + cols) * (depth + pad) + 4 * 4 * size * size;
    threads <= limits.workgroup_invocations
        && bytes <= limits.workgroup_bytes
        && [rows * depth, depth * cols, 4 * size * size]
            .iter()
            .all(|n| n.is_multiple_of(threads))
}

/// The coop matmul's block for a `rows` x `depth` x `cols` product on `device`: the wider
/// block where the product has [`COOP_WIDE_BLOCKS`] of them and the adapter fits it; and
/// the sum over K cut as [`k_splits`] cuts burn's products, where the product is too small
/// to fill the GPU by itself.
fn coop_block_for(
    device: &Device,
    (size, lanes): (u32, u32),
    rows: usize,
    depth: usize,
    cols: usize,
) -> CoopBlock {
    let limits = crate::device::limits(device);
    let wide_blocks = rows.div_ceil(8 * size as usize) * cols.div_ceil(8 * size as usize);
    let tiles =
        if wide_blocks >= COOP_WIDE_BLOCKS && coop_fits(&limits, size, lanes, CoopBlock::new(4)) {
            4
        } else {
            2
        };
    CoopBlock {
        splits: k_splits(&limits, rows, cols, depth) as u32,
        ..CoopBlock::new(tiles)
    }
}

/// `kernel` with its block chosen where it was left open.
fn with_block(
    kernel: MatmulKernel,
    device: &Device,
    rows: usize,
    depth: usize,
    cols: usize,
) -> MatmulKernel {
    match kernel {
        MatmulKernel::Coop {
            size,
            lanes,
            block: None,
        } => MatmulKernel::Coop {
            size,
            lanes,
            block: Some(coop_block_for(device, (size, lanes), rows, depth, cols)),
        },
        chosen => chosen,
    }
}

/// The product the coop matmul left as `splits` f32 partial products, [splits x rows, cols]:
/// their sum, in the type of `like`.
fn sum_parts(out: Tensor<2>, kernel: MatmulKernel, like: DType) -> Tensor<2> {
    let splits = kernel.splits() as usize;
    if splits == 1 {
        return out;
    }
    let [rows, cols] = out.dims();
    let dtype = match like {
        DType::F16 => burn::tensor::FloatDType::F16,
        _ => burn::tensor::FloatDType::F32,
    };
    out.reshape([splits, rows / splits, cols])
        .sum_dim(0)
        .reshape([rows / splits, cols])
        .cast(dtype)
}

/// `a` [M, K] times `b` [K, N], plus `bias` [N] where given, by `kernel` (from
/// [`matmul_kernel`]). `b` is read in place as [K, N] rows or as the transpose of a
/// contiguous [N, K] (a linear layer's weight); any other layout is copied.
pub fn matmul(
    a: Tensor<2>,
    b: &Tensor<2>,
    bias: Option<&Tensor<1>>,
    kernel: MatmulKernel,
) -> Tensor<2> {
    let [depth, cols] = b.dims();
    let kernel = with_block(kernel, &a.device(), a.dims()[0], depth, cols);
    let dtype = a.dtype();
    // Read only where there is a bias; the weight stands in otherwise (as it is: a reshape
    // of a transposed weight would copy it).
    let bias_values = bias.map_or_else(|| b.clone().into_dispatch(), |t| t.clone().into_dispatch());
    let out = Tensor::from_dispatch(<Dispatch as Fused>::fused_matmul(
        a.into_dispatch(),
        b.clone().into_dispatch(),
        bias_values,
        bias.is_some(),
        None,
        kernel,
    ));
    sum_parts(out, kernel, dtype)
}

/// A 2-D convolution as one of our matmul kernels (from [`matmul_kernel`] with K = `c_in` and
/// N = `c_out`), reading its channels-last input in place: an implicit GEMM, no gathered
/// patches. `weight` [Cout, Cin, k, k] is read in place stored as the filter matrix [kh, kw,
/// Cin, Cout] or as filter rows [Cout, kh, kw, Cin] (the two orders `crate::weights` uploads
/// 3x3 filters in) or, for 1x1, as PyTorch's [Cout, Cin]; else each call copies it. Gives
/// [B, Cout, Ho, Wo] stored channels-last, as [`conv2d_im2col`].
pub fn conv2d_fused(
    x: Tensor<4>,
    weight: &Tensor<4>,
    bias: Option<&Tensor<1>>,
    stride: usize,
    padding: usize,
    kernel: MatmulKernel,
) -> Tensor<4> {
    let b = x.dims()[0];
    let [c_out, c_in, taps, _] = weight.dims();
    let shape = ConvShape::new(x.dims(), weight.dims(), stride, padding);
    let (out_h, out_w) = (shape.out_h as usize, shape.out_w as usize);
    let kernel = with_block(
        kernel,
        &x.device(),
        b * out_h * out_w,
        taps * taps * c_in,
        c_out,
    );
    let dtype = x.dtype();
    // [K, N], K in the filter matrix's order: a view of the filter matrix as rows, of filter
    // rows and 1x1 weights as the transpose of [N, K].
    let filters: Tensor<2> = weight
        .clone()
        .permute([2, 3, 1, 0])
        .reshape([taps * taps * c_in, c_out]);
    // Read only where there is a bias; the filters stand in otherwise.
    let bias_values = bias.map_or_else(
        || filters.clone().into_dispatch(),
        |t| t.clone().into_dispatch(),
    );
    let out: Tensor<2> = Tensor::from_dispatch(<Dispatch as Fused>::fused_matmul(
        x.into_dispatch(),
        filters.into_dispatch(),
        bias_values,
        bias.is_some(),
        Some(shape),
        kernel,
    ));
    sum_parts(out, kernel, dtype)
        .reshape([b, out_h, out_w, c_out])
        .permute([0, 3, 1, 2])
}

/// How [`conv2d_im2col`] cuts its product, where not as the adapter would: the most bytes one
/// gathered block may take, and how many parts the sum over K is cut into (left whole where
/// they do not divide K). `None` takes the adapter's choice: its binding limit, and
/// [`k_splits`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GemmCuts {
    pub max_bytes: Option<u64>,
    pub k_splits: Option<usize>,
}

/// Output tiles (of about 64x64, as burn's matmul makes them) from which a product fills a
/// large GPU by itself: SD 1.5's convolutions at 64x64 latents (640 tiles) gained nothing
/// from a cut sum on an H200, and lost in f16.
const SPLIT_BELOW_TILES: usize = 512;

/// Tiles times parts a cut product aims at: on the H200, SD 1.5's convolutions at 32x32
/// latents (320 tiles) ran best in 8 parts, at 16x16 (160 tiles) in 16, the strided one at
/// 64x64 (160 tiles) in 16 (docs/bench.md, "On a real GPU").
const SPLIT_TILES_TARGET: usize = 2560;

/// The most parts, and the least of K each part keeps: at 8x8 latents (40 tiles) 8, 16 and
/// 32 parts ran alike.
const MAX_SPLITS: usize = 32;
const MIN_SPLIT_DEPTH: usize = 128;

/// Parts to cut a `rows` x `depth` x `cols` product's sum over K into: none for a product of
/// [`SPLIT_BELOW_TILES`] output tiles or more; else doubled while the tiles times the parts
/// stay within [`SPLIT_TILES_TARGET`], each part keeps at least [`MIN_SPLIT_DEPTH`] of K,
/// and the parts divide K; at most [`MAX_SPLITS`]. 1 on software adapters, whose few cores the tiles already keep
/// busy. Split, the product is [splits, rows, depth / splits] times [splits, depth / splits,
/// cols], then a sum over the parts: one more small pass for a product that otherwise fills
/// a tenth of the chip (2-4x faster per layer at 16x16 and 8x8 latents on the H200).
pub fn k_splits(limits: &crate::device::Limits, rows: usize, cols: usize, depth: usize) -> usize {
    let tiles = rows.div_ceil(64) * cols.div_ceil(64);
    if limits.software || tiles >= SPLIT_BELOW_TILES {
        return 1;
    }
    let mut splits = 1;
    while splits < MAX_SPLITS
        && tiles * splits * 2 <= SPLIT_TILES_TARGET
        && depth.is_multiple_of(splits * 2)
        && depth / (splits * 2) >= MIN_SPLIT_DEPTH
    {
        splits *= 2;
    }
    splits
}

/// Classifier-free guidance and a sampler step that is affine ([`AffineStep`]) in one
/// dispatch. `model` is the UNet's output: [2B, C, H, W] holding [uncond; cond] when
/// `guidance` gives the scale (the guided prediction is `uncond + scale * (cond - uncond)`),
/// else [B, C, H, W]; `sample` [B, C, H, W] is the step's input. What
/// `step.apply(guided prediction, sample)` computes, stored as `model` is.
pub fn guided_step(
    model: Tensor<4>,
    guidance: Option<f64>,
    sample: Tensor<4>,
    step: &AffineStep,
) -> StepOutput {
    let (prev, clean) = <Dispatch as Fused>::guided_step(
        model.into_dispatch(),
        sample.into_dispatch(),
        guidance,
        *step,
    );
    StepOutput {
        prev_sample: Tensor::from_dispatch(prev),
        pred_original: Tensor::from_dispatch(clean),
    }
}

/// The operations, routed by burn's dispatch to the backend a tensor lives on. Only the cube
/// (wgpu) backend has them, which is why callers check [`available`].
#[backend_extension(Cube)]
pub trait Fused: Backend {
    fn group_norm(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        groups: u32,
        eps: f32,
        silu: bool,
        wide: bool,
    ) -> FloatTensor<Self>;
    #[allow(clippy::too_many_arguments)]
    fn group_norm_silu_shifted(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        shift: FloatTensor<Self>,
        first: u32,
        groups: u32,
        eps: f32,
        wide: bool,
    ) -> FloatTensor<Self>;
    fn attention(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        // Read only where `columns` give the bias rows (burn's extension macro passes no
        // optional tensors: callers without a bias pass q again).
        bias: FloatTensor<Self>,
        heads: u32,
        columns: AttentionColumns,
    ) -> FloatTensor<Self>;
    fn geglu(x: FloatTensor<Self>, bias: FloatTensor<Self>) -> FloatTensor<Self>;
    fn channels_last(x: FloatTensor<Self>) -> FloatTensor<Self>;
    fn im2col(
        x: FloatTensor<Self>,
        shape: ConvShape,
        first_row: u32,
        rows: u32,
        splits: u32,
    ) -> FloatTensor<Self>;
    fn bias_residual(
        x: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        residual: FloatTensor<Self>,
    ) -> FloatTensor<Self>;
    /// `a` is a [M, K] matrix, or with `conv` a convolution's [B, C, H, W] input; `bias` is
    /// read only where `biased` (the extension macro passes no optional tensors).
    fn fused_matmul(
        a: FloatTensor<Self>,
        b: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        biased: bool,
        conv: Option<ConvShape>,
        kernel: MatmulKernel,
    ) -> FloatTensor<Self>;
    fn guided_step(
        model: FloatTensor<Self>,
        sample: FloatTensor<Self>,
        guidance: Option<f64>,
        step: AffineStep,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);
}

impl Fused for CubeBackend {
    fn group_norm(
        x: CubeTensor,
        gamma: CubeTensor,
        beta: CubeTensor,
        groups: u32,
        eps: f32,
        silu: bool,
        wide: bool,
    ) -> CubeTensor {
        norm(x, gamma, beta, None, groups, eps, silu, wide)
    }

    fn group_norm_silu_shifted(
        x: CubeTensor,
        gamma: CubeTensor,
        beta: CubeTensor,
        shift: CubeTensor,
        first: u32,
        groups: u32,
        eps: f32,
        wide: bool,
    ) -> CubeTensor {
        norm(
            x,
            gamma,
            beta,
            Some((shift, first)),
            groups,
            eps,
            true,
            wide,
        )
    }

    fn attention(
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

    fn geglu(x: CubeTensor, bias: CubeTensor) -> CubeTensor {
        let (x, bias) = (into_contiguous(x), into_contiguous(bias));
        let mut shape = x.meta.shape().clone();
        let last = shape.num_dims() - 1;
        let width = shape[last] / 2;
        shape[last] = width;
        let count = shape.num_elements() as u32;
        let out = output_like(&x, shape);
        let params = words(&[width as u32, count]);
        launch(
            &x,
            Wgsl::new("geglu", x.dtype, 0),
            CubeDim::new_1d(256),
            grid(count, 256),
            &[&x, &bias, &out],
            &params,
        );
        out
    }

    fn channels_last(x: CubeTensor) -> CubeTensor {
        to_channels_last(x)
    }

    fn im2col(x: CubeTensor, g: ConvShape, first_row: u32, rows: u32, splits: u32) -> CubeTensor {
        // In place: callers pass `channels_last`'s result.
        let x = to_channels_last(x);
        let k = g.kernel * g.kernel * g.c_in;
        let count = rows * k;
        let split = k / splits;
        let cols = output_like(&x, [splits as usize, rows as usize, split as usize].into());
        let params = words(&[
            g.height, g.width, g.c_in, g.out_h, g.out_w, g.kernel, g.stride, g.pad, first_row, k,
            count, split,
        ]);
        launch(
            &x,
            Wgsl::new("im2col", x.dtype, 0),
            CubeDim::new_1d(256),
            grid(count, 256),
            &[&x, &cols],
            &params,
        );
        cols
    }

    fn bias_residual(x: CubeTensor, bias: CubeTensor, residual: CubeTensor) -> CubeTensor {
        let (x, bias, residual) = (
            into_contiguous(x),
            into_contiguous(bias),
            into_contiguous(residual),
        );
        let shape = x.meta.shape().clone();
        let width = shape[shape.num_dims() - 1] as u32;
        let count = shape.num_elements() as u32;
        let out = output_like(&x, shape);
        launch(
            &x,
            Wgsl::new("bias_residual", x.dtype, 0),
            CubeDim::new_1d(256),
            grid(count, 256),
            &[&x, &bias, &residual, &out],
            &words(&[width, count]),
        );
        out
    }

    fn fused_matmul(
        a: CubeTensor,
        b: CubeTensor,
        bias: CubeTensor,
        biased: bool,
        conv: Option<ConvShape>,
        how: MatmulKernel,
    ) -> CubeTensor {
        let (a, rows) = match conv {
            Some(g) => {
                let a = to_channels_last(a);
                let rows = a.meta.shape()[0] as u32 * g.out_h * g.out_w;
                (a, rows)
            }
            None => {
                let a = into_contiguous(a);
                let rows = a.meta.shape()[0] as u32;
                (a, rows)
            }
        };
        let [depth, cols] = [b.meta.shape()[0], b.meta.shape()[1]];
        // [K, N] rows, or the transpose of a contiguous [N, K] read as it is.
        let transposed = cols > 1 && b.meta.strides()[0] == 1 && b.meta.strides()[1] == depth;
        let b = if transposed { b } else { into_contiguous(b) };
        let g = conv.unwrap_or_default();
        let bias = biased.then(|| into_contiguous(bias));
        // A coop matmul whose sum over K is cut leaves its parts' f32 products one under the
        // other.
        let splits = how.splits();
        let out = if splits > 1 {
            let shape = [(splits * rows) as usize, cols].into();
            empty_device_contiguous_dtype(a.client.clone(), a.device.clone(), shape, DType::F32)
        } else {
            output_like(&a, [rows as usize, cols].into())
        };
        let mut bound = vec![&a, &b, &out];
        if let Some(bias) = &bias {
            bound.push(bias);
        }
        // The kernel, its workgroup's invocations and block of the output, and its
        // parameters (the coop matmul's sizes are constants of its text: it has none).
        let (mut kernel, threads, (block_rows, block_cols), params) = match how {
            MatmulKernel::Lanes { lanes } => {
                let mut kernel = Wgsl::new("matmul_lanes", a.dtype, 0);
                kernel.lanes = lanes;
                let cols_per_workgroup = lanes * matmul_cols_per_lane(!transposed);
                let params = words(&[
                    rows,
                    cols as u32,
                    depth as u32,
                    g.height,
                    g.width,
                    g.c_in,
                    g.out_h,
                    g.out_w,
                    g.kernel,
                    g.stride,
                    g.pad,
                ]);
                (
                    kernel,
                    lanes,
                    (MATMUL_ROW_GROUPS * lanes, cols_per_workgroup),
                    Some(params),
                )
            }
            MatmulKernel::Coop { size, lanes, block } => {
                let block = block.expect("the block is chosen before the dispatch");
                let (block_rows, block_cols, _) = coop_block(size, &block);
                let mut kernel = Wgsl::new("matmul_coop", a.dtype, 0);
                kernel.lanes = lanes;
                kernel.coop = Some(CoopShape {
                    size,
                    block,
                    dims: [rows, cols as u32, depth as u32],
                    conv: g,
                });
                (kernel, 4 * lanes, (block_rows, block_cols), None)
            }
        };
        kernel.b_rows = !transposed;
        kernel.conv = conv.is_some();
        kernel.biased = biased;
        // Blocks of rows along y and, past the 65535 workgroups an axis may hold, along z;
        // or the parts of a cut sum along z (cut only where the product is small).
        let row_blocks = rows.div_ceil(block_rows);
        let across = row_blocks.min(65535);
        let workgroups = if splits > 1 {
            assert!(row_blocks <= 65535, "a cut product of {rows} rows");
            CubeCount::Static((cols as u32).div_ceil(block_cols), row_blocks, splits)
        } else {
            CubeCount::Static(
                (cols as u32).div_ceil(block_cols),
                across,
                row_blocks.div_ceil(across),
            )
        };
        let threads = CubeDim::new_1d(threads);
        launch_bound(&a, kernel, threads, workgroups, &bound, params.as_deref());
        out
    }

    fn guided_step(
        model: CubeTensor,
        sample: CubeTensor,
        guidance: Option<f64>,
        step: AffineStep,
    ) -> (CubeTensor, CubeTensor) {
        let shape = sample.meta.shape().clone();
        let [b, c, h, w] = [shape[0], shape[1], shape[2], shape[3]];
        // Both read in place as [B, C, H, W] or channels-last; the results are stored as the
        // model's output is (channels-last from a GPU convolution), which the next UNet
        // call's first convolution then reads without a copy.
        let channels_last = |t: &CubeTensor| h * w > 1 && is_channels_last(t);
        let (model_cl, sample_cl) = (channels_last(&model), channels_last(&sample));
        let model = if model_cl {
            model
        } else {
            into_contiguous(model)
        };
        let sample = if sample_cl {
            sample
        } else {
            into_contiguous(sample)
        };
        let output = || {
            if model_cl {
                permute(output_like(&sample, [b, h, w, c].into()), &[0, 3, 1, 2])
            } else {
                output_like(&sample, shape.clone())
            }
        };
        let (prev, clean) = (output(), output());
        let count = (b * c * h * w) as u32;
        // The coefficients in f32, the precision the kernel computes in.
        let bits = |v: f64| (v as f32).to_bits();
        let params = words(&[
            count,
            c as u32,
            (h * w) as u32,
            model_cl as u32,
            sample_cl as u32,
            guidance.is_some() as u32,
            bits(guidance.unwrap_or(1.0)),
            bits(step.x0[0]),
            bits(step.x0[1]),
            bits(step.clip.unwrap_or(-1.0)),
            bits(step.eps[0]),
            bits(step.eps[1]),
            bits(step.prev[0]),
            bits(step.prev[1]),
        ]);
        launch(
            &sample,
            Wgsl::new("guided_step", sample.dtype, 0),
            CubeDim::new_1d(256),
            grid(count, 256),
            &[&model, &sample, &prev, &clean],
            &params,
        );
        (prev, clean)
    }
}

/// [B, C, H, W] stored channels-last: `x` itself where it is (at one position both layouts are
/// the same memory), else a copy.
fn to_channels_last(x: CubeTensor) -> CubeTensor {
    let shape = x.meta.shape();
    if shape[2] * shape[3] == 1 {
        return into_contiguous(x);
    }
    if is_channels_last(&x) {
        return x;
    }
    permute(into_contiguous(permute(x, &[0, 2, 3, 1])), &[0, 3, 1, 2])
}

/// A convolution's shapes, as shaders/im2col.wgsl and the matmul kernels take them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ConvShape {
    height: u32,
    width: u32,
    c_in: u32,
    out_h: u32,
    out_w: u32,
    kernel: u32,
    stride: u32,
    pad: u32,
}

impl ConvShape {
    /// The convolution of an input of dims [B, Cin, H, W] by square filters of dims [Cout,
    /// Cin, k, k], with `stride` and `padding` on each side.
    fn new(input: [usize; 4], filters: [usize; 4], stride: usize, padding: usize) -> Self {
        let [_, c_in, h, w] = input;
        let kernel = filters[2];
        let out = |side: usize| ((side + 2 * padding - kernel) / stride + 1) as u32;
        Self {
            height: h as u32,
            width: w as u32,
            c_in: c_in as u32,
            out_h: out(h),
            out_w: out(w),
            kernel: kernel as u32,
            stride: stride as u32,
            pad: padding as u32,
        }
    }
}

/// Group normalisation of [B, C, H, W] (stored as such or channels-last), plus a
/// per-sample, per-channel shift (a [B, N] table and its first column) where given: one
/// dispatch for short groups (a workgroup per group where `wide`, else an invocation), three
/// for long ones (shaders/norm_*.wgsl).
#[allow(clippy::too_many_arguments)]
fn norm(
    x: CubeTensor,
    gamma: CubeTensor,
    beta: CubeTensor,
    shift: Option<(CubeTensor, u32)>,
    groups: u32,
    eps: f32,
    silu: bool,
    wide: bool,
) -> CubeTensor {
    let shape = x.meta.shape().clone();
    let [b, c, h, w] = [shape[0], shape[1], shape[2], shape[3]].map(|d| d as u32);
    let (channels, positions) = (c / groups, h * w);
    // Read in place when stored as [B, C, H, W] or channels-last; written channels-last,
    // the layout burn's GPU convolutions take without a copy (at one position the two
    // layouts are the same memory, and the output stays plainly contiguous).
    let x_channels_last = positions > 1 && is_channels_last(&x);
    let x = if x_channels_last {
        x
    } else {
        into_contiguous(x)
    };
    let out = if positions > 1 {
        let stored = [shape[0], shape[2], shape[3], shape[1]];
        permute(output_like(&x, stored.into()), &[0, 3, 1, 2])
    } else {
        output_like(&x, shape)
    };
    let chunks = (channels * positions).div_ceil(NORM_CHUNK);
    let total_groups = b * groups;
    let shift = shift.map(|(table, first)| (into_contiguous(table), first));
    let (shift_stride, shift_first) = shift.as_ref().map_or((0, 0), |(table, first)| {
        (table.meta.shape()[1] as u32, *first)
    });
    let params = words(&[
        channels,
        positions,
        groups,
        silu as u32,
        eps.to_bits(),
        chunks,
        total_groups,
        x_channels_last as u32,
        shift_stride,
        shift_first,
    ]);
    let (gamma, beta) = (into_contiguous(gamma), into_contiguous(beta));
    // The kernels that read x also read the shift, bound after their own tensors.
    let reading_x = |name: &'static str, tensors: &[&CubeTensor]| -> (Wgsl, Vec<CubeTensor>) {
        let mut kernel = Wgsl::new(name, x.dtype, 0);
        let mut bound: Vec<CubeTensor> = tensors.iter().map(|t| (*t).clone()).collect();
        if let Some((table, _)) = &shift {
            kernel.shifted = true;
            bound.push(table.clone());
        }
        (kernel, bound)
    };
    if channels * positions <= SHORT_GROUP && wide {
        let (kernel, bound) = reading_x("norm_wide", &[&x, &gamma, &beta, &out]);
        launch(
            &x,
            kernel,
            CubeDim::new_1d(64),
            grid(total_groups * 64, 64),
            &bound.iter().collect::<Vec<_>>(),
            &params,
        );
        return out;
    }
    if channels * positions <= SHORT_GROUP {
        let (kernel, bound) = reading_x("norm_rows", &[&x, &gamma, &beta, &out]);
        launch(
            &x,
            kernel,
            CubeDim::new_1d(64),
            grid(total_groups, 64),
            &bound.iter().collect::<Vec<_>>(),
            &params,
        );
        return out;
    }
    let scratch = |values: u32| {
        let shape = burn::tensor::Shape::new([values as usize]);
        empty_device_contiguous_dtype(x.client.clone(), x.device.clone(), shape, DType::F32)
    };
    let partial = scratch(total_groups * chunks * 3);
    let stats = scratch(total_groups * 2);
    let (kernel, bound) = reading_x("norm_partials", &[&x, &partial]);
    launch(
        &x,
        kernel,
        CubeDim::new_1d(64),
        grid(total_groups * chunks, 64),
        &bound.iter().collect::<Vec<_>>(),
        &params,
    );
    launch(
        &x,
        Wgsl::new("norm_stats", x.dtype, 0),
        CubeDim::new_1d(64),
        grid(total_groups, 64),
        &[&partial, &stats],
        &params,
    );
    let (kernel, bound) = reading_x("norm_apply", &[&x, &gamma, &beta, &stats, &out]);
    launch(
        &x,
        kernel,
        CubeDim::new_1d(256),
        grid(b * c * h * w, 256),
        &bound.iter().collect::<Vec<_>>(),
        &params,
    );
    out
}

/// The values of a group that one invocation of the first normalisation stage sums
/// (`CHUNK` in shaders/norm_partials.wgsl).
const NORM_CHUNK: u32 = 256;

/// The longest group normalised by one invocation in one dispatch (shaders/norm_rows.wgsl);
/// longer ones take the three chunked stages. Layer norms' rows (up to 1280 values in SD) and
/// small models' groups are this short; measured in `docs/bench.md`, "Fused kernels".
const SHORT_GROUP: u32 = 4096;

/// Workgroups of `size` invocations for `count` invocations in all, along x and, past the
/// 65535 workgroups an axis may hold, along y (the shaders index `y * x_count + x`).
fn grid(count: u32, size: u32) -> CubeCount {
    let workgroups = count.div_ceil(size).max(1);
    let across = workgroups.min(65535);
    CubeCount::Static(across, workgroups.div_ceil(across), 1)
}

/// Whether two tensors are the same memory, which one dispatch may bind only once.
fn same_tensor(a: &CubeTensor, b: &CubeTensor) -> bool {
    std::ptr::eq(a.handle.memory.descriptor(), b.handle.memory.descriptor())
        && a.handle.offset_start == b.handle.offset_start
}

/// Whether a [B, C, H, W] tensor is stored as a contiguous [B, H, W, C] one.
fn is_channels_last(x: &CubeTensor) -> bool {
    let shape = x.meta.shape();
    let (c, w, h) = (shape[1], shape[3], shape[2]);
    let strides = x.meta.strides();
    (0..4).all(|d| strides[d] == [h * w * c, 1, w * c, c][d])
}

fn output_like(x: &CubeTensor, shape: burn::tensor::Shape) -> CubeTensor {
    empty_device_contiguous_dtype(x.client.clone(), x.device.clone(), shape, x.dtype)
}

/// A kernel's parameters as the bytes of its `Params` struct (u32 and f32 fields only).
fn words(values: &[u32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Launches `kernel` with `tensors` bound in order, then the parameters (uploaded as a small
/// storage buffer: one shader serves every shape).
fn launch(
    on: &CubeTensor,
    kernel: Wgsl,
    threads: CubeDim,
    workgroups: CubeCount,
    tensors: &[&CubeTensor],
    params: &[u8],
) {
    launch_bound(on, kernel, threads, workgroups, tensors, Some(params))
}

/// [`launch`], for kernels with or without parameters.
fn launch_bound(
    on: &CubeTensor,
    kernel: Wgsl,
    threads: CubeDim,
    workgroups: CubeCount,
    tensors: &[&CubeTensor],
    params: Option<&[u8]>,
) {
    let client = &on.client;
    let mut args = tensors.iter().fold(KernelArguments::new(), |args, t| {
        args.with_buffer(t.handle.clone().binding())
    });
    if let Some(params) = params {
        args = args.with_buffer(client.create_from_slice(params).binding());
    }
    client.launch(
        Box::new(SourceKernel::new(kernel, threads)),
        workgroups,
        args,
    );
}

/// One of the `shaders/` kernels, for one storage type (and, for attention, head size and
/// which bound tensor each of q, k and v is read from).
struct Wgsl {
    name: &'static str,
    f16: bool,
    head_dim: u32,
    sources: [u32; 3],
    /// For the norm kernels: whether a shift is bound.
    shifted: bool,
    /// For the tiled attention: keys per block.
    key_block: u32,
    /// For attention: whether a score bias is bound (after the output); for the lanes
    /// matmul, whether a bias is.
    biased: bool,
    /// For the lanes kernels: the subgroup's invocations; for the lanes matmul, whether b is
    /// stored as [K, N] rows (else as [N, K]), and whether `a` is a convolution's input
    /// rather than a matrix.
    lanes: u32,
    b_rows: bool,
    conv: bool,
    /// For the lanes attention: whether q, k and v are bound as vec4s (every row stride and
    /// column offset a multiple of 4), which lavapipe loads four times faster than four
    /// numbers.
    quads: bool,
    /// For the coop matmul: the product it is written for.
    coop: Option<CoopShape>,
    /// For the coop attention: its matrices, workgroup and key count (`key_block` holds its
    /// block of keys).
    coop_attention: Option<CoopAttention>,
}

/// What a coop attention kernel is written for besides its head and block of keys: the
/// cooperative matrices' side, the subgroups' invocations, the workgroup's subgroups, and the
/// number of keys (a constant of its text, shaders/attention_coop.wgsl says why).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct CoopAttention {
    size: u32,
    lanes: u32,
    subgroups: u32,
    key_count: u32,
}

/// The product a coop matmul kernel is written for (its sizes are constants of its text):
/// the cooperative matrices' side, how it cuts the product, M, N and K, and for a
/// convolution its shapes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct CoopShape {
    size: u32,
    block: CoopBlock,
    dims: [u32; 3],
    conv: ConvShape,
}

impl Wgsl {
    fn new(name: &'static str, dtype: DType, head_dim: u32) -> Self {
        Self {
            name,
            f16: dtype == DType::F16,
            head_dim,
            sources: [0, 1, 2],
            shifted: false,
            key_block: 0,
            biased: false,
            lanes: 0,
            b_rows: false,
            conv: false,
            quads: false,
            coop: None,
            coop_attention: None,
        }
    }

    /// The norm kernels' last bindings (the shift, where there is one, then the parameters)
    /// and `shift_of`, which norm_common.wgsl calls.
    fn bind_shift(&self, text: String) -> String {
        let tensors = match self.name {
            "norm_rows" | "norm_wide" => 4,
            "norm_partials" | "norm_stats" => 2,
            "norm_apply" => 5,
            _ => return text,
        };
        let binding = |i: u32, decl: &str| {
            format!("@group(0) @binding({i}) var<storage, read_write> {decl};\n")
        };
        let tail = if self.shifted {
            binding(tensors, "shift: array<T>")
                + &binding(tensors + 1, "p: Params")
                + "fn shift_of(b: u32, c: u32) -> f32 {\n"
                + "    return f32(shift[b * p.shift_stride + p.shift_first + c]);\n}\n"
        } else {
            binding(tensors, "p: Params")
                + "fn shift_of(b: u32, c: u32) -> f32 {\n    return 0.0;\n}\n"
        };
        text.replace("{{ shift_and_params }}", &tail)
    }

    /// Attention's bindings for q, k and v (one per distinct tensor), and where its output
    /// and parameters follow them.
    fn bind_sources(&self, text: String) -> String {
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

    /// The kernel's text, after the text it shares with its family.
    fn template(&self) -> String {
        let own = self.own_template();
        let common = match self.name {
            "geglu" | "bias_residual" => include_str!("../shaders/rows_common.wgsl"),
            "attention" | "attention_tiled" | "attention_lanes" | "attention_coop" => {
                include_str!("../shaders/attention_common.wgsl")
            }
            name if name.starts_with("norm_") => include_str!("../shaders/norm_common.wgsl"),
            _ => return own.to_string(),
        };
        format!("{common}\n{own}")
    }

    /// The tiled attention's loops over a head's values and over a block's keys, written out
    /// with constant indices (shaders/attention_tiled.wgsl says why).
    fn write_out_attention_loops(&self, text: String) -> String {
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

    /// The lanes matmul's parts (shaders/matmul_lanes.wgsl says what each is), for
    /// [`MATMUL_ROW_GROUPS`] groups of `lanes` rows and the columns each lane keeps.
    fn write_out_matmul(&self, text: String) -> String {
        let (lanes, groups) = (self.lanes, MATMUL_ROW_GROUPS);
        let rows = lanes * groups;
        let cols = matmul_cols_per_lane(self.b_rows);
        // Per lane: which row it loads for each group of rows, and where its columns' b starts.
        let mut prologue = String::new();
        for g in 0..groups {
            let row = format!("min(row0 + {}u + lane, p.rows - 1u)", g * lanes);
            if self.conv {
                prologue += &format!(
                    "    let at{g} = {row};\n    let ox{g} = at{g} % p.out_w;\n    \
                     let oy{g} = (at{g} / p.out_w) % p.out_h;\n    \
                     let n{g} = at{g} / (p.out_w * p.out_h);\n"
                );
            } else {
                prologue += &format!("    let a_row{g} = {row} * depth4;\n");
            }
        }
        if self.b_rows {
            prologue += "    let cols4 = p.cols / 4u;\n";
            for q in 0..cols / 4 {
                prologue += &format!("    let b_col{q} = min(col0 / 4u + {q}u, cols4 - 1u);\n");
            }
        } else {
            for q in 0..cols {
                prologue +=
                    &format!("    let b_col{q} = min(col0 + {q}u, p.cols - 1u) * depth4;\n");
            }
        }
        // Sums: a vec4 of four columns per row with b's rows, a number per row and column
        // with its columns.
        let sums = if self.b_rows { cols / 4 } else { cols };
        let zero = if self.b_rows { "vec4<f32>(0.0)" } else { "0.0" };
        let mut accumulators = String::new();
        for r in 0..rows {
            for q in 0..sums {
                accumulators += &format!("    var s{r}_{q} = {zero};\n");
            }
        }
        // One step over four values of K (`kq`), given each group's loaded row quad a{g}.
        let mut step = String::new();
        for r in 0..rows {
            step += &format!(
                "        let r{r} = subgroupBroadcast(a{}, {}u);\n",
                r / lanes,
                r % lanes
            );
        }
        if self.b_rows {
            for (j, part) in ["x", "y", "z", "w"].iter().enumerate() {
                for q in 0..sums {
                    step += &format!(
                        "        let b{j}_{q} = vec4<f32>(b[(kq * 4u + {j}u) * cols4 + b_col{q}]);\n"
                    );
                }
                for r in 0..rows {
                    for q in 0..sums {
                        step += &format!(
                            "        s{r}_{q} = fma(vec4<f32>(r{r}.{part}), b{j}_{q}, s{r}_{q});\n"
                        );
                    }
                }
            }
        } else {
            for q in 0..sums {
                step += &format!("        let b{q} = vec4<f32>(b[b_col{q} + kq]);\n");
            }
            for r in 0..rows {
                for q in 0..sums {
                    step += &format!("        s{r}_{q} += dot(r{r}, b{q});\n");
                }
            }
        }
        let mut body = String::new();
        if self.conv {
            body += "    let c4 = p.c_in / 4u;\n    \
                     for (var tap = 0u; tap < p.kernel * p.kernel; tap = tap + 1u) {\n        \
                     let ky = tap / p.kernel;\n        let kx = tap % p.kernel;\n";
            for g in 0..groups {
                body += &format!(
                    "        let iy{g} = i32(oy{g} * p.stride + ky) - i32(p.pad);\n        \
                     let ix{g} = i32(ox{g} * p.stride + kx) - i32(p.pad);\n        \
                     let inside{g} = iy{g} >= 0 && iy{g} < i32(p.height) && ix{g} >= 0 && ix{g} < i32(p.width);\n        \
                     let from{g} = select(0u, ((n{g} * p.height + u32(iy{g})) * p.width + u32(ix{g})) * c4, inside{g});\n"
                );
            }
            body += "        for (var cq = 0u; cq < c4; cq = cq + 1u) {\n        let kq = tap * c4 + cq;\n";
            for g in 0..groups {
                body += &format!(
                    "        let a{g} = select(vec4<f32>(0.0), vec4<f32>(a[from{g} + cq]), inside{g});\n"
                );
            }
            body += &step;
            body += "        }\n    }\n";
        } else {
            body += "    for (var kq = 0u; kq < depth4; kq = kq + 1u) {\n";
            for g in 0..groups {
                body += &format!("        let a{g} = vec4<f32>(a[a_row{g} + kq]);\n");
            }
            body += &step;
            body += "    }\n";
        }
        let mut store = String::new();
        for r in 0..rows {
            store += &format!("    let out{r} = row0 + {r}u;\n    if (out{r} < p.rows) {{\n");
            for c in 0..cols {
                let sum = if self.b_rows {
                    format!("s{r}_{}.{}", c / 4, ["x", "y", "z", "w"][c as usize % 4])
                } else {
                    format!("s{r}_{c}")
                };
                store += &format!(
                    "        if (col0 + {c}u < p.cols) {{ out[out{r} * p.cols + col0 + {c}u] = T({sum} + bias_of(col0 + {c}u)); }}\n"
                );
            }
            store += "    }\n";
        }
        let bias_and_params = if self.biased {
            "@group(0) @binding(3) var<storage, read_write> bias: array<T>;\n\
             @group(0) @binding(4) var<storage, read_write> p: Params;\n\
             fn bias_of(col: u32) -> f32 {\n    return f32(bias[col]);\n}\n"
        } else {
            "@group(0) @binding(3) var<storage, read_write> p: Params;\n\
             fn bias_of(col: u32) -> f32 {\n    return 0.0;\n}\n"
        };
        text.replace("{{ lanes }}", &lanes.to_string())
            .replace("{{ rows }}", &rows.to_string())
            .replace("{{ cols_per_lane }}", &cols.to_string())
            .replace("{{ bias_and_params }}", bias_and_params)
            .replace("{{ prologue }}", &prologue)
            .replace("{{ accumulators }}", &accumulators)
            .replace("{{ loop }}", &body)
            .replace("{{ store }}", &store)
    }

    /// The coop matmul's sizes, its reads of a and b, and its loops over the cooperative
    /// matrices, written out (shaders/matmul_coop.wgsl says what each part is).
    fn write_out_matmul_coop(&self, text: String) -> String {
        let shape = self.coop.expect("the coop matmul is written for a product");
        let (size, tiles, splits) = (shape.size, shape.block.tiles, shape.block.splits);
        let (tm, tn, tk) = coop_block(size, &shape.block);
        let [m, n, k] = shape.dims;
        // The rows of a's block (TK values each) and of b's (TN values each from b's rows, TK
        // from its columns), padded or not, and how many of b's there are.
        let pad = if shape.block.padded { COOP_PAD } else { 0 };
        let a_stride = tk + pad;
        let (b_lines, b_stride) = if self.b_rows {
            (tk, tn + pad)
        } else {
            (tn, tk + pad)
        };
        // Each part's share of K, in whole steps.
        let k_part = k.div_ceil(splits).div_ceil(tk) * tk;
        let g = shape.conv;
        let threads = 4 * self.lanes;
        // Where a value of a (b) lies in its binding (`at_a`, `at_b`), and whether inside it.
        let locate_a = if self.conv {
            "    let ox = row % OUT_W;\n    let oy = (row / OUT_W) % OUT_H;\n    \
             let image = row / (OUT_W * OUT_H);\n    let tap = k / C_IN;\n    \
             let iy = i32(oy * STRIDE + tap / KERNEL) - i32(PAD);\n    \
             let ix = i32(ox * STRIDE + tap % KERNEL) - i32(PAD);\n    \
             let inside = row < M && k < K && iy >= 0 && iy < i32(HEIGHT) && ix >= 0 && ix < i32(WIDTH);\n    \
             let at_a = ((image * HEIGHT + u32(iy)) * WIDTH + u32(ix)) * C_IN + k % C_IN;\n"
        } else {
            "    let inside = row < M && k < K;\n    let at_a = row * K + k;\n"
        };
        let locate_b = if self.b_rows {
            "    let inside = k < K && col < N;\n    let at_b = k * N + col;\n"
        } else {
            "    let inside = k < K && col < N;\n    let at_b = col * K + k;\n"
        };
        // Runs of eight where every run starts on a multiple of four and lies wholly inside
        // or outside (K, or the channels of a convolution's taps, in eights for a and for b
        // stored as [N, K]; N in eights for b's rows), and the blocks cut into whole shares.
        let a_run = if self.conv { g.c_in } else { k };
        let b_run = if self.b_rows { n } else { k };
        let vec_a = a_run.is_multiple_of(8) && (tm * tk / 8).is_multiple_of(threads);
        let vec_b = b_run.is_multiple_of(8) && (tk * tn / 8).is_multiple_of(threads);
        // fetch_a (fetch_b) returns a's (b's) value at row `row` (`k`) and `k` (column
        // `col`), or the run of eight from there, as `run` (zeros outside); put_a (put_b)
        // stores one into its block at `at`.
        let run = |vector: bool| if vector { "array<vec4<T>, 2>" } else { "T" };
        let read = |name: &str, tile: &str, locate: &str, args: &str, at: &str, vector: bool| {
            let ty = run(vector);
            let (fetch, put) = if vector {
                let stores: String = (0..8)
                    .map(|j| format!("    {tile}[at + {j}u] = run[{}][{}];\n", j / 4, j % 4))
                    .collect();
                let fetch = format!(
                    "{locate}    var run: {ty};\n    if (inside) {{\n        \
                     run[0] = {name}[{at} / 4u];\n        run[1] = {name}[{at} / 4u + 1u];\n    \
                     }}\n    return run;\n"
                );
                (fetch, stores)
            } else {
                let fetch = format!(
                    "{locate}    return select(T(0.0), {name}[select(0u, {at}, inside)], inside);\n"
                );
                (fetch, format!("    {tile}[at] = run;\n"))
            };
            format!(
                "fn fetch_{name}({args}) -> {ty} {{\n{fetch}}}\n\
                 fn put_{name}(at: u32, run: {ty}) {{\n{put}}}\n"
            )
        };
        let reads = read("a", "a_tile", locate_a, "row: u32, k: u32", "at_a", vec_a)
            + &read("b", "b_tile", locate_b, "k: u32, col: u32", "at_b", vec_b);
        // The copies of a's block (row by row) and b's (its rows of TN columns, or its
        // columns of TK values of K), each invocation a value or a run of eight at a time:
        // where in the block (`slot`) and where in a or b (`from`, with the step's first
        // value of K as `K0`) the share at `at` lies, and how many shares each invocation
        // copies.
        let width = |vector: bool| if vector { 8 } else { 1 };
        let a_part = (
            "a",
            "(at / TK) * A_STRIDE + at % TK",
            "row0 + at / TK, K0 + at % TK",
            tm * tk / width(vec_a) / threads,
            width(vec_a),
        );
        let b_part = if self.b_rows {
            (
                "b",
                "(at / TN) * B_STRIDE + at % TN",
                "K0 + at / TN, col0 + at % TN",
                tk * tn / width(vec_b) / threads,
                width(vec_b),
            )
        } else {
            (
                "b",
                "(at / TK) * B_STRIDE + at % TK",
                "K0 + at % TK, col0 + at / TK",
                tk * tn / width(vec_b) / threads,
                width(vec_b),
            )
        };
        let (mut prologue, mut copy, mut prefetch) = (String::new(), String::new(), String::new());
        for (name, slot, from, shares, width) in [a_part, b_part] {
            let at = |i: String| format!("let at = ({i} * THREADS + local) * {width}u;");
            if shape.block.prefetch {
                // Each share in a register of its own: the next step's values are loaded
                // while this step's are multiplied.
                let vector = if name == "a" { vec_a } else { vec_b };
                for i in 0..shares {
                    prologue += &format!(
                        "    var next_{name}{i}: {};\n    {{\n        {}\n        \
                         next_{name}{i} = fetch_{name}({});\n    }}\n",
                        run(vector),
                        at(format!("{i}u")),
                        from.replace("K0", "part * K_PART")
                    );
                    copy += &format!(
                        "        {{\n            {}\n            put_{name}({slot}, next_{name}{i});\n        }}\n",
                        at(format!("{i}u"))
                    );
                    prefetch += &format!(
                        "        {{\n            {}\n            next_{name}{i} = fetch_{name}({});\n        }}\n",
                        at(format!("{i}u")),
                        from.replace("K0", "k0 + TK")
                    );
                }
            } else {
                copy += &format!(
                    "        for (var i = 0u; i < {shares}u; i = i + 1u) {{\n            {}\n            \
                     put_{name}({slot}, fetch_{name}({}));\n        }}\n",
                    at("i".to_string()),
                    from.replace("K0", "k0")
                );
            }
        }
        let element = |vector: bool| if vector { "vec4<T>" } else { "T" };
        let matrix = |role: &str, scalar: &str| format!("coop_mat{size}x{size}<{scalar}, {role}>");
        let mut accumulators = String::new();
        for r in 0..tiles {
            for c in 0..tiles {
                accumulators += &format!("    var acc{r}_{c}: {};\n", matrix("C", "f32"));
            }
        }
        let mut multiply = String::new();
        for step in 0..tk / size {
            let k_at = step * size;
            multiply += "        {\n";
            for r in 0..tiles {
                multiply += &format!(
                    "            let a{r} = coopLoadT<{}>(&a_tile[(sub_row + {}u) * A_STRIDE + {k_at}u], A_STRIDE);\n",
                    matrix("A", "f16"),
                    r * size
                );
            }
            for c in 0..tiles {
                // Row-major from b's rows; column-major from its columns.
                multiply += &if self.b_rows {
                    format!(
                        "            let b{c} = coopLoadT<{}>(&b_tile[{k_at}u * B_STRIDE + sub_col + {}u], B_STRIDE);\n",
                        matrix("B", "f16"),
                        c * size
                    )
                } else {
                    format!(
                        "            let b{c} = coopLoad<{}>(&b_tile[(sub_col + {}u) * B_STRIDE + {k_at}u], B_STRIDE);\n",
                        matrix("B", "f16"),
                        c * size
                    )
                };
            }
            for r in 0..tiles {
                for c in 0..tiles {
                    multiply += &format!(
                        "            acc{r}_{c} = coopMultiplyAdd(a{r}, b{c}, acc{r}_{c});\n"
                    );
                }
            }
            multiply += "        }\n";
        }
        // Each accumulator in turn: every subgroup stores its own into its part of c_tile, and
        // the workgroup writes them out.
        let mut store = String::new();
        for r in 0..tiles {
            for c in 0..tiles {
                store += &format!(
                    "    coopStoreT(acc{r}_{c}, &c_tile[subgroup * S * S], S);\n    \
                     workgroupBarrier();\n    write_sums(row0, col0, part, {r}u, {c}u, local);\n    \
                     workgroupBarrier();\n"
                );
            }
        }
        let bias = if self.biased {
            "@group(0) @binding(3) var<storage, read_write> bias: array<T>;\n\
             fn bias_of(col: u32) -> f32 {\n    return f32(bias[col]);\n}\n"
        } else {
            "fn bias_of(col: u32) -> f32 {\n    return 0.0;\n}\n"
        };
        let number = |v: u32| v.to_string();
        text.replace("{{ size }}", &number(size))
            .replace("{{ lanes }}", &number(self.lanes))
            .replace("{{ threads }}", &number(4 * self.lanes))
            .replace("{{ tm }}", &number(tm))
            .replace("{{ tn }}", &number(tn))
            .replace("{{ tk }}", &number(tk))
            .replace("{{ m }}", &number(m))
            .replace("{{ n }}", &number(n))
            .replace("{{ k }}", &number(k))
            .replace("{{ splits }}", &number(splits))
            .replace("{{ k_part }}", &number(k_part))
            .replace("{{ out_elem }}", if splits > 1 { "f32" } else { "T" })
            .replace("{{ part }}", if splits > 1 { "group.z" } else { "0u" })
            .replace(
                "{{ row_block }}",
                if splits > 1 {
                    "group.y"
                } else {
                    "group.z * groups.y + group.y"
                },
            )
            .replace("{{ height }}", &number(g.height))
            .replace("{{ width }}", &number(g.width))
            .replace("{{ c_in }}", &number(g.c_in))
            .replace("{{ out_h }}", &number(g.out_h))
            .replace("{{ out_w }}", &number(g.out_w))
            .replace("{{ kernel }}", &number(g.kernel))
            .replace("{{ stride }}", &number(g.stride))
            .replace("{{ pad }}", &number(g.pad))
            .replace("{{ a_stride }}", &number(a_stride))
            .replace("{{ b_stride }}", &number(b_stride))
            .replace("{{ a_tile }}", &number(tm * a_stride))
            .replace("{{ b_tile }}", &number(b_lines * b_stride))
            .replace("{{ bias }}", bias)
            .replace("{{ a_elem }}", element(vec_a))
            .replace("{{ b_elem }}", element(vec_b))
            .replace("{{ reads }}", &reads)
            .replace("{{ prologue }}", &prologue)
            .replace("{{ copy }}", &copy)
            .replace("{{ prefetch }}", &prefetch)
            .replace("{{ accumulators }}", &accumulators)
            .replace("{{ multiply }}", &multiply)
            .replace("{{ store }}", &store)
    }

    /// The coop attention's sizes and its loops over the cooperative matrices, written out
    /// (shaders/attention_coop.wgsl says what each part is).
    fn write_out_attention_coop(&self, text: String) -> String {
        let shape = self
            .coop_attention
            .expect("the coop attention is written for a key count");
        let (size, keys) = (shape.size, self.key_block);
        let rows = shape.subgroups * size;
        let padded = self.head_dim.div_ceil(size) * size;
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
            .replace("{{ k_tile }}", &number(keys.max(rows) * (padded + 8)))
            .replace("{{ v_tile }}", &number(keys * (padded + 8)))
            .replace("{{ load_queries }}", &load_queries)
            .replace("{{ scores }}", &scores)
            .replace("{{ accumulate }}", &accumulate)
    }

    /// The lanes attention's loops over a head's values and over a block of keys, written
    /// out (shaders/attention_lanes.wgsl says why).
    fn write_out_attention_lanes(&self, text: String) -> String {
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

    fn own_template(&self) -> &'static str {
        match self.name {
            "norm_rows" => include_str!("../shaders/norm_rows.wgsl"),
            "norm_wide" => include_str!("../shaders/norm_wide.wgsl"),
            "norm_partials" => include_str!("../shaders/norm_partials.wgsl"),
            "norm_stats" => include_str!("../shaders/norm_stats.wgsl"),
            "norm_apply" => include_str!("../shaders/norm_apply.wgsl"),
            "attention" => include_str!("../shaders/attention.wgsl"),
            "attention_tiled" => include_str!("../shaders/attention_tiled.wgsl"),
            "attention_lanes" => include_str!("../shaders/attention_lanes.wgsl"),
            "attention_coop" => include_str!("../shaders/attention_coop.wgsl"),
            "geglu" => include_str!("../shaders/geglu.wgsl"),
            "bias_residual" => include_str!("../shaders/bias_residual.wgsl"),
            "guided_step" => include_str!("../shaders/guided_step.wgsl"),
            "im2col" => include_str!("../shaders/im2col.wgsl"),
            "matmul_lanes" => include_str!("../shaders/matmul_lanes.wgsl"),
            "matmul_coop" => include_str!("../shaders/matmul_coop.wgsl"),
            other => unreachable!("no kernel named {other}"),
        }
    }
}

impl KernelSource for Wgsl {
    fn source(&self) -> SourceTemplate {
        let elem = if self.f16 { "f16" } else { "f32" };
        let mut enable = String::new();
        if self.f16 {
            enable.push_str("enable f16;\n");
        }
        if self.coop_attention.is_some() {
            enable.push_str("enable wgpu_cooperative_matrix;\n");
        }
        // Browsers compile subgroup operations only after `enable subgroups`; naga, which
        // translates the kernels natively, does not parse it (and needs none). Their compiler
        // also proves subgroup operations run in uniform control flow, and cannot here: the
        // loops' bounds are read from a read_write buffer. A workgroup of these kernels is one
        // subgroup, and every branch it takes before a broadcast depends only on its
        // workgroup and the parameters, so the check is turned off.
        if self.lanes > 0 && cfg!(target_arch = "wasm32") {
            enable.push_str("enable subgroups;\ndiagnostic(off, subgroup_uniformity);\n");
        }
        let mut text = self.template();
        if self.name == "attention_tiled" {
            text = self.write_out_attention_loops(text);
        }
        if self.name == "attention_lanes" {
            text = self.write_out_attention_lanes(text);
        }
        if self.name == "matmul_lanes" {
            text = self.write_out_matmul(text);
        }
        if self.name == "matmul_coop" {
            text = self.write_out_matmul_coop(text);
        }
        if self.name == "attention_coop" {
            text = self.write_out_attention_coop(text);
        }
        let text = text
            .replace("{{ enable }}", &enable)
            .replace("{{ elem }}", elem)
            .replace("{{ head_dim }}", &self.head_dim.to_string())
            .replace("{{ key_block }}", &self.key_block.to_string())
            .replace(
                "{{ tile_vec4s }}",
                &(self.key_block * self.head_dim / 4).to_string(),
            );
        SourceTemplate::new(self.bind_shift(self.bind_sources(text)))
    }

    fn id(&self) -> KernelId {
        KernelId::new::<Self>().info((
            self.name,
            self.f16,
            self.head_dim,
            self.sources,
            self.shifted,
            self.key_block,
            self.biased,
            (self.lanes, self.b_rows, self.conv, self.quads),
            self.coop,
            self.coop_attention,
        ))
    }

    fn lang(&self) -> &'static str {
        "wgsl"
    }
}

#[cfg(test)]
mod tests {
    use super::{AttentionKernel, CoopBlock, coop_attention, coop_fits};
    use crate::device::Limits;

    /// A GPU with this much workgroup memory and this many invocations per workgroup.
    fn adapter(workgroup_bytes: u32, workgroup_invocations: u32) -> Limits {
        Limits {
            max_binding_bytes: 1 << 30,
            shader_f16: true,
            computes_f16: true,
            adapter: "a GPU".into(),
            workgroup_bytes,
            workgroup_invocations,
            software: false,
            subgroup_lanes: Some(32),
            coop_size: Some(16),
        }
    }

    #[test]
    fn the_coop_blocks_fit_the_adapters_workgroups() {
        let block = CoopBlock::new;
        // An H200 (48 KiB, 1,024 invocations; subgroups of 32, 16x16 matrices): both blocks.
        let h200 = adapter(48 << 10, 1024);
        assert!(coop_fits(&h200, 16, 32, block(2)) && coop_fits(&h200, 16, 32, block(4)));
        // With 64 values of K per step, the 128 block takes 40 KiB: it fits.
        let deep = CoopBlock {
            depth: 4,
            ..block(4)
        };
        assert!(coop_fits(&h200, 16, 32, deep));
        // With 16 KiB the 128 block (24 KiB: a's and b's blocks, their rows padded, and the
        // sums) does not fit; the 64 block (14 KiB) does.
        let small = adapter(16 << 10, 1024);
        assert!(coop_fits(&small, 16, 32, block(2)) && !coop_fits(&small, 16, 32, block(4)));
        // Subgroups of 64 make workgroups of 256: not where 128 is the most.
        assert!(coop_fits(&h200, 16, 64, block(2)));
        assert!(!coop_fits(&adapter(48 << 10, 128), 16, 64, block(2)));
        // lavapipe (32 KiB; subgroups of 8, 8x8 matrices): both blocks.
        let lavapipe = adapter(32 << 10, 1024);
        assert!(coop_fits(&lavapipe, 8, 8, block(2)) && coop_fits(&lavapipe, 8, 8, block(4)));
    }

    #[test]
    fn the_coop_attention_takes_the_largest_block_that_fits() {
        let block = |limits: &Limits, head_dim| {
            coop_attention(limits, head_dim).map(|kernel| match kernel {
                AttentionKernel::Coop {
                    subgroups, keys, ..
                } => (subgroups, keys),
                other => panic!("{other:?}"),
            })
        };
        // On an H200, SD 1.5's heads (40, 80 and 160 values) and SD 2.1's (64): four
        // subgroups of 16 rows and blocks of 32 keys for heads of 40 and 64 (64 keys for
        // heads of 40 would take 54,784 B of the 49,152), blocks of 16 for heads of 80, two
        // subgroups and blocks of 16 for heads of 160.
        let h200 = adapter(48 << 10, 1024);
        for head_dim in [40, 64] {
            assert_eq!(block(&h200, head_dim), Some((4, 32)), "heads of {head_dim}");
        }
        assert_eq!(block(&h200, 80), Some((4, 16)));
        assert_eq!(block(&h200, 160), Some((2, 16)));
        // With 16 KiB, heads of 160 fit no block: another kernel serves them.
        assert_eq!(block(&adapter(16 << 10, 1024), 160), None);
        // Subgroups of 64 where a workgroup has at most 128 invocations: two subgroups.
        let mut wide = adapter(48 << 10, 128);
        wide.subgroup_lanes = Some(64);
        assert_eq!(block(&wide, 64), Some((2, 64)));
        // No matrices, no coop attention.
        let mut plain = h200.clone();
        plain.coop_size = None;
        assert_eq!(block(&plain, 64), None);
        // lavapipe (32 KiB; subgroups of 8, 8x8 matrices).
        let mut lavapipe = adapter(32 << 10, 1024);
        (lavapipe.subgroup_lanes, lavapipe.coop_size) = (Some(8), Some(8));
        assert_eq!(block(&lavapipe, 40), Some((4, 64)));
        assert_eq!(block(&lavapipe, 64), Some((4, 32)));
    }
}
