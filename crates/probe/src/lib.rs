//! The Physical Alignment Probe (PAP), built from procedural scenes: a generator that samples
//! scenes from a Causal Scene Graph and renders each with exact masks and a prompt, seeded
//! suites (training, in-distribution test, out-of-distribution), and a checker that judges
//! any image against its CSG; with the diagnostics built on that checker (the step sweep,
//! CSG-guided re-inpainting), the soak harness, and the verifier-guided repair baseline.
//!
//! The LINA paper's PAP dataset cannot be reached from here; this probe is our own design
//! with the same ingredients (structured prompts, masks, CSG metadata). See docs/probe.md.

pub mod check;
pub mod diagnose;
pub mod palette;
pub mod raster;
pub mod repair;
pub mod report;
pub mod scenes;
pub mod soak;

use serde::Serialize;

pub use scenes::{Category, SIZE, Scene, Split};

use lina_runtime::image::Image;
use lina_runtime::rng::Rng;

/// A rendered scene: the image and, for every CSG node in order, the pixels it shows.
pub struct Rendered {
    pub image: Image,
    pub masks: Vec<Vec<bool>>,
}

impl Scene {
    pub fn render(&self) -> Rendered {
        let wall_or_floor = |_x: f32, y: f32| {
            if y < scenes::GROUND {
                palette::WALL
            } else {
                palette::FLOOR
            }
        };
        let (rgb, masks) = raster::render(SIZE, &wall_or_floor, &self.items, self.csg.nodes.len());
        Rendered {
            image: Image {
                width: SIZE,
                height: SIZE,
                rgb,
            },
            masks,
        }
    }
}

/// What identifies one probe prompt: its split, category and index. The scene is a pure
/// function of these, so any item of any suite can be regenerated alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SceneId {
    pub split: Split,
    pub category: Category,
    pub index: u64,
}

impl SceneId {
    /// The seed of this scene's generator stream. Splits and categories get disjoint streams.
    fn seed(&self) -> u64 {
        let split = match self.split {
            Split::Train => 0x7472_6169,
            Split::Test => 0x7465_7374,
            Split::Ood => 0x6f6f_6400,
        };
        let category = Category::ALL
            .iter()
            .position(|c| *c == self.category)
            .unwrap() as u64;
        let mut mix = Rng::new(split ^ (category << 40) ^ self.index.wrapping_mul(0x9E37_79B9));
        mix.next_u64()
    }

    pub fn scene(&self) -> Scene {
        self.scene_with(false)
    }

    /// The same scene rendered with its category's typical failure (see `scenes::sample`).
    pub fn broken_scene(&self) -> Scene {
        self.scene_with(true)
    }

    fn scene_with(&self, broken: bool) -> Scene {
        let mut rng = Rng::new(self.seed());
        scenes::sample(self.category, self.split, &mut rng, broken)
    }
}

/// The named suites of the probe: a split, the categories it covers, and which prompts of
/// each category it holds (indices `first..first + per_category`).
///
/// `first` splits one suite into disjoint parts. The evaluation reads the `ood` suite's
/// first prompts; settings are chosen on later ones (`--first`), so that no choice is made on
/// the images that then judge it.
#[derive(Debug, Clone, PartialEq)]
pub struct Suite {
    pub name: String,
    pub split: Split,
    pub categories: Vec<Category>,
    pub first: u64,
    pub per_category: u64,
}

impl Suite {
    /// 25 prompts per category by default (the `train` split is unbounded; `probe-data` and
    /// `--count` take more). A category name restricts a suite to it: `ood:reflection`.
    pub fn named(name: &str) -> lina_runtime::Result<Self> {
        let (base, only) = match name.split_once(':') {
            Some((b, c)) => (b, Some(c)),
            None => (name, None),
        };
        let (split, per_category) = match base {
            "train" => (Split::Train, 25),
            "id" => (Split::Test, 25),
            "ood" => (Split::Ood, 25),
            _ => {
                return Err(lina_runtime::Error::InvalidInput(format!(
                    "unknown suite \"{name}\": use train, id or ood, optionally with :CATEGORY"
                )));
            }
        };
        let categories = match only {
            None => Category::ALL.to_vec(),
            Some(c) => vec![Category::parse(c).ok_or_else(|| {
                lina_runtime::Error::InvalidInput(format!(
                    "unknown category \"{c}\": use one of {}",
                    Category::ALL.map(|c| c.name()).join(", ")
                ))
            })?],
        };
        Ok(Self {
            name: name.to_string(),
            split,
            categories,
            first: 0,
            per_category,
        })
    }

    pub fn ids(&self) -> Vec<SceneId> {
        self.categories
            .iter()
            .flat_map(|&category| {
                (self.first..self.first + self.per_category).map(move |index| SceneId {
                    split: self.split,
                    category,
                    index,
                })
            })
            .collect()
    }
}
