//! Attention: the untiled, tiled, lanes and coop kernels and attention read in place from
//! fused projections, against burn's softmax attention on the CPU.

use burn::tensor::activation::softmax;
use burn::tensor::{Device, Tensor};
use lina_runtime::kernels::{AttentionKernel, Kernels};
use lina_runtime::views::Columns;

use crate::common::{gpu_device, max_abs_diff, values};
use crate::matmul::coop_matrices;
use crate::{f16_device, pair, read};

pub(super) fn reference_attention(
    q: Tensor<3>,
    k: Tensor<3>,
    v: Tensor<3>,
    heads: usize,
) -> Tensor<3> {
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
pub(super) fn reference_biased_attention(
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

/// The attention kernels to check on `gpu`: the untiled and tiled ones everywhere, and the
/// lanes kernel where the adapter has subgroups (lavapipe, CI's adapter, must have them).
pub(super) fn kernels_to_check(gpu: &Device) -> Vec<AttentionKernel> {
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

pub(super) fn check_attention(gpu: &Device, tolerance: f32, label: &str) {
    check_attention_kernels(gpu, tolerance, label, &|_| kernels_to_check(gpu));
    check_packed_attention(gpu, tolerance, label);
}

/// The attention `kernels` give for heads of each size against burn's operations on the
/// CPU, and what the runtime chooses over 1024 keys.
pub(super) fn check_attention_kernels(
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
pub(super) fn check_packed_attention(gpu: &Device, tolerance: f32, label: &str) {
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

/// The coop attention (shaders/attention_coop.wgsl) on an f16 device that multiplies in
/// cooperative matrices (a GPU with tensor cores, or `scripts/lavapipe-coop.sh`'s lavapipe,
/// as scripts/test.sh runs it), against burn's operations on the CPU, for every case of the
/// other attention kernels: by the block the runtime picks for each head size and by the
/// smallest (one subgroup's rows, one matrix of keys: many blocks, and queries and keys past
/// the last whole block); and that the runtime picks it where it should. Through a whole
/// UNet against diffusers, the coop matmul's test runs it too (`Kernels::Matrices`).
#[test]
pub(super) fn the_coop_attention_computes_what_burns_operations_compute() {
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
