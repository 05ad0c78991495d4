#![cfg(not(target_arch = "wasm32"))]
//! On an adapter that binds little per buffer (requested here with reduced limits, as a small
//! GPU would give), attention runs in chunks, a large embedding is split into row blocks, and
//! a generation too big for the limits is refused with a message before any work. Needs the
//! wgpu backend: set LINA_TEST_GPU=1 (CI does, on lavapipe).

mod common;

use std::sync::OnceLock;

use burn::tensor::{Device, Distribution, Tensor};
use common::{fixture, max_abs_diff, values};
use lina_runtime::kernels::Kernels;
use lina_runtime::nn::{Embedding, multi_head_attention};
use lina_runtime::pipeline::{GenerateOptions, StableDiffusion};
use lina_runtime::schedulers::Timesteps;
use lina_runtime::source::DirSource;
use lina_runtime::weights::WeightsUpload;
use safetensors::Dtype;
use safetensors::tensor::TensorView;

/// Far below any real adapter's 128 MiB, so that small tensors already cross it.
const LIMIT: u64 = 8 << 20;

/// The reduced-limits device, shared by the tests of this process; `None` (and a note)
/// without LINA_TEST_GPU=1.
fn small_gpu() -> Option<Device> {
    if std::env::var("LINA_TEST_GPU").as_deref() != Ok("1") {
        eprintln!("skipped: needs the wgpu backend (set LINA_TEST_GPU=1 with a Vulkan driver)");
        return None;
    }
    static DEVICE: OnceLock<Device> = OnceLock::new();
    Some(
        DEVICE
            .get_or_init(|| {
                lina_runtime::device::gpu_with(&lina_runtime::device::GpuRequest {
                    max_binding_bytes: Some(LIMIT),
                    precision: lina_runtime::device::Precision::F32,
                })
                .expect("reduced-limit device")
            })
            .clone(),
    )
}

#[test]
fn the_device_reports_the_reduced_limit() {
    let Some(gpu) = small_gpu() else { return };
    assert_eq!(lina_runtime::device::limits(&gpu).max_binding_bytes, LIMIT);
}

#[test]
fn attention_over_4096_latent_tokens_runs_in_chunks_and_matches_the_cpu() {
    let Some(gpu) = small_gpu() else { return };
    // 64x64 latents: 4096 tokens; one head's scores alone are 64 MiB, 8x the limit.
    let (tokens, dim) = (4096, 32);
    assert!((tokens * tokens * 4) as u64 > LIMIT);
    let cpu = lina_runtime::device::cpu();
    let make = || Tensor::<3>::random([1, tokens, dim], Distribution::Normal(0.0, 1.0), &cpu);
    let (q, k, v) = (make(), make(), make());
    let expected = values(multi_head_attention(
        q.clone().into(),
        k.clone().into(),
        v.clone().into(),
        1,
        false,
        Kernels::Burn,
    ));
    let on_gpu = |t: &Tensor<3>| Tensor::<3>::from_data(t.to_data(), &gpu);
    let got = values(multi_head_attention(
        on_gpu(&q).into(),
        on_gpu(&k).into(),
        on_gpu(&v).into(),
        1,
        false,
        // burn's attention, chunked to the limit (the fused kernel keeps no score matrix).
        Kernels::Burn,
    ));
    let diff = max_abs_diff(&got, &expected);
    assert!(
        diff < 1e-4,
        "chunked attention differs from the CPU's by {diff}"
    );
}

#[test]
fn an_embedding_larger_than_one_buffer_is_split_and_looks_up_the_same() {
    let Some(gpu) = small_gpu() else { return };
    // A 5000 x 512 f32 table: 9.8 MiB, above the 8 MiB limit.
    let (rows, dim) = (5000usize, 512usize);
    let table: Vec<f32> = (0..rows * dim).map(|i| (i % 9973) as f32 * 1e-3).collect();
    let bytes: Vec<u8> = table.iter().flat_map(|v| v.to_le_bytes()).collect();
    let file = safetensors::serialize(
        [(
            "weight",
            TensorView::new(Dtype::F32, vec![rows, dim], &bytes).unwrap(),
        )],
        None,
    )
    .unwrap();
    let mut upload = WeightsUpload::new(&gpu);
    upload
        .begin_file("table.safetensors", Some(file.len() as u64))
        .unwrap();
    upload.push(&file).unwrap();
    upload.end_file().unwrap();
    let weights = upload.finish("table.safetensors").unwrap();

    // Asked for whole, the table is refused with the reason.
    let e = weights
        .root()
        .tensor::<2>("weight", [rows, dim])
        .unwrap_err()
        .to_string();
    assert!(e.contains("binds") && e.contains("8.0 MiB"), "{e}");

    // As an embedding, it is looked up block by block: ids from both blocks, repeated.
    let embedding = Embedding::load(&weights.root(), rows, dim).unwrap();
    let ids = [0u32, 4999, 17, 4096, 4095, 2048, 4999, 1];
    let got = values(embedding.forward(&ids, [2, 4], &gpu));
    let expected: Vec<f32> = ids
        .iter()
        .flat_map(|&id| table[id as usize * dim..(id as usize + 1) * dim].to_vec())
        .collect();
    assert_eq!(got, expected);
}

#[test]
fn a_generation_too_big_for_the_limit_is_refused_and_the_vae_decodes_in_bands() {
    let Some(gpu) = small_gpu() else { return };
    let load = |device: &Device| {
        StableDiffusion::load(&DirSource::new(fixture("sd1_tiny")), device).unwrap()
    };
    let model = load(&gpu);
    // Its native 64x64 fits, so loading says nothing about sizes.
    assert_eq!(model.size_note(), None);
    let options = |side: usize| GenerateOptions {
        prompt: "a red ball on a small mirror".into(),
        timesteps: Timesteps::Count(1),
        width: Some(side),
        height: Some(side),
        ..GenerateOptions::default()
    };
    // At 1024x1024 the UNet's feed-forward holds 2 x 16384 x 256 f32s: 32 MiB, which no
    // banding helps.
    let e = match model.start(&options(1024)) {
        Ok(_) => panic!("1024x1024 should not fit an 8 MiB binding limit"),
        Err(e) => e.to_string(),
    };
    assert!(
        e.contains("too large for this device")
            && e.contains("UNet level 0 feed-forward")
            && e.contains("32.0 MiB"),
        "{e}"
    );
    // At 512x512 the VAE's last block would hold 16 channels x 512 x 512 (16 MiB) whole;
    // the run is accepted, and the decoder works in three row bands instead, giving the
    // image a roomy device draws whole.
    assert!(model.start(&options(512)).is_ok());
    let cpu = lina_runtime::device::cpu();
    let z = Tensor::<4>::random([1, 4, 64, 64], Distribution::Normal(0.0, 1.0), &cpu);
    let decode = |model: &StableDiffusion, device: &Device| {
        values(
            model
                .vae()
                .decode_scaled(Tensor::from_data(z.to_data(), device)),
        )
    };
    let roomy_device = pollster::block_on(lina_runtime::device::gpu()).unwrap();
    let banded = decode(&model, &gpu);
    let whole = decode(&load(&roomy_device), &roomy_device);
    let err = max_abs_diff(&banded, &whole);
    assert!(err < 1e-4, "banded and whole decodes differ by {err}");
}
