//! Scene sampling: for each category, draw a scene from the training priors or from the
//! held-out recombinations, build its CSG, its prompt, and the shapes that depict it.
//!
//! The world is a side view, `SIZE` pixels square: a wall above the ground line `GROUND`, the
//! floor below it. Everything that stands, stands on the ground line (or on something that
//! does), so "floating" is never ambiguous. Light, where there is one, is a lamp in a top
//! corner (or the top centre); shadows lie on the floor on the side away from it.
//! Reflecting surfaces (mirrors, puddles) lie on the floor below the ground line, and an
//! object standing on one is mirrored about the ground line, clipped to the surface.

use serde::{Deserialize, Serialize};

use super::palette::{self, Rgb};
use super::raster::{Item, Rect, Shape};
use lina_csg::rules::implied_id;
use lina_csg::{Class, Colour, Csg, Fill, Light, Node, Predicate, Size};
use lina_runtime::rng::Rng;

/// Image side in pixels. 64 is the smallest size at which a 2-pixel jar wall, a 4-pixel
/// shadow band and a clipped reflection still survive the 4x latent codec, and the model that
/// learns these scenes trains on a 2-core CPU.
pub const SIZE: usize = 64;
/// The ground line: the first floor row.
pub const GROUND: f32 = 46.0;
/// Object heights for the three sizes, in pixels.
pub const HEIGHTS: [f32; 3] = [8.0, 12.0, 16.0];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    Reflection,
    Shadow,
    Support,
    Spatial,
    Quantity,
    Occlusion,
    Counting,
}

impl Category {
    pub const ALL: [Category; 7] = [
        Category::Reflection,
        Category::Shadow,
        Category::Support,
        Category::Spatial,
        Category::Quantity,
        Category::Occlusion,
        Category::Counting,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Category::Reflection => "reflection",
            Category::Shadow => "shadow",
            Category::Support => "support",
            Category::Spatial => "spatial",
            Category::Quantity => "quantity",
            Category::Occlusion => "occlusion",
            Category::Counting => "counting",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.name() == name)
    }
}

/// Which distribution a scene comes from. `Train` and `Test` share the training priors (with
/// different seeds); `Ood` draws only the recombinations that the training split never shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Split {
    Train,
    Test,
    Ood,
}

/// A sampled scene before rendering.
#[derive(Debug, Clone)]
pub struct Scene {
    pub category: Category,
    pub subcategory: &'static str,
    pub csg: Csg,
    pub prompt: String,
    pub(super) items: Vec<Item>,
}

/// A movable object: its kind (ball, cube, cone), colour and height in pixels.
#[derive(Debug, Clone, Copy)]
struct Obj {
    kind: Class,
    colour: Colour,
    size: usize,
}

impl Obj {
    fn random(rng: &mut Rng, sizes: &[usize]) -> Self {
        Obj {
            kind: rng.pick(&[Class::Ball, Class::Cube, Class::Cone]),
            colour: rng.pick(&Colour::ALL),
            size: rng.pick(sizes),
        }
    }

    fn h(&self) -> f32 {
        HEIGHTS[self.size]
    }

    fn rgb(&self) -> Rgb {
        palette::colour(self.colour)
    }

    /// The object standing with its base on `base`, centred on `cx`.
    fn shape(&self, cx: f32, base: f32) -> Shape {
        let h = self.h();
        match self.kind {
            Class::Ball => Shape::Disc {
                cx,
                cy: base - h / 2.0,
                r: h / 2.0,
            },
            Class::Cone => Shape::Triangle {
                cx,
                top: base - h,
                bottom: base,
                half_width: h / 2.0,
            },
            _ => Shape::Rect(Rect::new(cx - h / 2.0, base - h, cx + h / 2.0, base)),
        }
    }

    fn words(&self) -> String {
        format!("{} {}", self.colour.word(), self.kind.word())
    }

    fn node(&self, id: &str) -> Node {
        let size = [Size::Small, Size::Medium, Size::Large][self.size];
        Node::new(id, self.kind).coloured(self.colour).sized(size)
    }
}

/// Builds a scene's CSG and shapes together, so that node indices and ids stay in step.
struct Builder {
    csg: Csg,
    items: Vec<Item>,
}

impl Builder {
    fn new() -> Self {
        Self {
            csg: Csg::new(),
            items: Vec::new(),
        }
    }

