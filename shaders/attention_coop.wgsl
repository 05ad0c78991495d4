// Attention as attention.wgsl computes it (same bindings, parameters and result), in f16 with
// both products in cooperative matrices: the scores q k^T and the weighted sum of the values
// (NVIDIA's tensor cores through VK_KHR_cooperative_matrix; lavapipe emulates them). Natively
// only, where wgpu offers `wgpu_cooperative_matrix` (shaders/matmul_coop.wgsl says more).
//
// Flash attention's blocking, as attention_tiled.wgsl has it, with the arithmetic moved into
// the matrices. A workgroup of SUBGROUPS subgroups takes BQ = SUBGROUPS x S query rows of one
// head, S rows per subgroup, its queries held in cooperative matrices for the whole run. The
// keys are walked in blocks of BK:
//   1. the workgroup copies the block's keys and values into workgroup memory (zeros past the
//      last key and past the head's values, which are padded to a multiple of S);
//   2. each subgroup multiplies its queries by the block's keys and stores its S x BK scores;
//   3. each row's running maximum, sum and rescaling move once per block, in f32, by one
//      invocation per row, which writes the row's weights exp(score - maximum) as f16 and
//      rescales the row's output sums;
//   4. each subgroup multiplies its weights by the block's values, adding into its rows of
//      the output sums, which stay in workgroup memory in f32 (a cooperative matrix's values
//      cannot be scaled row by row, so they live where step 3 can reach them).
// Nothing of size Lq x Lk is stored. At the end each row's sums are divided by its total.
//
// KEYS, the walk's bound, is a constant of the text, as every size of the matmul's is: the
// cooperative operations must run in uniform control flow, and a bound read from a read_write
// binding would not count as uniform. src/kernels/attention.rs writes one kernel per head size and
// key count (a UNet has a handful) and writes out the loops over the matrices.

// T (f16), HEAD_DIM, Params and the bindings (q, k, v, out, p, bias_at): attention_common.wgsl.

// The side of one cooperative matrix, the subgroups' invocations, the workgroup's subgroups
// and invocations.
const S: u32 = {{ size }}u;
const LANES: u32 = {{ lanes }}u;
const SUBGROUPS: u32 = {{ subgroups }}u;
const THREADS: u32 = SUBGROUPS * LANES;
// Query rows per workgroup, keys per block, the head's values padded to whole matrices.
const BQ: u32 = SUBGROUPS * S;
const BK: u32 = {{ key_block }}u;
const DP: u32 = {{ padded }}u;
const KEYS: u32 = {{ keys }}u;
// Where each row of the tiles below lies from the one before: its values, then 16 unused
// bytes, so that the rows a matrix load or store reaches together fall in different banks
// of workgroup memory (as in matmul_coop.wgsl's blocks).
const KS: u32 = DP + 8u;
const SS: u32 = BK + 4u;
const WS: u32 = BK + 8u;
const OS: u32 = DP + 4u;

// The block's keys (first the workgroup's queries, before the walk) and its values, a row
// of DP values per key (or query), KS apart.
var<workgroup> k_tile: array<T, {{ k_tile }}>;
var<workgroup> v_tile: array<T, {{ v_tile }}>;
// Each query row's scores for the block (SS apart), then its weights (WS apart); its output
// sums (OS apart); its running maximum and total.
var<workgroup> s_tile: array<f32, BQ * SS>;
var<workgroup> w_tile: array<T, BQ * WS>;
var<workgroup> o_tile: array<f32, BQ * OS>;
var<workgroup> row_best: array<f32, BQ>;
var<workgroup> row_total: array<f32, BQ>;

// x: blocks of BQ query rows; y: batch x heads.
@compute @workgroup_size({{ threads }})
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
    @builtin(subgroup_id) subgroup: u32,
) {
    let row0 = wg.x * BQ;
    let b = wg.y / p.heads;
    let h = wg.y % p.heads;
    let inner = p.heads * HEAD_DIM;
    // This subgroup's first row in the block.
    let sub_row = subgroup * S;

    // The queries, through k_tile; the output sums and the rows' statistics cleared.
    for (var e = local; e < BQ * DP; e += THREADS) {
        let r = e / DP;
        let d = e % DP;
        let row = row0 + r;
        let inside = row < p.queries && d < HEAD_DIM;
        let at = (b * p.queries + row) * p.q_stride + p.q_col + h * HEAD_DIM + d;
        k_tile[r * KS + d] = select(T(0.0), {{ q }}[select(0u, at, inside)], inside);
        o_tile[r * OS + d] = 0.0;
    }
    for (var r = local; r < BQ; r += THREADS) {
        row_best[r] = -3.0e38;
        row_total[r] = 0.0;
    }
    workgroupBarrier();
    // q{t}: the subgroup's queries, values tS .. tS + S, for each t < DP / S.
{{ load_queries }}
    workgroupBarrier();

    for (var j0 = 0u; j0 < KEYS; j0 += BK) {
        // 1. The block's keys and values.
        for (var e = local; e < BK * DP; e += THREADS) {
            let j = e / DP;
            let d = e % DP;
            let key = j0 + j;
            let inside = key < KEYS && d < HEAD_DIM;
            let at = select(0u, (b * KEYS + key) * p.kv_stride + h * HEAD_DIM + d, inside);
            k_tile[j * KS + d] = select(T(0.0), {{ k }}[at + p.k_col], inside);
            v_tile[j * KS + d] = select(T(0.0), {{ v }}[at + p.v_col], inside);
        }
        workgroupBarrier();
        // 2. The subgroup's scores: for each S keys c of the block, the sum over t of q{t}
        // times keys c's values tS .. tS + S (read column by column: k transposed), stored
        // into the subgroup's rows of s_tile.
{{ scores }}
        workgroupBarrier();
        // 3. Each row's weights, statistics and rescaled sums. Row r starts its walk at
        // column r, so that invocations walking their rows in step reach different banks.
        for (var r = local; r < BQ; r += THREADS) {
            let row = row0 + r;
            let old_best = row_best[r];
            var best = old_best;
            for (var i = 0u; i < BK; i++) {
                let j = (i + r) % BK;
                let score = select(
                    -3.0e38,
                    s_tile[r * SS + j] * p.scale + bias_at(b, row, j0 + j),
                    j0 + j < KEYS,
                );
                s_tile[r * SS + j] = score;
                best = max(best, score);
            }
            var sum = 0.0;
            for (var i = 0u; i < BK; i++) {
                let j = (i + r) % BK;
                // The weight as the matrix multiplies it, so that the total matches.
                let w = T(exp(s_tile[r * SS + j] - best));
                w_tile[r * WS + j] = w;
                sum += f32(w);
            }
            let rescale = exp(old_best - best);
            row_best[r] = best;
            row_total[r] = row_total[r] * rescale + sum;
            for (var i = 0u; i < DP; i++) {
                let d = (i + r) % DP;
                o_tile[r * OS + d] *= rescale;
            }
        }
        workgroupBarrier();
        // 4. The weighted values: for each S of the head's values t, the subgroup's sums
        // loaded, each S keys c's weights times their values added, stored back.
{{ accumulate }}
        workgroupBarrier();
    }

    // Each row's sums over its total, inside the queries and the head.
    for (var e = local; e < BQ * HEAD_DIM; e += THREADS) {
        let r = e / HEAD_DIM;
        let d = e % HEAD_DIM;
        let row = row0 + r;
        if (row < p.queries) {
            let at = (b * p.queries + row) * inner + h * HEAD_DIM + d;
            out[at] = T(o_tile[r * OS + d] / row_total[r]);
        }
    }
}
