//! `eval`: LINA's evaluation under two judges, with the honest baselines.
//!
//! Every image is scored by the probe's checker and by the second judge (`lina_judge`, a
//! learned segmenter with its own checks; the two share no code). Rows: plain sampling;
//! LINA's full plan, each mechanism alone and removed, and each one the plan leaves off
//! added; the model's predictor choosing each prompt's plan; best-of-N by the checker at
//! LINA's cost or more (a verifier baseline); the verifier-guided repair (a checker in the
//! loop); and, on request, a ceiling: plain sampling from each scene's rendered ground truth
//! (`--from-truth`). Columns: relations and whole images under each judge, each as a rate
//! with its paired bootstrap interval of the change from plain sampling (resampling prompt
//! texts within each category, as the suite draws them), the frames the second judge calls
//! wrecked, and the cost per image. `eval-table` renders the tables again from a run's saved
//! scores (`eval.json`), generating nothing.

use std::collections::BTreeMap;
use std::path::PathBuf;

use lina::predict::Predictor;
use lina::{Component, Plan};
use lina_probe::Suite;
use lina_probe::repair::Repair;
use lina_runtime::pipeline::StableDiffusion;
use lina_runtime::rng::Rng;
use lina_runtime::source::DirSource;
use lina_runtime::{Error, Result};

use crate::common::{self, create_dir, write};
use crate::probe::{Cost, Marks, PlanChoice, Scored, SuiteArgs, SuiteRun, run_suite};

#[derive(clap::Args)]
pub struct EvalArgs {
    #[command(flatten)]
    run: SuiteArgs,
    /// Suites, the first with every row, the others with plain sampling, the full plan and
    /// the predictor.
    #[arg(long, default_value = "ood,id")]
    suites: String,
    /// The full plan.
    #[arg(long, default_value = "lina", value_parser = common::plan)]
    plan: Plan,
    /// Only these rows (baseline must be one).
    #[arg(long, value_delimiter = ',')]
    variants: Option<Vec<String>>,
    /// Best-of-N's N (default: the full plan's cost in wall time over plain sampling's,
    /// rounded up, at least 2).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    best_of: Option<u64>,
    /// Bootstrap resamples for the intervals.
    #[arg(long, default_value_t = 2000, value_parser = common::positive)]
    resamples: usize,
    /// Add a "from truth at S" row for each of these img2img strengths (comma-separated): a
    /// ceiling rather than a baseline, plain sampling started from each scene's rendered ground
    /// truth (`probe --from-truth`). It reads the answer; it shows how much of it the model's
    /// prior lets through. `--variants` selects them all as "from truth".
    #[arg(long, value_parser = common::strength, value_delimiter = ',')]
    from_truth: Vec<f64>,
}

/// One row: how its images were made.
#[derive(Clone)]
enum Row {
    Plan(Plan),
    Predicted,
    BestOf,
    Repair,
    /// Plain sampling from the rendered ground truth at this strength.
    Truth(f64),
}

/// One row's outcome on one suite.
#[derive(serde::Serialize, serde::Deserialize)]
struct Evaluated {
    suite: String,
    variant: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    plan: Option<Plan>,
    cost: Cost,
    scored: Vec<Scored>,
}

