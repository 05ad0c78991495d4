//! The probe's generator, split rules and checker, on rendered ground truth.
#![cfg(not(target_arch = "wasm32"))]

use lina_csg::{Class, Csg};
use lina_probe::check::check;
use lina_probe::palette;
use lina_probe::scenes::held_out;
use lina_probe::{Category, SceneId, Split, Suite};

fn ids(split: Split, per_category: u64) -> Vec<SceneId> {
    Suite {
        name: String::new(),
        split,
        categories: Category::ALL.to_vec(),
        first: 0,
        per_category,
    }
    .ids()
}

#[test]
fn the_generator_is_deterministic() {
    for id in ids(Split::Train, 5) {
        let (a, b) = (id.scene(), id.scene());
        assert_eq!(a.prompt, b.prompt);
        assert_eq!(a.csg, b.csg);
        let (ra, rb) = (a.render(), b.render());
        assert_eq!(ra.image, rb.image);
        assert_eq!(ra.masks, rb.masks);
    }
    // Different indices give different scenes.
    let prompts: std::collections::HashSet<String> = ids(Split::Train, 20)
        .iter()
        .map(|id| format!("{:?}", id.scene().render().image.rgb))
        .collect();
    assert!(
        prompts.len() >= 135,
        "{} distinct images of 140",
        prompts.len()
    );
}

#[test]
fn masks_are_exact() {
    for id in ids(Split::Train, 30).into_iter().chain(ids(Split::Ood, 10)) {
        let scene = id.scene();
        let r = scene.render();
        let csg = &scene.csg;
        for (node, mask) in csg.nodes.iter().zip(&r.masks) {
            let pixels: Vec<[u8; 3]> = mask
                .iter()
                .enumerate()
                .filter(|(_, m)| **m)
                .map(|(i, _)| {
                    [
                        r.image.rgb[3 * i],
                        r.image.rgb[3 * i + 1],
                        r.image.rgb[3 * i + 2],
                    ]
                })
                .collect();
            if node.class != Class::Floor {
                assert!(
                    !pixels.is_empty(),
                    "{id:?}: node {} has an empty mask",
                    node.id
                );
            }
            // Every pixel of a coloured node's mask has the node's colour exactly, except a
            // surface's mask, which also holds the reflection painted on it.
            let colour = node
                .colour
                .map(palette::colour)
                .or(palette::class_colour(node.class));
            let surface = matches!(node.class, Class::Mirror | Class::Puddle);
            if let (Some(c), false, false) = (colour, surface, node.class == Class::Person) {
                assert!(
                    pixels.iter().all(|p| *p == c),
                    "{id:?}: {} mask off colour",
                    node.id
                );
            }
        }
        // A reflection's mask lies inside its surface's mask.
        if let (Some(r_i), Some(s_i)) = (index(csg, "reflection_of_object"), index(csg, "surface"))
        {
            let inside = r.masks[r_i]
                .iter()
                .zip(&r.masks[s_i])
                .all(|(r, s)| !r || *s);
            assert!(inside, "{id:?}: reflection outside its surface");
        }
    }
}

fn index(csg: &Csg, id: &str) -> Option<usize> {
    csg.nodes.iter().position(|n| n.id == id)
}

#[test]
fn training_never_shows_a_held_out_scene_and_ood_shows_nothing_else() {
    for id in ids(Split::Train, 400)
        .into_iter()
        .chain(ids(Split::Test, 100))
    {
        let scene = id.scene();
        assert!(!held_out(&scene), "{id:?} is held out: {}", scene.prompt);
    }
    for id in ids(Split::Ood, 100) {
        let scene = id.scene();
        assert!(held_out(&scene), "{id:?} is not held out: {}", scene.prompt);
    }
}

#[test]
fn the_checker_passes_rendered_ground_truth() {
    let mut failures = Vec::new();
    let mut total = 0;
    for split in [Split::Train, Split::Test, Split::Ood] {
        for id in ids(split, 100) {
            let scene = id.scene();
            let verdicts = check(&scene.render().image, &scene.csg);
            assert!(!verdicts.is_empty());
            total += verdicts.len();
            for v in verdicts.into_iter().filter(|v| !v.passed) {
                failures.push(format!(
                    "{id:?} \"{}\": {} ({})",
                    scene.prompt, v.check, v.detail
                ));
            }
        }
    }
    let rate = 1.0 - failures.len() as f64 / total as f64;
    println!("ground truth: {:.2}% of {total} checks pass", 100.0 * rate);
    assert!(
        rate >= 0.99,
        "{:.2}% pass; failures:\n{}",
        100.0 * rate,
        failures.join("\n")
    );
}

