#![cfg(not(target_arch = "wasm32"))]
//! The sampler loop: seeds, hooks, cancellation and explicit schedules.

mod common;

use common::{fixture, values};
use lina_runtime::pipeline::{
    CancelToken, GenerateOptions, ModelCall, NoHook, StableDiffusion, StepHook, StepState,
};
use lina_runtime::schedulers::{SchedulerKind, Timesteps};
use lina_runtime::source::DirSource;
use lina_runtime::{Error, Result};

fn pipe() -> StableDiffusion {
    StableDiffusion::load(
        &DirSource::new(fixture("sd1_tiny")),
        &lina_runtime::device::cpu(),
    )
    .unwrap()
}

fn opts(seed: u64) -> GenerateOptions {
    GenerateOptions {
        prompt: "a red ball on a small mirror".into(),
        seed,
        timesteps: Timesteps::Count(4),
        ..GenerateOptions::default()
    }
}

fn run(
    pipe: &StableDiffusion,
    opts: &GenerateOptions,
    hook: &mut dyn StepHook,
) -> Result<lina_runtime::image::Image> {
    pollster::block_on(pipe.generate(opts, hook, &CancelToken::new())).map(|done| done.image)
}

#[test]
fn a_seed_gives_the_same_image_and_another_seed_another() {
    let pipe = pipe();
    let a = run(&pipe, &opts(7), &mut NoHook).unwrap();
    assert_eq!(a, run(&pipe, &opts(7), &mut NoHook).unwrap());
    assert_ne!(a, run(&pipe, &opts(8), &mut NoHook).unwrap());
}

#[derive(Default)]
struct Recorder {
    seen: Vec<(usize, usize, f64)>,
    cancel_after: Option<(usize, CancelToken)>,
    push_latents: f32,
}

impl StepHook for Recorder {
    fn before_model(&mut self, call: &mut ModelCall) -> Result<()> {
        assert_eq!(
            call.context.dims()[0],
            2,
            "guided runs batch uncond and cond"
        );
        Ok(())
    }
    fn after_step(&mut self, state: &mut StepState) -> Result<()> {
        self.seen.push((state.step, state.steps, state.timestep));
        assert_eq!(state.pred_original.dims(), state.latents.dims());
        if self.push_latents != 0.0 {
            state.latents = state.latents.clone().add_scalar(self.push_latents);
        }
        if let Some((n, token)) = &self.cancel_after
            && state.step + 1 == *n
        {
            token.cancel();
        }
        Ok(())
    }
}

#[test]
fn hooks_see_every_step_and_can_change_the_latents() {
    let pipe = pipe();
    let mut rec = Recorder::default();
    let plain = run(&pipe, &opts(3), &mut rec).unwrap();
    let ts = pipe.start(&opts(3)).unwrap().timesteps().to_vec();
    let expected: Vec<_> = ts.iter().enumerate().map(|(i, &t)| (i, 4, t)).collect();
    assert_eq!(rec.seen, expected);

    let mut pushing = Recorder {
        push_latents: 0.5,
        ..Recorder::default()
    };
    assert_ne!(plain, run(&pipe, &opts(3), &mut pushing).unwrap());
}

#[test]
fn cancellation_stops_between_steps() {
    let pipe = pipe();
    let token = CancelToken::new();
    let mut rec = Recorder {
        cancel_after: Some((2, token.clone())),
        ..Recorder::default()
    };
    let result = pollster::block_on(pipe.generate(&opts(1), &mut rec, &token));
    assert!(
        matches!(result, Err(Error::Cancelled)),
        "{:?}",
        result.err()
    );
    assert_eq!(rec.seen.len(), 2);
}

#[test]
fn explicit_schedules_and_every_scheduler_run() {
    let pipe = pipe();
    for kind in [
        SchedulerKind::Ddim,
        SchedulerKind::Euler,
        SchedulerKind::EulerAncestral,
        SchedulerKind::DpmSolverMultistep,
        SchedulerKind::Lcm,
    ] {
        let o = GenerateOptions {
            timesteps: Timesteps::Explicit(vec![999.0, 900.0, 700.0, 300.0]),
            scheduler: Some(kind),
            ..opts(5)
        };
        let mut sampling = pipe.start(&o).unwrap();
        assert_eq!(sampling.timesteps(), &[999.0, 900.0, 700.0, 300.0]);
        while !sampling.is_done() {
            sampling.step(&mut NoHook).unwrap();
        }
        let latents = values(sampling.latents().clone());
        assert!(latents.iter().all(|v| v.is_finite()), "{kind:?}");
    }
}

#[test]
fn guidance_at_one_skips_the_unconditional_pass() {
    let pipe = pipe();
    struct Batch(usize);
    impl StepHook for Batch {
        fn before_model(&mut self, call: &mut ModelCall) -> Result<()> {
            self.0 = call.context.dims()[0];
            Ok(())
        }
    }
    let mut b = Batch(0);
    run(
        &pipe,
        &GenerateOptions {
            guidance_scale: 1.0,
            ..opts(2)
        },
        &mut b,
    )
    .unwrap();
    assert_eq!(b.0, 1);
}

/// Adds one region term with the prompt's own conditioning over a mask.
struct Region {
    weight: f64,
    mask: fn(usize, usize) -> f32,
    context: Option<burn::tensor::Tensor<3>>,
}

