// Group and layer normalisation of short groups on GPUs: one workgroup of 64 invocations per
// group, where norm_rows.wgsl gives each group a single invocation. A layer norm's row of
// 320 values read by one invocation walks memory alone and leaves the chip idle: on an H200
// that kernel took a quarter of SD 1.5's UNet call (docs/bench.md, "On a real GPU"). Here
// neighbouring invocations read neighbouring values, and the sums meet in workgroup memory.
// Same statistics as norm_rows (the mean, then the squared deviations from it, in f32), then
// SiLU if asked. Software adapters keep norm_rows: they run barriers slowly.
// Params, T, shift_of and the order the values are read in: norm_common.wgsl.

@group(0) @binding(0) var<storage, read_write> x: array<T>;
@group(0) @binding(1) var<storage, read_write> gamma: array<T>;
@group(0) @binding(2) var<storage, read_write> beta: array<T>;
@group(0) @binding(3) var<storage, read_write> y: array<T>;
{{ shift_and_params }}

const LANES: u32 = 64u;

var<workgroup> lanes: array<f32, 64>;

// The sum of every invocation's `value`, for all of them. Called from uniform control flow
// only (every invocation of the workgroup reaches each call).
fn workgroup_sum(lane: u32, value: f32) -> f32 {
    lanes[lane] = value;
    workgroupBarrier();
    for (var half = LANES / 2u; half > 0u; half = half / 2u) {
        if (lane < half) {
            lanes[lane] = lanes[lane] + lanes[lane + half];
        }
        workgroupBarrier();
    }
    let total = lanes[0];
    // Before the next call overwrites the lanes.
    workgroupBarrier();
    return total;
}

@compute @workgroup_size(64)
fn main(
    @builtin(local_invocation_index) lane: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) grid: vec3<u32>,
) {
    // No early return: every invocation must reach the barriers. A workgroup past the last
    // group (the grid is rounded up to whole rows of workgroups) reads and writes nothing.
    let group = wid.y * grid.x + wid.x;
    let in_range = group < p.total_groups;
    let n = select(0u, p.channels * p.positions, in_range);
    let b = group / p.groups;
    let first = (group % p.groups) * p.channels;

    var sum = 0.0;
    for (var j = lane; j < n; j = j + LANES) {
        let c = first + channel_of(j);
        sum = sum + f32(x[input_at(b, c, position_of(j))]) + shift_of(b, c);
    }
    let mean = workgroup_sum(lane, sum) / f32(max(n, 1u));
    var m2 = 0.0;
    for (var j = lane; j < n; j = j + LANES) {
        let c = first + channel_of(j);
        let d = f32(x[input_at(b, c, position_of(j))]) + shift_of(b, c) - mean;
        m2 = m2 + d * d;
    }
    let scale = inverseSqrt(workgroup_sum(lane, m2) / f32(max(n, 1u)) + p.eps);
    let all_channels = p.groups * p.channels;
    for (var j = lane; j < n; j = j + LANES) {
        let c = first + channel_of(j);
        let pos = position_of(j);
        let value = f32(x[input_at(b, c, pos)]) + shift_of(b, c);
        var v = (value - mean) * scale * f32(gamma[c]) + f32(beta[c]);
        if (p.silu != 0u) {
            v = v / (1.0 + exp(-v));
        }
        y[(b * p.positions + pos) * all_channels + c] = T(v);
    }
}
