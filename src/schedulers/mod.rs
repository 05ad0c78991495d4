//! Noise schedulers with diffusers' names, configs and semantics.
//!
//! A scheduler is built from `scheduler_config.json` and a [`Timesteps`] request, then driven
//! by step index: the sampler asks it to scale the model input and to take a step. Step
//! indices (not timestep values) key every lookup, so an explicit, reallocated list of
//! timesteps is handled exactly like a computed one.

mod ddim;
mod dpm;
mod euler;
mod euler_ancestral;
mod flow_match;
mod lcm;

pub use ddim::Ddim;
pub use dpm::DpmSolver;
pub use euler::Euler;
pub use euler_ancestral::EulerAncestral;
pub use flow_match::FlowMatchEuler;
pub use lcm::Lcm;

use burn::tensor::Tensor;
use serde::Deserialize;

use crate::error::{Error, Result};
use crate::models::config::parse;

pub const CONFIG_FILE: &str = "scheduler/scheduler_config.json";

#[derive(Debug, Clone, Deserialize)]
pub struct SchedulerConfig {
    #[serde(rename = "_class_name", default)]
    pub class_name: Option<String>,
    #[serde(default = "d_train_steps")]
    pub num_train_timesteps: usize,
    #[serde(default = "d_beta_start")]
    pub beta_start: f64,
    #[serde(default = "d_beta_end")]
    pub beta_end: f64,
    #[serde(default = "d_beta_schedule")]
    pub beta_schedule: String,
    #[serde(default)]
    pub trained_betas: Option<Vec<f64>>,
    #[serde(default = "d_prediction")]
    pub prediction_type: String,
    #[serde(default = "d_spacing")]
    pub timestep_spacing: String,
    #[serde(default)]
    pub steps_offset: usize,
    #[serde(default = "d_true")]
    pub set_alpha_to_one: bool,
    #[serde(default)]
    pub clip_sample: bool,
    #[serde(default = "d_one")]
    pub clip_sample_range: f64,
    #[serde(default)]
    pub thresholding: bool,
    #[serde(default)]
    pub rescale_betas_zero_snr: bool,
    #[serde(default)]
    pub use_karras_sigmas: bool,
    #[serde(default = "d_interp")]
    pub interpolation_type: String,
    // DPM-Solver's settings, with diffusers' defaults.
    #[serde(default = "d_two")]
    pub solver_order: usize,
    #[serde(default = "d_algorithm")]
    pub algorithm_type: String,
    #[serde(default = "d_solver_type")]
    pub solver_type: String,
    #[serde(default = "d_true")]
    pub lower_order_final: bool,
    #[serde(default)]
    pub euler_at_final: bool,
    #[serde(default = "d_final_sigmas")]
    pub final_sigmas_type: String,
    /// No clipping when absent (diffusers' default is -infinity, which JSON cannot hold).
    #[serde(default)]
    pub lambda_min_clipped: Option<f64>,
    // LCM's settings, with diffusers' defaults.
    #[serde(default = "d_original_steps")]
    pub original_inference_steps: usize,
    #[serde(default = "d_timestep_scaling")]
    pub timestep_scaling: f64,
    /// Flow matching's settings (SD 3), beside the others as diffusers writes them.
    #[serde(flatten)]
    pub flow: FlowSettings,
}

