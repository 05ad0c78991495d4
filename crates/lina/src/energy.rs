//! Attention-map energies with a latent update: during a window of steps, each scene-graph
//! node that has a layout box and words in the prompt should be attended inside its box, and
//! where it is not, the latents move so that it will be. No judge: the energy is read off the
//! model's own cross-attention, so it works on any SD-class checkpoint.
//!
//! The energy of a step is `E = Σ_k (1 − s_k)²`, where `s_k` is the share of node `k`'s
//! attention (the sum of its words' maps in the conditional row's record of that step, at the
//! latents' grid) that falls inside its box: the loss of layout guidance (Chen et al.) and
//! BoxDiff's inner-box term. Those methods, like Attend-and-Excite, update the latents by the
//! energy's gradient, backpropagated through the UNet.
//!
//! Ours is gradient-free, and the paper says nothing here. Backpropagation would need burn's
//! autodiff to hold every activation of the UNet, and the fused WGSL kernels of shaders/ have
//! no backward pass. Instead we descend `E` along one direction per node that the map itself
//! gives: moving the content the node's words attend to from the map's centroid `c_k` toward
//! the box's centre `b_k`. For the centroid's distance to the box that is the gradient's own
//! direction. The step is `δ_k = strength · (1 − s_k) · f_k · (b_k − c_k)` cells, so it
//! shrinks as the attention settles in the box; `f_k` is the map's `focus`, near 1 for a
//! map that has a place and near 0 for one spread over the whole grid, whose centroid says
//! nothing of where the node is.
//!
//! The move acts on the step's prediction of the clean latents `x0`, through
//! [`Sampling::shift_clean`]: the sample moves by the same change at the next noise level, as
//! if the model had predicted it. With `m_k` the node's map above its mean, scaled to 1 at
//! its peak (a soft mask of what its words attend to) and `T_δ` a bilinear translation by
//! `δ_k`:
//! `x0 ← x0 + D_k ⊙ (T_δ x0 − x0) + V_k ⊙ (μ_k − x0)`, where `D_k = T_δ m_k` is where the
//! content lands, `V_k = max(m_k − D_k, 0)` the part of its old place it leaves, and `μ_k` the
//! mean of `x0` outside `m_k`, per channel, what fills it. Soft masks keep the edit free of
//! hard edges, and the steps after the window let the model blend it in.
//!
//! Cost: no extra model evaluation. Each controlled step records the cross-attention
//! probabilities (the layers take the explicit score path while recording) and reads back one
//! map per node and the clean latents: a few thousand values at 512 px.

use std::ops::Range;

use burn::tensor::{Tensor, TensorData};

use lina_csg::Csg;
use lina_runtime::device::read_f32;
use lina_runtime::error::{Error, Result};
use lina_runtime::models::attention_control::AttentionRecord;
use lina_runtime::pipeline::{
    ModelCall, Sampling, StableDiffusion, StepFuture, StepHook, StepState,
};

use crate::attention::{BoxedNode, boxed_nodes};
use crate::region::Box4;

/// The hook: it asks for the attention record inside `window` and, after each such step,
/// moves the clean-latent prediction along the energy's descent direction.
pub struct EnergyGuidance {
    targets: Vec<BoxedNode>,
    strength: f64,
    window: Range<usize>,
    /// The step just taken and its record, until `between_steps` uses it.
    pending: Option<(usize, AttentionRecord)>,
    /// What each controlled step read off its record, before the update.
    pub readings: Vec<Reading>,
}

/// One controlled step's reading of its attention record.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reading {
    pub step: usize,
    /// `E = Σ_k (1 − s_k)²` over the boxed nodes.
    pub energy: f64,
    /// The nodes' mean `focus`: how much of the move the step made.
    pub focus: f64,
}

impl EnergyGuidance {
    /// `layout[i]` is node `i`'s box; `strength` in [0, 1] the fraction of the way from the
    /// map's centroid to the box's centre a step moves (times `1 − s_k`).
    pub fn new(
        pipe: &StableDiffusion,
        prompt: &str,
        csg: &Csg,
        layout: &[Option<Box4>],
        strength: f64,
        window: Range<usize>,
    ) -> Result<Self> {
        if !(0.0..=1.0).contains(&strength) {
            return Err(Error::InvalidInput(format!(
                "energy strength must be in [0, 1], got {strength}"
            )));
        }
        Ok(Self {
            targets: boxed_nodes(pipe, prompt, csg, layout)?,
            strength,
            window,
            pending: None,
            readings: Vec::new(),
        })
    }

    /// Whether any node has both a box and words in the prompt: without one, the hook does
    /// nothing.
    pub fn acts(&self) -> bool {
        !self.targets.is_empty()
    }

