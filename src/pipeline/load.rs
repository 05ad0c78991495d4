//! Loading a model: a diffusers folder in any of its historical layouts, or a single-file
//! checkpoint, each component's weights streamed to the device, with LoRAs merged in.

use burn::tensor::Device;

use super::adapters::{Adapters, Kept, build_keeping};
use super::{Refiner, SecondEncoder, StableDiffusion, T5State};
use crate::error::{Error, Result};
use crate::kernels::Kernels;
use crate::models::clip::{self, ClipTextConfig, ClipTextEncoder};
use crate::models::controlnet::{self, ControlNet, ControlNetConfig};
use crate::models::denoiser::{Denoiser, DenoiserConfig, ImageCondition, TransformerKind};
use crate::models::flux::{self, Flux, FluxConfig};
use crate::models::mmdit::{self, Mmdit, MmditConfig};
use crate::models::t2i_adapter::{self, T2IAdapter, T2IAdapterConfig};
use crate::models::t5::{T5Config, T5Encoder};
use crate::models::taesd::{self, TaesdConfig, TaesdDecoder};
use crate::models::unet::{self, DownPath, UNet, UNetConfig};
use crate::models::vae::{self, VaeConfig, VaeDecoder, VaeEncoder};
use crate::schedulers::{self, FlowSpacing, SchedulerConfig};
use crate::single_file::{self, CHECKPOINT_FILE, Checkpoint};
use crate::source::FileSource;
use crate::tokenizer::{ClipTokenizer, T5Tokenizer};
use crate::weights::{LoraTarget, ScaledLora, Weights, WeightsUpload};

/// A text encoder's weight files, in order of preference.
const TEXT_ENCODER_WEIGHTS: &[&str] = &["model.safetensors", "model.fp16.safetensors"];

/// Where a model folder keeps its T5 encoder and tokenizer, and what LoRA files call it.
pub(super) struct T5Folders {
    pub(super) encoder: &'static str,
    pub(super) tokenizer: &'static str,
    pub(super) lora: LoraTarget,
}

/// SD 3's T5 is its third text encoder (kohya's `lora_te3_`).
pub(super) const T5_SD3: &T5Folders = &T5Folders {
    encoder: "text_encoder_3",
    tokenizer: "tokenizer_3",
    lora: LoraTarget::TextEncoder3,
};
/// FLUX's is its second (kohya's `lora_te2_`, diffusers' `text_encoder_2.`).
pub(super) const T5_FLUX: &T5Folders = &T5Folders {
    encoder: "text_encoder_2",
    tokenizer: "tokenizer_2",
    lora: LoraTarget::TextEncoder2,
};

/// Streams one component's weights from the first weight file its folder has (in order of
/// preference; each either whole or sharded with an index).
fn folder_weights(
    files: &dyn FileSource,
    folder: &str,
    names: &[&str],
    device: &Device,
) -> Result<Weights> {
    for name in names {
        let path = in_folder(folder, name);
        if let Some(weights) = stream_weights(files, &path, device)? {
            tracing::debug!(file = %path, "component weights read");
            return Ok(weights);
        }
    }
    // Say so when the folder holds its weights only in a pickle, rather than that they are
    // missing.
    let pickles = names
        .iter()
        .map(|name| name.replace(".safetensors", ".bin"))
        .chain(["pytorch_model.bin", "model.ckpt", "model.pt"].map(String::from));
    for pickle in pickles {
        let path = in_folder(folder, &pickle);
        if files.len(&path)?.is_some() {
            return Err(Error::PickledWeights(path));
        }
    }
    Err(Error::MissingFile(in_folder(folder, names[0])))
}

/// `name` in `folder` of a source; `""` is the source's root.
fn in_folder(folder: &str, name: &str) -> String {
    match folder {
        "" => name.to_string(),
        _ => format!("{folder}/{name}"),
    }
}

/// A tokenizer as a diffusers folder holds it: vocab.json and merges.txt, or one
/// tokenizer.json, with the config beside it.
fn load_tokenizer(files: &dyn FileSource, folder: &str) -> Result<Option<ClipTokenizer>> {
    let config = files.read(&format!("{folder}/tokenizer_config.json"))?;
    if let Some(json) = files.read(&format!("{folder}/tokenizer.json"))? {
        return ClipTokenizer::from_tokenizer_json(&json, config.as_deref()).map(Some);
    }
    let Some(vocab) = files.read(&format!("{folder}/vocab.json"))? else {
        return Ok(None);
    };
    ClipTokenizer::from_vocab_merges(
        &vocab,
        &files.require(&format!("{folder}/merges.txt"))?,
        config.as_deref(),
    )
    .map(Some)
}

