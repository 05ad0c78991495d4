//! Single-file checkpoints in the original key layout: the `*.safetensors` files most
//! people download for SD 1.x, 2.x, SDXL and SD 3.x, holding the UNet or SD 3's MMDiT
//! (`model.diffusion_model.*`), the VAE (`first_stage_model.*`) and the text encoders
//! (`cond_stage_model.*`, SDXL's `conditioner.embedders.*`, SD 3's `text_encoders.*`) under
//! the names of the code they were trained with, and no configs; and FLUX.1's transformer
//! files (`double_blocks.*`, `single_blocks.*`), which hold nothing else.
//!
//! The file is uploaded once; its tensors are then renamed into diffusers' names and split
//! into one [`Weights`] per component ([`Weights::regroup`]), so every model in `models/`
//! loads them as it loads a diffusers folder. The configs are inferred from the tensors'
//! shapes where shapes tell (channels, blocks, layers, context width, linear or convolution
//! projections) and from the family where they do not (attention heads, the VAE's scaling
//! factor, the noise schedule), as diffusers' single-file loader does: SD 3 by its joint
//! blocks, SDXL by its two embedders (or its added `label_emb`), the SDXL refiner by its one
//! OpenCLIP embedder, SD 1.x from SD 2.x by its
//! text encoder (CLIP ViT-L with transformers' names, or OpenCLIP with fused q/k/v), or,
//! without one, by its context width (768 or 1024).
//!
//! Configs in the model's source (`unet/config.json` and the like, e.g. the diffusers folder
//! that [`crate::source::DirSource::with_checkpoint`] pairs with the file) win over inferred
//! ones, as diffusers' `from_single_file(config=...)` does: that is how an SD 2.x base model
//! (epsilon, 512) is told from the 768 v-prediction one the family defaults to.
//!
//! The names are checked against diffusers' own converters by `tools/make_single_file.py`
//! (tests/fixtures/single_file/). ControlNets in their original layout, a model of their own
//! beside a checkpoint, are read by `controlnet`.

//!
//! Here the families and the checkpoint; `names` renames the original keys into diffusers'
//! (and into components), `configs` infers each component's config from the shapes.

mod configs;
pub mod controlnet;
mod names;

pub use configs::Configs;

use std::collections::BTreeMap;

use serde_json::Value;

use crate::error::{Error, Result};
use crate::weights::{Regroup, Weights};

use names::{PARTS, routes};

/// Where a [`crate::source::FileSource`] holds a single-file checkpoint.
pub const CHECKPOINT_FILE: &str = "checkpoint.safetensors";

const UNET: &str = "model.diffusion_model.";
const VAE: &str = "first_stage_model.";
const CLIP: &str = "cond_stage_model.transformer.";
const OPEN_CLIP: &str = "cond_stage_model.model.";
const CLIP_XL: &str = "conditioner.embedders.0.transformer.";
const OPEN_CLIP_XL: &str = "conditioner.embedders.1.model.";
// The SDXL refiner's only embedder: the base's second (OpenCLIP ViT-bigG) in first place.
const OPEN_CLIP_REFINER: &str = "conditioner.embedders.0.model.";
const MMDIT_BLOCKS: &str = "model.diffusion_model.joint_blocks.";
// FLUX's first double-stream block, as BFL's files name it (ComfyUI's put `UNET` before it).
const FLUX_BLOCK: &str = "double_blocks.0.";
// SD 3's text encoders keep transformers' names under these.
const SD3_CLIP_L: &str = "text_encoders.clip_l.transformer.";
const SD3_CLIP_G: &str = "text_encoders.clip_g.transformer.";
const SD3_T5: &str = "text_encoders.t5xxl.transformer.";

