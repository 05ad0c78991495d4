//! The judge's checks: what the scene graph asks for, measured on the segmenter's labels.
//!
//! Every threshold here is this crate's own, set from the scene rules (docs/probe.md's
//! world: a side view, things standing on a ground line, effects below it), not from the
//! checker's code. Each check is a plain geometric question about labelled pixels: is
//! there enough of it, what lies under its base, which side its shadow falls on.

use lina_csg::{Class, Csg, Fill, Light, Node, Predicate};

use crate::label::Label;
use crate::segment::{Segmentation, Segmenter};

/// Pixels the segmenter is less sure of than this count as unknown.
const CONFIDENT: f32 = 0.4;
/// The fewest pixels that make an entity present.
const PRESENT: usize = 8;
/// A frame is wrecked when more of it than this is unknown.
const WRECKED_UNKNOWN: f32 = 0.25;

/// One check's outcome.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Verdict {
    /// The check, e.g. `on(object, surface)` or `count(object)`.
    pub check: String,
    /// True for a relation between nodes, false for an entity's own check.
    pub relation: bool,
    pub passed: bool,
}

/// The judge's verdicts on one image.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Judgement {
    pub verdicts: Vec<Verdict>,
    /// No valid scene: an entity the prompt names is missing, or too much of the frame is
    /// unlike anything the world draws.
    pub wrecked: bool,
    /// The share of pixels the segmenter could not label confidently.
    pub unknown_share: f32,
}

impl Judgement {
    /// Every check passed and the frame is not wrecked.
    pub fn all_passed(&self) -> bool {
        !self.wrecked && self.verdicts.iter().all(|v| v.passed)
    }
}

/// Judges an RGB image (`width * height * 3` bytes) against the scene graph.
pub fn judge(
    segmenter: &Segmenter,
    rgb: &[u8],
    width: usize,
    height: usize,
    csg: &Csg,
) -> Judgement {
    let seg = segmenter.segment(rgb, width, height);
    judge_segmentation(&seg, csg)
}

/// The checks on an already segmented image.
pub fn judge_segmentation(seg: &Segmentation, csg: &Csg) -> Judgement {
    let scene = Scene::new(seg);
    let mut verdicts = Vec::new();
    let mut missing = false;
    for node in &csg.nodes {
        let Some(label) = Label::of_node(node) else {
            continue;
        };
        if node.implied || node.class == Class::Floor {
            continue;
        }
        let region = scene.region(label, node.class);
        let present = region.len() >= PRESENT;
        missing |= !present;
        verdicts.push(entity(&node.id, "exists", present));
        if node.class.is_object() {
            let n = scene.count(label);
            verdicts.push(entity(&node.id, "count", n == node.count as usize));
        }
        if let Some(fill) = node.fill {
            verdicts.push(entity(
                &node.id,
                "fill",
                scene.fill(csg, node) == Some(fill),
            ));
        }
    }
    for r in &csg.relations {
        let (Some(s), Some(o)) = (csg.node(&r.subject), csg.node(&r.object)) else {
            continue;
        };
        let (Some(ls), Some(lo)) = (Label::of_node(s), Label::of_node(o)) else {
            continue;
        };
        let a = scene.region(ls, s.class);
        let b = scene.region(lo, o.class);
        let passed = match r.predicate {
            Predicate::On => scene.on(&a, lo),
            Predicate::In => scene.inside(&a, &b, (lo, o.class)),
            Predicate::LeftOf => ordered(&a, &b, false, true),
            Predicate::RightOf => ordered(&a, &b, false, false),
            Predicate::Above => ordered(&a, &b, true, true),
            Predicate::Below => ordered(&a, &b, true, false),
            Predicate::Behind => behind(&a, &b, (s.class, o.class)),
            Predicate::CloseTo => scene.gap(&a, lo).is_some_and(|g| g <= 8),
            Predicate::FarFrom => scene.gap(&a, lo).is_none_or(|g| g >= 10),
            Predicate::ReflectionOf => reflection_of(&a, &b),
            Predicate::BoundedBy => bounded_by(&a, &scene.solid_parts(lo)),
            Predicate::ShadowOf => scene.shadow_of(&a, &b, csg.light),
        };
        verdicts.push(Verdict {
            check: format!("{}({}, {})", r.predicate.word(), r.subject, r.object),
            relation: true,
            passed,
        });
    }
    let unknown_share = seg.confidence.iter().filter(|&&c| c < CONFIDENT).count() as f32
        / seg.confidence.len().max(1) as f32;
    Judgement {
        verdicts,
        wrecked: missing || unknown_share > WRECKED_UNKNOWN,
        unknown_share,
    }
}

