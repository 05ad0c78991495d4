//! LoRA adapters, merged into a model's weights as they load.
//!
//! A LoRA file holds, for some of a model's linear and convolution layers, a low-rank update
//! `up · down` (rank `r`) and optionally an `alpha`; the layer's weight becomes
//! `W + scale · alpha / r · up · down`. Two naming families are read, both as people
//! download them:
//!
//! - kohya (sd-scripts, most files on model hubs): `lora_unet_<module>` and
//!   `lora_te_<module>` (SDXL: `lora_te1_`, `lora_te2_` for its two text encoders) with the
//!   diffusers module path's dots written as underscores (SDXL's UNet modules: the original
//!   UNet's path, `input_blocks_4_1_...`, see `crate::ldm`; SD 3's transformer modules: the
//!   original MMDiT's, `joint_blocks_0_x_block_attn_qkv`, see `crate::sd3_names`, whose
//!   fused q/k/v update is cut into three), and `.lora_down.weight`, `.lora_up.weight`,
//!   `.alpha`;
//! - diffusers / PEFT: `unet.<module>`, `transformer.<module>` (SD 3's MMDiT),
//!   `text_encoder.<module>` and `text_encoder_2.<module>`
//!   with `.lora_A.weight` and `.lora_B.weight` (PEFT), or `.lora.down.weight` and
//!   `.lora.up.weight` (older diffusers); `alpha` is the rank unless the file gives
//!   `<module>.alpha`.
//!
//! - Black Forest Labs' own (FLUX.1 Canny's and Depth's control LoRAs,
//!   `flux1-canny-dev-lora.safetensors`): the original FLUX transformer's dotted module paths
//!   with no prefix (`double_blocks.0.img_attn.qkv.lora_A.weight`), read through
//!   `crate::flux_names` as kohya's FLUX names are.
//!
//! Beside the low-rank halves a file may hold a bias update (`.lora_B.bias`, PEFT's LoRA with
//! a bias, scaled as the update is) and whole tensors that replace the model's: the RMS norms'
//! scales of the query and key (BFL's `.scale`, diffusers' `norm_q`, `norm_k`, `norm_added_q`,
//! `norm_added_k` `.weight`), which diffusers loads as they are, at any scale. A LoRA whose
//! update of the FLUX transformer's input layer (`x_embedder`, BFL's `img_in`) reads twice the
//! inputs the model has widens that layer, the new inputs' weights zero before the update, as
//! diffusers does: that is how a control LoRA turns FLUX.1-dev into FLUX.1 Canny or Depth,
//! which then take a control image ([`Lora::flux_input_width`]).
//!
//! Convolution LoRA (`down` of shape `[r, in, kh, kw]`, `up` of `[out, r, 1, 1]`) merges the
//! same way. The merge runs on the device, one layer at a time, when the model asks for that
//! layer's weight; a LoRA module that matches no layer of the model, or that the model never
//! asks for, is an error naming it, never silently dropped. Changing a scale builds the adapted
//! components again from their weights, kept on the device
//! (`StableDiffusion::set_lora_scales`): no file is read again.

use std::collections::{BTreeMap, HashMap, HashSet};

use burn::tensor::{Device, Tensor, TensorData};
use safetensors::SafeTensors;

use crate::error::{Error, Result};
use crate::ldm::count_indices;

/// Which part of the model a LoRA module adapts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LoraTarget {
    Unet,
    /// SD 3's and FLUX's transformer.
    Transformer,
    TextEncoder,
    /// The second text encoder: SDXL's and SD 3's CLIP-G, FLUX's T5.
    TextEncoder2,
    /// SD 3's third, its T5.
    TextEncoder3,
}

impl LoraTarget {
    /// Every part a LoRA may adapt.
    pub const ALL: [LoraTarget; 5] = [
        LoraTarget::Unet,
        LoraTarget::Transformer,
        LoraTarget::TextEncoder,
        LoraTarget::TextEncoder2,
        LoraTarget::TextEncoder3,
    ];

