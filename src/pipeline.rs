//! The text-to-image sampler: prompt to embeddings, seeded latents, a denoising loop with
//! classifier-free guidance that is open between steps, and the VAE decode.
//!
//! The loop is a value, [`Sampling`], that the caller advances one step at a time, so a page
//! can await between steps (progress, previews, cancellation) and interventions can read and
//! change everything a step touches through a [`StepHook`].

use std::future::Future;
use std::ops::Range;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use burn::tensor::{Device, Tensor, TensorData};

use crate::error::{Error, Result};
use crate::image::Image;
use crate::kernels::{self, Kernels};
use crate::memory;
use crate::models::attention_control::{AttentionRecord, CrossAttentionControl};
use crate::models::clip::{self, ClipTextConfig, ClipTextEncoder};
use crate::models::denoiser::Denoiser;
use crate::models::mmdit::{self, Mmdit, MmditConfig};
use crate::models::t5::{self, T5Config, T5Encoder};
use crate::models::taesd::{self, TaesdConfig, TaesdDecoder};
use crate::models::unet::{self, UNet, UNetConfig};
use crate::models::vae::{self, VaeConfig, VaeDecoder, VaeEncoder};
use crate::rng::Rng;
use crate::schedulers::{
    self, Noise, Scheduler, SchedulerConfig, SchedulerKind, SeededNoise, StepOutput, Timesteps,
};
use crate::single_file::{self, CHECKPOINT_FILE, Checkpoint};
use crate::source::FileSource;
use crate::tokenizer::{ClipTokenizer, T5Tokenizer};
use crate::weights::{
    EmbeddingVectors, LoraTarget, ScaledLora, Weights, WeightsUpload, human_bytes,
};

/// The largest image side accepted, in pixels.
pub const MAX_SIDE: usize = 2048;

/// The longest prompt accepted, in characters. Text past the encoder's token limit (77 for
/// CLIP) is cut with a warning, as diffusers does; a prompt far beyond any such limit is a
/// mistake (a pasted file, say), refused before the tokenizer has to read it all.
pub const MAX_PROMPT_CHARS: usize = 2000;

/// Everything a generation needs besides the model.
#[derive(Debug, Clone)]
pub struct GenerateOptions {
    pub prompt: String,
    pub negative_prompt: String,
    pub seed: u64,
    pub timesteps: Timesteps,
    /// Classifier-free guidance scale; at 1 or below the unconditional pass is skipped.
    pub guidance_scale: f64,
    /// Image size in pixels; `None` uses the model's native size.
    pub width: Option<usize>,
    pub height: Option<usize>,
    /// `None` picks the scheduler class named in the model's config (DDIM if unsupported).
    pub scheduler: Option<SchedulerKind>,
    /// Skip this many final text encoder layers (diffusers' `clip_skip`).
    pub clip_skip: usize,
    /// Unit-variance initial latents to use instead of the seeded ones (for parity tests and
    /// for re-running from a saved state), [1, C, H/8, W/8] flattened.
    pub initial_latents: Option<Vec<f32>>,
    /// Unit Gaussian noise for the stochastic schedulers (Euler ancestral, LCM) to add at
    /// each step instead of the seed's: one block of the latents' size per step that runs, in
    /// step order, [steps, 1, C, H/8, W/8] flattened. With diffusers' latents and the noise
    /// its scheduler drew, an ancestral sampler gives diffusers' image. The deterministic
    /// schedulers draw no noise and leave it unused.
    pub step_noise: Option<Vec<f32>>,
    /// Stop early, where the schedule reaches this fraction of the way from noise to image
    /// (diffusers' `denoising_end`, in (0, 1)): the run takes the steps whose timesteps are at
    /// least `(1 - f) x num_train_timesteps`, and [`Generated::latents`] holds its latents for
    /// another model (an SDXL refiner) to continue from ([`GenerateOptions::handoff`]).
    pub denoising_end: Option<f64>,
    /// Continue another run's latents (its [`Generated::latents`]) from this fraction of the
    /// schedule on (diffusers' `denoising_start` with latents as its `image`), with no noise
    /// added: the steps whose timesteps are below `(1 - f) x num_train_timesteps`.
    pub handoff: Option<Handoff>,
    /// img2img: start from this image (of the output's size), noised to `strength`.
    pub init_image: Option<Image>,
    /// How much of the schedule img2img runs: 1 starts from pure noise, 0.3 keeps the layout.
    pub strength: f64,
    /// Inpainting (with `init_image`): one value per pixel, row-major; where it is 0.5 or
    /// more the image is regenerated, elsewhere kept (blended in the latents every step).
    pub mask: Option<Vec<f32>>,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        Self {
            prompt: String::new(),
            negative_prompt: String::new(),
            seed: 0,
            timesteps: Timesteps::Count(20),
            guidance_scale: 7.5,
            width: None,
            height: None,
            scheduler: None,
            clip_skip: 0,
            initial_latents: None,
            step_noise: None,
            denoising_end: None,
            handoff: None,
            init_image: None,
            strength: 0.8,
            mask: None,
        }
    }
}

/// Latents another run handed over, and where in the schedule to continue them
/// ([`GenerateOptions::handoff`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Handoff {
    /// [1, C, H/8, W/8] flattened, as the other run's sampler held them.
    pub latents: Vec<f32>,
    /// The fraction of the schedule they stand at, in (0, 1).
    pub denoising_start: f64,
}

/// What img2img and inpainting start from.
struct Init {
    /// The init image's clean latents, scaled as the sampler holds them.
    latents: Tensor<4>,
    /// The noise it was noised with (inpainting re-noises the kept region with it).
    noise: Tensor<4>,
    /// [1, C, h, w]: 1 where the latents are regenerated, 0 where the init image is kept.
    /// Only for UNets that take plain latents; they inpaint by blending after each step.
    mask: Option<Tensor<4>>,
    /// For inpainting UNets (9 input channels): what they take besides the latents, the
    /// mask and the masked image's latents, [1, 1 + C, h, w].
    conditioning: Option<Tensor<4>>,
}

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
    /// [1, L, D], as [`StableDiffusion::encode_text`] gives it.
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

/// The UNet's noise prediction for a step, before the guidance combine.
struct NoiseEstimate {
    /// [uncond; cond] halves when `guidance` is set, else the prediction itself.
    output: Tensor<4>,
    /// The classifier-free guidance scale.
    guidance: Option<f64>,
}

impl NoiseEstimate {
    /// The guided prediction: `uncond + scale * (cond - uncond)`.
    fn guided(self) -> Tensor<4> {
        let Some(scale) = self.guidance else {
            return self.output;
        };
        let [uncond, cond] = <[Tensor<4>; 2]>::try_from(self.output.chunk(2, 0))
            .unwrap_or_else(|_| unreachable!("a guided estimate holds two halves"));
        uncond.clone() + (cond - uncond).mul_scalar(scale)
    }
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

/// Something the user should know about a generation that still ran, as a value: callers
/// match on it, and its text (`Display`) is for people.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(
    tag = "code",
    rename_all = "snake_case",
    rename_all_fields = "camelCase"
)]
pub enum Warning {
    /// The prompt (or the negative prompt) ran past the text encoder's token limit (77 for
    /// CLIP); the part past it, `ignored`, was cut, as diffusers does.
    PromptTruncated { negative: bool, ignored: String },
    /// The model folder has a text encoder the runtime does not run yet (SD 3's T5-XXL,
    /// `text_encoder_3`); the generation ran with zeros in its place, as diffusers does when
    /// it is left out, and follows the prompt less closely than with it.
    TextEncoderSkipped { folder: String },
}

impl std::fmt::Display for Warning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Warning::PromptTruncated { negative, ignored } => write!(
                f,
                "the {}prompt was too long; this part was ignored: \"{ignored}\"",
                if *negative { "negative " } else { "" }
            ),
            Warning::TextEncoderSkipped { folder } => write!(
                f,
                "{folder} (T5) is not run yet: zeros stand in its place, as in diffusers without it"
            ),
        }
    }
}

/// A finished generation.
#[derive(Debug, Clone, PartialEq)]
pub struct Generated {
    pub image: Image,
    /// Things the user should know, such as the words an over-long prompt lost.
    pub warnings: Vec<Warning>,
    /// UNet evaluations, one per batch row per call: the cost figure the LINA evaluation
    /// compares.
    pub evaluations: usize,
    /// The final latents, [1, C, H/8, W/8] flattened, where the run stopped early
    /// ([`GenerateOptions::denoising_end`]) for another model to continue from.
    pub latents: Option<Vec<f32>>,
}