/// Refuses a LoRA that adapts a part of a model other than `parts`, the ones it has.
fn refuse_absent_parts(loras: &[ScaledLora], parts: &[LoraTarget]) -> Result<()> {
    for lora in loras {
        if let Some(absent) = LoraTarget::ALL
            .into_iter()
            .find(|t| !parts.contains(t) && lora.lora.adapts(*t))
        {
            let has: Vec<&str> = parts.iter().map(|t| t.name()).collect();
            return Err(Error::InvalidInput(format!(
                "LoRA {}: adapts {}, which this model does not have (it has {})",
                lora.lora.source(),
                absent.name(),
                has.join(", ")
            )));
        }
    }
    Ok(())
}

/// Builds one component from its weights, merging `loras` as they load, then checks that the
/// weights held nothing the component left unused.
pub(super) fn build_component<T>(
    weights: Weights,
    (kernels, loras): (Kernels, Option<(&[ScaledLora], LoraTarget)>),
    build: impl FnOnce(&Weights) -> Result<T>,
) -> Result<T> {
    let weights = weights.with_kernels(kernels);
    if let Some((loras, target)) = loras {
        weights.adapt(loras, target)?;
    }
    let component = build(&weights)?;
    weights.finish()?;
    Ok(component)
}

/// A component's weights and config: from the single-file checkpoint where it holds them
/// (a config file in the source still wins over the inferred one), else from its folder.
fn component_source(
    files: &dyn FileSource,
    from_checkpoint: Option<single_file::Part>,
    (folder, names, config_file): (&str, &[&str], &str),
    device: &Device,
) -> Result<(Weights, String)> {
    match from_checkpoint {
        Some(part) => {
            let config = files.read_text(config_file)?.unwrap_or(part.config);
            Ok((part.weights, config))
        }
        None => Ok((
            folder_weights(files, folder, names, device)?,
            files.require_text(config_file)?,
        )),
    }
}

/// Streams `path`, or the shards its `.index.json` lists, to the device; `None` if neither
/// exists.
fn stream_weights(files: &dyn FileSource, path: &str, device: &Device) -> Result<Option<Weights>> {
    let new_upload = || {
        let upload = WeightsUpload::new(device);
        match path {
            CHECKPOINT_FILE => upload.skipping(single_file::unused),
            _ => upload,
        }
    };
    let mut upload = new_upload();
    let feed = |upload: &mut WeightsUpload, file: &str| -> Result<bool> {
        if let Some(done) = files.take_uploaded(file) {
            upload.merge(done)?;
            return Ok(true);
        }
        upload.begin_file(file, files.len(file)?)?;
        if !files.stream(file, &mut |chunk| upload.push(chunk))? {
            return Ok(false);
        }
        upload.end_file()?;
        Ok(true)
    };
    if feed(&mut upload, path)? {
        return upload.finish(path).map(Some);
    }
    let mut upload = new_upload();
    let index_path = format!("{path}.index.json");
    let Some(index) = files.read(&index_path)? else {
        return Ok(None);
    };
    let folder = path.rsplit_once('/').map_or("", |(f, _)| f);
    for shard in shard_files(&index_path, &index)? {
        let shard_path = format!("{folder}/{shard}");
        if !feed(&mut upload, &shard_path)? {
            return Err(Error::MissingFile(format!(
                "{shard_path} (listed in {index_path})"
            )));
        }
    }
    upload.finish(&index_path).map(Some)
}

/// The distinct shard files of a sharded checkpoint's index, in name order.
fn shard_files(index_path: &str, index: &[u8]) -> Result<Vec<String>> {
    #[derive(serde::Deserialize)]
    struct Index {
        weight_map: serde_json::Map<String, serde_json::Value>,
    }
    let index: Index = serde_json::from_slice(index)
        .map_err(|e| Error::config(index_path, format!("invalid index: {e}")))?;
    let mut shards = Vec::new();
    for (tensor, file) in &index.weight_map {
        let file = file.as_str().ok_or_else(|| {
            Error::config(
                index_path,
                format!("weight_map[\"{tensor}\"] is not a file name"),
            )
        })?;
        if file.contains('/') || file.contains("..") || !file.ends_with(".safetensors") {
            return Err(Error::config(
                index_path,
                format!("weight_map names `{file}`, not a .safetensors file beside the index"),
            ));
        }
        shards.push(file.to_string());
    }
    shards.sort_unstable();
    shards.dedup();
    Ok(shards)
}

impl StableDiffusion {
    /// Loads every component of a diffusers-layout model, checking configs and tensors.
    pub fn load(files: &dyn FileSource, device: &Device) -> Result<Self> {
        Self::load_with(files, device, Kernels::default())
    }

    /// [`StableDiffusion::load`] with the kernels its layers run: [`Kernels::Burn`] leaves
    /// the fused kernels of shaders/ out (to measure them, or to rule them out).
    pub fn load_with(files: &dyn FileSource, device: &Device, kernels: Kernels) -> Result<Self> {
        Self::load_adapted(files, device, kernels, &[])
    }