    pub fn name(self) -> &'static str {
        match self {
            LoraTarget::Unet => "unet",
            LoraTarget::Transformer => "transformer",
            LoraTarget::TextEncoder => "text_encoder",
            LoraTarget::TextEncoder2 => "text_encoder_2",
            LoraTarget::TextEncoder3 => "text_encoder_3",
        }
    }
}

/// How a module's name is written in the file.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum ModuleName {
    /// kohya: the module path with `_` for `.` (ambiguous until matched to a real module).
    Flat(String),
    /// diffusers / PEFT: the dotted module path.
    Dotted(String),
    /// Black Forest Labs': the original FLUX transformer's dotted module path.
    Original(String),
}

impl ModuleName {
    fn written(&self) -> &str {
        match self {
            Self::Flat(n) | Self::Dotted(n) | Self::Original(n) => n,
        }
    }
}

/// A tensor's values, flat, and its shape.
type Values = (Vec<f32>, Vec<usize>);

/// One adapted layer.
#[derive(Debug, Clone)]
struct Module {
    /// `[r, in, (kh, kw)]`.
    down: Values,
    /// `[out, r, (1, 1)]`.
    up: Values,
    /// `[out]`: the update of the layer's bias (PEFT's `lora_B.bias`), scaled as `up · down`.
    bias: Option<Values>,
    alpha: Option<f32>,
}

/// A parsed LoRA file.
#[derive(Debug, Clone)]
pub struct Lora {
    /// What errors name: the file.
    source: String,
    modules: BTreeMap<(LoraTarget, ModuleName), Module>,
    /// Tensors that replace the model's whole (RMS norms' scales), by the norm's module.
    whole: BTreeMap<(LoraTarget, ModuleName), Values>,
}

/// A LoRA with the scale it is merged at.
#[derive(Debug, Clone)]
pub struct ScaledLora {
    pub lora: Lora,
    pub scale: f32,
}

fn bad(source: &str, message: impl std::fmt::Display) -> Error {
    Error::InvalidInput(format!("LoRA {source}: {message}"))
}

/// A tensor's values as f32 (F32, F16 and BF16 files); `what` names the file's kind in errors.
fn values(
    what: &str,
    source: &str,
    key: &str,
    t: &safetensors::tensor::TensorView,
) -> Result<Vec<f32>> {
    super::stream::decode_all(t.dtype(), t.data()).ok_or_else(|| {
        Error::InvalidInput(format!(
            "{what} {source}: `{key}` is {:?}; f32, f16, bf16 or fp8 expected",
            t.dtype()
        ))
    })
}