/// `FlowMatchEulerDiscreteScheduler`'s settings, with diffusers' defaults.
#[derive(Debug, Clone, Deserialize)]
pub struct FlowSettings {
    #[serde(default = "d_one")]
    pub shift: f64,
    #[serde(default)]
    pub use_dynamic_shifting: bool,
    #[serde(default = "d_base_shift", deserialize_with = "or_default_base_shift")]
    pub base_shift: f64,
    #[serde(default = "d_max_shift", deserialize_with = "or_default_max_shift")]
    pub max_shift: f64,
    #[serde(default = "d_base_image_seq_len")]
    pub base_image_seq_len: usize,
    #[serde(default = "d_max_image_seq_len")]
    pub max_image_seq_len: usize,
    #[serde(default)]
    pub invert_sigmas: bool,
    #[serde(default)]
    pub shift_terminal: Option<f64>,
    #[serde(default)]
    pub use_exponential_sigmas: bool,
    #[serde(default)]
    pub use_beta_sigmas: bool,
    #[serde(default = "d_time_shift_type")]
    pub time_shift_type: String,
    #[serde(default)]
    pub stochastic_sampling: bool,
    /// Where a count of steps starts and ends before shifting. Not in the config: each
    /// diffusers pipeline chooses it, so the loader sets it for the model it loads.
    #[serde(skip)]
    pub spacing: FlowSpacing,
}

/// How a flow schedule of n steps spaces its sigmas before shifting them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum FlowSpacing {
    /// Evenly from the training schedule's first sigma to its last (SD 3's pipeline, which
    /// passes only the count).
    #[default]
    Training,
    /// Evenly from 1 to 1/n (FLUX's pipeline, which passes these sigmas).
    UnitToOneOverSteps,
}

fn d_base_shift() -> f64 {
    0.5
}
fn d_max_shift() -> f64 {
    1.15
}
// diffusers types the two shifts `float | None`; a null means the default.
fn or_default_base_shift<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or_else(d_base_shift))
}
fn or_default_max_shift<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or_else(d_max_shift))
}
fn d_base_image_seq_len() -> usize {
    256
}
fn d_max_image_seq_len() -> usize {
    4096
}
fn d_time_shift_type() -> String {
    "exponential".into()
}

fn d_original_steps() -> usize {
    50
}
fn d_timestep_scaling() -> f64 {
    10.0
}

fn d_two() -> usize {
    2
}
fn d_algorithm() -> String {
    "dpmsolver++".into()
}
fn d_solver_type() -> String {
    "midpoint".into()
}
fn d_final_sigmas() -> String {
    "zero".into()
}

fn d_train_steps() -> usize {
    1000
}
fn d_beta_start() -> f64 {
    0.0001
}
fn d_beta_end() -> f64 {
    0.02
}
fn d_beta_schedule() -> String {
    "linear".into()
}
fn d_prediction() -> String {
    "epsilon".into()
}
fn d_spacing() -> String {
    "leading".into()
}
fn d_true() -> bool {
    true
}
fn d_one() -> f64 {
    1.0
}
fn d_interp() -> String {
    "linear".into()
}

/// What the model predicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prediction {
    Epsilon,
    VPrediction,
    Sample,
}

/// How a number of inference steps is spread over the training timesteps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spacing {
    Leading,
    Trailing,
    Linspace,
}

/// Which timesteps to sample at: a count spread by the config's spacing, or an explicit
/// descending list (the causality-aware schedule supplies one).
#[derive(Debug, Clone, PartialEq)]
pub enum Timesteps {
    Count(usize),
    Explicit(Vec<f64>),
}

impl Timesteps {
    /// The number of steps requested.
    pub fn count(&self) -> usize {
        match self {
            Timesteps::Count(n) => *n,
            Timesteps::Explicit(list) => list.len(),
        }
    }

    /// Checks a request: a count in 1..=`most`; an explicit list of 1..=`most` finite
    /// timesteps in 0..=`latest`, strictly descending. Diffusion schedules end at timestep
    /// `num_train_timesteps - 1`, flow matching's at `num_train_timesteps` (sigma 1).
    pub(crate) fn check(&self, most: usize, latest: f64) -> Result<()> {
        let list = match self {
            Timesteps::Count(n) if (1..=most).contains(n) => return Ok(()),
            Timesteps::Count(n) => {
                return Err(Error::InvalidInput(format!(
                    "steps must be in 1..={most}, got {n}"
                )));
            }
            Timesteps::Explicit(list) => list,
        };
        if list.is_empty() || list.len() > most {
            return Err(Error::InvalidInput(format!(
                "an explicit schedule needs 1..={most} timesteps, got {}",
                list.len()
            )));
        }
        if list
            .iter()
            .any(|t| !t.is_finite() || *t < 0.0 || *t > latest)
        {
            return Err(Error::InvalidInput(format!(
                "explicit timesteps must lie in 0..={latest}"
            )));
        }
        if list.windows(2).any(|w| w[1] >= w[0]) {
            return Err(Error::InvalidInput(
                "explicit timesteps must be strictly descending".into(),
            ));
        }
        Ok(())
    }
}

