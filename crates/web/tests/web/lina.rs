//! LINA in the browser: plans, the checker and diagnostics, the scene-graph helpers and the
//! region-controlled attention.

use js_sys::{Object, Reflect};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_test::wasm_bindgen_test;

use lina_web::Pipeline;

use crate::{
    DEFAULT_MODEL, backend_options, code, default_model_error, f32_device, files, files_of,
    message, prompt_options, rgb_of, tiny_pipeline,
};

/// The default model's image under a LINA plan, drawn by the native CPU backend
/// (tests/default_model.rs, `a_lina_plan_reproduces_its_reference_image`, has the plan).
const LINA_REFERENCE: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/fixtures/default_model/reference_lina.png"
));

/// The same prompt's image under the collage in the mirrored frame, at half the guidance
/// scale (tests/default_model.rs, `COLLAGE_PLAN`).
const COLLAGE_REFERENCE: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/fixtures/default_model/reference_collage.png"
));

const COLLAGE_PLAN: &str = r#"{"mirror":true,"collage":0.1,"guidance":0.5}"#;

const LINA_PROMPT: &str = "a purple cube and a green ball with a lamp on the right";

const LINA_PLAN: &str = r#"{"mirror":true,"promptStrength":0.5,"attentionStrength":0.5,"attentionWindow":[0,0.5],"nodeWeight":0.5,"regionWindow":[0,0.3],"energyStrength":0.25,"energyWindow":[0,0.3],"warp":1.2}"#;

