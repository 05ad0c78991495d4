//! The learned, per-prompt choice of interventions.
//!
//! Ours (the paper's abstract says only that a small learned predictor chooses the
//! interventions per prompt): a fixed set of candidate plans, and for each a linear model of
//! the share of the probe checker's relation checks that pass (of all its checks, for a
//! scene without relations), over features of the prompt's scene graph and of its text
//! embedding. The suggestion is the candidate with the highest predicted share. Trained by
//! `lina-cli lina-search` (every candidate on the probe's training prompts, scored by the
//! checker) and `lina-cli lina-fit` (ridge regression); the weights ship with the model as
//! `lina_predictor.json`. A suggestion is a whole [`Plan`], so every value can still be
//! overridden.

use serde::{Deserialize, Serialize};

use super::Plan;
use super::prompt::relation_positions;
use lina_csg::{Class, Colour, Csg, Light, Predicate};
use lina_runtime::error::{Error, Result};
use lina_runtime::pipeline::StableDiffusion;
use lina_runtime::source::FileSource;

/// The file a model folder may carry its predictor in.
pub const FILE: &str = "lina_predictor.json";

/// The file format's version; a predictor of another version is refused.
pub const VERSION: u32 = 3;

/// What the predictor sees of a prompt, in order.
pub const FEATURES: &[&str] = &[
    "bias",
    "on",
    "in",
    "left_of/right_of",
    "behind",
    "close_to/far_from",
    "reflection",
    "shadow",
    "light",
    "light from the right",
    "right_of",
    "fill",
    "count>1",
    "small or large",
    "objects/4",
    "red on the left",
    "green on the left",
    "blue on the left",
    "yellow on the left",
    "purple on the left",
    "relation token share",
    "relation embedding shift",
];

/// The plans the predictor chooses among: the baseline, prompt guidance (the default LINA
/// plan), half the run's guidance scale ([`Plan::GUIDANCE_FACTOR`]) and the collage
/// ([`Plan::COLLAGE_STRENGTH`]), each in the scene's frame and in the mirrored frame
/// ([`crate::mirror`]). Only the collage costs UNet evaluations beyond plain sampling's (its
/// pieces', less the redraw's skipped steps), and only on the graphs it arranges. The
/// schedule, the region terms and the attention control are not among them: on the
/// embedded model no setting of any of them gained (docs/lina.md).
///
/// Every candidate has a mirror partner, the same plan with the frame toggled, so a search
/// can use the frame's symmetry ([`mirror_partner`]).
pub fn candidates() -> Vec<(String, Plan)> {
    let base = Plan::default();
    let prompt = Plan {
        prompt_strength: Plan::lina().prompt_strength,
        prompt_window: Plan::lina().prompt_window,
        ..base.clone()
    };
    let mirrored = |p: &Plan| Plan {
        mirror: true,
        ..p.clone()
    };
    let weaker = Plan {
        guidance: Plan::GUIDANCE_FACTOR,
        ..base.clone()
    };
    let collage = Plan {
        collage: Plan::COLLAGE_STRENGTH,
        ..base.clone()
    };
    vec![
        ("baseline".into(), base.clone()),
        ("prompt".into(), prompt.clone()),
        ("mirror".into(), mirrored(&base)),
        ("prompt-mirror".into(), mirrored(&prompt)),
        ("guidance".into(), weaker.clone()),
        ("guidance-mirror".into(), mirrored(&weaker)),
        ("collage".into(), collage.clone()),
        ("collage-mirror".into(), mirrored(&collage)),
    ]
}

/// The candidate whose plan is `candidates[k]`'s with the frame toggled. Sampling a prompt
/// in the mirrored frame is sampling its mirror image's text in the scene's frame, mirrored
/// ([`crate::mirror`]), so the partner's score on a prompt is this candidate's score on the
/// prompt's mirror image: a search doubles its directional prompts with it.
pub fn mirror_partner(candidates: &[(String, Plan)], k: usize) -> Option<usize> {
    let toggled = Plan {
        mirror: !candidates[k].1.mirror,
        ..candidates[k].1.clone()
    };
    candidates.iter().position(|(_, p)| *p == toggled)
}