/// The scheduler families this runtime implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SchedulerKind {
    Ddim,
    Euler,
    /// DPM-Solver++ multistep ("DPM++ 2M"; Karras sigmas when the config asks for them).
    #[serde(rename = "dpm++2m")]
    DpmSolverMultistep,
    /// Euler ancestral ("Euler a"): stochastic, fresh seeded noise at every step.
    #[serde(rename = "euler_a")]
    EulerAncestral,
    /// For latent consistency models (LCM-distilled UNets, LCM-LoRA): 2 to 8 steps.
    Lcm,
    /// Flow-matching Euler, for rectified-flow models (SD 3); the only one they take.
    #[serde(rename = "flow_euler")]
    FlowMatchEuler,
}

impl SchedulerKind {
    pub fn parse(name: &str) -> Result<Self> {
        match name.to_ascii_lowercase().as_str() {
            "ddim" | "ddimscheduler" => Ok(Self::Ddim),
            "euler" | "eulerdiscretescheduler" => Ok(Self::Euler),
            "dpm++2m" | "dpmpp2m" | "dpm" | "dpmsolvermultistepscheduler" => {
                Ok(Self::DpmSolverMultistep)
            }
            "euler_a" | "euler-a" | "eulerancestraldiscretescheduler" => Ok(Self::EulerAncestral),
            "lcm" | "lcmscheduler" => Ok(Self::Lcm),
            "flow_euler" | "flow-euler" | "flowmatcheulerdiscretescheduler" => {
                Ok(Self::FlowMatchEuler)
            }
            other => Err(Error::InvalidInput(format!(
                "unknown scheduler \"{other}\" (ddim, euler, euler_a, dpm++2m, lcm and flow_euler are available)"
            ))),
        }
    }

    /// Whether this scheduler samples rectified-flow models (velocity prediction along
    /// straight paths) rather than diffusion models: each family takes only its own.
    pub fn is_flow(self) -> bool {
        self == Self::FlowMatchEuler
    }

    /// The config's own class where we implement it; DDIM otherwise (SD 1.5 ships PNDM,
    /// which samples the same model equally well at these step counts).
    pub fn from_config(config: &SchedulerConfig) -> Self {
        config
            .class_name
            .as_deref()
            .and_then(|c| Self::parse(c).ok())
            .unwrap_or(Self::Ddim)
    }
}

impl SchedulerConfig {
    pub fn from_json(json: &str) -> Result<Self> {
        let c: Self = parse(CONFIG_FILE, json)?;
        let bad = |m: String| Err(Error::config(CONFIG_FILE, m));
        if c.num_train_timesteps == 0 || c.num_train_timesteps > 100_000 {
            return bad(format!(
                "`num_train_timesteps` = {} is outside 1..=100000",
                c.num_train_timesteps
            ));
        }
        c.prediction()?;
        c.spacing()?;
        if c.thresholding {
            return bad(
                "thresholding (pixel-space models' dynamic clipping) is not supported".into(),
            );
        }
        if c.interpolation_type != "linear" {
            return bad(format!(
                "unsupported `interpolation_type` {:?}",
                c.interpolation_type
            ));
        }
        c.alphas_cumprod()?;
        let flow = &c.flow;
        if !["exponential", "linear"].contains(&flow.time_shift_type.as_str()) {
            return bad(format!(
                "time_shift_type: {:?} is neither \"exponential\" nor \"linear\"",
                flow.time_shift_type
            ));
        }
        if !(flow.shift.is_finite() && flow.shift > 0.0) {
            return bad(format!("shift: {} is not a positive number", flow.shift));
        }
        if flow.use_dynamic_shifting && flow.max_image_seq_len <= flow.base_image_seq_len {
            return bad("max_image_seq_len must exceed base_image_seq_len".into());
        }
        if let Some(t) = flow.shift_terminal
            && !(0.0..1.0).contains(&t)
        {
            return bad(format!("shift_terminal: {t} is outside [0, 1)"));
        }
        Ok(c)
    }

