//! Euler (diffusers' `EulerDiscreteScheduler`) in the sigma parametrisation, without churn;
//! on the spaced schedule's sigmas or ("Euler Karras") on Karras sigmas between that
//! schedule's ends, at the fractional timesteps they fall on.

use burn::tensor::Tensor;

use super::{
    AffineStep, Noise, Prediction, Scheduler, SchedulerConfig, Spacing, StepOutput, Timesteps,
};
use crate::error::Result;

pub struct Euler {
    pub(super) timesteps: Vec<f64>,
    /// One sigma per timestep, then a final 0.
    pub(super) sigmas: Vec<f64>,
    init_noise_sigma: f64,
    prediction: Prediction,
}

impl Euler {
    pub fn new(config: &SchedulerConfig, request: &Timesteps) -> Result<Self> {
        if config.use_karras_sigmas && matches!(request, Timesteps::Explicit(_)) {
            return Err(crate::error::Error::InvalidInput(
                "explicit timesteps cannot be combined with Karras sigmas".into(),
            ));
        }
        if config.flow.use_exponential_sigmas || config.flow.use_beta_sigmas {
            return Err(crate::error::Error::config(
                super::CONFIG_FILE,
                "use_exponential_sigmas and use_beta_sigmas are not supported by the Euler scheduler (use_karras_sigmas is)",
            ));
        }
        let mut timesteps = config.resolve(request, false)?;
        // sigma(t) = sqrt((1 - abar) / abar), in f32 as diffusers computes it, then linearly
        // interpolated at fractional timesteps.
        let train_sigmas: Vec<f32> = config
            .sigma_alphas_cumprod()?
            .iter()
            .map(|&a| ((1.0 - a) / a).sqrt())
            .collect();
        let interp = |t: f64| -> f64 {
            let lo = t.floor() as usize;
            let hi = (lo + 1).min(train_sigmas.len() - 1);
            let frac = t - lo as f64;
            (train_sigmas[lo] as f64) * (1.0 - frac) + (train_sigmas[hi] as f64) * frac
        };
        let mut sigmas: Vec<f64> = timesteps.iter().map(|&t| interp(t)).collect();
        if config.use_karras_sigmas {
            let n = sigmas.len();
            sigmas = super::karras_sigmas(sigmas[0], sigmas[n - 1], n);
            // log in f32, as numpy takes it of diffusers' f32 sigmas.
            let log_train: Vec<f64> = train_sigmas.iter().map(|s| s.ln() as f64).collect();
            timesteps = sigmas
                .iter()
                .map(|&s| super::sigma_to_t(s, &log_train) as f32 as f64)
                .collect();
        }
        // diffusers keeps sigmas as f32: round each to f32 so later arithmetic matches.
        let mut sigmas: Vec<f64> = sigmas.into_iter().map(|s| s as f32 as f64).collect();
        let max_sigma = sigmas.iter().copied().fold(0.0, f64::max);
        sigmas.push(0.0);
        // As in diffusers, this depends on the configured spacing even for explicit lists.
        let init_noise_sigma = match config.spacing()? {
            Spacing::Linspace | Spacing::Trailing => max_sigma,
            Spacing::Leading => (max_sigma * max_sigma + 1.0).sqrt(),
        };
        Ok(Self {
            timesteps,
            sigmas,
            init_noise_sigma,
            prediction: config.prediction()?,
        })
    }
}

impl Euler {
    /// The clean latents the model's output implies at noise level `sigma`, as coefficients
    /// of the sample and the model's output.
    fn x0(&self, sigma: f64) -> [f64; 2] {
        match self.prediction {
            Prediction::Epsilon => [1.0, -sigma],
            Prediction::Sample => [0.0, 1.0],
            Prediction::VPrediction => {
                let s2 = sigma * sigma + 1.0;
                [1.0 / s2, -sigma / s2.sqrt()]
            }
        }
    }
}

impl Scheduler for Euler {
    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn init_noise_sigma(&self) -> f64 {
        self.init_noise_sigma
    }

    fn scale_model_input(&self, sample: Tensor<4>, step: usize) -> Tensor<4> {
        let sigma = self.sigmas[step];
        sample.div_scalar((sigma * sigma + 1.0).sqrt())
    }

    fn add_noise(&self, original: Tensor<4>, noise: Tensor<4>, step: usize) -> Tensor<4> {
        original + noise.mul_scalar(self.sigmas[step])
    }

    /// x0, then the derivative `(sample - x0) / sigma` as the noise estimate, followed
    /// from `sigma` down to the next sigma: `prev = x0 + next * eps`.
    fn affine(&self, step: usize) -> Option<AffineStep> {
        let sigma = self.sigmas[step];
        let [a, b] = self.x0(sigma);
        Some(AffineStep {
            x0: [a, b],
            clip: None,
            eps: [(1.0 - a) / sigma, -b / sigma],
            prev: [1.0, self.sigmas[step + 1]],
        })
    }

    fn step(
        &mut self,
        model_output: Tensor<4>,
        step: usize,
        sample: Tensor<4>,
        _noise: &mut dyn Noise,
    ) -> StepOutput {
        let affine = self.affine(step).expect("Euler's step is affine");
        affine.apply(model_output, sample)
    }
}