    /// [`StableDiffusion::load_with`] with LoRA adapters merged into the UNet's and the text
    /// encoder's weights, each at its scale (`weights::lora`).
    pub fn load_adapted(
        files: &dyn FileSource,
        device: &Device,
        kernels: Kernels,
        loras: &[ScaledLora],
    ) -> Result<Self> {
        let checkpoint_file = files.len(CHECKPOINT_FILE)?;
        // The model index, where the source has one: it names the components a folder
        // leaves out (`[null, null]`) and the pipeline's options.
        let index = match files.read("model_index.json")? {
            Some(bytes) => Some(
                serde_json::from_slice::<serde_json::Value>(&bytes)
                    .map_err(|e| Error::config("model_index.json", e.to_string()))?,
            ),
            None => None,
        };
        let index_flag = |key: &str| {
            index
                .as_ref()
                .and_then(|i| i.get(key))
                .and_then(serde_json::Value::as_bool)
        };
        // A single-file checkpoint, where the source has one, supplies the weights (and the
        // configs the source lacks) of the components it holds. Its tokenizer comes from
        // beside it: one is asked for before gigabytes of weights are read.
        let has_tokenizer = |folder: &str| -> Result<bool> {
            Ok(files.read(&format!("{folder}/tokenizer.json"))?.is_some()
                || files.read(&format!("{folder}/vocab.json"))?.is_some())
        };
        if checkpoint_file.is_some()
            && !has_tokenizer("tokenizer")?
            && !has_tokenizer("tokenizer_2")?
        {
            return Err(Error::NoTokenizer("tokenizer/vocab.json".into()));
        }
        let checkpoint = match stream_weights(files, CHECKPOINT_FILE, device)? {
            Some(weights) => Some(Checkpoint::split(CHECKPOINT_FILE, weights)?),
            None => None,
        };
        // The SDXL refiner: SDXL's second text encoder alone, where the first would be (its
        // index also says `requires_aesthetics_score`; the UNet's widths are checked below).
        let refiner = match &checkpoint {
            Some(c) => c.family == single_file::Family::SdxlRefiner,
            None => {
                index_flag("requires_aesthetics_score") != Some(false)
                    && files.read(clip::CONFIG_FILE)?.is_none()
                    && files.read(clip::CONFIG_FILE_2)?.is_some()
            }
        };
        let (tokenizer_folder, text_folder, text_config_file, text_target) = match refiner {
            false => (
                "tokenizer",
                "text_encoder",
                clip::CONFIG_FILE,
                LoraTarget::TextEncoder,
            ),
            true => (
                "tokenizer_2",
                "text_encoder_2",
                clip::CONFIG_FILE_2,
                LoraTarget::TextEncoder2,
            ),
        };
        let Some(mut tokenizer) = load_tokenizer(files, tokenizer_folder)? else {
            let path = format!("{tokenizer_folder}/vocab.json");
            return Err(match files.len(CHECKPOINT_FILE)? {
                Some(_) => Error::NoTokenizer(path),
                None => Error::MissingFile(path),
            });
        };
        // SD 3's and FLUX's folders (and SD 3's files) hold a transformer where the others
        // hold a UNet.
        let transformer = match &checkpoint {
            Some(c) => match c.family {
                single_file::Family::Sd3 => Some(TransformerKind::Sd3),
                single_file::Family::Flux => Some(TransformerKind::Flux),
                _ => None,
            },
            None => files
                .read_text(mmdit::CONFIG_FILE)?
                .map(|json| TransformerKind::of_config(&json)),
        };
        let flow_model = transformer.is_some();
        // FLUX's second text encoder is its T5, not a second CLIP.
        let flux = transformer == Some(TransformerKind::Flux);
        let (denoiser_part, vae_part, text_part, text_2_part, text_3_part, checkpoint_scheduler) =
            match checkpoint {
                // The refiner's one encoder is its first (it has no other).
                Some(c) if refiner => (
                    Some(c.denoiser),
                    c.vae,
                    c.text_encoder_2,
                    None,
                    None,
                    Some(c.scheduler_config),
                ),
                Some(c) => (
                    Some(c.denoiser),
                    c.vae,
                    c.text_encoder,
                    c.text_encoder_2,
                    c.text_encoder_3,
                    Some(c.scheduler_config),
                ),
                None => (None, None, None, None, None, None),
            };

        // SDXL and SD 3: a second tokenizer and text encoder beside the first.
        let has_second = !refiner
            && !flux
            && (text_2_part.is_some() || files.read(clip::CONFIG_FILE_2)?.is_some());
        // A LoRA for a part the model does not have would adapt nothing: refused, naming the
        // part, before any weights are read.
        let denoiser_target = match flow_model {
            true => LoraTarget::Transformer,
            false => LoraTarget::Unet,
        };
        // SD 3's and FLUX's T5, where the folder (or file) has one.
        let t5_folders = match flux {
            true => T5_FLUX,
            false => T5_SD3,
        };
        let has_t5 = flow_model
            && (text_3_part.is_some()
                || files
                    .read(&format!("{}/config.json", t5_folders.encoder))?
                    .is_some());
        let parts: Vec<LoraTarget> = [text_target, denoiser_target]
            .into_iter()
            .chain(has_second.then_some(LoraTarget::TextEncoder2))
            .chain(has_t5.then_some(t5_folders.lora))
            .collect();
        refuse_absent_parts(loras, &parts)?;

        let text_files = (text_folder, TEXT_ENCODER_WEIGHTS, text_config_file);
        let (weights, config) = component_source(files, text_part, text_files, device)?;
        let text_config = ClipTextConfig::from_file(text_config_file, &config)?;
        tokenizer.limit_length(text_config.max_position_embeddings);
        let (text_encoder, kept_text) = build_keeping(
            weights,
            (kernels, loras, text_target),
            text_config,
            ClipTextEncoder::load,
        )?;
        let refiner = refiner.then(|| Refiner {
            zeros_for_empty_negative: index_flag("force_zeros_for_empty_prompt").unwrap_or(false),
        });

        let mut kept_second = None;
        let second = match has_second {
            false => None,
            true => {
                let from_file = text_2_part.is_some();
                let (weights, config) = component_source(
                    files,
                    text_2_part,
                    ("text_encoder_2", TEXT_ENCODER_WEIGHTS, clip::CONFIG_FILE_2),
                    device,
                )?;
                let config = ClipTextConfig::from_file(clip::CONFIG_FILE_2, &config)?;
                let mut tokenizer = load_tokenizer(files, "tokenizer_2")?.ok_or_else(|| {
                    let path = "tokenizer_2/vocab.json".to_string();
                    match from_file {
                        true => Error::NoTokenizer(path),
                        false => Error::MissingFile(path),
                    }
                })?;
                tokenizer.limit_length(config.max_position_embeddings);
                let (encoder, kept) = build_keeping(
                    weights,
                    (kernels, loras, LoraTarget::TextEncoder2),
                    config,
                    ClipTextEncoder::load,
                )?;
                kept_second = kept;
                let zeros_for_empty_negative =
                    index_flag("force_zeros_for_empty_prompt").unwrap_or(!flow_model);
                Some(SecondEncoder {
                    tokenizer,
                    encoder,
                    zeros_for_empty_negative,
                })
            }
        };

        let names = [
            "diffusion_pytorch_model.safetensors",
            "diffusion_pytorch_model.fp16.safetensors",
        ];
        // A transformer or a UNet: its folder and its config.
        let (folder, config_file) = match flow_model {
            true => ("transformer", mmdit::CONFIG_FILE),
            false => ("unet", unet::CONFIG_FILE),
        };
        let (weights, config) =
            component_source(files, denoiser_part, (folder, &names, config_file), device)?;
        let adapted = (kernels, loras, denoiser_target);
        let (mut kept_unet, mut kept_mmdit, mut kept_flux) = (None, None, None);
        let denoiser = match transformer {
            Some(TransformerKind::Sd3) => {
                let config = MmditConfig::from_json(&config)?;
                let (mmdit, kept) = build_keeping(weights, adapted, config, Mmdit::load)?;
                kept_mmdit = kept;
                Denoiser::Mmdit(Box::new(mmdit))
            }
            Some(TransformerKind::Flux) => {
                let mut config = FluxConfig::from_json(&config)?;
                // A control LoRA (FLUX.1 Canny's, Depth's) widens the input layer to take the
                // control image's latents beside the latents: the model becomes Canny or Depth.
                // (An update of any other width is refused as it merges, naming its LoRA.)
                let control = 2 * config.in_channels;
                if loras
                    .iter()
                    .any(|l| l.lora.flux_input_width() == Some(control))
                {
                    // The output stays the latents' (a config without `out_channels` takes the
                    // input's).
                    config.out_channels = Some(config.out_channels());
                    config.in_channels = control;
                }
                let (flux, kept) = build_keeping(weights, adapted, config, Flux::load)?;
                kept_flux = kept;
                Denoiser::Flux(Box::new(flux))
            }
            None => {
                let config = UNetConfig::from_json(&config)?;
                let (unet, kept) = build_keeping(weights, adapted, config, UNet::load)?;
                kept_unet = kept;
                Denoiser::UNet(Box::new(unet))
            }
        };
        let (weights, config) =
            component_source(files, vae_part, ("vae", &names, vae::CONFIG_FILE), device)?;
        let vae_config = VaeConfig::from_json(&config)?;
        // On a device that computes in f16 the VAE runs in f32 unless its config says it
        // need not: SD's and SDXL's VAEs overflow f16 and draw black or NaN images.
        let weights = match crate::device::limits(device).computes_f16 && vae_config.force_upcast {
            true => weights.with_dtype(burn::tensor::FloatDType::F32),
            false => weights,
        };
        let (vae, vae_encoder) = build_component(weights, (kernels, None), |w| {
            let encoder = w
                .contains("encoder.conv_in.weight")
                .then(|| VaeEncoder::load(vae_config.clone(), w).map(Box::new))
                .transpose()?;
            Ok((Box::new(VaeDecoder::load(vae_config, w)?), encoder))
        })?;

        // An optional tiny VAE beside the main one, for previews.
        let taesd = match files.read(taesd::CONFIG_FILE)? {
            None => None,
            Some(json) => {
                let config = TaesdConfig::from_json(
                    std::str::from_utf8(&json)
                        .map_err(|_| Error::config(taesd::CONFIG_FILE, "is not UTF-8 text"))?,
                )?;
                if config.latent_channels != vae.config().latent_channels {
                    return Err(Error::config(
                        taesd::CONFIG_FILE,
                        "latent_channels differs from the VAE's",
                    ));
                }
                Some(build_component(
                    folder_weights(files, "vae_tiny", &names, device)?,
                    (kernels, None),
                    |w| TaesdDecoder::load(config, w),
                )?)
            }
        };

        let scheduler_json = match (
            files.read_text(schedulers::CONFIG_FILE)?,
            checkpoint_scheduler,
        ) {
            (Some(text), _) => text,
            (None, Some(inferred)) => inferred,
            (None, None) => return Err(Error::MissingFile(schedulers::CONFIG_FILE.into())),
        };
        let mut scheduler_config = SchedulerConfig::from_json(&scheduler_json)?;
        if flux {
            // FLUX's pipeline spaces its steps' sigmas from 1 to 1/n.
            scheduler_config.flow.spacing = FlowSpacing::UnitToOneOverSteps;
        }
        let (t5, kept_t5) = match &denoiser {
            Denoiser::UNet(unet) => {
                Self::check_unet(unet, &text_encoder, second.as_ref(), &refiner, vae.config())?;
                (T5State::Absent, None)
            }
            Denoiser::Mmdit(mmdit) => {
                Self::check_mmdit(mmdit.config(), &text_encoder, second.as_ref(), vae.config())?;
                let joint = mmdit.config().joint_attention_dim;
                let source = (text_3_part, T5_SD3);
                Self::load_t5(files, source, joint, device, (kernels, loras))?
            }
            Denoiser::Flux(flux) => {
                Self::check_flux(flux.config(), &text_encoder, vae.config())?;
                let joint = flux.config().joint_attention_dim;
                let source = (text_3_part, T5_FLUX);
                Self::load_t5(files, source, joint, device, (kernels, loras))?
            }
        };
        Ok(Self {
            tokenizer,
            text_encoder,
            second,
            refiner,
            adapters: (!loras.is_empty()).then(|| Adapters {
                loras: loras.to_vec(),
                text_encoder: kept_text,
                second: kept_second,
                unet: kept_unet,
                mmdit: kept_mmdit,
                flux: kept_flux,
                t5: kept_t5,
                added_rows: [Vec::new(), Vec::new()],
            }),
            t5,
            t5_tokens: denoiser.t5_tokens(),
            denoiser,
            vae,
            vae_encoder,
            taesd,
            controlnets: Vec::new(),
            t2i_adapter: None,
            scheduler_config,
            device: device.clone(),
            kernels,
        })
    }