/// The candidate whose plan is `candidates[k]`'s without the collage, for a collage
/// candidate. On a graph the collage cannot arrange ([`crate::collage::arrange`]) the two run
/// the same start and draw the same images, so a search samples only the second.
pub fn without_collage(candidates: &[(String, Plan)], k: usize) -> Option<usize> {
    if candidates[k].1.collage == 0.0 {
        return None;
    }
    let plain = Plan {
        collage: 0.0,
        ..candidates[k].1.clone()
    };
    candidates.iter().position(|(_, p)| *p == plain)
}

/// Whether a candidate's plan may be suggested for a prompt whose graph the collage does or
/// does not arrange ([`crate::collage::arrange`]): a collage only where it does. Elsewhere
/// it draws the images of its plan without the collage, and its linear model, fitted where
/// the collage arranges (`lina-fit`), says nothing of them.
pub fn eligible(plan: &Plan, arranged: bool) -> bool {
    plan.collage == 0.0 || arranged
}

/// The scene graph's part of the features (everything but the two embedding features).
pub fn graph_features(csg: &Csg) -> Vec<f64> {
    let has = |p: &[Predicate]| csg.relations.iter().any(|r| p.contains(&r.predicate)) as u8 as f64;
    let class = |c: Class| csg.nodes.iter().any(|n| n.class == c) as u8 as f64;
    let objects = csg.nodes.iter().filter(|n| n.class.is_object()).count() as f64;
    vec![
        1.0,
        has(&[Predicate::On]),
        has(&[Predicate::In]),
        has(&[Predicate::LeftOf, Predicate::RightOf]),
        has(&[Predicate::Behind]),
        has(&[Predicate::CloseTo, Predicate::FarFrom]),
        class(Class::Reflection),
        class(Class::Shadow),
        csg.light.is_some() as u8 as f64,
        (csg.light == Some(Light::Right)) as u8 as f64,
        has(&[Predicate::RightOf]),
        csg.nodes.iter().any(|n| n.fill.is_some()) as u8 as f64,
        csg.nodes.iter().any(|n| n.count > 1) as u8 as f64,
        csg.nodes.iter().any(|n| n.size.is_some()) as u8 as f64,
        objects / 4.0,
    ]
    .into_iter()
    .chain(sides(csg))
    .collect()
}

/// Per colour, in [`Colour::ALL`]'s order: +1 where a node of that colour is on the left of
/// a left-right relation, -1 where it is on the right (0 for both or neither). A model learns
/// its own arrangements of two things side by side, and which side it draws an attribute on
/// is part of that prior (the embedded model draws a pair of colours in one order whatever
/// the prompt says; docs/lina.md, "Which side"). The features are antisymmetric: the mirror
/// image's text negates them, so a search's mirror rows teach both sides of every pair.
fn sides(csg: &Csg) -> [f64; 5] {
    let mut out = [0.0; 5];
    for r in &csg.relations {
        let (left, right) = match r.predicate {
            Predicate::LeftOf => (&r.subject, &r.object),
            Predicate::RightOf => (&r.object, &r.subject),
            _ => continue,
        };
        for (node, sign) in [(left, 1.0), (right, -1.0)] {
            if let Some(c) = csg.node(node).and_then(|n| n.colour) {
                let i = Colour::ALL.iter().position(|&k| k == c).expect("a colour");
                out[i] += sign;
            }
        }
    }
    out.map(|v: f64| v.clamp(-1.0, 1.0))
}

