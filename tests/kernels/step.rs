//! Guidance and the sampler's affine step in one kernel.

use burn::tensor::Device;
use lina_runtime::schedulers::AffineStep;

use crate::common::{max_abs_diff, values};
use crate::{pair, read};

/// Guidance and an affine step in one kernel against `AffineStep::apply` on the guided
/// prediction, with the model's output and the sample each stored as [B, C, H, W] or
/// channels-last (as a GPU convolution leaves it), guided or not, with and without a clamp.
pub(super) fn check_guided_step(gpu: &Device, tolerance: f32, label: &str) {
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
