#![cfg(not(target_arch = "wasm32"))]
//! img2img and inpainting on the tiny SD1-like fixture: the strength picks how many steps
//! run, an empty mask keeps the init image, a half mask keeps half of it; bad inputs are
//! clear errors.

mod common;

use burn::tensor::Tensor;
use common::fixture;
use lina_runtime::image::Image;
use lina_runtime::models::denoiser::ImageCondition;
use lina_runtime::pipeline::{
    CancelToken, GenerateOptions, NoHook, StableDiffusion, StepHook, StepState,
};
use lina_runtime::schedulers::Timesteps;
use lina_runtime::source::DirSource;

fn pipe() -> StableDiffusion {
    StableDiffusion::load(
        &DirSource::new(fixture("sd1_tiny")),
        &lina_runtime::device::cpu(),
    )
    .unwrap()
}

/// A 64x64 test card: four flat quadrants.
fn card() -> Image {
    let mut rgb = Vec::new();
    for y in 0..64 {
        for x in 0..64 {
            rgb.extend_from_slice(match (x < 32, y < 32) {
                (true, true) => &[220, 40, 40],
                (false, true) => &[40, 200, 60],
                (true, false) => &[40, 60, 210],
                (false, false) => &[230, 220, 200],
            });
        }
    }
    Image {
        width: 64,
        height: 64,
        rgb,
    }
}

fn opts() -> GenerateOptions {
    GenerateOptions {
        prompt: "a red ball on a small mirror".into(),
        seed: 3,
        timesteps: Timesteps::Count(10),
        init_image: Some(card()),
        ..GenerateOptions::default()
    }
}

fn run(
    pipe: &StableDiffusion,
    o: &GenerateOptions,
    hook: &mut dyn StepHook,
) -> lina_runtime::Result<Image> {
    pollster::block_on(pipe.generate(o, hook, &CancelToken::new())).map(|g| g.image)
}

/// The VAE's own round trip of an image: what "kept" pixels come back as.
fn round_trip(pipe: &StableDiffusion, image: &Image) -> Image {
    let device = pipe.device();
    let z: Tensor<4> = pipe
        .vae_encoder()
        .unwrap()
        .encode_scaled(image.to_tensor(device));
    pollster::block_on(Image::from_decoded(pipe.vae().decode_scaled(z))).unwrap()
}

struct Count(usize);
impl StepHook for Count {
    fn after_step(&mut self, _: &mut StepState) -> lina_runtime::Result<()> {
        self.0 += 1;
        Ok(())
    }
}

#[test]
fn the_strength_sets_how_many_steps_run() {
    let pipe = pipe();
    for (strength, steps) in [(1.0, 10), (0.5, 5), (0.25, 2)] {
        let mut count = Count(0);
        run(&pipe, &GenerateOptions { strength, ..opts() }, &mut count).unwrap();
        assert_eq!(count.0, steps, "strength {strength}");
    }
}

fn worst(a: &Image, b: &Image, columns: std::ops::Range<usize>) -> u8 {
    let mut worst = 0;
    for y in 0..64 {
        for x in columns.clone() {
            for c in 0..3 {
                let i = (y * 64 + x) * 3 + c;
                worst = worst.max(a.rgb[i].abs_diff(b.rgb[i]));
            }
        }
    }
    worst
}

