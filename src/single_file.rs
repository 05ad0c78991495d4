//! Single-file checkpoints in the original key layout: the `*.safetensors` files most
//! people download for SD 1.x, 2.x, SDXL and SD 3.x, holding the UNet or SD 3's MMDiT
//! (`model.diffusion_model.*`), the VAE (`first_stage_model.*`) and the text encoders
//! (`cond_stage_model.*`, SDXL's `conditioner.embedders.*`, SD 3's `text_encoders.*`) under
//! the names of the code they were trained with, and no configs.
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
//! (tests/fixtures/single_file/).

use std::collections::{BTreeMap, HashMap};

use serde_json::{Value, json};

use crate::error::{Error, Result};
use crate::ldm::{UNetNames, index};
use crate::weights::{Regroup, Weights};

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
    /// The UNet, or SD 3's transformer.
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

impl Checkpoint {
    /// Splits `weights`, read from `file`, into components; fails (naming the nearest known
    /// layouts) where the names fit no layout, and for known kinds not run yet.
    pub fn split(file: &str, weights: Weights) -> Result<Self> {
        let (family, routes, configs) = {
            let shapes: Shapes = weights.shapes().into_iter().collect();
            let family = family(file, &shapes)?;
            let routes = routes(file, family, &shapes)?;
            let configs = Configs::infer(file, family, &shapes)?;
            (family, routes, configs)
        };
        let mut parts = weights
            .regroup(PARTS, |name| {
                routes.get(name).cloned().unwrap_or(Regroup::Drop)
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
    let shapes: Shapes = shapes.iter().copied().collect();
    let family = family(file, &shapes)?;
    routes(file, family, &shapes)?;
    Ok((family, Configs::infer(file, family, &shapes)?))
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
}

fn family(file: &str, shapes: &Shapes) -> Result<Family> {
    let has = |prefix: &str| shapes.keys().any(|n| n.starts_with(prefix));
    if has(MMDIT_BLOCKS) {
        return Ok(Family::Sd3);
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
        .filter(|n| !fits(n, best) && !unused(n))
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

/// Part indices of [`Weights::regroup`].
const DENOISER_PART: usize = 0;
const VAE_PART: usize = 1;
const TEXT_PART: usize = 2;
const TEXT_2_PART: usize = 3;
const TEXT_3_PART: usize = 4;
const PARTS: usize = 5;

/// Where every tensor of the file goes; fails on a name no rule explains.
fn routes(file: &str, family: Family, shapes: &Shapes) -> Result<HashMap<String, Regroup>> {
    let unet = unet_layout(shapes);
    let vae_blocks = count_indices(shapes, "first_stage_model.encoder.down.");
    let open_clip_layers = count_indices(shapes, "cond_stage_model.model.transformer.resblocks.");
    let mmdit_blocks = count_indices(shapes, MMDIT_BLOCKS);
    let mut routes = HashMap::new();
    let mut unexplained = Vec::new();
    for name in shapes.keys() {
        let route = if unused(name) {
            Some(Regroup::Drop)
        } else if let (Family::Sd3, Some(rest)) = (family, name.strip_prefix(UNET)) {
            mmdit_route(rest, mmdit_blocks)
        } else if let Some(rest) = name.strip_prefix(UNET) {
            unet.rename(rest).map(|n| moved(DENOISER_PART, n))
        } else if let Some(rest) = name.strip_prefix(VAE) {
            vae_name(rest, vae_blocks).map(|n| moved(VAE_PART, n))
        } else if let (Family::Sd1, Some(rest)) = (family, name.strip_prefix(CLIP)) {
            Some(moved(TEXT_PART, rest.to_string()))
        } else if let (Family::Sd2, Some(rest)) = (family, name.strip_prefix(OPEN_CLIP)) {
            // SD 2 runs the penultimate layer: the last one is never used.
            open_clip_name(rest, TEXT_PART, Some(open_clip_layers))
        } else if let (Family::Sdxl, Some(rest)) = (family, name.strip_prefix(CLIP_XL)) {
            Some(moved(TEXT_PART, rest.to_string()))
        } else if let Some(rest) = match family {
            Family::Sdxl => name.strip_prefix(OPEN_CLIP_XL),
            Family::SdxlRefiner => name.strip_prefix(OPEN_CLIP_REFINER),
            _ => None,
        } {
            // SDXL keeps every layer (its pipeline reads the penultimate one's output), and
            // the projection, which OpenCLIP applies as `x @ text_projection`.
            match rest {
                "text_projection" => Some(Regroup::Transpose {
                    part: TEXT_2_PART,
                    name: "text_projection.weight".into(),
                }),
                _ => open_clip_name(rest, TEXT_2_PART, None),
            }
        } else if let Family::Sd3 = family {
            [
                (SD3_CLIP_L, TEXT_PART),
                (SD3_CLIP_G, TEXT_2_PART),
                (SD3_T5, TEXT_3_PART),
            ]
            .iter()
            .find_map(|(prefix, part)| Some(moved(*part, name.strip_prefix(prefix)?.to_string())))
        } else {
            None
        };
        match route {
            Some(route) => {
                routes.insert(name.to_string(), route);
            }
            None => unexplained.push(*name),
        }
    }
    if let Some(first) = unexplained.first() {
        let label = match family {
            Family::Sd1 => "an SD 1.x",
            Family::Sd2 => "an SD 2.x",
            Family::Sdxl => "an SDXL",
            Family::SdxlRefiner => "an SDXL refiner",
            Family::Sd3 => "an SD 3",
        };
        return Err(Error::WeightFile {
            file: file.to_string(),
            message: format!(
                "{} tensor(s) fit no part of {label} checkpoint, first `{first}`",
                unexplained.len()
            ),
        });
    }
    Ok(routes)
}

fn moved(part: usize, name: String) -> Regroup {
    Regroup::Move { part, name }
}

/// Where an SD 3 transformer tensor (after `model.diffusion_model.`) goes in diffusers'
/// naming, in a transformer of `blocks` joint blocks. The original fuses each attention's
/// q/k/v into one `qkv` projection, and its final adaLN projections (the last block's
/// context side and the output layer's) yield shift before scale, where diffusers'
/// `AdaLayerNormContinuous` takes scale first.
fn mmdit_route(rest: &str, blocks: usize) -> Option<Regroup> {
    let at = |name: String| moved(DENOISER_PART, name);
    if rest == "pos_embed" {
        return Some(at("pos_embed.pos_embed".into()));
    }
    const TOP: &[(&str, &str)] = &[
        ("x_embedder.proj.", "pos_embed.proj."),
        (
            "t_embedder.mlp.0.",
            "time_text_embed.timestep_embedder.linear_1.",
        ),
        (
            "t_embedder.mlp.2.",
            "time_text_embed.timestep_embedder.linear_2.",
        ),
        (
            "y_embedder.mlp.0.",
            "time_text_embed.text_embedder.linear_1.",
        ),
        (
            "y_embedder.mlp.2.",
            "time_text_embed.text_embedder.linear_2.",
        ),
        ("context_embedder.", "context_embedder."),
        ("final_layer.linear.", "proj_out."),
    ];
    if let Some(t) = rest.strip_prefix("final_layer.adaLN_modulation.1.") {
        return Some(Regroup::SwapHalves {
            part: DENOISER_PART,
            name: format!("norm_out.linear.{t}"),
        });
    }
    if let Some(name) = renamed(rest, TOP) {
        return Some(at(name));
    }
    let (i, t) = index(rest.strip_prefix("joint_blocks.")?)?;
    let block = format!("transformer_blocks.{i}");
    const FUSED: &[(&str, [&str; 3])] = &[
        ("x_block.attn.qkv.", ["attn.to_q", "attn.to_k", "attn.to_v"]),
        (
            "context_block.attn.qkv.",
            ["attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj"],
        ),
        (
            "x_block.attn2.qkv.",
            ["attn2.to_q", "attn2.to_k", "attn2.to_v"],
        ),
    ];
    if let Some((kind, names)) = FUSED
        .iter()
        .find_map(|(fused, names)| t.strip_prefix(fused).map(|kind| (kind, names)))
    {
        return Some(Regroup::Split {
            part: DENOISER_PART,
            names: names
                .iter()
                .map(|n| format!("{block}.{n}.{kind}"))
                .collect(),
        });
    }
    if let Some(kind) = t.strip_prefix("context_block.adaLN_modulation.1.") {
        let name = format!("{block}.norm1_context.linear.{kind}");
        return Some(match i + 1 == blocks {
            true => Regroup::SwapHalves {
                part: DENOISER_PART,
                name,
            },
            false => at(name),
        });
    }
    const NAMES: &[(&str, &str)] = &[
        ("x_block.attn.ln_q.", "attn.norm_q."),
        ("x_block.attn.ln_k.", "attn.norm_k."),
        ("context_block.attn.ln_q.", "attn.norm_added_q."),
        ("context_block.attn.ln_k.", "attn.norm_added_k."),
        ("x_block.attn.proj.", "attn.to_out.0."),
        ("context_block.attn.proj.", "attn.to_add_out."),
        ("x_block.attn2.ln_q.", "attn2.norm_q."),
        ("x_block.attn2.ln_k.", "attn2.norm_k."),
        ("x_block.attn2.proj.", "attn2.to_out.0."),
        ("x_block.adaLN_modulation.1.", "norm1.linear."),
        ("x_block.mlp.fc1.", "ff.net.0.proj."),
        ("x_block.mlp.fc2.", "ff.net.2."),
        ("context_block.mlp.fc1.", "ff_context.net.0.proj."),
        ("context_block.mlp.fc2.", "ff_context.net.2."),
    ];
    Some(at(format!("{block}.{}", renamed(t, NAMES)?)))
}

/// `name` with the first prefix of `table` it starts with replaced by that prefix's new name.
fn renamed(name: &str, table: &[(&str, &str)]) -> Option<String> {
    table
        .iter()
        .find_map(|(old, new)| name.strip_prefix(old).map(|rest| format!("{new}{rest}")))
}

/// How many consecutive indices `0, 1, ...` follow `prefix` in the names.
fn count_indices(shapes: &Shapes, prefix: &str) -> usize {
    let indices: std::collections::BTreeSet<usize> = shapes
        .keys()
        .filter_map(|n| n.strip_prefix(prefix))
        .filter_map(|rest| rest.split('.').next()?.parse().ok())
        .collect();
    (0..).take_while(|i| indices.contains(i)).count()
}

/// The original UNet's numbering in a checkpoint of these shapes.
fn unet_layout(shapes: &Shapes) -> UNetNames {
    // The first downsampler sits right after the first block's layers.
    let first_down = shapes
        .keys()
        .filter_map(|n| n.strip_prefix("model.diffusion_model.input_blocks."))
        .filter(|rest| rest.contains(".0.op."))
        .filter_map(|rest| index(rest).map(|(i, _)| i))
        .min();
    let layers_per_block = match first_down {
        Some(i) => i.saturating_sub(1),
        // One block and no downsampler: every input block after conv_in is a layer.
        None => count_indices(shapes, "model.diffusion_model.input_blocks.").saturating_sub(1),
    };
    UNetNames {
        layers_per_block: layers_per_block.max(1),
    }
}

/// A VAE name (after `first_stage_model.`) in diffusers' naming; the decoder's up blocks
/// run in the opposite order.
fn vae_name(rest: &str, blocks: usize) -> Option<String> {
    let (side, r) = rest.split_once('.')?;
    if side != "encoder" && side != "decoder" {
        return ["quant_conv.", "post_quant_conv."]
            .iter()
            .any(|p| rest.starts_with(p))
            .then(|| rest.to_string());
    }
    let resnet = |t: &str| match t.strip_prefix("nin_shortcut.") {
        Some(p) => format!("conv_shortcut.{p}"),
        None => t.to_string(),
    };
    if let Some(t) = r.strip_prefix("mid.attn_1.") {
        const NAMES: &[(&str, &str)] = &[
            ("norm.", "group_norm."),
            ("q.", "to_q."),
            ("k.", "to_k."),
            ("v.", "to_v."),
            ("proj_out.", "to_out.0."),
        ];
        let inner = renamed(t, NAMES)?;
        return Some(format!("{side}.mid_block.attentions.0.{inner}"));
    }
    if let Some(t) = r.strip_prefix("mid.block_") {
        let (k, t) = index(t)?;
        return (k == 1 || k == 2)
            .then(|| format!("{side}.mid_block.resnets.{}.{}", k - 1, resnet(t)));
    }
    if let Some(t) = r.strip_prefix("norm_out.") {
        return Some(format!("{side}.conv_norm_out.{t}"));
    }
    if r.starts_with("conv_in.") || r.starts_with("conv_out.") {
        return Some(rest.to_string());
    }
    let (kind, t) = match side {
        "encoder" => ("down", r.strip_prefix("down.")?),
        _ => ("up", r.strip_prefix("up.")?),
    };
    let (i, t) = index(t)?;
    let block = if kind == "down" {
        i
    } else {
        blocks.checked_sub(i + 1)?
    };
    let at = format!("{side}.{kind}_blocks.{block}");
    if let Some(t) = t.strip_prefix("block.") {
        let (j, t) = index(t)?;
        return Some(format!("{at}.resnets.{j}.{}", resnet(t)));
    }
    let sampler = if kind == "down" {
        "downsample.conv."
    } else {
        "upsample.conv."
    };
    let t = t.strip_prefix(sampler)?;
    Some(format!("{at}.{kind}samplers.0.conv.{t}"))
}

/// An OpenCLIP text-tower name (after its prefix) in transformers' CLIP naming, into `part`.
/// The fused q/k/v projection splits into three; with `drop_last_of`, the last of that many
/// layers is dropped.
fn open_clip_name(rest: &str, part: usize, drop_last_of: Option<usize>) -> Option<Regroup> {
    let text = |n: String| Some(moved(part, format!("text_model.{n}")));
    match rest {
        "token_embedding.weight" => return text("embeddings.token_embedding.weight".into()),
        "positional_embedding" => return text("embeddings.position_embedding.weight".into()),
        _ => {}
    }
    if let Some(t) = rest.strip_prefix("ln_final.") {
        return text(format!("final_layer_norm.{t}"));
    }
    let (i, t) = index(rest.strip_prefix("transformer.resblocks.")?)?;
    if drop_last_of == Some(i + 1) {
        return Some(Regroup::Drop);
    }
    let at = format!("text_model.encoder.layers.{i}");
    if let Some(kind) = t.strip_prefix("attn.in_proj_") {
        return Some(Regroup::Split {
            part,
            names: ["q", "k", "v"]
                .iter()
                .map(|p| format!("{at}.self_attn.{p}_proj.{kind}"))
                .collect(),
        });
    }
    const NAMES: &[(&str, &str)] = &[
        ("ln_1.", "layer_norm1."),
        ("ln_2.", "layer_norm2."),
        ("attn.out_proj.", "self_attn.out_proj."),
        ("mlp.c_fc.", "mlp.fc1."),
        ("mlp.c_proj.", "mlp.fc2."),
    ];
    let inner = renamed(t, NAMES)?;
    Some(moved(part, format!("{at}.{inner}")))
}

/// Configs as diffusers writes them, inferred from a checkpoint's shapes and family.
pub struct Configs {
    /// The UNet's, or SD 3's transformer's.
    pub denoiser: Value,
    pub vae: Option<Value>,
    pub text_encoder: Option<Value>,
    pub text_encoder_2: Option<Value>,
    pub text_encoder_3: Option<Value>,
    pub scheduler: Value,
}

impl Configs {
    /// Infers every config from the names and shapes of an LDM checkpoint of `family`.
    fn infer(file: &str, family: Family, shapes: &Shapes) -> Result<Self> {
        let t = Table { file, shapes };
        Ok(Self {
            denoiser: match family {
                Family::Sd3 => mmdit_config(&t)?,
                _ => unet_config(family, &t)?,
            },
            vae: t
                .has("first_stage_model.decoder.conv_in.weight")
                .then(|| vae_config(family, &t))
                .transpose()?,
            text_encoder: text_config(family, &t)?,
            text_encoder_2: match family {
                Family::Sdxl => open_clip_config(OPEN_CLIP_XL, false, &t)?,
                Family::SdxlRefiner => open_clip_config(OPEN_CLIP_REFINER, false, &t)?,
                Family::Sd3 => clip_config(SD3_CLIP_G, "gelu", &t)?,
                Family::Sd1 | Family::Sd2 => None,
            },
            text_encoder_3: match family {
                Family::Sd3 => t5_config(SD3_T5, &t)?,
                _ => None,
            },
            scheduler: scheduler_config(family),
        })
    }
}

/// A checkpoint's shapes, for the config inference.
struct Table<'s, 'a> {
    file: &'s str,
    shapes: &'s Shapes<'a>,
}

impl<'a> Table<'_, 'a> {
    fn shape(&self, name: &str) -> Result<&'a [usize]> {
        self.shapes
            .get(name)
            .copied()
            .ok_or_else(|| Error::MissingTensor {
                file: self.file.to_string(),
                name: name.to_string(),
            })
    }

    fn has(&self, name: &str) -> bool {
        self.shapes.contains_key(name)
    }

    /// Axis `axis` of tensor `name`; a tensor of too few axes is a bad file, not a panic.
    fn dim(&self, name: &str, axis: usize) -> Result<usize> {
        let shape = self.shape(name)?;
        shape.get(axis).copied().ok_or_else(|| Error::WeightFile {
            file: self.file.to_string(),
            message: format!("tensor `{name}` has shape {shape:?}, too few axes"),
        })
    }
}

fn unet_config(family: Family, t: &Table) -> Result<Value> {
    let (shapes, shape, has) = (t.shapes, |n: &str| t.shape(n), |n: &str| t.has(n));
    let p = |n: String| format!("{UNET}{n}");
    let layers = unet_layout(shapes).layers_per_block;
    let per = layers + 1;
    let downsamplers = shapes
        .keys()
        .filter(|n| n.starts_with(&p("input_blocks.".into())) && n.ends_with(".0.op.weight"))
        .count();
    let blocks = downsamplers + 1;
    let mut channels = Vec::new();
    let mut down_types = Vec::new();
    let mut up_types = Vec::new();
    for b in 0..blocks {
        let first = 1 + b * per;
        channels.push(t.dim(&p(format!("input_blocks.{first}.0.out_layers.3.weight")), 0)?);
        down_types.push(
            if has(&p(format!("input_blocks.{first}.1.proj_in.weight"))) {
                "CrossAttnDownBlock2D"
            } else {
                "DownBlock2D"
            },
        );
        up_types.push(
            if has(&p(format!("output_blocks.{}.1.proj_in.weight", b * per))) {
                "CrossAttnUpBlock2D"
            } else {
                "UpBlock2D"
            },
        );
    }
    let attention_k = shapes
        .iter()
        .find(|(n, _)| n.starts_with(UNET) && n.ends_with("attn2.to_k.weight"));
    let cross_attention_dim = attention_k
        .and_then(|(_, s)| s.last().copied())
        .unwrap_or(768);
    let proj_in = shapes
        .iter()
        .find(|(n, _)| n.starts_with(UNET) && n.ends_with(".proj_in.weight"));
    let linear = proj_in.is_some_and(|(_, s)| s.len() == 2);
    // Transformer depth per level, from each level's first attention. A level without one
    // gets 1, as diffusers' configs write it, except the last: diffusers' mid block takes
    // the last level's depth, so there it is the mid block's (the refiner's last level has
    // no attention, its mid block four layers). One number where the levels that have
    // attention and the mid block agree (the refiner's published `4`).
    let depth_at = |prefix: String| count_indices(shapes, &format!("{prefix}.transformer_blocks."));
    let mid_depth = depth_at(p("middle_block.1".into()));
    let levels: Vec<usize> = (0..blocks)
        .map(|b| depth_at(p(format!("input_blocks.{}.1", 1 + b * per))))
        .collect();
    let depths: Vec<usize> = levels
        .iter()
        .enumerate()
        .map(|(b, &d)| match d {
            0 if b + 1 == blocks && mid_depth > 0 => mid_depth,
            0 => 1,
            d => d,
        })
        .collect();
    let mut attended = levels
        .iter()
        .copied()
        .filter(|&d| d > 0)
        .chain((mid_depth > 0).then_some(mid_depth));
    let first = attended.next().unwrap_or(1);
    let transformer_layers = match attended.all(|d| d == first) {
        true => json!(first),
        false => json!(depths),
    };
    let per_head_64 = json!(channels.iter().map(|c| (c / 64).max(1)).collect::<Vec<_>>());
    let (heads, sample_size): (Value, usize) = match family {
        // SD 1.x: 8 heads everywhere (diffusers' `attention_head_dim` holds the count).
        Family::Sd1 => (json!(8), 64),
        // SD 2.x and SDXL: 64 channels per head.
        Family::Sd2 => (per_head_64, 96),
        Family::Sdxl | Family::SdxlRefiner | Family::Sd3 => (per_head_64, 128),
    };
    let mut config = json!({
        "_class_name": "UNet2DConditionModel",
        "sample_size": sample_size,
        "in_channels": t.dim(&p("input_blocks.0.0.weight".into()), 1)?,
        "out_channels": t.dim(&p("out.2.weight".into()), 0)?,
        "down_block_types": down_types,
        "mid_block_type": if has(&p("middle_block.1.proj_in.weight".into())) {
            Value::from("UNetMidBlock2DCrossAttn")
        } else {
            Value::Null
        },
        "up_block_types": up_types,
        "block_out_channels": channels,
        "layers_per_block": layers,
        "cross_attention_dim": cross_attention_dim,
        "attention_head_dim": heads,
        "use_linear_projection": linear,
        "transformer_layers_per_block": transformer_layers,
        "flip_sin_to_cos": true,
        "freq_shift": 0,
        "norm_num_groups": 32,
    });
    // SDXL's size conditioning: its input is the pooled text (the OpenCLIP encoder's
    // projection width) and a sinusoid per time id: six (size, crop, target size), five in
    // the refiner (an aesthetic score in place of the target size).
    if let Ok(&[_, input]) = shape(&p("label_emb.0.0.weight".into())) {
        let (embedder, ids) = match family {
            Family::SdxlRefiner => (OPEN_CLIP_REFINER, 5),
            _ => (OPEN_CLIP_XL, 6),
        };
        let pooled = t
            .shapes
            .get(format!("{embedder}text_projection").as_str())
            .and_then(|s| s.last().copied())
            .unwrap_or(1280);
        config["addition_embed_type"] = json!("text_time");
        config["projection_class_embeddings_input_dim"] = json!(input);
        config["addition_time_embed_dim"] = json!(input.saturating_sub(pooled) / ids);
    }
    Ok(config)
}

fn vae_config(family: Family, t: &Table) -> Result<Value> {
    let shapes = t.shapes;
    let blocks = count_indices(shapes, "first_stage_model.encoder.down.");
    let layers = count_indices(shapes, "first_stage_model.encoder.down.0.block.");
    let channels = (0..blocks)
        .map(|i| {
            t.dim(
                &format!("first_stage_model.encoder.down.{i}.block.0.conv1.weight"),
                0,
            )
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(json!({
        "_class_name": "AutoencoderKL",
        "in_channels": t.dim("first_stage_model.encoder.conv_in.weight", 1)?,
        "out_channels": t.dim("first_stage_model.decoder.conv_out.weight", 0)?,
        "latent_channels": t.dim("first_stage_model.decoder.conv_in.weight", 1)?,
        "block_out_channels": channels,
        "down_block_types": vec!["DownEncoderBlock2D"; blocks],
        "up_block_types": vec!["UpDecoderBlock2D"; blocks],
        "layers_per_block": layers,
        "norm_num_groups": 32,
        "scaling_factor": match family {
            Family::Sdxl | Family::SdxlRefiner => 0.13025,
            Family::Sd3 => 1.5305,
            Family::Sd1 | Family::Sd2 => 0.18215,
        },
        "shift_factor": match family {
            Family::Sd3 => Some(0.0609),
            _ => None,
        },
        "use_quant_conv": shapes.contains_key("first_stage_model.quant_conv.weight"),
        "use_post_quant_conv": shapes.contains_key("first_stage_model.post_quant_conv.weight"),
    }))
}

fn text_config(family: Family, t: &Table) -> Result<Option<Value>> {
    match family {
        // CLIP ViT-L, in transformers' own names.
        Family::Sd1 => clip_config(CLIP, "quick_gelu", t),
        Family::Sdxl => clip_config(CLIP_XL, "quick_gelu", t),
        // The refiner's one encoder is SDXL's second.
        Family::SdxlRefiner => Ok(None),
        Family::Sd3 => clip_config(SD3_CLIP_L, "quick_gelu", t),
        // The penultimate layer's output is what SD 2 conditions on.
        Family::Sd2 => open_clip_config(OPEN_CLIP, true, t),
    }
}

/// A CLIP text encoder stored in transformers' names under `prefix` (ViT-L's activation is
/// `quick_gelu`, bigG's `gelu`: shapes do not tell), with its projection where the file has
/// one (SD 3's pooled outputs).
fn clip_config(prefix: &str, act: &str, t: &Table) -> Result<Option<Value>> {
    let tm = format!("{prefix}text_model.");
    if !t.has(&format!("{tm}final_layer_norm.weight")) {
        return Ok(None);
    }
    let mut config = text_config_json(
        t,
        &format!("{tm}embeddings.token_embedding.weight"),
        t.dim(&format!("{tm}encoder.layers.0.mlp.fc1.weight"), 0)?,
        count_indices(t.shapes, &format!("{tm}encoder.layers.")),
        t.dim(&format!("{tm}embeddings.position_embedding.weight"), 0)?,
        act,
    )?;
    let projection = format!("{prefix}text_projection.weight");
    if t.has(&projection) {
        config["architectures"] = json!(["CLIPTextModelWithProjection"]);
        config["projection_dim"] = json!(t.dim(&projection, 0)?);
    }
    Ok(Some(config))
}

/// SD 3's T5 encoder, stored in transformers' names under `prefix`: the head count from the
/// relative-position table ([buckets, heads]), the feed-forward's form from its gate.
fn t5_config(prefix: &str, t: &Table) -> Result<Option<Value>> {
    let shared = format!("{prefix}shared.weight");
    if !t.has(&shared) {
        return Ok(None);
    }
    let layer = |n: &str| format!("{prefix}encoder.block.0.layer.{n}");
    let bias = layer("0.SelfAttention.relative_attention_bias.weight");
    let heads = t.dim(&bias, 1)?;
    let inner = t.dim(&layer("0.SelfAttention.q.weight"), 0)?;
    if heads == 0 || inner % heads != 0 {
        return Err(Error::WeightFile {
            file: t.file.to_string(),
            message: format!("T5's attention width {inner} does not split into {heads} heads"),
        });
    }
    let gated = t.has(&layer("1.DenseReluDense.wi_0.weight"));
    let d_ff = match gated {
        true => t.dim(&layer("1.DenseReluDense.wi_0.weight"), 0)?,
        false => t.dim(&layer("1.DenseReluDense.wi.weight"), 0)?,
    };
    Ok(Some(json!({
        "architectures": ["T5EncoderModel"],
        "vocab_size": t.dim(&shared, 0)?,
        "d_model": t.dim(&shared, 1)?,
        "d_kv": inner / heads,
        "d_ff": d_ff,
        "num_layers": count_indices(t.shapes, &format!("{prefix}encoder.block.")),
        "num_heads": heads,
        "relative_attention_num_buckets": t.dim(&bias, 0)?,
        "feed_forward_proj": if gated { "gated-gelu" } else { "relu" },
    })))
}

/// SD 3's transformer config from its shapes: widths from the patch embedding and the
/// context and pooled projections, the head width from the QK-norm's weight (64 where the
/// model has none, as every SD 3 has), the dual-attention blocks from their `attn2`.
fn mmdit_config(t: &Table) -> Result<Value> {
    let p = |n: &str| format!("{UNET}{n}");
    let bad = |message: String| Error::WeightFile {
        file: t.file.to_string(),
        message,
    };
    let proj = p("x_embedder.proj.weight");
    let hidden = t.dim(&proj, 0)?;
    let patch = t.dim(&proj, 2)?;
    let blocks = count_indices(t.shapes, MMDIT_BLOCKS);
    let ln_q = p("joint_blocks.0.x_block.attn.ln_q.weight");
    let head_dim = match t.has(&ln_q) {
        true => t.dim(&ln_q, 0)?,
        false => 64,
    };
    if head_dim == 0 || hidden % head_dim != 0 {
        return Err(bad(format!(
            "width {hidden} does not split into heads of {head_dim}"
        )));
    }
    let positions = t.dim(&p("pos_embed"), 1)?;
    let side = (positions as f64).sqrt().round() as usize;
    if side * side != positions {
        return Err(bad(format!(
            "pos_embed holds {positions} positions, not a square grid"
        )));
    }
    let out = t.dim(&p("final_layer.linear.weight"), 0)?;
    let dual: Vec<usize> = (0..blocks)
        .filter(|i| t.has(&format!("{MMDIT_BLOCKS}{i}.x_block.attn2.qkv.weight")))
        .collect();
    // SD 3.5's QK-norms are RMS norms (a weight, no bias); anything else is named and
    // refused by the model's config check.
    let qk_norm = match (
        t.has(&ln_q),
        t.has(&p("joint_blocks.0.x_block.attn.ln_q.bias")),
    ) {
        (false, _) => Value::Null,
        (true, false) => json!("rms_norm"),
        (true, true) => json!("layer_norm"),
    };
    Ok(json!({
        "_class_name": "SD3Transformer2DModel",
        "sample_size": 128,
        "patch_size": patch,
        "in_channels": t.dim(&proj, 1)?,
        "num_layers": blocks,
        "attention_head_dim": head_dim,
        "num_attention_heads": hidden / head_dim,
        "joint_attention_dim": t.dim(&p("context_embedder.weight"), 1)?,
        "caption_projection_dim": t.dim(&p("context_embedder.weight"), 0)?,
        "pooled_projection_dim": t.dim(&p("y_embedder.mlp.0.weight"), 1)?,
        "out_channels": out / (patch * patch).max(1),
        "pos_embed_max_size": side,
        "dual_attention_layers": dual,
        "qk_norm": qk_norm,
    }))
}

/// An OpenCLIP text tower's config as transformers' CLIP: SD 2's without its last layer
/// (`drop_last`), SDXL's whole and with its projection.
fn open_clip_config(prefix: &str, drop_last: bool, t: &Table) -> Result<Option<Value>> {
    if !t.has(&format!("{prefix}ln_final.weight")) {
        return Ok(None);
    }
    let layers = count_indices(t.shapes, &format!("{prefix}transformer.resblocks."));
    let mut config = text_config_json(
        t,
        &format!("{prefix}token_embedding.weight"),
        t.dim(
            &format!("{prefix}transformer.resblocks.0.mlp.c_fc.weight"),
            0,
        )?,
        layers.saturating_sub(usize::from(drop_last)),
        t.dim(&format!("{prefix}positional_embedding"), 0)?,
        "gelu",
    )?;
    if !drop_last && let Ok(&[_, width]) = t.shape(&format!("{prefix}text_projection")) {
        config["architectures"] = json!(["CLIPTextModelWithProjection"]);
        config["projection_dim"] = json!(width);
    }
    Ok(Some(config))
}

/// A text encoder's config as transformers writes it; the vocabulary and width come from the
/// token table `embedding`. CLIP ViT-L, OpenCLIP ViT-H and bigG all use 64-channel heads.
fn text_config_json(
    t: &Table,
    embedding: &str,
    intermediate: usize,
    layers: usize,
    positions: usize,
    act: &str,
) -> Result<Value> {
    let [vocab, hidden] = t.shape(embedding)?[..] else {
        return Err(Error::InvalidInput(format!(
            "`{embedding}` is not a [rows, width] table"
        )));
    };
    Ok(json!({
        "architectures": ["CLIPTextModel"],
        "vocab_size": vocab,
        "hidden_size": hidden,
        "intermediate_size": intermediate,
        "num_hidden_layers": layers,
        "num_attention_heads": (hidden / 64).max(1),
        "max_position_embeddings": positions,
        "hidden_act": act,
        "layer_norm_eps": 1e-5,
    }))
}

/// The noise schedule SD 1.x, 2.x and SDXL were trained with: as DDIM for SD (what
/// diffusers' SD 2.1 repository ships; SD 1.5's PNDM shares its betas), as Euler for SDXL
/// (what its base repository ships); SD 3's flow matching with the shift of 3 that every SD
/// 3 and 3.5 repository ships.
fn scheduler_config(family: Family) -> Value {
    if family == Family::Sd3 {
        return json!({
            "_class_name": "FlowMatchEulerDiscreteScheduler",
            "num_train_timesteps": 1000,
            "shift": 3.0,
        });
    }
    let mut config = json!({
        "_class_name": "DDIMScheduler",
        "num_train_timesteps": 1000,
        "beta_start": 0.00085,
        "beta_end": 0.012,
        "beta_schedule": "scaled_linear",
        "steps_offset": 1,
        "timestep_spacing": "leading",
        "prediction_type": "epsilon",
    });
    if family == Family::Sd2 {
        config["prediction_type"] = json!("v_prediction");
    }
    if matches!(family, Family::Sdxl | Family::SdxlRefiner) {
        config["_class_name"] = json!("EulerDiscreteScheduler");
        config["interpolation_type"] = json!("linear");
    } else {
        // DDIM's own defaults (true) are not what SD trained with.
        config["clip_sample"] = json!(false);
        config["set_alpha_to_one"] = json!(false);
    }
    config
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
