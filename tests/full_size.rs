#![cfg(not(target_arch = "wasm32"))]
//! Full-size models.
//!
//! `every_layout_matches_diffusers_at_full_size`: full-size SD 1.5, SD 2.1, SDXL and SD 3.5
//! medium with random weights, in every layout the runtime reads, against diffusers' outputs
//! on the same weights, on the CPU backend and, with LINA_TEST_GPU=1, on wgpu too; for SD
//! 1.5 also a whole 30-step run from diffusers' latents and one LoRA in kohya's and in
//! diffusers' names against diffusers' fused UNet. Their folders are made on demand by
//! `tools/make_full_size.py` (several GB each, never in git) and named by LINA_FULL_SIZE
//! (LINA_FULL_SIZE_FAMILIES=sd15,sdxl picks some, LINA_FULL_SIZE_BACKENDS=wgpu skips the CPU
//! pass); without it the test says so and checks
//! nothing, and with it a missing folder fails. `docs/models.md` has the commands.
//!
//! The two others build the published SD 1.5 and SD 2.1 UNet configs with random weights
//! drawn on the device and run one step; ignored by default (~3.4 GB of f32 weights, minutes
//! of CPU): `cargo test --release --test full_size -- --ignored --nocapture`.

mod common;

use std::time::Instant;

use std::path::{Path, PathBuf};

use burn::tensor::{Distribution, Tensor};
use common::{Reference, max_abs_diff, read_fixture, relative_diff, values, worst_pixel};
use lina_runtime::kernels::Kernels;
use lina_runtime::models::unet::{UNet, UNetConfig};
use lina_runtime::pipeline::{CancelToken, GenerateOptions, NoHook, StableDiffusion};
use lina_runtime::schedulers::Timesteps;
use lina_runtime::source::DirSource;
use lina_runtime::weights::{Lora, ScaledLora, Weights};

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

/// What one layout of a model gives on the reference's inputs.
struct Outputs {
    text: Vec<Vec<f32>>,
    unet: Vec<f32>,
    vae: Vec<f32>,
}

fn outputs(pipe: &StableDiffusion, reference: &Reference, sdxl: bool) -> Outputs {
    let device = pipe.device();
    let ids: Vec<u32> = reference
        .i64("text_ids")
        .1
        .iter()
        .map(|&i| i as u32)
        .collect();
    let prompt = pipe
        .encode_prompt("a red ball on a small mirror", 0)
        .unwrap();
    let text = if sdxl {
        // The pipeline's own encoding: both encoders' penultimate states side by side.
        vec![
            values(prompt.context.clone()),
            values(prompt.pooled.clone().unwrap()),
        ]
    } else {
        vec![values(pipe.text_encoder().forward(&[ids], 0).unwrap())]
    };
    let sample: Tensor<4> = reference.tensor("unet_sample", device);
    let [_, _, h, w] = sample.dims();
    let added = prompt.pooled.and_then(|pooled| {
        let (side_h, side_w) = (h as f64 * 8.0, w as f64 * 8.0);
        pipe.unet()
            .expect("a UNet model")
            .text_time_input(pooled, &[side_h, side_w, 0.0, 0.0, side_h, side_w])
    });
    let unet = values(pipe.unet().expect("a UNet model").forward_with(
        sample,
        501.0,
        &prompt.context,
        added.as_ref(),
    ));
    let vae = values(pipe.vae().decode(reference.tensor("vae_latents", device)));
    Outputs { text, unet, vae }
}

fn check_against_diffusers(family: &str, ours: &Outputs, reference: &Reference, sdxl: bool) {
    let texts: Vec<Vec<f32>> = match sdxl {
        true => {
            let mut context = reference.f32("text_encoder_out").1;
            let second = reference.f32("text_encoder_2_out").1;
            // [1, 77, 768] and [1, 77, 1280] side by side, row by row.
            let (a, b) = (context.len() / 77, second.len() / 77);
            context = (0..77)
                .flat_map(|t| {
                    context[t * a..(t + 1) * a]
                        .iter()
                        .chain(&second[t * b..(t + 1) * b])
                        .copied()
                        .collect::<Vec<_>>()
                })
                .collect();
            vec![context, reference.f32("text_pooled").1]
        }
        false => vec![reference.f32("text_encoder_out").1],
    };
    within_tolerances(family, ours, &texts, ("UNet", "unet_out"), reference);
}

