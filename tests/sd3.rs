#![cfg(not(target_arch = "wasm32"))]
//! SD 3.x (tests/fixtures/sd3_tiny, made by `tools/make_fixtures.py --only sd3`): the MMDiT
//! with QK-norm, a dual-attention block and a context-pre-only last block; two CLIP text
//! encoders with projections and no T5; the 16-channel VAE with its shift; flow-matching
//! Euler. Against diffusers' `StableDiffusion3Pipeline`, on the CPU backend and (with
//! LINA_TEST_GPU=1) on wgpu.

mod common;

use burn::tensor::Tensor;
use common::{Reference, fixture, read_fixture, relative_diff, test_devices, values};
use lina_runtime::models::attention_control::CrossAttentionControl;
use lina_runtime::models::mmdit::{Mmdit, MmditConfig};
use lina_runtime::pipeline::{
    CancelToken, GenerateOptions, NoHook, SkipLayerGuidance, StableDiffusion, Warning,
};
use lina_runtime::schedulers::{SchedulerKind, Timesteps};
use lina_runtime::source::{DirSource, FileSource};
use lina_runtime::weights::Weights;

const PROMPT: &str = "a red ball on a small mirror";
const NEGATIVE: &str = "blurry";

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
        let err = relative_diff(&values(out), &reference.f32("transformer_out").1);
        assert!(err < 1e-4, "{name}: transformer off by {err} (relative)");
    }
}

fn options(steps: usize, (width, height): (usize, usize), latents: Vec<f32>) -> GenerateOptions {
    GenerateOptions {
        prompt: PROMPT.into(),
        negative_prompt: NEGATIVE.into(),
        timesteps: Timesteps::Count(steps),
        guidance_scale: 7.5,
        width: Some(width),
        height: Some(height),
        initial_latents: Some(latents),
        ..GenerateOptions::default()
    }
}

#[test]
fn sd3_embeddings_and_images_match_diffusers() {
    let reference = Reference::open("sd3_tiny");
    for (name, device) in test_devices() {
        let pipe = StableDiffusion::load(&DirSource::new(fixture("sd3_tiny")), &device).unwrap();
        assert!(pipe.denoiser().is_flow() && pipe.unet().is_none());
        assert_eq!(pipe.native_size(), 32);

        // T5's tokenizer: the prompt's pieces, `</s>`, padding to 256.
        let ids: Vec<f32> = reference.f32("t5_ids").1;
        let t5 = lina_runtime::tokenizer::T5Tokenizer::from_tokenizer_json(
            &read_fixture("sd3_tiny/tokenizer_3/tokenizer.json"),
            Some(&read_fixture("sd3_tiny/tokenizer_3/tokenizer_config.json")),
        )
        .unwrap();
        let ours: Vec<f32> = t5
            .encode(PROMPT, 256)
            .unwrap()
            .ids
            .iter()
            .map(|&i| i as f32)
            .collect();
        assert_eq!(ours, ids);

        // Embeddings: [negative; positive]: CLIP states padded to the joint width, then T5's
        // 256 states; both pooled outputs side by side.
        let (_, embeds) = reference.f32("prompt_embeds");
        let (_, pooled) = reference.f32("pooled_embeds");
        let (half_e, half_p) = (embeds.len() / 2, pooled.len() / 2);
        for (i, text) in [NEGATIVE, PROMPT].into_iter().enumerate() {
            let ours = pipe.encode_prompt(text, 0).unwrap();
            assert_eq!(ours.context.dims(), [1, 77 + 256, 96]);
            let err = relative_diff(&values(ours.context), &embeds[i * half_e..(i + 1) * half_e]);
            assert!(err < 1e-5, "{name}: `{text}` context off by {err}");
            let p = values(ours.pooled.expect("SD 3 has a pooled embedding"));
            let err = relative_diff(&p, &pooled[i * half_p..(i + 1) * half_p]);
            assert!(err < 1e-5, "{name}: `{text}` pooled off by {err}");
        }

        // Whole images, square (10 steps) and wide (4 steps): the position table's crop
        // follows the aspect, the flow schedule its shift.
        for (key, latents, size, steps) in [
            ("image", "latents", (32, 32), 10),
            ("image_wide", "latents_wide", (48, 32), 4),
        ] {
            let opts = options(steps, size, reference.f32(latents).1);
            let done =
                pollster::block_on(pipe.generate(&opts, &mut NoHook, &CancelToken::new())).unwrap();
            assert!(done.warnings.is_empty(), "{:?}", done.warnings);
            assert_eq!(done.evaluations, 2 * steps);
            let worst = common::worst_pixel(&done.image.rgb, &reference.f32(key).1);
            assert!(worst <= 1.0, "{name} {key}: {worst}/255 from diffusers");
        }
    }
}