    /// Loads a ControlNet (diffusers' `ControlNetModel`) from `folder` of `files`: `""` for a
    /// ControlNet's own folder (a hub repo such as `lllyasviel/sd-controlnet-canny`: its
    /// `config.json` and weights at the root), `"controlnet"` in a pipeline's folder. The
    /// weight file may also hold an original ControlNet (lllyasviel's layout:
    /// `control_v11p_sd15_canny` and the like, `control_model.`-prefixed or bare), read
    /// with a config inferred from its shapes where the folder has none. It replaces any
    /// loaded before ([`add_controlnet`](Self::add_controlnet) loads one more); each
    /// generation then needs its control image
    /// ([`GenerateOptions::controlnets`](super::GenerateOptions::controlnets)) until it is
    /// removed ([`remove_controlnets`](Self::remove_controlnets)). Refused, loading nothing,
    /// where it does not fit this model: a transformer in place of a UNet, another text
    /// width, other down blocks, another latent width or VAE downscale, SDXL's added input
    /// on one side only; a config beside the weights is checked before they are read.
    pub fn load_controlnet(&mut self, files: &dyn FileSource, folder: &str) -> Result<()> {
        let net = self.read_controlnet(files, folder)?;
        self.controlnets = vec![net];
        Ok(())
    }

