//! The probe's commands: render suites with their masks, export training data, and run a
//! suite on a model with the checker's report.

use std::io::Write;
use std::path::{Path, PathBuf};

use lina::predict::Predictor;
use lina::{self as intervene, Plan};
use lina_judge::Segmenter;
use lina_probe::check::check;
use lina_probe::repair::Repair;
use lina_probe::report::Report;
use lina_probe::{Category, SceneId, Split, Suite};
use lina_runtime::image::Image;
use lina_runtime::pipeline::{CancelToken, GenerateOptions, NoHook, StableDiffusion, StepHook};
use lina_runtime::schedulers::{SchedulerKind, Timesteps};
use lina_runtime::source::DirSource;
use lina_runtime::{Error, Result};

use crate::common::{self, DeviceArg, create_dir, write};

/// What `probe`, `lina-search` and `eval` share: which model, which prompts of a suite, how
/// many seeds, the sampler's settings, where to write.
#[derive(clap::Args)]
pub(crate) struct SuiteArgs {
    /// A diffusers-layout model folder.
    #[arg(long)]
    model: PathBuf,
    /// Seeds per prompt, 0..N (default: 4; 2 for lina-search).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    seeds: Option<u64>,
    /// Prompts per category (the whole suite by default).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    count: Option<u64>,
    /// The first prompt of each category.
    #[arg(long, default_value_t = 0)]
    first: u64,
    #[arg(long, default_value_t = 20)]
    steps: usize,
    /// Guidance scale (default: 7.5 for probe, 3 for eval and lina-search).
    #[arg(long)]
    guidance: Option<f64>,
    /// The output folder (a JSON file for lina-search).
    #[arg(long)]
    out: PathBuf,
}

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    run: SuiteArgs,
    /// The suite: id, ood or train, optionally :CATEGORY.
    #[arg(long)]
    suite: String,
    /// ddim, euler, euler_a, dpm++2m or lcm (the model's own by default).
    #[arg(long, value_parser = common::scheduler)]
    scheduler: Option<SchedulerKind>,
    #[command(flatten)]
    device: DeviceArg,
    /// baseline, lina, predicted (each prompt's plan from the model's predictor), JSON or a
    /// JSON file.
    #[arg(long, default_value = "baseline")]
    plan: String,
    /// The probe's verifier-guided repair baseline at this strength in [0, 1]: a checker in
    /// the loop, reported under its own label, not LINA.
    #[arg(long, default_value_t = 0.0)]
    verifier_repair: f64,
    /// A diagnostic of the model's prior: start each image from its scene's rendered ground
    /// truth, noised so that this fraction of the schedule runs (img2img strength in (0, 1]).
    /// Where even the answer, given at this noise level, comes back wrong, no intervention
    /// that starts from noise can expect to hold it. It reads the answer: never a baseline.
    #[arg(long, value_parser = common::strength)]
    from_truth: Option<f64>,
}

#[derive(clap::Args)]
pub struct RenderArgs {
    /// The suite: id, ood or train, optionally :CATEGORY.
    #[arg(long)]
    suite: String,
    /// Scenes per category.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    count: Option<u64>,
    /// Render each scene broken (its physics wrong), to check that the checker fails it.
    #[arg(long)]
    broken: bool,
    #[arg(long)]
    out: PathBuf,
}

#[derive(clap::Args)]
pub struct DataArgs {
    /// train, id or ood.
    #[arg(long)]
    split: String,
    /// Images to write.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    count: u64,
    /// Also write each image's per-pixel labels for the second judge's segmenter
    /// (labels.u8, one byte per pixel: `lina_judge::Label`), as tools/train_judge.py reads
    /// them.
    #[arg(long)]
    labels: bool,
    /// Render every second scene with its category's typical failure (a floating object, a
    /// spilled reflection, ...). For the segmenter's data: its labels stay exact, and it must
    /// not learn that an object always rests on something.
    #[arg(long)]
    with_broken: bool,
    #[arg(long)]
    out: PathBuf,
}

fn stem(id: &SceneId) -> String {
    format!("{}_{:03}", id.category.name(), id.index)
}

