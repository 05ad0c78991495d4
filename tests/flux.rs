#![cfg(not(target_arch = "wasm32"))]
//! FLUX.1 (tests/fixtures/flux_tiny, made by `tools/make_fixtures.py --only flux`): the
//! transformer with two double-stream and two single-stream blocks, rotary positions and the
//! guidance embedding of FLUX.1-dev; CLIP's pooled text and T5's states; the 16-channel VAE
//! with FLUX's scaling and shift; flow-matching Euler with dynamic shifting over FLUX's
//! sigmas. Against diffusers' `FluxPipeline`, on the CPU backend and (with LINA_TEST_GPU=1)
//! on wgpu.

mod common;

use burn::tensor::Tensor;
use common::{Reference, fixture, read_fixture, relative_diff, test_devices, values};
use lina_runtime::image::Image;
use lina_runtime::models::attention_control::CrossAttentionControl;
use lina_runtime::models::denoiser::ImageCondition;
use lina_runtime::models::flux::{Flux, FluxConfig};
use lina_runtime::pipeline::{
    CancelToken, GenerateOptions, NoHook, ReferenceSize, StableDiffusion,
};
use lina_runtime::schedulers::Timesteps;
use lina_runtime::source::DirSource;
use lina_runtime::weights::Weights;

const PROMPT: &str = "a red ball on a small mirror";

/// One call on 16x12 latents (an 8x6 grid of packed patches: rows and columns turn
/// differently), at timestep 501 with guidance 3.5.
#[test]
fn the_transformer_matches_diffusers() {
    let reference = Reference::open("flux_tiny");
    let config = String::from_utf8(read_fixture("flux_tiny/transformer/config.json")).unwrap();
    let file = "flux_tiny/transformer/diffusion_pytorch_model.safetensors";
    for (name, device) in test_devices() {
        let weights = Weights::from_bytes(file, &read_fixture(file), &device).unwrap();
        let model = Flux::load(FluxConfig::from_json(&config).unwrap(), &weights).unwrap();
        weights.finish().unwrap();
        let added = model.added_input(reference.tensor("pooled_embeds", &device), 3.5);
        let out = model.forward(
            reference.tensor("transformer_sample", &device),
            501.0,
            &reference.tensor("prompt_embeds", &device),
            &added,
        );
        let err = relative_diff(&values(out), &reference.f32("transformer_out").1);
        assert!(err < 1e-4, "{name}: transformer off by {err} (relative)");
    }
}

fn options(steps: usize, (width, height): (usize, usize), latents: Vec<f32>) -> GenerateOptions {
    GenerateOptions {
        prompt: PROMPT.into(),
        timesteps: Timesteps::Count(steps),
        guidance_scale: 3.5,
        width: Some(width),
        height: Some(height),
        initial_latents: Some(latents),
        ..GenerateOptions::default()
    }
}

