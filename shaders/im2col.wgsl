// The patches of a convolution's input as the rows of a matrix, so that the convolution is one
// matrix product with burn's tiled matmul (src/kernels/conv.rs, `conv2d_im2col`): x channels-last
// [B, H, W, Cin] gives cols [rows, K] for output positions first_row .. first_row + rows of
// the M = B * Ho * Wo, with K = kh * kw * Cin ordered (ky, kx, channel) as a channels-last
// filter [Cout, kh, kw, Cin] is stored. Zero where a patch hangs over the padding. One
// invocation per value; neighbouring invocations read neighbouring channels.
//
// Split along K (for products too small to fill a GPU, as at 8x8 latents), the matrix is
// written as [K / split, rows, split]: one [rows, split] slice per part of the sum, each
// multiplied by its own slice of the filters in one batched product.

{{ enable }}
alias T = {{ elem }};

struct Params {
    height: u32,
    width: u32,
    c_in: u32,
    out_h: u32,
    out_w: u32,
    kernel_w: u32,
    stride: u32,
    pad: u32,
    first_row: u32,
    // K, and the values to write (rows * K).
    k: u32,
    count: u32,
    // The columns of one slice of K (K itself when the product is not split).
    split: u32,
}

// Every binding is read_write: burn places many tensors in one wgpu buffer, and a dispatch may
// not bind one buffer both read-only and writable.
@group(0) @binding(0) var<storage, read_write> x: array<T>;
@group(0) @binding(1) var<storage, read_write> cols: array<T>;
@group(0) @binding(2) var<storage, read_write> p: Params;

// The workgroups cover a 2-D grid, as one axis may hold at most 65535 of them.
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = id.y * groups.x * 256u + id.x;
    if (i >= p.count) {
        return;
    }
    let row = i / p.k;
    let m = p.first_row + row;
    let k = i % p.k;
    let positions = p.out_h * p.out_w;
    let b = m / positions;
    let pos = m % positions;
    let tap = k / p.c_in;
    let ch = k % p.c_in;
    let iy = i32((pos / p.out_w) * p.stride + tap / p.kernel_w) - i32(p.pad);
    let ix = i32((pos % p.out_w) * p.stride + tap % p.kernel_w) - i32(p.pad);
    var v = T(0.0);
    if (iy >= 0 && iy < i32(p.height) && ix >= 0 && ix < i32(p.width)) {
        v = x[((b * p.height + u32(iy)) * p.width + u32(ix)) * p.c_in + ch];
    }
    let rows = p.count / p.k;
    cols[((k / p.split) * rows + row) * p.split + k % p.split] = v;
}
