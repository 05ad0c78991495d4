//! Euler ancestral (diffusers' `EulerAncestralDiscreteScheduler`): an Euler step down to a
//! lower noise level, then fresh noise back up to the next one. Its images depend on the
//! noise drawn at every step, so they follow the seed but never match another runtime's.

use burn::tensor::Tensor;

use super::{Euler, Noise, Scheduler, SchedulerConfig, StepOutput, Timesteps};
use crate::error::Result;

pub struct EulerAncestral {
    /// Timesteps, sigmas, input scaling and the deterministic part of the step are Euler's.
    euler: Euler,
}

impl EulerAncestral {
    pub fn new(config: &SchedulerConfig, request: &Timesteps) -> Result<Self> {
        Ok(Self {
            euler: Euler::new(config, request)?,
        })
    }
}

impl Scheduler for EulerAncestral {
    fn timesteps(&self) -> &[f64] {
        self.euler.timesteps()
    }

    fn init_noise_sigma(&self) -> f64 {
        self.euler.init_noise_sigma()
    }

    fn scale_model_input(&self, sample: Tensor<4>, step: usize) -> Tensor<4> {
        self.euler.scale_model_input(sample, step)
    }

    fn add_noise(&self, original: Tensor<4>, noise: Tensor<4>, step: usize) -> Tensor<4> {
        self.euler.add_noise(original, noise, step)
    }

    fn step(
        &mut self,
        model_output: Tensor<4>,
        step: usize,
        sample: Tensor<4>,
        noise: &mut dyn Noise,
    ) -> StepOutput {
        // Euler's step down to `down` instead of the next sigma, then fresh noise up to it.
        let (from, to) = (self.euler.sigmas[step], self.euler.sigmas[step + 1]);
        let up = (to * to * (from * from - to * to) / (from * from)).sqrt();
        let down = (to * to - up * up).sqrt();
        let mut affine = self.euler.affine(step).expect("Euler's step is affine");
        affine.prev[1] = down;
        let fresh = noise.draw(step, &sample);
        let out = affine.apply(model_output, sample);
        StepOutput {
            prev_sample: out.prev_sample + fresh.mul_scalar(up),
            pred_original: out.pred_original,
        }
    }
}
