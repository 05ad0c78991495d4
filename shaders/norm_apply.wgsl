// Group and layer normalisation, stage 3 of 3: y = (x - mean) * scale * gamma[c] + beta[c],
// then SiLU if asked, one invocation per value. Params and T: norm_common.wgsl.

@group(0) @binding(0) var<storage, read_write> x: array<T>;
@group(0) @binding(1) var<storage, read_write> gamma: array<T>;
@group(0) @binding(2) var<storage, read_write> beta: array<T>;
@group(0) @binding(3) var<storage, read_write> stats: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<T>;
{{ shift_and_params }}

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) grid: vec3<u32>) {
    // One invocation per value of y, in y's (channels-last) order: neighbours write neighbours.
    let o = id.y * grid.x * 256u + id.x;
    let n = p.channels * p.positions;
    if (o >= p.total_groups * n) {
        return;
    }
    let all_channels = p.groups * p.channels;
    let c = o % all_channels;
    let pos = (o / all_channels) % p.positions;
    let group = (o / (all_channels * p.positions)) * p.groups + c / p.channels;
    let i = (c % p.channels) * p.positions + pos;
    let stat = group * 2u;
    let value = f32(x[value_at(group, i, p.x_channels_last)]) + shift_at(group, i);
    var v = (value - stats[stat]) * stats[stat + 1u] * f32(gamma[c]) + f32(beta[c]);
    if (p.silu != 0u) {
        v = v / (1.0 + exp(-v));
    }
    y[o] = T(v);
}
