#![cfg(not(target_arch = "wasm32"))]
//! The fused WGSL kernels (shaders/, src/kernels/) against the same operations composed from
//! burn's own on the CPU backend, on shapes that reach their edges: groups longer than a
//! workgroup, query counts that are no multiple of a workgroup, cross-attention, heads of
//! several sizes, inputs stored channels-last, and f16 storage. Needs the wgpu backend: set
//! LINA_TEST_GPU=1 (CI does, on lavapipe).

mod common;

use burn::tensor::activation::{gelu, silu, softmax};
use burn::tensor::{Device, FloatDType, Tensor, TensorData};
use common::{gpu_device, max_abs_diff, values};
use lina_runtime::StableDiffusion;
use lina_runtime::device::{GpuRequest, Precision};
use lina_runtime::kernels::{AttentionKernel, CoopBlock, Kernels, MatmulKernel};
use lina_runtime::schedulers::AffineStep;
use lina_runtime::source::DirSource;
use lina_runtime::views::{ChannelShift, Columns};

/// The same random values on the CPU and on `gpu` (in the GPU's float type).
fn pair<const D: usize>(shape: [usize; D], seed: u64, gpu: &Device) -> (Tensor<D>, Tensor<D>) {
    let cpu = lina_runtime::device::cpu();
    let mut rng = lina_runtime::rng::Rng::new(seed);
    let n: usize = shape.iter().product();
    let data: Vec<f32> = rng.normals(n).iter().map(|v| v * 2.0 + 0.5).collect();
    let on_cpu = Tensor::<D>::from_data(TensorData::new(data.clone(), shape), &cpu);
    let on_gpu = Tensor::<D>::from_data(TensorData::new(data, shape), gpu);
    (on_cpu, on_gpu)
}

fn read<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    values(t.cast(FloatDType::F32))
}

fn reference_group_norm(
    x: Tensor<4>,
    gamma: Tensor<1>,
    beta: Tensor<1>,
    groups: usize,
) -> Tensor<4> {
    let [b, c, h, w] = x.dims();
    let g = x.reshape([b, groups, (c / groups) * h * w]);
    let mean = g.clone().mean_dim(2);
    let centred = g - mean;
    let var = centred.clone().powi_scalar(2).mean_dim(2);
    let normed = (centred / var.add_scalar(1e-5).sqrt()).reshape([b, c, h, w]);
    normed * gamma.reshape([1, c, 1, 1]) + beta.reshape([1, c, 1, 1])
}

fn reference_attention(q: Tensor<3>, k: Tensor<3>, v: Tensor<3>, heads: usize) -> Tensor<3> {
    let [b, lq, inner] = q.dims();
    let d = inner / heads;
    let split = |x: Tensor<3>| {
        let l = x.dims()[1];
        x.reshape([b, l, heads, d]).swap_dims(1, 2)
    };
    let scores = split(q).matmul(split(k).transpose()) / (d as f64).sqrt();
    softmax(scores, 3)
        .matmul(split(v))
        .swap_dims(1, 2)
        .reshape([b, lq, inner])
}

/// `reference_attention` with `bias` [B, R, C] added to the scores of query rows 0..R for
/// keys first..first + C, in every head.
fn reference_biased_attention(
    q: Tensor<3>,
    k: Tensor<3>,
    v: Tensor<3>,
    heads: usize,
    bias: Tensor<3>,
    first: usize,
) -> Tensor<3> {
    let [b, lq, inner] = q.dims();
    let lk = k.dims()[1];
    let [_, rows, cols] = bias.dims();
    let d = inner / heads;
    let split = |x: Tensor<3>| {
        let [b, l, _] = x.dims();
        x.reshape([b, l, heads, d]).swap_dims(1, 2)
    };
    let full = Tensor::<3>::zeros([b, lq, lk], &bias.device())
        .slice_assign([0..b, 0..rows, first..first + cols], bias);
    let scores =
        split(q).matmul(split(k).transpose()) / (d as f64).sqrt() + full.unsqueeze_dim::<4>(1);
    softmax(scores, 3)
        .matmul(split(v))
        .swap_dims(1, 2)
        .reshape([b, lq, inner])
}

fn check_all(gpu: &Device, tolerance: f32, label: &str) {
    // Every norm both ways for short groups: a workgroup per group (GPUs) and an invocation
    // per group (software adapters).
    for wide in [false, true] {
        check_norms(gpu, tolerance, &format!("{label}, wide {wide}"), wide);
    }
    check_attention(gpu, tolerance, label);
    check_rows(gpu, tolerance, label);
}