/// Skip-layer guidance (diffusers' `skip_guidance_layers`) draws diffusers' image:
/// tests/fixtures/sd3_slg (`tools/make_fixtures.py --only sd3-slg`) skips the middle and the
/// last of the three joint blocks in steps 1 to 4 of 10. It costs one model evaluation in
/// each step it acts in; without classifier-free guidance it does nothing, as in diffusers;
/// what cannot apply is refused.
#[test]
fn skip_layer_guidance_draws_diffusers_image() {
    let reference = Reference::open("sd3_tiny");
    let expected = Reference::file("sd3_slg/reference.safetensors");
    let settings: serde_json::Value =
        serde_json::from_slice(&read_fixture("sd3_slg/reference.json")).unwrap();
    let number = |key: &str| settings[key].as_f64().unwrap();
    let skip = SkipLayerGuidance {
        layers: serde_json::from_value(settings["skip_guidance_layers"].clone()).unwrap(),
        scale: number("skip_layer_guidance_scale"),
        start: number("skip_layer_guidance_start"),
        stop: number("skip_layer_guidance_stop"),
    };
    let acting = (0..10).filter(|&i| skip.acts_at(i, 10)).count();
    assert_eq!(acting, 4, "steps 1 to 4 of 10");
    let mut opts = options(10, (32, 32), reference.f32("latents").1);
    opts.skip_layer_guidance = Some(skip.clone());
    for (name, device) in test_devices() {
        let pipe = StableDiffusion::load(&DirSource::new(fixture("sd3_tiny")), &device).unwrap();
        let done =
            pollster::block_on(pipe.generate(&opts, &mut NoHook, &CancelToken::new())).unwrap();
        assert_eq!(done.evaluations, 2 * 10 + acting);
        let worst = common::worst_pixel(&done.image.rgb, &expected.f32("image").1);
        assert!(worst <= 1.0, "{name}: {worst}/255 from diffusers");
        // The plain image is far from it: the guidance is what brings ours to diffusers'.
        let plain = common::worst_pixel(&done.image.rgb, &reference.f32("image").1);
        assert!(
            plain > 5.0,
            "{name}: only {plain}/255 from the unguided image"
        );
    }

    let cpu = lina_runtime::device::cpu();
    let pipe = StableDiffusion::load(&DirSource::new(fixture("sd3_tiny")), &cpu).unwrap();
    // Without classifier-free guidance it does nothing, as in diffusers.
    let image = |opts: &GenerateOptions| {
        pollster::block_on(pipe.generate(opts, &mut NoHook, &CancelToken::new())).unwrap()
    };
    let mut unguided = options(4, (32, 32), reference.f32("latents").1);
    unguided.guidance_scale = 1.0;
    let without = image(&unguided);
    unguided.skip_layer_guidance = Some(skip.clone());
    let with = image(&unguided);
    assert_eq!(with.image.rgb, without.image.rgb);
    assert_eq!(with.evaluations, 4);
    // What cannot apply is refused, naming what is wrong.
    let refused = |skip: SkipLayerGuidance| {
        let mut opts = options(4, (32, 32), reference.f32("latents").1);
        opts.skip_layer_guidance = Some(skip);
        pipe.start(&opts).err().expect("refused").to_string()
    };
    assert!(refused(SkipLayerGuidance::new(vec![3])).contains("blocks 0 to 2, not 3"));
    assert!(refused(SkipLayerGuidance::new(vec![])).contains("no layers"));
    let scale = SkipLayerGuidance {
        scale: f64::NAN,
        ..SkipLayerGuidance::new(vec![1])
    };
    assert!(refused(scale).contains("scale"));
    let window = SkipLayerGuidance {
        start: 0.5,
        stop: 0.2,
        ..SkipLayerGuidance::new(vec![1])
    };
    assert!(refused(window).contains("start and stop"));
    let sd1 = StableDiffusion::load(&DirSource::new(fixture("sd1_tiny")), &cpu).unwrap();
    let mut opts = options(4, (64, 64), vec![0.0; 4 * 8 * 8]);
    opts.skip_layer_guidance = Some(SkipLayerGuidance::new(vec![0]));
    let e = sd1.start(&opts).err().expect("refused").to_string();
    assert!(e.contains("has a UNet"), "{e}");
}