    fn node(&mut self, node: Node) -> usize {
        self.csg.nodes.push(node);
        self.csg.nodes.len() - 1
    }

    fn paint(&mut self, node: usize, shape: Shape, colour: Rgb) -> &mut Item {
        self.items.push(Item::new(node, shape, colour));
        self.items.last_mut().unwrap()
    }

    fn relate(&mut self, subject: usize, predicate: Predicate, object: usize) {
        let (s, o) = (
            self.csg.nodes[subject].id.clone(),
            self.csg.nodes[object].id.clone(),
        );
        self.csg.relate(&s, predicate, &o);
    }

    fn finish(self, category: Category, subcategory: &'static str, prompt: String) -> Scene {
        Scene {
            category,
            subcategory,
            csg: self.csg,
            prompt,
            items: self.items,
        }
    }
}

/// The floor band, where shadows may lie.
fn floor_band() -> Rect {
    Rect::new(0.0, GROUND, SIZE as f32, SIZE as f32)
}

/// "A" or "an".
fn article(word: &str) -> &'static str {
    if word.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    }
}

fn a(words: &str) -> String {
    format!("{} {words}", article(words))
}

/// Samples one scene of `category` from `split`. With `broken`, the scene is rendered with
/// the category's typical failure (a reflection outside its mirror, a flipped shadow, a
/// floating object, a wrong fill level, swapped roles, a wrong count) while its CSG and
/// prompt stay those of the intact scene: the checker must then fail it.
pub fn sample(category: Category, split: Split, rng: &mut Rng, broken: bool) -> Scene {
    match category {
        Category::Reflection => reflection(rng, split, broken),
        Category::Shadow => shadow(rng, split, broken),
        Category::Support => support(rng, split, broken),
        Category::Spatial => spatial(rng, split, broken),
        Category::Quantity => quantity(rng, split, broken),
        Category::Occlusion => occlusion(rng, split, broken),
        Category::Counting => counting(rng, split, broken),
    }
}

/// Training prior: surfaces are mostly large (85%); a small surface holds only medium objects
/// (a small object's reflection would nearly fit). Held out: a large object on a small
/// surface.
fn reflection(rng: &mut Rng, split: Split, broken: bool) -> Scene {
    let small = split == Split::Ood || rng.chance(0.15);
    let sizes: &[usize] = match (split, small) {
        (Split::Ood, _) => &[2],
        (_, true) => &[1],
        (_, false) => &[0, 1, 2],
    };
    let obj = Obj::random(rng, sizes);
    let puddle = rng.chance(0.4);
    let (class, surface_rgb) = if puddle {
        (Class::Puddle, palette::WATER)
    } else {
        (Class::Mirror, palette::MIRROR)
    };
    let h = obj.h();
    let cx = rng.uniform(20.0, 44.0).round();
    // A small surface is shallow: it cannot hold the whole reflection. It is a little wider
    // than the object, so that its outline shows on both sides of the reflection.
    let (width, depth) = if small {
        (h + 6.0, rng.uniform(4.0, 6.0).round())
    } else {
        (
            (h + rng.uniform(10.0, 20.0)).round(),
            (h + 2.0).min(SIZE as f32 - GROUND),
        )
    };
    let mx0 = (cx - width / 2.0 + if small { 0.0 } else { rng.uniform(-2.0, 2.0) }).round();
    let surface_box = Rect::new(mx0, GROUND, mx0 + width, GROUND + depth);

    let mut b = Builder::new();
    let o = b.node(obj.node("object"));
    let size = if small { Size::Small } else { Size::Large };
    let s = b.node(Node::new("surface", class).sized(size));
    let r =
        b.node(Node::new(&implied_id(Class::Reflection, "object"), Class::Reflection).implied());
    b.relate(o, Predicate::On, s);
    b.relate(r, Predicate::ReflectionOf, o);
    b.relate(r, Predicate::BoundedBy, s);

    b.paint(s, Shape::Rect(surface_box), surface_rgb);
    let mirrored = Shape::FlippedY {
        shape: Box::new(obj.shape(cx, GROUND)),
        axis: GROUND,
    };
    let reflection = b.paint(r, mirrored, palette::reflected(obj.rgb(), surface_rgb));
    reflection.on_surface_of = Some(s);
    reflection.clip = Some(surface_box);
    if broken {
        if small {
            // The spill that models make: the whole reflection, past the surface's edge.
            reflection.clip = Some(floor_band());
        } else {
            let shape = reflection.shape.clone();
            reflection.shape = Shape::Moved {
                shape: Box::new(shape),
                dx: width + 4.0,
                dy: 0.0,
            };
            reflection.clip = Some(floor_band());
        }
    }
    b.paint(o, obj.shape(cx, GROUND), obj.rgb());

    let thing = obj.words();
    let surface = match (small, puddle) {
        (true, false) => "small mirror".to_string(),
        (true, true) => "small puddle".to_string(),
        (false, _) => {
            let adj = rng.pick(&["", "large ", "big "]);
            format!("{adj}{}", class.word())
        }
    };
    let prompt = match rng.below(3) {
        0 => format!("{} on {}", a(&thing), a(&surface)),
        1 => format!("{} standing on {}", a(&thing), a(&surface)),
        _ => format!("{} with {} on it", a(&surface), a(&thing)),
    };
    let sub = match (puddle, small) {
        (false, false) => "large_mirror",
        (false, true) => "small_mirror",
        (true, false) => "large_puddle",
        (true, true) => "small_puddle",
    };
    b.finish(Category::Reflection, sub, prompt)
}

