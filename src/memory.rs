//! What a generation needs on the device, known before any work starts.
//!
//! WebGPU tells a page nothing about free memory, but it does say how large one buffer may be
//! (`maxStorageBufferBindingSize`), and a tensor larger than that fails deep inside a kernel
//! launch, or loses the device. So before sampling, [`activations`] lists the largest tensors
//! each component will hold at the requested size (from the configs: channels times pixels,
//! in f32), and [`check`] refuses, naming the tensor and the limit, any that cannot fit.
//! Attention is not on the list: it runs in query chunks sized from the same limit; nor is
//! the VAE decoder's full-size activation where it decodes in row bands instead.

use burn::tensor::Device;

use crate::device::Limits;
use crate::error::{Error, Result};
use crate::models::clip::{ClipTextConfig, ClipTextEncoder};
use crate::models::denoiser::{DenoiserConfig, TransformerKind};
use crate::models::flux::{Flux, FluxConfig};
use crate::models::mmdit::{Mmdit, MmditConfig, T5_TOKENS};
use crate::models::t5::{T5Config, T5Encoder};
use crate::models::unet::{UNet, UNetConfig};
use crate::models::vae::{VaeConfig, VaeDecoder, VaeEncoder, band_peak, decoder_bands};
use crate::source::FileSource;
use crate::weights::{Weights, human_bytes};

/// One large tensor of a generation.
#[derive(Debug, Clone, PartialEq)]
pub struct Need {
    /// Where it lives, in words ("VAE decoder, last up block input").
    pub what: String,
    pub shape: Vec<usize>,
    pub bytes: u64,
}

impl Need {
    fn new(what: impl Into<String>, shape: Vec<usize>) -> Self {
        let bytes = shape.iter().map(|&d| d as u64).product::<u64>() * 4;
        Self {
            what: what.into(),
            shape,
            bytes,
        }
    }
}

/// The images a run encodes besides drawing its own, for [`activations`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Encoded {
    /// An image of the output's size (img2img's, an inpainting mask's image, a control image).
    pub output_size: bool,
    /// A reference image's width and height (FLUX.1 Kontext's), whose tokens also join the
    /// transformer's.
    pub reference: Option<(usize, usize)>,
    /// T5's places in the text context where they are not the model's default
    /// (`StableDiffusion::set_max_sequence_length`).
    pub t5_tokens: Option<usize>,
}

/// The largest tensor of each stage of one generation at `width` x `height`: the denoiser
/// with `batch` rows (2 with classifier-free guidance), the VAE decoder (in tiles where the
/// whole decode would not fit `max_binding_bytes`), and the encoder for the images `encoded`.
pub fn activations(
    denoiser: DenoiserConfig,
    vae: &VaeConfig,
    width: usize,
    height: usize,
    batch: usize,
    encoded: Encoded,
    max_binding_bytes: u64,
) -> Vec<Need> {
    let factor = vae.downscale();
    let (lh, lw) = (height / factor, width / factor);
    let reference_tokens = encoded
        .reference
        .map_or(0, |(w, h)| (h / factor / 2) * (w / factor / 2));
    let mut needs = vec![match denoiser {
        DenoiserConfig::UNet(unet) => unet_peak(unet, lh, lw, batch),
        DenoiserConfig::Mmdit(mmdit) => {
            let t5 = encoded.t5_tokens.unwrap_or(T5_TOKENS);
            mmdit_peak(mmdit, lh, lw, t5, batch)
        }
        DenoiserConfig::Flux(flux) => {
            let t5 = encoded.t5_tokens.unwrap_or(crate::models::flux::T5_TOKENS);
            flux_peak(flux, lh, lw, reference_tokens + t5, batch)
        }
    }];

    // VAE decoder: whole, or in the row bands that fit the binding limit.
    let bands = decoder_bands(vae, lh, lw, max_binding_bytes);
    let (block, shape) = band_peak(vae, lh, lw, bands);
    let what = if bands > 1 {
        format!(", in {bands} row bands")
    } else {
        String::new()
    };
    needs.push(Need::new(
        format!("VAE decoder up block {block} input{what}"),
        shape.to_vec(),
    ));

    // VAE encoder: down block k works at full size / 2^k with its own channels, and its
    // first layer takes the previous block's channels.
    let sizes = encoded.output_size.then_some((width, height));
    let mut widest: Option<Need> = None;
    for (w, h) in sizes.into_iter().chain(encoded.reference) {
        for (k, &c) in vae.block_out_channels.iter().enumerate() {
            let need = Need::new(
                format!("VAE encoder down block {k}"),
                vec![1, c, h >> k, w >> k],
            );
            if widest.as_ref().is_none_or(|n| need.bytes > n.bytes) {
                widest = Some(need);
            }
        }
    }
    needs.extend(widest);
    needs
}