/// The fixture with some files hidden, or a file replaced.
struct Edited {
    base: DirSource,
    hidden: &'static str,
    replaced: Option<(&'static str, String)>,
}

impl FileSource for Edited {
    fn read(&self, path: &str) -> lina_runtime::Result<Option<Vec<u8>>> {
        if let Some((file, text)) = &self.replaced
            && path == *file
        {
            return Ok(Some(text.clone().into_bytes()));
        }
        if !self.hidden.is_empty() && path.starts_with(self.hidden) {
            return Ok(None);
        }
        self.base.read(path)
    }
}

fn edited(hidden: &'static str, replaced: Option<(&'static str, String)>) -> Edited {
    Edited {
        base: DirSource::new(fixture("sd3_tiny")),
        hidden,
        replaced,
    }
}

#[test]
fn sd3_bad_input_is_refused_with_a_clear_error() {
    let cpu = lina_runtime::device::cpu();
    let load = |source: &Edited| match StableDiffusion::load(source, &cpu) {
        Ok(_) => panic!("loaded"),
        Err(e) => e,
    };
    // A missing second text encoder is named.
    let e = load(&edited("text_encoder_2/", None));
    assert_eq!(e.code(), "missing_file", "{e}");
    assert!(e.to_string().contains("text_encoder_2"), "{e}");
    // An unsupported option is named.
    let config = String::from_utf8(read_fixture("sd3_tiny/transformer/config.json")).unwrap();
    let layer_norm = config.replace("\"rms_norm\"", "\"layer_norm\"");
    let e = load(&edited("", Some(("transformer/config.json", layer_norm))));
    assert_eq!(e.code(), "config", "{e}");
    assert!(e.to_string().contains("qk_norm"), "{e}");
    // T5: an unsupported feed-forward, and a width that is not the joint width.
    let t5 = String::from_utf8(read_fixture("sd3_tiny/text_encoder_3/config.json")).unwrap();
    for (edit, key) in [
        (
            t5.replace("\"gated-gelu\"", "\"gated-silu\""),
            "feed_forward_proj",
        ),
        (
            t5.replace("\"d_model\": 96", "\"d_model\": 64"),
            "joint_attention_dim",
        ),
    ] {
        let e = load(&edited("", Some(("text_encoder_3/config.json", edit))));
        assert_eq!(e.code(), "config", "{e}");
        assert!(e.to_string().contains(key), "{e}");
    }
    // T5's weights without its tokenizer.
    let e = load(&edited("tokenizer_3/", None));
    assert_eq!(e.code(), "missing_file", "{e}");
    assert!(e.to_string().contains("tokenizer_3"), "{e}");

    let pipe = StableDiffusion::load(&DirSource::new(fixture("sd3_tiny")), &cpu).unwrap();
    let latents = |w: usize, h: usize| vec![0.0; 16 * (w / 2) * (h / 2)];
    let run = |opts: &GenerateOptions| pipe.start(opts).err().expect("refused").to_string();
    // A UNet's scheduler on a flow model.
    let mut opts = options(4, (32, 32), latents(32, 32));
    opts.scheduler = Some(SchedulerKind::Euler);
    assert!(run(&opts).contains("flow_euler"), "{}", run(&opts));
    // Sizes that are not whole patches, or past the position table (12 patches of 2 latent
    // cells of 2 pixels: 48).
    let odd = options(4, (34, 32), latents(34, 32));
    assert!(run(&odd).contains("patches"), "{}", run(&odd));
    let big = options(4, (64, 32), latents(64, 32));
    assert!(run(&big).contains("position table"), "{}", run(&big));
}

