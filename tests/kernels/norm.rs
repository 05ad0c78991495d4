//! Group and layer norms, with and without the SiLU, against burn's composed operations.

use burn::tensor::activation::silu;
use burn::tensor::{Device, Tensor};
use lina_runtime::views::ChannelShift;

use crate::common::{max_abs_diff, values};
use crate::{pair, read};

pub(super) fn reference_group_norm(
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

pub(super) fn check_norms(gpu: &Device, tolerance: f32, label: &str, wide: bool) {
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
