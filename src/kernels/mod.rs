//! Hand-written WGSL kernels (`shaders/`, whose README lists them) for the hot paths that burn
//! runs as chains of small kernels or slowly. On a GPU each dispatch has a fixed cost, and on
//! a small model most of a UNet call is that cost (`docs/bench.md`, "Fused kernels"); on a
//! large one, arithmetic rate is ("On a real GPU").
//!
//! They run on wgpu devices (WebGPU in the browser, Vulkan natively) through burn's backend
//! extension API ([`Fused`]), as templates burn hands to wgpu untranslated. Callers ask their
//! model's [`Kernels`] choice first ([`Kernels::fused_for`]) and otherwise compose burn's own
//! operations; the CPU backend always does, and so does a GPU for a model loaded with
//! [`Kernels::Burn`] (to measure the kernels, or to rule them out).
//!
//! One module per family of kernels, each with its calls, its choice of kernel for an
//! adapter and the code that writes its text out:
//! - `norm`: group and layer normalisation, optionally with SiLU and a shift;
//! - `attention`: attention without a score matrix, with the interventions' score bias;
//! - `conv`: convolutions as burn's matmul over gathered patches, and where to cut a
//!   product's sum over K;
//! - `matmul`: our own products (subgroup lanes, cooperative matrices): linear layers and
//!   convolutions as implicit GEMMs;
//! - `rows`: the gated GELU, and a bias with the residual;
//! - `step`: classifier-free guidance's combine with the sampler's step;
//! - `dispatch`, which they share: binding and launching a kernel.
//!
//! A kernel's text (`Wgsl`, below) is its `shaders/` file after the one its family shares,
//! with the sizes and loops the call needs written in by its family's module.

mod attention;
mod conv;
mod dispatch;
mod matmul;
mod norm;
mod rows;
mod step;

pub use attention::{
    AttentionColumns, AttentionKernel, MAX_HEAD_DIM, SOFTWARE_ATTENTION_MAX_KEYS, ScoreBias,
    attention, attention_kernel, attention_serves, attention_with, coop_attention_fits,
};
pub use conv::{ConvShape, GATHER_BLOCK_BYTES, GemmCuts, conv2d_im2col, k_splits};
pub use matmul::{CoopBlock, MatmulKernel, conv2d_fused, coop_fits, matmul, matmul_kernel};
pub use norm::{
    group_norm, group_norm_in, group_norm_silu_shifted, group_norm_silu_shifted_in,
    norm_in_workgroups,
};
pub use rows::{bias_residual, geglu};
pub use step::guided_step;

use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, backend_extension};
use burn::tensor::{DType, Device};
use burn_cubecl::CubeBackend;
use burn_cubecl::cubecl::prelude::KernelId;
use burn_cubecl::template::{KernelSource, SourceTemplate};
use burn_cubecl::tensor::CubeTensor;

use crate::schedulers::AffineStep;
use attention::CoopAttention;
use matmul::CoopShape;

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

/// The operations, routed by burn's dispatch to the backend a tensor lives on. Only the cube
/// (wgpu) backend has them, which is why callers ask [`Kernels::fused_for`] first.
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
        norm::dispatch(x, gamma, beta, None, groups, eps, silu, wide)
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
        norm::dispatch(
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
        attention::dispatch(q, k, v, bias, heads, columns)
    }

    fn geglu(x: CubeTensor, bias: CubeTensor) -> CubeTensor {
        rows::dispatch_geglu(x, bias)
    }

    fn channels_last(x: CubeTensor) -> CubeTensor {
        dispatch::to_channels_last(x)
    }

    fn im2col(x: CubeTensor, g: ConvShape, first_row: u32, rows: u32, splits: u32) -> CubeTensor {
        conv::dispatch_im2col(x, g, first_row, rows, splits)
    }

    fn bias_residual(x: CubeTensor, bias: CubeTensor, residual: CubeTensor) -> CubeTensor {
        rows::dispatch_bias_residual(x, bias, residual)
    }

    fn fused_matmul(
        a: CubeTensor,
        b: CubeTensor,
        bias: CubeTensor,
        biased: bool,
        conv: Option<ConvShape>,
        how: MatmulKernel,
    ) -> CubeTensor {
        matmul::dispatch(a, b, bias, biased, conv, how)
    }

    fn guided_step(
        model: CubeTensor,
        sample: CubeTensor,
        guidance: Option<f64>,
        step: AffineStep,
    ) -> (CubeTensor, CubeTensor) {
        step::dispatch(model, sample, guidance, step)
    }
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

    /// The kernel's text, after the text it shares with its family.
    fn template(&self) -> String {
        let own = self.own_template();
        let common = match self.name {
            "geglu" | "bias_residual" => include_str!("../../shaders/rows_common.wgsl"),
            "attention" | "attention_tiled" | "attention_lanes" | "attention_coop" => {
                include_str!("../../shaders/attention_common.wgsl")
            }
            name if name.starts_with("norm_") => include_str!("../../shaders/norm_common.wgsl"),
            _ => return own.to_string(),
        };
        format!("{common}\n{own}")
    }

    fn own_template(&self) -> &'static str {
        match self.name {
            "norm_rows" => include_str!("../../shaders/norm_rows.wgsl"),
            "norm_wide" => include_str!("../../shaders/norm_wide.wgsl"),
            "norm_partials" => include_str!("../../shaders/norm_partials.wgsl"),
            "norm_stats" => include_str!("../../shaders/norm_stats.wgsl"),
            "norm_apply" => include_str!("../../shaders/norm_apply.wgsl"),
            "attention" => include_str!("../../shaders/attention.wgsl"),
            "attention_tiled" => include_str!("../../shaders/attention_tiled.wgsl"),
            "attention_lanes" => include_str!("../../shaders/attention_lanes.wgsl"),
            "attention_coop" => include_str!("../../shaders/attention_coop.wgsl"),
            "geglu" => include_str!("../../shaders/geglu.wgsl"),
            "bias_residual" => include_str!("../../shaders/bias_residual.wgsl"),
            "guided_step" => include_str!("../../shaders/guided_step.wgsl"),
            "im2col" => include_str!("../../shaders/im2col.wgsl"),
            "matmul_lanes" => include_str!("../../shaders/matmul_lanes.wgsl"),
            "matmul_coop" => include_str!("../../shaders/matmul_coop.wgsl"),
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
    use super::attention::coop_attention;
    use super::{AttentionKernel, CoopBlock, coop_fits};
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
