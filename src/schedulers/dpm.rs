//! DPM-Solver++ (diffusers' `DPMSolverMultistepScheduler` with `algorithm_type =
//! "dpmsolver++"`): first or second order, midpoint or Heun, optionally on Karras sigmas.
//! "DPM++ 2M" and "DPM++ 2M Karras" in SD front ends.
//!
//! It predicts the clean latents x0 at every step and extrapolates in log-SNR time
//! `lambda = log(alpha / sigma)`, keeping the previous x0 for the second-order correction.

use burn::tensor::Tensor;

use super::{
    Noise, Prediction, Scheduler, SchedulerConfig, Spacing, StepOutput, Timesteps, karras_sigmas,
    sigma_to_t,
};
use crate::error::{Error, Result};

pub struct DpmSolver {
    timesteps: Vec<f64>,
    /// One sigma per timestep, then the final one (0, or sigma_min).
    sigmas: Vec<f64>,
    prediction: Prediction,
    order: usize,
    heun: bool,
    lower_order_final: bool,
    euler_at_final: bool,
    final_zero: bool,
    /// The last x0 predictions, oldest first (at most `order`).
    history: Vec<Tensor<4>>,
    /// How many steps have run at less than full order (saturates at `order`).
    lower_order_nums: usize,
}

/// alpha_t and sigma_t of the variance-preserving process at noise level `sigma`.
fn alpha_sigma(sigma: f64) -> (f64, f64) {
    let alpha = 1.0 / (sigma * sigma + 1.0).sqrt();
    (alpha, sigma * alpha)
}

/// log(alpha_t / sigma_t); +infinity at sigma 0.
fn lambda(sigma: f64) -> f64 {
    let (a, s) = alpha_sigma(sigma);
    a.ln() - s.ln()
}

impl DpmSolver {
    pub fn new(config: &SchedulerConfig, request: &Timesteps) -> Result<Self> {
        let bad = |m: String| Err(Error::config(super::CONFIG_FILE, m));
        if config.algorithm_type != "dpmsolver++" {
            return bad(format!(
                "DPM-Solver `algorithm_type` {:?} is not supported (dpmsolver++ is)",
                config.algorithm_type
            ));
        }
        if !(1..=2).contains(&config.solver_order) {
            return bad(format!(
                "DPM-Solver `solver_order` {} is not supported (1 or 2 are)",
                config.solver_order
            ));
        }
        let heun = match config.solver_type.as_str() {
            "midpoint" => false,
            "heun" => true,
            other => return bad(format!("unsupported DPM-Solver `solver_type` {other:?}")),
        };
        let final_zero = match config.final_sigmas_type.as_str() {
            "zero" => true,
            "sigma_min" => false,
            other => return bad(format!("unsupported `final_sigmas_type` {other:?}")),
        };

        let alphas = config.sigma_alphas_cumprod()?;
        // Training sigmas in f32, as diffusers derives them from its f32 alphas.
        let train: Vec<f32> = alphas.iter().map(|&a| ((1.0 - a) / a).sqrt()).collect();
        let (timesteps, sigmas) = match request {
            Timesteps::Explicit(_) if config.use_karras_sigmas => {
                return Err(Error::InvalidInput(
                    "explicit timesteps cannot be combined with Karras sigmas".into(),
                ));
            }
            Timesteps::Explicit(_) => {
                let t = config.resolve(request, true)?;
                let s = t.iter().map(|&t| interp(&train, t)).collect();
                (t, s)
            }
            Timesteps::Count(n) if config.use_karras_sigmas => karras(config, &train, *n)?,
            Timesteps::Count(n) => {
                let t = spaced(config, &alphas, *n)?;
                let s = t.iter().map(|&t| interp(&train, t)).collect();
                (t, s)
            }
        };
        if timesteps.windows(2).any(|w| w[1] >= w[0]) {
            return Err(Error::InvalidInput(format!(
                "{} steps are too many for DPM-Solver's spacing: its timesteps repeat",
                timesteps.len()
            )));
        }
        let last = if final_zero { 0.0 } else { train[0] as f64 };
        let mut sigmas: Vec<f64> = sigmas;
        sigmas.push(last);
        // diffusers keeps its sigmas in f32.
        let sigmas = sigmas.into_iter().map(|s| s as f32 as f64).collect();
        Ok(Self {
            timesteps,
            sigmas,
            prediction: config.prediction()?,
            order: config.solver_order,
            heun,
            lower_order_final: config.lower_order_final,
            euler_at_final: config.euler_at_final,
            final_zero,
            history: Vec::new(),
            lower_order_nums: 0,
        })
    }

    fn x0(&self, model_output: Tensor<4>, sample: Tensor<4>, sigma: f64) -> Tensor<4> {
        let (alpha_t, sigma_t) = alpha_sigma(sigma);
        match self.prediction {
            Prediction::Epsilon => (sample - model_output.mul_scalar(sigma_t)).div_scalar(alpha_t),
            Prediction::VPrediction => {
                sample.mul_scalar(alpha_t) - model_output.mul_scalar(sigma_t)
            }
            Prediction::Sample => model_output,
        }
    }
}