/// Without T5 (`text_encoder_3`) zeros stand in its place, as in diffusers: a folder without
/// it draws diffusers' image without it, silently; a folder with its config but not its
/// weights (the browser leaves them behind) draws the same and says so with each image.
#[test]
fn sd3_runs_without_t5_as_diffusers_does() {
    let reference = Reference::open("sd3_tiny");
    let cpu = lina_runtime::device::cpu();
    let expected = reference.f32("image_wide_no_t5").1;
    let opts = options(4, (48, 32), reference.f32("latents_wide").1);
    for (hidden, warned) in [("text_encoder_3/", false), ("text_encoder_3/model", true)] {
        let pipe = StableDiffusion::load(&edited(hidden, None), &cpu).unwrap();
        let done =
            pollster::block_on(pipe.generate(&opts, &mut NoHook, &CancelToken::new())).unwrap();
        let worst = common::worst_pixel(&done.image.rgb, &expected);
        assert!(worst <= 1.0, "without {hidden}: {worst}/255 from diffusers");
        let skipped = matches!(
            &done.warnings[..],
            [Warning::TextEncoderSkipped { folder }] if folder == "text_encoder_3"
        );
        assert_eq!(skipped, warned, "without {hidden}: {:?}", done.warnings);
    }
}

/// The hook LINA acts through works on the MMDiT's joint attention as on a UNet's
/// cross-attention: recording changes nothing and gives per-token maps over the latent grid
/// that sum to 1 over the text tokens; a zero bias changes nothing; a bias toward one token in
/// one half of the image raises its attention there and moves only the controlled row.
#[test]
fn joint_attention_takes_the_control() {
    let reference = Reference::open("sd3_tiny");
    let config = String::from_utf8(read_fixture("sd3_tiny/transformer/config.json")).unwrap();
    let file = "sd3_tiny/transformer/diffusion_pytorch_model.safetensors";
    let device = lina_runtime::device::cpu();
    let weights = Weights::from_bytes(file, &read_fixture(file), &device).unwrap();
    let model = Mmdit::load(MmditConfig::from_json(&config).unwrap(), &weights).unwrap();
    let x: Tensor<4> = reference.tensor("transformer_sample", &device);
    let context: Tensor<3> = reference.tensor("prompt_embeds", &device);
    let pooled: Tensor<2> = reference.tensor("pooled_embeds", &device);
    let call = |control: &CrossAttentionControl| {
        model.forward_controlled(x.clone(), 501.0, &context, &pooled, control, 1)
    };
    let plain = values(model.forward(x.clone(), 501.0, &context, &pooled));
    let tokens = context.dims()[1];
    common::assert_the_attention_takes_the_control(call, &plain, tokens, [16, 16], 3);
}

/// LINA's plan runs on SD 3 as on a UNet: region-controlled attention over the 333-token
/// context, prompt-space guidance and the warped flow schedule change the image, and the
/// baseline plan changes nothing. So again with T5's text cut to 77 tokens
/// (`set_max_sequence_length`), whose context of 154 the biases then span.
#[test]
fn lina_runs_on_the_transformer() {
    let reference = Reference::open("sd3_tiny");
    let device = lina_runtime::device::cpu();
    let mut pipe = StableDiffusion::load(&DirSource::new(fixture("sd3_tiny")), &device).unwrap();
    let opts = options(4, (32, 32), reference.f32("latents").1);
    common::assert_lina_plans_act(&pipe, &opts, PROMPT, &common::transformer_plans());
    let draw = |pipe: &StableDiffusion| {
        pollster::block_on(pipe.generate(&opts, &mut NoHook, &CancelToken::new())).unwrap()
    };
    let default = draw(&pipe);
    assert_eq!(pipe.context_length(), 77 + 256);
    pipe.set_max_sequence_length(77).unwrap();
    assert_eq!(pipe.context_length(), 77 + 77);
    assert_ne!(
        draw(&pipe).image.rgb,
        default.image.rgb,
        "T5's length changed nothing"
    );
    common::assert_lina_plans_act(&pipe, &opts, PROMPT, &common::transformer_plans());
}
