//! `lina bench`: the native benchmark of a model folder. Prints each figure as the median,
//! min and max of repeated runs, optionally writes them as JSON, and with `--peer` sets them
//! beside a peer's (tools/bench_torch.py: diffusers with PyTorch on the CPU).

use std::time::Instant;

use lina::bench::{Summary, UnetCall};
use lina::intervene::Plan;
use lina::pipeline::{CancelToken, GenerateOptions, Hooks, NoHook, StableDiffusion};
use lina::schedulers::Timesteps;
use lina::source::DirSource;
use lina::{Error, Result};

use super::{flags, parse, unknown_option};

const PROMPT: &str = "a red ball on a mirror";

pub fn run(args: &[String]) -> Result<()> {
    let (mut model, mut repeat, mut steps, mut device, mut json, mut peer) =
        (None, 5usize, 20usize, "cpu".to_string(), None, None);
    for (flag, value) in flags(args)? {
        match flag {
            "--model" => model = Some(value.to_string()),
            "--repeat" => repeat = parse(flag, value)?,
            "--steps" => steps = parse(flag, value)?,
            "--device" => device = value.to_string(),
            "--json" => json = Some(value.to_string()),
            "--peer" => peer = Some(value.to_string()),
            "--kernels" => super::choose_kernels(value)?,
            other => return Err(unknown_option(other)),
        }
    }
    let model = model.ok_or_else(|| Error::InvalidInput("--model is required".into()))?;
    // Read first: a bad peer file should not cost a whole benchmark run.
    let peer = peer.map(|path| Peer::read(&path)).transpose()?;
    if repeat == 0 || steps == 0 {
        return Err(Error::InvalidInput(
            "--repeat and --steps must be at least 1".into(),
        ));
    }
    let ms = |t: Instant| t.elapsed().as_secs_f64() * 1000.0;
    pollster::block_on(async {
        // Time to first image, phase by phase, from nothing opened to a decoded image.
        let started = Instant::now();
        let dev = lina::device::by_name(&device).await?;
        let device_ms = ms(started);
        let t = Instant::now();
        let pipe = StableDiffusion::load(&DirSource::new(&model), &dev)?;
        let load_ms = ms(t);
        let opts = GenerateOptions {
            prompt: PROMPT.into(),
            timesteps: Timesteps::Count(steps),
            ..GenerateOptions::default()
        };
        let first = timed_image(&pipe, &opts, &mut Hooks::default()).await?;
        let first_image_ms = ms(started);

        // Warm figures: a UNet call alone, then whole images, baseline and LINA.
        let call = UnetCall::new(&pipe)?;
        call.run(&pipe).await?;
        let mut unet = Vec::new();
        for _ in 0..repeat {
            let t = Instant::now();
            call.run(&pipe).await?;
            unet.push(ms(t));
        }
        let csg = lina::csg::parse::parse(PROMPT)?;
        let (mut step, mut image, mut lina) = (Vec::new(), Vec::new(), Vec::new());
        for seed in 0..repeat as u64 {
            let opts = GenerateOptions {
                seed,
                ..opts.clone()
            };
            let run = timed_image(&pipe, &opts, &mut Hooks::default()).await?;
            step.extend(run.steps_ms);
            image.push(run.total_ms);
            let t = Instant::now();
            lina::intervene::generate(
                &pipe,
                &opts,
                &csg,
                &Plan::lina(),
                &mut NoHook,
                &CancelToken::new(),
            )
            .await?;
            lina.push(ms(t));
        }
        let summary = |v: &[f64]| Summary::of(v).expect("at least one run");
        let report = Report {
            model,
            adapter: lina::device::limits(&dev).adapter,
            latents: call.shape(),
            steps,
            repeat,
            time_to_first_image: FirstImage {
                device_ms,
                load_ms,
                first_step_ms: first.steps_ms[0],
                image_ms: first.total_ms,
                total_ms: first_image_ms,
            },
            unet_ms: summary(&unet),
            step_ms: summary(&step),
            image_ms: summary(&image),
            lina_image_ms: summary(&lina),
            gpu_bytes_reserved: lina::device::gpu_memory(&dev).map(|m| m.bytes_reserved),
        };
        report.print();
        if let Some(peer) = &peer {
            peer.compare(&report);
        }
        if let Some(path) = json {
            let text = serde_json::to_string_pretty(&report).expect("plain data");
            std::fs::write(&path, text).map_err(|e| Error::Io(format!("{path}: {e}")))?;
        }
        Ok(())
    })
}

