//! The verifier-guided repair baseline: during a window of steps, judge the model's own
//! prediction of the final image with the probe's checker, and mend in latent space what it
//! gets wrong. It needs a checker, so it acts only on the probe's scenes; it is not LINA
//! (a judge steers it) and is off by default everywhere, reported under its own name. Each repair
//! acts only on a check that fails:
//! - `shadow_of`: a shadow on the side of the light is mirrored about its object's axis (and
//!   a lamp drawn on the wrong side moves to the mirrored place); a missing shadow is cast on
//!   the far side with the look of the shadows drawn elsewhere;
//! - `bounded_by`: reflection that spills past the sides or the bottom of a small surface
//!   becomes the background of its row, except where an object stands;
//! - `fill`: a jar filled to the wrong side of one half has its content raised or lowered;
//! - `left_of` / `right_of`: two objects the wrong way round are mirrored about their common
//!   centre;
//! - `on`: two objects stacked the wrong way round swap their colours (they were bound to the
//!   wrong places; the shapes stay); an object beside or above its support is set down on it;
//! - `behind`: a front object drawn apart is moved over a third of the hidden one;
//! - `close_to`: the region (water) is brought up to the subject's feet;
//! - `exists`: a missing object is painted on a spare region of another object's colour (the
//!   model drew both in one colour), else where the graph puts it (on its support, under what
//!   stands on it, or on the floor line at the free place its left/right relations allow);
//! - `shape`: an object drawn with another class's outline (a ball where the graph has a
//!   cone) is redrawn with its own.
//!
//! The window: repairs made in the first, roughest steps judge a prediction too blurred to
//! read (a jar's level, an object's colour) and the model redraws what they paint; from half
//! way on, the layout is set and a repair stays: [`Repair::DEFAULT_WINDOW`] is the second half.
//!
//! Ours: the paper names "targeted guidance in the visual latent space" and diagnosis with the
//! scene graph, and nothing of their form. The diagnosis is the probe's checker run on the
//! decoded prediction `x0`, so the repairs reach only what the checker can see: scenes in the
//! probe's world. On other images the checker finds nothing to mend and the repair is a no-op.
//!
//! A repair writes target values `x0*` for some latent cells; the sampler moves its prediction
//! by `s · (x0* - x0)` there ([`Sampling::shift_clean`]), strength `s` in [0, 1]. It adds no
//! model evaluation: each step of the window costs one VAE decode and one checker pass.
//!
//! The modules: `plan` picks each failed check's repair; the repairs live with what they mend,
//! `light` (shadows, the lamp, reflections), `layout` (order, stacking, support, occlusion,
//! closeness) and `drawing` (missing objects, outlines, a jar's level); all of them write into
//! `grid`'s edits through `cells`, where the checker's pixel masks fall on the latent cells.

mod cells;
mod drawing;
mod grid;
mod layout;
mod light;
mod plan;
#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests;

use std::ops::Range;

use burn::tensor::{Tensor, TensorData};

use crate::check::{check, segment};
use lina_csg::Csg;
use lina_runtime::error::{Error, Result};
use lina_runtime::image::Image;
use lina_runtime::pipeline::{Sampling, StepFuture, StepHook};

pub use grid::{Edits, Grid};
pub use plan::plan_edits;

/// The repair hook: runs between the steps of its window, on the sampler itself (it needs the
/// decoded prediction, which is read back asynchronously).
pub struct Repair {
    csg: Csg,
    strength: f64,
    window: Range<usize>,
    /// Per node, its flat colour through the VAE encoder; computed on first use.
    looks: Option<Vec<Option<Vec<f32>>>>,
    /// What each step repaired: "step 3: shadow_of_object1: mirrored ...".
    pub described: Vec<String>,
}

impl Repair {
    /// The strength and window (fractions of the run) the repairs were evaluated at.
    pub const DEFAULT_STRENGTH: f64 = 1.0;
    pub const DEFAULT_WINDOW: [f64; 2] = [0.5, 1.0];

