//! ControlNet and T2I-Adapter beside an SD 1.x UNet, against diffusers'
//! `StableDiffusionControlNetPipeline` and `StableDiffusionAdapterPipeline`
//! (tests/fixtures/controlnet_tiny and t2i_adapter_tiny, made by `tools/make_fixtures.py
//! --only controlnet | t2i-adapter`), and the side networks and inputs they refuse.

mod common;

use common::{Reference, fixture};
use lina_runtime::image::Image;
use lina_runtime::pipeline::{
    CancelToken, ControlNetInput, GenerateOptions, NoHook, StableDiffusion, T2IAdapterInput,
};
use lina_runtime::schedulers::Timesteps;
use lina_runtime::source::{DirSource, MemorySource};

fn card(reference: &Reference) -> Image {
    Image {
        width: 64,
        height: 64,
        rgb: reference.u8("card"),
    }
}

fn options(reference: &Reference) -> GenerateOptions {
    GenerateOptions {
        prompt: "a red ball on a small mirror".into(),
        negative_prompt: "blurry".into(),
        guidance_scale: 7.5,
        timesteps: Timesteps::Count(10),
        initial_latents: Some(reference.f32("latents").1),
        controlnets: vec![ControlNetInput::new(card(reference))],
        ..GenerateOptions::default()
    }
}

/// The options with the one ControlNet at `scale` over `window`.
fn steered(reference: &Reference, scale: f64, window: (f64, f64)) -> GenerateOptions {
    GenerateOptions {
        controlnets: vec![ControlNetInput {
            image: card(reference),
            scale,
            window,
        }],
        ..options(reference)
    }
}

fn with_controlnet(device: &burn::tensor::Device) -> StableDiffusion {
    let mut pipe = StableDiffusion::load(&DirSource::new(fixture("sd1_tiny")), device).unwrap();
    let files = DirSource::new(fixture("controlnet_tiny"));
    pipe.load_controlnet(&files, "").unwrap();
    pipe
}

/// A change to a ControlNet's config.json.
type Edit = dyn Fn(&mut serde_json::Value);

fn refused(pipe: &StableDiffusion, opts: &GenerateOptions) -> String {
    match pipe.start(opts) {
        Ok(_) => panic!("should be refused"),
        Err(e) => e.to_string(),
    }
}

/// The tiny ControlNet (a copy of sd1_tiny's down half, every layer random, its zero
/// convolutions included) steers sd1_tiny's 10 guided steps as diffusers' pipeline does:
/// at scale 1 over the whole schedule, at 0.6 from 20% to 80% of the steps (the window
/// diffusers' `control_guidance_start`/`_end` set), at scale 0, where it adds nothing, and
/// in guess mode (the conditional row alone, each addition at its share of the scale); and
/// beside img2img at strength 0.6 with a window counted over the steps the run takes, as
/// `StableDiffusionControlNetImg2ImgPipeline` counts it. Each image is diffusers' within
/// 1/255; the ControlNet moves the image far more.
#[test]
fn a_controlnet_steers_the_unet_as_diffusers() {
    let reference = Reference::open("controlnet_tiny");
    let cases = [
        ("image", 1.0, (0.0, 1.0), false),
        ("image_window", 0.6, (0.2, 0.8), false),
        ("image_unguided", 0.0, (0.0, 1.0), false),
        ("image_guess", 1.0, (0.0, 1.0), true),
    ];
    for (name, device) in common::test_devices() {
        let pipe = with_controlnet(&device);
        for (case, scale, window, guess) in cases {
            let opts = GenerateOptions {
                controlnet_guess_mode: guess,
                ..steered(&reference, scale, window)
            };
            let done =
                pollster::block_on(pipe.generate(&opts, &mut NoHook, &CancelToken::new())).unwrap();
            let worst = common::worst_pixel(&done.image.rgb, &reference.f32(case).1);
            eprintln!("{name}: ControlNet {case}, worst pixel {worst:.2}/255");
            assert!(worst <= 1.0, "{name} {case}: {worst}/255 from diffusers");
        }
        // img2img beside the ControlNet: its window spans the 6 steps the run takes.
        let img2img = GenerateOptions {
            init_image: Some(Image {
                width: 64,
                height: 64,
                rgb: reference.u8("start"),
            }),
            strength: 0.6,
            initial_latents: Some(reference.f32("noise").1),
            ..steered(&reference, 0.8, (0.2, 0.7))
        };
        let done =
            pollster::block_on(pipe.generate(&img2img, &mut NoHook, &CancelToken::new())).unwrap();
        let worst = common::worst_pixel(&done.image.rgb, &reference.f32("image_img2img").1);
        eprintln!("{name}: ControlNet img2img, worst pixel {worst:.2}/255");
        assert!(worst <= 1.0, "{name} img2img: {worst}/255 from diffusers");
    }
    let unguided = reference.f32("image_unguided").1;
    let image = reference.f32("image").1;
    let moved = common::max_abs_diff(&image, &unguided) * 255.0;
    assert!(
        moved > 8.0,
        "the reference ControlNet moves its image by only {moved}/255"
    );
}

