// Group and layer normalisation of short groups in one dispatch: one invocation per group
// reads it twice for the statistics (its mean, then its squared deviations from the mean)
// and a third time to write the normalised values, then SiLU if asked. For groups of up to a
// few thousand values (a layer norm's row, a small model's group) one pass of serial work
// costs less than the two extra dispatches of the chunked path (norm_partials.wgsl).
// Params and T: norm_common.wgsl.

@group(0) @binding(0) var<storage, read_write> x: array<T>;
@group(0) @binding(1) var<storage, read_write> gamma: array<T>;
@group(0) @binding(2) var<storage, read_write> beta: array<T>;
@group(0) @binding(3) var<storage, read_write> y: array<T>;
{{ shift_and_params }}

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) grid: vec3<u32>) {
    let group = id.y * grid.x * 64u + id.x;
    if (group >= p.total_groups) {
        return;
    }
    let n = p.channels * p.positions;
    var sum = 0.0;
    for (var i = 0u; i < n; i = i + 1u) {
        sum = sum + (f32(x[value_at(group, i, p.x_channels_last)]) + shift_at(group, i));
    }
    let mean = sum / f32(n);
    var m2 = 0.0;
    for (var i = 0u; i < n; i = i + 1u) {
        let d = (f32(x[value_at(group, i, p.x_channels_last)]) + shift_at(group, i)) - mean;
        m2 = m2 + d * d;
    }
    let scale = inverseSqrt(m2 / f32(n) + p.eps);
    let first_channel = (group % p.groups) * p.channels;
    for (var i = 0u; i < n; i = i + 1u) {
        let c = first_channel + i / p.positions;
        let value = f32(x[value_at(group, i, p.x_channels_last)]) + shift_at(group, i);
        var v = (value - mean) * scale * f32(gamma[c]) + f32(beta[c]);
        if (p.silu != 0u) {
            v = v / (1.0 + exp(-v));
        }
        y[value_at(group, i, 1u)] = T(v);
    }
}
