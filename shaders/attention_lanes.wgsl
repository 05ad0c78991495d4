// Attention as attention.wgsl computes it (same bindings, parameters and result), for
// software adapters with subgroups (lavapipe). There every load is a gather, lane by lane,
// even where all lanes read the same address (shaders/matmul_lanes.wgsl says more), and in
// attention.wgsl every invocation loads every key and value of its head. Here a workgroup
// is one subgroup of LANES query rows; the keys are walked in blocks of LANES, each lane
// loading one key's and one value's row, and `subgroupBroadcast` (a register shuffle) hands
// each to every lane: a LANES-th of the loads. Each block's scores are taken first, so the
// running maximum and the rescaling move once per block. Nothing of size Lq x Lk is stored.
//
// It also computes right where attention.wgsl does not on lavapipe (Mesa 22.3, LLVM 15:
// wrong past about 512 keys, shaders/README.md).

// T, HEAD_DIM, Params and the bindings (q, k, v, out, p): attention_common.wgsl.
//
// src/kernels/attention.rs writes out the loops over the head's values and over a block's keys (the
// {{ ... }} lines) with constant indices, so that the query, the running output, the
// block's rows and its scores stay in registers.
const LANES: u32 = {{ lanes }}u;

// x: blocks of LANES query rows; y: batch x heads.
@compute @workgroup_size({{ lanes }})
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(subgroup_invocation_id) lane: u32,
) {
    let row = wg.x * LANES + lane;
    // Rows past the end read the last row, take part in every broadcast, and write nothing.
    let live = row < p.queries;
    let q_row = min(row, p.queries - 1u);
    let b = wg.y / p.heads;
    let h = wg.y % p.heads;
    let inner = p.heads * HEAD_DIM;
    let q_at = (b * p.queries + q_row) * p.q_stride + p.q_col + h * HEAD_DIM;
    // q{d} = q[q_at + 4d .. + 4] * scale and acc{d} = 0, for each d < HEAD_DIM / 4.
{{ load_query }}
    var best = -3.0e38;
    var total = 0.0;
    for (var j0 = 0u; j0 < p.keys; j0 += LANES) {
        // This lane's key of the block (the last key again past the end).
        let kv_at = (b * p.keys + min(j0 + lane, p.keys - 1u)) * p.kv_stride + h * HEAD_DIM;
        // k{d} and v{d}: its key's and value's values 4d .. 4d + 4.
{{ load_block }}
        // For each key j of the block: score{j} = dot(query, key j broadcast) + bias (or
        // -3e38 past the last key); block_best their maximum with the running one.
        var block_best = best;
{{ scores }}
        // What was summed so far was weighted against the old maximum.
        let rescale = exp(best - block_best);
        total *= rescale;
        best = block_best;
        // acc{d} *= rescale; then for each key j: w{j} = exp(score{j} - best),
        // total += w{j}, acc{d} += w{j} * value j broadcast.
{{ accumulate }}
    }
    if (live) {
        let out_at = (b * p.queries + row) * inner + h * HEAD_DIM;
{{ store }}
    }
}