/// An SDXL ControlNet (tests/fixtures/controlnet_sdxl_tiny, a copy of sdxl_tiny's down half)
/// also reads SDXL's pooled text and size input; beside sdxl_tiny's UNet at scale 0.8 it
/// gives diffusers' `StableDiffusionXLControlNetPipeline` image within 1/255, and at scale 0
/// the image without it.
#[test]
fn an_sdxl_controlnet_reads_the_pooled_text_and_size_as_diffusers() {
    let reference = Reference::open("controlnet_sdxl_tiny");
    for (name, device) in common::test_devices() {
        let mut pipe =
            StableDiffusion::load(&DirSource::new(fixture("sdxl_tiny")), &device).unwrap();
        let files = DirSource::new(fixture("controlnet_sdxl_tiny"));
        pipe.load_controlnet(&files, "").unwrap();
        assert!(pipe.controlnets()[0].takes_text_time());
        for (case, scale) in [("image", 0.8), ("image_unguided", 0.0)] {
            let opts = steered(&reference, scale, (0.0, 1.0));
            let done =
                pollster::block_on(pipe.generate(&opts, &mut NoHook, &CancelToken::new())).unwrap();
            let worst = common::worst_pixel(&done.image.rgb, &reference.f32(case).1);
            eprintln!("{name}: SDXL ControlNet {case}, worst pixel {worst:.2}/255");
            assert!(worst <= 1.0, "{name} {case}: {worst}/255 from diffusers");
        }
    }
}

/// controlnet_tiny's tensors under the names an original ControlNet file gives them
/// (tests/fixtures/single_file/controlnet_tiny.json, checked against diffusers' converter by
/// `tools/make_single_file.py --only controlnet`), each name passed through `name`.
fn original_file(name: impl Fn(&str) -> String) -> Vec<u8> {
    let map: serde_json::Value =
        serde_json::from_slice(&common::read_fixture("single_file/controlnet_tiny.json")).unwrap();
    let diffusers = common::f32_tensors(&common::read_fixture(
        "controlnet_tiny/diffusion_pytorch_model.safetensors",
    ));
    let tensors: common::F32Tensors = map["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| {
            let theirs = entry[2][0].as_str().unwrap();
            (name(entry[0].as_str().unwrap()), diffusers[theirs].clone())
        })
        .collect();
    assert_eq!(tensors.len(), diffusers.len());
    common::f32_safetensors(&tensors)
}

/// A ControlNet's folder holding `weights` as its weight file, with `config` where given.
fn controlnet_folder(weights: Vec<u8>, config: Option<&str>) -> MemorySource {
    let mut files = MemorySource::new();
    files.insert("diffusion_pytorch_model.safetensors", weights);
    if let Some(json) = config {
        files.insert("config.json", json.as_bytes().to_vec());
    }
    files
}