fn entity(id: &str, what: &str, passed: bool) -> Verdict {
    Verdict {
        check: format!("{what}({id})"),
        relation: false,
        passed,
    }
}

/// A set of pixels, `(x, y)`.
#[derive(Debug, Clone, Default)]
struct Region {
    pixels: Vec<(usize, usize)>,
}

impl Region {
    fn len(&self) -> usize {
        self.pixels.len()
    }

    fn is_empty(&self) -> bool {
        self.pixels.is_empty()
    }

    /// `(x0, y0, x1, y1)`, inclusive.
    fn bbox(&self) -> Option<(usize, usize, usize, usize)> {
        let first = self.pixels.first()?;
        Some(self.pixels.iter().fold(
            (first.0, first.1, first.0, first.1),
            |(x0, y0, x1, y1), &(x, y)| (x0.min(x), y0.min(y), x1.max(x), y1.max(y)),
        ))
    }

    fn centre(&self) -> Option<(f32, f32)> {
        if self.is_empty() {
            return None;
        }
        let n = self.len() as f32;
        let (sx, sy) = self
            .pixels
            .iter()
            .fold((0.0, 0.0), |(a, b), &(x, y)| (a + x as f32, b + y as f32));
        Some((sx / n, sy / n))
    }

    /// Per column, the lowest pixel: the region's base, where it would touch what holds it.
    fn base(&self) -> Vec<(usize, usize)> {
        let Some((x0, _, x1, y1)) = self.bbox() else {
            return Vec::new();
        };
        let mut lowest = vec![None; x1 - x0 + 1];
        for &(x, y) in &self.pixels {
            let l = &mut lowest[x - x0];
            *l = Some(l.map_or(y, |v: usize| v.max(y)));
        }
        // The base is what reaches within 1 row of the bottom.
        lowest
            .iter()
            .enumerate()
            .filter_map(|(i, l)| l.filter(|&y| y + 1 >= y1).map(|y| (x0 + i, y)))
            .collect()
    }

    fn count_in(&self, (x0, y0, x1, y1): (usize, usize, usize, usize)) -> usize {
        self.pixels
            .iter()
            .filter(|&&(x, y)| x >= x0 && x <= x1 && y >= y0 && y <= y1)
            .count()
    }
}

/// The segmentation with its confident labels, and the connected parts of each label.
struct Scene<'a> {
    seg: &'a Segmentation,
}

impl<'a> Scene<'a> {
    fn new(seg: &'a Segmentation) -> Self {
        Self { seg }
    }

    fn label(&self, x: usize, y: usize) -> Option<Label> {
        let i = y * self.seg.width + x;
        (self.seg.confidence[i] >= CONFIDENT).then_some(self.seg.labels[i])
    }

    fn all(&self, label: Label) -> Region {
        let mut r = Region::default();
        for y in 0..self.seg.height {
            for x in 0..self.seg.width {
                if self.label(x, y) == Some(label) {
                    r.pixels.push((x, y));
                }
            }
        }
        r
    }

    /// The 8-connected parts of a label, largest first.
    fn parts(&self, label: Label) -> Vec<Region> {
        let (w, h) = (self.seg.width, self.seg.height);
        let mut seen = vec![false; w * h];
        let mut parts = Vec::new();
        for start in 0..w * h {
            if seen[start] || self.label(start % w, start / w) != Some(label) {
                continue;
            }
            seen[start] = true;
            let mut part = Region::default();
            let mut stack = vec![start];
            while let Some(p) = stack.pop() {
                let (x, y) = (p % w, p / w);
                part.pixels.push((x, y));
                for dy in -1isize..=1 {
                    for dx in -1isize..=1 {
                        let (nx, ny) = (x as isize + dx, y as isize + dy);
                        if nx < 0 || ny < 0 || nx >= w as isize || ny >= h as isize {
                            continue;
                        }
                        let q = ny as usize * w + nx as usize;
                        if !seen[q] && self.label(nx as usize, ny as usize) == Some(label) {
                            seen[q] = true;
                            stack.push(q);
                        }
                    }
                }
            }
            parts.push(part);
        }
        parts.sort_by_key(|p| std::cmp::Reverse(p.len()));
        parts
    }

    /// A node's pixels: a solid thing is its label's largest part; a surface, a substance or
    /// an effect is all of its label.
    fn region(&self, label: Label, class: Class) -> Region {
        let solid = class.is_object()
            || matches!(
                class,
                Class::Person | Class::Table | Class::Jar | Class::Lamp
            );
        if solid {
            self.parts(label).into_iter().next().unwrap_or_default()
        } else {
            self.all(label)
        }
    }

