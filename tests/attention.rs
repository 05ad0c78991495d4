#![cfg(not(target_arch = "wasm32"))]
//! The UNet's cross-attention control and LINA's region-controlled attention on the tiny
//! random SD-architecture fixture, which no checker understands: the mechanism must work on
//! any checkpoint, so these tests measure it through the model's own attention, on the CPU
//! backend and (with LINA_TEST_GPU=1) on wgpu.

mod common;

use burn::tensor::Tensor;
use common::{fixture, lina_run, max_abs_diff, test_devices, values};
use lina::attention::{AttentionRecorder, node_tokens};
use lina::{Plan, region};
use lina_runtime::image::Image;
use lina_runtime::models::attention_control::CrossAttentionControl;
use lina_runtime::pipeline::{
    CancelToken, GenerateOptions, ModelCall, NoHook, StableDiffusion, StepHook, StepState,
};
use lina_runtime::schedulers::Timesteps;
use lina_runtime::source::DirSource;

fn pipe(device: &burn::tensor::Device) -> StableDiffusion {
    StableDiffusion::load(&DirSource::new(fixture("sd1_tiny")), device).unwrap()
}

const PROMPT: &str = "a red ball on a blue cube";

/// The prompt's graph with boxes that are off the diagonal and not square, so that a
/// transposed or flipped map would miss them: the ball top left and wide, the cube bottom
/// right and tall.
fn scene() -> lina_csg::Csg {
    let mut csg = lina_csg::parse::parse(PROMPT).unwrap();
    for (class, b) in [
        (lina_csg::Class::Ball, [0.0, 0.0, 0.75, 0.5]),
        (lina_csg::Class::Cube, [0.5, 0.25, 1.0, 1.0]),
    ] {
        csg.nodes
            .iter_mut()
            .find(|n| n.class == class)
            .unwrap()
            .layout = Some(b);
    }
    csg
}

fn opts() -> GenerateOptions {
    GenerateOptions {
        prompt: PROMPT.into(),
        seed: 3,
        timesteps: Timesteps::Count(6),
        guidance_scale: 5.0,
        ..GenerateOptions::default()
    }
}

/// A control that asks nothing of the scores (a zero bias) but a record takes the explicit
/// path: it must give the plain forward's output, and its record is a distribution over the
/// tokens at every latent cell.
#[test]
fn a_zero_bias_changes_nothing_and_the_record_is_a_distribution() {
    for (name, device) in test_devices() {
        let pipe = pipe(&device);
        let unet = pipe.unet().expect("a UNet model");
        let (context, _) = pipe.encode_text(PROMPT, 0).unwrap();
        let size = unet.config().sample_size;
        let x = Tensor::<4>::random(
            [1, 4, size, size],
            burn::tensor::Distribution::Normal(0.0, 1.0),
            &device,
        );
        let plain = unet.forward(x.clone(), 500.0, &context);
        let tokens = context.dims()[1];
        let control = CrossAttentionControl {
            bias: Some(Tensor::zeros([tokens, size, size], &device)),
            record: true,
        };
        let (controlled, record) =
            unet.forward_controlled(x, 500.0, &context, None, &control, 0, None);
        let diff = max_abs_diff(&values(plain), &values(controlled));
        assert!(
            diff < 1e-4,
            "{name}: a zero bias moved the output by {diff}"
        );
        let record = record.expect("a record was asked for");
        assert_eq!(record.dims(), [tokens, size, size], "{name}");
        let sums = values(record.sum_dim(0));
        let worst = sums.iter().map(|s| (s - 1.0).abs()).fold(0.0, f32::max);
        assert!(
            worst < 1e-4,
            "{name}: a cell's attention sums to 1 ± {worst}"
        );
    }
}