    pub fn prediction(&self) -> Result<Prediction> {
        match self.prediction_type.as_str() {
            "epsilon" => Ok(Prediction::Epsilon),
            "v_prediction" => Ok(Prediction::VPrediction),
            "sample" => Ok(Prediction::Sample),
            other => Err(Error::config(
                CONFIG_FILE,
                format!("unsupported `prediction_type` {other:?}"),
            )),
        }
    }

    pub fn spacing(&self) -> Result<Spacing> {
        match self.timestep_spacing.as_str() {
            "leading" => Ok(Spacing::Leading),
            "trailing" => Ok(Spacing::Trailing),
            "linspace" => Ok(Spacing::Linspace),
            other => Err(Error::config(
                CONFIG_FILE,
                format!("unsupported `timestep_spacing` {other:?}"),
            )),
        }
    }

    /// The cumulative product of (1 - beta) over the training timesteps, in f32 like
    /// diffusers (whose cumulative product accumulates in f64), so that 10 steps agree with
    /// it to 1e-5. With `rescale_betas_zero_snr` the last is 0: pure noise.
    pub fn alphas_cumprod(&self) -> Result<Vec<f32>> {
        let n = self.num_train_timesteps;
        let betas: Vec<f32> = match (&self.trained_betas, self.beta_schedule.as_str()) {
            (Some(b), _) if b.len() == n => b.iter().map(|&x| x as f32).collect(),
            (Some(_), _) => {
                return Err(Error::config(
                    CONFIG_FILE,
                    "`trained_betas` length differs from num_train_timesteps",
                ));
            }
            (None, "linear") => linspace_f32(self.beta_start, self.beta_end, n),
            (None, "scaled_linear") => {
                linspace_f32(self.beta_start.sqrt(), self.beta_end.sqrt(), n)
                    .into_iter()
                    .map(|b| b * b)
                    .collect()
            }
            (None, "squaredcos_cap_v2") => {
                let alpha_bar = |t: f64| {
                    ((t + 0.008) / 1.008 * std::f64::consts::FRAC_PI_2)
                        .cos()
                        .powi(2)
                };
                (0..n)
                    .map(|i| {
                        let (t1, t2) = (i as f64 / n as f64, (i + 1) as f64 / n as f64);
                        (1.0 - alpha_bar(t2) / alpha_bar(t1)).min(0.999) as f32
                    })
                    .collect()
            }
            (None, other) => {
                return Err(Error::config(
                    CONFIG_FILE,
                    format!("unsupported `beta_schedule` {other:?}"),
                ));
            }
        };
        let betas = match self.rescale_betas_zero_snr {
            true => zero_terminal_snr(&betas),
            false => betas,
        };
        Ok(cumprod(betas.iter().map(|b| 1.0 - b)))
    }

    /// [`alphas_cumprod`](Self::alphas_cumprod) for the schedulers that work in sigmas
    /// (sqrt((1 - abar) / abar)): with zero terminal SNR the last is 2^-24 rather than 0, so
    /// that the first sigma is 4096, not infinite, as diffusers' Euler and DPM-Solver keep it.
    pub fn sigma_alphas_cumprod(&self) -> Result<Vec<f32>> {
        let mut alphas = self.alphas_cumprod()?;
        if self.rescale_betas_zero_snr
            && let Some(last) = alphas.last_mut()
        {
            *last = (2f32).powi(-24);
        }
        Ok(alphas)
    }

