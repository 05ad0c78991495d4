//! The automatic checker: given an image and its CSG, decide for each node, attribute,
//! relation and implied effect whether the image shows it.
//!
//! It knows nothing of where the generator put things: it finds each node by its colour
//! (every class has one flat colour, see `palette`) and judges relations from the geometry
//! of what it finds, so it can judge a model's image as well as a rendered one. A pixel takes
//! the label of the nearest colour among those the CSG can show, or none when every colour
//! is farther than `MAX_DISTANCE`.

use serde::Serialize;

use super::palette::{self, Rgb};
use lina_csg::{Class, Csg, Fill, Light, Predicate};
use lina_runtime::image::Image;

/// RGB distance beyond which a pixel is of no known colour.
const MAX_DISTANCE: u32 = 60;
/// The fewest pixels a node must show to count as present.
const MIN_AREA: usize = 10;

/// One check's outcome.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verdict {
    /// What kind of check: exists, shape, count, fill, or a predicate's name.
    pub kind: &'static str,
    /// The check in words, e.g. `on(object, surface)`.
    pub check: String,
    pub passed: bool,
    /// The measurement behind the verdict.
    pub detail: String,
}

impl Verdict {
    /// Whether this checks a relation between two nodes (an edge of the scene graph), not
    /// one node's presence, shape, count or fill.
    pub fn is_relation(&self) -> bool {
        !matches!(self.kind, "exists" | "shape" | "count" | "fill")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Label {
    Wall,
    Floor,
    Shadow,
    Node(usize),
}

/// Pixels of the image, labelled.
struct Labels<'a> {
    width: usize,
    height: usize,
    labels: Vec<Option<Label>>,
    csg: &'a Csg,
}

/// A set of pixels with its bounding box and centroid.
#[derive(Debug, Clone, Default)]
struct Blob {
    pixels: Vec<(usize, usize)>,
    x0: usize,
    y0: usize,
    x1: usize,
    y1: usize,
}

impl Blob {
    fn from(pixels: Vec<(usize, usize)>) -> Self {
        let mut b = Blob {
            x0: usize::MAX,
            y0: usize::MAX,
            ..Default::default()
        };
        for &(x, y) in &pixels {
            b.x0 = b.x0.min(x);
            b.y0 = b.y0.min(y);
            b.x1 = b.x1.max(x);
            b.y1 = b.y1.max(y);
        }
        b.pixels = pixels;
        b
    }

    fn area(&self) -> usize {
        self.pixels.len()
    }

    fn width(&self) -> f32 {
        (self.x1 + 1 - self.x0) as f32
    }

    fn height(&self) -> f32 {
        (self.y1 + 1 - self.y0) as f32
    }

    fn cx(&self) -> f32 {
        self.pixels.iter().map(|p| p.0 as f32).sum::<f32>() / self.area() as f32 + 0.5
    }

    fn cy(&self) -> f32 {
        self.pixels.iter().map(|p| p.1 as f32).sum::<f32>() / self.area() as f32 + 0.5
    }