fn write_report(out: &Path, report: &Report, images: &[Image]) -> Result<()> {
    let json = serde_json::to_string_pretty(report).expect("a report serialises");
    write(&out.join("report.json"), json.as_bytes())?;
    write(&out.join("report.md"), report.to_markdown().as_bytes())?;
    write(
        &out.join("grid.png"),
        &Image::grid(images, 14, 2)?.to_png()?,
    )?;
    println!(
        "{}",
        report
            .to_markdown()
            .lines()
            .take(8)
            .collect::<Vec<_>>()
            .join("\n")
    );
    println!("wrote {}", out.join("report.md").display());
    Ok(())
}

/// `probe-render --suite NAME [--count N] [--broken true] --out DIR`: the suite's scenes as
/// rendered, with a PNG mask per node, the CSG and prompt as JSON, and the checker's report
/// on them (which validates the checker: ground truth should pass, broken renders fail).
pub fn render(args: RenderArgs) -> Result<()> {
    let RenderArgs {
        suite,
        count,
        broken,
        out,
    } = args;
    let name = suite;
    let mut suite = Suite::named(&name)?;
    if let Some(n) = count {
        suite.per_category = n;
    }
    create_dir(&out.join("masks"))?;
    let mut report = Report::new(&name, if broken { "broken renders" } else { "renders" });
    let mut images = Vec::new();
    for id in suite.ids() {
        let scene = if broken {
            id.broken_scene()
        } else {
            id.scene()
        };
        let rendered = scene.render();
        let file = format!("{}.png", stem(&id));
        write(&out.join(&file), &rendered.image.to_png()?)?;
        for (node, mask) in scene.csg.nodes.iter().zip(&rendered.masks) {
            let rgb = mask.iter().flat_map(|&m| [255 * m as u8; 3]).collect();
            let mask = Image {
                width: rendered.image.width,
                height: rendered.image.height,
                rgb,
            };
            let path = out
                .join("masks")
                .join(format!("{}_{}.png", stem(&id), node.id));
            write(&path, &mask.to_png()?)?;
        }
        let meta = serde_json::json!({
            "prompt": scene.prompt, "category": id.category, "subcategory": scene.subcategory,
            "split": id.split, "index": id.index, "csg": scene.csg,
        });
        write(
            &out.join(format!("{}.json", stem(&id))),
            meta.to_string().as_bytes(),
        )?;
        report.add(id, &scene, 0, &file, check(&rendered.image, &scene.csg));
        images.push(rendered.image);
    }
    write_report(&out, &report, &images)
}

/// `probe-data --split train|id|ood --count N --out DIR`: `images.u8` (N images, 64x64 RGB,
/// row-major, one byte per channel) and `prompts.jsonl` (one line per image: prompt,
/// category, subcategory, CSG), cycling through the categories. For training scripts.
pub fn data(args: DataArgs) -> Result<()> {
    let DataArgs {
        split,
        count,
        labels,
        with_broken,
        out,
    } = args;
    let split = Suite::named(&split)?.split;
    create_dir(&out)?;
    let open = |name: &str| {
        let path = out.join(name);
        std::fs::File::create(&path)
            .map(std::io::BufWriter::new)
            .map_err(|e| Error::io(path.display(), e))
    };
    let (mut images, mut prompts) = (open("images.u8")?, open("prompts.jsonl")?);
    let mut label_maps = if labels {
        Some(open("labels.u8")?)
    } else {
        None
    };
    let io = |e: std::io::Error| Error::io(out.display(), e);
    let n_cat = Category::ALL.len() as u64;
    let bar = common::bar(count, "scenes");
    for i in 0..count {
        let id = SceneId {
            split,
            category: Category::ALL[(i % n_cat) as usize],
            index: i / n_cat,
        };
        let scene = if with_broken && i % 2 == 1 {
            id.broken_scene()
        } else {
            id.scene()
        };
        let rendered = scene.render();
        images.write_all(&rendered.image.rgb).map_err(io)?;
        if let Some(file) = &mut label_maps {
            let size = lina_probe::SIZE;
            let map = lina_judge::Label::training_map(
                &scene.csg.nodes,
                &rendered.masks,
                [size, size],
                lina_probe::scenes::GROUND,
            );
            file.write_all(&map).map_err(io)?;
        }
        let line = serde_json::json!({
            "prompt": scene.prompt, "category": id.category,
            "subcategory": scene.subcategory, "csg": scene.csg,
        });
        writeln!(prompts, "{line}").map_err(io)?;
        bar.inc(1);
    }
    bar.finish_and_clear();
    images.flush().map_err(io)?;
    prompts.flush().map_err(io)?;
    if let Some(file) = &mut label_maps {
        file.flush().map_err(io)?;
    }
    println!("wrote {count} scenes to {}", out.display());
    Ok(())
}

