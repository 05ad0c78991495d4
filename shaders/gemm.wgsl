// A tiled matrix product C[M, N] = A[M, K] B[K, N] (+ bias[N]) that serves convolutions as an
// implicit GEMM (no unfolded copy of the input) and linear layers as the same product.
//
// A convolution of x (channels-last: [B, H, W, Cin]) with a weight stored channels-last
// ([Cout, kh, kw, Cin]) is such a product with M = B * Ho * Wo output positions, N = Cout and
// K = kh * kw * Cin: row m of A is the input patch under output position m, read straight
// from x (zero where the patch hangs over the padding), and column n of B is filter n's
// weights, contiguous in memory. A linear layer is the 1x1 case over one "image row" of
// M tokens, with its weight stored [K, N] (`B_K_MAJOR`). The output is [M, N]: channels-last
// for a convolution, which the next norm and convolution read in place.
//
// 256 invocations compute a tile of (16 * TM) x (16 * TN) outputs (TM and TN multiples of
// 4). Each step of the K loop copies a BK-deep slice of A's and B's tiles into workgroup
// memory (as f32 whatever the storage type), then every invocation accumulates its TM x TN
// outputs from it in f32 registers. An invocation owns TM / 4 runs of 4 rows (rows
// 64 g + 4 ty .. + 3) and TN / 4 runs of 4 columns (64 h + 4 tx .. + 3), so each step reads
// its operands as whole vec4s: (TM + TN) / 4 workgroup-memory reads for TM * TN
// multiply-adds, where one read per value would leave a GPU waiting on workgroup memory.
// Neighbouring invocations read neighbouring vec4s of B's slice, and 16 invocations share
// each vec4 of A's.
//
// The copies into workgroup memory follow the inputs' contiguous axis (channels for a
// convolution's input and filters, columns for a linear layer's weight), so neighbouring
// invocations read neighbouring values; each slice row is padded by one vec4, which keeps
// the invocations storing one column of a slice within two memory banks of each other.
//
{{ enable }}
alias T = {{ elem }};

const TM: u32 = {{ tm }}u;
const TN: u32 = {{ tn }}u;
const BK: u32 = {{ bk }}u;
const BM: u32 = 16u * TM;
const BN: u32 = 16u * TN;
// Row strides of the slices in workgroup memory, in vec4s: a tile row and one of padding.
const AS: u32 = BM / 4u + 1u;
const BS: u32 = BN / 4u + 1u;
const B_K_MAJOR: bool = {{ b_k_major }};
const HAS_BIAS: bool = {{ has_bias }};

struct Params {
    // The input image [batch, height, width, c_in] and output image [.., out_h, out_w, ..].
    batch: u32,
    height: u32,
    width: u32,
    c_in: u32,
    out_h: u32,
    out_w: u32,
    // N: output channels (columns).
    n: u32,
    kernel_w: u32,
    stride: u32,
    pad: u32,
    // M = batch * out_h * out_w and K = kernel_h * kernel_w * c_in.
    m: u32,
    k: u32,
}

@group(0) @binding(0) var<storage, read_write> x: array<T>;
@group(0) @binding(1) var<storage, read_write> w: array<T>;
{{ bindings }}

var<workgroup> a_tile: array<vec4<f32>, {{ a_vec4s }}>;
var<workgroup> b_tile: array<vec4<f32>, {{ b_vec4s }}>;

