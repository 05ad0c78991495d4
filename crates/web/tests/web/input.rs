//! What goes in: models streamed through `fetch` and hashed as they stream, truncated files,
//! bad options, LoRA adapters and embeddings.

use js_sys::{Object, Reflect, Uint8Array};
use safetensors::SafeTensors;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_test::wasm_bindgen_test;

use lina_web::{ModelLoader, Pipeline};

use crate::{FILES, code, f32_device, files, message, prompt_options, rgb_of, tiny_pipeline};

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

    // Skip-layer guidance: an unknown key in it, and on a UNet model at all.
    for (guidance, expected) in [
        (r#"{"layers":[0],"scael":2}"#, "unknown field `scael`"),
        (r#"{"layers":[0]}"#, "has a UNet"),
    ] {
        let options = prompt_options("a red ball", 2);
        let guidance = js_sys::JSON::parse(guidance).unwrap();
        Reflect::set(&options, &"skipLayerGuidance".into(), &guidance).unwrap();
        let err = pipe
            .generate(options, None)
            .await
            .err()
            .map(message)
            .expect("refused");
        assert!(err.contains(expected), "{err}");
    }
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