    /// Area over the area the whole shape of `class` would have, from its larger extent.
    fn completeness(&self, class: Class) -> f32 {
        let d = self.width().max(self.height());
        let full = match class {
            Class::Ball => std::f32::consts::FRAC_PI_4 * d * d,
            Class::Cone => 0.5 * d * d,
            _ => d * d,
        };
        self.area() as f32 / full
    }
}

/// The colours a scene with this CSG can show, and which label each stands for.
fn candidates(csg: &Csg) -> Vec<(Label, Rgb)> {
    let mut out = vec![(Label::Wall, palette::WALL), (Label::Floor, palette::FLOOR)];
    for (i, node) in csg.nodes.iter().enumerate() {
        match node.class {
            Class::Shadow => out.push((Label::Shadow, palette::SHADOW)),
            Class::Floor => {}
            Class::Reflection => {
                let of = |p: Predicate| {
                    csg.relations
                        .iter()
                        .find(|r| r.subject == node.id && r.predicate == p)
                        .and_then(|r| csg.node(&r.object))
                };
                let object = of(Predicate::ReflectionOf).and_then(node_colour);
                let surface = of(Predicate::BoundedBy).and_then(node_colour);
                if let (Some(o), Some(s)) = (object, surface) {
                    out.push((Label::Node(i), palette::reflected(o, s)));
                }
            }
            Class::Person => {
                out.push((Label::Node(i), palette::SHIRT));
                out.push((Label::Node(i), palette::SKIN));
            }
            _ => {
                if let Some(rgb) = node_colour(node) {
                    out.push((Label::Node(i), rgb));
                }
            }
        }
    }
    out
}

fn node_colour(node: &lina_csg::Node) -> Option<Rgb> {
    match node.colour {
        Some(c) => Some(palette::colour(c)),
        None => palette::class_colour(node.class),
    }
}

impl<'a> Labels<'a> {
    fn new(image: &Image, csg: &'a Csg) -> Self {
        let candidates = candidates(csg);
        let labels = image
            .rgb
            .chunks_exact(3)
            .map(|p| {
                let rgb = [p[0], p[1], p[2]];
                candidates
                    .iter()
                    .map(|(label, c)| (palette::distance2(rgb, *c), *label))
                    .min_by_key(|(d, _)| *d)
                    .filter(|(d, _)| *d <= MAX_DISTANCE * MAX_DISTANCE)
                    .map(|(_, label)| label)
            })
            .collect();
        let mut labels = Self {
            width: image.width,
            height: image.height,
            labels,
            csg,
        };
        labels.unlabel_rims();
        labels
    }

    /// A model's soft edge between an object and the wall blends the two colours, and that
    /// blend lies within `MAX_DISTANCE` of the object's reflected colour (the mirror's and
    /// the wall's colours are close). A reflection-coloured pixel with the object on one side
    /// and the wall on another is such a rim, not reflection: the rendered ground truth has
    /// no soft edges, and a real reflection lies below the ground line, against the surface
    /// or the floor.
    fn unlabel_rims(&mut self) {
        let pairs: Vec<(usize, usize)> = self
            .csg
            .relations
            .iter()
            .filter(|r| r.predicate == Predicate::ReflectionOf)
            .filter_map(|r| Some((self.index(&r.subject)?, self.index(&r.object)?)))
            .collect();
        let before = self.labels.clone();
        let at = |x: usize, y: usize| before[y * self.width + x];
        for y in 0..self.height {
            for x in 0..self.width {
                let Some(&(_, object)) = pairs
                    .iter()
                    .find(|(r, _)| at(x, y) == Some(Label::Node(*r)))
                else {
                    continue;
                };
                // The 4-neighbours inside the image (wrapping_sub leaves the left and top
                // edges out of range).
                let around: Vec<Option<Label>> = [
                    (x.wrapping_sub(1), y),
                    (x + 1, y),
                    (x, y.wrapping_sub(1)),
                    (x, y + 1),
                ]
                .into_iter()
                .filter(|&(nx, ny)| nx < self.width && ny < self.height)
                .map(|(nx, ny)| at(nx, ny))
                .collect();
                if around.contains(&Some(Label::Node(object)))
                    && around.contains(&Some(Label::Wall))
                {
                    self.labels[y * self.width + x] = None;
                }
            }
        }
    }

    fn at(&self, x: usize, y: usize) -> Option<Label> {
        self.labels[y * self.width + x]
    }

    fn index(&self, id: &str) -> Option<usize> {
        self.csg.nodes.iter().position(|n| n.id == id)
    }

    fn pixels(&self, wanted: impl Fn(Label) -> bool) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        for y in 0..self.height {
            for x in 0..self.width {
                if self.at(x, y).is_some_and(&wanted) {
                    out.push((x, y));
                }
            }
        }
        out
    }

    fn node_pixels(&self, node: usize) -> Vec<(usize, usize)> {
        self.pixels(|l| l == Label::Node(node))
    }