#[test]
fn inpainting_keeps_what_the_mask_keeps() {
    let pipe = pipe();
    let kept = round_trip(&pipe, &card());
    // An empty mask keeps everything: the result is the init image's round trip.
    let nothing = GenerateOptions {
        mask: Some(vec![0.0; 64 * 64]),
        strength: 1.0,
        ..opts()
    };
    let out = run(&pipe, &nothing, &mut NoHook).unwrap();
    assert!(
        worst(&out, &kept, 0..64) <= 1,
        "{}",
        worst(&out, &kept, 0..64)
    );

    // Regenerating the left half: the right half's latents end as the init image's, the
    // left half's do not. (Pixels are not compared: this random VAE's attention mixes the
    // whole image, so a trained one's locality cannot be assumed here.)
    let left: Vec<f32> = (0..64 * 64).map(|i| ((i % 64) < 32) as u8 as f32).collect();
    let half = GenerateOptions {
        mask: Some(left),
        strength: 1.0,
        ..opts()
    };
    let mut sampling = pipe.start(&half).unwrap();
    while !sampling.is_done() {
        sampling.step(&mut NoHook).unwrap();
    }
    let init = pipe
        .vae_encoder()
        .unwrap()
        .encode_scaled(card().to_tensor(pipe.device()));
    let [_, c, h, w] = init.dims();
    let ours = common::values(sampling.latents().clone());
    let theirs = common::values(init);
    let (mut kept, mut changed) = (0f32, 0f32);
    for ch in 0..c {
        for y in 0..h {
            for x in 0..w {
                let i = (ch * h + y) * w + x;
                let d = (ours[i] - theirs[i]).abs();
                if x >= w / 2 {
                    kept = kept.max(d)
                } else {
                    changed = changed.max(d)
                }
            }
        }
    }
    assert!(kept < 1e-6, "kept latents moved by {kept}");
    assert!(changed > 0.1, "regenerated latents moved only {changed}");
}

#[test]
fn bad_img2img_inputs_are_clear_errors() {
    let pipe = pipe();
    let cases: Vec<(GenerateOptions, &str)> = vec![
        (
            GenerateOptions {
                strength: 0.0,
                ..opts()
            },
            "strength",
        ),
        (
            GenerateOptions {
                strength: 0.05,
                ..opts()
            },
            "leaves none",
        ),
        (
            GenerateOptions {
                mask: Some(vec![1.0; 10]),
                ..opts()
            },
            "mask has 10 values",
        ),
        (
            GenerateOptions {
                init_image: None,
                mask: Some(vec![1.0; 64 * 64]),
                ..opts()
            },
            "needs an init image",
        ),
        (
            GenerateOptions {
                init_image: Some(Image {
                    width: 32,
                    height: 32,
                    rgb: vec![0; 32 * 32 * 3],
                }),
                ..opts()
            },
            "init image is 32x32",
        ),
    ];
    for (o, word) in cases {
        let err = run(&pipe, &o, &mut NoHook).unwrap_err().to_string();
        assert!(err.contains(word), "{word}: {err}");
    }
}

#[test]
fn pngs_round_trip_and_bad_ones_are_errors() {
    let image = card();
    assert_eq!(Image::from_png(&image.to_png().unwrap()).unwrap(), image);
    let err = Image::from_png(b"not a png").unwrap_err().to_string();
    assert!(err.contains("PNG"), "{err}");
}

/// The test card and the inpainting mask (0..1) that a diffusers reference was made with.
fn card_and_mask(reference: &common::Reference) -> (Image, Vec<f32>) {
    let card = Image {
        width: 64,
        height: 64,
        rgb: reference.u8("card"),
    };
    let mask = reference
        .u8("mask")
        .iter()
        .map(|&v| v as f32 / 255.0)
        .collect();
    (card, mask)
}

