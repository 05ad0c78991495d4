//! The denoising loop as a value the caller advances one step at a time, and what
//! interventions see and change at each step: the model call about to run, the step's state
//! after it, and the hook that receives both. (One module: a hook is handed the loop, and the
//! loop runs the hooks.)

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use burn::tensor::Tensor;

use super::{Generated, SkipLayerGuidance, StableDiffusion, Warning};
use crate::error::{Error, Result};
use crate::image::Image;
use crate::kernels;
use crate::models::attention_control::{AttentionRecord, CrossAttentionControl};
use crate::models::unet::UNetAdditions;
use crate::schedulers::{Noise, Scheduler, SeededNoise, StepOutput};

/// What the model is about to be called with; a hook may change any of it for this step.
pub struct ModelCall {
    pub step: usize,
    pub timestep: f64,
    /// The latents fed to the model (before the scheduler's input scaling). Changing them
    /// changes the prediction only; the scheduler still steps from the sampler's latents.
    pub latents: Tensor<4>,
    /// Text conditioning, `[uncond; cond]` when guidance is on, else `[cond]`.
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

/// What img2img and inpainting start from.
pub(super) struct Init {
    /// The init image's clean latents, scaled as the sampler holds them.
    pub(super) latents: Tensor<4>,
    /// The noise it was noised with (inpainting re-noises the kept region with it).
    pub(super) noise: Tensor<4>,
    /// [1, C, h, w]: 1 where the latents are regenerated, 0 where the init image is kept.
    /// Only for models that take plain latents; they inpaint by blending after each step.
    pub(super) mask: Option<Tensor<4>>,
}

/// The UNet's noise prediction for a step, before the guidance combine.
struct NoiseEstimate {
    /// [uncond; cond] halves when `guidance` is set, else the prediction itself.
    output: Tensor<4>,
    /// The classifier-free guidance scale.
    guidance: Option<f64>,
    /// How far the guided prediction's spread is brought back to the conditional one's
    /// ([`GenerateOptions::guidance_rescale`](super::GenerateOptions::guidance_rescale)), 0
    /// for not at all.
    rescale: f64,
}

impl NoiseEstimate {
    /// The guided prediction: `uncond + scale * (cond - uncond)`, rescaled where asked.
    fn guided(self) -> Tensor<4> {
        let Some(scale) = self.guidance else {
            return self.output;
        };
        let [uncond, cond] = <[Tensor<4>; 2]>::try_from(self.output.chunk(2, 0))
            .unwrap_or_else(|_| unreachable!("a guided estimate holds two halves"));
        let guided = uncond.clone() + (cond.clone() - uncond).mul_scalar(scale);
        match self.rescale > 0.0 {
            true => rescale_guidance(guided, cond, self.rescale),
            false => guided,
        }
    }
}

/// Guidance rescale (Lin et al. 2023, section 3.4; diffusers' `rescale_noise_cfg`): a strong
/// guidance scale inflates the prediction's spread, which at zero terminal SNR overexposes
/// the image; the guided prediction scaled to the conditional one's standard deviation (over
/// all its values, with n - 1 as torch's `std`) is mixed back in by `amount`.
fn rescale_guidance(guided: Tensor<4>, cond: Tensor<4>, amount: f64) -> Tensor<4> {
    let std = |t: Tensor<4>| {
        let n = t.shape().num_elements();
        let flat = t.reshape([1, n]);
        let centred = flat.clone() - flat.mean_dim(1);
        centred
            .powi_scalar(2)
            .sum_dim(1)
            .div_scalar((n - 1) as f64)
            .sqrt()
            .reshape([1, 1, 1, 1])
    };
    let rescaled = guided.clone() * (std(cond) / std(guided.clone()));
    rescaled.mul_scalar(amount) + guided.mul_scalar(1.0 - amount)
}

/// Shared flag that stops a generation between two steps.
#[derive(Clone, Default)]
pub struct CancelToken(Arc<AtomicBool>);

impl CancelToken {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// Where a run's stochastic steps draw their noise.
pub(super) enum StepNoise {
    Seeded(SeededNoise),
    /// The caller's: one block per step that runs, from step `first` on (checked against
    /// the run's steps and latents when the run starts).
    Given {
        values: Vec<f32>,
        first: usize,
    },
}

impl Noise for StepNoise {
    fn draw(&mut self, step: usize, like: &Tensor<4>) -> Tensor<4> {
        match self {
            StepNoise::Seeded(seeded) => seeded.draw(step, like),
            StepNoise::Given { values, first } => {
                let dims = like.dims();
                let block = dims.iter().product::<usize>();
                let at = step.saturating_sub(*first) * block;
                // The length was checked at the start; a scheduler that asked past the run
                // would get zeros, never a panic.
                let slice = values
                    .get(at..at + block)
                    .map_or_else(|| vec![0.0; block], <[f32]>::to_vec);
                Tensor::from_data(burn::tensor::TensorData::new(slice, dims), &like.device())
            }
        }
    }
}

/// One generation in progress.
pub struct Sampling<'p> {
    pub(super) pipe: &'p StableDiffusion,
    pub(super) scheduler: Box<dyn Scheduler + Send + Sync>,
    /// Fresh noise for stochastic schedulers: the seed's, or the caller's.
    pub(super) noise: StepNoise,
    pub(super) context: Tensor<3>,
    pub(super) guidance_scale: f64,
    /// [`GenerateOptions::guidance_rescale`](super::GenerateOptions::guidance_rescale).
    pub(super) guidance_rescale: f64,
    pub(super) latents: Tensor<4>,
    pub(super) step: usize,
    /// The step the run stops before: the schedule's length, or fewer where it hands its
    /// latents over ([`GenerateOptions::denoising_end`](super::GenerateOptions::denoising_end)).
    pub(super) end: usize,
    /// Whether [`Sampling::finish`] gives the latents too.
    pub(super) hands_over: bool,
    /// img2img or inpainting's start.
    pub(super) init: Option<Init>,
    /// What the denoiser takes beside the latents
    /// ([`ImageCondition`](crate::models::denoiser::ImageCondition)), [1, C', h, w]:
    /// an inpainting model's mask and masked image, a control image's latents.
    pub(super) condition: Option<Tensor<4>>,
    /// FLUX.1 Kontext's reference image as latents [1, C, h', w'].
    pub(super) reference: Option<Tensor<4>>,
    /// What the UNet adds to its time embedding, one row per context row (see
    /// [`UNet::forward_with`](crate::models::unet::UNet::forward_with)): LCM's guidance
    /// embedding, SDXL's pooled text and size.
    pub(super) added: Option<Tensor<2>>,
    /// The scheduler's latest prediction of the clean latents, for previews.
    pub(super) predicted_clean: Option<Tensor<4>>,
    /// Things the user should know (a truncated prompt).
    pub warnings: Vec<Warning>,
    /// UNet evaluations so far (batch rows).
    pub(super) evaluations: usize,
    /// Skip-layer guidance, where the options ask for it and guidance is on.
    pub(super) skip_layers: Option<SkipLayerGuidance>,
    /// Each loaded ControlNet's part in this run, in their order.
    pub(super) controlnets: Vec<ControlNetRun>,
    /// A loaded T2I-Adapter's part in this run, where one is loaded.
    pub(super) adapter: Option<AdapterRun>,
}

/// What a loaded ControlNet follows in one run, and how: the control image as a [1, 3, H, W]
/// tensor in [0, 1] (as diffusers' pipelines give it), the scale of its additions and the
/// window of the schedule it acts in
/// ([`ControlNetInput`](super::ControlNetInput)).
pub(super) struct ControlNetRun {
    pub(super) image: Tensor<4>,
    /// The image's embedding, made once for the run
    /// ([`ControlNet::embed_image`](crate::models::controlnet::ControlNet::embed_image)); a
    /// mirrored call embeds the mirrored image instead.
    pub(super) condition: Tensor<4>,
    pub(super) scale: f64,
    pub(super) window: (f64, f64),
    /// The run's first step (img2img's and a handoff's start later than the schedule's):
    /// the window spans the steps the run takes, as diffusers' img2img pipelines count them.
    pub(super) first: usize,
    /// Diffusers' guess mode ([`GenerateOptions::controlnet_guess_mode`](super::GenerateOptions::controlnet_guess_mode)),
    /// asked for or forced by a ControlNet that pools its outputs.
    pub(super) guess: bool,
}

/// What a loaded T2I-Adapter follows in one run: the control image as a [1, 3, H, W] tensor
/// in [0, 1], its scale, and its feature maps, made once for the run (they depend on the
/// image alone), [1, C_i, h_i, w_i], one per down block it reaches.
pub(super) struct AdapterRun {
    pub(super) image: Tensor<4>,
    pub(super) scale: f64,
    pub(super) features: Vec<Tensor<4>>,
}

impl ControlNetRun {
    /// Whether it acts in step `step` of a schedule of `steps`: diffusers' `controlnet_keep`,
    /// over the steps from the run's first.
    fn acts_at(&self, step: usize, steps: usize) -> bool {
        let i = step.saturating_sub(self.first) as f64;
        let n = steps.saturating_sub(self.first).max(1) as f64;
        let (start, end) = self.window;
        i / n >= start && (i + 1.0) / n <= end
    }
}

impl Sampling<'_> {
    pub fn timesteps(&self) -> &[f64] {
        self.scheduler.timesteps()
    }
    pub fn steps(&self) -> usize {
        self.timesteps().len()
    }
    /// Steps taken so far.
    pub fn current_step(&self) -> usize {
        self.step
    }
    pub fn is_done(&self) -> bool {
        self.step >= self.end
    }
    pub fn latents(&self) -> &Tensor<4> {
        &self.latents
    }
    pub fn pipe(&self) -> &StableDiffusion {
        self.pipe
    }
    /// UNet evaluations so far, one per batch row per call.
    pub fn evaluations(&self) -> usize {
        self.evaluations
    }
    /// The latest step's prediction of the clean latents.
    pub fn predicted_clean(&self) -> Option<&Tensor<4>> {
        self.predicted_clean.as_ref()
    }