fn lamp_shape(light: Light) -> Shape {
    let (cx, cy) = match light {
        Light::Left => (7.0, 7.0),
        Light::Right => (57.0, 7.0),
        Light::Above => (32.0, 6.0),
    };
    Shape::Disc { cx, cy, r: 4.0 }
}

/// The shadow an object of height `h` at `cx` casts on the floor.
fn shadow_shape(cx: f32, h: f32, light: Light) -> Shape {
    let length = 0.6 * h;
    match light {
        Light::Left => Shape::Rect(Rect::new(cx, GROUND, cx + h / 2.0 + length, GROUND + 4.0)),
        Light::Right => Shape::Rect(Rect::new(cx - h / 2.0 - length, GROUND, cx, GROUND + 4.0)),
        Light::Above => Shape::Ellipse {
            cx,
            cy: GROUND + 1.0,
            rx: h / 2.0 + 1.0,
            ry: 2.5,
        },
    }
}

/// Training prior: light from the left 70%, from the right 15%, from above 15%; one object
/// 70%, two 30%. Held out: two objects lit from the right.
fn shadow(rng: &mut Rng, split: Split, broken: bool) -> Scene {
    let (light, two) = if split == Split::Ood {
        (Light::Right, true)
    } else {
        loop {
            let light =
                [Light::Left, Light::Right, Light::Above][rng.weighted(&[70.0, 15.0, 15.0])];
            let two = rng.chance(0.3);
            if !(two && light == Light::Right) {
                break (light, two);
            }
        }
    };
    let objs: Vec<(Obj, f32)> = if two {
        let (c1, c2) = {
            let reversed = rng.chance(0.5);
            ordered_colours(rng, reversed)
        };
        let first = Obj {
            colour: c1,
            ..Obj::random(rng, &[0, 1])
        };
        let second = Obj {
            colour: c2,
            ..Obj::random(rng, &[0, 1])
        };
        vec![
            (first, rng.uniform(12.0, 18.0).round()),
            (second, rng.uniform(44.0, 52.0).round()),
        ]
    } else {
        vec![(
            Obj::random(rng, &[0, 1, 2]),
            rng.uniform(20.0, 44.0).round(),
        )]
    };

    let mut b = Builder::new();
    b.csg.light = Some(light);
    let lamp = b.node(Node::new("lamp", Class::Lamp));
    b.paint(lamp, lamp_shape(light), palette::LAMP);
    let mut ids = Vec::new();
    for (i, (obj, cx)) in objs.iter().enumerate() {
        let id = format!("object{}", i + 1);
        let o = b.node(obj.node(&id));
        let s = b.node(Node::new(&implied_id(Class::Shadow, &id), Class::Shadow).implied());
        b.relate(s, Predicate::ShadowOf, o);
        let cast = if broken {
            match light {
                Light::Left => Light::Right,
                Light::Right => Light::Left,
                // A shadow off to one side under a light from straight above.
                Light::Above => Light::Left,
            }
        } else {
            light
        };
        b.paint(s, shadow_shape(*cx, obj.h(), cast), palette::SHADOW)
            .clip = Some(floor_band());
        ids.push((o, obj, *cx));
    }
    for (o, obj, cx) in &ids {
        b.paint(*o, obj.shape(*cx, GROUND), obj.rgb());
    }

    let things = objs
        .iter()
        .map(|(o, _)| a(&o.words()))
        .collect::<Vec<_>>()
        .join(" and ");
    let side = match light {
        Light::Left => "left",
        Light::Right => "right",
        Light::Above => "above",
    };
    let prompt = match (light, rng.below(3)) {
        (Light::Above, 0) => format!("{things} under a lamp"),
        (Light::Above, 1) => format!("{things} lit from above"),
        (Light::Above, _) => format!("a lamp above {things}"),
        (_, 0) => format!("{things} lit from the {side}"),
        (_, 1) => format!("{things} with a lamp on the {side}"),
        (_, _) => format!("light from the {side} falls on {things}"),
    };
    let sub = match (two, light) {
        (true, _) => "two_objects",
        (false, Light::Left) => "light_left",
        (false, Light::Right) => "light_right",
        (false, Light::Above) => "light_above",
    };
    b.finish(Category::Shadow, sub, prompt)
}