#[test]
fn flux_embeddings_and_images_match_diffusers() {
    let reference = Reference::open("flux_tiny");
    for (name, device) in test_devices() {
        let pipe = StableDiffusion::load(&DirSource::new(fixture("flux_tiny")), &device).unwrap();
        assert!(pipe.denoiser().is_flow() && pipe.denoiser().flux().is_some());
        assert_eq!(pipe.context_length(), 512);

        // T5's tokenizer (the folder's second): the prompt's pieces, `</s>`, padding to 512.
        let t5 = lina_runtime::tokenizer::T5Tokenizer::from_tokenizer_json(
            &read_fixture("flux_tiny/tokenizer_2/tokenizer.json"),
            Some(&read_fixture("flux_tiny/tokenizer_2/tokenizer_config.json")),
        )
        .unwrap();
        let ids: Vec<f32> = t5
            .encode(PROMPT, 512)
            .unwrap()
            .ids
            .iter()
            .map(|&i| i as f32)
            .collect();
        assert_eq!(ids, reference.f32("t5_ids").1);

        // The context is T5's states; the pooled embedding CLIP's pooled output.
        let ours = pipe.encode_prompt(PROMPT, 0).unwrap();
        assert_eq!(ours.context.dims(), [1, 512, 96]);
        let err = relative_diff(&values(ours.context), &reference.f32("prompt_embeds").1);
        // T5 in f32 (the SD 3 test's context is mostly CLIP's, which agrees within 1e-5).
        assert!(err < 5e-5, "{name}: context off by {err}");
        let pooled = values(ours.pooled.expect("FLUX has a pooled embedding"));
        let err = relative_diff(&pooled, &reference.f32("pooled_embeds").1);
        assert!(err < 1e-5, "{name}: pooled off by {err}");

        // Whole images, square (10 steps) and wide (4 steps): the schedule's sigmas from 1 to
        // 1/n shifted for the image's token count, the guidance embedded, no second pass.
        for (key, latents, size, steps) in [
            ("image", "latents", (32, 32), 10),
            ("image_wide", "latents_wide", (48, 32), 4),
        ] {
            let opts = options(steps, size, reference.f32(latents).1);
            let done =
                pollster::block_on(pipe.generate(&opts, &mut NoHook, &CancelToken::new())).unwrap();
            assert!(done.warnings.is_empty(), "{:?}", done.warnings);
            assert_eq!(done.evaluations, steps);
            let worst = common::worst_pixel(&done.image.rgb, &reference.f32(key).1);
            assert!(worst <= 1.0, "{name} {key}: {worst}/255 from diffusers");
        }
    }
}

/// LINA's hook acts on FLUX's attentions (double- and single-stream) as on the MMDiT's:
/// recording changes nothing and gives per-token maps over the latent grid that sum to 1
/// over T5's tokens; a zero bias changes nothing; a bias toward one token in the left half
/// of the image raises its attention there and moves only the controlled row.
#[test]
fn flux_attention_takes_the_control() {
    let reference = Reference::open("flux_tiny");
    let config = String::from_utf8(read_fixture("flux_tiny/transformer/config.json")).unwrap();
    let file = "flux_tiny/transformer/diffusion_pytorch_model.safetensors";
    let device = lina_runtime::device::cpu();
    let weights = Weights::from_bytes(file, &read_fixture(file), &device).unwrap();
    let model = Flux::load(FluxConfig::from_json(&config).unwrap(), &weights).unwrap();
    let two = |t: Tensor<3>| Tensor::cat(vec![t.clone(), t], 0);
    let x: Tensor<4> = reference.tensor("transformer_sample", &device);
    let x = Tensor::cat(vec![x.clone(), x], 0);
    let context = two(reference.tensor("prompt_embeds", &device));
    let pooled: Tensor<2> = reference.tensor("pooled_embeds", &device);
    let added = model.added_input(pooled, 3.5).repeat_dim(0, 2);
    let call = |control: &CrossAttentionControl| {
        model.forward_controlled(x.clone(), 501.0, &context, &added, None, control, 1)
    };
    let plain = values(model.forward(x.clone(), 501.0, &context, &added));
    common::assert_the_attention_takes_the_control(call, &plain, context.dims()[1], [16, 12], 2);

    // With a reference image's tokens after the latents' (Kontext's), the control acts on
    // the latents' alone.
    let latents: Tensor<4> = Reference::open("flux_kontext").tensor("reference_latents", &device);
    let with_reference = |control: &CrossAttentionControl| {
        model.forward_controlled(
            x.clone(),
            501.0,
            &context,
            &added,
            Some(&latents),
            control,
            1,
        )
    };
    let plain = values(with_reference(&CrossAttentionControl::default()).0);
    common::assert_the_attention_takes_the_control(
        with_reference,
        &plain,
        context.dims()[1],
        [16, 12],
        2,
    );
}

