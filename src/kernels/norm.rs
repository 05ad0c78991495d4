//! Group and layer normalisation, optionally with SiLU and a per-sample shift
//! (shaders/norm_*.wgsl).

use burn::backend::Dispatch;
use burn::tensor::{DType, Device, Tensor};
use burn_cubecl::cubecl::prelude::CubeDim;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_contiguous_dtype;
use burn_cubecl::ops::permute;
use burn_cubecl::tensor::CubeTensor;

use super::Fused;
use super::Wgsl;
use super::dispatch::{grid, is_channels_last, launch, output_like, words};
use crate::views::ChannelShift;

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

/// Group normalisation of [B, C, H, W] (stored as such or channels-last), plus a
/// per-sample, per-channel shift (a [B, N] table and its first column) where given: one
/// dispatch for short groups (a workgroup per group where `wide`, else an invocation), three
/// for long ones (shaders/norm_*.wgsl).
#[allow(clippy::too_many_arguments)]
pub(super) fn dispatch(
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

impl Wgsl {
    /// The norm kernels' last bindings (the shift, where there is one, then the parameters)
    /// and `shift_of`, which norm_common.wgsl calls.
    pub(super) fn bind_shift(&self, text: String) -> String {
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
}