/// Training prior: on the floor 35%, on a table 35%, on a cube 30%; a stacked object is never
/// bigger than the cube under it, and (as in every training stack) the top's colour comes
/// before the bottom's in the palette order. Held out: a bigger object on a smaller cube.
fn support(rng: &mut Rng, split: Split, broken: bool) -> Scene {
    let which = if split == Split::Ood {
        2
    } else {
        rng.weighted(&[35.0, 35.0, 30.0])
    };
    let lift = if broken { 5.0 } else { 0.0 };
    let mut b = Builder::new();
    let (sub, prompt) = match which {
        0 => {
            let obj = Obj::random(rng, &[0, 1, 2]);
            let cx = rng.uniform(16.0, 48.0).round();
            let o = b.node(obj.node("object"));
            let f = b.node(Node::new("floor", Class::Floor));
            b.relate(o, Predicate::On, f);
            b.paint(o, obj.shape(cx, GROUND - lift), obj.rgb());
            let prompt = match rng.below(2) {
                0 => format!("{} on the floor", a(&obj.words())),
                _ => format!("{} resting on the floor", a(&obj.words())),
            };
            ("floor", prompt)
        }
        1 => {
            let obj = Obj::random(rng, &[0, 1, 2]);
            let cx = rng.uniform(22.0, 42.0).round();
            let top = GROUND - rng.uniform(12.0, 16.0).round();
            let half = (rng.uniform(13.0, 17.0)).round();
            let o = b.node(obj.node("object"));
            let t = b.node(Node::new("table", Class::Table));
            b.relate(o, Predicate::On, t);
            let slab = Rect::new(cx - half, top, cx + half, top + 3.0);
            b.paint(t, Shape::Rect(slab), palette::TABLE);
            for leg_x in [cx - half + 1.0, cx + half - 3.0] {
                let leg = Rect::new(leg_x, top + 3.0, leg_x + 2.0, GROUND);
                b.paint(t, Shape::Rect(leg), palette::TABLE);
            }
            let ox = cx + rng.uniform(-half + 8.0, half - 8.0).round();
            b.paint(o, obj.shape(ox, top - lift), obj.rgb());
            let prompt = match rng.below(2) {
                0 => format!("{} on a table", a(&obj.words())),
                _ => format!("a table with {} on it", a(&obj.words())),
            };
            ("table", prompt)
        }
        _ => {
            let (top, bottom) = stacked_pair(rng, split == Split::Ood, false);
            let cx = rng.uniform(18.0, 46.0).round();
            let o = b.node(top.node("top"));
            let c = b.node(bottom.node("bottom"));
            b.relate(o, Predicate::On, c);
            b.paint(c, bottom.shape(cx, GROUND), bottom.rgb());
            let base = GROUND - bottom.h() - lift;
            b.paint(
                o,
                top.shape(cx + rng.uniform(-2.0, 2.0).round(), base),
                top.rgb(),
            );
            let prompt = match rng.below(2) {
                0 => format!("{} on top of {}", a(&top.words()), a(&bottom.words())),
                _ => format!("{} resting on {}", a(&top.words()), a(&bottom.words())),
            };
            ("stack", prompt)
        }
    };
    b.finish(Category::Support, sub, prompt)
}