impl Lora {
    /// Parses a LoRA safetensors file. Fails on a truncated or malformed file, a key of no
    /// naming family, a module without both halves, halves whose ranks differ, or a bias
    /// update not as long as the update's rows.
    pub fn from_safetensors(source: &str, bytes: &[u8]) -> Result<Self> {
        let file = SafeTensors::deserialize(bytes).map_err(|e| Error::WeightFile {
            file: source.to_string(),
            message: e.to_string(),
        })?;
        #[derive(Default)]
        struct Halves {
            down: Option<Values>,
            up: Option<Values>,
            bias: Option<Values>,
            alpha: Option<f32>,
        }
        let mut whole = BTreeMap::new();
        let mut halves: BTreeMap<(LoraTarget, ModuleName), Halves> = BTreeMap::new();
        let mut names: Vec<String> = file.names().into_iter().map(str::to_string).collect();
        names.sort();
        for key in &names {
            let Some((target, module, part)) = parse_key(key) else {
                return Err(bad(
                    source,
                    format!(
                        "`{key}` is not a LoRA tensor name this runtime reads (kohya `lora_unet_*`/`lora_te_*`/`lora_te1_*`/`lora_te2_*` with .lora_down/.lora_up/.alpha, diffusers/PEFT `unet.*`/`transformer.*`/`text_encoder.*`/`text_encoder_2.*` with .lora_A/.lora_B, or BFL's FLUX `double_blocks.*`/`single_blocks.*`/`img_in`/... with .lora_A/.lora_B)"
                    ),
                ));
            };
            let t = file.tensor(key).map_err(|e| bad(source, e))?;
            let v = values("LoRA", source, key, &t)?;
            let tensor = (v, t.shape().to_vec());
            if let Part::Whole = part {
                whole.insert((target, module), tensor);
                continue;
            }
            let entry = halves.entry((target, module)).or_default();
            match part {
                Part::Down => entry.down = Some(tensor),
                Part::Up => entry.up = Some(tensor),
                Part::UpBias => entry.bias = Some(tensor),
                Part::Alpha => {
                    entry.alpha = Some(
                        *tensor
                            .0
                            .first()
                            .ok_or_else(|| bad(source, format!("`{key}` is empty")))?,
                    )
                }
                // Kept whole above.
                Part::Whole => {}
            }
        }
        let mut modules = BTreeMap::new();
        for ((target, name), h) in halves {
            let label = format!("{}:{}", target.name(), name.written());
            let (Some(down), Some(up)) = (h.down, h.up) else {
                return Err(bad(
                    source,
                    format!("module {label} lacks its down or up half"),
                ));
            };
            let (rd, ru) = (down.1.first().copied(), up.1.get(1).copied());
            let shapes_ok = down.1.len() >= 2
                && up.1.len() == down.1.len()
                && up.1[2..].iter().all(|&d| d == 1)
                && rd == ru
                && rd.is_some_and(|r| r > 0);
            if !shapes_ok {
                return Err(bad(
                    source,
                    format!(
                        "module {label}: the ranks of down {:?} and up {:?} disagree (or are 0)",
                        down.1, up.1
                    ),
                ));
            }
            // An update of no rows or no columns adapts no layer (and has no rows to cut into
            // a fused projection's parts).
            if up.1[0] == 0 || down.1[1..].contains(&0) {
                return Err(bad(
                    source,
                    format!(
                        "module {label}: the update is empty (down {:?}, up {:?})",
                        down.1, up.1
                    ),
                ));
            }
            if h.alpha.is_some_and(|a| !a.is_finite()) {
                return Err(bad(
                    source,
                    format!("module {label}: alpha is not a finite number"),
                ));
            }
            if let Some(bias) = &h.bias
                && bias.1 != [up.1[0]]
            {
                return Err(bad(
                    source,
                    format!(
                        "module {label}: the bias update {:?} is not as long as the update's {} rows",
                        bias.1, up.1[0]
                    ),
                ));
            }
            modules.insert(
                (target, name),
                Module {
                    down,
                    up,
                    bias: h.bias,
                    alpha: h.alpha,
                },
            );
        }
        if let Some(((target, name), _)) = whole.iter().find(|(_, (v, _))| v.is_empty()) {
            return Err(bad(
                source,
                format!("{}:{} is empty", target.name(), name.written()),
            ));
        }
        if modules.is_empty() {
            return Err(bad(source, "the file holds no LoRA module"));
        }
        Ok(Self {
            source: source.to_string(),
            modules,
            whole,
        })
    }

    /// The file this LoRA came from.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Whether it adapts anything of `target`.
    pub fn adapts(&self, target: LoraTarget) -> bool {
        self.modules
            .keys()
            .chain(self.whole.keys())
            .any(|(t, _)| *t == target)
    }

    /// How many inputs its update of a FLUX transformer's input layer (`x_embedder`, the
    /// original's `img_in`) reads, where it has one: twice the model's widens the model (a
    /// control LoRA's, 2 x 64 for FLUX.1's VAE: the latents and the control image's latents,
    /// packed).
    pub fn flux_input_width(&self) -> Option<usize> {
        self.modules.iter().find_map(|((target, name), module)| {
            let input = match name {
                ModuleName::Dotted(n) => n == "x_embedder",
                ModuleName::Flat(n) | ModuleName::Original(n) => n == "img_in",
            };
            (*target == LoraTarget::Transformer && input).then(|| module.down.1[1])
        })
    }
}

