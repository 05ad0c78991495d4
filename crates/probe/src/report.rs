//! Pass rates of a probe run, per category, per subcategory and per kind of check, with 95%
//! Wilson score intervals, as JSON and as a Markdown table.

use std::collections::BTreeMap;

use serde::Serialize;

use super::check::Verdict;
use super::{Scene, SceneId};

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Tally {
    pub passed: usize,
    pub total: usize,
}

impl Tally {
    pub fn add(&mut self, passed: bool) {
        self.passed += passed as usize;
        self.total += 1;
    }

    pub fn rate(&self) -> f64 {
        self.passed as f64 / self.total.max(1) as f64
    }

    /// The 95% Wilson score interval of the pass rate: unlike the normal approximation it
    /// stays inside [0, 1] and is sensible for rates near 0 or 1 and for small counts.
    pub fn interval(&self) -> (f64, f64) {
        if self.total == 0 {
            return (0.0, 1.0);
        }
        let (n, p, z) = (self.total as f64, self.rate(), 1.96f64);
        let centre = (p + z * z / (2.0 * n)) / (1.0 + z * z / n);
        let half = z * (p * (1.0 - p) / n + z * z / (4.0 * n * n)).sqrt() / (1.0 + z * z / n);
        ((centre - half).max(0.0), (centre + half).min(1.0))
    }
}

/// One image's verdicts.
#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    pub scene: SceneId,
    pub seed: u64,
    pub subcategory: String,
    pub prompt: String,
    pub image: String,
    pub verdicts: Vec<Verdict>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub suite: String,
    pub model: String,
    /// Over all checks of all images.
    pub overall: Tally,
    /// Images of which every check passed.
    pub images_all_passed: Tally,
    /// The checks of relations between nodes (on, left_of, shadow_of, ...): the edges of
    /// the scene graph, where out-of-distribution prompts fail most.
    pub relations: Tally,
    pub categories: BTreeMap<String, Tally>,
    pub subcategories: BTreeMap<String, Tally>,
    pub kinds: BTreeMap<String, Tally>,
    pub entries: Vec<Entry>,
}

impl Report {
    pub fn new(suite: &str, model: &str) -> Self {
        Self {
            suite: suite.to_string(),
            model: model.to_string(),
            ..Default::default()
        }
    }

    pub fn add(
        &mut self,
        id: SceneId,
        scene: &Scene,
        seed: u64,
        image: &str,
        verdicts: Vec<Verdict>,
    ) {
        let category = scene.category.name();
        for v in &verdicts {
            self.overall.add(v.passed);
            self.categories
                .entry(category.into())
                .or_default()
                .add(v.passed);
            self.subcategories
                .entry(format!("{category}/{}", scene.subcategory))
                .or_default()
                .add(v.passed);
            self.kinds.entry(v.kind.into()).or_default().add(v.passed);
            if v.is_relation() {
                self.relations.add(v.passed);
            }
        }
        self.images_all_passed
            .add(verdicts.iter().all(|v| v.passed));
        self.entries.push(Entry {
            scene: id,
            seed,
            subcategory: scene.subcategory.to_string(),
            prompt: scene.prompt.clone(),
            image: image.to_string(),
            verdicts,
        });
    }

    pub fn to_markdown(&self) -> String {
        let row = |name: &str, t: &Tally| {
            let (lo, hi) = t.interval();
            format!(
                "| {name} | {:.1}% | {:.1}–{:.1}% | {}/{} |\n",
                100.0 * t.rate(),
                100.0 * lo,
                100.0 * hi,
                t.passed,
                t.total
            )
        };
        let table = |title: &str, rows: &BTreeMap<String, Tally>| {
            let mut s = format!(
                "\n| {title} | pass rate | 95% interval | passed/checks |\n| --- | --- | --- | --- |\n"
            );
            for (k, t) in rows {
                s += &row(k, t);
            }
            s
        };
        let mut md = format!(
            "# Probe report: suite `{}`, model `{}`\n\n{} images.\n\n",
            self.suite,
            self.model,
            self.entries.len()
        );
        md += "| overall | pass rate | 95% interval | passed/total |\n| --- | --- | --- | --- |\n";
        md += &row("all checks", &self.overall);
        md += &row("relations (edges between nodes)", &self.relations);
        md += &row("images with every check passed", &self.images_all_passed);
        md += &table("category", &self.categories);
        md += &table("kind of check", &self.kinds);
        md += &table("subcategory", &self.subcategories);
        md
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wilson_interval_matches_known_values() {
        // 8 of 10: the Wilson interval is 0.490 to 0.943.
        let t = Tally {
            passed: 8,
            total: 10,
        };
        let (lo, hi) = t.interval();
        assert!(
            (lo - 0.490).abs() < 1e-3 && (hi - 0.943).abs() < 1e-3,
            "{lo} {hi}"
        );
        let all = Tally {
            passed: 50,
            total: 50,
        };
        assert!(all.interval().1 == 1.0 && all.interval().0 > 0.9);
    }
}
