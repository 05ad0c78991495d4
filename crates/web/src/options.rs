//! Generation options as the page sends them, checked and turned into the runtime's.

use serde::Deserialize;
use wasm_bindgen::prelude::*;

use lina_runtime::pipeline::{
    ControlNetInput, GenerateOptions, ReferenceSize, SkipLayerGuidance, T2IAdapterInput,
};
use lina_runtime::schedulers::{SchedulerKind, Timesteps};

use crate::convert::image_from_js;
use crate::{invalid, js_err};

/// Generation options as the page sends them (camelCase).
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct JsOptions {
    prompt: String,
    negative_prompt: String,
    seed: f64,
    steps: Option<usize>,
    timesteps: Option<Vec<f64>>,
    guidance_scale: Option<f64>,
    width: Option<usize>,
    height: Option<usize>,
    scheduler: Option<String>,
    clip_skip: usize,
    initial_latents: Option<Vec<f32>>,
    /// The unit noise an ancestral sampler adds at each step (`GenerateOptions::step_noise`).
    step_noise: Option<Vec<f32>>,
    /// img2img: the image to start from (`{ width, height, rgba }`, the output's size) and
    /// how much of the schedule runs from it. Kept as the JS object: `image_from_js` reads it.
    #[serde(with = "serde_wasm_bindgen::preserve")]
    init_image: JsValue,
    strength: Option<f64>,
    /// Inpainting (with `init_image`): an image of the output's size whose red channel at
    /// half or more marks what is regenerated (white regenerates, black keeps).
    #[serde(with = "serde_wasm_bindgen::preserve")]
    mask: JsValue,
    /// FLUX.1 Canny's or Depth's edge or depth map (`GenerateOptions::control_image`).
    #[serde(with = "serde_wasm_bindgen::preserve")]
    control_image: JsValue,
    /// FLUX.1 Kontext's input image (`GenerateOptions::reference_image`).
    #[serde(with = "serde_wasm_bindgen::preserve")]
    reference_image: JsValue,
    /// How the reference image is sized (`GenerateOptions::reference_size`): "trained" or "kept".
    reference_size: Option<String>,
    /// Stop early and hand the latents over (`GenerateOptions::denoising_end`).
    denoising_end: Option<f64>,
    /// Continue handed-over latents (`GenerateOptions::handoff`): both or neither.
    handoff_latents: Option<Vec<f32>>,
    denoising_start: Option<f64>,
    /// LINA: a plan (camelCase fields, as `Plan`'s JSON), and optionally the scene graph;
    /// without a graph, the prompt is parsed into one. Both go through serde_json, since
    /// serde-wasm-bindgen's structs never see unknown fields, and those must be errors.
    plan: Option<serde_json::Value>,
    csg: Option<serde_json::Value>,
    /// Pass a preview image to `onStep` after every step (TAESD where the model has it).
    preview: bool,
    /// Record every step's cross-attention maps of the prompt's words (the result's
    /// `attention`).
    attention_maps: bool,
    /// SD 3.5's skip-layer guidance (`{ layers, scale?, start?, stop? }`), through
    /// serde_json for the same reason as the plan: an unknown key in it is an error.
    skip_layer_guidance: Option<serde_json::Value>,
    /// FLUX's classifier-free guidance (`GenerateOptions::true_cfg_scale`).
    true_cfg_scale: Option<f64>,
    /// Guidance rescale (`GenerateOptions::guidance_rescale`).
    guidance_rescale: Option<f64>,
    /// What each loaded ControlNet follows (`GenerateOptions::controlnets`), in their order.
    controlnets: Vec<JsControlNet>,
    /// The ControlNets' guess mode (`GenerateOptions::controlnet_guess_mode`).
    controlnet_guess_mode: bool,
    /// What a loaded T2I-Adapter follows (`GenerateOptions::t2i_adapter`).
    t2i_adapter: Option<JsT2IAdapter>,
}

/// A T2I-Adapter's input as the page sends it (`{ image, scale? }`; the JS wrapper refuses
/// other keys).
#[derive(Deserialize)]
struct JsT2IAdapter {
    #[serde(with = "serde_wasm_bindgen::preserve")]
    image: JsValue,
    scale: Option<f64>,
}

/// One ControlNet's input as the page sends it (`{ image, scale?, start?, end? }`; the JS
/// wrapper refuses other keys): its control image, scale and window, diffusers' defaults
/// where left out.
#[derive(Deserialize)]
struct JsControlNet {
    #[serde(with = "serde_wasm_bindgen::preserve")]
    image: JsValue,
    scale: Option<f64>,
    start: Option<f64>,
    end: Option<f64>,
}

impl JsControlNet {
    fn into_input(self) -> Result<ControlNetInput, JsValue> {
        let image = optional_image(&self.image)?
            .ok_or_else(|| invalid("each of controlnets needs its image"))?;
        let defaults = ControlNetInput::new(image);
        Ok(ControlNetInput {
            scale: self.scale.unwrap_or(defaults.scale),
            window: (
                self.start.unwrap_or(defaults.window.0),
                self.end.unwrap_or(defaults.window.1),
            ),
            ..defaults
        })
    }
}