    /// The nodes it steers, by id, with their token positions.
    pub fn tokens(&self) -> Vec<(String, Vec<usize>)> {
        self.targets
            .iter()
            .map(|t| (t.id.clone(), t.positions.clone()))
            .collect()
    }

    /// The update of the clean latents `x0` ([C, h, w] values) for the nodes' maps
    /// (`maps[k]`: node k's h×w map), the energy the maps give, and their mean [`focus`].
    fn update(
        &self,
        maps: &[f32],
        x0: &[f32],
        (c, h, w): (usize, usize, usize),
    ) -> (Vec<f32>, f64, f64) {
        let cells = h * w;
        let mut delta = vec![0.0f32; c * cells];
        let mut energy = 0.0;
        let mut focuses = Vec::new();
        for (target, map) in self.targets.iter().zip(maps.chunks_exact(cells)) {
            let total: f64 = map.iter().map(|&v| v.max(0.0) as f64).sum();
            let peak = map.iter().copied().fold(0.0f32, f32::max);
            if total <= 0.0 || peak <= 0.0 {
                continue;
            }
            let b = target.bbox;
            let (mut inside, mut cx, mut cy) = (0.0, 0.0, 0.0);
            for (i, &v) in map.iter().enumerate() {
                let p = v.max(0.0) as f64 / total;
                let (x, y) = ((i % w) as f64 + 0.5, (i / w) as f64 + 0.5);
                let (fx, fy) = (x / w as f64, y / h as f64);
                if fx >= b[0] as f64 && fx < b[2] as f64 && fy >= b[1] as f64 && fy < b[3] as f64 {
                    inside += p;
                }
                cx += p * x;
                cy += p * y;
            }
            energy += (1.0 - inside).powi(2);
            let focus = focus(map, total);
            focuses.push(focus);
            let scale = self.strength * (1.0 - inside) * focus;
            let bx = (b[0] + b[2]) as f64 / 2.0 * w as f64;
            let by = (b[1] + b[3]) as f64 / 2.0 * h as f64;
            let (dx, dy) = ((bx - cx) * scale, (by - cy) * scale);
            if dx.abs() < 1e-3 && dy.abs() < 1e-3 {
                continue;
            }
            // What the words attend to more than on average, scaled to [0, 1]: a flat map
            // (a model that does not place the words) marks nothing to move.
            let mean = (total / cells as f64) as f32;
            let mask: Vec<f32> = map
                .iter()
                .map(|&v| ((v - mean) / (peak - mean).max(f32::EPSILON)).clamp(0.0, 1.0))
                .collect();
            let landed = translate(&mask, (h, w), (dx, dy), Edge::Zero);
            let outside: f64 = mask.iter().map(|&m| 1.0 - m as f64).sum();
            for ch in 0..c {
                let plane = &x0[ch * cells..(ch + 1) * cells];
                let moved = translate(plane, (h, w), (dx, dy), Edge::Clamp);
                let mean = match outside > 0.0 {
                    true => {
                        plane
                            .iter()
                            .zip(&mask)
                            .map(|(&v, &m)| v as f64 * (1.0 - m as f64))
                            .sum::<f64>()
                            / outside
                    }
                    false => 0.0,
                } as f32;
                let out = &mut delta[ch * cells..(ch + 1) * cells];
                for i in 0..cells {
                    // What was attended here and no longer is: nothing for a move of no
                    // length, whatever the mask's soft values.
                    let vacated = (mask[i] - landed[i]).max(0.0);
                    out[i] += landed[i] * (moved[i] - plane[i]) + vacated * (mean - plane[i]);
                }
            }
        }
        let mean_focus = focuses.iter().sum::<f64>() / focuses.len().max(1) as f64;
        (delta, energy, mean_focus)
    }
}

/// How much a map says where its node is, in [0, 1]: one minus the share of the grid it
/// effectively covers, `exp(H(p)) / cells` for the map normalised to a distribution `p` (the
/// perplexity of where the words are attended). A map spread evenly over the grid (a model
/// that does not place the words: the embedded model's maps, docs/lina.md) has focus near 0;
/// one on an object a tenth of the image, about 0.9. Ours: the move's direction, the map's
/// centroid toward the box, means something only for a map that has a place, so the step is
/// scaled by it. Without it, the cells of a flat map above its mean are scattered across the
/// scene, and moving them tore the scene apart (docs/lina.md, "Every mechanism alone and
/// together").
fn focus(map: &[f32], total: f64) -> f64 {
    let entropy: f64 = map
        .iter()
        .map(|&v| v.max(0.0) as f64 / total)
        .filter(|&p| p > 0.0)
        .map(|p| -p * p.ln())
        .sum();
    (1.0 - entropy.exp() / map.len() as f64).clamp(0.0, 1.0)
}