#[test]
fn the_checker_catches_broken_renders() {
    for category in Category::ALL {
        let mut caught = 0;
        let n = 60;
        let mut missed = Vec::new();
        for index in 0..n {
            let id = SceneId {
                split: Split::Train,
                category,
                index,
            };
            let (good, bad) = (id.scene(), id.broken_scene());
            assert_eq!(good.csg, bad.csg);
            let verdicts = check(&bad.render().image, &bad.csg);
            if verdicts.iter().any(|v| !v.passed) {
                caught += 1;
            } else {
                missed.push(good.prompt.clone());
            }
        }
        println!("{}: {caught}/{n} broken renders caught", category.name());
        assert!(
            caught as f64 >= 0.97 * n as f64,
            "{}: missed {missed:?}",
            category.name()
        );
    }
}

/// The graph without what a prompt cannot say (object sizes), in a canonical order.
fn canonical(csg: &Csg) -> Csg {
    let mut c = csg.clone();
    for n in c.nodes.iter_mut().filter(|n| n.class.is_object()) {
        n.size = None;
    }
    c.nodes.sort_by(|a, b| a.id.cmp(&b.id));
    c.relations
        .sort_by_key(|r| (r.subject.clone(), r.predicate.word(), r.object.clone()));
    c
}

#[test]
fn parsing_a_probe_prompt_gives_its_scene_graph() {
    for id in ids(Split::Train, 150)
        .into_iter()
        .chain(ids(Split::Ood, 50))
    {
        let scene = id.scene();
        let parsed = lina_csg::parse::parse(&scene.prompt)
            .unwrap_or_else(|e| panic!("{id:?} \"{}\": {e}", scene.prompt));
        assert_eq!(
            canonical(&parsed),
            canonical(&scene.csg),
            "\"{}\"",
            scene.prompt
        );
    }
}

#[test]
fn the_rules_restore_every_implied_effect_of_a_probe_scene() {
    for id in ids(Split::Train, 50).into_iter().chain(ids(Split::Ood, 20)) {
        let scene = id.scene();
        let mut explicit = scene.csg.clone();
        explicit.relations.retain(|r| {
            explicit_node(&scene.csg, &r.subject) && explicit_node(&scene.csg, &r.object)
        });
        explicit.nodes.retain(|n| !n.implied);
        lina_csg::rules::add_implied(&mut explicit);
        assert_eq!(
            canonical(&explicit),
            canonical(&scene.csg),
            "\"{}\"",
            scene.prompt
        );
    }
}

fn explicit_node(csg: &Csg, id: &str) -> bool {
    csg.node(id).is_some_and(|n| !n.implied)
}

#[test]
fn located_boxes_are_the_mask_boxes_of_rendered_scenes() {
    for id in ids(Split::Test, 10) {
        let scene = id.scene();
        let r = scene.render();
        let boxes = lina_probe::check::locate(&r.image, &scene.csg);
        for ((node, mask), found) in scene.csg.nodes.iter().zip(&r.masks).zip(&boxes) {
            if node.class == Class::Floor
                || node.class == Class::Shadow
                || node.class == Class::Person
            {
                continue; // the floor has no colour of its own; shadows share one; a person has two
            }
            let Some([x0, y0, x1, y1]) = found else {
                panic!("{id:?}: {} not found", node.id);
            };
            // The mask's own box contains the located one (the largest region may be a part).
            let px: Vec<(usize, usize)> = (0..64 * 64)
                .filter(|&i| mask[i])
                .map(|i| (i % 64, i / 64))
                .collect();
            let mx0 = px.iter().map(|p| p.0).min().unwrap() as f32 / 64.0;
            let my0 = px.iter().map(|p| p.1).min().unwrap() as f32 / 64.0;
            assert!(
                *x0 >= mx0 - 1e-6 && *y0 >= my0 - 1e-6 && x1 > x0 && y1 > y0,
                "{id:?} {}",
                node.id
            );
        }
    }
}

/// `--first` cuts a suite into disjoint parts: settings chosen on one part are judged on
/// scenes they never saw. (Prompts can repeat between parts: some categories have few
/// distinct `ood` prompts, and docs/lina.md counts what that shares.)
#[test]
fn a_suite_cut_at_first_holds_other_scenes() {
    let mut head = Suite::named("ood").unwrap();
    head.per_category = 7;
    let mut tail = head.clone();
    tail.first = 7;
    let (head, tail) = (head.ids(), tail.ids());
    assert_eq!(head.len(), tail.len());
    assert!(tail.iter().all(|id| id.index >= 7 && id.index < 14));
    let renders: std::collections::HashSet<Vec<u8>> = head
        .iter()
        .map(|id| id.scene().render().image.rgb)
        .collect();
    let shared = tail
        .iter()
        .filter(|id| renders.contains(&id.scene().render().image.rgb))
        .count();
    println!("{shared} of {} scenes drawn alike", tail.len());
    assert!(
        shared * 10 < tail.len(),
        "{shared} of {} scenes alike",
        tail.len()
    );
}