/// Skip-layer guidance as the page sends it; what it leaves out takes diffusers' defaults
/// ([`SkipLayerGuidance::with`]).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsSkipLayers {
    layers: Vec<usize>,
    scale: Option<f64>,
    start: Option<f64>,
    stop: Option<f64>,
}

impl JsSkipLayers {
    fn parse(value: serde_json::Value) -> Result<SkipLayerGuidance, JsValue> {
        let given: Self = serde_json::from_value(value)
            .map_err(|e| invalid(&format!("invalid skipLayerGuidance: {e}")))?;
        Ok(SkipLayerGuidance::with(
            given.layers,
            given.scale,
            given.start,
            given.stop,
        ))
    }
}

/// An image option, absent where undefined or null.
fn optional_image(value: &JsValue) -> Result<Option<lina_runtime::image::Image>, JsValue> {
    match value.is_undefined() || value.is_null() {
        true => Ok(None),
        false => image_from_js(value).map(Some),
    }
}

impl JsOptions {
    fn into_options(self) -> Result<GenerateOptions, JsValue> {
        if !(self.seed.is_finite() && self.seed >= 0.0 && self.seed <= 9_007_199_254_740_991.0)
            || self.seed.fract() != 0.0
        {
            return Err(invalid("seed must be a whole number between 0 and 2^53-1"));
        }
        let defaults = GenerateOptions::default();
        let reference_image = optional_image(&self.reference_image)?;
        if self.reference_size.is_some() && reference_image.is_none() {
            return Err(invalid("referenceSize sizes a referenceImage: give one"));
        }
        Ok(GenerateOptions {
            prompt: self.prompt,
            negative_prompt: self.negative_prompt,
            seed: self.seed as u64,
            timesteps: match (self.timesteps, self.steps) {
                (Some(list), _) => Timesteps::Explicit(list),
                (None, Some(n)) => Timesteps::Count(n),
                (None, None) => defaults.timesteps,
            },
            guidance_scale: self.guidance_scale.unwrap_or(defaults.guidance_scale),
            width: self.width,
            height: self.height,
            scheduler: self
                .scheduler
                .as_deref()
                .map(SchedulerKind::parse)
                .transpose()
                .map_err(js_err)?,
            clip_skip: self.clip_skip,
            initial_latents: self.initial_latents,
            step_noise: self.step_noise,
            init_image: optional_image(&self.init_image)?,
            mask: optional_image(&self.mask)?.map(|mask| mask.to_mask()),
            control_image: optional_image(&self.control_image)?,
            reference_image,
            reference_size: self
                .reference_size
                .as_deref()
                .map(ReferenceSize::parse)
                .transpose()
                .map_err(js_err)?
                .unwrap_or_default(),
            strength: self.strength.unwrap_or(defaults.strength),
            denoising_end: self.denoising_end,
            handoff: match (self.handoff_latents, self.denoising_start) {
                (Some(latents), Some(denoising_start)) => Some(lina_runtime::pipeline::Handoff {
                    latents,
                    denoising_start,
                }),
                (None, None) => None,
                _ => {
                    return Err(invalid(
                        "handoffLatents and denoisingStart come together: the latents and where in the schedule they stand",
                    ));
                }
            },
            skip_layer_guidance: self
                .skip_layer_guidance
                .map(JsSkipLayers::parse)
                .transpose()?,
            true_cfg_scale: self.true_cfg_scale,
            guidance_rescale: self.guidance_rescale.unwrap_or(defaults.guidance_rescale),
            controlnets: self
                .controlnets
                .into_iter()
                .map(JsControlNet::into_input)
                .collect::<Result<_, _>>()?,
            controlnet_guess_mode: self.controlnet_guess_mode,
            t2i_adapter: self
                .t2i_adapter
                .map(|input| -> Result<T2IAdapterInput, JsValue> {
                    Ok(T2IAdapterInput {
                        image: optional_image(&input.image)?
                            .ok_or_else(|| invalid("t2iAdapter needs its image"))?,
                        scale: input.scale.unwrap_or(1.0),
                    })
                })
                .transpose()?,
        })
    }
}

/// What `generate`'s options hold besides the runtime's own options.
pub(crate) struct Inputs {
    pub(crate) options: GenerateOptions,
    pub(crate) plan: Option<lina::Plan>,
    pub(crate) csg: Option<lina_csg::Csg>,
    pub(crate) preview: bool,
    pub(crate) attention_maps: bool,
}

/// The options, and LINA's plan and scene graph, the preview and attention-map flags, from
/// `generate`'s options.
pub(crate) fn lina_inputs(options: JsValue) -> Result<Inputs, JsValue> {
    let mut options: JsOptions = serde_wasm_bindgen::from_value(options)
        .map_err(|e| invalid(&format!("invalid options: {e}")))?;
    let (plan, csg) = (options.plan.take(), options.csg.take());
    let (preview, attention_maps) = (options.preview, options.attention_maps);
    let plan = plan
        .map(|v| lina::Plan::parse(&v.to_string()))
        .transpose()
        .map_err(js_err)?;
    let csg = csg
        .map(|v| lina_csg::Csg::from_json(&v.to_string()))
        .transpose()
        .map_err(js_err)?;
    Ok(Inputs {
        options: options.into_options()?,
        plan,
        csg,
        preview,
        attention_maps,
    })
}