    /// The 8-connected components of a node's pixels, largest first.
    fn components(&self, node: usize) -> Vec<Blob> {
        let mut seen = vec![false; self.width * self.height];
        let mut out = Vec::new();
        for (x, y) in self.node_pixels(node) {
            if seen[y * self.width + x] {
                continue;
            }
            seen[y * self.width + x] = true;
            let mut stack = vec![(x, y)];
            let mut pixels = Vec::new();
            while let Some((px, py)) = stack.pop() {
                pixels.push((px, py));
                for dy in -1i32..=1 {
                    for dx in -1i32..=1 {
                        let (nx, ny) = (px as i32 + dx, py as i32 + dy);
                        if nx < 0 || ny < 0 || nx >= self.width as i32 || ny >= self.height as i32 {
                            continue;
                        }
                        let (nx, ny) = (nx as usize, ny as usize);
                        if !seen[ny * self.width + nx] && self.at(nx, ny) == Some(Label::Node(node))
                        {
                            seen[ny * self.width + nx] = true;
                            stack.push((nx, ny));
                        }
                    }
                }
            }
            out.push(Blob::from(pixels));
        }
        out.sort_by_key(|b| std::cmp::Reverse(b.area()));
        out
    }

    /// The node's largest component, if it is big enough to count as present.
    fn main_blob(&self, node: usize) -> Option<Blob> {
        self.components(node)
            .into_iter()
            .next()
            .filter(|b| b.area() >= MIN_AREA)
    }
}

/// Judges `image` against every check that `csg` implies. The thresholds are in pixels of
/// the probe's 64x64 world; other sizes are not meaningful.
pub fn check(image: &Image, csg: &Csg) -> Vec<Verdict> {
    let labels = Labels::new(image, csg);
    let mut out = Vec::new();
    let behind: Vec<&str> = csg
        .relations
        .iter()
        .filter(|r| r.predicate == Predicate::Behind)
        .map(|r| r.subject.as_str())
        .collect();
    for (i, node) in csg.nodes.iter().enumerate() {
        if node.implied || node.class == Class::Floor {
            continue;
        }
        let blob = labels.main_blob(i);
        out.push(Verdict {
            kind: "exists",
            check: format!("exists({})", node.id),
            passed: blob.is_some(),
            detail: format!(
                "largest region {} px",
                blob.as_ref().map_or(0, |b| b.area())
            ),
        });
        if node.class.is_object() {
            let shared = csg
                .nodes
                .iter()
                .filter(|n| n.colour.is_some() && n.colour == node.colour)
                .count()
                > 1;
            if !shared && !behind.contains(&node.id.as_str()) {
                out.push(count_check(&labels, i));
                if node.count == 1 {
                    out.push(shape_check(blob.as_ref(), node));
                }
            }
        }
        if let Some(fill) = node.fill {
            out.push(fill_check(&labels, i, fill));
        }
    }
    for r in &csg.relations {
        let (Some(s), Some(o)) = (labels.index(&r.subject), labels.index(&r.object)) else {
            continue;
        };
        let (passed, detail) = match r.predicate {
            Predicate::On => on(&labels, s, o),
            Predicate::In => inside(&labels, s, o),
            Predicate::LeftOf => order(&labels, s, o, Axis::X, true),
            Predicate::RightOf => order(&labels, s, o, Axis::X, false),
            Predicate::Above => order(&labels, s, o, Axis::Y, true),
            Predicate::Below => order(&labels, s, o, Axis::Y, false),
            Predicate::Behind => behind_check(&labels, s, o),
            Predicate::CloseTo => distance(&labels, s, o, true),
            Predicate::FarFrom => distance(&labels, s, o, false),
            Predicate::ReflectionOf => reflection_of(&labels, s, o),
            Predicate::BoundedBy => bounded_by(&labels, s, o),
            Predicate::ShadowOf => shadow_of(&labels, o, csg.light),
        };
        out.push(Verdict {
            kind: r.predicate.word(),
            check: relation_check(r),
            passed,
            detail,
        });
    }
    out
}

