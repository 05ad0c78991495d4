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
                    unet.text_time_input(pooled_t.clone().narrow(0, row, 1), &size)
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
/// spacing; no classifier-free guidance) on the tiny SDXL model. One step: an ancestral step
/// to sigma 0 adds no noise, so the image is diffusers' whatever the noise generator. Two and
/// four steps: given the noise diffusers' scheduler drew at each step (`step_noise`), the
/// image is diffusers' too; with the seed's own noise it is another image.
#[test]
fn sdxl_turbo_one_to_four_steps_match_diffusers() {
    let reference = Reference::file("sdxl_turbo_tiny/reference.safetensors");
    for (name, device) in test_devices() {
        let source = common::Overlay::new("sdxl_tiny", "sdxl_turbo_tiny", "scheduler/");
        let pipe = StableDiffusion::load(&source, &device).unwrap();
        let run = |steps: usize, step_noise: Option<Vec<f32>>| {
            let opts = GenerateOptions {
                prompt: PROMPT.into(),
                guidance_scale: 0.0,
                timesteps: Timesteps::Count(steps),
                initial_latents: Some(reference.f32("latents").1),
                step_noise,
                ..GenerateOptions::default()
            };
            pollster::block_on(pipe.generate(&opts, &mut NoHook, &CancelToken::new()))
        };
        let one = GenerateOptions {
            prompt: PROMPT.into(),
            timesteps: Timesteps::Count(1),
            ..GenerateOptions::default()
        };
        assert_eq!(pipe.start(&one).unwrap().timesteps(), &[999.0]);
        let done = run(1, None).unwrap();
        let worst = common::worst_pixel(&done.image.rgb, &reference.f32("image_1").1);
        assert!(
            worst <= 1.0,
            "{name}: SDXL-Turbo, one step: {worst}/255 from diffusers"
        );
        for steps in [2, 4] {
            let expected = reference.f32(&format!("image_{steps}")).1;
            let (shape, noise) = reference.f32(&format!("noise_{steps}"));
            assert_eq!(shape, vec![steps, 1, 4, 8, 8]);
            let done = run(steps, Some(noise.clone())).unwrap();
            let worst = common::worst_pixel(&done.image.rgb, &expected);
            assert!(
                worst <= 1.0,
                "{name}: SDXL-Turbo, {steps} steps with diffusers' noise: {worst}/255 from diffusers"
            );
            let seeded = run(steps, None).unwrap();
            let apart = common::worst_pixel(&seeded.image.rgb, &expected);
            assert!(
                apart > 4.0,
                "{name}: {steps} steps with the seed's noise should be another image, {apart}/255"
            );
            eprintln!(
                "{name}: SDXL-Turbo, {steps} steps: {worst}/255 from diffusers with its noise, {apart}/255 with the seed's"
            );
            // Noise for fewer steps than run: an error that says what fits, nothing run.
            let short = noise[..noise.len() - 256].to_vec();
            let Err(e) = run(steps, Some(short)) else {
                panic!("{name}: noise for fewer steps than run was taken");
            };
            assert_eq!(e.code(), "invalid_input", "{e}");
            assert!(e.to_string().contains(&format!("{steps} steps")), "{e}");
        }
    }
}

