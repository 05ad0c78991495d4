// Classifier-free guidance and a sampler step in one pass. burn runs them as about ten
// element-wise kernels: the guidance combine (subtract, scale, add), then the step's clean
// estimate, noise estimate and result. The step is affine in the sample and the guided
// prediction, up to a clamp of the clean estimate (`AffineStep` in src/schedulers), so it
// comes here as six coefficients:
//   m     = uncond + scale * (cond - uncond)     (or the one prediction, unguided)
//   x0    = clamp(x0_sample * s + x0_model * m)  (no clamp where clip < 0)
//   eps   = eps_sample * s + eps_model * m
//   prev  = prev_x0 * x0 + prev_eps * eps
//
// model holds the UNet's output, [uncond; cond] when guided; sample is the step's input
// latents. Each is a [B, C, H, W] tensor stored as such or channels-last (burn's GPU
// convolutions write channels-last); prev and clean are written as model is stored, so one
// index serves the three. Arithmetic in f32 whatever T is.
//
// Every binding is read_write, even those only read: burn places many tensors in one wgpu
// buffer, and a dispatch may not bind one buffer both read-only and writable.

{{ enable }}
alias T = {{ elem }};

struct Params {
    // Values in one prediction: B * C * H * W.
    count: u32,
    channels: u32,
    positions: u32,
    // 1 where stored channels-last.
    model_channels_last: u32,
    sample_channels_last: u32,
    // 1 where model holds [uncond; cond], each of `count` values.
    guided: u32,
    scale: f32,
    x0_sample: f32,
    x0_model: f32,
    clip: f32,
    eps_sample: f32,
    eps_model: f32,
    prev_x0: f32,
    prev_eps: f32,
}

@group(0) @binding(0) var<storage, read_write> model: array<T>;
@group(0) @binding(1) var<storage, read_write> sample: array<T>;
@group(0) @binding(2) var<storage, read_write> prev: array<T>;
@group(0) @binding(3) var<storage, read_write> clean: array<T>;
@group(0) @binding(4) var<storage, read_write> p: Params;

// Where the sample value at model's index i lies, when the two are stored differently.
fn sample_index(i: u32) -> u32 {
    if (p.model_channels_last == p.sample_channels_last) {
        return i;
    }
    let per_sample = p.channels * p.positions;
    let b = i / per_sample;
    let r = i % per_sample;
    if (p.model_channels_last != 0u) {
        // r = position * C + channel, read from [B, C, H, W].
        return b * per_sample + (r % p.channels) * p.positions + r / p.channels;
    }
    // r = channel * positions + position, read from channels-last.
    return b * per_sample + (r % p.positions) * p.channels + r / p.positions;
}

// One value per invocation; the workgroups cover a 2-D grid, as one axis may hold at most
// 65535 of them.
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = id.y * groups.x * 256u + id.x;
    if (i >= p.count) {
        return;
    }
    var m = f32(model[i]);
    if (p.guided != 0u) {
        m = m + p.scale * (f32(model[p.count + i]) - m);
    }
    let s = f32(sample[sample_index(i)]);
    var x0 = p.x0_sample * s + p.x0_model * m;
    if (p.clip >= 0.0) {
        x0 = clamp(x0, -p.clip, p.clip);
    }
    let eps = p.eps_sample * s + p.eps_model * m;
    prev[i] = T(p.prev_x0 * x0 + p.prev_eps * eps);
    clean[i] = T(x0);
}
