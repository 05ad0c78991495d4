//! The embedded default model (www/models/default, trained by tools/train_default.py on the
//! probe's training split): it loads, reproduces its reference image on every backend, and
//! draws scenes that the probe's checker recognises.
#![cfg(not(target_arch = "wasm32"))]

mod common;

use lina_probe::check::check;
use lina_probe::{Category, SceneId, Split};
use lina_runtime::image::Image;
use lina_runtime::pipeline::{CancelToken, GenerateOptions, NoHook, StableDiffusion};
use lina_runtime::schedulers::Timesteps;
use lina_runtime::source::DirSource;

const MODEL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/www/models/default");
const REFERENCE: &str = "default_model/reference.png";
const LINA_REFERENCE: &str = "default_model/reference_lina.png";
const COLLAGE_REFERENCE: &str = "default_model/reference_collage.png";
/// The page's defaults, which the reference image was made with (see tests/fixtures/README.md).
const PROMPT: &str = "a red ball on a table";
const STEPS: usize = 20;
const GUIDANCE: f64 = 3.0;

fn options(prompt: &str, seed: u64) -> GenerateOptions {
    GenerateOptions {
        prompt: prompt.to_string(),
        seed,
        timesteps: Timesteps::Count(STEPS),
        guidance_scale: GUIDANCE,
        ..Default::default()
    }
}

#[test]
fn the_default_model_reproduces_its_reference_image() {
    let reference = Image::from_png(&common::read_fixture(REFERENCE)).unwrap();
    for (name, device) in common::test_devices() {
        let pipe = StableDiffusion::load(&DirSource::new(MODEL), &device).unwrap();
        assert_eq!(pipe.native_size(), 64);
        let done = pollster::block_on(pipe.generate(
            &options(PROMPT, 0),
            &mut NoHook,
            &CancelToken::new(),
        ))
        .unwrap();
        assert_eq!((done.image.width, done.image.height), (64, 64));
        let worst = common::image_diff(&done.image, &reference);
        println!("{name}: worst pixel {worst}/255 from the reference");
        assert!(worst <= 3, "{name}: worst pixel off by {worst}/255");
    }
}

/// A plan with every judge-free mechanism that changes the image: the mirrored frame,
/// prompt guidance, region-controlled attention (on the prompt's own words), region terms,
/// the attention-energy latent update and the warped schedule. The browser test
/// `a_lina_plan_draws_the_native_image` runs the same one.
const LINA_PROMPT: &str = "a purple cube and a green ball with a lamp on the right";
const LINA_PLAN: &str = r#"{"mirror":true,"promptStrength":0.5,"attentionStrength":0.5,"attentionWindow":[0,0.5],"nodeWeight":0.5,"regionWindow":[0,0.3],"energyStrength":0.25,"energyWindow":[0,0.3],"warp":1.2}"#;
/// The mechanisms that plan leaves out, which the predictor picks for this prompt: the
/// collage in the mirrored frame (its choice), with half the guidance scale. The browser
/// test runs it too.
const COLLAGE_PLAN: &str = r#"{"mirror":true,"collage":0.1,"guidance":0.5}"#;

