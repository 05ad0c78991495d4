// A matrix product out [M, N] = a [M, K] b [K, N] (+ bias [N]), or a convolution as that
// product read straight from its channels-last input (an implicit GEMM: no gathered patch
// matrix), for software adapters with subgroups (lavapipe).
//
// Why this shape: lavapipe runs a workgroup's invocations as the lanes of CPU vectors, and
// every load from a buffer or from workgroup memory is a gather, one lane at a time, even
// where all lanes read the same address; arithmetic is cheap beside it (a kernel of FMAs
// alone runs at about 90 GFLOP/s on 2 cores, burn's tiled matmul at 9-14). So each load
// must feed as many FMAs as it can. A workgroup is one subgroup of LANES invocations and
// computes ROWS rows of the output
// (2 x LANES). Each lane loads a different row's four values of K
// (one gather brings LANES rows' worth), and `subgroupBroadcast`, a register shuffle, hands
// every row to every lane; each lane loads four values of K for each of its own columns and
// keeps every row's sums for them in registers. 3x the rate of burn's matmul on lavapipe.
//
// src/kernels/matmul.rs writes the parts in braces: the accumulators, the loop over K (over the
// filter's taps and then the input's channels for a convolution, where a tap outside the
// input reads zeros), the step that broadcasts rows and accumulates, and the stores, all
// with constant indices so that they stay in registers. It picks b's layout: [K, N] rows
// (a 3x3 filter matrix), read as vec4s of four columns, or [N, K] (a linear layer's or a
// 1x1 convolution's PyTorch weight, seen transposed), read as vec4s of four values of K.

{{ enable }}
alias T = {{ elem }};
const LANES: u32 = {{ lanes }}u;
// Output rows per workgroup: groups of LANES.
const ROWS: u32 = {{ rows }}u;

struct Params {
    // M, N and K.
    rows: u32,
    cols: u32,
    depth: u32,
    // For a convolution: its input, channels-last [batch, height, width, c_in], and its
    // output positions (the product's rows: batch x out_h x out_w); K is kernel^2 x c_in,
    // ordered as the filter matrix [kh, kw, in] is.
    height: u32,
    width: u32,
    c_in: u32,
    out_h: u32,
    out_w: u32,
    kernel: u32,
    stride: u32,
    pad: u32,
}

// Every binding is read_write: burn places many tensors in one wgpu buffer, and a dispatch
// may not bind one buffer both read-only and writable.
@group(0) @binding(0) var<storage, read_write> a: array<vec4<T>>;
@group(0) @binding(1) var<storage, read_write> b: array<vec4<T>>;
@group(0) @binding(2) var<storage, read_write> out: array<T>;
{{ bias_and_params }}

// x: blocks of columns; y, then z past 65535 of them: blocks of ROWS rows.
@compute @workgroup_size({{ lanes }})
fn main(
    @builtin(workgroup_id) group: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(subgroup_invocation_id) lane: u32,
) {
    let row0 = (group.z * groups.y + group.y) * ROWS;
    if (row0 >= p.rows) {
        return;
    }
    // This lane's first column.
    let col0 = (group.x * LANES + lane) * {{ cols_per_lane }}u;
    let depth4 = p.depth / 4u;
{{ prologue }}
{{ accumulators }}
{{ loop }}
{{ store }}
}
