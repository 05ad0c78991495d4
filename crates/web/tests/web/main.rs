//! Browser tests (wasm32, headless Chromium with WebGPU): the tiny pipeline through the wasm
//! API gives diffusers' image, as natively; the embedded default model gives its reference
//! image; bad files become JS errors with a message.
//! Run with `scripts/test.sh` (or `wasm-pack test --headless --chrome --release`). Here the
//! fixtures and helpers the modules share; each module is one part of what the page relies on.
#![cfg(target_arch = "wasm32")]

mod device;
mod input;
mod lina;
mod parity;

use js_sys::{Object, Reflect, Uint8Array};
use safetensors::SafeTensors;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_test::wasm_bindgen_test_configure;

use lina_web::Pipeline;

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

fn backend_options(backend: &str, precision: &str) -> JsValue {
    let options = device_options(precision);
    Reflect::set(&options, &"backend".into(), &backend.into()).unwrap();
    options
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
