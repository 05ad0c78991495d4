// The gated GELU of SD's transformer feed-forward: x [..., 2F] (contiguous) holds [value, gate]
// in each row before its projection's bias [2F] is added, and out [..., F] = value *
// gelu(gate), with the exact (erf) GELU. burn runs the same as a bias addition, a split, the
// GELU's few element-wise kernels and a product.

// Params and T: rows_common.wgsl.
@group(0) @binding(0) var<storage, read_write> x: array<T>;
@group(0) @binding(1) var<storage, read_write> bias: array<T>;
@group(0) @binding(2) var<storage, read_write> out: array<T>;
@group(0) @binding(3) var<storage, read_write> p: Params;

// erf by Abramowitz and Stegun's formula 7.1.26 (absolute error below 1.5e-7); WGSL has none.
fn erf(z: f32) -> f32 {
    let a = abs(z);
    let t = 1.0 / (1.0 + 0.3275911 * a);
    let poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741
        + t * (-1.453152027 + t * 1.061405429))));
    return sign(z) * (1.0 - poly * exp(-a * a));
}

// One output value per invocation; the workgroups cover a 2-D grid, as one axis may hold at
// most 65535 of them.
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = id.y * groups.x * 256u + id.x;
    if (i >= p.count) {
        return;
    }
    let row = i / p.width;
    let col = i % p.width;
    let value = f32(x[row * 2u * p.width + col]) + f32(bias[col]);
    let gate = f32(x[row * 2u * p.width + p.width + col]) + f32(bias[p.width + col]);
    out[i] = T(value * 0.5 * gate * (1.0 + erf(gate * 0.70710678118654752)));
}