/// `eval --model DIR [--suites ood,id] [--count N] [--first I] [--seeds N] [--steps N]
/// [--guidance G] [--plan P] [--variants baseline,full,..] [--best-of N] --out DIR`.
pub fn eval(args: EvalArgs) -> Result<()> {
    let EvalArgs {
        run,
        suites,
        plan: full,
        variants: wanted,
        best_of,
        resamples,
        from_truth,
    } = args;
    let run = SuiteRun::new(run, 4, 3.0);
    if full.is_baseline() {
        return Err(Error::InvalidInput(
            "eval: --plan must turn on at least one intervention".into(),
        ));
    }
    if run.seeds < 4 {
        tracing::warn!("fewer than 4 seeds per prompt; the intervals will be wide");
    }
    let names: Vec<String> = suites
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
    let mut rows = rows(&full);
    for strength in from_truth {
        rows.push((format!("from truth at {strength}"), Row::Truth(strength)));
    }
    // "from truth" names every strength's row.
    let selects = |wanted: &str, row: &str| {
        row == wanted || (wanted == "from truth" && row.starts_with("from truth at "))
    };
    if let Some(wanted) = &wanted {
        if let Some(unknown) = wanted
            .iter()
            .find(|w| !rows.iter().any(|(n, _)| selects(w, n)))
        {
            let known: Vec<&str> = rows.iter().map(|(n, _)| n.as_str()).collect();
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
        rows.retain(|(n, _)| wanted.iter().any(|w| selects(w, n)));
    }
    let (model, out) = (run.model.clone(), run.out.clone());
    create_dir(&out)?;
    let mut opts = run.opts.clone();
    pollster::block_on(async {
        let pipe = StableDiffusion::load(&DirSource::new(&model), &lina_runtime::device::cpu())?;
        let predictor = Predictor::load(&DirSource::new(&model))?;
        let mut done: Vec<Evaluated> = Vec::new();
        for (k, (name, suite)) in names.iter().zip(&suites).enumerate() {
            for (variant, row) in &rows {
                // The second and later suites: plain sampling, the full plan and the
                // predictor's choice (what a user gets by default) only, and the ceiling
                // from the truth where it was asked for.
                let first_only = !matches!(row, Row::Truth(_))
                    && !matches!(variant.as_str(), "baseline" | "full" | "predicted");
                if k > 0 && first_only {
                    continue;
                }
                // Each row's images: how they are chosen, the verifier repair's strength (0
                // for none), and the strength they start from the truth at, if they do.
                let (choice, repair, truth) = match row {
                    Row::Plan(plan) => (PlanChoice::Fixed(plan.clone()), 0.0, None),
                    Row::Truth(s) => (PlanChoice::Fixed(Plan::default()), 0.0, Some(*s)),
                    Row::Predicted => match &predictor {
                        Some(p) => (PlanChoice::Predicted(p.clone()), 0.0, None),
                        None => {
                            tracing::warn!("{model} has no predictor: no predicted row");
                            continue;
                        }
                    },
                    Row::BestOf => {
                        let n = best_of.unwrap_or_else(|| equal_cost(&done, name));
                        (PlanChoice::BestOfByChecker(n), 0.0, None)
                    }
                    Row::Repair => (
                        PlanChoice::Fixed(Plan::default()),
                        Repair::DEFAULT_STRENGTH,
                        None,
                    ),
                };
                let label = match &choice {
                    PlanChoice::BestOfByChecker(n) => format!("{name} best-of-{n} by checker"),
                    _ => format!("{name} {variant}"),
                };
                tracing::info!("{label}");
                let outcome = run_suite(
                    &pipe, name, &label, suite, run.seeds, &mut opts, &choice, repair, truth, None,
                )
                .await?;
                let dir = out.join(format!("{name}-{}", variant.replace(' ', "-")));
                create_dir(&dir)?;
                write(
                    &dir.join("report.md"),
                    outcome.report.to_markdown().as_bytes(),
                )?;
                done.push(Evaluated {
                    suite: name.clone(),
                    variant: match (&choice, row) {
                        (PlanChoice::BestOfByChecker(n), _) => format!("best-of-{n} by checker"),
                        (_, Row::Truth(_)) => format!("{variant} (reads the answer)"),
                        _ => variant.clone(),
                    },
                    plan: match row {
                        Row::Plan(p) => Some(p.clone()),
                        _ => None,
                    },
                    cost: outcome.cost,
                    scored: outcome.scored,
                });
                // Saved after every row, so that a run stopped part way keeps what it made
                // (`eval-table` renders the rows done).
                save_scores(&out, &done)?;
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
        let md = table(&done, &settings, resamples);
        write(&out.join("eval.md"), md.as_bytes())?;
        println!("{md}");
        println!("wrote {}", out.join("eval.md").display());
        Ok(())
    })
}

/// Every row's scores so far, as `eval.json` in `out`.
fn save_scores(out: &std::path::Path, done: &[Evaluated]) -> Result<()> {
    let json = serde_json::to_string_pretty(done).expect("rows serialise");
    write(&out.join("eval.json"), json.as_bytes())
}

#[derive(clap::Args)]
pub struct TableArgs {
    /// An evaluation's saved scores: the `eval.json` that `eval` wrote.
    #[arg(long)]
    scores: PathBuf,
    /// Bootstrap resamples for the intervals.
    #[arg(long, default_value_t = 2000, value_parser = common::positive)]
    resamples: usize,
}

/// `eval-table --scores DIR/eval.json [--resamples N]`: the evaluation's tables, rendered
/// again from its saved scores (after a change in how they are rendered), on standard output.
pub fn eval_table(args: TableArgs) -> Result<()> {
    let text = std::fs::read_to_string(&args.scores)
        .map_err(|e| Error::InvalidInput(format!("eval-table: {}: {e}", args.scores.display())))?;
    let done: Vec<Evaluated> = serde_json::from_str(&text).map_err(|e| {
        Error::InvalidInput(format!(
            "eval-table: {} is not an evaluation's scores: {e}",
            args.scores.display()
        ))
    })?;
    if !done.iter().any(|r| r.variant == "baseline") {
        return Err(Error::InvalidInput(format!(
            "eval-table: {} has no baseline row to compare with",
            args.scores.display()
        )));
    }
    paired(&done)
        .map_err(|e| Error::InvalidInput(format!("eval-table: {}: {e}", args.scores.display())))?;
    let settings = format!("the scores in {}", args.scores.display());
    println!("{}", table(&done, &settings, args.resamples));
    Ok(())
}

/// Whether every row scored its suite's baseline's images: the same prompts of the same
/// categories, as many times each. The intervals pair each row's images with the
/// baseline's by prompt, so a file merged by hand from other runs must keep that.
fn paired(rows: &[Evaluated]) -> std::result::Result<(), String> {
    let units = |r: &Evaluated| {
        let mut u: Vec<(usize, usize)> = r.scored.iter().map(|s| (s.category, s.prompt)).collect();
        u.sort_unstable();
        u
    };
    for row in rows {
        let base = rows
            .iter()
            .find(|b| b.suite == row.suite && b.variant == "baseline")
            .ok_or_else(|| format!("suite {} has no baseline row", row.suite))?;
        if units(row) != units(base) {
            return Err(format!(
                "row \"{}\" of suite {} scored other prompts than its baseline row",
                row.variant, row.suite
            ));
        }
    }
    Ok(())
}

/// The rows, in order: plain sampling, the full plan, each component alone and removed, each
/// one the plan leaves off added, the predictor, and the two verifier baselines.
fn rows(full: &Plan) -> Vec<(String, Row)> {
    let mut plans = vec![
        ("baseline".to_string(), Plan::default()),
        ("full".to_string(), full.clone()),
    ];
    let used: Vec<_> = Component::ALL
        .into_iter()
        .filter(|&c| full.uses(c))
        .collect();
    if used.len() > 1 {
        for &c in &used {
            plans.push((format!("{} alone", c.name()), full.only(c)));
        }
        for &c in &used {
            let name = format!("without {}", c.name());
            let plan = full.without(c);
            // With two components on, one alone is the other removed: one row for both.
            match plans.iter_mut().find(|(_, p)| *p == plan) {
                Some((seen, _)) => *seen = format!("{seen} = {name}"),
                None => plans.push((name, plan)),
            }
        }
    }
    for c in Component::ALL.into_iter().filter(|&c| !full.uses(c)) {
        plans.push((format!("with {}", c.name()), full.with(c)));
    }
    let mut rows: Vec<(String, Row)> = plans.into_iter().map(|(n, p)| (n, Row::Plan(p))).collect();
    rows.push(("predicted".into(), Row::Predicted));
    rows.push(("best-of-N by checker".into(), Row::BestOf));
    rows.push(("verifier repair".into(), Row::Repair));
    rows
}

/// Best-of-N at the full plan's cost: its wall time over plain sampling's on this suite,
/// rounded up, and at least 2 (best-of-1 is plain sampling).
fn equal_cost(done: &[Evaluated], suite: &str) -> u64 {
    let per_image = |variant: &str| {
        done.iter()
            .find(|r| r.suite == suite && r.variant == variant)
            .map(|r| r.cost.per_image().1)
    };
    match (per_image("baseline"), per_image("full")) {
        (Some(base), Some(full)) if base > 0.0 => ((full / base).ceil() as u64).max(2),
        _ => 2,
    }
}

/// A rate over images: passed relations over relations, or images with every check passed.
fn rate(scored: &[Scored], marks: fn(&Scored) -> (usize, usize)) -> f64 {
    let (p, t) = scored
        .iter()
        .map(marks)
        .fold((0, 0), |(a, b), (p, t)| (a + p, b + t));
    p as f64 / t.max(1) as f64
}

fn relations(m: Marks) -> (usize, usize) {
    (m.relations_passed, m.relations)
}

fn whole(m: Marks) -> (usize, usize) {
    (usize::from(m.all), 1)
}

/// The 95% interval of `rate(row) - rate(base)`, paired by prompt and stratified by
/// category. Each resample draws, within each category, as many of its prompts as it has,
/// with replacement, takes every image of a drawn prompt from both rows (the same prompts
/// and seeds), and weighs each category's change by the category's share of the checks
/// the suite asked. So the interval reflects which prompts were asked, not only each image's
/// luck; and not how many prompts and checks each category holds, which the suite fixes by
/// design: a draw across categories would let a resample hold twice the shadow prompts and
/// none of the jars, a variance the suite does not have. A prompt here is a
/// [`Scored::prompt`] unit: the copies of a text the suite repeats are one observation,
/// drawn together.
fn paired_interval(
    base: &[Scored],
    row: &[Scored],
    marks: fn(&Scored) -> (usize, usize),
    resamples: usize,
) -> (f64, f64) {
    let prompts = base.iter().map(|s| s.prompt).max().map_or(0, |m| m + 1);
    let mut strata: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for s in base {
        let stratum = strata.entry(s.category).or_default();
        if !stratum.contains(&s.prompt) {
            stratum.push(s.prompt);
        }
    }
    let per_prompt = |scored: &[Scored]| {
        let mut sums = vec![(0usize, 0usize); prompts];
        for s in scored {
            let (p, t) = marks(s);
            sums[s.prompt].0 += p;
            sums[s.prompt].1 += t;
        }
        sums
    };
    let (a, b) = (per_prompt(base), per_prompt(row));
    // Each category's share of the checks asked, as the suite drew them.
    let checks: Vec<usize> = strata
        .values()
        .map(|units| units.iter().map(|&i| a[i].1).sum())
        .collect();
    let total = checks.iter().sum::<usize>().max(1) as f64;
    let mut rng = Rng::new(0x0b00_7570);
    let mut deltas: Vec<f64> = (0..resamples)
        .map(|_| {
            let mut delta = 0.0;
            for (units, &asked) in strata.values().zip(&checks) {
                let (mut pa, mut ta, mut pb, mut tb) = (0, 0, 0, 0);
                for _ in 0..units.len() {
                    let i = units[(rng.next_u64() % units.len() as u64) as usize];
                    pa += a[i].0;
                    ta += a[i].1;
                    pb += b[i].0;
                    tb += b[i].1;
                }
                let change = pb as f64 / tb.max(1) as f64 - pa as f64 / ta.max(1) as f64;
                delta += asked as f64 / total * change;
            }
            delta
        })
        .collect();
    deltas.sort_by(f64::total_cmp);
    let at = |q: f64| deltas[((q * resamples as f64) as usize).min(resamples - 1)];
    (at(0.025), at(0.975))
}

/// The evaluation as Markdown: per suite, a table of every row under both judges.
fn table(rows: &[Evaluated], settings: &str, resamples: usize) -> String {
    let mut md = format!(
        "LINA evaluation: {settings}.\n\nTwo judges that share no code: the probe's checker \
         (`lina_probe::check`) and the second judge (`lina_judge`: a learned segmenter with \
         its own checks). Each cell: the rate, and its change from plain sampling in points \
         with the 95% paired bootstrap interval ({resamples} resamples of the prompts' texts, \
         drawn within each category). Wrecked: frames in which the second judge finds no valid \
         scene.\n"
    );
    let mut suites: Vec<&str> = rows.iter().map(|r| r.suite.as_str()).collect();
    suites.dedup();
    for suite in suites {
        let these: Vec<&Evaluated> = rows.iter().filter(|r| r.suite == suite).collect();
        let base = these[0];
        let (base_evals, base_secs) = base.cost.per_image();
        md += &format!(
            "\n### `{suite}` ({} images per row)\n\n| row | relations: checker | relations: second judge | whole images: checker | whole images: second judge | wrecked | UNet evaluations per image | wall time per image |\n| --- | --- | --- | --- | --- | --- | --- | --- |\n",
            base.cost.images
        );
        let cell = |r: &Evaluated, marks: fn(&Scored) -> (usize, usize)| {
            let value = rate(&r.scored, marks);
            if std::ptr::eq(r, base) {
                return format!("{:.1}%", 100.0 * value);
            }
            let delta = value - rate(&base.scored, marks);
            let (lo, hi) = paired_interval(&base.scored, &r.scored, marks, resamples);
            format!(
                "{:.1}% {:+.1} ({:+.1}…{:+.1})",
                100.0 * value,
                100.0 * delta,
                100.0 * lo,
                100.0 * hi
            )
        };
        for r in &these {
            let (evals, secs) = r.cost.per_image();
            let wrecked = r.scored.iter().filter(|s| s.wrecked).count();
            md += &format!(
                "| {} | {} | {} | {} | {} | {wrecked} | {:.1} ({:.2}x) | {:.0} ms ({:.2}x) |\n",
                r.variant,
                cell(r, |s| relations(s.checker)),
                cell(r, |s| relations(s.judge)),
                cell(r, |s| whole(s.checker)),
                cell(r, |s| whole(s.judge)),
                evals,
                evals / base_evals.max(1e-9),
                1000.0 * secs,
                secs / base_secs.max(1e-9)
            );
        }
        // How often the judges agree on an image's relations (all passed, or not).
        let all: Vec<&Scored> = these.iter().flat_map(|r| &r.scored).collect();
        let agree = all
            .iter()
            .filter(|s| {
                let c = s.checker.relations_passed == s.checker.relations;
                let j = s.judge.relations_passed == s.judge.relations;
                c == j
            })
            .count();
        md += &format!(
            "\nThe judges agree on whether all of an image's relations hold for {agree} of {} images ({:.1}%).\n",
            all.len(),
            100.0 * agree as f64 / all.len().max(1) as f64
        );
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scored(prompt: usize, passed: usize, of: usize) -> Scored {
        let marks = Marks {
            relations_passed: passed,
            relations: of,
            all: passed == of,
        };
        Scored {
            prompt,
            category: 0,
            checker: marks,
            judge: marks,
            wrecked: false,
        }
    }

    /// Two categories whose prompts each gain alike (every relation in one, none in the
    /// other): whichever prompts a resample draws within each category, the change is the
    /// same, so the interval is a point. Drawn across categories, it would be wide.
    #[test]
    fn the_interval_resamples_prompts_within_each_category() {
        let in_category = |s: Scored, category| Scored { category, ..s };
        let base: Vec<Scored> = (0..10)
            .map(|p| in_category(scored(p, 0, 2), p / 5))
            .collect();
        let row: Vec<Scored> = (0..10)
            .map(|p| in_category(scored(p, if p < 5 { 2 } else { 0 }, 2), p / 5))
            .collect();
        let (lo, hi) = paired_interval(&base, &row, |s| relations(s.checker), 500);
        assert!(
            (lo - 0.5).abs() < 1e-12 && (hi - 0.5).abs() < 1e-12,
            "{lo}..{hi}"
        );
    }

    /// Three copies of one text gain every relation, a fourth text none. Drawn as one unit,
    /// the copies leave a resample with only the fourth text a quarter of the time, so the
    /// interval reaches no gain; drawn as four prompts, it hardly ever does.
    #[test]
    fn the_copies_of_a_text_are_drawn_together() {
        let texts: Vec<String> = ["x", "x", "x", "y"].map(String::from).to_vec();
        let units = crate::probe::text_units(&texts);
        assert_eq!(units, [0, 0, 0, 3]);
        let rows = |units: &[usize]| -> (Vec<Scored>, Vec<Scored>) {
            let base = units.iter().map(|&u| scored(u, 0, 2)).collect();
            let row = texts
                .iter()
                .zip(units)
                .map(|(t, &u)| scored(u, if t == "x" { 2 } else { 0 }, 2))
                .collect();
            (base, row)
        };
        let (base, row) = rows(&units);
        let (lo, hi) = paired_interval(&base, &row, |s| relations(s.checker), 2000);
        assert_eq!((lo, hi), (0.0, 1.0));
        let (base, row) = rows(&[0, 1, 2, 3]);
        let (lo, _) = paired_interval(&base, &row, |s| relations(s.checker), 2000);
        assert!(lo > 0.0, "{lo}");
    }

    #[test]
    fn the_paired_interval_is_zero_for_the_same_row_and_follows_a_uniform_gain() {
        let base: Vec<Scored> = (0..10).map(|p| scored(p, p % 3, 2)).collect();
        let (lo, hi) = paired_interval(&base, &base, |s| relations(s.checker), 500);
        assert_eq!((lo, hi), (0.0, 0.0));
        // Every prompt gains exactly one of its two relations' worth: +0.5 whatever is drawn.
        let none: Vec<Scored> = (0..10).map(|p| scored(p, 0, 2)).collect();
        let half: Vec<Scored> = (0..10).map(|p| scored(p, 1, 2)).collect();
        let (lo, hi) = paired_interval(&none, &half, |s| relations(s.checker), 500);
        assert!((lo - 0.5).abs() < 1e-12 && (hi - 0.5).abs() < 1e-12);
        // Gains on some prompts only: an interval around the mean change, not a point.
        let some: Vec<Scored> = (0..10)
            .map(|p| scored(p, if p < 5 { 2 } else { 0 }, 2))
            .collect();
        let (lo, hi) = paired_interval(&none, &some, |s| relations(s.checker), 2000);
        assert!(lo < 0.5 && hi > 0.5 && lo >= 0.0 && hi <= 1.0, "{lo} {hi}");
    }

    #[test]
    fn the_rows_hold_the_ablation_and_the_verifier_baselines() {
        let full = Plan {
            prompt_strength: 0.5,
            attention_strength: 2.0,
            ..Plan::default()
        };
        let names: Vec<String> = rows(&full).into_iter().map(|(n, _)| n).collect();
        for want in [
            "baseline",
            "full",
            "with schedule",
            "predicted",
            "best-of-N by checker",
            "verifier repair",
        ] {
            assert!(names.iter().any(|n| n == want), "{want} missing: {names:?}");
        }
        // Best-of-N matches the full plan's cost, and is never best-of-1.
        let row = |variant: &str, seconds: f64| Evaluated {
            suite: "ood".into(),
            variant: variant.into(),
            plan: None,
            cost: Cost {
                images: 1,
                evaluations: 40,
                seconds,
            },
            scored: Vec::new(),
        };
        assert_eq!(
            equal_cost(&[row("baseline", 1.0), row("full", 2.5)], "ood"),
            3
        );
        assert_eq!(
            equal_cost(&[row("baseline", 1.0), row("full", 1.1)], "ood"),
            2
        );
    }
}
