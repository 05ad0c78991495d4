//! Flow-matching Euler (diffusers' `FlowMatchEulerDiscreteScheduler`), the sampler of SD 3's
//! rectified-flow transformers.
//!
//! The model predicts a velocity `v = noise - x0` along the straight path
//! `x(sigma) = (1 - sigma) x0 + sigma noise`, and a step follows it from one sigma to the next:
//! `prev = sample + (next - sigma) v`. Timesteps are `sigma * num_train_timesteps`, shifted
//! toward the noisy end by `shift` (SD 3: 3.0) or, with dynamic shifting, by an amount that
//! grows with the image's patch count (`mu`, as diffusers' SD 3 pipeline computes it).

use burn::tensor::Tensor;

use super::{AffineStep, FlowSpacing, Noise, Scheduler, SchedulerConfig, StepOutput, Timesteps};
use crate::error::{Error, Result};

pub struct FlowMatchEuler {
    timesteps: Vec<f64>,
    /// One sigma per timestep, then the end: 0 (1 with inverted sigmas).
    sigmas: Vec<f64>,
    /// Each step lands on a fresh draw at the next sigma rather than following the velocity.
    stochastic: bool,
}

/// How the sigmas are respaced after shifting.
enum Respacing {
    None,
    Karras,
    Exponential,
}

impl FlowMatchEuler {
    /// `image_tokens`: the patches the transformer sees, which dynamic shifting needs.
    ///
    /// An explicit list holds the timesteps the model is to see, and each step's sigma is
    /// `t / num_train_timesteps`, unshifted: a list taken from a computed schedule (LINA's
    /// reallocated one) then samples the same sigmas. diffusers shifts the sigmas of an
    /// explicit list but not its timesteps; at shift 1 the two agree.
    pub fn new(
        config: &SchedulerConfig,
        request: &Timesteps,
        image_tokens: Option<usize>,
    ) -> Result<Self> {
        let flow = &config.flow;
        let bad = |m: String| Err(Error::config(super::CONFIG_FILE, m));
        let respacing = match (
            config.use_karras_sigmas,
            flow.use_exponential_sigmas,
            flow.use_beta_sigmas,
        ) {
            (false, false, false) => Respacing::None,
            (true, false, false) => Respacing::Karras,
            (false, true, false) => Respacing::Exponential,
            (_, _, true) => {
                return bad("use_beta_sigmas is not supported (Karras and exponential are)".into());
            }
            _ => return bad("at most one of use_karras_sigmas and use_exponential_sigmas".into()),
        };
        let n_train = config.num_train_timesteps as f64;
        // Sigma 1 (timestep num_train_timesteps) is the flow's start.
        request.check(config.num_train_timesteps, n_train)?;
        let (mut sigmas, timesteps): (Vec<f64>, Option<Vec<f64>>) = match request {
            Timesteps::Explicit(list) => {
                if flow.invert_sigmas {
                    return bad("invert_sigmas does not take an explicit list of timesteps".into());
                }
                let sigmas = list.iter().map(|&t| (t / n_train) as f32 as f64).collect();
                (sigmas, Some(list.clone()))
            }
            Timesteps::Count(n) => {
                let n = *n;
                // The training schedule's ends, in f32 as diffusers holds them.
                let train = |t: f64| -> f64 {
                    let s = (t / n_train) as f32 as f64;
                    match flow.use_dynamic_shifting {
                        true => s,
                        false => (flow.shift * s / (1.0 + (flow.shift - 1.0) * s)) as f32 as f64,
                    }
                };
                let (max, min) = match flow.spacing {
                    FlowSpacing::Training => (train(n_train) * n_train, train(1.0) * n_train),
                    FlowSpacing::UnitToOneOverSteps => (n_train, n_train / n as f64),
                };
                let mut sigmas: Vec<f64> = (0..n)
                    .map(|i| match n {
                        1 => max,
                        _ => max + (min - max) * i as f64 / (n - 1) as f64,
                    })
                    .map(|t| t / n_train)
                    .collect();
                let mu = match flow.use_dynamic_shifting {
                    false => None,
                    true => Some(Self::mu(config, image_tokens)?),
                };
                for s in &mut sigmas {
                    *s = match mu {
                        Some(mu) if flow.time_shift_type == "linear" => {
                            mu / (mu + (1.0 / *s - 1.0))
                        }
                        Some(mu) => mu.exp() / (mu.exp() + (1.0 / *s - 1.0)),
                        None => flow.shift * *s / (1.0 + (flow.shift - 1.0) * *s),
                    };
                }
                if let Some(terminal) = flow.shift_terminal.filter(|&t| t != 0.0) {
                    let last = 1.0 - sigmas[sigmas.len() - 1];
                    let scale = last / (1.0 - terminal);
                    for s in &mut sigmas {
                        *s = 1.0 - (1.0 - *s) / scale;
                    }
                }
                let (first, last) = (sigmas[0], sigmas[n - 1]);
                let ramp = |i: usize| match n {
                    1 => 0.0,
                    _ => i as f64 / (n - 1) as f64,
                };
                match respacing {
                    Respacing::None => {}
                    Respacing::Karras => sigmas = super::karras_sigmas(first, last, n),
                    Respacing::Exponential => {
                        let (lo, hi) = (last.ln(), first.ln());
                        for (i, s) in sigmas.iter_mut().enumerate() {
                            *s = (hi + ramp(i) * (lo - hi)).exp();
                        }
                    }
                }
                (sigmas.iter().map(|&s| s as f32 as f64).collect(), None)
            }
        };
        if flow.invert_sigmas {
            for s in &mut sigmas {
                *s = 1.0 - *s;
            }
        }
        let timesteps = timesteps.unwrap_or_else(|| {
            sigmas
                .iter()
                .map(|&s| (s as f32 * n_train as f32) as f64)
                .collect()
        });
        sigmas.push(if flow.invert_sigmas { 1.0 } else { 0.0 });
        Ok(Self {
            timesteps,
            sigmas,
            stochastic: flow.stochastic_sampling,
        })
    }