/// The model families a single file may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// SD 1.x: CLIP ViT-L/14 text encoder, 8 attention heads, epsilon prediction.
    Sd1,
    /// SD 2.x: OpenCLIP ViT-H/14 (its penultimate layer), 64-channel heads, linear
    /// projections; v-prediction at 768 unless a scheduler config says otherwise.
    Sd2,
    /// SDXL: CLIP ViT-L and OpenCLIP ViT-bigG/14 with its projection, the size conditioning
    /// (`label_emb`), 64-channel heads, 1024 px, its VAE's scaling factor 0.13025.
    Sdxl,
    /// The SDXL refiner: SDXL's OpenCLIP ViT-bigG alone (it loads as the model's
    /// `text_encoder_2`, as diffusers' refiner folders hold it), an aesthetic score in place
    /// of the target size (five time ids, not six), otherwise SDXL's rules.
    SdxlRefiner,
    /// SD 3.x: an MMDiT of 64-channel heads, CLIP-L and CLIP-G with their projections and an
    /// optional T5-XXL, the 16-channel VAE, flow matching with shift 3.
    Sd3,
    /// FLUX.1: its transformer (Black Forest Labs' files hold it alone; ComfyUI's put
    /// `model.diffusion_model.` before each name, and may hold the VAE and CLIP-L and T5
    /// under `text_encoders.*` as SD 3's files do); what the file lacks comes from the
    /// source's folders. Flow matching with FLUX's dynamic shift.
    Flux,
}

/// One component of a split checkpoint: its weights under diffusers' names, and its config
/// as diffusers would write it.
pub struct Part {
    pub weights: Weights,
    pub config: String,
}

/// A single-file checkpoint split into its components.
pub struct Checkpoint {
    pub family: Family,
    /// The UNet, or SD 3's or FLUX's transformer.
    pub denoiser: Part,
    /// `None` where the file holds only some components: they come from the source's
    /// folders instead.
    pub vae: Option<Part>,
    pub text_encoder: Option<Part>,
    /// SDXL's and SD 3's second text encoder.
    pub text_encoder_2: Option<Part>,
    /// SD 3's T5.
    pub text_encoder_3: Option<Part>,
    pub scheduler_config: String,
}

/// Tensor shapes by name.
type Shapes<'a> = BTreeMap<&'a str, &'a [usize]>;

/// The VAE's prefix some files use in place of `first_stage_model.` (ComfyUI's FLUX and SD
/// 3.5 checkpoints; diffusers' single-file loader reads both): read as the other.
const VAE_ALIAS: &str = "vae.";

/// `name` with the VAE's alias prefix read as `first_stage_model.`.
fn alias(name: &str) -> std::borrow::Cow<'_, str> {
    match name.strip_prefix(VAE_ALIAS) {
        Some(rest) => format!("{VAE}{rest}").into(),
        None => name.into(),
    }
}

impl Checkpoint {
    /// Splits `weights`, read from `file`, into components; fails (naming the nearest known
    /// layouts) where the names fit no layout, and for known kinds not run yet.
    pub fn split(file: &str, weights: Weights) -> Result<Self> {
        let weights = weights.with_scales_applied()?;
        let (family, routes, configs) = {
            let named: Vec<(String, &[usize])> = weights
                .shapes()
                .into_iter()
                .map(|(name, shape)| (alias(name).into_owned(), shape))
                .collect();
            let shapes: Shapes = named.iter().map(|(n, s)| (n.as_str(), *s)).collect();
            let family = family(file, &shapes)?;
            let routes = routes(file, family, &shapes)?;
            let configs = Configs::infer(file, family, &shapes)?;
            (family, routes, configs)
        };
        let mut parts = weights
            .regroup(PARTS, |name| {
                routes
                    .get(alias(name).as_ref())
                    .cloned()
                    .unwrap_or(Regroup::Drop)
            })?
            .into_iter();
        let mut next = || parts.next().expect("one set of weights per part");
        let (denoiser, vae, text, text_2, text_3) = (next(), next(), next(), next(), next());
        let part = |weights: Weights, config: Option<Value>| {
            config.map(|c| Part {
                weights,
                config: c.to_string(),
            })
        };
        Ok(Self {
            family,
            denoiser: part(denoiser, Some(configs.denoiser)).expect("a denoiser"),
            vae: part(vae, configs.vae),
            text_encoder: part(text, configs.text_encoder),
            text_encoder_2: part(text_2, configs.text_encoder_2),
            text_encoder_3: part(text_3, configs.text_encoder_3),
            scheduler_config: configs.scheduler.to_string(),
        })
    }
}