/// A control that only biases runs in the fused attention kernel on wgpu (the bias an input
/// of the kernel, no score matrix), a recording one makes its scores explicitly: the two
/// must give the same output, and one the bias moved.
#[test]
fn a_bias_in_the_fused_kernel_equals_the_explicit_scores() {
    for (name, device) in test_devices() {
        let pipe = pipe(&device);
        let unet = pipe.unet().expect("a UNet model");
        let (context, _) = pipe.encode_text(PROMPT, 0).unwrap();
        let size = unet.config().sample_size;
        let normal = burn::tensor::Distribution::Normal(0.0, 1.0);
        let x = Tensor::<4>::random([1, 4, size, size], normal, &device);
        let tokens = context.dims()[1];
        let bias = Tensor::<3>::random([tokens, size, size], normal, &device).mul_scalar(4.0);
        let plain = values(unet.forward(x.clone(), 500.0, &context));
        let run = |record: bool| {
            let control = CrossAttentionControl {
                bias: Some(bias.clone()),
                record,
            };
            values(
                unet.forward_controlled(x.clone(), 500.0, &context, None, &control, 0, None)
                    .0,
            )
        };
        let (fused, explicit) = (run(false), run(true));
        let moved = max_abs_diff(&plain, &explicit);
        assert!(
            moved > 1e-3,
            "{name}: the bias moved the output by only {moved}"
        );
        let diff = max_abs_diff(&fused, &explicit);
        assert!(
            diff < 1e-4,
            "{name}: the bias through the kernel is off the explicit scores' output by {diff}"
        );
    }
}

/// The share of a token set's attention that falls inside a box, over the recorded steps
/// `steps`: the mean of `sum(in box) / sum(all cells)` per step.
fn share_in_box(
    records: &[Tensor<3>],
    steps: std::ops::Range<usize>,
    tokens: &[usize],
    b: region::Box4,
) -> f32 {
    let shares: Vec<f32> = records[steps]
        .iter()
        .map(|r| {
            let [_, h, w] = r.dims();
            let inside = region::mask(&[b], h, w, &r.device()).reshape([1, h, w]);
            let per_token: Vec<Tensor<3>> =
                tokens.iter().map(|&t| r.clone().narrow(0, t, 1)).collect();
            let maps = Tensor::cat(per_token, 0);
            let all = values(maps.clone().sum())[0];
            let mine = values(maps.mul(inside).sum())[0];
            mine / all
        })
        .collect();
    shares.iter().sum::<f32>() / shares.len() as f32
}

fn record(pipe: &StableDiffusion, plan: &Plan) -> (Vec<Tensor<3>>, Image) {
    let mut recorder = AttentionRecorder::default();
    let out = lina_run(pipe, &opts(), &scene(), plan, &mut recorder).unwrap();
    (recorder.steps, out.generated.image)
}

/// Each boxed node's words attend more inside their box under the control than in plain
/// sampling, by a margin, during the window; and the image differs from plain sampling's.
#[test]
fn region_controlled_attention_moves_each_nodes_attention_into_its_box() {
    for (name, device) in test_devices() {
        let pipe = pipe(&device);
        let csg = scene();
        let tokens = node_tokens(&pipe, PROMPT, &csg).unwrap();
        let plan = Plan {
            attention_strength: 2.0,
            attention_window: [0.0, 0.5],
            ..Plan::default()
        };
        let (plain, plain_image) = record(&pipe, &Plan::default());
        let (steered, steered_image) = record(&pipe, &plan);
        assert_eq!(plain.len(), 6, "{name}: one record per step");
        assert_eq!(steered.len(), 6, "{name}: one record per step");
        let window = lina::steps_of(plan.attention_window, 0..6);
        let mut boxed = 0;
        for ((node, positions), n) in csg.nodes.iter().zip(&tokens).zip(0..) {
            let Some(b) = node.layout else { continue };
            assert!(!positions.is_empty(), "{name}: node {n} has no tokens");
            boxed += 1;
            let before = share_in_box(&plain, window.clone(), positions, b);
            let after = share_in_box(&steered, window.clone(), positions, b);
            eprintln!(
                "{name}: {} tokens {positions:?}: {before:.3} -> {after:.3}",
                node.id
            );
            assert!(
                after > before + 0.1,
                "{name}: {}'s attention in its box went from {before:.3} to {after:.3}",
                node.id
            );
        }
        assert_eq!(boxed, 2, "{name}: both boxed nodes measured");
        assert_ne!(
            plain_image.rgb, steered_image.rgb,
            "{name}: the control changed nothing"
        );
    }
}

