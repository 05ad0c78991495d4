// Group and layer normalisation, stage 1 of 3: the statistics of every chunk of up to CHUNK
// consecutive values of a group, one invocation per chunk. A chunk is read twice (its mean,
// then its squared deviations from that mean), so the sums stay as accurate as a two-pass
// reduction. No stage uses workgroup memory or barriers: software adapters (SwiftShader,
// lavapipe) run barriers slowly, and three plain dispatches still replace about fourteen.
// Params and T: norm_common.wgsl.

const CHUNK: u32 = 256u;

@group(0) @binding(0) var<storage, read_write> x: array<T>;
// Per chunk: its value count, its mean and its sum of squared deviations (M2).
@group(0) @binding(1) var<storage, read_write> partial: array<f32>;
{{ shift_and_params }}

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) grid: vec3<u32>) {
    let chunk = id.y * grid.x * 64u + id.x;
    if (chunk >= p.total_groups * p.chunks) {
        return;
    }
    let group = chunk / p.chunks;
    let n = p.channels * p.positions;
    let begin = (chunk % p.chunks) * CHUNK;
    let end = min(begin + CHUNK, n);
    var sum = 0.0;
    for (var i = begin; i < end; i = i + 1u) {
        sum = sum + (f32(x[value_at(group, i, p.x_channels_last)]) + shift_at(group, i));
    }
    let count = f32(end - begin);
    let mean = sum / count;
    var m2 = 0.0;
    for (var i = begin; i < end; i = i + 1u) {
        let d = (f32(x[value_at(group, i, p.x_channels_last)]) + shift_at(group, i)) - mean;
        m2 = m2 + d * d;
    }
    partial[chunk * 3u] = count;
    partial[chunk * 3u + 1u] = mean;
    partial[chunk * 3u + 2u] = m2;
}