/// SD's 9-channel inpainting UNets take the mask and the masked image's latents next to the
/// latents; the tiny one through the whole pipeline gives diffusers' image (diffusers patched
/// to encode the masked image with the latent mean, as this runtime does).
#[test]
fn a_nine_channel_inpainting_unet_matches_diffusers() {
    let reference = common::Reference::file("sd1_inpaint_tiny/reference.safetensors");
    for (name, device) in common::test_devices() {
        let source = common::Overlay::new("sd1_tiny", "sd1_inpaint_tiny", "unet/");
        let pipe = StableDiffusion::load(&source, &device).unwrap();
        assert_eq!(pipe.image_condition(), ImageCondition::Inpaint);
        let (card, mask) = card_and_mask(&reference);
        let opts = GenerateOptions {
            prompt: "a red ball on a small mirror".into(),
            negative_prompt: "blurry".into(),
            guidance_scale: 7.5,
            timesteps: Timesteps::Count(10),
            initial_latents: Some(reference.f32("latents").1),
            init_image: Some(card.clone()),
            mask: Some(mask),
            strength: 1.0,
            ..GenerateOptions::default()
        };
        let done =
            pollster::block_on(pipe.generate(&opts, &mut NoHook, &CancelToken::new())).unwrap();
        let worst = common::worst_pixel(&done.image.rgb, &reference.f32("image").1);
        eprintln!("{name}: 9-channel inpainting, worst pixel {worst:.2}/255");
        assert!(worst <= 2.0, "{name}: worst pixel off by {worst}/255");

        // Without a mask it refuses, saying why.
        let e = match pipe.start(&GenerateOptions { mask: None, ..opts }) {
            Ok(_) => panic!("an inpainting model without a mask should be refused"),
            Err(e) => e.to_string(),
        };
        assert!(e.contains("inpainting model"), "{e}");
    }
}

/// img2img (strength 0.6) and latent-blend inpainting (strength 0.75) on the tiny SD 1.x
/// model give diffusers' images, with diffusers patched to the same noise and to the latent
/// mean (tools/make_fixtures.py --only img2img).
#[test]
fn img2img_and_latent_blend_inpainting_match_diffusers() {
    let reference = common::Reference::file("sd1_tiny/img2img_reference.safetensors");
    let (card, mask) = card_and_mask(&reference);
    for (name, device) in common::test_devices() {
        let pipe = StableDiffusion::load(&DirSource::new(fixture("sd1_tiny")), &device).unwrap();
        let base = GenerateOptions {
            prompt: "a red ball on a small mirror".into(),
            negative_prompt: "blurry".into(),
            guidance_scale: 7.5,
            timesteps: Timesteps::Count(10),
            initial_latents: Some(reference.f32("noise").1),
            init_image: Some(card.clone()),
            ..GenerateOptions::default()
        };
        for (what, opts) in [
            (
                "img2img",
                GenerateOptions {
                    strength: 0.6,
                    ..base.clone()
                },
            ),
            (
                "inpaint",
                GenerateOptions {
                    strength: 0.75,
                    mask: Some(mask.clone()),
                    ..base.clone()
                },
            ),
        ] {
            let done =
                pollster::block_on(pipe.generate(&opts, &mut NoHook, &CancelToken::new())).unwrap();
            let worst = common::worst_pixel(&done.image.rgb, &reference.f32(what).1);
            eprintln!("{name}: {what}, worst pixel {worst:.2}/255");
            assert!(
                worst <= 2.0,
                "{name}: {what}: worst pixel off by {worst}/255"
            );
        }
    }
}

