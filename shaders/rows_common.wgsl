// What the row-wise kernels (geglu.wgsl, bias_residual.wgsl) share; src/kernels/mod.rs puts it
// in front of each. Each invocation writes one value of an output of `count` values in rows of
// `width`.
//
// Every binding of these kernels is read_write, even those only read: burn places many tensors
// in one wgpu buffer, and a dispatch may not bind one buffer both read-only and writable.

{{ enable }}
alias T = {{ elem }};

struct Params {
    // The output's row length.
    width: u32,
    // The output's element count.
    count: u32,
}
