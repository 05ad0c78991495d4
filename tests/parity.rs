#![cfg(not(target_arch = "wasm32"))]
//! Each component and the whole pipeline against diffusers/transformers outputs
//! (tests/fixtures, made by tools/make_fixtures.py).

mod common;

use burn::tensor::{Device, Tensor};
use common::{Reference, fixture, max_abs_diff, read_fixture, test_devices, values};
use lina_runtime::models::clip::{ClipTextConfig, ClipTextEncoder};
use lina_runtime::models::taesd::{TaesdConfig, TaesdDecoder, TaesdEncoder};
use lina_runtime::models::unet::{UNet, UNetConfig};
use lina_runtime::models::vae::{VaeConfig, VaeDecoder, VaeEncoder};
use lina_runtime::pipeline::{CancelToken, GenerateOptions, NoHook, StableDiffusion};
use lina_runtime::schedulers::Timesteps;
use lina_runtime::source::DirSource;
use lina_runtime::weights::Weights;

const MODELS: [&str; 2] = ["sd1_tiny", "sd2_tiny"];
const COMPONENT_TOLERANCE: f32 = 1e-4;

fn text(model: &str, file: &str) -> String {
    String::from_utf8(read_fixture(&format!("{model}/{file}"))).unwrap()
}

/// Builds one component from its fixture weights, checking that none were left unused.
fn component<T>(
    model: &str,
    weights_file: &str,
    device: &Device,
    build: impl FnOnce(&Weights) -> lina_runtime::Result<T>,
) -> T {
    let bytes = read_fixture(&format!("{model}/{weights_file}"));
    let weights = Weights::from_bytes(weights_file, &bytes, device).unwrap();
    let built = build(&weights).unwrap();
    weights.finish().unwrap();
    built
}

fn check_text_encoder(model: &str, device: &Device) {
    let reference = Reference::open(model);
    let config = ClipTextConfig::from_json(&text(model, "text_encoder/config.json")).unwrap();
    let encoder = component(model, "text_encoder/model.safetensors", device, |w| {
        ClipTextEncoder::load(config, w)
    });

    let (shape, ids) = reference.i64("text_input_ids");
    let rows: Vec<Vec<u32>> = ids
        .chunks(shape[1])
        .map(|r| r.iter().map(|&i| i as u32).collect())
        .collect();
    for (skip, name) in [(0, "text_last_hidden"), (1, "text_clip_skip_1")] {
        let ours = values(encoder.forward(&rows, skip).unwrap());
        let err = max_abs_diff(&ours, &reference.f32(name).1);
        assert!(
            err < COMPONENT_TOLERANCE,
            "{model} {name}: max abs error {err}"
        );
    }
}

fn check_unet(model: &str, device: &Device) {
    let reference = Reference::open(model);
    let config = UNetConfig::from_json(&text(model, "unet/config.json")).unwrap();
    let unet = component(
        model,
        "unet/diffusion_pytorch_model.safetensors",
        device,
        |w| UNet::load(config, w),
    );

    let sample: Tensor<4> = reference.tensor("unet_sample", device);
    let context: Tensor<3> = reference.tensor("unet_encoder_hidden_states", device);
    let t = reference.f32("unet_timestep").1[0] as f64;
    let ours = values(unet.forward(sample, t, &context));
    let err = max_abs_diff(&ours, &reference.f32("unet_out").1);
    assert!(
        err < COMPONENT_TOLERANCE,
        "{model} unet: max abs error {err}"
    );
}

fn check_vae(model: &str, device: &Device) {
    let reference = Reference::open(model);
    let config = VaeConfig::from_json(&text(model, "vae/config.json")).unwrap();
    let vae = component(
        model,
        "vae/diffusion_pytorch_model.safetensors",
        device,
        |w| VaeDecoder::load(config, w),
    );

    let ours = values(vae.decode(reference.tensor("vae_latents", device)));
    let err = max_abs_diff(&ours, &reference.f32("vae_decoded").1);
    assert!(
        err < COMPONENT_TOLERANCE,
        "{model} vae: max abs error {err}"
    );
}

