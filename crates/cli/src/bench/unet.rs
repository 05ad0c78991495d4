//! `lina bench-unet`: one UNet call of a config timed, with random weights or PyTorch's, and
//! its output set against PyTorch's.

use std::path::PathBuf;
use std::time::Instant;

use lina_runtime::bench::Summary;
use lina_runtime::kernels::Kernels;
use lina_runtime::{Error, Result};

use super::differences;
use crate::common::{self, DeviceArg};

#[derive(clap::Args)]
pub struct Args {
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

/// Times UNet calls of a config, with random weights (for full-size architectures whose
/// checkpoints are not at hand) or PyTorch's (`--reference`, to check the output too). Prints
/// median, min and max over `--repeat` calls after one warm-up call (shader compilation,
/// autotuning).
pub fn run(args: Args) -> Result<()> {
    use burn::tensor::{Distribution, Tensor};
    use lina_runtime::models::unet::{UNet, UNetConfig};
    use lina_runtime::weights::Weights;

    let Args {
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