/// img2img (strength 0.6) and latent-blend inpainting (strength 0.75) on SDXL, SD 3 and FLUX
/// give diffusers' images (`StableDiffusionXLImg2ImgPipeline` and its inpainting pipeline on
/// the tiny SDXL, `FluxImg2ImgPipeline` and `FluxInpaintPipeline` on the tiny FLUX, SD 3's on
/// the tiny SD 3), at 48x32 with a diagonal mask, diffusers patched to the same noise and to
/// the latent mean (tools/make_fixtures.py --only sdxl-img2img, --only flow-img2img). The
/// flow-matching pipelines count the steps a strength runs their own way (8 of 10 at 0.75,
/// where the UNets' run 7). SD 3's inpainting reference is its latents decoded with the VAE's
/// shift, which diffusers 0.42's inpainting pipeline drops (diffusers issue 13611).
#[test]
fn img2img_and_inpainting_on_sdxl_sd3_and_flux_match_diffusers() {
    let flow = common::Reference::file("flow_img2img/reference.safetensors");
    let sdxl = common::Reference::file("sdxl_tiny/img2img_reference.safetensors");
    let card = Image {
        width: 48,
        height: 32,
        rgb: flow.u8("card"),
    };
    let mask: Vec<f32> = flow.u8("mask").iter().map(|&v| v as f32 / 255.0).collect();
    assert_eq!(
        sdxl.u8("mask"),
        flow.u8("mask"),
        "one mask for every family"
    );
    let runs = [
        ("sdxl_tiny", &sdxl, "", 7.5, "blurry"),
        ("sd3_tiny", &flow, "sd3_", 7.5, "blurry"),
        ("flux_tiny", &flow, "flux_", 3.5, ""),
    ];
    for (name, device) in common::test_devices() {
        for &(model, reference, prefix, guidance, negative) in &runs {
            let pipe = StableDiffusion::load(&DirSource::new(fixture(model)), &device).unwrap();
            let base = GenerateOptions {
                prompt: "a red ball on a small mirror".into(),
                negative_prompt: negative.into(),
                guidance_scale: guidance,
                timesteps: Timesteps::Count(10),
                width: Some(48),
                height: Some(32),
                initial_latents: Some(reference.f32(&format!("{prefix}noise")).1),
                init_image: Some(card.clone()),
                ..GenerateOptions::default()
            };
            for (what, strength, mask) in [("img2img", 0.6, None), ("inpaint", 0.75, Some(&mask))] {
                let opts = GenerateOptions {
                    strength,
                    mask: mask.cloned(),
                    ..base.clone()
                };
                let done =
                    pollster::block_on(pipe.generate(&opts, &mut NoHook, &CancelToken::new()))
                        .unwrap();
                let expected = reference.f32(&format!("{prefix}{what}")).1;
                let worst = common::worst_pixel(&done.image.rgb, &expected);
                eprintln!("{name}: {model} {what}, worst pixel {worst:.2}/255");
                assert!(
                    worst <= 1.0,
                    "{name}: {model} {what} {worst}/255 from diffusers"
                );
            }
        }
    }
}

/// Images are resized as Pillow's `Image.resize(size, Image.LANCZOS)` resizes them, which
/// diffusers gives a PIL image (tests/fixtures/resize, made by Pillow): to the byte, for a
/// card with sharp edges (whose lobes overshoot and clamp) and for noise, shrinking,
/// growing, and along one axis only. A zero size, or bytes that do not fill the image, are
/// refused.
#[test]
fn images_resize_as_pillow_does() {
    let cases: serde_json::Value =
        serde_json::from_slice(&common::read_fixture("resize/cases.json")).unwrap();
    let cases = cases["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 8);
    for case in cases {
        let png = |key: &str| {
            let name = format!("resize/{}", case[key].as_str().unwrap());
            Image::from_png(&common::read_fixture(&name)).unwrap()
        };
        let (source, expected) = (png("source"), png("resized"));
        let size = |key: &str| case[key].as_u64().unwrap() as usize;
        let ours = source.resized(size("width"), size("height")).unwrap();
        assert_eq!((ours.width, ours.height), (expected.width, expected.height));
        let off = ours
            .rgb
            .iter()
            .zip(&expected.rgb)
            .filter(|(a, b)| a != b)
            .count();
        assert_eq!(off, 0, "{case}: {off} bytes differ from Pillow's");
    }
    let card = card();
    assert_eq!(card.resized(64, 64).unwrap(), card);
    let err = card.resized(0, 10).unwrap_err().to_string();
    assert!(err.contains("0x10"), "{err}");
    let short = Image {
        rgb: card.rgb[1..].to_vec(),
        ..card
    };
    let err = short.resized(32, 32).unwrap_err().to_string();
    assert!(err.contains("not 12288"), "{err}");
}