/// What a translation reads beyond the grid's edge.
#[derive(Clone, Copy)]
enum Edge {
    Zero,
    Clamp,
}

/// `plane` (h×w, row-major) moved by `(dx, dy)` cells, sampled bilinearly: the value at
/// `(x, y)` is the plane's at `(x − dx, y − dy)`.
fn translate(plane: &[f32], (h, w): (usize, usize), (dx, dy): (f64, f64), edge: Edge) -> Vec<f32> {
    let at = |x: i64, y: i64| -> f32 {
        let inside = x >= 0 && y >= 0 && (x as usize) < w && (y as usize) < h;
        match (inside, edge) {
            (true, _) => plane[y as usize * w + x as usize],
            (false, Edge::Zero) => 0.0,
            (false, Edge::Clamp) => {
                let (x, y) = (x.clamp(0, w as i64 - 1), y.clamp(0, h as i64 - 1));
                plane[y as usize * w + x as usize]
            }
        }
    };
    let mut out = vec![0.0; h * w];
    for y in 0..h {
        for x in 0..w {
            let (sx, sy) = (x as f64 - dx, y as f64 - dy);
            let (x0, y0) = (sx.floor(), sy.floor());
            let (fx, fy) = ((sx - x0) as f32, (sy - y0) as f32);
            let (x0, y0) = (x0 as i64, y0 as i64);
            let top = at(x0, y0) * (1.0 - fx) + at(x0 + 1, y0) * fx;
            let bottom = at(x0, y0 + 1) * (1.0 - fx) + at(x0 + 1, y0 + 1) * fx;
            out[y * w + x] = top * (1.0 - fy) + bottom * fy;
        }
    }
    out
}

impl StepHook for EnergyGuidance {
    fn before_model(&mut self, call: &mut ModelCall) -> Result<()> {
        if self.window.contains(&call.step) && self.acts() {
            call.attention.record = true;
        }
        Ok(())
    }

    fn after_step(&mut self, state: &mut StepState) -> Result<()> {
        if self.window.contains(&state.step) {
            self.pending = state.attention.clone().map(|r| (state.step, r));
        }
        Ok(())
    }

