//! `lina bench`: the native benchmark of a model folder. Prints each figure as the median,
//! min and max of repeated runs, optionally writes them as JSON, and with `--peer` sets them
//! beside a peer's (tools/bench_torch.py: diffusers with PyTorch on the CPU).

use std::path::{Path, PathBuf};
use std::time::Instant;

use lina::Plan;
use lina_runtime::bench::{Summary, UnetCall};
use lina_runtime::kernels::{CoopBlock, Kernels, MatmulKernel};
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

#[derive(clap::Args)]
pub struct UnetArgs {
    /// A diffusers UNet config.json; the weights are random.
    #[arg(long)]
    config: PathBuf,
    /// Latent side (64 for 512-pixel images).
    #[arg(long, default_value_t = 64)]
    latent: usize,
    /// Text tokens of the context.
    #[arg(long, default_value_t = 77)]
    context_len: usize,
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    #[command(flatten)]
    device: DeviceArg,
    /// fused (the WGSL kernels of shaders/ on a GPU), burn (burn's own kernels only), matrices
    /// (fused, every f16 product in cooperative matrices where the device has them) or
    /// no-matrices (fused, no product in them).
    #[arg(long, default_value = "fused", value_parser = common::kernels)]
    kernels: Kernels,
    /// A folder written by `tools/bench_torch_unet.py --save`: its weights instead of random
    /// ones, its inputs, and PyTorch's outputs to set ours against.
    #[arg(long)]
    reference: Option<PathBuf>,
    /// Write the figures as one JSON object here too.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// What `bench-unet` measured, as `--json` writes it.
#[derive(serde::Serialize)]
struct UnetReport {
    config: String,
    latent: usize,
    device: String,
    kernels: String,
    warmup_s: f64,
    unet_s: Option<Summary>,
    /// Our output against each of PyTorch's (`out_f32`, `out_f16`): the relative L2 error
    /// and the largest difference over the largest reference value.
    errors: Vec<(String, f64, f64)>,
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

/// Times UNet calls of a config, with random weights (for full-size architectures whose
/// checkpoints are not at hand) or PyTorch's (`--reference`, to check the output too). Prints
/// median, min and max over `--repeat` calls after one warm-up call (shader compilation,
/// autotuning).
pub fn unet(args: UnetArgs) -> Result<()> {
    use burn::tensor::{Distribution, Tensor};
    use lina_runtime::models::unet::{UNet, UNetConfig};
    use lina_runtime::weights::Weights;

    let UnetArgs {
        config: path,
        latent,
        context_len,
        repeat,
        device: device_arg,
        kernels,
        reference,
        json,
    } = args;
    let path = path.display().to_string();
    let config = UNetConfig::from_json(&common::read_text(std::path::Path::new(&path))?)?;
    pollster::block_on(async {
        let device = device_arg.open().await?;
        let started = Instant::now();
        let read = |name: &str| -> Result<Weights> {
            let dir = reference.as_ref().expect("only with --reference");
            let file = dir.join(name);
            let bytes = std::fs::read(&file).map_err(|e| Error::io(file.display(), e))?;
            Weights::from_bytes(&file.display().to_string(), &bytes, &device)
        };
        let weights = match &reference {
            Some(_) => read("unet.safetensors")?,
            None => Weights::random(&device),
        }
        .with_kernels(kernels);
        let context_dim = config.cross_attention_dim;
        let channels = config.in_channels;
        let unet = UNet::load(config, &weights)?;
        println!("built {path} in {:.2?}", started.elapsed());
        let refs = reference
            .as_ref()
            .map(|_| read("reference.safetensors"))
            .transpose()?;
        let (x, ctx) = match &refs {
            Some(r) => (
                r.root().tensor("sample", [2, channels, latent, latent])?,
                r.root().tensor("context", [2, context_len, context_dim])?,
            ),
            None => (
                Tensor::<4>::random(
                    [2, channels, latent, latent],
                    Distribution::Normal(0.0, 1.0),
                    &device,
                ),
                Tensor::<3>::random(
                    [2, context_len, context_dim],
                    Distribution::Normal(0.0, 1.0),
                    &device,
                ),
            ),
        };
        let mut times = Vec::new();
        let mut warmup_s = 0.0;
        let mut errors = Vec::new();
        for i in 0..=repeat {
            let started = Instant::now();
            let out = unet.forward(x.clone(), 500.0, &ctx);
            let peak =
                lina_runtime::device::read_f32(out.clone().abs().max(), "the UNet output").await?;
            let elapsed = started.elapsed().as_secs_f64();
            if !peak[0].is_finite() {
                return Err(Error::Device("the UNet output is not finite".into()));
            }
            if i > 0 {
                times.push(elapsed);
                continue;
            }
            warmup_s = elapsed;
            println!("warm-up call: {elapsed:.3} s");
            let Some(r) = &refs else { continue };
            let ours = lina_runtime::device::read_f32(out, "the UNet output").await?;
            for key in ["out_f32", "out_f16"] {
                if !r.contains(key) {
                    continue;
                }
                let theirs = r.root().tensor(key, [2, channels, latent, latent])?;
                let theirs = lina_runtime::device::read_f32(theirs, key).await?;
                let (rel, peak) = differences(&ours, &theirs);
                println!(
                    "against PyTorch's {key}: relative L2 error {rel:.2e}, largest difference {peak:.2e} of the largest value"
                );
                errors.push((key.to_string(), rel, peak));
            }
        }
        let unet_s = Summary::of(&times);
        if let Some(s) = unet_s {
            println!(
                "UNet call, batch 2 (CFG), {latent}x{latent} latents, {repeat} runs: median {:.3} s, min {:.3} s, max {:.3} s",
                s.median, s.min, s.max
            );
        }
        if let Some(file) = json {
            let report = UnetReport {
                config: path,
                latent,
                device: device_arg.device.clone(),
                kernels: format!("{kernels:?}").to_lowercase(),
                warmup_s,
                unet_s,
                errors,
            };
            let text = serde_json::to_string(&report).expect("plain numbers and strings");
            common::write(&file, text)?;
        }
        Ok(())
    })
}

/// `(|a - b| / |b|, max |a - b| / max |b|)` over two equally long value lists.
fn differences(a: &[f32], b: &[f32]) -> (f64, f64) {
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

#[derive(clap::Args)]
pub struct KernelsArgs {
    /// Timed runs of each case, after one warm-up; the median is reported.
    #[arg(long, default_value_t = 10, value_parser = common::positive)]
    repeat: usize,
    /// Only the cases whose name contains this.
    #[arg(long)]
    only: Option<String>,
    #[command(flatten)]
    device: DeviceArg,
    /// Write one JSON object per case here too (JSON lines).
    #[arg(long)]
    json: Option<PathBuf>,
}

/// One timed way to compute a case.
#[derive(serde::Serialize)]
struct KernelTiming {
    case: String,
    kind: &'static str,
    how: String,
    ms: f64,
    /// Floating-point operations per second (bytes per second for norms), in units of 1e12.
    tera_per_s: f64,
    /// Largest difference from the first way's output, over its largest value.
    error: f64,
}

/// Times the UNet's layer kinds at SD 1.5's shapes (batch 2, 64x64 latents and the levels
/// below), each by burn's kernels and by ours (the convolution as gathered patches and
/// burn's matmul; attention without workgroup memory and tiled with each key block), and
/// the square product that sets the adapter's matrix peak as burn's matmul reaches it.
/// Our matmul kernels that suit the adapter, named for the table: the lanes matmul where it
/// has subgroups of one size, and cooperative matrices where the device multiplies in them
/// (f16 devices only).
fn our_matmuls(limits: &lina_runtime::device::Limits) -> Vec<(String, MatmulKernel)> {
    let mut kernels = Vec::new();
    if let Some(lanes) = limits.subgroup_lanes {
        kernels.push(("lanes".to_string(), MatmulKernel::Lanes { lanes }));
        // The runtime's choice (its block, and its sum over K cut where the product is
        // small), and each block with the sum whole: as the runtime has it (rows in
        // workgroup memory padded, two matrices of K per step, no prefetch), unpadded, four
        // matrices of K per step, and the next step prefetched into registers.
        if let Some(size) = limits.coop_size {
            let block = None;
            kernels.push((
                format!("coop {size}, chosen"),
                MatmulKernel::Coop { size, lanes, block },
            ));
            for tiles in [2, 4] {
                let side = 2 * tiles * size;
                let usual = CoopBlock::new(tiles);
                let variants = [
                    (usual, String::new()),
                    (
                        CoopBlock {
                            padded: false,
                            ..usual
                        },
                        ", unpadded".to_string(),
                    ),
                    (
                        CoopBlock { depth: 4, ..usual },
                        format!(", {} of K per step", 4 * size),
                    ),
                    (
                        CoopBlock {
                            prefetch: true,
                            ..usual
                        },
                        ", prefetched".to_string(),
                    ),
                ];
                for (block, how) in variants {
                    if lina_runtime::kernels::coop_fits(limits, size, lanes, block) {
                        kernels.push((
                            format!("coop {size}, {side}x{side}{how}"),
                            MatmulKernel::Coop {
                                size,
                                lanes,
                                block: Some(block),
                            },
                        ));
                    }
                }
            }
        }
    }
    kernels
}

pub fn kernels(args: KernelsArgs) -> Result<()> {
    use burn::tensor::module::{conv2d, linear};
    use burn::tensor::ops::ConvOptions;
    use burn::tensor::{Distribution, Tensor};
    use lina_runtime::kernels as k;
    use lina_runtime::nn::multi_head_attention;

    let KernelsArgs {
        repeat,
        only,
        device,
        json,
    } = args;
    pollster::block_on(async {
        let device = device.open().await?;
        let limits = lina_runtime::device::limits(&device);
        println!(
            "adapter: {} (f16 compute: {}, workgroup memory {} B, subgroups of {}, cooperative matrices: {})",
            limits.adapter,
            limits.computes_f16,
            limits.workgroup_bytes,
            limits
                .subgroup_lanes
                .map_or("various sizes or none".to_string(), |n| n.to_string()),
            limits
                .coop_size
                .map_or("none".to_string(), |s| format!("{s}x{s}")),
        );
        let random4 =
            |shape: [usize; 4]| Tensor::<4>::random(shape, Distribution::Normal(0.0, 1.0), &device);
        let random =
            |shape: [usize; 3]| Tensor::<3>::random(shape, Distribution::Normal(0.0, 1.0), &device);
        // Runs `f` once to warm up, then `repeat` times, reading one value back after the
        // last: the median of per-call times over three such rounds.
        let time = |f: &dyn Fn() -> Tensor<1>| -> Result<(f64, Vec<f32>)> {
            let first = pollster::block_on(lina_runtime::device::read_f32(f(), "warm-up"))?;
            let mut rounds = Vec::new();
            for _ in 0..3 {
                let started = Instant::now();
                let mut last = None;
                for _ in 0..repeat {
                    last = Some(f());
                }
                let last = last.expect("repeat is positive").narrow(0, 0, 1);
                pollster::block_on(lina_runtime::device::read_f32(last, "a timed call"))?;
                rounds.push(started.elapsed().as_secs_f64() * 1000.0 / repeat as f64);
            }
            rounds.sort_by(f64::total_cmp);
            Ok((rounds[1], first))
        };
        // Each case's lines are written as soon as it is timed: a run stopped by a timeout
        // keeps what it measured.
        let mut sink = match &json {
            Some(file) => {
                Some(std::fs::File::create(file).map_err(|e| Error::io(file.display(), e))?)
            }
            None => None,
        };
        let mut report = |case: &str,
                          kind: &'static str,
                          work: f64,
                          ways: Vec<(String, Box<dyn Fn() -> Tensor<1> + '_>)>|
         -> Result<()> {
            if only.as_ref().is_some_and(|o| !case.contains(o.as_str())) {
                return Ok(());
            }
            let mut reference: Option<Vec<f32>> = None;
            for (how, f) in ways {
                let (ms, values) = time(&*f)?;
                let error = match &reference {
                    None => 0.0,
                    Some(r) => differences(&values, r).1,
                };
                reference.get_or_insert(values);
                let tera_per_s = work / (ms / 1000.0) / 1e12;
                println!(
                    "{case:<34} {kind:<9} {how:<22} {ms:>9.3} ms {tera_per_s:>8.2} T/s  error {error:.1e}"
                );
                if let (Some(file), Some(path)) = (sink.as_mut(), json.as_ref()) {
                    use std::io::Write;
                    let timing = KernelTiming {
                        case: case.into(),
                        kind,
                        how,
                        ms,
                        tera_per_s,
                        error,
                    };
                    let line = serde_json::to_string(&timing).expect("plain numbers and strings");
                    writeln!(file, "{line}").map_err(|e| Error::io(path.display(), e))?;
                }
            }
            Ok(())
        };
        let flat4 = |t: Tensor<4>| t.reshape([-1]);
        let flat3 = |t: Tensor<3>| t.reshape([-1]);

        // Convolutions, channels-last as the UNet holds them: (side, c_in, c_out, stride).
        for (side, c_in, c_out, stride) in [
            (64, 320, 320, 1),
            (64, 960, 320, 1),
            (64, 320, 320, 2),
            (32, 640, 640, 1),
            (16, 1280, 1280, 1),
            (8, 1280, 1280, 1),
        ] {
            let x = random4([2, side, side, c_in]).permute([0, 3, 1, 2]);
            let w = random4([c_out, 3, 3, c_in]).permute([0, 3, 1, 2]);
            let b = Tensor::<1>::random([c_out], Distribution::Normal(0.0, 1.0), &device);
            let out_side = side / stride;
            let work = 2.0 * (2 * out_side * out_side * c_out * 9 * c_in) as f64;
            let mut ways: Vec<(String, Box<dyn Fn() -> Tensor<1>>)> = vec![(
                "burn".into(),
                Box::new(|| {
                    let options = ConvOptions::new([stride; 2], [1, 1], [1, 1], 1);
                    flat4(conv2d(x.clone(), w.clone(), Some(b.clone()), options))
                }),
            )];
            // Gathered patches and burn's matmul: the sum over K whole, then cut as the
            // runtime cuts it on this adapter and, around that, in half and twice as many.
            let rows = 2 * out_side * out_side;
            let chosen = k::k_splits(&limits, rows, c_out, 9 * c_in);
            let mut splits = vec![1];
            for s in [chosen / 2, chosen, chosen * 2] {
                if s > 1 && s <= 32 && !splits.contains(&s) {
                    splits.push(s);
                }
            }
            for k_splits in splits {
                let (x, w, b) = (x.clone(), w.clone(), b.clone());
                let cuts = k::GemmCuts {
                    max_bytes: None,
                    k_splits: Some(k_splits),
                };
                let how = match (k_splits, k_splits == chosen) {
                    (1, _) => "im2col + burn matmul".to_string(),
                    (s, true) => format!("im2col, K in {s} (chosen)"),
                    (s, false) => format!("im2col, K in {s}"),
                };
                ways.push((
                    how,
                    Box::new(move || {
                        flat4(k::conv2d_im2col(x.clone(), &w, Some(&b), stride, 1, cuts))
                    }),
                ));
            }
            // Our implicit GEMMs, reading the input in place: the lanes matmul where the
            // adapter has subgroups (the runtime's choice on software adapters), and in f16
            // the cooperative matrices where the device has them (the runtime's choice there).
            for (how, kernel) in our_matmuls(&limits) {
                let (x, w, b) = (x.clone(), w.clone(), b.clone());
                ways.push((
                    format!("{how}, implicit"),
                    Box::new(move || {
                        flat4(k::conv2d_fused(x.clone(), &w, Some(&b), stride, 1, kernel))
                    }),
                ));
            }
            let case = format!("conv3x3 {side}x{side} {c_in}->{c_out} s{stride}");
            report(&case, "conv", work, ways)?;
        }

        // Linear layers (tokens, in, out) and the square product that sets the peak.
        for (rows, d_in, d_out, name) in [
            (8192, 320, 960, "qkv 64x64"),
            (8192, 320, 2560, "ff in 64x64"),
            (8192, 1280, 320, "ff out 64x64"),
            (2048, 640, 5120, "ff in 32x32"),
            (4096, 4096, 4096, "square 4096 (peak)"),
        ] {
            let x = random([1, rows, d_in]);
            // Stored as a linear layer's weight is: PyTorch's [out, in], seen transposed.
            let w = Tensor::<2>::random([d_out, d_in], Distribution::Normal(0.0, 1.0), &device)
                .transpose();
            let work = 2.0 * (rows * d_in * d_out) as f64;
            let mut ways: Vec<(String, Box<dyn Fn() -> Tensor<1>>)> = vec![(
                "burn".into(),
                Box::new(|| flat3(linear(x.clone(), w.clone(), None))),
            )];
            for (how, kernel) in our_matmuls(&limits) {
                let (x, w) = (x.clone(), w.clone());
                ways.push((
                    how,
                    Box::new(move || {
                        let rows = x.clone().reshape([rows, d_in]);
                        k::matmul(rows, &w, None, kernel).reshape([-1])
                    }),
                ));
            }
            report(&format!("matmul {name}"), "matmul", work, ways)?;
        }

        // Attention: self-attention at SD 1.5's 64x64 (8 heads of 40) and SD 2.1's 96x96 (5
        // heads of 64), and cross-attention onto 77 tokens; 4 B L_q L_k D FLOPs per head and
        // sample. burn's attention makes the score matrix, 3.4 GB at 96x96 in f32: there the
        // first of ours is the reference.
        for (lq, lk, heads, d, name) in [
            (4096, 4096, 8, 40, "self 64x64"),
            (4096, 77, 8, 40, "cross 64x64"),
            (9216, 9216, 5, 64, "self 96x96, SD 2.1"),
            (9216, 77, 5, 64, "cross 96x96, SD 2.1"),
        ] {
            let q = random([2, lq, heads * d]);
            let kv = random([2, lk, heads * d]);
            let work = 4.0 * (2 * heads * lq * lk * d) as f64;
            let attend = |kernels: lina_runtime::kernels::Kernels| {
                let (q, kv) = (q.clone(), kv.clone());
                Box::new(move || {
                    flat3(multi_head_attention(
                        q.clone().into(),
                        kv.clone().into(),
                        kv.clone().into(),
                        heads,
                        false,
                        kernels,
                    ))
                }) as Box<dyn Fn() -> Tensor<1>>
            };
            // Up to SD 1.5's 64x64 self-attention; past it, burn's scores and the untiled
            // kernel are left out.
            let at_most_64 = lq * lk <= 4096 * 4096;
            let mut ways = Vec::new();
            if at_most_64 {
                ways.push(("burn".to_string(), attend(Kernels::Burn)));
            }
            // The kernel without workgroup memory (not at 96x96, where no GPU takes it and
            // it would take seconds of the GPU script's budget), the tiled one with each key
            // block that fits the adapter, the lanes kernel where the adapter has subgroups,
            // and the coop kernel where the device multiplies in cooperative matrices: the
            // runtime's block, and each block of keys beside it that fits.
            let mut kernels = Vec::new();
            if at_most_64 {
                kernels.push(k::AttentionKernel::Untiled);
            }
            for keys in [16u32, 32, 64] {
                if 2 * 4 * keys * d as u32 <= limits.workgroup_bytes {
                    kernels.push(k::AttentionKernel::Tiled { keys });
                }
            }
            if let Some(lanes) = limits.subgroup_lanes {
                kernels.push(k::AttentionKernel::Lanes { lanes });
            }
            let coop = k::attention_kernel(Kernels::Matrices, &device, burn::tensor::DType::F16, d);
            if let k::AttentionKernel::Coop {
                size,
                lanes,
                subgroups,
                keys: chosen,
            } = coop
            {
                kernels.push(coop);
                for keys in [16, 32, 64] {
                    let other = k::AttentionKernel::Coop {
                        size,
                        lanes,
                        subgroups,
                        keys,
                    };
                    if keys != chosen && k::coop_attention_fits(&limits, other, d) {
                        kernels.push(other);
                    }
                }
            }
            for kernel in kernels {
                let (q, kv) = (q.clone(), kv.clone());
                let how = match kernel {
                    k::AttentionKernel::Untiled => "ours".to_string(),
                    k::AttentionKernel::Tiled { keys } => format!("ours tiled, {keys} keys"),
                    k::AttentionKernel::Lanes { lanes } => format!("ours, {lanes} lanes"),
                    k::AttentionKernel::Coop {
                        size,
                        subgroups,
                        keys,
                        ..
                    } => {
                        let chosen = if kernel == coop { ", chosen" } else { "" };
                        format!(
                            "coop {size}, {} rows, {keys} keys{chosen}",
                            subgroups * size
                        )
                    }
                };
                ways.push((
                    how,
                    Box::new(move || {
                        flat3(k::attention_with(
                            q.clone().into(),
                            kv.clone().into(),
                            kv.clone().into(),
                            heads,
                            None,
                            kernel,
                        ))
                    }),
                ));
            }
            report(&format!("attention {name}"), "attention", work, ways)?;
        }

        // Group norm with SiLU at 64x64, 320 channels in 32 groups: bytes read and written.
        let x = random4([2, 64, 64, 320]).permute([0, 3, 1, 2]);
        let gamma = Tensor::<1>::ones([320], &device);
        let beta = Tensor::<1>::zeros([320], &device);
        let bytes = 2.0 * (2 * 320 * 64 * 64) as f64 * if limits.computes_f16 { 2.0 } else { 4.0 };
        let composed = || {
            let g = x.clone().reshape([2, 32, 10 * 64 * 64]);
            let mean = g.clone().mean_dim(2);
            let centred = g - mean;
            let var = centred.clone().powi_scalar(2).mean_dim(2);
            let normed = (centred / var.add_scalar(1e-5).sqrt()).reshape([2, 320, 64, 64]);
            let y = normed * gamma.clone().reshape([1, 320, 1, 1])
                + beta.clone().reshape([1, 320, 1, 1]);
            flat4(burn::tensor::activation::silu(y))
        };
        let ways: Vec<(String, Box<dyn Fn() -> Tensor<1>>)> = vec![
            ("burn".into(), Box::new(composed)),
            (
                "ours".into(),
                Box::new(|| flat4(k::group_norm(x.clone(), &gamma, &beta, 32, 1e-5, true))),
            ),
        ];
        report("group norm + SiLU 64x64x320", "norm", bytes, ways)?;
        Ok(())
    })
}
