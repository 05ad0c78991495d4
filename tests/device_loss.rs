#![cfg(not(target_arch = "wasm32"))]
//! A device that fails (destroyed on purpose, as a driver reset would; or a GPU operation that
//! fails outside any error scope, as running out of memory does) comes back as an error from
//! the next generation, naming the cause: nothing hangs and nothing panics. The shared device
//! is then replaced, so loading the model again recovers without restarting. Needs the wgpu
//! backend: set LINA_TEST_GPU=1 (CI does, on lavapipe).

mod common;

use burn::tensor::Device;
use common::fixture;
use lina_runtime::pipeline::{CancelToken, GenerateOptions, NoHook, StableDiffusion};
use lina_runtime::schedulers::Timesteps;
use lina_runtime::source::DirSource;

fn options() -> GenerateOptions {
    GenerateOptions {
        prompt: "a red ball on a small mirror".into(),
        timesteps: Timesteps::Count(2),
        ..GenerateOptions::default()
    }
}

fn load(device: &Device) -> StableDiffusion {
    StableDiffusion::load(&DirSource::new(fixture("sd1_tiny")), device).unwrap()
}

/// Generates, expecting an error and no panic; returns the error's code and message.
fn failing_generation(pipe: &StableDiffusion) -> (&'static str, String) {
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        pollster::block_on(pipe.generate(&options(), &mut NoHook, &CancelToken::new()))
    }));
    match outcome {
        Ok(Ok(_)) => panic!("a generation on a failed device should fail"),
        Ok(Err(e)) => (e.code(), e.to_string()),
        Err(_) => panic!("a failed device panicked instead of returning an error"),
    }
}

fn image(pipe: &StableDiffusion) -> Vec<u8> {
    pollster::block_on(pipe.generate(&options(), &mut NoHook, &CancelToken::new()))
        .unwrap()
        .image
        .rgb
}

// One test, so that the two failures of the shared device happen in order.
#[test]
fn a_failed_device_is_an_error_and_the_next_load_recovers() {
    let Some(device) = common::gpu_device() else {
        return;
    };
    let pipe = load(&device);
    let expected = image(&pipe);

    // Lost.
    lina_runtime::device::lose(&device).unwrap();
    let (code, e) = failing_generation(&pipe);
    // Known by its type, not its text.
    assert_eq!(code, "device_lost", "{e}");
    eprintln!("{e}");
    assert!(e.contains("the GPU device was lost (Destroyed)"), "{e}");
    assert!(e.contains("load the model again"), "{e}");

    // Loading again opens a fresh device, which draws the same image.
    let fresh = pollster::block_on(lina_runtime::device::gpu()).unwrap();
    assert_ne!(fresh, device);
    let pipe = load(&fresh);
    assert_eq!(image(&pipe), expected);

    // A GPU operation that fails outside any error scope (burn's own handler would panic).
    lina_runtime::device::provoke_error(&fresh).unwrap();
    let (code, e) = failing_generation(&pipe);
    assert_eq!(code, "device", "{e}");
    eprintln!("{e}");
    assert!(e.contains("a GPU operation failed"), "{e}");
    assert!(e.contains("load the model again"), "{e}");
    let again = pollster::block_on(lina_runtime::device::gpu()).unwrap();
    assert_ne!(again, fresh);
    assert_eq!(image(&load(&again)), expected);
}