/// The whole pipeline, from the prompt strings to pixels, with diffusers' initial latents.
fn check_pipeline(model: &str, device: &Device) {
    let reference = Reference::open(model);
    let settings: serde_json::Value = serde_json::from_str(&text(model, "reference.json")).unwrap();
    let pipe = StableDiffusion::load(&DirSource::new(fixture(model)), device).unwrap();
    let opts = GenerateOptions {
        prompt: settings["prompt"].as_str().unwrap().into(),
        negative_prompt: settings["negative_prompt"].as_str().unwrap().into(),
        guidance_scale: settings["guidance_scale"].as_f64().unwrap(),
        timesteps: Timesteps::Count(settings["num_inference_steps"].as_u64().unwrap() as usize),
        width: Some(settings["width"].as_u64().unwrap() as usize),
        height: Some(settings["height"].as_u64().unwrap() as usize),
        initial_latents: Some(reference.f32("pipe_init_latents").1),
        ..GenerateOptions::default()
    };

    let mut sampling = pipe.start(&opts).unwrap();
    let expected_t: Vec<f64> = reference
        .i64("pipe_step_timesteps")
        .1
        .iter()
        .map(|&t| t as f64)
        .collect();
    assert_eq!(
        sampling.timesteps(),
        expected_t.as_slice(),
        "{model} timesteps"
    );
    while !sampling.is_done() {
        sampling.step(&mut NoHook).unwrap();
    }
    let latents = values(sampling.latents().clone());
    let (_, final_latents) = reference.f32("pipe_final_latents");
    let scale = final_latents.iter().fold(0f32, |m, v| m.max(v.abs()));
    let latent_err = max_abs_diff(&latents, &final_latents);
    // Measured: 5.7e-5 on sd1_tiny (latents up to ±28) and 9.9e-6 on sd2_tiny (±4.3), about
    // 2e-6 of the largest latent on both backends; the bound leaves a factor of 4 to 5.
    assert!(
        latent_err < 1e-5 * scale.max(1.0),
        "{model} final latents: max abs error {latent_err}"
    );

    let image = pollster::block_on(sampling.decode()).unwrap();
    let (_, expected) = reference.f32("pipe_image");
    let worst = common::worst_pixel(&image.rgb, &expected);
    assert!(
        worst <= 2.0,
        "{model} image: worst pixel off by {worst}/255"
    );
    eprintln!("{model}: final latents max error {latent_err:.2e}, worst pixel {worst:.2}/255");

    // The same run through `generate` gives the same image (the loop has no hidden state).
    let again = pollster::block_on(pipe.generate(&opts, &mut NoHook, &CancelToken::new())).unwrap();
    assert!(again.warnings.is_empty(), "{:?}", again.warnings);
    assert_eq!(again.image, image);
}

#[test]
fn text_encoders_match_transformers() {
    for (name, device) in test_devices() {
        for model in MODELS {
            eprintln!("{name}: {model}");
            check_text_encoder(model, &device);
        }
    }
}

#[test]
fn unets_match_diffusers() {
    for (_, device) in test_devices() {
        for model in MODELS {
            check_unet(model, &device);
        }
    }
}

#[test]
fn vae_decoders_match_diffusers() {
    for (_, device) in test_devices() {
        for model in MODELS {
            check_vae(model, &device);
        }
    }
}

#[test]
fn the_vae_encoder_matches_diffusers() {
    let reference = Reference::file("sd1_tiny/vae_encoder_reference.safetensors");
    for (name, device) in test_devices() {
        let config = VaeConfig::from_json(&text("sd1_tiny", "vae/config.json")).unwrap();
        // The encoder and the decoder together use every tensor of the file.
        let (encoder, _decoder) = component(
            "sd1_tiny",
            "vae/diffusion_pytorch_model.safetensors",
            &device,
            |w| {
                Ok((
                    VaeEncoder::load(config.clone(), w)?,
                    VaeDecoder::load(config, w)?,
                ))
            },
        );
        let ours = values(encoder.encode(reference.tensor("image", &device)));
        let err = max_abs_diff(&ours, &reference.f32("posterior_mean").1);
        println!("{name}: vae encoder max abs error {err}");
        assert!(
            err < COMPONENT_TOLERANCE,
            "{name} vae encoder: max abs error {err}"
        );
    }
}

#[test]
fn taesd_encodes_and_decodes_as_diffusers_does() {
    let reference = Reference::file("taesd_tiny/reference.safetensors");
    for (name, device) in test_devices() {
        let config = TaesdConfig::from_json(&text("taesd_tiny", "vae_tiny/config.json")).unwrap();
        let (encoder, decoder) = component(
            "taesd_tiny",
            "vae_tiny/diffusion_pytorch_model.safetensors",
            &device,
            |w| {
                Ok((
                    TaesdEncoder::load(config.clone(), w)?,
                    TaesdDecoder::load(config, w)?,
                ))
            },
        );
        let encoded = values(encoder.encode(reference.tensor("image", &device)));
        let decoded = values(decoder.decode(reference.tensor("latents", &device)));
        let (e, d) = (
            max_abs_diff(&encoded, &reference.f32("encoded").1),
            max_abs_diff(&decoded, &reference.f32("decoded").1),
        );
        println!("{name}: TAESD encoder max abs error {e}, decoder {d}");
        assert!(
            e < COMPONENT_TOLERANCE && d < COMPONENT_TOLERANCE,
            "{name}: {e}, {d}"
        );
    }
}

#[test]
fn an_lcm_unet_with_an_embedded_guidance_scale_matches_diffusers() {
    let reference = Reference::file("lcm_unet/reference.safetensors");
    for (name, device) in test_devices() {
        let config = UNetConfig::from_json(&text("lcm_unet", "config.json")).unwrap();
        let unet = component(
            "lcm_unet",
            "diffusion_pytorch_model.safetensors",
            &device,
            |w| UNet::load(config, w),
        );
        assert!(unet.embeds_guidance());
        let scale = reference.f32("guidance_scale").1[0] as f64;
        let embedding = unet.guidance_embedding(scale).unwrap();
        let err = max_abs_diff(&values(embedding.clone()), &reference.f32("w_embedding").1);
        assert!(err < 1e-4, "{name}: guidance embedding error {err}");

        let t = reference.f32("timestep").1[0] as f64;
        let out = unet.forward_with(
            reference.tensor("x", &device),
            t,
            &reference.tensor("context", &device),
            Some(&embedding),
        );
        let err = max_abs_diff(&values(out), &reference.f32("out").1);
        println!("{name}: LCM UNet max abs error {err}");
        assert!(err < COMPONENT_TOLERANCE, "{name}: LCM UNet error {err}");
    }
}

