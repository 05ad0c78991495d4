//! The browser API: a thin wasm-bindgen layer over the runtime, LINA and the probe, and the
//! only crate of the workspace that knows wasm-bindgen. Every method is async where the
//! GPU is involved, every error is a JS `Error` with the core's message, and a panic hook
//! reports any bug to the console instead of an opaque `unreachable`.

#![cfg(target_arch = "wasm32")]

use std::cell::RefCell;
use std::rc::Rc;

use js_sys::{Object, Promise, Reflect, Uint8Array, Uint8ClampedArray};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;

use lina_runtime::bench::UnetCall;
use lina_runtime::device::Precision;
use lina_runtime::kernels::Kernels;
use lina_runtime::pipeline::{
    CancelToken, GenerateOptions, Hooks, Sampling, StableDiffusion, StepFuture, StepHook,
};
use lina_runtime::schedulers::{SchedulerKind, Timesteps};
use lina_runtime::single_file;
use lina_runtime::source::{MemorySource, StagedSource};
use lina_runtime::weights::{Lora, ScaledLora, WeightsUpload};

#[wasm_bindgen(start)]
pub fn start() {
    use tracing_subscriber::prelude::*;

    console_error_panic_hook::set_once();
    // Info and above, to the console as text (no ANSI colours, no clock: a page has no
    // std::time). A second instance in the same realm keeps the first subscriber.
    let console = tracing_subscriber::fmt::layer()
        .with_ansi(false)
        .without_time()
        .with_writer(tracing_web::MakeWebConsoleWriter::new())
        .with_filter(tracing_subscriber::filter::LevelFilter::INFO);
    let _ = tracing_subscriber::registry().with(console).try_init();
}

/// The device that device options ask for: `{ backend, precision }`, both optional.
/// `backend`: `"webgpu"` (the default) or `"cpu"`, burn's pure-Rust CPU backend compiled into
/// this module, which beats WebGPU on a software adapter such as SwiftShader by far (the
/// worker chooses it for `"auto"`, see lina-worker.js). `precision`: `"auto"` (the default:
/// f16 where the adapter has shader-f16, f32 otherwise), `"f32"` or `"f16"`; the CPU backend
/// computes in f32. `kernels`: `"fused"` (the default: the WGSL kernels of shaders/ on WebGPU)
/// or `"burn"` (burn's own kernels only), for the model loaded with these options. Other keys
/// are errors.
async fn device_from_options(
    options: &JsValue,
) -> Result<(burn::tensor::Device, Kernels), JsValue> {
    let (mut cpu, mut precision, mut kernels) = (false, None, Kernels::Fused);
    if !options.is_undefined() && !options.is_null() {
        let object = options
            .dyn_ref::<Object>()
            .ok_or_else(|| invalid("options must be an object"))?;
        for key in Object::keys(object).iter() {
            let name = key.as_string().unwrap_or_default();
            let value = Reflect::get(object, &key).unwrap_or(JsValue::UNDEFINED);
            match (name.as_str(), value.as_string().as_deref()) {
                ("backend", Some("webgpu")) => cpu = false,
                ("backend", Some("cpu")) => cpu = true,
                ("backend", _) => {
                    return Err(invalid("backend must be \"webgpu\" or \"cpu\""));
                }
                ("precision", Some("auto")) => precision = None,
                ("precision", Some("f32")) => precision = Some(Precision::F32),
                ("precision", Some("f16")) => precision = Some(Precision::F16),
                ("precision", _) => {
                    return Err(invalid("precision must be \"auto\", \"f32\" or \"f16\""));
                }
                ("kernels", Some("fused")) => kernels = Kernels::Fused,
                ("kernels", Some("burn")) => kernels = Kernels::Burn,
                ("kernels", _) => {
                    return Err(invalid("kernels must be \"fused\" or \"burn\""));
                }
                (other, _) => {
                    return Err(invalid(&format!(
                        "unknown option \"{other}\" (the options are backend, precision and kernels)"
                    )));
                }
            }
        }
    }
    let device = match (cpu, precision) {
        (true, Some(Precision::F16)) => {
            return Err(invalid(
                "the CPU backend computes in f32: ask for precision \"f32\" or \"auto\"",
            ));
        }
        (true, _) => lina_runtime::device::cpu(),
        (false, precision) => {
            let stop_asking = ask_for_subgroups();
            let device = lina_runtime::device::gpu_for(precision.unwrap_or(Precision::Auto)).await;
            // Calling the function it returned cannot throw.
            let _ = stop_asking.call0(&JsValue::NULL);
            device.map_err(js_err)?
        }
    };
    Ok((device, kernels))
}