/// An original ControlNet file (lllyasviel's layout: `control_model.input_hint_block.*`,
/// `zero_convs.*`, `middle_block_out.*` and the UNet's down half in LDM names), with its
/// prefix or bare, loads without a config (inferred from its shapes: the conditioning
/// embedding's widths from `input_hint_block`) and steers sd1_tiny to the diffusers folder's
/// image, byte for byte, and so within 1/255 of diffusers'; beside a config.json it takes
/// that config. A tensor that fits no part of a ControlNet (an up block's) is refused naming
/// it.
#[test]
fn an_original_controlnet_file_steers_as_its_diffusers_folder() {
    let reference = Reference::open("controlnet_tiny");
    let cpu = lina_runtime::device::cpu();
    let opts = options(&reference);
    let draw = |pipe: &StableDiffusion| {
        pollster::block_on(pipe.generate(&opts, &mut NoHook, &CancelToken::new()))
            .unwrap()
            .image
    };
    let folder_image = draw(&with_controlnet(&cpu));
    let config = std::fs::read_to_string(fixture("controlnet_tiny/config.json")).unwrap();
    let mut pipe = StableDiffusion::load(&DirSource::new(fixture("sd1_tiny")), &cpu).unwrap();
    let prefixed = original_file(str::to_string);
    let bare = original_file(|n| n.strip_prefix("control_model.").unwrap().to_string());
    for (what, weights, config) in [
        ("prefixed", prefixed.clone(), None),
        ("bare", bare, None),
        (
            "prefixed beside its config",
            prefixed.clone(),
            Some(config.as_str()),
        ),
    ] {
        pipe.load_controlnet(&controlnet_folder(weights, config), "")
            .unwrap();
        let conditioning = &pipe.controlnets()[0].config().conditioning;
        assert_eq!(
            conditioning.embedding_out_channels,
            [16, 16, 32, 32],
            "{what}"
        );
        let image = draw(&pipe);
        assert_eq!(image, folder_image, "{what}: not the folder's image");
        let worst = common::worst_pixel(&image.rgb, &reference.f32("image").1);
        assert!(worst <= 1.0, "{what}: {worst}/255 from diffusers");
    }
    let mut tensors = common::f32_tensors(&prefixed);
    let stray = "control_model.output_blocks.0.0.in_layers.0.weight";
    tensors.insert(stray.into(), (vec![32], vec![1.0; 32]));
    let e = pipe
        .load_controlnet(
            &controlnet_folder(common::f32_safetensors(&tensors), None),
            "",
        )
        .unwrap_err();
    assert_eq!(e.code(), "weight_file", "{e}");
    assert!(e.to_string().contains(stray), "{e}");
}

/// What loaded ControlNets refuse at the start of a run, naming it: no input for a loaded
/// ControlNet, a control image of another size, a window outside the schedule or backwards,
/// a scale that is not finite. Removed, the model runs without them, refuses a ControlNet
/// input, and refuses a control image (FLUX.1 Canny's and Depth's) as before.
#[test]
fn a_controlnet_run_refuses_what_it_cannot_follow() {
    let reference = Reference::open("controlnet_tiny");
    let mut pipe = with_controlnet(&lina_runtime::device::cpu());
    let opts = options(&reference);
    let without = GenerateOptions {
        controlnets: Vec::new(),
        ..opts.clone()
    };
    assert!(refused(&pipe, &without).contains("0 ControlNet input(s) for 1 loaded"));
    let small = GenerateOptions {
        width: Some(32),
        height: Some(32),
        initial_latents: None,
        ..opts.clone()
    };
    let e = refused(&pipe, &small);
    assert!(
        e.contains("ControlNet 0: the control image is 64x64, the output 32x32"),
        "{e}"
    );
    for (scale, window) in [
        (1.0, (0.8, 0.2)),
        (1.0, (-0.1, 1.0)),
        (f64::NAN, (0.0, 1.0)),
    ] {
        let e = refused(&pipe, &steered(&reference, scale, window));
        assert!(e.contains("window"), "{e}");
    }
    pipe.remove_controlnets();
    assert!(pipe.controlnets().is_empty());
    assert!(pipe.start(&without).is_ok());
    assert!(refused(&pipe, &opts).contains("1 ControlNet input(s) for 0 loaded"));
    let flux_style = GenerateOptions {
        control_image: Some(card(&reference)),
        ..without
    };
    assert!(refused(&pipe, &flux_style).contains("takes none"));
}

