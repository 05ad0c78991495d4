//! `lina-cli generate`: one image to a PNG file.

use std::path::PathBuf;
use std::time::Instant;

use lina::attention::{AttentionRecorder, TokenMaps};
use lina_runtime::image::Image;
use lina_runtime::kernels::Kernels;
use lina_runtime::pipeline::{
    CancelToken, ControlNetInput, GenerateOptions, Handoff, ReferenceSize, SkipLayerGuidance,
    StableDiffusion, StepHook, T2IAdapterInput,
};
use lina_runtime::schedulers::{SchedulerKind, Timesteps};
use lina_runtime::source::DirSource;
use lina_runtime::weights::{Lora, ScaledLora};
use lina_runtime::{Error, Result};

use crate::common::{self, DeviceArg, StepBar};

#[derive(clap::Args)]
pub struct Args {
    /// A diffusers-layout model folder (SD 1.x, 2.x, XL, 3.x, FLUX.1), or a single-file
    /// checkpoint (`.safetensors` in the original layout of SD 1.x, 2.x, XL or 3.x).
    #[arg(long)]
    model: PathBuf,
    /// For a single-file checkpoint: a diffusers folder of the same family that supplies its
    /// tokenizer, and any configs that should win over those inferred from the file (its
    /// `scheduler/scheduler_config.json` tells an SD 2.x epsilon model from the v-prediction
    /// one assumed). By default the checkpoint's own folder.
    #[arg(long)]
    config: Option<PathBuf>,
    #[arg(long)]
    prompt: String,
    #[arg(long, default_value = "")]
    negative: String,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Denoising steps.
    #[arg(long, default_value_t = 20, conflicts_with = "timesteps")]
    steps: usize,
    /// Explicit timesteps instead of a step count: T1,T2,...
    #[arg(long, value_delimiter = ',')]
    timesteps: Option<Vec<f64>>,
    /// Classifier-free guidance scale; at 1 or below the unconditional pass is skipped. For
    /// FLUX.1-dev the scale its transformer embeds (no unconditional pass; schnell ignores
    /// it).
    #[arg(long, default_value_t = 7.5)]
    guidance: f64,
    /// Image width in pixels (the model's native size by default).
    #[arg(long)]
    width: Option<usize>,
    #[arg(long)]
    height: Option<usize>,
    /// ddim, euler, euler_a, dpm++2m, lcm, or flow_euler for flow-matching models (SD 3,
    /// FLUX) (the model's own by default).
    #[arg(long, value_parser = common::scheduler)]
    scheduler: Option<SchedulerKind>,
    /// Skip this many final text encoder layers.
    #[arg(long, default_value_t = 0)]
    clip_skip: usize,
    /// SD 3 and FLUX: how many tokens T5's text is padded or cut to (diffusers'
    /// `max_sequence_length`; 1 to 512). By default the pipelines' (SD 3's 256, FLUX's 512);
    /// FLUX.1 schnell's model card passes 256.
    #[arg(long)]
    max_sequence_length: Option<usize>,
    #[command(flatten)]
    device: DeviceArg,
    /// LINA's plan: baseline, lina, JSON, or a JSON file. A plan other than baseline runs
    /// LINA's interventions on the CSG parsed from the prompt unless --csg gives one.
    #[arg(long, default_value = "baseline", value_parser = common::plan)]
    plan: lina::Plan,
    /// A Causal Scene Graph as JSON (with layout boxes for region guidance).
    #[arg(long)]
    csg: Option<PathBuf>,
    /// img2img: start from this PNG.
    #[arg(long)]
    init_image: Option<PathBuf>,
    /// img2img: how much of the schedule runs (1 redraws from noise).
    #[arg(long, default_value_t = 0.8, requires = "init_image")]
    strength: f64,
    /// Inpainting: a PNG whose white regions are regenerated (with a latent blend, or by an
    /// inpainting model: SD's 9-channel UNets, FLUX.1 Fill).
    #[arg(long, requires = "init_image")]
    mask: Option<PathBuf>,
    /// FLUX.1 Canny or Depth: the edge or depth map (a PNG of the output's size) the image
    /// follows, made beforehand as their pipelines take it.
    #[arg(long)]
    control_image: Option<PathBuf>,
    /// A ControlNet to run beside the UNet: its diffusers folder (`ControlNetModel`:
    /// config.json and diffusion_pytorch_model.safetensors) or an original ControlNet's
    /// `.safetensors` file (`control_v11p_sd15_canny` and the like). Repeat it for several
    /// (their additions summed, as diffusers' `MultiControlNetModel`), each with its
    /// `--controlnet-image` in the same order.
    #[arg(long, requires = "controlnet_image")]
    controlnet: Vec<PathBuf>,
    /// The control image (a PNG of the output's size: an edge or depth map, a pose) each
    /// ControlNet follows, one per `--controlnet`, in their order.
    #[arg(long, requires = "controlnet")]
    controlnet_image: Vec<PathBuf>,
    /// How strongly the ControlNets steer (diffusers' `controlnet_conditioning_scale`):
    /// one for all, or one per `--controlnet`. Default 1.
    #[arg(long, requires = "controlnet")]
    controlnet_scale: Vec<f64>,
    /// Where in the schedule the ControlNets start and stop acting, as fractions of the steps
    /// the run takes (diffusers' `control_guidance_start` and `control_guidance_end`): one
    /// for all, or one per `--controlnet`. Default 0 and 1.
    #[arg(long, requires = "controlnet")]
    control_guidance_start: Vec<f64>,
    #[arg(long, requires = "controlnet")]
    control_guidance_end: Vec<f64>,
    /// The ControlNets' guess mode (diffusers' `guess_mode`): they steer the conditional
    /// prediction alone, their additions growing toward the mid block, to draw what the
    /// control images show even without a prompt (diffusers suggests guidance 3 to 5).
    #[arg(long, requires = "controlnet")]
    controlnet_guess_mode: bool,
    /// A T2I-Adapter to run beside the UNet (diffusers' `T2IAdapter` folder, of the full
    /// type: SD 1.x's and 2.x's), following `--t2i-adapter-image`.
    #[arg(long, requires = "t2i_adapter_image")]
    t2i_adapter: Option<PathBuf>,
    /// The T2I-Adapter's control image (a PNG of the output's size: a sketch, an edge or
    /// depth map, a pose).
    #[arg(long, requires = "t2i_adapter")]
    t2i_adapter_image: Option<PathBuf>,
    /// How strongly the T2I-Adapter steers (diffusers' `adapter_conditioning_scale`).
    #[arg(long, default_value_t = 1.0, requires = "t2i_adapter")]
    t2i_adapter_scale: f64,
    /// FLUX.1 Kontext: the image (a PNG) the prompt edits.
    #[arg(long)]
    reference_image: Option<PathBuf>,
    /// How the reference image is sized before it is encoded: "trained" (the size Kontext was
    /// trained at nearest its aspect ratio, as diffusers does) or "kept" (its own size); its
    /// sides are then cut to multiples of 16, resampled as Pillow's Lanczos filter does.
    #[arg(long, value_parser = common::reference_size, default_value = "trained", requires = "reference_image")]
    reference_size: ReferenceSize,
    #[arg(long, default_value = "out.png")]
    out: PathBuf,
    /// Also write where the image attended to each word of the prompt, as a PNG strip: the
    /// image, then one heat map per word (its cross-attention over all steps, over the image).
    #[arg(long)]
    attention_maps: Option<PathBuf>,
    /// Start from these unit-variance latents, [1, C, H/8, W/8] in a .npy file (f32 or f64),
    /// instead of the seed's: what diffusers' pipelines take as `latents`, so the same latents,
    /// prompt and scheduler give diffusers' image.
    #[arg(long, conflicts_with = "seed")]
    latents: Option<PathBuf>,
    /// Write the unit-variance latents this run starts from to a .npy file (f32), for
    /// diffusers' `latents=` or a later `--latents`.
    #[arg(long)]
    save_latents: Option<PathBuf>,
    /// The unit noise an ancestral sampler (euler_a, LCM) adds at each step, instead of the
    /// seed's: [steps, 1, C, H/8, W/8] in a .npy file (f32 or f64). With `--latents`, what
    /// diffusers' scheduler drew gives diffusers' image (tools/make_fixtures.py records it).
    #[arg(long)]
    noise: Option<PathBuf>,
    /// Stop where the schedule is this fraction of the way from noise to image (diffusers'
    /// `denoising_end`, in (0, 1)) and write the latents to `--handoff-out`, for a refiner
    /// to continue (`--handoff`).
    #[arg(long, requires = "handoff_out")]
    denoising_end: Option<f64>,
    /// Where `--denoising-end` writes the latents ([1, C, H/8, W/8], .npy, f32).
    #[arg(long, requires = "denoising_end")]
    handoff_out: Option<PathBuf>,
    /// Continue latents another run handed over (`--handoff-out`'s file, or diffusers'
    /// `output_type="latent"`) from `--denoising-start` on, with no noise added: an SDXL
    /// refiner after its base model.
    #[arg(long, requires = "denoising_start", conflicts_with_all = ["init_image", "latents"])]
    handoff: Option<PathBuf>,
    /// The fraction of the schedule the `--handoff` latents stand at, in (0, 1).
    #[arg(long, requires = "handoff")]
    denoising_start: Option<f64>,
    /// A LoRA (.safetensors, kohya or diffusers/PEFT names) merged into the UNet and the
    /// text encoder at SCALE (default 1); repeat for several.
    #[arg(long, value_name = "FILE[:SCALE]")]
    lora: Vec<String>,
    /// A textual-inversion embedding (.safetensors) bound to TRIGGER (default: the file's
    /// name without its extension), which prompts then use as a word; repeat for several.
    #[arg(long, value_name = "FILE[:TRIGGER]")]
    embedding: Vec<String>,
    /// SD 3.5's skip-layer guidance: the transformer's joint blocks to skip in one more call
    /// per step, I,J,... (Stability suggests 7,8,9 for SD 3.5 medium). Acts only with
    /// guidance above 1, as in diffusers.
    #[arg(long, value_delimiter = ',')]
    skip_layers: Option<Vec<usize>>,
    /// Skip-layer guidance's scale (default diffusers', 2.8).
    #[arg(long, requires = "skip_layers")]
    skip_layer_scale: Option<f64>,
    /// Where in the schedule it starts acting, as a fraction of the steps (default 0.01).
    #[arg(long, requires = "skip_layers")]
    skip_layer_start: Option<f64>,
    /// Where it stops (default 0.2).
    #[arg(long, requires = "skip_layers")]
    skip_layer_stop: Option<f64>,
    /// FLUX's classifier-free guidance (diffusers' `true_cfg_scale`): above 1, each step
    /// also runs the `--negative` prompt, which it then needs.
    #[arg(long)]
    true_cfg: Option<f64>,
    /// Guidance rescale (diffusers' `guidance_rescale`, 0 to 1): brings the guided
    /// prediction's spread toward the conditional one's, against the overexposure of strong
    /// guidance; for models trained at zero terminal SNR, 0.7 is the paper's. UNet models.
    #[arg(long, default_value_t = 0.0)]
    guidance_rescale: f64,
}