    /// Moves the prediction of the clean latents by `delta`, and the sample by the same
    /// change at the next step's noise level (`add_noise` of `delta` with no noise: `√ᾱ·Δ`
    /// for the variance-preserving schedulers, `Δ` for Euler's), as if the model had
    /// predicted it. Latent-space repairs act through this.
    pub fn shift_clean(&mut self, delta: Tensor<4>) {
        if self.is_done() {
            return;
        }
        let zeros = delta.zeros_like();
        let shift = self.scheduler.add_noise(delta.clone(), zeros, self.step);
        self.latents = self.latents.clone() + shift;
        self.predicted_clean = self.predicted_clean.take().map(|x0| x0 + delta);
    }

    /// Takes one denoising step.
    pub fn step(&mut self, hook: &mut dyn StepHook) -> Result<()> {
        if self.is_done() {
            return Err(Error::InvalidInput(
                "the sampling is already finished".into(),
            ));
        }
        let step = self.step;
        let timestep = self.timesteps()[step];
        let mut call = ModelCall {
            step,
            timestep,
            latents: self.latents.clone(),
            context: self.context.clone(),
            guidance_scale: self.guidance_scale,
            regions: Vec::new(),
            attention: CrossAttentionControl::default(),
            mirrored: false,
        };
        hook.before_model(&mut call)?;
        let rows = call.context.dims()[0];
        let skipping = self.skip_layers_at(step, rows).is_some();
        self.evaluations += rows + call.regions.len() + usize::from(skipping);
        let (estimate, attention) = self.predict_noise(call)?;
        let out = self.scheduler_step(estimate, step);
        let mut state = StepState {
            step,
            steps: self.steps(),
            timestep,
            latents: out.prev_sample,
            pred_original: out.pred_original,
            attention,
        };
        hook.after_step(&mut state)?;
        self.latents = state.latents;
        self.predicted_clean = Some(state.pred_original);
        if let Some(Init {
            latents: kept,
            noise,
            mask: Some(mask),
            ..
        }) = &self.init
        {
            // Inpainting: outside the mask, the init image noised to the next step's level.
            let kept = if step + 1 < self.steps() {
                self.scheduler
                    .add_noise(kept.clone(), noise.clone(), step + 1)
            } else {
                kept.clone()
            };
            let inverse = mask.clone().neg().add_scalar(1.0);
            self.latents = self.latents.clone() * mask.clone() + kept * inverse;
        }
        self.step += 1;
        Ok(())
    }