    /// Timesteps for `count` steps with the config's spacing, descending, exactly as
    /// diffusers' `set_timesteps` computes them. Only "linspace" differs between schedulers:
    /// DDIM rounds it to integers, Euler keeps the fractions (`round_linspace`).
    pub fn spaced_timesteps(&self, count: usize, round_linspace: bool) -> Result<Vec<f64>> {
        let t = self.num_train_timesteps;
        if count == 0 || count > t {
            return Err(Error::InvalidInput(format!(
                "steps must be in 1..={t}, got {count}"
            )));
        }
        let steps: Vec<f64> = match self.spacing()? {
            Spacing::Linspace => {
                let last = (t - 1) as f64;
                let step = if count > 1 {
                    last / (count - 1) as f64
                } else {
                    0.0
                };
                (0..count)
                    .rev()
                    .map(|i| {
                        if i + 1 == count && count > 1 {
                            last
                        } else {
                            i as f64 * step
                        }
                    })
                    .map(|x| {
                        if round_linspace {
                            x.round_ties_even()
                        } else {
                            x
                        }
                    })
                    .collect()
            }
            Spacing::Leading => {
                let ratio = t / count;
                (0..count)
                    .rev()
                    .map(|i| (i * ratio + self.steps_offset) as f64)
                    .collect()
            }
            Spacing::Trailing => {
                let ratio = t as f64 / count as f64;
                (0..count)
                    .map(|i| (t as f64 - i as f64 * ratio).round_ties_even() - 1.0)
                    .collect()
            }
        };
        Ok(steps)
    }

    /// Resolves a [`Timesteps`] request: checks an explicit list is strictly descending and
    /// within the training range.
    pub fn resolve(&self, request: &Timesteps, round_linspace: bool) -> Result<Vec<f64>> {
        match request {
            Timesteps::Count(n) => self.spaced_timesteps(*n, round_linspace),
            Timesteps::Explicit(list) => {
                let n = self.num_train_timesteps;
                request.check(n, (n - 1) as f64)?;
                Ok(list.clone())
            }
        }
    }
}

/// Variance-preserving noising at a training timestep: `sqrt(abar) x0 + sqrt(1 - abar) e`.
pub(crate) fn vp_noise(
    alphas_cumprod: &[f32],
    t: f64,
    original: Tensor<4>,
    noise: Tensor<4>,
) -> Tensor<4> {
    let a = alphas_cumprod[(t.round() as usize).min(alphas_cumprod.len() - 1)] as f64;
    original.mul_scalar(a.sqrt()) + noise.mul_scalar((1.0 - a).sqrt())
}

/// Karras et al.'s `count` noise levels (rho = 7) from `first` down to `last`, evenly spaced
/// in `sigma^(1/7)`: the "Karras" schedules of Euler, DPM-Solver and flow matching.
pub(super) fn karras_sigmas(first: f64, last: f64, count: usize) -> Vec<f64> {
    let rho = 7.0;
    let (hi, lo) = (first.powf(1.0 / rho), last.powf(1.0 / rho));
    (0..count)
        .map(|i| {
            let ramp = match count {
                1 => 0.0,
                _ => i as f64 / (count - 1) as f64,
            };
            (hi + ramp * (lo - hi)).powf(rho)
        })
        .collect()
}

/// The fractional training timestep whose log-sigma is `log(sigma)`, interpolated in the
/// training schedule's log-sigmas `log_train` (f32 values, ascending with the timestep), as
/// diffusers' `_sigma_to_t`, whose interval width is an f32 difference.
pub(super) fn sigma_to_t(sigma: f64, log_train: &[f64]) -> f64 {
    let ls = sigma.max(1e-10).ln();
    let n = log_train.len();
    let low = log_train
        .iter()
        .rposition(|&l| ls - l >= 0.0)
        .unwrap_or(0)
        .min(n - 2);
    let (lo, hi) = (log_train[low], log_train[low + 1]);
    let width = (lo as f32 - hi as f32) as f64;
    let w = ((lo - ls) / width).clamp(0.0, 1.0);
    (1.0 - w) * low as f64 + w * (low + 1) as f64
}

