// Attention as attention.wgsl computes it (same bindings, parameters and result), for GPUs:
// flash attention's blocking. A workgroup of 64 invocations takes 64 query rows of one head;
// the keys are walked in blocks of KEY_BLOCK rows, each block's keys and values copied once
// into workgroup memory by all 64 invocations together (neighbouring invocations reading
// neighbouring values), then read by every query row from there as vec4s. Each block's scores
// are taken first, so the running maximum and the rescaling of what was summed before move
// once per block rather than once per key. Nothing of size Lq x Lk is stored.
//
// attention.wgsl, with no workgroup memory and no barrier, stays the kernel for software adapters,
// which run barriers slowly (shaders/README.md); src/kernels/attention.rs picks one by the
// adapter's facts.

// T, HEAD_DIM, Params and the bindings (q, k, v, out, p): attention_common.wgsl.
//
// The loops over the head's values and over a block's keys are written out by
// src/kernels/attention.rs (the {{ ... }} lines), so that every index into `query`, `acc` and the
// scores is a constant and the three stay in registers: a loop the driver's compiler does not
// unroll leaves arrays it indexes in memory.
const D4: u32 = HEAD_DIM / 4u;
const KEY_BLOCK: u32 = {{ key_block }}u;

var<workgroup> k_tile: array<vec4<f32>, {{ tile_vec4s }}>;
var<workgroup> v_tile: array<vec4<f32>, {{ tile_vec4s }}>;

// x: blocks of 64 query rows; y: batch x heads.
@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let row = wg.x * 64u + lid;
    // Rows past the end still help copy the blocks and meet every barrier.
    let live = row < p.queries;
    let b = wg.y / p.heads;
    let h = wg.y % p.heads;
    let inner = p.heads * HEAD_DIM;

    var query: array<vec4<f32>, D4>;
    var acc: array<vec4<f32>, D4>;
    // Rows past the end read row 0 and never write.
    let q_at = (b * p.queries + select(0u, row, live)) * p.q_stride + p.q_col + h * HEAD_DIM;
    // query[d] = q[q_at + 4d .. q_at + 4d + 4] * scale; acc[d] = 0, for each d < D4.
{{ load_query }}
    var best = -3.0e38;
    var total = 0.0;
    for (var j0 = 0u; j0 < p.keys; j0 += KEY_BLOCK) {
        let count = min(KEY_BLOCK, p.keys - j0);
        for (var e = lid; e < count * HEAD_DIM; e += 64u) {
            let j = e / HEAD_DIM;
            let d = e % HEAD_DIM;
            let kv_at = (b * p.keys + j0 + j) * p.kv_stride + h * HEAD_DIM + d;
            k_tile[j * D4 + d / 4u][d % 4u] = f32({{ k }}[kv_at + p.k_col]);
            v_tile[j * D4 + d / 4u][d % 4u] = f32({{ v }}[kv_at + p.v_col]);
        }
        workgroupBarrier();
        if (live) {
            // Whole blocks; keys past the last weigh nothing. For each key j of the block:
            // score_j = dot(query, k_tile[j]) (or -3e38 past the last key), and block_best
            // their maximum with the running one.
            var block_best = best;
{{ scores }}
            // What was summed so far was weighted against the old maximum.
            let rescale = exp(best - block_best);
            total *= rescale;
            best = block_best;
            // For each d: acc[d] *= rescale; then for each key j: w_j = exp(score_j - best),
            // total += w_j, acc[d] += w_j * v_tile[j][d].
{{ accumulate }}
        }
        workgroupBarrier();
    }
    if (live) {
        let out_at = (b * p.queries + row) * inner + h * HEAD_DIM;
        // out[out_at + 4d .. + 4] = acc[d] / total, for each d < D4.
{{ store }}
    }
}