/// LINA's plan runs on FLUX: its words are found among T5's tokens; region-controlled
/// attention, prompt-space guidance, the warped flow schedule and region guidance change the
/// image, and the baseline plan changes nothing.
#[test]
fn lina_runs_on_flux() {
    let reference = Reference::open("flux_tiny");
    let device = lina_runtime::device::cpu();
    let pipe = StableDiffusion::load(&DirSource::new(fixture("flux_tiny")), &device).unwrap();
    let words = pipe.context_words(PROMPT).unwrap();
    assert_eq!(words.len(), 512);
    for word in ["red", "ball", "mirror"] {
        assert!(
            words.iter().flatten().any(|w| w == word),
            "{word} not in {words:?}"
        );
    }
    assert_eq!(
        pipe.context_used(PROMPT).unwrap(),
        words.iter().flatten().count() + 1
    );
    let opts = options(4, (32, 32), reference.f32("latents").1);
    // Region guidance too, measured from the conditional prediction (FLUX has no other).
    let region = lina::Plan {
        node_weight: 3.0,
        region_window: [0.0, 1.0],
        ..lina::Plan::default()
    };
    let plans = [common::transformer_plans(), vec![region]].concat();
    common::assert_lina_plans_act(&pipe, &opts, PROMPT, &plans);
}

/// What cannot run is refused by name: SD 3's LoRA (a module FLUX has not), skip-layer
/// guidance (SD 3's), a size that does not pack into 2x2 patches. The
/// memory estimate from the configs alone counts every weight file, T5 (the folder's second
/// text encoder, which a FLUX model cannot leave behind) included.
#[test]
fn flux_refuses_what_it_cannot_run_and_counts_its_weights() {
    use lina_runtime::pipeline::SkipLayerGuidance;
    use lina_runtime::weights::{Lora, ScaledLora};
    let device = lina_runtime::device::cpu();
    let files = DirSource::new(fixture("flux_tiny"));
    let bytes = read_fixture("lora/sd3_tiny_peft.safetensors");
    let lora = ScaledLora {
        lora: Lora::from_safetensors("sd3.safetensors", &bytes).unwrap(),
        scale: 1.0,
    };
    let kernels = lina_runtime::kernels::Kernels::default();
    let err = StableDiffusion::load_adapted(&files, &device, kernels, &[lora])
        .err()
        .expect("SD 3's LoRA on FLUX is refused")
        .to_string();
    // SD 3.5 medium's second attention, which FLUX has not.
    assert!(
        err.contains("sd3.safetensors")
            && err.contains("attn2.to_v")
            && err.contains("matches no layer"),
        "{err}"
    );

    let pipe = StableDiffusion::load(&files, &device).unwrap();
    let reference = Reference::open("flux_tiny");
    let mut opts = options(2, (32, 32), reference.f32("latents").1);
    opts.skip_layer_guidance = Some(SkipLayerGuidance::with(vec![0], None, None, None));
    let err = pollster::block_on(pipe.generate(&opts, &mut NoHook, &CancelToken::new()))
        .expect_err("skip-layer guidance on FLUX is refused")
        .to_string();
    assert!(err.contains("SD 3"), "{err}");
    let opts = GenerateOptions {
        width: Some(34),
        height: Some(32),
        initial_latents: None,
        ..options(2, (32, 32), Vec::new())
    };
    let err = pollster::block_on(pipe.generate(&opts, &mut NoHook, &CancelToken::new()))
        .expect_err("17x16 latents do not pack")
        .to_string();
    assert!(err.contains("2x2"), "{err}");

    let needs = |with_t5| lina_runtime::memory::requirements(&files, with_t5, &device).unwrap();
    let counted = needs(false).weight_bytes;
    assert_eq!(counted, needs(true).weight_bytes);
    let files: u64 = ["text_encoder/model", "text_encoder_2/model"]
        .into_iter()
        .map(|f| format!("{f}.safetensors"))
        .chain(["transformer", "vae"].map(|f| format!("{f}/diffusion_pytorch_model.safetensors")))
        .map(|f| read_fixture(&format!("flux_tiny/{f}")).len() as u64)
        .sum();
    assert!(
        counted <= files && counted * 100 > files * 95,
        "{counted} bytes counted, the weight files have {files}"
    );
}