#[derive(Clone, Copy)]
enum Part {
    Down,
    Up,
    /// The update of the layer's bias.
    UpBias,
    Alpha,
    /// A tensor that replaces the model's whole.
    Whole,
}

/// The names LoRA files give their tensors: a prefix naming the component, then the module,
/// then a suffix naming the part. kohya writes the module flattened, diffusers/PEFT dotted
/// (BFL's names, which have no prefix, are read by [`parse_original`]). Suffixes and the part
/// each names.
type Parts = &'static [(&'static str, Part)];

const NAMING: &[(&str, LoraTarget, bool, Parts)] = {
    const KOHYA: &[(&str, Part)] = &[
        (".lora_down.weight", Part::Down),
        (".lora_up.weight", Part::Up),
        (".alpha", Part::Alpha),
    ];
    const PEFT: &[(&str, Part)] = &[
        (".lora_A.weight", Part::Down),
        (".lora_B.weight", Part::Up),
        (".lora_B.bias", Part::UpBias),
        (".lora.down.weight", Part::Down),
        (".lora.up.weight", Part::Up),
        (".alpha", Part::Alpha),
    ];
    &[
        ("lora_unet_", LoraTarget::Unet, true, KOHYA),
        ("lora_te_", LoraTarget::TextEncoder, true, KOHYA),
        ("lora_te1_", LoraTarget::TextEncoder, true, KOHYA),
        ("lora_te2_", LoraTarget::TextEncoder2, true, KOHYA),
        ("lora_te3_", LoraTarget::TextEncoder3, true, KOHYA),
        ("unet.", LoraTarget::Unet, false, PEFT),
        ("transformer.", LoraTarget::Transformer, false, PEFT),
        ("text_encoder.", LoraTarget::TextEncoder, false, PEFT),
        ("text_encoder_2.", LoraTarget::TextEncoder2, false, PEFT),
        ("text_encoder_3.", LoraTarget::TextEncoder3, false, PEFT),
    ]
};

/// The attention's RMS norms, in diffusers' names, whose scales a FLUX control LoRA replaces.
const WHOLE_NORMS: &[&str] = &["norm_q", "norm_k", "norm_added_q", "norm_added_k"];

/// A LoRA tensor's target, module and part, by its name.
fn parse_key(key: &str) -> Option<(LoraTarget, ModuleName, Part)> {
    let Some((rest, target, flat, parts)) = NAMING.iter().find_map(|(prefix, t, flat, parts)| {
        key.strip_prefix(prefix).map(|r| (r, *t, *flat, parts))
    }) else {
        return parse_original(key);
    };
    let Some((module, part)) = parts
        .iter()
        .find_map(|(suffix, part)| rest.strip_suffix(suffix).map(|m| (m.to_string(), *part)))
    else {
        // diffusers' control LoRAs hold the attention's norms whole.
        let module = rest.strip_suffix(".weight")?;
        let norm = module
            .rsplit('.')
            .next()
            .is_some_and(|m| WHOLE_NORMS.contains(&m));
        return (!flat && norm).then(|| (target, ModuleName::Dotted(module.into()), Part::Whole));
    };
    // kohya names every denoiser `lora_unet_`; SD 3's and FLUX's modules are their original
    // transformers' (`joint_blocks_0_x_block_attn_qkv`, `double_blocks_0_img_attn_qkv`),
    // which no UNet has.
    let transformer = |m: &str| {
        crate::sd3_names::ROOTS
            .iter()
            .chain(crate::flux_names::ROOTS)
            .any(|root| m == *root || m.strip_prefix(root).is_some_and(|r| r.starts_with('_')))
    };
    let target = match target {
        LoraTarget::Unet if flat && transformer(&module) => LoraTarget::Transformer,
        other => other,
    };
    let name = if flat {
        ModuleName::Flat(module)
    } else {
        ModuleName::Dotted(module)
    };
    Some((target, name, part))
}