/// How a relation's verdict names its check: `on(object, surface)`.
pub fn relation_check(r: &lina_csg::Relation) -> String {
    format!("{}({}, {})", r.predicate.word(), r.subject, r.object)
}

/// What the checker sees in an image, as pixel masks (row-major, `width * height`), for
/// interventions that act on the model's own early picture of the scene.
pub struct Segmentation {
    pub width: usize,
    pub height: usize,
    /// Per CSG node, in the graph's order: every pixel that takes its label.
    pub nodes: Vec<Vec<bool>>,
    /// Per CSG node: the box `[x0, y0, x1, y1]` (inclusive pixels) of its largest region,
    /// where it is present.
    pub boxes: Vec<Option<[usize; 4]>>,
    /// Pixels of the shadow colour.
    pub shadow: Vec<bool>,
    /// Pixels of the wall or the floor: the scene's background.
    pub background: Vec<bool>,
}

/// Labels `image`'s pixels as the checker does for `csg`.
pub fn segment(image: &Image, csg: &Csg) -> Segmentation {
    let labels = Labels::new(image, csg);
    let mask = |wanted: &dyn Fn(Label) -> bool| -> Vec<bool> {
        labels
            .labels
            .iter()
            .map(|l| l.is_some_and(wanted))
            .collect()
    };
    Segmentation {
        width: image.width,
        height: image.height,
        nodes: (0..csg.nodes.len())
            .map(|i| mask(&|l| l == Label::Node(i)))
            .collect(),
        boxes: (0..csg.nodes.len())
            .map(|i| labels.main_blob(i).map(|b| [b.x0, b.y0, b.x1, b.y1]))
            .collect(),
        shadow: mask(&|l| l == Label::Shadow),
        background: mask(&|l| matches!(l, Label::Wall | Label::Floor)),
    }
}

fn count_check(labels: &Labels, node: usize) -> Verdict {
    let comps = labels.components(node);
    let largest = comps.first().map_or(0, |b| b.area());
    let floor = MIN_AREA.max(largest * 35 / 100);
    let found = comps.iter().filter(|b| b.area() >= floor).count();
    let wanted = labels.csg.nodes[node].count as usize;
    Verdict {
        kind: "count",
        check: format!("count({}) = {wanted}", labels.csg.nodes[node].id),
        passed: found == wanted,
        detail: format!("{found} found"),
    }
}

fn shape_check(blob: Option<&Blob>, node: &lina_csg::Node) -> Verdict {
    // Area over bounding-box area: 1 for a square, pi/4 for a disc, 1/2 for a triangle.
    let (passed, detail) = match blob {
        None => (false, "not found".to_string()),
        Some(b) => {
            let ratio = b.area() as f32 / (b.width() * b.height());
            let seen = if ratio >= 0.87 {
                Class::Cube
            } else if ratio >= 0.64 {
                Class::Ball
            } else {
                Class::Cone
            };
            (
                seen == node.class,
                format!("fill ratio {ratio:.2}: looks like a {}", seen.word()),
            )
        }
    };
    Verdict {
        kind: "shape",
        check: format!("shape({}) = {}", node.id, node.class.word()),
        passed,
        detail,
    }
}

