// Group and layer normalisation, stage 1 of 3: the statistics of every chunk of up to CHUNK
// consecutive values of a group, one invocation per chunk. A chunk is read twice (its mean,
// then its squared deviations from that mean), so the sums stay as accurate as a two-pass
// reduction. No stage uses workgroup memory or barriers: software adapters (SwiftShader,
// lavapipe) run barriers slowly, and three plain dispatches still replace about fourteen.
//
// x is a contiguous [B, C, H, W] tensor; a group is `channels * positions` consecutive values
// (a layer norm's row is a group of one channel). Sums are taken in f32 whatever T is.

{{ enable }}
alias T = {{ elem }};

struct Params {
    channels: u32,
    positions: u32,
    groups: u32,
    silu: u32,
    eps: f32,
    // Chunks per group: ceil(channels * positions / CHUNK).
    chunks: u32,
    // Groups in the whole tensor: batch * groups.
    total_groups: u32,
}

const CHUNK: u32 = 256u;

// Every binding is read_write, even those only read: burn places many tensors in one wgpu
// buffer, and a dispatch may not bind one buffer both read-only and writable.
@group(0) @binding(0) var<storage, read_write> x: array<T>;
// Per chunk: its value count, its mean and its sum of squared deviations (M2).
@group(0) @binding(1) var<storage, read_write> partial: array<f32>;
@group(0) @binding(2) var<storage, read_write> p: Params;

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
    let base = group * n;
    var sum = 0.0;
    for (var i = begin; i < end; i = i + 1u) {
        sum = sum + f32(x[base + i]);
    }
    let count = f32(end - begin);
    let mean = sum / count;
    var m2 = 0.0;
    for (var i = begin; i < end; i = i + 1u) {
        let d = f32(x[base + i]) - mean;
        m2 = m2 + d * d;
    }
    partial[chunk * 3u] = count;
    partial[chunk * 3u + 1u] = mean;
    partial[chunk * 3u + 2u] = m2;
}
