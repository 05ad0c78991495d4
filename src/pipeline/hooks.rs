//! What interventions see and change at each step: the model call about to run, the step's
//! state after it, and the hook that receives both.

use std::future::Future;
use std::pin::Pin;

use burn::tensor::Tensor;

use super::sampling::Sampling;
use crate::error::Result;
use crate::models::attention_control::{AttentionRecord, CrossAttentionControl};

/// What the model is about to be called with; a hook may change any of it for this step.
pub struct ModelCall {
    pub step: usize,
    pub timestep: f64,
    /// The latents fed to the model (before the scheduler's input scaling). Changing them
    /// changes the prediction only; the scheduler still steps from the sampler's latents.
    pub latents: Tensor<4>,
    /// Text conditioning, [uncond; cond] when guidance is on, else [cond].
    pub context: Tensor<3>,
    pub guidance_scale: f64,
    /// Extra conditionings that guide only inside regions of the latents (see
    /// [`RegionTerm`]); they join the same batched model call.
    pub regions: Vec<RegionTerm>,
    /// What the UNet's cross-attention layers do in the conditional row: a bias per text
    /// token and latent cell, a record of where each token is attended
    /// ([`CrossAttentionControl`]). The bias is [T, h, w]: the context's length and the
    /// latents' size.
    pub attention: CrossAttentionControl,
    /// Whether the model sees this call's scene mirrored left to right: its input and
    /// attention bias are flipped on the way in, its prediction and attention record on the
    /// way out. Everything a hook gives or reads stays in the sampler's frame, so a hook that
    /// also gives the mirrored scene's text (left and right swapped) has the model draw the
    /// mirror image of a scene it may know better, and the sampler keeps the scene as asked.
    pub mirrored: bool,
}

/// Guidance toward (or, with a negative weight, away from) another text conditioning,
/// restricted to a region: the noise prediction gains `weight * mask * (e_r - e_ref)`, where
/// `e_r` is the prediction under `context` and `e_ref` the unconditional prediction (the
/// conditional one when classifier-free guidance is off).
#[derive(Clone)]
pub struct RegionTerm {
    /// [1, L, D], as [`StableDiffusion::encode_text`](super::StableDiffusion::encode_text)
    /// gives it.
    pub context: Tensor<3>,
    /// [1, 1, h, w] at the latents' size, with values in [0, 1].
    pub mask: Tensor<4>,
    pub weight: f64,
}

/// The state after a step; a hook may replace the latents.
pub struct StepState {
    pub step: usize,
    pub steps: usize,
    pub timestep: f64,
    pub latents: Tensor<4>,
    pub pred_original: Tensor<4>,
    /// The step's cross-attention record, [T, h, w], where a hook asked for one
    /// ([`ModelCall::attention`]).
    pub attention: Option<AttentionRecord>,
}

/// What [`StepHook::between_steps`] returns: work that may await (a decode, a read-back, a
/// page's paint). Boxed because hooks are trait objects.
pub type StepFuture<'a> = Pin<Box<dyn Future<Output = Result<()>> + 'a>>;

/// A per-step hook: interventions, progress reporting, previews. The sampling loop
/// ([`Sampling::run`]) calls `before_model` before each UNet call, `after_step` once the
/// scheduler has stepped, then awaits `between_steps` with the whole sampler in hand.
pub trait StepHook {
    fn before_model(&mut self, _call: &mut ModelCall) -> Result<()> {
        Ok(())
    }
    fn after_step(&mut self, _state: &mut StepState) -> Result<()> {
        Ok(())
    }
    /// Asynchronous work between two steps. Hooks that need the GPU's results (a decoded
    /// preview, a repair that reads the prediction) or the host's attention (a page's
    /// progress callback) do it here, so one loop serves native code, the browser and
    /// every intervention.
    fn between_steps<'a>(&'a mut self, _sampling: &'a mut Sampling<'_>) -> StepFuture<'a> {
        Box::pin(std::future::ready(Ok(())))
    }
}

/// The hook that does nothing.
pub struct NoHook;
impl StepHook for NoHook {}

/// Several hooks, applied in order.
#[derive(Default)]
pub struct Hooks(pub Vec<Box<dyn StepHook>>);

impl StepHook for Hooks {
    fn before_model(&mut self, call: &mut ModelCall) -> Result<()> {
        self.0.iter_mut().try_for_each(|h| h.before_model(call))
    }
    fn after_step(&mut self, state: &mut StepState) -> Result<()> {
        self.0.iter_mut().try_for_each(|h| h.after_step(state))
    }
    fn between_steps<'a>(&'a mut self, sampling: &'a mut Sampling<'_>) -> StepFuture<'a> {
        Box::pin(async move {
            for h in self.0.iter_mut() {
                h.between_steps(sampling).await?;
            }
            Ok(())
        })
    }
}

/// Two borrowed hooks, the first applied first: interventions and a caller's own hook.
impl<A: StepHook + ?Sized, B: StepHook + ?Sized> StepHook for (&mut A, &mut B) {
    fn before_model(&mut self, call: &mut ModelCall) -> Result<()> {
        self.0.before_model(call)?;
        self.1.before_model(call)
    }
    fn after_step(&mut self, state: &mut StepState) -> Result<()> {
        self.0.after_step(state)?;
        self.1.after_step(state)
    }
    fn between_steps<'a>(&'a mut self, sampling: &'a mut Sampling<'_>) -> StepFuture<'a> {
        Box::pin(async move {
            self.0.between_steps(sampling).await?;
            self.1.between_steps(sampling).await
        })
    }
}
