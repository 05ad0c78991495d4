//! The device: precision from the adapter, the fused kernels against burn's, a lost device.

use js_sys::{Object, Reflect};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_test::wasm_bindgen_test;

use lina_web::Pipeline;

use crate::{device_options, files, message, prompt_options, rgb_of, tiny_pipeline};

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
