//! Training LINA's plan predictor offline: `lina-search` samples every candidate plan on a
//! suite's prompts and scores each with the probe's checker (offline supervision: nothing
//! that samples consults it), and `lina-fit` fits the predictor to those scores.

use std::path::{Path, PathBuf};

use lina::predict::Predictor;
use lina::{self as intervene, Plan};
use lina_probe::Suite;
use lina_probe::check::check;
use lina_runtime::pipeline::{CancelToken, NoHook, StableDiffusion};
use lina_runtime::source::DirSource;
use lina_runtime::{Error, Result};

use crate::common::{self, write};
use crate::probe::{SuiteArgs, SuiteRun};

#[derive(clap::Args)]
pub struct SearchArgs {
    #[command(flatten)]
    run: SuiteArgs,
    /// The suite whose prompts are searched (train).
    #[arg(long)]
    suite: String,
    /// An earlier search of the same model, suite, seeds and settings: each candidate it
    /// sampled (the same plan) keeps its scores there instead of being sampled again, so
    /// adding a candidate costs only the new candidate's samples. Sampling is deterministic
    /// (same seed, same image on the same backend), so the scores are the ones a new run
    /// would get; the model is not recorded in a search, so its sameness is the caller's.
    #[arg(long)]
    reuse: Option<PathBuf>,
}

#[derive(clap::Args)]
pub struct FitArgs {
    /// lina-search's output; repeat it to fit to several searches' prompts together (they
    /// must share candidates, features and settings).
    #[arg(long, required = true)]
    search: Vec<PathBuf>,
    /// Ridge strength; by default the one of 0.1 to 300 that chooses best on held-out
    /// scenes (leave-one-scene-out cross-validation: a text, its repeats and its mirror
    /// image held out together).
    #[arg(long)]
    lambda: Option<f64>,
    /// Where to write lina_predictor.json.
    #[arg(long)]
    out: PathBuf,
}

/// One training prompt of a settings search: its features and each candidate's score.
#[derive(serde::Serialize, serde::Deserialize)]
struct Searched {
    prompt: String,
    features: Vec<f64>,
    /// Per candidate, in the search's order: the share of the checker's relation checks that
    /// passed over all seeds, or of all its checks for a scene without relations.
    scores: Vec<f64>,
    /// For a row the search did not sample: the suite's prompt whose mirror image this is.
    /// Its scores are that prompt's, each from the candidate's mirror partner
    /// ([`intervene::predict::mirror_partner`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    mirror_of: Option<String>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Search {
    suite: String,
    seeds: u64,
    settings: String,
    features: Vec<String>,
    candidates: Vec<(String, Plan)>,
    /// The collage's [`intervene::collage::VERSION`] its collage candidates were sampled
    /// under (0 before it was recorded).
    #[serde(default)]
    collage: u32,
    prompts: Vec<Searched>,
}

