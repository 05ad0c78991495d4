//! Each component's config inferred from the tensors' shapes where shapes tell, and from the
//! family where they do not.

use serde_json::{Value, json};

use crate::error::{Error, Result};
use crate::ldm::count_indices;

use super::names::unet_layout;
use super::{
    CLIP, CLIP_XL, Family, MMDIT_BLOCKS, OPEN_CLIP, OPEN_CLIP_REFINER, OPEN_CLIP_XL, SD3_CLIP_G,
    SD3_CLIP_L, SD3_T5, Shapes, UNET,
};

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
    pub(super) fn infer(file: &str, family: Family, shapes: &Shapes) -> Result<Self> {
        let t = Table { file, shapes };
        Ok(Self {
            denoiser: match family {
                Family::Sd3 => mmdit_config(&t)?,
                Family::Flux => flux_config(&t)?,
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
                Family::Sd1 | Family::Sd2 | Family::Flux => None,
            },
            text_encoder_3: match family {
                Family::Sd3 | Family::Flux => t5_config(SD3_T5, &t)?,
                _ => None,
            },
            scheduler: marked_schedule(family, scheduler_config(family), &t),
        })
    }
}

/// The schedule markers some fine-tunes carry as empty tensors (NoobAI-XL's v-prediction
/// files, among others; ComfyUI reads them, diffusers' single-file loader does not): `v_pred`
/// for v-prediction, `ztsnr` for a schedule rescaled to zero terminal SNR, which is sampled
/// with trailing spacing so that the first step starts from the pure noise it was trained to
/// denoise (Lin et al. 2023; our choice where ComfyUI's samplers space sigmas themselves). A
/// scheduler config beside the file still wins.
fn marked_schedule(family: Family, mut config: Value, t: &Table) -> Value {
    // Flow-matching models have no betas to mark.
    if matches!(family, Family::Sd3 | Family::Flux) {
        return config;
    }
    let [v_pred, ztsnr] = super::SCHEDULE_MARKERS;
    if t.has(v_pred) {
        config["prediction_type"] = json!("v_prediction");
    }
    if t.has(ztsnr) {
        config["rescale_betas_zero_snr"] = json!(true);
        config["timestep_spacing"] = json!("trailing");
    }
    config
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
    let p = |n: String| format!("{UNET}{n}");
    let mut config = down_half_config(family, t)?;
    let per = unet_layout(t.shapes).layers_per_block + 1;
    let blocks = config["block_out_channels"].as_array().map_or(0, Vec::len);
    let up_types: Vec<&str> = (0..blocks)
        .map(|b| {
            if t.has(&p(format!("output_blocks.{}.1.proj_in.weight", b * per))) {
                "CrossAttnUpBlock2D"
            } else {
                "UpBlock2D"
            }
        })
        .collect();
    config["_class_name"] = json!("UNet2DConditionModel");
    config["up_block_types"] = json!(up_types);
    config["out_channels"] = json!(t.dim(&p("out.2.weight".into()), 0)?);
    Ok(config)
}

/// A ControlNet's config from an original ControlNet file's shapes: its trunk's under
/// `model.diffusion_model.` (the UNet's down half, as a UNet checkpoint names it) and its
/// conditioning embedding's under `input_hint_block.` (a sequential whose convolutions sit
/// at even indices: the first, then a same-width and a halving one per level, then the
/// last, zero-initialised, to the UNet's width).
pub(super) fn controlnet_config(file: &str, family: Family, shapes: &Shapes) -> Result<Value> {
    let t = Table { file, shapes };
    let mut config = down_half_config(family, &t)?;
    let hint = |k: usize| format!("input_hint_block.{k}.weight");
    let convolutions = count_even_indices(shapes, "input_hint_block.");
    // conv_in, two per level after the first, conv_out.
    if convolutions < 2 || !convolutions.is_multiple_of(2) {
        return Err(Error::WeightFile {
            file: file.to_string(),
            message: format!(
                "`input_hint_block` holds {convolutions} convolutions; a ControlNet's holds an even number, at least 2"
            ),
        });
    }
    let levels = convolutions / 2;
    let widths = std::iter::once(t.dim(&hint(0), 0))
        .chain((1..levels).map(|k| t.dim(&hint(4 * k), 0)))
        .collect::<Result<Vec<_>>>()?;
    // A ControlNet's config has no sample size: it runs at the UNet's.
    if let Some(fields) = config.as_object_mut() {
        fields.remove("sample_size");
    }
    config["_class_name"] = json!("ControlNetModel");
    config["conditioning_channels"] = json!(t.dim(&hint(0), 1)?);
    config["conditioning_embedding_out_channels"] = json!(widths);
    Ok(config)
}

/// How many convolutions a sequential of convolutions and activations holds under `prefix`:
/// its even indices 0, 2, 4, ... as long as each is there.
fn count_even_indices(shapes: &Shapes, prefix: &str) -> usize {
    (0..)
        .take_while(|k| shapes.contains_key(format!("{prefix}{}.weight", 2 * k).as_str()))
        .count()
}