    /// Repairs in the steps `window` (fractions of the steps that run, `run`, as a plan's
    /// windows are) at `strength` in [0, 1].
    pub fn for_run(csg: &Csg, strength: f64, window: [f64; 2], run: Range<usize>) -> Result<Self> {
        if !(0.0..=1.0).contains(&strength)
            || !(0.0..=1.0).contains(&window[0])
            || !(0.0..=1.0).contains(&window[1])
            || window[0] > window[1]
        {
            return Err(Error::InvalidInput(format!(
                "verifier repair: strength must be in [0, 1] and the window [start, end] within [0, 1], got {strength} and {window:?}"
            )));
        }
        // The same window arithmetic as LINA's plans, so a window means the same steps.
        Ok(Self::new(csg, strength, lina::steps_of(window, run)))
    }

    pub fn new(csg: &Csg, strength: f64, window: Range<usize>) -> Self {
        Self {
            csg: csg.clone(),
            strength,
            window,
            looks: None,
            described: Vec::new(),
        }
    }

    /// How each node's colour looks in latent space: a flat image of it through the
    /// model's VAE encoder, averaged over the latent cells. Empty without an encoder.
    async fn looks(&mut self, sampling: &Sampling<'_>) -> Result<Vec<Option<Vec<f32>>>> {
        if let Some(looks) = &self.looks {
            return Ok(looks.clone());
        }
        let mut looks = Vec::new();
        if let Some(encoder) = sampling.pipe().vae_encoder() {
            let [_, _, h, w] = sampling.latents().dims();
            let size = sampling.pipe().vae().config().downscale();
            for node in &self.csg.nodes {
                let colour = match node.colour {
                    Some(c) => Some(crate::palette::colour(c)),
                    None if node.implied => None,
                    None => crate::palette::class_colour(node.class),
                };
                let Some(rgb) = colour else {
                    looks.push(None);
                    continue;
                };
                let flat = Image {
                    width: w * size,
                    height: h * size,
                    rgb: rgb.repeat(w * size * h * size),
                };
                let latents = encoder.encode_scaled(flat.to_tensor(sampling.pipe().device()));
                let c = latents.dims()[1];
                let data = lina_runtime::device::read_f32(latents, "a colour's latents").await?;
                let n = data.len() / c;
                looks.push(Some(
                    data.chunks(n)
                        .map(|ch| ch.iter().sum::<f32>() / n as f32)
                        .collect(),
                ));
            }
        }
        self.looks = Some(looks.clone());
        Ok(looks)
    }

    /// Judges the prediction of the step just taken and moves it toward the repairs.
    async fn repair(&mut self, sampling: &mut Sampling<'_>) -> Result<()> {
        let Some(step) = sampling.current_step().checked_sub(1) else {
            return Ok(());
        };
        if !self.window.contains(&step) || sampling.is_done() {
            return Ok(());
        }
        let Some(x0) = sampling.predicted_clean().cloned() else {
            return Ok(());
        };
        let image = sampling.decode_predicted().await?;
        let verdicts = check(&image, &self.csg);
        if verdicts.iter().all(|v| v.passed) {
            return Ok(());
        }
        let [_, c, h, w] = x0.dims();
        let device = x0.device();
        let data = lina_runtime::device::read_f32(x0, "the predicted latents").await?;
        let grid = Grid {
            channels: c,
            height: h,
            width: w,
            data,
        };
        let looks = self.looks(sampling).await?;
        let edits = plan_edits(
            &self.csg,
            &segment(&image, &self.csg),
            &verdicts,
            &grid,
            &looks,
        );
        if edits.is_empty() {
            return Ok(());
        }
        let delta = edits.delta(&grid, self.strength);
        sampling.shift_clean(Tensor::from_data(
            TensorData::new(delta, [1, c, h, w]),
            &device,
        ));
        self.described
            .extend(edits.described.iter().map(|d| format!("step {step}: {d}")));
        Ok(())
    }
}

impl StepHook for Repair {
    fn between_steps<'a>(&'a mut self, sampling: &'a mut Sampling<'_>) -> StepFuture<'a> {
        Box::pin(self.repair(sampling))
    }
}