/// A container's fill level: the share of its inner rows that its content fills.
fn fill_check(labels: &Labels, jar: usize, fill: Fill) -> Verdict {
    let id = &labels.csg.nodes[jar].id;
    let content = labels.csg.relations.iter().find_map(|r| {
        (r.predicate == Predicate::In && r.object == *id)
            .then(|| labels.index(&r.subject))
            .flatten()
    });
    let wanted = match fill {
        Fill::LessThanHalf => "less than half",
        Fill::MoreThanHalf => "more than half",
    };
    let verdict = |passed, detail| Verdict {
        kind: "fill",
        check: format!("fill({id}) {wanted}"),
        passed,
        detail,
    };
    let (Some(walls), Some(content)) = (labels.main_blob(jar), content) else {
        return verdict(false, "no jar or no content found".to_string());
    };
    let is = |x, y, l| labels.at(x, y) == Some(l);
    // Inner columns are those the walls do not fill top to bottom.
    let columns: Vec<usize> = (walls.x0..=walls.x1)
        .filter(|&x| {
            let wall = (walls.y0..=walls.y1)
                .filter(|&y| is(x, y, Label::Node(jar)))
                .count();
            (wall as f32) < 0.5 * walls.height()
        })
        .collect();
    if columns.is_empty() {
        return verdict(false, "the jar has no inside".to_string());
    }
    // Inner rows run from the jar's top to its bottom wall.
    let rows: Vec<usize> = (walls.y0..=walls.y1)
        .filter(|&y| {
            let wall = columns
                .iter()
                .filter(|&&x| is(x, y, Label::Node(jar)))
                .count();
            (wall as f32) < 0.5 * columns.len() as f32
        })
        .collect();
    let filled = rows
        .iter()
        .filter(|&&y| {
            let c = columns
                .iter()
                .filter(|&&x| is(x, y, Label::Node(content)))
                .count();
            c as f32 >= 0.5 * columns.len() as f32
        })
        .count();
    if filled == 0 {
        return verdict(false, "no content in the jar".to_string());
    }
    let level = filled as f32 / rows.len().max(1) as f32;
    let passed = match fill {
        Fill::LessThanHalf => level < 0.5,
        Fill::MoreThanHalf => level > 0.5,
    };
    verdict(passed, format!("filled to {:.0}%", 100.0 * level))
}

/// The pixels that can hold up an object resting on `support`: its own, those of anything
/// bounded by it (a reflection in a mirror), and for the floor anything that is not wall.
fn support_pixels(labels: &Labels, support: usize) -> Vec<bool> {
    let csg = labels.csg;
    let id = &csg.nodes[support].id;
    let on_it: Vec<usize> = csg
        .relations
        .iter()
        .filter(|r| r.predicate == Predicate::BoundedBy && r.object == *id)
        .filter_map(|r| labels.index(&r.subject))
        .collect();
    let floor = csg.nodes[support].class == Class::Floor;
    labels
        .labels
        .iter()
        .map(|l| match l {
            Some(Label::Node(n)) => *n == support || on_it.contains(n),
            Some(Label::Wall) | None => false,
            Some(_) => floor,
        })
        .collect()
}

/// Rests on: under the object's lowest row, within three rows, lies the support, across at
/// least half of the object's bottom.
fn on(labels: &Labels, object: usize, support: usize) -> (bool, String) {
    let Some(blob) = labels.main_blob(object) else {
        return (false, "object not found".to_string());
    };
    let below = support_pixels(labels, support);
    let bottom: Vec<usize> = (blob.x0..=blob.x1)
        .filter(|&x| {
            blob.pixels.contains(&(x, blob.y1))
                || blob.pixels.contains(&(x, blob.y1.saturating_sub(1)))
        })
        .collect();
    let touching = bottom
        .iter()
        .filter(|&&x| {
            (blob.y1 + 1..=blob.y1 + 3)
                .filter(|&y| y < labels.height)
                .any(|y| below[y * labels.width + x])
        })
        .count();
    let share = touching as f32 / bottom.len().max(1) as f32;
    (
        share >= 0.5,
        format!("{:.0}% of the bottom touches", 100.0 * share),
    )
}