/// A tensor of BFL's FLUX LoRA files, named after the original transformer's modules with no
/// prefix (`double_blocks.0.img_attn.qkv.lora_A.weight`; the norms' `...query_norm.scale`).
fn parse_original(key: &str) -> Option<(LoraTarget, ModuleName, Part)> {
    const ORIGINAL: Parts = &[
        (".lora_A.weight", Part::Down),
        (".lora_B.weight", Part::Up),
        (".lora_B.bias", Part::UpBias),
        (".alpha", Part::Alpha),
        (".scale", Part::Whole),
    ];
    let root = key.split('.').next()?;
    if !crate::flux_names::ROOTS.contains(&root) {
        return None;
    }
    let (module, part) = ORIGINAL
        .iter()
        .find_map(|(suffix, part)| key.strip_suffix(suffix).map(|m| (m, *part)))?;
    let name = ModuleName::Original(module.to_string());
    Some((LoraTarget::Transformer, name, part))
}

/// An update waiting for its layer's weight to load.
#[derive(Debug, Clone)]
pub(super) struct Delta {
    /// `lora file: module`, for errors.
    pub label: String,
    change: Change,
}

#[derive(Debug, Clone)]
enum Change {
    /// `factor · up · down` added to the weight.
    LowRank {
        up: Values,
        down: Values,
        factor: f32,
    },
    /// `factor · values` added to a bias.
    Bias { values: Values, factor: f32 },
    /// The weight replaced by these values.
    Whole(Values),
}

impl Delta {
    /// The inputs a low-rank update reads (`None` for the other changes): where they are more
    /// than its weight's, the weight is widened with zeros first (see [`Lora::flux_input_width`]).
    pub fn inputs(&self) -> Option<usize> {
        match &self.change {
            Change::LowRank { down, .. } if down.1.len() == 2 => Some(down.1[1]),
            _ => None,
        }
    }

    /// The weight with this change, on `device`; fails if the weight is not of the change's
    /// shape (`[out, in, ...]` for a low-rank update).
    pub fn merged_into<const D: usize>(
        self,
        weight: Tensor<D>,
        device: &Device,
    ) -> Result<Tensor<D>> {
        let shape = weight.dims();
        let misfit = |what: String| {
            Error::InvalidInput(format!(
                "{}: {what} does not fit the layer's {shape:?} (a LoRA for another model?)",
                self.label
            ))
        };
        match self.change {
            Change::LowRank { up, down, factor } => {
                let (out, rank) = (up.1[0], up.1[1]);
                let rest: usize = down.1[1..].iter().product();
                let fits = shape[0] == out
                    && shape[1..].iter().product::<usize>() == rest
                    && down.1[1..] == shape[1..];
                if !fits {
                    let inputs: Vec<String> = down.1[1..].iter().map(|d| d.to_string()).collect();
                    return Err(misfit(format!(
                        "an update of [{out}, {}]",
                        inputs.join(", ")
                    )));
                }
                let up = Tensor::<2>::from_data(TensorData::new(up.0, [out, rank]), device);
                let down = Tensor::<2>::from_data(TensorData::new(down.0, [rank, rest]), device);
                let delta = up.matmul(down).mul_scalar(factor).reshape(shape);
                Ok(weight + delta)
            }
            Change::Bias { values, factor } => {
                if values.1 != shape {
                    return Err(misfit(format!("a bias update of {:?}", values.1)));
                }
                let delta = Tensor::<1>::from_data(TensorData::new(values.0, values.1), device);
                Ok(weight + delta.mul_scalar(factor).reshape(shape))
            }
            Change::Whole(values) => {
                if values.1 != shape {
                    return Err(misfit(format!("a whole tensor of {:?}", values.1)));
                }
                let n = values.0.len();
                let whole = Tensor::<1>::from_data(TensorData::new(values.0, [n]), device);
                Ok(whole.reshape(shape))
            }
        }
    }
}