/// A LINA plan gives the same image on every backend: each reference was drawn once by the
/// native CPU backend (tests/fixtures/README.md), and the browser tests draw them too.
#[test]
fn a_lina_plan_reproduces_its_reference_image() {
    let csg = lina_csg::parse::parse(LINA_PROMPT).unwrap();
    let references: [(&str, &str, &[&str]); 2] = [
        (
            LINA_REFERENCE,
            LINA_PLAN,
            &[
                "mirrored frame",
                "prompt guidance",
                "region-controlled attention",
                "\"a green ball\"",
                "attention-energy latent update",
                "schedule warp",
            ],
        ),
        (
            COLLAGE_REFERENCE,
            COLLAGE_PLAN,
            &["mirrored frame", "collage of", "guidance 3 x 0.5"],
        ),
    ];
    for (name, device) in common::test_devices() {
        let pipe = StableDiffusion::load(&DirSource::new(MODEL), &device).unwrap();
        let plain = pollster::block_on(pipe.generate(
            &options(LINA_PROMPT, 0),
            &mut NoHook,
            &CancelToken::new(),
        ))
        .unwrap();
        for (file, plan, mechanisms) in references {
            let reference = Image::from_png(&common::read_fixture(file)).unwrap();
            let plan = lina::Plan::parse(plan).unwrap();
            let done = pollster::block_on(lina::generate(
                &pipe,
                &options(LINA_PROMPT, 0),
                &csg,
                &plan,
                &mut NoHook,
                &CancelToken::new(),
            ))
            .unwrap();
            // Every mechanism of the plan ran.
            let described = done.described.join("; ");
            for what in mechanisms {
                assert!(described.contains(what), "{name}: no {what} in {described}");
            }
            let worst = common::image_diff(&done.generated.image, &reference);
            println!("{name}: worst pixel {worst}/255 from {file}");
            // Issue 24's bound for the same plan natively and in the browser.
            assert!(worst <= 2, "{name}, {file}: worst pixel off by {worst}/255");
            // Not the plain image of the same prompt: the plan changed it.
            assert!(
                common::image_diff(&plain.image, &reference) > 32,
                "{name}, {file}"
            );
        }
    }
}

/// A small, fixed slice of the in-distribution suite (the first two prompts of every
/// category, seed 0): the full measurement is `lina-cli probe --suite id --seeds 4`.
#[test]
fn the_default_model_draws_scenes_the_checker_recognises() {
    let pipe = StableDiffusion::load(&DirSource::new(MODEL), &lina_runtime::device::cpu()).unwrap();
    let (mut passed, mut total) = (0, 0);
    for category in Category::ALL {
        for index in 0..2 {
            let scene = SceneId {
                split: Split::Test,
                category,
                index,
            }
            .scene();
            let done = pollster::block_on(pipe.generate(
                &options(&scene.prompt, 0),
                &mut NoHook,
                &CancelToken::new(),
            ))
            .unwrap();
            for v in check(&done.image, &scene.csg) {
                total += 1;
                passed += v.passed as usize;
                if !v.passed {
                    println!("\"{}\": {} failed ({})", scene.prompt, v.check, v.detail);
                }
            }
        }
    }
    let rate = passed as f64 / total as f64;
    println!("{passed}/{total} checks pass ({:.0}%)", 100.0 * rate);
    assert!(rate >= MIN_PASS_RATE, "{:.0}% of checks pass", 100.0 * rate);
}

/// A little below the rate measured when the model was exported (60/79 = 76% on the CPU
/// backend, which is deterministic), so that a regression in the sampler, the loader, the
/// checker or the weights shows. Raise it when the model is retrained.
const MIN_PASS_RATE: f64 = 0.70;

