//! The probe's commands: render suites with their masks, export training data, and run a
//! suite on a model with the checker's report.

use std::io::Write;
use std::path::{Path, PathBuf};

use lina::image::Image;
use lina::intervene::{self, Component, Plan};
use lina::pipeline::{CancelToken, GenerateOptions, NoHook, StableDiffusion};
use lina::probe::check::check;
use lina::probe::report::Report;
use lina::probe::{Category, SceneId, Split, Suite};
use lina::schedulers::{SchedulerKind, Timesteps};
use lina::source::DirSource;
use lina::{Error, Result};

use super::{flags, parse, unknown_option};

fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes).map_err(|e| Error::Io(format!("{}: {e}", path.display())))
}

fn create_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::Io(format!("{}: {e}", dir.display())))
}

fn required(value: Option<String>, flag: &str) -> Result<String> {
    value.ok_or_else(|| Error::InvalidInput(format!("{flag} is required\n{}", super::USAGE)))
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
pub fn render(args: &[String]) -> Result<()> {
    let (mut suite, mut count, mut broken, mut out) = (None, None, false, None);
    for (flag, value) in flags(args)? {
        match flag {
            "--suite" => suite = Some(value.to_string()),
            "--count" => count = Some(parse(flag, value)?),
            "--broken" => broken = parse(flag, value)?,
            "--out" => out = Some(value.to_string()),
            other => return Err(unknown_option(other)),
        }
    }
    let name = required(suite, "--suite")?;
    let mut suite = Suite::named(&name)?;
    if let Some(n) = count {
        suite.per_category = n;
    }
    let out = PathBuf::from(required(out, "--out")?);
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
pub fn data(args: &[String]) -> Result<()> {
    let (mut split, mut count, mut out) = (None, None, None);
    for (flag, value) in flags(args)? {
        match flag {
            "--split" => split = Some(value.to_string()),
            "--count" => count = Some(parse::<u64>(flag, value)?),
            "--out" => out = Some(value.to_string()),
            other => return Err(unknown_option(other)),
        }
    }
    let split = Suite::named(&required(split, "--split")?)?.split;
    let count = count.ok_or_else(|| Error::InvalidInput("--count is required".into()))?;
    let out = PathBuf::from(required(out, "--out")?);
    create_dir(&out)?;
    let open = |name: &str| {
        let path = out.join(name);
        std::fs::File::create(&path)
            .map(std::io::BufWriter::new)
            .map_err(|e| Error::Io(format!("{}: {e}", path.display())))
    };
    let (mut images, mut prompts) = (open("images.u8")?, open("prompts.jsonl")?);
    let io = |e: std::io::Error| Error::Io(format!("{}: {e}", out.display()));
    let n_cat = Category::ALL.len() as u64;
    for i in 0..count {
        let id = SceneId {
            split,
            category: Category::ALL[(i % n_cat) as usize],
            index: i / n_cat,
        };
        let scene = id.scene();
        images.write_all(&scene.render().image.rgb).map_err(io)?;
        let line = serde_json::json!({
            "prompt": scene.prompt, "category": id.category,
            "subcategory": scene.subcategory, "csg": scene.csg,
        });
        writeln!(prompts, "{line}").map_err(io)?;
    }
    images.flush().map_err(io)?;
    prompts.flush().map_err(io)?;
    println!("wrote {count} scenes to {}", out.display());
    Ok(())
}

/// The options `probe` and `lina-search` share: which model, which prompts, how many seeds,
/// the sampler's settings, where to write.
struct SuiteRun {
    model: Option<String>,
    suite: Option<String>,
    seeds: u64,
    count: Option<u64>,
    first: u64,
    opts: GenerateOptions,
    out: Option<String>,
}

impl SuiteRun {
    fn new(seeds: u64, opts: GenerateOptions) -> Self {
        Self {
            model: None,
            suite: None,
            seeds,
            count: None,
            first: 0,
            opts,
            out: None,
        }
    }

    /// Takes a shared option; false if `flag` is not one.
    fn take(&mut self, flag: &str, value: &str) -> Result<bool> {
        match flag {
            "--model" => self.model = Some(value.to_string()),
            "--suite" => self.suite = Some(value.to_string()),
            "--seeds" => self.seeds = parse(flag, value)?,
            "--count" => self.count = Some(parse(flag, value)?),
            "--first" => self.first = parse(flag, value)?,
            "--steps" => self.opts.timesteps = Timesteps::Count(parse(flag, value)?),
            "--guidance" => self.opts.guidance_scale = parse(flag, value)?,
            "--out" => self.out = Some(value.to_string()),
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// The model folder, the suite's name and the suite.
    fn resolve(&self) -> Result<(String, String, Suite)> {
        let model = required(self.model.clone(), "--model")?;
        let name = required(self.suite.clone(), "--suite")?;
        let suite = self.cut(Suite::named(&name)?);
        Ok((model, name, suite))
    }

    /// The suite's prompts from index `--first`, `--count` of them per category.
    fn cut(&self, mut suite: Suite) -> Suite {
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
pub fn run(args: &[String]) -> Result<()> {
    let mut run = SuiteRun::new(4, GenerateOptions::default());
    let mut plan = Plan::default();
    // `--plan predicted`: each prompt's plan from the model's learned predictor.
    let mut predicted = false;
    let mut device = "cpu".to_string();
    for (flag, value) in flags(args)? {
        if run.take(flag, value)? {
            continue;
        }
        match flag {
            "--scheduler" => run.opts.scheduler = Some(SchedulerKind::parse(value)?),
            "--device" => device = value.to_string(),
            "--plan" if value == "predicted" => predicted = true,
            "--plan" => plan = super::read_plan(value)?,
            other => return Err(unknown_option(other)),
        }
    }
    let (model, name, suite) = run.resolve()?;
    let (seeds, mut opts, out) = (run.seeds, run.opts, run.out);
    if suite.split == Split::Train {
        eprintln!("note: the train suite measures fit, not generalisation");
    }
    let out = PathBuf::from(required(out, "--out")?);
    create_dir(&out)?;
    pollster::block_on(async {
        let device = lina::device::by_name(&device).await?;
        let pipe = StableDiffusion::load(&DirSource::new(&model), &device)?;
        if pipe.native_size() != lina::probe::SIZE {
            return Err(Error::InvalidInput(format!(
                "the probe's checker judges {0}x{0} images; this model draws {1}x{1}",
                lina::probe::SIZE,
                pipe.native_size()
            )));
        }
        if predicted && pipe.predictor().is_none() {
            return Err(Error::InvalidInput(format!(
                "--plan predicted: {model} has no {}",
                intervene::predict::FILE
            )));
        }
        let label = if predicted {
            format!("{model} + LINA, plan per prompt from its predictor")
        } else if plan.is_baseline() {
            model.clone()
        } else {
            format!(
                "{model} + LINA {}",
                serde_json::to_string(&plan).expect("a plan serialises")
            )
        };
        let choice = if predicted {
            PlanChoice::Predicted
        } else {
            PlanChoice::Fixed(plan)
        };
        let (report, images, _) = run_suite(
            &pipe,
            &name,
            &label,
            &suite,
            seeds,
            &mut opts,
            &choice,
            Some(&out),
        )
        .await?;
        write_report(&out, &report, &images)
    })
}

/// A fixed plan, or each prompt's plan from the model's learned predictor.
enum PlanChoice {
    Fixed(Plan),
    Predicted,
}

/// What a suite's images cost, summed over them.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
struct Cost {
    images: usize,
    /// UNet evaluations (batch rows), reading the layout included.
    evaluations: usize,
    seconds: f64,
}

impl Cost {
    fn per_image(&self) -> (f64, f64) {
        let n = self.images.max(1) as f64;
        (self.evaluations as f64 / n, self.seconds / n)
    }
}

/// Generates every prompt of `suite` with seeds 0..`seeds` under `choice`, checks each
/// image against the scene's CSG; writes the images into `out` when given.
#[allow(clippy::too_many_arguments)]
async fn run_suite(
    pipe: &StableDiffusion,
    name: &str,
    label: &str,
    suite: &Suite,
    seeds: u64,
    opts: &mut GenerateOptions,
    choice: &PlanChoice,
    out: Option<&Path>,
) -> Result<(Report, Vec<Image>, Cost)> {
    let mut report = Report::new(name, label);
    let mut images = Vec::new();
    let mut cost = Cost::default();
    let ids = suite.ids();
    for (i, id) in ids.iter().enumerate() {
        let scene = id.scene();
        // As a user would run it: the graph comes from the prompt.
        let csg = lina::csg::parse::parse(&scene.prompt)?;
        let plan = match choice {
            PlanChoice::Fixed(plan) => plan.clone(),
            PlanChoice::Predicted => {
                intervene::predict::suggest(pipe, &scene.prompt, &csg)
                    .await?
                    .ok_or_else(|| {
                        Error::InvalidInput(format!(
                            "--plan predicted: the model has no {}",
                            intervene::predict::FILE
                        ))
                    })?
                    .plan
            }
        };
        for seed in 0..seeds {
            opts.prompt = scene.prompt.clone();
            opts.seed = seed;
            let started = std::time::Instant::now();
            let (done, evaluations) = if plan.is_baseline() {
                let done = pipe
                    .generate(opts, &mut NoHook, &CancelToken::new())
                    .await?;
                let n = done.evaluations;
                (done, n)
            } else {
                let cancel = CancelToken::new();
                let run =
                    intervene::generate(pipe, opts, &csg, &plan, &mut NoHook, &cancel).await?;
                (run.generated, run.evaluations)
            };
            cost.seconds += started.elapsed().as_secs_f64();
            cost.evaluations += evaluations;
            cost.images += 1;
            let file = format!("{}_s{seed}.png", stem(id));
            if let Some(out) = out {
                write(&out.join(&file), &done.image.to_png()?)?;
            }
            let verdicts = check(&done.image, &scene.csg);
            report.add(*id, &scene, seed, &file, verdicts);
            images.push(done.image);
        }
        eprint!("\r{}/{} prompts", i + 1, ids.len());
    }
    eprintln!();
    Ok((report, images, cost))
}

/// One row of the evaluation: a plan on a suite.
#[derive(serde::Serialize)]
struct Evaluated {
    suite: String,
    variant: String,
    plan: Plan,
    all_checks: lina::probe::report::Tally,
    relations: lina::probe::report::Tally,
    images: lina::probe::report::Tally,
    cost: Cost,
}

/// `eval --model DIR [--suites ood,id] [--count N] [--first I] [--seeds N] [--steps N] [--guidance G]
/// [--plan P] [--variants baseline,full,..] --out DIR`: LINA's ablation. On the first suite:
/// the baseline, the full plan, each component alone and each removed, and the plan with each
/// component it leaves off added; on the others: the baseline and the full plan (the
/// in-distribution change). Pass rates with 95% intervals, and the cost per image (UNet
/// evaluations, wall time), each against the baseline.
pub fn eval(args: &[String]) -> Result<()> {
    let guided = GenerateOptions {
        guidance_scale: 3.0,
        ..GenerateOptions::default()
    };
    let mut run = SuiteRun::new(4, guided);
    run.suite = Some("ood,id".to_string());
    let mut full = Plan::lina();
    let mut wanted: Option<Vec<String>> = None;
    for (flag, value) in flags(args)? {
        if run.take(flag, value)? {
            continue;
        }
        match flag {
            "--suites" => run.suite = Some(value.to_string()),
            "--variants" => wanted = Some(value.split(',').map(|v| v.trim().to_string()).collect()),
            "--plan" => full = super::read_plan(value)?,
            other => return Err(unknown_option(other)),
        }
    }
    if full.is_baseline() {
        return Err(Error::InvalidInput(
            "eval: --plan must turn on at least one intervention".into(),
        ));
    }
    if run.seeds < 4 {
        eprintln!("note: fewer than 4 seeds per prompt; the intervals will be wide");
    }
    let model = required(run.model.clone(), "--model")?;
    let out = PathBuf::from(required(run.out.clone(), "--out")?);
    create_dir(&out)?;
    let names: Vec<String> = run
        .suite
        .clone()
        .unwrap_or_default()
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    let mut suites = Vec::new();
    for name in &names {
        suites.push(run.cut(Suite::named(name)?));
    }
    if suites.is_empty() {
        return Err(Error::InvalidInput("eval: --suites names no suite".into()));
    }
    let mut variants = vec![
        ("baseline".to_string(), Plan::default()),
        ("full".to_string(), full.clone()),
    ];
    let used: Vec<_> = Component::ALL
        .into_iter()
        .filter(|&c| full.uses(c))
        .collect();
    if used.len() > 1 {
        for &c in &used {
            variants.push((format!("{} alone", c.name()), full.only(c)));
        }
        for &c in &used {
            let name = format!("without {}", c.name());
            let plan = full.without(c);
            // With two components on, one alone is the other removed: one row for both.
            match variants.iter_mut().find(|(_, p)| *p == plan) {
                Some((seen, _)) => *seen = format!("{seen} = {name}"),
                None => variants.push((name, plan)),
            }
        }
    }
    // What the plan leaves off (the default: the region terms and the schedule), a row
    // each shows what adding it does.
    for c in Component::ALL.into_iter().filter(|&c| !full.uses(c)) {
        variants.push((format!("with {}", c.name()), full.with(c)));
    }
    if let Some(wanted) = &wanted {
        if let Some(unknown) = wanted
            .iter()
            .find(|w| !variants.iter().any(|(n, _)| n == *w))
        {
            let known: Vec<&str> = variants.iter().map(|(n, _)| n.as_str()).collect();
            return Err(Error::InvalidInput(format!(
                "--variants: no variant \"{unknown}\" (there are: {})",
                known.join(", ")
            )));
        }
        if !wanted.iter().any(|w| w == "baseline") {
            return Err(Error::InvalidInput(
                "--variants must include baseline: every row is compared with it".into(),
            ));
        }
        variants.retain(|(n, _)| wanted.contains(n));
    }
    let mut opts = run.opts.clone();
    pollster::block_on(async {
        let pipe = StableDiffusion::load(&DirSource::new(&model), &lina::device::cpu())?;
        let mut rows = Vec::new();
        for (k, (name, suite)) in names.iter().zip(&suites).enumerate() {
            let these = if k == 0 {
                &variants[..]
            } else {
                &variants[..2]
            };
            for (variant, plan) in these {
                let label = format!("{name} {variant}");
                eprintln!("{label}");
                let choice = PlanChoice::Fixed(plan.clone());
                let (report, _, cost) = run_suite(
                    &pipe, name, &label, suite, run.seeds, &mut opts, &choice, None,
                )
                .await?;
                let dir = out.join(format!("{name}-{}", variant.replace(' ', "-")));
                create_dir(&dir)?;
                write(&dir.join("report.md"), report.to_markdown().as_bytes())?;
                rows.push(Evaluated {
                    suite: name.clone(),
                    variant: variant.clone(),
                    plan: plan.clone(),
                    all_checks: report.overall,
                    relations: report.relations,
                    images: report.images_all_passed,
                    cost,
                });
            }
        }
        let (first, n) = (suites[0].first, suites[0].per_category);
        let settings = format!(
            "{model}, prompts {first}-{} of each category, seeds 0-{}, {:?}, guidance {}",
            first + n - 1,
            run.seeds - 1,
            opts.timesteps,
            opts.guidance_scale
        );
        let md = ablation_table(&rows, &settings);
        write(&out.join("eval.md"), md.as_bytes())?;
        let json = serde_json::to_string_pretty(&rows).expect("rows serialise");
        write(&out.join("eval.json"), json.as_bytes())?;
        println!("{md}");
        println!("wrote {}", out.join("eval.md").display());
        Ok(())
    })
}

/// The evaluation as Markdown: per suite, each variant's pass rates with 95% intervals and
/// their change from the baseline, and the cost relative to the baseline.
fn ablation_table(rows: &[Evaluated], settings: &str) -> String {
    use lina::probe::report::Tally;
    let cell = |t: &Tally, base: &Tally| {
        let (lo, hi) = t.interval();
        let delta = 100.0 * (t.rate() - base.rate());
        format!(
            "{:.1}% ({:.1}–{:.1}) {:+.1}",
            100.0 * t.rate(),
            100.0 * lo,
            100.0 * hi,
            delta
        )
    };
    let mut md = format!(
        "LINA evaluation: {settings}.\nEach cell: pass rate (95% Wilson interval) and change from the baseline in points.\n"
    );
    let mut suites: Vec<&str> = rows.iter().map(|r| r.suite.as_str()).collect();
    suites.dedup();
    for suite in suites {
        let these: Vec<&Evaluated> = rows.iter().filter(|r| r.suite == suite).collect();
        let base = these[0];
        let (base_evals, base_secs) = base.cost.per_image();
        md += &format!(
            "\n### `{suite}` ({} images per row)\n\n| variant | all checks | relations | images with every check passed | UNet evaluations per image | wall time per image |\n| --- | --- | --- | --- | --- | --- |\n",
            base.cost.images
        );
        for r in these {
            let (evals, secs) = r.cost.per_image();
            md += &format!(
                "| {} | {} | {} | {} | {:.1} ({:.2}x) | {:.0} ms ({:.2}x) |\n",
                r.variant,
                cell(&r.all_checks, &base.all_checks),
                cell(&r.relations, &base.relations),
                cell(&r.images, &base.images),
                evals,
                evals / base_evals.max(1e-9),
                1000.0 * secs,
                secs / base_secs.max(1e-9)
            );
        }
    }
    md
}

/// One training prompt of a settings search: its features and each candidate's score.
#[derive(serde::Serialize, serde::Deserialize)]
struct Searched {
    prompt: String,
    features: Vec<f64>,
    /// Per candidate, in the search's order: the share of the checker's checks that passed,
    /// over all seeds.
    scores: Vec<f64>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Search {
    suite: String,
    seeds: u64,
    settings: String,
    features: Vec<String>,
    candidates: Vec<(String, Plan)>,
    prompts: Vec<Searched>,
}

/// `lina-search --model DIR --suite train [--count N] [--first I] [--seeds N] [--steps N] [--guidance G]
/// --out SEARCH.json`: every candidate plan on every prompt of the suite, scored by the checker.
pub fn search(args: &[String]) -> Result<()> {
    let guided = GenerateOptions {
        guidance_scale: 3.0,
        ..GenerateOptions::default()
    };
    let mut run = SuiteRun::new(2, guided);
    for (flag, value) in flags(args)? {
        if !run.take(flag, value)? {
            return Err(unknown_option(flag));
        }
    }
    let (model, name, suite) = run.resolve()?;
    let out = required(run.out, "--out")?;
    let (seeds, mut opts) = (run.seeds, run.opts);
    let candidates = intervene::predict::candidates();
    pollster::block_on(async {
        let pipe = StableDiffusion::load(&DirSource::new(&model), &lina::device::cpu())?;
        let ids = suite.ids();
        let mut prompts = Vec::new();
        for (i, id) in ids.iter().enumerate() {
            let scene = id.scene();
            let csg = lina::csg::parse::parse(&scene.prompt)?;
            let features = intervene::predict::features(&pipe, &scene.prompt, &csg).await?;
            let mut scores = Vec::new();
            for (_, plan) in &candidates {
                let (mut passed, mut total) = (0usize, 0usize);
                for seed in 0..seeds {
                    opts.prompt = scene.prompt.clone();
                    opts.seed = seed;
                    let image = intervene::generate(
                        &pipe,
                        &opts,
                        &csg,
                        plan,
                        &mut NoHook,
                        &CancelToken::new(),
                    )
                    .await?
                    .generated
                    .image;
                    let verdicts = check(&image, &scene.csg);
                    passed += verdicts.iter().filter(|v| v.passed).count();
                    total += verdicts.len();
                }
                scores.push(passed as f64 / total.max(1) as f64);
            }
            prompts.push(Searched {
                prompt: scene.prompt.clone(),
                features,
                scores,
            });
            eprint!("\r{}/{} prompts", i + 1, ids.len());
        }
        eprintln!();
        let search = Search {
            suite: name,
            seeds,
            settings: format!(
                "{:?} steps, guidance {}",
                opts.timesteps, opts.guidance_scale
            ),
            features: intervene::predict::FEATURES
                .iter()
                .map(|f| f.to_string())
                .collect(),
            candidates,
            prompts,
        };
        let json = serde_json::to_string_pretty(&search).expect("a search serialises");
        write(Path::new(&out), json.as_bytes())?;
        println!("wrote {out}: {} prompts", search.prompts.len());
        Ok(())
    })
}

/// `lina-fit --search SEARCH.json [--lambda L] --out lina_predictor.json`: one ridge
/// regression per candidate, from the prompts' features to the candidate's score.
pub fn fit(args: &[String]) -> Result<()> {
    let (mut search, mut lambda, mut out) = (None, 1.0f64, None);
    for (flag, value) in flags(args)? {
        match flag {
            "--search" => search = Some(value.to_string()),
            "--lambda" => lambda = parse(flag, value)?,
            "--out" => out = Some(value.to_string()),
            other => return Err(unknown_option(other)),
        }
    }
    let path = required(search, "--search")?;
    let out = required(out, "--out")?;
    let text = std::fs::read_to_string(&path).map_err(|e| Error::Io(format!("{path}: {e}")))?;
    let search: Search =
        serde_json::from_str(&text).map_err(|e| Error::InvalidInput(format!("{path}: {e}")))?;
    let x: Vec<Vec<f64>> = search.prompts.iter().map(|p| p.features.clone()).collect();
    let mut candidates = Vec::new();
    for (k, (name, plan)) in search.candidates.iter().enumerate() {
        let y: Vec<f64> = search.prompts.iter().map(|p| p.scores[k]).collect();
        let weights = intervene::predict::ridge(&x, &y, lambda)?;
        candidates.push(intervene::predict::Candidate {
            name: name.clone(),
            plan: plan.clone(),
            weights,
        });
    }
    let predictor = intervene::predict::Predictor {
        version: 1,
        features: search.features,
        candidates,
        trained: format!(
            "ridge (lambda {lambda}) on {} prompts of the {} suite, {} seeds each, {}",
            search.prompts.len(),
            search.suite,
            search.seeds,
            search.settings
        ),
    };
    // Read back through the loader's own checks before it is written.
    let json = predictor.to_json();
    intervene::predict::Predictor::from_json(&json)?;
    write(Path::new(&out), json.as_bytes())?;
    // How well the choice fits the search: the chosen candidate's true score against the
    // best fixed candidate's.
    let chosen: f64 = search
        .prompts
        .iter()
        .map(|p| {
            let s = predictor.suggest(&p.features);
            let k = predictor
                .candidates
                .iter()
                .position(|c| c.name == s.candidate)
                .unwrap();
            p.scores[k]
        })
        .sum::<f64>()
        / search.prompts.len().max(1) as f64;
    for (k, (name, _)) in search.candidates.iter().enumerate() {
        let mean = search.prompts.iter().map(|p| p.scores[k]).sum::<f64>()
            / search.prompts.len().max(1) as f64;
        println!("{name:>12}: {:.1}% of checks pass", 100.0 * mean);
    }
    println!(
        "   predicted: {:.1}% (on the prompts it was fitted to)",
        100.0 * chosen
    );
    println!("wrote {out}");
    Ok(())
}