/// Running products in f64, each rounded to f32, as torch's `cumprod` of f32 values gives them.
fn cumprod(values: impl Iterator<Item = f32>) -> Vec<f32> {
    let mut acc = 1f64;
    values
        .map(|v| {
            acc *= v as f64;
            acc as f32
        })
        .collect()
}

/// Betas rescaled to zero terminal SNR (Lin et al. 2023, "Common Diffusion Noise Schedules
/// and Sample Steps are Flawed"; diffusers' `rescale_zero_terminal_snr`): sqrt(abar) shifted
/// so that its last value is 0 and scaled so that its first is kept, then turned back into
/// betas; in f32, step by step as diffusers computes it. The last beta becomes 1.
fn zero_terminal_snr(betas: &[f32]) -> Vec<f32> {
    let mut root: Vec<f32> = cumprod(betas.iter().map(|b| 1.0 - b))
        .into_iter()
        .map(f32::sqrt)
        .collect();
    let (first, last) = (root[0], root[root.len() - 1]);
    let scale = first / (first - last);
    for r in &mut root {
        *r = (*r - last) * scale;
    }
    let abar: Vec<f32> = root.iter().map(|r| r * r).collect();
    std::iter::once(abar[0])
        .chain(abar.windows(2).map(|w| w[1] / w[0]))
        .map(|alpha| 1.0 - alpha)
        .collect()
}

/// numpy/torch-style linspace evaluated in f64 and rounded to f32.
fn linspace_f32(start: f64, end: f64, n: usize) -> Vec<f32> {
    if n == 1 {
        return vec![start as f32];
    }
    let step = (end - start) / (n - 1) as f64;
    (0..n).map(|i| (start + step * i as f64) as f32).collect()
}

/// One scheduler step's result.
pub struct StepOutput {
    pub prev_sample: Tensor<4>,
    /// The model's current estimate of the clean latents (x0).
    pub pred_original: Tensor<4>,
}

/// A step that is affine in the sample and the model's output, up to a clamp of the clean
/// estimate: DDIM's, and Euler's without noise. Written as coefficients, the step runs with
/// the guidance combine as one fused kernel on a GPU (`kernels::guided_step`) and as burn's
/// operations elsewhere ([`AffineStep::apply`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AffineStep {
    /// The clean estimate: `x0 = sample * x0[0] + model * x0[1]`, then clamped to
    /// `[-clip, clip]` where `clip` is set.
    pub x0: [f64; 2],
    pub clip: Option<f64>,
    /// The noise estimate, from the unclamped values: `eps = sample * eps[0] + model * eps[1]`.
    pub eps: [f64; 2],
    /// The step's result: `prev = x0 * prev[0] + eps * prev[1]`.
    pub prev: [f64; 2],
}

impl AffineStep {
    /// The step composed from burn's operations (zero terms and unit factors skipped).
    pub fn apply(&self, model: Tensor<4>, sample: Tensor<4>) -> StepOutput {
        let scaled = |t: Tensor<4>, f: f64| if f == 1.0 { t } else { t.mul_scalar(f) };
        let mix = |[a, b]: [f64; 2], first: &Tensor<4>, second: &Tensor<4>| match (a, b) {
            (a, 0.0) => scaled(first.clone(), a),
            (0.0, b) => scaled(second.clone(), b),
            (a, b) => scaled(first.clone(), a) + scaled(second.clone(), b),
        };
        let mut x0 = mix(self.x0, &sample, &model);
        if let Some(range) = self.clip {
            x0 = x0.clamp(-range, range);
        }
        let eps = mix(self.eps, &sample, &model);
        StepOutput {
            prev_sample: mix(self.prev, &x0, &eps),
            pred_original: x0,
        }
    }
}

/// Where stochastic schedulers (ancestral samplers, LCM) draw fresh noise at a step.
pub trait Noise {
    /// Unit Gaussian noise shaped like `like`, for step `step`.
    fn draw(&mut self, step: usize, like: &Tensor<4>) -> Tensor<4>;
}