/// What a checkpoint of these tensor names and shapes is, and the configs inferred for it,
/// without its values: the same checks [`Checkpoint::split`] makes before it moves anything.
pub fn inspect(file: &str, shapes: &[(&str, &[usize])]) -> Result<(Family, Configs)> {
    let named: Vec<(String, &[usize])> = shapes
        .iter()
        .map(|(name, shape)| (alias(name).into_owned(), *shape))
        .collect();
    let shapes: Shapes = named.iter().map(|(n, s)| (n.as_str(), *s)).collect();
    let family = family(file, &shapes)?;
    routes(file, family, &shapes)?;
    Ok((family, Configs::infer(file, family, &shapes)?))
}

/// The components a checkpoint of these names and shapes lacks that its family runs with, by
/// their folders in a diffusers layout (`vae`, `text_encoder`, ...): what must come from the
/// folder beside it (a FLUX transformer file's VAE and text encoders; an SD 3 file's T5,
/// which runs without it). Fails as [`inspect`] does on a file that fits no layout.
pub fn lacking(file: &str, shapes: &[(&str, &[usize])]) -> Result<Vec<&'static str>> {
    let (family, configs) = inspect(file, shapes)?;
    let parts = [
        ("vae", configs.vae.is_some()),
        ("text_encoder", configs.text_encoder.is_some()),
        ("text_encoder_2", configs.text_encoder_2.is_some()),
        ("text_encoder_3", configs.text_encoder_3.is_some()),
    ];
    let runs_with: &[&str] = match family {
        Family::Sd1 | Family::Sd2 => &["vae", "text_encoder"],
        Family::Sdxl | Family::Flux => &["vae", "text_encoder", "text_encoder_2"],
        Family::SdxlRefiner => &["vae", "text_encoder_2"],
        Family::Sd3 => &["vae", "text_encoder", "text_encoder_2", "text_encoder_3"],
    };
    Ok(parts
        .into_iter()
        .filter(|(folder, held)| !held && runs_with.contains(folder))
        .map(|(folder, _)| folder)
        .collect())
}

/// Kinds of weight file told apart by their names, for the error that names the nearest
/// layouts to a file that fits none. A name belongs to a layout if it starts with one of its
/// prefixes (or contains one of its markers, for LoRA).
const LAYOUTS: &[(&str, &[&str])] = &[
    ("SD 1.x single file", &[UNET, VAE, CLIP]),
    ("SD 2.x single file", &[UNET, VAE, OPEN_CLIP]),
    ("SDXL single file", &[UNET, VAE, "conditioner.embedders."]),
    (
        "SD 3 single file",
        &["model.diffusion_model.joint_blocks.", VAE, "text_encoders."],
    ),
    (
        "FLUX transformer",
        &["double_blocks.", "single_blocks.", "img_in.", "txt_in."],
    ),
    (
        "diffusers UNet",
        &[
            "down_blocks.",
            "mid_block.",
            "up_blocks.",
            "conv_in.",
            "conv_norm_out.",
            "conv_out.",
            "time_embedding.",
        ],
    ),
    (
        "diffusers VAE",
        &["encoder.", "decoder.", "quant_conv.", "post_quant_conv."],
    ),
    (
        "transformers CLIP text encoder",
        &[
            "text_model.",
            "embeddings.",
            "encoder.layers.",
            "final_layer_norm.",
        ],
    ),
    (
        "LoRA",
        &[
            "lora_unet_",
            "lora_te",
            ".lora_down.",
            ".lora_A.",
            ".lora.down.",
        ],
    ),
];

