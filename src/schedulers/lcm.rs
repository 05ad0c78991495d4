//! LCM (diffusers' `LCMScheduler`), for latent consistency models: each step maps the sample
//! straight to a consistency estimate of the clean latents, then (except at the last step)
//! noises it again to the next timestep. Timesteps come from a grid of
//! `original_inference_steps` points, of which `steps` are taken evenly.

use burn::tensor::Tensor;

use super::{Noise, Prediction, Scheduler, SchedulerConfig, StepOutput, Timesteps};
use crate::error::{Error, Result};

/// sigma_data of the consistency boundary condition, as LCM trained it.
const SIGMA_DATA: f64 = 0.5;

pub struct Lcm {
    timesteps: Vec<f64>,
    alphas_cumprod: Vec<f32>,
    final_alpha_cumprod: f32,
    prediction: Prediction,
    timestep_scaling: f64,
}

impl Lcm {
    pub fn new(config: &SchedulerConfig, request: &Timesteps) -> Result<Self> {
        let alphas_cumprod = config.alphas_cumprod()?;
        let timesteps = match request {
            Timesteps::Explicit(_) => config.resolve(request, true)?,
            Timesteps::Count(n) => {
                let original = config.original_inference_steps;
                let k = config.num_train_timesteps / original.max(1);
                if original == 0 || k == 0 || *n == 0 || *n > original {
                    return Err(Error::InvalidInput(format!(
                        "LCM takes 1..={original} steps (original_inference_steps), got {n}"
                    )));
                }
                // The grid k-1, 2k-1, ..., original*k-1, from the noisy end, at floor(i * len / n).
                let grid: Vec<usize> = (1..=original).rev().map(|i| i * k - 1).collect();
                (0..*n).map(|i| grid[i * grid.len() / n] as f64).collect()
            }
        };
        Ok(Self {
            final_alpha_cumprod: if config.set_alpha_to_one {
                1.0
            } else {
                alphas_cumprod[0]
            },
            timesteps,
            alphas_cumprod,
            prediction: config.prediction()?,
            timestep_scaling: config.timestep_scaling,
        })
    }
}

impl Scheduler for Lcm {
    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn add_noise(&self, original: Tensor<4>, noise: Tensor<4>, step: usize) -> Tensor<4> {
        super::vp_noise(&self.alphas_cumprod, self.timesteps[step], original, noise)
    }

    fn step(
        &mut self,
        model_output: Tensor<4>,
        step: usize,
        sample: Tensor<4>,
        noise: &mut dyn Noise,
    ) -> StepOutput {
        let t = self.timesteps[step];
        let alpha_t = self.alphas_cumprod[t as usize] as f64;
        let (sa, sb) = (alpha_t.sqrt(), (1.0 - alpha_t).sqrt());
        let x0 = match self.prediction {
            Prediction::Epsilon => (sample.clone() - model_output.mul_scalar(sb)).div_scalar(sa),
            Prediction::Sample => model_output,
            Prediction::VPrediction => sample.clone().mul_scalar(sa) - model_output.mul_scalar(sb),
        };
        // The consistency boundary condition: close to the identity at t = 0.
        let scaled = t * self.timestep_scaling;
        let c_skip = SIGMA_DATA * SIGMA_DATA / (scaled * scaled + SIGMA_DATA * SIGMA_DATA);
        let c_out = scaled / (scaled * scaled + SIGMA_DATA * SIGMA_DATA).sqrt();
        let denoised = x0.mul_scalar(c_out) + sample.clone().mul_scalar(c_skip);
        let prev_sample = match self.timesteps.get(step + 1) {
            None => denoised.clone(),
            Some(&prev) => {
                let alpha_prev = if prev >= 0.0 {
                    self.alphas_cumprod[prev as usize] as f64
                } else {
                    self.final_alpha_cumprod as f64
                };
                let fresh = noise.draw(step, &sample);
                denoised.clone().mul_scalar(alpha_prev.sqrt())
                    + fresh.mul_scalar((1.0 - alpha_prev).sqrt())
            }
        };
        StepOutput {
            prev_sample,
            pred_original: denoised,
        }
    }
}
