#![cfg(not(target_arch = "wasm32"))]
//! The full-size SD 1.5 and SD 2.1 UNet configs build (random weights) and run one step.
//! Ignored by default: each holds ~3.4 GB of f32 weights and a CPU step takes a while.
//! Run with `cargo test --release --test full_size -- --ignored --nocapture`.

mod common;

use std::time::Instant;

use burn::tensor::{Distribution, Tensor};
use common::read_fixture;
use lina_runtime::models::unet::{UNet, UNetConfig};
use lina_runtime::weights::Weights;

fn one_step(config_file: &str, latent: usize, context_dim: usize) {
    let device = if std::env::var("LINA_TEST_GPU").as_deref() == Ok("1") {
        pollster::block_on(lina_runtime::device::gpu()).unwrap()
    } else {
        lina_runtime::device::cpu()
    };
    let config =
        UNetConfig::from_json(&String::from_utf8(read_fixture(config_file)).unwrap()).unwrap();
    let started = Instant::now();
    let weights = Weights::random(&device);
    let unet = UNet::load(config, &weights).unwrap();
    let built = started.elapsed();
    let x = Tensor::<4>::random(
        [2, 4, latent, latent],
        Distribution::Normal(0.0, 1.0),
        &device,
    );
    let context = Tensor::<3>::random(
        [2, 77, context_dim],
        Distribution::Normal(0.0, 1.0),
        &device,
    );
    let started = Instant::now();
    let out = unet.forward(x, 500.0, &context);
    let data: Vec<f32> = out.into_data().try_to_vec::<f32>().unwrap();
    let step = started.elapsed();
    assert_eq!(data.len(), 2 * 4 * latent * latent);
    assert!(data.iter().all(|v| v.is_finite()));
    println!(
        "{config_file}: built in {built:.2?}; one CFG-batch UNet step at {latent}x{latent} latents took {step:.2?}"
    );
}

#[test]
#[ignore = "full-size UNets: ~3.4 GB of weights and minutes of CPU per step; run by hand (README)"]
fn sd15_unet_runs_one_step() {
    one_step("configs/sd15_unet.json", 64, 768);
}

#[test]
#[ignore = "full-size UNets: ~3.4 GB of weights and minutes of CPU per step; run by hand (README)"]
fn sd21_unet_runs_one_step() {
    one_step("configs/sd21_unet.json", 96, 1024);
}