/// Names a model never uses that single files carry: the noise schedule's buffers, an EMA
/// copy of the UNet, training losses' state, SD 2's text projection, T5's second name for
/// the embedding SD 3 files hold as `shared.weight`. Uploads skip them.
pub fn unused(name: &str) -> bool {
    const ROOT_BUFFERS: &[&str] = &[
        "betas",
        "alphas_cumprod",
        "alphas_cumprod_prev",
        "sqrt_alphas_cumprod",
        "sqrt_one_minus_alphas_cumprod",
        "log_one_minus_alphas_cumprod",
        "sqrt_recip_alphas_cumprod",
        "sqrt_recipm1_alphas_cumprod",
        "posterior_variance",
        "posterior_log_variance_clipped",
        "posterior_mean_coef1",
        "posterior_mean_coef2",
        "logvar",
        "lvlb_weights",
    ];
    ROOT_BUFFERS.contains(&name)
        || name.starts_with("model_ema.")
        || name.starts_with("first_stage_model.loss.")
        || name == "cond_stage_model.transformer.text_model.embeddings.position_ids"
        || name == "cond_stage_model.model.text_projection"
        || name == "cond_stage_model.model.logit_scale"
        || name == "conditioner.embedders.0.transformer.text_model.embeddings.position_ids"
        || name == "conditioner.embedders.1.model.logit_scale"
        || name == "conditioner.embedders.0.model.logit_scale"
        || name == "text_encoders.clip_l.transformer.text_model.embeddings.position_ids"
        || name == "text_encoders.clip_g.transformer.text_model.embeddings.position_ids"
        || name == "text_encoders.t5xxl.transformer.encoder.embed_tokens.weight"
        // ComfyUI's "scaled" fp8 files: a marker, and each layer's input scale (for fp8
        // products; this runtime computes in f32 or f16).
        || name == "scaled_fp8"
        || name.ends_with(".scale_input")
}

/// ComfyUI's schedule markers, empty tensors some fine-tunes carry: v-prediction and zero
/// terminal SNR. Unlike [`unused`] names they reach the split, which reads them into the
/// inferred scheduler config (`configs::marked_schedule`) and drops them.
pub const SCHEDULE_MARKERS: [&str; 2] = ["v_pred", "ztsnr"];

fn family(file: &str, shapes: &Shapes) -> Result<Family> {
    let has = |prefix: &str| shapes.keys().any(|n| n.starts_with(prefix));
    if has(MMDIT_BLOCKS) {
        return Ok(Family::Sd3);
    }
    if has(FLUX_BLOCK) || has(&format!("{UNET}{FLUX_BLOCK}")) {
        return Ok(Family::Flux);
    }
    if !has(UNET) {
        return Err(unknown_layout(file, shapes));
    }
    if has(OPEN_CLIP_REFINER) {
        return Ok(Family::SdxlRefiner);
    }
    if has("conditioner.embedders.") || has("model.diffusion_model.label_emb.") {
        return Ok(Family::Sdxl);
    }
    if has(OPEN_CLIP) {
        return Ok(Family::Sd2);
    }
    if has(CLIP) {
        return Ok(Family::Sd1);
    }
    // No text encoder in the file: the context width the UNet attends to tells.
    let context = shapes
        .iter()
        .find(|(n, _)| n.ends_with("attn2.to_k.weight"))
        .and_then(|(_, s)| s.last().copied());
    Ok(if context == Some(1024) {
        Family::Sd2
    } else {
        Family::Sd1
    })
}