fn check_norms(gpu: &Device, tolerance: f32, label: &str, wide: bool) {
    use lina_runtime::kernels::{group_norm_in, group_norm_silu_shifted_in};
    // Group norm, with and without the SiLU: groups of 4032 values (one dispatch) and of 9200
    // values (chunked: 35 whole chunks and a short one).
    for (shape, groups) in [([2, 256, 9, 7], 4), ([2, 64, 25, 23], 4)] {
        let (x, gx) = pair(shape, 1, gpu);
        let c = shape[1];
        let (gamma, g_gamma) = pair([c], 2, gpu);
        let (beta, g_beta) = pair([c], 3, gpu);
        let want = reference_group_norm(x, gamma, beta, groups);
        for then_silu in [false, true] {
            let got = group_norm_in(gx.clone(), &g_gamma, &g_beta, groups, 1e-5, then_silu, wide);
            let want = if then_silu {
                silu(want.clone())
            } else {
                want.clone()
            };
            let diff = max_abs_diff(&read(got), &values(want));
            assert!(
                diff < tolerance * 8.0,
                "{label}: group norm of {shape:?} (silu {then_silu}) off by {diff}"
            );
        }
    }

    // The same reading an input stored channels-last, as burn's GPU convolutions leave it.
    let (x, gx) = pair([2, 25, 23, 64], 7, gpu);
    let (x, gx) = (x.permute([0, 3, 1, 2]), gx.permute([0, 3, 1, 2]));
    let (gamma, g_gamma) = pair([64], 8, gpu);
    let (beta, g_beta) = pair([64], 9, gpu);
    for groups in [4, 32] {
        let want = reference_group_norm(x.clone(), gamma.clone(), beta.clone(), groups);
        let got = group_norm_in(gx.clone(), &g_gamma, &g_beta, groups, 1e-5, false, wide);
        let diff = max_abs_diff(&read(got), &values(want));
        assert!(
            diff < tolerance * 8.0,
            "{label}: group norm of a channels-last input in {groups} groups off by {diff}"
        );
    }

    // With a per-sample, per-channel shift read from columns 5.. of a wider table (a ResNet
    // block's time projection), on both paths (groups of 1150 and of 9200 values).
    let (shift_table, g_shift_table) = pair([2, 80], 10, gpu);
    for groups in [32, 4] {
        let shift = shift_table.clone().narrow(1, 5, 64).reshape([2, 64, 1, 1]);
        let want = silu(reference_group_norm(
            x.clone() + shift,
            gamma.clone(),
            beta.clone(),
            groups,
        ));
        let got = group_norm_silu_shifted_in(
            gx.clone(),
            &g_gamma,
            &g_beta,
            &ChannelShift {
                table: &g_shift_table,
                first: 5,
            },
            groups,
            1e-5,
            wide,
        );
        let diff = max_abs_diff(&read(got), &values(want));
        assert!(
            diff < tolerance * 8.0,
            "{label}: shifted group norm in {groups} groups off by {diff}"
        );
    }

    // Layer norm, as nn::LayerNorm runs it: rows of 320 as groups of one channel.
    let (x, gx) = pair([2, 77, 320], 4, gpu);
    let (gamma, g_gamma) = pair([320], 5, gpu);
    let (beta, g_beta) = pair([320], 6, gpu);
    let want = burn::tensor::module::layer_norm(x, gamma, Some(beta), 1e-5);
    let got = group_norm_in(
        gx.reshape([154, 320, 1, 1]),
        &g_gamma,
        &g_beta,
        1,
        1e-5,
        false,
        wide,
    );
    let diff = max_abs_diff(&read(got), &values(want));
    assert!(diff < tolerance * 8.0, "{label}: layer norm off by {diff}");
}

/// The attention kernels to check on `gpu`: the untiled and tiled ones everywhere, and the
/// lanes kernel where the adapter has subgroups (lavapipe, CI's adapter, must have them).
fn kernels_to_check(gpu: &Device) -> Vec<AttentionKernel> {
    let mut kernels = vec![
        AttentionKernel::Untiled,
        AttentionKernel::Tiled { keys: 16 },
    ];
    let limits = lina_runtime::device::limits(gpu);
    match limits.subgroup_lanes {
        Some(lanes) => kernels.push(AttentionKernel::Lanes { lanes }),
        None => assert!(
            !limits.adapter.to_lowercase().contains("llvmpipe"),
            "lavapipe without subgroup lanes ({})",
            limits.adapter
        ),
    }
    kernels
}

fn check_attention(gpu: &Device, tolerance: f32, label: &str) {
    check_attention_kernels(gpu, tolerance, label, &|_| kernels_to_check(gpu));
    check_packed_attention(gpu, tolerance, label);
}

