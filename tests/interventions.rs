#![cfg(not(target_arch = "wasm32"))]
//! LINA's interventions as mechanisms, on the tiny SD1-like fixture: the baseline plan is the
//! plain sampler, each intervention acts only inside its window and on its targets. Their
//! effect on physical alignment is measured on the default model by the probe (docs/lina.md).

mod common;

use common::{fixture, lina_run};
use lina::{self as intervene, Plan};
use lina_csg::parse::parse;
use lina_runtime::image::Image;
use lina_runtime::pipeline::{CancelToken, GenerateOptions, NoHook, StableDiffusion};
use lina_runtime::schedulers::Timesteps;
use lina_runtime::source::DirSource;

fn pipe() -> StableDiffusion {
    StableDiffusion::load(
        &DirSource::new(fixture("sd1_tiny")),
        &lina_runtime::device::cpu(),
    )
    .unwrap()
}

fn opts(prompt: &str) -> GenerateOptions {
    GenerateOptions {
        prompt: prompt.into(),
        seed: 5,
        timesteps: Timesteps::Count(6),
        guidance_scale: 5.0,
        ..GenerateOptions::default()
    }
}

fn plain(pipe: &StableDiffusion, o: &GenerateOptions) -> Image {
    pollster::block_on(pipe.generate(o, &mut NoHook, &CancelToken::new()))
        .unwrap()
        .image
}

fn with_plan(pipe: &StableDiffusion, o: &GenerateOptions, plan: &Plan) -> intervene::Intervened {
    let csg = parse(&o.prompt).unwrap();
    lina_run(pipe, o, &csg, plan, &mut NoHook).unwrap()
}

/// "a red ball on a small mirror" with boxes for the ball and the mirror below it.
fn mirror_scene_with_layout(prompt: &str) -> lina_csg::Csg {
    let mut csg = parse(prompt).unwrap();
    for (id, b) in [
        ("object", [0.4, 0.45, 0.6, 0.72]),
        ("surface", [0.42, 0.72, 0.58, 0.8]),
    ] {
        csg.nodes.iter_mut().find(|n| n.id == id).unwrap().layout = Some(b);
    }
    csg
}

#[test]
fn the_baseline_plan_is_the_plain_sampler() {
    let pipe = pipe();
    let o = opts("a red ball on a small mirror");
    let out = with_plan(&pipe, &o, &Plan::default());
    assert_eq!(out.generated.image, plain(&pipe, &o));
    assert!(out.described.is_empty());
}

#[test]
fn ablation_variants_turn_one_component_on_or_off() {
    use intervene::Component;
    // The default plan leaves the region terms, the attention control, the attention-energy
    // update, the schedule, the mirrored frame, the guidance factor and the collage off
    // (docs/lina.md); `with` turns each on, and with them it uses all eight.
    let lina = Plan::lina();
    assert!(!lina.uses(Component::Regions) && !lina.uses(Component::Schedule));
    assert!(!lina.uses(Component::Attention) && !lina.uses(Component::Mirror));
    assert!(!lina.uses(Component::Energy) && !lina.uses(Component::Guidance));
    assert!(lina.uses(Component::Prompt));
    let full = Component::ALL
        .into_iter()
        .fold(lina.clone(), |p, c| p.with(c));
    assert_eq!(
        full,
        lina.with_regions()
            .with(Component::Schedule)
            .with(Component::Attention)
            .with(Component::Energy)
            .with(Component::Mirror)
            .with(Component::Guidance)
            .with(Component::Collage)
    );
    assert_eq!(full.with(Component::Prompt), full, "on already: unchanged");
    for c in Component::ALL {
        assert!(full.uses(c), "{}", c.name());
        let alone = full.only(c);
        let without = full.without(c);
        assert!(alone.uses(c) && !without.uses(c), "{}", c.name());
        for other in Component::ALL.into_iter().filter(|&o| o != c) {
            assert!(!alone.uses(other) && without.uses(other), "{}", c.name());
        }
    }
    assert!(
        full.only(Component::Prompt)
            .without(Component::Prompt)
            .is_baseline()
    );
}