/// The UNet's largest activation: resnet features (the up path concatenates the skip
/// connection, so up to two levels' channels) and, where a level has attention, the GEGLU
/// feed-forward's 8x-wide hidden state.
fn unet_peak(unet: &UNetConfig, lh: usize, lw: usize, batch: usize) -> Need {
    let channels = &unet.block_out_channels;
    let mut widest = Need::new("UNet", vec![0]);
    for (i, &c) in channels.iter().enumerate() {
        let (h, w) = (lh >> i, lw >> i);
        let skip = channels[(i + 1).min(channels.len() - 1)];
        let features = Need::new(
            format!("UNet level {i} features with skip connection"),
            vec![batch, c + skip, h, w],
        );
        let attends = unet
            .down_block_types
            .get(i)
            .is_some_and(|t| t.contains("CrossAttn"));
        let geglu = Need::new(
            format!("UNet level {i} feed-forward"),
            vec![batch, h * w, 8 * c],
        );
        for need in [Some(features), attends.then_some(geglu)]
            .into_iter()
            .flatten()
        {
            if need.bytes > widest.bytes {
                widest = need;
            }
        }
    }
    widest
}

/// The MMDiT's largest activation it cannot split: the joint attention's input, image
/// tokens and text tokens (CLIP's 77 and T5's `t5` places) side by side. Attention runs in
/// query chunks, the 4x-wide feed-forward in token chunks.
fn mmdit_peak(mmdit: &MmditConfig, lh: usize, lw: usize, t5: usize, batch: usize) -> Need {
    let tokens = mmdit.image_tokens(lh, lw) + 77 + t5;
    Need::new(
        "transformer joint attention input",
        vec![batch, tokens, mmdit.inner_dim()],
    )
}

/// FLUX's largest activation: a single-stream block's projections of every token, image
/// and `others` (any reference image's, T5's), to its queries, keys, values and 4x-wide
/// MLP at once (7 x the width).
fn flux_peak(flux: &FluxConfig, lh: usize, lw: usize, others: usize, batch: usize) -> Need {
    let tokens = flux.image_tokens(lh, lw) + others;
    Need::new(
        "transformer single-stream block projections",
        vec![batch, tokens, 7 * flux.inner_dim()],
    )
}

/// The f32 bytes of each component's weights, from its config alone: the components are
/// built on weights that only count what they ask for.
pub fn weight_bytes(
    text: &ClipTextConfig,
    denoiser: DenoiserConfig,
    vae: &VaeConfig,
    device: &Device,
) -> Result<Vec<(&'static str, u64)>> {
    let count = |build: &dyn Fn(&Weights) -> Result<()>| counted(device, build);
    Ok(vec![
        (
            "text encoder",
            count(&|w| ClipTextEncoder::load(text.clone(), w).map(drop))?,
        ),
        match denoiser {
            DenoiserConfig::UNet(unet) => {
                ("UNet", count(&|w| UNet::load(unet.clone(), w).map(drop))?)
            }
            DenoiserConfig::Mmdit(mmdit) => (
                "transformer",
                count(&|w| Mmdit::load(mmdit.clone(), w).map(drop))?,
            ),
            DenoiserConfig::Flux(flux) => (
                "transformer",
                count(&|w| Flux::load(flux.clone(), w).map(drop))?,
            ),
        },
        (
            "VAE",
            count(&|w| {
                VaeEncoder::load(vae.clone(), w)?;
                VaeDecoder::load(vae.clone(), w).map(drop)
            })?,
        ),
    ])
}

/// The f32 bytes of a text encoder's weights (SDXL's second one, beside [`weight_bytes`]).
pub fn text_encoder_bytes(text: &ClipTextConfig, device: &Device) -> Result<u64> {
    counted(device, &|w| {
        ClipTextEncoder::load(text.clone(), w).map(drop)
    })
}

/// The f32 bytes of SD 3's T5 encoder's weights.
pub fn t5_bytes(config: &T5Config, device: &Device) -> Result<u64> {
    counted(device, &|w| T5Encoder::load(config.clone(), w).map(drop))
}