struct TimedImage {
    total_ms: f64,
    steps_ms: Vec<f64>,
}

/// One image, each step waited for before the next (as the page's progress reports do), so
/// that step times are the device's and not the queue's.
async fn timed_image(
    pipe: &StableDiffusion,
    opts: &GenerateOptions,
    hooks: &mut Hooks,
) -> Result<TimedImage> {
    let started = Instant::now();
    let mut sampling = pipe.start(opts)?;
    let mut steps_ms = Vec::new();
    while !sampling.is_done() {
        let t = Instant::now();
        sampling.step(hooks)?;
        sampling.settle().await?;
        steps_ms.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    sampling.decode().await?;
    Ok(TimedImage {
        total_ms: started.elapsed().as_secs_f64() * 1000.0,
        steps_ms,
    })
}

#[derive(serde::Serialize)]
struct FirstImage {
    device_ms: f64,
    load_ms: f64,
    /// The first step of the first image: shader compilation (and autotuning) included.
    first_step_ms: f64,
    image_ms: f64,
    total_ms: f64,
}

#[derive(serde::Serialize)]
struct Report {
    model: String,
    adapter: String,
    latents: [usize; 4],
    steps: usize,
    repeat: usize,
    time_to_first_image: FirstImage,
    unet_ms: Summary,
    step_ms: Summary,
    image_ms: Summary,
    /// LINA's default plan, its preparation (prompt-space guidance's text encodings) included.
    lina_image_ms: Summary,
    /// The allocator's reserve at the end: its high-water mark, as pools are not shrunk.
    gpu_bytes_reserved: Option<u64>,
}

impl Report {
    fn print(&self) {
        let f = &self.time_to_first_image;
        let [_, c, h, w] = self.latents;
        println!(
            "{} on {} (latents {c}x{h}x{w}, batch 2 with guidance)",
            self.model, self.adapter
        );
        println!(
            "time to first image: {:.0} ms (device {:.0}, load {:.0}, first step {:.0}, whole first image {:.0})",
            f.total_ms, f.device_ms, f.load_ms, f.first_step_ms, f.image_ms
        );
        let row = |what: &str, s: &Summary| {
            println!(
                "{what:<28} median {:>9.2} ms  min {:>9.2}  max {:>9.2}  ({} runs)",
                s.median, s.min, s.max, s.runs
            );
        };
        row("UNet call", &self.unet_ms);
        row("step (UNet, guidance, DDIM)", &self.step_ms);
        row(&format!("image, {} steps", self.steps), &self.image_ms);
        row("image with LINA", &self.lina_image_ms);
        println!(
            "LINA's overhead: {:.2}x the baseline image",
            self.lina_image_ms.median / self.image_ms.median
        );
        if let Some(bytes) = self.gpu_bytes_reserved {
            println!("GPU memory reserved at the end: {bytes} bytes");
        }
    }
}

/// A peer's figures for the same model (tools/bench_torch.py's JSON), to print ratios.
#[derive(serde::Deserialize)]
struct Peer {
    #[serde(rename = "peer")]
    name: String,
    steps: usize,
    unet_ms: Summary,
    step_ms: Summary,
    image_ms: Summary,
}

impl Peer {
    fn read(path: &str) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::Io(format!("{path}: {e}")))?;
        serde_json::from_str(&text).map_err(|e| Error::InvalidInput(format!("{path}: {e}")))
    }

    fn compare(&self, ours: &Report) {
        println!("against {} (ours / theirs, medians):", self.name);
        let row = |what: &str, a: &Summary, b: &Summary| {
            println!(
                "  {what:<28} {:>9.2} ms vs {:>9.2} ms: {:.2}x",
                a.median,
                b.median,
                a.median / b.median
            );
        };
        row("UNet call", &ours.unet_ms, &self.unet_ms);
        row("step", &ours.step_ms, &self.step_ms);
        if self.steps == ours.steps {
            row("image", &ours.image_ms, &self.image_ms);
        } else {
            println!(
                "  image: not compared ({} steps there, {} here)",
                self.steps, ours.steps
            );
        }
    }
}
