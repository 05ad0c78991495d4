//! GEGLU, and a linear layer's bias with the residual around it.

use burn::tensor::Device;
use burn::tensor::activation::gelu;

use crate::common::{max_abs_diff, values};
use crate::{pair, read};

/// GEGLU, and a linear layer's bias with the residual around it.
pub(super) fn check_rows(gpu: &Device, tolerance: f32, label: &str) {
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
}