// wgpu (30) opens WebGPU devices without the `subgroups` feature, which it does not know in
// browsers, and shaders may use subgroup operations only on a device opened with it; on
// software adapters (SwiftShader) the runtime's lanes kernels need them. So while the runtime
// opens a device, the adapter's `requestDevice` adds the feature wherever the adapter has it.
// Patching the prototype is the only way in, since wgpu calls `requestDevice` itself; it lasts
// from here to the call of the function this returns, which puts the original back. A device
// some other code opens in that window gets the feature too, which changes nothing for it; if
// ours is not the one that got it, the runtime finds its shaders cannot use subgroups and keeps
// the other kernels (`lina_runtime::device`).
#[wasm_bindgen(inline_js = r#"
export function ask_for_subgroups() {
  const proto = globalThis.GPUAdapter?.prototype;
  const original = proto?.requestDevice;
  if (typeof original !== "function") return () => {};
  const asking = function (descriptor = {}) {
    if (!this.features.has("subgroups")) return original.call(this, descriptor);
    const features = [...(descriptor.requiredFeatures ?? [])];
    if (!features.includes("subgroups")) features.push("subgroups");
    return original.call(this, { ...descriptor, requiredFeatures: features });
  };
  proto.requestDevice = asking;
  return () => {
    if (proto.requestDevice === asking) proto.requestDevice = original;
  };
}
"#)]
extern "C" {
    fn ask_for_subgroups() -> js_sys::Function;
}

/// A JS `Error` with `message` and a stable `code` (the runtime's [`lina_runtime::Error::code`]
/// for its errors): what every rejection and exception of this API is, so that callers branch
/// on `error.code` rather than on message text.
fn js_error(code: &str, message: &str) -> JsValue {
    let error = js_sys::Error::new(message);
    // Setting a property on a fresh Error cannot fail.
    let _ = Reflect::set(&error, &JsValue::from_str("code"), &JsValue::from_str(code));
    error.into()
}

fn js_err(e: lina_runtime::Error) -> JsValue {
    js_error(e.code(), &e.to_string())
}

/// Bad input from the caller: options, files, images, graphs.
fn invalid(message: &str) -> JsValue {
    js_error("invalid_input", message)
}

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
}

impl JsOptions {
    fn into_options(self) -> Result<GenerateOptions, JsValue> {
        if !(self.seed.is_finite() && self.seed >= 0.0 && self.seed <= 9_007_199_254_740_991.0)
            || self.seed.fract() != 0.0
        {
            return Err(invalid("seed must be a whole number between 0 and 2^53-1"));
        }
        let defaults = GenerateOptions::default();
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
            init_image: match self.init_image.is_undefined() || self.init_image.is_null() {
                true => None,
                false => Some(image_from_js(&self.init_image)?),
            },
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
            ..defaults
        })
    }
}

/// A loaded model on the page's WebGPU device.
#[wasm_bindgen]
pub struct Pipeline {
    inner: StableDiffusion,
    /// LINA's learned plan predictor, where the model folder has one.
    predictor: Option<lina::predict::Predictor>,
    /// The running generation's token; a new one per `generate`.
    cancel: RefCell<CancelToken>,
    /// The benchmark's UNet inputs, made on its first call so later calls time the UNet only.
    bench: RefCell<Option<Rc<UnetCall>>>,
}

#[wasm_bindgen]
impl Pipeline {
    /// Loads a diffusers-layout model from `files`, an object mapping relative paths
    /// (`"unet/config.json"`) to `Uint8Array`s. `options` as for `ModelLoader.create`.
    pub async fn load(files: Object, options: JsValue) -> Result<Pipeline, JsValue> {
        let (device, kernels) = device_from_options(&options).await?;
        let mut source = MemorySource::new();
        for key in Object::keys(&files).iter() {
            let path = key
                .as_string()
                .ok_or_else(|| invalid("file names must be strings"))?;
            let value = Reflect::get(&files, &key).map_err(|_| invalid("unreadable file entry"))?;
            let bytes = value
                .dyn_into::<Uint8Array>()
                .map_err(|_| invalid(&format!("{path}: expected a Uint8Array")))?;
            source.insert(path, bytes.to_vec());
        }
        let inner = StableDiffusion::load_with(&source, &device, kernels).map_err(js_err)?;
        Ok(Pipeline {
            inner,
            predictor: lina::predict::Predictor::load(&source).map_err(js_err)?,
            cancel: RefCell::new(CancelToken::new()),
            bench: RefCell::default(),
        })
    }

    /// Builds the model from a loader's files; the loader is used up (its weights are
    /// already on the device).
    #[wasm_bindgen(js_name = fromLoader)]
    pub fn from_loader(loader: ModelLoader) -> Result<Pipeline, JsValue> {
        if loader.current.is_some() {
            return Err(invalid(
                "the loader is still reading a file; call endFile first",
            ));
        }
        let inner = StableDiffusion::load_adapted(
            &loader.source,
            &loader.device,
            loader.kernels,
            &loader.loras,
        )
        .map_err(js_err)?;
        Ok(Pipeline {
            inner,
            predictor: lina::predict::Predictor::load(&loader.source).map_err(js_err)?,
            cancel: RefCell::new(CancelToken::new()),
            bench: RefCell::default(),
        })
    }

    /// Binds a textual-inversion embedding (`.safetensors`: one tensor, or `emb_params`) to
    /// `trigger`, which prompts then use as a word. A bad file, vectors of another width or
    /// a trigger that is a token already: refused, the model unchanged.
    #[wasm_bindgen(js_name = addEmbedding)]
    pub fn add_embedding(
        &mut self,
        trigger: &str,
        name: &str,
        bytes: &[u8],
    ) -> Result<(), JsValue> {
        self.inner
            .add_embedding(trigger, name, bytes)
            .map_err(js_err)
    }

