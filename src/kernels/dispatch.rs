//! What every kernel's call shares: binding tensors and parameters, sizing the grid, and the
//! layouts tensors are read in.

use burn_cubecl::cubecl::prelude::{CubeCount, CubeDim};
use burn_cubecl::cubecl::server::KernelArguments;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_contiguous_dtype;
use burn_cubecl::ops::permute;
use burn_cubecl::template::SourceKernel;
use burn_cubecl::tensor::CubeTensor;

use super::Wgsl;

/// Workgroups of `size` invocations for `count` invocations in all, along x and, past the
/// 65535 workgroups an axis may hold, along y (the shaders index `y * x_count + x`).
pub(super) fn grid(count: u32, size: u32) -> CubeCount {
    let workgroups = count.div_ceil(size).max(1);
    let across = workgroups.min(65535);
    CubeCount::Static(across, workgroups.div_ceil(across), 1)
}

/// Whether two tensors are the same memory, which one dispatch may bind only once.
pub(super) fn same_tensor(a: &CubeTensor, b: &CubeTensor) -> bool {
    std::ptr::eq(a.handle.memory.descriptor(), b.handle.memory.descriptor())
        && a.handle.offset_start == b.handle.offset_start
}

/// Whether a [B, C, H, W] tensor is stored as a contiguous [B, H, W, C] one.
pub(super) fn is_channels_last(x: &CubeTensor) -> bool {
    let shape = x.meta.shape();
    let (c, w, h) = (shape[1], shape[3], shape[2]);
    let strides = x.meta.strides();
    (0..4).all(|d| strides[d] == [h * w * c, 1, w * c, c][d])
}

pub(super) fn output_like(x: &CubeTensor, shape: burn::tensor::Shape) -> CubeTensor {
    empty_device_contiguous_dtype(x.client.clone(), x.device.clone(), shape, x.dtype)
}

/// A kernel's parameters as the bytes of its `Params` struct (u32 and f32 fields only).
pub(super) fn words(values: &[u32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Launches `kernel` with `tensors` bound in order, then the parameters (uploaded as a small
/// storage buffer: one shader serves every shape).
pub(super) fn launch(
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
pub(super) fn launch_bound(
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

/// [B, C, H, W] stored channels-last: `x` itself where it is (at one position both layouts are
/// the same memory), else a copy.
pub(super) fn to_channels_last(x: CubeTensor) -> CubeTensor {
    let shape = x.meta.shape();
    if shape[2] * shape[3] == 1 {
        return into_contiguous(x);
    }
    if is_channels_last(&x) {
        return x;
    }
    permute(into_contiguous(permute(x, &[0, 2, 3, 1])), &[0, 3, 1, 2])
}
