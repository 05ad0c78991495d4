//! Convolutions as burn's tiled matmul over gathered patches (shaders/im2col.wgsl), with the
//! sum over K cut where a product is too small to fill a GPU; a convolution's shape.

use burn::backend::Dispatch;
use burn::tensor::Tensor;
use burn_cubecl::cubecl::prelude::CubeDim;
use burn_cubecl::tensor::CubeTensor;

use super::Fused;
use super::Wgsl;
use super::dispatch::{grid, launch, output_like, to_channels_last, words};

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
/// `SPLIT_BELOW_TILES` output tiles or more; else doubled while the tiles times the parts
/// stay within `SPLIT_TILES_TARGET`, each part keeps at least `MIN_SPLIT_DEPTH` of K,
/// and the parts divide K; at most `MAX_SPLITS`. 1 on software adapters, whose few cores the tiles already keep
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

/// [`Fused::im2col`] on a wgpu device.
pub(super) fn dispatch_im2col(
    x: CubeTensor,
    g: ConvShape,
    first_row: u32,
    rows: u32,
    splits: u32,
) -> CubeTensor {
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

/// A convolution's shapes, as shaders/im2col.wgsl and the matmul kernels take them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ConvShape {
    pub(super) height: u32,
    pub(super) width: u32,
    pub(super) c_in: u32,
    pub(super) out_h: u32,
    pub(super) out_w: u32,
    pub(super) kernel: u32,
    pub(super) stride: u32,
    pub(super) pad: u32,
}

impl ConvShape {
    /// The convolution of an input of dims [B, Cin, H, W] by square filters of dims [Cout,
    /// Cin, k, k], with `stride` and `padding` on each side.
    pub(super) fn new(
        input: [usize; 4],
        filters: [usize; 4],
        stride: usize,
        padding: usize,
    ) -> Self {
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