/// The attention-energy latent update through the sampler: in its window it asks for each
/// step's attention record, reads each boxed node's energy off it (the same the record gives
/// by hand), moves the clean-latent prediction, so the image differs from plain sampling's,
/// and adds no model evaluation. (That it moves attended content toward the box is
/// `energy`'s unit test: the tiny random model attends nowhere in particular.)
#[test]
fn the_attention_energy_update_reads_its_energy_and_moves_the_latents() {
    use lina::energy::{EnergyGuidance, Reading};
    for (name, device) in test_devices() {
        let pipe = pipe(&device);
        let csg = scene();
        let layout: Vec<Option<region::Box4>> = csg.nodes.iter().map(|n| n.layout).collect();
        let tokens = node_tokens(&pipe, PROMPT, &csg).unwrap();
        let mut guidance = EnergyGuidance::new(&pipe, PROMPT, &csg, &layout, 1.0, 0..3).unwrap();
        assert!(guidance.acts(), "{name}: both nodes have boxes and words");
        let mut recorder = AttentionRecorder::default();
        let run = |hook: &mut dyn lina_runtime::pipeline::StepHook| {
            pollster::block_on(pipe.generate(&opts(), hook, &CancelToken::new())).unwrap()
        };
        let moved = run(&mut (&mut guidance, &mut recorder));
        let plain = run(&mut lina_runtime::pipeline::NoHook);
        let steps: Vec<usize> = guidance.readings.iter().map(|r| r.step).collect();
        assert_eq!(
            steps,
            [0, 1, 2],
            "{name}: one energy per step of the window"
        );
        assert!(
            guidance
                .readings
                .iter()
                .all(|r| (0.0..=1.0).contains(&r.focus)),
            "{name}: focus {:?}",
            guidance.readings
        );
        for &Reading { step, energy, .. } in &guidance.readings {
            let by_hand: f32 = csg
                .nodes
                .iter()
                .zip(&tokens)
                .filter_map(|(n, p)| Some((n.layout?, p)))
                .map(|(b, p)| (1.0 - share_in_box(&recorder.steps, step..step + 1, p, b)).powi(2))
                .sum();
            assert!(
                (energy as f32 - by_hand).abs() < 1e-4,
                "{name}: step {step}'s energy {energy} differs from the record's {by_hand}"
            );
        }
        assert_eq!(
            moved.evaluations, plain.evaluations,
            "{name}: no extra evaluation"
        );
        assert_ne!(
            moved.image.rgb, plain.image.rgb,
            "{name}: the update changed nothing"
        );
    }
}

/// A bias that does not fit the call (wrong token count or grid) is a clear error, before the
/// model runs.
#[test]
fn a_bias_of_the_wrong_shape_is_a_clear_error() {
    use lina_runtime::pipeline::{ModelCall, StepHook};
    struct WrongBias;
    impl StepHook for WrongBias {
        fn before_model(&mut self, call: &mut ModelCall) -> lina_runtime::error::Result<()> {
            let [_, _, h, w] = call.latents.dims();
            call.attention.bias = Some(Tensor::zeros([5, h, w], &call.latents.device()));
            Ok(())
        }
    }
    let pipe = pipe(&lina_runtime::device::cpu());
    let Err(err) = pollster::block_on(pipe.generate(&opts(), &mut WrongBias, &CancelToken::new()))
    else {
        panic!("a bias for 5 tokens does not fit 77 text tokens");
    };
    assert_eq!(err.code(), "invalid_input", "{err}");
    assert!(err.to_string().contains("attention bias"), "{err}");
}

/// The maps read back for the host (the page's overlays, the CLI's files) hold the prompt's
/// own words in order, each step's maps of those tokens as recorded.
#[test]
fn token_maps_hold_the_prompts_words_as_recorded() {
    let pipe = pipe(&lina_runtime::device::cpu());
    let mut recorder = AttentionRecorder::default();
    pollster::block_on(pipe.generate(&opts(), &mut recorder, &CancelToken::new())).unwrap();
    let maps = pollster::block_on(recorder.read(&pipe, PROMPT)).unwrap();
    let words: Vec<&str> = maps.tokens.iter().map(|t| t.word.as_str()).collect();
    let mut distinct = words.clone();
    distinct.dedup();
    assert_eq!(distinct, ["a", "red", "ball", "on", "a", "blue", "cube"]);
    assert_eq!(maps.steps.len(), 6);
    let cells = maps.height * maps.width;
    for (step, record) in maps.steps.iter().zip(&recorder.steps) {
        assert_eq!(step.len(), maps.tokens.len() * cells);
        for (i, token) in maps.tokens.iter().enumerate() {
            let expected = values(record.clone().narrow(0, token.position, 1));
            assert_eq!(&step[i * cells..(i + 1) * cells], expected.as_slice());
        }
    }
}