/// The attention `kernels` give for heads of each size against burn's operations on the
/// CPU, and what the runtime chooses over 1024 keys.
fn check_attention_kernels(
    gpu: &Device,
    tolerance: f32,
    label: &str,
    kernels: &dyn Fn(usize) -> Vec<AttentionKernel>,
) {
    // Attention: self-attention over 100 positions (no multiple of the 64-row workgroup),
    // and cross-attention onto 77 tokens and onto one, with heads of 8, 40 and 64 values; by
    // each kernel: without workgroup memory, tiled (blocks of 16 keys: whole ones, a short
    // last one, and one block holding a single key), and by subgroup lanes where the adapter
    // has them (blocks of 8 keys on lavapipe, likewise cut short).
    for (lq, lk, heads, d) in [
        (100, 100, 2, 8),
        (100, 77, 3, 40),
        (65, 77, 2, 64),
        (65, 1, 2, 40),
    ] {
        let (q, gq) = pair([2, lq, heads * d], 10, gpu);
        let (k, gk) = pair([2, lk, heads * d], 11, gpu);
        let (v, gv) = pair([2, lk, heads * d], 12, gpu);
        let want = values(reference_attention(q, k, v, heads));
        for kernel in kernels(d) {
            let (gq, gk, gv) = (gq.clone(), gk.clone(), gv.clone());
            let got = lina_runtime::kernels::attention_with(
                gq.into(),
                gk.into(),
                gv.into(),
                heads,
                None,
                kernel,
            );
            let diff = max_abs_diff(&read(got), &want);
            assert!(
                diff < tolerance * 4.0,
                "{label}: attention ({lq} queries, {lk} keys, {heads} heads of {d}, {kernel:?}) off by {diff}"
            );
        }
    }

    // Past kernels::SOFTWARE_ATTENTION_MAX_KEYS (lavapipe computes the untiled kernel wrongly
    // at 768 keys and more): what the runtime runs at 1024 keys (the lanes kernel on a
    // software adapter with subgroups, burn's operations on one without, the tiled kernel on
    // a GPU), and the tiled and lanes kernels, which are right there.
    let (heads, d) = (2, 40);
    let (q, gq) = pair([1, 1024, heads * d], 25, gpu);
    let (k, gk) = pair([1, 1024, heads * d], 26, gpu);
    let (v, gv) = pair([1, 1024, heads * d], 27, gpu);
    let want = values(reference_attention(q, k, v, heads));
    let chosen = lina_runtime::nn::multi_head_attention(
        gq.clone().into(),
        gk.clone().into(),
        gv.clone().into(),
        heads,
        false,
        Kernels::Fused,
    );
    let mut ways = vec![("as the runtime chooses".to_string(), chosen)];
    for kernel in kernels(d) {
        if kernel != AttentionKernel::Untiled {
            let (gq, gk, gv) = (gq.clone(), gk.clone(), gv.clone());
            let got = lina_runtime::kernels::attention_with(
                gq.into(),
                gk.into(),
                gv.into(),
                heads,
                None,
                kernel,
            );
            ways.push((format!("{kernel:?}"), got));
        }
    }
    for (how, got) in ways {
        let diff = max_abs_diff(&read(got), &want);
        assert!(
            diff < tolerance * 4.0,
            "{label}: attention over 1024 keys, {how}, off by {diff}"
        );
    }

    // With a score bias, by both kernels: over every query row and text key (a UNet's
    // controlled cross-attention), and over the first 70 rows' scores for the last 20 keys
    // (an MMDiT's image rows and text keys in its joint attention).
    for (lq, lk, rows, first, cols) in [(65, 77, 65, 0, 77), (90, 90, 70, 70, 20)] {
        let (heads, d) = (2, 40);
        let (q, gq) = pair([2, lq, heads * d], 16, gpu);
        let (k, gk) = pair([2, lk, heads * d], 17, gpu);
        let (v, gv) = pair([2, lk, heads * d], 18, gpu);
        let (bias, g_bias) = pair([2, rows, cols], 19, gpu);
        let (bias, g_bias) = (bias.mul_scalar(3.0), g_bias.mul_scalar(3.0));
        let want = values(reference_biased_attention(q, k, v, heads, bias, first));
        for kernel in kernels(d) {
            let score_bias = lina_runtime::kernels::ScoreBias {
                values: &g_bias,
                first_key: first,
            };
            let got = lina_runtime::kernels::attention_with(
                gq.clone().into(),
                gk.clone().into(),
                gv.clone().into(),
                heads,
                Some(score_bias),
                kernel,
            );
            let diff = max_abs_diff(&read(got), &want);
            assert!(
                diff < tolerance * 4.0,
                "{label}: attention biased over {rows} rows and keys {first}.. ({kernel:?}) off by {diff}"
            );
        }
    }

    // Columns at offsets and row strides that are no multiple of 4 (each kernel reads them
    // number by number; the lanes kernel reads vec4s only where all are multiples of 4).
    let (heads, d) = (2, 40);
    let (rows, g_rows) = pair([2, 70, 3 * heads * d + 3], 28, gpu);
    let [q, k, v] = [1, 2 + heads * d, 3 + 2 * heads * d].map(|first| {
        let q = rows.clone().narrow(2, first, heads * d);
        let g = Columns {
            rows: g_rows.clone(),
            first,
            width: heads * d,
        };
        (q, g)
    });
    let want = values(reference_attention(q.0, k.0, v.0, heads));
    for kernel in kernels(d) {
        let got = lina_runtime::kernels::attention_with(
            q.1.clone(),
            k.1.clone(),
            v.1.clone(),
            heads,
            None,
            kernel,
        );
        let diff = max_abs_diff(&read(got), &want);
        assert!(
            diff < tolerance * 4.0,
            "{label}: attention on columns at odd offsets ({kernel:?}) off by {diff}"
        );
    }
}

/// Attention read in place from fused projections' rows, as the runtime chooses its kernel.
fn check_packed_attention(gpu: &Device, tolerance: f32, label: &str) {
    // The same read in place from fused projections' rows: [q | k | v] for self-attention,
    // q and [k | v] for cross-attention.
    let (heads, d) = (3, 40);
    let (qkv, g_qkv) = pair([2, 100, 3 * heads * d], 13, gpu);
    let [q, k, v] = [0, 1, 2].map(|i| qkv.clone().narrow(2, i * heads * d, heads * d));
    let [gq, gk, gv] = Columns::split(g_qkv);
    let got = lina_runtime::kernels::attention(gq, gk, gv, heads, None, Kernels::Fused);
    let diff = max_abs_diff(&read(got), &values(reference_attention(q, k, v, heads)));
    assert!(
        diff < tolerance * 4.0,
        "{label}: packed self-attention off by {diff}"
    );

    let (q, gq) = pair([2, 65, heads * d], 14, gpu);
    let (kv, g_kv) = pair([2, 77, 2 * heads * d], 15, gpu);
    let [k, v] = [0, 1].map(|i| kv.clone().narrow(2, i * heads * d, heads * d));
    let [gk, gv] = Columns::split(g_kv);
    let got = lina_runtime::kernels::attention(gq.into(), gk, gv, heads, None, Kernels::Fused);
    let diff = max_abs_diff(&read(got), &values(reference_attention(q, k, v, heads)));
    assert!(
        diff < tolerance * 4.0,
        "{label}: packed cross-attention off by {diff}"
    );
}