/// `lina-search --model DIR --suite train [--count N] [--first I] [--seeds N] [--steps N]
/// [--guidance G] [--reuse EARLIER.json] --out SEARCH.json`: every candidate plan on every
/// prompt of the suite, scored by the checker.
///
/// The mirrored frame's symmetry does two things here. A mirrored candidate on a prompt with
/// no word of direction is its partner's run, bit for bit, so it takes the partner's score
/// without sampling. And a prompt with one gives a second row for free: its mirror image's
/// text, each candidate scored with its partner's score (the same samples, seen from the
/// other side). So the predictor learns what mirroring does on both sides of every scene the
/// suite draws, not only on the side the suite happens to draw it.
pub fn search(args: SearchArgs) -> Result<()> {
    let SearchArgs {
        run,
        suite: name,
        reuse,
    } = args;
    let run = SuiteRun::new(run, 2, 3.0);
    let suite = run.cut(Suite::named(&name)?);
    let (model, out, seeds, mut opts) = (run.model, run.out, run.seeds, run.opts);
    let settings = format!(
        "{:?} steps, guidance {}",
        opts.timesteps, opts.guidance_scale
    );
    let candidates = intervene::predict::candidates();
    let earlier = match &reuse {
        Some(path) => Some(Reused::read(path, &name, seeds, &settings, &candidates)?),
        None => None,
    };
    let partners: Vec<usize> = (0..candidates.len())
        .map(|k| {
            intervene::predict::mirror_partner(&candidates, k).ok_or_else(|| {
                Error::InvalidInput(format!(
                    "lina-search: candidate {} has no mirror partner",
                    candidates[k].0
                ))
            })
        })
        .collect::<Result<_>>()?;
    let uncollaged: Vec<Option<usize>> = (0..candidates.len())
        .map(|k| intervene::predict::without_collage(&candidates, k))
        .collect();
    pollster::block_on(async {
        let pipe = StableDiffusion::load(&DirSource::new(&model), &lina_runtime::device::cpu())?;
        let ids = suite.ids();
        let bar = common::bar(ids.len() as u64, "prompts");
        let mut prompts = Vec::new();
        for id in &ids {
            let scene = id.scene();
            let csg = lina_csg::parse::parse(&scene.prompt)?;
            let features = intervene::predict::features(&pipe, &scene.prompt, &csg).await?;
            let mirrored = intervene::mirror::mirrored(&scene.prompt);
            let arranged = intervene::collage::arrange(&csg).is_some();
            let mut scores: Vec<f64> = Vec::new();
            for (k, (_, plan)) in candidates.iter().enumerate() {
                if plan.mirror && mirrored.is_none() && partners[k] < k {
                    scores.push(scores[partners[k]]);
                    continue;
                }
                // Where the collage cannot arrange the graph, its candidate draws the
                // images of the same plan without it.
                if let Some(j) = uncollaged[k].filter(|&j| j < k && !arranged) {
                    scores.push(scores[j]);
                    continue;
                }
                if let Some(score) = earlier.as_ref().and_then(|e| e.score(&scene.prompt, k)) {
                    scores.push(score);
                    continue;
                }
                let (mut passed, mut total) = (0usize, 0usize);
                let (mut related, mut relations) = (0usize, 0usize);
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
                    for v in check(&image, &scene.csg) {
                        passed += usize::from(v.passed);
                        total += 1;
                        if v.is_relation() {
                            related += usize::from(v.passed);
                            relations += 1;
                        }
                    }
                }
                // The evaluation's headline is the relations, and on a scene that has them
                // the other checks (shapes, counts) move with every new sample whatever the
                // plan: scored on all checks, the mirrored frame's effect on a left-right
                // pair drowned in them (docs/lina.md, "Which side").
                scores.push(if relations > 0 {
                    related as f64 / relations as f64
                } else {
                    passed as f64 / total.max(1) as f64
                });
            }
            if let Some(text) = mirrored {
                let graph = lina_csg::parse::parse(&text)?;
                prompts.push(Searched {
                    features: intervene::predict::features(&pipe, &text, &graph).await?,
                    prompt: text,
                    scores: partners.iter().map(|&k| scores[k]).collect(),
                    mirror_of: Some(scene.prompt.clone()),
                });
            }
            prompts.push(Searched {
                prompt: scene.prompt.clone(),
                features,
                scores,
                mirror_of: None,
            });
            bar.inc(1);
        }
        bar.finish_and_clear();
        let search = Search {
            suite: name,
            seeds,
            settings,
            features: intervene::predict::FEATURES
                .iter()
                .map(|f| f.to_string())
                .collect(),
            candidates,
            collage: intervene::collage::VERSION,
            prompts,
        };
        let json = serde_json::to_string_pretty(&search).expect("a search serialises");
        write(&out, json.as_bytes())?;
        println!("wrote {}: {} prompts", out.display(), search.prompts.len());
        Ok(())
    })
}

/// The scores of an earlier search (`lina-search --reuse`), by prompt and by the current
/// candidates' order.
struct Reused {
    /// Per current candidate, its index in the earlier search, if that sampled the same plan.
    index: Vec<Option<usize>>,
    scores: std::collections::HashMap<String, Vec<f64>>,
}