/// The error for names no layout explains: the three layouts that explain most of them, and
/// the first names that even the nearest one does not.
fn unknown_layout(file: &str, shapes: &Shapes) -> Error {
    let fits = |name: &str, prefixes: &[&str]| {
        prefixes
            .iter()
            .any(|p| name.starts_with(p) || (p.starts_with('.') && name.contains(p)))
    };
    let total = shapes.len().max(1);
    let mut scored: Vec<(usize, &str, &[&str])> = LAYOUTS
        .iter()
        .map(|(label, prefixes)| {
            let n = shapes.keys().filter(|n| fits(n, prefixes)).count();
            (n, *label, *prefixes)
        })
        .collect();
    scored.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(b.1)));
    let nearest = scored
        .iter()
        .take(3)
        .map(|(n, label, _)| format!("{label} ({}% of its tensors)", n * 100 / total))
        .collect::<Vec<_>>()
        .join(", ");
    let best = scored[0].2;
    let unexpected = shapes
        .keys()
        .filter(|n| !fits(n, best) && !unused(n) && !SCHEDULE_MARKERS.contains(n))
        .take(5)
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>();
    Error::UnknownLayout {
        file: file.to_string(),
        nearest,
        unexpected: if unexpected.is_empty() {
            "(none)".into()
        } else {
            unexpected.join(", ")
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hostile file's header may give any tensor any shape: the inference reads axes that
    /// may not exist, and must say so rather than panic (a panic would trap a page's wasm).
    #[test]
    fn tensors_of_too_few_axes_are_errors_not_panics() {
        let names = [
            "model.diffusion_model.input_blocks.0.0.weight",
            "model.diffusion_model.input_blocks.1.0.out_layers.3.weight",
            "model.diffusion_model.input_blocks.1.1.proj_in.weight",
            "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight",
            "model.diffusion_model.out.2.weight",
            "model.diffusion_model.label_emb.0.0.weight",
            "first_stage_model.encoder.conv_in.weight",
            "first_stage_model.encoder.down.0.block.0.conv1.weight",
            "first_stage_model.decoder.conv_in.weight",
            "first_stage_model.decoder.conv_out.weight",
            "cond_stage_model.model.ln_final.weight",
            "cond_stage_model.model.token_embedding.weight",
            "conditioner.embedders.1.model.ln_final.weight",
            "conditioner.embedders.1.model.text_projection",
        ];
        for shape in [&[][..], &[0][..], &[3][..]] {
            for count in 1..=names.len() {
                let shapes: Vec<(&str, &[usize])> =
                    names[..count].iter().map(|n| (*n, shape)).collect();
                let result = inspect("hostile.safetensors", &shapes);
                assert!(result.is_err(), "{count} names of shape {shape:?} passed");
            }
        }
        // SD 3's inference reads the patch embedding's four axes, the position table's
        // second, T5's relative-position table's second.
        let sd3 = [
            "model.diffusion_model.joint_blocks.0.x_block.attn.qkv.weight",
            "model.diffusion_model.x_embedder.proj.weight",
            "model.diffusion_model.joint_blocks.0.x_block.attn.ln_q.weight",
            "model.diffusion_model.pos_embed",
            "model.diffusion_model.final_layer.linear.weight",
            "model.diffusion_model.context_embedder.weight",
            "model.diffusion_model.y_embedder.mlp.0.weight",
            "text_encoders.t5xxl.transformer.shared.weight",
        ];
        // FLUX's reads the input projections' two axes and a query norm's one (of 0: no
        // heads).
        let flux = [
            "double_blocks.0.img_attn.norm.query_norm.scale",
            "img_in.weight",
            "final_layer.linear.weight",
            "txt_in.weight",
            "vector_in.in_layer.weight",
        ];
        for shape in [&[][..], &[0][..], &[3][..]] {
            for count in 1..=flux.len() {
                let shapes: Vec<(&str, &[usize])> =
                    flux[..count].iter().map(|n| (*n, shape)).collect();
                let result = inspect("hostile.safetensors", &shapes);
                assert!(
                    result.is_err(),
                    "{count} FLUX names of shape {shape:?} passed"
                );
            }
        }
        for shape in [&[][..], &[0][..], &[3][..], &[0, 0][..]] {
            for count in 1..=sd3.len() {
                let shapes: Vec<(&str, &[usize])> =
                    sd3[..count].iter().map(|n| (*n, shape)).collect();
                let result = inspect("hostile.safetensors", &shapes);
                assert!(result.is_err(), "{count} names of shape {shape:?} passed");
            }
        }
    }
}