/// FLUX.1-schnell's variant (tests/fixtures/flux_schnell_tiny beside flux_tiny's text
/// encoders, tokenizers and VAE): no guidance embedding, so the guidance scale changes
/// nothing; schnell's scheduler (no dynamic shift, shift 1) over sigmas from 1 to 1/n. Its
/// 4-step image is diffusers', and with T5's text padded to 256 tokens, as schnell's model
/// card runs it (`max_sequence_length=256`), so is that one; other lengths, or one for a
/// UNet, are refused.
#[test]
fn flux_schnell_draws_diffusers_image() {
    let mut files = lina_runtime::source::MemorySource::new();
    for (path, bytes) in common::model_files("flux_tiny") {
        if !path.starts_with("transformer/") && !path.starts_with("scheduler/") {
            files.insert(path, bytes);
        }
    }
    for (path, bytes) in common::model_files("flux_schnell_tiny") {
        files.insert(path, bytes);
    }
    let expected = Reference::open("flux_schnell_tiny").f32("image").1;
    let expected_256 = Reference::open("flux_schnell_tiny").f32("image_256").1;
    let latents = Reference::open("flux_tiny").f32("latents").1;
    for (name, device) in test_devices() {
        let mut pipe = StableDiffusion::load(&files, &device).unwrap();
        let flux = pipe.denoiser().flux().expect("a FLUX transformer");
        assert!(!flux.config().guidance_embeds);
        let draw = |guidance: f64| {
            let opts = GenerateOptions {
                guidance_scale: guidance,
                ..options(4, (32, 32), latents.clone())
            };
            pollster::block_on(pipe.generate(&opts, &mut NoHook, &CancelToken::new())).unwrap()
        };
        let done = draw(0.0);
        assert_eq!(done.evaluations, 4);
        let worst = common::worst_pixel(&done.image.rgb, &expected);
        assert!(worst <= 1.0, "{name}: {worst}/255 from diffusers");
        assert_eq!(
            draw(3.5).image.rgb,
            done.image.rgb,
            "{name}: guidance changed schnell's image"
        );
        assert_eq!(pipe.max_sequence_length(), 512);
        assert_eq!(pipe.context_length(), 512);
        pipe.set_max_sequence_length(256).unwrap();
        assert_eq!(pipe.context_length(), 256);
        let opts = options(4, (32, 32), latents.clone());
        let done = pollster::block_on(pipe.generate(&opts, &mut NoHook, &CancelToken::new()));
        let worst = common::worst_pixel(&done.unwrap().image.rgb, &expected_256);
        eprintln!("{name}: schnell with 256 T5 tokens, worst pixel {worst:.2}/255");
        assert!(
            worst <= 1.0,
            "{name}: {worst}/255 from diffusers with 256 tokens"
        );
    }
    let mut pipe = StableDiffusion::load(&files, &lina_runtime::device::cpu()).unwrap();
    for tokens in [0, 513] {
        let err = pipe
            .set_max_sequence_length(tokens)
            .unwrap_err()
            .to_string();
        assert!(err.contains("between 1 and 512"), "{err}");
    }
    assert_eq!(pipe.max_sequence_length(), 512);
    let mut sd1 = StableDiffusion::load(
        &DirSource::new(fixture("sd1_tiny")),
        &lina_runtime::device::cpu(),
    )
    .unwrap();
    let err = sd1.set_max_sequence_length(77).unwrap_err().to_string();
    assert!(err.contains("reads no T5"), "{err}");
}