/// A loaded Stable-Diffusion-class model.
pub struct StableDiffusion {
    tokenizer: ClipTokenizer,
    text_encoder: ClipTextEncoder,
    /// SDXL's and SD 3's second tokenizer and text encoder (OpenCLIP ViT-bigG with its
    /// projection).
    second: Option<SecondEncoder>,
    /// The SDXL refiner's way with its text: its only encoder is SDXL's second (`tokenizer`
    /// and `text_encoder` hold it), and its UNet takes an aesthetic score.
    refiner: Option<Refiner>,
    /// The LoRAs the model was loaded with, and what changing their scales builds again from;
    /// `None` without LoRAs.
    adapters: Option<Adapters>,
    /// SD 3's T5 encoder where the folder has it; `Err` with its folder where the folder has
    /// only its config (the browser leaves T5's gigabytes behind unless asked): then zeros
    /// stand in its place, with a warning.
    t5: T5State,
    denoiser: Denoiser,
    // Boxed, as the denoiser is: each holds hundreds of tensor handles inline (22 KB), and
    // unoptimised builds give every move of the model a stack slot of its size.
    vae: Box<VaeDecoder>,
    /// Present when the VAE file has the encoder (img2img and inpainting need it).
    vae_encoder: Option<Box<VaeEncoder>>,
    /// TAESD's decoder, where the folder has `vae_tiny/`: cheap per-step previews.
    taesd: Option<TaesdDecoder>,
    scheduler_config: SchedulerConfig,
    device: Device,
    /// The kernels every layer of this model runs (chosen at load).
    kernels: Kernels,
}

/// A text encoder's weight files, in order of preference.
const TEXT_ENCODER_WEIGHTS: &[&str] = &["model.safetensors", "model.fp16.safetensors"];

/// Streams one component's weights from the first weight file its folder has (in order of
/// preference; each either whole or sharded with an index).
fn folder_weights(
    files: &dyn FileSource,
    folder: &str,
    names: &[&str],
    device: &Device,
) -> Result<Weights> {
    for name in names {
        let path = format!("{folder}/{name}");
        if let Some(weights) = stream_weights(files, &path, device)? {
            tracing::debug!(file = %path, "component weights read");
            return Ok(weights);
        }
    }
    // Say so when the folder holds its weights only in a pickle, rather than that they are
    // missing.
    let pickles = names
        .iter()
        .map(|name| name.replace(".safetensors", ".bin"))
        .chain(["pytorch_model.bin", "model.ckpt", "model.pt"].map(String::from));
    for pickle in pickles {
        let path = format!("{folder}/{pickle}");
        if files.len(&path)?.is_some() {
            return Err(Error::PickledWeights(path));
        }
    }
    Err(Error::MissingFile(format!("{folder}/{}", names[0])))
}

/// SDXL's second text encoder, with its tokenizer, and whether an empty negative prompt
/// means zeros (diffusers' `force_zeros_for_empty_prompt`, on for SDXL unless the model's
/// index turns it off).
struct SecondEncoder {
    tokenizer: ClipTokenizer,
    encoder: ClipTextEncoder,
    zeros_for_empty_negative: bool,
}

/// An SDXL refiner's text settings (stabilityai's refiner: no first text encoder, the second
/// alone; `requires_aesthetics_score` in its model index).
struct Refiner {
    /// diffusers' `force_zeros_for_empty_prompt`, off in the refiner's index.
    zeros_for_empty_negative: bool,
}

/// The aesthetic scores an SDXL refiner is conditioned on: diffusers' defaults for the
/// conditional and the unconditional rows.
pub const AESTHETIC_SCORE: f64 = 6.0;
pub const NEGATIVE_AESTHETIC_SCORE: f64 = 2.5;

/// SD 3's third text encoder: loaded, absent (as diffusers allows), or present in the folder
/// without its weights (run without, with a warning).
enum T5State {
    Loaded(Box<(T5Tokenizer, T5Encoder)>),
    Absent,
    Skipped,
}

/// A prompt as the denoiser takes it.
pub struct EncodedPrompt {
    /// [1, L, context width]: SD's last hidden states, or SDXL's two encoders' penultimate
    /// ones side by side; for SD 3 those padded to the joint width and followed by the T5
    /// tokens' places.
    pub context: Tensor<3>,
    /// SDXL's and SD 3's pooled text embedding [1, P]; `None` for one-encoder models.
    pub pooled: Option<Tensor<2>>,
    /// The words cut off at the tokenizer's length, if any.
    pub truncated: Option<String>,
}

/// `tokenizer` with `trigger` added for `[n, dim]` vectors of `encoder`'s, after checking
/// that they fit: the vectors' width is the encoder's, and the trigger's ids are the table's
/// next rows. Changes nothing: the caller swaps the result in once every side is checked.
fn bound(
    tokenizer: &ClipTokenizer,
    encoder: &ClipTextEncoder,
    trigger: &str,
    source: &str,
    [n, dim]: [usize; 2],
) -> Result<ClipTokenizer> {
    let width = encoder.config().hidden_size;
    if dim != width {
        return Err(Error::InvalidInput(format!(
            "embedding {source}: its vectors are {dim} wide, this model's text encoder takes {width} (an embedding for another model?)"
        )));
    }
    let rows = encoder.vocabulary_rows();
    let mut tokenizer = tokenizer.clone();
    let first = tokenizer.add_trigger(trigger, n)?;
    if first as usize != rows {
        return Err(Error::InvalidInput(format!(
            "embedding {source}: the tokenizer's vocabulary ({first} tokens) and the text encoder's table ({rows} rows) differ in size"
        )));
    }
    Ok(tokenizer)
}

/// A tokenizer as a diffusers folder holds it: vocab.json and merges.txt, or one
/// tokenizer.json, with the config beside it.
fn load_tokenizer(files: &dyn FileSource, folder: &str) -> Result<Option<ClipTokenizer>> {
    let config = files.read(&format!("{folder}/tokenizer_config.json"))?;
    if let Some(json) = files.read(&format!("{folder}/tokenizer.json"))? {
        return ClipTokenizer::from_tokenizer_json(&json, config.as_deref()).map(Some);
    }
    let Some(vocab) = files.read(&format!("{folder}/vocab.json"))? else {
        return Ok(None);
    };
    ClipTokenizer::from_vocab_merges(
        &vocab,
        &files.require(&format!("{folder}/merges.txt"))?,
        config.as_deref(),
    )
    .map(Some)
}

/// Refuses a LoRA that adapts a part of a model other than `parts`, the ones it has.
fn refuse_absent_parts(loras: &[ScaledLora], parts: &[LoraTarget]) -> Result<()> {
    let all = [
        LoraTarget::Unet,
        LoraTarget::Transformer,
        LoraTarget::TextEncoder,
        LoraTarget::TextEncoder2,
    ];
    for lora in loras {
        if let Some(absent) = all
            .into_iter()
            .find(|t| !parts.contains(t) && lora.lora.adapts(*t))
        {
            let has: Vec<&str> = parts.iter().map(|t| t.name()).collect();
            return Err(Error::InvalidInput(format!(
                "LoRA {}: adapts {}, which this model does not have (it has {})",
                lora.lora.source(),
                absent.name(),
                has.join(", ")
            )));
        }
    }
    Ok(())
}

/// A component's weights, kept on the device after its build because LoRAs adapt it: changing
/// their scales builds it again from them ([`StableDiffusion::set_lora_scales`]) without
/// reading a file. Layers share the weights' buffers where they use a tensor as it is, so
/// keeping them costs the tensors that a layer copies (stacked q/k/v projections) or that a
/// LoRA changes.
struct Kept<C> {
    weights: Weights,
    config: C,
    target: LoraTarget,
}

impl<C: Clone> Kept<C> {
    /// The component built again, with `loras` at their scales.
    fn rebuilt<T>(
        &self,
        loras: &[ScaledLora],
        build: impl Fn(C, &Weights) -> Result<T>,
    ) -> Result<T> {
        self.weights.reset();
        self.weights.adapt(loras, self.target)?;
        let component = build(self.config.clone(), &self.weights)?;
        self.weights.finish()?;
        Ok(component)
    }
}

/// [`build_component`] for a component LoRAs may adapt: where one of `loras` does, its
/// weights are kept to build it again ([`Kept`]).
fn build_keeping<T, C: Clone>(
    weights: Weights,
    (kernels, loras, target): (Kernels, &[ScaledLora], LoraTarget),
    config: C,
    build: impl Fn(C, &Weights) -> Result<T>,
) -> Result<(T, Option<Kept<C>>)> {
    let weights = weights.with_kernels(kernels);
    let kept = Kept {
        weights,
        config,
        target,
    };
    let component = kept.rebuilt(loras, &build)?;
    let adapted = loras.iter().any(|l| l.lora.adapts(target));
    Ok((component, adapted.then_some(kept)))
}

/// What [`StableDiffusion::set_lora_scales`] builds again from: the LoRAs the model was loaded
/// with, at their current scales, and the weights of each component they adapt.
struct Adapters {
    loras: Vec<ScaledLora>,
    text_encoder: Option<Kept<ClipTextConfig>>,
    second: Option<Kept<ClipTextConfig>>,
    unet: Option<Kept<UNetConfig>>,
    mmdit: Option<Kept<MmditConfig>>,
    /// The vocabulary rows textual-inversion embeddings added to each text encoder, in
    /// order: a rebuilt encoder takes them again.
    added_rows: [Vec<Tensor<2>>; 2],
}