#[test]
fn whole_pipelines_match_diffusers_images() {
    for (_, device) in test_devices() {
        for model in MODELS {
            check_pipeline(model, &device);
        }
    }
}

/// SD-Turbo's recipe (stabilityai/sd-turbo's scheduler: Euler, trailing spacing; 1 to 4
/// steps; no classifier-free guidance) on the tiny SD 2.x model gives diffusers' images.
#[test]
fn sd_turbo_one_and_four_steps_match_diffusers() {
    let reference = Reference::file("sd_turbo_tiny/reference.safetensors");
    for (name, device) in test_devices() {
        let source = common::Overlay::new("sd2_tiny", "sd_turbo_tiny", "scheduler/");
        let pipe = StableDiffusion::load(&source, &device).unwrap();
        for steps in [1, 4] {
            let opts = GenerateOptions {
                prompt: "a red ball on a small mirror".into(),
                guidance_scale: 0.0,
                timesteps: Timesteps::Count(steps),
                initial_latents: Some(reference.f32("latents").1),
                ..GenerateOptions::default()
            };
            let sampling = pipe.start(&opts).unwrap();
            let expected_t: Vec<f64> = (0..steps)
                .map(|i| (999 - i * 1000 / steps) as f64)
                .collect();
            assert_eq!(
                sampling.timesteps(),
                expected_t.as_slice(),
                "{name}: {steps} steps"
            );
            let done =
                pollster::block_on(pipe.generate(&opts, &mut NoHook, &CancelToken::new())).unwrap();
            let expected = reference.f32(&format!("image_{steps}")).1;
            let worst = common::worst_pixel(&done.image.rgb, &expected);
            eprintln!("{name}: SD-Turbo {steps} step(s): worst pixel {worst:.2}/255");
            assert!(
                worst <= 2.0,
                "{name}: {steps} steps: worst pixel off by {worst}/255"
            );
        }
    }
}

/// Zero terminal SNR (Lin et al. 2023) on the tiny SD 2.x model (tests/fixtures/sd2_zero_snr:
/// its own scheduler config with `rescale_betas_zero_snr`): the last timestep is pure noise,
/// so Euler starts at sigma 4096; with guidance rescale 0.7 and without, the 10-step guided
/// images are `StableDiffusionPipeline`'s. A rescale outside [0, 1], or on a transformer, is
/// refused.
#[test]
fn zero_terminal_snr_and_guidance_rescale_match_diffusers() {
    let reference = Reference::file("sd2_zero_snr/reference.safetensors");
    for (name, device) in test_devices() {
        let source = common::Overlay::new("sd2_tiny", "sd2_zero_snr", "scheduler/");
        let pipe = StableDiffusion::load(&source, &device).unwrap();
        for (rescale, key) in [(0.7, "image"), (0.0, "image_plain")] {
            let opts = GenerateOptions {
                prompt: "a red ball on a small mirror".into(),
                negative_prompt: "blurry".into(),
                guidance_scale: 7.5,
                guidance_rescale: rescale,
                timesteps: Timesteps::Count(10),
                initial_latents: Some(reference.f32("latents").1),
                ..GenerateOptions::default()
            };
            let sampling = pipe.start(&opts).unwrap();
            assert_eq!(sampling.timesteps()[0], 999.0);
            let done =
                pollster::block_on(pipe.generate(&opts, &mut NoHook, &CancelToken::new())).unwrap();
            let worst = common::worst_pixel(&done.image.rgb, &reference.f32(key).1);
            eprintln!(
                "{name}: zero terminal SNR, guidance rescale {rescale}: worst pixel {worst:.2}/255"
            );
            assert!(
                worst <= 1.0,
                "{name}: rescale {rescale}: {worst}/255 from diffusers"
            );
        }
    }
    let cpu = lina_runtime::device::cpu();
    let pipe = StableDiffusion::load(&DirSource::new(fixture("sd2_tiny")), &cpu).unwrap();
    let sd3 = StableDiffusion::load(&DirSource::new(fixture("sd3_tiny")), &cpu).unwrap();
    for (pipe, rescale, says) in [
        (&pipe, 1.5, "between 0 and 1"),
        (&pipe, f64::NAN, "between 0 and 1"),
        (&sd3, 0.5, "has none"),
    ] {
        let opts = GenerateOptions {
            prompt: "x".into(),
            guidance_rescale: rescale,
            ..GenerateOptions::default()
        };
        let err = pipe.start(&opts).map(|_| ()).unwrap_err().to_string();
        assert!(err.contains(says), "{err}");
    }
}