/// GEGLU, and a linear layer's bias with the residual around it.
fn check_rows(gpu: &Device, tolerance: f32, label: &str) {
    // GEGLU over 70,000 outputs in rows of 1000, after its projection's bias: workgroups
    // straddle rows.
    let (x, gx) = pair([2, 35, 2 * 1000], 20, gpu);
    let (bias, g_bias) = pair([2 * 1000], 21, gpu);
    let mut halves = (x + bias.unsqueeze::<3>()).chunk(2, 2);
    let gate = halves.pop().unwrap();
    let value = halves.pop().unwrap();
    let want = value * gelu(gate);
    let diff = max_abs_diff(
        &read(lina_runtime::kernels::geglu(gx, &g_bias)),
        &values(want),
    );
    assert!(diff < tolerance * 8.0, "{label}: geglu off by {diff}");

    // A bias and a residual over 2 x 77 rows of 320.
    let (x, gx) = pair([2, 77, 320], 22, gpu);
    let (bias, g_bias) = pair([320], 23, gpu);
    let (residual, g_residual) = pair([2, 77, 320], 24, gpu);
    let want = x + bias.unsqueeze::<3>() + residual;
    let got = lina_runtime::kernels::bias_residual(gx, &g_bias, g_residual);
    let diff = max_abs_diff(&read(got), &values(want));
    assert!(
        diff < tolerance * 8.0,
        "{label}: bias and residual off by {diff}"
    );

    check_im2col(gpu, tolerance, label);
    check_matmul_kernels(gpu, tolerance, label, &lanes_kernels(gpu, label), false);
    check_guided_step(gpu, tolerance, label);
}

/// A convolution to check, given as (batch, c_in, height, width, c_out, kernel, stride,
/// bias), with "same" padding.
type Conv = (usize, usize, usize, usize, usize, usize, usize, bool);

/// What a convolution check runs on: burn's output on the CPU, and the input and filters on
/// `gpu` stored channels-last (read in place) and stored [B, C, H, W] (copied first).
struct ConvCase {
    want: Vec<f32>,
    layouts: [(Tensor<4>, Tensor<4>); 2],
    bias: Tensor<1>,
}

fn conv_case(conv: Conv, seed: u64, gpu: &Device) -> ConvCase {
    use burn::tensor::module::conv2d;
    use burn::tensor::ops::ConvOptions;

    let (b, c_in, h, w, c_out, kernel, stride, with_bias) = conv;
    let (x, gx) = pair([b, h, w, c_in], seed, gpu);
    let (wt, gw) = pair([c_out, kernel, kernel, c_in], seed + 1, gpu);
    let (bias, g_bias) = pair([c_out], seed + 2, gpu);
    let to_nchw = |t: Tensor<4>| t.permute([0, 3, 1, 2]);
    let pad = kernel / 2;
    let want = values(conv2d(
        to_nchw(x),
        to_nchw(wt),
        with_bias.then_some(bias),
        ConvOptions::new([stride; 2], [pad; 2], [1, 1], 1),
    ));
    let layouts = [
        (to_nchw(gx.clone()), to_nchw(gw.clone())),
        (
            Tensor::from_data(to_nchw(gx).into_data(), gpu),
            Tensor::from_data(to_nchw(gw).into_data(), gpu),
        ),
    ];
    ConvCase {
        want,
        layouts,
        bias: g_bias,
    }
}

/// The largest difference from `want`, over its largest value: sums over hundreds of
/// products of values near 2 grow with their length.
fn relative(got: Vec<f32>, want: &[f32]) -> f32 {
    let peak = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    max_abs_diff(&got, want) / peak
}

/// Convolutions as gathered patches and burn's matmul (shaders/im2col.wgsl) against burn's
/// convolution on the CPU, on shapes off the usual: channels and positions that are no
/// multiple of a tile, 4 input channels (a UNet's first convolution), strided and 1x1
/// kernels, a 1x1 image, inputs and filters stored channels-last or not, whole and in blocks
/// of 7 output positions (as under a small binding limit), the sum over K whole and cut.
fn check_im2col(gpu: &Device, tolerance: f32, label: &str) {
    use lina_runtime::kernels::GemmCuts;

    let convs: [Conv; 5] = [
        (2, 37, 9, 11, 45, 3, 1, true),
        (1, 4, 8, 8, 70, 3, 1, true),
        (1, 16, 9, 8, 20, 3, 2, true),
        (2, 40, 5, 7, 33, 1, 1, false),
        (2, 8, 1, 1, 9, 3, 1, true),
    ];
    for (i, &conv) in convs.iter().enumerate() {
        let (_, c_in, _, _, _, kernel, stride, with_bias) = conv;
        let case = conv_case(conv, 40 + 4 * i as u64, gpu);
        let row_bytes = (kernel * kernel * c_in * 4) as u64;
        for (gx, gw) in case.layouts {
            // Whole, in blocks, and with the sum over K cut in 3 or 4 parts (where they
            // divide K; else whole).
            for (max_bytes, k_splits) in [
                (u64::MAX, 1),
                (7 * row_bytes, 1),
                (u64::MAX, 3),
                (7 * row_bytes, 4),
            ] {
                let cuts = GemmCuts {
                    max_bytes: Some(max_bytes),
                    k_splits: Some(k_splits),
                };
                let got = lina_runtime::kernels::conv2d_im2col(
                    gx.clone(),
                    &gw,
                    with_bias.then_some(&case.bias),
                    stride,
                    kernel / 2,
                    cuts,
                );
                let diff = relative(read(got), &case.want);
                assert!(
                    diff < tolerance,
                    "{label}: gathered convolution {conv:?} with {cuts:?} off by {diff} (relative)"
                );
            }
        }
    }
}

/// The lanes matmul (shaders/matmul_lanes.wgsl) where `gpu` has subgroups of one size:
/// lavapipe (CI's adapter) has.
fn lanes_kernels(gpu: &Device, label: &str) -> Vec<MatmulKernel> {
    let limits = lina_runtime::device::limits(gpu);
    let Some(lanes) = limits.subgroup_lanes else {
        assert!(
            !limits.adapter.to_lowercase().contains("llvmpipe"),
            "{label}: lavapipe without subgroup lanes ({})",
            limits.adapter
        );
        eprintln!(
            "{label}: no subgroup lanes on {}: the lanes matmul is not run here",
            limits.adapter
        );
        return Vec::new();
    };
    vec![MatmulKernel::Lanes { lanes }]
}