pub fn run(args: Args) -> Result<()> {
    let controlnets = controlnet_inputs(&args)?;
    let opts = GenerateOptions {
        prompt: args.prompt,
        negative_prompt: args.negative,
        seed: args.seed,
        timesteps: match args.timesteps {
            Some(list) => Timesteps::Explicit(list),
            None => Timesteps::Count(args.steps),
        },
        guidance_scale: args.guidance,
        width: args.width,
        height: args.height,
        scheduler: args.scheduler,
        clip_skip: args.clip_skip,
        init_image: args
            .init_image
            .as_deref()
            .map(common::read_png)
            .transpose()?,
        control_image: args
            .control_image
            .as_deref()
            .map(common::read_png)
            .transpose()?,
        reference_image: args
            .reference_image
            .as_deref()
            .map(common::read_png)
            .transpose()?,
        reference_size: args.reference_size,
        strength: args.strength,
        // White (or any first channel at half or more) regenerates, black keeps.
        mask: args
            .mask
            .as_deref()
            .map(common::read_png)
            .transpose()?
            .map(|mask| mask.to_mask()),
        initial_latents: args.latents.as_deref().map(read_npy).transpose()?,
        step_noise: args.noise.as_deref().map(read_npy).transpose()?,
        denoising_end: args.denoising_end,
        handoff: match (&args.handoff, args.denoising_start) {
            (Some(path), Some(denoising_start)) => Some(Handoff {
                latents: read_npy(path)?,
                denoising_start,
            }),
            _ => None,
        },
        skip_layer_guidance: args.skip_layers.map(|layers| {
            SkipLayerGuidance::with(
                layers,
                args.skip_layer_scale,
                args.skip_layer_start,
                args.skip_layer_stop,
            )
        }),
        true_cfg_scale: args.true_cfg,
        guidance_rescale: args.guidance_rescale,
        controlnets,
        controlnet_guess_mode: args.controlnet_guess_mode,
        t2i_adapter: args
            .t2i_adapter_image
            .as_deref()
            .map(|path| -> Result<T2IAdapterInput> {
                Ok(T2IAdapterInput {
                    image: common::read_png(path)?,
                    scale: args.t2i_adapter_scale,
                })
            })
            .transpose()?,
    };
    let (plan, out) = (args.plan, args.out);
    pollster::block_on(async {
        let device = args.device.open().await?;
        let started = Instant::now();
        let loras = args
            .lora
            .iter()
            .map(|spec| read_lora(spec))
            .collect::<Result<Vec<_>>>()?;
        let mut pipe = StableDiffusion::load_adapted(
            &DirSource::open(&args.model, args.config.as_deref())?,
            &device,
            Kernels::default(),
            &loras,
        )?;
        for spec in &args.embedding {
            let path = std::path::Path::new(spec);
            let (file, trigger) = match spec.rsplit_once(':') {
                Some((file, trigger)) if !path.exists() => (file, trigger.to_string()),
                _ => (
                    spec.as_str(),
                    path.file_stem()
                        .map(|s| s.to_string_lossy().into_owned())
                        .unwrap_or_default(),
                ),
            };
            let bytes = std::fs::read(file).map_err(|e| Error::io(file, e))?;
            pipe.add_embedding(&trigger, file, &bytes)?;
        }
        if let Some(tokens) = args.max_sequence_length {
            pipe.set_max_sequence_length(tokens)?;
        }
        for path in &args.controlnet {
            pipe.add_controlnet(&common::controlnet_source(path)?, "")?;
        }
        if let Some(folder) = &args.t2i_adapter {
            pipe.load_t2i_adapter(&DirSource::new(folder), "")?;
        }
        let loaded = started.elapsed();
        tracing::info!(?loaded, "model loaded");
        if let Some(note) = pipe.size_note() {
            tracing::warn!("{note}");
        }
        if let Some(path) = &args.save_latents {
            let native = pipe.native_size();
            let size = (opts.width.unwrap_or(native), opts.height.unwrap_or(native));
            let (noise, shape) = pipe.initial_noise(&opts, size)?;
            write_npy(path, &noise, &shape)?;
        }
        let bar = common::bar(0, "steps");
        let mut progress = StepBar(bar.clone());
        let cancel = CancelToken::new();
        let mut recorder = AttentionRecorder::default();
        let mut hooks = (&mut progress, &mut recorder);
        // The recorder asks for the maps only when they are to be written: a record makes
        // every cross-attention layer compute its scores explicitly.
        let hook: &mut dyn StepHook = if args.attention_maps.is_some() {
            &mut hooks
        } else {
            hooks.0
        };
        let (done, prompt) = if plan.is_baseline() {
            (
                pipe.generate(&opts, hook, &cancel).await?,
                opts.prompt.clone(),
            )
        } else {
            let csg = match &args.csg {
                Some(path) => lina_csg::Csg::from_json(&common::read_text(path)?)?,
                None => lina_csg::parse::parse(&opts.prompt)?,
            };
            let out = lina::generate(&pipe, &opts, &csg, &plan, hook, &cancel).await?;
            for d in &out.described {
                tracing::info!("LINA: {d}");
            }
            (out.generated, out.prompt)
        };
        bar.finish_and_clear();
        for w in &done.warnings {
            tracing::warn!("{w}");
        }
        if let (Some(path), Some(latents)) = (&args.handoff_out, &done.latents) {
            let native = pipe.native_size();
            let (w, h) = (opts.width.unwrap_or(native), opts.height.unwrap_or(native));
            let factor = pipe.vae().config().downscale();
            let shape = [
                1,
                latents.len() / (w / factor * (h / factor)),
                h / factor,
                w / factor,
            ];
            write_npy(path, latents, &shape)?;
        }
        let image = done.image;
        common::write(&out, image.to_png()?)?;
        if let Some(path) = &args.attention_maps {
            let maps = recorder.read(&pipe, &prompt).await?;
            common::write(path, attention_strip(&image, &maps).to_png()?)?;
            println!(
                "wrote {} (the image, then {})",
                path.display(),
                maps.by_word()
                    .iter()
                    .map(|(w, _)| w.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        println!(
            "wrote {} ({}x{}) in {:.2?} (load {:.2?})",
            out.display(),
            image.width,
            image.height,
            started.elapsed(),
            loaded
        );
        Ok(())
    })
}

/// The image, then for each word of the prompt the image dimmed with the word's attention map
/// (normalised to its maximum, nearest-neighbour up to the image's size) in red over it.
fn attention_strip(image: &Image, maps: &TokenMaps) -> Image {
    let words = maps.by_word();
    let (w, h) = (image.width, image.height);
    let tiles = 1 + words.len();
    let mut rgb = vec![0u8; tiles * w * h * 3];
    for y in 0..h {
        for x in 0..w {
            let pixel = &image.rgb[(y * w + x) * 3..][..3];
            rgb[(y * tiles * w + x) * 3..][..3].copy_from_slice(pixel);
            let cell = (y * maps.height / h) * maps.width + x * maps.width / w;
            for (k, (_, map)) in words.iter().enumerate() {
                let max = map.iter().copied().fold(f32::MIN_POSITIVE, f32::max);
                let heat = map[cell] / max;
                let at = (y * tiles * w + (k + 1) * w + x) * 3;
                let grey = |c: u8| c as f32 * 0.35;
                rgb[at] = (grey(pixel[0]) + heat * 255.0 * 0.65) as u8;
                rgb[at + 1] = grey(pixel[1]) as u8;
                rgb[at + 2] = grey(pixel[2]) as u8;
            }
        }
    }
    Image {
        width: tiles * w,
        height: h,
        rgb,
    }
}

/// The values of a .npy file of f32 or f64 (read as f32), in C order.
fn read_npy(path: &std::path::Path) -> Result<Vec<f32>> {
    let io = |e: std::io::Error| lina_runtime::Error::io(path.display(), e);
    let file = std::fs::File::open(path).map_err(io)?;
    let npy = npyz::NpyFile::new(std::io::BufReader::new(file)).map_err(io)?;
    let bad =
        |what: String| lina_runtime::Error::InvalidInput(format!("{}: {what}", path.display()));
    if npy.order() != npyz::Order::C {
        return Err(bad("values in Fortran order; save them in C order".into()));
    }
    let dtype = match npy.dtype() {
        npyz::DType::Plain(ty) => ty.to_string(),
        other => other.descr(),
    };
    match dtype.as_str() {
        "<f4" => npy.into_vec::<f32>().map_err(io),
        "<f8" => Ok(npy
            .into_vec::<f64>()
            .map_err(io)?
            .into_iter()
            .map(|v| v as f32)
            .collect()),
        other => Err(bad(format!("values of dtype {other}; f32 or f64 expected"))),
    }
}

/// `values` of `shape` as a .npy file of f32.
fn write_npy(path: &std::path::Path, values: &[f32], shape: &[usize]) -> Result<()> {
    use npyz::WriterBuilder;
    let io = |e: std::io::Error| lina_runtime::Error::io(path.display(), e);
    let file = std::io::BufWriter::new(std::fs::File::create(path).map_err(io)?);
    let shape: Vec<u64> = shape.iter().map(|&d| d as u64).collect();
    let mut writer = npyz::WriteOptions::new()
        .default_dtype()
        .shape(&shape)
        .writer(file)
        .begin_nd()
        .map_err(io)?;
    writer.extend(values.iter().copied()).map_err(io)?;
    writer.finish().map_err(io)
}

/// `FILE[:SCALE]`: a LoRA file and the scale it merges at (1 when not given).
/// Each `--controlnet`'s input: its `--controlnet-image` and the scale and window given for
/// all or for each.
fn controlnet_inputs(args: &Args) -> Result<Vec<ControlNetInput>> {
    let n = args.controlnet.len();
    if args.controlnet_image.len() != n {
        return Err(Error::InvalidInput(format!(
            "{} --controlnet-image for {n} --controlnet: give each ControlNet its control image",
            args.controlnet_image.len()
        )));
    }
    // One value for every ControlNet, or one each.
    let each = |values: &[f64], default: f64, flag: &str| -> Result<Vec<f64>> {
        match values.len() {
            0 => Ok(vec![default; n]),
            1 => Ok(vec![values[0]; n]),
            k if k == n => Ok(values.to_vec()),
            k => Err(Error::InvalidInput(format!(
                "{k} {flag} for {n} --controlnet: give one for all, or one each"
            ))),
        }
    };
    let scales = each(&args.controlnet_scale, 1.0, "--controlnet-scale")?;
    let starts = each(
        &args.control_guidance_start,
        0.0,
        "--control-guidance-start",
    )?;
    let ends = each(&args.control_guidance_end, 1.0, "--control-guidance-end")?;
    args.controlnet_image
        .iter()
        .enumerate()
        .map(|(i, path)| {
            Ok(ControlNetInput {
                image: common::read_png(path)?,
                scale: scales[i],
                window: (starts[i], ends[i]),
            })
        })
        .collect()
}

fn read_lora(spec: &str) -> Result<ScaledLora> {
    let (path, scale) = match spec.rsplit_once(':') {
        Some((path, scale)) if scale.parse::<f32>().is_ok() => {
            (path, scale.parse::<f32>().expect("checked"))
        }
        _ => (spec, 1.0),
    };
    if !scale.is_finite() {
        return Err(Error::InvalidInput(format!(
            "--lora {spec}: the scale is not finite"
        )));
    }
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    Ok(ScaledLora {
        lora: Lora::from_safetensors(path, &bytes)?,
        scale,
    })
}