/// A model draws soft edges: between an object and the wall they blend the two colours, and
/// that blend lies close to the object's colour reflected in a mirror. The checker must not
/// read such a rim as reflection spilling past a small mirror (on the default model's images
/// it did, in both the plain and the intervened images: `docs/probe.md`). Each object here
/// gets a rim of 60% object and 40% wall beside it in every row, left and right; without the
/// rule about rims the mirror scenes fail `bounded_by` and `reflection_of`.
#[test]
fn an_objects_soft_rim_is_not_its_reflection() {
    let mut mirrors = 0;
    for id in ids(Split::Ood, 25)
        .into_iter()
        .filter(|id| id.category == Category::Reflection)
    {
        let scene = id.scene();
        let mut rendered = scene.render();
        let object = index(&scene.csg, "object").unwrap();
        let colour = palette::colour(scene.csg.nodes[object].colour.unwrap());
        let rim: [u8; 3] =
            std::array::from_fn(|i| (0.6 * colour[i] as f32 + 0.4 * palette::WALL[i] as f32) as u8);
        let image = &mut rendered.image;
        let (w, mask) = (image.width, &rendered.masks[object]);
        let mut rims = 0;
        for y in 0..image.height {
            for x in 1..w - 1 {
                let i = y * w + x;
                for j in [i - 1, i + 1] {
                    if mask[i] && !mask[j] && image.rgb[3 * j..3 * j + 3] == palette::WALL {
                        image.rgb[3 * j..3 * j + 3].copy_from_slice(&rim);
                        rims += 1;
                    }
                }
            }
        }
        assert!(rims >= 10, "{}: only {rims} rim pixels", scene.prompt);
        mirrors += scene.prompt.contains("mirror") as usize;
        for v in check(image, &scene.csg) {
            assert!(v.passed, "{}: {} ({})", scene.prompt, v.check, v.detail);
        }
    }
    assert!(mirrors >= 5, "only {mirrors} mirror scenes");
}

/// The verifier-guided repair baseline (`lina_probe::repair`), on the embedded default model
/// (the probe's world, where the checker can see): it moves shadows away from the light.
/// "Lit from the right" is held out of the model's training, and the plain sampler casts the
/// shadows to the right. It steers with the checker, so this shows what a judge in the loop
/// does, not what LINA does.
#[test]
fn verifier_guided_repairs_turn_shadows_away_from_the_light_on_the_default_model() {
    use lina_probe::repair::Repair;
    use lina_runtime::image::Image;
    use lina_runtime::pipeline::{CancelToken, GenerateOptions, NoHook, StableDiffusion};
    use lina_runtime::schedulers::Timesteps;
    use lina_runtime::source::DirSource;

    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("www/models/default");
    let pipe = StableDiffusion::load(&DirSource::new(root), &lina_runtime::device::cpu()).unwrap();
    let prompt = "a red ball and a green cube lit from the right";
    let csg = lina_csg::parse::parse(prompt).unwrap();
    let shadows = |image: &Image| {
        check(image, &csg)
            .iter()
            .filter(|v| v.kind == "shadow_of" && v.passed)
            .count()
    };
    let (mut plain_passed, mut repaired_passed, mut acted) = (0, 0, 0);
    for seed in 0..4 {
        let o = GenerateOptions {
            prompt: prompt.into(),
            seed,
            timesteps: Timesteps::Count(20),
            guidance_scale: 3.0,
            ..GenerateOptions::default()
        };
        let generate = |hook: &mut dyn lina_runtime::pipeline::StepHook| {
            pollster::block_on(pipe.generate(&o, hook, &CancelToken::new()))
                .unwrap()
                .image
        };
        plain_passed += shadows(&generate(&mut NoHook));
        let mut repair = Repair::for_run(&csg, 1.0, [0.0, 0.8], 0..20).unwrap();
        repaired_passed += shadows(&generate(&mut repair));
        acted += repair.described.iter().any(|d| d.contains("mirrored away")) as usize;
    }
    assert!(acted > 0, "no repair acted on a shadow");
    assert!(
        repaired_passed > plain_passed,
        "shadow checks passed: {repaired_passed} repaired, {plain_passed} plain (of 8)"
    );
}