/// The side of the cooperative matrices `gpu` multiplies in and its subgroups' size; none
/// where it has no matrices (CI's lavapipe, Mesa 22.3: then `what` is not run here), unless
/// LINA_TEST_COOP=1 asks for them.
fn coop_matrices(gpu: &Device, what: &str) -> Option<(u32, u32)> {
    let limits = lina_runtime::device::limits(gpu);
    let found = limits.coop_size.zip(limits.subgroup_lanes);
    if found.is_none() {
        assert!(
            std::env::var("LINA_TEST_COOP").as_deref() != Ok("1"),
            "LINA_TEST_COOP=1 but {} multiplies in no cooperative matrices",
            limits.adapter
        );
        eprintln!(
            "{} has no cooperative matrices: {what} is not run here \
             (scripts/lavapipe-coop.sh runs it on a lavapipe that has them)",
            limits.adapter
        );
    }
    found
}

/// The coop matmul (shaders/matmul_coop.wgsl) with each block of sums per workgroup that
/// fits `gpu`, an f16 device that multiplies in cooperative matrices; none where it does not.
fn coop_kernels(gpu: &Device) -> Vec<MatmulKernel> {
    let limits = lina_runtime::device::limits(gpu);
    let Some((size, lanes)) = coop_matrices(gpu, "the coop matmul") else {
        return Vec::new();
    };
    // The runtime's choice (2 x 2 matrices per subgroup on lavapipe, the sum whole, the
    // blocks' rows padded); each invocation's share of the next step prefetched into
    // registers, the sum cut in 3 (as the runtime cuts small products on GPUs, here into
    // parts that do not divide K, so that each part's first step is fetched from its own
    // offset); then 4 x 4 matrices per subgroup where they fit, the blocks' rows unpadded,
    // and steps of 4 matrices' worth of K. The first two run on every shape.
    let usual = CoopBlock::new(2);
    let blocks = [
        CoopBlock {
            prefetch: true,
            splits: 3,
            ..usual
        },
        CoopBlock::new(4),
        CoopBlock {
            padded: false,
            ..usual
        },
        CoopBlock { depth: 4, ..usual },
    ];
    let mut kernels = vec![MatmulKernel::Coop {
        size,
        lanes,
        block: None,
    }];
    for block in blocks {
        if !lina_runtime::kernels::coop_fits(&limits, size, lanes, block) {
            assert!(
                block.tiles > 2,
                "the coop matmul's block {block:?} does not fit {}",
                limits.adapter
            );
            continue;
        }
        let block = Some(block);
        kernels.push(MatmulKernel::Coop { size, lanes, block });
    }
    kernels
}

/// Our matmul kernels against burn's operations on the CPU: products whose rows and columns
/// are no multiple of a workgroup's block, with the weight stored as [K, N] rows and as a
/// transposed [N, K], with and without a bias; and convolutions read in place, with padding,
/// a stride, 1x1 kernels, a 1x1 input, and inputs stored channels-last or not. The coop
/// matmul also on sizes no multiple of 4 and a depth no multiple of its steps (copied value
/// by value), and on sizes in eights (copied in runs of eight). With `few`, one product and
/// two convolutions: the coop matmul writes a kernel per shape, and lavapipe takes seconds
/// to compile each.
fn check_matmul_kernels(
    gpu: &Device,
    tolerance: f32,
    label: &str,
    kernels: &[MatmulKernel],
    few: bool,
) {
    for &kernel in kernels {
        let coop = matches!(kernel, MatmulKernel::Coop { .. });
        // (rows, depth, cols): rows past a workgroup's and not a multiple; a column block cut
        // short.
        let mut products = vec![(37, 20, 12), (5, 8, 44)];
        products.push(if coop { (131, 77, 70) } else { (70, 132, 36) });
        if coop {
            products.push((1, 3, 5));
        }
        if coop {
            products.push((70, 136, 48));
        }
        if few {
            products = vec![(131, 136, 72)];
        }
        for (i, &(m, k, n)) in products.iter().enumerate() {
            let seed = 80 + 4 * i as u64;
            let (a, ga) = pair([m, k], seed, gpu);
            let (w, gw) = pair([n, k], seed + 1, gpu);
            let (bias, g_bias) = pair([n], seed + 2, gpu);
            for with_bias in [false, true] {
                let mut want = a.clone().matmul(w.clone().transpose());
                if with_bias {
                    want = want + bias.clone().reshape([1, n]);
                }
                let want = values(want);
                // [K, N] as the transpose of [N, K] (a linear layer's weight), then as rows.
                let rows_layout = Tensor::<2>::from_data(gw.clone().transpose().into_data(), gpu);
                for (how, b) in [
                    ("transposed", gw.clone().transpose()),
                    ("rows", rows_layout),
                ] {
                    let got = lina_runtime::kernels::matmul(
                        ga.clone(),
                        &b,
                        with_bias.then_some(&g_bias),
                        kernel,
                    );
                    let diff = relative(read(got), &want);
                    assert!(
                        diff < tolerance,
                        "{label}: {kernel:?} {m}x{k}x{n}, b {how}, bias {with_bias}, off by {diff} (relative)"
                    );
                }
            }
        }
        let mut convs: Vec<Conv> = vec![
            (2, 36, 9, 11, 44, 3, 1, true),
            (1, 4, 8, 8, 72, 3, 1, true),
            (1, 16, 9, 8, 20, 3, 2, true),
            (2, 40, 5, 7, 36, 1, 1, false),
            (2, 8, 1, 1, 12, 3, 1, true),
        ];
        if coop {
            convs.extend([
                (2, 3, 10, 9, 5, 3, 1, true),
                (1, 37, 12, 12, 70, 3, 2, false),
            ]);
        }
        if coop {
            convs.push((2, 16, 9, 9, 24, 3, 1, true));
        }
        if few {
            convs.drain(..convs.len() - 2);
        }
        for (i, &conv) in convs.iter().enumerate() {
            let (_, _, _, _, _, taps, stride, with_bias) = conv;
            let case = conv_case(conv, 60 + 4 * i as u64, gpu);
            for (gx, gw) in case.layouts {
                let got = lina_runtime::kernels::conv2d_fused(
                    gx,
                    &gw,
                    with_bias.then_some(&case.bias),
                    stride,
                    taps / 2,
                    kernel,
                );
                let diff = relative(read(got), &case.want);
                assert!(
                    diff < tolerance,
                    "{label}: {kernel:?} convolution {conv:?} off by {diff} (relative)"
                );
            }
        }
    }
}