/// All features of a prompt: its graph's, then two from the model's text embedding: the
/// share of its tokens that carry relations, and how far those tokens lie from the empty
/// prompt's embedding relative to the others (what prompt-space guidance amplifies).
pub async fn features(pipe: &StableDiffusion, prompt: &str, csg: &Csg) -> Result<Vec<f64>> {
    let relations = relation_positions(pipe, prompt)?;
    let words = pipe.context_words(prompt)?;
    let content: Vec<usize> = (0..words.len()).filter(|&i| words[i].is_some()).collect();
    let (text, _) = pipe.encode_text(prompt, 0)?;
    let (empty, _) = pipe.encode_text("", 0)?;
    let [_, len, dim] = text.dims();
    let text = lina_runtime::device::read_f32(text, "the prompt's embedding").await?;
    let empty = lina_runtime::device::read_f32(empty, "the empty prompt's embedding").await?;
    let shift = |i: usize| -> f64 {
        (i * dim..(i + 1) * dim)
            .map(|j| f64::from(text[j] - empty[j]).powi(2))
            .sum::<f64>()
            .sqrt()
    };
    let mean = |positions: &[usize]| {
        let inside: Vec<f64> = positions
            .iter()
            .filter(|&&i| i < len)
            .map(|&i| shift(i))
            .collect();
        inside.iter().sum::<f64>() / inside.len().max(1) as f64
    };
    let share = relations.len() as f64 / content.len().max(1) as f64;
    let ratio = if relations.is_empty() {
        0.0
    } else {
        mean(&relations) / mean(&content).max(1e-6)
    };
    let mut out = graph_features(csg);
    out.extend([share, ratio]);
    Ok(out)
}

/// One candidate and its linear model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Candidate {
    pub name: String,
    pub plan: Plan,
    /// One weight per feature, in [`FEATURES`] order.
    pub weights: Vec<f64>,
}

/// A trained predictor, as `lina_predictor.json` holds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Predictor {
    pub version: u32,
    /// The feature names it was trained on; must equal [`FEATURES`].
    pub features: Vec<String>,
    pub candidates: Vec<Candidate>,
    /// How it was trained, in words (prompts, seeds, steps, ridge strength).
    pub trained: String,
}

/// A suggestion for one prompt.
#[derive(Debug, Clone, Serialize)]
pub struct Suggestion {
    pub candidate: String,
    pub plan: Plan,
    /// Each candidate's predicted pass share, by name.
    pub predicted: Vec<(String, f64)>,
}

impl Predictor {
    /// The predictor a model folder carries ([`FILE`]), if it has one.
    pub fn load(files: &dyn FileSource) -> Result<Option<Self>> {
        match files.read(FILE)? {
            None => Ok(None),
            Some(json) => Ok(Some(Self::from_json(
                std::str::from_utf8(&json).map_err(|_| Error::config(FILE, "is not UTF-8 text"))?,
            )?)),
        }
    }

    /// The suggestion for a prompt and its graph on `pipe`, whose text encoder gives the
    /// embedding features.
    pub async fn suggest_for(
        &self,
        pipe: &StableDiffusion,
        prompt: &str,
        csg: &Csg,
    ) -> Result<Suggestion> {
        let arranged = crate::collage::arrange(csg).is_some();
        let mut s = self.suggest(&features(pipe, prompt, csg).await?, arranged);
        // On a prompt with no word of direction the mirrored frame changes nothing, so a
        // mirrored candidate is its partner's run: name that one.
        if s.plan.mirror && crate::mirror::mirrored(prompt).is_none() {
            let plan = Plan {
                mirror: false,
                ..s.plan.clone()
            };
            if let Some(c) = self.candidates.iter().find(|c| c.plan == plan) {
                s.candidate = c.name.clone();
                s.plan = plan;
            }
        }
        Ok(s)
    }

    pub fn from_json(text: &str) -> Result<Self> {
        let bad = |m: String| Error::config(FILE, m);
        let p: Predictor = serde_json::from_str(text).map_err(|e| bad(e.to_string()))?;
        if p.version != VERSION {
            return Err(bad(format!(
                "version {} (this build reads {VERSION})",
                p.version
            )));
        }
        if p.features != FEATURES {
            return Err(bad(format!(
                "features {:?} differ from this build's {FEATURES:?}",
                p.features
            )));
        }
        if p.candidates.is_empty() {
            return Err(bad("no candidates".into()));
        }
        for c in &p.candidates {
            if c.weights.len() != FEATURES.len() || c.weights.iter().any(|w| !w.is_finite()) {
                return Err(bad(format!(
                    "candidate {}: needs {} finite weights",
                    c.name,
                    FEATURES.len()
                )));
            }
            c.plan
                .validate()
                .map_err(|e| bad(format!("candidate {}: {e}", c.name)))?;
        }
        Ok(p)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a predictor serialises")
    }