    /// Loads one more ControlNet beside those loaded (as [`load_controlnet`] reads one), for
    /// generations that follow several control images at once (diffusers'
    /// `MultiControlNetModel`: their additions summed). A refused one leaves those loaded.
    ///
    /// [`load_controlnet`]: Self::load_controlnet
    pub fn add_controlnet(&mut self, files: &dyn FileSource, folder: &str) -> Result<()> {
        let net = self.read_controlnet(files, folder)?;
        self.controlnets.push(net);
        Ok(())
    }

    /// One ControlNet from `folder` of `files`, checked against this model.
    fn read_controlnet(&self, files: &dyn FileSource, folder: &str) -> Result<ControlNet> {
        let config_file = in_folder(folder, controlnet::CONFIG_FILE);
        let Some(unet) = self.denoiser.unet() else {
            return Err(Error::InvalidInput(
                "a ControlNet steers a UNet (SD 1.x, 2.x, XL); this model's denoiser is a transformer".into(),
            ));
        };
        let fitting = |file: &str, json: &str| -> Result<ControlNetConfig> {
            let config = ControlNetConfig::from_json(file, json)?;
            Self::check_controlnet(&config, unet, self.vae.config(), file)?;
            Ok(config)
        };
        let given = match files.read_text(&config_file)? {
            Some(json) => Some(fitting(&config_file, &json)?),
            None => None,
        };
        let weights = folder_weights(files, folder, controlnet::WEIGHT_FILES, &self.device)?;
        let names: Vec<&str> = weights.shapes().into_iter().map(|(n, _)| n).collect();
        let (weights, config) = if single_file::controlnet::is_original(&names) {
            let file = weights.source().to_string();
            let part = single_file::controlnet::split(&file, weights)?;
            let config = match given {
                Some(config) => config,
                None => fitting(&file, &part.config)?,
            };
            (part.weights, config)
        } else {
            let config = given.ok_or_else(|| Error::MissingFile(config_file.clone()))?;
            (weights, config)
        };
        build_component(weights, (self.kernels, None), |w| {
            ControlNet::load(config, w)
        })
    }