    /// What the user should know about the loaded model on this device (its native size is
    /// too large for the adapter's limits, say); empty when nothing.
    pub fn notes(&self) -> Vec<String> {
        self.inner.size_note().into_iter().collect()
    }

    /// The model's native image side in pixels.
    #[wasm_bindgen(js_name = nativeSize)]
    pub fn native_size(&self) -> usize {
        self.inner.native_size()
    }

    /// Traps the wasm instance (a Rust panic, which aborts to `unreachable`), as a bug or an
    /// exhausted memory would: for tests that the worker replaces a trapped instance instead
    /// of using it again.
    #[doc(hidden)]
    #[wasm_bindgen(js_name = __trapForTesting)]
    pub fn trap_for_testing() {
        panic!("trap requested for testing");
    }

    /// Destroys the model's GPU device, as a driver reset would, for tests of recovery: the
    /// next `generate` fails saying so, and the next load gets a fresh device.
    #[doc(hidden)]
    #[wasm_bindgen(js_name = __loseDeviceForTesting)]
    pub fn lose_device_for_testing(&self) -> Result<(), JsValue> {
        lina_runtime::device::lose(self.inner.device()).map_err(js_err)
    }

    /// One UNet call as a guided step makes it (`lina::bench::UnetCall`), resolved once its
    /// result is read back: the benchmark page times it, as `lina-cli bench` does natively.
    #[wasm_bindgen(js_name = benchUnet)]
    pub async fn bench_unet(&self) -> Result<(), JsValue> {
        let call = match self.bench.borrow().clone() {
            Some(call) => call,
            None => Rc::new(UnetCall::new(&self.inner).map_err(js_err)?),
        };
        *self.bench.borrow_mut() = Some(call.clone());
        call.run(&self.inner).await.map_err(js_err)
    }

    /// Sets the scale of each LoRA the model was loaded with, in their order, without loading
    /// it again: the components they adapt are built again from the weights kept on the
    /// device (`StableDiffusion::set_lora_scales`). A wrong count, a scale that is not finite
    /// or a model without LoRAs is refused and changes nothing.
    #[wasm_bindgen(js_name = setLoraScales)]
    pub fn set_lora_scales(&mut self, scales: Vec<f32>) -> Result<(), JsValue> {
        self.inner.set_lora_scales(&scales).map_err(js_err)
    }