impl Reused {
    fn read(
        path: &Path,
        suite: &str,
        seeds: u64,
        settings: &str,
        candidates: &[(String, Plan)],
    ) -> Result<Self> {
        let earlier: Search = serde_json::from_str(&common::read_text(path)?)
            .map_err(|e| Error::InvalidInput(format!("{}: {e}", path.display())))?;
        if earlier.suite != suite || earlier.seeds != seeds || earlier.settings != settings {
            return Err(Error::InvalidInput(format!(
                "--reuse {}: it searched suite {} with {} seeds and {}, not suite {suite} with \
                 {seeds} seeds and {settings}",
                path.display(),
                earlier.suite,
                earlier.seeds,
                earlier.settings
            )));
        }
        if let Some(row) = earlier
            .prompts
            .iter()
            .find(|p| p.scores.len() != earlier.candidates.len())
        {
            return Err(Error::InvalidInput(format!(
                "--reuse {}: the row of \"{}\" has {} scores for {} candidates",
                path.display(),
                row.prompt,
                row.scores.len(),
                earlier.candidates.len()
            )));
        }
        // A collage that has changed since draws other images: its scores are sampled again.
        let same_collage = earlier.collage == intervene::collage::VERSION;
        let index = candidates
            .iter()
            .map(|(_, plan)| {
                earlier
                    .candidates
                    .iter()
                    .position(|(_, p)| p == plan && (same_collage || p.collage == 0.0))
            })
            .collect();
        // Only the rows it sampled: a mirror image's row is derived again from its prompt's.
        let scores = earlier
            .prompts
            .into_iter()
            .filter(|p| p.mirror_of.is_none())
            .map(|p| (p.prompt, p.scores))
            .collect();
        Ok(Self { index, scores })
    }

    /// Candidate `k`'s score on `prompt`, if the earlier search sampled both.
    fn score(&self, prompt: &str, k: usize) -> Option<f64> {
        let j = self.index[k]?;
        self.scores.get(prompt).map(|s| s[j])
    }
}

/// The ridge strengths `lina-fit` cross-validates.
const LAMBDAS: &[f64] = &[0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0, 300.0];

/// One ridge regression per candidate, from the rows' features to the candidate's score, on
/// the rows the candidate may be suggested for ([`intervene::predict::eligible`]; all rows
/// where it is eligible for none of them).
fn fitted(search: &Search, rows: &[&Searched], lambda: f64) -> Result<Predictor> {
    // Parsed once per fit, not once per candidate.
    let arranged: Vec<bool> = rows.iter().map(|p| arranged(p)).collect();
    let candidates = search
        .candidates
        .iter()
        .enumerate()
        .map(|(k, (name, plan))| {
            let mut own: Vec<&Searched> = rows
                .iter()
                .zip(&arranged)
                .filter(|&(_, &a)| intervene::predict::eligible(plan, a))
                .map(|(&p, _)| p)
                .collect();
            if own.is_empty() {
                own = rows.to_vec();
            }
            let x: Vec<Vec<f64>> = own.iter().map(|p| p.features.clone()).collect();
            let y: Vec<f64> = own.iter().map(|p| p.scores[k]).collect();
            Ok(intervene::predict::Candidate {
                name: name.clone(),
                plan: plan.clone(),
                weights: intervene::predict::ridge(&x, &y, lambda)?,
            })
        })
        .collect::<Result<_>>()?;
    let count = |mirrored: bool| {
        rows.iter()
            .filter(|p| p.mirror_of.is_some() == mirrored)
            .count()
    };
    Ok(Predictor {
        version: intervene::predict::VERSION,
        features: search.features.clone(),
        candidates,
        trained: format!(
            "ridge (lambda {lambda}) on {} prompts of the {} suite and {} mirror images, {} seeds each, {}",
            count(false),
            search.suite,
            count(true),
            search.seeds,
            search.settings
        ),
    })
}

/// The mean true score of the candidate the predictor suggests for each row.
fn chosen_score(predictor: &Predictor, rows: &[&Searched]) -> f64 {
    rows.iter()
        .map(|p| {
            let s = predictor.suggest(&p.features, arranged(p));
            let k = predictor
                .candidates
                .iter()
                .position(|c| c.name == s.candidate)
                .expect("a suggestion is one of the candidates");
            p.scores[k]
        })
        .sum::<f64>()
        / rows.len().max(1) as f64
}

/// Whether the collage arranges a row's graph ([`intervene::collage::arrange`]); a text the
/// parser refuses has none.
fn arranged(p: &Searched) -> bool {
    lina_csg::parse::parse(&p.prompt)
        .ok()
        .and_then(|csg| intervene::collage::arrange(&csg))
        .is_some()
}

/// The scene a row belongs to for cross-validation: its text, with every row that repeats
/// it, and for a text with a word of direction its mirror image's text too. The mirror row
/// of "lit from the left" and the suite's own "lit from the right" hold the same samples
/// seen from the same side, so holding out one while fitting the other would score a fit
/// on its own answer.
fn scene_key(p: &Searched) -> String {
    let text = p.mirror_of.clone().unwrap_or_else(|| p.prompt.clone());
    match intervene::mirror::mirrored(&text) {
        Some(mirrored) if mirrored < text => mirrored,
        _ => text,
    }
}

