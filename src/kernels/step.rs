//! Classifier-free guidance's combine and the sampler's step in one kernel
//! (shaders/guided_step.wgsl).

use burn::backend::Dispatch;
use burn::tensor::Tensor;
use burn_cubecl::cubecl::prelude::CubeDim;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::permute;
use burn_cubecl::tensor::CubeTensor;

use super::Fused;
use super::Wgsl;
use super::dispatch::{grid, is_channels_last, launch, output_like, words};
use crate::schedulers::{AffineStep, StepOutput};

/// Classifier-free guidance and a sampler step that is affine ([`AffineStep`]) in one
/// dispatch. `model` is the UNet's output: [2B, C, H, W] holding [uncond; cond] when
/// `guidance` gives the scale (the guided prediction is `uncond + scale * (cond - uncond)`),
/// else [B, C, H, W]; `sample` [B, C, H, W] is the step's input. What
/// `step.apply(guided prediction, sample)` computes, stored as `model` is.
pub fn guided_step(
    model: Tensor<4>,
    guidance: Option<f64>,
    sample: Tensor<4>,
    step: &AffineStep,
) -> StepOutput {
    let (prev, clean) = <Dispatch as Fused>::guided_step(
        model.into_dispatch(),
        sample.into_dispatch(),
        guidance,
        *step,
    );
    StepOutput {
        prev_sample: Tensor::from_dispatch(prev),
        pred_original: Tensor::from_dispatch(clean),
    }
}

/// [`Fused::guided_step`] on a wgpu device.
pub(super) fn dispatch(
    model: CubeTensor,
    sample: CubeTensor,
    guidance: Option<f64>,
    step: AffineStep,
) -> (CubeTensor, CubeTensor) {
    let shape = sample.meta.shape().clone();
    let [b, c, h, w] = [shape[0], shape[1], shape[2], shape[3]];
    // Both read in place as [B, C, H, W] or channels-last; the results are stored as the
    // model's output is (channels-last from a GPU convolution), which the next UNet
    // call's first convolution then reads without a copy.
    let channels_last = |t: &CubeTensor| h * w > 1 && is_channels_last(t);
    let (model_cl, sample_cl) = (channels_last(&model), channels_last(&sample));
    let model = if model_cl {
        model
    } else {
        into_contiguous(model)
    };
    let sample = if sample_cl {
        sample
    } else {
        into_contiguous(sample)
    };
    let output = || {
        if model_cl {
            permute(output_like(&sample, [b, h, w, c].into()), &[0, 3, 1, 2])
        } else {
            output_like(&sample, shape.clone())
        }
    };
    let (prev, clean) = (output(), output());
    let count = (b * c * h * w) as u32;
    // The coefficients in f32, the precision the kernel computes in.
    let bits = |v: f64| (v as f32).to_bits();
    let params = words(&[
        count,
        c as u32,
        (h * w) as u32,
        model_cl as u32,
        sample_cl as u32,
        guidance.is_some() as u32,
        bits(guidance.unwrap_or(1.0)),
        bits(step.x0[0]),
        bits(step.x0[1]),
        bits(step.clip.unwrap_or(-1.0)),
        bits(step.eps[0]),
        bits(step.eps[1]),
        bits(step.prev[0]),
        bits(step.prev[1]),
    ]);
    launch(
        &sample,
        Wgsl::new("guided_step", sample.dtype, 0),
        CubeDim::new_1d(256),
        grid(count, 256),
        &[&model, &sample, &prev, &clean],
        &params,
    );
    (prev, clean)
}
