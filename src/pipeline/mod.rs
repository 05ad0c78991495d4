//! The text-to-image sampler: prompt to embeddings, seeded latents, a denoising loop with
//! classifier-free guidance that is open between steps, and the VAE decode.
//!
//! The loop is a value, [`Sampling`], that the caller advances one step at a time, so a page
//! can await between steps (progress, previews, cancellation) and interventions can read and
//! change everything a step touches through a [`StepHook`].
//!
//! Here the model and its options; the rest one module per stage:
//! - `load`: a diffusers folder or a single-file checkpoint to a model on the device;
//! - `adapters`: textual-inversion embeddings and LoRA scales changed on a loaded model;
//! - `prompt`: a prompt to what the denoiser takes;
//! - `start`: the options checked, the schedule and the first latents;
//! - `sampling`: the loop itself, one step at a time, and the decode; what an intervention
//!   sees and changes at each step.

mod adapters;
mod load;
mod prompt;
mod sampling;
mod start;

pub use prompt::EncodedPrompt;
pub use sampling::{
    CancelToken, Hooks, ModelCall, NoHook, RegionTerm, Sampling, StepFuture, StepHook, StepState,
};

use burn::tensor::Device;

use crate::error::Result;
use crate::image::Image;
use crate::kernels::Kernels;
use crate::memory;
use crate::models::clip::ClipTextEncoder;
use crate::models::controlnet::ControlNet;
use crate::models::denoiser::{Denoiser, ImageCondition};
use crate::models::t2i_adapter::T2IAdapter;
use crate::models::t5::T5Encoder;
use crate::models::taesd::TaesdDecoder;
use crate::models::unet::UNet;
use crate::models::vae::{VaeDecoder, VaeEncoder};
use crate::schedulers::{SchedulerConfig, SchedulerKind, Timesteps};
use crate::tokenizer::{ClipTokenizer, T5Tokenizer};
use crate::weights::human_bytes;

use adapters::Adapters;

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
    /// more the image is regenerated, elsewhere kept (blended in the latents every step, or,
    /// for an inpainting model, given to it with the masked image).
    pub mask: Option<Vec<f32>>,
    /// The control image FLUX.1 Canny and Depth follow (of the output's size): an edge map
    /// or a depth map, as their pipelines take it (made beforehand; this runtime detects no
    /// edges or depth). Only for those models, which need one. (A ControlNet's image is in
    /// [`controlnets`](Self::controlnets).)
    pub control_image: Option<Image>,
    /// FLUX.1 Kontext's input image (diffusers' `image` of `FluxKontextPipeline`): the image
    /// the prompt edits, resized as [`reference_size`](Self::reference_size) says, encoded
    /// and given to the transformer as tokens beside the latents'. FLUX only.
    pub reference_image: Option<Image>,
    /// How the reference image is sized before it is encoded: by default to the size
    /// Kontext was trained at nearest its aspect ratio, as diffusers does.
    pub reference_size: ReferenceSize,
    /// SD 3.5's skip-layer guidance (transformers only; acts only with classifier-free
    /// guidance on, as in diffusers).
    pub skip_layer_guidance: Option<SkipLayerGuidance>,
    /// FLUX's classifier-free guidance beside the guidance its transformer embeds
    /// (diffusers' `true_cfg_scale`): above 1, with a negative prompt, each step runs the
    /// negative prompt's row too and takes `negative + scale · (prompt − negative)`. FLUX
    /// only; `None` (or at most 1) runs none.
    pub true_cfg_scale: Option<f64>,
    /// Guidance rescale (diffusers' `guidance_rescale`, Lin et al. 2023), in [0, 1]: with
    /// classifier-free guidance, each step's guided prediction is brought this far toward
    /// the conditional prediction's standard deviation, against the overexposure strong
    /// guidance gives, above all at zero terminal SNR (`rescale_betas_zero_snr`). UNet
    /// models only (SD 3's and FLUX's pipelines have none); 0 leaves guidance as it is.
    pub guidance_rescale: f64,
    /// What each loaded ControlNet ([`StableDiffusion::load_controlnet`],
    /// [`StableDiffusion::add_controlnet`]) follows, one per ControlNet in the order they
    /// were loaded: its control image and how it steers. Several ControlNets' additions are
    /// summed (diffusers' `MultiControlNetModel`).
    pub controlnets: Vec<ControlNetInput>,
    /// The ControlNets' guess mode (diffusers' `guess_mode`): with classifier-free guidance
    /// they steer the conditional prediction alone, and each one's additions grow from a
    /// tenth of its scale at the first skip connection to the whole at the mid block, so that
    /// they draw what the control images show even without a prompt (diffusers suggests
    /// guidance 3 to 5). Always on where a ControlNet averages its outputs (shuffle's).
    pub controlnet_guess_mode: bool,
    /// What a loaded T2I-Adapter ([`StableDiffusion::load_t2i_adapter`]) follows: its
    /// control image and scale. It needs one; other models take none.
    pub t2i_adapter: Option<T2IAdapterInput>,
}