/// What a UNet's down half (its time embedding, input convolution, down blocks and mid
/// block, all a ControlNet has of it) tells of its config.
fn down_half_config(family: Family, t: &Table) -> Result<Value> {
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
    let depth_at = |prefix: String| {
        count_indices(
            shapes.keys().copied(),
            &format!("{prefix}.transformer_blocks."),
        )
    };
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
        Family::Sdxl | Family::SdxlRefiner | Family::Sd3 | Family::Flux => (per_head_64, 128),
    };
    let mut config = json!({
        "sample_size": sample_size,
        "in_channels": t.dim(&p("input_blocks.0.0.weight".into()), 1)?,
        "down_block_types": down_types,
        "mid_block_type": if has(&p("middle_block.1.proj_in.weight".into())) {
            Value::from("UNetMidBlock2DCrossAttn")
        } else {
            Value::Null
        },
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
    let blocks = count_indices(shapes.keys().copied(), "first_stage_model.encoder.down.");
    let layers = count_indices(
        shapes.keys().copied(),
        "first_stage_model.encoder.down.0.block.",
    );
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
            Family::Flux => 0.3611,
            Family::Sd1 | Family::Sd2 => 0.18215,
        },
        "shift_factor": match family {
            Family::Sd3 => Some(0.0609),
            Family::Flux => Some(0.1159),
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
        // ComfyUI's FLUX files hold CLIP-L (without projection) as SD 3's do.
        Family::Flux => clip_config(SD3_CLIP_L, "quick_gelu", t),
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
        count_indices(t.shapes.keys().copied(), &format!("{tm}encoder.layers.")),
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
        "num_layers": count_indices(t.shapes.keys().copied(), &format!("{prefix}encoder.block.")),
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
    let blocks = count_indices(t.shapes.keys().copied(), MMDIT_BLOCKS);
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

/// FLUX's transformer's config: blocks counted, widths read from the input projections,
/// the head width from a query norm's scale, the guidance embedding where the file has one.
/// The rotary axes are not in any shape: FLUX.1's 16, 56 and 56 of its 128 channels; for
/// another head width the two spatial axes take 7/16 of it each (rounded down to even), the
/// first the rest (a config in the source wins).
fn flux_config(t: &Table) -> Result<Value> {
    let prefix = match t.has(&format!("{UNET}img_in.weight")) {
        true => UNET,
        false => "",
    };
    let p = |n: &str| format!("{prefix}{n}");
    let count = |blocks: &str| count_indices(t.shapes.keys().copied(), &p(blocks));
    let dim = t.dim(&p("img_in.weight"), 0)?;
    let head_dim = t.dim(&p("double_blocks.0.img_attn.norm.query_norm.scale"), 0)?;
    if head_dim == 0 || dim % head_dim != 0 || head_dim % 2 != 0 {
        return Err(Error::WeightFile {
            file: t.file.to_string(),
            message: format!(
                "a FLUX transformer {dim} wide with heads of {head_dim} channels: not whole heads of an even width"
            ),
        });
    }
    let space_axis = (head_dim * 7 / 16) & !1;
    let time_axis = head_dim - 2 * space_axis;
    let (in_channels, out_channels) = (
        t.dim(&p("img_in.weight"), 1)?,
        t.dim(&p("final_layer.linear.weight"), 0)?,
    );
    Ok(json!({
        "_class_name": crate::models::flux::CLASS_NAME,
        "patch_size": 1,
        "in_channels": in_channels,
        // As diffusers writes it: none where it is the input's.
        "out_channels": (out_channels != in_channels).then_some(out_channels),
        "num_layers": count("double_blocks."),
        "num_single_layers": count("single_blocks."),
        "attention_head_dim": head_dim,
        "num_attention_heads": dim / head_dim,
        "joint_attention_dim": t.dim(&p("txt_in.weight"), 1)?,
        "pooled_projection_dim": t.dim(&p("vector_in.in_layer.weight"), 1)?,
        "guidance_embeds": t.has(&p("guidance_in.in_layer.weight")),
        "axes_dims_rope": [time_axis, space_axis, space_axis],
    }))
}

/// An OpenCLIP text tower's config as transformers' CLIP: SD 2's without its last layer
/// (`drop_last`), SDXL's whole and with its projection.
fn open_clip_config(prefix: &str, drop_last: bool, t: &Table) -> Result<Option<Value>> {
    if !t.has(&format!("{prefix}ln_final.weight")) {
        return Ok(None);
    }
    let layers = count_indices(
        t.shapes.keys().copied(),
        &format!("{prefix}transformer.resblocks."),
    );
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
/// 3 and 3.5 repository ships; FLUX's with its dynamic shift.
fn scheduler_config(family: Family) -> Value {
    if family == Family::Sd3 {
        return json!({
            "_class_name": "FlowMatchEulerDiscreteScheduler",
            "num_train_timesteps": 1000,
            "shift": 3.0,
        });
    }
    if family == Family::Flux {
        // What FLUX.1-dev's and schnell's repositories ship (schnell's without dynamic
        // shifting; its scheduler config in the source wins).
        return json!({
            "_class_name": "FlowMatchEulerDiscreteScheduler",
            "num_train_timesteps": 1000,
            "shift": 3.0,
            "use_dynamic_shifting": true,
            "base_shift": 0.5,
            "max_shift": 1.15,
            "base_image_seq_len": 256,
            "max_image_seq_len": 4096,
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
