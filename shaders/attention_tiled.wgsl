// Attention as attention.wgsl computes it (same bindings, parameters and result), for GPUs:
// flash attention's blocking. A workgroup of 64 invocations takes 64 query rows of one head;
// the keys are walked in blocks of KEY_BLOCK rows, each block's keys and values copied once
// into workgroup memory by all 64 invocations together (neighbouring invocations reading
// neighbouring values), then read by every query row from there as vec4s. Each block's scores
// are taken first, so the running maximum and the rescaling of what was summed before move
// once per block rather than once per key. Nothing of size Lq x Lk is stored.
//
// attention.wgsl, with no workgroup memory and no barrier, stays the kernel for software
// adapters, which run barriers slowly (shaders/README.md); src/kernels.rs picks one by the
// adapter's facts.

// T, HEAD_DIM, Params and the bindings (q, k, v, out, p): attention_common.wgsl.
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
    if (live) {
        let q_at = (b * p.queries + row) * p.q_stride + p.q_col + h * HEAD_DIM;
        for (var d = 0u; d < D4; d++) {
            let at = q_at + 4u * d;
            query[d] = vec4<f32>(f32({{ q }}[at]), f32({{ q }}[at + 1u]), f32({{ q }}[at + 2u]),
                f32({{ q }}[at + 3u])) * p.scale;
        }
    }
    var acc: array<vec4<f32>, D4>;
    for (var d = 0u; d < D4; d++) {
        acc[d] = vec4<f32>(0.0);
    }
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
            // Whole blocks, so that the loops have a fixed length the compiler can unroll
            // and keep the scores in registers; keys past the last weigh nothing.
            var scores: array<f32, KEY_BLOCK>;
            var block_best = best;
            for (var j = 0u; j < KEY_BLOCK; j++) {
                var s = vec4<f32>(0.0);
                for (var d = 0u; d < D4; d++) {
                    s = fma(query[d], k_tile[j * D4 + d], s);
                }
                scores[j] = select(-3.0e38, s.x + s.y + s.z + s.w, j < count);
                block_best = max(block_best, scores[j]);
            }
            // What was summed so far was weighted against the old maximum.
            let rescale = exp(best - block_best);
            total *= rescale;
            for (var d = 0u; d < D4; d++) {
                acc[d] *= rescale;
            }
            best = block_best;
            for (var j = 0u; j < KEY_BLOCK; j++) {
                let weight = exp(scores[j] - best);
                total += weight;
                for (var d = 0u; d < D4; d++) {
                    acc[d] = fma(vec4<f32>(weight), v_tile[j * D4 + d], acc[d]);
                }
            }
        }
        workgroupBarrier();
    }
    if (live) {
        let out_at = (b * p.queries + row) * inner + h * HEAD_DIM;
        for (var d = 0u; d < D4; d++) {
            let v = acc[d] / total;
            out[out_at + 4u * d] = T(v.x);
            out[out_at + 4u * d + 1u] = T(v.y);
            out[out_at + 4u * d + 2u] = T(v.z);
            out[out_at + 4u * d + 3u] = T(v.w);
        }
    }
}