    /// `{ gpu: { allocations, bytesInUse, bytesReserved }, wasmBytes }`: what the GPU
    /// allocator holds and the size of wasm memory, for leak checks (wasm memory never
    /// shrinks, so a leak there only grows it).
    #[wasm_bindgen(js_name = memoryUsage)]
    pub fn memory_usage(&self) -> Result<JsValue, JsValue> {
        #[derive(serde::Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Usage {
            gpu: Option<lina_runtime::device::GpuMemory>,
            wasm_bytes: f64,
        }
        let memory: js_sys::WebAssembly::Memory = wasm_bindgen::memory().unchecked_into();
        let bytes = memory
            .buffer()
            .unchecked_into::<js_sys::ArrayBuffer>()
            .byte_length();
        to_js(&Usage {
            gpu: lina_runtime::device::gpu_memory(self.inner.device()),
            wasm_bytes: f64::from(bytes),
        })
    }

    /// The device the model runs on: `{ adapter, precision: "f16" | "f32",
    /// maxBindingBytes, shaderF16, subgroupLanes }` (`subgroupLanes`: the size of the
    /// adapter's subgroups where shaders may use subgroup operations and all have that size,
    /// else null; the kernels use them on software adapters).
    #[wasm_bindgen(js_name = deviceInfo)]
    pub fn device_info(&self) -> Result<JsValue, JsValue> {
        let limits = lina_runtime::device::limits(self.inner.device());
        let info = Object::new();
        let set = |key: &str, value: JsValue| Reflect::set(&info, &key.into(), &value);
        set("adapter", limits.adapter.into())
            .and_then(|_| {
                set(
                    "precision",
                    if limits.computes_f16 { "f16" } else { "f32" }.into(),
                )
            })
            .and_then(|_| set("maxBindingBytes", (limits.max_binding_bytes as f64).into()))
            .and_then(|_| set("shaderF16", limits.shader_f16.into()))
            .and_then(|_| {
                set(
                    "subgroupLanes",
                    limits.subgroup_lanes.map_or(JsValue::NULL, |n| n.into()),
                )
            })
            .map_err(|_| invalid("cannot build the device info"))?;
        Ok(info.into())
    }

    /// Generates an image. `onStep(step, steps, timestep, preview?)` is called after every
    /// step (`preview`, an image object, when the options ask for `preview: true`); if it
    /// returns a promise it is awaited (let the page paint, or yield to take a Cancel click).
    /// With `plan` (and optionally `csg`) in the options, LINA's interventions run.
    /// Resolves to `{ width, height, rgba: Uint8ClampedArray, warnings: string[],
    /// interventions: string[] }`, with `denoisingEnd` also `latents: Float32Array` (for a
    /// refiner's `handoffLatents`), and with `attentionMaps: true` also `attention: { tokens:
    /// [{ position, word }], height, width, steps: Float32Array[] }`: per step, each token's
    /// map of `height * width` probabilities, one token after another.
    pub async fn generate(
        &self,
        options: JsValue,
        #[wasm_bindgen(js_name = onStep)] on_step: Option<js_sys::Function>,
    ) -> Result<Object, JsValue> {
        let Inputs {
            options,
            plan,
            csg,
            preview,
            attention_maps,
        } = lina_inputs(options)?;
        let cancel = self.fresh_cancel();
        // LINA's interventions, when a plan asks for any.
        let (options, mut hooks, described) = match plan.filter(|p| !p.is_baseline()) {
            None => (options, Hooks::default(), Vec::new()),
            Some(plan) => {
                let csg = match csg {
                    Some(csg) => csg,
                    None => lina_csg::parse::parse(&options.prompt).map_err(js_err)?,
                };
                let started = lina::start(&self.inner, &options, &csg, &plan, &cancel)
                    .await
                    .map_err(js_err)?;
                let prepared =
                    lina::prepare(&self.inner, &started.opts, &csg, &plan).map_err(js_err)?;
                let mut described = prepared.described;
                described.extend(started.described);
                (prepared.opts, prepared.hooks, described)
            }
        };
        let mut page = PageSteps { on_step, preview };
        // Records nothing unless asked: a record makes every cross-attention layer compute
        // its scores explicitly.
        let mut recorder = attention_maps.then(lina::attention::AttentionRecorder::default);
        let mut sampling = self.inner.start(&options).map_err(js_err)?;
        match recorder.as_mut() {
            Some(recorder) => {
                sampling
                    .run(&mut (&mut (&mut hooks, recorder), &mut page), &cancel)
                    .await
            }
            None => sampling.run(&mut (&mut hooks, &mut page), &cancel).await,
        }
        .map_err(js_err)?;
        let done = sampling.finish().await.map_err(js_err)?;

        let out = image_object(&done.image)?;
        let set = |k: &str, v: &JsValue| Reflect::set(&out, &JsValue::from_str(k), v).map(|_| ());
        let warnings: js_sys::Array = done
            .warnings
            .iter()
            .map(|w| JsValue::from_str(&w.to_string()))
            .collect();
        let interventions: js_sys::Array = described.iter().map(|d| JsValue::from_str(d)).collect();
        set("warnings", &warnings)
            .and_then(|_| set("interventions", &interventions))
            .map_err(|_| invalid("could not build the result object"))?;
        if let Some(latents) = &done.latents {
            set(
                "latents",
                &js_sys::Float32Array::from(latents.as_slice()).into(),
            )
            .map_err(|_| invalid("could not build the result object"))?;
        }
        if let Some(recorder) = recorder {
            let maps = recorder
                .read(&self.inner, &options.prompt)
                .await
                .map_err(js_err)?;
            set("attention", &token_maps_object(&maps)?)
                .map_err(|_| invalid("could not build the result object"))?;
        }
        Ok(out)
    }

    /// LINA's step sweep: the plan's guidance at one step at a time, for every step (the
    /// options as for `generate`, with `plan`, default LINA's, and optionally `csg`).
    /// Resolves to `{ baselinePassed, checks, points: [{ step, change, passed, checks }] }`.
    pub async fn sweep(&self, options: JsValue) -> Result<JsValue, JsValue> {
        let (options, plan, csg) = self.diagnostic_inputs(options)?;
        let cancel = self.fresh_cancel();
        let sweep = lina_probe::diagnose::step_sweep(&self.inner, &options, &csg, &plan, &cancel)
            .await
            .map_err(js_err)?;
        to_js(&sweep)
    }

    /// CSG-guided re-inpainting: regenerates `node`'s region of `image` (`{ width, height,
    /// rgba }`) from `strength` of the schedule on, under the options' plan. Resolves to the
    /// new image with `before` and `after`, the checker's verdicts.
    pub async fn reinpaint(
        &self,
        options: JsValue,
        image: JsValue,
        node: String,
        strength: f64,
    ) -> Result<Object, JsValue> {
        let (options, plan, csg) = self.diagnostic_inputs(options)?;
        let image = image_from_js(&image)?;
        let cancel = self.fresh_cancel();
        let done = lina_probe::diagnose::reinpaint(
            &self.inner,
            &options,
            &csg,
            &plan,
            &image,
            &node,
            strength,
            &cancel,
        )
        .await
        .map_err(js_err)?;
        let out = image_object(&done.image)?;
        for (key, verdicts) in [("before", &done.before), ("after", &done.after)] {
            Reflect::set(&out, &JsValue::from_str(key), &to_js(verdicts)?)
                .map_err(|_| invalid("could not build the result object"))?;
        }
        Ok(out)
    }

    /// The probe checker's verdicts for `image` against a scene graph (`csg`, JSON as the
    /// CSG schema): one `{ kind, check, passed, detail }` per relation and effect.
    #[wasm_bindgen(js_name = checkImage)]
    pub fn check_image(image: JsValue, csg: JsValue) -> Result<JsValue, JsValue> {
        let image = image_from_js(&image)?;
        to_js(&lina_probe::check::check(&image, &csg_from_js(csg)?))
    }

    /// The learned predictor's plan for `prompt` (its scene graph `csg`, or the one the prompt
    /// describes when `csg` is undefined): `{ candidate, plan, predicted: [[name, share], …] }`,
    /// or `null` when the model folder has no `lina_predictor.json`.
    #[wasm_bindgen(js_name = suggestPlan)]
    pub async fn suggest_plan(&self, prompt: String, csg: JsValue) -> Result<JsValue, JsValue> {
        let csg = if csg.is_undefined() || csg.is_null() {
            lina_csg::parse::parse(&prompt).map_err(js_err)?
        } else {
            csg_from_js(csg)?
        };
        match &self.predictor {
            None => Ok(JsValue::NULL),
            Some(predictor) => to_js(
                &predictor
                    .suggest_for(&self.inner, &prompt, &csg)
                    .await
                    .map_err(js_err)?,
            ),
        }
    }

    /// The scene graph a prompt describes, with the effects physics implies added (reflections,
    /// shadows), as the JSON object `generate`'s `csg` option takes.
    #[wasm_bindgen(js_name = parsePrompt)]
    pub fn parse_prompt(prompt: &str) -> Result<JsValue, JsValue> {
        to_js(&lina_csg::parse::parse(prompt).map_err(js_err)?)
    }

    /// The graph with a box for every node the prompt names that has none, derived from its
    /// relations (the boxes LINA's layout controls steer toward where the user drew none).
    #[wasm_bindgen(js_name = deriveLayout)]
    pub fn derive_layout(csg: JsValue) -> Result<JsValue, JsValue> {
        let mut csg = csg_from_js(csg)?;
        let boxes = lina_csg::layout::derive(&csg);
        for (node, b) in csg.nodes.iter_mut().zip(boxes) {
            node.layout = b;
        }
        to_js(&csg)
    }

    /// Checks a scene graph (its version, unique ids, relations between known nodes, layouts
    /// inside the image); returns it as read, or throws naming the problem.
    #[wasm_bindgen(js_name = validateCsg)]
    pub fn validate_csg(csg: JsValue) -> Result<JsValue, JsValue> {
        to_js(&csg_from_js(csg)?)
    }

    /// LINA's default plan, every field filled in: a starting point for the page's controls.
    #[wasm_bindgen(js_name = linaPlan)]
    pub fn lina_plan() -> Result<JsValue, JsValue> {
        to_js(&lina::Plan::lina())
    }

    /// The timesteps a run with these options takes: `{ plain, planned }`, the scheduler's
    /// own and those of the options' `plan` (its warp moves them toward the noisy start).
    pub fn timesteps(&self, options: JsValue) -> Result<JsValue, JsValue> {
        let Inputs { options, plan, .. } = lina_inputs(options)?;
        let plain = lina::timesteps(&self.inner, &options, &Default::default()).map_err(js_err)?;
        let planned = match plan {
            Some(plan) => lina::timesteps(&self.inner, &options, &plan).map_err(js_err)?,
            None => plain.clone(),
        };
        let out = Object::new();
        let list = |v: &[f64]| -> JsValue {
            v.iter()
                .map(|&t| JsValue::from(t))
                .collect::<js_sys::Array>()
                .into()
        };
        Reflect::set(&out, &"plain".into(), &list(&plain))
            .and_then(|_| Reflect::set(&out, &"planned".into(), &list(&planned)))
            .map_err(|_| invalid("cannot build the timesteps"))?;
        Ok(out.into())
    }

    /// Stops the running generation, sweep or re-inpainting after its current step; its
    /// promise rejects with an error of code `cancelled`.
    pub fn cancel(&self) {
        self.cancel.borrow().cancel();
    }
}

