//! The fused kernels' timings beside burn's at the default model's shapes (run by hand).

use burn::tensor::Tensor;
use burn::tensor::activation::{gelu, silu};
use lina_runtime::kernels::Kernels;
use lina_runtime::schedulers::AffineStep;

use crate::attention::reference_attention;
use crate::common::{gpu_device, values};
use crate::norm::reference_group_norm;
use crate::pair;

/// Each fused kernel beside the same operation composed from burn's, on the GPU, at the
/// embedded default model's shapes: `cargo test --release --test kernels -- --ignored
/// --nocapture` (with LINA_TEST_GPU=1). Prints figures; asserts nothing about speed.
#[test]
#[ignore = "a timing report, not a check: run by hand"]
pub(super) fn fused_kernel_timings() {
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
