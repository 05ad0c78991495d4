//! The command line as a user meets it: each subcommand's help, flags checked before any
//! work, errors with their stable code, and one real generation on the embedded model.

use std::path::Path;
use std::process::{Command, Output};

fn cli(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lina-cli"))
        .args(args)
        .output()
        .expect("lina-cli runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

const MODEL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../www/models/default");

#[test]
fn every_subcommand_has_its_own_help_under_the_binary_s_name() {
    let top = cli(&["--help"]);
    assert!(top.status.success());
    let usage = text(&top.stdout);
    assert!(usage.contains("Usage: lina-cli"), "{usage}");
    for command in [
        "generate",
        "memory",
        "bench",
        "bench-unet",
        "probe",
        "probe-render",
        "probe-data",
        "sweep",
        "reinpaint",
        "embed-shift",
        "lina-search",
        "eval",
        "lina-fit",
        "soak",
    ] {
        assert!(usage.contains(command), "{command} missing from:\n{usage}");
        let help = cli(&[command, "--help"]);
        assert!(help.status.success(), "{command} --help failed");
        let help = text(&help.stdout);
        assert!(
            help.contains(&format!("Usage: lina-cli {command}")),
            "{command}:\n{help}"
        );
    }
}

#[test]
fn bad_flags_are_refused_before_any_work() {
    // A plan with a misspelt field: refused by the plan's own validation, which names it.
    let bad_plan = [
        "generate",
        "--model",
        MODEL,
        "--prompt",
        "x",
        "--plan",
        "{\"warpp\": 2}",
    ];
    // A misspelt flag, a missing required one, a bad value: clap's usage error (exit 2).
    for args in [
        &[
            "generate", "--model", MODEL, "--prompt", "x", "--stpes", "3",
        ][..],
        &["generate", "--prompt", "x"],
        &[
            "generate", "--model", MODEL, "--prompt", "x", "--device", "tpu",
        ],
        &bad_plan,
        // An unknown reference size, and a reference size without a reference image.
        &[
            "generate",
            "--model",
            MODEL,
            "--prompt",
            "x",
            "--reference-image",
            "r.png",
            "--reference-size",
            "native",
        ],
        &[
            "generate",
            "--model",
            MODEL,
            "--prompt",
            "x",
            "--reference-size",
            "kept",
        ],
        &[
            "probe-render",
            "--suite",
            "id",
            "--broken",
            "yes",
            "--out",
            "x",
        ],
    ] {
        let out = cli(args);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
    let out = cli(&bad_plan);
    assert!(text(&out.stderr).contains("warpp"), "{}", text(&out.stderr));
    // ControlNets without an image each, or scales neither one for all nor one each: refused
    // before any file is read, naming the flags.
    let cases: [(&[&str], &str); 2] = [
        (
            &[
                "--controlnet",
                "a",
                "--controlnet",
                "b",
                "--controlnet-image",
                "x.png",
            ],
            "1 --controlnet-image for 2 --controlnet",
        ),
        (
            &[
                "--controlnet",
                "a",
                "--controlnet-image",
                "x.png",
                "--controlnet-scale",
                "1",
                "--controlnet-scale",
                "2",
            ],
            "2 --controlnet-scale for 1 --controlnet",
        ),
    ];
    for (flags, says) in cases {
        let args = [&["generate", "--model", MODEL, "--prompt", "x"][..], flags].concat();
        let out = cli(&args);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{flags:?}: {}",
            text(&out.stderr)
        );
        assert!(text(&out.stderr).contains(says), "{}", text(&out.stderr));
    }
}

#[test]
fn runtime_errors_carry_their_code_and_source() {
    let out = cli(&["generate", "--model", "/nonexistent/model", "--prompt", "x"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("error[missing_file]"), "{err}");
    // A LoRA that is not a LoRA file: refused before any model loads, naming the file.
    let not_lora =
        std::env::temp_dir().join(format!("lina-cli-lora-{}.safetensors", std::process::id()));
    std::fs::write(&not_lora, b"not safetensors").unwrap();
    let spec = format!("{}:0.5", not_lora.display());
    let out = cli(&[
        "generate", "--model", MODEL, "--prompt", "x", "--lora", &spec,
    ]);
    std::fs::remove_file(&not_lora).unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("error[weight_file]") && err.contains("lina-cli-lora-"),
        "{err}"
    );
}

#[test]
fn generate_writes_a_png() {
    let dir = std::env::temp_dir().join(format!("lina-cli-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let png = dir.join("out.png");
    // A probe scene under the default plan, and an everyday prompt under the attention
    // control, whose layout comes from the prompt's own relations.
    for (prompt, plan) in [
        ("a red ball on a small mirror", "lina"),
        ("a cat sleeping on a sofa", "{\"attentionStrength\": 2}"),
    ] {
        let out = cli(&[
            "generate",
            "--model",
            MODEL,
            "--prompt",
            prompt,
            "--steps",
            "2",
            "--plan",
            plan,
            "--out",
            png.to_str().unwrap(),
        ]);
        assert!(out.status.success(), "{prompt}: {}", text(&out.stderr));
        let bytes = std::fs::read(&png).unwrap();
        assert_eq!(&bytes[1..4], b"PNG");
        std::fs::remove_file(&png).unwrap();
    }
    // The attention maps: the image, then one tile per word of the prompt (after the LINA
    // run's implied effects, none here).
    let maps = dir.join("maps.png");
    let out = cli(&[
        "generate",
        "--model",
        MODEL,
        "--prompt",
        "a cat sleeping on a sofa",
        "--steps",
        "2",
        "--out",
        png.to_str().unwrap(),
        "--attention-maps",
        maps.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let image = lina_runtime::image::Image::from_png(&std::fs::read(&png).unwrap()).unwrap();
    let strip = lina_runtime::image::Image::from_png(&std::fs::read(&maps).unwrap()).unwrap();
    assert_eq!(strip.height, image.height);
    assert_eq!(strip.width, 7 * image.width, "the image and six words");
    assert_eq!(
        strip.rgb[..3],
        image.rgb[..3],
        "the strip starts with the image"
    );
    std::fs::remove_file(&maps).unwrap();
    std::fs::remove_file(&png).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(!Path::new(&png).exists());
}

/// `--latents` reproduces diffusers: the tiny fixture's reference run, from diffusers' own
/// initial latents, gives diffusers' image within 2/255. `--save-latents` writes the seed's
/// latents, and running from them gives the seed's image exactly.
#[test]
fn latents_in_and_out_reproduce_runs() {
    let fixture = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/sd1_tiny");
    let dir = std::env::temp_dir().join(format!("lina-cli-latents-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = |name: &str| dir.join(name).to_str().unwrap().to_string();

    let floats = reference_floats(format!("{fixture}/reference.safetensors"));
    write_npy(
        &path("diffusers.npy"),
        &[1, 4, 8, 8],
        &floats("pipe_init_latents"),
    );

    let run = |extra: &[&str], out: &str| reference_recipe(fixture, extra, out);
    let image = run(
        &["--latents", &path("diffusers.npy")],
        &path("diffusers.png"),
    );
    let expected = floats("pipe_image");
    let worst = worst_pixel(&image, &expected);
    assert!(worst <= 2.0, "worst pixel {worst}/255 from diffusers'");

    let seeded = run(
        &["--seed", "9", "--save-latents", &path("seed9.npy")],
        &path("seed9.png"),
    );
    let again = run(&["--latents", &path("seed9.npy")], &path("again.png"));
    assert_eq!(seeded, again, "the saved latents give the seed's image");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `values` of `shape` as a .npy file of f32.
fn write_npy(path: &str, shape: &[u64], values: &[f32]) {
    use npyz::WriterBuilder;
    let file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut writer = npyz::WriteOptions::new()
        .default_dtype()
        .shape(shape)
        .writer(file)
        .begin_nd()
        .unwrap();
    writer.extend(values.iter().copied()).unwrap();
    writer.finish().unwrap();
}

/// `--noise` reproduces diffusers' ancestral sampler: SDXL-Turbo's recipe (the tiny SDXL
/// folder with sdxl-turbo's scheduler config) at 4 steps, from diffusers' latents and the
/// noise its scheduler drew, gives diffusers' image within 1/255; noise for fewer steps than
/// run is an error that says what fits, and writes no image.
#[test]
fn noise_in_reproduces_an_ancestral_run() {
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures");
    let dir = std::env::temp_dir().join(format!("lina-cli-noise-{}", std::process::id()));
    let model = dir.join("sdxl_turbo");
    copy_dir(&Path::new(fixtures).join("sdxl_tiny"), &model);
    std::fs::copy(
        Path::new(fixtures).join("sdxl_turbo_tiny/scheduler/scheduler_config.json"),
        model.join("scheduler/scheduler_config.json"),
    )
    .unwrap();
    let path = |name: &str| dir.join(name).to_str().unwrap().to_string();
    let floats = reference_floats(format!("{fixtures}/sdxl_turbo_tiny/reference.safetensors"));
    write_npy(&path("latents.npy"), &[1, 4, 8, 8], &floats("latents"));
    write_npy(&path("noise4.npy"), &[4, 1, 4, 8, 8], &floats("noise_4"));
    write_npy(&path("noise2.npy"), &[2, 1, 4, 8, 8], &floats("noise_2"));
    let run = |noise: &str, out: &str| {
        cli(&[
            "generate",
            "--model",
            model.to_str().unwrap(),
            "--prompt",
            "a red ball on a small mirror",
            "--guidance",
            "0",
            "--steps",
            "4",
            "--latents",
            &path("latents.npy"),
            "--noise",
            noise,
            "--out",
            out,
        ])
    };
    let done = run(&path("noise4.npy"), &path("turbo.png"));
    assert!(done.status.success(), "{}", text(&done.stderr));
    let image =
        lina_runtime::image::Image::from_png(&std::fs::read(path("turbo.png")).unwrap()).unwrap();
    let worst = worst_pixel(&image, &floats("image_4"));
    assert!(worst <= 1.0, "worst pixel {worst}/255 from diffusers'");

    let short = run(&path("noise2.npy"), &path("short.png"));
    assert!(!short.status.success());
    let err = text(&short.stderr);
    assert!(
        err.contains("step noise") && err.contains("4 steps"),
        "{err}"
    );
    assert!(!Path::new(&path("short.png")).exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// tests/fixtures/controlnet_tiny's weights under an original ControlNet file's names
/// (tests/fixtures/single_file/controlnet_tiny.json).
fn original_controlnet(fixtures: &str) -> Vec<u8> {
    let map: serde_json::Value = serde_json::from_slice(
        &std::fs::read(format!("{fixtures}/single_file/controlnet_tiny.json")).unwrap(),
    )
    .unwrap();
    let weights = std::fs::read(format!(
        "{fixtures}/controlnet_tiny/diffusion_pytorch_model.safetensors"
    ))
    .unwrap();
    let file = safetensors::SafeTensors::deserialize(&weights).unwrap();
    let tensors: Vec<(String, safetensors::tensor::TensorView)> = map["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let theirs = e[2][0].as_str().unwrap();
            (
                e[0].as_str().unwrap().to_string(),
                file.tensor(theirs).unwrap(),
            )
        })
        .collect();
    safetensors::serialize(tensors, None).unwrap()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// SDXL base, then its refiner, through the CLI: `--denoising-end 0.8 --handoff-out` writes
/// the base's latents, `--handoff ... --denoising-start 0.8` continues them in the refiner,
/// and the image is diffusers' (`denoising_end` / `denoising_start`) within 1/255.
#[test]
fn base_and_refiner_hand_latents_over_through_files() {
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures");
    let dir = std::env::temp_dir().join(format!("lina-cli-handoff-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = |name: &str| dir.join(name).to_str().unwrap().to_string();
    let floats = reference_floats(format!(
        "{fixtures}/sdxl_refiner_tiny/reference.safetensors"
    ));
    write_npy(&path("start.npy"), &[1, 4, 8, 8], &floats("handoff_start"));
    let run = |model: &str, extra: &[&str], out: &str| {
        reference_recipe(&format!("{fixtures}/{model}"), extra, out)
    };
    run(
        "sdxl_tiny",
        &[
            "--latents",
            &path("start.npy"),
            "--denoising-end",
            "0.8",
            "--handoff-out",
            &path("handoff.npy"),
        ],
        &path("base.png"),
    );
    let image = run(
        "sdxl_refiner_tiny",
        &[
            "--handoff",
            &path("handoff.npy"),
            "--denoising-start",
            "0.8",
        ],
        &path("refined.png"),
    );
    let worst = worst_pixel(&image, &floats("handoff_image"));
    assert!(worst <= 1.0, "worst pixel {worst}/255 from diffusers'");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `generate` on `model` with the tiny fixtures' reference recipe (the prompt, "blurry" as
/// the negative, guidance 7.5, 10 steps) and `extra` flags; the image it wrote to `out`.
fn reference_recipe(model: &str, extra: &[&str], out: &str) -> lina_runtime::image::Image {
    let mut flags = vec!["--negative", "blurry", "--guidance", "7.5", "--steps", "10"];
    flags.extend_from_slice(extra);
    generate_image(model, &flags, out)
}

/// `generate` on `model` with the fixtures' prompt and `flags`, which must succeed; the image
/// it wrote to `out`.
fn generate_image(model: &str, flags: &[&str], out: &str) -> lina_runtime::image::Image {
    let mut args = vec![
        "generate",
        "--model",
        model,
        "--prompt",
        "a red ball on a small mirror",
        "--out",
        out,
    ];
    args.extend_from_slice(flags);
    let done = cli(&args);
    assert!(done.status.success(), "{}", text(&done.stderr));
    lina_runtime::image::Image::from_png(&std::fs::read(out).unwrap()).unwrap()
}

/// The f32 tensors of a reference safetensors file, by name.
fn reference_floats(path: String) -> impl Fn(&str) -> Vec<f32> {
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    move |name| {
        let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let view = file.tensor(name).unwrap();
        view.data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    }
}

/// The largest difference, in 1/255, between an image and a reference in [0, 1].
fn worst_pixel(image: &lina_runtime::image::Image, expected: &[f32]) -> f32 {
    image
        .rgb
        .iter()
        .zip(expected)
        .map(|(&a, &b)| (a as f32 - b * 255.0).abs())
        .fold(0.0, f32::max)
}

/// `probe --from-truth S`, the diagnostic of the model's prior: each image starts from its
/// scene's rendered ground truth, and the report says so. At a low strength the image stays
/// close to the render, far closer than plain sampling's; a strength outside (0, 1] is refused
/// before any work.
#[test]
fn probe_from_truth_starts_at_the_rendered_scene() {
    let dir = std::env::temp_dir().join(format!("lina-cli-truth-{}", std::process::id()));
    let run = |name: &str, extra: &[&str]| -> Output {
        let out = dir.join(name);
        let mut args = vec![
            "probe",
            "--model",
            MODEL,
            "--suite",
            "ood:quantity",
            "--count",
            "1",
            "--seeds",
            "1",
            "--steps",
            "8",
            "--guidance",
            "3",
            "--out",
            out.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        cli(&args)
    };
    let image = |name: &str| {
        let folder = dir.join(name);
        let png = std::fs::read_dir(&folder)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|e| e == "png") && !p.ends_with("grid.png"))
            .expect("an image");
        lina_runtime::image::Image::from_png(&std::fs::read(png).unwrap()).unwrap()
    };
    let out = run("truth", &["--from-truth", "0.125"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report = std::fs::read_to_string(dir.join("truth").join("report.json")).unwrap();
    assert!(
        report.contains("rendered ground truth at strength 0.125"),
        "{report}"
    );
    let out = run("plain", &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    let truth = lina_probe::SceneId {
        split: lina_probe::Split::Ood,
        category: lina_probe::Category::Quantity,
        index: 0,
    }
    .scene()
    .render()
    .image;
    // Over the pixels where plain sampling's image and the render differ by more than 40 in
    // some channel (the jar and its sand, mostly): the mean distance of each to the render.
    let (from_truth, plain) = (image("truth"), image("plain"));
    let far: Vec<usize> = (0..truth.rgb.len() / 3)
        .filter(|&p| (0..3).any(|c| plain.rgb[3 * p + c].abs_diff(truth.rgb[3 * p + c]) > 40))
        .collect();
    let off = |image: &lina_runtime::image::Image| {
        let sum: f64 = far
            .iter()
            .flat_map(|&p| (0..3).map(move |c| 3 * p + c))
            .map(|i| image.rgb[i].abs_diff(truth.rgb[i]) as f64)
            .sum();
        sum / (3 * far.len()).max(1) as f64
    };
    assert!(
        far.len() > 20,
        "plain sampling drew the render's scene: {} pixels off",
        far.len()
    );
    let (from_truth, plain) = (off(&from_truth), off(&plain));
    assert!(
        from_truth * 2.0 < plain,
        "mean distance to the render where plain sampling strays: from the truth \
         {from_truth:.1}/255, plain {plain:.1}/255"
    );

    for bad in ["0", "1.5"] {
        let out = run("bad", &["--from-truth", bad]);
        assert_eq!(out.status.code(), Some(2), "{bad}");
        assert!(
            text(&out.stderr).contains("a strength is a number in (0, 1]"),
            "{bad}: {}",
            text(&out.stderr)
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `eval --from-truth`: one "from truth at S" row per strength, in each suite, which
/// `--variants` selects as "from truth"; without a strength there is no such row to select. A
/// row after them starts from noise again (it ran every step).
#[test]
fn eval_adds_a_row_from_the_truth_per_strength() {
    let dir = std::env::temp_dir().join(format!("lina-cli-eval-truth-{}", std::process::id()));
    let out = dir.to_str().unwrap();
    let mut args = vec![
        "eval",
        "--model",
        MODEL,
        "--suites",
        "ood:quantity,id:quantity",
        "--count",
        "1",
        "--seeds",
        "1",
        "--steps",
        "4",
        "--plan",
        "{\"mirror\": true}",
        "--variants",
        "baseline,from truth",
        "--resamples",
        "10",
        "--out",
        out,
    ];
    // No seed or no prompt is refused as the arguments are read (no seed once panicked
    // after every row was made).
    for (flag, value) in [("--seeds", "0"), ("--count", "0")] {
        let mut none = args.clone();
        let at = none.iter().position(|a| *a == flag).unwrap();
        none[at + 1] = value;
        let none = cli(&none);
        assert_eq!(
            none.status.code(),
            Some(2),
            "{flag}: {}",
            text(&none.stderr)
        );
    }
    let refused = cli(&args);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        text(&refused.stderr).contains("no variant \"from truth\""),
        "{}",
        text(&refused.stderr)
    );
    args.extend(["--from-truth", "0.5,0.25"]);
    let ran = cli(&args);
    assert!(ran.status.success(), "{}", text(&ran.stderr));
    let json = std::fs::read_to_string(dir.join("eval.json")).unwrap();
    let rows: Vec<serde_json::Value> = serde_json::from_str(&json).unwrap();
    let variants: Vec<&str> = rows
        .iter()
        .map(|r| r["variant"].as_str().unwrap())
        .collect();
    let truth = [
        "from truth at 0.5 (reads the answer)",
        "from truth at 0.25 (reads the answer)",
    ];
    assert_eq!(variants[..3], ["baseline", truth[0], truth[1]]);
    assert_eq!(variants[3..], ["baseline", truth[0], truth[1]]);
    // Plain sampling in the second suite, after the rows from the truth: every one of the 4
    // steps, conditional and unconditional, for its one image.
    assert_eq!(rows[3]["cost"]["evaluations"], 8, "{}", rows[3]);
    assert_eq!(rows[5]["cost"]["evaluations"], 2, "{}", rows[5]);
    let md = std::fs::read_to_string(dir.join("eval.md")).unwrap();
    assert!(md.contains("from truth at 0.25"), "{md}");
    // Each image keeps its category, the stratum the intervals resample within.
    assert_eq!(rows[0]["scored"][0]["category"], 4, "quantity: {}", rows[0]);
    // The tables rendered again from the saved scores are the tables the run wrote.
    let table_of = |scores: &std::path::Path, resamples: &str| {
        cli(&[
            "eval-table",
            "--scores",
            scores.to_str().unwrap(),
            "--resamples",
            resamples,
        ])
    };
    let again = table_of(&dir.join("eval.json"), "10");
    assert!(again.status.success(), "{}", text(&again.stderr));
    let rows_of = |md: &str| -> Vec<String> {
        md.lines()
            .filter(|l| l.starts_with("| "))
            .map(str::to_string)
            .collect()
    };
    let table = text(&again.stdout);
    assert!(!rows_of(&md).is_empty());
    assert_eq!(rows_of(&table), rows_of(&md), "{table}");
    // Not an evaluation's scores: a clear error.
    let bad = table_of(&dir.join("eval.md"), "10");
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        text(&bad.stderr).contains("not an evaluation's scores"),
        "{}",
        text(&bad.stderr)
    );
    // A row that scored other prompts than its baseline (a merge by hand gone wrong): a
    // clear error, not an interval over prompts that are not there.
    let mut unpaired: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("eval.json")).unwrap()).unwrap();
    unpaired[1]["scored"][0]["prompt"] = 100000.into();
    let unpaired_path = dir.join("unpaired.json");
    std::fs::write(&unpaired_path, unpaired.to_string()).unwrap();
    let bad = table_of(&unpaired_path, "10");
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        text(&bad.stderr).contains("scored other prompts than its baseline"),
        "{}",
        text(&bad.stderr)
    );
    // No resample, no interval: refused as the arguments are read (it once panicked after
    // every image of an evaluation was made).
    let none = table_of(&dir.join("eval.json"), "0");
    assert_eq!(none.status.code(), Some(2), "{}", text(&none.stderr));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The predictor's training as a user runs it: two searches over different prompts of the
/// training suite, fitted together; a search sampled with other settings is refused, and
/// a search that reuses an earlier one's scores takes them instead of sampling.
#[test]
fn lina_fit_fits_several_searches_together() {
    let dir = std::env::temp_dir().join(format!("lina-cli-fit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = |name: &str| dir.join(name).to_str().unwrap().to_string();
    // One prompt of the training suite's spatial scenes, one seed; `reuse` an earlier
    // search's file.
    let run_search = |first: &str, steps: &str, reuse: Option<&str>, out: &str| {
        let mut args: Vec<String> = [
            "lina-search",
            "--model",
            MODEL,
            "--suite",
            "train:spatial",
            "--first",
            first,
            "--count",
            "1",
            "--seeds",
            "1",
            "--steps",
            steps,
            "--out",
            &path(out),
        ]
        .map(String::from)
        .to_vec();
        if let Some(earlier) = reuse {
            args.extend(["--reuse".to_string(), path(earlier)]);
        }
        cli(&args.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let search = |first: &str, steps: &str, out: &str| {
        let run = run_search(first, steps, None, out);
        assert!(run.status.success(), "{}", text(&run.stderr));
    };
    search("0", "3", "a.json");
    search("1", "3", "b.json");
    search("2", "2", "other.json");
    let fit = |files: &[&str]| {
        let mut args = vec!["lina-fit".to_string(), "--lambda".into(), "1".into()];
        for f in files {
            args.extend(["--search".to_string(), path(f)]);
        }
        args.extend(["--out".to_string(), path("predictor.json")]);
        cli(&args.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let one = fit(&["a.json"]);
    assert!(one.status.success(), "{}", text(&one.stderr));
    let trained = |p: &str| {
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap();
        json["trained"].as_str().unwrap().to_string()
    };
    assert!(
        trained(&path("predictor.json")).contains(" on 1 prompts"),
        "{}",
        trained(&path("predictor.json"))
    );
    let both = fit(&["a.json", "b.json"]);
    assert!(both.status.success(), "{}", text(&both.stderr));
    assert!(
        trained(&path("predictor.json")).contains(" on 2 prompts"),
        "{}",
        trained(&path("predictor.json"))
    );
    let mixed = fit(&["a.json", "other.json"]);
    assert_eq!(mixed.status.code(), Some(1), "{}", text(&mixed.stderr));
    let e = text(&mixed.stderr);
    assert!(e.contains("other.json") && e.contains("differ"), "{e}");

    // `--reuse` takes an earlier search's scores instead of sampling again: marked scores
    // come back as they were written, so they were read, not sampled.
    let mut marked: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path("a.json")).unwrap()).unwrap();
    for row in marked["prompts"].as_array_mut().unwrap() {
        for score in row["scores"].as_array_mut().unwrap() {
            *score = serde_json::json!(0.125);
        }
    }
    std::fs::write(path("marked.json"), marked.to_string()).unwrap();
    let reuse = |earlier: &str, steps: &str| run_search("0", steps, Some(earlier), "reused.json");
    let run = reuse("marked.json", "3");
    assert!(run.status.success(), "{}", text(&run.stderr));
    let reused: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path("reused.json")).unwrap()).unwrap();
    let rows = reused["prompts"].as_array().unwrap();
    assert!(!rows.is_empty());
    for row in rows {
        assert!(
            row["scores"].as_array().unwrap().iter().all(|s| s == 0.125),
            "{row}"
        );
    }
    // A candidate the earlier search lacks is sampled: a share of checks passed over one
    // seed, never the mark. (A mirror image's row holds it in the partner's column.)
    let mut fewer = marked.clone();
    fewer["candidates"].as_array_mut().unwrap().remove(0);
    for row in fewer["prompts"].as_array_mut().unwrap() {
        row["scores"].as_array_mut().unwrap().remove(0);
    }
    std::fs::write(path("fewer.json"), fewer.to_string()).unwrap();
    let run = reuse("fewer.json", "3");
    assert!(run.status.success(), "{}", text(&run.stderr));
    let reused: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path("reused.json")).unwrap()).unwrap();
    for row in reused["prompts"].as_array().unwrap() {
        let scores = row["scores"].as_array().unwrap();
        let unmarked: Vec<usize> = (0..scores.len()).filter(|&k| scores[k] != 0.125).collect();
        if row["mirror_of"].is_null() {
            assert_eq!(unmarked, [0], "only the baseline is sampled: {row}");
        } else {
            assert_eq!(unmarked.len(), 1, "{row}");
        }
    }
    // An earlier search sampled under another collage: its collage candidates are sampled
    // again (this row's two things stand apart, so the collage arranges them), the rest kept.
    let mut old_collage = marked.clone();
    old_collage["collage"] = serde_json::json!(1);
    std::fs::write(path("old_collage.json"), old_collage.to_string()).unwrap();
    let run = reuse("old_collage.json", "3");
    assert!(run.status.success(), "{}", text(&run.stderr));
    let reused: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path("reused.json")).unwrap()).unwrap();
    let names: Vec<String> = reused["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c[0].as_str().unwrap().to_string())
        .collect();
    for row in reused["prompts"].as_array().unwrap() {
        let scores = row["scores"].as_array().unwrap();
        for (name, score) in names.iter().zip(scores) {
            assert_eq!(name.contains("collage"), *score != 0.125, "{name} in {row}");
        }
    }
    // An earlier search with other settings: its scores would not be comparable.
    let run = reuse("other.json", "3");
    assert_eq!(run.status.code(), Some(1), "{}", text(&run.stderr));
    let e = text(&run.stderr);
    assert!(e.contains("--reuse") && e.contains("other.json"), "{e}");
    // A row short of scores: a clear error, not a panic.
    marked["prompts"][0]["scores"].as_array_mut().unwrap().pop();
    std::fs::write(path("short.json"), marked.to_string()).unwrap();
    let run = reuse("short.json", "3");
    assert_eq!(run.status.code(), Some(1), "{}", text(&run.stderr));
    assert!(
        text(&run.stderr).contains("scores for"),
        "{}",
        text(&run.stderr)
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Image inputs through the CLI: `--control-image` for FLUX.1 Canny and Depth (the tiny FLUX
/// folder with the control variant's transformer) and for a `--controlnet` beside SD 1.x's
/// UNet (its folder at scale 0.6 from 20% to 80% of the steps; the same ControlNet as an
/// original file, named after lllyasviel's layout, in guess mode; both at once, each with
/// its image, scale and window), `--t2i-adapter` with its image at scale 0.8, and `--reference-image` for Kontext (the
/// tiny FLUX as it is; a 50x34 card with `--reference-size kept`, resized to 48x32 as
/// diffusers does) give diffusers' images within 1/255, from diffusers' latents.
#[test]
fn control_and_reference_images_come_from_files() {
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures");
    let dir = std::env::temp_dir().join(format!("lina-cli-flux-images-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = |name: &str| dir.join(name).to_str().unwrap().to_string();
    // The cards the references were drawn from, as PNGs.
    let card_png = |fixture: &str, key: &str, (width, height): (usize, usize)| {
        let reference =
            std::fs::read(format!("{fixtures}/{fixture}/reference.safetensors")).unwrap();
        let rgb = safetensors::SafeTensors::deserialize(&reference)
            .unwrap()
            .tensor(key)
            .unwrap()
            .data()
            .to_vec();
        let card = lina_runtime::image::Image { width, height, rgb };
        let file = path(&format!("{fixture}_{key}.png"));
        std::fs::write(&file, card.to_png().unwrap()).unwrap();
        file
    };
    let card = card_png("flux_control_tiny", "card", (48, 32));
    let uneven = card_png("flux_kontext", "uneven_card", (50, 34));
    let edges = card_png("controlnet_tiny", "card", (64, 64));
    let start = card_png("controlnet_tiny", "start", (64, 64));
    let controlnet = reference_floats(format!("{fixtures}/controlnet_tiny/reference.safetensors"));
    write_npy(&path("sd1.npy"), &[1, 4, 8, 8], &controlnet("latents"));
    let tiny = reference_floats(format!("{fixtures}/flux_tiny/reference.safetensors"));
    write_npy(&path("wide.npy"), &[1, 16, 16, 24], &tiny("latents_wide"));
    write_npy(&path("square.npy"), &[1, 16, 16, 16], &tiny("latents"));
    // flux_tiny with the control variant's transformer.
    let control = dir.join("flux_control");
    copy_dir(Path::new(&format!("{fixtures}/flux_tiny")), &control);
    std::fs::remove_dir_all(control.join("transformer")).unwrap();
    copy_dir(
        Path::new(&format!("{fixtures}/flux_control_tiny/transformer")),
        &control.join("transformer"),
    );
    let (wide, square, sd1) = (path("wide.npy"), path("square.npy"), path("sd1.npy"));
    let controlnet_folder = format!("{fixtures}/controlnet_tiny");
    let adapter_folder = format!("{fixtures}/t2i_adapter_tiny");
    let adapter = reference_floats(format!("{fixtures}/t2i_adapter_tiny/reference.safetensors"));
    write_npy(&path("adapter.npy"), &[1, 4, 8, 8], &adapter("latents"));
    let adapter_latents = path("adapter.npy");
    // The same ControlNet as an original file (lllyasviel's names), alone in its folder.
    let original = path("control_tiny.safetensors");
    std::fs::write(&original, original_controlnet(fixtures)).unwrap();
    let size = |width, height| ["--width", width, "--height", height];
    let cases = [
        (
            control.to_str().unwrap().to_string(),
            [
                &[
                    "--control-image",
                    &card,
                    "--guidance",
                    "10",
                    "--latents",
                    &wide,
                    "--steps",
                    "4",
                ][..],
                &size("48", "32"),
            ]
            .concat(),
            ("flux_control_tiny", "image"),
        ),
        (
            format!("{fixtures}/sd1_tiny"),
            [
                &[
                    "--controlnet",
                    &controlnet_folder,
                    "--controlnet-image",
                    &edges,
                ][..],
                &[
                    "--controlnet-scale",
                    "0.6",
                    "--control-guidance-start",
                    "0.2",
                ],
                &["--control-guidance-end", "0.8", "--negative", "blurry"],
                &["--guidance", "7.5", "--steps", "10", "--latents", &sd1],
            ]
            .concat(),
            ("controlnet_tiny", "image_window"),
        ),
        (
            format!("{fixtures}/sd1_tiny"),
            [
                &["--controlnet", &original, "--controlnet-image", &edges][..],
                &["--negative", "blurry", "--guidance", "7.5", "--steps", "10"],
                &["--latents", &sd1, "--controlnet-guess-mode"],
            ]
            .concat(),
            ("controlnet_tiny", "image_guess"),
        ),
        (
            format!("{fixtures}/sd1_tiny"),
            [
                &[
                    "--controlnet",
                    &controlnet_folder,
                    "--controlnet-image",
                    &edges,
                ][..],
                &["--controlnet", &original, "--controlnet-image", &start],
                &["--controlnet-scale", "0.7", "--controlnet-scale", "0.5"],
                &[
                    "--control-guidance-start",
                    "0",
                    "--control-guidance-start",
                    "0.3",
                ],
                &[
                    "--control-guidance-end",
                    "1",
                    "--control-guidance-end",
                    "0.9",
                ],
                &["--negative", "blurry", "--guidance", "7.5", "--steps", "10"],
                &["--latents", &sd1],
            ]
            .concat(),
            ("controlnet_tiny", "image_multi"),
        ),
        (
            format!("{fixtures}/sd1_tiny"),
            [
                &[
                    "--t2i-adapter",
                    &adapter_folder,
                    "--t2i-adapter-image",
                    &edges,
                ][..],
                &[
                    "--t2i-adapter-scale",
                    "0.8",
                    "--negative",
                    "blurry",
                    "--guidance",
                    "7.5",
                ],
                &["--steps", "10", "--latents", &adapter_latents],
            ]
            .concat(),
            ("t2i_adapter_tiny", "image"),
        ),
        (
            format!("{fixtures}/flux_tiny"),
            [
                &["--reference-image", &uneven, "--reference-size", "kept"][..],
                &["--guidance", "2.5", "--latents", &square, "--steps", "4"],
                &size("32", "32"),
            ]
            .concat(),
            ("flux_kontext", "image_kept"),
        ),
    ];
    for (model, args, (expected, key)) in cases {
        let image = generate_image(&model, &args, &path(&format!("{expected}.png")));
        let floats = reference_floats(format!("{fixtures}/{expected}/reference.safetensors"));
        let worst = worst_pixel(&image, &floats(key));
        assert!(
            worst <= 1.0,
            "{}: worst pixel {worst}/255 from diffusers'",
            args[0]
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