/// Leave-one-scene-out cross-validation of the ridge strength: each scene ([`scene_key`]) is
/// scored by a fit to all the others. The smallest strength with the best held-out score
/// wins.
fn cross_validated_lambda(search: &Search) -> Result<f64> {
    let mut groups: Vec<String> = search.prompts.iter().map(scene_key).collect();
    groups.sort();
    groups.dedup();
    let mut best = (f64::NEG_INFINITY, LAMBDAS[0]);
    for &lambda in LAMBDAS {
        let mut total = 0.0;
        for g in &groups {
            let (held, rest): (Vec<&Searched>, Vec<&Searched>) =
                search.prompts.iter().partition(|p| scene_key(p) == *g);
            total += chosen_score(&fitted(search, &rest, lambda)?, &held) * held.len() as f64;
        }
        let score = total / search.prompts.len().max(1) as f64;
        println!(
            "lambda {lambda:>5}: {:.2}% mean score held out",
            100.0 * score
        );
        if score > best.0 + 1e-9 {
            best = (score, lambda);
        }
    }
    Ok(best.1)
}

/// Several searches' prompts as one search; they must have sampled the same candidates with
/// the same features and settings, or their scores would not be comparable.
fn merged(paths: &[PathBuf]) -> Result<Search> {
    let mut all: Option<Search> = None;
    for path in paths {
        let search: Search = serde_json::from_str(&common::read_text(path)?)
            .map_err(|e| Error::InvalidInput(format!("{}: {e}", path.display())))?;
        match &mut all {
            None => all = Some(search),
            Some(all) => {
                if search.candidates != all.candidates
                    || search.features != all.features
                    || search.seeds != all.seeds
                    || search.settings != all.settings
                    || search.suite != all.suite
                {
                    return Err(Error::InvalidInput(format!(
                        "{}: its suite, candidates, features, seeds or settings differ from {}'s",
                        path.display(),
                        paths[0].display()
                    )));
                }
                all.prompts.extend(search.prompts);
            }
        }
    }
    all.ok_or_else(|| Error::InvalidInput("lina-fit: no --search".into()))
}

/// `lina-fit --search SEARCH.json [--search MORE.json] [--lambda L] --out
/// lina_predictor.json`: one ridge regression per candidate, from the prompts' features to
/// the candidate's score, with the ridge strength cross-validated unless given.
pub fn fit(args: FitArgs) -> Result<()> {
    let FitArgs {
        search: paths,
        lambda,
        out,
    } = args;
    let search = merged(&paths)?;
    let lambda = match lambda {
        Some(l) => l,
        None => cross_validated_lambda(&search)?,
    };
    let rows: Vec<&Searched> = search.prompts.iter().collect();
    let predictor = fitted(&search, &rows, lambda)?;
    // Read back through the loader's own checks before it is written.
    let json = predictor.to_json();
    intervene::predict::Predictor::from_json(&json)?;
    write(&out, json.as_bytes())?;
    // How well the choice fits the search: the chosen candidate's true score against the
    // best fixed candidate's.
    let chosen = chosen_score(&predictor, &rows);
    for (k, (name, _)) in search.candidates.iter().enumerate() {
        let mean = search.prompts.iter().map(|p| p.scores[k]).sum::<f64>()
            / search.prompts.len().max(1) as f64;
        println!("{name:>12}: {:.1}% mean score", 100.0 * mean);
    }
    println!(
        "   predicted: {:.1}% (on the prompts it was fitted to)",
        100.0 * chosen
    );
    println!("wrote {}", out.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(prompt: &str, mirror_of: Option<&str>) -> Searched {
        Searched {
            prompt: prompt.into(),
            features: Vec::new(),
            scores: Vec::new(),
            mirror_of: mirror_of.map(String::from),
        }
    }

    /// A text, its repeats, its mirror image and both mirror rows are held out together; a
    /// text without a direction and another scene are not.
    #[test]
    fn a_scene_and_its_mirror_image_are_held_out_together() {
        let (left, right) = (
            "a red cube lit from the left",
            "a red cube lit from the right",
        );
        let key = scene_key(&row(left, None));
        for r in [
            row(right, None),
            row(right, Some(left)),
            row(left, Some(right)),
        ] {
            assert_eq!(scene_key(&r), key, "{}", r.prompt);
        }
        let above = "a red cube lit from above";
        assert_eq!(scene_key(&row(above, None)), above);
        assert_ne!(scene_key(&row("a blue cube lit from the left", None)), key);
    }
}