/// Guidance and an affine step in one kernel against `AffineStep::apply` on the guided
/// prediction, with the model's output and the sample each stored as [B, C, H, W] or
/// channels-last (as a GPU convolution leaves it), guided or not, with and without a clamp.
fn check_guided_step(gpu: &Device, tolerance: f32, label: &str) {
    let stored = |shape: [usize; 4], seed: u64, channels_last: bool| {
        let [b, c, h, w] = shape;
        if channels_last {
            let (x, gx) = pair([b, h, w, c], seed, gpu);
            (x.permute([0, 3, 1, 2]), gx.permute([0, 3, 1, 2]))
        } else {
            pair(shape, seed, gpu)
        }
    };
    let step = AffineStep {
        x0: [1.3, -0.7],
        clip: None,
        eps: [0.2, 0.9],
        prev: [0.8, 0.45],
    };
    for (guidance, clip, model_cl, sample_cl) in [
        (Some(7.5), None, false, false),
        (Some(7.5), Some(1.5), true, false),
        (Some(3.0), None, false, true),
        (None, Some(1.0), true, true),
    ] {
        let halves = if guidance.is_some() { 2 } else { 1 };
        let (model, g_model) = stored([2 * halves, 4, 9, 7], 30, model_cl);
        let (sample, g_sample) = stored([2, 4, 9, 7], 31, sample_cl);
        let step = AffineStep { clip, ..step };
        let guided = match guidance {
            Some(scale) => {
                let uncond = model.clone().narrow(0, 0, 2);
                let cond = model.narrow(0, 2, 2);
                uncond.clone() + (cond - uncond).mul_scalar(scale)
            }
            None => model,
        };
        let want = step.apply(guided, sample);
        let got = lina_runtime::kernels::guided_step(g_model, guidance, g_sample, &step);
        for (what, got, want) in [
            ("result", got.prev_sample, want.prev_sample),
            ("clean estimate", got.pred_original, want.pred_original),
        ] {
            let diff = max_abs_diff(&read(got), &values(want));
            assert!(
                diff < tolerance * 16.0,
                "{label}: guided step's {what} (guidance {guidance:?}, clip {clip:?}, model \
                 channels-last {model_cl}, sample channels-last {sample_cl}) off by {diff}"
            );
        }
    }
}

#[test]
fn fused_kernels_compute_what_burns_operations_compute() {
    let Some(gpu) = gpu_device() else { return };
    check_all(&gpu, 1e-4, "f32");

    // f16 storage keeps 11 bits: values near 10 are stored within 0.005.
    check_all(&f16_device(), 0.01, "f16");
}

/// A device that computes in f16: LINA_TEST_GPU=1 asks for every GPU capability, so no
/// shader-f16 is a failure.
fn f16_device() -> Device {
    lina_runtime::device::gpu_with(&GpuRequest {
        max_binding_bytes: None,
        precision: Precision::F16,
    })
    .unwrap_or_else(|e| panic!("LINA_TEST_GPU=1 but no f16 device: {e}"))
}

/// The coop matmul on an f16 device that multiplies in cooperative matrices (a GPU with
/// tensor cores; without one, `scripts/lavapipe-coop.sh` runs this on a lavapipe that has
/// them, as scripts/test.sh does), against burn's operations on the CPU and, through a tiny
/// UNet, against diffusers; and that the runtime picks it for f16 products there.
#[test]
fn the_coop_matmul_computes_what_burns_operations_compute() {
    let Some(_) = gpu_device() else { return };
    let f16 = f16_device();
    let kernels = coop_kernels(&f16);
    if kernels.is_empty() {
        return;
    }
    // The runtime's choice: on software adapters the lanes matmul wherever it serves (the
    // emulated matrices are slower there), the coop matmul for the rest; on GPUs the coop
    // matmul for every f16 product.
    let limits = lina_runtime::device::limits(&f16);
    let choice = |depth, cols| {
        lina_runtime::kernels::matmul_kernel(
            Kernels::Fused,
            &f16,
            burn::tensor::DType::F16,
            depth,
            cols,
        )
    };
    let (usual, odd) = (choice(320, 640), choice(27, 5));
    assert!(
        matches!(odd, Some(MatmulKernel::Coop { block: None, .. })),
        "a 27-deep product into 5 columns takes {odd:?}, not the coop matmul"
    );
    if limits.software {
        assert!(
            matches!(usual, Some(MatmulKernel::Lanes { .. })),
            "{usual:?}"
        );
    } else {
        assert_eq!(usual, odd, "f16 products on a GPU take one kernel");
    }
    let forced = lina_runtime::kernels::matmul_kernel(
        Kernels::Matrices,
        &f16,
        burn::tensor::DType::F16,
        320,
        640,
    );
    assert_eq!(
        forced, odd,
        "Kernels::Matrices takes the matrices for every f16 product"
    );
    let refused = lina_runtime::kernels::matmul_kernel(
        Kernels::NoMatrices,
        &f16,
        burn::tensor::DType::F16,
        27,
        5,
    );
    assert_eq!(
        refused, None,
        "Kernels::NoMatrices leaves a product the matrices would take to burn's matmul"
    );

    // Every shape through the runtime's choice; the other blocks on a few.
    check_matmul_kernels(&f16, 0.01, "f16", &kernels[..2], false);
    check_matmul_kernels(&f16, 0.01, "f16", &kernels[2..], true);

    // Through a whole UNet against diffusers, every product in the matrices, beside the same
    // f16 UNet without them: f16 storage alone keeps the two about as far from the f32
    // reference.
    let with_matrices = tiny_unet_off_by(&f16, Kernels::Matrices);
    let without = tiny_unet_off_by(&f16, Kernels::Fused);
    eprintln!(
        "sd1_tiny's f16 UNet off by {with_matrices:.1e} with the matrices, {without:.1e} without"
    );
    assert!(
        with_matrices < 0.01 && with_matrices < 2.0 * without + 1e-3,
        "sd1_tiny's f16 UNet off by {with_matrices} (relative) with the matrices, {without} without"
    );
}