    fn between_steps<'a>(&'a mut self, sampling: &'a mut Sampling<'_>) -> StepFuture<'a> {
        Box::pin(async move {
            let Some((step, record)) = self.pending.take() else {
                return Ok(());
            };
            let Some(x0) = sampling.predicted_clean().cloned() else {
                return Ok(());
            };
            let [_, h, w] = record.dims();
            let [_, c, lh, lw] = x0.dims();
            if (lh, lw) != (h, w) {
                return Err(Error::InvalidInput(format!(
                    "attention record {h}x{w} differs from the latents' {lh}x{lw}"
                )));
            }
            // One map per node: the sum of its words' rows.
            let maps: Vec<Tensor<3>> = self
                .targets
                .iter()
                .map(|t| {
                    let rows: Vec<Tensor<3>> = t
                        .positions
                        .iter()
                        .map(|&p| record.clone().narrow(0, p, 1))
                        .collect();
                    Tensor::cat(rows, 0).sum_dim(0)
                })
                .collect();
            let maps = read_f32(Tensor::cat(maps, 0), "attention maps").await?;
            let values = read_f32(x0.clone(), "clean latents").await?;
            let (delta, energy, focus) = self.update(&maps, &values, (c, h, w));
            self.readings.push(Reading {
                step,
                energy,
                focus,
            });
            let device = x0.device();
            sampling.shift_clean(Tensor::from_data(
                TensorData::new(delta, [1, c, h, w]),
                &device,
            ));
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One node, "ball" (token 1), boxed in the bottom right quarter.
    fn guidance(strength: f64) -> EnergyGuidance {
        EnergyGuidance {
            targets: vec![BoxedNode {
                id: "ball".into(),
                positions: vec![1],
                bbox: [0.5, 0.5, 1.0, 1.0],
            }],
            strength,
            window: 0..1,
            pending: None,
            readings: Vec::new(),
        }
    }

    #[test]
    fn a_translation_moves_a_peak_by_whole_and_half_cells() {
        let mut plane = vec![0.0; 5 * 5];
        plane[2 * 5 + 1] = 1.0; // (x 1, y 2)
        let moved = translate(&plane, (5, 5), (2.0, -1.0), Edge::Zero);
        assert_eq!(moved[5 + 3], 1.0, "{moved:?}");
        assert!((moved.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        let half = translate(&plane, (5, 5), (0.5, 0.0), Edge::Zero);
        assert_eq!((half[2 * 5 + 1], half[2 * 5 + 2]), (0.5, 0.5));
    }

    /// A node attended at the top left with its box at the bottom right: the update moves
    /// the content its words attend to toward the box, fills the place it left with the
    /// mean of the rest, and reports the energy; inside its box it changes nothing.
    #[test]
    fn the_update_moves_attended_content_toward_the_box() {
        let (h, w) = (8, 8);
        let mut map = vec![0.0f32; h * w];
        let mut x0 = vec![-1.0f32; h * w];
        for (x, y) in [(1, 1), (2, 1), (1, 2), (2, 2)] {
            map[y * w + x] = 1.0;
            x0[y * w + x] = 3.0;
        }
        let centroid = |plane: &[f32]| {
            let bright: Vec<usize> = (0..h * w).filter(|&i| plane[i] > 1.0).collect();
            let n = bright.len() as f32;
            let x = bright.iter().map(|&i| (i % w) as f32).sum::<f32>() / n;
            let y = bright.iter().map(|&i| (i / w) as f32).sum::<f32>() / n;
            (x, y)
        };
        let (delta, energy, focus) = guidance(1.0).update(&map, &x0, (1, h, w));
        assert_eq!(energy, 1.0, "no attention inside the box");
        assert!(
            (focus - 60.0 / 64.0).abs() < 1e-9,
            "4 of 64 cells: focus {focus}"
        );
        let after: Vec<f32> = x0.iter().zip(&delta).map(|(a, d)| a + d).collect();
        let (before_c, after_c) = (centroid(&x0), centroid(&after));
        assert!(
            after_c.0 > before_c.0 + 2.0 && after_c.1 > before_c.1 + 2.0,
            "{before_c:?} -> {after_c:?}"
        );
        assert!(
            after[w + 1] < 0.0,
            "the old place is filled with the mean of the rest"
        );
        let (none, ..) = guidance(0.0).update(&map, &x0, (1, h, w));
        assert!(none.iter().all(|&d| d == 0.0), "strength 0 moves nothing");
        // A soft map (a peak with a half-attended rim), moved a hundredth of a cell: the
        // latents change by about that much, not by the rim's blend toward the mean.
        let (mut soft, mut content) = (vec![0.0f32; h * w], vec![-1.0f32; h * w]);
        for (x, y) in [(0, 1), (1, 0), (2, 1), (1, 2)] {
            soft[y * w + x] = 0.5;
            content[y * w + x] = 3.0;
        }
        soft[w + 1] = 1.0;
        content[w + 1] = 3.0;
        let tiny = guidance(0.002).update(&soft, &content, (1, h, w)).0;
        let most = tiny.iter().fold(0.0f32, |m, d| m.max(d.abs()));
        assert!(most < 0.3, "a tiny move changed a latent by {most}");
        // Attended inside the box already: no energy, no move.
        let mut settled = vec![0.0f32; h * w];
        settled[6 * w + 6] = 1.0;
        let (delta, energy, _) = guidance(1.0).update(&settled, &x0, (1, h, w));
        assert_eq!(energy, 0.0);
        assert!(delta.iter().all(|&d| d == 0.0));
    }

    /// A map that barely varies over the grid (what the embedded model gives: every cell
    /// within a third of the peak) says little of where its node is: the same content that
    /// moves by cells under a peaked map moves by a small fraction of one.
    #[test]
    fn a_flat_map_moves_next_to_nothing() {
        let (h, w) = (8, 8);
        let guidance = guidance(1.0);
        let mut x0 = vec![-1.0f32; h * w];
        let mut flat = vec![0.7f32; h * w];
        for (x, y) in [(1, 1), (2, 1), (1, 2), (2, 2)] {
            flat[y * w + x] = 1.0;
            x0[y * w + x] = 3.0;
        }
        let (delta, energy, focus) = guidance.update(&flat, &x0, (1, h, w));
        assert!(
            energy > 0.5,
            "most of the attention is outside the box: {energy}"
        );
        assert!(focus < 0.01, "an almost even map: focus {focus}");
        let most = delta.iter().fold(0.0f32, |m, d| m.max(d.abs()));
        assert!(most < 0.2, "a flat map moved a latent by {most}");
        // The same place, peaked: the content moves by cells.
        let peaked: Vec<f32> = flat
            .iter()
            .map(|&v| if v == 1.0 { 1.0 } else { 0.0 })
            .collect();
        let (moved, ..) = guidance.update(&peaked, &x0, (1, h, w));
        let most = moved.iter().fold(0.0f32, |m, d| m.max(d.abs()));
        assert!(most > 2.0, "a peaked map moved a latent by only {most}");
    }
}
