//! Euler ancestral (diffusers' `EulerAncestralDiscreteScheduler`): an Euler step down to a
//! lower noise level, then fresh noise back up to the next one. Its images depend on the
//! noise drawn at every step, so they follow the seed but never match another runtime's.

use burn::tensor::Tensor;

use super::{Euler, Noise, Scheduler, SchedulerConfig, StepOutput, Timesteps};
use crate::error::Result;

pub struct EulerAncestral {
    /// Timesteps, sigmas, input scaling and x0 are Euler's.
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
        let (from, to) = (self.euler.sigmas[step], self.euler.sigmas[step + 1]);
        let x0 = self.euler.x0(model_output, sample.clone(), from);
        let up = (to * to * (from * from - to * to) / (from * from)).sqrt();
        let down = (to * to - up * up).sqrt();
        let derivative = (sample.clone() - x0.clone()).div_scalar(from);
        let fresh = noise.draw(step, &sample);
        StepOutput {
            prev_sample: sample + derivative.mul_scalar(down - from) + fresh.mul_scalar(up),
            pred_original: x0,
        }
    }
}