/// The coop attention (shaders/attention_coop.wgsl) on an f16 device that multiplies in
/// cooperative matrices (a GPU with tensor cores, or `scripts/lavapipe-coop.sh`'s lavapipe,
/// as scripts/test.sh runs it), against burn's operations on the CPU, for every case of the
/// other attention kernels: by the block the runtime picks for each head size and by the
/// smallest (one subgroup's rows, one matrix of keys: many blocks, and queries and keys past
/// the last whole block); and that the runtime picks it where it should. Through a whole
/// UNet against diffusers, the coop matmul's test runs it too (`Kernels::Matrices`).
#[test]
fn the_coop_attention_computes_what_burns_operations_compute() {
    use burn::tensor::DType;
    use lina_runtime::kernels::{attention_kernel, coop_attention_fits};

    let Some(_) = gpu_device() else { return };
    let f16 = f16_device();
    let limits = lina_runtime::device::limits(&f16);
    let Some((size, lanes)) = coop_matrices(&f16, "the coop attention") else {
        return;
    };
    // f16 attention in the matrices on GPUs, and on software adapters only when asked (the
    // lanes kernel serves them); never with `Kernels::NoMatrices`, nor in f32.
    let choice = |kernels, dtype| attention_kernel(kernels, &f16, dtype, 40);
    let forced = choice(Kernels::Matrices, DType::F16);
    assert!(
        matches!(forced, AttentionKernel::Coop { .. }),
        "Kernels::Matrices takes {forced:?} for f16 heads of 40"
    );
    let usual = choice(Kernels::Fused, DType::F16);
    assert_eq!(
        usual == forced,
        !limits.software,
        "the runtime takes {usual:?} for f16 attention on {}",
        limits.adapter
    );
    for (kernels, dtype) in [
        (Kernels::NoMatrices, DType::F16),
        (Kernels::Matrices, DType::F32),
    ] {
        let other = choice(kernels, dtype);
        assert!(
            !matches!(other, AttentionKernel::Coop { .. }),
            "{kernels:?} in {dtype:?} takes {other:?}"
        );
    }
    let smallest = AttentionKernel::Coop {
        size,
        lanes,
        subgroups: 1,
        keys: size,
    };
    check_attention_kernels(&f16, 0.01, "f16, coop", &|d| {
        assert!(coop_attention_fits(&limits, smallest, d), "heads of {d}");
        vec![
            attention_kernel(Kernels::Matrices, &f16, DType::F16, d),
            smallest,
        ]
    });
}

/// How far sd1_tiny's UNet on `device` with `kernels` is from diffusers' output on the
/// fixture's inputs: the largest difference over the largest value.
fn tiny_unet_off_by(device: &Device, kernels: Kernels) -> f32 {
    use lina_runtime::models::unet::{UNet, UNetConfig};
    use lina_runtime::weights::Weights;

    let reference = common::Reference::open("sd1_tiny");
    let config = String::from_utf8(common::read_fixture("sd1_tiny/unet/config.json")).unwrap();
    let file = "sd1_tiny/unet/diffusion_pytorch_model.safetensors";
    let weights = Weights::from_bytes(file, &common::read_fixture(file), device)
        .unwrap()
        .with_kernels(kernels);
    let unet = UNet::load(UNetConfig::from_json(&config).unwrap(), &weights).unwrap();
    let sample: Tensor<4> = reference.tensor("unet_sample", device);
    let context: Tensor<3> = reference.tensor("unet_encoder_hidden_states", device);
    let t = reference.f32("unet_timestep").1[0] as f64;
    relative(
        read(unet.forward(sample, t, &context)),
        &reference.f32("unet_out").1,
    )
}

#[test]
fn the_kernel_choice_belongs_to_each_model() {
    let Some(gpu) = gpu_device() else { return };
    let dtype = burn::tensor::DType::F32;
    assert!(Kernels::Fused.fused_for(&gpu, dtype));
    assert!(!Kernels::Fused.fused_for(&lina_runtime::device::cpu(), dtype));
    assert!(!Kernels::Burn.fused_for(&gpu, dtype));
    // Two models side by side, one with each choice: each keeps its own.
    let fixture = common::fixture("sd1_tiny");
    let fused = StableDiffusion::load(&DirSource::new(&fixture), &gpu).unwrap();
    let burn_only =
        StableDiffusion::load_with(&DirSource::new(&fixture), &gpu, Kernels::Burn).unwrap();
    assert_eq!(fused.kernels(), Kernels::Fused);
    assert_eq!(burn_only.kernels(), Kernels::Burn);
}

