//! Command-line front end: `lina generate --model DIR --prompt TEXT [options]` writes a PNG.

// The CLI is native only; on wasm32 (built alongside the browser tests) it is an empty stub.
#[cfg(target_arch = "wasm32")]
fn main() {}

#[cfg(not(target_arch = "wasm32"))]
fn main() -> std::process::ExitCode {
    cli::main()
}

#[cfg(not(target_arch = "wasm32"))]
mod cli {
    mod bench;
    mod diagnose;
    mod probe;
    mod soak;

    use std::process::ExitCode;
    use std::time::Instant;

    use lina::pipeline::{CancelToken, GenerateOptions, StableDiffusion, StepHook, StepState};
    use lina::schedulers::{SchedulerKind, Timesteps};
    use lina::source::DirSource;
    use lina::{Error, Result};

    pub(super) const USAGE: &str = "usage:
      lina generate --model DIR --prompt TEXT [--negative TEXT] [--seed N]
                    [--steps N | --timesteps T1,T2,..] [--guidance G] [--width W] [--height H]
                    [--scheduler ddim|euler|euler_a|dpm++2m|lcm] [--clip-skip K] [--device cpu|gpu|gpu-f32|gpu-f16] [--out FILE.png]
                    [--plan baseline|lina|JSON|FILE] [--csg CSG.json]
                    [--init-image IN.png [--strength S] [--mask MASK.png]]  (img2img, inpainting:
                    white in the mask is regenerated)
                    (a plan other than baseline runs LINA's interventions, on the CSG parsed
                    from the prompt unless --csg gives one)
      lina memory (--model DIR | --unet F --vae F --text-encoder F) [--sizes 256,512,..]
                    (weights per component and the largest tensor at each size, from configs)
      lina bench --model DIR [--repeat R] [--steps S] [--device cpu|gpu|gpu-f32|gpu-f16]
                    [--json FILE] [--peer PEER.json] [--kernels fused|burn]
                    (time to first image, UNet call, step and image latency, LINA's overhead;
                    --peer: tools/bench_torch.py's figures, for ratios)
      lina bench-unet --config UNET_CONFIG.json [--latent N] [--context-len L] [--repeat R]
                    [--device cpu|gpu|gpu-f32|gpu-f16] [--kernels fused|burn]
                    (random weights; times one CFG-batch UNet call; --kernels burn: without the
                    fused kernels of shaders/)
      lina probe --model DIR --suite id|ood|train[:CATEGORY] [--seeds N] [--count N] [--first I]
                    [--steps N] [--guidance G] [--scheduler S] [--device cpu|gpu]
                    [--plan baseline|lina|predicted|JSON|FILE] --out DIR
                    (generates the suite's prompts, checks each image, writes a report)
      lina probe-render --suite NAME [--count N] [--broken true] --out DIR
                    (rendered scenes with masks, CSG JSON and the checker's report)
      lina probe-data --split train|id|ood --count N --out DIR   (training data)
      lina sweep --model DIR --prompt TEXT [--plan P] [--csg FILE] [--seed N] [--steps N]
                    [--guidance G] [--out SWEEP.json]
                    (LINA's guidance at one step at a time: how much each step moves the image)
      lina reinpaint --model DIR --prompt TEXT --image IN.png --node ID [--strength S]
                    [--plan P] [--csg FILE] --out OUT.png
                    (regenerate one CSG node's region; the checker's verdicts before and after)
      lina embed-shift --model DIR (--prompt TEXT | --suite id|ood [--count N])
                    (how far texture and physics word swaps move the prompt embedding)
      lina lina-search --model DIR --suite train [--count N] [--first I] [--seeds N] [--steps N]
                    [--guidance G] --out SEARCH.json
                    (every candidate plan on every prompt, scored by the checker)
      lina eval --model DIR [--suites ood,id] [--count N] [--first I] [--seeds N] [--steps N]
                    [--guidance G] [--plan P] [--variants baseline,full,..] --out DIR
                    (LINA's ablation: baseline, full plan, each component alone and removed,
                    and the plan with each component it leaves off, on the first suite;
                    baseline and full on the others; pass rates with 95%
                    intervals and the cost per image against the baseline)
      lina lina-fit --search SEARCH.json [--lambda L] --out DIR/lina_predictor.json
                    (LINA's per-prompt plan predictor; probe --plan predicted uses it)
      lina soak --model DIR [--images N] [--steps S] [--every K] [--device D]
                    (N images with LINA, memory sampled every K; fails if it grew over 5%)";

    pub fn main() -> ExitCode {
        let args: Vec<String> = std::env::args().skip(1).collect();
        match run(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        }
    }

    fn run(args: &[String]) -> Result<()> {
        match args.first().map(String::as_str) {
            Some("generate") => generate(&args[1..]),
            Some("bench") => bench::run(&args[1..]),
            Some("bench-unet") => bench_unet(&args[1..]),
            Some("memory") => memory(&args[1..]),
            Some("probe") => probe::run(&args[1..]),
            Some("probe-render") => probe::render(&args[1..]),
            Some("probe-data") => probe::data(&args[1..]),
            Some("sweep") => diagnose::sweep(&args[1..]),
            Some("reinpaint") => diagnose::run(&args[1..]),
            Some("embed-shift") => diagnose::embed_shift(&args[1..]),
            Some("soak") => soak::run(&args[1..]),
            Some("lina-search") => probe::search(&args[1..]),
            Some("lina-fit") => probe::fit(&args[1..]),
            Some("eval") => probe::eval(&args[1..]),
            Some("-h" | "--help") | None => {
                println!("{USAGE}");
                Ok(())
            }
            Some(other) => Err(Error::InvalidInput(format!(
                "unknown command \"{other}\"\n{USAGE}"
            ))),
        }
    }

    /// Prints, as Markdown, what a model needs: its weights (from the configs alone) and the
    /// largest single tensor of one guided generation at each size.
    fn memory(args: &[String]) -> Result<()> {
        use lina::memory;
        use lina::models::{clip::ClipTextConfig, unet::UNetConfig, vae::VaeConfig};
        use lina::weights::human_bytes;

        let (mut unet, mut vae, mut text) = (None, None, None);
        let mut sizes = vec![256, 512, 768];
        for (flag, value) in flags(args)? {
            match flag {
                "--model" => {
                    unet = Some(format!("{value}/unet/config.json"));
                    vae = Some(format!("{value}/vae/config.json"));
                    text = Some(format!("{value}/text_encoder/config.json"));
                }
                "--unet" => unet = Some(value.to_string()),
                "--vae" => vae = Some(value.to_string()),
                "--text-encoder" => text = Some(value.to_string()),
                "--sizes" => {
                    sizes = value
                        .split(',')
                        .map(|s| parse(flag, s.trim()))
                        .collect::<Result<_>>()?
                }
                other => return Err(unknown_option(other)),
            }
        }
        let read = |path: Option<String>, what: &str| -> Result<String> {
            let path = path.ok_or_else(|| {
                Error::InvalidInput(format!("--model or --{what} is required\n{USAGE}"))
            })?;
            std::fs::read_to_string(&path).map_err(|e| Error::Io(format!("{path}: {e}")))
        };
        let unet = UNetConfig::from_json(&read(unet, "unet")?)?;
        let vae = VaeConfig::from_json(&read(vae, "vae")?)?;
        let text = ClipTextConfig::from_json(&read(text, "text-encoder")?)?;

        let weights = memory::weight_bytes(&text, &unet, &vae, &lina::device::cpu())?;
        println!("| component | parameters | f32 | f16 |\n| --- | --- | --- | --- |");
        for (name, bytes) in &weights {
            println!(
                "| {name} | {:.1} M | {} | {} |",
                *bytes as f64 / 4e6,
                human_bytes(*bytes),
                human_bytes(bytes / 2)
            );
        }
        let total: u64 = weights.iter().map(|(_, b)| b).sum();
        println!(
            "| all | {:.1} M | {} | {} |",
            total as f64 / 4e6,
            human_bytes(total),
            human_bytes(total / 2)
        );
        // WebGPU's default binding limit, which many adapters do not exceed.
        let webgpu_default = 128 << 20;
        println!(
            "\n| size | largest tensor (guided, f32) | where | with a 128 MiB binding limit |\n| --- | --- | --- | --- |"
        );
        for side in sizes {
            let largest = |limit: u64| {
                let needs = memory::activations(&unet, &vae, side, side, 2, false, limit);
                needs
                    .into_iter()
                    .max_by_key(|n| n.bytes)
                    .expect("three stages")
            };
            let (whole, bounded) = (largest(u64::MAX), largest(webgpu_default));
            println!(
                "| {side}x{side} | {} {:?} | {} | {} {:?}, {} |",
                human_bytes(whole.bytes),
                whole.shape,
                whole.what,
                human_bytes(bounded.bytes),
                bounded.shape,
                bounded.what
            );
        }
        Ok(())
    }

    /// Prints "step i/n" as the sampler goes.
    struct Progress;

    impl StepHook for Progress {
        fn after_step(&mut self, state: &mut StepState) -> Result<()> {
            eprint!("\rstep {}/{}", state.step + 1, state.steps);
            Ok(())
        }
    }

    pub(super) fn unknown_option(flag: &str) -> Error {
        Error::InvalidInput(format!("unknown option {flag}\n{USAGE}"))
    }

    /// Splits `--flag value` pairs.
    pub(super) fn flags(args: &[String]) -> Result<Vec<(&str, &str)>> {
        args.chunks(2)
            .map(|pair| match pair {
                [flag, value] => Ok((flag.as_str(), value.as_str())),
                [flag] => Err(Error::InvalidInput(format!("{flag} needs a value"))),
                _ => unreachable!("chunks of two"),
            })
            .collect()
    }

    pub(super) fn read_png(path: &str) -> Result<lina::image::Image> {
        let bytes = std::fs::read(path).map_err(|e| Error::Io(format!("{path}: {e}")))?;
        lina::image::Image::from_png(&bytes)
            .map_err(|e| Error::InvalidInput(format!("{path}: {e}")))
    }

    /// A plan from "baseline", "lina", inline JSON, or a JSON file's path.
    pub(super) fn read_plan(value: &str) -> Result<lina::intervene::Plan> {
        let text = if std::path::Path::new(value).is_file() {
            std::fs::read_to_string(value).map_err(|e| Error::Io(format!("{value}: {e}")))?
        } else {
            value.to_string()
        };
        lina::intervene::Plan::parse(&text)
    }

    pub(super) fn parse<T: std::str::FromStr>(flag: &str, value: &str) -> Result<T> {
        value
            .parse()
            .map_err(|_| Error::InvalidInput(format!("{flag}: cannot parse \"{value}\"")))
    }

    fn generate(args: &[String]) -> Result<()> {
        let mut opts = GenerateOptions::default();
        let mut model = None;
        let mut out = "out.png".to_string();
        let mut device = "cpu".to_string();
        let mut plan = lina::intervene::Plan::default();
        let mut csg_file = None;
        for (flag, value) in flags(args)? {
            match flag {
                "--model" => model = Some(value.to_string()),
                "--plan" => plan = read_plan(value)?,
                "--csg" => csg_file = Some(value.to_string()),
                "--init-image" => opts.init_image = Some(read_png(value)?),
                "--strength" => opts.strength = parse(flag, value)?,
                "--mask" => {
                    // White (or any channel at half or more) regenerates, black keeps.
                    let mask = read_png(value)?;
                    opts.mask = Some(
                        mask.rgb
                            .chunks_exact(3)
                            .map(|p| p[0] as f32 / 255.0)
                            .collect(),
                    );
                }
                "--prompt" => opts.prompt = value.to_string(),
                "--negative" => opts.negative_prompt = value.to_string(),
                "--seed" => opts.seed = parse(flag, value)?,
                "--steps" => opts.timesteps = Timesteps::Count(parse(flag, value)?),
                "--timesteps" => {
                    opts.timesteps = Timesteps::Explicit(
                        value
                            .split(',')
                            .map(|t| parse(flag, t.trim()))
                            .collect::<Result<_>>()?,
                    )
                }
                "--guidance" => opts.guidance_scale = parse(flag, value)?,
                "--width" => opts.width = Some(parse(flag, value)?),
                "--height" => opts.height = Some(parse(flag, value)?),
                "--scheduler" => opts.scheduler = Some(SchedulerKind::parse(value)?),
                "--clip-skip" => opts.clip_skip = parse(flag, value)?,
                "--device" => device = value.to_string(),
                "--out" => out = value.to_string(),
                other => return Err(unknown_option(other)),
            }
        }
        let model =
            model.ok_or_else(|| Error::InvalidInput(format!("--model is required\n{USAGE}")))?;

        pollster::block_on(async {
            let device = lina::device::by_name(&device).await?;
            let started = Instant::now();
            let pipe = StableDiffusion::load(&DirSource::new(&model), &device)?;
            let loaded = started.elapsed();
            if let Some(note) = pipe.size_note() {
                eprintln!("note: {note}");
            }
            let done = if plan.is_baseline() {
                pipe.generate(&opts, &mut Progress, &CancelToken::new())
                    .await?
            } else {
                let csg = match &csg_file {
                    Some(path) => lina::csg::Csg::from_json(
                        &std::fs::read_to_string(path)
                            .map_err(|e| Error::Io(format!("{path}: {e}")))?,
                    )?,
                    None => lina::csg::parse::parse(&opts.prompt)?,
                };
                let cancel = CancelToken::new();
                let out =
                    lina::intervene::generate(&pipe, &opts, &csg, &plan, &mut Progress, &cancel)
                        .await?;
                eprintln!();
                for d in &out.described {
                    eprintln!("LINA: {d}");
                }
                out.generated
            };
            eprintln!();
            for w in &done.warnings {
                eprintln!("warning: {w}");
            }
            let image = done.image;
            std::fs::write(&out, image.to_png()?).map_err(|e| Error::Io(format!("{out}: {e}")))?;
            println!(
                "wrote {out} ({}x{}) in {:.2?} (load {:.2?})",
                image.width,
                image.height,
                started.elapsed(),
                loaded
            );
            Ok(())
        })
    }

    /// `--kernels fused` (the default: shaders/ kernels on a GPU) or `burn` (burn's own
    /// kernels only), to measure what the fused kernels bring.
    pub(super) fn choose_kernels(value: &str) -> Result<()> {
        match value {
            "fused" => lina::kernels::set_enabled(true),
            "burn" => lina::kernels::set_enabled(false),
            other => {
                return Err(Error::InvalidInput(format!(
                    "--kernels takes fused or burn, not \"{other}\""
                )));
            }
        }
        Ok(())
    }

    /// Times UNet calls of a config with random weights: for full-size architectures whose
    /// checkpoints are not at hand. Prints median, min and max over `--repeat` calls after one
    /// warm-up call (shader compilation, autotuning).
    fn bench_unet(args: &[String]) -> Result<()> {
        use burn::tensor::{Distribution, Tensor};
        use lina::models::unet::{UNet, UNetConfig};
        use lina::weights::Weights;

        let (mut config, mut latent, mut context_len, mut repeat, mut device) =
            (None, 64usize, 77usize, 3usize, "cpu".to_string());
        for (flag, value) in flags(args)? {
            match flag {
                "--config" => config = Some(value.to_string()),
                "--latent" => latent = parse(flag, value)?,
                "--context-len" => context_len = parse(flag, value)?,
                "--repeat" => repeat = parse(flag, value)?,
                "--device" => device = value.to_string(),
                "--kernels" => choose_kernels(value)?,
                other => return Err(unknown_option(other)),
            }
        }
        let path =
            config.ok_or_else(|| Error::InvalidInput(format!("--config is required\n{USAGE}")))?;
        let json = std::fs::read_to_string(&path).map_err(|e| Error::Io(format!("{path}: {e}")))?;
        let config = UNetConfig::from_json(&json)?;
        pollster::block_on(async {
            let device = lina::device::by_name(&device).await?;
            let started = Instant::now();
            let weights = Weights::random(&device);
            let context_dim = config.cross_attention_dim;
            let channels = config.in_channels;
            let unet = UNet::load(config, &weights)?;
            println!(
                "built {path} with random weights in {:.2?}",
                started.elapsed()
            );
            let x = Tensor::<4>::random(
                [2, channels, latent, latent],
                Distribution::Normal(0.0, 1.0),
                &device,
            );
            let ctx = Tensor::<3>::random(
                [2, context_len, context_dim],
                Distribution::Normal(0.0, 1.0),
                &device,
            );
            let mut times = Vec::new();
            for i in 0..=repeat {
                let started = Instant::now();
                let out = unet.forward(x.clone(), 500.0, &ctx);
                let peak = lina::device::read_f32(out.abs().max(), "the UNet output").await?;
                let elapsed = started.elapsed().as_secs_f64();
                if !peak[0].is_finite() {
                    return Err(Error::Device("the UNet output is not finite".into()));
                }
                if i == 0 {
                    println!("warm-up call: {elapsed:.3} s");
                } else {
                    times.push(elapsed);
                }
            }
            if let Some(s) = lina::bench::Summary::of(&times) {
                println!(
                    "UNet call, batch 2 (CFG), {latent}x{latent} latents, {repeat} runs: median {:.3} s, min {:.3} s, max {:.3} s",
                    s.median, s.min, s.max
                );
            }
            Ok(())
        })
    }
}