/// The updates `loras` make to a component whose weight file holds `names`, keyed by weight
/// name. Each module must match exactly one layer: kohya's flattened names are matched
/// against the layers' own names written the same way.
pub(super) fn deltas_for(
    loras: &[ScaledLora],
    target: LoraTarget,
    names: &[&str],
) -> Result<HashMap<String, Vec<Delta>>> {
    // Each layer weight by its module path, dotted and flattened; a text encoder's with and
    // without transformers' `text_model.` prefix, since files of either age use either.
    let mut dotted: HashMap<String, String> = HashMap::new();
    for name in names {
        let Some(module) = name.strip_suffix(".weight") else {
            continue;
        };
        dotted.insert(module.to_string(), name.to_string());
        if matches!(target, LoraTarget::TextEncoder | LoraTarget::TextEncoder2) {
            match module.strip_prefix("text_model.") {
                Some(bare) => dotted.insert(bare.to_string(), name.to_string()),
                None => dotted.insert(format!("text_model.{module}"), name.to_string()),
            };
        }
    }
    let flat: HashMap<String, String> = dotted
        .iter()
        .map(|(m, n)| (m.replace('.', "_"), n.clone()))
        .collect();
    // kohya's SDXL files name UNet modules after the original UNet (`input_blocks_4_1_...`):
    // looked up through diffusers' names, with the model's layers per block.
    let layers_per_block = count_indices(names.iter().copied(), "down_blocks.0.resnets.").max(1);
    let original_unet = |n: &str| {
        (target == LoraTarget::Unet)
            .then(|| crate::ldm::flat_unet_module(n, layers_per_block))
            .flatten()
            .and_then(|m| flat.get(&m))
    };
    // kohya's SD 3 and FLUX files name the transformer's modules after the original's, whose
    // projections are fused: each original module by its flattened name.
    let original = OriginalTransformer::of(target, names);
    let original_modules: HashMap<String, String> = original
        .map(|o| o.modules())
        .unwrap_or_default()
        .into_iter()
        .map(|m| (m.replace('.', "_"), m))
        .collect();
    // The tensors of `kind` (weight, bias; an original norm's scale) that module `name`
    // changes, each with the rows of `rows` that make its part; `None` where the model has none.
    let known: HashSet<&str> = names.iter().copied().collect();
    let targets = |name: &ModuleName, kind: &str, rows: &Values| {
        let of_kind = |weight: &String| {
            let tensor = format!("{}.{kind}", weight.strip_suffix(".weight")?);
            known.contains(tensor.as_str()).then_some(tensor)
        };
        let by_name = |weight: Option<&String>| {
            Ok::<_, String>(weight.and_then(of_kind).map(|t| vec![(t, rows.clone())]))
        };
        match name {
            ModuleName::Flat(n) => match (original, original_modules.get(n)) {
                (Some(transformer), Some(module)) => {
                    original_targets(transformer.rename(module, kind), names, rows)
                }
                _ => by_name(flat.get(n).or_else(|| original_unet(n))),
            },
            ModuleName::Original(n) => match original {
                Some(transformer) => original_targets(transformer.rename(n, kind), names, rows),
                None => Ok(None),
            },
            ModuleName::Dotted(n) => by_name(dotted.get(n)),
        }
    };
    let mut out: HashMap<String, Vec<Delta>> = HashMap::new();
    for scaled in loras {
        let lora = &scaled.lora;
        for ((t, name), module) in &lora.modules {
            if *t != target {
                continue;
            }
            let written = name.written();
            let label = format!("LoRA {}: module `{written}`", lora.source);
            let unmatched = || {
                Error::InvalidInput(format!(
                    "LoRA {}: module `{written}` matches no layer of the model's {} (a LoRA for another architecture?)",
                    lora.source,
                    target.name()
                ))
            };
            let found = targets(name, "weight", &module.up)
                .map_err(|why| Error::InvalidInput(format!("{label}: {why}")))?
                .ok_or_else(unmatched)?;
            let rank = module.down.1[0] as f32;
            let factor = scaled.scale * module.alpha.unwrap_or(rank) / rank;
            for (weight, up) in found {
                let change = Change::LowRank {
                    up,
                    down: module.down.clone(),
                    factor,
                };
                out.entry(weight).or_default().push(Delta {
                    label: label.clone(),
                    change,
                });
            }
            if let Some(bias) = &module.bias {
                let found = targets(name, "bias", bias)
                    .map_err(|why| Error::InvalidInput(format!("{label}: {why}")))?
                    .ok_or_else(|| {
                        Error::InvalidInput(format!(
                            "{label}: updates a bias the layer does not have"
                        ))
                    })?;
                for (bias, values) in found {
                    let change = Change::Bias { values, factor };
                    out.entry(bias).or_default().push(Delta {
                        label: label.clone(),
                        change,
                    });
                }
            }
        }
        for ((t, name), values) in &lora.whole {
            if *t != target {
                continue;
            }
            let label = format!("LoRA {}: `{}`", lora.source, name.written());
            let kind = match name {
                ModuleName::Original(_) => "scale",
                ModuleName::Flat(_) | ModuleName::Dotted(_) => "weight",
            };
            let found = targets(name, kind, values)
                .map_err(|why| Error::InvalidInput(format!("{label}: {why}")))?
                .ok_or_else(|| {
                    Error::InvalidInput(format!(
                        "{label}: matches no norm of the model's {} (a LoRA for another architecture?)",
                        target.name()
                    ))
                })?;
            for (weight, values) in found {
                out.entry(weight).or_default().push(Delta {
                    label: label.clone(),
                    change: Change::Whole(values),
                });
            }
        }
    }
    Ok(out)
}