/// Builds one component from its weights, merging `loras` as they load, then checks that the
/// weights held nothing the component left unused.
fn build_component<T>(
    weights: Weights,
    (kernels, loras): (Kernels, Option<(&[ScaledLora], LoraTarget)>),
    build: impl FnOnce(&Weights) -> Result<T>,
) -> Result<T> {
    let weights = weights.with_kernels(kernels);
    if let Some((loras, target)) = loras {
        weights.adapt(loras, target)?;
    }
    let component = build(&weights)?;
    weights.finish()?;
    Ok(component)
}

/// A component's weights and config: from the single-file checkpoint where it holds them
/// (a config file in the source still wins over the inferred one), else from its folder.
fn component_source(
    files: &dyn FileSource,
    from_checkpoint: Option<single_file::Part>,
    (folder, names, config_file): (&str, &[&str], &str),
    device: &Device,
) -> Result<(Weights, String)> {
    match from_checkpoint {
        Some(part) => {
            let config = files.read_text(config_file)?.unwrap_or(part.config);
            Ok((part.weights, config))
        }
        None => Ok((
            folder_weights(files, folder, names, device)?,
            files.require_text(config_file)?,
        )),
    }
}

/// Streams `path`, or the shards its `.index.json` lists, to the device; `None` if neither
/// exists.
fn stream_weights(files: &dyn FileSource, path: &str, device: &Device) -> Result<Option<Weights>> {
    let new_upload = || {
        let upload = WeightsUpload::new(device);
        match path {
            CHECKPOINT_FILE => upload.skipping(single_file::unused),
            _ => upload,
        }
    };
    let mut upload = new_upload();
    let feed = |upload: &mut WeightsUpload, file: &str| -> Result<bool> {
        if let Some(done) = files.take_uploaded(file) {
            upload.merge(done)?;
            return Ok(true);
        }
        upload.begin_file(file, files.len(file)?)?;
        if !files.stream(file, &mut |chunk| upload.push(chunk))? {
            return Ok(false);
        }
        upload.end_file()?;
        Ok(true)
    };
    if feed(&mut upload, path)? {
        return upload.finish(path).map(Some);
    }
    let mut upload = new_upload();
    let index_path = format!("{path}.index.json");
    let Some(index) = files.read(&index_path)? else {
        return Ok(None);
    };
    let folder = path.rsplit_once('/').map_or("", |(f, _)| f);
    for shard in shard_files(&index_path, &index)? {
        let shard_path = format!("{folder}/{shard}");
        if !feed(&mut upload, &shard_path)? {
            return Err(Error::MissingFile(format!(
                "{shard_path} (listed in {index_path})"
            )));
        }
    }
    upload.finish(&index_path).map(Some)
}

/// The distinct shard files of a sharded checkpoint's index, in name order.
fn shard_files(index_path: &str, index: &[u8]) -> Result<Vec<String>> {
    #[derive(serde::Deserialize)]
    struct Index {
        weight_map: serde_json::Map<String, serde_json::Value>,
    }
    let index: Index = serde_json::from_slice(index)
        .map_err(|e| Error::config(index_path, format!("invalid index: {e}")))?;
    let mut shards = Vec::new();
    for (tensor, file) in &index.weight_map {
        let file = file.as_str().ok_or_else(|| {
            Error::config(
                index_path,
                format!("weight_map[\"{tensor}\"] is not a file name"),
            )
        })?;
        if file.contains('/') || file.contains("..") || !file.ends_with(".safetensors") {
            return Err(Error::config(
                index_path,
                format!("weight_map names `{file}`, not a .safetensors file beside the index"),
            ));
        }
        shards.push(file.to_string());
    }
    shards.sort_unstable();
    shards.dedup();
    Ok(shards)
}

impl StableDiffusion {
    /// Loads every component of a diffusers-layout model, checking configs and tensors.
    pub fn load(files: &dyn FileSource, device: &Device) -> Result<Self> {
        Self::load_with(files, device, Kernels::default())
    }

    /// [`StableDiffusion::load`] with the kernels its layers run: [`Kernels::Burn`] leaves
    /// the fused kernels of shaders/ out (to measure them, or to rule them out).
    pub fn load_with(files: &dyn FileSource, device: &Device, kernels: Kernels) -> Result<Self> {
        Self::load_adapted(files, device, kernels, &[])
    }