    /// Loads a T2I-Adapter (diffusers' `T2IAdapter` of the full type, SD 1.x's and 2.x's:
    /// `TencentARC/t2iadapter_*_sd15v2` and the like) from `folder` of `files` (`""` for its
    /// own folder), replacing any loaded before; each generation then needs its input
    /// ([`GenerateOptions::t2i_adapter`](super::GenerateOptions::t2i_adapter)). Refused,
    /// loading nothing, where its feature maps do not fit the UNet's down blocks (their
    /// widths, its first map at the latents' size) or the model is a transformer.
    pub fn load_t2i_adapter(&mut self, files: &dyn FileSource, folder: &str) -> Result<()> {
        let config_file = in_folder(folder, t2i_adapter::CONFIG_FILE);
        let config = T2IAdapterConfig::from_json(&config_file, &files.require_text(&config_file)?)?;
        let Some(unet) = self.denoiser.unet() else {
            return Err(Error::InvalidInput(
                "a T2I-Adapter steers a UNet (SD 1.x, 2.x); this model's denoiser is a transformer"
                    .into(),
            ));
        };
        let widths = &unet.config().block_out_channels;
        if config.channels.len() > widths.len()
            || widths[..config.channels.len()] != config.channels
        {
            return Err(Error::config(
                &config_file,
                format!(
                    "this T2I-Adapter's channels {:?} are not the UNet's down blocks' widths {widths:?}",
                    config.channels
                ),
            ));
        }
        let downscale = self.vae.config().downscale();
        if config.downscale_factor != downscale {
            return Err(Error::config(
                &config_file,
                format!(
                    "this T2I-Adapter's downscale_factor {} is not the VAE's {downscale}",
                    config.downscale_factor
                ),
            ));
        }
        let weights = folder_weights(files, folder, t2i_adapter::WEIGHT_FILES, &self.device)?;
        let adapter = build_component(weights, (self.kernels, None), |w| {
            T2IAdapter::load(config, w)
        })?;
        self.t2i_adapter = Some(adapter);
        Ok(())
    }