/// The transformer a kohya LoRA's original module names refer to, told by the model's
/// weight names: FLUX's has single-stream blocks, SD 3's only joint ones.
#[derive(Clone, Copy)]
enum OriginalTransformer {
    Sd3 { blocks: usize },
    Flux { double: usize, single: usize },
}

impl OriginalTransformer {
    fn of(target: LoraTarget, names: &[&str]) -> Option<Self> {
        if target != LoraTarget::Transformer {
            return None;
        }
        let count = |prefix| count_indices(names.iter().copied(), prefix);
        Some(match count("single_transformer_blocks.") {
            0 => Self::Sd3 {
                blocks: count("transformer_blocks."),
            },
            single => Self::Flux {
                double: count("transformer_blocks."),
                single,
            },
        })
    }

    /// Every original module path that holds a weight.
    fn modules(self) -> Vec<String> {
        match self {
            Self::Sd3 { blocks } => crate::sd3_names::modules(blocks),
            Self::Flux { double, single } => crate::flux_names::modules(double, single),
        }
    }

    /// Where the original module's tensor of `kind` (weight, bias, scale) goes in diffusers'
    /// names.
    fn rename(self, module: &str, kind: &str) -> Option<crate::ldm::Renamed> {
        let tensor = format!("{module}.{kind}");
        match self {
            Self::Sd3 { blocks } => crate::sd3_names::rename(&tensor, blocks),
            Self::Flux { .. } => crate::flux_names::rename(&tensor),
        }
    }
}