/// FLUX's true classifier-free guidance (diffusers' `true_cfg_scale`) beside the embedded
/// guidance: with a negative prompt at scale 4 on the wide 4-step run, diffusers' image
/// (tests/fixtures/flux_true_cfg), two model rows per step; refused without a negative
/// prompt or on another model.
#[test]
fn true_cfg_draws_diffusers_image_and_needs_a_negative_prompt() {
    let tiny = Reference::open("flux_tiny");
    let expected = Reference::open("flux_true_cfg").f32("image").1;
    for (name, device) in test_devices() {
        let pipe = StableDiffusion::load(&DirSource::new(fixture("flux_tiny")), &device).unwrap();
        let opts = GenerateOptions {
            negative_prompt: "blurry".into(),
            true_cfg_scale: Some(4.0),
            ..options(4, (48, 32), tiny.f32("latents_wide").1)
        };
        let done =
            pollster::block_on(pipe.generate(&opts, &mut NoHook, &CancelToken::new())).unwrap();
        assert_eq!(done.evaluations, 8);
        let worst = common::worst_pixel(&done.image.rgb, &expected);
        assert!(worst <= 1.0, "{name}: {worst}/255 from diffusers");
    }
    let cpu = lina_runtime::device::cpu();
    let pipe = StableDiffusion::load(&DirSource::new(fixture("flux_tiny")), &cpu).unwrap();
    let without_negative = GenerateOptions {
        true_cfg_scale: Some(4.0),
        ..options(2, (32, 32), tiny.f32("latents").1)
    };
    assert!(refused(&pipe, &without_negative).contains("negative prompt"));
    let sd1 = StableDiffusion::load(&DirSource::new(fixture("sd1_tiny")), &cpu).unwrap();
    let on_unet = GenerateOptions {
        true_cfg_scale: Some(4.0),
        negative_prompt: "blurry".into(),
        ..options(2, (64, 64), vec![0.0; 4 * 8 * 8])
    };
    assert!(refused(&sd1, &on_unet).contains("FLUX"));
}

/// Why `pipe` refuses to start `opts`; a start that succeeds fails the test.
fn refused(pipe: &StableDiffusion, opts: &GenerateOptions) -> String {
    match pipe.start(opts) {
        Ok(_) => panic!("should be refused"),
        Err(e) => e.to_string(),
    }
}

/// The 48x32 card a FLUX image-condition reference was drawn from.
fn card(reference: &Reference) -> Image {
    Image {
        width: 48,
        height: 32,
        rgb: reference.u8("card"),
    }
}

