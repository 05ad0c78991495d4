// Scaled dot-product attention over heads packed in the last dimension, in one kernel:
// q [B, Lq, H*D], k and v [B, Lk, H*D] give out [B, Lq, H*D] (contiguous). q, k and v may be
// column ranges of wider rows, such as the [q | k | v] rows of one fused projection: each is
// read at its own column offset with its own row stride. One invocation per
// query row and head keeps its query and its running output in registers and walks the keys
// once with an online softmax (a running maximum rescales what was summed before it), so the
// Lq x Lk scores are never stored. burn's fallback runs the same as two matmuls, a softmax of
// several kernels and the copies that move heads into and out of their own axis.

// T, HEAD_DIM, Params and the bindings (q, k, v, out, p): attention_common.wgsl.

// x: query rows, 64 to a workgroup; y: batch x heads. The 64 invocations of a workgroup read
// the same key and value rows at the same time, which caches serve once.
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    let row = id.x;
    if (row >= p.queries) {
        return;
    }
    let b = id.y / p.heads;
    let h = id.y % p.heads;
    let inner = p.heads * HEAD_DIM;
    let q_at = (b * p.queries + row) * p.q_stride + p.q_col + h * HEAD_DIM;

    var query: array<f32, HEAD_DIM>;
    for (var d = 0u; d < HEAD_DIM; d = d + 1u) {
        query[d] = f32({{ q }}[q_at + d]) * p.scale;
    }
    var acc: array<f32, HEAD_DIM>;
    var best = -3.0e38;
    var total = 0.0;
    for (var j = 0u; j < p.keys; j = j + 1u) {
        let kv_at = (b * p.keys + j) * p.kv_stride + h * HEAD_DIM;
        let k_at = kv_at + p.k_col;
        let v_at = kv_at + p.v_col;
        var score = bias_at(b, row, j);
        for (var d = 0u; d < HEAD_DIM; d = d + 1u) {
            score = score + query[d] * f32({{ k }}[k_at + d]);
        }
        if (score > best) {
            // A new maximum: what was summed so far was weighted against the old one.
            let rescale = exp(best - score);
            total = total * rescale;
            for (var d = 0u; d < HEAD_DIM; d = d + 1u) {
                acc[d] = acc[d] * rescale;
            }
            best = score;
        }
        let weight = exp(score - best);
        total = total + weight;
        for (var d = 0u; d < HEAD_DIM; d = d + 1u) {
            acc[d] = acc[d] + weight * f32({{ v }}[v_at + d]);
        }
    }
    let out_at = (b * p.queries + row) * inner + h * HEAD_DIM;
    for (var d = 0u; d < HEAD_DIM; d = d + 1u) {
        out[out_at + d] = T(acc[d] / total);
    }
}