/// The learned plan predictor shipped with the model (docs/lina.md): it loads with the model,
/// its suggestion is one of the candidates, and it depends on the prompt only through its
/// features, so the same prompt always gets the same plan.
#[test]
fn the_default_model_s_predictor_suggests_one_of_its_candidate_plans() {
    use lina::predict::{Predictor, candidates, features};
    let pipe = StableDiffusion::load(&DirSource::new(MODEL), &lina_runtime::device::cpu()).unwrap();
    let predictor = Predictor::load(&DirSource::new(MODEL))
        .unwrap()
        .expect("www/models/default has lina_predictor.json");
    // Each shipped candidate is one of this build's, with the same plan: the baseline, prompt
    // guidance, half the guidance scale and the collage, each in the scene's frame and in the
    // mirrored one.
    for c in &predictor.candidates {
        assert!(
            candidates().contains(&(c.name.clone(), c.plan.clone())),
            "{} is not a candidate of this build, or its plan differs",
            c.name
        );
    }
    assert_eq!(predictor.candidates.len(), candidates().len());
    for prompt in [
        "a red ball on a small mirror",
        "two blue cubes on the floor, lit from the right",
        "a person close to the water and in the sand",
    ] {
        let csg = lina_csg::parse::parse(prompt).unwrap();
        let x = pollster::block_on(features(&pipe, prompt, &csg)).unwrap();
        assert_eq!(x.len(), lina::predict::FEATURES.len());
        assert!(x.iter().all(|v| v.is_finite()), "{x:?}");
        let s = pollster::block_on(predictor.suggest_for(&pipe, prompt, &csg)).unwrap();
        let (_, plan) = candidates()
            .into_iter()
            .find(|(n, _)| *n == s.candidate)
            .unwrap();
        assert_eq!(s.plan, plan, "{prompt}");
        let again = pollster::block_on(predictor.suggest_for(&pipe, prompt, &csg)).unwrap();
        assert_eq!(again.candidate, s.candidate);
        if lina::mirror::mirrored(prompt).is_none() {
            assert!(
                !s.plan.mirror,
                "{prompt}: a mirror without a direction is named"
            );
        }
    }
    // What it learnt from the training prompts and their mirror images: the model draws
    // scenes lit from the left better, so a thing lit from the right is drawn mirrored, and
    // its mirror image is not.
    // And where weaker guidance pays: lit scenes the collage does not arrange (a row of one
    // lit thing, a pair lit from above) get half the scale; a stack, whose top the training
    // prompts lost more often under it, the whole scale.
    // And the collage wherever it arranges the graph: the training prompts' pairs side by
    // side and pairs lit from one side gained by it, in either frame, and their rows of
    // things drew their counts and shapes at least as well. Never for a stack or a scene lit
    // from above, which it does not arrange. (Two objects lit from the right are held out of
    // the model's training and never sampled by the search: its rows for them are the mirror
    // images of two objects lit from the left. A collage places each thing where the graph
    // says, whichever side the model draws a colour on or the light comes from: the frame of
    // a collage, and the scale of the runs it does not arrange, are ranked within a hair
    // either way, and the test leaves them alone.)
    let half = Some(lina::Plan::GUIDANCE_FACTOR);
    for (prompt, mirrored, guidance, collage) in [
        ("a red cube lit from the right", Some(true), None, false),
        ("a red cube lit from the left", Some(false), None, false),
        (
            "a red cube and a blue ball lit from the right",
            None,
            None,
            true,
        ),
        (
            "a red cube and a blue ball lit from the left",
            None,
            None,
            true,
        ),
        ("two red balls lit from the right", Some(true), half, false),
        (
            "a red cube and a blue ball lit from above",
            None,
            half,
            false,
        ),
        (
            "a purple cone to the left of a green cube",
            None,
            None,
            true,
        ),
        (
            "a purple cone to the right of a green cube",
            None,
            None,
            true,
        ),
        ("a red cube on a blue cube", Some(false), Some(1.0), false),
        ("four green cones", Some(false), None, true),
    ] {
        let csg = lina_csg::parse::parse(prompt).unwrap();
        let s = pollster::block_on(predictor.suggest_for(&pipe, prompt, &csg)).unwrap();
        if let Some(m) = mirrored {
            assert_eq!(s.plan.mirror, m, "{prompt}: {s:?}");
        }
        if let Some(g) = guidance {
            assert_eq!(s.plan.guidance, g, "{prompt}: {s:?}");
        }
        assert_eq!(s.plan.collage > 0.0, collage, "{prompt}: {s:?}");
    }
}

/// The benchmarks' UNet call (lina_runtime::bench::UnetCall) has the shapes of a guided step at the
/// model's native size, the ones the peers' benchmarks are given, and runs to the end.
#[test]
fn the_benchmark_unet_call_is_a_guided_step_at_native_size() {
    let pipe = StableDiffusion::load(&DirSource::new(MODEL), &lina_runtime::device::cpu()).unwrap();
    let call = lina_runtime::bench::UnetCall::new(&pipe).unwrap();
    let latent = pipe.unet().expect("a UNet model").config().sample_size;
    assert_eq!(call.shape(), [2, 4, latent, latent]);
    assert_eq!(latent * pipe.vae().config().downscale(), pipe.native_size());
    pollster::block_on(call.run(&pipe)).unwrap();
}