/// The training sigma at a (possibly fractional) timestep, interpolated linearly.
fn interp(train: &[f32], t: f64) -> f64 {
    let lo = (t.floor() as usize).min(train.len() - 1);
    let hi = (lo + 1).min(train.len() - 1);
    let frac = t - lo as f64;
    train[lo] as f64 * (1.0 - frac) + train[hi] as f64 * frac
}

/// DPM-Solver's own spacing (it differs from DDIM's): `count + 1` points, the last dropped,
/// over the timesteps whose log-SNR is not below `lambda_min_clipped`.
fn spaced(config: &SchedulerConfig, alphas: &[f32], count: usize) -> Result<Vec<f64>> {
    let t = config.num_train_timesteps;
    if count == 0 || count > t {
        return Err(Error::InvalidInput(format!(
            "steps must be in 1..={t}, got {count}"
        )));
    }
    let clipped = match config.lambda_min_clipped {
        None => 0,
        Some(min) => alphas
            .iter()
            .map(|&a| 0.5 * (a as f64).ln() - 0.5 * (1.0 - a as f64).ln())
            .filter(|&l| l < min)
            .count(),
    };
    let last = t - clipped;
    Ok(match config.spacing()? {
        Spacing::Linspace => {
            let step = (last as f64 - 1.0) / count as f64;
            (1..=count)
                .rev()
                .map(|i| (i as f64 * step).round_ties_even())
                .collect()
        }
        Spacing::Leading => {
            let ratio = last / (count + 1);
            (1..=count)
                .rev()
                .map(|i| (i * ratio + config.steps_offset) as f64)
                .collect()
        }
        Spacing::Trailing => {
            let ratio = t as f64 / count as f64;
            (0..)
                .map(|i| last as f64 - i as f64 * ratio)
                .take_while(|&x| x > 0.0)
                .map(|x| x.round_ties_even() - 1.0)
                .collect()
        }
    })
}

/// Karras et al.'s sigmas (rho = 7) between the training range's ends, and the timesteps
/// they fall on (interpolated in log sigma, then rounded).
fn karras(config: &SchedulerConfig, train: &[f32], count: usize) -> Result<(Vec<f64>, Vec<f64>)> {
    if count == 0 || count > config.num_train_timesteps {
        return Err(Error::InvalidInput(format!(
            "steps must be in 1..={}, got {count}",
            config.num_train_timesteps
        )));
    }
    let sigmas = karras_sigmas(train[train.len() - 1] as f64, train[0] as f64, count);
    let log_train: Vec<f64> = train.iter().map(|&s| s.ln() as f64).collect();
    let timesteps = sigmas
        .iter()
        .map(|&s| sigma_to_t(s, &log_train).round_ties_even())
        .collect();
    Ok((timesteps, sigmas))
}

impl Scheduler for DpmSolver {
    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn add_noise(&self, original: Tensor<4>, noise: Tensor<4>, step: usize) -> Tensor<4> {
        let (alpha, sigma) = alpha_sigma(self.sigmas[step]);
        original.mul_scalar(alpha) + noise.mul_scalar(sigma)
    }

    fn step(
        &mut self,
        model_output: Tensor<4>,
        step: usize,
        sample: Tensor<4>,
        _noise: &mut dyn Noise,
    ) -> StepOutput {
        let n = self.timesteps.len();
        let last = step + 1 == n;
        let lower_final =
            last && (self.euler_at_final || (self.lower_order_final && n < 15) || self.final_zero);
        let x0 = self.x0(model_output, sample.clone(), self.sigmas[step]);
        self.history.push(x0.clone());
        if self.history.len() > self.order {
            self.history.remove(0);
        }

        let (s0, t) = (self.sigmas[step], self.sigmas[step + 1]);
        let (alpha_t, sigma_t) = alpha_sigma(t);
        let (_, sigma_s0) = alpha_sigma(s0);
        let h = lambda(t) - lambda(s0);
        // exp(-h) - 1, which is -1 at the final sigma 0 (h = +infinity).
        let decay = (-h).exp() - 1.0;
        let first = self.order == 1 || self.lower_order_nums < 1 || lower_final;
        let prev = if first {
            sample.mul_scalar(sigma_t / sigma_s0) - x0.clone().mul_scalar(alpha_t * decay)
        } else {
            let m1 = self.history[self.history.len() - 2].clone();
            let h0 = lambda(s0) - lambda(self.sigmas[step - 1]);
            let r0 = h0 / h;
            let d1 = (x0.clone() - m1).div_scalar(r0);
            let base =
                sample.mul_scalar(sigma_t / sigma_s0) - x0.clone().mul_scalar(alpha_t * decay);
            if self.heun {
                base + d1.mul_scalar(alpha_t * (decay / h + 1.0))
            } else {
                base - d1.mul_scalar(0.5 * alpha_t * decay)
            }
        };
        if self.lower_order_nums < self.order {
            self.lower_order_nums += 1;
        }
        StepOutput {
            prev_sample: prev,
            pred_original: x0,
        }
    }
}