/// `ours` against diffusers' text outputs `texts` and the reference's denoiser output
/// (`denoiser`: its name in words and its key) and VAE decode, within the tolerances.
fn within_tolerances(
    family: &str,
    ours: &Outputs,
    texts: &[Vec<f32>],
    (denoiser, key): (&str, &str),
    reference: &Reference,
) {
    for (i, (o, t)) in ours.text.iter().zip(texts).enumerate() {
        let err = relative_diff(o, t);
        println!("{family}: text output {i} within {err:.2e} of diffusers (relative)");
        assert!(err <= 1e-4, "{family}: text output {i} off by {err}");
    }
    let err = relative_diff(&ours.unet, &reference.f32(key).1);
    println!("{family}: {denoiser} within {err:.2e} of diffusers' max |output|");
    assert!(err <= 1e-3, "{family}: {denoiser} off by {err}");
    // The decode in [-1, 1], so 2/255 of the final image is 4/255 here.
    let err = max_abs_diff(&ours.vae, &reference.f32("vae_decoded").1);
    println!(
        "{family}: VAE within {:.3}/255 of diffusers' image",
        err * 127.5
    );
    assert!(
        err * 127.5 <= 2.0,
        "{family}: VAE off by {}/255",
        err * 127.5
    );
}

fn same(family: &str, layout: &str, a: &Outputs, b: &Outputs) {
    assert!(
        a.text == b.text,
        "{family} {layout}: text differs from the folder's"
    );
    assert!(
        a.unet == b.unet,
        "{family} {layout}: UNet differs from the folder's"
    );
    assert!(
        a.vae == b.vae,
        "{family} {layout}: VAE differs from the folder's"
    );
    println!("{family} {layout}: bit-identical to the diffusers folder");
}

#[test]
fn every_layout_matches_diffusers_at_full_size() {
    let Some(root) = std::env::var_os("LINA_FULL_SIZE").map(PathBuf::from) else {
        eprintln!(
            "skipped: no full-size models (make them with `python3 tools/make_full_size.py --out DIR`, then set LINA_FULL_SIZE=DIR)"
        );
        return;
    };
    let families =
        std::env::var("LINA_FULL_SIZE_FAMILIES").unwrap_or_else(|_| "sd15,sd21,sdxl,sd35m".into());
    // LINA_FULL_SIZE_BACKENDS=wgpu (with LINA_TEST_GPU=1) skips the CPU backend's pass.
    let backends = std::env::var("LINA_FULL_SIZE_BACKENDS").unwrap_or_else(|_| "cpu,wgpu".into());
    let devices: Vec<_> = common::test_devices()
        .into_iter()
        .filter(|(backend, _)| backends.split(',').any(|b| b == *backend))
        .collect();
    assert!(
        !devices.is_empty(),
        "LINA_FULL_SIZE_BACKENDS={backends} names no backend this run has"
    );
    let mut checked = 0;
    for (backend, device) in devices {
        for family in families.split(',') {
            let dir = root.join(family);
            if !dir.exists() {
                println!("{family}: not made under {}", root.display());
                continue;
            }
            let family = format!("{family} ({backend})");
            check_family(&family, &dir, &device);
            checked += 1;
        }
    }
    assert!(
        checked > 0,
        "LINA_FULL_SIZE={} holds no model of {families}",
        root.display()
    );
}

/// Every layout of one family made under `dir`, on `device`.
fn check_family(family: &str, dir: &Path, device: &burn::tensor::Device) {
    if family.starts_with("sd35m") {
        return check_sd35m(dir, device);
    }
    let sdxl = family.starts_with("sdxl");
    let reference = Reference::at(&dir.join("reference.safetensors"));
    let folder = dir.join("diffusers");
    let load = |source: &DirSource| {
        let started = Instant::now();
        let pipe = StableDiffusion::load(source, device).unwrap();
        println!("{family}: loaded in {:.1?}", started.elapsed());
        pipe
    };
    let pipe = load(&DirSource::new(&folder));
    let memory = |when: &str| {
        if let Some(m) = lina_runtime::device::gpu_memory(device) {
            let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
            println!(
                "{family}: {when}: {:.2} GiB in use, {:.2} GiB reserved",
                gib(m.bytes_in_use),
                gib(m.bytes_reserved)
            );
        }
    };
    memory("loaded");
    let from_folder = outputs(&pipe, &reference, sdxl);
    // The pool keeps what it reserved: its size after the calls is their peak.
    memory("after the text encoders, a UNet call and a VAE decode at 256 px");
    check_against_diffusers(family, &from_folder, &reference, sdxl);
    if family.starts_with("sd15") {
        whole_run(family, &pipe, &reference);
    }
    drop(pipe);
    if family.starts_with("sd15") {
        loras(family, dir, &reference, device);
    }
    let file = dir.join("single.safetensors");
    let single = DirSource::open(&file, Some(&folder)).unwrap();
    same(
        family,
        "single file",
        &from_folder,
        &outputs(&load(&single), &reference, sdxl),
    );
    let legacy: &Path = &dir.join("legacy");
    if legacy.exists() {
        let from_legacy = outputs(&load(&DirSource::new(legacy)), &reference, sdxl);
        same(family, "legacy VAE names", &from_folder, &from_legacy);
    }
}

