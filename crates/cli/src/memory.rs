//! `lina-cli memory`: what a model needs, from its configs alone.

use std::path::PathBuf;

use lina_runtime::memory;
use lina_runtime::models::denoiser::DenoiserConfig;
use lina_runtime::models::{clip::ClipTextConfig, unet::UNetConfig, vae::VaeConfig};
use lina_runtime::weights::human_bytes;
use lina_runtime::{Error, Result};

use crate::common;

#[derive(clap::Args)]
pub struct Args {
    /// A diffusers-layout model folder (or give each config file).
    #[arg(long)]
    model: Option<PathBuf>,
    /// The UNet's config.json.
    #[arg(long)]
    unet: Option<PathBuf>,
    /// The VAE's config.json.
    #[arg(long)]
    vae: Option<PathBuf>,
    /// The text encoder's config.json.
    #[arg(long)]
    text_encoder: Option<PathBuf>,
    /// SDXL's second text encoder's config.json (found in the model folder where it has one).
    #[arg(long)]
    text_encoder_2: Option<PathBuf>,
    /// Image sides to report, in pixels.
    #[arg(long, value_delimiter = ',', default_value = "256,512,768")]
    sizes: Vec<usize>,
}

/// Prints, as Markdown, what a model needs: its weights (from the configs alone) and the
/// largest single tensor of one guided generation at each size.
pub fn run(args: Args) -> Result<()> {
    let config = |explicit: Option<PathBuf>, folder: &str, flag: &str| -> Result<String> {
        let path = match (explicit, &args.model) {
            (Some(path), _) => path,
            (None, Some(model)) => model.join(folder).join("config.json"),
            (None, None) => {
                return Err(Error::InvalidInput(format!(
                    "--model or --{flag} is required"
                )));
            }
        };
        common::read_text(&path)
    };
    let unet = UNetConfig::from_json(&config(args.unet, "unet", "unet")?)?;
    let vae = VaeConfig::from_json(&config(args.vae, "vae", "vae")?)?;
    let text =
        ClipTextConfig::from_json(&config(args.text_encoder, "text_encoder", "text-encoder")?)?;

    let mut weights = memory::weight_bytes(&text, &unet, &vae, &lina_runtime::device::cpu())?;
    let second = match (&args.text_encoder_2, &args.model) {
        (Some(path), _) => Some(path.clone()),
        (None, Some(model)) => {
            Some(model.join("text_encoder_2").join("config.json")).filter(|path| path.exists())
        }
        (None, None) => None,
    };
    if let Some(path) = second {
        let config =
            ClipTextConfig::from_file("text_encoder_2/config.json", &common::read_text(&path)?)?;
        let bytes = memory::text_encoder_bytes(&config, &lina_runtime::device::cpu())?;
        weights.insert(1, ("text encoder 2", bytes));
    }
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
    for side in args.sizes {
        let largest = |limit: u64| {
            let needs = memory::activations(
                DenoiserConfig::UNet(&unet),
                &vae,
                side,
                side,
                2,
                false,
                limit,
            );
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
