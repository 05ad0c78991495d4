//! Browser tests (wasm32, headless Chromium with WebGPU): the tiny pipeline through the wasm
//! API gives diffusers' image, as natively; the embedded default model gives its reference
//! image; bad files become JS errors with a message.
//! Run with `scripts/test.sh` (or `wasm-pack test --headless --chrome --release`).
#![cfg(target_arch = "wasm32")]

use js_sys::{Object, Reflect, Uint8Array};
use safetensors::SafeTensors;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_test::*;

use lina_web::{ModelLoader, Pipeline};

// In a dedicated worker, as the page will run the model: long GPU work there never blocks
// the main thread that the test driver polls.
wasm_bindgen_test_configure!(run_in_dedicated_worker);

macro_rules! model_files {
    ($($path:literal),* $(,)?) => {
        &[$(($path, include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/sd1_tiny/", $path)) as &[u8])),*]
    };
}

macro_rules! default_file {
    ($path:literal) => {
        (
            $path,
            include_bytes!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../www/models/default/",
                $path
            )) as &[u8],
        )
    };
}

const FILES: &[(&str, &[u8])] = model_files![
    "scheduler/scheduler_config.json",
    "text_encoder/config.json",
    "text_encoder/model.safetensors",
    "tokenizer/tokenizer.json",
    "tokenizer/tokenizer_config.json",
    "unet/config.json",
    "unet/diffusion_pytorch_model.safetensors",
    "vae/config.json",
    "vae/diffusion_pytorch_model.safetensors",
];

/// The page's embedded default model, as the page loads it (www/models/default).
const DEFAULT_MODEL: &[(&str, &[u8])] = &[
    default_file!("scheduler/scheduler_config.json"),
    default_file!("text_encoder/config.json"),
    default_file!("text_encoder/model.safetensors"),
    default_file!("tokenizer/vocab.json"),
    default_file!("tokenizer/merges.txt"),
    default_file!("tokenizer/tokenizer_config.json"),
    default_file!("unet/config.json"),
    default_file!("unet/diffusion_pytorch_model.safetensors"),
    default_file!("vae/config.json"),
    default_file!("vae/diffusion_pytorch_model.safetensors"),
];

macro_rules! sd3_files {
    ($($path:literal),* $(,)?) => {
        &[$(($path, include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/sd3_tiny/", $path)) as &[u8])),*]
    };
}

/// The tiny SD 3 model (tests/fixtures/sd3_tiny), T5 included.
const SD3_FILES: &[(&str, &[u8])] = sd3_files![
    "model_index.json",
    "scheduler/scheduler_config.json",
    "text_encoder/config.json",
    "text_encoder/model.safetensors",
    "text_encoder_2/config.json",
    "text_encoder_2/model.safetensors",
    "text_encoder_3/config.json",
    "text_encoder_3/model.safetensors",
    "tokenizer/tokenizer.json",
    "tokenizer/tokenizer_config.json",
    "tokenizer_2/vocab.json",
    "tokenizer_2/merges.txt",
    "tokenizer_2/tokenizer_config.json",
    "tokenizer_3/tokenizer.json",
    "tokenizer_3/tokenizer_config.json",
    "transformer/config.json",
    "transformer/diffusion_pytorch_model.safetensors",
    "vae/config.json",
    "vae/diffusion_pytorch_model.safetensors",
];

const SD3_REFERENCE: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/fixtures/sd3_tiny/reference.safetensors"
));

const DEFAULT_REFERENCE: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/fixtures/default_model/reference.png"
));
/// The default model's image under a LINA plan, drawn by the native CPU backend
/// (tests/default_model.rs, `a_lina_plan_reproduces_its_reference_image`, has the plan).
const LINA_REFERENCE: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/fixtures/default_model/reference_lina.png"
));
/// The same prompt's image under the collage in the mirrored frame, at half the guidance
/// scale (tests/default_model.rs, `COLLAGE_PLAN`).
const COLLAGE_REFERENCE: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/fixtures/default_model/reference_collage.png"
));
const COLLAGE_PLAN: &str = r#"{"mirror":true,"collage":0.1,"guidance":0.5}"#;
const LINA_PROMPT: &str = "a purple cube and a green ball with a lamp on the right";
const LINA_PLAN: &str = r#"{"mirror":true,"promptStrength":0.5,"attentionStrength":0.5,"attentionWindow":[0,0.5],"nodeWeight":0.5,"regionWindow":[0,0.3],"energyStrength":0.25,"energyWindow":[0,0.3],"warp":1.2}"#;

const REFERENCE: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/fixtures/sd1_tiny/reference.safetensors"
));