    /// A ControlNet's fit to the UNet and VAE it would run beside: it reads the latents
    /// alone, attends to the same text, makes one addition per skip connection of the
    /// UNet's widths, and brings the control image down by the VAE's factor.
    fn check_controlnet(
        config: &ControlNetConfig,
        unet: &UNet,
        vae: &VaeConfig,
        file: &str,
    ) -> Result<()> {
        let (net, target) = (&config.trunk, unet.config());
        let mismatch = |what: &str, ours: String, theirs: String| {
            Err(Error::config(
                file,
                format!("this ControlNet's {what} ({ours}) differs from the model's ({theirs})"),
            ))
        };
        if net.cross_attention_dim != target.cross_attention_dim {
            return mismatch(
                "cross_attention_dim",
                net.cross_attention_dim.to_string(),
                target.cross_attention_dim.to_string(),
            );
        }
        let (skips, unet_skips) = (
            DownPath::skip_channels(net)?,
            DownPath::skip_channels(target)?,
        );
        if skips != unet_skips {
            return mismatch(
                "skip connections' channels",
                format!("{skips:?}"),
                format!("{unet_skips:?}"),
            );
        }
        if net.in_channels != vae.latent_channels {
            return mismatch(
                "in_channels",
                net.in_channels.to_string(),
                format!("the VAE's latent_channels {}", vae.latent_channels),
            );
        }
        if config.downscale() != vae.downscale() {
            return mismatch(
                "image downscale",
                format!(
                    "{}, from {} conditioning_embedding_out_channels",
                    config.downscale(),
                    config.conditioning.embedding_out_channels.len()
                ),
                format!("the VAE's {}", vae.downscale()),
            );
        }
        if net.addition_embed_type.is_some() && net.text_time_dims() != target.text_time_dims() {
            return mismatch(
                "added text and size input",
                format!("{:?}", net.text_time_dims()),
                format!("{:?}", target.text_time_dims()),
            );
        }
        Ok(())
    }

    /// A UNet's fit to the text encoders and the VAE loaded beside it.
    fn check_unet(
        unet: &UNet,
        text_encoder: &ClipTextEncoder,
        second: Option<&SecondEncoder>,
        refiner: &Option<Refiner>,
        vae: &VaeConfig,
    ) -> Result<()> {
        match (second, unet.config().text_time_dims()) {
            (None, Some((time, input))) if refiner.is_some() && unet.takes_text_time() => {
                let pooled = text_encoder.pooled_width();
                if input != pooled + 5 * time {
                    return Err(Error::config(
                        unet::CONFIG_FILE,
                        format!(
                            "projection_class_embeddings_input_dim {input} is not the text encoder's pooled width {pooled} plus 5 x addition_time_embed_dim {time} (an SDXL refiner's size and aesthetic score; for SDXL base, {} is missing)",
                            clip::CONFIG_FILE
                        ),
                    ));
                }
            }
            (None, _) if refiner.is_some() => {
                return Err(Error::config(
                    unet::CONFIG_FILE,
                    "the model index asks for an aesthetic score (an SDXL refiner), but the UNet takes no pooled text and size (addition_embed_type \"text_time\")",
                ));
            }
            (Some(s), Some((time, input))) if unet.takes_text_time() => {
                let pooled = s.encoder.pooled_width();
                if input != pooled + 6 * time {
                    return Err(Error::config(
                        unet::CONFIG_FILE,
                        format!(
                            "projection_class_embeddings_input_dim {input} is not the second text encoder's pooled width {pooled} plus 6 x addition_time_embed_dim {time}"
                        ),
                    ));
                }
            }
            (None, _) if !unet.takes_text_time() => {}
            (Some(_), _) => {
                return Err(Error::config(
                    unet::CONFIG_FILE,
                    "the model has a second text encoder, but its UNet takes no pooled text (addition_embed_type \"text_time\")",
                ));
            }
            (None, _) => {
                return Err(Error::MissingFile(format!(
                    "{}: this UNet (addition_embed_type \"text_time\", SDXL) needs a second text encoder",
                    clip::CONFIG_FILE_2
                )));
            }
        }
        let context_width = text_encoder.config().hidden_size
            + second
                .as_ref()
                .map_or(0, |s| s.encoder.config().hidden_size);
        if unet.config().cross_attention_dim != context_width {
            return Err(Error::config(
                unet::CONFIG_FILE,
                format!(
                    "cross_attention_dim {} differs from the text encoders' hidden_size {context_width}",
                    unet.config().cross_attention_dim,
                ),
            ));
        }
        Self::check_input_channels(
            DenoiserConfig::UNet(unet.config()),
            unet.config().in_channels,
            vae,
            unet::CONFIG_FILE,
        )
    }

