// What the norm_*.wgsl kernels share; src/kernels/mod.rs puts it in front of each of them.
//
// x is a [B, C, H, W] tensor stored either as such or channels-last, as [B, H, W, C] (what
// burn's GPU convolutions read and write without copies); y is stored channels-last. A group
// is `channels` consecutive channels at all `positions` (H * W): `channels * positions` values
// (a layer norm's row is a group of one channel at one position). Sums are taken in f32
// whatever T is.
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
    // 1 where x is stored channels-last.
    x_channels_last: u32,
    // Where a shift is bound (see shift_at): its row length, and its first column.
    shift_stride: u32,
    shift_first: u32,
}

// What is added to value i of group `group` before normalising: a per-sample, per-channel
// shift (a ResNet block's time embedding), or nothing. src/kernels/norm.rs writes shift_of, and
// binds the shift, only where there is one.
fn shift_at(group: u32, i: u32) -> f32 {
    return shift_of(group / p.groups, (group % p.groups) * p.channels + i / p.positions);
}

// Where value i of group `group` lies, i counting channel by channel (i / positions is the
// channel within the group, i % positions the position), in a tensor stored channels-last or
// not.
fn value_at(group: u32, i: u32, channels_last: u32) -> u32 {
    let all_channels = p.groups * p.channels;
    let b = group / p.groups;
    let c = (group % p.groups) * p.channels + i / p.positions;
    let pos = i % p.positions;
    if (channels_last != 0u) {
        return (b * p.positions + pos) * all_channels + c;
    }
    return (b * all_channels + c) * p.positions + pos;
}

// Value j of a group counted in x's own memory order, for norm_wide.wgsl's invocations that
// share a group: position-major where x is channels-last, channel-major where it is
// [B, C, H, W], so that neighbouring invocations, taking neighbouring j, read neighbouring
// memory. Its channel within the group, its position, and where channel c at a position lies
// in x. (norm_partials.wgsl's chunks read this way, one chunk per invocation interleaved
// with the next, measured slower on the H200 than its contiguous chunks: 0.60 against
// 0.44 ms for SD 1.5's group norm at 64x64 in f32.)
fn channel_of(j: u32) -> u32 {
    if (p.x_channels_last != 0u) {
        return j % p.channels;
    }
    return j / p.positions;
}

fn position_of(j: u32) -> u32 {
    if (p.x_channels_last != 0u) {
        return j / p.channels;
    }
    return j % p.positions;
}

fn input_at(b: u32, c: u32, pos: u32) -> u32 {
    let all_channels = p.groups * p.channels;
    if (p.x_channels_last != 0u) {
        return (b * p.positions + pos) * all_channels + c;
    }
    return (b * all_channels + c) * p.positions + pos;
}
