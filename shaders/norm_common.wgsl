// What the norm_*.wgsl kernels share; src/kernels.rs puts it in front of each of them.
//
// x is a contiguous [B, C, H, W] tensor; a group is `channels * positions` consecutive values
// (a layer norm's row is a group of one channel). Sums are taken in f32 whatever T is.
//
// Every binding of these kernels is read_write, even those only read: burn places many tensors
// in one wgpu buffer, and a dispatch may not bind one buffer both read-only and writable.

{{ enable }}
alias T = {{ elem }};

struct Params {
    channels: u32,
    positions: u32,
    groups: u32,
    silu: u32,
    eps: f32,
    // Chunks per group in the chunked path: ceil(channels * positions / CHUNK).
    chunks: u32,
    // Groups in the whole tensor: batch * groups.
    total_groups: u32,
}