/// A top object and the cube it rests on, with different colours. In training the top's
/// colour precedes the bottom's in `Colour::ALL` and the top is no bigger than the cube;
/// `swap_colours` or `bigger_top` draw the held-out reverse.
fn stacked_pair(rng: &mut Rng, bigger_top: bool, swap_colours: bool) -> (Obj, Obj) {
    let (c1, c2) = ordered_colours(rng, swap_colours);
    let (top_size, bottom_size) = if bigger_top {
        (2, rng.below(2))
    } else {
        let bottom = 1 + rng.below(2);
        (rng.below(bottom + 1), bottom)
    };
    let top = Obj {
        kind: rng.pick(&[Class::Ball, Class::Cube, Class::Cone]),
        colour: c1,
        size: top_size,
    };
    let bottom = Obj {
        kind: Class::Cube,
        colour: c2,
        size: bottom_size,
    };
    (top, bottom)
}

/// Two different colours, the first before the second in `Colour::ALL` (or after it, when
/// `reversed`).
fn ordered_colours(rng: &mut Rng, reversed: bool) -> (Colour, Colour) {
    let i = rng.below(5);
    let mut j = rng.below(4);
    if j >= i {
        j += 1;
    }
    let (lo, hi) = (i.min(j), i.max(j));
    let (a, b) = (Colour::ALL[lo], Colour::ALL[hi]);
    if reversed { (b, a) } else { (a, b) }
}

/// Training prior: stack 30%, left of 25%, right of 25%, beach 20%. Two-object relations keep
/// the palette order (top or left colour first); a person "close to the water" is, in
/// training, always in it. Held out: the reversed colour order (Winoground swaps), and a
/// person close to the water and in the sand.
fn spatial(rng: &mut Rng, split: Split, broken: bool) -> Scene {
    let ood = split == Split::Ood;
    let which = rng.weighted(&[30.0, 25.0, 25.0, 20.0]);
    let mut b = Builder::new();
    match which {
        0 => {
            let (top, bottom) = stacked_pair(rng, false, ood);
            let cx = rng.uniform(18.0, 46.0).round();
            let o = b.node(top.node("top"));
            let c = b.node(bottom.node("bottom"));
            b.relate(o, Predicate::On, c);
            // Broken: the roles swapped, the bottom's colour on top and the top's below.
            let (upper, lower) = if broken {
                let upper = Obj {
                    colour: bottom.colour,
                    ..top
                };
                let lower = Obj {
                    colour: top.colour,
                    ..bottom
                };
                (upper, lower)
            } else {
                (top, bottom)
            };
            b.paint(c, lower.shape(cx, GROUND), lower.rgb());
            b.paint(o, upper.shape(cx, GROUND - lower.h()), upper.rgb());
            let prompt = match rng.below(2) {
                0 => format!("{} on {}", a(&top.words()), a(&bottom.words())),
                _ => format!("{} on top of {}", a(&top.words()), a(&bottom.words())),
            };
            b.finish(Category::Spatial, "stack", prompt)
        }
        1 | 2 => {
            let (c1, c2) = ordered_colours(rng, ood);
            let left = Obj {
                colour: c1,
                ..Obj::random(rng, &[0, 1, 2])
            };
            let right = Obj {
                colour: c2,
                ..Obj::random(rng, &[0, 1, 2])
            };
            let lx = rng.uniform(12.0, 24.0).round();
            let rx = rng.uniform(40.0, 52.0).round();
            let (lx, rx) = if broken { (rx, lx) } else { (lx, rx) };
            let l = b.node(left.node("left"));
            let r = b.node(right.node("right"));
            b.paint(l, left.shape(lx, GROUND), left.rgb());
            b.paint(r, right.shape(rx, GROUND), right.rgb());
            let (sub, prompt) = if which == 1 {
                b.relate(l, Predicate::LeftOf, r);
                let p = match rng.below(2) {
                    0 => format!("{} to the left of {}", a(&left.words()), a(&right.words())),
                    _ => format!("{} left of {}", a(&left.words()), a(&right.words())),
                };
                ("left_of", p)
            } else {
                b.relate(r, Predicate::RightOf, l);
                let p = match rng.below(2) {
                    0 => format!("{} to the right of {}", a(&right.words()), a(&left.words())),
                    _ => format!("{} right of {}", a(&right.words()), a(&left.words())),
                };
                ("right_of", p)
            };
            b.finish(Category::Spatial, sub, prompt)
        }
        _ => beach(rng, ood, broken),
    }
}

