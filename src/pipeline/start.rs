//! Starting a generation: checking the options, the schedule and its part this run takes,
//! the first latents (seeded noise, handed-over latents, or an init image's for img2img and
//! inpainting).

use std::ops::Range;

use burn::tensor::{Tensor, TensorData};

use super::load;
use super::sampling::{
    AdapterRun, CancelToken, ControlNetRun, Init, Sampling, StepHook, StepNoise,
};
use super::{
    AESTHETIC_SCORE, ControlNetInput, GenerateOptions, Generated, MAX_PROMPT_CHARS, MAX_SIDE,
    NEGATIVE_AESTHETIC_SCORE, ReferenceSize, SkipLayerGuidance, StableDiffusion, T5State, Warning,
};
use crate::error::{Error, Result};
use crate::image::Image;
use crate::memory;
use crate::models::denoiser::{Denoiser, ImageCondition};
use crate::models::vae::VaeEncoder;
use crate::rng::Rng;
use crate::schedulers::{self, Scheduler, SchedulerKind, SeededNoise, Timesteps};

impl StableDiffusion {
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
        if !(0.0..=1.0).contains(&opts.guidance_rescale) {
            return Err(Error::InvalidInput(format!(
                "guidance_rescale must be between 0 and 1, got {}",
                opts.guidance_rescale
            )));
        }
        if opts.guidance_rescale > 0.0 && !self.takes_guidance_rescale() {
            return Err(Error::InvalidInput(
                "guidance_rescale is the UNet pipelines' (SD 1.x, 2.x, SDXL); this model's has none"
                    .into(),
            ));
        }
        if let Some(scale) = opts.true_cfg_scale {
            if self.denoiser.flux().is_none() {
                return Err(Error::InvalidInput(
                    "true_cfg_scale is FLUX's classifier-free guidance; other models' guidance scale runs it".into(),
                ));
            }
            if !scale.is_finite() || scale < 0.0 {
                return Err(Error::InvalidInput(format!(
                    "true_cfg_scale must be a finite number >= 0, got {scale}"
                )));
            }
            if scale > 1.0 && opts.negative_prompt.is_empty() {
                return Err(Error::InvalidInput(
                    "true_cfg_scale above 1 guides away from a negative prompt: give one".into(),
                ));
            }
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

        // The size the reference image is encoded at, checked here; it is resized (if at all)
        // only once every other input has been.
        let reference_size = match &opts.reference_image {
            Some(image) => Some(self.reference_target(image, opts.reference_size)?),
            None => None,
        };

        // Refuse what the adapter cannot hold before any work, rather than fail mid-run.
        let batch = if self.unconditional_pass(opts) { 2 } else { 1 };
        let limits = crate::device::limits(&self.device);
        let needs = memory::activations(
            self.denoiser.config(),
            self.vae.config(),
            width,
            height,
            batch,
            memory::Encoded {
                output_size: opts.init_image.is_some() || opts.control_image.is_some(),
                reference: reference_size,
                t5_tokens: Some(self.t5_tokens),
            },
            limits.max_binding_bytes,
        );
        memory::check(&needs, &limits, width, height)?;

        self.denoiser
            .check_latent_size(height / factor, width / factor)?;
        if let Some(skip) = &opts.skip_layer_guidance {
            self.check_skip_layers(skip)?;
        }
        let scheduler = self.scheduler_for(opts)?;

        let mut warnings = Vec::new();
        if let T5State::Skipped = self.t5 {
            let folder = match self.denoiser {
                Denoiser::Flux(_) => load::T5_FLUX.encoder,
                _ => load::T5_SD3.encoder,
            };
            warnings.push(Warning::TextEncoderSkipped {
                folder: folder.into(),
            });
        }
        let cond = self.encode_prompt(&opts.prompt, opts.clip_skip)?;
        if let Some(ignored) = cond.truncated.clone() {
            warnings.push(Warning::PromptTruncated {
                negative: false,
                ignored,
            });
        }
        let guided = self.unconditional_pass(opts);
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
            // FLUX takes it with the guidance scale, where it embeds that.
            Denoiser::Flux(flux) => {
                pooled_rows(&|_, pooled| Some(flux.added_input(pooled, opts.guidance_scale)))
            }
        };