    /// [`StableDiffusion::load_with`] with LoRA adapters merged into the UNet's and the text
    /// encoder's weights, each at its scale (`weights::lora`).
    pub fn load_adapted(
        files: &dyn FileSource,
        device: &Device,
        kernels: Kernels,
        loras: &[ScaledLora],
    ) -> Result<Self> {
        let checkpoint_file = files.len(CHECKPOINT_FILE)?;
        // The model index, where the source has one: it names the components a folder
        // leaves out (`[null, null]`) and the pipeline's options.
        let index = match files.read("model_index.json")? {
            Some(bytes) => Some(
                serde_json::from_slice::<serde_json::Value>(&bytes)
                    .map_err(|e| Error::config("model_index.json", e.to_string()))?,
            ),
            None => None,
        };
        let index_flag = |key: &str| {
            index
                .as_ref()
                .and_then(|i| i.get(key))
                .and_then(serde_json::Value::as_bool)
        };
        // A single-file checkpoint, where the source has one, supplies the weights (and the
        // configs the source lacks) of the components it holds. Its tokenizer comes from
        // beside it: one is asked for before gigabytes of weights are read.
        let has_tokenizer = |folder: &str| -> Result<bool> {
            Ok(files.read(&format!("{folder}/tokenizer.json"))?.is_some()
                || files.read(&format!("{folder}/vocab.json"))?.is_some())
        };
        if checkpoint_file.is_some()
            && !has_tokenizer("tokenizer")?
            && !has_tokenizer("tokenizer_2")?
        {
            return Err(Error::NoTokenizer("tokenizer/vocab.json".into()));
        }
        let checkpoint = match stream_weights(files, CHECKPOINT_FILE, device)? {
            Some(weights) => Some(Checkpoint::split(CHECKPOINT_FILE, weights)?),
            None => None,
        };
        // The SDXL refiner: SDXL's second text encoder alone, where the first would be (its
        // index also says `requires_aesthetics_score`; the UNet's widths are checked below).
        let refiner = match &checkpoint {
            Some(c) => c.family == single_file::Family::SdxlRefiner,
            None => {
                index_flag("requires_aesthetics_score") != Some(false)
                    && files.read(clip::CONFIG_FILE)?.is_none()
                    && files.read(clip::CONFIG_FILE_2)?.is_some()
            }
        };
        let (tokenizer_folder, text_folder, text_config_file, text_target) = match refiner {
            false => (
                "tokenizer",
                "text_encoder",
                clip::CONFIG_FILE,
                LoraTarget::TextEncoder,
            ),
            true => (
                "tokenizer_2",
                "text_encoder_2",
                clip::CONFIG_FILE_2,
                LoraTarget::TextEncoder2,
            ),
        };
        let Some(mut tokenizer) = load_tokenizer(files, tokenizer_folder)? else {
            let path = format!("{tokenizer_folder}/vocab.json");
            return Err(match files.len(CHECKPOINT_FILE)? {
                Some(_) => Error::NoTokenizer(path),
                None => Error::MissingFile(path),
            });
        };
        // SD 3's folders and files hold a transformer where the others hold a UNet.
        let flow_model = match &checkpoint {
            Some(c) => c.family == single_file::Family::Sd3,
            None => files.read(mmdit::CONFIG_FILE)?.is_some(),
        };
        let (denoiser_part, vae_part, text_part, text_2_part, text_3_part, checkpoint_scheduler) =
            match checkpoint {
                // The refiner's one encoder is its first (it has no other).
                Some(c) if refiner => (
                    Some(c.denoiser),
                    c.vae,
                    c.text_encoder_2,
                    None,
                    None,
                    Some(c.scheduler_config),
                ),
                Some(c) => (
                    Some(c.denoiser),
                    c.vae,
                    c.text_encoder,
                    c.text_encoder_2,
                    c.text_encoder_3,
                    Some(c.scheduler_config),
                ),
                None => (None, None, None, None, None, None),
            };

        // SDXL and SD 3: a second tokenizer and text encoder beside the first.
        let has_second =
            !refiner && (text_2_part.is_some() || files.read(clip::CONFIG_FILE_2)?.is_some());
        // A LoRA for a part the model does not have would adapt nothing: refused, naming the
        // part, before any weights are read.
        let denoiser_target = match flow_model {
            true => LoraTarget::Transformer,
            false => LoraTarget::Unet,
        };
        let parts: Vec<LoraTarget> = [text_target, denoiser_target]
            .into_iter()
            .chain(has_second.then_some(LoraTarget::TextEncoder2))
            .collect();
        refuse_absent_parts(loras, &parts)?;

        let text_files = (text_folder, TEXT_ENCODER_WEIGHTS, text_config_file);
        let (weights, config) = component_source(files, text_part, text_files, device)?;
        let text_config = ClipTextConfig::from_file(text_config_file, &config)?;
        tokenizer.limit_length(text_config.max_position_embeddings);
        let (text_encoder, kept_text) = build_keeping(
            weights,
            (kernels, loras, text_target),
            text_config,
            ClipTextEncoder::load,
        )?;
        let refiner = refiner.then(|| Refiner {
            zeros_for_empty_negative: index_flag("force_zeros_for_empty_prompt").unwrap_or(false),
        });

        let mut kept_second = None;
        let second = match has_second {
            false => None,
            true => {
                let from_file = text_2_part.is_some();
                let (weights, config) = component_source(
                    files,
                    text_2_part,
                    ("text_encoder_2", TEXT_ENCODER_WEIGHTS, clip::CONFIG_FILE_2),
                    device,
                )?;
                let config = ClipTextConfig::from_file(clip::CONFIG_FILE_2, &config)?;
                let mut tokenizer = load_tokenizer(files, "tokenizer_2")?.ok_or_else(|| {
                    let path = "tokenizer_2/vocab.json".to_string();
                    match from_file {
                        true => Error::NoTokenizer(path),
                        false => Error::MissingFile(path),
                    }
                })?;
                tokenizer.limit_length(config.max_position_embeddings);
                let (encoder, kept) = build_keeping(
                    weights,
                    (kernels, loras, LoraTarget::TextEncoder2),
                    config,
                    ClipTextEncoder::load,
                )?;
                kept_second = kept;
                let zeros_for_empty_negative =
                    index_flag("force_zeros_for_empty_prompt").unwrap_or(!flow_model);
                Some(SecondEncoder {
                    tokenizer,
                    encoder,
                    zeros_for_empty_negative,
                })
            }
        };

        let names = [
            "diffusion_pytorch_model.safetensors",
            "diffusion_pytorch_model.fp16.safetensors",
        ];
        // SD 3's transformer or a UNet: its folder and its config.
        let (folder, config_file) = match flow_model {
            true => ("transformer", mmdit::CONFIG_FILE),
            false => ("unet", unet::CONFIG_FILE),
        };
        let (weights, config) =
            component_source(files, denoiser_part, (folder, &names, config_file), device)?;
        let adapted = (kernels, loras, denoiser_target);
        let (mut kept_unet, mut kept_mmdit) = (None, None);
        let denoiser = match flow_model {
            true => {
                let config = MmditConfig::from_json(&config)?;
                let (mmdit, kept) = build_keeping(weights, adapted, config, Mmdit::load)?;
                kept_mmdit = kept;
                Denoiser::Mmdit(Box::new(mmdit))
            }
            false => {
                let config = UNetConfig::from_json(&config)?;
                let (unet, kept) = build_keeping(weights, adapted, config, UNet::load)?;
                kept_unet = kept;
                Denoiser::UNet(Box::new(unet))
            }
        };
        let (weights, config) =
            component_source(files, vae_part, ("vae", &names, vae::CONFIG_FILE), device)?;
        let vae_config = VaeConfig::from_json(&config)?;
        // On a device that computes in f16 the VAE runs in f32 unless its config says it
        // need not: SD's and SDXL's VAEs overflow f16 and draw black or NaN images.
        let weights = match crate::device::limits(device).computes_f16 && vae_config.force_upcast {
            true => weights.with_dtype(burn::tensor::FloatDType::F32),
            false => weights,
        };
        let (vae, vae_encoder) = build_component(weights, (kernels, None), |w| {
            let encoder = w
                .contains("encoder.conv_in.weight")
                .then(|| VaeEncoder::load(vae_config.clone(), w).map(Box::new))
                .transpose()?;
            Ok((Box::new(VaeDecoder::load(vae_config, w)?), encoder))
        })?;

        // An optional tiny VAE beside the main one, for previews.
        let taesd = match files.read(taesd::CONFIG_FILE)? {
            None => None,
            Some(json) => {
                let config = TaesdConfig::from_json(
                    std::str::from_utf8(&json)
                        .map_err(|_| Error::config(taesd::CONFIG_FILE, "is not UTF-8 text"))?,
                )?;
                if config.latent_channels != vae.config().latent_channels {
                    return Err(Error::config(
                        taesd::CONFIG_FILE,
                        "latent_channels differs from the VAE's",
                    ));
                }
                Some(build_component(
                    folder_weights(files, "vae_tiny", &names, device)?,
                    (kernels, None),
                    |w| TaesdDecoder::load(config, w),
                )?)
            }
        };

        let scheduler_json = match (
            files.read_text(schedulers::CONFIG_FILE)?,
            checkpoint_scheduler,
        ) {
            (Some(text), _) => text,
            (None, Some(inferred)) => inferred,
            (None, None) => return Err(Error::MissingFile(schedulers::CONFIG_FILE.into())),
        };
        let scheduler_config = SchedulerConfig::from_json(&scheduler_json)?;
        let t5 = match &denoiser {
            Denoiser::UNet(unet) => {
                Self::check_unet(unet, &text_encoder, second.as_ref(), &refiner, vae.config())?;
                T5State::Absent
            }
            Denoiser::Mmdit(mmdit) => {
                Self::check_mmdit(mmdit.config(), &text_encoder, second.as_ref(), vae.config())?;
                Self::load_t5(files, text_3_part, mmdit.config(), device, kernels)?
            }
        };
        Ok(Self {
            tokenizer,
            text_encoder,
            second,
            refiner,
            adapters: (!loras.is_empty()).then(|| Adapters {
                loras: loras.to_vec(),
                text_encoder: kept_text,
                second: kept_second,
                unet: kept_unet,
                mmdit: kept_mmdit,
                added_rows: [Vec::new(), Vec::new()],
            }),
            t5,
            denoiser,
            vae,
            vae_encoder,
            taesd,
            scheduler_config,
            device: device.clone(),
            kernels,
        })
    }

    /// A UNet's fit to the text encoders and the VAE loaded beside it.
    fn check_unet(
        unet: &UNet,
        text_encoder: &ClipTextEncoder,
        second: Option<&SecondEncoder>,
        refiner: &Option<Refiner>,
        vae: &VaeConfig,
    ) -> Result<()> {
        match (second, unet.config().text_time_dims()) {
            (None, Some((time, input))) if refiner.is_some() && unet.takes_text_time() => {
                let pooled = text_encoder.pooled_width();
                if input != pooled + 5 * time {
                    return Err(Error::config(
                        unet::CONFIG_FILE,
                        format!(
                            "projection_class_embeddings_input_dim {input} is not the text encoder's pooled width {pooled} plus 5 x addition_time_embed_dim {time} (an SDXL refiner's size and aesthetic score; for SDXL base, {} is missing)",
                            clip::CONFIG_FILE
                        ),
                    ));
                }
            }
            (None, _) if refiner.is_some() => {
                return Err(Error::config(
                    unet::CONFIG_FILE,
                    "the model index asks for an aesthetic score (an SDXL refiner), but the UNet takes no pooled text and size (addition_embed_type \"text_time\")",
                ));
            }
            (Some(s), Some((time, input))) if unet.takes_text_time() => {
                let pooled = s.encoder.pooled_width();
                if input != pooled + 6 * time {
                    return Err(Error::config(
                        unet::CONFIG_FILE,
                        format!(
                            "projection_class_embeddings_input_dim {input} is not the second text encoder's pooled width {pooled} plus 6 x addition_time_embed_dim {time}"
                        ),
                    ));
                }
            }
            (None, _) if !unet.takes_text_time() => {}
            (Some(_), _) => {
                return Err(Error::config(
                    unet::CONFIG_FILE,
                    "the model has a second text encoder, but its UNet takes no pooled text (addition_embed_type \"text_time\")",
                ));
            }
            (None, _) => {
                return Err(Error::MissingFile(format!(
                    "{}: this UNet (addition_embed_type \"text_time\", SDXL) needs a second text encoder",
                    clip::CONFIG_FILE_2
                )));
            }
        }
        let context_width = text_encoder.config().hidden_size
            + second
                .as_ref()
                .map_or(0, |s| s.encoder.config().hidden_size);
        if unet.config().cross_attention_dim != context_width {
            return Err(Error::config(
                unet::CONFIG_FILE,
                format!(
                    "cross_attention_dim {} differs from the text encoders' hidden_size {context_width}",
                    unet.config().cross_attention_dim,
                ),
            ));
        }
        let latent = vae.latent_channels;
        if ![latent, 2 * latent + 1].contains(&unet.config().in_channels) {
            return Err(Error::config(
                unet::CONFIG_FILE,
                format!(
                    "in_channels {} is neither the VAE's latent_channels {latent} nor {} (an inpainting UNet: latents, mask, masked image)",
                    unet.config().in_channels,
                    2 * latent + 1
                ),
            ));
        }
        Ok(())
    }