    /// The candidate with the highest predicted pass share for these features, among those
    /// [`eligible`] for a graph the collage does or does not arrange.
    pub fn suggest(&self, features: &[f64], arranged: bool) -> Suggestion {
        let predicted: Vec<(String, f64)> = self
            .candidates
            .iter()
            .map(|c| (c.name.clone(), dot(&c.weights, features)))
            .collect();
        let best = (0..predicted.len())
            .filter(|&k| eligible(&self.candidates[k].plan, arranged))
            .max_by(|&a, &b| predicted[a].1.total_cmp(&predicted[b].1))
            .expect("every candidate without the collage is eligible");
        Suggestion {
            candidate: self.candidates[best].name.clone(),
            plan: self.candidates[best].plan.clone(),
            predicted,
        }
    }
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Ridge regression: the weights minimising |X w - y|² + lambda |w|² (the bias, feature 0,
/// unpenalised), by solving the normal equations.
pub fn ridge(x: &[Vec<f64>], y: &[f64], lambda: f64) -> Result<Vec<f64>> {
    let n = x.first().map_or(0, Vec::len);
    if x.len() != y.len() || x.iter().any(|row| row.len() != n) || n == 0 {
        return Err(Error::InvalidInput(
            "ridge: rows and targets disagree".into(),
        ));
    }
    // A = XᵀX + λI (no penalty on the bias), b = Xᵀy.
    let mut a = vec![vec![0.0; n + 1]; n];
    for (row, &target) in x.iter().zip(y) {
        for i in 0..n {
            for j in 0..n {
                a[i][j] += row[i] * row[j];
            }
            a[i][n] += row[i] * target;
        }
    }
    for (i, r) in a.iter_mut().enumerate().skip(1) {
        r[i] += lambda;
    }
    // Gaussian elimination with partial pivoting on the augmented matrix.
    for col in 0..n {
        let pivot = (col..n)
            .max_by(|&p, &q| a[p][col].abs().total_cmp(&a[q][col].abs()))
            .expect("rows remain");
        if a[pivot][col].abs() < 1e-12 {
            return Err(Error::InvalidInput(format!(
                "ridge: feature {} is constant or redundant; raise lambda",
                FEATURES.get(col).unwrap_or(&"?")
            )));
        }
        a.swap(col, pivot);
        let pivot_row = a[col].clone();
        for (r, row) in a.iter_mut().enumerate() {
            if r != col {
                let f = row[col] / pivot_row[col];
                for (x, p) in row[col..].iter_mut().zip(&pivot_row[col..]) {
                    *x -= f * p;
                }
            }
        }
    }
    Ok((0..n).map(|i| a[i][n] / a[i][i]).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_candidate_has_its_mirror_partner() {
        let all = candidates();
        for k in 0..all.len() {
            let partner = mirror_partner(&all, k).expect("a partner");
            assert_ne!(all[k].1.mirror, all[partner].1.mirror);
            assert_eq!(mirror_partner(&all, partner), Some(k));
        }
    }

    #[test]
    fn every_collage_candidate_has_its_plan_without_the_collage() {
        let all = candidates();
        let collaged: Vec<usize> = (0..all.len()).filter(|&k| all[k].1.collage > 0.0).collect();
        assert_eq!(collaged.len(), 2, "the collage in either frame");
        for k in 0..all.len() {
            match without_collage(&all, k) {
                Some(j) => {
                    assert!(collaged.contains(&k));
                    assert_eq!(all[j].1.collage, 0.0);
                    assert_eq!(all[j].1.mirror, all[k].1.mirror);
                }
                None => assert!(!collaged.contains(&k)),
            }
        }
    }

    #[test]
    fn the_side_features_say_which_colour_is_on_the_left_and_the_mirror_negates_them() {
        let sides = |prompt: &str| {
            let x = graph_features(&lina_csg::parse::parse(prompt).unwrap());
            let at = |name: &str| FEATURES.iter().position(|f| *f == name).unwrap();
            ["red", "blue", "green"].map(|c| x[at(&format!("{c} on the left"))])
        };
        // The same arrangement said both ways.
        assert_eq!(
            sides("a red ball to the left of a blue cube"),
            [1.0, -1.0, 0.0]
        );
        assert_eq!(sides("a blue cube right of a red ball"), [1.0, -1.0, 0.0]);
        // The mirror image's text negates them.
        let prompt = "a blue cube to the left of a green cone";
        let mirrored = crate::mirror::mirrored(prompt).unwrap();
        assert_eq!(sides(prompt), [0.0, 1.0, -1.0]);
        assert_eq!(sides(&mirrored), [0.0, -1.0, 1.0]);
        // No left-right relation, or no colour: nothing.
        assert_eq!(
            sides("a red cube and a blue ball lit from the right"),
            [0.0; 3]
        );
        assert_eq!(sides("a ball to the left of a cube"), [0.0; 3]);
    }

    #[test]
    fn ridge_recovers_a_linear_rule_and_shrinks_toward_it() {
        // y = 0.5 + 2 a - b over a few points.
        let x: Vec<Vec<f64>> = [(0., 0.), (1., 0.), (0., 1.), (1., 1.), (2., 1.)]
            .iter()
            .map(|&(a, b)| vec![1.0, a, b])
            .collect();
        let y: Vec<f64> = x.iter().map(|r| 0.5 + 2.0 * r[1] - r[2]).collect();
        let w = ridge(&x, &y, 0.0).unwrap();
        for (got, want) in w.iter().zip([0.5, 2.0, -1.0]) {
            assert!((got - want).abs() < 1e-9, "{w:?}");
        }
        let shrunk = ridge(&x, &y, 10.0).unwrap();
        assert!(shrunk[1].abs() < 2.0 && shrunk[2].abs() < 1.0, "{shrunk:?}");
        // A constant feature besides the bias cannot be told apart without a penalty.
        let constant: Vec<Vec<f64>> = x.iter().map(|r| vec![1.0, 1.0, r[1]]).collect();
        assert!(ridge(&constant, &y, 0.0).is_err());
    }

    #[test]
    fn the_suggestion_is_the_best_predicted_candidate_and_bad_files_are_refused() {
        let mut predictor = Predictor {
            version: VERSION,
            features: FEATURES.iter().map(|s| s.to_string()).collect(),
            candidates: candidates()
                .into_iter()
                .map(|(name, plan)| Candidate {
                    name,
                    plan,
                    weights: vec![0.0; FEATURES.len()],
                })
                .collect(),
            trained: "by hand".into(),
        };
        // "prompt-mirror" wins where the graph has a reflection.
        predictor.candidates[3].weights[6] = 0.3;
        predictor.candidates[0].weights[0] = 0.1;
        let csg = lina_csg::parse::parse("a red ball on a small mirror").unwrap();
        let mut x = graph_features(&csg);
        x.extend([0.2, 1.5]);
        assert_eq!(x.len(), FEATURES.len());
        let s = predictor.suggest(&x, false);
        assert_eq!(s.candidate, "prompt-mirror");
        assert_eq!(s.plan, candidates()[3].1);
        let plain = [
            graph_features(&lina_csg::parse::parse("a red ball").unwrap()),
            vec![0.0, 0.0],
        ]
        .concat();
        assert_eq!(predictor.suggest(&plain, false).candidate, "baseline");
        // The collage, predicted best everywhere, is suggested only where it arranges the
        // graph: elsewhere it would draw the baseline's images.
        predictor.candidates[6].weights[0] = 0.5;
        assert_eq!(predictor.suggest(&plain, false).candidate, "baseline");
        assert_eq!(predictor.suggest(&plain, true).candidate, "collage");
        predictor.candidates[6].weights[0] = 0.0;

        let again = Predictor::from_json(&predictor.to_json()).unwrap();
        assert_eq!(again, predictor);
        let mut short = predictor.clone();
        short.candidates[1].weights.pop();
        let e = Predictor::from_json(&short.to_json())
            .unwrap_err()
            .to_string();
        assert!(e.contains(FILE) && e.contains("prompt"), "{e}");
        let mut renamed = predictor.clone();
        renamed.features[1] = "under".into();
        assert!(Predictor::from_json(&renamed.to_json()).is_err());
    }
}
