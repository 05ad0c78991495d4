#![cfg(not(target_arch = "wasm32"))]
//! A lost device (here destroyed on purpose, as a driver reset would) comes back as an error
//! from the next generation, naming the loss: nothing hangs and nothing panics. Needs the
//! wgpu backend: set LINA_TEST_GPU=1 (CI does, on lavapipe).

mod common;

use common::fixture;
use lina::pipeline::{CancelToken, GenerateOptions, NoHook, StableDiffusion};
use lina::schedulers::Timesteps;
use lina::source::DirSource;

#[test]
fn a_lost_device_is_an_error_not_a_hang() {
    if std::env::var("LINA_TEST_GPU").as_deref() != Ok("1") {
        eprintln!("skipped: needs the wgpu backend (set LINA_TEST_GPU=1 with a Vulkan driver)");
        return;
    }
    let device = lina::device::gpu_with(&lina::device::GpuRequest::default()).unwrap();
    let pipe = StableDiffusion::load(&DirSource::new(fixture("sd1_tiny")), &device).unwrap();
    let opts = GenerateOptions {
        prompt: "a red ball on a small mirror".into(),
        timesteps: Timesteps::Count(2),
        ..GenerateOptions::default()
    };
    pollster::block_on(pipe.generate(&opts, &mut NoHook, &CancelToken::new())).unwrap();

    lina::device::lose(&device).unwrap();
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        pollster::block_on(pipe.generate(&opts, &mut NoHook, &CancelToken::new()))
    }));
    let e = match outcome {
        Ok(Ok(_)) => panic!("a generation on a lost device should fail"),
        Ok(Err(e)) => e.to_string(),
        Err(_) => panic!("a lost device panicked instead of returning an error"),
    };
    eprintln!("{e}");
    assert!(e.contains("the GPU device was lost (Destroyed)"), "{e}");
    assert!(e.contains("load the model again"), "{e}");
}
