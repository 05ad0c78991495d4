#![cfg(not(target_arch = "wasm32"))]
//! SDXL (tests/fixtures/sdxl_tiny, made by `tools/make_fixtures.py --only sdxl`): two text
//! encoders whose penultimate states sit side by side, the second's pooled and projected
//! output, the size conditioning added to the time embedding, zeros for an empty negative
//! prompt; against diffusers' `StableDiffusionXLPipeline`, on the CPU backend and (with
//! LINA_TEST_GPU=1) on wgpu.

mod common;

use burn::tensor::Tensor;
use common::{Reference, fixture, relative_diff, test_devices, values};
use lina_runtime::pipeline::{CancelToken, GenerateOptions, NoHook, StableDiffusion};
use lina_runtime::schedulers::Timesteps;
use lina_runtime::source::{DirSource, FileSource};

const PROMPT: &str = "a red ball on a small mirror";
const NEGATIVE: &str = "blurry";

#[test]
fn sdxl_embeddings_unet_and_images_match_diffusers() {
    let reference = Reference::open("sdxl_tiny");
    for (name, device) in test_devices() {
        let pipe = StableDiffusion::load(&DirSource::new(fixture("sdxl_tiny")), &device).unwrap();

        // Embeddings: [negative; positive], as the pipeline fed them to the UNet.
        let (_, embeds) = reference.f32("prompt_embeds");
        let (_, pooled) = reference.f32("pooled_embeds");
        let half_e = embeds.len() / 2;
        let half_p = pooled.len() / 2;
        for (i, text) in [NEGATIVE, PROMPT].into_iter().enumerate() {
            let ours = pipe.encode_prompt(text, 0).unwrap();
            let context = values(ours.context);
            let err = relative_diff(&context, &embeds[i * half_e..(i + 1) * half_e]);
            assert!(
                err < 1e-5,
                "{name}: `{text}` context off by {err} (relative)"
            );
            let p = values(ours.pooled.expect("SDXL has a pooled embedding"));
            let err = relative_diff(&p, &pooled[i * half_p..(i + 1) * half_p]);
            assert!(
                err < 1e-5,
                "{name}: `{text}` pooled off by {err} (relative)"
            );
        }

        // One UNet call with the added conditioning.
        let unet = pipe.unet().expect("a UNet model");
        let size = [64.0, 64.0, 0.0, 0.0, 64.0, 64.0];
        let pooled_t: Tensor<2> = reference.tensor("pooled_embeds", &device);
        let added = Tensor::cat(
            (0..2)
                .map(|row| {
                    unet.text_time_input(pooled_t.clone().narrow(0, row, 1), size)
                        .expect("SDXL's UNet takes text and time")
                })
                .collect(),
            0,
        );
        let out = unet.forward_with(
            reference.tensor("unet_sample", &device),
            501.0,
            &reference.tensor("prompt_embeds", &device),
            Some(&added),
        );
        let err = relative_diff(&values(out), &reference.f32("unet_out").1);
        assert!(err < 1e-4, "{name}: UNet off by {err} (relative)");

        // Whole images: with a negative prompt, and with none (zeros).
        for (key, negative, steps) in [("image", NEGATIVE, 10), ("image_empty_negative", "", 4)] {
            let opts = GenerateOptions {
                prompt: PROMPT.into(),
                negative_prompt: negative.into(),
                timesteps: Timesteps::Count(steps),
                guidance_scale: 7.5,
                width: Some(64),
                height: Some(64),
                initial_latents: Some(reference.f32("latents").1),
                ..GenerateOptions::default()
            };
            let done =
                pollster::block_on(pipe.generate(&opts, &mut NoHook, &CancelToken::new())).unwrap();
            let worst = common::worst_pixel(&done.image.rgb, &reference.f32(key).1);
            assert!(worst <= 1.0, "{name} {key}: {worst}/255 from diffusers");
        }
    }
}

/// The fixture with some files hidden or replaced.
struct Edited {
    base: DirSource,
    hidden: &'static str,
}

impl FileSource for Edited {
    fn read(&self, path: &str) -> lina_runtime::Result<Option<Vec<u8>>> {
        if path.starts_with(self.hidden) {
            return Ok(None);
        }
        self.base.read(path)
    }
}

#[test]
fn an_sdxl_unet_without_its_second_text_encoder_is_refused_by_name() {
    let edited = Edited {
        base: DirSource::new(fixture("sdxl_tiny")),
        hidden: "text_encoder_2/",
    };
    let e = match StableDiffusion::load(&edited, &lina_runtime::device::cpu()) {
        Ok(_) => panic!("loaded without text_encoder_2"),
        Err(e) => e,
    };
    assert_eq!(e.code(), "missing_file", "{e}");
    assert!(e.to_string().contains("text_encoder_2"), "{e}");

    // A truncated embedding is refused, leaving the model usable.
    let mut pipe = StableDiffusion::load(
        &DirSource::new(fixture("sdxl_tiny")),
        &lina_runtime::device::cpu(),
    )
    .unwrap();
    let e = pipe.add_embedding("<x>", "x.safetensors", &[]).unwrap_err();
    assert_eq!(e.code(), "weight_file", "{e}");
    pipe.encode_prompt(PROMPT, 0).unwrap();
}

/// SDXL-Turbo's recipe (stabilityai/sdxl-turbo's scheduler: Euler ancestral, trailing
/// spacing; no classifier-free guidance) on the tiny SDXL model, one step: an ancestral step
/// to sigma 0 adds no noise, so the image is diffusers' whatever the noise generator.
#[test]
fn sdxl_turbo_one_step_matches_diffusers() {
    let reference = Reference::file("sdxl_turbo_tiny/reference.safetensors");
    for (name, device) in test_devices() {
        let source = common::Overlay::new("sdxl_tiny", "sdxl_turbo_tiny", "scheduler/");
        let pipe = StableDiffusion::load(&source, &device).unwrap();
        let opts = GenerateOptions {
            prompt: PROMPT.into(),
            guidance_scale: 0.0,
            timesteps: Timesteps::Count(1),
            initial_latents: Some(reference.f32("latents").1),
            ..GenerateOptions::default()
        };
        assert_eq!(pipe.start(&opts).unwrap().timesteps(), &[999.0]);
        let done =
            pollster::block_on(pipe.generate(&opts, &mut NoHook, &CancelToken::new())).unwrap();
        let worst = common::worst_pixel(&done.image.rgb, &reference.f32("image_1").1);
        assert!(
            worst <= 1.0,
            "{name}: SDXL-Turbo, one step: {worst}/255 from diffusers"
        );
    }
}