/// Stands in a region (sand, water) or a container: for a container, most of the subject's
/// pixels lie within its box; otherwise the ground under the subject's lowest row is the
/// region more than any other labelled region.
fn inside(labels: &Labels, subject: usize, region: usize) -> (bool, String) {
    let Some(blob) = labels.main_blob(subject) else {
        return (false, "subject not found".to_string());
    };
    if labels.csg.nodes[region].class == Class::Jar {
        let Some(jar) = labels.main_blob(region) else {
            return (false, "container not found".to_string());
        };
        let within = blob
            .pixels
            .iter()
            .filter(|(x, y)| (jar.x0..=jar.x1).contains(x) && (jar.y0..=jar.y1).contains(y))
            .count();
        let share = within as f32 / blob.area() as f32;
        return (share >= 0.8, format!("{:.0}% inside", 100.0 * share));
    }
    // Ordered, so that a tie resolves the same way on every run.
    let mut hits = std::collections::BTreeMap::new();
    for x in blob.x0..=blob.x1 {
        for y in blob.y1 + 1..(blob.y1 + 4).min(labels.height) {
            if let Some(Label::Node(n)) = labels.at(x, y)
                && n != subject
            {
                *hits.entry(n).or_insert(0usize) += 1;
            }
        }
    }
    let under = hits.iter().max_by_key(|(_, c)| **c).map(|(n, _)| *n);
    let word = under.map_or("nothing known".to_string(), |n| {
        labels.csg.nodes[n].id.clone()
    });
    (under == Some(region), format!("standing on {word}"))
}

/// Which way `order` compares two centres: across the image, or up and down it.
#[derive(Clone, Copy)]
enum Axis {
    X,
    Y,
}

/// Left of, right of, above or below: the subject's centre comes before the object's along
/// `axis` (left, or up) when `before`, after it otherwise, by more than 2 px.
fn order(labels: &Labels, a: usize, b: usize, axis: Axis, before: bool) -> (bool, String) {
    let (Some(ba), Some(bb)) = (labels.main_blob(a), labels.main_blob(b)) else {
        return (false, "an object is missing".to_string());
    };
    let (d, how) = match axis {
        Axis::X => (bb.cx() - ba.cx(), ""),
        Axis::Y => (bb.cy() - ba.cy(), " vertically"),
    };
    let passed = if before { d > 2.0 } else { d < -2.0 };
    (passed, format!("centres {d:+.1} px apart{how}"))
}

/// Partly hidden behind: the hidden one shows less than 85% of its whole shape, the front
/// one at least that, and they touch.
fn behind_check(labels: &Labels, hidden: usize, front: usize) -> (bool, String) {
    let (Some(bh), Some(bf)) = (labels.main_blob(hidden), labels.main_blob(front)) else {
        return (false, "an object is missing".to_string());
    };
    let vh = bh.completeness(labels.csg.nodes[hidden].class);
    let vf = bf.completeness(labels.csg.nodes[front].class);
    let touch = bh.pixels.iter().any(|&(x, y)| {
        bf.pixels
            .iter()
            .any(|&(u, v)| x.abs_diff(u) <= 2 && y.abs_diff(v) <= 2)
    });
    (
        vh < 0.85 && vf >= 0.85 && touch,
        format!(
            "hidden one shows {:.0}%, front one {:.0}%, touching: {touch}",
            100.0 * vh,
            100.0 * vf
        ),
    )
}

/// Horizontal gap between the subject and the nearest pixel of the region, near the
/// subject's feet: close is at most 9 pixels, far at least 12.
fn distance(labels: &Labels, subject: usize, region: usize, close: bool) -> (bool, String) {
    let Some(blob) = labels.main_blob(subject) else {
        return (false, "subject not found".to_string());
    };
    let rows = blob.y1.saturating_sub(6)..(blob.y1 + 5).min(labels.height);
    let mut gap = usize::MAX;
    for y in rows {
        for x in 0..labels.width {
            if labels.at(x, y) == Some(Label::Node(region)) {
                let d = if x < blob.x0 {
                    blob.x0 - x
                } else {
                    x.saturating_sub(blob.x1)
                };
                gap = gap.min(d);
            }
        }
    }
    // A region that is not there is neither close nor far: the check fails.
    let passed = gap != usize::MAX && if close { gap <= 9 } else { gap >= 12 };
    let detail = if gap == usize::MAX {
        "region not found near the feet".to_string()
    } else {
        format!("{gap} px apart")
    };
    (passed, detail)
}

