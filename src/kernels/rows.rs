//! Row-wise kernels of the transformer blocks: the gated GELU with its projection's bias, and
//! a linear layer's bias with the residual around it (shaders/geglu.wgsl,
//! shaders/bias_residual.wgsl).

use burn::backend::Dispatch;
use burn::tensor::Tensor;
use burn_cubecl::cubecl::prelude::CubeDim;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::tensor::CubeTensor;

use super::Fused;
use super::Wgsl;
use super::dispatch::{grid, launch, output_like, words};

/// `value * gelu(gate)` for x [B, L, 2F] holding [value, gate] along its last axis once `bias`
/// `[2F]` is added: [B, L, F].
pub fn geglu(x: Tensor<3>, bias: &Tensor<1>) -> Tensor<3> {
    Tensor::from_dispatch(<Dispatch as Fused>::geglu(
        x.into_dispatch(),
        bias.clone().into_dispatch(),
    ))
}

/// `x + bias + residual` for x and residual [B, L, F] and bias `[F]`: a linear layer's bias
/// and the residual connection around it.
pub fn bias_residual(x: Tensor<3>, bias: &Tensor<1>, residual: Tensor<3>) -> Tensor<3> {
    Tensor::from_dispatch(<Dispatch as Fused>::bias_residual(
        x.into_dispatch(),
        bias.clone().into_dispatch(),
        residual.into_dispatch(),
    ))
}

/// [`Fused::geglu`] on a wgpu device.
pub(super) fn dispatch_geglu(x: CubeTensor, bias: CubeTensor) -> CubeTensor {
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

/// [`Fused::bias_residual`] on a wgpu device.
pub(super) fn dispatch_bias_residual(
    x: CubeTensor,
    bias: CubeTensor,
    residual: CubeTensor,
) -> CubeTensor {
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