@compute @workgroup_size(256)
fn main(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wg: vec3<u32>) {
    let tx = lid % 16u;
    let ty = lid / 16u;
    let m0 = wg.y * BM;
    let n0 = wg.x * BN;

    // The A rows this invocation copies keep their place through the K loop: where each
    // row's patch starts in the input (or that it lies past M) is worked out once.
    // Copy e = lid + 256 r of BM * BK values: k slice e % BK, row e / BK.
    let a_per = (BM * BK) / 256u;
    let a_k = lid % BK;
    var a_row_y: array<i32, {{ a_per }}>;
    var a_row_x: array<i32, {{ a_per }}>;
    var a_row_base: array<u32, {{ a_per }}>;
    var a_row_ok: array<bool, {{ a_per }}>;
    let positions = p.out_h * p.out_w;
    for (var r = 0u; r < a_per; r++) {
        let m = m0 + (lid + 256u * r) / BK;
        a_row_ok[r] = m < p.m;
        let b = m / positions;
        let pos = m % positions;
        a_row_y[r] = i32((pos / p.out_w) * p.stride) - i32(p.pad);
        a_row_x[r] = i32((pos % p.out_w) * p.stride) - i32(p.pad);
        a_row_base[r] = b * p.height * p.width;
    }

    // Output rows 64 g + 4 ty + i, columns 64 h + 4 tx .. + 3: acc[(4 g + i) * TN / 4 + h].
    var acc: array<vec4<f32>, {{ acc_vec4s }}>;
    for (var i = 0u; i < TM * TN / 4u; i++) {
        acc[i] = vec4<f32>(0.0);
    }

    let b_per = (BN * BK) / 256u;
    for (var k0 = 0u; k0 < p.k; k0 += BK) {
        // A's slice: this invocation's k is one tap and channel of every row it copies.
        let k = k0 + a_k;
        let tap = k / p.c_in;
        let ch = k % p.c_in;
        let ky = i32(tap / p.kernel_w);
        let kx = i32(tap % p.kernel_w);
        for (var r = 0u; r < a_per; r++) {
            let iy = a_row_y[r] + ky;
            let ix = a_row_x[r] + kx;
            var v = 0.0;
            if (a_row_ok[r] && k < p.k && iy >= 0 && iy < i32(p.height) && ix >= 0
                && ix < i32(p.width)) {
                let at = (a_row_base[r] + u32(iy) * p.width + u32(ix)) * p.c_in + ch;
                v = f32(x[at]);
            }
            let row = (lid + 256u * r) / BK;
            a_tile[a_k * AS + row / 4u][row % 4u] = v;
        }
        // B's slice, read along its contiguous axis.
        for (var r = 0u; r < b_per; r++) {
            let e = lid + 256u * r;
            var kk: u32;
            var nn: u32;
            if (B_K_MAJOR) {
                nn = e % BN;
                kk = e / BN;
            } else {
                kk = e % BK;
                nn = e / BK;
            }
            let kg = k0 + kk;
            let ng = n0 + nn;
            var v = 0.0;
            if (kg < p.k && ng < p.n) {
                if (B_K_MAJOR) {
                    v = f32(w[kg * p.n + ng]);
                } else {
                    v = f32(w[ng * p.k + kg]);
                }
            }
            b_tile[kk * BS + nn / 4u][nn % 4u] = v;
        }
        workgroupBarrier();
        for (var kk = 0u; kk < BK; kk++) {
            var a: array<vec4<f32>, {{ tm4 }}>;
            var bv: array<vec4<f32>, {{ tn4 }}>;
            for (var g = 0u; g < TM / 4u; g++) {
                a[g] = a_tile[kk * AS + 16u * g + ty];
            }
            for (var h = 0u; h < TN / 4u; h++) {
                bv[h] = b_tile[kk * BS + 16u * h + tx];
            }
            for (var g = 0u; g < TM / 4u; g++) {
                for (var i = 0u; i < 4u; i++) {
                    let ai = vec4<f32>(a[g][i]);
                    for (var h = 0u; h < TN / 4u; h++) {
                        let at = (4u * g + i) * (TN / 4u) + h;
                        acc[at] = fma(ai, bv[h], acc[at]);
                    }
                }
            }
        }
        workgroupBarrier();
    }

    for (var g = 0u; g < TM / 4u; g++) {
        for (var i = 0u; i < 4u; i++) {
            let m = m0 + 64u * g + 4u * ty + i;
            if (m >= p.m) {
                continue;
            }
            for (var h = 0u; h < TN / 4u; h++) {
                let values = acc[(4u * g + i) * (TN / 4u) + h];
                for (var c = 0u; c < 4u; c++) {
                    let n = n0 + 64u * h + 4u * tx + c;
                    if (n < p.n) {
                        var v = values[c];
                        if (HAS_BIAS) {
                            v += f32(bias_of(n));
                        }
                        out[m * p.n + n] = T(v);
                    }
                }
            }
        }
    }
}