    /// The scheduler's step on the guided prediction: with the guidance combine in one fused
    /// kernel where the step is affine and the device runs the kernels, burn's operations
    /// otherwise.
    fn scheduler_step(&mut self, estimate: NoiseEstimate, step: usize) -> StepOutput {
        let sample = self.latents.clone();
        match self.scheduler.affine(step) {
            // The fused kernel combines the halves alone: a rescale needs their spreads.
            Some(affine)
                if (estimate.rescale == 0.0 || estimate.guidance.is_none())
                    && self
                        .pipe
                        .kernels
                        .fused_for(&sample.device(), sample.dtype()) =>
            {
                kernels::guided_step(estimate.output, estimate.guidance, sample, &affine)
            }
            Some(affine) => affine.apply(estimate.guided(), sample),
            None => self
                .scheduler
                .step(estimate.guided(), step, sample, &mut self.noise),
        }
    }

    /// Skip-layer guidance, where it acts at `step` with a batch of `rows` context rows (it
    /// needs the conditional and unconditional rows of classifier-free guidance).
    fn skip_layers_at(&self, step: usize, rows: usize) -> Option<&SkipLayerGuidance> {
        self.skip_layers
            .as_ref()
            .filter(|s| rows == 2 && s.acts_at(step, self.steps()))
    }