        let condition = self.image_condition();
        match (condition, &opts.control_image) {
            (ImageCondition::Control, None) => {
                return Err(Error::InvalidInput(
                    "this model follows a control image (FLUX.1 Canny or Depth): give one".into(),
                ));
            }
            (ImageCondition::Control, Some(_)) | (_, None) => {}
            (_, Some(_)) => {
                return Err(Error::InvalidInput(
                    "a control image is for FLUX.1 Canny and Depth (a ControlNet's is in the ControlNet inputs); this model takes none".into(),
                ));
            }
        }
        self.check_controlnet_inputs(&opts.controlnets, (width, height))?;
        match (&self.t2i_adapter, &opts.t2i_adapter) {
            (Some(_), None) => {
                return Err(Error::InvalidInput(
                    "a T2I-Adapter is loaded: give the control image it follows (or remove it)"
                        .into(),
                ));
            }
            (None, Some(_)) => {
                return Err(Error::InvalidInput(
                    "a T2I-Adapter input, but no T2I-Adapter is loaded".into(),
                ));
            }
            (Some(_), Some(input)) => {
                let image = &input.image;
                if (image.width, image.height) != (width, height) {
                    return Err(Error::InvalidInput(format!(
                        "the T2I-Adapter's control image is {}x{}, the output {width}x{height}",
                        image.width, image.height
                    )));
                }
                if !input.scale.is_finite() {
                    return Err(Error::InvalidInput(format!(
                        "the T2I-Adapter's scale {} is not finite",
                        input.scale
                    )));
                }
            }
            (None, None) => {}
        }
        if condition.inpaints() && (opts.init_image.is_none() || opts.mask.is_none()) {
            return Err(Error::InvalidInput(
                "this is an inpainting model: it needs an init image and a mask".into(),
            ));
        }
        let (noise, shape) = self.initial_noise(opts, (width, height))?;
        let noise = Tensor::<4>::from_data(TensorData::new(noise, shape), &self.device);
        let Range { start, end } = self.steps_run(opts, scheduler.timesteps())?;
        // An inpainting model's mask and masked image, made with the init latents.
        let mut inpainting = None;
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
                let (init, masked) = self.init_latents(image, opts, noise, (width, height))?;
                inpainting = masked;
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