    /// SD 3's T5 and its tokenizer where the folder has them; its hidden states must be the
    /// transformer's joint width.
    fn load_t5(
        files: &dyn FileSource,
        from_checkpoint: Option<single_file::Part>,
        mmdit: &MmditConfig,
        device: &Device,
        kernels: Kernels,
    ) -> Result<T5State> {
        let config = match (files.read_text(t5::CONFIG_FILE)?, &from_checkpoint) {
            (Some(config), _) => config,
            (None, Some(part)) => part.config.clone(),
            (None, None) => return Ok(T5State::Absent),
        };
        let config = T5Config::from_json(&config)?;
        if config.d_model != mmdit.joint_attention_dim {
            return Err(Error::config(
                t5::CONFIG_FILE,
                format!(
                    "d_model {} differs from the transformer's joint_attention_dim {}",
                    config.d_model, mmdit.joint_attention_dim
                ),
            ));
        }
        let weights = match from_checkpoint {
            Some(part) => part.weights,
            None => match folder_weights(files, "text_encoder_3", TEXT_ENCODER_WEIGHTS, device) {
                Ok(weights) => weights,
                Err(Error::MissingFile(_)) => return Ok(T5State::Skipped),
                Err(e) => return Err(e),
            },
        };
        let tokenizer = T5Tokenizer::from_tokenizer_json(
            &files.require("tokenizer_3/tokenizer.json")?,
            files.read("tokenizer_3/tokenizer_config.json")?.as_deref(),
        )?;
        let encoder = build_component(weights, (kernels, None), |w| T5Encoder::load(config, w))?;
        Ok(T5State::Loaded(Box::new((tokenizer, encoder))))
    }

    /// An SD 3 transformer's fit: two text encoders with pooled outputs as wide together as
    /// its pooled input, hidden states that fit its joint width side by side, the VAE's
    /// latent channels.
    fn check_mmdit(
        config: &MmditConfig,
        text_encoder: &ClipTextEncoder,
        second: Option<&SecondEncoder>,
        vae: &VaeConfig,
    ) -> Result<()> {
        let Some(second) = second else {
            return Err(Error::MissingFile(format!(
                "{}: this transformer (SD 3) needs a second text encoder and tokenizer_2",
                clip::CONFIG_FILE_2
            )));
        };
        let pooled = text_encoder.pooled_width() + second.encoder.pooled_width();
        if pooled != config.pooled_projection_dim {
            return Err(Error::config(
                mmdit::CONFIG_FILE,
                format!(
                    "pooled_projection_dim {} is not the text encoders' pooled widths together ({pooled})",
                    config.pooled_projection_dim
                ),
            ));
        }
        let hidden = text_encoder.config().hidden_size + second.encoder.config().hidden_size;
        if hidden > config.joint_attention_dim {
            return Err(Error::config(
                mmdit::CONFIG_FILE,
                format!(
                    "joint_attention_dim {} is narrower than the text encoders' hidden states side by side ({hidden})",
                    config.joint_attention_dim
                ),
            ));
        }
        if config.in_channels != vae.latent_channels {
            return Err(Error::config(
                mmdit::CONFIG_FILE,
                format!(
                    "in_channels {} differs from the VAE's latent_channels {}",
                    config.in_channels, vae.latent_channels
                ),
            ));
        }
        Ok(())
    }

    /// The kernels this model's layers run.
    pub fn kernels(&self) -> Kernels {
        self.kernels
    }

    pub fn device(&self) -> &Device {
        &self.device
    }
    /// The UNet, for UNet models.
    pub fn unet(&self) -> Option<&UNet> {
        self.denoiser.unet()
    }
    /// The text context's length as the denoiser sees it, in tokens: the tokenizer's (77 for
    /// CLIP), and for SD 3 the T5 places after them. Attention biases and records span it.
    pub fn context_length(&self) -> usize {
        let t5 = match self.denoiser {
            Denoiser::Mmdit(_) => mmdit::T5_TOKENS,
            Denoiser::UNet(_) => 0,
        };
        self.tokenizer.max_length() + t5
    }

    /// The model the sampler calls at each step.
    pub fn denoiser(&self) -> &Denoiser {
        &self.denoiser
    }
    pub fn vae(&self) -> &VaeDecoder {
        &self.vae
    }

    pub fn vae_encoder(&self) -> Option<&VaeEncoder> {
        self.vae_encoder.as_deref()
    }
    /// Binds a textual-inversion embedding to `trigger`: a prompt that says the trigger gets
    /// the file's vectors in its place (several vectors: several tokens). Reads the formats
    /// people have: a single tensor named after its token (diffusers'
    /// `learned_embeds.safetensors`), `emb_params` (the common web UIs), each `[dim]` or
    /// `[n, dim]`; for SDXL, `clip_l` and `clip_g`, bound in both tokenizers and encoders.
    /// Fails, changing nothing, on a file of another layout, vectors of another width than
    /// the text encoder's, a one-set file on SDXL or a pair on a one-encoder model, or a
    /// trigger that is a token already.
    pub fn add_embedding(&mut self, trigger: &str, source: &str, bytes: &[u8]) -> Result<()> {
        let refuse = |what: &str| {
            Err(Error::InvalidInput(format!(
                "embedding {source}: {what} (an embedding for another model?)"
            )))
        };
        match (
            crate::weights::embedding_vectors(source, bytes)?,
            &mut self.second,
        ) {
            (EmbeddingVectors::One(values, shape), None) => {
                let tokenizer = bound(&self.tokenizer, &self.text_encoder, trigger, source, shape)?;
                let rows = self.table(values, shape);
                self.text_encoder.extend_vocabulary(rows.clone())?;
                self.tokenizer = tokenizer;
                self.remember_rows([Some(rows), None]);
                Ok(())
            }
            (EmbeddingVectors::Pair { clip_l, clip_g }, Some(second)) => {
                if clip_l.1[0] != clip_g.1[0] {
                    return refuse(&format!(
                        "clip_l holds {} vectors and clip_g {}",
                        clip_l.1[0], clip_g.1[0]
                    ));
                }
                // Both sides are checked before either changes.
                let first = bound(
                    &self.tokenizer,
                    &self.text_encoder,
                    trigger,
                    source,
                    clip_l.1,
                )?;
                let second_tokenizer = bound(
                    &second.tokenizer,
                    &second.encoder,
                    trigger,
                    source,
                    clip_g.1,
                )?;
                let tables = [
                    Tensor::<2>::from_data(TensorData::new(clip_l.0, clip_l.1), &self.device),
                    Tensor::<2>::from_data(TensorData::new(clip_g.0, clip_g.1), &self.device),
                ];
                let [l, g] = tables;
                self.text_encoder.extend_vocabulary(l.clone())?;
                second.encoder.extend_vocabulary(g.clone())?;
                self.tokenizer = first;
                second.tokenizer = second_tokenizer;
                self.remember_rows([Some(l), Some(g)]);
                Ok(())
            }
            (EmbeddingVectors::One(..), Some(_)) => {
                refuse("one set of vectors; SDXL's two text encoders need `clip_l` and `clip_g`")
            }
            // The SDXL refiner's only encoder is SDXL's second: it takes `clip_g`.
            (EmbeddingVectors::Pair { clip_g, .. }, None) if self.refiner.is_some() => {
                let tokenizer = bound(
                    &self.tokenizer,
                    &self.text_encoder,
                    trigger,
                    source,
                    clip_g.1,
                )?;
                let rows = self.table(clip_g.0, clip_g.1);
                self.text_encoder.extend_vocabulary(rows.clone())?;
                self.tokenizer = tokenizer;
                self.remember_rows([Some(rows), None]);
                Ok(())
            }
            (EmbeddingVectors::Pair { .. }, None) => {
                refuse("SDXL's `clip_l` and `clip_g`; this model has one text encoder")
            }
        }
    }

    /// Keeps the vocabulary rows an embedding added to the text encoders (the first, or the
    /// refiner's only one; the second), for encoders built again with other LoRA scales.
    fn remember_rows(&mut self, rows: [Option<Tensor<2>>; 2]) {
        if let Some(adapters) = &mut self.adapters {
            for (kept, row) in adapters.added_rows.iter_mut().zip(rows) {
                kept.extend(row);
            }
        }
    }

    /// The scales of the LoRAs the model was loaded with, in their order.
    pub fn lora_scales(&self) -> Vec<f32> {
        self.adapters
            .as_ref()
            .map_or_else(Vec::new, |a| a.loras.iter().map(|l| l.scale).collect())
    }