    /// Skip-layer guidance's term, `scale · (cond − skipped)`: `skipped` is the transformer's
    /// prediction for the conditional row (`input`, `context` and the pooled text) with the
    /// guidance's layers passed over, in the mirrored frame where the model call ran in it.
    /// The skipped call runs without the step's attention control (LINA's, which diffusers
    /// has no counterpart of), so the difference keeps what the control did to the
    /// conditional prediction.
    fn skip_layer_term(
        &self,
        skip: &SkipLayerGuidance,
        (input, timestep): (Tensor<4>, f64),
        context: &Tensor<3>,
        cond: Tensor<4>,
        mirrored: bool,
    ) -> Result<Tensor<4>> {
        let (Some(mmdit), Some(pooled)) = (self.pipe.denoiser.mmdit(), self.added.as_ref()) else {
            return Err(Error::InvalidInput(
                "skip-layer guidance needs a transformer (SD 3) and its pooled text".into(),
            ));
        };
        // The conditional row's: the last of [uncond; cond].
        let rows = pooled.dims()[0];
        let pooled = pooled.clone().narrow(0, rows - 1, 1);
        let frame = |t: Tensor<4>| if mirrored { t.flip([3]) } else { t };
        let skipped =
            frame(mmdit.forward_skipping(frame(input), timestep, context, &pooled, &skip.layers));
        Ok((cond - skipped).mul_scalar(skip.scale))
    }