        // The images the denoiser takes beside its latents, encoded once every other input
        // has been checked.
        let condition = match &opts.control_image {
            Some(image) => Some(self.encode_image(image, "control", (width, height))?),
            None => inpainting,
        };
        // Each ControlNet reads its control image as it is, in [0, 1]. Guess mode is all
        // theirs or none's; a first ControlNet that pools asks for it, as diffusers' pipelines
        // ask the first.
        let guess = opts.controlnet_guess_mode
            || self.controlnets.first().is_some_and(|n| n.always_guesses());
        // Each ControlNet's image embedding and the T2I-Adapter's features depend on their
        // images alone: made once for the whole run.
        let controlnets = opts
            .controlnets
            .iter()
            .zip(&self.controlnets)
            .map(|(input, net)| {
                let image = input.image.to_unit_tensor(&self.device);
                ControlNetRun {
                    condition: net.embed_image(image.clone()),
                    image,
                    scale: input.scale,
                    window: input.window,
                    first: step,
                    guess,
                }
            })
            .collect();
        let adapter = match (&self.t2i_adapter, &opts.t2i_adapter) {
            (Some(adapter), Some(input)) => {
                let image = input.image.to_unit_tensor(&self.device);
                Some(AdapterRun {
                    features: adapter.forward(image.clone(), input.scale)?,
                    image,
                    scale: input.scale,
                })
            }
            _ => None,
        };
        let reference = opts
            .reference_image
            .as_ref()
            .zip(reference_size)
            .map(|(image, size)| self.encode_reference(image, size))
            .transpose()?;

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
            // The scale the rows combine with (FLUX's true CFG scale); the guidance scale
            // where none runs, for hooks that read it.
            guidance_scale: self
                .classifier_free_scale(opts)
                .unwrap_or(opts.guidance_scale),
            guidance_rescale: opts.guidance_rescale,
            latents,
            step,
            end,
            hands_over: opts.denoising_end.is_some(),
            init,
            condition,
            reference,
            added,
            predicted_clean: None,
            warnings,
            evaluations: 0,
            controlnets,
            adapter,
            // As in diffusers, it acts only beside classifier-free guidance.
            skip_layers: opts
                .skip_layer_guidance
                .clone()
                .filter(|_| self.unconditional_pass(opts)),
        })
    }

    /// Skip-layer guidance fits this model: a transformer that has the blocks it skips, a
    /// finite scale and a window within the schedule.
    fn check_skip_layers(&self, skip: &SkipLayerGuidance) -> Result<()> {
        let Some(mmdit) = self.denoiser.mmdit() else {
            let has = match self.denoiser {
                Denoiser::Flux(_) => "FLUX's transformer",
                _ => "a UNet",
            };
            return Err(Error::InvalidInput(format!(
                "skip-layer guidance skips an SD 3 transformer's blocks; this model has {has}"
            )));
        };
        let blocks = mmdit.blocks();
        if let Some(layer) = skip.layers.iter().find(|&&l| l >= blocks) {
            return Err(Error::InvalidInput(format!(
                "skip-layer guidance: the transformer has blocks 0 to {}, not {layer}",
                blocks - 1
            )));
        }
        if skip.layers.is_empty() {
            return Err(Error::InvalidInput(
                "skip-layer guidance: no layers to skip".into(),
            ));
        }
        if !skip.scale.is_finite() || skip.scale < 0.0 {
            return Err(Error::InvalidInput(format!(
                "skip-layer guidance: the scale must be a finite number >= 0, got {}",
                skip.scale
            )));
        }
        let window_ok = [skip.start, skip.stop]
            .iter()
            .all(|f| (0.0..=1.0).contains(f))
            && skip.start <= skip.stop;
        if !window_ok {
            return Err(Error::InvalidInput(format!(
                "skip-layer guidance: start and stop must satisfy 0 <= start <= stop <= 1, got {} and {}",
                skip.start, skip.stop
            )));
        }
        Ok(())
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
        let image_tokens = self.denoiser.image_tokens(height / factor, width / factor);
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

    /// How many of a run's last `steps` an img2img `strength` redraws, as diffusers' pipelines
    /// count them: the UNets' floor(steps x strength); SD 3's and FLUX's round the steps they
    /// skip down instead, steps - floor(steps - steps x strength) (one more where the product
    /// is not whole: 8 of 10 at 0.75, against the UNets' 7). 0 for a strength too small for
    /// so few steps.
    pub fn strength_steps(&self, steps: usize, strength: f64) -> usize {
        let redrawn = steps as f64 * strength;
        match self.denoiser.is_flow() {
            true => steps - ((steps as f64 - redrawn).max(0.0) as usize).min(steps),
            false => (redrawn as usize).min(steps),
        }
    }

    /// Where an init image's strength starts a run of `steps` ([`Self::strength_steps`]).
    fn strength_start(&self, opts: &GenerateOptions, steps: usize) -> Result<usize> {
        if !(opts.strength > 0.0 && opts.strength <= 1.0) {
            return Err(Error::InvalidInput(format!(
                "strength must be in (0, 1], got {}",
                opts.strength
            )));
        }
        let run = self.strength_steps(steps, opts.strength);
        if run == 0 {
            return Err(Error::InvalidInput(format!(
                "strength {} leaves none of the {steps} steps to run",
                opts.strength
            )));
        }
        Ok(steps - run)
    }

    /// The VAE's encoder, which `what` image needs.
    fn encoder(&self, what: &str) -> Result<&VaeEncoder> {
        self.vae_encoder.as_deref().ok_or_else(|| {
            Error::InvalidInput(format!(
                "this model's VAE file has no encoder, which the {what} image needs"
            ))
        })
    }

    /// One input per loaded ControlNet, each image of the output's size, each scale finite and
    /// each window within the schedule and in order.
    fn check_controlnet_inputs(
        &self,
        inputs: &[ControlNetInput],
        (width, height): (usize, usize),
    ) -> Result<()> {
        let loaded = self.controlnets.len();
        if inputs.len() != loaded {
            return Err(Error::InvalidInput(format!(
                "{} ControlNet input(s) for {loaded} loaded ControlNet(s): give each loaded ControlNet its control image",
                inputs.len()
            )));
        }
        for (i, input) in inputs.iter().enumerate() {
            let (image, scale, (first, last)) = (&input.image, input.scale, input.window);
            if (image.width, image.height) != (width, height) {
                return Err(Error::InvalidInput(format!(
                    "ControlNet {i}: the control image is {}x{}, the output {width}x{height}",
                    image.width, image.height
                )));
            }
            if !scale.is_finite() || !(0.0..=1.0).contains(&first) || !(first..=1.0).contains(&last)
            {
                return Err(Error::InvalidInput(format!(
                    "ControlNet {i}: scale {scale} and window {first}..{last}: the scale must be finite, the window within 0..1 and start before it ends"
                )));
            }
        }
        Ok(())
    }

    /// An image of the output's size (`what` it is, for errors) as scaled latents
    /// [1, C, h, w].
    fn encode_image(
        &self,
        image: &Image,
        what: &str,
        (width, height): (usize, usize),
    ) -> Result<Tensor<4>> {
        let encoder = self.encoder(what)?;
        if (image.width, image.height) != (width, height) {
            return Err(Error::InvalidInput(format!(
                "the {what} image is {}x{}, the output {width}x{height}",
                image.width, image.height
            )));
        }
        Ok(encoder.encode_scaled(image.to_tensor(&self.device)))
    }

    /// The size (width, height) FLUX.1 Kontext's reference image is encoded at: FLUX only
    /// (a transformer taking the latents alone), sides that pack into whole 2x2 patches of
    /// latents.
    fn reference_target(&self, image: &Image, size: ReferenceSize) -> Result<(usize, usize)> {
        if !self.takes_reference_image() {
            return Err(Error::InvalidInput(
                "a reference image is FLUX.1 Kontext's; this model takes none".into(),
            ));
        }
        let multiple = 2 * self.vae.config().downscale();
        match size.target(image.width, image.height, multiple) {
            Some((w, h)) if w <= MAX_SIDE && h <= MAX_SIDE => Ok((w, h)),
            Some((w, h)) => Err(Error::InvalidInput(format!(
                "the reference image would be encoded at {w}x{h}; at most {MAX_SIDE} a side is accepted (resize it, or let it take Kontext's trained sizes)"
            ))),
            None => Err(Error::InvalidInput(format!(
                "the reference image is {}x{}; its sides must be at least {multiple}",
                image.width, image.height
            ))),
        }
    }

    /// FLUX.1 Kontext's reference image as latents, resized to `size` where it is not.
    fn encode_reference(
        &self,
        image: &Image,
        (width, height): (usize, usize),
    ) -> Result<Tensor<4>> {
        let resized;
        let image = if (image.width, image.height) == (width, height) {
            image
        } else {
            resized = image.resized(width, height)?;
            &resized
        };
        Ok(self
            .encoder("reference")?
            .encode_scaled(image.to_tensor(&self.device)))
    }

    /// Encodes the init image and prepares the inpainting mask at latent resolution: as a
    /// blend mask for models of plain latents, else as what an inpainting model takes beside
    /// its latents (the second value).
    fn init_latents(
        &self,
        image: &Image,
        opts: &GenerateOptions,
        noise: Tensor<4>,
        (width, height): (usize, usize),
    ) -> Result<(Init, Option<Tensor<4>>)> {
        let latents = self.encode_image(image, "init", (width, height))?;
        let [_, c, h, w] = latents.dims();
        let Some(m) = &opts.mask else {
            let init = Init {
                latents,
                noise,
                mask: None,
            };
            return Ok((init, None));
        };
        if m.len() != width * height {
            return Err(Error::InvalidInput(format!(
                "the mask has {} values, {} expected ({width}x{height})",
                m.len(),
                width * height
            )));
        }
        let regenerated = |x: usize, y: usize| (m[y * width + x] >= 0.5) as u8 as f32;
        // Binarised at one half; at latent size, the top-left pixel of each cell (diffusers
        // resizes the mask with nearest-neighbour interpolation, which picks that one).
        let f = width / w;
        let cells: Vec<f32> = (0..h * w)
            .map(|i| regenerated((i % w) * f, (i / w) * f))
            .collect();
        let cells = Tensor::<4>::from_data(TensorData::new(cells, [1, 1, h, w]), &self.device);
        // The masked image: regenerated pixels set to 0 (mid-grey), the rest kept.
        let masked = || -> Result<Tensor<4>> {
            let keep: Vec<f32> = m.iter().map(|&v| (v < 0.5) as u8 as f32).collect();
            let keep =
                Tensor::<4>::from_data(TensorData::new(keep, [1, 1, height, width]), &self.device);
            let pixels = image.to_tensor(&self.device) * keep.repeat_dim(1, 3);
            Ok(self.encoder("init")?.encode_scaled(pixels))
        };
        let extra = match self.image_condition() {
            // Models of plain latents inpaint by blending after each step.
            ImageCondition::None | ImageCondition::Control => {
                let init = Init {
                    latents,
                    noise,
                    mask: Some(cells.repeat_dim(1, c)),
                };
                return Ok((init, None));
            }
            // SD's inpainting UNets: the mask at latent size, then the masked image.
            ImageCondition::Inpaint => vec![cells, masked()?],
            // FLUX.1 Fill: the masked image, then every pixel of the mask, each cell's f x f
            // pixels as channels (row within the cell, then column), as FluxFillPipeline
            // folds them.
            ImageCondition::Fill => {
                let pixels: Vec<f32> = (0..f * f * h * w)
                    .map(|i| {
                        let (channel, cell) = (i / (h * w), i % (h * w));
                        let (x, y) = ((cell % w) * f, (cell / w) * f);
                        regenerated(x + channel % f, y + channel / f)
                    })
                    .collect();
                let pixels =
                    Tensor::<4>::from_data(TensorData::new(pixels, [1, f * f, h, w]), &self.device);
                vec![masked()?, pixels]
            }
        };
        let init = Init {
            latents,
            noise,
            mask: None,
        };
        Ok((init, Some(Tensor::cat(extra, 1))))
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
