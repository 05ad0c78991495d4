#![cfg(not(target_arch = "wasm32"))]
//! SD 3.x (tests/fixtures/sd3_tiny, made by `tools/make_fixtures.py --only sd3`): the MMDiT
//! with QK-norm, a dual-attention block and a context-pre-only last block; two CLIP text
//! encoders with projections and no T5; the 16-channel VAE with its shift; flow-matching
//! Euler. Against diffusers' `StableDiffusion3Pipeline`, on the CPU backend and (with
//! LINA_TEST_GPU=1) on wgpu.

mod common;

use common::{Reference, fixture, max_abs_diff, read_fixture, test_devices, values};
use lina_runtime::models::mmdit::{Mmdit, MmditConfig};
use lina_runtime::weights::Weights;

fn relative(ours: &[f32], theirs: &[f32]) -> f32 {
    let scale = theirs.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
    max_abs_diff(ours, theirs) / scale
}

#[test]
fn the_transformer_matches_diffusers() {
    let reference = Reference::open("sd3_tiny");
    let config = String::from_utf8(read_fixture("sd3_tiny/transformer/config.json")).unwrap();
    let file = "sd3_tiny/transformer/diffusion_pytorch_model.safetensors";
    for (name, device) in test_devices() {
        let weights = Weights::from_bytes(file, &read_fixture(file), &device).unwrap();
        let model = Mmdit::load(MmditConfig::from_json(&config).unwrap(), &weights).unwrap();
        weights.finish().unwrap();
        let out = model.forward(
            reference.tensor("transformer_sample", &device),
            501.0,
            &reference.tensor("prompt_embeds", &device),
            &reference.tensor("pooled_embeds", &device),
        );
        let err = relative(&values(out), &reference.f32("transformer_out").1);
        assert!(err < 1e-4, "{name}: transformer off by {err} (relative)");
    }
    let _ = fixture;
}