    /// A label's pixels without its specks: the parts at least 10% the size of the largest
    /// (and 5 pixels). A few pixels at a reflection's soft tip that look like the mirror
    /// must not stretch the mirror's outline.
    fn solid_parts(&self, label: Label) -> Region {
        let parts = self.parts(label);
        let floor = parts.first().map_or(0, |p| (p.len() / 10).max(5));
        Region {
            pixels: parts
                .into_iter()
                .filter(|p| p.len() >= floor)
                .flat_map(|p| p.pixels)
                .collect(),
        }
    }

    /// How many separate things of this label the image shows: parts at least 30% the size
    /// of the largest (smaller ones are specks and edge fringes).
    fn count(&self, label: Label) -> usize {
        let parts = self.parts(label);
        let Some(largest) = parts.first().map(Region::len) else {
            return 0;
        };
        let floor = (largest * 3 / 10).max(4);
        parts.iter().filter(|p| p.len() >= floor).count()
    }

    /// The ground line: the first row, from the top, that is mostly floor.
    fn ground(&self) -> Option<usize> {
        (0..self.seg.height).find(|&y| {
            let floor = (0..self.seg.width)
                .filter(|&x| self.label(x, y) == Some(Label::Floor))
                .count();
            3 * floor >= self.seg.width
        })
    }

    /// Whether what holds `a` up is `b`. On the floor: `a`'s base reaches the ground line
    /// (within 2 rows). On anything else: under at least half of `a`'s base, within 3 rows,
    /// lies `b` (on a mirror or a puddle, its reflection counts as the surface).
    fn on(&self, a: &Region, b: Label) -> bool {
        let base = a.base();
        let Some(&(_, bottom)) = base.iter().max_by_key(|p| p.1) else {
            return false;
        };
        if b == Label::Floor {
            return self.ground().is_some_and(|g| (bottom + 1).abs_diff(g) <= 2);
        }
        let surface = |l: Label| {
            l == b || (matches!(b, Label::Mirror | Label::Water) && l == Label::Reflection)
        };
        let held = base
            .iter()
            .filter(|&&(x, y)| {
                (y + 1..=(y + 3).min(self.seg.height - 1))
                    .any(|yy| self.label(x, yy).is_some_and(surface))
            })
            .count();
        2 * held >= base.len()
    }

    /// In a jar: 80% of `a` within the jar's box. In a region on the ground (sand, water):
    /// what lies around and under `a`'s feet is mostly that region.
    fn inside(&self, a: &Region, b: &Region, (label, class): (Label, Class)) -> bool {
        let (Some(abox), Some((x0, y0, x1, y1))) = (a.bbox(), b.bbox()) else {
            return false;
        };
        if class == Class::Jar {
            let jar = (x0.saturating_sub(1), y0.saturating_sub(1), x1 + 1, y1 + 1);
            return a.count_in(jar) * 10 >= a.len() * 8;
        }
        let (ax0, _, ax1, ay1) = abox;
        let mut hits = 0;
        let mut total = 0;
        for y in ay1.saturating_sub(1)..=(ay1 + 3).min(self.seg.height - 1) {
            for x in ax0.saturating_sub(2)..=(ax1 + 2).min(self.seg.width - 1) {
                if a.pixels.contains(&(x, y)) {
                    continue;
                }
                total += 1;
                hits += usize::from(self.label(x, y) == Some(label));
            }
        }
        total > 0 && 2 * hits > total
    }

    /// The horizontal gap, in pixels, between `a` and the nearest pixel of `b` in the band
    /// around `a`'s feet; `None` when `b` is nowhere in that band.
    fn gap(&self, a: &Region, b: Label) -> Option<usize> {
        let (x0, _, x1, y1) = a.bbox()?;
        let rows = y1.saturating_sub(3)..=(y1 + 4).min(self.seg.height - 1);
        let mut best: Option<usize> = None;
        for y in rows {
            for x in 0..self.seg.width {
                if self.label(x, y) != Some(b) {
                    continue;
                }
                let d = x0.saturating_sub(x).max(x.saturating_sub(x1));
                best = Some(best.map_or(d, |v| v.min(d)));
            }
        }
        best
    }

    /// A jar's fill level: how much of its height, from its bottom, the content reaches.
    fn fill(&self, csg: &Csg, jar: &Node) -> Option<Fill> {
        let (x0, y0, x1, y1) = self.region(Label::Jar, Class::Jar).bbox()?;
        let content: Vec<Label> = csg
            .relations
            .iter()
            .filter(|r| r.object == jar.id && r.predicate == Predicate::In)
            .filter_map(|r| csg.node(&r.subject).and_then(Label::of_node))
            .collect();
        let inner = (x0 + 1, y0, x1.saturating_sub(1), y1);
        let top = (inner.1..=inner.3).find(|&y| {
            (inner.0..=inner.2).any(|x| self.label(x, y).is_some_and(|l| content.contains(&l)))
        })?;
        let height = (y1 - y0 + 1) as f32;
        let level = (y1 + 1 - top) as f32 / height;
        Some(if level > 0.5 {
            Fill::MoreThanHalf
        } else {
            Fill::LessThanHalf
        })
    }