/// Noise from the project's seeded generator: step `i`'s noise is a pure function of the
/// seed and `i`, the same natively and in the browser, and independent of the initial noise.
pub struct SeededNoise {
    pub seed: u64,
}

impl Noise for SeededNoise {
    fn draw(&mut self, step: usize, like: &Tensor<4>) -> Tensor<4> {
        let dims = like.dims();
        let mut mix = crate::rng::Rng::new(self.seed ^ 0x6e6f_6973_6500_0000);
        let stream = mix.next_u64().wrapping_add(step as u64);
        let values = crate::rng::Rng::new(stream).normals(dims.iter().product());
        Tensor::from_data(burn::tensor::TensorData::new(values, dims), &like.device())
    }
}

/// The scheduler interface the sampler drives, by step index.
pub trait Scheduler {
    fn timesteps(&self) -> &[f64];
    /// The standard deviation to scale unit Gaussian initial latents by: 1 for the
    /// variance-preserving schedulers, the largest sigma (or so) for Euler's.
    fn init_noise_sigma(&self) -> f64 {
        1.0
    }
    /// What the model is fed at `step`: the sample itself, except for sigma-space schedulers.
    fn scale_model_input(&self, sample: Tensor<4>, _step: usize) -> Tensor<4> {
        sample
    }
    /// Noises clean latents to the level the sampler expects at `step` (img2img starts
    /// there; inpainting re-noises the kept region to each step's level).
    fn add_noise(&self, original: Tensor<4>, noise: Tensor<4>, step: usize) -> Tensor<4>;
    /// Step `step` as an [`AffineStep`], for schedulers whose step is one and leaves no
    /// state behind; the sampler then takes it in one fused kernel with the guidance combine
    /// where it can.
    fn affine(&self, _step: usize) -> Option<AffineStep> {
        None
    }
    /// Takes step `step`; multistep schedulers remember what they need for the next one.
    fn step(
        &mut self,
        model_output: Tensor<4>,
        step: usize,
        sample: Tensor<4>,
        noise: &mut dyn Noise,
    ) -> StepOutput;
}

/// Builds the chosen scheduler for a request. `image_tokens`, the patches (latent cells) a
/// flow transformer sees, sets the shift of schedules that depend on the image's size.
pub fn build(
    kind: SchedulerKind,
    config: &SchedulerConfig,
    request: &Timesteps,
    image_tokens: Option<usize>,
) -> Result<Box<dyn Scheduler + Send + Sync>> {
    Ok(match kind {
        SchedulerKind::Ddim => Box::new(Ddim::new(config, request)?),
        SchedulerKind::Euler => Box::new(Euler::new(config, request)?),
        SchedulerKind::DpmSolverMultistep => Box::new(DpmSolver::new(config, request)?),
        SchedulerKind::EulerAncestral => Box::new(EulerAncestral::new(config, request)?),
        SchedulerKind::Lcm => Box::new(Lcm::new(config, request)?),
        SchedulerKind::FlowMatchEuler => {
            Box::new(FlowMatchEuler::new(config, request, image_tokens)?)
        }
    })
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;

    #[test]
    fn seeded_noise_is_a_function_of_seed_and_step() {
        let device = crate::device::cpu();
        let like = Tensor::<4>::zeros([1, 2, 3, 3], &device);
        let draw = |seed, step| {
            SeededNoise { seed }
                .draw(step, &like)
                .into_data()
                .try_to_vec::<f32>()
                .unwrap()
        };
        assert_eq!(draw(1, 0), draw(1, 0));
        assert_ne!(draw(1, 0), draw(1, 1));
        assert_ne!(draw(1, 0), draw(2, 0));
        // Not the seed's initial noise, which the sampler draws from Rng::new(seed).
        assert_ne!(draw(1, 0), crate::rng::Rng::new(1).normals(18));
    }
}