#[test]
fn a_collage_starts_the_run_from_things_drawn_alone_where_they_stand_apart() {
    // The tiny random model draws noise, which no checker understands: this is the
    // mechanism (what runs, what it costs, that it repeats), not its effect on a scene.
    let pipe = pipe();
    let plan = Plan {
        collage: 0.5,
        ..Plan::default()
    };
    let o = opts("a red ball to the left of a blue cube");
    let out = with_plan(&pipe, &o, &plan);
    assert!(
        out.described
            .iter()
            .any(|d| d.starts_with(r#"collage of ["a red ball", "a blue cube"]"#)),
        "{:?}",
        out.described
    );
    // Each thing drawn alone, two rows a call under guidance, then half of the 6 steps.
    let per_thing = 2 * intervene::collage::THING_STEPS;
    assert_eq!(out.evaluations, 2 * per_thing + 2 * 3);
    assert_ne!(out.generated.image, plain(&pipe, &o));
    assert_eq!(
        with_plan(&pipe, &o, &plan).generated.image,
        out.generated.image
    );

    // Things that touch keep the plain start, at the plain cost.
    let stack = opts("a red ball on a blue cube");
    let out = with_plan(&pipe, &stack, &plan);
    assert!(
        out.described.iter().any(|d| d.starts_with("collage off")),
        "{:?}",
        out.described
    );
    assert_eq!(out.generated.image, plain(&pipe, &stack));
    assert_eq!(out.evaluations, 2 * 6);

    // A strength that redraws none of the run's steps (0.1 of 6) keeps the plain start too,
    // drawing no piece: a predicted plan runs on the shortest schedule.
    let slight = Plan {
        collage: 0.1,
        ..Plan::default()
    };
    let out = with_plan(&pipe, &o, &slight);
    assert!(
        out.described
            .iter()
            .any(|d| d.starts_with("collage off: strength 0.1 redraws none of the 6 steps")),
        "{:?}",
        out.described
    );
    assert_eq!(out.generated.image, plain(&pipe, &o));
    assert_eq!(out.evaluations, 2 * 6);

    // A strength past 1, or a start of the caller's own, is an error naming the collage.
    let bad = Plan::parse(r#"{"collage": 1.5}"#).unwrap_err().to_string();
    assert!(bad.contains("collage"), "{bad}");
    let img2img = GenerateOptions {
        init_image: Some(out.generated.image),
        ..o.clone()
    };
    let csg = parse(&o.prompt).unwrap();
    let err = lina_run(&pipe, &img2img, &csg, &plan, &mut NoHook)
        .err()
        .expect("a collage on an init image is refused")
        .to_string();
    assert!(err.contains("collage"), "{err}");
}

#[test]
fn a_guidance_factor_is_plain_sampling_at_that_share_of_the_scale() {
    // The plan scales the run's own guidance, so the same factor means the same on a model
    // sampled at 7.5 as on one sampled at 3; nothing else changes.
    let pipe = pipe();
    let o = opts("a red ball on a small mirror");
    let half = Plan {
        guidance: 0.5,
        ..Plan::default()
    };
    let out = with_plan(&pipe, &o, &half);
    let scaled = GenerateOptions {
        guidance_scale: o.guidance_scale * 0.5,
        ..o.clone()
    };
    assert!(
        o.guidance_scale * 0.5 > 1.0,
        "both runs guide: same evaluations"
    );
    assert_eq!(out.generated.image, plain(&pipe, &scaled));
    assert_ne!(out.generated.image, plain(&pipe, &o));
    assert_eq!(out.evaluations, 2 * 6, "two rows a step, as plain sampling");
    assert!(
        out.described.iter().any(|d| d.starts_with("guidance ")),
        "{:?}",
        out.described
    );
}

#[test]
fn evaluations_count_every_batch_row() {
    let pipe = pipe();
    let o = opts("a red ball on a small mirror");
    let steps = 6;
    let base = pollster::block_on(pipe.generate(&o, &mut NoHook, &CancelToken::new())).unwrap();
    assert_eq!(
        base.evaluations,
        2 * steps,
        "classifier-free guidance: two rows a step"
    );
    // Warp and prompt guidance add no UNet evaluation.
    let free = Plan {
        warp: 1.5,
        prompt_strength: 1.0,
        ..Plan::default()
    };
    assert_eq!(with_plan(&pipe, &o, &free).evaluations, 2 * steps);
    // Region guidance: a row per region term in its window, where the graph has boxes.
    let regions = Plan {
        node_weight: 1.0,
        ..Plan::default()
    };
    let csg = mirror_scene_with_layout(&o.prompt);
    let run = |csg: &lina_csg::Csg| lina_run(&pipe, &o, csg, &regions, &mut NoHook).unwrap();
    assert!(run(&csg).evaluations > 2 * steps);
    // Without a box in the graph, the boxes come from its relations, and it says so: no
    // judge reads the layout off the image instead.
    let bare = run(&parse(&o.prompt).unwrap());
    assert!(bare.evaluations > 2 * steps);
    assert!(
        bare.described
            .iter()
            .any(|d| d.contains("layout derived from the graph's relations")),
        "{:?}",
        bare.described
    );
    assert_eq!(
        bare.layout,
        lina_csg::layout::derive(&parse(&o.prompt).unwrap())
    );
    // A graph with no node to place has nothing to guide, and says so.
    let empty = run(&parse("highly detailed, 4k").unwrap());
    assert_eq!(empty.evaluations, 2 * steps);
    assert!(
        empty
            .described
            .iter()
            .any(|d| d.contains("no node of the scene graph has a layout box")),
        "{:?}",
        empty.described
    );
}

#[test]
fn the_warp_changes_the_timesteps_and_the_image() {
    let pipe = pipe();
    let o = opts("a red ball on a small mirror");
    let plan = Plan {
        warp: 2.0,
        ..Plan::default()
    };
    let out = with_plan(&pipe, &o, &plan);
    let base = intervene::timesteps(&pipe, &o, &Plan::default()).unwrap();
    assert_eq!(out.timesteps.len(), base.len());
    assert!(
        out.timesteps[1] > base[1],
        "{:?} vs {base:?}",
        out.timesteps
    );
    assert!(common::image_diff(&out.generated.image, &plain(&pipe, &o)) > 0);
}

#[test]
fn prompt_guidance_moves_only_relation_tokens_inside_its_window() {
    let pipe = pipe();
    let o = opts("a red ball on a small mirror");
    let base = plain(&pipe, &o);
    let on = Plan {
        prompt_strength: 3.0,
        prompt_window: [0.0, 1.0],
        ..Plan::default()
    };
    let out = with_plan(&pipe, &o, &on);
    assert!(common::image_diff(&out.generated.image, &base) > 0);
    let positions = lina::prompt::relation_positions(&pipe, &o.prompt).unwrap();
    assert_eq!(positions.len(), 2, "\"on\" and \"small\"");

    // An empty window, or a prompt without relation words, changes nothing.
    let empty = Plan {
        prompt_window: [0.5, 0.5],
        ..on.clone()
    };
    assert_eq!(with_plan(&pipe, &o, &empty).generated.image, base);
    assert!(
        lina::prompt::relation_positions(&pipe, "a red ball")
            .unwrap()
            .is_empty()
    );
    let o3 = opts("a red ball");
    assert_eq!(
        with_plan(&pipe, &o3, &on).generated.image,
        plain(&pipe, &o3)
    );
}

#[test]
fn region_guidance_uses_the_csg_layout_and_forbids_spills() {
    let pipe = pipe();
    let o = opts("a red ball on a small mirror");
    let csg = mirror_scene_with_layout(&o.prompt);
    let plan = Plan {
        node_weight: 2.0,
        effect_weight: 3.0,
        ..Plan::default()
    };
    let out = lina_run(&pipe, &o, &csg, &plan, &mut NoHook).unwrap();
    assert!(
        out.described.iter().any(|d| d.contains("\"a red ball\"")),
        "{:?}",
        out.described
    );
    assert!(
        out.described
            .iter()
            .any(|d| d.contains("reflection_of_object may not be")),
        "{:?}",
        out.described
    );
    assert!(common::image_diff(&out.generated.image, &plain(&pipe, &o)) > 0);
}

#[test]
fn bad_plans_are_clear_errors() {
    let pipe = pipe();
    let o = opts("a red ball on a small mirror");
    let csg = parse(&o.prompt).unwrap();
    for (plan, word) in [
        (
            Plan {
                warp: 0.0,
                ..Plan::default()
            },
            "warp",
        ),
        (
            Plan {
                prompt_window: [0.6, 0.2],
                ..Plan::default()
            },
            "promptWindow",
        ),
        (
            Plan {
                node_weight: f64::NAN,
                ..Plan::default()
            },
            "nodeWeight",
        ),
        (
            Plan {
                region_window: [0.5, 1.5],
                ..Plan::default()
            },
            "regionWindow",
        ),
        (
            Plan {
                attention_strength: f64::INFINITY,
                ..Plan::default()
            },
            "attentionStrength",
        ),
        (
            Plan {
                attention_window: [-0.1, 0.5],
                ..Plan::default()
            },
            "attentionWindow",
        ),
        (
            Plan {
                guidance: 0.0,
                ..Plan::default()
            },
            "guidance",
        ),
        (
            Plan {
                guidance: f64::NAN,
                ..Plan::default()
            },
            "guidance",
        ),
        (
            Plan {
                guidance: Plan::MAX_GUIDANCE_FACTOR * 2.0,
                ..Plan::default()
            },
            "guidance",
        ),
    ] {
        let err = lina_run(&pipe, &o, &csg, &plan, &mut NoHook)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains(word), "{word}: {err}");
    }
}

#[test]
fn a_step_sweep_has_one_point_per_step_and_a_neutral_plan_changes_nothing() {
    use lina_probe::diagnose::step_sweep;
    let pipe = pipe();
    let o = opts("a red ball on a small mirror");
    let csg = parse(&o.prompt).unwrap();
    let go = CancelToken::new();
    let neutral = pollster::block_on(step_sweep(&pipe, &o, &csg, &Plan::default(), &go)).unwrap();
    assert_eq!(neutral.points.len(), 6);
    assert!(neutral.points.iter().all(|p| p.change == 0.0));
    let strong = Plan {
        prompt_strength: 5.0,
        ..Plan::default()
    };
    let sweep = pollster::block_on(step_sweep(&pipe, &o, &csg, &strong, &go)).unwrap();
    assert!(
        sweep.points.iter().any(|p| p.change > 0.0),
        "{:?}",
        sweep.points
    );
    // Guidance at the first step moves the image more than at the last.
    assert!(
        sweep.points[0].change > sweep.points[5].change,
        "{:?}",
        sweep.points
    );
    // A cancelled token stops it before the first step.
    let stop = CancelToken::new();
    stop.cancel();
    let e = pollster::block_on(step_sweep(&pipe, &o, &csg, &strong, &stop)).unwrap_err();
    assert_eq!(e.code(), "cancelled", "{e}");
}

#[test]
fn reinpainting_a_node_regenerates_its_region_only() {
    use lina_probe::diagnose::{node_region, pixel_mask, reinpaint};
    let pipe = pipe();
    let o = opts("a red ball on a small mirror");
    let csg = mirror_scene_with_layout(&o.prompt);
    let layout: Vec<_> = csg.nodes.iter().map(|n| n.layout).collect();
    // The reflection's region: its object, its surface and where it may not spill.
    let boxes = node_region(&csg, &layout, "reflection_of_object").unwrap();
    assert!(boxes.len() >= 3, "{boxes:?}");
    let mask = pixel_mask(&[[0.25, 0.25, 0.75, 0.75]], 64, 64, 0.0);
    assert_eq!(mask.iter().sum::<f32>(), 32.0 * 32.0);

    let image = plain(&pipe, &o);
    let out = pollster::block_on(reinpaint(
        &pipe,
        &o,
        &csg,
        &Plan::default(),
        &image,
        "object",
        0.6,
        &CancelToken::new(),
    ))
    .unwrap();
    let regenerated = out.mask.iter().filter(|&&m| m > 0.5).count();
    assert!(
        regenerated > 100 && regenerated < 64 * 64 / 3,
        "{regenerated} pixels masked"
    );
    assert_eq!(out.before.len(), out.after.len());
    let err = pollster::block_on(reinpaint(
        &pipe,
        &o,
        &csg,
        &Plan::default(),
        &image,
        "cat",
        0.6,
        &CancelToken::new(),
    ))
    .err()
    .unwrap()
    .to_string();
    assert!(err.contains("no node \"cat\""), "{err}");
}

#[test]
fn plans_fit_img2img_runs_and_karras_schedules() {
    let pipe = pipe();
    let o = opts("a red ball on a small mirror");
    let csg = mirror_scene_with_layout(&o.prompt);
    // img2img at strength 0.5 runs steps 3..6; the plan's windows land inside them.
    let image = plain(&pipe, &o);
    let i2i = GenerateOptions {
        init_image: Some(image),
        strength: 0.5,
        ..o.clone()
    };
    let lina_plan = Plan::lina();
    let out = lina_run(&pipe, &i2i, &csg, &lina_plan, &mut NoHook).unwrap();
    assert!(
        out.described.iter().any(|d| d.contains("prompt guidance")),
        "{:?}",
        out.described
    );

    // A DPM-Solver config with Karras sigmas (which refuse explicit lists) runs under the
    // baseline plan, and a warp on it is a clear error.
    let mut files = lina_runtime::source::MemorySource::new();
    for path in [
        "text_encoder/config.json",
        "text_encoder/model.safetensors",
        "tokenizer/tokenizer.json",
        "tokenizer/tokenizer_config.json",
        "unet/config.json",
        "unet/diffusion_pytorch_model.safetensors",
        "vae/config.json",
        "vae/diffusion_pytorch_model.safetensors",
    ] {
        files.insert(path, common::read_fixture(&format!("sd1_tiny/{path}")));
    }
    files.insert(
        "scheduler/scheduler_config.json",
        br#"{"_class_name": "DPMSolverMultistepScheduler", "beta_schedule": "scaled_linear",
             "beta_start": 0.00085, "beta_end": 0.012, "use_karras_sigmas": true}"#
            .to_vec(),
    );
    let karras = StableDiffusion::load(&files, &lina_runtime::device::cpu()).unwrap();
    let run = |plan: &Plan| lina_run(&karras, &o, &csg, plan, &mut NoHook);
    assert!(run(&Plan::default()).is_ok());
    let err = run(&Plan {
        warp: 2.0,
        ..Plan::default()
    })
    .err()
    .unwrap()
    .to_string();
    assert!(err.contains("Karras"), "{err}");
}

#[test]
fn embedding_shifts_are_zero_for_no_change_and_refuse_a_different_layout() {
    use lina::shift::{EditKind, measure};
    let pipe = pipe();
    let prompt = "a red ball on a small mirror";
    let shifts = pollster::block_on(measure(
        &pipe,
        prompt,
        &[
            (EditKind::Texture, prompt.to_string()),
            (EditKind::Texture, "a blue ball on a small mirror".into()),
            (EditKind::Physics, "a red ball under a small mirror".into()),
        ],
    ))
    .unwrap();
    assert_eq!(shifts[0].relative, 0.0);
    assert!(shifts[0].cosine.abs() < 1e-6, "{}", shifts[0].cosine);
    assert!(
        shifts[1].relative > 0.01 && shifts[2].relative > 0.01,
        "{shifts:?}"
    );
    let e = pollster::block_on(measure(
        &pipe,
        prompt,
        &[(
            EditKind::Physics,
            "a red ball on top of a small mirror".into(),
        )],
    ))
    .unwrap_err()
    .to_string();
    assert!(e.contains("same number of tokens"), "{e}");
}