/// Two ControlNets (diffusers' `MultiControlNetModel`; here the tiny one loaded twice), each
/// with its own image, scale and window, add their sum: diffusers' image within 1/255. A
/// refused second one leaves the first; `load_controlnet` replaces both with one.
#[test]
fn two_controlnets_add_their_sum_as_diffusers_multicontrolnet() {
    let reference = Reference::open("controlnet_tiny");
    let start = Image {
        width: 64,
        height: 64,
        rgb: reference.u8("start"),
    };
    let files = DirSource::new(fixture("controlnet_tiny"));
    for (name, device) in common::test_devices() {
        let mut pipe = with_controlnet(&device);
        let misfit = DirSource::new(fixture("controlnet_sdxl_tiny"));
        assert!(pipe.add_controlnet(&misfit, "").is_err());
        assert_eq!(
            pipe.controlnets().len(),
            1,
            "a refused one leaves the first"
        );
        pipe.add_controlnet(&files, "").unwrap();
        let opts = GenerateOptions {
            controlnets: vec![
                ControlNetInput {
                    scale: 0.7,
                    ..ControlNetInput::new(card(&reference))
                },
                ControlNetInput {
                    image: start.clone(),
                    scale: 0.5,
                    window: (0.3, 0.9),
                },
            ],
            ..options(&reference)
        };
        let done =
            pollster::block_on(pipe.generate(&opts, &mut NoHook, &CancelToken::new())).unwrap();
        let worst = common::worst_pixel(&done.image.rgb, &reference.f32("image_multi").1);
        eprintln!("{name}: two ControlNets, worst pixel {worst:.2}/255");
        assert!(worst <= 1.0, "{name}: {worst}/255 from diffusers");
        pipe.load_controlnet(&files, "").unwrap();
        assert_eq!(pipe.controlnets().len(), 1);
    }
}

/// ControlNets that do not fit the model are refused with a config error naming what
/// differs, and a bad file with its own error; a refused load keeps the ControlNet loaded
/// before it. A transformer model takes none.
#[test]
fn controlnets_that_do_not_fit_are_refused_and_lose_nothing() {
    let cpu = lina_runtime::device::cpu();
    let files = DirSource::new(fixture("controlnet_tiny"));
    let config = std::fs::read_to_string(fixture("controlnet_tiny/config.json")).unwrap();
    let weights = common::read_fixture("controlnet_tiny/diffusion_pytorch_model.safetensors");

    // sd2_tiny has three levels of down blocks where the ControlNet has two.
    let mut sd2 = StableDiffusion::load(&DirSource::new(fixture("sd2_tiny")), &cpu).unwrap();
    let e = sd2.load_controlnet(&files, "").unwrap_err();
    assert_eq!(e.code(), "config", "{e}");
    assert!(e.to_string().contains("skip connections"), "{e}");

    let mut pipe = with_controlnet(&cpu);
    let variant = |edit: &Edit, weights: &[u8]| {
        let mut json: serde_json::Value = serde_json::from_str(&config).unwrap();
        edit(&mut json);
        let mut source = MemorySource::new();
        source.insert("controlnet/config.json", json.to_string().into_bytes());
        source.insert(
            "controlnet/diffusion_pytorch_model.safetensors",
            weights.to_vec(),
        );
        source
    };
    let cases: [(&Edit, &[u8], &str, &str); 5] = [
        (
            &|j| j["cross_attention_dim"] = 64.into(),
            &weights,
            "config",
            "cross_attention_dim",
        ),
        (
            &|j| j["conditioning_embedding_out_channels"] = serde_json::json!([16, 32]),
            &weights,
            "config",
            "downscale",
        ),
        (
            &|j| j["controlnet_conditioning_channel_order"] = "rgba".into(),
            &weights,
            "config",
            "channel_order",
        ),
        (
            &|j| j["layers_per_block"] = "two".into(),
            &weights,
            "config",
            "layers_per_block",
        ),
        (&|_| {}, &weights[..weights.len() / 2], "weight_file", ""),
    ];
    for (edit, bytes, code, says) in cases {
        let e = pipe
            .load_controlnet(&variant(edit, bytes), "controlnet")
            .unwrap_err();
        assert_eq!(e.code(), code, "{e}");
        assert!(e.to_string().contains(says), "{e}");
        assert!(e.to_string().contains("controlnet/"), "{e}");
        assert_eq!(
            pipe.controlnets().len(),
            1,
            "a refused load dropped the loaded ControlNet"
        );
    }
    // The same files, whole, load from a pipeline folder's `controlnet/`.
    pipe.load_controlnet(&variant(&|_| {}, &weights), "controlnet")
        .unwrap();

    let mut sd3 = StableDiffusion::load(&DirSource::new(fixture("sd3_tiny")), &cpu).unwrap();
    let e = sd3.load_controlnet(&files, "").unwrap_err();
    assert!(e.to_string().contains("transformer"), "{e}");
}