/// FLUX.1 Fill's variant (tests/fixtures/flux_fill_tiny beside flux_tiny's other parts):
/// the transformer takes the masked image's latents and every pixel of the mask beside the
/// latents (a diagonal mask, so each pixel of a VAE cell matters). Its 4-step wide image at
/// guidance 30 is diffusers' `FluxFillPipeline`'s; without a mask it is refused.
#[test]
fn flux_fill_inpaints_as_diffusers() {
    let reference = Reference::open("flux_fill_tiny");
    let latents = Reference::open("flux_tiny").f32("latents_wide").1;
    let card = card(&reference);
    let mask: Vec<f32> = reference
        .u8("mask")
        .iter()
        .map(|&v| v as f32 / 255.0)
        .collect();
    let source = common::Overlay::new("flux_tiny", "flux_fill_tiny", "transformer/");
    for (name, device) in test_devices() {
        let pipe = StableDiffusion::load(&source, &device).unwrap();
        assert_eq!(pipe.image_condition(), ImageCondition::Fill);
        let opts = GenerateOptions {
            guidance_scale: 30.0,
            init_image: Some(card.clone()),
            mask: Some(mask.clone()),
            strength: 1.0,
            ..options(4, (48, 32), latents.clone())
        };
        let done =
            pollster::block_on(pipe.generate(&opts, &mut NoHook, &CancelToken::new())).unwrap();
        assert_eq!(done.evaluations, 4);
        let worst = common::worst_pixel(&done.image.rgb, &reference.f32("image").1);
        eprintln!("{name}: FLUX Fill, worst pixel {worst:.2}/255");
        assert!(worst <= 1.0, "{name}: {worst}/255 from diffusers");
        let err = match pipe.start(&GenerateOptions { mask: None, ..opts }) {
            Ok(_) => panic!("{name}: Fill without a mask should be refused"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains("inpainting model"), "{name}: {err}");
    }
}

/// FLUX.1 Canny's and Depth's variant (tests/fixtures/flux_control_tiny): the transformer
/// takes the control image's latents beside the latents; its 4-step wide image at guidance
/// 10 is diffusers' `FluxControlPipeline`'s. A control model without a control image, a
/// control image of another size, and a control image for a model that takes none are
/// refused, saying so.
#[test]
fn flux_control_follows_its_image_as_diffusers() {
    let reference = Reference::open("flux_control_tiny");
    let latents = Reference::open("flux_tiny").f32("latents_wide").1;
    let card = card(&reference);
    let source = common::Overlay::new("flux_tiny", "flux_control_tiny", "transformer/");
    let opts = GenerateOptions {
        guidance_scale: 10.0,
        control_image: Some(card.clone()),
        ..options(4, (48, 32), latents.clone())
    };
    for (name, device) in test_devices() {
        let pipe = StableDiffusion::load(&source, &device).unwrap();
        assert_eq!(pipe.image_condition(), ImageCondition::Control);
        let done =
            pollster::block_on(pipe.generate(&opts, &mut NoHook, &CancelToken::new())).unwrap();
        let worst = common::worst_pixel(&done.image.rgb, &reference.f32("image").1);
        eprintln!("{name}: FLUX Control, worst pixel {worst:.2}/255");
        assert!(worst <= 1.0, "{name}: {worst}/255 from diffusers");
    }
    let cpu = lina_runtime::device::cpu();
    let control = StableDiffusion::load(&source, &cpu).unwrap();
    let without = GenerateOptions {
        control_image: None,
        ..opts.clone()
    };
    assert!(refused(&control, &without).contains("control image"));
    let small = GenerateOptions {
        width: Some(32),
        initial_latents: None,
        ..opts.clone()
    };
    assert!(refused(&control, &small).contains("control image is 48x32"));
    let plain = StableDiffusion::load(&DirSource::new(fixture("flux_tiny")), &cpu).unwrap();
    assert_eq!(plain.image_condition(), ImageCondition::None);
    assert!(refused(&plain, &opts).contains("takes none"));
}

/// FLUX.1's control LoRAs (`flux1-canny-dev-lora.safetensors`, Depth's), in Black Forest
/// Labs' names and in diffusers' (tests/fixtures/lora/flux_tiny_control_bfl.safetensors and
/// `_peft`, made by `tools/make_fixtures.py --only flux-control-lora`): loaded on flux_tiny,
/// either widens
/// the input layer to read the control image's latents, so the model takes a control image;
/// its 4-step image at LoRA scale 0.8 is diffusers' `FluxControlPipeline` after
/// `load_lora_weights` within 1/255 (fused q/k/v and `linear1` updates cut into their parts,
/// bias updates, the final adaLN's halves swapped, the norms' scales replaced). At scale 0 the
/// model still takes a control image, which then changes nothing (the widened inputs' weights
/// are zero). An input update of another width (192 inputs for 64) is refused naming its
/// file, and on SD 3 the LoRA is refused naming a module it cannot place.
#[test]
fn a_flux_control_lora_widens_flux_to_follow_a_control_image_as_diffusers() {
    use lina_runtime::weights::{Lora, ScaledLora};
    let reference = Reference::file("lora/flux_tiny_control_bfl_reference.safetensors");
    let latents = Reference::open("flux_tiny").f32("latents_wide").1;
    let scale = reference.f32("scale").1[0];
    let lora = |file: &str| ScaledLora {
        lora: Lora::from_safetensors(file, &read_fixture(&format!("lora/{file}"))).unwrap(),
        scale,
    };
    let (bfl, diffusers) = (
        lora("flux_tiny_control_bfl.safetensors"),
        lora("flux_tiny_control_peft.safetensors"),
    );
    let source = DirSource::new(fixture("flux_tiny"));
    let kernels = lina_runtime::kernels::Kernels::default();
    let card = card(&reference);
    let opts = GenerateOptions {
        guidance_scale: 10.0,
        control_image: Some(card.clone()),
        ..options(4, (48, 32), latents)
    };
    let draw = |pipe: &StableDiffusion, opts: &GenerateOptions| {
        pollster::block_on(pipe.generate(opts, &mut NoHook, &CancelToken::new()))
            .unwrap()
            .image
            .rgb
    };
    for (name, device) in test_devices() {
        let diffusers_named = [diffusers.clone()];
        let image = |pipe: &StableDiffusion| {
            assert_eq!(pipe.image_condition(), ImageCondition::Control, "{name}");
            common::worst_pixel(&draw(pipe, &opts), &reference.f32("image").1)
        };
        let pipe = StableDiffusion::load_adapted(&source, &device, kernels, &diffusers_named);
        let worst = image(&pipe.unwrap());
        eprintln!("{name}: FLUX control LoRA in diffusers' names, worst pixel {worst:.2}/255");
        assert!(
            worst <= 1.0,
            "{name}: diffusers' names, {worst}/255 from diffusers"
        );
        let loras = std::slice::from_ref(&bfl);
        let mut pipe = StableDiffusion::load_adapted(&source, &device, kernels, loras).unwrap();
        let worst = image(&pipe);
        eprintln!("{name}: FLUX control LoRA in BFL's names, worst pixel {worst:.2}/255");
        assert!(
            worst <= 1.0,
            "{name}: BFL's names, {worst}/255 from diffusers"
        );
        pipe.set_lora_scales(&[0.0]).unwrap();
        assert_eq!(pipe.image_condition(), ImageCondition::Control, "{name}");
        let gray = lina_runtime::image::Image {
            rgb: vec![128; card.rgb.len()],
            ..card.clone()
        };
        let other = GenerateOptions {
            control_image: Some(gray),
            ..opts.clone()
        };
        assert_eq!(
            draw(&pipe, &opts),
            draw(&pipe, &other),
            "{name}: at scale 0"
        );
    }
    let cpu = lina_runtime::device::cpu();
    // An input update of a width no control model has: refused as it merges, naming its file.
    let mut odd = common::f32_tensors(&read_fixture("lora/flux_tiny_control_bfl.safetensors"));
    odd.insert(
        "img_in.lora_A.weight".into(),
        (vec![4, 192], vec![0.1; 4 * 192]),
    );
    let odd = ScaledLora {
        lora: Lora::from_safetensors("odd.safetensors", &common::f32_safetensors(&odd)).unwrap(),
        scale: 1.0,
    };
    let err = StableDiffusion::load_adapted(&source, &cpu, kernels, &[odd])
        .err()
        .expect("an input update of 192 inputs is refused")
        .to_string();
    assert!(
        err.contains("odd.safetensors") && err.contains("does not fit"),
        "{err}"
    );
    let sd3 = DirSource::new(fixture("sd3_tiny"));
    let err = StableDiffusion::load_adapted(&sd3, &cpu, kernels, &[bfl])
        .err()
        .expect("FLUX's control LoRA on SD 3 is refused")
        .to_string();
    assert!(
        err.contains("flux_tiny_control_bfl.safetensors") && err.contains("matches no"),
        "{err}"
    );
}

/// FLUX.1 Kontext (tests/fixtures/flux_kontext, on flux_tiny: Kontext's transformer has
/// FLUX.1-dev's architecture): the reference image's tokens follow the latents' with
/// positions (1, row, column), and only the latents' are predicted. One transformer call
/// with 16x24 reference latents beside 16x16 latents is diffusers' within 1e-4; the 4-step
/// square image with the 48x32 card as the reference image is `FluxKontextPipeline`'s within
/// 1/255, and so is the one with a 50x34 card kept at its size (which both resize to 48x32
/// with Pillow's Lanczos filter). By default an image takes the trained size the pipeline
/// picks for it (its choices for ten sizes in the fixture). A reference image for a UNet,
/// one with a side shorter than a packed patch, or one kept at a size past the limit, is
/// refused.
#[test]
fn flux_kontext_edits_its_reference_image_as_diffusers() {
    let reference = Reference::open("flux_kontext");
    let tiny = Reference::open("flux_tiny");
    let config = String::from_utf8(read_fixture("flux_tiny/transformer/config.json")).unwrap();
    let file = "flux_tiny/transformer/diffusion_pytorch_model.safetensors";
    let card = card(&reference);
    for (name, device) in test_devices() {
        let weights = Weights::from_bytes(file, &read_fixture(file), &device).unwrap();
        let model = Flux::load(FluxConfig::from_json(&config).unwrap(), &weights).unwrap();
        weights.finish().unwrap();
        let added = model.added_input(tiny.tensor("pooled_embeds", &device), 2.5);
        let latents: Tensor<4> = reference.tensor("reference_latents", &device);
        let (out, _) = model.forward_controlled(
            reference.tensor("transformer_sample", &device),
            501.0,
            &tiny.tensor("prompt_embeds", &device),
            &added,
            Some(&latents),
            &CrossAttentionControl::default(),
            0,
        );
        let err = relative_diff(&values(out), &reference.f32("transformer_out").1);
        assert!(err < 1e-4, "{name}: Kontext's call off by {err} (relative)");

        let pipe = StableDiffusion::load(&DirSource::new(fixture("flux_tiny")), &device).unwrap();
        let uneven = Image {
            width: 50,
            height: 34,
            rgb: reference.u8("uneven_card"),
        };
        for (image, key) in [(&card, "image"), (&uneven, "image_kept")] {
            let opts = GenerateOptions {
                guidance_scale: 2.5,
                reference_image: Some(image.clone()),
                reference_size: ReferenceSize::Kept,
                ..options(4, (32, 32), tiny.f32("latents").1)
            };
            let done =
                pollster::block_on(pipe.generate(&opts, &mut NoHook, &CancelToken::new())).unwrap();
            let worst = common::worst_pixel(&done.image.rgb, &reference.f32(key).1);
            eprintln!(
                "{name}: FLUX Kontext, {}x{} reference, worst pixel {worst:.2}/255",
                image.width, image.height
            );
            assert!(worst <= 1.0, "{name}: {key} {worst}/255 from diffusers");
        }
    }
    let json: serde_json::Value =
        serde_json::from_slice(&read_fixture("flux_kontext/reference.json")).unwrap();
    let trained = json["trained_sizes"].as_array().unwrap();
    assert_eq!(trained.len(), 10);
    for case in trained {
        let [w, h, tw, th] = [0, 1, 2, 3].map(|i| case[i].as_u64().unwrap() as usize);
        // flux_tiny's VAE downscales by 2: its patches are 4 pixels.
        let ours = ReferenceSize::Trained.target(w, h, 4);
        assert_eq!(ours, Some((tw, th)), "a {w}x{h} image");
    }

    let cpu = lina_runtime::device::cpu();
    let flux = StableDiffusion::load(&DirSource::new(fixture("flux_tiny")), &cpu).unwrap();
    let sized = |width: usize, height: usize, size| GenerateOptions {
        reference_image: Some(Image {
            width,
            height,
            rgb: vec![128; width * height * 3],
        }),
        reference_size: size,
        ..options(2, (32, 32), tiny.f32("latents").1)
    };
    let err = refused(&flux, &sized(3, 32, ReferenceSize::Trained));
    assert!(err.contains("3x32") && err.contains("at least 4"), "{err}");
    let err = refused(&flux, &sized(2052, 8, ReferenceSize::Kept));
    assert!(
        err.contains("2052x8") && err.contains("at most 2048"),
        "{err}"
    );
    let sd1 = StableDiffusion::load(&DirSource::new(fixture("sd1_tiny")), &cpu).unwrap();
    let on_unet = GenerateOptions {
        reference_image: Some(card),
        ..options(2, (64, 64), vec![0.0; 4 * 8 * 8])
    };
    assert!(refused(&sd1, &on_unet).contains("takes none"));
}