    /// Sets the scale of each LoRA the model was loaded with (in their order), without
    /// reading any file: each component they adapt is built again from its weights, kept on
    /// the device since the load, with the updates merged at the new scales (and the
    /// embeddings' vocabulary rows added again). Fails, changing nothing, on a count that is
    /// not the LoRAs', a scale that is not finite, or a model loaded without LoRAs.
    pub fn set_lora_scales(&mut self, scales: &[f32]) -> Result<()> {
        let Some(adapters) = &self.adapters else {
            return Err(Error::InvalidInput(
                "LoRA scales: this model was loaded without LoRAs; load it with them to set their scales".into(),
            ));
        };
        if scales.len() != adapters.loras.len() {
            return Err(Error::InvalidInput(format!(
                "LoRA scales: {} given for {} LoRAs",
                scales.len(),
                adapters.loras.len()
            )));
        }
        if let Some(bad) = scales.iter().find(|s| !s.is_finite()) {
            return Err(Error::InvalidInput(format!(
                "LoRA scales: {bad} is not a finite number"
            )));
        }
        let loras: Vec<ScaledLora> = adapters
            .loras
            .iter()
            .zip(scales)
            .map(|(l, &scale)| ScaledLora {
                lora: l.lora.clone(),
                scale,
            })
            .collect();
        // Everything is built before anything is swapped in: an error leaves the model as it
        // was.
        let encoder = |kept: &Option<Kept<ClipTextConfig>>, rows: &[Tensor<2>]| {
            kept.as_ref()
                .map(|k| {
                    let mut encoder = k.rebuilt(&loras, ClipTextEncoder::load)?;
                    for r in rows {
                        encoder.extend_vocabulary(r.clone())?;
                    }
                    Ok::<_, Error>(encoder)
                })
                .transpose()
        };
        let text_encoder = encoder(&adapters.text_encoder, &adapters.added_rows[0])?;
        let second = encoder(&adapters.second, &adapters.added_rows[1])?;
        let unet = adapters
            .unet
            .as_ref()
            .map(|k| k.rebuilt(&loras, UNet::load))
            .transpose()?;
        let mmdit = adapters
            .mmdit
            .as_ref()
            .map(|k| k.rebuilt(&loras, Mmdit::load))
            .transpose()?;
        if let Some(e) = text_encoder {
            self.text_encoder = e;
        }
        if let (Some(e), Some(s)) = (second, self.second.as_mut()) {
            s.encoder = e;
        }
        if let Some(u) = unet {
            self.denoiser = Denoiser::UNet(Box::new(u));
        }
        if let Some(m) = mmdit {
            self.denoiser = Denoiser::Mmdit(Box::new(m));
        }
        if let Some(adapters) = &mut self.adapters {
            adapters.loras = loras;
        }
        Ok(())
    }

    fn table(&self, values: Vec<f32>, shape: [usize; 2]) -> Tensor<2> {
        Tensor::from_data(TensorData::new(values, shape), &self.device)
    }

    pub fn text_encoder(&self) -> &ClipTextEncoder {
        &self.text_encoder
    }
    pub fn tokenizer(&self) -> &ClipTokenizer {
        &self.tokenizer
    }
    pub fn scheduler_config(&self) -> &SchedulerConfig {
        &self.scheduler_config
    }

    /// Whether classifier-free guidance needs a second, unconditional pass: above scale 1,
    /// unless the UNet takes the scale as an embedding (LCM-distilled models).
    fn unconditional_pass(&self, guidance_scale: f64) -> bool {
        guidance_scale > 1.0 && !self.denoiser.embeds_guidance()
    }

    /// Whether the UNet is an inpainting one (SD's 9-channel inpainting models): it takes the
    /// mask and the masked image's latents next to the latents, and needs both.
    pub fn is_inpainting_model(&self) -> bool {
        self.denoiser.in_channels() != self.vae.config().latent_channels
    }

    /// The image size the model was trained for.
    pub fn native_size(&self) -> usize {
        self.denoiser.sample_size() * self.vae.config().downscale()
    }

    /// What the user should know when the device's limits rule out the model's native size:
    /// the largest square size that fits, so that it need not be found by failing.
    pub fn size_note(&self) -> Option<String> {
        let limits = crate::device::limits(&self.device);
        let native = self.native_size();
        let side = memory::largest_side(
            self.denoiser.config(),
            self.vae.config(),
            native,
            limits.max_binding_bytes,
        );
        let cramped = format!(
            "{} binds at most {} per buffer, too little for this model's native {native}x{native}",
            limits.adapter,
            human_bytes(limits.max_binding_bytes)
        );
        match side {
            Some(side) if side == native => None,
            Some(side) => Some(format!("{cramped}: generate at {side}x{side} or smaller")),
            None => Some(format!("{cramped} or any smaller size")),
        }
    }

    /// Encodes one text to [1, L, D]; also returns what was cut from an over-long text.
    /// The unit-variance latents a run of `opts` starts from, before the scheduler's
    /// `init_noise_sigma` (what diffusers' pipelines take as `latents`): the options' own,
    /// else the seed's; with their shape [1, C, h, w] for an image of `size` (width, height).
    pub fn initial_noise(
        &self,
        opts: &GenerateOptions,
        (width, height): (usize, usize),
    ) -> Result<(Vec<f32>, [usize; 4])> {
        let factor = self.vae.config().downscale();
        let shape = [
            1,
            self.vae.config().latent_channels,
            height / factor,
            width / factor,
        ];
        let count = shape.iter().product::<usize>();
        let noise = match &opts.initial_latents {
            Some(given) if given.len() == count => given.clone(),
            Some(given) => {
                return Err(Error::InvalidInput(format!(
                    "initial latents have {} values, {count} expected for {shape:?}",
                    given.len()
                )));
            }
            None => Rng::new(opts.seed).normals(count),
        };
        Ok((noise, shape))
    }

    /// The UNet's text conditioning for `text` [1, L, cross_attention_dim], and the words
    /// the tokenizer cut off.
    pub fn encode_text(&self, text: &str, clip_skip: usize) -> Result<(Tensor<3>, Option<String>)> {
        let prompt = self.encode_prompt(text, clip_skip)?;
        Ok((prompt.context, prompt.truncated))
    }

    /// `text` as the UNet takes it: SD's last hidden states; or, for SDXL, both encoders'
    /// penultimate hidden states side by side and the second's pooled output (what
    /// diffusers' `StableDiffusionXLPipeline.encode_prompt` gives).
    pub fn encode_prompt(&self, text: &str, clip_skip: usize) -> Result<EncodedPrompt> {
        let tokens = self.tokenizer.encode(text)?;
        if self.refiner.is_some() {
            // The refiner's only encoder is SDXL's second: its penultimate states and its
            // pooled output.
            let (context, pooled) = self
                .text_encoder
                .penultimate_and_pooled(&[tokens.ids], clip_skip)?;
            return Ok(EncodedPrompt {
                context,
                pooled: Some(pooled),
                truncated: tokens.truncated,
            });
        }
        let Some(second) = &self.second else {
            return Ok(EncodedPrompt {
                context: self.text_encoder.forward(&[tokens.ids], clip_skip)?,
                pooled: None,
                truncated: tokens.truncated,
            });
        };
        let (first, first_pooled) = self
            .text_encoder
            .penultimate_and_pooled(&[tokens.ids], clip_skip)?;
        let ids = second.tokenizer.encode(text)?.ids;
        let (hidden, pooled) = second.encoder.penultimate_and_pooled(&[ids], clip_skip)?;
        let clip = Tensor::cat(vec![first, hidden], 2);
        let Some(mmdit) = self.denoiser.mmdit() else {
            return Ok(EncodedPrompt {
                context: clip,
                pooled: Some(pooled),
                truncated: tokens.truncated,
            });
        };
        // SD 3 (diffusers' `StableDiffusion3Pipeline.encode_prompt`): the CLIP states padded
        // with zeros to the joint width, then T5's tokens, zeros without T5; both pooled
        // outputs side by side.
        let width = clip.dims()[2];
        let joint = mmdit.config().joint_attention_dim;
        let pad = |t: Tensor<3>, padding: [(usize, usize); 2]| {
            t.pad(padding, burn::tensor::ops::PadMode::Constant(0.0))
        };
        let context = match &self.t5 {
            T5State::Loaded(t5) => {
                let (tokenizer, encoder) = t5.as_ref();
                let ids = tokenizer.encode(text, mmdit::T5_TOKENS)?.ids;
                let t5 = encoder.forward(&ids)?;
                Tensor::cat(vec![pad(clip, [(0, 0), (0, joint - width)]), t5], 1)
            }
            T5State::Absent | T5State::Skipped => {
                pad(clip, [(0, mmdit::T5_TOKENS), (0, joint - width)])
            }
        };
        Ok(EncodedPrompt {
            context,
            pooled: Some(Tensor::cat(vec![first_pooled, pooled], 1)),
            truncated: tokens.truncated,
        })
    }

    /// The unconditional half of classifier-free guidance: the negative prompt, or, for SDXL
    /// with no negative prompt, zeros.
    fn encode_negative(
        &self,
        text: &str,
        like: &EncodedPrompt,
        clip_skip: usize,
    ) -> Result<EncodedPrompt> {
        let zeros = match (&self.second, &self.refiner) {
            (Some(s), _) => s.zeros_for_empty_negative,
            (None, Some(r)) => r.zeros_for_empty_negative,
            (None, None) => false,
        };
        match zeros {
            true if text.is_empty() => Ok(EncodedPrompt {
                context: like.context.zeros_like(),
                pooled: like.pooled.as_ref().map(Tensor::zeros_like),
                truncated: None,
            }),
            _ => self.encode_prompt(text, clip_skip),
        }
    }