    /// The T5 encoder and its tokenizer where the folder (or file) has them, in `folders`
    /// (SD 3's or FLUX's), with `loras` merged; its hidden states must be the transformer's
    /// `joint` width. Also its weights, kept where a LoRA adapts it.
    fn load_t5(
        files: &dyn FileSource,
        (from_checkpoint, folders): (Option<single_file::Part>, &T5Folders),
        joint: usize,
        device: &Device,
        (kernels, loras): (Kernels, &[ScaledLora]),
    ) -> Result<(T5State, Option<Kept<T5Config>>)> {
        let config_file = format!("{}/config.json", folders.encoder);
        let config = match (files.read_text(&config_file)?, &from_checkpoint) {
            (Some(config), _) => config,
            (None, Some(part)) => part.config.clone(),
            (None, None) => return Ok((T5State::Absent, None)),
        };
        let config = T5Config::from_file(&config_file, &config)?;
        if config.d_model != joint {
            return Err(Error::config(
                &config_file,
                format!(
                    "d_model {} differs from the transformer's joint_attention_dim {joint}",
                    config.d_model
                ),
            ));
        }
        let weights = match from_checkpoint {
            Some(part) => part.weights,
            None => match folder_weights(files, folders.encoder, TEXT_ENCODER_WEIGHTS, device) {
                Ok(weights) => weights,
                Err(Error::MissingFile(_)) => {
                    // Its weights left behind: a LoRA for it would adapt nothing.
                    if let Some(lora) = loras.iter().find(|l| l.lora.adapts(folders.lora)) {
                        return Err(Error::InvalidInput(format!(
                            "LoRA {}: adapts T5 ({}), whose weights the model was loaded without",
                            lora.lora.source(),
                            folders.encoder
                        )));
                    }
                    return Ok((T5State::Skipped, None));
                }
                Err(e) => return Err(e),
            },
        };
        let tokenizer = T5Tokenizer::from_tokenizer_json(
            &files.require(&format!("{}/tokenizer.json", folders.tokenizer))?,
            files
                .read(&format!("{}/tokenizer_config.json", folders.tokenizer))?
                .as_deref(),
        )?;
        let adapted = (kernels, loras, folders.lora);
        let (encoder, kept) = build_keeping(weights, adapted, config, T5Encoder::load)?;
        Ok((T5State::Loaded(Box::new((tokenizer, encoder))), kept))
    }

    /// A FLUX transformer's fit: CLIP's pooled output as wide as its pooled input, the VAE's
    /// latent channels packed 2x2 as its input channels.
    fn check_flux(
        config: &FluxConfig,
        text_encoder: &ClipTextEncoder,
        vae: &VaeConfig,
    ) -> Result<()> {
        let pooled = text_encoder.pooled_width();
        if pooled != config.pooled_projection_dim {
            return Err(Error::config(
                flux::CONFIG_FILE,
                format!(
                    "pooled_projection_dim {} is not the text encoder's pooled width {pooled}",
                    config.pooled_projection_dim
                ),
            ));
        }
        if config.latent_channels() != vae.latent_channels {
            return Err(Error::config(
                flux::CONFIG_FILE,
                format!(
                    "out_channels {} is not 4 x the VAE's latent_channels {} (2x2 packed patches)",
                    config.out_channels(),
                    vae.latent_channels
                ),
            ));
        }
        Self::check_input_channels(
            DenoiserConfig::Flux(config),
            config.in_channels,
            vae,
            flux::CONFIG_FILE,
        )
    }

    /// A denoiser's input channels (`in_channels`, as its config writes them) fit the VAE's
    /// latents and one [`ImageCondition`] beside them.
    fn check_input_channels(
        config: DenoiserConfig,
        in_channels: usize,
        vae: &VaeConfig,
        file: &str,
    ) -> Result<()> {
        let (latent, f) = (vae.latent_channels, vae.downscale());
        match ImageCondition::of(config, latent, f) {
            Some(_) => Ok(()),
            None => Err(Error::config(
                file,
                format!(
                    "in_channels {in_channels} fits none of {}",
                    ImageCondition::choices(config, latent, f)
                ),
            )),
        }
    }

    /// An SD 3 transformer's fit: two text encoders with pooled outputs as wide together as
    /// its pooled input, hidden states that fit its joint width side by side, the VAE's
    /// latent channels.
    fn check_mmdit(
        config: &MmditConfig,
        text_encoder: &ClipTextEncoder,
        second: Option<&SecondEncoder>,
        vae: &VaeConfig,
    ) -> Result<()> {
        let Some(second) = second else {
            return Err(Error::MissingFile(format!(
                "{}: this transformer (SD 3) needs a second text encoder and tokenizer_2",
                clip::CONFIG_FILE_2
            )));
        };
        let pooled = text_encoder.pooled_width() + second.encoder.pooled_width();
        if pooled != config.pooled_projection_dim {
            return Err(Error::config(
                mmdit::CONFIG_FILE,
                format!(
                    "pooled_projection_dim {} is not the text encoders' pooled widths together ({pooled})",
                    config.pooled_projection_dim
                ),
            ));
        }
        let hidden = text_encoder.config().hidden_size + second.encoder.config().hidden_size;
        if hidden > config.joint_attention_dim {
            return Err(Error::config(
                mmdit::CONFIG_FILE,
                format!(
                    "joint_attention_dim {} is narrower than the text encoders' hidden states side by side ({hidden})",
                    config.joint_attention_dim
                ),
            ));
        }
        if config.in_channels != vae.latent_channels {
            return Err(Error::config(
                mmdit::CONFIG_FILE,
                format!(
                    "in_channels {} differs from the VAE's latent_channels {}",
                    config.in_channels, vae.latent_channels
                ),
            ));
        }
        Ok(())
    }
}