/// The f32 bytes a component asks for when `build` makes it on weights that only count.
fn counted(device: &Device, build: &dyn Fn(&Weights) -> Result<()>) -> Result<u64> {
    let weights = Weights::count_only(device);
    build(&weights)?;
    Ok(weights.requested_bytes())
}

/// Refuses what `limits` cannot hold, naming the tensor, its size and the limit.
pub fn check(needs: &[Need], limits: &Limits, width: usize, height: usize) -> Result<()> {
    match needs.iter().find(|n| n.bytes > limits.max_binding_bytes) {
        None => Ok(()),
        Some(n) => Err(Error::DeviceLimit(format!(
            "at {width}x{height}, the {} is a tensor of {} ({:?}), but {} binds at most {} per buffer; choose a smaller size",
            n.what,
            human_bytes(n.bytes),
            n.shape,
            limits.adapter,
            human_bytes(limits.max_binding_bytes)
        ))),
    }
}

/// The largest square side, at most `native` and a multiple of 8 latent pixels, at which a
/// guided generation fits `max_binding_bytes`; `None` if not even the smallest does.
pub fn largest_side(
    denoiser: DenoiserConfig,
    vae: &VaeConfig,
    native: usize,
    max_binding_bytes: u64,
) -> Option<usize> {
    let step = vae.downscale() * 8;
    (1..=native / step).rev().map(|k| k * step).find(|&side| {
        activations(
            denoiser,
            vae,
            side,
            side,
            2,
            Encoded::default(),
            max_binding_bytes,
        )
        .iter()
        .all(|n| n.bytes <= max_binding_bytes)
    })
}

/// What a model needs of a device, known from its configs before any weight is read.
#[derive(Debug, Clone, PartialEq)]
pub struct Requirements {
    /// Its weights' bytes as the device will hold them (f16 where it computes in f16).
    pub weight_bytes: u64,
    /// The image side it was trained for.
    pub native_size: usize,
    /// The largest square side (at most the native one) that fits the adapter's binding
    /// limit.
    pub largest_side: usize,
}