/// Skip-layer guidance, as diffusers' `StableDiffusion3Pipeline` runs it
/// (`skip_guidance_layers`, `skip_layer_guidance_scale`, `_start`, `_stop`): in step `i` of
/// the `n` the schedule has, where `start · n < i < stop · n`, the transformer is called once
/// more on the conditional row with the joint blocks `layers` skipped, and the guided
/// prediction moves by `scale · (conditional − skipped)`: away from what the model predicts
/// without those blocks. Stability suggests blocks 7, 8 and 9 for SD 3.5 medium.
#[derive(Clone, Debug, PartialEq)]
pub struct SkipLayerGuidance {
    /// Indices of the joint blocks to skip.
    pub layers: Vec<usize>,
    pub scale: f64,
    /// The window, as fractions of the schedule's steps.
    pub start: f64,
    pub stop: f64,
}

impl SkipLayerGuidance {
    /// `layers` skipped with diffusers' defaults: scale 2.8, from 1% to 20% of the steps.
    pub fn new(layers: Vec<usize>) -> Self {
        Self::with(layers, None, None, None)
    }

    /// `layers` skipped with the settings given, diffusers' defaults for those left out (what
    /// the CLI and the browser take).
    pub fn with(
        layers: Vec<usize>,
        scale: Option<f64>,
        start: Option<f64>,
        stop: Option<f64>,
    ) -> Self {
        Self {
            layers,
            scale: scale.unwrap_or(2.8),
            start: start.unwrap_or(0.01),
            stop: stop.unwrap_or(0.2),
        }
    }

    /// Whether step `step` of `steps` is in the window (diffusers' strict bounds).
    pub fn acts_at(&self, step: usize, steps: usize) -> bool {
        let (i, n) = (step as f64, steps as f64);
        i > n * self.start && i < n * self.stop
    }
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
            true_cfg_scale: None,
            guidance_rescale: 0.0,
            controlnets: Vec::new(),
            controlnet_guess_mode: false,
            t2i_adapter: None,
            init_image: None,
            control_image: None,
            reference_image: None,
            reference_size: ReferenceSize::Trained,
            strength: 0.8,
            mask: None,
            skip_layer_guidance: None,
        }
    }
}

/// What one ControlNet follows in a run, and how ([`GenerateOptions::controlnets`]).
#[derive(Clone, Debug, PartialEq)]
pub struct ControlNetInput {
    /// The control image (of the output's size): an edge map, a depth map, a pose, made
    /// beforehand as the ControlNet was trained on them.
    pub image: Image,
    /// How strongly it steers (diffusers' `controlnet_conditioning_scale`): its additions to
    /// the UNet are scaled by it; 0 turns it off.
    pub scale: f64,
    /// Where in the schedule it acts, as fractions of the steps the run takes (diffusers'
    /// `control_guidance_start` and `control_guidance_end`; img2img counts from its first
    /// step, as diffusers' img2img pipelines do): step `i` of `n` when `start <= i/n` and
    /// `(i+1)/n <= end`.
    pub window: (f64, f64),
}

impl ControlNetInput {
    /// `image` at scale 1 over every step, diffusers' defaults.
    pub fn new(image: Image) -> Self {
        Self {
            image,
            scale: 1.0,
            window: (0.0, 1.0),
        }
    }
}

/// What a T2I-Adapter follows in a run ([`GenerateOptions::t2i_adapter`]).
#[derive(Clone, Debug, PartialEq)]
pub struct T2IAdapterInput {
    /// The control image (of the output's size): a sketch, an edge or depth map, a pose,
    /// made beforehand as the adapter was trained on them.
    pub image: Image,
    /// How strongly it steers (diffusers' `adapter_conditioning_scale`): its features are
    /// scaled by it; 1 as trained, 0 turns it off.
    pub scale: f64,
}

/// How a FLUX.1 Kontext reference image ([`GenerateOptions::reference_image`]) is sized
/// before it is encoded, as `FluxKontextPipeline` sizes its `image`: either way the sides
/// are then cut down to multiples of twice the VAE's downscale (16), and where that changes
/// the size the image is resampled as Pillow's Lanczos filter does
/// ([`Image::resized`]), so that the latents match diffusers'.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReferenceSize {
    /// The size Kontext was trained at whose aspect ratio is nearest the image's
    /// (diffusers' default, `_auto_resize=True`): a 1000x700 photo is encoded at 1248x832.
    #[default]
    Trained,
    /// The image's own size (`_auto_resize=False`), for models trained at other sizes.
    Kept,
}