/// A reference file's f32 tensor.
fn reference_f32_of(file: &[u8], name: &str) -> Vec<f32> {
    let st = SafeTensors::deserialize(file).unwrap();
    st.tensor(name)
        .unwrap()
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

fn files(edit: impl Fn(&str, &[u8]) -> Vec<u8>) -> Object {
    files_of(FILES, edit)
}

fn files_of(model: &[(&str, &[u8])], edit: impl Fn(&str, &[u8]) -> Vec<u8>) -> Object {
    let obj = Object::new();
    for (path, bytes) in model {
        let data = Uint8Array::from(edit(path, bytes).as_slice());
        Reflect::set(&obj, &JsValue::from_str(path), &data).unwrap();
    }
    obj
}

/// Generation options with a prompt and a step count.
fn prompt_options(prompt: &str, steps: u32) -> JsValue {
    let options = Object::new();
    Reflect::set(&options, &"prompt".into(), &prompt.into()).unwrap();
    Reflect::set(&options, &"steps".into(), &steps.into()).unwrap();
    options.into()
}

/// The tiny SD1-like model, computing in f32.
async fn tiny_pipeline() -> Pipeline {
    Pipeline::load(files(|_, b| b.to_vec()), f32_device())
        .await
        .map_err(message)
        .unwrap()
}

/// Device options asking for f32: the reference images were drawn in f32.
fn f32_device() -> JsValue {
    device_options("f32")
}

fn device_options(precision: &str) -> JsValue {
    let options = Object::new();
    Reflect::set(&options, &"precision".into(), &precision.into()).unwrap();
    options.into()
}

fn message(err: JsValue) -> String {
    err.dyn_into::<js_sys::Error>().unwrap().message().into()
}

/// The stable code every error of the browser API carries.
fn code(err: &JsValue) -> String {
    Reflect::get(err, &"code".into())
        .unwrap()
        .as_string()
        .expect("every error has a string code")
}

#[wasm_bindgen_test]
async fn tiny_pipeline_in_the_browser_matches_diffusers() {
    let worst =
        worst_against_diffusers(FILES, REFERENCE, ("pipe_init_latents", "pipe_image"), None).await;
    assert!(worst <= 2.0, "worst pixel off by {worst}/255");
}

/// SD 3 on the page's GPU path (SwiftShader's WebGPU here): the MMDiT with T5, flow-matching
/// Euler, the 16-channel VAE, from diffusers' initial latents to within 1/255 of its image.
#[wasm_bindgen_test]
async fn tiny_sd3_in_the_browser_matches_diffusers() {
    let worst =
        worst_against_diffusers(SD3_FILES, SD3_REFERENCE, ("latents", "image"), Some(32)).await;
    assert!(worst <= 1.0, "worst pixel off by {worst}/255");
}

/// How far, in 1/255, the model of `files` draws from diffusers' image (the reference's
/// `image` key) on its initial latents (`latents`), with the reference prompts, 10 steps at
/// guidance 7.5, in f32, at `side` pixels square (the model's own size without).
async fn worst_against_diffusers(
    files: &[(&str, &[u8])],
    reference: &[u8],
    (latents, image): (&str, &str),
    side: Option<u32>,
) -> f32 {
    let pipe = Pipeline::load(files_of(files, |_, b| b.to_vec()), f32_device())
        .await
        .map_err(message)
        .unwrap();
    let options = Object::new();
    let set = |k: &str, v: JsValue| Reflect::set(&options, &JsValue::from_str(k), &v).unwrap();
    set("prompt", "a red ball on a small mirror".into());
    set("negativePrompt", "blurry".into());
    set("steps", 10.into());
    set("guidanceScale", 7.5.into());
    if let Some(side) = side {
        set("width", side.into());
        set("height", side.into());
    }
    let latents: js_sys::Array = reference_f32_of(reference, latents)
        .into_iter()
        .map(JsValue::from)
        .collect();
    set("initialLatents", latents.into());
    let result = pipe
        .generate(options.into(), None)
        .await
        .map_err(message)
        .unwrap();
    rgb_of(&result)
        .into_iter()
        .zip(reference_f32_of(reference, image))
        .map(|(ours, theirs)| (ours as f32 - theirs * 255.0).abs())
        .fold(0.0, f32::max)
}

fn rgb_of(result: &JsValue) -> Vec<u8> {
    let rgba = Reflect::get(result, &"rgba".into())
        .unwrap()
        .dyn_into::<js_sys::Uint8ClampedArray>()
        .unwrap()
        .to_vec();
    rgba.chunks_exact(4)
        .flat_map(|p| [p[0], p[1], p[2]])
        .collect()
}

/// The same settings as tests/default_model.rs, whose CPU output the reference image is.
#[wasm_bindgen_test]
async fn the_embedded_default_model_draws_its_reference_image() {
    let worst = reference_image_error(f32_device()).await;
    assert!(worst <= 4, "worst pixel off by {worst}/255");
}

/// The CPU backend compiled into the module (the worker's choice on a software adapter such
/// as SwiftShader) draws what the same backend draws natively; it computes in f32 only.
#[wasm_bindgen_test]
async fn the_cpu_backend_draws_the_native_reference_image() {
    let worst = reference_image_error(backend_options("cpu", "auto")).await;
    assert!(worst <= 2, "worst pixel off by {worst}/255");
    for (options, expected) in [
        (
            backend_options("cpu", "f16"),
            "the CPU backend computes in f32",
        ),
        (backend_options("tpu", "auto"), "backend must be"),
    ] {
        let err = Pipeline::load(files(|_, b| b.to_vec()), options)
            .await
            .err()
            .map(message)
            .expect("refused");
        assert!(err.contains(expected), "{err}");
    }
}

fn backend_options(backend: &str, precision: &str) -> JsValue {
    let options = device_options(precision);
    Reflect::set(&options, &"backend".into(), &backend.into()).unwrap();
    options
}

/// The default model's worst pixel error against its reference image (tests/default_model.rs's
/// settings), on the device `options` ask for.
async fn reference_image_error(device: JsValue) -> u8 {
    default_model_error(device, "a red ball on a table", None, DEFAULT_REFERENCE).await
}

/// The default model's worst pixel error against `reference` (a PNG) for `prompt` under
/// `plan` (JSON), seed 0, 20 steps, guidance 3: the settings the native references were
/// drawn with (tests/default_model.rs), on the device `options` ask for.
async fn default_model_error(
    device: JsValue,
    prompt: &str,
    plan: Option<&str>,
    reference: &[u8],
) -> u8 {
    let pipe = Pipeline::load(files_of(DEFAULT_MODEL, |_, b| b.to_vec()), device)
        .await
        .map_err(message)
        .unwrap();
    let options = Object::new();
    let set = |k: &str, v: JsValue| Reflect::set(&options, &JsValue::from_str(k), &v).unwrap();
    set("prompt", prompt.into());
    set("seed", 0.into());
    set("steps", 20.into());
    set("guidanceScale", 3.0.into());
    if let Some(plan) = plan {
        set("plan", js_sys::JSON::parse(plan).unwrap());
    }
    let result = pipe
        .generate(options.into(), None)
        .await
        .map_err(message)
        .unwrap();

    let expected = lina_runtime::image::Image::from_png(reference).unwrap().rgb;
    let ours = rgb_of(&result);
    assert_eq!(ours.len(), expected.len());
    ours.iter()
        .zip(&expected)
        .map(|(a, b)| a.abs_diff(*b))
        .max()
        .unwrap()
}

/// LINA in the browser: a plan in the options runs the interventions and reports them.
#[wasm_bindgen_test]
async fn a_plan_runs_lina_in_the_browser() {
    let pipe = Pipeline::load(files_of(DEFAULT_MODEL, |_, b| b.to_vec()), f32_device())
        .await
        .map_err(message)
        .unwrap();
    let set = |o: &Object, k: &str, v: JsValue| Reflect::set(o, &JsValue::from_str(k), &v).unwrap();
    // What a generation under `plan` (a list of fields) reports it did.
    let interventions = async |prompt: &str, fields: &[(&str, f64)]| -> Vec<String> {
        let options = Object::new();
        set(&options, "prompt", prompt.into());
        set(&options, "steps", 8.into());
        let plan = Object::new();
        for &(field, value) in fields {
            set(&plan, field, value.into());
        }
        set(&options, "plan", plan.into());
        let result = pipe
            .generate(options.into(), None)
            .await
            .map_err(message)
            .unwrap();
        let done: js_sys::Array = Reflect::get(&result, &"interventions".into())
            .unwrap()
            .dyn_into()
            .unwrap();
        done.iter().filter_map(|v| v.as_string()).collect()
    };
    let text = interventions(
        "a red ball on a small mirror",
        &[("promptStrength", 1.0), ("warp", 1.5)],
    )
    .await;
    assert!(
        text.iter().any(|t| t.contains("schedule warp 1.5")),
        "{text:?}"
    );
    assert!(
        text.iter().any(|t| t.contains("prompt guidance")),
        "{text:?}"
    );

    // The collage draws each thing alone before the stepped run, and says what it drew.
    let text = interventions("a red ball to the left of a blue cube", &[("collage", 0.5)]).await;
    assert!(
        text.iter()
            .any(|t| t.starts_with(r#"collage of ["a red ball", "a blue cube"]"#)),
        "{text:?}"
    );

    // A misspelt plan field is a JS error naming it.
    let bad = Object::new();
    set(&bad, "prompt", "a red ball".into());
    let plan = Object::new();
    set(&plan, "promptStrenght", 1.0.into());
    set(&bad, "plan", plan.into());
    let Err(err) = pipe.generate(bad.into(), None).await else {
        panic!("a misspelt plan field was accepted");
    };
    assert_eq!(code(&err), "invalid_input");
    let err = message(err);
    assert!(err.contains("promptStrenght"), "{err}");
}

/// The same LINA plans draw the same images in the browser as natively, on the CPU backend
/// compiled into the module and on WebGPU: the mirrored frame, prompt guidance,
/// region-controlled attention, region terms, the attention-energy update and the warped
/// schedule in one plan; the collage (drawn before the stepped run) and half the guidance
/// scale in the other.
#[wasm_bindgen_test]
async fn a_lina_plan_draws_the_native_image() {
    for (backend, device) in [
        ("cpu", backend_options("cpu", "auto")),
        ("webgpu", f32_device()),
    ] {
        for (plan, reference) in [
            (LINA_PLAN, LINA_REFERENCE),
            (COLLAGE_PLAN, COLLAGE_REFERENCE),
        ] {
            let worst =
                default_model_error(device.clone(), LINA_PROMPT, Some(plan), reference).await;
            web_sys::console::log_1(&format!("{backend} {plan}: worst pixel {worst}/255").into());
            assert!(
                worst <= 2,
                "{backend} {plan}: worst pixel off by {worst}/255"
            );
        }
    }
}

/// A `blob:` URL holding `bytes`: fetching it gives a streamed body, as from a server.
fn blob_url(bytes: &[u8]) -> String {
    let parts = js_sys::Array::of1(&Uint8Array::from(bytes));
    let blob = web_sys::Blob::new_with_u8_array_sequence(&parts).unwrap();
    web_sys::Url::create_object_url_with_blob(&blob).unwrap()
}

/// Streams `model` into a loader through fetch; returns the bytes each file's progress
/// callback last reported.
async fn fetch_into(
    loader: &mut ModelLoader,
    model: &[(&str, Vec<u8>)],
) -> Result<Vec<f64>, String> {
    let mut reported = Vec::new();
    for (path, bytes) in model {
        let last = std::rc::Rc::new(std::cell::Cell::new(0.0));
        let seen = last.clone();
        let progress = wasm_bindgen::closure::Closure::<dyn Fn(f64, JsValue)>::new(
            move |received: f64, _total: JsValue| seen.set(received),
        );
        let found = loader
            .fetch(
                path.to_string(),
                blob_url(bytes),
                Some(
                    progress
                        .as_ref()
                        .unchecked_ref::<js_sys::Function>()
                        .clone(),
                ),
            )
            .await
            .map_err(message)?;
        assert!(found, "{path}");
        reported.push(last.get());
    }
    Ok(reported)
}

#[wasm_bindgen_test]
async fn a_model_streams_in_through_fetch_and_draws_the_same_image() {
    let model: Vec<(&str, Vec<u8>)> = FILES.iter().map(|(p, b)| (*p, b.to_vec())).collect();
    let mut loader = ModelLoader::create(f32_device())
        .await
        .map_err(message)
        .unwrap();
    let reported = fetch_into(&mut loader, &model).await.unwrap();
    for ((path, bytes), got) in model.iter().zip(&reported) {
        assert_eq!(*got as usize, bytes.len(), "progress of {path}");
    }
    let streamed = Pipeline::from_loader(loader).map_err(message).unwrap();
    let whole = Pipeline::load(files(|_, b| b.to_vec()), f32_device())
        .await
        .map_err(message)
        .unwrap();
    let options = || {
        let options = Object::new();
        let set = |k: &str, v: JsValue| Reflect::set(&options, &JsValue::from_str(k), &v).unwrap();
        set("prompt", "a red ball on a small mirror".into());
        set("steps", 3.into());
        set("seed", 5.into());
        JsValue::from(options)
    };
    let a = streamed
        .generate(options(), None)
        .await
        .map_err(message)
        .unwrap();
    let b = whole
        .generate(options(), None)
        .await
        .map_err(message)
        .unwrap();
    assert_eq!(rgb_of(&a), rgb_of(&b));
}

#[wasm_bindgen_test]
async fn a_truncated_download_is_a_js_error_naming_the_file() {
    let model: Vec<(&str, Vec<u8>)> = FILES
        .iter()
        .map(|(p, b)| {
            let keep = if p.starts_with("unet/diffusion") {
                b.len() / 2
            } else {
                b.len()
            };
            (*p, b[..keep].to_vec())
        })
        .collect();
    let mut loader = ModelLoader::create(f32_device())
        .await
        .map_err(message)
        .unwrap();
    let err = fetch_into(&mut loader, &model).await.expect_err("refused");
    assert!(
        err.contains("unet/diffusion_pytorch_model.safetensors") && err.contains("truncated"),
        "{err}"
    );
}

#[wasm_bindgen_test]
async fn a_truncated_weight_file_is_a_js_error_naming_it() {
    let broken = files(|path, b| {
        if path.starts_with("unet/diffusion") {
            b[..b.len() / 3].to_vec()
        } else {
            b.to_vec()
        }
    });
    let err = Pipeline::load(broken, f32_device())
        .await
        .err()
        .map(message)
        .expect("refused");
    assert!(
        err.contains("unet/diffusion_pytorch_model.safetensors"),
        "{err}"
    );
}

#[wasm_bindgen_test]
async fn bad_options_are_js_errors() {
    let pipe = Pipeline::load(files(|_, b| b.to_vec()), f32_device())
        .await
        .map_err(message)
        .unwrap();
    let options = Object::new();
    Reflect::set(&options, &"prompt".into(), &"".into()).unwrap();
    let err = pipe
        .generate(options.into(), None)
        .await
        .err()
        .map(message)
        .expect("refused");
    assert!(err.contains("prompt is empty"), "{err}");
}

#[wasm_bindgen_test]
fn seeded_noise_is_the_same_as_natively() {
    // The same values are asserted natively in src/rng.rs.
    assert_eq!(
        lina_runtime::rng::Rng::new(42).normals(4),
        lina_runtime::rng::GOLDEN_SEED_42.to_vec()
    );
}

/// An image as the wasm API takes it: `{ width, height, rgba }`.
fn image_js(image: &lina_runtime::image::Image) -> JsValue {
    let obj = Object::new();
    Reflect::set(&obj, &"width".into(), &(image.width as u32).into()).unwrap();
    Reflect::set(&obj, &"height".into(), &(image.height as u32).into()).unwrap();
    let rgba = js_sys::Uint8ClampedArray::from(image.to_rgba().as_slice());
    Reflect::set(&obj, &"rgba".into(), &rgba).unwrap();
    obj.into()
}

fn passed(verdicts: &JsValue) -> (usize, usize) {
    let list: js_sys::Array = verdicts.clone().dyn_into().unwrap();
    let ok = list
        .iter()
        .filter(|v| Reflect::get(v, &"passed".into()).unwrap().is_truthy())
        .count();
    (ok, list.length() as usize)
}

#[wasm_bindgen_test]
async fn the_checker_and_the_diagnostics_run_in_the_browser() {
    use lina_probe::{Category, SceneId, Split};
    // A rendered mirror scene passes its own checks; its broken twin does not.
    let id = SceneId {
        split: Split::Test,
        category: Category::Reflection,
        index: 3,
    };
    let csg = |s: &lina_probe::Scene| {
        js_sys::JSON::parse(&serde_json::to_string(&s.csg).unwrap()).unwrap()
    };
    let (good, bad) = (id.scene(), id.broken_scene());
    let verdicts = Pipeline::check_image(image_js(&good.render().image), csg(&good))
        .map_err(message)
        .unwrap();
    let (ok, all) = passed(&verdicts);
    assert!(all > 0 && ok == all, "{ok}/{all}");
    let verdicts = Pipeline::check_image(image_js(&bad.render().image), csg(&bad))
        .map_err(message)
        .unwrap();
    let (ok, all) = passed(&verdicts);
    assert!(ok < all, "the broken render passed {ok}/{all}");

    // A step sweep has a point per step; re-inpainting a node gives an image and verdicts.
    let pipe = Pipeline::load(files(|_, b| b.to_vec()), f32_device())
        .await
        .map_err(message)
        .unwrap();
    // The tiny random model draws nothing the checker can find, so the graph brings its
    // own layout: boxes for the ball and the mirror below it.
    let prompt = "a red ball on a small mirror";
    let mut graph = lina_csg::parse::parse(prompt).unwrap();
    for (id, b) in [
        ("object", [0.4, 0.45, 0.6, 0.72]),
        ("surface", [0.42, 0.72, 0.58, 0.8]),
    ] {
        graph.nodes.iter_mut().find(|n| n.id == id).unwrap().layout = Some(b);
    }
    let graph = js_sys::JSON::parse(&serde_json::to_string(&graph).unwrap()).unwrap();
    let options = || {
        let o = Object::new();
        Reflect::set(&o, &"prompt".into(), &prompt.into()).unwrap();
        Reflect::set(&o, &"steps".into(), &3.into()).unwrap();
        Reflect::set(&o, &"csg".into(), &graph).unwrap();
        JsValue::from(o)
    };
    let sweep = pipe.sweep(options()).await.map_err(message).unwrap();
    let points: js_sys::Array = Reflect::get(&sweep, &"points".into())
        .unwrap()
        .dyn_into()
        .unwrap();
    assert_eq!(points.length(), 3);
    assert!(
        Reflect::get(&sweep, &"baselinePassed".into())
            .unwrap()
            .as_f64()
            .is_some()
    );
    let drawn = pipe
        .generate(options(), None)
        .await
        .map_err(message)
        .unwrap();
    let again = pipe
        .reinpaint(options(), drawn.clone().into(), "object".into(), 0.6)
        .await
        .map_err(message)
        .unwrap();
    assert_eq!(rgb_of(&again).len(), 64 * 64 * 3);
    let (_, before) = passed(&Reflect::get(&again, &"before".into()).unwrap());
    assert!(before > 0);
    let err = pipe
        .reinpaint(options(), drawn.into(), "unicorn".into(), 0.6)
        .await
        .err()
        .map(message)
        .expect("an unknown node is refused");
    assert!(err.contains("unicorn"), "{err}");
}

/// By default the device computes in f16 where the adapter has shader-f16, and the image
/// stays close to f32's; f16 on an adapter without it, and unknown options, are errors.
#[wasm_bindgen_test]
async fn precision_is_chosen_from_the_adapter_and_can_be_overridden() {
    let reference = tiny_pipeline().await;
    let auto = Pipeline::load(files(|_, b| b.to_vec()), JsValue::UNDEFINED)
        .await
        .map_err(message)
        .unwrap();
    let info = |pipe: &Pipeline| {
        let info = pipe.device_info().map_err(message).unwrap();
        let get = |k: &str| Reflect::get(&info, &k.into()).unwrap();
        (
            get("precision").as_string().unwrap(),
            get("shaderF16").as_bool().unwrap(),
        )
    };
    let (precision, shader_f16) = info(&auto);
    web_sys::console::log_1(
        &format!("auto precision: {precision} (shader-f16: {shader_f16})").into(),
    );
    assert_eq!(info(&reference).0, "f32");
    assert_eq!(precision, if shader_f16 { "f16" } else { "f32" });

    let options = || prompt_options("a red ball on a small mirror", 4);
    let a = rgb_of(
        &reference
            .generate(options(), None)
            .await
            .map_err(message)
            .unwrap(),
    );
    let b = rgb_of(
        &auto
            .generate(options(), None)
            .await
            .map_err(message)
            .unwrap(),
    );
    let worst = a.iter().zip(&b).map(|(x, y)| x.abs_diff(*y)).max().unwrap();
    assert!(worst <= 4, "{precision} is off f32 by {worst}/255");

    let forced = Pipeline::load(files(|_, b| b.to_vec()), device_options("f16")).await;
    match (shader_f16, forced) {
        (true, Ok(pipe)) => assert_eq!(info(&pipe).0, "f16"),
        (false, Err(e)) => {
            let e = message(e);
            assert!(e.contains("shader-f16"), "{e}");
        }
        (_, Err(e)) => panic!("f16 refused on an adapter with shader-f16: {}", message(e)),
        (_, Ok(_)) => panic!("f16 accepted on an adapter without shader-f16"),
    }
    let e = Pipeline::load(files(|_, b| b.to_vec()), device_options("f64"))
        .await
        .err()
        .map(message)
        .expect("refused");
    assert!(e.contains("precision must be"), "{e}");
}

/// The size of the default WebGPU adapter's subgroups, where it has the `subgroups` feature
/// and all its subgroups are that size, a power of two of 4 to 64 (as the lanes kernels need).
async fn adapter_subgroup_size() -> Option<f64> {
    let gpu = Reflect::get(&js_sys::global(), &"navigator".into())
        .and_then(|navigator| Reflect::get(&navigator, &"gpu".into()))
        .unwrap();
    let request: js_sys::Function = Reflect::get(&gpu, &"requestAdapter".into())
        .unwrap()
        .dyn_into()
        .unwrap();
    let adapter =
        wasm_bindgen_futures::JsFuture::from(js_sys::Promise::from(request.call0(&gpu).unwrap()))
            .await
            .unwrap();
    let features = Reflect::get(&adapter, &"features".into()).unwrap();
    let has: js_sys::Function = Reflect::get(&features, &"has".into())
        .unwrap()
        .dyn_into()
        .unwrap();
    if !has
        .call1(&features, &"subgroups".into())
        .unwrap()
        .is_truthy()
    {
        return None;
    }
    let info = Reflect::get(&adapter, &"info".into()).unwrap();
    let size = |key: &str| Reflect::get(&info, &key.into()).unwrap().as_f64();
    let min = size("subgroupMinSize")?;
    (size("subgroupMaxSize") == Some(min)
        && (4.0..=64.0).contains(&min)
        && (min as u32).is_power_of_two())
    .then_some(min)
}

/// The fused WGSL kernels (shaders/), which every WebGPU test here runs on by default, pass
/// Chromium's shader compiler and draw what burn's own kernels draw; `kernels` takes only
/// "fused" or "burn".
#[wasm_bindgen_test]
async fn fused_kernels_draw_what_burns_kernels_draw() {
    let load = |kernels: &str| {
        let options = Object::new();
        Reflect::set(&options, &"precision".into(), &"f32".into()).unwrap();
        Reflect::set(&options, &"kernels".into(), &kernels.into()).unwrap();
        Pipeline::load(files(|_, b| b.to_vec()), options.into())
    };
    let draw = |pipe: Pipeline| async move {
        rgb_of(
            &pipe
                .generate(prompt_options("a red ball on a small mirror", 4), None)
                .await
                .map_err(message)
                .unwrap(),
        )
    };
    let burn = draw(load("burn").await.map_err(message).unwrap()).await;
    // Loading with "fused" turns them back on for the tests after this one, too.
    let pipe = load("fused").await.map_err(message).unwrap();
    // Where the adapter has subgroups of one size (SwiftShader: 4), the device is opened with
    // them and the lanes kernels (shaders/*_lanes.wgsl) draw this image.
    let info = pipe.device_info().unwrap();
    let lanes = Reflect::get(&info, &"subgroupLanes".into())
        .unwrap()
        .as_f64();
    assert_eq!(lanes, adapter_subgroup_size().await, "{info:?}");
    let fused = draw(pipe).await;
    let worst = burn
        .iter()
        .zip(&fused)
        .map(|(x, y)| x.abs_diff(*y))
        .max()
        .unwrap();
    assert!(
        worst <= 2,
        "the fused kernels' image is off burn's by {worst}/255"
    );
    let e = load("cubecl").await.err().map(message).expect("refused");
    assert!(e.contains("kernels must be"), "{e}");
}

/// A lost device (destroyed through the test hook, as a driver reset would) is an error from
/// the next generation, and loading the model again recovers without reloading the page.
#[wasm_bindgen_test]
async fn a_lost_device_is_an_error_and_loading_again_recovers() {
    let options = || prompt_options("a red ball on a small mirror", 2);
    let pipe = tiny_pipeline().await;
    let expected = rgb_of(
        &pipe
            .generate(options(), None)
            .await
            .map_err(message)
            .unwrap(),
    );
    pipe.lose_device_for_testing().map_err(message).unwrap();
    let e = pipe
        .generate(options(), None)
        .await
        .err()
        .map(message)
        .expect("a lost device fails");
    assert!(
        e.contains("lost") && e.contains("load the model again"),
        "{e}"
    );

    let again = tiny_pipeline().await;
    let image = rgb_of(
        &again
            .generate(options(), None)
            .await
            .map_err(message)
            .unwrap(),
    );
    assert_eq!(image, expected);
}

/// The helpers the page's scene-graph editor and schedule plot use.
#[wasm_bindgen_test]
async fn scene_graph_and_schedule_helpers() {
    let get = |o: &JsValue, k: &str| Reflect::get(o, &k.into()).unwrap();
    let csg = Pipeline::parse_prompt("a red ball on a small mirror")
        .map_err(message)
        .unwrap();
    let nodes = js_sys::Array::from(&get(&csg, "nodes"));
    let implied: Vec<String> = nodes
        .iter()
        .filter(|n| get(n, "implied").as_bool() == Some(true))
        .map(|n| get(&n, "class").as_string().unwrap())
        .collect();
    assert_eq!(implied, ["reflection"]);
    // The parsed graph is valid as it is; with a relation to an unknown node it is not.
    Pipeline::validate_csg(csg.clone())
        .map_err(message)
        .unwrap();
    let relation = Object::new();
    Reflect::set(&relation, &"subject".into(), &"object".into()).unwrap();
    Reflect::set(&relation, &"predicate".into(), &"on".into()).unwrap();
    Reflect::set(&relation, &"object".into(), &"table".into()).unwrap();
    // (`Array::from` would copy the array.)
    get(&csg, "relations")
        .unchecked_into::<js_sys::Array>()
        .push(&relation);
    let e = Pipeline::validate_csg(csg)
        .err()
        .map(message)
        .expect("refused");
    assert!(e.contains("unknown node \"table\""), "{e}");

    let plan = Pipeline::lina_plan().map_err(message).unwrap();
    assert_eq!(get(&plan, "warp").as_f64(), Some(1.0));
    assert_eq!(get(&plan, "promptStrength").as_f64(), Some(0.5));
    // The verifier-guided repairs are the probe's baseline, not a field of LINA's plan.
    assert!(get(&plan, "repairStrength").is_undefined());
    let pipe = tiny_pipeline().await;
    let options = Object::new();
    Reflect::set(&options, &"prompt".into(), &"a red ball".into()).unwrap();
    Reflect::set(&options, &"steps".into(), &10.into()).unwrap();
    Reflect::set(&options, &"plan".into(), &plan).unwrap();
    let steps = pipe
        .timesteps(options.clone().into())
        .map_err(message)
        .unwrap();
    let list = |k: &str| -> Vec<f64> {
        js_sys::Array::from(&get(&steps, k))
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect()
    };
    let (plain, planned) = (list("plain"), list("planned"));
    assert_eq!((plain.len(), planned.len()), (10, 10));
    assert!(plain.windows(2).all(|w| w[0] > w[1]), "{plain:?}");
    // The default plan has no warp: its schedule is the plain one.
    assert_eq!(planned, plain);

    // A warp spends more of the run at high noise: the middle step is noisier.
    Reflect::set(&plan, &"warp".into(), &1.5.into()).unwrap();
    Reflect::set(&options, &"plan".into(), &plan).unwrap();
    let steps = pipe.timesteps(options.into()).map_err(message).unwrap();
    let warped: Vec<f64> = js_sys::Array::from(&get(&steps, "planned"))
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert!(warped[5] > plain[5], "{plain:?} {warped:?}");
}

/// The page's cache check: a file's SHA-256 computed as its chunks pass into the loader, and
/// the memory figures the soak script watches.
#[wasm_bindgen_test]
async fn the_loader_hashes_files_as_they_stream_and_a_pipeline_reports_its_memory() {
    let mut loader = ModelLoader::create(f32_device())
        .await
        .map_err(message)
        .unwrap();
    let (path, bytes) = FILES
        .iter()
        .find(|(p, _)| *p == "unet/diffusion_pytorch_model.safetensors")
        .unwrap();
    loader
        .begin_file(path.to_string(), Some(true), None)
        .unwrap();
    for chunk in bytes.chunks(1000) {
        loader.push(chunk).map_err(message).unwrap();
    }
    // `sha256sum tests/fixtures/sd1_tiny/unet/diffusion_pytorch_model.safetensors`
    assert_eq!(
        loader.end_file().map_err(message).unwrap().as_deref(),
        Some("8e5cc3879e5c0707b9a94cfbb6a44cff4f6e44844d38790e6a205b5277595929")
    );
    // Another file in two chunks: the standard test vector; and without asking, no digest.
    loader
        .begin_file("tokenizer/extra.txt".into(), Some(true), None)
        .unwrap();
    loader.push(b"a").unwrap();
    loader.push(b"bc").unwrap();
    assert_eq!(
        loader.end_file().map_err(message).unwrap().as_deref(),
        Some("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
    );
    loader
        .begin_file("vae/config.json".into(), None, None)
        .unwrap();
    loader.push(b"{}").unwrap();
    assert_eq!(loader.end_file().map_err(message).unwrap(), None);

    let pipe = tiny_pipeline().await;
    let usage = pipe.memory_usage().map_err(message).unwrap();
    let get = |object: &JsValue, key: &str| Reflect::get(object, &JsValue::from_str(key)).unwrap();
    let gpu = get(&usage, "gpu");
    // The tiny model's weights, at least, are on the GPU; wasm memory holds at least a page.
    assert!(
        get(&gpu, "bytesInUse").as_f64().unwrap() > 10_000.0,
        "{usage:?}"
    );
    assert!(
        get(&gpu, "bytesReserved").as_f64().unwrap() >= get(&gpu, "bytesInUse").as_f64().unwrap()
    );
    assert!(
        get(&usage, "wasmBytes").as_f64().unwrap() >= 65536.0,
        "{usage:?}"
    );
}

/// Region-controlled attention in the browser, on the tiny random fixture that no checker
/// understands, as natively (tests/attention.rs): each boxed node's words attend more inside
/// their box than in plain sampling, measured from the result's attention maps.
#[wasm_bindgen_test]
async fn region_controlled_attention_moves_attention_into_the_boxes() {
    const PROMPT: &str = "a red ball on a blue cube";
    let ball = [0.0f32, 0.0, 0.75, 0.5];
    let cube = [0.5f32, 0.25, 1.0, 1.0];
    let mut csg = lina_csg::parse::parse(PROMPT).unwrap();
    for node in csg.nodes.iter_mut() {
        node.layout = match node.class {
            lina_csg::Class::Ball => Some(ball),
            lina_csg::Class::Cube => Some(cube),
            _ => None,
        };
    }
    let pipe = tiny_pipeline().await;
    let run = |plan: &'static str| {
        let options = prompt_options(PROMPT, 6);
        let set = |k: &str, v: JsValue| Reflect::set(&options, &JsValue::from_str(k), &v).unwrap();
        set("plan", js_sys::JSON::parse(plan).unwrap());
        set("csg", js_sys::JSON::parse(&csg.to_json()).unwrap());
        set("attentionMaps", true.into());
        set("guidanceScale", 5.0.into());
        pipe.generate(options, None)
    };
    let plain = run("{}").await.map_err(message).unwrap();
    let steered = run(r#"{"attentionStrength": 2, "attentionWindow": [0, 0.5]}"#)
        .await
        .map_err(message)
        .unwrap();
    // The share of `words`' attention inside box `b`, over the first three steps (the window).
    let share = |result: &JsValue, words: &[&str], b: [f32; 4]| -> f32 {
        let maps = Reflect::get(result, &"attention".into()).unwrap();
        let get = |k: &str| Reflect::get(&maps, &k.into()).unwrap();
        let (h, w) = (
            get("height").as_f64().unwrap() as usize,
            get("width").as_f64().unwrap() as usize,
        );
        let tokens: Vec<String> = js_sys::Array::from(&get("tokens"))
            .iter()
            .map(|t| {
                Reflect::get(&t, &"word".into())
                    .unwrap()
                    .as_string()
                    .unwrap()
            })
            .collect();
        let steps = js_sys::Array::from(&get("steps"));
        assert_eq!(steps.length(), 6, "one map set per step");
        let mut total = 0.0;
        for step in steps.iter().take(3) {
            let values = js_sys::Float32Array::from(step).to_vec();
            assert_eq!(values.len(), tokens.len() * h * w);
            let (mut mine, mut all) = (0.0, 0.0);
            for (t, word) in tokens.iter().enumerate() {
                if !words.contains(&word.as_str()) {
                    continue;
                }
                for i in 0..h * w {
                    let (x, y) = (
                        ((i % w) as f32 + 0.5) / w as f32,
                        ((i / w) as f32 + 0.5) / h as f32,
                    );
                    let v = values[t * h * w + i];
                    all += v;
                    if x >= b[0] && x < b[2] && y >= b[1] && y < b[3] {
                        mine += v;
                    }
                }
            }
            total += mine / all;
        }
        total / 3.0
    };
    for (words, b) in [(["red", "ball"], ball), (["blue", "cube"], cube)] {
        let (before, after) = (share(&plain, &words, b), share(&steered, &words, b));
        assert!(
            after > before + 0.1,
            "{words:?}: attention in the box went from {before:.3} to {after:.3}"
        );
    }
}

/// The f32 tensor `name` of one of the tiny model's files, with its shape.
fn fixture_tensor(file: &str, name: &str) -> (Vec<usize>, Vec<u8>) {
    let bytes = FILES.iter().find(|(p, _)| *p == file).unwrap().1;
    let st = SafeTensors::deserialize(bytes).unwrap();
    let t = st.tensor(name).unwrap();
    (t.shape().to_vec(), t.data().to_vec())
}

fn safetensors_of(tensors: &[(&str, Vec<usize>, Vec<u8>)]) -> Vec<u8> {
    safetensors::serialize(
        tensors.iter().map(|(n, s, b)| {
            (
                *n,
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b)
                    .unwrap(),
            )
        }),
        None,
    )
    .unwrap()
}

/// A LoRA merges in the browser (at scale 0 it changes nothing, at 1 it changes the image),
/// one for another model is refused naming its module, and an embedding bound to the
/// vocabulary's own rows of "red ball" draws what "red ball" draws.
#[wasm_bindgen_test]
async fn loras_and_embeddings_load_in_the_browser() {
    let unet = "unet/diffusion_pytorch_model.safetensors";
    let st = SafeTensors::deserialize(FILES.iter().find(|(p, _)| *p == unet).unwrap().1).unwrap();
    let (name, shape) = st
        .tensors()
        .into_iter()
        .find(|(n, _)| n.contains("attn2.to_q.weight"))
        .map(|(n, t)| (n, t.shape().to_vec()))
        .unwrap();
    let module = format!(
        "lora_unet_{}",
        name.trim_end_matches(".weight").replace('.', "_")
    );
    let ones = |n: usize| {
        (0..n)
            .flat_map(|i| (0.05 * (i % 7) as f32).to_le_bytes())
            .collect()
    };
    let lora = |module: &str| {
        safetensors_of(&[
            (
                &format!("{module}.lora_down.weight"),
                vec![1, shape[1]],
                ones(shape[1]),
            ),
            (
                &format!("{module}.lora_up.weight"),
                vec![shape[0], 1],
                ones(shape[0]),
            ),
        ])
    };
    let model: Vec<(&str, Vec<u8>)> = FILES.iter().map(|(p, b)| (*p, b.to_vec())).collect();
    let build = async |adapter: Option<(&[u8], f64)>| {
        let mut loader = ModelLoader::create(f32_device())
            .await
            .map_err(message)
            .unwrap();
        fetch_into(&mut loader, &model).await.unwrap();
        if let Some((bytes, scale)) = adapter {
            loader
                .add_lora("test-lora.safetensors".into(), bytes, scale)
                .map_err(message)
                .unwrap();
        }
        Pipeline::from_loader(loader)
    };
    let draw = async |pipe: &Pipeline, prompt: &str| {
        let options = Object::new();
        let set = |k: &str, v: JsValue| Reflect::set(&options, &JsValue::from_str(k), &v).unwrap();
        set("prompt", prompt.into());
        set("steps", 3.into());
        set("seed", 5.into());
        rgb_of(
            &pipe
                .generate(options.into(), None)
                .await
                .map_err(message)
                .unwrap(),
        )
    };
    let good = lora(&module);
    let plain = build(None).await.map_err(message).unwrap();
    let prompt = "a red ball on a small mirror";
    let before = draw(&plain, prompt).await;
    let off = build(Some((&good, 0.0))).await.map_err(message).unwrap();
    assert_eq!(
        draw(&off, prompt).await,
        before,
        "a LoRA at scale 0 changes nothing"
    );
    let on = build(Some((&good, 1.0))).await.map_err(message).unwrap();
    assert_ne!(
        draw(&on, prompt).await,
        before,
        "a LoRA at scale 1 changes the image"
    );

    let Err(err) = build(Some((&lora("lora_unet_no_such_block"), 1.0))).await else {
        panic!("a LoRA for another model was accepted");
    };
    assert_eq!(code(&err), "invalid_input");
    assert!(message(err).contains("no_such_block"));

    // "red" and "ball" are one token each in the tiny vocabulary.
    let tokenizer = FILES
        .iter()
        .find(|(p, _)| *p == "tokenizer/tokenizer.json")
        .unwrap()
        .1;
    let vocab: serde_json::Value = serde_json::from_slice(tokenizer).unwrap();
    let id = |word: &str| vocab["model"]["vocab"][word].as_u64().unwrap() as usize;
    let (table_shape, table) = fixture_tensor(
        "text_encoder/model.safetensors",
        "text_model.embeddings.token_embedding.weight",
    );
    let row = |id: usize| table[id * table_shape[1] * 4..(id + 1) * table_shape[1] * 4].to_vec();
    let rows = [row(id("red</w>")), row(id("ball</w>"))].concat();
    let embedding = safetensors_of(&[("emb_params", vec![2, table_shape[1]], rows)]);
    let mut pipe = build(None).await.map_err(message).unwrap();
    pipe.add_embedding("<red-ball>", "red-ball.safetensors", &embedding)
        .map_err(message)
        .unwrap();
    assert_eq!(draw(&pipe, "a <red-ball> on a small mirror").await, before);
    let err = pipe
        .add_embedding(
            "<wide>",
            "wide.safetensors",
            &safetensors_of(&[("emb_params", vec![3], ones(3))]),
        )
        .unwrap_err();
    assert_eq!(code(&err), "invalid_input");
}