    /// Checks the options and prepares the denoising loop.
    pub fn start(&self, opts: &GenerateOptions) -> Result<Sampling<'_>> {
        if opts.prompt.trim().is_empty() {
            return Err(Error::InvalidInput("the prompt is empty".into()));
        }
        for (what, text) in [
            ("prompt", &opts.prompt),
            ("negative prompt", &opts.negative_prompt),
        ] {
            let chars = text.chars().count();
            if chars > MAX_PROMPT_CHARS {
                return Err(Error::InvalidInput(format!(
                    "the {what} is {chars} characters long; at most {MAX_PROMPT_CHARS} are accepted \
                     (and only what fits the text encoder's token limit is used)"
                )));
            }
        }
        if !opts.guidance_scale.is_finite() || opts.guidance_scale < 0.0 {
            return Err(Error::InvalidInput(format!(
                "guidance scale must be a finite number >= 0, got {}",
                opts.guidance_scale
            )));
        }
        if let Timesteps::Count(n) = opts.timesteps
            && !(1..=1000).contains(&n)
        {
            return Err(Error::InvalidInput(format!(
                "steps must be between 1 and 1000, got {n}"
            )));
        }
        let factor = self.vae.config().downscale();
        let native = self.native_size();
        let (width, height) = (opts.width.unwrap_or(native), opts.height.unwrap_or(native));
        for (name, side) in [("width", width), ("height", height)] {
            if side == 0 || side > MAX_SIDE || side % factor != 0 {
                return Err(Error::InvalidInput(format!(
                    "{name} {side} must be a multiple of {factor} between {factor} and {MAX_SIDE}"
                )));
            }
        }

        // Refuse what the adapter cannot hold before any work, rather than fail mid-run.
        let batch = if self.unconditional_pass(opts.guidance_scale) {
            2
        } else {
            1
        };
        let limits = crate::device::limits(&self.device);
        let needs = memory::activations(
            self.denoiser.config(),
            self.vae.config(),
            width,
            height,
            batch,
            opts.init_image.is_some(),
            limits.max_binding_bytes,
        );
        memory::check(&needs, &limits, width, height)?;

        if let Some(mmdit) = self.denoiser.mmdit() {
            mmdit.check_latent_size(height / factor, width / factor)?;
        }
        let scheduler = self.scheduler_for(opts)?;

        let mut warnings = Vec::new();
        if let T5State::Skipped = self.t5 {
            warnings.push(Warning::TextEncoderSkipped {
                folder: "text_encoder_3".into(),
            });
        }
        let cond = self.encode_prompt(&opts.prompt, opts.clip_skip)?;
        if let Some(ignored) = cond.truncated.clone() {
            warnings.push(Warning::PromptTruncated {
                negative: false,
                ignored,
            });
        }
        let guided = self.unconditional_pass(opts.guidance_scale);
        let mut rows = vec![];
        if guided {
            let uncond = self.encode_negative(&opts.negative_prompt, &cond, opts.clip_skip)?;
            if let Some(ignored) = uncond.truncated.clone() {
                warnings.push(Warning::PromptTruncated {
                    negative: true,
                    ignored,
                });
            }
            rows.push(uncond);
        }
        rows.push(cond);
        let context = Tensor::cat(rows.iter().map(|r| r.context.clone()).collect(), 0);
        // What the UNet adds to its time embedding, one row per context row: LCM-distilled
        // UNets take the guidance scale as an embedding (instead of a second, unconditional
        // pass); SDXL's, each row's pooled text and the image's size (original = target, no
        // crop, as diffusers' pipeline defaults to).
        // The refiner takes an aesthetic score in place of the target size: diffusers'
        // defaults, the negative one in the unconditional row.
        let (h, w) = (height as f64, width as f64);
        let time_ids = |row: usize| -> Vec<f64> {
            match self.refiner {
                None => vec![h, w, 0.0, 0.0, h, w],
                Some(_) if row + 1 < rows.len() => vec![h, w, 0.0, 0.0, NEGATIVE_AESTHETIC_SCORE],
                Some(_) => vec![h, w, 0.0, 0.0, AESTHETIC_SCORE],
            }
        };
        let pooled_rows = |each: &dyn Fn(usize, Tensor<2>) -> Option<Tensor<2>>| {
            rows.iter()
                .enumerate()
                .map(|(i, r)| r.pooled.clone().and_then(|p| each(i, p)))
                .collect::<Option<Vec<_>>>()
                .map(|rows| Tensor::cat(rows, 0))
        };
        let added = match &self.denoiser {
            Denoiser::UNet(unet) => match unet.guidance_embedding(opts.guidance_scale) {
                Some(embedding) => Some(embedding.repeat_dim(0, rows.len())),
                None => pooled_rows(&|row, pooled| unet.text_time_input(pooled, &time_ids(row))),
            },
            // The MMDiT takes the pooled text itself beside its timestep.
            Denoiser::Mmdit(_) => pooled_rows(&|_, pooled| Some(pooled)),
        };

        if self.is_inpainting_model() && (opts.init_image.is_none() || opts.mask.is_none()) {
            return Err(Error::InvalidInput(
                "this is an inpainting model: it needs an init image and a mask".into(),
            ));
        }
        let (noise, shape) = self.initial_noise(opts, (width, height))?;
        let noise = Tensor::<4>::from_data(TensorData::new(noise, shape), &self.device);
        let Range { start, end } = self.steps_run(opts, scheduler.timesteps())?;
        let (latents, step, init) = match (&opts.handoff, &opts.init_image) {
            (Some(_), None) if opts.initial_latents.is_some() => {
                return Err(Error::InvalidInput(
                    "handoff latents and initial latents are two starts; give one".into(),
                ));
            }
            (Some(handoff), _) => {
                let shape = noise.dims();
                if handoff.latents.len() != shape.iter().product::<usize>() {
                    return Err(Error::InvalidInput(format!(
                        "handoff latents have {} values, {} expected for {shape:?}",
                        handoff.latents.len(),
                        shape.iter().product::<usize>()
                    )));
                }
                let latents = Tensor::<4>::from_data(
                    burn::tensor::TensorData::new(handoff.latents.clone(), shape),
                    &self.device,
                );
                (latents, start, None)
            }
            (None, None) => {
                if opts.mask.is_some() {
                    return Err(Error::InvalidInput(
                        "a mask needs an init image to inpaint".into(),
                    ));
                }
                (noise.mul_scalar(scheduler.init_noise_sigma()), 0, None)
            }
            (None, Some(image)) => {
                let init = self.init_latents(image, opts, noise, (width, height))?;
                // At full strength, pure noise as diffusers' inpainting starts from; otherwise
                // the init image noised to the first step's level.
                let latents = if opts.strength >= 1.0 {
                    init.noise.clone().mul_scalar(scheduler.init_noise_sigma())
                } else {
                    scheduler.add_noise(init.latents.clone(), init.noise.clone(), start)
                };
                (latents, start, Some(init))
            }
        };