/// LINA in the browser: a plan in the options runs the interventions and reports them.
#[wasm_bindgen_test]
async fn a_plan_runs_lina_in_the_browser() {
    let pipe = Pipeline::load(files_of(DEFAULT_MODEL, |_, b| b.to_vec()), f32_device())
        .await
        .map_err(message)
        .unwrap();
    let set = |o: &Object, k: &str, v: JsValue| Reflect::set(o, &JsValue::from_str(k), &v).unwrap();
    // What a generation under `plan` (a list of fields) reports it did.
    let interventions = async |prompt: &str, fields: &[(&str, f64)]| -> Vec<String> {
        let options = Object::new();
        set(&options, "prompt", prompt.into());
        set(&options, "steps", 8.into());
        let plan = Object::new();
        for &(field, value) in fields {
            set(&plan, field, value.into());
        }
        set(&options, "plan", plan.into());
        let result = pipe
            .generate(options.into(), None)
            .await
            .map_err(message)
            .unwrap();
        let done: js_sys::Array = Reflect::get(&result, &"interventions".into())
            .unwrap()
            .dyn_into()
            .unwrap();
        done.iter().filter_map(|v| v.as_string()).collect()
    };
    let text = interventions(
        "a red ball on a small mirror",
        &[("promptStrength", 1.0), ("warp", 1.5)],
    )
    .await;
    assert!(
        text.iter().any(|t| t.contains("schedule warp 1.5")),
        "{text:?}"
    );
    assert!(
        text.iter().any(|t| t.contains("prompt guidance")),
        "{text:?}"
    );

    // The collage draws each thing alone before the stepped run, and says what it drew.
    let text = interventions("a red ball to the left of a blue cube", &[("collage", 0.5)]).await;
    assert!(
        text.iter()
            .any(|t| t.starts_with(r#"collage of ["a red ball", "a blue cube"]"#)),
        "{text:?}"
    );

    // A misspelt plan field is a JS error naming it.
    let bad = Object::new();
    set(&bad, "prompt", "a red ball".into());
    let plan = Object::new();
    set(&plan, "promptStrenght", 1.0.into());
    set(&bad, "plan", plan.into());
    let Err(err) = pipe.generate(bad.into(), None).await else {
        panic!("a misspelt plan field was accepted");
    };
    assert_eq!(code(&err), "invalid_input");
    let err = message(err);
    assert!(err.contains("promptStrenght"), "{err}");
}

/// The same LINA plans draw the same images in the browser as natively, on the CPU backend
/// compiled into the module and on WebGPU: the mirrored frame, prompt guidance,
/// region-controlled attention, region terms, the attention-energy update and the warped
/// schedule in one plan; the collage (drawn before the stepped run) and half the guidance
/// scale in the other.
#[wasm_bindgen_test]
async fn a_lina_plan_draws_the_native_image() {
    for (backend, device) in [
        ("cpu", backend_options("cpu", "auto")),
        ("webgpu", f32_device()),
    ] {
        for (plan, reference) in [
            (LINA_PLAN, LINA_REFERENCE),
            (COLLAGE_PLAN, COLLAGE_REFERENCE),
        ] {
            let worst =
                default_model_error(device.clone(), LINA_PROMPT, Some(plan), reference).await;
            web_sys::console::log_1(&format!("{backend} {plan}: worst pixel {worst}/255").into());
            assert!(
                worst <= 2,
                "{backend} {plan}: worst pixel off by {worst}/255"
            );
        }
    }
}

/// An image as the wasm API takes it: `{ width, height, rgba }`.
fn image_js(image: &lina_runtime::image::Image) -> JsValue {
    let obj = Object::new();
    Reflect::set(&obj, &"width".into(), &(image.width as u32).into()).unwrap();
    Reflect::set(&obj, &"height".into(), &(image.height as u32).into()).unwrap();
    let rgba = js_sys::Uint8ClampedArray::from(image.to_rgba().as_slice());
    Reflect::set(&obj, &"rgba".into(), &rgba).unwrap();
    obj.into()
}

fn passed(verdicts: &JsValue) -> (usize, usize) {
    let list: js_sys::Array = verdicts.clone().dyn_into().unwrap();
    let ok = list
        .iter()
        .filter(|v| Reflect::get(v, &"passed".into()).unwrap().is_truthy())
        .count();
    (ok, list.length() as usize)
}

#[wasm_bindgen_test]
async fn the_checker_and_the_diagnostics_run_in_the_browser() {
    use lina_probe::{Category, SceneId, Split};
    // A rendered mirror scene passes its own checks; its broken twin does not.
    let id = SceneId {
        split: Split::Test,
        category: Category::Reflection,
        index: 3,
    };
    let csg = |s: &lina_probe::Scene| {
        js_sys::JSON::parse(&serde_json::to_string(&s.csg).unwrap()).unwrap()
    };
    let (good, bad) = (id.scene(), id.broken_scene());
    let verdicts = Pipeline::check_image(image_js(&good.render().image), csg(&good))
        .map_err(message)
        .unwrap();
    let (ok, all) = passed(&verdicts);
    assert!(all > 0 && ok == all, "{ok}/{all}");
    let verdicts = Pipeline::check_image(image_js(&bad.render().image), csg(&bad))
        .map_err(message)
        .unwrap();
    let (ok, all) = passed(&verdicts);
    assert!(ok < all, "the broken render passed {ok}/{all}");

    // A step sweep has a point per step; re-inpainting a node gives an image and verdicts.
    let pipe = Pipeline::load(files(|_, b| b.to_vec()), f32_device())
        .await
        .map_err(message)
        .unwrap();
    // The tiny random model draws nothing the checker can find, so the graph brings its
    // own layout: boxes for the ball and the mirror below it.
    let prompt = "a red ball on a small mirror";
    let mut graph = lina_csg::parse::parse(prompt).unwrap();
    for (id, b) in [
        ("object", [0.4, 0.45, 0.6, 0.72]),
        ("surface", [0.42, 0.72, 0.58, 0.8]),
    ] {
        graph.nodes.iter_mut().find(|n| n.id == id).unwrap().layout = Some(b);
    }
    let graph = js_sys::JSON::parse(&serde_json::to_string(&graph).unwrap()).unwrap();
    let options = || {
        let o = Object::new();
        Reflect::set(&o, &"prompt".into(), &prompt.into()).unwrap();
        Reflect::set(&o, &"steps".into(), &3.into()).unwrap();
        Reflect::set(&o, &"csg".into(), &graph).unwrap();
        JsValue::from(o)
    };
    let sweep = pipe.sweep(options()).await.map_err(message).unwrap();
    let points: js_sys::Array = Reflect::get(&sweep, &"points".into())
        .unwrap()
        .dyn_into()
        .unwrap();
    assert_eq!(points.length(), 3);
    assert!(
        Reflect::get(&sweep, &"baselinePassed".into())
            .unwrap()
            .as_f64()
            .is_some()
    );
    let drawn = pipe
        .generate(options(), None)
        .await
        .map_err(message)
        .unwrap();
    let again = pipe
        .reinpaint(options(), drawn.clone().into(), "object".into(), 0.6)
        .await
        .map_err(message)
        .unwrap();
    assert_eq!(rgb_of(&again).len(), 64 * 64 * 3);
    let (_, before) = passed(&Reflect::get(&again, &"before".into()).unwrap());
    assert!(before > 0);
    let err = pipe
        .reinpaint(options(), drawn.into(), "unicorn".into(), 0.6)
        .await
        .err()
        .map(message)
        .expect("an unknown node is refused");
    assert!(err.contains("unicorn"), "{err}");
}

/// The helpers the page's scene-graph editor and schedule plot use.
#[wasm_bindgen_test]
async fn scene_graph_and_schedule_helpers() {
    let get = |o: &JsValue, k: &str| Reflect::get(o, &k.into()).unwrap();
    let csg = Pipeline::parse_prompt("a red ball on a small mirror")
        .map_err(message)
        .unwrap();
    let nodes = js_sys::Array::from(&get(&csg, "nodes"));
    let implied: Vec<String> = nodes
        .iter()
        .filter(|n| get(n, "implied").as_bool() == Some(true))
        .map(|n| get(&n, "class").as_string().unwrap())
        .collect();
    assert_eq!(implied, ["reflection"]);
    // The parsed graph is valid as it is; with a relation to an unknown node it is not.
    Pipeline::validate_csg(csg.clone())
        .map_err(message)
        .unwrap();
    let relation = Object::new();
    Reflect::set(&relation, &"subject".into(), &"object".into()).unwrap();
    Reflect::set(&relation, &"predicate".into(), &"on".into()).unwrap();
    Reflect::set(&relation, &"object".into(), &"table".into()).unwrap();
    // (`Array::from` would copy the array.)
    get(&csg, "relations")
        .unchecked_into::<js_sys::Array>()
        .push(&relation);
    let e = Pipeline::validate_csg(csg)
        .err()
        .map(message)
        .expect("refused");
    assert!(e.contains("unknown node \"table\""), "{e}");

    let plan = Pipeline::lina_plan().map_err(message).unwrap();
    assert_eq!(get(&plan, "warp").as_f64(), Some(1.0));
    assert_eq!(get(&plan, "promptStrength").as_f64(), Some(0.5));
    // The verifier-guided repairs are the probe's baseline, not a field of LINA's plan.
    assert!(get(&plan, "repairStrength").is_undefined());
    let pipe = tiny_pipeline().await;
    let options = Object::new();
    Reflect::set(&options, &"prompt".into(), &"a red ball".into()).unwrap();
    Reflect::set(&options, &"steps".into(), &10.into()).unwrap();
    Reflect::set(&options, &"plan".into(), &plan).unwrap();
    let steps = pipe
        .timesteps(options.clone().into())
        .map_err(message)
        .unwrap();
    let list = |k: &str| -> Vec<f64> {
        js_sys::Array::from(&get(&steps, k))
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect()
    };
    let (plain, planned) = (list("plain"), list("planned"));
    assert_eq!((plain.len(), planned.len()), (10, 10));
    assert!(plain.windows(2).all(|w| w[0] > w[1]), "{plain:?}");
    // The default plan has no warp: its schedule is the plain one.
    assert_eq!(planned, plain);

    // A warp spends more of the run at high noise: the middle step is noisier.
    Reflect::set(&plan, &"warp".into(), &1.5.into()).unwrap();
    Reflect::set(&options, &"plan".into(), &plan).unwrap();
    let steps = pipe.timesteps(options.into()).map_err(message).unwrap();
    let warped: Vec<f64> = js_sys::Array::from(&get(&steps, "planned"))
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert!(warped[5] > plain[5], "{plain:?} {warped:?}");
}

/// Region-controlled attention in the browser, on the tiny random fixture that no checker
/// understands, as natively (tests/attention.rs): each boxed node's words attend more inside
/// their box than in plain sampling, measured from the result's attention maps.
#[wasm_bindgen_test]
async fn region_controlled_attention_moves_attention_into_the_boxes() {
    const PROMPT: &str = "a red ball on a blue cube";
    let ball = [0.0f32, 0.0, 0.75, 0.5];
    let cube = [0.5f32, 0.25, 1.0, 1.0];
    let mut csg = lina_csg::parse::parse(PROMPT).unwrap();
    for node in csg.nodes.iter_mut() {
        node.layout = match node.class {
            lina_csg::Class::Ball => Some(ball),
            lina_csg::Class::Cube => Some(cube),
            _ => None,
        };
    }
    let pipe = tiny_pipeline().await;
    let run = |plan: &'static str| {
        let options = prompt_options(PROMPT, 6);
        let set = |k: &str, v: JsValue| Reflect::set(&options, &JsValue::from_str(k), &v).unwrap();
        set("plan", js_sys::JSON::parse(plan).unwrap());
        set("csg", js_sys::JSON::parse(&csg.to_json()).unwrap());
        set("attentionMaps", true.into());
        set("guidanceScale", 5.0.into());
        pipe.generate(options, None)
    };
    let plain = run("{}").await.map_err(message).unwrap();
    let steered = run(r#"{"attentionStrength": 2, "attentionWindow": [0, 0.5]}"#)
        .await
        .map_err(message)
        .unwrap();
    // The share of `words`' attention inside box `b`, over the first three steps (the window).
    let share = |result: &JsValue, words: &[&str], b: [f32; 4]| -> f32 {
        let maps = Reflect::get(result, &"attention".into()).unwrap();
        let get = |k: &str| Reflect::get(&maps, &k.into()).unwrap();
        let (h, w) = (
            get("height").as_f64().unwrap() as usize,
            get("width").as_f64().unwrap() as usize,
        );
        let tokens: Vec<String> = js_sys::Array::from(&get("tokens"))
            .iter()
            .map(|t| {
                Reflect::get(&t, &"word".into())
                    .unwrap()
                    .as_string()
                    .unwrap()
            })
            .collect();
        let steps = js_sys::Array::from(&get("steps"));
        assert_eq!(steps.length(), 6, "one map set per step");
        let mut total = 0.0;
        for step in steps.iter().take(3) {
            let values = js_sys::Float32Array::from(step).to_vec();
            assert_eq!(values.len(), tokens.len() * h * w);
            let (mut mine, mut all) = (0.0, 0.0);
            for (t, word) in tokens.iter().enumerate() {
                if !words.contains(&word.as_str()) {
                    continue;
                }
                for i in 0..h * w {
                    let (x, y) = (
                        ((i % w) as f32 + 0.5) / w as f32,
                        ((i / w) as f32 + 0.5) / h as f32,
                    );
                    let v = values[t * h * w + i];
                    all += v;
                    if x >= b[0] && x < b[2] && y >= b[1] && y < b[3] {
                        mine += v;
                    }
                }
            }
            total += mine / all;
        }
        total / 3.0
    };
    for (words, b) in [(["red", "ball"], ball), (["blue", "cube"], cube)] {
        let (before, after) = (share(&plain, &words, b), share(&steered, &words, b));
        assert!(
            after > before + 0.1,
            "{words:?}: attention in the box went from {before:.3} to {after:.3}"
        );
    }
}