    /// One batched model call for the base conditioning and every region term. Without
    /// region terms or skip-layer guidance the guidance combine is left to the step; with
    /// them it is done here. Also gives the call's cross-attention record, where the call
    /// asks for one.
    fn predict_noise(&self, call: ModelCall) -> Result<(NoiseEstimate, Option<AttentionRecord>)> {
        let input = self.scheduler.scale_model_input(call.latents, call.step);
        let base = call.context.dims()[0];
        // Skip-layer guidance calls the model once more on the conditional row alone.
        let skip = self.skip_layers_at(call.step, base).map(|skip| {
            let cond_row = |t: Tensor<3>| t.narrow(0, base - 1, 1);
            (skip, input.clone(), cond_row(call.context.clone()))
        });
        let [_, c, h, w] = input.dims();
        // A ControlNet reads the latents alone.
        let latents_only = input.clone();
        // An inpainting model also takes the mask and the masked image's latents; FLUX's
        // Canny and Depth the control image's.
        let input = match &self.condition {
            Some(extra) => Tensor::cat(vec![input, extra.clone()], 1),
            None => input,
        };
        let mut contexts = vec![call.context];
        for (i, r) in call.regions.iter().enumerate() {
            let (cd, md) = (r.context.dims(), r.mask.dims());
            if cd[0] != 1 || cd[1..] != contexts[0].dims()[1..] || md != [1, 1, h, w] {
                return Err(Error::InvalidInput(format!(
                    "region term {i}: context {cd:?} or mask {md:?} does not fit latents [1, {c}, {h}, {w}]"
                )));
            }
            if !r.weight.is_finite() {
                return Err(Error::InvalidInput(format!(
                    "region term {i}: weight is not finite"
                )));
            }
            contexts.push(r.context.clone());
        }
        if let Some(bias) = &call.attention.bias {
            let tokens = contexts[0].dims()[1];
            if bias.dims() != [tokens, h, w] {
                return Err(Error::InvalidInput(format!(
                    "attention bias {:?} does not fit {tokens} text tokens over latents {h}x{w}",
                    bias.dims()
                )));
            }
        }
        let batch = base + call.regions.len();
        let batched = |t: Tensor<4>| match batch {
            1 => t,
            _ => Tensor::cat(vec![t; batch], 0),
        };
        let inputs = batched(input);
        let context = if contexts.len() == 1 {
            contexts.pop().expect("one context")
        } else {
            Tensor::cat(contexts, 0)
        };
        // Region terms' rows take the conditional row's.
        let added = self.added.as_ref().map(|rows| match call.regions.len() {
            0 => rows.clone(),
            n => Tensor::cat(
                vec![
                    rows.clone(),
                    rows.clone().narrow(0, base - 1, 1).repeat_dim(0, n),
                ],
                0,
            ),
        });
        // Every ControlNet acting at this step adds to the UNet (several, their sum), having
        // seen every row's latents, text and its control image in the frame the UNet sees.
        let frame = |t: Tensor<4>| if call.mirrored { t.flip([3]) } else { t };
        let mut residuals: Option<UNetAdditions> = None;
        let nets = self.pipe.controlnets().iter().zip(&self.controlnets);
        for (net, run) in nets.filter(|(_, run)| run.acts_at(call.step, self.steps())) {
            // In guess mode with guidance the unconditional row gets nothing: the
            // ControlNet runs on the other rows alone.
            let skip = usize::from(run.guess && base == 2);
            let rows = |t: Tensor<4>| batched(t).narrow(0, skip, batch - skip);
            let condition = match call.mirrored {
                true => net.embed_image(run.image.clone().flip([3])),
                false => run.condition.clone(),
            };
            let mut more = net.forward(
                frame(rows(latents_only.clone())),
                call.timestep,
                &context.clone().narrow(0, skip, batch - skip),
                added
                    .clone()
                    .map(|a| a.narrow(0, skip, batch - skip))
                    .as_ref(),
                rows(condition),
                (run.scale, run.guess),
            )?;
            if skip == 1 {
                more.prepend_zero_row();
            }
            residuals = Some(match residuals {
                Some(sum) => sum.plus(more),
                None => more,
            });
        }
        // A T2I-Adapter's features join every row of every step, as diffusers adds them; a
        // mirrored call takes the mirrored image's.
        if let (Some(adapter), Some(run)) = (self.pipe.t2i_adapter(), &self.adapter) {
            let features = match call.mirrored {
                true => adapter.forward(run.image.clone().flip([3]), run.scale)?,
                false => run.features.clone(),
            };
            let adapter = UNetAdditions {
                intrablock: features.into_iter().map(batched).collect(),
                ..UNetAdditions::default()
            };
            residuals = Some(match residuals {
                Some(sum) => sum.plus(adapter),
                None => adapter,
            });
        }
        // The control acts on the conditional row: the second of [uncond; cond], else the
        // only one; the region terms' rows keep their own attention.
        let (out, record) = if call.mirrored {
            let control = CrossAttentionControl {
                bias: call.attention.bias.clone().map(|b| b.flip([2])),
                record: call.attention.record,
            };
            let reference = self.reference.as_ref().map(|r| r.clone().flip([3]));
            let (out, record) = self.pipe.denoiser.forward_controlled(
                inputs.flip([3]),
                call.timestep,
                &context,
                added.as_ref(),
                reference.as_ref(),
                &control,
                base - 1,
                residuals.as_ref(),
            );
            (out.flip([3]), record.map(|r| r.flip([2])))
        } else {
            self.pipe.denoiser.forward_controlled(
                inputs,
                call.timestep,
                &context,
                added.as_ref(),
                self.reference.as_ref(),
                &call.attention,
                base - 1,
                residuals.as_ref(),
            )
        };
        let guidance = (base == 2).then_some(call.guidance_scale);
        if call.regions.is_empty() && skip.is_none() {
            return Ok((
                NoiseEstimate {
                    output: out,
                    guidance,
                    rescale: self.guidance_rescale,
                },
                record,
            ));
        }
        let mut pred = NoiseEstimate {
            output: out.clone().narrow(0, 0, base),
            guidance,
            rescale: self.guidance_rescale,
        }
        .guided();
        // Each region term pulls the guided prediction toward its own, measured from the
        // first (unconditional, or only) prediction.
        let reference = out.clone().narrow(0, 0, 1);
        for (i, r) in call.regions.iter().enumerate() {
            let term = out.clone().narrow(0, base + i, 1);
            pred = pred
                + (term - reference.clone())
                    .mul(r.mask.clone().repeat_dim(1, c))
                    .mul_scalar(r.weight);
        }
        if let Some((skip, input, context)) = skip {
            let cond = out.narrow(0, base - 1, 1);
            pred = pred
                + self.skip_layer_term(
                    skip,
                    (input, call.timestep),
                    &context,
                    cond,
                    call.mirrored,
                )?;
        }
        Ok((
            NoiseEstimate {
                output: pred,
                guidance: None,
                rescale: 0.0,
            },
            record,
        ))
    }

