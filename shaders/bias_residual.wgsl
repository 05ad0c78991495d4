// A linear layer's bias and the residual around it, in one pass: out = x + bias + residual,
// with x [..., F] a matmul's output, bias [F] and residual [..., F] (all contiguous). burn adds
// the bias and then the residual as two element-wise kernels.

// Params and T: rows_common.wgsl.
@group(0) @binding(0) var<storage, read_write> x: array<T>;
@group(0) @binding(1) var<storage, read_write> bias: array<T>;
@group(0) @binding(2) var<storage, read_write> residual: array<T>;
@group(0) @binding(3) var<storage, read_write> out: array<T>;
@group(0) @binding(4) var<storage, read_write> p: Params;

// One value per invocation; the workgroups cover a 2-D grid, as one axis may hold at most
// 65535 of them. The sum is taken in f32 and rounded once.
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = id.y * groups.x * 256u + id.x;
    if (i >= p.count) {
        return;
    }
    out[i] = T(f32(x[i]) + f32(bias[i % p.width]) + f32(residual[i]));
}
