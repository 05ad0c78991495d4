// What the two attention kernels (attention.wgsl, attention_tiled.wgsl) share;
// src/kernels/attention.rs puts it in front of each: the storage type, the head size, the
// parameters and the bindings.

{{ enable }}
alias T = {{ elem }};
const HEAD_DIM: u32 = {{ head_dim }}u;

struct Params {
    heads: u32,
    queries: u32,
    keys: u32,
    scale: f32,
    // Row strides and column offsets, in elements, of q, and of k and v.
    q_stride: u32,
    kv_stride: u32,
    q_col: u32,
    k_col: u32,
    v_col: u32,
    // An additive score bias, where one is bound (see bias_at): it covers query rows
    // 0..bias_rows and keys bias_first..bias_first + bias_cols.
    bias_rows: u32,
    bias_first: u32,
    bias_cols: u32,
}

// Every binding is read_write, even those only read: burn places many tensors in one wgpu
// buffer, and a dispatch may not bind one buffer both read-only and writable. Nor may it bind
// overlapping ranges writable twice (WebGPU refuses it), so q, k and v are bound once per
// tensor they come from: src0 (q), then src1 and src2 where k and v have tensors of their
// own. src/kernels/attention.rs writes the bindings and names the arrays q, k and v read from.
{{ sources }}
@group(0) @binding({{ out_binding }}) var<storage, read_write> out: array<T>;
@group(0) @binding({{ params_binding }}) var<storage, read_write> p: Params;

// bias_at(b, row, key): what is added to the score of query `row` for `key` in sample `b`
// before the softmax, the same for every head (an intervention's per-token, per-cell bias,
// src/models/attention_control.rs): a [B, bias_rows, bias_cols] tensor where one is bound,
// else 0. src/kernels/attention.rs writes it.
{{ bias }}