impl StepHook for Region {
    fn before_model(&mut self, call: &mut ModelCall) -> Result<()> {
        use burn::tensor::{Tensor, TensorData};
        let [_, _, h, w] = call.latents.dims();
        let device = call.latents.device();
        let values: Vec<f32> = (0..h * w).map(|i| (self.mask)(i / w, i % w)).collect();
        let mask = Tensor::<4>::from_data(TensorData::new(values, [1, 1, h, w]), &device);
        let context = match &self.context {
            Some(c) => c.clone(),
            None => call.context.clone().narrow(0, 1, 1),
        };
        call.regions.push(lina_runtime::pipeline::RegionTerm {
            context,
            mask,
            weight: self.weight,
        });
        Ok(())
    }
}

#[test]
fn a_region_term_over_the_whole_image_adds_to_the_guidance_scale() {
    let pipe = pipe();
    let mut o = opts(3);
    o.guidance_scale = 5.0;
    let full = Region {
        weight: 2.0,
        mask: |_, _| 1.0,
        context: None,
    };
    let with_term = run(&pipe, &o, &mut { full }).unwrap();
    o.guidance_scale = 7.0;
    let stronger = run(&pipe, &o, &mut NoHook).unwrap();
    assert!(
        common::image_diff(&with_term, &stronger) <= 1,
        "{}",
        common::image_diff(&with_term, &stronger)
    );

    // An empty mask changes nothing; a half mask changes the image.
    o.guidance_scale = 5.0;
    let plain = run(&pipe, &o, &mut NoHook).unwrap();
    let empty = Region {
        weight: 2.0,
        mask: |_, _| 0.0,
        context: None,
    };
    assert!(common::image_diff(&run(&pipe, &o, &mut { empty }).unwrap(), &plain) <= 1);
    let half = Region {
        weight: 2.0,
        mask: |_, x| (x < 4) as u8 as f32,
        context: None,
    };
    assert!(common::image_diff(&run(&pipe, &o, &mut { half }).unwrap(), &plain) > 1);
}

#[test]
fn a_region_term_that_does_not_fit_is_an_error() {
    let pipe = pipe();
    let (wrong, _) = pipe.encode_text("a ball", 0).unwrap();
    let bad = Region {
        weight: 1.0,
        mask: |_, _| 1.0,
        context: Some(burn::tensor::Tensor::cat(vec![wrong.clone(), wrong], 0)),
    };
    let err = run(&pipe, &opts(1), &mut { bad }).unwrap_err().to_string();
    assert!(err.contains("region term 0"), "{err}");
}

#[test]
fn stochastic_schedulers_follow_the_seed() {
    let pipe = pipe();
    for kind in [SchedulerKind::EulerAncestral, SchedulerKind::Lcm] {
        let o = |seed| GenerateOptions {
            scheduler: Some(kind),
            ..opts(seed)
        };
        let a = run(&pipe, &o(11), &mut NoHook).unwrap();
        assert_eq!(a, run(&pipe, &o(11), &mut NoHook).unwrap(), "{kind:?}");
        assert_ne!(a, run(&pipe, &o(12), &mut NoHook).unwrap(), "{kind:?}");
    }
}

/// Keeps the scheduler's prediction of the clean latents at each step.
#[derive(Default)]
struct KeepClean(Vec<burn::tensor::Tensor<4>>);

impl StepHook for KeepClean {
    fn after_step(&mut self, state: &mut StepState) -> Result<()> {
        self.0.push(state.pred_original.clone());
        Ok(())
    }
}

#[test]
fn previews_decode_the_predicted_clean_image_with_taesd_where_there_is_one() {
    use lina_runtime::image::Image;
    let device = lina_runtime::device::cpu();
    let with_taesd = StableDiffusion::load(
        &common::Overlay::new("sd1_tiny", "taesd_tiny", "vae_tiny/"),
        &device,
    )
    .unwrap();
    let plain = pipe();
    for (model, tiny) in [(&with_taesd, true), (&plain, false)] {
        let mut sampling = model.start(&opts(1)).unwrap();
        let mut kept = KeepClean::default();
        sampling.step(&mut kept).unwrap();
        sampling.step(&mut kept).unwrap();
        let preview = pollster::block_on(sampling.preview()).unwrap();
        let x0 = kept.0.pop().unwrap();
        let expected = if tiny {
            let config = lina_runtime::models::taesd::TaesdConfig::from_json(
                &String::from_utf8(common::read_fixture("taesd_tiny/vae_tiny/config.json"))
                    .unwrap(),
            )
            .unwrap();
            let bytes =
                common::read_fixture("taesd_tiny/vae_tiny/diffusion_pytorch_model.safetensors");
            let weights =
                lina_runtime::weights::Weights::from_bytes("taesd", &bytes, &device).unwrap();
            let decoder =
                lina_runtime::models::taesd::TaesdDecoder::load(config, &weights).unwrap();
            decoder.decode(x0)
        } else {
            model.vae().decode_scaled(x0)
        };
        let expected = pollster::block_on(Image::from_decoded(expected)).unwrap();
        assert_eq!(preview, expected, "taesd: {tiny}");
    }
}
