//! Our own matrix products (shaders/matmul_lanes.wgsl, shaders/matmul_coop.wgsl): linear
//! layers, 1x1 convolutions and 3x3 convolutions as an implicit GEMM; which kernel and block
//! serve a product on an adapter, and the text each is written out into.

use burn::backend::Dispatch;
use burn::tensor::{DType, Device, Tensor};
use burn_cubecl::cubecl::prelude::{CubeCount, CubeDim};
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_contiguous_dtype;
use burn_cubecl::tensor::CubeTensor;

use super::Wgsl;
use super::conv::{ConvShape, k_splits};
use super::dispatch::{launch_bound, output_like, to_channels_last, words};
use super::{Fused, Kernels};

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
    /// `COOP_PAD` unused values, so that the rows a matrix load reads together lie in
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
    /// `COOP_K_TILES` matrices of K per step, rows padded, the sum whole.
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

/// `a` [M, K] times `b` [K, N], plus `bias` `[N]` where given, by `kernel` (from
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
/// [B, Cout, Ho, Wo] stored channels-last, as [`conv2d_im2col`](super::conv2d_im2col).
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

/// [`Fused::fused_matmul`] on a wgpu device: the lanes or coop kernel `how` names, with its
/// block of the output per workgroup.
pub(super) fn dispatch(
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

/// The product a coop matmul kernel is written for (its sizes are constants of its text):
/// the cooperative matrices' side, how it cuts the product, M, N and K, and for a
/// convolution its shapes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) struct CoopShape {
    size: u32,
    block: CoopBlock,
    dims: [u32; 3],
    conv: ConvShape,
}

impl Wgsl {
    /// The lanes matmul's parts (shaders/matmul_lanes.wgsl says what each is), for
    /// [`MATMUL_ROW_GROUPS`] groups of `lanes` rows and the columns each lane keeps.
    pub(super) fn write_out_matmul(&self, text: String) -> String {
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
    pub(super) fn write_out_matmul_coop(&self, text: String) -> String {
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
}
