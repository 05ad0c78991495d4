//! `lina bench`: the native benchmark of a model folder. Prints each figure as the median,
//! min and max of repeated runs, optionally writes them as JSON, and with `--peer` sets them
//! beside a peer's (tools/bench_torch.py: diffusers with PyTorch on the CPU).
//!
//! Beside it, `bench-unet` ([`unet`]) times one UNet call of a config against PyTorch's on
//! the same weights, and `bench-kernels` ([`kernels`]) the UNet's layer kinds, burn's
//! kernels beside ours: the GPU run's figures (scripts/bench-gpu.sh).

pub mod kernels;
pub mod unet;

use std::path::{Path, PathBuf};
use std::time::Instant;

use lina::Plan;
use lina_runtime::bench::{Summary, UnetCall};
use lina_runtime::kernels::Kernels;
use lina_runtime::pipeline::{
    CancelToken, GenerateOptions, Hooks, NoHook, Sampling, StableDiffusion, StepFuture, StepHook,
};
use lina_runtime::schedulers::Timesteps;
use lina_runtime::source::DirSource;
use lina_runtime::{Error, Result};

use crate::common::{self, DeviceArg};

#[derive(clap::Args)]
pub struct Args {
    /// A diffusers-layout model folder.
    #[arg(long)]
    model: PathBuf,
    /// Timed runs of each measurement, after one warm-up.
    #[arg(long, default_value_t = 5, value_parser = common::positive)]
    repeat: usize,
    /// Denoising steps per image.
    #[arg(long, default_value_t = 20, value_parser = common::positive)]
    steps: usize,
    #[command(flatten)]
    device: DeviceArg,
    /// Write the figures as JSON here too.
    #[arg(long)]
    json: Option<PathBuf>,
    /// tools/bench_torch.py's figures, for ratios against PyTorch measured the same way.
    #[arg(long)]
    peer: Option<PathBuf>,
    /// fused (the WGSL kernels of shaders/ on a GPU), burn (burn's own kernels only), matrices
    /// (fused, every f16 product in cooperative matrices where the device has them) or
    /// no-matrices (fused, no product in them).
    #[arg(long, default_value = "fused", value_parser = common::kernels)]
    kernels: Kernels,
}

const PROMPT: &str = "a red ball on a mirror";

pub fn run(args: Args) -> Result<()> {
    let Args {
        model,
        repeat,
        steps,
        device,
        json,
        peer,
        kernels,
    } = args;
    let model = model.display().to_string();
    // Read first: a bad peer file should not cost a whole benchmark run.
    let peer = peer.map(|path| Peer::read(&path)).transpose()?;
    let ms = |t: Instant| t.elapsed().as_secs_f64() * 1000.0;
    pollster::block_on(async {
        // Time to first image, phase by phase, from nothing opened to a decoded image.
        let started = Instant::now();
        let dev = device.open().await?;
        let device_ms = ms(started);
        let t = Instant::now();
        let pipe = StableDiffusion::load_with(&DirSource::new(&model), &dev, kernels)?;
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
        let csg = lina_csg::parse::parse(PROMPT)?;
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
            lina::generate(
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
            adapter: lina_runtime::device::limits(&dev).adapter,
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
            gpu_bytes_reserved: lina_runtime::device::gpu_memory(&dev).map(|m| m.bytes_reserved),
        };
        report.print();
        if let Some(peer) = &peer {
            peer.compare(&report);
        }
        if let Some(path) = json {
            common::write_json(&path, &report)?;
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
    let mut clock = StepClock {
        since: Instant::now(),
        steps_ms: Vec::new(),
    };
    sampling
        .run(&mut (hooks, &mut clock), &CancelToken::new())
        .await?;
    sampling.decode().await?;
    Ok(TimedImage {
        total_ms: started.elapsed().as_secs_f64() * 1000.0,
        steps_ms: clock.steps_ms,
    })
}

/// Times each step to the point where the device has finished it.
struct StepClock {
    since: Instant,
    steps_ms: Vec<f64>,
}

impl StepClock {
    async fn lap(&mut self, sampling: &Sampling<'_>) -> Result<()> {
        sampling.settle().await?;
        self.steps_ms
            .push(self.since.elapsed().as_secs_f64() * 1000.0);
        self.since = Instant::now();
        Ok(())
    }
}

impl StepHook for StepClock {
    fn between_steps<'a>(&'a mut self, sampling: &'a mut Sampling<'_>) -> StepFuture<'a> {
        Box::pin(self.lap(sampling))
    }
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
    fn read(path: &Path) -> Result<Self> {
        serde_json::from_str(&common::read_text(path)?)
            .map_err(|e| Error::InvalidInput(format!("{}: {e}", path.display())))
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

/// `(|a - b| / |b|, max |a - b| / max |b|)` over two equally long value lists.
pub(super) fn differences(a: &[f32], b: &[f32]) -> (f64, f64) {
    let (mut diff, mut norm, mut peak_diff, mut peak) = (0f64, 0f64, 0f64, 0f64);
    for (&x, &y) in a.iter().zip(b) {
        let d = (x as f64 - y as f64).abs();
        diff += d * d;
        norm += (y as f64) * (y as f64);
        peak_diff = peak_diff.max(d);
        peak = peak.max((y as f64).abs());
    }
    (
        (diff / norm.max(f64::MIN_POSITIVE)).sqrt(),
        peak_diff / peak.max(f64::MIN_POSITIVE),
    )
}
