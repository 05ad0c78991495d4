// A matrix product out [M, N] = a [M, K] b [K, N] (+ bias [N]) in f16, or a convolution as
// that product read straight from its channels-last input (an implicit GEMM), multiplied in
// cooperative matrices: a subgroup's S x S tiles that the hardware multiplies and adds as one
// operation (NVIDIA's tensor cores through VK_KHR_cooperative_matrix; lavapipe emulates them).
// Natively only, where wgpu offers `wgpu_cooperative_matrix` (an experimental feature):
// WebGPU has no matrix instructions yet, and WGSL's scalar arithmetic reaches a few percent
// of a tensor core's rate (docs/bench.md, "On a real GPU").
//
// A workgroup computes a TM x TN block of the output with four subgroups, two by two; each
// holds 2 x 2 or 4 x 4 accumulators of S x S f32 sums (TM = TN = 4S or 8S). Per step of TK
// values of K, the workgroup copies a's TM x TK block and b's TK x TN block into workgroup
// memory (value by value, or in runs of eight as two vec4 loads where the shapes allow;
// zeros past the matrices' edges and over a convolution's padding), and each subgroup loads
// its matrices from there and multiplies them. A prefetching block loads each invocation's
// share of the next step into registers before the multiplications and stores it after the
// next barrier, so that the loads' latency is spent on the products. At the end the sums
// pass through workgroup memory once more, one accumulator of each subgroup at a time, so
// that every invocation writes whole f16 values with the bias added, inside the edges only. Where the product is
// too small to fill the GPU (at a UNet's 16x16 and 8x8 latents), its sum over K is cut into
// SPLITS parts, each summed by its own workgroups into an f32 partial product that the
// runtime then adds.
//
// Every size is a constant of the text: `src/kernels/matmul.rs` writes one kernel per product shape
// (a UNet has a few dozen). The loops then have constant bounds, which keeps the cooperative
// operations in uniform control flow (as they must be: every binding is read_write, and a
// bound read from one would not count as uniform), and divisions by the convolution's sizes
// become multiplications. It also writes out the loops over the tiles, with constant indices.

enable f16;
enable wgpu_cooperative_matrix;

alias T = f16;
// The side of one cooperative matrix, the subgroups' size and the workgroup's invocations.
const S: u32 = {{ size }}u;
const LANES: u32 = {{ lanes }}u;
const THREADS: u32 = 4u * LANES;
// The workgroup's block of the output, and the values of K per step.
const TM: u32 = {{ tm }}u;
const TN: u32 = {{ tn }}u;
const TK: u32 = {{ tk }}u;
// Where each row of a's block and of b's lies from the one before in workgroup memory: its
// values, then, where the block is padded, 8 unused ones, so that the rows a matrix load
// reads together fall in different banks.
const A_STRIDE: u32 = {{ a_stride }}u;
const B_STRIDE: u32 = {{ b_stride }}u;
// The product: M x K times K x N.
const M: u32 = {{ m }}u;
const N: u32 = {{ n }}u;
const K: u32 = {{ k }}u;
// The parts the sum over K is cut into, and the values of K each sums (whole steps).
const SPLITS: u32 = {{ splits }}u;
const K_PART: u32 = {{ k_part }}u;
// For a convolution: its input, channels-last [batch, HEIGHT, WIDTH, C_IN], and its output
// positions (the product's rows: batch x OUT_H x OUT_W); K is KERNEL^2 x C_IN, ordered as the
// filter matrix [kh, kw, in] is.
const HEIGHT: u32 = {{ height }}u;
const WIDTH: u32 = {{ width }}u;
const C_IN: u32 = {{ c_in }}u;
const OUT_H: u32 = {{ out_h }}u;
const OUT_W: u32 = {{ out_w }}u;
const KERNEL: u32 = {{ kernel }}u;
const STRIDE: u32 = {{ stride }}u;
const PAD: u32 = {{ pad }}u;

// Every binding is read_write: burn places many tensors in one wgpu buffer, and a dispatch
// may not bind one buffer both read-only and writable.
// a and b as vec4s where every copied run of eight values starts on a multiple of four
// (their rows, or a convolution's channels, in eights): a copy is then two loads.
@group(0) @binding(0) var<storage, read_write> a: array<{{ a_elem }}>;
@group(0) @binding(1) var<storage, read_write> b: array<{{ b_elem }}>;
// [M, N], or with SPLITS parts [SPLITS, M, N] in f32.
@group(0) @binding(2) var<storage, read_write> out: array<{{ out_elem }}>;
{{ bias }}

// a's block row by row (TK values of K each); b's block as its rows of TN columns, or, where
// b is stored as [N, K], as its columns of TK values (so that neighbouring invocations copy
// neighbouring values either way), each row A_STRIDE or B_STRIDE values after the last; one
// S x S matrix of sums per subgroup, row by row.
var<workgroup> a_tile: array<T, {{ a_tile }}>;
var<workgroup> b_tile: array<T, {{ b_tile }}>;
var<workgroup> c_tile: array<f32, 4u * S * S>;

// fetch_a (fetch_b): a's (b's) value at row `row` (`k`) and `k` (column `col`), or the eight
// values from there, along K for a and for b stored as [N, K], along its columns for b's
// rows; zeros past the edges and over a convolution's padding. put_a (put_b) stores them
// into a's (b's) block at `at`.
{{ reads }}
// x: blocks of columns; y, then z past 65535 of them: blocks of rows; or, with SPLITS parts,
// z: the part.
@compute @workgroup_size({{ threads }})
fn main(
    @builtin(workgroup_id) group: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
    @builtin(subgroup_id) subgroup: u32,
) {
    let row0 = ({{ row_block }}) * TM;
    let col0 = group.x * TN;
    let part = {{ part }};
    if (row0 >= M) {
        return;
    }
    // This subgroup's first row and column in the block.
    let sub_row = (subgroup / 2u) * (TM / 2u);
    let sub_col = (subgroup % 2u) * (TN / 2u);
{{ accumulators }}
    // Where the blocks are prefetched, each invocation's share of the first step's, into
    // registers of its own.
{{ prologue }}
    for (var k0 = part * K_PART; k0 < min(K, (part + 1u) * K_PART); k0 = k0 + TK) {
        // This step's blocks into workgroup memory: copied, or stored from the registers.
{{ copy }}
        workgroupBarrier();
        // Where prefetched, the next step's shares into the registers (past the part's end
        // they are loaded and never stored; past K they are zeros).
{{ prefetch }}
{{ multiply }}
        workgroupBarrier();
    }
{{ store }}
}

// Writes the sums that each subgroup stored in its S x S part of c_tile, those of its
// accumulator at (tile_row, tile_col) in its part of the block.
fn write_sums(row0: u32, col0: u32, part: u32, tile_row: u32, tile_col: u32, local: u32) {
    for (var i = 0u; i < 4u * S * S / THREADS; i = i + 1u) {
        let at = i * THREADS + local;
        // The subgroup whose sum this is, and where in its matrix.
        let owner = at / (S * S);
        let within = at % (S * S);
        let row = row0 + (owner / 2u) * (TM / 2u) + tile_row * S + within / S;
        let col = col0 + (owner % 2u) * (TN / 2u) + tile_col * S + within % S;
        if (row < M && col < N) {
            // The bias once, with the first part's sums.
            let bias = select(0.0, bias_of(col), part == 0u);
            out[(part * M + row) * N + col] = {{ out_elem }}(c_tile[at] + bias);
        }
    }
}