/// The implied reflection of "a red ball on a small mirror" is named at the end of the prompt
/// and its word pinned inside the mirror, below the ball: its attention there rises over a
/// plain run of the same, extended prompt.
#[test]
fn an_implied_effect_is_named_and_pinned_to_where_physics_allows_it() {
    let pipe = pipe(&lina_runtime::device::cpu());
    let prompt = "a red ball on a small mirror";
    let mut csg = lina_csg::parse::parse(prompt).unwrap();
    for (id, b) in [
        ("object", [0.35, 0.1, 0.65, 0.5]),
        ("surface", [0.2, 0.5, 0.8, 0.9]),
    ] {
        csg.nodes.iter_mut().find(|n| n.id == id).unwrap().layout = Some(b);
    }
    let layout: Vec<_> = csg.nodes.iter().map(|n| n.layout).collect();
    let (extended, with_effects, added) = lina::attention::with_effects(prompt, &csg, &layout);
    assert_eq!(
        extended,
        format!("{prompt}, the reflection of the ball in the mirror")
    );
    assert_eq!(added.len(), 1);
    let effect = csg.nodes.iter().position(|n| n.implied).unwrap();
    let b = with_effects[effect].expect("the reflection is placed");
    // Inside the mirror, from its top down, no wider than the ball.
    assert_eq!(b, [0.35, 0.5, 0.65, 0.9]);

    let options = GenerateOptions {
        prompt: prompt.into(),
        ..opts()
    };
    let plan = Plan {
        attention_strength: 2.0,
        attention_window: [0.0, 0.5],
        attention_effects: true,
        ..Plan::default()
    };
    let mut steered = AttentionRecorder::default();
    let out = lina_run(&pipe, &options, &csg, &plan, &mut steered).unwrap();
    assert!(
        out.described
            .iter()
            .any(|d| d.contains("implied effects added")),
        "{:?}",
        out.described
    );
    let mut plain = AttentionRecorder::default();
    let plain_options = GenerateOptions {
        prompt: extended.clone(),
        ..options.clone()
    };
    pollster::block_on(pipe.generate(&plain_options, &mut plain, &CancelToken::new())).unwrap();
    let words = pipe.tokenizer().words(&extended).unwrap();
    let reflection: Vec<usize> = (0..words.len())
        .filter(|&i| words[i].as_deref() == Some("reflection"))
        .collect();
    assert!(!reflection.is_empty());
    let window = lina::steps_of(plan.attention_window, 0..6);
    let before = share_in_box(&plain.steps, window.clone(), &reflection, b);
    let after = share_in_box(&steered.steps, window, &reflection, b);
    eprintln!("reflection tokens {reflection:?}: {before:.3} -> {after:.3}");
    assert!(
        after > before + 0.1,
        "reflection in its place: {before:.3} -> {after:.3}"
    );

    // With `attentionEffects` off (the default), the prompt stays as written and only its
    // own words are steered.
    let own_words = Plan {
        attention_effects: false,
        ..plan
    };
    let out = lina_run(&pipe, &options, &csg, &own_words, &mut NoHook).unwrap();
    assert_eq!(out.prompt, prompt);
    assert!(
        !out.described
            .iter()
            .any(|d| d.contains("implied effects added")),
        "{:?}",
        out.described
    );
}

/// A graph whose boxed node has no word in the prompt is a clear error naming the node, and
/// nothing runs.
#[test]
fn a_boxed_node_the_prompt_does_not_name_is_a_clear_error() {
    let pipe = pipe(&lina_runtime::device::cpu());
    let options = GenerateOptions {
        prompt: "a green cone".into(),
        ..opts()
    };
    let plan = Plan {
        attention_strength: 2.0,
        ..Plan::default()
    };
    let mut steps = AttentionRecorder::default();
    let Err(err) = lina_run(&pipe, &options, &scene(), &plan, &mut steps) else {
        panic!("a box for a word the prompt lacks was accepted");
    };
    assert_eq!(err.code(), "invalid_input", "{err}");
    let text = err.to_string();
    assert!(text.contains("\"top\"") && text.contains("ball"), "{text}");
    assert!(steps.steps.is_empty(), "nothing ran");
}

/// A hook that gives every model call a fixed attention bias, recording the maps, and (when
/// `mirrored`) the mirrored frame.
struct Framed {
    bias: Tensor<3>,
    mirrored: bool,
    records: Vec<Tensor<3>>,
}