/// A person on a beach. Training: in the water (prompted as "in the water" or "close to the
/// water"), or in the sand far from it. Held out: in the sand, close to the water.
fn beach(rng: &mut Rng, ood: bool, broken: bool) -> Scene {
    let water_left = rng.chance(0.5);
    let edge = rng.uniform(24.0, 40.0).round();
    // Where the person is: 0 in the water, 1 in the sand far away, 2 in the sand close by.
    let place = if ood { 2 } else { rng.below(2) };
    // Signed distance from the edge into the water (positive) or into the sand (negative),
    // measured from the person's centre; the body is 6 pixels wide.
    let into_water = match (place, broken) {
        (0, false) | (1, true) | (2, true) => rng.uniform(6.0, 10.0).round(),
        (0, true) | (1, false) => -rng.uniform(18.0, 24.0).round(),
        _ => -rng.uniform(5.0, 9.0).round(),
    };

    let cx = if water_left {
        edge - into_water
    } else {
        edge + into_water
    };
    let cx = cx.clamp(5.0, SIZE as f32 - 5.0);
    let in_water = into_water > 0.0;

    let mut b = Builder::new();
    let person = b.node(Node::new("person", Class::Person));
    let sand = b.node(Node::new("sand", Class::Sand));
    let water = b.node(Node::new("water", Class::Water));
    let (sand_box, water_box) = if water_left {
        (
            Rect::new(edge, GROUND, SIZE as f32, SIZE as f32),
            Rect::new(0.0, GROUND - 4.0, edge, SIZE as f32),
        )
    } else {
        (
            Rect::new(0.0, GROUND, edge, SIZE as f32),
            Rect::new(edge, GROUND - 4.0, SIZE as f32, SIZE as f32),
        )
    };
    b.paint(sand, Shape::Rect(sand_box), palette::SAND);
    let base = if in_water { GROUND + 2.0 } else { GROUND };
    b.paint(
        person,
        Shape::Rect(Rect::new(cx - 3.0, base - 13.0, cx + 3.0, base)),
        palette::SHIRT,
    );
    b.paint(
        person,
        Shape::Disc {
            cx,
            cy: base - 16.0,
            r: 3.0,
        },
        palette::SKIN,
    );
    b.paint(water, Shape::Rect(water_box), palette::WATER);

    let (sub, prompt) = match place {
        0 => {
            if rng.chance(0.5) {
                b.relate(person, Predicate::In, water);
                ("in_water", "a person in the water".to_string())
            } else {
                // The prompt does not say where the person is; training puts them in the
                // water, which is the bias the held-out suite probes.
                b.relate(person, Predicate::CloseTo, water);
                let p = rng.pick(&["a person close to the water", "a person close to the sea"]);
                ("close_to_water", p.to_string())
            }
        }
        1 => {
            b.relate(person, Predicate::In, sand);
            b.relate(person, Predicate::FarFrom, water);
            let p = rng.pick(&[
                "a person in the sand far from the water",
                "a person on the sand, far from the water",
            ]);
            ("in_sand_far", p.to_string())
        }
        _ => {
            b.relate(person, Predicate::In, sand);
            b.relate(person, Predicate::CloseTo, water);
            let p = rng.pick(&[
                "a person close to the water and in the sand",
                "a person in the sand, close to the water",
            ]);
            ("in_sand_close", p.to_string())
        }
    };
    b.finish(Category::Spatial, sub, prompt)
}