/// The sizes FLUX.1 Kontext was trained at (width, height), about a megapixel each, as
/// diffusers' `FluxKontextPipeline` lists them.
pub const KONTEXT_SIZES: [(usize, usize); 17] = [
    (672, 1568),
    (688, 1504),
    (720, 1456),
    (752, 1392),
    (800, 1328),
    (832, 1248),
    (880, 1184),
    (944, 1104),
    (1024, 1024),
    (1104, 944),
    (1184, 880),
    (1248, 832),
    (1328, 800),
    (1392, 752),
    (1456, 720),
    (1504, 688),
    (1568, 672),
];

impl ReferenceSize {
    pub fn parse(name: &str) -> Result<Self> {
        match name {
            "trained" => Ok(Self::Trained),
            "kept" => Ok(Self::Kept),
            other => Err(crate::error::Error::InvalidInput(format!(
                "unknown reference size \"{other}\" (trained or kept)"
            ))),
        }
    }

    /// The size (width, height) an image of `width`x`height` is encoded at, its sides
    /// multiples of `multiple`; `None` where a side is shorter than `multiple`. As diffusers
    /// does, the aspect ratio is the image's once its sides are cut to multiples, and a tie
    /// between trained sizes goes to the narrower.
    pub fn target(self, width: usize, height: usize, multiple: usize) -> Option<(usize, usize)> {
        let cut = |side: usize| side / multiple * multiple;
        let (width, height) = (cut(width), cut(height));
        if width == 0 || height == 0 {
            return None;
        }
        let (w, h) = match self {
            Self::Kept => (width, height),
            Self::Trained => {
                let aspect = width as f64 / height as f64;
                let off = |&(w, h): &(usize, usize)| (aspect - w as f64 / h as f64).abs();
                // The list runs from narrow to wide, so the first of equals is the narrower.
                *KONTEXT_SIZES
                    .iter()
                    .min_by(|a, b| off(a).total_cmp(&off(b)))
                    .expect("a non-empty list")
            }
        };
        Some((cut(w), cut(h)))
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
    /// T5's places in the text context (diffusers' `max_sequence_length`): the pipeline's
    /// default for the model (SD 3's 256, FLUX's 512) unless set; 0 for UNets.
    t5_tokens: usize,
    denoiser: Denoiser,
    // Boxed, as the denoiser is: each holds hundreds of tensor handles inline (22 KB), and
    // unoptimised builds give every move of the model a stack slot of its size.
    vae: Box<VaeDecoder>,
    /// Present when the VAE file has the encoder (img2img and inpainting need it).
    vae_encoder: Option<Box<VaeEncoder>>,
    /// TAESD's decoder, where the folder has `vae_tiny/`: cheap per-step previews.
    taesd: Option<TaesdDecoder>,
    /// A T2I-Adapter beside the UNet, where one is loaded
    /// ([`StableDiffusion::load_t2i_adapter`]).
    t2i_adapter: Option<T2IAdapter>,
    /// The ControlNets beside the UNet, in the order they were loaded
    /// ([`StableDiffusion::load_controlnet`], [`StableDiffusion::add_controlnet`]).
    controlnets: Vec<ControlNet>,
    scheduler_config: SchedulerConfig,
    device: Device,
    /// The kernels every layer of this model runs (chosen at load).
    kernels: Kernels,
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

/// The longest T5 text the pipelines take (diffusers refuses a longer `max_sequence_length`).
pub const MAX_T5_TOKENS: usize = 512;

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

impl StableDiffusion {
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
    /// CLIP), and for SD 3 the T5 places after them; for FLUX, T5's alone. Attention biases
    /// and records span it.
    pub fn context_length(&self) -> usize {
        let clip = match self.denoiser {
            Denoiser::Flux(_) => 0,
            _ => self.tokenizer.max_length(),
        };
        clip + self.t5_tokens
    }

    /// T5's places in the text context (diffusers' `max_sequence_length`), 0 for UNets.
    pub fn max_sequence_length(&self) -> usize {
        self.t5_tokens
    }

    /// Sets how many tokens T5's text is padded or cut to (diffusers' `max_sequence_length`,
    /// which the pipelines take per call): SD 3 and FLUX only, from 1 to 512. FLUX.1
    /// schnell's model card passes 256 where `FluxPipeline` defaults to 512; padding takes
    /// part in the attention, so the length changes the image. It holds for every run after,
    /// and LINA's attention biases and records span the new context.
    pub fn set_max_sequence_length(&mut self, tokens: usize) -> Result<()> {
        if self.denoiser.t5_tokens() == 0 {
            return Err(crate::error::Error::InvalidInput(
                "max_sequence_length is T5's; this model reads no T5 (SD 3 and FLUX do)".into(),
            ));
        }
        if !(1..=MAX_T5_TOKENS).contains(&tokens) {
            return Err(crate::error::Error::InvalidInput(format!(
                "max_sequence_length must be between 1 and {MAX_T5_TOKENS}, got {tokens}"
            )));
        }
        self.t5_tokens = tokens;
        Ok(())
    }

    /// For each place of the text context ([`context_length`](Self::context_length) of
    /// them), the lower-cased word of `text` its token belongs to, `None` for special tokens,
    /// padding and places no tokenizer fills: CLIP's tokens (SD 3's T5 places after them are
    /// `None`), or FLUX's T5 tokens (all `None` where T5 was left behind). LINA finds a
    /// word's places in the context here.
    pub fn context_words(&self, text: &str) -> Result<Vec<Option<String>>> {
        let mut words = match (&self.denoiser, &self.t5) {
            (Denoiser::Flux(_), T5State::Loaded(t5)) => t5.0.words(text, self.context_length())?,
            (Denoiser::Flux(_), _) => Vec::new(),
            _ => self.tokenizer.words(text)?,
        };
        words.resize(self.context_length(), None);
        Ok(words)
    }

    /// The places of `text`'s context up to and including its end token: its words' tokens
    /// and the special tokens around them (CLIP's start and end, T5's end).
    pub fn context_used(&self, text: &str) -> Result<usize> {
        let words = self.context_words(text)?.iter().flatten().count();
        let specials = match self.denoiser {
            Denoiser::Flux(_) => 1,
            _ => 2,
        };
        Ok((words + specials).min(self.context_length()))
    }

    /// The model the sampler calls at each step.
    pub fn denoiser(&self) -> &Denoiser {
        &self.denoiser
    }
    /// The ControlNets the UNet runs beside, in the order they were loaded.
    pub fn controlnets(&self) -> &[ControlNet] {
        &self.controlnets
    }

    /// Drops the loaded ControlNets: generations run the UNet alone again.
    pub fn remove_controlnets(&mut self) {
        self.controlnets.clear();
    }

    /// The T2I-Adapter the UNet runs beside, where one is loaded.
    pub fn t2i_adapter(&self) -> Option<&T2IAdapter> {
        self.t2i_adapter.as_ref()
    }

    /// Drops the loaded T2I-Adapter, if any.
    pub fn remove_t2i_adapter(&mut self) {
        self.t2i_adapter = None;
    }

    pub fn vae(&self) -> &VaeDecoder {
        &self.vae
    }

    pub fn vae_encoder(&self) -> Option<&VaeEncoder> {
        self.vae_encoder.as_deref()
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

    /// Whether classifier-free guidance needs a second, unconditional pass.
    fn unconditional_pass(&self, opts: &GenerateOptions) -> bool {
        self.classifier_free_scale(opts).is_some()
    }

    /// The scale classifier-free guidance combines the two rows with, where it runs: the
    /// guidance scale above 1, unless the model takes it otherwise (LCM's embedding,
    /// FLUX's); for FLUX, `true_cfg_scale` above 1 (with a negative prompt, which the checks
    /// before a run require).
    fn classifier_free_scale(&self, opts: &GenerateOptions) -> Option<f64> {
        match &self.denoiser {
            Denoiser::Flux(_) => opts.true_cfg_scale.filter(|&s| s > 1.0),
            Denoiser::UNet(unet) if unet.embeds_guidance() => None,
            _ => (opts.guidance_scale > 1.0).then_some(opts.guidance_scale),
        }
    }

    /// Whether a run may set [`GenerateOptions::guidance_rescale`]: UNet models, whose
    /// pipelines have it in diffusers (SD 3's and FLUX's have none).
    pub fn takes_guidance_rescale(&self) -> bool {
        self.denoiser.unet().is_some()
    }

    /// Whether a run may give a reference image to edit (FLUX.1 Kontext's input,
    /// [`GenerateOptions::reference_image`]): FLUX transformers that take the latents alone.
    pub fn takes_reference_image(&self) -> bool {
        self.denoiser.flux().is_some() && self.image_condition() == ImageCondition::None
    }

    /// What the denoiser takes beside its latents: an inpainting model's mask and masked
    /// image (SD's 9-channel UNets, FLUX.1 Fill), which it needs both of; FLUX.1 Canny's or
    /// Depth's control image.
    pub fn image_condition(&self) -> ImageCondition {
        let vae = self.vae.config();
        // The load refused every pairing of channels that fits none.
        ImageCondition::of(self.denoiser.config(), vae.latent_channels, vae.downscale())
            .unwrap_or(ImageCondition::None)
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
}