impl StepHook for Framed {
    fn before_model(&mut self, call: &mut ModelCall) -> lina_runtime::error::Result<()> {
        call.attention = CrossAttentionControl {
            bias: Some(self.bias.clone()),
            record: true,
        };
        call.mirrored = self.mirrored;
        Ok(())
    }
    fn after_step(&mut self, state: &mut StepState) -> lina_runtime::error::Result<()> {
        self.records.extend(state.attention.clone());
        Ok(())
    }
}

/// The mirrored frame is a change of view and nothing else: sampling from latents `L` with
/// the model seeing every call mirrored (its bias given, its record read, in the sampler's
/// frame) is the mirror image, latent for latent and map for map, of sampling from the
/// mirrored latents with the mirrored bias. And it is not the plain run: the UNet is not
/// mirror-symmetric, which is what lets a mirrored view draw a scene differently.
#[test]
fn the_mirrored_frame_flips_the_models_view_and_nothing_else() {
    for (name, device) in test_devices() {
        let pipe = pipe(&device);
        let size = pipe.unet().expect("a UNet model").config().sample_size;
        let normal = burn::tensor::Distribution::Normal(0.0, 1.0);
        let start = Tensor::<4>::random([1, 4, size, size], normal, &device);
        let tokens = pipe.encode_text(PROMPT, 0).unwrap().0.dims()[1];
        let bias = Tensor::<3>::random([tokens, size, size], normal, &device).mul_scalar(2.0);
        let run = |start: Tensor<4>, bias: Tensor<3>, mirrored: bool| {
            let opts = GenerateOptions {
                initial_latents: Some(values(start)),
                ..opts()
            };
            let mut sampling = pipe.start(&opts).unwrap();
            let mut hook = Framed {
                bias,
                mirrored,
                records: Vec::new(),
            };
            pollster::block_on(sampling.run(&mut hook, &CancelToken::new())).unwrap();
            (sampling.latents().clone(), hook.records)
        };
        let (seen, seen_maps) = run(start.clone(), bias.clone(), true);
        let (mirror, mirror_maps) = run(start.clone().flip([3]), bias.clone().flip([2]), false);
        let (plain, _) = run(start, bias, false);
        let diff = max_abs_diff(&values(seen.clone()), &values(mirror.flip([3])));
        assert!(
            diff < 1e-4,
            "{name}: mirrored view off the mirror image by {diff}"
        );
        assert_eq!(seen_maps.len(), 6, "{name}: a record per step");
        for (step, (a, b)) in seen_maps.into_iter().zip(mirror_maps).enumerate() {
            let diff = max_abs_diff(&values(a), &values(b.flip([2])));
            assert!(diff < 1e-4, "{name}: step {step}'s maps off by {diff}");
        }
        let moved = max_abs_diff(&values(seen), &values(plain));
        assert!(
            moved > 1e-2,
            "{name}: the mirrored view moved the latents by only {moved}"
        );
    }
}

/// LINA's mirrored frame gives the model the mirrored text and view where the prompt names a
/// direction, and changes nothing, bit for bit, where it names none.
#[test]
fn the_mirror_plan_swaps_directions_and_leaves_other_prompts_alone() {
    let device = lina_runtime::device::cpu();
    let pipe = pipe(&device);
    let plan = Plan {
        mirror: true,
        ..Plan::default()
    };
    let generate = |prompt: &str, plan: &Plan| {
        let opts = GenerateOptions {
            prompt: prompt.into(),
            ..opts()
        };
        let csg = lina_csg::parse::parse(prompt).unwrap();
        lina_run(&pipe, &opts, &csg, plan, &mut NoHook).unwrap()
    };
    let plain = generate(PROMPT, &Plan::default());
    let same = generate(PROMPT, &plan);
    assert_eq!(same.prompt, PROMPT);
    assert_eq!(plain.generated.image.rgb, same.generated.image.rgb);
    assert!(
        same.described
            .iter()
            .any(|d| d.contains("names no direction"))
    );

    let lit = "a red ball and a blue cube lit from the right";
    let plain = generate(lit, &Plan::default());
    let mirrored = generate(lit, &plan);
    assert_eq!(
        mirrored.prompt,
        "a red ball and a blue cube lit from the left"
    );
    assert!(
        mirrored
            .described
            .iter()
            .any(|d| d.contains("mirrored frame"))
    );
    assert_ne!(plain.generated.image.rgb, mirrored.generated.image.rgb);
    assert_eq!(
        plain.evaluations, mirrored.evaluations,
        "the frame costs no evaluation"
    );
}