        let noise = match &opts.step_noise {
            None => StepNoise::Seeded(SeededNoise { seed: opts.seed }),
            Some(values) => {
                let block = latents.dims().iter().product::<usize>();
                let runs = end - step;
                if values.len() != block * runs {
                    return Err(Error::InvalidInput(format!(
                        "step noise has {} values; {runs} steps of latents {:?} take {}",
                        values.len(),
                        latents.dims(),
                        block * runs
                    )));
                }
                StepNoise::Given {
                    values: values.clone(),
                    first: step,
                }
            }
        };
        Ok(Sampling {
            pipe: self,
            scheduler,
            noise,
            context,
            guidance_scale: opts.guidance_scale,
            latents,
            step,
            end,
            hands_over: opts.denoising_end.is_some(),
            init,
            added,
            predicted_clean: None,
            warnings,
            evaluations: 0,
        })
    }

    /// The scheduler a run of `opts` samples with: the options' choice, else the model's own;
    /// of the model's family (flow matching for SD 3's transformers, the others for UNets),
    /// with a flow schedule shifted for the run's image size where the config asks for it.
    pub fn scheduler_for(
        &self,
        opts: &GenerateOptions,
    ) -> Result<Box<dyn Scheduler + Send + Sync>> {
        let kind = opts
            .scheduler
            .unwrap_or_else(|| SchedulerKind::from_config(&self.scheduler_config));
        match (kind.is_flow(), self.denoiser.is_flow()) {
            (false, true) => {
                return Err(Error::InvalidInput(
                    "this model is a flow-matching transformer (SD 3): it samples with flow_euler only".into(),
                ));
            }
            (true, false) => {
                return Err(Error::InvalidInput(
                    "flow_euler samples flow-matching transformers (SD 3); this model is a diffusion UNet".into(),
                ));
            }
            _ => {}
        }
        let factor = self.vae.config().downscale();
        let native = self.native_size();
        let (width, height) = (opts.width.unwrap_or(native), opts.height.unwrap_or(native));
        let image_tokens = self
            .denoiser
            .mmdit()
            .map(|m| m.config().image_tokens(height / factor, width / factor));
        schedulers::build(kind, &self.scheduler_config, &opts.timesteps, image_tokens)
    }

    /// The steps a run of `opts` over `timesteps` takes, `start..end`. It starts at the
    /// first step; with an init image (img2img, inpainting), as diffusers does, at the start
    /// of the last floor(steps * strength) steps; with handed-over latents, at the first step
    /// below `denoising_start`. It ends at the last step, or with `denoising_end` after the
    /// last step at or above it. LINA's step windows are fractions of these steps.
    pub fn steps_run(&self, opts: &GenerateOptions, timesteps: &[f64]) -> Result<Range<usize>> {
        let steps = timesteps.len();
        // diffusers' cut: the steps whose timesteps are at or above (1 - fraction) * T.
        let cutoff = |fraction: f64, what: &str| -> Result<usize> {
            if !(fraction > 0.0 && fraction < 1.0) {
                return Err(Error::InvalidInput(format!(
                    "{what} must be in (0, 1), got {fraction}"
                )));
            }
            let total = self.scheduler_config.num_train_timesteps as f64;
            let below = (total - fraction * total).round();
            Ok(timesteps.iter().take_while(|&&t| t >= below).count())
        };
        let start = match (&opts.handoff, &opts.init_image) {
            (Some(_), Some(_)) => {
                return Err(Error::InvalidInput(
                    "handoff latents and an init image are two starts; give one".into(),
                ));
            }
            (Some(handoff), None) => {
                let start = cutoff(handoff.denoising_start, "denoising_start")?;
                if start == steps {
                    return Err(Error::InvalidInput(format!(
                        "denoising_start {} leaves none of the {steps} steps to run",
                        handoff.denoising_start,
                    )));
                }
                start
            }
            (None, Some(_)) => self.strength_start(opts, steps)?,
            (None, None) => 0,
        };
        let end = match opts.denoising_end {
            None => steps,
            Some(fraction) => cutoff(fraction, "denoising_end")?,
        };
        if end <= start {
            return Err(Error::InvalidInput(format!(
                "denoising_end {:?} leaves no step to run after step {start}",
                opts.denoising_end
            )));
        }
        Ok(start..end)
    }

    /// Where an init image's strength starts a run of `steps` ([`strength_steps`]).
    fn strength_start(&self, opts: &GenerateOptions, steps: usize) -> Result<usize> {
        if !(opts.strength > 0.0 && opts.strength <= 1.0) {
            return Err(Error::InvalidInput(format!(
                "strength must be in (0, 1], got {}",
                opts.strength
            )));
        }
        let run = strength_steps(steps, opts.strength);
        if run == 0 {
            return Err(Error::InvalidInput(format!(
                "strength {} leaves none of the {steps} steps to run",
                opts.strength
            )));
        }
        Ok(steps - run)
    }

    /// Encodes the init image and prepares the inpainting mask at latent resolution.
    fn init_latents(
        &self,
        image: &Image,
        opts: &GenerateOptions,
        noise: Tensor<4>,
        (width, height): (usize, usize),
    ) -> Result<Init> {
        let encoder = self.vae_encoder.as_ref().ok_or_else(|| {
            Error::InvalidInput(
                "this model's VAE file has no encoder, which img2img and inpainting need".into(),
            )
        })?;
        if (image.width, image.height) != (width, height) {
            return Err(Error::InvalidInput(format!(
                "the init image is {}x{}, the output {width}x{height}",
                image.width, image.height
            )));
        }
        let pixels = image.to_tensor(&self.device);
        let latents = encoder.encode_scaled(pixels.clone());
        let [_, c, h, w] = latents.dims();
        let Some(m) = &opts.mask else {
            return Ok(Init {
                latents,
                noise,
                mask: None,
                conditioning: None,
            });
        };
        if m.len() != width * height {
            return Err(Error::InvalidInput(format!(
                "the mask has {} values, {} expected ({width}x{height})",
                m.len(),
                width * height
            )));
        }
        // Binarised at one half; at latent size, the top-left pixel of each cell (diffusers
        // resizes the mask with nearest-neighbour interpolation, which picks that one).
        let (fx, fy) = (width / w, height / h);
        let cells: Vec<f32> = (0..h * w)
            .map(|i| (m[(i / w) * fy * width + (i % w) * fx] >= 0.5) as u8 as f32)
            .collect();
        let cells = Tensor::<4>::from_data(TensorData::new(cells, [1, 1, h, w]), &self.device);
        if !self.is_inpainting_model() {
            return Ok(Init {
                latents,
                noise,
                mask: Some(cells.repeat_dim(1, c)),
                conditioning: None,
            });
        }
        // The masked image: regenerated pixels set to 0 (mid-grey), the rest kept.
        let keep: Vec<f32> = m.iter().map(|&v| (v < 0.5) as u8 as f32).collect();
        let keep =
            Tensor::<4>::from_data(TensorData::new(keep, [1, 1, height, width]), &self.device);
        let masked = encoder.encode_scaled(pixels * keep.repeat_dim(1, 3));
        Ok(Init {
            latents,
            noise,
            mask: None,
            conditioning: Some(Tensor::cat(vec![cells, masked], 1)),
        })
    }

    /// Runs a whole generation; `cancel` is checked between steps.
    pub async fn generate(
        &self,
        opts: &GenerateOptions,
        hook: &mut dyn StepHook,
        cancel: &CancelToken,
    ) -> Result<Generated> {
        let mut sampling = self.start(opts)?;
        sampling.run(hook, cancel).await?;
        sampling.finish().await
    }
}

/// Where a run's stochastic steps draw their noise.
enum StepNoise {
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
    pipe: &'p StableDiffusion,
    scheduler: Box<dyn Scheduler + Send + Sync>,
    /// Fresh noise for stochastic schedulers: the seed's, or the caller's.
    noise: StepNoise,
    context: Tensor<3>,
    guidance_scale: f64,
    latents: Tensor<4>,
    step: usize,
    /// The step the run stops before: the schedule's length, or fewer where it hands its
    /// latents over ([`GenerateOptions::denoising_end`]).
    end: usize,
    /// Whether [`Sampling::finish`] gives the latents too.
    hands_over: bool,
    /// img2img or inpainting's start.
    init: Option<Init>,
    /// What the UNet adds to its time embedding, one row per context row (see
    /// [`UNet::forward_with`]): LCM's guidance embedding, SDXL's pooled text and size.
    added: Option<Tensor<2>>,
    /// The scheduler's latest prediction of the clean latents, for previews.
    predicted_clean: Option<Tensor<4>>,
    /// Things the user should know (a truncated prompt).
    pub warnings: Vec<Warning>,
    /// UNet evaluations so far (batch rows).
    evaluations: usize,
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
        self.evaluations += call.context.dims()[0] + call.regions.len();
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
            Some(affine)
                if self
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

    /// One batched model call for the base conditioning and every region term. Without
    /// region terms the guidance combine is left to the step; with them it is done here.
    /// Also gives the call's cross-attention record, where the call asks for one.
    fn predict_noise(&self, call: ModelCall) -> Result<(NoiseEstimate, Option<AttentionRecord>)> {
        let input = self.scheduler.scale_model_input(call.latents, call.step);
        let base = call.context.dims()[0];
        let [_, c, h, w] = input.dims();
        // An inpainting UNet also takes the mask and the masked image's latents.
        let input = match self.init.as_ref().and_then(|i| i.conditioning.clone()) {
            Some(extra) => Tensor::cat(vec![input, extra], 1),
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
        let inputs = if batch == 1 {
            input
        } else {
            Tensor::cat(vec![input; batch], 0)
        };
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
        // The control acts on the conditional row: the second of [uncond; cond], else the
        // only one; the region terms' rows keep their own attention.
        let (out, record) = if call.mirrored {
            let control = CrossAttentionControl {
                bias: call.attention.bias.clone().map(|b| b.flip([2])),
                record: call.attention.record,
            };
            let (out, record) = self.pipe.denoiser.forward_controlled(
                inputs.flip([3]),
                call.timestep,
                &context,
                added.as_ref(),
                &control,
                base - 1,
            );
            (out.flip([3]), record.map(|r| r.flip([2])))
        } else {
            self.pipe.denoiser.forward_controlled(
                inputs,
                call.timestep,
                &context,
                added.as_ref(),
                &call.attention,
                base - 1,
            )
        };
        let guidance = (base == 2).then_some(call.guidance_scale);
        if call.regions.is_empty() {
            return Ok((
                NoiseEstimate {
                    output: out,
                    guidance,
                },
                record,
            ));
        }
        let mut pred = NoiseEstimate {
            output: out.clone().narrow(0, 0, base),
            guidance,
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
        Ok((
            NoiseEstimate {
                output: pred,
                guidance: None,
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

/// How many of a run's last `steps` an img2img `strength` redraws: floor(steps * strength),
/// as diffusers counts them: 0 for a strength too small for so few steps.
pub fn strength_steps(steps: usize, strength: f64) -> usize {
    ((steps as f64 * strength) as usize).min(steps)
}
