//! DDIM (diffusers' `DDIMScheduler`), deterministic (eta = 0).

use burn::tensor::Tensor;

use super::{AffineStep, Noise, Prediction, Scheduler, SchedulerConfig, StepOutput, Timesteps};
use crate::error::Result;

pub struct Ddim {
    timesteps: Vec<f64>,
    /// The timestep each step lands on; `None` means "past the start", where alpha-bar is
    /// `final_alpha_cumprod`.
    prev_timesteps: Vec<Option<usize>>,
    alphas_cumprod: Vec<f32>,
    final_alpha_cumprod: f32,
    prediction: Prediction,
    clip: Option<f64>,
}

impl Ddim {
    pub fn new(config: &SchedulerConfig, request: &Timesteps) -> Result<Self> {
        let timesteps = config.resolve(request, true)?;
        let alphas_cumprod = config.alphas_cumprod()?;
        let prev_timesteps = match request {
            // diffusers always steps back by train_steps / steps, whatever the spacing.
            Timesteps::Count(n) => {
                let stride = (config.num_train_timesteps / n) as i64;
                timesteps
                    .iter()
                    .map(|&t| {
                        let prev = t as i64 - stride;
                        (prev >= 0).then_some(prev as usize)
                    })
                    .collect()
            }
            // Ours: an explicit list steps to its next entry, the last one to the start.
            Timesteps::Explicit(list) => (0..list.len())
                .map(|i| list.get(i + 1).map(|&t| t as usize))
                .collect(),
        };
        Ok(Self {
            final_alpha_cumprod: if config.set_alpha_to_one {
                1.0
            } else {
                alphas_cumprod[0]
            },
            timesteps,
            prev_timesteps,
            alphas_cumprod,
            prediction: config.prediction()?,
            clip: config.clip_sample.then_some(config.clip_sample_range),
        })
    }
}

impl Scheduler for Ddim {
    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn add_noise(&self, original: Tensor<4>, noise: Tensor<4>, step: usize) -> Tensor<4> {
        super::vp_noise(&self.alphas_cumprod, self.timesteps[step], original, noise)
    }

    fn affine(&self, step: usize) -> Option<AffineStep> {
        let t = self.timesteps[step] as usize;
        let alpha_t = self.alphas_cumprod[t] as f64;
        let alpha_prev = self.prev_timesteps[step]
            .map_or(self.final_alpha_cumprod, |p| self.alphas_cumprod[p])
            as f64;
        let (sa, sb) = (alpha_t.sqrt(), (1.0 - alpha_t).sqrt());
        // x0 and eps as combinations of the sample and the model's output.
        let (x0, eps) = match self.prediction {
            Prediction::Epsilon => ([1.0 / sa, -sb / sa], [0.0, 1.0]),
            Prediction::Sample => ([0.0, 1.0], [1.0 / sb, -sa / sb]),
            Prediction::VPrediction => ([sa, -sb], [sb, sa]),
        };
        Some(AffineStep {
            x0,
            clip: self.clip,
            eps,
            prev: [alpha_prev.sqrt(), (1.0 - alpha_prev).sqrt()],
        })
    }

    fn step(
        &mut self,
        model_output: Tensor<4>,
        step: usize,
        sample: Tensor<4>,
        _noise: &mut dyn Noise,
    ) -> StepOutput {
        let affine = self.affine(step).expect("DDIM's step is affine");
        affine.apply(model_output, sample)
    }
}
