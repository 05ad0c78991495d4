//! The second judge against ground truth: on the probe's rendered scenes (exact by
//! construction) its checks must pass, and on the same scenes rendered with their category's
//! typical failure it must reject the image. Both over the in-distribution and the
//! out-of-distribution splits, which the segmenter never trained on (it saw `train` only).
//! Softened copies of the clean renders must pass too: a model's images have soft edges.

use lina_judge::{Segmenter, judge};
use lina_probe::{Category, SceneId, Split};

/// Scenes per category and split.
const SCENES: u64 = 30;

fn ids() -> Vec<SceneId> {
    [Split::Test, Split::Ood]
        .into_iter()
        .flat_map(|split| {
            Category::ALL.into_iter().flat_map(move |category| {
                (0..SCENES).map(move |index| SceneId {
                    split,
                    category,
                    index,
                })
            })
        })
        .collect()
}

/// A 3x3 box blur: a render softened the way a model's decoder softens its edges.
fn soften(rgb: &[u8], size: usize) -> Vec<u8> {
    let mut out = vec![0u8; rgb.len()];
    for y in 0..size {
        for x in 0..size {
            for c in 0..3 {
                let (mut sum, mut n) = (0u32, 0u32);
                for sy in y.saturating_sub(1)..=(y + 1).min(size - 1) {
                    for sx in x.saturating_sub(1)..=(x + 1).min(size - 1) {
                        sum += rgb[(sy * size + sx) * 3 + c] as u32;
                        n += 1;
                    }
                }
                out[(y * size + x) * 3 + c] = (sum / n) as u8;
            }
        }
    }
    out
}

#[test]
fn the_judge_passes_clean_renders_and_rejects_broken_ones() {
    let segmenter = Segmenter::embedded();
    let size = lina_probe::SIZE;
    let (mut checks, mut agreed) = (0usize, 0usize);
    let (mut broken, mut rejected) = (0usize, 0usize);
    let (mut soft_checks, mut soft_agreed) = (0usize, 0usize);
    let mut failures = Vec::new();
    let mut missed = Vec::new();
    for id in ids() {
        let scene = id.scene();
        let image = scene.render().image;
        let j = judge(&segmenter, &image.rgb, size, size, &scene.csg);
        checks += j.verdicts.len() + 1;
        agreed += j.verdicts.iter().filter(|v| v.passed).count() + usize::from(!j.wrecked);
        for v in j.verdicts.iter().filter(|v| !v.passed) {
            failures.push(format!("{:?} {}: {}", id.category, scene.prompt, v.check));
        }
        let j = judge(
            &segmenter,
            &soften(&image.rgb, size),
            size,
            size,
            &scene.csg,
        );
        soft_checks += j.verdicts.len() + 1;
        soft_agreed += j.verdicts.iter().filter(|v| v.passed).count() + usize::from(!j.wrecked);
        let bad = id.broken_scene();
        let j = judge(&segmenter, &bad.render().image.rgb, size, size, &bad.csg);
        broken += 1;
        if j.all_passed() {
            missed.push(format!("{:?} {}", id.category, bad.prompt));
        } else {
            rejected += 1;
        }
    }
    let agreement = agreed as f64 / checks as f64;
    let rejection = rejected as f64 / broken as f64;
    let soft = soft_agreed as f64 / soft_checks as f64;
    eprintln!(
        "softened clean renders (3x3 box blur): {soft_agreed} of {soft_checks} checks pass ({:.2}%)",
        100.0 * soft
    );
    eprintln!(
        "clean renders: {agreed} of {checks} checks pass ({:.2}%); broken renders: {rejected} of {broken} rejected ({:.2}%)",
        100.0 * agreement,
        100.0 * rejection
    );
    for f in failures.iter().take(20) {
        eprintln!("  failed on a clean render: {f}");
    }
    for m in missed.iter().take(20) {
        eprintln!("  passed a broken render: {m}");
    }
    assert!(agreement >= 0.95, "clean renders: {agreement:.3}");
    assert!(rejection >= 0.95, "broken renders: {rejection:.3}");
    // Soft edges must not make the judge see a different scene.
    assert!(soft >= 0.9, "softened renders: {soft:.3}");
}