/// A reflection mirrors its object: it is there, below the object's base, and centred under
/// the object.
fn reflection_of(labels: &Labels, reflection: usize, object: usize) -> (bool, String) {
    let Some(obj) = labels.main_blob(object) else {
        return (false, "object not found".to_string());
    };
    let pixels = labels.node_pixels(reflection);
    let needed = 6usize.max(obj.area() / 10);
    if pixels.len() < needed {
        return (
            false,
            format!("{} reflection px, {needed} needed", pixels.len()),
        );
    }
    let r = Blob::from(pixels);
    let dx = r.cx() - obj.cx();
    let below = r.cy() > obj.y1 as f32;
    let aligned = dx.abs() <= 3.0f32.max(0.25 * obj.width());
    (
        aligned && below,
        format!("centred {dx:+.1} px from the object, below it: {below}"),
    )
}

/// The subject's pixels (a reflection) stay within the outline of the surface: at most 10%
/// (and at least 3 pixels' slack) fall outside the surface's box.
fn bounded_by(labels: &Labels, subject: usize, surface: usize) -> (bool, String) {
    let pixels = labels.node_pixels(subject);
    // The reflection may split the surface into parts: its outline is the box of all its
    // parts but specks.
    let parts: Vec<(usize, usize)> = labels
        .components(surface)
        .into_iter()
        .filter(|b| b.area() >= 4)
        .flat_map(|b| b.pixels)
        .collect();
    if parts.len() < MIN_AREA {
        return (false, "surface not found".to_string());
    }
    let s = Blob::from(parts);
    let outside = pixels
        .iter()
        .filter(|&&(x, y)| x + 1 < s.x0 || x > s.x1 + 1 || y + 1 < s.y0 || y > s.y1 + 1)
        .count();
    if pixels.len() < MIN_AREA {
        return (
            false,
            format!("{} reflection px: nothing to bound", pixels.len()),
        );
    }
    let allowed = 3usize.max(pixels.len() / 10);
    (
        outside <= allowed,
        format!("{outside} of {} px outside the surface", pixels.len()),
    )
}

/// A shadow lies on the floor next to its object's base, on the side away from the light
/// (under the object for a light from above).
fn shadow_of(labels: &Labels, object: usize, light: Option<Light>) -> (bool, String) {
    let Some(obj) = labels.main_blob(object) else {
        return (false, "object not found".to_string());
    };
    let (cx, w) = (obj.cx(), obj.width());
    let rows = obj.y1.saturating_sub(2)..(obj.y1 + 7).min(labels.height);
    let count = |lo: f32, hi: f32| {
        let mut n = 0;
        for y in rows.clone() {
            for x in 0..labels.width {
                let xc = x as f32 + 0.5;
                if xc >= lo && xc < hi && labels.at(x, y) == Some(Label::Shadow) {
                    n += 1;
                }
            }
        }
        n
    };
    let left = count(cx - w, cx - w / 4.0);
    let right = count(cx + w / 4.0, cx + w);
    let (passed, detail) = match light {
        Some(Light::Left) => (right >= 4 && right >= 2 * left, "right"),
        Some(Light::Right) => (left >= 4 && left >= 2 * right, "left"),
        Some(Light::Above) | None => {
            let under = count(cx - w / 2.0, cx + w / 2.0);
            let balanced = left.min(right) * 2 >= left.max(right);
            (under >= 4 && balanced, "under the object")
        }
    };
    (
        passed,
        format!("expected {detail}: {left} px left, {right} px right"),
    )
}

/// Where each node of `csg` shows in `image`: the box of its largest region in [0, 1] image
/// coordinates (`[x0, y0, x1, y1]`), or `None` where it does not show. For layouts read off
/// an image, as LINA's latent-space guidance does from an early prediction.
pub fn locate(image: &Image, csg: &Csg) -> Vec<Option<[f32; 4]>> {
    let labels = Labels::new(image, csg);
    let (w, h) = (image.width as f32, image.height as f32);
    (0..csg.nodes.len())
        .map(|i| {
            labels.main_blob(i).map(|b| {
                [
                    b.x0 as f32 / w,
                    b.y0 as f32 / h,
                    (b.x1 + 1) as f32 / w,
                    (b.y1 + 1) as f32 / h,
                ]
            })
        })
        .collect()
}