/// The page's side of the sampling loop: after every step, once the device has caught up, the
/// `onStep` callback with the step, the step count, the timestep and (when asked) a preview;
/// a promise it returns is awaited, so the page can paint or take a Cancel click.
struct PageSteps {
    on_step: Option<js_sys::Function>,
    preview: bool,
}

impl PageSteps {
    async fn report(&self, sampling: &Sampling<'_>) -> lina_runtime::Result<()> {
        sampling.settle().await?;
        let Some(f) = &self.on_step else {
            return Ok(());
        };
        let step = sampling.current_step();
        let args = js_sys::Array::of3(
            &JsValue::from(step as u32),
            &JsValue::from(sampling.steps() as u32),
            &JsValue::from(sampling.timesteps()[step - 1]),
        );
        if self.preview {
            let image = sampling.preview().await?;
            let object = image_object(&image)
                .map_err(|_| lina_runtime::Error::Callback("cannot build the preview".into()))?;
            args.push(&object.into());
        }
        let returned = f
            .apply(&JsValue::NULL, &args)
            .map_err(|e| lina_runtime::Error::Callback(format!("onStep threw: {e:?}")))?;
        if let Ok(promise) = returned.dyn_into::<Promise>() {
            JsFuture::from(promise)
                .await
                .map_err(|e| lina_runtime::Error::Callback(format!("onStep rejected: {e:?}")))?;
        }
        Ok(())
    }
}

impl StepHook for PageSteps {
    fn between_steps<'a>(&'a mut self, sampling: &'a mut Sampling<'_>) -> StepFuture<'a> {
        Box::pin(self.report(sampling))
    }
}