/// The SDXL refiner's layout (tests/fixtures/sdxl_refiner_tiny, `tools/make_fixtures.py
/// --only sdxl-refiner`): no first text encoder, SDXL's second alone (its penultimate states
/// and pooled output), five time ids with an aesthetic score (6 in the conditional row, 2.5 in
/// the unconditional one), an empty negative prompt encoded rather than zeroed. Its
/// embeddings and an img2img run (strength 0.5, diffusers patched to the same noise and the
/// latent mean) match diffusers' `StableDiffusionXLImg2ImgPipeline`; a LoRA for the first
/// text encoder it lacks is refused.
#[test]
fn sdxl_refiner_embeddings_and_img2img_match_diffusers() {
    use lina_runtime::image::Image;
    let reference = Reference::open("sdxl_refiner_tiny");
    let card = Image {
        width: 64,
        height: 64,
        rgb: reference
            .f32("card")
            .1
            .iter()
            .map(|&v| v.round() as u8)
            .collect(),
    };
    for (name, device) in test_devices() {
        let source = DirSource::new(fixture("sdxl_refiner_tiny"));
        let pipe = StableDiffusion::load(&source, &device).unwrap();
        let (_, embeds) = reference.f32("prompt_embeds");
        let (_, pooled) = reference.f32("pooled_embeds");
        let (half_e, half_p) = (embeds.len() / 2, pooled.len() / 2);
        for (i, text) in [NEGATIVE, PROMPT].into_iter().enumerate() {
            let ours = pipe.encode_prompt(text, 0).unwrap();
            let err = relative_diff(&values(ours.context), &embeds[i * half_e..(i + 1) * half_e]);
            assert!(err < 1e-5, "{name}: `{text}` context off by {err}");
            let p = values(ours.pooled.expect("the refiner has a pooled embedding"));
            let err = relative_diff(&p, &pooled[i * half_p..(i + 1) * half_p]);
            assert!(err < 1e-5, "{name}: `{text}` pooled off by {err}");
        }
        let opts = GenerateOptions {
            prompt: PROMPT.into(),
            negative_prompt: NEGATIVE.into(),
            guidance_scale: 7.5,
            timesteps: Timesteps::Count(10),
            initial_latents: Some(reference.f32("noise").1),
            init_image: Some(card.clone()),
            strength: 0.5,
            ..GenerateOptions::default()
        };
        let done =
            pollster::block_on(pipe.generate(&opts, &mut NoHook, &CancelToken::new())).unwrap();
        let worst = common::worst_pixel(&done.image.rgb, &reference.f32("image").1);
        eprintln!("{name}: SDXL refiner img2img, worst pixel {worst:.2}/255");
        assert!(
            worst <= 1.0,
            "{name}: refiner img2img {worst}/255 from diffusers"
        );
    }
}

/// The ensemble of experts: SDXL base runs the first 80% of the schedule and hands its
/// latents over (`denoising_end`), the refiner runs the rest from them with no noise added
/// (`handoff`), as diffusers' `denoising_end` / `denoising_start` do. The base's latents and
/// the refiner's image match diffusers', separately and chained; bad fractions and two starts
/// at once are refused.
#[test]
fn sdxl_base_hands_its_latents_to_the_refiner_as_diffusers_does() {
    use lina_runtime::pipeline::Handoff;
    let reference = Reference::open("sdxl_refiner_tiny");
    let (_, expected_latents) = reference.f32("handoff_latents");
    let expected_image = reference.f32("handoff_image").1;
    for (name, device) in test_devices() {
        let (base, refiner, common_opts) = base_and_refiner(&device);
        let run = |pipe: &StableDiffusion, opts: &GenerateOptions| {
            pollster::block_on(pipe.generate(opts, &mut NoHook, &CancelToken::new()))
        };
        let first = run(
            &base,
            &GenerateOptions {
                initial_latents: Some(reference.f32("handoff_start").1),
                denoising_end: Some(0.8),
                ..common_opts.clone()
            },
        )
        .unwrap();
        assert_eq!(
            first.evaluations,
            2 * 8,
            "{name}: 8 of the 10 steps, guided"
        );
        let ours = first
            .latents
            .expect("a run that stops early hands its latents over");
        let err = relative_diff(&ours, &expected_latents);
        assert!(err < 1e-4, "{name}: handed-over latents off by {err}");

        let refine = |latents: Vec<f32>| {
            run(
                &refiner,
                &GenerateOptions {
                    handoff: Some(Handoff {
                        latents,
                        denoising_start: 0.8,
                    }),
                    ..common_opts.clone()
                },
            )
        };
        let done = refine(expected_latents.clone()).unwrap();
        assert_eq!(done.evaluations, 2 * 2, "{name}: the last 2 steps");
        assert!(done.latents.is_none());
        let worst = common::worst_pixel(&done.image.rgb, &expected_image);
        let chained = refine(ours).unwrap();
        let worst_chained = common::worst_pixel(&chained.image.rgb, &expected_image);
        eprintln!(
            "{name}: refiner from diffusers' latents {worst:.2}/255, from ours {worst_chained:.2}/255"
        );
        assert!(
            worst <= 1.0,
            "{name}: refiner image {worst}/255 from diffusers'"
        );
        assert!(worst_chained <= 1.0, "{name}: chained {worst_chained}/255");

        for (opts, says) in [
            (
                GenerateOptions {
                    denoising_end: Some(1.5),
                    ..common_opts.clone()
                },
                "denoising_end must be in (0, 1)",
            ),
            (
                GenerateOptions {
                    handoff: Some(Handoff {
                        latents: expected_latents.clone(),
                        denoising_start: 0.8,
                    }),
                    initial_latents: Some(expected_latents.clone()),
                    ..common_opts.clone()
                },
                "two starts",
            ),
            (
                GenerateOptions {
                    handoff: Some(Handoff {
                        latents: expected_latents[1..].to_vec(),
                        denoising_start: 0.8,
                    }),
                    ..common_opts.clone()
                },
                "handoff latents have 255 values",
            ),
            (
                GenerateOptions {
                    handoff: Some(Handoff {
                        latents: expected_latents.clone(),
                        denoising_start: 0.5,
                    }),
                    denoising_end: Some(0.3),
                    ..common_opts.clone()
                },
                "leaves no step to run",
            ),
        ] {
            let Err(e) = run(&refiner, &opts) else {
                panic!("{name}: {says}: accepted");
            };
            assert_eq!(e.code(), "invalid_input", "{e}");
            assert!(e.to_string().contains(says), "{e}");
        }
    }
}