/// Each fused kernel beside the same operation composed from burn's, on the GPU, at the
/// embedded default model's shapes: `cargo test --release --test kernels -- --ignored
/// --nocapture` (with LINA_TEST_GPU=1). Prints figures; asserts nothing about speed.
#[test]
#[ignore = "a timing report, not a check: run by hand"]
fn fused_kernel_timings() {
    let Some(gpu) = gpu_device() else { return };
    let time = |label: &str, f: &dyn Fn() -> Tensor<1>| {
        let mut runs = Vec::new();
        for i in 0..6 {
            let started = std::time::Instant::now();
            let mut last = None;
            for _ in 0..20 {
                last = Some(f());
            }
            let _ = values(last.unwrap());
            if i > 0 {
                runs.push(started.elapsed().as_secs_f64() * 1000.0 / 20.0);
            }
        }
        runs.sort_by(f64::total_cmp);
        eprintln!("{label:40} {:8.3} ms", runs[runs.len() / 2]);
    };
    let (_, x) = pair([2, 96, 16, 16], 1, &gpu);
    let (_, gamma) = pair([96], 2, &gpu);
    let (_, beta) = pair([96], 3, &gpu);
    let first = |t: Tensor<4>| t.flatten::<1>(0, 3).narrow(0, 0, 1);
    time("group norm + silu, fused", &|| {
        first(lina_runtime::kernels::group_norm(
            x.clone(),
            &gamma,
            &beta,
            16,
            1e-5,
            true,
        ))
    });
    time("group norm + silu, burn", &|| {
        first(silu(reference_group_norm(
            x.clone(),
            gamma.clone(),
            beta.clone(),
            16,
        )))
    });
    let (_, rows) = pair([2, 256, 96], 4, &gpu);
    let first3 = |t: Tensor<3>| t.flatten::<1>(0, 2).narrow(0, 0, 1);
    time("layer norm, fused", &|| {
        first(lina_runtime::kernels::group_norm(
            rows.clone().reshape([512, 96, 1, 1]),
            &gamma,
            &beta,
            1,
            1e-5,
            false,
        ))
    });
    time("layer norm, burn", &|| {
        first3(burn::tensor::module::layer_norm(
            rows.clone(),
            gamma.clone(),
            Some(beta.clone()),
            1e-5,
        ))
    });
    let (_, k) = pair([2, 77, 96], 5, &gpu);
    time("self-attention 256, 4 heads of 24, fused", &|| {
        first3(lina_runtime::kernels::attention(
            rows.clone().into(),
            rows.clone().into(),
            rows.clone().into(),
            4,
            None,
            Kernels::Fused,
        ))
    });
    time("self-attention 256, 4 heads of 24, burn", &|| {
        first3(reference_attention(
            rows.clone(),
            rows.clone(),
            rows.clone(),
            4,
        ))
    });
    time("cross-attention 256x77, fused", &|| {
        first3(lina_runtime::kernels::attention(
            rows.clone().into(),
            k.clone().into(),
            k.clone().into(),
            4,
            None,
            Kernels::Fused,
        ))
    });
    time("cross-attention 256x77, burn", &|| {
        first3(reference_attention(rows.clone(), k.clone(), k.clone(), 4))
    });
    let (_, h) = pair([2, 256, 2 * 384], 6, &gpu);
    let (_, h_bias) = pair([2 * 384], 7, &gpu);
    time("geglu 2x256x384 with its bias, fused", &|| {
        first3(lina_runtime::kernels::geglu(h.clone(), &h_bias))
    });
    time("geglu 2x256x384 with its bias, burn", &|| {
        let mut halves = (h.clone() + h_bias.clone().unsqueeze::<3>()).chunk(2, 2);
        let gate = halves.pop().unwrap();
        first3(halves.pop().unwrap() * gelu(gate))
    });
    let (_, bias) = pair([96], 8, &gpu);
    time("bias and residual 2x256x96, fused", &|| {
        first3(lina_runtime::kernels::bias_residual(
            rows.clone(),
            &bias,
            rows.clone(),
        ))
    });
    time("bias and residual 2x256x96, burn", &|| {
        first3(rows.clone() + bias.clone().unsqueeze::<3>() + rows.clone())
    });
    // A DDIM step with guidance, the UNet's output channels-last as its last convolution
    // leaves it, at the default model's latents and at SD 1.5's.
    let step = AffineStep {
        x0: [1.2, -0.6],
        clip: None,
        eps: [0.0, 1.0],
        prev: [0.9, 0.4],
    };
    // The latents are channels-last too from the second step on. One value of each result
    // is read back, without the copy that flattening a channels-last tensor makes.
    let corner = |t: Tensor<4>| (0..4).fold(t, |t, d| t.narrow(d, 0, 1)).reshape([1]);
    for side in [16, 64] {
        let (_, out) = pair([2, side, side, 4], 9, &gpu);
        let out = out.permute([0, 3, 1, 2]);
        let (_, sample) = pair([1, side, side, 4], 10, &gpu);
        let sample = sample.permute([0, 3, 1, 2]);
        time(
            &format!("guidance + DDIM step 4x{side}x{side}, fused"),
            &|| {
                let next = lina_runtime::kernels::guided_step(
                    out.clone(),
                    Some(7.5),
                    sample.clone(),
                    &step,
                );
                corner(next.prev_sample) + corner(next.pred_original)
            },
        );
        time(
            &format!("guidance + DDIM step 4x{side}x{side}, burn"),
            &|| {
                let [uncond, cond] = [0, 1].map(|i| out.clone().narrow(0, i, 1));
                let guided = uncond.clone() + (cond - uncond).mul_scalar(7.5);
                let next = step.apply(guided, sample.clone());
                corner(next.prev_sample) + corner(next.pred_original)
            },
        );
    }
}