/// What `generate`'s options hold besides the runtime's own options.
struct Inputs {
    options: GenerateOptions,
    plan: Option<lina::Plan>,
    csg: Option<lina_csg::Csg>,
    preview: bool,
    attention_maps: bool,
}

/// The options, and LINA's plan and scene graph, the preview and attention-map flags, from
/// `generate`'s options.
fn lina_inputs(options: JsValue) -> Result<Inputs, JsValue> {
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

impl Pipeline {
    /// A new token for the call about to run, which `cancel` then stops: one call runs at a
    /// time (the worker queues them), so the latest token is the running call's.
    fn fresh_cancel(&self) -> CancelToken {
        let cancel = CancelToken::new();
        *self.cancel.borrow_mut() = cancel.clone();
        cancel
    }

    /// A diagnostic's inputs: the options, the plan (LINA's default when none is given) and
    /// the graph (parsed from the prompt when none is given).
    fn diagnostic_inputs(
        &self,
        options: JsValue,
    ) -> Result<(GenerateOptions, lina::Plan, lina_csg::Csg), JsValue> {
        let Inputs {
            options, plan, csg, ..
        } = lina_inputs(options)?;
        let csg = match csg {
            Some(csg) => csg,
            None => lina_csg::parse::parse(&options.prompt).map_err(js_err)?,
        };
        Ok((options, plan.unwrap_or_else(lina::Plan::lina), csg))
    }
}

/// `{ tokens: [{ position, word }], height, width, steps: Float32Array[] }`.
fn token_maps_object(maps: &lina::attention::TokenMaps) -> Result<JsValue, JsValue> {
    let out = Object::new();
    let steps: js_sys::Array = maps
        .steps
        .iter()
        .map(|s| JsValue::from(js_sys::Float32Array::from(s.as_slice())))
        .collect();
    let set = |k: &str, v: &JsValue| Reflect::set(&out, &JsValue::from_str(k), v);
    set("tokens", &to_js(&maps.tokens)?)
        .and_then(|_| set("height", &JsValue::from(maps.height as u32)))
        .and_then(|_| set("width", &JsValue::from(maps.width as u32)))
        .and_then(|_| set("steps", &steps))
        .map_err(|_| invalid("could not build the attention maps"))?;
    Ok(out.into())
}

/// A scene graph from its JSON object, validated. Through serde_json, whose errors name the
/// unknown or missing field.
fn csg_from_js(csg: JsValue) -> Result<lina_csg::Csg, JsValue> {
    let csg: serde_json::Value =
        serde_wasm_bindgen::from_value(csg).map_err(|e| invalid(&format!("invalid CSG: {e}")))?;
    lina_csg::Csg::from_json(&csg.to_string()).map_err(js_err)
}

/// A serialisable value as a plain JS object (maps as objects, not `Map`s).
fn to_js<T: serde::Serialize>(value: &T) -> Result<JsValue, JsValue> {
    value
        .serialize(&serde_wasm_bindgen::Serializer::json_compatible())
        .map_err(|e| invalid(&format!("could not convert the result: {e}")))
}

/// `{ width, height, rgba }` (as `ImageData` has them) to an image; alpha is ignored.
fn image_from_js(value: &JsValue) -> Result<lina_runtime::image::Image, JsValue> {
    let field = |k: &str| Reflect::get(value, &JsValue::from_str(k)).ok();
    let number = |k: &str| {
        field(k)
            .and_then(|v| v.as_f64())
            .filter(|v| v.fract() == 0.0 && *v >= 1.0 && *v <= 4096.0)
            .map(|v| v as usize)
            .ok_or_else(|| invalid(&format!("image.{k} must be a whole number of pixels")))
    };
    let (width, height) = (number("width")?, number("height")?);
    let rgba = field("rgba")
        .filter(|v| v.is_object())
        .map(|v| Uint8Array::new(&v).to_vec())
        .ok_or_else(|| invalid("image.rgba must be a Uint8ClampedArray or Uint8Array"))?;
    if rgba.len() != width * height * 4 {
        return Err(invalid(&format!(
            "image.rgba has {} bytes, {width}x{height} RGBA needs {}",
            rgba.len(),
            width * height * 4
        )));
    }
    let rgb = rgba
        .chunks_exact(4)
        .flat_map(|p| [p[0], p[1], p[2]])
        .collect();
    Ok(lina_runtime::image::Image { width, height, rgb })
}

/// `{ width, height, rgba: Uint8ClampedArray }`, ready for `new ImageData(rgba, width, height)`.
fn image_object(image: &lina_runtime::image::Image) -> Result<Object, JsValue> {
    let out = Object::new();
    let rgba = Uint8ClampedArray::from(image.to_rgba().as_slice());
    let set = |k: &str, v: &JsValue| Reflect::set(&out, &JsValue::from_str(k), v).map(|_| ());
    set("width", &JsValue::from(image.width as u32))
        .and_then(|_| set("height", &JsValue::from(image.height as u32)))
        .and_then(|_| set("rgba", &rgba))
        .map_err(|_| invalid("could not build an image object"))?;
    Ok(out)
}

/// Gathers a model's files as they arrive, so that no weight file is ever whole in wasm
/// memory: each `.safetensors` file goes to the GPU tensor by tensor while its bytes stream
/// in (from `fetch`, or chunk by chunk from `File.slice`); other files are kept as bytes.
/// `Pipeline.fromLoader` then builds the model.
#[wasm_bindgen]
pub struct ModelLoader {
    device: burn::tensor::Device,
    /// The kernels the model built from this loader runs.
    kernels: Kernels,
    source: StagedSource,
    current: Option<(String, Incoming)>,
    /// The current file's SHA-256 so far, when its caller asked for one.
    digest: Option<Sha256>,
    /// LoRA adapters to merge into the model as it is built, each at its scale.
    loras: Vec<ScaledLora>,
}

enum Incoming {
    // Boxed: the upload's parser state is far larger than a byte buffer.
    Weights(Box<WeightsUpload>),
    Bytes(Vec<u8>),
}

#[wasm_bindgen]
impl ModelLoader {
    /// Acquires the WebGPU device the weights will live on. `options.precision`: `"auto"`
    /// (the default: f16 where the adapter has shader-f16, f32 otherwise), `"f32"` or `"f16"`.
    /// After a device failure (reported by `generate`), the next loader gets a fresh device.
    pub async fn create(options: JsValue) -> Result<ModelLoader, JsValue> {
        let (device, kernels) = device_from_options(&options).await?;
        Ok(ModelLoader {
            device,
            kernels,
            source: StagedSource::default(),
            current: None,
            digest: None,
            loras: Vec::new(),
        })
    }

    /// A LoRA (`.safetensors`, kohya or diffusers/PEFT names) to merge into the UNet (or SD 3's
    /// transformer) and the text encoders at `scale` when `Pipeline.fromLoader` builds the
    /// model. A malformed file
    /// fails here; a LoRA for another model fails in `fromLoader`, naming its module.
    #[wasm_bindgen(js_name = addLora)]
    pub fn add_lora(&mut self, name: String, bytes: &[u8], scale: f64) -> Result<(), JsValue> {
        if !scale.is_finite() {
            return Err(invalid(&format!(
                "LoRA {name}: the scale must be a finite number"
            )));
        }
        let lora = Lora::from_safetensors(&name, bytes).map_err(js_err)?;
        self.loras.push(ScaledLora {
            lora,
            scale: scale as f32,
        });
        Ok(())
    }

    /// Starts a file at a diffusers-layout path (`"unet/diffusion_pytorch_model.safetensors"`).
    /// With `digest`, `endFile` returns the file's SHA-256: the bytes are hashed as they pass,
    /// so that a cached copy can be checked without reading it twice. `length`, the file's
    /// size where the caller knows it (`File.size`), bounds what a weight file's header may
    /// claim: a hostile header is refused before anything is reserved for it.
    #[wasm_bindgen(js_name = beginFile)]
    pub fn begin_file(
        &mut self,
        path: String,
        digest: Option<bool>,
        length: Option<f64>,
    ) -> Result<(), JsValue> {
        if let Some((open, _)) = &self.current {
            return Err(invalid(&format!(
                "{path}: cannot start while {open} is still being read"
            )));
        }
        let incoming = if path.ends_with(".safetensors") {
            let mut upload = WeightsUpload::new(&self.device);
            if path == single_file::CHECKPOINT_FILE {
                upload = upload.skipping(single_file::unused);
            }
            let length = length
                .filter(|l| l.is_finite() && *l >= 0.0)
                .map(|l| l as u64);
            upload.begin_file(&path, length).map_err(js_err)?;
            Incoming::Weights(Box::new(upload))
        } else {
            Incoming::Bytes(Vec::new())
        };
        self.current = Some((path, incoming));
        self.digest = digest.unwrap_or(false).then(Sha256::new);
        Ok(())
    }

    /// The next bytes of the current file.
    pub fn push(&mut self, chunk: &[u8]) -> Result<(), JsValue> {
        if let Some(digest) = &mut self.digest {
            digest.update(chunk);
        }
        match &mut self.current {
            None => Err(invalid("push: no file was started (call beginFile)")),
            Some((_, Incoming::Weights(upload))) => upload.push(chunk).map_err(js_err),
            Some((_, Incoming::Bytes(bytes))) => {
                bytes.extend_from_slice(chunk);
                Ok(())
            }
        }
    }

    /// Ends the current file; a truncated weight file fails here, naming it. Returns the
    /// file's SHA-256 in hex when `beginFile` asked for it.
    #[wasm_bindgen(js_name = endFile)]
    pub fn end_file(&mut self) -> Result<Option<String>, JsValue> {
        let digest = self.digest.take().map(|d| {
            d.finalize()
                .iter()
                .map(|byte| format!("{byte:02x}"))
                .collect()
        });
        match self.current.take() {
            None => return Err(invalid("endFile: no file was started")),
            Some((path, Incoming::Weights(mut upload))) => {
                upload.end_file().map_err(js_err)?;
                self.source.insert_uploaded(path, *upload);
            }
            Some((path, Incoming::Bytes(bytes))) => self.source.insert(path, bytes),
        }
        Ok(digest)
    }

    /// What the model whose configs have arrived needs of this loader's device, before any
    /// weight is fetched: `{ weightBytes, nativeSize, largestSide }`, T5's weights counted only
    /// `withT5`. Rejects with "device_limit" a model the adapter cannot run at any size, and
    /// with "missing_file" where a config has not arrived.
    pub fn requirements(
        &self,
        #[wasm_bindgen(js_name = withT5)] with_t5: bool,
    ) -> Result<JsValue, JsValue> {
        let needs = lina_runtime::memory::requirements(&self.source, with_t5, &self.device)
            .map_err(js_err)?;
        let out = Object::new();
        for (key, value) in [
            ("weightBytes", needs.weight_bytes as f64),
            ("nativeSize", needs.native_size as f64),
            ("largestSide", needs.largest_side as f64),
        ] {
            Reflect::set(&out, &key.into(), &value.into())?;
        }
        Ok(out.into())
    }

    /// A whole file at once (a small config, or bytes the page already holds).
    #[wasm_bindgen(js_name = addFile)]
    pub fn add_file(&mut self, path: String, bytes: &[u8]) -> Result<(), JsValue> {
        self.begin_file(path, None, Some(bytes.len() as f64))?;
        self.push(bytes)?;
        self.end_file().map(drop)
    }

    /// Fetches `url` into the file at `path`, streaming the body. Resolves to `false` when the
    /// server has no such file (404), so optional files can be tried; any other failure
    /// rejects. `onProgress(received, total)` follows the download (`total` is undefined
    /// without a Content-Length).
    pub async fn fetch(
        &mut self,
        path: String,
        url: String,
        #[wasm_bindgen(js_name = onProgress)] on_progress: Option<js_sys::Function>,
    ) -> Result<bool, JsValue> {
        let fail = |what: &str, e: JsValue| js_error("network", &format!("{path}: {what}: {e:?}"));
        // `fetch` from the global scope: a page's window or a worker's self.
        let fetch: js_sys::Function = Reflect::get(&js_sys::global(), &JsValue::from_str("fetch"))
            .and_then(|f| f.dyn_into())
            .map_err(|e| fail("no fetch in this context", e))?;
        let response: web_sys::Response = JsFuture::from(
            fetch
                .call1(&JsValue::NULL, &JsValue::from_str(&url))
                .and_then(|p| p.dyn_into::<Promise>())
                .map_err(|e| fail("fetch failed", e))?,
        )
        .await
        .and_then(|r| r.dyn_into())
        .map_err(|e| fail("fetch failed", e))?;
        if response.status() == 404 {
            return Ok(false);
        }
        if !response.ok() {
            return Err(js_error(
                "network",
                &format!("{path}: HTTP {}", response.status()),
            ));
        }
        let header = |name: &str| response.headers().get(name).ok().flatten();
        // A dev server that answers a missing file with its HTML page must not pass as a file.
        if header("content-type").is_some_and(|t| t.contains("text/html")) {
            return Ok(false);
        }
        let total = header("content-length").and_then(|l| l.parse::<f64>().ok());
        // The body's length, where the Content-Length gives it: with a content encoding it
        // counts the compressed bytes instead.
        let length = total.filter(|_| {
            header("content-encoding").is_none_or(|e| e.trim().eq_ignore_ascii_case("identity"))
        });
        let body = response
            .body()
            .ok_or_else(|| invalid(&format!("{path}: the response has no body")))?;
        let reader: web_sys::ReadableStreamDefaultReader = body
            .get_reader()
            .dyn_into()
            .map_err(|e| fail("unreadable body", e.into()))?;
        self.begin_file(path.clone(), None, length)?;
        match self
            .stream_body(&path, &reader, total, on_progress.as_ref())
            .await
        {
            Ok(()) => self.end_file().map(|_| true),
            Err(e) => {
                // Nothing half-read stays behind: the file can be fetched again.
                self.current = None;
                self.digest = None;
                Err(e)
            }
        }
    }
}

impl ModelLoader {
    async fn stream_body(
        &mut self,
        path: &str,
        reader: &web_sys::ReadableStreamDefaultReader,
        total: Option<f64>,
        on_progress: Option<&js_sys::Function>,
    ) -> Result<(), JsValue> {
        let fail = |what: &str, e: JsValue| js_error("network", &format!("{path}: {what}: {e:?}"));
        let mut received = 0.0;
        loop {
            let next = JsFuture::from(reader.read())
                .await
                .map_err(|e| fail("download interrupted", e))?;
            let done = Reflect::get(&next, &JsValue::from_str("done"))
                .map(|d| d.is_truthy())
                .unwrap_or(true);
            if done {
                return Ok(());
            }
            let chunk: Uint8Array = Reflect::get(&next, &JsValue::from_str("value"))
                .and_then(|v| v.dyn_into())
                .map_err(|e| fail("unexpected chunk", e))?;
            received += chunk.length() as f64;
            // Copied into wasm memory one chunk at a time, then uploaded.
            self.push(&chunk.to_vec())?;
            if let Some(f) = on_progress {
                let total = total.map_or(JsValue::UNDEFINED, JsValue::from);
                f.call2(&JsValue::NULL, &JsValue::from(received), &total)
                    .map_err(|e| fail("onProgress threw", e))?;
            }
        }
    }
}