/// A suite run resolved from its arguments, with the command's own defaults.
pub(crate) struct SuiteRun {
    pub model: String,
    pub seeds: u64,
    count: Option<u64>,
    pub first: u64,
    pub opts: GenerateOptions,
    pub out: PathBuf,
}

impl SuiteRun {
    pub fn new(args: SuiteArgs, seeds: u64, guidance: f64) -> Self {
        Self {
            model: args.model.display().to_string(),
            seeds: args.seeds.unwrap_or(seeds),
            count: args.count,
            first: args.first,
            opts: GenerateOptions {
                timesteps: Timesteps::Count(args.steps),
                guidance_scale: args.guidance.unwrap_or(guidance),
                ..GenerateOptions::default()
            },
            out: args.out,
        }
    }

    /// The suite's prompts from index `--first`, `--count` of them per category.
    pub fn cut(&self, mut suite: Suite) -> Suite {
        if let Some(n) = self.count {
            suite.per_category = n;
        }
        suite.first = self.first;
        suite
    }
}

/// `probe --model DIR --suite NAME [--seeds N] [--count N] [--first I] [--steps N] [--guidance G]
/// [--scheduler S] [--device D] [--plan baseline|lina|JSON|FILE] --out DIR`: generates every prompt of the suite with seeds
/// 0..N, checks each image against its CSG, and writes the images and the report.
pub fn run(args: Args) -> Result<()> {
    let Args {
        run,
        suite: name,
        scheduler,
        device,
        plan,
        verifier_repair: repair,
        from_truth,
    } = args;
    let run = SuiteRun::new(run, 4, GenerateOptions::default().guidance_scale);
    let suite = run.cut(Suite::named(&name)?);
    // `--plan predicted`: each prompt's plan from the model's learned predictor.
    let predicted = plan == "predicted";
    let plan = if predicted {
        Plan::default()
    } else {
        common::plan(&plan).map_err(Error::InvalidInput)?
    };
    let (model, seeds, out) = (run.model, run.seeds, run.out);
    let mut opts = GenerateOptions {
        scheduler,
        ..run.opts
    };
    if suite.split == Split::Train {
        tracing::warn!("the train suite measures fit, not generalisation");
    }
    create_dir(&out)?;
    pollster::block_on(async {
        let device = device.open().await?;
        let pipe = StableDiffusion::load(&DirSource::new(&model), &device)?;
        if pipe.native_size() != lina_probe::SIZE {
            return Err(Error::InvalidInput(format!(
                "the probe's checker judges {0}x{0} images; this model draws {1}x{1}",
                lina_probe::SIZE,
                pipe.native_size()
            )));
        }
        let predictor = Predictor::load(&DirSource::new(&model))?;
        if predicted && predictor.is_none() {
            return Err(Error::InvalidInput(format!(
                "--plan predicted: {model} has no {}",
                intervene::predict::FILE
            )));
        }
        let mut label = if predicted {
            format!("{model} + LINA, plan per prompt from its predictor")
        } else if plan.is_baseline() {
            model.clone()
        } else {
            format!(
                "{model} + LINA {}",
                serde_json::to_string(&plan).expect("a plan serialises")
            )
        };
        if repair != 0.0 {
            label.push_str(&format!(
                " + verifier-guided repair {repair} (a checker in the loop: not LINA)"
            ));
        }
        if let Some(strength) = from_truth {
            label.push_str(&format!(
                ", each image from its rendered ground truth at strength {strength} (a diagnostic of the prior: it reads the answer)"
            ));
        }
        let choice = match predictor.filter(|_| predicted) {
            Some(predictor) => PlanChoice::Predicted(predictor),
            None => PlanChoice::Fixed(plan),
        };
        let outcome = run_suite(
            &pipe,
            &name,
            &label,
            &suite,
            seeds,
            &mut opts,
            &choice,
            repair,
            from_truth,
            Some(&out),
        )
        .await?;
        write_report(&out, &outcome.report, &outcome.images)
    })
}