    /// A shadow cast by `o`: near `o`'s base, on the side away from the light, at least 4
    /// pixels and twice what lies on the near side; under a light from above, under `o`
    /// and balanced (neither side more than three times the other).
    fn shadow_of(&self, shadow: &Region, o: &Region, light: Option<Light>) -> bool {
        let (Some((x0, _, x1, y1)), Some((cx, _))) = (o.bbox(), o.centre()) else {
            return false;
        };
        let band = (x0.saturating_sub(14), y1.saturating_sub(3), x1 + 14, y1 + 8);
        let (mut left, mut right) = (0usize, 0usize);
        for &(x, y) in &shadow.pixels {
            if x < band.0 || x > band.2 || y < band.1 || y > band.3 {
                continue;
            }
            if (x as f32) < cx {
                left += 1;
            } else {
                right += 1;
            }
        }
        match light {
            Some(Light::Left) => right >= 4 && right >= 2 * left,
            Some(Light::Right) => left >= 4 && left >= 2 * right,
            Some(Light::Above) => left + right >= 4 && left.min(right) * 3 >= left.max(right),
            None => left + right >= 4,
        }
    }
}

/// `a` before `b` along an axis (x: left of; y: above), or after it: the centres at least 2
/// pixels apart, in that order.
fn ordered(a: &Region, b: &Region, vertical: bool, before: bool) -> bool {
    let (Some(ca), Some(cb)) = (a.centre(), b.centre()) else {
        return false;
    };
    let (pa, pb) = if vertical { (ca.1, cb.1) } else { (ca.0, cb.0) };
    if before { pa + 2.0 < pb } else { pa > pb + 2.0 }
}

/// How much of its whole outline a solid object shows: its area over the area its kind
/// would cover at its larger extent (an occluder bites into the width or the height, not
/// both). 1 for an unhidden object, less for one partly behind another.
fn completeness(r: &Region, class: Class) -> Option<f32> {
    let (x0, y0, x1, y1) = r.bbox()?;
    let extent = ((x1 - x0 + 1).max(y1 - y0 + 1)) as f32;
    let whole = match class {
        Class::Ball => std::f32::consts::FRAC_PI_4,
        Class::Cone => 0.5,
        _ => 1.0,
    } * extent
        * extent;
    Some(r.len() as f32 / whole)
}

/// `a` behind `b`: they touch, and `a` shows clearly less of its outline than `b` does.
fn behind(a: &Region, b: &Region, (ca, cb): (Class, Class)) -> bool {
    let (Some(bbox), Some(fa), Some(fb)) = (b.bbox(), completeness(a, ca), completeness(b, cb))
    else {
        return false;
    };
    let near = (
        bbox.0.saturating_sub(1),
        bbox.1.saturating_sub(1),
        bbox.2 + 1,
        bbox.3 + 1,
    );
    a.count_in(near) > 0 && fa + 0.08 < fb.min(1.0)
}

/// `r` mirrors `o`: enough reflection below `o`'s base, centred under it.
fn reflection_of(r: &Region, o: &Region) -> bool {
    let (Some((ox0, _, ox1, oy1)), Some((ocx, _))) = (o.bbox(), o.centre()) else {
        return false;
    };
    let below = Region {
        pixels: r
            .pixels
            .iter()
            .copied()
            .filter(|&(_, y)| y + 1 >= oy1)
            .collect(),
    };
    let Some((rcx, _)) = below.centre() else {
        return false;
    };
    let width = (ox1 - ox0 + 1) as f32;
    below.len() >= (o.len() / 12).max(4) && (rcx - ocx).abs() <= (width / 4.0).max(2.0)
}

/// `r` stays within the surface `s`: at most 10% (or 2 pixels) of it outside the surface's
/// box, with a pixel of slack.
fn bounded_by(r: &Region, s: &Region) -> bool {
    if r.is_empty() {
        return true;
    }
    let Some((x0, y0, x1, y1)) = s.bbox() else {
        return false;
    };
    let inside = r.count_in((x0.saturating_sub(1), y0.saturating_sub(1), x1 + 1, y1 + 1));
    let outside = r.len() - inside;
    outside <= (r.len() / 10).max(2)
}
