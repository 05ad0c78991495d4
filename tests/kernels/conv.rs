//! Convolutions as gathered patches and burn's matmul, and the convolution cases the matmul
//! kernels run too.

use burn::tensor::{Device, Tensor};

use crate::common::values;
use crate::{pair, read, relative};

/// A convolution to check, given as (batch, c_in, height, width, c_out, kernel, stride,
/// bias), with "same" padding.
pub(super) type Conv = (usize, usize, usize, usize, usize, usize, usize, bool);

/// What a convolution check runs on: burn's output on the CPU, and the input and filters on
/// `gpu` stored channels-last (read in place) and stored [B, C, H, W] (copied first).
pub(super) struct ConvCase {
    pub(super) want: Vec<f32>,
    pub(super) layouts: [(Tensor<4>, Tensor<4>); 2],
    pub(super) bias: Tensor<1>,
}

pub(super) fn conv_case(conv: Conv, seed: u64, gpu: &Device) -> ConvCase {
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

/// Convolutions as gathered patches and burn's matmul (shaders/im2col.wgsl) against burn's
/// convolution on the CPU, on shapes off the usual: channels and positions that are no
/// multiple of a tile, 4 input channels (a UNet's first convolution), strided and 1x1
/// kernels, a 1x1 image, inputs and filters stored channels-last or not, whole and in blocks
/// of 7 output positions (as under a small binding limit), the sum over K whole and cut.
pub(super) fn check_im2col(gpu: &Device, tolerance: f32, label: &str) {
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