/// How each image of a suite is made: a fixed plan, each prompt's plan from the model's
/// learned predictor, or the best of N plain samples by the probe's checker.
pub(crate) enum PlanChoice {
    Fixed(Plan),
    Predicted(Predictor),
    /// A verifier baseline: N plain samples per image (the image's own seed first), the one
    /// the checker passes most kept. It costs N images.
    BestOfByChecker(u64),
}

/// What a suite's images cost, summed over them.
#[derive(Debug, Clone, Copy, Default, serde::Serialize, serde::Deserialize)]
pub(crate) struct Cost {
    pub images: usize,
    /// UNet evaluations (batch rows).
    pub evaluations: usize,
    pub seconds: f64,
}

impl Cost {
    pub fn per_image(&self) -> (f64, f64) {
        let n = self.images.max(1) as f64;
        (self.evaluations as f64 / n, self.seconds / n)
    }
}

/// One judge's marks on one image.
#[derive(Debug, Clone, Copy, Default, serde::Serialize, serde::Deserialize)]
pub(crate) struct Marks {
    pub relations_passed: usize,
    pub relations: usize,
    /// Every check passed (for the second judge: and the frame is not wrecked).
    pub all: bool,
}

/// One image under both judges: the probe's checker and the second judge
/// (`lina_judge`), which share no code.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub(crate) struct Scored {
    /// The unit the bootstrap resamples: the position in the suite of the first prompt with
    /// this image's text ([`text_units`]).
    pub prompt: usize,
    /// The prompt's category, by its position in `Category::ALL`: the stratum the bootstrap
    /// resamples within. (Scores saved before it was kept read as one stratum.)
    #[serde(default)]
    pub category: usize,
    pub checker: Marks,
    pub judge: Marks,
    /// The second judge finds no valid scene.
    pub wrecked: bool,
}

/// Each prompt's unit for the bootstrap: the position of the first prompt with the same
/// key, its text (and category). A suite may draw one text several times (the `ood` suite's
/// 30 jar prompts are three texts), and under a plan chosen from the text a text and a seed
/// fix the image, so its copies are one observation: resampled as one, they widen the
/// interval as they should instead of narrowing it.
pub(crate) fn text_units<T: PartialEq>(keys: &[T]) -> Vec<usize> {
    keys.iter()
        .map(|k| {
            keys.iter()
                .position(|u| u == k)
                .unwrap_or_else(|| unreachable!("every key is in the list"))
        })
        .collect()
}

/// A category's position in `Category::ALL`.
fn category_index(category: lina_probe::Category) -> usize {
    lina_probe::Category::ALL
        .iter()
        .position(|&c| c == category)
        .unwrap_or_else(|| unreachable!("every category is in Category::ALL"))
}

/// Scores an image with both judges, given the checker's verdicts on it (an image of the
/// bootstrap's unit `prompt`, in category `category`).
fn score(
    (prompt, category): (usize, usize),
    verdicts: &[lina_probe::check::Verdict],
    image: &Image,
    csg: &lina_csg::Csg,
    judge: &Segmenter,
) -> Scored {
    let relations: Vec<_> = verdicts.iter().filter(|v| v.is_relation()).collect();
    let checker = Marks {
        relations_passed: relations.iter().filter(|v| v.passed).count(),
        relations: relations.len(),
        all: verdicts.iter().all(|v| v.passed),
    };
    let j = lina_judge::judge(judge, &image.rgb, image.width, image.height, csg);
    let relations: Vec<_> = j.verdicts.iter().filter(|v| v.relation).collect();
    Scored {
        prompt,
        category,
        checker,
        judge: Marks {
            relations_passed: relations.iter().filter(|v| v.passed).count(),
            relations: relations.len(),
            all: j.all_passed(),
        },
        wrecked: j.wrecked,
    }
}

/// A suite run's outcome: the checker's report, the images, what they cost, and each
/// image's marks from both judges.
pub(crate) struct SuiteOutcome {
    pub report: Report,
    pub images: Vec<Image>,
    pub cost: Cost,
    pub scored: Vec<Scored>,
}