/// Training prior: sand or water, evenly; sand jars always less than half full, water jars
/// so 75% of the time (87.5% of training jars are less than half full). Held out: a jar more
/// than half full of sand.
fn quantity(rng: &mut Rng, split: Split, broken: bool) -> Scene {
    let (sand, high) = if split == Split::Ood {
        (true, true)
    } else {
        let sand = rng.chance(0.5);
        (sand, !sand && rng.chance(0.25))
    };
    let level = if high != broken {
        rng.uniform(0.62, 0.9)
    } else {
        rng.uniform(0.15, 0.38)
    };
    let cx = rng.uniform(24.0, 40.0).round();
    let half = rng.pick(&[10.0, 11.0, 12.0]);
    let top = GROUND - rng.pick(&[26.0, 28.0, 30.0]);
    let (x0, x1) = (cx - half, cx + half);

    let mut b = Builder::new();
    let mut jar_node = Node::new("jar", Class::Jar);
    jar_node.fill = Some(if high {
        Fill::MoreThanHalf
    } else {
        Fill::LessThanHalf
    });
    let jar = b.node(jar_node);
    let (class, rgb, word) = if sand {
        (Class::Sand, palette::SAND, "sand")
    } else {
        (Class::Water, palette::WATER, "water")
    };
    let content = b.node(Node::new(word, class));
    b.relate(content, Predicate::In, jar);
    let inner_bottom = GROUND - 2.0;
    let inner_h = inner_bottom - top;
    let surface = (inner_bottom - level * inner_h).round();
    b.paint(
        content,
        Shape::Rect(Rect::new(x0 + 2.0, surface, x1 - 2.0, inner_bottom)),
        rgb,
    );
    for wall in [
        Rect::new(x0, top, x0 + 2.0, GROUND),
        Rect::new(x1 - 2.0, top, x1, GROUND),
        Rect::new(x0, inner_bottom, x1, GROUND),
    ] {
        b.paint(jar, Shape::Rect(wall), palette::JAR);
    }

    let prompt = match (high, rng.below(3)) {
        (false, 0) => format!("a jar with a little {word}"),
        (false, 1) => format!("a jar less than half full of {word}"),
        (false, _) => format!("more empty space than {word} in the jar"),
        (true, 0) => format!("a jar more than half full of {word}"),
        (true, 1) => format!("more {word} than empty space in the jar"),
        (true, _) => format!("a jar mostly full of {word}"),
    };
    let sub = match (sand, high) {
        (true, false) => "sand_low",
        (true, true) => "sand_high",
        (false, false) => "water_low",
        (false, true) => "water_high",
    };
    b.finish(Category::Quantity, sub, prompt)
}

/// Held-out (hidden, front) kind pairs; the other three pairs are the training ones.
const OCCLUSION_HELD_OUT: [(Class, Class); 3] = [
    (Class::Cube, Class::Ball),
    (Class::Cube, Class::Cone),
    (Class::Ball, Class::Cone),
];
const OCCLUSION_TRAIN: [(Class, Class); 3] = [
    (Class::Ball, Class::Cube),
    (Class::Cone, Class::Cube),
    (Class::Cone, Class::Ball),
];

/// An object partly hidden behind another of a different colour. Training pairs (hidden,
/// front): ball behind cube, cone behind cube, cone behind ball; held out: the reverses.
fn occlusion(rng: &mut Rng, split: Split, broken: bool) -> Scene {
    let pairs = if split == Split::Ood {
        OCCLUSION_HELD_OUT
    } else {
        OCCLUSION_TRAIN
    };
    let (back_kind, front_kind) = rng.pick(&pairs);
    let (c1, c2) = {
        let reversed = rng.chance(0.5);
        ordered_colours(rng, reversed)
    };
    let back = Obj {
        kind: back_kind,
        colour: c1,
        size: 1 + rng.below(2),
    };
    let front = Obj {
        kind: front_kind,
        colour: c2,
        size: 1 + rng.below(2),
    };
    // Half of the hidden object's width, give or take, disappears behind the front one.
    let overlap = rng.uniform(0.5, 0.7) * back.h();
    let offset = ((back.h() + front.h()) / 2.0 - overlap).round();
    let fx = rng.uniform(24.0, 40.0).round();
    let bx = if rng.chance(0.5) {
        fx - offset
    } else {
        fx + offset
    };

    let mut b = Builder::new();
    let h = b.node(back.node("hidden"));
    let f = b.node(front.node("front"));
    b.relate(h, Predicate::Behind, f);
    b.paint(h, back.shape(bx, GROUND), back.rgb());
    b.paint(f, front.shape(fx, GROUND), front.rgb());
    if broken {
        b.items.swap(0, 1);
    }
    let prompt = match rng.below(3) {
        0 => format!(
            "{} partly hidden behind {}",
            a(&back.words()),
            a(&front.words())
        ),
        1 => format!("{} in front of {}", a(&front.words()), a(&back.words())),
        _ => format!("{} behind {}", a(&back.words()), a(&front.words())),
    };
    let sub = match (back_kind, front_kind) {
        (Class::Ball, Class::Cube) => "ball_behind_cube",
        (Class::Cone, Class::Cube) => "cone_behind_cube",
        (Class::Cone, Class::Ball) => "cone_behind_ball",
        (Class::Cube, Class::Ball) => "cube_behind_ball",
        (Class::Cube, Class::Cone) => "cube_behind_cone",
        _ => "ball_behind_cone",
    };
    b.finish(Category::Occlusion, sub, prompt)
}

