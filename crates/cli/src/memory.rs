//! `lina-cli memory`: what a model needs, from its configs alone.

use std::path::PathBuf;

use lina_runtime::memory;
use lina_runtime::models::denoiser::{DenoiserConfig, TransformerKind};
use lina_runtime::models::flux::FluxConfig;
use lina_runtime::models::mmdit::MmditConfig;
use lina_runtime::models::t5::T5Config;
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
    #[arg(long, conflicts_with = "transformer")]
    unet: Option<PathBuf>,
    /// SD 3's or FLUX's transformer's config.json (a model folder with `transformer/` has
    /// one).
    #[arg(long)]
    transformer: Option<PathBuf>,
    /// The VAE's config.json.
    #[arg(long)]
    vae: Option<PathBuf>,
    /// The text encoder's config.json.
    #[arg(long)]
    text_encoder: Option<PathBuf>,
    /// SDXL's and SD 3's second text encoder's config.json, FLUX's T5 (found in the model
    /// folder where it has one).
    #[arg(long)]
    text_encoder_2: Option<PathBuf>,
    /// SD 3's T5 config.json (found in the model folder where it has one).
    #[arg(long)]
    text_encoder_3: Option<PathBuf>,
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
    // An optional component's config: given, else in the model folder where it has one.
    let optional = |explicit: &Option<PathBuf>, folder: &str| match (explicit, &args.model) {
        (Some(path), _) => Some(path.clone()),
        (None, Some(model)) => {
            Some(model.join(folder).join("config.json")).filter(|path| path.exists())
        }
        (None, None) => None,
    };
    let (mut unet, mut mmdit, mut flux) = (None, None, None);
    let denoiser = match optional(&args.transformer, "transformer") {
        Some(path) => {
            let json = common::read_text(&path)?;
            match TransformerKind::of_config(&json) {
                TransformerKind::Sd3 => {
                    DenoiserConfig::Mmdit(mmdit.insert(MmditConfig::from_json(&json)?))
                }
                TransformerKind::Flux => {
                    DenoiserConfig::Flux(flux.insert(FluxConfig::from_json(&json)?))
                }
            }
        }
        None => DenoiserConfig::UNet(unet.insert(UNetConfig::from_json(&config(
            args.unet.clone(),
            "unet",
            "unet",
        )?)?)),
    };
    // FLUX's second text encoder is its T5.
    let is_flux = matches!(denoiser, DenoiserConfig::Flux(_));
    let t5 = match is_flux {
        true => (&args.text_encoder_2, "text_encoder_2"),
        false => (&args.text_encoder_3, "text_encoder_3"),
    };
    let vae = VaeConfig::from_json(&config(args.vae, "vae", "vae")?)?;
    let text =
        ClipTextConfig::from_json(&config(args.text_encoder, "text_encoder", "text-encoder")?)?;

    let cpu = lina_runtime::device::cpu();
    let mut weights = memory::weight_bytes(&text, denoiser, &vae, &cpu)?;
    if let Some(path) = optional(&args.text_encoder_2, "text_encoder_2").filter(|_| !is_flux) {
        let config =
            ClipTextConfig::from_file("text_encoder_2/config.json", &common::read_text(&path)?)?;
        weights.insert(
            1,
            ("text encoder 2", memory::text_encoder_bytes(&config, &cpu)?),
        );
    }
    if let Some(path) = optional(t5.0, t5.1) {
        let file = format!("{}/config.json", t5.1);
        let config = T5Config::from_file(&file, &common::read_text(&path)?)?;
        let at = weights.len() - 2;
        weights.insert(at, ("T5 text encoder", memory::t5_bytes(&config, &cpu)?));
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
    // Two rows with classifier-free guidance; FLUX, guidance-distilled, runs one.
    let rows = if is_flux { 1 } else { 2 };
    println!(
        "\n| size | largest tensor (guided, f32) | where | with a 128 MiB binding limit |\n| --- | --- | --- | --- |"
    );
    for side in args.sizes {
        let largest = |limit: u64| {
            let needs = memory::activations(
                denoiser,
                &vae,
                side,
                side,
                rows,
                memory::Encoded::default(),
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