/// The weights an update `up · down` of an original transformer's module adapts, renamed as
/// `renamed` says (`crate::sd3_names`, `crate::flux_names`), each with the rows of `up`
/// that make its part: a fused module's rows cut in proportion to its parts, one whose
/// halves the original orders the other way with its halves swapped. `None` where the model
/// (weights `names`) lacks one.
fn original_targets(
    renamed: Option<crate::ldm::Renamed>,
    names: &[&str],
    up: &Values,
) -> std::result::Result<Option<Vec<(String, Values)>>, String> {
    use crate::ldm::Renamed;
    let Some(renamed) = renamed else {
        return Ok(None);
    };
    // The update's rows cut in proportion to `shares`.
    let rows = |shares: &[usize]| {
        let (values, shape) = up;
        let per_row = values.len() / shape[0].max(1);
        let total: usize = shares.iter().sum();
        if total == 0 || shape[0] % total != 0 {
            return Err(format!(
                "its update's {} rows do not cut into parts of {shares:?} shares",
                shape[0]
            ));
        }
        let unit = shape[0] / total;
        let mut first = 0;
        Ok(shares
            .iter()
            .map(|share| {
                let mut part_shape = shape.clone();
                part_shape[0] = share * unit;
                let values = values[first * per_row..(first + part_shape[0]) * per_row].to_vec();
                first += part_shape[0];
                (values, part_shape)
            })
            .collect::<Vec<_>>())
    };
    let targets = match renamed {
        Renamed::Same(weight) => vec![(weight, up.clone())],
        Renamed::Fused(pieces) => {
            let shares: Vec<usize> = pieces.iter().map(|(_, share)| *share).collect();
            let parts = rows(&shares)?;
            pieces.into_iter().map(|(w, _)| w).zip(parts).collect()
        }
        Renamed::HalvesSwapped(weight) => {
            let halves = rows(&[1, 1])?;
            let swapped = [halves[1].0.as_slice(), halves[0].0.as_slice()].concat();
            vec![(weight, (swapped, up.1.clone()))]
        }
    };
    Ok(targets
        .iter()
        .all(|(w, _)| names.contains(&w.as_str()))
        .then_some(targets))
}

/// A textual-inversion file's vectors, each set `(values, [n, dim])` in f32.
#[derive(Debug)]
pub enum EmbeddingVectors {
    /// For one text encoder: the file's one tensor (diffusers' `learned_embeds.safetensors`,
    /// named after its token) or its `emb_params` (the common web UIs).
    One(Vec<f32>, [usize; 2]),
    /// SDXL's: `clip_l` for the first text encoder, `clip_g` for the second.
    Pair {
        clip_l: (Vec<f32>, [usize; 2]),
        clip_g: (Vec<f32>, [usize; 2]),
    },
}

/// A textual-inversion embedding file's vectors (see [`EmbeddingVectors`]), each tensor
/// `[dim]` or `[n, dim]`, in f32, f16 or bf16.
pub fn embedding_vectors(source: &str, bytes: &[u8]) -> Result<EmbeddingVectors> {
    let file = SafeTensors::deserialize(bytes).map_err(|e| Error::WeightFile {
        file: source.to_string(),
        message: e.to_string(),
    })?;
    let mut names: Vec<&str> = file.names();
    names.sort_unstable();
    if names.contains(&"clip_l") && names.contains(&"clip_g") {
        return Ok(EmbeddingVectors::Pair {
            clip_l: vector_set(&file, source, "clip_l")?,
            clip_g: vector_set(&file, source, "clip_g")?,
        });
    }
    let key = match names.as_slice() {
        [one] => *one,
        _ if names.contains(&"emb_params") => "emb_params",
        _ => {
            return Err(Error::InvalidInput(format!(
                "embedding {source}: holds {} (expected one tensor, `emb_params`, or SDXL's `clip_l` and `clip_g`)",
                names.join(", ")
            )));
        }
    };
    let (values, shape) = vector_set(&file, source, key)?;
    Ok(EmbeddingVectors::One(values, shape))
}

/// The tensor `key` of an embedding file as `[n, dim]` vectors.
fn vector_set(file: &SafeTensors, source: &str, key: &str) -> Result<(Vec<f32>, [usize; 2])> {
    let t = file.tensor(key).map_err(|e| Error::WeightFile {
        file: source.to_string(),
        message: e.to_string(),
    })?;
    let shape = match *t.shape() {
        [dim] => [1, dim],
        [n, dim] if n > 0 => [n, dim],
        ref other => {
            return Err(Error::InvalidInput(format!(
                "embedding {source}: `{key}` has shape {other:?}; [dim] or [n, dim] expected"
            )));
        }
    };
    Ok((values("embedding", source, key, &t)?, shape))
}