const NUMBERS: [&str; 6] = ["no", "one", "two", "three", "four", "five"];

/// One to five objects of one kind and colour in a row. Training prior: counts weighted
/// 25/25/20/15/15, but never four or five balls. Held out: four or five balls.
fn counting(rng: &mut Rng, split: Split, broken: bool) -> Scene {
    let (kind, n) = if split == Split::Ood {
        (Class::Ball, 4 + rng.below(2))
    } else {
        loop {
            let kind = rng.pick(&[Class::Ball, Class::Cube, Class::Cone]);
            let n = 1 + rng.weighted(&[25.0, 25.0, 20.0, 15.0, 15.0]);
            if !(kind == Class::Ball && n >= 4) {
                break (kind, n);
            }
        }
    };
    // Drawn whether or not the scene is broken, so that both draw the same scene.
    let fewer = rng.chance(0.5);
    let size = rng.below(2);
    let shown = match (broken, n) {
        (false, _) => n,
        (true, 1) => 2,
        (true, _) if fewer => n - 1,
        (true, _) => n + 1,
    };
    let obj = Obj {
        kind,
        colour: rng.pick(&Colour::ALL),
        size: if n >= 3 { 0 } else { size },
    };
    let mut b = Builder::new();
    let mut node = obj.node("objects");
    node.count = n as u32;
    let o = b.node(node);
    // Spread the row: equal slots, each object jittered inside its own slot.
    let slot = (SIZE as f32 - 4.0) / shown as f32;
    for i in 0..shown {
        let centre = 2.0 + slot * (i as f32 + 0.5);
        let room = ((slot - obj.h()) / 2.0 - 2.0).max(0.0);
        let cx = (centre + rng.uniform(-room, room)).round();
        b.paint(o, obj.shape(cx, GROUND), obj.rgb());
    }
    let plural = format!("{} {}s", obj.colour.word(), kind.word());
    let prompt = match (n, rng.below(2)) {
        (1, 0) => a(&obj.words()),
        (1, _) => format!("one {}", obj.words()),
        (_, 0) => format!("{} {plural}", NUMBERS[n]),
        (_, _) => format!("a row of {} {plural}", NUMBERS[n]),
    };
    let sub = ["", "one", "two", "three", "four", "five"][n];
    b.finish(Category::Counting, sub, prompt)
}

/// Whether a scene is one of the recombinations that training never shows. This restates the
/// split rules from the CSG alone, independently of the samplers above, so that a test can
/// confirm that the training stream never produces a held-out scene and the OOD stream
/// produces nothing else.
pub fn held_out(scene: &Scene) -> bool {
    let csg = &scene.csg;
    let node = |id: &str| csg.node(id);
    let has = |s: &str, p: Predicate, o: &str| {
        csg.relations
            .iter()
            .any(|r| r.subject == s && r.predicate == p && r.object == o)
    };
    let size_rank = |id: &str| node(id).and_then(|n| n.size).map(|s| s as usize);
    let colour_rank = |id: &str| node(id).and_then(|n| n.colour);
    match scene.category {
        Category::Reflection => {
            node("surface").and_then(|n| n.size) == Some(Size::Small)
                && node("object").and_then(|n| n.size) == Some(Size::Large)
        }
        Category::Shadow => csg.light == Some(Light::Right) && node("object2").is_some(),
        Category::Support => {
            has("top", Predicate::On, "bottom") && size_rank("top") > size_rank("bottom")
        }
        Category::Spatial => {
            if node("person").is_some() {
                has("person", Predicate::In, "sand") && has("person", Predicate::CloseTo, "water")
            } else if has("top", Predicate::On, "bottom") {
                colour_rank("top") > colour_rank("bottom")
            } else {
                colour_rank("left") > colour_rank("right")
            }
        }
        Category::Quantity => {
            node("sand").is_some() && node("jar").and_then(|n| n.fill) == Some(Fill::MoreThanHalf)
        }
        Category::Occlusion => {
            let kind = |id: &str| node(id).map(|n| n.class);
            OCCLUSION_HELD_OUT
                .iter()
                .any(|&(h, f)| kind("hidden") == Some(h) && kind("front") == Some(f))
        }
        Category::Counting => {
            node("objects").is_some_and(|n| n.class == Class::Ball && n.count >= 4)
        }
    }
}