/// Generates every prompt of `suite` with seeds 0..`seeds` under `choice` (with the
/// verifier-guided repair baseline at strength `repair`, 0 for none; from each scene's
/// rendered ground truth at img2img strength `from_truth`, where given), scores each image
/// with both judges; writes the images into `out` when given.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn run_suite(
    pipe: &StableDiffusion,
    name: &str,
    label: &str,
    suite: &Suite,
    seeds: u64,
    opts: &mut GenerateOptions,
    choice: &PlanChoice,
    repair: f64,
    from_truth: Option<f64>,
    out: Option<&Path>,
) -> Result<SuiteOutcome> {
    let judge = Segmenter::embedded();
    let mut report = Report::new(name, label);
    let mut images = Vec::new();
    let mut scored = Vec::new();
    let mut cost = Cost::default();
    let ids = suite.ids();
    let texts: Vec<_> = ids
        .iter()
        .map(|id| (id.category, id.scene().prompt))
        .collect();
    let units = text_units(&texts);
    let bar = common::bar(ids.len() as u64, "prompts");
    bar.set_message(label.to_string());
    for (prompt, id) in ids.iter().enumerate() {
        let scene = id.scene();
        // Set for every scene, so that no image starts from another run's truth.
        opts.init_image = from_truth.map(|_| scene.render().image);
        if let Some(strength) = from_truth {
            opts.strength = strength;
        }
        // As a user would run it: the graph comes from the prompt.
        let csg = lina_csg::parse::parse(&scene.prompt)?;
        let (plan, candidates) = match choice {
            PlanChoice::Fixed(plan) => (plan.clone(), 1),
            PlanChoice::Predicted(predictor) => {
                let suggested = predictor.suggest_for(pipe, &scene.prompt, &csg).await?;
                tracing::info!(prompt = %scene.prompt, candidate = %suggested.candidate, "predicted");
                (suggested.plan, 1)
            }
            PlanChoice::BestOfByChecker(n) => (Plan::default(), (*n).max(1)),
        };
        for seed in 0..seeds {
            opts.prompt = scene.prompt.clone();
            let started = std::time::Instant::now();
            let mut best: Option<(usize, Image)> = None;
            for candidate in 0..candidates {
                // Candidate 0 is the plain image of this seed; the others draw from seeds
                // no other image of the suite uses.
                opts.seed = seed + candidate * 1_000_000;
                let timesteps = intervene::timesteps(pipe, opts, &plan)?;
                let mut verifier = Repair::for_run(
                    &csg,
                    repair,
                    Repair::DEFAULT_WINDOW,
                    pipe.steps_run(opts, &timesteps)?,
                )?;
                let hook: &mut dyn StepHook = if repair == 0.0 {
                    &mut NoHook
                } else {
                    &mut verifier
                };
                let cancel = CancelToken::new();
                let (done, evaluations) = if plan.is_baseline() {
                    let done = pipe.generate(opts, hook, &cancel).await?;
                    let n = done.evaluations;
                    (done, n)
                } else {
                    let run = intervene::generate(pipe, opts, &csg, &plan, hook, &cancel).await?;
                    (run.generated, run.evaluations)
                };
                cost.evaluations += evaluations;
                let image = done.image;
                let passed = if candidates > 1 {
                    check(&image, &scene.csg)
                        .iter()
                        .filter(|v| v.passed)
                        .count()
                } else {
                    0
                };
                if best.as_ref().is_none_or(|(b, _)| passed > *b) {
                    best = Some((passed, image));
                }
            }
            let image = best.expect("at least one candidate").1;
            opts.seed = seed;
            cost.seconds += started.elapsed().as_secs_f64();
            cost.images += 1;
            let file = format!("{}_s{seed}.png", stem(id));
            if let Some(out) = out {
                write(&out.join(&file), &image.to_png()?)?;
            }
            let verdicts = check(&image, &scene.csg);
            scored.push(score(
                (units[prompt], category_index(id.category)),
                &verdicts,
                &image,
                &scene.csg,
                &judge,
            ));
            report.add(*id, &scene, seed, &file, verdicts);
            images.push(image);
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(SuiteOutcome {
        report,
        images,
        cost,
        scored,
    })
}