/// A T2I-Adapter (tests/fixtures/t2i_adapter_tiny: diffusers' full type at sd1_tiny's widths,
/// every layer random) steers sd1_tiny's 10 guided steps as `StableDiffusionAdapterPipeline`
/// does: at scale 0.8 and at 0 (where it adds nothing), each within 1/255 of diffusers' on
/// the CPU backend and lavapipe. What it refuses, naming it: a run without its image, an
/// image of another size, an input with no adapter loaded; adapters of other widths or of
/// SDXL's type; a transformer model.
#[test]
fn a_t2i_adapter_steers_the_unet_as_diffusers() {
    let reference = Reference::open("t2i_adapter_tiny");
    let files = DirSource::new(fixture("t2i_adapter_tiny"));
    let adapted = |scale: f64| GenerateOptions {
        t2i_adapter: Some(T2IAdapterInput {
            image: card(&reference),
            scale,
        }),
        controlnets: Vec::new(),
        ..options(&reference)
    };
    for (name, device) in common::test_devices() {
        let mut pipe =
            StableDiffusion::load(&DirSource::new(fixture("sd1_tiny")), &device).unwrap();
        pipe.load_t2i_adapter(&files, "").unwrap();
        for (case, scale) in [("image", 0.8), ("image_unguided", 0.0)] {
            let done = pollster::block_on(pipe.generate(
                &adapted(scale),
                &mut NoHook,
                &CancelToken::new(),
            ))
            .unwrap();
            let worst = common::worst_pixel(&done.image.rgb, &reference.f32(case).1);
            eprintln!("{name}: T2I-Adapter {case}, worst pixel {worst:.2}/255");
            assert!(worst <= 1.0, "{name} {case}: {worst}/255 from diffusers");
        }
    }
    let cpu = lina_runtime::device::cpu();
    let mut pipe = StableDiffusion::load(&DirSource::new(fixture("sd1_tiny")), &cpu).unwrap();
    pipe.load_t2i_adapter(&files, "").unwrap();
    let without = GenerateOptions {
        t2i_adapter: None,
        ..adapted(1.0)
    };
    assert!(refused(&pipe, &without).contains("T2I-Adapter is loaded"));
    let small = GenerateOptions {
        width: Some(32),
        height: Some(32),
        initial_latents: None,
        ..adapted(1.0)
    };
    assert!(refused(&pipe, &small).contains("control image is 64x64, the output 32x32"));
    pipe.remove_t2i_adapter();
    assert!(refused(&pipe, &adapted(1.0)).contains("no T2I-Adapter is loaded"));
    let config = std::fs::read_to_string(fixture("t2i_adapter_tiny/config.json")).unwrap();
    for (edit, says) in [
        (
            r#""channels": [32, 48]"#,
            "not the UNet's down blocks' widths",
        ),
        (r#""adapter_type": "full_adapter_xl""#, "adapter_type"),
    ] {
        let key = edit.split(':').next().unwrap();
        let mut json: serde_json::Value = serde_json::from_str(&config).unwrap();
        let value: serde_json::Value = serde_json::from_str(&format!("{{{edit}}}")).unwrap();
        json[key.trim_matches('"')] = value[key.trim_matches('"')].clone();
        let mut source = MemorySource::new();
        source.insert("config.json", json.to_string().into_bytes());
        let e = pipe.load_t2i_adapter(&source, "").unwrap_err();
        assert_eq!(e.code(), "config", "{e}");
        assert!(e.to_string().contains(says), "{e}");
    }
    assert!(pipe.t2i_adapter().is_none());
    let mut sd3 = StableDiffusion::load(&DirSource::new(fixture("sd3_tiny")), &cpu).unwrap();
    let e = sd3.load_t2i_adapter(&files, "").unwrap_err();
    assert!(e.to_string().contains("transformer"), "{e}");
}
