//! The models draw what they draw natively: the tiny SD 1 and SD 3 against diffusers, the
//! embedded default model against its reference image on WebGPU and on the CPU backend, and
//! the seeded noise.

use js_sys::{Object, Reflect};
use wasm_bindgen::JsValue;
use wasm_bindgen_test::wasm_bindgen_test;

use lina_web::Pipeline;

use crate::{
    FILES, backend_options, default_model_error, f32_device, files, files_of, message,
    reference_f32_of, rgb_of,
};

const REFERENCE: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/fixtures/sd1_tiny/reference.safetensors"
));

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

/// The default model's worst pixel error against its reference image (tests/default_model.rs's
/// settings), on the device `options` ask for.
async fn reference_image_error(device: JsValue) -> u8 {
    default_model_error(device, "a red ball on a table", None, DEFAULT_REFERENCE).await
}

#[wasm_bindgen_test]
fn seeded_noise_is_the_same_as_natively() {
    // The same values are asserted natively in src/rng.rs.
    assert_eq!(
        lina_runtime::rng::Rng::new(42).normals(4),
        lina_runtime::rng::GOLDEN_SEED_42.to_vec()
    );
}