    /// The sampling loop: every step that is left, with `hook` around and between them, and
    /// `cancel` checked before each. Every driver (the CLI, the browser layer, benchmarks,
    /// LINA) runs generations through this one loop.
    pub async fn run(&mut self, hook: &mut dyn StepHook, cancel: &CancelToken) -> Result<()> {
        while !self.is_done() {
            if cancel.is_cancelled() {
                return Err(Error::Cancelled);
            }
            self.step(hook)?;
            hook.between_steps(self).await?;
        }
        if cancel.is_cancelled() {
            return Err(Error::Cancelled);
        }
        Ok(())
    }

    /// Waits until the device has finished the steps queued so far (one scalar readback),
    /// so progress reports are honest; also catches a sampler that diverged to NaN.
    pub async fn settle(&self) -> Result<()> {
        let peak = crate::device::read_f32(self.latents.clone().abs().max(), "the latents").await?;
        if peak.iter().any(|v| !v.is_finite()) {
            return Err(Error::Device(format!(
                "latents became non-finite at step {}",
                self.step
            )));
        }
        Ok(())
    }

    /// Decodes the current latents with the model's VAE (the final image once done).
    pub async fn decode(&self) -> Result<Image> {
        Image::from_decoded(self.pipe.vae.decode_scaled(self.latents.clone())).await
    }

    /// The finished generation: the decoded image, the warnings and the cost.
    pub async fn finish(self) -> Result<Generated> {
        let latents = match self.hands_over {
            true => Some(crate::device::read_f32(self.latents.clone(), "the latents").await?),
            false => None,
        };
        Ok(Generated {
            image: self.decode().await?,
            warnings: self.warnings,
            evaluations: self.evaluations,
            latents,
        })
    }

    /// The latest prediction of the clean image, decoded by the model's own VAE (the
    /// latents before the first step). [`Sampling::preview`] trades accuracy for speed.
    pub async fn decode_predicted(&self) -> Result<Image> {
        let latents = self.predicted_clean.as_ref().unwrap_or(&self.latents);
        Image::from_decoded(self.pipe.vae.decode_scaled(latents.clone())).await
    }

    /// A quick look at where the run is heading: the latest prediction of the clean image
    /// (the latents before the first step), decoded by TAESD where the model folder has one
    /// (`vae_tiny/`), otherwise by the full VAE.
    pub async fn preview(&self) -> Result<Image> {
        let latents = self
            .predicted_clean
            .clone()
            .unwrap_or_else(|| self.latents.clone());
        let pixels = match &self.pipe.taesd {
            Some(taesd) => taesd.decode(latents),
            None => self.pipe.vae.decode_scaled(latents),
        };
        Image::from_decoded(pixels).await
    }
}