    /// Dynamic shifting's `mu` for an image of `image_tokens` patches: linear in the count,
    /// from `base_shift` at `base_image_seq_len` to `max_shift` at `max_image_seq_len`.
    fn mu(config: &SchedulerConfig, image_tokens: Option<usize>) -> Result<f64> {
        let flow = &config.flow;
        let tokens = image_tokens.ok_or_else(|| {
            Error::InvalidInput(
                "use_dynamic_shifting needs the image's size, which this caller did not give"
                    .into(),
            )
        })?;
        let (base, max) = (
            flow.base_image_seq_len as f64,
            flow.max_image_seq_len as f64,
        );
        let slope = (flow.max_shift - flow.base_shift) / (max - base);
        Ok(tokens as f64 * slope + flow.base_shift - slope * base)
    }
}

impl Scheduler for FlowMatchEuler {
    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    /// The straight path's point at `step`'s sigma: `(1 - sigma) x0 + sigma noise`.
    fn add_noise(&self, original: Tensor<4>, noise: Tensor<4>, step: usize) -> Tensor<4> {
        let sigma = self.sigmas[step];
        original.mul_scalar(1.0 - sigma) + noise.mul_scalar(sigma)
    }

    /// `x0 = sample - sigma v`, the noise `sample + (1 - sigma) v`, and the next point on the
    /// path between them: `(1 - next) x0 + next noise`, which is `sample + (next - sigma) v`.
    fn affine(&self, step: usize) -> Option<AffineStep> {
        if self.stochastic {
            return None;
        }
        let (sigma, next) = (self.sigmas[step], self.sigmas[step + 1]);
        Some(AffineStep {
            x0: [1.0, -sigma],
            clip: None,
            eps: [1.0, 1.0 - sigma],
            prev: [1.0 - next, next],
        })
    }

    fn step(
        &mut self,
        model_output: Tensor<4>,
        step: usize,
        sample: Tensor<4>,
        noise: &mut dyn Noise,
    ) -> StepOutput {
        if let Some(affine) = self.affine(step) {
            return affine.apply(model_output, sample);
        }
        let (sigma, next) = (self.sigmas[step], self.sigmas[step + 1]);
        let x0 = sample.clone() - model_output.mul_scalar(sigma);
        let fresh = noise.draw(step, &sample);
        StepOutput {
            prev_sample: x0.clone().mul_scalar(1.0 - next) + fresh.mul_scalar(next),
            pred_original: x0,
        }
    }
}