/// The [`Requirements`] of the diffusers-layout model whose configs `files` hold (T5's
/// weights counted only `with_t5`: SD 3's may be left behind; FLUX's, its only context, are
/// always counted). Refuses, before any download, a model that `device`'s adapter cannot run
/// at any size.
pub fn requirements(
    files: &dyn FileSource,
    with_t5: bool,
    device: &Device,
) -> Result<Requirements> {
    // The SDXL refiner has the second text encoder alone, where the first would be.
    let (first, second) = (
        crate::models::clip::CONFIG_FILE,
        crate::models::clip::CONFIG_FILE_2,
    );
    let (text, both) = match files.read_text(first)? {
        Some(json) => (ClipTextConfig::from_file(first, &json)?, true),
        None => match files.read_text(second)? {
            Some(json) => (ClipTextConfig::from_file(second, &json)?, false),
            None => return Err(Error::MissingFile(first.into())),
        },
    };
    // SD 3's and FLUX's folders hold a transformer where the others hold a UNet.
    let (unet, mmdit, flux);
    let mut t5_file = crate::models::t5::CONFIG_FILE;
    let denoiser = match files.read_text(crate::models::mmdit::CONFIG_FILE)? {
        Some(json) => match TransformerKind::of_config(&json) {
            TransformerKind::Sd3 => {
                mmdit = MmditConfig::from_json(&json)?;
                DenoiserConfig::Mmdit(&mmdit)
            }
            TransformerKind::Flux => {
                flux = FluxConfig::from_json(&json)?;
                t5_file = crate::models::t5::CONFIG_FILE_FLUX;
                DenoiserConfig::Flux(&flux)
            }
        },
        None => {
            unet = UNetConfig::from_json(&files.require_text(crate::models::unet::CONFIG_FILE)?)?;
            DenoiserConfig::UNet(&unet)
        }
    };
    let vae = VaeConfig::from_json(&files.require_text(crate::models::vae::CONFIG_FILE)?)?;
    let mut f32_bytes: u64 = weight_bytes(&text, denoiser, &vae, device)?
        .iter()
        .map(|(_, b)| b)
        .sum();
    let second_is_clip = !matches!(denoiser, DenoiserConfig::Flux(_));
    if both
        && second_is_clip
        && let Some(json) = files.read_text(second)?
    {
        f32_bytes += text_encoder_bytes(&ClipTextConfig::from_file(second, &json)?, device)?;
    }
    // FLUX's T5 is its context encoder, which the page always fetches: always counted.
    let counts_t5 = with_t5 || matches!(denoiser, DenoiserConfig::Flux(_));
    if counts_t5 && let Some(json) = files.read_text(t5_file)? {
        f32_bytes += t5_bytes(&T5Config::from_file(t5_file, &json)?, device)?;
    }
    let limits = crate::device::limits(device);
    let native_size = denoiser.sample_size() * vae.downscale();
    let Some(largest_side) = largest_side(denoiser, &vae, native_size, limits.max_binding_bytes)
    else {
        let smallest = vae.downscale() * 8;
        let needs = activations(
            denoiser,
            &vae,
            smallest,
            smallest,
            2,
            Encoded::default(),
            limits.max_binding_bytes,
        );
        check(&needs, &limits, smallest, smallest)?;
        return Err(Error::DeviceLimit(format!(
            "{} cannot run this model at any size",
            limits.adapter
        )));
    };
    Ok(Requirements {
        weight_bytes: if limits.computes_f16 {
            f32_bytes / 2
        } else {
            f32_bytes
        },
        native_size,
        largest_side,
    })
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;

    /// A guided UNet run's needs at `side` x `side`, nothing encoded.
    fn guided_unet(unet: &UNetConfig, vae: &VaeConfig, side: usize, limit: u64) -> Vec<Need> {
        activations(
            DenoiserConfig::UNet(unet),
            vae,
            side,
            side,
            2,
            Encoded::default(),
            limit,
        )
    }

    /// A published config from tests/fixtures/configs.
    fn read(name: &str) -> String {
        std::fs::read_to_string(format!(
            "{}/tests/fixtures/configs/{name}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
    }

    fn sd15() -> (UNetConfig, VaeConfig) {
        (
            UNetConfig::from_json(&read("sd15_unet.json")).unwrap(),
            VaeConfig::from_json(&read("sd15_vae.json")).unwrap(),
        )
    }

    #[test]
    fn sd15_at_512_needs_its_vae_decoder_s_256_channel_full_size_tensor() {
        let (unet, vae) = sd15();
        let needs = activations(
            DenoiserConfig::UNet(&unet),
            &vae,
            512,
            512,
            2,
            Encoded {
                output_size: true,
                ..Encoded::default()
            },
            u64::MAX,
        );
        let decoder = needs
            .iter()
            .find(|n| n.what.starts_with("VAE decoder"))
            .unwrap();
        // The last up block takes 256 channels upsampled to 512x512: 256 MiB in f32.
        assert_eq!(decoder.shape, [1, 256, 512, 512]);
        assert_eq!(decoder.bytes, 256 << 20);
        let unet_need = &needs[0];
        // Level 0 (64x64 latents, 320 channels) attends: GEGLU hidden 2 x 4096 x 2560.
        assert_eq!(unet_need.shape, [2, 4096, 2560]);
    }

    #[test]
    fn sd15_weights_are_counted_from_the_configs() {
        let (unet, vae) = sd15();
        let text = ClipTextConfig::from_json(&read("sd15_text_encoder.json")).unwrap();
        let bytes = weight_bytes(
            &text,
            DenoiserConfig::UNet(&unet),
            &vae,
            &crate::device::cpu(),
        )
        .unwrap();
        let params = |name: &str| bytes.iter().find(|(n, _)| *n == name).unwrap().1 / 4;
        // The published parameter counts of SD 1.5's components.
        assert_eq!(params("UNet"), 859_520_964);
        assert_eq!(params("text encoder"), 123_060_480);
        assert_eq!(params("VAE"), 83_653_863);
    }

    #[test]
    fn sd35_medium_and_t5_xxl_are_counted_from_the_configs() {
        let mmdit = MmditConfig::from_json(&read("sd35m_transformer.json")).unwrap();
        let vae = VaeConfig::from_json(&read("sd35m_vae.json")).unwrap();
        let text = ClipTextConfig::from_json(&read("sd15_text_encoder.json")).unwrap();
        let cpu = crate::device::cpu();
        let bytes = weight_bytes(&text, DenoiserConfig::Mmdit(&mmdit), &vae, &cpu).unwrap();
        let transformer = bytes.iter().find(|(n, _)| *n == "transformer").unwrap().1 / 4;
        // diffusers' parameter count of SD 3.5 medium's transformer, plus the position table
        // its files store (384 x 384 x 1536).
        assert_eq!(transformer, 2_243_171_520 + 226_492_416);
        let t5 = T5Config::from_json(&read("t5_xxl_text_encoder.json")).unwrap();
        assert_eq!(t5_bytes(&t5, &cpu).unwrap() / 4, 4_762_310_656);
        // At 1024x1024 the guided joint attention takes 4096 image and 333 text tokens, 1536
        // wide: within WebGPU's default binding limit (the feed-forward, 4x wider, runs in
        // token chunks).
        let mmdit_need = &activations(
            DenoiserConfig::Mmdit(&mmdit),
            &vae,
            1024,
            1024,
            2,
            Encoded::default(),
            128 << 20,
        )[0];
        assert_eq!(mmdit_need.shape, [2, 4096 + 333, 1536]);
        assert!(mmdit_need.bytes < 128 << 20);
    }

    #[test]
    fn flux1_dev_is_counted_from_its_config() {
        let flux = FluxConfig::from_json(&read("flux1_dev_transformer.json")).unwrap();
        let vae = VaeConfig::from_json(&read("sd35m_vae.json")).unwrap();
        let text = ClipTextConfig::from_json(&read("sd15_text_encoder.json")).unwrap();
        let cpu = crate::device::cpu();
        let bytes = weight_bytes(&text, DenoiserConfig::Flux(&flux), &vae, &cpu).unwrap();
        let transformer = bytes.iter().find(|(n, _)| *n == "transformer").unwrap().1 / 4;
        // diffusers' parameter count of FLUX.1-dev's transformer
        // (`tools/make_full_size.py`'s `flux_configs`).
        assert_eq!(transformer, 11_901_408_320);
        // At 1024x1024 (4096 image tokens and T5's 512, no second pass) a single-stream
        // block projects every token to 7 x 3072 at once: 378 MiB, past WebGPU's default
        // binding limit; 512x512 fits it.
        let at = |side| {
            activations(
                DenoiserConfig::Flux(&flux),
                &vae,
                side,
                side,
                1,
                Encoded::default(),
                128 << 20,
            )
        };
        let need = &at(1024)[0];
        assert_eq!(need.shape, [1, 4096 + 512, 7 * 3072]);
        assert!(need.bytes > 128 << 20);
        assert!(at(512)[0].bytes < 128 << 20);
        // Kontext: a 1024x768 reference image adds its 3072 tokens, and its encoding.
        let with_reference = activations(
            DenoiserConfig::Flux(&flux),
            &vae,
            512,
            512,
            1,
            Encoded {
                reference: Some((1024, 768)),
                ..Encoded::default()
            },
            128 << 20,
        );
        assert_eq!(with_reference[0].shape, [1, 1024 + 3072 + 512, 7 * 3072]);
        // schnell's model card reads 256 T5 tokens (`set_max_sequence_length`).
        let shorter = Encoded {
            reference: Some((1024, 768)),
            t5_tokens: Some(256),
            ..Encoded::default()
        };
        let with_shorter = activations(
            DenoiserConfig::Flux(&flux),
            &vae,
            512,
            512,
            1,
            shorter,
            128 << 20,
        );
        assert_eq!(with_shorter[0].shape, [1, 1024 + 3072 + 256, 7 * 3072]);
        let encoder = with_reference.last().unwrap();
        assert!(encoder.what.starts_with("VAE encoder"), "{}", encoder.what);
        assert_eq!(encoder.shape[2..], [768, 1024]);
    }

    #[test]
    fn requirements_come_from_a_folders_configs_alone() {
        let mut files = crate::source::MemorySource::new();
        for (path, config) in [
            ("transformer/config.json", "sd35m_transformer.json"),
            ("vae/config.json", "sd35m_vae.json"),
            ("text_encoder/config.json", "sd15_text_encoder.json"),
            ("text_encoder_2/config.json", "sdxl_text_encoder_2.json"),
            ("text_encoder_3/config.json", "t5_xxl_text_encoder.json"),
        ] {
            files.insert(path, read(config).into_bytes());
        }
        let cpu = crate::device::cpu();
        let without = requirements(&files, false, &cpu).unwrap();
        let with = requirements(&files, true, &cpu).unwrap();
        // docs/models.md's table: 12.55 GiB without T5, 30.29 GiB with it, in f32.
        assert_eq!(human_bytes(without.weight_bytes), "12.55 GiB");
        assert_eq!(human_bytes(with.weight_bytes), "30.29 GiB");
        assert_eq!((with.native_size, with.largest_side), (1024, 1024));
        // A folder without the denoiser's config is missing a file, named.
        let mut bare = crate::source::MemorySource::new();
        bare.insert(
            "text_encoder/config.json",
            read("sd15_text_encoder.json").into_bytes(),
        );
        let e = requirements(&bare, false, &cpu).unwrap_err();
        assert!(e.to_string().contains("unet/config.json"), "{e}");
    }

    fn adapter(max_binding_bytes: u64) -> Limits {
        Limits {
            max_binding_bytes,
            shader_f16: false,
            computes_f16: false,
            adapter: "a small GPU".into(),
            workgroup_bytes: 16384,
            workgroup_invocations: 256,
            subgroup_lanes: None,
            coop_size: None,
            software: false,
        }
    }

    #[test]
    fn the_vae_decodes_sd15_at_512_in_row_bands_under_webgpu_s_default_limit() {
        let (unet, vae) = sd15();
        let limit = 128 << 20;
        let needs = guided_unet(&unet, &vae, 512, limit);
        let decoder = needs
            .iter()
            .find(|n| n.what.starts_with("VAE decoder"))
            .unwrap();
        // Two bands of 32 latent rows would each hold 256 x 258 x 512 f32s, 129 MiB with the
        // halo rows; three bands of at most 22 rows hold 256 x 178 x 512, 89 MiB.
        assert!(decoder.what.ends_with("in 3 row bands"), "{decoder:?}");
        assert_eq!(decoder.shape, [1, 256, 178, 512]);
        check(&needs, &adapter(limit), 512, 512).unwrap();
        // A latent that fits is decoded whole.
        let needs = guided_unet(&unet, &vae, 256, limit);
        assert!(needs.iter().all(|n| !n.what.contains("bands")), "{needs:?}");
    }

    #[test]
    fn the_largest_side_that_fits_is_found_below_the_native_one() {
        let (unet, vae) = sd15();
        // WebGPU's default limit: SD 1.5's native 512 fits.
        assert_eq!(
            largest_side(DenoiserConfig::UNet(&unet), &vae, 512, 128 << 20),
            Some(512)
        );
        // At 64 MiB the feed-forward at 512 (80 MiB) does not; 448 (61.3 MiB) does.
        let limit = 64 << 20;
        assert_eq!(
            largest_side(DenoiserConfig::UNet(&unet), &vae, 512, limit),
            Some(448)
        );
        let fits = |side| {
            let needs = guided_unet(&unet, &vae, side, limit);
            check(&needs, &adapter(limit), side, side).is_ok()
        };
        assert!(fits(448) && !fits(512));
        assert_eq!(
            largest_side(DenoiserConfig::UNet(&unet), &vae, 512, 1 << 10),
            None
        );
    }

    #[test]
    fn check_names_the_tensor_and_the_limit() {
        let (unet, vae) = sd15();
        let limit = 64 << 20;
        let needs = guided_unet(&unet, &vae, 512, limit);
        let e = check(&needs, &adapter(limit), 512, 512)
            .unwrap_err()
            .to_string();
        // The UNet's feed-forward, 2 x 4096 x 2560 in f32, cannot be split.
        assert!(
            e.contains("UNet level 0 feed-forward") && e.contains("80.0 MiB"),
            "{e}"
        );
        assert!(e.contains("a small GPU") && e.contains("64.0 MiB"), "{e}");
        // 256x256 fits the same adapter.
        let needs = guided_unet(&unet, &vae, 256, limit);
        check(&needs, &adapter(limit), 256, 256).unwrap();
        // With one band per latent row (10 pixel rows with the halo, 5 MiB) still too big,
        // the decoder is refused too.
        let tiny = 4 << 20;
        let needs = activations(
            DenoiserConfig::UNet(&unet),
            &vae,
            512,
            512,
            1,
            Encoded::default(),
            tiny,
        );
        let decoder = needs
            .iter()
            .find(|n| n.what.starts_with("VAE decoder"))
            .unwrap();
        assert!(decoder.what.ends_with("in 64 row bands"), "{decoder:?}");
        assert_eq!(decoder.bytes, 256 * 10 * 512 * 4);
    }
}