/// One LoRA in kohya's and in diffusers' (PEFT) names on the family's folder: each gives
/// diffusers' UNet after `fuse_lora(lora_scale=0.7)`.
fn loras(family: &str, dir: &Path, reference: &Reference, device: &burn::tensor::Device) {
    for format in ["kohya", "peft"] {
        let file = dir.join(format!("lora_{format}.safetensors"));
        assert!(
            file.exists(),
            "{}: made by an older tools/make_full_size.py; make it again",
            file.display()
        );
        let lora = ScaledLora {
            lora: Lora::from_safetensors(format, &std::fs::read(&file).unwrap()).unwrap(),
            scale: 0.7,
        };
        let source = DirSource::new(dir.join("diffusers"));
        let pipe =
            StableDiffusion::load_adapted(&source, device, Kernels::default(), &[lora]).unwrap();
        let ours = outputs(&pipe, reference, false).unet;
        let err = relative_diff(&ours, &reference.f32("lora_unet_out").1);
        println!(
            "{family}: UNet with the {format} LoRA at 0.7 within {err:.2e} of diffusers' fused one"
        );
        assert!(
            err <= 1e-3,
            "{family}: the {format} LoRA's UNet is off by {err}"
        );
    }
}

/// The target for `--latents`: diffusers' whole 30-step DDIM run at 256 px, from
/// its latents, gives its image within 2/255.
fn whole_run(family: &str, pipe: &StableDiffusion, reference: &Reference) {
    let (shape, latents) = reference.f32("run_latents");
    let side = shape[3] * 8;
    let opts = GenerateOptions {
        prompt: "a red ball on a small mirror".into(),
        negative_prompt: String::new(),
        timesteps: Timesteps::Count(30),
        guidance_scale: 7.5,
        width: Some(side),
        height: Some(side),
        initial_latents: Some(latents),
        ..GenerateOptions::default()
    };
    let started = Instant::now();
    let image = pollster::block_on(pipe.generate(&opts, &mut NoHook, &CancelToken::new()))
        .unwrap()
        .image;
    let worst = worst_pixel(&image.rgb, &reference.f32("run_image").1);
    println!(
        "{family}: 30 DDIM steps at {side} px in {:.1?}, within {worst:.2}/255 of diffusers' image",
        started.elapsed()
    );
    assert!(
        worst <= 2.0,
        "{family}: the 30-step image is {worst}/255 off"
    );
}

/// SD 3.5 medium (no T5): from its diffusers folder, the pipeline's prompt encoding, one
/// transformer call at 32x32 latents and one VAE decode, against diffusers'; from its single
/// file, where made, bit for bit the folder's.
fn check_sd35m(dir: &Path, device: &burn::tensor::Device) {
    let reference = Reference::at(&dir.join("reference.safetensors"));
    let folder = dir.join("diffusers");
    // One model at a time: two SD 3.5 mediums in f32 are more than this machine's memory.
    let from_folder = sd35m_outputs(&DirSource::new(&folder), &reference, device);
    // The pipeline's prompt encoding: context, then pooled.
    let texts = [
        reference.f32("prompt_embeds").1,
        reference.f32("pooled_embeds").1,
    ];
    within_tolerances(
        "sd35m",
        &from_folder,
        &texts,
        ("transformer", "transformer_out"),
        &reference,
    );
    // The same weights as StabilityAI's single file names them (with CLIP-L and CLIP-G).
    let file = dir.join("single.safetensors");
    if file.exists() {
        let single = DirSource::open(&file, Some(&folder)).unwrap();
        let from_file = sd35m_outputs(&single, &reference, device);
        same("sd35m", "single file", &from_folder, &from_file);
    }
}

/// SD 3.5 medium's outputs on the reference's inputs: the pipeline's prompt encoding
/// (context, pooled), one transformer call at 32x32 latents, one VAE decode.
fn sd35m_outputs(
    source: &DirSource,
    reference: &Reference,
    device: &burn::tensor::Device,
) -> Outputs {
    let started = Instant::now();
    let pipe = StableDiffusion::load(source, device).unwrap();
    println!("sd35m: loaded in {:.1?}", started.elapsed());
    let prompt = pipe
        .encode_prompt("a red ball on a small mirror", 0)
        .unwrap();
    let text = vec![
        values(prompt.context.clone()),
        values(prompt.pooled.clone().unwrap()),
    ];
    let mmdit = pipe.denoiser().mmdit().expect("SD 3.5 has a transformer");
    let started = Instant::now();
    let out = mmdit.forward(
        reference.tensor("transformer_sample", device),
        501.0,
        &reference.tensor("prompt_embeds", device),
        &reference.tensor("pooled_embeds", device),
    );
    let unet = values(out);
    println!("sd35m: one transformer call in {:.1?}", started.elapsed());
    let vae = values(pipe.vae().decode(reference.tensor("vae_latents", device)));
    Outputs { text, unet, vae }
}
