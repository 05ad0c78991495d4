// Group and layer normalisation, stage 2 of 3: each group's mean and 1 / sqrt(variance + eps)
// from its chunks' statistics (Chan et al.'s pairwise update: counts, means and M2s combine
// without cancellation), one invocation per group. Params: norm_common.wgsl.

@group(0) @binding(0) var<storage, read_write> partial: array<f32>;
// Per group: mean, 1 / sqrt(variance + eps).
@group(0) @binding(1) var<storage, read_write> stats: array<f32>;
{{ shift_and_params }}

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) grid: vec3<u32>) {
    let group = id.y * grid.x * 64u + id.x;
    if (group >= p.total_groups) {
        return;
    }
    var count = 0.0;
    var mean = 0.0;
    var m2 = 0.0;
    for (var c = 0u; c < p.chunks; c = c + 1u) {
        let at = (group * p.chunks + c) * 3u;
        let n = partial[at];
        let delta = partial[at + 1u] - mean;
        let total = count + n;
        mean = mean + delta * (n / total);
        m2 = m2 + partial[at + 2u] + delta * delta * (count * n / total);
        count = total;
    }
    stats[group * 2u] = mean;
    stats[group * 2u + 1u] = inverseSqrt(m2 / count + p.eps);
}
