//! The `Pipeline` class: a loaded model, and everything the page runs on it.

use std::cell::RefCell;
use std::rc::Rc;

use js_sys::{Object, Promise, Reflect};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;

use lina_runtime::bench::UnetCall;
use lina_runtime::models::denoiser::ImageCondition;
use lina_runtime::pipeline::{
    CancelToken, GenerateOptions, Hooks, Sampling, StableDiffusion, StepFuture, StepHook,
};

use crate::convert::{
    csg_from_js, image_from_js, image_object, source_from_files, to_js, token_maps_object,
};
use crate::device::device_from_options;
use crate::loader::ModelLoader;
use crate::options::{Inputs, lina_inputs};
use crate::{invalid, js_err};

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
        let source = source_from_files(&files)?;
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

    /// The blocks skip-layer guidance may skip (an SD 3 transformer's joint blocks, numbered
    /// from 0), or none for models that have no such blocks.
    #[wasm_bindgen(js_name = skippableBlocks)]
    pub fn skippable_blocks(&self) -> Option<usize> {
        self.inner.denoiser().mmdit().map(|m| m.blocks())
    }

    /// What the model takes beside its prompt, by its input channels: "none"; "inpaint" (SD's
    /// 9-channel inpainting UNets) or "fill" (FLUX.1 Fill), which need `initImage` and
    /// `mask`; "control" (FLUX.1 Canny and Depth), which needs `controlImage`.
    #[wasm_bindgen(js_name = imageCondition)]
    pub fn image_condition(&self) -> String {
        match self.inner.image_condition() {
            ImageCondition::None => "none",
            ImageCondition::Inpaint => "inpaint",
            ImageCondition::Fill => "fill",
            ImageCondition::Control => "control",
        }
        .into()
    }

    /// Whether `guidanceRescale` may be given: UNet models
    /// (`StableDiffusion::takes_guidance_rescale`).
    #[wasm_bindgen(js_name = takesGuidanceRescale)]
    pub fn takes_guidance_rescale(&self) -> bool {
        self.inner.takes_guidance_rescale()
    }

    /// Whether `referenceImage` may be given (FLUX.1 Kontext's input): FLUX models that
    /// take the latents alone.
    #[wasm_bindgen(js_name = takesReferenceImage)]
    pub fn takes_reference_image(&self) -> bool {
        self.inner.takes_reference_image()
    }

    /// Loads a ControlNet (diffusers' `ControlNetModel`, or an original ControlNet's file)
    /// beside the UNet from `files`, an object mapping its folder's paths (`"config.json"`,
    /// `"diffusion_pytorch_model.safetensors"`) to `Uint8Array`s, replacing any loaded
    /// before; every generation after needs its input in `controlnets`. One that does not fit
    /// the model is refused, and those loaded before stay.
    #[wasm_bindgen(js_name = loadControlNet)]
    pub fn load_controlnet(&mut self, files: Object) -> Result<(), JsValue> {
        let source = source_from_files(&files)?;
        self.inner.load_controlnet(&source, "").map_err(js_err)
    }

    /// Loads one more ControlNet beside those loaded, as `loadControlNet` reads one (their
    /// additions summed).
    #[wasm_bindgen(js_name = addControlNet)]
    pub fn add_controlnet(&mut self, files: Object) -> Result<(), JsValue> {
        let source = source_from_files(&files)?;
        self.inner.add_controlnet(&source, "").map_err(js_err)
    }

    /// Drops the loaded ControlNets.
    #[wasm_bindgen(js_name = removeControlNets)]
    pub fn remove_controlnets(&mut self) {
        self.inner.remove_controlnets();
    }

    /// How many ControlNets are loaded (and so how many inputs `controlnets` needs).
    #[wasm_bindgen(js_name = controlNetCount)]
    pub fn controlnet_count(&self) -> usize {
        self.inner.controlnets().len()
    }

    /// Loads a T2I-Adapter (diffusers' `T2IAdapter`, full type) beside the UNet from `files`
    /// (its folder's `"config.json"` and weights), replacing any loaded before; every
    /// generation after needs `t2iAdapter`. One that does not fit the model is refused.
    #[wasm_bindgen(js_name = loadT2IAdapter)]
    pub fn load_t2i_adapter(&mut self, files: Object) -> Result<(), JsValue> {
        let source = source_from_files(&files)?;
        self.inner.load_t2i_adapter(&source, "").map_err(js_err)
    }

    /// Drops the loaded T2I-Adapter, if any.
    #[wasm_bindgen(js_name = removeT2IAdapter)]
    pub fn remove_t2i_adapter(&mut self) {
        self.inner.remove_t2i_adapter();
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

    /// Sets how many tokens T5's text is padded or cut to (diffusers' `max_sequence_length`)
    /// for every run after (`StableDiffusion::set_max_sequence_length`): SD 3 and FLUX, 1 to
    /// 512; anything else is refused and changes nothing.
    #[wasm_bindgen(js_name = setMaxSequenceLength)]
    pub fn set_max_sequence_length(&mut self, tokens: u32) -> Result<(), JsValue> {
        self.inner
            .set_max_sequence_length(tokens as usize)
            .map_err(js_err)
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