/// LINA's step windows are fractions of the steps a run takes: SDXL base stopping at 0.8 of
/// 10 steps takes steps 0..8, the refiner continuing from there 8..10, an img2img at strength
/// 0.5 5..10. So the first half of a plan's window acts at steps 0..4 in the base and at step
/// 8 in the refiner, where counted from the schedule's start it would never act there.
#[test]
fn lina_windows_count_the_steps_a_handed_over_run_takes() {
    use lina_runtime::pipeline::Handoff;
    let (base, refiner, common_opts) = base_and_refiner(&lina_runtime::device::cpu());
    let run_of = |pipe: &StableDiffusion, opts: &GenerateOptions| {
        let timesteps = pipe.scheduler_for(opts).unwrap().timesteps().to_vec();
        pipe.steps_run(opts, &timesteps).unwrap()
    };
    let stops = GenerateOptions {
        denoising_end: Some(0.8),
        ..common_opts.clone()
    };
    assert_eq!(run_of(&base, &stops), 0..8);
    assert_eq!(lina::steps_of([0.0, 0.5], run_of(&base, &stops)), 0..4);
    let handed = GenerateOptions {
        handoff: Some(Handoff {
            latents: vec![0.5; 4 * 8 * 8],
            denoising_start: 0.8,
        }),
        ..common_opts.clone()
    };
    assert_eq!(run_of(&refiner, &handed), 8..10);
    assert_eq!(lina::steps_of([0.0, 0.5], run_of(&refiner, &handed)), 8..9);
    let img2img = GenerateOptions {
        init_image: Some(lina_runtime::image::Image {
            width: 64,
            height: 64,
            rgb: vec![128; 64 * 64 * 3],
        }),
        strength: 0.5,
        ..common_opts.clone()
    };
    assert_eq!(run_of(&refiner, &img2img), 5..10);

    // A plan's attention control in the first half of the run changes the refiner's image:
    // it acts at step 8.
    let csg = lina_csg::parse::parse(PROMPT).unwrap();
    let plan = lina::Plan {
        attention_strength: lina::Plan::ATTENTION_STRENGTH,
        attention_window: [0.0, 0.5],
        ..lina::Plan::default()
    };
    let draw = |plan: &lina::Plan| {
        pollster::block_on(lina::generate(
            &refiner,
            &handed,
            &csg,
            plan,
            &mut NoHook,
            &CancelToken::new(),
        ))
        .unwrap()
    };
    let steered = draw(&plan);
    assert!(
        steered
            .described
            .iter()
            .any(|d| d.starts_with("region-controlled attention")),
        "{:?}",
        steered.described
    );
    let plain = draw(&lina::Plan::default());
    assert_eq!(
        steered.evaluations, plain.evaluations,
        "no extra model call"
    );
    assert_ne!(
        steered.generated.image.rgb, plain.generated.image.rgb,
        "the control acted within the refiner's steps"
    );
}

/// The tiny SDXL base and refiner on `device`, and the options of their reference runs (the
/// prompt, the negative, guidance 7.5, 10 steps).
fn base_and_refiner(
    device: &burn::tensor::Device,
) -> (StableDiffusion, StableDiffusion, GenerateOptions) {
    let load = |model| StableDiffusion::load(&DirSource::new(fixture(model)), device).unwrap();
    let opts = GenerateOptions {
        prompt: PROMPT.into(),
        negative_prompt: NEGATIVE.into(),
        guidance_scale: 7.5,
        timesteps: Timesteps::Count(10),
        ..GenerateOptions::default()
    };
    (load("sdxl_tiny"), load("sdxl_refiner_tiny"), opts)
}
